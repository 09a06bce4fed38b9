/*
 * engine.h - the transaction engine as the API layer and main() see it.
 *
 * The engine owns every transaction in memory, on the loop thread, with no
 * locks. It talks to durable storage through struct store and to participants
 * through the transport router; it knows nothing of HTTP servers, files or
 * brokers. Every state change is appended to the store first; its effects
 * (a participant call, a reply) happen in the store's durability callback.
 */
#ifndef DTX_ENGINE_H
#define DTX_ENGINE_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "engine/txn.h"
#include "store/store.h"
#include "transport/transport.h"

struct engine;

struct engine_config {
    uint64_t retention_ms; /* finished transactions stay queryable this long */
    uint32_t max_branches; /* registered branches per tcc/2pc transaction */
};

/* How a submit or abort request answers. */
struct engine_wait {
    int wait;                 /* answer only once the transaction is finished */
    uint32_t wait_timeout_ms; /* ... or this long passed (ENGINE_REPLY_TIMED_OUT) */
};

/* Flags passed to an engine_reply_fn. */
#define ENGINE_REPLY_CREATED   1 /* the transaction was created by this request */
#define ENGINE_REPLY_TIMED_OUT 2 /* wait bound passed (or shutdown) before it finished */

/* A reply is due: t is durable and, if waiting was asked, finished (unless
 * ENGINE_REPLY_TIMED_OUT). t is valid only during the call. */
typedef void (*engine_reply_fn)(void *arg, const struct txn *t, int flags);

/* Create the engine. It takes no ownership of loop, store or router. */
struct engine *engine_new(uv_loop_t *loop, struct store *store, struct transport_router *router,
                          const struct engine_config *cfg);

/*
 * Replay the store into memory and resume every unfinished transaction (its
 * driver continues where the log says it was). Returns 0, or the store's
 * error (e.g. DTX_ECORRUPT) with details in store_last_error().
 */
int engine_recover(struct engine *e);

/*
 * Create a transaction from a validated spec (ownership taken, always).
 * On 0, fn(arg, ...) will run exactly once: when the creation is durable, or
 * if spec->wait when the transaction finished or wait_timeout_ms passed. A gid
 * that exists with the same spec replies with the existing transaction
 * (without ENGINE_REPLY_CREATED). Errors, with no callback:
 *   DTX_ECONFLICT - the gid exists with a different spec
 *   DTX_ECLOSED   - the engine is shutting down
 */
int engine_create(struct engine *e, struct txn_spec *spec, engine_reply_fn fn, void *arg);

/*
 * Register a branch of a tcc or 2pc transaction in "prepared" (s is taken,
 * always; s->id NULL: the next free number). On 0, *id_out is the branch id
 * (the caller frees it) and fn runs once the registration is durable, with
 * ENGINE_REPLY_CREATED unless the same id was registered with the same body
 * before. Errors, with no callback:
 *   DTX_ENOTFOUND - no such transaction
 *   DTX_ESTATE    - not a tcc/2pc transaction, or not "prepared" any more
 *   DTX_ECONFLICT - the id exists with another body
 *   DTX_ETOOBIG   - the transaction has max_branches branches already
 *   DTX_ECLOSED   - shutting down
 */
int engine_register(struct engine *e, const char *gid, struct step_spec *s, char **id_out,
                    engine_reply_fn fn, void *arg);

/*
 * Submit (prepared -> submitted; the mode's phase 2 starts) or abort a
 * transaction. Repeating a request that was applied answers the same. fn
 * runs once the change is durable (and, with w->wait, finished). Errors, with
 * no callback: DTX_ENOTFOUND, DTX_ESTATE (the state does not allow it: see
 * docs/API.md), DTX_ECLOSED.
 */
int engine_submit(struct engine *e, const char *gid, const struct engine_wait *w,
                  engine_reply_fn fn, void *arg);
int engine_abort(struct engine *e, const char *gid, const struct engine_wait *w, engine_reply_fn fn,
                 void *arg);

/* Run every waiting retry of the transaction now (an operator's "retry").
 * DTX_ENOTFOUND, DTX_ESTATE (finished), DTX_ECLOSED. */
int engine_retry_now(struct engine *e, const char *gid);

/* What branch `branch` of transaction gid is to become, for the recovery
 * of prepared transactions on PostgreSQL resources (presumed abort). */
enum engine_outcome {
    ENGINE_OUTCOME_PENDING = 0, /* leave it: undecided, or the driver is finishing it
                                   (a logged commit decision: the driver commits) */
    ENGINE_OUTCOME_ROLLBACK,    /* rolled back, or not part of the decision */
    ENGINE_OUTCOME_UNKNOWN,     /* no such transaction */
};
enum engine_outcome engine_branch_outcome(struct engine *e, const char *gid, const char *branch);

/* The transaction with this gid, or NULL. Valid until control returns to the loop. */
const struct txn *engine_find(struct engine *e, const char *gid);

struct engine_filter {
    int by_state; /* when non-zero, only state */
    enum txn_state state;
    int by_type;
    enum txn_type type;
    int by_attention; /* when non-zero, only those whose needs_attention equals needs_attention */
    int needs_attention;
};

/*
 * List transactions newest first, starting below cursor (0 = from the newest).
 * Fills out[0..limit) and returns how many; *next_cursor is the cursor of the
 * next page, or 0 when there is none.
 */
size_t engine_list(struct engine *e, const struct engine_filter *f, uint64_t cursor, size_t limit,
                   const struct txn **out /* OUT */, uint64_t *next_cursor /* OUT */);

/*
 * Begin shutting down: refuse new transactions, start no new participant
 * calls, and answer every reply that waits for a finish (as timed out) once
 * the transaction is durable. Replies waiting for durability still come when
 * the store drains (store_close).
 */
void engine_stop(struct engine *e);
void engine_free(struct engine *e);

#endif
