/*
 * test_amqp_participant.c - the AMQP participant loop (dtx_amqp_participant_*)
 * against a real RabbitMQ and real databases.
 *
 * The test plays dtxd: it publishes commands (message_id gid/branch/op,
 * correlation_id, reply_to = a reply queue of its own, Dtx-* headers) to the
 * participant's queue with rabbitmq-c, runs the loop in a thread, and reads
 * the replies and the dead-letter queue with basic.get. Every scenario
 * checks what really happened: the replies, the queues' contents, the
 * handler's calls and the rows in the database (the handler inserts one row
 * per applied operation into amqp_effects, in the loop's transaction).
 *
 * Environment:
 *   DTX_TEST_AMQP_URL   the broker (scripts/rabbitmq.sh prints it); without
 *                       it the broker tests are skipped, and they fail when
 *                       DTX_REQUIRE_AMQP=1
 *   DTX_TEST_AMQP_MGMT  its management API (the connection-close test is
 *                       skipped without it)
 *   DTX_TEST_PG         a PostgreSQL conninfo (scripts/pg.sh); without it the
 *                       PostgreSQL group is skipped (failed: DTX_REQUIRE_PG=1)
 * The SQLite group uses a temporary file. The TLS test also needs socat and
 * openssl on the PATH (skipped without them).
 *
 * Queue names and gids carry the process id and the time, so runs never
 * see each other's messages or rows; each test deletes its queues.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <amqp.h>
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "amqp_testutil.h"
#include "dtx.h"

/* ---- the database seam ----------------------------------------------------- */

enum kind { NONE, SQLITE, PG };

struct backend {
    const char *name;
    enum kind kind;
    sqlite3 *db, *db_look; /* the loop's connection, and the test's */
    PGconn *pg, *pg_look;
    char path[64];
    int skip; /* the broker or the database is not configured */
};

static const char *amqp_url;
static struct backend *cur; /* the group's backend */
static char run_prefix[64];
static unsigned seq;

static void pg_ok(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(c));
    PQclear(r);
}

static long count_sql(struct backend *b, const char *table, const char *gid)
{
    char sql[160];
    long n = -1;
    if (b->kind == PG) {
        snprintf(sql, sizeof sql, "SELECT count(*) FROM %s WHERE gid = $1", table);
        const char *params[1] = {gid};
        PGresult *r = PQexecParams(b->pg_look, sql, 1, NULL, params, NULL, NULL, 0);
        if (PQresultStatus(r) == PGRES_TUPLES_OK)
            n = atol(PQgetvalue(r, 0, 0));
        PQclear(r);
    } else if (b->kind == SQLITE) {
        snprintf(sql, sizeof sql, "SELECT count(*) FROM %s WHERE gid = ?1", table);
        sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v2(b->db_look, sql, -1, &st, NULL) == SQLITE_OK &&
            sqlite3_bind_text(st, 1, gid, -1, SQLITE_STATIC) == SQLITE_OK &&
            sqlite3_step(st) == SQLITE_ROW)
            n = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
    } else {
        n = 0;
    }
    if (n < 0)
        fail_msg("counting rows of %s", table);
    return n;
}

/* Rows the handler wrote for gid (committed). */
static long effects(const char *gid)
{
    return count_sql(cur, "amqp_effects", gid);
}

static long barrier_rows(const char *gid)
{
    return count_sql(cur, "dtx_barrier", gid);
}

/* ---- the test's own broker connection (dtxd's role) ----------------------- */

static void declare(amqp_connection_state_t c, const char *q)
{
    amqp_queue_declare(c, 1, amqp_cstring_bytes(q), 0, 1, 0, 0, amqp_empty_table);
    assert_int_equal(amqp_get_rpc_reply(c).reply_type, AMQP_RESPONSE_NORMAL);
}

static void delete_queue(amqp_connection_state_t c, const char *q)
{
    amqp_queue_delete(c, 1, amqp_cstring_bytes(q), 0, 0);
    assert_int_equal(amqp_get_rpc_reply(c).reply_type, AMQP_RESPONSE_NORMAL);
}

/* Messages ready in q (not counting unacknowledged ones). */
static long ready(amqp_connection_state_t c, const char *q)
{
    amqp_queue_declare_ok_t *ok =
        amqp_queue_declare(c, 1, amqp_cstring_bytes(q), 1, 0, 0, 0, amqp_empty_table);
    assert_int_equal(amqp_get_rpc_reply(c).reply_type, AMQP_RESPONSE_NORMAL);
    return (long)ok->message_count;
}

/* Take one message from q, waiting up to ms. 1 with *out (destroy it), or 0. */
static int take(amqp_connection_state_t c, const char *q, int ms, amqp_message_t *out)
{
    for (int waited = 0;; waited += 20) {
        amqp_rpc_reply_t r = amqp_basic_get(c, 1, amqp_cstring_bytes(q), 1);
        assert_int_equal(r.reply_type, AMQP_RESPONSE_NORMAL);
        if (r.reply.id == AMQP_BASIC_GET_OK_METHOD) {
            r = amqp_read_message(c, 1, out, 0);
            assert_int_equal(r.reply_type, AMQP_RESPONSE_NORMAL);
            return 1;
        }
        if (waited >= ms)
            return 0;
        usleep(20 * 1000);
    }
}

static const amqp_field_value_t *hdr(const amqp_message_t *m, const char *key)
{
    const amqp_table_t *t = &m->properties.headers;
    if (!(m->properties._flags & AMQP_BASIC_HEADERS_FLAG))
        return NULL;
    for (int i = 0; i < t->num_entries; i++)
        if (t->entries[i].key.len == strlen(key) &&
            memcmp(t->entries[i].key.bytes, key, strlen(key)) == 0)
            return &t->entries[i].value;
    return NULL;
}

/* A string header as a C string in buf ("" if absent). */
static const char *hdr_str(const amqp_message_t *m, const char *key, char *buf, size_t cap)
{
    const amqp_field_value_t *v = hdr(m, key);
    buf[0] = '\0';
    if (v != NULL && (v->kind == AMQP_FIELD_KIND_UTF8 || v->kind == AMQP_FIELD_KIND_BYTES))
        snprintf(buf, cap, "%.*s", (int)v->value.bytes.len, (char *)v->value.bytes.bytes);
    return buf;
}

static void assert_bytes(amqp_bytes_t b, const char *want)
{
    char buf[1024];
    snprintf(buf, sizeof buf, "%.*s", (int)b.len, b.bytes ? (char *)b.bytes : "");
    assert_string_equal(buf, want);
}

/* ---- a fixture per test ------------------------------------------------------- */

