/*
 * test_barrier.c - the participant-side barrier and the msg mark/check, on
 * SQLite (a temporary file) and on PostgreSQL (the database DTX_TEST_PG
 * names; those tests are skipped when it is unset, and fail when
 * DTX_REQUIRE_PG=1 says they must run).
 *
 * Every scenario runs on both backends through struct backend; the races
 * (a second connection that must wait for the first one's transaction) are
 * per backend. Each test uses gids of its own, prefixed with the process id
 * and the time, so runs never see each other's rows in a shared database.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>
#include <sqlite3.h>

#include "dtx.h"

struct backend {
    const char *name;
    PGconn *pg;    /* PostgreSQL backend: the connection of the local transactions */
    sqlite3 *db;   /* SQLite backend: the same */
    char path[64]; /* SQLite: the database file */
    int skip;      /* PostgreSQL not configured: skip */
};

static char run_prefix[64];
static unsigned gid_seq;

/* A gid no other test and no other run uses: prefix-seq-what. */
static void new_gid(char *out, size_t cap, const char *what)
{
    snprintf(out, cap, "%s-%u-%s", run_prefix, gid_seq++, what);
}

static struct backend *ready(void **state)
{
    struct backend *b = *state;
    if (b->skip)
        skip();
    return b;
}

/* ---- the backend seam ---------------------------------------------------- */

static void pg_ok(PGconn *conn, const char *sql)
{
    PGresult *res = PQexec(conn, sql);
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(conn));
    PQclear(res);
}

static void sqlite_ok(sqlite3 *db, const char *sql)
{
    if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK)
        fail_msg("%s: %s", sql, sqlite3_errmsg(db));
}

static void begin(struct backend *b)
{
    if (b->pg != NULL)
        pg_ok(b->pg, "BEGIN");
    else
        sqlite_ok(b->db, "BEGIN IMMEDIATE");
}

static void commit(struct backend *b)
{
    if (b->pg != NULL)
        pg_ok(b->pg, "COMMIT");
    else
        sqlite_ok(b->db, "COMMIT");
}

static void rollback(struct backend *b)
{
    if (b->pg != NULL)
        pg_ok(b->pg, "ROLLBACK");
    else
        sqlite_ok(b->db, "ROLLBACK");
}

static int barrier(struct backend *b, const char *gid, const char *branch, const char *op,
                   enum dtx_barrier_result *out)
{
    if (b->pg != NULL)
        return dtx_barrier_pg(b->pg, gid, branch, op, out);
    return dtx_barrier_sqlite(b->db, gid, branch, op, out);
}

static int mark(struct backend *b, const char *gid)
{
    if (b->pg != NULL)
        return dtx_msg_mark_pg(b->pg, gid);
    return dtx_msg_mark_sqlite(b->db, gid);
}

static int check(struct backend *b, const char *gid, enum dtx_msg_state *out)
{
    if (b->pg != NULL)
        return dtx_msg_check_pg(b->pg, gid, out);
    return dtx_msg_check_sqlite(b->db, gid, out);
}

/* How many barrier rows gid has (-1 on error). */
static long count_rows(struct backend *b, const char *gid)
{
    long n = -1;
    if (b->pg != NULL) {
        const char *params[1] = {gid};
        PGresult *res = PQexecParams(b->pg, "SELECT count(*) FROM dtx_barrier WHERE gid = $1", 1,
                                     NULL, params, NULL, NULL, 0);
        if (PQresultStatus(res) == PGRES_TUPLES_OK)
            n = atol(PQgetvalue(res, 0, 0));
        PQclear(res);
    } else {
        sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v2(b->db, "SELECT count(*) FROM dtx_barrier WHERE gid = ?1", -1, &st,
                               NULL) == SQLITE_OK &&
            sqlite3_bind_text(st, 1, gid, -1, SQLITE_STATIC) == SQLITE_OK &&
            sqlite3_step(st) == SQLITE_ROW)
            n = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
    }
    return n;
}

/* One barrier call in a transaction of its own, committed; returns the result. */
static enum dtx_barrier_result barrier_txn(struct backend *b, const char *gid, const char *branch,
                                           const char *op)
{
    enum dtx_barrier_result r = (enum dtx_barrier_result) - 1;
    begin(b);
    int rc = barrier(b, gid, branch, op, &r);
    if (rc != 0)
        fail_msg("barrier %s/%s/%s: %s", gid, branch, op, dtx_strerror(rc));
    commit(b);
    return r;
}

