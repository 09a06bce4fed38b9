/*
 * test_powerloss.c - the real log (wal.c) under a simulated disk that loses
 * power, and under failing writes and syncs.
 *
 * A workload drives the log through its public API on a real libuv loop:
 * commit groups of 1 to 5 records of 1 to 1,300 bytes, small segments (so
 * they roll over every few groups), one-step and two-step compactions (the
 * snapshot holds copies of the records it replaces, so the replayed sequence
 * never changes), closes and re-opens. It runs on top of simdisk.c, which
 * records every change the log makes to its directory and files, and the
 * number of records acknowledged (durability callback run) at each call.
 *
 * Power loss. After each epoch of the run (two sessions), a model replays the
 * trace; after each operation (a crash point), it builds crash states: each
 * write not yet synced kept, dropped or torn at a 512-byte boundary, each
 * directory change not yet synced applied or not. All of them when there are
 * at most 12, else the one keeping everything, the one losing everything not
 * synced and random ones; plus two random ones wherever a write spans sectors,
 * which may also scatter it (any subset of its sectors). Each state is written
 * out as a directory and recovered by the real recovery code, which must
 * succeed and replay exactly a prefix of the appended sequence holding every
 * record acknowledged before the crash. Every eighth state also takes an
 * append and is recovered a second time. Then one random crash state becomes
 * the starting disk of the next epoch (three per workload), so crashes during
 * the recovery of a crash are covered too. Recovery must not leak descriptors.
 *
 * Group commit is made deterministic: the writer's fdatasync waits at a gate
 * until the test has queued the next group, and callbacks are delivered only
 * while the writer waits there. A seed thus fixes the whole run; a failure
 * prints it (DTX_POWERLOSS_SEED reproduces it) and keeps the state it found
 * wrong in <dir>.failed.
 *
 * I/O errors. For each mutating call of a reference run in turn (open with
 * O_CREAT, pwrite, fsync, fdatasync, ftruncate, rename, unlink), EIO and then
 * ENOSPC (after a short write) is injected, in a forked child. A failed write
 * or sync of a commit group must end the process (status 1); a failure in
 * recovery must make it refuse to start; a failed sync is never retried;
 * only the compaction (before its rename) and the deletion of superseded
 * segments may carry on. The disk the child leaves must recover cleanly with
 * every record acknowledged, through its crash states, including the one that
 * loses everything not synced: so nothing was acknowledged that was not
 * durable before the error (callbacks of a group synced before it may still
 * run while the process ends).
 *
 * DTX_POWERLOSS_STATES sets how many crash states to check at least (default
 * 5,000; `make test-powerloss` checks 100,000), DTX_POWERLOSS_SEED the first
 * seed, DTX_POWERLOSS_IO_RUNS the workloads of the I/O-error test (default 1).
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
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "common/err.h"
#include "common/slog.h"
#include "simdisk.h"
#include "store/wal.h"
#include "store/wal_sys.h"

#define DEFAULT_STATES 5000
#define PER_POINT      12 /* crash states checked per crash point at most */
#define MAX_REC        1300

/* The appended sequence: what recovery must replay a prefix of. */
struct seq {
    unsigned char **pay;
    size_t *len;
    size_t n;
    size_t cap;
};

struct stats {
    uint64_t states;
    uint64_t points;
    uint64_t reopened; /* states that also took an append and a second recovery */
    uint64_t max_pending;
    uint64_t beyond_acked; /* states that recovered records not acknowledged yet */
};

static struct {
    char root[64];
    char dir[128];     /* the log the workload runs on */
    char scratch[128]; /* where crash states are written and recovered */
    uv_loop_t vloop;   /* for recovering crash states */
    struct seq seq;
    atomic_uint_least64_t *acked; /* shared with forked children */
    atomic_int *bad_order;
    uint64_t seg_size;
    struct stats st;
    uint64_t seed; /* of the workload being checked */
    int epoch;
} P;

/* ------------------------------------------------------------------------ */
/* The gate: deterministic commit groups                                     */

static pthread_mutex_t gate_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cv = PTHREAD_COND_INITIALIZER;
static uint64_t gate_arrived;
static uint64_t gate_released;
static int (*inner_fdatasync)(int fd);
static int g_in_child; /* a forked child of test_io_errors: exit, never fail_msg */

static int gate_fdatasync(int fd)
{
    pthread_mutex_lock(&gate_mu);
    gate_arrived++;
    pthread_cond_broadcast(&gate_cv);
    while (gate_released < gate_arrived)
        pthread_cond_wait(&gate_cv, &gate_mu);
    pthread_mutex_unlock(&gate_mu);
    return inner_fdatasync(fd);
}

