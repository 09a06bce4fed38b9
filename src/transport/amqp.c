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
 *                  the next delivery tag of the channel. A publish is then
 *                  in flight, on one of two lists:
 *                    unconfirmed  in tag order, settled by the broker's
 *                                 basic.ack / basic.nack / basic.return
 *                                 (a delivery) or moved to `awaiting`
 *                                 (a confirmed command);
 *                    awaiting     commands waiting for their reply.
 *                  Replies arrive on the reply channel and find their
 *                  command by correlation id (our boot nonce and a sequence
 *                  number, looked up in a hash). A call whose deadline
 *                  passes is settled TRANSIENT. Settled publishes go to
 *                  `done` and the loop is woken with uv_async_send.
 *
 * The mutex guards todo, done and closed; the lists in flight, the hash and
 * the connection are the thread's alone. A publish that the loop abandons
 * (transport freed) is freed without its callback.
 *
 * Connection loss (a socket error, connection.close from the broker) fails
 * every call in flight TRANSIENT; the thread reconnects after a backoff
 * that doubles from 100 ms to 5 s and resets once connected. While it is
 * down, new publishes fail TRANSIENT at once ("broker unreachable") so the
 * engine's own backoff paces them. A channel.close (e.g. publishing to an
 * exchange that does not exist: 404) fails what is in flight and reopens
 * the channel; the connection stays.
 */
#include "transport/amqp.h"

#include <amqp.h>
#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "common/crash.h"
#include "common/err.h"
#include "common/rnd.h"
#include "common/slog.h"

#define PUB_CHANNEL        1 /* confirm mode: every publish */
#define REPLY_CHANNEL      2 /* consumes the reply queue */
#define CONNECT_TIMEOUT_MS 5000
#define HEARTBEAT_S        30 /* a silent broker is dropped after two missed */
#define BACKOFF_MIN_MS     100
#define BACKOFF_MAX_MS     5000
#define ERR_MAX            512
#define HASH_MIN           256

/* A singly linked queue (todo, done: `next`) or a doubly linked in-flight
 * list (`iprev`/`inext`). */
struct list {
    struct pub *head, *tail;
};

/*
 * One call, from amqp_call() to its callback. It is one allocation: the
 * strings live in mem[] behind the struct, sized to fit, so that a small call
 * stays under glibc's 1 KiB small-request limit (a larger malloc first
 * consolidates the fast bins, which showed as 1.4 % of dtxd's time when this
 * struct carried ~1.9 KB of fixed buffers). The error text is allocated only
 * when there is one.
 */
struct pub {
    struct pub *next;                   /* todo / done */
    struct pub *iprev, *inext;          /* unconfirmed / awaiting */
    struct pub *hnext;                  /* hash chain (commands in flight) */
    struct list *on;                    /* the in-flight list it is on, or NULL */
    const char *exchange, *routing_key; /* exchange "" = the default one */
    char *body;
    size_t body_len;
    const char *gid, *branch, *op, *type, *traceparent; /* traceparent may be NULL */
    const char *message_id;                             /* gid/branch/op */
    int command;          /* a reply ends it (else the confirm does) */
    uint64_t seq;         /* commands: the correlation id's number */
    char corr[48];        /* commands: "<nonce>.<seq>" */
    uint64_t deadline_ms; /* monotonic: not settled by then → TRANSIENT */
    uint32_t timeout_ms;
    uint64_t tag;     /* the channel's delivery tag, once published */
    int confirmed;    /* commands: the broker acked it */
    int returned;     /* basic.return seen: unroutable */
    char reason[128]; /* the return's reply text */
    call_done_fn cb;
    void *arg;
    enum call_outcome outcome; /* set when settled */
    char *error;               /* set when settled with one; malloc'ed */
    char mem[];                /* the strings above point in here */
};

