/*
 * http_client.c - the HTTP(S) branch transport (see http_client.h).
 *
 * Shape: libcurl's multi "socket" interface, driven by the libuv loop (the
 * curl multi-uv pattern). curl tells us which sockets to watch through
 * CURLMOPT_SOCKETFUNCTION, and we keep one uv_poll_t per socket; it tells us
 * when it next needs a kick through CURLMOPT_TIMERFUNCTION, and we keep one
 * uv_timer_t. Readiness and the timer both end in curl_multi_socket_action(),
 * after which finished transfers are read with curl_multi_info_read() and
 * their callbacks run - on the loop, once per call, never from inside curl.
 *
 * One departure from the textbook pattern, for speed: curl (7.88) says
 * CURL_POLL_REMOVE for a keep-alive connection's socket at the end of every
 * transfer and asks for it again at the start of the next, which would cost an
 * epoll_ctl DEL and ADD (and a uv handle) per call. We make connection sockets
 * ourselves (CURLOPT_OPENSOCKETFUNCTION) and learn when curl closes them
 * (CURLOPT_CLOSESOCKETFUNCTION), so their watcher can live exactly as long as
 * the socket: on REMOVE it merely stops forwarding to curl, and a stray event
 * on an idle connection (the peer closing it) just stops the watcher until
 * curl, which checks connections before reuse, closes or reuses it.
 *
 * Every call is a `struct hc_call` that owns an easy handle and the memory a
 * request needs: the body copy, the header lines and the curl_slist nodes that
 * point at them (built here, in place, so that no list is allocated per call),
 * the error text. Finished calls go back to an idle pool and are reused; the
 * pool keeps at most IDLE_MAX of them. A handle is never reset: the options
 * every call shares are set once when it is made (setup_easy_once), and a call
 * sets only URL, body, timeout (setup_easy) - resetting and setting them all
 * again was a measurable share of the loop's time. Connections are not ours:
 * they live in the multi handle's cache (CURLMOPT_MAXCONNECTS) and are reused
 * by the next call to the same host, which is what keep-alive means here.
 *
 * URLs are parsed once: a small cache (URL_CACHE_MAX entries) keeps a CURLU
 * per URL string, handed to curl with CURLOPT_CURLU, which saves curl parsing
 * the string and assembling it again on every transfer. The string is set too
 * (CURLOPT_URL; the CURLU takes precedence, curl keeps the string for its
 * messages). A URL curl cannot parse is not cached and goes to curl as a
 * plain CURLOPT_URL, so it fails exactly as it would without the cache.
 *
 * Outcomes come from the status code only (DESIGN §2); the response body is
 * discarded except for its first SNIPPET_MAX bytes, which only decorate the
 * error text.
 *
 * Teardown: free() removes every transfer (no callbacks), cleans up curl,
 * and closes the uv handles; the struct itself goes away in the last close
 * callback, so free() may be called from inside a completion callback.
 */
#include "transport/http_client.h"

#include <curl/curl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/err.h"
#include "common/slog.h"

#define DEFAULT_MAX_CONNECTIONS 1024L
#define IDLE_MAX                1024        /* idle calls (easy handles) kept for reuse */
#define BODY_KEEP_MAX           (64 * 1024) /* larger body copies are not kept idle */
#define SNIPPET_MAX             160         /* response bytes quoted in error text */
#define HDR_LINES               10
#define URL_CACHE_MAX           64 /* parsed URLs kept (struct hc_url) */

struct http_client;

/*
 * A URL parsed once (CURLOPT_CURLU), so that a call to a URL seen before skips
 * curl's parsing and re-assembling of it. refs counts the calls in flight
 * with it: only an unreferenced entry may be replaced by another URL.
 */
struct hc_url {
    char *s; /* the URL string, as the callers give it */
    uint32_t hash;
    unsigned refs;
    CURLU *u;
};

