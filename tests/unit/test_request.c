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
    .url_ok = NULL,
    .url_ok_arg = NULL,
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
    ERR("{\"type\":\"tcc\",\"steps\":[" STEP "]}", REQ_ERR_INVALID_TYPE, "type");
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

static int only_http_and_amqp(void *arg, const char *url)
{
    int *calls = arg;
    (*calls)++;
    return strncmp(url, "http://", 7) == 0 || strncmp(url, "amqp://", 7) == 0;
}

static void test_url_ok_callback(void **state)
{
    (void)state;
    int calls = 0;
    struct req_limits l = lim;
    l.url_ok = only_http_and_amqp;
    l.url_ok_arg = &calls;
    struct txn_spec *s =
        parse_ok("{\"type\":\"saga\",\"steps\":[{\"action\":\"amqp://ex/rk\",\"compensate\":"
                 "\"http://a/\"}]}",
                 &l);
    assert_string_equal(s->steps[0].action, "amqp://ex/rk");
    txn_spec_free(s);
    assert_int_equal(calls, 2);
    ERR_LIM("{\"type\":\"saga\",\"steps\":[{\"action\":\"https://a/\",\"compensate\":"
            "\"http://a/\"}]}",
            REQ_ERR_INVALID_URL, "steps[0].action", &l);
    /* the callback does not lift the basic checks, nor the host rule for http */
    ERR_LIM("{\"type\":\"saga\",\"steps\":[{\"action\":\"amqp://e x/rk\",\"compensate\":"
            "\"http://a/\"}]}",
            REQ_ERR_INVALID_URL, "steps[0].action", &l);
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_minimal),
        cmocka_unit_test(test_full),
        cmocka_unit_test(test_payload_reserialized_compactly),
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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
