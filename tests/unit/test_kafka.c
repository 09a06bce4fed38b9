/* test_kafka.c - kafka:// targets, the producer's configuration, and
 * deliveries against librdkafka's mock cluster (rdkafka_mock.h: a Kafka
 * protocol implementation inside this process, on loopback TCP): success
 * with key and headers read back by a real consumer, an injected Produce
 * error, a broker down then up, message.timeout.ms, queue full, an unknown
 * topic, refused operations and free() with deliveries in flight. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "common/err.h"
#include "transport/kafka.h"

#define PRODUCE 0 /* the Produce request's ApiKey */

static void test_target(void **state)
{
    (void)state;
    struct kafka_target t;
    assert_int_equal(kafka_target_parse("kafka://orders", &t), 0);
    assert_string_equal(t.topic, "orders");
    assert_int_equal(kafka_target_parse("kafka://shop.order-created_v2", &t), 0);
    assert_string_equal(t.topic, "shop.order-created_v2");
    assert_int_equal(kafka_target_parse("kafka://...x", &t), 0);
    char url[300];
    snprintf(url, sizeof url, "kafka://%0*d", KAFKA_TOPIC_MAX, 0);
    assert_int_equal(kafka_target_parse(url, &t), 0);
    assert_int_equal(strlen(t.topic), KAFKA_TOPIC_MAX);
}

static void test_bad_target(void **state)
{
    (void)state;
    struct kafka_target t;
    const char *bad[] = {
        "http://x/y",    "kafka://",       "kafka://.",      "kafka://..",    "kafka://a/b",
        "kafka://a b",   "kafka://a%2Fb",  "kafka://t?x=1",  "kafka:/orders", "amqp:///orders",
        "kafka://ördrs", "kafka://a:9092", "KAFKA://orders", "kafka://a#b",   "kafka://orders/",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (kafka_target_parse(bad[i], &t) != DTX_EINVAL)
            fail_msg("accepted %s", bad[i]);
    }
    char url[300];
    snprintf(url, sizeof url, "kafka://%0*d", KAFKA_TOPIC_MAX + 1, 0);
    assert_int_equal(kafka_target_parse(url, &t), DTX_EINVAL);
}