/* ---- setup ----------------------------------------------------------------- */

static int sqlite_setup(void **state)
{
    static struct backend b = {.name = "sqlite"};
    snprintf(b.path, sizeof(b.path), "/tmp/dtx-test-barrier-XXXXXX");
    int fd = mkstemp(b.path);
    if (fd < 0)
        return -1;
    close(fd);
    if (sqlite3_open(b.path, &b.db) != SQLITE_OK) {
        fprintf(stderr, "sqlite3_open %s: %s\n", b.path, sqlite3_errmsg(b.db));
        return -1;
    }
    sqlite3_busy_timeout(b.db, 10000);
    if (dtx_barrier_sqlite_init(b.db) != 0) {
        fprintf(stderr, "dtx_barrier_sqlite_init: %s\n", sqlite3_errmsg(b.db));
        return -1;
    }
    *state = &b;
    return 0;
}

static int sqlite_teardown(void **state)
{
    struct backend *b = *state;
    sqlite3_close(b->db);
    unlink(b->path);
    return 0;
}

static PGconn *pg_connect(void)
{
    PGconn *conn = PQconnectdb(getenv("DTX_TEST_PG"));
    if (PQstatus(conn) != CONNECTION_OK)
        fail_msg("connecting to DTX_TEST_PG=%s: %s", getenv("DTX_TEST_PG"), PQerrorMessage(conn));
    return conn;
}

static int pg_setup(void **state)
{
    static struct backend b = {.name = "postgresql"};
    const char *conninfo = getenv("DTX_TEST_PG");
    const char *require = getenv("DTX_REQUIRE_PG");
    *state = &b;
    if (conninfo == NULL || conninfo[0] == '\0') {
        if (require != NULL && strcmp(require, "1") == 0) {
            fprintf(stderr, "test_barrier: DTX_REQUIRE_PG=1 but DTX_TEST_PG is not set: "
                            "start a cluster (scripts/pg.sh start DIR PORT) and set "
                            "DTX_TEST_PG to its conninfo\n");
            return -1;
        }
        fprintf(stderr, "test_barrier: DTX_TEST_PG is not set: PostgreSQL tests skipped\n");
        b.skip = 1;
        return 0;
    }
    b.pg = PQconnectdb(conninfo);
    if (PQstatus(b.pg) != CONNECTION_OK) {
        fprintf(stderr, "test_barrier: connecting to DTX_TEST_PG=%s: %s", conninfo,
                PQerrorMessage(b.pg));
        return -1;
    }
    if (dtx_barrier_pg_init(b.pg) != 0) {
        fprintf(stderr, "dtx_barrier_pg_init: %s", PQerrorMessage(b.pg));
        return -1;
    }
    return 0;
}

static int pg_teardown(void **state)
{
    struct backend *b = *state;
    PQfinish(b->pg);
    return 0;
}

/* ---- scenarios on both backends ------------------------------------------ */

static const char *const undo_ops[] = {"compensate", "cancel", "rollback"};
static const char *const forward_ops[] = {"action", "try", "prepare"};

/* Each forward op, then its undo, each in its own transaction; and the
 * second-phase ops of TCC and 2pc after their first phase. */
static void test_pairs_in_order(void **state)
{
    struct backend *b = ready(state);
    char gid[128];
    for (int i = 0; i < 3; i++) {
        new_gid(gid, sizeof(gid), "pair");
        assert_int_equal(barrier_txn(b, gid, "01", forward_ops[i]), DTX_BARRIER_APPLY);
        assert_int_equal(barrier_txn(b, gid, "01", undo_ops[i]), DTX_BARRIER_APPLY);
        assert_int_equal(count_rows(b, gid), 2);
    }
    new_gid(gid, sizeof(gid), "tcc");
    assert_int_equal(barrier_txn(b, gid, "01", "try"), DTX_BARRIER_APPLY);
    assert_int_equal(barrier_txn(b, gid, "01", "confirm"), DTX_BARRIER_APPLY);
    new_gid(gid, sizeof(gid), "2pc");
    assert_int_equal(barrier_txn(b, gid, "01", "prepare"), DTX_BARRIER_APPLY);
    assert_int_equal(barrier_txn(b, gid, "01", "commit"), DTX_BARRIER_APPLY);
    /* Branches are independent. */
    new_gid(gid, sizeof(gid), "branches");
    assert_int_equal(barrier_txn(b, gid, "01", "action"), DTX_BARRIER_APPLY);
    assert_int_equal(barrier_txn(b, gid, "02", "compensate"), DTX_BARRIER_NULL_UNDO);
    assert_int_equal(barrier_txn(b, gid, "01", "compensate"), DTX_BARRIER_APPLY);
    assert_int_equal(barrier_txn(b, gid, "02", "action"), DTX_BARRIER_LATE);
}

