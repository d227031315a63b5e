/*
 * Moments kernels (moments_rows, moments_cols, sumsq_rows), written once and
 * compiled per ISA through nk_simd.h (AVX2, AVX-512, NEON). Same algorithm as kernels/ref: each
 * chunk is reduced two-pass in fp32 (sum -> provisional mean m0 -> sums of
 * d = x - m0 and d^2), its mean is m0 + sum(d)/n and its M2 is
 * sum(d^2) - sum(d)^2/n, and chunks are merged in fp64 with Chan's formula.
 * A constant chunk gives d == 0 or one rounding step of m0 in every lane;
 * those sums are exact, so mean == value and M2 == 0 exactly.
 *
 * Row chunks are small enough that the second pass reads L1, so a row
 * costs one read from memory: ROW_CHUNK elements per row (64 per lane with
 * AVX-512, 128 with AVX2, 256 with NEON). Columns differ after a two-pass
 * head: one pass per segment of rows, shifted by the running mean (see
 * moments_cols).
 */
#include "kernels/simd/nk_simd.h"

#define ROW_CHUNK 1024
/* rows processed together: amortises the horizontal sums and the scalar
 * fp64 finalisation of short rows, and gives independent add chains */
#define ROW_GROUP 4
/* software prefetch distance in elements: about one chunk ahead */
#ifndef PF_DIST
#  define PF_DIST 1024
#endif

/* Chunk finalisation, fp64 exactly as the reference. */
NK_INLINE void chunk_merge(nk_moments *acc, size_t n, float m0, float s1, float s2)
{
    const double dn = (double)n;
    double mean = (double)m0 + (double)s1 / dn;
    double m2 = (double)s2 - (double)s1 * (double)s1 / dn;
    if (m2 < 0.0)
        m2 = 0.0;
    nk_moments_merge_inline(acc, dn, mean, m2);
}

/*
 * One chunk of n elements of R rows (R = 1, 2 or 4, a constant after
 * inlining). U accumulators per row keep 4 to 8 add chains in flight.
 */
NK_INLINE void rows_chunk(const xt *const *p, const int R, size_t n, nk_moments *acc)
{
    /* x86: >= 16 floats per row per step, one prefetch per line (NEON's
     * 4-lane vectors give 8 with R > 1: a line is prefetched twice) */
    const int U = R == 1 ? 4 : 2;
    vf a[4][4];
    size_t i = 0;
    for (int r = 0; r < R; r++)
        for (int u = 0; u < U; u++)
            a[r][u] = vf_zero();
    for (; i + (size_t)U * NK_VL <= n; i += (size_t)U * NK_VL)
        for (int r = 0; r < R; r++) {
            /* the next chunk streams in while this one's second pass runs
             * from L1 (prefetches past the row end are harmless) */
            for (size_t o = 0; o < (size_t)U * NK_VL; o += NK_XLINE)
                nk_prefetch(p[r] + i + o + PF_DIST);
            for (int u = 0; u < U; u += 2) {
                vf v0, v1;
                vx_loadu2(p[r] + i + (size_t)u * NK_VL, &v0, &v1);
                a[r][u] = vf_add(a[r][u], v0);
                a[r][u + 1] = vf_add(a[r][u + 1], v1);
            }
        }
    for (; i + NK_VL <= n; i += NK_VL)
        for (int r = 0; r < R; r++)
            a[r][0] = vf_add(a[r][0], vx_loadu(p[r] + i));
    const size_t tail = n - i;
    if (tail)
        for (int r = 0; r < R; r++)
            a[r][0] = vf_add(a[r][0], vx_load_n(p[r] + i, tail));

    const float inv = 1.0f / (float)n;
    float m0[4];
    vf vm[4], s1[4][4], s2[4][4];
    /* pass 2 holds 2 * R * U2 sums + R means: with 16 vector registers
     * (AVX2, ARMv7 NEON) four rows get one pair each, or the sums spill to
     * the stack */
    const int U2 = NK_NREGS == 16 && R == 4 ? 1 : U;
    for (int r = 0; r < R; r++) {
        vf t = a[r][0];
        for (int u = 1; u < U; u++)
            t = vf_add(t, a[r][u]);
        m0[r] = vf_hsum(t) * inv;
        vm[r] = vf_set1(m0[r]);
        for (int u = 0; u < U2; u++)
            s1[r][u] = s2[r][u] = vf_zero();
    }
    for (i = 0; i + (size_t)U2 * NK_VL <= n; i += (size_t)U2 * NK_VL)
        for (int r = 0; r < R; r++)
            for (int u = 0; u < U2; u += 2) {
                vf v[2];
                if (u + 1 < U2)
                    vx_loadu2(p[r] + i + (size_t)u * NK_VL, &v[0], &v[1]);
                else
                    v[0] = vx_loadu(p[r] + i + (size_t)u * NK_VL);
                for (int k = 0; k < 2 && u + k < U2; k++) {
                    vf d = vf_sub(v[k], vm[r]);
                    s1[r][u + k] = vf_add(s1[r][u + k], d);
                    s2[r][u + k] = vf_fma(d, d, s2[r][u + k]);
                }
            }
    for (; i + NK_VL <= n; i += NK_VL)
        for (int r = 0; r < R; r++) {
            vf d = vf_sub(vx_loadu(p[r] + i), vm[r]);
            s1[r][0] = vf_add(s1[r][0], d);
            s2[r][0] = vf_fma(d, d, s2[r][0]);
        }
    if (tail)
        for (int r = 0; r < R; r++) {
            vf d = vf_sub_n(vx_load_n(p[r] + i, tail), vm[r], tail);
            s1[r][0] = vf_add(s1[r][0], d);
            s2[r][0] = vf_fma(d, d, s2[r][0]);
        }
    for (int r = 0; r < R; r++) {
        vf t1 = s1[r][0], t2 = s2[r][0];
        for (int u = 1; u < U2; u++) {
            t1 = vf_add(t1, s1[r][u]);
            t2 = vf_add(t2, s2[r][u]);
        }
        chunk_merge(&acc[r], n, m0[r], vf_hsum(t1), vf_hsum(t2));
    }
}

