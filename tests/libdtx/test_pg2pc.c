/*
 * test_pg2pc.c - the participant side of 2pc on PostgreSQL resources:
 * dtx_pg_prepare on a real PostgreSQL (the database DTX_TEST_PG names; those
 * tests are skipped when it is unset, and fail when DTX_REQUIRE_PG=1 says
 * they must run), and the argument checks of dtx_pg_prepare and
 * dtx_register_2pc_resource, which need no server (the request that
 * register sends is checked in test_client.c against its fake server).
 *
 * Each test uses gids of its own, prefixed with the process id and the
 * time, and finishes every transaction it prepared, so runs never see each
 * other's prepared transactions in a shared database.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "dtx.h"

static PGconn *pg;   /* NULL: PostgreSQL not configured, its tests skip */
static PGconn *peer; /* a second session, to look from outside */
static char run_prefix[64];
static unsigned gid_seq;

static void new_gid(char *out, size_t cap, const char *what)
{
    snprintf(out, cap, "%s-%u-%s", run_prefix, gid_seq++, what);
}

static PGconn *need_pg(void)
{
    if (pg == NULL)
        skip();
    return pg;
}

static void pg_ok(PGconn *conn, const char *sql)
{
    PGresult *r = PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(conn));
    PQclear(r);
}

/* The number of rows of a one-parameter query. */
static int pg_count(PGconn *conn, const char *sql, const char *arg)
{
    PGresult *r = PQexecParams(conn, sql, 1, NULL, &arg, NULL, NULL, 0);
    int n;
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(conn));
    n = PQntuples(r);
    PQclear(r);
    return n;
}

static int prepared(const char *name)
{
    return pg_count(peer,
                    "SELECT 1 FROM pg_prepared_xacts WHERE gid = $1 AND database = "
                    "current_database()",
                    name);
}

static int rows_of(const char *gid)
{
    return pg_count(peer, "SELECT 1 FROM dtx_pg2pc_test WHERE gid = $1", gid);
}

/* COMMIT PREPARED or ROLLBACK PREPARED 'name' (a name of our alphabet). */
static void finish(const char *verb, const char *name)
{
    char sql[512];
    snprintf(sql, sizeof sql, "%s PREPARED '%s'", verb, name);
    pg_ok(peer, sql);
}

/* ---- argument checks (no server) ---------------------------------------- */

static void prepare_rejects_bad_arguments(void **state)
{
    char long_gid[DTX_GID_MAX + 2], long_branch[DTX_BRANCH_MAX + 2];

    (void)state;
    memset(long_gid, 'g', sizeof long_gid - 1);
    long_gid[sizeof long_gid - 1] = '\0';
    memset(long_branch, 'b', sizeof long_branch - 1);
    long_branch[sizeof long_branch - 1] = '\0';
    assert_int_equal(dtx_pg_prepare(NULL, "g", "b"), DTX_EINVAL);
    assert_int_equal(dtx_pg_prepare(NULL, NULL, "b"), DTX_EINVAL);
    assert_int_equal(dtx_pg_prepare(NULL, "g", NULL), DTX_EINVAL);
    assert_int_equal(dtx_pg_prepare(NULL, long_gid, "b"), DTX_EINVAL);
    assert_int_equal(dtx_pg_prepare(NULL, "g", long_branch), DTX_EINVAL);
    /* dtxd splits dtx:<gid>:<branch> at the last ':' */
    assert_int_equal(dtx_pg_prepare(NULL, "g", "a:b"), DTX_EINVAL);
    int prepared_flag = 7;
    assert_int_equal(dtx_pg_prepare_register(NULL, NULL, "g", "b", "r", NULL, &prepared_flag),
                     DTX_EINVAL);
    assert_int_equal(prepared_flag, 0);
}

