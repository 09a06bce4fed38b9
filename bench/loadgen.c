/*
 * loadgen.c - closed-loop load generator for dtxd and its baseline.
 *
 * A fixed number of "transactions" (--concurrency, default 128) are kept in
 * flight; as soon as one finishes, its slot starts the next. One thread runs
 * a libcurl multi handle whose connection cache keeps every connection alive,
 * so a steady run opens about `concurrency` connections and then reuses them.
 * It is driven by libcurl's event API (curl_multi_socket_action on an epoll
 * set, as dtxd drives its own client), not curl_multi_perform, which visits
 * every transfer on each wake-up and, in curl 7.88, polls each one's socket:
 * against dtxd at 128 in flight that loop made 13 system calls per request
 * and this one makes 4, for about a fifth less CPU. The load generator shares
 * the machine with what it measures, so its own cost matters.
 *
 * Modes:
 *   --mode dtx --dtxd URL --participant URL
 *       one transaction = one `POST URL/v1/transactions` carrying a 2-step
 *       saga whose actions and compensations are PARTICIPANT/a1, /c1, /a2,
 *       /c2, with "wait": true (the default; --wait false asks for the answer
 *       as soon as the saga is durable). Done when dtxd answers 201 and the
 *       top-level "status" field is "succeeded" ("submitted" is also fine
 *       with --wait false). Anything else is an error.
 *       With --body FILE the request body is FILE's content instead of the
 *       saga (bench/amqp.sh: a msg with an amqp:// step and "submit": true),
 *       judged the same way: give --wait false when the body says
 *       "wait": false. --participant is then not needed.
 *       With --batch N (and --wait false) each request is a
 *       `POST URL/v1/transactions:batch` of N copies of the body, done when
 *       dtxd answers 200 with N results of status 201; it counts as N
 *       transactions (throughput, --count), and its latency is the request's.
 *   --mode baseline --participant URL
 *       one transaction = POST PARTICIPANT/a1, then, once it answered,
 *       POST PARTICIPANT/a2: the two calls dtxd would make, with the same
 *       payloads and the same Dtx-* / Idempotency-Key / traceparent headers,
 *       and no coordinator. Done when both answered 2xx.
 *
 * --rate R turns the closed loop into an open one: transactions start on a
 * fixed schedule of R per second (still at most --concurrency in flight),
 * and a transaction that could not start on time because every slot was busy
 * counts its latency from when it was due (no coordinated omission). The
 * schedule is kept to about a millisecond: a transaction due within the next
 * millisecond starts now and counts from now.
 *
 * Time runs --warmup seconds (default 2), then --duration seconds (default
 * 10) of measurement; transactions finishing inside that window are counted
 * and their latency (start to finish, monotonic clock, microseconds) kept for
 * percentiles. After the window no new transaction starts and those still in
 * flight are drained (up to --timeout-ms) without being counted.
 *
 * --count N replaces the clock with a number, for profiling (a fixed amount
 * of work, say under callgrind): exactly N transactions are started, closed
 * loop, with no warmup; every one that ends is counted, and the window is
 * from the first start to the last end.
 *
 * Output: a human summary on stdout, then one machine-readable line
 *   RESULT mode=dtx wait=true concurrency=128 rate=0.0 duration_s=10.0
 *          tps=... p50_ms=... p90_ms=... p99_ms=... p999_ms=... max_ms=...
 *          mean_ms=... errors=N done=N loadgen_cpu=...
 * (on one line). Errors are transactions that ended in anything but success
 * inside the window; the first few are described on stderr as they happen,
 * and the exit status is 3 when there were any. loadgen_cpu is the cores this
 * process used during the window: on a shared box the load generator's own
 * cost is part of the picture.
 */
#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/buf.h"
#include "common/clock.h"
#include "common/rnd.h"
#include "stats.h"

#define MAX_RESPONSE  (64 * 1024) /* dtxd answers above this are an error */
#define ERR_KINDS     8           /* distinct error reasons tallied */
#define ERR_LOG_FIRST 5           /* errors described as they happen */

/* The payloads of the two steps; small, like a real debit/credit. */
static const char payload1[] = "{\"account\":\"A\",\"amount\":1}";
static const char payload2[] = "{\"account\":\"B\",\"amount\":1}";

enum mode { MODE_DTX, MODE_BASELINE };

struct config {
    enum mode mode;
    const char *dtxd;        /* base URL of dtxd (dtx mode) */
    const char *participant; /* base URL of the participant */
    long concurrency;
    double duration_s;
    double warmup_s;
    bool wait;
    long timeout_ms;       /* per HTTP request */
    double rate;           /* transactions/s to start; 0 = closed loop */
    long count;            /* > 0: start exactly this many, then stop (no clock) */
    const char *body_file; /* dtx mode: post this file's content, not the saga */
    long batch;            /* dtx mode: > 0: that many transactions per batch request */
};

