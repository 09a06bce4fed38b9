/* test_txn.c - every transaction and branch state transition, names, specs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/err.h"
#include "common/slog.h"
#include "engine/txn.h"

/* The legal transitions, written out independently of txn.c's tables (and
 * of the diagrams in txn.h). */
static const int txn_legal[][2] =
    {
        {TXN_PREPARED, TXN_SUBMITTED},   {TXN_PREPARED, TXN_ABORTING},
        {TXN_SUBMITTED, TXN_SUCCEEDED},  {TXN_SUBMITTED, TXN_ABORTING},
        {TXN_SUBMITTED, TXN_COMMITTING}, /* 2pc: every branch voted yes */
        {TXN_ABORTING, TXN_FAILED},      {TXN_COMMITTING, TXN_SUCCEEDED},
};
static const int br_legal[][2] = {
    {BR_PENDING, BR_RUNNING},
    {BR_PENDING, BR_COMPENSATING}, /* tcc cancel / 2pc rollback without a phase 1 */
    {BR_RUNNING, BR_SUCCEEDED},
    {BR_RUNNING, BR_FAILED},
    {BR_RUNNING, BR_COMPENSATING},
    {BR_RUNNING, BR_PREPARED}, /* 2pc: yes vote */
    {BR_SUCCEEDED, BR_COMPENSATING},
    {BR_FAILED, BR_COMPENSATING},
    {BR_COMPENSATING, BR_COMPENSATED},
    {BR_PREPARED, BR_SUCCEEDED},    /* 2pc: committed */
    {BR_PREPARED, BR_COMPENSATING}, /* 2pc: rolled back after a yes vote */
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
    size_t legal = 0;
    for (int from = 0; from < TXN_STATE_COUNT; from++)
        for (int to = 0; to < TXN_STATE_COUNT; to++)
            legal += txn_transition_ok(from, to) != 0;
    assert_int_equal(legal, n); /* the table lists no pair twice */
    assert_false(txn_transition_ok(TXN_STATE_COUNT, TXN_FAILED));
    assert_false(txn_transition_ok(TXN_ABORTING, TXN_STATE_COUNT));
    assert_false(txn_transition_ok((enum txn_state) - 1, TXN_FAILED));
    assert_false(txn_transition_ok(TXN_COMMITTING, TXN_STATE_COUNT));
    /* final states (and only they) stamp finished_at */
    for (int st = 0; st < TXN_STATE_COUNT; st++)
        assert_int_equal(txn_state_is_final(st) != 0, st == TXN_SUCCEEDED || st == TXN_FAILED);
}

