// Vector kernels picked at run time: AVX2+FMA where the CPU has them (and AVX-512F for the
// exp-based ones: exp sums, SwiGLU and its backward), scalar otherwise. MOE_SIMD=avx2 or
// MOE_SIMD=scalar caps the level. Each has a plain-C _ref twin for the tests.
#pragma once
#include <stddef.h>
#include <stdint.h>

const char *simd_level(void);         // "avx512", "avx2" or "scalar"
void simd_force_scalar(int on);       // tests: run the fallback
int simd_cap(int max);                // tests: at most level max (0 scalar, 1 avx2, 2 avx512); the level now

// y[i] = exp(x[i]) (y may be x); returns sum of y
float vec_exp_sum(float *y, const float *x, float shift, int n);   // y = exp(x - shift)
float vec_exp_sum_ref(float *y, const float *x, float shift, int n);
// SwiGLU: a = silu(g) * u ; and its backward (dg, du overwritten)
void vec_swiglu(float *a, const float *g, const float *u, long n);
void vec_swiglu_backward(float *dg, float *du, const float *da, const float *g, const float *u, long n);
// AdamW on n elements: g *= gscale; m, v moments; p = p decay - step m / (sqrt(v) rbc2 + eps)
typedef struct { float gscale, b1, b2, step, rbc2, eps, decay; } AdamWArgs;
void vec_adamw(float *p, const float *g, float *m, float *v, long n, const AdamWArgs *a);
void vec_adamw_ref(float *p, const float *g, float *m, float *v, long n, const AdamWArgs *a);
// sum of squares, accumulated in double
double vec_sumsq(const float *x, long n);
double vec_sumsq_ref(const float *x, long n);
// x[0..n) = 0, on all threads
void vec_zero(float *x, size_t n);
// f32 <-> bf16 arrays (round to nearest even; NaN stays NaN), as bf16.h element by element;
// streaming stores: for the activation stash, whose output is not read again soon
void vec_to_bf16(uint16_t *d, const float *x, long n);
void vec_from_bf16(float *y, const uint16_t *s, long n);
void vec_to_bf16_ref(uint16_t *d, const float *x, long n);
void vec_from_bf16_ref(float *y, const uint16_t *s, long n);
// x <- bf16(x) in place: the values vec_to_bf16 then vec_from_bf16 give (an expert owner
// keeps its received rows as one process's stash gives them back)
void vec_round_bf16(float *x, long n);
void vec_round_bf16_ref(float *x, long n);
// y[n, o] (+)= sum_k x[n, k] W[o, k] for W in bf16, row-major [out, in]: a few rows (decoding)
// against weights read at half the bytes; each weight widened to f32 exactly, f32 sums
void vec_gemv_bf16(float *y, const float *x, const uint16_t *W, int N, int in, int out, int acc);
void vec_gemv_bf16_ref(float *y, const float *x, const uint16_t *W, int N, int in, int out, int acc);