/* One in-flight transaction and the easy handle that carries it. */
struct slot {
    CURL *easy;
    bool busy;
    int step;          /* baseline: which action (0 or 1) is in flight */
    uint64_t start_us; /* when the transaction started */
    char gid[40];
    char traceparent[64];
    struct curl_slist *hdrs; /* baseline: this transaction's headers */
    struct buf resp;         /* dtx: the answer's body */
    bool resp_overflow;
    char errbuf[CURL_ERROR_SIZE];
};

struct run {
    struct config cfg;
    CURLM *multi;
    int epfd;             /* the sockets libcurl asked to watch */
    struct fd_state *fds; /* by fd */
    size_t n_fds;
    long curl_timer_ms; /* libcurl's timeout: -1 none, else ms from curl_timer_set_us */
    uint64_t curl_timer_set_us;
    struct slot *slots;
    long in_flight;
    struct slot **idle; /* rate mode: slots waiting for their turn */
    long nidle;
    uint64_t next_due_us; /* rate mode: when the next transaction is due */
    char *dtx_url;        /* dtxd/v1/transactions */
    char *dtx_body;
    char *a1_url;
    char *a2_url;
    struct curl_slist *dtx_hdrs; /* shared by every dtx request */
    uint64_t warm_end_us;        /* measurement window [warm_end_us, end_us) */
    uint64_t end_us;
    bool stopping; /* past end_us: start nothing new */
    long started;  /* transactions started (for --count) */
    uint32_t *lat_us;
    size_t lat_len, lat_cap;
    uint64_t errors;       /* inside the window */
    uint64_t errors_total; /* including warmup and drain */
    struct {
        char reason[96];
        uint64_t count;
    } err_kinds[ERR_KINDS];
    uint64_t err_other;
    double window_s; /* measured seconds (shorter if interrupted) */
    double cpu;      /* cores this process used during the window */
};

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: loadgen --mode dtx|baseline --participant URL [--dtxd URL] [options]\n"
            "  --concurrency N   transactions in flight (default 128)\n"
            "  --duration S      measured seconds (default 10)\n"
            "  --warmup S        seconds before measuring (default 2)\n"
            "  --wait true|false dtx mode: wait for the saga to finish (default true)\n"
            "  --timeout-ms N    per-request timeout (default 60000)\n"
            "  --rate R          start R transactions/s (open loop); 0 = closed loop (default)\n"
            "  --count N         run exactly N transactions (no warmup, no clock), then stop\n"
            "  --body FILE       dtx mode: post FILE's content instead of the 2-step saga\n"
            "  --batch N         dtx mode, --wait false: N transactions per request, through\n"
            "                    POST /v1/transactions:batch\n");
}

/* ---- small helpers ---- */

static char *join_url(const char *base, const char *path)
{
    size_t n = strlen(base);
    while (n > 0 && base[n - 1] == '/')
        n--;
    size_t m = strlen(path);
    char *s = xmalloc(n + m + 1);
    memcpy(s, base, n);
    memcpy(s + n, path, m + 1);
    return s;
}

static void hex_random(char *out, size_t nhex)
{
    static const char digits[] = "0123456789abcdef";
    uint64_t r = 0;
    for (size_t i = 0; i < nhex; i++) {
        if (i % 16 == 0)
            r = rnd_next();
        out[i] = digits[r & 15];
        r >>= 4;
    }
    out[nhex] = '\0';
}

static size_t skip_ws(const char *s, size_t n, size_t i)
{
    while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
        i++;
    return i;
}

/* Index of the closing quote of a JSON string whose content starts at i, or n. */
static size_t string_end(const char *s, size_t n, size_t i)
{
    while (i < n && s[i] != '"') {
        if (s[i] == '\\')
            i++;
        i++;
    }
    return i < n ? i : n;
}

/*
 * Find the string value of `key` among the top-level members of the JSON
 * object in s[0..n). Nested objects and arrays are skipped, so a branch's
 * "status" is never mistaken for the transaction's. On success returns 0 and
 * points *val (into s, escapes not decoded) and *vlen at the value; -1 when
 * the key is absent, not a string, or s is not an object.
 */
static int json_top_string(const char *s, size_t n, const char *key, const char **val /* OUT */,
                           size_t *vlen /* OUT */)
{
    size_t klen = strlen(key);
    size_t i = skip_ws(s, n, 0);
    if (i >= n || s[i] != '{')
        return -1;
    i++;
    int depth = 1;
    while (i < n) {
        char c = s[i];
        if (c == '"') {
            size_t start = i + 1;
            size_t end = string_end(s, n, start);
            if (end >= n)
                return -1;
            i = end + 1;
            if (depth != 1)
                continue;
            size_t k = skip_ws(s, n, i);
            if (k >= n || s[k] != ':')
                continue; /* a value, not a key */
            if (end - start == klen && memcmp(s + start, key, klen) == 0) {
                k = skip_ws(s, n, k + 1);
                if (k >= n || s[k] != '"')
                    return -1;
                size_t vend = string_end(s, n, k + 1);
                if (vend >= n)
                    return -1;
                *val = s + k + 1;
                *vlen = vend - (k + 1);
                return 0;
            }
            i = k + 1;
        } else if (c == '{' || c == '[') {
            depth++;
            i++;
        } else if (c == '}' || c == ']') {
            depth--;
            i++;
            if (depth == 0)
                return -1;
        } else {
            i++;
        }
    }
    return -1;
}

