/*
 * kafka.c - the Kafka transport (see kafka.h).
 *
 * Everything here runs on the loop thread; librdkafka's threads only ever
 * write to the eventfd. A struct delivery lives from call() until both
 * (a) its caller has been answered (cb set to NULL) and (b) librdkafka is
 * done with it (its delivery report served, or the producer destroyed):
 *
 *   outstanding   doubly linked, every delivery librdkafka holds (its
 *                 opaque is the struct), answered or not
 *   ready         settled deliveries waiting to be answered from the loop:
 *                 refused inside call(), or reported while rd_kafka_poll
 *                 ran (answering after the poll returns keeps callbacks,
 *                 which may start the next call, out of librdkafka's)
 *
 * When the call's deadline passes first, the caller is answered TRANSIENT
 * and the delivery stays outstanding until its report comes, then is
 * freed without a word. free() abandons: every caller is forgotten, the
 * producer's queues are purged (librdkafka then reports every record as
 * purged, which frees it) and the producer destroyed. free() and the reset
 * after a fatal error hold the loop while rd_kafka_destroy joins
 * librdkafka's threads (milliseconds; the purge leaves nothing to wait for).
 */
#include "transport/kafka.h"

#include <errno.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "common/err.h"
#include "common/slog.h"

#define ERR_MAX        512
#define PURGE_WAIT_MS  2000 /* free: how long the purged reports may take */
#define MESSAGE_ID_MAX 512

static const char only_msg[] = "kafka targets serve msg deliveries only";

/* Properties dtxd sets itself and does not let an option change. */
static const char *const fixed_keys[] = {
    "enable.idempotence",    "acks",
    "request.required.acks", "bootstrap.servers",
    "metadata.broker.list",  "transactional.id",
};

struct delivery {
    struct delivery *prev, *next; /* outstanding */
    struct delivery *rnext;       /* ready */
    int outstanding;              /* librdkafka holds it */
    struct kafka_target to;
    char message_id[MESSAGE_ID_MAX];
    uint64_t deadline_ms; /* monotonic */
    uint32_t timeout_ms;
    call_done_fn cb; /* NULL once answered or abandoned */
    void *arg;
    enum call_outcome outcome;
    char error[ERR_MAX];
};

struct kafka_tp {
    struct transport base;
    uv_loop_t *loop;
    char *brokers;
    struct kafka_option *options; /* copies */
    size_t noptions;
    uint32_t message_timeout_ms;
    rd_kafka_t *rk;
    rd_kafka_queue_t *mainq;
    int efd; /* eventfd: librdkafka's main queue has events */
    uv_poll_t io;
    uv_timer_t deadline; /* the earliest call deadline */
    uv_timer_t soon;     /* answers the ready list */
    int handles_open;    /* uv handles not closed yet */
    int fatal;           /* the producer raised a fatal error: make a new one */
    int closing;
    struct delivery *outstanding;
    struct delivery *ready_head, *ready_tail;
    char last_error[256];    /* the producer's last error event, for answers */
    char purge_why[ERR_MAX]; /* what a purged record's answer says */
    uint64_t armed_at;       /* the deadline timer's time, when active */
};

/* ---- names ------------------------------------------------------------- */

int kafka_target_parse(const char *url, struct kafka_target *out)
{
    static const char prefix[] = KAFKA_SCHEME "://";
    if (strncmp(url, prefix, sizeof prefix - 1) != 0)
        return DTX_EINVAL;
    const char *name = url + sizeof prefix - 1;
    size_t n = strlen(name);
    if (n == 0 || n > KAFKA_TOPIC_MAX || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
        return DTX_EINVAL;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return DTX_EINVAL;
    }
    memcpy(out->topic, name, n + 1);
    return 0;
}

/* ---- deliveries ------------------------------------------------------------ */

static void settle(struct delivery *d, enum call_outcome outcome, const char *error)
{
    d->outcome = outcome;
    snprintf(d->error, sizeof d->error, "%s", error != NULL ? error : "");
}

static void link_outstanding(struct kafka_tp *t, struct delivery *d)
{
    d->prev = NULL;
    d->next = t->outstanding;
    if (t->outstanding)
        t->outstanding->prev = d;
    t->outstanding = d;
    d->outstanding = 1;
}

