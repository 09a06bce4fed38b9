/*
 * txn.h - the transaction model: global transactions, their branches, their
 * states, and the one function per level through which every state changes.
 *
 * A global transaction (txn) has a type (the mode), a state, options and an
 * ordered array of branches. Every mode uses the same branch with its own
 * names for the URLs it holds:
 *
 *   mode  forward (action)  undo (compensate)  prepare
 *   saga  action            compensate         -
 *   tcc   confirm           cancel             -      (the client runs Try)
 *   2pc   commit            rollback           prepare
 *   msg   action (deliver)  -                  -
 *
 * Global states (DESIGN §2; "committing" is 2pc's logged commit decision):
 *
 *   prepared ──> submitted ──> succeeded
 *      │             │  └──> committing ──^   (2pc)
 *      └──────> aborting ──> failed
 *
 * Branch states:
 *
 *   pending ──> running ──> succeeded ──> compensating ──> compensated
 *      │           │  └──> prepared ─┘ ^         (2pc: yes vote, then commit)
 *      │           └──> failed ────────^
 *      └───────────────────────────────^   (tcc cancel / 2pc rollback of a
 *                                           branch whose phase 1 we never saw)
 *
 * "running" means the forward operation (or 2pc's prepare) was sent and its
 * outcome is not known (it is being retried). "failed" means the participant
 * refused it (409) or we gave up retrying; both count as started, so both are
 * compensated. A 2pc branch stays "prepared" while its commit is retried.
 */
#ifndef DTX_TXN_H
#define DTX_TXN_H

#include <stddef.h>
#include <stdint.h>

#include "engine/sched.h"

/* The values of both enums below are stored in the log: append, never renumber. */
enum txn_type {
    TXN_SAGA = 0, /* coordinator runs actions; compensations on failure */
    TXN_TCC,      /* client runs Try; coordinator confirms or cancels */
    TXN_2PC,      /* coordinator prepares, logs the decision, commits or rolls back */
    TXN_MSG,      /* client commits locally, coordinator delivers; `check` decides */
    TXN_TYPE_COUNT
};

enum txn_state {
    TXN_PREPARED = 0, /* created, branches may still be registered (tcc, 2pc, msg) */
    TXN_SUBMITTED,    /* going forward */
    TXN_SUCCEEDED,    /* final: every forward operation succeeded */
    TXN_ABORTING,     /* rolling back: compensations/cancels/rollbacks running */
    TXN_FAILED,       /* final: rolled back */
    TXN_COMMITTING,   /* 2pc: every branch voted yes and the commit decision is durable */
    TXN_STATE_COUNT
};

enum branch_state {
    BR_PENDING = 0,  /* not started */
    BR_RUNNING,      /* forward operation sent, outcome unknown (retrying) */
    BR_SUCCEEDED,    /* forward operation succeeded */
    BR_FAILED,       /* forward operation refused, or given up on */
    BR_COMPENSATING, /* undo operation sent, retrying until it succeeds */
    BR_COMPENSATED,  /* undo operation succeeded */
    BR_PREPARED,     /* 2pc: voted yes; commit (or rollback) comes next */
    BR_STATE_COUNT
};

struct retry_policy {
    uint32_t initial_ms; /* first backoff cap; also the fixed interval after 425 */
    uint32_t max_ms;     /* the longest wait between two attempts */
    uint32_t limit;      /* transient failures allowed before giving up / flagging */
};

/* A step or registered branch as the client declared it (owned strings,
 * NUL-terminated). URLs a mode does not use are NULL. */
struct step_spec {
    char *id;         /* registered branches: the client's branch id, or NULL */
    char *prepare;    /* 2pc */
    char *action;     /* action / confirm / commit */
    char *compensate; /* compensate / cancel / rollback */
    char *payload;    /* compact JSON text sent as the request body */
    size_t payload_len;
    uint32_t *after; /* 0-based indices of the steps it waits for (owned), or NULL */
    uint32_t nafter;
};

/* A validated request to create a transaction (see api/request.h). */
struct txn_spec {
    char *gid; /* NULL: the engine generates one */
    enum txn_type type;
    struct step_spec *steps;
    uint32_t nsteps;
    int concurrent; /* some step declared `after`: steps form a DAG, not a sequence */
    char *check;    /* msg: the URL asked whether the client's local transaction committed */
    int submit;     /* tcc/2pc/msg: created submitted (steps / branches given inline) */
    struct retry_policy retry;
    uint32_t request_timeout_ms;
    uint64_t timeout_ms; /* 0 = no deadline */
    int wait;            /* answer only when finished (bounded by wait_timeout_ms) */
    uint32_t wait_timeout_ms;
};

void txn_spec_free(struct txn_spec *spec); /* frees members and spec itself */
void step_spec_clear(struct step_spec *s); /* frees the members of one step */

struct txn;

