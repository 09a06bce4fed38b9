/*
 * bank_amqp.c - the bank's branch operations over RabbitMQ (docs/API.md,
 * "amqp:// targets"), served by libdtx's AMQP participant loop
 * (include/dtx.h, "AMQP participant loop").
 *
 * dtxd publishes a command for amqp://dtx.bank/<queue>.<operation> to the
 * topic exchange "dtx.bank" with routing key "<queue>.<operation>"; the
 * bank binds its queue there with "<queue>.#" and the routing key says
 * which operation it is. <operation> is the HTTP path without its leading
 * '/' and with '.' for '/' (routes.h):
 *
 *   <queue>.saga.debit  .saga.debit-undo  .saga.credit  .saga.credit-undo
 *   <queue>.tcc.{debit,credit}.{try,confirm,cancel}  (the Try from transfer
 *                                                      --amqp-url)
 *   <queue>.2pc.{debit,credit}.{prepare,commit,rollback}
 *   <queue>.msg.credit  (a msg step: a delivery, no reply)
 *   <queue>.msg.check   (a msg's check: dtx_msg_check_*, no barrier)
 *
 * The loop runs the barrier and BEGIN/COMMIT itself on this service's own
 * database connection, so the handler calls the ledger's change functions
 * (ledger_debit, ...) directly inside the loop's transaction, not
 * ledger_branch. What it answers:
 *
 *   DB_OK                          SUCCESS (the loop commits)
 *   LEDGER_REFUSED                 FAILURE with the reason (rolled back);
 *                                  for a delivery the loop dead-letters it
 *                                  ("refused: no such account")
 *   LEDGER_INCONSISTENT, DB_ERR,   RETRY: no reply, dtxd asks again after
 *   DB_BUSY                        its request timeout; a delivery is
 *                                  published again by the loop after a pause
 *   an unknown routing key, a      FAILURE with the reason: the handler
 *   Dtx-Op that does not match     cannot dead-letter (the loop only does
 *   it, a malformed body           for malformed headers), so a command is
 *                                  answered FAILURE and a delivery is
 *                                  dead-lettered by the loop. Except for
 *                                  Dtx-Op check: RETRY, since a check's
 *                                  FAILURE would abort the msg ("rolled
 *                                  back") whatever its local transaction did
 *
 * A delivery that the loop retries comes back through the default exchange,
 * but the loop hands the handler the routing key it was first published
 * with (x-dtx-routing-key).
 *
 * The exchange, queue and binding are declared by this file with
 * rabbitmq-c before the loop starts (the loop itself declares only its
 * queue and dead-letter queue), retried with backoff while the broker is
 * unreachable; they are durable, so a broker restart keeps them.
 *
 * Threads: one, which runs the loop; it is the only user of its database
 * connection (db_conn_open). bank_amqp_stop() is called by main once
 * sigwait() has seen SIGTERM or SIGINT.
 */
#include "bank_amqp.h"

#include "db.h"
#include "ledger.h"
#include "routes.h"

#include <amqp.h>
#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>
#include <dtx.h>
#include <jansson.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SETUP_TIMEOUT_MS 5000
#define BACKOFF_MIN_MS   100
#define BACKOFF_MAX_MS   5000

struct bank_amqp {
    struct bank_amqp_config cfg;
    struct db_conn *db; /* the loop's own connection */
    struct dtx_amqp_participant *loop;
    pthread_t thread;
    atomic_int stop;
};

/* ---- the exchange and the binding -------------------------------------------- */

