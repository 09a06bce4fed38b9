/*
 * barrier_int.h - what the PostgreSQL and SQLite barriers share.
 *
 * The decisions (which rows to insert for which op, what an existing row
 * means, how a msg check answers) live once, in barrier.c. A backend gives
 * them four primitives on its own connection type through struct
 * barrier_store; barrier_pg.c and barrier_sqlite.c are only those primitives,
 * the table's DDL and their argument and transaction-state checks.
 *
 * The table, in both databases:
 *
 *   dtx_barrier(gid, branch, op, reason, created_at), primary key (gid, branch, op)
 *
 * A row (gid, branch, op) says "op of this branch has been decided": reason
 * is the op whose arrival wrote it. For a forward op (action, try, prepare)
 * reason is either the op itself (it ran) or the undo that blocked it (the
 * undo came first: null undo, and the forward op must not run any more).
 * Undo ops and every other op always write reason = op. The msg mark is the
 * row (gid, "00", "msg") with reason "msg" (the local transaction
 * committed) or "rollback" (a check found no mark and closed the door).
 */
#ifndef DTX_BARRIER_INT_H
#define DTX_BARRIER_INT_H

#include <stddef.h>

#include "dtx.h"

/* The functions below are shared by the backends, not part of the API: the
 * shared library does not export them. */
#define BARRIER_HIDDEN __attribute__((visibility("hidden")))

/* The longest reason the decisions compare with, plus one; a longer reason
 * is read truncated to BARRIER_REASON_CAP - 1 bytes, which can then equal
 * none of the op names (all much shorter). */
#define BARRIER_REASON_CAP 32

/* The reason a msg check writes when it finds no mark. */
#define BARRIER_MSG_ROLLBACK "rollback"

struct barrier_store {
    /* Insert (gid, branch, op, reason) unless a row with that key exists;
     * *inserted = 1 if a row was inserted, 0 if not. 0 or DTX_EDB/DTX_ENOMEM. */
    int (*insert)(void *db, const char *gid, const char *branch, const char *op, const char *reason,
                  int *inserted /* OUT */);
    /* Read the reason of (gid, branch, op) into reason (NUL-terminated,
     * truncated to BARRIER_REASON_CAP - 1 bytes); *found = 0 if there is no
     * such row. 0 or DTX_EDB/DTX_ENOMEM. */
    int (*reason)(void *db, const char *gid, const char *branch, const char *op,
                  char reason[BARRIER_REASON_CAP] /* OUT */, int *found /* OUT */);
    /* Start, commit or roll back the check's own transaction. 0 or DTX_EDB. */
    int (*begin)(void *db);
    int (*commit)(void *db);
    void (*rollback)(void *db); /* best effort: the transaction is being abandoned */
};

/* The forward op that undo op cancels ("action" for "compensate", "try" for
 * "cancel", "prepare" for "rollback"), or NULL if op is no undo. */
BARRIER_HIDDEN const char *barrier_forward_of(const char *op);

/* 1 if op is one that an undo cancels (action, try, prepare), else 0. */
BARRIER_HIDDEN int barrier_is_forward(const char *op);

/* 1 if s is a usable argument (not NULL, not empty), else 0. */
BARRIER_HIDDEN int barrier_arg_ok(const char *s);

/* The barrier decision for gid/branch/op, on an open transaction of db
 * (checked by the caller, with the arguments). */
BARRIER_HIDDEN int barrier_run(const struct barrier_store *s, void *db, const char *gid,
                               const char *branch, const char *op,
                               enum dtx_barrier_result *out /* OUT */);

/* Write the msg mark for gid in the caller's open transaction: 0, or
 * DTX_ECONFLICT when a row is already there. */
BARRIER_HIDDEN int barrier_msg_mark(const struct barrier_store *s, void *db, const char *gid);

/* Answer a msg check for gid in a transaction of its own (begun, committed,
 * or rolled back on error here; the caller checked that none is open). */
BARRIER_HIDDEN int barrier_msg_check(const struct barrier_store *s, void *db, const char *gid,
                                     enum dtx_msg_state *out /* OUT */);

#endif
