/*
 * transfer.c - move money between two bank services (bank.c) through dtxd,
 * in any dtx mode, with the libdtx client.
 *
 *   transfer --dtx URL --from URL_A:ACCOUNT --to URL_B:ACCOUNT --amount N
 *            --mode saga|tcc|2pc|msg|xa [--gid G] [--wait] [--over http|amqp]
 *            [--from-queue Q] [--to-queue Q] [options]
 *
 * What each mode does (A is the payer's bank, B the payee's):
 *   saga  create a saga of two steps, A /saga/debit then B /saga/credit, each
 *         with its undo; dtxd runs it.
 *   tcc   create an empty tcc transaction, register branch "debit" (A) and
 *         "credit" (B), call both Trys (dtx_tcc_try), then submit (dtxd
 *         confirms both) - or abort (dtxd cancels both) when a Try was refused
 *         or stayed unknown after a few attempts.
 *   2pc   create an empty 2pc transaction, register "debit" (A) and "credit"
 *         (B), submit: dtxd prepares both (a refusal votes no), logs its
 *         decision, then commits or rolls back both.
 *   msg   create a msg transaction with one step, B /msg/credit, and check URL
 *         A /msg/check; make sure the payee's account exists (a delivery
 *         cannot be refused: dtxd delivers until it succeeds); run the local
 *         transaction on A (POST A /msg/start: the debit and the msg mark, one
 *         commit), then submit. When /msg/start refused, abort. When its
 *         outcome is unknown (no answer), neither: dtxd asks A's check after
 *         timeout_ms and the check decides.
 *   xa    2pc on PostgreSQL resources: create an empty 2pc transaction, ask A
 *         (POST A /xa/debit, branch "debit") and then B (/xa/credit, branch
 *         "credit") to do their change, PREPARE TRANSACTION it and register
 *         it with dtxd as a resource branch; then submit: dtxd finds both
 *         prepared (yes votes), logs its decision and runs COMMIT PREPARED in
 *         both databases itself. When a bank did not answer 200 (refused,
 *         lock_timeout, error, no answer), abort: dtxd rolls back what is
 *         registered, and its scan of the databases rolls back a prepared
 *         transaction of this gid that a bank left unregistered.
 *
 * Over RabbitMQ (--over amqp): every URL dtxd calls becomes
 * amqp://<exchange>/<queue>.<operation>, the operation being the HTTP path
 * with '.' for '/' (A's /saga/debit is amqp://dtx.bank/<A's queue>.saga.debit;
 * the bank serves them with --amqp, see bank_amqp.c). That is the saga's
 * actions and compensations, tcc's confirm and cancel, 2pc's prepare,
 * commit and rollback, msg's delivery and check. With --amqp-url (or
 * DTX_AMQP_URL) the client publishes its tcc Trys there too
 * (dtx_client_set_amqp: amqp://<exchange>/<queue>.tcc.<branch>.try, waiting
 * --request-timeout-ms, default 5 s, for each reply); without it the Try
 * stays HTTP. What else the client calls itself stays HTTP: msg's
 * /msg/start, the payee check, and all of xa (dtxd calls no bank URL in xa:
 * --over does not apply). A bank's queue is --from-queue / --to-queue, by
 * default "bank.<port>" with the port of --from / --to: the bank's own
 * default for its --listen port.
 *
 * The outcome is printed on stdout. Exit status: 0 the transfer succeeded
 * (with --wait) or was accepted by dtxd and will complete (without --wait);
 * 1 it was refused or rolled back; 2 usage; 3 an error, or the outcome is
 * not known yet.
 */
#include <dtx.h>

#include <curl/curl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { EXIT_OK = 0, EXIT_REFUSED = 1, EXIT_USAGE = 2, EXIT_ERROR = 3 };

#define URL_MAX 512

