/*
 * barrier.c - the barrier's decisions, shared by the PostgreSQL and SQLite
 * backends (barrier_pg.c, barrier_sqlite.c), and the HTTP statuses of its
 * answers.
 *
 * Everything here is a sequence of "insert this key unless it exists" and
 * "read the reason of this key" on the caller's connection; the primary key
 * (gid, branch, op) does the rest, including against concurrent deliveries:
 * a second transaction inserting a key that a first one holds uncommitted
 * waits for it and then sees its outcome (PostgreSQL ON CONFLICT DO
 * NOTHING), or cannot start writing at all until the first ends (SQLite has
 * one writer).
 *
 * For an undo U of forward op F (compensate/action, cancel/try,
 * rollback/prepare):
 *   insert (F, reason U)  -> inserted: F never ran, and now never will
 *   insert (U, reason U)  -> not inserted: DUPLICATE
 *                            inserted after F was inserted: NULL_UNDO
 *                            otherwise: APPLY (undo what F did)
 * For a forward op F:
 *   insert (F, reason F)  -> inserted: APPLY
 *                            else reason F: DUPLICATE, reason U: LATE
 * Any other op: insert (op, reason op) -> APPLY, or DUPLICATE.
 *
 * Messages: the mark is (gid, "00", "msg"). The local transaction inserts it
 * with reason "msg"; a check inserts it with reason "rollback" in its own
 * transaction. Whichever commits first wins, and the loser sees the winner's
 * reason: the check answers from it, the mark fails with DTX_ECONFLICT.
 */
#include <string.h>

#include "barrier_int.h"

/* How many times a key that blocked an insert but then could not be read is
 * tried again (only a row deleted in between, by a cleanup outside libdtx,
 * does that; it does not happen in normal operation). */
#define CLAIM_ATTEMPTS 3

static const struct {
    const char *undo;
    const char *forward;
} pairs[] = {
    {"compensate", "action"},
    {"cancel", "try"},
    {"rollback", "prepare"},
};

const char *barrier_forward_of(const char *op)
{
    for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++)
        if (strcmp(op, pairs[i].undo) == 0)
            return pairs[i].forward;
    return NULL;
}

int barrier_is_forward(const char *op)
{
    for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++)
        if (strcmp(op, pairs[i].forward) == 0)
            return 1;
    return 0;
}

int barrier_arg_ok(const char *s)
{
    return s != NULL && s[0] != '\0';
}

/* Insert (gid, branch, op, reason) or, if the key exists, read the reason
 * already there into have. *inserted says which. Returns 0, the backend's
 * error, or DTX_ECONFLICT if the key kept vanishing between the two. */
static int claim(const struct barrier_store *s, void *db, const char *gid, const char *branch,
                 const char *op, const char *reason, int *inserted /* OUT */,
                 char have[BARRIER_REASON_CAP] /* OUT */)
{
    for (int attempt = 0; attempt < CLAIM_ATTEMPTS; attempt++) {
        int found = 0;
        int rc = s->insert(db, gid, branch, op, reason, inserted);
        if (rc != 0)
            return rc;
        if (*inserted)
            return 0;
        rc = s->reason(db, gid, branch, op, have, &found);
        if (rc != 0)
            return rc;
        if (found)
            return 0;
    }
    return DTX_ECONFLICT;
}

int barrier_run(const struct barrier_store *s, void *db, const char *gid, const char *branch,
                const char *op, enum dtx_barrier_result *out)
{
    const char *forward = barrier_forward_of(op);
    int inserted = 0;
    int rc;

    if (forward != NULL) {
        int forward_inserted = 0;
        rc = s->insert(db, gid, branch, forward, op, &forward_inserted);
        if (rc != 0)
            return rc;
        rc = s->insert(db, gid, branch, op, op, &inserted);
        if (rc != 0)
            return rc;
        if (!inserted)
            *out = DTX_BARRIER_DUPLICATE;
        else if (forward_inserted)
            *out = DTX_BARRIER_NULL_UNDO;
        else
            *out = DTX_BARRIER_APPLY;
        return 0;
    }

    if (barrier_is_forward(op)) {
        char have[BARRIER_REASON_CAP];
        rc = claim(s, db, gid, branch, op, op, &inserted, have);
        if (rc != 0)
            return rc;
        if (inserted)
            *out = DTX_BARRIER_APPLY;
        else if (strcmp(have, op) == 0)
            *out = DTX_BARRIER_DUPLICATE;
        else
            *out = DTX_BARRIER_LATE; /* blocked by its undo */
        return 0;
    }

    rc = s->insert(db, gid, branch, op, op, &inserted);
    if (rc != 0)
        return rc;
    *out = inserted ? DTX_BARRIER_APPLY : DTX_BARRIER_DUPLICATE;
    return 0;
}

int barrier_msg_mark(const struct barrier_store *s, void *db, const char *gid)
{
    int inserted = 0;
    int rc = s->insert(db, gid, DTX_MSG_BRANCH, DTX_MSG_OP, DTX_MSG_OP, &inserted);
    if (rc != 0)
        return rc;
    return inserted ? 0 : DTX_ECONFLICT;
}

int barrier_msg_check(const struct barrier_store *s, void *db, const char *gid,
                      enum dtx_msg_state *out)
{
    char have[BARRIER_REASON_CAP];
    enum dtx_msg_state state;
    int inserted = 0;
    int rc = s->begin(db);
    if (rc != 0)
        return rc;
    rc = claim(s, db, gid, DTX_MSG_BRANCH, DTX_MSG_OP, BARRIER_MSG_ROLLBACK, &inserted, have);
    if (rc != 0)
        goto fail;
    if (inserted || strcmp(have, BARRIER_MSG_ROLLBACK) == 0) {
        state = DTX_MSG_ROLLED_BACK;
    } else if (strcmp(have, DTX_MSG_OP) == 0) {
        state = DTX_MSG_COMMITTED;
    } else {
        rc = DTX_ECONFLICT; /* a row libdtx did not write */
        goto fail;
    }
    rc = s->commit(db);
    if (rc != 0)
        goto fail;
    *out = state;
    return 0;

fail:
    s->rollback(db);
    return rc;
}

int dtx_barrier_http_status(enum dtx_barrier_result r)
{
    switch (r) {
    case DTX_BARRIER_APPLY:
    case DTX_BARRIER_DUPLICATE:
    case DTX_BARRIER_NULL_UNDO:
        return 200;
    case DTX_BARRIER_LATE:
        return 409;
    }
    return 500; /* not a result: a bug in the caller, and not a success */
}

int dtx_msg_http_status(enum dtx_msg_state st)
{
    switch (st) {
    case DTX_MSG_COMMITTED:
        return 200;
    case DTX_MSG_ROLLED_BACK:
        return 409;
    }
    return 500;
}
