/*
 * test_record.c - log record encoding and decoding, including damage.
 *
 * The kinds written today (REC_TXN2, REC_BRANCH, REC_UPDATE2) go through a
 * round trip with every field set; the kinds only read (REC_TXN, REC_UPDATE)
 * are built here by hand from the layout in record.h, the way an old log
 * holds them. Every truncation and every bad enum or count must come back as
 * DTX_ECORRUPT with nothing left allocated (run under ASan to check that).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/buf.h"
#include "common/codec.h"
#include "common/err.h"
#include "engine/record.h"

static struct txn *sample(void)
{
    struct txn_spec s = {0};
    static uint32_t after_first[] = {0};
    struct step_spec steps[2] = {
        {.action = "http://h/a1",
         .compensate = "http://h/c1",
         .payload = "{\"x\":1}",
         .payload_len = 7},
        {.action = "https://h/a2",
         .compensate = "https://h/c2",
         .payload = "[]",
         .payload_len = 2,
         .after = after_first,
         .nafter = 1},
    };
    s.type = TXN_SAGA;
    s.concurrent = 1;
    s.steps = steps;
    s.nsteps = 2;
    s.retry = (struct retry_policy){20, 400, 6};
    s.request_timeout_ms = 3000;
    s.timeout_ms = 60000;
    struct txn *t = txn_new_from_spec(&s, "order-42", 17, 1700000000123);
    t->state = TXN_ABORTING;
    t->needs_attention = 1;
    t->updated_at = 1700000000200;
    t->branches[0].state = BR_COMPENSATING;
    t->branches[0].action_attempts = 2;
    t->branches[0].compensate_attempts = 9;
    t->branches[0].last_error = xstrdup("HTTP 500");
    t->branches[1].state = BR_FAILED;
    return t;
}

/* A 2pc transaction with registered branches: chosen ids, prepare URLs,
 * prepare attempts, every 2pc state in use. */
static struct txn *sample_2pc(void)
{
    struct txn_spec s = {.type = TXN_2PC,
                         .retry = {.initial_ms = 1, .max_ms = 0xFFFFFFFFu, .limit = 0},
                         .request_timeout_ms = 0xFFFFFFFFu,
                         .timeout_ms = UINT64_MAX};
    struct txn *t = txn_new_from_spec(&s, "xa:1", UINT64_MAX - 1, -5);
    struct step_spec b1 = {.id = "alpha",
                           .prepare = "http://p/prepare?x=1",
                           .action = "http://p/commit",
                           .compensate = "http://p/rollback",
                           .payload = "{\"amount\":30}",
                           .payload_len = 13};
    struct step_spec b2 = {.id = "b-2_x:y.z",
                           .prepare = "https://q/prep",
                           .action = "https://q/commit",
                           .compensate = "https://q/rb",
                           .payload = "",
                           .payload_len = 0};
    struct step_spec b3 = {.id = "3",
                           .prepare = NULL, /* the decoder allows it */
                           .action = "http://r/c",
                           .compensate = "http://r/r",
                           .payload = "null",
                           .payload_len = 4};
    txn_add_branch(t, &b1, 1700000000001);
    txn_add_branch(t, &b2, 1700000000002);
    txn_add_branch(t, &b3, INT64_MIN);
    t->state = TXN_COMMITTING;
    t->created_at = INT64_MIN;
    t->updated_at = INT64_MAX;
    t->finished_at = 0;
    t->branches[0].state = BR_PREPARED;
    t->branches[0].prepare_attempts = 7;
    t->branches[0].action_attempts = 3;
    t->branches[0].compensate_attempts = 0;
    t->branches[0].last_error = xstrdup("commit: HTTP 503");
    t->branches[1].state = BR_SUCCEEDED;
    t->branches[1].prepare_attempts = 0xFFFFFFFFu;
    t->branches[1].action_attempts = 1;
    t->branches[2].state = BR_RUNNING;
    t->branches[2].prepare_attempts = 1;
    t->branches[2].last_error = xstrdup(""); /* empty, not NULL */
    return t;
}

/* A msg transaction: a check URL and attempts, branches without compensate. */
static struct txn *sample_msg(void)
{
    struct step_spec steps[2] = {
        {.action = "http://m/deliver1", .payload = "{\"k\":\"v\"}", .payload_len = 9},
        {.action = "http://m/deliver2", .payload = "{}", .payload_len = 2},
    };
    struct txn_spec s = {.type = TXN_MSG,
                         .steps = steps,
                         .nsteps = 2,
                         .check = "http://m/check?gid=m-1",
                         .retry = {.initial_ms = 100, .max_ms = 1000, .limit = 5},
                         .request_timeout_ms = 2000,
                         .timeout_ms = 10000};
    struct txn *t = txn_new_from_spec(&s, "m-1", 99, 1700000001000);
    t->state = TXN_SUBMITTED;
    t->check_attempts = 4;
    t->check_transient = 2; /* not logged */
    t->branches[0].state = BR_SUCCEEDED;
    t->branches[0].action_attempts = 1;
    t->branches[1].state = BR_RUNNING;
    t->branches[1].action_attempts = 12;
    t->branches[1].last_error = xstrdup("connect: refused");
    t->branches[1].updated_at = 1700000002000;
    return t;
}

static void assert_str_or_null(const char *a, const char *b)
{
    if (a == NULL || b == NULL)
        assert_ptr_equal(a, b);
    else
        assert_string_equal(a, b);
}

