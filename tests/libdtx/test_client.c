/*
 * test_client.c - libdtx's client without a coordinator: the spec builders
 * and their argument checks, the parsing of answers (reply.c), the error
 * record, and what goes over the wire, against a fake server.
 *
 * The fake server (struct fake) is a thread on a loopback socket that takes
 * one connection at a time, keeps the request it received, and answers with
 * the canned bytes the test gave it, then closes. A closed port (bound, then
 * closed again) stands for a coordinator that is down.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "client_int.h"
#include "dtx.h"

/* ---- a fake HTTP server ---------------------------------------------------- */

struct fake {
    int fd;
    int port;
    pthread_t thread;
    const char *answer; /* the raw HTTP answer to send */
    char request[8192]; /* the request received, NUL-terminated */
    size_t request_len;
};

/* Read one request (headers, then Content-Length bytes of body). */
static void fake_read_request(struct fake *f, int conn)
{
    size_t want = 0;
    char *end = NULL;

    f->request_len = 0;
    for (;;) {
        ssize_t n = read(conn, f->request + f->request_len, sizeof f->request - 1 - f->request_len);
        if (n <= 0)
            break;
        f->request_len += (size_t)n;
        f->request[f->request_len] = '\0';
        if (end == NULL) {
            end = strstr(f->request, "\r\n\r\n");
            if (end != NULL) {
                const char *cl = strcasestr(f->request, "Content-Length:");
                want = (size_t)(end + 4 - f->request) + (cl ? strtoul(cl + 15, NULL, 10) : 0);
            }
        }
        if (end != NULL && f->request_len >= want)
            break;
    }
}

static void *fake_main(void *arg)
{
    struct fake *f = arg;
    int conn = accept(f->fd, NULL, NULL);

    if (conn < 0)
        return NULL;
    fake_read_request(f, conn);
    if (write(conn, f->answer, strlen(f->answer)) < 0) {
        /* the client went away: the test will say so */
    }
    close(conn);
    return NULL;
}

/* Listen on a free loopback port; serve one request with answer. */
static void fake_start(struct fake *f, const char *answer)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sa;
    int one = 1;

    memset(f, 0, sizeof *f);
    f->answer = answer;
    f->fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(f->fd >= 0);
    setsockopt(f->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    assert_int_equal(bind(f->fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(f->fd, 4), 0);
    assert_int_equal(getsockname(f->fd, (struct sockaddr *)&sa, &len), 0);
    f->port = ntohs(sa.sin_port);
    assert_int_equal(pthread_create(&f->thread, NULL, fake_main, f), 0);
}

static void fake_stop(struct fake *f)
{
    pthread_join(f->thread, NULL);
    close(f->fd);
}

static void fake_url(const struct fake *f, char *out, size_t cap)
{
    snprintf(out, cap, "http://127.0.0.1:%d", f->port);
}

/* A port nothing listens on: bound a moment ago, then closed. */
static int closed_port(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    close(fd);
    return ntohs(sa.sin_port);
}

static struct dtx_client *client_at(const char *url)
{
    struct dtx_client *c = NULL;

    assert_int_equal(dtx_client_new(url, &c), DTX_OK);
    assert_non_null(c);
    return c;
}

static struct dtx_client *closed_client(void)
{
    char url[64];

    snprintf(url, sizeof url, "http://127.0.0.1:%d", closed_port());
    return client_at(url);
}

/* An HTTP answer with a JSON body. */
static char *answer(int status, const char *body)
{
    static char buf[4096];

    snprintf(buf, sizeof buf,
             "HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
             "Connection: close\r\n\r\n%s",
             status, strlen(body), body);
    return buf;
}

static void assert_body_json(const struct dtx_spec *s, const char *want)
{
    char *text = NULL;

    assert_int_equal(dtx_spec_to_json(s, &text), DTX_OK);
    assert_string_equal(text, want);
    dtx_free(text);
}

/* ---- the client object --------------------------------------------------- */

static void client_new_rejects_bad_urls(void **state)
{
    static const char *const bad[] = {"",          "127.0.0.1:7788", "ftp://x", "http://",
                                      "http//x:1", "http://a b",     "://x"};
    struct dtx_client *c = NULL;

    (void)state;
    assert_int_equal(dtx_client_new(NULL, &c), DTX_EINVAL);
    assert_int_equal(dtx_client_new("http://127.0.0.1:7788", NULL), DTX_EINVAL);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(dtx_client_new(bad[i], &c), DTX_EINVAL);
        assert_null(c);
    }
    c = client_at("https://dtx.example:7788/");
    assert_int_equal(dtx_client_set_timeout(c, -1), DTX_EINVAL);
    assert_int_equal(dtx_client_set_timeout(c, 0), DTX_OK);
    assert_int_equal(dtx_client_set_timeout(NULL, 10), DTX_EINVAL);
    dtx_client_free(c);
    dtx_client_free(NULL);
}

static void fresh_client_has_empty_error(void **state)
{
    struct dtx_client *c = client_at("http://127.0.0.1:7788");
    const struct dtx_error *e = dtx_client_last_error(c);

    (void)state;
    assert_null(dtx_client_last_error(NULL));
    assert_non_null(e);
    assert_int_equal(e->code, 0);
    assert_int_equal(e->http_status, 0);
    assert_string_equal(e->api_code, "");
    assert_string_equal(e->field, "");
    assert_string_equal(e->message, "");
    dtx_client_free(c);
}

/* ---- builders -------------------------------------------------------------- */