/* ---- results ---- */

static void record_latency(struct run *r, uint64_t us)
{
    if (r->lat_len == r->lat_cap) {
        r->lat_cap = r->lat_cap ? r->lat_cap * 2 : 1 << 16;
        r->lat_us = xrealloc(r->lat_us, r->lat_cap * sizeof *r->lat_us);
    }
    r->lat_us[r->lat_len++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
}

/*
 * Count a failed transaction. kind is tallied (keep it free of variable
 * detail such as timings); detail, when not NULL, is only printed with the
 * first few errors.
 */
static void note_error(struct run *r, uint64_t now, const char *kind, const char *detail)
{
    r->errors_total++;
    if (now >= r->warm_end_us && now < r->end_us)
        r->errors++;
    if (r->errors_total <= ERR_LOG_FIRST)
        fprintf(stderr, "loadgen: error: %s%s%.200s\n", kind, detail ? ": " : "",
                detail ? detail : "");
    for (int i = 0; i < ERR_KINDS; i++) {
        if (r->err_kinds[i].count == 0) {
            snprintf(r->err_kinds[i].reason, sizeof r->err_kinds[i].reason, "%s", kind);
            r->err_kinds[i].count = 1;
            return;
        }
        if (strcmp(r->err_kinds[i].reason, kind) == 0) {
            r->err_kinds[i].count++;
            return;
        }
    }
    r->err_other++;
}

/* ---- requests ---- */

static size_t discard_body(char *p, size_t size, size_t nmemb, void *arg)
{
    (void)p;
    (void)arg;
    return size * nmemb;
}

static size_t keep_body(char *p, size_t size, size_t nmemb, void *arg)
{
    struct slot *s = arg;
    if (buf_append(&s->resp, p, size * nmemb) != 0)
        s->resp_overflow = true;
    return size * nmemb;
}

/* What we know of a socket: what epoll watches for, what curl wants. */
struct fd_state {
    bool registered; /* in epfd */
    bool owned;      /* a connection socket we made (on_open_socket) */
    uint32_t events; /* EPOLLIN | EPOLLOUT being watched; 0 = parked */
    int curl_what;   /* CURL_POLL_*; 0 once curl said REMOVE */
};

static struct fd_state *fd_get(struct run *r, int fd)
{
    if ((size_t)fd >= r->n_fds) {
        size_t n = r->n_fds ? r->n_fds : 256;
        while (n <= (size_t)fd)
            n *= 2;
        r->fds = xrealloc(r->fds, n * sizeof *r->fds);
        memset(r->fds + r->n_fds, 0, (n - r->n_fds) * sizeof *r->fds);
        r->n_fds = n;
    }
    return &r->fds[fd];
}

/* Make epoll watch fd for events (0: registered but parked). */
static void fd_watch(struct run *r, int fd, uint32_t events)
{
    struct fd_state *f = fd_get(r, fd);
    if (f->registered && f->events == events)
        return;
    struct epoll_event ev = {.events = events, .data.fd = fd};
    if (epoll_ctl(r->epfd, f->registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &ev) != 0) {
        perror("loadgen: epoll_ctl");
        exit(1);
    }
    f->registered = true;
    f->events = events;
}

/*
 * Connection sockets are made and closed here (CURLOPT_OPENSOCKETFUNCTION,
 * CURLOPT_CLOSESOCKETFUNCTION) so that each stays in epfd for its whole life:
 * curl 7.88 says CURL_POLL_REMOVE for a keep-alive connection at the end of
 * every transfer and asks for it again at the next, which as epoll_ctl DEL
 * and ADD would cost more than curl_multi_perform's polling saves (dtxd's
 * client does the same, see src/transport/http_client.c).
 */
static curl_socket_t on_open_socket(void *arg, curlsocktype purpose, struct curl_sockaddr *addr)
{
    struct run *r = arg;
    if (purpose != CURLSOCKTYPE_IPCXN)
        return CURL_SOCKET_BAD;
    int fd = socket(addr->family, addr->socktype | SOCK_CLOEXEC, addr->protocol);
    if (fd < 0)
        return CURL_SOCKET_BAD;
    struct fd_state *f = fd_get(r, fd);
    *f = (struct fd_state){.owned = true};
    return fd;
}

static int on_close_socket(void *arg, curl_socket_t fd)
{
    struct run *r = arg;
    struct fd_state *f = fd_get(r, fd);
    if (f->registered)
        epoll_ctl(r->epfd, EPOLL_CTL_DEL, fd, NULL);
    *f = (struct fd_state){0};
    return close(fd);
}

/* CURLMOPT_SOCKETFUNCTION: watch fd for what curl wants. */
static int on_socket(CURL *easy, curl_socket_t fd, int what, void *arg, void *sockp)
{
    struct run *r = arg;
    (void)easy;
    (void)sockp;
    struct fd_state *f = fd_get(r, fd);
    if (what == CURL_POLL_REMOVE) {
        f->curl_what = 0;
        if (f->owned) {
            /* an idle keep-alive connection: keep reading, to notice a close */
            fd_watch(r, fd, f->events & EPOLLIN);
        } else if (f->registered) {
            epoll_ctl(r->epfd, EPOLL_CTL_DEL, fd, NULL);
            *f = (struct fd_state){0};
        }
        return 0;
    }
    f->curl_what = what;
    uint32_t events = 0;
    if (what == CURL_POLL_IN || what == CURL_POLL_INOUT)
        events |= EPOLLIN;
    if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT)
        events |= EPOLLOUT;
    fd_watch(r, fd, events);
    return 0;
}

