/*
 * participant.c - the benchmark's trivial participant service.
 *
 * It stands in for a service that does no work at all, so that a benchmark
 * measures what the coordinator costs and nothing else: every request (POST
 * or not, any path) is read to the end and answered `200` with the body `{}`,
 * over HTTP/1.1 keep-alive.
 *
 * Shape: --threads N (default 1) threads, each with its own libmicrohttpd
 * daemon in epoll mode, all listening on the same port with SO_REUSEPORT so
 * the kernel spreads connections over them. Each thread drives its daemon
 * itself: wait on MHD's epoll fd (bounded by MHD_get_timeout), then
 * MHD_run(), which never blocks. That is how dtxd drives MHD too.
 *
 * Why not MHD_USE_EPOLL_INTERNAL_THREAD: in libmicrohttpd 0.9.75 its loop
 * deadlocks once 128 connections (its MAX_EVENTS) are ready at the same
 * time. MHD_epoll() drains the epoll queue with `while (num_events ==
 * MAX_EVENTS) epoll_wait(..., timeout)`, so after a full batch it blocks
 * again with the internal thread's timeout (infinite here) before serving
 * the 128 connections it has just collected; their clients wait for those
 * answers and send nothing new. With a closed-loop load of >= 128 connections
 * the participant stops answering for good (seen here: epoll_wait(fd, ...,
 * 128, -1) with every socket's receive queue full). MHD_run() passes a zero
 * timeout to the same loop and is immune.
 *
 * The answer is one response object made at start-up and shared by every
 * connection (MHD reference-counts it), in "turbo" mode and without a Date
 * header, so answering allocates nothing of ours. The main thread waits for
 * SIGINT/SIGTERM, stops the threads and prints how many requests were
 * answered to stderr (a cheap check that a run did reach the participant).
 *
 * Usage: participant [--host ADDR] [--port N] [--threads N]
 * --port 0 (the default) picks a free port; the port is printed to stdout as
 * the line `PORT <n>` once every daemon is listening.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_THREADS 64

/* One daemon and the thread that drives it. */
struct worker {
    struct MHD_Daemon *daemon;
    pthread_t thread;
    int outer; /* epoll set of the daemon's epoll fd and stop_fd */
};

static struct MHD_Response *ok_response;
static atomic_ulong answered;
static int stop_fd = -1; /* eventfd: readable once the workers must stop */

/* A marker for "headers seen" in *req_cls; its value is never read. */
static int req_started;

/*
 * MHD calls this once when the headers are in, then once per chunk of body,
 * then once more with *upload_data_size == 0 when the body is complete: that
 * last call answers.
 */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **req_cls)
{
    (void)cls;
    (void)url;
    (void)method;
    (void)version;
    (void)upload_data;
    if (*req_cls == NULL) {
        *req_cls = &req_started;
        return MHD_YES;
    }
    if (*upload_data_size != 0) {
        *upload_data_size = 0; /* body consumed and dropped */
        return MHD_YES;
    }
    atomic_fetch_add_explicit(&answered, 1, memory_order_relaxed);
    return MHD_queue_response(conn, MHD_HTTP_OK, ok_response);
}

/* Drive one daemon until stop_fd fires. */
static void *worker_main(void *arg)
{
    struct worker *w = arg;
    for (;;) {
        MHD_UNSIGNED_LONG_LONG to = 0;
        int timeout_ms = -1;
        if (MHD_get_timeout(w->daemon, &to) == MHD_YES)
            timeout_ms = to > 1000 ? 1000 : (int)to;
        struct epoll_event ev[2];
        int n = epoll_wait(w->outer, ev, 2, timeout_ms);
        if (n < 0 && errno != EINTR) {
            perror("participant: epoll_wait");
            exit(1);
        }
        for (int i = 0; i < n; i++) {
            if (ev[i].data.ptr == &stop_fd)
                return NULL;
        }
        if (MHD_run(w->daemon) != MHD_YES) {
            fprintf(stderr, "participant: MHD_run failed\n");
            exit(1);
        }
    }
}

