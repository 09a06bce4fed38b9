/*
 * test_http.c - http_server and http_client against each other on loopback.
 *
 * One uv loop runs both ends; nothing is mocked. The server's handler routes
 * on the path:
 *   /echo          records what arrived, answers 200
 *   /status/N      answers N at once
 *   /delay/MS      answers 200 after MS milliseconds (a suspended connection)
 * Raw sockets cover what the client cannot send (GET with a query string,
 * chunked bodies).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "api/http_server.h"
#include "common/alloc.h"
#include "common/err.h"
#include "transport/http_client.h"

#define MAX_BODY 1024
#define TRACE    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

struct seen {
    char method[16], path[128], body[MAX_BODY + 1];
    size_t body_len;
    char gid[64], branch[64], op[64], type[64], idem[256], trace[128], ctype[64];
    int has_expect;
    char q_a[64], q_b[64], q_missing_is_null;
};

struct fx {
    uv_loop_t loop;
    struct http_server *srv;
    struct transport *cli;
    char base[64]; /* http://127.0.0.1:port */
    unsigned short port;
    struct seen seen;
    int handled; /* requests that reached the handler */
};

/* ---- the server side ---- */

static void cp(char *dst, size_t n, const char *src)
{
    snprintf(dst, n, "%s", src != NULL ? src : "(null)");
}

struct delayed {
    uv_timer_t t;
    struct http_req *r;
};

static void free_handle(uv_handle_t *h)
{
    free(h->data);
}

static void on_delay(uv_timer_t *t)
{
    struct delayed *d = t->data;
    http_req_respond(d->r, 200, "application/json", xstrdup("{}"), 2);
    t->data = d;
    uv_close((uv_handle_t *)t, free_handle);
}

static void handler(void *arg, struct http_req *r)
{
    struct fx *f = arg;
    const char *path = http_req_path(r);
    f->handled++;
    if (strcmp(path, "/echo") == 0 || strcmp(path, "/get") == 0) {
        struct seen *s = &f->seen;
        cp(s->method, sizeof s->method, http_req_method(r));
        cp(s->path, sizeof s->path, path);
        s->body_len = http_req_body_len(r);
        memcpy(s->body, http_req_body(r), s->body_len + 1);
        cp(s->gid, sizeof s->gid, http_req_header(r, "dtx-gid"));
        cp(s->branch, sizeof s->branch, http_req_header(r, "DTX-BRANCH"));
        cp(s->op, sizeof s->op, http_req_header(r, "Dtx-Op"));
        cp(s->type, sizeof s->type, http_req_header(r, "Dtx-Type"));
        cp(s->idem, sizeof s->idem, http_req_header(r, "Idempotency-Key"));
        cp(s->trace, sizeof s->trace, http_req_header(r, "traceparent"));
        cp(s->ctype, sizeof s->ctype, http_req_header(r, "Content-Type"));
        s->has_expect = http_req_header(r, "Expect") != NULL;
        cp(s->q_a, sizeof s->q_a, http_req_query(r, "a"));
        cp(s->q_b, sizeof s->q_b, http_req_query(r, "b"));
        s->q_missing_is_null = http_req_query(r, "zz") == NULL;
        http_req_respond(r, 200, "application/json", xstrdup("{\"ok\":true}"), 11);
        return;
    }
    if (strncmp(path, "/status/", 8) == 0) {
        http_req_respond(r, atoi(path + 8), "application/json", xstrdup("{\"why\":\"test\"}"), 14);
        return;
    }
    if (strncmp(path, "/delay/", 7) == 0) {
        struct delayed *d = xmalloc(sizeof *d);
        d->r = r;
        uv_timer_init(&f->loop, &d->t);
        d->t.data = d;
        uv_timer_start(&d->t, on_delay, (uint64_t)atoi(path + 7), 0);
        return;
    }
    http_req_respond(r, 404, NULL, NULL, 0);
}

/* ---- the client side ---- */

struct done {
    int n;
    struct call_result res;
    char err[512];
};

static int total_done; /* callbacks run, all calls together */

