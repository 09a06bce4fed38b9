/*
 * txn.c - transaction and branch states, their legal transitions, and the
 * one setter per level that every state change goes through (see txn.h for
 * the diagrams). Keeping the tables here, apart from the drivers that decide
 * what to do next, lets the unit tests check every transition exhaustively.
 */
#include "engine/txn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/err.h"
#include "common/fmt.h"
#include "common/slog.h"

static const char *const type_names[TXN_TYPE_COUNT] = {"saga", "tcc", "2pc", "msg"};
static const char *const state_names[TXN_STATE_COUNT] = {"prepared", "submitted", "succeeded",
                                                         "aborting", "failed",    "committing"};
static const char *const br_names[BR_STATE_COUNT] = {
    "pending", "running", "succeeded", "failed", "compensating", "compensated", "prepared"};

/* txn_next[from] is the bit set of states reachable from `from`. */
#define BIT(s) (1u << (s))
static const unsigned txn_next[TXN_STATE_COUNT] = {
    [TXN_PREPARED] = BIT(TXN_SUBMITTED) | BIT(TXN_ABORTING),
    [TXN_SUBMITTED] = BIT(TXN_SUCCEEDED) | BIT(TXN_ABORTING) | BIT(TXN_COMMITTING),
    [TXN_SUCCEEDED] = 0,
    [TXN_ABORTING] = BIT(TXN_FAILED),
    [TXN_FAILED] = 0,
    [TXN_COMMITTING] = BIT(TXN_SUCCEEDED),
};

static const unsigned br_next[BR_STATE_COUNT] = {
    [BR_PENDING] = BIT(BR_RUNNING) | BIT(BR_COMPENSATING),
    [BR_RUNNING] = BIT(BR_SUCCEEDED) | BIT(BR_FAILED) | BIT(BR_COMPENSATING) | BIT(BR_PREPARED),
    [BR_SUCCEEDED] = BIT(BR_COMPENSATING),
    [BR_FAILED] = BIT(BR_COMPENSATING),
    [BR_COMPENSATING] = BIT(BR_COMPENSATED),
    [BR_COMPENSATED] = 0,
    [BR_PREPARED] = BIT(BR_SUCCEEDED) | BIT(BR_COMPENSATING),
};

const char *txn_type_name(enum txn_type t)
{
    return (unsigned)t < TXN_TYPE_COUNT ? type_names[t] : "unknown";
}

const char *txn_state_name(enum txn_state s)
{
    return (unsigned)s < TXN_STATE_COUNT ? state_names[s] : "unknown";
}

const char *branch_state_name(enum branch_state s)
{
    return (unsigned)s < BR_STATE_COUNT ? br_names[s] : "unknown";
}

static int parse_name(const char *s, const char *const *names, int n)
{
    for (int i = 0; i < n; i++)
        if (strcmp(s, names[i]) == 0)
            return i;
    return -1;
}

int txn_type_parse(const char *s, enum txn_type *out)
{
    int i = parse_name(s, type_names, TXN_TYPE_COUNT);
    if (i < 0)
        return DTX_EINVAL;
    *out = (enum txn_type)i;
    return 0;
}

int txn_state_parse(const char *s, enum txn_state *out)
{
    int i = parse_name(s, state_names, TXN_STATE_COUNT);
    if (i < 0)
        return DTX_EINVAL;
    *out = (enum txn_state)i;
    return 0;
}

int branch_state_parse(const char *s, enum branch_state *out)
{
    int i = parse_name(s, br_names, BR_STATE_COUNT);
    if (i < 0)
        return DTX_EINVAL;
    *out = (enum branch_state)i;
    return 0;
}

int txn_state_is_final(enum txn_state s)
{
    return s == TXN_SUCCEEDED || s == TXN_FAILED;
}

int txn_transition_ok(enum txn_state from, enum txn_state to)
{
    if ((unsigned)from >= TXN_STATE_COUNT || (unsigned)to >= TXN_STATE_COUNT)
        return 0;
    return (txn_next[from] & BIT(to)) != 0;
}

int branch_transition_ok(enum branch_state from, enum branch_state to)
{
    if ((unsigned)from >= BR_STATE_COUNT || (unsigned)to >= BR_STATE_COUNT)
        return 0;
    return (br_next[from] & BIT(to)) != 0;
}

