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
static void put_str(struct buf *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    buf_append(b, "\"", 1);
    const char *run = s;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        buf_append(b, run, (size_t)(s - run));
        char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
        if (c == '"' || c == '\\') {
            esc[1] = (char)c;
            buf_append(b, esc, 2);
        } else {
            buf_append(b, esc, 6);
        }
        run = s + 1;
    }
    buf_append(b, run, (size_t)(s - run));
    buf_append(b, "\"", 1);
}

static void put_time(struct buf *b, int64_t ms)
{
    char tmp[32];
    if (ms > 0)
        buf_printf(b, "\"%s\"", clock_fmt_rfc3339(ms, tmp));
    else
        buf_puts(b, "null");
}

static void put_summary_fields(struct buf *b, const struct txn *t)
{
    buf_puts(b, "{\"gid\":");
    put_str(b, t->gid);
    buf_printf(b, ",\"type\":\"%s\",\"status\":\"%s\",\"needs_attention\":%s",
               txn_type_name(t->type), txn_state_name(t->state),
               t->needs_attention ? "true" : "false");
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

static void render_txn(struct buf *b, const struct txn *t)
{
    put_summary_fields(b, t);
    buf_printf(b,
               ",\"retry\":{\"initial_interval_ms\":%u,\"max_interval_ms\":%u,\"limit\":%u}"
               ",\"request_timeout_ms\":%u,\"timeout_ms\":%llu,\"branches\":[",
               t->retry.initial_ms, t->retry.max_ms, t->retry.limit, t->request_timeout_ms,
               (unsigned long long)t->timeout_ms);
    for (uint32_t i = 0; i < t->nbranches; i++) {
        const struct branch *br = &t->branches[i];
        buf_printf(b, "%s{\"branch\":\"%u\",\"status\":\"%s\",\"action\":", i ? "," : "",
                   br->idx + 1, branch_state_name(br->state));
        put_str(b, br->action);
        buf_puts(b, ",\"compensate\":");
        put_str(b, br->compensate);
        buf_puts(b, ",\"payload\":");
        buf_append(b, br->payload, br->payload_len);
        if (t->concurrent) {
            buf_puts(b, ",\"after\":[");
            for (uint32_t k = 0; k < br->nafter; k++)
                buf_printf(b, "%s%u", k ? "," : "", br->after[k] + 1);
            buf_puts(b, "]");
        }
        buf_printf(b, ",\"action_attempts\":%u,\"compensate_attempts\":%u,\"last_error\":",
                   br->action_attempts, br->compensate_attempts);
        if (br->last_error)
            put_str(b, br->last_error);
        else
            buf_puts(b, "null");
        buf_puts(b, ",\"updated_at\":");
        put_time(b, br->updated_at);
        buf_puts(b, "}");
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
        snprintf(msg, sizeof msg, "transaction %s exists with a different body", gid);
        respond_error(r, 409, "gid_conflict", "gid", msg);
    } else if (rc == DTX_ECLOSED) {
        respond_error(r, 503, "shutting_down", NULL, "the coordinator is shutting down");
    } else if (rc != 0) {
        respond_error(r, 500, "internal", NULL, dtx_strerror(rc));
    }
}

static void handle_get(struct api *a, struct http_req *r, const char *gid)
{
    const struct txn *t = engine_find(a->engine, gid);
    if (t == NULL) {
        char msg[200];
        snprintf(msg, sizeof msg, "no transaction %.150s", gid);
        respond_error(r, 404, "not_found", "gid", msg);
        return;
    }
    respond_txn(r, 200, t);
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
    uint64_t limit = LIST_DEFAULT, cursor = 0;
    if (status && txn_state_parse(status, &f.state) != 0) {
        respond_error(r, 400, "invalid_value", "status",
                      "status must be one of prepared, submitted, succeeded, aborting, failed");
        return;
    }
    f.by_state = status != NULL;
    if (type && txn_type_parse(type, &f.type) != 0) {
        respond_error(r, 400, "invalid_value", "type", "type must be saga");
        return;
    }
    f.by_type = type != NULL;
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
    if (strncmp(path, prefix, sizeof prefix - 1) == 0 && path[sizeof prefix - 1] == '/') {
        const char *gid = path + sizeof prefix;
        if (!request_gid_ok(gid)) {
            respond_error(r, 404, "not_found", NULL, "no such path");
            return;
        }
        if (get)
            handle_get(a, r, gid);
        else
            method_not_allowed(r, "GET");
        return;
    }
    respond_error(r, 404, "not_found", NULL, "no such path");
}
