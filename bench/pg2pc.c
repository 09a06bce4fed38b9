/*
 * pg2pc.c - the 2pc-on-PostgreSQL benchmark client: a transfer between two
 * databases, with and without dtxd.
 *
 * --threads N threads (default 16) each hold one libpq connection to
 * database A and one to database B and run transfers back to back (closed
 * loop). One transfer moves 1 from a row of A's accounts to a row of B's;
 * every thread draws its rows from a range of its own (--rows split N ways),
 * so that two threads never wait on each other's row locks.
 *
 * Modes:
 *   --mode bare
 *       the prepare/commit work with no coordinator:
 *         A: BEGIN; UPDATE accounts SET balance = balance - 1 WHERE id = $1;
 *            PREPARE TRANSACTION 'bench:<pid>:<thread>:<seq>:a'
 *         B: the same with + 1 and ':b'
 *         A: COMMIT PREPARED ...; B: COMMIT PREPARED ...
 *   --mode bare --check query|prepared
 *       bare, and before the commits the existence check dtxd makes for each
 *       branch (SELECT 1 FROM pg_prepared_xacts WHERE gid = $1 AND database =
 *       current_database(), on the branch's database): "query" sends it as
 *       dtxd does (PQexecParams, planned on every call), "prepared" as a
 *       statement prepared once per connection. Diagnostic: what the check
 *       costs PostgreSQL, and what preparing it would save.
 *   --mode dtx --dtxd URL
 *       the same work through dtxd, with libdtx:
 *         POST /v1/transactions {"type":"2pc","gid":G}        (dtx_create)
 *         A: BEGIN; UPDATE ...; PREPARE TRANSACTION 'dtx:G:a'  (dtx_pg_prepare)
 *         B: the same, 'dtx:G:b'
 *         register a on resource --resource-a, b on --resource-b
 *                                                  (dtx_register_2pc_resource)
 *         POST .../submit {"wait":true}                       (dtx_submit)
 *       done when the answer's status is "succeeded": dtxd has found both
 *       prepared transactions, logged its decision and run COMMIT PREPARED on
 *       both through its own connections.
 *
 * The UPDATE is a statement prepared once per connection; every session sets
 * lock_timeout (include/dtx.h, "Deadlocks"). A transfer that fails anywhere
 * is an error: it is rolled back (bare: ROLLBACK / ROLLBACK PREPARED; dtx:
 * ROLLBACK and dtx_abort), the first few are described on stderr, and the
 * thread goes on.
 *
 * Time: all threads connect, then run --warmup seconds (default 2), then
 * --duration seconds (default 10) are measured: transfers that end inside
 * that window are counted, with their latency (start to end, monotonic
 * clock). After the window the threads finish the transfer in hand and stop.
 *
 * Each transfer is also timed step by step (prepare A, ..., submit+wait):
 * the summary gives the mean of each step over the counted transfers.
 *
 * CPU over the measured window, in cores: this process (getrusage), the
 * PostgreSQL cluster (--pg-pid, the postmaster: it and all its children -
 * backends of both modes and of dtxd, WAL writer, checkpointer - from
 * /proc), dtxd (--dtxd-pid) and the whole machine (/proc/stat, all but idle
 * and iowait; other_cpu is what is left of it: the kernel's work charged to
 * no process, and whatever else runs on the box). PostgreSQL's WAL activity
 * over the window comes from pg_stat_wal (--conninfo-a's server; both
 * databases share the cluster).
 *
 * Output: a human summary, then one line
 *   RESULT mode=bare threads=16 duration_s=10.0 tps=... p50_ms=... p90_ms=...
 *          p99_ms=... max_ms=... mean_ms=... errors=N done=N client_cpu=...
 *          pg_cpu=... dtxd_cpu=... other_cpu=... machine_cpu=...
 *          wal_syncs_per_tx=... wal_writes_per_tx=... wal_bytes_per_tx=...
 * (mode is bare, bare+check, bare+check(prepared) or dtx). Exit status 3
 * when there were errors, 1 on a setup failure.
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <libpq-fe.h>

#include "dtx.h"

#define ERR_LOG_FIRST  5     /* errors described as they happen */
#define WAIT_MS        30000 /* submit's wait bound */
#define LOCK_TIMEOUT   "SET lock_timeout = '5s'"
#define XACT_NAME_SIZE 64
#define MAX_STEPS      6 /* steps of one transfer timed apart */

