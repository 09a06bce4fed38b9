/*
 * request.c - decoding and validating POST /v1/transactions (see request.h
 * and docs/API.md, which is the contract this file implements).
 *
 * The body is parsed by jansson with duplicate keys rejected, then walked
 * once, object by object. At each object the keys are checked first, so a
 * misspelt option is reported as `unknown_field` rather than as the required
 * field it was meant to be; then the fields in a fixed order (type, gid,
 * steps, retry, request_timeout_ms, timeout_ms, wait, wait_timeout_ms). The
 * first problem found is the answer: its stable code, the JSON path of the
 * field (`steps[1].action`, `retry.limit`; "" for the whole body) and a
 * message that starts with that path.
 *
 * Optional fields that are present must have their documented type: JSON
 * null is not "absent" (except as a step payload, where null is a value).
 * A step's payload is kept as compact JSON text, re-serialized from the
 * parsed value, so whitespace never makes two equal bodies differ.
 *
 * Error fields and messages may quote a client's key. They are cut at a
 * UTF-8 character boundary when too long, and jansson's own error text
 * (which can quote raw input bytes) is reduced to printable ASCII, so an
 * error can always be sent back as JSON.
 */
#include "api/request.h"

#include <jansson.h>
#include <pthread.h>
#include <sanitizer/asan_interface.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/buf.h"
#include "common/err.h"
#include "common/fmt.h"

#define URL_MAX             2048
#define GID_MAX             128
#define RETRY_INITIAL_MAX   3600000LL  /* 1 hour */
#define RETRY_MAX_MAX       86400000LL /* 1 day */
#define RETRY_LIMIT_MAX     1000000LL
#define REQUEST_TIMEOUT_MAX 600000LL      /* 10 minutes */
#define TXN_TIMEOUT_MAX     31536000000LL /* 365 days */

#define BRANCH_ID_MAX       64
#define MSG_DEFAULT_TIMEOUT 10000LL /* msg: ask check after 10 s without submit */
/* tcc/2pc: roll back after 60 s without submit (or, 2pc, without a decision),
 * so a client that dies never leaves participants holding reservations or
 * prepared transactions' locks; 0 given explicitly means no deadline */
#define HOLD_DEFAULT_TIMEOUT 60000LL

static const char *const top_keys[] = {
    "gid",        "type",   "steps",           "branches",
    "check",      "submit", "retry",           "request_timeout_ms",
    "timeout_ms", "wait",   "wait_timeout_ms", NULL};
static const char *const saga_step_keys[] = {"action", "compensate", "payload", "after", NULL};
static const char *const msg_step_keys[] = {"action", "payload", NULL};
static const char *const tcc_branch_keys[] = {"branch", "confirm", "cancel", "payload", NULL};
static const char *const xa_branch_keys[] = {"branch",   "prepare", "commit", "rollback",
                                             "resource", "payload", NULL};
static const char *const control_keys[] = {"wait", "wait_timeout_ms", NULL};
static const char *const retry_keys[] = {"initial_interval_ms", "max_interval_ms", "limit", NULL};

/*
 * jansson's memory while a body is parsed. A 2-step saga's create request
 * makes about 66 small allocations in jansson (every object, key, string and
 * array), all freed a few microseconds later when the tree goes: a third of
 * the daemon's mallocs. Between tree_begin and tree_end they come from one
 * block the thread keeps, bumped forward and dropped at once at the end; what
 * does not fit spills to malloc. jansson's allocator is the whole process's
 * (json_set_alloc_funcs), so outside a tree, and on any other thread, its
 * allocations are malloc and free as before, and a pointer outside the block
 * is always given to free.
 */
#define TREE_BLOCK (64 * 1024)
#define TREE_ALIGN 16

/*
 * Under AddressSanitizer the block is poisoned except for what is handed out
 * and not yet freed, so a use of a freed jansson value, or of any value
 * after tree_end, is still reported. Each allocation is then preceded by its
 * size (to poison it again when freed) and followed by a poisoned redzone.
 * Elsewhere these macros do nothing (asan_interface.h).
 */
#if defined(__SANITIZE_ADDRESS__)
#define TREE_PAD TREE_ALIGN
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TREE_PAD TREE_ALIGN
#endif
#endif
#ifndef TREE_PAD
#define TREE_PAD 0
#endif

static _Thread_local struct {
    char *base;  /* TREE_BLOCK bytes, made at the thread's first tree */
    size_t used; /* bytes handed out in the current tree */
    int active;
} tree;

static void *tree_malloc(size_t n)
{
    size_t need = TREE_PAD + ((n + TREE_ALIGN - 1) & ~(size_t)(TREE_ALIGN - 1)) + TREE_PAD;
    if (tree.active && n <= TREE_BLOCK && need <= TREE_BLOCK - tree.used) {
        char *p = tree.base + tree.used + TREE_PAD;
        tree.used += need;
        ASAN_UNPOISON_MEMORY_REGION(p - TREE_PAD, TREE_PAD + n);
        if (TREE_PAD)
            memcpy(p - TREE_PAD, &n, sizeof n);
        return p;
    }
    return malloc(n);
}