struct opts {
    const char *dtx;
    char from_url[URL_MAX], from_acct[128];
    char to_url[URL_MAX], to_acct[128];
    long long amount;
    const char *mode;
    const char *gid;
    bool wait;
    int64_t wait_ms;
    int64_t timeout_ms;         /* tcc/2pc/msg timeout_ms; -1: dtxd's default */
    int64_t request_timeout_ms; /* -1: dtxd's default */
    int64_t retry[3];           /* initial, max, limit; -1: dtxd's default */
    bool no_submit;             /* test aid: stop just before submit */
    bool amqp;                  /* --over amqp: dtxd calls the banks over RabbitMQ */
    const char *exchange;       /* --amqp-exchange */
    const char *amqp_url;       /* --amqp-url: the Trys go over AMQP too */
    const char *amqp_cacert;    /* --amqp-cacert */
    char from_queue[256], to_queue[256];
    bool quiet;
};

static void usage(FILE *f)
{
    fprintf(f, "usage: transfer --dtx URL --from URL_A:ACCOUNT --to URL_B:ACCOUNT --amount N\n"
               "                --mode saga|tcc|2pc|msg|xa [--gid G] [--wait] [options]\n"
               "  --wait                 wait until the transaction is final (exit 0 only if\n"
               "                         it succeeded); without it, exit 0 once dtxd has it\n"
               "  --wait-ms MS           how long --wait waits at most (default 60000)\n"
               "  --timeout-ms MS        the transaction's timeout_ms (tcc/2pc: roll back if\n"
               "                         not submitted by then; msg: ask the check)\n"
               "  --request-timeout-ms MS  per participant call\n"
               "  --retry INITIAL,MAX,LIMIT  the retry policy, in ms and attempts\n"
               "  --over http|amqp       how dtxd calls the banks (default http); amqp:\n"
               "                         amqp://EXCHANGE/QUEUE.<op> (dtxd needs --amqp-url)\n"
               "  --from-queue Q, --to-queue Q  the banks' queues (default bank.<port of the\n"
               "                         --from / --to URL>, the bank's own default)\n"
               "  --amqp-exchange X      the banks' topic exchange (default dtx.bank)\n"
               "  --amqp-url URL         with --over amqp: publish the tcc Trys to this broker\n"
               "                         too (default $DTX_AMQP_URL; none: the Try is HTTP)\n"
               "  --amqp-cacert FILE     CA file for an amqps:// --amqp-url\n"
               "  --no-submit            (test aid) do everything up to submit, then exit 3\n"
               "  --quiet                print only the final line\n");
}

/* Split "http://host:port:account" at its last ':'. Returns 0 or -1. */
static int split_target(const char *s, char *url, size_t urlsz, char *acct, size_t acctsz)
{
    const char *colon = strrchr(s, ':');
    if (colon == NULL || colon[1] == '\0' || strstr(s, "://") == NULL ||
        colon < strstr(s, "://") + 3)
        return -1;
    size_t n = (size_t)(colon - s);
    if (n >= urlsz || strlen(colon + 1) >= acctsz)
        return -1;
    memcpy(url, s, n);
    url[n] = '\0';
    while (n > 0 && url[n - 1] == '/')
        url[--n] = '\0';
    snprintf(acct, acctsz, "%s", colon + 1);
    return 0;
}

/* When queue is empty: "bank.<port>" with the port of url (the bank's
 * default queue for its --listen port). Returns 0, or -1 when url has no
 * port. */
static int default_queue(const char *url, char *queue, size_t cap)
{
    if (queue[0] != '\0')
        return 0;
    const char *host = strstr(url, "://");
    const char *colon = host != NULL ? strrchr(host + 3, ':') : NULL;
    if (colon == NULL || colon[1] == '\0' || strspn(colon + 1, "0123456789") != strlen(colon + 1))
        return -1;
    snprintf(queue, cap, "bank.%s", colon + 1);
    return 0;
}

/* Append s to out (at *n, cap bytes), percent-encoding all but
 * A-Z a-z 0-9 - . _ ~ (dtxd percent-decodes both parts of an amqp:// URL).
 * Returns 0, -1 when it does not fit. */
static int append_encoded(char *out, size_t cap, size_t *n, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        bool plain = (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
                     (*p >= '0' && *p <= '9') || strchr("-._~", *p) != NULL;
        if (*n + (plain ? 1 : 3) >= cap)
            return -1;
        if (plain) {
            out[(*n)++] = (char)*p;
        } else {
            out[(*n)++] = '%';
            out[(*n)++] = hex[*p >> 4];
            out[(*n)++] = hex[*p & 15];
        }
    }
    out[*n] = '\0';
    return 0;
}