enum mode { MODE_BARE, MODE_DTX };
enum check { CHECK_NONE, CHECK_QUERY, CHECK_PREPARED };

#define CHECK_SQL "SELECT 1 FROM pg_prepared_xacts WHERE gid = $1 AND database = current_database()"

struct config {
    enum mode mode;
    enum check check; /* bare only */
    const char *conninfo[2];
    const char *dtxd;
    const char *resource[2];
    int threads;
    double duration, warmup;
    long rows;
    long pg_pid, dtxd_pid;
    int one_request; /* dtx1: prepare both, then one create+submit request */
};

struct worker {
    pthread_t th;
    int id;
    PGconn *pg[2];
    struct dtx_client *client;
    uint64_t rnd;
    uint64_t *lat_us; /* latencies of transfers ended in the window */
    size_t nlat, caplat;
    uint64_t errors;
    /* steps of the transfer in hand: when each ended (step_end[0] is the
     * start), and the sums of their durations over the transfers counted */
    uint64_t step_end[MAX_STEPS + 1];
    uint64_t step_sum_us[MAX_STEPS];
};

static struct config cfg = {
    .mode = MODE_BARE,
    .resource = {"bank_a", "bank_b"},
    .threads = 16,
    .duration = 10,
    .warmup = 2,
    .rows = 100000,
};

/* Set by main: measurement window [t_begin, t_end) on CLOCK_MONOTONIC, in
 * microseconds; go flips to 1 when every worker is connected. */
static uint64_t t_begin, t_end;
static atomic_int go;
static atomic_int errors_logged;
static pthread_barrier_t ready;

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* The steps each mode times (step k ends at step_end[k + 1]). */
static const char *const bare_steps[] = {"prepare A", "prepare B", "commit A", "commit B"};
static const char *const check_steps[] = {"prepare A", "prepare B", "check A+B", "commit A",
                                          "commit B"};
static const char *const dtx_steps[] = {"create",     "prepare A",  "prepare B",
                                        "register A", "register B", "submit+wait"};
static const char *const dtx1_steps[] = {"prepare A", "prepare B", "create+submit+wait"};

/* The names of this run's steps. OUT: *n, how many. */
static const char *const *steps_of(size_t *n)
{
    if (cfg.mode == MODE_DTX && cfg.one_request) {
        *n = sizeof dtx1_steps / sizeof *dtx1_steps;
        return dtx1_steps;
    }
    if (cfg.mode == MODE_DTX) {
        *n = sizeof dtx_steps / sizeof *dtx_steps;
        return dtx_steps;
    }
    if (cfg.check != CHECK_NONE) {
        *n = sizeof check_steps / sizeof *check_steps;
        return check_steps;
    }
    *n = sizeof bare_steps / sizeof *bare_steps;
    return bare_steps;
}

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n);
    if (q == NULL) {
        fprintf(stderr, "pg2pc: out of memory\n");
        exit(1);
    }
    return q;
}

static uint64_t xorshift(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *s = x;
    return x;
}

/* Describe one of the first errors on stderr. */
static void report_error(struct worker *w, const char *what, const char *detail)
{
    w->errors++;
    if (atomic_fetch_add(&errors_logged, 1) < ERR_LOG_FIRST)
        fprintf(stderr, "pg2pc: thread %d: %s: %s\n", w->id, what, detail);
}

/* Run sql (no parameters) and expect a command status. 0 or -1. */
static int exec_cmd(PGconn *pg, const char *sql)
{
    PGresult *r = PQexec(pg, sql);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    return ok ? 0 : -1;
}

/* BEGIN; the UPDATE of row key on side i (0: A, -1; 1: B, +1). 0 or -1,
 * the transaction is then open (failed or not). */