static void tree_free(void *p)
{
    uintptr_t a = (uintptr_t)p, base = (uintptr_t)tree.base;
    if (base != 0 && a >= base && a < base + TREE_BLOCK) {
        /* reused only after tree_end; under ASan, out of bounds until then */
        if (TREE_PAD) {
            size_t n;
            memcpy(&n, (char *)p - TREE_PAD, sizeof n);
            ASAN_POISON_MEMORY_REGION(p, n);
        }
        return;
    }
    free(p);
}

static void tree_init(void)
{
    json_set_alloc_funcs(tree_malloc, tree_free);
}

static void tree_begin(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, tree_init);
    if (tree.base == NULL)
        tree.base = xmalloc(TREE_BLOCK);
    ASAN_POISON_MEMORY_REGION(tree.base, TREE_BLOCK);
    tree.used = 0;
    tree.active = 1;
}

/* After the tree's last json_decref. */
static void tree_end(void)
{
    ASAN_POISON_MEMORY_REGION(tree.base, TREE_BLOCK);
    tree.active = 0;
    tree.used = 0;
}

/* Cut s (NUL-terminated, valid UTF-8 except perhaps for a truncated last
 * character) back to the last complete character. */
static void utf8_trim(char *s)
{
    size_t n = strlen(s);
    size_t i = n;
    while (i > 0 && ((unsigned char)s[i - 1] & 0xC0) == 0x80)
        i--;
    if (i == 0)
        return;
    unsigned char lead = (unsigned char)s[i - 1];
    size_t want = 1;
    if (lead >= 0xF0)
        want = 4;
    else if (lead >= 0xE0)
        want = 3;
    else if (lead >= 0xC0)
        want = 2;
    if (n - (i - 1) < want)
        s[i - 1] = '\0';
}

/* Fill err and return DTX_EINVAL. field is the JSON path ("" for the body). */
static int fail(struct req_error *err, const char *code, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(struct req_error *err, const char *code, const char *field, const char *fmt, ...)
{
    err->code = code;
    snprintf(err->field, sizeof err->field, "%s", field);
    utf8_trim(err->field);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    utf8_trim(err->message);
    return DTX_EINVAL;
}

/* Copy jansson's error text into out (size n) as printable ASCII. */
static const char *ascii_text(const char *s, char *out, size_t n)
{
    size_t o = 0;
    for (; *s && o + 1 < n; s++) {
        unsigned char c = (unsigned char)*s;
        out[o++] = (c < 0x20 || c >= 0x7f) ? '?' : (char)c;
    }
    out[o] = '\0';
    return out;
}

/* Report the first key of obj that is not in known (a NULL-ended list), with
 * its path prefix+key. Returns 0 or DTX_EINVAL. */
static int check_keys(json_t *obj, const char *const *known, const char *prefix,
                      struct req_error *err)
{
    const char *key;
    json_t *val;
    json_object_foreach(obj, key, val)
    {
        int found = 0;
        for (const char *const *k = known; *k != NULL && !found; k++)
            found = strcmp(*k, key) == 0;
        if (!found) {
            char path[sizeof err->field];
            snprintf(path, sizeof path, "%s%s", prefix, key);
            utf8_trim(path);
            return fail(err, REQ_ERR_UNKNOWN_FIELD, path, "%s is not a known field", path);
        }
    }
    return 0;
}

/*
 * Read the optional integer obj[key] (path names it in errors) into *out if
 * present and in [lo, hi]; *out is left alone when absent. Returns 1 when
 * present, 0 when absent, DTX_EINVAL (err filled) when not a JSON integer
 * (wrong_type) or out of range (invalid_value).
 */
static int get_int(json_t *obj, const char *key, const char *path, long long lo, long long hi,
                   long long *out /* OUT */, struct req_error *err)
{
    json_t *v = json_object_get(obj, key);
    if (v == NULL)
        return 0;
    if (!json_is_integer(v))
        return fail(err, REQ_ERR_WRONG_TYPE, path, "%s must be an integer", path);
    long long n = json_integer_value(v);
    if (n < lo || n > hi)
        return fail(err, REQ_ERR_INVALID_VALUE, path, "%s must be an integer from %lld to %lld",
                    path, lo, hi);
    *out = n;
    return 1;
}

/* Whether the authority that starts at p (just after "://") has a non-empty
 * host and, if it names a port, a port from 1 to 65535. */
static int authority_ok(const char *p)
{
    const char *end = p + strcspn(p, "/?#");
    const char *host = p;
    for (const char *q = p; q < end; q++)
        if (*q == '@')
            host = q + 1;
    const char *rest;
    if (host < end && *host == '[') {
        const char *close = memchr(host, ']', (size_t)(end - host));
        if (close == NULL || close == host + 1)
            return 0;
        rest = close + 1;
    } else {
        const char *colon = memchr(host, ':', (size_t)(end - host));
        rest = colon != NULL ? colon : end;
        if (rest == host)
            return 0;
    }
    if (rest == end)
        return 1;
    if (*rest != ':' || end - rest < 2 || end - rest > 6)
        return 0;
    long port = 0;
    for (const char *q = rest + 1; q < end; q++) {
        if (*q < '0' || *q > '9')
            return 0;
        port = port * 10 + (*q - '0');
    }
    return port >= 1 && port <= 65535;
}

static int has_prefix(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* What is wrong with url (n bytes) as the target of op in a transaction of
 * type, as the end of a sentence, or NULL. */
static const char *url_problem(const char *url, size_t n, const struct req_limits *lim,
                               enum txn_type type, const char *op)
{
    if (n == 0)
        return "is empty";
    if (n > URL_MAX)
        return "is longer than 2048 bytes";
    if (strlen(url) != n)
        return "contains a NUL byte";
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)url[i];
        if (c <= 0x20 || c == 0x7f)
            return "contains a space or a control character";
    }
    const char *after = NULL;
    if (has_prefix(url, "http://"))
        after = url + strlen("http://");
    else if (has_prefix(url, "https://"))
        after = url + strlen("https://");
    if (lim->url_refused != NULL) {
        const char *refused = lim->url_refused(lim->url_refused_arg, url, type, op);
        if (refused != NULL)
            return refused;
    } else if (after == NULL) {
        return "is not an http:// or https:// URL";
    }
    if (after != NULL && !authority_ok(after))
        return "has no valid host[:port]";
    return NULL;
}

