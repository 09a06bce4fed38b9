/*
 * shop.c - what the shop programs share (see shop.h): the RabbitMQ topology,
 * declared with rabbitmq-c, and the participant service that runs a
 * service's commands through libdtx's AMQP participant loop.
 *
 * The loop owns the broker connection, the barrier and the replies; a
 * service only says which routing keys it takes and what each one changes
 * in its database. shop_handle is the loop's handler: it finds the route of
 * the command's routing key, checks its Dtx-Op, parses the payload and runs
 * the change inside the loop's local transaction, so the change, the
 * barrier row and the reply's outcome go together.
 */
#include "shop.h"

#include <amqp.h>
#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

bool shop_quiet;
const char *shop_prog = "shop";

void shop_log(const char *fmt, ...)
{
    if (shop_quiet)
        return;
    char when[32];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(when, sizeof when, "%H:%M:%S", &tm);
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s.%03ld %s: %s\n", when, ts.tv_nsec / 1000000, shop_prog, line);
}

int64_t shop_parse_int(const char *s)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < 0 || errno != 0)
        return -1;
    return v;
}

bool shop_valid_id(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '_' || ch == '-'))
            return false;
    }
    return true;
}

const char *shop_str(json_t *payload, const char *key)
{
    const char *s = json_string_value(json_object_get(payload, key));
    return s != NULL && s[0] != '\0' ? s : NULL;
}

int64_t shop_int(json_t *payload, const char *key)
{
    json_t *v = json_object_get(payload, key);
    if (!json_is_integer(v) || json_integer_value(v) <= 0)
        return -1;
    return (int64_t)json_integer_value(v);
}

/* ---- topology ------------------------------------------------------------- */

static const struct {
    const char *queue, *key;
} BINDINGS[] = {
    {SHOP_Q_ORDER, "order.confirm"},    {SHOP_Q_ORDER, "order.complete"},
    {SHOP_Q_ORDER, "order.cancel"},     {SHOP_Q_STOCK, "stock.reserve"},
    {SHOP_Q_STOCK, "stock.release"},    {SHOP_Q_PAYMENT, "payment.charge"},
    {SHOP_Q_PAYMENT, "payment.refund"},
};

static const char *const QUEUES[] = {
    SHOP_Q_ORDER,         SHOP_Q_STOCK,         SHOP_Q_PAYMENT,
    SHOP_Q_ORDER ".dead", SHOP_Q_STOCK ".dead", SHOP_Q_PAYMENT ".dead",
};

/* Describe a failed RPC in err. Returns -1 for a failure, 0 for success. */
static int rpc_check(amqp_rpc_reply_t r, const char *what, char *err, size_t errlen)
{
    switch (r.reply_type) {
    case AMQP_RESPONSE_NORMAL:
        return 0;
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
        snprintf(err, errlen, "%s: %s", what, amqp_error_string2(r.library_error));
        return -1;
    case AMQP_RESPONSE_SERVER_EXCEPTION:
        if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
            amqp_connection_close_t *m = r.reply.decoded;
            snprintf(err, errlen, "%s: connection closed by the broker: %d %.*s", what,
                     m->reply_code, (int)m->reply_text.len, (const char *)m->reply_text.bytes);
        } else if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
            amqp_channel_close_t *m = r.reply.decoded;
            snprintf(err, errlen, "%s: channel closed by the broker: %d %.*s", what, m->reply_code,
                     (int)m->reply_text.len, (const char *)m->reply_text.bytes);
        } else {
            snprintf(err, errlen, "%s: broker error (method 0x%08x)", what, r.reply.id);
        }
        return -1;
    default:
        snprintf(err, errlen, "%s: no reply from the broker", what);
        return -1;
    }
}

