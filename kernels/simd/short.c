/*
 * norm_short: LayerNorm / RMSNorm / InstanceNorm of rows of at most
 * NK_SHORT_ROW floats, statistics and normalize in one call (contract and
 * error bound in kernels/kernels.h), written once and compiled per ISA
 * through nk_simd.h (AVX2, AVX-512, NEON).
 *
 * A short row is a few dozen flops, so the row kernels' fixed costs per row
 * (horizontal sums, fp64 chunk finalisation, a moments and a normalize
 * call) dominate it. Here NK_VL rows go together, one row per lane of the
 * statistics: transposing trees (vf_fold_rows, vf_sum_folded) leave each
 * row's sum in its lane, the means, variances and 1 / sqrt of the block are
 * a few vector operations, and each row is normalized with its m and s
 * broadcast.
 *
 * LayerNorm is two-pass, in the form of kernels/ref/short_ref.c: pass 1
 * sums x - K with K the row's first element (mean = K + sum / n: exact for a
 * constant row, and the sum does not carry the bits of a large mean), pass
 * 2 sums (x - mean)^2. RMSNorm is one pass of x^2.
 *
 * Rows of a last, partial block repeat its last row (those lanes are
 * computed and dropped), and every lane runs the same operations in the
 * same order, so a row's result depends on that row alone, not on its
 * block or its lane. Rows whose statistics are not finite are recomputed
 * by nk_short_stats_f64.
 *
 * The affine is per column (gamma and beta copied once per call into whole
 * vectors, loaded with each vector of the row) or, NK_SHORT_ROW_AFFINE, per
 * row (the row's gamma and beta broadcast once per row); the two are
 * compiled apart (ROWAFF), so neither tests the mode in its loops.
 */
#include "kernels/simd/nk_simd.h"

/* vectors per row, at most */
#define SHORT_V ((NK_SHORT_ROW + NK_VL - 1) / NK_VL)
#define HALF (NK_VL / 2)

/* Lanes go to rows through memory: a vector store, then scalar and
 * broadcast loads, where the compiler would otherwise extract and broadcast
 * in registers with shuffles, the busier resource here. The empty asm makes
 * it assume the array changed after the store. */
#define NK_VIA_MEMORY(a) __asm__("" : "+m"(*(float(*)[NK_VL])(a)))

/* The first NK_VL row pointers of a block of nr rows from x (those past nr
 * repeat row nr - 1). */
NK_INLINE void block_rows(const xt *x, size_t nr, size_t xstride, const xt **p)
{
    for (size_t r = 0; r < NK_VL; r++) {
        p[r] = x;
        x += r + 1 < nr ? xstride : 0;
    }
}

/*
 * Statistics of the block's NK_VL rows p[r] of V >= 2 vectors (V a constant
 * after inlining), the last vector holding tail (1..NK_VL) floats: m[r],
 * s[r]. Bit r of the result is set where they are not finite. Rows r and
 * r + HALF are accumulated together and folded at once, so half as many
 * accumulators are live.
 */
NK_INLINE unsigned stats_body(const xt *const *p, size_t tail, float inv, float eps, const int V,
                              const int RMS, float *m, float *s)
{
#define LD(r, j)                                                                                   \
    ((j) == V - 1 ? vx_load_n(p[r] + (size_t)(j) * NK_VL, tail)                                   \
                  : vx_loadu(p[r] + (size_t)(j) * NK_VL))
/* x - k, 0 past tail */
#define DEV(r, j, k) ((j) == V - 1 ? vf_sub_n(LD(r, j), k, tail) : vf_sub(LD(r, j), k))
    const vf vinv = vf_set1(inv), ve = vf_set1(eps);
    vf w[HALF], S1 = vf_zero();
    if (!RMS) {
        /* pass 1: sum(x - K) */
        for (int i = 0; i < HALF; i++) {
            const vf ka = vf_set1(nk_xload(p[i])), kb = vf_set1(nk_xload(p[i + HALF]));
            vf a = DEV(i, 0, ka), b = DEV(i + HALF, 0, kb);
            for (int j = 1; j < V; j++) {
                a = vf_add(a, DEV(i, j, ka));
                b = vf_add(b, DEV(i + HALF, j, kb));
            }
            w[i] = vf_fold_rows(a, b);
        }
        S1 = vf_sum_folded(w);
        float c[NK_VL];
        vf_storeu(c, vf_mul(S1, vinv));
        NK_VIA_MEMORY(c);
        for (int r = 0; r < NK_VL; r++)
            m[r] = nk_xload(p[r]) + c[r];
        NK_VIA_MEMORY(m);
    } else {
        vf_storeu(m, vf_zero());
    }
    /* pass 2: sum((x - m)^2), m = 0 for RMSNorm */
    for (int i = 0; i < HALF; i++) {
        const vf ma = vf_set1(m[i]), mb = vf_set1(m[i + HALF]);
        vf da = RMS ? LD(i, 0) : DEV(i, 0, ma), db = RMS ? LD(i + HALF, 0) : DEV(i + HALF, 0, mb);
        vf qa = vf_mul(da, da), qb = vf_mul(db, db);
        for (int j = 1; j < V; j++) {
            da = RMS ? LD(i, j) : DEV(i, j, ma);
            db = RMS ? LD(i + HALF, j) : DEV(i + HALF, j, mb);
            qa = vf_fma(da, da, qa);
            qb = vf_fma(db, db, qb);
        }
        w[i] = vf_fold_rows(qa, qb);
    }
#undef DEV
#undef LD
    const vf S2 = vf_sum_folded(w);
    vf_storeu(s, vf_rcp_sqrt(vf_add(vf_mul(S2, vinv), ve)));
    /* a non-finite mean makes S2 non-finite too */
    return vf_nonfinite(S1) | vf_nonfinite(S2);
}

