/*
 * xa.c - the two-phase commit driver (type "2pc"), coordinator-driven with
 * HTTP participants, presumed abort.
 *
 * The client creates the transaction ("prepared"), registers each branch
 * (prepare, commit and rollback URLs) and submits. Then:
 *   phase 1: prepare every branch in parallel. A 409 vote, a prepare that
 *            exhausts its retries, an abort request or the timeout → abort.
 *   decision: every branch voted yes → "committing" is logged with the whole
 *            transaction (REC_TXN2). Nothing is committed before it is durable.
 *   phase 2: commit every branch until it succeeds; the final state is
 *            logged once, when the last branch answers.
 * Abort rolls back every branch that is not rolled back yet — also those whose
 * prepare we never sent or never heard back from, since after a crash the log
 * does not say which prepares went out (votes are not logged: presumed abort
 * makes them unnecessary). A rollback of something never prepared must be a
 * no-op at the participant (the barrier does that). Rollbacks of a branch
 * whose prepare is still out wait for its answer.
 *
 * Presumed abort: a transaction found "submitted" (phase 1) after a restart
 * has no logged decision, so it is rolled back; one found "committing" goes
 * on committing.
 */
#include "common/crash.h"
#include "common/slog.h"
#include "engine/engine_int.h"

static void xa_advance(struct engine *e, struct txn *t);

static void after_log(struct engine *e, struct txn *t)
{
    if (t->state == TXN_COMMITTING)
        CRASH_POINT("2pc.after_decision");
    if (txn_state_is_final(t->state))
        engine_finished(e, t);
    else
        xa_advance(e, t);
}

static void on_prepare(struct engine *e, struct branch *b, const struct call_result *res);
static void on_commit(struct engine *e, struct branch *b, const struct call_result *res);
static void on_rollback(struct engine *e, struct branch *b, const struct call_result *res);

static void send_prepare(struct engine *e, struct branch *b)
{
    b->prepare_attempts++;
    CRASH_POINT("2pc.before_prepare");
    engine_call(e, b, "prepare", b->prepare, on_prepare);
}

static void send_commit(struct engine *e, struct branch *b)
{
    b->action_attempts++;
    CRASH_POINT("2pc.before_commit");
    engine_call(e, b, "commit", b->action, on_commit);
}

static void send_rollback(struct engine *e, struct branch *b)
{
    b->compensate_attempts++;
    CRASH_POINT("2pc.before_rollback");
    engine_call(e, b, "rollback", b->compensate, on_rollback);
}

static void xa_abort(struct engine *e, struct txn *t, const char *why)
{
    if (txn_set_state(t, TXN_ABORTING, engine_now_wall(), why) != 0)
        return;
    slog_info("2pc aborting", "gid=%s why=%s", t->gid, why);
    engine_log_txn(e, t, after_log);
}

/* Every branch voted yes: log the decision with the whole transaction. */
static void decide_commit(struct engine *e, struct txn *t)
{
    if (txn_set_state(t, TXN_COMMITTING, engine_now_wall(), "every branch prepared") != 0)
        return;
    CRASH_POINT("2pc.before_decision");
    engine_log_txn(e, t, after_log);
}

static void prepare_all(struct engine *e, struct txn *t)
{
    for (uint32_t i = 0; i < t->nbranches; i++) {
        struct branch *b = &t->branches[i];
        if (b->state == BR_PENDING) {
            branch_set_state(b, BR_RUNNING, engine_now_wall(), "prepare");
            send_prepare(e, b);
        } else if (b->state == BR_RUNNING && drive_idle(b)) {
            send_prepare(e, b);
        }
        if (t->state != TXN_SUBMITTED)
            return; /* a call failed at once and started the abort */
    }
    if (drive_count(t, BR_PREPARED) == t->nbranches)
        decide_commit(e, t);
}

static void commit_all(struct engine *e, struct txn *t)
{
    for (uint32_t i = 0; i < t->nbranches; i++) {
        struct branch *b = &t->branches[i];
        if (b->state == BR_PREPARED && drive_idle(b))
            send_commit(e, b);
    }
    if (drive_count(t, BR_SUCCEEDED) == t->nbranches &&
        txn_set_state(t, TXN_SUCCEEDED, engine_now_wall(), "every branch committed") == 0)
        engine_log_update(e, t, NULL, after_log);
}