struct amqp_tp {
    struct transport base;
    uv_loop_t *loop;
    uv_async_t async;
    struct amqp_broker broker;
    char where[1024]; /* amqp_broker_describe */
    char *reply_queue, *cacert, *cert, *key;
    char nonce[17]; /* hex, fresh per start: correlation ids never repeat */
    pthread_t thread;
    int wake_fd; /* eventfd: the loop pokes the thread */
    pthread_mutex_t mu;
    struct list todo, done; /* under mu */
    int closed;             /* under mu */
    /* the connection thread's own */
    amqp_connection_state_t conn;
    int connected;
    uint64_t next_tag, next_seq;
    struct list unconfirmed, awaiting;
    uint64_t next_deadline; /* no call in flight expires before this */
    struct pub **hash;      /* commands in flight, by seq */
    size_t nhash, nbuckets;
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
    char *tmp = xstrdup(url); /* amqp_parse_url writes into it */
    struct amqp_connection_info ci;
    amqp_default_connection_info(&ci);
    int rc = amqp_parse_url(tmp, &ci);
    if (rc != AMQP_STATUS_OK) {
        free(tmp);
        snprintf(err, errlen,
                 "the broker URL must be amqp://user:pass@host:port/vhost "
                 "(or amqps:// for TLS)");
        return DTX_EINVAL;
    }
    if (strlen(ci.host) >= sizeof out->host || strlen(ci.user) >= sizeof out->user ||
        strlen(ci.password) >= sizeof out->password || strlen(ci.vhost) >= sizeof out->vhost ||
        ci.port <= 0 || ci.port > 65535 || ci.host[0] == '\0') {
        free(tmp);
        snprintf(err, errlen, "the broker URL has an empty host or a part that is too long");
        return DTX_EINVAL;
    }
    out->tls = ci.ssl;
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
    snprintf(out, n, "%s%s@%s:%d%s%s", b->tls ? "amqps://" : "", b->user, b->host, b->port,
             b->vhost[0] == '/' ? "" : "/", b->vhost);
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
    free(p->error);
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

/* ---- calls in flight (connection thread) ------------------------------------ */

static void fl_push(struct list *l, struct pub *p)
{
    p->on = l;
    p->inext = NULL;
    p->iprev = l->tail;
    if (l->tail)
        l->tail->inext = p;
    else
        l->head = p;
    l->tail = p;
}

static void fl_unlink(struct pub *p)
{
    struct list *l = p->on;
    if (p->iprev)
        p->iprev->inext = p->inext;
    else
        l->head = p->inext;
    if (p->inext)
        p->inext->iprev = p->iprev;
    else
        l->tail = p->iprev;
    p->on = NULL;
    p->iprev = p->inext = NULL;
}

static void hash_put(struct amqp_tp *t, struct pub *p);

static void hash_grow(struct amqp_tp *t)
{
    struct pub **old = t->hash;
    size_t n = t->nbuckets;
    t->nbuckets = n ? n * 2 : HASH_MIN;
    t->hash = xcalloc(t->nbuckets, sizeof *t->hash);
    t->nhash = 0;
    for (size_t i = 0; i < n; i++)
        for (struct pub *p = old[i], *nx; p != NULL; p = nx) {
            nx = p->hnext;
            hash_put(t, p);
        }
    free(old);
}

static void hash_put(struct amqp_tp *t, struct pub *p)
{
    if (t->nhash >= t->nbuckets * 2)
        hash_grow(t);
    struct pub **b = &t->hash[p->seq & (t->nbuckets - 1)];
    p->hnext = *b;
    *b = p;
    t->nhash++;
}

static struct pub *hash_find(struct amqp_tp *t, uint64_t seq)
{
    if (t->nbuckets == 0)
        return NULL;
    for (struct pub *p = t->hash[seq & (t->nbuckets - 1)]; p != NULL; p = p->hnext)
        if (p->seq == seq)
            return p;
    return NULL;
}

static void hash_del(struct amqp_tp *t, struct pub *p)
{
    for (struct pub **pp = &t->hash[p->seq & (t->nbuckets - 1)]; *pp != NULL; pp = &(*pp)->hnext)
        if (*pp == p) {
            *pp = p->hnext;
            t->nhash--;
            return;
        }
}

/* ---- connection thread ---------------------------------------------------- */

/* Hand a chain of settled publishes (linked by `next`) to the loop. */
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
    free(p->error);
    p->error = NULL;
    if (error != NULL && error[0] != '\0')
        p->error = xstrndup(error, ERR_MAX - 1);
}

