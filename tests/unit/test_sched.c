/*
 * test_sched.c - the timer heap: firing order, ties, disarm and re-arm from
 * anywhere, callbacks that change the heap while it runs, and long random
 * sequences checked against a plain sorted reference.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engine/sched.h"

#define MAX_FIRED 100000

struct item {
    struct sched_timer timer;
    int id;
    int rearm_step;            /* > 0: re-arm self at due + rearm_step */
    int rearms_left;           /* how many times */
    struct item *disarm_other; /* disarm this one when fired */
    struct item *rearm_other;  /* re-arm this one at rearm_other_due */
    uint64_t rearm_other_due;
};

static struct sched *cur;
static int fired[MAX_FIRED];
static uint64_t fired_due[MAX_FIRED];
static size_t nfired;

static struct item *item_of(struct sched_timer *t)
{
    return (struct item *)((char *)t - offsetof(struct item, timer));
}

static void on_fire(struct sched_timer *t)
{
    struct item *it = item_of(t);
    assert_false(sched_timer_armed(t)); /* disarmed before the call */
    assert_true(nfired < MAX_FIRED);
    fired[nfired] = it->id;
    fired_due[nfired] = t->due;
    nfired++;
    if (it->disarm_other != NULL)
        sched_disarm(cur, &it->disarm_other->timer);
    if (it->rearm_other != NULL)
        sched_arm(cur, &it->rearm_other->timer, it->rearm_other_due);
    if (it->rearm_step > 0 && it->rearms_left > 0) {
        it->rearms_left--;
        sched_arm(cur, t, t->due + (uint64_t)it->rearm_step);
    }
}

static void items_init(struct item *items, int n)
{
    memset(items, 0, sizeof *items * (size_t)n);
    for (int i = 0; i < n; i++) {
        items[i].id = i;
        sched_timer_init(&items[i].timer, on_fire);
    }
}

/* The heap property holds and every armed timer knows its slot. */
static void check_heap(const struct sched *s)
{
    for (size_t i = 0; i < s->len; i++) {
        assert_int_equal(s->heap[i]->heap_idx, i);
        if (i == 0)
            continue;
        const struct sched_timer *p = s->heap[(i - 1) / 2];
        const struct sched_timer *c = s->heap[i];
        assert_true(p->due < c->due || (p->due == c->due && p->seq < c->seq));
    }
}

static int setup(void **state)
{
    (void)state;
    cur = malloc(sizeof *cur);
    sched_init(cur);
    nfired = 0;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    sched_close(cur);
    free(cur);
    cur = NULL;
    return 0;
}

static void test_empty(void **state)
{
    (void)state;
    assert_true(sched_next_due(cur) == UINT64_MAX);
    assert_int_equal(sched_run(cur, UINT64_MAX), 0);
    struct item it;
    items_init(&it, 1);
    assert_false(sched_timer_armed(&it.timer));
    sched_disarm(cur, &it.timer); /* disarming a disarmed timer is a no-op */
    assert_int_equal(cur->len, 0);
}

static void test_order(void **state)
{
    (void)state;
    struct item it[6];
    items_init(it, 6);
    uint64_t due[6] = {50, 10, 40, 20, 60, 30};
    for (int i = 0; i < 6; i++) {
        sched_arm(cur, &it[i].timer, due[i]);
        assert_true(sched_timer_armed(&it[i].timer));
    }
    check_heap(cur);
    assert_int_equal(sched_next_due(cur), 10);
    assert_int_equal(sched_run(cur, 9), 0);
    assert_int_equal(sched_run(cur, 35), 3); /* due <= now, inclusive */
    assert_int_equal(nfired, 3);
    assert_int_equal(fired[0], 1);
    assert_int_equal(fired[1], 3);
    assert_int_equal(fired[2], 5);
    assert_int_equal(sched_next_due(cur), 40);
    assert_int_equal(sched_run(cur, 40), 1);
    assert_int_equal(fired[3], 2);
    assert_int_equal(sched_run(cur, 1000), 2);
    assert_int_equal(fired[4], 0);
    assert_int_equal(fired[5], 4);
    assert_true(sched_next_due(cur) == UINT64_MAX);
    for (int i = 0; i < 6; i++)
        assert_false(sched_timer_armed(&it[i].timer));
}