typedef unsigned (*stats_fn)(const xt *const *p, size_t tail, float inv, float eps, float *m,
                             float *s);

/* One statistics function per (V, LayerNorm / RMSNorm), called once per
 * block: the normalize loops are compiled per (V, activation) and need not
 * be multiplied by these. */
#define STATS(V)                                                                                   \
    static unsigned stats_ln_##V(const xt *const *p, size_t tail, float inv, float eps,           \
                                 float *m, float *s)                                               \
    {                                                                                              \
        return stats_body(p, tail, inv, eps, V, 0, m, s);                                          \
    }                                                                                              \
    static unsigned stats_rms_##V(const xt *const *p, size_t tail, float inv, float eps,          \
                                  float *m, float *s)                                              \
    {                                                                                              \
        return stats_body(p, tail, inv, eps, V, 1, m, s);                                          \
    }
/* V = 2 .. SHORT_V: 4 (AVX-512), 8 (AVX2) or 16 (NEON) */
#define SHORT_VS_4(X) X(2) X(3) X(4)
#define SHORT_VS_8(X) SHORT_VS_4(X) X(5) X(6) X(7) X(8)
#define SHORT_VS_16(X) SHORT_VS_8(X) X(9) X(10) X(11) X(12) X(13) X(14) X(15) X(16)
#if SHORT_V == 4
#  define SHORT_VS SHORT_VS_4
#elif SHORT_V == 8
#  define SHORT_VS SHORT_VS_8
#elif SHORT_V == 16
#  define SHORT_VS SHORT_VS_16
#else
#  error "norm_short: NK_SHORT_ROW / NK_VL vectors not listed"
#endif
SHORT_VS(STATS)
#define STATS_LN(V) stats_ln_##V,
#define STATS_RMS(V) stats_rms_##V,
static const stats_fn stats_tab[2][SHORT_V - 1] = {{SHORT_VS(STATS_LN)}, {SHORT_VS(STATS_RMS)}};
#undef STATS_RMS
#undef STATS_LN
#undef STATS

/* m[r], s[r] of the nr (<= NK_VL) rows from x, V >= 2 */
NK_INLINE void block_stats(const xt *x, size_t nr, size_t len, size_t xstride, size_t tail,
                           float inv, float eps, int rms, stats_fn stats, float *m, float *s)
{
    const xt *p[NK_VL];
    block_rows(x, nr, xstride, p);
    unsigned bad = stats(p, tail, inv, eps, m, s) & ((2u << (nr - 1)) - 1u);
    for (; bad; bad &= bad - 1) {
        const unsigned r = (unsigned)__builtin_ctz(bad);
        NK_DT_F64(nk_short_stats_f64)(p[r], len, eps, rms, &m[r], &s[r]);
    }
}

/* p + r, NULL for NULL */
NK_INLINE const float *row_at(const float *p, size_t r) { return p ? p + r : NULL; }

/* gamma and beta of row r, ROWAFF: g / b hold one float per row of the
 * block (NULL: 1 / 0). Scalar loads broadcast: a select of the pointer
 * vectorised would be a masked load from NULL (see nk_short_affine). */
