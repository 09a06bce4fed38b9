/*
 * amqp.c - the RabbitMQ transport (see amqp.h).
 *
 * Two threads share a struct amqp_tp:
 *
 *   loop thread    amqp_call() validates the call, builds a struct pub and
 *                  appends it to `todo`, then pokes the connection thread's
 *                  eventfd. on_async() takes the `done` list and runs the
 *                  callbacks, in the order the results were made.
 *   conn thread    owns the rabbitmq-c connection (blocking). Connected, it
 *                  waits in poll() on the broker's socket and the eventfd;
 *                  it publishes whatever is in `todo`, in order, each with
 *                  the next delivery tag of the channel, keeps them in
 *                  `inflight` (in tag order) and settles them from the
 *                  broker's basic.ack / basic.nack / basic.return, or when
 *                  their timeout passes. Settled publishes go to `done`
 *                  and the loop is woken with uv_async_send.
 *
 * The mutex guards todo, done and closed; inflight and the connection are
 * the thread's alone. A publish that the loop abandons (transport freed) is
 * freed without its callback.
 *
 * Connection loss (a socket error, connection.close from the broker) fails
 * every publish in flight TRANSIENT; the thread reconnects after a backoff
 * that doubles from 100 ms to 5 s and resets once connected. While it is
 * down, new publishes fail TRANSIENT at once ("broker unreachable") so the
 * engine's own backoff paces them. A channel.close (e.g. publishing to an
 * exchange that does not exist: 404) fails what is in flight and reopens
 * the channel; the connection stays.
 */
#include "transport/amqp.h"

#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "common/err.h"
#include "common/slog.h"

#define CHANNEL            1
#define CONNECT_TIMEOUT_MS 5000
#define HEARTBEAT_S        30 /* a silent broker is dropped after two missed */
#define BACKOFF_MIN_MS     100
#define BACKOFF_MAX_MS     5000
#define ERR_MAX            512

static const char only_msg[] = "amqp targets serve msg deliveries only (for now)";

/* One publish, from call() to its callback. */
struct pub {
    struct pub *next;
    struct amqp_target to;
    char *body;
    size_t body_len;
    char *gid, *branch, *op, *type, *traceparent; /* traceparent may be NULL */
    char message_id[512];
    uint64_t deadline_ms; /* monotonic: no confirm by then → TRANSIENT */
    uint32_t timeout_ms;
    uint64_t tag;     /* the channel's delivery tag, once published */
    int returned;     /* basic.return seen: unroutable */
    char reason[128]; /* the return's reply text */
    call_done_fn cb;
    void *arg;
    enum call_outcome outcome; /* set when settled */
    char error[ERR_MAX];
};

struct list {
    struct pub *head, *tail;
};

struct amqp_tp {
    struct transport base;
    uv_loop_t *loop;
    uv_async_t async;
    struct amqp_broker broker;
    char where[600]; /* amqp_broker_describe */
    pthread_t thread;
    int wake_fd; /* eventfd: the loop pokes the thread */
    pthread_mutex_t mu;
    struct list todo, done; /* under mu */
    int closed;             /* under mu */
    /* the connection thread's own */
    amqp_connection_state_t conn;
    int connected;
    uint64_t next_tag;
    struct list inflight;
};

/* ---- names ------------------------------------------------------------- */

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Percent-decode n bytes of s into out (cap bytes with the NUL). */
static int decode(const char *s, size_t n, char *out, size_t cap)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '%') {
            if (i + 2 >= n)
                return DTX_EINVAL;
            int hi = hexval(s[i + 1]), lo = hexval(s[i + 2]);
            if (hi < 0 || lo < 0)
                return DTX_EINVAL;
            c = (char)(hi * 16 + lo);
            if (c == '\0')
                return DTX_EINVAL;
            i += 2;
        }
        if (k + 1 >= cap)
            return DTX_EINVAL;
        out[k++] = c;
    }
    out[k] = '\0';
    return 0;
}