static void on_done(void *arg, const struct call_result *res)
{
    struct done *d = arg;
    total_done++;
    d->n++;
    d->res = *res;
    if (res->error != NULL) {
        snprintf(d->err, sizeof d->err, "%s", res->error);
        d->res.error = d->err;
    }
}

static void on_wake(uv_timer_t *t)
{
    (void)t;
}

/*
 * Run the loop until *count reaches target. A ticking timer keeps
 * UV_RUN_ONCE from blocking in poll after a timer callback did the work
 * (libuv 1.44 runs due timers before polling, not after).
 */
static void run_until(struct fx *f, const int *count, int target)
{
    uv_timer_t tick;
    uv_timer_init(&f->loop, &tick);
    uv_timer_start(&tick, on_wake, 5, 5);
    while (*count < target)
        uv_run(&f->loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&tick, NULL);
    uv_run(&f->loop, UV_RUN_NOWAIT);
}

/* Run the loop for about ms milliseconds. */
static void run_for(struct fx *f, uint64_t ms)
{
    uv_timer_t w;
    uint64_t end = uv_now(&f->loop) + ms;
    uv_timer_init(&f->loop, &w);
    while (uv_now(&f->loop) < end) {
        uv_timer_start(&w, on_wake, end - uv_now(&f->loop), 0);
        uv_run(&f->loop, UV_RUN_ONCE);
    }
    uv_close((uv_handle_t *)&w, NULL);
    uv_run(&f->loop, UV_RUN_NOWAIT);
}

static struct call_req mkreq(struct fx *f, char *url, size_t n, const char *path)
{
    snprintf(url, n, "%s%s", f->base, path);
    struct call_req req = {
        .url = url,
        .gid = "g-1",
        .branch = "b-01",
        .op = "action",
        .txn_type = "saga",
        .traceparent = TRACE,
        .body = "{\"amount\":30}",
        .body_len = 13,
        .timeout_ms = 3000,
    };
    return req;
}

static void call_sync(struct fx *f, const char *path, struct done *d)
{
    char url[128];
    struct call_req req = mkreq(f, url, sizeof url, path);
    memset(d, 0, sizeof *d);
    assert_int_equal(f->cli->ops->call(f->cli, &req, on_done, d), 0);
    run_until(f, &d->n, 1);
}

/* Established client-side connections to the server's port. */
static int established_to(unsigned short port)
{
    FILE *fp = fopen("/proc/net/tcp", "r");
    char line[512];
    int n = 0;
    if (fp == NULL)
        return -1;
    while (fgets(line, sizeof line, fp) != NULL) {
        unsigned lport, rport, st;
        if (sscanf(line, " %*d: %*x:%x %*x:%x %x", &lport, &rport, &st) == 3 && rport == port &&
            st == 1)
            n++;
    }
    fclose(fp);
    return n;
}

static void count_live_poll(uv_handle_t *h, void *arg)
{
    if (h->type == UV_POLL && uv_is_active(h) && uv_has_ref(h))
        ++*(int *)arg;
}

/* uv_poll handles that keep the loop alive. */
static int live_polls(struct fx *f)
{
    int n = 0;
    uv_walk(&f->loop, count_live_poll, &n);
    return n;
}

/* ---- raw exchanges ---- */

/* Send req on a new connection and read until the server closes it. */
static void raw_exchange(struct fx *f, const char *req, char *out, size_t n)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(f->port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_true(fd >= 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(send(fd, req, strlen(req), 0), (ssize_t)strlen(req));
    size_t got = 0;
    for (;;) {
        uv_run(&f->loop, UV_RUN_NOWAIT);
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 5) <= 0)
            continue;
        ssize_t k = recv(fd, out + got, n - 1 - got, 0);
        if (k <= 0)
            break;
        got += (size_t)k;
        if (got == n - 1)
            break;
    }
    out[got] = '\0';
    close(fd);
}

/*
 * A raw HTTP server that answers 200 and then closes the connection 30 ms
 * later, as a participant's idle timeout would.
 */
struct raw_srv {
    uv_tcp_t listen;
    unsigned short port;
    int conns, answered;
};

