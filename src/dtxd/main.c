/*
 * main.c - dtxd: options, wiring and the process lifecycle.
 *
 * Start-up: open the log directory, replay it (engine_recover resumes every
 * unfinished transaction), then listen. Everything runs on one libuv loop;
 * the log writer and, with --amqp-url, the RabbitMQ connection are the only
 * other threads of ours (with --kafka-brokers, librdkafka runs its own and
 * hands its events to the loop). SIGTERM/SIGINT: stop accepting, stop
 * starting participant calls, drain the log so every acknowledged record
 * is durable and every reply waiting on it is sent, then exit 0. Unfinished
 * transactions continue at the next start.
 */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "api/api.h"
#include "api/http_server.h"
#include "common/alloc.h"
#include "common/err.h"
#include "common/slog.h"
#include "engine/engine.h"
#include "store/wal.h"
#include "transport/amqp.h"
#include "transport/http_client.h"
#include "transport/kafka.h"
#include "transport/pg_resource.h"
#include "transport/transport.h"

#define DTX_VERSION "0.1.0"

extern char **environ;

/* --kafka-option KEY=VALUE (repeated) and DTX_KAFKA_OPTION_<KEY>: librdkafka
 * properties, in the order given (a later one wins). */
#define KAFKA_OPTIONS_MAX 64
struct kafka_options {
    struct kafka_option kv[KAFKA_OPTIONS_MAX];
    char *owned[KAFKA_OPTIONS_MAX]; /* "key\0value" */
    size_t n;
};

struct options {
    const char *listen;
    const char *data_dir;
    const char *log_level;
    uint64_t max_body;
    uint64_t max_steps;
    uint64_t max_batch;
    uint64_t max_wait_ms;
    uint64_t retry_initial_ms;
    uint64_t retry_max_ms;
    uint64_t retry_limit;
    uint64_t request_timeout_ms;
    uint64_t retention_s;
    uint64_t segment_size;
    uint64_t compact_min_bytes;
    const char *resources;
    uint64_t resource_connections;
    uint64_t resource_scan_ms;
    uint64_t orphan_grace_ms;
    const char *kafka_brokers;
    struct kafka_options kafka_opts;
    const char *amqp_url;
    const char *amqp_reply_queue;
    const char *amqp_cacert;
    const char *amqp_cert;
    const char *amqp_key;
};

/* One table drives --help, getopt and the DTX_* environment variables. */
enum opt_kind { OPT_STR, OPT_U64, OPT_KAFKA };
struct opt_def {
    const char *name;
    const char *env;
    enum opt_kind kind;
    size_t offset;
    uint64_t min, max;
    const char *help;
};

