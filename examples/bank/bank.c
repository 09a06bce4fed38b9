/*
 * bank.c - an account service for the dtx examples: one database of accounts
 * (PostgreSQL or SQLite, ledger.c) behind HTTP endpoints for every dtx mode.
 *
 *   bank --listen HOST:PORT --db CONNINFO_OR_PATH [--pool N]
 *        [--dtx URL --resource NAME] [--amqp URL [--amqp-queue NAME]]
 *        [--test-faults] [--quiet]
 *
 * Every branch call carries Dtx-Gid, Dtx-Branch and Dtx-Op and a body
 * {"account": "...", "amount": N}; its change runs in one local transaction
 * with the libdtx barrier (ledger_branch). Endpoints ("debit" is on the
 * payer's bank, "credit" on the payee's):
 *
 *   saga  /saga/debit          action      balance -= amount, 409 if short
 *         /saga/debit-undo     compensate  balance += amount
 *         /saga/credit         action      balance += amount, 409 if no account
 *         /saga/credit-undo    compensate  balance -= amount (500 while the
 *                                          credited money is spent: retried)
 *   tcc   /tcc/debit/try       try         frozen += amount (409 if short), hold
 *         /tcc/debit/confirm   confirm     balance -= hold, frozen -= hold
 *         /tcc/debit/cancel    cancel      frozen -= hold
 *         /tcc/credit/try      try         hold only (409 if no account)
 *         /tcc/credit/confirm  confirm     balance += hold
 *         /tcc/credit/cancel   cancel      drop the hold
 *   2pc   /2pc/{debit,credit}/{prepare,commit,rollback}: the tcc reservation
 *         called by dtxd: prepare validates and reserves (its commit is the
 *         yes vote; 409 votes no), commit applies, rollback releases. No
 *         database lock is held between the phases.
 *   msg   /msg/start           the sender's local transaction (not a branch
 *                              call; Dtx-Gid only): the debit and the libdtx
 *                              msg mark, one commit
 *         /msg/credit          action      balance += amount (the delivery;
 *                                          no account: 500, a delivery is
 *                                          never refused)
 *         /msg/check           check       200 committed, 409 rolled back
 *   xa    /xa/debit            (2pc on PostgreSQL resources; not called by
 *         /xa/credit           dtxd but by the transfer client, Dtx-Gid and
 *                              Dtx-Branch): BEGIN; SET LOCAL lock_timeout;
 *                              balance -= amount (409 if short) or += amount
 *                              (409 if no account); PREPARE TRANSACTION
 *                              'dtx:<gid>:<branch>'; register the branch
 *                              with dtxd (--dtx) as resource --resource.
 *                              200 {"result": "prepared"|"duplicate"};
 *                              409 refused or lock_timeout (nothing
 *                              prepared); 502 the registration failed (the
 *                              prepared transaction is rolled back); 501 on
 *                              SQLite or without --dtx/--resource. dtxd
 *                              commits or rolls back the prepared
 *                              transaction itself, with its own connection.
 *
 * Answers: 200 {"result": "applied|duplicate|null_undo"}; 409 {"result":
 * "refused|late", "error"} - only forward operations (action, try, prepare)
 * and the check answer 409, as dtxd treats a 409 elsewhere as transient;
 * 400 for a malformed request or a Dtx-Op that does not match the path; 500
 * (503 while SQLite is locked) when the database fails: dtxd retries.
 *
 * With --amqp (or BANK_AMQP_URL) the same branch operations are also served
 * over RabbitMQ, on a thread of their own (bank_amqp.c): routing key
 * "<queue>.<path with '.' for '/'>" on the topic exchange dtx.bank. The
 * route table (path, Dtx-Op, ledger change) is routes.c, shared by both.
 *
 * Plain endpoints: GET /healthz; GET /accounts (every account, the totals and
 * the number of open holds); GET /accounts/ID; POST /accounts {"id",
 * "balance"} creates or sets an account.
 *
 * TEST AID: with --test-faults, POST /admin/faults {"path", "fail",
 * "status", "delay_ms"} makes each of the next `fail` calls to `path` wait
 * delay_ms and then answer `status` without touching the database (status 0:
 * after the delay the call runs normally). The path "/xa/debit@prepared"
 * (or credit) acts later, between the PREPARE and the registration: it
 * waits delay_ms, then with a status answers it and never registers (the
 * prepared transaction is left for dtxd to find as an orphan). Without the
 * option it is a 404. A fault on a branch path also hits that operation when
 * it comes over AMQP (500 or any status but 409: RETRY; 409: FAILURE).
 *
 * Threads: libmicrohttpd runs a thread per connection; each request borrows
 * a database connection from the pool (db.c). Every call is logged on stderr
 * (--quiet: none).
 */
