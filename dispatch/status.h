/* Status and thread-local error message: the base layer under dispatch/ and ops/. */
#ifndef NK_DISPATCH_STATUS_H
#define NK_DISPATCH_STATUS_H

#include "normkit.h"

#if defined(__GNUC__)
#  define NK_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#  define NK_PRINTF(a, b)
#endif

/* Records the thread-local message and returns st. */
nk_status nk_fail(nk_status st, const char *fmt, ...) NK_PRINTF(2, 3);
void nk_clear_error(void);

#endif