NK_INLINE void rows_group(const xt *x, const int R, size_t len, size_t stride, nk_moments *out)
{
    const xt *p[4];
    for (int r = 0; r < R; r++) {
        out[r].count = out[r].mean = out[r].m2 = 0.0;
        p[r] = x + (size_t)r * stride;
    }
    for (size_t c = 0; c < len; c += ROW_CHUNK) {
        const size_t n = len - c < ROW_CHUNK ? len - c : ROW_CHUNK;
        rows_chunk(p, R, n, out);
        for (int r = 0; r < R; r++)
            p[r] += n;
    }
}

static void NK_FN(moments_rows)(const void *xv, size_t rows, size_t len, size_t stride,
                                nk_moments *out)
{
    const xt *x = xv;
    size_t r = 0;
    for (; r + ROW_GROUP <= rows; r += ROW_GROUP)
        rows_group(x + r * stride, 4, len, stride, out + r);
    if (rows - r >= 2) {
        rows_group(x + r * stride, 2, len, stride, out + r);
        r += 2;
    }
    if (r < rows)
        rows_group(x + r * stride, 1, len, stride, out + r);
}

/* ---- sumsq_rows: fp32 sums of squares per chunk, fp64 across chunks ---- */

NK_INLINE void sumsq_group(const xt *x, const int R, size_t len, size_t stride, double *out)
{
    const int U = R == 1 ? 4 : 2; /* as rows_chunk */
    const xt *p[4];
    for (int r = 0; r < R; r++) {
        out[r] = 0.0;
        p[r] = x + (size_t)r * stride;
    }
    for (size_t c = 0; c < len; c += ROW_CHUNK) {
        const size_t n = len - c < ROW_CHUNK ? len - c : ROW_CHUNK;
        vf a[4][4];
        for (int r = 0; r < R; r++)
            for (int u = 0; u < U; u++)
                a[r][u] = vf_zero();
        size_t i = 0;
        for (; i + (size_t)U * NK_VL <= n; i += (size_t)U * NK_VL)
            for (int r = 0; r < R; r++) {
                vf v[4];
                for (int u = 0; u < U; u++)
                    if (u * NK_VL % NK_XLINE == 0)
                        nk_prefetch(p[r] + i + (size_t)u * NK_VL + PF_DIST);
                vx_loadu_vecs(p[r] + i, v, U);
                for (int u = 0; u < U; u++)
                    a[r][u] = vf_fma(v[u], v[u], a[r][u]);
            }
        for (; i + NK_VL <= n; i += NK_VL)
            for (int r = 0; r < R; r++) {
                vf v = vx_loadu(p[r] + i);
                a[r][0] = vf_fma(v, v, a[r][0]);
            }
        if (i < n)
            for (int r = 0; r < R; r++) {
                vf v = vx_load_n(p[r] + i, n - i);
                a[r][0] = vf_fma(v, v, a[r][0]);
            }
        for (int r = 0; r < R; r++) {
            vf t = a[r][0];
            for (int u = 1; u < U; u++)
                t = vf_add(t, a[r][u]);
            out[r] += (double)vf_hsum(t);
            p[r] += n;
        }
    }
}

