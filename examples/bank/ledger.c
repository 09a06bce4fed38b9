/*
 * ledger.c - the bank's money (see ledger.h for the tables).
 *
 * Every change is guarded in its own UPDATE (... WHERE balance - frozen >=
 * amount) rather than read, checked and written: two transfers racing for
 * the same account cannot both pass the check, on PostgreSQL (row lock) or
 * SQLite (one writer). A local transaction touches one account row at most,
 * so two of them never deadlock.
 *
 * tcc and 2pc share one reservation design. The forward operation (try,
 * prepare) freezes the payer's amount, or checks the payee's account, and
 * records a hold row; confirm/commit apply the hold row, found by gid and
 * branch, and delete it; cancel/rollback delete it and unfreeze. The amount
 * comes from the hold, never from the request that confirms it.
 */
#include "ledger.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *SCHEMA[] = {
    "CREATE TABLE IF NOT EXISTS accounts ("
    " id text PRIMARY KEY,"
    " balance bigint NOT NULL CHECK (balance >= 0),"
    " frozen bigint NOT NULL DEFAULT 0 CHECK (frozen >= 0),"
    " CHECK (balance - frozen >= 0))",
    "CREATE TABLE IF NOT EXISTS holds ("
    " gid text NOT NULL,"
    " branch text NOT NULL,"
    " kind text NOT NULL,"
    " account text NOT NULL,"
    " amount bigint NOT NULL CHECK (amount > 0),"
    " PRIMARY KEY (gid, branch))",
};

int ledger_init(struct db_pool *p, char *err, size_t errlen)
{
    struct db_conn *c = db_pool_get(p, err, errlen);
    if (c == NULL)
        return DB_ERR;
    int rc = DB_OK;
    if (c->lite != NULL)
        rc = db_exec(c, "PRAGMA journal_mode=WAL");
    for (size_t i = 0; rc == DB_OK && i < sizeof SCHEMA / sizeof SCHEMA[0]; i++)
        rc = db_exec(c, SCHEMA[i]);
    if (rc != DB_OK) {
        snprintf(err, errlen, "%s", c->err);
    } else {
        int drc = c->pg != NULL ? dtx_barrier_pg_init(c->pg) : dtx_barrier_sqlite_init(c->lite);
        if (drc != 0) {
            snprintf(err, errlen, "dtx barrier init: %s", dtx_strerror(drc));
            rc = DB_ERR;
        }
    }
    db_pool_put(p, c);
    return rc;
}

/* ---- the changes ---------------------------------------------------------- */

static int inconsistent(struct db_conn *c, const char *what)
{
    db_set_error(c, "%s", what);
    return LEDGER_INCONSISTENT;
}

/* After a guarded update changed no row: refuse with the reason. */
static int short_or_missing(struct db_conn *c, const char *account, const char **why)
{
    int rows;
    int rc = db_run(c, "SELECT 1 FROM accounts WHERE id = $1", (struct db_arg[]){DB_S(account)}, 1,
                    &rows, NULL, 0);
    if (rc != DB_OK)
        return rc;
    *why = rows == 0 ? "no such account" : "insufficient funds";
    return LEDGER_REFUSED;
}

/* balance += delta on one account; OUT: *rows, the rows changed. With
 * guard, only while balance - frozen stays >= 0. */
static int add_balance(struct db_conn *c, const char *account, int64_t delta, bool guard, int *rows)
{
    const char *sql = guard ? "UPDATE accounts SET balance = balance + $2"
                              " WHERE id = $1 AND balance - frozen + $2 >= 0"
                            : "UPDATE accounts SET balance = balance + $2 WHERE id = $1";
    return db_run(c, sql, (struct db_arg[]){DB_S(account), DB_I(delta)}, 2, rows, NULL, 0);
}

int ledger_debit(struct db_conn *c, const struct ledger_call *k, const char **why)
{
    int rows;
    int rc = add_balance(c, k->account, -k->amount, true, &rows);
    if (rc != DB_OK)
        return rc;
    return rows == 1 ? DB_OK : short_or_missing(c, k->account, why);
}

