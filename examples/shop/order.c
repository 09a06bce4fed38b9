/*
 * order.c - the shop's order service and client: orders in their own
 * database (PostgreSQL or SQLite), each one carried out by a saga in dtxd
 * whose every step is a command on RabbitMQ.
 *
 *   order setup --amqp URL                declare the topology (shop.h)
 *   order serve --db DB --amqp URL        consume shop.order (below)
 *   order place --db DB --dtx URL --customer C --item I --qty N --amount CENTS
 *               [--id ID] [--wait] [options]
 *   order show  --db DB [ID]              orders, as JSON
 *
 * `place` writes the order (status pending) and commits, then creates the
 * saga "order-<id>" with libdtx:
 *
 *   1  amqp://shop/order.confirm   / amqp://shop/order.cancel    (this service)
 *   2  amqp://shop/stock.reserve   / amqp://shop/stock.release   (stock)
 *   3  amqp://shop/payment.charge  / amqp://shop/payment.refund  (payment)
 *   4  amqp://shop/order.complete  / amqp://shop/order.cancel    (this service)
 *
 * dtxd runs the steps in order. When one is refused (out of stock, the
 * balance is short), it compensates every step that started, newest first:
 * the payment is refunded, the stock released over its queue, and step 1's
 * compensation cancels the order. When all four succeed, step 4 has marked
 * the order paid. The order's final status is thus written by the saga, not
 * by the client: a client that dies after `place` changes nothing.
 *
 * Placing is idempotent per order id: the row is inserted once (a second
 * `place` with the same id and contents goes on with the same saga; other
 * contents are refused) and the saga's gid is derived from the id, so dtxd
 * answers a repeated create with the transaction it has. A `place` that
 * could not reach dtxd leaves the order pending; run it again.
 *
 * Commands of shop.order (payload {"order"}):
 *   order.confirm   action      the order exists, belongs to this saga and is
 *                               not cancelled (else FAILURE)
 *   order.complete  action      pending -> paid (FAILURE if cancelled)
 *   order.cancel    compensate  pending or paid -> cancelled
 *
 * Table orders(id, gid, customer, item, qty, amount, status, updated_at).
 */
#include "shop.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *const SCHEMA[] = {
    "CREATE TABLE IF NOT EXISTS orders ("
    " id text PRIMARY KEY,"
    " gid text NOT NULL,"
    " customer text NOT NULL,"
    " item text NOT NULL,"
    " qty bigint NOT NULL CHECK (qty > 0),"
    " amount bigint NOT NULL CHECK (amount > 0),"
    " status text NOT NULL CHECK (status IN ('pending', 'paid', 'cancelled')),"
    " updated_at text NOT NULL)",
};

/* ---- the order's states --------------------------------------------------- */

enum order_status {
    ORDER_PENDING,   /* written by `place`; its saga is running (or not created yet) */
    ORDER_PAID,      /* the saga's last step: stock reserved, payment charged */
    ORDER_CANCELLED, /* step 1 compensated: whatever was reserved or charged is undone */
    ORDER_NONE,      /* (no such order) */
};

static const char *const STATUS[] = {"pending", "paid", "cancelled", "none"};

static enum order_status status_of(const char *s)
{
    for (int i = ORDER_PENDING; i < ORDER_NONE; i++)
        if (strcmp(s, STATUS[i]) == 0)
            return (enum order_status)i;
    return ORDER_NONE;
}

/* Read the status of order id, if it belongs to gid (NULL: any). OUT: *st
 * (ORDER_NONE when there is no such order). Returns a DB_ code. */
static int order_status(struct db_conn *c, const char *id, const char *gid, enum order_status *st)
{
    int rows;
    char col[1][DB_TEXT_MAX] = {{0}};
    int rc = gid != NULL ? db_run(c, "SELECT status FROM orders WHERE id = $1 AND gid = $2",
                                  (struct db_arg[]){DB_S(id), DB_S(gid)}, 2, &rows, col, 1)
                         : db_run(c, "SELECT status FROM orders WHERE id = $1",
                                  (struct db_arg[]){DB_S(id)}, 1, &rows, col, 1);
    if (rc == DB_OK)
        *st = rows == 1 ? status_of(col[0]) : ORDER_NONE;
    return rc;
}

