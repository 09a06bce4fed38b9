/*
 * fmt.h - numbers as text without printf, for the per-call and per-request
 * paths (a snprintf costs about 1,400 instructions; these a few dozen).
 */
#ifndef DTX_FMT_H
#define DTX_FMT_H

#include <stddef.h>
#include <stdint.h>

#define FMT_U64_MAX 21 /* 20 digits and the NUL */

/* v in decimal at out (room for FMT_U64_MAX bytes, or 11 for a uint32_t),
 * NUL-terminated. Returns the number of digits. */
static inline size_t fmt_u64(char *out, uint64_t v)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    for (size_t i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    out[n] = '\0';
    return n;
}

/* v as 16 lowercase hex digits at out (no NUL). */
static inline void fmt_hex64(char out[16], uint64_t v)
{
    static const char digits[] = "0123456789abcdef";
    for (int i = 15; i >= 0; i--) {
        out[i] = digits[v & 15];
        v >>= 4;
    }
}

#endif
