/*
 * pg_resource.c - the PostgreSQL resource transport (see pg_resource.h).
 *
 * Each resource has a queue of commands and a few connections. A connection
 * is made when a command needs one (PQconnectStart + PQconnectPoll under a
 * uv_poll), runs one command at a time (PQsendQuery[Params], results read as
 * the socket becomes readable) and stays open for the next. A command that
 * outlives its timeout closes its connection (the server finishes or aborts
 * the statement on its own; every statement here is idempotent) and fails
 * TRANSIENT. A connection that cannot be made fails every queued command of
 * its resource TRANSIENT: the engine retries them with its backoff, so a
 * PostgreSQL that is down is not hammered.
 */
#include "transport/pg_resource.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/crash.h"
#include "common/err.h"
#include "common/slog.h"

#define CONNECT_TIMEOUT_MS 10000
#define XACT_NAME_MAX      200 /* PostgreSQL's limit on a prepared transaction's gid */

enum cmd_kind { CMD_CALL, CMD_SCAN, CMD_FINISH, CMD_SETUP };

/* The vote's query, prepared once per connection (CMD_SETUP): planned on
 * every call it cost PostgreSQL several times the lookup itself. */
#define VOTE_STMT "dtx_vote"
#define VOTE_SQL  "SELECT 1 FROM pg_prepared_xacts WHERE gid = $1 AND database = current_database()"

struct cmd {
    struct cmd *next;
    enum cmd_kind kind;
    char *sql;
    char *param;         /* the one parameter, or NULL */
    int gone_is_success; /* COMMIT/ROLLBACK PREPARED: SQLSTATE 42704 is done */
    int exists_check;    /* prepare: SUCCESS iff a row came back */
    uint32_t timeout_ms;
    call_done_fn cb; /* CMD_CALL */
    void *arg;
    char xact[XACT_NAME_MAX + 1]; /* CMD_FINISH: for the log */
};

struct resource;

struct conn {
    struct resource *r;
    PGconn *pg;
    uv_poll_t *poll; /* NULL when none (owned, closed asynchronously) */
    int fd;
    int connecting;
    struct cmd *cur;
    PGresult *first;  /* cur's first result, kept until its last (NULL) one */
    uv_timer_t timer; /* connect or command timeout */
};

struct resource {
    struct pg_res *t;
    char *name;
    char *conninfo;
    char *where; /* "host=.. port=.. dbname=.. user=..": what the log may say */
    struct conn *conns;
    uint32_t nconns;
    struct cmd *head, *tail;
};

struct pg_res {
    struct transport base;
    uv_loop_t *loop;
    struct resource *res;
    size_t nres;
    uint64_t scan_ms, grace_ms;
    uint32_t scan_timeout_ms;
    pg_decide_fn decide;
    void *decide_arg;
    uv_timer_t scan_timer;
    uv_timer_t kick; /* serves the queues after call() returned */
    int closed;
    size_t open_handles; /* embedded timers not yet closed; freed at 0 */
};

static void conn_next(struct conn *c);
static void conn_send(struct conn *c, struct cmd *cmd);
static void kick(struct pg_res *t);
static void conn_drop(struct conn *c, const char *why);

/* ---- names ----------------------------------------------------------- */

static int xact_char_ok(char ch)
{
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
           ch == '.' || ch == '_' || ch == ':' || ch == '-';
}

static int all_xact_chars(const char *s)
{
    if (*s == '\0')
        return 0;
    for (; *s; s++)
        if (!xact_char_ok(*s))
            return 0;
    return 1;
}

int pg_resource_xact_name(const char *gid, const char *branch, char *out, size_t n)
{
    if (!all_xact_chars(gid) || !all_xact_chars(branch) || strchr(branch, ':') != NULL)
        return DTX_EINVAL;
    int len = snprintf(out, n, "dtx:%s:%s", gid, branch);
    if (len < 0 || (size_t)len >= n || len > XACT_NAME_MAX)
        return DTX_EINVAL;
    return 0;
}