#define OFF(f) offsetof(struct options, f)
static const struct opt_def opt_defs[] = {
    {"listen", "DTX_LISTEN", OPT_STR, OFF(listen), 0, 0,
     "HOST:PORT to serve the API on (default 127.0.0.1:7788)"},
    {"data-dir", "DTX_DATA_DIR", OPT_STR, OFF(data_dir), 0, 0,
     "directory of the embedded log (default ./dtx-data)"},
    {"log-level", "DTX_LOG_LEVEL", OPT_STR, OFF(log_level), 0, 0,
     "debug, info, warn or error (default info)"},
    {"max-body", "DTX_MAX_BODY", OPT_U64, OFF(max_body), 1024, 16u << 20,
     "largest request body in bytes, at most 16 MiB (so every log record stays under the "
     "log's 64 MiB record limit); larger is answered 413 (default 1048576)"},
    {"max-steps", "DTX_MAX_STEPS", OPT_U64, OFF(max_steps), 1, 10000,
     "most steps (saga, msg) or registered branches (tcc, 2pc) in one transaction (default 100)"},
    {"max-batch", "DTX_MAX_BATCH", OPT_U64, OFF(max_batch), 1, 10000,
     "most transactions in one POST /v1/transactions:batch (default 1000; the body is still "
     "bound by --max-body)"},
    {"max-wait-ms", "DTX_MAX_WAIT_MS", OPT_U64, OFF(max_wait_ms), 1, 3600000,
     "upper bound of a request's wait_timeout_ms (default 60000)"},
    {"retry-initial-ms", "DTX_RETRY_INITIAL_MS", OPT_U64, OFF(retry_initial_ms), 1, 3600000,
     "default retry.initial_interval_ms (default 100)"},
    {"retry-max-ms", "DTX_RETRY_MAX_MS", OPT_U64, OFF(retry_max_ms), 1, 86400000,
     "default retry.max_interval_ms (default 30000)"},
    {"retry-limit", "DTX_RETRY_LIMIT", OPT_U64, OFF(retry_limit), 0, 1000000,
     "default retry.limit (default 10)"},
    {"request-timeout-ms", "DTX_REQUEST_TIMEOUT_MS", OPT_U64, OFF(request_timeout_ms), 1, 600000,
     "default per-call timeout (default 10000)"},
    {"retention", "DTX_RETENTION", OPT_U64, OFF(retention_s), 0, 315360000,
     "seconds a finished transaction stays queryable (default 3600)"},
    {"segment-size", "DTX_SEGMENT_SIZE", OPT_U64, OFF(segment_size), 4096, 1ull << 40,
     "log segment size in bytes before rotation (default 67108864)"},
    {"compact-min-bytes", "DTX_COMPACT_MIN_BYTES", OPT_U64, OFF(compact_min_bytes), 0, 1ull << 50,
     "compact once sealed segments hold this many bytes (default 2 x segment size)"},
    {"resources", "DTX_RESOURCES_FILE", OPT_STR, OFF(resources), 0, 0,
     "file of PostgreSQL resources for 2pc, one `NAME CONNINFO` per line (# comments); "
     "DTX_RESOURCE_<NAME>=<conninfo> adds one too"},
    {"resource-connections", "DTX_RESOURCE_CONNECTIONS", OPT_U64, OFF(resource_connections), 1, 256,
     "connections per resource (default 8)"},
    {"resource-scan-ms", "DTX_RESOURCE_SCAN_MS", OPT_U64, OFF(resource_scan_ms), 100, 86400000,
     "how often every resource's pg_prepared_xacts is scanned for dtx: transactions (default "
     "10000)"},
    {"orphan-grace-ms", "DTX_ORPHAN_GRACE_MS", OPT_U64, OFF(orphan_grace_ms), 0, 86400000,
     "a prepared dtx: transaction no transaction knows is rolled back once this old (default "
     "60000)"},
    {"amqp-url", "DTX_AMQP_URL", OPT_STR, OFF(amqp_url), 0, 0,
     "RabbitMQ broker for amqp:// branch targets, amqp://user:pass@host:port/vhost, or "
     "amqps:// for TLS; it holds a password, so prefer the environment (default: none, amqp:// "
     "targets are refused)"},
    {"amqp-reply-queue", "DTX_AMQP_REPLY_QUEUE", OPT_STR, OFF(amqp_reply_queue), 0, 0,
     "the durable queue this dtxd takes participants' replies from; one per dtxd sharing a "
     "broker (default dtxd.replies)"},
    {"amqp-cacert", "DTX_AMQP_CACERT", OPT_STR, OFF(amqp_cacert), 0, 0,
     "amqps: PEM file of the CA the broker's certificate must chain to (default: the system's)"},
    {"amqp-cert", "DTX_AMQP_CERT", OPT_STR, OFF(amqp_cert), 0, 0,
     "amqps: client certificate (PEM), with --amqp-key"},
    {"amqp-key", "DTX_AMQP_KEY", OPT_STR, OFF(amqp_key), 0, 0,
     "amqps: the client certificate's private key (PEM)"},
    {"kafka-brokers", "DTX_KAFKA_BROKERS", OPT_STR, OFF(kafka_brokers), 0, 0,
     "Kafka bootstrap servers for kafka:// branch targets, HOST:PORT[,HOST:PORT...] (default: "
     "none, kafka:// targets are refused)"},
    {"kafka-option", "DTX_KAFKA_OPTION_<KEY>", OPT_KAFKA, OFF(kafka_opts), 0, 0,
     "KEY=VALUE, a librdkafka property (security.protocol, sasl.mechanism, ...), repeatable; "
     "secrets such as sasl.password belong in the environment: DTX_KAFKA_OPTION_SASL_PASSWORD "
     "(KEY upper-cased, '.' as '_')"},
};
#define NOPTS (sizeof opt_defs / sizeof opt_defs[0])

