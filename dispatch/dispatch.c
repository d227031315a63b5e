/*
 * Runtime CPU-feature dispatch. Detection runs once (pthread_once); the
 * tables, one per (ISA, element type), are filled in ascending ISA order,
 * each level starting from the level below of the same dtype and
 * overwriting what it implements. NORMKIT_ISA=scalar|avx2|avx512|neon or
 * nk_set_isa() select a level the CPU supports; nothing can select one it
 * lacks. The selection holds for every dtype.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "dispatch/cpu.h"
#include "dispatch/dispatch.h"
#include "dispatch/status.h"

#define NK_NUM_ISA 4
#define NK_NUM_DTYPE 3 /* NK_DTYPE_F32, NK_DTYPE_F16, NK_DTYPE_BF16 */

static pthread_once_t nk_once = PTHREAD_ONCE_INIT;
static nk_kernels nk_tables[NK_NUM_ISA][NK_NUM_DTYPE];
static int nk_avail[NK_NUM_ISA][NK_NUM_DTYPE];
static nk_cpu_info nk_cpu;
/* the fp32 table of the ISA in use */
static _Atomic(const nk_kernels *) nk_active;

typedef void (*nk_filler)(nk_kernels *k);

static nk_isa best_isa(void)
{
    for (int i = NK_NUM_ISA - 1; i > 0; i--)
        if (nk_avail[i][NK_DTYPE_F32])
            return (nk_isa)i;
    return NK_ISA_SCALAR;
}

/* Table (isa, dt): the table (base, dt) overwritten by fill and then fill2
 * (either may be NULL); the parameter kernels (inv_scale, inv_std,
 * bn_finalize, quant_rows, absmax_rows: fp32 and fp64 arrays only) from
 * (isa, fp32), built first. */
static void add_table(nk_isa isa, unsigned dt, nk_isa base, nk_filler fill, nk_filler fill2)
{
    nk_kernels t = nk_tables[base][dt];
    if (fill)
        fill(&t);
    if (fill2)
        fill2(&t);
    t.isa = isa;
    t.dtype = dt;
    if (dt != NK_DTYPE_F32) {
        t.inv_scale = nk_tables[isa][NK_DTYPE_F32].inv_scale;
        t.inv_std = nk_tables[isa][NK_DTYPE_F32].inv_std;
        t.bn_finalize = nk_tables[isa][NK_DTYPE_F32].bn_finalize;
        t.quant_rows = nk_tables[isa][NK_DTYPE_F32].quant_rows;
        t.absmax_rows = nk_tables[isa][NK_DTYPE_F32].absmax_rows;
    }
    nk_tables[isa][dt] = t;
    nk_avail[isa][dt] = 1;
}

static int parse_isa(const char *s, nk_isa *out)
{
    static const char *const names[NK_NUM_ISA] = {"scalar", "avx2", "avx512", "neon"};
    for (int i = 0; i < NK_NUM_ISA; i++)
        if (!strcmp(s, names[i])) {
            *out = (nk_isa)i;
            return 1;
        }
    return 0;
}

