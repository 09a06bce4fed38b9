/*
 * crash.h - crash points: fault injection for debug builds (STYLE §11).
 *
 * CRASH_POINT("log.after_fsync") marks a durability step. In a build with
 * -DDTX_CRASH_POINTS (`make crash`, mk/crash.mk) the process counts the hits
 * of the one point named by the environment variable DTX_CRASH_POINT and, at
 * hit number DTX_CRASH_HIT (default 1), writes "crash point <name> hit <n>" to
 * stderr and calls abort(): a crash at exactly that step, in whichever thread
 * hits it (loop, log writer, compaction, RabbitMQ connection). In every other
 * build CRASH_POINT compiles to nothing.
 *
 * Every point is listed once, below, with what a crash there means; the
 * crash sweep (tests/integration/test_crash_points.py) runs each of them. A
 * DTX_CRASH_POINT that names no point stops the process at start (exit 2),
 * so a typo cannot make a sweep pass by never crashing;
 * DTX_CRASH_POINT=list prints the table and exits 0. Both happen before
 * main() (crash.c), without the daemon's help.
 */
#ifndef DTX_CRASH_H
#define DTX_CRASH_H

/* X(name, where it is and what a crash there leaves behind) */
#define DTX_CRASH_POINT_MAP(X)                                                                     \
    X("log.before_append", "loop: a record is about to be queued for the writer")                  \
    X("log.after_append", "writer: a commit group is written (pwrite), not synced")                \
    X("log.before_fsync", "writer: just before the group's fdatasync")                             \
    X("log.after_fsync", "writer: the group is durable, its callbacks not released")               \
    X("log.segment_before_rename", "writer: a new segment's .tmp is synced, not renamed")          \
    X("log.segment_after_rename", "writer: a new segment renamed, directory not synced")           \
    X("log.compact_cut", "writer: compaction cut, segment rotated, snapshot not written")          \
    X("log.snapshot_before_rename", "compactor: snapshot .tmp written and synced, not renamed")    \
    X("log.snapshot_after_rename", "compactor: snapshot renamed over its segment, dir not synced") \
    X("log.snapshot_after_unlink", "compactor: superseded segments deleted, directory synced")     \
    X("recovery.after_list", "start: segments listed, superseded ones and .tmp files deleted")     \
    X("recovery.after_cut_tail", "start: a torn tail was cut and the segment synced")              \
    X("recovery.after_segment", "start: one segment replayed (each segment)")                      \
    X("recovery.before_resume", "start: log replayed; an unfinished transaction is resumed next")  \
    X("recovery.after_resume", "start: every unfinished transaction resumed")                      \
    X("saga.before_action", "loop: a step's action is about to be sent")                           \
    X("saga.after_action", "loop: an action's answer arrived, not recorded")                       \
    X("saga.before_compensate", "loop: a compensation is about to be sent")                        \
    X("saga.after_compensate", "loop: a compensation's answer arrived, not recorded")              \
    X("tcc.before_confirm", "loop: a confirm is about to be sent")                                 \
    X("tcc.after_confirm", "loop: a confirm's answer arrived, not recorded")                       \
    X("tcc.before_cancel", "loop: a cancel is about to be sent")                                   \
    X("tcc.after_cancel", "loop: a cancel's answer arrived, not recorded")                         \
    X("2pc.before_prepare", "loop: a prepare is about to be sent")                                 \
    X("2pc.after_prepare", "loop: a yes vote is recorded in memory (votes are not logged)")        \
    X("2pc.before_decision", "loop: every branch voted yes; the commit decision is not logged")    \
    X("2pc.after_decision", "loop: the commit decision is durable; no commit sent yet")            \
    X("2pc.before_commit", "loop: a commit is about to be sent")                                   \
    X("2pc.after_commit", "loop: a commit's answer arrived, not recorded")                         \
    X("2pc.before_rollback", "loop: a rollback is about to be sent")                               \
    X("2pc.after_rollback", "loop: a rollback's answer arrived, not recorded")                     \
    X("msg.after_check", "loop: a check's answer arrived, not recorded")                           \
    X("msg.before_deliver", "loop: a delivery is about to be sent")                                \
    X("msg.after_deliver", "loop: a delivery's answer arrived, not recorded")                      \
    X("amqp.before_confirm", "RabbitMQ thread: a message is published, its confirm not seen")      \
    X("amqp.after_confirm", "RabbitMQ thread: the broker's ack arrived, not handed back")          \
    X("amqp.after_reply", "RabbitMQ thread: a command's reply matched, not handed back")           \
    X("pg.before_commit_prepared", "loop: COMMIT PREPARED is about to be sent")                    \
    X("pg.after_commit_prepared", "loop: COMMIT PREPARED answered, not handed back")               \
    X("pg.before_rollback_prepared", "loop: ROLLBACK PREPARED is about to be sent")                \
    X("pg.after_rollback_prepared", "loop: ROLLBACK PREPARED answered, not handed back")

/* The names and descriptions of DTX_CRASH_POINT_MAP, in its order; NULL-ended
 * (crash.c; present in every build). */
extern const char *const crash_points[];
extern const char *const crash_point_docs[];

#ifdef DTX_CRASH_POINTS
/* Count a hit of point name; abort() if it is the configured point's Nth hit.
 * Thread-safe. */
void crash_hit(const char *name);
#define CRASH_POINT(name) crash_hit(name)
#else
#define CRASH_POINT(name) ((void)0)
#endif

#endif
