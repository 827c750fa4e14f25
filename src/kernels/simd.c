#include "simd.h"
#include "bf16.h"
#include <immintrin.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static int level = -1;   // 0 scalar, 1 avx2+fma, 2 avx512f (the exp-based kernels; the rest stay avx2)
static int cpu_level(void) {
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return 0;
    return __builtin_cpu_supports("avx512f") ? 2 : 1;
}
static int detect(void) {
    if (level < 0) {
        const char *e = getenv("MOE_SIMD");
        level = cpu_level();
        if (e && !strcmp(e, "scalar")) level = 0;
        else if (e && !strcmp(e, "avx2") && level > 1) level = 1;
    }
    return level;
}
const char *simd_level(void) { static const char *nm[] = {"scalar", "avx2", "avx512"}; return nm[detect()]; }
int simd_cap(int max) { detect(); level = cpu_level() < max ? cpu_level() : max; return level; }
void simd_force_scalar(int on) { simd_cap(on ? 0 : 2); }

// ---------------------------------------------------------------- scalar

float vec_exp_sum_ref(float *y, const float *x, float shift, int n) {
    float s = 0;
    for (int i = 0; i < n; i++) { y[i] = expf(x[i] - shift); s += y[i]; }
    return s;
}
static void swiglu_scalar(float *a, const float *g, const float *u, long n) {
    for (long i = 0; i < n; i++) a[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}
static void swiglu_backward_scalar(float *dg, float *du, const float *da, const float *g, const float *u, long n) {
    // silu'(z) = s (1 + z (1 - s)), s = sigmoid(z)
    for (long i = 0; i < n; i++) {   // both inputs read before either output is written
        const float gi = g[i], ui = u[i], s = 1.0f / (1.0f + expf(-gi));
        dg[i] = da[i] * ui * s * (1.0f + gi * (1.0f - s));
        du[i] = da[i] * gi * s;
    }
}

// AdamW on n elements (the torch.optim.AdamW arithmetic, bias corrections folded into
// step = lr/bc1 and rbc2 = 1/sqrt(bc2)): g is scaled by gscale (the clipping factor) first.
static void adamw_scalar(float *p, const float *g, float *m, float *v, long n, const AdamWArgs *a) {
    for (long i = 0; i < n; i++) {
        float gi = g[i] * a->gscale;
        m[i] = a->b1 * m[i] + (1 - a->b1) * gi;
        v[i] = a->b2 * v[i] + (1 - a->b2) * gi * gi;
        p[i] = p[i] * a->decay - a->step * m[i] / (sqrtf(v[i]) * a->rbc2 + a->eps);
    }
}
static void to_bf16_scalar(uint16_t *d, const float *x, long n) {
    for (long i = 0; i < n; i++) d[i] = f32_to_bf16(x[i]);
}
static void from_bf16_scalar(float *y, const uint16_t *s, long n) {
    for (long i = 0; i < n; i++) y[i] = bf16_to_f32(s[i]);
}
static void round_bf16_scalar(float *x, long n) {
    for (long i = 0; i < n; i++) x[i] = bf16_to_f32(f32_to_bf16(x[i]));
}
static double sumsq_scalar(const float *x, long n) {
    double s = 0;
    for (long i = 0; i < n; i++) s += (double)x[i] * x[i];
    return s;
}

// ---------------------------------------------------------------- AVX2 + FMA

// exp by range reduction x = k ln2 + r, |r| <= ln2/2, and a degree-6 polynomial for e^r
// (the Cephes coefficients); about 2 ulp over the float range. The constants are shared
// by the AVX2 and AVX-512 versions.
#define EXP_LO -87.3f
#define EXP_HI 88.3f
#define EXP_LOG2E 1.44269504088896341f
#define EXP_LN2_HI 0.693359375f
#define EXP_LN2_LO -2.12194440e-4f
static const float EXP_P[6] = {1.9875691500e-4f, 1.3981999507e-3f, 8.3334519073e-3f,
                               4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f};
__attribute__((target("avx2,fma"))) static inline __m256 exp256(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(EXP_LO)), _mm256_set1_ps(EXP_HI));
    __m256 k = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(EXP_LOG2E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(k, _mm256_set1_ps(EXP_LN2_HI), x);
    r = _mm256_fnmadd_ps(k, _mm256_set1_ps(EXP_LN2_LO), r);
    __m256 p = _mm256_set1_ps(EXP_P[0]);
    for (int i = 1; i < 6; i++) p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_P[i]));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

