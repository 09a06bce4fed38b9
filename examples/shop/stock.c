/*
 * stock.c - the shop's stock service: items and their reservations in one
 * database (PostgreSQL or SQLite), changed by commands from the queue
 * shop.stock through libdtx's AMQP participant loop (shop.c).
 *
 *   stock serve --db DB --amqp URL [--cacert FILE] [--prefetch N] [--quiet]
 *   stock set   --db DB ITEM AVAILABLE     create an item or set its stock
 *   stock show  --db DB                    items and reservations, as JSON
 *
 * (the command line is shop_participant_main's, in shop.c)
 *
 * Commands (payload {"order", "item", "qty"}):
 *   stock.reserve  action      available -= qty, reserved += qty, and a
 *                              reservation row; FAILURE when the item is
 *                              short or unknown
 *   stock.release  compensate  undo the reservation row of this gid/branch:
 *                              available += qty, reserved -= qty; the row
 *                              says how much, never the payload
 *
 * Tables:
 *   items(id, available, reserved)           both >= 0; available + reserved
 *                                            is what the shop owns
 *   reservations(gid, branch, order_id, item, qty, released)
 *                                            one per applied reserve;
 *                                            released = 1 once undone
 *   dtx_barrier                              libdtx's barrier rows
 *
 * The reserve is one guarded UPDATE (... WHERE available >= qty), so two
 * orders racing for the last unit cannot both get it. Sold units stay in
 * `reserved` (shipping them is not this example's business).
 */
#include "shop.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const SCHEMA[] = {
    "CREATE TABLE IF NOT EXISTS items ("
    " id text PRIMARY KEY,"
    " available bigint NOT NULL CHECK (available >= 0),"
    " reserved bigint NOT NULL DEFAULT 0 CHECK (reserved >= 0))",
    "CREATE TABLE IF NOT EXISTS reservations ("
    " gid text NOT NULL,"
    " branch text NOT NULL,"
    " order_id text NOT NULL,"
    " item text NOT NULL,"
    " qty bigint NOT NULL CHECK (qty > 0),"
    " released integer NOT NULL DEFAULT 0,"
    " PRIMARY KEY (gid, branch))",
};

static enum dtx_amqp_result reserve(struct db_conn *c, const struct dtx_amqp_msg *m,
                                    json_t *payload, char *reason, size_t cap)
{
    const char *order = shop_str(payload, "order"), *item = shop_str(payload, "item");
    int64_t qty = shop_int(payload, "qty");
    if (order == NULL || item == NULL || qty < 0) {
        snprintf(reason, cap, "payload needs order, item and qty > 0");
        return DTX_AMQP_FAILURE;
    }
    int rows;
    char have[1][DB_TEXT_MAX] = {{0}};
    if (db_run(c,
               "UPDATE items SET available = available - $2, reserved = reserved + $2"
               " WHERE id = $1 AND available >= $2",
               (struct db_arg[]){DB_S(item), DB_I(qty)}, 2, &rows, NULL, 0) != DB_OK)
        return DTX_AMQP_RETRY;
    if (rows == 0) {
        if (db_run(c, "SELECT available FROM items WHERE id = $1", (struct db_arg[]){DB_S(item)}, 1,
                   &rows, have, 1) != DB_OK)
            return DTX_AMQP_RETRY;
        if (rows == 0)
            snprintf(reason, cap, "no such item: %s", item);
        else
            snprintf(reason, cap, "out of stock: %s has %s, order %s wants %lld", item, have[0],
                     order, (long long)qty);
        return DTX_AMQP_FAILURE;
    }
    if (db_run(c,
               "INSERT INTO reservations (gid, branch, order_id, item, qty)"
               " VALUES ($1, $2, $3, $4, $5)",
               (struct db_arg[]){DB_S(m->gid), DB_S(m->branch), DB_S(order), DB_S(item), DB_I(qty)},
               5, NULL, NULL, 0) != DB_OK)
        return DTX_AMQP_RETRY;
    snprintf(reason, cap, "reserved %lld %s for order %s", (long long)qty, item, order);
    return DTX_AMQP_SUCCESS;
}

