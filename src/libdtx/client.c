/*
 * client.c - the client of the dtxd HTTP API (include/dtx.h, "client side").
 *
 * Shape: one libcurl easy handle per struct dtx_client, made once and reused
 * for every request, so that curl's connection cache keeps the connection to
 * the coordinator alive between calls (and one to each participant that
 * dtx_tcc_try talks to). Requests are blocking: a client is a tool for a
 * service's request handler or a command-line program, not an event loop.
 * The options every request shares (error buffer, write callback, no
 * signals, protocols, the API's headers) are set once in dtx_client_new();
 * a request sets only its URL, method, body, headers and timeout.
 *
 * The answer is collected into one buffer with a hard cap (ANSWER_MAX), then
 * classified by status code only: 2xx is parsed as the endpoint's object
 * (reply.c); 404, 409 and every other status are DTX_ENOTFOUND,
 * DTX_ECONFLICT and DTX_EAPI, with the error body's code, field and message
 * copied into the client's struct dtx_error (fixed buffers, so that
 * recording an error never allocates). Every call clears that record first.
 *
 * Gids and branch ids are checked against their alphabet before they are put
 * into a path, which is why paths need no escaping; list filters are
 * escaped.
 */
#include <curl/curl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "client_int.h"

#define ANSWER_MAX      (64u * 1024 * 1024) /* bytes of one answer kept */
#define WAIT_DEFAULT_MS 30000               /* dtxd's wait bound when none is given */
#define POLL_FIRST_MS   10                  /* dtx_wait: first interval, doubled ... */
#define POLL_MAX_MS     200                 /* ... up to this */
#define SNIPPET_MAX     120                 /* answer bytes quoted in a message */
#define CODE_MAX        64
#define FIELD_MAX       256
#define MESSAGE_MAX     512

struct dtx_client {
    CURL *curl;
    char *base; /* "http://host:port", without a trailing '/' */
    int64_t timeout_ms;
    struct curl_slist *api_headers; /* Content-Type, Accept, no Expect */
    char errbuf[CURL_ERROR_SIZE];

    char *answer; /* the body of the last answer, NUL-terminated */
    size_t answer_len, answer_cap;
    int answer_over; /* the answer passed ANSWER_MAX */

    struct libdtx_amqp *amqp; /* dtx_client_set_amqp: amqp:// Tries */

    struct dtx_error err; /* points into the buffers below */
    char err_code[CODE_MAX];
    char err_field[FIELD_MAX];
    char err_message[MESSAGE_MAX];
};

/* ---- errors ------------------------------------------------------------ */

static void clear_error(struct dtx_client *c)
{
    c->err.code = DTX_OK;
    c->err.http_status = 0;
    c->err_code[0] = c->err_field[0] = c->err_message[0] = '\0';
    c->errbuf[0] = '\0';
}