/* The text of a failed RPC. */
static void rpc_error(amqp_rpc_reply_t r, const char *what, char *err, size_t errlen)
{
    if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION) {
        snprintf(err, errlen, "%s: %s", what, amqp_error_string2(r.library_error));
    } else if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION &&
               r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
        const amqp_channel_close_t *m = r.reply.decoded;
        snprintf(err, errlen, "%s: %d %.*s", what, m->reply_code, (int)m->reply_text.len,
                 (const char *)m->reply_text.bytes);
    } else if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION &&
               r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
        const amqp_connection_close_t *m = r.reply.decoded;
        snprintf(err, errlen, "%s: %d %.*s", what, m->reply_code, (int)m->reply_text.len,
                 (const char *)m->reply_text.bytes);
    } else {
        snprintf(err, errlen, "%s: failed", what);
    }
}

static bool precondition_failed(amqp_rpc_reply_t r)
{
    return r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION &&
           r.reply.id == AMQP_CHANNEL_CLOSE_METHOD &&
           ((const amqp_channel_close_t *)r.reply.decoded)->reply_code == AMQP_PRECONDITION_FAILED;
}

/* Connect and log in to ci's broker. 0, or -1 with the reason in err. */
static int broker_open(const struct bank_amqp *a, const struct amqp_connection_info *ci,
                       amqp_connection_state_t conn, char *err, size_t errlen)
{
    amqp_socket_t *s = ci->ssl ? amqp_ssl_socket_new(conn) : amqp_tcp_socket_new(conn);
    if (s == NULL) {
        snprintf(err, errlen, "cannot make a socket");
        return -1;
    }
    if (ci->ssl) {
        amqp_ssl_socket_set_verify_peer(s, 1);
        amqp_ssl_socket_set_verify_hostname(s, 1);
        SSL_CTX *ctx = amqp_ssl_socket_get_context(s);
        if (a->cfg.cacert != NULL ? amqp_ssl_socket_set_cacert(s, a->cfg.cacert) != AMQP_STATUS_OK
                                  : ctx == NULL || SSL_CTX_set_default_verify_paths(ctx) != 1) {
            snprintf(err, errlen, "TLS: cannot load the CA certificates");
            return -1;
        }
    }
    struct timeval tv = {SETUP_TIMEOUT_MS / 1000, 0};
    int rc = amqp_set_handshake_timeout(conn, &tv);
    if (rc == AMQP_STATUS_OK)
        rc = amqp_set_rpc_timeout(conn, &tv);
    if (rc == AMQP_STATUS_OK)
        rc = amqp_socket_open_noblock(s, ci->host, ci->port, &tv);
    if (rc != AMQP_STATUS_OK) {
        snprintf(err, errlen, "connect %s:%d: %s", ci->host, ci->port, amqp_error_string2(rc));
        return -1;
    }
    amqp_rpc_reply_t r = amqp_login(conn, ci->vhost, 0, AMQP_DEFAULT_FRAME_SIZE, 0,
                                    AMQP_SASL_METHOD_PLAIN, ci->user, ci->password);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        rpc_error(r, "login", err, errlen);
        return -1;
    }
    return 0;
}

/*
 * Declare the topic exchange and the queue (durable; a queue that exists
 * with other arguments is taken as it is) and bind them with "<queue>.#".
 * 0, or -1 with the reason in err.
 */
