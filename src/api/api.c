/*
 * api.c - routes and JSON rendering of the native API (docs/API.md).
 *
 *   POST /v1/transactions            create (request.c validates)
 *   GET  /v1/transactions            list, newest first, with a cursor
 *   GET  /v1/transactions/{gid}      one transaction with its branches
 *   GET  /healthz                    liveness once recovery is done
 *
 * Creation answers in the engine's reply callback, i.e. only once the new
 * transaction is durable (and finished, when `wait` was asked); until then the
 * HTTP request stays suspended in the server.
 */
#include "api/api.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/buf.h"
#include "common/clock.h"
#include "common/err.h"
#include "common/fmt.h"
#include "common/slog.h"

struct api {
    struct engine *engine;
    struct api_config cfg;
    int stopping;
};

#define LIST_MAX     1000
#define LIST_DEFAULT 50

struct api *api_new(struct engine *e, const struct api_config *cfg)
{
    struct api *a = xcalloc(1, sizeof *a);
    a->engine = e;
    a->cfg = *cfg;
    return a;
}

void api_stop(struct api *a)
{
    a->stopping = 1;
}

void api_free(struct api *a)
{
    free(a);
}

/* ---- answers --------------------------------------------------------- */

static void respond_json(struct http_req *r, int status, json_t *body)
{
    char *text = json_dumps(body, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(body);
    if (text == NULL) {
        http_req_respond(r, 500, "application/json", NULL, 0);
        return;
    }
    size_t n = strlen(text);
    /* json_dumps uses malloc: the server frees with free() */
    http_req_respond(r, status, "application/json", text, n);
}

static void respond_error(struct http_req *r, int status, const char *code, const char *field,
                          const char *message)
{
    json_t *err = json_object();
    json_object_set_new(err, "code", json_string(code));
    json_object_set_new(err, "message", json_string(message));
    json_object_set_new(err, "field", field && field[0] ? json_string(field) : json_null());
    json_t *body = json_object();
    json_object_set_new(body, "error", err);
    respond_json(r, status, body);
}

/*
 * Transactions are rendered straight into a buffer rather than through
 * jansson objects: this is on every create reply, and the stored payloads are
 * already compact JSON (request.c wrote them), so they are copied as they are.
 */
/* The length of the valid UTF-8 sequence at s (1-4), or 0 when the bytes
 * there are not one (overlong, a surrogate, beyond U+10FFFF, cut short). */
static int utf8_len(const unsigned char *s)
{
    unsigned char c = s[0];
    int n;
    uint32_t cp;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    for (int i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80) /* also stops at the NUL */
            return 0;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10ffff ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

/* s as a JSON string. Whatever its bytes (a participant's error text may
 * hold anything), the output is valid JSON: control characters, '"' and
 * '\\' are escaped, and each byte that starts no valid UTF-8 sequence
 * becomes U+FFFD. */
static void put_str(struct buf *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    buf_append(b, "\"", 1);
    const char *run = s;
    while (*s) {
        unsigned char c = (unsigned char)*s;
        if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
            s++;
            continue;
        }
        int n = c >= 0x80 ? utf8_len((const unsigned char *)s) : 1;
        if (n > 1) {
            s += n;
            continue;
        }
        buf_append(b, run, (size_t)(s - run));
        if (n == 0) {
            buf_append(b, "\\ufffd", 6);
        } else if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            buf_append(b, esc, 2);
        } else {
            char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            buf_append(b, esc, 6);
        }
        s++;
        run = s;
    }
    buf_append(b, run, (size_t)(s - run));
    buf_append(b, "\"", 1);
}

static void put_u64(struct buf *b, unsigned long long v)
{
    char tmp[FMT_U64_MAX];
    buf_append(b, tmp, fmt_u64(tmp, v));
}

