/*
 * fuzz_record.c - libFuzzer target: the engine's log record decoder
 * (engine/record.h) on arbitrary bytes.
 *
 * A record reaches record_decode() only after the log's CRC accepted it, so
 * bad input means a bug or a log from elsewhere; still, the decoder must
 * refuse it cleanly (DTX_ECORRUPT, nothing to free) and never crash, leak
 * or allocate without bound. What it accepts must survive a round trip:
 * re-encoded (always in the current layout, also for the old kinds 1 and 2)
 * it decodes again, and encoding that gives the same bytes, so a record
 * rewritten by a compaction snapshot means what the original meant.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/err.h"
#include "engine/record.h"
#include "engine/txn.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);               \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* Append r, decoded, in the current layout of its kind. */
static void encode(struct buf *b, const struct record *r)
{
    switch (r->kind) {
    case REC_TXN:
    case REC_TXN2:
        record_encode_txn(b, r->txn);
        break;
    case REC_BRANCH:
        record_encode_branch(b, r->txn, &r->txn->branches[0]);
        break;
    case REC_UPDATE:
    case REC_UPDATE2: {
        /* record_encode_update reads these fields of the txn and branch */
        const struct record_update *u = &r->update;
        struct txn t = {.gid = u->gid,
                        .state = u->state,
                        .needs_attention = u->needs_attention,
                        .updated_at = u->updated_at,
                        .finished_at = u->finished_at};
        struct branch br = {.idx = u->branch,
                            .state = u->br_state,
                            .prepare_attempts = u->prepare_attempts,
                            .action_attempts = u->action_attempts,
                            .compensate_attempts = u->compensate_attempts,
                            .last_error = u->last_error,
                            .updated_at = u->br_updated_at};
        record_encode_update(b, &t, u->branch == UINT32_MAX ? NULL : &br);
        break;
    }
    default:
        CHECK(!"record_decode accepted an unknown kind");
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct record r;
    memset(&r, 0xA5, sizeof r); /* an OUT parameter: must not be read */
    int rc = record_decode(data, size, &r);
    if (rc != 0) {
        CHECK(rc == DTX_ECORRUPT);
        CHECK(r.txn == NULL && r.update.gid == NULL && r.update.last_error == NULL);
        record_clear(&r); /* harmless on an empty record */
        return 0;
    }
    if (r.kind == REC_TXN || r.kind == REC_TXN2 || r.kind == REC_BRANCH) {
        CHECK(r.txn != NULL && r.txn->gid != NULL);
        CHECK(r.kind != REC_BRANCH || r.txn->nbranches == 1);
        for (uint32_t i = 0; i < r.txn->nbranches; i++) {
            const struct branch *b = &r.txn->branches[i];
            CHECK(b->idx == i && b->txn == r.txn && b->id != NULL && b->action != NULL);
            for (uint32_t k = 0; k < b->nafter; k++)
                CHECK(b->after[k] < r.txn->nbranches && b->after[k] != i);
        }
    } else {
        CHECK(r.txn == NULL && r.update.gid != NULL);
    }

    struct buf one, two;
    struct record back;
    buf_init(&one, SIZE_MAX / 2);
    buf_init(&two, SIZE_MAX / 2);
    encode(&one, &r);
    CHECK(record_decode(one.data, one.len, &back) == 0);
    encode(&two, &back);
    CHECK(one.len == two.len && memcmp(one.data, two.data, one.len) == 0);
    /* the current layouts read back byte for byte, but for the booleans
     * (needs_attention: any non-zero byte is 1) */
    if (r.kind == REC_TXN2 || r.kind == REC_BRANCH || r.kind == REC_UPDATE2)
        CHECK(one.len == size);
    record_clear(&back);
    record_clear(&r);
    buf_free(&one);
    buf_free(&two);
    return 0;
}