int pg_resource_parse_xact_name(const char *name, char *gid, size_t gn, char *branch, size_t bn)
{
    if (strncmp(name, "dtx:", 4) != 0)
        return DTX_EINVAL;
    const char *g = name + 4;
    const char *colon = strrchr(g, ':');
    if (colon == NULL || colon == g || colon[1] == '\0')
        return DTX_EINVAL;
    size_t glen = (size_t)(colon - g), blen = strlen(colon + 1);
    if (glen >= gn || blen >= bn)
        return DTX_EINVAL;
    memcpy(gid, g, glen);
    gid[glen] = '\0';
    memcpy(branch, colon + 1, blen + 1);
    return all_xact_chars(gid) && all_xact_chars(branch) ? 0 : DTX_EINVAL;
}

/* ---- commands -------------------------------------------------------- */

static void cmd_free(struct cmd *c)
{
    free(c->sql);
    free(c->param);
    free(c);
}

/* Finish a command with an outcome (status: 0, error: a description). */
static void cmd_done(struct resource *r, struct cmd *c, enum call_outcome outcome,
                     const char *error)
{
    if (c->kind == CMD_CALL) {
        struct call_result res = {.outcome = outcome, .status = 0, .error = error};
        c->cb(c->arg, &res);
    } else if (c->kind == CMD_FINISH && outcome == CALL_SUCCESS) {
        slog_info("recovery finished a prepared transaction", "resource=%s xact=%s sql=\"%s\"",
                  r->name, c->xact, c->sql);
    } else if (outcome != CALL_SUCCESS) {
        slog_warn("resource command failed", "resource=%s sql=\"%.60s\" err=\"%s\"", r->name,
                  c->sql, error ? error : "");
    }
    cmd_free(c);
}

/* Fail every queued command of r (a connection could not be made). */
static void fail_queue(struct resource *r, const char *why)
{
    struct cmd *c = r->head;
    r->head = r->tail = NULL;
    while (c != NULL) {
        struct cmd *next = c->next;
        cmd_done(r, c, CALL_TRANSIENT, why);
        c = next;
    }
}

static void append(struct resource *r, struct cmd *c)
{
    c->next = NULL;
    if (r->tail)
        r->tail->next = c;
    else
        r->head = c;
    r->tail = c;
}

/* Hand r's queued commands to its idle open connections; for what is left,
 * start connections that are down (one per command, as the pool allows). */
static void dispatch(struct resource *r)
{
    for (uint32_t i = 0; i < r->nconns && r->head != NULL; i++) {
        struct conn *k = &r->conns[i];
        if (k->pg != NULL && !k->connecting && k->cur == NULL)
            conn_next(k);
    }
    size_t waiting = 0, connecting = 0;
    for (struct cmd *c = r->head; c != NULL; c = c->next)
        waiting++;
    for (uint32_t i = 0; i < r->nconns; i++)
        connecting += r->conns[i].connecting;
    for (uint32_t i = 0; i < r->nconns && connecting < waiting && r->head != NULL; i++) {
        struct conn *k = &r->conns[i];
        if (k->pg == NULL) {
            connecting++;
            conn_next(k);
        }
    }
}

static void enqueue(struct resource *r, struct cmd *c)
{
    append(r, c);
    dispatch(r);
}

/* ---- connections ------------------------------------------------------ */

static void on_poll_closed(uv_handle_t *h)
{
    free(h);
}

static void poll_stop(struct conn *c)
{
    if (c->poll == NULL)
        return;
    uv_poll_stop(c->poll);
    uv_close((uv_handle_t *)c->poll, on_poll_closed);
    c->poll = NULL;
    c->fd = -1;
}

static void on_poll(uv_poll_t *p, int status, int events);

/* Watch PQsocket for events (a new poll if the socket changed). */
static void poll_watch(struct conn *c, int events)
{
    int fd = PQsocket(c->pg);
    if (c->poll != NULL && fd != c->fd)
        poll_stop(c);
    if (c->poll == NULL) {
        c->poll = xmalloc(sizeof *c->poll);
        if (uv_poll_init(c->r->t->loop, c->poll, fd) != 0) {
            free(c->poll);
            c->poll = NULL;
            conn_drop(c, "cannot watch the connection's socket");
            return;
        }
        c->poll->data = c;
        c->fd = fd;
    }
    uv_poll_start(c->poll, events, on_poll);
}