static void now_utc(char *buf, size_t cap)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(buf, cap, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, cap - n, ".%03ldZ", ts.tv_nsec / 1000000);
}

/* Every status change: from -> to, in the caller's transaction, logged. */
static int order_transition(struct db_conn *c, const char *id, enum order_status from,
                            enum order_status to)
{
    char now[40];
    now_utc(now, sizeof now);
    int rows;
    int rc =
        db_run(c, "UPDATE orders SET status = $3, updated_at = $4 WHERE id = $1 AND status = $2",
               (struct db_arg[]){DB_S(id), DB_S(STATUS[from]), DB_S(STATUS[to]), DB_S(now)}, 4,
               &rows, NULL, 0);
    if (rc != DB_OK)
        return rc;
    if (rows != 1) {
        db_set_error(c, "order %s is no longer %s", id, STATUS[from]);
        return DB_ERR;
    }
    shop_log("order %s: %s -> %s", id, STATUS[from], STATUS[to]);
    return DB_OK;
}

/* ---- the commands of shop.order ------------------------------------------- */

/* The order of a command, and its status. Returns DTX_AMQP_SUCCESS to go
 * on, else the result to answer (reason set). */
static enum dtx_amqp_result find(struct db_conn *c, const struct dtx_amqp_msg *m, json_t *payload,
                                 const char **id, enum order_status *st, char *reason, size_t cap)
{
    *id = shop_str(payload, "order");
    if (*id == NULL) {
        snprintf(reason, cap, "payload needs order");
        return DTX_AMQP_FAILURE;
    }
    if (order_status(c, *id, m->gid, st) != DB_OK)
        return DTX_AMQP_RETRY;
    return DTX_AMQP_SUCCESS;
}

static enum dtx_amqp_result confirm(struct db_conn *c, const struct dtx_amqp_msg *m,
                                    json_t *payload, char *reason, size_t cap)
{
    const char *id;
    enum order_status st;
    enum dtx_amqp_result r = find(c, m, payload, &id, &st, reason, cap);
    if (r != DTX_AMQP_SUCCESS)
        return r;
    if (st == ORDER_NONE) {
        snprintf(reason, cap, "no order %s of saga %s", id, m->gid);
        return DTX_AMQP_FAILURE;
    }
    if (st == ORDER_CANCELLED) {
        snprintf(reason, cap, "order %s is cancelled", id);
        return DTX_AMQP_FAILURE;
    }
    snprintf(reason, cap, "order %s confirmed", id);
    return DTX_AMQP_SUCCESS;
}

static enum dtx_amqp_result complete(struct db_conn *c, const struct dtx_amqp_msg *m,
                                     json_t *payload, char *reason, size_t cap)
{
    const char *id;
    enum order_status st;
    enum dtx_amqp_result r = find(c, m, payload, &id, &st, reason, cap);
    if (r != DTX_AMQP_SUCCESS)
        return r;
    if (st == ORDER_NONE || st == ORDER_CANCELLED) {
        snprintf(reason, cap, "order %s is %s", id, st == ORDER_NONE ? "unknown" : "cancelled");
        return DTX_AMQP_FAILURE;
    }
    if (st == ORDER_PENDING && order_transition(c, id, ORDER_PENDING, ORDER_PAID) != DB_OK)
        return DTX_AMQP_RETRY;
    snprintf(reason, cap, "order %s paid", id);
    return DTX_AMQP_SUCCESS;
}

static enum dtx_amqp_result cancel(struct db_conn *c, const struct dtx_amqp_msg *m, json_t *payload,
                                   char *reason, size_t cap)
{
    const char *id;
    enum order_status st;
    enum dtx_amqp_result r = find(c, m, payload, &id, &st, reason, cap);
    if (r != DTX_AMQP_SUCCESS)
        return r;
    if (st == ORDER_NONE) {
        /* The barrier applied this undo, so its confirm found the order. */
        snprintf(reason, cap, "inconsistent: no order %s of saga %s to cancel", id, m->gid);
        return DTX_AMQP_RETRY;
    }
    if (st != ORDER_CANCELLED && order_transition(c, id, st, ORDER_CANCELLED) != DB_OK)
        return DTX_AMQP_RETRY;
    snprintf(reason, cap, "order %s cancelled", id);
    return DTX_AMQP_SUCCESS;
}

