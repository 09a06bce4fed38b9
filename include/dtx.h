/*
 * dtx.h - libdtx, the C library for services that use dtx: a client of the
 * dtxd HTTP API, and helpers for participant services (the barrier on
 * PostgreSQL and SQLite, the `msg` check handler built on it, and the
 * prepare and registration of a 2pc branch on a PostgreSQL resource).
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

/* ---- 2pc on PostgreSQL resources -------------------------------------- */

/*
 * A 2pc branch may be a PostgreSQL *resource*: instead of giving dtxd
 * prepare/commit/rollback URLs, the participant prepares its own database
 * transaction and dtxd, which holds a connection to the same database under
 * a resource name (its --resources file), commits or rolls it back itself:
 *
 *   BEGIN;
 *   SET LOCAL lock_timeout = '2s';                   -- see "Deadlocks" below
 *   ... the business change ...
 *   dtx_pg_prepare(conn, gid, branch);               -- PREPARE TRANSACTION
 *   dtx_register_2pc_resource(client, gid, branch, "bank_a", payload);
 *
 * and then the client submits the transaction (dtx_submit). dtxd votes yes
 * for a branch whose prepared transaction it finds in pg_prepared_xacts of
 * the resource's database, no (rollback of every branch) when it is absent;
 * after its decision is durable it runs COMMIT PREPARED or ROLLBACK
 * PREPARED, retrying until done, and on start and periodically it finishes
 * every "dtx:" prepared transaction of its resources: commit when it logged
 * a commit decision, rollback when it logged an abort, rollback of one it
 * does not know once older than its orphan grace (a participant that
 * crashed between prepare and register).
 *
 * Prepare before you register: a registered branch whose transaction is not
 * (yet) prepared when dtxd asks votes no. A participant that fails after its
 * prepare and before its registration leaves an orphan that dtxd rolls back.
 *
 * Deadlocks. The branch's locks are held from the work until dtxd's COMMIT
 * PREPARED. A prepared transaction waits on no one, so two global
 * transactions that lock the same rows in two databases in opposite orders
 * (A->B and B->A) wait for each other through dtxd, and PostgreSQL's
 * deadlock detector, which sees only one database's waits, cannot find the
 * cycle. Every participant must bound its waits with lock_timeout (SET
 * LOCAL in the transaction of the work, a few seconds): the one that times
 * out fails its work, does not prepare, and its global transaction rolls
 * back, releasing the other.
 *
 * The server needs max_prepared_transactions > 0 (one per branch that may
 * be prepared at once).
 */

/* Every prepared transaction of dtx is named DTX_PG_XACT_PREFIX gid ":"
 * branch, e.g. "dtx:order-1:debit" (at most 197 bytes). */
#define DTX_PG_XACT_PREFIX "dtx:"

/* A resource name: 1-DTX_RESOURCE_MAX bytes of A-Z a-z 0-9 . _ - */
#define DTX_RESOURCE_MAX 64

/*
 * Run PREPARE TRANSACTION 'dtx:<gid>:<branch>' on conn's open transaction
 * (the name quoted with PQescapeLiteral). gid is 1-DTX_GID_MAX bytes of
 * A-Z a-z 0-9 . _ : - and branch 1-DTX_BRANCH_MAX bytes of the same without
 * ':' (dtxd splits the name at its last ':'); they are checked before
 * anything is sent. After a successful call the transaction is prepared:
 * the connection is free for other work and the prepared transaction is
 * dtxd's to finish.
 * Errors: DTX_EINVAL (NULL conn, a bad gid or branch, or no transaction
 * open on conn: nothing was sent); DTX_EDB (the connection is broken, the
 * transaction had already failed, or PREPARE TRANSACTION failed - the name
 * is in use, max_prepared_transactions is 0, ...; see PQerrorMessage): the
 * transaction was not prepared and is rolled back, or must be (a ROLLBACK
 * is harmless either way); DTX_ENOMEM (quoting the name).
 */
int dtx_pg_prepare(PGconn *conn, const char *gid, const char *branch);

struct dtx_client;

/*
 * Both steps of a participant's branch on resource `resource`: prepare
 * conn's open transaction (dtx_pg_prepare), then register the branch with
 * dtxd (dtx_register_2pc_resource; payload_json may be NULL). Returns 0
 * when both succeeded. An error of the prepare is returned as is and
 * nothing was registered. When the registration fails (its error is in
 * dtx_client_last_error(c)), the prepared transaction is left for dtxd to
 * roll back (its gid unknown, or the branch not part of the decision: the
 * recovery scan rolls it back) unless the caller does it at once with
 * ROLLBACK PREPARED; *prepared (if not NULL) tells whether the prepare
 * happened.
 */