/* A second arrival of any op does nothing, in its own transaction or in the
 * same one. */
static void test_duplicates(void **state)
{
    struct backend *b = ready(state);
    static const char *const once_ops[] = {"confirm", "commit", "deliver", "check", "some-op"};
    char gid[128];
    enum dtx_barrier_result r;
    for (int i = 0; i < 3; i++) {
        new_gid(gid, sizeof(gid), "dup");
        assert_int_equal(barrier_txn(b, gid, "01", forward_ops[i]), DTX_BARRIER_APPLY);
        assert_int_equal(barrier_txn(b, gid, "01", forward_ops[i]), DTX_BARRIER_DUPLICATE);
        assert_int_equal(barrier_txn(b, gid, "01", undo_ops[i]), DTX_BARRIER_APPLY);
        assert_int_equal(barrier_txn(b, gid, "01", undo_ops[i]), DTX_BARRIER_DUPLICATE);
        /* The forward op ran before its undo: a late copy is a duplicate. */
        assert_int_equal(barrier_txn(b, gid, "01", forward_ops[i]), DTX_BARRIER_DUPLICATE);
    }
    for (size_t i = 0; i < sizeof(once_ops) / sizeof(once_ops[0]); i++) {
        new_gid(gid, sizeof(gid), "once");
        assert_int_equal(barrier_txn(b, gid, "01", once_ops[i]), DTX_BARRIER_APPLY);
        assert_int_equal(barrier_txn(b, gid, "01", once_ops[i]), DTX_BARRIER_DUPLICATE);
    }
    new_gid(gid, sizeof(gid), "same-txn");
    begin(b);
    assert_int_equal(barrier(b, gid, "01", "action", &r), 0);
    assert_int_equal(r, DTX_BARRIER_APPLY);
    assert_int_equal(barrier(b, gid, "01", "action", &r), 0);
    assert_int_equal(r, DTX_BARRIER_DUPLICATE);
    commit(b);
}

/* An undo first: null undo, and the forward op is late from then on (in a
 * later transaction, after the undo committed). Each answer's HTTP status. */
static void test_undo_before_forward(void **state)
{
    struct backend *b = ready(state);
    char gid[128];
    for (int i = 0; i < 3; i++) {
        new_gid(gid, sizeof(gid), "null");
        enum dtx_barrier_result r = barrier_txn(b, gid, "01", undo_ops[i]);
        assert_int_equal(r, DTX_BARRIER_NULL_UNDO);
        assert_int_equal(dtx_barrier_http_status(r), 200);
        r = barrier_txn(b, gid, "01", forward_ops[i]);
        assert_int_equal(r, DTX_BARRIER_LATE);
        assert_int_equal(dtx_barrier_http_status(r), 409);
        assert_int_equal(barrier_txn(b, gid, "01", forward_ops[i]), DTX_BARRIER_LATE);
        assert_int_equal(barrier_txn(b, gid, "01", undo_ops[i]), DTX_BARRIER_DUPLICATE);
        assert_int_equal(count_rows(b, gid), 2);
    }
}

/* An undo twice, with and without its forward op. */
static void test_undo_twice(void **state)
{
    struct backend *b = ready(state);
    char gid[128];
    for (int i = 0; i < 3; i++) {
        new_gid(gid, sizeof(gid), "undo2-null");
        assert_int_equal(barrier_txn(b, gid, "01", undo_ops[i]), DTX_BARRIER_NULL_UNDO);
        assert_int_equal(barrier_txn(b, gid, "01", undo_ops[i]), DTX_BARRIER_DUPLICATE);
        new_gid(gid, sizeof(gid), "undo2");
        assert_int_equal(barrier_txn(b, gid, "01", forward_ops[i]), DTX_BARRIER_APPLY);
        assert_int_equal(barrier_txn(b, gid, "01", undo_ops[i]), DTX_BARRIER_APPLY);
        assert_int_equal(barrier_txn(b, gid, "01", undo_ops[i]), DTX_BARRIER_DUPLICATE);
    }
}

/* The caller's transaction rolls back: its barrier rows go with it, so the
 * retry applies (and a rolled-back null undo blocks nothing). */