static int do_work(struct worker *w, int i, long key)
{
    char k[24];
    const char *params[1] = {k};
    PGresult *r;
    int ok;

    if (exec_cmd(w->pg[i], "BEGIN") != 0)
        return -1;
    snprintf(k, sizeof k, "%ld", key);
    r = PQexecPrepared(w->pg[i], i == 0 ? "debit" : "credit", 1, params, NULL, NULL, 0);
    ok = PQresultStatus(r) == PGRES_COMMAND_OK && strcmp(PQcmdTuples(r), "1") == 0;
    PQclear(r);
    return ok ? 0 : -1;
}

/* Leave conn with no transaction open, whatever happened. */
static void rollback_local(PGconn *pg)
{
    if (PQtransactionStatus(pg) != PQTRANS_IDLE)
        exec_cmd(pg, "ROLLBACK");
}

static void pick_keys(struct worker *w, long key[2])
{
    long span = cfg.rows / cfg.threads;
    for (int i = 0; i < 2; i++)
        key[i] = (long)w->id * span + 1 + (long)(xorshift(&w->rnd) % (uint64_t)span);
}

/* One bare transfer. 0 or -1 (error reported, everything rolled back). */
static int transfer_bare(struct worker *w, uint64_t seq)
{
    char name[2][XACT_NAME_SIZE], sql[2][XACT_NAME_SIZE * 2 + 32];
    int prepared[2] = {0, 0};
    long key[2];
    int i, step = 0;

    pick_keys(w, key);
    for (i = 0; i < 2; i++) {
        snprintf(name[i], sizeof name[i], "bench:%ld:%d:%" PRIu64 ":%c", (long)getpid(), w->id, seq,
                 "ab"[i]);
        if (do_work(w, i, key[i]) != 0)
            goto fail;
        snprintf(sql[i], sizeof sql[i], "PREPARE TRANSACTION '%s'", name[i]);
        if (exec_cmd(w->pg[i], sql[i]) != 0)
            goto fail;
        prepared[i] = 1;
        w->step_end[++step] = now_us();
    }
    for (i = 0; cfg.check != CHECK_NONE && i < 2; i++) {
        const char *params[1] = {name[i]};
        PGresult *r = cfg.check == CHECK_QUERY
                          ? PQexecParams(w->pg[i], CHECK_SQL, 1, NULL, params, NULL, NULL, 0)
                          : PQexecPrepared(w->pg[i], "check", 1, params, NULL, NULL, 0);
        int ok = PQresultStatus(r) == PGRES_TUPLES_OK, found = ok && PQntuples(r) == 1;
        PQclear(r);
        if (ok && !found) {
            report_error(w, "check", "the prepared transaction is not there");
            goto undo;
        }
        if (!found)
            goto fail;
        if (i == 1)
            w->step_end[++step] = now_us();
    }
    for (i = 0; i < 2; i++) {
        snprintf(sql[i], sizeof sql[i], "COMMIT PREPARED '%s'", name[i]);
        if (exec_cmd(w->pg[i], sql[i]) != 0)
            goto fail;
        prepared[i] = 0;
        w->step_end[++step] = now_us();
    }
    return 0;

fail:
    report_error(w, i == 0 ? "database A" : "database B", PQerrorMessage(w->pg[i]));
undo:
    for (i = 0; i < 2; i++) {
        rollback_local(w->pg[i]);
        if (prepared[i]) {
            snprintf(sql[i], sizeof sql[i], "ROLLBACK PREPARED '%s'", name[i]);
            exec_cmd(w->pg[i], sql[i]);
        }
    }
    return -1;
}

/* One transfer through dtxd in one request: both databases prepared first
 * under the gid, then the 2pc created with both resource branches and
 * submitted, waiting for the outcome. 0 or -1. */