/* Take p out of flight (its list and the hash) and append it to chain. */
static void land(struct amqp_tp *t, struct pub *p, struct list *chain)
{
    if (p->on != NULL)
        fl_unlink(p);
    if (p->command && p->tag != 0)
        hash_del(t, p);
    list_push(chain, p);
}

/* Settle every call in flight TRANSIENT with why. */
static void fail_inflight(struct amqp_tp *t, const char *why)
{
    struct list settled = {0};
    struct list *lists[2] = {&t->unconfirmed, &t->awaiting};
    for (int i = 0; i < 2; i++)
        while (lists[i]->head != NULL) {
            struct pub *p = lists[i]->head;
            settle(p, CALL_TRANSIENT, why);
            land(t, p, &settled);
        }
    hand_back(t, settled.head);
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

static int rpc_ok(struct amqp_tp *t, const char *what, char *why, size_t n)
{
    amqp_rpc_reply_t r = amqp_get_rpc_reply(t->conn);
    if (r.reply_type == AMQP_RESPONSE_NORMAL)
        return 0;
    rpc_error(r, what, why, n);
    return -1;
}

static int open_pub_channel(struct amqp_tp *t, char *why, size_t n)
{
    amqp_channel_open(t->conn, PUB_CHANNEL);
    if (rpc_ok(t, "cannot open a channel", why, n) != 0)
        return -1;
    amqp_confirm_select(t->conn, PUB_CHANNEL);
    if (rpc_ok(t, "cannot turn on publisher confirms", why, n) != 0)
        return -1;
    t->next_tag = 0;
    return 0;
}

/* The reply channel: declare the durable reply queue and consume it. */
static int open_reply_channel(struct amqp_tp *t, char *why, size_t n)
{
    amqp_channel_open(t->conn, REPLY_CHANNEL);
    if (rpc_ok(t, "cannot open the reply channel", why, n) != 0)
        return -1;
    amqp_queue_declare(t->conn, REPLY_CHANNEL, amqp_cstring_bytes(t->reply_queue), 0, 1, 0, 0,
                       amqp_empty_table);
    if (rpc_ok(t, "cannot declare the reply queue", why, n) != 0)
        return -1;
    /* no_ack: a reply that is lost with us is not needed, the call is
     * retried after a restart anyway */
    amqp_basic_consume(t->conn, REPLY_CHANNEL, amqp_cstring_bytes(t->reply_queue), amqp_empty_bytes,
                       0, 1, 0, amqp_empty_table);
    if (rpc_ok(t, "cannot consume the reply queue", why, n) != 0)
        return -1;
    return 0;
}

static amqp_socket_t *new_socket(struct amqp_tp *t, char *why, size_t n)
{
    if (!t->broker.tls) {
        amqp_socket_t *sock = amqp_tcp_socket_new(t->conn);
        if (sock == NULL)
            snprintf(why, n, "cannot create a socket");
        return sock;
    }
    amqp_socket_t *sock = amqp_ssl_socket_new(t->conn);
    if (sock == NULL) {
        snprintf(why, n, "cannot create a TLS socket");
        return NULL;
    }
    amqp_ssl_socket_set_verify_peer(sock, 1);
    amqp_ssl_socket_set_verify_hostname(sock, 1);
    if (t->cacert != NULL) {
        if (amqp_ssl_socket_set_cacert(sock, t->cacert) != AMQP_STATUS_OK) {
            snprintf(why, n, "cannot read the CA file %s", t->cacert);
            return NULL;
        }
    } else {
        /* rabbitmq-c loads no CA at all by default: use the system's */
        SSL_CTX *ctx = amqp_ssl_socket_get_context(sock);
        if (ctx == NULL || SSL_CTX_set_default_verify_paths(ctx) != 1) {
            snprintf(why, n, "cannot load the system's CA certificates");
            return NULL;
        }
    }
    if (t->cert != NULL && amqp_ssl_socket_set_key(sock, t->cert, t->key) != AMQP_STATUS_OK) {
        snprintf(why, n, "cannot read the client certificate %s or its key", t->cert);
        return NULL;
    }
    return sock;
}

/* Connect, log in, open both channels. 0 or -1 with why. */
static int connect_broker(struct amqp_tp *t, char *why, size_t n)
{
    t->conn = amqp_new_connection();
    if (t->conn == NULL) {
        snprintf(why, n, "out of memory");
        return -1;
    }
    amqp_socket_t *sock = new_socket(t, why, n);
    if (sock == NULL)
        return -1;
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
    amqp_rpc_reply_t r = amqp_login(t->conn, t->broker.vhost, 2, 131072, HEARTBEAT_S,
                                    AMQP_SASL_METHOD_PLAIN, t->broker.user, t->broker.password);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        rpc_error(r, "cannot log in", why, n);
        return -1;
    }
    if (open_pub_channel(t, why, n) != 0 || open_reply_channel(t, why, n) != 0)
        return -1;
    t->connected = 1;
    slog_info("amqp connected", "broker=%s reply_queue=%s", t->where, t->reply_queue);
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
    if (p->command) {
        p->seq = ++t->next_seq;
        snprintf(p->corr, sizeof p->corr, "%s.%llu", t->nonce, (unsigned long long)p->seq);
        props._flags |= AMQP_BASIC_CORRELATION_ID_FLAG | AMQP_BASIC_REPLY_TO_FLAG;
        props.correlation_id = amqp_cstring_bytes(p->corr);
        props.reply_to = amqp_cstring_bytes(t->reply_queue);
    }
    amqp_bytes_t body = {.len = p->body_len, .bytes = p->body};
    int rc = amqp_basic_publish(t->conn, PUB_CHANNEL, amqp_cstring_bytes(p->exchange),
                                amqp_cstring_bytes(p->routing_key), 1, 0, &props, body);
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
    fl_push(&t->unconfirmed, p);
    CRASH_POINT("amqp.before_confirm");
    if (p->command)
        hash_put(t, p);
    if (p->deadline_ms < t->next_deadline)
        t->next_deadline = p->deadline_ms;
    return 0;
}