static void usage(FILE *f)
{
    fprintf(f,
            "usage: dtxd [options]\n\n"
            "dtx coordinator: saga, tcc, 2pc and msg transactions with a durable embedded log.\n\n"
            "options (each also read from the environment variable shown):\n");
    for (size_t i = 0; i < NOPTS; i++)
        fprintf(f, "  --%-20s %-24s %s\n", opt_defs[i].name, opt_defs[i].env, opt_defs[i].help);
    fprintf(f, "  --%-20s %-24s %s\n", "help", "", "show this help and exit");
    fprintf(f, "  --%-20s %-24s %s\n", "version", "", "show the version and exit");
}

/* Set one option from text. Returns 0 or prints why and returns -1. */
static int set_opt(struct options *o, const struct opt_def *d, const char *val, const char *from)
{
    char *base = (char *)o + d->offset;
    if (d->kind == OPT_KAFKA) {
        struct kafka_options *k = (struct kafka_options *)base;
        const char *eq = strchr(val, '=');
        if (eq == NULL || eq == val) {
            fprintf(stderr, "dtxd: %s: --%s must be KEY=VALUE\n", from, d->name);
            return -1;
        }
        if (k->n == KAFKA_OPTIONS_MAX) {
            fprintf(stderr, "dtxd: %s: at most %d --%s\n", from, KAFKA_OPTIONS_MAX, d->name);
            return -1;
        }
        char *kv = xstrdup(val);
        kv[eq - val] = '\0';
        k->owned[k->n] = kv;
        k->kv[k->n].key = kv;
        k->kv[k->n].value = kv + (eq - val) + 1;
        k->n++;
        return 0;
    }
    if (d->kind == OPT_STR) {
        if (val[0] == '\0') {
            fprintf(stderr, "dtxd: %s: --%s must not be empty\n", from, d->name);
            return -1;
        }
        *(const char **)base = val;
        return 0;
    }
    char *end = NULL;
    unsigned long long v = strtoull(val, &end, 10);
    if (val[0] == '\0' || val[0] == '-' || *end != '\0' || v < d->min || v > d->max) {
        fprintf(stderr, "dtxd: %s: --%s must be an integer from %llu to %llu, got \"%s\"\n", from,
                d->name, (unsigned long long)d->min, (unsigned long long)d->max, val);
        return -1;
    }
    *(uint64_t *)base = v;
    return 0;
}

/* DTX_KAFKA_OPTION_SASL_PASSWORD=x is --kafka-option sasl.password=x
 * (librdkafka's property names have no '_'). */
static int env_kafka_options(struct options *o)
{
    static const char prefix[] = "DTX_KAFKA_OPTION_";
    const struct opt_def *d = NULL;
    for (size_t i = 0; i < NOPTS; i++)
        if (opt_defs[i].kind == OPT_KAFKA)
            d = &opt_defs[i];
    for (char **e = environ; *e != NULL; e++) {
        if (strncmp(*e, prefix, sizeof prefix - 1) != 0)
            continue;
        char kv[4096];
        snprintf(kv, sizeof kv, "%s", *e + sizeof prefix - 1);
        for (char *c = kv; *c != '\0' && *c != '='; c++)
            *c = *c == '_' ? '.' : (char)tolower((unsigned char)*c);
        if (set_opt(o, d, kv, prefix) != 0)
            return -1;
    }
    return 0;
}