NK_INLINE vf row_g(const float *g, size_t r) { return vf_set1(g ? g[r] : 1.0f); }
NK_INLINE vf row_b(const float *b, size_t r) { return vf_set1(b ? b[r] : 0.0f); }

/* y = act(((x - m) * s) * g + b) for nr rows of V vectors from memory; gl /
 * bl hold g / b (or 1 / 0) padded to whole vectors, or with ROWAFF one
 * float per row (or NULL). RMSNorm skips the subtraction of its m = 0
 * (x - 0 == x; AVX2, 64 floats: 6.7 -> 6.3 ns a row). */
NK_INLINE void norm_body(const xt *x, xt *y, size_t nr, size_t xstride, size_t ystride,
                         size_t tail, const float *gl, const float *bl, const float *m,
                         const float *s, const int V, const int RMS, const int ROWAFF,
                         const int act, vf alpha, int stream)
{
    for (size_t r = 0; r < nr; r++, x += xstride, y += ystride) {
        const vf vm = vf_set1(m[r]), vs = vf_set1(s[r]);
        const vf rg = ROWAFF ? row_g(gl, r) : vf_zero(), rb = ROWAFF ? row_b(bl, r) : vf_zero();
        for (int j = 0; j < V; j++) {
            const size_t o = (size_t)j * NK_VL;
            const int full = j < V - 1 || tail == NK_VL;
            vf v = full ? vx_loadu(x + o) : vx_load_n(x + o, tail);
            v = act_apply(vf_fma(vf_mul(RMS ? v : vf_sub(v, vm), vs),
                                 ROWAFF ? rg : vf_loadu(gl + o), ROWAFF ? rb : vf_loadu(bl + o)),
                          act, alpha);
            if (!full)
                vx_store_n(y + o, v, tail);
            else if (stream)
                vx_stream(y + o, v);
            else
                vx_storeu(y + o, v);
        }
    }
}

/*
 * Rows of one vector (len <= NK_VL): a block of nr <= NK_VL rows from load
 * to store in one piece. With nothing to accumulate across vectors, the
 * first fold of two rows' deviations a, b gives their parts P and Q
 * (vf_fold_p / vf_fold_q), whose P + Q folds sum(d) and P * P + Q * Q folds
 * sum(d^2). Both products are rounded (no fma), which keeps the two rows of
 * a pair symmetric: a row's result does not depend on its place in the
 * pair. The deviations of pass 2 stay in registers for the output, so x is
 * neither reloaded nor subtracted again. A block with a non-finite row is
 * normalized through norm_body after the fp64 recomputation (the same
 * operations on every row).
 */
NK_INLINE void block1(const xt *x, xt *y, size_t nr, size_t len, size_t xstride,
                      size_t ystride, const float *gl, const float *bl, float inv, float eps,
                      const int RMS, const int ROWAFF, const int act, vf alpha, int stream,
                      float *m, float *s)
{
    const vf vinv = vf_set1(inv), ve = vf_set1(eps);
    const xt *p[NK_VL];
    block_rows(x, nr, xstride, p);
    vf v[NK_VL], w[HALF], S1 = vf_zero();
    for (int r = 0; r < NK_VL; r++)
        v[r] = vx_load_n(p[r], len);
    if (!RMS) {
        for (int i = 0; i < HALF; i++)
            w[i] = vf_fold_rows(vf_sub_n(v[i], vf_set1(nk_xload(p[i])), len),
                                vf_sub_n(v[i + HALF], vf_set1(nk_xload(p[i + HALF])), len));
        S1 = vf_sum_folded(w);
        float c[NK_VL];
        vf_storeu(c, vf_mul(S1, vinv));
        for (int r = 0; r < NK_VL; r++)
            m[r] = nk_xload(p[r]) + c[r];
        NK_VIA_MEMORY(m);
        for (int r = 0; r < NK_VL; r++)
            v[r] = vf_sub_n(v[r], vf_set1(m[r]), len);
    } else {
        vf_storeu(m, vf_zero());
    }
    for (int i = 0; i < HALF; i++) {
        const vf P = vf_fold_p(v[i], v[i + HALF]), Q = vf_fold_q(v[i], v[i + HALF]);
        w[i] = vf_add(vf_mul(P, P), vf_mul(Q, Q));
    }
    const vf S2 = vf_sum_folded(w);
    vf_storeu(s, vf_rcp_sqrt(vf_add(vf_mul(S2, vinv), ve)));
    unsigned bad = (vf_nonfinite(S1) | vf_nonfinite(S2)) & ((2u << (nr - 1)) - 1u);
    if (bad) {
        for (; bad; bad &= bad - 1) {
            const unsigned r = (unsigned)__builtin_ctz(bad);
            NK_DT_F64(nk_short_stats_f64)(p[r], len, eps, RMS, &m[r], &s[r]);
        }
        norm_body(x, y, nr, xstride, ystride, len, gl, bl, m, s, 1, RMS, ROWAFF, act, alpha,
                  stream);
        return;
    }
    NK_VIA_MEMORY(s);
    const vf vg = ROWAFF ? vf_zero() : vf_loadu(gl), vb = ROWAFF ? vf_zero() : vf_loadu(bl);
    for (int r = 0; r < NK_VL; r++, y += ystride) {
        if ((size_t)r == nr)
            break;
        const vf o = act_apply(vf_fma(vf_mul(v[r], vf_set1(s[r])),
                                      ROWAFF ? row_g(gl, (size_t)r) : vg,
                                      ROWAFF ? row_b(bl, (size_t)r) : vb),
                               act, alpha);
        if (len < NK_VL)
            vx_store_n(y, o, len);
        else if (stream)
            vx_stream(y, o);
        else
            vx_storeu(y, o);
    }
}

