/*
 * msg.c - the two-phase message driver (type "msg").
 *
 * The client creates the transaction with its steps and a `check` URL
 * ("prepared"), commits its local transaction, then submits. Submitted, the
 * steps are delivered one after the other, in order, each until it succeeds
 * (a delivery may not fail: a 409 is retried like any transient answer).
 *
 * No submit before the timeout: dtxd asks `check` whether the client's local
 * transaction committed. 2xx → committed: submitted, deliver. 409 → rolled
 * back: the transaction fails (nothing was delivered). 425 → ask again after
 * the fixed interval; anything else → ask again with backoff, and past the
 * retry limit at the longest interval, flagged needs_attention. The timeout
 * timer doubles as the check's retry timer. An abort before submit fails the
 * transaction at once.
 */
#include "common/crash.h"
#include "common/rnd.h"
#include "common/slog.h"
#include "engine/backoff.h"
#include "engine/engine_int.h"

static void msg_advance(struct engine *e, struct txn *t);

static void after_log(struct engine *e, struct txn *t)
{
    if (txn_state_is_final(t->state))
        engine_finished(e, t);
    else
        msg_advance(e, t);
}

static void on_deliver(struct engine *e, struct branch *b, const struct call_result *res);

static void send_deliver(struct engine *e, struct branch *b)
{
    b->action_attempts++;
    CRASH_POINT("msg.before_deliver");
    engine_call(e, b, "action", b->action, on_deliver);
}

static void deliver_next(struct engine *e, struct txn *t)
{
    for (uint32_t i = 0; i < t->nbranches; i++) {
        struct branch *b = &t->branches[i];
        if (b->state == BR_SUCCEEDED)
            continue;
        if (b->state == BR_PENDING) {
            branch_set_state(b, BR_RUNNING, engine_now_wall(), "deliver");
            send_deliver(e, b);
        } else if (b->state == BR_RUNNING && drive_idle(b)) {
            send_deliver(e, b);
        }
        return; /* in order: the next step waits for this one */
    }
    if (txn_set_state(t, TXN_SUCCEEDED, engine_now_wall(), "every step delivered") == 0)
        engine_log_update(e, t, NULL, after_log);
}

/* Aborted before anything was delivered: nothing to undo. */
static void finish_abort(struct engine *e, struct txn *t)
{
    t->needs_attention = 0;
    if (txn_set_state(t, TXN_FAILED, engine_now_wall(), "nothing was delivered") == 0)
        engine_log_update(e, t, NULL, after_log);
}

static void msg_advance(struct engine *e, struct txn *t)
{
    if (engine_stopping(e) || t->pending_records > 0)
        return;
    if (t->state == TXN_SUBMITTED)
        deliver_next(e, t);
    else if (t->state == TXN_ABORTING)
        finish_abort(e, t);
}

static void on_deliver(struct engine *e, struct branch *b, const struct call_result *res)
{
    struct txn *t = b->txn;
    CRASH_POINT("msg.after_deliver");
    if (res->outcome != CALL_SUCCESS) {
        drive_must_retry(e, b, res, after_log);
        return;
    }
    int64_t now = engine_now_wall();
    branch_set_state(b, BR_SUCCEEDED, now, "delivered");
    t->needs_attention = drive_other_stuck(t, b);
    if (b->idx + 1 == t->nbranches)
        txn_set_state(t, TXN_SUCCEEDED, now, "every step delivered");
    engine_log_update(e, t, b, after_log);
}

static void msg_abort(struct engine *e, struct txn *t, const char *why)
{
    int64_t now = engine_now_wall();
    if (txn_set_state(t, TXN_ABORTING, now, why) != 0)
        return;
    slog_info("msg aborted", "gid=%s why=%s", t->gid, why);
    t->needs_attention = 0;
    txn_set_state(t, TXN_FAILED, now, "nothing was delivered");
    engine_log_update(e, t, NULL, after_log);
}

static void on_check(struct engine *e, struct txn *t, const struct call_result *res)
{
    CRASH_POINT("msg.after_check");
    if (t->state != TXN_PREPARED)
        return; /* submitted or aborted while the check was out */
    char err[256];
    switch (res->outcome) {
    case CALL_SUCCESS:
        t->check_transient = 0;
        t->needs_attention = 0;
        txn_set_state(t, TXN_SUBMITTED, engine_now_wall(), "check: committed");
        engine_log_update(e, t, NULL, after_log);
        return;
    case CALL_FAILURE:
        msg_abort(e, t, "check: the local transaction rolled back");
        return;
    case CALL_ONGOING:
        engine_expire_in(e, t, t->retry.initial_ms);
        return;
    case CALL_TRANSIENT:
        drive_describe(res, err, sizeof err);
        slog_info("msg check failed; asking again", "gid=%s err=%s", t->gid, err);
        if (++t->check_transient > t->retry.limit) {
            if (!t->needs_attention) {
                t->needs_attention = 1;
                t->updated_at = engine_now_wall();
                slog_warn("msg check keeps failing; needs attention", "gid=%s attempts=%u", t->gid,
                          t->check_attempts);
                engine_log_update(e, t, NULL, NULL);
            }
            engine_expire_in(e, t, t->retry.max_ms);
            return;
        }
        engine_expire_in(e, t, backoff_delay_ms(&t->retry, t->check_transient, rnd_next()));
        return;
    }
}

static void msg_expire(struct engine *e, struct txn *t)
{
    if (t->state != TXN_PREPARED || t->check_in_flight)
        return;
    t->check_attempts++;
    engine_call_check(e, t, on_check);
}

static void msg_retry(struct engine *e, struct branch *b)
{
    struct txn *t = b->txn;
    if (b->in_flight || t->pending_records > 0)
        return;
    if (b->state == BR_RUNNING && t->state == TXN_SUBMITTED)
        send_deliver(e, b);
    else
        msg_advance(e, t);
}

const struct mode_ops msg_ops = {
    .advance = msg_advance,
    .expire = msg_expire,
    .retry = msg_retry,
    .abort = msg_abort,
};