struct hc_call {
    struct http_client *hc;
    CURL *easy;
    struct hc_url *url; /* the parsed URL this call uses, or NULL */
    call_done_fn cb;
    void *arg;
    struct hc_call *prev, *next; /* in the in-flight list; next only when idle */
    uint32_t timeout_ms;
    char *body; /* copy of the payload, body_cap bytes allocated */
    size_t body_cap;
    char *hdr; /* header lines, NUL-separated, hdr_cap bytes allocated */
    size_t hdr_cap;
    struct curl_slist lines[HDR_LINES]; /* CURLOPT_HTTPHEADER, pointing into hdr */
    size_t snippet_len;
    char snippet[SNIPPET_MAX];
    char errbuf[CURL_ERROR_SIZE];                    /* CURLOPT_ERRORBUFFER */
    char errmsg[CURL_ERROR_SIZE + SNIPPET_MAX + 32]; /* call_result.error */
};

/* One watched socket. */
struct hc_sock {
    uv_poll_t poll;
    struct http_client *hc;
    curl_socket_t fd;
    int conn;      /* a connection's socket (on_open_socket): lives until on_close_socket */
    int curl_what; /* CURL_POLL_* curl asked for; 0 when curl is not using it */
    int events;    /* UV_* the poll is started with; 0 when stopped */
    struct hc_sock *prev, *next; /* the open list */
};

struct http_client {
    struct transport base; /* first: a transport * is an http_client * */
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t timer;
    struct hc_call *inflight; /* doubly linked */
    struct hc_call *idle;     /* singly linked */
    unsigned n_idle;
    struct hc_sock *socks;  /* every watcher not yet closed, doubly linked */
    struct hc_sock **by_fd; /* connection sockets' watchers by fd */
    size_t n_by_fd;
    struct hc_url urls[URL_CACHE_MAX];
    unsigned n_urls, url_next; /* entries in use; next to consider replacing */
    unsigned open_handles;     /* uv handles not yet through their close callback */
    int closing;
};

/* Static header lines (curl_slist wants char *, and never writes). */
static char hdr_content_type[] = "Content-Type: application/json";
static char hdr_no_expect[] = "Expect:";
static char hdr_user_agent[] = "User-Agent: dtxd";
/* An empty Accept drops the Accept line curl adds by default: only the
 * status of an answer is read. */
static char hdr_no_accept[] = "Accept:";

static void on_timer(uv_timer_t *t);
static void on_poll(uv_poll_t *h, int status, int events);
static curl_socket_t on_open_socket(void *clientp, curlsocktype purpose,
                                    struct curl_sockaddr *addr);
static int on_close_socket(void *clientp, curl_socket_t fd);
static int setup_easy_once(struct hc_call *c);

/* ---- the pool of calls ---- */

static void call_destroy(struct hc_call *c)
{
    if (c->easy != NULL)
        curl_easy_cleanup(c->easy);
    free(c->body);
    free(c->hdr);
    free(c);
}

/* A call ready for setup: from the idle pool or new. NULL if curl fails. */
static struct hc_call *call_get(struct http_client *hc)
{
    struct hc_call *c = hc->idle;
    if (c != NULL) {
        hc->idle = c->next;
        hc->n_idle--;
        c->next = NULL;
        return c;
    }
    c = xcalloc(1, sizeof *c);
    c->hc = hc;
    c->easy = curl_easy_init();
    if (c->easy == NULL || setup_easy_once(c) != 0) {
        call_destroy(c);
        return NULL;
    }
    return c;
}

/*
 * Back to the idle pool (or freed once the pool is full or we are closing).
 * The handle keeps its options: the next call sets only those that change.
 */
static void call_put(struct http_client *hc, struct hc_call *c)
{
    if (c->url != NULL) {
        /* an idle handle keeps no pointer into the cache */
        curl_easy_setopt(c->easy, CURLOPT_CURLU, NULL);
        c->url->refs--;
        c->url = NULL;
    }
    if (hc->closing || hc->n_idle >= IDLE_MAX) {
        call_destroy(c);
        return;
    }
    c->cb = NULL;
    c->arg = NULL;
    if (c->body_cap > BODY_KEEP_MAX) {
        free(c->body);
        c->body = NULL;
        c->body_cap = 0;
    }
    c->prev = NULL;
    c->next = hc->idle;
    hc->idle = c;
    hc->n_idle++;
}