struct fx {
    amqp_connection_state_t c;
    char queue[128], dead[160], replies[160];
    struct dtx_amqp_participant *p;
    pthread_t thread;
    int running, run_rc;
    atomic_int calls;
    atomic_int check_in_tx, work_in_tx; /* -1: not seen */
    atomic_int saw_msg_type;            /* a handler call had type "msg" */
    char rkeys[4][200];                 /* the routing key of the first calls */
    char status[8192];                  /* on_status lines, under status_mu */
};

static pthread_mutex_t status_mu = PTHREAD_MUTEX_INITIALIZER;

static struct fx F;

static int in_tx(void)
{
    if (cur->kind == SQLITE)
        return !sqlite3_get_autocommit(cur->db);
    if (cur->kind == PG)
        return PQtransactionStatus(cur->pg) == PQTRANS_INTRANS;
    return -1;
}

/*
 * The participant's business: body "fail..." refuses (reason "no funds"),
 * "ongoing" answers ONGOING, "retry" RETRY, anything else succeeds. Every
 * op but check first writes its effect row, so that a rollback shows.
 */
static enum dtx_amqp_result handler(void *arg, const struct dtx_amqp_msg *m, char *reason,
                                    size_t cap)
{
    struct fx *f = arg;
    int nth = atomic_fetch_add(&f->calls, 1);
    if (nth < 4)
        snprintf(f->rkeys[nth], sizeof f->rkeys[nth], "%s", m->routing_key);
    if (strcmp(m->type, "msg") == 0)
        atomic_store(&f->saw_msg_type, 1);
    if (m->body[m->body_len] != '\0' || strlen(m->message_id) == 0)
        return DTX_AMQP_RETRY; /* the contract: a NUL-terminated copy */
    if (strcmp(m->op, "check") == 0) {
        atomic_store(&f->check_in_tx, in_tx());
        return DTX_AMQP_SUCCESS;
    }
    atomic_store(&f->work_in_tx, in_tx());
    const char *params[3] = {m->gid, m->branch, m->op};
    if (cur->kind == PG) {
        PGresult *r =
            PQexecParams(cur->pg, "INSERT INTO amqp_effects (gid, branch, op) VALUES ($1, $2, $3)",
                         3, NULL, params, NULL, NULL, 0);
        int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        PQclear(r);
        if (!ok)
            return DTX_AMQP_RETRY;
    } else if (cur->kind == SQLITE) {
        sqlite3_stmt *st = NULL;
        int ok = sqlite3_prepare_v2(
                     cur->db, "INSERT INTO amqp_effects (gid, branch, op) VALUES (?1, ?2, ?3)", -1,
                     &st, NULL) == SQLITE_OK;
        for (int i = 0; ok && i < 3; i++)
            ok = sqlite3_bind_text(st, i + 1, params[i], -1, SQLITE_STATIC) == SQLITE_OK;
        ok = ok && sqlite3_step(st) == SQLITE_DONE;
        sqlite3_finalize(st);
        if (!ok)
            return DTX_AMQP_RETRY;
    }
    if (strncmp(m->body, "fail", 4) == 0) {
        snprintf(reason, cap, "no funds");
        return DTX_AMQP_FAILURE;
    }
    if (strcmp(m->body, "ongoing") == 0) {
        snprintf(reason, cap, "still busy");
        return DTX_AMQP_ONGOING;
    }
    if (strcmp(m->body, "retry") == 0)
        return DTX_AMQP_RETRY;
    return DTX_AMQP_SUCCESS;
}

/* on_status: keep the lines (as much as fits). */
static void on_status(void *arg, const char *line)
{
    struct fx *f = arg;
    pthread_mutex_lock(&status_mu);
    size_t n = strlen(f->status);
    snprintf(f->status + n, sizeof f->status - n, "%s\n", line);
    pthread_mutex_unlock(&status_mu);
}

/* How many status lines so far hold needle, waiting up to ms for at least
 * `want` of them. */
static int status_count(const char *needle, int want, int ms)
{
    int n = 0;
    for (int waited = 0;; waited += 20) {
        n = 0;
        pthread_mutex_lock(&status_mu);
        for (const char *at = F.status; (at = strstr(at, needle)) != NULL; at += strlen(needle))
            n++;
        pthread_mutex_unlock(&status_mu);
        if (n >= want || waited >= ms)
            return n;
        usleep(20 * 1000);
    }
}

static void status_dump(void)
{
    pthread_mutex_lock(&status_mu);
    fprintf(stderr, "status lines:\n%s", F.status);
    pthread_mutex_unlock(&status_mu);
}

static void *run_main(void *arg)
{
    struct fx *f = arg;
    f->run_rc = dtx_amqp_participant_run(f->p);
    return NULL;
}

/* Make and start the loop on F.queue (url NULL: the test broker). */
static void start_url(const char *url, int max_attempts, const char *cacert)
{
    struct dtx_amqp_opts o = {
        .broker_url = url != NULL ? url : amqp_url,
        .queue = F.queue,
        .cacert = cacert,
        .prefetch = 4,
        .max_attempts = max_attempts,
        .pg = cur->kind == PG ? cur->pg : NULL,
        .sqlite = cur->kind == SQLITE ? cur->db : NULL,
        .on_status = on_status,
    };
    assert_int_equal(dtx_amqp_participant_new(&o, handler, &F, &F.p), 0);
    F.run_rc = -100;
    assert_int_equal(pthread_create(&F.thread, NULL, run_main, &F), 0);
    F.running = 1;
}

static void start(int max_attempts)
{
    start_url(NULL, max_attempts, NULL);
}

/* stop() and join, within ms; run() must have returned 0. */
static void stop_join(int ms)
{
    if (!F.running)
        return;
    dtx_amqp_participant_stop(F.p);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    int rc = pthread_timedjoin_np(F.thread, NULL, &ts);
    if (rc != 0)
        fail_msg("run() did not return within %d ms of stop()", ms);
    F.running = 0;
    assert_int_equal(F.run_rc, 0);
    dtx_amqp_participant_free(F.p);
    F.p = NULL;
}

/* Stop the loop; nothing may be left in its queue, not even an
 * unacknowledged message that the broker requeues at the close. */
static void stop_drained(void)
{
    stop_join(3000);
    assert_int_equal(ready(F.c, F.queue), 0);
}