int txn_set_state(struct txn *t, enum txn_state to, int64_t now_wall, const char *why)
{
    if (!txn_transition_ok(t->state, to)) {
        slog_error("illegal transaction transition", "gid=%s from=%s to=%s why=%s", t->gid,
                   txn_state_name(t->state), txn_state_name(to), why);
        return DTX_ESTATE;
    }
    slog_debug("transaction state", "gid=%s from=%s to=%s why=%s", t->gid, txn_state_name(t->state),
               txn_state_name(to), why);
    t->state = to;
    t->updated_at = now_wall;
    if (txn_state_is_final(to))
        t->finished_at = now_wall;
    return 0;
}

int branch_set_state(struct branch *b, enum branch_state to, int64_t now_wall, const char *why)
{
    const char *gid = b->txn ? b->txn->gid : "?";
    if (!branch_transition_ok(b->state, to)) {
        slog_error("illegal branch transition", "gid=%s branch=%s from=%s to=%s why=%s", gid, b->id,
                   branch_state_name(b->state), branch_state_name(to), why);
        return DTX_ESTATE;
    }
    slog_debug("branch state", "gid=%s branch=%s from=%s to=%s why=%s", gid, b->id,
               branch_state_name(b->state), branch_state_name(to), why);
    b->state = to;
    b->updated_at = now_wall;
    b->transient = 0;
    return 0;
}

void branch_set_error(struct branch *b, const char *err)
{
    free(b->last_error);
    b->last_error = err ? xstrdup(err) : NULL;
}

void branch_set_texts(struct branch *b, const struct text tx[BRANCH_TEXTS])
{
    char **dst[BRANCH_TEXTS] = {&b->id, &b->prepare, &b->action, &b->compensate, &b->payload};
    size_t total = 1;
    for (int i = 0; i < BRANCH_TEXTS; i++)
        total += tx[i].p != NULL ? tx[i].len + 1 : 0;
    char *mem = xmalloc(total), *at = mem;
    for (int i = 0; i < BRANCH_TEXTS; i++) {
        *dst[i] = NULL;
        if (tx[i].p == NULL)
            continue;
        memcpy(at, tx[i].p, tx[i].len);
        at[tx[i].len] = '\0';
        *dst[i] = at;
        at += tx[i].len + 1;
    }
    b->payload_len = tx[BT_PAYLOAD].p != NULL ? tx[BT_PAYLOAD].len : 0;
    free(b->texts); /* after the copies: tx may point into it */
    b->texts = mem;
}

struct txn *txn_alloc(const char *gid, size_t len)
{
    struct txn *t = xcalloc(1, sizeof *t + len + 1);
    t->gid = (char *)(t + 1);
    memcpy(t->gid, gid, len);
    return t;
}

static struct text text_of(const char *s)
{
    return (struct text){s, s != NULL ? strlen(s) : 0};
}

struct txn *txn_new_from_spec(const struct txn_spec *spec, const char *gid, uint64_t seq,
                              int64_t now_wall)
{
    struct txn *t = txn_alloc(gid, strlen(gid));
    t->seq = seq;
    t->type = spec->type;
    t->state = spec->type == TXN_SAGA || spec->submit ? TXN_SUBMITTED : TXN_PREPARED;
    t->concurrent = spec->concurrent;
    t->check = spec->check ? xstrdup(spec->check) : NULL;
    t->created_at = t->updated_at = now_wall;
    t->retry = spec->retry;
    t->request_timeout_ms = spec->request_timeout_ms;
    t->timeout_ms = spec->timeout_ms;
    t->cap_branches = spec->nsteps ? spec->nsteps : 4;
    t->branches = xcalloc(t->cap_branches, sizeof *t->branches);
    for (uint32_t i = 0; i < spec->nsteps; i++) {
        char id[FMT_U64_MAX];
        fmt_u64(id, i + 1);
        struct step_spec s = spec->steps[i];
        if (s.id == NULL)
            s.id = id;
        txn_add_branch(t, &s, now_wall);
    }
    return t;
}