static void unlink_outstanding(struct kafka_tp *t, struct delivery *d)
{
    if (d->prev)
        d->prev->next = d->next;
    else
        t->outstanding = d->next;
    if (d->next)
        d->next->prev = d->prev;
    d->prev = d->next = NULL;
    d->outstanding = 0;
}

/* Queue a settled delivery for its answer (it is not outstanding). */
static void push_ready(struct kafka_tp *t, struct delivery *d)
{
    d->rnext = NULL;
    if (t->ready_tail)
        t->ready_tail->rnext = d;
    else
        t->ready_head = d;
    t->ready_tail = d;
}

/* Run d's callback once; d stays where it is. */
static void answer(struct delivery *d)
{
    call_done_fn cb = d->cb;
    if (cb == NULL)
        return;
    d->cb = NULL;
    struct call_result res = {
        .outcome = d->outcome,
        .status = 0,
        .error = d->outcome == CALL_SUCCESS ? NULL : d->error,
    };
    if (d->outcome != CALL_SUCCESS)
        slog_debug("kafka delivery failed", "message_id=%s err=\"%s\"", d->message_id, d->error);
    cb(d->arg, &res);
}

/* Answer and free every delivery of the ready list (callbacks may call()
 * again, which may add to the list: take it first). */
static void run_ready(struct kafka_tp *t)
{
    while (t->ready_head != NULL) {
        struct delivery *d = t->ready_head;
        t->ready_head = NULL;
        t->ready_tail = NULL;
        while (d != NULL) {
            struct delivery *next = d->rnext;
            answer(d);
            free(d);
            d = next;
        }
    }
}

/* ---- librdkafka's callbacks (on the loop thread, inside rd_kafka_poll) ---- */

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    struct kafka_tp *t = opaque;
    struct delivery *d = m->_private;
    if (d == NULL)
        return;
    unlink_outstanding(t, d);
    if (d->cb == NULL) { /* answered at its deadline, or abandoned */
        free(d);
        return;
    }
    rd_kafka_resp_err_t e = m->err;
    char why[ERR_MAX];
    if (e == RD_KAFKA_RESP_ERR_NO_ERROR) {
        settle(d, CALL_SUCCESS, NULL);
        t->last_error[0] = '\0';
    } else if (e == RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC ||
               e == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) {
        snprintf(why, sizeof why,
                 "kafka topic \"%.100s\" does not exist and the cluster did not create it (%s)",
                 d->to.topic, rd_kafka_err2name(e));
        settle(d, CALL_TRANSIENT, why);
    } else if (e == RD_KAFKA_RESP_ERR__PURGE_QUEUE || e == RD_KAFKA_RESP_ERR__PURGE_INFLIGHT) {
        settle(d, CALL_TRANSIENT, t->purge_why);
    } else if (e == RD_KAFKA_RESP_ERR__MSG_TIMED_OUT) {
        snprintf(why, sizeof why,
                 "kafka topic \"%.100s\": not delivered within the producer's message.timeout.ms "
                 "(%s)%s%.200s",
                 d->to.topic, rd_kafka_err2name(e),
                 t->last_error[0] ? "; last producer error: " : "", t->last_error);
        settle(d, CALL_TRANSIENT, why);
    } else {
        snprintf(why, sizeof why, "kafka topic \"%.100s\": delivery failed: %s (%s)", d->to.topic,
                 rd_kafka_err2str(e), rd_kafka_err2name(e));
        settle(d, CALL_TRANSIENT, why);
    }
    push_ready(t, d);
}

static void on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    struct kafka_tp *t = opaque;
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        char fatal[200];
        rd_kafka_resp_err_t orig = rd_kafka_fatal_error(rk, fatal, sizeof fatal);
        slog_error("kafka producer fatal error", "err=%s reason=\"%s\"", rd_kafka_err2name(orig),
                   fatal);
        snprintf(t->last_error, sizeof t->last_error, "fatal: %s", fatal);
        t->fatal = 1;
        return;
    }
    slog_warn("kafka producer error", "err=%s reason=\"%s\"",
              rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
    snprintf(t->last_error, sizeof t->last_error, "%s", reason);
}

