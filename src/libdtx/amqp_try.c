/*
 * amqp_try.c - a TCC Try over RabbitMQ: dtx_tcc_try() with an
 * amqp://<exchange>/<routing-key> try_url, on a client given a broker with
 * dtx_client_set_amqp(). It is the caller's side of the command and reply
 * protocol of docs/API.md ("amqp:// targets"), for the one tcc call the
 * client makes itself; dtxd makes the confirms and cancels.
 *
 * One connection per client, made at the first such Try and kept; any error
 * drops it, and the next Try connects again. One channel, in confirm mode,
 * both publishes the commands and consumes the replies (no-ack) from a
 * server-named, exclusive, auto-delete queue declared at connect. The
 * connection asks for no heartbeats: it sits idle between Tries, when a
 * blocking client sends none, and the broker would close it after two missed
 * ones. A kept connection found dead at the next Try (a broker restart) is
 * replaced, and the command published once more on the new one, within the
 * same timeout.
 *
 * A Try publishes one persistent, mandatory message to the target (body =
 * the payload, message_id gid/branch/try, a fresh correlation_id, reply_to
 * our queue, headers Dtx-Gid, Dtx-Branch, Dtx-Op: try, Dtx-Type: tcc), then
 * reads frames until the reply with its correlation_id comes, within the
 * client's timeout:
 *   - basic.return before the confirm: no queue is bound (unroutable);
 *   - basic.nack: the broker refused it;
 *   - channel.close (a missing exchange: 404) or connection.close;
 *   - a reply with another correlation_id: a late answer to an earlier
 *     attempt, dropped.
 * Dtx-Result SUCCESS is DTX_TRY_SUCCEEDED, FAILURE is DTX_TRY_FAILED (its body
 * is the reason); anything else, or nothing in time, is DTX_TRY_TRANSIENT
 * with the reason in `why`. The participant de-duplicates on message_id, so a
 * Try called again after a transient outcome is safe.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <amqp.h>

#include "amqp_int.h"

#define CHANNEL            1
#define CONNECT_TIMEOUT_MS 5000
#define SHORTSTR_MAX       255 /* exchange, routing key, message_id, queue name */

struct libdtx_amqp {
    struct libdtx_broker b;
    amqp_connection_state_t conn; /* NULL when not connected */
    char reply_queue[SHORTSTR_MAX + 1];
    char nonce[17]; /* hex, fresh per connection */
    uint64_t seq;   /* correlation ids: "<nonce>.<seq>" */
    uint64_t published, acked, nacked;
    int returned; /* a basic.return came for the publish in flight */
};

static int hexval(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* Percent-decode s[0..n) into out (cap bytes with its NUL); -1 on a bad %XX,
 * a NUL, or too long. */
static int pct_decode(const char *s, size_t n, char *out, size_t cap)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        int ch = (unsigned char)s[i];
        if (ch == '%') {
            if (i + 2 >= n)
                return -1;
            int hi = hexval(s[i + 1]), lo = hexval(s[i + 2]);
            if (hi < 0 || lo < 0)
                return -1;
            ch = hi * 16 + lo;
            i += 2;
        }
        if (ch == 0 || k + 1 >= cap)
            return -1;
        out[k++] = (char)ch;
    }
    out[k] = '\0';
    return 0;
}

int libdtx_amqp_target(const char *url, char *exchange, char *routing_key)
{
    if (url == NULL || strncmp(url, "amqp://", 7) != 0)
        return -1;
    const char *rest = url + 7;
    const char *slash = strchr(rest, '/');
    if (slash == NULL)
        return -1;
    if (pct_decode(rest, (size_t)(slash - rest), exchange, SHORTSTR_MAX + 1) != 0 ||
        pct_decode(slash + 1, strlen(slash + 1), routing_key, SHORTSTR_MAX + 1) != 0)
        return -1;
    return exchange[0] == '\0' && routing_key[0] == '\0' ? -1 : 0;
}

