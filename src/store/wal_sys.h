/*
 * wal_sys.h - the system calls through which the log changes files.
 *
 * Every open, write, sync, rename, unlink, truncate and close that wal.c makes
 * goes through the one table wal_sys, so that tests and fault injection can
 * fail a call (EIO, ENOSPC) or simulate a power loss without touching the log
 * itself (SQLite's os_unix.c syscall table). Each entry has the signature of
 * the call it stands for (open always takes a mode) and reports failure the
 * same way: -1 with errno set. Replace entries only while no log is open, and
 * put wal_sys_default back afterwards. The daemon never changes the table.
 */
#ifndef DTX_WAL_SYS_H
#define DTX_WAL_SYS_H

#include <stddef.h>
#include <sys/types.h>

struct wal_sys {
    int (*open)(const char *path, int flags, mode_t mode);
    int (*close)(int fd);
    ssize_t (*pwrite)(int fd, const void *buf, size_t n, off_t off);
    int (*fdatasync)(int fd);
    int (*fsync)(int fd);
    int (*rename)(const char *from, const char *to);
    int (*unlink)(const char *path);
    int (*ftruncate)(int fd, off_t len);
};

/* The table in use. */
extern struct wal_sys wal_sys;
/* The real system calls. */
extern const struct wal_sys wal_sys_default;

#endif
