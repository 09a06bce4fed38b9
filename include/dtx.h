/*
 * dtx.h - libdtx, the C library for services that use dtx: a client of the
 * dtxd HTTP API, and helpers for participant services (the barrier on
 * PostgreSQL and SQLite, and the `msg` check handler built on it).
 *
 * Every function returns 0 or a negative DTX_E* code; none aborts, exits or
 * prints. Objects are not shared between threads unless said otherwise.
 */
#ifndef DTX_H
#define DTX_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- errors ------------------------------------------------------------ */

#define DTX_OK        0
#define DTX_EINVAL    (-1) /* a bad argument (NULL, empty, malformed JSON payload) */
#define DTX_ENOMEM    (-2) /* out of memory */
#define DTX_EIO       (-3) /* the coordinator could not be reached or the connection failed */
#define DTX_EPROTO    (-4) /* the coordinator answered something that is not the API */
#define DTX_EAPI      (-5) /* the coordinator refused the request (4xx/5xx with an error body) */
#define DTX_ENOTFOUND (-6) /* no such transaction (404) */
#define DTX_ECONFLICT (-7) /* conflict (409: gid/branch exists, wrong state); msg mark refused */
#define DTX_EDB       (-8) /* the database failed (see the connection's own error message) */
#define DTX_ETIMEDOUT (-9) /* a wait bound passed before the transaction finished */

/* A short constant description of a DTX_E* code. */
const char *dtx_strerror(int code);

/* ---- participant side: the barrier ------------------------------------- */

/*
 * The barrier makes a participant's branch operations safe against the
 * disorder a coordinator cannot prevent: duplicate deliveries, a compensation
 * (compensate/cancel/rollback) that arrives before its forward operation
 * (action/try/prepare) or without it, and a forward operation that arrives
 * after its compensation. It runs inside the caller's own local transaction:
 *
 *   BEGIN;                                         -- SQLite: BEGIN IMMEDIATE
 *   dtx_barrier_pg(conn, gid, branch, op, &r);     -- records gid/branch/op
 *   if (r == DTX_BARRIER_APPLY) { ... the business change ... }
 *   COMMIT;                                        -- both or neither
 *   answer dtx_barrier_http_status(r)
 *
 * gid, branch and op come from the Dtx-Gid, Dtx-Branch and Dtx-Op headers
 * (any non-empty strings: they are passed to the database as parameters,
 * never spliced into SQL). The rows live in table dtx_barrier (created by
 * dtx_barrier_*_init), primary key (gid, branch, op); a rolled-back local
 * transaction takes its rows with it, so a retried delivery applies.
 *
 * Operations and their pairs (undo -> forward it cancels):
 *   compensate -> action, cancel -> try, rollback -> prepare.
 * confirm, commit and any other op are applied at most once.
 *
 * Concurrency: a second delivery of a key whose first one is still in an
 * open transaction waits for it and then sees its outcome (PostgreSQL); on
 * SQLite, whose writers take turns, it waits for the write lock within the
 * connection's busy timeout (sqlite3_busy_timeout). PostgreSQL transactions
 * should run at READ COMMITTED (the default): under REPEATABLE READ or
 * SERIALIZABLE a key committed concurrently is a serialization failure,
 * DTX_EDB (roll back and retry). On SQLite use BEGIN IMMEDIATE: after a
 * plain BEGIN that has read, a concurrent writer makes the barrier fail with
 * SQLITE_BUSY (DTX_EDB) without waiting.
 */
enum dtx_barrier_result {
    DTX_BARRIER_APPLY = 0, /* first arrival: do the work in this transaction */
    DTX_BARRIER_DUPLICATE, /* already applied (or skipped) before: do nothing, answer success */
    DTX_BARRIER_NULL_UNDO, /* an undo whose forward op never ran: do nothing, answer success;
                              the forward op is now blocked */
    DTX_BARRIER_LATE,      /* a forward op after its undo: do nothing, answer failure (409) */
};

/* The HTTP status a participant should answer for r: 200, or 409 for LATE
 * (500 for a value that is no result). */
int dtx_barrier_http_status(enum dtx_barrier_result r);

struct pg_conn; /* PGconn from libpq-fe.h */
struct sqlite3; /* sqlite3 from sqlite3.h */
typedef struct pg_conn PGconn;
typedef struct sqlite3 sqlite3;

/* Create table dtx_barrier if it does not exist (own statement, outside any
 * transaction of the caller; on PostgreSQL in the first schema of the
 * search_path, and an existing dtx_barrier anywhere on it is used).
 * Several processes may init at once: on PostgreSQL they take turns on an
 * advisory lock (pg_advisory_xact_lock(1685354496, 1650553458)).
 * Errors: DTX_EINVAL (NULL, or a transaction is open), DTX_EDB. */