static void inflight_link(struct http_client *hc, struct hc_call *c)
{
    c->prev = NULL;
    c->next = hc->inflight;
    if (hc->inflight != NULL)
        hc->inflight->prev = c;
    hc->inflight = c;
}

static void inflight_unlink(struct http_client *hc, struct hc_call *c)
{
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        hc->inflight = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
}

/* ---- parsed URLs ---- */

static uint32_t url_hash(const char *s)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (; *s != '\0'; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

/*
 * The parsed form of url, from the cache or parsed now (with the flags curl
 * itself parses a CURLOPT_URL with). NULL when curl cannot parse it or when
 * every entry is in use: the call then sets CURLOPT_URL alone, and curl parses
 * (and reports on) it as usual. The entry is the client's; the caller takes a
 * reference.
 */
static struct hc_url *url_get(struct http_client *hc, const char *url)
{
    uint32_t h = url_hash(url);
    for (unsigned i = 0; i < hc->n_urls; i++) {
        struct hc_url *e = &hc->urls[i];
        if (e->hash == h && strcmp(e->s, url) == 0)
            return e;
    }
    CURLU *u = curl_url();
    if (u == NULL)
        return NULL;
    if (curl_url_set(u, CURLUPART_URL, url, CURLU_GUESS_SCHEME | CURLU_NON_SUPPORT_SCHEME) !=
        CURLUE_OK) {
        curl_url_cleanup(u);
        return NULL;
    }
    struct hc_url *e = NULL;
    if (hc->n_urls < URL_CACHE_MAX) {
        e = &hc->urls[hc->n_urls++];
    } else {
        for (unsigned n = 0; n < URL_CACHE_MAX && e == NULL; n++) {
            struct hc_url *x = &hc->urls[hc->url_next];
            hc->url_next = (hc->url_next + 1) % URL_CACHE_MAX;
            if (x->refs == 0)
                e = x;
        }
        if (e == NULL) {
            curl_url_cleanup(u);
            return NULL;
        }
        free(e->s);
        curl_url_cleanup(e->u);
    }
    e->s = xstrdup(url);
    e->hash = h;
    e->refs = 0;
    e->u = u;
    return e;
}

/* ---- building a request ---- */

/* A header value must not be able to end its line. */
static int header_safe(const char *v)
{
    return strpbrk(v, "\r\n") == NULL;
}

static char *put(char *p, const char *s, size_t n)
{
    memcpy(p, s, n);
    return p + n;
}

/* One NUL-terminated header line "key" + "value" at p; returns the byte after it. */
static char *put_line(char *p, const char *key, size_t klen, const char *val, size_t vlen)
{
    p = put(p, key, klen);
    p = put(p, val, vlen);
    *p++ = '\0';
    return p;
}

/*
 * Write the per-call header lines into c->hdr and chain c->lines over them
 * and the static lines. No formatting, one allocation at most (when the
 * call's buffer is too small, which stops happening once it has grown).
 */
static void build_headers(struct hc_call *c, const struct call_req *req)
{
    static const char k_gid[] = "Dtx-Gid: ", k_branch[] = "Dtx-Branch: ", k_op[] = "Dtx-Op: ",
                      k_type[] = "Dtx-Type: ", k_idem[] = "Idempotency-Key: ",
                      k_trace[] = "traceparent: ";
    size_t lg = strlen(req->gid), lb = strlen(req->branch), lo = strlen(req->op);
    size_t lt = strlen(req->txn_type);
    size_t ltp = req->traceparent != NULL ? strlen(req->traceparent) : 0;
    size_t need = (sizeof k_gid + lg) + (sizeof k_branch + lb) + (sizeof k_op + lo) +
                  (sizeof k_type + lt) + (sizeof k_idem + lg + lb + lo + 2) +
                  (sizeof k_trace + ltp);
    if (need > c->hdr_cap) {
        free(c->hdr);
        c->hdr_cap = need < 512 ? 512 : need;
        c->hdr = xmalloc(c->hdr_cap);
    }

    char *line[HDR_LINES];
    int n = 0;
    char *p = c->hdr;
    line[n++] = hdr_content_type;
    line[n++] = hdr_no_expect;
    line[n++] = hdr_user_agent;
    line[n++] = hdr_no_accept;

    line[n++] = p;
    p = put_line(p, k_gid, sizeof k_gid - 1, req->gid, lg);
    line[n++] = p;
    p = put_line(p, k_branch, sizeof k_branch - 1, req->branch, lb);
    line[n++] = p;
    p = put_line(p, k_op, sizeof k_op - 1, req->op, lo);
    line[n++] = p;
    p = put_line(p, k_type, sizeof k_type - 1, req->txn_type, lt);
    line[n++] = p;
    p = put(p, k_idem, sizeof k_idem - 1);
    p = put(p, req->gid, lg);
    *p++ = '/';
    p = put(p, req->branch, lb);
    *p++ = '/';
    p = put(p, req->op, lo);
    *p++ = '\0';
    if (req->traceparent != NULL && ltp > 0) {
        line[n++] = p;
        p = put(p, k_trace, sizeof k_trace - 1);
        p = put(p, req->traceparent, ltp);
        *p++ = '\0';
    }

    for (int i = 0; i < n; i++) {
        c->lines[i].data = line[i];
        c->lines[i].next = i + 1 < n ? &c->lines[i + 1] : NULL;
    }
}

/* Keep the first bytes of the answer for the error text; drop the rest. */
static size_t on_write(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct hc_call *c = userdata;
    size_t n = size * nmemb;
    size_t room = sizeof c->snippet - 1 - c->snippet_len;
    size_t take = n < room ? n : room;
    if (take > 0) {
        memcpy(c->snippet + c->snippet_len, ptr, take);
        c->snippet_len += take;
    }
    return n;
}

/*
 * Set the options every call shares, once, on a new easy handle: they survive
 * from one call to the next (the handle is never reset). Returns 0, or
 * DTX_EIO when curl refuses one.
 */
static int setup_easy_once(struct hc_call *c)
{
    CURL *e = c->easy;
    CURLcode rc = CURLE_OK;

    rc |= curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    rc |= curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    /* participants are called directly: an http_proxy variable in dtxd's
     * environment must not silently reroute transaction traffic */
    rc |= curl_easy_setopt(e, CURLOPT_PROXY, "");
    /* and no proxy for any host: curl then skips reading no_proxy/NO_PROXY
     * from the environment on every transfer */
    rc |= curl_easy_setopt(e, CURLOPT_NOPROXY, "*");
    rc |= curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    rc |= curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    rc |= curl_easy_setopt(e, CURLOPT_HTTPHEADER, c->lines);
    rc |= curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
    rc |= curl_easy_setopt(e, CURLOPT_WRITEDATA, c);
    rc |= curl_easy_setopt(e, CURLOPT_ERRORBUFFER, c->errbuf);
    rc |= curl_easy_setopt(e, CURLOPT_PRIVATE, c);
    rc |= curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, on_open_socket);
    rc |= curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, c->hc);
    rc |= curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, on_close_socket);
    rc |= curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, c->hc);
    return rc == CURLE_OK ? 0 : DTX_EIO;
}