static void test_caller_rollback(void **state)
{
    struct backend *b = ready(state);
    char gid[128];
    enum dtx_barrier_result r;

    new_gid(gid, sizeof(gid), "rb");
    begin(b);
    assert_int_equal(barrier(b, gid, "01", "action", &r), 0);
    assert_int_equal(r, DTX_BARRIER_APPLY);
    rollback(b);
    assert_int_equal(count_rows(b, gid), 0);
    assert_int_equal(barrier_txn(b, gid, "01", "action"), DTX_BARRIER_APPLY);
    assert_int_equal(count_rows(b, gid), 1);

    new_gid(gid, sizeof(gid), "rb-null");
    begin(b);
    assert_int_equal(barrier(b, gid, "01", "cancel", &r), 0);
    assert_int_equal(r, DTX_BARRIER_NULL_UNDO);
    rollback(b);
    assert_int_equal(count_rows(b, gid), 0);
    assert_int_equal(barrier_txn(b, gid, "01", "try"), DTX_BARRIER_APPLY);
    assert_int_equal(barrier_txn(b, gid, "01", "cancel"), DTX_BARRIER_APPLY);
}

/* Mark, commit: the check says committed, and keeps saying it. A second
 * mark for the gid fails. */
static void test_msg_committed(void **state)
{
    struct backend *b = ready(state);
    char gid[128];
    enum dtx_msg_state st = (enum dtx_msg_state) - 1;
    new_gid(gid, sizeof(gid), "msg");
    begin(b);
    assert_int_equal(mark(b, gid), 0);
    commit(b);
    assert_int_equal(check(b, gid, &st), 0);
    assert_int_equal(st, DTX_MSG_COMMITTED);
    assert_int_equal(dtx_msg_http_status(st), 200);
    st = (enum dtx_msg_state) - 1;
    assert_int_equal(check(b, gid, &st), 0);
    assert_int_equal(st, DTX_MSG_COMMITTED);
    begin(b);
    assert_int_equal(mark(b, gid), DTX_ECONFLICT);
    rollback(b);
    assert_int_equal(check(b, gid, &st), 0);
    assert_int_equal(st, DTX_MSG_COMMITTED);
}

/* A check before any mark: rolled back, for good; the late mark fails. A
 * local transaction that rolled back its mark reads as rolled back too. */
static void test_msg_check_first(void **state)
{
    struct backend *b = ready(state);
    char gid[128];
    enum dtx_msg_state st = (enum dtx_msg_state) - 1;
    new_gid(gid, sizeof(gid), "msg-first");
    assert_int_equal(check(b, gid, &st), 0);
    assert_int_equal(st, DTX_MSG_ROLLED_BACK);
    assert_int_equal(dtx_msg_http_status(st), 409);
    begin(b);
    assert_int_equal(mark(b, gid), DTX_ECONFLICT);
    rollback(b);
    st = (enum dtx_msg_state) - 1;
    assert_int_equal(check(b, gid, &st), 0);
    assert_int_equal(st, DTX_MSG_ROLLED_BACK);

    new_gid(gid, sizeof(gid), "msg-local-rb");
    begin(b);
    assert_int_equal(mark(b, gid), 0);
    rollback(b);
    assert_int_equal(check(b, gid, &st), 0);
    assert_int_equal(st, DTX_MSG_ROLLED_BACK);
}

/* Strings that would break SQL spliced into text are stored as they are. */
static void test_sql_injection(void **state)
{
    struct backend *b = ready(state);
    static const char *const evil[] = {
        "x'); DROP TABLE dtx_barrier; --",
        "' OR '1'='1",
        "a\"b\\c$1?1%s%n:name",
        "\xc3\xa9t\xc3\xa9 \xe2\x80\x94 ;DELETE FROM dtx_barrier;",
    };
    char gid[160], other[128];
    enum dtx_msg_state st;
    new_gid(other, sizeof(other), "witness");
    assert_int_equal(barrier_txn(b, other, "01", "action"), DTX_BARRIER_APPLY);
    for (size_t i = 0; i < sizeof(evil) / sizeof(evil[0]); i++) {
        new_gid(gid, sizeof(gid), evil[i]);
        assert_int_equal(barrier_txn(b, gid, evil[i], "action"), DTX_BARRIER_APPLY);
        assert_int_equal(barrier_txn(b, gid, evil[i], "action"), DTX_BARRIER_DUPLICATE);
        assert_int_equal(barrier_txn(b, gid, "01", evil[i]), DTX_BARRIER_APPLY);
        assert_int_equal(barrier_txn(b, gid, "01", evil[i]), DTX_BARRIER_DUPLICATE);
        assert_int_equal(count_rows(b, gid), 2);
        assert_int_equal(check(b, gid, &st), 0);
        assert_int_equal(st, DTX_MSG_ROLLED_BACK);
        assert_int_equal(count_rows(b, gid), 3);
    }
    assert_int_equal(count_rows(b, other), 1);
}

