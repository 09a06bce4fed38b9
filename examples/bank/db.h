/*
 * db.h - the bank's database layer: one small interface over libpq
 * (PostgreSQL) and SQLite, and a pool of connections shared by the request
 * threads.
 *
 * SQL is written once for both: parameters are $1..$n (SQLite binds them by
 * name), and only syntax both accept is used (ON CONFLICT, RETURNING).
 * Integers are bound as integers on SQLite (a text "30" compared with a
 * number is never smaller on SQLite) and sent as text to PostgreSQL, which
 * types them from the statement.
 */
#ifndef BANK_DB_H
#define BANK_DB_H

#include <libpq-fe.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What a statement or transaction step ends in. Callers may add their own
 * codes above DB_OK or below DB_BUSY. */
enum {
    DB_OK = 0,
    DB_ERR = -1,  /* the database failed (message in the connection's err) */
    DB_BUSY = -2, /* SQLite stayed locked past the busy timeout (10 s) */
};

#define DB_TEXT_MAX 128 /* bytes of one text column copied out by db_run */
#define DB_ARGS_MAX 8   /* parameters of one statement at most */

struct db_conn {
    PGconn *pg; /* exactly one of pg and lite is set */
    sqlite3 *lite;
    char err[256];    /* the last error, for the answer and the log */
    char sqlstate[6]; /* PostgreSQL's SQLSTATE of the last failed statement, "" when none */
    struct db_conn *next;
};

struct db_pool {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct db_conn *idle;
    int open, max;
    bool is_pg;
    const char *target; /* conninfo or file path, borrowed */
};

/* A statement parameter: text (s != NULL), or a 64-bit integer. */
struct db_arg {
    const char *s;
    int64_t i;
};
#define DB_S(x) ((struct db_arg){.s = (x)})
#define DB_I(x) ((struct db_arg){.s = NULL, .i = (x)})

/* true when target is a libpq conninfo or URI (starts with "postgres", or
 * has "dbname=" or "host="); otherwise it is a SQLite file path. */
bool db_is_pg(const char *target);

/* Set up a pool of at most max connections to target (borrowed: it must
 * outlive the pool). No connection is made yet. */
void db_pool_init(struct db_pool *p, const char *target, int max);

/* Close every idle connection (call once no request runs any more). */
void db_pool_close(struct db_pool *p);

/*
 * Borrow a connection: an idle one, a new one while the pool is below its
 * size, else wait for one. PostgreSQL connections get lock_timeout 5 s and
 * statement_timeout 30 s; SQLite ones a 10 s busy timeout. Returns NULL
 * (message in err) when a new connection cannot be opened.
 */
struct db_conn *db_pool_get(struct db_pool *p, char *err, size_t errlen);

/* Give a connection back; a broken PostgreSQL connection is closed. */
void db_pool_put(struct db_pool *p, struct db_conn *c);

/*
 * Run one statement with parameters $1..$nargs. fn (may be NULL) is called
 * for each row with the row's columns as text (NULL columns as ""); a
 * non-zero return stops the rows and is returned. OUT: *rows (may be NULL):
 * the rows returned, or for a statement without result columns, the rows it
 * changed. Returns DB_OK, DB_BUSY or DB_ERR (message in c->err).
 */
typedef int (*db_row_fn)(void *ud, int ncol, const char *const *vals);
int db_query(struct db_conn *c, const char *sql, const struct db_arg *args, int nargs, db_row_fn fn,
             void *ud, int *rows);

/* db_query, keeping the first row's first ncols columns. OUT: cols[i]
 * (left untouched when no row came back), *rows as for db_query. */
int db_run(struct db_conn *c, const char *sql, const struct db_arg *args, int nargs, int *rows,
           char (*cols)[DB_TEXT_MAX], int ncols);

/* A statement without parameters or rows (DDL, SET, COMMIT ...). */
int db_exec(struct db_conn *c, const char *sql);

/* BEGIN (on SQLite BEGIN IMMEDIATE: the write lock is taken at once, so two
 * writers never deadlock upgrading their locks), COMMIT, and ROLLBACK (which
 * keeps c->err as it was: the error that caused it). */
int db_begin(struct db_conn *c);
int db_commit(struct db_conn *c);
void db_rollback(struct db_conn *c);

/*
 * One connection of its own, outside the pool, for a thread that keeps it
 * (the AMQP participant loop, amqp.c). PostgreSQL: the pool's lock_timeout
 * and statement_timeout are given as the connection's startup options, so
 * that they survive a PQreset (a conninfo's own `options` wins over them);
 * SQLite: the same busy timeout as the pool's. Returns NULL (message in
 * err) when it cannot be opened; close it with db_conn_close.
 */
struct db_conn *db_conn_open(const char *target, char *err, size_t errlen);
void db_conn_close(struct db_conn *c);

/* Set c->err (printf-style). */
void db_set_error(struct db_conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