/* Options every request of a slot shares; set once. */
static void slot_init(struct run *r, struct slot *s)
{
    s->easy = curl_easy_init();
    if (s->easy == NULL) {
        fprintf(stderr, "loadgen: curl_easy_init failed\n");
        exit(1);
    }
    buf_init(&s->resp, MAX_RESPONSE);
    CURL *e = s->easy;
    curl_easy_setopt(e, CURLOPT_PRIVATE, s);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, r->cfg.timeout_ms);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, s->errbuf);
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, on_open_socket);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, r);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, on_close_socket);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, r);
    if (r->cfg.mode == MODE_DTX) {
        curl_easy_setopt(e, CURLOPT_URL, r->dtx_url);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->dtx_body);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)strlen(r->dtx_body));
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->dtx_hdrs);
        curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, keep_body);
        curl_easy_setopt(e, CURLOPT_WRITEDATA, s);
    } else {
        curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard_body);
    }
}

static void add_header(struct curl_slist **list, const char *line)
{
    struct curl_slist *n = curl_slist_append(*list, line);
    if (n == NULL) {
        fprintf(stderr, "loadgen: out of memory\n");
        exit(1);
    }
    *list = n;
}

/* Send step s->step (0 or 1) of a baseline transaction: the call dtxd would make. */
static void baseline_send(struct run *r, struct slot *s)
{
    const char *branch = s->step == 0 ? "1" : "2";
    const char *payload = s->step == 0 ? payload1 : payload2;
    char line[160];
    curl_slist_free_all(s->hdrs);
    s->hdrs = NULL;
    add_header(&s->hdrs, "Content-Type: application/json");
    snprintf(line, sizeof line, "Dtx-Gid: %s", s->gid);
    add_header(&s->hdrs, line);
    snprintf(line, sizeof line, "Dtx-Branch: %s", branch);
    add_header(&s->hdrs, line);
    add_header(&s->hdrs, "Dtx-Op: action");
    add_header(&s->hdrs, "Dtx-Type: saga");
    snprintf(line, sizeof line, "Idempotency-Key: %s/%s/action", s->gid, branch);
    add_header(&s->hdrs, line);
    snprintf(line, sizeof line, "traceparent: %s", s->traceparent);
    add_header(&s->hdrs, line);
    add_header(&s->hdrs, "Expect:");
    curl_easy_setopt(s->easy, CURLOPT_URL, s->step == 0 ? r->a1_url : r->a2_url);
    curl_easy_setopt(s->easy, CURLOPT_POSTFIELDS, payload);
    curl_easy_setopt(s->easy, CURLOPT_POSTFIELDSIZE, (long)strlen(payload));
    curl_easy_setopt(s->easy, CURLOPT_HTTPHEADER, s->hdrs);
}

static void slot_add(struct run *r, struct slot *s)
{
    CURLMcode mc = curl_multi_add_handle(r->multi, s->easy);
    if (mc != CURLM_OK) {
        fprintf(stderr, "loadgen: curl_multi_add_handle: %s\n", curl_multi_strerror(mc));
        exit(1);
    }
}

/* Start a new transaction in a free slot; its latency counts from start_us. */
static void txn_start(struct run *r, struct slot *s, uint64_t start_us)
{
    s->busy = true;
    r->in_flight++;
    r->started++;
    s->start_us = start_us;
    if (r->cfg.mode == MODE_DTX) {
        buf_reset(&s->resp);
        s->resp_overflow = false;
    } else {
        /* a gid shaped like a generated one, and a fresh trace */
        char trace[33], span[17];
        hex_random(s->gid, 32);
        hex_random(trace, 32);
        hex_random(span, 16);
        snprintf(s->traceparent, sizeof s->traceparent, "00-%s-%s-01", trace, span);
        s->step = 0;
        baseline_send(r, s);
    }
    slot_add(r, s);
}

static void txn_end(struct run *r, struct slot *s)
{
    s->busy = false;
    r->in_flight--;
    if (r->cfg.rate > 0)
        r->idle[r->nidle++] = s;
    else if (!r->stopping && !interrupted && (r->cfg.count == 0 || r->started < r->cfg.count))
        txn_start(r, s, clock_mono_us());
}

/*
 * Rate mode: start every transaction due by now (+1 ms) that has a free
 * slot. Returns how many milliseconds the loop may sleep before the next one
 * is due (20 at most).
 */
