/*
 * shop.h - what the three shop programs (order, stock, payment) share: the
 * RabbitMQ topology, the participant service around libdtx's AMQP
 * participant loop, and small helpers for payloads and command lines.
 *
 * Topology (shop_declare makes it; every declaration is idempotent):
 *
 *   exchange "shop" (direct, durable)
 *     order.confirm, order.complete, order.cancel  -> queue shop.order
 *     stock.reserve, stock.release                 -> queue shop.stock
 *     payment.charge, payment.refund               -> queue shop.payment
 *   queues shop.order.dead, shop.stock.dead, shop.payment.dead: where the
 *   participant loop dead-letters what it cannot take (a poison message)
 *
 * A saga step's URL is amqp://shop/<routing key>: dtxd publishes the command
 * to the exchange, the service consuming the queue runs it and replies.
 */
#ifndef SHOP_H
#define SHOP_H

#include "../bank/db.h"

#include <dtx.h>
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SHOP_EXCHANGE  "shop"
#define SHOP_Q_ORDER   "shop.order"
#define SHOP_Q_STOCK   "shop.stock"
#define SHOP_Q_PAYMENT "shop.payment"

/* The saga's targets. */
#define SHOP_URL(key) "amqp://" SHOP_EXCHANGE "/" key

/* Exit statuses of every shop program. */
enum { SHOP_EXIT_OK = 0, SHOP_EXIT_REFUSED = 1, SHOP_EXIT_USAGE = 2, SHOP_EXIT_ERROR = 3 };

/*
 * Declare the exchange, the queues (durable, no arguments: the participant
 * loop declares its queue the same way) and the bindings above on the broker
 * at url (amqp:// or amqps://; cacert: CA file for amqps, or NULL). One
 * connection, closed before returning. Returns 0, or -1 with a message in
 * err (the password never appears in it).
 */
int shop_declare(const char *url, const char *cacert, char *err, size_t errlen);

/*
 * A command handler's business change, run inside the participant loop's
 * local transaction (the barrier said APPLY) on connection c. payload is the
 * command's JSON body (an object). Returns DTX_AMQP_SUCCESS, DTX_AMQP_FAILURE
 * (a business refusal: OUT reason, a short text for the reply),
 * or DTX_AMQP_RETRY after a database error (message in c->err) or when the
 * data contradicts the barrier (OUT reason).
 */
typedef enum dtx_amqp_result (*shop_change_fn)(struct db_conn *c, const struct dtx_amqp_msg *m,
                                               json_t *payload, char *reason, size_t cap);

/* One command a service takes: its routing key, the Dtx-Op it must carry
 * (action or compensate), and the change. */
struct shop_route {
    const char *key;
    const char *op;
    shop_change_fn change;
};

/* A participant service: what shop_serve needs. */
struct shop_service {
    const char *name;  /* "stock": log prefix */
    const char *queue; /* the queue it consumes */
    const char *db;    /* libpq conninfo/URI or SQLite file (db_is_pg) */
    const char *broker_url;
    const char *cacert;              /* amqps: CA file, or NULL */
    const char *const *schema;       /* CREATE TABLE IF NOT EXISTS ... */
    size_t n_schema;                 /*   statements */
    const struct shop_route *routes; /* the commands it takes */
    size_t n_routes;                 /*   how many */
    int prefetch;                    /* 0: the loop's default */
};

/*
 * Run a participant service until SIGINT or SIGTERM: open the database
 * (one connection: the loop runs one command at a time), create the schema
 * and the barrier table, declare the topology (retried with backoff while
 * the broker is unreachable), then consume s->queue with the participant
 * loop. Returns an exit status (SHOP_EXIT_OK after a signal).
 */
int shop_serve(const struct shop_service *s);

/*
 * A participant program (stock, payment): its service and its two
 * administrative commands. shop_participant_main parses
 *
 *   PROG serve --db DB --amqp URL [--cacert FILE] [--prefetch N] [--quiet]
 *   PROG set   --db DB ID VALUE      set(c, ID, VALUE)
 *   PROG show  --db DB               show(c, obj), printed as JSON
 *
 * (--amqp defaults to $SHOP_AMQP_URL: the environment keeps a password out
 * of ps) and returns the exit status.
 */
struct shop_program {
    struct shop_service service; /* without db, broker_url, cacert, prefetch */
    int (*set)(struct db_conn *c, const char *id, int64_t value); /* DB_OK or a DB_ code */
    const char *set_args, *set_help;
    int (*show)(struct db_conn *c, json_t *obj); /* DB_OK or a DB_ code */
    const char *show_help;
};
int shop_participant_main(const struct shop_program *p, int argc, char **argv);

/* Open target (one connection) and run the schema statements (and, on
 * SQLite, WAL mode) and the barrier init. Returns the connection, or NULL
 * with a message in err. Free with shop_db_close. */
struct db_conn *shop_db_open(struct db_pool *pool, const char *target, const char *const *schema,
                             size_t n_schema, char *err, size_t errlen);
void shop_db_close(struct db_pool *pool, struct db_conn *c);

/* Payload fields: a non-empty string, or an integer > 0. NULL / -1 when
 * missing or of another type. */
const char *shop_str(json_t *payload, const char *key);
int64_t shop_int(json_t *payload, const char *key);

/* Put the rows of sql (parameters args[0..nargs-1]) under key `name` of
 * obj, as a JSON array of objects named by cols (ints[i]: column i is an
 * integer). Returns DB_OK or a DB_ code (message in c->err). */
int shop_rows_json(struct db_conn *c, const char *sql, const struct db_arg *args, int nargs,
                   const char *const *cols, const bool *ints, int ncols, json_t *obj,
                   const char *name);

/* Print obj as indented JSON on stdout and drop the reference. */
void shop_print_json(json_t *obj);

/* A line on stderr with a UTC timestamp and the program's name, unless
 * shop_quiet. */
extern bool shop_quiet;
extern const char *shop_prog;
void shop_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Parse a non-negative integer; -1 when s is not one. */
int64_t shop_parse_int(const char *s);

/* true when s is 1-64 bytes of A-Z a-z 0-9 . _ - (an order, item or
 * customer id: it becomes part of a gid). */
bool shop_valid_id(const char *s);

#endif
