/*
 * payment.c - the shop's payment service: customers' balances and the
 * charges made on them, in one database (PostgreSQL or SQLite), changed by
 * commands from the queue shop.payment through libdtx's AMQP participant
 * loop (shop.c).
 *
 *   payment serve --db DB --amqp URL [--cacert FILE] [--prefetch N] [--quiet]
 *   payment set   --db DB CUSTOMER BALANCE   create an account or set its balance
 *   payment show  --db DB                    accounts and charges, as JSON
 *
 * (the command line is shop_participant_main's, in shop.c)
 *
 * Commands (payload {"order", "customer", "amount"}, amount in cents):
 *   payment.charge  action      balance -= amount and a charge row;
 *                               FAILURE when the balance is short or the
 *                               customer unknown
 *   payment.refund  compensate  undo the charge row of this gid/branch:
 *                               balance += its amount (never the payload's)
 *
 * Tables:
 *   accounts(customer, balance)                    balance >= 0
 *   charges(gid, branch, order_id, customer, amount, refunded)
 *                                                  one per applied charge;
 *                                                  refunded = 1 once undone
 *   dtx_barrier                                    libdtx's barrier rows
 *
 * The charge is one guarded UPDATE (... WHERE balance >= amount): two
 * orders of one customer cannot both spend the same money.
 */
#include "shop.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const SCHEMA[] = {
    "CREATE TABLE IF NOT EXISTS accounts ("
    " customer text PRIMARY KEY,"
    " balance bigint NOT NULL CHECK (balance >= 0))",
    "CREATE TABLE IF NOT EXISTS charges ("
    " gid text NOT NULL,"
    " branch text NOT NULL,"
    " order_id text NOT NULL,"
    " customer text NOT NULL,"
    " amount bigint NOT NULL CHECK (amount > 0),"
    " refunded integer NOT NULL DEFAULT 0,"
    " PRIMARY KEY (gid, branch))",
};

static enum dtx_amqp_result charge(struct db_conn *c, const struct dtx_amqp_msg *m, json_t *payload,
                                   char *reason, size_t cap)
{
    const char *order = shop_str(payload, "order"), *customer = shop_str(payload, "customer");
    int64_t amount = shop_int(payload, "amount");
    if (order == NULL || customer == NULL || amount < 0) {
        snprintf(reason, cap, "payload needs order, customer and amount > 0");
        return DTX_AMQP_FAILURE;
    }
    int rows;
    char have[1][DB_TEXT_MAX] = {{0}};
    if (db_run(c,
               "UPDATE accounts SET balance = balance - $2 WHERE customer = $1 AND balance >= $2",
               (struct db_arg[]){DB_S(customer), DB_I(amount)}, 2, &rows, NULL, 0) != DB_OK)
        return DTX_AMQP_RETRY;
    if (rows == 0) {
        if (db_run(c, "SELECT balance FROM accounts WHERE customer = $1",
                   (struct db_arg[]){DB_S(customer)}, 1, &rows, have, 1) != DB_OK)
            return DTX_AMQP_RETRY;
        if (rows == 0)
            snprintf(reason, cap, "no such customer: %s", customer);
        else
            snprintf(reason, cap, "insufficient funds: %s has %s, order %s costs %lld", customer,
                     have[0], order, (long long)amount);
        return DTX_AMQP_FAILURE;
    }
    if (db_run(c,
               "INSERT INTO charges (gid, branch, order_id, customer, amount)"
               " VALUES ($1, $2, $3, $4, $5)",
               (struct db_arg[]){DB_S(m->gid), DB_S(m->branch), DB_S(order), DB_S(customer),
                                 DB_I(amount)},
               5, NULL, NULL, 0) != DB_OK)
        return DTX_AMQP_RETRY;
    snprintf(reason, cap, "charged %s %lld for order %s", customer, (long long)amount, order);
    return DTX_AMQP_SUCCESS;
}

