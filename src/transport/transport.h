/*
 * transport.h - how the engine calls a branch, whatever carries the call.
 *
 * The engine builds a call (target URL, operation, headers' values, payload)
 * and gets back one of four outcomes, the DESIGN §2 vocabulary. Each
 * transport maps its own wire answers to these outcomes (HTTP status codes,
 * AMQP confirms and reply headers, Kafka delivery reports), so the engine
 * never sees a status code or a broker. A router picks the transport from the
 * URL scheme.
 */
#ifndef DTX_TRANSPORT_H
#define DTX_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>

enum call_outcome {
    CALL_SUCCESS = 0, /* 2xx / SUCCESS: the operation is done */
    CALL_FAILURE,     /* 409 / FAILURE: the participant refuses; roll back */
    CALL_ONGOING,     /* 425 / ONGOING: still running; ask again after the fixed interval */
    CALL_TRANSIENT,   /* anything else: retry with backoff */
};

struct call_req {
    const char *url;         /* target, e.g. http://127.0.0.1:9000/debit */
    const char *gid;         /* Dtx-Gid */
    const char *branch;      /* Dtx-Branch */
    const char *op;          /* Dtx-Op: action, compensate, ... */
    const char *txn_type;    /* Dtx-Type: saga, ... */
    const char *traceparent; /* W3C traceparent, may be NULL */
    const char *body;        /* payload bytes (JSON text), may be NULL */
    size_t body_len;
    uint32_t timeout_ms; /* per-request timeout, > 0 */
};

struct call_result {
    enum call_outcome outcome;
    int status;        /* transport status (HTTP code), 0 when there was none */
    const char *error; /* short description when not CALL_SUCCESS, else NULL;
                          valid only during the callback */
};

/* Runs on the loop thread exactly once per accepted call (never after
 * transport close). */
typedef void (*call_done_fn)(void *arg, const struct call_result *res);

struct transport;
struct transport_ops {
    /* Start a call; everything in req is copied. Returns 0 or a negative code
     * (the callback will then not run). */
    int (*call)(struct transport *t, const struct call_req *req, call_done_fn cb, void *arg);
    /* Abandon in-flight calls without running their callbacks and release
     * resources. */
    void (*free)(struct transport *t);
};

struct transport {
    const struct transport_ops *ops;
    const char *scheme; /* "http", "https", "amqp", "kafka", "resource" */
};

/* The router: a small table of transports by URL scheme. */
#define TRANSPORT_MAX 8
struct transport_router {
    const char *scheme[TRANSPORT_MAX]; /* static strings */
    struct transport *by_scheme[TRANSPORT_MAX];
    int n;
};

void transport_router_init(struct transport_router *r);
/* Register t for t->scheme (and its extra schemes, if called again with the
 * same t under another name). Returns 0 or DTX_EEXISTS / DTX_ETOOBIG. */
int transport_router_add(struct transport_router *r, const char *scheme, struct transport *t);
/* Whether a transport serves url's scheme. */
int transport_router_knows(const struct transport_router *r, const char *url);
/* Route and start a call. DTX_EUNSUPPORTED when no transport has the scheme. */
int transport_call(struct transport_router *r, const struct call_req *req, call_done_fn cb,
                   void *arg);
void transport_router_free(struct transport_router *r);

#endif