static int start_due(struct run *r, uint64_t now)
{
    uint64_t interval = (uint64_t)(1e6 / r->cfg.rate);
    if (interval == 0)
        interval = 1;
    while (r->nidle > 0 && r->next_due_us <= now + 1000) {
        struct slot *s = r->idle[--r->nidle];
        txn_start(r, s, r->next_due_us < now ? r->next_due_us : now);
        r->next_due_us += interval;
    }
    if (r->nidle == 0 || r->next_due_us <= now + 1000)
        return 20; /* every slot busy: a completion wakes the loop */
    uint64_t wait_ms = (r->next_due_us - now - 1000 + 999) / 1000;
    return wait_ms > 20 ? 20 : (int)wait_ms;
}

/*
 * Judge a dtx answer from its status code and the top-level "status" field.
 * Returns NULL on success, else a reason written into reason[rlen].
 */
/* A batch answer: 200 with cfg.batch results, each of status 201. */
static const char *batch_judge(struct run *r, struct slot *s, long code, char *reason, size_t rlen)
{
    long created = 0, results = 0;
    const char *p = s->resp.data != NULL ? s->resp.data : "";
    for (const char *at = p; (at = strstr(at, "{\"status\":")) != NULL; at += 10) {
        results++;
        created += strncmp(at + 10, "201,", 4) == 0;
    }
    if (code == 200 && results == r->cfg.batch && created == results)
        return NULL;
    snprintf(reason, rlen, "HTTP %ld, %ld of %ld results created", code, created, r->cfg.batch);
    return reason;
}

static const char *dtx_judge(struct run *r, struct slot *s, long code, char *reason, size_t rlen)
{
    if (r->cfg.batch > 0)
        return batch_judge(r, s, code, reason, rlen);
    const char *st = NULL;
    size_t stlen = 0;
    if (s->resp_overflow) {
        snprintf(reason, rlen, "HTTP %ld: answer over %d bytes", code, MAX_RESPONSE);
        return reason;
    }
    int found = s->resp.data != NULL
                    ? json_top_string(s->resp.data, s->resp.len, "status", &st, &stlen)
                    : -1;
    if (code == 201 && found == 0) {
        if (stlen == 9 && memcmp(st, "succeeded", 9) == 0)
            return NULL;
        if (!r->cfg.wait && stlen == 9 && memcmp(st, "submitted", 9) == 0)
            return NULL;
    }
    if (found == 0)
        snprintf(reason, rlen, "HTTP %ld status=%.*s", code, (int)(stlen < 40 ? stlen : 40), st);
    else
        snprintf(reason, rlen, "HTTP %ld without a top-level status", code);
    return reason;
}

static void on_done(struct run *r, CURL *easy, CURLcode rc)
{
    struct slot *s = NULL;
    curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&s);
    curl_multi_remove_handle(r->multi, easy);
    uint64_t now = clock_mono_us();
    char reason[160];

    if (rc != CURLE_OK) {
        snprintf(reason, sizeof reason, "curl: %s", curl_easy_strerror(rc));
        note_error(r, now, reason, s->errbuf[0] ? s->errbuf : NULL);
        s->errbuf[0] = '\0';
        txn_end(r, s);
        return;
    }
    long code = 0;
    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &code);

    if (r->cfg.mode == MODE_DTX) {
        const char *why = dtx_judge(r, s, code, reason, sizeof reason);
        if (why != NULL) {
            note_error(r, now, why, s->resp.data);
            txn_end(r, s);
            return;
        }
    } else {
        if (code < 200 || code > 299) {
            snprintf(reason, sizeof reason, "HTTP %ld from a%d", code, s->step + 1);
            note_error(r, now, reason, NULL);
            txn_end(r, s);
            return;
        }
        if (s->step == 0) {
            s->step = 1;
            baseline_send(r, s);
            slot_add(r, s);
            return;
        }
    }
    if (now >= r->warm_end_us && now < r->end_us)
        record_latency(r, now - s->start_us);
    txn_end(r, s);
}

/* ---- main ---- */

static double parse_double(const char *opt, const char *v, double min)
{
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    if (errno != 0 || end == v || *end != '\0' || d < min) {
        fprintf(stderr, "loadgen: bad value for %s: %s\n", opt, v);
        exit(2);
    }
    return d;
}

