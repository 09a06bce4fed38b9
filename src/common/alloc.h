/*
 * alloc.h - the daemon's allocation wrappers.
 *
 * dtxd cannot do anything useful after malloc fails, so these abort with a
 * message instead of returning NULL (Redis zmalloc). Library code meant for
 * participants (libdtx) must not use them: it returns DTX_ENOMEM instead.
 */
#ifndef DTX_ALLOC_H
#define DTX_ALLOC_H

#include <stddef.h>

void *xmalloc(size_t n);
void *xcalloc(size_t count, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
/* A copy of n bytes of p, with a NUL after them (handy for bodies). */
char *xmemdup(const void *p, size_t n);

#endif