static void register_resource_rejects_bad_arguments(void **state)
{
    char long_res[DTX_RESOURCE_MAX + 2], long_gid[DTX_GID_MAX + 2], max_res[DTX_RESOURCE_MAX + 1];
    struct dtx_client *c = NULL;

    (void)state;
    memset(long_res, 'r', sizeof long_res - 1);
    long_res[sizeof long_res - 1] = '\0';
    memset(max_res, 'r', sizeof max_res - 1);
    max_res[sizeof max_res - 1] = '\0';
    memset(long_gid, 'g', sizeof long_gid - 1);
    long_gid[sizeof long_gid - 1] = '\0';
    /* port 9 (discard) on localhost: nothing listens, so a call that gets
     * past the checks is DTX_EIO */
    assert_int_equal(dtx_client_new("http://127.0.0.1:9", &c), DTX_OK);
    dtx_client_set_timeout(c, 2000);

    assert_int_equal(dtx_register_2pc_resource(NULL, "g", "b", "bank_a", NULL), DTX_EINVAL);
    assert_int_equal(dtx_register_2pc_resource(c, "g", NULL, "bank_a", NULL), DTX_EINVAL);
    assert_non_null(strstr(dtx_client_last_error(c)->message, "branch"));
    assert_int_equal(dtx_register_2pc_resource(c, NULL, "b", "bank_a", NULL), DTX_EINVAL);
    assert_int_equal(dtx_register_2pc_resource(c, "g/1", "b", "bank_a", NULL), DTX_EINVAL);
    assert_int_equal(dtx_register_2pc_resource(c, long_gid, "b", "bank_a", NULL), DTX_EINVAL);
    assert_int_equal(dtx_register_2pc_resource(c, "g", "b'", "bank_a", NULL), DTX_EINVAL);
    assert_int_equal(dtx_register_2pc_resource(c, "g", "b", NULL, NULL), DTX_EINVAL);
    assert_int_equal(dtx_register_2pc_resource(c, "g", "b", "", NULL), DTX_EINVAL);
    assert_non_null(strstr(dtx_client_last_error(c)->message, "resource"));
    /* ':' is in the id alphabet, not in a resource name's */
    assert_int_equal(dtx_register_2pc_resource(c, "g", "b", "bank:a", NULL), DTX_EINVAL);
    assert_int_equal(dtx_register_2pc_resource(c, "g", "b", "bank a", NULL), DTX_EINVAL);
    assert_int_equal(dtx_register_2pc_resource(c, "g", "b", long_res, NULL), DTX_EINVAL);
    assert_int_equal(dtx_register_2pc_resource(c, "g", "b", "bank_a", "{x"), DTX_EINVAL);
    assert_non_null(strstr(dtx_client_last_error(c)->message, "payload"));
    assert_int_equal(dtx_client_last_error(c)->http_status, 0);

    /* the longest names pass the checks and reach the (absent) coordinator */
    assert_int_equal(dtx_register_2pc_resource(c, "g", "b", max_res, "{\"a\":1}"), DTX_EIO);
    assert_int_equal(dtx_register_2pc_resource(c, "g", "b", "Bank-A.1_x", NULL), DTX_EIO);
    dtx_client_free(c);
}

/* ---- PostgreSQL ------------------------------------------------------------ */

/* The prepared transaction carries the name dtxd looks for, survives its
 * session, holds its work invisible until COMMIT PREPARED, and leaves the
 * connection free. */
/* prepare + register: the prepare happens, a failed registration says so
 * and leaves the prepared transaction (here: to us; in production, to
 * dtxd's recovery scan). */
static void prepare_register_reports_what_happened(void **state)
{
    PGconn *conn = need_pg();
    struct dtx_client *c = NULL;
    char gid[96], name[160];
    int was_prepared = 0;

    (void)state;
    new_gid(gid, sizeof gid, "pr");
    snprintf(name, sizeof name, "dtx:%s:debit", gid);
    assert_int_equal(dtx_client_new("http://127.0.0.1:9", &c), DTX_OK); /* nothing listens */
    dtx_client_set_timeout(c, 2000);
    pg_ok(conn, "BEGIN");
    assert_int_equal(dtx_pg_prepare_register(c, conn, gid, "debit", "bank_a", NULL, &was_prepared),
                     DTX_EIO);
    assert_int_equal(was_prepared, 1);
    assert_int_equal(prepared(name), 1);
    finish("ROLLBACK", name);
    /* a prepare that fails registers nothing */
    assert_int_equal(dtx_pg_prepare_register(c, conn, gid, "debit", "bank_a", NULL, &was_prepared),
                     DTX_EINVAL); /* no transaction open */
    assert_int_equal(was_prepared, 0);
    dtx_client_free(c);
}