static void parse_args(struct config *c, int argc, char **argv)
{
    const char *mode = NULL;
    c->concurrency = 128;
    c->duration_s = 10;
    c->warmup_s = 2;
    c->wait = true;
    c->timeout_ms = 60000;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage();
            exit(0);
        }
        if (i + 1 >= argc) {
            usage();
            exit(2);
        }
        const char *v = argv[++i];
        if (strcmp(a, "--mode") == 0)
            mode = v;
        else if (strcmp(a, "--dtxd") == 0)
            c->dtxd = v;
        else if (strcmp(a, "--participant") == 0)
            c->participant = v;
        else if (strcmp(a, "--concurrency") == 0)
            c->concurrency = (long)parse_double(a, v, 1);
        else if (strcmp(a, "--duration") == 0)
            c->duration_s = parse_double(a, v, 0.1);
        else if (strcmp(a, "--warmup") == 0)
            c->warmup_s = parse_double(a, v, 0);
        else if (strcmp(a, "--timeout-ms") == 0)
            c->timeout_ms = (long)parse_double(a, v, 1);
        else if (strcmp(a, "--rate") == 0)
            c->rate = parse_double(a, v, 0);
        else if (strcmp(a, "--count") == 0)
            c->count = (long)parse_double(a, v, 1);
        else if (strcmp(a, "--body") == 0)
            c->body_file = v;
        else if (strcmp(a, "--batch") == 0)
            c->batch = (long)parse_double(a, v, 1);
        else if (strcmp(a, "--wait") == 0 && strcmp(v, "true") == 0)
            c->wait = true;
        else if (strcmp(a, "--wait") == 0 && strcmp(v, "false") == 0)
            c->wait = false;
        else {
            usage();
            exit(2);
        }
    }
    if (mode != NULL && strcmp(mode, "dtx") == 0) {
        c->mode = MODE_DTX;
    } else if (mode != NULL && strcmp(mode, "baseline") == 0) {
        c->mode = MODE_BASELINE;
    } else {
        usage();
        exit(2);
    }
    if ((c->participant == NULL && (c->mode == MODE_BASELINE || c->body_file == NULL)) ||
        (c->mode == MODE_DTX && c->dtxd == NULL)) {
        usage();
        exit(2);
    }
    if (c->batch > 0 && (c->mode != MODE_DTX || c->wait)) {
        fprintf(stderr, "loadgen: --batch needs --mode dtx and --wait false\n");
        exit(2);
    }
    if (c->batch > 0 && c->count > 0)
        c->count = (c->count + c->batch - 1) / c->batch; /* requests */
    if (c->count > 0) {
        /* a fixed amount of work: no warmup, no time limit, closed loop */
        c->rate = 0;
        c->warmup_s = 0;
        c->duration_s = 1e9;
        if (c->concurrency > c->count)
            c->concurrency = c->count;
    }
}

static char *saga_body(const struct run *r)
{
    const char *p = r->cfg.participant;
    size_t n = strlen(p);
    while (n > 0 && p[n - 1] == '/')
        n--;
    struct buf b;
    buf_init(&b, 64 * 1024);
    int rc = buf_printf(&b,
                        "{\"type\":\"saga\",\"steps\":["
                        "{\"action\":\"%.*s/a1\",\"compensate\":\"%.*s/c1\",\"payload\":%s},"
                        "{\"action\":\"%.*s/a2\",\"compensate\":\"%.*s/c2\",\"payload\":%s}"
                        "],\"wait\":%s}",
                        (int)n, p, (int)n, p, payload1, (int)n, p, (int)n, p, payload2,
                        r->cfg.wait ? "true" : "false");
    if (rc != 0) {
        fprintf(stderr, "loadgen: participant URL too long\n");
        exit(2);
    }
    return buf_steal(&b, NULL);
}

/* The content of path, NUL-terminated; exits when it cannot be read. */
static char *read_body(const char *path)
{
    FILE *f = fopen(path, "rb");
    struct buf b;
    buf_init(&b, 1024 * 1024);
    char chunk[4096];
    while (f != NULL) {
        size_t n = fread(chunk, 1, sizeof chunk, f);
        if (n == 0 || buf_append(&b, chunk, n) != 0)
            break;
    }
    if (f == NULL || ferror(f) || !feof(f) || b.len == 0) {
        fprintf(stderr, "loadgen: cannot read a body from %s\n", path);
        exit(2);
    }
    fclose(f);
    return buf_steal(&b, NULL);
}

static void drain_messages(struct run *r)
{
    for (;;) {
        int left = 0;
        CURLMsg *m = curl_multi_info_read(r->multi, &left);
        if (m == NULL)
            break;
        if (m->msg == CURLMSG_DONE)
            on_done(r, m->easy_handle, m->data.result);
    }
}

/* CURLMOPT_TIMERFUNCTION: remember when libcurl wants its timeout call. */
static int on_curl_timer(CURLM *multi, long timeout_ms, void *arg)
{
    struct run *r = arg;
    (void)multi;
    r->curl_timer_ms = timeout_ms;
    r->curl_timer_set_us = clock_mono_us();
    return 0;
}

/* Milliseconds until libcurl's timeout is due (0: now), at most cap. */
static int curl_due_ms(const struct run *r, uint64_t now, int cap)
{
    if (r->curl_timer_ms < 0)
        return cap;
    uint64_t due = r->curl_timer_set_us + (uint64_t)r->curl_timer_ms * 1000u;
    if (due <= now)
        return 0;
    uint64_t ms = (due - now + 999) / 1000;
    return ms < (uint64_t)cap ? (int)ms : cap;
}

