/*
 * record.h - what the engine writes to the store, and reads back.
 *
 * Records are little-endian (common/codec.h) and start with a kind byte.
 * Kinds written today:
 *
 *   REC_TXN2 (3): a whole transaction — written when it is created, when it
 *   starts to abort (so the set of started branches is on disk before any
 *   compensation is sent) and for every transaction in a compaction snapshot.
 *     str gid | u64 seq | u8 type | u8 state | u8 needs_attention
 *     | u8 flags (bit 0: concurrent saga) | i64 created_at | i64 updated_at
 *     | i64 finished_at (wall ms) | u32 retry.initial_ms | u32 retry.max_ms
 *     | u32 retry.limit | u32 request_timeout_ms | u64 timeout_ms
 *     | str check (nullable; msg) | u32 check_attempts
 *     | u32 nbranches | nbranches x BRANCH
 *   BRANCH:
 *     str id | str prepare (nullable) | str action | str compensate (nullable)
 *     | str payload | u8 state | u32 prepare_attempts | u32 action_attempts
 *     | u32 compensate_attempts | str last_error (nullable) | i64 updated_at
 *     | u32 nafter | nafter x u32 step index (0-based)
 *
 *   REC_BRANCH (4): a branch registered to a tcc/2pc transaction; it becomes
 *   the transaction's next branch (replayed twice it is ignored: same id).
 *     str gid | BRANCH
 *
 *   REC_UPDATE2 (5): a state change of one transaction and at most one branch.
 *     str gid | u8 state | u8 needs_attention | i64 updated_at | i64 finished_at
 *     | u32 branch index (0xFFFFFFFF = none)
 *     [ u8 state | u32 prepare_attempts | u32 action_attempts
 *       | u32 compensate_attempts | str last_error (nullable)
 *       | i64 updated_at ]   (when a branch is named)
 *
 * Read but no longer written:
 *
 *   REC_UPDATE (2): as REC_UPDATE2 without prepare_attempts.
 *
 *   REC_TXN (1): the first transaction layout (sagas only): as REC_TXN2
 *   without check and check_attempts, and each branch without id (it is
 *   its 1-based position), prepare and prepare_attempts.
 *
 * A str is u32 length + bytes (0xFFFFFFFF = null). This is the first
 * released layout; a later change to a kind's layout gets a new kind number,
 * and the decoder keeps reading the old one, so existing logs stay readable. Updates carry absolute
 * values, never deltas, so replaying one twice (after a compaction snapshot
 * that already includes it) is harmless. The framing around each record
 * (length, CRC, sequence, salt) is the store's business: see store/wal.c.
 */
#ifndef DTX_RECORD_H
#define DTX_RECORD_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "engine/txn.h"

enum record_kind { REC_TXN = 1, REC_UPDATE = 2, REC_TXN2 = 3, REC_BRANCH = 4, REC_UPDATE2 = 5 };

struct record_update {
    char *gid;
    enum txn_state state;
    int needs_attention;
    int64_t updated_at, finished_at;
    uint32_t branch; /* UINT32_MAX = none */
    enum branch_state br_state;
    uint32_t prepare_attempts, action_attempts, compensate_attempts;
    char *last_error;
    int64_t br_updated_at;
};

struct record {
    enum record_kind kind;
    struct txn *txn;             /* REC_TXN/REC_TXN2: a new txn, owned by the caller;
                                    REC_BRANCH: gid and the one branch */
    struct record_update update; /* REC_UPDATE: strings owned by the record */
};

/* Append the encoding of a whole transaction to b. */
void record_encode_txn(struct buf *b, const struct txn *t);
/* Append the registration of branch br of t. */
void record_encode_branch(struct buf *b, const struct txn *t, const struct branch *br);
/* Append an update of t's state and, when br is not NULL, of that branch. */
void record_encode_update(struct buf *b, const struct txn *t, const struct branch *br);

/*
 * Decode one record. On success returns 0 and fills *out (free its contents
 * with record_clear unless the caller took out->txn, which it then sets to
 * NULL). Returns DTX_ECORRUPT for anything malformed (short, bad enum, bad
 * counts); *out is then empty.
 */
int record_decode(const void *p, size_t len, struct record *out /* OUT */);
void record_clear(struct record *r);

#endif
