/*
 * test_wal.c - the embedded log against real files and a real libuv loop.
 *
 * Each test gets a fresh directory under /tmp and its own loop. Damage is
 * done to the files directly, at byte offsets computed from the format that
 * wal.c and docs/LOG_FORMAT.md specify (so the tests also check the spec).
 * The syscall table (wal_sys.h) is used to observe fdatasync and to make it
 * fail in a child process.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>
#include <zlib.h>

#include "common/codec.h"
#include "common/err.h"
#include "store/wal.h"
#include "store/wal_sys.h"

#define SEG_HDR 48
#define REC_HDR 28
#define BIG     ((uint64_t)1 << 30)

struct fix {
    uv_loop_t loop;
    char root[64];
    char dir[128]; /* the log directory, root/log */
};

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int setup(void **state)
{
    struct fix *f = calloc(1, sizeof *f);
    strcpy(f->root, "/tmp/dtx-test-wal-XXXXXX");
    if (mkdtemp(f->root) == NULL)
        return -1;
    snprintf(f->dir, sizeof f->dir, "%s/log", f->root);
    uv_loop_init(&f->loop);
    wal_sys = wal_sys_default;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fix *f = *state;
    wal_sys = wal_sys_default;
    uv_run(&f->loop, UV_RUN_DEFAULT); /* let closed handles go */
    assert_int_equal(uv_loop_close(&f->loop), 0);
    nftw(f->root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

static struct store *open_log(struct fix *f, uint64_t seg, uint64_t cmin)
{
    struct wal_config cfg = {.dir = f->dir, .segment_size = seg, .compact_min_bytes = cmin};
    struct store *s = NULL;
    const char *msg = NULL;
    int rc = wal_open(&f->loop, &cfg, &s, &msg);
    if (rc != 0)
        fail_msg("wal_open: %s", msg);
    return s;
}

static void close_log(struct fix *f, struct store *s)
{
    assert_int_equal(store_close(s), 0);
    store_free(s);
    uv_run(&f->loop, UV_RUN_DEFAULT);
}

/* The i-th test record: "rec <i>" padded to a length that varies with i. */
static size_t make_rec(int i, char *out)
{
    size_t len = 12 + (size_t)(i * 37) % 300;
    memset(out, 'a' + i % 26, len);
    int n = snprintf(out, len, "rec %d", i);
    out[n] = '|';
    return len;
}

/* Replayed records, copied. */
struct recs {
    int n;
    int cap;
    char **v;
    size_t *len;
    int fail_at; /* return DTX_EINVAL at this record, if > 0 */
};

static int collect(void *arg, const void *rec, size_t len)
{
    struct recs *r = arg;
    if (r->fail_at > 0 && r->n == r->fail_at)
        return DTX_EINVAL;
    if (r->n == r->cap) {
        r->cap = r->cap ? 2 * r->cap : 64;
        r->v = realloc(r->v, sizeof *r->v * (size_t)r->cap);
        r->len = realloc(r->len, sizeof *r->len * (size_t)r->cap);
    }
    r->v[r->n] = malloc(len ? len : 1);
    memcpy(r->v[r->n], rec, len);
    r->len[r->n++] = len;
    return 0;
}

static void recs_free(struct recs *r)
{
    for (int i = 0; i < r->n; i++)
        free(r->v[i]);
    free(r->v);
    free(r->len);
    r->v = NULL;
    r->len = NULL;
    r->n = r->cap = 0;
}

/* Assert that r->v[at] is test record i. */
static void assert_rec(const struct recs *r, int at, int i)
{
    char want[400];
    size_t len = make_rec(i, want);
    assert_true(at < r->n);
    assert_int_equal(r->len[at], len);
    assert_memory_equal(r->v[at], want, len);
}

static void assert_str(const struct recs *r, int at, const char *s)
{
    assert_true(at < r->n);
    assert_int_equal(r->len[at], strlen(s));
    assert_memory_equal(r->v[at], s, strlen(s));
}

static void count_done(void *arg, int status)
{
    assert_int_equal(status, 0);
    (*(int *)arg)++;
}

/* Append test record i and run the loop until it is durable: one group each. */
static void append_sync(struct fix *f, struct store *s, int i)
{
    char rec[400];
    int done = 0;
    size_t len = make_rec(i, rec);
    assert_int_equal(store_append(s, rec, len, count_done, &done), 0);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(done, 1);
}

static void seg_name(const struct fix *f, uint64_t id, char out[PATH_MAX])
{
    snprintf(out, PATH_MAX, "%s/%016" PRIx64 ".log", f->dir, id);
}

static off_t file_size(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return -1;
    return st.st_size;
}

static int file_exists(const char *path)
{
    return access(path, F_OK) == 0;
}

/* Number of directory entries ending in suffix. */
static int count_files(const struct fix *f, const char *suffix)
{
    DIR *d = opendir(f->dir);
    int n = 0;
    assert_non_null(d);
    for (struct dirent *de = readdir(d); de != NULL; de = readdir(d)) {
        size_t l = strlen(de->d_name), sl = strlen(suffix);
        if (l > sl && strcmp(de->d_name + l - sl, suffix) == 0)
            n++;
    }
    closedir(d);
    return n;
}

/* Byte offset of test record k in a segment holding records 0.. written from its start. */
static off_t rec_offset(int k)
{
    char rec[400];
    off_t off = SEG_HDR;
    for (int i = 0; i < k; i++)
        off += REC_HDR + (off_t)make_rec(i, rec);
    return off;
}

static void file_patch(const char *path, off_t off, const void *p, size_t n)
{
    int fd = open(path, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, p, n, off), (ssize_t)n);
    close(fd);
}

static void file_read(const char *path, off_t off, void *p, size_t n)
{
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, p, n, off), (ssize_t)n);
    close(fd);
}