int ledger_debit_undo(struct db_conn *c, const struct ledger_call *k, const char **why)
{
    (void)why;
    int rows;
    int rc = add_balance(c, k->account, k->amount, false, &rows);
    if (rc != DB_OK)
        return rc;
    return rows == 1 ? DB_OK : inconsistent(c, "debit-undo: the account is gone");
}

int ledger_credit(struct db_conn *c, const struct ledger_call *k, const char **why)
{
    int rows;
    int rc = add_balance(c, k->account, k->amount, false, &rows);
    if (rc != DB_OK)
        return rc;
    if (rows == 1)
        return DB_OK;
    *why = "no such account";
    return LEDGER_REFUSED;
}

int ledger_credit_undo(struct db_conn *c, const struct ledger_call *k, const char **why)
{
    (void)why;
    int rows;
    int rc = add_balance(c, k->account, -k->amount, true, &rows);
    if (rc != DB_OK)
        return rc;
    return rows == 1 ? DB_OK : inconsistent(c, "credit-undo: the credited funds are not available");
}

static int hold_insert(struct db_conn *c, const struct ledger_call *k, const char *side)
{
    char kind[32];
    snprintf(kind, sizeof kind, "%s-%s", k->kind ? k->kind : "hold", side);
    return db_run(c,
                  "INSERT INTO holds (gid, branch, kind, account, amount)"
                  " VALUES ($1, $2, $3, $4, $5)",
                  (struct db_arg[]){DB_S(k->gid), DB_S(k->branch), DB_S(kind), DB_S(k->account),
                                    DB_I(k->amount)},
                  5, NULL, NULL, 0);
}

int ledger_hold_debit(struct db_conn *c, const struct ledger_call *k, const char **why)
{
    int rows;
    int rc = db_run(c,
                    "UPDATE accounts SET frozen = frozen + $2"
                    " WHERE id = $1 AND balance - frozen >= $2",
                    (struct db_arg[]){DB_S(k->account), DB_I(k->amount)}, 2, &rows, NULL, 0);
    if (rc != DB_OK)
        return rc;
    if (rows != 1)
        return short_or_missing(c, k->account, why);
    return hold_insert(c, k, "debit");
}

int ledger_hold_credit(struct db_conn *c, const struct ledger_call *k, const char **why)
{
    int rows;
    int rc = db_run(c, "SELECT 1 FROM accounts WHERE id = $1", (struct db_arg[]){DB_S(k->account)},
                    1, &rows, NULL, 0);
    if (rc != DB_OK)
        return rc;
    if (rows != 1) {
        *why = "no such account";
        return LEDGER_REFUSED;
    }
    return hold_insert(c, k, "credit");
}

/* Delete the hold of k's gid/branch. OUT: *found, and if found the hold's
 * account (DB_TEXT_MAX bytes) and *amount. */
static int hold_take(struct db_conn *c, const struct ledger_call *k, bool *found, char *account,
                     int64_t *amount)
{
    char cols[2][DB_TEXT_MAX];
    int rows;
    int rc = db_run(c, "DELETE FROM holds WHERE gid = $1 AND branch = $2 RETURNING account, amount",
                    (struct db_arg[]){DB_S(k->gid), DB_S(k->branch)}, 2, &rows, cols, 2);
    if (rc != DB_OK)
        return rc;
    *found = rows == 1;
    if (*found) {
        snprintf(account, DB_TEXT_MAX, "%s", cols[0]);
        *amount = strtoll(cols[1], NULL, 10);
    }
    return DB_OK;
}

/* Apply (confirm/commit) or release (cancel/rollback) k's hold: on the payer
 * balance and frozen change by -amount (apply) or frozen alone (release); on
 * the payee balance grows by amount (apply) or nothing changes (release). */