int libdtx_amqp_new(const char *broker_url, const char *cacert, struct libdtx_amqp **out)
{
    *out = NULL;
    struct libdtx_amqp *a = calloc(1, sizeof *a);
    if (a == NULL)
        return DTX_ENOMEM;
    int rc = libdtx_broker_parse(&a->b, broker_url, cacert);
    if (rc != DTX_OK) {
        free(a);
        return rc;
    }
    *out = a;
    return DTX_OK;
}

static void disconnect(struct libdtx_amqp *a, int polite)
{
    if (a->conn == NULL)
        return;
    if (polite) {
        amqp_channel_close(a->conn, CHANNEL, AMQP_REPLY_SUCCESS);
        amqp_connection_close(a->conn, AMQP_REPLY_SUCCESS);
    }
    amqp_destroy_connection(a->conn);
    a->conn = NULL;
}

void libdtx_amqp_free(struct libdtx_amqp *a)
{
    if (a == NULL)
        return;
    disconnect(a, 1);
    libdtx_broker_free(&a->b);
    free(a);
}

/* Connect, log in, open the channel in confirm mode, declare and consume
 * the reply queue. 0, or -1 with why (and no connection). */
static int connect_broker(struct libdtx_amqp *a, int64_t timeout_ms, char *why, size_t whylen)
{
    int ms =
        timeout_ms > 0 && timeout_ms < CONNECT_TIMEOUT_MS ? (int)timeout_ms : CONNECT_TIMEOUT_MS;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    a->conn = amqp_new_connection();
    if (a->conn == NULL) {
        snprintf(why, whylen, "out of memory");
        return -1;
    }
    amqp_socket_t *sock = libdtx_broker_socket(&a->b, a->conn);
    if (sock == NULL) {
        snprintf(why, whylen, "cannot set up the %s socket (CA file %s)", a->b.ssl ? "TLS" : "TCP",
                 a->b.cacert != NULL ? a->b.cacert : "of the system");
        goto fail;
    }
    int rc = AMQP_STATUS_OK;
    if (amqp_set_handshake_timeout(a->conn, &tv) != AMQP_STATUS_OK ||
        amqp_set_rpc_timeout(a->conn, &tv) != AMQP_STATUS_OK ||
        (rc = amqp_socket_open_noblock(sock, a->b.host, a->b.port, &tv)) != AMQP_STATUS_OK) {
        snprintf(why, whylen, "cannot connect to the broker at %s:%d: %s", a->b.host, a->b.port,
                 amqp_error_string2(rc));
        goto fail;
    }
    /* named, so that an operator sees whose connection it is */
    char name[64];
    snprintf(name, sizeof name, "dtx-client %ld", (long)getpid());
    /* a refused login is a connection.close with its reason (403), not a
     * dropped socket */
    amqp_table_entry_t cap;
    cap.key = amqp_cstring_bytes("authentication_failure_close");
    cap.value.kind = AMQP_FIELD_KIND_BOOLEAN;
    cap.value.value.boolean = 1;
    amqp_table_entry_t props[2] = {libdtx_entry_str("connection_name", name)};
    props[1].key = amqp_cstring_bytes("capabilities");
    props[1].value.kind = AMQP_FIELD_KIND_TABLE;
    props[1].value.value.table.num_entries = 1;
    props[1].value.value.table.entries = &cap;
    amqp_table_t table = {.num_entries = 2, .entries = props};
    amqp_rpc_reply_t r =
        amqp_login_with_properties(a->conn, a->b.vhost, 0, AMQP_DEFAULT_FRAME_SIZE, 0, &table,
                                   AMQP_SASL_METHOD_PLAIN, a->b.user, a->b.password);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        libdtx_amqp_why(r, "broker login", why, whylen);
        goto fail;
    }
    amqp_channel_open(a->conn, CHANNEL);
    if ((r = amqp_get_rpc_reply(a->conn)).reply_type != AMQP_RESPONSE_NORMAL) {
        libdtx_amqp_why(r, "channel.open", why, whylen);
        goto fail;
    }
    amqp_confirm_select(a->conn, CHANNEL);
    if ((r = amqp_get_rpc_reply(a->conn)).reply_type != AMQP_RESPONSE_NORMAL) {
        libdtx_amqp_why(r, "confirm.select", why, whylen);
        goto fail;
    }
    amqp_queue_declare_ok_t *q =
        amqp_queue_declare(a->conn, CHANNEL, amqp_empty_bytes, 0, 0, 1, 1, amqp_empty_table);
    if ((r = amqp_get_rpc_reply(a->conn)).reply_type != AMQP_RESPONSE_NORMAL || q == NULL ||
        q->queue.len == 0 || q->queue.len > SHORTSTR_MAX) {
        libdtx_amqp_why(r, "declaring the reply queue", why, whylen);
        goto fail;
    }
    memcpy(a->reply_queue, q->queue.bytes, q->queue.len);
    a->reply_queue[q->queue.len] = '\0';
    amqp_basic_consume(a->conn, CHANNEL, amqp_cstring_bytes(a->reply_queue), amqp_empty_bytes, 0, 1,
                       1, amqp_empty_table);
    if ((r = amqp_get_rpc_reply(a->conn)).reply_type != AMQP_RESPONSE_NORMAL) {
        libdtx_amqp_why(r, "consuming the reply queue", why, whylen);
        goto fail;
    }
    unsigned char raw[8];
    if (getrandom(raw, sizeof raw, 0) != (ssize_t)sizeof raw) {
        snprintf(why, whylen, "no random bytes for correlation ids");
        goto fail;
    }
    for (size_t i = 0; i < sizeof raw; i++)
        snprintf(a->nonce + 2 * i, 3, "%02x", raw[i]);
    a->seq = a->published = a->acked = a->nacked = 0;
    return 0;
