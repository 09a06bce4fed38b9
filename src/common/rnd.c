/* rnd.c - kernel randomness and a fast per-thread generator (see rnd.h). */
#include "common/rnd.h"

#include <errno.h>
#include <sys/random.h>

#include "common/clock.h"
#include "common/err.h"

int rnd_secure(void *p, size_t n)
{
    unsigned char *c = p;
    while (n > 0) {
        ssize_t got = getrandom(c, n, 0);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            return DTX_EIO;
        }
        c += got;
        n -= (size_t)got;
    }
    return 0;
}

static _Thread_local uint64_t state;

uint64_t rnd_next(void)
{
    if (state == 0) {
        if (rnd_secure(&state, sizeof state) != 0 || state == 0)
            state = clock_mono_us() | 1;
    }
    /* xorshift64* */
    state ^= state >> 12;
    state ^= state << 25;
    state ^= state >> 27;
    return state * 0x2545F4914F6CDD1DULL;
}
