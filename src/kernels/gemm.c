#include "gemm.h"
#include <cblas.h>
#include <dlfcn.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include "../base/base.h"
#include "simd.h"

void openblas_set_num_threads(int);

// The sgemm behind gemm(): OpenBLAS (linked), or Intel MKL (Debian's libmkl-rt, loaded at
// run time) on Intel CPUs, where it runs this program's GEMM shapes 10-20% faster
// (bench/RESULTS.md). MOE_BLAS=auto|mkl|openblas; auto takes MKL on Intel when it loads.
// MKL runs on the program's OpenMP threads (its GNU threading layer), one thread inside
// our parallel regions, as OpenBLAS does.
typedef void (*SgemmFn)(int, int, int, int, int, int, float, const float *, int, const float *, int, float,
                        float *, int);
static SgemmFn blas_sgemm;
static void (*blas_threads)(int);
static const char *blas_lib;
static int blas_n = 0;   // threads set before the library was picked

static void use_openblas(void) {
    blas_sgemm = (SgemmFn)cblas_sgemm;
    blas_threads = openblas_set_num_threads;
    blas_lib = "openblas";
}
static int use_mkl(void) {
    void *h = dlopen("libmkl_rt.so", RTLD_NOW | RTLD_LOCAL);
    if (!h) return MOE_FAIL;
    int (*layer)(int) = (int (*)(int))dlsym(h, "MKL_Set_Threading_Layer");
    int (*iface)(int) = (int (*)(int))dlsym(h, "MKL_Set_Interface_Layer");
    void (*thr)(int) = (void (*)(int))dlsym(h, "MKL_Set_Num_Threads");
    SgemmFn f = (SgemmFn)dlsym(h, "cblas_sgemm");
    if (!layer || !iface || !thr || !f) { dlclose(h); return MOE_FAIL; }
    iface(0);   // MKL_INTERFACE_LP64: 32-bit ints
    layer(3);   // MKL_THREADING_GNU: libgomp, the runtime this program runs on
    blas_sgemm = f;
    blas_threads = thr;
    blas_lib = "mkl";
    return MOE_OK;
}

int kernels_blas(const char *want) {
    if (!want || !*want) want = "auto";
    if (!strcmp(want, "openblas")) use_openblas();
    else if (!strcmp(want, "mkl")) {
        if (use_mkl()) MOE_ERR("MOE_BLAS=mkl: cannot load libmkl_rt.so (scripts/deps.sh installs it: Debian's libmkl-rt)");
    } else if (!strcmp(want, "auto")) {
        if (!__builtin_cpu_is("intel") || use_mkl()) use_openblas();
    } else
        MOE_ERR("MOE_BLAS must be auto, mkl or openblas, got \"%s\"", want);
    if (blas_n > 0) blas_threads(blas_n);
    return MOE_OK;
}
const char *kernels_blas_name(void) {
    if (!blas_lib) {   // the first gemm may run inside a parallel region
#pragma omp critical(moe_blas_pick)
        if (!blas_lib && kernels_blas(getenv("MOE_BLAS"))) use_openblas();
    }
    return blas_lib;
}

void gemm(bool ta, bool tb, int M, int N, int K, float alpha, const float *A, int lda,
          const float *B, int ldb, float beta, float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {  // BLAS leaves C alone for K = 0 only when beta = 1; make it explicit
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) C[(size_t)i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[(size_t)i * ldc + j];
        return;
    }
    if (!blas_lib) kernels_blas_name();
    blas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
               M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void gemm_ref(bool ta, bool tb, int M, int N, int K, float alpha, const float *A, int lda,
              const float *B, int ldb, float beta, float *C, int ldc) {
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double acc = 0;
            for (int k = 0; k < K; k++) {
                float a = ta ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k];
                float b = tb ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j];
                acc += (double)a * b;
            }
            float *c = &C[(size_t)i * ldc + j];
            *c = (float)(alpha * acc + (beta == 0.0f ? 0.0 : beta * *c));
        }
}

// A bf16 copy of a weight blob whose values are bf16 already (a BF16 checkpoint, for
// answering): linear layers over a few rows read it instead, half the bytes, the same values
static const float *shadow_lo;
static size_t shadow_n;
static const uint16_t *shadow16;
void kernels_weight_shadow(const float *blob, size_t n, const uint16_t *w16) { shadow_lo = blob, shadow_n = n, shadow16 = w16; }

void linear_forward(float *y, const float *x, const float *W, int N, int in, int out, bool acc) {
    // y[N,out] (+)= x[N,in] @ W[out,in]^T
    if (shadow16 && N <= KERNELS_GEMV_ROWS && W >= shadow_lo && W + (size_t)in * out <= shadow_lo + shadow_n) {
        vec_gemv_bf16(y, x, shadow16 + (W - shadow_lo), N, in, out, acc);
        return;
    }
    gemm(false, true, N, out, in, 1.0f, x, in, W, in, acc ? 1.0f : 0.0f, y, out);
}

void linear_backward_beta(float *dx, float *dW, const float *dy, const float *x, const float *W,
                          int N, int in, int out, float bx, float bw) {
    if (dx) gemm(false, false, N, in, out, 1.0f, dy, out, W, in, bx, dx, in);   // dx = bx dx + dy W
    if (dW) gemm(true, false, out, in, N, 1.0f, dy, out, x, in, bw, dW, in);      // dW = bw dW + dy^T x
}
void linear_backward(float *dx, float *dW, const float *dy, const float *x, const float *W,
                     int N, int in, int out) {
    linear_backward_beta(dx, dW, dy, x, W, N, in, out, 1.0f, 1.0f);
}
void linear_backward_set(float *dx, float *dW, const float *dy, const float *x, const float *W,
                         int N, int in, int out) {
    linear_backward_beta(dx, dW, dy, x, W, N, in, out, 0.0f, 1.0f);
}

static int g_threads = 0;
void kernels_set_threads(int n) {
    if (n > 0) {
        omp_set_num_threads(n);
        openblas_set_num_threads(n);   // linked either way
        if (blas_lib) blas_threads(n);
        blas_n = g_threads = n;
    }
}
int kernels_threads(void) { return g_threads > 0 ? g_threads : omp_get_max_threads(); }

double kernels_measure_peak_gflops(double seconds) {
    static const int sizes[] = {512, 1024};
    double best = 0;
    for (int si = 0; si < 2; si++) {
        int n = sizes[si];
        float *a = MOE_NEW(float, (size_t)n * n), *b = MOE_NEW(float, (size_t)n * n),
              *c = MOE_NEW(float, (size_t)n * n);
        for (size_t i = 0; i < (size_t)n * n; i++) { a[i] = 0.001f * (i % 97); b[i] = 0.002f * (i % 89); }
        gemm(false, false, n, n, n, 1, a, n, b, n, 0, c, n);  // warm-up
        double t0 = time_now(), deadline = t0 + seconds / 2;
        int reps = 0;
        do {
            double t = time_now();
            gemm(false, false, n, n, n, 1, a, n, b, n, 0, c, n);
            double dt = time_now() - t;
            double gf = 2.0 * n * n * n / dt * 1e-9;
            if (gf > best) best = gf;
            reps++;
        } while (time_now() < deadline || reps < 3);
        moe_free(a); moe_free(b); moe_free(c);
    }
    return best;
}
