/*
 * amqp_testutil.h - what libdtx's RabbitMQ tests (test_amqp_participant.c,
 * test_amqp_try.c) share: the test's own broker connection, closing a
 * connection through the management API, and a broker URL with a wrong
 * password. Included by each test program
 * (static functions; each test is one .c file).
 */
#ifndef DTX_AMQP_TESTUTIL_H
#define DTX_AMQP_TESTUTIL_H

#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <curl/curl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The test's own connection to the broker at url (channel 1 open), for
 * declaring and deleting queues and publishing as dtxd would. Asserts. */
static amqp_connection_state_t amqp_test_connect(const char *url)
{
    char *tmp = strdup(url);
    struct amqp_connection_info ci;
    assert_non_null(tmp);
    assert_int_equal(amqp_parse_url(tmp, &ci), AMQP_STATUS_OK);
    amqp_connection_state_t c = amqp_new_connection();
    amqp_socket_t *s = amqp_tcp_socket_new(c);
    assert_non_null(s);
    struct timeval tv = {5, 0};
    assert_int_equal(amqp_set_rpc_timeout(c, &tv), AMQP_STATUS_OK); /* a failure never hangs */
    assert_int_equal(amqp_socket_open_noblock(s, ci.host, ci.port, &tv), AMQP_STATUS_OK);
    amqp_rpc_reply_t r =
        amqp_login(c, ci.vhost, 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, ci.user, ci.password);
    assert_int_equal(r.reply_type, AMQP_RESPONSE_NORMAL);
    amqp_channel_open(c, 1);
    assert_int_equal(amqp_get_rpc_reply(c).reply_type, AMQP_RESPONSE_NORMAL);
    free(tmp);
    return c;
}

struct mgmt_body {
    char *buf;
    size_t len;
};

static size_t mgmt_collect(char *data, size_t size, size_t n, void *arg)
{
    struct mgmt_body *b = arg;
    char *nb = realloc(b->buf, b->len + size * n + 1);
    assert_non_null(nb);
    memcpy(nb + b->len, data, size * n);
    b->len += size * n;
    nb[b->len] = '\0';
    b->buf = nb;
    return size * n;
}

/* One pass of mgmt_close_connections. */
static int mgmt_close_once(const char *mgmt, const char *want)
{
    char url[512];
    snprintf(url, sizeof url, "%s/api/connections", mgmt);
    struct mgmt_body body = {NULL, 0};
    CURL *h = curl_easy_init();
    assert_non_null(h);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, mgmt_collect);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &body);
    assert_int_equal(curl_easy_perform(h), CURLE_OK);
    json_t *list = json_loads(body.buf, 0, NULL);
    assert_true(json_is_array(list));
    int closed = 0;
    size_t i;
    json_t *c;
    json_array_foreach(list, i, c)
    {
        const char *name = json_string_value(json_object_get(c, "name"));
        const char *given = json_string_value(
            json_object_get(json_object_get(c, "client_properties"), "connection_name"));
        if (name == NULL || given == NULL || strcmp(given, want) != 0)
            continue;
        char *esc = curl_easy_escape(h, name, 0);
        snprintf(url, sizeof url, "%s/api/connections/%s", mgmt, esc);
        curl_free(esc);
        curl_easy_setopt(h, CURLOPT_URL, url);
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, "DELETE");
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, NULL);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, stderr);
        assert_int_equal(curl_easy_perform(h), CURLE_OK);
        long status = 0;
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
        assert_true(status >= 200 && status < 300);
        closed++;
    }
    json_decref(list);
    free(body.buf);
    curl_easy_cleanup(h);
    return closed;
}

/* Close every connection whose client property connection_name is `want`
 * through the management API at mgmt (http://user:pass@host:port), waiting
 * up to 5 s for the API to list one (it does so a moment after the
 * connect); how many were closed. */
static int mgmt_close_connections(const char *mgmt, const char *want)
{
    int closed = 0;
    for (int i = 0; i < 50 && closed == 0; i++) {
        closed = mgmt_close_once(mgmt, want);
        if (closed == 0)
            usleep(100 * 1000);
    }
    return closed;
}

/* url with its password replaced by `password`, into out (the / vhost). */
static void url_with_password(const char *url, const char *password, char *out, size_t cap)
{
    char *tmp = strdup(url);
    struct amqp_connection_info ci;
    assert_non_null(tmp);
    assert_int_equal(amqp_parse_url(tmp, &ci), AMQP_STATUS_OK);
    snprintf(out, cap, "amqp://%s:%s@%s:%d/%%2f", ci.user, password, ci.host, ci.port);
    free(tmp);
}

#endif