struct raw_conn {
    uv_tcp_t tcp;
    uv_timer_t idle;
    struct raw_srv *srv;
    int open_handles;
    size_t len;
    char buf[8192];
};

static void raw_conn_closed(uv_handle_t *h)
{
    struct raw_conn *c = h->data;
    if (--c->open_handles == 0)
        free(c);
}

static void raw_idle_close(uv_timer_t *t)
{
    struct raw_conn *c = t->data;
    uv_close((uv_handle_t *)&c->tcp, raw_conn_closed);
    uv_close((uv_handle_t *)&c->idle, raw_conn_closed);
}

static void raw_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    struct raw_conn *c = h->data;
    (void)hint;
    *b = uv_buf_init(c->buf + c->len, (unsigned)(sizeof c->buf - 1 - c->len));
}

static void raw_on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    static char ok[] = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    struct raw_conn *c = st->data;
    (void)b;
    if (n < 0) {
        uv_read_stop(st);
        return;
    }
    c->len += (size_t)n;
    c->buf[c->len] = '\0';
    char *end = strstr(c->buf, "\r\n\r\n");
    char *cl = strcasestr(c->buf, "Content-Length:");
    if (end == NULL ||
        (cl != NULL && c->len < (size_t)(end + 4 - c->buf) + strtoul(cl + 15, NULL, 10)))
        return;
    c->len = 0;
    uv_buf_t out = uv_buf_init(ok, sizeof ok - 1);
    uv_try_write(st, &out, 1);
    c->srv->answered++;
    uv_timer_start(&c->idle, raw_idle_close, 30, 0);
}

static void raw_on_conn(uv_stream_t *l, int status)
{
    struct raw_srv *r = l->data;
    struct raw_conn *c = xcalloc(1, sizeof *c);
    assert_int_equal(status, 0);
    c->srv = r;
    c->open_handles = 2;
    uv_tcp_init(l->loop, &c->tcp);
    uv_timer_init(l->loop, &c->idle);
    c->tcp.data = c->idle.data = c;
    assert_int_equal(uv_accept(l, (uv_stream_t *)&c->tcp), 0);
    r->conns++;
    uv_read_start((uv_stream_t *)&c->tcp, raw_alloc, raw_on_read);
}

static void raw_srv_start(uv_loop_t *loop, struct raw_srv *r)
{
    struct sockaddr_in a;
    struct sockaddr_storage got;
    int len = sizeof got;
    memset(r, 0, sizeof *r);
    uv_ip4_addr("127.0.0.1", 0, &a);
    uv_tcp_init(loop, &r->listen);
    r->listen.data = r;
    assert_int_equal(uv_tcp_bind(&r->listen, (struct sockaddr *)&a, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&r->listen, 16, raw_on_conn), 0);
    assert_int_equal(uv_tcp_getsockname(&r->listen, (struct sockaddr *)&got, &len), 0);
    r->port = ntohs(((struct sockaddr_in *)&got)->sin_port);
}

/* ---- fixture ---- */

static int setup(void **state)
{
    struct fx *f = xcalloc(1, sizeof *f);
    const char *err = NULL;
    assert_int_equal(uv_loop_init(&f->loop), 0);
    struct http_server_config sc = {
        .host = "127.0.0.1",
        .port = 0,
        .max_body = MAX_BODY,
        .handler = handler,
        .handler_arg = f,
    };
    f->srv = http_server_new(&f->loop, &sc, &err);
    assert_non_null(f->srv);
    f->port = http_server_port(f->srv);
    assert_true(f->port != 0);
    snprintf(f->base, sizeof f->base, "http://127.0.0.1:%u", f->port);
    struct http_client_config cc = {0};
    f->cli = http_client_new(&f->loop, &cc);
    assert_non_null(f->cli);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    if (f->cli != NULL)
        f->cli->ops->free(f->cli);
    if (f->srv != NULL)
        http_server_free(f->srv);
    uv_run(&f->loop, UV_RUN_DEFAULT); /* late answers, close callbacks */
    assert_int_equal(uv_loop_close(&f->loop), 0);
    free(f);
    return 0;
}

