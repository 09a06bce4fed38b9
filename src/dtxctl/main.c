/*
 * dtxctl - the command line of dtx, on top of libdtx's client (include/dtx.h).
 *
 *   dtxctl [--url URL] [--json] [--timeout MS] COMMAND [ARGS]
 *
 * Every command is one or two API calls; this file only parses arguments,
 * reads the input file and prints. Tables are for people (columns sized to
 * their widest cell, two spaces apart); --json prints the coordinator's own
 * JSON for scripts. Errors are one line on stderr; the exit code says which
 * class of error it was (see usage_text), and those numbers are stable.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dtx.h"

#define DEFAULT_URL     "http://127.0.0.1:7788"
#define INPUT_MAX       (16 * 1024 * 1024) /* dtxd's largest body (--max-body) */
#define WAIT_DEFAULT_MS 30000

/* Exit codes: part of the interface, keep them stable. */
enum {
    EXIT_OK = 0,
    EXIT_USAGE = 1,         /* bad arguments, unreadable or invalid input file */
    EXIT_REFUSED = 2,       /* the coordinator refused the request (4xx/5xx, incl. 409) */
    EXIT_NOT_FOUND = 3,     /* no such transaction */
    EXIT_UNREACHABLE = 4,   /* no connection, a timeout, or an answer that is not the API */
    EXIT_TXN_FAILED = 5,    /* submit --wait / show: the transaction is failed */
    EXIT_STILL_RUNNING = 6, /* submit --wait: the wait bound passed before it finished */
    EXIT_ATTENTION = 7,     /* check: some transaction needs attention */
};

static const char usage_text[] =
    "usage: dtxctl [--url URL] [--json] [--timeout MS] COMMAND [ARGS]\n"
    "\n"
    "Commands:\n"
    "  submit [--wait] [--wait-timeout MS] FILE\n"
    "      Create the transaction described by FILE (JSON, any type; '-' reads\n"
    "      stdin). A tcc, 2pc or msg is created prepared. --wait polls until the\n"
    "      transaction has finished, for at most --wait-timeout (default 30000).\n"
    "  list [--status S] [--type T] [--limit N] [--cursor C]\n"
    "      List transactions, newest first, N a page (default 50, at most 1000).\n"
    "  show GID\n"
    "      Show a transaction and its branches.\n"
    "  retry GID\n"
    "      Try every waiting retry of GID now.\n"
    "  abort [--wait] [--wait-timeout MS] GID\n"
    "      Roll GID back; --wait answers once it has finished or MS passed.\n"
    "  check\n"
    "      List the transactions flagged needs_attention (an operation that must\n"
    "      succeed exhausted its retries and is retried at the longest interval);\n"
    "      exit 7 if there is any, 0 if none.\n"
    "  help\n"
    "      This text.\n"
    "\n"
    "Options:\n"
    "  --url URL       the coordinator (default $DTX_URL, else " DEFAULT_URL ")\n"
    "  --json          print the coordinator's JSON instead of tables\n"
    "  --timeout MS    limit of each request (default 30000; 0: none)\n"
    "  -h, --help      this text\n"
    "\n"
    "Exit codes:\n"
    "  0  success\n"
    "  1  usage error: bad arguments, unreadable or invalid input file\n"
    "  2  the coordinator refused the request (invalid body, conflict, wrong state)\n"
    "  3  no such transaction\n"
    "  4  cannot reach the coordinator, timeout, or an answer that is not the API\n"
    "  5  the transaction is failed (submit --wait, show)\n"
    "  6  submit --wait: the wait bound passed before the transaction finished\n"
    "  7  check: some transaction needs attention\n";

struct opts {
    const char *url;
    int json;
    int64_t timeout_ms;
    int wait;
    int64_t wait_timeout_ms;
    struct dtx_list_opts list;
    const char *args[2]; /* positional arguments after the command */
    int nargs;
};

/* ---- messages ----------------------------------------------------------- */

static int usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "dtxctl: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, " (try dtxctl --help)\n");
    return EXIT_USAGE;
}