static int settle(struct db_conn *c, const struct ledger_call *k, bool debit, bool apply)
{
    char account[DB_TEXT_MAX];
    int64_t amount = 0;
    bool found = false;
    int rows, rc = hold_take(c, k, &found, account, &amount);
    if (rc != DB_OK)
        return rc;
    if (!found)
        /* Release without a hold: the forward operation refused and left
         * nothing (the barrier saw it applied only if it committed). */
        return apply ? inconsistent(c, "confirm/commit: no hold for this gid/branch") : DB_OK;
    const char *sql;
    if (debit && apply)
        sql = "UPDATE accounts SET balance = balance - $2, frozen = frozen - $2 WHERE id = $1";
    else if (debit)
        sql = "UPDATE accounts SET frozen = frozen - $2 WHERE id = $1";
    else if (apply)
        sql = "UPDATE accounts SET balance = balance + $2 WHERE id = $1";
    else
        return DB_OK;
    rc = db_run(c, sql, (struct db_arg[]){DB_S(account), DB_I(amount)}, 2, &rows, NULL, 0);
    if (rc != DB_OK)
        return rc;
    return rows == 1 ? DB_OK : inconsistent(c, "settle: the account of the hold is gone");
}

int ledger_apply_debit(struct db_conn *c, const struct ledger_call *k, const char **why)
{
    (void)why;
    return settle(c, k, true, true);
}

int ledger_apply_credit(struct db_conn *c, const struct ledger_call *k, const char **why)
{
    (void)why;
    return settle(c, k, false, true);
}

int ledger_release_debit(struct db_conn *c, const struct ledger_call *k, const char **why)
{
    (void)why;
    return settle(c, k, true, false);
}

int ledger_release_credit(struct db_conn *c, const struct ledger_call *k, const char **why)
{
    (void)why;
    return settle(c, k, false, false);
}

/* ---- local transactions --------------------------------------------------- */

static void outcome_finish(struct ledger_outcome *out, struct db_conn *c, int rc, const char *why)
{
    out->rc = rc;
    if (rc == LEDGER_REFUSED)
        snprintf(out->why, sizeof out->why, "%s", why ? why : "refused");
    else if (rc != DB_OK)
        snprintf(out->why, sizeof out->why, "%s", c->err);
}

void ledger_branch(struct db_pool *p, const char *op, ledger_change_fn change,
                   const struct ledger_call *k, struct ledger_outcome *out)
{
    memset(out, 0, sizeof *out);
    struct db_conn *c = db_pool_get(p, out->why, sizeof out->why);
    if (c == NULL) {
        out->rc = DB_ERR;
        return;
    }
    const char *why = NULL;
    enum dtx_barrier_result br = DTX_BARRIER_APPLY;
    int rc = db_begin(c);
    if (rc == DB_OK) {
        int drc = c->pg != NULL ? dtx_barrier_pg(c->pg, k->gid, k->branch, op, &br)
                                : dtx_barrier_sqlite(c->lite, k->gid, k->branch, op, &br);
        if (drc != 0) {
            db_set_error(c, "barrier: %s: %s", dtx_strerror(drc),
                         c->pg != NULL ? PQerrorMessage(c->pg) : sqlite3_errmsg(c->lite));
            rc = DB_ERR;
        }
    }
    if (rc == DB_OK && br == DTX_BARRIER_APPLY)
        rc = change(c, k, &why);
    if (rc == DB_OK)
        rc = db_commit(c);
    else
        db_rollback(c);
    out->barrier = br;
    outcome_finish(out, c, rc, why);
    db_pool_put(p, c);
}

void ledger_msg_start(struct db_pool *p, const struct ledger_call *k, struct ledger_outcome *out)
{
    memset(out, 0, sizeof *out);
    struct db_conn *c = db_pool_get(p, out->why, sizeof out->why);
    if (c == NULL) {
        out->rc = DB_ERR;
        return;
    }
    const char *why = NULL;
    int rc = db_begin(c);
    if (rc == DB_OK)
        rc = ledger_debit(c, k, &why);
    if (rc == DB_OK) {
        int drc =
            c->pg != NULL ? dtx_msg_mark_pg(c->pg, k->gid) : dtx_msg_mark_sqlite(c->lite, k->gid);
        if (drc != 0) {
            db_set_error(c, "msg mark: %s", dtx_strerror(drc));
            rc = drc == DTX_ECONFLICT ? LEDGER_ROLLED_BACK : DB_ERR;
        }
    }
    if (rc == DB_OK)
        rc = db_commit(c);
    else
        db_rollback(c);
    outcome_finish(out, c, rc, why);
    db_pool_put(p, c);
}