/* ---- tests ---- */

static void test_post_delivers_body_and_headers(void **state)
{
    struct fx *f = *state;
    struct done d;
    call_sync(f, "/echo", &d);
    assert_int_equal(d.res.outcome, CALL_SUCCESS);
    assert_int_equal(d.res.status, 200);
    assert_null(d.res.error);
    struct seen *s = &f->seen;
    assert_string_equal(s->method, "POST");
    assert_string_equal(s->path, "/echo");
    assert_int_equal(s->body_len, 13);
    assert_string_equal(s->body, "{\"amount\":30}");
    assert_string_equal(s->gid, "g-1");
    assert_string_equal(s->branch, "b-01");
    assert_string_equal(s->op, "action");
    assert_string_equal(s->type, "saga");
    assert_string_equal(s->idem, "g-1/b-01/action");
    assert_string_equal(s->trace, TRACE);
    assert_string_equal(s->ctype, "application/json");
    assert_false(s->has_expect);
}

static void test_no_traceparent_no_body(void **state)
{
    struct fx *f = *state;
    char url[128];
    struct call_req req = mkreq(f, url, sizeof url, "/echo");
    struct done d = {0};
    req.traceparent = NULL;
    req.body = NULL;
    req.body_len = 0;
    assert_int_equal(f->cli->ops->call(f->cli, &req, on_done, &d), 0);
    run_until(f, &d.n, 1);
    assert_int_equal(d.res.outcome, CALL_SUCCESS);
    assert_string_equal(f->seen.trace, "(null)");
    assert_int_equal(f->seen.body_len, 0);
    assert_string_equal(f->seen.body, "");
}

static void test_bad_requests_refused(void **state)
{
    struct fx *f = *state;
    char url[128];
    struct done d = {0};
    struct call_req req = mkreq(f, url, sizeof url, "/echo");
    req.gid = "g\r\nX-Evil: 1";
    assert_int_equal(f->cli->ops->call(f->cli, &req, on_done, &d), DTX_EINVAL);
    req = mkreq(f, url, sizeof url, "/echo");
    req.timeout_ms = 0;
    assert_int_equal(f->cli->ops->call(f->cli, &req, on_done, &d), DTX_EINVAL);
    req = mkreq(f, url, sizeof url, "/echo");
    req.url = "file:///etc/passwd";
    /* curl refuses the scheme when the transfer starts */
    assert_int_equal(f->cli->ops->call(f->cli, &req, on_done, &d), 0);
    run_until(f, &d.n, 1);
    assert_int_equal(d.res.outcome, CALL_TRANSIENT);
    assert_int_equal(d.res.status, 0);
}

static void test_status_mapping(void **state)
{
    struct fx *f = *state;
    static const struct {
        int status;
        enum call_outcome outcome;
    } cases[] = {
        {200, CALL_SUCCESS},   {201, CALL_SUCCESS},   {204, CALL_SUCCESS},   {409, CALL_FAILURE},
        {425, CALL_ONGOING},   {500, CALL_TRANSIENT}, {503, CALL_TRANSIENT}, {404, CALL_TRANSIENT},
        {302, CALL_TRANSIENT}, {400, CALL_TRANSIENT},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char path[32], want[32];
        struct done d;
        snprintf(path, sizeof path, "/status/%d", cases[i].status);
        call_sync(f, path, &d);
        assert_int_equal(d.n, 1);
        assert_int_equal(d.res.status, cases[i].status);
        assert_int_equal(d.res.outcome, cases[i].outcome);
        if (cases[i].outcome == CALL_SUCCESS) {
            assert_null(d.res.error);
            continue;
        }
        snprintf(want, sizeof want, "HTTP %d", cases[i].status);
        assert_non_null(d.res.error);
        assert_memory_equal(d.res.error, want, strlen(want));
    }
}