static int exit_code_of(int rc)
{
    switch (rc) {
    case DTX_OK:
        return EXIT_OK;
    case DTX_EINVAL:
        return EXIT_USAGE;
    case DTX_EAPI:
    case DTX_ECONFLICT:
        return EXIT_REFUSED;
    case DTX_ENOTFOUND:
        return EXIT_NOT_FOUND;
    case DTX_ETIMEDOUT:
        return EXIT_STILL_RUNNING;
    default:
        return EXIT_UNREACHABLE;
    }
}

/* Print the client's last error as one line; return the exit code of rc. */
static int report(struct dtx_client *c, const char *what, int rc)
{
    const struct dtx_error *e = dtx_client_last_error(c);

    fprintf(stderr, "dtxctl: %s: %s", what, dtx_strerror(rc));
    if (e->message[0] != '\0')
        fprintf(stderr, ": %s", e->message);
    if (e->http_status >= 300) {
        fprintf(stderr, " (HTTP %d", e->http_status);
        if (e->api_code[0] != '\0')
            fprintf(stderr, ", code %s", e->api_code);
        if (e->field[0] != '\0')
            fprintf(stderr, ", field %s", e->field);
        fprintf(stderr, ")");
    }
    fprintf(stderr, "\n");
    return exit_code_of(rc);
}

/* ---- tables ------------------------------------------------------------- */

#define COLS_MAX 8

struct table {
    size_t ncols, nrows, cap;
    const char **cells; /* nrows * ncols, row-major; NULL prints "-" */
    size_t width[COLS_MAX];
};

static int table_add(struct table *t, const char *const *row)
{
    if (t->nrows == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 16;
        const char **p = realloc(t->cells, cap * t->ncols * sizeof *p);
        if (p == NULL)
            return -1;
        t->cells = p;
        t->cap = cap;
    }
    for (size_t i = 0; i < t->ncols; i++) {
        const char *s = row[i] != NULL ? row[i] : "-";
        size_t w = strlen(s);
        t->cells[t->nrows * t->ncols + i] = s;
        if (w > t->width[i])
            t->width[i] = w;
    }
    t->nrows++;
    return 0;
}

/* Print the rows, padding every cell but the last non-empty one of its row. */
static void table_print(const struct table *t)
{
    for (size_t r = 0; r < t->nrows; r++) {
        const char *const *row = &t->cells[r * t->ncols];
        size_t last = t->ncols - 1;

        while (last > 0 && row[last][0] == '\0')
            last--;
        for (size_t i = 0; i < last; i++)
            printf("%-*s  ", (int)t->width[i], row[i]);
        printf("%s\n", row[last]);
    }
}

/* ---- printing transactions ---------------------------------------------- */

static void print_json(const char *json)
{
    fputs(json, stdout);
    if (json[0] == '\0' || json[strlen(json) - 1] != '\n')
        putchar('\n');
}

static const char *ms_text(char *buf, size_t cap, int64_t ms)
{
    if (ms < 0)
        return "-";
    snprintf(buf, cap, "%" PRId64 " ms", ms);
    return buf;
}

/* "1,2" for a step's after list (empty: NULL, shown as "-"). */
static const char *after_text(const struct dtx_branch *br, char *buf, size_t cap)
{
    size_t used = 0;

    if (br->n_after == 0)
        return NULL;
    buf[0] = '\0';
    for (size_t k = 0; k < br->n_after && used + 12 < cap; k++)
        used += (size_t)snprintf(buf + used, cap - used, "%s%d", k ? "," : "", br->after[k]);
    return buf;
}

/*
 * The branch table of show: a row per op of each branch (saga: action and
 * compensate; 2pc: prepare, commit, rollback; ...), the branch's id, status,
 * after list and last error on its first row. Returns 0 or -1 (no memory).
 */