/*
 * Set what changes from call to call. Returns 0, or DTX_EINVAL when curl
 * refuses an option (e.g. a URL it cannot take).
 */
static int setup_easy(struct hc_call *c, const struct call_req *req)
{
    CURL *e = c->easy;
    CURLcode rc = CURLE_OK;
    const char *body = c->body != NULL ? c->body : "";

    c->errbuf[0] = '\0';
    c->snippet_len = 0;
    /* both: curl takes the parsed form (CURLOPT_CURLU overrides CURLOPT_URL)
     * and keeps the string for its messages */
    c->url = url_get(c->hc, req->url);
    if (c->url != NULL)
        c->url->refs++;
    rc |= curl_easy_setopt(e, CURLOPT_URL, req->url);
    rc |= curl_easy_setopt(e, CURLOPT_CURLU, c->url != NULL ? c->url->u : NULL);
    rc |= curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)req->timeout_ms);
    rc |= curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)req->body_len);
    rc |= curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
    return rc == CURLE_OK ? 0 : DTX_EINVAL;
}

/* ---- completion ---- */

/* Append the response snippet to c->errmsg as ": text", printable only. */
static void add_snippet(struct hc_call *c, size_t off)
{
    size_t n = c->snippet_len;
    if (n == 0 || off + 3 >= sizeof c->errmsg)
        return;
    char *p = c->errmsg + off;
    *p++ = ':';
    *p++ = ' ';
    size_t room = sizeof c->errmsg - (size_t)(p - c->errmsg) - 1;
    for (size_t i = 0; i < n && i < room; i++) {
        unsigned char ch = (unsigned char)c->snippet[i];
        *p++ = (ch < 0x20 || ch == 0x7f) ? ' ' : (char)ch;
    }
    *p = '\0';
}

