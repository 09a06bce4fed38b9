/*
 * test_common.c - the common layer: the hash map against a reference (with
 * deletions that exercise backward shift, wrap-around included), the capped
 * buffer, the record codec, the error table, and the small formatting
 * helpers of clock and slog.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/buf.h"
#include "common/clock.h"
#include "common/codec.h"
#include "common/err.h"
#include "common/fmt.h"
#include "common/hmap.h"
#include "common/slog.h"

static uint64_t rng_state = 0x853C49E6748FEA9BULL;

static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* ---- hmap ---- */

/* The map's own hash (FNV-1a), to build keys that collide on purpose. */
static size_t fnv1a(const char *s)
{
    size_t h = (size_t)1469598103934665603ULL;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= (size_t)1099511628211ULL;
    }
    return h;
}

/* Every entry is reachable: the probe from its home slot to its slot crosses
 * no empty slot (what backward-shift deletion must preserve), and len is the
 * number of entries. */
static void check_hmap(const struct hmap *m)
{
    size_t n = 0;
    for (size_t i = 0; i < m->cap; i++) {
        if (m->slots[i].key == NULL)
            continue;
        n++;
        assert_int_equal(m->slots[i].hash, fnv1a(m->slots[i].key));
        for (size_t j = m->slots[i].hash & (m->cap - 1); j != i; j = (j + 1) & (m->cap - 1))
            assert_non_null(m->slots[j].key);
    }
    assert_int_equal(n, m->len);
    if (m->cap)
        assert_true(m->len * 4 <= m->cap * 3);
}

static void test_hmap_basic(void **state)
{
    (void)state;
    struct hmap m;
    hmap_init(&m);
    assert_null(hmap_get(&m, "x"));
    assert_null(hmap_del(&m, "x"));
    int a = 1, b = 2;
    assert_null(hmap_put(&m, "x", &a));
    assert_ptr_equal(hmap_get(&m, "x"), &a);
    assert_int_equal(m.len, 1);

    /* replace: old value back, len unchanged, the new key pointer is kept
     * (the old one may be freed by its owner) */
    char *k2 = strdup("x");
    assert_ptr_equal(hmap_put(&m, k2, &b), &a);
    assert_int_equal(m.len, 1);
    assert_ptr_equal(hmap_get(&m, "x"), &b);
    int found = 0;
    for (size_t i = 0; i < m.cap; i++)
        found += m.slots[i].key == k2;
    assert_int_equal(found, 1);

    assert_null(hmap_get(&m, ""));
    assert_null(hmap_put(&m, "", &a)); /* the empty string is a key */
    assert_ptr_equal(hmap_get(&m, ""), &a);
    assert_ptr_equal(hmap_del(&m, "x"), &b);
    assert_null(hmap_get(&m, "x"));
    assert_null(hmap_del(&m, "x"));
    assert_int_equal(m.len, 1);
    free(k2);
    hmap_close(&m);
    assert_int_equal(m.len, 0);
    assert_null(hmap_get(&m, ""));
    /* usable again after close */
    assert_null(hmap_put(&m, "y", &a));
    assert_ptr_equal(hmap_get(&m, "y"), &a);
    hmap_close(&m);
}

/* Keys whose home slot in a 64-slot table is cap-1 and 0: deleting the
 * first of a cluster that wraps around the end must pull the others back. */
