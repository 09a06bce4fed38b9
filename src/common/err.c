/* err.c - names and messages of the error table in err.h. */
#include "common/err.h"

const char *dtx_err_name(int code)
{
    switch (code) {
#define DTX_ERR_NAME(name, val, msg)                                                               \
    case (val):                                                                                    \
        return "DTX_E" #name;
        DTX_ERRNO_MAP(DTX_ERR_NAME)
#undef DTX_ERR_NAME
    case 0:
        return "OK";
    }
    return "DTX_EUNKNOWN";
}

const char *dtx_err_message(int code)
{
    switch (code) {
#define DTX_ERR_MSG(name, val, msg)                                                                \
    case (val):                                                                                    \
        return msg;
        DTX_ERRNO_MAP(DTX_ERR_MSG)
#undef DTX_ERR_MSG
    case 0:
        return "success";
    }
    return "unknown error";
}
