/*
 * store.h - what the engine needs from durable storage.
 *
 * The engine hands the store opaque records (bytes it encoded itself) and is
 * told, on the loop thread, when each one is durable. Nothing the engine does
 * in response to a record (reply to a client, call a participant) may happen
 * before that callback. On start-up the store replays every durable record in
 * the order it was appended. Compaction replaces everything appended so far by
 * a snapshot the engine builds, so the log does not grow without bound.
 *
 * The embedded log (wal.c) is the implementation today; a PostgreSQL store will
 * implement the same operations. The engine never sees files or segments.
 */
#ifndef DTX_STORE_H
#define DTX_STORE_H

#include <stddef.h>
#include <stdlib.h>

/* Called on the loop thread once the record is durable. status is always 0:
 * a failed write or fsync ends the process instead (DESIGN §3). */
typedef void (*store_done_fn)(void *arg, int status);
/* Called once per durable record during recovery, oldest first. Returning
 * non-zero stops recovery with that code. */
typedef int (*store_replay_fn)(void *arg, const void *rec, size_t len);

struct store;

struct store_ops {
    /* Replay every durable record. Must be called once, before any append.
     * Returns 0, or DTX_ECORRUPT with store_last_error() naming file/offset. */
    int (*recover)(struct store *s, store_replay_fn fn, void *arg);
    /* Queue a copy of rec; cb(arg, 0) runs on the loop once it is durable.
     * Records become durable, and their callbacks run, in append order. */
    int (*append)(struct store *s, const void *rec, size_t len, store_done_fn cb, void *arg);
    /* Non-zero when the store would like a compaction (the engine asks after
     * its appends; cheap to call). */
    int (*compact_due)(struct store *s);
    /*
     * Compaction in two steps, so that the caller can build the snapshot off
     * its own thread. compact_begin places the cut: every record appended
     * before it will be replaced by a snapshot of exactly n records. The
     * snapshot must describe the state produced by those records, or a later
     * state (records appended after the cut replay after it, and updates are
     * absolute, so a newer snapshot is harmless). Returns 0, DTX_EAGAIN while
     * a compaction runs, DTX_ETOOBIG, DTX_ESTATE/DTX_ECLOSED.
     */
    int (*compact_begin)(struct store *s, size_t n);
    /*
     * Hand over the snapshot of the compaction begun last: blob holds its n
     * records back to back, lens[i] the length of the i-th (n as given to
     * compact_begin). Takes ownership of blob and lens (free()d by the store)
     * in every case. Pass blob NULL to abandon the compaction.
     */
    int (*compact_finish)(struct store *s, char *blob, size_t *lens);
    /* Wait until every queued record is durable and its callback has run,
     * then stop the writer. Used on SIGTERM. */
    int (*close)(struct store *s);
    void (*free)(struct store *s);
    /* Human-readable detail of the last failed operation ("" if none). */
    const char *(*last_error)(struct store *s);
};

struct store {
    const struct store_ops *ops;
};

static inline int store_recover(struct store *s, store_replay_fn fn, void *arg)
{
    return s->ops->recover(s, fn, arg);
}
static inline int store_append(struct store *s, const void *rec, size_t len, store_done_fn cb,
                               void *arg)
{
    return s->ops->append(s, rec, len, cb, arg);
}
static inline int store_compact_due(struct store *s)
{
    return s->ops->compact_due(s);
}
static inline int store_compact_begin(struct store *s, size_t n)
{
    return s->ops->compact_begin(s, n);
}
static inline int store_compact_finish(struct store *s, char *blob, size_t *lens)
{
    return s->ops->compact_finish(s, blob, lens);
}
/* Begin and finish at once: the snapshot is ready at the cut. Takes blob and
 * lens in every case. */
static inline int store_compact(struct store *s, char *blob, size_t *lens, size_t n)
{
    int rc = store_compact_begin(s, n);
    if (rc != 0) {
        free(blob);
        free(lens);
        return rc;
    }
    return store_compact_finish(s, blob, lens);
}
static inline int store_close(struct store *s)
{
    return s->ops->close(s);
}
static inline void store_free(struct store *s)
{
    s->ops->free(s);
}
static inline const char *store_last_error(struct store *s)
{
    return s->ops->last_error(s);
}

#endif
