/*
 * test_client_live.c - libdtx's client against a real dtxd: every call of
 * the client side of include/dtx.h, for each mode, and the errors the
 * coordinator answers as the caller sees them (code, HTTP status, error
 * code and field).
 *
 * It needs a coordinator and a participant service, so it runs from the
 * integration suite (tests/integration/test_dtxctl.py), which starts both
 * and sets
 *   DTX_TEST_URL          the coordinator, http://host:port
 *   DTX_TEST_PARTICIPANT  a participant answering 200 on every path except
 *                         /fail/try and /fail/action (409) and /slow/action
 *                         (200 after a second)
 * Without them (plain `make test-unit`) every test is skipped.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dtx.h"

static const char *coordinator, *participant;
static char run_prefix[48];
static unsigned gid_seq;

/* A gid of this run: prefix-seq-what. */
static void new_gid(char *out, size_t cap, const char *what)
{
    snprintf(out, cap, "%s-%u-%s", run_prefix, gid_seq++, what);
}

/* participant + path, in one of a few rotating buffers. */
static const char *P(const char *path)
{
    static char bufs[8][256];
    static unsigned next;
    char *b = bufs[next++ % 8];

    snprintf(b, sizeof bufs[0], "%s%s", participant, path);
    return b;
}

static int setup(void **state)
{
    struct dtx_client *c = NULL;

    if (coordinator == NULL || participant == NULL) {
        *state = NULL;
        return 0;
    }
    if (dtx_client_new(coordinator, &c) != DTX_OK)
        return -1;
    *state = c;
    return 0;
}

static int teardown(void **state)
{
    dtx_client_free(*state);
    return 0;
}

static struct dtx_client *client(void **state)
{
    if (*state == NULL)
        skip();
    return *state;
}

static void assert_refused(struct dtx_client *c, int rc, int want_rc, int status, const char *code,
                           const char *field)
{
    const struct dtx_error *e = dtx_client_last_error(c);

    assert_int_equal(rc, want_rc);
    assert_int_equal(e->code, want_rc);
    assert_int_equal(e->http_status, status);
    assert_string_equal(e->api_code, code);
    if (field != NULL)
        assert_string_equal(e->field, field);
    assert_true(strlen(e->message) > 0);
}

static struct dtx_spec *fast(struct dtx_spec *s, const char *gid)
{
    assert_int_equal(dtx_spec_set_gid(s, gid), DTX_OK);
    assert_int_equal(dtx_spec_set_retry(s, 20, 200, 10), DTX_OK);
    return s;
}

/* ---- saga -------------------------------------------------------------------- */

static void saga_create_get_list_wait(void **state)
{
    struct dtx_client *c = client(state);
    struct dtx_spec *s = NULL;
    struct dtx_txn *t = NULL, *again = NULL;
    struct dtx_txn_list *l = NULL;
    struct dtx_list_opts o = {.type = "saga", .limit = 1};
    char gid[96];

    new_gid(gid, sizeof gid, "saga");
    assert_int_equal(dtx_saga_new(&s), DTX_OK);
    fast(s, gid);
    assert_int_equal(dtx_saga_add_step(s, P("/a"), P("/a-undo"), "{\"n\":1}"), DTX_OK);
    assert_int_equal(dtx_saga_add_step(s, P("/b"), P("/b-undo"), NULL), DTX_OK);
    assert_int_equal(dtx_spec_set_wait(s, 10000), DTX_OK);
    assert_int_equal(dtx_create(c, s, &t), DTX_OK);
    assert_int_equal(dtx_client_last_error(c)->code, 0);
    assert_int_equal(t->http_status, 201);
    assert_string_equal(t->gid, gid);
    assert_string_equal(t->type, "saga");
    assert_string_equal(t->status, "succeeded");
    assert_true(dtx_txn_is_final(t));
    assert_non_null(t->finished_at);
    assert_int_equal(t->retry_initial_interval_ms, 20);
    assert_int_equal(t->n_branches, 2);
    assert_string_equal(t->branches[0].payload, "{\"n\":1}");
    assert_string_equal(t->branches[0].ops[0].op, "action");
    assert_int_equal(t->branches[0].ops[0].attempts, 1);
    assert_non_null(strstr(t->json, gid));
    dtx_txn_free(t);

    /* the same body again: the same transaction, 200 */
    assert_int_equal(dtx_create(c, s, &again), DTX_OK);
    assert_int_equal(again->http_status, 200);
    dtx_txn_free(again);
    assert_int_equal(dtx_create(c, s, NULL), DTX_OK);

    assert_int_equal(dtx_get(c, gid, &t), DTX_OK);
    assert_string_equal(t->status, "succeeded");
    assert_int_equal(t->http_status, 200);
    dtx_txn_free(t);
    assert_int_equal(dtx_wait(c, gid, 0, &t), DTX_OK);
    dtx_txn_free(t);

    assert_int_equal(dtx_list(c, &o, &l), DTX_OK);
    assert_int_equal(l->n, 1);
    assert_string_equal(l->items[0].type, "saga");
    assert_int_equal(l->items[0].branch_count >= 1, 1);
    dtx_txn_list_free(l);
    assert_int_equal(dtx_list(c, NULL, &l), DTX_OK);
    assert_true(l->n >= 1);
    dtx_txn_list_free(l);
    dtx_spec_free(s);
}

