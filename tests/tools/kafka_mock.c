/*
 * kafka_mock.c - a Kafka cluster for tests: librdkafka's mock cluster
 * (rdkafka_mock.h) in a process of its own, so that the real dtxd and kcat
 * can talk to it over TCP like to any Kafka.
 *
 *   kafka_mock [BROKERS]     (default 1 broker)
 *
 * prints the bootstrap servers ("127.0.0.1:port,...") as its first line on
 * stdout, then reads commands, one a line, on stdin and answers each with
 * "ok" or "error <why>" on stdout:
 *
 *   down <broker-id|-1>       the broker (-1: every broker) drops its
 *                             connections and refuses new ones
 *   up <broker-id|-1>         it accepts connections again
 *   produce-errors <n> <err>  the next n Produce requests fail with Kafka
 *                             error code <err> (e.g. 6 NOT_LEADER...)
 *   topic <name> <partitions> create a topic
 *
 * It runs until SIGTERM/SIGINT (stdin at EOF just stops the commands).
 * The mock keeps everything in memory; it is not a Kafka broker (see
 * docs/API.md "kafka:// targets" for what was tested with it).
 */
#include <errno.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

static void command(rd_kafka_mock_cluster_t *mc, char *line)
{
    char what[32], arg[256];
    int a = 0, b = 0;
    rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;
    if (sscanf(line, "%31s %d", what, &a) == 2 && strcmp(what, "down") == 0)
        err = rd_kafka_mock_broker_set_down(mc, a);
    else if (sscanf(line, "%31s %d", what, &a) == 2 && strcmp(what, "up") == 0)
        err = rd_kafka_mock_broker_set_up(mc, a);
    else if (sscanf(line, "%31s %d %d", what, &a, &b) == 3 && strcmp(what, "produce-errors") == 0 &&
             a > 0) {
        rd_kafka_resp_err_t *errs = calloc((size_t)a, sizeof *errs);
        for (int i = 0; i < a; i++)
            errs[i] = (rd_kafka_resp_err_t)b;
        rd_kafka_mock_push_request_errors_array(mc, 0 /* Produce */, (size_t)a, errs);
        free(errs);
    } else if (sscanf(line, "%31s %255s %d", what, arg, &a) == 3 && strcmp(what, "topic") == 0)
        err = rd_kafka_mock_topic_create(mc, arg, a, 1);
    else {
        printf("error unknown command\n");
        fflush(stdout);
        return;
    }
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
        printf("error %s\n", rd_kafka_err2str(err));
    else
        printf("ok\n");
    fflush(stdout);
}

int main(int argc, char **argv)
{
    int brokers = argc > 1 ? atoi(argv[1]) : 1;
    if (brokers < 1 || brokers > 9) {
        fprintf(stderr, "usage: kafka_mock [BROKERS 1-9]\n");
        return 2;
    }
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    /* the handle only hosts the cluster; quiet about its own connections */
    rd_kafka_conf_set(conf, "log_level", "3", errstr, sizeof errstr);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    if (rk == NULL) {
        fprintf(stderr, "kafka_mock: %s\n", errstr);
        return 1;
    }
    rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(rk, brokers);
    if (mc == NULL) {
        fprintf(stderr, "kafka_mock: cannot start the mock cluster\n");
        rd_kafka_destroy(rk);
        return 1;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    printf("%s\n", rd_kafka_mock_cluster_bootstraps(mc));
    fflush(stdout);
    char line[512];
    while (!stop) {
        if (fgets(line, sizeof line, stdin) == NULL) {
            if (errno == EINTR && !stop) {
                clearerr(stdin);
                continue;
            }
            break;
        }
        command(mc, line);
    }
    while (!stop)
        pause();
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(rk);
    return 0;
}