/* Wait until the writer waits in fdatasync (its group written, not synced). */
static void gate_wait(void)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 20;
    pthread_mutex_lock(&gate_mu);
    int rc = 0;
    while (gate_arrived == gate_released && rc == 0)
        rc = pthread_cond_timedwait(&gate_cv, &gate_mu, &until);
    int arrived = gate_arrived != gate_released;
    pthread_mutex_unlock(&gate_mu);
    if (!arrived && g_in_child)
        _exit(8);
    if (!arrived)
        fail_msg("seed %" PRIu64 ": the log writer did not reach fdatasync in 20 s", P.seed);
}

static void gate_release(void)
{
    pthread_mutex_lock(&gate_mu);
    gate_released = gate_arrived;
    pthread_cond_broadcast(&gate_cv);
    pthread_mutex_unlock(&gate_mu);
}

static void sim_begin(int trace_fd)
{
    gate_arrived = gate_released = 0;
    sim_start(P.dir, P.acked, trace_fd);
    inner_fdatasync = wal_sys.fdatasync;
    wal_sys.fdatasync = gate_fdatasync;
}

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void seq_truncate(struct seq *s, size_t n)
{
    for (size_t i = n; i < s->n; i++)
        free(s->pay[i]);
    s->n = n < s->n ? n : s->n;
}

static void seq_push(struct seq *s, const unsigned char *p, size_t len)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 256;
        s->pay = realloc(s->pay, s->cap * sizeof *s->pay);
        s->len = realloc(s->len, s->cap * sizeof *s->len);
    }
    s->pay[s->n] = malloc(len);
    memcpy(s->pay[s->n], p, len);
    s->len[s->n++] = len;
}

/* Replay into a check against the appended sequence: its first limit
 * records, then extra (if not NULL). */
struct rcheck {
    const struct seq *seq;
    size_t limit;
    const void *extra;
    size_t extra_len;
    uint64_t n;
    int64_t bad; /* first record that differs, or -1 */
};

static int check_rec(void *arg, const void *rec, size_t len)
{
    struct rcheck *c = arg;
    int ok;
    if (c->n < c->limit)
        ok = c->seq->len[c->n] == len && memcmp(c->seq->pay[c->n], rec, len) == 0;
    else
        ok = c->n == c->limit && c->extra != NULL && c->extra_len == len &&
             memcmp(c->extra, rec, len) == 0;
    if (!ok && c->bad < 0)
        c->bad = (int64_t)c->n;
    c->n++;
    return 0;
}

static void on_durable(void *arg, int status)
{
    uint64_t i = (uintptr_t)arg;
    if (status != 0 || i != atomic_load(P.acked))
        atomic_store(P.bad_order, 1);
    atomic_store(P.acked, i + 1);
}

static uint64_t env_u64(const char *name, uint64_t def)
{
    const char *v = getenv(name);
    return v != NULL && *v ? strtoull(v, NULL, 10) : def;
}

/* Open descriptors of this process (recovery must not leak any). */
static int count_fds(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL)
        return 0;
    while (readdir(d) != NULL)
        n++;
    closedir(d);
    return n;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ------------------------------------------------------------------------ */
/* The workload                                                              */

struct wl {
    uv_loop_t *loop;
    uint64_t rng;
    struct store *s;
    int idle;     /* the writer has nothing queued */
    int in_child; /* a forked child: report, do not assert, on refusal */
};

static void wl_append(struct wl *w, int k)
{
    unsigned char p[MAX_REC];
    for (int j = 0; j < k; j++) {
        uint64_t r = sim_rand(&w->rng);
        size_t len = r % 4 == 0 ? 1 + (r >> 8) % 40 : 20 + (r >> 8) % (MAX_REC - 20);
        uint64_t x = sim_rand(&w->rng);
        for (size_t i = 0; i < len; i++) {
            if (i % 8 == 0)
                x = sim_rand(&w->rng);
            p[i] = (unsigned char)(x >> (i % 8 * 8));
        }
        uint64_t idx = P.seq.n;
        memcpy(p, &idx, len < 8 ? len : 8);
        seq_push(&P.seq, p, len);
        assert_int_equal(store_append(w->s, p, len, on_durable, (void *)(uintptr_t)idx), 0);
    }
}

/* Queue a group of k records: the first one if the writer is idle (it wakes
 * and takes just that), else k while it waits in the previous group's sync. */