int dtx_pg_prepare_register(struct dtx_client *c, PGconn *conn, const char *gid, const char *branch,
                            const char *resource, const char *payload_json,
                            int *prepared /* OUT, may be NULL */);

/* ---- client side -------------------------------------------------------- */
/* (owned by the client implementation: see src/libdtx/client.c) */

/*
 * A client of the dtxd HTTP API (docs/API.md). One struct dtx_client holds
 * one libcurl easy handle, so calls on it reuse a kept-alive connection; it
 * must not be used by two threads at once (make one client per thread).
 *
 *   struct dtx_client *c;
 *   struct dtx_spec *s;
 *   struct dtx_txn *t;
 *   dtx_client_new("http://127.0.0.1:7788", &c);
 *   dtx_saga_new(&s);
 *   dtx_saga_add_step(s, "http://a/debit", "http://a/debit-undo", "{\"amount\":30}");
 *   dtx_saga_add_step(s, "http://b/credit", "http://b/credit-undo", "{\"amount\":30}");
 *   if (dtx_create(c, s, &t) == 0) { ... t->gid, t->status ... dtx_txn_free(t); }
 *   else { const struct dtx_error *e = dtx_client_last_error(c); ... }
 *   dtx_spec_free(s);
 *   dtx_client_free(c);
 *
 * libcurl is initialised by the first dtx_client_new() when the program has
 * not called curl_global_init() itself; a threaded program should call
 * curl_global_init(CURL_GLOBAL_DEFAULT) once before starting its threads.
 */
struct dtx_client;

/* Limits of the identifiers the API accepts: a gid is 1-128 bytes and a
 * branch id 1-64 bytes, both of A-Z a-z 0-9 . _ : - */
#define DTX_GID_MAX    128
#define DTX_BRANCH_MAX 64

/* The default per-request timeout of a new client, in milliseconds. */
#define DTX_CLIENT_TIMEOUT_MS 30000

/*
 * Make a client of the coordinator at base_url ("http://host:port", or
 * https; a trailing '/' is ignored). No connection is made yet.
 * OUT: *out, freed with dtx_client_free().
 * Errors: DTX_EINVAL (NULL, or not an http(s):// URL), DTX_ENOMEM.
 */
int dtx_client_new(const char *base_url, struct dtx_client **out);

/* Free a client and close its connections. NULL is allowed. */
void dtx_client_free(struct dtx_client *c);

/*
 * Set the time one HTTP request may take, connecting included (default
 * DTX_CLIENT_TIMEOUT_MS; 0 means no limit). A request that asks the
 * coordinator to wait gets its wait bound on top of this.
 * Errors: DTX_EINVAL (c NULL or timeout_ms negative).
 */
int dtx_client_set_timeout(struct dtx_client *c, int64_t timeout_ms);

/*
 * Give the client a RabbitMQ broker for Try calls over AMQP (dtx_tcc_try
 * with an amqp:// try_url). broker_url: amqp://user:password@host:port/vhost
 * (%2f is the / vhost), or amqps:// for TLS, where the broker's certificate
 * and host name are verified against cacert (a PEM file of CAs) or, when
 * cacert is NULL, the system's CAs. The connection is made at the first such
 * Try and kept; replies come to a server-named exclusive queue of its own.
 * Setting a broker again replaces the previous one. The password is kept
 * only in memory, wiped when the client is freed, and never put in a
 * message. Errors: DTX_EINVAL (c NULL, or not such a URL), DTX_ENOMEM.
 */
int dtx_client_set_amqp(struct dtx_client *c, const char *broker_url, const char *cacert);

/*
 * What went wrong in the last call made with a client. Every client call
 * (dtx_create ... dtx_tcc_try) resets it first; it stays valid, and
 * unchanged, until the next call on the same client.
 */
struct dtx_error {
    int code;        /* DTX_E* of the last call; 0 if it succeeded */
    int http_status; /* status of the coordinator's answer; 0 if none came */
    /* the error body's "code" ("missing_field", "invalid_state", ...); "" when
     * there was no error body */
    const char *api_code;
    /* the error body's "field" ("steps[0].action"); "" when none */
    const char *field;
    /* never NULL: the error body's "message", libcurl's error text, or a
     * description of the local failure */
    const char *message;
};