/* Flip one byte at off. */
static void file_flip(const char *path, off_t off)
{
    unsigned char c;
    file_read(path, off, &c, 1);
    c ^= 0x40;
    file_patch(path, off, &c, 1);
}

static void copy_file(const char *from, const char *to)
{
    char buf[65536];
    int in = open(from, O_RDONLY);
    int out = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(in >= 0 && out >= 0);
    for (;;) {
        ssize_t k = read(in, buf, sizeof buf);
        assert_true(k >= 0);
        if (k == 0)
            break;
        assert_int_equal(write(out, buf, (size_t)k), k);
    }
    close(in);
    close(out);
}

/* Open, recover into r, and return recover's code (the log stays open on 0). */
static int reopen2(struct fix *f, struct store **s, struct recs *r, uint64_t seg, uint64_t cmin)
{
    *s = open_log(f, seg, cmin);
    return store_recover(*s, collect, r);
}

static int reopen(struct fix *f, struct store **s, struct recs *r, uint64_t seg)
{
    return reopen2(f, s, r, seg, BIG);
}

/* ------------------------------------------------------------------------ */
/* Tests                                                                     */

/* A directory that does not exist yet is created and is an empty, fresh log. */
static void test_new_dir(void **state)
{
    struct fix *f = *state;
    struct recs r = {0};
    char path[PATH_MAX];
    struct store *s;
    assert_false(file_exists(f->dir));
    assert_int_equal(reopen(f, &s, &r, BIG), 0);
    assert_int_equal(r.n, 0);
    seg_name(f, 1, path);
    assert_int_equal(file_size(path), SEG_HDR);
    snprintf(path, sizeof path, "%s/LOCK", f->dir);
    assert_true(file_exists(path));
    close_log(f, s);

    /* and it reopens empty */
    assert_int_equal(reopen(f, &s, &r, BIG), 0);
    assert_int_equal(r.n, 0);
    close_log(f, s);
}

/* Appends and compaction are refused outside the running state. */
static void test_states(void **state)
{
    struct fix *f = *state;
    struct store *s = open_log(f, BIG, BIG);
    int done = 0;
    assert_int_equal(store_append(s, "x", 1, count_done, &done), DTX_ESTATE);
    assert_int_equal(store_recover(s, collect, &(struct recs){0}), 0);
    assert_int_equal(store_recover(s, collect, &(struct recs){0}), DTX_ESTATE);
    assert_int_equal(store_close(s), 0);
    assert_int_equal(store_append(s, "x", 1, count_done, &done), DTX_ECLOSED);
    char *blob = strdup("snap");
    size_t *lens = malloc(sizeof *lens);
    lens[0] = 4;
    assert_int_equal(store_compact(s, blob, lens, 1), DTX_ECLOSED); /* and freed them */
    assert_int_equal(store_compact_due(s), 0);
    store_free(s);
    assert_int_equal(done, 0);
}

/* fdatasync observer: the highest byte written, and the highest made durable. */
static atomic_uint_least64_t g_written;
static atomic_uint_least64_t g_synced;
static atomic_int g_syncs;

static ssize_t watch_pwrite(int fd, const void *p, size_t n, off_t off)
{
    ssize_t k = pwrite(fd, p, n, off);
    if (k > 0 && (uint64_t)(off + k) > atomic_load(&g_written))
        atomic_store(&g_written, (uint64_t)(off + k));
    return k;
}

static int watch_fdatasync(int fd)
{
    uint64_t w = atomic_load(&g_written);
    int rc = fdatasync(fd);
    atomic_store(&g_synced, w);
    atomic_fetch_add(&g_syncs, 1);
    return rc;
}

struct order {
    int next; /* index the next callback must carry */
    off_t end[5000];
};

struct order_arg {
    struct order *o;
    int i;
};

static void order_done(void *arg, int status)
{
    struct order_arg *a = arg;
    assert_int_equal(status, 0);
    assert_int_equal(a->i, a->o->next);
    a->o->next++;
    /* the record was written and fdatasync returned after that */
    assert_true(atomic_load(&g_synced) >= (uint64_t)a->o->end[a->i]);
}