int dtx_barrier_pg_init(PGconn *conn);
int dtx_barrier_sqlite_init(sqlite3 *db);

/* Record gid/branch/op inside the caller's open transaction and say what to
 * do. OUT: *out, set only on success.
 * Errors: DTX_EINVAL (a NULL or empty argument, or no transaction open: the
 * barrier only means something inside the transaction of the work),
 * DTX_EDB (the database failed, or on PostgreSQL the caller's transaction
 * had already failed; see PQerrorMessage / sqlite3_errmsg): the caller's
 * transaction is unusable, roll it back. DTX_ENOMEM (SQLite out of memory). */
int dtx_barrier_pg(PGconn *conn, const char *gid, const char *branch, const char *op,
                   enum dtx_barrier_result *out);
int dtx_barrier_sqlite(sqlite3 *db, const char *gid, const char *branch, const char *op,
                       enum dtx_barrier_result *out);

/*
 * Two-phase messages. The client's local transaction calls dtx_msg_mark_*
 * inside itself; when dtxd asks the `check` URL, the handler calls
 * dtx_msg_check_* in its own transaction (it BEGINs and COMMITs itself),
 * which answers for good: if the mark is there, the local transaction
 * committed; if not, it records a "rolled back" mark (row gid/"00"/"msg",
 * reason "rollback") so that a local transaction still running can no
 * longer commit its mark and the answer can never change.
 *
 *   BEGIN;                                          -- SQLite: BEGIN IMMEDIATE
 *   if (dtx_msg_mark_pg(conn, gid) != 0) ROLLBACK;  -- first: see below
 *   ... the local business change ...
 *   COMMIT; then dtx_submit()
 *
 * The race between a check and a local transaction that is still open:
 * - PostgreSQL: a check that comes after the local transaction inserted its
 *   mark waits for that transaction to end (its insert blocks on the
 *   uncommitted key), then answers COMMITTED if it committed, or
 *   ROLLED_BACK if it rolled back (the check's row is then the one that
 *   stays). The wait is bounded only by lock_timeout / statement_timeout if
 *   the check's connection sets them (then DTX_EDB, and nothing recorded).
 *   A check that comes first records "rolled back"; the local
 *   transaction's mark then (after waiting for the check's short
 *   transaction if needed) fails with DTX_ECONFLICT. Marking first in the
 *   local transaction makes a check wait for it instead of failing it.
 * - SQLite: one writer at a time. A check waits for the local transaction
 *   that has written within its connection's busy timeout and answers from
 *   its outcome; past the busy timeout it fails with DTX_EDB (SQLITE_BUSY).
 * On any error the check has recorded nothing: answer a transient status
 * (e.g. 503) so that dtxd asks again.
 */
#define DTX_MSG_BRANCH "00"
#define DTX_MSG_OP     "msg"
enum dtx_msg_state {
    DTX_MSG_COMMITTED = 0, /* answer 200: deliver the steps */
    DTX_MSG_ROLLED_BACK,   /* answer 409: abort the transaction */
};

/* Insert the mark of gid inside the caller's open transaction.
 * Errors: DTX_ECONFLICT when gid already has a mark row: a check answered
 * "rolled back" first, or a transaction that marked gid before committed
 * (dtx_msg_check_* tells which). Either way this transaction must not
 * commit: roll it back. DTX_EINVAL (NULL or empty gid, no transaction
 * open), DTX_EDB (as for the barrier: roll back), DTX_ENOMEM. */
int dtx_msg_mark_pg(PGconn *conn, const char *gid);
int dtx_msg_mark_sqlite(sqlite3 *db, const char *gid);

/* Answer a check for gid in a transaction of its own (on PostgreSQL at READ
 * COMMITTED whatever the session's default; on SQLite BEGIN IMMEDIATE).
 * OUT: *out, set only on success. Errors: DTX_EINVAL (NULL or empty
 * argument, or a transaction is already open on the connection), DTX_EDB
 * (the database failed or a wait bound passed; the check's transaction was
 * rolled back), DTX_ECONFLICT (the row holds a reason libdtx never writes),
 * DTX_ENOMEM. */
int dtx_msg_check_pg(PGconn *conn, const char *gid, enum dtx_msg_state *out);
int dtx_msg_check_sqlite(sqlite3 *db, const char *gid, enum dtx_msg_state *out);
/* The HTTP status for a check answer: 200 or 409 (500 for a value that is
 * no state). */
int dtx_msg_http_status(enum dtx_msg_state s);

#ifdef __cplusplus
}
#endif

#endif
