/*
 * Shared pieces of the libFuzzer targets: a byte reader that turns the fuzz
 * input into extents, enums, doubles and tensor data, guarded buffers, and
 * the invariant checks (abort() so libFuzzer records the input).
 *
 * NKF_SKIP_KNOWN (off by default, the library now refuses these inputs) makes the targets step around the library
 * bugs that are already known and being fixed; each skipped pattern is a
 * nkf_known_* predicate in the targets. NKF_SKIP_FOUND (off too)
 * does the same for the bugs these targets found (nkf_found_* predicates).
 * Build with -DNKF_SKIP_KNOWN=1 -DNKF_SKIP_FOUND=1 to step around them again.
 */
#ifndef NKF_COMMON_H
#define NKF_COMMON_H

#include <float.h>
#include <stddef.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cvt.h"
#include "normkit.h"

#ifndef NKF_SKIP_KNOWN
#  define NKF_SKIP_KNOWN 0
#endif
#ifndef NKF_SKIP_FOUND
#  define NKF_SKIP_FOUND 0
#endif

#if defined(__has_feature)
#  if __has_feature(address_sanitizer)
#    define NKF_ASAN 1
#  endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#  define NKF_ASAN 1
#endif
#ifdef NKF_ASAN
void __asan_poison_memory_region(void const volatile *addr, size_t size);
void __asan_unpoison_memory_region(void const volatile *addr, size_t size);
#  define NKF_POISON(p, n) __asan_poison_memory_region((p), (n))
#  define NKF_UNPOISON(p, n) __asan_unpoison_memory_region((p), (n))
#else
#  define NKF_POISON(p, n) ((void)(p), (void)(n))
#  define NKF_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

/* Buffers whose byte size is at most this are allocated as the shape says. */
#define NKF_MAX_BYTES ((size_t)1 << 20)
/* Stand-in element count for buffers of shapes too large to allocate. */
#define NKF_SMALL 8

static inline void nkf_die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("normkit fuzz invariant violated: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    abort();
}

/* NKF_TRACE=1 in the environment prints every decoded call (for minimising). */
static inline int nkf_tracing(void)
{
    static int t = -1;
    if (t < 0)
        t = getenv("NKF_TRACE") != NULL;
    return t;
}
#define NKF_TRACE(...)                      \
    do {                                    \
        if (nkf_tracing())                  \
            fprintf(stderr, __VA_ARGS__);   \
    } while (0)

/* ------------------------------------------------------------------------ */
/* Input reader: reads past the end give zeros, so every input decodes.      */
/* ------------------------------------------------------------------------ */

typedef struct nkf_in {
    const uint8_t *p;
    size_t n, i;
} nkf_in;

static inline uint8_t nkf_u8(nkf_in *in) { return in->i < in->n ? in->p[in->i++] : 0; }
static inline int nkf_left(const nkf_in *in) { return in->i < in->n; }

static inline uint64_t nkf_u64(nkf_in *in)
{
    uint64_t v = 0;
    for (int k = 0; k < 8; k++)
        v |= (uint64_t)nkf_u8(in) << (8 * k);
    return v;
}

static inline uint32_t nkf_u32(nkf_in *in)
{
    uint32_t v = 0;
    for (int k = 0; k < 4; k++)
        v |= (uint32_t)nkf_u8(in) << (8 * k);
    return v;
}

static inline uint16_t nkf_u16(nkf_in *in) { return (uint16_t)(nkf_u8(in) | nkf_u8(in) << 8); }

static inline double nkf_bits_f64(uint64_t b)
{
    double d;
    memcpy(&d, &b, sizeof d);
    return d;
}

static inline float nkf_bits_f32(uint32_t b)
{
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
}

/* Extents: mostly small (SIMD tails included), sometimes the values that
 * break size arithmetic, sometimes 64 raw bits. */