/* Callbacks run only after fdatasync covered their record, in append order,
 * never inside append, and many records share one fdatasync (group commit). */
static void test_append_durable_in_order(void **state)
{
    enum { N = 5000 };
    struct fix *f = *state;
    static struct order o;
    static struct order_arg args[N];
    struct recs r = {0};
    struct store *s;
    char rec[400];

    memset(&o, 0, sizeof o);
    atomic_store(&g_written, 0);
    atomic_store(&g_synced, 0);
    atomic_store(&g_syncs, 0);
    wal_sys.pwrite = watch_pwrite;
    wal_sys.fdatasync = watch_fdatasync;
    assert_int_equal(reopen(f, &s, &r, BIG), 0);
    off_t off = SEG_HDR;
    for (int i = 0; i < N; i++) {
        size_t len = make_rec(i % 4000, rec);
        off += REC_HDR + (off_t)len;
        o.end[i] = off;
        args[i] = (struct order_arg){&o, i};
        assert_int_equal(store_append(s, rec, len, order_done, &args[i]), 0);
    }
    assert_int_equal(o.next, 0); /* nothing runs inside append */
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(o.next, N);
    print_message("    %d records in %d fdatasync calls\n", N, atomic_load(&g_syncs));
    assert_true(atomic_load(&g_syncs) < N / 10);
    close_log(f, s);
    wal_sys = wal_sys_default;

    assert_int_equal(reopen(f, &s, &r, BIG), 0);
    assert_int_equal(r.n, N);
    for (int i = 0; i < N; i += 97)
        assert_rec(&r, i, i % 4000);
    recs_free(&r);
    close_log(f, s);
}

/* A pwrite that writes a few bytes at a time and is often interrupted. */
static atomic_int g_calls;

static ssize_t choppy_pwrite(int fd, const void *p, size_t n, off_t off)
{
    if (atomic_fetch_add(&g_calls, 1) % 3 == 1) {
        errno = EINTR;
        return -1;
    }
    size_t k = 1 + (size_t)off % 13;
    return pwrite(fd, p, n < k ? n : k, off);
}

/* Short writes and EINTR are carried through: every byte lands. */
static void test_short_writes(void **state)
{
    struct fix *f = *state;
    struct recs r = {0};
    struct store *s;
    char rec[400];
    int done = 0;
    wal_sys.pwrite = choppy_pwrite;
    assert_int_equal(reopen(f, &s, &r, 2000), 0);
    for (int i = 0; i < 40; i++) {
        size_t len = make_rec(i, rec);
        assert_int_equal(store_append(s, rec, len, count_done, &done), 0);
        if (i % 5 == 0)
            uv_run(&f->loop, UV_RUN_DEFAULT);
    }
    close_log(f, s);
    wal_sys = wal_sys_default;
    assert_int_equal(done, 40);
    assert_true(atomic_load(&g_calls) > 1000);
    assert_int_equal(reopen(f, &s, &r, 2000), 0);
    assert_int_equal(r.n, 40);
    for (int i = 0; i < 40; i++)
        assert_rec(&r, i, i);
    recs_free(&r);
    close_log(f, s);
}

/* Reopening replays exactly what was appended, and appends go on after it. */
static void test_reopen_replay(void **state)
{
    struct fix *f = *state;
    struct recs r = {0};
    struct store *s;
    char rec[400];
    int done = 0;

    assert_int_equal(reopen(f, &s, &r, BIG), 0);
    for (int i = 0; i < 200; i++) {
        size_t len = make_rec(i, rec);
        assert_int_equal(store_append(s, rec, len, count_done, &done), 0);
        if (i % 7 == 0)
            uv_run(&f->loop, UV_RUN_DEFAULT);
    }
    assert_int_equal(store_append(s, "", 0, count_done, &done), 0); /* empty record */
    close_log(f, s); /* close drains: every callback ran */
    assert_int_equal(done, 201);

    assert_int_equal(reopen(f, &s, &r, BIG), 0);
    assert_int_equal(r.n, 201);
    for (int i = 0; i < 200; i++)
        assert_rec(&r, i, i);
    assert_int_equal(r.len[200], 0);
    recs_free(&r);
    append_sync(f, s, 200);
    close_log(f, s);

    assert_int_equal(reopen(f, &s, &r, BIG), 0);
    assert_int_equal(r.n, 202);
    assert_rec(&r, 199, 199);
    assert_rec(&r, 201, 200);
    recs_free(&r);
    close_log(f, s);
}

/* A recovery callback's error stops recovery with that code. */
static void test_replay_error(void **state)
{
    struct fix *f = *state;
    struct recs r = {0};
    struct store *s;
    assert_int_equal(reopen(f, &s, &r, BIG), 0);
    for (int i = 0; i < 5; i++)
        append_sync(f, s, i);
    close_log(f, s);
    r.fail_at = 3;
    assert_int_equal(reopen(f, &s, &r, BIG), DTX_EINVAL);
    assert_int_equal(r.n, 3);
    assert_non_null(strstr(store_last_error(s), "stopped"));
    recs_free(&r);
    store_free(s);
}