static void saga_builder_body(void **state)
{
    struct dtx_spec *s = NULL;
    const int after3[] = {1, 2};

    (void)state;
    assert_int_equal(dtx_saga_new(&s), DTX_OK);
    assert_int_equal(dtx_spec_set_gid(s, "order-1042"), DTX_OK);
    assert_int_equal(dtx_saga_add_step(s, "http://a/debit", "http://a/undo", "{ \"amount\": 30 }"),
                     DTX_OK);
    assert_int_equal(dtx_saga_add_step(s, "http://b/credit", "http://b/undo", NULL), DTX_OK);
    assert_int_equal(dtx_saga_add_step(s, "https://c/ship", "https://c/cancel", "null"), DTX_OK);
    assert_int_equal(dtx_saga_set_after(s, 3, after3, 2), DTX_OK);
    assert_int_equal(dtx_saga_set_after(s, 1, NULL, 0), DTX_OK);
    assert_int_equal(dtx_spec_set_retry(s, 20, 200, 0), DTX_OK);
    assert_int_equal(dtx_spec_set_request_timeout(s, 5000), DTX_OK);
    assert_int_equal(dtx_spec_set_timeout(s, 0), DTX_OK);
    assert_int_equal(dtx_spec_set_wait(s, 1500), DTX_OK);
    assert_body_json(s,
                     "{\"type\":\"saga\",\"steps\":["
                     "{\"action\":\"http://a/debit\",\"compensate\":\"http://a/undo\","
                     "\"payload\":{\"amount\":30},\"after\":[]},"
                     "{\"action\":\"http://b/credit\",\"compensate\":\"http://b/undo\"},"
                     "{\"action\":\"https://c/ship\",\"compensate\":\"https://c/cancel\","
                     "\"payload\":null,\"after\":[1,2]}],"
                     "\"gid\":\"order-1042\","
                     "\"retry\":{\"initial_interval_ms\":20,\"max_interval_ms\":200,\"limit\":0},"
                     "\"request_timeout_ms\":5000,\"timeout_ms\":0,"
                     "\"wait\":true,\"wait_timeout_ms\":1500}");
    /* partial retry policies leave the other fields to the coordinator */
    assert_int_equal(dtx_spec_set_retry(s, -1, -1, 3), DTX_OK);
    assert_int_equal(dtx_spec_set_retry(s, -1, -1, -1), DTX_OK);
    dtx_spec_free(s);
}

static void other_modes_body(void **state)
{
    struct dtx_spec *s = NULL;

    (void)state;
    assert_int_equal(dtx_tcc_new(&s), DTX_OK);
    assert_body_json(s, "{\"type\":\"tcc\"}");
    dtx_spec_free(s);
    assert_int_equal(dtx_2pc_new(&s), DTX_OK);
    assert_int_equal(dtx_spec_set_gid(s, "x"), DTX_OK);
    assert_body_json(s, "{\"type\":\"2pc\",\"gid\":\"x\"}");
    dtx_spec_free(s);
    assert_int_equal(dtx_msg_new("http://svc/check", &s), DTX_OK);
    assert_int_equal(dtx_msg_add_step(s, "amqp://ex/key", "{\"n\":1}"), DTX_OK);
    assert_int_equal(dtx_spec_set_timeout(s, 2000), DTX_OK);
    assert_body_json(s, "{\"type\":\"msg\",\"steps\":[{\"action\":\"amqp://ex/key\","
                        "\"payload\":{\"n\":1}}],\"check\":\"http://svc/check\","
                        "\"timeout_ms\":2000}");
    dtx_spec_free(s);
    dtx_spec_free(NULL);
}

