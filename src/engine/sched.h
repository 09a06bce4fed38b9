/*
 * sched.h - every timer of the engine in one ordered structure.
 *
 * A binary min-heap of embedded timers keyed on (due, insertion seq) in
 * monotonic milliseconds (libuv's timer.c does the same). The owner embeds a
 * struct sched_timer in its own object, so arming and disarming never
 * allocate. The loop glue (engine.c) keeps one uv_timer armed for the earliest
 * due time and calls sched_run() when it fires.
 */
#ifndef DTX_SCHED_H
#define DTX_SCHED_H

#include <stddef.h>
#include <stdint.h>

struct sched_timer;
typedef void (*sched_fn)(struct sched_timer *t);

struct sched_timer {
    uint64_t due;    /* monotonic ms */
    uint64_t seq;    /* tie-breaker: earlier arming fires first */
    size_t heap_idx; /* SIZE_MAX when not armed */
    sched_fn fn;
};

struct sched {
    struct sched_timer **heap;
    size_t len, cap;
    uint64_t next_seq;
};

void sched_init(struct sched *s);
void sched_close(struct sched *s);
void sched_timer_init(struct sched_timer *t, sched_fn fn);
int sched_timer_armed(const struct sched_timer *t);
/* Arm (or re-arm) t to fire at due. */
void sched_arm(struct sched *s, struct sched_timer *t, uint64_t due);
/* Disarm t if armed. */
void sched_disarm(struct sched *s, struct sched_timer *t);
/* Due time of the earliest timer, or UINT64_MAX when none. */
uint64_t sched_next_due(const struct sched *s);
/* Fire (disarm, then call) every timer with due <= now, earliest first.
 * A callback may arm or disarm any timer. Returns how many fired.
 * A timer armed or re-armed by a callback never fires in the same run, even
 * if already due: the run stops when it reaches the top, and it fires on the
 * next call (so sched_next_due() <= now after a run means "run again"). */
size_t sched_run(struct sched *s, uint64_t now);

#endif