/* Returns 0 to run, 1 to exit 0 (help/version), -1 to exit 2. */
static int parse_options(int argc, char **argv, struct options *o)
{
    *o = (struct options){
        .listen = "127.0.0.1:7788",
        .data_dir = "./dtx-data",
        .log_level = "info",
        .max_body = 1u << 20,
        .max_steps = 100,
        .max_batch = 1000,
        .max_wait_ms = 60000,
        .retry_initial_ms = 100,
        .retry_max_ms = 30000,
        .retry_limit = 10,
        .request_timeout_ms = 10000,
        .retention_s = 3600,
        .segment_size = 64u << 20,
        .compact_min_bytes = 0,
        .resource_connections = 8,
        .resource_scan_ms = 10000,
        .orphan_grace_ms = 60000,
    };
    for (size_t i = 0; i < NOPTS; i++) {
        const char *v = getenv(opt_defs[i].env);
        if (v != NULL && set_opt(o, &opt_defs[i], v, opt_defs[i].env) != 0)
            return -1;
    }
    if (env_kafka_options(o) != 0)
        return -1;
    struct option longopts[NOPTS + 3];
    for (size_t i = 0; i < NOPTS; i++)
        longopts[i] = (struct option){opt_defs[i].name, required_argument, NULL, (int)i + 1};
    longopts[NOPTS] = (struct option){"help", no_argument, NULL, 'h'};
    longopts[NOPTS + 1] = (struct option){"version", no_argument, NULL, 'V'};
    longopts[NOPTS + 2] = (struct option){NULL, 0, NULL, 0};
    int c;
    opterr = 0;
    for (;;) {
        c = getopt_long(argc, argv, "hV", longopts, NULL);
        if (c == -1)
            break;
        if (c == 'h') {
            usage(stdout);
            return 1;
        }
        if (c == 'V') {
            printf("dtxd %s\n", DTX_VERSION);
            return 1;
        }
        if (c >= 1 && c <= (int)NOPTS) {
            if (set_opt(o, &opt_defs[c - 1], optarg, "command line") != 0)
                return -1;
            continue;
        }
        fprintf(stderr, "dtxd: unknown or incomplete option \"%s\" (see --help)\n",
                argv[optind - 1]);
        return -1;
    }
    if (optind < argc) {
        fprintf(stderr, "dtxd: unexpected argument \"%s\" (see --help)\n", argv[optind]);
        return -1;
    }
    if (o->retry_max_ms < o->retry_initial_ms) {
        fprintf(stderr, "dtxd: --retry-max-ms must be >= --retry-initial-ms\n");
        return -1;
    }
    enum slog_level lvl;
    if (slog_parse_level(o->log_level, &lvl) != 0) {
        fprintf(stderr, "dtxd: --log-level must be debug, info, warn or error\n");
        return -1;
    }
    slog_set_level(lvl);
    if (o->compact_min_bytes == 0)
        o->compact_min_bytes = 2 * o->segment_size;
    return 0;
}

/* Split HOST:PORT. Returns 0 or -1 with a message. */
static int split_listen(const char *s, char *host, size_t hostlen, unsigned short *port)
{
    const char *colon = strrchr(s, ':');
    if (colon == NULL || colon == s || (size_t)(colon - s) >= hostlen) {
        fprintf(stderr, "dtxd: --listen must be HOST:PORT, got \"%s\"\n", s);
        return -1;
    }
    char *end = NULL;
    unsigned long p = strtoul(colon + 1, &end, 10);
    if (colon[1] == '\0' || *end != '\0' || p > 65535) {
        fprintf(stderr, "dtxd: --listen port must be 0-65535, got \"%s\"\n", colon + 1);
        return -1;
    }
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    *port = (unsigned short)p;
    return 0;
}

/* req_limits.url_refused: a URL is acceptable when a transport serves its
 * scheme for that operation. resource:// is named through a branch's
 * "resource" field, not as a URL; amqp:// must name an exchange and routing
 * key (it serves every operation); kafka:// must name a topic and serves
 * msg steps only (a produce has no reply to carry a participant's answer). */
static const char *router_refuses(void *arg, const char *url, enum txn_type type, const char *op)
{
    static const char res[] = PG_RESOURCE_SCHEME "://", amqp[] = AMQP_SCHEME "://";
    static const char no_transport[] = "has a scheme that no transport serves";
    static const char kafka[] = KAFKA_SCHEME "://";
    (void)type;
    (void)op;
    if (strncmp(url, res, sizeof res - 1) == 0 || !transport_router_knows(arg, url))
        return no_transport;
    if (strncmp(url, amqp, sizeof amqp - 1) == 0) {
        struct amqp_target target;
        if (amqp_target_parse(url, &target) != 0)
            return "is not amqp://<exchange>/<routing-key>";
    }
    if (strncmp(url, kafka, sizeof kafka - 1) == 0) {
        struct kafka_target target;
        if (kafka_target_parse(url, &target) != 0)
            return "is not kafka://<topic> (a topic name is 1-249 of A-Z a-z 0-9 . _ -)";
        if (type != TXN_MSG || strcmp(op, "action") != 0)
            return "is a kafka:// target: they serve msg steps only";
    }
    return NULL;
}