__attribute__((target("avx2,fma"))) static float exp_sum_avx2(float *y, const float *x, float shift, int n) {
    __m256 acc = _mm256_setzero_ps(), sh = _mm256_set1_ps(shift);
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = exp256(_mm256_sub_ps(_mm256_loadu_ps(x + i), sh));
        _mm256_storeu_ps(y + i, v);
        acc = _mm256_add_ps(acc, v);
    }
    float t[8], s = 0;
    _mm256_storeu_ps(t, acc);
    for (int j = 0; j < 8; j++) s += t[j];
    for (; i < n; i++) { y[i] = expf(x[i] - shift); s += y[i]; }
    return s;
}

__attribute__((target("avx2,fma"))) static void swiglu_avx2(float *a, const float *g, const float *u, long n) {
    const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
    long i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 gv = _mm256_loadu_ps(g + i);
        __m256 s = _mm256_div_ps(one, _mm256_add_ps(one, exp256(_mm256_sub_ps(zero, gv))));
        _mm256_storeu_ps(a + i, _mm256_mul_ps(_mm256_mul_ps(gv, s), _mm256_loadu_ps(u + i)));
    }
    swiglu_scalar(a + i, g + i, u + i, n - i);
}

__attribute__((target("avx2,fma"))) static void swiglu_backward_avx2(float *dg, float *du, const float *da, const float *g,
                                                                      const float *u, long n) {
    const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
    long i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 gv = _mm256_loadu_ps(g + i), uv = _mm256_loadu_ps(u + i), dav = _mm256_loadu_ps(da + i);
        __m256 s = _mm256_div_ps(one, _mm256_add_ps(one, exp256(_mm256_sub_ps(zero, gv))));
        __m256 ds = _mm256_fmadd_ps(_mm256_mul_ps(gv, s), _mm256_sub_ps(one, s), s);   // s (1 + g (1 - s))
        _mm256_storeu_ps(dg + i, _mm256_mul_ps(_mm256_mul_ps(dav, uv), ds));
        _mm256_storeu_ps(du + i, _mm256_mul_ps(dav, _mm256_mul_ps(gv, s)));
    }
    swiglu_backward_scalar(dg + i, du + i, da + i, g + i, u + i, n - i);
}

__attribute__((target("avx2,fma"))) static void adamw_avx2(float *p, const float *g, float *m, float *v, long n,
                                                            const AdamWArgs *a) {
    const __m256 gs = _mm256_set1_ps(a->gscale), b1 = _mm256_set1_ps(a->b1), c1 = _mm256_set1_ps(1 - a->b1),
                 b2 = _mm256_set1_ps(a->b2), c2 = _mm256_set1_ps(1 - a->b2), st = _mm256_set1_ps(a->step),
                 rb = _mm256_set1_ps(a->rbc2), ep = _mm256_set1_ps(a->eps), dc = _mm256_set1_ps(a->decay);
    long i = 0;
    for (; i + 8 <= n; i += 8) {
        if ((i & 15) == 0) {   // a line of each stream, 2 KB ahead: 7% faster than the hardware prefetcher alone
            _mm_prefetch((const char *)(g + i + 512), _MM_HINT_T0);
            _mm_prefetch((const char *)(m + i + 512), _MM_HINT_T0);
            _mm_prefetch((const char *)(v + i + 512), _MM_HINT_T0);
            _mm_prefetch((const char *)(p + i + 512), _MM_HINT_T0);
        }
        __m256 gi = _mm256_mul_ps(_mm256_loadu_ps(g + i), gs);
        __m256 mi = _mm256_add_ps(_mm256_mul_ps(b1, _mm256_loadu_ps(m + i)), _mm256_mul_ps(c1, gi));
        __m256 vi = _mm256_add_ps(_mm256_mul_ps(b2, _mm256_loadu_ps(v + i)), _mm256_mul_ps(_mm256_mul_ps(c2, gi), gi));
        __m256 den = _mm256_add_ps(_mm256_mul_ps(_mm256_sqrt_ps(vi), rb), ep);
        __m256 pi = _mm256_sub_ps(_mm256_mul_ps(_mm256_loadu_ps(p + i), dc), _mm256_div_ps(_mm256_mul_ps(st, mi), den));
        _mm256_storeu_ps(m + i, mi);
        _mm256_storeu_ps(v + i, vi);
        _mm256_storeu_ps(p + i, pi);
    }
    adamw_scalar(p + i, g + i, m + i, v + i, n - i, a);
}

