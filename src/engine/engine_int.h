/*
 * engine_int.h - what a mode driver (saga.c; later tcc, 2pc, msg) may use of
 * the engine, and what it must provide.
 *
 * A driver decides the next step of a transaction of its type from its
 * states alone, so the same code runs after creation, after a participant's
 * answer, after a retry timer and after recovery. It changes states only
 * through txn_set_state / branch_set_state, logs them with engine_log_* and
 * continues in the `then` callback, once they are durable.
 */
#ifndef DTX_ENGINE_INT_H
#define DTX_ENGINE_INT_H

#include "engine/engine.h"
#include "transport/transport.h"

struct mode_ops {
    /* Start whatever can be started now. Idempotent: harmless when there is
     * nothing to do (a call in flight, a timer armed, records pending). */
    void (*advance)(struct engine *e, struct txn *t);
    /* The transaction's timeout_ms has passed and it is not finished. */
    void (*expire)(struct engine *e, struct txn *t);
    /* A branch's retry timer fired. */
    void (*retry)(struct engine *e, struct branch *b);
    /* Abort at a client's request (engine_abort checked the state allows it):
     * switch to aborting and log it. */
    void (*abort)(struct engine *e, struct txn *t, const char *why);
    /* The log was replayed and t is unfinished; NULL means advance. */
    void (*recovered)(struct engine *e, struct txn *t);
};

extern const struct mode_ops saga_ops, tcc_ops, xa_ops, msg_ops;

typedef void (*engine_then_fn)(struct engine *e, struct txn *t);

/* Append t whole (REC_TXN) / an update of t and br (REC_UPDATE); then(e, t)
 * runs once it is durable. t stays alive until then. */
void engine_log_txn(struct engine *e, struct txn *t, engine_then_fn then);
void engine_log_update(struct engine *e, struct txn *t, struct branch *br, engine_then_fn then);
/* Append a registered branch (REC_BRANCH). */
void engine_log_branch(struct engine *e, struct txn *t, struct branch *br, engine_then_fn then);

/* Call op (e.g. "action") of branch b at url. cb(e, b, res) runs on the loop
 * unless the engine stops first. Sets b->in_flight while outstanding. */
typedef void (*engine_call_fn)(struct engine *e, struct branch *b, const struct call_result *res);
void engine_call(struct engine *e, struct branch *b, const char *op, const char *url,
                 engine_call_fn cb);

/* Ask t's check URL (msg). cb(e, t, res) runs on the loop unless the engine
 * stops first. Sets t->check_in_flight while outstanding. */
typedef void (*engine_check_fn)(struct engine *e, struct txn *t, const struct call_result *res);
void engine_call_check(struct engine *e, struct txn *t, engine_check_fn cb);

/* Arm t's timeout timer delay_ms from now (mode_ops.expire runs then); msg
 * uses it to ask check again. */
void engine_expire_in(struct engine *e, struct txn *t, uint64_t delay_ms);

/* Arm b's retry timer delay_ms from now (mode_ops.retry runs then). */
void engine_retry_in(struct engine *e, struct branch *b, uint64_t delay_ms);

/* Disarm b's retry timer if armed. */
void engine_retry_cancel(struct engine *e, struct branch *b);

/* Tell the engine t reached a final state that is now durable. */
void engine_finished(struct engine *e, struct txn *t);

/* Whether the engine is stopping (drivers start nothing new then). */
int engine_stopping(const struct engine *e);
int64_t engine_now_wall(void);

/* ---- shared by the drivers (drive.c) ---- */

/* Describe a call result for last_error ("status 500", "timed out", ...). */
void drive_describe(const struct call_result *res, char *out, size_t n);

/* A must-succeed operation (compensate, cancel, confirm, commit, rollback,
 * deliver) of b did not succeed (res: FAILURE, ONGOING or TRANSIENT): record
 * why, and schedule the next attempt — the fixed interval after ONGOING,
 * backoff otherwise, and once the retry limit is passed the longest interval
 * with the transaction flagged needs_attention (logged, then `then`). */
void drive_must_retry(struct engine *e, struct branch *b, const struct call_result *res,
                      engine_then_fn then);

/* How many of t's branches are in state s. */
uint32_t drive_count(const struct txn *t, enum branch_state s);

/* A forward operation that may be refused (saga action, 2pc prepare) did
 * not succeed (res: FAILURE, ONGOING or TRANSIENT; attempts: its calls so
 * far). ONGOING: ask again after the fixed interval. FAILURE, or TRANSIENT
 * past the retry limit: the branch fails and abort_txn(e, t, why) starts
 * the rollback. Else: retry with backoff. */
typedef void (*drive_abort_fn)(struct engine *e, struct txn *t, const char *why);
void drive_refused_or_retry(struct engine *e, struct branch *b, const struct call_result *res,
                            uint32_t attempts, drive_abort_fn abort_txn);

/* Whether a must-succeed operation other than b's has exhausted its retries
 * (needs_attention stays set while one has). */
int drive_other_stuck(const struct txn *t, const struct branch *b);

/* A branch is idle when no call is outstanding and no retry timer armed. */
int drive_idle(const struct branch *b);

#endif