int amqp_target_parse(const char *url, struct amqp_target *out)
{
    static const char prefix[] = AMQP_SCHEME "://";
    if (strncmp(url, prefix, sizeof prefix - 1) != 0)
        return DTX_EINVAL;
    const char *ex = url + sizeof prefix - 1;
    const char *slash = strchr(ex, '/');
    if (slash == NULL)
        return DTX_EINVAL;
    const char *rk = slash + 1;
    if (decode(ex, (size_t)(slash - ex), out->exchange, sizeof out->exchange) != 0 ||
        decode(rk, strlen(rk), out->routing_key, sizeof out->routing_key) != 0)
        return DTX_EINVAL;
    if (out->exchange[0] == '\0' && out->routing_key[0] == '\0')
        return DTX_EINVAL; /* the default exchange needs a queue name */
    return 0;
}

/* Copy src (NULL: "") into dst of n bytes, cut to fit. */
static void copy(char *dst, size_t n, const char *src)
{
    size_t len = src != NULL ? strlen(src) : 0;
    if (len >= n)
        len = n - 1;
    if (len > 0)
        memcpy(dst, src, len);
    dst[len] = '\0';
}

int amqp_broker_parse(const char *url, struct amqp_broker *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (strncmp(url, "amqps://", 8) == 0) {
        snprintf(err, errlen, "amqps:// (TLS) is not supported yet");
        return DTX_EUNSUPPORTED;
    }
    char *tmp = xstrdup(url); /* amqp_parse_url writes into it */
    struct amqp_connection_info ci;
    amqp_default_connection_info(&ci);
    int rc = amqp_parse_url(tmp, &ci);
    if (rc != AMQP_STATUS_OK || ci.ssl) {
        free(tmp);
        snprintf(err, errlen, "the broker URL must be amqp://user:pass@host:port/vhost");
        return DTX_EINVAL;
    }
    if (strlen(ci.host) >= sizeof out->host || strlen(ci.user) >= sizeof out->user ||
        strlen(ci.password) >= sizeof out->password || strlen(ci.vhost) >= sizeof out->vhost ||
        ci.port <= 0 || ci.port > 65535 || ci.host[0] == '\0') {
        free(tmp);
        snprintf(err, errlen, "the broker URL has an empty host or a part that is too long");
        return DTX_EINVAL;
    }
    copy(out->host, sizeof out->host, ci.host);
    copy(out->user, sizeof out->user, ci.user);
    copy(out->password, sizeof out->password, ci.password);
    copy(out->vhost, sizeof out->vhost, ci.vhost);
    out->port = ci.port;
    free(tmp);
    return 0;
}

void amqp_broker_describe(const struct amqp_broker *b, char *out, size_t n)
{
    snprintf(out, n, "%s@%s:%d%s%s", b->user, b->host, b->port, b->vhost[0] == '/' ? "" : "/",
             b->vhost);
}

/* ---- lists ----------------------------------------------------------------- */

static void list_push(struct list *l, struct pub *p)
{
    p->next = NULL;
    if (l->tail)
        l->tail->next = p;
    else
        l->head = p;
    l->tail = p;
}

static struct pub *list_take(struct list *l)
{
    struct pub *p = l->head;
    l->head = l->tail = NULL;
    return p;
}

static void pub_free(struct pub *p)
{
    free(p->body);
    free(p->gid);
    free(p->branch);
    free(p->op);
    free(p->type);
    free(p->traceparent);
    free(p);
}

static void free_chain(struct pub *p)
{
    while (p != NULL) {
        struct pub *next = p->next;
        pub_free(p);
        p = next;
    }
}

/* ---- connection thread ---------------------------------------------------- */

/* Hand a chain of settled publishes to the loop. */
static void hand_back(struct amqp_tp *t, struct pub *chain)
{
    if (chain == NULL)
        return;
    pthread_mutex_lock(&t->mu);
    int closed = t->closed;
    if (!closed) {
        while (chain != NULL) {
            struct pub *next = chain->next;
            list_push(&t->done, chain);
            chain = next;
        }
        uv_async_send(&t->async);
    }
    pthread_mutex_unlock(&t->mu);
    if (closed)
        free_chain(chain);
}

