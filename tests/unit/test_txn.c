/* test_txn.c - every transaction and branch state transition, names, specs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/err.h"
#include "common/slog.h"
#include "engine/txn.h"

/* The legal transitions, written out independently of txn.c's tables. */
static const int txn_legal[][2] = {
    {TXN_PREPARED, TXN_SUBMITTED}, {TXN_PREPARED, TXN_ABORTING}, {TXN_SUBMITTED, TXN_SUCCEEDED},
    {TXN_SUBMITTED, TXN_ABORTING}, {TXN_ABORTING, TXN_FAILED},
};
static const int br_legal[][2] = {
    {BR_PENDING, BR_RUNNING},          {BR_RUNNING, BR_SUCCEEDED},
    {BR_RUNNING, BR_FAILED},           {BR_RUNNING, BR_COMPENSATING},
    {BR_SUCCEEDED, BR_COMPENSATING},   {BR_FAILED, BR_COMPENSATING},
    {BR_COMPENSATING, BR_COMPENSATED},
};

static int listed(const int (*tab)[2], size_t n, int from, int to)
{
    for (size_t i = 0; i < n; i++)
        if (tab[i][0] == from && tab[i][1] == to)
            return 1;
    return 0;
}

static struct txn_spec *make_spec(uint32_t nsteps)
{
    struct txn_spec *s = xcalloc(1, sizeof *s);
    s->type = TXN_SAGA;
    s->nsteps = nsteps;
    s->steps = xcalloc(nsteps, sizeof *s->steps);
    for (uint32_t i = 0; i < nsteps; i++) {
        s->steps[i].action = xstrdup("http://127.0.0.1:1/a");
        s->steps[i].compensate = xstrdup("http://127.0.0.1:1/c");
        s->steps[i].payload = xstrdup("{\"n\":1}");
        s->steps[i].payload_len = 7;
    }
    s->retry = (struct retry_policy){100, 1000, 3};
    s->request_timeout_ms = 500;
    return s;
}

static void test_every_txn_transition(void **state)
{
    (void)state;
    size_t n = sizeof txn_legal / sizeof txn_legal[0];
    for (int from = 0; from < TXN_STATE_COUNT; from++) {
        for (int to = 0; to < TXN_STATE_COUNT; to++) {
            int want = listed(txn_legal, n, from, to);
            assert_int_equal(txn_transition_ok(from, to), want);
            struct txn t = {.gid = "g", .state = from};
            int rc = txn_set_state(&t, to, 1234, "test");
            if (want) {
                assert_int_equal(rc, 0);
                assert_int_equal(t.state, to);
                assert_int_equal(t.updated_at, 1234);
                assert_int_equal(t.finished_at, txn_state_is_final(to) ? 1234 : 0);
            } else {
                assert_int_equal(rc, DTX_ESTATE);
                assert_int_equal(t.state, from);
                assert_int_equal(t.updated_at, 0);
            }
        }
    }
    assert_false(txn_transition_ok(TXN_STATE_COUNT, TXN_FAILED));
    assert_false(txn_transition_ok(TXN_ABORTING, TXN_STATE_COUNT));
}

static void test_every_branch_transition(void **state)
{
    (void)state;
    size_t n = sizeof br_legal / sizeof br_legal[0];
    struct txn owner = {.gid = "g"};
    for (int from = 0; from < BR_STATE_COUNT; from++) {
        for (int to = 0; to < BR_STATE_COUNT; to++) {
            int want = listed(br_legal, n, from, to);
            assert_int_equal(branch_transition_ok(from, to), want);
            struct branch b = {.txn = &owner, .state = from, .transient = 5};
            int rc = branch_set_state(&b, to, 99, "test");
            if (want) {
                assert_int_equal(rc, 0);
                assert_int_equal(b.state, to);
                assert_int_equal(b.updated_at, 99);
                assert_int_equal(b.transient, 0); /* a new operation starts its count */
            } else {
                assert_int_equal(rc, DTX_ESTATE);
                assert_int_equal(b.state, from);
                assert_int_equal(b.transient, 5);
            }
        }
    }
}