static int transfer_dtx1(struct worker *w, uint64_t seq)
{
    static const char *const branch[2] = {"a", "b"};
    char gid[DTX_GID_MAX + 1], body[512];
    struct dtx_txn *t = NULL;
    int i, step = 0;
    long key[2];

    pick_keys(w, key);
    snprintf(gid, sizeof gid, "pg2pc-%ld-%d-%" PRIu64, (long)getpid(), w->id, seq);
    for (i = 0; i < 2; i++) {
        if (do_work(w, i, key[i]) != 0 || dtx_pg_prepare(w->pg[i], gid, branch[i]) != 0) {
            report_error(w, i == 0 ? "database A" : "database B", PQerrorMessage(w->pg[i]));
            for (int k = 0; k < 2; k++)
                rollback_local(w->pg[k]);
            return -1; /* a prepared one is an orphan: dtxd's scan rolls it back */
        }
        w->step_end[++step] = now_us();
    }
    snprintf(body, sizeof body,
             "{\"type\":\"2pc\",\"gid\":\"%s\",\"submit\":true,\"wait\":true,"
             "\"wait_timeout_ms\":%d,\"branches\":[{\"branch\":\"a\",\"resource\":\"%s\"},"
             "{\"branch\":\"b\",\"resource\":\"%s\"}]}",
             gid, WAIT_MS, cfg.resource[0], cfg.resource[1]);
    if (dtx_create_json(w->client, body, &t) != 0) {
        const struct dtx_error *e = dtx_client_last_error(w->client);
        char detail[512];
        snprintf(detail, sizeof detail, "%s (http %d %s)", e->message, e->http_status, e->api_code);
        report_error(w, "create+submit", detail);
        return -1;
    }
    int ok = t->status != NULL && strcmp(t->status, "succeeded") == 0;
    if (!ok) {
        char detail[160];
        snprintf(detail, sizeof detail, "gid %s ended %s (http %d)", gid,
                 t->status ? t->status : "(no status)", t->http_status);
        report_error(w, "create+submit", detail);
    }
    dtx_txn_free(t);
    w->step_end[++step] = now_us();
    return ok ? 0 : -1;
}

/* One transfer through dtxd. 0 or -1 (error reported, rolled back). */
static int transfer_dtx(struct worker *w, uint64_t seq)
{
    static const char *const branch[2] = {"a", "b"};
    char gid[DTX_GID_MAX + 1];
    struct dtx_spec *spec = NULL;
    struct dtx_txn *t = NULL;
    const char *what = "create";
    int created = 0, rc, i, step = 0;
    long key[2];

    pick_keys(w, key);
    snprintf(gid, sizeof gid, "pg2pc-%ld-%d-%" PRIu64, (long)getpid(), w->id, seq);
    rc = dtx_2pc_new(&spec);
    if (rc == 0)
        rc = dtx_spec_set_gid(spec, gid);
    if (rc == 0)
        rc = dtx_create(w->client, spec, NULL);
    dtx_spec_free(spec);
    if (rc != 0)
        goto fail_api;
    created = 1;
    w->step_end[++step] = now_us();
    for (i = 0; i < 2; i++) {
        if (do_work(w, i, key[i]) != 0 || dtx_pg_prepare(w->pg[i], gid, branch[i]) != 0) {
            report_error(w, i == 0 ? "database A" : "database B", PQerrorMessage(w->pg[i]));
            goto fail;
        }
        w->step_end[++step] = now_us();
    }
    for (i = 0; i < 2; i++) {
        what = "register";
        rc = dtx_register_2pc_resource(w->client, gid, branch[i], cfg.resource[i], NULL);
        if (rc != 0)
            goto fail_api;
        w->step_end[++step] = now_us();
    }
    what = "submit";
    rc = dtx_submit(w->client, gid, WAIT_MS, &t);
    if (rc != 0)
        goto fail_api;
    if (t->status == NULL || strcmp(t->status, "succeeded") != 0) {
        char detail[160];
        snprintf(detail, sizeof detail, "gid %s ended %s (http %d)", gid,
                 t->status ? t->status : "(no status)", t->http_status);
        report_error(w, "submit", detail);
        dtx_txn_free(t);
        return -1; /* dtxd owns the outcome now */
    }
    dtx_txn_free(t);
    w->step_end[++step] = now_us();
    return 0;

fail_api : {
    const struct dtx_error *e = dtx_client_last_error(w->client);
    char detail[512];
    snprintf(detail, sizeof detail, "%s (http %d %s)", e->message, e->http_status, e->api_code);
    report_error(w, what, detail);
}
fail:
    for (i = 0; i < 2; i++)
        rollback_local(w->pg[i]);
    if (created)
        dtx_abort(w->client, gid, 0, NULL); /* dtxd rolls back what is prepared */
    return -1;
}