static void settle(struct pub *p, enum call_outcome outcome, const char *error)
{
    p->outcome = outcome;
    copy(p->error, sizeof p->error, error);
}

/* Settle every publish in flight TRANSIENT with why. */
static void fail_inflight(struct amqp_tp *t, const char *why)
{
    struct pub *chain = list_take(&t->inflight);
    for (struct pub *p = chain; p != NULL; p = p->next)
        settle(p, CALL_TRANSIENT, why);
    hand_back(t, chain);
}

/* A readable description of an RPC reply that is not normal. */
static void rpc_error(amqp_rpc_reply_t r, const char *what, char *out, size_t n)
{
    switch (r.reply_type) {
    case AMQP_RESPONSE_NORMAL:
        snprintf(out, n, "%s", what);
        return;
    case AMQP_RESPONSE_NONE:
        snprintf(out, n, "%s: no reply from the broker", what);
        return;
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
        snprintf(out, n, "%s: %s", what, amqp_error_string2(r.library_error));
        return;
    case AMQP_RESPONSE_SERVER_EXCEPTION:
        if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
            amqp_connection_close_t *m = r.reply.decoded;
            snprintf(out, n, "%s: connection closed by the broker: %u %.*s", what, m->reply_code,
                     (int)m->reply_text.len, (char *)m->reply_text.bytes);
        } else if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
            amqp_channel_close_t *m = r.reply.decoded;
            snprintf(out, n, "%s: channel closed by the broker: %u %.*s", what, m->reply_code,
                     (int)m->reply_text.len, (char *)m->reply_text.bytes);
        } else {
            snprintf(out, n, "%s: broker error (method 0x%08x)", what, r.reply.id);
        }
        return;
    }
}

static void disconnect(struct amqp_tp *t, const char *why)
{
    if (t->conn != NULL) {
        if (t->connected)
            slog_warn("amqp connection lost", "broker=%s err=\"%s\"", t->where, why);
        amqp_destroy_connection(t->conn);
    }
    t->conn = NULL;
    t->connected = 0;
    fail_inflight(t, why);
}

static int open_channel(struct amqp_tp *t, char *why, size_t n)
{
    amqp_channel_open(t->conn, CHANNEL);
    amqp_rpc_reply_t r = amqp_get_rpc_reply(t->conn);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        rpc_error(r, "cannot open a channel", why, n);
        return -1;
    }
    amqp_confirm_select(t->conn, CHANNEL);
    r = amqp_get_rpc_reply(t->conn);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        rpc_error(r, "cannot turn on publisher confirms", why, n);
        return -1;
    }
    t->next_tag = 0;
    return 0;
}

/* Connect, log in, open the channel in confirm mode. 0 or -1 with why. */
static int connect_broker(struct amqp_tp *t, char *why, size_t n)
{
    t->conn = amqp_new_connection();
    if (t->conn == NULL) {
        snprintf(why, n, "out of memory");
        return -1;
    }
    amqp_socket_t *sock = amqp_tcp_socket_new(t->conn);
    if (sock == NULL) {
        snprintf(why, n, "cannot create a socket");
        return -1;
    }
    struct timeval tv = {CONNECT_TIMEOUT_MS / 1000, 0};
    /* bound every blocking exchange (login, channel open, the closes at
     * shutdown): a broker that accepts but does not answer (stopped, or
     * overloaded) must not hold this thread, and so dtxd's exit, forever */
    amqp_set_handshake_timeout(t->conn, &tv);
    amqp_set_rpc_timeout(t->conn, &tv);
    int rc = amqp_socket_open_noblock(sock, t->broker.host, t->broker.port, &tv);
    if (rc != AMQP_STATUS_OK) {
        snprintf(why, n, "cannot connect to %s:%d: %s", t->broker.host, t->broker.port,
                 amqp_error_string2(rc));
        return -1;
    }
    amqp_rpc_reply_t r = amqp_login(t->conn, t->broker.vhost, 1, 131072, HEARTBEAT_S,
                                    AMQP_SASL_METHOD_PLAIN, t->broker.user, t->broker.password);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        rpc_error(r, "cannot log in", why, n);
        return -1;
    }
    if (open_channel(t, why, n) != 0)
        return -1;
    t->connected = 1;
    slog_info("amqp connected", "broker=%s", t->where);
    return 0;
}

