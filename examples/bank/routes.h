/*
 * routes.h - the bank's branch operations, one table for both transports:
 * HTTP (bank.c: the path) and AMQP (amqp.c: the routing key, which is the
 * path without its leading '/' and with '.' for '/': "/tcc/debit/confirm"
 * is "<queue>.tcc.debit.confirm"). Each names the Dtx-Op it serves and the
 * ledger change (ledger.h) that runs inside the barrier.
 */
#ifndef BANK_ROUTES_H
#define BANK_ROUTES_H

#include "ledger.h"

#include <stdbool.h>
#include <stddef.h>

struct route {
    const char *path;
    const char *op;    /* the Dtx-Op this path serves (the barrier's op) */
    const char *alias; /* another Dtx-Op name accepted for it, or NULL */
    const char *kind;  /* hold kind for tcc/2pc */
    ledger_change_fn change;
};

/* The route of an HTTP path ("/saga/debit"), or NULL. */
const struct route *route_by_path(const char *path);

/* The route of an AMQP routing key's operation part ("saga.debit"), or
 * NULL. */
const struct route *route_by_key(const char *key);

/* Does op (a Dtx-Op) match the route? */
bool route_op_matches(const struct route *rt, const char *op);

/* May this operation answer a business refusal (409, FAILURE)? Only forward
 * operations may, and not a msg delivery: dtxd delivers until it succeeds
 * (over HTTP a 409 there would only be retried), so a refused delivery is a
 * 500 over HTTP - and the transfer client checks the payee's account before
 * it starts. */
bool route_may_refuse(const struct route *rt);

#endif
