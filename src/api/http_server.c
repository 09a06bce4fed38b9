/*
 * http_server.c - the API's HTTP transport (see http_server.h).
 *
 * Shape: libmicrohttpd runs with no thread of its own, in epoll mode. Its
 * epoll fd sits under one uv_poll_t (readable -> MHD_run) and its timeout under
 * one uv_timer_t, re-armed from MHD_get_timeout() after every MHD_run (MHD
 * answers 0 there while it still has buffered work, so nothing stalls).
 *
 * MHD calls on_access() several times per request: once when the headers are
 * in, once per chunk of body, once more when the body is complete. We copy the
 * body into a capped buffer; a body over max_body is answered 413 here and
 * never reaches the handler: after it has been read and dropped, or without
 * reading it when the client waits for 100 Continue or announces over
 * DRAIN_FACTOR times max_body. On the last call the handler runs. If it answered
 * (http_req_respond) before returning, the answer is queued right away;
 * otherwise the connection is suspended, and http_req_respond() later builds
 * the answer, resumes the connection and arms the timer at 0 so that MHD_run
 * soon calls on_access() again, which queues it.
 *
 * Each connection gets a memory pool of CONNECTION_MEMORY bytes (MHD's default
 * is 32 KiB) for its read buffer, the request's header lines and the answer's
 * header. MHD zeroes the whole pool at every keep-alive request and the unused
 * part of the read buffer once a request is read, so a smaller pool is that
 * much less memset per request (at 32 KiB it was 48 KiB per request, about 3%
 * of the loop's time). 16 KiB still takes request headers of about 15 KiB;
 * a larger header block is refused by MHD (431). Bodies are not bound by it:
 * they reach on_access in chunks of at most the read buffer.
 *
 * Lifetime of a struct http_req: two owners, counted in refs. MHD owns it from
 * the headers until MHD_OPTION_NOTIFY_COMPLETED (on_completed); the
 * application owns it from the handler call until http_req_respond(). Whoever
 * lets go last frees it (or returns it to a small pool). Once MHD is done
 * (client gone, server freed), conn is NULL and an answer is simply dropped.
 * Every live request is on the server's list so that http_server_free() can
 * resume suspended connections (MHD must not be stopped with any) and cut the
 * rest loose.
 */
#include "api/http_server.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/buf.h"
#include "common/slog.h"

#define DEFAULT_MAX_CONNECTIONS 1024
#define CONNECTION_TIMEOUT_S    60          /* idle keep-alive connections closed after */
#define REQ_POOL_MAX            1024        /* idle request structs kept for reuse */
#define BODY_KEEP_MAX           (16 * 1024) /* larger body buffers are not pooled */
#define CONNECTION_MEMORY       (16 * 1024) /* MHD's per-connection pool: see the top */

enum req_state {
    REQ_RECEIVING, /* headers in, body arriving; the handler has not seen it */
    REQ_HANDLING,  /* inside the handler call */
    REQ_SUSPENDED, /* the handler returned without answering; connection suspended */
    REQ_ANSWERED,  /* answer built (resp), not yet queued to MHD */
    REQ_DONE,      /* answer queued (or refused): nothing more to do here */
};

struct http_req {
    struct http_server *srv;     /* NULL once the server is freed */
    struct MHD_Connection *conn; /* NULL once MHD is done with the request */
    const char *method;          /* MHD's strings, "" once conn is NULL */
    const char *path;
    struct buf body;
    struct MHD_Response *resp; /* the answer while REQ_ANSWERED */
    unsigned status;
    enum req_state state;
    int refs;                     /* MHD's + the application's */
    int too_big;                  /* body over max_body: answer 413, drop the bytes */
    struct http_req *prev, *next; /* server's list of live requests; next in the pool */
};

struct http_server {
    uv_loop_t *loop;
    struct MHD_Daemon *mhd;
    uv_poll_t poll;
    uv_timer_t timer;
    unsigned short port;
    size_t max_body;
    http_handler_fn handler;
    void *handler_arg;
    struct http_req *reqs; /* live requests, doubly linked */
    struct http_req *pool; /* idle request structs, singly linked */
    unsigned n_pool;
    int in_run;   /* inside MHD_run */
    int kick;     /* a connection was resumed: run MHD again at once */
    int quiesced; /* no longer accepting; answers say Connection: close */
    int open_handles;
};

static void on_timer(uv_timer_t *t);

/* ---- driving MHD from the loop ---- */

