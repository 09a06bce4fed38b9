/*
 * test_amqp_try.c - a TCC Try over RabbitMQ (dtx_client_set_amqp,
 * dtx_tcc_try with an amqp:// try_url) against a real broker, with libdtx's
 * own participant loop (SQLite barrier) as the participant.
 *
 * Each scenario checks what the caller and the participant really saw: the
 * outcome and the last error's message, the handler's calls and the rows it
 * committed. Environment:
 *   DTX_TEST_AMQP_URL     the broker (scripts/rabbitmq.sh prints it); without
 *                         it the broker tests are skipped, and they fail when
 *                         DTX_REQUIRE_AMQP=1
 *   DTX_TEST_AMQP_MGMT    its management API (the dropped-connection test is
 *                         skipped without it)
 *   DTX_TEST_AMQPS_URL, DTX_TEST_AMQP_CACERT
 *                         its TLS listener and the CA that signed it (the TLS
 *                         test is skipped without them)
 * Queue names and gids carry the process id and the time.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <amqp.h>
#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "amqp_testutil.h"
#include "dtx.h"

static const char *amqp_url;
static char run_prefix[64];
static unsigned seq;

/* ---- the participant: libdtx's loop with a SQLite barrier ---------------- */

struct fx {
    char queue[128], dbpath[128];
    sqlite3 *db, *look;
    struct dtx_amqp_participant *p;
    pthread_t thread;
    int running;
    atomic_int calls;
    char last_op[32], last_type[32], last_body[256], last_id[400];
    pthread_mutex_t mu;
    struct dtx_client *c;
};

static struct fx F;

/* Body {"fail":...} refuses with "no funds"; anything else succeeds. The
 * effect row is written first, so a refusal shows as a rollback. */
static enum dtx_amqp_result handler(void *arg, const struct dtx_amqp_msg *m, char *reason,
                                    size_t cap)
{
    struct fx *f = arg;
    atomic_fetch_add(&f->calls, 1);
    pthread_mutex_lock(&f->mu);
    snprintf(f->last_op, sizeof f->last_op, "%s", m->op);
    snprintf(f->last_type, sizeof f->last_type, "%s", m->type);
    snprintf(f->last_body, sizeof f->last_body, "%s", m->body);
    snprintf(f->last_id, sizeof f->last_id, "%s", m->message_id);
    pthread_mutex_unlock(&f->mu);
    sqlite3_stmt *st = NULL;
    int ok = sqlite3_prepare_v2(f->db, "INSERT INTO effects (gid, branch) VALUES (?1, ?2)", -1, &st,
                                NULL) == SQLITE_OK &&
             sqlite3_bind_text(st, 1, m->gid, -1, SQLITE_STATIC) == SQLITE_OK &&
             sqlite3_bind_text(st, 2, m->branch, -1, SQLITE_STATIC) == SQLITE_OK &&
             sqlite3_step(st) == SQLITE_DONE;
    sqlite3_finalize(st);
    if (!ok)
        return DTX_AMQP_RETRY;
    if (strstr(m->body, "\"fail\"") != NULL) {
        snprintf(reason, cap, "no funds");
        return DTX_AMQP_FAILURE;
    }
    return DTX_AMQP_SUCCESS;
}

static void *run_main(void *arg)
{
    struct fx *f = arg;
    dtx_amqp_participant_run(f->p);
    return NULL;
}

static void start_participant(void)
{
    struct dtx_amqp_opts o = {.broker_url = amqp_url, .queue = F.queue, .sqlite = F.db};
    assert_int_equal(dtx_amqp_participant_new(&o, handler, &F, &F.p), 0);
    assert_int_equal(pthread_create(&F.thread, NULL, run_main, &F), 0);
    F.running = 1;
}

static void stop_participant(void)
{
    if (!F.running)
        return;
    dtx_amqp_participant_stop(F.p);
    pthread_join(F.thread, NULL);
    dtx_amqp_participant_free(F.p);
    F.p = NULL;
    F.running = 0;
}