static void test_config_refused(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    char err[512];
    struct kafka_config c = {.brokers = "127.0.0.1:1"};
    /* what dtxd fixes cannot be changed */
    const char *fixed[] = {"acks", "enable.idempotence", "bootstrap.servers", "transactional.id"};
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) {
        struct kafka_option o = {fixed[i], "1"};
        c.options = &o;
        c.noptions = 1;
        assert_null(kafka_transport_new(&loop, &c, err, sizeof err));
        assert_non_null(strstr(err, fixed[i]));
    }
    /* librdkafka's own refusal names the property, never the value */
    struct kafka_option o = {"security.protocol", "TOPSECRET-value"};
    c.options = &o;
    c.noptions = 1;
    assert_null(kafka_transport_new(&loop, &c, err, sizeof err));
    assert_non_null(strstr(err, "security.protocol"));
    assert_null(strstr(err, "TOPSECRET"));
    struct kafka_option unknown = {"no.such.property", "x"};
    c.options = &unknown;
    assert_null(kafka_transport_new(&loop, &c, err, sizeof err));
    assert_non_null(strstr(err, "no.such.property"));
    c.noptions = 0;
    c.brokers = "";
    assert_null(kafka_transport_new(&loop, &c, err, sizeof err));
    assert_int_equal(uv_run(&loop, UV_RUN_NOWAIT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* ---- against the mock cluster ------------------------------------------------ */

struct fixture {
    uv_loop_t loop;
    rd_kafka_t *host; /* hosts the mock cluster */
    rd_kafka_mock_cluster_t *mc;
    char brokers[256];
    struct transport *tp;
};

struct answer {
    int calls; /* times the callback ran */
    enum call_outcome outcome;
    char error[512];
};

static void on_done(void *arg, const struct call_result *res)
{
    struct answer *a = arg;
    a->calls++;
    a->outcome = res->outcome;
    snprintf(a->error, sizeof a->error, "%s", res->error ? res->error : "");
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    uv_loop_init(&f->loop);
    char errstr[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "log_level", "0", errstr, sizeof errstr);
    f->host = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    assert_non_null(f->host);
    f->mc = rd_kafka_mock_cluster_new(f->host, 1);
    assert_non_null(f->mc);
    snprintf(f->brokers, sizeof f->brokers, "%s", rd_kafka_mock_cluster_bootstraps(f->mc));
    *state = f;
    return 0;
}

static void stop_transport(struct fixture *f)
{
    if (f->tp != NULL) {
        f->tp->ops->free(f->tp);
        f->tp = NULL;
    }
    uv_run(&f->loop, UV_RUN_DEFAULT); /* the transport's handles close */
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    stop_transport(f);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    rd_kafka_mock_cluster_destroy(f->mc);
    rd_kafka_destroy(f->host);
    free(f);
    return 0;
}

static void start_transport(struct fixture *f, uint32_t message_timeout_ms,
                            const struct kafka_option *opts, size_t n)
{
    char err[512];
    struct kafka_config c = {.brokers = f->brokers,
                             .options = opts,
                             .noptions = n,
                             .message_timeout_ms = message_timeout_ms};
    f->tp = kafka_transport_new(&f->loop, &c, err, sizeof err);
    if (f->tp == NULL)
        fail_msg("kafka_transport_new: %s", err);
}

static void on_tick(uv_timer_t *t)
{
    (void)t;
}

/* Run the loop until a has been answered, at most ms. */
static void wait_answer(struct fixture *f, struct answer *a, int ms)
{
    uv_timer_t tick;
    uv_timer_init(&f->loop, &tick);
    uv_timer_start(&tick, on_tick, 10, 10);
    uint64_t end = uv_now(&f->loop) + (uint64_t)ms;
    while (a->calls == 0 && uv_now(&f->loop) < end)
        uv_run(&f->loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&tick, NULL);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    if (a->calls == 0)
        fail_msg("no answer within %d ms", ms);
    assert_int_equal(a->calls, 1);
}

/* Start a msg delivery of body to url, as branch. */
static void deliver(struct fixture *f, const char *url, const char *gid, const char *branch,
                    const char *body, uint32_t timeout_ms, struct answer *a)
{
    struct call_req req = {
        .url = url,
        .gid = gid,
        .branch = branch,
        .op = "action",
        .txn_type = "msg",
        .traceparent = "00-0123456789abcdef0123456789abcdef-0123456789abcdef-01",
        .body = body,
        .body_len = strlen(body),
        .timeout_ms = timeout_ms,
    };
    memset(a, 0, sizeof *a);
    assert_int_equal(f->tp->ops->call(f->tp, &req, on_done, a), 0);
    assert_int_equal(a->calls, 0); /* never answered inside call() */
}

struct record {
    char key[128], value[256];
    char hdr[6][2][160]; /* name, value */
    int nhdr;
};

/* Read every record of partition 0 of topic with a real consumer. */
static int consume(struct fixture *f, const char *topic, struct record *out, int max)
{
    char errstr[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", f->brokers, errstr, sizeof errstr);
    rd_kafka_conf_set(conf, "group.id", "test", errstr, sizeof errstr);
    rd_kafka_conf_set(conf, "enable.partition.eof", "true", errstr, sizeof errstr);
    rd_kafka_conf_set(conf, "log_level", "0", errstr, sizeof errstr);
    rd_kafka_t *c = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
    assert_non_null(c);
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(parts, topic, 0)->offset = RD_KAFKA_OFFSET_BEGINNING;
    assert_int_equal(rd_kafka_assign(c, parts), 0);
    rd_kafka_topic_partition_list_destroy(parts);
    int n = 0;
    for (int waited = 0; waited < 100;) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c, 100);
        if (m == NULL) {
            waited++;
            continue;
        }
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            rd_kafka_message_destroy(m);
            break;
        }
        assert_int_equal(m->err, 0);
        assert_true(n < max);
        struct record *r = &out[n++];
        memset(r, 0, sizeof *r);
        snprintf(r->key, sizeof r->key, "%.*s", (int)m->key_len, (const char *)m->key);
        snprintf(r->value, sizeof r->value, "%.*s", (int)m->len, (const char *)m->payload);
        rd_kafka_headers_t *h = NULL;
        if (rd_kafka_message_headers(m, &h) == 0) {
            const char *name;
            const void *val;
            size_t sz;
            for (size_t i = 0; r->nhdr < 6 && rd_kafka_header_get_all(h, i, &name, &val, &sz) == 0;
                 i++, r->nhdr++) {
                snprintf(r->hdr[r->nhdr][0], sizeof r->hdr[0][0], "%s", name);
                snprintf(r->hdr[r->nhdr][1], sizeof r->hdr[0][1], "%.*s", (int)sz,
                         (const char *)val);
            }
        }
        rd_kafka_message_destroy(m);
    }
    rd_kafka_consumer_close(c);
    rd_kafka_destroy(c);
    return n;
}