/* The broker confirmed (ack) or refused (nack) tag, or every tag up to it. */
static void confirm(struct amqp_tp *t, uint64_t tag, int multiple, int ack)
{
    if (ack)
        CRASH_POINT("amqp.after_confirm");
    struct list settled = {0};
    struct pub *p = t->unconfirmed.head;
    /* unconfirmed is in tag order: what the confirm covers is at the front */
    while (p != NULL && p->tag <= tag) {
        struct pub *next = p->inext;
        if (p->tag == tag || multiple) {
            char why[ERR_MAX];
            if (!ack) {
                snprintf(why, sizeof why, "the broker refused the message (basic.nack)");
                settle(p, CALL_TRANSIENT, why);
                land(t, p, &settled);
            } else if (p->returned) {
                snprintf(why, sizeof why,
                         "unroutable: no queue is bound to exchange \"%.60s\" for routing key "
                         "\"%.60s\" (%.80s)",
                         p->exchange, p->routing_key, p->reason);
                settle(p, CALL_TRANSIENT, why);
                land(t, p, &settled);
            } else if (p->command) {
                fl_unlink(p);
                p->confirmed = 1;
                fl_push(&t->awaiting, p); /* now for its reply */
            } else {
                settle(p, CALL_SUCCESS, NULL);
                land(t, p, &settled);
            }
        }
        p = next;
    }
    hand_back(t, settled.head);
}

/* Settle the calls whose deadline has passed; return the ms until the next
 * deadline (capped at 1000). Scans only when a deadline may have passed. */