/* The 2pc commit path end to end through the setter. */
static void test_txn_commit_path(void **state)
{
    (void)state;
    struct txn t = {.gid = "g", .state = TXN_PREPARED};
    assert_int_equal(txn_set_state(&t, TXN_SUBMITTED, 10, "submit"), 0);
    assert_int_equal(txn_set_state(&t, TXN_COMMITTING, 20, "all prepared"), 0);
    assert_int_equal(t.finished_at, 0);
    assert_int_equal(txn_set_state(&t, TXN_ABORTING, 30, "too late"), DTX_ESTATE);
    assert_int_equal(t.state, TXN_COMMITTING);
    assert_int_equal(t.updated_at, 20);
    assert_int_equal(txn_set_state(&t, TXN_SUCCEEDED, 40, "committed"), 0);
    assert_int_equal(t.finished_at, 40);

    struct branch b = {.txn = &t, .id = "b1", .state = BR_PENDING};
    assert_int_equal(branch_set_state(&b, BR_RUNNING, 1, "prepare"), 0);
    assert_int_equal(branch_set_state(&b, BR_PREPARED, 2, "yes"), 0);
    assert_int_equal(branch_set_state(&b, BR_FAILED, 3, "no"), DTX_ESTATE);
    assert_int_equal(branch_set_state(&b, BR_SUCCEEDED, 4, "commit"), 0);
    assert_int_equal(b.updated_at, 4);
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
            struct branch b = {.txn = &owner, .id = "1", .state = from, .transient = 5};
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
                assert_int_equal(b.updated_at, 0);
            }
        }
    }
    size_t legal = 0;
    for (int from = 0; from < BR_STATE_COUNT; from++)
        for (int to = 0; to < BR_STATE_COUNT; to++)
            legal += branch_transition_ok(from, to) != 0;
    assert_int_equal(legal, n);
    assert_false(branch_transition_ok(BR_STATE_COUNT, BR_COMPENSATED));
    assert_false(branch_transition_ok(BR_PREPARED, BR_STATE_COUNT));
    assert_false(branch_transition_ok((enum branch_state) - 1, BR_RUNNING));
    /* a branch without an owner still logs (gid "?") */
    struct branch orphan = {.id = "x", .state = BR_PENDING};
    assert_int_equal(branch_set_state(&orphan, BR_RUNNING, 1, "test"), 0);
    assert_int_equal(branch_set_state(&orphan, BR_PENDING, 2, "test"), DTX_ESTATE);
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
    for (int ty = 0; ty < TXN_TYPE_COUNT; ty++) {
        enum txn_type out;
        assert_int_equal(txn_type_parse(txn_type_name(ty), &out), 0);
        assert_int_equal(out, ty);
    }
    /* the names are part of the API: spelled out */
    static const char *const types[] = {"saga", "tcc", "2pc", "msg"};
    assert_int_equal(TXN_TYPE_COUNT, 4);
    for (int ty = 0; ty < TXN_TYPE_COUNT; ty++)
        assert_string_equal(txn_type_name(ty), types[ty]);
    static const char *const states[] = {"prepared", "submitted", "succeeded",
                                         "aborting", "failed",    "committing"};
    assert_int_equal(TXN_STATE_COUNT, 6);
    for (int st = 0; st < TXN_STATE_COUNT; st++)
        assert_string_equal(txn_state_name(st), states[st]);
    static const char *const brs[] = {"pending",      "running",     "succeeded", "failed",
                                      "compensating", "compensated", "prepared"};
    assert_int_equal(BR_STATE_COUNT, 7);
    for (int st = 0; st < BR_STATE_COUNT; st++)
        assert_string_equal(branch_state_name(st), brs[st]);
    assert_string_equal(txn_type_name(TXN_TYPE_COUNT), "unknown");
    assert_string_equal(txn_state_name(TXN_STATE_COUNT), "unknown");
    assert_string_equal(branch_state_name(BR_STATE_COUNT), "unknown");

    enum txn_type ty = TXN_MSG;
    assert_int_equal(txn_type_parse("xa", &ty), DTX_EINVAL);
    assert_int_equal(txn_type_parse("TCC", &ty), DTX_EINVAL);
    assert_int_equal(txn_type_parse("", &ty), DTX_EINVAL);
    assert_int_equal(ty, TXN_MSG); /* untouched on error */
    enum txn_state st;
    assert_int_equal(txn_state_parse("succeed", &st), DTX_EINVAL);
    assert_int_equal(txn_state_parse("commit", &st), DTX_EINVAL);
    enum branch_state bs;
    assert_int_equal(branch_state_parse("prepare", &bs), DTX_EINVAL);
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
        char id[16];
        snprintf(id, sizeof id, "%u", i + 1); /* steps are numbered from 1 */
        assert_string_equal(t->branches[i].id, id);
        assert_null(t->branches[i].prepare);
    }
    assert_null(t->check);
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

/* A step_spec on the stack pointing at literals (txn_add_branch copies). */
static struct step_spec reg(const char *id, const char *prepare, const char *action,
                            const char *compensate, const char *payload)
{
    return (struct step_spec){.id = (char *)id,
                              .prepare = (char *)prepare,
                              .action = (char *)action,
                              .compensate = (char *)compensate,
                              .payload = (char *)payload,
                              .payload_len = strlen(payload)};
}

static struct txn_spec *make_typed_spec(enum txn_type type)
{
    struct txn_spec *s = xcalloc(1, sizeof *s);
    s->type = type;
    s->retry = (struct retry_policy){100, 1000, 3};
    s->request_timeout_ms = 500;
    s->timeout_ms = 10000;
    return s;
}