__attribute__((target("avx2,fma"))) static double sumsq_avx2(const float *x, long n) {
    // four quarters of x read side by side, each with a prefetch 2 KB ahead, into eight
    // double chains: one stream with one chain pair read 10 GB/s per core, this 16
    __m256d a[8];
    for (int j = 0; j < 8; j++) a[j] = _mm256_setzero_pd();
    const long q = n / 4 / 8 * 8;
    for (long i = 0; i < q; i += 8)
        for (int j = 0; j < 4; j++) {
            const float *y = x + j * q + i;
            if ((i & 15) == 0) _mm_prefetch((const char *)(y + 512), _MM_HINT_T0);
            __m256 xv = _mm256_loadu_ps(y);
            __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(xv)), hi = _mm256_cvtps_pd(_mm256_extractf128_ps(xv, 1));
            a[2 * j] = _mm256_fmadd_pd(lo, lo, a[2 * j]);
            a[2 * j + 1] = _mm256_fmadd_pd(hi, hi, a[2 * j + 1]);
        }
    for (int j = 1; j < 8; j++) a[0] = _mm256_add_pd(a[0], a[j]);
    double t[4], s = 0;
    _mm256_storeu_pd(t, a[0]);
    for (int j = 0; j < 4; j++) s += t[j];
    return s + sumsq_scalar(x + 4 * q, n - 4 * q);
}

// f32 -> bf16 as f32_to_bf16: round to nearest even, a NaN stays a (quiet) NaN. Both
// directions serve the activation stash: what is packed is read back only in the backward
// pass, and what is unpacked goes to a working set the backward pass reads, so both write
// with streaming stores (from aligned starts) and leave the caches to the GEMMs. bench-s
// defaults: pack 18.5 -> 13-14 ms, unpack 19-23 -> 14 ms per step.
__attribute__((target("avx2,fma"))) static void to_bf16_avx2(uint16_t *d, const float *x, long n) {
    const __m256i abs = _mm256_set1_epi32(0x7fffffff), inf = _mm256_set1_epi32(0x7f800000),
                  one = _mm256_set1_epi32(1), half = _mm256_set1_epi32(0x7fff), quiet = _mm256_set1_epi32(0x40);
    long i = 0;
    for (; i + 8 <= n; i += 8) {
        if ((i & 15) == 0) _mm_prefetch((const char *)(x + i + 512), _MM_HINT_T0);   // 2 KB ahead
        __m256i u = _mm256_castps_si256(_mm256_loadu_ps(x + i));
        __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, abs), inf);
        __m256i r = _mm256_add_epi32(u, _mm256_add_epi32(half, _mm256_and_si256(_mm256_srli_epi32(u, 16), one)));
        __m256i h = _mm256_blendv_epi8(_mm256_srli_epi32(r, 16), _mm256_or_si256(_mm256_srli_epi32(u, 16), quiet), nan);
        __m256i p = _mm256_permute4x64_epi64(_mm256_packus_epi32(h, h), 0x08);   // lanes 0 and 2: 8 u16 in order
        if (((uintptr_t)(d + i) & 15) == 0) _mm_stream_si128((__m128i *)(d + i), _mm256_castsi256_si128(p));
        else _mm_storeu_si128((__m128i *)(d + i), _mm256_castsi256_si128(p));
    }
    _mm_sfence();
    to_bf16_scalar(d + i, x + i, n - i);
}
__attribute__((target("avx2,fma"))) static void from_bf16_avx2(float *y, const uint16_t *s, long n) {
    long i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(s + i)));
        if (((uintptr_t)(y + i) & 31) == 0) _mm256_stream_ps(y + i, _mm256_castsi256_ps(_mm256_slli_epi32(w, 16)));
        else _mm256_storeu_ps(y + i, _mm256_castsi256_ps(_mm256_slli_epi32(w, 16)));
    }
    _mm_sfence();
    from_bf16_scalar(y + i, s + i, n - i);
}