static PGconn *connect_db(const char *conninfo, int side)
{
    PGconn *pg = PQconnectdb(conninfo);
    PGresult *r;

    if (PQstatus(pg) != CONNECTION_OK) {
        fprintf(stderr, "pg2pc: cannot connect to %s: %s", conninfo, PQerrorMessage(pg));
        PQfinish(pg);
        return NULL;
    }
    r = PQprepare(pg, side == 0 ? "debit" : "credit",
                  side == 0 ? "UPDATE accounts SET balance = balance - 1 WHERE id = $1"
                            : "UPDATE accounts SET balance = balance + 1 WHERE id = $1",
                  1, NULL);
    if (PQresultStatus(r) == PGRES_COMMAND_OK && cfg.check == CHECK_PREPARED) {
        PQclear(r);
        r = PQprepare(pg, "check", CHECK_SQL, 1, NULL);
    }
    if (PQresultStatus(r) != PGRES_COMMAND_OK || exec_cmd(pg, LOCK_TIMEOUT) != 0) {
        fprintf(stderr, "pg2pc: preparing the session: %s", PQerrorMessage(pg));
        PQclear(r);
        PQfinish(pg);
        return NULL;
    }
    PQclear(r);
    return pg;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    uint64_t seq = 0;
    size_t nsteps;

    steps_of(&nsteps);
    pthread_barrier_wait(&ready);
    while (!atomic_load(&go))
        usleep(1000);
    if (w->pg[0] == NULL || w->pg[1] == NULL || (cfg.mode == MODE_DTX && w->client == NULL))
        return NULL;
    for (;;) {
        uint64_t t0 = now_us();
        if (t0 >= t_end)
            break;
        w->step_end[0] = t0;
        int rc = cfg.mode == MODE_BARE ? transfer_bare(w, seq)
                 : cfg.one_request     ? transfer_dtx1(w, seq)
                                       : transfer_dtx(w, seq);
        uint64_t t1 = now_us();
        seq++;
        if (t1 < t_begin || t1 >= t_end || rc != 0)
            continue;
        if (w->nlat == w->caplat) {
            w->caplat = w->caplat ? w->caplat * 2 : 4096;
            w->lat_us = xrealloc(w->lat_us, w->caplat * sizeof *w->lat_us);
        }
        w->lat_us[w->nlat++] = t1 - t0;
        for (size_t k = 0; k < nsteps; k++)
            w->step_sum_us[k] += w->step_end[k + 1] - w->step_end[k];
    }
    return NULL;
}

/* ---- CPU and WAL accounting over the window ----------------------------- */

/* utime + stime of pid, in clock ticks; 0 if it is gone. OUT: *ppid. */
static uint64_t proc_ticks(long pid, long *ppid)
{
    char path[64], buf[1024];
    unsigned long long ut = 0, st = 0;
    long pp = 0;
    FILE *f;
    size_t n;

    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    f = fopen(path, "r");
    if (f == NULL)
        return 0;
    n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')'); /* comm may hold spaces */
    if (p == NULL ||
        sscanf(p + 2, "%*c %ld %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &pp, &ut, &st) != 3)
        return 0;
    if (ppid != NULL)
        *ppid = pp;
    return ut + st;
}

/* Ticks of the postmaster and all its children. */
static uint64_t pg_ticks(long postmaster)
{
    uint64_t sum;
    struct dirent *de;
    DIR *d;

    if (postmaster <= 0)
        return 0;
    sum = proc_ticks(postmaster, NULL);
    d = opendir("/proc");
    if (d == NULL)
        return sum;
    while ((de = readdir(d)) != NULL) {
        long pid = strtol(de->d_name, NULL, 10), ppid = 0;
        if (pid <= 0)
            continue;
        uint64_t t = proc_ticks(pid, &ppid);
        if (ppid == postmaster)
            sum += t;
    }
    closedir(d);
    return sum;
}

/* Machine-wide busy ticks (all but idle and iowait), summed over CPUs. */
static uint64_t machine_ticks(void)
{
    unsigned long long v[8] = {0};
    FILE *f = fopen("/proc/stat", "r");
    if (f == NULL)
        return 0;
    int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                   &v[4], &v[5], &v[6], &v[7]);
    fclose(f);
    if (n != 8)
        return 0;
    return v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
}