static const int64_t nkf_special_extents[] = {
    -1, -2, INT64_MIN, INT64_MAX, INT64_MAX - 1,
    (int64_t)1 << 62, 0x0AAAAAAAAAAAAAABLL, (int64_t)1 << 61, ((int64_t)1 << 61) - 1,
    ((int64_t)1 << 61) + 1, (int64_t)1 << 31, (int64_t)1 << 32, ((int64_t)1 << 32) + 1,
    (int64_t)1 << 40, ((int64_t)1 << 40) + 1, 3LL << 60, 0, 1, 0x5555555555555556LL,
    (int64_t)(PTRDIFF_MAX / sizeof(float)), (int64_t)(PTRDIFF_MAX / sizeof(float)) + 1,
    (int64_t)(PTRDIFF_MAX / 24), (int64_t)(PTRDIFF_MAX / 24) + 1, 65537, 1 << 20,
};
#define NKF_NSPECIAL (sizeof nkf_special_extents / sizeof nkf_special_extents[0])

static inline int64_t nkf_extent(nkf_in *in)
{
    uint8_t b = nkf_u8(in);
    switch (b >> 5) {
    case 0: case 1: case 2: case 3: return b & 15;
    case 4: return 16 + (b & 31) + (nkf_u8(in) & 63); /* 16 .. 110 */
    case 5: return nkf_u16(in) & 0x3ff;
    case 6: return nkf_special_extents[nkf_u8(in) % NKF_NSPECIAL];
    default: return (int64_t)nkf_u64(in);
    }
}

/* An enum value: valid ones mostly, then one past the end, -1 and raw bits. */
static inline int nkf_enum(nkf_in *in, int nvalid)
{
    uint8_t b = nkf_u8(in);
    if (b < 224)
        return b % nvalid;
    switch (b & 3) {
    case 0: return nvalid;
    case 1: return -1;
    case 2: return INT32_MAX;
    default: return (int)nkf_u32(in);
    }
}

static inline double nkf_double_from(nkf_in *in, const double *tab, size_t ntab)
{
    uint8_t b = nkf_u8(in);
    if (b < 240)
        return tab[b % ntab];
    return nkf_bits_f64(nkf_u64(in));
}

static inline double nkf_eps(nkf_in *in)
{
    static const double tab[] = {1e-5, 1e-5, 0.0, 1e-3, 1.0, 1e-12, NAN, INFINITY, -INFINITY, -1e-5,
                                 -0.0, DBL_MAX, 4.9e-324, 1e300, 0.5, -NAN, 1e-7, 1e38};
    return nkf_double_from(in, tab, sizeof tab / sizeof tab[0]);
}

static inline double nkf_momentum(nkf_in *in)
{
    static const double tab[] = {0.1, 0.1, 0.0, 1.0, 0.9, 0.5, NAN, INFINITY, -INFINITY, -0.1,
                                 1.5, 1.0000000000000002, -0.0, 0.99, 4.9e-324, NK_MOMENTUM_NONE};
    return nkf_double_from(in, tab, sizeof tab / sizeof tab[0]);
}

static inline int64_t nkf_nbt(nkf_in *in)
{
    static const int64_t tab[] = {0, 0, 1, 5, INT64_MAX, INT64_MAX - 1, -1, INT64_MIN, 1 << 30,
                                  ((int64_t)1 << 53) + 1};
    uint8_t b = nkf_u8(in);
    if (b < 240)
        return tab[b % (sizeof tab / sizeof tab[0])];
    return (int64_t)nkf_u64(in);
}

/* NULL or options with any activation (out-of-range included) and alpha. */
static inline const nk_options *nkf_options(nkf_in *in, nk_options *o)
{
    static const float alphas[] = {0.01f, 0.2f, 0.0f, -1.0f, 1.0f, NAN, INFINITY, -INFINITY,
                                   1e30f, -0.0f, 1e-45f, FLT_MAX};
    uint8_t b = nkf_u8(in);
    if (b < 64)
        return NULL;
    o->activation = (nk_activation)nkf_enum(in, 6);
    uint8_t a = nkf_u8(in);
    o->alpha = a < 240 ? alphas[a % (sizeof alphas / sizeof alphas[0])] : nkf_bits_f32(nkf_u32(in));
    return o;
}

