/*
 * record.c - encoding and decoding of the engine's log records. The layout
 * is specified in record.h; this file must match it field for field.
 */
#include "engine/record.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/codec.h"
#include "common/err.h"

#define MAX_BRANCHES 100000u

/* The v2 encoding of one branch (REC_TXN2 and REC_BRANCH). */
static void encode_branch(struct buf *b, const struct branch *br)
{
    enc_cstr(b, br->id);
    enc_cstr(b, br->prepare);
    enc_cstr(b, br->action);
    enc_cstr(b, br->compensate);
    enc_str(b, br->payload, br->payload_len);
    enc_u8(b, (uint8_t)br->state);
    enc_u32(b, br->prepare_attempts);
    enc_u32(b, br->action_attempts);
    enc_u32(b, br->compensate_attempts);
    enc_cstr(b, br->last_error);
    enc_u64(b, (uint64_t)br->updated_at);
    enc_u32(b, br->nafter);
    for (uint32_t k = 0; k < br->nafter; k++)
        enc_u32(b, br->after[k]);
}

void record_encode_txn(struct buf *b, const struct txn *t)
{
    enc_u8(b, REC_TXN2);
    enc_cstr(b, t->gid);
    enc_u64(b, t->seq);
    enc_u8(b, (uint8_t)t->type);
    enc_u8(b, (uint8_t)t->state);
    enc_u8(b, (uint8_t)(t->needs_attention != 0));
    enc_u8(b, (uint8_t)(t->concurrent ? 1 : 0));
    enc_u64(b, (uint64_t)t->created_at);
    enc_u64(b, (uint64_t)t->updated_at);
    enc_u64(b, (uint64_t)t->finished_at);
    enc_u32(b, t->retry.initial_ms);
    enc_u32(b, t->retry.max_ms);
    enc_u32(b, t->retry.limit);
    enc_u32(b, t->request_timeout_ms);
    enc_u64(b, t->timeout_ms);
    enc_cstr(b, t->check);
    enc_u32(b, t->check_attempts);
    enc_u32(b, t->nbranches);
    for (uint32_t i = 0; i < t->nbranches; i++)
        encode_branch(b, &t->branches[i]);
}

void record_encode_branch(struct buf *b, const struct txn *t, const struct branch *br)
{
    enc_u8(b, REC_BRANCH);
    enc_cstr(b, t->gid);
    encode_branch(b, br);
}

void record_encode_update(struct buf *b, const struct txn *t, const struct branch *br)
{
    enc_u8(b, REC_UPDATE2);
    enc_cstr(b, t->gid);
    enc_u8(b, (uint8_t)t->state);
    enc_u8(b, (uint8_t)(t->needs_attention != 0));
    enc_u64(b, (uint64_t)t->updated_at);
    enc_u64(b, (uint64_t)t->finished_at);
    if (br == NULL) {
        enc_u32(b, UINT32_MAX);
        return;
    }
    enc_u32(b, br->idx);
    enc_u8(b, (uint8_t)br->state);
    enc_u32(b, br->prepare_attempts);
    enc_u32(b, br->action_attempts);
    enc_u32(b, br->compensate_attempts);
    enc_cstr(b, br->last_error);
    enc_u64(b, (uint64_t)br->updated_at);
}

/* A str field that the engine reads as a C string (every one but a payload).
 * The encoder writes them with strlen(), so one holding a NUL byte was not
 * written by it: the record is corrupt (it would mean something else once
 * truncated at the NUL; found by tests/fuzz/fuzz_record.c). */
static char *dec_cstr(struct dec *d)
{
    size_t n;
    char *s = dec_str(d, &n);
    if (s != NULL && memchr(s, '\0', n) != NULL)
        d->err = DTX_ECORRUPT;
    return s;
}

/* A string field as a view of the record; a NUL inside is damage. */
static struct text dec_ctext(struct dec *d)
{
    struct text t;
    t.p = dec_view(d, &t.len);
    if (t.p != NULL && memchr(t.p, '\0', t.len) != NULL)
        d->err = DTX_ECORRUPT;
    return t;
}

/* Decode one branch into b (position idx of a txn with n branches so far
 * allowed for `after`); v1 is the REC_TXN layout, else the v2 one. */
static int decode_branch(struct dec *d, struct branch *b, uint32_t idx, uint32_t n, int v1)
{
    struct text tx[BRANCH_TEXTS] = {{0}};
    char id[16];
    b->idx = idx;
    if (v1) {
        tx[BT_ID].len = (size_t)snprintf(id, sizeof id, "%u", idx + 1);
        tx[BT_ID].p = id;
    } else {
        tx[BT_ID] = dec_ctext(d);
        tx[BT_PREPARE] = dec_ctext(d);
    }
    tx[BT_ACTION] = dec_ctext(d);
    tx[BT_COMPENSATE] = dec_ctext(d);
    tx[BT_PAYLOAD].p = dec_view(d, &tx[BT_PAYLOAD].len);
    if (d->err)
        return DTX_ECORRUPT;
    branch_set_texts(b, tx);
    uint8_t bs = dec_u8(d);
    if (!v1)
        b->prepare_attempts = dec_u32(d);
    b->action_attempts = dec_u32(d);
    b->compensate_attempts = dec_u32(d);
    b->last_error = dec_cstr(d);
    b->updated_at = (int64_t)dec_u64(d);
    uint32_t na = dec_u32(d);
    if (d->err || na >= n)
        return DTX_ECORRUPT;
    if (na) {
        b->after = xmalloc(na * sizeof *b->after);
        b->nafter = na;
        for (uint32_t k = 0; k < na; k++) {
            b->after[k] = dec_u32(d);
            if (b->after[k] >= n || b->after[k] == idx)
                return DTX_ECORRUPT;
        }
    }
    if (d->err || bs >= BR_STATE_COUNT || b->id == NULL || b->action == NULL ||
        b->payload == NULL || (v1 && b->compensate == NULL))
        return DTX_ECORRUPT;
    b->state = (enum branch_state)bs;
    return 0;
}

