/*
 * simdisk.c - a simulated disk under the log: the recording system calls and
 * the crash-state model. See simdisk.h for what is simulated and how.
 */
#include "simdisk.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "store/wal_sys.h"

#define MAX_FDS     1024
#define MAX_THREADS 256

/* A name in the directory as the page cache sees it. */
struct vent {
    char name[SIM_NAME];
    uint32_t ino;
};

static struct {
    pthread_mutex_t mu;
    char dir[PATH_MAX];
    ino_t dir_ino;
    dev_t dir_dev;
    const atomic_uint_least64_t *acked;
    int trace_fd;
    struct sim_trace trace;
    uint32_t fd_ino[MAX_FDS]; /* 0: not a file of ours */
    struct vent *names;
    size_t nnames;
    size_t capnames;
    uint32_t next_ino;
    pid_t threads[MAX_THREADS];
    int nthreads;
    int calls;
    int inject_call;
    int inject_err;
    int fail_next_pwrite; /* ENOSPC: the continuation of a short write fails */
} S = {.mu = PTHREAD_MUTEX_INITIALIZER, .trace_fd = -1, .inject_call = -1};

uint64_t sim_rand(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void *xalloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (q == NULL)
        abort();
    return q;
}

static void write_full(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        ssize_t k = write(fd, c, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            abort();
        c += k;
        n -= (size_t)k;
    }
}

/* ------------------------------------------------------------------------ */
/* Recording                                                                 */

/* Threads are told apart by kernel thread id: a pthread_t is reused as soon
 * as a joined thread's memory is (the next session's compactor would pass for
 * the last session's writer); a tid only after the pid space wraps. */
static int thread_index(void)
{
    pid_t me = (pid_t)syscall(SYS_gettid);
    for (int i = 0; i < S.nthreads; i++)
        if (S.threads[i] == me)
            return i;
    if (S.nthreads == MAX_THREADS)
        return MAX_THREADS;
    S.threads[S.nthreads] = me;
    return S.nthreads++;
}

/* Append an op (under mu); data is copied. */
static void record(enum sim_kind kind, uint32_t ino, const char *name, const char *name2,
                   uint64_t off, uint64_t len, const void *data, int call)
{
    struct sim_trace *t = &S.trace;
    if (t->n == t->cap) {
        t->cap = t->cap ? 2 * t->cap : 256;
        t->v = xalloc(t->v, t->cap * sizeof *t->v);
    }
    struct sim_op *op = &t->v[t->n++];
    memset(op, 0, sizeof *op);
    op->kind = kind;
    op->ino = ino;
    if (name != NULL)
        snprintf(op->name, sizeof op->name, "%s", name);
    if (name2 != NULL)
        snprintf(op->name2, sizeof op->name2, "%s", name2);
    op->off = off;
    op->len = len;
    if (data != NULL) {
        op->data = xalloc(NULL, len);
        memcpy(op->data, data, len);
    }
    op->acked = S.acked != NULL ? atomic_load(S.acked) : 0;
    op->thread = thread_index();
    op->call = call;
    if (S.trace_fd >= 0) {
        write_full(S.trace_fd, op, sizeof *op);
        if (kind == SIM_WRITE)
            write_full(S.trace_fd, data, len);
    }
}

/* The name of path in our directory, or NULL if it is elsewhere. */
static const char *our_name(const char *path)
{
    size_t n = strlen(S.dir);
    if (strncmp(path, S.dir, n) != 0 || path[n] != '/' || strchr(path + n + 1, '/') != NULL)
        return NULL;
    if (strlen(path + n + 1) >= SIM_NAME)
        return NULL;
    return path + n + 1;
}

static struct vent *find_name(const char *name)
{
    for (size_t i = 0; i < S.nnames; i++)
        if (strcmp(S.names[i].name, name) == 0)
            return &S.names[i];
    return NULL;
}

static void add_name(const char *name, uint32_t ino)
{
    if (S.nnames == S.capnames) {
        S.capnames = S.capnames ? 2 * S.capnames : 16;
        S.names = xalloc(S.names, S.capnames * sizeof *S.names);
    }
    snprintf(S.names[S.nnames].name, SIM_NAME, "%s", name);
    S.names[S.nnames++].ino = ino;
}

static void drop_name(struct vent *e)
{
    *e = S.names[--S.nnames];
}

