/*
 * engine.c - the transaction table, its durability plumbing, timers, replies,
 * recovery, retention and compaction.
 *
 * Shape: everything runs on the loop thread. Transactions live in a hash map
 * by gid and in an array ordered by creation sequence (for listing with a
 * cursor). Each state change is encoded (record.c) and appended to the store;
 * the store's callback, after fsync, continues the transaction's mode driver
 * (saga.c) or releases replies. All timers - retries, transaction timeouts,
 * reply deadlines - sit in one heap (sched.c) behind one uv_timer. A
 * one-second tick expires finished transactions past their retention and asks
 * the store whether to compact.
 */
#include "engine/engine.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "common/crash.h"
#include "common/fmt.h"
#include "common/err.h"
#include "common/hmap.h"
#include "common/rnd.h"
#include "common/slog.h"
#include "engine/engine_int.h"
#include "engine/record.h"

/* Reply waiting on a transaction. */
struct txn_waiter {
    struct txn_waiter *next;
    struct txn *txn;
    struct engine *e;
    engine_reply_fn fn;
    void *arg;
    int flags;          /* ENGINE_REPLY_CREATED */
    int until_finished; /* else: until durable */
    uint64_t need;      /* t->synced must reach this: the records appended before it */
    struct sched_timer deadline;
};

struct engine {
    uv_loop_t *loop;
    struct store *store;
    struct transport_router *router;
    struct engine_config cfg;
    struct hmap by_gid;
    /* creation order: seqs[i] ascending, txns[i] NULL once removed */
    uint64_t *seqs;
    struct txn **txns;
    size_t idx_len, idx_cap, idx_holes;
    uint64_t next_seq;
    struct sched sched;
    uv_timer_t sched_timer;
    uint64_t sched_armed_due; /* UINT64_MAX when the uv timer is idle */
    uv_timer_t tick;
    struct txn *fin_head, *fin_tail; /* finished, oldest first */
    struct buf scratch;
    int stopping;
    int closing;                   /* uv handles still closing in engine_free */
    struct call_ctx *calls;        /* outstanding participant calls */
    struct compaction *compaction; /* running, or NULL */
    uv_idle_t compact_idle;        /* runs compaction slices while live ones are encoded */
    int free_pending;              /* engine_free waits for the compaction */
    unsigned char rnd_pool[4096];  /* kernel randomness for generated gids */
    size_t rnd_pos;                /* next unused byte; sizeof rnd_pool = empty */
};

static const struct mode_ops *const modes[TXN_TYPE_COUNT] = {
    [TXN_SAGA] = &saga_ops,
    [TXN_TCC] = &tcc_ops,
    [TXN_2PC] = &xa_ops,
    [TXN_MSG] = &msg_ops,
};

int64_t engine_now_wall(void)
{
    return clock_wall_ms();
}

int engine_stopping(const struct engine *e)
{
    return e->stopping;
}

/* ---- timers ---------------------------------------------------------- */

static void sched_rearm(struct engine *e);

static void on_sched_timer(uv_timer_t *h)
{
    struct engine *e = h->data;
    e->sched_armed_due = UINT64_MAX;
    sched_run(&e->sched, clock_mono_ms());
    sched_rearm(e);
}

static void sched_rearm(struct engine *e)
{
    uint64_t due = sched_next_due(&e->sched);
    if (due == e->sched_armed_due)
        return;
    if (due == UINT64_MAX) {
        uv_timer_stop(&e->sched_timer);
        e->sched_armed_due = UINT64_MAX;
        return;
    }
    uint64_t now = clock_mono_ms();
    uv_timer_start(&e->sched_timer, on_sched_timer, due > now ? due - now : 0, 0);
    e->sched_armed_due = due;
}

static void arm(struct engine *e, struct sched_timer *t, uint64_t due)
{
    sched_arm(&e->sched, t, due);
    sched_rearm(e);
}

static void disarm(struct engine *e, struct sched_timer *t)
{
    if (!sched_timer_armed(t))
        return;
    sched_disarm(&e->sched, t);
    sched_rearm(e);
}

/* The engine owning a timer: every txn/branch timer is armed through an
 * engine, and there is one engine per process. */
static struct engine *the_engine;

static void on_branch_timer(struct sched_timer *st)
{
    struct branch *b = (struct branch *)((char *)st - offsetof(struct branch, timer));
    struct engine *e = the_engine;
    if (e->stopping)
        return;
    modes[b->txn->type]->retry(e, b);
}

static void on_timeout_timer(struct sched_timer *st)
{
    struct txn *t = (struct txn *)((char *)st - offsetof(struct txn, timeout_timer));
    struct engine *e = the_engine;
    if (e->stopping || txn_state_is_final(t->state))
        return;
    modes[t->type]->expire(e, t);
}

void engine_retry_in(struct engine *e, struct branch *b, uint64_t delay_ms)
{
    arm(e, &b->timer, clock_mono_ms() + delay_ms);
}

void engine_retry_cancel(struct engine *e, struct branch *b)
{
    disarm(e, &b->timer);
}

/* Prepare a txn's embedded timers (after creation or decoding). */
static void init_timers(struct txn *t)
{
    sched_timer_init(&t->timeout_timer, on_timeout_timer);
    for (uint32_t i = 0; i < t->nbranches; i++)
        sched_timer_init(&t->branches[i].timer, on_branch_timer);
}