static void test_hmap_backward_shift_wraps(void **state)
{
    (void)state;
    static char keys[8][16];
    int n63 = 0, n0 = 0;
    for (int i = 0; n63 < 4 || n0 < 2; i++) {
        char k[16];
        snprintf(k, sizeof k, "w%d", i);
        size_t home = fnv1a(k) & 63;
        if (home == 63 && n63 < 4)
            strcpy(keys[n63++], k);
        else if (home == 0 && n0 < 2)
            strcpy(keys[4 + n0++], k);
    }
    struct hmap m;
    hmap_init(&m);
    int vals[6];
    /* 63, 0, 1, 2 hold the four homed at 63; 3, 4 the two homed at 0 */
    for (int i = 0; i < 6; i++)
        hmap_put(&m, keys[i], &vals[i]);
    assert_int_equal(m.cap, 64);
    check_hmap(&m);
    assert_ptr_equal(m.slots[63].key, keys[0]);
    assert_ptr_equal(m.slots[4].key, keys[5]);

    assert_ptr_equal(hmap_del(&m, keys[0]), &vals[0]); /* hole at 63 */
    check_hmap(&m);
    assert_ptr_equal(m.slots[63].key, keys[1]); /* pulled back across the end */
    assert_null(m.slots[4].key);
    assert_ptr_equal(hmap_del(&m, keys[4]), &vals[4]); /* a key homed at 0 */
    check_hmap(&m);
    assert_ptr_equal(hmap_del(&m, keys[2]), &vals[2]); /* middle of the wrap */
    check_hmap(&m);
    for (int i = 0; i < 6; i++)
        assert_ptr_equal(hmap_get(&m, keys[i]), (i == 0 || i == 2 || i == 4) ? NULL : &vals[i]);
    hmap_close(&m);
}

static void test_hmap_against_reference(void **state)
{
    (void)state;
    enum { N = 6000, OPS = 300000 };
    static char keys[N][16];
    static void *ref[N];
    static int vals[N];
    for (int i = 0; i < N; i++)
        snprintf(keys[i], sizeof keys[i], "gid-%d", i);
    memset(ref, 0, sizeof ref);
    struct hmap m;
    hmap_init(&m);
    size_t live = 0;
    for (int op = 0; op < OPS; op++) {
        /* phases of mostly-insert and mostly-delete keep the load moving */
        int grow = (op / 20000) % 2 == 0;
        int i = (int)(rng() % N);
        unsigned r = (unsigned)(rng() % 10);
        if (r < (grow ? 6u : 3u)) {
            void *old = hmap_put(&m, keys[i], &vals[i]);
            assert_ptr_equal(old, ref[i]);
            live += ref[i] == NULL;
            ref[i] = &vals[i];
        } else if (r < 9) {
            void *old = hmap_del(&m, keys[i]);
            assert_ptr_equal(old, ref[i]);
            live -= ref[i] != NULL;
            ref[i] = NULL;
        } else {
            assert_ptr_equal(hmap_get(&m, keys[i]), ref[i]);
        }
        assert_int_equal(m.len, live);
        if (op % 10000 == 0) {
            check_hmap(&m);
            for (int k = 0; k < N; k++)
                assert_ptr_equal(hmap_get(&m, keys[k]), ref[k]);
        }
    }
    check_hmap(&m);
    for (int k = 0; k < N; k++)
        assert_ptr_equal(hmap_get(&m, keys[k]), ref[k]);
    /* delete everything */
    for (int k = 0; k < N; k++)
        assert_ptr_equal(hmap_del(&m, keys[k]), ref[k]);
    assert_int_equal(m.len, 0);
    check_hmap(&m);
    hmap_close(&m);
}

/* ---- buf ---- */

static void test_buf_cap(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b, 10);
    assert_null(b.data);
    assert_int_equal(buf_append(&b, "0123456789", 10), 0);
    assert_int_equal(b.len, 10);
    assert_int_equal(buf_append(&b, "x", 1), DTX_ETOOBIG);
    assert_int_equal(b.len, 10);
    assert_string_equal(b.data, "0123456789");
    assert_int_equal(buf_append(&b, "", 0), 0); /* nothing always fits */
    assert_int_equal(buf_puts(&b, "y"), DTX_ETOOBIG);
    assert_int_equal(buf_printf(&b, "%d", 7), DTX_ETOOBIG);
    assert_string_equal(b.data, "0123456789");
    assert_int_equal(buf_append(&b, "x", SIZE_MAX), DTX_ETOOBIG); /* no wrap-around */
    buf_reset(&b);
    assert_int_equal(b.len, 0);
    assert_string_equal(b.data, "");
    assert_int_equal(buf_append(&b, "abcdefghijk", 11), DTX_ETOOBIG); /* all or nothing */
    assert_int_equal(b.len, 0);
    assert_string_equal(b.data, "");
    buf_free(&b);
    assert_null(b.data);

    buf_init(&b, 0);
    assert_int_equal(buf_append(&b, "", 0), 0);
    assert_string_equal(b.data, "");
    assert_int_equal(buf_append(&b, "a", 1), DTX_ETOOBIG);
    buf_free(&b);
}