static void wl_batch(struct wl *w, int k)
{
    if (w->idle) {
        wl_append(w, 1);
        w->idle = 0;
        return;
    }
    gate_wait();
    uv_run(w->loop, UV_RUN_NOWAIT);
    wl_append(w, k);
    gate_release();
}

/* Let the last group finish; run callbacks until every record is acknowledged. */
static void wl_drain(struct wl *w)
{
    if (!w->idle) {
        gate_wait();
        gate_release();
        w->idle = 1;
    }
    while (atomic_load(P.acked) < P.seq.n)
        uv_run(w->loop, UV_RUN_ONCE);
    /* A group that filled its segment is followed by a rotation, after its
     * callbacks were released: wait for it, so that no later step (a
     * compaction thread) runs at the same time and the calls stay in order. */
    for (int i = 0; sim_rotation_due(P.seg_size); i++) {
        if (i == 20000) {
            if (g_in_child)
                _exit(8);
            fail_msg("seed %" PRIu64 ": the log writer did not rotate a full segment", P.seed);
        }
        usleep(1000);
    }
}

/* A snapshot of the first n records: copies of them. */
static void snap_of(size_t n, char **blob, size_t **lens)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += P.seq.len[i];
    *blob = malloc(total + 1);
    *lens = malloc((n + 1) * sizeof **lens);
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        memcpy(*blob + off, P.seq.pay[i], P.seq.len[i]);
        (*lens)[i] = P.seq.len[i];
        off += P.seq.len[i];
    }
}

static void wl_compact(struct wl *w)
{
    char *blob;
    size_t *lens;
    wl_drain(w);
    snap_of(P.seq.n, &blob, &lens);
    assert_int_equal(store_compact(w->s, blob, lens, P.seq.n), 0);
    uv_run(w->loop, UV_RUN_DEFAULT); /* until the compaction is over */
}

/* Cut, append a few groups while the compaction waits for its snapshot, then
 * hand it over (or abandon it). */
static void wl_compact_two_step(struct wl *w)
{
    char *blob;
    size_t *lens;
    wl_drain(w);
    size_t n = P.seq.n;
    assert_int_equal(store_compact_begin(w->s, n), 0);
    int groups = 1 + (int)(sim_rand(&w->rng) % 3);
    for (int g = 0; g < groups; g++)
        wl_batch(w, 1 + (int)(sim_rand(&w->rng) % 5));
    wl_drain(w);
    if (sim_rand(&w->rng) % 4 == 0) {
        assert_int_equal(store_compact_finish(w->s, NULL, NULL), 0);
    } else {
        snap_of(n, &blob, &lens);
        assert_int_equal(store_compact_finish(w->s, blob, lens), 0);
    }
    uv_run(w->loop, UV_RUN_DEFAULT);
}

/* Open and recover the log; it must replay exactly the sequence so far. */
static int wl_open(struct wl *w)
{
    struct wal_config cfg = {
        .dir = P.dir, .segment_size = P.seg_size, .compact_min_bytes = (uint64_t)1 << 40};
    const char *msg = NULL;
    if (wal_open(w->loop, &cfg, &w->s, &msg) != 0)
        fail_msg("wal_open: %s", msg);
    struct rcheck c = {.seq = &P.seq, .limit = P.seq.n, .bad = -1};
    int rc = store_recover(w->s, check_rec, &c);
    if (rc != 0) {
        if (w->in_child)
            _exit(2); /* dtxd refuses to start */
        fail_msg("seed %" PRIu64 ": recovery of the workload's log failed: %s", P.seed,
                 store_last_error(w->s));
    }
    if (c.bad >= 0 || c.n != P.seq.n) {
        if (w->in_child)
            _exit(7);
        fail_msg("seed %" PRIu64 ": reopened log replayed %" PRIu64 " records (first bad %" PRId64
                 "), %zu appended",
                 P.seed, c.n, c.bad, P.seq.n);
    }
    w->idle = 1;
    return 0;
}

static void wl_close(struct wl *w)
{
    wl_drain(w);
    assert_int_equal(store_close(w->s), 0);
    store_free(w->s);
    w->s = NULL;
    uv_run(w->loop, UV_RUN_DEFAULT);
}