/* Tensor values: a grid of small values, with NaN, Inf, 1e30, denormals and
 * raw bit patterns mixed in; a deterministic pattern once the input ends. */
static inline float nkf_value(nkf_in *in, size_t i)
{
    static const float special[] = {NAN, -NAN, INFINITY, -INFINITY, 1e30f, -1e30f, FLT_MAX,
                                    -FLT_MAX, 1.4e-45f, 1e-40f, -0.0f, 1e-38f, 3e38f, 65504.0f,
                                    1e20f, 1e-20f};
    if (!nkf_left(in))
        return (float)((int)((i * 37u) % 17u) - 8) * 0.25f;
    uint8_t b = nkf_u8(in);
    if (b < 224)
        return ((float)b - 112.0f) * 0.125f;
    if (b < 240)
        return special[b - 224];
    if (b < 248)
        return 1000.0f + (float)(b - 240); /* large mean, small spread */
    return nkf_bits_f32(nkf_u32(in));
}

/* ------------------------------------------------------------------------ */
/* Guarded buffers                                                          */
/* ------------------------------------------------------------------------ */

#define NKF_GUARD 64
#define NKF_CANARY 0xA5

typedef struct nkf_buf {
    unsigned char *base; /* allocation: guard, data, guard */
    void *p;             /* data; NULL when the buffer is absent */
    size_t bytes;        /* data bytes */
    size_t pre;          /* bytes of the leading guard */
    unsigned char *copy; /* snapshot of the data */
} nkf_buf;

/* bytes of data preceded by a guard of NKF_GUARD + shift bytes (shift keeps
 * float alignment, so misaligned vectors are exercised). */
static inline nkf_buf nkf_alloc(size_t bytes, size_t shift)
{
    nkf_buf b = {0};
    b.pre = NKF_GUARD + shift;
    b.bytes = bytes;
    b.base = (unsigned char *)malloc(b.pre + bytes + NKF_GUARD);
    if (!b.base)
        nkf_die("out of memory allocating %zu bytes", bytes);
    memset(b.base, NKF_CANARY, b.pre);
    memset(b.base + b.pre + bytes, NKF_CANARY, NKF_GUARD);
    b.p = b.base + b.pre;
    NKF_POISON(b.base, b.pre);
    NKF_POISON(b.base + b.pre + bytes, NKF_GUARD);
    return b;
}

static inline void nkf_snapshot(nkf_buf *b)
{
    if (!b->p)
        return;
    free(b->copy);
    b->copy = (unsigned char *)malloc(b->bytes ? b->bytes : 1);
    if (!b->copy)
        nkf_die("out of memory");
    memcpy(b->copy, b->p, b->bytes);
}

static inline int nkf_unchanged(const nkf_buf *b)
{
    return !b->p || !b->copy || !memcmp(b->copy, b->p, b->bytes);
}

/* For a rerun of a call: returns a copy of b's bytes now (what the first
 * call left; free it) and puts back its bytes from the snapshot. */
static inline unsigned char *nkf_rewind(nkf_buf *b)
{
    unsigned char *got = (unsigned char *)malloc(b->bytes ? b->bytes : 1);
    if (!got)
        nkf_die("out of memory");
    memcpy(got, b->p, b->bytes);
    memcpy(b->p, b->copy, b->bytes);
    return got;
}

/* The first byte at which b differs from got (nkf_rewind's copy), -1 when
 * none does. */
static inline ptrdiff_t nkf_first_diff(const nkf_buf *b, const unsigned char *got)
{
    const unsigned char *p = (const unsigned char *)b->p;
    for (size_t k = 0; k < b->bytes; k++)
        if (p[k] != got[k])
            return (ptrdiff_t)k;
    return -1;
}