static void builders_reject_bad_arguments(void **state)
{
    static const char *const bad_gids[] = {"", "a/b", "a b", "ü", "a?b", "a%20"};
    char long_gid[DTX_GID_MAX + 2];
    struct dtx_spec *s = NULL, *t = NULL, *m = NULL;
    const int self[] = {2}, zero[] = {0}, neg[] = {-1};
    char *text = NULL;

    (void)state;
    assert_int_equal(dtx_saga_new(NULL), DTX_EINVAL);
    assert_int_equal(dtx_tcc_new(NULL), DTX_EINVAL);
    assert_int_equal(dtx_2pc_new(NULL), DTX_EINVAL);
    assert_int_equal(dtx_msg_new(NULL, &m), DTX_EINVAL);
    assert_int_equal(dtx_msg_new("", &m), DTX_EINVAL);
    assert_int_equal(dtx_msg_new("check", &m), DTX_EINVAL);
    assert_int_equal(dtx_msg_new("http://c/check", NULL), DTX_EINVAL);
    assert_null(m);

    assert_int_equal(dtx_saga_new(&s), DTX_OK);
    /* no steps yet: no body */
    assert_int_equal(dtx_spec_to_json(s, &text), DTX_EINVAL);
    assert_null(text);
    assert_int_equal(dtx_spec_to_json(NULL, &text), DTX_EINVAL);

    assert_int_equal(dtx_saga_add_step(NULL, "http://a/x", "http://a/y", NULL), DTX_EINVAL);
    assert_int_equal(dtx_saga_add_step(s, NULL, "http://a/y", NULL), DTX_EINVAL);
    assert_int_equal(dtx_saga_add_step(s, "http://a/x", NULL, NULL), DTX_EINVAL);
    assert_int_equal(dtx_saga_add_step(s, "", "http://a/y", NULL), DTX_EINVAL);
    assert_int_equal(dtx_saga_add_step(s, "a/x", "http://a/y", NULL), DTX_EINVAL);
    assert_int_equal(dtx_saga_add_step(s, "http://a/x", "http://a/y", "{"), DTX_EINVAL);
    assert_int_equal(dtx_saga_add_step(s, "http://a/x", "http://a/y", ""), DTX_EINVAL);
    assert_int_equal(dtx_saga_add_step(s, "http://a/x", "http://a/y", "{\"a\":1} x"), DTX_EINVAL);
    assert_int_equal(dtx_saga_add_step(s, "http://a/x", "http://a/y", "{\"a\":1,\"a\":2}"),
                     DTX_EINVAL);
    assert_int_equal(dtx_msg_add_step(s, "http://a/x", NULL), DTX_EINVAL); /* not a msg */
    /* refused steps were not added */
    assert_int_equal(dtx_spec_to_json(s, &text), DTX_EINVAL);

    assert_int_equal(dtx_saga_add_step(s, "http://a/x", "http://a/y", NULL), DTX_OK);
    assert_int_equal(dtx_saga_add_step(s, "http://b/x", "http://b/y", NULL), DTX_OK);
    assert_int_equal(dtx_saga_set_after(s, 0, NULL, 0), DTX_EINVAL);
    assert_int_equal(dtx_saga_set_after(s, 3, NULL, 0), DTX_EINVAL);
    assert_int_equal(dtx_saga_set_after(s, 2, self, 1), DTX_EINVAL);
    assert_int_equal(dtx_saga_set_after(s, 2, zero, 1), DTX_EINVAL);
    assert_int_equal(dtx_saga_set_after(s, 2, neg, 1), DTX_EINVAL);
    assert_int_equal(dtx_saga_set_after(s, 2, NULL, 1), DTX_EINVAL);
    assert_int_equal(dtx_saga_set_after(NULL, 1, NULL, 0), DTX_EINVAL);

    for (size_t i = 0; i < sizeof bad_gids / sizeof bad_gids[0]; i++)
        assert_int_equal(dtx_spec_set_gid(s, bad_gids[i]), DTX_EINVAL);
    assert_int_equal(dtx_spec_set_gid(s, NULL), DTX_EINVAL);
    assert_int_equal(dtx_spec_set_gid(NULL, "a"), DTX_EINVAL);
    memset(long_gid, 'g', sizeof long_gid - 1);
    long_gid[sizeof long_gid - 1] = '\0'; /* DTX_GID_MAX + 1 bytes */
    assert_int_equal(dtx_spec_set_gid(s, long_gid), DTX_EINVAL);
    long_gid[DTX_GID_MAX] = '\0';
    assert_int_equal(dtx_spec_set_gid(s, long_gid), DTX_OK);
    assert_int_equal(dtx_spec_set_gid(s, "A-z.0_9:x"), DTX_OK);

    assert_int_equal(dtx_spec_set_retry(NULL, 1, 1, 1), DTX_EINVAL);
    assert_int_equal(dtx_spec_set_request_timeout(s, 0), DTX_EINVAL);
    assert_int_equal(dtx_spec_set_request_timeout(s, -5), DTX_EINVAL);
    assert_int_equal(dtx_spec_set_timeout(s, -1), DTX_EINVAL);
    assert_int_equal(dtx_spec_set_wait(s, -1), DTX_EINVAL);
    assert_int_equal(dtx_spec_set_wait(NULL, 0), DTX_EINVAL);

    assert_int_equal(dtx_tcc_new(&t), DTX_OK);
    assert_int_equal(dtx_saga_add_step(t, "http://a/x", "http://a/y", NULL), DTX_EINVAL);
    assert_int_equal(dtx_saga_set_after(t, 1, NULL, 0), DTX_EINVAL);
    assert_int_equal(dtx_msg_add_step(t, "http://a/x", NULL), DTX_EINVAL);
    assert_int_equal(dtx_msg_new("http://c/check", &m), DTX_OK);
    assert_int_equal(dtx_msg_add_step(m, "", NULL), DTX_EINVAL);
    assert_int_equal(dtx_msg_add_step(m, "http://a/x", "[1,"), DTX_EINVAL);
    assert_int_equal(dtx_spec_to_json(m, &text), DTX_EINVAL); /* a msg needs steps */
    dtx_spec_free(m);
    dtx_spec_free(t);
    dtx_spec_free(s);
}

/* ---- calls refused before anything is sent -------------------------------- */