/* Build what every request shares, and one easy handle per slot. */
static void run_setup(struct run *r)
{
    if (r->cfg.mode == MODE_DTX) {
        r->dtx_url = join_url(r->cfg.dtxd, "/v1/transactions");
        r->dtx_body = r->cfg.body_file ? read_body(r->cfg.body_file) : saga_body(r);
        if (r->cfg.batch > 0) {
            /* {"transactions":[body,body,...]} to the batch endpoint */
            struct buf b;
            buf_init(&b, SIZE_MAX / 2);
            buf_puts(&b, "{\"transactions\":[");
            for (long i = 0; i < r->cfg.batch; i++) {
                if (i)
                    buf_puts(&b, ",");
                buf_puts(&b, r->dtx_body);
            }
            buf_puts(&b, "]}");
            free(r->dtx_body);
            r->dtx_body = buf_steal(&b, NULL);
            free(r->dtx_url);
            r->dtx_url = join_url(r->cfg.dtxd, "/v1/transactions:batch");
        }
        add_header(&r->dtx_hdrs, "Content-Type: application/json");
        add_header(&r->dtx_hdrs, "Expect:");
    }
    if (r->cfg.participant != NULL) {
        r->a1_url = join_url(r->cfg.participant, "/a1");
        r->a2_url = join_url(r->cfg.participant, "/a2");
    }

    r->multi = curl_multi_init();
    if (r->multi == NULL) {
        fprintf(stderr, "loadgen: curl_multi_init failed\n");
        exit(1);
    }
    long conc = r->cfg.concurrency;
    curl_multi_setopt(r->multi, CURLMOPT_MAXCONNECTS, conc + 16);
    curl_multi_setopt(r->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_NOTHING);
    r->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (r->epfd < 0) {
        perror("loadgen: epoll_create1");
        exit(1);
    }
    r->curl_timer_ms = -1;
    curl_multi_setopt(r->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(r->multi, CURLMOPT_SOCKETDATA, r);
    curl_multi_setopt(r->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
    curl_multi_setopt(r->multi, CURLMOPT_TIMERDATA, r);
    r->slots = xcalloc((size_t)conc, sizeof *r->slots);
    r->idle = xcalloc((size_t)conc, sizeof *r->idle);
    for (long i = 0; i < conc; i++)
        slot_init(r, &r->slots[i]);
}

/*
 * The closed loop: start every slot, then perform / collect / poll until the
 * window has passed and the stragglers are in (or --timeout-ms later). Sets
 * r->window_s (the measured seconds) and r->cpu (cores loadgen used in them).
 */
static void run_loop(struct run *r)
{
    uint64_t t0 = clock_mono_us();
    r->warm_end_us = t0 + (uint64_t)(r->cfg.warmup_s * 1e6);
    r->end_us = r->warm_end_us + (uint64_t)(r->cfg.duration_s * 1e6);
    uint64_t drain_end = r->end_us + (uint64_t)r->cfg.timeout_ms * 1000u;
    uint64_t stop_us = r->end_us;
    bool warm_marked = false;
    double cpu_warm = 0, cpu_end = 0;

    if (r->cfg.rate > 0) {
        for (long i = r->cfg.concurrency - 1; i >= 0; i--)
            r->idle[r->nidle++] = &r->slots[i];
        r->next_due_us = t0;
    } else {
        for (long i = 0; i < r->cfg.concurrency; i++)
            txn_start(r, &r->slots[i], t0);
    }

    struct epoll_event evs[256];
    int nev = 0;
    for (;;) {
        int running = 0;
        CURLMcode mc = CURLM_OK;
        for (int i = 0; i < nev && mc == CURLM_OK; i++) {
            int fd = evs[i].data.fd;
            if (fd_get(r, fd)->curl_what == 0) {
                /* an idle connection stirred (the peer closed it): park it;
                 * curl checks a connection before it reuses it */
                fd_watch(r, fd, 0);
                continue;
            }
            int bits = 0;
            if (evs[i].events & (EPOLLIN | EPOLLHUP))
                bits |= CURL_CSELECT_IN;
            if (evs[i].events & EPOLLOUT)
                bits |= CURL_CSELECT_OUT;
            if (evs[i].events & EPOLLERR)
                bits |= CURL_CSELECT_ERR;
            mc = curl_multi_socket_action(r->multi, fd, bits, &running);
        }
        if (mc == CURLM_OK && curl_due_ms(r, clock_mono_us(), 1) == 0) {
            r->curl_timer_ms = -1;
            mc = curl_multi_socket_action(r->multi, CURL_SOCKET_TIMEOUT, 0, &running);
        }
        if (mc != CURLM_OK) {
            fprintf(stderr, "loadgen: curl_multi_socket_action: %s\n", curl_multi_strerror(mc));
            exit(1);
        }
        drain_messages(r);
        uint64_t now = clock_mono_us();
        if (!warm_marked && now >= r->warm_end_us) {
            warm_marked = true;
            cpu_warm = cpu_seconds();
        }
        if (r->cfg.count > 0 && !r->stopping && r->started >= r->cfg.count && r->in_flight == 0)
            r->end_us = now; /* --count: the last one is in */
        if (!r->stopping && (now >= r->end_us || interrupted)) {
            r->stopping = true;
            stop_us = now < r->end_us ? now : r->end_us;
            cpu_end = cpu_seconds();
        }
        if (r->stopping && (r->in_flight == 0 || now >= drain_end || interrupted))
            break;
        int sleep_ms = 20;
        if (r->cfg.rate > 0 && !r->stopping)
            sleep_ms = start_due(r, now);
        nev = epoll_wait(r->epfd, evs, (int)(sizeof evs / sizeof evs[0]),
                         curl_due_ms(r, clock_mono_us(), sleep_ms));
        if (nev < 0 && errno != EINTR) {
            perror("loadgen: epoll_wait");
            exit(1);
        }
        if (nev < 0)
            nev = 0;
    }
    if (interrupted)
        fprintf(stderr, "loadgen: interrupted; the figures cover a partial window\n");
    r->window_s = stop_us > r->warm_end_us ? (double)(stop_us - r->warm_end_us) / 1e6 : 0;
    r->cpu = warm_marked && r->window_s > 0 ? (cpu_end - cpu_warm) / r->window_s : 0;
}

/* The human summary, then the RESULT line. Sorts r->lat_us. */
static void report(struct run *r)
{
    qsort(r->lat_us, r->lat_len, sizeof *r->lat_us, cmp_u32);
    size_t n = r->lat_len;
    /* a batch request carries cfg.batch transactions */
    size_t done = r->cfg.batch > 0 ? n * (size_t)r->cfg.batch : n;
    double tps = r->window_s > 0 ? (double)done / r->window_s : 0;
    double mean_ms = 0;
    for (size_t i = 0; i < n; i++)
        mean_ms += r->lat_us[i];
    mean_ms = n ? mean_ms / (double)n / 1000.0 : 0;
    double p50 = pct_ms(r->lat_us, n, 50), p90 = pct_ms(r->lat_us, n, 90);
    double p99 = pct_ms(r->lat_us, n, 99), p999 = pct_ms(r->lat_us, n, 99.9);
    double max = n ? r->lat_us[n - 1] / 1000.0 : 0;
    bool dtx = r->cfg.mode == MODE_DTX;
    const char *mode = dtx ? "dtx" : "baseline";
    const char *wait = dtx ? (r->cfg.wait ? "true" : "false") : "-";

    printf("mode          %s (%s)\n", mode,
           dtx ? (r->cfg.body_file ? r->cfg.body_file
                  : r->cfg.wait    ? "2-step saga, wait=true"
                                   : "2-step saga, wait=false")
               : "a1 then a2, no coordinator");
    printf("concurrency   %ld%s\n", r->cfg.concurrency, r->cfg.rate > 0 ? " at most" : "");
    if (r->cfg.batch > 0)
        printf("batch         %ld transactions per request (latency: per request)\n", r->cfg.batch);
    if (r->cfg.rate > 0)
        printf("rate          %.1f transactions/s scheduled\n", r->cfg.rate);
    printf("window        %.1f s after %.1f s warmup\n", r->window_s, r->cfg.warmup_s);
    printf("done          %zu transactions\n", done);
    printf("throughput    %.1f transactions/s\n", tps);
    printf("latency ms    mean %.3f  p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max %.3f\n", mean_ms,
           p50, p90, p99, p999, max);
    printf("errors        %" PRIu64 " in window, %" PRIu64 " in all\n", r->errors, r->errors_total);
    for (int i = 0; i < ERR_KINDS && r->err_kinds[i].count; i++)
        printf("  %8" PRIu64 "  %s\n", r->err_kinds[i].count, r->err_kinds[i].reason);
    if (r->err_other)
        printf("  %8" PRIu64 "  (other reasons)\n", r->err_other);
    printf("loadgen cpu   %.2f cores\n", r->cpu);
    printf("RESULT mode=%s wait=%s concurrency=%ld rate=%.1f duration_s=%.1f tps=%.1f p50_ms=%.3f "
           "p90_ms=%.3f p99_ms=%.3f p999_ms=%.3f max_ms=%.3f mean_ms=%.3f errors=%" PRIu64
           " done=%zu loadgen_cpu=%.2f batch=%ld\n",
           mode, wait, r->cfg.concurrency, r->cfg.rate, r->window_s, tps, p50, p90, p99, p999, max,
           mean_ms, r->errors, done, r->cpu, r->cfg.batch);
    fflush(stdout);
}

static void run_free(struct run *r)
{
    for (long i = 0; i < r->cfg.concurrency; i++) {
        struct slot *s = &r->slots[i];
        if (s->busy)
            curl_multi_remove_handle(r->multi, s->easy);
        curl_easy_cleanup(s->easy);
        curl_slist_free_all(s->hdrs);
        buf_free(&s->resp);
    }
    curl_multi_cleanup(r->multi);
    close(r->epfd);
    free(r->fds);
    curl_slist_free_all(r->dtx_hdrs);
    free(r->slots);
    free(r->idle);
    free(r->lat_us);
    free(r->dtx_url);
    free(r->dtx_body);
    free(r->a1_url);
    free(r->a2_url);
}

int main(int argc, char **argv)
{
    static struct run run;
    parse_args(&run.cfg, argc, argv);

    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "loadgen: curl_global_init failed\n");
        return 1;
    }
    run_setup(&run);
    run_loop(&run);
    report(&run);
    run_free(&run);
    curl_global_cleanup();
    /* 3: the run completed but some transactions failed */
    return run.errors > 0 ? 3 : 0;
}