/* Ten records, one group each, then the log closed. */
static void write_ten(struct fix *f)
{
    struct recs r = {0};
    struct store *s;
    assert_int_equal(reopen(f, &s, &r, BIG), 0);
    for (int i = 0; i < 10; i++)
        append_sync(f, s, i);
    close_log(f, s);
}

/* Recover after damage that must be cut as a torn tail; expect n records. */
static void expect_cut(struct fix *f, int n, off_t end)
{
    struct recs r = {0};
    struct store *s;
    char path[PATH_MAX];
    seg_name(f, 1, path);
    assert_int_equal(reopen(f, &s, &r, BIG), 0);
    assert_int_equal(r.n, n);
    for (int i = 0; i < n; i++)
        assert_rec(&r, i, i);
    recs_free(&r);
    assert_int_equal(file_size(path), end); /* cut off */
    append_sync(f, s, n);                   /* and the log goes on from there */
    close_log(f, s);
    assert_int_equal(reopen(f, &s, &r, BIG), 0);
    assert_int_equal(r.n, n + 1);
    assert_rec(&r, n, n);
    recs_free(&r);
    close_log(f, s);
}

static void test_torn_tail_truncated(void **state)
{
    struct fix *f = *state;
    char path[PATH_MAX];
    write_ten(f);
    seg_name(f, 1, path);
    assert_int_equal(file_size(path), rec_offset(10));
    assert_int_equal(truncate(path, rec_offset(9) + 5), 0); /* mid-header */
    expect_cut(f, 9, rec_offset(9));

    assert_int_equal(truncate(path, rec_offset(10) - 1), 0); /* mid-payload of the last */
    expect_cut(f, 9, rec_offset(9));
}

static void test_torn_tail_garbage(void **state)
{
    struct fix *f = *state;
    char path[PATH_MAX];
    unsigned char junk[333];
    write_ten(f);
    seg_name(f, 1, path);
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = (unsigned char)(i * 131 + 7);
    file_patch(path, rec_offset(10), junk, sizeof junk);
    expect_cut(f, 10, rec_offset(10));
}

static void test_torn_tail_zeros(void **state)
{
    struct fix *f = *state;
    char path[PATH_MAX];
    static const unsigned char zeros[8192];
    write_ten(f);
    seg_name(f, 1, path);
    /* the last record's pages never made it, but the file size did */
    file_patch(path, rec_offset(9), zeros, sizeof zeros);
    expect_cut(f, 9, rec_offset(9));
}

/* Damage followed by a valid record of a later group: refused, file untouched. */
static void test_corrupt_then_valid(void **state)
{
    struct fix *f = *state;
    struct recs r = {0};
    struct store *s;
    char path[PATH_MAX];
    char want[64];
    write_ten(f);
    seg_name(f, 1, path);
    off_t size = file_size(path);

    file_flip(path, rec_offset(4) + REC_HDR + 3); /* payload of record 4 */
    assert_int_equal(reopen(f, &s, &r, BIG), DTX_ECORRUPT);
    const char *msg = store_last_error(s);
    print_message("    %s\n", msg);
    assert_non_null(strstr(msg, "0000000000000001.log"));
    snprintf(want, sizeof want, "byte offset %lld ", (long long)rec_offset(4));
    assert_non_null(strstr(msg, want));
    store_free(s);
    recs_free(&r);
    assert_int_equal(file_size(path), size);

    /* a damaged length field, too */
    file_flip(path, rec_offset(4) + REC_HDR + 3);
    file_flip(path, rec_offset(2) + 1);
    assert_int_equal(reopen(f, &s, &r, BIG), DTX_ECORRUPT);
    snprintf(want, sizeof want, "byte offset %lld ", (long long)rec_offset(2));
    assert_non_null(strstr(store_last_error(s), want));
    store_free(s);
    recs_free(&r);
    assert_int_equal(file_size(path), size);
}

/* Append records [from, to) as one commit group. */
static void append_group(struct fix *f, struct store *s, int from, int to)
{
    char rec[400];
    int done = 0;
    for (int i = from; i < to; i++) {
        size_t len = make_rec(i, rec);
        assert_int_equal(store_append(s, rec, len, count_done, &done), 0);
    }
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(done, to - from);
}

/* A segment over 1 MiB is checked by a second thread while the records
 * already found valid are replayed: the same records in the same order, the
 * same refusal of damage followed by a later group, the same cut of a torn
 * tail, and a replay callback that stops it midway. */