static int declare_binding(const struct bank_amqp *a, char *err, size_t errlen)
{
    char *url = strdup(a->cfg.broker_url); /* amqp_parse_url decodes in place */
    char key[300];
    amqp_connection_state_t conn = amqp_new_connection();
    struct amqp_connection_info ci;
    int rc = -1;
    if (url == NULL || conn == NULL) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    amqp_default_connection_info(&ci);
    if (amqp_parse_url(url, &ci) != AMQP_STATUS_OK) {
        snprintf(err, errlen, "bad broker URL");
        goto out;
    }
    if (broker_open(a, &ci, conn, err, errlen) != 0)
        goto out;
    amqp_channel_t ch = 1;
    amqp_channel_open(conn, ch);
    amqp_rpc_reply_t r = amqp_get_rpc_reply(conn);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        rpc_error(r, "channel.open", err, errlen);
        goto close;
    }
    amqp_exchange_declare(conn, ch, amqp_cstring_bytes(a->cfg.exchange),
                          amqp_cstring_bytes("topic"), 0, 1, 0, 0, amqp_empty_table);
    r = amqp_get_rpc_reply(conn);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        rpc_error(r, "exchange.declare", err, errlen);
        goto close;
    }
    amqp_queue_declare(conn, ch, amqp_cstring_bytes(a->cfg.queue), 0, 1, 0, 0, amqp_empty_table);
    r = amqp_get_rpc_reply(conn);
    if (precondition_failed(r)) {
        /* an operator's queue (quorum, TTL, ...): the channel is closed;
         * use the queue as it is, on a new channel */
        amqp_channel_close_ok_t ok = {0};
        amqp_send_method(conn, ch, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
        ch = 2;
        amqp_channel_open(conn, ch);
        r = amqp_get_rpc_reply(conn);
    }
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        rpc_error(r, "queue.declare", err, errlen);
        goto close;
    }
    snprintf(key, sizeof key, "%s.#", a->cfg.queue);
    amqp_queue_bind(conn, ch, amqp_cstring_bytes(a->cfg.queue), amqp_cstring_bytes(a->cfg.exchange),
                    amqp_cstring_bytes(key), amqp_empty_table);
    r = amqp_get_rpc_reply(conn);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        rpc_error(r, "queue.bind", err, errlen);
        goto close;
    }
    rc = 0;
    amqp_channel_close(conn, ch, AMQP_REPLY_SUCCESS);
close:
    amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
out:
    if (conn != NULL)
        amqp_destroy_connection(conn);
    if (url != NULL) {
        memset(url, 0, strlen(url)); /* it held the password */
        free(url);
    }
    return rc;
}

/* ---- the handler ----------------------------------------------------------------- */

/* Parse {"account": "...", "amount": N>0}. OUT: *account (borrowed from the
 * returned object), *amount. Returns the object (caller decrefs) or NULL
 * with the reason in why. */
static json_t *parse_body(const struct dtx_amqp_msg *m, const char **account, int64_t *amount,
                          char *why, size_t cap)
{
    json_error_t je;
    json_t *o = json_loadb(m->body, m->body_len, 0, &je);
    json_t *acct = json_object_get(o, "account");
    json_t *amt = json_object_get(o, "amount");
    if (!json_is_object(o))
        snprintf(why, cap, "body is not a JSON object");
    else if (!json_is_string(acct) || json_string_length(acct) == 0 ||
             json_string_length(acct) >= DB_TEXT_MAX)
        snprintf(why, cap, "account: a non-empty string is required");
    else if (!json_is_integer(amt) || json_integer_value(amt) <= 0)
        snprintf(why, cap, "amount: a positive integer is required");
    else {
        *account = json_string_value(acct);
        *amount = json_integer_value(amt);
        return o;
    }
    json_decref(o);
    return NULL;
}

/* The msg check: outside any transaction (the loop runs none for it). */
static enum dtx_amqp_result serve_check(struct bank_amqp *a, const struct dtx_amqp_msg *m,
                                        char *reason, size_t cap)
{
    struct db_conn *c = a->db;
    enum dtx_msg_state st = DTX_MSG_ROLLED_BACK;
    int drc = c->pg != NULL ? dtx_msg_check_pg(c->pg, m->gid, &st)
                            : dtx_msg_check_sqlite(c->lite, m->gid, &st);
    if (drc != 0) {
        snprintf(reason, cap, "msg check: %s", dtx_strerror(drc));
        return DTX_AMQP_RETRY;
    }
    if (st == DTX_MSG_COMMITTED)
        return DTX_AMQP_SUCCESS;
    snprintf(reason, cap, "rolled back");
    return DTX_AMQP_FAILURE;
}