/* Sessions of rounds of random actions on the log at P.dir. */
static void wl_run(struct wl *w, int sessions, int rounds)
{
    for (int s = 0; s < sessions; s++) {
        wl_open(w);
        for (int r = 0; r < rounds; r++) {
            unsigned a = (unsigned)(sim_rand(&w->rng) % 16);
            if (a < 11)
                wl_batch(w, 1 + (int)(sim_rand(&w->rng) % 5));
            else if (a < 13)
                wl_drain(w);
            else if (a < 14)
                wl_compact(w);
            else
                wl_compact_two_step(w);
        }
        wl_close(w);
    }
}

/* ------------------------------------------------------------------------ */
/* Checking crash states                                                     */

/* Recover dir; *n the records replayed, *bad the first wrong one or -1
 * (checked against c's expectation). */
static int recover_dir(const char *dir, struct rcheck c, struct store **out, uint64_t *n,
                       int64_t *bad, char *err, size_t errn)
{
    struct wal_config cfg = {
        .dir = dir, .segment_size = P.seg_size, .compact_min_bytes = (uint64_t)1 << 40};
    const char *msg = NULL;
    struct store *s = NULL;
    int rc = wal_open(&P.vloop, &cfg, &s, &msg);
    if (rc != 0) {
        snprintf(err, errn, "wal_open: %s", msg);
        return rc;
    }
    rc = store_recover(s, check_rec, &c);
    if (rc != 0)
        snprintf(err, errn, "%s", store_last_error(s));
    *n = c.n;
    *bad = c.bad;
    if (rc != 0 || out == NULL) {
        store_free(s);
        uv_run(&P.vloop, UV_RUN_DEFAULT);
    } else {
        *out = s;
    }
    return rc;
}

static void count_done(void *arg, int status)
{
    (void)status;
    (*(int *)arg)++;
}

/*
 * Write the crash state choice of m out and recover it: it must replay a
 * prefix of the appended sequence holding the first acked records. Returns
 * the records recovered. where says which run and crash point, for messages.
 */
static uint64_t check_state(const struct sim_model *m, const unsigned *choice, uint64_t acked,
                            const char *where)
{
    char err[PATH_MAX + 600] = "";
    uint64_t n = 0;
    int64_t bad = -1;
    struct store *s = NULL;
    int reopen = P.st.states % 8 == 0;
    sim_model_materialize(m, choice, P.scratch);
    sim_use_fast_real();
    struct rcheck c = {.seq = &P.seq, .limit = P.seq.n, .bad = -1};
    int rc = recover_dir(P.scratch, c, reopen ? &s : NULL, &n, &bad, err, sizeof err);
    if (rc != 0 || bad >= 0 || n < acked) {
        static char desc[16384];
        static char keep[256];
        sim_model_describe(m, choice, desc, sizeof desc);
        snprintf(keep, sizeof keep, "%s.failed", P.root);
        sim_model_materialize(m, choice, P.scratch);
        if (rename(P.scratch, keep) != 0)
            snprintf(keep, sizeof keep, "(not kept)");
        fail_msg("power-loss state recovers wrongly: seed %" PRIu64 " epoch %d %s\n"
                 "  recover rc=%d (%s) recovered=%" PRIu64 " first-wrong=%" PRId64
                 " acknowledged=%" PRIu64 " appended=%zu\n  state: %s\n"
                 "  reproduce: DTX_POWERLOSS_SEED=%" PRIu64 " (the state is left in %s)",
                 P.seed, P.epoch, where, rc, err, n, bad, acked, P.seq.n, desc, P.seed, P.scratch);
    }
    P.st.states++;
    if (reopen) {
        /* the recovered log takes an append and recovers again, with it */
        static const unsigned char post[] = "after the crash";
        int done = 0;
        assert_int_equal(store_append(s, post, sizeof post, count_done, &done), 0);
        uv_run(&P.vloop, UV_RUN_DEFAULT);
        assert_int_equal(done, 1);
        store_free(s);
        uv_run(&P.vloop, UV_RUN_DEFAULT);
        uint64_t n2 = 0;
        struct rcheck c2 = {
            .seq = &P.seq, .limit = n, .extra = post, .extra_len = sizeof post, .bad = -1};
        rc = recover_dir(P.scratch, c2, NULL, &n2, &bad, err, sizeof err);
        if (rc != 0 || bad >= 0 || n2 != n + 1)
            fail_msg("seed %" PRIu64 " epoch %d %s: a recovered crash state took an append "
                     "but then recovered rc=%d (%s) with %" PRIu64 " records, first wrong %" PRId64
                     ", expected %" PRIu64,
                     P.seed, P.epoch, where, rc, err, n2, bad, n + 1);
        P.st.reopened++;
    }
    return n;
}