/* Record a failure and return code. */
static int fail(struct dtx_client *c, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(struct dtx_client *c, int code, const char *fmt, ...)
{
    va_list ap;

    c->err.code = code;
    va_start(ap, fmt);
    vsnprintf(c->err_message, sizeof c->err_message, fmt, ap);
    va_end(ap);
    return code;
}

const struct dtx_error *dtx_client_last_error(const struct dtx_client *c)
{
    return c != NULL ? &c->err : NULL;
}

/* ---- the client -------------------------------------------------------- */

static size_t on_write(char *data, size_t size, size_t nmemb, void *arg)
{
    struct dtx_client *c = arg;
    size_t n = size * nmemb;

    if (n > ANSWER_MAX - c->answer_len) {
        c->answer_over = 1;
        return 0; /* curl stops with CURLE_WRITE_ERROR */
    }
    if (c->answer_len + n + 1 > c->answer_cap) {
        size_t cap = c->answer_cap ? c->answer_cap : 4096;
        char *p;

        while (cap < c->answer_len + n + 1)
            cap *= 2;
        p = realloc(c->answer, cap);
        if (p == NULL)
            return 0;
        c->answer = p;
        c->answer_cap = cap;
    }
    memcpy(c->answer + c->answer_len, data, n);
    c->answer_len += n;
    c->answer[c->answer_len] = '\0';
    return n;
}

int dtx_client_new(const char *base_url, struct dtx_client **out)
{
    struct dtx_client *c;
    size_t n;

    if (base_url == NULL || out == NULL ||
        (strncmp(base_url, "http://", 7) != 0 && strncmp(base_url, "https://", 8) != 0) ||
        !libdtx_valid_url(base_url))
        return DTX_EINVAL;
    c = calloc(1, sizeof *c);
    if (c == NULL)
        return DTX_ENOMEM;
    c->err.api_code = c->err_code;
    c->err.field = c->err_field;
    c->err.message = c->err_message;
    c->timeout_ms = DTX_CLIENT_TIMEOUT_MS;
    c->base = strdup(base_url);
    if (c->base == NULL)
        goto oom;
    n = strlen(c->base);
    while (n > 0 && c->base[n - 1] == '/')
        c->base[--n] = '\0';
    c->curl = curl_easy_init();
    if (c->curl == NULL)
        goto oom;
    c->api_headers = curl_slist_append(NULL, "Content-Type: application/json");
    if (c->api_headers != NULL)
        c->api_headers = curl_slist_append(c->api_headers, "Accept: application/json");
    if (c->api_headers != NULL)
        c->api_headers = curl_slist_append(c->api_headers, "Expect:");
    if (c->api_headers == NULL)
        goto oom;
    curl_easy_setopt(c->curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c->curl, CURLOPT_ERRORBUFFER, c->errbuf);
    curl_easy_setopt(c->curl, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(c->curl, CURLOPT_WRITEDATA, c);
    curl_easy_setopt(c->curl, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c->curl, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(c->curl, CURLOPT_USERAGENT, "libdtx/" LIBDTX_VERSION);
    clear_error(c);
    *out = c;
    return DTX_OK;
oom:
    dtx_client_free(c);
    return DTX_ENOMEM;
}

void dtx_client_free(struct dtx_client *c)
{
    if (c == NULL)
        return;
    if (c->curl != NULL)
        curl_easy_cleanup(c->curl);
    curl_slist_free_all(c->api_headers);
    libdtx_amqp_free(c->amqp);
    free(c->answer);
    free(c->base);
    free(c);
}

int dtx_client_set_amqp(struct dtx_client *c, const char *broker_url, const char *cacert)
{
    struct libdtx_amqp *a = NULL;
    if (c == NULL)
        return DTX_EINVAL;
    clear_error(c);
    int rc = libdtx_amqp_new(broker_url, cacert, &a);
    if (rc != DTX_OK)
        return fail(c, rc, "broker_url: %s",
                    rc == DTX_EINVAL ? "expected amqp[s]://user:password@host:port/vhost"
                                     : "out of memory");
    libdtx_amqp_free(c->amqp);
    c->amqp = a;
    return DTX_OK;
}

int dtx_client_set_timeout(struct dtx_client *c, int64_t timeout_ms)
{
    if (c == NULL || timeout_ms < 0)
        return DTX_EINVAL;
    c->timeout_ms = timeout_ms;
    return DTX_OK;
}

/* ---- one request ------------------------------------------------------- */

/*
 * Send one request: POST body (NUL-terminated; NULL for GET) to url with
 * headers, allowing extra_ms beyond the client's timeout. The answer lands in
 * c->answer. OUT: *status. Errors: DTX_EIO (no answer), DTX_EPROTO (answer
 * over the cap), DTX_ENOMEM; each recorded in c->err.
 */
static int perform(struct dtx_client *c, const char *url, const char *body,
                   struct curl_slist *headers, int64_t extra_ms, long *status)
{
    int64_t timeout = c->timeout_ms > 0 ? c->timeout_ms + extra_ms : 0;
    CURLcode cc;

    c->answer_len = 0;
    c->answer_over = 0;
    if (c->answer != NULL)
        c->answer[0] = '\0';
    curl_easy_setopt(c->curl, CURLOPT_URL, url);
    curl_easy_setopt(c->curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(c->curl, CURLOPT_TIMEOUT_MS, (long)timeout);
    if (body != NULL) {
        curl_easy_setopt(c->curl, CURLOPT_POST, 1L);
        curl_easy_setopt(c->curl, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c->curl, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    } else {
        curl_easy_setopt(c->curl, CURLOPT_HTTPGET, 1L);
    }
    cc = curl_easy_perform(c->curl);
    if (cc != CURLE_OK) {
        if (c->answer_over)
            return fail(c, DTX_EPROTO, "%s: answer larger than %u bytes", url, ANSWER_MAX);
        if (cc == CURLE_OUT_OF_MEMORY)
            return fail(c, DTX_ENOMEM, "%s: out of memory", url);
        if (cc == CURLE_WRITE_ERROR)
            return fail(c, DTX_ENOMEM, "%s: out of memory for the answer", url);
        return fail(c, DTX_EIO, "%s: %s", url, c->errbuf[0] ? c->errbuf : curl_easy_strerror(cc));
    }
    curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, status);
    c->err.http_status = (int)*status;
    if (c->answer == NULL) {
        /* an empty answer: give the parsers a NUL-terminated empty text */
        c->answer = malloc(1);
        if (c->answer == NULL)
            return fail(c, DTX_ENOMEM, "out of memory");
        c->answer_cap = 1;
        c->answer[0] = '\0';
    }
    return DTX_OK;
}

/* Copy at most cap-1 bytes of s (NULL: "") into dst. */
static void copy_str(char *dst, size_t cap, const char *s)
{
    snprintf(dst, cap, "%s", s != NULL ? s : "");
}

/*
 * A non-2xx answer of the coordinator: record its status and error body,
 * return DTX_ENOTFOUND (404), DTX_ECONFLICT (409) or DTX_EAPI.
 */
static int refused(struct dtx_client *c, long status)
{
    int code = status == 404 ? DTX_ENOTFOUND : status == 409 ? DTX_ECONFLICT : DTX_EAPI;
    json_t *root = json_loadb(c->answer, c->answer_len, 0, NULL);
    json_t *e = json_object_get(root, "error");
    const char *msg = json_string_value(json_object_get(e, "message"));

    c->err.code = code;
    copy_str(c->err_code, sizeof c->err_code, json_string_value(json_object_get(e, "code")));
    copy_str(c->err_field, sizeof c->err_field, json_string_value(json_object_get(e, "field")));
    if (msg != NULL && msg[0] != '\0')
        copy_str(c->err_message, sizeof c->err_message, msg);
    else
        snprintf(c->err_message, sizeof c->err_message, "HTTP %ld: %.*s", status,
                 (int)(c->answer_len < SNIPPET_MAX ? c->answer_len : SNIPPET_MAX),
                 c->answer_len > 0 ? c->answer : "(empty answer)");
    json_decref(root);
    return code;
}

/* The full URL of an API path. OUT: *out, freed with free(). */
static int api_url(struct dtx_client *c, const char *path, char **out)
{
    size_t n = strlen(c->base) + strlen(path) + 1;
    char *u = malloc(n);

    if (u == NULL)
        return fail(c, DTX_ENOMEM, "out of memory");
    snprintf(u, n, "%s%s", c->base, path);
    *out = u;
    return DTX_OK;
}

/*
 * One API call: method POST when body is not NULL, else GET. On 2xx the
 * answer is in c->answer and *status holds the code; anything else is an
 * error recorded in c->err.
 */
static int api_call(struct dtx_client *c, const char *path, const char *body, int64_t extra_ms,
                    long *status)
{
    char *url = NULL;
    int rc = api_url(c, path, &url);

    if (rc != DTX_OK)
        return rc;
    rc = perform(c, url, body, c->api_headers, extra_ms, status);
    free(url);
    if (rc != DTX_OK)
        return rc;
    if (*status < 200 || *status > 299)
        return refused(c, *status);
    return DTX_OK;
}

/* Parse the 2xx answer in c->answer as a transaction into *out (if out). */
static int txn_answer(struct dtx_client *c, long status, struct dtx_txn **out)
{
    char why[160];
    struct dtx_txn *t;
    int rc;

    if (out == NULL)
        return DTX_OK;
    why[0] = '\0';
    rc = libdtx_reply_txn(c->answer, c->answer_len, &t, why, sizeof why);
    if (rc == DTX_ENOMEM)
        return fail(c, rc, "out of memory");
    if (rc != DTX_OK)
        return fail(c, rc, "HTTP %ld: %s", status, why);
    t->http_status = (int)status;
    *out = t;
    return DTX_OK;
}

/* The wait bound body asks for (0 when it asks no wait). */
static int64_t body_wait_ms(json_t *body)
{
    json_t *ms = json_object_get(body, "wait_timeout_ms");

    if (!json_is_true(json_object_get(body, "wait")))
        return 0;
    return json_is_integer(ms) ? (int64_t)json_integer_value(ms) : WAIT_DEFAULT_MS;
}

/* POST /v1/transactions with text (whose tree is body). */
static int create_text(struct dtx_client *c, const char *text, json_t *body, struct dtx_txn **out)
{
    long status = 0;
    int rc = api_call(c, "/v1/transactions", text, body_wait_ms(body), &status);

    if (rc != DTX_OK)
        return rc;
    return txn_answer(c, status, out);
}

/* ---- endpoints --------------------------------------------------------- */

int dtx_create(struct dtx_client *c, const struct dtx_spec *s, struct dtx_txn **out)
{
    json_t *body;
    char *text;
    int rc;

    if (c == NULL)
        return DTX_EINVAL;
    clear_error(c);
    rc = libdtx_spec_body(s, &body);
    if (rc == DTX_EINVAL)
        return fail(c, rc, "the transaction has no steps (or no spec was given)");
    if (rc != DTX_OK)
        return fail(c, rc, "out of memory");
    text = json_dumps(body, JSON_COMPACT);
    if (text == NULL) {
        json_decref(body);
        return fail(c, DTX_ENOMEM, "out of memory");
    }
    rc = create_text(c, text, body, out);
    free(text);
    json_decref(body);
    return rc;
}

int dtx_create_json(struct dtx_client *c, const char *text, struct dtx_txn **out)
{
    json_error_t jerr;
    json_t *body;
    int rc;

    if (c == NULL)
        return DTX_EINVAL;
    clear_error(c);
    if (text == NULL)
        return fail(c, DTX_EINVAL, "no body given");
    body = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
    if (body == NULL)
        return fail(c, DTX_EINVAL, "invalid JSON at line %d column %d: %s", jerr.line, jerr.column,
                    jerr.text);
    if (!json_is_object(body)) {
        json_decref(body);
        return fail(c, DTX_EINVAL, "the body is not a JSON object");
    }
    rc = create_text(c, text, body, out);
    json_decref(body);
    return rc;
}

/* Check gid for a path; record why not. */
static int check_gid(struct dtx_client *c, const char *gid)
{
    if (!libdtx_valid_id(gid, DTX_GID_MAX))
        return fail(c, DTX_EINVAL, "gid: expected 1-%d bytes of A-Z a-z 0-9 . _ : -", DTX_GID_MAX);
    return DTX_OK;
}

/*
 * POST /v1/transactions/{gid}/branches with the string fields of names/urls
 * (n of them: URLs, or with resource set one resource name), an optional
 * "branch" and "payload".
 */
static int register_branch(struct dtx_client *c, const char *gid, const char *branch,
                           const char *const *names, const char *const *urls, size_t n,
                           int resource, const char *payload, char *branch_out)
{
    char path[64 + DTX_GID_MAX];
    json_t *body = NULL, *p = NULL, *answer;
    const char *id;
    char *text = NULL;
    long status = 0;
    int rc;

    if (c == NULL)
        return DTX_EINVAL;
    clear_error(c);
    rc = check_gid(c, gid);
    if (rc != DTX_OK)
        return rc;
    if (branch != NULL && !libdtx_valid_id(branch, DTX_BRANCH_MAX))
        return fail(c, DTX_EINVAL, "branch: expected 1-%d bytes of A-Z a-z 0-9 . _ : -",
                    DTX_BRANCH_MAX);
    for (size_t i = 0; i < n; i++) {
        if (resource && !libdtx_valid_resource(urls[i]))
            return fail(c, DTX_EINVAL, "%s: expected 1-%d bytes of A-Z a-z 0-9 . _ -", names[i],
                        DTX_RESOURCE_MAX);
        if (!resource && !libdtx_valid_url(urls[i]))
            return fail(c, DTX_EINVAL, "%s: expected a URL", names[i]);
    }
    if (payload != NULL) {
        rc = libdtx_parse_payload(payload, &p);
        if (rc != DTX_OK)
            return fail(c, rc, "payload: %s", rc == DTX_EINVAL ? "not JSON" : "out of memory");
    }
    rc = DTX_ENOMEM;
    body = json_object();
    if (body == NULL)
        goto oom;
    if (branch != NULL && json_object_set_new(body, "branch", json_string(branch)) != 0)
        goto oom;
    for (size_t i = 0; i < n; i++) {
        if (json_object_set_new(body, names[i], json_string(urls[i])) != 0)
            goto oom;
    }
    if (p != NULL) {
        rc = json_object_set_new(body, "payload", p);
        p = NULL;
        if (rc != 0) {
            rc = DTX_ENOMEM;
            goto oom;
        }
    }
    text = json_dumps(body, JSON_COMPACT);
    if (text == NULL) {
        rc = DTX_ENOMEM;
        goto oom;
    }
    snprintf(path, sizeof path, "/v1/transactions/%s/branches", gid);
    rc = api_call(c, path, text, 0, &status);
    if (rc != DTX_OK)
        goto done;
    answer = json_loadb(c->answer, c->answer_len, 0, NULL);
    id = json_string_value(json_object_get(answer, "branch"));
    if (id == NULL || !libdtx_valid_id(id, DTX_BRANCH_MAX)) {
        rc = fail(c, DTX_EPROTO, "HTTP %ld: the answer has no valid \"branch\"", status);
    } else if (branch_out != NULL) {
        memcpy(branch_out, id, strlen(id) + 1);
    }
    json_decref(answer);
    goto done;
oom:
    fail(c, rc, "out of memory");
done:
    json_decref(p);
    json_decref(body);
    free(text);
    return rc;
}

int dtx_register_tcc(struct dtx_client *c, const char *gid, const char *branch, const char *confirm,
                     const char *cancel, const char *payload, char *branch_out)
{
    const char *const names[] = {"confirm", "cancel"};
    const char *const urls[] = {confirm, cancel};

    return register_branch(c, gid, branch, names, urls, 2, 0, payload, branch_out);
}

int dtx_register_2pc(struct dtx_client *c, const char *gid, const char *branch, const char *prepare,
                     const char *commit, const char *rollback, const char *payload,
                     char *branch_out)
{
    const char *const names[] = {"prepare", "commit", "rollback"};
    const char *const urls[] = {prepare, commit, rollback};

    return register_branch(c, gid, branch, names, urls, 3, 0, payload, branch_out);
}

int dtx_register_2pc_resource(struct dtx_client *c, const char *gid, const char *branch,
                              const char *resource, const char *payload)
{
    const char *const names[] = {"resource"};
    const char *const values[] = {resource};

    if (c == NULL)
        return DTX_EINVAL;
    if (branch == NULL) {
        clear_error(c);
        return fail(c, DTX_EINVAL,
                    "branch: required with a resource (it names the prepared "
                    "transaction)");
    }
    return register_branch(c, gid, branch, names, values, 1, 1, payload, NULL);
}

/* POST /v1/transactions/{gid}/{verb} with an optional wait. */
static int post_verb(struct dtx_client *c, const char *gid, const char *verb,
                     int64_t wait_timeout_ms, struct dtx_txn **out)
{
    char path[64 + DTX_GID_MAX];
    char body[96];
    long status = 0;
    int rc;

    if (c == NULL)
        return DTX_EINVAL;
    clear_error(c);
    rc = check_gid(c, gid);
    if (rc != DTX_OK)
        return rc;
    if (wait_timeout_ms < 0)
        return fail(c, DTX_EINVAL, "wait_timeout_ms: must not be negative");
    if (wait_timeout_ms > 0)
        snprintf(body, sizeof body, "{\"wait\":true,\"wait_timeout_ms\":%lld}",
                 (long long)wait_timeout_ms);
    else
        snprintf(body, sizeof body, "{}");
    snprintf(path, sizeof path, "/v1/transactions/%s/%s", gid, verb);
    rc = api_call(c, path, body, wait_timeout_ms, &status);
    if (rc != DTX_OK)
        return rc;
    return txn_answer(c, status, out);
}

int dtx_submit(struct dtx_client *c, const char *gid, int64_t wait_timeout_ms, struct dtx_txn **out)
{
    return post_verb(c, gid, "submit", wait_timeout_ms, out);
}

int dtx_abort(struct dtx_client *c, const char *gid, int64_t wait_timeout_ms, struct dtx_txn **out)
{
    return post_verb(c, gid, "abort", wait_timeout_ms, out);
}

int dtx_retry(struct dtx_client *c, const char *gid, struct dtx_txn **out)
{
    return post_verb(c, gid, "retry", 0, out);
}

int dtx_get(struct dtx_client *c, const char *gid, struct dtx_txn **out)
{
    char path[64 + DTX_GID_MAX];
    long status = 0;
    int rc;

    if (c == NULL)
        return DTX_EINVAL;
    clear_error(c);
    if (out == NULL)
        return fail(c, DTX_EINVAL, "no place for the answer");
    rc = check_gid(c, gid);
    if (rc != DTX_OK)
        return rc;
    snprintf(path, sizeof path, "/v1/transactions/%s", gid);
    rc = api_call(c, path, NULL, 0, &status);
    if (rc != DTX_OK)
        return rc;
    return txn_answer(c, status, out);
}

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int64_t ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};

    while (nanosleep(&ts, &ts) != 0)
        ;
}

int dtx_wait(struct dtx_client *c, const char *gid, int64_t timeout_ms, struct dtx_txn **out)
{
    int64_t deadline, interval = POLL_FIRST_MS;

    if (c == NULL)
        return DTX_EINVAL;
    clear_error(c);
    if (out == NULL || timeout_ms < 0)
        return fail(c, DTX_EINVAL, "no place for the answer, or a negative timeout");
    deadline = now_ms() + timeout_ms;
    for (;;) {
        struct dtx_txn *t;
        int64_t left;
        int rc = dtx_get(c, gid, &t);

        if (rc != DTX_OK)
            return rc;
        if (dtx_txn_is_final(t)) {
            *out = t;
            return DTX_OK;
        }
        left = deadline - now_ms();
        if (left <= 0) {
            fail(c, DTX_ETIMEDOUT, "%s is still %s after %lld ms", t->gid, t->status,
                 (long long)timeout_ms);
            dtx_txn_free(t);
            return DTX_ETIMEDOUT;
        }
        dtx_txn_free(t);
        sleep_ms(interval < left ? interval : left);
        interval = interval * 2 < POLL_MAX_MS ? interval * 2 : POLL_MAX_MS;
    }
}

/* Append "&name=value" (escaped) to the query in q of cap bytes. */
static int add_param(struct dtx_client *c, char *q, size_t cap, const char *name, const char *value)
{
    char *esc;
    size_t used = strlen(q);
    int n;

    if (value == NULL)
        return DTX_OK;
    esc = curl_easy_escape(c->curl, value, 0);
    if (esc == NULL)
        return fail(c, DTX_ENOMEM, "out of memory");
    n = snprintf(q + used, cap - used, "%c%s=%s", used == 0 ? '?' : '&', name, esc);
    curl_free(esc);
    if (n < 0 || (size_t)n >= cap - used)
        return fail(c, DTX_EINVAL, "%s: too long", name);
    return DTX_OK;
}

int dtx_list(struct dtx_client *c, const struct dtx_list_opts *opts, struct dtx_txn_list **out)
{
    char path[1024] = "/v1/transactions";
    char q[960] = "";
    char limit[24];
    char why[160];
    long status = 0;
    int rc;

    if (c == NULL)
        return DTX_EINVAL;
    clear_error(c);
    if (out == NULL)
        return fail(c, DTX_EINVAL, "no place for the answer");
    if (opts != NULL) {
        if (opts->limit < 0)
            return fail(c, DTX_EINVAL, "limit: must not be negative");
        snprintf(limit, sizeof limit, "%d", opts->limit);
        rc = add_param(c, q, sizeof q, "status", opts->status);
        if (rc == DTX_OK)
            rc = add_param(c, q, sizeof q, "type", opts->type);
        if (rc == DTX_OK && opts->limit > 0)
            rc = add_param(c, q, sizeof q, "limit", limit);
        if (rc == DTX_OK && opts->needs_attention)
            rc = add_param(c, q, sizeof q, "needs_attention", "true");
        if (rc == DTX_OK)
            rc = add_param(c, q, sizeof q, "cursor", opts->cursor);
        if (rc != DTX_OK)
            return rc;
        strcat(path, q);
    }
    rc = api_call(c, path, NULL, 0, &status);
    if (rc != DTX_OK)
        return rc;
    why[0] = '\0';
    rc = libdtx_reply_list(c->answer, c->answer_len, out, why, sizeof why);
    if (rc == DTX_ENOMEM)
        return fail(c, rc, "out of memory");
    if (rc != DTX_OK)
        return fail(c, rc, "HTTP %ld: %s", status, why);
    return DTX_OK;
}

int dtx_create_batch(struct dtx_client *c, const struct dtx_spec *const *specs, size_t n,
                     struct dtx_batch **out)
{
    json_t *body, *list;
    char *text, why[160];
    long status = 0;
    int rc;

    if (c == NULL)
        return DTX_EINVAL;
    clear_error(c);
    if (specs == NULL || n == 0 || out == NULL)
        return fail(c, DTX_EINVAL, "no transactions (or no place for the answer)");
    body = json_object();
    list = json_array();
    if (body == NULL || list == NULL || json_object_set_new(body, "transactions", list) != 0) {
        json_decref(body);
        return fail(c, DTX_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        json_t *one;
        rc = libdtx_spec_body(specs[i], &one);
        if (rc == DTX_OK && json_array_append_new(list, one) != 0)
            rc = DTX_ENOMEM;
        if (rc != DTX_OK) {
            json_decref(body);
            return fail(c, rc, "transactions[%zu]: %s", i,
                        rc == DTX_EINVAL ? "no steps (or no spec)" : "out of memory");
        }
    }
    text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (text == NULL)
        return fail(c, DTX_ENOMEM, "out of memory");
    rc = api_call(c, "/v1/transactions:batch", text, 0, &status);
    free(text);
    if (rc != DTX_OK)
        return rc;
    why[0] = '\0';
    rc = libdtx_reply_batch(c->answer, c->answer_len, n, out, why, sizeof why);
    if (rc == DTX_ENOMEM)
        return fail(c, rc, "out of memory");
    if (rc != DTX_OK)
        return fail(c, rc, "HTTP %ld: %s", status, why);
    return DTX_OK;
}

/* ---- the TCC Try ------------------------------------------------------- */

/* dtx_tcc_try with an amqp:// try_url (amqp_try.c); arguments checked. */
static int try_amqp(struct dtx_client *c, const char *try_url, const char *gid, const char *branch,
                    const char *body, enum dtx_try_result *result)
{
    char exchange[256], routing_key[256];
    if (libdtx_amqp_target(try_url, exchange, routing_key) != 0)
        return fail(c, DTX_EINVAL,
                    "try_url: expected amqp://<exchange>/<routing-key> (percent-encoded, "
                    "each at most 255 bytes, not both empty)");
    if (c->amqp == NULL)
        return fail(c, DTX_EINVAL,
                    "try_url: an amqp:// Try needs a broker: call dtx_client_set_amqp first");
    libdtx_amqp_try(c->amqp, exchange, routing_key, gid, branch, body, c->timeout_ms, result,
                    c->err_message, sizeof c->err_message);
    return DTX_OK;
}

int dtx_tcc_try(struct dtx_client *c, const char *try_url, const char *gid, const char *branch,
                const char *payload, enum dtx_try_result *result)
{
    static const char *const fixed[] = {"Content-Type: application/json", "Expect:", "Dtx-Op: try",
                                        "Dtx-Type: tcc"};
    char h_gid[16 + DTX_GID_MAX], h_branch[16 + DTX_BRANCH_MAX];
    char h_key[32 + DTX_GID_MAX + DTX_BRANCH_MAX];
    struct curl_slist *headers = NULL, *tail;
    json_t *p = NULL;
    long status = 0;
    int rc;

    if (c == NULL)
        return DTX_EINVAL;
    clear_error(c);
    if (result == NULL || !libdtx_valid_url(try_url))
        return fail(c, DTX_EINVAL, "try_url: expected a URL (and a place for the result)");
    rc = check_gid(c, gid);
    if (rc != DTX_OK)
        return rc;
    if (!libdtx_valid_id(branch, DTX_BRANCH_MAX))
        return fail(c, DTX_EINVAL, "branch: expected 1-%d bytes of A-Z a-z 0-9 . _ : -",
                    DTX_BRANCH_MAX);
    if (payload != NULL) {
        rc = libdtx_parse_payload(payload, &p);
        json_decref(p);
        if (rc != DTX_OK)
            return fail(c, rc, "payload: %s", rc == DTX_EINVAL ? "not JSON" : "out of memory");
    }
    if (strncmp(try_url, "amqp://", 7) == 0)
        return try_amqp(c, try_url, gid, branch, payload != NULL ? payload : "{}", result);
    snprintf(h_gid, sizeof h_gid, "Dtx-Gid: %s", gid);
    snprintf(h_branch, sizeof h_branch, "Dtx-Branch: %s", branch);
    snprintf(h_key, sizeof h_key, "Idempotency-Key: %s/%s/try", gid, branch);
    const char *lines[] = {fixed[0], fixed[1], fixed[2], fixed[3], h_gid, h_branch, h_key};
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
        tail = curl_slist_append(headers, lines[i]);
        if (tail == NULL) {
            curl_slist_free_all(headers);
            return fail(c, DTX_ENOMEM, "out of memory");
        }
        headers = tail;
    }
    rc = perform(c, try_url, payload != NULL ? payload : "{}", headers, 0, &status);
    curl_slist_free_all(headers);
    if (rc == DTX_EIO || rc == DTX_EPROTO) {
        c->err.code = DTX_OK; /* the call did its job; the message keeps why */
        *result = DTX_TRY_TRANSIENT;
        return DTX_OK;
    }
    if (rc != DTX_OK)
        return rc;
    if (status >= 200 && status <= 299) {
        *result = DTX_TRY_SUCCEEDED;
        return DTX_OK;
    }
    *result = status == 409 ? DTX_TRY_FAILED : DTX_TRY_TRANSIENT;
    snprintf(c->err_message, sizeof c->err_message, "%s answered HTTP %ld", try_url, status);
    return DTX_OK;
}
