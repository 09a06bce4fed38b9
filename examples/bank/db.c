/*
 * db.c - the bank's database layer over libpq and SQLite (see db.h).
 *
 * One connection serves one request at a time; the pool hands them out to
 * the request threads (SQLite handles are opened with NOMUTEX for that
 * reason: never shared). Statements are prepared per call: the bank's are
 * few and short, and this keeps the layer stateless.
 */
#include "db.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool db_is_pg(const char *target)
{
    return strncmp(target, "postgres", 8) == 0 || strstr(target, "dbname=") != NULL ||
           strstr(target, "host=") != NULL;
}

void db_set_error(struct db_conn *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, sizeof c->err, fmt, ap);
    va_end(ap);
    size_t n = strlen(c->err);
    while (n > 0 && (c->err[n - 1] == '\n' || c->err[n - 1] == ' '))
        c->err[--n] = '\0';
}

static int query_pg(struct db_conn *c, const char *sql, const struct db_arg *args, int nargs,
                    db_row_fn fn, void *ud, int *rows)
{
    char num[DB_ARGS_MAX][24];
    const char *vals[DB_ARGS_MAX];
    for (int i = 0; i < nargs; i++) {
        if (args[i].s != NULL) {
            vals[i] = args[i].s;
        } else {
            snprintf(num[i], sizeof num[i], "%lld", (long long)args[i].i);
            vals[i] = num[i];
        }
    }
    PGresult *res = PQexecParams(c->pg, sql, nargs, NULL, vals, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        db_set_error(c, "postgres: %s",
                     res != NULL ? PQresultErrorMessage(res) : PQerrorMessage(c->pg));
        const char *state = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
        snprintf(c->sqlstate, sizeof c->sqlstate, "%s", state != NULL ? state : "");
        PQclear(res);
        return DB_ERR;
    }
    int rc = DB_OK, ncol = PQnfields(res);
    if (ncol == 0) {
        *rows = atoi(PQcmdTuples(res));
    } else {
        *rows = PQntuples(res);
        const char *row[DB_ARGS_MAX * 2];
        if (ncol > (int)(sizeof row / sizeof row[0]))
            ncol = (int)(sizeof row / sizeof row[0]);
        for (int r = 0; fn != NULL && rc == DB_OK && r < *rows; r++) {
            for (int j = 0; j < ncol; j++)
                row[j] = PQgetvalue(res, r, j);
            rc = fn(ud, ncol, row);
        }
    }
    PQclear(res);
    return rc;
}

static int query_sqlite(struct db_conn *c, const char *sql, const struct db_arg *args, int nargs,
                        db_row_fn fn, void *ud, int *rows)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(c->lite, sql, -1, &st, NULL);
    if (rc != SQLITE_OK)
        goto fail;
    for (int i = 0; i < nargs; i++) {
        char name[16];
        snprintf(name, sizeof name, "$%d", i + 1);
        int idx = sqlite3_bind_parameter_index(st, name);
        if (idx == 0)
            continue;
        rc = args[i].s != NULL ? sqlite3_bind_text(st, idx, args[i].s, -1, SQLITE_TRANSIENT)
                               : sqlite3_bind_int64(st, idx, args[i].i);
        if (rc != SQLITE_OK)
            goto fail;
    }
    int ncol = sqlite3_column_count(st);
    const char *row[DB_ARGS_MAX * 2];
    if (ncol > (int)(sizeof row / sizeof row[0]))
        ncol = (int)(sizeof row / sizeof row[0]);
    int stop = DB_OK;
    while (stop == DB_OK) {
        rc = sqlite3_step(st);
        if (rc != SQLITE_ROW)
            break;
        (*rows)++;
        for (int j = 0; j < ncol; j++) {
            const unsigned char *t = sqlite3_column_text(st, j);
            row[j] = t != NULL ? (const char *)t : "";
        }
        if (fn != NULL)
            stop = fn(ud, ncol, row);
    }
    if (stop != DB_OK) {
        sqlite3_finalize(st);
        return stop;
    }
    if (rc != SQLITE_DONE)
        goto fail;
    if (ncol == 0)
        *rows = sqlite3_changes(c->lite);
    sqlite3_finalize(st);
    return DB_OK;
fail:
    db_set_error(c, "sqlite: %s", sqlite3_errmsg(c->lite));
    sqlite3_finalize(st);
    return rc == SQLITE_BUSY || rc == SQLITE_LOCKED ? DB_BUSY : DB_ERR;
}

int db_query(struct db_conn *c, const char *sql, const struct db_arg *args, int nargs, db_row_fn fn,
             void *ud, int *rows)
{
    int dummy;
    if (rows == NULL)
        rows = &dummy;
    *rows = 0;
    if (nargs < 0 || nargs > DB_ARGS_MAX) {
        db_set_error(c, "db_query: %d parameters", nargs);
        return DB_ERR;
    }
    return c->pg != NULL ? query_pg(c, sql, args, nargs, fn, ud, rows)
                         : query_sqlite(c, sql, args, nargs, fn, ud, rows);
}

struct first_row {
    char (*cols)[DB_TEXT_MAX];
    int ncols;
    bool seen;
};

static int keep_first(void *ud, int ncol, const char *const *vals)
{
    struct first_row *f = ud;
    for (int i = 0; !f->seen && i < f->ncols && i < ncol; i++)
        snprintf(f->cols[i], DB_TEXT_MAX, "%s", vals[i]);
    f->seen = true;
    return DB_OK;
}

