/*
 * slog.h - structured log lines on stderr.
 *
 * One line per event in logfmt: `ts=... level=info msg="..." key=value ...`.
 * The caller writes the key=value part with a printf format; values that may
 * hold spaces or quotes must be quoted by the caller (slog_quote helps).
 * Thread-safe: each line is one write(2).
 */
#ifndef DTX_SLOG_H
#define DTX_SLOG_H

enum slog_level { SLOG_DEBUG = 0, SLOG_INFO, SLOG_WARN, SLOG_ERROR, SLOG_FATAL };

void slog_set_level(enum slog_level level);
enum slog_level slog_get_level(void);
/* Parse "debug", "info", "warn", "error". Returns 0 or DTX_EINVAL. */
int slog_parse_level(const char *s, enum slog_level *out /* OUT */);
void slog_write(enum slog_level level, const char *msg, const char *kvfmt, ...)
    __attribute__((format(printf, 3, 4)));
/*
 * Quote s for a logfmt value into out (size n), escaping quotes, backslashes
 * and control bytes, truncating if needed. Returns out.
 */
const char *slog_quote(const char *s, char *out, unsigned n);

#define SLOG_ON(l) ((l) >= slog_get_level())
#define slog_debug(msg, ...)                                                                       \
    do {                                                                                           \
        if (SLOG_ON(SLOG_DEBUG))                                                                   \
            slog_write(SLOG_DEBUG, msg, __VA_ARGS__);                                              \
    } while (0)
#define slog_info(msg, ...)  slog_write(SLOG_INFO, msg, __VA_ARGS__)
#define slog_warn(msg, ...)  slog_write(SLOG_WARN, msg, __VA_ARGS__)
#define slog_error(msg, ...) slog_write(SLOG_ERROR, msg, __VA_ARGS__)
#define slog_fatal(msg, ...) slog_write(SLOG_FATAL, msg, __VA_ARGS__)

#endif