static void test_ties_fire_in_arming_order(void **state)
{
    (void)state;
    struct item it[20];
    items_init(it, 20);
    /* arm in a scrambled id order, all at the same time */
    int order[20];
    for (int i = 0; i < 20; i++)
        order[i] = (i * 7) % 20;
    for (int i = 0; i < 20; i++)
        sched_arm(cur, &it[order[i]].timer, 100);
    /* re-arming counts as arming anew: order[0] moves to the end */
    sched_arm(cur, &it[order[0]].timer, 100);
    check_heap(cur);
    assert_int_equal(sched_run(cur, 100), 20);
    for (int i = 0; i < 19; i++)
        assert_int_equal(fired[i], order[i + 1]);
    assert_int_equal(fired[19], order[0]);
}

static void test_disarm_from_middle(void **state)
{
    (void)state;
    enum { N = 200 };
    static struct item it[N];
    items_init(it, N);
    for (int i = 0; i < N; i++)
        sched_arm(cur, &it[i].timer, (uint64_t)((i * 37) % N));
    for (int i = 0; i < N; i += 3) {
        sched_disarm(cur, &it[i].timer);
        assert_false(sched_timer_armed(&it[i].timer));
        check_heap(cur);
    }
    /* disarm the last heap slot and the root too */
    struct item *last = item_of(cur->heap[cur->len - 1]);
    sched_disarm(cur, &last->timer);
    struct item *root = item_of(cur->heap[0]);
    sched_disarm(cur, &root->timer);
    check_heap(cur);
    size_t left = cur->len;
    assert_int_equal(sched_run(cur, N), left);
    for (size_t k = 0; k < nfired; k++) {
        assert_true(fired[k] % 3 != 0);
        assert_true(fired[k] != last->id && fired[k] != root->id);
        if (k > 0)
            assert_true(fired_due[k - 1] <= fired_due[k]);
    }
}

static void test_rearm(void **state)
{
    (void)state;
    struct item it[4];
    items_init(it, 4);
    sched_arm(cur, &it[0].timer, 10);
    sched_arm(cur, &it[1].timer, 20);
    sched_arm(cur, &it[2].timer, 30);
    sched_arm(cur, &it[3].timer, 40);
    sched_arm(cur, &it[0].timer, 35); /* later */
    sched_arm(cur, &it[3].timer, 5);  /* earlier */
    sched_arm(cur, &it[2].timer, 20); /* tie with 1, armed after it */
    check_heap(cur);
    assert_int_equal(cur->len, 4);
    assert_int_equal(sched_next_due(cur), 5);
    assert_int_equal(sched_run(cur, 100), 4);
    int want[4] = {3, 1, 2, 0};
    for (int i = 0; i < 4; i++)
        assert_int_equal(fired[i], want[i]);
}

/* A timer that re-arms itself into the past or "now" does not fire twice in
 * one run, so a run always ends; the next run picks it up, in order. */
static void test_callback_rearms_itself(void **state)
{
    (void)state;
    struct item it[3];
    items_init(it, 3);
    it[0].rearm_step = 10; /* periodic: 10, 20, 30, ... */
    it[0].rearms_left = 5;
    sched_arm(cur, &it[0].timer, 10);
    sched_arm(cur, &it[1].timer, 25);
    sched_arm(cur, &it[2].timer, 1000);

    assert_int_equal(sched_run(cur, 100), 1); /* 10 fires, re-arms at 20: new, stop */
    assert_true(sched_timer_armed(&it[0].timer));
    assert_int_equal(sched_next_due(cur), 20);
    assert_int_equal(sched_run(cur, 100), 2); /* 20 (re-arms at 30), then 25 (old) */
    assert_int_equal(fired[1], 0);
    assert_int_equal(fired[2], 1);
    assert_int_equal(sched_run(cur, 100), 1); /* 30, re-armed at 40 */
    assert_int_equal(fired[3], 0);
    while (sched_next_due(cur) <= 100)
        sched_run(cur, 100);
    assert_int_equal(nfired, 7); /* 10..60 is six firings of 0, one of 1 */
    uint64_t want_due[7] = {10, 20, 25, 30, 40, 50, 60};
    for (int i = 0; i < 7; i++)
        assert_int_equal(fired_due[i], want_due[i]);
    assert_false(sched_timer_armed(&it[0].timer));
    assert_int_equal(sched_next_due(cur), 1000);

    /* a callback re-arming itself at its own due time: one firing per run */
    it[1].rearm_step = 0;
    nfired = 0;
    sched_arm(cur, &it[1].timer, 500);
    it[1].rearm_other = &it[1];
    it[1].rearm_other_due = 500;
    for (int i = 1; i <= 3; i++) {
        assert_int_equal(sched_run(cur, 600), 1);
        assert_int_equal(nfired, (size_t)i);
        assert_true(sched_timer_armed(&it[1].timer));
    }
    sched_disarm(cur, &it[1].timer);
    check_heap(cur);
}