/*
 * The URL dtxd calls for the operation at HTTP path (e.g. "/saga/debit") of
 * the payer's bank (from) or the payee's: base URL + path over HTTP, or
 * amqp://<exchange>/<queue>.<path with '.' for '/'> over RabbitMQ.
 * OUT: out (cap bytes). Returns 0, -1 when it does not fit.
 */
static int target_url(const struct opts *o, bool from, const char *path, char *out, size_t cap)
{
    if (!o->amqp) {
        int n = snprintf(out, cap, "%s%s", from ? o->from_url : o->to_url, path);
        return n > 0 && (size_t)n < cap ? 0 : -1;
    }
    char key[64];
    snprintf(key, sizeof key, ".%s", path + 1);
    for (char *p = key; *p != '\0'; p++)
        if (*p == '/')
            *p = '.';
    size_t n = 0;
    int n0 = snprintf(out, cap, "amqp://");
    if (n0 < 0 || (size_t)n0 >= cap)
        return -1;
    n = (size_t)n0;
    if (append_encoded(out, cap, &n, o->exchange) != 0 || n + 1 >= cap)
        return -1;
    out[n++] = '/';
    out[n] = '\0';
    return append_encoded(out, cap, &n, from ? o->from_queue : o->to_queue) == 0 &&
                   append_encoded(out, cap, &n, key) == 0
               ? 0
               : -1;
}

static int64_t parse_i64(const char *s, bool *ok)
{
    char *end;
    long long v = strtoll(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < 0)
        *ok = false;
    return v;
}

static int parse_args(int argc, char **argv, struct opts *o)
{
    bool ok = true;
    memset(o, 0, sizeof *o);
    o->wait_ms = 60000;
    o->timeout_ms = o->request_timeout_ms = -1;
    o->retry[0] = o->retry[1] = o->retry[2] = -1;
    o->amount = -1;
    o->exchange = "dtx.bank";
    const char *over = "http";
    for (int i = 1; i < argc && ok; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool takes = true;
        if (strcmp(a, "--wait") == 0) {
            o->wait = true;
            takes = false;
        } else if (strcmp(a, "--no-submit") == 0) {
            o->no_submit = true;
            takes = false;
        } else if (strcmp(a, "--quiet") == 0) {
            o->quiet = true;
            takes = false;
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            exit(EXIT_OK);
        } else if (v == NULL) {
            ok = false;
        } else if (strcmp(a, "--dtx") == 0) {
            o->dtx = v;
        } else if (strcmp(a, "--from") == 0) {
            ok = split_target(v, o->from_url, sizeof o->from_url, o->from_acct,
                              sizeof o->from_acct) == 0;
        } else if (strcmp(a, "--to") == 0) {
            ok = split_target(v, o->to_url, sizeof o->to_url, o->to_acct, sizeof o->to_acct) == 0;
        } else if (strcmp(a, "--amount") == 0) {
            o->amount = parse_i64(v, &ok);
        } else if (strcmp(a, "--mode") == 0) {
            o->mode = v;
        } else if (strcmp(a, "--over") == 0) {
            over = v;
        } else if (strcmp(a, "--from-queue") == 0) {
            ok = v[0] != '\0' && strlen(v) < sizeof o->from_queue;
            snprintf(o->from_queue, sizeof o->from_queue, "%s", v);
        } else if (strcmp(a, "--to-queue") == 0) {
            ok = v[0] != '\0' && strlen(v) < sizeof o->to_queue;
            snprintf(o->to_queue, sizeof o->to_queue, "%s", v);
        } else if (strcmp(a, "--amqp-exchange") == 0) {
            o->exchange = v;
        } else if (strcmp(a, "--amqp-url") == 0) {
            o->amqp_url = v;
        } else if (strcmp(a, "--amqp-cacert") == 0) {
            o->amqp_cacert = v;
        } else if (strcmp(a, "--gid") == 0) {
            o->gid = v;
        } else if (strcmp(a, "--wait-ms") == 0) {
            o->wait_ms = parse_i64(v, &ok);
        } else if (strcmp(a, "--timeout-ms") == 0) {
            o->timeout_ms = parse_i64(v, &ok);
        } else if (strcmp(a, "--request-timeout-ms") == 0) {
            o->request_timeout_ms = parse_i64(v, &ok);
        } else if (strcmp(a, "--retry") == 0) {
            long long r[3];
            ok = sscanf(v, "%lld,%lld,%lld", &r[0], &r[1], &r[2]) == 3;
            for (int k = 0; k < 3; k++)
                o->retry[k] = r[k];
        } else {
            ok = false;
        }
        if (takes)
            i++;
    }
    if (!ok || o->dtx == NULL || o->from_url[0] == '\0' || o->to_url[0] == '\0' || o->amount <= 0 ||
        o->mode == NULL || o->wait_ms < 1)
        return -1;
    if (strcmp(o->mode, "saga") != 0 && strcmp(o->mode, "tcc") != 0 &&
        strcmp(o->mode, "2pc") != 0 && strcmp(o->mode, "msg") != 0 && strcmp(o->mode, "xa") != 0)
        return -1;
    if (strcmp(over, "amqp") != 0 && strcmp(over, "http") != 0)
        return -1;
    o->amqp = strcmp(over, "amqp") == 0;
    if (o->amqp_url == NULL && o->amqp) {
        const char *env = getenv("DTX_AMQP_URL");
        o->amqp_url = env != NULL && env[0] != '\0' ? env : NULL;
    }
    if (o->amqp_url != NULL && !o->amqp)
        return -1; /* a broker for the Try only goes with --over amqp */
    if (o->amqp && (default_queue(o->from_url, o->from_queue, sizeof o->from_queue) != 0 ||
                    default_queue(o->to_url, o->to_queue, sizeof o->to_queue) != 0))
        return -1;
    return 0;
}

