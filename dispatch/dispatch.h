/* The kernel tables: one per (ISA, element type) this CPU and build can run. */
#ifndef NK_DISPATCH_DISPATCH_H
#define NK_DISPATCH_DISPATCH_H

#include "kernels/kernels.h"

/* The table in use (forced or best). Never NULL. */
const nk_kernels *nk_kernels_current(void);
/* The table of one ISA, or NULL when this CPU / build cannot run it. */
const nk_kernels *nk_kernels_for(nk_isa isa);
/* The same two for an element type (NK_DTYPE_*): nk_kernels_current() and
 * nk_kernels_for() are their fp32 tables. nk_kernels_current_dtype is the
 * table of the ISA in use, or where it has none of that dtype (fp16 on an
 * ARMv7 NEON without the fp16 conversions) the best one below it; NULL only
 * for an unknown dtype. nk_kernels_for_dtype is NULL for an unknown dtype
 * or an ISA without a table of that dtype on this CPU / build. Entries
 * without x and y (inv_scale, inv_std) are the fp32 table's in every one. */
const nk_kernels *nk_kernels_current_dtype(unsigned dtype);
const nk_kernels *nk_kernels_for_dtype(nk_isa isa, unsigned dtype);

#endif