static void test_large_segment_scanned_ahead(void **state)
{
    struct fix *f = *state;
    struct recs r = {0};
    struct store *s;
    char path[PATH_MAX], want[64];
    enum { N = 9000 }; /* about 1.6 MB */
    assert_int_equal(reopen(f, &s, &r, BIG), 0);
    append_group(f, s, 0, N - 100);
    append_group(f, s, N - 100, N);
    close_log(f, s);
    seg_name(f, 1, path);
    assert_true(file_size(path) > (1 << 20));

    assert_int_equal(reopen(f, &s, &r, BIG), 0);
    assert_int_equal(r.n, N);
    for (int i = 0; i < N; i++)
        assert_rec(&r, i, i);
    recs_free(&r);
    close_log(f, s);

    r.fail_at = 5000;
    assert_int_equal(reopen(f, &s, &r, BIG), DTX_EINVAL);
    assert_int_equal(r.n, 5000);
    recs_free(&r);
    store_free(s);

    off_t size = file_size(path);
    file_flip(path, rec_offset(7000) + REC_HDR + 3); /* the first group, before the second */
    r.fail_at = 0;
    assert_int_equal(reopen(f, &s, &r, BIG), DTX_ECORRUPT);
    snprintf(want, sizeof want, "byte offset %lld ", (long long)rec_offset(7000));
    assert_non_null(strstr(store_last_error(s), want));
    assert_int_equal(r.n, 7000); /* those before it were valid */
    recs_free(&r);
    store_free(s);
    assert_int_equal(file_size(path), size);
    file_flip(path, rec_offset(7000) + REC_HDR + 3);

    assert_int_equal(truncate(path, rec_offset(N - 1) + 7), 0);
    assert_int_equal(reopen(f, &s, &r, BIG), 0);
    assert_int_equal(r.n, N - 1);
    assert_rec(&r, N - 2, N - 2);
    recs_free(&r);
    close_log(f, s);
    assert_int_equal(file_size(path), rec_offset(N - 1));
}

/* Restamp a record's group index and CRC, as the spec says. */
static void restamp(const char *path, off_t off, uint32_t idx)
{
    unsigned char h[REC_HDR];
    unsigned char *p;
    file_read(path, off, h, sizeof h);
    uint32_t len = get_le32(h);
    p = malloc(REC_HDR + len);
    file_read(path, off, p, REC_HDR + len);
    put_le32(p + 24, idx);
    uLong c = crc32(0L, p, 4);
    c = crc32(c, p + 8, REC_HDR - 8 + len);
    put_le32(p + 4, (uint32_t)c);
    file_patch(path, off, p, REC_HDR + len);
    free(p);
}

/* A hole inside the last commit group, with later records of the same group
 * intact, is a torn write (pages persisted out of order): the group is cut. */
static void test_torn_group_with_hole(void **state)
{
    struct fix *f = *state;
    char path[PATH_MAX];
    write_ten(f);
    seg_name(f, 1, path);
    /* make records 7, 8, 9 one commit group */
    restamp(path, rec_offset(8), 1);
    restamp(path, rec_offset(9), 2);
    static const unsigned char zeros[64];
    file_patch(path, rec_offset(8), zeros, sizeof zeros);
    expect_cut(f, 8, rec_offset(8));
}

/* Damage in a segment that is not the last one is refused. */
static void test_damage_in_sealed_segment(void **state)
{
    struct fix *f = *state;
    struct recs r = {0};
    struct store *s;
    char path[PATH_MAX];
    assert_int_equal(reopen(f, &s, &r, 600), 0);
    for (int i = 0; i < 12; i++)
        append_sync(f, s, i);
    close_log(f, s);
    assert_true(count_files(f, ".log") >= 3);
    seg_name(f, 1, path);
    off_t size = file_size(path);
    assert_int_equal(truncate(path, size - 3), 0); /* a torn tail, but not the last segment */
    assert_int_equal(reopen(f, &s, &r, 600), DTX_ECORRUPT);
    print_message("    %s\n", store_last_error(s));
    assert_non_null(strstr(store_last_error(s), "0000000000000001.log"));
    assert_non_null(strstr(store_last_error(s), "sealed"));
    store_free(s);
    recs_free(&r);
}

/* A damaged segment header is refused, naming the file and offset 0. */
static void test_bad_header(void **state)
{
    struct fix *f = *state;
    struct recs r = {0};
    struct store *s;
    char path[PATH_MAX];
    write_ten(f);
    seg_name(f, 1, path);
    file_flip(path, 30); /* inside the salt */
    assert_int_equal(reopen(f, &s, &r, BIG), DTX_ECORRUPT);
    print_message("    %s\n", store_last_error(s));
    assert_non_null(strstr(store_last_error(s), "0000000000000001.log"));
    assert_non_null(strstr(store_last_error(s), "byte offset 0"));
    assert_int_equal(r.n, 0);
    store_free(s);
}

struct closer {
    struct store *s;
    int order[3];
    int n;
};

struct closer_arg {
    struct closer *c;
    int i;
};

static void close_in_callback(void *arg, int status)
{
    struct closer_arg *a = arg;
    assert_int_equal(status, 0);
    a->c->order[a->c->n++] = a->i;
    if (a->i == 0) /* e.g. shutdown decided in a callback */
        assert_int_equal(store_close(a->c->s), 0);
}

