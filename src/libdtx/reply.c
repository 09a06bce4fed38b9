/*
 * reply.c - the coordinator's answers as C structs (struct dtx_txn,
 * struct dtx_txn_list). Parsing only: bytes in, structs out, no I/O.
 *
 * A parsed answer keeps its jansson tree alive and points into it, so its
 * strings cost no copies: the public struct is the first member of a private
 * box that also holds the tree, the raw text and the arrays made for the
 * branches, and dtx_txn_free() releases the box. Fields the API guarantees
 * (gid, type, status, created_at, updated_at) must be strings, or the answer
 * is DTX_EPROTO; everything else is read when present and of the right type,
 * so that a newer coordinator adding fields does not break an older client.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client_int.h"

/* The ops of a branch, in the order a mode calls them; a branch has those of
 * its mode (saga: action, compensate; tcc: confirm, cancel; 2pc: prepare,
 * commit, rollback; msg: action). */
static const char *const branch_ops[] = {"prepare",    "action", "confirm", "commit",
                                         "compensate", "cancel", "rollback"};

struct txn_box {
    struct dtx_txn pub; /* first: a struct dtx_txn * is a struct txn_box * */
    json_t *root;       /* the tree the strings point into (one reference) */
    char *text;         /* the raw answer, NUL-terminated */
    char **payloads;    /* n_branches compact payload texts */
    int **afters;       /* n_branches "after" arrays (NULL when absent) */
};

struct list_box {
    struct dtx_txn_list pub;
    json_t *root;
    char *text;
};

struct batch_box {
    struct dtx_batch pub;
    json_t *root;
    char *text;
    struct dtx_txn *txns; /* n summaries, for the items created or found */
};

static const char *str_field(json_t *obj, const char *key)
{
    return json_string_value(json_object_get(obj, key));
}

static int64_t int_field(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return json_is_integer(v) ? (int64_t)json_integer_value(v) : -1;
}

static char *copy_text(const char *text, size_t len)
{
    char *p = malloc(len + 1);
    if (p == NULL)
        return NULL;
    memcpy(p, text, len);
    p[len] = '\0';
    return p;
}

/* Fill the top-level fields of t from obj (a transaction or a summary). */
static int parse_head(json_t *obj, struct dtx_txn *t, char *why, size_t whylen)
{
    static const char *const required[] = {"gid", "type", "status", "created_at", "updated_at"};
    json_t *retry;

    for (size_t i = 0; i < sizeof required / sizeof required[0]; i++) {
        if (!json_is_string(json_object_get(obj, required[i]))) {
            snprintf(why, whylen, "the answer has no string \"%s\"", required[i]);
            return DTX_EPROTO;
        }
    }
    t->gid = str_field(obj, "gid");
    t->type = str_field(obj, "type");
    t->status = str_field(obj, "status");
    t->needs_attention = json_is_true(json_object_get(obj, "needs_attention"));
    t->created_at = str_field(obj, "created_at");
    t->updated_at = str_field(obj, "updated_at");
    t->finished_at = str_field(obj, "finished_at");
    t->check = str_field(obj, "check");
    retry = json_object_get(obj, "retry");
    t->retry_initial_interval_ms = int_field(retry, "initial_interval_ms");
    t->retry_max_interval_ms = int_field(retry, "max_interval_ms");
    t->retry_limit = int_field(retry, "limit");
    t->request_timeout_ms = int_field(obj, "request_timeout_ms");
    t->timeout_ms = int_field(obj, "timeout_ms");
    t->branch_count = int_field(obj, "branch_count");
    return DTX_OK;
}