int ledger_msg_check(struct db_pool *p, const char *gid, enum dtx_msg_state *state, char *err,
                     size_t errlen)
{
    struct db_conn *c = db_pool_get(p, err, errlen);
    if (c == NULL)
        return DB_ERR;
    int drc = c->pg != NULL ? dtx_msg_check_pg(c->pg, gid, state)
                            : dtx_msg_check_sqlite(c->lite, gid, state);
    if (drc != 0)
        snprintf(err, errlen, "msg check: %s", dtx_strerror(drc));
    db_pool_put(p, c);
    return drc == 0 ? DB_OK : DB_ERR;
}

/* ---- xa: 2pc on this database as a dtxd resource ----------------------------- */

/* "dtx:<gid>:<branch>" into name (at least 200 bytes). */
static void xa_name(char *name, size_t cap, const char *gid, const char *branch)
{
    snprintf(name, cap, "%s%s:%s", DTX_PG_XACT_PREFIX, gid, branch);
}

void ledger_xa_prepare(struct db_pool *p, ledger_change_fn change, const struct ledger_call *k,
                       struct ledger_outcome *out)
{
    memset(out, 0, sizeof *out);
    if (!p->is_pg) {
        out->rc = LEDGER_UNSUPPORTED;
        snprintf(out->why, sizeof out->why,
                 "xa needs PostgreSQL: SQLite has no PREPARE TRANSACTION");
        return;
    }
    struct db_conn *c = db_pool_get(p, out->why, sizeof out->why);
    if (c == NULL) {
        out->rc = DB_ERR;
        return;
    }
    const char *why = NULL;
    int rc = db_begin(c);
    if (rc == DB_OK)
        rc = db_exec(c, "SET LOCAL lock_timeout = '" XA_LOCK_TIMEOUT "'");
    if (rc == DB_OK)
        rc = change(c, k, &why);
    if (rc == DB_OK) {
        int drc = dtx_pg_prepare(c->pg, k->gid, k->branch);
        if (drc != 0) {
            db_set_error(c, "prepare: %s: %s", dtx_strerror(drc), PQerrorMessage(c->pg));
            rc = DB_ERR;
            db_rollback(c); /* harmless when the failed PREPARE already ended it */
        }
    } else {
        /* 55P03 lock_not_available: lock_timeout passed */
        if (rc == DB_ERR && strcmp(c->sqlstate, "55P03") == 0)
            rc = LEDGER_LOCK_TIMEOUT;
        db_rollback(c);
    }
    outcome_finish(out, c, rc, why);
    db_pool_put(p, c);
}

int ledger_xa_prepared(struct db_pool *p, const char *gid, const char *branch, bool *found,
                       char *err, size_t errlen)
{
    char name[256];
    int rows = 0;
    *found = false;
    if (!p->is_pg)
        return DB_OK;
    struct db_conn *c = db_pool_get(p, err, errlen);
    if (c == NULL)
        return DB_ERR;
    xa_name(name, sizeof name, gid, branch);
    int rc = db_run(c,
                    "SELECT 1 FROM pg_prepared_xacts WHERE gid = $1"
                    " AND database = current_database()",
                    (struct db_arg[]){DB_S(name)}, 1, &rows, NULL, 0);
    if (rc == DB_OK)
        *found = rows > 0;
    else
        snprintf(err, errlen, "%s", c->err);
    db_pool_put(p, c);
    return rc;
}

