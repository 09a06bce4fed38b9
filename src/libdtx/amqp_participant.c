/*
 * amqp_participant.c - the AMQP participant loop (include/dtx.h, "AMQP
 * participant loop"; the wire protocol is docs/API.md, "amqp:// targets").
 *
 * One connection to the broker, two channels:
 *
 *   channel 1  consumes the queue: basic.qos prefetch, manual acks
 *   channel 2  publishes replies, dead letters and delivery retries, in
 *              confirm mode: every publish waits for the broker's basic.ack
 *              before the command it answers is acknowledged, so a message
 *              is never lost between two queues, and a reply is never
 *              acknowledged before the local commit it reports.
 *
 * rabbitmq-c's blocking API reads the frames of both channels from one
 * socket, and while we wait for a confirm the broker keeps pushing
 * deliveries (up to prefetch). So there is one reader, pump(): it reads one
 * frame, copies a delivery and its content into a struct delivery at the
 * tail of `pending`, records confirms, and turns a channel.close,
 * connection.close or basic.cancel into an error (reconnect). The loop
 * takes the deliveries from `pending` one at a time, in arrival order.
 *
 * One message:
 *
 *   parse       the Dtx-* headers, message_id, reply_to, x-dtx-attempts;
 *               malformed -> dead letter (header x-dtx-reason), ack
 *   barrier     BEGIN (SQLite: BEGIN IMMEDIATE); dtx_barrier_*; APPLY runs
 *               the handler; COMMIT on SUCCESS (and after DUPLICATE,
 *               NULL_UNDO, LATE: their rows must stay), else ROLLBACK.
 *               A database error is RETRY. Dtx-Op check: no transaction.
 *   command     reply (default exchange, routing key reply_to, the
 *               command's correlation_id, header Dtx-Result, body = reason)
 *               and wait for its confirm, then ack. RETRY: ack, no reply.
 *   delivery    (Dtx-Type msg, Dtx-Op action) SUCCESS: ack. FAILURE: dead
 *               letter "refused: <reason>", ack. RETRY or ONGOING: after a
 *               pause (100 ms doubling per attempt, up to 5 s), published
 *               again to the queue with x-dtx-attempts + 1, confirmed, then
 *               acked; dead-lettered "gave up after N attempts" once N
 *               reaches max_attempts.
 *
 * Every wait is bounded: the consume wait by 200 ms (so that stop(), an
 * atomic flag, is seen), connects, logins and RPCs by 5 s, a confirm by 5 s
 * (then the connection is dropped and the broker redelivers). Heartbeats
 * (30 s) are sent while the loop waits, not while the handler runs: a
 * handler that takes more than about a minute loses the connection and its
 * message is redelivered (the barrier makes that harmless).
 *
 * The library prints nothing and logs nothing itself: every connect, every
 * lost or refused connection (with the reason) and every database error is
 * told to on_status, if the application gave one, for its log. The
 * password is never in those lines, and is wiped from memory when the loop
 * is freed.
 */
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <amqp.h>
#include <libpq-fe.h>
#include <sqlite3.h>

#include "amqp_int.h"

#define CH_CONSUME           1
#define CH_PUBLISH           2
#define CONNECT_TIMEOUT_MS   5000
#define CONFIRM_TIMEOUT_MS   5000
#define HEARTBEAT_S          30
#define WAIT_SLICE_MS        200
#define BACKOFF_MIN_MS       100
#define BACKOFF_MAX_MS       5000
#define DEFAULT_PREFETCH     16
#define DEFAULT_MAX_ATTEMPTS 100
/* A republished message carries its first routing key here. */
#define RKEY_HEADER  "x-dtx-routing-key"
#define NAME_MAX_LEN 255  /* a queue name is an AMQP short string */
#define HEADER_CAP   256  /* a Dtx-* header value: at most 255 bytes */
#define REASON_CAP   1024 /* the handler's reason, and x-dtx-reason */

_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "stop() needs a lock-free atomic int");

/* One delivery taken from the broker and not yet acknowledged. */
struct delivery {
    struct delivery *next;
    uint64_t tag;
    int redelivered;
    char *routing_key;
    amqp_message_t msg; /* properties in msg.pool, body malloc'd: our own */
};

struct dtx_amqp_participant {
    struct libdtx_broker b;
    char *queue, *dead_letter, *conn_name;
    int prefetch, max_attempts;
    PGconn *pg;
    sqlite3 *sqlite;
    dtx_amqp_handler handler;
    dtx_amqp_status_fn on_status;
    void *arg;
    atomic_int stop;
    char why[512]; /* run()'s: why the connection went (the first reason) */
    /* run()'s own */
    amqp_connection_state_t conn;
    uint64_t pub_seq;   /* the sequence number of channel 2's last publish */
    uint64_t confirmed; /* the highest sequence number the broker acked */
    uint64_t nacked;    /* the highest one it refused */
    int returned;       /* a basic.return came for the publish in flight */
    struct delivery *head, *tail;
};

/* A command's parsed headers. */
struct cmd {
    char gid[HEADER_CAP], branch[HEADER_CAP], op[HEADER_CAP], type[HEADER_CAP];
    char message_id[3 * HEADER_CAP];
    int delivery; /* Dtx-Type msg with Dtx-Op action: no reply */
    int attempts; /* x-dtx-attempts: earlier attempts of a delivery */
};