/* Map curl's result and the status code to an outcome (DESIGN §2). */
static void classify(struct hc_call *c, CURLcode rc, struct call_result *res /* OUT */)
{
    long status = 0;
    curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &status);
    res->status = (int)status;
    res->error = c->errmsg;
    if (rc == CURLE_OK) {
        if (status >= 200 && status <= 299) {
            res->outcome = CALL_SUCCESS;
            res->error = NULL;
            return;
        }
        if (status == 409)
            res->outcome = CALL_FAILURE;
        else if (status == 425)
            res->outcome = CALL_ONGOING;
        else
            res->outcome = CALL_TRANSIENT;
        int n = snprintf(c->errmsg, sizeof c->errmsg, "HTTP %ld", status);
        add_snippet(c, (size_t)n);
        return;
    }
    res->outcome = CALL_TRANSIENT;
    if (rc == CURLE_OPERATION_TIMEDOUT)
        snprintf(c->errmsg, sizeof c->errmsg, "timeout after %u ms", (unsigned)c->timeout_ms);
    else
        snprintf(c->errmsg, sizeof c->errmsg, "%s",
                 c->errbuf[0] != '\0' ? c->errbuf : curl_easy_strerror(rc));
}

/*
 * Run the callbacks of every finished transfer. A callback may start calls or
 * free the client; after a free nothing more is read (the multi handle is
 * gone) and the call being completed is destroyed instead of pooled.
 */
static void drain_done(struct http_client *hc)
{
    for (;;) {
        int left = 0;
        CURLMsg *m = curl_multi_info_read(hc->multi, &left);
        if (m == NULL)
            return;
        if (m->msg != CURLMSG_DONE)
            continue;
        CURLcode rc = m->data.result; /* m dies with remove_handle */
        char *priv = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &priv);
        struct hc_call *c = (struct hc_call *)priv;
        curl_multi_remove_handle(hc->multi, c->easy);
        inflight_unlink(hc, c);

        struct call_result res;
        classify(c, rc, &res);
        call_done_fn cb = c->cb;
        void *arg = c->arg;
        cb(arg, &res); /* res.error lives in c until call_put */
        call_put(hc, c);
        if (hc->closing)
            return;
    }
}

/* ---- libuv <-> curl ---- */

static void handle_closed(struct http_client *hc)
{
    hc->open_handles--;
    if (!hc->closing || hc->open_handles > 0)
        return;
    free(hc->by_fd);
    free(hc);
    curl_global_cleanup();
}

static void on_sock_closed(uv_handle_t *h)
{
    struct hc_sock *s = h->data;
    struct http_client *hc = s->hc;
    free(s);
    handle_closed(hc);
}