/* A timeout further away than this (about 100 years) is armed for then. */
#define TIMEOUT_MAX_MS (100LL * 365 * 24 * 3600 * 1000)

/* Arm t's timeout, now being now_wall (wall ms) and now_mono (monotonic ms)
 * read together: recovery reads them once for every live transaction. */
static void arm_timeout_at(struct engine *e, struct txn *t, int64_t now_wall, uint64_t now_mono)
{
    if (t->timeout_ms == 0 || txn_state_is_final(t->state))
        return;
    /* saturating: a damaged log (that still passed its CRC) may hold any
     * created_at or timeout_ms; the API accepts none that would overflow */
    int64_t deadline, left;
    uint64_t tmo = t->timeout_ms > (uint64_t)INT64_MAX ? (uint64_t)INT64_MAX : t->timeout_ms;
    if (__builtin_add_overflow(t->created_at, (int64_t)tmo, &deadline))
        deadline = t->created_at < 0 ? INT64_MIN : INT64_MAX;
    if (__builtin_sub_overflow(deadline, now_wall, &left))
        left = deadline < 0 ? 0 : INT64_MAX;
    if (left > TIMEOUT_MAX_MS)
        left = TIMEOUT_MAX_MS;
    arm(e, &t->timeout_timer, now_mono + (left > 0 ? (uint64_t)left : 0));
}

static void arm_timeout(struct engine *e, struct txn *t)
{
    arm_timeout_at(e, t, clock_wall_ms(), clock_mono_ms());
}

/* ---- the index ------------------------------------------------------- */