static int fx_setup(void **state)
{
    (void)state;
    if (cur->skip)
        return 0;
    memset(&F, 0, sizeof F);
    atomic_init(&F.check_in_tx, -1);
    atomic_init(&F.work_in_tx, -1);
    unsigned n = seq++;
    snprintf(F.queue, sizeof F.queue, "dtx-test-%s-%u", run_prefix, n);
    snprintf(F.dead, sizeof F.dead, "%s.dead", F.queue);
    snprintf(F.replies, sizeof F.replies, "%s.replies", F.queue);
    F.c = amqp_test_connect(amqp_url);
    /* as an operator would (dtxd publishes with mandatory set): the queues
     * exist before the first command, whether the loop runs or not */
    declare(F.c, F.queue);
    declare(F.c, F.dead);
    declare(F.c, F.replies);
    return 0;
}

static int fx_teardown(void **state)
{
    (void)state;
    if (cur->skip)
        return 0;
    stop_join(3000);
    /* a fresh connection: a failed test may have broken the channel */
    amqp_destroy_connection(F.c);
    F.c = amqp_test_connect(amqp_url);
    delete_queue(F.c, F.queue);
    delete_queue(F.c, F.dead);
    delete_queue(F.c, F.replies);
    amqp_channel_close(F.c, 1, AMQP_REPLY_SUCCESS);
    amqp_connection_close(F.c, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(F.c);
    return 0;
}

static void need_broker(void)
{
    if (cur->skip)
        skip();
}

/* ---- publishing commands ---------------------------------------------------------- */

struct out {
    const char *gid, *branch, *op, *type; /* NULL: header left out */
    const char *message_id;               /* NULL: gid/branch/op */
    int no_message_id, no_reply_to;
    const char *corr; /* NULL: none */
    const char *body;
    const char *exchange, *rkey; /* NULL: the default exchange, to the queue */
};

static void publish_out(const struct out *m)
{
    amqp_table_entry_t h[4];
    int n = 0;
    const char *keys[4] = {"Dtx-Gid", "Dtx-Branch", "Dtx-Op", "Dtx-Type"};
    const char *vals[4] = {m->gid, m->branch, m->op, m->type};
    for (int i = 0; i < 4; i++) {
        if (vals[i] == NULL)
            continue;
        h[n].key = amqp_cstring_bytes(keys[i]);
        h[n].value.kind = AMQP_FIELD_KIND_UTF8;
        h[n++].value.value.bytes = amqp_cstring_bytes(vals[i]);
    }
    char id[512];
    snprintf(id, sizeof id, "%s/%s/%s", m->gid ? m->gid : "", m->branch ? m->branch : "",
             m->op ? m->op : "");
    amqp_basic_properties_t props;
    memset(&props, 0, sizeof props);
    props._flags =
        AMQP_BASIC_HEADERS_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_CONTENT_TYPE_FLAG;
    props.content_type = amqp_cstring_bytes("application/json");
    props.delivery_mode = AMQP_DELIVERY_PERSISTENT;
    props.headers.num_entries = n;
    props.headers.entries = h;
    if (!m->no_message_id) {
        props._flags |= AMQP_BASIC_MESSAGE_ID_FLAG;
        props.message_id = amqp_cstring_bytes(m->message_id ? m->message_id : id);
    }
    if (!m->no_reply_to) {
        props._flags |= AMQP_BASIC_REPLY_TO_FLAG;
        props.reply_to = amqp_cstring_bytes(F.replies);
    }
    if (m->corr != NULL) {
        props._flags |= AMQP_BASIC_CORRELATION_ID_FLAG;
        props.correlation_id = amqp_cstring_bytes(m->corr);
    }
    amqp_bytes_t ex = m->exchange ? amqp_cstring_bytes(m->exchange) : amqp_empty_bytes;
    amqp_bytes_t rk = amqp_cstring_bytes(m->rkey ? m->rkey : F.queue);
    assert_int_equal(amqp_basic_publish(F.c, 1, ex, rk, 0, 0, &props,
                                        amqp_cstring_bytes(m->body ? m->body : "{}")),
                     AMQP_STATUS_OK);
}

/* A command of a saga branch with a reply_to. */
static void send_cmd(const char *gid, const char *branch, const char *op, const char *corr,
                     const char *body)
{
    struct out m = {
        .gid = gid, .branch = branch, .op = op, .type = "saga", .corr = corr, .body = body};
    publish_out(&m);
}

/* The next reply must be for corr, with result and body. */
static void expect_reply(const char *corr, const char *result, const char *body)
{
    amqp_message_t r;
    char buf[256];
    if (!take(F.c, F.replies, 10000, &r))
        fail_msg("no reply for %s", corr);
    assert_true(r.properties._flags & AMQP_BASIC_CORRELATION_ID_FLAG);
    assert_bytes(r.properties.correlation_id, corr);
    assert_string_equal(hdr_str(&r, "Dtx-Result", buf, sizeof buf), result);
    assert_int_equal(r.properties.delivery_mode, AMQP_DELIVERY_PERSISTENT);
    if (body != NULL)
        assert_bytes(r.body, body);
    amqp_destroy_message(&r);
}

static void expect_no_reply(int ms)
{
    amqp_message_t r;
    if (take(F.c, F.replies, ms, &r)) {
        amqp_destroy_message(&r);
        fail_msg("an unexpected reply");
    }
}

/* The next dead letter must carry a reason that contains want. */
static void expect_dead(const char *want, int ms)
{
    amqp_message_t r;
    char buf[1024];
    if (!take(F.c, F.dead, ms, &r))
        fail_msg("no dead letter (wanted \"%s\")", want);
    hdr_str(&r, "x-dtx-reason", buf, sizeof buf);
    if (strstr(buf, want) == NULL)
        fail_msg("x-dtx-reason \"%s\" does not say \"%s\"", buf, want);
    assert_int_equal(r.properties.delivery_mode, AMQP_DELIVERY_PERSISTENT);
    amqp_destroy_message(&r);
}

static void gid(char *out, size_t cap, const char *what)
{
    snprintf(out, cap, "%s-%u-%s", run_prefix, seq++, what);
}

/* Wait until cond() holds, up to ms. */
static int eventually(int (*cond)(void), int ms)
{
    for (int waited = 0; waited < ms; waited += 20) {
        if (cond())
            return 1;
        usleep(20 * 1000);
    }
    return cond();
}

/* ---- tests without a broker -------------------------------------------------------- */

static enum dtx_amqp_result noop(void *arg, const struct dtx_amqp_msg *m, char *reason, size_t cap)
{
    (void)arg;
    (void)m;
    (void)reason;
    (void)cap;
    return DTX_AMQP_SUCCESS;
}

static void test_new_args(void **state)
{
    (void)state;
    assert_string_equal(dtx_amqp_result_name(DTX_AMQP_SUCCESS), "SUCCESS");
    assert_string_equal(dtx_amqp_result_name(DTX_AMQP_FAILURE), "FAILURE");
    assert_string_equal(dtx_amqp_result_name(DTX_AMQP_ONGOING), "ONGOING");
    assert_string_equal(dtx_amqp_result_name(DTX_AMQP_RETRY), "RETRY");
    assert_string_equal(dtx_amqp_result_name((enum dtx_amqp_result)42), "?");
    struct dtx_amqp_participant *p = (void *)1;
    struct dtx_amqp_opts ok = {.broker_url = "amqp://u:secret@127.0.0.1:5672/%2f", .queue = "q"};
    struct dtx_amqp_opts o;

    assert_int_equal(dtx_amqp_participant_new(NULL, noop, NULL, &p), DTX_EINVAL);
    assert_null(p);
    assert_int_equal(dtx_amqp_participant_new(&ok, NULL, NULL, &p), DTX_EINVAL);
    assert_int_equal(dtx_amqp_participant_new(&ok, noop, NULL, NULL), DTX_EINVAL);

    const char *bad_urls[] = {"http://h/", "amqp://h:0/",          "amqp://h:99999/", "amqp://h/",
                              "",          "amqp://u:p@h:5672/%zz"};
    for (size_t i = 0; i < sizeof bad_urls / sizeof bad_urls[0]; i++) {
        o = ok;
        o.broker_url = bad_urls[i];
        if (dtx_amqp_participant_new(&o, noop, NULL, &p) != DTX_EINVAL)
            fail_msg("URL \"%s\" accepted", bad_urls[i]);
    }
    o = ok;
    o.broker_url = NULL;
    assert_int_equal(dtx_amqp_participant_new(&o, noop, NULL, &p), DTX_EINVAL);
    o = ok;
    o.queue = NULL;
    assert_int_equal(dtx_amqp_participant_new(&o, noop, NULL, &p), DTX_EINVAL);
    o.queue = "";
    assert_int_equal(dtx_amqp_participant_new(&o, noop, NULL, &p), DTX_EINVAL);
    char longq[300];
    memset(longq, 'q', sizeof longq - 1);
    longq[sizeof longq - 1] = '\0';
    o.queue = longq;
    assert_int_equal(dtx_amqp_participant_new(&o, noop, NULL, &p), DTX_EINVAL);
    longq[251] = '\0'; /* fits, but "<queue>.dead" does not */
    assert_int_equal(dtx_amqp_participant_new(&o, noop, NULL, &p), DTX_EINVAL);
    o = ok;
    o.dead_letter = "q";
    assert_int_equal(dtx_amqp_participant_new(&o, noop, NULL, &p), DTX_EINVAL);
    o = ok;
    o.pg = (PGconn *)&o;
    o.sqlite = (sqlite3 *)&o;
    assert_int_equal(dtx_amqp_participant_new(&o, noop, NULL, &p), DTX_EINVAL);
    o = ok;
    o.prefetch = -1;
    assert_int_equal(dtx_amqp_participant_new(&o, noop, NULL, &p), DTX_EINVAL);
    o.prefetch = 65536;
    assert_int_equal(dtx_amqp_participant_new(&o, noop, NULL, &p), DTX_EINVAL);
    o = ok;
    o.max_attempts = -1;
    assert_int_equal(dtx_amqp_participant_new(&o, noop, NULL, &p), DTX_EINVAL);
    assert_null(p);

    const char *good_urls[] = {"amqp://u:p@h:5672/%2f", "amqps://u:p@h/vh", "amqp://h"};
    for (size_t i = 0; i < sizeof good_urls / sizeof good_urls[0]; i++) {
        o = ok;
        o.broker_url = good_urls[i];
        o.cacert = "/nonexistent/ca.pem";
        if (dtx_amqp_participant_new(&o, noop, NULL, &p) != 0)
            fail_msg("URL \"%s\" refused", good_urls[i]);
        assert_non_null(p);
        dtx_amqp_participant_free(p);
    }
    dtx_amqp_participant_free(NULL);
    dtx_amqp_participant_stop(NULL);
    assert_int_equal(dtx_amqp_participant_run(NULL), DTX_EINVAL);
}

static struct dtx_amqp_participant *sig_target;

static void on_signal(int sig)
{
    (void)sig;
    dtx_amqp_participant_stop(sig_target);
}

static double elapsed_ms(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) * 1000.0 + (double)(t1.tv_nsec - t0->tv_nsec) / 1e6;
}