static void on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    /* errors (3) come again, once, through on_error */
    if (level <= 4 && level != 3)
        slog_warn("librdkafka", "fac=%s detail=\"%s\"", fac, buf);
    else
        slog_debug("librdkafka", "fac=%s detail=\"%s\"", fac, buf);
}

/* ---- the producer ------------------------------------------------------------ */

/* Put "***" in place of every occurrence of secret in s (in place). */
static void redact(char *s, size_t cap, const char *secret)
{
    size_t n = strlen(secret);
    if (n == 0)
        return;
    char *p = strstr(s, secret);
    while (p != NULL) {
        static const char stars[] = "***";
        size_t tail = strlen(p + n);
        if ((size_t)(p - s) + 3 + tail + 1 > cap)
            break;
        memmove(p + 3, p + n, tail + 1);
        memcpy(p, stars, 3);
        p = strstr(p + 3, secret);
    }
}

static int is_fixed(const char *key)
{
    for (size_t i = 0; i < sizeof fixed_keys / sizeof fixed_keys[0]; i++)
        if (strcmp(key, fixed_keys[i]) == 0)
            return 1;
    return 0;
}

/* Set one property; on refusal a message in err without the value. */
static int conf_set(rd_kafka_conf_t *conf, const char *key, const char *value, char *err,
                    size_t errlen)
{
    char why[512];
    if (rd_kafka_conf_set(conf, key, value, why, sizeof why) == RD_KAFKA_CONF_OK)
        return 0;
    redact(why, sizeof why, value);
    snprintf(err, errlen, "kafka property \"%s\" refused: %s", key, why);
    return -1;
}

/* Make the producer and hook its main queue to the eventfd. 0 or -1 with
 * err. */
static int producer_open(struct kafka_tp *t, char *err, size_t errlen)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char num[32];
    snprintf(num, sizeof num, "%u", t->message_timeout_ms);
    if (conf_set(conf, "bootstrap.servers", t->brokers, err, errlen) != 0 ||
        conf_set(conf, "enable.idempotence", "true", err, errlen) != 0 ||
        conf_set(conf, "acks", "all", err, errlen) != 0 ||
        conf_set(conf, "client.id", "dtxd", err, errlen) != 0 ||
        /* Java's partitioner: the same gid lands where a Java producer puts it */
        conf_set(conf, "partitioner", "murmur2_random", err, errlen) != 0 ||
        conf_set(conf, "log.queue", "true", err, errlen) != 0 ||
        (t->message_timeout_ms > 0 && conf_set(conf, "message.timeout.ms", num, err, errlen) != 0))
        goto fail;
    for (size_t i = 0; i < t->noptions; i++) {
        const struct kafka_option *o = &t->options[i];
        if (is_fixed(o->key)) {
            snprintf(err, errlen,
                     "kafka property \"%s\" is set by dtxd (bootstrap servers come from "
                     "--kafka-brokers; the producer is idempotent with acks=all)",
                     o->key);
            goto fail;
        }
        if (conf_set(conf, o->key, o->value, err, errlen) != 0)
            goto fail;
    }
    rd_kafka_conf_set_opaque(conf, t);
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_conf_set_error_cb(conf, on_error);
    rd_kafka_conf_set_log_cb(conf, on_log);
    char why[512];
    t->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, why, sizeof why);
    if (t->rk == NULL) {
        snprintf(err, errlen, "cannot make the kafka producer: %s", why);
        goto fail;
    }
    /* conf is the producer's now */
    rd_kafka_set_log_queue(t->rk, NULL); /* log lines to the main queue: the loop */
    t->mainq = rd_kafka_queue_get_main(t->rk);
    static const uint64_t one = 1; /* an eventfd takes 8-byte writes */
    rd_kafka_queue_io_event_enable(t->mainq, t->efd, &one, sizeof one);
    t->fatal = 0;
    return 0;
fail:
    rd_kafka_conf_destroy(conf);
    return -1;
}

