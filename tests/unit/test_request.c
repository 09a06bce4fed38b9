/*
 * test_request.c - POST /v1/transactions bodies against docs/API.md: every
 * parsed value and default of a valid body, and for every kind of bad body
 * the error code and the JSON path of the field at fault.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "api/request.h"
#include "common/err.h"

static const struct req_limits lim = {
    .max_steps = 5,
    .max_wait_ms = 60000,
    .default_retry = {.initial_ms = 100, .max_ms = 30000, .limit = 10},
    .default_request_timeout_ms = 10000,
    .default_wait_timeout_ms = 30000,
    .url_refused = NULL,
    .url_refused_arg = NULL,
};

#define STEP "{\"action\":\"http://a/x\",\"compensate\":\"http://a/y\"}"

static struct txn_spec *parse_ok(const char *body, const struct req_limits *l)
{
    struct txn_spec *spec = (struct txn_spec *)1;
    struct req_error err = {0};
    int rc = request_parse_create(body, strlen(body), l, &spec, &err);
    if (rc != 0)
        fail_msg("unexpected error %s at '%s': %s\nbody: %s", err.code, err.field, err.message,
                 body);
    assert_non_null(spec);
    return spec;
}

/* The body must be refused with code at field; the message names the field
 * and, like the field, is valid UTF-8 (it goes back as a JSON string). */
static void check_err(const char *body, size_t len, const char *code, const char *field,
                      const struct req_limits *l, int line)
{
    struct txn_spec *spec = (struct txn_spec *)1;
    struct req_error err = {0};
    int rc = request_parse_create(body, len, l, &spec, &err);
    if (rc != DTX_EINVAL || spec != NULL || err.code == NULL || strcmp(err.code, code) != 0 ||
        strcmp(err.field, field) != 0)
        fail_msg("line %d: want %s at '%s', got rc %d %s at '%s' (%s)\nbody: %.300s", line, code,
                 field, rc, err.code ? err.code : "(none)", err.field, err.message,
                 body ? body : "(null)");
    if (field[0] != '\0' && strncmp(err.message, field, strlen(field)) != 0)
        fail_msg("line %d: message does not name %s: %s", line, field, err.message);
    assert_true(strlen(err.message) > 0);
    json_t *m = json_string(err.message);
    json_t *f = json_string(err.field);
    assert_non_null(m);
    assert_non_null(f);
    json_decref(m);
    json_decref(f);
}

#define ERR(body, code, field)        check_err(body, strlen(body), code, field, &lim, __LINE__)
#define ERR_LIM(body, code, field, l) check_err(body, strlen(body), code, field, l, __LINE__)

static void test_minimal(void **state)
{
    (void)state;
    struct txn_spec *s = parse_ok("{\"type\":\"saga\",\"steps\":[" STEP "]}", &lim);
    assert_null(s->gid);
    assert_int_equal(s->type, TXN_SAGA);
    assert_int_equal(s->nsteps, 1);
    assert_string_equal(s->steps[0].action, "http://a/x");
    assert_string_equal(s->steps[0].compensate, "http://a/y");
    assert_string_equal(s->steps[0].payload, "{}");
    assert_int_equal(s->steps[0].payload_len, 2);
    assert_int_equal(s->retry.initial_ms, 100);
    assert_int_equal(s->retry.max_ms, 30000);
    assert_int_equal(s->retry.limit, 10);
    assert_int_equal(s->request_timeout_ms, 10000);
    assert_int_equal(s->timeout_ms, 0);
    assert_int_equal(s->wait, 0);
    assert_int_equal(s->wait_timeout_ms, 30000);
    txn_spec_free(s);
}

static void test_full(void **state)
{
    (void)state;
    const char *body =
        "{\n"
        "  \"gid\": \"order-1042:a_b.C\",\n"
        "  \"type\": \"saga\",\n"
        "  \"steps\": [\n"
        "    {\"action\": \"http://127.0.0.1:9001/debit\", \"compensate\": "
        "\"http://127.0.0.1:9001/debit-undo\", \"payload\": {\"account\": \"A\", \"amount\": "
        "30}},\n"
        "    {\"payload\": [1, 2], \"compensate\": \"https://user@svc.example:8443/c?q=1#f\", "
        "\"action\": \"https://[::1]:9002/credit\"}\n"
        "  ],\n"
        "  \"retry\": {\"initial_interval_ms\": 250, \"max_interval_ms\": 86400000, \"limit\": "
        "0},\n"
        "  \"request_timeout_ms\": 600000,\n"
        "  \"timeout_ms\": 31536000000,\n"
        "  \"wait\": true,\n"
        "  \"wait_timeout_ms\": 60000\n"
        "}";
    struct txn_spec *s = parse_ok(body, &lim);
    assert_string_equal(s->gid, "order-1042:a_b.C");
    assert_int_equal(s->type, TXN_SAGA);
    assert_int_equal(s->nsteps, 2);
    assert_string_equal(s->steps[0].action, "http://127.0.0.1:9001/debit");
    assert_string_equal(s->steps[0].compensate, "http://127.0.0.1:9001/debit-undo");
    assert_string_equal(s->steps[0].payload, "{\"account\":\"A\",\"amount\":30}");
    assert_int_equal(s->steps[0].payload_len, strlen("{\"account\":\"A\",\"amount\":30}"));
    assert_string_equal(s->steps[1].action, "https://[::1]:9002/credit");
    assert_string_equal(s->steps[1].compensate, "https://user@svc.example:8443/c?q=1#f");
    assert_string_equal(s->steps[1].payload, "[1,2]");
    assert_int_equal(s->steps[1].payload_len, 5);
    assert_int_equal(s->retry.initial_ms, 250);
    assert_int_equal(s->retry.max_ms, 86400000);
    assert_int_equal(s->retry.limit, 0);
    assert_int_equal(s->request_timeout_ms, 600000);
    assert_true(s->timeout_ms == 31536000000ULL);
    assert_int_equal(s->wait, 1);
    assert_int_equal(s->wait_timeout_ms, 60000);
    txn_spec_free(s);

    /* the lower ends of the ranges, wait false, partial retry */
    s = parse_ok("{\"type\":\"saga\",\"steps\":[" STEP "],\"retry\":{\"initial_interval_ms\":1,"
                 "\"max_interval_ms\":1},\"request_timeout_ms\":1,\"timeout_ms\":0,"
                 "\"wait\":false,\"wait_timeout_ms\":1}",
                 &lim);
    assert_int_equal(s->retry.initial_ms, 1);
    assert_int_equal(s->retry.max_ms, 1);
    assert_int_equal(s->retry.limit, 10);
    assert_int_equal(s->request_timeout_ms, 1);
    assert_int_equal(s->wait, 0);
    assert_int_equal(s->wait_timeout_ms, 1);
    txn_spec_free(s);

    /* exactly max_steps steps; retry with only a limit keeps the defaults */
    s = parse_ok("{\"type\":\"saga\",\"steps\":[" STEP "," STEP "," STEP "," STEP "," STEP "],"
                 "\"retry\":{\"limit\":1000000}}",
                 &lim);
    assert_int_equal(s->nsteps, 5);
    assert_int_equal(s->retry.initial_ms, 100);
    assert_int_equal(s->retry.max_ms, 30000);
    assert_int_equal(s->retry.limit, 1000000);
    txn_spec_free(s);
}