static void test_connection_refused(void **state)
{
    struct fx *f = *state;
    /* a bound socket that does not listen refuses connections */
    uv_tcp_t t;
    struct sockaddr_in a;
    struct sockaddr_storage got;
    int len = sizeof got;
    uv_ip4_addr("127.0.0.1", 0, &a);
    uv_tcp_init(&f->loop, &t);
    assert_int_equal(uv_tcp_bind(&t, (struct sockaddr *)&a, 0), 0);
    assert_int_equal(uv_tcp_getsockname(&t, (struct sockaddr *)&got, &len), 0);
    unsigned port = ntohs(((struct sockaddr_in *)&got)->sin_port);

    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%u/x", port);
    struct call_req req = {.url = url,
                           .gid = "g",
                           .branch = "b",
                           .op = "action",
                           .txn_type = "saga",
                           .timeout_ms = 3000};
    struct done d = {0};
    assert_int_equal(f->cli->ops->call(f->cli, &req, on_done, &d), 0);
    run_until(f, &d.n, 1);
    assert_int_equal(d.res.outcome, CALL_TRANSIENT);
    assert_int_equal(d.res.status, 0);
    assert_non_null(d.res.error);
    assert_true(strlen(d.res.error) > 0);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&f->loop, UV_RUN_NOWAIT); /* t lives on this stack */
}

static void test_late_answer(void **state)
{
    struct fx *f = *state;
    struct done d;
    call_sync(f, "/delay/50", &d);
    assert_int_equal(d.res.outcome, CALL_SUCCESS);
    assert_int_equal(d.res.status, 200);
    /* the same keep-alive connection still serves */
    call_sync(f, "/delay/1", &d);
    assert_int_equal(d.res.outcome, CALL_SUCCESS);
    call_sync(f, "/status/204", &d);
    assert_int_equal(d.res.outcome, CALL_SUCCESS);
}

static void test_request_timeout(void **state)
{
    struct fx *f = *state;
    char url[128];
    struct call_req req = mkreq(f, url, sizeof url, "/delay/300");
    struct done d = {0};
    req.timeout_ms = 100;
    assert_int_equal(f->cli->ops->call(f->cli, &req, on_done, &d), 0);
    run_until(f, &d.n, 1);
    assert_int_equal(d.res.outcome, CALL_TRANSIENT);
    assert_int_equal(d.res.status, 0);
    assert_string_equal(d.res.error, "timeout after 100 ms");
    /* the late answer goes to a client that left: harmless */
    run_for(f, 350);
    assert_int_equal(d.n, 1);
    call_sync(f, "/status/200", &d);
    assert_int_equal(d.res.outcome, CALL_SUCCESS);
}

static void test_body_too_large(void **state)
{
    struct fx *f = *state;
    static char big[4 * MAX_BODY];
    memset(big, 'x', sizeof big);
    char url[128];
    struct call_req req = mkreq(f, url, sizeof url, "/echo");
    struct done d = {0};
    req.body = big;
    req.body_len = sizeof big;
    int before = f->handled;
    assert_int_equal(f->cli->ops->call(f->cli, &req, on_done, &d), 0);
    run_until(f, &d.n, 1);
    assert_int_equal(d.res.outcome, CALL_TRANSIENT);
    assert_int_equal(d.res.status, 413);
    assert_non_null(strstr(d.res.error, "\"code\":\"body_too_large\""));
    assert_int_equal(f->handled, before);

    /* exactly max_body is fine */
    req.body_len = MAX_BODY;
    memset(&d, 0, sizeof d);
    assert_int_equal(f->cli->ops->call(f->cli, &req, on_done, &d), 0);
    run_until(f, &d.n, 1);
    assert_int_equal(d.res.outcome, CALL_SUCCESS);
    assert_int_equal(f->seen.body_len, MAX_BODY);
}

