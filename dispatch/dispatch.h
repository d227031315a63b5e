/* The kernel tables: one per ISA this CPU and build can run. */
#ifndef NK_DISPATCH_DISPATCH_H
#define NK_DISPATCH_DISPATCH_H

#include "kernels/kernels.h"

/* The table in use (forced or best). Never NULL. */
const nk_kernels *nk_kernels_current(void);
/* The table of one ISA, or NULL when this CPU / build cannot run it. */
const nk_kernels *nk_kernels_for(nk_isa isa);

#endif
