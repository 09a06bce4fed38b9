/*
 * wal.c - the embedded log: an append-only, segmented write-ahead log in one
 * directory, written by one thread with group commit (DESIGN §3 and §4).
 *
 * SHAPE
 *
 * After start-up the loop thread touches no file. store_append() copies the
 * record, behind a 28-byte header of which only the length is known yet, into
 * the "fill" buffer under a mutex, and wakes the writer thread if it sleeps.
 * The writer swaps the fill buffer for its own empty one, stamps every header
 * (sequence number, salt, group index, CRC), writes the whole buffer with one
 * pwrite(2) and makes it durable with one fdatasync(2). Everything queued
 * while the previous fdatasync ran thus becomes one commit group: one write,
 * one sync, however many records. Only after fdatasync has returned success
 * are the group's callbacks moved to the "done" list and the loop woken
 * through a uv_async_t; the loop runs them in append order. The async handle
 * holds a reference on the loop only while callbacks (or a compaction) are
 * outstanding, so an idle log does not keep uv_run() from returning.
 *
 * A failed write or sync ends the process at once (slog_fatal, _exit(1)):
 * after a failed fsync the kernel may have dropped the dirty pages, so the
 * only safe state is the one recovery finds on disk (PostgreSQL's fsyncgate).
 * No callback of the failed group, or of any later one, ever runs; an fsync
 * is never retried. Short writes and EINTR are handled.
 *
 * FILES
 *
 * The directory holds segment files named by a 64-bit id in 16 lowercase hex
 * digits, "0000000000000001.log", a "LOCK" file (flock'ed LOCK_EX for as long
 * as the log is open, holding the owner's pid for operators), and at most
 * transiently "<id>.log.tmp" files. A segment is created as .tmp holding only
 * its header, fsynced, renamed into place, and the directory fsynced; so a
 * segment file always has a whole header. Every create, rename and unlink is
 * followed by an fsync of the directory.
 *
 * SEGMENT HEADER (48 bytes; integers little-endian)
 *
 *   offset size  field
 *   0      8     magic: the ASCII bytes "DTXLOG01" (no NUL)
 *   8      4     format version: 1
 *   12     4     flags: bit 0 SNAPSHOT (this segment replaces every segment
 *                with a lower id); the other bits are 0
 *   16     8     segment id, equal to the id in the file name
 *   24     8     salt: 8 random bytes (getrandom) drawn when the segment is
 *                made, read as a u64
 *   32     8     first_seq: sequence number of the segment's first record
 *   40     4     reserved: 0
 *   44     4     CRC-32 of bytes 0..43
 *
 * RECORD (28-byte header, then the payload; records follow each other from
 * offset 48 without padding)
 *
 *   offset size  field
 *   0      4     length N of the payload in bytes (at most 64 MiB)
 *   4      4     CRC-32 of bytes 0..3 and 8..27+N, that is of everything in
 *                the record but the CRC itself
 *   8      8     seq: sequence number
 *   16     8     salt: a copy of the segment header's salt
 *   24     4     group index: position of the record in its commit group
 *                (0 for the first record of a group), so seq - index is the
 *                seq of the group's first record
 *   28     N     payload: the engine's bytes, opaque here
 *
 * CRC-32 is zlib's crc32() (ISO-HDLC: polynomial 0xEDB88320 reflected, initial
 * value and final xor 0xFFFFFFFF; crc32("123456789") = 0xCBF43926).
 *
 * SEQUENCE NUMBERS
 *
 * Sequence numbers count records across the whole log, modulo 2^64: the
 * records of a segment are first_seq, first_seq + 1, ..., and the next
 * segment's first_seq continues the count. A fresh log starts at 1. A
 * snapshot that replaces everything up to sequence number L with n records is
 * numbered L - n + 1 .. L (which may wrap below zero; only equality matters),
 * so the segment after it continues at L + 1 whether or not the snapshot made
 * it to disk before a crash. A record whose salt is not its segment's comes
 * from another segment or an earlier incarnation of the file; a record whose
 * seq is not the next one is stale or misplaced; a segment whose first_seq
 * does not continue its predecessor means a segment is missing.
 *
 * RECOVERY
 *
 * Segments are read in id order. Those with an id below the newest snapshot
 * segment are superseded: deleted, never read. Leftover *.tmp files are
 * deleted. Every other segment must have a valid header, and every segment
 * but the last must hold valid records right up to its end (it was fsynced
 * before its successor was made). In the last segment the valid prefix ends
 * at the first record that does not validate (length in range and within the
 * file, salt, CRC, seq). What follows is either a torn tail, cut off with
 * ftruncate + fsync, or damage, and recovery refuses to start (DTX_ECORRUPT,
 * naming the file and byte offset). It is damage when, anywhere after the bad
 * record, a record validates (salt and CRC) that does not belong to the one
 * commit group that was being written at the crash: a group whose records
 * were durable before a later group was written cannot be torn. A crash can
 * persist the pages of one unsynced write in any order, so valid records of
 * that last group after a hole are expected, not damage; they are cut with
 * the rest. (Damage that hits only the last group is indistinguishable from a
 * torn write, in this log as in any other.)
 *
 * In a segment over SCAN_THREAD_MIN bytes a second thread finds the valid
 * prefix (the CRCs are a sixth of a restart's time) while the recovering
 * thread hands the records already found valid to the replay callback, so
 * the callback never sees a record before it has been checked. When it has
 * caught up, it sleeps until the scanner publishes more.
 *
 * COMPACTION
 *
 * store_compact_begin() puts a cut mark in the queue. When the writer
 * reaches it, the records before the mark have been written and synced to
 * the active segment K; the writer rotates to a new segment K+1 (so later
 * appends go there, untouched by the compaction) and starts the compaction
 * thread. That thread waits until store_compact_finish() hands over the
 * snapshot (the engine builds it off the loop), then writes its records to
 * "<K>.log.tmp" with the SNAPSHOT flag, fsyncs it, renames it over segment K,
 * fsyncs the directory, deletes every segment below K and fsyncs the
 * directory again. A crash before the rename leaves the old segments (and a
 * .tmp that recovery deletes); after it, the snapshot supersedes them. A
 * failure before the rename, or a snapshot that never comes (abandoned, or
 * the log closed first), abandons the compaction (nothing acknowledged
 * depends on it); a failure of a directory fsync after it is fatal.
 */
#include "store/wal.h"
#include "store/wal_sys.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "common/alloc.h"
#include "common/buf.h"
#include "common/clock.h"
#include "common/codec.h"
#include "common/crash.h"
#include "common/err.h"
#include "common/rnd.h"
#include "common/slog.h"

#define WAL_MAGIC           "DTXLOG01"
#define WAL_VERSION         1u
#define WAL_FLAG_SNAPSHOT   1u
#define WAL_SEG_HDR         48
#define WAL_REC_HDR         28
#define WAL_MAX_RECORD      (64u << 20)
#define WAL_DEFAULT_SEGMENT ((uint64_t)64 << 20)
#define WAL_DEFAULT_COMPACT ((uint64_t)256 << 20)
#define WAL_SNAP_CHUNK      ((size_t)1 << 20)
#define WAL_LOCK_NAME       "LOCK"

/* ------------------------------------------------------------------------ */
/* System calls                                                              */

static int sys_open(const char *path, int flags, mode_t mode)
{
    return open(path, flags, mode);
}

/* The real calls: the default table, and the table in use until a test swaps one. */
#define WAL_SYS_REAL                                                                               \
    {                                                                                              \
        .open = sys_open, .close = close, .pwrite = pwrite, .fdatasync = fdatasync,                \
        .fsync = fsync, .rename = rename, .unlink = unlink, .ftruncate = ftruncate,                \
    }