static inline void nkf_check_guard(const nkf_buf *b, const char *what)
{
    if (!b->base)
        return;
    NKF_UNPOISON(b->base, b->pre);
    NKF_UNPOISON(b->base + b->pre + b->bytes, NKF_GUARD);
    for (size_t i = 0; i < b->pre; i++)
        if (b->base[i] != NKF_CANARY)
            nkf_die("%s: guard byte %zu before the buffer overwritten", what, b->pre - i);
    for (size_t i = 0; i < NKF_GUARD; i++)
        if (b->base[b->pre + b->bytes + i] != NKF_CANARY)
            nkf_die("%s: guard byte %zu after the buffer overwritten", what, i);
    NKF_POISON(b->base, b->pre);
    NKF_POISON(b->base + b->pre + b->bytes, NKF_GUARD);
}

static inline void nkf_free(nkf_buf *b)
{
    if (b->base) {
        NKF_UNPOISON(b->base, b->pre);
        NKF_UNPOISON(b->base + b->pre + b->bytes, NKF_GUARD);
    }
    free(b->base);
    free(b->copy);
    memset(b, 0, sizeof *b);
}

/* ------------------------------------------------------------------------ */
/* Size arithmetic of the harness's own model                               */
/* ------------------------------------------------------------------------ */

/* a * b as an exact count; 0 when either is negative or it overflows. */
static inline int nkf_mul(uint64_t a, uint64_t b, uint64_t *out)
{
    return !__builtin_mul_overflow(a, b, out);
}

/* Element count n * c * s when every extent is >= 0 and the product fits. */
static inline int nkf_count3(int64_t n, int64_t c, int64_t s, uint64_t *out)
{
    uint64_t t;
    if (n < 0 || c < 0 || s < 0)
        return 0;
    return nkf_mul((uint64_t)n, (uint64_t)c, &t) && nkf_mul(t, (uint64_t)s, out);
}

/* The size rule: the product of max(extent, 1) fits in PTRDIFF_MAX / elem. */
static inline int nkf_fits(const int64_t *e, int k, size_t elem)
{
    uint64_t p = 1;
    for (int i = 0; i < k; i++) {
        if (e[i] < 0)
            return 0;
        if (!nkf_mul(p, e[i] > 1 ? (uint64_t)e[i] : 1u, &p))
            return 0;
    }
    return p <= (uint64_t)PTRDIFF_MAX / elem;
}

/* count elements of elem bytes fit the harness's byte budget (NKF_MAX_BYTES). */
static inline int nkf_small_enough(uint64_t count, size_t elem)
{
    uint64_t bytes;
    return nkf_mul(count, elem, &bytes) && bytes <= NKF_MAX_BYTES;
}

