/*
 * tcc.c - the TCC driver. The client creates the transaction ("prepared"),
 * registers each branch (its confirm and cancel URLs) and then calls the
 * branch's Try itself. On submit every branch is confirmed; on abort, or when
 * the transaction's timeout passes before a submit, every registered branch
 * is cancelled — also one whose Try never reached the participant or whose
 * outcome the client never learnt: the participant's barrier turns that
 * cancel into a no-op and blocks a late Try (libdtx, DESIGN §2 Isolation).
 *
 * Confirm and cancel must eventually succeed (drive_must_retry); branches are
 * independent, so all confirms (or cancels) run in parallel. Records: the
 * submit or abort (engine.c / tcc_abort), each branch's confirm or cancel
 * success (the last carries the final state).
 */
#include "common/crash.h"
#include "common/slog.h"
#include "engine/engine_int.h"

static void tcc_advance(struct engine *e, struct txn *t);

static void after_log(struct engine *e, struct txn *t)
{
    if (txn_state_is_final(t->state))
        engine_finished(e, t);
    else
        tcc_advance(e, t);
}

static void on_confirm(struct engine *e, struct branch *b, const struct call_result *res);
static void on_cancel(struct engine *e, struct branch *b, const struct call_result *res);

static void send_confirm(struct engine *e, struct branch *b)
{
    b->action_attempts++;
    CRASH_POINT("tcc.before_confirm");
    engine_call(e, b, "confirm", b->action, on_confirm);
}

static void send_cancel(struct engine *e, struct branch *b)
{
    b->compensate_attempts++;
    CRASH_POINT("tcc.before_cancel");
    engine_call(e, b, "cancel", b->compensate, on_cancel);
}

static void confirm_all(struct engine *e, struct txn *t)
{
    for (uint32_t i = 0; i < t->nbranches; i++) {
        struct branch *b = &t->branches[i];
        if (b->state == BR_PENDING) {
            branch_set_state(b, BR_RUNNING, engine_now_wall(), "confirm");
            send_confirm(e, b);
        } else if (b->state == BR_RUNNING && drive_idle(b)) {
            send_confirm(e, b); /* resumed after a restart */
        }
    }
    if (drive_count(t, BR_SUCCEEDED) == t->nbranches &&
        txn_set_state(t, TXN_SUCCEEDED, engine_now_wall(), "every branch confirmed") == 0)
        engine_log_update(e, t, NULL, after_log);
}

static void cancel_all(struct engine *e, struct txn *t)
{
    for (uint32_t i = 0; i < t->nbranches; i++) {
        struct branch *b = &t->branches[i];
        if (b->state == BR_PENDING) {
            branch_set_state(b, BR_COMPENSATING, engine_now_wall(), "cancel");
            send_cancel(e, b);
        } else if (b->state == BR_COMPENSATING && drive_idle(b)) {
            send_cancel(e, b);
        }
    }
    if (drive_count(t, BR_COMPENSATED) == t->nbranches &&
        txn_set_state(t, TXN_FAILED, engine_now_wall(), "every branch cancelled") == 0) {
        t->needs_attention = 0;
        engine_log_update(e, t, NULL, after_log);
    }
}

static void tcc_advance(struct engine *e, struct txn *t)
{
    if (engine_stopping(e) || t->pending_records > 0)
        return;
    if (t->state == TXN_SUBMITTED)
        confirm_all(e, t);
    else if (t->state == TXN_ABORTING)
        cancel_all(e, t);
}

static void on_confirm(struct engine *e, struct branch *b, const struct call_result *res)
{
    struct txn *t = b->txn;
    CRASH_POINT("tcc.after_confirm");
    if (res->outcome != CALL_SUCCESS) {
        drive_must_retry(e, b, res, after_log);
        return;
    }
    int64_t now = engine_now_wall();
    branch_set_state(b, BR_SUCCEEDED, now, "confirmed");
    t->needs_attention = drive_other_stuck(t, b);
    if (drive_count(t, BR_SUCCEEDED) == t->nbranches)
        txn_set_state(t, TXN_SUCCEEDED, now, "every branch confirmed");
    engine_log_update(e, t, b, after_log);
}

static void on_cancel(struct engine *e, struct branch *b, const struct call_result *res)
{
    struct txn *t = b->txn;
    CRASH_POINT("tcc.after_cancel");
    if (res->outcome != CALL_SUCCESS) {
        drive_must_retry(e, b, res, after_log);
        return;
    }
    int64_t now = engine_now_wall();
    branch_set_state(b, BR_COMPENSATED, now, "cancelled");
    t->needs_attention = drive_other_stuck(t, b);
    if (drive_count(t, BR_COMPENSATED) == t->nbranches)
        txn_set_state(t, TXN_FAILED, now, "every branch cancelled");
    engine_log_update(e, t, b, after_log);
}

static void tcc_abort(struct engine *e, struct txn *t, const char *why)
{
    if (txn_set_state(t, TXN_ABORTING, engine_now_wall(), why) != 0)
        return;
    slog_info("tcc aborting", "gid=%s why=%s", t->gid, why);
    engine_log_update(e, t, NULL, after_log);
}

static void tcc_expire(struct engine *e, struct txn *t)
{
    if (t->state == TXN_PREPARED)
        tcc_abort(e, t, "transaction timeout before submit");
}

static void tcc_retry(struct engine *e, struct branch *b)
{
    struct txn *t = b->txn;
    if (b->in_flight || t->pending_records > 0)
        return;
    if (b->state == BR_RUNNING && t->state == TXN_SUBMITTED)
        send_confirm(e, b);
    else if (b->state == BR_COMPENSATING && t->state == TXN_ABORTING)
        send_cancel(e, b);
    else
        tcc_advance(e, t);
}

const struct mode_ops tcc_ops = {
    .advance = tcc_advance,
    .expire = tcc_expire,
    .retry = tcc_retry,
    .abort = tcc_abort,
};