static void nk_init(void)
{
    nk_cpu_detect(&nk_cpu);

    static const nk_filler ref_fill[NK_NUM_DTYPE] = {nk_kernels_init_ref, nk_kernels_init_ref_f16,
                                                     nk_kernels_init_ref_bf16};
    for (unsigned dt = 0; dt < NK_NUM_DTYPE; dt++) {
        memset(&nk_tables[NK_ISA_SCALAR][dt], 0, sizeof(nk_kernels));
        add_table(NK_ISA_SCALAR, dt, NK_ISA_SCALAR, ref_fill[dt], NULL);
    }
#if NK_HAVE_AVX2
    if (nk_cpu.avx2) {
        add_table(NK_ISA_AVX2, NK_DTYPE_F32, NK_ISA_SCALAR, nk_kernels_init_avx2, NULL);
        add_table(NK_ISA_AVX2, NK_DTYPE_F16, NK_ISA_SCALAR, nk_kernels_init_avx2_f16, NULL);
        add_table(NK_ISA_AVX2, NK_DTYPE_BF16, NK_ISA_SCALAR, nk_kernels_init_avx2_bf16, NULL);
#  if NK_HAVE_AVX512
        if (nk_cpu.avx512) {
            add_table(NK_ISA_AVX512, NK_DTYPE_F32, NK_ISA_AVX2, nk_kernels_init_avx512, NULL);
            add_table(NK_ISA_AVX512, NK_DTYPE_F16, NK_ISA_AVX2, nk_kernels_init_avx512_f16, NULL);
            /* bf16 stores: vcvtneps2bf16 where the CPU has AVX512-BF16,
             * integer rounding otherwise (the same bits) */
            nk_filler bf16_ne = NULL;
#    if NK_HAVE_AVX512BF16
            if (nk_cpu.avx512bf16)
                bf16_ne = nk_kernels_init_avx512bf16_bf16;
#    endif
            add_table(NK_ISA_AVX512, NK_DTYPE_BF16, NK_ISA_AVX2, nk_kernels_init_avx512_bf16,
                      bf16_ne);
        }
#  endif
    }
#endif
#if NK_HAVE_NEON
    if (nk_cpu.neon) {
        add_table(NK_ISA_NEON, NK_DTYPE_F32, NK_ISA_SCALAR, nk_kernels_init_neon, NULL);
        if (nk_cpu.neon_fp16)
            add_table(NK_ISA_NEON, NK_DTYPE_F16, NK_ISA_SCALAR, nk_kernels_init_neon_f16, NULL);
        add_table(NK_ISA_NEON, NK_DTYPE_BF16, NK_ISA_SCALAR, nk_kernels_init_neon_bf16, NULL);
    }
#endif

    nk_isa pick = best_isa();
    const char *env = getenv("NORMKIT_ISA");
    nk_isa want;
    if (env && *env && parse_isa(env, &want) && nk_avail[want][NK_DTYPE_F32])
        pick = want;
    atomic_store(&nk_active, &nk_tables[pick][NK_DTYPE_F32]);
}

static void ensure_init(void) { pthread_once(&nk_once, nk_init); }

const nk_kernels *nk_kernels_current(void)
{
    ensure_init();
    return atomic_load_explicit(&nk_active, memory_order_acquire);
}

const nk_kernels *nk_kernels_for(nk_isa isa) { return nk_kernels_for_dtype(isa, NK_DTYPE_F32); }

const nk_kernels *nk_kernels_for_dtype(nk_isa isa, unsigned dtype)
{
    ensure_init();
    if ((unsigned)isa >= NK_NUM_ISA || dtype >= NK_NUM_DTYPE || !nk_avail[isa][dtype])
        return NULL;
    return &nk_tables[isa][dtype];
}

const nk_kernels *nk_kernels_current_dtype(unsigned dtype)
{
    if (dtype >= NK_NUM_DTYPE)
        return NULL;
    int isa = (int)nk_kernels_current()->isa;
    while (isa > 0 && !nk_avail[isa][dtype])
        isa--;
    return &nk_tables[isa][dtype];
}

nk_isa nk_get_isa(void) { return nk_kernels_current()->isa; }

const char *nk_isa_name(nk_isa isa)
{
    switch (isa) {
    case NK_ISA_SCALAR: return "scalar";
    case NK_ISA_AVX2: return "avx2";
    case NK_ISA_AVX512: return "avx512";
    case NK_ISA_NEON: return "neon";
    }
    return "unknown";
}

int nk_isa_supported(nk_isa isa) { return nk_kernels_for(isa) != NULL; }

const char *nk_isa_reason(nk_isa isa)
{
    ensure_init();
    switch (isa) {
    case NK_ISA_SCALAR: return "portable C, always available";
    case NK_ISA_AVX2:
#if NK_HAVE_AVX2
        return nk_cpu.avx2_reason;
#else
        return "AVX2 kernels not compiled into this build";
#endif
    case NK_ISA_AVX512:
#if NK_HAVE_AVX512
        return nk_cpu.avx512_reason;
#else
        return "AVX-512 kernels not compiled into this build";
#endif
    case NK_ISA_NEON:
#if NK_HAVE_NEON
        return nk_cpu.neon_reason;
#else
        return "NEON kernels not compiled into this build";
#endif
    }
    return "unknown ISA";
}

nk_status nk_set_isa(nk_isa isa)
{
    const nk_kernels *t = nk_kernels_for(isa);
    if (!t)
        return nk_fail(NK_ERR_UNSUPPORTED, "nk_set_isa: %s is not available: %s", nk_isa_name(isa),
                       (unsigned)isa < NK_NUM_ISA ? nk_isa_reason(isa) : "unknown ISA");
    atomic_store_explicit(&nk_active, t, memory_order_release);
    nk_clear_error();
    return NK_OK;
}