static void test_body_too_large_chunked(void **state)
{
    struct fx *f = *state;
    char req[4 * MAX_BODY], resp[2048];
    int n = snprintf(req, sizeof req,
                     "POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n");
    for (int i = 0; i < 3; i++) {
        n += snprintf(req + n, sizeof req - (size_t)n, "258\r\n"); /* 600 bytes */
        memset(req + n, 'y', 600);
        n += 600;
        n += snprintf(req + n, sizeof req - (size_t)n, "\r\n");
    }
    snprintf(req + n, sizeof req - (size_t)n, "0\r\n\r\n");
    int before = f->handled;
    raw_exchange(f, req, resp, sizeof resp);
    assert_memory_equal(resp, "HTTP/1.1 413", 12);
    assert_non_null(strstr(resp, "Content-Type: application/json"));
    const char *body = strstr(resp, "\r\n\r\n");
    assert_non_null(body);
    assert_string_equal(body + 4, "{\"error\":{\"code\":\"body_too_large\",\"message\":\"request "
                                  "body exceeds 1024 bytes\",\"field\":null}}");
    assert_int_equal(f->handled, before);
}

static void test_request_accessors(void **state)
{
    struct fx *f = *state;
    char resp[1024];
    raw_exchange(f,
                 "GET /get?a=1&b=hello%20world HTTP/1.1\r\nHost: x\r\nDtx-Gid: G\r\n"
                 "Connection: close\r\n\r\n",
                 resp, sizeof resp);
    assert_memory_equal(resp, "HTTP/1.1 200", 12);
    assert_non_null(strstr(resp, "{\"ok\":true}"));
    struct seen *s = &f->seen;
    assert_string_equal(s->method, "GET");
    assert_string_equal(s->path, "/get");
    assert_string_equal(s->q_a, "1");
    assert_string_equal(s->q_b, "hello world");
    assert_true(s->q_missing_is_null);
    assert_string_equal(s->gid, "G"); /* looked up as "dtx-gid" */
    assert_int_equal(s->body_len, 0);
    assert_string_equal(s->body, "");
}

static void test_keepalive_reuse(void **state)
{
    struct fx *f = *state;
    for (int i = 0; i < 20; i++) {
        struct done d;
        call_sync(f, (i % 2) ? "/status/200" : "/delay/1", &d);
        assert_int_equal(d.res.outcome, CALL_SUCCESS);
    }
    assert_int_equal(established_to(f->port), 1);
    /* the idle connection does not hold the loop: only the server's poll does */
    assert_int_equal(live_polls(f), 1);
}

static void test_peer_closes_idle_connection(void **state)
{
    struct fx *f = *state;
    struct raw_srv r;
    raw_srv_start(&f->loop, &r);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%u/x", r.port);
    struct call_req req = {.url = url,
                           .gid = "g",
                           .branch = "b",
                           .op = "action",
                           .txn_type = "saga",
                           .body = "{}",
                           .body_len = 2,
                           .timeout_ms = 3000};
    for (int i = 0; i < 3; i++) {
        struct done d = {0};
        assert_int_equal(f->cli->ops->call(f->cli, &req, on_done, &d), 0);
        run_until(f, &d.n, 1);
        assert_int_equal(d.res.outcome, CALL_SUCCESS);
        run_for(f, 80); /* the server drops the idle connection meanwhile */
    }
    assert_int_equal(r.answered, 3);
    assert_int_equal(r.conns, 3);
    uv_close((uv_handle_t *)&r.listen, NULL);
    uv_run(&f->loop, UV_RUN_NOWAIT);
}

#define MANY 500

static void test_many_concurrent(void **state)
{
    struct fx *f = *state;
    static struct done d[MANY];
    int total = 0;
    f->cli->ops->free(f->cli);
    struct http_client_config cc = {.max_host_connections = 16};
    f->cli = http_client_new(&f->loop, &cc);
    assert_non_null(f->cli);

    for (int round = 0; round < 2; round++) {
        memset(d, 0, sizeof d);
        for (int i = 0; i < MANY; i++) {
            char url[128];
            struct call_req req =
                mkreq(f, url, sizeof url, (i % 3 == 0) ? "/delay/2" : "/status/201");
            assert_int_equal(f->cli->ops->call(f->cli, &req, on_done, &d[i]), 0);
        }
        total_done = 0;
        run_until(f, &total_done, MANY);
        for (int i = 0; i < MANY; i++) {
            assert_int_equal(d[i].n, 1);
            assert_int_equal(d[i].res.outcome, CALL_SUCCESS);
        }
        total += MANY;
        int conns = established_to(f->port);
        if (conns < 1 || conns > 16)
            fail_msg("round %d: %d established connections to port %u (want 1..16)", round, conns,
                     f->port);
    }
    assert_int_equal(f->handled, total);
}