/* The error of the last call on c (see struct dtx_error). Never NULL for a
 * non-NULL c; owned by c. */
const struct dtx_error *dtx_client_last_error(const struct dtx_client *c);

/*
 * Building a create request: struct dtx_spec is the body of
 * POST /v1/transactions, made by the constructor of its mode and completed by
 * the setters below. Arguments are checked when they are given, so that a
 * mistake is reported where it is made: a NULL or empty string, a URL
 * without "scheme://", a payload that is not JSON, a gid outside its
 * alphabet, a number out of range are DTX_EINVAL and leave the spec as it
 * was.
 * Ranges the coordinator checks (e.g. the number of steps) are left to it.
 * A payload is JSON text of any type ("{\"a\":1}", "42", "null"); NULL
 * leaves it out (the coordinator then sends {}).
 */
struct dtx_spec;

/* A saga (steps added with dtx_saga_add_step; it starts when created).
 * OUT: *out, freed with dtx_spec_free(). Errors: DTX_EINVAL, DTX_ENOMEM. */
int dtx_saga_new(struct dtx_spec **out);

/* A TCC transaction, created "prepared" with no branches: register them with
 * dtx_register_tcc(), call each Try (dtx_tcc_try), then dtx_submit() or
 * dtx_abort(). OUT: *out. Errors: DTX_EINVAL, DTX_ENOMEM. */
int dtx_tcc_new(struct dtx_spec **out);

/* A 2pc transaction, created "prepared" with no branches: register them with
 * dtx_register_2pc(), then dtx_submit() (the coordinator prepares and
 * commits) or dtx_abort(). OUT: *out. Errors: DTX_EINVAL, DTX_ENOMEM. */
int dtx_2pc_new(struct dtx_spec **out);

/* A two-phase message whose local transaction is confirmed by check_url
 * (asked by the coordinator when no submit comes before timeout_ms), with
 * steps added by dtx_msg_add_step(). Created "prepared"; dtx_submit() after
 * the local commit delivers the steps. OUT: *out.
 * Errors: DTX_EINVAL (bad check_url), DTX_ENOMEM. */
int dtx_msg_new(const char *check_url, struct dtx_spec **out);

/* Free a spec. NULL is allowed. */
void dtx_spec_free(struct dtx_spec *s);

/*
 * Append a step to a saga: action and compensate URLs, payload JSON text or
 * NULL. Steps are numbered from 1 in the order they are added.
 * Errors: DTX_EINVAL (not a saga, bad URL or payload), DTX_ENOMEM.
 */
int dtx_saga_add_step(struct dtx_spec *s, const char *action, const char *compensate,
                      const char *payload);

/*
 * Make step `step` (1-based, already added) of a saga wait for the steps
 * after[0..n-1] (1-based; they may be added later) to succeed.
 * Giving `after` to any step (even n == 0) makes the saga concurrent: see
 * docs/API.md. after may be NULL when n is 0.
 * Errors: DTX_EINVAL (not a saga, no such step, a number < 1 or naming the
 * step itself), DTX_ENOMEM. Cycles are refused by the coordinator.
 */
int dtx_saga_set_after(struct dtx_spec *s, int step, const int *after, size_t n);

/* Append a step to a msg: the action target and payload JSON text or NULL.
 * Errors: DTX_EINVAL (not a msg, bad URL or payload), DTX_ENOMEM. */
int dtx_msg_add_step(struct dtx_spec *s, const char *action, const char *payload);

/* Set the gid (1-DTX_GID_MAX bytes of A-Z a-z 0-9 . _ : -), which makes the
 * creation idempotent. Without one, the coordinator makes one up.
 * Errors: DTX_EINVAL. */
int dtx_spec_set_gid(struct dtx_spec *s, const char *gid);

/* Set the retry policy; a negative value leaves that field to the
 * coordinator's default. Errors: DTX_EINVAL (s NULL). */
int dtx_spec_set_retry(struct dtx_spec *s, int64_t initial_interval_ms, int64_t max_interval_ms,
                       int64_t limit);

/* Set the timeout of each participant call (request_timeout_ms).
 * Errors: DTX_EINVAL (s NULL, ms < 1). */
int dtx_spec_set_request_timeout(struct dtx_spec *s, int64_t ms);