static void test_buf_printf(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b, 16);
    assert_int_equal(buf_printf(&b, "%s=%d", "ab", 12), 0);
    assert_int_equal(buf_printf(&b, "%s", ""), 0);
    assert_int_equal(buf_printf(&b, ",%05u", 42u), 0);
    assert_string_equal(b.data, "ab=12,00042");
    assert_int_equal(b.len, 11);
    assert_int_equal(buf_printf(&b, "%s", "abcde"), 0); /* exactly to the cap */
    assert_int_equal(b.len, 16);
    assert_int_equal(buf_printf(&b, "%c", 'z'), DTX_ETOOBIG);
    assert_string_equal(b.data, "ab=12,00042abcde");
    buf_free(&b);

    /* growth over many reallocations keeps the bytes */
    buf_init(&b, 1 << 20);
    for (int i = 0; i < 20000; i++)
        assert_int_equal(buf_printf(&b, "%d,", i % 10), 0);
    assert_int_equal(b.len, 40000);
    for (int i = 0; i < 20000; i++)
        assert_int_equal(b.data[2 * i], '0' + i % 10);
    assert_int_equal(b.data[b.len], '\0');
    buf_free(&b);
}

static void test_buf_steal(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b, 100);
    size_t len = 99;
    char *p = buf_steal(&b, &len); /* nothing appended: an empty string */
    assert_non_null(p);
    assert_string_equal(p, "");
    assert_int_equal(len, 0);
    free(p);

    assert_int_equal(buf_append(&b, "hello\0world", 11), 0);
    p = buf_steal(&b, &len);
    assert_int_equal(len, 11);
    assert_memory_equal(p, "hello\0world", 12);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.cap, 0);
    free(p);

    /* the buffer is usable after, with the same cap */
    assert_int_equal(buf_puts(&b, "again"), 0);
    p = buf_steal(&b, NULL);
    assert_string_equal(p, "again");
    free(p);
    char big[101];
    memset(big, 'x', sizeof big);
    assert_int_equal(buf_append(&b, big, 101), DTX_ETOOBIG);
    assert_int_equal(buf_append(&b, big, 100), 0);
    buf_free(&b);
}

/* ---- codec ---- */

static void test_codec_roundtrip(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b, 1 << 16);
    enc_u8(&b, 0);
    enc_u8(&b, 0xFF);
    enc_u32(&b, 0);
    enc_u32(&b, 0xDEADBEEF);
    enc_u32(&b, UINT32_MAX);
    enc_u64(&b, 0x0102030405060708ULL);
    enc_u64(&b, UINT64_MAX);
    enc_cstr(&b, "gid-1");
    enc_cstr(&b, NULL);
    enc_cstr(&b, "");
    enc_str(&b, "a\0b", 3);
    enc_str(&b, NULL, 5);

    /* little-endian on disk whatever the host */
    const unsigned char *d = (const unsigned char *)b.data;
    assert_int_equal(d[2], 0);
    assert_int_equal(d[6], 0xEF);
    assert_int_equal(d[9], 0xDE);
    assert_int_equal(get_le32(d + 6), 0xDEADBEEF);

    struct dec r;
    dec_init(&r, b.data, b.len);
    assert_int_equal(dec_u8(&r), 0);
    assert_int_equal(dec_u8(&r), 0xFF);
    assert_int_equal(dec_u32(&r), 0);
    assert_int_equal(dec_u32(&r), 0xDEADBEEF);
    assert_int_equal(dec_u32(&r), UINT32_MAX);
    assert_true(dec_u64(&r) == 0x0102030405060708ULL);
    assert_true(dec_u64(&r) == UINT64_MAX);
    size_t len = 99;
    char *s = dec_str(&r, &len);
    assert_string_equal(s, "gid-1");
    assert_int_equal(len, 5);
    free(s);
    len = 99;
    assert_null(dec_str(&r, &len)); /* NULL round-trips as NULL, without error */
    assert_int_equal(len, 0);
    assert_int_equal(r.err, 0);
    s = dec_str(&r, &len);
    assert_non_null(s);
    assert_string_equal(s, "");
    assert_int_equal(len, 0);
    free(s);
    s = dec_str(&r, &len);
    assert_int_equal(len, 3);
    assert_memory_equal(s, "a\0b", 4); /* NUL-terminated copy */
    free(s);
    assert_null(dec_str(&r, NULL));
    assert_int_equal(r.err, 0);
    assert_int_equal(r.left, 0);
    buf_free(&b);

    unsigned char t[8];
    put_le64(t, 0x1122334455667788ULL);
    assert_int_equal(t[0], 0x88);
    assert_int_equal(t[7], 0x11);
    assert_true(get_le64(t) == 0x1122334455667788ULL);
    put_le32(t, 0xA1B2C3D4);
    assert_int_equal(t[0], 0xD4);
    assert_int_equal(get_le32(t), 0xA1B2C3D4);
}