/* req_limits.resource_ok */
static int resource_known(void *arg, const char *name)
{
    return pg_resources_has(arg, name);
}

/* ---- PostgreSQL resources ---- */

struct resource_list {
    struct pg_resource_def *defs;
    size_t n, cap;
    char **owned; /* strings to free */
    size_t nowned;
};

static char *keep(struct resource_list *l, char *s)
{
    l->owned = xrealloc(l->owned, (l->nowned + 1) * sizeof *l->owned);
    l->owned[l->nowned++] = s;
    return s;
}

static void add_resource(struct resource_list *l, const char *name, const char *conninfo)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 4;
        l->defs = xrealloc(l->defs, l->cap * sizeof *l->defs);
    }
    l->defs[l->n].name = keep(l, xstrdup(name));
    l->defs[l->n].conninfo = keep(l, xstrdup(conninfo));
    l->n++;
}

static void free_resources(struct resource_list *l)
{
    for (size_t i = 0; i < l->nowned; i++)
        free(l->owned[i]);
    free(l->owned);
    free(l->defs);
}

/* Read `NAME CONNINFO` lines of path into l. Returns 0, or -1 after logging. */
static int read_resources(const char *path, struct resource_list *l)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        slog_fatal("cannot read the resources file", "path=\"%s\" err=\"%s\"", path,
                   strerror(errno));
        return -1;
    }
    char line[4096];
    int lineno = 0;
    while (fgets(line, sizeof line, f) != NULL) {
        lineno++;
        size_t n = strlen(line);
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' '))
            line[--n] = '\0';
        char *p = line + strspn(line, " \t");
        if (*p == '\0' || *p == '#')
            continue;
        char *sep = p + strcspn(p, " \t");
        char *conninfo = sep + strspn(sep, " \t");
        if (*sep == '\0' || *conninfo == '\0') {
            slog_fatal("resources file: a line needs a name and a connection string",
                       "path=\"%s\" line=%d", path, lineno);
            fclose(f);
            return -1;
        }
        *sep = '\0';
        add_resource(l, p, conninfo);
    }
    fclose(f);
    return 0;
}

/* Whether the first n bytes of var are the environment name of an option. */
static int is_option_env(const char *var, size_t n)
{
    for (size_t i = 0; i < NOPTS; i++)
        if (strlen(opt_defs[i].env) == n && strncmp(opt_defs[i].env, var, n) == 0)
            return 1;
    return 0;
}

/* DTX_RESOURCE_<NAME>=<conninfo> from the environment. */
static void env_resources(struct resource_list *l)
{
    static const char prefix[] = "DTX_RESOURCE_";
    for (char **e = environ; *e != NULL; e++) {
        if (strncmp(*e, prefix, sizeof prefix - 1) != 0)
            continue;
        const char *name = *e + sizeof prefix - 1;
        const char *eq = strchr(name, '=');
        if (eq == NULL || eq == name || is_option_env(*e, (size_t)(eq - *e)))
            continue; /* DTX_RESOURCE_SCAN_MS and the like are options */
        char buf[PG_RESOURCE_NAME_MAX + 2];
        size_t len = (size_t)(eq - name);
        if (len >= sizeof buf)
            len = sizeof buf - 1; /* too long: pg_resources_new refuses it by name */
        memcpy(buf, name, len);
        buf[len] = '\0';
        add_resource(l, buf, eq + 1);
    }
}