static void calls_reject_bad_arguments(void **state)
{
    struct dtx_client *c = closed_client();
    const struct dtx_error *e = dtx_client_last_error(c);
    struct dtx_txn *t = NULL;
    struct dtx_txn_list *l = NULL;
    struct dtx_list_opts lo = {.limit = -1};
    enum dtx_try_result r;
    char br[DTX_BRANCH_MAX + 1];
    char long_branch[DTX_BRANCH_MAX + 2];

    (void)state;
    memset(long_branch, 'b', sizeof long_branch - 1);
    long_branch[sizeof long_branch - 1] = '\0';
    /* each would be DTX_EIO if it reached the (closed) port */
    assert_int_equal(dtx_create(c, NULL, &t), DTX_EINVAL);
    assert_int_equal(e->code, DTX_EINVAL);
    assert_int_equal(e->http_status, 0);
    assert_true(strlen(e->message) > 0);
    assert_int_equal(dtx_create_json(c, "{\"type\": \"saga\",", &t), DTX_EINVAL);
    assert_non_null(strstr(e->message, "line 1"));
    assert_int_equal(dtx_create_json(c, "[1, 2]", &t), DTX_EINVAL);
    assert_non_null(strstr(e->message, "not a JSON object"));
    assert_int_equal(dtx_create_json(c, "", &t), DTX_EINVAL);
    assert_int_equal(dtx_create_json(c, NULL, &t), DTX_EINVAL);
    assert_int_equal(dtx_create_json(NULL, "{}", &t), DTX_EINVAL);
    assert_int_equal(dtx_get(c, "a/b", &t), DTX_EINVAL);
    assert_non_null(strstr(e->message, "gid"));
    assert_int_equal(dtx_get(c, "", &t), DTX_EINVAL);
    assert_int_equal(dtx_get(c, "x", NULL), DTX_EINVAL);
    assert_int_equal(dtx_get(NULL, "x", &t), DTX_EINVAL);
    assert_int_equal(dtx_submit(c, NULL, 0, &t), DTX_EINVAL);
    assert_int_equal(dtx_submit(c, "x", -1, &t), DTX_EINVAL);
    assert_int_equal(dtx_abort(c, "x y", 0, &t), DTX_EINVAL);
    assert_int_equal(dtx_retry(c, "", &t), DTX_EINVAL);
    assert_int_equal(dtx_wait(c, "x", -1, &t), DTX_EINVAL);
    assert_int_equal(dtx_list(c, &lo, &l), DTX_EINVAL);
    assert_int_equal(dtx_list(c, NULL, NULL), DTX_EINVAL);
    assert_int_equal(dtx_register_tcc(c, "x", NULL, "http://a/c", "", NULL, br), DTX_EINVAL);
    assert_non_null(strstr(e->message, "cancel"));
    assert_int_equal(dtx_register_tcc(c, "x", "b/1", "http://a/c", "http://a/x", NULL, br),
                     DTX_EINVAL);
    assert_int_equal(dtx_register_tcc(c, "x", long_branch, "http://a/c", "http://a/x", NULL, br),
                     DTX_EINVAL);
    assert_int_equal(dtx_register_tcc(c, "x", NULL, "http://a/c", "http://a/x", "{x}", br),
                     DTX_EINVAL);
    assert_non_null(strstr(e->message, "payload"));
    assert_int_equal(dtx_register_2pc(c, "x", NULL, "http://a/p", NULL, "http://a/r", NULL, br),
                     DTX_EINVAL);
    assert_int_equal(
        dtx_register_2pc(c, "", NULL, "http://a/p", "http://a/c", "http://a/r", NULL, br),
        DTX_EINVAL);
    assert_int_equal(dtx_tcc_try(c, "http://a/try", "x", NULL, NULL, &r), DTX_EINVAL);
    assert_int_equal(dtx_tcc_try(c, "http://a/try", "x", "1", "nope", &r), DTX_EINVAL);
    assert_int_equal(dtx_tcc_try(c, "", "x", "1", NULL, &r), DTX_EINVAL);
    assert_int_equal(dtx_tcc_try(c, "http://a/try", "x", "1", NULL, NULL), DTX_EINVAL);
    assert_null(t);
    assert_null(l);
    dtx_client_free(c);
}

/* ---- a coordinator that is down -------------------------------------------- */

static void closed_port_is_eio(void **state)
{
    struct dtx_client *c = closed_client();
    const struct dtx_error *e = dtx_client_last_error(c);
    struct dtx_txn *t = NULL;
    struct dtx_txn_list *l = NULL;
    struct dtx_spec *s = NULL;
    char br[DTX_BRANCH_MAX + 1];
    char url[64];
    enum dtx_try_result r = DTX_TRY_SUCCEEDED;

    (void)state;
    assert_int_equal(dtx_get(c, "x", &t), DTX_EIO);
    assert_int_equal(e->code, DTX_EIO);
    assert_int_equal(e->http_status, 0);
    assert_string_equal(e->api_code, "");
    assert_string_equal(e->field, "");
    assert_true(strlen(e->message) > 0);
    assert_null(t);

    assert_int_equal(dtx_saga_new(&s), DTX_OK);
    assert_int_equal(dtx_saga_add_step(s, "http://a/x", "http://a/y", NULL), DTX_OK);
    assert_int_equal(dtx_create(c, s, &t), DTX_EIO);
    assert_int_equal(dtx_create_json(c, "{\"type\":\"tcc\"}", &t), DTX_EIO);
    assert_int_equal(dtx_list(c, NULL, &l), DTX_EIO);
    assert_int_equal(dtx_submit(c, "x", 0, &t), DTX_EIO);
    assert_int_equal(dtx_abort(c, "x", 100, &t), DTX_EIO);
    assert_int_equal(dtx_retry(c, "x", &t), DTX_EIO);
    assert_int_equal(dtx_wait(c, "x", 100, &t), DTX_EIO);
    assert_int_equal(dtx_register_tcc(c, "x", NULL, "http://a/c", "http://a/x", NULL, br), DTX_EIO);
    /* a participant that cannot be reached: the Try's outcome is unknown */
    snprintf(url, sizeof url, "http://127.0.0.1:%d/try", closed_port());
    assert_int_equal(dtx_tcc_try(c, url, "x", "1", NULL, &r), DTX_OK);
    assert_int_equal(r, DTX_TRY_TRANSIENT);
    assert_int_equal(e->code, DTX_OK);
    assert_true(strlen(e->message) > 0);
    /* a later successful argument check clears nothing it should not: a new
     * call starts from an empty record */
    assert_int_equal(dtx_get(c, "bad gid", &t), DTX_EINVAL);
    assert_int_equal(e->code, DTX_EINVAL);
    assert_null(t);
    assert_null(l);
    dtx_spec_free(s);
    dtx_client_free(c);
}

