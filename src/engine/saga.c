/*
 * saga.c - the saga driver: run each step's action once the steps it waits
 * for have succeeded (in a sequential saga, the previous one; in a concurrent
 * saga, those in its `after` list, so independent steps run in parallel).
 * When one fails (refused with 409, retries exhausted, or the transaction's
 * timeout), compensate every step that started, in reverse dependency order:
 * a step is compensated once every started step that waits for it has been.
 * For a sequential saga that is newest first, one at a time.
 *
 * The driver is a function of the states alone (saga_advance), so it is the
 * same code after creation, after an answer, after a retry timer and after a
 * restart. Its records, and so the durability waits per saga:
 *   - creation (REC_TXN, engine.c), before the first action;
 *   - each step's success (REC_UPDATE), before the next action is sent; the
 *     last one carries the final "succeeded" state as well;
 *   - the switch to aborting (REC_TXN: every started step is on disk before
 *     any compensation is sent);
 *   - each compensation's success; the last one carries "failed".
 * A step whose record did not reach the disk before a crash is simply run
 * again: participants are idempotent on Idempotency-Key (DESIGN §2).
 */
#include <stdio.h>
#include <stdlib.h>

#include "common/alloc.h"
#include "common/crash.h"
#include "common/slog.h"
#include "engine/engine_int.h"

static void saga_advance(struct engine *e, struct txn *t);

static void after_log(struct engine *e, struct txn *t)
{
    if (txn_state_is_final(t->state))
        engine_finished(e, t);
    else
        saga_advance(e, t);
}

/* Switch t to aborting (why: the cause) and log the whole transaction. */
static void start_abort(struct engine *e, struct txn *t, const char *why)
{
    if (txn_set_state(t, TXN_ABORTING, engine_now_wall(), why) != 0)
        return;
    slog_info("saga aborting", "gid=%s why=%s", t->gid, why);
    engine_log_txn(e, t, after_log);
}

static void on_action(struct engine *e, struct branch *b, const struct call_result *res);
static void on_compensate(struct engine *e, struct branch *b, const struct call_result *res);

static void send_action(struct engine *e, struct branch *b)
{
    b->action_attempts++;
    CRASH_POINT("saga.before_action");
    engine_call(e, b, "action", b->action, on_action);
}

static void send_compensate(struct engine *e, struct branch *b)
{
    b->compensate_attempts++;
    CRASH_POINT("saga.before_compensate");
    engine_call(e, b, "compensate", b->compensate, on_compensate);
}

static void forward(struct engine *e, struct txn *t)
{
    int done = 1;
    for (uint32_t i = 0; i < t->nbranches; i++) {
        struct branch *b = &t->branches[i];
        switch (b->state) {
        case BR_SUCCEEDED:
            continue;
        case BR_PENDING:
            done = 0;
            if (txn_ready(t, i)) {
                branch_set_state(b, BR_RUNNING, engine_now_wall(), "start");
                send_action(e, b);
            }
            break;
        case BR_RUNNING:
            done = 0;
            if (drive_idle(b))
                send_action(e, b); /* resumed after a restart */
            break;
        default:
            /* failed/compensating steps mean the saga is aborting */
            slog_error("saga step in a backward state while going forward", "gid=%s branch=%s",
                       t->gid, b->id);
            return;
        }
        if (t->state != TXN_SUBMITTED)
            return; /* a call failed at once and started the abort */
    }
    if (!done)
        return;
    /* every step succeeded but the final state was not logged: log it now */
    if (txn_set_state(t, TXN_SUCCEEDED, engine_now_wall(), "all steps succeeded") == 0)
        engine_log_update(e, t, NULL, after_log);
}

/* A started step not compensated yet (it is, or will be, compensated). */
static int outstanding(enum branch_state s)
{
    return s != BR_PENDING && s != BR_COMPENSATED;
}

static int any_to_compensate(const struct txn *t)
{
    for (uint32_t i = 0; i < t->nbranches; i++)
        if (outstanding(t->branches[i].state))
            return 1;
    return 0;
}