static void test_free_with_calls_in_flight(void **state)
{
    struct fx *f = *state;
    struct done d[20];
    memset(d, 0, sizeof d);
    for (int i = 0; i < 20; i++) {
        char url[128];
        struct call_req req = mkreq(f, url, sizeof url, "/delay/100");
        assert_int_equal(f->cli->ops->call(f->cli, &req, on_done, &d[i]), 0);
    }
    run_until(f, &f->handled, 20); /* all 20 suspended at the server */
    f->cli->ops->free(f->cli);
    f->cli = NULL;
    /* and the server goes with suspended connections, answered later */
    http_server_free(f->srv);
    f->srv = NULL;
    uv_run(&f->loop, UV_RUN_DEFAULT); /* must return: nothing left alive */
    for (int i = 0; i < 20; i++)
        assert_int_equal(d[i].n, 0);
}

struct free_in_cb {
    struct fx *f;
    int n;
};

static void on_done_free(void *arg, const struct call_result *res)
{
    struct free_in_cb *c = arg;
    (void)res;
    c->n++;
    c->f->cli->ops->free(c->f->cli);
    c->f->cli = NULL;
}

static void test_free_inside_callback(void **state)
{
    struct fx *f = *state;
    struct free_in_cb c = {.f = f};
    for (int i = 0; i < 10; i++) {
        char url[128];
        struct call_req req = mkreq(f, url, sizeof url, i == 0 ? "/status/200" : "/delay/50");
        assert_int_equal(f->cli->ops->call(f->cli, &req, on_done_free, &c), 0);
    }
    run_until(f, &c.n, 1);
    run_for(f, 100);
    assert_int_equal(c.n, 1);
    assert_null(f->cli);
}

static void test_quiesce(void **state)
{
    struct fx *f = *state;
    struct done d = {0}, d2;
    char url[128];
    struct call_req req = mkreq(f, url, sizeof url, "/delay/50");
    assert_int_equal(f->cli->ops->call(f->cli, &req, on_done, &d), 0);
    run_until(f, &f->handled, 1);
    http_server_quiesce(f->srv);
    run_until(f, &d.n, 1);
    assert_int_equal(d.res.outcome, CALL_SUCCESS); /* in flight: still answered */
    call_sync(f, "/status/200", &d2);
    assert_int_equal(d2.res.outcome, CALL_TRANSIENT); /* no longer accepting */
    assert_int_equal(d2.res.status, 0);
}

static void test_server_bad_host(void **state)
{
    struct fx *f = *state;
    const char *err = NULL;
    struct http_server_config sc = {.host = "not-an-address", .max_body = 10, .handler = handler};
    assert_null(http_server_new(&f->loop, &sc, &err));
    assert_non_null(err);
    sc.host = "localhost";
    struct http_server *s = http_server_new(&f->loop, &sc, &err);
    assert_non_null(s);
    /* the port is taken now */
    sc.port = http_server_port(s);
    assert_null(http_server_new(&f->loop, &sc, &err));
    http_server_free(s);
}

int main(void)
{
    alarm(120); /* a hang is a failure */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_post_delivers_body_and_headers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_traceparent_no_body, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_requests_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_status_mapping, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connection_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_late_answer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_request_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_body_too_large, setup, teardown),
        cmocka_unit_test_setup_teardown(test_body_too_large_chunked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_request_accessors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keepalive_reuse, setup, teardown),
        cmocka_unit_test_setup_teardown(test_peer_closes_idle_connection, setup, teardown),
        cmocka_unit_test_setup_teardown(test_many_concurrent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_with_calls_in_flight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_inside_callback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_quiesce, setup, teardown),
        cmocka_unit_test_setup_teardown(test_server_bad_host, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