// x <- bf16(x) in place, what to_bf16 then from_bf16 give: round the low 16 bits away (to
// nearest even), a NaN keeps its top bits and turns quiet
__attribute__((target("avx2,fma"))) static void round_bf16_avx2(float *x, long n) {
    const __m256i abs = _mm256_set1_epi32(0x7fffffff), inf = _mm256_set1_epi32(0x7f800000),
                  one = _mm256_set1_epi32(1), half = _mm256_set1_epi32(0x7fff), quiet = _mm256_set1_epi32(0x400000),
                  top = _mm256_set1_epi32((int)0xffff0000u);
    long i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i u = _mm256_castps_si256(_mm256_loadu_ps(x + i));
        __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, abs), inf);
        __m256i r = _mm256_add_epi32(u, _mm256_add_epi32(half, _mm256_and_si256(_mm256_srli_epi32(u, 16), one)));
        r = _mm256_blendv_epi8(r, _mm256_or_si256(u, quiet), nan);
        _mm256_storeu_ps(x + i, _mm256_castsi256_ps(_mm256_and_si256(r, top)));
    }
    round_bf16_scalar(x + i, n - i);
}

// ---------------------------------------------------------------- AVX-512F

// exp256's arithmetic on 16 lanes; tails run masked instead of through scalar expf
__attribute__((target("avx512f"))) static inline __m512 exp512(__m512 x) {
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(EXP_LO)), _mm512_set1_ps(EXP_HI));
    __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(EXP_LOG2E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(EXP_LN2_HI), x);
    r = _mm512_fnmadd_ps(k, _mm512_set1_ps(EXP_LN2_LO), r);
    __m512 p = _mm512_set1_ps(EXP_P[0]);
    for (int i = 1; i < 6; i++) p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_P[i]));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(k), _mm512_set1_epi32(127)), 23);
    return _mm512_mul_ps(p, _mm512_castsi512_ps(e));
}
static inline __mmask16 tail16(long left) { return left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1); }

__attribute__((target("avx512f"))) static float exp_sum_avx512(float *y, const float *x, float shift, int n) {
    __m512 acc = _mm512_setzero_ps(), sh = _mm512_set1_ps(shift);
    for (int i = 0; i < n; i += 16) {
        const __mmask16 m = tail16(n - i);
        __m512 v = exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), sh));
        _mm512_mask_storeu_ps(y + i, m, v);
        acc = _mm512_mask_add_ps(acc, m, acc, v);
    }
    return _mm512_reduce_add_ps(acc);
}

__attribute__((target("avx512f"))) static void swiglu_avx512(float *a, const float *g, const float *u, long n) {
    const __m512 one = _mm512_set1_ps(1.0f), zero = _mm512_setzero_ps();
    for (long i = 0; i < n; i += 16) {
        const __mmask16 m = tail16(n - i);
        __m512 gv = _mm512_maskz_loadu_ps(m, g + i);
        __m512 s = _mm512_div_ps(one, _mm512_add_ps(one, exp512(_mm512_sub_ps(zero, gv))));
        _mm512_mask_storeu_ps(a + i, m, _mm512_mul_ps(_mm512_mul_ps(gv, s), _mm512_maskz_loadu_ps(m, u + i)));
    }
}