static const char *header(const struct record *r, const char *name)
{
    for (int i = 0; i < r->nhdr; i++)
        if (strcmp(r->hdr[i][0], name) == 0)
            return r->hdr[i][1];
    return NULL;
}

/* Deliver until it succeeds (at most ~10 s), as the engine would retry. */
static void retry_until_delivered(struct fixture *f, const char *url, const char *gid,
                                  const char *branch, struct answer *a)
{
    for (int tries = 0; tries < 50; tries++) {
        deliver(f, url, gid, branch, "{}", 10000, a);
        wait_answer(f, a, 15000);
        if (a->outcome == CALL_SUCCESS)
            return;
        usleep(200000);
    }
    fail_msg("not delivered: %s", a->error);
}

static void test_delivered(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(rd_kafka_mock_topic_create(f->mc, "orders", 1, 1), 0);
    start_transport(f, 0, NULL, 0);
    struct answer a;
    deliver(f, "kafka://orders", "g-1", "1", "{\"i\":1}", 5000, &a);
    wait_answer(f, &a, 10000);
    assert_int_equal(a.outcome, CALL_SUCCESS);
    deliver(f, "kafka://orders", "g-1", "2", "{\"i\":2}", 5000, &a);
    wait_answer(f, &a, 10000);
    assert_int_equal(a.outcome, CALL_SUCCESS);
    struct record r[4];
    assert_int_equal(consume(f, "orders", r, 4), 2);
    for (int i = 0; i < 2; i++) {
        char want[64];
        assert_string_equal(r[i].key, "g-1");
        snprintf(want, sizeof want, "{\"i\":%d}", i + 1);
        assert_string_equal(r[i].value, want);
        assert_int_equal(r[i].nhdr, 6);
        assert_string_equal(header(&r[i], "Dtx-Gid"), "g-1");
        snprintf(want, sizeof want, "%d", i + 1);
        assert_string_equal(header(&r[i], "Dtx-Branch"), want);
        assert_string_equal(header(&r[i], "Dtx-Op"), "action");
        assert_string_equal(header(&r[i], "Dtx-Type"), "msg");
        snprintf(want, sizeof want, "g-1/%d/action", i + 1);
        assert_string_equal(header(&r[i], "Dtx-Message-Id"), want);
        assert_string_equal(header(&r[i], "traceparent"),
                            "00-0123456789abcdef0123456789abcdef-0123456789abcdef-01");
    }
}

/* Retriable Produce errors are retried inside the idempotent producer:
 * one success, one record. A permanent one is TRANSIENT for the engine,
 * and the next delivery goes through. */
static void test_injected_errors(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(rd_kafka_mock_topic_create(f->mc, "inj", 1, 1), 0);
    start_transport(f, 0, NULL, 0);
    rd_kafka_mock_push_request_errors(f->mc, PRODUCE, 3, RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
                                      RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
                                      RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT);
    struct answer a;
    deliver(f, "kafka://inj", "g-2", "1", "{}", 10000, &a);
    wait_answer(f, &a, 15000);
    assert_int_equal(a.outcome, CALL_SUCCESS);

    rd_kafka_mock_push_request_errors(f->mc, PRODUCE, 1,
                                      RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED);
    deliver(f, "kafka://inj", "g-2", "2", "{}", 10000, &a);
    wait_answer(f, &a, 15000);
    assert_int_equal(a.outcome, CALL_TRANSIENT);
    assert_non_null(strstr(a.error, "kafka topic \"inj\""));
    assert_non_null(strstr(a.error, "TOPIC_AUTHORIZATION_FAILED"));

    /* the topic may stay in error until librdkafka refreshes its metadata */
    retry_until_delivered(f, "kafka://inj", "g-2", "2", &a);
    struct record r[8];
    int n = consume(f, "inj", r, 8);
    assert_int_equal(n, 2); /* the retried one once, the refused one not at all */
    assert_string_equal(header(&r[0], "Dtx-Message-Id"), "g-2/1/action");
    assert_string_equal(header(&r[1], "Dtx-Message-Id"), "g-2/2/action");
}

/* The broker goes down: the call's own timeout answers TRANSIENT; once it
 * is back the retry is delivered, and the record abandoned at its deadline
 * is still delivered, first (the idempotent producer keeps the order). */