/* A progress line on stdout, unless --quiet. */
static void note(const struct opts *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void note(const struct opts *o, const char *fmt, ...)
{
    if (o->quiet)
        return;
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    fflush(stdout);
}

/* {"account": account, "amount": N} as JSON text (caller frees). */
static char *payload(const char *account, long long amount)
{
    json_t *p = json_pack("{s:s, s:I}", "account", account, "amount", (json_int_t)amount);
    char *s = p ? json_dumps(p, JSON_COMPACT) : NULL;
    json_decref(p);
    return s;
}

static void api_error(struct dtx_client *c, const char *what)
{
    const struct dtx_error *e = dtx_client_last_error(c);
    printf("error: %s: %s (HTTP %d %s)\n", what, e->message, e->http_status, e->api_code);
}

/* Print the final line for t and pick the exit status. */
static int report(const struct opts *o, const struct dtx_txn *t)
{
    const char *why = NULL;
    for (size_t i = 0; i < t->n_branches; i++)
        if (t->branches[i].last_error != NULL)
            why = t->branches[i].last_error;
    printf("%s transfer %s: %lld from %s to %s: %s%s%s%s\n", o->mode, t->gid, o->amount,
           o->from_acct, o->to_acct, t->status, t->needs_attention ? " (needs attention)" : "",
           why != NULL && strcmp(t->status, "failed") == 0 ? ": " : "",
           why != NULL && strcmp(t->status, "failed") == 0 ? why : "");
    if (strcmp(t->status, "succeeded") == 0)
        return EXIT_OK;
    if (strcmp(t->status, "failed") == 0 || strcmp(t->status, "aborting") == 0)
        return EXIT_REFUSED;
    if (!o->wait)
        return EXIT_OK; /* accepted: dtxd drives it to the end */
    return EXIT_ERROR;
}

/* Take the answer of a call that may have asked dtxd to wait; when the wait
 * bound passed first (202), keep polling until final. OUT: *t replaced. */
static int finish(struct dtx_client *c, const struct opts *o, struct dtx_txn **t)
{
    if (!o->wait || dtx_txn_is_final(*t))
        return report(o, *t);
    struct dtx_txn *f = NULL;
    int rc = dtx_wait(c, (*t)->gid, o->wait_ms, &f);
    if (rc != 0) {
        api_error(c, "waiting for the outcome");
        report(o, *t);
        return EXIT_ERROR;
    }
    dtx_txn_free(*t);
    *t = f;
    return report(o, *t);
}

/* Put the command line's gid and options into s. Returns 0, or -1 (after
 * saying which) when libdtx refuses one. */
static int set_options(struct dtx_spec *s, const struct opts *o)
{
    const char *bad = NULL;
    if (o->gid != NULL && dtx_spec_set_gid(s, o->gid) != 0)
        bad = "--gid (1-128 bytes of A-Z a-z 0-9 . _ : -)";
    else if ((o->retry[0] >= 0 || o->retry[1] >= 0 || o->retry[2] >= 0) &&
             dtx_spec_set_retry(s, o->retry[0], o->retry[1], o->retry[2]) != 0)
        bad = "--retry";
    else if (o->request_timeout_ms >= 0 &&
             dtx_spec_set_request_timeout(s, o->request_timeout_ms) != 0)
        bad = "--request-timeout-ms";
    else if (o->timeout_ms >= 0 && dtx_spec_set_timeout(s, o->timeout_ms) != 0)
        bad = "--timeout-ms";
    if (bad != NULL) {
        printf("error: invalid %s\n", bad);
        return -1;
    }
    return 0;
}

/* Submit (or abort) the prepared transaction gid, waiting if asked. */
static int submit_or_abort(struct dtx_client *c, const struct opts *o, const char *gid, bool abort)
{
    struct dtx_txn *t = NULL;
    int64_t wait = o->wait ? o->wait_ms : 0;
    int rc = abort ? dtx_abort(c, gid, wait, &t) : dtx_submit(c, gid, wait, &t);
    if (rc != 0) {
        api_error(c, abort ? "abort" : "submit");
        /* A submit refused because a timeout already rolled it back. */
        if (rc == DTX_ECONFLICT && dtx_get(c, gid, &t) == 0) {
            int ex = finish(c, o, &t);
            dtx_txn_free(t);
            return ex;
        }
        return EXIT_ERROR;
    }
    int ex = finish(c, o, &t);
    dtx_txn_free(t);
    return ex == EXIT_OK && abort ? EXIT_REFUSED : ex;
}

static int run_saga(struct dtx_client *c, const struct opts *o, const char *pa, const char *pb)
{
    char u[4][URL_MAX * 3 + 64];
    struct dtx_spec *s = NULL;
    struct dtx_txn *t = NULL;
    int ex = EXIT_ERROR;
    if (target_url(o, true, "/saga/debit", u[0], sizeof u[0]) != 0 ||
        target_url(o, true, "/saga/debit-undo", u[1], sizeof u[1]) != 0 ||
        target_url(o, false, "/saga/credit", u[2], sizeof u[2]) != 0 ||
        target_url(o, false, "/saga/credit-undo", u[3], sizeof u[3]) != 0 ||
        dtx_saga_new(&s) != 0 || dtx_saga_add_step(s, u[0], u[1], pa) != 0 ||
        dtx_saga_add_step(s, u[2], u[3], pb) != 0) {
        printf("error: cannot build the saga\n");
        goto out;
    }
    if (set_options(s, o) != 0) {
        ex = EXIT_USAGE;
        goto out;
    }
    if (o->wait)
        dtx_spec_set_wait(s, o->wait_ms);
    if (dtx_create(c, s, &t) != 0) {
        api_error(c, "create");
        goto out;
    }
    note(o, "created saga %s (%s)\n", t->gid, t->status);
    ex = finish(c, o, &t);
out:
    dtx_txn_free(t);
    dtx_spec_free(s);
    return ex;
}

/* Create an empty tcc or 2pc (or a msg from s) and return its gid. */
static int create_prepared(struct dtx_client *c, const struct opts *o, struct dtx_spec *s,
                           char *gid, size_t gidsz)
{
    struct dtx_txn *t = NULL;
    if (set_options(s, o) != 0)
        return -1;
    if (dtx_create(c, s, &t) != 0) {
        api_error(c, "create");
        return -1;
    }
    snprintf(gid, gidsz, "%s", t->gid);
    note(o, "created %s (%s)\n", t->gid, t->status);
    dtx_txn_free(t);
    return 0;
}

/* Call a Try until it is decided: a few attempts while its outcome is
 * unknown (the barrier makes a repeated Try harmless). */
static enum dtx_try_result call_try(struct dtx_client *c, const struct opts *o, const char *url,
                                    const char *gid, const char *branch, const char *body)
{
    enum dtx_try_result r = DTX_TRY_TRANSIENT;
    /* over AMQP a bank that is down does not refuse the connection: its
     * command waits in the queue, so wait for a reply as long as a call */
    bool amqp = strncmp(url, "amqp://", 7) == 0;
    if (amqp)
        dtx_client_set_timeout(c, o->request_timeout_ms > 0 ? o->request_timeout_ms : 5000);
    for (int attempt = 0; attempt < 3; attempt++) {
        if (dtx_tcc_try(c, url, gid, branch, body, &r) != 0) {
            api_error(c, "try");
            r = DTX_TRY_TRANSIENT;
            break;
        }
        if (r != DTX_TRY_TRANSIENT)
            break;
        nanosleep(&(struct timespec){0, 100000000L << attempt}, NULL);
    }
    if (amqp)
        dtx_client_set_timeout(c, 30000);
    if (r == DTX_TRY_TRANSIENT)
        note(o, "try %s: %s\n", branch, dtx_client_last_error(c)->message);
    note(o, "try %s: %s\n", branch,
         r == DTX_TRY_SUCCEEDED ? "reserved"
         : r == DTX_TRY_FAILED  ? "refused"
                                : "unknown");
    return r;
}

static int run_tcc(struct dtx_client *c, const struct opts *o, const char *pa, const char *pb)
{
    struct dtx_spec *s = NULL;
    char gid[DTX_GID_MAX + 1];
    if (dtx_tcc_new(&s) != 0)
        return EXIT_ERROR;
    int rc = create_prepared(c, o, s, gid, sizeof gid);
    dtx_spec_free(s);
    if (rc != 0)
        return EXIT_ERROR;

    const struct {
        const char *branch, *base, *body;
    } side[2] = {{"debit", o->from_url, pa}, {"credit", o->to_url, pb}};
    bool all_reserved = true;
    for (int i = 0; i < 2 && all_reserved; i++) {
        char try_url[URL_MAX * 3 + 64], confirm[URL_MAX * 3 + 64], cancel[URL_MAX * 3 + 64],
            p[2][32];
        char tp[32];
        snprintf(tp, sizeof tp, "/tcc/%s/try", side[i].branch);
        snprintf(p[0], sizeof p[0], "/tcc/%s/confirm", side[i].branch);
        snprintf(p[1], sizeof p[1], "/tcc/%s/cancel", side[i].branch);
        /* the Try is ours to call: over AMQP only with a broker of our own */
        int trc = 0;
        if (o->amqp_url != NULL)
            trc = target_url(o, i == 0, tp, try_url, sizeof try_url);
        else
            snprintf(try_url, sizeof try_url, "%s%s", side[i].base, tp);
        if (trc != 0 || target_url(o, i == 0, p[0], confirm, sizeof confirm) != 0 ||
            target_url(o, i == 0, p[1], cancel, sizeof cancel) != 0) {
            printf("error: a branch URL is too long\n");
            all_reserved = false;
            break;
        }
        if (dtx_register_tcc(c, gid, side[i].branch, confirm, cancel, side[i].body, NULL) != 0) {
            api_error(c, "register");
            all_reserved = false;
            break;
        }
        if (call_try(c, o, try_url, gid, side[i].branch, side[i].body) != DTX_TRY_SUCCEEDED)
            all_reserved = false;
    }
    if (o->no_submit) {
        printf("tcc transfer %s: not submitted (--no-submit)\n", gid);
        return EXIT_ERROR;
    }
    return submit_or_abort(c, o, gid, !all_reserved);
}

static int run_2pc(struct dtx_client *c, const struct opts *o, const char *pa, const char *pb)
{
    struct dtx_spec *s = NULL;
    char gid[DTX_GID_MAX + 1];
    if (dtx_2pc_new(&s) != 0)
        return EXIT_ERROR;
    int rc = create_prepared(c, o, s, gid, sizeof gid);
    dtx_spec_free(s);
    if (rc != 0)
        return EXIT_ERROR;
    const struct {
        const char *branch, *base, *body;
    } side[2] = {{"debit", o->from_url, pa}, {"credit", o->to_url, pb}};
    for (int i = 0; i < 2; i++) {
        static const char *const ops[3] = {"prepare", "commit", "rollback"};
        char u[3][URL_MAX * 3 + 64];
        for (int k = 0; k < 3; k++) {
            char p[32];
            snprintf(p, sizeof p, "/2pc/%s/%s", side[i].branch, ops[k]);
            if (target_url(o, i == 0, p, u[k], sizeof u[k]) != 0) {
                printf("error: a branch URL is too long\n");
                return submit_or_abort(c, o, gid, true);
            }
        }
        if (dtx_register_2pc(c, gid, side[i].branch, u[0], u[1], u[2], side[i].body, NULL) != 0) {
            api_error(c, "register");
            return submit_or_abort(c, o, gid, true);
        }
    }
    if (o->no_submit) {
        printf("2pc transfer %s: not submitted (--no-submit)\n", gid);
        return EXIT_ERROR;
    }
    return submit_or_abort(c, o, gid, false);
}

static size_t discard(char *p, size_t size, size_t n, void *ud)
{
    (void)p;
    (void)ud;
    return size * n;
}

/* One plain HTTP call: POST body (with Dtx-Gid: gid, and Dtx-Branch: branch
 * unless NULL) when body is not NULL, else GET. Returns the HTTP status, 0
 * if no answer came. */
static long http_call(const char *url, const char *gid, const char *branch, const char *body)
{
    char hdr[DTX_GID_MAX + 16], bhdr[DTX_BRANCH_MAX + 16];
    snprintf(hdr, sizeof hdr, "Dtx-Gid: %s", gid != NULL ? gid : "");
    snprintf(bhdr, sizeof bhdr, "Dtx-Branch: %s", branch != NULL ? branch : "");
    CURL *h = curl_easy_init();
    if (h == NULL)
        return 0;
    struct curl_slist *hs = curl_slist_append(NULL, "Content-Type: application/json");
    struct curl_slist *hs2 = hs != NULL && gid != NULL ? curl_slist_append(hs, hdr) : hs;
    if (hs2 != NULL && branch != NULL) {
        hs = hs2;
        hs2 = curl_slist_append(hs, bhdr);
    }
    long status = 0;
    if (hs2 != NULL) {
        hs = hs2;
        curl_easy_setopt(h, CURLOPT_URL, url);
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hs);
        if (body != NULL)
            curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);
        curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 30000L);
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        if (curl_easy_perform(h) == CURLE_OK)
            curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    }
    curl_slist_free_all(hs);
    curl_easy_cleanup(h);
    return status;
}

