#include <stdarg.h>
#include <stdio.h>

#include "dispatch/status.h"

static _Thread_local char nk_errbuf[320];

nk_status nk_fail(nk_status st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(nk_errbuf, sizeof nk_errbuf, fmt, ap);
    va_end(ap);
    return st;
}

void nk_clear_error(void) { nk_errbuf[0] = '\0'; }

const char *nk_last_error(void) { return nk_errbuf; }

const char *nk_version(void) { return NK_VERSION_STRING; }
int nk_version_number(void) { return NK_VERSION_NUMBER; }

const char *nk_status_string(nk_status status)
{
    switch (status) {
    case NK_OK: return "ok";
    case NK_ERR_NULL_POINTER: return "null pointer";
    case NK_ERR_BAD_SHAPE: return "bad shape";
    case NK_ERR_BAD_PARAM: return "bad parameter";
    case NK_ERR_TOO_FEW_VALUES: return "too few values for batch statistics";
    case NK_ERR_UNSUPPORTED: return "unsupported";
    case NK_ERR_OUT_OF_MEMORY: return "out of memory";
    }
    return "unknown status";
}