#include "bank_amqp.h"
#include "ledger.h"
#include "routes.h"

#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define MAX_BODY   65536
#define MAX_FAULTS 64
#define MAX_PATH   128

/* ---- fault injection (TEST AID) -------------------------------------------- */

struct fault {
    char path[MAX_PATH];
    int remaining;
    int status; /* 0: only the delay */
    int delay_ms;
};

static struct {
    bool enabled;
    pthread_mutex_t mu;
    struct fault f[MAX_FAULTS];
} faults = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* Set the faults of a path (fail <= 0 clears them). Returns 0, -1 if full. */
static int fault_set(const char *path, int fail, int status, int delay_ms)
{
    int rc = -1;
    pthread_mutex_lock(&faults.mu);
    struct fault *slot = NULL;
    for (int i = 0; i < MAX_FAULTS; i++) {
        if (faults.f[i].remaining > 0 && strcmp(faults.f[i].path, path) == 0) {
            slot = &faults.f[i];
            break;
        }
        if (slot == NULL && faults.f[i].remaining <= 0)
            slot = &faults.f[i];
    }
    if (slot != NULL) {
        snprintf(slot->path, sizeof slot->path, "%s", path);
        slot->remaining = fail;
        slot->status = status;
        slot->delay_ms = delay_ms;
        rc = 0;
    }
    pthread_mutex_unlock(&faults.mu);
    return rc;
}

/* Consume one fault of path, if any. OUT: *status, *delay_ms. */
static bool fault_take(const char *path, int *status, int *delay_ms)
{
    bool hit = false;
    if (!faults.enabled)
        return false;
    pthread_mutex_lock(&faults.mu);
    for (int i = 0; i < MAX_FAULTS; i++) {
        struct fault *f = &faults.f[i];
        if (f->remaining > 0 && strcmp(f->path, path) == 0) {
            f->remaining--;
            *status = f->status;
            *delay_ms = f->delay_ms;
            hit = true;
            break;
        }
    }
    pthread_mutex_unlock(&faults.mu);
    return hit;
}

/* ---- HTTP ------------------------------------------------------------------ */

static struct db_pool pool;
static bool quiet;
static char listen_name[128];
static const char *dtx_url;  /* --dtx: dtxd's base URL, for xa registrations */
static const char *resource; /* --resource: this database's name in dtxd */

struct body {
    char *buf;
    size_t len;
    bool too_big;
};

static void logf_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void logf_(const char *fmt, ...)
{
    if (quiet)
        return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "bank %s: %s\n", listen_name, line);
}

