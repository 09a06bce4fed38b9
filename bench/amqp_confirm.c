/*
 * amqp_confirm.c - the baseline of the RabbitMQ benchmark (bench/amqp.sh):
 * how fast the broker takes persistent messages with publisher confirms
 * from one connection, with no coordinator in front.
 *
 * One connection, one channel in confirm mode, as dtxd's amqp transport has
 * (src/transport/amqp.c). Each message is published to the default exchange
 * with the queue's name as routing key, persistent (delivery_mode 2),
 * mandatory, with the body given (default: the payload the dtx run
 * delivers) and, unless --props bare, the properties dtxd puts on a msg
 * delivery: content_type application/json, message_id "<gid>/1/action" with
 * a fresh 32-hex-digit gid, headers Dtx-Gid, Dtx-Branch, Dtx-Op, Dtx-Type
 * and traceparent. So both runs put the same bytes on the wire per message.
 *
 * Pipelined: up to --window messages are unconfirmed at any moment. The loop
 * publishes while the window has room, then reads whatever the broker sent
 * (basic.ack / basic.nack, possibly "multiple", and basic.return), waiting
 * only when the window is full or everything is published. A message counts
 * once its confirm is in; a nack or a return is an error (exit status 3).
 *
 * --warmup M publishes M messages first, the same way, and waits for all
 * their confirms; then the clock starts for the --count N measured ones. The
 * rate is N divided by the time from the first measured publish to the last
 * confirm. Output: a human summary, then
 *   RESULT mode=baseline count=N window=W body_bytes=B seconds=S rate=R
 *          confirm_mean_ms=... confirm_p50_ms=... confirm_p99_ms=...
 *          confirm_max_ms=... nacks=K returned=K cpu=C
 * on one line: confirm_* is each measured message's time from its publish
 * to its confirm; cpu is the cores this process used over those seconds.
 */
#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "common/clock.h"
#include "common/rnd.h"
#include "stats.h"

#define CHANNEL 1
#define WAIT_S  30 /* no frame for this long while confirms are due: give up */

static const char default_body[] = "{\"account\":\"A\",\"amount\":1}";

struct config {
    const char *url;
    const char *queue;
    const char *body;
    long count;
    long warmup;
    long window;
    int bare; /* --props bare: delivery_mode and content_type only */
};

/* Confirm bookkeeping of one batch: tags first_tag .. first_tag + n - 1. */
struct batch {
    uint64_t first_tag;
    long n;
    unsigned char *confirmed; /* n flags */
    uint64_t *sent_us;        /* n publish times (monotonic) */
    uint32_t *lat_us;         /* publish -> confirm of each confirmed one */
    uint64_t low;             /* every tag <= low is confirmed */
    long done;                /* confirms (acks and nacks) in */
    long nacks;
    long returned;
};

static amqp_connection_state_t conn;
static uint64_t next_tag; /* the channel's delivery tag of the last publish */

static void usage(void)
{
    fprintf(stderr,
            "usage: amqp_confirm --url amqp://user:pass@host:port/vhost --queue NAME [options]\n"
            "  --count N       measured messages (default 100000)\n"
            "  --warmup M      messages published and confirmed before the clock starts "
            "(default 0)\n"
            "  --window W      unconfirmed messages at most (default 4096)\n"
            "  --body STRING   message body (default %s)\n"
            "  --props dtx|bare  dtx: the properties dtxd sets on a msg delivery (default); "
            "bare: delivery_mode and content_type only\n",
            default_body);
}

static void die_reply(amqp_rpc_reply_t r, const char *what)
{
    switch (r.reply_type) {
    case AMQP_RESPONSE_NORMAL:
        return;
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
        fprintf(stderr, "amqp_confirm: %s: %s\n", what, amqp_error_string2(r.library_error));
        break;
    case AMQP_RESPONSE_SERVER_EXCEPTION:
        if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
            amqp_channel_close_t *m = r.reply.decoded;
            fprintf(stderr, "amqp_confirm: %s: channel closed: %u %.*s\n", what, m->reply_code,
                    (int)m->reply_text.len, (char *)m->reply_text.bytes);
        } else if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
            amqp_connection_close_t *m = r.reply.decoded;
            fprintf(stderr, "amqp_confirm: %s: connection closed: %u %.*s\n", what, m->reply_code,
                    (int)m->reply_text.len, (char *)m->reply_text.bytes);
        } else {
            fprintf(stderr, "amqp_confirm: %s: broker error 0x%08x\n", what, r.reply.id);
        }
        break;
    default:
        fprintf(stderr, "amqp_confirm: %s: no reply\n", what);
        break;
    }
    exit(1);
}

