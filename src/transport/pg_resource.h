/*
 * pg_resource.h - 2pc branches on PostgreSQL resources (DESIGN §2).
 *
 * A participant does its work in its own database, runs
 * PREPARE TRANSACTION 'dtx:<gid>:<branch>' and registers the branch with the
 * name of a resource dtxd is configured with. The engine then calls the
 * branch like any other, through this transport, at the URL
 * "resource://<name>":
 *
 *   prepare   the prepared transaction exists in the resource's database
 *             (pg_prepared_xacts): SUCCESS, a yes vote; absent: FAILURE
 *   commit    COMMIT PREPARED; rollback: ROLLBACK PREPARED. Either one
 *             finding the prepared transaction gone (SQLSTATE 42704) is
 *             SUCCESS: it was finished before (by us: no one else finishes
 *             dtx: transactions).
 *   anything else, a connection that cannot be made or breaks, a timeout:
 *             TRANSIENT, so the engine retries with its backoff
 *
 * Every query runs through libpq's asynchronous API on the loop (one uv_poll
 * per connection, no thread, no blocking call), on a small pool of
 * connections per resource, one query at a time per connection.
 *
 * Recovery: pg_resources_scan_start() scans every resource's
 * pg_prepared_xacts for dtx: transactions at once and then every scan_ms,
 * and asks decide() what each one is to become: rolled back, left alone (its
 * transaction is deciding, or its driver is committing or rolling it back:
 * a logged commit decision is carried out by the 2pc driver, which recovery
 * resumes), or, for a gid the engine does not know, rolled back once older
 * than orphan_grace_ms. Nothing stays prepared.
 *
 * Connection strings are never logged: only name, host, port, dbname, user.
 */
#ifndef DTX_PG_RESOURCE_H
#define DTX_PG_RESOURCE_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "transport/transport.h"

#define PG_RESOURCE_SCHEME   "resource"
#define PG_RESOURCE_NAME_MAX 64

struct pg_resource_def {
    const char *name;     /* 1..64 of [A-Za-z0-9_.-] */
    const char *conninfo; /* libpq conninfo or URI (may hold a password) */
};

enum pg_decision {
    PG_LEAVE = 0, /* its transaction is deciding, or finishing it itself */
    PG_ROLLBACK,  /* rolled back, or the branch is not part of the decision */
    PG_UNKNOWN,   /* no such transaction: roll back once past the grace */
};

/* What a dtx:<gid>:<branch> prepared transaction is to become. */
typedef enum pg_decision (*pg_decide_fn)(void *arg, const char *gid, const char *branch);

struct pg_resources_config {
    const struct pg_resource_def *defs;
    size_t n;
    uint32_t connections;     /* per resource, >= 1 */
    uint64_t scan_ms;         /* between two scans */
    uint64_t orphan_grace_ms; /* age before an unknown gid's prepared xact is rolled back */
    uint32_t scan_timeout_ms; /* bound on one scan or recovery command */
};

/*
 * Create the transport (scheme "resource"). Copies everything. Returns NULL
 * and writes a message to err when a definition is invalid (bad or repeated
 * name, a conninfo libpq cannot parse). No connection is made until needed.
 */
struct transport *pg_resources_new(uv_loop_t *loop, const struct pg_resources_config *cfg,
                                   char *err, size_t errlen);

/* Whether a resource of this name is configured. */
int pg_resources_has(const struct transport *t, const char *name);

/* Start recovery: scan now and every scan_ms, asking decide(arg, ...). */
void pg_resources_scan_start(struct transport *t, pg_decide_fn decide, void *arg);

/* "dtx:<gid>:<branch>" into out; DTX_EINVAL when it does not fit or either
 * part has a character outside [A-Za-z0-9._:-] (so it is safe in a literal). */
int pg_resource_xact_name(const char *gid, const char *branch, char *out, size_t n);

/* Split "dtx:<gid>:<branch>" (the branch is after the last ':'). Returns 0
 * or DTX_EINVAL. gid and branch are written NUL-terminated. */
int pg_resource_parse_xact_name(const char *name, char *gid, size_t gn, char *branch, size_t bn);

#endif
