/* clock.c - monotonic and wall clocks (see clock.h). */
#include "common/clock.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

uint64_t clock_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

uint64_t clock_mono_ms(void)
{
    return clock_mono_us() / 1000u;
}

int64_t clock_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The date-and-time part changes once a second: cache it per thread. */
static _Thread_local int64_t cached_sec = -1;
static _Thread_local char cached_prefix[24];

const char *clock_fmt_rfc3339(int64_t wall_ms, char out[32])
{
    if (wall_ms < 0)
        wall_ms = 0;
    int64_t sec = wall_ms / 1000;
    if (sec != cached_sec) {
        time_t secs = (time_t)sec;
        struct tm tm;
        gmtime_r(&secs, &tm);
        /* years below 10000 fit; a later year is cut, never overflows */
        char tmp[80];
        snprintf(tmp, sizeof tmp, "%04d-%02d-%02dT%02d:%02d:%02d", tm.tm_year + 1900, tm.tm_mon + 1,
                 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
        memcpy(cached_prefix, tmp, 19);
        cached_prefix[19] = '\0';
        cached_sec = sec;
    }
    int ms = (int)(wall_ms % 1000);
    memcpy(out, cached_prefix, 19);
    out[19] = '.';
    out[20] = (char)('0' + ms / 100);
    out[21] = (char)('0' + ms / 10 % 10);
    out[22] = (char)('0' + ms % 10);
    out[23] = 'Z';
    out[24] = '\0';
    return out;
}
