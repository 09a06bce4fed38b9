/*
 * fuzz_amqp_reply.c - libFuzzer target: decoding a participant's AMQP reply
 * (amqp_reply_parse in transport/amqp.h), which any client of the broker
 * can publish to dtxd's reply queue.
 *
 * Input: "<correlation_id>\n<Dtx-Result>\n<body>". With a single '\n' the
 * reply has no Dtx-Result header ("<correlation_id>\n<body>"); with none it
 * is only a correlation id. Each part is handed over in a buffer of its own,
 * of exactly its length and without a NUL (NULL when empty), as rabbitmq-c
 * hands them, so that a read past any of them is caught.
 *
 * Checked: the result is 0 or DTX_ENOTFOUND; 0 only for "<nonce>.<digits>"
 * with the number it decodes; the outcome is one of the four, with an empty
 * error exactly for SUCCESS, NUL-terminated within the array.
 *
 * Also: the error is valid UTF-8 whenever the body is (a FAILURE's text is
 * cut between characters): it becomes the branch's last_error, which GET
 * /v1/transactions/{gid} returns in a JSON string.
 */
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "transport/amqp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);               \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static const char nonce[] = "00ff00ff00ff00ff"; /* 16 hex digits, as dtxd makes them */

/* A copy of n bytes at p in a buffer of exactly n bytes, or NULL if n is 0. */
static char *part(const uint8_t *p, size_t n)
{
    if (n == 0)
        return NULL;
    char *c = malloc(n);
    memcpy(c, p, n);
    return c;
}

static int is_utf8(const char *s, size_t n)
{
    json_t *j = json_stringn(s ? s : "", n);
    json_decref(j);
    return j != NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *end = data + size;
    const uint8_t *nl1 = memchr(data, '\n', size);
    const uint8_t *nl2 = nl1 ? memchr(nl1 + 1, '\n', (size_t)(end - nl1 - 1)) : NULL;
    size_t corr_len = (size_t)((nl1 ? nl1 : end) - data);
    const uint8_t *res_p = NULL, *body_p = end;
    size_t res_len = 0;
    if (nl2 != NULL) {
        res_p = nl1 + 1;
        res_len = (size_t)(nl2 - res_p);
        body_p = nl2 + 1;
    } else if (nl1 != NULL) {
        body_p = nl1 + 1;
    }
    size_t body_len = (size_t)(end - body_p);

    char *corr = part(data, corr_len);
    /* a header that is present but empty is an empty, non-NULL value */
    char *res = res_p ? malloc(res_len ? res_len : 1) : NULL;
    if (res_len)
        memcpy(res, res_p, res_len);
    char *body = part(body_p, body_len);

    struct amqp_reply r;
    memset(&r, 0xA5, sizeof r);
    int rc = amqp_reply_parse(nonce, corr, corr_len, res, res_len, body, body_len, &r);
    if (rc != 0) {
        CHECK(rc == DTX_ENOTFOUND);
        goto out;
    }
    size_t nl = strlen(nonce);
    CHECK(corr_len > nl + 1 && memcmp(corr, nonce, nl) == 0 && corr[nl] == '.');
    uint64_t seq = 0;
    for (size_t i = nl + 1; i < corr_len; i++) {
        CHECK(corr[i] >= '0' && corr[i] <= '9');
        CHECK(seq <= (UINT64_MAX - (uint64_t)(corr[i] - '0')) / 10);
        seq = seq * 10 + (uint64_t)(corr[i] - '0');
    }
    CHECK(r.seq == seq);
    CHECK(r.outcome == CALL_SUCCESS || r.outcome == CALL_FAILURE || r.outcome == CALL_ONGOING ||
          r.outcome == CALL_TRANSIENT);
    CHECK(memchr(r.error, '\0', sizeof r.error) != NULL);
    CHECK((r.outcome == CALL_SUCCESS) == (r.error[0] == '\0'));
    if (is_utf8(body, body_len))
        CHECK(is_utf8(r.error, strlen(r.error)));
out:
    free(corr);
    free(res);
    free(body);
    return 0;
}