static enum dtx_amqp_result release(struct db_conn *c, const struct dtx_amqp_msg *m,
                                    json_t *payload, char *reason, size_t cap)
{
    (void)payload;
    int rows;
    char row[2][DB_TEXT_MAX] = {{0}};
    if (db_run(c,
               "SELECT item, qty FROM reservations"
               " WHERE gid = $1 AND branch = $2 AND released = 0",
               (struct db_arg[]){DB_S(m->gid), DB_S(m->branch)}, 2, &rows, row, 2) != DB_OK)
        return DTX_AMQP_RETRY;
    if (rows == 0) {
        /* The barrier applied the undo, so the reserve committed: its row
         * must be here. Not a refusal (a compensation may not fail): leave
         * it for dtxd to ask again, and for an operator. */
        snprintf(reason, cap, "inconsistent: no reservation of %s/%s to release", m->gid,
                 m->branch);
        return DTX_AMQP_RETRY;
    }
    int64_t qty = shop_parse_int(row[1]);
    if (db_run(c,
               "UPDATE items SET available = available + $2, reserved = reserved - $2"
               " WHERE id = $1 AND reserved >= $2",
               (struct db_arg[]){DB_S(row[0]), DB_I(qty)}, 2, &rows, NULL, 0) != DB_OK)
        return DTX_AMQP_RETRY;
    if (rows != 1) {
        snprintf(reason, cap, "inconsistent: item %s has fewer than %lld reserved", row[0],
                 (long long)qty);
        return DTX_AMQP_RETRY;
    }
    if (db_run(c, "UPDATE reservations SET released = 1 WHERE gid = $1 AND branch = $2",
               (struct db_arg[]){DB_S(m->gid), DB_S(m->branch)}, 2, NULL, NULL, 0) != DB_OK)
        return DTX_AMQP_RETRY;
    snprintf(reason, cap, "released %lld %s", (long long)qty, row[0]);
    return DTX_AMQP_SUCCESS;
}

static const struct shop_route ROUTES[] = {
    {"stock.reserve", "action", reserve},
    {"stock.release", "compensate", release},
};

/* ---- the command line ----------------------------------------------------- */

static int set_item(struct db_conn *c, const char *item, int64_t available)
{
    return db_run(c,
                  "INSERT INTO items (id, available) VALUES ($1, $2)"
                  " ON CONFLICT (id) DO UPDATE SET available = excluded.available",
                  (struct db_arg[]){DB_S(item), DB_I(available)}, 2, NULL, NULL, 0);
}

static int show(struct db_conn *c, json_t *o)
{
    static const char *const icols[] = {"id", "available", "reserved"};
    static const bool iints[] = {false, true, true};
    static const char *const rcols[] = {"gid", "branch", "order", "item", "qty", "released"};
    static const bool rints[] = {false, false, false, false, true, true};
    int rc = shop_rows_json(c, "SELECT id, available, reserved FROM items ORDER BY id", NULL, 0,
                            icols, iints, 3, o, "items");
    if (rc != DB_OK)
        return rc;
    return shop_rows_json(c,
                          "SELECT gid, branch, order_id, item, qty, released FROM reservations"
                          " ORDER BY order_id, gid, branch",
                          NULL, 0, rcols, rints, 6, o, "reservations");
}

int main(int argc, char **argv)
{
    static const struct shop_program stock = {
        .service =
            {
                .name = "stock",
                .queue = SHOP_Q_STOCK,
                .schema = SCHEMA,
                .n_schema = sizeof SCHEMA / sizeof SCHEMA[0],
                .routes = ROUTES,
                .n_routes = sizeof ROUTES / sizeof ROUTES[0],
            },
        .set = set_item,
        .set_args = "ITEM AVAILABLE",
        .set_help = "create an item or set how many are available",
        .show = show,
        .show_help = "items and reservations, as JSON",
    };
    return shop_participant_main(&stock, argc, argv);
}