/* NULL and empty arguments, and calls in the wrong transaction state. */
static void test_bad_arguments(void **state)
{
    struct backend *b = ready(state);
    enum dtx_barrier_result r;
    enum dtx_msg_state st;
    char gid[128];
    new_gid(gid, sizeof(gid), "args");

    /* Outside a transaction: the barrier and the mark refuse. */
    assert_int_equal(barrier(b, gid, "01", "action", &r), DTX_EINVAL);
    assert_int_equal(mark(b, gid), DTX_EINVAL);

    begin(b);
    assert_int_equal(barrier(b, NULL, "01", "action", &r), DTX_EINVAL);
    assert_int_equal(barrier(b, "", "01", "action", &r), DTX_EINVAL);
    assert_int_equal(barrier(b, gid, NULL, "action", &r), DTX_EINVAL);
    assert_int_equal(barrier(b, gid, "", "action", &r), DTX_EINVAL);
    assert_int_equal(barrier(b, gid, "01", NULL, &r), DTX_EINVAL);
    assert_int_equal(barrier(b, gid, "01", "", &r), DTX_EINVAL);
    assert_int_equal(barrier(b, gid, "01", "action", NULL), DTX_EINVAL);
    assert_int_equal(mark(b, NULL), DTX_EINVAL);
    assert_int_equal(mark(b, ""), DTX_EINVAL);
    /* Inside a transaction: the check and init refuse. */
    assert_int_equal(check(b, gid, &st), DTX_EINVAL);
    if (b->pg != NULL)
        assert_int_equal(dtx_barrier_pg_init(b->pg), DTX_EINVAL);
    else
        assert_int_equal(dtx_barrier_sqlite_init(b->db), DTX_EINVAL);
    /* Nothing was written and the transaction is still usable. */
    assert_int_equal(barrier(b, gid, "01", "action", &r), 0);
    assert_int_equal(r, DTX_BARRIER_APPLY);
    rollback(b);

    assert_int_equal(check(b, NULL, &st), DTX_EINVAL);
    assert_int_equal(check(b, "", &st), DTX_EINVAL);
    assert_int_equal(check(b, gid, NULL), DTX_EINVAL);
    assert_int_equal(count_rows(b, gid), 0);
    /* init again is harmless. */
    if (b->pg != NULL)
        assert_int_equal(dtx_barrier_pg_init(b->pg), 0);
    else
        assert_int_equal(dtx_barrier_sqlite_init(b->db), 0);
}

/* ---- races: PostgreSQL ------------------------------------------------------- */

enum racer_kind { RACE_CHECK, RACE_BARRIER };

/* A call made on another connection in a thread of its own; the main thread
 * asserts on what it recorded. */
struct racer {
    enum racer_kind kind;
    PGconn *pg;
    sqlite3 *db;
    const char *gid;
    const char *op;
    int rc;
    enum dtx_msg_state state;
    enum dtx_barrier_result result;
    atomic_int done;
};

static int pg_quiet(PGconn *conn, const char *sql)
{
    PGresult *res = PQexec(conn, sql);
    int rc = PQresultStatus(res) == PGRES_COMMAND_OK ? 0 : -1;
    PQclear(res);
    return rc;
}

static void *racer_run(void *arg)
{
    struct racer *r = arg;
    if (r->kind == RACE_CHECK) {
        if (r->pg != NULL)
            r->rc = dtx_msg_check_pg(r->pg, r->gid, &r->state);
        else
            r->rc = dtx_msg_check_sqlite(r->db, r->gid, &r->state);
    } else {
        r->rc = pg_quiet(r->pg, "BEGIN");
        if (r->rc == 0)
            r->rc = dtx_barrier_pg(r->pg, r->gid, "01", r->op, &r->result);
        if (r->rc == 0)
            r->rc = pg_quiet(r->pg, "COMMIT");
    }
    atomic_store(&r->done, 1);
    return NULL;
}

/* Wait until backend pid waits on a lock (seen from monitor); 1 if it does
 * within 10 s. */