/* A callback may disarm or move another timer that is due in the same run. */
static void test_callback_touches_due_timers(void **state)
{
    (void)state;
    struct item it[5];
    items_init(it, 5);
    for (int i = 0; i < 5; i++)
        sched_arm(cur, &it[i].timer, (uint64_t)(10 + i));
    it[0].disarm_other = &it[2]; /* cancel a due one */
    it[1].rearm_other = &it[3];  /* push a due one past now */
    it[1].rearm_other_due = 500;
    assert_int_equal(sched_run(cur, 100), 2 + 1); /* 0, 1, 4 */
    assert_int_equal(fired[0], 0);
    assert_int_equal(fired[1], 1);
    assert_int_equal(fired[2], 4);
    assert_false(sched_timer_armed(&it[2].timer));
    assert_true(sched_timer_armed(&it[3].timer));
    assert_int_equal(sched_next_due(cur), 500);
    check_heap(cur);

    /* a callback arming a fresh timer that is already due: it waits for the
     * next run. Behind older due timers, it ends the run when it reaches the
     * top; ahead of them, at once. Either way the overall order is (due, seq). */
    for (int variant = 0; variant < 2; variant++) {
        nfired = 0;
        sched_close(cur);
        sched_init(cur);
        items_init(it, 5);
        sched_arm(cur, &it[0].timer, 10);
        sched_arm(cur, &it[1].timer, 20);
        sched_arm(cur, &it[2].timer, 30);
        it[0].rearm_other = &it[3];
        it[0].rearm_other_due = variant == 0 ? 25 : 15;
        if (variant == 0) {
            assert_int_equal(sched_run(cur, 100), 2); /* 0, 1; then 3 is on top */
            assert_int_equal(sched_run(cur, 100), 2); /* 3, 2 */
        } else {
            assert_int_equal(sched_run(cur, 100), 1); /* 0; 3 is on top at once */
            assert_int_equal(sched_run(cur, 100), 3); /* 3, 1, 2 */
        }
        assert_int_equal(sched_run(cur, 100), 0);
        int want0[4] = {0, 1, 3, 2};
        int want1[4] = {0, 3, 1, 2};
        assert_int_equal(nfired, 4);
        for (int i = 0; i < 4; i++)
            assert_int_equal(fired[i], variant == 0 ? want0[i] : want1[i]);
    }
}