static void put_time(struct buf *b, int64_t ms)
{
    char tmp[40];
    if (ms <= 0) {
        buf_puts(b, "null");
        return;
    }
    tmp[0] = '"';
    size_t n = strlen(clock_fmt_rfc3339(ms, tmp + 1)) + 1;
    tmp[n] = '"';
    buf_append(b, tmp, n + 1);
}

static void put_summary_fields(struct buf *b, const struct txn *t)
{
    buf_puts(b, "{\"gid\":");
    put_str(b, t->gid);
    buf_puts(b, ",\"type\":\"");
    buf_puts(b, txn_type_name(t->type));
    buf_puts(b, "\",\"status\":\"");
    buf_puts(b, txn_state_name(t->state));
    buf_puts(b,
             t->needs_attention ? "\",\"needs_attention\":true" : "\",\"needs_attention\":false");
    buf_puts(b, ",\"created_at\":");
    put_time(b, t->created_at);
    buf_puts(b, ",\"updated_at\":");
    put_time(b, t->updated_at);
    buf_puts(b, ",\"finished_at\":");
    put_time(b, t->finished_at);
}

static void render_summary(struct buf *b, const struct txn *t)
{
    put_summary_fields(b, t);
    buf_printf(b, ",\"branch_count\":%u}", t->nbranches);
}

/* The names a mode gives its branch URLs and attempt counters (txn.h). */
struct branch_names {
    const char *prepare, *forward, *undo; /* NULL: the mode has none */
};

static const struct branch_names names_of[TXN_TYPE_COUNT] = {
    [TXN_SAGA] = {NULL, "action", "compensate"},
    [TXN_TCC] = {NULL, "confirm", "cancel"},
    [TXN_2PC] = {"prepare", "commit", "rollback"},
    [TXN_MSG] = {NULL, "action", NULL},
};

static void put_url(struct buf *b, const char *name, const char *url)
{
    if (name == NULL)
        return;
    buf_puts(b, ",\"");
    buf_puts(b, name);
    buf_puts(b, "\":");
    put_str(b, url);
}

static void put_attempts(struct buf *b, const char *name, uint32_t n)
{
    if (name != NULL) {
        buf_puts(b, ",\"");
        buf_puts(b, name);
        buf_puts(b, "_attempts\":");
        put_u64(b, n);
    }
}

static void render_branch(struct buf *b, const struct txn *t, const struct branch *br)
{
    const struct branch_names *nm = &names_of[t->type];
    buf_puts(b, "{\"branch\":");
    put_str(b, br->id);
    buf_puts(b, ",\"status\":\"");
    buf_puts(b, branch_state_name(br->state));
    buf_puts(b, "\"");
    static const char res[] = RESOURCE_URL_PREFIX;
    if (br->prepare != NULL && strncmp(br->prepare, res, sizeof res - 1) == 0) {
        buf_puts(b, ",\"resource\":");
        put_str(b, br->prepare + sizeof res - 1);
    } else {
        put_url(b, nm->prepare, br->prepare);
        put_url(b, nm->forward, br->action);
        put_url(b, nm->undo, br->compensate);
    }
    buf_puts(b, ",\"payload\":");
    buf_append(b, br->payload, br->payload_len);
    if (t->concurrent) {
        buf_puts(b, ",\"after\":[");
        for (uint32_t k = 0; k < br->nafter; k++)
            buf_printf(b, "%s%u", k ? "," : "", br->after[k] + 1);
        buf_puts(b, "]");
    }
    put_attempts(b, nm->prepare, br->prepare_attempts);
    put_attempts(b, nm->forward, br->action_attempts);
    put_attempts(b, nm->undo, br->compensate_attempts);
    buf_puts(b, ",\"last_error\":");
    if (br->last_error)
        put_str(b, br->last_error);
    else
        buf_puts(b, "null");
    buf_puts(b, ",\"updated_at\":");
    put_time(b, br->updated_at);
    buf_puts(b, "}");
}