static const struct shop_route ROUTES[] = {
    {"order.confirm", "action", confirm},
    {"order.complete", "action", complete},
    {"order.cancel", "compensate", cancel},
};

/* ---- place ---------------------------------------------------------------- */

struct place {
    const char *db, *dtx, *id, *customer, *item;
    int64_t qty, amount;
    bool wait;
    int64_t wait_ms;
    int64_t retry[3];           /* initial, max, limit; -1: dtxd's default */
    int64_t request_timeout_ms; /* -1: dtxd's default */
    int64_t timeout_ms;         /* -1: none */
};

/* A fresh order id: "o-" and 12 hex digits. */
static void new_id(char *buf, size_t cap)
{
    unsigned char r[6] = {0};
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0 || read(fd, r, sizeof r) != (ssize_t)sizeof r) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t x = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ (uint64_t)getpid();
        memcpy(r, &x, sizeof r);
    }
    if (fd >= 0)
        close(fd);
    snprintf(buf, cap, "o-%02x%02x%02x%02x%02x%02x", r[0], r[1], r[2], r[3], r[4], r[5]);
}

/* Insert the order unless it is there; one that is there must say the same.
 * Returns SHOP_EXIT_OK or an exit status (message printed). */
static int store_order(struct db_conn *c, const struct place *p, const char *gid)
{
    char now[40];
    now_utc(now, sizeof now);
    if (db_run(c,
               "INSERT INTO orders (id, gid, customer, item, qty, amount, status, updated_at)"
               " VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7) ON CONFLICT (id) DO NOTHING",
               (struct db_arg[]){DB_S(p->id), DB_S(gid), DB_S(p->customer), DB_S(p->item),
                                 DB_I(p->qty), DB_I(p->amount), DB_S(now)},
               7, NULL, NULL, 0) != DB_OK) {
        fprintf(stderr, "order: %s\n", c->err);
        return SHOP_EXIT_ERROR;
    }
    int rows;
    char col[4][DB_TEXT_MAX] = {{0}};
    if (db_run(c, "SELECT customer, item, qty, amount FROM orders WHERE id = $1",
               (struct db_arg[]){DB_S(p->id)}, 1, &rows, col, 4) != DB_OK) {
        fprintf(stderr, "order: %s\n", c->err);
        return SHOP_EXIT_ERROR;
    }
    if (rows != 1 || strcmp(col[0], p->customer) != 0 || strcmp(col[1], p->item) != 0 ||
        shop_parse_int(col[2]) != p->qty || shop_parse_int(col[3]) != p->amount) {
        fprintf(stderr, "order: order %s exists with other contents (%s x %s for %s, %s cents)\n",
                p->id, col[2], col[1], col[0], col[3]);
        return SHOP_EXIT_USAGE;
    }
    return SHOP_EXIT_OK;
}

