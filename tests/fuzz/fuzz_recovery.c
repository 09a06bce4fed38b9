/*
 * fuzz_recovery.c - libFuzzer target: start-up recovery of the embedded log
 * (store/wal.h: wal_open + store_recover) over segment files built from the
 * input, in a directory of this process (dtx-fuzz-recovery.<pid>/log in
 * /dev/shm, else /tmp; emptied before every run, removed at exit, or by the
 * next process if this one crashed).
 *
 * Random bytes almost never get past a CRC, so the input does not hold the
 * files themselves but says how to build them (docs/LOG_FORMAT.md):
 *
 *   u8 flags | u16 damage offset | u8 damage xor | u16 cut | u8 group size
 *   | then either raw segment bytes (flags & RAW) or records, each
 *     u16 length + that many payload bytes (the last one may be short)
 *
 * RAW: one segment, a valid header followed by the bytes as they are (the
 * torn-tail and damage scanner on garbage). Otherwise the records are framed
 * as the writer frames them (length, CRC, seq, salt, group index; groups of
 * `group size` records) into one segment, or two (SPLIT; the second one a
 * snapshot with SNAPSHOT), and then the last segment is damaged (DAMAGE:
 * one byte xored, at the offset modulo its size) and/or cut short (CUT).
 * Payloads are usually engine records (the seed corpus holds records made by
 * the encoder); the replay callback decodes each one as the engine would.
 *
 * Checked: recovery returns 0, DTX_ECORRUPT or DTX_EUNSUPPORTED, never
 * crashes, leaks or hangs; without damage or cut every record is replayed in
 * order; never more records than were written; and after a successful
 * recovery (which may have cut a torn tail) a second one succeeds and
 * replays the same records.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>
#include <zlib.h>

#include "common/codec.h"
#include "common/err.h"
#include "common/slog.h"
#include "engine/engine.h"
#include "engine/record.h"
#include "store/wal.h"
#include "store/wal_sys.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);               \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#define SEG_HDR  48
#define REC_HDR  28
#define PREAMBLE 7
#define F_RAW    1
#define F_SPLIT  2
#define F_DAMAGE 4
#define F_CUT    8
#define F_SMALL  16 /* a small segment_size: the writer starts a new segment */
#define F_ENGINE 32 /* recover through the engine (engine_recover), as dtxd does */
#define SALT1    0x1122334455667788ull
#define SALT2    0x8877665544332211ull

static char root[64];
static char dir[96];
static uv_loop_t loop;

/* The engine's transports: every call is accepted and never answered (the
 * calls are abandoned at the end, as when dtxd stops). */
static int tp_call(struct transport *t, const struct call_req *req, call_done_fn cb, void *arg)
{
    (void)t;
    (void)req;
    (void)cb;
    (void)arg;
    return 0;
}

static void tp_free(struct transport *t)
{
    (void)t;
}

static const struct transport_ops tp_ops = {.call = tp_call, .free = tp_free};
static struct transport tp = {.ops = &tp_ops, .scheme = "http"};
static struct transport_router router;

static int no_sync(int fd)
{
    (void)fd;
    return 0; /* nothing here needs to survive a power loss */
}

static void empty_dir(void)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        char path[256];
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        unlink(path);
    }
    closedir(d);
}

static void cleanup(void)
{
    empty_dir();
    rmdir(dir);
    rmdir(root);
}

/* Remove what runs that crashed (no atexit) left in base: the directories
 * of processes that are gone. */
