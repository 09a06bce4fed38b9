/*
 * rnd.h - randomness. rnd_secure fills bytes from the kernel (segment salts,
 * generated gids); rnd_next is a fast non-cryptographic generator for retry
 * jitter, seeded from the kernel once per thread.
 */
#ifndef DTX_RND_H
#define DTX_RND_H

#include <stddef.h>
#include <stdint.h>

/* Fill p with n random bytes from getrandom(2). Returns 0 or DTX_EIO. */
int rnd_secure(void *p, size_t n);
/* Next value of a per-thread xorshift generator. */
uint64_t rnd_next(void);

#endif