static void timer_stop(struct conn *c)
{
    uv_timer_stop(&c->timer);
}

/* Close c's connection; its current command fails TRANSIENT with why. */
static void conn_drop(struct conn *c, const char *why)
{
    struct resource *r = c->r;
    timer_stop(c);
    poll_stop(c);
    if (c->pg != NULL)
        PQfinish(c->pg);
    c->pg = NULL;
    PQclear(c->first);
    c->first = NULL;
    int was_connecting = c->connecting;
    c->connecting = 0;
    struct cmd *cur = c->cur;
    c->cur = NULL;
    if (cur != NULL)
        cmd_done(r, cur, CALL_TRANSIENT, why);
    if (was_connecting) {
        slog_warn("cannot connect to resource", "resource=%s %s err=\"%s\"", r->name, r->where,
                  why);
        fail_queue(r, why);
    } else if (r->head != NULL) {
        kick(r->t); /* what is queued needs another connection */
    }
}

static void on_kick(uv_timer_t *h);

/* Serve every queue from the loop soon (never from inside call()). */
static void kick(struct pg_res *t)
{
    if (!t->closed && !uv_is_active((uv_handle_t *)&t->kick))
        uv_timer_start(&t->kick, on_kick, 0, 0);
}

static void on_timer(uv_timer_t *h)
{
    struct conn *c = h->data;
    char why[96];
    if (c->connecting)
        snprintf(why, sizeof why, "connecting to resource %s timed out after %d ms", c->r->name,
                 CONNECT_TIMEOUT_MS);
    else
        snprintf(why, sizeof why, "resource %s: no answer within %u ms", c->r->name,
                 c->cur ? c->cur->timeout_ms : 0);
    conn_drop(c, why);
}

/* libpq's last error, one line, for a result description. */
static void pg_error(PGconn *pg, char *out, size_t n)
{
    snprintf(out, n, "%s", PQerrorMessage(pg));
    char *nl = strpbrk(out, "\r\n");
    if (nl)
        *nl = '\0';
}

static void conn_start_connect(struct conn *c)
{
    struct resource *r = c->r;
    c->pg = PQconnectStart(r->conninfo);
    if (c->pg == NULL) {
        fprintf(stderr, "level=fatal msg=\"out of memory\" where=PQconnectStart\n");
        abort();
    }
    c->connecting = 1;
    if (PQstatus(c->pg) == CONNECTION_BAD) {
        char why[256];
        pg_error(c->pg, why, sizeof why);
        conn_drop(c, why);
        return;
    }
    uv_timer_start(&c->timer, on_timer, CONNECT_TIMEOUT_MS, 0);
    poll_watch(c, UV_WRITABLE);
}

static void conn_connect_step(struct conn *c)
{
    switch (PQconnectPoll(c->pg)) {
    case PGRES_POLLING_READING:
        poll_watch(c, UV_READABLE);
        return;
    case PGRES_POLLING_WRITING:
        poll_watch(c, UV_WRITABLE);
        return;
    case PGRES_POLLING_OK:
        c->connecting = 0;
        timer_stop(c);
        if (PQsetnonblocking(c->pg, 1) != 0) {
            conn_drop(c, "cannot make the connection non-blocking");
            return;
        }
        slog_debug("connected to resource", "resource=%s %s", c->r->name, c->r->where);
        poll_watch(c, UV_READABLE);
        struct cmd *setup = xcalloc(1, sizeof *setup);
        setup->kind = CMD_SETUP;
        setup->sql = xstrdup(VOTE_SQL);
        setup->timeout_ms = c->r->t->scan_timeout_ms;
        conn_send(c, setup); /* the queue goes on once it is prepared */
        return;
    default: {
        char why[256];
        pg_error(c->pg, why, sizeof why);
        conn_drop(c, why);
        return;
    }
    }
}