/* Copy the required URL field step[key] (the target of operation key in a
 * transaction of type) into *out (xmalloc). path is the step's path
 * ("steps[3]"), NULL at the top level. Returns 0 or DTX_EINVAL. */
static int get_url(json_t *step, const char *key, const char *path, enum txn_type type,
                   const struct req_limits *lim, char **out /* OUT */, struct req_error *err)
{
    char field[sizeof err->field];
    json_t *v = json_object_get(step, key);
    const char *problem = NULL;
    if (v != NULL && json_is_string(v)) {
        const char *url = json_string_value(v);
        size_t n = json_string_length(v);
        problem = url_problem(url, n, lim, type, key);
        if (problem == NULL) {
            *out = xmemdup(url, n);
            return 0;
        }
    }
    if (path != NULL)
        snprintf(field, sizeof field, "%s.%s", path, key);
    else
        snprintf(field, sizeof field, "%s", key);
    if (v == NULL)
        return fail(err, REQ_ERR_MISSING_FIELD, field, "%s is required", field);
    if (!json_is_string(v))
        return fail(err, REQ_ERR_WRONG_TYPE, field, "%s must be a string (a URL)", field);
    return fail(err, REQ_ERR_INVALID_URL, field, "%s %s", field, problem);
}

/* steps[i].after: distinct numbers (1..n) of other steps, kept 0-based. */
static int parse_after(json_t *after, size_t i, size_t n, const char *path, struct step_spec *st,
                       struct req_error *err)
{
    char field[64];
    snprintf(field, sizeof field, "%s.after", path);
    if (!json_is_array(after))
        return fail(err, REQ_ERR_WRONG_TYPE, field, "%s must be an array of step numbers", field);
    size_t na = json_array_size(after);
    st->after = xmalloc((na ? na : 1) * sizeof *st->after);
    for (size_t j = 0; j < na; j++) {
        json_t *e = json_array_get(after, j);
        snprintf(field, sizeof field, "%s.after[%zu]", path, j);
        if (!json_is_integer(e))
            return fail(err, REQ_ERR_WRONG_TYPE, field, "%s must be an integer (a step number)",
                        field);
        json_int_t v = json_integer_value(e);
        if (v < 1 || (size_t)v > n || (size_t)v == i + 1)
            return fail(err, REQ_ERR_INVALID_VALUE, field,
                        "%s must be the number (1 to %zu) of another step", field, n);
        for (size_t k = 0; k < j; k++)
            if (st->after[k] == (uint32_t)(v - 1))
                return fail(err, REQ_ERR_INVALID_VALUE, field, "%s names step %lld twice", field,
                            (long long)v);
        st->after[st->nafter++] = (uint32_t)(v - 1);
    }
    return 0;
}

/*
 * Reject a dependency cycle among the steps' `after` lists: a depth-first
 * walk (iterative, so a long chain cannot overflow the stack) from each step
 * in order; the first cycle found is reported on its lowest step.
 */
static int check_cycles(const struct txn_spec *spec, struct req_error *err)
{
    uint32_t n = spec->nsteps;
    unsigned char *color = xcalloc(n, 1); /* 0 new, 1 on the path, 2 done */
    uint32_t *node = xmalloc(n * sizeof *node);
    uint32_t *edge = xmalloc(n * sizeof *edge);
    int rc = 0;
    for (uint32_t s = 0; s < n && rc == 0; s++) {
        if (color[s])
            continue;
        size_t top = 0;
        node[0] = s;
        edge[0] = 0;
        color[s] = 1;
        while (top != SIZE_MAX && rc == 0) {
            const struct step_spec *st = &spec->steps[node[top]];
            if (edge[top] == st->nafter) {
                color[node[top]] = 2;
                top = top == 0 ? SIZE_MAX : top - 1;
                continue;
            }
            uint32_t next = st->after[edge[top]++];
            if (color[next] == 2)
                continue;
            if (color[next] == 0) {
                color[next] = 1;
                top++;
                node[top] = next;
                edge[top] = 0;
                continue;
            }
            /* next is on the path: the cycle is node[k..top] where node[k] == next */
            size_t k = top;
            while (node[k] != next)
                k--;
            uint32_t low = next;
            char desc[160];
            size_t used = 0;
            for (size_t m = k; m <= top; m++) {
                if (node[m] < low)
                    low = node[m];
                if (used < sizeof desc - 16)
                    used +=
                        (size_t)snprintf(desc + used, sizeof desc - used, "%u after ", node[m] + 1);
            }
            snprintf(desc + (used < sizeof desc - 16 ? used : sizeof desc - 16), 16, "%u",
                     next + 1);
            char field[48];
            snprintf(field, sizeof field, "steps[%u].after", low);
            rc = fail(err, REQ_ERR_DEPENDENCY_CYCLE, field,
                      "%s: the steps wait for each other in a cycle (step %s)", field, desc);
        }
    }
    free(color);
    free(node);
    free(edge);
    return rc;
}