static inline int nkf_has_zero(const int64_t *e, int k)
{
    for (int i = 0; i < k; i++)
        if (e[i] == 0)
            return 1;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Element types, strides, pools and tensor buffers of the _ex targets       */
/* ------------------------------------------------------------------------ */

/* bytes of one element of dtype dt (an unknown code counts as fp32) */
static inline size_t nkf_esize(uint32_t dt)
{
    return dt == NK_DTYPE_F16 || dt == NK_DTYPE_BF16 ? 2 : 4;
}

/* element i of an array of dtype dt, as float (exact) */
static inline float nkf_widen(uint32_t dt, const void *p, size_t i)
{
    if (nkf_esize(dt) == 4)
        return ((const float *)p)[i];
    const uint16_t h = ((const uint16_t *)p)[i];
    return dt == NK_DTYPE_BF16 ? nk_bf16_to_f32(h) : nk_f16_to_f32(h);
}

/* f rounded to the 16-bit dtype dt */
static inline uint16_t nkf_narrow(uint32_t dt, float f)
{
    return dt == NK_DTYPE_BF16 ? nk_f32_to_bf16(f) : nk_f32_to_f16(f);
}

/* A descriptor as a caller passes it: the struct and the bytes a newer
 * header would append. */
typedef struct nkf_desc {
    nk_tensor_desc d;
    uint64_t extra; /* bytes of a newer header */
} nkf_desc;

/* dd as NK_TENSOR_DESC_INIT with a decoded struct_size (this header's, the
 * first version's, too small, or with trailing bytes set), dtype (unknown
 * codes included), param_dtype and reserved2. *dt, *pdt: the element types
 * of x / y and of the parameters as the library reads them (fp32 for an
 * unknown dtype). Returns 1 when the library must refuse these fields. */
static inline int nkf_desc_head(nkf_in *in, nkf_desc *dd, uint32_t *dt, uint32_t *pdt)
{
    int must_fail = 0;
    memset(dd, 0, sizeof *dd);
    nk_tensor_desc *d = &dd->d;
    *d = (nk_tensor_desc)NK_TENSOR_DESC_INIT;
    const size_t v1 = offsetof(nk_tensor_desc, reserved) + sizeof d->reserved;
    const uint8_t sz = nkf_u8(in);
    int old = 0;
    if (sz >= 200 && sz < 220) {
        d->struct_size = (uint32_t)v1; /* a caller of the first version */
        old = 1;
    } else if (sz >= 220 && sz < 228) {
        d->struct_size = (uint32_t)v1 - 4 * (1 + (sz & 3));
        must_fail = 1;
    } else if (sz >= 228) {
        d->struct_size = sizeof *dd;
        dd->extra = sz & 1 ? ((uint64_t)1 << (sz & 63)) : 0;
        must_fail |= dd->extra != 0;
    }
    const int dte = nkf_enum(in, 3);
    d->dtype = (uint32_t)dte;
    const int dt_ok = dte >= 0 && dte <= 2;
    must_fail |= !dt_ok;
    *dt = dt_ok ? d->dtype : NK_DTYPE_F32;
    const uint8_t pb = nkf_u8(in);
    d->param_dtype = pb < 160 ? NK_DTYPE_F32 : pb < 240 ? d->dtype : (uint32_t)nkf_enum(in, 3);
    d->reserved2 = nkf_u8(in) >= 250 ? 1u + nkf_u8(in) : 0u;
    if (!old) {
        must_fail |= d->param_dtype != NK_DTYPE_F32 && d->param_dtype != d->dtype;
        must_fail |= d->reserved2 != 0;
    }
    *pdt = old || d->param_dtype != d->dtype || !dt_ok ? NK_DTYPE_F32 : *dt;
    return must_fail;
}

/* A descriptor's strides, resolved as the header documents them. */
typedef struct nkf_strides {
    uint64_t s0, s1, span; /* resolved strides; elements the addressing spans */
    int reject;            /* the library must refuse them */
} nkf_strides;

static inline nkf_strides nkf_resolve(const int64_t st[2], uint64_t n, uint64_t mid, uint64_t inner,
                                      int nonempty)
{
    nkf_strides r = {0};
    const uint64_t lim = (uint64_t)PTRDIFF_MAX / sizeof(float);
    for (int i = 0; i < 2; i++)
        if (st[i] < 0 || (uint64_t)st[i] > lim)
            return r.reject = 1, r;
    r.s1 = st[1] ? (uint64_t)st[1] : inner;
    uint64_t one = 0;
    if ((mid > 1 && r.s1 < inner) ||
        (mid && (!nkf_mul(mid - 1, r.s1, &one) || __builtin_add_overflow(one, inner, &one))))
        return r.reject = 1, r;
    if (st[0])
        r.s0 = (uint64_t)st[0];
    else if (!nkf_mul(mid, r.s1, &r.s0) || r.s0 > (uint64_t)SIZE_MAX)
        return r.reject = 1, r;
    if (n > 1 && r.s0 < one)
        return r.reject = 1, r;
    if (mid <= 1)
        r.s1 = inner;
    if (n <= 1)
        r.s0 = one;
    if (!nonempty)
        return r;
    uint64_t a;
    if (!nkf_mul(n - 1, r.s0, &a) || __builtin_add_overflow(a, one, &r.span) || r.span > lim)
        r.reject = 1;
    return r;
}

/* stride choice: dense (0) mostly, padded rows / samples, or raw extents */
static inline void nkf_decode_strides(nkf_in *in, int64_t out[2], uint64_t mid, uint64_t inner)
{
    const uint8_t b = nkf_u8(in);
    out[0] = out[1] = 0;
    if (b < 128)
        return;
    if (b < 224) {
        const uint64_t s1 = inner + (b & 3), one = mid ? (mid - 1) * s1 + inner : 0;
        out[1] = mid > 1 ? (int64_t)s1 : 0;
        out[0] = b & 4 ? (int64_t)(one + ((b >> 3) & 7)) : 0;
        return;
    }
    out[0] = nkf_extent(in);
    out[1] = nkf_extent(in);
}

/* nk_threadpool_create(threads) made once per process (NULL when it fails) */
static inline nk_threadpool *nkf_pool(int threads)
{
    static nk_threadpool *p[4];
    static int tried[4];
    if (threads < 1 || threads > 3)
        return NULL;
    if (!tried[threads]) {
        tried[threads] = 1;
        if (nk_threadpool_create(threads, &p[threads]) != NK_OK)
            p[threads] = NULL;
    }
    return p[threads];
}

/* A guarded buffer of count elements of elem bytes when present, shifted by
 * 0 to 3 elements (decoded); absent (p == NULL) otherwise. */
static inline void nkf_make(nkf_in *in, nkf_buf *b, int present, uint64_t count, size_t elem)
{
    memset(b, 0, sizeof *b);
    if (present)
        *b = nkf_alloc((size_t)(count * elem), (nkf_u8(in) & 3) * elem);
}

/* b's elements of dtype dt filled from the input (16-bit: values of the
 * fp32 grid narrowed, or raw patterns) */
static inline void nkf_fill(nkf_in *in, nkf_buf *b, uint32_t dt)
{
    if (!b->p)
        return;
    if (nkf_esize(dt) == 4) {
        for (size_t i = 0; i < b->bytes / 4; i++)
            ((float *)b->p)[i] = nkf_value(in, i);
        return;
    }
    for (size_t i = 0; i < b->bytes / 2; i++) {
        const uint8_t k = nkf_left(in) ? nkf_u8(in) : 0;
        ((uint16_t *)b->p)[i] = k < 240 ? nkf_narrow(dt, nkf_value(in, i)) : nkf_u16(in);
    }
}

/* ------------------------------------------------------------------------ */
/* Status / message invariants                                              */
/* ------------------------------------------------------------------------ */

static inline void nkf_check_status(nk_status st, const char *fn)
{
    const char *msg = nk_last_error();
    if (!msg)
        nkf_die("%s: nk_last_error() returned NULL", fn);
    if (st == NK_OK) {
        if (msg[0])
            nkf_die("%s succeeded but nk_last_error() is \"%s\"", fn, msg);
        return;
    }
    if ((int)st < NK_ERR_NULL_POINTER || (int)st > NK_ERR_OUT_OF_MEMORY)
        nkf_die("%s returned unknown status %d", fn, (int)st);
    if (!msg[0])
        nkf_die("%s failed with %s but nk_last_error() is empty", fn, nk_status_string(st));
}

/* Leaves a non-empty message behind so a success that forgets to clear it
 * is caught. */
static inline void nkf_dirty_error(void)
{
    nk_moments m;
    nk_moments_compute(NULL, -1, &m);
}

/* The body of a target whose input is up to four calls of one decoder. */
static inline void nkf_calls(const uint8_t *data, size_t size, void (*call)(nkf_in *in))
{
    nkf_in in = {data, size, 0};
    for (int calls = 0; calls < 4 && nkf_left(&in); calls++)
        call(&in);
}

#endif