static void saga_failure_and_refusals(void **state)
{
    struct dtx_client *c = client(state);
    struct dtx_spec *s = NULL, *other = NULL;
    struct dtx_txn *t = NULL;
    struct dtx_txn_list *l = NULL;
    struct dtx_list_opts bad = {.status = "bogus"};
    char gid[96], br[DTX_BRANCH_MAX + 1];

    new_gid(gid, sizeof gid, "fail");
    assert_int_equal(dtx_saga_new(&s), DTX_OK);
    fast(s, gid);
    assert_int_equal(dtx_saga_add_step(s, P("/fail/action"), P("/fail/undo"), NULL), DTX_OK);
    assert_int_equal(dtx_create(c, s, NULL), DTX_OK);
    assert_int_equal(dtx_wait(c, gid, 10000, &t), DTX_OK);
    assert_string_equal(t->status, "failed");
    assert_non_null(t->branches[0].last_error);
    dtx_txn_free(t);
    t = NULL;

    /* finished: nothing to retry; aborting it again is harmless */
    assert_refused(c, dtx_retry(c, gid, &t), DTX_ECONFLICT, 409, "invalid_state", NULL);
    assert_null(t);
    assert_int_equal(dtx_abort(c, gid, 0, &t), DTX_OK);
    assert_string_equal(t->status, "failed");
    dtx_txn_free(t);
    t = NULL;
    /* a saga takes no branches */
    assert_refused(c, dtx_register_tcc(c, gid, NULL, P("/c"), P("/x"), NULL, br), DTX_ECONFLICT,
                   409, "invalid_state", NULL);

    /* same gid, another body */
    assert_int_equal(dtx_saga_new(&other), DTX_OK);
    fast(other, gid);
    assert_int_equal(dtx_saga_add_step(other, P("/other"), P("/other-undo"), NULL), DTX_OK);
    assert_refused(c, dtx_create(c, other, &t), DTX_ECONFLICT, 409, "gid_conflict", "gid");
    assert_null(t);

    assert_refused(c, dtx_create_json(c, "{\"type\":\"saga\"}", &t), DTX_EAPI, 400, "missing_field",
                   "steps");
    assert_refused(c, dtx_get(c, "no-such-gid", &t), DTX_ENOTFOUND, 404, "not_found", "gid");
    assert_refused(c, dtx_submit(c, "no-such-gid", 0, &t), DTX_ENOTFOUND, 404, "not_found", NULL);
    assert_refused(c, dtx_list(c, &bad, &l), DTX_EAPI, 400, "invalid_value", "status");
    assert_null(l);
    dtx_spec_free(other);
    dtx_spec_free(s);
}

static void wait_times_out_then_finishes(void **state)
{
    struct dtx_client *c = client(state);
    struct dtx_spec *s = NULL;
    struct dtx_txn *t = NULL;
    char gid[96];

    new_gid(gid, sizeof gid, "slow");
    assert_int_equal(dtx_saga_new(&s), DTX_OK);
    fast(s, gid);
    assert_int_equal(dtx_saga_add_step(s, P("/slow/action"), P("/slow/undo"), NULL), DTX_OK);
    assert_int_equal(dtx_create(c, s, NULL), DTX_OK);
    assert_int_equal(dtx_wait(c, gid, 100, &t), DTX_ETIMEDOUT);
    assert_int_equal(dtx_client_last_error(c)->code, DTX_ETIMEDOUT);
    assert_null(t);
    assert_int_equal(dtx_wait(c, gid, 10000, &t), DTX_OK);
    assert_string_equal(t->status, "succeeded");
    dtx_txn_free(t);
    dtx_spec_free(s);
}

/* ---- tcc ---------------------------------------------------------------------- */

