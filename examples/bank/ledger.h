/*
 * ledger.h - the bank's money: accounts, holds, and every branch operation
 * as one local transaction with the libdtx barrier.
 *
 * Tables (ledger_init creates them):
 *   accounts(id, balance, frozen)   balance >= frozen >= 0; a debit may take
 *                                   balance - frozen
 *   holds(gid, branch, kind, account, amount)
 *                                   one row per tcc try / 2pc prepare that
 *                                   succeeded and is not yet confirmed or
 *                                   cancelled (kind "tcc-debit", "2pc-credit"..)
 *   dtx_barrier                     libdtx's barrier rows and msg marks
 */
#ifndef BANK_LEDGER_H
#define BANK_LEDGER_H

#include "db.h"

#include <dtx.h>

/* Beyond DB_OK / DB_ERR / DB_BUSY, what a change ends in: */
#define LEDGER_REFUSED      1    /* a business refusal (insufficient funds, no such account) */
#define LEDGER_ROLLED_BACK  2    /* msg: the check already decided "rolled back" */
#define LEDGER_INCONSISTENT (-3) /* the data contradicts the barrier (a bug or a hand edit) */
#define LEDGER_LOCK_TIMEOUT (-4) /* xa: a row lock was not granted within XA_LOCK_TIMEOUT */
#define LEDGER_UNSUPPORTED  (-5) /* xa on SQLite: it has no PREPARE TRANSACTION */

/* The lock_timeout of an xa branch's transaction (SET LOCAL). Its locks are
 * kept until dtxd's COMMIT PREPARED, and PostgreSQL cannot see a deadlock
 * that goes through a prepared transaction (see ledger_xa_prepare). */
#define XA_LOCK_TIMEOUT "2s"

/* One branch operation. */
struct ledger_call {
    const char *gid, *branch;
    const char *account;
    int64_t amount;
    const char *kind; /* "tcc" or "2pc": names the hold */
};

/*
 * A business change, run inside the caller's local transaction after the
 * barrier said apply. Returns DB_OK, LEDGER_REFUSED (OUT: *why, a constant
 * string), LEDGER_INCONSISTENT or a DB_ code (message in c->err).
 */
typedef int (*ledger_change_fn)(struct db_conn *c, const struct ledger_call *k, const char **why);

/* saga (and msg delivery): balance -= amount, refused if short; its undo;
 * balance += amount, refused for an unknown account; its undo, which is
 * LEDGER_INCONSISTENT (500, retried) while the credited money is spent. */
int ledger_debit(struct db_conn *c, const struct ledger_call *k, const char **why);
int ledger_debit_undo(struct db_conn *c, const struct ledger_call *k, const char **why);
int ledger_credit(struct db_conn *c, const struct ledger_call *k, const char **why);
int ledger_credit_undo(struct db_conn *c, const struct ledger_call *k, const char **why);

/* tcc try / 2pc prepare: freeze the amount on the payer (refused if short),
 * or check the payee's account; both record a hold. */
int ledger_hold_debit(struct db_conn *c, const struct ledger_call *k, const char **why);
int ledger_hold_credit(struct db_conn *c, const struct ledger_call *k, const char **why);

/* tcc confirm / 2pc commit: apply the hold of gid/branch (its amount, not
 * the request's) and delete it; no hold is LEDGER_INCONSISTENT. */
int ledger_apply_debit(struct db_conn *c, const struct ledger_call *k, const char **why);
int ledger_apply_credit(struct db_conn *c, const struct ledger_call *k, const char **why);

/* tcc cancel / 2pc rollback: release the hold, if there is one. */
int ledger_release_debit(struct db_conn *c, const struct ledger_call *k, const char **why);
int ledger_release_credit(struct db_conn *c, const struct ledger_call *k, const char **why);

/* What a branch operation or msg start ended in. */
struct ledger_outcome {
    int rc;                          /* DB_OK or a code above */
    enum dtx_barrier_result barrier; /* when rc is DB_OK */
    char why[256];                   /* the refusal or the error, "" when none */
};