static int pg_wait_blocked(PGconn *monitor, int pid)
{
    char pidbuf[16];
    const char *params[1] = {pidbuf};
    snprintf(pidbuf, sizeof(pidbuf), "%d", pid);
    for (int i = 0; i < 1000; i++) {
        PGresult *res = PQexecParams(
            monitor, "SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND wait_event_type = 'Lock'",
            1, NULL, params, NULL, NULL, 0);
        int blocked = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1;
        PQclear(res);
        if (blocked)
            return 1;
        usleep(10000);
    }
    return 0;
}

/* The local transaction has inserted its mark and not committed; a check on
 * another connection must wait for it, then answer from its outcome. */
static void pg_msg_race(struct backend *b, int local_commits)
{
    PGconn *checker = pg_connect();
    PGconn *monitor = pg_connect();
    struct racer r = {.kind = RACE_CHECK, .pg = checker, .state = (enum dtx_msg_state) - 1};
    char gid[128];
    pthread_t t;

    /* The check picks READ COMMITTED itself: under this default its read
     * after the wait would otherwise fail to serialize. */
    pg_ok(checker, "SET default_transaction_isolation = 'repeatable read'");
    new_gid(gid, sizeof(gid), local_commits ? "race-commit" : "race-rollback");
    r.gid = gid;
    begin(b);
    assert_int_equal(mark(b, gid), 0);
    assert_int_equal(pthread_create(&t, NULL, racer_run, &r), 0);
    assert_true(pg_wait_blocked(monitor, PQbackendPID(checker)));
    assert_int_equal(atomic_load(&r.done), 0);
    if (local_commits)
        commit(b);
    else
        rollback(b);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.state, local_commits ? DTX_MSG_COMMITTED : DTX_MSG_ROLLED_BACK);
    assert_int_equal(PQtransactionStatus(checker), PQTRANS_IDLE);
    if (!local_commits) {
        /* The answer holds: a retried local transaction cannot mark. */
        begin(b);
        assert_int_equal(mark(b, gid), DTX_ECONFLICT);
        rollback(b);
    }
    PQfinish(monitor);
    PQfinish(checker);
}

static void test_pg_msg_race_commit(void **state)
{
    pg_msg_race(ready(state), 1);
}

static void test_pg_msg_race_rollback(void **state)
{
    pg_msg_race(ready(state), 0);
}

/* A check that may not wait (lock_timeout) fails with DTX_EDB and leaves no
 * answer behind; the next one answers from the outcome. */
static void test_pg_msg_check_lock_timeout(void **state)
{
    struct backend *b = ready(state);
    PGconn *checker = pg_connect();
    enum dtx_msg_state st = (enum dtx_msg_state) - 1;
    char gid[128];
    new_gid(gid, sizeof(gid), "race-timeout");
    pg_ok(checker, "SET lock_timeout = '100ms'");
    begin(b);
    assert_int_equal(mark(b, gid), 0);
    assert_int_equal(dtx_msg_check_pg(checker, gid, &st), DTX_EDB);
    assert_int_equal(PQtransactionStatus(checker), PQTRANS_IDLE);
    commit(b);
    assert_int_equal(dtx_msg_check_pg(checker, gid, &st), 0);
    assert_int_equal(st, DTX_MSG_COMMITTED);
    PQfinish(checker);
}

/* The first op is in an open transaction; a second delivery on another
 * connection waits, then sees the first one's outcome. */
static void pg_barrier_race(struct backend *b, const char *first,
                            enum dtx_barrier_result first_want, const char *second,
                            int local_commits, enum dtx_barrier_result want)
{
    PGconn *other = pg_connect();
    PGconn *monitor = pg_connect();
    struct racer r = {.kind = RACE_BARRIER, .pg = other, .op = second};
    enum dtx_barrier_result res;
    char gid[128];
    pthread_t t;

    new_gid(gid, sizeof(gid), "barrier-race");
    r.gid = gid;
    begin(b);
    assert_int_equal(barrier(b, gid, "01", first, &res), 0);
    assert_int_equal(res, first_want);
    assert_int_equal(pthread_create(&t, NULL, racer_run, &r), 0);
    assert_true(pg_wait_blocked(monitor, PQbackendPID(other)));
    if (local_commits)
        commit(b);
    else
        rollback(b);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.result, want);
    PQfinish(monitor);
    PQfinish(other);
}