/* Set timeout_ms: for a saga, roll back when still going forward this long
 * after creation (0: never); for a msg, ask `check` when no submit came this
 * long after creation. Errors: DTX_EINVAL (s NULL, ms < 0). */
int dtx_spec_set_timeout(struct dtx_spec *s, int64_t ms);

/* Ask the coordinator to answer the create only when the transaction has
 * finished, or wait_timeout_ms has passed (0: its default bound). Only
 * meaningful for a saga. Errors: DTX_EINVAL (s NULL, ms < 0). */
int dtx_spec_set_wait(struct dtx_spec *s, int64_t wait_timeout_ms);

/* A msg created already submitted (its local transaction has committed):
 * dtxd delivers its steps at once, with no submit call and no check.
 * Errors: DTX_EINVAL (s NULL or not a msg), DTX_ENOMEM. */
int dtx_spec_set_submit(struct dtx_spec *s);

/* The request body a spec makes, as compact JSON text.
 * OUT: *out, freed with dtx_free(). Errors: DTX_EINVAL (a saga or msg
 * without steps, or s NULL), DTX_ENOMEM. */
int dtx_spec_to_json(const struct dtx_spec *s, char **out);

/* Free memory the library handed out as plain bytes (dtx_spec_to_json). */
void dtx_free(void *p);

/*
 * A transaction as the coordinator answered it (create, submit, abort,
 * retry, get, wait, and - as a summary - list). Strings are NUL-terminated,
 * owned by the struct and valid until dtx_txn_free(); a field absent from
 * the answer is NULL (strings) or -1 (numbers), unless said otherwise.
 */
#define DTX_BRANCH_OPS_MAX 3

struct dtx_branch_op {
    const char *op;   /* "prepare", "action", "confirm", "commit", "compensate", "cancel",
                         "rollback", in the order the mode calls them */
    const char *url;  /* the target URL of this op; for a branch on a PostgreSQL
                         resource, the resource's name (see dtx_branch.resource) */
    int64_t attempts; /* calls made so far (<op>_attempts) */
};

struct dtx_branch {
    const char *id;     /* "branch": "1", "2", ... or the client's id */
    const char *status; /* pending, running, prepared, succeeded, failed, compensating,
                           compensated */
    struct dtx_branch_op ops[DTX_BRANCH_OPS_MAX];
    size_t n_ops;
    const char *payload;    /* compact JSON text; "{}" when absent */
    const char *last_error; /* the latest failed call, NULL when none failed */
    const char *updated_at; /* RFC 3339 */
    const int *after;       /* a concurrent saga's step dependencies, or NULL */
    size_t n_after;
    int has_after;        /* 1 when the answer had "after" (even []) */
    const char *resource; /* a 2pc branch on a PostgreSQL resource: its name; else NULL */
};

struct dtx_txn {
    int http_status; /* 200, 201 or 202 (202: a wait bound passed first) */
    const char *gid;
    const char *type;       /* saga, tcc, 2pc, msg */
    const char *status;     /* prepared, submitted, committing, succeeded, aborting, failed */
    int needs_attention;    /* 1: a must-succeed call ran out of retries, still retried */
    const char *created_at; /* RFC 3339, e.g. "2026-11-21T17:40:00.123Z" */
    const char *updated_at;
    const char *finished_at; /* NULL until succeeded or failed */
    const char *check;       /* a msg's check URL; NULL for other modes */
    int64_t retry_initial_interval_ms, retry_max_interval_ms, retry_limit;
    int64_t request_timeout_ms, timeout_ms;
    struct dtx_branch *branches; /* n_branches entries (none in a list summary) */
    size_t n_branches;
    int64_t branch_count; /* the summary's branch_count in a list; else n_branches */
    const char *json;     /* the raw JSON text this was parsed from */
};

/* 1 when status is final ("succeeded" or "failed"), else 0. */
int dtx_txn_is_final(const struct dtx_txn *t);

/* Free a transaction answer. NULL is allowed. */
void dtx_txn_free(struct dtx_txn *t);

/*
 * How the calls below fail (besides what each one lists):
 *   DTX_EINVAL    a bad argument, detected before anything is sent
 *   DTX_ENOMEM    out of memory
 *   DTX_EIO       no connection, or it broke, or the client timeout passed
 *   DTX_EPROTO    an answer that is not the API (not JSON, fields missing)
 *   DTX_ENOTFOUND 404: no such transaction
 *   DTX_ECONFLICT 409: gid_conflict, branch_conflict, invalid_state, ...
 *   DTX_EAPI      any other refusal (400, 413, 503, ...)
 * dtx_client_last_error() then gives the HTTP status and the error body's
 * code, field and message. OUT parameters are set only on success.
 */

