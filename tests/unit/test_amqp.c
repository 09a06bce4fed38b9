/* test_amqp.c - amqp:// branch targets and broker URLs, and the transport's
 * refusals that need no broker. (Publishing is covered by
 * tests/integration/test_amqp.py against a real RabbitMQ.) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "common/err.h"
#include "transport/amqp.h"

static void test_target(void **state)
{
    (void)state;
    struct amqp_target t;
    assert_int_equal(amqp_target_parse("amqp://orders/order.created", &t), 0);
    assert_string_equal(t.exchange, "orders");
    assert_string_equal(t.routing_key, "order.created");
    /* the default exchange: the routing key is the queue */
    assert_int_equal(amqp_target_parse("amqp:///stock", &t), 0);
    assert_string_equal(t.exchange, "");
    assert_string_equal(t.routing_key, "stock");
    /* a fanout exchange needs no routing key */
    assert_int_equal(amqp_target_parse("amqp://events/", &t), 0);
    assert_string_equal(t.exchange, "events");
    assert_string_equal(t.routing_key, "");
    /* the routing key is everything after the first '/', percent-decoded */
    assert_int_equal(amqp_target_parse("amqp://ex/a/b", &t), 0);
    assert_string_equal(t.routing_key, "a/b");
    assert_int_equal(amqp_target_parse("amqp://my%2Fex/k%20ey", &t), 0);
    assert_string_equal(t.exchange, "my/ex");
    assert_string_equal(t.routing_key, "k ey");
}

static void test_bad_target(void **state)
{
    (void)state;
    struct amqp_target t;
    assert_int_equal(amqp_target_parse("http://x/y", &t), DTX_EINVAL);
    assert_int_equal(amqp_target_parse("amqp://exchange-only", &t), DTX_EINVAL);
    assert_int_equal(amqp_target_parse("amqp:///", &t), DTX_EINVAL); /* nowhere */
    assert_int_equal(amqp_target_parse("amqp://ex/%zz", &t), DTX_EINVAL);
    assert_int_equal(amqp_target_parse("amqp://ex/%2", &t), DTX_EINVAL);
    assert_int_equal(amqp_target_parse("amqp://ex/a%00b", &t), DTX_EINVAL);
    char url[600];
    snprintf(url, sizeof url, "amqp://%0*d/k", AMQP_EXCHANGE_MAX + 1, 0);
    assert_int_equal(amqp_target_parse(url, &t), DTX_EINVAL);
    snprintf(url, sizeof url, "amqp://%0*d/k", AMQP_EXCHANGE_MAX, 0);
    assert_int_equal(amqp_target_parse(url, &t), 0);
    snprintf(url, sizeof url, "amqp://ex/%0*d", AMQP_RKEY_MAX + 1, 0);
    assert_int_equal(amqp_target_parse(url, &t), DTX_EINVAL);
    snprintf(url, sizeof url, "amqp://ex/%0*d", AMQP_RKEY_MAX, 0);
    assert_int_equal(amqp_target_parse(url, &t), 0);
}

static void test_broker(void **state)
{
    (void)state;
    struct amqp_broker b;
    char err[256], where[600];
    assert_int_equal(
        amqp_broker_parse("amqp://dtx:s3cret@mq.example:5673/shop", &b, err, sizeof err), 0);
    assert_string_equal(b.host, "mq.example");
    assert_int_equal(b.port, 5673);
    assert_string_equal(b.user, "dtx");
    assert_string_equal(b.password, "s3cret");
    assert_string_equal(b.vhost, "shop");
    amqp_broker_describe(&b, where, sizeof where);
    assert_string_equal(where, "dtx@mq.example:5673/shop");
    assert_null(strstr(where, "s3cret"));
    /* rabbitmq-c's defaults, and %2f for the "/" vhost */
    assert_int_equal(amqp_broker_parse("amqp://", &b, err, sizeof err), 0);
    assert_string_equal(b.host, "localhost");
    assert_int_equal(b.port, 5672);
    assert_string_equal(b.user, "guest");
    assert_string_equal(b.vhost, "/");
    assert_int_equal(amqp_broker_parse("amqp://u:p@127.0.0.1:45999/%2f", &b, err, sizeof err), 0);
    assert_string_equal(b.vhost, "/");
    amqp_broker_describe(&b, where, sizeof where);
    assert_string_equal(where, "u@127.0.0.1:45999/");
}

static void test_bad_broker(void **state)
{
    (void)state;
    struct amqp_broker b;
    char err[256];
    assert_int_equal(amqp_broker_parse("http://h/", &b, err, sizeof err), DTX_EINVAL);
    assert_int_equal(amqp_broker_parse("amqp://u:topsecret@h:notaport/", &b, err, sizeof err),
                     DTX_EINVAL);
    assert_null(strstr(err, "topsecret"));
}