static const char *name_of(uint32_t ino)
{
    for (size_t i = 0; i < S.nnames; i++)
        if (S.names[i].ino == ino)
            return S.names[i].name;
    return NULL;
}

/* Count a mutating call on file ino (0: the directory) or name; 1 if it is
 * the one to fail (errno set). */
static int faulty(enum sim_call kind, uint32_t ino, const char *name, int *call)
{
    *call = S.calls++;
    if (*call != S.inject_call)
        return 0;
    record(SIM_FAULT, ino, name != NULL ? name : name_of(ino), NULL, (uint64_t)kind,
           (uint64_t)S.inject_err, NULL, *call);
    errno = S.inject_err;
    return 1;
}

/* A file of our directory that the simulation never saw: it cannot model it. */
static void unknown(const char *path)
{
    fprintf(stderr, "simdisk: %s was not made through the simulation\n", path);
    abort();
}

static int sim_open(const char *path, int flags, mode_t mode)
{
    pthread_mutex_lock(&S.mu);
    const char *name = our_name(path);
    int call = -1;
    if (name != NULL && (flags & O_CREAT) && faulty(CALL_OPEN, 0, name, &call)) {
        pthread_mutex_unlock(&S.mu);
        return -1;
    }
    int fd = open(path, flags, mode);
    if (fd >= MAX_FDS && name != NULL) {
        fprintf(stderr, "simdisk: descriptor %d of %s is beyond %d: leaked descriptors?\n", fd,
                path, MAX_FDS);
        abort();
    }
    if (fd >= 0 && name != NULL) {
        struct vent *e = find_name(name);
        uint32_t ino;
        if (e == NULL && !(flags & O_CREAT))
            unknown(path);
        if (e == NULL) {
            ino = S.next_ino++;
            add_name(name, ino);
            record(SIM_CREATE, ino, name, NULL, 0, 0, NULL, call);
        } else {
            ino = e->ino;
        }
        if (flags & O_TRUNC)
            record(SIM_TRUNC, ino, name, NULL, 0, 0, NULL, call);
        S.fd_ino[fd] = ino;
    }
    pthread_mutex_unlock(&S.mu);
    return fd;
}

static int sim_close(int fd)
{
    pthread_mutex_lock(&S.mu);
    if (fd >= 0 && fd < MAX_FDS)
        S.fd_ino[fd] = 0;
    int rc = close(fd);
    pthread_mutex_unlock(&S.mu);
    return rc;
}

static ssize_t sim_pwrite(int fd, const void *buf, size_t n, off_t off)
{
    pthread_mutex_lock(&S.mu);
    uint32_t ino = fd >= 0 && fd < MAX_FDS ? S.fd_ino[fd] : 0;
    int call = -1;
    if (ino != 0) {
        if (S.fail_next_pwrite) {
            S.fail_next_pwrite = 0;
            errno = ENOSPC;
            pthread_mutex_unlock(&S.mu);
            return -1;
        }
        if (faulty(CALL_PWRITE, ino, NULL, &call)) {
            if (errno != ENOSPC || n < 2) {
                pthread_mutex_unlock(&S.mu);
                return -1;
            }
            n /= 2; /* a short write; the call that continues it fails */
            S.fail_next_pwrite = 1;
        }
    }
    ssize_t k = pwrite(fd, buf, n, off);
    if (k > 0 && ino != 0)
        record(SIM_WRITE, ino, name_of(ino), NULL, (uint64_t)off, (uint64_t)k, buf, call);
    pthread_mutex_unlock(&S.mu);
    return k;
}

/* fsync and fdatasync: of one of our files, or of the directory. */
static int do_sync(int fd, enum sim_call kind)
{
    pthread_mutex_lock(&S.mu);
    uint32_t ino = fd >= 0 && fd < MAX_FDS ? S.fd_ino[fd] : 0;
    int call = -1;
    struct stat st;
    int is_dir = ino == 0 && fstat(fd, &st) == 0 && S_ISDIR(st.st_mode) && st.st_ino == S.dir_ino &&
                 st.st_dev == S.dir_dev;
    int rc = 0;
    if ((ino != 0 || is_dir) && faulty(kind, ino, NULL, &call))
        rc = -1;
    else if (ino != 0)
        record(SIM_SYNC, ino, NULL, NULL, kind == CALL_FDATASYNC, 0, NULL, call);
    else if (is_dir)
        record(SIM_DIRSYNC, 0, NULL, NULL, 0, 0, NULL, call);
    pthread_mutex_unlock(&S.mu);
    return rc;
}

