/* test_record.c - log record encoding and decoding, including damage. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/buf.h"
#include "common/err.h"
#include "engine/record.h"

static struct txn *sample(void)
{
    struct txn_spec s = {0};
    static uint32_t after_first[] = {0};
    struct step_spec steps[2] = {
        {"http://h/a1", "http://h/c1", "{\"x\":1}", 7, NULL, 0},
        {"https://h/a2", "https://h/c2", "[]", 2, after_first, 1},
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

static void test_txn_round_trip(void **state)
{
    (void)state;
    struct txn *t = sample();
    struct buf b;
    buf_init(&b, 1 << 20);
    record_encode_txn(&b, t);
    struct record r;
    assert_int_equal(record_decode(b.data, b.len, &r), 0);
    assert_int_equal(r.kind, REC_TXN);
    struct txn *u = r.txn;
    assert_string_equal(u->gid, "order-42");
    assert_int_equal(u->seq, 17);
    assert_int_equal(u->state, TXN_ABORTING);
    assert_int_equal(u->needs_attention, 1);
    assert_int_equal(u->created_at, 1700000000123);
    assert_int_equal(u->updated_at, 1700000000200);
    assert_int_equal(u->retry.initial_ms, 20);
    assert_int_equal(u->retry.max_ms, 400);
    assert_int_equal(u->retry.limit, 6);
    assert_int_equal(u->request_timeout_ms, 3000);
    assert_int_equal(u->timeout_ms, 60000);
    assert_int_equal(u->nbranches, 2);
    assert_string_equal(u->branches[0].action, "http://h/a1");
    assert_string_equal(u->branches[1].compensate, "https://h/c2");
    assert_int_equal(u->branches[0].payload_len, 7);
    assert_memory_equal(u->branches[0].payload, "{\"x\":1}", 7);
    assert_int_equal(u->branches[0].state, BR_COMPENSATING);
    assert_int_equal(u->branches[0].action_attempts, 2);
    assert_int_equal(u->branches[0].compensate_attempts, 9);
    assert_string_equal(u->branches[0].last_error, "HTTP 500");
    assert_null(u->branches[1].last_error);
    assert_int_equal(u->branches[1].state, BR_FAILED);
    assert_ptr_equal(u->branches[1].txn, u);
    assert_int_equal(u->concurrent, 1);
    assert_int_equal(u->branches[0].nafter, 0);
    assert_int_equal(u->branches[1].nafter, 1);
    assert_int_equal(u->branches[1].after[0], 0);
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
    struct record r;
    assert_int_equal(record_decode(b.data, b.len, &r), 0);
    assert_int_equal(r.kind, REC_UPDATE);
    assert_string_equal(r.update.gid, "order-42");
    assert_int_equal(r.update.state, TXN_ABORTING);
    assert_int_equal(r.update.branch, 0);
    assert_int_equal(r.update.br_state, BR_COMPENSATING);
    assert_int_equal(r.update.compensate_attempts, 9);
    assert_string_equal(r.update.last_error, "HTTP 500");
    record_clear(&r);

    buf_reset(&b);
    record_encode_update(&b, t, NULL);
    assert_int_equal(record_decode(b.data, b.len, &r), 0);
    assert_int_equal(r.update.branch, UINT32_MAX);
    assert_int_equal(r.update.needs_attention, 1);
    record_clear(&r);
    buf_free(&b);
    txn_free(t);
}

/* Every truncation, and damage to kind/enum bytes, is refused cleanly. */
static void test_damage_refused(void **state)
{
    (void)state;
    struct txn *t = sample();
    struct buf b;
    buf_init(&b, 1 << 20);
    record_encode_txn(&b, t);
    struct record r;
    for (size_t n = 0; n < b.len; n++)
        assert_int_equal(record_decode(b.data, n, &r), DTX_ECORRUPT);
    /* trailing garbage */
    char *longer = xmalloc(b.len + 1);
    memcpy(longer, b.data, b.len);
    longer[b.len] = 'x';
    assert_int_equal(record_decode(longer, b.len + 1, &r), DTX_ECORRUPT);
    free(longer);
    /* unknown kind */
    b.data[0] = 9;
    assert_int_equal(record_decode(b.data, b.len, &r), DTX_ECORRUPT);
    buf_reset(&b);
    record_encode_update(&b, t, &t->branches[0]);
    for (size_t n = 0; n < b.len; n++)
        assert_int_equal(record_decode(b.data, n, &r), DTX_ECORRUPT);
    /* state byte out of range: kind(1) + gid len(4) + gid(8) */
    b.data[13] = (char)TXN_STATE_COUNT;
    assert_int_equal(record_decode(b.data, b.len, &r), DTX_ECORRUPT);
    buf_free(&b);
    txn_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_txn_round_trip),
        cmocka_unit_test(test_update_round_trip),
        cmocka_unit_test(test_damage_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