static int print_branches(const struct dtx_txn *t)
{
    static const char *const head[] = {"BRANCH",   "STATUS", "AFTER",     "OP",
                                       "ATTEMPTS", "URL",    "LAST ERROR"};
    struct table tb = {0};
    char(*numbers)[24] = NULL; /* attempts, per branch and op */
    char(*afters)[128] = NULL; /* after lists, per branch */
    const char *cells[COLS_MAX];
    int has_after = 0, rc = -1;
    size_t col;

    for (size_t i = 0; i < t->n_branches; i++)
        has_after |= t->branches[i].has_after;
    tb.ncols = has_after ? 7 : 6;
    numbers = calloc(t->n_branches * DTX_BRANCH_OPS_MAX, sizeof *numbers);
    afters = calloc(t->n_branches, sizeof *afters);
    if (numbers == NULL || afters == NULL)
        goto done;
    col = 0;
    for (size_t k = 0; k < 7; k++) {
        if (k != 2 || has_after)
            cells[col++] = head[k];
    }
    if (table_add(&tb, cells) != 0)
        goto done;
    for (size_t i = 0; i < t->n_branches; i++) {
        const struct dtx_branch *br = &t->branches[i];
        size_t nops = br->n_ops > 0 ? br->n_ops : 1;

        for (size_t k = 0; k < nops; k++) {
            const struct dtx_branch_op *op = k < br->n_ops ? &br->ops[k] : NULL;
            char *num = numbers[i * DTX_BRANCH_OPS_MAX + k];

            if (op != NULL && op->attempts >= 0)
                snprintf(num, sizeof numbers[0], "%" PRId64, op->attempts);
            col = 0;
            cells[col++] = k == 0 ? br->id : "";
            cells[col++] = k == 0 ? br->status : "";
            if (has_after)
                cells[col++] = k == 0 ? after_text(br, afters[i], sizeof afters[i]) : "";
            cells[col++] = op != NULL ? op->op : NULL;
            cells[col++] = num[0] != '\0' ? num : NULL;
            cells[col++] = op != NULL ? op->url : NULL;
            cells[col++] = k == 0 ? br->last_error : "";
            if (table_add(&tb, cells) != 0)
                goto done;
        }
    }
    putchar('\n');
    table_print(&tb);
    rc = 0;
done:
    free(tb.cells);
    free(numbers);
    free(afters);
    return rc;
}

/* show: a block of the transaction's fields, then its branch table. */
static int print_txn(const struct dtx_txn *t)
{
    char a[32], b[32], c[32], d[32], e[32];

    printf("gid:              %s\n", t->gid);
    printf("type:             %s\n", t->type);
    printf("status:           %s\n", t->status);
    printf("needs attention:  %s\n", t->needs_attention ? "yes" : "no");
    printf("created:          %s\n", t->created_at);
    printf("updated:          %s\n", t->updated_at);
    printf("finished:         %s\n", t->finished_at ? t->finished_at : "-");
    if (t->check != NULL)
        printf("check:            %s\n", t->check);
    if (t->retry_limit >= 0)
        snprintf(c, sizeof c, "%" PRId64, t->retry_limit);
    printf("retry:            initial %s, max %s, limit %s\n",
           ms_text(a, sizeof a, t->retry_initial_interval_ms),
           ms_text(b, sizeof b, t->retry_max_interval_ms), t->retry_limit >= 0 ? c : "-");
    printf("timeouts:         request %s, transaction %s\n",
           ms_text(d, sizeof d, t->request_timeout_ms),
           t->timeout_ms == 0 ? "none" : ms_text(e, sizeof e, t->timeout_ms));
    printf("branches:         %zu\n", t->n_branches);
    return t->n_branches > 0 ? print_branches(t) : 0;
}

/* list: one row per transaction, and how to get the next page. */
static int print_list(const struct dtx_txn_list *l)
{
    static const char *const head[] = {"GID", "TYPE", "STATUS", "ATTENTION", "CREATED", "BRANCHES"};
    struct table tb = {.ncols = 6};
    char(*counts)[24] = calloc(l->n + 1, sizeof *counts);
    const char *cells[COLS_MAX];
    int rc = -1;

    if (counts == NULL || table_add(&tb, head) != 0)
        goto done;
    for (size_t i = 0; i < l->n; i++) {
        const struct dtx_txn *t = &l->items[i];

        if (t->branch_count >= 0)
            snprintf(counts[i], sizeof counts[i], "%" PRId64, t->branch_count);
        cells[0] = t->gid;
        cells[1] = t->type;
        cells[2] = t->status;
        cells[3] = t->needs_attention ? "yes" : "no";
        cells[4] = t->created_at;
        cells[5] = counts[i][0] != '\0' ? counts[i] : NULL;
        if (table_add(&tb, cells) != 0)
            goto done;
    }
    table_print(&tb);
    if (l->next_cursor != NULL)
        printf("\nnext page: dtxctl list --cursor %s\n", l->next_cursor);
    rc = 0;
done:
    free(tb.cells);
    free(counts);
    return rc;
}