/* Sagas start submitted; every other mode starts prepared. */
static void test_new_state_per_type(void **state)
{
    (void)state;
    for (int ty = 0; ty < TXN_TYPE_COUNT; ty++) {
        struct txn_spec *s = make_typed_spec(ty);
        struct txn *t = txn_new_from_spec(s, "g", 1, 2);
        assert_int_equal(t->type, ty);
        assert_int_equal(t->state, ty == TXN_SAGA ? TXN_SUBMITTED : TXN_PREPARED);
        assert_int_equal(t->nbranches, 0);
        assert_true(t->cap_branches >= 1);
        assert_non_null(t->branches);
        assert_null(t->check);
        assert_int_equal(t->check_attempts, 0);
        assert_int_equal(t->timeout_ms, 10000);
        assert_int_equal(t->finished_at, 0);
        txn_free(t);
        txn_spec_free(s);
    }
}

/* A msg transaction: check copied, steps become branches "1".."n" with no
 * compensation and no prepare. */
static void test_new_msg(void **state)
{
    (void)state;
    struct txn_spec *s = make_typed_spec(TXN_MSG);
    s->check = xstrdup("http://h/check");
    s->nsteps = 3;
    s->steps = xcalloc(3, sizeof *s->steps);
    for (uint32_t i = 0; i < 3; i++) {
        s->steps[i].action = xstrdup("http://h/deliver");
        s->steps[i].payload = xstrdup("[]");
        s->steps[i].payload_len = 2;
    }
    s->steps[1].id = xstrdup("given"); /* an id given with the step is kept */
    struct txn *t = txn_new_from_spec(s, "m", 3, 4);
    assert_int_equal(t->state, TXN_PREPARED);
    assert_string_equal(t->check, "http://h/check");
    assert_ptr_not_equal(t->check, s->check);
    assert_int_equal(t->nbranches, 3);
    for (uint32_t i = 0; i < 3; i++) {
        const struct branch *b = &t->branches[i];
        char id[16];
        snprintf(id, sizeof id, "%u", i + 1);
        assert_string_equal(b->id, i == 1 ? "given" : id);
        assert_int_equal(b->idx, i);
        assert_ptr_equal(b->txn, t);
        assert_null(b->prepare);
        assert_null(b->compensate);
        assert_string_equal(b->action, "http://h/deliver");
        assert_int_equal(b->state, BR_PENDING);
        assert_int_equal(b->updated_at, 4);
    }
    assert_ptr_equal(txn_branch_by_id(t, "given"), &t->branches[1]);
    assert_null(txn_branch_by_id(t, "2"));
    assert_true(txn_matches_spec(t, s));
    txn_spec_free(s);
    txn_free(t);
}

/* Registering ten branches grows the array past its first capacity; every
 * branch keeps its id, its index and a pointer to its txn. */