static amqp_table_entry_t header(const char *key, const char *value)
{
    amqp_table_entry_t e;
    e.key = amqp_cstring_bytes(key);
    e.value.kind = AMQP_FIELD_KIND_UTF8;
    e.value.value.bytes = amqp_cstring_bytes(value);
    return e;
}

/* Publish p; on success it is in flight. 0, or -1 (connection broken). */
static int publish(struct amqp_tp *t, struct pub *p)
{
    amqp_table_entry_t h[5];
    int nh = 0;
    h[nh++] = header("Dtx-Gid", p->gid);
    h[nh++] = header("Dtx-Branch", p->branch);
    h[nh++] = header("Dtx-Op", p->op);
    h[nh++] = header("Dtx-Type", p->type);
    if (p->traceparent != NULL)
        h[nh++] = header("traceparent", p->traceparent);
    amqp_basic_properties_t props;
    memset(&props, 0, sizeof props);
    props._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG |
                   AMQP_BASIC_MESSAGE_ID_FLAG | AMQP_BASIC_HEADERS_FLAG;
    props.content_type = amqp_cstring_bytes("application/json");
    props.delivery_mode = AMQP_DELIVERY_PERSISTENT;
    props.message_id = amqp_cstring_bytes(p->message_id);
    props.headers.num_entries = nh;
    props.headers.entries = h;
    amqp_bytes_t body = {.len = p->body_len, .bytes = p->body};
    int rc = amqp_basic_publish(t->conn, CHANNEL, amqp_cstring_bytes(p->to.exchange),
                                amqp_cstring_bytes(p->to.routing_key), 1, 0, &props, body);
    if (rc != AMQP_STATUS_OK) {
        char why[ERR_MAX];
        snprintf(why, sizeof why, "publish failed: %s", amqp_error_string2(rc));
        p->next = NULL;
        settle(p, CALL_TRANSIENT, why);
        hand_back(t, p);
        disconnect(t, why);
        return -1;
    }
    p->tag = ++t->next_tag;
    list_push(&t->inflight, p);
    return 0;
}

/* Settle the publishes in flight confirmed by an ack or nack. */
static void confirm(struct amqp_tp *t, uint64_t tag, int multiple, int ack)
{
    struct list keep = {0}, settled = {0};
    struct pub *p = list_take(&t->inflight);
    while (p != NULL) {
        struct pub *next = p->next;
        if (p->tag == tag || (multiple && p->tag < tag)) {
            char why[ERR_MAX];
            if (!ack) {
                snprintf(why, sizeof why, "the broker refused the message (basic.nack)");
                settle(p, CALL_TRANSIENT, why);
            } else if (p->returned) {
                snprintf(why, sizeof why,
                         "unroutable: no queue is bound to exchange \"%.60s\" for routing key "
                         "\"%.60s\" (%.80s)",
                         p->to.exchange, p->to.routing_key, p->reason);
                settle(p, CALL_TRANSIENT, why);
            } else {
                settle(p, CALL_SUCCESS, NULL);
            }
            list_push(&settled, p);
        } else {
            list_push(&keep, p);
        }
        p = next;
    }
    t->inflight = keep;
    hand_back(t, settled.head);
}

/* Settle the publishes whose timeout has passed; return the ms until the
 * next deadline (capped at 1000). */
static int expire(struct amqp_tp *t)
{
    uint64_t now = clock_mono_ms(), next = now + 1000;
    struct list keep = {0}, settled = {0};
    struct pub *p = list_take(&t->inflight);
    while (p != NULL) {
        struct pub *nx = p->next;
        if (p->deadline_ms <= now) {
            char why[ERR_MAX];
            snprintf(why, sizeof why, "no confirm from the broker within %u ms", p->timeout_ms);
            settle(p, CALL_TRANSIENT, why);
            list_push(&settled, p); /* a late ack for its tag finds nothing */
        } else {
            if (p->deadline_ms < next)
                next = p->deadline_ms;
            list_push(&keep, p);
        }
        p = nx;
    }
    t->inflight = keep;
    hand_back(t, settled.head);
    return (int)(next - now);
}

