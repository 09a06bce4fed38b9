/*
 * clock.h - time. Timers and timeouts use the monotonic clock only; the wall
 * clock is for timestamps that users read (created_at, log lines).
 */
#ifndef DTX_CLOCK_H
#define DTX_CLOCK_H

#include <stdint.h>

uint64_t clock_mono_ms(void);
uint64_t clock_mono_us(void);
/* Milliseconds since the Unix epoch. */
int64_t clock_wall_ms(void);
/* Format wall-clock ms as RFC 3339 UTC with milliseconds into out[32]. */
const char *clock_fmt_rfc3339(int64_t wall_ms, char out[32]);

#endif
