/*
 * spec.c - building the body of POST /v1/transactions (struct dtx_spec).
 *
 * A spec is the request body itself, a jansson object, grown by the setters:
 * there is no second representation to keep in step with the API's field
 * names (docs/API.md). Every setter checks its arguments before it touches
 * the object, so a refused call leaves the spec as it was. The checks are
 * the ones that catch programming mistakes early (NULL, empty, not JSON, a
 * gid outside its alphabet, a negative number); ranges and cross-field rules
 * (max steps, dependency cycles) stay with the coordinator, which names the
 * field at fault in its answer.
 */
#include <stdlib.h>
#include <string.h>

#include "client_int.h"

struct dtx_spec {
    char type[8]; /* "saga", "tcc", "2pc", "msg" */
    json_t *body; /* the request body; "steps" is an array for saga and msg */
};

int libdtx_valid_id(const char *s, size_t max)
{
    size_t n = 0;

    if (s == NULL || s[0] == '\0')
        return 0;
    for (; s[n] != '\0'; n++) {
        char ch = s[n];
        int ok = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
                 ch == '.' || ch == '_' || ch == ':' || ch == '-';
        if (!ok || n >= max)
            return 0;
    }
    return 1;
}

int libdtx_valid_resource(const char *s)
{
    size_t n = 0;

    if (s == NULL || s[0] == '\0')
        return 0;
    for (; s[n] != '\0'; n++) {
        char ch = s[n];
        int ok = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
                 ch == '.' || ch == '_' || ch == '-';
        if (!ok || n >= DTX_RESOURCE_MAX)
            return 0;
    }
    return 1;
}

int libdtx_valid_url(const char *s)
{
    const char *sep;

    if (s == NULL)
        return 0;
    sep = strstr(s, "://");
    if (sep == NULL || sep == s || sep[3] == '\0')
        return 0;
    for (const char *p = s; p < sep; p++) {
        int ok = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z');
        if (!ok)
            return 0;
    }
    for (const char *p = s; *p != '\0'; p++) {
        if ((unsigned char)*p <= ' ')
            return 0;
    }
    return 1;
}

int libdtx_parse_payload(const char *payload, json_t **out)
{
    json_error_t jerr;
    json_t *v;

    if (payload == NULL)
        return DTX_EINVAL;
    v = json_loads(payload, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &jerr);
    if (v == NULL)
        return json_error_code(&jerr) == json_error_out_of_memory ? DTX_ENOMEM : DTX_EINVAL;
    *out = v;
    return DTX_OK;
}

/* A new spec of the given type, with an empty "steps" array when it has steps. */
static int spec_new(const char *type, int with_steps, struct dtx_spec **out)
{
    struct dtx_spec *s;

    if (out == NULL)
        return DTX_EINVAL;
    s = calloc(1, sizeof *s);
    if (s == NULL)
        return DTX_ENOMEM;
    strcpy(s->type, type);
    s->body = json_object();
    if (s->body == NULL || json_object_set_new(s->body, "type", json_string(type)) != 0)
        goto fail;
    if (with_steps && json_object_set_new(s->body, "steps", json_array()) != 0)
        goto fail;
    *out = s;
    return DTX_OK;
fail:
    dtx_spec_free(s);
    return DTX_ENOMEM;
}

int dtx_saga_new(struct dtx_spec **out)
{
    return spec_new("saga", 1, out);
}

int dtx_tcc_new(struct dtx_spec **out)
{
    return spec_new("tcc", 0, out);
}

int dtx_2pc_new(struct dtx_spec **out)
{
    return spec_new("2pc", 0, out);
}

int dtx_msg_new(const char *check_url, struct dtx_spec **out)
{
    struct dtx_spec *s;
    int rc;

    if (!libdtx_valid_url(check_url) || out == NULL)
        return DTX_EINVAL;
    rc = spec_new("msg", 1, &s);
    if (rc != DTX_OK)
        return rc;
    if (json_object_set_new(s->body, "check", json_string(check_url)) != 0) {
        dtx_spec_free(s);
        return DTX_ENOMEM;
    }
    *out = s;
    return DTX_OK;
}

void dtx_spec_free(struct dtx_spec *s)
{
    if (s == NULL)
        return;
    json_decref(s->body);
    free(s);
}

/* Append step (a new reference, consumed) to the steps of s. */
static int add_step(struct dtx_spec *s, json_t *step, const char *payload)
{
    json_t *p = NULL;
    int rc;

    if (step == NULL)
        return DTX_ENOMEM;
    if (payload != NULL) {
        rc = libdtx_parse_payload(payload, &p);
        if (rc != DTX_OK) {
            json_decref(step);
            return rc;
        }
        if (json_object_set_new(step, "payload", p) != 0) {
            json_decref(step);
            return DTX_ENOMEM;
        }
    }
    if (json_array_append_new(json_object_get(s->body, "steps"), step) != 0)
        return DTX_ENOMEM;
    return DTX_OK;
}

int dtx_saga_add_step(struct dtx_spec *s, const char *action, const char *compensate,
                      const char *payload)
{
    if (s == NULL || strcmp(s->type, "saga") != 0 || !libdtx_valid_url(action) ||
        !libdtx_valid_url(compensate))
        return DTX_EINVAL;
    return add_step(s, json_pack("{s:s, s:s}", "action", action, "compensate", compensate),
                    payload);
}

