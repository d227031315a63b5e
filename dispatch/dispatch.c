/*
 * Runtime CPU-feature dispatch. Detection runs once (pthread_once); the
 * tables are filled in ascending ISA order, each level overwriting what it
 * implements. NORMKIT_ISA=scalar|avx2|avx512|neon or nk_set_isa() select a
 * level the CPU supports; nothing can select one it lacks.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "dispatch/cpu.h"
#include "dispatch/dispatch.h"
#include "dispatch/status.h"

#define NK_NUM_ISA 4

static pthread_once_t nk_once = PTHREAD_ONCE_INIT;
static nk_kernels nk_tables[NK_NUM_ISA];
static int nk_avail[NK_NUM_ISA];
static nk_cpu_info nk_cpu;
static _Atomic(const nk_kernels *) nk_active;

static nk_isa best_isa(void)
{
    for (int i = NK_NUM_ISA - 1; i > 0; i--)
        if (nk_avail[i])
            return (nk_isa)i;
    return NK_ISA_SCALAR;
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

    nk_kernels t;
    memset(&t, 0, sizeof t);
    nk_kernels_init_ref(&t);
    nk_tables[NK_ISA_SCALAR] = t;
    nk_avail[NK_ISA_SCALAR] = 1;
#if NK_HAVE_AVX2
    if (nk_cpu.avx2) {
        nk_kernels t2 = nk_tables[NK_ISA_SCALAR];
        nk_kernels_init_avx2(&t2);
        t2.isa = NK_ISA_AVX2;
        nk_tables[NK_ISA_AVX2] = t2;
        nk_avail[NK_ISA_AVX2] = 1;
#  if NK_HAVE_AVX512
        if (nk_cpu.avx512) {
            nk_kernels t5 = t2;
            nk_kernels_init_avx512(&t5);
            t5.isa = NK_ISA_AVX512;
            nk_tables[NK_ISA_AVX512] = t5;
            nk_avail[NK_ISA_AVX512] = 1;
        }
#  endif
    }
#endif
#if NK_HAVE_NEON
    if (nk_cpu.neon) {
        nk_kernels tn = nk_tables[NK_ISA_SCALAR];
        nk_kernels_init_neon(&tn);
        tn.isa = NK_ISA_NEON;
        nk_tables[NK_ISA_NEON] = tn;
        nk_avail[NK_ISA_NEON] = 1;
    }
#endif

    nk_isa pick = best_isa();
    const char *env = getenv("NORMKIT_ISA");
    nk_isa want;
    if (env && *env && parse_isa(env, &want) && nk_avail[want])
        pick = want;
    atomic_store(&nk_active, &nk_tables[pick]);
}

static void ensure_init(void) { pthread_once(&nk_once, nk_init); }

const nk_kernels *nk_kernels_current(void)
{
    ensure_init();
    return atomic_load_explicit(&nk_active, memory_order_acquire);
}

const nk_kernels *nk_kernels_for(nk_isa isa)
{
    ensure_init();
    if ((unsigned)isa >= NK_NUM_ISA || !nk_avail[isa])
        return NULL;
    return &nk_tables[isa];
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
