/*
 * request.h - decoding and validating API request bodies.
 *
 * A parser in the nginx/hiredis sense: bytes in, a validated struct or a
 * precise error out, no I/O, no engine state. Everything that reaches the
 * engine (and so the log) has passed through here, which is why this is also
 * a fuzz target.
 */
#ifndef DTX_REQUEST_H
#define DTX_REQUEST_H

#include <stddef.h>
#include <stdint.h>

#include "engine/txn.h"

/* Stable error codes of the API (docs/API.md lists them). */
#define REQ_ERR_INVALID_JSON     "invalid_json"
#define REQ_ERR_MISSING_FIELD    "missing_field"
#define REQ_ERR_WRONG_TYPE       "wrong_type"
#define REQ_ERR_INVALID_VALUE    "invalid_value"
#define REQ_ERR_INVALID_TYPE     "invalid_type"
#define REQ_ERR_INVALID_URL      "invalid_url"
#define REQ_ERR_UNKNOWN_FIELD    "unknown_field"
#define REQ_ERR_TOO_MANY_STEPS   "too_many_steps"
#define REQ_ERR_DEPENDENCY_CYCLE "dependency_cycle"
#define REQ_ERR_TOO_MANY_ITEMS   "too_many_items"

struct req_error {
    const char *code; /* one of REQ_ERR_* (static) */
    char field[128];  /* JSON path of the field at fault, "" for the whole body */
    char message[256];
};

struct req_limits {
    uint32_t max_steps;
    uint32_t max_batch; /* transactions in one POST /v1/transactions:batch */
    uint32_t max_wait_ms;
    struct retry_policy default_retry;
    uint32_t default_request_timeout_ms;
    uint32_t default_wait_timeout_ms;
    /* Whether a transport serves url as the target of operation op ("action",
     * "compensate", "confirm", "cancel", "prepare", "commit", "rollback" or
     * "check") of a transaction of type: NULL if so, else what is wrong, as
     * the end of a sentence ("has a scheme that no transport serves"). NULL
     * callback: http(s) only. */
    const char *(*url_refused)(void *arg, const char *url, enum txn_type type, const char *op);
    void *url_refused_arg;
    /* Non-zero when a PostgreSQL resource of this name is configured (2pc
     * branches on resources); NULL refuses every resource. */
    int (*resource_ok)(void *arg, const char *name);
    void *resource_ok_arg;
};

/*
 * Decode a POST /v1/transactions body. On success returns 0 and a new spec in
 * *out (caller frees with txn_spec_free). On bad input returns DTX_EINVAL and
 * fills *err; *out is NULL.
 */
int request_parse_create(const char *body, size_t len, const struct req_limits *lim,
                         struct txn_spec **out /* OUT */, struct req_error *err /* OUT */);

/* One transaction of a batch: its spec, or NULL and why not. */
struct batch_item {
    struct txn_spec *spec;
    struct req_error err; /* when spec is NULL; field under "transactions[i]" */
};

/*
 * Decode a POST /v1/transactions:batch body: {"transactions": [...]} with 1
 * to lim->max_batch create bodies. A body that is not such an object returns
 * DTX_EINVAL with err filled. Otherwise returns 0 and *n items (free with
 * request_batch_free), each decoded as request_parse_create does, except
 * that "wait": true is refused (invalid_value): a batch is answered once its
 * transactions are durable.
 */
int request_parse_batch(const char *body, size_t len, const struct req_limits *lim,
                        struct batch_item **out /* OUT */, size_t *n /* OUT */,
                        struct req_error *err /* OUT */);

void request_batch_free(struct batch_item *items, size_t n);

/* The URL a branch on PostgreSQL resource NAME holds for each of its
 * operations: RESOURCE_URL_PREFIX NAME (transport/pg_resource.h). */
#define RESOURCE_URL_PREFIX "resource://"

/*
 * Decode a branch registration (POST /v1/transactions/{gid}/branches) for a
 * transaction of type (TXN_TCC or TXN_2PC). A 2pc branch names either its
 * three URLs or a "resource" (then every URL is RESOURCE_URL_PREFIX NAME and
 * a branch id without ':' is required). On success fills *out (free with
 * step_spec_clear); on bad input returns DTX_EINVAL with err filled.
 */
int request_parse_branch(const char *body, size_t len, enum txn_type type,
                         const struct req_limits *lim, struct step_spec *out /* OUT */,
                         struct req_error *err /* OUT */);

/* Decode the optional body of submit/abort ({"wait", "wait_timeout_ms"}; an
 * empty body is allowed). Returns 0 or DTX_EINVAL with err filled. */
int request_parse_control(const char *body, size_t len, const struct req_limits *lim,
                          int *wait /* OUT */, uint32_t *wait_timeout_ms /* OUT */,
                          struct req_error *err /* OUT */);

/* Whether s is a valid gid: 1..128 bytes of [A-Za-z0-9._:-]. */
int request_gid_ok(const char *s);

#endif