/* Does the payee's account exist? GET B/accounts/ID: 1 yes, 0 no (404),
 * -1 unknown. */
static int payee_exists(const struct opts *o)
{
    char *id = curl_easy_escape(NULL, o->to_acct, 0);
    if (id == NULL)
        return -1;
    char url[URL_MAX + 160];
    snprintf(url, sizeof url, "%s/accounts/%s", o->to_url, id);
    curl_free(id);
    long st = http_call(url, NULL, NULL, NULL);
    return st == 200 ? 1 : st == 404 ? 0 : -1;
}

static int run_msg(struct dtx_client *c, const struct opts *o, const char *pa, const char *pb)
{
    char check[URL_MAX * 3 + 64], credit[URL_MAX * 3 + 64], gid[DTX_GID_MAX + 1];
    struct dtx_spec *s = NULL;
    if (target_url(o, true, "/msg/check", check, sizeof check) != 0 ||
        target_url(o, false, "/msg/credit", credit, sizeof credit) != 0 ||
        dtx_msg_new(check, &s) != 0 || dtx_msg_add_step(s, credit, pb) != 0) {
        dtx_spec_free(s);
        printf("error: cannot build the msg\n");
        return EXIT_ERROR;
    }
    int rc = create_prepared(c, o, s, gid, sizeof gid);
    dtx_spec_free(s);
    if (rc != 0)
        return EXIT_ERROR;

    /* A delivery cannot be refused (dtxd delivers until it succeeds): make
     * sure the payee's account is there before the money leaves A. */
    if (payee_exists(o) == 0) {
        note(o, "no account %s at %s\n", o->to_acct, o->to_url);
        return submit_or_abort(c, o, gid, true);
    }
    char start[URL_MAX + 32];
    snprintf(start, sizeof start, "%s/msg/start", o->from_url);
    long st = http_call(start, gid, NULL, pa);
    if (st == 409) {
        note(o, "local debit on %s refused\n", o->from_acct);
        return submit_or_abort(c, o, gid, true);
    }
    if (st < 200 || st > 299) {
        /* Committed or not, we cannot tell: leave it to dtxd's check. */
        printf("msg transfer %s: local transaction outcome unknown (HTTP %ld); dtxd asks %s\n", gid,
               st, check);
        if (!o->wait)
            return EXIT_ERROR;
        struct dtx_txn *t = NULL;
        if (dtx_wait(c, gid, o->wait_ms, &t) != 0) {
            api_error(c, "waiting for the outcome");
            return EXIT_ERROR;
        }
        int ex = report(o, t);
        dtx_txn_free(t);
        return ex;
    }
    note(o, "local debit on %s committed\n", o->from_acct);
    if (o->no_submit) {
        printf("msg transfer %s: not submitted (--no-submit)\n", gid);
        return EXIT_ERROR;
    }
    return submit_or_abort(c, o, gid, false);
}