static void NK_FN(sumsq_rows)(const void *xv, size_t rows, size_t len, size_t stride, double *out)
{
    const xt *x = xv;
    size_t r = 0;
    for (; r + ROW_GROUP <= rows; r += ROW_GROUP)
        sumsq_group(x + r * stride, 4, len, stride, out + r);
    if (rows - r >= 2) {
        sumsq_group(x + r * stride, 2, len, stride, out + r);
        r += 2;
    }
    if (r < rows)
        sumsq_group(x + r * stride, 1, len, stride, out + r);
}

/* ---- moments_cols: lanes are columns, segments of rows ----
 *
 * The first COL_HEAD rows are reduced two-pass (cols_chunk). Every later
 * segment is one pass over its rows: with K the column's running mean so far
 * rounded to fp32, it sums d = x - K and d^2 in fp32; its moments
 * K + s1/n and s2 - s1^2/n are merged (Chan, fp64) into the running ones and
 * K is refreshed. A segment is no longer than the rows before it nor than
 * COL_CHUNK: 16, 16, 32, 64, 64, ... rows. A row is read once (the two-pass
 * chunks read the tile twice, and a tile of a few rows of long strides does
 * not stay in L1).
 *
 * Error of a one-pass segment of n rows (k = n the depth of each lane's
 * sums, gamma_k = k u / (1 - k u), u = 2^-24): s2 errs by gamma_k sum(d^2)
 * and s1^2/n by at most 2 gamma_k sum(d^2), and
 * sum(d^2) = M2_seg + n (mean_seg - K)^2. With n_a >= n rows before it,
 * n (mean_seg - K)^2 <= 2 T (1 + O(u)), T = n_a n / (n_a + n)
 * (mean_seg - mean_a)^2 the between term of the merge. The segments' M2 and
 * the between terms add up to the column's M2, so the whole column errs by
 * at most about 6 gamma_COL_CHUNK M2 (plus K's fp32 rounding, u |mean| per
 * value): whatever the data's order, offset or outliers. A constant column
 * gives K == the value after the head, d == 0, and stays exact.
 */

#define COL_BLOCK (4 * NK_VL)             /* columns per two-pass block */
#define COL_V1 (NK_NREGS == 32 ? 8 : 4)   /* vectors per one-pass block: 3 per vector in registers */
#define COL_BLOCK1 (COL_V1 * NK_VL)       /* columns per one-pass block */
#define COL_CHUNK (4096 / COL_BLOCK)      /* longest segment: 64, 128 or 256 rows per lane */
#define COL_HEAD 16                       /* rows of the two-pass head */
#define COL_SUPER 256                     /* columns with fp64 accumulators on the stack */

/* One-pass segment of nr rows of V vectors of columns (V <= COL_V1, or 1
 * with `tail` valid lanes when tail != 0), shifted by k: s1, s2 per column. */
NK_INLINE void cols_shifted(const xt *p, size_t nr, size_t stride, const int V, size_t tail,
                            const float *k, float *s1, float *s2, unsigned *bad)
{
    vf vk[COL_V1], t1[COL_V1], t2[COL_V1];
    for (int v = 0; v < V; v++) {
        vk[v] = tail ? vf_load_n(k, tail) : vf_loadu(k + v * NK_VL);
        t1[v] = t2[v] = vf_zero();
    }
    /* no software prefetch: the hardware prefetchers follow the rows, and
     * a prefetch per line costs more than it saves, from L2 and from memory
     * (AVX-512, 100352x64 rows: 1100 -> 640 us; 64x512: 3.2 -> 2.5 us) */
    const xt *q = p;
    for (size_t r = 0; r < nr; r++, q += stride) {
        vf x[COL_V1];
        if (tail)
            x[0] = vx_load_n(q, tail);
        else
            vx_loadu_vecs(q, x, V);
        for (int v = 0; v < V; v++) {
            vf d = tail ? vf_sub_n(x[0], vk[0], tail) : vf_sub(x[v], vk[v]);
            t1[v] = vf_add(t1[v], d);
            t2[v] = vf_fma(d, d, t2[v]);
        }
    }
    /* the local arrays hold a block of columns; lanes past tail are unused */
    for (int v = 0; v < V; v++) {
        vf_storeu(s1 + v * NK_VL, t1[v]);
        vf_storeu(s2 + v * NK_VL, t2[v]);
        *bad |= vf_nonfinite(t1[v]) | vf_nonfinite(t2[v]);
    }
}