/* POST /v1/transactions with the body of s.
 * OUT: *out (may be NULL when the answer is not wanted), freed with
 * dtx_txn_free(); its http_status says 201 (new), 200 (existed with the same
 * body) or 202 (wait asked and its bound passed first). */
int dtx_create(struct dtx_client *c, const struct dtx_spec *s, struct dtx_txn **out);

/* POST /v1/transactions with a body given as JSON text, e.g. read from a
 * file. The text must be a JSON object (DTX_EINVAL otherwise, with
 * jansson's line and column in the error message); it is sent as is.
 * OUT: *out (may be NULL), as for dtx_create. */
int dtx_create_json(struct dtx_client *c, const char *body, struct dtx_txn **out);

/*
 * Register a TCC branch of the prepared transaction gid, before calling its
 * Try. branch is the client's id for it (1-DTX_BRANCH_MAX bytes of
 * A-Z a-z 0-9 . _ : -) or NULL to let the coordinator number it; payload is
 * JSON text or NULL. Registering the same id with the same body again is
 * harmless. OUT: branch_out (may be NULL; at least DTX_BRANCH_MAX + 1 bytes)
 * receives the branch id. Errors: DTX_ECONFLICT (not prepared, not tcc,
 * branch_conflict, too_many_branches), DTX_ENOTFOUND, ...
 */
int dtx_register_tcc(struct dtx_client *c, const char *gid, const char *branch, const char *confirm,
                     const char *cancel, const char *payload, char *branch_out);

/* Register a 2pc branch: as dtx_register_tcc, with the participant's
 * prepare, commit and rollback URLs. */
int dtx_register_2pc(struct dtx_client *c, const char *gid, const char *branch, const char *prepare,
                     const char *commit, const char *rollback, const char *payload,
                     char *branch_out);

/*
 * Register a 2pc branch on a PostgreSQL resource ("2pc on PostgreSQL
 * resources" above): POST /v1/transactions/{gid}/branches with {"branch",
 * "resource", "payload"}, after dtx_pg_prepare(conn, gid, branch). branch is
 * required (it names the prepared transaction); resource is the name dtxd
 * knows the database by (1-DTX_RESOURCE_MAX bytes of A-Z a-z 0-9 . _ -);
 * payload is JSON text or NULL. Registering the same branch with the same
 * body again is harmless.
 * Errors: DTX_EINVAL (a bad or NULL argument), DTX_EAPI (400: e.g. a
 * resource dtxd does not know, field "resource"), DTX_ECONFLICT (not
 * prepared, not 2pc, branch_conflict, too_many_branches), DTX_ENOTFOUND, ...
 */
int dtx_register_2pc_resource(struct dtx_client *c, const char *gid, const char *branch,
                              const char *resource, const char *payload);

/*
 * POST /v1/transactions/{gid}/submit: commit a prepared tcc/2pc/msg (a
 * transaction already going forward or finished is answered as it is).
 * wait_timeout_ms > 0 asks the coordinator to answer only when finished, or
 * after that bound (http_status 202); 0 answers at once.
 * OUT: *out (may be NULL). Errors: DTX_ECONFLICT (aborting or failed), ...
 */
int dtx_submit(struct dtx_client *c, const char *gid, int64_t wait_timeout_ms,
               struct dtx_txn **out);

/*
 * POST /v1/transactions/{gid}/abort: roll back a prepared tcc/2pc/msg, a
 * submitted saga, or a 2pc before its commit decision. wait_timeout_ms and
 * OUT as for dtx_submit. Errors: DTX_ECONFLICT (already committing or
 * succeeded), ...
 */
int dtx_abort(struct dtx_client *c, const char *gid, int64_t wait_timeout_ms, struct dtx_txn **out);

/* POST /v1/transactions/{gid}/retry: try every waiting retry now.
 * OUT: *out (may be NULL). Errors: DTX_ECONFLICT (already finished), ... */
int dtx_retry(struct dtx_client *c, const char *gid, struct dtx_txn **out);

/* GET /v1/transactions/{gid}. OUT: *out, freed with dtx_txn_free().
 * Errors: DTX_ENOTFOUND, ... */