static int run_xa(struct dtx_client *c, const struct opts *o, const char *pa, const char *pb)
{
    struct dtx_spec *s = NULL;
    char gid[DTX_GID_MAX + 1];
    if (dtx_2pc_new(&s) != 0)
        return EXIT_ERROR;
    int rc = create_prepared(c, o, s, gid, sizeof gid);
    dtx_spec_free(s);
    if (rc != 0)
        return EXIT_ERROR;
    const struct {
        const char *branch, *base, *body, *acct;
    } side[2] = {{"debit", o->from_url, pa, o->from_acct}, {"credit", o->to_url, pb, o->to_acct}};
    for (int i = 0; i < 2; i++) {
        char url[URL_MAX + 32];
        snprintf(url, sizeof url, "%s/xa/%s", side[i].base, side[i].branch);
        long st = http_call(url, gid, side[i].branch, side[i].body);
        if (st != 200) {
            note(o, "%s on %s: not prepared (HTTP %ld)\n", side[i].branch, side[i].acct, st);
            return submit_or_abort(c, o, gid, true);
        }
        note(o, "%s on %s: prepared and registered\n", side[i].branch, side[i].acct);
    }
    if (o->no_submit) {
        printf("xa transfer %s: not submitted (--no-submit)\n", gid);
        return EXIT_ERROR;
    }
    return submit_or_abort(c, o, gid, false);
}

