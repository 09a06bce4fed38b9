/*
 * barrier_pg.c - the barrier and the msg mark/check on PostgreSQL (libpq).
 *
 * The decisions are in barrier.c; this file gives them "insert unless the
 * key exists" (INSERT ... ON CONFLICT DO NOTHING) and "read a key's reason",
 * both through PQexecParams with the strings as parameters, never spliced
 * into SQL text. The table lives in the connection's search_path:
 *
 *   dtx_barrier(gid text, branch text, op text, reason text,
 *               created_at timestamptz default now(), primary key (gid, branch, op))
 *
 * Concurrency. An INSERT ... ON CONFLICT DO NOTHING that meets a key another
 * transaction inserted and has not committed waits for that transaction to
 * end; if it commits, nothing is inserted (and the next statement, under
 * READ COMMITTED, sees the row), if it rolls back the insert goes ahead.
 * So two deliveries of the same op run one after the other and the second
 * sees the first's outcome. Under REPEATABLE READ or SERIALIZABLE a key
 * committed by a transaction the snapshot cannot see makes the insert fail
 * with a serialization error instead: DTX_EDB, roll back and retry (the
 * retry then sees the row).
 *
 * The msg check runs in a transaction of its own at READ COMMITTED, whatever
 * the connection's default, so that after waiting it reads the row the
 * winner committed. Its race with a local transaction that has inserted its
 * mark and not yet committed: the check's insert waits on that transaction
 * (the check's caller blocks; lock_timeout or statement_timeout, if the
 * connection sets one, bounds the wait and ends it with DTX_EDB). When the
 * local transaction commits, the check finds the mark and answers
 * COMMITTED; when it rolls back, the check inserts its "rollback" row and
 * answers ROLLED_BACK. The other way round, a mark inserted while a check's
 * row exists (committed, or not yet: then it waits for the check, which is
 * short) inserts nothing and fails with DTX_ECONFLICT.
 */
#include <string.h>

#include <libpq-fe.h>

#include "barrier_int.h"

static const char create_sql[] = "CREATE TABLE IF NOT EXISTS dtx_barrier ("
                                 " gid text NOT NULL,"
                                 " branch text NOT NULL,"
                                 " op text NOT NULL,"
                                 " reason text NOT NULL,"
                                 " created_at timestamptz NOT NULL DEFAULT now(),"
                                 " PRIMARY KEY (gid, branch, op))";

/*
 * dtx_barrier_pg_init creates the table in a transaction of its own that
 * first takes this advisory lock, so that processes starting together create
 * it one after the other: a plain CREATE TABLE IF NOT EXISTS racing another
 * fails ("type already exists"), and one that finds the table makes the
 * server send a notice that libpq's default notice processor prints on the
 * caller's stderr. The lock's key is the pair of ints ('dtx\0', 'barr').
 */
static const char lock_sql[] = "SELECT pg_advisory_xact_lock(1685354496, 1650553458)";

static const char exists_sql[] = "SELECT to_regclass('dtx_barrier') IS NOT NULL";

static const char insert_sql[] = "INSERT INTO dtx_barrier (gid, branch, op, reason)"
                                 " VALUES ($1, $2, $3, $4)"
                                 " ON CONFLICT (gid, branch, op) DO NOTHING";

static const char reason_sql[] = "SELECT reason FROM dtx_barrier"
                                 " WHERE gid = $1 AND branch = $2 AND op = $3";

/* Whether conn can be used with its transaction in state want (PQTRANS_IDLE
 * or PQTRANS_INTRANS): 0; DTX_EDB if the connection is broken or, when a
 * transaction is wanted, the caller's transaction has already failed;
 * DTX_EINVAL for the wrong state. */
static int pg_usable(PGconn *conn, PGTransactionStatusType want)
{
    PGTransactionStatusType st;
    if (PQstatus(conn) != CONNECTION_OK)
        return DTX_EDB;
    st = PQtransactionStatus(conn);
    if (st == want)
        return 0;
    if (st == PQTRANS_INERROR && want == PQTRANS_INTRANS)
        return DTX_EDB;
    return DTX_EINVAL;
}

/* Run a statement with no parameters and no rows; 0 or DTX_EDB. */
static int pg_exec(PGconn *conn, const char *sql)
{
    PGresult *res = PQexec(conn, sql);
    int rc = PQresultStatus(res) == PGRES_COMMAND_OK ? 0 : DTX_EDB;
    PQclear(res);
    return rc;
}

static int pg_insert(void *db, const char *gid, const char *branch, const char *op,
                     const char *reason, int *inserted)
{
    const char *params[4] = {gid, branch, op, reason};
    PGresult *res = PQexecParams(db, insert_sql, 4, NULL, params, NULL, NULL, 0);
    int rc = 0;
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        rc = DTX_EDB;
    else
        *inserted = strcmp(PQcmdTuples(res), "1") == 0;
    PQclear(res);
    return rc;
}