int dtx_get(struct dtx_client *c, const char *gid, struct dtx_txn **out);

/*
 * Poll GET /v1/transactions/{gid} (at growing intervals up to 200 ms) until
 * the transaction is final or timeout_ms has passed (0: look once).
 * OUT: *out, the final transaction, freed with dtx_txn_free().
 * Errors: DTX_ETIMEDOUT (not final in time), DTX_ENOTFOUND, ...
 */
int dtx_wait(struct dtx_client *c, const char *gid, int64_t timeout_ms, struct dtx_txn **out);

/* Filters of dtx_list; zero it for "everything, default page size". */
struct dtx_list_opts {
    const char *status;  /* one of the transaction states, or NULL */
    const char *type;    /* saga, tcc, 2pc, msg, or NULL */
    int limit;           /* 1-1000; 0: the coordinator's default (50) */
    const char *cursor;  /* next_cursor of the previous page, or NULL */
    int needs_attention; /* 1: only transactions flagged needs_attention; 0: no filter */
};

/* One page of GET /v1/transactions, newest first. The items belong to the
 * list (never dtx_txn_free() one): they are summaries without branches,
 * retry or timeouts (those fields are NULL / -1), with branch_count set and
 * json NULL. */
struct dtx_txn_list {
    struct dtx_txn *items; /* n summaries */
    size_t n;
    const char *next_cursor; /* NULL on the last page */
    const char *json;        /* the raw JSON text of the page */
};

/* GET /v1/transactions with the filters of opts (NULL: none).
 * OUT: *out, freed with dtx_txn_list_free(). Errors: DTX_EAPI (a bad
 * filter: invalid_value), ... */
int dtx_list(struct dtx_client *c, const struct dtx_list_opts *opts, struct dtx_txn_list **out);

/* Free a list page. NULL is allowed. */
void dtx_txn_list_free(struct dtx_txn_list *l);

/* One transaction's outcome in a batch (dtx_create_batch). */
struct dtx_batch_item {
    int status;                /* as a single create: 201 created, 200 the same gid with the
                                  same body, 400 refused, 409 gid_conflict, 503 shutting down */
    const struct dtx_txn *txn; /* 200/201: its summary (no branches); else NULL */
    const char *error_code;    /* otherwise: "invalid_url", "gid_conflict", ... */
    const char *error_field;   /* "transactions[2].steps[0].action", or NULL */
    const char *error_message;
};

struct dtx_batch {
    struct dtx_batch_item *items; /* n, in the order of the specs */
    size_t n;
    const char *json; /* the raw JSON text of the answer */
};

/*
 * Create n transactions (1 to the coordinator's --max-batch, default 1000)
 * in one request, POST /v1/transactions:batch: each is its own transaction,
 * as if made by dtx_create (a spec with dtx_spec_set_wait is refused, item by
 * item); the answer comes once every accepted one is durable. One request
 * instead of n is how a producer with many transactions to start gets
 * throughput. OUT: *out, n results (freed with dtx_batch_free); a refused
 * item does not make the call fail. Errors: DTX_EINVAL (no specs, n 0, a
 * saga or msg without steps), DTX_EAPI (the batch refused as a whole, e.g.
 * too_many_items; the last error says why), ...
 */
int dtx_create_batch(struct dtx_client *c, const struct dtx_spec *const *specs, size_t n,
                     struct dtx_batch **out);

/* Free a batch answer. NULL is allowed. */
void dtx_batch_free(struct dtx_batch *b);

/* The outcome of a Try call (dtx_tcc_try). */
enum dtx_try_result {
    DTX_TRY_SUCCEEDED = 0, /* 2xx: the resources are reserved; go on, then dtx_submit() */
    DTX_TRY_FAILED,        /* 409: the participant refused; dtx_abort() the transaction */
    DTX_TRY_TRANSIENT,     /* anything else (a status, no connection, timeout): the
                              outcome is unknown; call the Try again or dtx_abort() */
};