static int expire(struct amqp_tp *t)
{
    uint64_t now = clock_mono_ms();
    if (now < t->next_deadline)
        return (int)(t->next_deadline - now < 1000 ? t->next_deadline - now : 1000);
    uint64_t next = UINT64_MAX;
    struct list settled = {0};
    struct list *lists[2] = {&t->unconfirmed, &t->awaiting};
    for (int i = 0; i < 2; i++)
        for (struct pub *p = lists[i]->head, *nx; p != NULL; p = nx) {
            nx = p->inext;
            if (p->deadline_ms > now) {
                if (p->deadline_ms < next)
                    next = p->deadline_ms;
                continue;
            }
            char why[ERR_MAX];
            if (p->confirmed)
                snprintf(why, sizeof why, "no reply within %u ms", p->timeout_ms);
            else
                snprintf(why, sizeof why, "no confirm from the broker within %u ms", p->timeout_ms);
            settle(p, CALL_TRANSIENT, why);
            land(t, p, &settled); /* a late ack or reply finds nothing */
        }
    t->next_deadline = next;
    hand_back(t, settled.head);
    return next == UINT64_MAX ? 1000 : (int)(next - now < 1000 ? next - now : 1000);
}

/* basic.return: the content (header, body) follows; mark the publish. */
static int on_return(struct amqp_tp *t, amqp_basic_return_t *m)
{
    char reason[128];
    snprintf(reason, sizeof reason, "%u %.*s", m->reply_code, (int)m->reply_text.len,
             (char *)m->reply_text.bytes);
    amqp_message_t msg;
    amqp_rpc_reply_t r = amqp_read_message(t->conn, PUB_CHANNEL, &msg, 0);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        char why[ERR_MAX];
        rpc_error(r, "reading a returned message", why, sizeof why);
        disconnect(t, why);
        return -1;
    }
    /* a return comes before the ack of its publish: it is unconfirmed */
    if (msg.properties._flags & AMQP_BASIC_MESSAGE_ID_FLAG) {
        amqp_bytes_t id = msg.properties.message_id;
        for (struct pub *p = t->unconfirmed.head; p != NULL; p = p->inext)
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

/* The value of a UTF-8 (or byte array) header, or a NULL bytes. */
static amqp_bytes_t header_value(const amqp_basic_properties_t *pr, const char *key)
{
    amqp_bytes_t none = {0, NULL};
    if (!(pr->_flags & AMQP_BASIC_HEADERS_FLAG))
        return none;
    size_t klen = strlen(key);
    for (int i = 0; i < pr->headers.num_entries; i++) {
        const amqp_table_entry_t *e = &pr->headers.entries[i];
        if (e->key.len == klen && strncasecmp(e->key.bytes, key, klen) == 0 &&
            (e->value.kind == AMQP_FIELD_KIND_UTF8 || e->value.kind == AMQP_FIELD_KIND_BYTES))
            return e->value.value.bytes;
    }
    return none;
}

static int bytes_is(const char *b, size_t len, const char *s)
{
    return b != NULL && len == strlen(s) && memcmp(b, s, len) == 0;
}

int amqp_reply_parse(const char *nonce, const char *corr, size_t corr_len, const char *result,
                     size_t result_len, const char *body, size_t body_len, struct amqp_reply *out)
{
    size_t nl = strlen(nonce);
    if (corr == NULL || corr_len <= nl + 1 || corr_len > nl + 20 || memcmp(corr, nonce, nl) != 0 ||
        corr[nl] != '.')
        return DTX_ENOTFOUND;
    uint64_t seq = 0;
    for (size_t i = nl + 1; i < corr_len; i++) {
        if (corr[i] < '0' || corr[i] > '9' || seq > (UINT64_MAX - 9) / 10)
            return DTX_ENOTFOUND;
        seq = seq * 10 + (uint64_t)(corr[i] - '0');
    }
    out->seq = seq;
    out->error[0] = '\0';
    if (bytes_is(result, result_len, "SUCCESS")) {
        out->outcome = CALL_SUCCESS;
    } else if (bytes_is(result, result_len, "FAILURE")) {
        size_t n = body_len < AMQP_REPLY_TEXT_MAX ? body_len : AMQP_REPLY_TEXT_MAX;
        /* cut between characters, not inside one (the API shows it as JSON;
         * bytes that are no UTF-8 at all are replaced there) */
        while (n > 0 && n < body_len && ((unsigned char)body[n] & 0xc0) == 0x80)
            n--;
        out->outcome = CALL_FAILURE;
        snprintf(out->error, sizeof out->error, "the participant replied FAILURE%s%.*s",
                 n ? ": " : "", (int)n, n ? body : "");
    } else if (bytes_is(result, result_len, "ONGOING")) {
        out->outcome = CALL_ONGOING;
        snprintf(out->error, sizeof out->error, "the participant replied ONGOING");
    } else {
        out->outcome = CALL_TRANSIENT;
        snprintf(out->error, sizeof out->error,
                 "the reply has no Dtx-Result header of SUCCESS, FAILURE or ONGOING");
    }
    return 0;
}

/* basic.deliver on the reply channel: read the reply, settle its command. */
static int on_reply(struct amqp_tp *t)
{
    amqp_message_t msg;
    amqp_rpc_reply_t r = amqp_read_message(t->conn, REPLY_CHANNEL, &msg, 0);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        char why[ERR_MAX];
        rpc_error(r, "reading a reply", why, sizeof why);
        disconnect(t, why);
        return -1;
    }
    const amqp_basic_properties_t *pr = &msg.properties;
    struct amqp_reply rep;
    struct pub *p = NULL;
    if (pr->_flags & AMQP_BASIC_CORRELATION_ID_FLAG) {
        amqp_bytes_t res = header_value(pr, "Dtx-Result");
        if (amqp_reply_parse(t->nonce, pr->correlation_id.bytes, pr->correlation_id.len, res.bytes,
                             res.len, msg.body.bytes, msg.body.len, &rep) == 0)
            p = hash_find(t, rep.seq);
    }
    if (p == NULL) {
        /* an attempt given up on, another dtxd's, or from before a restart */
        slog_debug("amqp reply dropped", "reason=\"%s\"",
                   pr->_flags & AMQP_BASIC_CORRELATION_ID_FLAG ? "no call waits for it"
                                                               : "no correlation_id");
        amqp_destroy_message(&msg);
        return 0;
    }
    CRASH_POINT("amqp.after_reply");
    settle(p, rep.outcome, rep.outcome == CALL_SUCCESS ? NULL : rep.error);
    struct list settled = {0};
    land(t, p, &settled);
    hand_back(t, settled.head);
    amqp_destroy_message(&msg);
    return 0;
}

