/*
 * amqp_int.h - what libdtx's two RabbitMQ users share and do not export: the
 * participant loop (amqp_participant.c) and the client's Try over AMQP
 * (amqp_try.c). Symbols are prefixed libdtx_ and hidden from the shared
 * library.
 */
#ifndef LIBDTX_AMQP_INT_H
#define LIBDTX_AMQP_INT_H

#include <amqp.h>
#include <stdint.h>

#include "client_int.h"

/* A broker to connect to, from amqp[s]://user:password@host:port/vhost. */
struct libdtx_broker {
    char *host, *user, *password, *vhost;
    char *cacert; /* amqps: a PEM file of CAs; NULL: the system's */
    int port, ssl;
};

/*
 * Parse url (amqp:// or amqps://, a host, a port of 1-65535 and a vhost -
 * %2f is "/") into b, with cacert copied (NULL allowed). The copy of the URL
 * it decodes in is wiped. Errors: DTX_EINVAL, DTX_ENOMEM (b is then empty).
 */
LIBDTX_HIDDEN int libdtx_broker_parse(struct libdtx_broker *b, const char *url, const char *cacert);

/* Free b's strings, wiping the password first. */
LIBDTX_HIDDEN void libdtx_broker_free(struct libdtx_broker *b);

/*
 * A socket for conn: TCP, or TLS with the peer and its host name verified
 * against b->cacert or, without one, OpenSSL's default CA paths (rabbitmq-c
 * loads no CA at all by default). NULL on failure.
 */
LIBDTX_HIDDEN amqp_socket_t *libdtx_broker_socket(const struct libdtx_broker *b,
                                                  amqp_connection_state_t conn);

/* What a failed RPC's reply says, as "<what>: <reason>" in why. */
LIBDTX_HIDDEN void libdtx_amqp_why(amqp_rpc_reply_t r, const char *what, char *why, size_t whylen);

/* A header or client property with a UTF-8 string value (not copied). */
LIBDTX_HIDDEN amqp_table_entry_t libdtx_entry_str(const char *key, const char *value);

/* The monotonic clock in milliseconds. */
LIBDTX_HIDDEN uint64_t libdtx_now_ms(void);

#endif