/* Print t as the options ask; return the exit code for having shown it. */
static int show(const struct opts *o, const struct dtx_txn *t)
{
    if (o->json)
        print_json(t->json);
    else if (print_txn(t) != 0) {
        fprintf(stderr, "dtxctl: out of memory\n");
        return EXIT_UNREACHABLE;
    }
    return EXIT_OK;
}

/* ---- commands ----------------------------------------------------------- */

/* Read all of path ('-': stdin) into a NUL-terminated buffer. */
static int read_input(const char *path, char **out)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    size_t len = 0, cap = 64 * 1024;
    char *buf;

    if (f == NULL) {
        fprintf(stderr, "dtxctl: submit: cannot open %s: %s\n", path, strerror(errno));
        return EXIT_USAGE;
    }
    buf = malloc(cap);
    while (buf != NULL) {
        size_t n = fread(buf + len, 1, cap - len - 1, f);
        len += n;
        if (n == 0)
            break;
        if (len + 1 == cap) {
            char *p = cap > INPUT_MAX ? NULL : realloc(buf, cap * 2);
            if (p == NULL) {
                free(buf);
                buf = NULL;
                fprintf(stderr, "dtxctl: submit: %s: larger than %d bytes\n", path, INPUT_MAX);
                goto fail;
            }
            buf = p;
            cap *= 2;
        }
    }
    if (buf == NULL) {
        fprintf(stderr, "dtxctl: submit: out of memory\n");
        goto fail;
    }
    if (ferror(f)) {
        fprintf(stderr, "dtxctl: submit: cannot read %s: %s\n", path, strerror(errno));
        free(buf);
        goto fail;
    }
    buf[len] = '\0';
    if (f != stdin)
        fclose(f);
    *out = buf;
    return EXIT_OK;
fail:
    if (f != stdin)
        fclose(f);
    return EXIT_USAGE;
}

static int cmd_submit(struct dtx_client *c, const struct opts *o)
{
    const char *path = o->args[0];
    struct dtx_txn *t = NULL, *done = NULL;
    char what[64 + 256];
    char *text = NULL;
    int rc, code;

    if (o->nargs != 1)
        return usage_error("submit: expected one FILE (or - for stdin)%s", "");
    code = read_input(path, &text);
    if (code != EXIT_OK)
        return code;
    snprintf(what, sizeof what, "submit %s", path);
    rc = dtx_create_json(c, text, &t);
    free(text);
    if (rc != DTX_OK)
        return report(c, what, rc);
    if (o->wait && !dtx_txn_is_final(t) && strcmp(t->status, "prepared") != 0) {
        rc = dtx_wait(c, t->gid, o->wait_timeout_ms, &done);
        if (rc != DTX_OK) {
            snprintf(what, sizeof what, "submit %s: wait for %s", path, t->gid);
            dtx_txn_free(t);
            return report(c, what, rc);
        }
        dtx_txn_free(t);
        t = done;
    }
    code = show(o, t);
    if (code == EXIT_OK && dtx_txn_is_final(t) && strcmp(t->status, "failed") == 0)
        code = EXIT_TXN_FAILED;
    dtx_txn_free(t);
    return code;
}

static int cmd_list(struct dtx_client *c, const struct opts *o)
{
    struct dtx_txn_list *l;
    int rc, code = EXIT_OK;

    if (o->nargs != 0)
        return usage_error("list: unexpected argument '%s'", o->args[0]);
    rc = dtx_list(c, &o->list, &l);
    if (rc != DTX_OK)
        return report(c, "list", rc);
    if (o->json)
        print_json(l->json);
    else if (print_list(l) != 0) {
        fprintf(stderr, "dtxctl: out of memory\n");
        code = EXIT_UNREACHABLE;
    }
    dtx_txn_list_free(l);
    return code;
}