static void remove_stale(const char *base)
{
    static const char prefix[] = "dtx-fuzz-recovery.";
    DIR *d = opendir(base);
    if (d == NULL)
        return;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strncmp(de->d_name, prefix, sizeof prefix - 1) != 0)
            continue;
        long pid = strtol(de->d_name + sizeof prefix - 1, NULL, 10);
        if (pid <= 0 || kill((pid_t)pid, 0) == 0 || errno != ESRCH)
            continue;
        snprintf(root, sizeof root, "%s/%s", base, de->d_name);
        snprintf(dir, sizeof dir, "%s/log", root);
        cleanup();
    }
    closedir(d);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    /* tmpfs when there is one: on a disk, creating and deleting the files
     * is most of the time of a run */
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    remove_stale(base);
    snprintf(root, sizeof root, "%s/dtx-fuzz-recovery.%ld", base, (long)getpid());
    snprintf(dir, sizeof dir, "%s/log", root);
    mkdir(root, 0700);
    mkdir(dir, 0700);
    atexit(cleanup);
    uv_loop_init(&loop);
    transport_router_init(&router);
    static const char *const schemes[] = {"http", "https", "amqp", "amqps", "kafka", "resource"};
    for (size_t i = 0; i < sizeof schemes / sizeof schemes[0]; i++)
        transport_router_add(&router, schemes[i], &tp);
    wal_sys.fsync = no_sync;
    wal_sys.fdatasync = no_sync;
    slog_set_level(SLOG_FATAL); /* recovery warns about every torn tail it cuts */
    return 0;
}

/* A segment being built. */
struct seg {
    unsigned char *p;
    size_t len, cap;
};

static void seg_put(struct seg *s, const void *p, size_t n)
{
    if (s->len + n > s->cap) {
        s->cap = (s->len + n) * 2;
        s->p = realloc(s->p, s->cap);
    }
    memcpy(s->p + s->len, p, n);
    s->len += n;
}

static void seg_header(struct seg *s, uint64_t id, uint32_t flags, uint64_t salt, uint64_t seq)
{
    unsigned char h[SEG_HDR];
    memcpy(h, "DTXLOG01", 8);
    put_le32(h + 8, 1);
    put_le32(h + 12, flags);
    put_le64(h + 16, id);
    put_le64(h + 24, salt);
    put_le64(h + 32, seq);
    put_le32(h + 40, 0);
    put_le32(h + 44, (uint32_t)crc32(0L, h, 44));
    seg_put(s, h, sizeof h);
}

static void seg_record(struct seg *s, const uint8_t *p, uint32_t len, uint64_t seq, uint64_t salt,
                       uint32_t idx)
{
    unsigned char r[REC_HDR];
    put_le32(r, len);
    put_le64(r + 8, seq);
    put_le64(r + 16, salt);
    put_le32(r + 24, idx);
    uLong c = crc32(0L, r, 4);
    c = crc32(c, r + 8, REC_HDR - 8);
    c = crc32(c, p, len);
    put_le32(r + 4, (uint32_t)c);
    seg_put(s, r, sizeof r);
    seg_put(s, p, len);
}

static void seg_write(const struct seg *s, uint64_t id)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%016" PRIx64 ".log", dir, id);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    CHECK(fd >= 0);
    CHECK(write(fd, s->p, s->len) == (ssize_t)s->len);
    close(fd);
}

/* What the replay saw. */
struct seen {
    size_t n;
    uint32_t crc; /* of every payload, in order */
};

static int on_record(void *arg, const void *rec, size_t len)
{
    struct seen *s = arg;
    struct record r;
    if (record_decode(rec, len, &r) == 0)
        record_clear(&r);
    s->n++;
    s->crc = (uint32_t)crc32(s->crc, rec, (uInt)len);
    return 0;
}

/*
 * Open and recover the directory, through the engine if engine is set (the
 * engine decodes and applies every record, resumes what is unfinished and
 * may append records), else with on_record. Returns recover's code; *out is
 * what on_record saw.
 */