static void render_txn(struct buf *b, const struct txn *t)
{
    put_summary_fields(b, t);
    buf_puts(b, ",\"retry\":{\"initial_interval_ms\":");
    put_u64(b, t->retry.initial_ms);
    buf_puts(b, ",\"max_interval_ms\":");
    put_u64(b, t->retry.max_ms);
    buf_puts(b, ",\"limit\":");
    put_u64(b, t->retry.limit);
    buf_puts(b, "},\"request_timeout_ms\":");
    put_u64(b, t->request_timeout_ms);
    buf_puts(b, ",\"timeout_ms\":");
    put_u64(b, (unsigned long long)t->timeout_ms);
    if (t->type == TXN_MSG) {
        buf_puts(b, ",\"check\":");
        put_str(b, t->check);
        buf_printf(b, ",\"check_attempts\":%u", t->check_attempts);
    }
    buf_puts(b, ",\"branches\":[");
    for (uint32_t i = 0; i < t->nbranches; i++) {
        if (i)
            buf_puts(b, ",");
        render_branch(b, t, &t->branches[i]);
    }
    buf_puts(b, "]}");
}

static void respond_txn(struct http_req *r, int status, const struct txn *t)
{
    struct buf b;
    buf_init(&b, SIZE_MAX / 2);
    render_txn(&b, t);
    size_t n;
    char *text = buf_steal(&b, &n);
    http_req_respond(r, status, "application/json", text, n);
}

/* ---- handlers -------------------------------------------------------- */

static void on_created(void *arg, const struct txn *t, int flags)
{
    struct http_req *r = arg;
    int status = (flags & ENGINE_REPLY_TIMED_OUT) ? 202
                 : (flags & ENGINE_REPLY_CREATED) ? 201
                                                  : 200;
    respond_txn(r, status, t);
}

static void handle_create(struct api *a, struct http_req *r)
{
    if (a->stopping) {
        respond_error(r, 503, "shutting_down", NULL, "the coordinator is shutting down");
        return;
    }
    struct txn_spec *spec = NULL;
    struct req_error err;
    int rc =
        request_parse_create(http_req_body(r), http_req_body_len(r), &a->cfg.limits, &spec, &err);
    if (rc != 0) {
        respond_error(r, 400, err.code, err.field, err.message);
        return;
    }
    char gid[160];
    snprintf(gid, sizeof gid, "%s", spec->gid ? spec->gid : "");
    rc = engine_create(a->engine, spec, on_created, r);
    if (rc == DTX_ECONFLICT) {
        char msg[256];
        snprintf(msg, sizeof msg, "transaction with gid %s exists with a different body", gid);
        respond_error(r, 409, "gid_conflict", "gid", msg);
    } else if (rc == DTX_ECLOSED) {
        respond_error(r, 503, "shutting_down", NULL, "the coordinator is shutting down");
    } else if (rc != 0) {
        respond_error(r, 500, "internal", NULL, dtx_err_message(rc));
    }
}

/* ---- a batch of creates (POST /v1/transactions:batch) ---------------- */

/*
 * Each item is created as its own transaction (engine_create, "wait" false),
 * so the log's group commit takes them together; the answer, one result per
 * item in order, goes out once every item that was accepted is durable.
 * Items may complete inside engine_create (a gid that exists and is durable
 * already), hence the extra count held while the items are handed out.
 */
struct batch;

struct batch_ref {
    struct batch *bt;
    size_t i;
};

struct batch {
    struct http_req *r;
    size_t n, pending;
    char **results;         /* each item's result object, rendered */
    struct batch_ref *refs; /* the engine callbacks' args */
};

static char *render_item_error(int status, const char *code, const char *field, const char *message)
{
    struct buf b;
    buf_init(&b, SIZE_MAX / 2);
    buf_printf(&b, "{\"status\":%d,\"error\":{\"code\":", status);
    put_str(&b, code);
    buf_puts(&b, ",\"message\":");
    put_str(&b, message);
    buf_puts(&b, ",\"field\":");
    if (field != NULL && field[0] != '\0')
        put_str(&b, field);
    else
        buf_puts(&b, "null");
    buf_puts(&b, "}}");
    return buf_steal(&b, NULL);
}