/* No broker at all (a closed port): run() keeps trying with backoff and
 * returns promptly after stop(), from a thread or a signal handler. */
static void test_stop_unreachable(void **state)
{
    (void)state;
    struct backend none = {.name = "none", .kind = NONE};
    struct backend *saved = cur;
    cur = &none;
    memset(&F, 0, sizeof F);
    snprintf(F.queue, sizeof F.queue, "unreachable");

    /* a stop() before run() makes it return at once, and is then spent */
    struct dtx_amqp_opts o = {.broker_url = "amqp://guest:guest@127.0.0.1:1/%2f", .queue = "q"};
    struct dtx_amqp_participant *p;
    assert_int_equal(dtx_amqp_participant_new(&o, noop, NULL, &p), 0);
    dtx_amqp_participant_stop(p);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(dtx_amqp_participant_run(p), 0);
    assert_true(elapsed_ms(&t0) < 100);

    /* from a signal handler, while the loop backs off */
    sig_target = p;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    assert_int_equal(sigaction(SIGALRM, &sa, NULL), 0);
    alarm(1);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(dtx_amqp_participant_run(p), 0);
    double ms = elapsed_ms(&t0);
    assert_true(ms > 800 && ms < 2000);
    signal(SIGALRM, SIG_DFL);
    dtx_amqp_participant_free(p);

    /* from another thread */
    start_url("amqp://guest:guest@127.0.0.1:1/%2f", 0, NULL);
    usleep(700 * 1000); /* several backoff rounds: 100, 200, 400 ms */
    /* and says so each time, with the reason and the next pause */
    if (status_count("cannot connect: cannot connect to 127.0.0.1:1: ", 3, 0) < 3 ||
        status_count("; again in 200 ms", 1, 0) != 1) {
        status_dump();
        fail_msg("no 'cannot connect' status lines");
    }
    clock_gettime(CLOCK_MONOTONIC, &t0);
    stop_join(2000);
    assert_true(elapsed_ms(&t0) < 600);
    assert_int_equal(atomic_load(&F.calls), 0);
    cur = saved;
}

/* ---- tests against the broker ----------------------------------------------------- */

/* SUCCESS, FAILURE and ONGOING, each answered on reply_to with its own
 * correlation_id; only SUCCESS commits. */