static int dump_to_buf(const char *p, size_t n, void *data)
{
    return buf_append(data, p, n) == 0 ? 0 : -1;
}

/* obj.payload as compact JSON text ("{}" when absent) into st. */
static void get_payload(json_t *obj, struct step_spec *st)
{
    json_t *payload = json_object_get(obj, "payload");
    if (payload == NULL) {
        st->payload = xmemdup("{}", 2);
        st->payload_len = 2;
        return;
    }
    /* a parsed value always encodes, and the body it came from was capped */
    struct buf b;
    buf_init(&b, SIZE_MAX);
    json_dump_callback(payload, dump_to_buf, &b, JSON_COMPACT | JSON_ENCODE_ANY);
    st->payload = buf_steal(&b, &st->payload_len);
}

/* "<name>[<i>]" into out, which has room for name and 24 bytes more. With
 * dot, a "." follows (the prefix of the item's fields). */
static void item_path(char *out, const char *name, size_t i, int dot)
{
    size_t n = strlen(name);
    memcpy(out, name, n);
    out[n++] = '[';
    n += fmt_u64(out + n, i);
    out[n++] = ']';
    if (dot)
        out[n++] = '.';
    out[n] = '\0';
}

static int parse_step(json_t *v, size_t i, size_t n, enum txn_type type,
                      const struct req_limits *lim, struct step_spec *st, struct req_error *err)
{
    char path[32];
    char prefix[40];
    item_path(path, "steps", i, 0);
    item_path(prefix, "steps", i, 1);
    if (!json_is_object(v))
        return fail(err, REQ_ERR_WRONG_TYPE, path, "%s must be an object", path);
    if (check_keys(v, type == TXN_MSG ? msg_step_keys : saga_step_keys, prefix, err) != 0)
        return DTX_EINVAL;
    if (get_url(v, "action", path, type, lim, &st->action, err) != 0)
        return DTX_EINVAL;
    if (type == TXN_SAGA && get_url(v, "compensate", path, type, lim, &st->compensate, err) != 0)
        return DTX_EINVAL;
    json_t *after = json_object_get(v, "after");
    if (after != NULL && parse_after(after, i, n, path, st, err) != 0)
        return DTX_EINVAL;
    get_payload(v, st);
    return 0;
}

static int parse_steps(json_t *root, const struct req_limits *lim, struct txn_spec *spec,
                       struct req_error *err)
{
    json_t *steps = json_object_get(root, "steps");
    if (spec->type == TXN_TCC || spec->type == TXN_2PC) {
        if (steps != NULL)
            return fail(err, REQ_ERR_INVALID_VALUE, "steps",
                        "steps is not allowed for a %s transaction: register its branches "
                        "with POST /v1/transactions/{gid}/branches",
                        txn_type_name(spec->type));
        return 0;
    }
    if (steps == NULL)
        return fail(err, REQ_ERR_MISSING_FIELD, "steps", "steps is required");
    if (!json_is_array(steps))
        return fail(err, REQ_ERR_WRONG_TYPE, "steps", "steps must be an array");
    size_t n = json_array_size(steps);
    if (n == 0)
        return fail(err, REQ_ERR_INVALID_VALUE, "steps", "steps must have at least one step");
    if (n > lim->max_steps)
        return fail(err, REQ_ERR_TOO_MANY_STEPS, "steps",
                    "steps has %zu steps, more than the maximum of %u", n, lim->max_steps);
    spec->steps = xcalloc(n, sizeof *spec->steps);
    spec->nsteps = (uint32_t)n;
    for (size_t i = 0; i < n; i++) {
        json_t *step = json_array_get(steps, i);
        if (parse_step(step, i, n, spec->type, lim, &spec->steps[i], err) != 0)
            return DTX_EINVAL;
        if (json_is_object(step) && json_object_get(step, "after") != NULL)
            spec->concurrent = 1;
    }
    if (spec->concurrent && check_cycles(spec, err) != 0)
        return DTX_EINVAL;
    return 0;
}