/* check: every transaction flagged needs_attention (all pages). */
static int cmd_check(struct dtx_client *c, const struct opts *o)
{
    struct dtx_list_opts lo = {.limit = 1000, .needs_attention = 1};
    size_t found = 0;
    char *cursor = NULL;

    if (o->nargs != 0)
        return usage_error("check: unexpected argument '%s'", o->args[0]);
    for (;;) {
        struct dtx_txn_list *l;
        lo.cursor = cursor;
        int rc = dtx_list(c, &lo, &l);
        free(cursor);
        cursor = NULL;
        if (rc != DTX_OK)
            return report(c, "check", rc);
        found += l->n;
        if (o->json)
            print_json(l->json);
        else if (l->n > 0 && print_list(l) != 0) {
            dtx_txn_list_free(l);
            fprintf(stderr, "dtxctl: out of memory\n");
            return EXIT_UNREACHABLE;
        }
        if (l->next_cursor != NULL && (cursor = strdup(l->next_cursor)) == NULL) {
            dtx_txn_list_free(l);
            fprintf(stderr, "dtxctl: out of memory\n");
            return EXIT_UNREACHABLE;
        }
        dtx_txn_list_free(l);
        if (cursor == NULL)
            break;
    }
    if (!o->json && found == 0)
        printf("no transaction needs attention\n");
    return found > 0 ? EXIT_ATTENTION : EXIT_OK;
}

/* show, retry and abort: one GID, one call, the transaction printed. */
static int cmd_gid(struct dtx_client *c, const struct opts *o, const char *name)
{
    char what[64 + DTX_GID_MAX];
    struct dtx_txn *t = NULL;
    int rc, code;

    if (o->nargs != 1)
        return usage_error("%s: expected one GID", name);
    snprintf(what, sizeof what, "%s %.*s", name, DTX_GID_MAX, o->args[0]);
    if (strcmp(name, "show") == 0)
        rc = dtx_get(c, o->args[0], &t);
    else if (strcmp(name, "retry") == 0)
        rc = dtx_retry(c, o->args[0], &t);
    else
        rc = dtx_abort(c, o->args[0], o->wait ? o->wait_timeout_ms : 0, &t);
    if (rc != DTX_OK)
        return report(c, what, rc);
    code = show(o, t);
    if (code == EXIT_OK && strcmp(name, "show") == 0 && strcmp(t->status, "failed") == 0)
        code = EXIT_TXN_FAILED;
    dtx_txn_free(t);
    return code;
}

/* ---- arguments ---------------------------------------------------------- */

/* Parse a whole decimal number >= 0. Returns 0 or -1. */
static int parse_num(const char *s, int64_t *out)
{
    char *end;
    long long v;

    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < 0)
        return -1;
    *out = (int64_t)v;
    return 0;
}

static int parse_ms(const char *name, const char *s, int64_t *out)
{
    if (parse_num(s, out) != 0)
        return usage_error("%s: expected a number of milliseconds", name);
    return EXIT_OK;
}

/* Options that take a value, as "--name value" or "--name=value". */
static const char *const value_opts[] = {"--url",  "--timeout", "--wait-timeout", "--status",
                                         "--type", "--cursor",  "--limit"};

/*
 * If argv[*i] is one of value_opts, set *name to it and *value to its value
 * (moving *i past a separate value) and return 1; return 0 for any other
 * argument, and -1 for a value option without a value.
 */
static int value_opt(int argc, char **argv, int *i, const char **name, const char **value)
{
    const char *a = argv[*i];

    for (size_t k = 0; k < sizeof value_opts / sizeof value_opts[0]; k++) {
        size_t n = strlen(value_opts[k]);

        if (strncmp(a, value_opts[k], n) != 0 || (a[n] != '\0' && a[n] != '='))
            continue;
        *name = value_opts[k];
        if (a[n] == '=') {
            *value = a + n + 1;
            return 1;
        }
        if (*i + 1 >= argc)
            return -1;
        (*i)++;
        *value = argv[*i];
        return 1;
    }
    return 0;
}

