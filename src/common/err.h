/*
 * err.h - the one table of dtx error codes.
 *
 * Functions return int: 0 on success, a negative DTX_E* code on failure. The
 * table below gives each code its name and message (after libuv's
 * UV_ERRNO_MAP), so logs and API answers name errors the same way everywhere.
 */
#ifndef DTX_ERR_H
#define DTX_ERR_H

#define DTX_ERRNO_MAP(X)                                                                           \
    X(NOMEM, -1, "out of memory")                                                                  \
    X(INVAL, -2, "invalid argument")                                                               \
    X(IO, -3, "input/output error")                                                                \
    X(CORRUPT, -4, "data is corrupt")                                                              \
    X(NOTFOUND, -5, "not found")                                                                   \
    X(EXISTS, -6, "already exists")                                                                \
    X(CONFLICT, -7, "conflicts with existing data")                                                \
    X(TOOBIG, -8, "too large")                                                                     \
    X(CLOSED, -9, "closed")                                                                        \
    X(AGAIN, -10, "try again")                                                                     \
    X(STATE, -11, "not allowed in this state")                                                     \
    X(UNSUPPORTED, -12, "not supported")

enum {
#define DTX_ERR_ENUM(name, val, msg) DTX_E##name = (val),
    DTX_ERRNO_MAP(DTX_ERR_ENUM)
#undef DTX_ERR_ENUM
};

/* Name ("DTX_EIO") and message of an error code; "unknown error" for others.
 * (dtx_strerror is libdtx's public function: include/dtx.h.) */
const char *dtx_err_name(int code);
const char *dtx_err_message(int code);

#endif