static long parse_long(const char *opt, const char *v, long min)
{
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (errno != 0 || end == v || *end != '\0' || n < min) {
        fprintf(stderr, "amqp_confirm: bad value for %s: %s\n", opt, v);
        exit(2);
    }
    return n;
}

static void parse_args(struct config *c, int argc, char **argv)
{
    c->body = default_body;
    c->count = 100000;
    c->window = 4096;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage();
            exit(0);
        }
        if (i + 1 >= argc) {
            usage();
            exit(2);
        }
        const char *v = argv[++i];
        if (strcmp(a, "--url") == 0)
            c->url = v;
        else if (strcmp(a, "--queue") == 0)
            c->queue = v;
        else if (strcmp(a, "--body") == 0)
            c->body = v;
        else if (strcmp(a, "--count") == 0)
            c->count = parse_long(a, v, 1);
        else if (strcmp(a, "--warmup") == 0)
            c->warmup = parse_long(a, v, 0);
        else if (strcmp(a, "--window") == 0)
            c->window = parse_long(a, v, 1);
        else if (strcmp(a, "--props") == 0 && (strcmp(v, "dtx") == 0 || strcmp(v, "bare") == 0))
            c->bare = strcmp(v, "bare") == 0;
        else {
            usage();
            exit(2);
        }
    }
    if (c->url == NULL || c->queue == NULL) {
        usage();
        exit(2);
    }
}

/* Connect, log in (frame_max and heartbeat as dtxd), open the channel in
 * confirm mode, declare the queue durable. Exits on failure. */
static void connect_broker(const struct config *c)
{
    char *url = strdup(c->url); /* amqp_parse_url writes into it */
    struct amqp_connection_info ci;
    amqp_default_connection_info(&ci);
    if (url == NULL || amqp_parse_url(url, &ci) != AMQP_STATUS_OK) {
        fprintf(stderr, "amqp_confirm: bad --url\n");
        exit(2);
    }
    conn = amqp_new_connection();
    amqp_socket_t *sock = amqp_tcp_socket_new(conn);
    if (sock == NULL) {
        fprintf(stderr, "amqp_confirm: cannot create a socket\n");
        exit(1);
    }
    int rc = amqp_socket_open(sock, ci.host, ci.port);
    if (rc != AMQP_STATUS_OK) {
        fprintf(stderr, "amqp_confirm: connect %s:%d: %s\n", ci.host, ci.port,
                amqp_error_string2(rc));
        exit(1);
    }
    die_reply(
        amqp_login(conn, ci.vhost, 1, 131072, 30, AMQP_SASL_METHOD_PLAIN, ci.user, ci.password),
        "login");
    amqp_channel_open(conn, CHANNEL);
    die_reply(amqp_get_rpc_reply(conn), "channel.open");
    amqp_queue_declare(conn, CHANNEL, amqp_cstring_bytes(c->queue), 0, 1, 0, 0, amqp_empty_table);
    die_reply(amqp_get_rpc_reply(conn), "queue.declare");
    amqp_confirm_select(conn, CHANNEL);
    die_reply(amqp_get_rpc_reply(conn), "confirm.select");
    free(url);
}

static void hex_random(char *out, size_t nhex)
{
    static const char digits[] = "0123456789abcdef";
    uint64_t r = 0;
    for (size_t i = 0; i < nhex; i++) {
        if (i % 16 == 0)
            r = rnd_next();
        out[i] = digits[r & 15];
        r >>= 4;
    }
    out[nhex] = '\0';
}

static amqp_table_entry_t header(const char *key, const char *value)
{
    amqp_table_entry_t e;
    e.key = amqp_cstring_bytes(key);
    e.value.kind = AMQP_FIELD_KIND_UTF8;
    e.value.value.bytes = amqp_cstring_bytes(value);
    return e;
}