static void tcc_register_try_submit(void **state)
{
    struct dtx_client *c = client(state);
    struct dtx_spec *s = NULL;
    struct dtx_txn *t = NULL;
    enum dtx_try_result r;
    char gid[96], b1[DTX_BRANCH_MAX + 1], b2[DTX_BRANCH_MAX + 1];

    new_gid(gid, sizeof gid, "tcc");
    assert_int_equal(dtx_tcc_new(&s), DTX_OK);
    fast(s, gid);
    assert_int_equal(dtx_create(c, s, &t), DTX_OK);
    assert_int_equal(t->http_status, 201);
    assert_string_equal(t->type, "tcc");
    assert_string_equal(t->status, "prepared");
    assert_int_equal(t->n_branches, 0);
    dtx_txn_free(t);

    assert_int_equal(
        dtx_register_tcc(c, gid, NULL, P("/stock/confirm"), P("/stock/cancel"), "{\"q\":2}", b1),
        DTX_OK);
    assert_string_equal(b1, "1");
    assert_int_equal(dtx_tcc_try(c, P("/stock/try"), gid, b1, "{\"q\":2}", &r), DTX_OK);
    assert_int_equal(r, DTX_TRY_SUCCEEDED);
    assert_int_equal(
        dtx_register_tcc(c, gid, "pay:1", P("/pay/confirm"), P("/pay/cancel"), NULL, b2), DTX_OK);
    assert_string_equal(b2, "pay:1");
    /* the same registration again is harmless; another body under that id is not */
    assert_int_equal(
        dtx_register_tcc(c, gid, "pay:1", P("/pay/confirm"), P("/pay/cancel"), NULL, b2), DTX_OK);
    assert_refused(
        c, dtx_register_tcc(c, gid, "pay:1", P("/pay/confirm2"), P("/pay/cancel"), NULL, NULL),
        DTX_ECONFLICT, 409, "branch_conflict", "branch");
    assert_int_equal(dtx_tcc_try(c, P("/pay/try"), gid, b2, NULL, &r), DTX_OK);
    assert_int_equal(r, DTX_TRY_SUCCEEDED);

    assert_int_equal(dtx_get(c, gid, &t), DTX_OK);
    assert_int_equal(t->n_branches, 2);
    assert_string_equal(t->branches[1].id, "pay:1");
    assert_int_equal(t->branches[0].n_ops, 2);
    assert_string_equal(t->branches[0].ops[0].op, "confirm");
    assert_string_equal(t->branches[0].ops[1].op, "cancel");
    assert_string_equal(t->branches[0].payload, "{\"q\":2}");
    dtx_txn_free(t);

    assert_int_equal(dtx_submit(c, gid, 10000, &t), DTX_OK);
    assert_string_equal(t->status, "succeeded");
    assert_int_equal(t->branches[0].ops[0].attempts, 1);
    assert_int_equal(t->branches[1].ops[0].attempts, 1);
    assert_int_equal(t->branches[0].ops[1].attempts, 0);
    dtx_txn_free(t);
    /* submitting again answers as it is; abort and register are refused */
    assert_int_equal(dtx_submit(c, gid, 0, &t), DTX_OK);
    dtx_txn_free(t);
    assert_refused(c, dtx_abort(c, gid, 0, NULL), DTX_ECONFLICT, 409, "invalid_state", NULL);
    assert_refused(c, dtx_register_tcc(c, gid, NULL, P("/c"), P("/x"), NULL, b1), DTX_ECONFLICT,
                   409, "invalid_state", NULL);
    dtx_spec_free(s);
}

static void tcc_try_fails_then_abort(void **state)
{
    struct dtx_client *c = client(state);
    struct dtx_spec *s = NULL;
    struct dtx_txn *t = NULL;
    enum dtx_try_result r;
    char gid[96], b[DTX_BRANCH_MAX + 1];

    new_gid(gid, sizeof gid, "tccf");
    assert_int_equal(dtx_tcc_new(&s), DTX_OK);
    fast(s, gid);
    assert_int_equal(dtx_create(c, s, NULL), DTX_OK);
    assert_int_equal(dtx_register_tcc(c, gid, NULL, P("/f/confirm"), P("/f/cancel"), NULL, b),
                     DTX_OK);
    assert_int_equal(dtx_tcc_try(c, P("/fail/try"), gid, b, NULL, &r), DTX_OK);
    assert_int_equal(r, DTX_TRY_FAILED);
    assert_int_equal(dtx_client_last_error(c)->http_status, 409);
    assert_int_equal(dtx_abort(c, gid, 10000, &t), DTX_OK);
    assert_string_equal(t->status, "failed");
    assert_int_equal(t->branches[0].ops[1].attempts, 1); /* cancel */
    assert_int_equal(t->branches[0].ops[0].attempts, 0); /* confirm */
    dtx_txn_free(t);
    assert_refused(c, dtx_submit(c, gid, 0, NULL), DTX_ECONFLICT, 409, "invalid_state", NULL);
    dtx_spec_free(s);
}