static void batch_done_one(struct batch *bt)
{
    if (--bt->pending > 0)
        return;
    struct buf b;
    buf_init(&b, SIZE_MAX / 2);
    buf_puts(&b, "{\"results\":[");
    for (size_t i = 0; i < bt->n; i++) {
        if (i)
            buf_puts(&b, ",");
        buf_puts(&b, bt->results[i]);
        free(bt->results[i]);
    }
    buf_puts(&b, "]}");
    size_t len;
    char *text = buf_steal(&b, &len);
    http_req_respond(bt->r, 200, "application/json", text, len);
    free(bt->results);
    free(bt->refs);
    free(bt);
}

static void on_batch_item(void *arg, const struct txn *t, int flags)
{
    struct batch_ref *ref = arg;
    struct buf b;
    buf_init(&b, SIZE_MAX / 2);
    buf_printf(&b, "{\"status\":%d,\"transaction\":",
               (flags & ENGINE_REPLY_TIMED_OUT) ? 202
               : (flags & ENGINE_REPLY_CREATED) ? 201
                                                : 200);
    put_summary_fields(&b, t);
    buf_puts(&b, "}}");
    ref->bt->results[ref->i] = buf_steal(&b, NULL);
    batch_done_one(ref->bt);
}

static void handle_batch(struct api *a, struct http_req *r)
{
    if (a->stopping) {
        respond_error(r, 503, "shutting_down", NULL, "the coordinator is shutting down");
        return;
    }
    struct batch_item *items = NULL;
    size_t n = 0;
    struct req_error err;
    if (request_parse_batch(http_req_body(r), http_req_body_len(r), &a->cfg.limits, &items, &n,
                            &err) != 0) {
        respond_error(r, 400, err.code, err.field, err.message);
        return;
    }
    struct batch *bt = xcalloc(1, sizeof *bt);
    bt->r = r;
    bt->n = n;
    bt->pending = n + 1; /* released after the loop */
    bt->results = xcalloc(n, sizeof *bt->results);
    bt->refs = xcalloc(n, sizeof *bt->refs);
    for (size_t i = 0; i < n; i++) {
        struct batch_item *it = &items[i];
        bt->refs[i] = (struct batch_ref){bt, i};
        if (it->spec == NULL) {
            bt->results[i] = render_item_error(400, it->err.code, it->err.field, it->err.message);
            batch_done_one(bt);
            continue;
        }
        char gid[160], field[64];
        snprintf(gid, sizeof gid, "%s", it->spec->gid ? it->spec->gid : "");
        struct txn_spec *spec = it->spec;
        it->spec = NULL; /* engine_create takes it, whatever it answers */
        int rc = engine_create(a->engine, spec, on_batch_item, &bt->refs[i]);
        if (rc == 0)
            continue;
        snprintf(field, sizeof field, "transactions[%zu].gid", i);
        if (rc == DTX_ECONFLICT) {
            char msg[256];
            snprintf(msg, sizeof msg, "transaction with gid %s exists with a different body", gid);
            bt->results[i] = render_item_error(409, "gid_conflict", field, msg);
        } else if (rc == DTX_ECLOSED) {
            bt->results[i] =
                render_item_error(503, "shutting_down", NULL, "the coordinator is shutting down");
        } else {
            bt->results[i] = render_item_error(500, "internal", NULL, dtx_err_message(rc));
        }
        batch_done_one(bt);
    }
    request_batch_free(items, n);
    batch_done_one(bt);
}

static void respond_not_found(struct http_req *r, const char *gid);

static void handle_get(struct api *a, struct http_req *r, const char *gid)
{
    const struct txn *t = engine_find(a->engine, gid);
    if (t == NULL) {
        respond_not_found(r, gid);
        return;
    }
    respond_txn(r, 200, t);
}