static int sim_fsync(int fd)
{
    return do_sync(fd, CALL_FSYNC);
}

static int sim_fdatasync(int fd)
{
    return do_sync(fd, CALL_FDATASYNC);
}

static int sim_ftruncate(int fd, off_t len)
{
    pthread_mutex_lock(&S.mu);
    uint32_t ino = fd >= 0 && fd < MAX_FDS ? S.fd_ino[fd] : 0;
    int call = -1;
    if (ino != 0 && faulty(CALL_FTRUNCATE, ino, NULL, &call)) {
        pthread_mutex_unlock(&S.mu);
        return -1;
    }
    int rc = ftruncate(fd, len);
    if (rc == 0 && ino != 0)
        record(SIM_TRUNC, ino, NULL, NULL, (uint64_t)len, 0, NULL, call);
    pthread_mutex_unlock(&S.mu);
    return rc;
}

static int sim_rename(const char *from, const char *to)
{
    pthread_mutex_lock(&S.mu);
    const char *a = our_name(from);
    const char *b = our_name(to);
    int call = -1;
    if (a != NULL && b != NULL && faulty(CALL_RENAME, 0, a, &call)) {
        pthread_mutex_unlock(&S.mu);
        return -1;
    }
    int rc = rename(from, to);
    if (rc == 0 && a != NULL && b != NULL) {
        struct vent *e = find_name(a);
        if (e == NULL)
            unknown(from);
        uint32_t ino = e->ino;
        struct vent *old = find_name(b);
        if (old != NULL)
            drop_name(old);
        e = find_name(a);
        if (e != NULL)
            snprintf(e->name, SIM_NAME, "%s", b);
        record(SIM_RENAME, ino, a, b, 0, 0, NULL, call);
    }
    pthread_mutex_unlock(&S.mu);
    return rc;
}

static int sim_unlink(const char *path)
{
    pthread_mutex_lock(&S.mu);
    const char *name = our_name(path);
    int call = -1;
    if (name != NULL && faulty(CALL_UNLINK, 0, name, &call)) {
        pthread_mutex_unlock(&S.mu);
        return -1;
    }
    int rc = unlink(path);
    if (rc == 0 && name != NULL) {
        struct vent *e = find_name(name);
        if (e == NULL)
            unknown(path);
        uint32_t ino = e->ino;
        drop_name(e);
        record(SIM_UNLINK, ino, name, NULL, 0, 0, NULL, call);
    }
    pthread_mutex_unlock(&S.mu);
    return rc;
}

static const struct wal_sys sim_sys = {
    .open = sim_open,
    .close = sim_close,
    .pwrite = sim_pwrite,
    .fdatasync = sim_fdatasync,
    .fsync = sim_fsync,
    .rename = sim_rename,
    .unlink = sim_unlink,
    .ftruncate = sim_ftruncate,
};

static int no_sync(int fd)
{
    (void)fd;
    return 0;
}

void sim_use_fast_real(void)
{
    wal_sys = wal_sys_default;
    wal_sys.fsync = no_sync;
    wal_sys.fdatasync = no_sync;
}