NK_INLINE void short_rows(const xt *x, xt *y, size_t rows, size_t len, size_t xstride,
                          size_t ystride, const float *g, const float *b, float eps, int rms,
                          float *mean_out, float *rstd_out, const nk_epilogue *ep, const int V,
                          const int ROWAFF, const int act)
{
    const size_t tail = len - (size_t)(V - 1) * NK_VL;
    float gl[SHORT_V * NK_VL], bl[SHORT_V * NK_VL];
    if (!ROWAFF)
        nk_short_affine(g, b, len, (size_t)V * NK_VL, gl, bl);
/* the affine of the block from row r0: the padded vectors, or its rows' own */
#define GL(r0) (ROWAFF ? row_at(g, r0) : gl)
#define BL(r0) (ROWAFF ? row_at(b, r0) : bl)
    const float inv = 1.0f / (float)len;
    const vf alpha = vf_set1(ep->alpha);
    /* streaming only when every row's full vectors are aligned */
    const int stream = NK_STREAM(ep) && nk_aligned(y) && ystride % NK_VL == 0;
    float ms[2][2][NK_VL];
    if (V == 1) {
        for (size_t r0 = 0; r0 < rows; r0 += NK_VL) {
            const size_t nr = rows - r0 < NK_VL ? rows - r0 : NK_VL;
            float *m = ms[0][0], *s = ms[0][1];
            if (rms)
                block1(x + r0 * xstride, y + r0 * ystride, nr, len, xstride, ystride, GL(r0),
                       BL(r0), inv, eps, 1, ROWAFF, act, alpha, stream, m, s);
            else
                block1(x + r0 * xstride, y + r0 * ystride, nr, len, xstride, ystride, GL(r0),
                       BL(r0), inv, eps, 0, ROWAFF, act, alpha, stream, m, s);
            if (mean_out)
                memcpy(mean_out + r0, m, nr * sizeof(float));
            if (rstd_out)
                memcpy(rstd_out + r0, s, nr * sizeof(float));
        }
    } else {
        /* The statistics of the next block are computed before this block's
         * normalize, so that they overlap this block's divide and square
         * root instead of waiting behind them. In place, the next block's
         * rows are read before this block's are written: they are other
         * rows. */
        const stats_fn stats = stats_tab[rms != 0][V - 2];
        block_stats(x, rows < NK_VL ? rows : NK_VL, len, xstride, tail, inv, eps, rms, stats,
                    ms[0][0], ms[0][1]);
        for (size_t r0 = 0, k = 0; r0 < rows; r0 += NK_VL, k ^= 1) {
            const size_t nr = rows - r0 < NK_VL ? rows - r0 : NK_VL;
            if (r0 + NK_VL < rows) {
                const size_t r1 = r0 + NK_VL, nr1 = rows - r1 < NK_VL ? rows - r1 : NK_VL;
                block_stats(x + r1 * xstride, nr1, len, xstride, tail, inv, eps, rms, stats,
                            ms[k ^ 1][0], ms[k ^ 1][1]);
            }
            const float *m = ms[k][0], *s = ms[k][1];
            if (mean_out)
                memcpy(mean_out + r0, m, nr * sizeof(float));
            if (rstd_out)
                memcpy(rstd_out + r0, s, nr * sizeof(float));
            if (rms)
                norm_body(x + r0 * xstride, y + r0 * ystride, nr, xstride, ystride, tail, GL(r0),
                          BL(r0), m, s, V, 1, ROWAFF, act, alpha, stream);
            else
                norm_body(x + r0 * xstride, y + r0 * ystride, nr, xstride, ystride, tail, GL(r0),
                          BL(r0), m, s, V, 0, ROWAFF, act, alpha, stream);
        }
    }
#undef GL
#undef BL
    if (stream)
        nk_stream_fence();
}