const struct wal_sys wal_sys_default = WAL_SYS_REAL;
struct wal_sys wal_sys = WAL_SYS_REAL;

/* ------------------------------------------------------------------------ */
/* State                                                                     */

/* A callback waiting for its record to become durable. */
struct wal_cb {
    store_done_fn fn;
    void *arg;
};

struct cbvec {
    struct wal_cb *v;
    size_t n;
    size_t cap;
};

/* Life of a log handle; every change goes through set_state(). */
enum wal_state {
    WAL_OPENED,  /* directory locked, not recovered yet: no appends */
    WAL_RUNNING, /* recovered; the writer thread runs */
    WAL_CLOSED,  /* drained and the writer stopped (or recovery failed) */
};

static const char *const state_names[] = {"opened", "running", "closed"};

/* One compaction, from store_compact() until the loop sees it finish. */
struct snap {
    char *blob;         /* the records back to back (owned) */
    size_t *lens;       /* their lengths (owned) */
    size_t n;           /* how many */
    uint64_t id;        /* the sealed segment it takes the place of */
    uint64_t first_seq; /* its first record's sequence number */
    uint64_t covered;   /* sealed bytes it makes obsolete */
    int ready;          /* blob handed over (under mu) */
    int abandoned;      /* no blob will come (under mu) */
};

struct wal {
    struct store store; /* first: the ops cast back from it */
    uv_loop_t *loop;
    uv_async_t *async; /* its own allocation, freed by its close callback */
    char *dir;
    int dirfd;
    int lockfd;
    uint64_t segment_size;
    uint64_t compact_min;
    char err[PATH_MAX + 512]; /* last_error(); written by the loop thread only */

    /* Loop thread only. */
    enum wal_state state;
    uint64_t outstanding; /* callbacks and compactions not finished */
    struct cbvec dvec;    /* callbacks being delivered */
    size_t dpos;          /* next one to run */
    int compacting;

    /* Shared: under mu. */
    uv_mutex_t mu;
    uv_cond_t cv;
    uv_cond_t snap_cv;     /* the compaction thread waits here for the snapshot */
    struct buf fill;       /* records queued for the writer */
    struct cbvec fill_cbs; /* their callbacks */
    int writer_waiting;
    int stopping;
    int cut;         /* a compaction cut mark is queued, at: */
    size_t cut_off;  /* ... this byte of fill */
    size_t cut_nrec; /* ... after this many records */
    struct cbvec done;
    int comp_finished;
    int comp_status;
    uint64_t sealed; /* bytes in sealed segments since the last snapshot */

    /* The writer thread's (the loop's before it starts and once joined). */
    uv_thread_t writer;
    struct buf batch;
    struct cbvec batch_cbs;
    int afd;           /* active segment */
    uint64_t aid;      /* its id */
    uint64_t asize;    /* its size in bytes */
    uint64_t asalt;    /* its salt */
    uint64_t next_seq; /* of the next record */
    int comp_thread;   /* a compaction thread runs or is not joined yet */
    uv_thread_t compactor;
    struct snap snap;
};

/* A failed system call: what, on which file, which errno. */
struct ioerr {
    const char *op;
    int err;
    char path[PATH_MAX];
};

static int ioerr_set(struct ioerr *e, const char *op, const char *path, int err)
{
    e->op = op;
    e->err = err;
    snprintf(e->path, sizeof e->path, "%s", path);
    return -err;
}

static void set_state(struct wal *w, enum wal_state to)
{
    slog_debug("log state", "dir=%s from=%s to=%s", w->dir, state_names[w->state], state_names[to]);
    w->state = to;
}

/* Set last_error() from a format and return code. */
static int fail(struct wal *w, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(struct wal *w, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->err, sizeof w->err, fmt, ap);
    va_end(ap);
    return code;
}

static int fail_io(struct wal *w, const struct ioerr *e)
{
    char eb[128];
    return fail(w, DTX_EIO, "log: %s %s: %s", e->op, e->path, strerror_r(e->err, eb, sizeof eb));
}

static int fail_sys(struct wal *w, const char *op, const char *path, int err)
{
    struct ioerr e;
    ioerr_set(&e, op, path, err);
    return fail_io(w, &e);
}

/* The end of the process after a failed write or sync (see the top). */
static void die(const struct ioerr *e)
{
    char q[PATH_MAX + 8];
    char eb[128];
    slog_fatal("log write failed, exiting", "op=%s file=%s errno=%d error=\"%s\"", e->op,
               slog_quote(e->path, q, sizeof q), e->err, strerror_r(e->err, eb, sizeof eb));
    _exit(1);
}

static void die_sys(const char *op, const char *path, int err)
{
    struct ioerr e;
    ioerr_set(&e, op, path, err);
    die(&e);
}

static void cbvec_push(struct cbvec *v, const struct wal_cb *e, size_t n)
{
    if (v->cap - v->n < n) {
        size_t cap = v->cap ? v->cap : 64;
        while (cap - v->n < n)
            cap *= 2;
        v->v = xrealloc(v->v, cap * sizeof *v->v);
        v->cap = cap;
    }
    memcpy(v->v + v->n, e, n * sizeof *e);
    v->n += n;
}

static void cbvec_swap(struct cbvec *a, struct cbvec *b)
{
    struct cbvec t = *a;
    *a = *b;
    *b = t;
}

static void seg_path(const struct wal *w, uint64_t id, const char *suffix, char out[PATH_MAX])
{
    snprintf(out, PATH_MAX, "%s/%016" PRIx64 ".log%s", w->dir, id, suffix);
}

/* 1 and the id if name is a segment's ("<16 lowercase hex>.log"), else 0. */
static int seg_name_id(const char *name, uint64_t *id /* OUT */)
{
    if (strlen(name) != 20 || strcmp(name + 16, ".log") != 0)
        return 0;
    uint64_t v = 0;
    for (int i = 0; i < 16; i++) {
        char c = name[i];
        int d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if (c >= 'a' && c <= 'f')
            d = c - 'a' + 10;
        else
            return 0;
        v = v << 4 | (uint64_t)d;
    }
    *id = v;
    return 1;
}