struct branch {
    struct txn *txn;
    uint32_t idx;     /* 0-based position */
    char *texts;      /* one allocation that the five below point into */
    char *id;         /* the branch id users and participants see ("1", "2", ... unless chosen) */
    char *prepare;    /* 2pc only, else NULL */
    char *action;     /* action / confirm / commit */
    char *compensate; /* compensate / cancel / rollback; NULL for msg */
    char *payload;
    size_t payload_len;
    uint32_t *after; /* concurrent sagas: 0-based indices it waits for (owned) */
    uint32_t nafter;
    enum branch_state state;
    uint32_t prepare_attempts;    /* 2pc prepare calls made */
    uint32_t action_attempts;     /* forward calls made */
    uint32_t compensate_attempts; /* undo calls made */
    uint32_t transient;           /* transient failures of the current operation */
    char *last_error;             /* NULL or the last failure's description */
    int64_t updated_at;           /* wall ms */
    int in_flight;                /* a call is outstanding */
    struct sched_timer timer;     /* retry timer */
};

struct txn_waiter; /* engine-private */

struct txn {
    char *gid;    /* stored right after the struct (txn_alloc) */
    uint64_t seq; /* creation order, stable across restarts; list cursors use it */
    enum txn_type type;
    enum txn_state state;
    int concurrent;      /* branches declare `after` (a DAG); else they run in order */
    int needs_attention; /* a must-succeed operation exhausted its retry limit */
    int durable;         /* its creation record is on disk */
    int64_t created_at, updated_at, finished_at; /* wall ms; finished_at 0 if not */
    struct retry_policy retry;
    uint32_t request_timeout_ms;
    uint64_t timeout_ms;
    char *check;              /* msg: check URL */
    uint32_t check_attempts;  /* msg: check calls made */
    uint32_t check_transient; /* msg: transient check failures in a row (not logged) */
    int check_in_flight;
    struct branch *branches;
    uint32_t nbranches, cap_branches;
    struct sched_timer timeout_timer; /* the txn's timeout; for msg, also the next check */
    struct txn_waiter *waiters;       /* replies waiting on this txn */
    struct txn *fin_next;             /* finished-order list, for retention */
    uint32_t pending_records;         /* appended, not yet durable */
    uint64_t appended, synced;        /* records appended / made durable in this process */
};

const char *txn_type_name(enum txn_type t);
const char *txn_state_name(enum txn_state s);
const char *branch_state_name(enum branch_state s);
/* Parse a name back. Returns 0 or DTX_EINVAL. */
int txn_type_parse(const char *s, enum txn_type *out /* OUT */);
int txn_state_parse(const char *s, enum txn_state *out /* OUT */);
int branch_state_parse(const char *s, enum branch_state *out /* OUT */);

int txn_state_is_final(enum txn_state s);
/* Whether from -> to is a legal transition (the tables above). */
int txn_transition_ok(enum txn_state from, enum txn_state to);
int branch_transition_ok(enum branch_state from, enum branch_state to);

/*
 * The only way a txn's state changes. Checks the transition (returns
 * DTX_ESTATE and changes nothing if illegal), stamps updated_at/finished_at
 * with now_wall and logs old -> new at debug level with why.
 */
int txn_set_state(struct txn *t, enum txn_state to, int64_t now_wall, const char *why);
/* The same for a branch. */
int branch_set_state(struct branch *b, enum branch_state to, int64_t now_wall, const char *why);
/* Replace b->last_error with a copy of err (NULL clears). */
void branch_set_error(struct branch *b, const char *err);

/* A branch's texts, in the order of struct branch: each len bytes at p, or
 * absent when p is NULL. */
enum { BT_ID, BT_PREPARE, BT_ACTION, BT_COMPENSATE, BT_PAYLOAD, BRANCH_TEXTS };
struct text {
    const char *p;
    size_t len;
};
/* Set b's id, prepare, action, compensate and payload to NUL-terminated
 * copies of tx[], all in one allocation (b->texts; a million live
 * transactions hold two to four million of these texts). */
void branch_set_texts(struct branch *b, const struct text tx[BRANCH_TEXTS]);

/* A new txn from a spec (copies everything; spec unchanged), state
 * TXN_SUBMITTED for a saga or when spec->submit, else TXN_PREPARED. Branch
 * ids are the steps' ids, or their 1-based positions. gid must be set. */
struct txn *txn_new_from_spec(const struct txn_spec *spec, const char *gid, uint64_t seq,
                              int64_t now_wall);
/* Append a registered branch (copied from s; id must be set). Returns it.
 * The branch array may move: only while no branch has a timer armed or a
 * call outstanding (true in TXN_PREPARED, the only state that registers). */
struct branch *txn_add_branch(struct txn *t, const struct step_spec *s, int64_t now_wall);
/* The branch with this id, or NULL. */
struct branch *txn_branch_by_id(const struct txn *t, const char *id);
/* Whether a registered branch matches a registration request (idempotent re-register). */
int branch_matches_spec(const struct branch *b, const struct step_spec *s);

/* A zeroed txn whose gid is a copy of gid[0, len), in the same allocation. */
struct txn *txn_alloc(const char *gid, size_t len);
void txn_free(struct txn *t);
/* Whether spec describes the same transaction as t (idempotent re-create). */
int txn_matches_spec(const struct txn *t, const struct txn_spec *spec);

/*
 * Whether every step branch i waits for has succeeded: in a sequential saga
 * step i waits for step i-1; in a concurrent one for its `after` list.
 */
int txn_ready(const struct txn *t, uint32_t i);

#endif