/* ---- 2pc and msg -------------------------------------------------------------- */

static void xa_register_submit(void **state)
{
    struct dtx_client *c = client(state);
    struct dtx_spec *s = NULL;
    struct dtx_txn *t = NULL;
    char gid[96], b[DTX_BRANCH_MAX + 1];

    new_gid(gid, sizeof gid, "2pc");
    assert_int_equal(dtx_2pc_new(&s), DTX_OK);
    fast(s, gid);
    assert_int_equal(dtx_spec_set_request_timeout(s, 5000), DTX_OK);
    assert_int_equal(dtx_create(c, s, &t), DTX_OK);
    assert_string_equal(t->type, "2pc");
    assert_string_equal(t->status, "prepared");
    assert_int_equal(t->request_timeout_ms, 5000);
    dtx_txn_free(t);
    assert_int_equal(dtx_register_2pc(c, gid, "db1", P("/db1/prepare"), P("/db1/commit"),
                                      P("/db1/rollback"), "{\"sql\":1}", b),
                     DTX_OK);
    assert_string_equal(b, "db1");
    assert_int_equal(dtx_register_2pc(c, gid, NULL, P("/db2/prepare"), P("/db2/commit"),
                                      P("/db2/rollback"), NULL, b),
                     DTX_OK);
    assert_true(strlen(b) > 0);
    assert_int_equal(dtx_submit(c, gid, 10000, &t), DTX_OK);
    assert_string_equal(t->status, "succeeded");
    assert_int_equal(t->n_branches, 2);
    assert_int_equal(t->branches[0].n_ops, 3);
    assert_string_equal(t->branches[0].ops[0].op, "prepare");
    assert_string_equal(t->branches[0].ops[1].op, "commit");
    assert_string_equal(t->branches[0].ops[2].op, "rollback");
    assert_int_equal(t->branches[0].ops[0].attempts, 1);
    assert_int_equal(t->branches[0].ops[1].attempts, 1);
    assert_int_equal(t->branches[0].ops[2].attempts, 0);
    dtx_txn_free(t);
    dtx_spec_free(s);
}

static void msg_submit_and_abort(void **state)
{
    struct dtx_client *c = client(state);
    struct dtx_spec *s = NULL, *s2 = NULL;
    struct dtx_txn *t = NULL;
    char gid[96], gid2[96];

    new_gid(gid, sizeof gid, "msg");
    assert_int_equal(dtx_msg_new(P("/check"), &s), DTX_OK);
    fast(s, gid);
    assert_int_equal(dtx_spec_set_timeout(s, 600000), DTX_OK);
    assert_int_equal(dtx_msg_add_step(s, P("/deliver/1"), "{\"n\":1}"), DTX_OK);
    assert_int_equal(dtx_msg_add_step(s, P("/deliver/2"), NULL), DTX_OK);
    assert_int_equal(dtx_create(c, s, &t), DTX_OK);
    assert_string_equal(t->type, "msg");
    assert_string_equal(t->status, "prepared");
    assert_string_equal(t->check, P("/check"));
    assert_int_equal(t->n_branches, 2);
    dtx_txn_free(t);
    assert_int_equal(dtx_submit(c, gid, 10000, &t), DTX_OK);
    assert_string_equal(t->status, "succeeded");
    assert_string_equal(t->branches[1].status, "succeeded");
    assert_int_equal(t->branches[1].ops[0].attempts, 1);
    dtx_txn_free(t);

    new_gid(gid2, sizeof gid2, "msga");
    assert_int_equal(dtx_msg_new(P("/check"), &s2), DTX_OK);
    fast(s2, gid2);
    assert_int_equal(dtx_spec_set_timeout(s2, 600000), DTX_OK);
    assert_int_equal(dtx_msg_add_step(s2, P("/deliver/x"), NULL), DTX_OK);
    assert_int_equal(dtx_create(c, s2, NULL), DTX_OK);
    assert_int_equal(dtx_abort(c, gid2, 0, &t), DTX_OK);
    assert_string_equal(t->status, "failed");
    assert_int_equal(t->branches[0].ops[0].attempts, 0);
    dtx_txn_free(t);
    assert_refused(c, dtx_submit(c, gid2, 0, NULL), DTX_ECONFLICT, 409, "invalid_state", NULL);
    dtx_spec_free(s2);
    dtx_spec_free(s);
}