static int parse_retry(json_t *root, struct txn_spec *spec, struct req_error *err)
{
    json_t *retry = json_object_get(root, "retry");
    if (retry == NULL)
        return 0;
    if (!json_is_object(retry))
        return fail(err, REQ_ERR_WRONG_TYPE, "retry", "retry must be an object");
    if (check_keys(retry, retry_keys, "retry.", err) != 0)
        return DTX_EINVAL;
    long long initial = spec->retry.initial_ms;
    long long max = spec->retry.max_ms;
    long long limit = spec->retry.limit;
    int rc = get_int(retry, "initial_interval_ms", "retry.initial_interval_ms", 1,
                     RETRY_INITIAL_MAX, &initial, err);
    if (rc < 0)
        return rc;
    int max_given =
        get_int(retry, "max_interval_ms", "retry.max_interval_ms", 1, RETRY_MAX_MAX, &max, err);
    if (max_given < 0)
        return max_given;
    rc = get_int(retry, "limit", "retry.limit", 0, RETRY_LIMIT_MAX, &limit, err);
    if (rc < 0)
        return rc;
    if (max < initial) {
        /* blame the field the client sent: the other one is a default */
        if (max_given)
            return fail(err, REQ_ERR_INVALID_VALUE, "retry.max_interval_ms",
                        "retry.max_interval_ms must be at least retry.initial_interval_ms "
                        "(%lld)",
                        initial);
        return fail(err, REQ_ERR_INVALID_VALUE, "retry.initial_interval_ms",
                    "retry.initial_interval_ms must not exceed retry.max_interval_ms "
                    "(default %lld)",
                    max);
    }
    spec->retry.initial_ms = (uint32_t)initial;
    spec->retry.max_ms = (uint32_t)max;
    spec->retry.limit = (uint32_t)limit;
    return 0;
}

/* wait and wait_timeout_ms of root into *wait / *timeout_ms (kept when absent). */
static int parse_wait(json_t *root, const struct req_limits *lim, int *wait, uint32_t *timeout_ms,
                      struct req_error *err)
{
    json_t *w = json_object_get(root, "wait");
    if (w != NULL) {
        if (!json_is_boolean(w))
            return fail(err, REQ_ERR_WRONG_TYPE, "wait", "wait must be true or false");
        *wait = json_is_true(w);
    }
    long long v = *timeout_ms;
    if (get_int(root, "wait_timeout_ms", "wait_timeout_ms", 1, lim->max_wait_ms, &v, err) < 0)
        return DTX_EINVAL;
    *timeout_ms = (uint32_t)v;
    return 0;
}

/* msg: the required check URL; other types: none allowed. */
static int parse_check(json_t *root, const struct req_limits *lim, struct txn_spec *spec,
                       struct req_error *err)
{
    json_t *check = json_object_get(root, "check");
    if (spec->type != TXN_MSG) {
        if (check != NULL)
            return fail(err, REQ_ERR_INVALID_VALUE, "check", "check is only for msg transactions");
        return 0;
    }
    if (check == NULL)
        return fail(err, REQ_ERR_MISSING_FIELD, "check",
                    "check is required: the URL dtxd asks whether the local transaction committed");
    if (!json_is_string(check))
        return fail(err, REQ_ERR_WRONG_TYPE, "check", "check must be a string (a URL)");
    const char *problem =
        url_problem(json_string_value(check), json_string_length(check), lim, TXN_MSG, "check");
    if (problem != NULL)
        return fail(err, REQ_ERR_INVALID_URL, "check", "check %s", problem);
    spec->check = xmemdup(json_string_value(check), json_string_length(check));
    return 0;
}

static int parse_branch_obj(json_t *obj, enum txn_type type, const char *path,
                            const struct req_limits *lim, struct step_spec *out,
                            struct req_error *err);

/* tcc/2pc: branches given with the create request, registered at once. */
static int parse_branches(json_t *root, const struct req_limits *lim, struct txn_spec *spec,
                          struct req_error *err)
{
    json_t *branches = json_object_get(root, "branches");
    if (branches == NULL)
        return 0;
    if (spec->type != TXN_TCC && spec->type != TXN_2PC)
        return fail(err, REQ_ERR_INVALID_VALUE, "branches",
                    "branches is only for tcc and 2pc transactions (a %s has steps)",
                    txn_type_name(spec->type));
    if (!json_is_array(branches))
        return fail(err, REQ_ERR_WRONG_TYPE, "branches", "branches must be an array");
    size_t n = json_array_size(branches);
    if (n > lim->max_steps)
        return fail(err, REQ_ERR_TOO_MANY_STEPS, "branches",
                    "branches has %zu branches, more than the maximum of %u", n, lim->max_steps);
    if (n == 0)
        return 0;
    spec->steps = xcalloc(n, sizeof *spec->steps);
    spec->nsteps = (uint32_t)n;
    char path[32];
    for (size_t i = 0; i < n; i++) {
        item_path(path, "branches", i, 0);
        if (parse_branch_obj(json_array_get(branches, i), spec->type, path, lim, &spec->steps[i],
                             err) != 0)
            return DTX_EINVAL;
        for (size_t k = 0; spec->steps[i].id && k < i; k++)
            if (spec->steps[k].id && strcmp(spec->steps[k].id, spec->steps[i].id) == 0)
                return fail(err, REQ_ERR_INVALID_VALUE, path,
                            "%s.branch repeats the id of branches[%zu]", path, k);
    }
    /* the ones without an id: the lowest free numbers */
    uint32_t next = 1;
    for (size_t i = 0; i < n; i++) {
        if (spec->steps[i].id != NULL)
            continue;
        char id[16];
        for (;; next++) {
            fmt_u64(id, next);
            size_t k = 0;
            while (k < n && !(spec->steps[k].id && strcmp(spec->steps[k].id, id) == 0))
                k++;
            if (k == n)
                break;
        }
        spec->steps[i].id = xstrdup(id);
    }
    return 0;
}