static struct hc_sock *conn_sock(const struct http_client *hc, curl_socket_t fd)
{
    return fd >= 0 && (size_t)fd < hc->n_by_fd ? hc->by_fd[fd] : NULL;
}

/* A watcher for fd (not started). NULL if libuv refuses the fd. */
static struct hc_sock *sock_new(struct http_client *hc, curl_socket_t fd, int conn)
{
    struct hc_sock *s = xcalloc(1, sizeof *s);
    int rc = uv_poll_init_socket(hc->loop, &s->poll, fd);
    if (rc != 0) {
        slog_error("http client cannot watch socket", "fd=%d err=%s", (int)fd, uv_err_name(rc));
        free(s);
        return NULL;
    }
    s->poll.data = s;
    s->hc = hc;
    s->fd = fd;
    s->conn = conn;
    hc->open_handles++;
    s->next = hc->socks;
    if (hc->socks != NULL)
        hc->socks->prev = s;
    hc->socks = s;
    if (conn) {
        if ((size_t)fd >= hc->n_by_fd) {
            size_t n = hc->n_by_fd ? hc->n_by_fd : 64;
            while (n <= (size_t)fd)
                n *= 2;
            hc->by_fd = xrealloc(hc->by_fd, n * sizeof *hc->by_fd);
            memset(hc->by_fd + hc->n_by_fd, 0, (n - hc->n_by_fd) * sizeof *hc->by_fd);
            hc->n_by_fd = n;
        }
        hc->by_fd[fd] = s;
    }
    return s;
}

/* Stop watching for good (uv_close takes fd out of epoll at once). */
static void sock_close(struct http_client *hc, struct hc_sock *s)
{
    if (s->conn && conn_sock(hc, s->fd) == s)
        hc->by_fd[s->fd] = NULL;
    if (s->prev != NULL)
        s->prev->next = s->next;
    else
        hc->socks = s->next;
    if (s->next != NULL)
        s->next->prev = s->prev;
    s->prev = s->next = NULL;
    uv_close((uv_handle_t *)&s->poll, on_sock_closed);
}

/* Watch s for events (UV_READABLE | UV_WRITABLE, or 0 to stop). */
static void sock_watch(struct hc_sock *s, int events)
{
    if (events == s->events)
        return;
    s->events = events;
    if (events == 0)
        uv_poll_stop(&s->poll);
    else
        uv_poll_start(&s->poll, events, on_poll);
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    struct hc_sock *s = h->data;
    struct http_client *hc = s->hc;
    if (s->curl_what == 0) {
        /* an idle keep-alive connection stirred: the peer closed it (or sent
         * junk). curl checks a connection before reusing it; stop looking. */
        sock_watch(s, 0);
        return;
    }
    int flags = 0;
    if (status < 0) {
        flags = CURL_CSELECT_ERR;
    } else {
        if (events & UV_READABLE)
            flags |= CURL_CSELECT_IN;
        if (events & UV_WRITABLE)
            flags |= CURL_CSELECT_OUT;
    }
    int running = 0;
    /* may close s: do not touch it after this */
    curl_multi_socket_action(hc->multi, s->fd, flags, &running);
    drain_done(hc);
}

