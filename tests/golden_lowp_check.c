/*
 * tests/golden/torch_golden_lowp.h compiles as C and holds what it claims:
 * every array matches its dtype code, the sparse float64 reference lists each
 * differing element once and in range, and the ulp histogram adds up.
 * Needs only the headers (no library):
 *
 *   cc -std=c11 -Wall -Wextra -Iinclude -I<build>/include tests/golden_lowp_check.c
 *
 * (<build>/include holds the generated normkit_version.h); the meson suite
 * golden_lowp runs it in native builds. normkit's own 16-bit results are
 * compared with these goldens by test_golden_lowp.c (suite golden_lowp_ops).
 */
#include <stdio.h>
#include <stdlib.h>

#include "golden/torch_golden_lowp.h"

#define NCASES (sizeof gold_lp_cases / sizeof gold_lp_cases[0])

static int check_array(const char *name, const char *what, int dtype, gold_lp_array a)
{
    int ok = dtype == GOLD_LP_NONE   ? !a.f32 && !a.u16
             : dtype == GOLD_LP_F32  ? a.f32 && !a.u16
                                     : !a.f32 && a.u16;
    if (!ok)
        fprintf(stderr, "%s: %s does not match its dtype %d\n", name, what, dtype);
    return ok;
}

static int ulps(uint16_t a, uint16_t b)
{
    int ia = a & 0x8000 ? -(a & 0x7fff) : a, ib = b & 0x8000 ? -(b & 0x7fff) : b;
    return abs(ia - ib);
}

int main(void)
{
    int bad = 0;
    for (size_t i = 0; i < NCASES; i++) {
        const gold_lp_case *gc = &gold_lp_cases[i];
        bad += !check_array(gc->name, "weight", gc->param_dtype, gc->weight);
        bad += !check_array(gc->name, "bias", gc->param_dtype, gc->bias);
        bad += gc->act_dtype != GOLD_LP_BF16 && gc->act_dtype != GOLD_LP_F16;
        for (int k = 0; k < gc->nsteps; k++) {
            const gold_lp_step *s = &gc->steps[k];
            bad += !check_array(gc->name, "running_mean", gc->stats_dtype, s->rmean);
            bad += !check_array(gc->name, "running_var", gc->stats_dtype, s->rvar);
            bad += s->ndiff != s->ulp_hist[0] + s->ulp_hist[1] + s->ulp_hist[2];
            uint16_t *ref = malloc((size_t)s->numel * sizeof *ref);
            if (!ref)
                return 1;
            gold_lp_ref_fill(s, ref);
            int64_t differ = 0;
            int maxu = 0;
            for (int64_t e = 0; e < s->numel; e++) {
                int u = ulps(s->y[e], ref[e]);
                differ += u != 0;
                maxu = u > maxu ? u : maxu;
            }
            for (int64_t d = 1; d < s->ndiff; d++)
                bad += s->diff_idx[d] <= s->diff_idx[d - 1];
            if (differ != s->ndiff || maxu != s->max_ulp) {
                fprintf(stderr, "%s step %d: %lld differ (%lld recorded), max %d ulps (%d recorded)\n", gc->name,
                        k, (long long)differ, (long long)s->ndiff, maxu, (int)s->max_ulp);
                bad++;
            }
            free(ref);
        }
    }
    printf("%zu cases, %d problems\n", NCASES, bad);
    return bad != 0;
}