static void test_close_disarms(void **state)
{
    (void)state;
    struct item it[40];
    items_init(it, 40);
    for (int i = 0; i < 40; i++)
        sched_arm(cur, &it[i].timer, (uint64_t)i);
    sched_close(cur);
    for (int i = 0; i < 40; i++)
        assert_false(sched_timer_armed(&it[i].timer));
    assert_int_equal(cur->len, 0);
    sched_init(cur); /* teardown closes it again */
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ULL;

static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

struct ref {
    int armed;
    uint64_t due, seq;
};

static int cmp_ref(const void *a, const void *b)
{
    const struct ref *x = a, *y = b;
    if (x->due != y->due)
        return x->due < y->due ? -1 : 1;
    return x->seq < y->seq ? -1 : (x->seq > y->seq);
}

/* Random arms, re-arms and disarms, then runs; the fired order must be the
 * reference's armed timers sorted by (due, arming order). */
static void test_random_against_reference(void **state)
{
    (void)state;
    enum { N = 2000, ROUNDS = 30, OPS = 3000 };
    static struct item it[N];
    static struct ref ref[N];
    static struct ref want[N];
    static int want_id[N];
    items_init(it, N);
    memset(ref, 0, sizeof ref);
    uint64_t seq = 0;
    uint64_t now = 0;
    for (int round = 0; round < ROUNDS; round++) {
        for (int op = 0; op < OPS; op++) {
            int i = (int)(rng() % N);
            if (rng() % 4 == 0) {
                sched_disarm(cur, &it[i].timer);
                ref[i].armed = 0;
            } else {
                /* small range so ties are common */
                uint64_t due = now + rng() % 500;
                sched_arm(cur, &it[i].timer, due);
                ref[i].armed = 1;
                ref[i].due = due;
                ref[i].seq = seq++;
            }
        }
        check_heap(cur);
        now += 1 + rng() % 300;
        size_t nwant = 0;
        for (int i = 0; i < N; i++) {
            if (ref[i].armed && ref[i].due <= now) {
                want[nwant] = ref[i];
                want[nwant].armed = i; /* carry the id through the sort */
                nwant++;
            }
        }
        qsort(want, nwant, sizeof *want, cmp_ref);
        for (size_t k = 0; k < nwant; k++)
            want_id[k] = want[k].armed;
        nfired = 0;
        assert_int_equal(sched_run(cur, now), nwant);
        assert_int_equal(nfired, nwant);
        for (size_t k = 0; k < nwant; k++) {
            assert_int_equal(fired[k], want_id[k]);
            ref[want_id[k]].armed = 0;
        }
        size_t armed = 0;
        for (int i = 0; i < N; i++) {
            assert_int_equal(sched_timer_armed(&it[i].timer), ref[i].armed);
            armed += (size_t)ref[i].armed;
        }
        assert_int_equal(cur->len, armed);
        check_heap(cur);
    }
}

/* Random callbacks that arm and disarm other timers (some into the past)
 * while the run goes on: every firing must be the earliest armed timer, due,
 * and armed before the run; a run must stop only when the earliest armed
 * timer is not due or was armed during the run. */
enum { RN = 300 };
static struct item rit[RN];
static struct ref rref[RN];
static uint64_t rnow, rfirst_new;

/* The armed reference timer with the smallest (due, seq), or -1. */
static int ref_min(void)
{
    int best = -1;
    for (int i = 0; i < RN; i++) {
        if (!rref[i].armed)
            continue;
        if (best < 0 || cmp_ref(&rref[i], &rref[best]) < 0)
            best = i;
    }
    return best;
}

static void random_op(void)
{
    int j = (int)(rng() % RN);
    if (rng() % 3 == 0) {
        sched_disarm(cur, &rit[j].timer);
        rref[j].armed = 0;
        return;
    }
    uint64_t due = rnow + rng() % 200 - 100; /* rnow >= 100: past or future */
    sched_arm(cur, &rit[j].timer, due);
    rref[j].armed = 1;
    rref[j].due = due;
    rref[j].seq = rit[j].timer.seq;
}

static void on_fire_random(struct sched_timer *t)
{
    int id = item_of(t)->id;
    assert_int_equal(ref_min(), id);
    assert_true(t->due <= rnow);
    assert_true(t->seq < rfirst_new);
    rref[id].armed = 0;
    nfired++;
    int ops = (int)(rng() % 3);
    for (int k = 0; k < ops; k++)
        random_op();
}

static void test_random_callbacks(void **state)
{
    (void)state;
    memset(rref, 0, sizeof rref);
    for (int i = 0; i < RN; i++) {
        rit[i].id = i;
        sched_timer_init(&rit[i].timer, on_fire_random);
    }
    rnow = 1000;
    for (int round = 0; round < 2000; round++) {
        for (int k = 0; k < 20; k++)
            random_op();
        rnow += rng() % 50;
        rfirst_new = cur->next_seq;
        nfired = 0;
        size_t ran = sched_run(cur, rnow);
        assert_int_equal(ran, nfired);
        int m = ref_min();
        if (m >= 0)
            assert_true(rref[m].due > rnow || rref[m].seq >= rfirst_new);
        check_heap(cur);
        for (int i = 0; i < RN; i++)
            assert_int_equal(sched_timer_armed(&rit[i].timer), rref[i].armed);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_empty, setup, teardown),
        cmocka_unit_test_setup_teardown(test_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ties_fire_in_arming_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_disarm_from_middle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rearm, setup, teardown),
        cmocka_unit_test_setup_teardown(test_callback_rearms_itself, setup, teardown),
        cmocka_unit_test_setup_teardown(test_callback_touches_due_timers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_disarms, setup, teardown),
        cmocka_unit_test_setup_teardown(test_random_against_reference, setup, teardown),
        cmocka_unit_test_setup_teardown(test_random_callbacks, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