/* Queue a JSON answer; takes ownership of obj. */
static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status, json_t *obj)
{
    char *text = obj != NULL ? json_dumps(obj, JSON_COMPACT) : NULL;
    json_decref(obj);
    if (text == NULL)
        return MHD_NO;
    size_t n = strlen(text);
    struct MHD_Response *r = MHD_create_response_from_buffer(n, text, MHD_RESPMEM_MUST_FREE);
    if (r == NULL) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", "application/json");
    enum MHD_Result ret = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result reply_error(struct MHD_Connection *conn, unsigned status, const char *result,
                                   const char *msg)
{
    return reply(conn, status, json_pack("{s:s, s:s}", "result", result, "error", msg));
}

/* Parse {"account": "...", "amount": N>0}. OUT: *account (borrowed from the
 * returned object), *amount. Returns the parsed object (caller decrefs) or
 * NULL with a message in err. */
static json_t *parse_transfer_body(const struct body *b, const char **account, int64_t *amount,
                                   char *err, size_t errlen)
{
    json_error_t je;
    json_t *o = json_loadb(b->buf ? b->buf : "", b->len, 0, &je);
    if (o == NULL || !json_is_object(o)) {
        snprintf(err, errlen, "body is not a JSON object");
        json_decref(o);
        return NULL;
    }
    json_t *a = json_object_get(o, "account");
    json_t *m = json_object_get(o, "amount");
    if (!json_is_string(a) || json_string_length(a) == 0 || json_string_length(a) >= DB_TEXT_MAX) {
        snprintf(err, errlen, "account: a non-empty string is required");
    } else if (!json_is_integer(m) || json_integer_value(m) <= 0) {
        snprintf(err, errlen, "amount: a positive integer is required");
    } else {
        *account = json_string_value(a);
        *amount = json_integer_value(m);
        return o;
    }
    json_decref(o);
    return NULL;
}

static const char *barrier_name(enum dtx_barrier_result r)
{
    switch (r) {
    case DTX_BARRIER_APPLY:
        return "applied";
    case DTX_BARRIER_DUPLICATE:
        return "duplicate";
    case DTX_BARRIER_NULL_UNDO:
        return "null_undo";
    case DTX_BARRIER_LATE:
        return "late";
    }
    return "?";
}

/* The answer to a ledger outcome; a refusal is a 409 when refusable, else
 * a 500. OUT: *status. */
static json_t *outcome_json(const struct ledger_outcome *o, bool refusable, unsigned *status)
{
    switch (o->rc) {
    case DB_OK:
        *status = (unsigned)dtx_barrier_http_status(o->barrier);
        return json_pack("{s:s}", "result", barrier_name(o->barrier));
    case LEDGER_REFUSED:
        *status = refusable ? MHD_HTTP_CONFLICT : MHD_HTTP_INTERNAL_SERVER_ERROR;
        return json_pack("{s:s, s:s}", "result", "refused", "error", o->why);
    case LEDGER_ROLLED_BACK:
        *status = MHD_HTTP_CONFLICT;
        return json_pack("{s:s, s:s}", "result", "rolled_back", "error", o->why);
    case DB_BUSY:
        *status = MHD_HTTP_SERVICE_UNAVAILABLE;
        return json_pack("{s:s, s:s}", "result", "error", "error", o->why);
    default:
        *status = MHD_HTTP_INTERNAL_SERVER_ERROR;
        return json_pack("{s:s, s:s}", "result", "error", "error", o->why);
    }
}

/* A branch call: check the headers and the body, run it (ledger_branch). */
static enum MHD_Result serve_branch(struct MHD_Connection *conn, const struct route *rt,
                                    const struct body *b)
{
    const char *gid = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Dtx-Gid");
    const char *branch = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Dtx-Branch");
    const char *op = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Dtx-Op");
    if (gid == NULL || *gid == '\0' || branch == NULL || *branch == '\0' || op == NULL)
        return reply_error(conn, 400, "bad_request", "Dtx-Gid, Dtx-Branch and Dtx-Op are required");
    if (!route_op_matches(rt, op)) {
        char msg[160];
        snprintf(msg, sizeof msg, "Dtx-Op %.40s does not match %s (expects %s)", op, rt->path,
                 rt->op);
        return reply_error(conn, 400, "bad_request", msg);
    }
    char err[256];
    struct ledger_call k = {.gid = gid, .branch = branch, .kind = rt->kind};
    json_t *obj = parse_transfer_body(b, &k.account, &k.amount, err, sizeof err);
    if (obj == NULL)
        return reply_error(conn, 400, "bad_request", err);

    struct ledger_outcome out;
    ledger_branch(&pool, rt->op, rt->change, &k, &out);
    unsigned status;
    json_t *ans = outcome_json(&out, route_may_refuse(rt), &status);
    logf_("%-20s gid=%s branch=%s op=%s account=%s amount=%lld -> %u %s%s%s", rt->path, gid, branch,
          rt->op, k.account, (long long)k.amount, status,
          json_string_value(json_object_get(ans, "result")), out.why[0] ? " " : "", out.why);
    json_decref(obj);
    return reply(conn, status, ans);
}

/* ---- xa ---------------------------------------------------------------------- */

/* Each request thread keeps one dtx client (a client must not be shared by
 * threads), freed when libmicrohttpd ends the thread. */
static pthread_key_t client_key;

static void client_free(void *c)
{
    dtx_client_free(c);
}

/* This thread's client of dtxd, NULL when it cannot be made. */
static struct dtx_client *thread_client(void)
{
    struct dtx_client *c = pthread_getspecific(client_key);
    if (c == NULL && dtx_client_new(dtx_url, &c) == 0) {
        dtx_client_set_timeout(c, 10000);
        pthread_setspecific(client_key, c);
    }
    return c;
}

/* Register k's prepared transaction with dtxd as a branch on our resource,
 * payload the call's body. Returns 0, or -1 with the reason in err. */
static int xa_register(const struct ledger_call *k, const struct body *b, char *err, size_t errlen)
{
    struct dtx_client *c = thread_client();
    if (c == NULL) {
        snprintf(err, errlen, "register: cannot make a dtx client for %s", dtx_url);
        return -1;
    }
    if (dtx_register_2pc_resource(c, k->gid, k->branch, resource, b->buf) != 0) {
        const struct dtx_error *e = dtx_client_last_error(c);
        snprintf(err, errlen, "register: %s (HTTP %d %s)", e->message, e->http_status, e->api_code);
        return -1;
    }
    return 0;
}

/* POST /xa/debit, /xa/credit: prepare the change as a PostgreSQL prepared
 * transaction and register it with dtxd. */
static enum MHD_Result serve_xa(struct MHD_Connection *conn, const char *path,
                                ledger_change_fn change, const struct body *b)
{
    const char *gid = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Dtx-Gid");
    const char *branch = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Dtx-Branch");
    if (!pool.is_pg)
        return reply_error(conn, 501, "unsupported",
                           "xa needs PostgreSQL: SQLite has no PREPARE TRANSACTION");
    if (dtx_url == NULL || resource == NULL)
        return reply_error(conn, 501, "unsupported",
                           "xa needs the bank started with --dtx URL --resource NAME");
    if (gid == NULL || *gid == '\0' || branch == NULL || *branch == '\0')
        return reply_error(conn, 400, "bad_request", "Dtx-Gid and Dtx-Branch are required");
    char err[512];
    struct ledger_call k = {.gid = gid, .branch = branch};
    json_t *obj = parse_transfer_body(b, &k.account, &k.amount, err, sizeof err);
    if (obj == NULL)
        return reply_error(conn, 400, "bad_request", err);

    unsigned status = MHD_HTTP_OK;
    const char *result = "prepared";
    struct ledger_outcome out = {0};
    bool again = false;
    /* A repeated call whose transaction is already prepared only registers
     * again (harmless with the same body). */
    if (ledger_xa_prepared(&pool, gid, branch, &again, out.why, sizeof out.why) != DB_OK) {
        status = MHD_HTTP_INTERNAL_SERVER_ERROR;
        result = "error";
    } else if (again) {
        result = "duplicate";
    } else {
        ledger_xa_prepare(&pool, change, &k, &out);
        if (out.rc == LEDGER_REFUSED || out.rc == LEDGER_LOCK_TIMEOUT) {
            status = MHD_HTTP_CONFLICT;
            result = out.rc == LEDGER_REFUSED ? "refused" : "lock_timeout";
        } else if (out.rc != DB_OK) {
            status = MHD_HTTP_INTERNAL_SERVER_ERROR;
            result = "error";
        }
    }
    if (status == MHD_HTTP_OK) {
        char fpath[MAX_PATH + 16];
        int fstatus, fdelay;
        snprintf(fpath, sizeof fpath, "%s@prepared", path);
        if (fault_take(fpath, &fstatus, &fdelay)) {
            logf_("%-20s gid=%s branch=%s prepared; delaying %d ms (injected fault)", path, gid,
                  branch, fdelay);
            if (fdelay > 0)
                nanosleep(&(struct timespec){fdelay / 1000, (long)(fdelay % 1000) * 1000000L},
                          NULL);
            if (fstatus != 0) {
                logf_("%-20s gid=%s branch=%s -> %d without registering (injected fault)", path,
                      gid, branch, fstatus);
                json_decref(obj);
                return reply_error(conn, (unsigned)fstatus, "injected",
                                   "injected fault (test aid): prepared, not registered");
            }
        }
        if (xa_register(&k, b, out.why, sizeof out.why) != 0) {
            /* Not registered (or not known to be): take the prepared
             * transaction back now rather than leave it to dtxd's orphan
             * scan. Safe even if dtxd did register it: a branch whose
             * transaction is gone votes no. */
            char rerr[256];
            if (ledger_xa_rollback(&pool, gid, branch, rerr, sizeof rerr) != DB_OK)
                logf_("%-20s gid=%s branch=%s rollback prepared: %s (left to dtxd)", path, gid,
                      branch, rerr);
            status = MHD_HTTP_BAD_GATEWAY;
            result = "error";
        }
    }
    logf_("%-20s gid=%s branch=%s account=%s amount=%lld -> %u %s%s%s", path, gid, branch,
          k.account, (long long)k.amount, status, result, out.why[0] ? " " : "", out.why);
    json_decref(obj);
    if (status == MHD_HTTP_OK)
        return reply(conn, status, json_pack("{s:s}", "result", result));
    return reply_error(conn, status, result, out.why);
}

/* POST /msg/start: the sender's local transaction of a msg transfer. */
static enum MHD_Result serve_msg_start(struct MHD_Connection *conn, const struct body *b)
{
    const char *gid = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Dtx-Gid");
    if (gid == NULL || *gid == '\0')
        return reply_error(conn, 400, "bad_request", "Dtx-Gid is required");
    char err[256];
    struct ledger_call k = {.gid = gid, .branch = DTX_MSG_BRANCH};
    json_t *obj = parse_transfer_body(b, &k.account, &k.amount, err, sizeof err);
    if (obj == NULL)
        return reply_error(conn, 400, "bad_request", err);
    struct ledger_outcome out;
    ledger_msg_start(&pool, &k, &out);
    unsigned status;
    json_t *ans = out.rc == DB_OK ? json_pack("{s:s}", "result", "committed")
                                  : outcome_json(&out, true, &status);
    if (out.rc == DB_OK)
        status = MHD_HTTP_OK;
    logf_("%-20s gid=%s account=%s amount=%lld -> %u %s%s%s", "/msg/start", gid, k.account,
          (long long)k.amount, status, json_string_value(json_object_get(ans, "result")),
          out.why[0] ? " " : "", out.why);
    json_decref(obj);
    return reply(conn, status, ans);
}

/* POST /msg/check: did the local transaction of this gid commit? */
static enum MHD_Result serve_msg_check(struct MHD_Connection *conn)
{
    const char *gid = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Dtx-Gid");
    if (gid == NULL || *gid == '\0')
        return reply_error(conn, 400, "bad_request", "Dtx-Gid is required");
    char err[256];
    enum dtx_msg_state st = DTX_MSG_ROLLED_BACK;
    unsigned status;
    json_t *ans;
    if (ledger_msg_check(&pool, gid, &st, err, sizeof err) == DB_OK) {
        status = (unsigned)dtx_msg_http_status(st);
        ans = json_pack("{s:s}", "result", st == DTX_MSG_COMMITTED ? "committed" : "rolled_back");
    } else {
        status = MHD_HTTP_INTERNAL_SERVER_ERROR;
        ans = json_pack("{s:s, s:s}", "result", "error", "error", err);
    }
    logf_("%-20s gid=%s -> %u %s", "/msg/check", gid, status,
          json_string_value(json_object_get(ans, "result")));
    return reply(conn, status, ans);
}

static json_t *account_json(const struct ledger_account *a)
{
    return json_pack("{s:s, s:I, s:I}", "id", a->id, "balance", (json_int_t)a->balance, "frozen",
                     (json_int_t)a->frozen);
}

static void add_account(void *ud, const struct ledger_account *a)
{
    json_array_append_new(ud, account_json(a));
}

/* GET /accounts (id NULL): every account, the totals and the open holds;
 * GET /accounts/ID: one account. */
static enum MHD_Result serve_accounts(struct MHD_Connection *conn, const char *id)
{
    char err[256];
    int holds = 0;
    json_t *list = json_array();
    int rc = ledger_accounts(&pool, id, add_account, list, &holds, err, sizeof err);
    if (rc != DB_OK) {
        json_decref(list);
        return reply_error(conn, rc == DB_BUSY ? 503 : 500, "error", err);
    }
    if (id != NULL) {
        json_t *one = json_incref(json_array_get(list, 0));
        json_decref(list);
        return one != NULL ? reply(conn, 200, one)
                           : reply_error(conn, 404, "not_found", "no such account");
    }
    json_int_t total = 0, frozen = 0;
    size_t i;
    json_t *a;
    json_array_foreach(list, i, a)
    {
        total += json_integer_value(json_object_get(a, "balance"));
        frozen += json_integer_value(json_object_get(a, "frozen"));
    }
    return reply(conn, 200,
                 json_pack("{s:o, s:I, s:I, s:i}", "accounts", list, "total", total, "frozen",
                           frozen, "holds", holds));
}

/* POST /accounts {"id": "...", "balance": N}: create or set an account. */
static enum MHD_Result serve_set_account(struct MHD_Connection *conn, const struct body *b)
{
    json_error_t je;
    json_t *o = json_loadb(b->buf ? b->buf : "", b->len, 0, &je);
    json_t *id = json_object_get(o, "id");
    json_t *bal = json_object_get(o, "balance");
    if (!json_is_string(id) || json_string_length(id) == 0 ||
        json_string_length(id) >= DB_TEXT_MAX || strchr(json_string_value(id), '/') != NULL ||
        !json_is_integer(bal) || json_integer_value(bal) < 0) {
        json_decref(o);
        return reply_error(
            conn, 400, "bad_request",
            "body: {\"id\": non-empty string without '/', \"balance\": integer >= 0}");
    }
    char err[256];
    struct ledger_account a;
    int rc = ledger_set_account(&pool, json_string_value(id), json_integer_value(bal), &a, err,
                                sizeof err);
    json_decref(o);
    if (rc == DB_OK)
        return reply(conn, 200, account_json(&a));
    return reply_error(conn,
                       rc == LEDGER_REFUSED ? 409
                       : rc == DB_BUSY      ? 503
                                            : 500,
                       rc == LEDGER_REFUSED ? "refused" : "error", err);
}

/* POST /admin/faults (TEST AID, --test-faults only). */
static enum MHD_Result serve_faults(struct MHD_Connection *conn, const struct body *b)
{
    if (!faults.enabled)
        return reply_error(conn, 404, "not_found", "fault injection is off (--test-faults)");
    json_error_t je;
    json_t *o = json_loadb(b->buf ? b->buf : "", b->len, 0, &je);
    json_t *path = json_object_get(o, "path");
    json_t *fail = json_object_get(o, "fail");
    json_t *status = json_object_get(o, "status");
    json_t *delay = json_object_get(o, "delay_ms");
    enum MHD_Result ret;
    if (!json_is_string(path) || json_string_length(path) >= MAX_PATH ||
        (fail && !json_is_integer(fail)) || (status && !json_is_integer(status)) ||
        (delay && !json_is_integer(delay)) ||
        (status && json_integer_value(status) != 0 &&
         (json_integer_value(status) < 200 || json_integer_value(status) > 599))) {
        ret = reply_error(conn, 400, "bad_request",
                          "body: {\"path\": string, \"fail\": N, \"status\": S, \"delay_ms\": M}");
    } else if (fault_set(json_string_value(path), fail ? (int)json_integer_value(fail) : 1,
                         status ? (int)json_integer_value(status) : 0,
                         delay ? (int)json_integer_value(delay) : 0) != 0) {
        ret = reply_error(conn, 409, "refused", "too many fault paths");
    } else {
        ret = reply(conn, 200, json_pack("{s:s}", "result", "ok"));
    }
    json_decref(o);
    return ret;
}

static enum MHD_Result route_request(struct MHD_Connection *conn, const char *url,
                                     const char *method, const struct body *b)
{
    bool get = strcmp(method, "GET") == 0;
    bool post = strcmp(method, "POST") == 0;
    int fstatus, fdelay;
    if (post && fault_take(url, &fstatus, &fdelay)) {
        if (fdelay > 0) {
            logf_("%-20s delaying %d ms (injected fault)", url, fdelay);
            nanosleep(&(struct timespec){fdelay / 1000, (long)(fdelay % 1000) * 1000000L}, NULL);
        }
        if (fstatus != 0) {
            logf_("%-20s -> %d (injected fault)", url, fstatus);
            return reply_error(conn, (unsigned)fstatus, "injected", "injected fault (test aid)");
        }
    }
    if (get && strcmp(url, "/healthz") == 0)
        return reply(conn, 200, json_pack("{s:s}", "status", "ok"));
    if (get && strcmp(url, "/accounts") == 0)
        return serve_accounts(conn, NULL);
    if (get && strncmp(url, "/accounts/", 10) == 0 && url[10] != '\0')
        return serve_accounts(conn, url + 10);
    if (!post)
        return reply_error(conn, 404, "not_found", "no such endpoint");
    if (strcmp(url, "/accounts") == 0)
        return serve_set_account(conn, b);
    if (strcmp(url, "/admin/faults") == 0)
        return serve_faults(conn, b);
    if (strcmp(url, "/msg/start") == 0)
        return serve_msg_start(conn, b);
    if (strcmp(url, "/msg/check") == 0)
        return serve_msg_check(conn);
    if (strcmp(url, "/xa/debit") == 0)
        return serve_xa(conn, url, ledger_debit, b);
    if (strcmp(url, "/xa/credit") == 0)
        return serve_xa(conn, url, ledger_credit, b);
    const struct route *rt = route_by_path(url);
    if (rt != NULL)
        return serve_branch(conn, rt, b);
    return reply_error(conn, 404, "not_found", "no such endpoint");
}

/* MHD calls this once with the headers, once per body chunk, and once more
 * when the body is complete; the body is collected into a capped buffer. */
static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version, const char *upload,
                                 size_t *upload_size, void **state)
{
    (void)cls;
    (void)version;
    struct body *b = *state;
    if (b == NULL) {
        b = calloc(1, sizeof *b);
        if (b == NULL)
            return MHD_NO;
        *state = b;
        return MHD_YES;
    }
    if (*upload_size > 0) {
        if (!b->too_big && b->len + *upload_size <= MAX_BODY) {
            char *nb = realloc(b->buf, b->len + *upload_size + 1);
            if (nb == NULL)
                return MHD_NO;
            b->buf = nb;
            memcpy(b->buf + b->len, upload, *upload_size);
            b->len += *upload_size;
            b->buf[b->len] = '\0';
        } else {
            b->too_big = true;
        }
        *upload_size = 0;
        return MHD_YES;
    }
    if (b->too_big)
        return reply_error(conn, 413, "bad_request", "body too large");
    return route_request(conn, url, method, b);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **state,
                         enum MHD_RequestTerminationCode code)
{
    (void)cls;
    (void)conn;
    (void)code;
    struct body *b = *state;
    if (b != NULL) {
        free(b->buf);
        free(b);
        *state = NULL;
    }
}