static void test_broker_down_then_up(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(rd_kafka_mock_topic_create(f->mc, "down", 1, 1), 0);
    start_transport(f, 60000, NULL, 0);
    struct answer a;
    deliver(f, "kafka://down", "g-3", "1", "{\"n\":0}", 5000, &a); /* connected */
    wait_answer(f, &a, 10000);
    assert_int_equal(a.outcome, CALL_SUCCESS);
    assert_int_equal(rd_kafka_mock_broker_set_down(f->mc, 1), 0);
    deliver(f, "kafka://down", "g-3", "2", "{\"n\":1}", 700, &a);
    wait_answer(f, &a, 5000);
    assert_int_equal(a.outcome, CALL_TRANSIENT);
    assert_non_null(strstr(a.error, "no delivery report within 700 ms"));
    assert_int_equal(rd_kafka_mock_broker_set_up(f->mc, 1), 0);
    deliver(f, "kafka://down", "g-3", "2", "{\"n\":2}", 10000, &a);
    wait_answer(f, &a, 15000);
    assert_int_equal(a.outcome, CALL_SUCCESS);
    struct record r[8];
    assert_int_equal(consume(f, "down", r, 8), 3);
    assert_string_equal(r[0].value, "{\"n\":0}");
    assert_string_equal(r[1].value, "{\"n\":1}"); /* the abandoned one, not lost */
    assert_string_equal(r[2].value, "{\"n\":2}");
    assert_string_equal(header(&r[1], "Dtx-Message-Id"), header(&r[2], "Dtx-Message-Id"));
}

/* message.timeout.ms shorter than the call's timeout: librdkafka's own
 * report says it timed out. The first delivery only connects the producer;
 * on a loaded machine that alone can outlast the short message timeout, so
 * it is retried until it gets through. */
static void test_message_timeout(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(rd_kafka_mock_topic_create(f->mc, "late", 1, 1), 0);
    start_transport(f, 1000, NULL, 0);
    struct answer a;
    retry_until_delivered(f, "kafka://late", "g-4", "1", &a);
    assert_int_equal(rd_kafka_mock_broker_set_down(f->mc, 1), 0);
    deliver(f, "kafka://late", "g-4", "2", "{}", 10000, &a);
    wait_answer(f, &a, 9000);
    assert_int_equal(a.outcome, CALL_TRANSIENT);
    if (strstr(a.error, "message.timeout.ms") == NULL)
        fail_msg("%s", a.error);
    assert_non_null(strstr(a.error, "kafka topic \"late\""));
}

/* The local queue holds one record: the second is refused at once. */
static void test_queue_full(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(rd_kafka_mock_broker_set_down(f->mc, 1), 0);
    struct kafka_option o = {"queue.buffering.max.messages", "1"};
    start_transport(f, 60000, &o, 1);
    struct answer a, b;
    deliver(f, "kafka://full", "g-5", "1", "{}", 60000, &a);
    deliver(f, "kafka://full", "g-6", "1", "{}", 60000, &b);
    wait_answer(f, &b, 2000);
    assert_int_equal(b.outcome, CALL_TRANSIENT);
    assert_non_null(strstr(b.error, "queue is full"));
    assert_int_equal(a.calls, 0);
    /* teardown frees the transport with a in flight: no callback, no leak */
}

static void test_unknown_topic(void **state)
{
    struct fixture *f = *state;
    rd_kafka_mock_topic_set_error(f->mc, "missing", RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART);
    struct kafka_option o = {"topic.metadata.propagation.max.ms", "200"};
    start_transport(f, 60000, &o, 1);
    struct answer a;
    deliver(f, "kafka://missing", "g-7", "1", "{}", 10000, &a);
    wait_answer(f, &a, 8000);
    assert_int_equal(a.outcome, CALL_TRANSIENT);
    assert_non_null(strstr(a.error, "kafka topic \"missing\" does not exist"));
}

/* An old producer epoch is refused by the broker: TRANSIENT, and the
 * next delivery goes through. */