/* ---- answers ----------------------------------------------------------------- */

static const char txn_json[] =
    "{\"gid\":\"g1\",\"type\":\"saga\",\"status\":\"failed\",\"needs_attention\":true,"
    "\"created_at\":\"2026-11-21T17:40:00.123Z\",\"updated_at\":\"2026-11-21T17:40:00.140Z\","
    "\"finished_at\":\"2026-11-21T17:40:00.150Z\","
    "\"retry\":{\"initial_interval_ms\":100,\"max_interval_ms\":30000,\"limit\":10},"
    "\"request_timeout_ms\":10000,\"timeout_ms\":0,\"new_field\":[1],"
    "\"branches\":[{\"branch\":\"1\",\"status\":\"compensated\",\"action\":\"http://a/x\","
    "\"compensate\":\"http://a/y\",\"payload\":{\"n\": 1},\"action_attempts\":1,"
    "\"compensate_attempts\":2,\"last_error\":null,\"updated_at\":\"t\",\"after\":[]},"
    "{\"branch\":\"2\",\"status\":\"failed\",\"action\":\"http://b/x\",\"compensate\":\"http://b/"
    "y\","
    "\"action_attempts\":1,\"compensate_attempts\":1,\"last_error\":\"refused: 409\","
    "\"updated_at\":\"t\",\"after\":[1]}]}";

static void reply_parses_a_transaction(void **state)
{
    struct dtx_txn *t = NULL;
    char why[128] = "";

    (void)state;
    assert_int_equal(libdtx_reply_txn(txn_json, strlen(txn_json), &t, why, sizeof why), DTX_OK);
    assert_string_equal(t->gid, "g1");
    assert_string_equal(t->type, "saga");
    assert_string_equal(t->status, "failed");
    assert_true(dtx_txn_is_final(t));
    assert_int_equal(t->needs_attention, 1);
    assert_string_equal(t->finished_at, "2026-11-21T17:40:00.150Z");
    assert_null(t->check);
    assert_int_equal(t->retry_initial_interval_ms, 100);
    assert_int_equal(t->retry_max_interval_ms, 30000);
    assert_int_equal(t->retry_limit, 10);
    assert_int_equal(t->request_timeout_ms, 10000);
    assert_int_equal(t->timeout_ms, 0);
    assert_int_equal(t->n_branches, 2);
    assert_int_equal(t->branch_count, 2);
    assert_string_equal(t->json, txn_json);
    assert_string_equal(t->branches[0].id, "1");
    assert_int_equal(t->branches[0].n_ops, 2);
    assert_string_equal(t->branches[0].ops[0].op, "action");
    assert_string_equal(t->branches[0].ops[0].url, "http://a/x");
    assert_int_equal(t->branches[0].ops[0].attempts, 1);
    assert_string_equal(t->branches[0].ops[1].op, "compensate");
    assert_int_equal(t->branches[0].ops[1].attempts, 2);
    assert_string_equal(t->branches[0].payload, "{\"n\":1}");
    assert_null(t->branches[0].last_error);
    assert_int_equal(t->branches[0].has_after, 1);
    assert_int_equal(t->branches[0].n_after, 0);
    assert_string_equal(t->branches[1].payload, "{}");
    assert_string_equal(t->branches[1].last_error, "refused: 409");
    assert_int_equal(t->branches[1].n_after, 1);
    assert_int_equal(t->branches[1].after[0], 1);
    dtx_txn_free(t);
    dtx_txn_free(NULL);
    assert_false(dtx_txn_is_final(NULL));
}

static void reply_parses_2pc_branch_ops_in_order(void **state)
{
    static const char j[] =
        "{\"gid\":\"g\",\"type\":\"2pc\",\"status\":\"committing\",\"created_at\":\"a\","
        "\"updated_at\":\"b\",\"finished_at\":null,\"branches\":[{\"branch\":\"db1\","
        "\"status\":\"prepared\",\"rollback\":\"http://r\",\"commit\":\"http://c\","
        "\"prepare\":\"http://p\",\"prepare_attempts\":1,\"commit_attempts\":0}]}";
    struct dtx_txn *t = NULL;
    char why[128] = "";

    (void)state;
    assert_int_equal(libdtx_reply_txn(j, strlen(j), &t, why, sizeof why), DTX_OK);
    assert_false(dtx_txn_is_final(t));
    assert_null(t->finished_at);
    assert_int_equal(t->retry_limit, -1);
    assert_int_equal(t->branches[0].n_ops, 3);
    assert_string_equal(t->branches[0].ops[0].op, "prepare");
    assert_string_equal(t->branches[0].ops[1].op, "commit");
    assert_string_equal(t->branches[0].ops[2].op, "rollback");
    assert_int_equal(t->branches[0].ops[2].attempts, -1);
    assert_int_equal(t->branches[0].has_after, 0);
    assert_null(t->branches[0].after);
    dtx_txn_free(t);
}