static uint64_t self_us(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000u +
           (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

struct wal_stat {
    double syncs, writes, bytes;
    int ok;
};

static struct wal_stat wal_sample(PGconn *pg)
{
    struct wal_stat s = {0};
    PGresult *r = PQexec(pg, "SELECT wal_sync, wal_write, wal_bytes FROM pg_stat_wal");
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
        s.syncs = atof(PQgetvalue(r, 0, 0));
        s.writes = atof(PQgetvalue(r, 0, 1));
        s.bytes = atof(PQgetvalue(r, 0, 2));
        s.ok = 1;
    }
    PQclear(r);
    return s;
}

struct usage {
    uint64_t self_us, pg, dtxd, machine;
    struct wal_stat wal;
};

static void sample(struct usage *u, PGconn *stat_conn)
{
    u->self_us = self_us();
    u->pg = pg_ticks(cfg.pg_pid);
    u->dtxd = cfg.dtxd_pid > 0 ? proc_ticks(cfg.dtxd_pid, NULL) : 0;
    u->machine = machine_ticks();
    u->wal = wal_sample(stat_conn);
}

static void sleep_until(uint64_t t)
{
    for (uint64_t n = now_us(); n < t; n = now_us()) {
        uint64_t d = t - n;
        struct timespec ts = {(time_t)(d / 1000000u), (long)(d % 1000000u) * 1000};
        nanosleep(&ts, NULL);
    }
}

/* ---- main --------------------------------------------------------------- */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double pct_ms(const uint64_t *v, size_t n, double p)
{
    if (n == 0)
        return 0;
    size_t i = (size_t)(p * (double)(n - 1) + 0.5);
    return (double)v[i] / 1000.0;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: pg2pc --mode bare|dtx --conninfo-a S --conninfo-b S [--dtxd URL]\n"
            "             [--check query|prepared] (bare)\n"
            "             [--resource-a NAME] [--resource-b NAME] [--threads N] [--rows N]\n"
            "             [--duration S] [--warmup S] [--pg-pid PID] [--dtxd-pid PID]\n");
    exit(1);
}