static void rollback_all(struct engine *e, struct txn *t)
{
    for (uint32_t i = 0; i < t->nbranches; i++) {
        struct branch *b = &t->branches[i];
        if (b->state == BR_COMPENSATED || b->in_flight)
            continue; /* done / its prepare answers first */
        if (b->state != BR_COMPENSATING) {
            engine_retry_cancel(e, b);
            branch_set_state(b, BR_COMPENSATING, engine_now_wall(), "rollback");
            send_rollback(e, b);
        } else if (drive_idle(b)) {
            send_rollback(e, b);
        }
    }
    if (drive_count(t, BR_COMPENSATED) == t->nbranches &&
        txn_set_state(t, TXN_FAILED, engine_now_wall(), "every branch rolled back") == 0) {
        t->needs_attention = 0;
        engine_log_update(e, t, NULL, after_log);
    }
}

static void xa_advance(struct engine *e, struct txn *t)
{
    if (engine_stopping(e) || t->pending_records > 0)
        return;
    if (t->state == TXN_SUBMITTED)
        prepare_all(e, t);
    else if (t->state == TXN_COMMITTING)
        commit_all(e, t);
    else if (t->state == TXN_ABORTING)
        rollback_all(e, t);
}

static void on_prepare(struct engine *e, struct branch *b, const struct call_result *res)
{
    struct txn *t = b->txn;
    if (t->state != TXN_SUBMITTED) {
        xa_advance(e, t); /* aborted while the prepare was out: roll it back now */
        return;
    }
    int64_t now = engine_now_wall();
    switch (res->outcome) {
    case CALL_SUCCESS:
        branch_set_state(b, BR_PREPARED, now, "voted yes");
        CRASH_POINT("2pc.after_prepare");
        if (drive_count(t, BR_PREPARED) == t->nbranches)
            decide_commit(e, t);
        return;
    default:
        drive_refused_or_retry(e, b, res, b->prepare_attempts, xa_abort);
        return;
    }
}

/* Phase 2 answers are not logged one by one: after a restart a commit or
 * rollback is simply sent again (a participant's is idempotent; a resource's
 * finds the prepared transaction gone, which counts as done). Only the final
 * state is logged, with every branch (REC_TXN2), when the last one answers. */
static void on_commit(struct engine *e, struct branch *b, const struct call_result *res)
{
    struct txn *t = b->txn;
    CRASH_POINT("2pc.after_commit");
    if (res->outcome != CALL_SUCCESS) {
        drive_must_retry(e, b, res, after_log);
        return;
    }
    int64_t now = engine_now_wall();
    branch_set_state(b, BR_SUCCEEDED, now, "committed");
    t->needs_attention = drive_other_stuck(t, b);
    if (drive_count(t, BR_SUCCEEDED) == t->nbranches &&
        txn_set_state(t, TXN_SUCCEEDED, now, "every branch committed") == 0)
        engine_log_txn(e, t, after_log);
}

static void on_rollback(struct engine *e, struct branch *b, const struct call_result *res)
{
    struct txn *t = b->txn;
    CRASH_POINT("2pc.after_rollback");
    if (res->outcome != CALL_SUCCESS) {
        drive_must_retry(e, b, res, after_log);
        return;
    }
    int64_t now = engine_now_wall();
    branch_set_state(b, BR_COMPENSATED, now, "rolled back");
    t->needs_attention = drive_other_stuck(t, b);
    if (drive_count(t, BR_COMPENSATED) == t->nbranches &&
        txn_set_state(t, TXN_FAILED, now, "every branch rolled back") == 0)
        engine_log_txn(e, t, after_log);
}

static void xa_expire(struct engine *e, struct txn *t)
{
    if (t->state == TXN_PREPARED || t->state == TXN_SUBMITTED)
        xa_abort(e, t, "transaction timeout before the commit decision");
}

static void xa_retry(struct engine *e, struct branch *b)
{
    struct txn *t = b->txn;
    if (b->in_flight || t->pending_records > 0)
        return;
    if (b->state == BR_RUNNING && t->state == TXN_SUBMITTED)
        send_prepare(e, b);
    else if (b->state == BR_PREPARED && t->state == TXN_COMMITTING)
        send_commit(e, b);
    else if (b->state == BR_COMPENSATING && t->state == TXN_ABORTING)
        send_rollback(e, b);
    else
        xa_advance(e, t);
}

static void xa_recovered(struct engine *e, struct txn *t)
{
    if (t->state == TXN_SUBMITTED)
        xa_abort(e, t, "restarted before the commit decision (presumed abort)");
    else
        xa_advance(e, t);
}

const struct mode_ops xa_ops = {
    .advance = xa_advance,
    .expire = xa_expire,
    .retry = xa_retry,
    .abort = xa_abort,
    .recovered = xa_recovered,
};