static void test_add_branch_growth(void **state)
{
    (void)state;
    struct txn_spec *s = make_typed_spec(TXN_2PC);
    struct txn *t = txn_new_from_spec(s, "x", 1, 1);
    txn_spec_free(s);
    uint32_t first_cap = t->cap_branches;
    assert_true(first_cap < 10);
    for (uint32_t i = 0; i < 10; i++) {
        char id[16], payload[32], prep[32];
        snprintf(id, sizeof id, "b%u", i);
        snprintf(payload, sizeof payload, "{\"i\":%u}", i);
        snprintf(prep, sizeof prep, "http://p/%u", i);
        uint32_t after[1] = {0};
        struct step_spec sp =
            reg(id, i % 2 ? NULL : prep, "http://p/commit", "http://p/rollback", payload);
        if (i == 5) {
            sp.after = after;
            sp.nafter = 1;
        }
        struct branch *b = txn_add_branch(t, &sp, 100 + i);
        /* the spec's strings were copied: scribble over ours */
        memset(id, 'z', sizeof id - 1);
        memset(payload, 'z', sizeof payload - 1);
        assert_ptr_equal(b, &t->branches[i]);
        assert_int_equal(t->nbranches, i + 1);
        assert_true(t->cap_branches >= t->nbranches);
        assert_int_equal(b->state, BR_PENDING);
        assert_int_equal(b->updated_at, 100 + i);
        assert_int_equal(b->prepare_attempts + b->action_attempts + b->compensate_attempts, 0);
        assert_null(b->last_error);
        assert_int_equal(b->in_flight, 0);
        /* every branch so far is intact after a possible move */
        for (uint32_t k = 0; k <= i; k++) {
            const struct branch *c = &t->branches[k];
            char want[16];
            snprintf(want, sizeof want, "b%u", k);
            assert_string_equal(c->id, want);
            assert_int_equal(c->idx, k);
            assert_ptr_equal(c->txn, t);
            char wp[32];
            snprintf(wp, sizeof wp, "{\"i\":%u}", k);
            assert_int_equal(c->payload_len, strlen(wp));
            assert_memory_equal(c->payload, wp, c->payload_len);
            assert_int_equal(c->payload[c->payload_len], '\0');
            if (k % 2) {
                assert_null(c->prepare);
            } else {
                snprintf(wp, sizeof wp, "http://p/%u", k);
                assert_string_equal(c->prepare, wp);
            }
            assert_string_equal(c->action, "http://p/commit");
            assert_string_equal(c->compensate, "http://p/rollback");
            assert_int_equal(c->nafter, k == 5 ? 1 : 0);
        }
    }
    assert_true(t->cap_branches > first_cap);
    assert_int_equal(t->branches[5].after[0], 0);
    assert_ptr_equal(txn_branch_by_id(t, "b9"), &t->branches[9]);
    txn_free(t);

    /* a saga's array is sized to its steps: adding one more grows it too */
    struct txn_spec *saga = make_spec(3);
    t = txn_new_from_spec(saga, "s", 1, 1);
    txn_spec_free(saga);
    struct step_spec sp = reg("extra", NULL, "http://a/", NULL, "{}");
    struct branch *b = txn_add_branch(t, &sp, 5);
    assert_int_equal(t->nbranches, 4);
    assert_int_equal(b->idx, 3);
    for (uint32_t k = 0; k < 4; k++)
        assert_ptr_equal(t->branches[k].txn, t);
    assert_string_equal(t->branches[2].id, "3");
    assert_null(b->compensate);
    txn_free(t);

    /* an empty payload is stored as "" (never NULL) */
    struct txn_spec *tcc = make_typed_spec(TXN_TCC);
    t = txn_new_from_spec(tcc, "t", 1, 1);
    txn_spec_free(tcc);
    sp = (struct step_spec){.id = "e", .action = "http://a/", .compensate = "http://a/"};
    b = txn_add_branch(t, &sp, 1);
    assert_non_null(b->payload);
    assert_int_equal(b->payload_len, 0);
    assert_string_equal(b->payload, "");
    txn_free(t);
}

static void test_branch_by_id(void **state)
{
    (void)state;
    struct txn_spec *s = make_typed_spec(TXN_TCC);
    struct txn *t = txn_new_from_spec(s, "t", 1, 1);
    txn_spec_free(s);
    assert_null(txn_branch_by_id(t, "1"));
    assert_null(txn_branch_by_id(t, ""));
    const char *ids[] = {"b1", "b10", "B1", "1", "a.b:c_d-e"};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        struct step_spec sp = reg(ids[i], NULL, "http://c/", "http://x/", "{}");
        txn_add_branch(t, &sp, 1);
    }
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        struct branch *b = txn_branch_by_id(t, ids[i]);
        assert_non_null(b);
        assert_int_equal(b->idx, i);
        assert_string_equal(b->id, ids[i]);
    }
    /* exact match only: no prefixes, no case folding */
    assert_null(txn_branch_by_id(t, "b"));
    assert_null(txn_branch_by_id(t, "b100"));
    assert_null(txn_branch_by_id(t, "b1 "));
    assert_null(txn_branch_by_id(t, "2"));
    assert_null(txn_branch_by_id(t, ""));
    assert_ptr_equal(txn_branch_by_id(t, "B1"), &t->branches[2]);
    txn_free(t);
}