/* A branch on a PostgreSQL resource: no URLs, the resource's name instead. */
static void reply_parses_a_resource_branch(void **state)
{
    static const char j[] =
        "{\"gid\":\"g\",\"type\":\"2pc\",\"status\":\"succeeded\",\"created_at\":\"a\","
        "\"updated_at\":\"b\",\"finished_at\":\"c\",\"branches\":[{\"branch\":\"debit\","
        "\"status\":\"succeeded\",\"resource\":\"bank_a\",\"payload\":{},"
        "\"prepare_attempts\":1,\"commit_attempts\":2,\"rollback_attempts\":0}]}";
    struct dtx_txn *t = NULL;
    char why[128] = "";

    (void)state;
    assert_int_equal(libdtx_reply_txn(j, strlen(j), &t, why, sizeof why), DTX_OK);
    const struct dtx_branch *b = &t->branches[0];
    assert_string_equal(b->resource, "bank_a");
    assert_int_equal(b->n_ops, 3);
    assert_string_equal(b->ops[0].op, "prepare");
    assert_string_equal(b->ops[0].url, "bank_a");
    assert_int_equal(b->ops[1].attempts, 2);
    assert_string_equal(b->ops[2].op, "rollback");
    dtx_txn_free(t);
    /* other branches have none */
    static const char k[] =
        "{\"gid\":\"g\",\"type\":\"saga\",\"status\":\"succeeded\",\"created_at\":\"a\","
        "\"updated_at\":\"b\",\"branches\":[{\"branch\":\"1\",\"status\":\"succeeded\","
        "\"action\":\"http://a\",\"compensate\":\"http://c\"}]}";
    assert_int_equal(libdtx_reply_txn(k, strlen(k), &t, why, sizeof why), DTX_OK);
    assert_null(t->branches[0].resource);
    dtx_txn_free(t);
}

static void reply_rejects_what_is_not_the_api(void **state)
{
    static const char *const bad[] = {
        "",
        "<html>",
        "[]",
        "{\"gid\":\"g\"}",
        "{\"gid\":1,\"type\":\"saga\",\"status\":\"s\",\"created_at\":\"a\",\"updated_at\":\"b\"}",
        "{\"gid\":\"g\",\"type\":\"saga\",\"status\":\"s\",\"created_at\":\"a\",\"updated_at\":"
        "\"b\","
        "\"branches\":{}}",
        "{\"gid\":\"g\",\"type\":\"saga\",\"status\":\"s\",\"created_at\":\"a\",\"updated_at\":"
        "\"b\","
        "\"branches\":[{\"branch\":1}]}",
    };
    struct dtx_txn *t = NULL;
    struct dtx_txn_list *l = NULL;
    char why[128];

    (void)state;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        why[0] = '\0';
        assert_int_equal(libdtx_reply_txn(bad[i], strlen(bad[i]), &t, why, sizeof why), DTX_EPROTO);
        assert_true(strlen(why) > 0);
        assert_null(t);
    }
    assert_int_equal(libdtx_reply_list("{}", 2, &l, why, sizeof why), DTX_EPROTO);
    assert_int_equal(
        libdtx_reply_list("{\"transactions\":[],\"next_cursor\":5}", 36, &l, why, sizeof why),
        DTX_EPROTO);
    assert_int_equal(
        libdtx_reply_list("{\"transactions\":[1],\"next_cursor\":null}", 40, &l, why, sizeof why),
        DTX_EPROTO);
    assert_null(l);
}

static void reply_parses_a_list(void **state)
{
    static const char j[] =
        "{\"transactions\":[{\"gid\":\"b\",\"type\":\"tcc\",\"status\":\"prepared\","
        "\"needs_attention\":false,\"created_at\":\"c\",\"updated_at\":\"u\",\"finished_at\":null,"
        "\"branch_count\":3},{\"gid\":\"a\",\"type\":\"saga\",\"status\":\"succeeded\","
        "\"needs_attention\":false,\"created_at\":\"c\",\"updated_at\":\"u\",\"finished_at\":\"f\","
        "\"branch_count\":0}],\"next_cursor\":\"41\"}";
    struct dtx_txn_list *l = NULL;
    char why[128] = "";

    (void)state;
    assert_int_equal(libdtx_reply_list(j, strlen(j), &l, why, sizeof why), DTX_OK);
    assert_int_equal(l->n, 2);
    assert_string_equal(l->items[0].gid, "b");
    assert_int_equal(l->items[0].branch_count, 3);
    assert_int_equal(l->items[0].n_branches, 0);
    assert_string_equal(l->items[1].finished_at, "f");
    assert_string_equal(l->next_cursor, "41");
    assert_string_equal(l->json, j);
    dtx_txn_list_free(l);
    dtx_txn_list_free(NULL);
}

/* ---- over the wire, against the fake server ---------------------------------- */

