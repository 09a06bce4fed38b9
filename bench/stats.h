/*
 * stats.h - what the load generators loadgen.c and amqp_confirm.c both
 * report with: latency percentiles over a sorted array of microseconds, and
 * the CPU this process has used. Static functions: each tool is one .c file.
 */
#ifndef DTX_BENCH_STATS_H
#define DTX_BENCH_STATS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/resource.h>

/* qsort order of uint32_t. */
static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile p (0-100) of n sorted microsecond values, in
 * milliseconds; 0 for none. */
static double pct_ms(const uint32_t *v, size_t n, double p)
{
    if (n == 0)
        return 0.0;
    size_t rank = (size_t)(p / 100.0 * (double)n + 0.999999);
    if (rank < 1)
        rank = 1;
    if (rank > n)
        rank = n;
    return v[rank - 1] / 1000.0;
}

/* User + system CPU seconds this process has used. */
static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

#endif