static void test_results(void **state)
{
    (void)state;
    need_broker();
    char g[96];
    gid(g, sizeof g, "results");
    start(0);
    send_cmd(g, "b1", "action", "corr-1", "{\"amount\":30}");
    send_cmd(g, "b2", "action", "corr-2", "fail");
    send_cmd(g, "b3", "action", "corr-3", "ongoing");
    expect_reply("corr-1", "SUCCESS", "");
    expect_reply("corr-2", "FAILURE", "no funds");
    expect_reply("corr-3", "ONGOING", "still busy");
    assert_int_equal(atomic_load(&F.calls), 3);
    if (cur->kind != NONE) {
        assert_int_equal(atomic_load(&F.work_in_tx), 1);
        assert_int_equal(effects(g), 1);      /* b2 and b3 rolled back */
        assert_int_equal(barrier_rows(g), 1); /* and their barrier rows with them */
    }
    assert_int_equal(ready(F.c, F.queue), 0);
    assert_int_equal(ready(F.c, F.dead), 0);
    stop_drained();
}

/* The same message_id twice (a retry after a lost reply): applied once,
 * answered SUCCESS twice. */
static void test_duplicate(void **state)
{
    (void)state;
    need_broker();
    char g[96];
    gid(g, sizeof g, "dup");
    start(0);
    send_cmd(g, "b1", "action", "first", "{}");
    expect_reply("first", "SUCCESS", "");
    send_cmd(g, "b1", "action", "second", "{}");
    expect_reply("second", "SUCCESS", "");
    assert_int_equal(atomic_load(&F.calls), 1);
    assert_int_equal(effects(g), 1);
    /* a later compensate is a real undo: it runs */
    send_cmd(g, "b1", "compensate", "undo", "{}");
    expect_reply("undo", "SUCCESS", "");
    assert_int_equal(atomic_load(&F.calls), 2);
    assert_int_equal(effects(g), 2);
    stop_drained();
}

/* A compensate before its action does nothing and answers SUCCESS; the
 * late action then answers FAILURE without running. */
static void test_null_undo_then_late(void **state)
{
    (void)state;
    need_broker();
    char g[96];
    gid(g, sizeof g, "nullundo");
    start(0);
    send_cmd(g, "b1", "compensate", "c1", "{}");
    expect_reply("c1", "SUCCESS", "");
    send_cmd(g, "b1", "action", "c2", "{}");
    expect_reply("c2", "FAILURE", NULL);
    assert_int_equal(atomic_load(&F.calls), 0);
    assert_int_equal(effects(g), 0);
    assert_int_equal(barrier_rows(g), 2); /* compensate, and action blocked */
    stop_drained();
}

/* Malformed messages go to the dead-letter queue with a reason, acked, and
 * the loop goes on. */
static void test_poison(void **state)
{
    (void)state;
    need_broker();
    char g[96];
    gid(g, sizeof g, "poison");
    start(0);
    struct out no_gid = {.branch = "b1", .op = "action", .type = "saga", .corr = "p1"};
    struct out bad_op = {.gid = g, .branch = "b1", .op = "explode", .type = "saga", .corr = "p2"};
    struct out no_reply = {.gid = g,
                           .branch = "b1",
                           .op = "compensate",
                           .type = "saga",
                           .corr = "p3",
                           .no_reply_to = 1};
    struct out bad_id = {.gid = g,
                         .branch = "b1",
                         .op = "action",
                         .type = "saga",
                         .corr = "p4",
                         .message_id = "someone/else/action"};
    struct out no_id = {
        .gid = g, .branch = "b1", .op = "action", .type = "saga", .corr = "p5", .no_message_id = 1};
    struct out empty_branch = {
        .gid = g, .branch = "", .op = "action", .type = "saga", .corr = "p6"};
    publish_out(&no_gid);
    publish_out(&bad_op);
    publish_out(&no_reply);
    publish_out(&bad_id);
    publish_out(&no_id);
    publish_out(&empty_branch);
    send_cmd(g, "b1", "action", "good", "{}");
    expect_reply("good", "SUCCESS", "");
    expect_dead("header Dtx-Gid: missing", 5000);
    expect_dead("unknown Dtx-Op \"explode\"", 1000);
    expect_dead("command without reply_to", 1000);
    expect_dead("message_id", 1000);
    expect_dead("message_id", 1000);
    expect_dead("header Dtx-Branch: empty", 1000);
    assert_int_equal(ready(F.c, F.dead), 0);
    expect_no_reply(200); /* none of the poison was answered */
    assert_int_equal(atomic_load(&F.calls), 1);
    assert_int_equal(ready(F.c, F.queue), 0);
    if (cur->kind != NONE)
        assert_int_equal(effects(g), 1);
    stop_drained();
}

static long want_effects;
static const char *want_gid;

static int effects_reached(void)
{
    return effects(want_gid) >= want_effects;
}

/* A msg delivery (no reply_to): applied, acked, never answered; one the
 * handler refuses is dead-lettered. */
static void test_delivery(void **state)
{
    (void)state;
    need_broker();
    char g[96], g2[96];
    gid(g, sizeof g, "deliver");
    gid(g2, sizeof g2, "refused");
    start(0);
    struct out d = {.gid = g, .branch = "1", .op = "action", .type = "msg", .no_reply_to = 1};
    publish_out(&d);
    struct out r = {
        .gid = g2, .branch = "1", .op = "action", .type = "msg", .no_reply_to = 1, .body = "fail"};
    publish_out(&r);
    expect_dead("refused: no funds", 5000);
    want_gid = g;
    want_effects = 1;
    if (cur->kind != NONE)
        assert_true(eventually(effects_reached, 5000));
    assert_int_equal(atomic_load(&F.calls), 2);
    assert_int_equal(atomic_load(&F.saw_msg_type), 1);
    assert_int_equal(ready(F.c, F.queue), 0);
    expect_no_reply(300);
    if (cur->kind != NONE) {
        assert_int_equal(effects(g), 1);
        assert_int_equal(effects(g2), 0);
    }
    stop_drained();
}

/* A delivery whose handler says RETRY is published again with
 * x-dtx-attempts + 1, and dead-lettered after max_attempts calls; every
 * call sees the routing key it was first published with (through
 * amq.topic here), not the queue name it was republished to. */