/*
 * Check the crash states of m: all of them if there are at most k, else the
 * one that keeps everything, the one that loses everything pending, and k - 2
 * random ones; then 2 more random ones if a write is pending that spans
 * sectors. Records after acked may be missing, no acknowledged one.
 */
static void check_point(const struct sim_model *m, uint64_t *rng, unsigned k, uint64_t acked,
                        const char *where)
{
    size_t np = sim_model_pending(m);
    unsigned *choice = calloc(np + 1, sizeof *choice);
    if (np > P.st.max_pending)
        P.st.max_pending = np;
    uint64_t total = sim_model_states(m, (uint64_t)k + 1);
    unsigned n = total <= k ? (unsigned)total : k;
    for (unsigned i = 0; i < n; i++) {
        if (total <= k || i == 0)
            sim_model_decode(m, i, choice);
        else if (i == 1)
            for (size_t j = 0; j < np; j++)
                choice[j] = 1;
        else
            sim_model_random(m, rng, choice);
        if (check_state(m, choice, acked, where) > acked)
            P.st.beyond_acked++;
    }
    /* and two random ones where a write could tear or scatter, since only
     * random states scatter the sectors of a write */
    int torn = 0;
    for (size_t j = 0; j < np; j++)
        torn |= sim_model_options(m, j) > 2;
    for (int i = 0; torn && i < 2; i++) {
        sim_model_random(m, rng, choice);
        if (check_state(m, choice, acked, where) > acked)
            P.st.beyond_acked++;
    }
    P.st.points++;
    free(choice);
}

/*
 * Check up to per_point crash states after each operation of trace t (all of
 * them when there are that few). Then one random crash state of a random
 * point is written to P.dir, for the next epoch to start from; *pick is the
 * number of records it recovers to.
 */
static void check_trace(const struct sim_trace *t, uint64_t *rng, unsigned per_point,
                        uint64_t *pick)
{
    struct sim_model *m = sim_model_new();
    size_t npoints = 0;
    for (size_t p = 0; p < t->n; p++)
        npoints += t->v[p].call >= 0;
    size_t pick_point = npoints ? (size_t)(sim_rand(rng) % npoints) : 0;
    *pick = P.seq.n;
    size_t point = 0;
    unsigned *choice = NULL;
    for (size_t p = 0; p < t->n; p++) {
        const struct sim_op *op = &t->v[p];
        sim_model_apply(m, op);
        if (op->call < 0)
            continue; /* synthetic (the disk at the start) or the end mark */
        uint64_t acked = p + 1 < t->n ? t->v[p + 1].acked : op->acked;
        char where[128];
        snprintf(where, sizeof where, "crash point %zu (after trace op %zu of %zu)", point, p,
                 t->n);
        check_point(m, rng, per_point, acked, where);
        if (point == pick_point) {
            choice = realloc(choice, (sim_model_pending(m) + 1) * sizeof *choice);
            sim_model_random(m, rng, choice);
            *pick = check_state(m, choice, acked, where);
            sim_model_materialize(m, choice, P.dir);
        }
        point++;
    }
    free(choice);
    sim_model_free(m);
}

/* ------------------------------------------------------------------------ */
/* Fixture                                                                   */

static int setup(void **state)
{
    (void)state;
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(P.root, sizeof P.root, "%s/dtx-powerloss-XXXXXX", base);
    if (mkdtemp(P.root) == NULL)
        return -1;
    snprintf(P.dir, sizeof P.dir, "%s/log", P.root);
    snprintf(P.scratch, sizeof P.scratch, "%s/crash", P.root);
    mkdir(P.dir, 0700);
    mkdir(P.scratch, 0700);
    uv_loop_init(&P.vloop);
    void *shm = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (shm == MAP_FAILED)
        return -1;
    P.acked = shm;
    P.bad_order = (atomic_int *)((char *)shm + 64);
    atomic_store(P.acked, 0);
    atomic_store(P.bad_order, 0);
    memset(&P.st, 0, sizeof P.st);
    slog_set_level(SLOG_FATAL); /* torn tails and abandoned compactions are expected here */
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    wal_sys = wal_sys_default;
    uv_run(&P.vloop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&P.vloop), 0);
    nftw(P.root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    seq_truncate(&P.seq, 0);
    free(P.seq.pay);
    free(P.seq.len);
    memset(&P.seq, 0, sizeof P.seq);
    munmap((void *)P.acked, 4096);
    slog_set_level(SLOG_INFO);
    return 0;
}