/* channel.close from the broker: fail what is in flight (a reply channel
 * that closed loses the replies on their way) and reopen the channel. */
static int on_channel_close(struct amqp_tp *t, amqp_channel_t ch, amqp_channel_close_t *m)
{
    char why[ERR_MAX];
    snprintf(why, sizeof why, "the broker closed the channel: %u %.*s", m->reply_code,
             (int)m->reply_text.len, (char *)m->reply_text.bytes);
    slog_warn("amqp channel closed", "broker=%s channel=%u err=\"%s\"", t->where, ch, why);
    fail_inflight(t, why);
    amqp_channel_close_ok_t ok = {0};
    if (amqp_send_method(t->conn, ch, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok) != 0) {
        disconnect(t, "cannot acknowledge the channel's close");
        return -1;
    }
    char oerr[ERR_MAX];
    int rc = ch == REPLY_CHANNEL ? open_reply_channel(t, oerr, sizeof oerr)
                                 : open_pub_channel(t, oerr, sizeof oerr);
    if (rc != 0) {
        disconnect(t, oerr);
        return -1;
    }
    return 1;
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
    case AMQP_BASIC_DELIVER_METHOD:
        return on_reply(t) == 0 ? 1 : -1;
    case AMQP_CHANNEL_CLOSE_METHOD:
        return on_channel_close(t, f.channel, f.payload.method.decoded);
    case AMQP_CONNECTION_CLOSE_METHOD: {
        amqp_connection_close_t *m = f.payload.method.decoded;
        char why[ERR_MAX];
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

/* TCP_CORK on (1) or off (0, which sends what is held). 0 or -1. */
static int cork(struct amqp_tp *t, int on)
{
    int fd = amqp_get_sockfd(t->conn);
    return fd >= 0 && setsockopt(fd, IPPROTO_TCP, TCP_CORK, &on, sizeof on) == 0 ? 0 : -1;
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
        /* publish in order; while down, fail at once (the engine backs off).
         * The socket is corked around a batch: rabbitmq-c sends each frame
         * of a publish (method, header, body) with a call of its own, and
         * this makes one segment of them, and of the whole batch. */
        int corked = t->connected && todo != NULL && cork(t, 1) == 0;
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
        if (corked && t->connected)
            cork(t, 0);
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
            amqp_channel_close(t->conn, REPLY_CHANNEL, AMQP_REPLY_SUCCESS);
            amqp_channel_close(t->conn, PUB_CHANNEL, AMQP_REPLY_SUCCESS);
            amqp_connection_close(t->conn, AMQP_REPLY_SUCCESS);
        }
        amqp_destroy_connection(t->conn);
    }
    t->conn = NULL;
    struct list *lists[2] = {&t->unconfirmed, &t->awaiting};
    for (int i = 0; i < 2; i++)
        while (lists[i]->head != NULL) {
            struct pub *p = lists[i]->head;
            fl_unlink(p);
            pub_free(p);
        }
    free(t->hash);
    t->hash = NULL;
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
            .error = p->outcome == CALL_SUCCESS ? NULL : (p->error != NULL ? p->error : ""),
        };
        if (p->outcome != CALL_SUCCESS)
            slog_debug("amqp call not successful", "message_id=%s err=\"%s\"", p->message_id,
                       res.error);
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