/* store_close() from inside a callback still runs every callback, in order. */
static void test_close_in_callback(void **state)
{
    struct fix *f = *state;
    struct recs r = {0};
    struct closer c = {0};
    struct closer_arg a[3];
    assert_int_equal(reopen(f, &c.s, &r, BIG), 0);
    for (int i = 0; i < 3; i++) {
        a[i] = (struct closer_arg){&c, i};
        assert_int_equal(store_append(c.s, "r", 1, close_in_callback, &a[i]), 0);
    }
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(c.n, 3);
    for (int i = 0; i < 3; i++)
        assert_int_equal(c.order[i], i);
    assert_int_equal(store_append(c.s, "r", 1, close_in_callback, &a[0]), DTX_ECLOSED);
    store_free(c.s);
}

/* A segment missing in the middle breaks the sequence: refused. */
static void test_missing_segment(void **state)
{
    struct fix *f = *state;
    struct recs r = {0};
    struct store *s;
    char path[PATH_MAX];
    assert_int_equal(reopen(f, &s, &r, 600), 0);
    for (int i = 0; i < 12; i++)
        append_sync(f, s, i);
    close_log(f, s);
    seg_name(f, 2, path);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(reopen(f, &s, &r, 600), DTX_ECORRUPT);
    print_message("    %s\n", store_last_error(s));
    assert_non_null(strstr(store_last_error(s), "0000000000000003.log"));
    assert_non_null(strstr(store_last_error(s), "missing"));
    store_free(s);
    recs_free(&r);
}

/* The log rotates past segment_size and replays across segments in order. */
static void test_rotation(void **state)
{
    struct fix *f = *state;
    struct recs r = {0};
    struct store *s = open_log(f, 1024, 4096);
    char rec[400];
    int done = 0;
    assert_int_equal(store_recover(s, collect, &r), 0);
    assert_int_equal(store_compact_due(s), 0);
    for (int i = 0; i < 150; i++) {
        size_t len = make_rec(i, rec);
        assert_int_equal(store_append(s, rec, len, count_done, &done), 0);
        if (i % 3 == 0)
            uv_run(&f->loop, UV_RUN_DEFAULT);
    }
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(done, 150);
    assert_true(count_files(f, ".log") >= 10);
    assert_true(store_compact_due(s)); /* sealed bytes > 4096 */
    close_log(f, s);

    assert_int_equal(reopen(f, &s, &r, 1024), 0);
    assert_int_equal(r.n, 150);
    for (int i = 0; i < 150; i++)
        assert_rec(&r, i, i);
    recs_free(&r);
    close_log(f, s);
}

/* Build a snapshot of n short strings for store_compact. */
static void make_snap(int n, char **blob, size_t **lens)
{
    *blob = malloc(64 * (size_t)n + 1);
    *lens = malloc(sizeof **lens * (size_t)(n ? n : 1));
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        int k = sprintf(*blob + off, "snap %d", i);
        (*lens)[i] = (size_t)k;
        off += (size_t)k;
    }
}

/* Appends A0..A(na-1) one group each into a log with small segments. */
static struct store *log_with_history(struct fix *f, int na)
{
    struct recs r = {0};
    struct store *s = open_log(f, 700, 1000);
    assert_int_equal(store_recover(s, collect, &r), 0);
    for (int i = 0; i < na; i++)
        append_sync(f, s, i);
    return s;
}

/* Compact, append "b 0".."b 4" right away, wait for all of it. */
static void compact_and_append(struct fix *f, struct store *s, int nsnap)
{
    char *blob;
    size_t *lens;
    char rec[400];
    int done = 0;
    make_snap(nsnap, &blob, &lens);
    assert_true(store_compact_due(s));
    assert_int_equal(store_compact(s, blob, lens, (size_t)nsnap), 0);
    assert_int_equal(store_compact_due(s), 0); /* one at a time */
    make_snap(1, &blob, &lens);
    assert_int_equal(store_compact(s, blob, lens, 1), DTX_EAGAIN);
    for (int i = 0; i < 5; i++) {
        int len = sprintf(rec, "b %d", i);
        assert_int_equal(store_append(s, rec, (size_t)len, count_done, &done), 0);
    }
    uv_run(&f->loop, UV_RUN_DEFAULT); /* until the records and the compaction are done */
    assert_int_equal(done, 5);
}

static void expect_snap_then_b(struct recs *r, int nsnap)
{
    char want[32];
    assert_int_equal(r->n, nsnap + 5);
    for (int i = 0; i < nsnap; i++) {
        sprintf(want, "snap %d", i);
        assert_str(r, i, want);
    }
    for (int i = 0; i < 5; i++) {
        sprintf(want, "b %d", i);
        assert_str(r, nsnap + i, want);
    }
}

/* The two-step compaction: the snapshot arrives after records appended past
 * the cut (they stay, after it); an abandoned one or one still waiting when
 * the log closes changes nothing. */