static void parse_args(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (v == NULL)
            usage();
        i++;
        if (strcmp(k, "--mode") == 0 && strcmp(v, "bare") == 0)
            cfg.mode = MODE_BARE;
        else if (strcmp(k, "--mode") == 0 && strcmp(v, "dtx") == 0)
            cfg.mode = MODE_DTX;
        else if (strcmp(k, "--mode") == 0 && strcmp(v, "dtx1") == 0)
            cfg.mode = MODE_DTX, cfg.one_request = 1;
        else if (strcmp(k, "--check") == 0 && strcmp(v, "query") == 0)
            cfg.check = CHECK_QUERY;
        else if (strcmp(k, "--check") == 0 && strcmp(v, "prepared") == 0)
            cfg.check = CHECK_PREPARED;
        else if (strcmp(k, "--conninfo-a") == 0)
            cfg.conninfo[0] = v;
        else if (strcmp(k, "--conninfo-b") == 0)
            cfg.conninfo[1] = v;
        else if (strcmp(k, "--dtxd") == 0)
            cfg.dtxd = v;
        else if (strcmp(k, "--resource-a") == 0)
            cfg.resource[0] = v;
        else if (strcmp(k, "--resource-b") == 0)
            cfg.resource[1] = v;
        else if (strcmp(k, "--threads") == 0)
            cfg.threads = atoi(v);
        else if (strcmp(k, "--rows") == 0)
            cfg.rows = atol(v);
        else if (strcmp(k, "--duration") == 0)
            cfg.duration = atof(v);
        else if (strcmp(k, "--warmup") == 0)
            cfg.warmup = atof(v);
        else if (strcmp(k, "--pg-pid") == 0)
            cfg.pg_pid = atol(v);
        else if (strcmp(k, "--dtxd-pid") == 0)
            cfg.dtxd_pid = atol(v);
        else
            usage();
    }
    if (cfg.conninfo[0] == NULL || cfg.conninfo[1] == NULL || cfg.threads < 1 ||
        cfg.duration <= 0 || cfg.warmup < 0 || cfg.rows < cfg.threads ||
        (cfg.mode == MODE_DTX && (cfg.dtxd == NULL || cfg.check != CHECK_NONE)))
        usage();
}