int shop_declare(const char *url, const char *cacert, char *err, size_t errlen)
{
    int rc = -1;
    char *copy = strdup(url);
    amqp_connection_state_t conn = NULL;
    bool open = false, channel = false;
    struct amqp_connection_info ci;
    if (copy == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (amqp_parse_url(copy, &ci) != AMQP_STATUS_OK) {
        snprintf(err, errlen, "not an amqp:// or amqps:// URL");
        goto fail;
    }
    conn = amqp_new_connection();
    if (conn == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    amqp_socket_t *sock = ci.ssl ? amqp_ssl_socket_new(conn) : amqp_tcp_socket_new(conn);
    if (sock == NULL) {
        snprintf(err, errlen, "cannot make a socket");
        goto fail;
    }
    if (ci.ssl && cacert != NULL && amqp_ssl_socket_set_cacert(sock, cacert) != AMQP_STATUS_OK) {
        snprintf(err, errlen, "cannot load CA file %s", cacert);
        goto fail;
    }
    struct timeval tv = {.tv_sec = 5};
    amqp_set_handshake_timeout(conn, &tv);
    amqp_set_rpc_timeout(conn, &tv);
    int st = amqp_socket_open_noblock(sock, ci.host, ci.port, &tv);
    if (st != AMQP_STATUS_OK) {
        snprintf(err, errlen, "connect to %s:%d: %s", ci.host, ci.port, amqp_error_string2(st));
        goto fail;
    }
    open = true;
    if (rpc_check(
            amqp_login(conn, ci.vhost, 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, ci.user, ci.password),
            "log in", err, errlen) != 0)
        goto fail;
    amqp_channel_open(conn, 1);
    if (rpc_check(amqp_get_rpc_reply(conn), "channel.open", err, errlen) != 0)
        goto fail;
    channel = true;
    amqp_exchange_declare(conn, 1, amqp_cstring_bytes(SHOP_EXCHANGE), amqp_cstring_bytes("direct"),
                          0, 1, 0, 0, amqp_empty_table);
    if (rpc_check(amqp_get_rpc_reply(conn), "exchange.declare " SHOP_EXCHANGE, err, errlen) != 0)
        goto fail;
    for (size_t i = 0; i < sizeof QUEUES / sizeof QUEUES[0]; i++) {
        char what[128];
        snprintf(what, sizeof what, "queue.declare %s", QUEUES[i]);
        amqp_queue_declare(conn, 1, amqp_cstring_bytes(QUEUES[i]), 0, 1, 0, 0, amqp_empty_table);
        if (rpc_check(amqp_get_rpc_reply(conn), what, err, errlen) != 0)
            goto fail;
    }
    for (size_t i = 0; i < sizeof BINDINGS / sizeof BINDINGS[0]; i++) {
        char what[128];
        snprintf(what, sizeof what, "queue.bind %s %s", BINDINGS[i].queue, BINDINGS[i].key);
        amqp_queue_bind(conn, 1, amqp_cstring_bytes(BINDINGS[i].queue),
                        amqp_cstring_bytes(SHOP_EXCHANGE), amqp_cstring_bytes(BINDINGS[i].key),
                        amqp_empty_table);
        if (rpc_check(amqp_get_rpc_reply(conn), what, err, errlen) != 0)
            goto fail;
    }
    rc = 0;
fail:
    if (channel)
        amqp_channel_close(conn, 1, AMQP_REPLY_SUCCESS);
    if (open)
        amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
    if (conn != NULL)
        amqp_destroy_connection(conn);
    free(copy);
    return rc;
}

/* ---- the database --------------------------------------------------------- */

struct db_conn *shop_db_open(struct db_pool *pool, const char *target, const char *const *schema,
                             size_t n_schema, char *err, size_t errlen)
{
    db_pool_init(pool, target, 1);
    struct db_conn *c = db_pool_get(pool, err, errlen);
    if (c == NULL)
        return NULL;
    int rc = DB_OK;
    if (c->lite != NULL)
        rc = db_exec(c, "PRAGMA journal_mode=WAL");
    for (size_t i = 0; rc == DB_OK && i < n_schema; i++)
        rc = db_exec(c, schema[i]);
    if (rc != DB_OK) {
        snprintf(err, errlen, "%s", c->err);
        shop_db_close(pool, c);
        return NULL;
    }
    int drc = c->pg != NULL ? dtx_barrier_pg_init(c->pg) : dtx_barrier_sqlite_init(c->lite);
    if (drc != 0) {
        snprintf(err, errlen, "dtx barrier init: %s", dtx_strerror(drc));
        shop_db_close(pool, c);
        return NULL;
    }
    return c;
}

void shop_db_close(struct db_pool *pool, struct db_conn *c)
{
    if (c != NULL)
        db_pool_put(pool, c);
    db_pool_close(pool);
}

struct rows_json {
    const char *const *cols;
    const bool *ints;
    int ncols;
    json_t *arr;
};

static int row_to_json(void *ud, int ncol, const char *const *vals)
{
    struct rows_json *r = ud;
    json_t *o = json_object();
    for (int i = 0; i < ncol && i < r->ncols; i++) {
        json_t *v = r->ints[i] ? json_integer(strtoll(vals[i], NULL, 10)) : json_string(vals[i]);
        json_object_set_new(o, r->cols[i], v);
    }
    json_array_append_new(r->arr, o);
    return DB_OK;
}

int shop_rows_json(struct db_conn *c, const char *sql, const struct db_arg *args, int nargs,
                   const char *const *cols, const bool *ints, int ncols, json_t *obj,
                   const char *name)
{
    struct rows_json r = {.cols = cols, .ints = ints, .ncols = ncols, .arr = json_array()};
    int rc = db_query(c, sql, args, nargs, row_to_json, &r, NULL);
    json_object_set_new(obj, name, r.arr);
    return rc;
}

void shop_print_json(json_t *obj)
{
    char *s = json_dumps(obj, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
    if (s != NULL)
        printf("%s\n", s);
    free(s);
    json_decref(obj);
}

/* ---- the participant service ---------------------------------------------- */

struct service_ctx {
    const struct shop_service *s;
    struct db_conn *c;
};

/* The loop's handler: route, check, parse, change (see the file comment). */
static enum dtx_amqp_result shop_handle(void *arg, const struct dtx_amqp_msg *m, char *reason,
                                        size_t cap)
{
    struct service_ctx *x = arg;
    const struct shop_route *route = NULL;
    enum dtx_amqp_result r = DTX_AMQP_FAILURE;
    json_t *payload = NULL;
    const char *key = m->routing_key != NULL ? m->routing_key : "";
    for (size_t i = 0; i < x->s->n_routes; i++)
        if (strcmp(key, x->s->routes[i].key) == 0)
            route = &x->s->routes[i];
    if (route == NULL) {
        snprintf(reason, cap, "%s takes no command %s", x->s->name, key);
        goto out;
    }
    if (strcmp(m->op, route->op) != 0) {
        snprintf(reason, cap, "%s is a %s, not a %s", key, route->op, m->op);
        goto out;
    }
    json_error_t jerr;
    payload = json_loadb(m->body, m->body_len, 0, &jerr);
    if (!json_is_object(payload)) {
        snprintf(reason, cap, "the payload is not a JSON object");
        goto out;
    }
    x->c->err[0] = '\0';
    r = route->change(x->c, m, payload, reason, cap);
    if (r == DTX_AMQP_RETRY && reason[0] == '\0')
        snprintf(reason, cap, "%s", x->c->err);
out:
    shop_log("%s %s/%s/%s%s -> %s%s%s", key, m->gid, m->branch, m->op,
             m->redelivered ? " (redelivered)" : "", dtx_amqp_result_name(r), reason[0] ? ": " : "",
             reason);
    json_decref(payload);
    return r;
}

/* The loop a stop signal ends, and whether one came (the handler reads and
 * writes only these: a lock-free atomic is async-signal-safe). */
static _Atomic(struct dtx_amqp_participant *) running;
static volatile sig_atomic_t stopping;

static void on_signal(int sig)
{
    (void)sig;
    stopping = 1;
    struct dtx_amqp_participant *p = atomic_load(&running);
    if (p != NULL)
        dtx_amqp_participant_stop(p);
}

/* Sleep ms milliseconds unless a stop signal comes first. */
static void nap(int ms)
{
    for (int left = ms; left > 0 && !stopping; left -= 50)
        usleep(50 * 1000);
}

/* The participant loop's own news (connects, lost connections, database
 * errors), in the service's log. */
static void on_status(void *arg, const char *line)
{
    (void)arg;
    shop_log("amqp: %s", line);
}

int shop_serve(const struct shop_service *s)
{
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    char err[512];
    struct db_pool pool;
    struct db_conn *c = shop_db_open(&pool, s->db, s->schema, s->n_schema, err, sizeof err);
    if (c == NULL) {
        fprintf(stderr, "%s: %s\n", shop_prog, err);
        return SHOP_EXIT_ERROR;
    }
    /* The bindings must exist for dtxd's publishes to be routed: declare
     * them before consuming, waiting for the broker if it is not up yet. */
    for (int backoff = 100; !stopping; backoff = backoff * 2 > 5000 ? 5000 : backoff * 2) {
        if (shop_declare(s->broker_url, s->cacert, err, sizeof err) == 0)
            break;
        shop_log("declaring the topology: %s (again in %d ms)", err, backoff);
        nap(backoff);
    }
    if (stopping) {
        shop_db_close(&pool, c);
        return SHOP_EXIT_OK;
    }
    struct service_ctx x = {.s = s, .c = c};
    struct dtx_amqp_opts o = {
        .broker_url = s->broker_url,
        .queue = s->queue,
        .cacert = s->cacert,
        .prefetch = s->prefetch,
        .pg = c->pg,
        .sqlite = c->lite,
        .on_status = on_status,
    };
    struct dtx_amqp_participant *p = NULL;
    int rc = dtx_amqp_participant_new(&o, shop_handle, &x, &p);
    if (rc != 0) {
        fprintf(stderr, "%s: participant loop: %s\n", shop_prog, dtx_strerror(rc));
        shop_db_close(&pool, c);
        return SHOP_EXIT_ERROR;
    }
    atomic_store(&running, p);
    if (stopping) /* a signal between the check above and `running` */
        dtx_amqp_participant_stop(p);
    shop_log("consuming %s, database %s", s->queue, c->pg != NULL ? "postgresql" : s->db);
    rc = dtx_amqp_participant_run(p);
    atomic_store(&running, NULL);
    if (rc != 0)
        fprintf(stderr, "%s: participant loop: %s\n", shop_prog, dtx_strerror(rc));
    dtx_amqp_participant_free(p);
    shop_db_close(&pool, c);
    shop_log("stopped");
    return rc == 0 ? SHOP_EXIT_OK : SHOP_EXIT_ERROR;
}

/* ---- the participant programs' command line ------------------------------- */

static void usage(const struct shop_program *p, FILE *f)
{
    const char *n = p->service.name;
    fprintf(f,
            "usage: %s serve --db DB --amqp URL [--cacert FILE] [--prefetch N] [--quiet]\n"
            "       %s set   --db DB %s\n"
            "       %s show  --db DB\n"
            "  serve       consume queue %s and run its commands (until SIGINT/SIGTERM)\n"
            "  set         %s\n"
            "  show        %s\n"
            "  --db        a libpq conninfo/URI (starts with \"postgres\", or has dbname= or\n"
            "              host=), otherwise a SQLite file (created if missing)\n"
            "  --amqp      the broker, amqp://user:pass@host:port/vhost or amqps://...\n"
            "              (default $SHOP_AMQP_URL: the environment keeps the password out\n"
            "              of ps)\n"
            "  --cacert    amqps: the CA file to verify the broker with\n"
            "  --prefetch  commands the broker may hand over before they are acknowledged\n"
            "  --quiet     do not log every command on stderr\n",
            n, n, p->set_args, n, p->service.queue, p->set_help, p->show_help);
}

int shop_participant_main(const struct shop_program *p, int argc, char **argv)
{
    shop_prog = p->service.name;
    const char *cmd = argc > 1 ? argv[1] : NULL, *db = NULL, *cacert = NULL;
    const char *amqp = getenv("SHOP_AMQP_URL");
    const char *args[2];
    int nargs = 0;
    int64_t prefetch = 0;
    if (cmd != NULL && (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0)) {
        usage(p, stdout);
        return SHOP_EXIT_OK;
    }
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--db") == 0 && i + 1 < argc) {
            db = argv[++i];
        } else if (strcmp(a, "--amqp") == 0 && i + 1 < argc) {
            amqp = argv[++i];
        } else if (strcmp(a, "--cacert") == 0 && i + 1 < argc) {
            cacert = argv[++i];
        } else if (strcmp(a, "--prefetch") == 0 && i + 1 < argc) {
            prefetch = shop_parse_int(argv[++i]);
        } else if (strcmp(a, "--quiet") == 0) {
            shop_quiet = true;
        } else if (a[0] != '-' && nargs < 2) {
            args[nargs++] = a;
        } else {
            usage(p, stderr);
            return SHOP_EXIT_USAGE;
        }
    }
    bool serve = cmd != NULL && strcmp(cmd, "serve") == 0;
    bool set = cmd != NULL && strcmp(cmd, "set") == 0;
    bool show = cmd != NULL && strcmp(cmd, "show") == 0;
    if ((!serve && !set && !show) || db == NULL || prefetch < 0 || prefetch > 65535 ||
        nargs != (set ? 2 : 0) || (serve && (amqp == NULL || amqp[0] == '\0'))) {
        usage(p, stderr);
        return SHOP_EXIT_USAGE;
    }
    if (serve) {
        struct shop_service s = p->service;
        s.db = db;
        s.broker_url = amqp;
        s.cacert = cacert;
        s.prefetch = (int)prefetch;
        return shop_serve(&s);
    }
    int64_t value = set ? shop_parse_int(args[1]) : 0;
    if (set && (!shop_valid_id(args[0]) || value < 0)) {
        fprintf(stderr,
                "%s: set: ID is 1-64 characters of A-Z a-z 0-9 . _ -, VALUE an integer >= 0\n",
                shop_prog);
        return SHOP_EXIT_USAGE;
    }
    char err[512];
    struct db_pool pool;
    struct db_conn *c =
        shop_db_open(&pool, db, p->service.schema, p->service.n_schema, err, sizeof err);
    if (c == NULL) {
        fprintf(stderr, "%s: %s\n", shop_prog, err);
        return SHOP_EXIT_ERROR;
    }
    json_t *o = json_object();
    int rc = set ? p->set(c, args[0], value) : p->show(c, o);
    if (rc != DB_OK)
        fprintf(stderr, "%s: %s\n", shop_prog, c->err);
    else if (show)
        shop_print_json(json_incref(o));
    json_decref(o);
    shop_db_close(&pool, c);
    return rc == DB_OK ? SHOP_EXIT_OK : SHOP_EXIT_ERROR;
}
