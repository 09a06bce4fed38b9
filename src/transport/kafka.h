/*
 * kafka.h - msg deliveries to Kafka (librdkafka), DESIGN §2 "Kafka".
 *
 * A target "kafka://<topic>" produces the step's payload to that topic. The
 * topic is a Kafka topic name: 1 to 249 bytes of [A-Za-z0-9._-], not "." or
 * "..". The record has key = gid and headers Dtx-Gid, Dtx-Branch, Dtx-Op,
 * Dtx-Type, Dtx-Message-Id (= gid/branch/op, what consumers de-duplicate
 * on, like AMQP's message_id) and traceparent when the call has one.
 *
 * The producer is idempotent (enable.idempotence=true, so acks=all, at most
 * 5 requests in flight and retries that keep order and make no duplicates
 * inside one producer session). The key picks the partition, so one
 * transaction's records land in one partition, and the engine hands this
 * transport one step of a transaction at a time, after the previous one
 * succeeded: a transaction's records are in step order. Outcomes:
 *
 *   delivery report, no error     SUCCESS: every in-sync replica has it
 *   delivery report with an error  TRANSIENT (message.timeout.ms passed,
 *                                  the topic does not exist, the broker
 *                                  refused the record, ...)
 *   produce refused at once        TRANSIENT (local queue full, fatal
 *                                  producer error, ...)
 *   no report within the call's    TRANSIENT ("no delivery report within
 *   timeout_ms                     N ms"); the record may still arrive
 *                                  later: a retry produces it again, with
 *                                  the same Dtx-Message-Id
 *
 * Only the "action" of a msg transaction is served; anything else fails
 * TRANSIENT with "kafka targets serve msg deliveries only" (the API refuses
 * such URLs when the request comes in; this guards old logs).
 *
 * Threads: none of ours. librdkafka has its own threads for the network
 * and hands its events (delivery reports, errors, its log lines) to the
 * main queue of the producer. That queue is made to write to an eventfd
 * (rd_kafka_queue_io_event_enable) whenever it goes from empty to not
 * empty; a uv_poll on the loop watches the eventfd and then serves the
 * queue with rd_kafka_poll(rk, 0), which never blocks. So every callback
 * of librdkafka, and every one of ours, runs on the loop thread, and a
 * delivery report is acted on as soon as it exists (a uv_timer polling the
 * queue would be simpler still, but adds its period to every delivery and
 * wakes an idle daemon for nothing). One uv_timer fires at the earliest
 * call deadline; another answers, from the loop, the calls refused inside
 * call() (callbacks never run inside call()).
 *
 * A fatal producer error (the idempotent producer lost its guarantees)
 * makes the producer unusable: the transport drops it, answers what it had
 * in flight TRANSIENT and makes a new one.
 *
 * Configuration: bootstrap servers, plus any librdkafka property
 * (security.protocol, sasl.*, ssl.*, linger.ms, ...) except those dtxd
 * fixes: enable.idempotence, acks, bootstrap.servers, transactional.id.
 * Values are never logged (sasl.password, ssl.key.password): the log shows
 * the brokers and the names of the properties set.
 */
#ifndef DTX_KAFKA_H
#define DTX_KAFKA_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "transport/transport.h"

#define KAFKA_SCHEME    "kafka"
#define KAFKA_TOPIC_MAX 249 /* Kafka's own limit */

struct kafka_target {
    char topic[KAFKA_TOPIC_MAX + 1];
};

/* Parse a branch target "kafka://<topic>" into *out. Returns 0 or
 * DTX_EINVAL (not kafka://, an empty or too long name, "." or "..", a byte
 * outside [A-Za-z0-9._-]). No I/O. */
int kafka_target_parse(const char *url, struct kafka_target *out /* OUT */);

struct kafka_option {
    const char *key, *value; /* a librdkafka property, e.g. "sasl.mechanism" */
};

struct kafka_config {
    const char *brokers; /* bootstrap servers, "host:port,host:port" */
    const struct kafka_option *options;
    size_t noptions;
    /* librdkafka's message.timeout.ms unless an option sets it: how long
     * the producer keeps trying one record. 0 = librdkafka's default. */
    uint32_t message_timeout_ms;
};

/*
 * Create the transport (scheme "kafka"): a producer for the cluster that
 * connects in the background. Returns NULL with a message in err (never a
 * property's value) when the configuration is refused. cfg and its strings
 * are copied.
 */
struct transport *kafka_transport_new(uv_loop_t *loop, const struct kafka_config *cfg, char *err,
                                      size_t errlen);

/* Test hook: make the producer raise a fatal error as librdkafka would
 * (rd_kafka_test_fatal_error), to exercise the reset. Returns 0 or
 * DTX_ESTATE. */
int kafka_transport_inject_fatal(struct transport *t, const char *reason);

#endif