/* Every logged field of a branch (not idx/txn: the caller checks those). */
static void assert_branch_equal(const struct branch *a, const struct branch *b)
{
    assert_str_or_null(a->id, b->id);
    assert_str_or_null(a->prepare, b->prepare);
    assert_str_or_null(a->action, b->action);
    assert_str_or_null(a->compensate, b->compensate);
    assert_int_equal(a->payload_len, b->payload_len);
    assert_non_null(b->payload);
    assert_memory_equal(a->payload, b->payload, a->payload_len);
    assert_int_equal(b->payload[b->payload_len], '\0');
    assert_int_equal(a->state, b->state);
    assert_int_equal(a->prepare_attempts, b->prepare_attempts);
    assert_int_equal(a->action_attempts, b->action_attempts);
    assert_int_equal(a->compensate_attempts, b->compensate_attempts);
    assert_str_or_null(a->last_error, b->last_error);
    assert_true(a->updated_at == b->updated_at);
    assert_int_equal(a->nafter, b->nafter);
    for (uint32_t k = 0; k < a->nafter; k++)
        assert_int_equal(a->after[k], b->after[k]);
    /* not logged: a decoded branch starts idle */
    assert_int_equal(b->transient, 0);
    assert_int_equal(b->in_flight, 0);
}

/* Every logged field of a transaction. */
static void assert_txn_equal(const struct txn *a, const struct txn *b)
{
    assert_string_equal(a->gid, b->gid);
    assert_true(a->seq == b->seq);
    assert_int_equal(a->type, b->type);
    assert_int_equal(a->state, b->state);
    assert_int_equal(a->needs_attention != 0, b->needs_attention);
    assert_int_equal(a->concurrent != 0, b->concurrent);
    assert_true(a->created_at == b->created_at);
    assert_true(a->updated_at == b->updated_at);
    assert_true(a->finished_at == b->finished_at);
    assert_int_equal(a->retry.initial_ms, b->retry.initial_ms);
    assert_int_equal(a->retry.max_ms, b->retry.max_ms);
    assert_int_equal(a->retry.limit, b->retry.limit);
    assert_int_equal(a->request_timeout_ms, b->request_timeout_ms);
    assert_true(a->timeout_ms == b->timeout_ms);
    assert_str_or_null(a->check, b->check);
    assert_int_equal(a->check_attempts, b->check_attempts);
    assert_int_equal(b->check_transient, 0);
    assert_int_equal(b->check_in_flight, 0);
    assert_int_equal(b->durable, 1);
    assert_int_equal(a->nbranches, b->nbranches);
    assert_true(b->cap_branches >= b->nbranches);
    for (uint32_t i = 0; i < a->nbranches; i++) {
        assert_int_equal(b->branches[i].idx, i);
        assert_ptr_equal(b->branches[i].txn, b);
        assert_branch_equal(&a->branches[i], &b->branches[i]);
    }
}

/* Encode t, decode it, check every field; returns the decoded txn. */
static struct txn *round_trip_txn(const struct txn *t)
{
    struct buf b;
    buf_init(&b, 1 << 20);
    record_encode_txn(&b, t);
    assert_int_equal((unsigned char)b.data[0], REC_TXN2);
    struct record r;
    assert_int_equal(record_decode(b.data, b.len, &r), 0);
    assert_int_equal(r.kind, REC_TXN2);
    assert_null(r.update.gid);
    assert_txn_equal(t, r.txn);
    struct txn *u = r.txn;
    r.txn = NULL; /* taken */
    record_clear(&r);
    buf_free(&b);
    return u;
}

static void test_txn_round_trip(void **state)
{
    (void)state;
    struct txn *t = sample();
    struct txn *u = round_trip_txn(t);
    assert_string_equal(u->gid, "order-42");
    assert_int_equal(u->state, TXN_ABORTING);
    assert_string_equal(u->branches[0].id, "1");
    assert_string_equal(u->branches[1].id, "2");
    assert_null(u->branches[0].prepare);
    assert_null(u->check);
    assert_int_equal(u->branches[1].after[0], 0);
    txn_free(u);
    txn_free(t);
}

static void test_txn2_round_trip_2pc(void **state)
{
    (void)state;
    struct txn *t = sample_2pc();
    struct txn *u = round_trip_txn(t);
    assert_int_equal(u->type, TXN_2PC);
    assert_int_equal(u->state, TXN_COMMITTING);
    assert_string_equal(u->branches[0].id, "alpha");
    assert_string_equal(u->branches[1].id, "b-2_x:y.z");
    assert_string_equal(u->branches[0].prepare, "http://p/prepare?x=1");
    assert_null(u->branches[2].prepare);
    assert_int_equal(u->branches[0].state, BR_PREPARED);
    assert_int_equal(u->branches[0].prepare_attempts, 7);
    assert_int_equal(u->branches[1].prepare_attempts, 0xFFFFFFFFu);
    assert_int_equal(u->branches[1].payload_len, 0);
    assert_string_equal(u->branches[2].last_error, "");
    assert_true(u->timeout_ms == UINT64_MAX);
    assert_true(u->created_at == INT64_MIN);
    assert_ptr_equal(txn_branch_by_id(u, "b-2_x:y.z"), &u->branches[1]);

    /* a decoded txn takes more registered branches (replay of REC_BRANCH) */
    for (int i = 0; i < 5; i++) {
        char id[16];
        snprintf(id, sizeof id, "n%d", i);
        struct step_spec s = {.id = id, .action = "http://a/", .compensate = "http://a/"};
        struct branch *b = txn_add_branch(u, &s, 1);
        assert_int_equal(b->idx, 3 + i);
    }
    for (uint32_t i = 0; i < u->nbranches; i++)
        assert_ptr_equal(u->branches[i].txn, u);
    assert_string_equal(u->branches[0].id, "alpha");
    assert_string_equal(u->branches[7].id, "n4");
    txn_free(u);
    txn_free(t);
}

