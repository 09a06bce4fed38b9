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
};

extern const struct mode_ops saga_ops;

typedef void (*engine_then_fn)(struct engine *e, struct txn *t);

/* Append t whole (REC_TXN) / an update of t and br (REC_UPDATE); then(e, t)
 * runs once it is durable. t stays alive until then. */
void engine_log_txn(struct engine *e, struct txn *t, engine_then_fn then);
void engine_log_update(struct engine *e, struct txn *t, struct branch *br, engine_then_fn then);

/* Call op (e.g. "action") of branch b at url. cb(e, b, res) runs on the loop
 * unless the engine stops first. Sets b->in_flight while outstanding. */
typedef void (*engine_call_fn)(struct engine *e, struct branch *b, const struct call_result *res);
void engine_call(struct engine *e, struct branch *b, const char *op, const char *url,
                 engine_call_fn cb);

/* Arm b's retry timer delay_ms from now (mode_ops.retry runs then). */
void engine_retry_in(struct engine *e, struct branch *b, uint64_t delay_ms);

/* Disarm b's retry timer if armed. */
void engine_retry_cancel(struct engine *e, struct branch *b);

/* Tell the engine t reached a final state that is now durable. */
void engine_finished(struct engine *e, struct txn *t);

/* Whether the engine is stopping (drivers start nothing new then). */
int engine_stopping(const struct engine *e);
int64_t engine_now_wall(void);

#endif