static void backward(struct engine *e, struct txn *t)
{
    uint32_t n = t->nbranches;
    /* blocked[i]: a started step that waits for i is not compensated yet */
    unsigned char *blocked = xcalloc(n, 1);
    for (uint32_t j = 0; j < n; j++) {
        const struct branch *d = &t->branches[j];
        if (!outstanding(d->state))
            continue;
        if (!t->concurrent && j > 0)
            blocked[j - 1] = 1;
        for (uint32_t k = 0; t->concurrent && k < d->nafter; k++)
            blocked[d->after[k]] = 1;
    }
    int remaining = 0;
    for (uint32_t k = n; k > 0; k--) {
        struct branch *b = &t->branches[k - 1];
        switch (b->state) {
        case BR_PENDING:
        case BR_COMPENSATED:
            continue;
        case BR_RUNNING:
        case BR_SUCCEEDED:
        case BR_FAILED:
            remaining = 1;
            if (b->in_flight || blocked[k - 1])
                continue; /* its action answers first / its dependents go first */
            engine_retry_cancel(e, b);
            branch_set_state(b, BR_COMPENSATING, engine_now_wall(), "rollback");
            send_compensate(e, b);
            continue;
        case BR_COMPENSATING:
            remaining = 1;
            if (drive_idle(b))
                send_compensate(e, b);
            continue;
        default:
            continue;
        }
    }
    free(blocked);
    if (remaining)
        return;
    t->needs_attention = 0;
    if (txn_set_state(t, TXN_FAILED, engine_now_wall(), "all started steps compensated") == 0)
        engine_log_update(e, t, NULL, after_log);
}

static void saga_advance(struct engine *e, struct txn *t)
{
    if (engine_stopping(e) || t->pending_records > 0)
        return; /* the durable callback of the pending record continues */
    if (t->state == TXN_SUBMITTED)
        forward(e, t);
    else if (t->state == TXN_ABORTING)
        backward(e, t);
}

static void on_action(struct engine *e, struct branch *b, const struct call_result *res)
{
    struct txn *t = b->txn;
    CRASH_POINT("saga.after_action");
    if (t->state != TXN_SUBMITTED) {
        /* aborted while the action was out (timeout): whatever it answered,
         * the step started, so it is compensated now */
        saga_advance(e, t);
        return;
    }
    int64_t now = engine_now_wall();
    switch (res->outcome) {
    case CALL_SUCCESS:
        branch_set_state(b, BR_SUCCEEDED, now, "action succeeded");
        if (drive_count(t, BR_SUCCEEDED) == t->nbranches)
            txn_set_state(t, TXN_SUCCEEDED, now, "last step succeeded");
        engine_log_update(e, t, b, after_log);
        return;
    default:
        drive_refused_or_retry(e, b, res, b->action_attempts, start_abort);
        return;
    }
}

static void on_compensate(struct engine *e, struct branch *b, const struct call_result *res)
{
    struct txn *t = b->txn;
    CRASH_POINT("saga.after_compensate");
    int64_t now = engine_now_wall();
    switch (res->outcome) {
    case CALL_SUCCESS:
        branch_set_state(b, BR_COMPENSATED, now, "compensation succeeded");
        t->needs_attention = drive_other_stuck(t, b);
        if (!any_to_compensate(t))
            txn_set_state(t, TXN_FAILED, now, "all started steps compensated");
        engine_log_update(e, t, b, after_log);
        return;
    default:
        drive_must_retry(e, b, res, after_log);
        return;
    }
}

static void saga_expire(struct engine *e, struct txn *t)
{
    if (t->state != TXN_SUBMITTED)
        return;
    start_abort(e, t, "transaction timeout");
}

static void saga_retry(struct engine *e, struct branch *b)
{
    struct txn *t = b->txn;
    if (b->in_flight || t->pending_records > 0)
        return;
    if (b->state == BR_RUNNING && t->state == TXN_SUBMITTED)
        send_action(e, b);
    else if (b->state == BR_COMPENSATING && t->state == TXN_ABORTING)
        send_compensate(e, b);
    else
        saga_advance(e, t);
}

const struct mode_ops saga_ops = {
    .advance = saga_advance,
    .expire = saga_expire,
    .retry = saga_retry,
    .abort = start_abort,
};
