/*
 * routes.c - the bank's branch operations (see routes.h).
 */
#include "routes.h"

#include <string.h>

static const struct route ROUTES[] = {
    {"/saga/debit", "action", NULL, NULL, ledger_debit},
    {"/saga/debit-undo", "compensate", NULL, NULL, ledger_debit_undo},
    {"/saga/credit", "action", NULL, NULL, ledger_credit},
    {"/saga/credit-undo", "compensate", NULL, NULL, ledger_credit_undo},
    {"/tcc/debit/try", "try", NULL, "tcc", ledger_hold_debit},
    {"/tcc/debit/confirm", "confirm", NULL, "tcc", ledger_apply_debit},
    {"/tcc/debit/cancel", "cancel", NULL, "tcc", ledger_release_debit},
    {"/tcc/credit/try", "try", NULL, "tcc", ledger_hold_credit},
    {"/tcc/credit/confirm", "confirm", NULL, "tcc", ledger_apply_credit},
    {"/tcc/credit/cancel", "cancel", NULL, "tcc", ledger_release_credit},
    {"/2pc/debit/prepare", "prepare", NULL, "2pc", ledger_hold_debit},
    {"/2pc/debit/commit", "commit", NULL, "2pc", ledger_apply_debit},
    {"/2pc/debit/rollback", "rollback", NULL, "2pc", ledger_release_debit},
    {"/2pc/credit/prepare", "prepare", NULL, "2pc", ledger_hold_credit},
    {"/2pc/credit/commit", "commit", NULL, "2pc", ledger_apply_credit},
    {"/2pc/credit/rollback", "rollback", NULL, "2pc", ledger_release_credit},
    {"/msg/credit", "action", "deliver", NULL, ledger_credit},
};

#define N_ROUTES (sizeof ROUTES / sizeof ROUTES[0])

const struct route *route_by_path(const char *path)
{
    for (size_t i = 0; i < N_ROUTES; i++)
        if (strcmp(path, ROUTES[i].path) == 0)
            return &ROUTES[i];
    return NULL;
}

/* key equals path without its '/' and with '.' for every later '/' */
static bool key_is_path(const char *key, const char *path)
{
    path++;
    for (; *key != '\0' && *path != '\0'; key++, path++)
        if (*key != (*path == '/' ? '.' : *path))
            return false;
    return *key == '\0' && *path == '\0';
}

const struct route *route_by_key(const char *key)
{
    for (size_t i = 0; i < N_ROUTES; i++)
        if (key_is_path(key, ROUTES[i].path))
            return &ROUTES[i];
    return NULL;
}

bool route_op_matches(const struct route *rt, const char *op)
{
    return strcmp(op, rt->op) == 0 || (rt->alias != NULL && strcmp(op, rt->alias) == 0);
}

bool route_may_refuse(const struct route *rt)
{
    return strcmp(rt->path, "/msg/credit") != 0 &&
           (strcmp(rt->op, "action") == 0 || strcmp(rt->op, "try") == 0 ||
            strcmp(rt->op, "prepare") == 0);
}