static void test_compaction_two_step(void **state)
{
    struct fix *f = *state;
    struct recs r = {0};
    struct store *s = log_with_history(f, 30);
    char rec[32];
    int done = 0;
    assert_int_equal(store_compact_begin(s, 2), 0);
    assert_int_equal(store_compact_due(s), 0);
    assert_int_equal(store_compact_begin(s, 1), DTX_EAGAIN);
    for (int i = 0; i < 5; i++) {
        int len = sprintf(rec, "b %d", i);
        assert_int_equal(store_append(s, rec, (size_t)len, count_done, &done), 0);
    }
    while (done < 5) /* durable while the compaction waits for its snapshot */
        uv_run(&f->loop, UV_RUN_ONCE);
    char *blob;
    size_t *lens;
    make_snap(2, &blob, &lens);
    assert_int_equal(store_compact_finish(s, blob, lens), 0);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    make_snap(1, &blob, &lens);
    assert_int_equal(store_compact_finish(s, blob, lens), DTX_ESTATE); /* none waits */
    close_log(f, s);
    assert_int_equal(reopen(f, &s, &r, 700), 0);
    expect_snap_then_b(&r, 2);
    recs_free(&r);

    /* abandoned: the old records stay as they are */
    assert_int_equal(store_compact_begin(s, 1), 0);
    assert_int_equal(store_compact_finish(s, NULL, NULL), 0);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(store_compact_begin(s, 1), 0); /* and then closed while it waits */
    close_log(f, s);
    assert_int_equal(reopen(f, &s, &r, 700), 0);
    expect_snap_then_b(&r, 2);
    recs_free(&r);
    close_log(f, s);
}

/* Compaction replaces the old segments by the snapshot; later records stay. */
static void test_compaction(void **state)
{
    struct fix *f = *state;
    struct recs r = {0};
    struct store *s = log_with_history(f, 30);
    int before = count_files(f, ".log");
    assert_true(before >= 5);
    compact_and_append(f, s, 3);
    int after = count_files(f, ".log");
    print_message("    %d segments before, %d after\n", before, after);
    assert_true(after <= 3);
    assert_int_equal(count_files(f, ".tmp"), 0);
    assert_int_equal(store_compact_due(s), 0); /* the snapshot does not count */
    close_log(f, s);

    assert_int_equal(reopen(f, &s, &r, 700), 0);
    expect_snap_then_b(&r, 3);
    recs_free(&r);
    append_sync(f, s, 2000);
    close_log(f, s);

    assert_int_equal(reopen2(f, &s, &r, 700, 1000), 0);
    assert_int_equal(r.n, 3 + 5 + 1);
    assert_rec(&r, 8, 2000);
    recs_free(&r);

    /* and again on top of a snapshot, with an empty snapshot this time */
    for (int i = 0; i < 20; i++)
        append_sync(f, s, i);
    compact_and_append(f, s, 0);
    close_log(f, s);
    assert_int_equal(reopen(f, &s, &r, 700), 0);
    expect_snap_then_b(&r, 0);
    recs_free(&r);
    close_log(f, s);
}

/* Crash after the snapshot's rename but before the old segments went: they
 * are superseded, deleted by recovery, never replayed. */
static void test_compaction_crash_before_delete(void **state)
{
    struct fix *f = *state;
    struct recs r = {0};
    char path[PATH_MAX];
    char keep[PATH_MAX];
    struct store *s = log_with_history(f, 30);
    int nold = count_files(f, ".log");
    for (int id = 1; id <= nold; id++) {
        seg_name(f, (uint64_t)id, path);
        snprintf(keep, sizeof keep, "%s/keep-%d", f->root, id);
        copy_file(path, keep);
    }
    compact_and_append(f, s, 4);
    close_log(f, s);
    int restored = 0;
    for (int id = 1; id <= nold; id++) {
        seg_name(f, (uint64_t)id, path);
        snprintf(keep, sizeof keep, "%s/keep-%d", f->root, id);
        if (!file_exists(path)) {
            copy_file(keep, path);
            restored++;
        }
    }
    assert_true(restored >= 3);
    assert_int_equal(reopen(f, &s, &r, 700), 0);
    expect_snap_then_b(&r, 4);
    recs_free(&r);
    close_log(f, s);
    for (int id = 1; id < nold; id++) { /* all gone again */
        seg_name(f, (uint64_t)id, path);
        assert_false(file_exists(path));
    }
    assert_int_equal(count_files(f, ".log"), 2); /* the snapshot and the one after it */
}

/* rename() of the snapshot fails: the compaction is abandoned and the log
 * (old segments, cut rotation and all) still replays everything. */
static int fail_snapshot_rename(const char *from, const char *to)
{
    unsigned char h[SEG_HDR];
    int fd = open(from, O_RDONLY);
    if (fd >= 0 && pread(fd, h, sizeof h, 0) == (ssize_t)sizeof h && (get_le32(h + 12) & 1)) {
        close(fd);
        errno = EIO;
        return -1;
    }
    if (fd >= 0)
        close(fd);
    return rename(from, to);
}