/* Arm the timer: at once after a resume, else as MHD_get_timeout says. */
static void arm(struct http_server *s)
{
    MHD_UNSIGNED_LONG_LONG ms = 0;
    if (s->kick) {
        s->kick = 0;
        uv_timer_start(&s->timer, on_timer, 0, 0);
        return;
    }
    if (MHD_get_timeout(s->mhd, &ms) == MHD_YES)
        uv_timer_start(&s->timer, on_timer, (uint64_t)ms, 0);
    else
        uv_timer_stop(&s->timer);
}

static void run(struct http_server *s)
{
    s->in_run = 1;
    MHD_run(s->mhd);
    s->in_run = 0;
    arm(s);
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    (void)status;
    (void)events;
    run(h->data);
}

static void on_timer(uv_timer_t *t)
{
    run(t->data);
}

/* ---- requests ---- */

static struct http_req *req_new(struct http_server *s, struct MHD_Connection *conn,
                                const char *method, const char *path)
{
    struct http_req *r = s->pool;
    if (r != NULL) {
        s->pool = r->next;
        s->n_pool--;
        buf_reset(&r->body);
        r->body.max = s->max_body;
    } else {
        r = xmalloc(sizeof *r);
        buf_init(&r->body, s->max_body);
    }
    r->srv = s;
    r->conn = conn;
    r->method = method;
    r->path = path;
    r->resp = NULL;
    r->status = 0;
    r->state = REQ_RECEIVING;
    r->refs = 1; /* MHD's */
    r->too_big = 0;
    r->prev = NULL;
    r->next = s->reqs;
    if (s->reqs != NULL)
        s->reqs->prev = r;
    s->reqs = r;
    return r;
}

/* Drop one reference; the last one unlinks and frees (or pools) r. */
static void req_unref(struct http_req *r)
{
    r->refs--;
    if (r->refs > 0)
        return;
    struct http_server *s = r->srv;
    if (r->resp != NULL)
        MHD_destroy_response(r->resp);
    if (s == NULL) {
        buf_free(&r->body);
        free(r);
        return;
    }
    if (r->prev != NULL)
        r->prev->next = r->next;
    else
        s->reqs = r->next;
    if (r->next != NULL)
        r->next->prev = r->prev;
    if (s->n_pool >= REQ_POOL_MAX) {
        buf_free(&r->body);
        free(r);
        return;
    }
    if (r->body.cap > BODY_KEEP_MAX)
        buf_free(&r->body);
    r->next = s->pool;
    s->pool = r;
    s->n_pool++;
}

/* MHD is done with r's connection: answers to it are dropped from now on. */
static void req_detach(struct http_req *r)
{
    r->conn = NULL;
    r->method = "";
    r->path = "";
    req_unref(r);
}

/*
 * An MHD response for (body, len), taking ownership of body, with
 * Content-Type when given. NULL if MHD cannot make one (body is then freed).
 */
static struct MHD_Response *make_response(struct http_server *s, const char *content_type,
                                          char *body, size_t len)
{
    struct MHD_Response *resp;
    if (body == NULL || len == 0) {
        free(body);
        resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    } else {
        resp = MHD_create_response_from_buffer_with_free_callback(len, body, free);
        if (resp == NULL)
            free(body);
    }
    if (resp == NULL)
        return NULL;
    if (content_type != NULL)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    if (s != NULL && s->quiesced)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    return resp;
}

/* Queue r's answer (REQ_ANSWERED) to MHD. */
static enum MHD_Result queue_answer(struct http_req *r)
{
    struct MHD_Response *resp = r->resp;
    r->resp = NULL;
    r->state = REQ_DONE;
    if (resp == NULL)
        return MHD_NO; /* could not build one: close the connection */
    enum MHD_Result ret = MHD_queue_response(r->conn, r->status, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* Answer 413 with the API's JSON error. */
static enum MHD_Result queue_413(struct http_server *s, struct http_req *r)
{
    char *body = xmalloc(160);
    int n = snprintf(body, 160,
                     "{\"error\":{\"code\":\"body_too_large\",\"message\":\"request body "
                     "exceeds %zu bytes\",\"field\":null}}",
                     s->max_body);
    r->resp = make_response(s, "application/json", body, (size_t)n);
    r->status = MHD_HTTP_CONTENT_TOO_LARGE;
    return queue_answer(r);
}

/* A declared body up to this many times max_body is read and dropped before
 * the 413; a larger one is not read: the 413 is queued at once and the client
 * may see its connection reset while it writes (see on_access). */
#define DRAIN_FACTOR 16

/* The Content-Length the request declares, or 0 when it declares none. */
static unsigned long long declared_length(struct MHD_Connection *conn)
{
    const char *cl =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl == NULL)
        return 0;
    char *end = NULL;
    unsigned long long v = strtoull(cl, &end, 10);
    return end != cl ? v : 0;
}

/* Whether the client waits for "100 Continue" before it sends the body. */
static int expects_continue(struct MHD_Connection *conn)
{
    const char *e = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_EXPECT);
    return e != NULL && strcasecmp(e, "100-continue") == 0;
}