static void respond_not_found(struct http_req *r, const char *gid)
{
    char msg[200];
    snprintf(msg, sizeof msg, "no transaction with gid %.150s", gid);
    respond_error(r, 404, "not_found", "gid", msg);
}

/* 409 invalid_state naming what was asked and the state it met. */
static void respond_bad_state(struct api *a, struct http_req *r, const char *gid, const char *what)
{
    char msg[256];
    const struct txn *t = engine_find(a->engine, gid);
    snprintf(msg, sizeof msg, "cannot %s %s transaction %.128s in state %s", what,
             t ? txn_type_name(t->type) : "a", gid, t ? txn_state_name(t->state) : "unknown");
    respond_error(r, 409, "invalid_state", NULL, msg);
}

/* The answer for an engine error other than a state conflict. */
static void respond_engine_error(struct http_req *r, int rc, const char *gid)
{
    if (rc == DTX_ENOTFOUND)
        respond_not_found(r, gid);
    else if (rc == DTX_ECLOSED)
        respond_error(r, 503, "shutting_down", NULL, "the coordinator is shutting down");
    else
        respond_error(r, 500, "internal", NULL, dtx_err_message(rc));
}

struct branch_reply {
    struct http_req *r;
    char *id;
};

static void on_registered(void *arg, const struct txn *t, int flags)
{
    struct branch_reply *br = arg;
    struct buf b;
    buf_init(&b, SIZE_MAX / 2);
    buf_puts(&b, "{\"gid\":");
    put_str(&b, t->gid);
    buf_puts(&b, ",\"branch\":");
    put_str(&b, br->id);
    buf_puts(&b, "}");
    size_t n;
    char *text = buf_steal(&b, &n);
    http_req_respond(br->r, (flags & ENGINE_REPLY_CREATED) ? 201 : 200, "application/json", text,
                     n);
    free(br->id);
    free(br);
}

static void handle_register(struct api *a, struct http_req *r, const char *gid)
{
    const struct txn *t = engine_find(a->engine, gid);
    if (t == NULL) {
        respond_not_found(r, gid);
        return;
    }
    if (t->type != TXN_TCC && t->type != TXN_2PC) {
        char msg[256];
        snprintf(msg, sizeof msg,
                 "transaction %.128s is a %s: only tcc and 2pc transactions register branches", gid,
                 txn_type_name(t->type));
        respond_error(r, 409, "invalid_state", NULL, msg);
        return;
    }
    struct step_spec s;
    struct req_error err;
    if (request_parse_branch(http_req_body(r), http_req_body_len(r), t->type, &a->cfg.limits, &s,
                             &err) != 0) {
        respond_error(r, 400, err.code, err.field, err.message);
        return;
    }
    char want[80];
    snprintf(want, sizeof want, "%s", s.id ? s.id : "");
    struct branch_reply *br = xcalloc(1, sizeof *br);
    br->r = r;
    int rc = engine_register(a->engine, gid, &s, &br->id, on_registered, br);
    if (rc == 0)
        return;
    free(br);
    char msg[256];
    if (rc == DTX_ESTATE) {
        respond_bad_state(a, r, gid, "register a branch of");
    } else if (rc == DTX_ECONFLICT) {
        snprintf(msg, sizeof msg, "branch %s of %.128s exists with a different body", want, gid);
        respond_error(r, 409, "branch_conflict", "branch", msg);
    } else if (rc == DTX_ETOOBIG) {
        snprintf(msg, sizeof msg, "transaction %.128s has the maximum of %u branches", gid,
                 a->cfg.limits.max_steps);
        respond_error(r, 409, "too_many_branches", NULL, msg);
    } else {
        respond_engine_error(r, rc, gid);
    }
}

static void on_controlled(void *arg, const struct txn *t, int flags)
{
    respond_txn(arg, (flags & ENGINE_REPLY_TIMED_OUT) ? 202 : 200, t);
}