static long effects(const char *gid)
{
    sqlite3_stmt *st = NULL;
    long n = -1;
    if (sqlite3_prepare_v2(F.look, "SELECT count(*) FROM effects WHERE gid = ?1", -1, &st, NULL) ==
            SQLITE_OK &&
        sqlite3_bind_text(st, 1, gid, -1, SQLITE_STATIC) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    assert_true(n >= 0);
    return n;
}

/* ---- the test's own broker connection, to make and delete queues --------- */

static void queue_op(const char *q, int del)
{
    amqp_connection_state_t c = amqp_test_connect(amqp_url);
    if (del)
        amqp_queue_delete(c, 1, amqp_cstring_bytes(q), 0, 0);
    else
        amqp_queue_declare(c, 1, amqp_cstring_bytes(q), 0, 1, 0, 0, amqp_empty_table);
    assert_int_equal(amqp_get_rpc_reply(c).reply_type, AMQP_RESPONSE_NORMAL);
    amqp_channel_close(c, 1, AMQP_REPLY_SUCCESS);
    amqp_connection_close(c, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(c);
}

/* ---- fixtures -------------------------------------------------------------- */

static void gid(char *out, size_t cap, const char *what)
{
    snprintf(out, cap, "%s-%s-%u", run_prefix, what, ++seq);
}

static int broker_setup(void **state)
{
    (void)state;
    memset(&F, 0, sizeof F);
    pthread_mutex_init(&F.mu, NULL);
    if (amqp_url == NULL)
        return 0;
    snprintf(F.queue, sizeof F.queue, "%s.try.%u", run_prefix, ++seq);
    snprintf(F.dbpath, sizeof F.dbpath, "/tmp/dtx-try-%ld-%u.db", (long)getpid(), seq);
    assert_int_equal(sqlite3_open(F.dbpath, &F.db), SQLITE_OK);
    assert_int_equal(sqlite3_open(F.dbpath, &F.look), SQLITE_OK);
    sqlite3_busy_timeout(F.db, 5000);
    sqlite3_busy_timeout(F.look, 5000);
    assert_int_equal(dtx_barrier_sqlite_init(F.db), 0);
    assert_int_equal(
        sqlite3_exec(F.db, "CREATE TABLE effects (gid TEXT, branch TEXT)", NULL, NULL, NULL),
        SQLITE_OK);
    queue_op(F.queue, 0);
    assert_int_equal(dtx_client_new("http://127.0.0.1:9", &F.c), 0);
    assert_int_equal(dtx_client_set_amqp(F.c, amqp_url, NULL), 0);
    assert_int_equal(dtx_client_set_timeout(F.c, 5000), 0);
    return 0;
}

static int broker_teardown(void **state)
{
    (void)state;
    stop_participant();
    dtx_client_free(F.c);
    if (F.queue[0] != '\0') {
        char dead[160];
        snprintf(dead, sizeof dead, "%s.dead", F.queue);
        queue_op(F.queue, 1);
        queue_op(dead, 1);
    }
    if (F.db != NULL) {
        sqlite3_close(F.db);
        sqlite3_close(F.look);
        unlink(F.dbpath);
    }
    pthread_mutex_destroy(&F.mu);
    memset(&F, 0, sizeof F);
    return 0;
}

static void need_broker(void)
{
    if (amqp_url == NULL)
        skip();
}

static void target(char *out, size_t cap)
{
    snprintf(out, cap, "amqp:///%s", F.queue);
}

static const char *last_message(void)
{
    return dtx_client_last_error(F.c)->message;
}

/* ---- tests ------------------------------------------------------------------ */

/* Bad input is refused before anything is sent, with a message naming it. */
static void test_bad_input(void **state)
{
    (void)state;
    struct dtx_client *c = NULL;
    enum dtx_try_result r;
    assert_int_equal(dtx_client_new("http://127.0.0.1:9", &c), 0);
    assert_int_equal(dtx_client_set_amqp(NULL, "amqp://guest:guest@localhost:5672/%2f", NULL),
                     DTX_EINVAL);
    assert_int_equal(dtx_client_set_amqp(c, "http://localhost/", NULL), DTX_EINVAL);
    assert_non_null(strstr(dtx_client_last_error(c)->message, "broker_url"));
    assert_int_equal(dtx_client_set_amqp(c, NULL, NULL), DTX_EINVAL);
    /* no broker given */
    assert_int_equal(dtx_tcc_try(c, "amqp:///orders", "g1", "b1", "{}", &r), DTX_EINVAL);
    assert_non_null(strstr(dtx_client_last_error(c)->message, "dtx_client_set_amqp"));
    /* malformed targets, even with a broker (nothing is connected for them) */
    assert_int_equal(dtx_client_set_amqp(c, "amqp://guest:guest@127.0.0.1:9/%2f", NULL), 0);
    const char *bad[] = {"amqp:///", "amqp://ex", "amqp:///q%zz", "amqp:///q%4", "amqp://a%00/b"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(dtx_tcc_try(c, bad[i], "g1", "b1", "{}", &r), DTX_EINVAL);
        assert_non_null(strstr(dtx_client_last_error(c)->message, "try_url"));
    }
    /* a payload that is not JSON */
    assert_int_equal(dtx_tcc_try(c, "amqp:///orders", "g1", "b1", "{", &r), DTX_EINVAL);
    /* a broker that is not there: transient, with the reason, never the password */
    assert_int_equal(dtx_client_set_amqp(c, "amqp://guest:s3cret@127.0.0.1:9/%2f", NULL), 0);
    assert_int_equal(dtx_tcc_try(c, "amqp:///orders", "g1", "b1", "{}", &r), 0);
    assert_int_equal(r, DTX_TRY_TRANSIENT);
    assert_non_null(strstr(dtx_client_last_error(c)->message, "cannot connect"));
    assert_null(strstr(dtx_client_last_error(c)->message, "s3cret"));
    dtx_client_free(c);
}

/* A Try reaches the participant as a tcc try command; its SUCCESS comes
 * back. The same Try again is answered by the barrier, not the handler. */
static void test_success_and_duplicate(void **state)
{
    (void)state;
    need_broker();
    char g[96], t[200], want_id[160];
    gid(g, sizeof g, "ok");
    target(t, sizeof t);
    start_participant();
    enum dtx_try_result r = DTX_TRY_TRANSIENT;
    assert_int_equal(dtx_tcc_try(F.c, t, g, "debit", "{\"amount\":30}", &r), 0);
    assert_int_equal(r, DTX_TRY_SUCCEEDED);
    assert_int_equal(dtx_client_last_error(F.c)->code, 0);
    assert_int_equal(atomic_load(&F.calls), 1);
    snprintf(want_id, sizeof want_id, "%s/debit/try", g);
    pthread_mutex_lock(&F.mu);
    assert_string_equal(F.last_op, "try");
    assert_string_equal(F.last_type, "tcc");
    assert_string_equal(F.last_body, "{\"amount\":30}");
    assert_string_equal(F.last_id, want_id);
    pthread_mutex_unlock(&F.mu);
    assert_int_equal(dtx_tcc_try(F.c, t, g, "debit", "{\"amount\":30}", &r), 0);
    assert_int_equal(r, DTX_TRY_SUCCEEDED);
    assert_int_equal(atomic_load(&F.calls), 1);
    assert_int_equal(effects(g), 1);
    /* a NULL payload is {} */
    gid(g, sizeof g, "nullpayload");
    assert_int_equal(dtx_tcc_try(F.c, t, g, "credit", NULL, &r), 0);
    assert_int_equal(r, DTX_TRY_SUCCEEDED);
    pthread_mutex_lock(&F.mu);
    assert_string_equal(F.last_body, "{}");
    pthread_mutex_unlock(&F.mu);
}

/* The participant refuses: FAILED, with its reason; its work rolled back. */
static void test_failure(void **state)
{
    (void)state;
    need_broker();
    char g[96], t[200];
    gid(g, sizeof g, "refused");
    target(t, sizeof t);
    start_participant();
    enum dtx_try_result r = DTX_TRY_SUCCEEDED;
    assert_int_equal(dtx_tcc_try(F.c, t, g, "debit", "{\"fail\":true}", &r), 0);
    assert_int_equal(r, DTX_TRY_FAILED);
    assert_non_null(strstr(last_message(), "no funds"));
    assert_int_equal(effects(g), 0);
}

/* No queue bound, then an exchange that does not exist: TRANSIENT, saying
 * which; the client goes on working on a new connection afterwards. */
static void test_unroutable_and_missing_exchange(void **state)
{
    (void)state;
    need_broker();
    char g[96], t[200], nowhere[200];
    gid(g, sizeof g, "routing");
    target(t, sizeof t);
    start_participant();
    enum dtx_try_result r = DTX_TRY_SUCCEEDED;
    snprintf(nowhere, sizeof nowhere, "amqp:///%s.nobody", F.queue);
    assert_int_equal(dtx_tcc_try(F.c, nowhere, g, "a", "{}", &r), 0);
    assert_int_equal(r, DTX_TRY_TRANSIENT);
    assert_non_null(strstr(last_message(), "unroutable"));
    snprintf(nowhere, sizeof nowhere, "amqp://%s.no-exchange/x", F.queue);
    assert_int_equal(dtx_tcc_try(F.c, nowhere, g, "b", "{}", &r), 0);
    assert_int_equal(r, DTX_TRY_TRANSIENT);
    assert_non_null(strstr(last_message(), "404"));
    assert_int_equal(atomic_load(&F.calls), 0);
    assert_int_equal(dtx_tcc_try(F.c, t, g, "c", "{}", &r), 0);
    assert_int_equal(r, DTX_TRY_SUCCEEDED);
    assert_int_equal(atomic_load(&F.calls), 1);
}

/* Nobody consumes: no reply in time is TRANSIENT. When the participant
 * comes up it works through the command; its late reply is not taken for
 * the next Try's, and the Try called again is a duplicate for the barrier. */
static void test_no_reply_then_late_reply(void **state)
{
    (void)state;
    need_broker();
    char g[96], g2[96], t[200];
    gid(g, sizeof g, "late");
    gid(g2, sizeof g2, "next");
    target(t, sizeof t);
    assert_int_equal(dtx_client_set_timeout(F.c, 300), 0);
    enum dtx_try_result r = DTX_TRY_SUCCEEDED;
    assert_int_equal(dtx_tcc_try(F.c, t, g, "a", "{}", &r), 0);
    assert_int_equal(r, DTX_TRY_TRANSIENT);
    assert_non_null(strstr(last_message(), "no reply within 300 ms"));
    start_participant();
    for (int i = 0; i < 100 && effects(g) == 0; i++)
        usleep(50 * 1000); /* the command waits in the queue; its reply comes late */
    assert_int_equal(effects(g), 1);
    assert_int_equal(dtx_client_set_timeout(F.c, 5000), 0);
    assert_int_equal(dtx_tcc_try(F.c, t, g2, "fail", "{\"fail\":1}", &r), 0);
    assert_int_equal(r, DTX_TRY_FAILED); /* its own reply, not the late SUCCESS */
    assert_int_equal(dtx_tcc_try(F.c, t, g, "a", "{}", &r), 0);
    assert_int_equal(r, DTX_TRY_SUCCEEDED);
    assert_int_equal(effects(g), 1);
    assert_int_equal(atomic_load(&F.calls), 2);
}

/* The broker drops the kept connection between two Tries (as at a restart):
 * the next Try finds it dead, connects again and succeeds. */
static void test_connection_dropped_between_tries(void **state)
{
    (void)state;
    need_broker();
    const char *mgmt = getenv("DTX_TEST_AMQP_MGMT");
    if (mgmt == NULL || mgmt[0] == '\0')
        skip();
    char g[96], t[200];
    gid(g, sizeof g, "dropped");
    target(t, sizeof t);
    start_participant();
    enum dtx_try_result r = DTX_TRY_TRANSIENT;
    assert_int_equal(dtx_tcc_try(F.c, t, g, "a", "{}", &r), 0);
    assert_int_equal(r, DTX_TRY_SUCCEEDED);
    char name[64];
    snprintf(name, sizeof name, "dtx-client %ld", (long)getpid());
    assert_int_equal(mgmt_close_connections(mgmt, name), 1);
    usleep(200 * 1000);
    assert_int_equal(dtx_tcc_try(F.c, t, g, "b", "{}", &r), 0);
    assert_int_equal(r, DTX_TRY_SUCCEEDED);
    assert_int_equal(effects(g), 2);
}

/* A wrong password: TRANSIENT, the broker's 403 in the message, never the
 * password; nothing reaches the participant. */
static void test_login_refused(void **state)
{
    (void)state;
    need_broker();
    char url[512], g[96], t[200];
    url_with_password(amqp_url, "wrong-s3cret", url, sizeof url);
    gid(g, sizeof g, "login");
    target(t, sizeof t);
    start_participant();
    assert_int_equal(dtx_client_set_amqp(F.c, url, NULL), 0);
    enum dtx_try_result r = DTX_TRY_SUCCEEDED;
    assert_int_equal(dtx_tcc_try(F.c, t, g, "a", "{}", &r), 0);
    assert_int_equal(r, DTX_TRY_TRANSIENT);
    assert_non_null(strstr(last_message(), "403"));
    assert_null(strstr(last_message(), "wrong-s3cret"));
    assert_int_equal(atomic_load(&F.calls), 0);
}

/* amqps:// with the CA that signed the broker's certificate works; with
 * the system's CAs (which did not) it is refused, and nothing is sent. */
static void test_tls(void **state)
{
    (void)state;
    need_broker();
    const char *url = getenv("DTX_TEST_AMQPS_URL");
    const char *ca = getenv("DTX_TEST_AMQP_CACERT");
    if (url == NULL || url[0] == '\0' || ca == NULL || ca[0] == '\0')
        skip();
    char g[96], t[200];
    gid(g, sizeof g, "tls");
    target(t, sizeof t);
    start_participant();
    enum dtx_try_result r = DTX_TRY_SUCCEEDED;
    assert_int_equal(dtx_client_set_amqp(F.c, url, NULL), 0);
    assert_int_equal(dtx_tcc_try(F.c, t, g, "a", "{}", &r), 0);
    assert_int_equal(r, DTX_TRY_TRANSIENT);
    assert_int_equal(atomic_load(&F.calls), 0);
    assert_int_equal(dtx_client_set_amqp(F.c, url, ca), 0);
    assert_int_equal(dtx_tcc_try(F.c, t, g, "a", "{}", &r), 0);
    assert_int_equal(r, DTX_TRY_SUCCEEDED);
    assert_int_equal(effects(g), 1);
}

int main(void)
{
    amqp_url = getenv("DTX_TEST_AMQP_URL");
    if (amqp_url != NULL && amqp_url[0] == '\0')
        amqp_url = NULL;
    if (amqp_url == NULL) {
        const char *req = getenv("DTX_REQUIRE_AMQP");
        if (req != NULL && strcmp(req, "1") == 0) {
            fprintf(stderr, "test_amqp_try: DTX_REQUIRE_AMQP=1 but DTX_TEST_AMQP_URL is not set\n");
            return 1;
        }
        fprintf(stderr, "test_amqp_try: DTX_TEST_AMQP_URL is not set: RabbitMQ tests skipped\n");
    }
    snprintf(run_prefix, sizeof run_prefix, "dtxtry-%ld-%ld", (long)getpid(), (long)time(NULL));
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test_setup_teardown(test_success_and_duplicate, broker_setup, broker_teardown),
        cmocka_unit_test_setup_teardown(test_failure, broker_setup, broker_teardown),
        cmocka_unit_test_setup_teardown(test_unroutable_and_missing_exchange, broker_setup,
                                        broker_teardown),
        cmocka_unit_test_setup_teardown(test_no_reply_then_late_reply, broker_setup,
                                        broker_teardown),
        cmocka_unit_test_setup_teardown(test_connection_dropped_between_tries, broker_setup,
                                        broker_teardown),
        cmocka_unit_test_setup_teardown(test_login_refused, broker_setup, broker_teardown),
        cmocka_unit_test_setup_teardown(test_tls, broker_setup, broker_teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