static void fresh_dir(void)
{
    nftw(P.dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    mkdir(P.dir, 0700);
    seq_truncate(&P.seq, 0);
    atomic_store(P.acked, 0);
}

/* ------------------------------------------------------------------------ */
/* Tests                                                                     */

/* The model itself: tears at sector boundaries relative to the file offset,
 * unsynced directory changes optional, syncs make things durable. */
static void test_model(void **state)
{
    (void)state;
    unsigned char data[2000];
    for (int i = 0; i < 2000; i++)
        data[i] = (unsigned char)i;
    struct sim_op ops[] = {
        {.kind = SIM_CREATE, .ino = 1, .name = "a", .call = 0},
        {.kind = SIM_WRITE, .ino = 1, .off = 0, .len = 100, .data = data, .call = 1},
        {.kind = SIM_SYNC, .ino = 1, .call = 2},
        {.kind = SIM_WRITE, .ino = 1, .off = 100, .len = 1000, .data = data, .call = 3},
    };
    struct sim_model *m = sim_model_new();
    for (size_t i = 0; i < 4; i++)
        sim_model_apply(m, &ops[i]);
    /* pending: the create (dir not synced) and the write 100..1100 (tears at 512, 1024) */
    assert_int_equal(sim_model_pending(m), 2);
    assert_int_equal(sim_model_options(m, 0), 2);
    assert_int_equal(sim_model_options(m, 1), 4);
    assert_int_equal(sim_model_states(m, 100), 8);
    unsigned c[2] = {0, 2}; /* created, torn at 512 */
    sim_model_materialize(m, c, P.scratch);
    char path[PATH_MAX];
    struct stat st;
    snprintf(path, sizeof path, "%s/a", P.scratch);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_size, 512);
    c[1] = 3; /* torn at 1024 */
    sim_model_materialize(m, c, P.scratch);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_size, 1024);
    c[0] = 1; /* the directory entry was lost: no file */
    sim_model_materialize(m, c, P.scratch);
    assert_int_not_equal(stat(path, &st), 0);
    struct sim_op ds = {.kind = SIM_DIRSYNC, .call = 4};
    sim_model_apply(m, &ds);
    assert_int_equal(sim_model_pending(m), 1);
    c[0] = 1; /* dropped: the synced 100 bytes stay */
    sim_model_materialize(m, c, P.scratch);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_size, 100);
    sim_model_free(m);
}

/* Power loss at every call of seeded workloads, until the state budget. */
static void test_power_loss(void **state)
{
    (void)state;
    uint64_t budget = env_u64("DTX_POWERLOSS_STATES", DEFAULT_STATES);
    uint64_t seed0 = env_u64("DTX_POWERLOSS_SEED", 1);
    double t0 = now_s();
    int fds = count_fds();
    int workloads = 0;
    uint64_t traced = 0;
    for (uint64_t seed = seed0; P.st.states < budget; seed++) {
        struct wl w = {0};
        uv_loop_t loop;
        uv_loop_init(&loop);
        w.loop = &loop;
        w.rng = seed;
        P.seed = seed;
        uint64_t vrng = seed ^ 0x5eed5eed5eedull;
        P.seg_size = 1024 + sim_rand(&w.rng) % 4096;
        fresh_dir();
        for (P.epoch = 0; P.epoch < 3; P.epoch++) {
            sim_begin(-1);
            wl_run(&w, 2, 8 + (int)(sim_rand(&w.rng) % 8));
            sim_stop();
            char why[512];
            struct sim_model *m = sim_model_new();
            const struct sim_trace *t = sim_trace();
            for (size_t i = 0; i < t->n; i++)
                sim_model_apply(m, &t->v[i]);
            if (sim_model_check(m, P.dir, why, sizeof why) != 0)
                fail_msg("seed %" PRIu64 ": the simulated disk differs from the real one: %s", seed,
                         why);
            sim_model_free(m);
            assert_int_equal(atomic_load(P.bad_order), 0);
            traced += t->n;
            /* the next epoch starts from one of these crash states */
            uint64_t r = 0;
            check_trace(t, &vrng, PER_POINT, &r);
            seq_truncate(&P.seq, r);
            atomic_store(P.acked, r);
        }
        uv_run(&loop, UV_RUN_DEFAULT);
        assert_int_equal(uv_loop_close(&loop), 0);
        workloads++;
    }
    double dt = now_s() - t0;
    if (count_fds() > fds)
        fail_msg("%d descriptors leaked over %" PRIu64 " recoveries", count_fds() - fds,
                 P.st.states);
    print_message("    %" PRIu64 " crash states at %" PRIu64 " crash points of %d workloads "
                  "(seeds %" PRIu64 "..%" PRIu64 ", %" PRIu64 " traced operations) in %.1f s\n",
                  P.st.states, P.st.points, workloads, seed0, seed0 + (uint64_t)workloads - 1,
                  traced, dt);
    print_message("    %" PRIu64 " states recovered records not yet acknowledged, %" PRIu64
                  " took an append after recovery; at most %" PRIu64 " operations pending\n",
                  P.st.beyond_acked, P.st.reopened, P.st.max_pending);
}

