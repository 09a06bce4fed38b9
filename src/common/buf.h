/*
 * buf.h - a growable byte buffer with a hard cap (curl's dynbuf).
 *
 * Every buffer that grows from outside input is given its cap when it is made;
 * an append past the cap fails with DTX_ETOOBIG and leaves the buffer as it was.
 * The memory is the daemon's (xmalloc): growth never fails for lack of memory.
 */
#ifndef DTX_BUF_H
#define DTX_BUF_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct buf {
    char *data; /* NUL-terminated after len whenever data != NULL */
    size_t len; /* bytes used */
    size_t cap; /* bytes allocated */
    size_t max; /* hard cap on len */
};

void buf_init(struct buf *b, size_t max);
void buf_free(struct buf *b);
void buf_reset(struct buf *b);
/* buf_append when the bytes do not fit in the room already allocated. */
int buf_append_grow(struct buf *b, const void *p, size_t n);

/* Append n bytes. Returns 0 or DTX_ETOOBIG (nothing appended). Inline for
 * the common case (room left, under the cap): record encoding and answers
 * append a few bytes at a time, about 150 appends a saga. */
static inline int buf_append(struct buf *b, const void *p, size_t n)
{
    if (n < b->cap - b->len && n <= b->max - b->len) {
        memcpy(b->data + b->len, p, n);
        b->len += n;
        b->data[b->len] = '\0';
        return 0;
    }
    return buf_append_grow(b, p, n);
}
int buf_puts(struct buf *b, const char *s);
/* printf-style append. Returns 0 or DTX_ETOOBIG. */
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Hand the bytes to the caller (who frees them) and reset the buffer. */
char *buf_steal(struct buf *b, size_t *len /* OUT, may be NULL */);

#endif