static void test_payload_reserialized_compactly(void **state)
{
    (void)state;
    struct {
        const char *in, *out;
    } cases[] = {
        {"{ \"b\" : [ 1 , 2 ] , \"a\" : { } }", "{\"b\":[1,2],\"a\":{}}"},
        {"[ ]", "[]"},
        {"\"text with \\\"quotes\\\" and \\u00e9\"", "\"text with \\\"quotes\\\" and \xc3\xa9\""},
        {"42", "42"},
        {"-7", "-7"},
        {"1.5", "1.5"},
        {"true", "true"},
        {"false", "false"},
        {"null", "null"},
        {"{}", "{}"},
        {"{\"n\" :\n\t{\"deep\": [ {\"x\": null} ] } }", "{\"n\":{\"deep\":[{\"x\":null}]}}"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char body[512];
        snprintf(body, sizeof body,
                 "{\"type\":\"saga\",\"steps\":[{\"action\":\"http://a/\",\"compensate\":"
                 "\"http://a/\",\"payload\": %s }]}",
                 cases[i].in);
        struct txn_spec *s = parse_ok(body, &lim);
        assert_string_equal(s->steps[0].payload, cases[i].out);
        assert_int_equal(s->steps[0].payload_len, strlen(cases[i].out));
        txn_spec_free(s);
    }
}

/* jansson's memory during a parse comes from a 64 KiB block; a tree larger
 * than that spills to malloc, and the next parse starts from an empty block. */
static void test_payload_larger_than_the_parse_block(void **state)
{
    (void)state;
    enum { ITEMS = 6000 };
    char *payload = malloc(ITEMS * 32 + 16);
    size_t n = 0;
    n += (size_t)sprintf(payload + n, "[");
    for (int i = 0; i < ITEMS; i++)
        n += (size_t)sprintf(payload + n, "%s{\"item\":%d,\"t\":\"x%d\"}", i ? "," : "", i, i);
    n += (size_t)sprintf(payload + n, "]");
    size_t cap = n + 256;
    char *body = malloc(cap);
    snprintf(body, cap,
             "{\"type\":\"saga\",\"steps\":[{\"action\":\"http://a/\",\"compensate\":"
             "\"http://a/\",\"payload\": %s }]}",
             payload);
    for (int round = 0; round < 3; round++) {
        struct txn_spec *s = parse_ok(body, &lim);
        assert_int_equal(s->steps[0].payload_len, n);
        assert_memory_equal(s->steps[0].payload, payload, n);
        txn_spec_free(s);
        s = parse_ok("{\"type\":\"saga\",\"steps\":[{\"action\":\"http://a/\",\"compensate\":"
                     "\"http://a/\",\"payload\":{\"small\":[1]}}]}",
                     &lim);
        assert_string_equal(s->steps[0].payload, "{\"small\":[1]}");
        txn_spec_free(s);
    }
    free(body);
    free(payload);
}

static void test_invalid_json(void **state)
{
    (void)state;
    ERR("", REQ_ERR_INVALID_JSON, "");
    ERR("{", REQ_ERR_INVALID_JSON, "");
    ERR("{\"type\":\"saga\",}", REQ_ERR_INVALID_JSON, "");
    ERR("{\"type\":\"saga\"} trailing", REQ_ERR_INVALID_JSON, "");
    ERR("{'type':'saga'}", REQ_ERR_INVALID_JSON, "");
    /* invalid UTF-8: jansson quotes the raw byte, the message must not */
    ERR("{\"type\":\"sa\xffga\"}", REQ_ERR_INVALID_JSON, "");
    /* NUL inside the body */
    check_err("{\"type\":\"saga\"}\0", 16, REQ_ERR_INVALID_JSON, "", &lim, __LINE__);
    check_err(NULL, 0, REQ_ERR_INVALID_JSON, "", &lim, __LINE__);
}

static void test_body_not_object(void **state)
{
    (void)state;
    ERR("[]", REQ_ERR_INVALID_JSON, "");
    ERR("[{\"type\":\"saga\"}]", REQ_ERR_INVALID_JSON, "");
    ERR("\"saga\"", REQ_ERR_INVALID_JSON, "");
    ERR("42", REQ_ERR_INVALID_JSON, "");
    ERR("null", REQ_ERR_INVALID_JSON, "");
}

static void test_duplicate_keys(void **state)
{
    (void)state;
    ERR("{\"type\":\"saga\",\"type\":\"saga\",\"steps\":[" STEP "]}", REQ_ERR_INVALID_JSON, "");
    ERR("{\"type\":\"saga\",\"steps\":[{\"action\":\"http://a/\",\"action\":\"http://a/\","
        "\"compensate\":\"http://a/\"}]}",
        REQ_ERR_INVALID_JSON, "");
    ERR("{\"type\":\"saga\",\"steps\":[" STEP "],\"retry\":{\"limit\":1,\"limit\":2}}",
        REQ_ERR_INVALID_JSON, "");
}

static void test_type(void **state)
{
    (void)state;
    ERR("{\"steps\":[" STEP "]}", REQ_ERR_MISSING_FIELD, "type");
    ERR("{}", REQ_ERR_MISSING_FIELD, "type");
    ERR("{\"type\":1,\"steps\":[" STEP "]}", REQ_ERR_WRONG_TYPE, "type");
    ERR("{\"type\":null,\"steps\":[" STEP "]}", REQ_ERR_WRONG_TYPE, "type");
    ERR("{\"type\":[\"saga\"],\"steps\":[" STEP "]}", REQ_ERR_WRONG_TYPE, "type");
    ERR("{\"type\":\"xa\",\"steps\":[" STEP "]}", REQ_ERR_INVALID_TYPE, "type");
    ERR("{\"type\":\"TCC\"}", REQ_ERR_INVALID_TYPE, "type");
    ERR("{\"type\":\"2PC\"}", REQ_ERR_INVALID_TYPE, "type");
    ERR("{\"type\":\"tcc \"}", REQ_ERR_INVALID_TYPE, "type");
    ERR("{\"type\":\"msg\\u0000\"}", REQ_ERR_INVALID_JSON, "");
    ERR("{\"type\":\"SAGA\",\"steps\":[" STEP "]}", REQ_ERR_INVALID_TYPE, "type");
    ERR("{\"type\":\"\",\"steps\":[" STEP "]}", REQ_ERR_INVALID_TYPE, "type");
}

static void test_steps_missing_empty_not_array(void **state)
{
    (void)state;
    ERR("{\"type\":\"saga\"}", REQ_ERR_MISSING_FIELD, "steps");
    ERR("{\"type\":\"saga\",\"steps\":[]}", REQ_ERR_INVALID_VALUE, "steps");
    ERR("{\"type\":\"saga\",\"steps\":" STEP "}", REQ_ERR_WRONG_TYPE, "steps");
    ERR("{\"type\":\"saga\",\"steps\":\"x\"}", REQ_ERR_WRONG_TYPE, "steps");
    ERR("{\"type\":\"saga\",\"steps\":null}", REQ_ERR_WRONG_TYPE, "steps");
}

static void test_step_not_object(void **state)
{
    (void)state;
    ERR("{\"type\":\"saga\",\"steps\":[\"http://a/\"]}", REQ_ERR_WRONG_TYPE, "steps[0]");
    ERR("{\"type\":\"saga\",\"steps\":[" STEP ",[]]}", REQ_ERR_WRONG_TYPE, "steps[1]");
    ERR("{\"type\":\"saga\",\"steps\":[" STEP "," STEP ",null]}", REQ_ERR_WRONG_TYPE, "steps[2]");
}

static void test_missing_action_compensate(void **state)
{
    (void)state;
    ERR("{\"type\":\"saga\",\"steps\":[{\"compensate\":\"http://a/\"}]}", REQ_ERR_MISSING_FIELD,
        "steps[0].action");
    ERR("{\"type\":\"saga\",\"steps\":[" STEP ",{\"action\":\"http://a/\"}]}",
        REQ_ERR_MISSING_FIELD, "steps[1].compensate");
    ERR("{\"type\":\"saga\",\"steps\":[{}]}", REQ_ERR_MISSING_FIELD, "steps[0].action");
    ERR("{\"type\":\"saga\",\"steps\":[{\"action\":1,\"compensate\":\"http://a/\"}]}",
        REQ_ERR_WRONG_TYPE, "steps[0].action");
    ERR("{\"type\":\"saga\",\"steps\":[{\"action\":\"http://a/\",\"compensate\":null}]}",
        REQ_ERR_WRONG_TYPE, "steps[0].compensate");
}

static void check_url(const char *url, int ok, int line)
{
    char body[4096 + 256];
    snprintf(body, sizeof body,
             "{\"type\":\"saga\",\"steps\":[" STEP
             ",{\"action\":\"http://a/\",\"compensate\":\"%s\"}]}",
             url);
    if (ok) {
        txn_spec_free(parse_ok(body, &lim));
        return;
    }
    check_err(body, strlen(body), REQ_ERR_INVALID_URL, "steps[1].compensate", &lim, line);
}

static void test_invalid_url(void **state)
{
    (void)state;
    const char *bad[] = {
        "ftp://a/x",
        "http://",
        "https://",
        "not a url",
        "http://a/with space",
        "http://a/tab\\t",
        "http://a/nl\\n",
        "http://a/del\x7f",
        "",
        "http:/a/x",
        "HTTP://a/x",
        "amqp://ex/rk",
        "http:///path",
        "http://user@/x",
        "http://:80/x",
        "http://a:/x",
        "http://a:port/x",
        "http://a:0/x",
        "http://a:65536/x",
        "http://a:123456/x",
        "http://[]/x",
        "http://[::1/x",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        check_url(bad[i], 0, __LINE__);
    const char *good[] = {
        "http://a",
        "http://a/",
        "https://a:1/x?y#z",
        "http://a:65535",
        "http://u:p@h/x",
        "http://[::1]:80/x",
        "http://h?x=1",
        "https://h#frag",
        "http://h/\xc3\xa9" /* UTF-8 is not refused; curl encodes */,
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        check_url(good[i], 1, __LINE__);

    /* length cap: 2048 bytes is fine, 2049 is not */
    char url[2100];
    memset(url, 'x', sizeof url);
    memcpy(url, "http://a/", 9);
    url[2048] = '\0';
    check_url(url, 1, __LINE__);
    url[2048] = 'x';
    url[2049] = '\0';
    check_url(url, 0, __LINE__);
}

/* A transport table serving http:// and a made-up queue:// for every
 * operation, and amqp:// for msg deliveries only (a transport may serve deliveries only). */
static const char *only_http_and_queue(void *arg, const char *url, enum txn_type type,
                                       const char *op)
{
    int *calls = arg;
    (*calls)++;
    if (strncmp(url, "amqp://", 7) == 0)
        return type == TXN_MSG && strcmp(op, "action") == 0 ? NULL : "serves msg steps only";
    if (strncmp(url, "http://", 7) == 0 || strncmp(url, "queue://", 8) == 0)
        return NULL;
    return "has a scheme that no transport serves";
}

static void test_url_ok_callback(void **state)
{
    (void)state;
    int calls = 0;
    struct req_limits l = lim;
    l.url_refused = only_http_and_queue;
    l.url_refused_arg = &calls;
    struct txn_spec *s =
        parse_ok("{\"type\":\"saga\",\"steps\":[{\"action\":\"queue://ex/rk\",\"compensate\":"
                 "\"http://a/\"}]}",
                 &l);
    assert_string_equal(s->steps[0].action, "queue://ex/rk");
    txn_spec_free(s);
    assert_int_equal(calls, 2);
    ERR_LIM("{\"type\":\"saga\",\"steps\":[{\"action\":\"https://a/\",\"compensate\":"
            "\"http://a/\"}]}",
            REQ_ERR_INVALID_URL, "steps[0].action", &l);
    /* the callback does not lift the basic checks, nor the host rule for http */
    ERR_LIM("{\"type\":\"saga\",\"steps\":[{\"action\":\"queue://e x/rk\",\"compensate\":"
            "\"http://a/\"}]}",
            REQ_ERR_INVALID_URL, "steps[0].action", &l);
    /* the callback also decides by the transaction's type and the operation:
     * here amqp:// serves msg actions only */
    ERR_LIM("{\"type\":\"saga\",\"steps\":[{\"action\":\"amqp://ex/rk\",\"compensate\":"
            "\"http://a/\"}]}",
            REQ_ERR_INVALID_URL, "steps[0].action", &l);
    ERR_LIM("{\"type\":\"saga\",\"steps\":[{\"action\":\"http://a/\",\"compensate\":"
            "\"amqp://ex/rk\"}]}",
            REQ_ERR_INVALID_URL, "steps[0].compensate", &l);
    s = parse_ok("{\"type\":\"msg\",\"check\":\"http://a/c\",\"steps\":[{\"action\":"
                 "\"amqp://ex/rk\"}]}",
                 &l);
    assert_string_equal(s->steps[0].action, "amqp://ex/rk");
    txn_spec_free(s);
    struct step_spec b;
    struct req_error err;
    const char *tcc = "{\"confirm\":\"amqp://ex/rk\",\"cancel\":\"http://a/\"}";
    assert_int_equal(request_parse_branch(tcc, strlen(tcc), TXN_TCC, &l, &b, &err), DTX_EINVAL);
    assert_string_equal(err.code, REQ_ERR_INVALID_URL);
    assert_string_equal(err.field, "confirm");
    assert_non_null(strstr(err.message, "serves msg steps only"));
    ERR_LIM("{\"type\":\"saga\",\"steps\":[{\"action\":\"http:///x\",\"compensate\":"
            "\"http://a/\"}]}",
            REQ_ERR_INVALID_URL, "steps[0].action", &l);
}

static void test_too_many_steps(void **state)
{
    (void)state;
    ERR("{\"type\":\"saga\",\"steps\":[" STEP "," STEP "," STEP "," STEP "," STEP "," STEP "]}",
        REQ_ERR_TOO_MANY_STEPS, "steps");
    struct req_limits l = lim;
    l.max_steps = 1;
    ERR_LIM("{\"type\":\"saga\",\"steps\":[" STEP "," STEP "]}", REQ_ERR_TOO_MANY_STEPS, "steps",
            &l);
}

/* Steps with `after` make a concurrent saga; references and cycles are checked. */
#define ASTEP(after) "{\"action\":\"http://a/x\",\"compensate\":\"http://a/y\",\"after\":" after "}"
static void test_after(void **state)
{
    (void)state;
    struct txn_spec *s = parse_ok(
        "{\"type\":\"saga\",\"steps\":[" STEP "," ASTEP("[]") "," ASTEP("[1,2]") "]}", &lim);
    assert_int_equal(s->concurrent, 1);
    assert_int_equal(s->steps[0].nafter, 0);
    assert_int_equal(s->steps[1].nafter, 0);
    assert_int_equal(s->steps[2].nafter, 2);
    assert_int_equal(s->steps[2].after[0], 0); /* kept 0-based */
    assert_int_equal(s->steps[2].after[1], 1);
    txn_spec_free(s);
    s = parse_ok("{\"type\":\"saga\",\"steps\":[" STEP "," STEP "]}", &lim);
    assert_int_equal(s->concurrent, 0);
    txn_spec_free(s);

    ERR("{\"type\":\"saga\",\"steps\":[" STEP "," ASTEP("1") "]}", REQ_ERR_WRONG_TYPE,
        "steps[1].after");
    ERR("{\"type\":\"saga\",\"steps\":[" STEP "," ASTEP("[\"1\"]") "]}", REQ_ERR_WRONG_TYPE,
        "steps[1].after[0]");
    ERR("{\"type\":\"saga\",\"steps\":[" STEP "," ASTEP("[1.0]") "]}", REQ_ERR_WRONG_TYPE,
        "steps[1].after[0]");
    ERR("{\"type\":\"saga\",\"steps\":[" STEP "," ASTEP("[0]") "]}", REQ_ERR_INVALID_VALUE,
        "steps[1].after[0]");
    ERR("{\"type\":\"saga\",\"steps\":[" STEP "," ASTEP("[1,3]") "]}", REQ_ERR_INVALID_VALUE,
        "steps[1].after[1]");
    ERR("{\"type\":\"saga\",\"steps\":[" STEP "," ASTEP("[2]") "]}", REQ_ERR_INVALID_VALUE,
        "steps[1].after[0]"); /* itself */
    ERR("{\"type\":\"saga\",\"steps\":[" STEP "," ASTEP("[1,1]") "]}", REQ_ERR_INVALID_VALUE,
        "steps[1].after[1]");
    /* cycles, reported on their lowest step */
    ERR("{\"type\":\"saga\",\"steps\":[" ASTEP("[2]") "," ASTEP("[1]") "]}",
        REQ_ERR_DEPENDENCY_CYCLE, "steps[0].after");
    ERR("{\"type\":\"saga\",\"steps\":[" STEP
        "," ASTEP("[4]") "," ASTEP("[2]") "," ASTEP("[3]") "]}",
        REQ_ERR_DEPENDENCY_CYCLE, "steps[1].after");
    /* a long chain is no cycle and does not overflow anything */
    char body[40000];
    size_t used = (size_t)snprintf(body, sizeof body, "{\"type\":\"saga\",\"steps\":[" STEP);
    for (int i = 2; i <= 100; i++)
        used += (size_t)snprintf(body + used, sizeof body - used,
                                 ",{\"action\":\"http://a/x\",\"compensate\":\"http://a/y\","
                                 "\"after\":[%d]}",
                                 i - 1);
    snprintf(body + used, sizeof body - used, "]}");
    struct req_limits many = lim;
    many.max_steps = 100;
    s = parse_ok(body, &many);
    assert_int_equal(s->nsteps, 100);
    assert_int_equal(s->steps[99].after[0], 98);
    txn_spec_free(s);
}

static void test_unknown_fields(void **state)
{
    (void)state;
    ERR("{\"type\":\"saga\",\"steps\":[" STEP "],\"stpes\":[]}", REQ_ERR_UNKNOWN_FIELD, "stpes");
    /* reported before the required field it was probably meant to be */
    ERR("{\"type\":\"saga\",\"stpes\":[" STEP "]}", REQ_ERR_UNKNOWN_FIELD, "stpes");
    ERR("{\"type\":\"saga\",\"steps\":[" STEP ",{\"action\":\"http://a/\",\"compensate\":"
        "\"http://a/\",\"afterwards\":[0]}]}",
        REQ_ERR_UNKNOWN_FIELD, "steps[1].afterwards");
    ERR("{\"type\":\"saga\",\"steps\":[" STEP "],\"retry\":{\"limit\":1,\"initial_ms\":5}}",
        REQ_ERR_UNKNOWN_FIELD, "retry.initial_ms");
    ERR("{\"type\":\"saga\",\"steps\":[" STEP "],\"Wait\":true}", REQ_ERR_UNKNOWN_FIELD, "Wait");

    /* a long multi-byte key is cut to the field's size at a character
     * boundary (check_err checks that field and message are valid UTF-8) */
    char body[1024];
    char key[400] = "";
    for (int i = 0; i < 100; i++)
        strcat(key, "\xe2\x82\xac"); /* EURO SIGN, 3 bytes */
    snprintf(body, sizeof body, "{\"type\":\"saga\",\"steps\":[" STEP "],\"retry\":{\"%s\":1}}",
             key);
    struct txn_spec *spec;
    struct req_error err;
    assert_int_equal(request_parse_create(body, strlen(body), &lim, &spec, &err), DTX_EINVAL);
    assert_string_equal(err.code, REQ_ERR_UNKNOWN_FIELD);
    assert_true(strncmp(err.field, "retry.\xe2\x82\xac", 9) == 0);
    assert_true(strlen(err.field) < sizeof err.field);
    assert_int_equal((strlen(err.field) - strlen("retry.")) % 3, 0);
    json_t *j = json_string(err.field);
    assert_non_null(j);
    json_decref(j);
    j = json_string(err.message);
    assert_non_null(j);
    json_decref(j);
}

static void test_wrong_integer_types(void **state)
{
    (void)state;
#define BASE "{\"type\":\"saga\",\"steps\":[" STEP "],"
    ERR(BASE "\"request_timeout_ms\":1000.0}", REQ_ERR_WRONG_TYPE, "request_timeout_ms");
    ERR(BASE "\"request_timeout_ms\":1e3}", REQ_ERR_WRONG_TYPE, "request_timeout_ms");
    ERR(BASE "\"request_timeout_ms\":\"1000\"}", REQ_ERR_WRONG_TYPE, "request_timeout_ms");
    ERR(BASE "\"timeout_ms\":true}", REQ_ERR_WRONG_TYPE, "timeout_ms");
    ERR(BASE "\"timeout_ms\":null}", REQ_ERR_WRONG_TYPE, "timeout_ms");
    ERR(BASE "\"wait_timeout_ms\":1.5}", REQ_ERR_WRONG_TYPE, "wait_timeout_ms");
    ERR(BASE "\"retry\":{\"initial_interval_ms\":100.0}}", REQ_ERR_WRONG_TYPE,
        "retry.initial_interval_ms");
    ERR(BASE "\"retry\":{\"max_interval_ms\":[1]}}", REQ_ERR_WRONG_TYPE, "retry.max_interval_ms");
    ERR(BASE "\"retry\":{\"limit\":\"10\"}}", REQ_ERR_WRONG_TYPE, "retry.limit");
    ERR(BASE "\"retry\":[]}", REQ_ERR_WRONG_TYPE, "retry");
    ERR(BASE "\"retry\":null}", REQ_ERR_WRONG_TYPE, "retry");
}

static void test_out_of_range(void **state)
{
    (void)state;
    ERR(BASE "\"retry\":{\"initial_interval_ms\":0}}", REQ_ERR_INVALID_VALUE,
        "retry.initial_interval_ms");
    ERR(BASE "\"retry\":{\"initial_interval_ms\":-1}}", REQ_ERR_INVALID_VALUE,
        "retry.initial_interval_ms");
    ERR(BASE "\"retry\":{\"initial_interval_ms\":3600001,\"max_interval_ms\":86400000}}",
        REQ_ERR_INVALID_VALUE, "retry.initial_interval_ms");
    ERR(BASE "\"retry\":{\"max_interval_ms\":86400001}}", REQ_ERR_INVALID_VALUE,
        "retry.max_interval_ms");
    ERR(BASE "\"retry\":{\"limit\":-1}}", REQ_ERR_INVALID_VALUE, "retry.limit");
    ERR(BASE "\"retry\":{\"limit\":1000001}}", REQ_ERR_INVALID_VALUE, "retry.limit");
    ERR(BASE "\"request_timeout_ms\":0}", REQ_ERR_INVALID_VALUE, "request_timeout_ms");
    ERR(BASE "\"request_timeout_ms\":600001}", REQ_ERR_INVALID_VALUE, "request_timeout_ms");
    ERR(BASE "\"timeout_ms\":-1}", REQ_ERR_INVALID_VALUE, "timeout_ms");
    ERR(BASE "\"timeout_ms\":31536000001}", REQ_ERR_INVALID_VALUE, "timeout_ms");
    ERR(BASE "\"timeout_ms\":-9223372036854775808}", REQ_ERR_INVALID_VALUE, "timeout_ms");
    ERR(BASE "\"wait_timeout_ms\":0}", REQ_ERR_INVALID_VALUE, "wait_timeout_ms");
    ERR(BASE "\"wait_timeout_ms\":-5}", REQ_ERR_INVALID_VALUE, "wait_timeout_ms");
    /* beyond int64: jansson refuses the number itself */
    ERR(BASE "\"timeout_ms\":99999999999999999999}", REQ_ERR_INVALID_JSON, "");
}

static void test_max_below_initial(void **state)
{
    (void)state;
    ERR(BASE "\"retry\":{\"initial_interval_ms\":500,\"max_interval_ms\":499}}",
        REQ_ERR_INVALID_VALUE, "retry.max_interval_ms");
    /* max given, initial from the default (100) */
    ERR(BASE "\"retry\":{\"max_interval_ms\":99}}", REQ_ERR_INVALID_VALUE, "retry.max_interval_ms");
    /* initial given, max from the default (30000): blame what was sent */
    ERR(BASE "\"retry\":{\"initial_interval_ms\":30001}}", REQ_ERR_INVALID_VALUE,
        "retry.initial_interval_ms");
    /* equal is fine */
    txn_spec_free(
        parse_ok(BASE "\"retry\":{\"initial_interval_ms\":30000}}", &lim)); /* max default 30000 */
}

static void test_wait(void **state)
{
    (void)state;
    ERR(BASE "\"wait\":1}", REQ_ERR_WRONG_TYPE, "wait");
    ERR(BASE "\"wait\":\"true\"}", REQ_ERR_WRONG_TYPE, "wait");
    ERR(BASE "\"wait\":null}", REQ_ERR_WRONG_TYPE, "wait");
    ERR(BASE "\"wait\":true,\"wait_timeout_ms\":60001}", REQ_ERR_INVALID_VALUE, "wait_timeout_ms");
    struct req_limits l = lim;
    l.max_wait_ms = 1000;
    ERR_LIM(BASE "\"wait_timeout_ms\":1001}", REQ_ERR_INVALID_VALUE, "wait_timeout_ms", &l);
    /* a default above the operator's maximum is brought down to it */
    struct txn_spec *s = parse_ok(BASE "\"wait\":true}", &l);
    assert_int_equal(s->wait, 1);
    assert_int_equal(s->wait_timeout_ms, 1000);
    txn_spec_free(s);
}

static void test_gid(void **state)
{
    (void)state;
    ERR(BASE "\"gid\":\"has space\"}", REQ_ERR_INVALID_VALUE, "gid");
    ERR(BASE "\"gid\":\"a/b\"}", REQ_ERR_INVALID_VALUE, "gid");
    ERR(BASE "\"gid\":\"caf\xc3\xa9\"}", REQ_ERR_INVALID_VALUE, "gid");
    ERR(BASE "\"gid\":\"\"}", REQ_ERR_INVALID_VALUE, "gid");
    ERR(BASE "\"gid\":\"a\\u0000b\"}", REQ_ERR_INVALID_JSON, "");
    ERR(BASE "\"gid\":42}", REQ_ERR_WRONG_TYPE, "gid");
    ERR(BASE "\"gid\":null}", REQ_ERR_WRONG_TYPE, "gid");

    char gid[200];
    char body[400];
    memset(gid, 'g', sizeof gid);
    gid[128] = '\0';
    snprintf(body, sizeof body, BASE "\"gid\":\"%s\"}", gid);
    struct txn_spec *s = parse_ok(body, &lim);
    assert_string_equal(s->gid, gid);
    txn_spec_free(s);
    gid[128] = 'g';
    gid[129] = '\0';
    snprintf(body, sizeof body, BASE "\"gid\":\"%s\"}", gid);
    ERR(body, REQ_ERR_INVALID_VALUE, "gid");

    assert_true(request_gid_ok("a"));
    assert_true(request_gid_ok("AZaz09._:-"));
    assert_false(request_gid_ok(""));
    assert_false(request_gid_ok(NULL));
    assert_false(request_gid_ok("a b"));
    assert_false(request_gid_ok("a\nb"));
    assert_false(request_gid_ok("a/b"));
    assert_false(request_gid_ok("a+b"));
    gid[128] = '\0';
    assert_true(request_gid_ok(gid));
    gid[128] = 'g';
    assert_false(request_gid_ok(gid));
#undef BASE
}

/* Errors deep in the body leave nothing allocated (run under ASan/valgrind)
 * and the first problem in document order wins among the steps. */
static void test_error_after_partial_fill(void **state)
{
    (void)state;
    ERR("{\"gid\":\"g\",\"type\":\"saga\",\"steps\":[" STEP "," STEP
        ",{\"action\":\"http://a/\",\"compensate\":\"ftp://a/\"}," STEP ",{\"x\":1}]}",
        REQ_ERR_INVALID_URL, "steps[2].compensate");
    ERR("{\"gid\":\"g\",\"type\":\"saga\",\"steps\":[" STEP "],\"retry\":{\"limit\":-1}}",
        REQ_ERR_INVALID_VALUE, "retry.limit");
}

/* ---- tcc, 2pc and msg creates ------------------------------------------- */

static void test_create_tcc_2pc(void **state)
{
    (void)state;
    const char *types[] = {"tcc", "2pc"};
    const enum txn_type want[] = {TXN_TCC, TXN_2PC};
    for (int i = 0; i < 2; i++) {
        char body[512];
        snprintf(body, sizeof body, "{\"type\":\"%s\"}", types[i]);
        struct txn_spec *s = parse_ok(body, &lim);
        assert_int_equal(s->type, want[i]);
        assert_null(s->gid);
        assert_null(s->steps);
        assert_int_equal(s->nsteps, 0);
        assert_int_equal(s->concurrent, 0);
        assert_null(s->check);
        assert_int_equal(s->retry.initial_ms, 100);
        assert_int_equal(s->retry.max_ms, 30000);
        assert_int_equal(s->retry.limit, 10);
        assert_int_equal(s->request_timeout_ms, 10000);
        assert_int_equal(s->timeout_ms, 60000); /* a default deadline: 60 s */
        assert_int_equal(s->wait, 0);
        assert_int_equal(s->wait_timeout_ms, 30000);
        txn_spec_free(s);

        /* an explicit 0: no deadline */
        snprintf(body, sizeof body, "{\"type\":\"%s\",\"timeout_ms\":0}", types[i]);
        s = parse_ok(body, &lim);
        assert_int_equal(s->timeout_ms, 0);
        txn_spec_free(s);

        snprintf(body, sizeof body,
                 "{\"type\":\"%s\",\"gid\":\"g-%s\",\"retry\":{\"limit\":2},"
                 "\"request_timeout_ms\":700,\"timeout_ms\":5000,\"wait\":true,"
                 "\"wait_timeout_ms\":100}",
                 types[i], types[i]);
        s = parse_ok(body, &lim);
        assert_int_equal(s->type, want[i]);
        assert_string_equal(s->gid, i == 0 ? "g-tcc" : "g-2pc");
        assert_int_equal(s->retry.limit, 2);
        assert_int_equal(s->request_timeout_ms, 700);
        assert_int_equal(s->timeout_ms, 5000);
        assert_int_equal(s->wait, 1);
        assert_int_equal(s->wait_timeout_ms, 100);
        txn_spec_free(s);

        /* no steps: any value of steps is refused, empty or not */
        const char *steps[] = {"[" STEP "]", "[]", "null", "{}", "1"};
        for (size_t k = 0; k < sizeof steps / sizeof steps[0]; k++) {
            snprintf(body, sizeof body, "{\"type\":\"%s\",\"steps\":%s}", types[i], steps[k]);
            ERR(body, REQ_ERR_INVALID_VALUE, "steps");
        }
        /* no check */
        const char *checks[] = {"\"http://a/check\"", "null", "1", "\"\""};
        for (size_t k = 0; k < sizeof checks / sizeof checks[0]; k++) {
            snprintf(body, sizeof body, "{\"type\":\"%s\",\"check\":%s}", types[i], checks[k]);
            ERR(body, REQ_ERR_INVALID_VALUE, "check");
        }
        /* the other fields keep their checks */
        snprintf(body, sizeof body, "{\"type\":\"%s\",\"timeout_ms\":-1}", types[i]);
        ERR(body, REQ_ERR_INVALID_VALUE, "timeout_ms");
        snprintf(body, sizeof body, "{\"type\":\"%s\",\"gid\":\"a b\"}", types[i]);
        ERR(body, REQ_ERR_INVALID_VALUE, "gid");
        snprintf(body, sizeof body, "{\"type\":\"%s\",\"branches\":[1]}", types[i]);
        ERR(body, REQ_ERR_WRONG_TYPE, "branches[0]");
        snprintf(body, sizeof body, "{\"type\":\"%s\",\"wait\":\"yes\"}", types[i]);
        ERR(body, REQ_ERR_WRONG_TYPE, "wait");
    }
    /* a saga takes no check either */
    ERR("{\"type\":\"saga\",\"steps\":[" STEP "],\"check\":\"http://a/c\"}", REQ_ERR_INVALID_VALUE,
        "check");
}

#define MSTEP  "{\"action\":\"http://a/deliver\"}"
#define MCHECK "\"check\":\"http://a/check\""

static void test_create_msg(void **state)
{
    (void)state;
    struct txn_spec *s = parse_ok("{\"type\":\"msg\"," MCHECK ",\"steps\":[" MSTEP "]}", &lim);
    assert_int_equal(s->type, TXN_MSG);
    assert_string_equal(s->check, "http://a/check");
    assert_int_equal(s->nsteps, 1);
    assert_string_equal(s->steps[0].action, "http://a/deliver");
    assert_null(s->steps[0].compensate);
    assert_null(s->steps[0].prepare);
    assert_null(s->steps[0].id);
    assert_null(s->steps[0].after);
    assert_string_equal(s->steps[0].payload, "{}");
    assert_int_equal(s->concurrent, 0);
    assert_int_equal(s->timeout_ms, 10000); /* the default for msg */
    assert_int_equal(s->request_timeout_ms, 10000);
    assert_int_equal(s->wait_timeout_ms, 30000);
    txn_spec_free(s);

    s = parse_ok("{\"type\":\"msg\",\"gid\":\"m-1\",\"check\":\"https://c:8443/q?gid=m-1\","
                 "\"steps\":[{\"action\":\"http://a/1\",\"payload\":{\"n\":[1, 2]}},"
                 "{\"payload\":null,\"action\":\"http://a/2\"}],\"timeout_ms\":1,\"wait\":true}",
                 &lim);
    assert_string_equal(s->gid, "m-1");
    assert_string_equal(s->check, "https://c:8443/q?gid=m-1");
    assert_int_equal(s->nsteps, 2);
    assert_string_equal(s->steps[0].payload, "{\"n\":[1,2]}");
    assert_string_equal(s->steps[1].action, "http://a/2");
    assert_string_equal(s->steps[1].payload, "null");
    assert_null(s->steps[1].compensate);
    assert_int_equal(s->timeout_ms, 1);
    assert_int_equal(s->wait, 1);
    txn_spec_free(s);

    s = parse_ok("{\"type\":\"msg\"," MCHECK ",\"steps\":[" MSTEP "],\"timeout_ms\":31536000000}",
                 &lim);
    assert_true(s->timeout_ms == 31536000000ULL);
    txn_spec_free(s);

    /* timeout_ms: at least 1 (the check needs a deadline) */
    ERR("{\"type\":\"msg\"," MCHECK ",\"steps\":[" MSTEP "],\"timeout_ms\":0}",
        REQ_ERR_INVALID_VALUE, "timeout_ms");
    ERR("{\"type\":\"msg\"," MCHECK ",\"steps\":[" MSTEP "],\"timeout_ms\":-1}",
        REQ_ERR_INVALID_VALUE, "timeout_ms");
    ERR("{\"type\":\"msg\"," MCHECK ",\"steps\":[" MSTEP "],\"timeout_ms\":31536000001}",
        REQ_ERR_INVALID_VALUE, "timeout_ms");
    ERR("{\"type\":\"msg\"," MCHECK ",\"steps\":[" MSTEP "],\"timeout_ms\":\"10\"}",
        REQ_ERR_WRONG_TYPE, "timeout_ms");
    ERR("{\"type\":\"msg\"," MCHECK ",\"steps\":[" MSTEP "],\"timeout_ms\":null}",
        REQ_ERR_WRONG_TYPE, "timeout_ms");

    /* check: required, a string, a URL */
    ERR("{\"type\":\"msg\",\"steps\":[" MSTEP "]}", REQ_ERR_MISSING_FIELD, "check");
    ERR("{\"type\":\"msg\",\"check\":1,\"steps\":[" MSTEP "]}", REQ_ERR_WRONG_TYPE, "check");
    ERR("{\"type\":\"msg\",\"check\":null,\"steps\":[" MSTEP "]}", REQ_ERR_WRONG_TYPE, "check");
    ERR("{\"type\":\"msg\",\"check\":[\"http://a/\"],\"steps\":[" MSTEP "]}", REQ_ERR_WRONG_TYPE,
        "check");
    const char *bad[] = {"", "ftp://a/c", "http://", "http://a/ x", "http://a:0/", "check"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char body[512];
        snprintf(body, sizeof body, "{\"type\":\"msg\",\"check\":\"%s\",\"steps\":[" MSTEP "]}",
                 bad[i]);
        ERR(body, REQ_ERR_INVALID_URL, "check");
    }
    char longurl[2100];
    char body[2400];
    memset(longurl, 'x', sizeof longurl);
    memcpy(longurl, "http://a/", 9);
    longurl[2049] = '\0';
    snprintf(body, sizeof body, "{\"type\":\"msg\",\"check\":\"%s\",\"steps\":[" MSTEP "]}",
             longurl);
    ERR(body, REQ_ERR_INVALID_URL, "check");
    longurl[2048] = '\0';
    snprintf(body, sizeof body, "{\"type\":\"msg\",\"check\":\"%s\",\"steps\":[" MSTEP "]}",
             longurl);
    txn_spec_free(parse_ok(body, &lim));

    /* steps: required and checked before check; only action and payload */
    ERR("{\"type\":\"msg\"}", REQ_ERR_MISSING_FIELD, "steps");
    ERR("{\"type\":\"msg\"," MCHECK "}", REQ_ERR_MISSING_FIELD, "steps");
    ERR("{\"type\":\"msg\"," MCHECK ",\"steps\":[]}", REQ_ERR_INVALID_VALUE, "steps");
    ERR("{\"type\":\"msg\"," MCHECK ",\"steps\":{}}", REQ_ERR_WRONG_TYPE, "steps");
    ERR("{\"type\":\"msg\",\"check\":1,\"steps\":[{}]}", REQ_ERR_MISSING_FIELD, "steps[0].action");
    ERR("{\"type\":\"msg\"," MCHECK ",\"steps\":[" STEP "]}", REQ_ERR_UNKNOWN_FIELD,
        "steps[0].compensate");
    ERR("{\"type\":\"msg\"," MCHECK ",\"steps\":[" MSTEP
        ",{\"action\":\"http://a/\",\"after\":[1]}]}",
        REQ_ERR_UNKNOWN_FIELD, "steps[1].after");
    ERR("{\"type\":\"msg\"," MCHECK
        ",\"steps\":[{\"action\":\"http://a/\",\"prepare\":\"http://a/\"}]}",
        REQ_ERR_UNKNOWN_FIELD, "steps[0].prepare");
    ERR("{\"type\":\"msg\"," MCHECK ",\"steps\":[{\"action\":\"ftp://a/\"}]}", REQ_ERR_INVALID_URL,
        "steps[0].action");
    ERR("{\"type\":\"msg\"," MCHECK ",\"steps\":[{\"action\":2}]}", REQ_ERR_WRONG_TYPE,
        "steps[0].action");
    ERR("{\"type\":\"msg\"," MCHECK ",\"steps\":[1]}", REQ_ERR_WRONG_TYPE, "steps[0]");
    ERR("{\"type\":\"msg\"," MCHECK ",\"steps\":[" MSTEP "," MSTEP "," MSTEP "," MSTEP "," MSTEP
        "," MSTEP "]}",
        REQ_ERR_TOO_MANY_STEPS, "steps");

    /* the transport callback decides the check URL's scheme too */
    int calls = 0;
    struct req_limits l = lim;
    l.url_refused = only_http_and_queue;
    l.url_refused_arg = &calls;
    s = parse_ok("{\"type\":\"msg\",\"check\":\"queue://ex/check\",\"steps\":[" MSTEP "]}", &l);
    assert_string_equal(s->check, "queue://ex/check");
    txn_spec_free(s);
    assert_int_equal(calls, 2);
    ERR_LIM("{\"type\":\"msg\",\"check\":\"https://a/\",\"steps\":[" MSTEP "]}",
            REQ_ERR_INVALID_URL, "check", &l);
    ERR_LIM("{\"type\":\"msg\",\"check\":\"amqp://ex/check\",\"steps\":[" MSTEP "]}",
            REQ_ERR_INVALID_URL, "check", &l); /* amqp:// is for msg steps only */
}

/* ---- branch registration ------------------------------------------------ */

static void parse_branch_ok(const char *body, size_t len, enum txn_type type, struct step_spec *out)
{
    struct req_error err = {0};
    int rc = request_parse_branch(body, len, type, &lim, out, &err);
    if (rc != 0)
        fail_msg("unexpected error %s at '%s': %s\nbody: %s", err.code, err.field, err.message,
                 body ? body : "(null)");
}

static void check_branch_err(const char *body, size_t len, enum txn_type type, const char *code,
                             const char *field, int line)
{
    struct step_spec out;
    memset(&out, 0xAB, sizeof out);
    struct req_error err = {0};
    int rc = request_parse_branch(body, len, type, &lim, &out, &err);
    if (rc != DTX_EINVAL || err.code == NULL || strcmp(err.code, code) != 0 ||
        strcmp(err.field, field) != 0)
        fail_msg("line %d: want %s at '%s', got rc %d %s at '%s' (%s)\nbody: %.300s", line, code,
                 field, rc, err.code ? err.code : "(none)", err.field, err.message,
                 body ? body : "(null)");
    if (field[0] != '\0' && strncmp(err.message, field, strlen(field)) != 0)
        fail_msg("line %d: message does not name %s: %s", line, field, err.message);
    /* nothing is left to free (ASan checks the rest) */
    assert_null(out.id);
    assert_null(out.prepare);
    assert_null(out.action);
    assert_null(out.compensate);
    assert_null(out.payload);
    assert_null(out.after);
    json_t *m = json_string(err.message);
    assert_non_null(m);
    json_decref(m);
}

#define BERR(body, type, code, field)                                                              \
    check_branch_err(body, strlen(body), type, code, field, __LINE__)

#define TCC_URLS "\"confirm\":\"http://c/confirm\",\"cancel\":\"http://c/cancel\""
#define XA_URLS                                                                                    \
    "\"prepare\":\"http://x/prepare\",\"commit\":\"http://x/commit\",\"rollback\":"                \
    "\"http://x/rollback\""

static void test_branch_tcc(void **state)
{
    (void)state;
    struct step_spec s;
    const char *b = "{" TCC_URLS "}";
    parse_branch_ok(b, strlen(b), TXN_TCC, &s);
    assert_null(s.id);
    assert_null(s.prepare);
    assert_string_equal(s.action, "http://c/confirm");
    assert_string_equal(s.compensate, "http://c/cancel");
    assert_string_equal(s.payload, "{}");
    assert_int_equal(s.payload_len, 2);
    assert_null(s.after);
    assert_int_equal(s.nafter, 0);
    step_spec_clear(&s);

    b = "{\"branch\":\"b-1.x_y:Z\",\"payload\": [1, {\"a\" : null}]," TCC_URLS "}";
    parse_branch_ok(b, strlen(b), TXN_TCC, &s);
    assert_string_equal(s.id, "b-1.x_y:Z");
    assert_string_equal(s.payload, "[1,{\"a\":null}]");
    assert_int_equal(s.payload_len, strlen("[1,{\"a\":null}]"));
    step_spec_clear(&s);

    /* branch ids: 1 to 64 characters of the gid alphabet */
    char id[80];
    char body[256];
    memset(id, 'i', sizeof id);
    id[64] = '\0';
    snprintf(body, sizeof body, "{\"branch\":\"%s\"," TCC_URLS "}", id);
    parse_branch_ok(body, strlen(body), TXN_TCC, &s);
    assert_string_equal(s.id, id);
    step_spec_clear(&s);
    id[64] = 'i';
    id[65] = '\0';
    snprintf(body, sizeof body, "{\"branch\":\"%s\"," TCC_URLS "}", id);
    BERR(body, TXN_TCC, REQ_ERR_INVALID_VALUE, "branch");
    snprintf(body, sizeof body, "{\"branch\":\"1\"," TCC_URLS "}");
    parse_branch_ok(body, strlen(body), TXN_TCC, &s);
    assert_string_equal(s.id, "1");
    step_spec_clear(&s);
    const char *bad_ids[] = {"", "a b", "a/b", "caf\xc3\xa9", "a+b", "a\\nb", "{x}"};
    for (size_t i = 0; i < sizeof bad_ids / sizeof bad_ids[0]; i++) {
        snprintf(body, sizeof body, "{\"branch\":\"%s\"," TCC_URLS "}", bad_ids[i]);
        BERR(body, TXN_TCC, REQ_ERR_INVALID_VALUE, "branch");
    }
    BERR("{\"branch\":\"a\\u0000b\"," TCC_URLS "}", TXN_TCC, REQ_ERR_INVALID_JSON, "");
    BERR("{\"branch\":1," TCC_URLS "}", TXN_TCC, REQ_ERR_WRONG_TYPE, "branch");
    BERR("{\"branch\":null," TCC_URLS "}", TXN_TCC, REQ_ERR_WRONG_TYPE, "branch");
    BERR("{\"branch\":[\"a\"]," TCC_URLS "}", TXN_TCC, REQ_ERR_WRONG_TYPE, "branch");

    /* the URLs */
    BERR("{\"cancel\":\"http://c/\"}", TXN_TCC, REQ_ERR_MISSING_FIELD, "confirm");
    BERR("{\"confirm\":\"http://c/\"}", TXN_TCC, REQ_ERR_MISSING_FIELD, "cancel");
    BERR("{\"branch\":\"b\",\"confirm\":\"http://c/\"}", TXN_TCC, REQ_ERR_MISSING_FIELD,
         "cancel"); /* the id already copied is freed */
    BERR("{}", TXN_TCC, REQ_ERR_MISSING_FIELD, "confirm");
    check_branch_err(NULL, 0, TXN_TCC, REQ_ERR_MISSING_FIELD, "confirm", __LINE__);
    BERR("{\"confirm\":1,\"cancel\":\"http://c/\"}", TXN_TCC, REQ_ERR_WRONG_TYPE, "confirm");
    BERR("{\"confirm\":\"http://c/\",\"cancel\":null}", TXN_TCC, REQ_ERR_WRONG_TYPE, "cancel");
    BERR("{\"confirm\":\"ftp://c/\",\"cancel\":\"http://c/\"}", TXN_TCC, REQ_ERR_INVALID_URL,
         "confirm");
    BERR("{\"confirm\":\"http://c/\",\"cancel\":\"http://:1/\"}", TXN_TCC, REQ_ERR_INVALID_URL,
         "cancel");
    BERR("{\"confirm\":\"\",\"cancel\":\"http://c/\"}", TXN_TCC, REQ_ERR_INVALID_URL, "confirm");

    /* 2pc's and saga's names are unknown here, and reported first */
    BERR("{\"prepare\":\"http://c/\"," TCC_URLS "}", TXN_TCC, REQ_ERR_UNKNOWN_FIELD, "prepare");
    BERR("{\"commit\":\"http://c/\",\"rollback\":\"http://c/\"}", TXN_TCC, REQ_ERR_UNKNOWN_FIELD,
         "commit");
    BERR("{\"action\":\"http://c/\"," TCC_URLS "}", TXN_TCC, REQ_ERR_UNKNOWN_FIELD, "action");
    BERR("{\"id\":\"x\"," TCC_URLS "}", TXN_TCC, REQ_ERR_UNKNOWN_FIELD, "id");
    BERR("{\"confrim\":\"http://c/\"}", TXN_TCC, REQ_ERR_UNKNOWN_FIELD, "confrim");

    /* the body */
    BERR("{", TXN_TCC, REQ_ERR_INVALID_JSON, "");
    BERR("[]", TXN_TCC, REQ_ERR_INVALID_JSON, "");
    BERR("null", TXN_TCC, REQ_ERR_INVALID_JSON, "");
    BERR("\"x\"", TXN_TCC, REQ_ERR_INVALID_JSON, "");
    BERR("{\"confirm\":\"http://c/\"," TCC_URLS "}", TXN_TCC, REQ_ERR_INVALID_JSON, "");
    BERR("{" TCC_URLS "} x", TXN_TCC, REQ_ERR_INVALID_JSON, "");
    check_branch_err("{" TCC_URLS "}\0", strlen("{" TCC_URLS "}") + 1, TXN_TCC,
                     REQ_ERR_INVALID_JSON, "", __LINE__);
}

static void test_branch_2pc(void **state)
{
    (void)state;
    struct step_spec s;
    const char *b = "{" XA_URLS "}";
    parse_branch_ok(b, strlen(b), TXN_2PC, &s);
    assert_null(s.id);
    assert_string_equal(s.prepare, "http://x/prepare");
    assert_string_equal(s.action, "http://x/commit");
    assert_string_equal(s.compensate, "http://x/rollback");
    assert_string_equal(s.payload, "{}");
    step_spec_clear(&s);

    b = "{\"payload\":\"text\",\"branch\":\"7\"," XA_URLS "}";
    parse_branch_ok(b, strlen(b), TXN_2PC, &s);
    assert_string_equal(s.id, "7");
    assert_string_equal(s.payload, "\"text\"");
    step_spec_clear(&s);

    BERR("{\"commit\":\"http://x/\",\"rollback\":\"http://x/\"}", TXN_2PC, REQ_ERR_MISSING_FIELD,
         "prepare");
    BERR("{\"prepare\":\"http://x/\",\"rollback\":\"http://x/\"}", TXN_2PC, REQ_ERR_MISSING_FIELD,
         "commit");
    BERR("{\"branch\":\"b\",\"prepare\":\"http://x/\",\"commit\":\"http://x/\"}", TXN_2PC,
         REQ_ERR_MISSING_FIELD, "rollback"); /* id, prepare and commit are freed */
    BERR("{}", TXN_2PC, REQ_ERR_MISSING_FIELD, "prepare");
    check_branch_err(NULL, 0, TXN_2PC, REQ_ERR_MISSING_FIELD, "prepare", __LINE__);
    BERR("{\"prepare\":true,\"commit\":\"http://x/\",\"rollback\":\"http://x/\"}", TXN_2PC,
         REQ_ERR_WRONG_TYPE, "prepare");
    BERR("{\"prepare\":\"http://x/\",\"commit\":{},\"rollback\":\"http://x/\"}", TXN_2PC,
         REQ_ERR_WRONG_TYPE, "commit");
    BERR("{\"prepare\":\"http://x/\",\"commit\":\"http://x/\",\"rollback\":5}", TXN_2PC,
         REQ_ERR_WRONG_TYPE, "rollback");
    BERR("{\"prepare\":\"x\",\"commit\":\"http://x/\",\"rollback\":\"http://x/\"}", TXN_2PC,
         REQ_ERR_INVALID_URL, "prepare");
    BERR("{\"prepare\":\"http://x/\",\"commit\":\"http://x:99999/\",\"rollback\":\"http://x/\"}",
         TXN_2PC, REQ_ERR_INVALID_URL, "commit");
    BERR("{\"prepare\":\"http://x/\",\"commit\":\"http://x/\",\"rollback\":\"http://x/ y\"}",
         TXN_2PC, REQ_ERR_INVALID_URL, "rollback");
    BERR("{\"branch\":\"\"," XA_URLS "}", TXN_2PC, REQ_ERR_INVALID_VALUE, "branch");
    BERR("{\"branch\":7," XA_URLS "}", TXN_2PC, REQ_ERR_WRONG_TYPE, "branch");
    /* tcc's names are unknown here */
    BERR("{\"confirm\":\"http://x/\"," XA_URLS "}", TXN_2PC, REQ_ERR_UNKNOWN_FIELD, "confirm");
    BERR("{\"cancel\":\"http://x/\"," XA_URLS "}", TXN_2PC, REQ_ERR_UNKNOWN_FIELD, "cancel");
    BERR("{\"after\":[1]," XA_URLS "}", TXN_2PC, REQ_ERR_UNKNOWN_FIELD, "after");
    BERR("[" XA_URLS "]", TXN_2PC, REQ_ERR_INVALID_JSON, "");
    BERR("{\"branch\":\"a\",\"branch\":\"a\"," XA_URLS "}", TXN_2PC, REQ_ERR_INVALID_JSON, "");
}

/* ---- submit / abort bodies ---------------------------------------------- */

static void control_ok(const char *body, size_t len, const struct req_limits *l, int want_wait,
                       uint32_t want_timeout, int line)
{
    int wait = -1;
    uint32_t timeout = 12345;
    struct req_error err = {0};
    int rc = request_parse_control(body, len, l, &wait, &timeout, &err);
    if (rc != 0 || wait != want_wait || timeout != want_timeout)
        fail_msg("line %d: want wait %d timeout %u, got rc %d (%s at '%s') wait %d timeout %u",
                 line, want_wait, want_timeout, rc, err.code ? err.code : "-", err.field, wait,
                 timeout);
}

static void control_err(const char *body, size_t len, const struct req_limits *l, const char *code,
                        const char *field, int line)
{
    int wait;
    uint32_t timeout;
    struct req_error err = {0};
    int rc = request_parse_control(body, len, l, &wait, &timeout, &err);
    if (rc != DTX_EINVAL || err.code == NULL || strcmp(err.code, code) != 0 ||
        strcmp(err.field, field) != 0)
        fail_msg("line %d: want %s at '%s', got rc %d %s at '%s' (%s)", line, code, field, rc,
                 err.code ? err.code : "(none)", err.field, err.message);
    if (field[0] != '\0' && strncmp(err.message, field, strlen(field)) != 0)
        fail_msg("line %d: message does not name %s: %s", line, field, err.message);
}

#define COK(body, w, t)  control_ok(body, strlen(body), &lim, w, t, __LINE__)
#define CERR(body, c, f) control_err(body, strlen(body), &lim, c, f, __LINE__)

/* tcc/2pc branches given with the create request, and "submit" */
static void test_create_with_branches(void **state)
{
    (void)state;
    const char *body = "{\"type\":\"2pc\",\"submit\":true,\"branches\":["
                       "{\"prepare\":\"http://a/p\",\"commit\":\"http://a/c\","
                       "\"rollback\":\"http://a/r\",\"payload\":{\"n\":1}},"
                       "{\"branch\":\"1\",\"prepare\":\"http://b/p\",\"commit\":\"http://b/c\","
                       "\"rollback\":\"http://b/r\"},"
                       "{\"prepare\":\"http://c/p\",\"commit\":\"http://c/c\","
                       "\"rollback\":\"http://c/r\"}]}";
    struct txn_spec *s = parse_ok(body, &lim);
    assert_int_equal(s->type, TXN_2PC);
    assert_int_equal(s->submit, 1);
    assert_int_equal(s->nsteps, 3);
    /* ids: the given one kept, the others the lowest free numbers */
    assert_string_equal(s->steps[0].id, "2");
    assert_string_equal(s->steps[1].id, "1");
    assert_string_equal(s->steps[2].id, "3");
    assert_string_equal(s->steps[0].prepare, "http://a/p");
    assert_string_equal(s->steps[0].action, "http://a/c");
    assert_string_equal(s->steps[0].compensate, "http://a/r");
    assert_string_equal(s->steps[0].payload, "{\"n\":1}");
    assert_string_equal(s->steps[1].payload, "{}");
    txn_spec_free(s);

    s = parse_ok("{\"type\":\"msg\",\"check\":\"http://h/c\",\"submit\":true,"
                 "\"steps\":[{\"action\":\"http://h/a\"}]}",
                 &lim);
    assert_int_equal(s->submit, 1);
    txn_spec_free(s);
    s = parse_ok("{\"type\":\"tcc\",\"submit\":false,\"branches\":[]}", &lim);
    assert_int_equal(s->submit, 0);
    assert_int_equal(s->nsteps, 0);
    txn_spec_free(s);

    ERR("{\"type\":\"tcc\",\"branches\":[{\"confirm\":\"http://a/c\"}]}", REQ_ERR_MISSING_FIELD,
        "branches[0].cancel");
    ERR("{\"type\":\"tcc\",\"branches\":[{\"branch\":\"k\",\"confirm\":\"http://a/c\","
        "\"cancel\":\"http://a/x\"},{\"branch\":\"k\",\"confirm\":\"http://a/c\","
        "\"cancel\":\"http://a/x\"}]}",
        REQ_ERR_INVALID_VALUE, "branches[1]");
    ERR("{\"type\":\"saga\",\"submit\":true,\"steps\":[" STEP "]}", REQ_ERR_INVALID_VALUE,
        "submit");
    ERR("{\"type\":\"tcc\",\"submit\":1}", REQ_ERR_WRONG_TYPE, "submit");
    ERR("{\"type\":\"2pc\",\"branches\":[{\"branch\":\"r\",\"resource\":\"db\"}]}",
        REQ_ERR_INVALID_VALUE, "branches[0].resource"); /* no resource is configured */
}

static void test_control(void **state)
{
    (void)state;
    /* empty body and {}: no wait, the default wait timeout */
    control_ok(NULL, 0, &lim, 0, 30000, __LINE__);
    control_ok("", 0, &lim, 0, 30000, __LINE__);
    control_ok("garbage", 0, &lim, 0, 30000, __LINE__); /* len 0: nothing is read */
    COK("{}", 0, 30000);
    COK(" { } ", 0, 30000);
    COK("\r\n", 0, 30000); /* only whitespace: no body */
    COK(" \t ", 0, 30000);
    COK("{\"wait\":true}", 1, 30000);
    COK("{\"wait\":false}", 0, 30000);
    COK("{\"wait\":true,\"wait_timeout_ms\":5000}", 1, 5000);
    COK("{\"wait_timeout_ms\":1}", 0, 1);
    COK("{\"wait\":true,\"wait_timeout_ms\":60000}", 1, 60000);

    /* a default above the operator's maximum is brought down to it */
    struct req_limits l = lim;
    l.max_wait_ms = 1000;
    control_ok("{\"wait\":true}", strlen("{\"wait\":true}"), &l, 1, 1000, __LINE__);
    control_ok(NULL, 0, &l, 0, 1000, __LINE__);
    control_err("{\"wait_timeout_ms\":1001}", strlen("{\"wait_timeout_ms\":1001}"), &l,
                REQ_ERR_INVALID_VALUE, "wait_timeout_ms", __LINE__);

    CERR("{\"wait\":1}", REQ_ERR_WRONG_TYPE, "wait");
    CERR("{\"wait\":\"true\"}", REQ_ERR_WRONG_TYPE, "wait");
    CERR("{\"wait\":null}", REQ_ERR_WRONG_TYPE, "wait");
    CERR("{\"wait\":[true]}", REQ_ERR_WRONG_TYPE, "wait");
    CERR("{\"wait_timeout_ms\":0}", REQ_ERR_INVALID_VALUE, "wait_timeout_ms");
    CERR("{\"wait_timeout_ms\":-1}", REQ_ERR_INVALID_VALUE, "wait_timeout_ms");
    CERR("{\"wait\":true,\"wait_timeout_ms\":60001}", REQ_ERR_INVALID_VALUE, "wait_timeout_ms");
    CERR("{\"wait_timeout_ms\":4294967296}", REQ_ERR_INVALID_VALUE, "wait_timeout_ms");
    CERR("{\"wait_timeout_ms\":\"5\"}", REQ_ERR_WRONG_TYPE, "wait_timeout_ms");
    CERR("{\"wait_timeout_ms\":1.5}", REQ_ERR_WRONG_TYPE, "wait_timeout_ms");
    CERR("{\"wait_timeout_ms\":null}", REQ_ERR_WRONG_TYPE, "wait_timeout_ms");
    CERR("{\"Wait\":true}", REQ_ERR_UNKNOWN_FIELD, "Wait");
    CERR("{\"wait\":true,\"timeout_ms\":5}", REQ_ERR_UNKNOWN_FIELD, "timeout_ms");
    CERR("{\"wait\":1,\"x\":2}", REQ_ERR_UNKNOWN_FIELD, "x"); /* keys are checked first */
    CERR("{", REQ_ERR_INVALID_JSON, "");
    CERR("[]", REQ_ERR_INVALID_JSON, "");
    CERR("null", REQ_ERR_INVALID_JSON, "");
    CERR("true", REQ_ERR_INVALID_JSON, "");
    CERR("{\"wait\":true,\"wait\":false}", REQ_ERR_INVALID_JSON, "");
    CERR("{} {}", REQ_ERR_INVALID_JSON, "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_minimal),
        cmocka_unit_test(test_full),
        cmocka_unit_test(test_payload_reserialized_compactly),
        cmocka_unit_test(test_payload_larger_than_the_parse_block),
        cmocka_unit_test(test_invalid_json),
        cmocka_unit_test(test_body_not_object),
        cmocka_unit_test(test_duplicate_keys),
        cmocka_unit_test(test_type),
        cmocka_unit_test(test_steps_missing_empty_not_array),
        cmocka_unit_test(test_step_not_object),
        cmocka_unit_test(test_missing_action_compensate),
        cmocka_unit_test(test_invalid_url),
        cmocka_unit_test(test_url_ok_callback),
        cmocka_unit_test(test_too_many_steps),
        cmocka_unit_test(test_unknown_fields),
        cmocka_unit_test(test_after),
        cmocka_unit_test(test_wrong_integer_types),
        cmocka_unit_test(test_out_of_range),
        cmocka_unit_test(test_max_below_initial),
        cmocka_unit_test(test_wait),
        cmocka_unit_test(test_gid),
        cmocka_unit_test(test_error_after_partial_fill),
        cmocka_unit_test(test_create_tcc_2pc),
        cmocka_unit_test(test_create_msg),
        cmocka_unit_test(test_branch_tcc),
        cmocka_unit_test(test_branch_2pc),
        cmocka_unit_test(test_create_with_branches),
        cmocka_unit_test(test_control),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