int db_run(struct db_conn *c, const char *sql, const struct db_arg *args, int nargs, int *rows,
           char (*cols)[DB_TEXT_MAX], int ncols)
{
    struct first_row f = {.cols = cols, .ncols = cols != NULL ? ncols : 0};
    return db_query(c, sql, args, nargs, keep_first, &f, rows);
}

int db_exec(struct db_conn *c, const char *sql)
{
    return db_query(c, sql, NULL, 0, NULL, NULL, NULL);
}

int db_begin(struct db_conn *c)
{
    return db_exec(c, c->pg != NULL ? "BEGIN" : "BEGIN IMMEDIATE");
}

int db_commit(struct db_conn *c)
{
    return db_exec(c, "COMMIT");
}

void db_rollback(struct db_conn *c)
{
    char keep[sizeof c->err];
    memcpy(keep, c->err, sizeof keep);
    db_exec(c, "ROLLBACK");
    memcpy(c->err, keep, sizeof keep);
}

static void conn_close(struct db_conn *c)
{
    if (c == NULL)
        return;
    if (c->pg != NULL)
        PQfinish(c->pg);
    if (c->lite != NULL)
        sqlite3_close(c->lite);
    free(c);
}

/* Drop PostgreSQL's notices ("relation ... already exists, skipping"). */
static void ignore_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

/* Open one connection. Returns NULL on failure (message in err). */
static struct db_conn *conn_open(const struct db_pool *p, char *err, size_t errlen)
{
    struct db_conn *c = calloc(1, sizeof *c);
    if (c == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (p->is_pg) {
        c->pg = PQconnectdb(p->target);
        if (PQstatus(c->pg) != CONNECTION_OK) {
            snprintf(err, errlen, "postgres: %s", PQerrorMessage(c->pg));
            goto fail;
        }
        PQsetNoticeProcessor(c->pg, ignore_notice, NULL);
        /* A row lock held elsewhere must not stall a branch call forever:
         * give up, answer 500, let dtxd retry. */
        if (db_exec(c, "SET lock_timeout = '5s'") != DB_OK ||
            db_exec(c, "SET statement_timeout = '30s'") != DB_OK) {
            snprintf(err, errlen, "%s", c->err);
            goto fail;
        }
    } else {
        int rc =
            sqlite3_open_v2(p->target, &c->lite,
                            SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
        if (rc != SQLITE_OK) {
            snprintf(err, errlen, "sqlite: %s: %s", p->target,
                     c->lite ? sqlite3_errmsg(c->lite) : sqlite3_errstr(rc));
            goto fail;
        }
        sqlite3_busy_timeout(c->lite, 10000);
    }
    return c;
fail:
    conn_close(c);
    return NULL;
}

struct db_conn *db_conn_open(const char *target, char *err, size_t errlen)
{
    if (!db_is_pg(target)) {
        struct db_pool one = {.is_pg = false, .target = target};
        return conn_open(&one, err, errlen);
    }
    struct db_conn *c = calloc(1, sizeof *c);
    if (c == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    /* options first: a later keyword wins, so a conninfo's own options stay */
    const char *const keys[] = {"options", "dbname", NULL};
    const char *const vals[] = {"-c lock_timeout=5s -c statement_timeout=30s", target, NULL};
    c->pg = PQconnectdbParams(keys, vals, 1);
    if (PQstatus(c->pg) != CONNECTION_OK) {
        snprintf(err, errlen, "postgres: %s", PQerrorMessage(c->pg));
        conn_close(c);
        return NULL;
    }
    PQsetNoticeProcessor(c->pg, ignore_notice, NULL);
    return c;
}

void db_conn_close(struct db_conn *c)
{
    conn_close(c);
}

void db_pool_init(struct db_pool *p, const char *target, int max)
{
    memset(p, 0, sizeof *p);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->max = max > 0 ? max : 1;
    p->is_pg = db_is_pg(target);
    p->target = target;
}

void db_pool_close(struct db_pool *p)
{
    pthread_mutex_lock(&p->mu);
    while (p->idle != NULL) {
        struct db_conn *c = p->idle;
        p->idle = c->next;
        p->open--;
        conn_close(c);
    }
    pthread_mutex_unlock(&p->mu);
}

struct db_conn *db_pool_get(struct db_pool *p, char *err, size_t errlen)
{
    pthread_mutex_lock(&p->mu);
    while (p->idle == NULL && p->open >= p->max)
        pthread_cond_wait(&p->cv, &p->mu);
    struct db_conn *c = p->idle;
    if (c != NULL) {
        p->idle = c->next;
        pthread_mutex_unlock(&p->mu);
        c->err[0] = '\0';
        c->sqlstate[0] = '\0';
        return c;
    }
    p->open++;
    pthread_mutex_unlock(&p->mu);
    c = conn_open(p, err, errlen);
    if (c == NULL) {
        pthread_mutex_lock(&p->mu);
        p->open--;
        pthread_cond_signal(&p->cv);
        pthread_mutex_unlock(&p->mu);
    }
    return c;
}

void db_pool_put(struct db_pool *p, struct db_conn *c)
{
    bool broken = c->pg != NULL && PQstatus(c->pg) != CONNECTION_OK;
    pthread_mutex_lock(&p->mu);
    if (broken) {
        p->open--;
    } else {
        c->next = p->idle;
        p->idle = c;
    }
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
    if (broken)
        conn_close(c);
}
