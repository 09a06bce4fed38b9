/*
 * amqp.h - branches on RabbitMQ (AMQP 0-9-1), DESIGN §2 "AMQP".
 *
 * A target "amqp://<exchange>/<routing-key>" publishes to that exchange with
 * that routing key; "amqp:///<queue>" uses the default exchange, which
 * routes to the queue of that name. Both parts are percent-decoded; the
 * routing key is everything after the first '/' and may be empty for a
 * fanout exchange ("amqp://events/").
 *
 * Every call publishes one persistent message (delivery_mode 2,
 * content_type application/json, body = the payload, message_id =
 * gid/branch/op, headers Dtx-Gid, Dtx-Branch, Dtx-Op, Dtx-Type and
 * traceparent) with mandatory set, on a channel in confirm mode. What ends
 * the call depends on its kind (docs/API.md, "amqp:// targets"):
 *
 *   delivery (a msg step's action): the broker's confirm is the success.
 *   command (everything else): the message also carries reply_to = our
 *       reply queue and a correlation_id fresh for this attempt; the
 *       participant's reply (Dtx-Result SUCCESS / FAILURE / ONGOING) ends
 *       the call. A reply that comes before the confirm counts: the
 *       participant had the message.
 *
 *   basic.return + ack     TRANSIENT: no queue is bound for it (unroutable)
 *   basic.nack             TRANSIENT: the broker refused it
 *   channel closed         TRANSIENT (e.g. the exchange does not exist)
 *   no confirm / no reply
 *   within the timeout,
 *   broker unreachable,
 *   connection lost        TRANSIENT
 *   reply, no Dtx-Result   TRANSIENT
 *
 * A retry publishes again with the same message_id (and, for a command, a
 * new correlation_id: a late reply to an attempt already given up is
 * dropped): consumers de-duplicate on message_id.
 *
 * rabbitmq-c is blocking, so one thread owns the connection (DESIGN §4): the
 * loop hands it publishes through a mutex-protected queue and an eventfd,
 * and it hands results back through another queue and a uv_async. It
 * publishes in the order it was given, on one channel, so the broker sees
 * one transaction's deliveries in order; replies are consumed on a second
 * channel from the durable reply queue it declares. When the broker is
 * unreachable or closes the connection, every call in flight fails
 * TRANSIENT and the thread reconnects with backoff.
 *
 * The broker URL (amqp://user:pass@host:port/vhost) may hold a password:
 * the log only ever shows user, host, port and vhost.
 */
#ifndef DTX_AMQP_H
#define DTX_AMQP_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "transport/transport.h"

#define AMQP_SCHEME       "amqp"
#define AMQP_EXCHANGE_MAX 255 /* AMQP short strings */
#define AMQP_RKEY_MAX     255

struct amqp_target {
    char exchange[AMQP_EXCHANGE_MAX + 1]; /* "" = the default exchange */
    char routing_key[AMQP_RKEY_MAX + 1];
};

/* Parse a branch target "amqp://<exchange>/<routing-key>" into *out.
 * Returns 0 or DTX_EINVAL (not amqp://, no '/', a bad %XX, a part too long
 * or holding a NUL, or both parts empty). No I/O. */
int amqp_target_parse(const char *url, struct amqp_target *out /* OUT */);

struct amqp_broker {
    int tls; /* amqps:// */
    char host[256];
    int port;
    char user[128];
    char password[128];
    char vhost[256];
};

/* Parse a broker URL "amqp://user:pass@host:port/vhost" or amqps:// (TLS)
 * (rabbitmq-c's rules: defaults guest/guest, localhost, 5672 or 5671 with
 * TLS, vhost "/"; "%2f" is "/"). Returns 0 or DTX_EINVAL (with a message in
 * err that never holds the password). */
int amqp_broker_parse(const char *url, struct amqp_broker *out /* OUT */, char *err, size_t errlen);

/* "user@host:port/vhost" (amqps:// in front for TLS): what the log may say
 * about a broker. */
void amqp_broker_describe(const struct amqp_broker *b, char *out, size_t n);

/* A participant's reply, decoded (docs/API.md "Commands"). */
#define AMQP_REPLY_TEXT_MAX 200 /* of a FAILURE reply's body, in the error */
struct amqp_reply {
    uint64_t seq;              /* the correlation id's number */
    enum call_outcome outcome; /* from Dtx-Result; TRANSIENT when it is none of the three */
    char error[AMQP_REPLY_TEXT_MAX + 64]; /* "" for SUCCESS */
};

/*
 * Decode a reply from its correlation_id (corr, "<nonce>.<seq>"), its
 * Dtx-Result header value (result, NULL when absent) and its body. Returns
 * 0, or DTX_ENOTFOUND when the correlation id is not one of ours (another
 * nonce, malformed): such a reply is dropped. No I/O; any bytes are safe.
 */
int amqp_reply_parse(const char *nonce, const char *corr, size_t corr_len, const char *result,
                     size_t result_len, const char *body, size_t body_len, struct amqp_reply *out);

#define AMQP_REPLY_QUEUE_DEFAULT "dtxd.replies"

struct amqp_config {
    const char *url;         /* the broker, amqp:// or amqps:// */
    const char *reply_queue; /* durable queue for replies; NULL: AMQP_REPLY_QUEUE_DEFAULT */
    const char *cacert;      /* amqps: PEM CA file the broker's certificate must chain to */
    const char *cert, *key;  /* amqps: client certificate and key (PEM), both or neither */
};

/*
 * Create the transport (scheme "amqp") and start its connection thread (it
 * connects at once and keeps reconnecting). With TLS the broker's
 * certificate and host name are always verified. Returns NULL with a
 * message in err when the configuration is invalid.
 */
struct transport *amqp_transport_new(uv_loop_t *loop, const struct amqp_config *cfg, char *err,
                                     size_t errlen);

#endif