static void test_txn2_round_trip_msg(void **state)
{
    (void)state;
    struct txn *t = sample_msg();
    struct txn *u = round_trip_txn(t);
    assert_int_equal(u->type, TXN_MSG);
    assert_string_equal(u->check, "http://m/check?gid=m-1");
    assert_int_equal(u->check_attempts, 4);
    assert_null(u->branches[0].compensate);
    assert_null(u->branches[1].compensate);
    assert_string_equal(u->branches[1].last_error, "connect: refused");
    assert_string_equal(u->branches[1].id, "2");
    txn_free(u);
    txn_free(t);
}

/* A tcc txn as created: prepared, no branches yet; it grows after decoding. */
static void test_txn2_round_trip_empty(void **state)
{
    (void)state;
    struct txn_spec s = {.type = TXN_TCC, .retry = {10, 20, 30}, .request_timeout_ms = 40};
    struct txn *t = txn_new_from_spec(&s, "t", 1, 2);
    assert_int_equal(t->state, TXN_PREPARED);
    struct txn *u = round_trip_txn(t);
    assert_int_equal(u->nbranches, 0);
    assert_non_null(u->branches);
    for (int i = 0; i < 10; i++) {
        char id[16];
        snprintf(id, sizeof id, "%d", i);
        struct step_spec st = {.id = id, .action = "http://a/", .compensate = "http://b/"};
        txn_add_branch(u, &st, 1);
    }
    assert_int_equal(u->nbranches, 10);
    assert_ptr_equal(u->branches[9].txn, u);
    txn_free(u);
    txn_free(t);
}

/* REC_BRANCH: the gid and one branch, decoded into a one-branch txn. */
static void test_branch_round_trip(void **state)
{
    (void)state;
    struct txn *t = sample_2pc();
    struct buf b;
    buf_init(&b, 1 << 20);
    for (uint32_t i = 0; i < t->nbranches; i++) {
        buf_reset(&b);
        record_encode_branch(&b, t, &t->branches[i]);
        assert_int_equal((unsigned char)b.data[0], REC_BRANCH);
        struct record r;
        assert_int_equal(record_decode(b.data, b.len, &r), 0);
        assert_int_equal(r.kind, REC_BRANCH);
        assert_non_null(r.txn);
        assert_string_equal(r.txn->gid, "xa:1");
        assert_int_equal(r.txn->nbranches, 1);
        assert_int_equal(r.txn->branches[0].idx, 0);
        assert_ptr_equal(r.txn->branches[0].txn, r.txn);
        assert_branch_equal(&t->branches[i], &r.txn->branches[0]);
        assert_null(r.update.gid);
        record_clear(&r);
        assert_null(r.txn);
    }
    txn_free(t);

    /* a tcc branch: no prepare */
    struct txn_spec s = {.type = TXN_TCC};
    t = txn_new_from_spec(&s, "tcc-9", 1, 1);
    struct step_spec st = {.id = "t1",
                           .action = "http://c/confirm",
                           .compensate = "http://c/cancel",
                           .payload = "{\"a\":[1,2]}",
                           .payload_len = 11};
    txn_add_branch(t, &st, 77);
    buf_reset(&b);
    record_encode_branch(&b, t, &t->branches[0]);
    struct record r;
    assert_int_equal(record_decode(b.data, b.len, &r), 0);
    assert_int_equal(r.kind, REC_BRANCH);
    assert_string_equal(r.txn->gid, "tcc-9");
    assert_null(r.txn->branches[0].prepare);
    assert_branch_equal(&t->branches[0], &r.txn->branches[0]);
    record_clear(&r);
    buf_free(&b);
    txn_free(t);
}

static void test_update_round_trip(void **state)
{
    (void)state;
    struct txn *t = sample();
    struct buf b;
    buf_init(&b, 1 << 20);
    record_encode_update(&b, t, &t->branches[0]);
    assert_int_equal((unsigned char)b.data[0], REC_UPDATE2);
    struct record r;
    assert_int_equal(record_decode(b.data, b.len, &r), 0);
    assert_int_equal(r.kind, REC_UPDATE2);
    assert_null(r.txn);
    assert_string_equal(r.update.gid, "order-42");
    assert_int_equal(r.update.state, TXN_ABORTING);
    assert_int_equal(r.update.needs_attention, 1);
    assert_true(r.update.updated_at == 1700000000200);
    assert_int_equal(r.update.finished_at, 0);
    assert_int_equal(r.update.branch, 0);
    assert_int_equal(r.update.br_state, BR_COMPENSATING);
    assert_int_equal(r.update.prepare_attempts, 0);
    assert_int_equal(r.update.action_attempts, 2);
    assert_int_equal(r.update.compensate_attempts, 9);
    assert_string_equal(r.update.last_error, "HTTP 500");
    assert_true(r.update.br_updated_at == t->branches[0].updated_at);
    record_clear(&r);
    assert_null(r.update.gid);
    assert_null(r.update.last_error);

    buf_reset(&b);
    record_encode_update(&b, t, NULL);
    assert_int_equal(record_decode(b.data, b.len, &r), 0);
    assert_int_equal(r.kind, REC_UPDATE2);
    assert_int_equal(r.update.branch, UINT32_MAX);
    assert_int_equal(r.update.needs_attention, 1);
    assert_null(r.update.last_error);
    assert_int_equal(r.update.prepare_attempts, 0);
    record_clear(&r);
    buf_free(&b);
    txn_free(t);
}