/* Give c the next queued command, connecting first if needed. */
static void conn_next(struct conn *c)
{
    struct resource *r = c->r;
    if (c->cur != NULL || c->connecting || r->head == NULL)
        return;
    if (c->pg == NULL) {
        conn_start_connect(c);
        return;
    }
    struct cmd *cmd = r->head;
    r->head = cmd->next;
    if (r->head == NULL)
        r->tail = NULL;
    conn_send(c, cmd);
}

/* Send cmd on c (open, idle). */
static void conn_send(struct conn *c, struct cmd *cmd)
{
    if (cmd->gone_is_success)
        CRASH_POINT(cmd->sql[0] == 'C' ? "pg.before_commit_prepared"
                                       : "pg.before_rollback_prepared");
    c->cur = cmd;
    const char *const *params = (const char *const *)&cmd->param;
    int ok;
    if (cmd->kind == CMD_SETUP)
        ok = PQsendPrepare(c->pg, VOTE_STMT, VOTE_SQL, 1, NULL);
    else if (cmd->exists_check)
        ok = PQsendQueryPrepared(c->pg, VOTE_STMT, 1, params, NULL, NULL, 0);
    else if (cmd->param != NULL)
        ok = PQsendQueryParams(c->pg, cmd->sql, 1, NULL, params, NULL, NULL, 0);
    else
        ok = PQsendQuery(c->pg, cmd->sql);
    if (!ok) {
        char why[256];
        pg_error(c->pg, why, sizeof why);
        conn_drop(c, why); /* a broken connection: the command fails, the next one reconnects */
        return;
    }
    uv_timer_start(&c->timer, on_timer, cmd->timeout_ms, 0);
    int f = PQflush(c->pg);
    poll_watch(c, f == 1 ? UV_READABLE | UV_WRITABLE : UV_READABLE);
}

static void scan_rows(struct resource *r, PGresult *res);

/* The command's results are all in: res is the first non-NULL result. */
static void conn_finish_cmd(struct conn *c, PGresult *res)
{
    struct resource *r = c->r;
    struct cmd *cmd = c->cur;
    c->cur = NULL;
    timer_stop(c);
    ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (cmd->gone_is_success)
        CRASH_POINT(cmd->sql[0] == 'C' ? "pg.after_commit_prepared" : "pg.after_rollback_prepared");
    enum cmd_kind cmd_kind = cmd->kind; /* cmd is freed by cmd_done */
    int ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
    char why[320];
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
        if (cmd->kind == CMD_SCAN) {
            scan_rows(r, res);
            cmd_done(r, cmd, CALL_SUCCESS, NULL);
        } else if (cmd->exists_check && PQntuples(res) == 0) {
            snprintf(why, sizeof why, "no prepared transaction %s in resource %s", cmd->param,
                     r->name);
            cmd_done(r, cmd, CALL_FAILURE, why);
        } else {
            cmd_done(r, cmd, CALL_SUCCESS, NULL);
        }
    } else {
        const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
        if (cmd->gone_is_success && state != NULL && strcmp(state, "42704") == 0) {
            cmd_done(r, cmd, CALL_SUCCESS, NULL); /* finished before */
        } else {
            const char *msg = res ? PQresultErrorMessage(res) : PQerrorMessage(c->pg);
            snprintf(why, sizeof why, "resource %s: %s", r->name, msg && *msg ? msg : "no result");
            char *nl = strpbrk(why, "\r\n");
            if (nl)
                *nl = '\0';
            cmd_done(r, cmd, CALL_TRANSIENT, why);
        }
    }
    if (cmd_kind == CMD_SETUP && !ok) {
        conn_drop(c, "cannot prepare the vote's statement");
        return;
    }
    if (PQstatus(c->pg) == CONNECTION_BAD) {
        conn_drop(c, "the connection broke");
        return;
    }
    conn_next(c);
}