static void test_producer_epoch_error(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(rd_kafka_mock_topic_create(f->mc, "epoch", 1, 1), 0);
    start_transport(f, 0, NULL, 0);
    struct answer a;
    deliver(f, "kafka://epoch", "g-10", "1", "{}", 10000, &a);
    wait_answer(f, &a, 15000);
    assert_int_equal(a.outcome, CALL_SUCCESS);
    rd_kafka_mock_push_request_errors(f->mc, PRODUCE, 1, RD_KAFKA_RESP_ERR_INVALID_PRODUCER_EPOCH);
    deliver(f, "kafka://epoch", "g-10", "2", "{}", 10000, &a);
    wait_answer(f, &a, 15000);
    assert_int_equal(a.outcome, CALL_TRANSIENT);
    assert_non_null(strstr(a.error, "INVALID_PRODUCER_EPOCH"));
    retry_until_delivered(f, "kafka://epoch", "g-10", "2", &a);
}

/* A fatal error of the idempotent producer (raised by librdkafka's own
 * test hook): what was in flight is answered TRANSIENT, a new producer is
 * made, and the next delivery goes through. */
static void test_fatal_error_resets(void **state)
{
    struct fixture *f = *state;
    start_transport(f, 60000, NULL, 0);
    struct answer a;
    deliver(f, "kafka://fatal", "g-11", "1", "{}", 10000, &a);
    wait_answer(f, &a, 15000);
    assert_int_equal(a.outcome, CALL_SUCCESS);
    /* the broker holds its answer 3 s: the record is in flight */
    assert_int_equal(rd_kafka_mock_broker_set_rtt(f->mc, 1, 3000), 0);
    deliver(f, "kafka://fatal", "g-11", "2", "{}", 10000, &a);
    usleep(300000);
    assert_int_equal(kafka_transport_inject_fatal(f->tp, "injected by the test"), 0);
    wait_answer(f, &a, 2500);
    assert_int_equal(a.outcome, CALL_TRANSIENT);
    if (strstr(a.error, "reset after a fatal error") == NULL)
        fail_msg("%s", a.error);
    assert_non_null(strstr(a.error, "injected by the test"));
    assert_int_equal(rd_kafka_mock_broker_set_rtt(f->mc, 1, 0), 0);
    retry_until_delivered(f, "kafka://fatal", "g-11", "2", &a);
}

/* Only msg actions: anything else is answered TRANSIENT, from the loop. */
static void test_only_msg_actions(void **state)
{
    struct fixture *f = *state;
    start_transport(f, 0, NULL, 0);
    struct call_req req = {.url = "kafka://orders",
                           .gid = "g-8",
                           .branch = "1",
                           .op = "compensate",
                           .txn_type = "saga",
                           .body = "{}",
                           .body_len = 2,
                           .timeout_ms = 1000};
    struct answer a = {0};
    assert_int_equal(f->tp->ops->call(f->tp, &req, on_done, &a), 0);
    assert_int_equal(a.calls, 0);
    wait_answer(f, &a, 2000);
    assert_int_equal(a.outcome, CALL_TRANSIENT);
    assert_non_null(strstr(a.error, "msg deliveries only"));
    req.url = "kafka://a/b";
    assert_int_equal(f->tp->ops->call(f->tp, &req, on_done, &a), DTX_EINVAL);
}

/* free() with deliveries in flight and refusals waiting: no callback. */
static void test_free_abandons(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(rd_kafka_mock_broker_set_down(f->mc, 1), 0);
    start_transport(f, 60000, NULL, 0);
    struct answer a[20];
    for (int i = 0; i < 20; i++) {
        char gid[16];
        snprintf(gid, sizeof gid, "g-9-%d", i);
        deliver(f, "kafka://gone", gid, "1", "{}", 60000, &a[i]);
    }
    struct call_req req = {.url = "kafka://gone",
                           .gid = "g-9",
                           .branch = "1",
                           .op = "cancel",
                           .txn_type = "tcc",
                           .timeout_ms = 1000};
    struct answer refused = {0};
    assert_int_equal(f->tp->ops->call(f->tp, &req, on_done, &refused), 0);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    stop_transport(f);
    for (int i = 0; i < 20; i++)
        assert_int_equal(a[i].calls, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_target),
        cmocka_unit_test(test_bad_target),
        cmocka_unit_test(test_config_refused),
        cmocka_unit_test_setup_teardown(test_delivered, setup, teardown),
        cmocka_unit_test_setup_teardown(test_injected_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_broker_down_then_up, setup, teardown),
        cmocka_unit_test_setup_teardown(test_message_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_full, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_topic, setup, teardown),
        cmocka_unit_test_setup_teardown(test_producer_epoch_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fatal_error_resets, setup, teardown),
        cmocka_unit_test_setup_teardown(test_only_msg_actions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_abandons, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