/* REC_UPDATE2 of a 2pc branch: prepare_attempts and the 2pc states. */
static void test_update2_round_trip_2pc(void **state)
{
    (void)state;
    struct txn *t = sample_2pc();
    t->needs_attention = 0;
    t->finished_at = 1700000009999;
    struct buf b;
    buf_init(&b, 1 << 20);
    for (uint32_t i = 0; i < t->nbranches; i++) {
        const struct branch *br = &t->branches[i];
        buf_reset(&b);
        record_encode_update(&b, t, br);
        struct record r;
        assert_int_equal(record_decode(b.data, b.len, &r), 0);
        assert_int_equal(r.kind, REC_UPDATE2);
        assert_string_equal(r.update.gid, "xa:1");
        assert_int_equal(r.update.state, TXN_COMMITTING);
        assert_int_equal(r.update.needs_attention, 0);
        assert_true(r.update.updated_at == INT64_MAX);
        assert_true(r.update.finished_at == 1700000009999);
        assert_int_equal(r.update.branch, i);
        assert_int_equal(r.update.br_state, br->state);
        assert_int_equal(r.update.prepare_attempts, br->prepare_attempts);
        assert_int_equal(r.update.action_attempts, br->action_attempts);
        assert_int_equal(r.update.compensate_attempts, br->compensate_attempts);
        assert_str_or_null(br->last_error, r.update.last_error);
        assert_true(r.update.br_updated_at == br->updated_at);
        record_clear(&r);
    }
    assert_int_equal(t->branches[0].prepare_attempts, 7);
    buf_free(&b);
    txn_free(t);
}

/* ---- the old layouts, built by hand ------------------------------------ */

struct old_branch {
    const char *action, *compensate, *payload;
    uint8_t state;
    uint32_t action_attempts, compensate_attempts;
    const char *last_error;
    int64_t updated_at;
    uint32_t nafter;
    uint32_t after[2];
};

/* REC_TXN (1): as REC_TXN2 without check/check_attempts; branches without
 * id, prepare and prepare_attempts. */
static void enc_old_txn(struct buf *b, const char *gid, uint8_t type, uint8_t state,
                        const struct old_branch *br, uint32_t n)
{
    enc_u8(b, REC_TXN);
    enc_cstr(b, gid);
    enc_u64(b, 5);    /* seq */
    enc_u8(b, type);  /* type */
    enc_u8(b, state); /* state */
    enc_u8(b, 1);     /* needs_attention */
    enc_u8(b, 1);     /* flags: concurrent */
    enc_u64(b, 1000); /* created_at */
    enc_u64(b, 2000); /* updated_at */
    enc_u64(b, 3000); /* finished_at */
    enc_u32(b, 11);   /* retry.initial_ms */
    enc_u32(b, 22);   /* retry.max_ms */
    enc_u32(b, 33);   /* retry.limit */
    enc_u32(b, 44);   /* request_timeout_ms */
    enc_u64(b, 55);   /* timeout_ms */
    enc_u32(b, n);    /* nbranches */
    for (uint32_t i = 0; i < n; i++) {
        enc_cstr(b, br[i].action);
        enc_cstr(b, br[i].compensate);
        enc_cstr(b, br[i].payload);
        enc_u8(b, br[i].state);
        enc_u32(b, br[i].action_attempts);
        enc_u32(b, br[i].compensate_attempts);
        enc_cstr(b, br[i].last_error);
        enc_u64(b, (uint64_t)br[i].updated_at);
        enc_u32(b, br[i].nafter);
        for (uint32_t k = 0; k < br[i].nafter; k++)
            enc_u32(b, br[i].after[k]);
    }
}

static const struct old_branch old_branches[2] = {
    {"http://o/a1", "http://o/c1", "{\"v\":1}", BR_SUCCEEDED, 1, 0, NULL, 4000, 0, {0}},
    {"http://o/a2", "http://o/c2", "[]", BR_COMPENSATING, 3, 2, "HTTP 409", 5000, 1, {0}},
};