/* basic.return: the content (header, body) follows; mark the publish. */
static int on_return(struct amqp_tp *t, amqp_basic_return_t *m)
{
    char reason[128];
    snprintf(reason, sizeof reason, "%u %.*s", m->reply_code, (int)m->reply_text.len,
             (char *)m->reply_text.bytes);
    amqp_message_t msg;
    amqp_rpc_reply_t r = amqp_read_message(t->conn, CHANNEL, &msg, 0);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        char why[ERR_MAX];
        rpc_error(r, "reading a returned message", why, sizeof why);
        disconnect(t, why);
        return -1;
    }
    if (msg.properties._flags & AMQP_BASIC_MESSAGE_ID_FLAG) {
        amqp_bytes_t id = msg.properties.message_id;
        for (struct pub *p = t->inflight.head; p != NULL; p = p->next)
            if (!p->returned && strlen(p->message_id) == id.len &&
                memcmp(p->message_id, id.bytes, id.len) == 0) {
                p->returned = 1;
                copy(p->reason, sizeof p->reason, reason);
                break;
            }
    }
    amqp_destroy_message(&msg);
    return 0;
}

/* Read and handle one frame the broker sent, without waiting (this also
 * sends and checks heartbeats). 1 when a frame was handled, 0 when none is
 * complete yet, -1 when the connection was dropped. */