/* MHD's access handler: see the opening comment for the sequence of calls. */
static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version, const char *upload_data,
                                 size_t *upload_data_size, void **con_cls)
{
    (void)version;
    struct http_server *s = cls;
    struct http_req *r = *con_cls;

    if (r == NULL) {
        r = req_new(s, conn, method, url);
        *con_cls = r;
        unsigned long long len = declared_length(conn);
        if (len > s->max_body) {
            r->too_big = 1;
            /* Answering now makes MHD close without reading the body. A
             * client still sending it then gets a reset, often before it has
             * read the 413 ("broken pipe" instead of the error). So unless
             * the client waits for 100 Continue (then nothing is in flight)
             * or the body is huge, drain it first, as for an undeclared one. */
            if (expects_continue(conn) || len / DRAIN_FACTOR > s->max_body)
                return queue_413(s, r);
        }
        return MHD_YES;
    }
    if (*upload_data_size != 0) {
        if (!r->too_big && buf_append(&r->body, upload_data, *upload_data_size) != 0) {
            r->too_big = 1;
            buf_free(&r->body);
        }
        *upload_data_size = 0;
        return MHD_YES;
    }

    switch (r->state) {
    case REQ_RECEIVING:
        if (r->too_big)
            return queue_413(s, r);
        r->state = REQ_HANDLING;
        r->refs++; /* the application's */
        s->handler(s->handler_arg, r);
        if (r->state == REQ_ANSWERED)
            return queue_answer(r);
        r->state = REQ_SUSPENDED;
        MHD_suspend_connection(conn);
        return MHD_YES;
    case REQ_ANSWERED: /* resumed after a late answer */
        return queue_answer(r);
    case REQ_HANDLING:
    case REQ_SUSPENDED:
    case REQ_DONE:
        break;
    }
    return MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)conn;
    (void)toe;
    struct http_req *r = *con_cls;
    if (r == NULL)
        return;
    *con_cls = NULL;
    req_detach(r);
}

void http_req_respond(struct http_req *r, int status, const char *content_type, char *body,
                      size_t len)
{
    if (r->conn == NULL) { /* the client (or the server) is gone */
        free(body);
        req_unref(r);
        return;
    }
    struct http_server *s = r->srv;
    int was_suspended = r->state == REQ_SUSPENDED;
    r->resp = make_response(s, content_type, body, len);
    r->status = status > 0 ? (unsigned)status : 500;
    r->state = REQ_ANSWERED;
    if (was_suspended) {
        MHD_resume_connection(r->conn);
        s->kick = 1;
        if (!s->in_run)
            arm(s);
    }
    req_unref(r);
}

const char *http_req_method(const struct http_req *r)
{
    return r->method;
}

const char *http_req_path(const struct http_req *r)
{
    return r->path;
}

const char *http_req_query(const struct http_req *r, const char *key)
{
    if (r->conn == NULL)
        return NULL;
    return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, key);
}

const char *http_req_header(const struct http_req *r, const char *name)
{
    if (r->conn == NULL)
        return NULL;
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

const char *http_req_body(const struct http_req *r)
{
    return r->body.data != NULL ? r->body.data : "";
}

size_t http_req_body_len(const struct http_req *r)
{
    return r->body.len;
}

/* ---- the server ---- */

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char text[256], quoted[300];
    vsnprintf(text, sizeof text, fmt, ap);
    size_t n = strlen(text);
    while (n > 0 && (text[n - 1] == '\n' || text[n - 1] == '\r'))
        text[--n] = '\0';
    slog_warn("http server", "detail=%s", slog_quote(text, quoted, sizeof quoted));
}

/*
 * The listen address for host: an IPv4 or IPv6 literal, "localhost"
 * (127.0.0.1), or NULL / "" (any IPv4 address). Returns 0 or -1.
 */