static void test_old_txn_decoded(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b, 1 << 20);
    enc_old_txn(&b, "old-1", TXN_SAGA, TXN_ABORTING, old_branches, 2);
    struct record r;
    assert_int_equal(record_decode(b.data, b.len, &r), 0);
    assert_int_equal(r.kind, REC_TXN);
    struct txn *t = r.txn;
    assert_string_equal(t->gid, "old-1");
    assert_int_equal(t->seq, 5);
    assert_int_equal(t->type, TXN_SAGA);
    assert_int_equal(t->state, TXN_ABORTING);
    assert_int_equal(t->needs_attention, 1);
    assert_int_equal(t->concurrent, 1);
    assert_int_equal(t->created_at, 1000);
    assert_int_equal(t->updated_at, 2000);
    assert_int_equal(t->finished_at, 3000);
    assert_int_equal(t->retry.initial_ms, 11);
    assert_int_equal(t->retry.max_ms, 22);
    assert_int_equal(t->retry.limit, 33);
    assert_int_equal(t->request_timeout_ms, 44);
    assert_int_equal(t->timeout_ms, 55);
    assert_null(t->check);
    assert_int_equal(t->check_attempts, 0);
    assert_int_equal(t->durable, 1);
    assert_int_equal(t->nbranches, 2);
    assert_true(t->cap_branches >= 2);
    for (uint32_t i = 0; i < 2; i++) {
        const struct branch *br = &t->branches[i];
        const struct old_branch *o = &old_branches[i];
        assert_string_equal(br->id, i == 0 ? "1" : "2"); /* 1-based position */
        assert_int_equal(br->idx, i);
        assert_ptr_equal(br->txn, t);
        assert_null(br->prepare);
        assert_int_equal(br->prepare_attempts, 0);
        assert_string_equal(br->action, o->action);
        assert_string_equal(br->compensate, o->compensate);
        assert_string_equal(br->payload, o->payload);
        assert_int_equal(br->payload_len, strlen(o->payload));
        assert_int_equal(br->state, o->state);
        assert_int_equal(br->action_attempts, o->action_attempts);
        assert_int_equal(br->compensate_attempts, o->compensate_attempts);
        assert_str_or_null(br->last_error, o->last_error);
        assert_int_equal(br->updated_at, o->updated_at);
        assert_int_equal(br->nafter, o->nafter);
    }
    assert_int_equal(t->branches[1].after[0], 0);
    assert_ptr_equal(txn_branch_by_id(t, "2"), &t->branches[1]);

    /* re-encoded, it is written as REC_TXN2 and reads back the same */
    struct txn *u = round_trip_txn(t);
    txn_free(u);
    record_clear(&r);

    /* every truncation of the old layout is refused */
    for (size_t n = 0; n < b.len; n++) {
        assert_int_equal(record_decode(b.data, n, &r), DTX_ECORRUPT);
        assert_null(r.txn);
    }
    /* the old layout read as the new one is refused (it is shorter) */
    b.data[0] = REC_TXN2;
    assert_int_equal(record_decode(b.data, b.len, &r), DTX_ECORRUPT);
    assert_null(r.txn);

    /* an old branch had to have a compensation */
    struct old_branch nc[1] = {old_branches[0]};
    nc[0].compensate = NULL;
    buf_reset(&b);
    enc_old_txn(&b, "old-2", TXN_SAGA, TXN_SUBMITTED, nc, 1);
    assert_int_equal(record_decode(b.data, b.len, &r), DTX_ECORRUPT);
    assert_null(r.txn);

    /* no branches at all */
    buf_reset(&b);
    enc_old_txn(&b, "old-3", TXN_SAGA, TXN_SUCCEEDED, NULL, 0);
    assert_int_equal(record_decode(b.data, b.len, &r), 0);
    assert_int_equal(r.txn->nbranches, 0);
    record_clear(&r);
    buf_free(&b);
}

/* REC_UPDATE (2): as REC_UPDATE2 without prepare_attempts. */
static void enc_old_update(struct buf *b, const char *gid, uint32_t branch, uint8_t br_state)
{
    enc_u8(b, REC_UPDATE);
    enc_cstr(b, gid);
    enc_u8(b, TXN_FAILED); /* state */
    enc_u8(b, 0);          /* needs_attention */
    enc_u64(b, 6000);      /* updated_at */
    enc_u64(b, 7000);      /* finished_at */
    enc_u32(b, branch);
    if (branch == UINT32_MAX)
        return;
    enc_u8(b, br_state);
    enc_u32(b, 8); /* action_attempts */
    enc_u32(b, 9); /* compensate_attempts */
    enc_cstr(b, "HTTP 502");
    enc_u64(b, 8000);
}