static int new_salt(uint64_t *out /* OUT */)
{
    unsigned char b[8];
    do {
        if (rnd_secure(b, sizeof b) != 0)
            return -EIO;
        *out = get_le64(b);
    } while (*out == 0);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Encoding and checking (no I/O)                                            */

struct seg_hdr {
    uint32_t flags;
    uint64_t id;
    uint64_t salt;
    uint64_t first_seq;
};

/* A record header as read back. */
struct rec {
    uint32_t len;
    uint64_t seq;
    uint32_t idx;
};

static void hdr_encode(unsigned char h[WAL_SEG_HDR], const struct seg_hdr *s)
{
    memcpy(h, WAL_MAGIC, 8);
    put_le32(h + 8, WAL_VERSION);
    put_le32(h + 12, s->flags);
    put_le64(h + 16, s->id);
    put_le64(h + 24, s->salt);
    put_le64(h + 32, s->first_seq);
    put_le32(h + 40, 0);
    put_le32(h + 44, (uint32_t)crc32(0L, h, 44));
}

/*
 * Check and decode a segment header of an image of size bytes. Returns 0,
 * DTX_EUNSUPPORTED (another format version) or DTX_ECORRUPT, with *why
 * saying what is wrong.
 */
static int hdr_decode(const unsigned char *h, size_t size, struct seg_hdr *out /* OUT */,
                      const char **why /* OUT */)
{
    *why = NULL;
    if (size < WAL_SEG_HDR)
        *why = "file shorter than a segment header";
    else if (memcmp(h, WAL_MAGIC, 8) != 0)
        *why = "bad magic (not a dtx log segment)";
    else if (get_le32(h + 44) != (uint32_t)crc32(0L, h, 44))
        *why = "header checksum mismatch";
    else if (get_le32(h + 8) != WAL_VERSION) {
        *why = "unsupported format version";
        return DTX_EUNSUPPORTED;
    } else if ((get_le32(h + 12) & ~WAL_FLAG_SNAPSHOT) != 0 || get_le32(h + 40) != 0)
        *why = "unknown flags";
    if (*why != NULL)
        return DTX_ECORRUPT;
    out->flags = get_le32(h + 12);
    out->id = get_le64(h + 16);
    out->salt = get_le64(h + 24);
    out->first_seq = get_le64(h + 32);
    return 0;
}

/* CRC of a record: its header r (payload length already in r[0..3]) and payload p. */
static uint32_t rec_crc(const unsigned char *r, const void *p, uint32_t len)
{
    uLong c = crc32(0L, r, 4);
    c = crc32(c, r + 8, WAL_REC_HDR - 8);
    return (uint32_t)crc32(c, p, len);
}

/* Fill in the header r of a record whose length and payload p are in place. */
static void rec_stamp(unsigned char *r, const void *p, uint64_t seq, uint64_t salt, uint32_t idx)
{
    uint32_t len = get_le32(r);
    put_le64(r + 8, seq);
    put_le64(r + 16, salt);
    put_le32(r + 24, idx);
    put_le32(r + 4, rec_crc(r, p, len));
}

/*
 * Check the record at off of a segment image of size bytes against the
 * segment's salt (seq is the caller's business). Returns NULL with *out
 * filled, or what is wrong with it.
 */
static const char *rec_check(const unsigned char *img, size_t size, size_t off, uint64_t salt,
                             struct rec *out /* OUT */)
{
    if (size - off < WAL_REC_HDR)
        return "truncated record header";
    const unsigned char *r = img + off;
    uint32_t len = get_le32(r);
    if (len > WAL_MAX_RECORD)
        return "record length out of range";
    if (size - off - WAL_REC_HDR < len)
        return "truncated record";
    if (get_le64(r + 16) != salt)
        return "salt mismatch (record from another segment)";
    if (get_le32(r + 4) != rec_crc(r, r + WAL_REC_HDR, len))
        return "checksum mismatch";
    out->len = len;
    out->seq = get_le64(r + 8);
    out->idx = get_le32(r + 24);
    return NULL;
}

/*
 * After the valid prefix of a segment ended at off, find a record that proves
 * damage rather than a torn tail: one at or after off that validates (salt,
 * CRC) but is not a later record of the group torn at off. That group began
 * either at expect (the seq the bad record should have had) or at group (the
 * first seq of the last good record's group). Returns its offset, or 0.
 */
static size_t find_later(const unsigned char *img, size_t size, size_t off, uint64_t salt,
                         uint64_t expect, uint64_t group)
{
    unsigned char s[8];
    put_le64(s, salt);
    size_t p = off;
    while (size - p >= WAL_REC_HDR) {
        const unsigned char *q = memmem(img + p + 16, size - p - 16, s, 8);
        if (q == NULL)
            break;
        p = (size_t)(q - img) - 16;
        struct rec r;
        if (rec_check(img, size, p, salt, &r) == NULL) {
            uint64_t first = r.seq - r.idx;
            uint64_t ahead = r.seq - expect;
            int torn_group = (first == expect || first == group) && ahead >= 1 &&
                             ahead <= (size - off) / WAL_REC_HDR;
            if (!torn_group)
                return p;
        }
        p++;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* File helpers                                                              */

/* Write all n bytes at off, through short writes and EINTR. Returns 0 or -errno. */
static int pwrite_all(int fd, const void *buf, size_t n, uint64_t off)
{
    const char *p = buf;
    while (n > 0) {
        ssize_t k = wal_sys.pwrite(fd, p, n, (off_t)off);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (k == 0)
            return -EIO;
        p += k;
        n -= (size_t)k;
        off += (uint64_t)k;
    }
    return 0;
}

static int sync_dir(const struct wal *w, struct ioerr *e /* OUT */)
{
    if (wal_sys.fsync(w->dirfd) != 0)
        return ioerr_set(e, "fsync", w->dir, errno);
    return 0;
}

/*
 * Make segment id durably, holding only its header (see FILES at the top).
 * On 0, *fd is open for writing and *salt is the segment's salt. Returns 0
 * or -errno with e naming the failed call.
 */
static int segment_create(struct wal *w, uint64_t id, uint64_t first_seq, int *fd /* OUT */,
                          uint64_t *salt /* OUT */, struct ioerr *e /* OUT */)
{
    char tmp[PATH_MAX];
    char path[PATH_MAX];
    unsigned char h[WAL_SEG_HDR];
    struct seg_hdr sh = {.flags = 0, .id = id, .first_seq = first_seq};
    int rc;

    seg_path(w, id, ".tmp", tmp);
    seg_path(w, id, "", path);
    if (new_salt(&sh.salt) != 0)
        return ioerr_set(e, "getrandom", path, EIO);
    *fd = wal_sys.open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (*fd < 0)
        return ioerr_set(e, "open", tmp, errno);
    hdr_encode(h, &sh);
    rc = pwrite_all(*fd, h, sizeof h, 0);
    if (rc != 0) {
        ioerr_set(e, "pwrite", tmp, -rc);
        goto fail;
    }
    if (wal_sys.fsync(*fd) != 0) {
        rc = ioerr_set(e, "fsync", tmp, errno);
        goto fail;
    }
    CRASH_POINT("log.segment_before_rename");
    if (wal_sys.rename(tmp, path) != 0) {
        rc = ioerr_set(e, "rename", tmp, errno);
        goto fail;
    }
    CRASH_POINT("log.segment_after_rename");
    rc = sync_dir(w, e);
    if (rc != 0)
        goto fail;
    *salt = sh.salt;
    return 0;
fail:
    wal_sys.close(*fd);
    *fd = -1;
    return rc;
}

/*
 * Unlink every segment with an id below id, then fsync the directory if any
 * went. Failures to list or unlink are logged, not returned: recovery deletes
 * a superseded segment again. Returns 0 or -errno of the directory fsync.
 */
static int unlink_below(struct wal *w, uint64_t id, struct ioerr *e /* OUT */)
{
    DIR *d = opendir(w->dir);
    if (d == NULL) {
        char eb[128];
        slog_error("cannot list the log directory to delete superseded segments",
                   "dir=%s error=\"%s\"", w->dir, strerror_r(errno, eb, sizeof eb));
        return 0;
    }
    int gone = 0;
    for (;;) {
        struct dirent *de = readdir(d);
        if (de == NULL)
            break;
        uint64_t sid;
        if (!seg_name_id(de->d_name, &sid) || sid >= id)
            continue;
        char path[PATH_MAX];
        seg_path(w, sid, "", path);
        if (wal_sys.unlink(path) != 0) {
            char eb[128];
            slog_error("cannot delete superseded log segment", "file=%s error=\"%s\"", path,
                       strerror_r(errno, eb, sizeof eb));
            continue;
        }
        gone++;
    }
    closedir(d);
    return gone ? sync_dir(w, e) : 0;
}

/* ------------------------------------------------------------------------ */
/* Recovery                                                                  */

/* What recovery has learnt so far, segment by segment. */
struct replay {
    store_replay_fn fn;
    void *arg;
    int have_seq;      /* a segment was read: next_seq is known */
    uint64_t next_seq; /* the seq the next segment must start at */
    uint64_t records;
    uint64_t bytes;
    uint64_t sealed; /* bytes of the non-snapshot segments read */
    /* The last segment read. */
    uint64_t last_id;
    uint64_t last_salt;
    uint64_t last_end;
    int last_snapshot;
    int cut_fd; /* open on the last segment if its tail was cut, else -1 */
};

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a;
    uint64_t y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/*
 * List the segment ids of the directory in ascending order, deleting leftover
 * *.tmp files on the way. On 0 the caller frees *ids.
 */
static int list_segments(struct wal *w, uint64_t **ids /* OUT */, size_t *n /* OUT */)
{
    struct ioerr e;
    size_t cap = 16;
    int tmps = 0;
    *n = 0;
    *ids = xmalloc(cap * sizeof **ids);
    DIR *d = opendir(w->dir);
    if (d == NULL) {
        ioerr_set(&e, "opendir", w->dir, errno);
        goto fail;
    }
    for (;;) {
        struct dirent *de = readdir(d);
        if (de == NULL)
            break;
        size_t len = strlen(de->d_name);
        if (len > 4 && strcmp(de->d_name + len - 4, ".tmp") == 0) {
            char path[PATH_MAX];
            snprintf(path, sizeof path, "%s/%s", w->dir, de->d_name);
            if (wal_sys.unlink(path) != 0) {
                ioerr_set(&e, "unlink", path, errno);
                closedir(d);
                goto fail;
            }
            slog_warn("deleted leftover temporary log file", "file=%s", path);
            tmps++;
            continue;
        }
        uint64_t id;
        if (!seg_name_id(de->d_name, &id))
            continue;
        if (*n == cap) {
            cap *= 2;
            *ids = xrealloc(*ids, cap * sizeof **ids);
        }
        (*ids)[(*n)++] = id;
    }
    closedir(d);
    if (tmps && sync_dir(w, &e) != 0)
        goto fail;
    qsort(*ids, *n, sizeof **ids, cmp_u64);
    return 0;
fail:
    free(*ids);
    *ids = NULL;
    return fail_io(w, &e);
}

/* Index in ids of the newest segment with a valid SNAPSHOT header, or 0. */
static size_t find_base(struct wal *w, const uint64_t *ids, size_t n)
{
    for (size_t i = n; i-- > 0;) {
        char path[PATH_MAX];
        unsigned char h[WAL_SEG_HDR];
        struct seg_hdr sh;
        seg_path(w, ids[i], "", path);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        ssize_t k = pread(fd, h, sizeof h, 0);
        close(fd);
        const char *why;
        if (k == (ssize_t)sizeof h && hdr_decode(h, sizeof h, &sh, &why) == 0 && sh.id == ids[i] &&
            (sh.flags & WAL_FLAG_SNAPSHOT))
            return i;
    }
    return 0;
}

/* Cut the last segment at end (ftruncate + fsync); keep it open in r->cut_fd. */
static int cut_tail(struct wal *w, const char *path, uint64_t end, uint64_t size, struct replay *r)
{
    struct ioerr e;
    int fd = wal_sys.open(path, O_WRONLY | O_CLOEXEC, 0);
    if (fd < 0)
        return fail_sys(w, "open", path, errno);
    if (wal_sys.ftruncate(fd, (off_t)end) != 0) {
        ioerr_set(&e, "ftruncate", path, errno);
        goto fail;
    }
    if (wal_sys.fsync(fd) != 0) {
        ioerr_set(&e, "fsync", path, errno);
        goto fail;
    }
    slog_warn("cut torn tail of log", "file=%s offset=%" PRIu64 " bytes=%" PRIu64, path, end,
              size - end);
    CRASH_POINT("recovery.after_cut_tail");
    r->cut_fd = fd;
    return 0;
fail:
    wal_sys.close(fd);
    return fail_io(w, &e);
}

/*
 * The valid prefix of one segment image (RECOVERY): the records in
 * [WAL_SEG_HDR, end) validate and come in sequence from first_seq. scan()
 * publishes end as it grows and sets done when it is final; why, seq and
 * group are then set: what stopped the prefix before size (NULL if
 * nothing), the seq expected at end, and the first seq of the last good
 * record's commit group.
 */
struct scan {
    const unsigned char *img;
    size_t size;
    uint64_t salt, first_seq;
    atomic_size_t end;
    atomic_int done;
    atomic_int stop; /* the replay gave up: stop early */
    const char *why;
    uint64_t seq, group;
    /* The replay, caught up, sleeps on cv until end moves (never spins: on
     * a busy machine a spinning replay takes the CPU the scan needs). */
    uv_mutex_t mu;
    uv_cond_t cv;
    atomic_int waiting;
};

#define SCAN_THREAD_MIN (1u << 20)
#define SCAN_PUBLISH    256 /* records between two publications of end */

/* Publish the scan's progress, and wake the replay if it waits for it.
 * end and waiting are sequentially consistent: either the replay sees the
 * new end before it sleeps, or this sees waiting and signals under the
 * mutex the replay holds until it is in uv_cond_wait. */
static void scan_publish(struct scan *sc, size_t end, int done)
{
    atomic_store(&sc->end, end);
    if (done)
        atomic_store(&sc->done, 1);
    if (atomic_load(&sc->waiting)) {
        uv_mutex_lock(&sc->mu);
        uv_cond_signal(&sc->cv);
        uv_mutex_unlock(&sc->mu);
    }
}

/* The replay has used every record up to end: sleep until the scan has
 * published more, or is done. */
static void scan_wait(struct scan *sc, size_t end)
{
    uv_mutex_lock(&sc->mu);
    atomic_store(&sc->waiting, 1);
    while (!atomic_load(&sc->done) && atomic_load(&sc->end) == end)
        uv_cond_wait(&sc->cv, &sc->mu);
    atomic_store(&sc->waiting, 0);
    uv_mutex_unlock(&sc->mu);
}

static void scan(void *arg)
{
    struct scan *sc = arg;
    size_t off = WAL_SEG_HDR;
    uint64_t seq = sc->first_seq, group = sc->first_seq;
    const char *why = NULL;
    unsigned k = 0;
    while (off < sc->size && !atomic_load_explicit(&sc->stop, memory_order_relaxed)) {
        struct rec rec;
        why = rec_check(sc->img, sc->size, off, sc->salt, &rec);
        if (why == NULL && rec.seq != seq)
            why = "unexpected sequence number";
        if (why != NULL)
            break;
        group = rec.seq - rec.idx;
        seq++;
        off += WAL_REC_HDR + rec.len;
        if (++k % SCAN_PUBLISH == 0)
            scan_publish(sc, off, 0);
    }
    sc->why = why;
    sc->seq = seq;
    sc->group = group;
    scan_publish(sc, off, 1);
}

/*
 * Replay one segment (see RECOVERY at the top): check its header, its place
 * in the sequence, each record, and hand the valid ones to r->fn. last says
 * whether a torn tail may be cut. Returns 0, DTX_ECORRUPT/DTX_EUNSUPPORTED/
 * DTX_EIO with last_error() set, or the replay callback's code.
 */
static int replay_segment(struct wal *w, uint64_t id, int last, struct replay *r)
{
    char path[PATH_MAX];
    struct seg_hdr h;
    const unsigned char *img = NULL;
    size_t size = 0;
    int rc = 0;
    struct scan sc = {.why = NULL};
    uv_thread_t scanner;
    int scanning = 0;

    seg_path(w, id, "", path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return fail_sys(w, "open", path, errno);
    struct stat st;
    if (fstat(fd, &st) != 0) {
        rc = fail_sys(w, "fstat", path, errno);
        goto out;
    }
    size = (size_t)st.st_size;
    if (size >= WAL_SEG_HDR) {
        void *m = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            rc = fail_sys(w, "mmap", path, errno);
            goto out;
        }
        img = m;
        madvise(m, size, MADV_SEQUENTIAL);
    }
    const char *why;
    rc = hdr_decode(img, size, &h, &why);
    if (rc == 0 && h.id != id) {
        why = "segment id does not match the file name";
        rc = DTX_ECORRUPT;
    }
    if (rc != 0) {
        fail(w, rc, "log corrupt: %s: bad segment header at byte offset 0: %s", path, why);
        goto out;
    }
    if (r->have_seq && h.first_seq != r->next_seq) {
        rc = fail(w, DTX_ECORRUPT,
                  "log corrupt: %s: starts at sequence %" PRIu64 " but %" PRIu64
                  " was expected: a segment is missing or belongs to another log",
                  path, h.first_seq, r->next_seq);
        goto out;
    }

    sc.img = img;
    sc.size = size;
    sc.salt = h.salt;
    sc.first_seq = h.first_seq;
    if (r->fn != NULL && size > SCAN_THREAD_MIN && uv_mutex_init(&sc.mu) == 0) {
        if (uv_cond_init(&sc.cv) != 0)
            uv_mutex_destroy(&sc.mu);
        else if (uv_thread_create(&scanner, scan, &sc) != 0) {
            uv_cond_destroy(&sc.cv);
            uv_mutex_destroy(&sc.mu);
        } else
            scanning = 1;
    }
    if (!scanning)
        scan(&sc); /* no thread to wake: scan_publish finds nobody waiting */
    size_t off = WAL_SEG_HDR;
    for (;;) {
        int done = atomic_load_explicit(&sc.done, memory_order_acquire);
        size_t end = atomic_load_explicit(&sc.end, memory_order_acquire);
        while (off < end) {
            uint32_t len = get_le32(img + off); /* checked by scan() */
            if (r->fn) {
                rc = r->fn(r->arg, img + off + WAL_REC_HDR, len);
                if (rc != 0) {
                    fail(w, rc, "log replay stopped by the engine at %s byte offset %zu: %s", path,
                         off, dtx_err_message(rc));
                    goto out;
                }
            }
            off += WAL_REC_HDR + len;
        }
        if (done)
            break;
        scan_wait(&sc, end); /* caught up with the scan */
    }
    uint64_t seq = sc.seq, group = sc.group;
    why = sc.why;
    if (off < size) {
        size_t later = find_later(img, size, off, h.salt, seq, group);
        if (!last) {
            rc = fail(w, DTX_ECORRUPT,
                      "log corrupt: %s: damaged record at byte offset %zu (%s) in a sealed "
                      "segment (later segments exist); refusing to start",
                      path, off, why);
            goto out;
        }
        if (later != 0) {
            rc = fail(w, DTX_ECORRUPT,
                      "log corrupt: %s: damaged record at byte offset %zu (%s) is followed by a "
                      "valid record at byte offset %zu; refusing to start",
                      path, off, why, later);
            goto out;
        }
        rc = cut_tail(w, path, off, size, r);
        if (rc != 0)
            goto out;
    }
    r->have_seq = 1;
    r->next_seq = seq;
    r->records += seq - h.first_seq;
    r->bytes += off;
    if (!(h.flags & WAL_FLAG_SNAPSHOT))
        r->sealed += off;
    r->last_id = id;
    r->last_salt = h.salt;
    r->last_end = off;
    r->last_snapshot = (h.flags & WAL_FLAG_SNAPSHOT) != 0;
out:
    if (scanning) {
        atomic_store_explicit(&sc.stop, 1, memory_order_relaxed);
        uv_thread_join(&scanner);
        uv_cond_destroy(&sc.cv);
        uv_mutex_destroy(&sc.mu);
    }
    if (img != NULL)
        munmap((void *)img, size);
    close(fd);
    return rc;
}

static void writer_main(void *arg);

/*
 * Choose the active segment after replay: go on appending to the last one if
 * it is an ordinary segment with room left, else make a new one. Then start
 * the writer thread.
 */
static int start_writing(struct wal *w, size_t nseg, struct replay *r)
{
    struct ioerr e;
    int rc;
    w->next_seq = r->have_seq ? r->next_seq : 1;
    w->sealed = r->sealed;
    if (nseg > 0 && !r->last_snapshot && r->last_end < w->segment_size) {
        if (r->cut_fd >= 0) {
            w->afd = r->cut_fd;
            r->cut_fd = -1;
        } else {
            char path[PATH_MAX];
            seg_path(w, r->last_id, "", path);
            w->afd = wal_sys.open(path, O_WRONLY | O_CLOEXEC, 0);
            if (w->afd < 0)
                return fail_sys(w, "open", path, errno);
        }
        w->aid = r->last_id;
        w->asize = r->last_end;
        w->asalt = r->last_salt;
        w->sealed -= r->last_end;
    } else {
        /* a torn tail cut off a segment that is full now: it is not written again */
        if (r->cut_fd >= 0) {
            wal_sys.close(r->cut_fd);
            r->cut_fd = -1;
        }
        w->aid = nseg > 0 ? r->last_id + 1 : 1;
        rc = segment_create(w, w->aid, w->next_seq, &w->afd, &w->asalt, &e);
        if (rc != 0)
            return fail_io(w, &e);
        w->asize = WAL_SEG_HDR;
    }
    if (uv_thread_create(&w->writer, writer_main, w) != 0) {
        wal_sys.close(w->afd);
        w->afd = -1;
        return fail(w, DTX_EIO, "log: cannot start the writer thread");
    }
    return 0;
}

/* store_ops.recover: see store.h and RECOVERY at the top. */
static int wal_recover(struct store *s, store_replay_fn fn, void *arg)
{
    struct wal *w = (struct wal *)s;
    struct replay r = {.fn = fn, .arg = arg, .cut_fd = -1};
    uint64_t *ids = NULL;
    size_t n = 0;
    struct ioerr e;
    uint64_t t0 = clock_mono_ms();
    int rc;

    if (w->state != WAL_OPENED)
        return fail(w, DTX_ESTATE, "log: recover called twice or after close");
    rc = list_segments(w, &ids, &n);
    if (rc != 0)
        goto fail;
    size_t base = find_base(w, ids, n);
    if (base > 0) {
        slog_info("deleting log segments superseded by a snapshot",
                  "dir=%s snapshot=%016" PRIx64 " count=%zu", w->dir, ids[base], base);
        rc = unlink_below(w, ids[base], &e);
        if (rc != 0) {
            rc = fail_io(w, &e);
            goto fail;
        }
    }
    CRASH_POINT("recovery.after_list");
    for (size_t i = base; i < n; i++) {
        rc = replay_segment(w, ids[i], i + 1 == n, &r);
        if (rc != 0)
            goto fail;
        CRASH_POINT("recovery.after_segment");
    }
    rc = start_writing(w, n - base, &r);
    if (rc != 0)
        goto fail;
    set_state(w, WAL_RUNNING);
    slog_info("log recovered",
              "dir=%s segments=%zu records=%" PRIu64 " bytes=%" PRIu64 " active=%016" PRIx64
              " next_seq=%" PRIu64 " ms=%" PRIu64,
              w->dir, n - base, r.records, r.bytes, w->aid, w->next_seq, clock_mono_ms() - t0);
    free(ids);
    return 0;
fail:
    if (r.cut_fd >= 0)
        wal_sys.close(r.cut_fd);
    free(ids);
    set_state(w, WAL_CLOSED);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Writer thread                                                             */

/* Hand n durable callbacks to the loop. */
static void publish(struct wal *w, const struct wal_cb *cbs, size_t n)
{
    uv_mutex_lock(&w->mu);
    cbvec_push(&w->done, cbs, n);
    uv_mutex_unlock(&w->mu);
    uv_async_send(w->async);
}

/*
 * Write n queued records (len bytes at data) as one commit group to the
 * active segment: stamp their headers, one pwrite, one fdatasync, then
 * publish their callbacks. Any failure ends the process.
 */
static void write_group(struct wal *w, char *data, size_t len, const struct wal_cb *cbs, size_t n)
{
    char path[PATH_MAX];
    if (n == 0)
        return;
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char *r = (unsigned char *)data + off;
        rec_stamp(r, r + WAL_REC_HDR, w->next_seq + i, w->asalt, (uint32_t)i);
        off += WAL_REC_HDR + get_le32(r);
    }
    int rc = pwrite_all(w->afd, data, len, w->asize);
    if (rc != 0) {
        seg_path(w, w->aid, "", path);
        die_sys("pwrite", path, -rc);
    }
    CRASH_POINT("log.after_append");
    CRASH_POINT("log.before_fsync");
    if (wal_sys.fdatasync(w->afd) != 0) {
        seg_path(w, w->aid, "", path);
        die_sys("fdatasync", path, errno);
    }
    CRASH_POINT("log.after_fsync");
    w->asize += len;
    w->next_seq += n;
    publish(w, cbs, n);
}

/* Seal the active segment and make the next one. Returns the sealed bytes now. */
static uint64_t rotate(struct wal *w)
{
    struct ioerr e;
    int fd;
    uint64_t salt;
    uint64_t sealed;
    if (segment_create(w, w->aid + 1, w->next_seq, &fd, &salt, &e) != 0)
        die(&e);
    wal_sys.close(w->afd);
    uv_mutex_lock(&w->mu);
    w->sealed += w->asize;
    sealed = w->sealed;
    uv_mutex_unlock(&w->mu);
    slog_debug("log segment sealed", "dir=%s id=%016" PRIx64 " bytes=%" PRIu64, w->dir, w->aid,
               w->asize);
    w->aid++;
    w->afd = fd;
    w->asize = WAL_SEG_HDR;
    w->asalt = salt;
    return sealed;
}

static void compact_main(void *arg);

/* Right after the cut rotation: the snapshot takes the place of segment id. */
static void start_compaction(struct wal *w, uint64_t id, uint64_t covered)
{
    w->snap.id = id;
    w->snap.first_seq = w->next_seq - (uint64_t)w->snap.n;
    w->snap.covered = covered;
    w->comp_thread = 1;
    if (uv_thread_create(&w->compactor, compact_main, w) != 0) {
        w->comp_thread = 0;
        slog_warn("cannot start the compaction thread; compacting in the writer", "dir=%s", w->dir);
        compact_main(w);
    }
}

static void writer_main(void *arg)
{
    struct wal *w = arg;
    uv_mutex_lock(&w->mu);
    for (;;) {
        while (w->fill.len == 0 && !w->cut && !w->stopping) {
            w->writer_waiting = 1;
            uv_cond_wait(&w->cv, &w->mu);
            w->writer_waiting = 0;
        }
        if (w->fill.len == 0 && !w->cut)
            break; /* stopping, and everything is written */
        struct buf t = w->fill;
        w->fill = w->batch;
        w->batch = t;
        buf_reset(&w->fill);
        cbvec_swap(&w->fill_cbs, &w->batch_cbs);
        w->fill_cbs.n = 0;
        int cut = w->cut;
        size_t cut_off = w->cut_off;
        size_t cut_nrec = w->cut_nrec;
        w->cut = 0;
        uv_mutex_unlock(&w->mu);

        char *data = w->batch.data;
        size_t len = w->batch.len;
        struct wal_cb *cbs = w->batch_cbs.v;
        size_t n = w->batch_cbs.n;
        if (cut) {
            write_group(w, data, cut_off, cbs, cut_nrec);
            uint64_t id = w->aid;
            uint64_t covered = rotate(w);
            CRASH_POINT("log.compact_cut");
            start_compaction(w, id, covered);
            data += cut_off;
            len -= cut_off;
            cbs += cut_nrec;
            n -= cut_nrec;
        }
        write_group(w, data, len, cbs, n);
        if (w->asize >= w->segment_size)
            rotate(w);
        uv_mutex_lock(&w->mu);
    }
    uv_mutex_unlock(&w->mu);
}

/* ------------------------------------------------------------------------ */
/* Compaction thread                                                         */

/*
 * Write the snapshot to <id>.log.tmp and rename it over segment id (see
 * COMPACTION at the top). Returns 0, or -errno if it was abandoned before the
 * rename. A failed directory fsync after the rename ends the process.
 */
static int snapshot_write(struct wal *w)
{
    const struct snap *sn = &w->snap;
    char tmp[PATH_MAX];
    char path[PATH_MAX];
    struct ioerr e;
    struct seg_hdr sh = {.flags = WAL_FLAG_SNAPSHOT, .id = sn->id, .first_seq = sn->first_seq};
    size_t cap = WAL_SNAP_CHUNK;
    unsigned char *chunk = NULL;
    uint64_t pos = 0;
    size_t fill = 0;
    size_t boff = 0;
    int fd = -1;
    int rc;

    seg_path(w, sn->id, ".tmp", tmp);
    seg_path(w, sn->id, "", path);
    if (new_salt(&sh.salt) != 0) {
        rc = ioerr_set(&e, "getrandom", tmp, EIO);
        goto fail;
    }
    fd = wal_sys.open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        rc = ioerr_set(&e, "open", tmp, errno);
        goto fail;
    }
    chunk = xmalloc(cap);
    hdr_encode(chunk, &sh);
    fill = WAL_SEG_HDR;
    for (size_t i = 0; i < sn->n; i++) {
        size_t need = WAL_REC_HDR + sn->lens[i];
        if (cap - fill < need && fill > 0) {
            rc = pwrite_all(fd, chunk, fill, pos);
            if (rc != 0) {
                ioerr_set(&e, "pwrite", tmp, -rc);
                goto fail;
            }
            pos += fill;
            fill = 0;
        }
        if (cap < need) {
            cap = need;
            chunk = xrealloc(chunk, cap);
        }
        unsigned char *r = chunk + fill;
        put_le32(r, (uint32_t)sn->lens[i]);
        memcpy(r + WAL_REC_HDR, sn->blob + boff, sn->lens[i]);
        rec_stamp(r, r + WAL_REC_HDR, sn->first_seq + i, sh.salt, (uint32_t)i);
        fill += need;
        boff += sn->lens[i];
    }
    rc = pwrite_all(fd, chunk, fill, pos);
    if (rc != 0) {
        ioerr_set(&e, "pwrite", tmp, -rc);
        goto fail;
    }
    pos += fill;
    if (wal_sys.fsync(fd) != 0) {
        rc = ioerr_set(&e, "fsync", tmp, errno);
        goto fail;
    }
    wal_sys.close(fd);
    fd = -1;
    CRASH_POINT("log.snapshot_before_rename");
    if (wal_sys.rename(tmp, path) != 0) {
        rc = ioerr_set(&e, "rename", tmp, errno);
        goto fail;
    }
    CRASH_POINT("log.snapshot_after_rename");
    free(chunk);
    if (sync_dir(w, &e) != 0 || unlink_below(w, sn->id, &e) != 0)
        die(&e);
    CRASH_POINT("log.snapshot_after_unlink");
    slog_info("log compacted", "dir=%s snapshot=%016" PRIx64 " records=%zu bytes=%" PRIu64, w->dir,
              sn->id, sn->n, pos);
    return 0;
fail:
    if (fd >= 0)
        wal_sys.close(fd);
    free(chunk);
    char eb[128];
    slog_error("log compaction abandoned; the old segments stay",
               "op=%s file=%s errno=%d error=\"%s\"", e.op, e.path, e.err,
               strerror_r(e.err, eb, sizeof eb));
    wal_sys.unlink(tmp);
    return rc;
}

static void compact_main(void *arg)
{
    struct wal *w = arg;
    uv_mutex_lock(&w->mu);
    while (!w->snap.ready && !w->snap.abandoned)
        uv_cond_wait(&w->snap_cv, &w->mu);
    int abandoned = w->snap.abandoned;
    uv_mutex_unlock(&w->mu);
    int status = abandoned ? -ECANCELED : snapshot_write(w);
    uv_mutex_lock(&w->mu);
    w->comp_finished = 1;
    w->comp_status = status;
    uv_mutex_unlock(&w->mu);
    uv_async_send(w->async);
}

/* ------------------------------------------------------------------------ */
/* Loop side                                                                 */

/* The async handle keeps the loop alive exactly while work is outstanding. */
static void hold(struct wal *w)
{
    if (w->outstanding++ == 0)
        uv_ref((uv_handle_t *)w->async);
}

static void release(struct wal *w)
{
    if (--w->outstanding == 0)
        uv_unref((uv_handle_t *)w->async);
}

static void finish_compaction(struct wal *w, int status)
{
    if (w->comp_thread) {
        uv_thread_join(&w->compactor);
        w->comp_thread = 0;
    }
    if (status == 0) {
        uv_mutex_lock(&w->mu);
        w->sealed -= w->snap.covered <= w->sealed ? w->snap.covered : w->sealed;
        uv_mutex_unlock(&w->mu);
    }
    free(w->snap.blob);
    free(w->snap.lens);
    memset(&w->snap, 0, sizeof w->snap);
    w->compacting = 0;
    release(w);
}

/*
 * Run every published callback, in order. Re-entrant: a callback that calls
 * store_close() continues the same delivery from where it stands.
 */
static void deliver(struct wal *w)
{
    for (;;) {
        if (w->dpos == w->dvec.n) {
            uv_mutex_lock(&w->mu);
            w->dvec.n = 0;
            cbvec_swap(&w->dvec, &w->done);
            int fin = w->comp_finished;
            int status = w->comp_status;
            w->comp_finished = 0;
            uv_mutex_unlock(&w->mu);
            w->dpos = 0;
            if (fin)
                finish_compaction(w, status);
            if (w->dvec.n == 0)
                break;
        }
        struct wal_cb cb = w->dvec.v[w->dpos++];
        release(w);
        if (cb.fn)
            cb.fn(cb.arg, 0);
    }
}

static void on_async(uv_async_t *h)
{
    struct wal *w = h->data;
    if (w != NULL)
        deliver(w);
}

static void on_async_closed(uv_handle_t *h)
{
    free(h);
}

/* store_ops.append: see store.h. DTX_ESTATE before recover, DTX_ECLOSED after close. */
static int wal_append(struct store *s, const void *rec, size_t len, store_done_fn cb, void *arg)
{
    struct wal *w = (struct wal *)s;
    if (w->state != WAL_RUNNING)
        return w->state == WAL_OPENED ? DTX_ESTATE : DTX_ECLOSED;
    if (len > WAL_MAX_RECORD)
        return DTX_ETOOBIG;
    CRASH_POINT("log.before_append");
    unsigned char h[WAL_REC_HDR] = {0};
    struct wal_cb e = {cb, arg};
    put_le32(h, (uint32_t)len);
    uv_mutex_lock(&w->mu);
    buf_append(&w->fill, h, sizeof h);
    buf_append(&w->fill, rec, len);
    cbvec_push(&w->fill_cbs, &e, 1);
    int wake = w->writer_waiting;
    uv_mutex_unlock(&w->mu);
    if (wake)
        uv_cond_signal(&w->cv);
    hold(w);
    return 0;
}

/* store_ops.compact_due: see store.h. */
static int wal_compact_due(struct store *s)
{
    struct wal *w = (struct wal *)s;
    if (w->state != WAL_RUNNING || w->compacting)
        return 0;
    uv_mutex_lock(&w->mu);
    int due = w->sealed > w->compact_min;
    uv_mutex_unlock(&w->mu);
    return due;
}

/*
 * store_ops.compact_begin: see store.h and COMPACTION at the top. DTX_EAGAIN
 * while a compaction runs, DTX_ETOOBIG for more than 2^32 records,
 * DTX_ESTATE/DTX_ECLOSED outside the running state.
 */
static int wal_compact_begin(struct store *s, size_t n)
{
    struct wal *w = (struct wal *)s;
    if (w->state != WAL_RUNNING)
        return w->state == WAL_OPENED ? DTX_ESTATE : DTX_ECLOSED;
    if (w->compacting)
        return DTX_EAGAIN;
    if (n > UINT32_MAX)
        return DTX_ETOOBIG;
    w->compacting = 1;
    hold(w);
    uv_mutex_lock(&w->mu);
    memset(&w->snap, 0, sizeof w->snap);
    w->snap.n = n;
    w->cut = 1;
    w->cut_off = w->fill.len;
    w->cut_nrec = w->fill_cbs.n;
    int wake = w->writer_waiting;
    uv_mutex_unlock(&w->mu);
    if (wake)
        uv_cond_signal(&w->cv);
    return 0;
}

/*
 * store_ops.compact_finish: see store.h. blob and lens are always taken.
 * DTX_ESTATE when no compaction waits for its snapshot; DTX_ETOOBIG for a
 * record over 64 MiB (the compaction is then abandoned).
 */
static int wal_compact_finish(struct store *s, char *blob, size_t *lens)
{
    struct wal *w = (struct wal *)s;
    int rc = 0;
    uv_mutex_lock(&w->mu);
    int waiting = w->compacting && !w->snap.ready && !w->snap.abandoned;
    if (!waiting) {
        uv_mutex_unlock(&w->mu);
        rc = DTX_ESTATE;
        goto fail;
    }
    for (size_t i = 0; blob != NULL && i < w->snap.n; i++) {
        if (lens[i] > WAL_MAX_RECORD) {
            rc = DTX_ETOOBIG;
            break;
        }
    }
    if (blob == NULL || rc != 0) {
        w->snap.abandoned = 1;
    } else {
        w->snap.blob = blob;
        w->snap.lens = lens;
        w->snap.ready = 1;
        blob = NULL;
        lens = NULL;
    }
    uv_mutex_unlock(&w->mu);
    uv_cond_signal(&w->snap_cv);
fail:
    free(blob);
    free(lens);
    return rc;
}

/* store_ops.close: see store.h. Blocks until the writer (and a compaction) end. */
static int wal_close(struct store *s)
{
    struct wal *w = (struct wal *)s;
    if (w->state != WAL_RUNNING) {
        if (w->state == WAL_OPENED)
            set_state(w, WAL_CLOSED);
        return 0;
    }
    uv_mutex_lock(&w->mu);
    w->stopping = 1;
    uv_cond_signal(&w->cv);
    uv_mutex_unlock(&w->mu);
    uv_thread_join(&w->writer);
    /* a compaction still waiting for its snapshot will not get one now */
    uv_mutex_lock(&w->mu);
    if (!w->snap.ready)
        w->snap.abandoned = 1;
    uv_cond_signal(&w->snap_cv);
    uv_mutex_unlock(&w->mu);
    if (w->comp_thread) {
        uv_thread_join(&w->compactor);
        w->comp_thread = 0;
    }
    set_state(w, WAL_CLOSED);
    deliver(w);
    wal_sys.close(w->afd);
    w->afd = -1;
    return 0;
}

/* store_ops.free: see store.h. Closes first if needed; not from a store callback. */
static void wal_free(struct store *s)
{
    if (s == NULL)
        return;
    struct wal *w = (struct wal *)s;
    wal_close(s);
    w->async->data = NULL;
    uv_close((uv_handle_t *)w->async, on_async_closed);
    uv_mutex_destroy(&w->mu);
    uv_cond_destroy(&w->cv);
    uv_cond_destroy(&w->snap_cv);
    buf_free(&w->fill);
    buf_free(&w->batch);
    free(w->fill_cbs.v);
    free(w->batch_cbs.v);
    free(w->done.v);
    free(w->dvec.v);
    close(w->dirfd);
    close(w->lockfd); /* releases the flock */
    free(w->dir);
    free(w);
}

static const char *wal_last_error(struct store *s)
{
    return ((struct wal *)s)->err;
}

static const struct store_ops wal_ops = {
    .recover = wal_recover,
    .append = wal_append,
    .compact_due = wal_compact_due,
    .compact_begin = wal_compact_begin,
    .compact_finish = wal_compact_finish,
    .close = wal_close,
    .free = wal_free,
    .last_error = wal_last_error,
};

/* ------------------------------------------------------------------------ */
/* Opening                                                                   */

/* Create dir if missing (one level), fsyncing its parent. Returns 0 or -errno. */
static int make_dir(const char *dir, const char **op /* OUT */)
{
    if (mkdir(dir, 0700) != 0) {
        *op = "mkdir";
        return errno == EEXIST ? 0 : -errno;
    }
    char *parent = xstrdup(dir);
    char *slash = strrchr(parent, '/');
    if (slash == NULL)
        strcpy(parent, ".");
    else if (slash == parent)
        parent[1] = '\0';
    else
        *slash = '\0';
    int rc = 0;
    int fd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    *op = "fsync parent of";
    if (fd < 0 || fsync(fd) != 0)
        rc = -errno;
    if (fd >= 0)
        close(fd);
    free(parent);
    return rc;
}

/*
 * Take the LOCK file of dir. Returns its descriptor, or -1 with msg (size n)
 * saying why.
 */
static int take_lock(const char *dir, char *msg, size_t n)
{
    char path[PATH_MAX];
    char eb[128];
    snprintf(path, sizeof path, "%s/%s", dir, WAL_LOCK_NAME);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(msg, n, "log: cannot open %s: %s", path, strerror_r(errno, eb, sizeof eb));
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int err = errno;
        char owner[32] = "";
        ssize_t k = pread(fd, owner, sizeof owner - 1, 0);
        owner[k > 0 ? k : 0] = '\0';
        owner[strcspn(owner, "\n")] = '\0';
        if (err == EWOULDBLOCK)
            snprintf(msg, n,
                     "log directory %s is locked by another process (pid %s): is another dtxd "
                     "running on it?",
                     dir, owner[0] ? owner : "unknown");
        else
            snprintf(msg, n, "log: cannot lock %s: %s", path, strerror_r(err, eb, sizeof eb));
        close(fd);
        return -1;
    }
    char pid[32];
    int len = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)len, 0) != len)
        slog_warn("cannot write pid to log lock file", "file=%s", path);
    return fd;
}