/*
 * Two-pass chunk of nr rows of V vectors of columns (V = 4 full vectors, or
 * V = 1 with `tail` valid lanes when tail != 0): the provisional means into
 * m0, then the shifted pass from L1. Writes m0, s1, s2 per column.
 */
NK_INLINE void cols_chunk(const xt *p, size_t nr, size_t stride, const int V, size_t tail,
                          float *m0, float *s1, float *s2, unsigned *bad)
{
    vf a[4];
    for (int v = 0; v < V; v++)
        a[v] = vf_zero();
    const xt *q = p;
    for (size_t r = 0; r < nr; r++, q += stride) {
        vf x[4];
        if (tail)
            x[0] = vx_load_n(q, tail);
        else
            vx_loadu_vecs(q, x, V);
        for (int v = 0; v < V; v++)
            a[v] = vf_add(a[v], x[v]);
    }
    const vf inv = vf_set1(1.0f / (float)nr);
    for (int v = 0; v < V; v++)
        vf_storeu(m0 + v * NK_VL, vf_mul(a[v], inv));
    cols_shifted(p, nr, stride, V, tail, m0, s1, s2, bad);
}

static void NK_FN(moments_cols)(const void *xv, size_t rows, size_t cols, size_t stride,
                                nk_moments *acc)
{
    const xt *x = xv;
    /* fp64 accumulators per column (SoA so the merge loops vectorise);
     * +COL_BLOCK1: full-vector stores of a partial last block */
    double am[COL_SUPER], aq[COL_SUPER];
    float k[COL_SUPER + COL_BLOCK1], s1[COL_SUPER + COL_BLOCK1], s2[COL_SUPER + COL_BLOCK1];
    for (size_t c0 = 0; c0 < cols; c0 += COL_SUPER) {
        const size_t nc = cols - c0 < COL_SUPER ? cols - c0 : COL_SUPER;
        const xt *p = x + c0;

        /* any non-finite fp32 sum (an overflow of d^2, or non-finite input) */
        unsigned bad = 0;
        /* head: two-pass; k holds each column's provisional mean */
        const size_t nh = rows < COL_HEAD ? rows : COL_HEAD;
        size_t j = 0;
        for (; j + COL_BLOCK <= nc; j += COL_BLOCK)
            cols_chunk(p + j, nh, stride, 4, 0, k + j, s1 + j, s2 + j, &bad);
        for (; j + NK_VL <= nc; j += NK_VL)
            cols_chunk(p + j, nh, stride, 1, 0, k + j, s1 + j, s2 + j, &bad);
        if (j < nc)
            cols_chunk(p + j, nh, stride, 1, nc - j, k + j, s1 + j, s2 + j, &bad);
        double cnt = (double)nh;
        const double ih = 1.0 / cnt;
        for (size_t c = 0; c < nc; c++) {
            double m2 = (double)s2[c] - (double)s1[c] * (double)s1[c] * ih;
            am[c] = (double)k[c] + (double)s1[c] * ih;
            aq[c] = m2 < 0.0 ? 0.0 : m2;
            k[c] = (float)am[c];
        }

        /* one-pass segments, each at most as long as the rows before it */
        for (size_t r0 = nh; r0 < rows;) {
            size_t nr = rows - r0;
            nr = nr < r0 ? nr : r0;
            nr = nr < COL_CHUNK ? nr : COL_CHUNK;
            const xt *q = p + r0 * stride;
#define SHIFTED(V)                                                                                \
    do {                                                                                          \
        cols_shifted(q + j, nr, stride, V, 0, k + j, s1 + j, s2 + j, &bad);                             \
        j += (V) * NK_VL;                                                                         \
    } while (0)
            for (j = 0; j + COL_BLOCK1 <= nc;)
                SHIFTED(COL_V1);
            if (COL_V1 > 4 && j + 4 * NK_VL <= nc)
                SHIFTED(4);
            if (j + 2 * NK_VL <= nc)
                SHIFTED(2);
            if (j + NK_VL <= nc)
                SHIFTED(1);
#undef SHIFTED
            if (j < nc)
                cols_shifted(q + j, nr, stride, 1, nc - j, k + j, s1 + j, s2 + j, &bad);

            /* Chan merge; every column of the block has the same counts */
            const double dn = (double)nr, tot = cnt + dn;
            const double wa = dn / tot, wb = cnt * dn / tot, in = 1.0 / dn;
            for (size_t c = 0; c < nc; c++) {
                double m2 = (double)s2[c] - (double)s1[c] * (double)s1[c] * in;
                double delta = ((double)k[c] + (double)s1[c] * in) - am[c];
                am[c] += delta * wa;
                aq[c] += (m2 < 0.0 ? 0.0 : m2) + delta * delta * wb;
                k[c] = (float)am[c];
            }
            cnt = tot;
            r0 += nr;
        }
        if (bad) /* those columns again in fp64 (rare) */
            for (size_t c = 0; c < nc; c++)
                if (!isfinite(am[c]) || !isfinite(aq[c])) {
                    nk_moments f;
                    NK_DT_F64(nk_moments_f64)(p + c, rows, stride, &f);
                    am[c] = f.mean;
                    aq[c] = f.m2;
                }
        nk_moments *o = acc + c0;
        size_t used = 0;
        for (size_t c = 0; c < nc; c++)
            used |= o[c].count > 0.0;
        if (used)
            for (size_t c = 0; c < nc; c++)
                nk_moments_merge_inline(&o[c], cnt, am[c], aq[c]);
        else /* empty accumulators (the common case): a copy */
            for (size_t c = 0; c < nc; c++) {
                o[c].count = cnt;
                o[c].mean = am[c];
                o[c].m2 = aq[c];
            }
    }
}