/* First position whose seq is >= seq. */
static size_t idx_lower(const struct engine *e, uint64_t seq)
{
    size_t lo = 0, hi = e->idx_len;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (e->seqs[mid] < seq)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static void idx_insert(struct engine *e, struct txn *t)
{
    if (e->idx_len == e->idx_cap) {
        e->idx_cap = e->idx_cap ? e->idx_cap * 2 : 1024;
        e->seqs = xrealloc(e->seqs, e->idx_cap * sizeof *e->seqs);
        e->txns = xrealloc(e->txns, e->idx_cap * sizeof *e->txns);
    }
    size_t pos = e->idx_len;
    if (pos > 0 && e->seqs[pos - 1] >= t->seq) {
        pos = idx_lower(e, t->seq);
        memmove(&e->seqs[pos + 1], &e->seqs[pos], (e->idx_len - pos) * sizeof *e->seqs);
        memmove(&e->txns[pos + 1], &e->txns[pos], (e->idx_len - pos) * sizeof *e->txns);
    }
    e->seqs[pos] = t->seq;
    e->txns[pos] = t;
    e->idx_len++;
}

static void idx_compact(struct engine *e)
{
    size_t j = 0;
    for (size_t i = 0; i < e->idx_len; i++) {
        if (e->txns[i] == NULL)
            continue;
        e->seqs[j] = e->seqs[i];
        e->txns[j] = e->txns[i];
        j++;
    }
    e->idx_len = j;
    e->idx_holes = 0;
}

/* Position of t in the index, or idx_len. A damaged log (whose CRCs still
 * pass) can give two transactions the same seq: look through all of them. */
static size_t idx_find(const struct engine *e, const struct txn *t)
{
    for (size_t pos = idx_lower(e, t->seq); pos < e->idx_len && e->seqs[pos] == t->seq; pos++)
        if (e->txns[pos] == t)
            return pos;
    return e->idx_len;
}

static void idx_remove(struct engine *e, const struct txn *t)
{
    size_t pos = idx_find(e, t);
    if (pos < e->idx_len) {
        e->txns[pos] = NULL;
        e->idx_holes++;
        if (e->idx_holes > 1024 && e->idx_holes * 2 > e->idx_len)
            idx_compact(e);
    }
}

static void idx_replace(struct engine *e, const struct txn *old, struct txn *t)
{
    size_t pos = idx_find(e, old);
    if (pos < e->idx_len)
        e->txns[pos] = t;
}

/* ---- replies --------------------------------------------------------- */

static void waiter_fire(struct engine *e, struct txn_waiter *w, int extra_flags)
{
    struct txn *t = w->txn;
    struct txn_waiter **pp = &t->waiters;
    while (*pp != w)
        pp = &(*pp)->next;
    *pp = w->next;
    disarm(e, &w->deadline);
    w->fn(w->arg, t, w->flags | extra_flags);
    free(w);
}

/* Fire every waiter of t whose condition holds now. */
static void waiters_check(struct engine *e, struct txn *t)
{
    struct txn_waiter *w = t->waiters;
    while (w != NULL) {
        struct txn_waiter *next = w->next;
        int done = t->synced >= w->need && (!w->until_finished || txn_state_is_final(t->state));
        if (done)
            waiter_fire(e, w, 0);
        w = next;
    }
}

static void on_wait_deadline(struct sched_timer *st)
{
    struct txn_waiter *w =
        (struct txn_waiter *)((char *)st - offsetof(struct txn_waiter, deadline));
    if (w->txn->synced < w->need) {
        w->until_finished = 0; /* answer as soon as it is durable */
        return;
    }
    waiter_fire(w->e, w, ENGINE_REPLY_TIMED_OUT);
}

/* Reply through fn once every record of t appended so far is durable and,
 * with wait, once t is finished or wait_timeout_ms passed. */
static void add_waiter(struct engine *e, struct txn *t, int wait, uint32_t wait_timeout_ms,
                       engine_reply_fn fn, void *arg, int flags)
{
    struct txn_waiter *w = xcalloc(1, sizeof *w);
    w->txn = t;
    w->e = e;
    w->fn = fn;
    w->arg = arg;
    w->flags = flags;
    w->until_finished = wait;
    w->need = t->appended;
    sched_timer_init(&w->deadline, on_wait_deadline);
    w->next = t->waiters;
    t->waiters = w;
    if (wait)
        arm(e, &w->deadline, clock_mono_ms() + wait_timeout_ms);
    waiters_check(e, t);
}

/* ---- logging --------------------------------------------------------- */

struct log_ctx {
    struct engine *e;
    struct txn *t;
    engine_then_fn then;
};

static void on_durable(void *arg, int status)
{
    struct log_ctx *c = arg;
    (void)status; /* a failed write ends the process; status is always 0 */
    c->t->pending_records--;
    c->t->synced++;
    if (c->t->waiters != NULL)
        waiters_check(c->e, c->t);
    if (c->then)
        c->then(c->e, c->t);
    free(c);
}

static void append(struct engine *e, struct txn *t, engine_then_fn then)
{
    struct log_ctx *c = xmalloc(sizeof *c);
    c->e = e;
    c->t = t;
    c->then = then;
    t->pending_records++;
    t->appended++;
    int rc = store_append(e->store, e->scratch.data, e->scratch.len, on_durable, c);
    if (rc != 0) {
        /* the store only refuses after close: we are going down anyway */
        slog_error("log append refused", "gid=%s err=%s", t->gid, dtx_err_name(rc));
        t->pending_records--;
        t->appended--;
        free(c);
    }
}

void engine_log_txn(struct engine *e, struct txn *t, engine_then_fn then)
{
    buf_reset(&e->scratch);
    record_encode_txn(&e->scratch, t);
    append(e, t, then);
}

void engine_log_update(struct engine *e, struct txn *t, struct branch *br, engine_then_fn then)
{
    buf_reset(&e->scratch);
    record_encode_update(&e->scratch, t, br);
    append(e, t, then);
}

/* ---- participant calls ----------------------------------------------- */

/* An outstanding call. They are listed so that calls the transport abandons
 * at shutdown (it runs no callback then) are still freed by engine_free. */
struct call_ctx {
    struct call_ctx *prev, *next;
    struct engine *e;
    struct txn *t;
    struct branch *b;         /* NULL for a msg check */
    engine_call_fn cb;        /* branch calls */
    engine_check_fn check_cb; /* check calls */
};

static void set_in_flight(struct call_ctx *c, int on)
{
    if (c->b)
        c->b->in_flight = on;
    else
        c->t->check_in_flight = on;
}

static void start_call(struct engine *e, struct txn *t, struct branch *b, const char *op,
                       const char *url, engine_call_fn cb, engine_check_fn check_cb);

static void call_unlink(struct engine *e, struct call_ctx *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        e->calls = c->next;
    if (c->next)
        c->next->prev = c->prev;
}

static void on_call_done(void *arg, const struct call_result *res)
{
    struct call_ctx *c = arg;
    struct engine *e = c->e;
    call_unlink(e, c);
    set_in_flight(c, 0);
    if (!e->stopping) {
        if (c->b)
            c->cb(e, c->b, res);
        else
            c->check_cb(e, c->t, res);
    }
    free(c);
}

/* W3C trace id derived from the gid, so every call of a transaction shares
 * one trace, also across restarts. */
static void trace_id(const char *gid, char out[33])
{
    uint64_t h1 = 1469598103934665603ULL, h2 = 0x9E3779B97F4A7C15ULL;
    for (const char *p = gid; *p; p++) {
        h1 = (h1 ^ (unsigned char)*p) * 1099511628211ULL;
        h2 = (h2 ^ (unsigned char)*p) * 0x100000001B3ULL + 0x7F4A7C15ULL;
    }
    fmt_hex64(out, h1);
    fmt_hex64(out + 16, h2);
    out[32] = '\0';
}

void engine_call(struct engine *e, struct branch *b, const char *op, const char *url,
                 engine_call_fn cb)
{
    start_call(e, b->txn, b, op, url, cb, NULL);
}

void engine_call_check(struct engine *e, struct txn *t, engine_check_fn cb)
{
    start_call(e, t, NULL, "check", t->check, NULL, cb);
}

static void start_call(struct engine *e, struct txn *t, struct branch *b, const char *op,
                       const char *url, engine_call_fn cb, engine_check_fn check_cb)
{
    /* 00-<trace id>-<span id>-01 */
    char traceparent[3 + 32 + 1 + 16 + 3 + 1] = "00-";
    trace_id(t->gid, traceparent + 3);
    traceparent[35] = '-';
    fmt_hex64(traceparent + 36, rnd_next() | 1);
    memcpy(traceparent + 52, "-01", 4);
    struct call_req req = {
        .url = url,
        .gid = t->gid,
        .branch = b ? b->id : "00",
        .op = op,
        .txn_type = txn_type_name(t->type),
        .traceparent = traceparent,
        .body = b ? b->payload : "{}",
        .body_len = b ? b->payload_len : 2,
        .timeout_ms = t->request_timeout_ms,
    };
    struct call_ctx *c = xmalloc(sizeof *c);
    c->e = e;
    c->t = t;
    c->b = b;
    c->cb = cb;
    c->check_cb = check_cb;
    c->prev = NULL;
    c->next = e->calls;
    if (e->calls)
        e->calls->prev = c;
    e->calls = c;
    set_in_flight(c, 1);
    int rc = transport_call(e->router, &req, on_call_done, c);
    if (rc != 0) {
        /* validated URLs always have a transport; treat a refusal as transient */
        call_unlink(e, c);
        set_in_flight(c, 0);
        free(c);
        char msg[96];
        snprintf(msg, sizeof msg, "transport refused the call: %s", dtx_err_message(rc));
        struct call_result res = {.outcome = CALL_TRANSIENT, .status = 0, .error = msg};
        if (b)
            cb(e, b, &res);
        else
            check_cb(e, t, &res);
    }
}

/* ---- lifecycle of transactions ---------------------------------------- */

void engine_finished(struct engine *e, struct txn *t)
{
    disarm(e, &t->timeout_timer);
    t->fin_next = NULL;
    if (e->fin_tail)
        e->fin_tail->fin_next = t;
    else
        e->fin_head = t;
    e->fin_tail = t;
    slog_debug("transaction finished", "gid=%s status=%s", t->gid, txn_state_name(t->state));
    waiters_check(e, t);
}

static void on_created(struct engine *e, struct txn *t)
{
    t->durable = 1;
    waiters_check(e, t);
    if (!e->stopping)
        modes[t->type]->advance(e, t);
}

/* A new gid: 128 random bits in hex. The randomness comes from the kernel in
 * 4 KiB draws (one getrandom per 256 gids, not one per transaction). */
static void gen_gid(struct engine *e, char out[33])
{
    static const char hex[] = "0123456789abcdef";
    if (e->rnd_pos + 16 > sizeof e->rnd_pool) {
        if (rnd_secure(e->rnd_pool, sizeof e->rnd_pool) != 0) {
            for (size_t i = 0; i + 8 <= sizeof e->rnd_pool; i += 8) {
                uint64_t v = rnd_next();
                memcpy(e->rnd_pool + i, &v, 8);
            }
        }
        e->rnd_pos = 0;
    }
    const unsigned char *r = e->rnd_pool + e->rnd_pos;
    e->rnd_pos += 16;
    for (int i = 0; i < 16; i++) {
        out[2 * i] = hex[r[i] >> 4];
        out[2 * i + 1] = hex[r[i] & 15];
    }
    out[32] = '\0';
}

int engine_create(struct engine *e, struct txn_spec *spec, engine_reply_fn fn, void *arg)
{
    if (e->stopping) {
        txn_spec_free(spec);
        return DTX_ECLOSED;
    }
    char genbuf[33];
    const char *gid = spec->gid;
    if (gid == NULL) {
        gen_gid(e, genbuf);
        gid = genbuf;
    }
    struct txn *t = hmap_get(&e->by_gid, gid);
    if (t != NULL) {
        if (!txn_matches_spec(t, spec)) {
            txn_spec_free(spec);
            return DTX_ECONFLICT;
        }
        add_waiter(e, t, spec->wait, spec->wait_timeout_ms, fn, arg, 0);
        txn_spec_free(spec);
        return 0;
    }
    t = txn_new_from_spec(spec, gid, e->next_seq++, clock_wall_ms());
    init_timers(t);
    hmap_put(&e->by_gid, t->gid, t);
    idx_insert(e, t);
    engine_log_txn(e, t, on_created);
    add_waiter(e, t, spec->wait, spec->wait_timeout_ms, fn, arg, ENGINE_REPLY_CREATED);
    arm_timeout(e, t);
    txn_spec_free(spec);
    return 0;
}

void engine_expire_in(struct engine *e, struct txn *t, uint64_t delay_ms)
{
    arm(e, &t->timeout_timer, clock_mono_ms() + delay_ms);
}

void engine_log_branch(struct engine *e, struct txn *t, struct branch *br, engine_then_fn then)
{
    buf_reset(&e->scratch);
    record_encode_branch(&e->scratch, t, br);
    append(e, t, then);
}

/* Look gid up for a request on an existing transaction. */
static int lookup(struct engine *e, const char *gid, struct txn **out)
{
    if (e->stopping)
        return DTX_ECLOSED;
    *out = hmap_get(&e->by_gid, gid);
    return *out ? 0 : DTX_ENOTFOUND;
}

/* The first free numeric branch id from nbranches + 1 on. */
static void next_branch_id(const struct txn *t, char out[16])
{
    for (uint32_t n = t->nbranches + 1;; n++) {
        fmt_u64(out, n);
        if (txn_branch_by_id(t, out) == NULL)
            return;
    }
}

int engine_register(struct engine *e, const char *gid, struct step_spec *s, char **id_out,
                    engine_reply_fn fn, void *arg)
{
    struct txn *t;
    int rc = lookup(e, gid, &t);
    if (rc == 0 && s->id != NULL) {
        struct branch *old = txn_branch_by_id(t, s->id);
        if (old != NULL) {
            if (!branch_matches_spec(old, s)) {
                rc = DTX_ECONFLICT;
            } else {
                *id_out = xstrdup(old->id);
                add_waiter(e, t, 0, 0, fn, arg, 0);
            }
            step_spec_clear(s);
            return rc;
        }
    }
    if (rc == 0 && ((t->type != TXN_TCC && t->type != TXN_2PC) || t->state != TXN_PREPARED))
        rc = DTX_ESTATE;
    if (rc == 0 && t->nbranches >= e->cfg.max_branches)
        rc = DTX_ETOOBIG;
    if (rc != 0) {
        step_spec_clear(s);
        return rc;
    }
    char genid[16];
    if (s->id == NULL) {
        next_branch_id(t, genid);
        s->id = xstrdup(genid);
    }
    struct branch *b = txn_add_branch(t, s, clock_wall_ms());
    sched_timer_init(&b->timer, on_branch_timer);
    t->updated_at = b->updated_at;
    *id_out = xstrdup(b->id);
    step_spec_clear(s);
    slog_debug("branch registered", "gid=%s branch=%s", t->gid, b->id);
    engine_log_branch(e, t, b, NULL);
    add_waiter(e, t, 0, 0, fn, arg, ENGINE_REPLY_CREATED);
    return 0;
}

static void after_submit(struct engine *e, struct txn *t)
{
    if (!e->stopping)
        modes[t->type]->advance(e, t);
}

int engine_submit(struct engine *e, const char *gid, const struct engine_wait *w,
                  engine_reply_fn fn, void *arg)
{
    struct txn *t;
    int rc = lookup(e, gid, &t);
    if (rc != 0)
        return rc;
    switch (t->state) {
    case TXN_PREPARED:
        txn_set_state(t, TXN_SUBMITTED, clock_wall_ms(), "submitted by the client");
        disarm(e, &t->timeout_timer); /* a submitted tcc/msg no longer times out */
        if (t->type == TXN_2PC)
            arm_timeout(e, t); /* 2pc: the deadline still holds until the decision */
        engine_log_update(e, t, NULL, after_submit);
        break;
    case TXN_SUBMITTED:
    case TXN_COMMITTING:
    case TXN_SUCCEEDED:
        break; /* submitted before: the same answer */
    default:
        return DTX_ESTATE;
    }
    add_waiter(e, t, w->wait, w->wait_timeout_ms, fn, arg, 0);
    return 0;
}

int engine_abort(struct engine *e, const char *gid, const struct engine_wait *w, engine_reply_fn fn,
                 void *arg)
{
    struct txn *t;
    int rc = lookup(e, gid, &t);
    if (rc != 0)
        return rc;
    switch (t->state) {
    case TXN_PREPARED:
        break;
    case TXN_SUBMITTED:
        if (t->type != TXN_SAGA && t->type != TXN_2PC)
            return DTX_ESTATE; /* tcc confirms and msg delivers: past the point of no return */
        break;
    case TXN_ABORTING:
    case TXN_FAILED:
        add_waiter(e, t, w->wait, w->wait_timeout_ms, fn, arg, 0);
        return 0;
    default:
        return DTX_ESTATE;
    }
    modes[t->type]->abort(e, t, "aborted by request");
    add_waiter(e, t, w->wait, w->wait_timeout_ms, fn, arg, 0);
    return 0;
}

int engine_retry_now(struct engine *e, const char *gid)
{
    struct txn *t;
    int rc = lookup(e, gid, &t);
    if (rc != 0)
        return rc;
    if (txn_state_is_final(t->state))
        return DTX_ESTATE;
    slog_info("retry now requested", "gid=%s", t->gid);
    for (uint32_t i = 0; i < t->nbranches; i++) {
        struct branch *b = &t->branches[i];
        if (sched_timer_armed(&b->timer)) {
            disarm(e, &b->timer);
            modes[t->type]->retry(e, b);
        }
    }
    /* a msg whose check is being retried: ask now (never before its first
     * check: that would cut the client's local transaction short) */
    if (t->type == TXN_MSG && t->state == TXN_PREPARED && t->check_attempts > 0 &&
        sched_timer_armed(&t->timeout_timer)) {
        disarm(e, &t->timeout_timer);
        modes[t->type]->expire(e, t);
    }
    return 0;
}

enum engine_outcome engine_branch_outcome(struct engine *e, const char *gid, const char *branch)
{
    const struct txn *t = hmap_get(&e->by_gid, gid);
    if (t == NULL)
        return ENGINE_OUTCOME_UNKNOWN;
    if (t->type != TXN_2PC)
        return ENGINE_OUTCOME_ROLLBACK; /* no other mode commits a prepared transaction */
    int registered = txn_branch_by_id(t, branch) != NULL;
    switch (t->state) {
    case TXN_PREPARED:
        return ENGINE_OUTCOME_PENDING; /* its registration may still come */
    case TXN_SUBMITTED:
    case TXN_COMMITTING:
    case TXN_ABORTING:
        /* a registered branch is the driver's to finish (sending the same
         * statement from here would only race with it) */
        return registered ? ENGINE_OUTCOME_PENDING : ENGINE_OUTCOME_ROLLBACK;
    default:
        /* finished: its registered branch was committed or rolled back, so
         * a prepared transaction of that name now is a participant's repeat
         * and committing it would apply the work twice */
        return ENGINE_OUTCOME_ROLLBACK;
    }
}

const struct txn *engine_find(struct engine *e, const char *gid)
{
    return hmap_get(&e->by_gid, gid);
}

static int matches(const struct txn *t, const struct engine_filter *f)
{
    if (f && f->by_state && t->state != f->state)
        return 0;
    if (f && f->by_type && t->type != f->type)
        return 0;
    if (f && f->by_attention && (t->needs_attention != 0) != (f->needs_attention != 0))
        return 0;
    return 1;
}

size_t engine_list(struct engine *e, const struct engine_filter *f, uint64_t cursor, size_t limit,
                   const struct txn **out, uint64_t *next_cursor)
{
    size_t n = 0;
    size_t i = cursor ? idx_lower(e, cursor) : e->idx_len;
    *next_cursor = 0;
    while (i > 0) {
        const struct txn *t = e->txns[--i];
        if (t == NULL || !matches(t, f))
            continue;
        if (n == limit) {
            *next_cursor = out[n - 1]->seq; /* at least one more exists */
            break;
        }
        out[n++] = t;
    }
    return n;
}

static void expire_finished(struct engine *e);
struct compaction;

/* ---- recovery -------------------------------------------------------- */

static void apply_update(struct engine *e, struct record_update *u)
{
    struct txn *t = hmap_get(&e->by_gid, u->gid);
    if (t == NULL) {
        slog_warn("log update for an unknown transaction skipped", "gid=%s", u->gid);
        return;
    }
    t->state = u->state;
    t->needs_attention = u->needs_attention;
    t->updated_at = u->updated_at;
    t->finished_at = u->finished_at;
    if (u->branch == UINT32_MAX)
        return;
    if (u->branch >= t->nbranches) {
        slog_warn("log update for an unknown branch skipped", "gid=%s branch=%u", u->gid,
                  u->branch + 1);
        return;
    }
    struct branch *b = &t->branches[u->branch];
    b->state = u->br_state;
    b->prepare_attempts = u->prepare_attempts;
    b->action_attempts = u->action_attempts;
    b->compensate_attempts = u->compensate_attempts;
    free(b->last_error);
    b->last_error = u->last_error;
    u->last_error = NULL;
    b->updated_at = u->br_updated_at;
}

/* A registered branch (one-branch txn rec holding the gid) joins its txn. */
static void apply_branch(struct engine *e, const struct txn *rec)
{
    struct txn *t = hmap_get(&e->by_gid, rec->gid);
    const struct branch *rb = &rec->branches[0];
    if (t == NULL) {
        slog_warn("log branch for an unknown transaction skipped", "gid=%s", rec->gid);
        return;
    }
    if (txn_branch_by_id(t, rb->id) != NULL)
        return; /* already in a snapshot */
    struct step_spec s = {.id = rb->id,
                          .prepare = rb->prepare,
                          .action = rb->action,
                          .compensate = rb->compensate,
                          .payload = rb->payload,
                          .payload_len = rb->payload_len};
    struct branch *b = txn_add_branch(t, &s, rb->updated_at);
    b->state = rb->state;
    b->prepare_attempts = rb->prepare_attempts;
    b->action_attempts = rb->action_attempts;
    b->compensate_attempts = rb->compensate_attempts;
    branch_set_error(b, rb->last_error);
}

static int replay(void *arg, const void *rec, size_t len)
{
    struct engine *e = arg;
    struct record r;
    int rc = record_decode(rec, len, &r);
    if (rc != 0)
        return rc;
    if (r.kind == REC_BRANCH) {
        apply_branch(e, r.txn);
    } else if (r.kind == REC_TXN || r.kind == REC_TXN2) {
        struct txn *t = r.txn;
        r.txn = NULL;
        struct txn *old = hmap_put(&e->by_gid, t->gid, t); /* one lookup */
        if (old != NULL) {
            t->seq = old->seq;
            idx_replace(e, old, t);
            txn_free(old);
        } else {
            idx_insert(e, t);
        }
        if (t->seq >= e->next_seq)
            e->next_seq = t->seq + 1;
    } else {
        apply_update(e, &r.update);
    }
    record_clear(&r);
    return 0;
}

static int by_finished_at(const void *a, const void *b)
{
    const struct txn *x = *(const struct txn *const *)a, *y = *(const struct txn *const *)b;
    return (x->finished_at > y->finished_at) - (x->finished_at < y->finished_at);
}

int engine_recover(struct engine *e)
{
    int rc = store_recover(e->store, replay, e);
    if (rc != 0)
        return rc;
    size_t live = 0, nfin = 0;
    struct txn **fin = xmalloc((e->idx_len + 1) * sizeof *fin);
    for (size_t i = 0; i < e->idx_len; i++) {
        struct txn *t = e->txns[i];
        if (t == NULL)
            continue;
        init_timers(t);
        if (txn_state_is_final(t->state))
            fin[nfin++] = t;
    }
    qsort(fin, nfin, sizeof *fin, by_finished_at);
    for (size_t i = 0; i < nfin; i++) {
        fin[i]->fin_next = NULL;
        if (e->fin_tail)
            e->fin_tail->fin_next = fin[i];
        else
            e->fin_head = fin[i];
        e->fin_tail = fin[i];
    }
    free(fin);
    int64_t now_wall = clock_wall_ms();
    uint64_t now_mono = clock_mono_ms();
    for (size_t i = 0; i < e->idx_len; i++) {
        struct txn *t = e->txns[i];
        if (t == NULL || txn_state_is_final(t->state))
            continue;
        live++;
        CRASH_POINT("recovery.before_resume");
        arm_timeout_at(e, t, now_wall, now_mono);
        if (modes[t->type]->recovered)
            modes[t->type]->recovered(e, t);
        else
            modes[t->type]->advance(e, t);
    }
    CRASH_POINT("recovery.after_resume");
    slog_info("recovered", "transactions=%zu unfinished=%zu", e->by_gid.len, live);
    expire_finished(e); /* finished before the restart and past retention */
    return 0;
}

/* ---- retention and compaction ----------------------------------------- */

static void expire_finished(struct engine *e)
{
    if (e->compaction != NULL)
        return; /* its worker reads finished transactions */
    int64_t cutoff = clock_wall_ms() - (int64_t)e->cfg.retention_ms;
    while (e->fin_head != NULL) {
        struct txn *t = e->fin_head;
        if (t->finished_at > cutoff || t->pending_records || t->waiters)
            break;
        e->fin_head = t->fin_next;
        if (e->fin_head == NULL)
            e->fin_tail = NULL;
        hmap_del(&e->by_gid, t->gid);
        idx_remove(e, t);
        txn_free(t);
    }
}

/*
 * Compaction. The store places a cut (store_compact_begin) and the snapshot
 * must describe each transaction as it was at the cut or later: every record
 * appended after the cut goes to a segment the snapshot does not replace and
 * is replayed over it, and replay is idempotent (an update carries absolute
 * values, a registered branch already present is skipped). Nothing in memory
 * is ahead of what has been appended, so a snapshot taken later only holds
 * states the log could have recovered to.
 *
 * Live transactions change only on the loop, so the loop encodes them, in
 * slices of about SLICE_US between which it serves requests and calls (a
 * million live transactions took ~1.8 s of loop time encoded at once).
 * Finished ones never change again: a worker thread encodes those, in
 * creation order, once the live ones are done, and copies the live ones in
 * beside them. Retention pauses meanwhile, so no transaction the compaction
 * holds is freed (only expire_finished frees a transaction, and the index
 * positions below the cut stay where they are).
 */
#define SLICE_US 1000

struct snap_item {
    const struct txn *t;
    size_t off, len; /* live: its record in live[off, off + len); len 0: finished */
};

struct compaction {
    uv_work_t work;
    struct engine *e;
    struct snap_item *items;
    size_t n;        /* transactions at the cut */
    size_t cut_len;  /* e->idx_len at the cut: the slices walk txns[0, cut_len) */
    size_t next_idx; /* the next index position a slice looks at */
    size_t filled;   /* items filled so far */
    struct buf live; /* the live ones' records, encoded by the loop */
    char *blob;
    size_t *lens;
    uint64_t started_us;
    uint64_t loop_us; /* loop time spent on this compaction */
    unsigned slices;  /* loop turns that encoded live ones */
};

static void compact_work(uv_work_t *w)
{
    struct compaction *c = w->data;
    struct buf blob;
    buf_init(&blob, SIZE_MAX / 2);
    c->lens = xmalloc((c->n + 1) * sizeof *c->lens);
    for (size_t i = 0; i < c->n; i++) {
        size_t before = blob.len;
        if (c->items[i].len)
            buf_append(&blob, c->live.data + c->items[i].off, c->items[i].len);
        else
            record_encode_txn(&blob, c->items[i].t);
        c->lens[i] = blob.len - before;
    }
    buf_free(&c->live);
    c->blob = buf_steal(&blob, NULL);
}

static void compaction_free(struct compaction *c)
{
    buf_free(&c->live);
    free(c->items);
    free(c);
}

static void compact_after(uv_work_t *w, int status)
{
    struct compaction *c = w->data;
    struct engine *e = c->e;
    e->compaction = NULL;
    int rc = status == 0 ? store_compact_finish(e->store, c->blob, c->lens)
                         : store_compact_finish(e->store, NULL, NULL);
    if (status != 0) {
        free(c->blob);
        free(c->lens);
    }
    if (rc == 0 && status == 0)
        slog_info("compaction snapshot handed to the log",
                  "transactions=%zu ms=%.1f loop_ms=%.1f slices=%u", c->n,
                  (double)(clock_mono_us() - c->started_us) / 1000.0, (double)c->loop_us / 1000.0,
                  c->slices);
    else if (!e->stopping)
        slog_warn("compaction abandoned", "err=%s", dtx_err_name(rc ? rc : status));
    compaction_free(c);
    if (e->free_pending)
        engine_free(e);
}

/* Give up a compaction whose live transactions are still being encoded. */
static void compaction_abandon(struct engine *e)
{
    struct compaction *c = e->compaction;
    uv_idle_stop(&e->compact_idle);
    e->compaction = NULL;
    store_compact_finish(e->store, NULL, NULL);
    compaction_free(c);
}

/* One slice: encode live transactions for about SLICE_US; once past the
 * cut, hand the rest to the worker. */
static void on_compact_slice(uv_idle_t *h)
{
    struct engine *e = h->data;
    struct compaction *c = e->compaction;
    uint64_t t0 = clock_mono_us();
    while (c->next_idx < c->cut_len) {
        const struct txn *t = e->txns[c->next_idx++];
        if (t == NULL)
            continue;
        struct snap_item *it = &c->items[c->filled++];
        it->t = t;
        it->off = c->live.len;
        if (!txn_state_is_final(t->state))
            record_encode_txn(&c->live, t);
        it->len = c->live.len - it->off;
        if ((c->filled & 63) == 0 && clock_mono_us() - t0 >= SLICE_US)
            break;
    }
    c->loop_us += clock_mono_us() - t0;
    c->slices++;
    if (c->next_idx < c->cut_len)
        return;
    uv_idle_stop(h);
    if (c->filled != c->n) { /* the map and the index disagree: a bug */
        slog_error("compaction abandoned", "transactions=%zu indexed=%zu", c->n, c->filled);
        compaction_abandon(e);
        return;
    }
    c->work.data = c;
    uv_queue_work(e->loop, &c->work, compact_work, compact_after);
}

static void compact(struct engine *e)
{
    uint64_t t0 = clock_mono_us();
    struct compaction *c = xcalloc(1, sizeof *c);
    c->e = e;
    c->started_us = t0;
    c->n = e->by_gid.len;
    c->cut_len = e->idx_len;
    c->items = xmalloc((c->n + 1) * sizeof *c->items);
    buf_init(&c->live, SIZE_MAX / 2);
    int rc = store_compact_begin(e->store, c->n);
    if (rc != 0) {
        slog_warn("compaction not started", "err=%s", dtx_err_name(rc));
        compaction_free(c);
        return;
    }
    e->compaction = c;
    uv_idle_start(&e->compact_idle, on_compact_slice);
    slog_info("compaction started", "transactions=%zu", c->n);
}

static void on_tick(uv_timer_t *h)
{
    struct engine *e = h->data;
    expire_finished(e);
    if (!e->stopping && e->compaction == NULL && store_compact_due(e->store))
        compact(e);
}

/* ---- construction ---------------------------------------------------- */

struct engine *engine_new(uv_loop_t *loop, struct store *store, struct transport_router *router,
                          const struct engine_config *cfg)
{
    struct engine *e = xcalloc(1, sizeof *e);
    e->loop = loop;
    e->store = store;
    e->router = router;
    e->cfg = *cfg;
    e->next_seq = 1;
    e->rnd_pos = sizeof e->rnd_pool;
    hmap_init(&e->by_gid);
    sched_init(&e->sched);
    buf_init(&e->scratch, SIZE_MAX / 2);
    uv_timer_init(loop, &e->sched_timer);
    e->sched_timer.data = e;
    e->sched_armed_due = UINT64_MAX;
    uv_timer_init(loop, &e->tick);
    e->tick.data = e;
    uv_timer_start(&e->tick, on_tick, 1000, 1000);
    uv_idle_init(loop, &e->compact_idle);
    e->compact_idle.data = e;
    the_engine = e;
    return e;
}

void engine_stop(struct engine *e)
{
    e->stopping = 1;
    for (size_t i = 0; i < e->idx_len; i++) {
        struct txn *t = e->txns[i];
        if (t == NULL)
            continue;
        struct txn_waiter *w = t->waiters;
        while (w != NULL) {
            struct txn_waiter *next = w->next;
            if (t->durable)
                waiter_fire(e, w, ENGINE_REPLY_TIMED_OUT);
            else
                w->until_finished = 0;
            w = next;
        }
    }
}

static void on_handle_closed(uv_handle_t *h)
{
    struct engine *e = h->data;
    if (--e->closing == 0)
        free(e);
}

void engine_free(struct engine *e)
{
    if (e == NULL)
        return;
    if (e->compaction != NULL && uv_is_active((uv_handle_t *)&e->compact_idle))
        compaction_abandon(e); /* still encoding live ones: give it up */
    if (e->compaction != NULL) {
        /* a worker still reads our transactions: finish when it is done */
        e->free_pending = 1;
        return;
    }
    /* first: the heap points into the transactions (armed retry, timeout and
     * wait timers), and closing it marks each of them disarmed */
    sched_close(&e->sched);
    for (size_t i = 0; i < e->idx_len; i++) {
        struct txn *t = e->txns[i];
        if (t == NULL)
            continue;
        while (t->waiters) {
            struct txn_waiter *w = t->waiters;
            t->waiters = w->next;
            free(w);
        }
        txn_free(t);
    }
    while (e->calls) { /* abandoned by the transport (freed before us) */
        struct call_ctx *c = e->calls;
        e->calls = c->next;
        free(c);
    }
    free(e->seqs);
    free(e->txns);
    hmap_close(&e->by_gid);
    buf_free(&e->scratch);
    if (the_engine == e)
        the_engine = NULL;
    /* the uv handles are embedded: e is freed when the last one has closed,
     * so the caller must run the loop until it is empty */
    e->closing = 3;
    uv_close((uv_handle_t *)&e->sched_timer, on_handle_closed);
    uv_close((uv_handle_t *)&e->tick, on_handle_closed);
    uv_close((uv_handle_t *)&e->compact_idle, on_handle_closed);
}