/* Copy n bytes of s to *m, move *m past them; returns where they went. */
static const char *put(char **m, const char *s, size_t n)
{
    char *at = *m;
    memcpy(at, s, n);
    *m += n;
    return at;
}

static int amqp_call(struct transport *tp, const struct call_req *req, call_done_fn cb, void *arg)
{
    struct amqp_tp *t = (struct amqp_tp *)tp;
    struct amqp_target to;
    if (amqp_target_parse(req->url, &to) != 0 || req->timeout_ms == 0)
        return DTX_EINVAL;
    const char *body = req->body != NULL ? req->body : "";
    size_t body_len = req->body != NULL ? req->body_len : 0;
    const char *tp_text = req->traceparent;
    size_t n_ex = strlen(to.exchange) + 1, n_rk = strlen(to.routing_key) + 1;
    size_t n_gid = strlen(req->gid) + 1, n_br = strlen(req->branch) + 1;
    size_t n_op = strlen(req->op) + 1, n_ty = strlen(req->txn_type) + 1;
    size_t n_tp = tp_text != NULL ? strlen(tp_text) + 1 : 0;
    size_t n_id = n_gid + n_br + n_op; /* "gid/branch/op" and its NUL */
    struct pub *p =
        xmalloc(sizeof *p + n_ex + n_rk + n_gid + n_br + n_op + n_ty + n_tp + n_id + body_len + 1);
    memset(p, 0, sizeof *p);
    char *m = p->mem;
    p->exchange = put(&m, to.exchange, n_ex);
    p->routing_key = put(&m, to.routing_key, n_rk);
    p->gid = put(&m, req->gid, n_gid);
    p->branch = put(&m, req->branch, n_br);
    p->op = put(&m, req->op, n_op);
    p->type = put(&m, req->txn_type, n_ty);
    if (tp_text != NULL)
        p->traceparent = put(&m, tp_text, n_tp);
    p->message_id = m;
    m += sprintf(m, "%s/%s/%s", req->gid, req->branch, req->op) + 1;
    p->body = m;
    p->body_len = body_len;
    memcpy(m, body, body_len);
    m[body_len] = '\0';
    p->cb = cb;
    p->arg = arg;
    p->timeout_ms = req->timeout_ms;
    p->deadline_ms = clock_mono_ms() + req->timeout_ms;
    /* a msg step's action is a delivery; everything else waits for a reply */
    p->command = !(strcmp(req->op, "action") == 0 && strcmp(req->txn_type, "msg") == 0);
    pthread_mutex_lock(&t->mu);
    int was_empty = t->todo.head == NULL;
    list_push(&t->todo, p);
    pthread_mutex_unlock(&t->mu);
    /* one wake-up per batch: a queue that was not empty has one pending
     * (the thread takes the whole queue at once) */
    if (was_empty)
        wake(t);
    return 0;
}

