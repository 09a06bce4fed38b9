/*
 * barrier_sqlite.c - the barrier and the msg mark/check on SQLite.
 *
 * The decisions are in barrier.c; this file gives them "insert unless the
 * key exists" (INSERT OR IGNORE, then sqlite3_changes) and "read a key's
 * reason", as prepared statements with bound parameters. The table:
 *
 *   dtx_barrier(gid TEXT, branch TEXT, op TEXT, reason TEXT,
 *               created_at TEXT default now as RFC 3339 UTC,
 *               primary key (gid, branch, op)) WITHOUT ROWID
 *
 * Transactions. The barrier and the mark run inside the caller's own
 * transaction; BEGIN IMMEDIATE is the one to use: it takes the write lock
 * at once, so everything the transaction then reads, the barrier rows
 * included, stays true until COMMIT. With a plain (deferred) BEGIN that has
 * already read, the barrier's insert may find another connection writing
 * and fail with SQLITE_BUSY (or SQLITE_BUSY_SNAPSHOT in WAL mode) at once,
 * whatever the busy timeout: DTX_EDB, roll back and retry.
 *
 * SQLite has one writer at a time, so a msg check (BEGIN IMMEDIATE of its
 * own) cannot run while a local transaction that has written is open: it
 * waits for it as long as the connection's busy timeout allows
 * (sqlite3_busy_timeout), then answers from the committed outcome: the mark
 * is there (COMMITTED) or not (ROLLED_BACK, and the "rollback" row blocks a
 * later mark). When the busy timeout passes first it fails with DTX_EDB
 * (SQLITE_BUSY): the handler should answer a transient error so that dtxd
 * asks again.
 */
#include <string.h>

#include <sqlite3.h>

#include "barrier_int.h"

static const char create_sql[] =
    "CREATE TABLE IF NOT EXISTS dtx_barrier ("
    " gid TEXT NOT NULL,"
    " branch TEXT NOT NULL,"
    " op TEXT NOT NULL,"
    " reason TEXT NOT NULL,"
    " created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),"
    " PRIMARY KEY (gid, branch, op)) WITHOUT ROWID";

static const char insert_sql[] = "INSERT OR IGNORE INTO dtx_barrier (gid, branch, op, reason)"
                                 " VALUES (?1, ?2, ?3, ?4)";

static const char reason_sql[] = "SELECT reason FROM dtx_barrier"
                                 " WHERE gid = ?1 AND branch = ?2 AND op = ?3";

static int sqlite_error(int rc)
{
    return rc == SQLITE_NOMEM ? DTX_ENOMEM : DTX_EDB;
}

/* Prepare sql and bind the n strings of params to ?1..?n. On error the
 * statement is finalized and *stmt is NULL. */
static int sqlite_prepare(sqlite3 *db, const char *sql, const char *const *params, int n,
                          sqlite3_stmt **stmt /* OUT */)
{
    int rc = sqlite3_prepare_v2(db, sql, -1, stmt, NULL);
    if (rc != SQLITE_OK)
        goto fail;
    for (int i = 0; i < n; i++) {
        rc = sqlite3_bind_text(*stmt, i + 1, params[i], -1, SQLITE_STATIC);
        if (rc != SQLITE_OK)
            goto fail;
    }
    return 0;

fail:
    sqlite3_finalize(*stmt);
    *stmt = NULL;
    return sqlite_error(rc);
}

static int sqlite_insert(void *db, const char *gid, const char *branch, const char *op,
                         const char *reason, int *inserted)
{
    const char *params[4] = {gid, branch, op, reason};
    sqlite3_stmt *stmt;
    int rc = sqlite_prepare(db, insert_sql, params, 4, &stmt);
    if (rc != 0)
        return rc;
    rc = sqlite3_step(stmt);
    if (rc == SQLITE_DONE) {
        *inserted = sqlite3_changes(db) > 0;
        rc = 0;
    } else {
        rc = sqlite_error(rc);
    }
    sqlite3_finalize(stmt);
    return rc;
}

static int sqlite_reason(void *db, const char *gid, const char *branch, const char *op,
                         char reason[BARRIER_REASON_CAP], int *found)
{
    const char *params[3] = {gid, branch, op};
    sqlite3_stmt *stmt;
    int rc = sqlite_prepare(db, reason_sql, params, 3, &stmt);
    if (rc != 0)
        return rc;
    rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
        const unsigned char *v = sqlite3_column_text(stmt, 0);
        size_t n = v == NULL ? 0 : strnlen((const char *)v, BARRIER_REASON_CAP - 1);
        if (v == NULL && sqlite3_errcode(db) == SQLITE_NOMEM) {
            rc = DTX_ENOMEM;
        } else {
            memcpy(reason, v == NULL ? "" : (const char *)v, n);
            reason[n] = '\0';
            *found = 1;
            rc = 0;
        }
    } else if (rc == SQLITE_DONE) {
        *found = 0;
        rc = 0;
    } else {
        rc = sqlite_error(rc);
    }
    sqlite3_finalize(stmt);
    return rc;
}

static int sqlite_exec(sqlite3 *db, const char *sql)
{
    int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? 0 : sqlite_error(rc);
}

static int sqlite_begin(void *db)
{
    return sqlite_exec(db, "BEGIN IMMEDIATE");
}

static int sqlite_commit(void *db)
{
    return sqlite_exec(db, "COMMIT");
}

/* A failed COMMIT (SQLITE_BUSY) leaves the transaction open: end it. */
static void sqlite_rollback(void *db)
{
    if (!sqlite3_get_autocommit(db))
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
}

static const struct barrier_store sqlite_store = {
    .insert = sqlite_insert,
    .reason = sqlite_reason,
    .begin = sqlite_begin,
    .commit = sqlite_commit,
    .rollback = sqlite_rollback,
};

int dtx_barrier_sqlite_init(sqlite3 *db)
{
    if (db == NULL || !sqlite3_get_autocommit(db))
        return DTX_EINVAL;
    return sqlite_exec(db, create_sql);
}

int dtx_barrier_sqlite(sqlite3 *db, const char *gid, const char *branch, const char *op,
                       enum dtx_barrier_result *out)
{
    if (db == NULL || !barrier_arg_ok(gid) || !barrier_arg_ok(branch) || !barrier_arg_ok(op) ||
        out == NULL || sqlite3_get_autocommit(db))
        return DTX_EINVAL;
    return barrier_run(&sqlite_store, db, gid, branch, op, out);
}

int dtx_msg_mark_sqlite(sqlite3 *db, const char *gid)
{
    if (db == NULL || !barrier_arg_ok(gid) || sqlite3_get_autocommit(db))
        return DTX_EINVAL;
    return barrier_msg_mark(&sqlite_store, db, gid);
}

int dtx_msg_check_sqlite(sqlite3 *db, const char *gid, enum dtx_msg_state *out)
{
    if (db == NULL || !barrier_arg_ok(gid) || out == NULL || !sqlite3_get_autocommit(db))
        return DTX_EINVAL;
    return barrier_msg_check(&sqlite_store, db, gid, out);
}