/* engine outcome -> what the scan does with a prepared transaction */
static enum pg_decision decide_prepared(void *arg, const char *gid, const char *branch)
{
    switch (engine_branch_outcome(arg, gid, branch)) {
    case ENGINE_OUTCOME_ROLLBACK:
        return PG_ROLLBACK;
    case ENGINE_OUTCOME_UNKNOWN:
        return PG_UNKNOWN;
    default:
        return PG_LEAVE;
    }
}

struct daemon {
    uv_loop_t *loop;
    struct store *store;
    struct transport_router router;
    struct engine *engine;
    struct api *api;
    struct http_server *server;
    uv_signal_t sigterm, sigint;
    uv_timer_t grace;
    int stopping;
};

static void on_closed(uv_handle_t *h)
{
    (void)h;
}

/* Last step of shutdown: free everything so the loop runs dry. */
static void on_grace(uv_timer_t *t)
{
    struct daemon *d = t->data;
    http_server_free(d->server);
    d->server = NULL;
    transport_router_free(&d->router);
    engine_free(d->engine);
    d->engine = NULL;
    uv_close((uv_handle_t *)&d->sigterm, on_closed);
    uv_close((uv_handle_t *)&d->sigint, on_closed);
    uv_close((uv_handle_t *)&d->grace, on_closed);
}

static void on_signal(uv_signal_t *s, int signum)
{
    struct daemon *d = s->data;
    if (d->stopping)
        return;
    d->stopping = 1;
    slog_info("shutting down", "signal=%d", signum);
    http_server_quiesce(d->server);
    api_stop(d->api);
    engine_stop(d->engine);
    int rc = store_close(d->store); /* every queued record durable, replies released */
    if (rc != 0)
        slog_error("log close failed", "err=%s detail=\"%s\"", dtx_err_name(rc),
                   store_last_error(d->store));
    /* give the server a moment to write the replies just released */
    uv_timer_start(&d->grace, on_grace, 200, 0);
}