/* ---- sumsq_cols: lanes are columns, chunks of NK_SUMSQ_COLS_CHUNK rows ----
 *
 * Each lane sums its column's squares over a chunk's rows in order (one fma
 * per row), the chunk's fp32 sums go to acc in fp64. Blocks of up to
 * SSQ_V vectors of columns keep one add chain per vector in flight.
 */

#define SSQ_V 4

NK_SUMSQ_COL_F64(xt, nk_xload)

/* V full vectors of columns (V <= SSQ_V), or one vector of `tail` lanes
 * when tail != 0, over all rows. */
NK_INLINE void ssq_block(const xt *p, size_t rows, size_t stride, const int V, size_t tail,
                         double *acc)
{
    for (size_t r0 = 0; r0 < rows; r0 += NK_SUMSQ_COLS_CHUNK) {
        const size_t nr = rows - r0 < NK_SUMSQ_COLS_CHUNK ? rows - r0 : NK_SUMSQ_COLS_CHUNK;
        const xt *q = p + r0 * stride;
        vf t[SSQ_V];
        for (int v = 0; v < V; v++)
            t[v] = vf_zero();
        for (size_t r = 0; r < nr; r++) {
            vf x[SSQ_V];
            if (tail)
                x[0] = vx_load_n(q + r * stride, tail);
            else
                vx_loadu_vecs(q + r * stride, x, V);
            for (int v = 0; v < V; v++)
                t[v] = vf_fma(x[v], x[v], t[v]);
        }
        float s[SSQ_V * NK_VL] = {0};
        unsigned bad = 0;
        for (int v = 0; v < V; v++) {
            vf_storeu(s + v * NK_VL, t[v]);
            bad |= vf_nonfinite(t[v]);
        }
        const size_t n = tail ? tail : (size_t)V * NK_VL;
        if (bad) /* those columns of the chunk again in fp64 (rare) */
            for (size_t c = 0; c < n; c++)
                acc[c] += isfinite(s[c]) ? (double)s[c] : nk_sumsq_col_f64(q + c, nr, stride);
        else
            for (size_t c = 0; c < n; c++)
                acc[c] += (double)s[c];
    }
}

static void NK_FN(sumsq_cols)(const void *xv, size_t rows, size_t cols, size_t stride,
                              double *acc)
{
    const xt *x = xv;
    size_t j = 0;
    for (; j + SSQ_V * NK_VL <= cols; j += SSQ_V * NK_VL)
        ssq_block(x + j, rows, stride, SSQ_V, 0, acc + j);
    if (j + 2 * NK_VL <= cols) {
        ssq_block(x + j, rows, stride, 2, 0, acc + j);
        j += 2 * NK_VL;
    }
    if (j + NK_VL <= cols) {
        ssq_block(x + j, rows, stride, 1, 0, acc + j);
        j += NK_VL;
    }
    if (j < cols)
        ssq_block(x + j, rows, stride, 1, cols - j, acc + j);
}

void NK_FN(kernels_init_moments)(nk_kernels *k)
{
    k->sumsq_cols = NK_FN(sumsq_cols);
    k->moments_rows = NK_FN(moments_rows);
    k->moments_cols = NK_FN(moments_cols);
    k->sumsq_rows = NK_FN(sumsq_rows);
}