static void test_branch_matches_spec(void **state)
{
    (void)state;
    struct txn_spec *s = make_typed_spec(TXN_2PC);
    struct txn *t = txn_new_from_spec(s, "t", 1, 1);
    txn_spec_free(s);
    struct step_spec sp = reg("b1", "http://p/prep", "http://p/commit", "http://p/rb", "{\"a\":1}");
    const struct branch *b = txn_add_branch(t, &sp, 1);
    struct step_spec tcc = reg("b2", NULL, "http://p/confirm", "http://p/cancel", "[]");
    const struct branch *b2 = txn_add_branch(t, &tcc, 1);

    assert_true(branch_matches_spec(b, &sp));
    assert_true(branch_matches_spec(b2, &tcc));
    struct step_spec m = sp;
    m.payload = "{\"a\":1}"; /* equal bytes, other pointer */
    assert_true(branch_matches_spec(b, &m));

    m = sp;
    m.prepare = "http://p/other";
    assert_false(branch_matches_spec(b, &m));
    m.prepare = NULL; /* absent vs present */
    assert_false(branch_matches_spec(b, &m));
    m = tcc;
    m.prepare = "http://p/prep";
    assert_false(branch_matches_spec(b2, &m));
    m = sp;
    m.action = "http://p/commit2";
    assert_false(branch_matches_spec(b, &m));
    m = sp;
    m.compensate = "http://p/rb/";
    assert_false(branch_matches_spec(b, &m));
    m.compensate = NULL;
    assert_false(branch_matches_spec(b, &m));
    m = sp;
    m.payload = "{\"a\":2}";
    assert_false(branch_matches_spec(b, &m));
    m = sp;
    m.payload_len = 6; /* a prefix of the stored payload */
    assert_false(branch_matches_spec(b, &m));
    m = sp;
    m.payload = "{\"a\":1} ";
    m.payload_len = 8;
    assert_false(branch_matches_spec(b, &m));
    txn_free(t);
}

/* tcc and 2pc: branches arrive by registration, so a re-create with the same
 * options matches however many were registered; options still count. */
static void test_matches_spec_registered_types(void **state)
{
    (void)state;
    enum txn_type types[] = {TXN_TCC, TXN_2PC};
    for (size_t i = 0; i < 2; i++) {
        struct txn_spec *s = make_typed_spec(types[i]);
        struct txn *t = txn_new_from_spec(s, "t", 1, 1);
        assert_true(txn_matches_spec(t, s));
        for (int k = 0; k < 3; k++) {
            char id[16];
            snprintf(id, sizeof id, "r%d", k);
            struct step_spec sp =
                reg(id, types[i] == TXN_2PC ? "http://p/" : NULL, "http://c/", "http://x/", "{}");
            txn_add_branch(t, &sp, 1);
        }
        assert_true(txn_matches_spec(t, s)); /* branches ignored */
        t->state = TXN_SUBMITTED;
        assert_true(txn_matches_spec(t, s)); /* so is the state */

        s->type = types[i] == TXN_TCC ? TXN_2PC : TXN_TCC;
        assert_false(txn_matches_spec(t, s));
        s->type = types[i];
        s->timeout_ms++;
        assert_false(txn_matches_spec(t, s));
        s->timeout_ms--;
        s->request_timeout_ms++;
        assert_false(txn_matches_spec(t, s));
        s->request_timeout_ms--;
        s->retry.max_ms++;
        assert_false(txn_matches_spec(t, s));
        s->retry.max_ms--;
        s->retry.initial_ms++;
        assert_false(txn_matches_spec(t, s));
        s->retry.initial_ms--;
        s->check = xstrdup("http://c/check");
        assert_false(txn_matches_spec(t, s));
        free(s->check);
        s->check = NULL;
        s->concurrent = 1;
        assert_false(txn_matches_spec(t, s));
        s->concurrent = 0;
        assert_true(txn_matches_spec(t, s));
        txn_spec_free(s);
        txn_free(t);
    }
}

