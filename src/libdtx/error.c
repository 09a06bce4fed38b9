/*
 * error.c - the messages of libdtx's error codes (include/dtx.h).
 *
 * libdtx has its own small table, separate from the daemon's (src/common/
 * err.h): its codes are part of the library's ABI and say what a caller of
 * the API or of a participant database can act on.
 */
#include "dtx.h"

const char *dtx_strerror(int code)
{
    switch (code) {
    case DTX_OK:
        return "success";
    case DTX_EINVAL:
        return "invalid argument";
    case DTX_ENOMEM:
        return "out of memory";
    case DTX_EIO:
        return "could not reach the coordinator";
    case DTX_EPROTO:
        return "the coordinator's answer is not the API";
    case DTX_EAPI:
        return "the coordinator refused the request";
    case DTX_ENOTFOUND:
        return "no such transaction";
    case DTX_ECONFLICT:
        return "conflict";
    case DTX_EDB:
        return "database error";
    case DTX_ETIMEDOUT:
        return "timed out";
    }
    return "unknown error";
}