typedef int (*control_fn)(struct engine *e, const char *gid, const struct engine_wait *w,
                          engine_reply_fn fn, void *arg);

/* submit / abort: what names the action in messages. */
static void handle_control(struct api *a, struct http_req *r, const char *gid, control_fn fn,
                           const char *what)
{
    struct engine_wait w;
    struct req_error err;
    if (request_parse_control(http_req_body(r), http_req_body_len(r), &a->cfg.limits, &w.wait,
                              &w.wait_timeout_ms, &err) != 0) {
        respond_error(r, 400, err.code, err.field, err.message);
        return;
    }
    int rc = fn(a->engine, gid, &w, on_controlled, r);
    if (rc == DTX_ESTATE)
        respond_bad_state(a, r, gid, what);
    else if (rc != 0)
        respond_engine_error(r, rc, gid);
}

static void handle_retry(struct api *a, struct http_req *r, const char *gid)
{
    int rc = engine_retry_now(a->engine, gid);
    if (rc == DTX_ESTATE)
        respond_bad_state(a, r, gid, "retry");
    else if (rc != 0)
        respond_engine_error(r, rc, gid);
    else
        respond_txn(r, 200, engine_find(a->engine, gid));
}

/* Parse a decimal in [lo, hi]. Returns 0 or DTX_EINVAL. */
static int parse_uint(const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
    if (s == NULL || *s == '\0' || strlen(s) > 19)
        return DTX_EINVAL;
    uint64_t v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return DTX_EINVAL;
        v = v * 10 + (uint64_t)(*p - '0');
    }
    if (v < lo || v > hi)
        return DTX_EINVAL;
    *out = v;
    return 0;
}

static void handle_list(struct api *a, struct http_req *r)
{
    struct engine_filter f = {0};
    const char *status = http_req_query(r, "status");
    const char *type = http_req_query(r, "type");
    const char *limit_s = http_req_query(r, "limit");
    const char *cursor_s = http_req_query(r, "cursor");
    const char *attention = http_req_query(r, "needs_attention");
    uint64_t limit = LIST_DEFAULT, cursor = 0;
    if (status && txn_state_parse(status, &f.state) != 0) {
        respond_error(r, 400, "invalid_value", "status",
                      "status must be one of prepared, submitted, committing, succeeded, "
                      "aborting, failed");
        return;
    }
    f.by_state = status != NULL;
    if (type && txn_type_parse(type, &f.type) != 0) {
        respond_error(r, 400, "invalid_value", "type", "type must be one of saga, tcc, 2pc, msg");
        return;
    }
    f.by_type = type != NULL;
    if (attention && strcmp(attention, "true") != 0 && strcmp(attention, "false") != 0) {
        respond_error(r, 400, "invalid_value", "needs_attention",
                      "needs_attention must be true or false");
        return;
    }
    f.by_attention = attention != NULL;
    f.needs_attention = attention != NULL && strcmp(attention, "true") == 0;
    if (limit_s && parse_uint(limit_s, 1, LIST_MAX, &limit) != 0) {
        respond_error(r, 400, "invalid_value", "limit", "limit must be an integer from 1 to 1000");
        return;
    }
    if (cursor_s && parse_uint(cursor_s, 1, UINT64_MAX / 10, &cursor) != 0) {
        respond_error(r, 400, "invalid_value", "cursor",
                      "cursor must be the next_cursor of a previous page");
        return;
    }
    const struct txn **out = xmalloc(limit * sizeof *out);
    uint64_t next = 0;
    size_t n = engine_list(a->engine, &f, cursor, limit, out, &next);
    struct buf b;
    buf_init(&b, SIZE_MAX / 2);
    buf_puts(&b, "{\"transactions\":[");
    for (size_t i = 0; i < n; i++) {
        if (i)
            buf_puts(&b, ",");
        render_summary(&b, out[i]);
    }
    free(out);
    if (next)
        buf_printf(&b, "],\"next_cursor\":\"%llu\"}", (unsigned long long)next);
    else
        buf_puts(&b, "],\"next_cursor\":null}");
    size_t len;
    char *text = buf_steal(&b, &len);
    http_req_respond(r, 200, "application/json", text, len);
}

