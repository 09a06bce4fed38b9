/*
 * fuzz_request.c - libFuzzer target: the API request decoder and validator
 * (api/request.h), the first code that every client byte reaches.
 *
 * Each input is a request body and goes through every decoder: create,
 * a batch of creates, branch registration for tcc and for 2pc, submit/abort control, and (as a
 * NUL-terminated string) request_gid_ok. Beyond "no crash, no leak, no UB"
 * the target checks the contracts that the API layer and the engine rely on:
 *
 *   - a refusal is DTX_EINVAL with no spec, a known code, a non-empty message
 *     that starts with the field's path, and a field and message that are
 *     valid UTF-8 (they are sent back as JSON strings);
 *   - an accepted spec stays within the limits (steps, wait, gid syntax,
 *     URLs refused by url_refused never get through), its payloads are JSON;
 *   - a transaction made from it matches it (txn_matches_spec: the
 *     idempotent re-create), and still does after a round trip through the
 *     log record (record_encode_txn, record_decode), as after a restart;
 *   - likewise for a registered branch (branch_matches_spec).
 */
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/request.h"
#include "common/buf.h"
#include "common/err.h"
#include "engine/record.h"
#include "engine/txn.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_STEPS 8
#define MAX_WAIT  60000
#define MAX_BATCH 4

/* Like tests/unit/test_request.c: http://, https:// and a made-up queue://
 * serve every operation, amqp:// only msg deliveries; anything else is
 * refused (resource:// is request.c's own business). */
static const char *url_refused(void *arg, const char *url, enum txn_type type, const char *op)
{
    (void)arg;
    if (strncmp(url, "amqp://", 7) == 0)
        return type == TXN_MSG && strcmp(op, "action") == 0 ? NULL : "serves msg steps only";
    if (strncmp(url, "http://", 7) == 0 || strncmp(url, "https://", 8) == 0 ||
        strncmp(url, "queue://", 8) == 0)
        return NULL;
    return "has a scheme that no transport serves";
}

static int resource_ok(void *arg, const char *name)
{
    (void)arg;
    return strcmp(name, "bank_a") == 0 || strcmp(name, "bank_b") == 0;
}

static const struct req_limits lim = {
    .max_steps = MAX_STEPS,
    .max_batch = MAX_BATCH,
    .max_wait_ms = MAX_WAIT,
    .default_retry = {.initial_ms = 100, .max_ms = 30000, .limit = 10},
    .default_request_timeout_ms = 10000,
    .default_wait_timeout_ms = 30000,
    .url_refused = url_refused,
    .resource_ok = resource_ok,
};

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);               \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static int is_utf8(const char *s)
{
    json_t *j = json_string(s);
    json_decref(j);
    return j != NULL;
}

static void check_refusal(int rc, const struct req_error *err)
{
    static const char *const codes[] = {REQ_ERR_INVALID_JSON,     REQ_ERR_MISSING_FIELD,
                                        REQ_ERR_WRONG_TYPE,       REQ_ERR_INVALID_VALUE,
                                        REQ_ERR_INVALID_TYPE,     REQ_ERR_INVALID_URL,
                                        REQ_ERR_UNKNOWN_FIELD,    REQ_ERR_TOO_MANY_STEPS,
                                        REQ_ERR_DEPENDENCY_CYCLE, REQ_ERR_TOO_MANY_ITEMS};
    CHECK(rc == DTX_EINVAL);
    CHECK(err->code != NULL);
    int known = 0;
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++)
        known |= strcmp(err->code, codes[i]) == 0;
    CHECK(known);
    CHECK(memchr(err->field, '\0', sizeof err->field) != NULL);
    CHECK(memchr(err->message, '\0', sizeof err->message) != NULL);
    CHECK(err->message[0] != '\0');
    CHECK(strncmp(err->message, err->field, strlen(err->field)) == 0);
    CHECK(is_utf8(err->field));
    CHECK(is_utf8(err->message));
}

static int url_ok(const char *url, enum txn_type type, const char *op)
{
    return strncmp(url, RESOURCE_URL_PREFIX, strlen(RESOURCE_URL_PREFIX)) == 0 ||
           url_refused(NULL, url, type, op) == NULL;
}