static const char *const valid_ops[] = {"action",  "compensate", "try",      "confirm", "cancel",
                                        "prepare", "commit",     "rollback", "check"};

/* ---- small things ---------------------------------------------------------- */

static int stopping(struct dtx_amqp_participant *p)
{
    return atomic_load_explicit(&p->stop, memory_order_relaxed) != 0;
}

/* Note why the connection must go (the first reason counts); -1. */
static int failed(struct dtx_amqp_participant *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int failed(struct dtx_amqp_participant *p, const char *fmt, ...)
{
    if (p->why[0] == '\0') {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(p->why, sizeof p->why, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* As failed(), with what a failed RPC's reply says. */
static int rpc_failed(struct dtx_amqp_participant *p, const char *what)
{
    char why[sizeof p->why];
    libdtx_amqp_why(amqp_get_rpc_reply(p->conn), what, why, sizeof why);
    return failed(p, "%s", why);
}

/* Tell the application (on_status) how the loop is doing, if it asked. */
static void status(struct dtx_amqp_participant *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void status(struct dtx_amqp_participant *p, const char *fmt, ...)
{
    if (p->on_status == NULL)
        return;
    char line[sizeof p->why + 128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    p->on_status(p->arg, line);
}

/* Sleep ms, in slices, returning early once stop() is called. */
static void nap(struct dtx_amqp_participant *p, int ms)
{
    uint64_t until = libdtx_now_ms() + (uint64_t)ms;
    while (!stopping(p)) {
        uint64_t now = libdtx_now_ms();
        if (now >= until)
            return;
        uint64_t left = until - now < 50 ? until - now : 50;
        struct timespec ts = {0, (long)left * 1000000L};
        nanosleep(&ts, NULL);
    }
}

static int backoff_next(int ms)
{
    return ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : ms * 2;
}

static struct timeval tv_of(int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    return tv;
}

static void delivery_free(struct delivery *d)
{
    if (d == NULL)
        return;
    amqp_destroy_message(&d->msg);
    free(d->routing_key);
    free(d);
}

static void pending_clear(struct dtx_amqp_participant *p)
{
    while (p->head != NULL) {
        struct delivery *d = p->head;
        p->head = d->next;
        delivery_free(d);
    }
    p->tail = NULL;
}

/* ---- the connection -------------------------------------------------------- */

/* 0 when the last RPC went well, else failed() with what it was. */
static int rpc_ok(struct dtx_amqp_participant *p, const char *what)
{
    return amqp_get_rpc_reply(p->conn).reply_type == AMQP_RESPONSE_NORMAL ? 0 : rpc_failed(p, what);
}

static int channel_open(struct dtx_amqp_participant *p, amqp_channel_t ch)
{
    amqp_channel_open(p->conn, ch);
    return rpc_ok(p, "channel.open");
}

/*
 * Declare queue `name` durable, not exclusive, not auto-delete. A queue that
 * exists with other arguments (an operator's quorum queue, a TTL, ...)
 * makes the broker close the channel with 406 PRECONDITION_FAILED: then it
 * is taken as it is (passive declare on a reopened channel).
 */
static int declare(struct dtx_amqp_participant *p, const char *name)
{
    amqp_queue_declare(p->conn, CH_CONSUME, amqp_cstring_bytes(name), 0, 1, 0, 0, amqp_empty_table);
    amqp_rpc_reply_t r = amqp_get_rpc_reply(p->conn);
    if (r.reply_type == AMQP_RESPONSE_NORMAL)
        return 0;
    if (r.reply_type != AMQP_RESPONSE_SERVER_EXCEPTION || r.reply.id != AMQP_CHANNEL_CLOSE_METHOD ||
        ((amqp_channel_close_t *)r.reply.decoded)->reply_code != AMQP_PRECONDITION_FAILED)
        return rpc_failed(p, "queue.declare");
    amqp_channel_close_ok_t ok = {0};
    if (amqp_send_method(p->conn, CH_CONSUME, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok) != 0)
        return failed(p, "queue.declare: could not answer the broker's channel.close");
    if (channel_open(p, CH_CONSUME) != 0)
        return -1;
    amqp_queue_declare(p->conn, CH_CONSUME, amqp_cstring_bytes(name), 1, 0, 0, 0, amqp_empty_table);
    return rpc_ok(p, "queue.declare (passive)");
}

/*
 * Connect, log in, open the publishing channel in confirm mode, declare the
 * queues, set the prefetch and start consuming. 0, or -1 (the caller
 * destroys whatever was made).
 */
static int conn_open(struct dtx_amqp_participant *p)
{
    p->conn = amqp_new_connection();
    if (p->conn == NULL)
        return failed(p, "out of memory");
    amqp_socket_t *sock = libdtx_broker_socket(&p->b, p->conn);
    if (sock == NULL)
        return failed(p, "cannot set up the %s socket (CA file %s)", p->b.ssl ? "TLS" : "TCP",
                      p->b.cacert != NULL ? p->b.cacert : "of the system");
    struct timeval tv = tv_of(CONNECT_TIMEOUT_MS);
    int rc = AMQP_STATUS_OK;
    if (amqp_set_handshake_timeout(p->conn, &tv) != AMQP_STATUS_OK ||
        amqp_set_rpc_timeout(p->conn, &tv) != AMQP_STATUS_OK ||
        (rc = amqp_socket_open_noblock(sock, p->b.host, p->b.port, &tv)) != AMQP_STATUS_OK)
        return failed(p, "cannot connect to %s:%d: %s", p->b.host, p->b.port,
                      amqp_error_string2(rc));

    /* a cancelled consumer is told (basic.cancel), and a refused login is
     * a connection.close with its reason rather than a dropped socket */
    amqp_table_entry_t caps[2];
    caps[0].key = amqp_cstring_bytes("consumer_cancel_notify");
    caps[0].value.kind = AMQP_FIELD_KIND_BOOLEAN;
    caps[0].value.value.boolean = 1;
    caps[1].key = amqp_cstring_bytes("authentication_failure_close");
    caps[1].value.kind = AMQP_FIELD_KIND_BOOLEAN;
    caps[1].value.value.boolean = 1;
    amqp_table_entry_t props[2];
    props[0] = libdtx_entry_str("connection_name", p->conn_name);
    props[1].key = amqp_cstring_bytes("capabilities");
    props[1].value.kind = AMQP_FIELD_KIND_TABLE;
    props[1].value.value.table.num_entries = 2;
    props[1].value.value.table.entries = caps;
    amqp_table_t table = {.num_entries = 2, .entries = props};
    amqp_rpc_reply_t r =
        amqp_login_with_properties(p->conn, p->b.vhost, 0, AMQP_DEFAULT_FRAME_SIZE, HEARTBEAT_S,
                                   &table, AMQP_SASL_METHOD_PLAIN, p->b.user, p->b.password);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        char why[sizeof p->why];
        libdtx_amqp_why(r, "login", why, sizeof why);
        return failed(p, "%s (user %s, vhost %s)", why, p->b.user, p->b.vhost);
    }

    if (channel_open(p, CH_PUBLISH) != 0)
        return -1;
    amqp_confirm_select(p->conn, CH_PUBLISH);
    if (rpc_ok(p, "confirm.select") != 0)
        return -1;
    p->pub_seq = p->confirmed = p->nacked = 0;

    if (channel_open(p, CH_CONSUME) != 0 || declare(p, p->queue) != 0 ||
        declare(p, p->dead_letter) != 0)
        return -1;
    amqp_basic_qos(p->conn, CH_CONSUME, 0, (uint16_t)p->prefetch, 0);
    if (rpc_ok(p, "basic.qos") != 0)
        return -1;
    amqp_basic_consume(p->conn, CH_CONSUME, amqp_cstring_bytes(p->queue), amqp_empty_bytes, 0, 0, 0,
                       amqp_empty_table);
    return rpc_ok(p, "basic.consume");
}

/* Close (politely when `polite`: unacknowledged deliveries go back to the
 * queue either way) and forget the connection and what was pending. */
static void conn_close(struct dtx_amqp_participant *p, int polite)
{
    pending_clear(p);
    if (p->conn == NULL)
        return;
    if (polite) {
        amqp_channel_close(p->conn, CH_CONSUME, AMQP_REPLY_SUCCESS);
        amqp_channel_close(p->conn, CH_PUBLISH, AMQP_REPLY_SUCCESS);
        amqp_connection_close(p->conn, AMQP_REPLY_SUCCESS);
    }
    amqp_destroy_connection(p->conn);
    p->conn = NULL;
}

/* ---- reading frames ---------------------------------------------------------- */

/* basic.deliver: read its content and queue the delivery. */
static const amqp_field_value_t *header(const amqp_basic_properties_t *props, const char *key);

static int on_deliver(struct dtx_amqp_participant *p, amqp_channel_t ch,
                      const amqp_basic_deliver_t *m)
{
    struct delivery *d = calloc(1, sizeof *d);
    if (d == NULL)
        return failed(p, "out of memory");
    d->tag = m->delivery_tag;
    d->redelivered = m->redelivered != 0;
    d->routing_key = strndup(m->routing_key.len > 0 ? (const char *)m->routing_key.bytes : "",
                             m->routing_key.len);
    if (d->routing_key == NULL) {
        free(d);
        return failed(p, "out of memory");
    }
    amqp_rpc_reply_t r = amqp_read_message(p->conn, ch, &d->msg, 0);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        free(d->routing_key); /* amqp_read_message cleaned up after itself */
        free(d);
        char why[sizeof p->why];
        libdtx_amqp_why(r, "reading a delivery", why, sizeof why);
        return failed(p, "%s", why);
    }
    const amqp_field_value_t *rk = header(&d->msg.properties, RKEY_HEADER);
    if (rk != NULL && (rk->kind == AMQP_FIELD_KIND_UTF8 || rk->kind == AMQP_FIELD_KIND_BYTES) &&
        memchr(rk->value.bytes.bytes, '\0', rk->value.bytes.len) == NULL) {
        char *first = strndup(rk->value.bytes.len ? (const char *)rk->value.bytes.bytes : "",
                              rk->value.bytes.len);
        if (first != NULL) {
            free(d->routing_key);
            d->routing_key = first;
        }
    }
    if (p->tail != NULL)
        p->tail->next = d;
    else
        p->head = d;
    p->tail = d;
    return 1;
}

/*
 * Wait up to ms for one frame and handle it (this also keeps the heartbeats
 * going). 1: a frame was handled; 0: none came; -1: the connection or a
 * channel is gone, or the broker cancelled the consumer: reconnect.
 */
static int pump(struct dtx_amqp_participant *p, int ms)
{
    amqp_frame_t f;
    struct timeval tv = tv_of(ms);
    int rc = amqp_simple_wait_frame_noblock(p->conn, &f, &tv);
    if (rc == AMQP_STATUS_TIMEOUT)
        return 0;
    if (rc != AMQP_STATUS_OK)
        return failed(p, "lost the connection: %s", amqp_error_string2(rc));
    if (f.frame_type != AMQP_FRAME_METHOD)
        return 1; /* content without its method: cannot happen, ignore */
    switch (f.payload.method.id) {
    case AMQP_BASIC_DELIVER_METHOD:
        return on_deliver(p, f.channel, f.payload.method.decoded);
    case AMQP_BASIC_ACK_METHOD: {
        const amqp_basic_ack_t *m = f.payload.method.decoded;
        if (f.channel == CH_PUBLISH && m->delivery_tag > p->confirmed)
            p->confirmed = m->delivery_tag;
        return 1;
    }
    case AMQP_BASIC_NACK_METHOD: {
        const amqp_basic_nack_t *m = f.payload.method.decoded;
        if (f.channel == CH_PUBLISH && m->delivery_tag > p->nacked)
            p->nacked = m->delivery_tag;
        return 1;
    }
    case AMQP_CHANNEL_CLOSE_METHOD: {
        const amqp_channel_close_t *m = f.payload.method.decoded;
        failed(p, "the broker closed channel %u: %u %.*s", f.channel, m->reply_code,
               (int)m->reply_text.len, (const char *)m->reply_text.bytes);
        amqp_channel_close_ok_t ok = {0};
        amqp_send_method(p->conn, f.channel, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
        return -1;
    }
    case AMQP_CONNECTION_CLOSE_METHOD: {
        const amqp_connection_close_t *m = f.payload.method.decoded;
        failed(p, "the broker closed the connection: %u %.*s", m->reply_code,
               (int)m->reply_text.len, (const char *)m->reply_text.bytes);
        amqp_connection_close_ok_t ok = {0};
        amqp_send_method(p->conn, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
        return -1;
    }
    case AMQP_BASIC_RETURN_METHOD: {
        /* a mandatory publish found no queue; its content follows */
        amqp_message_t m;
        if (amqp_read_message(p->conn, f.channel, &m, 0).reply_type != AMQP_RESPONSE_NORMAL)
            return failed(p, "lost the connection reading a returned message");
        amqp_destroy_message(&m);
        p->returned = 1;
        return 1;
    }
    case AMQP_BASIC_CANCEL_METHOD: /* the queue was deleted: declare it again */
        return failed(p, "the broker cancelled the consumer of %s (queue deleted?)", p->queue);
    default:
        return 1;
    }
}

/* ---- publishing ------------------------------------------------------------ */

/*
 * Publish on the default exchange with routing key rk and wait for the
 * broker's confirm. `mandatory`: the queue must exist (a dead letter, a
 * retry: dropping them would lose the message), else the broker returns the
 * message and this fails. 0, or -1 (no confirm, or returned: reconnect,
 * which declares the queues again).
 */
static int publish(struct dtx_amqp_participant *p, amqp_bytes_t rk, int mandatory,
                   const amqp_basic_properties_t *props, amqp_bytes_t body)
{
    p->returned = 0;
    int rc =
        amqp_basic_publish(p->conn, CH_PUBLISH, amqp_empty_bytes, rk, mandatory, 0, props, body);
    if (rc != AMQP_STATUS_OK)
        return failed(p, "publish to %.*s: %s", (int)rk.len, (const char *)rk.bytes,
                      amqp_error_string2(rc));
    uint64_t seq = ++p->pub_seq, deadline = libdtx_now_ms() + CONFIRM_TIMEOUT_MS;
    while (p->confirmed < seq) {
        uint64_t now = libdtx_now_ms();
        if (p->nacked >= seq)
            return failed(p, "the broker refused a message to %.*s (basic.nack)", (int)rk.len,
                          (const char *)rk.bytes);
        if (now >= deadline)
            return failed(p, "no confirm from the broker within %d ms", CONFIRM_TIMEOUT_MS);
        uint64_t left = deadline - now;
        if (pump(p, left < WAIT_SLICE_MS ? (int)left : WAIT_SLICE_MS) < 0)
            return -1;
    }
    /* the return comes before the confirm */
    return p->returned ? failed(p, "queue %.*s is missing (message returned)", (int)rk.len,
                                (const char *)rk.bytes)
                       : 0;
}

/*
 * Publish a copy of d (its properties and body, persistent) to queue `to`,
 * with header `key` replaced by `value` (a string, or when value is NULL the
 * integer n).
 */
static int republish(struct dtx_amqp_participant *p, const struct delivery *d, const char *to,
                     const char *key, const char *value, int n)
{
    amqp_basic_properties_t props = d->msg.properties;
    int have = (props._flags & AMQP_BASIC_HEADERS_FLAG) ? props.headers.num_entries : 0;
    amqp_table_entry_t *h = calloc((size_t)have + 2, sizeof *h);
    if (h == NULL)
        return failed(p, "out of memory");
    int k = 0;
    for (int i = 0; i < have; i++) {
        const amqp_table_entry_t *e = &props.headers.entries[i];
        if (!(e->key.len == strlen(key) && memcmp(e->key.bytes, key, e->key.len) == 0) &&
            !(e->key.len == strlen(RKEY_HEADER) &&
              memcmp(e->key.bytes, RKEY_HEADER, e->key.len) == 0))
            h[k++] = *e;
    }
    /* the routing key it was first published with (d->routing_key is that
     * already for a message republished before) */
    h[k++] = libdtx_entry_str(RKEY_HEADER, d->routing_key);
    if (value != NULL) {
        h[k++] = libdtx_entry_str(key, value);
    } else {
        h[k].key = amqp_cstring_bytes(key);
        h[k].value.kind = AMQP_FIELD_KIND_I32;
        h[k++].value.value.i32 = n;
    }
    props._flags |= AMQP_BASIC_HEADERS_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG;
    props.headers.num_entries = k;
    props.headers.entries = h;
    props.delivery_mode = AMQP_DELIVERY_PERSISTENT;
    int rc = publish(p, amqp_cstring_bytes(to), 1, &props, d->msg.body);
    free(h);
    return rc;
}

static int dead_letter(struct dtx_amqp_participant *p, const struct delivery *d, const char *why)
{
    return republish(p, d, p->dead_letter, "x-dtx-reason", why, 0);
}

static int ack(struct dtx_amqp_participant *p, const struct delivery *d)
{
    int rc = amqp_basic_ack(p->conn, CH_CONSUME, d->tag, 0);
    return rc == AMQP_STATUS_OK ? 0 : failed(p, "basic.ack: %s", amqp_error_string2(rc));
}

const char *dtx_amqp_result_name(enum dtx_amqp_result r)
{
    switch (r) {
    case DTX_AMQP_SUCCESS:
        return "SUCCESS";
    case DTX_AMQP_FAILURE:
        return "FAILURE";
    case DTX_AMQP_ONGOING:
        return "ONGOING";
    case DTX_AMQP_RETRY:
        return "RETRY";
    }
    return "?";
}

/* Answer command c (res is not RETRY) on its reply_to. */
static int reply(struct dtx_amqp_participant *p, const struct delivery *d, const struct cmd *c,
                 enum dtx_amqp_result res, const char *reason)
{
    const amqp_basic_properties_t *in = &d->msg.properties;
    amqp_table_entry_t h[4] = {
        libdtx_entry_str("Dtx-Result", dtx_amqp_result_name(res)),
        libdtx_entry_str("Dtx-Gid", c->gid),
        libdtx_entry_str("Dtx-Branch", c->branch),
        libdtx_entry_str("Dtx-Op", c->op),
    };
    amqp_basic_properties_t props;
    memset(&props, 0, sizeof props);
    props._flags =
        AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_HEADERS_FLAG;
    props.content_type = amqp_cstring_bytes("text/plain");
    props.delivery_mode = AMQP_DELIVERY_PERSISTENT;
    props.headers.num_entries = 4;
    props.headers.entries = h;
    if (in->_flags & AMQP_BASIC_CORRELATION_ID_FLAG) {
        props._flags |= AMQP_BASIC_CORRELATION_ID_FLAG;
        props.correlation_id = in->correlation_id;
    }
    /* not mandatory: a reply queue that is gone is dtxd's business */
    return publish(p, in->reply_to, 0, &props, amqp_cstring_bytes(reason));
}

/* ---- parsing ---------------------------------------------------------------- */

static const amqp_field_value_t *header(const amqp_basic_properties_t *props, const char *key)
{
    if (!(props->_flags & AMQP_BASIC_HEADERS_FLAG))
        return NULL;
    size_t n = strlen(key);
    for (int i = 0; i < props->headers.num_entries; i++) {
        const amqp_table_entry_t *e = &props->headers.entries[i];
        if (e->key.len == n && strncasecmp((const char *)e->key.bytes, key, n) == 0)
            return &e->value;
    }
    return NULL;
}

/* Copy the string header `key` into out (HEADER_CAP bytes): NULL, or what
 * is wrong with it ("missing", "empty", ...). */
static const char *header_str(const amqp_basic_properties_t *props, const char *key, char *out)
{
    const amqp_field_value_t *v = header(props, key);
    out[0] = '\0';
    if (v == NULL)
        return "missing";
    if (v->kind != AMQP_FIELD_KIND_UTF8 && v->kind != AMQP_FIELD_KIND_BYTES)
        return "not a string";
    amqp_bytes_t b = v->value.bytes;
    if (b.len == 0)
        return "empty";
    if (b.len >= HEADER_CAP)
        return "too long";
    if (memchr(b.bytes, '\0', b.len) != NULL)
        return "not a string";
    memcpy(out, b.bytes, b.len);
    out[b.len] = '\0';
    return NULL;
}

static int header_int(const amqp_basic_properties_t *props, const char *key)
{
    const amqp_field_value_t *v = header(props, key);
    int64_t n = 0;
    if (v == NULL)
        return 0;
    switch (v->kind) {
    case AMQP_FIELD_KIND_I8:
        n = v->value.i8;
        break;
    case AMQP_FIELD_KIND_U8:
        n = v->value.u8;
        break;
    case AMQP_FIELD_KIND_I16:
        n = v->value.i16;
        break;
    case AMQP_FIELD_KIND_U16:
        n = v->value.u16;
        break;
    case AMQP_FIELD_KIND_I32:
        n = v->value.i32;
        break;
    case AMQP_FIELD_KIND_U32:
        n = v->value.u32;
        break;
    case AMQP_FIELD_KIND_I64:
        n = v->value.i64;
        break;
    case AMQP_FIELD_KIND_U64:
        n = v->value.u64 > INT32_MAX ? INT32_MAX : (int64_t)v->value.u64;
        break;
    default:
        return 0;
    }
    return n < 0 ? 0 : n > INT32_MAX ? INT32_MAX : (int)n;
}

static int op_valid(const char *op)
{
    for (size_t i = 0; i < sizeof valid_ops / sizeof valid_ops[0]; i++)
        if (strcmp(op, valid_ops[i]) == 0)
            return 1;
    return 0;
}

/* Parse d into c. 0, or -1 with why (REASON_CAP bytes) saying what is wrong. */
static int parse(const struct delivery *d, struct cmd *c, char *why)
{
    const amqp_basic_properties_t *props = &d->msg.properties;
    static const char *const names[3] = {"Dtx-Gid", "Dtx-Branch", "Dtx-Op"};
    char *const dst[3] = {c->gid, c->branch, c->op};
    for (int i = 0; i < 3; i++) {
        const char *bad = header_str(props, names[i], dst[i]);
        if (bad != NULL) {
            snprintf(why, REASON_CAP, "header %s: %s", names[i], bad);
            return -1;
        }
    }
    const char *bad = header_str(props, "Dtx-Type", c->type);
    if (bad != NULL && strcmp(bad, "missing") != 0 && strcmp(bad, "empty") != 0) {
        snprintf(why, REASON_CAP, "header Dtx-Type: %s", bad);
        return -1;
    }
    if (!op_valid(c->op)) {
        snprintf(why, REASON_CAP, "unknown Dtx-Op \"%.64s\"", c->op);
        return -1;
    }
    snprintf(c->message_id, sizeof c->message_id, "%s/%s/%s", c->gid, c->branch, c->op);
    amqp_bytes_t id = props->message_id;
    if (!(props->_flags & AMQP_BASIC_MESSAGE_ID_FLAG) || id.len != strlen(c->message_id) ||
        memcmp(id.bytes, c->message_id, id.len) != 0) {
        snprintf(why, REASON_CAP, "message_id is not Dtx-Gid/Dtx-Branch/Dtx-Op");
        return -1;
    }
    c->delivery = strcmp(c->type, "msg") == 0 && strcmp(c->op, "action") == 0;
    if (!c->delivery && (!(props->_flags & AMQP_BASIC_REPLY_TO_FLAG) || props->reply_to.len == 0)) {
        snprintf(why, REASON_CAP, "command without reply_to");
        return -1;
    }
    c->attempts = header_int(props, "x-dtx-attempts");
    return 0;
}

/* ---- the local transaction --------------------------------------------------- */

static int db_exec(struct dtx_amqp_participant *p, const char *sql)
{
    if (p->sqlite != NULL)
        return sqlite3_exec(p->sqlite, sql, NULL, NULL, NULL) == SQLITE_OK ? 0 : -1;
    PGresult *res = PQexec(p->pg, sql);
    int rc = PQresultStatus(res) == PGRES_COMMAND_OK ? 0 : -1;
    PQclear(res);
    return rc;
}

static int db_begin(struct dtx_amqp_participant *p)
{
    if (p->sqlite != NULL)
        return db_exec(p, "BEGIN IMMEDIATE");
    if (PQstatus(p->pg) != CONNECTION_OK)
        PQreset(p->pg); /* a server restart: the loop is the connection's only user */
    if (PQstatus(p->pg) != CONNECTION_OK || PQtransactionStatus(p->pg) != PQTRANS_IDLE)
        return -1;
    return db_exec(p, "BEGIN");
}

/* COMMIT, only of a transaction still open and sound: on PostgreSQL a
 * COMMIT of a failed transaction answers "ROLLBACK" without an error. */
static int db_commit(struct dtx_amqp_participant *p)
{
    if (p->sqlite != NULL)
        return sqlite3_get_autocommit(p->sqlite) == 0 ? db_exec(p, "COMMIT") : -1;
    if (PQtransactionStatus(p->pg) != PQTRANS_INTRANS)
        return -1;
    PGresult *res = PQexec(p->pg, "COMMIT");
    int rc =
        PQresultStatus(res) == PGRES_COMMAND_OK && strcmp(PQcmdStatus(res), "COMMIT") == 0 ? 0 : -1;
    PQclear(res);
    return rc;
}

static void db_rollback(struct dtx_amqp_participant *p)
{
    if (p->sqlite != NULL) {
        if (sqlite3_get_autocommit(p->sqlite) == 0)
            db_exec(p, "ROLLBACK");
    } else if (PQstatus(p->pg) == CONNECTION_OK && PQtransactionStatus(p->pg) != PQTRANS_IDLE) {
        db_exec(p, "ROLLBACK");
    }
}

static enum dtx_amqp_result call(struct dtx_amqp_participant *p, const struct dtx_amqp_msg *m,
                                 char *reason)
{
    enum dtx_amqp_result r = p->handler(p->arg, m, reason, REASON_CAP);
    reason[REASON_CAP - 1] = '\0';
    switch (r) {
    case DTX_AMQP_SUCCESS:
    case DTX_AMQP_FAILURE:
    case DTX_AMQP_ONGOING:
    case DTX_AMQP_RETRY:
        return r;
    }
    return DTX_AMQP_RETRY; /* not a result: do not guess */
}

/* A database error at `what` for c: roll back, tell, and RETRY. */
static enum dtx_amqp_result db_failed(struct dtx_amqp_participant *p, const char *what,
                                      const struct cmd *c)
{
    char msg[300];
    snprintf(msg, sizeof msg, "%s",
             p->sqlite != NULL ? sqlite3_errmsg(p->sqlite) : PQerrorMessage(p->pg));
    msg[strcspn(msg, "\n")] = '\0'; /* libpq ends its messages with a newline */
    db_rollback(p);
    status(p, "database error at %s of %s: %s; it is retried", what, c->message_id,
           msg[0] != '\0' ? msg : "(no message)");
    return DTX_AMQP_RETRY;
}

/* Run the handler for m, inside the barrier when there is one. */
static enum dtx_amqp_result run_handler(struct dtx_amqp_participant *p, const struct cmd *c,
                                        const struct dtx_amqp_msg *m, char *reason)
{
    if ((p->pg == NULL && p->sqlite == NULL) || strcmp(c->op, "check") == 0) {
        if (p->pg != NULL && PQstatus(p->pg) != CONNECTION_OK)
            PQreset(p->pg); /* as db_begin does: the check's handler uses it too */
        return call(p, m, reason);
    }
    if (db_begin(p) != 0)
        return db_failed(p, "BEGIN", c);
    enum dtx_barrier_result b;
    int rc = p->pg != NULL ? dtx_barrier_pg(p->pg, c->gid, c->branch, c->op, &b)
                           : dtx_barrier_sqlite(p->sqlite, c->gid, c->branch, c->op, &b);
    if (rc != 0)
        return db_failed(p, "the barrier", c);
    enum dtx_amqp_result res;
    switch (b) {
    case DTX_BARRIER_APPLY:
        res = call(p, m, reason);
        break;
    case DTX_BARRIER_DUPLICATE:
    case DTX_BARRIER_NULL_UNDO:
        res = DTX_AMQP_SUCCESS;
        break;
    case DTX_BARRIER_LATE:
        res = DTX_AMQP_FAILURE;
        snprintf(reason, REASON_CAP, "its compensation came first");
        break;
    default:
        res = DTX_AMQP_RETRY;
        break;
    }
    /* the barrier's rows of a duplicate, null undo or late op must stay */
    if (res == DTX_AMQP_SUCCESS || (b != DTX_BARRIER_APPLY && res != DTX_AMQP_RETRY)) {
        if (db_commit(p) != 0)
            return db_failed(p, "COMMIT", c);
    } else {
        db_rollback(p);
    }
    return res;
}

/* ---- one message ---------------------------------------------------------- */

/* A delivery the handler did not finish: try it again later, or give up. */
static int delivery_retry(struct dtx_amqp_participant *p, const struct delivery *d,
                          const struct cmd *c)
{
    int attempts = c->attempts + 1;
    if (attempts >= p->max_attempts) {
        char why[REASON_CAP];
        snprintf(why, sizeof why, "gave up after %d attempts", attempts);
        return dead_letter(p, d, why);
    }
    /* pause, still reading frames (heartbeats); a stop() cuts it short */
    int pause = BACKOFF_MIN_MS;
    for (int i = 1; i < attempts && pause < BACKOFF_MAX_MS; i++)
        pause = backoff_next(pause);
    uint64_t until = libdtx_now_ms() + (uint64_t)pause;
    while (!stopping(p)) {
        uint64_t now = libdtx_now_ms();
        if (now >= until)
            break;
        uint64_t left = until - now;
        if (pump(p, left < WAIT_SLICE_MS ? (int)left : WAIT_SLICE_MS) < 0)
            return -1;
    }
    return republish(p, d, p->queue, "x-dtx-attempts", NULL, attempts);
}

/* Handle d to the end (its ack). 0, or -1: the connection must go. */
static int handle(struct dtx_amqp_participant *p, struct delivery *d)
{
    struct cmd c;
    char why[REASON_CAP];
    if (parse(d, &c, why) != 0)
        return dead_letter(p, d, why) == 0 ? ack(p, d) : -1;

    size_t len = d->msg.body.len;
    char *body = malloc(len + 1);
    if (body == NULL)
        return failed(p, "out of memory");
    if (len > 0)
        memcpy(body, d->msg.body.bytes, len);
    body[len] = '\0';
    struct dtx_amqp_msg m = {
        .gid = c.gid,
        .branch = c.branch,
        .op = c.op,
        .type = c.type,
        .message_id = c.message_id,
        .routing_key = d->routing_key,
        .body = body,
        .body_len = len,
        .redelivered = d->redelivered,
    };
    char reason[REASON_CAP] = "";
    enum dtx_amqp_result res = run_handler(p, &c, &m, reason);
    free(body);

    int rc = 0;
    if (c.delivery) {
        if (res == DTX_AMQP_FAILURE) {
            snprintf(why, sizeof why, "refused: %.1000s", reason);
            rc = dead_letter(p, d, why);
        } else if (res != DTX_AMQP_SUCCESS) {
            rc = delivery_retry(p, d, &c);
        }
    } else if (res != DTX_AMQP_RETRY) {
        rc = reply(p, d, &c, res, reason);
    }
    return rc == 0 ? ack(p, d) : -1;
}

/* Handle deliveries until stop() (0) or the connection fails (-1). */
static int consume(struct dtx_amqp_participant *p)
{
    while (!stopping(p)) {
        /* pending deliveries own their memory: the frames' pools can go */
        amqp_maybe_release_buffers(p->conn);
        struct delivery *d = p->head;
        if (d == NULL) {
            if (pump(p, WAIT_SLICE_MS) < 0)
                return -1;
            continue;
        }
        p->head = d->next;
        if (p->head == NULL)
            p->tail = NULL;
        int rc = handle(p, d);
        delivery_free(d);
        if (rc != 0)
            return -1;
    }
    return 0;
}

/* ---- the API ---------------------------------------------------------------- */

static int name_ok(const char *s)
{
    return s != NULL && s[0] != '\0' && strlen(s) <= NAME_MAX_LEN;
}

int dtx_amqp_participant_new(const struct dtx_amqp_opts *o, dtx_amqp_handler h, void *arg,
                             struct dtx_amqp_participant **out)
{
    if (out == NULL)
        return DTX_EINVAL;
    *out = NULL;
    if (o == NULL || h == NULL || o->broker_url == NULL || !name_ok(o->queue) ||
        (o->dead_letter != NULL && !name_ok(o->dead_letter)) || (o->pg && o->sqlite) ||
        o->prefetch < 0 || o->prefetch > UINT16_MAX || o->max_attempts < 0 ||
        (o->cacert != NULL && o->cacert[0] == '\0'))
        return DTX_EINVAL;
    struct dtx_amqp_participant *p = calloc(1, sizeof *p);
    if (p == NULL)
        return DTX_ENOMEM;
    int rc = libdtx_broker_parse(&p->b, o->broker_url, o->cacert);
    if (rc != 0)
        goto fail;
    rc = DTX_ENOMEM;
    p->queue = strdup(o->queue);
    if (p->queue == NULL)
        goto fail;
    size_t qlen = strlen(o->queue);
    p->dead_letter = o->dead_letter != NULL ? strdup(o->dead_letter) : malloc(qlen + 6);
    p->conn_name = malloc(qlen + 17);
    if (p->dead_letter == NULL || p->conn_name == NULL)
        goto fail;
    if (o->dead_letter == NULL)
        snprintf(p->dead_letter, qlen + 6, "%s.dead", o->queue);
    snprintf(p->conn_name, qlen + 17, "dtx-participant %s", o->queue);
    rc = DTX_EINVAL;
    if (!name_ok(p->dead_letter) || strcmp(p->dead_letter, p->queue) == 0)
        goto fail;
    p->prefetch = o->prefetch > 0 ? o->prefetch : DEFAULT_PREFETCH;
    p->max_attempts = o->max_attempts > 0 ? o->max_attempts : DEFAULT_MAX_ATTEMPTS;
    p->pg = o->pg;
    p->sqlite = o->sqlite;
    p->handler = h;
    p->on_status = o->on_status;
    p->arg = arg;
    atomic_init(&p->stop, 0);
    *out = p;
    return 0;
fail:
    dtx_amqp_participant_free(p);
    return rc;
}

int dtx_amqp_participant_run(struct dtx_amqp_participant *p)
{
    if (p == NULL)
        return DTX_EINVAL;
    int backoff = BACKOFF_MIN_MS;
    while (!stopping(p)) {
        p->why[0] = '\0';
        if (conn_open(p) != 0) {
            conn_close(p, 0);
            status(p, "cannot connect: %s; again in %d ms", p->why, backoff);
            nap(p, backoff);
            backoff = backoff_next(backoff);
            continue;
        }
        backoff = BACKOFF_MIN_MS;
        status(p, "consuming %s on %s://%s@%s:%d/%s", p->queue, p->b.ssl ? "amqps" : "amqp",
               p->b.user, p->b.host, p->b.port, p->b.vhost);
        int rc = consume(p);
        conn_close(p, rc == 0);
        if (rc != 0) {
            status(p, "connection lost: %s; again in %d ms", p->why, backoff);
            nap(p, backoff);
            backoff = backoff_next(backoff);
        }
    }
    atomic_store(&p->stop, 0); /* this stop is spent: run() may be called again */
    return 0;
}

void dtx_amqp_participant_stop(struct dtx_amqp_participant *p)
{
    if (p != NULL)
        atomic_store(&p->stop, 1);
}

void dtx_amqp_participant_free(struct dtx_amqp_participant *p)
{
    if (p == NULL)
        return;
    libdtx_broker_free(&p->b);
    free(p->queue);
    free(p->dead_letter);
    free(p->conn_name);
    free(p);
}