static void refusal_fills_the_error_record(void **state)
{
    struct fake f;
    struct dtx_client *c;
    const struct dtx_error *e;
    struct dtx_txn *t = NULL;
    char url[64];

    (void)state;
    fake_start(&f, answer(409, "{\"error\":{\"code\":\"gid_conflict\",\"message\":\"gid order-1 "
                               "exists with a different body\",\"field\":\"gid\"}}"));
    fake_url(&f, url, sizeof url);
    c = client_at(url);
    e = dtx_client_last_error(c);
    assert_int_equal(dtx_create_json(c, "{\"type\":\"tcc\",\"gid\":\"order-1\"}", &t),
                     DTX_ECONFLICT);
    fake_stop(&f);
    assert_null(t);
    assert_int_equal(e->code, DTX_ECONFLICT);
    assert_int_equal(e->http_status, 409);
    assert_string_equal(e->api_code, "gid_conflict");
    assert_string_equal(e->field, "gid");
    assert_string_equal(e->message, "gid order-1 exists with a different body");
    assert_non_null(strstr(f.request, "POST /v1/transactions HTTP/1.1\r\n"));
    assert_non_null(strstr(f.request, "Content-Type: application/json\r\n"));
    assert_non_null(strstr(f.request, "\r\n\r\n{\"type\":\"tcc\",\"gid\":\"order-1\"}"));

    /* 404 and a field of null */
    fake_start(&f, answer(404, "{\"error\":{\"code\":\"not_found\",\"message\":\"no transaction "
                               "zz\",\"field\":null}}"));
    fake_url(&f, url, sizeof url);
    dtx_client_free(c);
    c = client_at(url);
    e = dtx_client_last_error(c);
    assert_int_equal(dtx_get(c, "zz", &t), DTX_ENOTFOUND);
    fake_stop(&f);
    assert_int_equal(e->http_status, 404);
    assert_string_equal(e->api_code, "not_found");
    assert_string_equal(e->field, "");
    assert_non_null(strstr(f.request, "GET /v1/transactions/zz HTTP/1.1\r\n"));
    dtx_client_free(c);

    /* a refusal without an error body: a proxy in the way */
    fake_start(&f, answer(502, "bad gateway"));
    fake_url(&f, url, sizeof url);
    c = client_at(url);
    e = dtx_client_last_error(c);
    assert_int_equal(dtx_retry(c, "g", &t), DTX_EAPI);
    fake_stop(&f);
    assert_int_equal(e->http_status, 502);
    assert_string_equal(e->api_code, "");
    assert_non_null(strstr(e->message, "bad gateway"));
    dtx_client_free(c);
}

static void success_that_is_not_the_api_is_eproto(void **state)
{
    struct fake f;
    struct dtx_client *c;
    struct dtx_txn *t = NULL;
    char url[64];

    (void)state;
    fake_start(&f, answer(200, "<html>hello</html>"));
    fake_url(&f, url, sizeof url);
    c = client_at(url);
    assert_int_equal(dtx_get(c, "g", &t), DTX_EPROTO);
    fake_stop(&f);
    assert_int_equal(dtx_client_last_error(c)->http_status, 200);
    assert_null(t);
    dtx_client_free(c);
}

static void register_sends_the_branch(void **state)
{
    struct fake f;
    struct dtx_client *c;
    char url[64], br[DTX_BRANCH_MAX + 1] = "";

    (void)state;
    fake_start(&f, answer(201, "{\"gid\":\"g-1\",\"branch\":\"b:7\"}"));
    fake_url(&f, url, sizeof url);
    c = client_at(url);
    assert_int_equal(
        dtx_register_tcc(c, "g-1", "b:7", "http://p/confirm", "http://p/cancel", "[1, 2]", br),
        DTX_OK);
    fake_stop(&f);
    assert_string_equal(br, "b:7");
    assert_non_null(strstr(f.request, "POST /v1/transactions/g-1/branches HTTP/1.1\r\n"));
    assert_non_null(strstr(f.request,
                           "\r\n\r\n{\"branch\":\"b:7\",\"confirm\":\"http://p/"
                           "confirm\",\"cancel\":\"http://p/cancel\",\"payload\":[1,2]}"));
    assert_int_equal(dtx_client_last_error(c)->code, 0);
    dtx_client_free(c);

    /* an answer without a branch id */
    fake_start(&f, answer(201, "{\"gid\":\"g-1\"}"));
    fake_url(&f, url, sizeof url);
    c = client_at(url);
    assert_int_equal(
        dtx_register_2pc(c, "g-1", NULL, "http://p/p", "http://p/c", "http://p/r", NULL, br),
        DTX_EPROTO);
    fake_stop(&f);
    assert_non_null(strstr(f.request, "\r\n\r\n{\"prepare\":\"http://p/p\",\"commit\":\"http://"
                                      "p/c\",\"rollback\":\"http://p/r\"}"));
    dtx_client_free(c);
}

/* A branch on a PostgreSQL resource: "branch", "resource", "payload". */
static void register_resource_sends_the_branch(void **state)
{
    struct fake f;
    struct dtx_client *c;
    char url[64];

    (void)state;
    fake_start(&f, answer(201, "{\"gid\":\"g-2\",\"branch\":\"debit\"}"));
    fake_url(&f, url, sizeof url);
    c = client_at(url);
    assert_int_equal(
        dtx_register_2pc_resource(c, "g-2", "debit", "bank_a", "{\"account\":\"alice\"}"), DTX_OK);
    fake_stop(&f);
    assert_non_null(strstr(f.request, "POST /v1/transactions/g-2/branches HTTP/1.1\r\n"));
    assert_non_null(strstr(f.request, "\r\n\r\n{\"branch\":\"debit\",\"resource\":\"bank_a\","
                                      "\"payload\":{\"account\":\"alice\"}}"));
    dtx_client_free(c);

    /* an unknown resource: 400 invalid_value on "resource" */
    fake_start(&f, answer(400, "{\"error\":{\"code\":\"invalid_value\",\"message\":\"resource: "
                               "no resource bank_z\",\"field\":\"resource\"}}"));
    fake_url(&f, url, sizeof url);
    c = client_at(url);
    assert_int_equal(dtx_register_2pc_resource(c, "g-2", "credit", "bank_z", NULL), DTX_EAPI);
    fake_stop(&f);
    assert_non_null(strstr(f.request, "\r\n\r\n{\"branch\":\"credit\",\"resource\":\"bank_z\"}"));
    assert_string_equal(dtx_client_last_error(c)->api_code, "invalid_value");
    assert_string_equal(dtx_client_last_error(c)->field, "resource");
    dtx_client_free(c);
}