#define BRANCH_MIN_BYTES (1 + 4 + 4 + 8 + 4)

static int decode_txn(struct dec *d, struct record *out, int v1)
{
    struct text gid = dec_ctext(d);
    if (d->err || gid.p == NULL)
        return DTX_ECORRUPT;
    struct txn *t = txn_alloc(gid.p, gid.len);
    out->txn = t;
    t->seq = dec_u64(d);
    uint8_t type = dec_u8(d);
    uint8_t state = dec_u8(d);
    t->needs_attention = dec_u8(d) != 0;
    uint8_t flags = dec_u8(d);
    t->concurrent = (flags & 1) != 0;
    t->created_at = (int64_t)dec_u64(d);
    t->updated_at = (int64_t)dec_u64(d);
    t->finished_at = (int64_t)dec_u64(d);
    t->retry.initial_ms = dec_u32(d);
    t->retry.max_ms = dec_u32(d);
    t->retry.limit = dec_u32(d);
    t->request_timeout_ms = dec_u32(d);
    t->timeout_ms = dec_u64(d);
    if (!v1) {
        t->check = dec_cstr(d);
        t->check_attempts = dec_u32(d);
    }
    uint32_t n = dec_u32(d);
    t->durable = 1;
    /* every branch holds at least its fixed-size fields (state, two attempt
     * counters, updated_at, the count of `after`): a count the bytes left
     * cannot hold is damage, refused before the array is allocated */
    if (d->err || type >= TXN_TYPE_COUNT || state >= TXN_STATE_COUNT || n > MAX_BRANCHES ||
        n > d->left / BRANCH_MIN_BYTES || (flags & ~1u))
        return DTX_ECORRUPT;
    t->type = (enum txn_type)type;
    t->state = (enum txn_state)state;
    t->cap_branches = n ? n : 4;
    t->branches = xcalloc(t->cap_branches, sizeof *t->branches);
    for (uint32_t i = 0; i < n; i++) {
        struct branch *b = &t->branches[i];
        t->nbranches = i + 1; /* so txn_free frees what was decoded so far */
        b->txn = t;
        if (decode_branch(d, b, i, n, v1) != 0)
            return DTX_ECORRUPT;
    }
    return 0;
}

/* REC_BRANCH: the branch is decoded into a one-branch txn holding the gid. */
static int decode_branch_rec(struct dec *d, struct record *out)
{
    struct text gid = dec_ctext(d);
    if (d->err || gid.p == NULL)
        return DTX_ECORRUPT;
    struct txn *t = txn_alloc(gid.p, gid.len);
    out->txn = t;
    t->cap_branches = 1;
    t->branches = xcalloc(1, sizeof *t->branches);
    t->nbranches = 1;
    t->branches[0].txn = t;
    return decode_branch(d, &t->branches[0], 0, 1, 0);
}

static int decode_update(struct dec *d, struct record_update *u, int v1)
{
    u->gid = dec_cstr(d);
    uint8_t state = dec_u8(d);
    u->needs_attention = dec_u8(d) != 0;
    u->updated_at = (int64_t)dec_u64(d);
    u->finished_at = (int64_t)dec_u64(d);
    u->branch = dec_u32(d);
    if (d->err || u->gid == NULL || state >= TXN_STATE_COUNT)
        return DTX_ECORRUPT;
    u->state = (enum txn_state)state;
    if (u->branch == UINT32_MAX)
        return 0;
    uint8_t bs = dec_u8(d);
    if (!v1)
        u->prepare_attempts = dec_u32(d);
    u->action_attempts = dec_u32(d);
    u->compensate_attempts = dec_u32(d);
    u->last_error = dec_cstr(d);
    u->br_updated_at = (int64_t)dec_u64(d);
    if (d->err || bs >= BR_STATE_COUNT)
        return DTX_ECORRUPT;
    u->br_state = (enum branch_state)bs;
    return 0;
}

int record_decode(const void *p, size_t len, struct record *out)
{
    struct dec d;
    memset(out, 0, sizeof *out);
    out->update.branch = UINT32_MAX;
    dec_init(&d, p, len);
    uint8_t kind = dec_u8(&d);
    int rc = DTX_ECORRUPT;
    if (kind == REC_TXN || kind == REC_TXN2)
        rc = decode_txn(&d, out, kind == REC_TXN);
    else if (kind == REC_BRANCH)
        rc = decode_branch_rec(&d, out);
    else if (kind == REC_UPDATE || kind == REC_UPDATE2)
        rc = decode_update(&d, &out->update, kind == REC_UPDATE);
    out->kind = (enum record_kind)kind;
    if (rc == 0 && d.left != 0)
        rc = DTX_ECORRUPT; /* trailing bytes: not a record we wrote */
    if (rc != 0) {
        record_clear(out);
        memset(out, 0, sizeof *out);
    }
    return rc;
}

void record_clear(struct record *r)
{
    txn_free(r->txn);
    r->txn = NULL;
    free(r->update.gid);
    free(r->update.last_error);
    r->update.gid = NULL;
    r->update.last_error = NULL;
}