/* Apply value option name=v to o. Returns an exit code (EXIT_OK to go on). */
static int set_value_opt(struct opts *o, const char *name, const char *v)
{
    int64_t n;

    if (strcmp(name, "--url") == 0)
        o->url = v;
    else if (strcmp(name, "--timeout") == 0)
        return parse_ms(name, v, &o->timeout_ms);
    else if (strcmp(name, "--wait-timeout") == 0)
        return parse_ms(name, v, &o->wait_timeout_ms);
    else if (strcmp(name, "--status") == 0)
        o->list.status = v;
    else if (strcmp(name, "--type") == 0)
        o->list.type = v;
    else if (strcmp(name, "--cursor") == 0)
        o->list.cursor = v;
    else if (parse_num(v, &n) != 0 || n < 1 || n > 1000)
        return usage_error("--limit: expected a number from 1 to 1000%s", "");
    else
        o->list.limit = (int)n;
    return EXIT_OK;
}

int main(int argc, char **argv)
{
    struct opts o = {.timeout_ms = DTX_CLIENT_TIMEOUT_MS, .wait_timeout_ms = WAIT_DEFAULT_MS};
    const char *cmd = NULL;
    struct dtx_client *c;
    int code, rc;

    o.url = getenv("DTX_URL");
    if (o.url == NULL || o.url[0] == '\0')
        o.url = DEFAULT_URL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *name = NULL, *v = NULL;
        int has = value_opt(argc, argv, &i, &name, &v);

        if (has < 0)
            return usage_error("%s: expected a value", name);
        if (has > 0) {
            code = set_value_opt(&o, name, v);
            if (code != EXIT_OK)
                return code;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0 ||
                   (cmd == NULL && strcmp(a, "help") == 0)) {
            fputs(usage_text, stdout);
            return EXIT_OK;
        } else if (strcmp(a, "--json") == 0) {
            o.json = 1;
        } else if (strcmp(a, "--wait") == 0) {
            o.wait = 1;
        } else if (a[0] == '-' && a[1] != '\0') {
            return usage_error("unknown option '%s'", a);
        } else if (cmd == NULL) {
            cmd = a;
        } else if (o.nargs < 2) {
            o.args[o.nargs++] = a;
        } else {
            return usage_error("unexpected argument '%s'", a);
        }
    }
    if (cmd == NULL)
        return usage_error("no command given%s", "");
    if (strcmp(cmd, "submit") != 0 && strcmp(cmd, "list") != 0 && strcmp(cmd, "show") != 0 &&
        strcmp(cmd, "retry") != 0 && strcmp(cmd, "abort") != 0 && strcmp(cmd, "check") != 0)
        return usage_error("unknown command '%s'", cmd);
    if ((o.wait || o.wait_timeout_ms != WAIT_DEFAULT_MS) && strcmp(cmd, "submit") != 0 &&
        strcmp(cmd, "abort") != 0)
        return usage_error("%s: --wait and --wait-timeout are for submit and abort", cmd);
    if ((o.list.status || o.list.type || o.list.cursor || o.list.limit) && strcmp(cmd, "list") != 0)
        return usage_error("%s: --status, --type, --limit and --cursor are for list", cmd);

    rc = dtx_client_new(o.url, &c);
    if (rc == DTX_EINVAL)
        return usage_error("--url: expected http://host:port or https://..., not '%s'", o.url);
    if (rc != DTX_OK) {
        fprintf(stderr, "dtxctl: %s\n", dtx_strerror(rc));
        return EXIT_UNREACHABLE;
    }
    dtx_client_set_timeout(c, o.timeout_ms);
    if (strcmp(cmd, "submit") == 0)
        code = cmd_submit(c, &o);
    else if (strcmp(cmd, "list") == 0)
        code = cmd_list(c, &o);
    else if (strcmp(cmd, "check") == 0)
        code = cmd_check(c, &o);
    else
        code = cmd_gid(c, &o, cmd);
    dtx_client_free(c);
    return code;
}