static void conn_read(struct conn *c)
{
    if (!PQconsumeInput(c->pg)) {
        char why[256];
        pg_error(c->pg, why, sizeof why);
        conn_drop(c, why);
        return;
    }
    if (c->cur == NULL) {
        /* nothing asked: a notice, or the server closing the connection */
        if (PQstatus(c->pg) == CONNECTION_BAD)
            conn_drop(c, "the connection broke");
        return;
    }
    while (!PQisBusy(c->pg)) {
        PGresult *res = PQgetResult(c->pg);
        if (res == NULL) {
            /* the command is complete: judge it by its first result */
            PGresult *first = c->first;
            c->first = NULL;
            conn_finish_cmd(c, first);
            PQclear(first);
            return;
        }
        if (c->first == NULL)
            c->first = res;
        else
            PQclear(res);
    }
}

static void on_poll(uv_poll_t *p, int status, int events)
{
    struct conn *c = p->data;
    if (status < 0) {
        conn_drop(c, uv_strerror(status));
        return;
    }
    if (c->connecting) {
        conn_connect_step(c);
        return;
    }
    if (events & UV_WRITABLE) {
        int f = PQflush(c->pg);
        if (f < 0) {
            conn_drop(c, "cannot send to the resource");
            return;
        }
        if (f == 0)
            poll_watch(c, UV_READABLE);
    }
    if (events & UV_READABLE)
        conn_read(c);
}

/* ---- the transport ------------------------------------------------------ */

static struct resource *find(const struct pg_res *t, const char *name)
{
    for (size_t i = 0; i < t->nres; i++)
        if (strcmp(t->res[i].name, name) == 0)
            return &t->res[i];
    return NULL;
}

static void on_kick(uv_timer_t *h)
{
    struct pg_res *t = h->data;
    for (size_t i = 0; i < t->nres; i++)
        dispatch(&t->res[i]);
}

static int pg_call(struct transport *tp, const struct call_req *req, call_done_fn cb, void *arg)
{
    struct pg_res *t = (struct pg_res *)tp;
    static const char prefix[] = PG_RESOURCE_SCHEME "://";
    if (t->closed)
        return DTX_ECLOSED;
    if (strncmp(req->url, prefix, sizeof prefix - 1) != 0)
        return DTX_EINVAL;
    struct resource *r = find(t, req->url + sizeof prefix - 1);
    char name[XACT_NAME_MAX + 1];
    if (r == NULL || req->timeout_ms == 0 ||
        pg_resource_xact_name(req->gid, req->branch, name, sizeof name) != 0)
        return DTX_EINVAL;
    struct cmd *c = xcalloc(1, sizeof *c);
    c->kind = CMD_CALL;
    c->cb = cb;
    c->arg = arg;
    c->timeout_ms = req->timeout_ms;
    if (strcmp(req->op, "prepare") == 0) {
        c->sql = xstrdup(VOTE_SQL); /* run as the prepared VOTE_STMT */
        c->param = xstrdup(name);
        c->exists_check = 1;
    } else if (strcmp(req->op, "commit") == 0 || strcmp(req->op, "rollback") == 0) {
        char sql[XACT_NAME_MAX + 32];
        /* the name has only [A-Za-z0-9._:-] (checked above): safe in quotes */
        snprintf(sql, sizeof sql, "%s PREPARED '%s'",
                 strcmp(req->op, "commit") == 0 ? "COMMIT" : "ROLLBACK", name);
        c->sql = xstrdup(sql);
        c->gone_is_success = 1;
    } else {
        free(c);
        return DTX_EINVAL; /* a resource branch is 2pc only */
    }
    /* never answer inside call(): the queue is served from the loop */
    append(r, c);
    kick(t);
    return 0;
}

/* ---- recovery scan ------------------------------------------------------ */

static void rollback_xact(struct resource *r, const char *xact)
{
    struct cmd *c = xcalloc(1, sizeof *c);
    char sql[XACT_NAME_MAX + 32];
    snprintf(sql, sizeof sql, "ROLLBACK PREPARED '%s'", xact);
    c->kind = CMD_FINISH;
    c->sql = xstrdup(sql);
    c->gone_is_success = 1;
    c->timeout_ms = r->t->scan_timeout_ms;
    snprintf(c->xact, sizeof c->xact, "%s", xact);
    enqueue(r, c);
}

