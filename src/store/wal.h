/*
 * wal.h - the embedded store: an append-only segmented log in a directory,
 * written by one thread with group commit. The byte layout is specified at
 * the top of wal.c; docs/LOG_FORMAT.md repeats it for operators.
 */
#ifndef DTX_WAL_H
#define DTX_WAL_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "store/store.h"

struct wal_config {
    const char *dir;            /* created if missing (one level) */
    uint64_t segment_size;      /* rotate the active segment past this many bytes */
    uint64_t compact_min_bytes; /* compact_due() once sealed segments exceed this */
};

/*
 * Open (lock) the log directory. Completions are delivered on loop. Returns a
 * store through *out, or a negative code with a message in *errmsg (static or
 * owned by nobody; valid until the next call). Recovery happens in
 * store_recover(), not here.
 */
int wal_open(uv_loop_t *loop, const struct wal_config *cfg, struct store **out /* OUT */,
             const char **errmsg /* OUT */);

#endif