static void on_timer(uv_timer_t *t)
{
    struct http_client *hc = t->data;
    int running = 0;
    curl_multi_socket_action(hc->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    drain_done(hc);
}

/*
 * CURLOPT_OPENSOCKETFUNCTION: make a connection's socket, and its watcher,
 * which lives as long as the socket does (see on_close_socket).
 */
static curl_socket_t on_open_socket(void *clientp, curlsocktype purpose, struct curl_sockaddr *addr)
{
    struct http_client *hc = clientp;
    if (purpose != CURLSOCKTYPE_IPCXN)
        return CURL_SOCKET_BAD;
    int fd = socket(addr->family, addr->socktype | SOCK_CLOEXEC, addr->protocol);
    if (fd < 0)
        return CURL_SOCKET_BAD;
    struct hc_sock *stale = conn_sock(hc, fd);
    if (stale != NULL) /* its fd was closed behind our back: forget it */
        sock_close(hc, stale);
    if (sock_new(hc, fd, 1) == NULL) {
        close(fd);
        return CURL_SOCKET_BAD;
    }
    return fd;
}

/* CURLOPT_CLOSESOCKETFUNCTION: drop the watcher before the fd goes. */
static int on_close_socket(void *clientp, curl_socket_t fd)
{
    struct http_client *hc = clientp;
    struct hc_sock *s = conn_sock(hc, fd);
    if (s != NULL)
        sock_close(hc, s);
    return close(fd);
}

/*
 * CURLMOPT_SOCKETFUNCTION: watch fd for what curl wants. On CURL_POLL_REMOVE
 * a connection socket keeps its watcher (and its place in epoll): curl asks
 * for the same socket again when the next call reuses the connection, and
 * leaving it registered saves two epoll_ctl calls per call. Other sockets
 * (a resolver's, say) are closed on REMOVE.
 */
static int on_curl_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    (void)easy;
    struct http_client *hc = userp;
    struct hc_sock *s = socketp != NULL ? socketp : conn_sock(hc, fd);

    if (what == CURL_POLL_REMOVE) {
        if (s == NULL)
            return 0;
        if (!s->conn) {
            sock_close(hc, s);
            return 0;
        }
        s->curl_what = 0;
        /* keep reading (to notice a close cheaply), never writing; an idle
         * connection does not keep the loop alive */
        sock_watch(s, s->events & UV_READABLE);
        uv_unref((uv_handle_t *)&s->poll);
        return 0;
    }
    if (s == NULL) {
        s = sock_new(hc, fd, 0);
        if (s == NULL)
            return -1;
    }
    if (socketp == NULL)
        curl_multi_assign(hc->multi, fd, s);
    if (s->curl_what == 0)
        uv_ref((uv_handle_t *)&s->poll);
    s->curl_what = what;
    int events = 0;
    if (what & CURL_POLL_IN)
        events |= UV_READABLE;
    if (what & CURL_POLL_OUT)
        events |= UV_WRITABLE;
    sock_watch(s, events);
    return 0;
}

/* CURLMOPT_TIMERFUNCTION: arm (or disarm, ms < 0) our one timer. */
static int on_curl_timer(CURLM *multi, long ms, void *userp)
{
    (void)multi;
    struct http_client *hc = userp;
    if (ms < 0)
        uv_timer_stop(&hc->timer);
    else
        uv_timer_start(&hc->timer, on_timer, (uint64_t)ms, 0);
    return 0;
}

/* ---- transport ops ---- */

/*
 * Start a call (transport_ops.call). Everything in req is copied. Returns 0,
 * DTX_EINVAL for a malformed request (missing field, zero timeout, a header
 * value with CR or LF, a URL curl refuses), DTX_ECLOSED after free, DTX_EIO
 * when curl cannot take the transfer.
 */
static int hc_call(struct transport *t, const struct call_req *req, call_done_fn cb, void *arg)
{
    struct http_client *hc = (struct http_client *)t;
    int rc;

    if (hc->closing)
        return DTX_ECLOSED;
    if (cb == NULL || req->url == NULL || req->gid == NULL || req->branch == NULL ||
        req->op == NULL || req->txn_type == NULL || req->timeout_ms == 0 ||
        (req->body == NULL && req->body_len > 0))
        return DTX_EINVAL;
    if (!header_safe(req->gid) || !header_safe(req->branch) || !header_safe(req->op) ||
        !header_safe(req->txn_type) || (req->traceparent != NULL && !header_safe(req->traceparent)))
        return DTX_EINVAL;
    if (req->body_len > (size_t)INT32_MAX)
        return DTX_ETOOBIG;

    struct hc_call *c = call_get(hc);
    if (c == NULL)
        return DTX_EIO;
    if (req->body_len + 1 > c->body_cap) {
        free(c->body);
        c->body_cap = req->body_len + 1 < 256 ? 256 : req->body_len + 1;
        c->body = xmalloc(c->body_cap);
    }
    if (req->body_len > 0)
        memcpy(c->body, req->body, req->body_len);
    c->body[req->body_len] = '\0';
    build_headers(c, req);
    c->timeout_ms = req->timeout_ms;
    rc = setup_easy(c, req);
    if (rc != 0)
        goto fail;
    if (curl_multi_add_handle(hc->multi, c->easy) != CURLM_OK) {
        rc = DTX_EIO;
        goto fail;
    }
    c->cb = cb;
    c->arg = arg;
    inflight_link(hc, c);
    return 0;

fail:
    call_put(hc, c);
    return rc;
}