static void test_old_update_decoded(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b, 1 << 20);
    enc_old_update(&b, "old-1", 1, BR_COMPENSATED);
    struct record r;
    assert_int_equal(record_decode(b.data, b.len, &r), 0);
    assert_int_equal(r.kind, REC_UPDATE);
    assert_null(r.txn);
    assert_string_equal(r.update.gid, "old-1");
    assert_int_equal(r.update.state, TXN_FAILED);
    assert_int_equal(r.update.needs_attention, 0);
    assert_int_equal(r.update.updated_at, 6000);
    assert_int_equal(r.update.finished_at, 7000);
    assert_int_equal(r.update.branch, 1);
    assert_int_equal(r.update.br_state, BR_COMPENSATED);
    assert_int_equal(r.update.prepare_attempts, 0);
    assert_int_equal(r.update.action_attempts, 8);
    assert_int_equal(r.update.compensate_attempts, 9);
    assert_string_equal(r.update.last_error, "HTTP 502");
    assert_int_equal(r.update.br_updated_at, 8000);
    record_clear(&r);

    for (size_t n = 0; n < b.len; n++) {
        assert_int_equal(record_decode(b.data, n, &r), DTX_ECORRUPT);
        assert_null(r.update.gid);
        assert_null(r.update.last_error);
    }
    /* the old layout read as the new one is refused */
    b.data[0] = REC_UPDATE2;
    assert_int_equal(record_decode(b.data, b.len, &r), DTX_ECORRUPT);
    /* a bad branch state in the old layout */
    buf_reset(&b);
    enc_old_update(&b, "old-1", 0, BR_STATE_COUNT);
    assert_int_equal(record_decode(b.data, b.len, &r), DTX_ECORRUPT);

    /* no branch */
    buf_reset(&b);
    enc_old_update(&b, "old-1", UINT32_MAX, 0);
    assert_int_equal(record_decode(b.data, b.len, &r), 0);
    assert_int_equal(r.kind, REC_UPDATE);
    assert_int_equal(r.update.branch, UINT32_MAX);
    assert_null(r.update.last_error);
    record_clear(&r);

    /* the new layout read as the old one is refused (4 bytes left over) */
    struct txn *t = sample_2pc();
    buf_reset(&b);
    record_encode_update(&b, t, &t->branches[0]);
    b.data[0] = REC_UPDATE;
    assert_int_equal(record_decode(b.data, b.len, &r), DTX_ECORRUPT);
    assert_null(r.update.gid);
    txn_free(t);
    buf_free(&b);
}

/* ---- damage ------------------------------------------------------------- */

/* Every proper prefix of the record in b is refused and leaves out empty. */
static void assert_every_truncation_refused(const struct buf *b)
{
    struct record r;
    for (size_t n = 0; n < b->len; n++) {
        memset(&r, 0xAB, sizeof r); /* decode must reset it */
        assert_int_equal(record_decode(b->data, n, &r), DTX_ECORRUPT);
        assert_null(r.txn);
        assert_null(r.update.gid);
        assert_null(r.update.last_error);
    }
    /* and the whole record decodes, while one more byte does not */
    assert_int_equal(record_decode(b->data, b->len, &r), 0);
    record_clear(&r);
    char *longer = xmalloc(b->len + 1);
    memcpy(longer, b->data, b->len);
    longer[b->len] = 0;
    assert_int_equal(record_decode(longer, b->len + 1, &r), DTX_ECORRUPT);
    assert_null(r.txn);
    assert_null(r.update.gid);
    free(longer);
}

static void test_truncation_every_kind(void **state)
{
    (void)state;
    struct txn *ts[] = {sample(), sample_2pc(), sample_msg()};
    struct buf b;
    buf_init(&b, 1 << 20);
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) {
        struct txn *t = ts[i];
        buf_reset(&b);
        record_encode_txn(&b, t);
        assert_every_truncation_refused(&b);
        for (uint32_t k = 0; k < t->nbranches; k++) {
            if (t->branches[k].nafter == 0) { /* registered branches have no after */
                buf_reset(&b);
                record_encode_branch(&b, t, &t->branches[k]);
                assert_every_truncation_refused(&b);
            }
            buf_reset(&b);
            record_encode_update(&b, t, &t->branches[k]);
            assert_every_truncation_refused(&b);
        }
        buf_reset(&b);
        record_encode_update(&b, t, NULL);
        assert_every_truncation_refused(&b);
        txn_free(t);
    }
    buf_reset(&b);
    enc_old_txn(&b, "o", TXN_SAGA, TXN_SUBMITTED, old_branches, 2);
    assert_every_truncation_refused(&b);
    buf_reset(&b);
    enc_old_update(&b, "o", 0, BR_RUNNING);
    assert_every_truncation_refused(&b);
    buf_free(&b);
}

/* The offset of the first byte where a and b differ (they must). */
static size_t first_diff(const struct buf *a, const struct buf *b)
{
    assert_int_equal(a->len, b->len);
    for (size_t i = 0; i < a->len; i++)
        if (a->data[i] != b->data[i])
            return i;
    fail_msg("the encodings do not differ");
    return 0;
}

/* b with byte at off set to v is refused (want_ok 0) or accepted. */
static void check_byte(const struct buf *b, size_t off, uint8_t v, int want_ok)
{
    char *copy = xmalloc(b->len);
    memcpy(copy, b->data, b->len);
    copy[off] = (char)v;
    struct record r;
    int rc = record_decode(copy, b->len, &r);
    if (want_ok) {
        assert_int_equal(rc, 0);
        record_clear(&r);
    } else {
        assert_int_equal(rc, DTX_ECORRUPT);
        assert_null(r.txn);
        assert_null(r.update.gid);
    }
    free(copy);
}