static void scan_rows(struct resource *r, PGresult *res)
{
    struct pg_res *t = r->t;
    int n = PQntuples(res);
    for (int i = 0; i < n; i++) {
        const char *xact = PQgetvalue(res, i, 0);
        long long age_ms = atoll(PQgetvalue(res, i, 1));
        char gid[XACT_NAME_MAX + 1], branch[XACT_NAME_MAX + 1];
        if (pg_resource_parse_xact_name(xact, gid, sizeof gid, branch, sizeof branch) != 0 ||
            strlen(xact) > XACT_NAME_MAX) {
            slog_warn("prepared transaction with a dtx: name dtx did not make; left alone",
                      "resource=%s xact=\"%.200s\"", r->name, xact);
            continue;
        }
        enum pg_decision d = t->decide(t->decide_arg, gid, branch);
        if (d == PG_ROLLBACK)
            rollback_xact(r, xact);
        else if (d == PG_UNKNOWN && age_ms >= 0 && (uint64_t)age_ms >= t->grace_ms) {
            slog_warn("rolling back a prepared transaction no transaction knows (presumed abort)",
                      "resource=%s xact=%s age_ms=%lld", r->name, xact, age_ms);
            rollback_xact(r, xact);
        }
    }
}

static void scan_all(struct pg_res *t)
{
    for (size_t i = 0; i < t->nres; i++) {
        struct cmd *c = xcalloc(1, sizeof *c);
        c->kind = CMD_SCAN;
        c->sql = xstrdup("SELECT gid, (extract(epoch from now() - prepared) * 1000)::bigint"
                         " FROM pg_prepared_xacts"
                         " WHERE gid LIKE 'dtx:%' AND database = current_database()");
        c->timeout_ms = t->scan_timeout_ms;
        enqueue(&t->res[i], c);
    }
}

static void on_scan_timer(uv_timer_t *h)
{
    struct pg_res *t = h->data;
    if (!t->closed)
        scan_all(t);
}

void pg_resources_scan_start(struct transport *tp, pg_decide_fn decide, void *arg)
{
    struct pg_res *t = (struct pg_res *)tp;
    t->decide = decide;
    t->decide_arg = arg;
    if (t->nres == 0)
        return;
    scan_all(t);
    uv_timer_start(&t->scan_timer, on_scan_timer, t->scan_ms, t->scan_ms);
    uv_unref((uv_handle_t *)&t->scan_timer);
}

int pg_resources_has(const struct transport *tp, const char *name)
{
    return find((const struct pg_res *)tp, name) != NULL;
}

/* ---- lifecycle ------------------------------------------------------------ */

static void release(struct pg_res *t)
{
    for (size_t i = 0; i < t->nres; i++) {
        free(t->res[i].name);
        free(t->res[i].conninfo);
        free(t->res[i].where);
        free(t->res[i].conns);
    }
    free(t->res);
    free(t);
}

/* Every embedded timer's close counts down; the last one frees it all. */
static void handle_closed(struct pg_res *t)
{
    if (--t->open_handles == 0)
        release(t);
}

/* the scan and kick timers (data: the transport) */
static void on_scan_timer_closed(uv_handle_t *h)
{
    handle_closed(h->data);
}

static void on_conn_timer_closed(uv_handle_t *h)
{
    struct conn *c = h->data;
    handle_closed(c->r->t);
}

static void pg_free(struct transport *tp)
{
    struct pg_res *t = (struct pg_res *)tp;
    t->closed = 1;
    for (size_t i = 0; i < t->nres; i++) {
        struct resource *r = &t->res[i];
        for (uint32_t k = 0; k < r->nconns; k++) {
            struct conn *c = &r->conns[k];
            poll_stop(c);
            if (c->pg)
                PQfinish(c->pg);
            c->pg = NULL;
            if (c->cur)
                cmd_free(c->cur); /* abandoned: no callback after free */
            c->cur = NULL;
            PQclear(c->first);
            c->first = NULL;
            uv_close((uv_handle_t *)&c->timer, on_conn_timer_closed);
        }
        for (struct cmd *c = r->head, *next; c != NULL; c = next) {
            next = c->next;
            cmd_free(c);
        }
        r->head = r->tail = NULL;
    }
    uv_close((uv_handle_t *)&t->scan_timer, on_scan_timer_closed);
    uv_close((uv_handle_t *)&t->kick, on_scan_timer_closed);
}

