/*
 * test_backoff.c - full-jitter backoff: the delay stays in
 * [0, min(max, initial << (failures - 1))], the cap doubles until max, and
 * nothing overflows however many failures there were.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "engine/backoff.h"

static uint64_t rng_state = 0x2545F4914F6CDD1DULL;

static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* The cap the contract promises, computed the slow way. */
static uint64_t want_cap(const struct retry_policy *p, uint32_t failures)
{
    if (failures == 0)
        failures = 1;
    uint64_t cap = p->initial_ms;
    for (uint32_t i = 1; i < failures && cap < p->max_ms; i++)
        cap *= 2;
    return cap < p->max_ms ? cap : p->max_ms;
}

/* The delay for rnd = cap is cap (the bound is reachable), for cap + 1 it
 * wraps to 0, and random rnd never exceed it. */
static void check_cap(const struct retry_policy *p, uint32_t failures, uint64_t cap)
{
    assert_int_equal(backoff_delay_ms(p, failures, cap), cap);
    assert_int_equal(backoff_delay_ms(p, failures, cap + 1), 0);
    assert_int_equal(backoff_delay_ms(p, failures, 0), 0);
    assert_true(backoff_delay_ms(p, failures, UINT64_MAX) <= cap);
    for (int i = 0; i < 200; i++)
        assert_true(backoff_delay_ms(p, failures, rng()) <= cap);
}

static void test_bounds(void **state)
{
    (void)state;
    struct retry_policy p = {.initial_ms = 100, .max_ms = 30000, .limit = 10};
    for (uint32_t f = 0; f < 100; f++)
        check_cap(&p, f, want_cap(&p, f));
}

static void test_growth_doubles_until_cap(void **state)
{
    (void)state;
    struct retry_policy p = {.initial_ms = 100, .max_ms = 30000, .limit = 10};
    uint64_t caps[] = {100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000, 30000};
    for (uint32_t f = 1; f <= sizeof caps / sizeof caps[0]; f++)
        check_cap(&p, f, caps[f - 1]);
}

static void test_zero_failures_is_one(void **state)
{
    (void)state;
    struct retry_policy p = {.initial_ms = 250, .max_ms = 10000, .limit = 3};
    for (int i = 0; i < 1000; i++) {
        uint64_t r = rng();
        assert_int_equal(backoff_delay_ms(&p, 0, r), backoff_delay_ms(&p, 1, r));
    }
    check_cap(&p, 0, 250);
}

static void test_huge_failure_counts(void **state)
{
    (void)state;
    struct retry_policy p = {.initial_ms = 100, .max_ms = 30000, .limit = 10};
    uint32_t fs[] = {31, 32, 33, 63, 64, 65, 1000, UINT32_MAX - 1, UINT32_MAX};
    for (size_t i = 0; i < sizeof fs / sizeof fs[0]; i++)
        check_cap(&p, fs[i], 30000);

    /* the widest policy: a 32-bit initial shifted 31 times, then max */
    struct retry_policy w = {.initial_ms = UINT32_MAX, .max_ms = UINT32_MAX, .limit = 0};
    for (size_t i = 0; i < sizeof fs / sizeof fs[0]; i++)
        check_cap(&w, fs[i], UINT32_MAX);
    struct retry_policy one = {.initial_ms = 1, .max_ms = UINT32_MAX, .limit = 0};
    check_cap(&one, 32, (uint64_t)1 << 31);
    check_cap(&one, 33, UINT32_MAX);
    check_cap(&one, UINT32_MAX, UINT32_MAX);
}

static void test_initial_equals_max(void **state)
{
    (void)state;
    struct retry_policy p = {.initial_ms = 5000, .max_ms = 5000, .limit = 10};
    for (uint32_t f = 0; f < 70; f++)
        check_cap(&p, f, 5000);
    check_cap(&p, UINT32_MAX, 5000);
}

static void test_degenerate_policies(void **state)
{
    (void)state;
    /* never produced by request validation, but must not misbehave */
    struct retry_policy zero = {.initial_ms = 0, .max_ms = 1000, .limit = 0};
    for (uint32_t f = 0; f < 70; f++)
        check_cap(&zero, f, 0);
    check_cap(&zero, UINT32_MAX, 0);
    struct retry_policy inverted = {.initial_ms = 500, .max_ms = 100, .limit = 0};
    check_cap(&inverted, 1, 100);
    check_cap(&inverted, UINT32_MAX, 100);
}

/* rnd % (cap + 1) spreads uniform input evenly over the range. */
static void test_roughly_uniform(void **state)
{
    (void)state;
    struct retry_policy p = {.initial_ms = 9, .max_ms = 1000, .limit = 0};
    enum { DRAWS = 100000 };
    int counts[10] = {0};
    for (int i = 0; i < DRAWS; i++)
        counts[backoff_delay_ms(&p, 1, rng())]++;
    for (int v = 0; v < 10; v++) {
        assert_true(counts[v] > DRAWS / 10 * 9 / 10);
        assert_true(counts[v] < DRAWS / 10 * 11 / 10);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bounds),
        cmocka_unit_test(test_growth_doubles_until_cap),
        cmocka_unit_test(test_zero_failures_is_one),
        cmocka_unit_test(test_huge_failure_counts),
        cmocka_unit_test(test_initial_equals_max),
        cmocka_unit_test(test_degenerate_policies),
        cmocka_unit_test(test_roughly_uniform),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