static void test_compaction_abandoned(void **state)
{
    struct fix *f = *state;
    struct recs r = {0};
    wal_sys.rename = fail_snapshot_rename; /* only while no log is open */
    struct store *s = log_with_history(f, 30);
    compact_and_append(f, s, 3);
    assert_int_equal(count_files(f, ".tmp"), 0);
    assert_true(store_compact_due(s)); /* may be tried again */
    close_log(f, s);
    wal_sys = wal_sys_default;
    assert_int_equal(reopen(f, &s, &r, 700), 0);
    assert_int_equal(r.n, 35);
    for (int i = 0; i < 30; i++)
        assert_rec(&r, i, i);
    for (int i = 0; i < 5; i++) {
        char want[16];
        sprintf(want, "b %d", i);
        assert_str(&r, 30 + i, want);
    }
    recs_free(&r);
    close_log(f, s);
}

/* A *.tmp left by a crash (of a compaction or a rotation) is deleted. */
static void test_tmp_leftover(void **state)
{
    struct fix *f = *state;
    struct recs r = {0};
    struct store *s;
    char path[PATH_MAX];
    write_ten(f);
    snprintf(path, sizeof path, "%s/0000000000000001.log.tmp", f->dir);
    close(open(path, O_WRONLY | O_CREAT, 0600));
    file_patch(path, 0, "DTXLOG01 half a snapshot", 24);
    snprintf(path, sizeof path, "%s/0000000000000002.log.tmp", f->dir);
    close(open(path, O_WRONLY | O_CREAT, 0600));
    assert_int_equal(reopen(f, &s, &r, BIG), 0);
    assert_int_equal(r.n, 10);
    assert_int_equal(count_files(f, ".tmp"), 0);
    recs_free(&r);
    close_log(f, s);
}

/* Two opens of one directory: the second is refused, naming the lock. */
static void test_lock(void **state)
{
    struct fix *f = *state;
    struct wal_config cfg = {.dir = f->dir};
    struct store *s1 = open_log(f, BIG, BIG);
    struct store *s2 = NULL;
    const char *msg = NULL;
    assert_int_not_equal(wal_open(&f->loop, &cfg, &s2, &msg), 0);
    assert_null(s2);
    print_message("    %s\n", msg);
    assert_non_null(strstr(msg, "locked"));
    assert_non_null(strstr(msg, f->dir));
    store_free(s1);
    assert_int_equal(wal_open(&f->loop, &cfg, &s2, &msg), 0); /* free released it */
    store_free(s2);
}

static int fail_eio(int fd)
{
    (void)fd;
    errno = EIO;
    return -1;
}

static void must_not_run(void *arg, int status)
{
    (void)arg;
    (void)status;
    _exit(3);
}

/* A failed fdatasync ends the process with status 1, naming the file and
 * errno, and runs no callback. Done in a child process. */
static void test_fatal_fdatasync(void **state)
{
    struct fix *f = *state;
    int pipefd[2];
    assert_int_equal(pipe(pipefd), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(pipefd[1], STDERR_FILENO);
        uv_loop_t loop;
        struct store *s;
        const char *msg;
        struct wal_config cfg = {.dir = f->dir};
        uv_loop_init(&loop);
        wal_sys.fdatasync = fail_eio; /* recovery of a new log uses fsync only */
        if (wal_open(&loop, &cfg, &s, &msg) != 0 || store_recover(s, NULL, NULL) != 0)
            _exit(4);
        store_append(s, "doomed", 6, must_not_run, NULL);
        uv_run(&loop, UV_RUN_DEFAULT);
        _exit(5);
    }
    close(pipefd[1]);
    char out[4096];
    size_t n = 0;
    for (;;) {
        ssize_t k = read(pipefd[0], out + n, sizeof out - 1 - n);
        if (k <= 0)
            break;
        n += (size_t)k;
    }
    out[n] = '\0';
    close(pipefd[0]);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 1);
    assert_non_null(strstr(out, "level=fatal"));
    assert_non_null(strstr(out, "op=fdatasync"));
    assert_non_null(strstr(out, "0000000000000001.log"));
    assert_non_null(strstr(out, "errno=5"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
        T(test_new_dir),
        T(test_states),
        T(test_append_durable_in_order),
        T(test_short_writes),
        T(test_reopen_replay),
        T(test_replay_error),
        T(test_torn_tail_truncated),
        T(test_torn_tail_garbage),
        T(test_torn_tail_zeros),
        T(test_corrupt_then_valid),
        T(test_large_segment_scanned_ahead),
        T(test_torn_group_with_hole),
        T(test_damage_in_sealed_segment),
        T(test_bad_header),
        T(test_missing_segment),
        T(test_close_in_callback),
        T(test_rotation),
        T(test_compaction),
        T(test_compaction_two_step),
        T(test_compaction_crash_before_delete),
        T(test_compaction_abandoned),
        T(test_tmp_leftover),
        T(test_lock),
        T(test_fatal_fdatasync),
#undef T
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