static void test_bad_enums(void **state)
{
    (void)state;
    struct txn *t = sample_2pc();
    struct buf b, c;
    buf_init(&b, 1 << 20);
    buf_init(&c, 1 << 20);

    /* REC_TXN2: kind(1) + gid(4 + 4) + seq(8), then type, state,
     * needs_attention, flags */
    record_encode_txn(&b, t);
    size_t type_off = 1 + 4 + strlen(t->gid) + 8;
    assert_int_equal(b.data[type_off], TXN_2PC);
    assert_int_equal(b.data[type_off + 1], TXN_COMMITTING);
    check_byte(&b, type_off, TXN_TYPE_COUNT, 0);
    check_byte(&b, type_off, 0xFF, 0);
    check_byte(&b, type_off, TXN_TYPE_COUNT - 1, 1);
    check_byte(&b, type_off + 1, TXN_STATE_COUNT, 0);
    check_byte(&b, type_off + 1, 0xFF, 0);
    check_byte(&b, type_off + 1, TXN_STATE_COUNT - 1, 1);
    check_byte(&b, type_off + 3, 2, 0); /* an unknown flag */
    check_byte(&b, type_off + 3, 0x80, 0);
    check_byte(&b, type_off + 3, 1, 1);
    /* each branch's state byte, found by changing only that state */
    for (uint32_t i = 0; i < t->nbranches; i++) {
        enum branch_state keep = t->branches[i].state;
        t->branches[i].state = keep == BR_PENDING ? BR_FAILED : BR_PENDING;
        buf_reset(&c);
        record_encode_txn(&c, t);
        t->branches[i].state = keep;
        size_t off = first_diff(&b, &c);
        assert_int_equal(b.data[off], keep);
        check_byte(&b, off, BR_STATE_COUNT, 0);
        check_byte(&b, off, 0xFF, 0);
        check_byte(&b, off, BR_PREPARED, 1);
    }

    /* REC_BRANCH: its state byte */
    buf_reset(&b);
    record_encode_branch(&b, t, &t->branches[0]);
    t->branches[0].state = BR_PENDING;
    buf_reset(&c);
    record_encode_branch(&c, t, &t->branches[0]);
    t->branches[0].state = BR_PREPARED;
    size_t off = first_diff(&b, &c);
    check_byte(&b, off, BR_STATE_COUNT, 0);
    check_byte(&b, off, 0xFF, 0);
    check_byte(&b, off, BR_STATE_COUNT - 1, 1);

    /* REC_UPDATE2: kind(1) + gid(4 + 4), then state; branch state after the
     * u8 needs_attention, two i64 and the u32 index */
    buf_reset(&b);
    record_encode_update(&b, t, &t->branches[0]);
    size_t st_off = 1 + 4 + strlen(t->gid);
    size_t bs_off = st_off + 1 + 1 + 8 + 8 + 4;
    assert_int_equal(b.data[st_off], TXN_COMMITTING);
    assert_int_equal(b.data[bs_off], BR_PREPARED);
    check_byte(&b, st_off, TXN_STATE_COUNT, 0);
    check_byte(&b, st_off, 0xFF, 0);
    check_byte(&b, bs_off, BR_STATE_COUNT, 0);
    check_byte(&b, bs_off, 0xFF, 0);
    check_byte(&b, bs_off, BR_COMPENSATED, 1);
    buf_reset(&b);
    record_encode_update(&b, t, NULL);
    check_byte(&b, st_off, TXN_STATE_COUNT, 0);

    /* unknown kinds */
    for (unsigned k = 0; k < 256; k++) {
        if (k >= REC_TXN && k <= REC_UPDATE2)
            continue;
        check_byte(&b, 0, (uint8_t)k, 0);
    }
    struct record r;
    assert_int_equal(record_decode("", 0, &r), DTX_ECORRUPT);
    assert_int_equal(record_decode(NULL, 0, &r), DTX_ECORRUPT);

    buf_free(&b);
    buf_free(&c);
    txn_free(t);
}

/* A hand-built REC_BRANCH / REC_TXN2 with the given strings and counts. */
static void enc_branch2(struct buf *b, const char *id, const char *action, const char *payload,
                        uint32_t nafter, uint32_t after0)
{
    enc_cstr(b, id);
    enc_cstr(b, NULL); /* prepare */
    enc_cstr(b, action);
    enc_cstr(b, NULL); /* compensate */
    enc_cstr(b, payload);
    enc_u8(b, BR_PENDING);
    enc_u32(b, 0);
    enc_u32(b, 0);
    enc_u32(b, 0);
    enc_cstr(b, NULL); /* last_error */
    enc_u64(b, 0);
    enc_u32(b, nafter);
    for (uint32_t k = 0; k < nafter; k++)
        enc_u32(b, after0 + k);
}

static void enc_txn2_head(struct buf *b, const char *gid, uint32_t n)
{
    enc_u8(b, REC_TXN2);
    enc_cstr(b, gid);
    enc_u64(b, 1);
    enc_u8(b, TXN_SAGA);
    enc_u8(b, TXN_SUBMITTED);
    enc_u8(b, 0);
    enc_u8(b, 1); /* concurrent */
    enc_u64(b, 0);
    enc_u64(b, 0);
    enc_u64(b, 0);
    enc_u32(b, 1);
    enc_u32(b, 1);
    enc_u32(b, 1);
    enc_u32(b, 1);
    enc_u64(b, 0);
    enc_cstr(b, NULL); /* check */
    enc_u32(b, 0);
    enc_u32(b, n);
}

static int decode_buf(const struct buf *b)
{
    struct record r;
    int rc = record_decode(b->data, b->len, &r);
    if (rc == 0)
        record_clear(&r);
    else
        assert_null(r.txn);
    return rc;
}

