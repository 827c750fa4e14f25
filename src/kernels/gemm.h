// gemm: row-major C[M,N] = alpha * op(A)[M,K] * op(B)[K,N] + beta * C.
// op(X) = X or X^T. BLAS for speed; gemm_ref is the naive twin the tests trust.
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

void gemm(bool ta, bool tb, int M, int N, int K, float alpha, const float *A, int lda,
          const float *B, int ldb, float beta, float *C, int ldc);
void gemm_ref(bool ta, bool tb, int M, int N, int K, float alpha, const float *A, int lda,
              const float *B, int ldb, float beta, float *C, int ldc);

// Linear layer y[N,out] = x[N,in] W[out,in]^T (+= when acc), with its backward:
// dx[N,in] += dy W ; dW[out,in] += dy^T x.
void linear_forward(float *y, const float *x, const float *W, int N, int in, int out, bool acc);
void linear_backward(float *dx, float *dW, const float *dy, const float *x, const float *W,
                     int N, int in, int out);
// the same with dx = dy W (dx need not be cleared first; dW still accumulates)
void linear_backward_set(float *dx, float *dW, const float *dy, const float *x, const float *W,
                         int N, int in, int out);
// the general form: dx = bx dx + dy W ; dW = bw dW + dy^T x (a beta of 0 never reads the old value)
void linear_backward_beta(float *dx, float *dW, const float *dy, const float *x, const float *W,
                          int N, int in, int out, float bx, float bw);

// Weights for answering: when blob[0, n) holds values that bf16 represents exactly (a BF16
// checkpoint), w16 its bf16 copy; linear_forward over at most KERNELS_GEMV_ROWS rows then reads
// w16 (half the memory traffic of decoding, the same products). NULL w16 turns it off.
#define KERNELS_GEMV_ROWS 16
void kernels_weight_shadow(const float *blob, size_t n, const uint16_t *w16);

// The BLAS behind gemm: "auto" (MKL on Intel CPUs when libmkl_rt.so loads, else OpenBLAS),
// "mkl" or "openblas"; an error for an unknown name or an MKL that does not load. Without
// a call, the first gemm picks by MOE_BLAS (auto when unset).
int kernels_blas(const char *want);
const char *kernels_blas_name(void);
// Threads for BLAS and OpenMP; 0 leaves the defaults (OMP_NUM_THREADS or all cores).
void kernels_set_threads(int n);
int kernels_threads(void);
// Best sgemm GFLOP/s over a few square sizes on the current threads (the MFU peak).
double kernels_measure_peak_gflops(double seconds);