/* Publish one message, shaped as dtxd's msg delivery unless bare. */
static void publish(const struct config *c)
{
    char gid[33], trace[33], span[17], traceparent[64], message_id[64];
    amqp_table_entry_t h[5];
    amqp_basic_properties_t props;
    memset(&props, 0, sizeof props);
    props._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG;
    props.content_type = amqp_cstring_bytes("application/json");
    props.delivery_mode = AMQP_DELIVERY_PERSISTENT;
    if (!c->bare) {
        hex_random(gid, 32);
        hex_random(trace, 32);
        hex_random(span, 16);
        snprintf(traceparent, sizeof traceparent, "00-%s-%s-01", trace, span);
        snprintf(message_id, sizeof message_id, "%s/1/action", gid);
        h[0] = header("Dtx-Gid", gid);
        h[1] = header("Dtx-Branch", "1");
        h[2] = header("Dtx-Op", "action");
        h[3] = header("Dtx-Type", "msg");
        h[4] = header("traceparent", traceparent);
        props._flags |= AMQP_BASIC_MESSAGE_ID_FLAG | AMQP_BASIC_HEADERS_FLAG;
        props.message_id = amqp_cstring_bytes(message_id);
        props.headers.num_entries = 5;
        props.headers.entries = h;
    }
    amqp_bytes_t body = {.len = strlen(c->body), .bytes = (void *)c->body};
    int rc = amqp_basic_publish(conn, CHANNEL, amqp_empty_bytes, amqp_cstring_bytes(c->queue), 1, 0,
                                &props, body);
    if (rc != AMQP_STATUS_OK) {
        fprintf(stderr, "amqp_confirm: publish: %s\n", amqp_error_string2(rc));
        exit(1);
    }
    next_tag++;
}

static void mark(struct batch *b, uint64_t tag, int nack, uint64_t now)
{
    if (tag < b->first_tag || tag >= b->first_tag + (uint64_t)b->n)
        return;
    uint64_t i = tag - b->first_tag;
    if (b->confirmed[i])
        return;
    b->confirmed[i] = 1;
    uint64_t lat = now - b->sent_us[i];
    b->lat_us[b->done] = lat > UINT32_MAX ? UINT32_MAX : (uint32_t)lat;
    b->done++;
    if (nack)
        b->nacks++;
}

/* An ack or nack for tag (and, multiple, every earlier tag). */
static void on_confirm(struct batch *b, uint64_t tag, int multiple, int nack)
{
    uint64_t now = clock_mono_us();
    if (multiple) {
        for (uint64_t t = b->low + 1; t <= tag; t++)
            mark(b, t, nack, now);
        if (tag > b->low)
            b->low = tag;
    } else {
        mark(b, tag, nack, now);
    }
}

/*
 * Handle frames from the broker: wait for one up to *tv (NULL: do not wait
 * beyond what is buffered or readable now), then take every other frame
 * already there. Returns the frames handled. Exits on a broken connection.
 */
static int read_frames(struct batch *b, struct timeval *tv)
{
    struct timeval zero = {0, 0};
    int handled = 0;
    for (;;) {
        amqp_frame_t f;
        int rc = amqp_simple_wait_frame_noblock(conn, &f, handled == 0 && tv ? tv : &zero);
        if (rc == AMQP_STATUS_TIMEOUT)
            return handled;
        if (rc != AMQP_STATUS_OK) {
            fprintf(stderr, "amqp_confirm: connection broke: %s\n", amqp_error_string2(rc));
            exit(1);
        }
        handled++;
        if (f.frame_type != AMQP_FRAME_METHOD)
            continue;
        switch (f.payload.method.id) {
        case AMQP_BASIC_ACK_METHOD: {
            amqp_basic_ack_t *m = f.payload.method.decoded;
            on_confirm(b, m->delivery_tag, m->multiple, 0);
            break;
        }
        case AMQP_BASIC_NACK_METHOD: {
            amqp_basic_nack_t *m = f.payload.method.decoded;
            on_confirm(b, m->delivery_tag, m->multiple, 1);
            break;
        }
        case AMQP_BASIC_RETURN_METHOD: {
            amqp_message_t msg;
            die_reply(amqp_read_message(conn, CHANNEL, &msg, 0), "reading a returned message");
            amqp_destroy_message(&msg);
            b->returned++;
            break;
        }
        case AMQP_CHANNEL_CLOSE_METHOD:
        case AMQP_CONNECTION_CLOSE_METHOD:
            fprintf(stderr, "amqp_confirm: the broker closed the %s\n",
                    f.payload.method.id == AMQP_CHANNEL_CLOSE_METHOD ? "channel" : "connection");
            exit(1);
        default:
            break;
        }
        amqp_maybe_release_buffers(conn);
    }
}