int main(int argc, char **argv)
{
    struct options o;
    int prc = parse_options(argc, argv, &o);
    if (prc != 0)
        return prc > 0 ? 0 : 2;
    char host[256];
    unsigned short port;
    if (split_listen(o.listen, host, sizeof host, &port) != 0)
        return 2;

    struct daemon d = {0};
    d.loop = uv_default_loop();
    const char *errmsg = NULL;
    struct wal_config wc = {
        .dir = o.data_dir,
        .segment_size = o.segment_size,
        .compact_min_bytes = o.compact_min_bytes,
    };
    int rc = wal_open(d.loop, &wc, &d.store, &errmsg);
    if (rc != 0) {
        slog_fatal("cannot open the log", "dir=\"%s\" err=%s detail=\"%s\"", o.data_dir,
                   dtx_err_name(rc), errmsg ? errmsg : "");
        return 1;
    }
    transport_router_init(&d.router);
    struct http_client_config hc = {0};
    struct transport *http = http_client_new(d.loop, &hc);
    if (http == NULL) {
        slog_fatal("cannot start the HTTP client", "%s", "");
        return 1;
    }
    transport_router_add(&d.router, "http", http);
    transport_router_add(&d.router, "https", http);

    struct resource_list rl = {0};
    if (o.resources != NULL && read_resources(o.resources, &rl) != 0)
        return 1;
    env_resources(&rl);
    char perr[256];
    struct pg_resources_config pc = {
        .defs = rl.defs,
        .n = rl.n,
        .connections = (uint32_t)o.resource_connections,
        .scan_ms = o.resource_scan_ms,
        .orphan_grace_ms = o.orphan_grace_ms,
        .scan_timeout_ms = (uint32_t)o.request_timeout_ms,
    };
    struct transport *pg = pg_resources_new(d.loop, &pc, perr, sizeof perr);
    free_resources(&rl);
    if (pg == NULL) {
        slog_fatal("bad resource configuration", "detail=\"%s\"", perr);
        return 1;
    }
    transport_router_add(&d.router, PG_RESOURCE_SCHEME, pg);

    if (o.amqp_url != NULL) {
        struct amqp_config ac = {.url = o.amqp_url,
                                 .reply_queue = o.amqp_reply_queue,
                                 .cacert = o.amqp_cacert,
                                 .cert = o.amqp_cert,
                                 .key = o.amqp_key};
        struct transport *amqp = amqp_transport_new(d.loop, &ac, perr, sizeof perr);
        if (amqp == NULL) {
            slog_fatal("bad --amqp-url", "detail=\"%s\"", perr);
            return 1;
        }
        transport_router_add(&d.router, AMQP_SCHEME, amqp);
    }

    if (o.kafka_brokers != NULL) {
        struct kafka_config kc = {.brokers = o.kafka_brokers,
                                  .options = o.kafka_opts.kv,
                                  .noptions = o.kafka_opts.n,
                                  .message_timeout_ms = (uint32_t)o.request_timeout_ms};
        struct transport *kafka = kafka_transport_new(d.loop, &kc, perr, sizeof perr);
        for (size_t i = 0; i < o.kafka_opts.n; i++)
            free(o.kafka_opts.owned[i]); /* copied, or refused */
        if (kafka == NULL) {
            slog_fatal("bad kafka configuration", "detail=\"%s\"", perr);
            return 1;
        }
        transport_router_add(&d.router, KAFKA_SCHEME, kafka);
    } else if (o.kafka_opts.n > 0) {
        slog_fatal("--kafka-option without --kafka-brokers", "%s", "");
        return 1;
    }

    struct engine_config ec = {.retention_ms = o.retention_s * 1000,
                               .max_branches = (uint32_t)o.max_steps};
    d.engine = engine_new(d.loop, d.store, &d.router, &ec);
    uint64_t t0 = uv_hrtime();
    rc = engine_recover(d.engine);
    if (rc != 0) {
        slog_fatal("cannot recover the log", "dir=\"%s\" err=%s detail=\"%s\"", o.data_dir,
                   dtx_err_name(rc), store_last_error(d.store));
        return 1;
    }
    slog_info("log replayed", "dir=\"%s\" ms=%llu", o.data_dir,
              (unsigned long long)((uv_hrtime() - t0) / 1000000));
    pg_resources_scan_start(pg, decide_prepared, d.engine);

    struct api_config ac = {
        .limits =
            {
                .max_steps = (uint32_t)o.max_steps,
                .max_batch = (uint32_t)o.max_batch,
                .max_wait_ms = (uint32_t)o.max_wait_ms,
                .default_retry = {(uint32_t)o.retry_initial_ms, (uint32_t)o.retry_max_ms,
                                  (uint32_t)o.retry_limit},
                .default_request_timeout_ms = (uint32_t)o.request_timeout_ms,
                .default_wait_timeout_ms =
                    (uint32_t)(o.max_wait_ms < 30000 ? o.max_wait_ms : 30000),
                .url_refused = router_refuses,
                .url_refused_arg = &d.router,
                .resource_ok = resource_known,
                .resource_ok_arg = pg,
            },
    };
    d.api = api_new(d.engine, &ac);
    struct http_server_config sc = {
        .host = host,
        .port = port,
        .max_body = o.max_body,
        .handler = api_handle,
        .handler_arg = d.api,
    };
    d.server = http_server_new(d.loop, &sc, &errmsg);
    if (d.server == NULL) {
        slog_fatal("cannot listen", "listen=%s detail=\"%s\"", o.listen, errmsg ? errmsg : "");
        return 1;
    }
    uv_signal_init(d.loop, &d.sigterm);
    uv_signal_init(d.loop, &d.sigint);
    uv_timer_init(d.loop, &d.grace);
    d.sigterm.data = d.sigint.data = d.grace.data = &d;
    uv_signal_start(&d.sigterm, on_signal, SIGTERM);
    uv_signal_start(&d.sigint, on_signal, SIGINT);
    slog_info("dtxd listening", "version=%s listen=%s:%u data_dir=\"%s\"", DTX_VERSION, host,
              http_server_port(d.server), o.data_dir);

    uv_run(d.loop, UV_RUN_DEFAULT);

    store_free(d.store); /* closes its uv handle: let the loop see that */
    uv_run(d.loop, UV_RUN_DEFAULT);
    api_free(d.api);
    if (uv_loop_close(d.loop) != 0)
        slog_warn("event loop closed with handles still open", "%s", "");
    slog_info("stopped", "%s", "");
    return 0;
}
