#include "nk_test.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Run seed: NORMKIT_TEST_SEED (decimal, or hex with 0x), else NKT_DEFAULT_SEED. Every
 * generator's stream depends on it, so one number replays a whole run. */
static uint64_t run_seed;
static int run_seed_ready;

static int digit_value(char c, int base)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (base == 16 && c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (base == 16 && c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static uint64_t parse_seed(const char *text)
{
    const char *s = text;
    uint64_t base = 10, v = 0;
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        base = 16;
        s += 2;
    }
    int ok = *s != '\0';
    for (; ok && *s; s++) {
        int d = digit_value(*s, (int)base);
        if (d < 0 || v > (UINT64_MAX - (uint64_t)d) / base)
            ok = 0;
        else
            v = v * base + (uint64_t)d;
    }
    if (!ok) {
        fprintf(stderr, "NORMKIT_TEST_SEED='%s': expected a decimal or 0x-hex 64-bit number\n",
                text);
        exit(2);
    }
    return v;
}

uint64_t nkt_run_seed(void)
{
    if (!run_seed_ready) {
        const char *e = getenv("NORMKIT_TEST_SEED");
        run_seed = e && *e ? parse_seed(e) : NKT_DEFAULT_SEED; /* empty = unset */
        run_seed_ready = 1;
        printf("seed: %llu (replay with NORMKIT_TEST_SEED=%llu)\n", (unsigned long long)run_seed,
               (unsigned long long)run_seed);
        fflush(stdout);
    }
    return run_seed;
}

/* every test program links this file: the seed is printed once at start-up */
__attribute__((constructor)) static void print_run_seed(void) { (void)nkt_run_seed(); }

void nkt_seed(nkt_rng *r, uint64_t seed)
{
    /* the default run seed 0 leaves each generator's stream as it always was */
    r->s = (seed ^ (nkt_run_seed() * 0xD1B54A32D192ED03ull)) * 0x9E3779B97F4A7C15ull + 1;
}

uint64_t nkt_next(nkt_rng *r)
{
    /* splitmix64 */
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

double nkt_uniform(nkt_rng *r) { return (double)(nkt_next(r) >> 11) * (1.0 / 9007199254740992.0); }

double nkt_normal(nkt_rng *r)
{
    double u = nkt_uniform(r), v = nkt_uniform(r);
    return sqrt(-2.0 * log(u + 1e-300)) * cos(6.283185307179586 * v);
}

void nkt_fill(nkt_rng *r, float *x, size_t n, double mean, double std)
{
    for (size_t i = 0; i < n; i++)
        x[i] = (float)(mean + std * nkt_normal(r));
}

static const float canary = -1234.5678f;

nkt_buf nkt_alloc(size_t n, size_t shift)
{
    nkt_buf b;
    b.n = n;
    b.base = malloc((n + 2 * NKT_GUARD + shift + 16) * sizeof(float));
    assert_non_null(b.base);
    /* align base to 64 bytes then shift, so misalignment is controlled */
    uintptr_t a = ((uintptr_t)b.base + 63) & ~(uintptr_t)63;
    float *start = (float *)a;
    if (start + n + 2 * NKT_GUARD + shift > b.base + n + 2 * NKT_GUARD + shift + 16)
        start = b.base;
    b.p = start + NKT_GUARD + shift;
    for (size_t i = 0; i < NKT_GUARD; i++) {
        b.p[-(ptrdiff_t)i - 1] = canary;
        b.p[n + i] = canary;
    }
    for (size_t i = 0; i < n; i++)
        b.p[i] = NAN;
    return b;
}

int nkt_guard_ok(const nkt_buf *b)
{
    for (size_t i = 0; i < NKT_GUARD; i++)
        if (memcmp(&b->p[-(ptrdiff_t)i - 1], &canary, sizeof canary) ||
            memcmp(&b->p[b->n + i], &canary, sizeof canary))
            return 0;
    return 1;
}

void nkt_free(nkt_buf *b)
{
    free(b->base);
    b->base = b->p = NULL;
}

double nkt_act(double v, const nk_options *o)
{
    if (!o)
        return v;
    switch (o->activation) {
    case NK_ACT_RELU: return v < 0 ? 0 : v;
    case NK_ACT_LEAKY_RELU: return v < 0 ? v * o->alpha : v;
    case NK_ACT_SILU: return v / (1.0 + exp(-v));
    case NK_ACT_GELU_ERF: return 0.5 * v * (1.0 + erf(v / sqrt(2.0)));
    case NK_ACT_GELU_TANH:
        return 0.5 * v * (1.0 + tanh(sqrt(2.0 / 3.141592653589793) * (v + 0.044715 * v * v * v)));
    default: return v;
    }
}

static size_t idx(const nk_shape *s, int64_t n, int64_t c, int64_t p)
{
    if (s->layout == NK_CHANNELS_FIRST)
        return (size_t)((n * s->c + c) * s->spatial + p);
    return (size_t)((n * s->spatial + p) * s->c + c);
}

void nkt_oracle_norm(const float *x, const nk_shape *s, int kind, int64_t groups, const float *w,
                     const float *b, double eps, const nk_options *o, double *y)
{
    int64_t N = s->n, C = s->c, S = s->spatial;
    int64_t sets = kind == NKT_BN ? C : kind == NKT_IN ? N * C : N * groups;
    int64_t cpg = kind == NKT_GN ? C / groups : 1;
    for (int64_t q = 0; q < sets; q++) {
        int64_t n0, n1, c0, c1;
        if (kind == NKT_BN) {
            n0 = 0; n1 = N; c0 = q; c1 = q + 1;
        } else if (kind == NKT_IN) {
            n0 = q / C; n1 = n0 + 1; c0 = q % C; c1 = c0 + 1;
        } else {
            n0 = q / groups; n1 = n0 + 1; c0 = (q % groups) * cpg; c1 = c0 + cpg;
        }
        double sum = 0, cnt = 0;
        for (int64_t n = n0; n < n1; n++)
            for (int64_t c = c0; c < c1; c++)
                for (int64_t p = 0; p < S; p++) {
                    sum += x[idx(s, n, c, p)];
                    cnt += 1;
                }
        double mean = sum / cnt, m2 = 0;
        for (int64_t n = n0; n < n1; n++)
            for (int64_t c = c0; c < c1; c++)
                for (int64_t p = 0; p < S; p++) {
                    double d = x[idx(s, n, c, p)] - mean;
                    m2 += d * d;
                }
        double var = m2 / cnt;
        double inv = (var == 0 && eps == 0 && kind != NKT_GN) ? 0.0 : 1.0 / sqrt(var + eps);
        for (int64_t n = n0; n < n1; n++)
            for (int64_t c = c0; c < c1; c++)
                for (int64_t p = 0; p < S; p++) {
                    size_t i = idx(s, n, c, p);
                    double v = (x[i] - mean) * inv * (w ? w[c] : 1.0) + (b ? b[c] : 0.0);
                    y[i] = nkt_act(v, o);
                }
    }
}

void nkt_oracle_layer_norm(const float *x, int64_t rows, int64_t cols, const float *w, const float *b,
                           double eps, const nk_options *o, double *y)
{
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * cols;
        double sum = 0, m2 = 0;
        for (int64_t i = 0; i < cols; i++)
            sum += xr[i];
        double mean = sum / (double)cols;
        for (int64_t i = 0; i < cols; i++)
            m2 += (xr[i] - mean) * (xr[i] - mean);
        double inv = 1.0 / sqrt(m2 / (double)cols + eps);
        for (int64_t i = 0; i < cols; i++)
            y[r * cols + i] = nkt_act((xr[i] - mean) * inv * (w ? w[i] : 1.0) + (b ? b[i] : 0.0), o);
    }
}

void nkt_oracle_rms_norm(const float *x, int64_t rows, int64_t cols, const float *w, double eps,
                         const nk_options *o, double *y)
{
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * cols;
        double ss = 0;
        for (int64_t i = 0; i < cols; i++)
            ss += (double)xr[i] * xr[i];
        double inv = 1.0 / sqrt(ss / (double)cols + eps);
        for (int64_t i = 0; i < cols; i++)
            y[r * cols + i] = nkt_act(xr[i] * inv * (w ? w[i] : 1.0), o);
    }
}

double nkt_max_abs_err(const float *y, const double *ref, size_t n)
{
    double e = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)y[i] - ref[i]);
        if (d > e || isnan(d))
            e = isnan(d) ? INFINITY : d;
    }
    return e;
}

void nkt_assert_close(const float *y, const double *ref, size_t n, double atol, double rtol,
                      const char *what)
{
    for (size_t i = 0; i < n; i++) {
        double r = ref[i], v = y[i];
        int ok = isnan(r) ? isnan(v) : (!isnan(v) && fabs(v - r) <= atol + rtol * fabs(r));
        if (!ok) {
            print_error("%s: element %zu: got %.9g, expected %.9g (atol %g, rtol %g)\n", what, i, v, r,
                        atol, rtol);
            fail();
        }
    }
}

int nkt_isa_list(nk_isa *out)
{
    int n = 0;
    for (int i = NK_ISA_SCALAR; i <= NK_ISA_NEON; i++)
        if (nk_isa_supported((nk_isa)i))
            out[n++] = (nk_isa)i;
    return n;
}
