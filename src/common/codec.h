/*
 * codec.h - little-endian binary encoding for log records.
 *
 * Writers append to a struct buf; readers walk a struct dec, which remembers
 * the first error so a decoder can read every field and check once at the end.
 * Strings are a u32 length followed by the bytes (no NUL on disk).
 */
#ifndef DTX_CODEC_H
#define DTX_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

void enc_u8(struct buf *b, uint8_t v);
void enc_u32(struct buf *b, uint32_t v);
void enc_u64(struct buf *b, uint64_t v);
/* s may be NULL: encoded as length 0xFFFFFFFF and decoded back to NULL. */
void enc_str(struct buf *b, const char *s, size_t len);
void enc_cstr(struct buf *b, const char *s);

struct dec {
    const unsigned char *p;
    size_t left;
    int err; /* 0 or DTX_ECORRUPT after any read past the end */
};

void dec_init(struct dec *d, const void *p, size_t n);
uint8_t dec_u8(struct dec *d);
uint32_t dec_u32(struct dec *d);
uint64_t dec_u64(struct dec *d);
/* A fresh NUL-terminated copy (xmalloc), or NULL; *len gets the length if len. */
char *dec_str(struct dec *d, size_t *len /* OUT, may be NULL */);
/* The same string without a copy: its bytes in the buffer being decoded (no
 * NUL after them), or NULL when absent or on error; *len gets the length. */
const char *dec_view(struct dec *d, size_t *len /* OUT */);

void put_le32(unsigned char *p, uint32_t v);
void put_le64(unsigned char *p, uint64_t v);
uint32_t get_le32(const unsigned char *p);
uint64_t get_le64(const unsigned char *p);

#endif
