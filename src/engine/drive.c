/*
 * drive.c - what the mode drivers (saga.c, tcc.c, xa.c, msg.c) share: how a
 * call result is described, and how an operation that must eventually
 * succeed is retried (DESIGN §2: compensate, cancel, confirm, commit,
 * rollback and deliver never give up; past the retry limit they go on at the
 * longest interval and the transaction is flagged needs_attention).
 */
#include <stdio.h>

#include "common/rnd.h"
#include "common/slog.h"
#include "engine/backoff.h"
#include "engine/engine_int.h"

void drive_describe(const struct call_result *res, char *out, size_t n)
{
    if (res->error)
        snprintf(out, n, "%s", res->error);
    else
        snprintf(out, n, "status %d", res->status);
}

int drive_idle(const struct branch *b)
{
    return !b->in_flight && !sched_timer_armed(&b->timer);
}

int drive_other_stuck(const struct txn *t, const struct branch *b)
{
    for (uint32_t i = 0; i < t->nbranches; i++) {
        const struct branch *o = &t->branches[i];
        if (o != b && o->transient > t->retry.limit)
            return 1;
    }
    return 0;
}

uint32_t drive_count(const struct txn *t, enum branch_state s)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < t->nbranches; i++)
        n += t->branches[i].state == s;
    return n;
}

void drive_refused_or_retry(struct engine *e, struct branch *b, const struct call_result *res,
                            uint32_t attempts, drive_abort_fn abort_txn)
{
    struct txn *t = b->txn;
    char err[256];
    int64_t now = engine_now_wall();
    drive_describe(res, err, sizeof err);
    switch (res->outcome) {
    case CALL_ONGOING:
        engine_retry_in(e, b, t->retry.initial_ms);
        return;
    case CALL_FAILURE:
        branch_set_error(b, err);
        branch_set_state(b, BR_FAILED, now, "refused");
        abort_txn(e, t, "a branch refused");
        return;
    default:
        branch_set_error(b, err);
        if (++b->transient > t->retry.limit) {
            char why[300];
            snprintf(why, sizeof why, "gave up after %u attempts: %s", attempts, err);
            branch_set_error(b, why);
            branch_set_state(b, BR_FAILED, now, "retries exhausted");
            abort_txn(e, t, "a branch exhausted its retries");
            return;
        }
        engine_retry_in(e, b, backoff_delay_ms(&t->retry, b->transient, rnd_next()));
        return;
    }
}

void drive_must_retry(struct engine *e, struct branch *b, const struct call_result *res,
                      engine_then_fn then)
{
    struct txn *t = b->txn;
    if (res->outcome == CALL_ONGOING) {
        engine_retry_in(e, b, t->retry.initial_ms);
        return;
    }
    char err[256], more[320];
    drive_describe(res, err, sizeof err);
    if (res->outcome == CALL_FAILURE) {
        snprintf(more, sizeof more, "%s (this operation may not fail; retrying)", err);
        branch_set_error(b, more);
    } else {
        branch_set_error(b, err);
    }
    if (++b->transient > t->retry.limit) {
        if (!t->needs_attention) {
            t->needs_attention = 1;
            t->updated_at = engine_now_wall();
            slog_warn("an operation that must succeed exhausted its retries; needs attention",
                      "gid=%s branch=%s", t->gid, b->id);
            engine_log_update(e, t, b, then);
        }
        engine_retry_in(e, b, t->retry.max_ms);
        return;
    }
    engine_retry_in(e, b, backoff_delay_ms(&t->retry, b->transient, rnd_next()));
}