/* msg: the check URL is part of the transaction; its steps are compared. */
static void test_matches_spec_msg(void **state)
{
    (void)state;
    struct txn_spec *s = make_typed_spec(TXN_MSG);
    s->check = xstrdup("http://h/check");
    s->nsteps = 2;
    s->steps = xcalloc(2, sizeof *s->steps);
    for (uint32_t i = 0; i < 2; i++) {
        s->steps[i].action = xstrdup("http://h/deliver");
        s->steps[i].payload = xstrdup("{}");
        s->steps[i].payload_len = 2;
    }
    struct txn *t = txn_new_from_spec(s, "m", 1, 1);
    assert_true(txn_matches_spec(t, s));

    free(s->check);
    s->check = xstrdup("http://h/check2");
    assert_false(txn_matches_spec(t, s));
    free(s->check);
    s->check = NULL;
    assert_false(txn_matches_spec(t, s));
    s->check = xstrdup("http://h/check");
    assert_true(txn_matches_spec(t, s));

    /* a stored txn without check against a spec with one */
    free(t->check);
    t->check = NULL;
    assert_false(txn_matches_spec(t, s));
    t->check = xstrdup("http://h/check");

    /* steps count for msg, unlike tcc/2pc */
    free(s->steps[1].action);
    s->steps[1].action = xstrdup("http://h/other");
    assert_false(txn_matches_spec(t, s));
    free(s->steps[1].action);
    s->steps[1].action = xstrdup("http://h/deliver");
    s->steps[1].compensate = xstrdup("http://h/undo"); /* msg branches have none */
    assert_false(txn_matches_spec(t, s));
    free(s->steps[1].compensate);
    s->steps[1].compensate = NULL;
    s->nsteps = 1;
    assert_false(txn_matches_spec(t, s));
    s->nsteps = 2;
    assert_true(txn_matches_spec(t, s));
    s->type = TXN_SAGA;
    assert_false(txn_matches_spec(t, s));
    s->type = TXN_MSG;
    txn_spec_free(s);
    txn_free(t);
}

/* step_spec_clear frees and NULLs every member; txn_spec_free takes partly
 * filled specs (checked for leaks under ASan). */
static void test_step_spec_clear(void **state)
{
    (void)state;
    struct step_spec s = {.id = xstrdup("b"),
                          .prepare = xstrdup("http://p/"),
                          .action = xstrdup("http://a/"),
                          .compensate = xstrdup("http://c/"),
                          .payload = xstrdup("{}"),
                          .payload_len = 2,
                          .after = xmalloc(sizeof(uint32_t)),
                          .nafter = 1};
    step_spec_clear(&s);
    assert_null(s.id);
    assert_null(s.prepare);
    assert_null(s.action);
    assert_null(s.compensate);
    assert_null(s.payload);
    assert_null(s.after);
    step_spec_clear(&s); /* twice is harmless */
    struct step_spec empty = {0};
    step_spec_clear(&empty);

    struct txn_spec *sp = make_typed_spec(TXN_MSG);
    sp->gid = xstrdup("g");
    sp->check = xstrdup("http://h/check");
    sp->nsteps = 3;
    sp->steps = xcalloc(3, sizeof *sp->steps);
    sp->steps[0].action = xstrdup("http://a/"); /* the rest left zeroed */
    txn_spec_free(sp);
    txn_spec_free(NULL);
}

int main(void)
{
    slog_set_level(SLOG_FATAL); /* the illegal transitions tried here log errors */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_txn_transition),
        cmocka_unit_test(test_every_branch_transition),
        cmocka_unit_test(test_txn_commit_path),
        cmocka_unit_test(test_names_round_trip),
        cmocka_unit_test(test_new_and_matches),
        cmocka_unit_test(test_matches_after_as_set),
        cmocka_unit_test(test_new_state_per_type),
        cmocka_unit_test(test_new_msg),
        cmocka_unit_test(test_add_branch_growth),
        cmocka_unit_test(test_branch_by_id),
        cmocka_unit_test(test_branch_matches_spec),
        cmocka_unit_test(test_matches_spec_registered_types),
        cmocka_unit_test(test_matches_spec_msg),
        cmocka_unit_test(test_step_spec_clear),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
