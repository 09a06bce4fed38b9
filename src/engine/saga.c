/*
 * saga.c - the saga driver: run each step's action in order; when one fails
 * (refused with 409, retries exhausted, or the transaction's timeout), run the
 * compensation of every step that started, newest first.
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

#include "common/rnd.h"
#include "common/slog.h"
#include "engine/backoff.h"
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
    engine_call(e, b, "action", b->action, on_action);
}

static void send_compensate(struct engine *e, struct branch *b)
{
    b->compensate_attempts++;
    engine_call(e, b, "compensate", b->compensate, on_compensate);
}

/* A branch is idle when nothing is outstanding for it. */
static int idle(const struct branch *b)
{
    return !b->in_flight && !sched_timer_armed(&b->timer);
}

static void forward(struct engine *e, struct txn *t)
{
    for (uint32_t i = 0; i < t->nbranches; i++) {
        struct branch *b = &t->branches[i];
        switch (b->state) {
        case BR_SUCCEEDED:
            continue;
        case BR_PENDING:
            branch_set_state(b, BR_RUNNING, engine_now_wall(), "start");
            send_action(e, b);
            return;
        case BR_RUNNING:
            if (idle(b))
                send_action(e, b); /* resumed after a restart */
            return;
        default:
            /* failed/compensating steps mean the saga is aborting */
            slog_error("saga step in a backward state while going forward", "gid=%s branch=%u",
                       t->gid, i + 1);
            return;
        }
    }
    /* every step succeeded but the final state was not logged: log it now */
    if (txn_set_state(t, TXN_SUCCEEDED, engine_now_wall(), "all steps succeeded") == 0)
        engine_log_update(e, t, NULL, after_log);
}

/* Whether any branch below `below` still needs compensating. */
static int more_to_compensate(const struct txn *t, uint32_t below)
{
    for (uint32_t i = 0; i < below; i++) {
        enum branch_state s = t->branches[i].state;
        if (s != BR_PENDING && s != BR_COMPENSATED)
            return 1;
    }
    return 0;
}

static void backward(struct engine *e, struct txn *t)
{
    for (uint32_t n = t->nbranches; n > 0; n--) {
        struct branch *b = &t->branches[n - 1];
        switch (b->state) {
        case BR_PENDING:
        case BR_COMPENSATED:
            continue;
        case BR_RUNNING:
        case BR_SUCCEEDED:
        case BR_FAILED:
            if (b->in_flight)
                return; /* its action answers first; then we compensate it */
            engine_retry_cancel(e, b);
            branch_set_state(b, BR_COMPENSATING, engine_now_wall(), "rollback");
            send_compensate(e, b);
            return;
        case BR_COMPENSATING:
            if (idle(b))
                send_compensate(e, b);
            return;
        default:
            return;
        }
    }
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

/* Describe a call result for last_error. */
static void describe(const struct call_result *res, char *out, size_t n)
{
    if (res->error)
        snprintf(out, n, "%s", res->error);
    else
        snprintf(out, n, "status %d", res->status);
}

static void on_action(struct engine *e, struct branch *b, const struct call_result *res)
{
    struct txn *t = b->txn;
    char err[256];
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
        if (b->idx + 1 == t->nbranches)
            txn_set_state(t, TXN_SUCCEEDED, now, "last step succeeded");
        engine_log_update(e, t, b, after_log);
        return;
    case CALL_FAILURE:
        describe(res, err, sizeof err);
        branch_set_error(b, err);
        branch_set_state(b, BR_FAILED, now, "action refused");
        start_abort(e, t, "a step failed");
        return;
    case CALL_ONGOING:
        engine_retry_in(e, b, t->retry.initial_ms);
        return;
    case CALL_TRANSIENT:
        describe(res, err, sizeof err);
        branch_set_error(b, err);
        if (++b->transient > t->retry.limit) {
            char why[300];
            snprintf(why, sizeof why, "gave up after %u attempts: %s", b->action_attempts, err);
            branch_set_error(b, why);
            branch_set_state(b, BR_FAILED, now, "retries exhausted");
            start_abort(e, t, "a step exhausted its retries");
            return;
        }
        engine_retry_in(e, b, backoff_delay_ms(&t->retry, b->transient, rnd_next()));
        return;
    }
}

static void on_compensate(struct engine *e, struct branch *b, const struct call_result *res)
{
    struct txn *t = b->txn;
    char err[256];
    int64_t now = engine_now_wall();
    switch (res->outcome) {
    case CALL_SUCCESS:
        branch_set_state(b, BR_COMPENSATED, now, "compensation succeeded");
        t->needs_attention = 0;
        if (!more_to_compensate(t, b->idx))
            txn_set_state(t, TXN_FAILED, now, "all started steps compensated");
        engine_log_update(e, t, b, after_log);
        return;
    case CALL_ONGOING:
        engine_retry_in(e, b, t->retry.initial_ms);
        return;
    case CALL_FAILURE:
    case CALL_TRANSIENT:
        describe(res, err, sizeof err);
        if (res->outcome == CALL_FAILURE) {
            char more[300];
            snprintf(more, sizeof more, "%s (a compensation may not fail; retrying)", err);
            branch_set_error(b, more);
        } else {
            branch_set_error(b, err);
        }
        if (++b->transient > t->retry.limit) {
            /* must succeed: keep retrying at the longest interval, flagged */
            if (!t->needs_attention) {
                t->needs_attention = 1;
                t->updated_at = now;
                slog_warn("compensation exhausted its retries; needs attention",
                          "gid=%s branch=%u attempts=%u", t->gid, b->idx + 1,
                          b->compensate_attempts);
                engine_log_update(e, t, b, after_log);
            }
            engine_retry_in(e, b, t->retry.max_ms);
            return;
        }
        engine_retry_in(e, b, backoff_delay_ms(&t->retry, b->transient, rnd_next()));
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
};