static void test_pg_barrier_races(void **state)
{
    struct backend *b = ready(state);
    const enum dtx_barrier_result apply = DTX_BARRIER_APPLY, null_undo = DTX_BARRIER_NULL_UNDO;
    pg_barrier_race(b, "action", apply, "action", 1, DTX_BARRIER_DUPLICATE);
    pg_barrier_race(b, "action", apply, "action", 0, DTX_BARRIER_APPLY);
    pg_barrier_race(b, "action", apply, "compensate", 1, DTX_BARRIER_APPLY);
    pg_barrier_race(b, "action", apply, "compensate", 0, DTX_BARRIER_NULL_UNDO);
    pg_barrier_race(b, "cancel", null_undo, "try", 1, DTX_BARRIER_LATE);
    pg_barrier_race(b, "cancel", null_undo, "try", 0, DTX_BARRIER_APPLY);
    pg_barrier_race(b, "confirm", apply, "confirm", 1, DTX_BARRIER_DUPLICATE);
}

/* An aborted caller transaction: DTX_EDB, not a decision. */
static void test_pg_failed_transaction(void **state)
{
    struct backend *b = ready(state);
    enum dtx_barrier_result r;
    char gid[128];
    new_gid(gid, sizeof(gid), "aborted");
    begin(b);
    PQclear(PQexec(b->pg, "SELECT 1/0"));
    assert_int_equal(PQtransactionStatus(b->pg), PQTRANS_INERROR);
    assert_int_equal(barrier(b, gid, "01", "action", &r), DTX_EDB);
    assert_int_equal(mark(b, gid), DTX_EDB);
    rollback(b);
}

/* ---- races: SQLite --------------------------------------------------------- */

/* SQLite has one writer: a check on another connection waits (busy timeout)
 * while the local transaction that marked is open, then answers from its
 * outcome; without enough busy timeout it fails with DTX_EDB. */
static void sqlite_msg_race(struct backend *b, int local_commits)
{
    sqlite3 *checker = NULL;
    struct racer r = {.kind = RACE_CHECK, .state = (enum dtx_msg_state) - 1};
    enum dtx_msg_state st;
    char gid[128];
    pthread_t t;

    assert_int_equal(sqlite3_open(b->path, &checker), SQLITE_OK);
    new_gid(gid, sizeof(gid), local_commits ? "race-commit" : "race-rollback");
    r.gid = gid;
    r.db = checker;
    begin(b);
    assert_int_equal(mark(b, gid), 0);

    sqlite3_busy_timeout(checker, 50);
    assert_int_equal(dtx_msg_check_sqlite(checker, gid, &st), DTX_EDB);
    assert_int_equal(sqlite3_errcode(checker), SQLITE_BUSY);
    assert_true(sqlite3_get_autocommit(checker));

    sqlite3_busy_timeout(checker, 10000);
    assert_int_equal(pthread_create(&t, NULL, racer_run, &r), 0);
    usleep(300000);
    assert_int_equal(atomic_load(&r.done), 0);
    if (local_commits)
        commit(b);
    else
        rollback(b);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.state, local_commits ? DTX_MSG_COMMITTED : DTX_MSG_ROLLED_BACK);
    if (!local_commits) {
        begin(b);
        assert_int_equal(mark(b, gid), DTX_ECONFLICT);
        rollback(b);
    }
    sqlite3_close(checker);
}

static void test_sqlite_msg_race(void **state)
{
    struct backend *b = ready(state);
    sqlite_msg_race(b, 1);
    sqlite_msg_race(b, 0);
}

/* ---- no database --------------------------------------------------------- */

static void test_strerror(void **state)
{
    (void)state;
    static const int codes[] = {DTX_OK,   DTX_EINVAL,    DTX_ENOMEM,    DTX_EIO, DTX_EPROTO,
                                DTX_EAPI, DTX_ENOTFOUND, DTX_ECONFLICT, DTX_EDB, DTX_ETIMEDOUT};
    size_t n = sizeof(codes) / sizeof(codes[0]);
    for (size_t i = 0; i < n; i++) {
        const char *m = dtx_strerror(codes[i]);
        assert_non_null(m);
        assert_string_not_equal(m, "unknown error");
        for (size_t j = 0; j < i; j++)
            assert_string_not_equal(m, dtx_strerror(codes[j]));
    }
    assert_string_equal(dtx_strerror(-1000), "unknown error");
    assert_string_equal(dtx_strerror(7), "unknown error");
}