/* ---- a batch ------------------------------------------------------------------- */

/* Three msgs created submitted and a saga in one request, plus an item
 * refused alone (a gid reused with another body) and one that asks to wait;
 * the accepted ones run to their end. */
static void batch_create(void **state)
{
    struct dtx_client *c = client(state);
    struct dtx_spec *specs[6] = {0};
    struct dtx_batch *b = NULL;
    struct dtx_txn *t = NULL;
    char gids[6][96];

    for (int i = 0; i < 3; i++) {
        new_gid(gids[i], sizeof gids[i], "bmsg");
        assert_int_equal(dtx_msg_new(P("/check"), &specs[i]), DTX_OK);
        fast(specs[i], gids[i]);
        assert_int_equal(dtx_msg_add_step(specs[i], P("/deliver/b"), "{\"n\":1}"), DTX_OK);
        assert_int_equal(dtx_spec_set_submit(specs[i]), DTX_OK);
    }
    new_gid(gids[3], sizeof gids[3], "bsaga");
    assert_int_equal(dtx_saga_new(&specs[3]), DTX_OK);
    fast(specs[3], gids[3]);
    assert_int_equal(dtx_saga_add_step(specs[3], P("/a"), P("/a-undo"), NULL), DTX_OK);
    /* the first msg's gid again, with another step: a conflict */
    assert_int_equal(dtx_msg_new(P("/check"), &specs[4]), DTX_OK);
    fast(specs[4], gids[0]);
    assert_int_equal(dtx_msg_add_step(specs[4], P("/deliver/other"), NULL), DTX_OK);
    new_gid(gids[5], sizeof gids[5], "bwait");
    assert_int_equal(dtx_saga_new(&specs[5]), DTX_OK);
    fast(specs[5], gids[5]);
    assert_int_equal(dtx_saga_add_step(specs[5], P("/a"), P("/a-undo"), NULL), DTX_OK);
    assert_int_equal(dtx_spec_set_wait(specs[5], 1000), DTX_OK);
    assert_int_equal(dtx_spec_set_submit(specs[3]), DTX_EINVAL); /* a saga: not a msg */

    assert_int_equal(dtx_create_batch(c, (const struct dtx_spec *const *)specs, 6, &b), DTX_OK);
    assert_int_equal(b->n, 6);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(b->items[i].status, 201);
        assert_non_null(b->items[i].txn);
        assert_string_equal(b->items[i].txn->gid, gids[i]);
        assert_string_equal(b->items[i].txn->status, "submitted");
        assert_null(b->items[i].error_code);
    }
    assert_string_equal(b->items[0].txn->type, "msg");
    assert_string_equal(b->items[3].txn->type, "saga");
    assert_int_equal(b->items[4].status, 409);
    assert_null(b->items[4].txn);
    assert_string_equal(b->items[4].error_code, "gid_conflict");
    assert_string_equal(b->items[4].error_field, "transactions[4].gid");
    assert_int_equal(b->items[5].status, 400);
    assert_string_equal(b->items[5].error_field, "transactions[5].wait");
    assert_non_null(strstr(b->json, "\"results\""));
    dtx_batch_free(b);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(dtx_wait(c, gids[i], 10000, &t), DTX_OK);
        assert_string_equal(t->status, "succeeded");
        dtx_txn_free(t);
    }
    assert_refused(c, dtx_get(c, gids[5], &t), DTX_ENOTFOUND, 404, "not_found", NULL);

    /* no specs: refused before any request */
    assert_int_equal(dtx_create_batch(c, (const struct dtx_spec *const *)specs, 0, &b), DTX_EINVAL);
    for (int i = 0; i < 6; i++)
        dtx_spec_free(specs[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(saga_create_get_list_wait),    cmocka_unit_test(saga_failure_and_refusals),
        cmocka_unit_test(wait_times_out_then_finishes), cmocka_unit_test(tcc_register_try_submit),
        cmocka_unit_test(tcc_try_fails_then_abort),     cmocka_unit_test(xa_register_submit),
        cmocka_unit_test(msg_submit_and_abort),         cmocka_unit_test(batch_create),
    };

    coordinator = getenv("DTX_TEST_URL");
    participant = getenv("DTX_TEST_PARTICIPANT");
    snprintf(run_prefix, sizeof run_prefix, "live-%ld-%ld", (long)getpid(), (long)time(NULL));
    return cmocka_run_group_tests(tests, setup, teardown);
}