__attribute__((target("avx512f"))) static void swiglu_backward_avx512(float *dg, float *du, const float *da, const float *g,
                                                                   const float *u, long n) {
    const __m512 one = _mm512_set1_ps(1.0f), zero = _mm512_setzero_ps();
    for (long i = 0; i < n; i += 16) {   // both inputs loaded before either output is stored (dg may be g)
        const __mmask16 m = tail16(n - i);
        __m512 gv = _mm512_maskz_loadu_ps(m, g + i), uv = _mm512_maskz_loadu_ps(m, u + i), dav = _mm512_maskz_loadu_ps(m, da + i);
        __m512 s = _mm512_div_ps(one, _mm512_add_ps(one, exp512(_mm512_sub_ps(zero, gv))));
        __m512 ds = _mm512_fmadd_ps(_mm512_mul_ps(gv, s), _mm512_sub_ps(one, s), s);
        _mm512_mask_storeu_ps(dg + i, m, _mm512_mul_ps(_mm512_mul_ps(dav, uv), ds));
        _mm512_mask_storeu_ps(du + i, m, _mm512_mul_ps(dav, _mm512_mul_ps(gv, s)));
    }
}

// ---------------------------------------------------------------- dispatch

float vec_exp_sum(float *y, const float *x, float shift, int n) {
    const int l = detect();
    return l == 2 ? exp_sum_avx512(y, x, shift, n) : l ? exp_sum_avx2(y, x, shift, n) : vec_exp_sum_ref(y, x, shift, n);
}
void vec_swiglu(float *a, const float *g, const float *u, long n) {
    const int l = detect();
    if (l == 2) swiglu_avx512(a, g, u, n); else if (l) swiglu_avx2(a, g, u, n); else swiglu_scalar(a, g, u, n);
}
void vec_swiglu_backward(float *dg, float *du, const float *da, const float *g, const float *u, long n) {
    const int l = detect();
    if (l == 2) swiglu_backward_avx512(dg, du, da, g, u, n);
    else if (l) swiglu_backward_avx2(dg, du, da, g, u, n);
    else swiglu_backward_scalar(dg, du, da, g, u, n);
}
void vec_adamw(float *p, const float *g, float *m, float *v, long n, const AdamWArgs *a) {
    if (detect()) adamw_avx2(p, g, m, v, n, a); else adamw_scalar(p, g, m, v, n, a);
}
void vec_adamw_ref(float *p, const float *g, float *m, float *v, long n, const AdamWArgs *a) { adamw_scalar(p, g, m, v, n, a); }
double vec_sumsq(const float *x, long n) { return detect() ? sumsq_avx2(x, n) : sumsq_scalar(x, n); }
double vec_sumsq_ref(const float *x, long n) { return sumsq_scalar(x, n); }
// Zeros with streaming stores: the lines go to memory without being read first (a blob
// larger than the caches costs half the traffic of memset, which reads each line it writes).
__attribute__((target("avx2"))) static void zero_stream_avx2(float *x, size_t n) {
    size_t i = 0;
    for (; i < n && ((uintptr_t)(x + i) & 31); i++) x[i] = 0;
    for (; i + 8 <= n; i += 8) _mm256_stream_ps(x + i, _mm256_setzero_ps());
    for (; i < n; i++) x[i] = 0;
}
void vec_zero(float *x, size_t n) {
    const size_t chunk = (size_t)1 << 16, nc = (n + chunk - 1) / chunk;
    const int stream = n >= ((size_t)1 << 22) && detect();   // 16 MB and up: it will not stay in cache anyway
#pragma omp parallel for schedule(static) if (nc > 1)
    for (size_t c = 0; c < nc; c++) {
        const size_t len = c == nc - 1 ? n - c * chunk : chunk;
        if (stream) zero_stream_avx2(x + c * chunk, len); else memset(x + c * chunk, 0, sizeof(float) * len);
    }
    if (stream) _mm_sfence();
}
void vec_to_bf16(uint16_t *d, const float *x, long n) { if (detect()) to_bf16_avx2(d, x, n); else to_bf16_scalar(d, x, n); }
void vec_from_bf16(float *y, const uint16_t *s, long n) { if (detect()) from_bf16_avx2(y, s, n); else from_bf16_scalar(y, s, n); }
void vec_round_bf16(float *x, long n) { if (detect()) round_bf16_avx2(x, n); else round_bf16_scalar(x, n); }
void vec_round_bf16_ref(float *x, long n) { round_bf16_scalar(x, n); }
void vec_to_bf16_ref(uint16_t *d, const float *x, long n) { to_bf16_scalar(d, x, n); }
void vec_from_bf16_ref(float *y, const uint16_t *s, long n) { from_bf16_scalar(y, s, n); }

