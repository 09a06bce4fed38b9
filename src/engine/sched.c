/*
 * sched.c - the engine's timers in one binary min-heap (see sched.h).
 *
 * The heap is an array of pointers to timers that the owners embed in their
 * own objects; each timer remembers its slot in heap_idx, so disarming or
 * re-arming one in the middle is a sift from that slot, O(log n), and nothing
 * is ever searched. Order is (due, seq): seq is a counter taken at every
 * arming, so timers due at the same millisecond fire in the order they were
 * armed, and re-arming counts as arming anew.
 *
 * sched_run pops the earliest timer, marks it disarmed and calls it, until the
 * earliest is not due. A callback may arm or disarm any timer, itself and
 * other due timers included: the heap is consistent before every call and
 * the loop looks at the top afresh after it. A timer armed (or re-armed)
 * while the run is going never fires in the same run, even when its due time
 * has passed: the run stops when such a timer reaches the top, and it and
 * everything after it fire on the next call (libuv >= 1.45 behaves the same).
 * So a callback that re-arms itself "now" cannot keep the loop thread from
 * its I/O, and each run fires at most as many timers as were armed when it
 * started. Timers still fire strictly in (due, seq) order across runs.
 */
#include "engine/sched.h"

#include <stdlib.h>

#include "common/alloc.h"

void sched_init(struct sched *s)
{
    s->heap = NULL;
    s->len = 0;
    s->cap = 0;
    s->next_seq = 0;
}

/* Frees the heap. Timers still armed are marked disarmed, so their owners
 * can tell; the timers themselves belong to their owners. */
void sched_close(struct sched *s)
{
    for (size_t i = 0; i < s->len; i++)
        s->heap[i]->heap_idx = SIZE_MAX;
    free(s->heap);
    sched_init(s);
}

void sched_timer_init(struct sched_timer *t, sched_fn fn)
{
    t->due = 0;
    t->seq = 0;
    t->heap_idx = SIZE_MAX;
    t->fn = fn;
}

int sched_timer_armed(const struct sched_timer *t)
{
    return t->heap_idx != SIZE_MAX;
}

/* Whether a fires before b. */
static int earlier(const struct sched_timer *a, const struct sched_timer *b)
{
    if (a->due != b->due)
        return a->due < b->due;
    return a->seq < b->seq;
}

static void place(struct sched *s, size_t i, struct sched_timer *t)
{
    s->heap[i] = t;
    t->heap_idx = i;
}

/* Move the timer at slot i towards the root while it is earlier than its
 * parent. */
static void sift_up(struct sched *s, size_t i)
{
    struct sched_timer *t = s->heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!earlier(t, s->heap[parent]))
            break;
        place(s, i, s->heap[parent]);
        i = parent;
    }
    place(s, i, t);
}

/* Move the timer at slot i towards the leaves while a child is earlier. */
static void sift_down(struct sched *s, size_t i)
{
    struct sched_timer *t = s->heap[i];
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= s->len)
            break;
        if (child + 1 < s->len && earlier(s->heap[child + 1], s->heap[child]))
            child++;
        if (!earlier(s->heap[child], t))
            break;
        place(s, i, s->heap[child]);
        i = child;
    }
    place(s, i, t);
}

/* Restore the heap order around slot i after its key changed either way. */
static void fix(struct sched *s, size_t i)
{
    if (i > 0 && earlier(s->heap[i], s->heap[(i - 1) / 2]))
        sift_up(s, i);
    else
        sift_down(s, i);
}

/* Arm or re-arm t. Never fails: growth goes through xrealloc. */
void sched_arm(struct sched *s, struct sched_timer *t, uint64_t due)
{
    t->due = due;
    t->seq = s->next_seq++;
    if (sched_timer_armed(t)) {
        fix(s, t->heap_idx);
        return;
    }
    if (s->len == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 16;
        s->heap = xrealloc(s->heap, s->cap * sizeof *s->heap);
    }
    place(s, s->len++, t);
    sift_up(s, t->heap_idx);
}

void sched_disarm(struct sched *s, struct sched_timer *t)
{
    if (!sched_timer_armed(t))
        return;
    size_t i = t->heap_idx;
    t->heap_idx = SIZE_MAX;
    s->len--;
    if (i == s->len)
        return;
    place(s, i, s->heap[s->len]);
    fix(s, i);
}

uint64_t sched_next_due(const struct sched *s)
{
    return s->len ? s->heap[0]->due : UINT64_MAX;
}

/*
 * Fire every due timer that was armed before this call, earliest first (see
 * the comment at the top for timers armed by the callbacks). Returns how
 * many callbacks ran.
 */
size_t sched_run(struct sched *s, uint64_t now)
{
    uint64_t first_new_seq = s->next_seq;
    size_t fired = 0;
    while (s->len > 0) {
        struct sched_timer *t = s->heap[0];
        if (t->due > now || t->seq >= first_new_seq)
            break;
        sched_disarm(s, t);
        fired++;
        t->fn(t);
    }
    return fired;
}
