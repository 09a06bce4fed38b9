/*
 * backoff.h - how long to wait before the next attempt.
 *
 * Exponential backoff with full jitter (AWS architecture blog, "Exponential
 * Backoff And Jitter"): the n-th retry waits a uniformly random time in
 * [0, min(max, initial * 2^n)]. After the policy's limit, a must-succeed
 * operation waits exactly max between attempts.
 */
#ifndef DTX_BACKOFF_H
#define DTX_BACKOFF_H

#include <stdint.h>

#include "engine/txn.h"

/*
 * Delay in ms before retry number `failures` (1 = after the first transient
 * failure), with rnd a uniformly random 64-bit value. Never overflows; the
 * result is in [0, min(p->max_ms, p->initial_ms << (failures - 1))].
 */
uint64_t backoff_delay_ms(const struct retry_policy *p, uint32_t failures, uint64_t rnd);

#endif