/*
 * Call a TCC Try on a participant: POST try_url with payload (JSON text, or
 * NULL for {}) as body and the headers dtxd sends to participants (Dtx-Gid,
 * Dtx-Branch, Dtx-Op: try, Dtx-Type: tcc, Idempotency-Key gid/branch/try),
 * within the client's timeout. Register the branch first (dtx_register_tcc).
 * OUT: *result. A participant that cannot be reached is DTX_TRY_TRANSIENT
 * (returns 0); dtx_client_last_error() then holds its status or libcurl's
 * error text.
 *
 * try_url may also be amqp://<exchange>/<routing-key> (docs/API.md,
 * "amqp:// targets") on a client given a broker (dtx_client_set_amqp): the
 * Try is then a command published there (persistent, confirmed, message_id
 * gid/branch/try) and its reply's Dtx-Result is the outcome: SUCCESS,
 * FAILURE (the reply's body is in the last error's message), anything else
 * or no reply within the client's timeout DTX_TRY_TRANSIENT.
 *
 * Errors: DTX_EINVAL (also an amqp:// try_url that is malformed or on a
 * client without a broker), DTX_ENOMEM only.
 */
int dtx_tcc_try(struct dtx_client *c, const char *try_url, const char *gid, const char *branch,
                const char *payload, enum dtx_try_result *result);

/* ---- AMQP participant loop ---------------------------------------------- */

/*
 * A participant service that takes its commands from RabbitMQ (docs/API.md,
 * "amqp:// targets"): the loop consumes one durable queue, runs the handler
 * for each command inside the barrier, replies on the command's reply_to,
 * and only then acknowledges the command. Build with librabbitmq and libssl
 * (in libdtx.pc).
 *
 * For each message:
 *   - malformed (no or empty Dtx-Gid / Dtx-Branch / Dtx-Op header, one
 *     that is not a string or longer than 255 bytes, an unknown Dtx-Op, a
 *     message_id that is not gid/branch/op, or a command without reply_to):
 *     a copy (properties, headers, body) is published to the dead-letter
 *     queue with header x-dtx-reason, then the message is acknowledged. The
 *     handler does not run. A missing Dtx-Type is "" (a command).
 *   - with a barrier (pg or sqlite set): BEGIN (SQLite: BEGIN IMMEDIATE;
 *     PostgreSQL: the session's isolation, READ COMMITTED advised);
 *     dtx_barrier_*(gid, branch, op); APPLY runs the handler in that
 *     transaction and COMMITs on SUCCESS, rolls back otherwise; DUPLICATE
 *     and NULL_UNDO commit and reply SUCCESS without the handler; LATE
 *     replies FAILURE ("its compensation came first") without it. A
 *     database error rolls back and counts as DTX_AMQP_RETRY. A broken
 *     PostgreSQL connection is PQreset() before the next message.
 *   - Dtx-Op check (a msg's check) runs the handler outside any transaction
 *     and barrier: it calls dtx_msg_check_*, which opens its own.
 *   - the reply (commands only: everything but a msg delivery, Dtx-Type msg
 *     with Dtx-Op action) goes to the default exchange with routing key
 *     reply_to, persistent, and carries the correlation_id and Dtx-Result
 *     SUCCESS / FAILURE / ONGOING (and Dtx-Gid, Dtx-Branch, Dtx-Op), body =
 *     the handler's reason.
 *   - DTX_AMQP_RETRY (a transient error): a command is acknowledged without
 *     a reply (dtxd asks again after its request timeout); a delivery is,
 *     after a pause (100 ms doubling per attempt, up to 5 s; the loop waits
 *     meanwhile), published again to the queue (default exchange) with
 *     header x-dtx-attempts + 1 (and x-dtx-routing-key, the routing key it
 *     was first published with, which m->routing_key then shows) and
 *     acknowledged, and dead-lettered (reason
 *     "gave up after N attempts") once the handler has run max_attempts
 *     times. Never a redelivery loop. A delivery's ONGOING counts as RETRY;
 *     its FAILURE is dead-lettered (reason "refused: <the reason>").
 *   - every publish (reply, dead letter, retry) waits for the broker's
 *     publisher confirm before the message is acknowledged.
 *
 * The loop declares the queue at connect, but dtxd publishes with
 * `mandatory`: declare it (or start the loop) before the first command. A
 * queue that exists with other arguments (quorum, TTL, ...) is used as it
 * is. The connection is named "dtx-participant <queue>" (client property
 * connection_name) for the broker's management UI.
 *
 * The loop reconnects with backoff (100 ms doubling to 5 s) when the broker
 * is unreachable or closes the connection, or the queue is deleted;
 * unacknowledged commands are redelivered by the broker then, and the
 * barrier makes that harmless. Heartbeats (30 s) are kept only while the
 * loop waits: a handler that runs longer than about a minute loses the
 * connection, and its message comes again. The loop reports no errors: a
 * wrong password or an unreachable broker just keeps it retrying.
 */