static void check_step(const struct step_spec *s, enum txn_type type)
{
    CHECK(s->action != NULL);
    CHECK(s->payload != NULL);
    CHECK(s->id == NULL || s->id[0] != '\0');
    json_t *p = json_loadb(s->payload, s->payload_len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    CHECK(p != NULL);
    json_decref(p);
    CHECK(url_ok(s->action, type, "action") || url_ok(s->action, type, "confirm") ||
          url_ok(s->action, type, "commit"));
    if (type == TXN_2PC)
        CHECK(s->prepare != NULL && url_ok(s->prepare, type, "prepare"));
    else
        CHECK(s->prepare == NULL);
    if (type == TXN_MSG)
        CHECK(s->compensate == NULL);
    else if (type == TXN_SAGA)
        CHECK(s->compensate != NULL);
    for (uint32_t k = 0; k < s->nafter; k++)
        CHECK(s->after != NULL);
}

/* t, written to the log and read back: a new txn the caller frees. */
static struct txn *log_round_trip(const struct txn *t)
{
    struct buf b;
    struct record r;
    buf_init(&b, SIZE_MAX / 2);
    record_encode_txn(&b, t);
    CHECK(record_decode(b.data, b.len, &r) == 0);
    CHECK(r.kind == REC_TXN2 && r.txn != NULL);
    struct txn *back = r.txn;
    r.txn = NULL;
    record_clear(&r);
    buf_free(&b);
    return back;
}

static void fuzz_create(const uint8_t *data, size_t size)
{
    struct txn_spec *spec = (struct txn_spec *)1;
    struct req_error err = {0};
    int rc = request_parse_create((const char *)data, size, &lim, &spec, &err);
    if (rc != 0) {
        CHECK(spec == NULL);
        check_refusal(rc, &err);
        return;
    }
    CHECK(spec != NULL);
    CHECK(spec->gid == NULL || request_gid_ok(spec->gid));
    CHECK(spec->nsteps <= MAX_STEPS);
    CHECK(spec->nsteps == 0 || spec->steps != NULL);
    CHECK(!spec->wait || (spec->wait_timeout_ms >= 1 && spec->wait_timeout_ms <= MAX_WAIT));
    CHECK(spec->retry.initial_ms >= 1 && spec->retry.initial_ms <= spec->retry.max_ms);
    if (spec->type == TXN_SAGA || spec->type == TXN_MSG)
        CHECK(spec->nsteps >= 1);
    if (spec->type == TXN_MSG)
        CHECK(spec->check != NULL);
    for (uint32_t i = 0; i < spec->nsteps; i++) {
        check_step(&spec->steps[i], spec->type);
        for (uint32_t k = 0; k < spec->steps[i].nafter; k++)
            CHECK(spec->steps[i].after[k] < spec->nsteps && spec->steps[i].after[k] != i);
    }

    struct txn *t = txn_new_from_spec(spec, spec->gid ? spec->gid : "fuzz", 1, 1000);
    CHECK(txn_matches_spec(t, spec));
    struct txn *back = log_round_trip(t);
    CHECK(txn_matches_spec(back, spec));
    txn_free(back);
    txn_free(t);
    txn_spec_free(spec);
}

/* A batch: refused as a whole, or each item a spec (checked as a create) or
 * a refusal of its own whose field is under "transactions[i]". */
static void fuzz_batch(const uint8_t *data, size_t size)
{
    struct batch_item *items = (struct batch_item *)1;
    size_t n = 99;
    struct req_error err = {0};
    int rc = request_parse_batch((const char *)data, size, &lim, &items, &n, &err);
    if (rc != 0) {
        CHECK(items == NULL && n == 0);
        check_refusal(rc, &err);
        return;
    }
    CHECK(n >= 1 && n <= MAX_BATCH && items != NULL);
    for (size_t i = 0; i < n; i++) {
        if (items[i].spec != NULL) {
            CHECK(!items[i].spec->wait);
            CHECK(items[i].spec->nsteps <= MAX_STEPS);
            continue;
        }
        char prefix[40];
        snprintf(prefix, sizeof prefix, "transactions[%zu]", i);
        CHECK(strncmp(items[i].err.field, prefix, strlen(prefix)) == 0);
        check_refusal(DTX_EINVAL, &items[i].err);
    }
    request_batch_free(items, n);
}

static void fuzz_branch(const uint8_t *data, size_t size, enum txn_type type)
{
    struct step_spec s;
    struct req_error err = {0};
    memset(&s, 0xA5, sizeof s); /* an OUT parameter: must not be read */
    int rc = request_parse_branch((const char *)data, size, type, &lim, &s, &err);
    if (rc != 0) {
        check_refusal(rc, &err);
        return;
    }
    check_step(&s, type);
    CHECK(s.nafter == 0);

    struct txn_spec empty = {.type = type, .retry = lim.default_retry};
    struct txn *t = txn_new_from_spec(&empty, "fuzz", 1, 1000);
    struct step_spec named = s;
    if (named.id == NULL)
        named.id = "1";
    struct branch *b = txn_add_branch(t, &named, 1000);
    CHECK(branch_matches_spec(b, &s));

    struct buf enc;
    struct record r;
    buf_init(&enc, SIZE_MAX / 2);
    record_encode_branch(&enc, t, b);
    CHECK(record_decode(enc.data, enc.len, &r) == 0);
    CHECK(r.kind == REC_BRANCH && r.txn->nbranches == 1);
    CHECK(strcmp(r.txn->branches[0].id, named.id) == 0);
    CHECK(branch_matches_spec(&r.txn->branches[0], &s));
    record_clear(&r);
    buf_free(&enc);
    txn_free(t);
    step_spec_clear(&s);
}

static void fuzz_control(const uint8_t *data, size_t size)
{
    int wait = -1;
    uint32_t timeout = 0;
    struct req_error err = {0};
    int rc = request_parse_control((const char *)data, size, &lim, &wait, &timeout, &err);
    if (rc != 0) {
        check_refusal(rc, &err);
        return;
    }
    CHECK(wait == 0 || wait == 1);
    CHECK(!wait || (timeout >= 1 && timeout <= MAX_WAIT));
}

static void fuzz_gid(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    memcpy(s, data, size);
    s[size] = '\0';
    int ok = request_gid_ok(s);
    size_t n = strlen(s);
    int want = n >= 1 && n <= 128 &&
               strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                         "0123456789._:-") == n;
    CHECK(!ok == !want);
    free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_create(data, size);
    fuzz_batch(data, size);
    fuzz_branch(data, size, TXN_TCC);
    fuzz_branch(data, size, TXN_2PC);
    fuzz_control(data, size);
    fuzz_gid(data, size);
    return 0;
}