int main(int argc, char **argv)
{
    struct worker *ws;
    struct usage u0, u1;
    PGconn *stat_conn;
    int failed = 0;

    parse_args(argc, argv);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    stat_conn = PQconnectdb(cfg.conninfo[0]);
    if (PQstatus(stat_conn) != CONNECTION_OK) {
        fprintf(stderr, "pg2pc: cannot connect: %s", PQerrorMessage(stat_conn));
        return 1;
    }
    ws = calloc((size_t)cfg.threads, sizeof *ws);
    if (ws == NULL)
        return 1;
    pthread_barrier_init(&ready, NULL, (unsigned)cfg.threads + 1);
    for (int i = 0; i < cfg.threads; i++) {
        struct worker *w = &ws[i];
        w->id = i;
        w->rnd = 0x9e3779b97f4a7c15ull ^ ((uint64_t)(i + 1) * 0xbf58476d1ce4e5b9ull);
        for (int s = 0; s < 2; s++) {
            w->pg[s] = connect_db(cfg.conninfo[s], s);
            failed |= w->pg[s] == NULL;
        }
        if (cfg.mode == MODE_DTX && dtx_client_new(cfg.dtxd, &w->client) != 0) {
            fprintf(stderr, "pg2pc: bad dtxd URL %s\n", cfg.dtxd);
            failed = 1;
        }
        if (pthread_create(&w->th, NULL, worker_main, w) != 0) {
            fprintf(stderr, "pg2pc: pthread_create: %s\n", strerror(errno));
            return 1;
        }
    }
    pthread_barrier_wait(&ready);
    t_begin = now_us() + (uint64_t)(cfg.warmup * 1e6);
    t_end = t_begin + (uint64_t)(cfg.duration * 1e6);
    if (failed)
        t_end = t_begin = 0; /* every worker stops at once */
    atomic_store(&go, 1);
    if (!failed) {
        sleep_until(t_begin);
        sample(&u0, stat_conn);
        sleep_until(t_end);
        sample(&u1, stat_conn);
    }

    size_t n = 0;
    uint64_t errors = 0;
    for (int i = 0; i < cfg.threads; i++) {
        pthread_join(ws[i].th, NULL);
        n += ws[i].nlat;
        errors += ws[i].errors;
    }
    if (failed)
        return 1;
    uint64_t *all = xrealloc(NULL, (n ? n : 1) * sizeof *all), sum = 0;
    size_t k = 0;
    for (int i = 0; i < cfg.threads; i++) {
        memcpy(all + k, ws[i].lat_us, ws[i].nlat * sizeof *all);
        k += ws[i].nlat;
    }
    qsort(all, n, sizeof *all, cmp_u64);
    for (size_t i = 0; i < n; i++)
        sum += all[i];

    double d = cfg.duration, ticks = (double)sysconf(_SC_CLK_TCK);
    double tps = (double)n / d;
    double client_cpu = (double)(u1.self_us - u0.self_us) / 1e6 / d;
    double pg_cpu = (double)(u1.pg - u0.pg) / ticks / d;
    double dtxd_cpu = (double)(u1.dtxd - u0.dtxd) / ticks / d;
    double machine_cpu = (double)(u1.machine - u0.machine) / ticks / d;
    double other_cpu = machine_cpu - client_cpu - pg_cpu - dtxd_cpu;
    if (other_cpu < 0)
        other_cpu = 0;
    double nd = n ? (double)n : 1;
    static const char *const bare_names[] = {"bare", "bare+check", "bare+check(prepared)"};
    const char *mode = cfg.mode == MODE_BARE ? bare_names[cfg.check]
                       : cfg.one_request     ? "dtx1"
                                             : "dtx";

    printf("pg2pc %s: %d threads, %.1f s measured after %.1f s warmup\n", mode, cfg.threads, d,
           cfg.warmup);
    printf("  %zu transfers, %.1f/s, %" PRIu64 " errors\n", n, tps, errors);
    printf("  latency ms: p50 %.3f  p90 %.3f  p99 %.3f  max %.3f  mean %.3f\n",
           pct_ms(all, n, 0.50), pct_ms(all, n, 0.90), pct_ms(all, n, 0.99),
           n ? (double)all[n - 1] / 1000.0 : 0, n ? (double)sum / nd / 1000.0 : 0);
    printf("  CPU cores: client %.2f, PostgreSQL %.2f, dtxd %.2f, everything else %.2f (machine "
           "%.2f of %ld)\n",
           client_cpu, pg_cpu, dtxd_cpu, other_cpu, machine_cpu, sysconf(_SC_NPROCESSORS_ONLN));
    size_t nsteps;
    const char *const *steps = steps_of(&nsteps);
    printf("  mean ms per step:");
    for (size_t k = 0; k < nsteps; k++) {
        uint64_t t = 0;
        for (int i = 0; i < cfg.threads; i++)
            t += ws[i].step_sum_us[k];
        printf("%s %s %.3f", k ? "," : "", steps[k], (double)t / nd / 1000.0);
    }
    printf("\n");
    if (u0.wal.ok && u1.wal.ok)
        printf("  PostgreSQL WAL per transfer: %.2f syncs, %.2f writes, %.0f bytes\n",
               (u1.wal.syncs - u0.wal.syncs) / nd, (u1.wal.writes - u0.wal.writes) / nd,
               (u1.wal.bytes - u0.wal.bytes) / nd);
    printf("RESULT mode=%s threads=%d duration_s=%.1f tps=%.1f p50_ms=%.3f p90_ms=%.3f "
           "p99_ms=%.3f max_ms=%.3f mean_ms=%.3f errors=%" PRIu64 " done=%zu client_cpu=%.2f "
           "pg_cpu=%.2f dtxd_cpu=%.2f other_cpu=%.2f machine_cpu=%.2f wal_syncs_per_tx=%.2f "
           "wal_writes_per_tx=%.2f wal_bytes_per_tx=%.0f\n",
           mode, cfg.threads, d, tps, pct_ms(all, n, 0.50), pct_ms(all, n, 0.90),
           pct_ms(all, n, 0.99), n ? (double)all[n - 1] / 1000.0 : 0,
           n ? (double)sum / nd / 1000.0 : 0, errors, n, client_cpu, pg_cpu, dtxd_cpu, other_cpu,
           machine_cpu, (u1.wal.syncs - u0.wal.syncs) / nd, (u1.wal.writes - u0.wal.writes) / nd,
           (u1.wal.bytes - u0.wal.bytes) / nd);
    fflush(stdout);

    for (int i = 0; i < cfg.threads; i++) {
        PQfinish(ws[i].pg[0]);
        PQfinish(ws[i].pg[1]);
        dtx_client_free(ws[i].client);
        free(ws[i].lat_us);
    }
    free(ws);
    free(all);
    PQfinish(stat_conn);
    curl_global_cleanup();
    return errors ? 3 : 0;
}