/*
 * Run a branch operation: BEGIN; the barrier records gid/branch/op;
 * change() when it says apply; COMMIT. A refusal or an error rolls back the
 * whole local transaction, barrier row included (the forward operation did
 * not happen, so its undo must find nothing to undo). OUT: *out.
 */
void ledger_branch(struct db_pool *p, const char *op, ledger_change_fn change,
                   const struct ledger_call *k, struct ledger_outcome *out);

/* The sender's local transaction of a msg transfer: the debit and the msg
 * mark of k->gid, one commit. OUT: *out (LEDGER_REFUSED when short,
 * LEDGER_ROLLED_BACK when the check came first). */
void ledger_msg_start(struct db_pool *p, const struct ledger_call *k, struct ledger_outcome *out);

/* The msg check of gid (its answer is final). OUT: *state.
 * Returns DB_OK or DB_ERR (message in err). */
int ledger_msg_check(struct db_pool *p, const char *gid, enum dtx_msg_state *state, char *err,
                     size_t errlen);

struct ledger_account {
    char id[DB_TEXT_MAX];
    int64_t balance, frozen;
};

/*
 * xa (2pc on a PostgreSQL resource): BEGIN; SET LOCAL lock_timeout =
 * XA_LOCK_TIMEOUT; change() (ledger_debit or ledger_credit); PREPARE
 * TRANSACTION 'dtx:<gid>:<branch>' (dtx_pg_prepare). No barrier and no
 * hold: until dtxd commits or rolls it back, the prepared transaction itself
 * is the reservation (its row locks keep the account), and a second call
 * for the same gid/branch is answered from pg_prepared_xacts (see
 * ledger_xa_prepared). out->rc: DB_OK (prepared), LEDGER_REFUSED,
 * LEDGER_LOCK_TIMEOUT (another transaction - perhaps prepared, waiting on
 * no one - held the row past the timeout: not prepared, nothing changed),
 * LEDGER_UNSUPPORTED (SQLite), or a DB_ code; on any of these nothing is
 * prepared.
 *
 * Why the timeout: two transfers crossing (A->B and B->A) each lock the
 * payer's row in one database and wait for the payee's row in the other.
 * Each wait is on a transaction that is prepared, or about to be, and waits
 * for dtxd, which waits for the other transfer: a cycle through two
 * databases and dtxd that neither PostgreSQL's deadlock detector sees. The
 * lock_timeout breaks it: the waiting side gives up, its transfer aborts,
 * and the other goes through.
 */
void ledger_xa_prepare(struct db_pool *p, ledger_change_fn change, const struct ledger_call *k,
                       struct ledger_outcome *out);

/* Is 'dtx:<gid>:<branch>' prepared in this database? OUT: *found.
 * Returns DB_OK or a DB_ code (message in err). */
int ledger_xa_prepared(struct db_pool *p, const char *gid, const char *branch, bool *found,
                       char *err, size_t errlen);

/* ROLLBACK PREPARED 'dtx:<gid>:<branch>' (when its registration failed).
 * Returns DB_OK (also when it is not prepared) or a DB_ code. */
int ledger_xa_rollback(struct db_pool *p, const char *gid, const char *branch, char *err,
                       size_t errlen);

/* Every account (id == NULL) or one, in id order, through fn. OUT: *holds
 * (may be NULL): the number of open holds. Returns DB_OK or a DB_ code
 * (message in err). */
int ledger_accounts(struct db_pool *p, const char *id,
                    void (*fn)(void *ud, const struct ledger_account *a), void *ud, int *holds,
                    char *err, size_t errlen);

/* Create or set an account. OUT: *out. Returns DB_OK, LEDGER_REFUSED (the
 * balance would go below what is frozen) or a DB_ code (message in err). */
int ledger_set_account(struct db_pool *p, const char *id, int64_t balance,
                       struct ledger_account *out, char *err, size_t errlen);

/* Create the tables (and dtx_barrier). Returns DB_OK or DB_ERR (message in
 * err). */
int ledger_init(struct db_pool *p, char *err, size_t errlen);

#endif