static enum dtx_amqp_result refund(struct db_conn *c, const struct dtx_amqp_msg *m, json_t *payload,
                                   char *reason, size_t cap)
{
    (void)payload;
    int rows;
    char row[2][DB_TEXT_MAX] = {{0}};
    if (db_run(c,
               "SELECT customer, amount FROM charges"
               " WHERE gid = $1 AND branch = $2 AND refunded = 0",
               (struct db_arg[]){DB_S(m->gid), DB_S(m->branch)}, 2, &rows, row, 2) != DB_OK)
        return DTX_AMQP_RETRY;
    if (rows == 0) {
        /* The barrier applied the undo, so the charge committed: its row
         * must be here. A compensation may not fail: leave it to dtxd's
         * retries and an operator. */
        snprintf(reason, cap, "inconsistent: no charge of %s/%s to refund", m->gid, m->branch);
        return DTX_AMQP_RETRY;
    }
    int64_t amount = shop_parse_int(row[1]);
    if (db_run(c, "UPDATE accounts SET balance = balance + $2 WHERE customer = $1",
               (struct db_arg[]){DB_S(row[0]), DB_I(amount)}, 2, &rows, NULL, 0) != DB_OK)
        return DTX_AMQP_RETRY;
    if (rows != 1) {
        snprintf(reason, cap, "inconsistent: customer %s is gone", row[0]);
        return DTX_AMQP_RETRY;
    }
    if (db_run(c, "UPDATE charges SET refunded = 1 WHERE gid = $1 AND branch = $2",
               (struct db_arg[]){DB_S(m->gid), DB_S(m->branch)}, 2, NULL, NULL, 0) != DB_OK)
        return DTX_AMQP_RETRY;
    snprintf(reason, cap, "refunded %s %lld", row[0], (long long)amount);
    return DTX_AMQP_SUCCESS;
}

static const struct shop_route ROUTES[] = {
    {"payment.charge", "action", charge},
    {"payment.refund", "compensate", refund},
};

/* ---- the command line ----------------------------------------------------- */

static int set_account(struct db_conn *c, const char *customer, int64_t balance)
{
    return db_run(c,
                  "INSERT INTO accounts (customer, balance) VALUES ($1, $2)"
                  " ON CONFLICT (customer) DO UPDATE SET balance = excluded.balance",
                  (struct db_arg[]){DB_S(customer), DB_I(balance)}, 2, NULL, NULL, 0);
}

static int show(struct db_conn *c, json_t *o)
{
    static const char *const acols[] = {"customer", "balance"};
    static const bool aints[] = {false, true};
    static const char *const ccols[] = {"gid", "branch", "order", "customer", "amount", "refunded"};
    static const bool cints[] = {false, false, false, false, true, true};
    int rc = shop_rows_json(c, "SELECT customer, balance FROM accounts ORDER BY customer", NULL, 0,
                            acols, aints, 2, o, "accounts");
    if (rc != DB_OK)
        return rc;
    return shop_rows_json(c,
                          "SELECT gid, branch, order_id, customer, amount, refunded FROM charges"
                          " ORDER BY order_id, gid, branch",
                          NULL, 0, ccols, cints, 6, o, "charges");
}

int main(int argc, char **argv)
{
    static const struct shop_program payment = {
        .service =
            {
                .name = "payment",
                .queue = SHOP_Q_PAYMENT,
                .schema = SCHEMA,
                .n_schema = sizeof SCHEMA / sizeof SCHEMA[0],
                .routes = ROUTES,
                .n_routes = sizeof ROUTES / sizeof ROUTES[0],
            },
        .set = set_account,
        .set_args = "CUSTOMER BALANCE",
        .set_help = "create an account or set its balance (in cents)",
        .show = show,
        .show_help = "accounts and charges, as JSON",
    };
    return shop_participant_main(&payment, argc, argv);
}