static void test_codec_past_end(void **state)
{
    (void)state;
    unsigned char raw[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    struct dec r;

    dec_init(&r, raw, 3);
    assert_int_equal(dec_u32(&r), 0);
    assert_int_equal(r.err, DTX_ECORRUPT);
    assert_int_equal(r.left, 3); /* nothing consumed */
    /* the error is sticky: a read that would fit still fails */
    assert_int_equal(dec_u8(&r), 0);
    assert_int_equal(r.err, DTX_ECORRUPT);

    dec_init(&r, raw, 7);
    assert_int_equal(dec_u64(&r), 0);
    assert_int_equal(r.err, DTX_ECORRUPT);

    dec_init(&r, raw, 0);
    assert_int_equal(dec_u8(&r), 0);
    assert_int_equal(r.err, DTX_ECORRUPT);

    /* a string whose length runs past the end */
    struct buf b;
    buf_init(&b, 64);
    enc_u32(&b, 10);
    buf_append(&b, "short", 5);
    dec_init(&r, b.data, b.len);
    size_t len = 77;
    assert_null(dec_str(&r, &len));
    assert_int_equal(len, 0);
    assert_int_equal(r.err, DTX_ECORRUPT);

    /* a string cut inside its length */
    dec_init(&r, b.data, 2);
    assert_null(dec_str(&r, &len));
    assert_int_equal(r.err, DTX_ECORRUPT);

    /* a huge length near UINT32_MAX (not the NULL marker) */
    buf_reset(&b);
    enc_u32(&b, UINT32_MAX - 1);
    dec_init(&r, b.data, b.len);
    assert_null(dec_str(&r, NULL));
    assert_int_equal(r.err, DTX_ECORRUPT);
    buf_free(&b);
}

/* ---- err ---- */

static void test_err_names(void **state)
{
    (void)state;
    assert_string_equal(dtx_err_name(0), "OK");
    assert_string_equal(dtx_err_message(0), "success");
    assert_string_equal(dtx_err_name(DTX_ENOMEM), "DTX_ENOMEM");
    assert_string_equal(dtx_err_name(DTX_EIO), "DTX_EIO");
    assert_string_equal(dtx_err_name(DTX_ETOOBIG), "DTX_ETOOBIG");
    assert_string_equal(dtx_err_name(DTX_EUNSUPPORTED), "DTX_EUNSUPPORTED");
    assert_string_equal(dtx_err_message(DTX_EIO), "input/output error");
    assert_string_equal(dtx_err_message(DTX_ECORRUPT), "data is corrupt");
    assert_string_equal(dtx_err_name(-9999), "DTX_EUNKNOWN");
    assert_string_equal(dtx_err_name(1), "DTX_EUNKNOWN");
    assert_string_equal(dtx_err_message(-9999), "unknown error");

    /* every code in the table has its own name and a message */
    static const int codes[] = {
#define CODE(name, val, msg) DTX_E##name,
        DTX_ERRNO_MAP(CODE)
#undef CODE
    };
    size_t n = sizeof codes / sizeof codes[0];
    for (size_t i = 0; i < n; i++) {
        assert_true(codes[i] < 0);
        assert_string_not_equal(dtx_err_name(codes[i]), "DTX_EUNKNOWN");
        assert_string_not_equal(dtx_err_message(codes[i]), "unknown error");
        for (size_t j = 0; j < i; j++) {
            assert_int_not_equal(codes[i], codes[j]);
            assert_string_not_equal(dtx_err_name(codes[i]), dtx_err_name(codes[j]));
        }
    }
}

/* ---- clock and slog helpers ---- */

static void test_clock_format(void **state)
{
    (void)state;
    char out[32];
    assert_string_equal(clock_fmt_rfc3339(0, out), "1970-01-01T00:00:00.000Z");
    assert_string_equal(clock_fmt_rfc3339(1795110000123LL, out), "2026-11-19T17:40:00.123Z");
    assert_string_equal(clock_fmt_rfc3339(-5, out), "1970-01-01T00:00:00.000Z");
    uint64_t a = clock_mono_ms();
    uint64_t b = clock_mono_ms();
    assert_true(b >= a);
    assert_true(clock_wall_ms() > 1600000000000LL);
}

static void test_slog_quote(void **state)
{
    (void)state;
    char out[64];
    assert_string_equal(slog_quote("plain", out, sizeof out), "\"plain\"");
    assert_string_equal(slog_quote("a\"b\\c", out, sizeof out), "\"a\\\"b\\\\c\"");
    assert_string_equal(slog_quote("l1\nl2", out, sizeof out), "\"l1 l2\"");
    assert_string_equal(slog_quote("", out, sizeof out), "\"\"");
    char small[6];
    assert_string_equal(slog_quote("abcdef", small, sizeof small), "\"ab\"");
    assert_string_equal(slog_quote("\"\"\"", small, sizeof small), "\"\\\"\"");
    assert_string_equal(slog_quote("abc", small, 3), "\"\"");
    assert_string_equal(slog_quote("abc", small, 2), "");
    enum slog_level l;
    assert_int_equal(slog_parse_level("warn", &l), 0);
    assert_int_equal(l, SLOG_WARN);
    assert_int_equal(slog_parse_level("loud", &l), DTX_EINVAL);
}

/* fmt_u64 and fmt_hex64 write what printf would. */
static void test_fmt_numbers(void **state)
{
    (void)state;
    const uint64_t cases[] = {
        0, 1, 9, 10, 99, 100, 4294967295u, 4294967296u, 1234567890123456789u, UINT64_MAX};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char got[FMT_U64_MAX + 1], want[64];
        memset(got, 'x', sizeof got);
        size_t n = fmt_u64(got, cases[i]);
        snprintf(want, sizeof want, "%llu", (unsigned long long)cases[i]);
        assert_string_equal(got, want);
        assert_int_equal(n, strlen(want));
        char hex[17];
        hex[16] = '\0';
        fmt_hex64(hex, cases[i]);
        snprintf(want, sizeof want, "%016llx", (unsigned long long)cases[i]);
        assert_string_equal(hex, want);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hmap_basic),
        cmocka_unit_test(test_hmap_backward_shift_wraps),
        cmocka_unit_test(test_hmap_against_reference),
        cmocka_unit_test(test_buf_cap),
        cmocka_unit_test(test_buf_printf),
        cmocka_unit_test(test_buf_steal),
        cmocka_unit_test(test_fmt_numbers),
        cmocka_unit_test(test_codec_roundtrip),
        cmocka_unit_test(test_codec_past_end),
        cmocka_unit_test(test_err_names),
        cmocka_unit_test(test_clock_format),
        cmocka_unit_test(test_slog_quote),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