/* "submit": true creates a tcc/2pc/msg transaction already submitted. */
static int parse_submit(json_t *root, struct txn_spec *spec, struct req_error *err)
{
    json_t *submit = json_object_get(root, "submit");
    if (submit == NULL)
        return 0;
    if (!json_is_boolean(submit))
        return fail(err, REQ_ERR_WRONG_TYPE, "submit", "submit must be true or false");
    if (spec->type == TXN_SAGA)
        return fail(err, REQ_ERR_INVALID_VALUE, "submit",
                    "submit is not for sagas: a saga starts when it is created");
    spec->submit = json_is_true(submit);
    return 0;
}

/* Everything after type, gid and steps. */
static int parse_options(json_t *root, const struct req_limits *lim, struct txn_spec *spec,
                         struct req_error *err)
{
    if (parse_retry(root, spec, err) != 0)
        return DTX_EINVAL;
    long long v = spec->request_timeout_ms;
    if (get_int(root, "request_timeout_ms", "request_timeout_ms", 1, REQUEST_TIMEOUT_MAX, &v, err) <
        0)
        return DTX_EINVAL;
    spec->request_timeout_ms = (uint32_t)v;
    v = spec->type == TXN_MSG                            ? MSG_DEFAULT_TIMEOUT
        : spec->type == TXN_TCC || spec->type == TXN_2PC ? HOLD_DEFAULT_TIMEOUT
                                                         : 0;
    if (get_int(root, "timeout_ms", "timeout_ms", spec->type == TXN_MSG ? 1 : 0, TXN_TIMEOUT_MAX,
                &v, err) < 0)
        return DTX_EINVAL;
    spec->timeout_ms = (uint64_t)v;
    return parse_wait(root, lim, &spec->wait, &spec->wait_timeout_ms, err);
}

/* Decode and validate the create body root (any JSON value) into *out, as
 * request_parse_create does; err is untouched on success. */
static int parse_create_obj(json_t *root, const struct req_limits *lim, struct txn_spec **out,
                            struct req_error *err)
{
    struct txn_spec *spec = NULL;
    *out = NULL;
    if (!json_is_object(root)) {
        fail(err, REQ_ERR_INVALID_JSON, "", "the body must be a JSON object");
        goto fail;
    }
    if (check_keys(root, top_keys, "", err) != 0)
        goto fail;

    json_t *type = json_object_get(root, "type");
    if (type == NULL) {
        fail(err, REQ_ERR_MISSING_FIELD, "type", "type is required");
        goto fail;
    }
    if (!json_is_string(type)) {
        fail(err, REQ_ERR_WRONG_TYPE, "type", "type must be a string");
        goto fail;
    }
    enum txn_type ttype;
    if (txn_type_parse(json_string_value(type), &ttype) != 0 ||
        strlen(json_string_value(type)) != json_string_length(type)) {
        fail(err, REQ_ERR_INVALID_TYPE, "type",
             "type must be one of \"saga\", \"tcc\", \"2pc\", \"msg\"");
        goto fail;
    }

    spec = xcalloc(1, sizeof *spec);
    spec->type = ttype;
    spec->retry = lim->default_retry;
    spec->request_timeout_ms = lim->default_request_timeout_ms;
    spec->wait_timeout_ms = lim->default_wait_timeout_ms;
    if (spec->wait_timeout_ms > lim->max_wait_ms)
        spec->wait_timeout_ms = lim->max_wait_ms;

    json_t *gid = json_object_get(root, "gid");
    if (gid != NULL) {
        if (!json_is_string(gid)) {
            fail(err, REQ_ERR_WRONG_TYPE, "gid", "gid must be a string");
            goto fail;
        }
        if (strlen(json_string_value(gid)) != json_string_length(gid) ||
            !request_gid_ok(json_string_value(gid))) {
            fail(err, REQ_ERR_INVALID_VALUE, "gid",
                 "gid must be 1 to 128 characters of A-Z a-z 0-9 . _ : -");
            goto fail;
        }
        spec->gid = xstrdup(json_string_value(gid));
    }

    if (parse_steps(root, lim, spec, err) != 0)
        goto fail;
    if (parse_check(root, lim, spec, err) != 0)
        goto fail;
    if (parse_branches(root, lim, spec, err) != 0)
        goto fail;
    if (parse_submit(root, spec, err) != 0)
        goto fail;
    if (parse_options(root, lim, spec, err) != 0)
        goto fail;
    *out = spec;
    return 0;

fail:
    txn_spec_free(spec);
    return DTX_EINVAL;
}

/* Parse body as JSON (any value): NULL with err filled. */
static json_t *load_json(const char *body, size_t len, struct req_error *err)
{
    json_error_t jerr;
    json_t *root = json_loadb(body != NULL ? body : "", len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        char text[sizeof jerr.text];
        fail(err, REQ_ERR_INVALID_JSON, "", "the body is not valid JSON: %s (line %d, column %d)",
             ascii_text(jerr.text, text, sizeof text), jerr.line, jerr.column);
    }
    return root;
}

int request_parse_create(const char *body, size_t len, const struct req_limits *lim,
                         struct txn_spec **out, struct req_error *err)
{
    *out = NULL;
    tree_begin();
    json_t *root = load_json(body, len, err);
    int rc = root != NULL ? parse_create_obj(root, lim, out, err) : DTX_EINVAL;
    json_decref(root);
    tree_end();
    return rc;
}