static void test_delivery_retry(void **state)
{
    (void)state;
    need_broker();
    char g[96], rkey[200];
    gid(g, sizeof g, "dretry");
    start(3);
    snprintf(rkey, sizeof rkey, "orig.%s", F.queue);
    amqp_queue_bind(F.c, 1, amqp_cstring_bytes(F.queue), amqp_cstring_bytes("amq.topic"),
                    amqp_cstring_bytes(rkey), amqp_empty_table);
    assert_int_equal(amqp_get_rpc_reply(F.c).reply_type, AMQP_RESPONSE_NORMAL);
    struct out d = {.gid = g,
                    .branch = "1",
                    .op = "action",
                    .type = "msg",
                    .no_reply_to = 1,
                    .body = "retry",
                    .exchange = "amq.topic",
                    .rkey = rkey};
    publish_out(&d);
    amqp_message_t m;
    if (!take(F.c, F.dead, 10000, &m))
        fail_msg("the delivery was not dead-lettered");
    char buf[256];
    assert_string_equal(hdr_str(&m, "x-dtx-reason", buf, sizeof buf), "gave up after 3 attempts");
    const amqp_field_value_t *a = hdr(&m, "x-dtx-attempts");
    assert_non_null(a);
    assert_int_equal(a->kind, AMQP_FIELD_KIND_I32);
    assert_int_equal(a->value.i32, 2);
    assert_string_equal(hdr_str(&m, "Dtx-Gid", buf, sizeof buf), g); /* the original's headers */
    assert_string_equal(hdr_str(&m, "x-dtx-routing-key", buf, sizeof buf), rkey);
    assert_bytes(m.body, "retry");
    amqp_destroy_message(&m);
    assert_int_equal(atomic_load(&F.calls), 3);
    for (int i = 0; i < 3; i++)
        assert_string_equal(F.rkeys[i], rkey);
    usleep(500 * 1000); /* and nothing more */
    assert_int_equal(atomic_load(&F.calls), 3);
    assert_int_equal(ready(F.c, F.queue), 0);
    assert_int_equal(ready(F.c, F.dead), 0);
    if (cur->kind != NONE) {
        assert_int_equal(effects(g), 0);
        assert_int_equal(barrier_rows(g), 0);
    }
    stop_drained();
}

/* RETRY on a command: acked without a reply (dtxd asks again), not
 * redelivered; the loop goes on. */
static void test_command_retry(void **state)
{
    (void)state;
    need_broker();
    char g[96];
    gid(g, sizeof g, "cretry");
    start(0);
    send_cmd(g, "b1", "confirm", "r1", "retry");
    send_cmd(g, "b2", "confirm", "r2", "{}");
    expect_reply("r2", "SUCCESS", ""); /* r1 got none: r2's comes first */
    usleep(1000 * 1000);
    expect_no_reply(100);
    assert_int_equal(atomic_load(&F.calls), 2);
    assert_int_equal(ready(F.c, F.queue), 0);
    assert_int_equal(ready(F.c, F.dead), 0);
    if (cur->kind != NONE) {
        assert_int_equal(effects(g), 1);
        assert_int_equal(barrier_rows(g), 1); /* b1's was rolled back */
    }
    /* dtxd asks again: now it applies */
    send_cmd(g, "b1", "confirm", "r3", "{}");
    expect_reply("r3", "SUCCESS", "");
    if (cur->kind != NONE)
        assert_int_equal(effects(g), 2);
    stop_drained();
}

/* A msg's check runs outside any transaction and records no barrier row;
 * other ops run inside one. */
static void test_check(void **state)
{
    (void)state;
    need_broker();
    char g[96];
    gid(g, sizeof g, "check");
    start(0);
    struct out c = {.gid = g, .branch = "00", .op = "check", .type = "msg", .corr = "k1"};
    publish_out(&c);
    expect_reply("k1", "SUCCESS", "");
    send_cmd(g, "b1", "action", "k2", "{}");
    expect_reply("k2", "SUCCESS", "");
    int want_tx = cur->kind == NONE ? -1 : 1;
    assert_int_equal(atomic_load(&F.check_in_tx), cur->kind == NONE ? -1 : 0);
    assert_int_equal(atomic_load(&F.work_in_tx), want_tx);
    assert_int_equal(barrier_rows(g), cur->kind == NONE ? 0 : 1);
    stop_drained();
}

/* stop() while consuming: run() returns within about 200 ms, and the
 * unacknowledged messages stay in the queue for the next run. */
static void test_stop(void **state)
{
    (void)state;
    need_broker();
    char g[96];
    gid(g, sizeof g, "stop");
    start(0);
    send_cmd(g, "b1", "action", "s1", "{}");
    expect_reply("s1", "SUCCESS", "");
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    stop_join(2000);
    assert_true(elapsed_ms(&t0) < 700);
    send_cmd(g, "b2", "action", "s2", "{}");
    expect_no_reply(300);
    assert_int_equal(ready(F.c, F.queue), 1);
    start(0); /* a new loop on the same queue picks it up */
    expect_reply("s2", "SUCCESS", "");
}

/* The queue deleted under the loop: the broker cancels the consumer, the
 * loop reconnects, declares the queue again and goes on. */
static void test_reconnect(void **state)
{
    (void)state;
    need_broker();
    char g[96];
    gid(g, sizeof g, "reconnect");
    start(0);
    send_cmd(g, "b1", "action", "x1", "{}");
    expect_reply("x1", "SUCCESS", "");
    delete_queue(F.c, F.queue);
    usleep(1000 * 1000); /* the loop redeclares it */
    assert_int_equal(ready(F.c, F.queue), 0);
    /* it said why it reconnected, and that it consumes again */
    char line[300];
    snprintf(line, sizeof line, "connection lost: the broker cancelled the consumer of %s",
             F.queue);
    if (status_count(line, 1, 2000) != 1 || status_count("consuming ", 2, 2000) < 2) {
        status_dump();
        fail_msg("no status lines for the reconnect");
    }
    send_cmd(g, "b2", "action", "x2", "{}");
    expect_reply("x2", "SUCCESS", "");
    assert_int_equal(atomic_load(&F.calls), 2);
    /* the dead-letter queue deleted: a poison message is not dropped, the
     * loop reconnects (declaring it again) and dead-letters it there */
    delete_queue(F.c, F.dead);
    struct out bad = {.gid = g, .branch = "b3", .op = "explode", .type = "saga", .corr = "x3"};
    publish_out(&bad);
    usleep(1500 * 1000);
    expect_dead("unknown Dtx-Op", 5000);
    assert_int_equal(atomic_load(&F.calls), 2);
    stop_drained();
}

/* A wrong password: the loop keeps trying, and says that the broker
 * refused the login (403), never with the password. */