static void test_tls_broker(void **state)
{
    (void)state;
    struct amqp_broker b;
    char err[256], where[600];
    assert_int_equal(amqp_broker_parse("amqps://u:p@mq.example/", &b, err, sizeof err), 0);
    assert_int_equal(b.tls, 1);
    assert_int_equal(b.port, 5671); /* the AMQPS port */
    amqp_broker_describe(&b, where, sizeof where);
    assert_string_equal(where, "amqps://u@mq.example:5671/");
    assert_int_equal(amqp_broker_parse("amqp://u:p@mq.example/", &b, err, sizeof err), 0);
    assert_int_equal(b.tls, 0);
}

/* Configurations amqp_transport_new refuses before it starts anything. */
static void test_bad_config(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    char err[256];
    struct {
        struct amqp_config cfg;
        const char *says;
    } bad[] = {
        {{.url = NULL}, "no broker URL"},
        {{.url = "http://x/"}, "must be amqp://"},
        {{.url = "amqp://h/", .reply_queue = ""}, "reply queue name"},
        {{.url = "amqp://h/", .reply_queue = "amq.mine"}, "reply queue name"},
        {{.url = "amqp://h/", .cacert = "/etc/hostname"}, "needs an amqps://"},
        {{.url = "amqps://h/", .cert = "/etc/hostname"}, "needs its key"},
        {{.url = "amqps://h/", .key = "/etc/hostname"}, "needs its key"},
        {{.url = "amqps://h/", .cacert = "/nonexistent/ca.pem"}, "cannot read /nonexistent/ca.pem"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        assert_null(amqp_transport_new(&loop, &bad[i].cfg, err, sizeof err));
        if (strstr(err, bad[i].says) == NULL)
            fail_msg("case %zu: \"%s\" does not say \"%s\"", i, err, bad[i].says);
    }
    assert_int_equal(uv_run(&loop, UV_RUN_NOWAIT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static int parse(const char *nonce, const char *corr, const char *res, const char *body,
                 struct amqp_reply *r)
{
    return amqp_reply_parse(nonce, corr, strlen(corr), res, res ? strlen(res) : 0, body,
                            strlen(body), r);
}

static void test_reply_parse(void **state)
{
    (void)state;
    static const char nonce[] = "00ff00ff00ff00ff";
    struct amqp_reply r;
#define PARSE(corr, res, body) parse(nonce, corr, res, body, &r)
    assert_int_equal(PARSE("00ff00ff00ff00ff.42", "SUCCESS", ""), 0);
    assert_int_equal(r.seq, 42);
    assert_int_equal(r.outcome, CALL_SUCCESS);
    assert_int_equal(PARSE("00ff00ff00ff00ff.7", "FAILURE", "{\"reason\":\"short\"}"), 0);
    assert_int_equal(r.outcome, CALL_FAILURE);
    assert_string_equal(r.error, "the participant replied FAILURE: {\"reason\":\"short\"}");
    assert_int_equal(PARSE("00ff00ff00ff00ff.7", "ONGOING", ""), 0);
    assert_int_equal(r.outcome, CALL_ONGOING);
    /* a missing or unknown result is transient, never success or failure */
    assert_int_equal(PARSE("00ff00ff00ff00ff.7", NULL, ""), 0);
    assert_int_equal(r.outcome, CALL_TRANSIENT);
    assert_int_equal(PARSE("00ff00ff00ff00ff.7", "success", ""), 0);
    assert_int_equal(r.outcome, CALL_TRANSIENT);
    assert_int_equal(PARSE("00ff00ff00ff00ff.7", "SUCCESSFUL", ""), 0);
    assert_int_equal(r.outcome, CALL_TRANSIENT);
    /* a long FAILURE body is cut */
    char body[1000];
    memset(body, 'x', sizeof body - 1);
    body[sizeof body - 1] = '\0';
    assert_int_equal(PARSE("00ff00ff00ff00ff.7", "FAILURE", body), 0);
    assert_true(strlen(r.error) < AMQP_REPLY_TEXT_MAX + 40);
    /* not ours: another nonce, no number, junk, overflow */
    assert_int_equal(PARSE("11ff00ff00ff00ff.42", "SUCCESS", ""), DTX_ENOTFOUND);
    assert_int_equal(PARSE("00ff00ff00ff00ff.", "SUCCESS", ""), DTX_ENOTFOUND);
    assert_int_equal(PARSE("00ff00ff00ff00ff", "SUCCESS", ""), DTX_ENOTFOUND);
    assert_int_equal(PARSE("00ff00ff00ff00ff.4x", "SUCCESS", ""), DTX_ENOTFOUND);
    assert_int_equal(PARSE("00ff00ff00ff00ff-42", "SUCCESS", ""), DTX_ENOTFOUND);
    assert_int_equal(PARSE("00ff00ff00ff00ff.99999999999999999999", "SUCCESS", ""), DTX_ENOTFOUND);
    assert_int_equal(PARSE("", "SUCCESS", ""), DTX_ENOTFOUND);
#undef PARSE
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_target),      cmocka_unit_test(test_bad_target),
        cmocka_unit_test(test_broker),      cmocka_unit_test(test_bad_broker),
        cmocka_unit_test(test_tls_broker),  cmocka_unit_test(test_bad_config),
        cmocka_unit_test(test_reply_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