/* Record a present file as durable content (at sim_start). */
static void adopt_file(const char *name)
{
    char path[PATH_MAX + 300];
    snprintf(path, sizeof path, "%s/%s", S.dir, name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        abort();
    struct stat st;
    if (fstat(fd, &st) != 0)
        abort();
    size_t size = (size_t)st.st_size;
    unsigned char *b = xalloc(NULL, size);
    if (size > 0 && pread(fd, b, size, 0) != (ssize_t)size)
        abort();
    close(fd);
    uint32_t ino = S.next_ino++;
    add_name(name, ino);
    record(SIM_CREATE, ino, name, NULL, 0, 0, NULL, -1);
    if (size > 0)
        record(SIM_WRITE, ino, NULL, NULL, 0, size, b, -1);
    record(SIM_SYNC, ino, NULL, NULL, 0, 0, NULL, -1);
    free(b);
}

void sim_start(const char *dir, const atomic_uint_least64_t *acked, int trace_fd)
{
    pthread_mutex_lock(&S.mu);
    sim_trace_free(&S.trace);
    snprintf(S.dir, sizeof S.dir, "%s", dir);
    struct stat st;
    if (stat(dir, &st) != 0)
        abort();
    S.dir_ino = st.st_ino;
    S.dir_dev = st.st_dev;
    S.acked = acked;
    S.trace_fd = trace_fd;
    memset(S.fd_ino, 0, sizeof S.fd_ino);
    S.nnames = 0;
    S.next_ino = 1;
    S.nthreads = 0;
    thread_index(); /* the caller is thread 0 */
    S.calls = 0;
    S.inject_call = -1;
    S.inject_err = 0;
    S.fail_next_pwrite = 0;
    record(SIM_RESET, 0, NULL, NULL, 0, 0, NULL, -1);
    DIR *d = opendir(dir);
    if (d == NULL)
        abort();
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.' || strcmp(de->d_name, "LOCK") == 0)
            continue;
        adopt_file(de->d_name);
    }
    closedir(d);
    record(SIM_DIRSYNC, 0, NULL, NULL, 0, 0, NULL, -1);
    wal_sys = sim_sys;
    pthread_mutex_unlock(&S.mu);
}

void sim_stop(void)
{
    pthread_mutex_lock(&S.mu);
    record(SIM_MARK, 0, NULL, NULL, 0, 0, NULL, -1);
    wal_sys = wal_sys_default;
    S.trace_fd = -1;
    pthread_mutex_unlock(&S.mu);
}

void sim_inject(int call, int err)
{
    pthread_mutex_lock(&S.mu);
    S.inject_call = call;
    S.inject_err = err;
    pthread_mutex_unlock(&S.mu);
}

int sim_calls(void)
{
    pthread_mutex_lock(&S.mu);
    int n = S.calls;
    pthread_mutex_unlock(&S.mu);
    return n;
}

size_t sim_count(enum sim_kind kind)
{
    pthread_mutex_lock(&S.mu);
    size_t n = 0;
    for (size_t i = 0; i < S.trace.n; i++)
        n += S.trace.v[i].kind == kind;
    pthread_mutex_unlock(&S.mu);
    return n;
}

int sim_rotation_due(uint64_t size)
{
    pthread_mutex_lock(&S.mu);
    int due = 0;
    for (size_t i = S.trace.n; i-- > 0;) {
        const struct sim_op *op = &S.trace.v[i];
        if (op->kind == SIM_DIRSYNC)
            break;
        if (op->kind == SIM_WRITE && op->call >= 0) {
            if (strstr(op->name, ".tmp") == NULL) { /* the name when it was written */
                due = op->off + op->len >= size;
                break;
            }
        }
    }
    pthread_mutex_unlock(&S.mu);
    return due;
}

const struct sim_trace *sim_trace(void)
{
    return &S.trace;
}

void sim_trace_read(int fd, struct sim_trace *out)
{
    memset(out, 0, sizeof *out);
    for (;;) {
        struct sim_op op;
        size_t got = 0;
        while (got < sizeof op) {
            ssize_t k = read(fd, (char *)&op + got, sizeof op - got);
            if (k < 0 && errno == EINTR)
                continue;
            if (k <= 0)
                break;
            got += (size_t)k;
        }
        if (got < sizeof op)
            return; /* the end (a child killed mid-op leaves at most a part) */
        op.data = NULL;
        if (op.kind == SIM_WRITE) {
            op.data = xalloc(NULL, op.len);
            size_t d = 0;
            while (d < op.len) {
                ssize_t k = read(fd, op.data + d, op.len - d);
                if (k <= 0)
                    break;
                d += (size_t)k;
            }
            if (d < op.len) {
                free(op.data);
                return;
            }
        }
        if (out->n == out->cap) {
            out->cap = out->cap ? 2 * out->cap : 256;
            out->v = xalloc(out->v, out->cap * sizeof *out->v);
        }
        out->v[out->n++] = op;
    }
}

void sim_trace_free(struct sim_trace *t)
{
    for (size_t i = 0; i < t->n; i++)
        free(t->v[i].data);
    free(t->v);
    memset(t, 0, sizeof *t);
}

/* ------------------------------------------------------------------------ */
/* The model                                                                 */

struct mfile {
    unsigned char *d;
    size_t len;
    size_t cap;
};

struct ment {
    char name[SIM_NAME];
    uint32_t ino;
};