NK_INLINE void short_act(const xt *x, xt *y, size_t rows, size_t len, size_t xstride,
                         size_t ystride, const float *g, const float *b, float eps, int rms,
                         float *mean_out, float *rstd_out, const nk_epilogue *ep,
                         const int ROWAFF, const int act)
{
#define CASE(V)                                                                                    \
    case V:                                                                                        \
        short_rows(x, y, rows, len, xstride, ystride, g, b, eps, rms, mean_out, rstd_out, ep, V,   \
                   ROWAFF, act);                                                                   \
        break;
    switch ((len + NK_VL - 1) / NK_VL) {
        CASE(1)
        CASE(2)
        CASE(3)
#if SHORT_V > 4
        CASE(4)
        CASE(5)
        CASE(6)
        CASE(7)
#endif
#if SHORT_V > 8
        CASE(8)
        CASE(9)
        CASE(10)
        CASE(11)
        CASE(12)
        CASE(13)
        CASE(14)
        CASE(15)
#endif
    default:
        short_rows(x, y, rows, len, xstride, ystride, g, b, eps, rms, mean_out, rstd_out, ep,
                   SHORT_V, ROWAFF, act);
        break;
    }
#undef CASE
}

/* One function per activation and affine mode: each a unit the register
 * allocator handles well (with every instantiation in one function it
 * spilled the block's vectors in the hot loop). */
#define SHORT_FN(ACT)                                                                              \
    static __attribute__((noinline)) void short_##ACT(                                             \
        const xt *x, xt *y, size_t rows, size_t len, size_t xstride, size_t ystride,               \
        const float *g, const float *b, float eps, int rms, float *mean_out, float *rstd_out,      \
        const nk_epilogue *ep)                                                                     \
    {                                                                                              \
        short_act(x, y, rows, len, xstride, ystride, g, b, eps, rms, mean_out, rstd_out, ep, 0,    \
                  ACT);                                                                            \
    }                                                                                              \
    static __attribute__((noinline)) void short_row_##ACT(                                         \
        const xt *x, xt *y, size_t rows, size_t len, size_t xstride, size_t ystride,               \
        const float *g, const float *b, float eps, int rms, float *mean_out, float *rstd_out,      \
        const nk_epilogue *ep)                                                                     \
    {                                                                                              \
        short_act(x, y, rows, len, xstride, ystride, g, b, eps, rms, mean_out, rstd_out, ep, 1,    \
                  ACT);                                                                            \
    }
NK_ACT_EACH(SHORT_FN)
#undef SHORT_FN

static void NK_FN(norm_short)(const void *xv, void *yv, size_t rows, size_t len, size_t xstride,
                              size_t ystride, const float *g, const float *b, float eps,
                              unsigned flags, float *mean_out, float *rstd_out,
                              const nk_epilogue *ep)
{
    const xt *x = xv;
    xt *y = yv;
    const int rms = (flags & NK_SHORT_RMS) != 0;
#define SHORT(ACT)                                                                                 \
    short_##ACT(x, y, rows, len, xstride, ystride, g, b, eps, rms, mean_out, rstd_out, ep)
#define SHORT_ROW(ACT)                                                                             \
    short_row_##ACT(x, y, rows, len, xstride, ystride, g, b, eps, rms, mean_out, rstd_out, ep)
    if (flags & NK_SHORT_ROW_AFFINE) {
        NK_ACT_SWITCH(SHORT_ROW)
    } else {
        NK_ACT_SWITCH(SHORT)
    }
#undef SHORT_ROW
#undef SHORT
}

void NK_FN(kernels_init_short)(nk_kernels *k) { k->norm_short = NK_FN(norm_short); }