/* Run the I/O-error workload in this process, faulting call k with err
 * (k < 0: none). Only in a child. */
static void fault_child(uint64_t seed, int k, int err, int trace_fd)
{
    int devnull = open("/dev/null", O_WRONLY);
    dup2(devnull, STDERR_FILENO);
    alarm(30);
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct wl w = {.loop = &loop, .rng = seed, .in_child = 1};
    g_in_child = 1;
    memset(&P.seq, 0, sizeof P.seq); /* the parent's copy stays the parent's */
    sim_rand(&w.rng);                /* as for the reference run */
    sim_begin(trace_fd);
    sim_inject(k, err);
    wl_run(&w, 2, 10);
    sim_stop();
    _exit(atomic_load(P.bad_order) ? 6 : 0);
}

static const char *const call_names[] = {"open",      "pwrite", "fsync", "fdatasync",
                                         "ftruncate", "rename", "unlink"};

static void io_errors(uint64_t seed);

/* EIO and ENOSPC at every mutating call, each in a forked child;
 * DTX_POWERLOSS_IO_RUNS workloads (default 1). */
static void test_io_errors(void **state)
{
    (void)state;
    uint64_t runs = env_u64("DTX_POWERLOSS_IO_RUNS", 1);
    for (uint64_t i = 0; i < runs; i++)
        io_errors(env_u64("DTX_POWERLOSS_SEED", 1) + 1000 + i);
}