static void method_not_allowed(struct http_req *r, const char *allowed)
{
    char msg[96];
    snprintf(msg, sizeof msg, "method %s not allowed here (allowed: %s)", http_req_method(r),
             allowed);
    respond_error(r, 405, "method_not_allowed", NULL, msg);
}

/* /v1/transactions/{gid}[/action]: rest is what follows the prefix's '/'. */
static void route_txn(struct api *a, struct http_req *r, const char *rest, int get, int post)
{
    static const struct {
        const char *name;
        control_fn fn;
    } controls[] = {{"submit", engine_submit}, {"abort", engine_abort}};
    char gid[160];
    const char *slash = strchr(rest, '/');
    size_t n = slash ? (size_t)(slash - rest) : strlen(rest);
    if (n >= sizeof gid) {
        respond_error(r, 404, "not_found", NULL, "no such path");
        return;
    }
    memcpy(gid, rest, n);
    gid[n] = '\0';
    if (!request_gid_ok(gid)) {
        respond_error(r, 404, "not_found", NULL, "no such path");
        return;
    }
    if (slash == NULL) {
        if (get)
            handle_get(a, r, gid);
        else
            method_not_allowed(r, "GET");
        return;
    }
    const char *action = slash + 1;
    int known = strcmp(action, "branches") == 0 || strcmp(action, "retry") == 0;
    for (size_t i = 0; i < sizeof controls / sizeof controls[0]; i++)
        known |= strcmp(action, controls[i].name) == 0;
    if (!known) {
        respond_error(r, 404, "not_found", NULL, "no such path");
        return;
    }
    if (!post) {
        method_not_allowed(r, "POST");
        return;
    }
    if (a->stopping) {
        respond_error(r, 503, "shutting_down", NULL, "the coordinator is shutting down");
        return;
    }
    if (strcmp(action, "branches") == 0) {
        handle_register(a, r, gid);
        return;
    }
    if (strcmp(action, "retry") == 0) {
        handle_retry(a, r, gid);
        return;
    }
    for (size_t i = 0; i < sizeof controls / sizeof controls[0]; i++)
        if (strcmp(action, controls[i].name) == 0)
            handle_control(a, r, gid, controls[i].fn, controls[i].name);
}

void api_handle(void *arg, struct http_req *r)
{
    struct api *a = arg;
    const char *path = http_req_path(r);
    const char *method = http_req_method(r);
    int get = strcmp(method, "GET") == 0;
    int post = strcmp(method, "POST") == 0;
    static const char prefix[] = "/v1/transactions";

    if (strcmp(path, "/healthz") == 0) {
        if (!get) {
            method_not_allowed(r, "GET");
            return;
        }
        json_t *body = json_object();
        json_object_set_new(body, "status", json_string(a->stopping ? "stopping" : "ok"));
        respond_json(r, a->stopping ? 503 : 200, body);
        return;
    }
    if (strcmp(path, prefix) == 0) {
        if (post)
            handle_create(a, r);
        else if (get)
            handle_list(a, r);
        else
            method_not_allowed(r, "GET, POST");
        return;
    }
    if (strcmp(path, "/v1/transactions:batch") == 0) {
        if (post)
            handle_batch(a, r);
        else
            method_not_allowed(r, "POST");
        return;
    }
    if (strncmp(path, prefix, sizeof prefix - 1) == 0 && path[sizeof prefix - 1] == '/') {
        route_txn(a, r, path + sizeof prefix, get, post);
        return;
    }
    respond_error(r, 404, "not_found", NULL, "no such path");
}