int ledger_xa_rollback(struct db_pool *p, const char *gid, const char *branch, char *err,
                       size_t errlen)
{
    char name[256], sql[320];
    bool found = false;
    int rc = ledger_xa_prepared(p, gid, branch, &found, err, errlen);
    if (rc != DB_OK || !found)
        return rc;
    struct db_conn *c = db_pool_get(p, err, errlen);
    if (c == NULL)
        return DB_ERR;
    /* No parameters in ROLLBACK PREPARED: quote the name as a literal. */
    xa_name(name, sizeof name, gid, branch);
    char *lit = PQescapeLiteral(c->pg, name, strlen(name));
    if (lit == NULL) {
        snprintf(err, errlen, "%s", PQerrorMessage(c->pg));
        rc = DB_ERR;
    } else {
        snprintf(sql, sizeof sql, "ROLLBACK PREPARED %s", lit);
        PQfreemem(lit);
        rc = db_exec(c, sql);
        /* 42704 undefined_object: dtxd finished it meanwhile */
        if (rc != DB_OK && strcmp(c->sqlstate, "42704") == 0)
            rc = DB_OK;
        if (rc != DB_OK)
            snprintf(err, errlen, "%s", c->err);
    }
    db_pool_put(p, c);
    return rc;
}

/* ---- accounts --------------------------------------------------------------- */

struct each_account {
    void (*fn)(void *ud, const struct ledger_account *a);
    void *ud;
};

static int on_account_row(void *ud, int ncol, const char *const *vals)
{
    struct each_account *e = ud;
    struct ledger_account a;
    if (ncol < 3)
        return DB_OK;
    snprintf(a.id, sizeof a.id, "%s", vals[0]);
    a.balance = strtoll(vals[1], NULL, 10);
    a.frozen = strtoll(vals[2], NULL, 10);
    e->fn(e->ud, &a);
    return DB_OK;
}

int ledger_accounts(struct db_pool *p, const char *id,
                    void (*fn)(void *ud, const struct ledger_account *a), void *ud, int *holds,
                    char *err, size_t errlen)
{
    struct db_conn *c = db_pool_get(p, err, errlen);
    if (c == NULL)
        return DB_ERR;
    struct each_account e = {fn, ud};
    int rc = id != NULL ? db_query(c, "SELECT id, balance, frozen FROM accounts WHERE id = $1",
                                   (struct db_arg[]){DB_S(id)}, 1, on_account_row, &e, NULL)
                        : db_query(c, "SELECT id, balance, frozen FROM accounts ORDER BY id", NULL,
                                   0, on_account_row, &e, NULL);
    if (rc == DB_OK && holds != NULL) {
        char cols[1][DB_TEXT_MAX] = {"0"};
        rc = db_run(c, "SELECT count(*) FROM holds", NULL, 0, NULL, cols, 1);
        *holds = atoi(cols[0]);
    }
    if (rc != DB_OK)
        snprintf(err, errlen, "%s", c->err);
    db_pool_put(p, c);
    return rc;
}

int ledger_set_account(struct db_pool *p, const char *id, int64_t balance,
                       struct ledger_account *out, char *err, size_t errlen)
{
    struct db_conn *c = db_pool_get(p, err, errlen);
    if (c == NULL)
        return DB_ERR;
    char cols[3][DB_TEXT_MAX];
    int rows;
    int rc = db_run(c,
                    "INSERT INTO accounts (id, balance) VALUES ($1, $2)"
                    " ON CONFLICT (id) DO UPDATE SET balance = excluded.balance"
                    " WHERE excluded.balance >= accounts.frozen"
                    " RETURNING id, balance, frozen",
                    (struct db_arg[]){DB_S(id), DB_I(balance)}, 2, &rows, cols, 3);
    if (rc == DB_OK && rows == 0) {
        snprintf(err, errlen, "the balance would be below the frozen amount");
        rc = LEDGER_REFUSED;
    } else if (rc == DB_OK) {
        snprintf(out->id, sizeof out->id, "%s", cols[0]);
        out->balance = strtoll(cols[1], NULL, 10);
        out->frozen = strtoll(cols[2], NULL, 10);
    } else {
        snprintf(err, errlen, "%s", c->err);
    }
    db_pool_put(p, c);
    return rc;
}