/* The operation part of m's routing key ("saga.debit"), or NULL. */
static const char *operation_of(const struct bank_amqp *a, const struct dtx_amqp_msg *m)
{
    size_t n = strlen(a->cfg.queue);
    const char *rk = m->routing_key;
    if (strncmp(rk, a->cfg.queue, n) == 0 && rk[n] == '.')
        return rk + n + 1;
    return NULL;
}

/* A branch operation inside the loop's transaction (after the barrier). */
static enum dtx_amqp_result serve_branch(struct bank_amqp *a, const struct route *rt,
                                         const struct dtx_amqp_msg *m, char *reason, size_t cap)
{
    int fstatus, fdelay;
    if (a->cfg.fault != NULL && a->cfg.fault(rt->path, &fstatus, &fdelay)) {
        if (fdelay > 0)
            nanosleep(&(struct timespec){fdelay / 1000, (long)(fdelay % 1000) * 1000000L}, NULL);
        if (fstatus != 0) {
            enum dtx_amqp_result res = fstatus == 409 ? DTX_AMQP_FAILURE : DTX_AMQP_RETRY;
            snprintf(reason, cap, "injected fault (test aid): %d", fstatus);
            a->cfg.log("amqp %-18s gid=%s branch=%s op=%s -> %s %s", rt->path + 1, m->gid,
                       m->branch, m->op, dtx_amqp_result_name(res), reason);
            return res;
        }
    }
    struct ledger_call k = {.gid = m->gid, .branch = m->branch, .kind = rt->kind};
    json_t *obj = parse_body(m, &k.account, &k.amount, reason, cap);
    if (obj == NULL)
        return DTX_AMQP_FAILURE;
    struct db_conn *c = a->db;
    c->err[0] = '\0';
    c->sqlstate[0] = '\0';
    const char *why = NULL;
    int rc = rt->change(c, &k, &why);
    enum dtx_amqp_result res;
    if (rc == DB_OK) {
        res = DTX_AMQP_SUCCESS;
    } else if (rc == LEDGER_REFUSED) {
        snprintf(reason, cap, "%s", why != NULL ? why : "refused");
        res = DTX_AMQP_FAILURE;
    } else {
        snprintf(reason, cap, "%s", c->err);
        res = DTX_AMQP_RETRY;
    }
    a->cfg.log("amqp %-18s gid=%s branch=%s op=%s account=%s amount=%lld -> %s%s%s", rt->path + 1,
               m->gid, m->branch, m->op, k.account, (long long)k.amount, dtx_amqp_result_name(res),
               reason[0] ? " " : "", reason);
    json_decref(obj);
    return res;
}

static enum dtx_amqp_result on_message(void *arg, const struct dtx_amqp_msg *m, char *reason,
                                       size_t cap)
{
    struct bank_amqp *a = arg;
    const char *op = operation_of(a, m);
    const struct route *rt = NULL;
    enum dtx_amqp_result res = DTX_AMQP_FAILURE;
    if (op != NULL && strcmp(op, "msg.check") == 0) {
        if (strcmp(m->op, "check") != 0) {
            snprintf(reason, cap, "Dtx-Op %.40s does not match msg.check (expects check)", m->op);
        } else {
            res = serve_check(a, m, reason, cap);
            a->cfg.log("amqp %-18s gid=%s -> %s%s%s", "msg/check", m->gid,
                       dtx_amqp_result_name(res), reason[0] ? " " : "", reason);
            return res;
        }
    } else if (op == NULL || (rt = route_by_key(op)) == NULL) {
        snprintf(reason, cap, "unknown routing key \"%.200s\" (queue %s)", m->routing_key,
                 a->cfg.queue);
    } else if (!route_op_matches(rt, m->op)) {
        snprintf(reason, cap, "Dtx-Op %.40s does not match %s (expects %s)", m->op, op, rt->op);
    } else {
        return serve_branch(a, rt, m, reason, cap);
    }
    /* A check's FAILURE means "rolled back" and would abort a msg whose
     * local transaction may have committed: never guess, let dtxd ask
     * again (and the log tell an operator). */
    if (strcmp(m->op, "check") == 0)
        res = DTX_AMQP_RETRY;
    a->cfg.log("amqp refused %s (gid=%s branch=%s op=%s): %s -> %s", m->message_id, m->gid,
               m->branch, m->op, reason, dtx_amqp_result_name(res));
    return res;
}