struct mdir {
    struct ment *v;
    size_t n;
    size_t cap;
};

struct sim_model {
    struct mfile *files; /* durable content, by ino */
    size_t nfiles;
    struct mdir dir; /* durable entries */
    const struct sim_op **pend;
    size_t npend;
    size_t cappend;
};

struct sim_model *sim_model_new(void)
{
    struct sim_model *m = xalloc(NULL, sizeof *m);
    memset(m, 0, sizeof *m);
    return m;
}

static void files_clear(struct mfile *f, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(f[i].d);
}

static void model_clear(struct sim_model *m)
{
    files_clear(m->files, m->nfiles);
    free(m->files);
    m->files = NULL;
    m->nfiles = 0;
    free(m->dir.v);
    memset(&m->dir, 0, sizeof m->dir);
    m->npend = 0;
}

void sim_model_free(struct sim_model *m)
{
    if (m == NULL)
        return;
    model_clear(m);
    free(m->pend);
    free(m);
}

static struct mfile *file_of(struct mfile **files, size_t *n, uint32_t ino)
{
    if (ino >= *n) {
        size_t k = ino + 16;
        *files = xalloc(*files, k * sizeof **files);
        memset(*files + *n, 0, (k - *n) * sizeof **files);
        *n = k;
    }
    return &(*files)[ino];
}

static void file_resize(struct mfile *f, size_t len)
{
    if (len > f->cap) {
        size_t cap = f->cap ? f->cap : 4096;
        while (cap < len)
            cap *= 2;
        f->d = xalloc(f->d, cap);
        f->cap = cap;
    }
    if (len > f->len)
        memset(f->d + f->len, 0, len - f->len);
    f->len = len;
}

static void file_write(struct mfile *f, uint64_t off, const unsigned char *p, size_t n)
{
    if (off + n > f->len)
        file_resize(f, off + n);
    memcpy(f->d + off, p, n);
}

static struct ment *dir_find(struct mdir *d, const char *name)
{
    for (size_t i = 0; i < d->n; i++)
        if (strcmp(d->v[i].name, name) == 0)
            return &d->v[i];
    return NULL;
}

static void dir_set(struct mdir *d, const char *name, uint32_t ino)
{
    struct ment *e = dir_find(d, name);
    if (e == NULL) {
        if (d->n == d->cap) {
            d->cap = d->cap ? 2 * d->cap : 16;
            d->v = xalloc(d->v, d->cap * sizeof *d->v);
        }
        e = &d->v[d->n++];
        snprintf(e->name, SIM_NAME, "%s", name);
    }
    e->ino = ino;
}

static void dir_del(struct mdir *d, const char *name, uint32_t ino)
{
    struct ment *e = dir_find(d, name);
    if (e != NULL && e->ino == ino)
        *e = d->v[--d->n];
}

static int is_dir_op(const struct sim_op *op)
{
    return op->kind == SIM_CREATE || op->kind == SIM_RENAME || op->kind == SIM_UNLINK;
}

/* Sector boundaries strictly inside a write. */
static unsigned tears(const struct sim_op *op)
{
    if (op->kind != SIM_WRITE || op->len == 0)
        return 0;
    uint64_t end = op->off + op->len;
    uint64_t b = (op->off / SIM_SECTOR + 1) * SIM_SECTOR;
    return b < end ? (unsigned)((end - 1 - b) / SIM_SECTOR + 1) : 0;
}

/*
 * Apply op to files/dir with choice c (0 whole, 1 not at all, 2 + k torn at
 * the k-th sector boundary).
 */