struct branch *txn_add_branch(struct txn *t, const struct step_spec *s, int64_t now_wall)
{
    if (t->nbranches == t->cap_branches) {
        t->cap_branches = t->cap_branches ? 2 * t->cap_branches : 4;
        /* nothing points into the array while branches are registered: see txn.h */
        t->branches = xrealloc(t->branches, t->cap_branches * sizeof *t->branches);
    }
    struct branch *b = &t->branches[t->nbranches];
    memset(b, 0, sizeof *b);
    b->txn = t;
    b->idx = t->nbranches++;
    struct text tx[BRANCH_TEXTS] = {
        [BT_ID] = text_of(s->id),
        [BT_PREPARE] = text_of(s->prepare),
        [BT_ACTION] = text_of(s->action),
        [BT_COMPENSATE] = text_of(s->compensate),
        [BT_PAYLOAD] = {s->payload != NULL ? s->payload : "", s->payload_len},
    };
    branch_set_texts(b, tx);
    if (s->nafter) {
        b->nafter = s->nafter;
        b->after = xmalloc(s->nafter * sizeof *b->after);
        memcpy(b->after, s->after, s->nafter * sizeof *b->after);
    }
    b->state = BR_PENDING;
    b->updated_at = now_wall;
    return b;
}

struct branch *txn_branch_by_id(const struct txn *t, const char *id)
{
    for (uint32_t i = 0; i < t->nbranches; i++)
        if (strcmp(t->branches[i].id, id) == 0)
            return &t->branches[i];
    return NULL;
}

void txn_free(struct txn *t)
{
    if (t == NULL)
        return;
    for (uint32_t i = 0; i < t->nbranches; i++) {
        struct branch *b = &t->branches[i];
        free(b->texts);
        free(b->last_error);
        free(b->after);
    }
    free(t->branches);
    free(t->check);
    free(t);
}

static int str_eq(const char *a, const char *b)
{
    if (a == NULL || b == NULL)
        return a == b;
    return strcmp(a, b) == 0;
}

/* Whether two `after` lists (each without repeats) name the same steps:
 * their order means nothing. */
static int same_set(const uint32_t *a, uint32_t na, const uint32_t *b, uint32_t nb)
{
    if (na != nb)
        return 0;
    for (uint32_t i = 0; i < na; i++) {
        uint32_t k = 0;
        while (k < nb && b[k] != a[i])
            k++;
        if (k == nb)
            return 0;
    }
    return 1;
}

int txn_matches_spec(const struct txn *t, const struct txn_spec *spec)
{
    if (t->type != spec->type || t->concurrent != spec->concurrent)
        return 0;
    if (t->type != TXN_TCC && t->type != TXN_2PC && t->nbranches != spec->nsteps)
        return 0;
    if (t->retry.initial_ms != spec->retry.initial_ms || t->retry.max_ms != spec->retry.max_ms ||
        t->retry.limit != spec->retry.limit)
        return 0;
    if (t->request_timeout_ms != spec->request_timeout_ms || t->timeout_ms != spec->timeout_ms)
        return 0;
    if (!str_eq(t->check, spec->check))
        return 0;
    if (t->type == TXN_TCC || t->type == TXN_2PC) {
        /* branches given with the create request must be there as given;
         * others may have been registered since */
        for (uint32_t i = 0; i < spec->nsteps; i++) {
            const struct branch *b = txn_branch_by_id(t, spec->steps[i].id);
            if (b == NULL || !branch_matches_spec(b, &spec->steps[i]))
                return 0;
        }
        return 1;
    }
    for (uint32_t i = 0; i < spec->nsteps; i++) {
        const struct branch *b = &t->branches[i];
        const struct step_spec *s = &spec->steps[i];
        if (!str_eq(b->action, s->action) || !str_eq(b->compensate, s->compensate))
            return 0;
        if (b->payload_len != s->payload_len || memcmp(b->payload, s->payload, s->payload_len))
            return 0;
        if (!same_set(b->after, b->nafter, s->after, s->nafter))
            return 0;
    }
    return 1;
}

int branch_matches_spec(const struct branch *b, const struct step_spec *s)
{
    return str_eq(b->prepare, s->prepare) && str_eq(b->action, s->action) &&
           str_eq(b->compensate, s->compensate) && b->payload_len == s->payload_len &&
           memcmp(b->payload, s->payload, s->payload_len) == 0;
}

int txn_ready(const struct txn *t, uint32_t i)
{
    if (!t->concurrent)
        return i == 0 || t->branches[i - 1].state == BR_SUCCEEDED;
    const struct branch *b = &t->branches[i];
    for (uint32_t k = 0; k < b->nafter; k++)
        if (t->branches[b->after[k]].state != BR_SUCCEEDED)
            return 0;
    return 1;
}