int wal_open(uv_loop_t *loop, const struct wal_config *cfg, struct store **out, const char **errmsg)
{
    static _Thread_local char msg[PATH_MAX + 512];
    struct wal *w = NULL;
    const char *op = "";
    char eb[128];
    int dirfd = -1;
    int lockfd = -1;
    int rc;

    *out = NULL;
    msg[0] = '\0';
    *errmsg = msg;
    if (cfg == NULL || cfg->dir == NULL || cfg->dir[0] == '\0') {
        snprintf(msg, sizeof msg, "log: no directory given");
        return DTX_EINVAL;
    }
    if (strlen(cfg->dir) > PATH_MAX - 64) {
        snprintf(msg, sizeof msg, "log: directory name too long");
        return DTX_EINVAL;
    }
    rc = make_dir(cfg->dir, &op);
    if (rc != 0) {
        snprintf(msg, sizeof msg, "log: %s %s: %s", op, cfg->dir, strerror_r(-rc, eb, sizeof eb));
        return DTX_EIO;
    }
    dirfd = open(cfg->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0) {
        snprintf(msg, sizeof msg, "log: cannot open directory %s: %s", cfg->dir,
                 strerror_r(errno, eb, sizeof eb));
        return DTX_EIO;
    }
    lockfd = take_lock(cfg->dir, msg, sizeof msg);
    if (lockfd < 0) {
        rc = DTX_EAGAIN;
        goto fail;
    }

    w = xcalloc(1, sizeof *w);
    w->store.ops = &wal_ops;
    w->loop = loop;
    w->dir = xstrdup(cfg->dir);
    w->dirfd = dirfd;
    w->lockfd = lockfd;
    w->afd = -1;
    w->segment_size = cfg->segment_size ? cfg->segment_size : WAL_DEFAULT_SEGMENT;
    w->compact_min = cfg->compact_min_bytes ? cfg->compact_min_bytes : WAL_DEFAULT_COMPACT;
    w->state = WAL_OPENED;
    buf_init(&w->fill, SIZE_MAX / 2);
    buf_init(&w->batch, SIZE_MAX / 2);
    if (uv_mutex_init(&w->mu) != 0) {
        snprintf(msg, sizeof msg, "log: cannot create a mutex");
        rc = DTX_EIO;
        goto fail;
    }
    if (uv_cond_init(&w->cv) != 0) {
        uv_mutex_destroy(&w->mu);
        snprintf(msg, sizeof msg, "log: cannot create a condition variable");
        rc = DTX_EIO;
        goto fail;
    }
    if (uv_cond_init(&w->snap_cv) != 0) {
        uv_cond_destroy(&w->cv);
        uv_mutex_destroy(&w->mu);
        snprintf(msg, sizeof msg, "log: cannot create a condition variable");
        rc = DTX_EIO;
        goto fail;
    }
    w->async = xmalloc(sizeof *w->async);
    if (uv_async_init(loop, w->async, on_async) != 0) {
        uv_cond_destroy(&w->snap_cv);
        uv_cond_destroy(&w->cv);
        uv_mutex_destroy(&w->mu);
        free(w->async);
        snprintf(msg, sizeof msg, "log: cannot create the async handle");
        rc = DTX_EIO;
        goto fail;
    }
    w->async->data = w;
    uv_unref((uv_handle_t *)w->async);
    *out = &w->store;
    return 0;
fail:
    if (w != NULL) {
        free(w->dir);
        free(w);
    }
    if (lockfd >= 0)
        close(lockfd);
    close(dirfd);
    return rc;
}