/* One workload of test_io_errors: its reference run, then every fault. */
static void io_errors(uint64_t seed)
{
    double t0 = now_s();
    char tpath[PATH_MAX];
    snprintf(tpath, sizeof tpath, "%s/trace", P.root);

    /* the reference run, in a child too (same code path), for the call count
     * and the appended sequence */
    struct wl ref = {.rng = seed};
    P.seed = seed;
    P.epoch = 0;
    P.seg_size = 1024 + sim_rand(&ref.rng) % 4096;
    uv_loop_t loop;
    uv_loop_init(&loop);
    ref.loop = &loop;
    fresh_dir();
    sim_begin(-1);
    wl_run(&ref, 2, 10);
    int ncalls = sim_calls();
    sim_stop();
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    assert_int_equal(atomic_load(P.bad_order), 0);
    uint64_t vrng = seed;
    int fatal = 0, survived = 0, refused = 0, late_acks = 0;
    int carried[7] = {0}; /* survived faults, by call */
    uint64_t states0 = P.st.states;

    for (int k = 0; k < ncalls; k++) {
        for (int e = 0; e < 2; e++) {
            int err = e ? ENOSPC : EIO;
            nftw(P.dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
            mkdir(P.dir, 0700);
            atomic_store(P.acked, 0);
            int tfd = open(tpath, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
            assert_true(tfd >= 0);
            fflush(NULL);
            pid_t pid = fork();
            assert_true(pid >= 0);
            if (pid == 0)
                fault_child(seed, k, err, tfd);
            int status;
            assert_int_equal(waitpid(pid, &status, 0), pid);
            struct sim_trace t;
            lseek(tfd, 0, SEEK_SET);
            sim_trace_read(tfd, &t);
            close(tfd);
            uint64_t acked = atomic_load(P.acked);
            const struct sim_op *fault = NULL;
            for (size_t i = 0; i < t.n; i++)
                if (t.v[i].kind == SIM_FAULT)
                    fault = &t.v[i];
            char what[160];
            snprintf(what, sizeof what, "seed %" PRIu64 ": %s at call %d (%s %s, thread %d)", seed,
                     e ? "ENOSPC" : "EIO", k, fault ? call_names[fault->off] : "?",
                     !fault           ? "?"
                     : fault->name[0] ? fault->name
                                      : "the directory",
                     fault ? fault->thread : -1);
            if (fault == NULL)
                fail_msg("%s: the fault was never reached (status %d)", what, status);
            /* up to the fault, the child did what the reference run did */
            const struct sim_trace *r = sim_trace();
            for (size_t i = 0; i < (size_t)(fault - t.v); i++) {
                const struct sim_op *a = &t.v[i], *b = i < r->n ? &r->v[i] : NULL;
                if (b == NULL || a->kind != b->kind || a->ino != b->ino || a->off != b->off ||
                    a->len != b->len || a->call != b->call || strcmp(a->name, b->name) != 0)
                    fail_msg("%s: the run differs from the reference run at operation %zu "
                             "(%d %s +%" PRIu64 " call %d, reference %d %s +%" PRIu64
                             " call %d): not deterministic",
                             what, i, a->kind, a->name, a->len, a->call, b ? (int)b->kind : -1,
                             b ? b->name : "", b ? b->len : 0, b ? b->call : -1);
            }
            if (!WIFEXITED(status))
                fail_msg("%s: the child did not exit (status %d)", what, status);
            int code = WEXITSTATUS(status);
            if (code != 0 && code != 1 && code != 2)
                fail_msg("%s: exit status %d (6: callbacks out of order, 7: wrong replay, 8: no "
                         "fdatasync)",
                         what, code);
            /* Callbacks of a group synced before the error may still run while
             * the process ends (they are durable); none after it: the state
             * that loses every unsynced change must hold all acknowledged
             * records (check_point below). */
            late_acks += code == 1 && acked > fault->acked;
            /* a failed group write or sync ends the process */
            int group_io = fault->off == CALL_FDATASYNC ||
                           (fault->off == CALL_PWRITE && strstr(fault->name, ".tmp") == NULL);
            if (group_io && code != 1)
                fail_msg("%s: a failed write or sync of a commit group must exit(1), got %d", what,
                         code);
            if (code == 0) {
                int writer = 0; /* the fault was in a thread that synced commit groups */
                for (size_t i = 0; i < t.n; i++)
                    writer |= t.v[i].kind == SIM_SYNC && t.v[i].off == 1 &&
                              t.v[i].thread == fault->thread;
                int may = !writer && (fault->off == CALL_UNLINK ||
                                      (fault->thread != 0 && strstr(fault->name, ".tmp") != NULL));
                if (!may)
                    fail_msg("%s: carried on, but only a compaction before its rename or the "
                             "deletion of a superseded segment may",
                             what);
            }
            if (code == 2 && fault->thread != 0)
                fail_msg("%s: recovery refused but the fault was not in recovery", what);
            /* a failed sync is never retried */
            if (fault->off == CALL_FSYNC || fault->off == CALL_FDATASYNC) {
                for (const struct sim_op *o = fault + 1; o < t.v + t.n; o++) {
                    int again = fault->ino ? o->kind == SIM_SYNC && o->ino == fault->ino
                                           : o->kind == SIM_DIRSYNC && o->thread == fault->thread;
                    if (again)
                        fail_msg("%s: the failed sync was retried", what);
                }
            }
            fatal += code == 1;
            survived += code == 0;
            refused += code == 2;
            if (code == 0)
                carried[fault->off]++;
            /* the disk left behind, through its crash states: every acknowledged
             * record there, in order */
            struct sim_model *m = sim_model_new();
            for (size_t i = 0; i < t.n; i++)
                sim_model_apply(m, &t.v[i]);
            check_point(m, &vrng, 4, acked, what);
            sim_model_free(m);
            sim_trace_free(&t);
        }
    }
    print_message("    seed %" PRIu64
                  ": %d calls x {EIO, ENOSPC}: %d exited (%d still delivering callbacks of an "
                  "earlier, durable group), %d refused to recover, %d carried on; %" PRIu64
                  " crash states of what they left, %.1f s\n",
                  seed, ncalls, fatal, late_acks, refused, survived, P.st.states - states0,
                  now_s() - t0);
    char by[256] = "";
    size_t o = 0;
    for (int c = 0; c < 7; c++)
        if (carried[c] && o < sizeof by)
            o += (size_t)snprintf(by + o, sizeof by - o, " %s %d", call_names[c], carried[c]);
    print_message("      carried on after a failed:%s (compaction abandoned or an unlink of a "
                  "superseded segment left for later)\n",
                  survived ? by : " nothing");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_model, setup, teardown),
        cmocka_unit_test_setup_teardown(test_power_loss, setup, teardown),
        cmocka_unit_test_setup_teardown(test_io_errors, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