static void submit_with_wait_and_202(void **state)
{
    struct fake f;
    struct dtx_client *c;
    struct dtx_txn *t = NULL;
    char url[64];

    (void)state;
    fake_start(&f, answer(202, "{\"gid\":\"g\",\"type\":\"tcc\",\"status\":\"submitted\","
                               "\"created_at\":\"a\",\"updated_at\":\"b\",\"branches\":[]}"));
    fake_url(&f, url, sizeof url);
    c = client_at(url);
    assert_int_equal(dtx_submit(c, "g", 1500, &t), DTX_OK);
    fake_stop(&f);
    assert_int_equal(t->http_status, 202);
    assert_string_equal(t->status, "submitted");
    assert_int_equal(t->n_branches, 0);
    assert_non_null(strstr(f.request, "POST /v1/transactions/g/submit HTTP/1.1\r\n"));
    assert_non_null(strstr(f.request, "\r\n\r\n{\"wait\":true,\"wait_timeout_ms\":1500}"));
    dtx_txn_free(t);
    dtx_client_free(c);
}

static void list_escapes_its_filters(void **state)
{
    struct fake f;
    struct dtx_client *c;
    struct dtx_txn_list *l = NULL;
    struct dtx_list_opts o = {.status = "failed", .type = "2pc", .limit = 5, .cursor = "a b&c"};
    char url[64];

    (void)state;
    fake_start(&f, answer(200, "{\"transactions\":[],\"next_cursor\":null}"));
    fake_url(&f, url, sizeof url);
    c = client_at(url);
    assert_int_equal(dtx_list(c, &o, &l), DTX_OK);
    fake_stop(&f);
    assert_non_null(strstr(f.request, "GET /v1/transactions?status=failed&type=2pc&limit=5&"
                                      "cursor=a%20b%26c HTTP/1.1\r\n"));
    assert_int_equal(l->n, 0);
    assert_null(l->next_cursor);
    dtx_txn_list_free(l);
    dtx_client_free(c);
}

static void tcc_try_headers_and_outcomes(void **state)
{
    static const struct {
        int status;
        enum dtx_try_result want;
    } cases[] = {
        {200, DTX_TRY_SUCCEEDED}, {204, DTX_TRY_SUCCEEDED}, {409, DTX_TRY_FAILED},
        {425, DTX_TRY_TRANSIENT}, {500, DTX_TRY_TRANSIENT}, {404, DTX_TRY_TRANSIENT},
    };
    struct dtx_client *c = closed_client(); /* the coordinator is not involved */

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct fake f;
        char url[96];
        enum dtx_try_result r = (enum dtx_try_result) - 1;

        fake_start(&f, answer(cases[i].status, "{}"));
        snprintf(url, sizeof url, "http://127.0.0.1:%d/stock/try", f.port);
        assert_int_equal(dtx_tcc_try(c, url, "order-9", "2", "{\"sku\": \"x\"}", &r), DTX_OK);
        fake_stop(&f);
        assert_int_equal(r, cases[i].want);
        assert_int_equal(dtx_client_last_error(c)->http_status, cases[i].status);
        assert_non_null(strstr(f.request, "POST /stock/try HTTP/1.1\r\n"));
        assert_non_null(strstr(f.request, "\r\nDtx-Gid: order-9\r\n"));
        assert_non_null(strstr(f.request, "\r\nDtx-Branch: 2\r\n"));
        assert_non_null(strstr(f.request, "\r\nDtx-Op: try\r\n"));
        assert_non_null(strstr(f.request, "\r\nDtx-Type: tcc\r\n"));
        assert_non_null(strstr(f.request, "\r\nIdempotency-Key: order-9/2/try\r\n"));
        assert_non_null(strstr(f.request, "\r\nContent-Type: application/json\r\n"));
        assert_non_null(strstr(f.request, "\r\n\r\n{\"sku\": \"x\"}"));
    }
    dtx_client_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(client_new_rejects_bad_urls),
        cmocka_unit_test(fresh_client_has_empty_error),
        cmocka_unit_test(saga_builder_body),
        cmocka_unit_test(other_modes_body),
        cmocka_unit_test(builders_reject_bad_arguments),
        cmocka_unit_test(calls_reject_bad_arguments),
        cmocka_unit_test(closed_port_is_eio),
        cmocka_unit_test(reply_parses_a_transaction),
        cmocka_unit_test(reply_parses_2pc_branch_ops_in_order),
        cmocka_unit_test(reply_parses_a_resource_branch),
        cmocka_unit_test(reply_rejects_what_is_not_the_api),
        cmocka_unit_test(reply_parses_a_list),
        cmocka_unit_test(refusal_fills_the_error_record),
        cmocka_unit_test(success_that_is_not_the_api_is_eproto),
        cmocka_unit_test(register_sends_the_branch),
        cmocka_unit_test(register_resource_sends_the_branch),
        cmocka_unit_test(submit_with_wait_and_202),
        cmocka_unit_test(list_escapes_its_filters),
        cmocka_unit_test(tcc_try_headers_and_outcomes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