static int parse_batch(json_t *root, const struct req_limits *lim, struct batch_item **out,
                       size_t *n, struct req_error *err)
{
    static const char *const batch_keys[] = {"transactions", NULL};
    int rc = DTX_EINVAL;
    json_t *list = json_object_get(root, "transactions");
    if (!json_is_object(root))
        fail(err, REQ_ERR_INVALID_JSON, "", "the body must be a JSON object");
    else if (check_keys(root, batch_keys, "", err) != 0)
        ; /* err filled */
    else if (list == NULL)
        fail(err, REQ_ERR_MISSING_FIELD, "transactions", "transactions is required");
    else if (!json_is_array(list))
        fail(err, REQ_ERR_WRONG_TYPE, "transactions", "transactions must be an array");
    else if (json_array_size(list) == 0)
        fail(err, REQ_ERR_INVALID_VALUE, "transactions", "transactions must not be empty");
    else if (json_array_size(list) > lim->max_batch)
        fail(err, REQ_ERR_TOO_MANY_ITEMS, "transactions",
             "transactions has %zu items, more than the maximum of %u", json_array_size(list),
             lim->max_batch);
    else
        rc = 0;
    if (rc != 0)
        return rc;
    size_t count = json_array_size(list);
    struct batch_item *items = xcalloc(count, sizeof *items);
    for (size_t i = 0; i < count; i++) {
        struct batch_item *it = &items[i];
        json_t *wait = json_is_object(json_array_get(list, i))
                           ? json_object_get(json_array_get(list, i), "wait")
                           : NULL;
        if (parse_create_obj(json_array_get(list, i), lim, &it->spec, &it->err) == 0 &&
            json_is_true(wait)) {
            txn_spec_free(it->spec);
            it->spec = NULL;
            fail(&it->err, REQ_ERR_INVALID_VALUE, "wait",
                 "wait must be false in a batch: a batch is answered once its transactions "
                 "are durable");
        }
        if (it->spec == NULL) {
            /* the item's path, under the batch's, in the field and at the
             * start of the message (which starts with the field's path) */
            char field[sizeof it->err.field], message[sizeof it->err.message];
            int whole = it->err.field[0] == '\0';
            snprintf(field, sizeof field, "transactions[%zu]%s%s", i, whole ? "" : ".",
                     it->err.field);
            snprintf(message, sizeof message, "transactions[%zu]%s%s", i, whole ? ": " : ".",
                     it->err.message);
            snprintf(it->err.field, sizeof it->err.field, "%s", field);
            snprintf(it->err.message, sizeof it->err.message, "%s", message);
            utf8_trim(it->err.field);
            utf8_trim(it->err.message);
        }
    }
    *out = items;
    *n = count;
    return 0;
}

int request_parse_batch(const char *body, size_t len, const struct req_limits *lim,
                        struct batch_item **out, size_t *n, struct req_error *err)
{
    *out = NULL;
    *n = 0;
    tree_begin();
    json_t *root = load_json(body, len, err);
    int rc = root != NULL ? parse_batch(root, lim, out, n, err) : DTX_EINVAL;
    json_decref(root);
    tree_end();
    return rc;
}

void request_batch_free(struct batch_item *items, size_t n)
{
    for (size_t i = 0; items != NULL && i < n; i++)
        txn_spec_free(items[i].spec);
    free(items);
}

/* Parse body as a JSON object (an empty body is {}): NULL with err filled. */
static json_t *load_object(const char *body, size_t len, struct req_error *err)
{
    json_error_t jerr;
    size_t i = 0;
    while (i < len && (body[i] == ' ' || body[i] == '\t' || body[i] == '\r' || body[i] == '\n'))
        i++;
    if (i == len)
        return json_object(); /* no body, or only whitespace */
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        char text[sizeof jerr.text];
        fail(err, REQ_ERR_INVALID_JSON, "", "the body is not valid JSON: %s (line %d, column %d)",
             ascii_text(jerr.text, text, sizeof text), jerr.line, jerr.column);
        return NULL;
    }
    if (!json_is_object(root)) {
        fail(err, REQ_ERR_INVALID_JSON, "", "the body must be a JSON object");
        json_decref(root);
        return NULL;
    }
    return root;
}

/* The field called key, inside path (NULL: at the top level), into out. */
static const char *field_of(const char *path, const char *key, char *out, size_t n)
{
    if (path != NULL)
        snprintf(out, n, "%s.%s", path, key);
    else
        snprintf(out, n, "%s", key);
    return out;
}