enum dtx_amqp_result {
    DTX_AMQP_SUCCESS = 0, /* done: commit, reply SUCCESS */
    DTX_AMQP_FAILURE,     /* refused (business rule): roll back, reply FAILURE */
    DTX_AMQP_ONGOING,     /* still running: roll back, reply ONGOING */
    DTX_AMQP_RETRY,       /* transient error: roll back, no reply (see above) */
};

/* One command, valid during the handler call. */
struct dtx_amqp_msg {
    const char *gid, *branch, *op, *type; /* the Dtx-* headers */
    const char *message_id;               /* gid/branch/op */
    const char *routing_key;              /* the routing key it was published with */
    const char *body;                     /* payload bytes (NUL-terminated copy) */
    size_t body_len;
    int redelivered; /* the broker's redelivered flag */
};

/*
 * The handler. With a barrier it runs inside the open local transaction
 * (use the same connection, do not COMMIT or ROLLBACK). reason (cap bytes)
 * may receive a short text for the reply's body ("" by default).
 */
typedef enum dtx_amqp_result (*dtx_amqp_handler)(void *arg, const struct dtx_amqp_msg *m,
                                                 char *reason, size_t cap);

/*
 * Told, from run()'s thread, how the loop is doing (a line without a
 * password; arg is the handler's arg): "consuming <queue> on
 * amqp://user@host:port/vhost" at each connect; "cannot connect: <why>; again
 * in <ms> ms" (refused, unreachable, a login refused, TLS not verified, a
 * queue declare refused); "connection lost: <why>; again in <ms> ms"; and
 * "database error at BEGIN|the barrier|COMMIT of <message_id>: <error>; it
 * is retried". Meant for the application's log; it runs on run()'s thread
 * between messages, so it should be quick.
 */
typedef void (*dtx_amqp_status_fn)(void *arg, const char *line);

struct dtx_amqp_opts {
    const char *broker_url;  /* amqp://user:pass@host:port/vhost or amqps://...; required */
    const char *queue;       /* the queue to consume (declared durable if missing); required */
    const char *dead_letter; /* dead-letter queue (declared durable); NULL: "<queue>.dead" */
    const char *cacert;      /* amqps: CA file to verify the broker with; NULL: system default */
    int prefetch;            /* basic.qos, 0-65535; 0: 16 */
    int max_attempts;        /* deliveries: handler runs before dead-lettering; 0: 100 */
    PGconn *pg;              /* barrier on PostgreSQL (dtx_barrier_pg_init done), or NULL */
    sqlite3 *sqlite;         /* barrier on SQLite, or NULL; at most one of the two */
    dtx_amqp_status_fn on_status; /* or NULL: the loop says nothing */
};

struct dtx_amqp_participant;

/* Check the options and make the loop (no I/O yet). The strings are copied.
 * Errors: DTX_EINVAL (a required field missing, both barriers, a bad URL -
 * one with an empty vhost too -, a queue name over 255 bytes, dead_letter
 * equal to queue, prefetch or max_attempts out of range), DTX_ENOMEM. */
int dtx_amqp_participant_new(const struct dtx_amqp_opts *o, dtx_amqp_handler h, void *arg,
                             struct dtx_amqp_participant **out);

/* Consume until dtx_amqp_participant_stop(); returns 0 then (DTX_EINVAL for
 * a NULL p). The calling thread runs the handler. After it returned, run()
 * may be called again. */
int dtx_amqp_participant_run(struct dtx_amqp_participant *p);

/* Make run() return after the message in hand (if any) is finished, within
 * about 200 ms (longer while a connection attempt, the handler or a
 * publisher confirm is under way: each is bounded, by 5 s for the broker).
 * A stop() before run() makes it return at once. Safe from another thread
 * and from a signal handler (one lock-free atomic store). */
void dtx_amqp_participant_stop(struct dtx_amqp_participant *p);

/* Free a loop that is not running. */
void dtx_amqp_participant_free(struct dtx_amqp_participant *p);

/* "SUCCESS", "FAILURE", "ONGOING" (the Dtx-Result words) or "RETRY"; "?"
 * for a value that is none of them. */
const char *dtx_amqp_result_name(enum dtx_amqp_result r);

#ifdef __cplusplus
}
#endif

#endif