static int pg_reason(void *db, const char *gid, const char *branch, const char *op,
                     char reason[BARRIER_REASON_CAP], int *found)
{
    const char *params[3] = {gid, branch, op};
    PGresult *res = PQexecParams(db, reason_sql, 3, NULL, params, NULL, NULL, 0);
    int rc = 0;
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        rc = DTX_EDB;
    } else if (PQntuples(res) == 0) {
        *found = 0;
    } else {
        const char *v = PQgetvalue(res, 0, 0);
        size_t n = strnlen(v, BARRIER_REASON_CAP - 1);
        memcpy(reason, v, n);
        reason[n] = '\0';
        *found = 1;
    }
    PQclear(res);
    return rc;
}

static int pg_begin(void *db)
{
    return pg_exec(db, "BEGIN ISOLATION LEVEL READ COMMITTED");
}

/* COMMIT of a transaction that failed answers "ROLLBACK" with no error; only
 * a real "COMMIT" counts. */
static int pg_commit(void *db)
{
    PGresult *res = PQexec(db, "COMMIT");
    int rc = 0;
    if (PQresultStatus(res) != PGRES_COMMAND_OK || strcmp(PQcmdStatus(res), "COMMIT") != 0)
        rc = DTX_EDB;
    PQclear(res);
    return rc;
}

/* Only when a transaction is open: a ROLLBACK without one (after a failed
 * COMMIT, which ends it) makes the server send a warning that libpq's default
 * notice processor prints. */
static void pg_rollback(void *db)
{
    if (PQtransactionStatus(db) != PQTRANS_IDLE)
        PQclear(PQexec(db, "ROLLBACK"));
}

static const struct barrier_store pg_store = {
    .insert = pg_insert,
    .reason = pg_reason,
    .begin = pg_begin,
    .commit = pg_commit,
    .rollback = pg_rollback,
};

/* Run a statement that returns one row with one boolean; OUT: *value. */
static int pg_bool(PGconn *conn, const char *sql, int *value /* OUT */)
{
    PGresult *res = PQexec(conn, sql);
    int rc = 0;
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1 || PQnfields(res) != 1)
        rc = DTX_EDB;
    else
        *value = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);
    return rc;
}

int dtx_barrier_pg_init(PGconn *conn)
{
    PGresult *res;
    int exists = 0;
    int rc;
    if (conn == NULL)
        return DTX_EINVAL;
    rc = pg_usable(conn, PQTRANS_IDLE);
    if (rc != 0)
        return rc;
    rc = pg_begin(conn);
    if (rc != 0)
        return rc;
    res = PQexec(conn, lock_sql);
    rc = PQresultStatus(res) == PGRES_TUPLES_OK ? 0 : DTX_EDB;
    PQclear(res);
    if (rc != 0)
        goto fail;
    rc = pg_bool(conn, exists_sql, &exists);
    if (rc != 0)
        goto fail;
    if (!exists) {
        rc = pg_exec(conn, create_sql);
        if (rc != 0)
            goto fail;
    }
    rc = pg_commit(conn);
    if (rc != 0)
        goto fail;
    return 0;

fail:
    pg_rollback(conn);
    return rc;
}

int dtx_barrier_pg(PGconn *conn, const char *gid, const char *branch, const char *op,
                   enum dtx_barrier_result *out)
{
    int rc;
    if (conn == NULL || !barrier_arg_ok(gid) || !barrier_arg_ok(branch) || !barrier_arg_ok(op) ||
        out == NULL)
        return DTX_EINVAL;
    rc = pg_usable(conn, PQTRANS_INTRANS);
    if (rc != 0)
        return rc;
    return barrier_run(&pg_store, conn, gid, branch, op, out);
}

int dtx_msg_mark_pg(PGconn *conn, const char *gid)
{
    int rc;
    if (conn == NULL || !barrier_arg_ok(gid))
        return DTX_EINVAL;
    rc = pg_usable(conn, PQTRANS_INTRANS);
    if (rc != 0)
        return rc;
    return barrier_msg_mark(&pg_store, conn, gid);
}

int dtx_msg_check_pg(PGconn *conn, const char *gid, enum dtx_msg_state *out)
{
    int rc;
    if (conn == NULL || !barrier_arg_ok(gid) || out == NULL)
        return DTX_EINVAL;
    rc = pg_usable(conn, PQTRANS_IDLE);
    if (rc != 0)
        return rc;
    return barrier_msg_check(&pg_store, conn, gid, out);
}