static void prepare_names_the_prepared_transaction(void **state)
{
    PGconn *conn = need_pg();
    char gid[96], name[160];
    const char *arg;

    (void)state;
    new_gid(gid, sizeof gid, "ok");
    snprintf(name, sizeof name, "dtx:%s:debit", gid);
    pg_ok(conn, "BEGIN");
    arg = gid;
    PGresult *r = PQexecParams(conn, "INSERT INTO dtx_pg2pc_test (gid) VALUES ($1)", 1, NULL, &arg,
                               NULL, NULL, 0);
    assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    assert_int_equal(dtx_pg_prepare(conn, gid, "debit"), DTX_OK);
    assert_int_equal(PQtransactionStatus(conn), PQTRANS_IDLE);
    assert_int_equal(prepared(name), 1);
    assert_int_equal(rows_of(gid), 0); /* not committed yet */
    /* the session can go on with other work */
    pg_ok(conn, "SELECT 1");
    finish("COMMIT", name);
    assert_int_equal(prepared(name), 0);
    assert_int_equal(rows_of(gid), 1);
}

/* gid of DTX_GID_MAX and branch of DTX_BRANCH_MAX bytes fit PostgreSQL's
 * limit on a transaction identifier, with every character of the alphabet. */
static void prepare_takes_the_longest_names(void **state)
{
    PGconn *conn = need_pg();
    char gid[DTX_GID_MAX + 1], branch[DTX_BRANCH_MAX + 1], name[256];
    int n;

    (void)state;
    n = snprintf(gid, sizeof gid, "%s-%u-AZaz09._:-", run_prefix, gid_seq++);
    memset(gid + n, 'x', sizeof gid - 1 - (size_t)n);
    gid[DTX_GID_MAX] = '\0';
    memset(branch, 'b', DTX_BRANCH_MAX);
    memcpy(branch, "br.A_9-", 7); /* no ":" in a branch: see dtx_pg_prepare */
    branch[DTX_BRANCH_MAX] = '\0';
    snprintf(name, sizeof name, "dtx:%s:%s", gid, branch);
    assert_int_equal(strlen(name), 197);
    pg_ok(conn, "BEGIN");
    assert_int_equal(dtx_pg_prepare(conn, gid, branch), DTX_OK);
    assert_int_equal(prepared(name), 1);
    finish("ROLLBACK", name);
    assert_int_equal(prepared(name), 0);
}

/* Bad names are refused before any SQL: the caller's transaction is still
 * open and healthy, nothing is prepared. */
static void prepare_refuses_bad_names_before_sql(void **state)
{
    PGconn *conn = need_pg();
    char long_gid[DTX_GID_MAX + 2], long_branch[DTX_BRANCH_MAX + 2];
    static const char *const bad_gids[] = {"", "a'b", "a b", "a/b", "x');COMMIT;--", "é"};

    (void)state;
    memset(long_gid, 'g', sizeof long_gid - 1);
    long_gid[sizeof long_gid - 1] = '\0';
    memset(long_branch, 'b', sizeof long_branch - 1);
    long_branch[sizeof long_branch - 1] = '\0';
    pg_ok(conn, "BEGIN");
    for (size_t i = 0; i < sizeof bad_gids / sizeof bad_gids[0]; i++) {
        assert_int_equal(dtx_pg_prepare(conn, bad_gids[i], "b"), DTX_EINVAL);
        assert_int_equal(dtx_pg_prepare(conn, "g", bad_gids[i]), DTX_EINVAL);
    }
    assert_int_equal(dtx_pg_prepare(conn, long_gid, "b"), DTX_EINVAL);
    assert_int_equal(dtx_pg_prepare(conn, "g", long_branch), DTX_EINVAL);
    assert_int_equal(PQtransactionStatus(conn), PQTRANS_INTRANS);
    assert_int_equal(pg_count(peer,
                              "SELECT 1 FROM pg_prepared_xacts WHERE gid LIKE $1 || '%' AND "
                              "database = current_database()",
                              "dtx:g"),
                     0);
    pg_ok(conn, "ROLLBACK");
}

/* Outside a transaction there is nothing to prepare. */
static void prepare_needs_an_open_transaction(void **state)
{
    PGconn *conn = need_pg();
    char gid[96];

    (void)state;
    new_gid(gid, sizeof gid, "idle");
    assert_int_equal(PQtransactionStatus(conn), PQTRANS_IDLE);
    assert_int_equal(dtx_pg_prepare(conn, gid, "b"), DTX_EINVAL);
}

/* A transaction whose work failed is not prepared (PostgreSQL would turn
 * the PREPARE into a ROLLBACK that looks like success). */