/* A 2pc branch on a PostgreSQL resource: obj.resource is res. */
static int parse_resource(json_t *obj, json_t *res, const char *path, const struct req_limits *lim,
                          struct step_spec *out, struct req_error *err)
{
    char f[sizeof err->field];
    if (!json_is_string(res))
        return fail(err, REQ_ERR_WRONG_TYPE, field_of(path, "resource", f, sizeof f),
                    "%s must be a string (its name)", f);
    const char *name = json_string_value(res);
    if (strlen(name) != json_string_length(res) || lim->resource_ok == NULL ||
        !lim->resource_ok(lim->resource_ok_arg, name))
        return fail(err, REQ_ERR_INVALID_VALUE, field_of(path, "resource", f, sizeof f),
                    "%s names no PostgreSQL resource dtxd is configured with", f);
    static const char *const urls[] = {"prepare", "commit", "rollback"};
    for (size_t i = 0; i < 3; i++)
        if (json_object_get(obj, urls[i]) != NULL)
            return fail(err, REQ_ERR_INVALID_VALUE, field_of(path, urls[i], f, sizeof f),
                        "%s is not allowed with resource: dtxd itself commits or rolls back", f);
    if (out->id == NULL)
        return fail(err, REQ_ERR_MISSING_FIELD, field_of(path, "branch", f, sizeof f),
                    "%s is required with resource: it is part of the prepared "
                    "transaction's name dtx:<gid>:<branch>",
                    f);
    if (strchr(out->id, ':') != NULL)
        return fail(err, REQ_ERR_INVALID_VALUE, field_of(path, "branch", f, sizeof f),
                    "%s must not contain ':' with resource (dtx:<gid>:<branch> is split at "
                    "the last ':')",
                    f);
    size_t n = strlen(RESOURCE_URL_PREFIX) + strlen(name) + 1;
    out->prepare = xmalloc(n);
    snprintf(out->prepare, n, "%s%s", RESOURCE_URL_PREFIX, name);
    out->action = xstrdup(out->prepare);
    out->compensate = xstrdup(out->prepare);
    return 0;
}

/* One tcc/2pc branch from obj (path: NULL for a registration body, else
 * "branches[i]"). On error out may be partly filled (step_spec_clear). */
static int parse_branch_obj(json_t *obj, enum txn_type type, const char *path,
                            const struct req_limits *lim, struct step_spec *out,
                            struct req_error *err)
{
    char f[sizeof err->field], prefix[48] = "";
    if (path != NULL) {
        size_t n = strlen(path); /* "branches[i]" */
        memcpy(prefix, path, n);
        memcpy(prefix + n, ".", 2);
    }
    if (!json_is_object(obj))
        return fail(err, REQ_ERR_WRONG_TYPE, path ? path : "", "%s must be an object",
                    path ? path : "the body");
    int is_xa = type == TXN_2PC;
    if (check_keys(obj, is_xa ? xa_branch_keys : tcc_branch_keys, prefix, err) != 0)
        return DTX_EINVAL;
    json_t *id = json_object_get(obj, "branch");
    if (id != NULL) {
        field_of(path, "branch", f, sizeof f);
        if (!json_is_string(id))
            return fail(err, REQ_ERR_WRONG_TYPE, f, "%s must be a string", f);
        const char *s = json_string_value(id);
        if (strlen(s) != json_string_length(id) || strlen(s) > BRANCH_ID_MAX || !request_gid_ok(s))
            return fail(err, REQ_ERR_INVALID_VALUE, f,
                        "%s must be 1 to %d characters of A-Z a-z 0-9 . _ : -", f, BRANCH_ID_MAX);
        out->id = xstrdup(s);
    }
    json_t *res = is_xa ? json_object_get(obj, "resource") : NULL;
    if (res != NULL) {
        if (parse_resource(obj, res, path, lim, out, err) != 0)
            return DTX_EINVAL;
    } else {
        if (is_xa && get_url(obj, "prepare", path, type, lim, &out->prepare, err) != 0)
            return DTX_EINVAL;
        if (get_url(obj, is_xa ? "commit" : "confirm", path, type, lim, &out->action, err) != 0)
            return DTX_EINVAL;
        if (get_url(obj, is_xa ? "rollback" : "cancel", path, type, lim, &out->compensate, err) !=
            0)
            return DTX_EINVAL;
    }
    get_payload(obj, out);
    return 0;
}

int request_parse_branch(const char *body, size_t len, enum txn_type type,
                         const struct req_limits *lim, struct step_spec *out, struct req_error *err)
{
    memset(out, 0, sizeof *out);
    tree_begin();
    json_t *root = load_object(body, len, err);
    int rc = root != NULL ? parse_branch_obj(root, type, NULL, lim, out, err) : DTX_EINVAL;
    if (rc != 0)
        step_spec_clear(out);
    json_decref(root);
    tree_end();
    return rc;
}

int request_parse_control(const char *body, size_t len, const struct req_limits *lim, int *wait,
                          uint32_t *wait_timeout_ms, struct req_error *err)
{
    *wait = 0;
    *wait_timeout_ms = lim->default_wait_timeout_ms < lim->max_wait_ms
                           ? lim->default_wait_timeout_ms
                           : lim->max_wait_ms;
    tree_begin();
    json_t *root = load_object(body, len, err);
    int rc = root != NULL ? check_keys(root, control_keys, "", err) : DTX_EINVAL;
    if (rc == 0)
        rc = parse_wait(root, lim, wait, wait_timeout_ms, err);
    json_decref(root);
    tree_end();
    return rc != 0 ? DTX_EINVAL : 0;
}

int request_gid_ok(const char *s)
{
    if (s == NULL)
        return 0;
    size_t n = 0;
    for (; s[n] != '\0'; n++) {
        unsigned char c = (unsigned char)s[n];
        int ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                 c == '.' || c == '_' || c == ':' || c == '-';
        if (!ok || n >= GID_MAX)
            return 0;
    }
    return n > 0;
}