fail:
    disconnect(a, 0);
    return -1;
}

/* The string value of header key in props, or NULL. */
static const amqp_bytes_t *header_str(const amqp_basic_properties_t *props, const char *key)
{
    if (!(props->_flags & AMQP_BASIC_HEADERS_FLAG))
        return NULL;
    size_t klen = strlen(key);
    for (int i = 0; i < props->headers.num_entries; i++) {
        const amqp_table_entry_t *e = &props->headers.entries[i];
        if (e->key.len == klen && memcmp(e->key.bytes, key, klen) == 0 &&
            (e->value.kind == AMQP_FIELD_KIND_UTF8 || e->value.kind == AMQP_FIELD_KIND_BYTES))
            return &e->value.value.bytes;
    }
    return NULL;
}

static int bytes_is(const amqp_bytes_t *b, const char *s)
{
    return b != NULL && b->len == strlen(s) && memcmp(b->bytes, s, b->len) == 0;
}

enum step { STEP_MORE, STEP_DONE, STEP_BROKEN };

/*
 * Read one frame (waiting up to ms) and act on it. STEP_DONE when it was our
 * reply (*result and why set), STEP_BROKEN when the connection or channel is
 * gone (why set), else STEP_MORE.
 */
static enum step read_one(struct libdtx_amqp *a, const char *corr, int ms,
                          enum dtx_try_result *result, char *why, size_t whylen)
{
    amqp_frame_t f;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    int rc = amqp_simple_wait_frame_noblock(a->conn, &f, &tv);
    if (rc == AMQP_STATUS_TIMEOUT)
        return STEP_MORE;
    if (rc != AMQP_STATUS_OK) {
        snprintf(why, whylen, "lost the broker connection: %s", amqp_error_string2(rc));
        return STEP_BROKEN;
    }
    if (f.frame_type != AMQP_FRAME_METHOD)
        return STEP_MORE;
    switch (f.payload.method.id) {
    case AMQP_BASIC_ACK_METHOD: {
        const amqp_basic_ack_t *m = f.payload.method.decoded;
        if (m->delivery_tag > a->acked)
            a->acked = m->delivery_tag;
        if (m->delivery_tag < a->published)
            a->returned = 0; /* a return before it was an earlier message's */
        return STEP_MORE;
    }
    case AMQP_BASIC_NACK_METHOD: {
        const amqp_basic_nack_t *m = f.payload.method.decoded;
        if (m->delivery_tag > a->nacked)
            a->nacked = m->delivery_tag;
        return STEP_MORE;
    }
    case AMQP_BASIC_RETURN_METHOD:
    case AMQP_BASIC_DELIVER_METHOD: {
        int is_return = f.payload.method.id == AMQP_BASIC_RETURN_METHOD;
        amqp_message_t msg;
        amqp_rpc_reply_t r = amqp_read_message(a->conn, f.channel, &msg, 0);
        if (r.reply_type != AMQP_RESPONSE_NORMAL) {
            libdtx_amqp_why(r, "reading a message", why, whylen);
            return STEP_BROKEN;
        }
        enum step st = STEP_MORE;
        if (is_return) {
            a->returned = 1; /* the message's ack follows (see the ack case) */
        } else if ((msg.properties._flags & AMQP_BASIC_CORRELATION_ID_FLAG) &&
                   bytes_is(&msg.properties.correlation_id, corr)) {
            const amqp_bytes_t *res = header_str(&msg.properties, "Dtx-Result");
            int n = msg.body.len > 300 ? 300 : (int)msg.body.len;
            st = STEP_DONE;
            if (bytes_is(res, "SUCCESS")) {
                *result = DTX_TRY_SUCCEEDED;
            } else if (bytes_is(res, "FAILURE")) {
                *result = DTX_TRY_FAILED;
                snprintf(why, whylen, "the participant replied FAILURE%s%.*s", n > 0 ? ": " : "", n,
                         (const char *)msg.body.bytes);
            } else {
                *result = DTX_TRY_TRANSIENT;
                snprintf(why, whylen, "the participant replied %s%.*s%s",
                         res != NULL ? "Dtx-Result " : "without a Dtx-Result",
                         res != NULL ? (int)(res->len > 40 ? 40 : res->len) : 0,
                         res != NULL ? (const char *)res->bytes : "", res != NULL ? "" : " header");
            }
        } /* else a late reply to an earlier attempt: dropped */
        amqp_destroy_message(&msg);
        return st;
    }
    case AMQP_CHANNEL_CLOSE_METHOD: {
        const amqp_channel_close_t *m = f.payload.method.decoded;
        snprintf(why, whylen, "the broker closed the channel: %u %.*s", m->reply_code,
                 (int)m->reply_text.len, (const char *)m->reply_text.bytes);
        amqp_channel_close_ok_t ok = {0};
        amqp_send_method(a->conn, f.channel, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
        return STEP_BROKEN;
    }
    case AMQP_CONNECTION_CLOSE_METHOD: {
        const amqp_connection_close_t *m = f.payload.method.decoded;
        snprintf(why, whylen, "the broker closed the connection: %u %.*s", m->reply_code,
                 (int)m->reply_text.len, (const char *)m->reply_text.bytes);
        amqp_connection_close_ok_t ok = {0};
        amqp_send_method(a->conn, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
        return STEP_BROKEN;
    }
    default:
        return STEP_MORE;
    }
}

/*
 * One attempt on the connection there is (made if none). Returns 1 when the
 * connection broke before the broker confirmed the command (it may not have
 * been sent: the caller may try once more on a new connection), else 0.
 */
static int attempt(struct libdtx_amqp *a, const char *exchange, const char *routing_key,
                   const char *gid, const char *branch, const char *body, int64_t timeout_ms,
                   uint64_t start, enum dtx_try_result *result, char *why, size_t whylen)
{
    *result = DTX_TRY_TRANSIENT;
    if (a->conn == NULL && connect_broker(a, timeout_ms, why, whylen) != 0)
        return 0;

    char message_id[SHORTSTR_MAX + 1], corr[48];
    snprintf(message_id, sizeof message_id, "%s/%s/try", gid, branch);
    snprintf(corr, sizeof corr, "%s.%llu", a->nonce, (unsigned long long)++a->seq);
    amqp_table_entry_t h[4] = {
        libdtx_entry_str("Dtx-Gid", gid), libdtx_entry_str("Dtx-Branch", branch),
        libdtx_entry_str("Dtx-Op", "try"), libdtx_entry_str("Dtx-Type", "tcc")};
    amqp_basic_properties_t props;
    memset(&props, 0, sizeof props);
    props._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG |
                   AMQP_BASIC_MESSAGE_ID_FLAG | AMQP_BASIC_CORRELATION_ID_FLAG |
                   AMQP_BASIC_REPLY_TO_FLAG | AMQP_BASIC_HEADERS_FLAG;
    props.content_type = amqp_cstring_bytes("application/json");
    props.delivery_mode = AMQP_DELIVERY_PERSISTENT;
    props.message_id = amqp_cstring_bytes(message_id);
    props.correlation_id = amqp_cstring_bytes(corr);
    props.reply_to = amqp_cstring_bytes(a->reply_queue);
    props.headers.num_entries = 4;
    props.headers.entries = h;

    a->returned = 0;
    int rc =
        amqp_basic_publish(a->conn, CHANNEL, amqp_cstring_bytes(exchange),
                           amqp_cstring_bytes(routing_key), 1, 0, &props, amqp_cstring_bytes(body));
    if (rc != AMQP_STATUS_OK) {
        snprintf(why, whylen, "publish failed: %s", amqp_error_string2(rc));
        disconnect(a, 0);
        return 1;
    }
    uint64_t tag = ++a->published;
    for (;;) {
        if (a->nacked >= tag) {
            snprintf(why, whylen, "the broker refused the command (basic.nack)");
            return 0;
        }
        if (a->acked >= tag && a->returned) {
            snprintf(why, whylen,
                     "unroutable: no queue is bound to exchange \"%.60s\" for routing key "
                     "\"%.60s\"",
                     exchange, routing_key);
            return 0;
        }
        int wait_ms = 200;
        if (timeout_ms > 0) {
            uint64_t spent = libdtx_now_ms() - start;
            if (spent >= (uint64_t)timeout_ms) {
                snprintf(why, whylen, "%s within %lld ms",
                         a->acked >= tag ? "no reply" : "no confirm from the broker",
                         (long long)timeout_ms);
                return 0;
            }
            if ((uint64_t)timeout_ms - spent < (uint64_t)wait_ms)
                wait_ms = (int)((uint64_t)timeout_ms - spent);
        }
        enum step st = read_one(a, corr, wait_ms, result, why, whylen);
        if (st == STEP_DONE)
            return 0;
        if (st == STEP_BROKEN) {
            *result = DTX_TRY_TRANSIENT;
            disconnect(a, 0);
            return a->acked < tag;
        }
    }
}

int libdtx_amqp_try(struct libdtx_amqp *a, const char *exchange, const char *routing_key,
                    const char *gid, const char *branch, const char *body, int64_t timeout_ms,
                    enum dtx_try_result *result, char *why, size_t whylen)
{
    uint64_t start = libdtx_now_ms();
    why[0] = '\0';
    int reused = a->conn != NULL;
    /* a kept connection may have died while idle (a broker restart): then
     * the command did not go out, and one more attempt on a new connection
     * is what the caller would do anyway (same message_id) */
    if (attempt(a, exchange, routing_key, gid, branch, body, timeout_ms, start, result, why,
                whylen) &&
        reused && (timeout_ms <= 0 || libdtx_now_ms() - start < (uint64_t)timeout_ms))
        attempt(a, exchange, routing_key, gid, branch, body, timeout_ms, start, result, why,
                whylen);
    return DTX_OK;
}