/* Compact JSON text of a new reference (dropped); NULL when out of memory. */
static char *dump(json_t *v)
{
    char *s = v != NULL ? json_dumps(v, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(v);
    return s;
}

/* The saga of the order (see the file comment). OUT: *out, freed with
 * dtx_spec_free. Returns 0 or a DTX_E code. */
static int make_saga(const struct place *p, const char *gid, struct dtx_spec **out)
{
    char *order = dump(json_pack("{s:s}", "order", p->id));
    char *stock = dump(
        json_pack("{s:s, s:s, s:I}", "order", p->id, "item", p->item, "qty", (json_int_t)p->qty));
    char *pay = dump(json_pack("{s:s, s:s, s:I}", "order", p->id, "customer", p->customer, "amount",
                               (json_int_t)p->amount));
    struct dtx_spec *s = NULL;
    int rc = order != NULL && stock != NULL && pay != NULL ? dtx_saga_new(&s) : DTX_ENOMEM;
    if (rc == 0)
        rc = dtx_spec_set_gid(s, gid);
    if (rc == 0)
        rc = dtx_saga_add_step(s, SHOP_URL("order.confirm"), SHOP_URL("order.cancel"), order);
    if (rc == 0)
        rc = dtx_saga_add_step(s, SHOP_URL("stock.reserve"), SHOP_URL("stock.release"), stock);
    if (rc == 0)
        rc = dtx_saga_add_step(s, SHOP_URL("payment.charge"), SHOP_URL("payment.refund"), pay);
    if (rc == 0)
        rc = dtx_saga_add_step(s, SHOP_URL("order.complete"), SHOP_URL("order.cancel"), order);
    if (rc == 0)
        rc = dtx_spec_set_retry(s, p->retry[0], p->retry[1], p->retry[2]);
    if (rc == 0 && p->request_timeout_ms > 0)
        rc = dtx_spec_set_request_timeout(s, p->request_timeout_ms);
    if (rc == 0 && p->timeout_ms >= 0)
        rc = dtx_spec_set_timeout(s, p->timeout_ms);
    free(order);
    free(stock);
    free(pay);
    if (rc != 0) {
        dtx_spec_free(s);
        return rc;
    }
    *out = s;
    return 0;
}

/* Why the saga failed: the last error of its highest step that has one. */
static const char *why_failed(const struct dtx_txn *t)
{
    for (size_t i = t->n_branches; i > 0; i--)
        if (t->branches[i - 1].last_error != NULL)
            return t->branches[i - 1].last_error;
    return NULL;
}

static int place(const struct place *p)
{
    char id[80], gid[DTX_GID_MAX + 1], err[512];
    struct place q = *p;
    if (q.id == NULL) {
        new_id(id, sizeof id);
        q.id = id;
    }
    snprintf(gid, sizeof gid, "order-%s", q.id);

    struct db_pool pool;
    struct db_conn *c =
        shop_db_open(&pool, q.db, SCHEMA, sizeof SCHEMA / sizeof SCHEMA[0], err, sizeof err);
    if (c == NULL) {
        fprintf(stderr, "order: %s\n", err);
        return SHOP_EXIT_ERROR;
    }
    int rc = store_order(c, &q, gid);
    if (rc != SHOP_EXIT_OK)
        goto out;
    printf("order %s: %lld x %s for %s, %lld cents (saga %s)\n", q.id, (long long)q.qty, q.item,
           q.customer, (long long)q.amount, gid);
    fflush(stdout);

    struct dtx_client *dc = NULL;
    struct dtx_spec *spec = NULL;
    struct dtx_txn *t = NULL;
    int drc = dtx_client_new(q.dtx, &dc);
    if (drc == 0)
        drc = make_saga(&q, gid, &spec);
    if (drc == 0)
        drc = dtx_create(dc, spec, &t);
    if (drc != 0) {
        printf("order %s pending: the saga was not created: %s%s%s (place it again with --id "
               "%s)\n",
               q.id, dtx_strerror(drc), dc != NULL ? ": " : "",
               dc != NULL ? dtx_client_last_error(dc)->message : "", q.id);
        rc = SHOP_EXIT_ERROR;
        goto done;
    }
    if (!q.wait) {
        printf("order %s pending: saga %s %s\n", q.id, gid, t->status);
        goto done;
    }
    dtx_txn_free(t);
    t = NULL;
    drc = dtx_wait(dc, gid, q.wait_ms, &t);
    if (drc != 0) {
        printf("order %s pending: %s%s\n", q.id, dtx_strerror(drc),
               drc == DTX_ETIMEDOUT ? " (dtxd goes on with it)" : "");
        rc = SHOP_EXIT_ERROR;
        goto done;
    }
    /* The saga is final, so its last step or its compensation has set the
     * order's status: read it back, that is what the shop shows. */
    enum order_status st;
    if (order_status(c, q.id, NULL, &st) != DB_OK) {
        fprintf(stderr, "order: %s\n", c->err);
        rc = SHOP_EXIT_ERROR;
        goto done;
    }
    if (strcmp(t->status, "succeeded") == 0 && st == ORDER_PAID) {
        printf("order %s paid\n", q.id);
    } else if (strcmp(t->status, "failed") == 0 && st == ORDER_CANCELLED) {
        const char *why = why_failed(t);
        printf("order %s cancelled%s%s\n", q.id, why ? ": " : "", why ? why : "");
        rc = SHOP_EXIT_REFUSED;
    } else {
        printf("order %s is %s but its saga %s (a bug)\n", q.id, STATUS[st], t->status);
        rc = SHOP_EXIT_ERROR;
    }
done:
    dtx_txn_free(t);
    dtx_spec_free(spec);
    dtx_client_free(dc);
out:
    shop_db_close(&pool, c);
    return rc;
}

/* ---- the command line ----------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: order setup --amqp URL [--cacert FILE]\n"
            "       order serve --db DB --amqp URL [--cacert FILE] [--prefetch N] [--quiet]\n"
            "       order place --db DB --dtx URL --customer C --item I --qty N --amount CENTS\n"
            "                   [--id ID] [--wait] [--wait-ms MS] [--retry INITIAL,MAX,LIMIT]\n"
            "                   [--request-timeout-ms MS] [--timeout-ms MS]\n"
            "       order show  --db DB [ID]\n"
            "  setup   declare the exchange, queues and bindings on the broker\n"
            "  serve   consume queue " SHOP_Q_ORDER " (confirm, complete, cancel an order)\n"
            "  place   store the order (pending) and start its saga in dtxd; with --wait,\n"
            "          wait until it is paid (exit 0) or cancelled (exit 1); 3: an error or\n"
            "          not known yet (place it again with the same --id)\n"
            "  show    the orders (or one), as JSON\n"
            "  --db    a libpq conninfo/URI (starts with \"postgres\", or has dbname= or host=),\n"
            "          otherwise a SQLite file (created if missing)\n"
            "  --amqp  the broker (default $SHOP_AMQP_URL)\n"
            "  --dtx   dtxd's URL, http://HOST:PORT\n");
}

static int show(const char *db, const char *id)
{
    static const char *const cols[] = {"id",  "gid",    "customer", "item",
                                       "qty", "amount", "status",   "updated_at"};
    static const bool ints[] = {false, false, false, false, true, true, false, false};
    char err[512];
    struct db_pool pool;
    struct db_conn *c =
        shop_db_open(&pool, db, SCHEMA, sizeof SCHEMA / sizeof SCHEMA[0], err, sizeof err);
    if (c == NULL) {
        fprintf(stderr, "order: %s\n", err);
        return SHOP_EXIT_ERROR;
    }
    json_t *o = json_object();
    struct db_arg arg = DB_S(id);
    int rc = shop_rows_json(c,
                            id != NULL
                                ? "SELECT id, gid, customer, item, qty, amount, status, updated_at"
                                  " FROM orders WHERE id = $1"
                                : "SELECT id, gid, customer, item, qty, amount, status, updated_at"
                                  " FROM orders ORDER BY updated_at, id",
                            &arg, id != NULL ? 1 : 0, cols, ints, 8, o, "orders");
    if (rc != DB_OK) {
        fprintf(stderr, "order: %s\n", c->err);
        json_decref(o);
        shop_db_close(&pool, c);
        return SHOP_EXIT_ERROR;
    }
    shop_print_json(o);
    shop_db_close(&pool, c);
    return SHOP_EXIT_OK;
}

/* A numeric option's value; *ok = false unless s is an integer in
 * [min, max]. */
static int64_t opt_int(const char *s, int64_t min, int64_t max, bool *ok)
{
    int64_t v = shop_parse_int(s);
    if (v < min || v > max)
        *ok = false;
    return v;
}

int main(int argc, char **argv)
{
    shop_prog = "order";
    const char *cmd = argc > 1 ? argv[1] : NULL, *amqp = getenv("SHOP_AMQP_URL");
    const char *cacert = NULL, *show_id = NULL;
    int64_t prefetch = 0;
    struct place p = {.wait_ms = 60000, .request_timeout_ms = -1, .timeout_ms = -1};
    p.retry[0] = p.retry[1] = p.retry[2] = -1;
    p.qty = p.amount = -1;
    bool ok = cmd != NULL;
    if (cmd != NULL && (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0)) {
        usage(stdout);
        return SHOP_EXIT_OK;
    }
    for (int i = 2; ok && i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--wait") == 0) {
            p.wait = true;
        } else if (strcmp(a, "--quiet") == 0) {
            shop_quiet = true;
        } else if (a[0] != '-') {
            ok = show_id == NULL;
            show_id = a;
        } else if (v == NULL) {
            ok = false;
        } else {
            i++;
            if (strcmp(a, "--db") == 0) {
                p.db = v;
            } else if (strcmp(a, "--amqp") == 0) {
                amqp = v;
            } else if (strcmp(a, "--cacert") == 0) {
                cacert = v;
            } else if (strcmp(a, "--prefetch") == 0) {
                prefetch = opt_int(v, 0, 65535, &ok);
            } else if (strcmp(a, "--dtx") == 0) {
                p.dtx = v;
            } else if (strcmp(a, "--id") == 0) {
                p.id = v;
                ok = shop_valid_id(v);
            } else if (strcmp(a, "--customer") == 0) {
                p.customer = v;
                ok = shop_valid_id(v);
            } else if (strcmp(a, "--item") == 0) {
                p.item = v;
                ok = shop_valid_id(v);
            } else if (strcmp(a, "--qty") == 0) {
                p.qty = opt_int(v, 1, INT64_MAX, &ok);
            } else if (strcmp(a, "--amount") == 0) {
                p.amount = opt_int(v, 1, INT64_MAX, &ok);
            } else if (strcmp(a, "--wait-ms") == 0) {
                p.wait_ms = opt_int(v, 1, INT64_MAX, &ok);
            } else if (strcmp(a, "--request-timeout-ms") == 0) {
                p.request_timeout_ms = opt_int(v, 1, INT64_MAX, &ok);
            } else if (strcmp(a, "--timeout-ms") == 0) {
                p.timeout_ms = opt_int(v, 0, INT64_MAX, &ok);
            } else if (strcmp(a, "--retry") == 0) {
                long long r[3] = {-1, -1, -1};
                char end;
                ok = sscanf(v, "%lld,%lld,%lld%c", &r[0], &r[1], &r[2], &end) == 3;
                for (int k = 0; k < 3; k++)
                    p.retry[k] = r[k];
            } else {
                ok = false;
            }
        }
    }
    if (ok && strcmp(cmd, "setup") == 0 && amqp != NULL && show_id == NULL) {
        char err[512];
        if (shop_declare(amqp, cacert, err, sizeof err) != 0) {
            fprintf(stderr, "order: setup: %s\n", err);
            return SHOP_EXIT_ERROR;
        }
        printf("exchange %s, queues %s %s %s (and .dead) declared\n", SHOP_EXCHANGE, SHOP_Q_ORDER,
               SHOP_Q_STOCK, SHOP_Q_PAYMENT);
        return SHOP_EXIT_OK;
    }
    if (ok && strcmp(cmd, "serve") == 0 && p.db != NULL && amqp != NULL && show_id == NULL) {
        struct shop_service s = {
            .name = "order",
            .queue = SHOP_Q_ORDER,
            .db = p.db,
            .broker_url = amqp,
            .cacert = cacert,
            .schema = SCHEMA,
            .n_schema = sizeof SCHEMA / sizeof SCHEMA[0],
            .routes = ROUTES,
            .n_routes = sizeof ROUTES / sizeof ROUTES[0],
            .prefetch = (int)prefetch,
        };
        return shop_serve(&s);
    }
    if (ok && strcmp(cmd, "place") == 0 && p.db != NULL && p.dtx != NULL && p.customer != NULL &&
        p.item != NULL && p.qty > 0 && p.amount > 0 && show_id == NULL)
        return place(&p);
    if (ok && strcmp(cmd, "show") == 0 && p.db != NULL)
        return show(p.db, show_id);
    usage(stderr);
    return SHOP_EXIT_USAGE;
}