static void apply_one(struct mfile **files, size_t *nfiles, struct mdir *dir,
                      const struct sim_op *op, unsigned c)
{
    if (c == 1)
        return;
    switch (op->kind) {
    case SIM_CREATE:
        dir_set(dir, op->name, op->ino);
        break;
    case SIM_RENAME: {
        struct ment *e = dir_find(dir, op->name);
        if (e != NULL && e->ino == op->ino)
            *e = dir->v[--dir->n];
        dir_set(dir, op->name2, op->ino);
        break;
    }
    case SIM_UNLINK:
        dir_del(dir, op->name, op->ino);
        break;
    case SIM_WRITE: {
        uint64_t n = op->len;
        if (c >= 2 + tears(op)) {
            /* scattered: each sector-aligned piece on its own */
            uint64_t seed = c;
            uint64_t a = op->off;
            while (a < op->off + op->len) {
                uint64_t b = (a / SIM_SECTOR + 1) * SIM_SECTOR;
                if (b > op->off + op->len)
                    b = op->off + op->len;
                if (sim_rand(&seed) & 1)
                    file_write(file_of(files, nfiles, op->ino), a, op->data + (a - op->off), b - a);
                a = b;
            }
            break;
        }
        if (c >= 2) {
            uint64_t b = (op->off / SIM_SECTOR + 1 + (c - 2)) * SIM_SECTOR;
            n = b - op->off;
        }
        file_write(file_of(files, nfiles, op->ino), op->off, op->data, n);
        break;
    }
    case SIM_TRUNC:
        file_resize(file_of(files, nfiles, op->ino), op->off);
        break;
    default:
        break;
    }
}

static void pend_remove(struct sim_model *m, int dir_ops, uint32_t ino)
{
    size_t k = 0;
    for (size_t i = 0; i < m->npend; i++) {
        const struct sim_op *p = m->pend[i];
        int hit = dir_ops ? is_dir_op(p) : (!is_dir_op(p) && p->ino == ino);
        if (hit)
            apply_one(&m->files, &m->nfiles, &m->dir, p, 0);
        else
            m->pend[k++] = p;
    }
    m->npend = k;
}

void sim_model_apply(struct sim_model *m, const struct sim_op *op)
{
    switch (op->kind) {
    case SIM_RESET:
        model_clear(m);
        break;
    case SIM_CREATE:
    case SIM_RENAME:
    case SIM_UNLINK:
    case SIM_WRITE:
    case SIM_TRUNC:
        if (m->npend == m->cappend) {
            m->cappend = m->cappend ? 2 * m->cappend : 64;
            m->pend = xalloc(m->pend, m->cappend * sizeof *m->pend);
        }
        m->pend[m->npend++] = op;
        break;
    case SIM_SYNC:
        pend_remove(m, 0, op->ino);
        break;
    case SIM_DIRSYNC:
        pend_remove(m, 1, 0);
        break;
    default:
        break;
    }
}

size_t sim_model_pending(const struct sim_model *m)
{
    return m->npend;
}

unsigned sim_model_options(const struct sim_model *m, size_t i)
{
    return 2 + tears(m->pend[i]);
}

uint64_t sim_model_states(const struct sim_model *m, uint64_t max)
{
    uint64_t n = 1;
    for (size_t i = 0; i < m->npend; i++) {
        n *= sim_model_options(m, i);
        if (n >= max)
            return max;
    }
    return n;
}

void sim_model_decode(const struct sim_model *m, uint64_t index, unsigned *choice)
{
    for (size_t i = 0; i < m->npend; i++) {
        unsigned k = sim_model_options(m, i);
        choice[i] = (unsigned)(index % k);
        index /= k;
    }
}

void sim_model_random(const struct sim_model *m, uint64_t *rng, unsigned *choice)
{
    for (size_t i = 0; i < m->npend; i++) {
        unsigned t = tears(m->pend[i]);
        uint64_t r = sim_rand(rng);
        unsigned what = (unsigned)(r % (t ? 4 : 2));
        if (what < 2)
            choice[i] = what;
        else if (what == 2)
            choice[i] = 2 + (unsigned)((r >> 8) % t);
        else
            choice[i] = 2 + t + 1 + (unsigned)((r >> 8) % 0xffff);
    }
}

/* The crash state: durable files and directory with the chosen pending ops. */
static void build(const struct sim_model *m, const unsigned *choice, struct mfile **files,
                  size_t *nfiles, struct mdir *dir)
{
    *nfiles = m->nfiles;
    *files = xalloc(NULL, (m->nfiles ? m->nfiles : 1) * sizeof **files);
    for (size_t i = 0; i < m->nfiles; i++) {
        struct mfile *f = &(*files)[i];
        memset(f, 0, sizeof *f);
        if (m->files[i].len > 0) {
            file_resize(f, m->files[i].len);
            memcpy(f->d, m->files[i].d, f->len);
        }
    }
    dir->n = m->dir.n;
    dir->cap = m->dir.n + m->npend + 1;
    dir->v = xalloc(NULL, dir->cap * sizeof *dir->v);
    if (m->dir.n > 0)
        memcpy(dir->v, m->dir.v, m->dir.n * sizeof *dir->v);
    for (size_t i = 0; i < m->npend; i++)
        apply_one(files, nfiles, dir, m->pend[i], choice ? choice[i] : 0);
}