/* Publish n messages pipelined, window at most unconfirmed; return when
 * every confirm is in. Fills *b; the caller frees b->lat_us. */
static void run_batch(const struct config *c, long n, struct batch *b)
{
    memset(b, 0, sizeof *b);
    b->first_tag = next_tag + 1;
    b->low = next_tag;
    b->n = n;
    b->confirmed = calloc((size_t)n, 1);
    b->sent_us = calloc((size_t)n, sizeof *b->sent_us);
    b->lat_us = calloc((size_t)n, sizeof *b->lat_us);
    if (b->confirmed == NULL || b->sent_us == NULL || b->lat_us == NULL) {
        fprintf(stderr, "amqp_confirm: out of memory\n");
        exit(1);
    }
    long sent = 0;
    while (b->done < n) {
        while (sent < n && sent - b->done < c->window) {
            b->sent_us[sent] = clock_mono_us();
            publish(c);
            sent++;
        }
        if (sent < n && sent - b->done < c->window) {
            read_frames(b, NULL);
        } else {
            struct timeval tv = {WAIT_S, 0};
            if (read_frames(b, &tv) == 0) {
                fprintf(stderr, "amqp_confirm: no confirm for %d s (%ld of %ld in)\n", WAIT_S,
                        b->done, n);
                exit(1);
            }
        }
    }
    free(b->confirmed);
    free(b->sent_us);
    b->confirmed = NULL;
    b->sent_us = NULL;
}

int main(int argc, char **argv)
{
    struct config c = {0};
    parse_args(&c, argc, argv);
    connect_broker(&c);

    struct batch warm = {0}, b;
    if (c.warmup > 0)
        run_batch(&c, c.warmup, &warm);
    double cpu0 = cpu_seconds();
    uint64_t t0 = clock_mono_us();
    run_batch(&c, c.count, &b);
    uint64_t t1 = clock_mono_us();
    double cpu = cpu_seconds() - cpu0;

    double s = (double)(t1 - t0) / 1e6;
    qsort(b.lat_us, (size_t)b.n, sizeof *b.lat_us, cmp_u32);
    double mean = 0;
    for (long i = 0; i < b.n; i++)
        mean += b.lat_us[i];
    mean = mean / (double)b.n / 1000.0;
    double p50 = pct_ms(b.lat_us, (size_t)b.n, 50), p99 = pct_ms(b.lat_us, (size_t)b.n, 99);
    double max = b.lat_us[b.n - 1] / 1000.0;
    double rate = s > 0 ? (double)c.count / s : 0;
    long nacks = warm.nacks + b.nacks, returned = warm.returned + b.returned;
    printf("mode          baseline (rabbitmq-c, one connection, confirms, window %ld)\n", c.window);
    printf("messages      %ld measured after %ld warmup, body %zu bytes, %s properties\n", c.count,
           c.warmup, strlen(c.body), c.bare ? "bare" : "dtx's");
    printf("time          %.3f s, first publish to last confirm\n", s);
    printf("throughput    %.1f messages/s\n", rate);
    printf("confirm ms    mean %.3f  p50 %.3f  p99 %.3f  max %.3f (publish to confirm)\n", mean,
           p50, p99, max);
    printf("nacks         %ld, returned %ld\n", nacks, returned);
    printf("cpu           %.2f cores\n", s > 0 ? cpu / s : 0);
    printf("RESULT mode=baseline count=%ld window=%ld body_bytes=%zu seconds=%.3f rate=%.1f "
           "confirm_mean_ms=%.3f confirm_p50_ms=%.3f confirm_p99_ms=%.3f confirm_max_ms=%.3f "
           "nacks=%ld returned=%ld cpu=%.2f\n",
           c.count, c.window, strlen(c.body), s, rate, mean, p50, p99, max, nacks, returned,
           s > 0 ? cpu / s : 0);
    fflush(stdout);

    amqp_channel_close(conn, CHANNEL, AMQP_REPLY_SUCCESS);
    amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(conn);
    free(warm.lat_us);
    free(b.lat_us);
    return nacks > 0 || returned > 0 ? 3 : 0;
}