static const struct transport_ops pg_ops = {.call = pg_call, .free = pg_free};

static int name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > PG_RESOURCE_NAME_MAX)
        return 0;
    for (; *s; s++)
        if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') ||
              *s == '_' || *s == '.' || *s == '-'))
            return 0;
    return 1;
}

/* "host=h port=p dbname=d user=u" from a conninfo: never the password. */
static char *describe(const char *conninfo, char *err, size_t errlen)
{
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &perr);
    if (opts == NULL) {
        snprintf(err, errlen, "%s", perr ? perr : "cannot parse the connection string");
        char *nl = strpbrk(err, "\r\n");
        if (nl)
            *nl = '\0';
        PQfreemem(perr);
        return NULL;
    }
    static const char *const shown[] = {"host", "port", "dbname", "user"};
    char out[512] = "";
    size_t len = 0;
    for (size_t k = 0; k < sizeof shown / sizeof shown[0]; k++)
        for (PQconninfoOption *o = opts; o->keyword != NULL; o++)
            if (strcmp(o->keyword, shown[k]) == 0 && o->val != NULL && *o->val && len < sizeof out)
                len += (size_t)snprintf(out + len, sizeof out - len, "%s%s=%s", len ? " " : "",
                                        o->keyword, o->val);
    PQconninfoFree(opts);
    return xstrdup(out);
}

struct transport *pg_resources_new(uv_loop_t *loop, const struct pg_resources_config *cfg,
                                   char *err, size_t errlen)
{
    struct pg_res *t = xcalloc(1, sizeof *t);
    t->base.ops = &pg_ops;
    t->base.scheme = PG_RESOURCE_SCHEME;
    t->loop = loop;
    t->scan_ms = cfg->scan_ms ? cfg->scan_ms : 10000;
    t->grace_ms = cfg->orphan_grace_ms;
    t->scan_timeout_ms = cfg->scan_timeout_ms ? cfg->scan_timeout_ms : 10000;
    uv_timer_init(loop, &t->scan_timer);
    t->scan_timer.data = t;
    uv_timer_init(loop, &t->kick);
    t->kick.data = t;
    t->open_handles = 2;
    t->res = xcalloc(cfg->n ? cfg->n : 1, sizeof *t->res);
    for (size_t i = 0; i < cfg->n; i++) {
        const struct pg_resource_def *d = &cfg->defs[i];
        struct resource *r = &t->res[i];
        if (!name_ok(d->name)) {
            snprintf(err, errlen,
                     "resource name \"%.80s\" must be 1 to %d characters of "
                     "A-Z a-z 0-9 _ . -",
                     d->name, PG_RESOURCE_NAME_MAX);
            goto fail;
        }
        if (find(t, d->name) != NULL) {
            snprintf(err, errlen, "resource %s is defined twice", d->name);
            goto fail;
        }
        char perr[256];
        r->where = describe(d->conninfo, perr, sizeof perr);
        if (r->where == NULL) {
            snprintf(err, errlen, "resource %s: %s", d->name, perr);
            goto fail;
        }
        r->t = t;
        r->name = xstrdup(d->name);
        r->conninfo = xstrdup(d->conninfo);
        r->nconns = cfg->connections ? cfg->connections : 1;
        r->conns = xcalloc(r->nconns, sizeof *r->conns);
        for (uint32_t k = 0; k < r->nconns; k++) {
            struct conn *c = &r->conns[k];
            c->r = r;
            c->fd = -1;
            uv_timer_init(loop, &c->timer);
            c->timer.data = c;
            t->open_handles++;
        }
        t->nres = i + 1;
    }
    for (size_t i = 0; i < t->nres; i++)
        slog_info("resource", "name=%s %s connections=%u", t->res[i].name, t->res[i].where,
                  t->res[i].nconns);
    return &t->base;
fail:
    pg_free(&t->base);
    return NULL;
}
