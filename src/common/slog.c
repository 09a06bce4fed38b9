/* slog.c - logfmt lines on stderr (see slog.h). */
#include "common/slog.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/err.h"

static volatile int current_level = SLOG_INFO;
static const char *const level_names[] = {"debug", "info", "warn", "error", "fatal"};

void slog_set_level(enum slog_level level)
{
    current_level = (int)level;
}

enum slog_level slog_get_level(void)
{
    return (enum slog_level)current_level;
}

int slog_parse_level(const char *s, enum slog_level *out)
{
    for (int i = SLOG_DEBUG; i <= SLOG_ERROR; i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (enum slog_level)i;
            return 0;
        }
    }
    return DTX_EINVAL;
}

const char *slog_quote(const char *s, char *out, unsigned n)
{
    unsigned o = 0;
    if (n < 3) {
        if (n)
            out[0] = '\0';
        return out;
    }
    out[o++] = '"';
    for (; *s && o + 3 < n; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c < 0x20) {
            out[o++] = ' ';
        } else {
            out[o++] = (char)c;
        }
    }
    out[o++] = '"';
    out[o] = '\0';
    return out;
}

void slog_write(enum slog_level level, const char *msg, const char *kvfmt, ...)
{
    if ((int)level < current_level)
        return;
    char line[2048];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    char qmsg[512];
    int n = snprintf(line, sizeof line, "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s msg=%s",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec / 1000000, level_names[level], slog_quote(msg, qmsg, sizeof qmsg));
    if (n < 0)
        return;
    if (kvfmt && kvfmt[0] && (size_t)n < sizeof line - 2) {
        line[n++] = ' ';
        va_list ap;
        va_start(ap, kvfmt);
        int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, kvfmt, ap);
        va_end(ap);
        if (m > 0)
            n += m;
    }
    if ((size_t)n > sizeof line - 2)
        n = (int)sizeof line - 2;
    line[n++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, (size_t)n);
    (void)w;
}