static void prepare_refuses_a_failed_transaction(void **state)
{
    PGconn *conn = need_pg();
    char gid[96], name[160];
    PGresult *r;

    (void)state;
    new_gid(gid, sizeof gid, "failed");
    snprintf(name, sizeof name, "dtx:%s:b", gid);
    pg_ok(conn, "BEGIN");
    r = PQexec(conn, "SELECT 1/0");
    assert_int_equal(PQresultStatus(r), PGRES_FATAL_ERROR);
    PQclear(r);
    assert_int_equal(dtx_pg_prepare(conn, gid, "b"), DTX_EDB);
    assert_int_equal(prepared(name), 0);
    pg_ok(conn, "ROLLBACK");
}

/* A name already prepared: DTX_EDB with PostgreSQL's message, the second
 * transaction is rolled back and the first one stays. */
static void prepare_twice_is_edb(void **state)
{
    PGconn *conn = need_pg();
    char gid[96], name[160];
    const char *arg;
    PGresult *r;

    (void)state;
    new_gid(gid, sizeof gid, "twice");
    snprintf(name, sizeof name, "dtx:%s:b", gid);
    pg_ok(conn, "BEGIN");
    assert_int_equal(dtx_pg_prepare(conn, gid, "b"), DTX_OK);
    pg_ok(conn, "BEGIN");
    arg = gid;
    r = PQexecParams(conn, "INSERT INTO dtx_pg2pc_test (gid) VALUES ($1)", 1, NULL, &arg, NULL,
                     NULL, 0);
    PQclear(r);
    assert_int_equal(dtx_pg_prepare(conn, gid, "b"), DTX_EDB);
    assert_non_null(strstr(PQerrorMessage(conn), "already in use"));
    assert_int_equal(PQtransactionStatus(conn), PQTRANS_IDLE);
    assert_int_equal(prepared(name), 1);
    finish("COMMIT", name);
    assert_int_equal(rows_of(gid), 0); /* the second transaction's insert is gone */
}

/* ---- main ---------------------------------------------------------------- */

static int pg_setup(void **state)
{
    const char *conninfo = getenv("DTX_TEST_PG");
    const char *require = getenv("DTX_REQUIRE_PG");

    (void)state;
    snprintf(run_prefix, sizeof run_prefix, "p%ld-%ld", (long)getpid(), (long)time(NULL));
    if (conninfo == NULL || conninfo[0] == '\0') {
        if (require != NULL && strcmp(require, "1") == 0) {
            fprintf(stderr, "test_pg2pc: DTX_REQUIRE_PG=1 but DTX_TEST_PG is not set: start a "
                            "cluster (scripts/pg.sh start DIR PORT) and set DTX_TEST_PG to its "
                            "conninfo\n");
            return -1;
        }
        fprintf(stderr, "test_pg2pc: DTX_TEST_PG is not set: PostgreSQL tests skipped\n");
        return 0;
    }
    pg = PQconnectdb(conninfo);
    peer = PQconnectdb(conninfo);
    if (PQstatus(pg) != CONNECTION_OK || PQstatus(peer) != CONNECTION_OK) {
        fprintf(stderr, "test_pg2pc: connecting to DTX_TEST_PG=%s: %s", conninfo,
                PQerrorMessage(PQstatus(pg) != CONNECTION_OK ? pg : peer));
        return -1;
    }
    PGresult *r = PQexec(pg, "CREATE TABLE IF NOT EXISTS dtx_pg2pc_test (gid text NOT NULL)");
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    if (!ok) {
        fprintf(stderr, "test_pg2pc: %s", PQerrorMessage(pg));
        return -1;
    }
    return 0;
}

static int pg_teardown(void **state)
{
    (void)state;
    PQfinish(pg);
    PQfinish(peer);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(prepare_rejects_bad_arguments),
        cmocka_unit_test(register_resource_rejects_bad_arguments),
        cmocka_unit_test(prepare_names_the_prepared_transaction),
        cmocka_unit_test(prepare_register_reports_what_happened),
        cmocka_unit_test(prepare_takes_the_longest_names),
        cmocka_unit_test(prepare_refuses_bad_names_before_sql),
        cmocka_unit_test(prepare_needs_an_open_transaction),
        cmocka_unit_test(prepare_refuses_a_failed_transaction),
        cmocka_unit_test(prepare_twice_is_edb),
    };
    return cmocka_run_group_tests(tests, pg_setup, pg_teardown);
}