static int read_frame(struct amqp_tp *t)
{
    amqp_frame_t f;
    struct timeval zero = {0, 0};
    int rc = amqp_simple_wait_frame_noblock(t->conn, &f, &zero);
    if (rc == AMQP_STATUS_TIMEOUT)
        return 0;
    if (rc != AMQP_STATUS_OK) {
        char why[ERR_MAX];
        snprintf(why, sizeof why, "connection to the broker broke: %s", amqp_error_string2(rc));
        disconnect(t, why);
        return -1;
    }
    if (f.frame_type != AMQP_FRAME_METHOD)
        return 1;
    char why[ERR_MAX];
    switch (f.payload.method.id) {
    case AMQP_BASIC_ACK_METHOD: {
        amqp_basic_ack_t *m = f.payload.method.decoded;
        confirm(t, m->delivery_tag, m->multiple, 1);
        return 1;
    }
    case AMQP_BASIC_NACK_METHOD: {
        amqp_basic_nack_t *m = f.payload.method.decoded;
        confirm(t, m->delivery_tag, m->multiple, 0);
        return 1;
    }
    case AMQP_BASIC_RETURN_METHOD:
        return on_return(t, f.payload.method.decoded) == 0 ? 1 : -1;
    case AMQP_CHANNEL_CLOSE_METHOD: {
        amqp_channel_close_t *m = f.payload.method.decoded;
        snprintf(why, sizeof why, "the broker closed the channel: %u %.*s", m->reply_code,
                 (int)m->reply_text.len, (char *)m->reply_text.bytes);
        slog_warn("amqp channel closed", "broker=%s err=\"%s\"", t->where, why);
        fail_inflight(t, why);
        amqp_channel_close_ok_t ok = {0};
        if (amqp_send_method(t->conn, CHANNEL, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok) != 0) {
            disconnect(t, "cannot acknowledge the channel's close");
            return -1;
        }
        char oerr[ERR_MAX];
        if (open_channel(t, oerr, sizeof oerr) != 0) {
            disconnect(t, oerr);
            return -1;
        }
        return 1;
    }
    case AMQP_CONNECTION_CLOSE_METHOD: {
        amqp_connection_close_t *m = f.payload.method.decoded;
        snprintf(why, sizeof why, "the broker closed the connection: %u %.*s", m->reply_code,
                 (int)m->reply_text.len, (char *)m->reply_text.bytes);
        amqp_connection_close_ok_t ok = {0};
        amqp_send_method(t->conn, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
        disconnect(t, why);
        return -1;
    }
    default:
        return 1;
    }
}

static void drain_wake(struct amqp_tp *t)
{
    uint64_t v;
    while (read(t->wake_fd, &v, sizeof v) > 0) {
    }
}

/* Wait up to ms for the eventfd (and the broker's socket when connected). */
static void wait_io(struct amqp_tp *t, int ms)
{
    struct pollfd fds[2] = {{.fd = t->wake_fd, .events = POLLIN}, {.fd = -1}};
    int n = 1;
    if (t->connected) {
        fds[1].fd = amqp_get_sockfd(t->conn);
        fds[1].events = POLLIN;
        n = 2;
    }
    if (poll(fds, (nfds_t)n, ms) > 0 && fds[0].revents)
        drain_wake(t);
}

static void *conn_main(void *arg)
{
    struct amqp_tp *t = arg;
    uint64_t backoff = BACKOFF_MIN_MS, retry_at = 0;
    char why[ERR_MAX] = "not connected yet";
    for (;;) {
        pthread_mutex_lock(&t->mu);
        int closed = t->closed;
        struct pub *todo = closed ? NULL : list_take(&t->todo);
        pthread_mutex_unlock(&t->mu);
        if (closed)
            break;
        if (!t->connected && clock_mono_ms() >= retry_at) {
            if (connect_broker(t, why, sizeof why) == 0) {
                backoff = BACKOFF_MIN_MS;
            } else {
                slog_warn("cannot connect to the amqp broker", "broker=%s err=\"%s\" retry_ms=%llu",
                          t->where, why, (unsigned long long)backoff);
                if (t->conn != NULL)
                    amqp_destroy_connection(t->conn);
                t->conn = NULL;
                retry_at = clock_mono_ms() + backoff;
                backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
            }
        }
        /* publish in order; while down, fail at once (the engine backs off) */
        while (todo != NULL) {
            struct pub *p = todo;
            todo = p->next;
            p->next = NULL;
            if (!t->connected) {
                char msg[ERR_MAX + 32];
                snprintf(msg, sizeof msg, "broker unreachable: %s", why);
                settle(p, CALL_TRANSIENT, msg);
                hand_back(t, p);
            } else if (publish(t, p) != 0) {
                snprintf(why, sizeof why, "connection lost while publishing");
                retry_at = clock_mono_ms() + backoff;
            }
        }
        int ms = t->connected ? expire(t)
                              : (int)(retry_at > clock_mono_ms() ? retry_at - clock_mono_ms() : 0);
        if (t->connected && (amqp_frames_enqueued(t->conn) || amqp_data_in_buffer(t->conn)))
            ms = 0;
        wait_io(t, ms);
        /* read every complete frame there is (and keep heartbeats going) */
        int rc = 0;
        while (t->connected && (rc = read_frame(t)) == 1)
            amqp_maybe_release_buffers(t->conn);
        if (rc < 0) {
            snprintf(why, sizeof why, "connection lost");
            retry_at = clock_mono_ms() + backoff;
        }
    }
    if (t->conn != NULL) {
        if (t->connected) {
            amqp_channel_close(t->conn, CHANNEL, AMQP_REPLY_SUCCESS);
            amqp_connection_close(t->conn, AMQP_REPLY_SUCCESS);
        }
        amqp_destroy_connection(t->conn);
    }
    t->conn = NULL;
    free_chain(list_take(&t->inflight));
    return NULL;
}

/* ---- loop side ------------------------------------------------------------- */

static void on_async(uv_async_t *h)
{
    struct amqp_tp *t = h->data;
    pthread_mutex_lock(&t->mu);
    struct pub *p = list_take(&t->done);
    pthread_mutex_unlock(&t->mu);
    while (p != NULL) {
        struct pub *next = p->next;
        struct call_result res = {
            .outcome = p->outcome,
            .status = 0,
            .error = p->outcome == CALL_SUCCESS ? NULL : p->error,
        };
        if (p->outcome != CALL_SUCCESS)
            slog_debug("amqp publish not confirmed", "message_id=%s err=\"%s\"", p->message_id,
                       p->error);
        p->cb(p->arg, &res);
        pub_free(p);
        p = next;
    }
}

static void wake(struct amqp_tp *t)
{
    uint64_t one = 1;
    ssize_t n = write(t->wake_fd, &one, sizeof one);
    (void)n; /* a full counter wakes the thread just as well */
}

static int amqp_call(struct transport *tp, const struct call_req *req, call_done_fn cb, void *arg)
{
    struct amqp_tp *t = (struct amqp_tp *)tp;
    struct pub *p = xcalloc(1, sizeof *p);
    if (amqp_target_parse(req->url, &p->to) != 0 || req->timeout_ms == 0) {
        free(p);
        return DTX_EINVAL;
    }
    p->cb = cb;
    p->arg = arg;
    p->timeout_ms = req->timeout_ms;
    p->deadline_ms = clock_mono_ms() + req->timeout_ms;
    if (strcmp(req->op, "action") != 0 || strcmp(req->txn_type, "msg") != 0) {
        /* settled at once, still answered from the loop (never inside call) */
        settle(p, CALL_TRANSIENT, only_msg);
        pthread_mutex_lock(&t->mu);
        list_push(&t->done, p);
        uv_async_send(&t->async);
        pthread_mutex_unlock(&t->mu);
        return 0;
    }
    p->gid = xstrdup(req->gid);
    p->branch = xstrdup(req->branch);
    p->op = xstrdup(req->op);
    p->type = xstrdup(req->txn_type);
    p->traceparent = req->traceparent ? xstrdup(req->traceparent) : NULL;
    p->body = xmemdup(req->body ? req->body : "", req->body ? req->body_len : 0);
    p->body_len = req->body ? req->body_len : 0;
    snprintf(p->message_id, sizeof p->message_id, "%s/%s/%s", req->gid, req->branch, req->op);
    pthread_mutex_lock(&t->mu);
    list_push(&t->todo, p);
    pthread_mutex_unlock(&t->mu);
    wake(t);
    return 0;
}

static void on_async_closed(uv_handle_t *h)
{
    struct amqp_tp *t = h->data;
    free_chain(list_take(&t->done));
    free_chain(list_take(&t->todo));
    pthread_mutex_destroy(&t->mu);
    close(t->wake_fd);
    free(t);
}

static void amqp_free(struct transport *tp)
{
    struct amqp_tp *t = (struct amqp_tp *)tp;
    pthread_mutex_lock(&t->mu);
    t->closed = 1;
    pthread_mutex_unlock(&t->mu);
    wake(t);
    pthread_join(t->thread, NULL);
    uv_close((uv_handle_t *)&t->async, on_async_closed);
}

static const struct transport_ops amqp_ops = {.call = amqp_call, .free = amqp_free};

struct transport *amqp_transport_new(uv_loop_t *loop, const char *url, char *err, size_t errlen)
{
    struct amqp_tp *t = xcalloc(1, sizeof *t);
    if (amqp_broker_parse(url, &t->broker, err, errlen) != 0) {
        free(t);
        return NULL;
    }
    t->base.ops = &amqp_ops;
    t->base.scheme = AMQP_SCHEME;
    t->loop = loop;
    amqp_broker_describe(&t->broker, t->where, sizeof t->where);
    t->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (t->wake_fd < 0) {
        snprintf(err, errlen, "eventfd: %s", strerror(errno));
        free(t);
        return NULL;
    }
    pthread_mutex_init(&t->mu, NULL);
    uv_async_init(loop, &t->async, on_async);
    t->async.data = t;
    int rc = pthread_create(&t->thread, NULL, conn_main, t);
    if (rc != 0) {
        snprintf(err, errlen, "cannot start the amqp thread: %s", strerror(rc));
        t->closed = 1;
        uv_close((uv_handle_t *)&t->async, on_async_closed);
        return NULL;
    }
    slog_info("amqp broker", "broker=%s", t->where);
    return &t->base;
}