/* Start one daemon listening on addr (SO_REUSEPORT, so several can share it). */
static int worker_start(struct worker *w, const struct sockaddr_in *addr)
{
    unsigned int flags =
        MHD_USE_EPOLL | MHD_USE_TURBO | MHD_USE_SUPPRESS_DATE_NO_CLOCK | MHD_USE_ERROR_LOG;
    w->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, NULL, MHD_OPTION_SOCK_ADDR, (const struct sockaddr *)addr,
        MHD_OPTION_LISTENING_ADDRESS_REUSE, (unsigned int)1, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned int)10000, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)0,
        MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned int)4096, MHD_OPTION_END);
    if (w->daemon == NULL)
        return -1;
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(w->daemon, MHD_DAEMON_INFO_EPOLL_FD);
    w->outer = epoll_create1(EPOLL_CLOEXEC);
    if (info == NULL || w->outer < 0)
        return -1;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = w};
    if (epoll_ctl(w->outer, EPOLL_CTL_ADD, info->epoll_fd, &ev) != 0)
        return -1;
    ev.data.ptr = &stop_fd;
    if (epoll_ctl(w->outer, EPOLL_CTL_ADD, stop_fd, &ev) != 0)
        return -1;
    if (pthread_create(&w->thread, NULL, worker_main, w) != 0)
        return -1;
    return 0;
}

static void usage(void)
{
    fprintf(stderr, "usage: participant [--host ADDR] [--port N] [--threads N]\n"
                    "  --host ADDR   listen address (default 127.0.0.1)\n"
                    "  --port N      listen port, 0 = pick one (default 0)\n"
                    "  --threads N   threads, one MHD daemon each (default 1)\n");
}

/* Parse a non-negative integer no larger than max; -1 when invalid. */
static long parse_count(const char *s, long max)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < 0 || v > max)
        return -1;
    return v;
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1";
    long port = 0;
    long threads = 1;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage();
            return 0;
        }
        if (v == NULL) {
            usage();
            return 2;
        }
        if (strcmp(a, "--host") == 0) {
            host = v;
        } else if (strcmp(a, "--port") == 0) {
            port = parse_count(v, 65535);
        } else if (strcmp(a, "--threads") == 0) {
            threads = parse_count(v, MAX_THREADS);
        } else {
            usage();
            return 2;
        }
        if (port < 0 || threads < 1) {
            fprintf(stderr, "participant: bad value for %s: %s\n", a, v);
            return 2;
        }
        i++;
    }

    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((unsigned short)port);
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
        fprintf(stderr, "participant: --host must be an IPv4 address: %s\n", host);
        return 2;
    }

    /* The workers inherit this mask, so only sigwait() below sees them. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    static const char body[] = "{}";
    ok_response =
        MHD_create_response_from_buffer(sizeof body - 1, (void *)body, MHD_RESPMEM_PERSISTENT);
    if (ok_response == NULL || MHD_add_response_header(ok_response, MHD_HTTP_HEADER_CONTENT_TYPE,
                                                       "application/json") != MHD_YES) {
        fprintf(stderr, "participant: cannot make the response\n");
        return 1;
    }
    stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (stop_fd < 0) {
        perror("participant: eventfd");
        return 1;
    }

    static struct worker workers[MAX_THREADS];
    for (long i = 0; i < threads; i++) {
        if (worker_start(&workers[i], &addr) != 0) {
            fprintf(stderr, "participant: cannot listen on %s:%u\n", host,
                    (unsigned)ntohs(addr.sin_port));
            return 1;
        }
        if (i == 0) {
            /* with --port 0 the first daemon picked the port the others share */
            const union MHD_DaemonInfo *info =
                MHD_get_daemon_info(workers[0].daemon, MHD_DAEMON_INFO_BIND_PORT);
            if (info == NULL || info->port == 0) {
                fprintf(stderr, "participant: cannot learn the bound port\n");
                return 1;
            }
            addr.sin_port = htons(info->port);
        }
    }
    printf("PORT %u\n", (unsigned)ntohs(addr.sin_port));
    fflush(stdout);

    int sig = 0;
    sigwait(&sigs, &sig);

    uint64_t one = 1;
    if (write(stop_fd, &one, sizeof one) != (ssize_t)sizeof one) {
        perror("participant: eventfd write");
        return 1;
    }
    for (long i = 0; i < threads; i++) {
        pthread_join(workers[i].thread, NULL);
        MHD_stop_daemon(workers[i].daemon);
        close(workers[i].outer);
    }
    MHD_destroy_response(ok_response);
    close(stop_fd);
    fprintf(stderr, "participant: %lu requests answered\n", (unsigned long)atomic_load(&answered));
    return 0;
}