static void test_login_refused(void **state)
{
    (void)state;
    need_broker();
    char url[512];
    url_with_password(amqp_url, "wrong-s3cret", url, sizeof url);
    start_url(url, 0, NULL);
    int n = status_count("cannot connect: login: the broker closed the connection: 403 ", 1, 5000);
    stop_join(3000);
    pthread_mutex_lock(&status_mu);
    int leaked = strstr(F.status, "wrong-s3cret") != NULL;
    pthread_mutex_unlock(&status_mu);
    if (n < 1 || leaked) {
        status_dump();
        fail_msg("%s",
                 leaked ? "the password is in a status line" : "no login-refused status line");
    }
    assert_int_equal(atomic_load(&F.calls), 0);
}

/* SQLite busy (another connection holds the write lock): the command is
 * RETRY - no reply, no effect - and the loop tells why; once the lock is
 * gone the same command, sent again as dtxd would, applies. */
static void test_database_error(void **state)
{
    (void)state;
    need_broker();
    if (cur->kind != SQLITE)
        skip();
    char g[96], want[300];
    gid(g, sizeof g, "locked");
    sqlite3_busy_timeout(cur->db, 100); /* the loop's connection, before it runs */
    assert_int_equal(sqlite3_exec(cur->db_look, "BEGIN EXCLUSIVE", NULL, NULL, NULL), SQLITE_OK);
    start(0);
    send_cmd(g, "b1", "action", "l1", "{}");
    snprintf(want, sizeof want, "database error at BEGIN of %s/b1/action: database is locked", g);
    int n = status_count(want, 1, 5000);
    expect_no_reply(500);
    assert_int_equal(sqlite3_exec(cur->db_look, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
    if (n != 1) {
        status_dump();
        fail_msg("no 'database error' status line");
    }
    assert_int_equal(effects(g), 0);
    send_cmd(g, "b1", "action", "l2", "{}");
    expect_reply("l2", "SUCCESS", "");
    assert_int_equal(effects(g), 1);
    stop_drained();
    sqlite3_busy_timeout(cur->db, 5000);
}

/* ---- the management API (closing the loop's connection) -------------------------- */

/* The broker closes the loop's connection (as at a broker restart): the
 * loop connects again and goes on; the connection carries its name. */
static void test_connection_closed(void **state)
{
    (void)state;
    need_broker();
    const char *mgmt = getenv("DTX_TEST_AMQP_MGMT");
    if (mgmt == NULL || mgmt[0] == '\0')
        skip();
    char g[96];
    gid(g, sizeof g, "closed");
    start(0);
    send_cmd(g, "b1", "action", "k1", "{}");
    expect_reply("k1", "SUCCESS", "");
    char name[200];
    snprintf(name, sizeof name, "dtx-participant %s", F.queue);
    assert_int_equal(mgmt_close_connections(mgmt, name), 1);
    send_cmd(g, "b2", "action", "k2", "{}");
    expect_reply("k2", "SUCCESS", "");
    if (status_count("connection lost: the broker closed the connection: 320 ", 1, 2000) != 1) {
        status_dump();
        fail_msg("no status line for the closed connection");
    }
    assert_int_equal(atomic_load(&F.calls), 2);
    stop_drained();
}

/* A queue an operator made with arguments of their own (here a TTL): the
 * loop's plain declare is refused (406) and it uses the queue as it is. */
static void test_queue_with_arguments(void **state)
{
    (void)state;
    need_broker();
    char g[96];
    gid(g, sizeof g, "args");
    delete_queue(F.c, F.queue);
    amqp_table_entry_t e;
    e.key = amqp_cstring_bytes("x-message-ttl");
    e.value.kind = AMQP_FIELD_KIND_I32;
    e.value.value.i32 = 600000;
    amqp_table_t args = {.num_entries = 1, .entries = &e};
    amqp_queue_declare(F.c, 1, amqp_cstring_bytes(F.queue), 0, 1, 0, 0, args);
    assert_int_equal(amqp_get_rpc_reply(F.c).reply_type, AMQP_RESPONSE_NORMAL);
    start(0);
    send_cmd(g, "b1", "action", "a1", "{}");
    expect_reply("a1", "SUCCESS", "");
    stop_drained();
}

/* ---- TLS through socat ---------------------------------------------------------- */

static int sh(const char *cmd)
{
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

/*
 * amqps:// to a TLS front (socat, with a certificate for "localhost" made by
 * a CA of the test) of the plain broker: with that CA as cacert the loop
 * answers; with another CA it must not connect at all.
 */
static void test_tls(void **state)
{
    (void)state;
    need_broker();
    if (sh("command -v socat >/dev/null && command -v openssl >/dev/null") != 0)
        skip();
    char dir[] = "/tmp/dtx-amqp-tls-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "cd %s && "
             "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=dtx-test-ca "
             "-keyout ca.key -out ca.pem >/dev/null 2>&1 && "
             "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=other-ca "
             "-keyout other.key -out other.pem >/dev/null 2>&1 && "
             "openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout srv.key "
             "-out srv.csr >/dev/null 2>&1 && "
             "printf 'subjectAltName=DNS:localhost\\n' > ext && "
             "openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 "
             "-extfile ext -out srv.pem >/dev/null 2>&1 && cat srv.key srv.pem > srv.both",
             dir);
    assert_int_equal(sh(cmd), 0);

    struct amqp_connection_info ci;
    char *tmp = strdup(amqp_url);
    assert_int_equal(amqp_parse_url(tmp, &ci), AMQP_STATUS_OK);
    int tls_port = 20000 + (int)(getpid() % 20000);
    char listen[64], target[128], cert[128];
    snprintf(listen, sizeof listen, "OPENSSL-LISTEN:%d,bind=127.0.0.1,reuseaddr,fork", tls_port);
    snprintf(cert, sizeof cert, "%s/srv.both", dir);
    char listen_full[256];
    snprintf(listen_full, sizeof listen_full, "%s,cert=%s,verify=0", listen, cert);
    snprintf(target, sizeof target, "TCP:%s:%d", ci.host, ci.port);
    pid_t socat = fork();
    assert_true(socat >= 0);
    if (socat == 0) {
        execlp("socat", "socat", listen_full, target, (char *)NULL);
        _exit(127);
    }
    usleep(300 * 1000);

    char url[256], ca[128], other[128];
    snprintf(url, sizeof url, "amqps://%s:%s@localhost:%d/%%2f", ci.user, ci.password, tls_port);
    snprintf(ca, sizeof ca, "%s/ca.pem", dir);
    snprintf(other, sizeof other, "%s/other.pem", dir);

    char g[96];
    gid(g, sizeof g, "tls");
    /* the wrong CA: no connection, nothing consumed */
    start_url(url, 0, other);
    send_cmd(g, "b0", "action", "t0", "{}");
    usleep(1500 * 1000);
    stop_join(6000);
    expect_no_reply(100);
    assert_int_equal(atomic_load(&F.calls), 0);
    /* the right CA, but the certificate does not name 127.0.0.1 */
    char url_ip[256];
    snprintf(url_ip, sizeof url_ip, "amqps://%s:%s@127.0.0.1:%d/%%2f", ci.user, ci.password,
             tls_port);
    start_url(url_ip, 0, ca);
    usleep(1500 * 1000);
    stop_join(6000);
    expect_no_reply(100);
    assert_int_equal(atomic_load(&F.calls), 0);
    /* the right CA and name */
    start_url(url, 0, ca);
    send_cmd(g, "b1", "action", "t1", "{}");
    expect_reply("t0", "SUCCESS", "");
    expect_reply("t1", "SUCCESS", "");
    stop_join(6000);

    free(tmp);
    kill(socat, SIGTERM);
    waitpid(socat, NULL, 0);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    sh(cmd);
}

/* ---- groups ---------------------------------------------------------------------- */

static int broker_configured(const char *who)
{
    amqp_url = getenv("DTX_TEST_AMQP_URL");
    if (amqp_url != NULL && amqp_url[0] != '\0')
        return 1;
    const char *req = getenv("DTX_REQUIRE_AMQP");
    if (req != NULL && strcmp(req, "1") == 0) {
        fprintf(stderr,
                "%s: DTX_REQUIRE_AMQP=1 but DTX_TEST_AMQP_URL is not set: start a broker "
                "(scripts/rabbitmq.sh start DIR PORT) and set it\n",
                who);
        return -1;
    }
    fprintf(stderr, "%s: DTX_TEST_AMQP_URL is not set: RabbitMQ tests skipped\n", who);
    return 0;
}

static int none_setup(void **state)
{
    static struct backend b = {.name = "no database", .kind = NONE};
    (void)state;
    cur = &b;
    int rc = broker_configured("test_amqp_participant");
    b.skip = rc == 0;
    return rc < 0 ? -1 : 0;
}

static int sqlite_setup(void **state)
{
    static struct backend b = {.name = "sqlite", .kind = SQLITE};
    (void)state;
    cur = &b;
    int rc = broker_configured("test_amqp_participant");
    if (rc <= 0) {
        b.skip = 1;
        return rc;
    }
    snprintf(b.path, sizeof b.path, "/tmp/dtx-amqp-test-%ld.db", (long)getpid());
    unlink(b.path);
    if (sqlite3_open(b.path, &b.db) != SQLITE_OK || sqlite3_open(b.path, &b.db_look) != SQLITE_OK)
        return -1;
    sqlite3_busy_timeout(b.db, 5000);
    sqlite3_busy_timeout(b.db_look, 5000);
    if (sqlite3_exec(b.db, "PRAGMA journal_mode=WAL", NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_exec(b.db, "CREATE TABLE amqp_effects (gid TEXT, branch TEXT, op TEXT)", NULL, NULL,
                     NULL) != SQLITE_OK ||
        dtx_barrier_sqlite_init(b.db) != 0)
        return -1;
    return 0;
}

static int sqlite_teardown(void **state)
{
    (void)state;
    if (cur->db != NULL) {
        sqlite3_close(cur->db);
        sqlite3_close(cur->db_look);
        unlink(cur->path);
    }
    return 0;
}

static int pg_setup(void **state)
{
    static struct backend b = {.name = "postgresql", .kind = PG};
    (void)state;
    cur = &b;
    int rc = broker_configured("test_amqp_participant");
    if (rc <= 0) {
        b.skip = 1;
        return rc;
    }
    const char *conninfo = getenv("DTX_TEST_PG");
    if (conninfo == NULL || conninfo[0] == '\0') {
        const char *req = getenv("DTX_REQUIRE_PG");
        b.skip = 1;
        if (req != NULL && strcmp(req, "1") == 0) {
            fprintf(stderr, "test_amqp_participant: DTX_REQUIRE_PG=1 but DTX_TEST_PG is not "
                            "set\n");
            return -1;
        }
        fprintf(stderr, "test_amqp_participant: DTX_TEST_PG is not set: PostgreSQL tests "
                        "skipped\n");
        return 0;
    }
    b.pg = PQconnectdb(conninfo);
    b.pg_look = PQconnectdb(conninfo);
    if (PQstatus(b.pg) != CONNECTION_OK || PQstatus(b.pg_look) != CONNECTION_OK) {
        fprintf(stderr, "test_amqp_participant: connecting to DTX_TEST_PG: %s",
                PQerrorMessage(b.pg));
        return -1;
    }
    pg_ok(b.pg, "SET client_min_messages = warning");
    pg_ok(b.pg, "CREATE TABLE IF NOT EXISTS amqp_effects (gid text, branch text, op text)");
    if (dtx_barrier_pg_init(b.pg) != 0)
        return -1;
    return 0;
}

static int pg_teardown(void **state)
{
    (void)state;
    PQfinish(cur->pg);
    PQfinish(cur->pg_look);
    return 0;
}

#define T(f) cmocka_unit_test_setup_teardown(f, fx_setup, fx_teardown)
#define COMMON_TESTS                                                                               \
    T(test_results), T(test_poison), T(test_delivery), T(test_delivery_retry),                     \
        T(test_command_retry), T(test_check), T(test_stop), T(test_reconnect)

int main(void)
{
    const struct CMUnitTest offline[] = {
        cmocka_unit_test(test_new_args),
        cmocka_unit_test(test_stop_unreachable),
    };
    const struct CMUnitTest no_barrier[] = {COMMON_TESTS, T(test_queue_with_arguments),
                                            T(test_connection_closed), T(test_tls),
                                            T(test_login_refused)};
    const struct CMUnitTest barrier[] = {COMMON_TESTS, T(test_duplicate),
                                         T(test_null_undo_then_late), T(test_database_error)};
    int failed = 0;

    snprintf(run_prefix, sizeof run_prefix, "%ld-%ld", (long)getpid(), (long)time(NULL));
    curl_global_init(CURL_GLOBAL_DEFAULT);
    static struct backend offline_b = {.name = "offline", .kind = NONE};
    cur = &offline_b;
    failed += cmocka_run_group_tests_name("amqp participant: arguments, stop", offline, NULL, NULL);
    failed +=
        cmocka_run_group_tests_name("amqp participant: no barrier", no_barrier, none_setup, NULL);
    failed += cmocka_run_group_tests_name("amqp participant: SQLite barrier", barrier, sqlite_setup,
                                          sqlite_teardown);
    failed += cmocka_run_group_tests_name("amqp participant: PostgreSQL barrier", barrier, pg_setup,
                                          pg_teardown);
    return failed != 0;
}