/* Missing required strings and bad counts are refused. */
static void test_bad_fields(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b, 1 << 20);

    /* a well-formed hand-built record first, so the cases below fail for
     * the one reason they change */
    enc_txn2_head(&b, "g", 2);
    enc_branch2(&b, "1", "http://a/", "{}", 0, 0);
    enc_branch2(&b, "2", "http://a/", "{}", 1, 0);
    assert_int_equal(decode_buf(&b), 0);

    buf_reset(&b);
    enc_txn2_head(&b, NULL, 0); /* null gid */
    assert_int_equal(decode_buf(&b), DTX_ECORRUPT);
    buf_reset(&b);
    enc_txn2_head(&b, "g", 1);
    enc_branch2(&b, NULL, "http://a/", "{}", 0, 0); /* null id */
    assert_int_equal(decode_buf(&b), DTX_ECORRUPT);
    buf_reset(&b);
    enc_txn2_head(&b, "g", 1);
    enc_branch2(&b, "1", NULL, "{}", 0, 0); /* null action */
    assert_int_equal(decode_buf(&b), DTX_ECORRUPT);
    buf_reset(&b);
    enc_txn2_head(&b, "g", 1);
    enc_branch2(&b, "1", "http://a/", NULL, 0, 0); /* null payload */
    assert_int_equal(decode_buf(&b), DTX_ECORRUPT);
    buf_reset(&b);
    enc_txn2_head(&b, "g", 2);
    enc_branch2(&b, "1", "http://a/", "{}", 0, 0);
    enc_branch2(&b, "2", "http://a/", "{}", 1, 1); /* waits for itself */
    assert_int_equal(decode_buf(&b), DTX_ECORRUPT);
    buf_reset(&b);
    enc_txn2_head(&b, "g", 2);
    enc_branch2(&b, "1", "http://a/", "{}", 1, 2); /* no such step */
    enc_branch2(&b, "2", "http://a/", "{}", 0, 0);
    assert_int_equal(decode_buf(&b), DTX_ECORRUPT);
    buf_reset(&b);
    enc_txn2_head(&b, "g", 2);
    enc_branch2(&b, "1", "http://a/", "{}", 2, 0); /* more after than steps allow */
    enc_branch2(&b, "2", "http://a/", "{}", 0, 0);
    assert_int_equal(decode_buf(&b), DTX_ECORRUPT);
    buf_reset(&b);
    enc_txn2_head(&b, "g", 100001); /* above the branch cap, no bytes follow */
    assert_int_equal(decode_buf(&b), DTX_ECORRUPT);
    buf_reset(&b);
    enc_txn2_head(&b, "g", 0x7FFFFFFF); /* refused before anything is allocated for it */
    assert_int_equal(decode_buf(&b), DTX_ECORRUPT);
    buf_reset(&b);
    enc_txn2_head(&b, "g", 3); /* more branches announced than present */
    enc_branch2(&b, "1", "http://a/", "{}", 0, 0);
    assert_int_equal(decode_buf(&b), DTX_ECORRUPT);
    buf_reset(&b);
    enc_txn2_head(&b, "g", 1);
    enc_branch2(&b, "1", "http://a/", "{}", 0, 0);
    b.data[b.len - 4] = (char)0xFF; /* nafter 0x000000FF */
    assert_int_equal(decode_buf(&b), DTX_ECORRUPT);

    /* REC_BRANCH: one branch, so never any `after`; gid and id required */
    buf_reset(&b);
    enc_u8(&b, REC_BRANCH);
    enc_cstr(&b, "g");
    enc_branch2(&b, "b", "http://a/", "{}", 0, 0);
    assert_int_equal(decode_buf(&b), 0);
    buf_reset(&b);
    enc_u8(&b, REC_BRANCH);
    enc_cstr(&b, NULL);
    enc_branch2(&b, "b", "http://a/", "{}", 0, 0);
    assert_int_equal(decode_buf(&b), DTX_ECORRUPT);
    buf_reset(&b);
    enc_u8(&b, REC_BRANCH);
    enc_cstr(&b, "g");
    enc_branch2(&b, NULL, "http://a/", "{}", 0, 0);
    assert_int_equal(decode_buf(&b), DTX_ECORRUPT);
    buf_reset(&b);
    enc_u8(&b, REC_BRANCH);
    enc_cstr(&b, "g");
    enc_branch2(&b, "b", "http://a/", "{}", 1, 1);
    assert_int_equal(decode_buf(&b), DTX_ECORRUPT);

    /* REC_UPDATE2 with a null gid */
    buf_reset(&b);
    enc_u8(&b, REC_UPDATE2);
    enc_cstr(&b, NULL);
    enc_u8(&b, TXN_SUBMITTED);
    enc_u8(&b, 0);
    enc_u64(&b, 0);
    enc_u64(&b, 0);
    enc_u32(&b, UINT32_MAX);
    assert_int_equal(decode_buf(&b), DTX_ECORRUPT);
    b.data[1] = 0; /* length 0xFFFFFF00: far past the end */
    assert_int_equal(decode_buf(&b), DTX_ECORRUPT);
    buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_txn_round_trip),
        cmocka_unit_test(test_txn2_round_trip_2pc),
        cmocka_unit_test(test_txn2_round_trip_msg),
        cmocka_unit_test(test_txn2_round_trip_empty),
        cmocka_unit_test(test_branch_round_trip),
        cmocka_unit_test(test_update_round_trip),
        cmocka_unit_test(test_update2_round_trip_2pc),
        cmocka_unit_test(test_old_txn_decoded),
        cmocka_unit_test(test_old_update_decoded),
        cmocka_unit_test(test_truncation_every_kind),
        cmocka_unit_test(test_bad_enums),
        cmocka_unit_test(test_bad_fields),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