static void empty_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        abort();
    struct dirent *de;
    char path[PATH_MAX + 300];
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        unlink(path);
    }
    closedir(d);
}

void sim_model_materialize(const struct sim_model *m, const unsigned *choice, const char *dir)
{
    struct mfile *files;
    size_t nfiles;
    struct mdir d;
    build(m, choice, &files, &nfiles, &d);
    empty_dir(dir);
    char path[PATH_MAX + 300];
    for (size_t i = 0; i < d.n; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, d.v[i].name);
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0)
            abort();
        if (d.v[i].ino < nfiles)
            write_full(fd, files[d.v[i].ino].d, files[d.v[i].ino].len);
        close(fd);
    }
    files_clear(files, nfiles);
    free(files);
    free(d.v);
}

static const char *const kind_names[] = {"reset", "create", "rename", "unlink", "dirsync",
                                         "write", "trunc",  "sync",   "fault",  "mark"};

void sim_model_describe(const struct sim_model *m, const unsigned *choice, char *out, size_t n)
{
    size_t k = 0;
    out[0] = '\0';
    for (size_t i = 0; i < m->npend && k + 1 < n; i++) {
        const struct sim_op *p = m->pend[i];
        char what[32];
        if (choice[i] == 0)
            snprintf(what, sizeof what, "%s", p->kind == SIM_WRITE ? "keep" : "applied");
        else if (choice[i] == 1)
            snprintf(what, sizeof what, "%s", p->kind == SIM_WRITE ? "drop" : "lost");
        else if (choice[i] >= 2 + tears(p))
            snprintf(what, sizeof what, "scattered#%u", choice[i]);
        else
            snprintf(
                what, sizeof what, "torn@%llu",
                (unsigned long long)((p->off / SIM_SECTOR + 1 + (choice[i] - 2)) * SIM_SECTOR));
        int w = snprintf(out + k, n - k, "%s[%s ino=%u %s%s%s off=%llu len=%llu: %s]", k ? " " : "",
                         kind_names[p->kind], p->ino, p->name, p->name2[0] ? "->" : "", p->name2,
                         (unsigned long long)p->off, (unsigned long long)p->len, what);
        if (w < 0)
            break;
        k += (size_t)w < n - k ? (size_t)w : n - k - 1;
    }
}

int sim_model_check(const struct sim_model *m, const char *dir, char *why, size_t n)
{
    struct mfile *files;
    size_t nfiles;
    struct mdir d;
    int rc = 0;
    build(m, NULL, &files, &nfiles, &d);
    size_t seen = 0;
    DIR *dd = opendir(dir);
    struct dirent *de;
    while (rc == 0 && dd != NULL && (de = readdir(dd)) != NULL) {
        if (de->d_name[0] == '.' || strcmp(de->d_name, "LOCK") == 0)
            continue;
        seen++;
        struct ment *e = dir_find(&d, de->d_name);
        if (e == NULL) {
            snprintf(why, n, "%s is on disk but not in the model", de->d_name);
            rc = -1;
            break;
        }
        char path[PATH_MAX + 300];
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        int fd = open(path, O_RDONLY);
        struct stat st;
        fstat(fd, &st);
        const struct mfile *f = e->ino < nfiles ? &files[e->ino] : NULL;
        size_t len = f ? f->len : 0;
        unsigned char *b = xalloc(NULL, (size_t)st.st_size);
        if ((size_t)st.st_size != len || pread(fd, b, len, 0) != (ssize_t)len ||
            (len && memcmp(b, f->d, len) != 0)) {
            snprintf(why, n, "%s differs from the model (%zu bytes on disk, %zu modelled)",
                     de->d_name, (size_t)st.st_size, len);
            rc = -1;
        }
        free(b);
        close(fd);
    }
    if (dd != NULL)
        closedir(dd);
    if (rc == 0 && seen != d.n) {
        snprintf(why, n, "%zu files on disk, %zu modelled", seen, d.n);
        rc = -1;
    }
    files_clear(files, nfiles);
    free(files);
    free(d.v);
    return rc;
}
