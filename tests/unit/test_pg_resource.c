/* test_pg_resource.c - the names of prepared transactions on PostgreSQL
 * resources, and refusing bad resource definitions. (Talking to PostgreSQL is
 * covered by tests/integration/test_pg2pc.py against a real server.) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "common/err.h"
#include "transport/pg_resource.h"

static void test_xact_name(void **state)
{
    (void)state;
    char out[256];
    assert_int_equal(pg_resource_xact_name("order-7", "debit", out, sizeof out), 0);
    assert_string_equal(out, "dtx:order-7:debit");
    assert_int_equal(pg_resource_xact_name("a:b", "c", out, sizeof out), 0);
    assert_string_equal(out, "dtx:a:b:c");
    /* characters that could leave a quoted literal, or none at all */
    assert_int_equal(pg_resource_xact_name("x'y", "b", out, sizeof out), DTX_EINVAL);
    assert_int_equal(pg_resource_xact_name("x", "b'; drop", out, sizeof out), DTX_EINVAL);
    assert_int_equal(pg_resource_xact_name("", "b", out, sizeof out), DTX_EINVAL);
    assert_int_equal(pg_resource_xact_name("g", "", out, sizeof out), DTX_EINVAL);
    /* a branch with ':' could not be split back */
    assert_int_equal(pg_resource_xact_name("g", "a:b", out, sizeof out), DTX_EINVAL);
    /* PostgreSQL's 200-byte limit, and the caller's buffer */
    char gid[200];
    memset(gid, 'g', 128);
    gid[128] = '\0';
    char br[65];
    memset(br, 'b', 64);
    br[64] = '\0';
    assert_int_equal(pg_resource_xact_name(gid, br, out, sizeof out), 0);
    assert_int_equal(strlen(out), 4 + 128 + 1 + 64);
    memset(gid, 'g', 190);
    gid[190] = '\0';
    assert_int_equal(pg_resource_xact_name(gid, "b", out, sizeof out), 0);
    memset(gid, 'g', 196);
    gid[196] = '\0';
    assert_int_equal(pg_resource_xact_name(gid, "b", out, sizeof out), DTX_EINVAL);
    assert_int_equal(pg_resource_xact_name("g", "b", out, 7), DTX_EINVAL); /* 7 bytes + NUL */
}

static void test_parse_xact_name(void **state)
{
    (void)state;
    char gid[130], br[70];
    assert_int_equal(
        pg_resource_parse_xact_name("dtx:order-7:debit", gid, sizeof gid, br, sizeof br), 0);
    assert_string_equal(gid, "order-7");
    assert_string_equal(br, "debit");
    assert_int_equal(pg_resource_parse_xact_name("dtx:a:b:c", gid, sizeof gid, br, sizeof br), 0);
    assert_string_equal(gid, "a:b");
    assert_string_equal(br, "c");
    const char *bad[] = {"dtx:", "dtx:g", "dtx:g:", "dtx::b", "xtd:g:b", "dtx:g h:b", "dtx:g:b'"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(pg_resource_parse_xact_name(bad[i], gid, sizeof gid, br, sizeof br),
                         DTX_EINVAL);
    /* too long for the caller's buffers */
    assert_int_equal(pg_resource_parse_xact_name("dtx:gggg:b", gid, 4, br, sizeof br), DTX_EINVAL);
    assert_int_equal(pg_resource_parse_xact_name("dtx:g:bbbb", gid, sizeof gid, br, 4), DTX_EINVAL);
}

static void test_bad_definitions(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    char err[256];
    struct pg_resource_def bad_name[] = {{"a b", "dbname=x"}};
    struct pg_resource_def twice[] = {{"a", "dbname=x"}, {"a", "dbname=y"}};
    struct pg_resource_def bad_conninfo[] = {{"a", "dbname=x nosuchkeyword=1"}};
    struct {
        struct pg_resource_def *defs;
        size_t n;
        const char *want;
    } cases[] = {
        {bad_name, 1, "resource name"},
        {twice, 2, "defined twice"},
        {bad_conninfo, 1, "resource a:"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct pg_resources_config cfg = {.defs = cases[i].defs, .n = cases[i].n, .connections = 1};
        err[0] = '\0';
        assert_null(pg_resources_new(&loop, &cfg, err, sizeof err));
        assert_non_null(strstr(err, cases[i].want));
    }
    /* a password is never part of what is said about a resource */
    struct pg_resource_def good[] = {{"bank", "host=/nowhere dbname=x password=secret123"}};
    struct pg_resources_config cfg = {.defs = good, .n = 1, .connections = 2};
    struct transport *t = pg_resources_new(&loop, &cfg, err, sizeof err);
    assert_non_null(t);
    assert_true(pg_resources_has(t, "bank"));
    assert_false(pg_resources_has(t, "other"));
    t->ops->free(t);
    uv_run(&loop, UV_RUN_DEFAULT); /* the closes free it */
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_xact_name),
        cmocka_unit_test(test_parse_xact_name),
        cmocka_unit_test(test_bad_definitions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
