/* Shared test helpers: deterministic random data, float64 oracles, guarded buffers. */
#ifndef NK_TEST_H
#define NK_TEST_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "normkit.h"

typedef struct nkt_rng {
    uint64_t s;
} nkt_rng;

/* Every generator is seeded with a per-test constant mixed with the run seed:
 * NORMKIT_TEST_SEED (decimal or 0x hex) when set, else NKT_DEFAULT_SEED.
 * Each test program prints it once ("seed: N (replay with ...)"). */
#define NKT_DEFAULT_SEED 0u
uint64_t nkt_run_seed(void);
void nkt_seed(nkt_rng *r, uint64_t seed);
uint64_t nkt_next(nkt_rng *r);
double nkt_uniform(nkt_rng *r);                 /* [0, 1) */
double nkt_normal(nkt_rng *r);                  /* N(0, 1) */
void nkt_fill(nkt_rng *r, float *x, size_t n, double mean, double std);

/* Guarded buffer: n floats with NKT_GUARD canary floats before and after,
 * optionally misaligned by `shift` floats. nkt_guard_ok checks the canaries. */
#define NKT_GUARD 16
typedef struct nkt_buf {
    float *base; /* allocation */
    float *p;    /* usable n floats */
    size_t n;
} nkt_buf;
nkt_buf nkt_alloc(size_t n, size_t shift);
int nkt_guard_ok(const nkt_buf *b);
void nkt_free(nkt_buf *b);

/* float64 oracle of every operator: act((x - mean) / sqrt(var + eps) * w + b)
 * in double, same layout conventions as the library. Statistics are computed
 * two-pass in double. act applied in double. */
double nkt_act(double v, const nk_options *o);
void nkt_oracle_norm(const float *x, const nk_shape *s, int kind, int64_t groups, const float *w,
                     const float *b, double eps, const nk_options *o, double *y);
#define NKT_BN 0 /* per channel */
#define NKT_IN 1 /* per (n, c) */
#define NKT_GN 2 /* per (n, group) */
void nkt_oracle_layer_norm(const float *x, int64_t rows, int64_t cols, const float *w, const float *b,
                           double eps, const nk_options *o, double *y);
void nkt_oracle_rms_norm(const float *x, int64_t rows, int64_t cols, const float *w, double eps,
                         const nk_options *o, double *y);

/* The ISAs this CPU runs, scalar first, into out (room for NK_ISA_NEON + 1);
 * returns their number. Tests that select each ISA themselves loop over it. */
int nkt_isa_list(nk_isa *out);

/* max |y - ref| and max |y - ref| / max(|ref|, 1) over n elements */
double nkt_max_abs_err(const float *y, const double *ref, size_t n);
/* asserts |y - ref| <= atol + rtol * |ref| elementwise, NaN only where ref is NaN */
void nkt_assert_close(const float *y, const double *ref, size_t n, double atol, double rtol,
                      const char *what);

#endif
