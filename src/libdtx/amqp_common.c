/*
 * amqp_common.c - the RabbitMQ helpers libdtx's participant loop and its
 * Try over AMQP share (amqp_int.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>
#include <openssl/ssl.h>

#include "amqp_int.h"

int libdtx_broker_parse(struct libdtx_broker *b, const char *url, const char *cacert)
{
    memset(b, 0, sizeof *b);
    if (url == NULL || (strncmp(url, "amqp://", 7) != 0 && strncmp(url, "amqps://", 8) != 0))
        return DTX_EINVAL;
    char *tmp = strdup(url); /* amqp_parse_url decodes in place */
    if (tmp == NULL)
        return DTX_ENOMEM;
    struct amqp_connection_info ci;
    amqp_default_connection_info(&ci);
    int rc = DTX_EINVAL;
    if (amqp_parse_url(tmp, &ci) == AMQP_STATUS_OK && ci.host[0] != '\0' && ci.port > 0 &&
        ci.port <= 65535 && ci.vhost[0] != '\0') {
        b->port = ci.port;
        b->ssl = ci.ssl != 0;
        b->host = strdup(ci.host);
        b->user = strdup(ci.user);
        b->password = strdup(ci.password);
        b->vhost = strdup(ci.vhost);
        b->cacert = cacert != NULL ? strdup(cacert) : NULL;
        rc = b->host && b->user && b->password && b->vhost && (cacert == NULL || b->cacert)
                 ? DTX_OK
                 : DTX_ENOMEM;
    }
    explicit_bzero(tmp, strlen(url));
    free(tmp);
    if (rc != DTX_OK)
        libdtx_broker_free(b);
    return rc;
}

void libdtx_broker_free(struct libdtx_broker *b)
{
    if (b->password != NULL)
        explicit_bzero(b->password, strlen(b->password));
    free(b->host);
    free(b->user);
    free(b->password);
    free(b->vhost);
    free(b->cacert);
    memset(b, 0, sizeof *b);
}

amqp_socket_t *libdtx_broker_socket(const struct libdtx_broker *b, amqp_connection_state_t conn)
{
    if (!b->ssl)
        return amqp_tcp_socket_new(conn);
    amqp_socket_t *s = amqp_ssl_socket_new(conn);
    if (s == NULL)
        return NULL;
    amqp_ssl_socket_set_verify_peer(s, 1);
    amqp_ssl_socket_set_verify_hostname(s, 1);
    if (b->cacert != NULL)
        return amqp_ssl_socket_set_cacert(s, b->cacert) == AMQP_STATUS_OK ? s : NULL;
    SSL_CTX *ctx = amqp_ssl_socket_get_context(s);
    return ctx != NULL && SSL_CTX_set_default_verify_paths(ctx) == 1 ? s : NULL;
}

void libdtx_amqp_why(amqp_rpc_reply_t r, const char *what, char *why, size_t whylen)
{
    if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION) {
        snprintf(why, whylen, "%s: %s", what, amqp_error_string2(r.library_error));
    } else if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION &&
               r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
        const amqp_connection_close_t *m = r.reply.decoded;
        snprintf(why, whylen, "%s: the broker closed the connection: %u %.*s", what, m->reply_code,
                 (int)m->reply_text.len, (const char *)m->reply_text.bytes);
    } else if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION &&
               r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
        const amqp_channel_close_t *m = r.reply.decoded;
        snprintf(why, whylen, "%s: the broker closed the channel: %u %.*s", what, m->reply_code,
                 (int)m->reply_text.len, (const char *)m->reply_text.bytes);
    } else {
        snprintf(why, whylen, "%s failed", what);
    }
}

amqp_table_entry_t libdtx_entry_str(const char *key, const char *value)
{
    amqp_table_entry_t e;
    e.key = amqp_cstring_bytes(key);
    e.value.kind = AMQP_FIELD_KIND_UTF8;
    e.value.value.bytes = amqp_cstring_bytes(value);
    return e;
}

uint64_t libdtx_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}
