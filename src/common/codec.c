/* codec.c - little-endian record encoding (see codec.h). */
#include "common/codec.h"

#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/err.h"

void put_le32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

void put_le64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

uint32_t get_le32(const unsigned char *p)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++)
        v |= (uint32_t)p[i] << (8 * i);
    return v;
}

uint64_t get_le64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* Record buffers are built by the daemon and sized by validated input, so an
 * append that hits the cap is a programming error, not bad input. */
static void must(int rc)
{
    if (rc != 0)
        abort();
}

void enc_u8(struct buf *b, uint8_t v)
{
    must(buf_append(b, &v, 1));
}

void enc_u32(struct buf *b, uint32_t v)
{
    unsigned char t[4];
    put_le32(t, v);
    must(buf_append(b, t, 4));
}

void enc_u64(struct buf *b, uint64_t v)
{
    unsigned char t[8];
    put_le64(t, v);
    must(buf_append(b, t, 8));
}

void enc_str(struct buf *b, const char *s, size_t len)
{
    if (s == NULL) {
        enc_u32(b, UINT32_MAX);
        return;
    }
    /* a longer string would be cut (or read back as NULL): a programming error */
    must(len < UINT32_MAX ? 0 : DTX_ETOOBIG);
    enc_u32(b, (uint32_t)len);
    must(buf_append(b, s, len));
}

void enc_cstr(struct buf *b, const char *s)
{
    enc_str(b, s, s ? strlen(s) : 0);
}

void dec_init(struct dec *d, const void *p, size_t n)
{
    d->p = p;
    d->left = n;
    d->err = 0;
}

static const unsigned char *take(struct dec *d, size_t n)
{
    if (d->err || d->left < n) {
        d->err = DTX_ECORRUPT;
        return NULL;
    }
    const unsigned char *p = d->p;
    d->p += n;
    d->left -= n;
    return p;
}

uint8_t dec_u8(struct dec *d)
{
    const unsigned char *p = take(d, 1);
    return p ? p[0] : 0;
}

uint32_t dec_u32(struct dec *d)
{
    const unsigned char *p = take(d, 4);
    return p ? get_le32(p) : 0;
}

uint64_t dec_u64(struct dec *d)
{
    const unsigned char *p = take(d, 8);
    return p ? get_le64(p) : 0;
}

const char *dec_view(struct dec *d, size_t *len)
{
    uint32_t n = dec_u32(d);
    *len = 0;
    if (d->err || n == UINT32_MAX)
        return NULL;
    const char *p = (const char *)take(d, n);
    if (p != NULL)
        *len = n;
    return p;
}

char *dec_str(struct dec *d, size_t *len)
{
    size_t n;
    const char *p = dec_view(d, &n);
    if (len)
        *len = n;
    return p != NULL ? xmemdup(p, n) : NULL;
}