int main(int argc, char **argv)
{
    struct opts o;
    if (parse_args(argc, argv, &o) != 0) {
        usage(stderr);
        return EXIT_USAGE;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    struct dtx_client *c = NULL;
    if (dtx_client_new(o.dtx, &c) != 0) {
        fprintf(stderr, "transfer: bad --dtx URL %s\n", o.dtx);
        return EXIT_USAGE;
    }
    dtx_client_set_timeout(c, 30000);
    if (o.amqp_url != NULL && dtx_client_set_amqp(c, o.amqp_url, o.amqp_cacert) != 0) {
        fprintf(stderr,
                "transfer: bad --amqp-url (expected amqp[s]://user:pass@host:port/vhost)\n");
        dtx_client_free(c);
        return EXIT_USAGE;
    }
    char *pa = payload(o.from_acct, o.amount);
    char *pb = payload(o.to_acct, o.amount);
    int ex = EXIT_ERROR;
    if (pa != NULL && pb != NULL) {
        if (strcmp(o.mode, "saga") == 0)
            ex = run_saga(c, &o, pa, pb);
        else if (strcmp(o.mode, "tcc") == 0)
            ex = run_tcc(c, &o, pa, pb);
        else if (strcmp(o.mode, "2pc") == 0)
            ex = run_2pc(c, &o, pa, pb);
        else if (strcmp(o.mode, "xa") == 0)
            ex = run_xa(c, &o, pa, pb);
        else
            ex = run_msg(c, &o, pa, pb);
    }
    free(pa);
    free(pb);
    dtx_client_free(c);
    curl_global_cleanup();
    return ex;
}
