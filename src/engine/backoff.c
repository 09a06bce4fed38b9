/*
 * backoff.c - exponential backoff with full jitter (see backoff.h).
 *
 * The cap for retry n is initial << (n - 1), limited to max. The shift is
 * done in 64 bits and only while it cannot overflow: a 32-bit initial shifted
 * by at most 31 fits, and any larger shift is past every 32-bit max anyway.
 * The delay is rnd reduced modulo (cap + 1); since cap + 1 <= 2^32 and rnd
 * has 64 bits, the modulo bias is at most 2^-32, far under anything jitter
 * needs.
 */
#include "engine/backoff.h"

/*
 * Delay in ms before retry number `failures` (0 is treated as 1). rnd is a
 * uniformly random 64-bit value. The result is in
 * [0, min(p->max_ms, p->initial_ms << (failures - 1))].
 */
uint64_t backoff_delay_ms(const struct retry_policy *p, uint32_t failures, uint64_t rnd)
{
    uint32_t shift = failures > 0 ? failures - 1 : 0;
    uint64_t cap = p->max_ms;
    if (shift < 32) {
        uint64_t grown = (uint64_t)p->initial_ms << shift;
        if (grown < cap)
            cap = grown;
    } else if (p->initial_ms == 0) {
        cap = 0;
    }
    return rnd % (cap + 1);
}