/* ---- the thread ------------------------------------------------------------------ */

static void nap_ms(int ms)
{
    nanosleep(&(struct timespec){ms / 1000, (long)(ms % 1000) * 1000000L}, NULL);
}

static void *amqp_main(void *arg)
{
    struct bank_amqp *a = arg;
    char err[512], last[512] = "";
    int backoff = BACKOFF_MIN_MS;
    while (!atomic_load(&a->stop)) {
        if (declare_binding(a, err, sizeof err) == 0)
            break;
        if (strcmp(err, last) != 0) /* say it once, not at every retry */
            a->cfg.log("amqp: cannot declare exchange %s and bind queue %s: %s (retrying)",
                       a->cfg.exchange, a->cfg.queue, err);
        snprintf(last, sizeof last, "%s", err);
        for (int slept = 0; slept < backoff && !atomic_load(&a->stop); slept += 50)
            nap_ms(50);
        backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
    }
    if (atomic_load(&a->stop))
        return NULL;
    a->cfg.log("amqp: exchange %s bound to queue %s with %s.#; consuming", a->cfg.exchange,
               a->cfg.queue, a->cfg.queue);
    dtx_amqp_participant_run(a->loop); /* until bank_amqp_stop */
    return NULL;
}

/* The loop's own news (connects, lost connections, database errors). */
static void on_status(void *arg, const char *line)
{
    struct bank_amqp *a = arg;
    a->cfg.log("amqp: %s", line);
}

int bank_amqp_start(const struct bank_amqp_config *cfg, struct bank_amqp **out, char *err,
                    size_t errlen)
{
    *out = NULL;
    struct bank_amqp *a = calloc(1, sizeof *a);
    if (a == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    a->cfg = *cfg;
    atomic_init(&a->stop, 0);
    if (strlen(cfg->queue) > 200 || strlen(cfg->exchange) > 200 || cfg->queue[0] == '\0') {
        snprintf(err, errlen, "--amqp-queue and --amqp-exchange: 1-200 bytes");
        goto fail;
    }
    a->db = db_conn_open(cfg->db, err, errlen);
    if (a->db == NULL)
        goto fail;
    struct dtx_amqp_opts o = {
        .broker_url = cfg->broker_url,
        .queue = cfg->queue,
        .cacert = cfg->cacert,
        .max_attempts = cfg->max_attempts,
        .pg = a->db->pg,
        .sqlite = a->db->lite,
        .on_status = on_status,
    };
    int rc = dtx_amqp_participant_new(&o, on_message, a, &a->loop);
    if (rc != 0) {
        snprintf(err, errlen,
                 "AMQP participant: %s (check the broker URL: amqp[s]://user:pass@host:port/vhost)",
                 dtx_strerror(rc));
        goto fail;
    }
    if (pthread_create(&a->thread, NULL, amqp_main, a) != 0) {
        snprintf(err, errlen, "cannot start the AMQP thread");
        goto fail;
    }
    *out = a;
    return 0;
fail:
    dtx_amqp_participant_free(a->loop);
    if (a->db != NULL)
        db_conn_close(a->db);
    free(a);
    return -1;
}

void bank_amqp_stop(struct bank_amqp *a)
{
    if (a == NULL)
        return;
    atomic_store(&a->stop, 1);
    dtx_amqp_participant_stop(a->loop);
    pthread_join(a->thread, NULL);
    dtx_amqp_participant_free(a->loop);
    db_conn_close(a->db);
    free(a);
}