// ---------------------------------------------------------------- bf16 weights, a few rows

void vec_gemv_bf16_ref(float *y, const float *x, const uint16_t *W, int N, int in, int out, int acc) {
    for (int n = 0; n < N; n++)
        for (int o = 0; o < out; o++) {
            float s = 0;
            for (int k = 0; k < in; k++) s += x[(size_t)n * in + k] * bf16_to_f32(W[(size_t)o * in + k]);
            y[(size_t)n * out + o] = acc ? y[(size_t)n * out + o] + s : s;
        }
}

__attribute__((target("avx2,fma"))) static void gemv_bf16_avx2(float *y, const float *x, const uint16_t *W, int N, int in, int out, int acc) {
#pragma omp parallel for schedule(static) if ((long)out * in >= 65536)
    for (int o = 0; o < out; o++) {
        const uint16_t *w = W + (size_t)o * in;
        for (int n = 0; n < N; n++) {
            const float *xn = x + (size_t)n * in;
            __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
            int k = 0;
            for (; k + 16 <= in; k += 16) {
                const __m256i a = _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(w + k))), 16);
                const __m256i b = _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(w + k + 8))), 16);
                s0 = _mm256_fmadd_ps(_mm256_castsi256_ps(a), _mm256_loadu_ps(xn + k), s0);
                s1 = _mm256_fmadd_ps(_mm256_castsi256_ps(b), _mm256_loadu_ps(xn + k + 8), s1);
            }
            __m256 s = _mm256_add_ps(s0, s1);
            __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
            h = _mm_add_ps(h, _mm_movehl_ps(h, h));
            h = _mm_add_ss(h, _mm_movehdup_ps(h));
            float t = _mm_cvtss_f32(h);
            for (; k < in; k++) t += xn[k] * bf16_to_f32(w[k]);
            y[(size_t)n * out + o] = acc ? y[(size_t)n * out + o] + t : t;
        }
    }
}

__attribute__((target("avx512f"))) static void gemv_bf16_avx512(float *y, const float *x, const uint16_t *W, int N, int in, int out, int acc) {
#pragma omp parallel for schedule(static) if ((long)out * in >= 65536)
    for (int o = 0; o < out; o++) {
        const uint16_t *w = W + (size_t)o * in;
        for (int n = 0; n < N; n++) {
            const float *xn = x + (size_t)n * in;
            __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
            int k = 0;
            for (; k + 32 <= in; k += 32) {
                const __m512i a = _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(w + k))), 16);
                const __m512i b = _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(w + k + 16))), 16);
                s0 = _mm512_fmadd_ps(_mm512_castsi512_ps(a), _mm512_loadu_ps(xn + k), s0);
                s1 = _mm512_fmadd_ps(_mm512_castsi512_ps(b), _mm512_loadu_ps(xn + k + 16), s1);
            }
            float t = _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
            for (; k < in; k++) t += xn[k] * bf16_to_f32(w[k]);
            y[(size_t)n * out + o] = acc ? y[(size_t)n * out + o] + t : t;
        }
    }
}

void vec_gemv_bf16(float *y, const float *x, const uint16_t *W, int N, int in, int out, int acc) {
    const int lv = detect();
    if (lv == 2) gemv_bf16_avx512(y, x, W, N, in, out, acc);
    else if (lv == 1) gemv_bf16_avx2(y, x, W, N, in, out, acc);
    else vec_gemv_bf16_ref(y, x, W, N, in, out, acc);
}