/* ---- main ------------------------------------------------------------------ */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: bank --listen HOST:PORT --db CONNINFO_OR_PATH [--pool N]\n"
            "            [--dtx URL --resource NAME] [--amqp URL [--amqp-queue NAME]]\n"
            "            [--test-faults] [--quiet]\n"
            "  --db      a libpq conninfo/URI (starts with \"postgres\", or has dbname= or "
            "host=),\n"
            "            otherwise a SQLite file (created if missing)\n"
            "  --pool    database connections at most (default 16)\n"
            "  --dtx     dtxd's URL, and --resource this database's resource name in dtxd:\n"
            "            both needed by the xa endpoints (PostgreSQL only)\n"
            "  --amqp    also serve the branch operations over RabbitMQ (or BANK_AMQP_URL):\n"
            "            amqp[s]://user:pass@host:port/vhost\n"
            "  --amqp-queue     the queue consumed (default bank.<--listen port>); routing\n"
            "                   keys <queue>.saga.debit, <queue>.tcc.debit.confirm, ...\n"
            "  --amqp-exchange  the topic exchange bound to it with <queue>.# (default dtx.bank)\n"
            "  --amqp-cacert    amqps: the CA file that verifies the broker\n"
            "  --amqp-max-attempts N  a msg delivery's attempts before it is dead-lettered\n"
            "                   (default 720: about an hour of retries)\n"
            "  --test-faults  enable POST /admin/faults (a test aid)\n"
            "  --quiet   do not log every call on stderr\n");
}