static void on_timer_closed(uv_handle_t *h)
{
    handle_closed(h->data);
}

/*
 * Abandon every call (no callbacks), release curl, close the uv handles
 * (transport_ops.free). The memory goes in the last close callback, so this
 * is safe from inside a completion callback.
 */
static void hc_free(struct transport *t)
{
    struct http_client *hc = (struct http_client *)t;
    if (hc == NULL || hc->closing)
        return;
    hc->closing = 1;

    while (hc->inflight != NULL) {
        struct hc_call *c = hc->inflight;
        inflight_unlink(hc, c);
        curl_multi_remove_handle(hc->multi, c->easy);
        call_destroy(c);
    }
    while (hc->idle != NULL) {
        struct hc_call *c = hc->idle;
        hc->idle = c->next;
        call_destroy(c);
    }
    hc->n_idle = 0;
    /* closes the cached connections, through on_close_socket */
    curl_multi_cleanup(hc->multi);
    hc->multi = NULL;
    for (unsigned i = 0; i < hc->n_urls; i++) {
        free(hc->urls[i].s);
        curl_url_cleanup(hc->urls[i].u);
    }
    hc->n_urls = 0;
    while (hc->socks != NULL) /* whatever curl did not close */
        sock_close(hc, hc->socks);
    uv_close((uv_handle_t *)&hc->timer, on_timer_closed);
}

static const struct transport_ops http_client_ops = {
    .call = hc_call,
    .free = hc_free,
};

struct transport *http_client_new(uv_loop_t *loop, const struct http_client_config *cfg)
{
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return NULL;
    struct http_client *hc = xcalloc(1, sizeof *hc);
    hc->base.ops = &http_client_ops;
    hc->base.scheme = "http";
    hc->loop = loop;

    long maxconn = DEFAULT_MAX_CONNECTIONS, maxhost = 0;
    if (cfg != NULL && cfg->max_connections > 0)
        maxconn = cfg->max_connections;
    if (cfg != NULL && cfg->max_host_connections > 0)
        maxhost = cfg->max_host_connections;

    hc->multi = curl_multi_init();
    if (hc->multi == NULL)
        goto fail;
    CURLMcode mc = CURLM_OK;
    mc |= curl_multi_setopt(hc->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
    mc |= curl_multi_setopt(hc->multi, CURLMOPT_SOCKETDATA, hc);
    mc |= curl_multi_setopt(hc->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
    mc |= curl_multi_setopt(hc->multi, CURLMOPT_TIMERDATA, hc);
    mc |= curl_multi_setopt(hc->multi, CURLMOPT_MAXCONNECTS, maxconn);
    mc |= curl_multi_setopt(hc->multi, CURLMOPT_MAX_HOST_CONNECTIONS, maxhost);
    if (mc != CURLM_OK)
        goto fail;
    if (uv_timer_init(loop, &hc->timer) != 0)
        goto fail;
    hc->timer.data = hc;
    hc->open_handles = 1;
    return &hc->base;

fail:
    if (hc->multi != NULL)
        curl_multi_cleanup(hc->multi);
    free(hc);
    curl_global_cleanup();
    return NULL;
}
