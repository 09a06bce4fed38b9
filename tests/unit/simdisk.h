/*
 * simdisk.h - a simulated disk under the log, for power-loss and I/O-error
 * tests (tests/unit/test_powerloss.c).
 *
 * sim_start() puts its own functions into the log's system-call table
 * (store/wal_sys.h). They still do the real calls on the real files, so the
 * directory always shows what the page cache would show and the log's own
 * reads (recovery, find_base) work unchanged; but fsync and fdatasync do not
 * reach the kernel. Instead every call that changes the directory or a file is
 * recorded in a trace of operations (struct sim_op): directory entries created,
 * renamed, unlinked; writes and truncations of files; syncs of a file or of
 * the directory. The trace also notes, at each operation, how many records the
 * test had seen acknowledged, and which thread made the call.
 *
 * A model (struct sim_model) replays a trace and knows, after any prefix of
 * it, what is durable: each file's content as of its last fsync/fdatasync and
 * the directory as of its last fsync, plus the operations since then, which a
 * power loss may or may not have persisted. A crash state is a choice for each
 * such pending operation: a write is kept, dropped or torn (only its part up
 * to a 512-byte boundary of the file survives) or, in random states only,
 * scattered (any subset of its sectors survives), a truncation or a directory
 * entry change is applied or not. Choices are applied in trace order on top of
 * the durable state. sim_model_materialize() writes a crash state out as a
 * real directory that the real recovery code can then open.
 *
 * Faults: sim_inject() makes one mutating call (by its index among all calls
 * that create, write, sync, truncate, rename or unlink) fail with EIO or
 * ENOSPC. ENOSPC on a write first writes half the bytes (a short write), then
 * fails the call that continues it. The trace records the fault.
 *
 * Not modelled: the LOCK file and the directory itself (made before the run),
 * and reads (the log reads the page cache's view, as after a process exit). A
 * file of the directory that was neither present at sim_start() nor made
 * through the table, or a descriptor past 1,023, aborts: the model would be
 * wrong.
 *
 * Not thread-safe to start or stop while a log is open; the calls themselves
 * may come from any thread (one mutex orders them, so the trace order is the
 * order the calls took effect).
 */
#ifndef DTX_TEST_SIMDISK_H
#define DTX_TEST_SIMDISK_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define SIM_SECTOR 512
#define SIM_NAME   40

enum sim_kind {
    SIM_RESET,   /* the model starts over from an empty disk */
    SIM_CREATE,  /* directory: name now names the new file ino */
    SIM_RENAME,  /* directory: name moves to name2 (replacing it), file ino */
    SIM_UNLINK,  /* directory: name (file ino) removed */
    SIM_DIRSYNC, /* fsync of the directory: its pending changes are durable */
    SIM_WRITE,   /* file ino (named name when written): len bytes (data) at off */
    SIM_TRUNC,   /* file ino: size set to off */
    SIM_SYNC,    /* fsync (off 0) or fdatasync (off 1) of file ino: its pending
                    changes are durable */
    SIM_FAULT,   /* an injected failure (off: enum sim_call, len: errno; ino or name:
                    the file, ino 0 and no name: the directory); no effect */
    SIM_MARK,    /* the end of a run (acked is final); no effect */
};

/* Which call a SIM_FAULT op stands for (in its off field). */
enum sim_call {
    CALL_OPEN,
    CALL_PWRITE,
    CALL_FSYNC,
    CALL_FDATASYNC,
    CALL_FTRUNCATE,
    CALL_RENAME,
    CALL_UNLINK
};

struct sim_op {
    enum sim_kind kind;
    uint32_t ino;
    char name[SIM_NAME];
    char name2[SIM_NAME];
    uint64_t off;
    uint64_t len;
    unsigned char *data; /* SIM_WRITE: len bytes, owned by the trace */
    uint64_t acked;      /* the test's acknowledged count when the call was made */
    int thread;          /* 0: the thread that called sim_start(); others 1, 2, ... */
    int call;            /* index of the mutating call that made it; -1 if synthetic */
};

struct sim_trace {
    struct sim_op *v;
    size_t n;
    size_t cap;
};

/*
 * Start simulating the log directory dir (which must exist): the trace is
 * emptied and begins with SIM_RESET and synthetic operations that make the
 * directory's present files (but LOCK) durable; wal_sys is replaced. acked
 * is read at each call. If trace_fd >= 0 every operation is also written to
 * it (see sim_trace_read), so that a child process killed by the log leaves
 * its trace behind.
 */
void sim_start(const char *dir, const atomic_uint_least64_t *acked, int trace_fd);
/* Append SIM_MARK, put wal_sys_default back. The trace stays (sim_trace). */
void sim_stop(void);
/* Fail mutating call number call (0-based, counted from sim_start) with err. */
void sim_inject(int call, int err);
/* Mutating calls made since sim_start. */
int sim_calls(void);
/* How many operations of kind the trace holds. */
size_t sim_count(enum sim_kind kind);
/* 1 if the last write to a segment (a file not named *.tmp) ended at or past
 * size and no directory fsync followed: its writer is about to rotate. */
int sim_rotation_due(uint64_t size);
/* The trace of the current or last run (owned by simdisk). */
const struct sim_trace *sim_trace(void);

/* The real calls, with fsync and fdatasync doing nothing: for recovering crash
 * states quickly (they are thrown away afterwards). */
void sim_use_fast_real(void);

/* Read a trace written to a file descriptor; the caller frees it. */
void sim_trace_read(int fd, struct sim_trace *out /* OUT */);
void sim_trace_free(struct sim_trace *t);

/* ------------------------------------------------------------------------ */
/* The model                                                                 */

struct sim_model;

struct sim_model *sim_model_new(void);
void sim_model_free(struct sim_model *m);
/* Apply one operation; op must stay valid while it is pending (keep the trace). */
void sim_model_apply(struct sim_model *m, const struct sim_op *op);
/* Operations a crash could still lose, and the choices for the i-th of them
 * (0 keep/apply, 1 drop, 2 + k tear at its k-th sector boundary). */
size_t sim_model_pending(const struct sim_model *m);
unsigned sim_model_options(const struct sim_model *m, size_t i);
/* The number of crash states (product of the options), saturating at max. */
uint64_t sim_model_states(const struct sim_model *m, uint64_t max);
/* Choices of crash state number index (mixed radix; 0 keeps everything). */
void sim_model_decode(const struct sim_model *m, uint64_t index, unsigned *choice /* OUT */);
/* Random choices: keep, drop, tear and scatter about equally likely. A
 * scattered write (a choice beyond the options, seeding the pattern) keeps
 * each of its sector-aligned pieces or not, independently: the pages of one
 * write reach the disk in any order. */
void sim_model_random(const struct sim_model *m, uint64_t *rng, unsigned *choice /* OUT */);
/* Empty dir (which must exist) and write the crash state into it. */
void sim_model_materialize(const struct sim_model *m, const unsigned *choice, const char *dir);
/* Describe choices for a failure message ("write 3/0000000000000001.log@48+300:keep ..."). */
void sim_model_describe(const struct sim_model *m, const unsigned *choice, char *out, size_t n);
/* 0 if dir holds exactly the state that keeps everything (the page cache),
 * else -1 with why. A check of the simulation itself. */
int sim_model_check(const struct sim_model *m, const char *dir, char *why, size_t n);

/* splitmix64 step, for seeded choices. */
uint64_t sim_rand(uint64_t *state);

#endif