int dtx_saga_set_after(struct dtx_spec *s, int step, const int *after, size_t n)
{
    json_t *steps, *st, *arr;

    if (s == NULL || strcmp(s->type, "saga") != 0 || (after == NULL && n > 0))
        return DTX_EINVAL;
    steps = json_object_get(s->body, "steps");
    if (step < 1 || (size_t)step > json_array_size(steps))
        return DTX_EINVAL;
    for (size_t i = 0; i < n; i++) {
        if (after[i] < 1 || after[i] == step)
            return DTX_EINVAL;
    }
    arr = json_array();
    if (arr == NULL)
        return DTX_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        if (json_array_append_new(arr, json_integer(after[i])) != 0) {
            json_decref(arr);
            return DTX_ENOMEM;
        }
    }
    st = json_array_get(steps, (size_t)step - 1);
    if (json_object_set_new(st, "after", arr) != 0)
        return DTX_ENOMEM;
    return DTX_OK;
}

int dtx_msg_add_step(struct dtx_spec *s, const char *action, const char *payload)
{
    if (s == NULL || strcmp(s->type, "msg") != 0 || !libdtx_valid_url(action))
        return DTX_EINVAL;
    return add_step(s, json_pack("{s:s}", "action", action), payload);
}

int dtx_spec_set_gid(struct dtx_spec *s, const char *gid)
{
    if (s == NULL || !libdtx_valid_id(gid, DTX_GID_MAX))
        return DTX_EINVAL;
    if (json_object_set_new(s->body, "gid", json_string(gid)) != 0)
        return DTX_ENOMEM;
    return DTX_OK;
}

/* Set (value >= 0) or remove (value < 0) the integer field key of obj. */
static int set_or_drop(json_t *obj, const char *key, int64_t value)
{
    if (value < 0) {
        json_object_del(obj, key);
        return DTX_OK;
    }
    if (json_object_set_new(obj, key, json_integer((json_int_t)value)) != 0)
        return DTX_ENOMEM;
    return DTX_OK;
}

int dtx_spec_set_retry(struct dtx_spec *s, int64_t initial_interval_ms, int64_t max_interval_ms,
                       int64_t limit)
{
    json_t *r;

    if (s == NULL)
        return DTX_EINVAL;
    if (initial_interval_ms < 0 && max_interval_ms < 0 && limit < 0) {
        json_object_del(s->body, "retry");
        return DTX_OK;
    }
    r = json_object();
    if (r == NULL || set_or_drop(r, "initial_interval_ms", initial_interval_ms) != 0 ||
        set_or_drop(r, "max_interval_ms", max_interval_ms) != 0 ||
        set_or_drop(r, "limit", limit) != 0) {
        json_decref(r);
        return DTX_ENOMEM;
    }
    if (json_object_set_new(s->body, "retry", r) != 0)
        return DTX_ENOMEM;
    return DTX_OK;
}

int dtx_spec_set_request_timeout(struct dtx_spec *s, int64_t ms)
{
    if (s == NULL || ms < 1)
        return DTX_EINVAL;
    return set_or_drop(s->body, "request_timeout_ms", ms);
}

int dtx_spec_set_timeout(struct dtx_spec *s, int64_t ms)
{
    if (s == NULL || ms < 0)
        return DTX_EINVAL;
    return set_or_drop(s->body, "timeout_ms", ms);
}

int dtx_spec_set_wait(struct dtx_spec *s, int64_t wait_timeout_ms)
{
    if (s == NULL || wait_timeout_ms < 0)
        return DTX_EINVAL;
    if (json_object_set_new(s->body, "wait", json_true()) != 0)
        return DTX_ENOMEM;
    if (wait_timeout_ms == 0) {
        json_object_del(s->body, "wait_timeout_ms");
        return DTX_OK;
    }
    return set_or_drop(s->body, "wait_timeout_ms", wait_timeout_ms);
}

int dtx_spec_set_submit(struct dtx_spec *s)
{
    if (s == NULL || strcmp(s->type, "msg") != 0)
        return DTX_EINVAL;
    return json_object_set_new(s->body, "submit", json_true()) == 0 ? DTX_OK : DTX_ENOMEM;
}

int libdtx_spec_body(const struct dtx_spec *s, json_t **out)
{
    json_t *steps;

    if (s == NULL || out == NULL)
        return DTX_EINVAL;
    steps = json_object_get(s->body, "steps");
    if (steps != NULL && json_array_size(steps) == 0)
        return DTX_EINVAL;
    *out = json_incref(s->body);
    return DTX_OK;
}

int dtx_spec_to_json(const struct dtx_spec *s, char **out)
{
    json_t *body;
    char *text;
    int rc;

    if (out == NULL)
        return DTX_EINVAL;
    rc = libdtx_spec_body(s, &body);
    if (rc != DTX_OK)
        return rc;
    text = json_dumps(body, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(body);
    if (text == NULL)
        return DTX_ENOMEM;
    *out = text;
    return DTX_OK;
}

void dtx_free(void *p)
{
    free(p);
}