/* Resolve HOST:PORT. OUT: *res (caller frees with freeaddrinfo). */
static int resolve_listen(const char *hostport, struct addrinfo **res)
{
    char host[128];
    const char *colon = strrchr(hostport, ':');
    if (colon == NULL || colon == hostport || (size_t)(colon - hostport) >= sizeof host)
        return -1;
    memcpy(host, hostport, (size_t)(colon - hostport));
    host[colon - hostport] = '\0';
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    return getaddrinfo(host, colon + 1, &hints, res) == 0 ? 0 : -1;
}

int main(int argc, char **argv)
{
    const char *listen_at = NULL, *db = NULL;
    const char *amqp_url = getenv("BANK_AMQP_URL"), *amqp_queue = NULL, *amqp_cacert = NULL;
    const char *amqp_exchange = "dtx.bank";
    int pool_max = 16, amqp_max_attempts = 720;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--listen") == 0 && i + 1 < argc) {
            listen_at = argv[++i];
        } else if (strcmp(a, "--db") == 0 && i + 1 < argc) {
            db = argv[++i];
        } else if (strcmp(a, "--dtx") == 0 && i + 1 < argc) {
            dtx_url = argv[++i];
        } else if (strcmp(a, "--resource") == 0 && i + 1 < argc) {
            resource = argv[++i];
        } else if (strcmp(a, "--amqp") == 0 && i + 1 < argc) {
            amqp_url = argv[++i];
        } else if (strcmp(a, "--amqp-queue") == 0 && i + 1 < argc) {
            amqp_queue = argv[++i];
        } else if (strcmp(a, "--amqp-exchange") == 0 && i + 1 < argc) {
            amqp_exchange = argv[++i];
        } else if (strcmp(a, "--amqp-cacert") == 0 && i + 1 < argc) {
            amqp_cacert = argv[++i];
        } else if (strcmp(a, "--amqp-max-attempts") == 0 && i + 1 < argc) {
            amqp_max_attempts = atoi(argv[++i]);
        } else if (strcmp(a, "--pool") == 0 && i + 1 < argc) {
            pool_max = atoi(argv[++i]);
        } else if (strcmp(a, "--test-faults") == 0) {
            faults.enabled = true;
        } else if (strcmp(a, "--quiet") == 0) {
            quiet = true;
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (amqp_url != NULL && amqp_url[0] == '\0')
        amqp_url = NULL; /* BANK_AMQP_URL= turns it off */
    if (listen_at == NULL || db == NULL || pool_max < 1 || amqp_max_attempts < 1 ||
        (amqp_url == NULL && (amqp_queue != NULL || amqp_cacert != NULL))) {
        usage(stderr);
        return 2;
    }
    snprintf(listen_name, sizeof listen_name, "%s", listen_at);
    if ((dtx_url == NULL) != (resource == NULL)) {
        fprintf(stderr, "bank: --dtx and --resource go together\n");
        return 2;
    }
    if (resource != NULL && !db_is_pg(db)) {
        fprintf(stderr, "bank: --resource needs a PostgreSQL --db: SQLite has no PREPARE "
                        "TRANSACTION (2pc on resources)\n");
        return 2;
    }
    /* before any thread: the xa endpoints' dtx clients use libcurl */
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (pthread_key_create(&client_key, client_free) != 0) {
        fprintf(stderr, "bank: pthread_key_create failed\n");
        return 1;
    }

    db_pool_init(&pool, db, pool_max);
    char err[512];
    if (ledger_init(&pool, err, sizeof err) != DB_OK) {
        fprintf(stderr, "bank: %s\n", err);
        return 1;
    }

    struct addrinfo *ai = NULL;
    if (resolve_listen(listen_at, &ai) != 0) {
        fprintf(stderr, "bank: cannot resolve --listen %s\n", listen_at);
        return 2;
    }
    /* Block the stop signals in every thread; main waits for them below. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    signal(SIGPIPE, SIG_IGN);

    /* After the mask: the AMQP thread inherits it, so main alone sees the
     * stop signals. */
    struct bank_amqp *amqp = NULL;
    char default_queue[64];
    if (amqp_url != NULL) {
        const char *port = strrchr(listen_at, ':');
        snprintf(default_queue, sizeof default_queue, "bank.%s", port + 1);
        struct bank_amqp_config ac = {
            .broker_url = amqp_url,
            .queue = amqp_queue != NULL ? amqp_queue : default_queue,
            .exchange = amqp_exchange,
            .cacert = amqp_cacert,
            .db = db,
            .max_attempts = amqp_max_attempts,
            .fault = fault_take,
            .log = logf_,
        };
        if (bank_amqp_start(&ac, &amqp, err, sizeof err) != 0) {
            fprintf(stderr, "bank: --amqp: %s\n", err);
            return 2;
        }
    }

    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                     MHD_USE_ERROR_LOG | (ai->ai_family == AF_INET6 ? MHD_USE_IPv6 : 0);
    struct MHD_Daemon *d = MHD_start_daemon(
        flags, 0, NULL, NULL, on_access, NULL, MHD_OPTION_SOCK_ADDR, ai->ai_addr,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL, MHD_OPTION_CONNECTION_LIMIT, 1000u,
        MHD_OPTION_CONNECTION_TIMEOUT, 120u, MHD_OPTION_LISTEN_BACKLOG_SIZE, 512u, MHD_OPTION_END);
    freeaddrinfo(ai);
    if (d == NULL) {
        fprintf(stderr, "bank: cannot listen on %s: %s\n", listen_at, strerror(errno));
        bank_amqp_stop(amqp);
        return 1;
    }
    logf_("listening, database %s (%s)", pool.is_pg ? "postgresql" : "sqlite",
          pool.is_pg ? "conninfo" : db);

    int sig = 0;
    sigwait(&stop, &sig);
    /* the AMQP loop first: it finishes the message in hand (and its local
     * commit, reply and ack) within about 200 ms */
    bank_amqp_stop(amqp);
    MHD_stop_daemon(d);
    db_pool_close(&pool);
    return 0;
}