/* Fill branch i of box from obj. */
static int parse_branch(struct txn_box *box, size_t i, json_t *obj, char *why, size_t whylen)
{
    struct dtx_branch *b = &box->pub.branches[i];
    json_t *payload, *after;

    if (!json_is_object(obj) || !json_is_string(json_object_get(obj, "branch")) ||
        !json_is_string(json_object_get(obj, "status"))) {
        snprintf(why, whylen, "branches[%zu] has no string \"branch\" and \"status\"", i);
        return DTX_EPROTO;
    }
    b->id = str_field(obj, "branch");
    b->status = str_field(obj, "status");
    b->last_error = str_field(obj, "last_error");
    b->updated_at = str_field(obj, "updated_at");
    b->resource = str_field(obj, "resource");
    for (size_t k = 0; k < sizeof branch_ops / sizeof branch_ops[0]; k++) {
        const char *url = str_field(obj, branch_ops[k]);
        char key[32];

        snprintf(key, sizeof key, "%s_attempts", branch_ops[k]);
        if (url == NULL && b->resource != NULL && json_object_get(obj, key) != NULL)
            url = b->resource; /* dtxd itself runs the op on the resource */
        if (url == NULL || b->n_ops == DTX_BRANCH_OPS_MAX)
            continue;
        b->ops[b->n_ops].op = branch_ops[k];
        b->ops[b->n_ops].url = url;
        b->ops[b->n_ops].attempts = int_field(obj, key);
        b->n_ops++;
    }
    payload = json_object_get(obj, "payload");
    box->payloads[i] =
        payload != NULL ? json_dumps(payload, JSON_COMPACT | JSON_ENCODE_ANY) : strdup("{}");
    if (box->payloads[i] == NULL)
        return DTX_ENOMEM;
    b->payload = box->payloads[i];
    after = json_object_get(obj, "after");
    if (json_is_array(after)) {
        size_t n = json_array_size(after);
        box->afters[i] = calloc(n + 1, sizeof(int));
        if (box->afters[i] == NULL)
            return DTX_ENOMEM;
        for (size_t k = 0; k < n; k++)
            box->afters[i][k] = (int)json_integer_value(json_array_get(after, k));
        b->after = box->afters[i];
        b->n_after = n;
        b->has_after = 1;
    }
    return DTX_OK;
}

void dtx_txn_free(struct dtx_txn *t)
{
    struct txn_box *box = (struct txn_box *)t;

    if (t == NULL)
        return;
    for (size_t i = 0; i < t->n_branches; i++) {
        if (box->payloads != NULL)
            free(box->payloads[i]);
        if (box->afters != NULL)
            free(box->afters[i]);
    }
    free(box->payloads);
    free(box->afters);
    free(t->branches);
    free(box->text);
    json_decref(box->root);
    free(box);
}

int dtx_txn_is_final(const struct dtx_txn *t)
{
    return t != NULL && t->status != NULL &&
           (strcmp(t->status, "succeeded") == 0 || strcmp(t->status, "failed") == 0);
}

/* Parse text into a tree whose top is an object. */
static int load_object(const char *text, size_t len, json_t **out, char *why, size_t whylen)
{
    json_error_t jerr;
    json_t *root = json_loadb(text, len, 0, &jerr);

    if (root == NULL) {
        if (json_error_code(&jerr) == json_error_out_of_memory)
            return DTX_ENOMEM;
        snprintf(why, whylen, "the answer is not JSON: %s", jerr.text);
        return DTX_EPROTO;
    }
    if (!json_is_object(root)) {
        json_decref(root);
        snprintf(why, whylen, "the answer is not a JSON object");
        return DTX_EPROTO;
    }
    *out = root;
    return DTX_OK;
}

/* An answer's tree (load_object) and a NUL-terminated copy of its text:
 * what every parsed answer keeps, for the strings it hands out. */
static int load_answer(const char *text, size_t len, json_t **root, char **copy, char *why,
                       size_t whylen)
{
    int rc = load_object(text, len, root, why, whylen);
    if (rc != DTX_OK)
        return rc;
    *copy = copy_text(text, len);
    return *copy != NULL ? DTX_OK : DTX_ENOMEM;
}

int libdtx_reply_txn(const char *text, size_t len, struct dtx_txn **out, char *why, size_t whylen)
{
    struct txn_box *box;
    json_t *branches;
    size_t n;
    int rc;

    box = calloc(1, sizeof *box);
    if (box == NULL)
        return DTX_ENOMEM;
    rc = load_answer(text, len, &box->root, &box->text, why, whylen);
    if (rc != DTX_OK)
        goto fail;
    box->pub.json = box->text;
    rc = parse_head(box->root, &box->pub, why, whylen);
    if (rc != DTX_OK)
        goto fail;
    branches = json_object_get(box->root, "branches");
    if (branches != NULL && !json_is_array(branches)) {
        snprintf(why, whylen, "\"branches\" is not an array");
        rc = DTX_EPROTO;
        goto fail;
    }
    n = json_array_size(branches);
    if (n > 0) {
        rc = DTX_ENOMEM;
        box->pub.branches = calloc(n, sizeof *box->pub.branches);
        box->payloads = calloc(n, sizeof *box->payloads);
        box->afters = calloc(n, sizeof *box->afters);
        if (box->pub.branches == NULL || box->payloads == NULL || box->afters == NULL)
            goto fail;
        box->pub.n_branches = n;
        for (size_t i = 0; i < n; i++) {
            rc = parse_branch(box, i, json_array_get(branches, i), why, whylen);
            if (rc != DTX_OK)
                goto fail;
        }
    }
    if (box->pub.branch_count < 0)
        box->pub.branch_count = (int64_t)n;
    *out = &box->pub;
    return DTX_OK;
fail:
    dtx_txn_free(&box->pub);
    return rc;
}