static void tp_free_strings(struct amqp_tp *t)
{
    free(t->reply_queue);
    free(t->cacert);
    free(t->cert);
    free(t->key);
}

static void on_async_closed(uv_handle_t *h)
{
    struct amqp_tp *t = h->data;
    free_chain(list_take(&t->done));
    free_chain(list_take(&t->todo));
    pthread_mutex_destroy(&t->mu);
    close(t->wake_fd);
    tp_free_strings(t);
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

/* Check cfg into t; 0 or -1 with err. */
static int configure(struct amqp_tp *t, const struct amqp_config *cfg, char *err, size_t errlen)
{
    if (cfg->url == NULL) {
        snprintf(err, errlen, "no broker URL");
        return -1;
    }
    if (amqp_broker_parse(cfg->url, &t->broker, err, errlen) != 0)
        return -1;
    const char *rq = cfg->reply_queue ? cfg->reply_queue : AMQP_REPLY_QUEUE_DEFAULT;
    if (rq[0] == '\0' || strlen(rq) > 255 || strncmp(rq, "amq.", 4) == 0) {
        snprintf(err, errlen, "the reply queue name must be 1-255 bytes, not starting amq.");
        return -1;
    }
    if ((cfg->cert == NULL) != (cfg->key == NULL)) {
        snprintf(err, errlen, "a client certificate needs its key, and a key its certificate");
        return -1;
    }
    if (!t->broker.tls && (cfg->cacert || cfg->cert)) {
        snprintf(err, errlen, "a CA file or client certificate needs an amqps:// broker URL");
        return -1;
    }
    const char *files[3] = {cfg->cacert, cfg->cert, cfg->key};
    for (int i = 0; i < 3; i++)
        if (files[i] != NULL && access(files[i], R_OK) != 0) {
            snprintf(err, errlen, "cannot read %s: %s", files[i], strerror(errno));
            return -1;
        }
    t->reply_queue = xstrdup(rq);
    t->cacert = cfg->cacert ? xstrdup(cfg->cacert) : NULL;
    t->cert = cfg->cert ? xstrdup(cfg->cert) : NULL;
    t->key = cfg->key ? xstrdup(cfg->key) : NULL;
    uint64_t nonce;
    if (rnd_secure(&nonce, sizeof nonce) != 0)
        nonce = rnd_next() ^ clock_mono_ms();
    snprintf(t->nonce, sizeof t->nonce, "%016llx", (unsigned long long)nonce);
    return 0;
}

struct transport *amqp_transport_new(uv_loop_t *loop, const struct amqp_config *cfg, char *err,
                                     size_t errlen)
{
    struct amqp_tp *t = xcalloc(1, sizeof *t);
    if (configure(t, cfg, err, errlen) != 0) {
        tp_free_strings(t);
        free(t);
        return NULL;
    }
    t->base.ops = &amqp_ops;
    t->base.scheme = AMQP_SCHEME;
    t->loop = loop;
    t->next_deadline = UINT64_MAX;
    amqp_broker_describe(&t->broker, t->where, sizeof t->where);
    t->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (t->wake_fd < 0) {
        snprintf(err, errlen, "eventfd: %s", strerror(errno));
        tp_free_strings(t);
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
    slog_info("amqp broker", "broker=%s reply_queue=%s", t->where, t->reply_queue);
    return &t->base;
}