/* Drop the producer: purge its queues, serve the purge's delivery reports
 * (on_delivery frees what was answered or abandoned and queues the rest
 * TRANSIENT), destroy it. Deliveries it never reported are settled with
 * why (or freed when abandoned). */
static void producer_close(struct kafka_tp *t, const char *why)
{
    if (t->rk == NULL)
        return;
    rd_kafka_purge(t->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    rd_kafka_flush(t->rk, PURGE_WAIT_MS); /* serves the main queue */
    rd_kafka_queue_io_event_enable(t->mainq, -1, NULL, 0);
    rd_kafka_queue_destroy(t->mainq);
    t->mainq = NULL;
    rd_kafka_destroy(t->rk);
    t->rk = NULL;
    while (t->outstanding != NULL) {
        struct delivery *d = t->outstanding;
        unlink_outstanding(t, d);
        if (d->cb == NULL) {
            free(d);
        } else {
            settle(d, CALL_TRANSIENT, why);
            push_ready(t, d);
        }
    }
}

/* ---- the loop side ----------------------------------------------------------- */

/* A fatal error: drop the producer (what it held is answered TRANSIENT
 * through the purge's reports) and make a new one. */
static void producer_reset(struct kafka_tp *t)
{
    snprintf(t->purge_why, sizeof t->purge_why,
             "the kafka producer was reset after a fatal error (%.200s)", t->last_error);
    producer_close(t, t->purge_why);
    char err[ERR_MAX];
    if (producer_open(t, err, sizeof err) != 0)
        slog_error("cannot make a new kafka producer", "detail=\"%s\"", err);
    else
        slog_warn("kafka producer reset", "brokers=\"%s\"", t->brokers);
}

static void serve(struct kafka_tp *t)
{
    uint64_t v;
    while (read(t->efd, &v, sizeof v) > 0) {
    }
    if (t->rk != NULL)
        while (rd_kafka_poll(t->rk, 0) > 0) {
        }
    if (t->fatal && t->rk != NULL)
        producer_reset(t);
    run_ready(t);
}

static void on_io(uv_poll_t *h, int status, int events)
{
    (void)status;
    (void)events;
    serve(h->data);
}

static void on_soon(uv_timer_t *h)
{
    serve(h->data);
}

static void arm_deadline(struct kafka_tp *t);

/* Answer every delivery whose deadline has passed; they stay outstanding
 * until librdkafka reports them. */
static void on_deadline(uv_timer_t *h)
{
    struct kafka_tp *t = h->data;
    uint64_t now = clock_mono_ms();
    struct delivery *expired = NULL;
    for (struct delivery *d = t->outstanding; d != NULL; d = d->next) {
        if (d->cb != NULL && d->deadline_ms <= now) {
            char why[ERR_MAX];
            snprintf(why, sizeof why,
                     "kafka topic \"%.100s\": no delivery report within %u ms%s%.200s", d->to.topic,
                     d->timeout_ms, t->last_error[0] ? "; last producer error: " : "",
                     t->last_error);
            settle(d, CALL_TRANSIENT, why);
            d->rnext = expired;
            expired = d;
        }
    }
    /* answer after the walk: callbacks may add deliveries */
    while (expired != NULL) {
        struct delivery *next = expired->rnext;
        answer(expired);
        expired = next;
    }
    arm_deadline(t);
}

static void arm_at(struct kafka_tp *t, uint64_t when)
{
    uint64_t now = clock_mono_ms();
    t->armed_at = when;
    uv_timer_start(&t->deadline, on_deadline, when > now ? when - now : 0, 0);
}

/* Point the deadline timer at the earliest unanswered deadline (a walk of
 * everything outstanding, once per firing: the timer may fire for a
 * delivery answered since, which is harmless). */
static void arm_deadline(struct kafka_tp *t)
{
    uint64_t first = UINT64_MAX;
    for (struct delivery *d = t->outstanding; d != NULL; d = d->next)
        if (d->cb != NULL && d->deadline_ms < first)
            first = d->deadline_ms;
    if (first == UINT64_MAX) {
        uv_timer_stop(&t->deadline);
        return;
    }
    arm_at(t, first);
}

/* Answer d (settled) from the loop, soon: never inside call(). */
static void refuse_soon(struct kafka_tp *t, struct delivery *d)
{
    push_ready(t, d);
    uv_timer_start(&t->soon, on_soon, 0, 0);
}

static int kafka_call(struct transport *tp, const struct call_req *req, call_done_fn cb, void *arg)
{
    struct kafka_tp *t = (struct kafka_tp *)tp;
    struct delivery *d = xcalloc(1, sizeof *d);
    if (kafka_target_parse(req->url, &d->to) != 0 || req->timeout_ms == 0 || t->closing) {
        free(d);
        return DTX_EINVAL;
    }
    d->cb = cb;
    d->arg = arg;
    d->timeout_ms = req->timeout_ms;
    d->deadline_ms = clock_mono_ms() + req->timeout_ms;
    snprintf(d->message_id, sizeof d->message_id, "%s/%s/%s", req->gid, req->branch, req->op);
    if (strcmp(req->op, "action") != 0 || strcmp(req->txn_type, "msg") != 0) {
        settle(d, CALL_TRANSIENT, only_msg);
        refuse_soon(t, d);
        return 0;
    }
    if (t->rk == NULL) {
        settle(d, CALL_TRANSIENT,
               "no kafka producer (it could not be made again after a "
               "fatal error: see the log)");
        refuse_soon(t, d);
        return 0;
    }
    const char *body = req->body != NULL ? req->body : "";
    size_t body_len = req->body != NULL ? req->body_len : 0;
    rd_kafka_vu_t vu[6];
    size_t n = 0;
    vu[n].vtype = RD_KAFKA_VTYPE_TOPIC;
    vu[n++].u.cstr = d->to.topic;
    vu[n].vtype = RD_KAFKA_VTYPE_VALUE;
    vu[n].u.mem.ptr = (void *)body;
    vu[n++].u.mem.size = body_len;
    vu[n].vtype = RD_KAFKA_VTYPE_KEY;
    vu[n].u.mem.ptr = (void *)req->gid;
    vu[n++].u.mem.size = strlen(req->gid);
    vu[n].vtype = RD_KAFKA_VTYPE_MSGFLAGS;
    vu[n++].u.i32 = RD_KAFKA_MSG_F_COPY;
    vu[n].vtype = RD_KAFKA_VTYPE_OPAQUE;
    vu[n++].u.ptr = d;
    /* a headers list of our own (VTYPE_HEADERS), not VTYPE_HEADER: on a
     * failed produce librdkafka 2.0 frees the latter twice (librdkafka
     * issue #4627); ours is the producer's on success, ours on failure */
    const char *hname[6] = {"Dtx-Gid",  "Dtx-Branch",     "Dtx-Op",
                            "Dtx-Type", "Dtx-Message-Id", "traceparent"};
    const char *hval[6] = {req->gid,      req->branch,   req->op,
                           req->txn_type, d->message_id, req->traceparent};
    rd_kafka_headers_t *hdrs = rd_kafka_headers_new(6);
    for (int i = 0; i < 6; i++)
        if (hval[i] != NULL)
            rd_kafka_header_add(hdrs, hname[i], -1, hval[i], (ssize_t)strlen(hval[i]));
    vu[n].vtype = RD_KAFKA_VTYPE_HEADERS;
    vu[n++].u.headers = hdrs;
    rd_kafka_error_t *e = rd_kafka_produceva(t->rk, vu, n);
    if (e != NULL) {
        char why[ERR_MAX];
        rd_kafka_resp_err_t code = rd_kafka_error_code(e);
        if (code == RD_KAFKA_RESP_ERR__QUEUE_FULL)
            snprintf(why, sizeof why,
                     "kafka topic \"%.100s\": the producer's local queue is full "
                     "(queue.buffering.max.messages / .kbytes)",
                     d->to.topic);
        else
            snprintf(why, sizeof why, "kafka topic \"%.100s\": produce refused: %s (%s)",
                     d->to.topic, rd_kafka_error_string(e), rd_kafka_err2name(code));
        rd_kafka_error_destroy(e);
        rd_kafka_headers_destroy(hdrs);
        settle(d, CALL_TRANSIENT, why);
        refuse_soon(t, d);
        return 0;
    }
    link_outstanding(t, d);
    if (!uv_is_active((uv_handle_t *)&t->deadline) || d->deadline_ms < t->armed_at)
        arm_at(t, d->deadline_ms);
    return 0;
}

static void on_handle_closed(uv_handle_t *h)
{
    struct kafka_tp *t = h->data;
    if (--t->handles_open > 0)
        return;
    close(t->efd);
    for (size_t i = 0; i < t->noptions; i++) {
        free((char *)t->options[i].key);
        free((char *)t->options[i].value);
    }
    free(t->options);
    free(t->brokers);
    free(t);
}

static void kafka_free(struct transport *tp)
{
    struct kafka_tp *t = (struct kafka_tp *)tp;
    t->closing = 1;
    snprintf(t->purge_why, sizeof t->purge_why, "the transport is closed");
    for (struct delivery *d = t->outstanding; d != NULL; d = d->next)
        d->cb = NULL; /* abandoned: no callback, ever */
    for (struct delivery *d = t->ready_head; d != NULL; d = d->rnext)
        d->cb = NULL;
    producer_close(t, "closed");
    run_ready(t); /* frees, calls nothing: every cb is NULL */
    uv_close((uv_handle_t *)&t->io, on_handle_closed);
    uv_close((uv_handle_t *)&t->deadline, on_handle_closed);
    uv_close((uv_handle_t *)&t->soon, on_handle_closed);
}

int kafka_transport_inject_fatal(struct transport *tp, const char *reason)
{
    struct kafka_tp *t = (struct kafka_tp *)tp;
    if (t->rk == NULL ||
        rd_kafka_test_fatal_error(t->rk, RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER, reason) !=
            RD_KAFKA_RESP_ERR_NO_ERROR)
        return DTX_ESTATE;
    return 0;
}

static const struct transport_ops kafka_ops = {.call = kafka_call, .free = kafka_free};

struct transport *kafka_transport_new(uv_loop_t *loop, const struct kafka_config *cfg, char *err,
                                      size_t errlen)
{
    if (cfg->brokers == NULL || cfg->brokers[0] == '\0') {
        snprintf(err, errlen, "no kafka bootstrap servers");
        return NULL;
    }
    struct kafka_tp *t = xcalloc(1, sizeof *t);
    t->base.ops = &kafka_ops;
    t->base.scheme = KAFKA_SCHEME;
    t->loop = loop;
    t->brokers = xstrdup(cfg->brokers);
    t->message_timeout_ms = cfg->message_timeout_ms;
    t->options = xcalloc(cfg->noptions + 1, sizeof *t->options);
    for (size_t i = 0; i < cfg->noptions; i++) {
        t->options[i].key = xstrdup(cfg->options[i].key);
        t->options[i].value = xstrdup(cfg->options[i].value);
    }
    t->noptions = cfg->noptions;
    t->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (t->efd < 0) {
        snprintf(err, errlen, "eventfd: %s", strerror(errno));
        goto fail;
    }
    if (producer_open(t, err, errlen) != 0)
        goto fail;
    uv_poll_init(loop, &t->io, t->efd);
    uv_timer_init(loop, &t->deadline);
    uv_timer_init(loop, &t->soon);
    t->io.data = t->deadline.data = t->soon.data = t;
    t->handles_open = 3;
    uv_poll_start(&t->io, UV_READABLE, on_io);
    char keys[512] = "";
    size_t used = 0;
    for (size_t i = 0; i < t->noptions && used < sizeof keys; i++)
        used += (size_t)snprintf(keys + used, sizeof keys - used, "%s%s", i ? "," : "",
                                 t->options[i].key);
    slog_info("kafka producer", "brokers=\"%s\" options=\"%s\"", t->brokers, keys);
    return &t->base;
fail:
    if (t->efd >= 0)
        close(t->efd);
    for (size_t i = 0; i < t->noptions; i++) {
        free((char *)t->options[i].key);
        free((char *)t->options[i].value);
    }
    free(t->options);
    free(t->brokers);
    free(t);
    return NULL;
}