static void test_names_round_trip(void **state)
{
    (void)state;
    for (int s = 0; s < TXN_STATE_COUNT; s++) {
        enum txn_state out;
        assert_int_equal(txn_state_parse(txn_state_name(s), &out), 0);
        assert_int_equal(out, s);
    }
    for (int s = 0; s < BR_STATE_COUNT; s++) {
        enum branch_state out;
        assert_int_equal(branch_state_parse(branch_state_name(s), &out), 0);
        assert_int_equal(out, s);
    }
    enum txn_type ty;
    assert_int_equal(txn_type_parse("saga", &ty), 0);
    assert_int_equal(ty, TXN_SAGA);
    assert_int_equal(txn_type_parse("xa", &ty), DTX_EINVAL);
    enum txn_state st;
    assert_int_equal(txn_state_parse("succeed", &st), DTX_EINVAL);
    assert_string_equal(txn_state_name(TXN_SUCCEEDED), "succeeded");
    assert_string_equal(branch_state_name(BR_COMPENSATED), "compensated");
}

static void test_new_and_matches(void **state)
{
    (void)state;
    struct txn_spec *s = make_spec(3);
    struct txn *t = txn_new_from_spec(s, "gid-1", 7, 555);
    assert_string_equal(t->gid, "gid-1");
    assert_int_equal(t->seq, 7);
    assert_int_equal(t->state, TXN_SUBMITTED);
    assert_int_equal(t->nbranches, 3);
    assert_int_equal(t->created_at, 555);
    for (uint32_t i = 0; i < 3; i++) {
        assert_int_equal(t->branches[i].idx, i);
        assert_ptr_equal(t->branches[i].txn, t);
        assert_int_equal(t->branches[i].state, BR_PENDING);
        assert_string_equal(t->branches[i].payload, "{\"n\":1}");
    }
    assert_true(txn_matches_spec(t, s));
    s->wait = 1; /* waiting does not change the transaction */
    s->wait_timeout_ms = 5;
    assert_true(txn_matches_spec(t, s));
    free(s->steps[2].payload);
    s->steps[2].payload = xstrdup("{\"n\":2}");
    assert_false(txn_matches_spec(t, s));
    txn_spec_free(s);

    s = make_spec(3);
    s->retry.limit = 4;
    assert_false(txn_matches_spec(t, s));
    txn_spec_free(s);
    s = make_spec(2);
    assert_false(txn_matches_spec(t, s));
    txn_spec_free(s);

    branch_set_error(&t->branches[0], "boom");
    assert_string_equal(t->branches[0].last_error, "boom");
    branch_set_error(&t->branches[0], NULL);
    assert_null(t->branches[0].last_error);
    txn_free(t);
}

/* after lists compare as sets: their order means nothing. */
static void test_matches_after_as_set(void **state)
{
    (void)state;
    struct txn_spec *s = make_spec(3);
    s->concurrent = 1;
    s->steps[2].after = xmalloc(2 * sizeof(uint32_t));
    s->steps[2].after[0] = 0;
    s->steps[2].after[1] = 1;
    s->steps[2].nafter = 2;
    struct txn *t = txn_new_from_spec(s, "g", 1, 1);
    s->steps[2].after[0] = 1;
    s->steps[2].after[1] = 0;
    assert_true(txn_matches_spec(t, s));
    s->steps[2].nafter = 1;
    assert_false(txn_matches_spec(t, s));
    s->steps[2].nafter = 2;
    s->concurrent = 0;
    assert_false(txn_matches_spec(t, s));
    txn_spec_free(s);
    txn_free(t);
}

int main(void)
{
    slog_set_level(SLOG_FATAL); /* the illegal transitions tried here log errors */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_txn_transition), cmocka_unit_test(test_every_branch_transition),
        cmocka_unit_test(test_names_round_trip),     cmocka_unit_test(test_new_and_matches),
        cmocka_unit_test(test_matches_after_as_set),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