static void test_http_status(void **state)
{
    (void)state;
    assert_int_equal(dtx_barrier_http_status(DTX_BARRIER_APPLY), 200);
    assert_int_equal(dtx_barrier_http_status(DTX_BARRIER_DUPLICATE), 200);
    assert_int_equal(dtx_barrier_http_status(DTX_BARRIER_NULL_UNDO), 200);
    assert_int_equal(dtx_barrier_http_status(DTX_BARRIER_LATE), 409);
    assert_int_equal(dtx_barrier_http_status((enum dtx_barrier_result)42), 500);
    assert_int_equal(dtx_msg_http_status(DTX_MSG_COMMITTED), 200);
    assert_int_equal(dtx_msg_http_status(DTX_MSG_ROLLED_BACK), 409);
    assert_int_equal(dtx_msg_http_status((enum dtx_msg_state)42), 500);
}

static void test_null_handles(void **state)
{
    (void)state;
    enum dtx_barrier_result r;
    enum dtx_msg_state st;
    assert_int_equal(dtx_barrier_pg_init(NULL), DTX_EINVAL);
    assert_int_equal(dtx_barrier_sqlite_init(NULL), DTX_EINVAL);
    assert_int_equal(dtx_barrier_pg(NULL, "g", "01", "action", &r), DTX_EINVAL);
    assert_int_equal(dtx_barrier_sqlite(NULL, "g", "01", "action", &r), DTX_EINVAL);
    assert_int_equal(dtx_msg_mark_pg(NULL, "g"), DTX_EINVAL);
    assert_int_equal(dtx_msg_mark_sqlite(NULL, "g"), DTX_EINVAL);
    assert_int_equal(dtx_msg_check_pg(NULL, "g", &st), DTX_EINVAL);
    assert_int_equal(dtx_msg_check_sqlite(NULL, "g", &st), DTX_EINVAL);
}

/* A connection that is not connected is a database error, not a decision. */
static void test_pg_bad_connection(void **state)
{
    (void)state;
    enum dtx_barrier_result r;
    enum dtx_msg_state st;
    PGconn *conn = PQconnectdb("host=/nonexistent-dtx-dir port=1 connect_timeout=1");
    assert_int_not_equal(PQstatus(conn), CONNECTION_OK);
    assert_int_equal(dtx_barrier_pg_init(conn), DTX_EDB);
    assert_int_equal(dtx_barrier_pg(conn, "g", "01", "action", &r), DTX_EDB);
    assert_int_equal(dtx_msg_mark_pg(conn, "g"), DTX_EDB);
    assert_int_equal(dtx_msg_check_pg(conn, "g", &st), DTX_EDB);
    PQfinish(conn);
}

#define BOTH_BACKENDS                                                                              \
    cmocka_unit_test(test_pairs_in_order), cmocka_unit_test(test_duplicates),                      \
        cmocka_unit_test(test_undo_before_forward), cmocka_unit_test(test_undo_twice),             \
        cmocka_unit_test(test_caller_rollback), cmocka_unit_test(test_msg_committed),              \
        cmocka_unit_test(test_msg_check_first), cmocka_unit_test(test_sql_injection),              \
        cmocka_unit_test(test_bad_arguments)

int main(void)
{
    const struct CMUnitTest common[] = {
        cmocka_unit_test(test_strerror),
        cmocka_unit_test(test_http_status),
        cmocka_unit_test(test_null_handles),
        cmocka_unit_test(test_pg_bad_connection),
    };
    const struct CMUnitTest on_sqlite[] = {
        BOTH_BACKENDS,
        cmocka_unit_test(test_sqlite_msg_race),
    };
    const struct CMUnitTest on_pg[] = {
        BOTH_BACKENDS,
        cmocka_unit_test(test_pg_msg_race_commit),
        cmocka_unit_test(test_pg_msg_race_rollback),
        cmocka_unit_test(test_pg_msg_check_lock_timeout),
        cmocka_unit_test(test_pg_barrier_races),
        cmocka_unit_test(test_pg_failed_transaction),
    };
    int failed = 0;

    snprintf(run_prefix, sizeof(run_prefix), "t%ld-%ld", (long)getpid(), (long)time(NULL));
    failed += cmocka_run_group_tests_name("libdtx errors and statuses", common, NULL, NULL);
    failed +=
        cmocka_run_group_tests_name("barrier on SQLite", on_sqlite, sqlite_setup, sqlite_teardown);
    failed += cmocka_run_group_tests_name("barrier on PostgreSQL", on_pg, pg_setup, pg_teardown);
    return failed != 0;
}