static int recover(uint64_t segment_size, int engine, struct seen *out)
{
    struct wal_config cfg = {.dir = dir, .segment_size = segment_size};
    struct store *s = NULL;
    const char *msg = NULL;
    memset(out, 0, sizeof *out);
    int rc = wal_open(&loop, &cfg, &s, &msg);
    if (rc != 0) {
        fprintf(stderr, "wal_open: %s\n", msg);
        abort();
    }
    struct engine *e = NULL;
    if (engine) {
        struct engine_config ec = {.retention_ms = 3600000, .max_branches = 100};
        e = engine_new(&loop, s, &router, &ec);
        rc = engine_recover(e);
    } else {
        rc = store_recover(s, on_record, out);
    }
    CHECK(rc == 0 || rc == DTX_ECORRUPT || rc == DTX_EUNSUPPORTED);
    CHECK(rc == 0 || store_last_error(s)[0] != '\0');
    if (e != NULL)
        engine_stop(e);
    CHECK(store_close(s) == 0);
    if (e != NULL)
        engine_free(e);
    store_free(s);
    uv_run(&loop, UV_RUN_DEFAULT);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < PREAMBLE)
        return 0;
    uint8_t flags = data[0];
    uint16_t dmg_off = (uint16_t)(data[1] | data[2] << 8);
    uint8_t dmg_xor = data[3];
    uint16_t cut = (uint16_t)(data[4] | data[5] << 8);
    uint32_t group = data[6] ? data[6] : 1;
    data += PREAMBLE;
    size -= PREAMBLE;

    empty_dir();
    struct seg seg[2] = {{0}};
    int nseg = 1;
    size_t written = 0, replayed = 0;
    uint32_t want_crc = 0;
    if (flags & F_RAW) {
        seg_header(&seg[0], 1, 0, SALT1, 1);
        seg_put(&seg[0], data, size);
    } else {
        /* split the records into payloads first: SPLIT puts the second half
         * into a snapshot segment */
        size_t n = 0, cap = 16, off = 0;
        const uint8_t **pay = malloc(cap * sizeof *pay);
        uint32_t *len = malloc(cap * sizeof *len);
        while (size - off >= 2) {
            uint32_t l = (uint32_t)(data[off] | data[off + 1] << 8);
            off += 2;
            if (l > size - off)
                l = (uint32_t)(size - off);
            if (n == cap) {
                cap *= 2;
                pay = realloc(pay, cap * sizeof *pay);
                len = realloc(len, cap * sizeof *len);
            }
            pay[n] = data + off;
            len[n++] = l;
            off += l;
        }
        size_t first = (flags & F_SPLIT) ? n / 2 : n;
        nseg = (flags & F_SPLIT) ? 2 : 1;
        seg_header(&seg[0], 1, 0, SALT1, 1);
        if (nseg == 2)
            seg_header(&seg[1], 2, 1 /* SNAPSHOT */, SALT2, 1 + first);
        for (size_t i = 0; i < n; i++) {
            struct seg *s = i < first ? &seg[0] : &seg[1];
            uint64_t salt = i < first ? SALT1 : SALT2;
            size_t base = i < first ? 0 : first; /* groups restart in each segment */
            seg_record(s, pay[i], len[i], 1 + i, salt, (uint32_t)((i - base) % group));
            if (nseg == 1 || i >= first)
                want_crc = (uint32_t)crc32(want_crc, pay[i], len[i]);
        }
        written = n;
        /* a snapshot supersedes the segment before it: not replayed */
        replayed = n - (nseg == 2 ? first : 0);
        free(pay);
        free(len);
    }
    struct seg *last = &seg[nseg - 1];
    int intact = !(flags & F_RAW);
    if ((flags & F_DAMAGE) && dmg_xor != 0) {
        last->p[dmg_off % last->len] ^= dmg_xor;
        intact = 0;
    }
    if ((flags & F_CUT) && cut < last->len) {
        last->len = cut;
        intact = 0;
    }
    for (int i = 0; i < nseg; i++) {
        seg_write(&seg[i], (uint64_t)i + 1);
        free(seg[i].p);
    }

    uint64_t segment_size = (flags & F_SMALL) ? 256 : 0;
    int engine = (flags & F_ENGINE) != 0;
    struct seen a, b;
    int rc = recover(segment_size, engine, &a);
    if (engine) {
        /* the engine refuses records it cannot decode, and appends its own:
         * those must be recoverable */
        if (rc == 0)
            CHECK(recover(segment_size, 1, &b) == 0);
        return 0;
    }
    if (intact)
        CHECK(rc == 0 && a.n == replayed && a.crc == want_crc);
    if (!(flags & F_RAW))
        CHECK(a.n <= written);
    if (rc == 0) {
        CHECK(recover(segment_size, 0, &b) == 0);
        CHECK(b.n == a.n && b.crc == a.crc);
    }
    return 0;
}
