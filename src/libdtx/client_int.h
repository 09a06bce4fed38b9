/*
 * client_int.h - what the files of libdtx's client share and do not export:
 * argument checks (spec.c), the parsing of answers (reply.c) and the spec's
 * body (used by client.c). Symbols are prefixed libdtx_ and hidden from the
 * shared library.
 */
#ifndef LIBDTX_CLIENT_INT_H
#define LIBDTX_CLIENT_INT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "dtx.h"

#ifndef LIBDTX_VERSION
#define LIBDTX_VERSION "0.1.0"
#endif

#define LIBDTX_HIDDEN __attribute__((visibility("hidden")))

/* 1 when s is 1-max bytes of A-Z a-z 0-9 . _ : - (a gid or a branch id). */
LIBDTX_HIDDEN int libdtx_valid_id(const char *s, size_t max);

/* 1 when s is 1-DTX_RESOURCE_MAX bytes of A-Z a-z 0-9 . _ - (a resource name). */
LIBDTX_HIDDEN int libdtx_valid_resource(const char *s);

/* 1 when s is a non-empty "scheme://rest" with a letter-only scheme. */
LIBDTX_HIDDEN int libdtx_valid_url(const char *s);

/*
 * Parse payload JSON text (any type). OUT: *out, a new reference.
 * Errors: DTX_EINVAL (not JSON), DTX_ENOMEM.
 */
LIBDTX_HIDDEN int libdtx_parse_payload(const char *payload, json_t **out);

/* The body of s (a new reference). Errors: DTX_EINVAL (no steps), DTX_ENOMEM. */
LIBDTX_HIDDEN int libdtx_spec_body(const struct dtx_spec *s, json_t **out);

/*
 * Parse the JSON text of a transaction answer (len bytes; need not be
 * NUL-terminated). The text is copied. OUT: *out. Errors: DTX_EPROTO (not a
 * transaction object), DTX_ENOMEM. On DTX_EPROTO, why (a buffer of whylen
 * bytes) says what was wrong.
 */
LIBDTX_HIDDEN int libdtx_reply_txn(const char *text, size_t len, struct dtx_txn **out, char *why,
                                   size_t whylen);

/* Parse a list page, as libdtx_reply_txn. */
LIBDTX_HIDDEN int libdtx_reply_list(const char *text, size_t len, struct dtx_txn_list **out,
                                    char *why, size_t whylen);

/* Parse a batch answer of `want` results, as libdtx_reply_txn. */
LIBDTX_HIDDEN int libdtx_reply_batch(const char *text, size_t len, size_t want,
                                     struct dtx_batch **out, char *why, size_t whylen);

/* ---- a TCC Try over RabbitMQ (amqp_try.c) ---- */

struct libdtx_amqp;

/*
 * Parse a target "amqp://<exchange>/<routing-key>" (both parts
 * percent-decoded, at most 255 bytes each, not both empty) into exchange and
 * routing_key, 256 bytes each. 0, or -1 when it is not one.
 */
LIBDTX_HIDDEN int libdtx_amqp_target(const char *url, char *exchange, char *routing_key);

/* A broker to call (amqp[s]://user:pass@host:port/vhost; cacert: PEM CA file
 * or NULL for the system's). No connection yet. Errors: DTX_EINVAL, DTX_ENOMEM. */
LIBDTX_HIDDEN int libdtx_amqp_new(const char *broker_url, const char *cacert,
                                  struct libdtx_amqp **out);
LIBDTX_HIDDEN void libdtx_amqp_free(struct libdtx_amqp *a);

/*
 * Publish a Try command (body: JSON text) and wait up to timeout_ms (0: no
 * limit) for its reply. Always DTX_OK with *result; for anything but
 * DTX_TRY_SUCCEEDED, why (whylen bytes) says what happened.
 */
LIBDTX_HIDDEN int libdtx_amqp_try(struct libdtx_amqp *a, const char *exchange,
                                  const char *routing_key, const char *gid, const char *branch,
                                  const char *body, int64_t timeout_ms, enum dtx_try_result *result,
                                  char *why, size_t whylen);

#endif