void dtx_txn_list_free(struct dtx_txn_list *l)
{
    struct list_box *box = (struct list_box *)l;

    if (l == NULL)
        return;
    free(l->items);
    free(box->text);
    json_decref(box->root);
    free(box);
}

int libdtx_reply_list(const char *text, size_t len, struct dtx_txn_list **out, char *why,
                      size_t whylen)
{
    struct list_box *box;
    json_t *items, *cursor;
    int rc;

    box = calloc(1, sizeof *box);
    if (box == NULL)
        return DTX_ENOMEM;
    rc = load_answer(text, len, &box->root, &box->text, why, whylen);
    if (rc != DTX_OK)
        goto fail;
    box->pub.json = box->text;
    items = json_object_get(box->root, "transactions");
    cursor = json_object_get(box->root, "next_cursor");
    rc = DTX_EPROTO;
    if (!json_is_array(items)) {
        snprintf(why, whylen, "the answer has no array \"transactions\"");
        goto fail;
    }
    if (cursor != NULL && !json_is_null(cursor) && !json_is_string(cursor)) {
        snprintf(why, whylen, "\"next_cursor\" is neither a string nor null");
        goto fail;
    }
    box->pub.next_cursor = json_string_value(cursor);
    box->pub.n = json_array_size(items);
    if (box->pub.n > 0) {
        box->pub.items = calloc(box->pub.n, sizeof *box->pub.items);
        if (box->pub.items == NULL) {
            box->pub.n = 0;
            rc = DTX_ENOMEM;
            goto fail;
        }
    }
    for (size_t i = 0; i < box->pub.n; i++) {
        json_t *it = json_array_get(items, i);
        struct dtx_txn *t = &box->pub.items[i];

        if (!json_is_object(it)) {
            snprintf(why, whylen, "transactions[%zu] is not an object", i);
            goto fail;
        }
        rc = parse_head(it, t, why, whylen);
        if (rc != DTX_OK)
            goto fail;
        t->http_status = 200;
        t->json = NULL;
    }
    *out = &box->pub;
    return DTX_OK;
fail:
    dtx_txn_list_free(&box->pub);
    return rc;
}

void dtx_batch_free(struct dtx_batch *b)
{
    struct batch_box *box = (struct batch_box *)b;

    if (b == NULL)
        return;
    free(b->items);
    free(box->txns);
    free(box->text);
    json_decref(box->root);
    free(box);
}

int libdtx_reply_batch(const char *text, size_t len, size_t want, struct dtx_batch **out, char *why,
                       size_t whylen)
{
    struct batch_box *box;
    json_t *results;
    int rc;

    box = calloc(1, sizeof *box);
    if (box == NULL)
        return DTX_ENOMEM;
    rc = load_answer(text, len, &box->root, &box->text, why, whylen);
    if (rc != DTX_OK)
        goto fail;
    box->pub.json = box->text;
    results = json_object_get(box->root, "results");
    rc = DTX_EPROTO;
    if (!json_is_array(results) || json_array_size(results) != want) {
        snprintf(why, whylen, "the answer has no array \"results\" of %zu items", want);
        goto fail;
    }
    rc = DTX_ENOMEM;
    box->pub.items = calloc(want, sizeof *box->pub.items);
    box->txns = calloc(want, sizeof *box->txns);
    if (box->pub.items == NULL || box->txns == NULL)
        goto fail;
    box->pub.n = want;
    for (size_t i = 0; i < want; i++) {
        json_t *it = json_array_get(results, i);
        struct dtx_batch_item *item = &box->pub.items[i];
        json_t *txn = json_object_get(it, "transaction");
        json_t *err = json_object_get(it, "error");

        rc = DTX_EPROTO;
        item->status = (int)int_field(it, "status");
        if (json_is_object(txn)) {
            rc = parse_head(txn, &box->txns[i], why, whylen);
            if (rc != DTX_OK)
                goto fail;
            box->txns[i].http_status = item->status;
            box->txns[i].json = NULL;
            item->txn = &box->txns[i];
        } else if (json_is_object(err)) {
            item->error_code = str_field(err, "code");
            item->error_field = str_field(err, "field");
            item->error_message = str_field(err, "message");
        }
        if (item->status < 200 || item->status > 599 ||
            (item->txn == NULL && (item->error_code == NULL || item->error_message == NULL))) {
            snprintf(why, whylen, "results[%zu] is neither a transaction nor an error", i);
            rc = DTX_EPROTO;
            goto fail;
        }
    }
    *out = &box->pub;
    return DTX_OK;
fail:
    dtx_batch_free(&box->pub);
    return rc;
}