static int parse_host(const char *host, unsigned short port, struct sockaddr_storage *ss /* OUT */,
                      int *v6 /* OUT */)
{
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
    *v6 = 0;
    a4->sin_family = AF_INET;
    a4->sin_port = htons(port);
    if (host == NULL || host[0] == '\0') {
        a4->sin_addr.s_addr = htonl(INADDR_ANY);
        return 0;
    }
    if (strcmp(host, "localhost") == 0)
        host = "127.0.0.1";
    if (inet_pton(AF_INET, host, &a4->sin_addr) == 1)
        return 0;
    memset(ss, 0, sizeof *ss);
    a6->sin6_family = AF_INET6;
    a6->sin6_port = htons(port);
    if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
        *v6 = 1;
        return 0;
    }
    return -1;
}

struct http_server *http_server_new(uv_loop_t *loop, const struct http_server_config *cfg,
                                    const char **errmsg /* OUT */)
{
    struct sockaddr_storage ss;
    int v6 = 0;

    if (cfg->handler == NULL) {
        *errmsg = "no request handler";
        return NULL;
    }
    if (parse_host(cfg->host, cfg->port, &ss, &v6) != 0) {
        *errmsg = "listen address is not an IP address or localhost";
        return NULL;
    }
    struct http_server *s = xcalloc(1, sizeof *s);
    s->loop = loop;
    s->max_body = cfg->max_body;
    s->handler = cfg->handler;
    s->handler_arg = cfg->handler_arg;
    unsigned maxconn = cfg->max_connections ? cfg->max_connections : DEFAULT_MAX_CONNECTIONS;

    unsigned flags = MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    if (v6)
        flags |= MHD_USE_IPv6;
    s->mhd = MHD_start_daemon(flags, cfg->port, NULL, NULL, on_access, s,
                              MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, s, MHD_OPTION_SOCK_ADDR,
                              (struct sockaddr *)&ss, MHD_OPTION_CONNECTION_LIMIT, maxconn,
                              MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)CONNECTION_TIMEOUT_S,
                              MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)CONNECTION_MEMORY,
                              MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_END);
    if (s->mhd == NULL) {
        *errmsg = "cannot start the HTTP server (address in use or not allowed?)";
        goto fail;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_EPOLL_FD);
    if (info == NULL) {
        *errmsg = "the HTTP server has no epoll fd";
        goto fail;
    }
    int epfd = info->epoll_fd;
    info = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_BIND_PORT);
    s->port = info != NULL ? info->port : cfg->port;

    if (uv_poll_init(loop, &s->poll, epfd) != 0) {
        *errmsg = "cannot watch the HTTP server's epoll fd";
        goto fail;
    }
    s->poll.data = s;
    uv_timer_init(loop, &s->timer);
    s->timer.data = s;
    s->open_handles = 2;
    uv_poll_start(&s->poll, UV_READABLE, on_poll);
    arm(s);
    return s;

fail:
    if (s->mhd != NULL)
        MHD_stop_daemon(s->mhd);
    free(s);
    return NULL;
}

unsigned short http_server_port(const struct http_server *s)
{
    return s->port;
}

void http_server_quiesce(struct http_server *s)
{
    if (s->quiesced)
        return;
    s->quiesced = 1;
    MHD_socket fd = MHD_quiesce_daemon(s->mhd);
    if (fd != MHD_INVALID_SOCKET)
        close(fd);
}

static void on_handle_closed(uv_handle_t *h)
{
    struct http_server *s = h->data;
    s->open_handles--;
    if (s->open_handles > 0)
        return;
    while (s->pool != NULL) {
        struct http_req *r = s->pool;
        s->pool = r->next;
        buf_free(&r->body);
        free(r);
    }
    free(s);
}

/*
 * Stop MHD and close the uv handles; s itself goes in the last close callback.
 * Suspended connections are resumed first (MHD must not be stopped with any);
 * stopping then completes every connection, which detaches its request. A
 * request the application still holds lives on without the server: its
 * answer is dropped.
 */
void http_server_free(struct http_server *s)
{
    if (s == NULL)
        return;
    /* the poll must be gone before MHD closes the fd under it */
    uv_close((uv_handle_t *)&s->poll, on_handle_closed);
    uv_close((uv_handle_t *)&s->timer, on_handle_closed);
    for (struct http_req *r = s->reqs; r != NULL; r = r->next)
        if (r->state == REQ_SUSPENDED && r->conn != NULL)
            MHD_resume_connection(r->conn);
    s->in_run = 1; /* no arm() from here on */
    MHD_stop_daemon(s->mhd);
    s->mhd = NULL;
    while (s->reqs != NULL) {
        struct http_req *r = s->reqs;
        s->reqs = r->next;
        r->prev = r->next = NULL;
        r->srv = NULL;
        if (r->conn != NULL) /* MHD did not report it completed */
            req_detach(r);
    }
}
