#include <math.h>
#include <string.h>
#include <omp.h>
#include "../base/base.h"
#include "../kernels/simd.h"
#include "ops.h"

void embed_forward(float *out, const int *tokens, const float *table, int N, int D) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) memcpy(out + (size_t)n * D, table + (size_t)tokens[n] * D, sizeof(float) * D);
}

void embed_backward(float *dtable, const float *dout, const int *tokens, int N, int D) {
    // parallel over columns so that two tokens with the same id never race
#pragma omp parallel
    {
        int ith = omp_get_thread_num(), nth = omp_get_num_threads();
        int c0 = D * ith / nth, c1 = D * (ith + 1) / nth;
        for (int n = 0; n < N; n++) {
            float *dt = dtable + (size_t)tokens[n] * D;
            const float *g = dout + (size_t)n * D;
            for (int c = c0; c < c1; c++) dt[c] += g[c];
        }
    }
}

void rmsnorm_forward(float *out, float *rstd, const float *x, const float *w, int N, int D, float eps) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *xr = x + (size_t)n * D;
        float *o = out + (size_t)n * D;
        float ss = 0;
#pragma omp simd reduction(+ : ss)
        for (int i = 0; i < D; i++) ss += xr[i] * xr[i];
        float r = 1.0f / sqrtf(ss / D + eps);
        if (rstd) rstd[n] = r;
#pragma omp simd
        for (int i = 0; i < D; i++) o[i] = xr[i] * r * w[i];
    }
}

void rmsnorm_backward(float *dx, float *dw, const float *dout, const float *x, const float *w,
                      const float *rstd, int N, int D) {
    // y = xhat * w, xhat = x * r.  dxhat = dy * w;  dx = r * (dxhat - xhat * mean(dxhat * xhat))
    // One pass over the rows: each thread sums its rows' dw in its own row of part, and the
    // parts are added in thread order (the same result for the same thread count).
    const int nth = omp_get_max_threads();
    float *part = MOE_NEW(float, (size_t)nth * D);
#pragma omp parallel num_threads(nth)
    {
        const int ith = omp_get_thread_num(), used = omp_get_num_threads();
        float *pw = part + (size_t)ith * D;
#pragma omp for schedule(static)
        for (int n = 0; n < N; n++) {
            const float *xr = x + (size_t)n * D, *dy = dout + (size_t)n * D;
            float r = rstd[n], dot = 0;
#pragma omp simd reduction(+ : dot)
            for (int i = 0; i < D; i++) dot += dy[i] * w[i] * xr[i];
            dot *= r / D;   // mean(dxhat * xhat)
            float *d = dx + (size_t)n * D;
#pragma omp simd
            for (int i = 0; i < D; i++) {
                d[i] += r * (dy[i] * w[i] - xr[i] * r * dot);
                pw[i] += dy[i] * xr[i] * r;
            }
        }
        const int c0 = D * ith / used, c1 = D * (ith + 1) / used;   // after the loop's barrier
        for (int t = 0; t < used; t++)
            for (int c = c0; c < c1; c++) dw[c] += part[(size_t)t * D + c];
    }
    moe_free(part);
}

void rmsnorm_forward_ref(float *out, float *rstd, const float *x, const float *w, int N, int D, float eps) {
    for (int n = 0; n < N; n++) {
        double ss = 0;
        for (int i = 0; i < D; i++) ss += (double)x[n * D + i] * x[n * D + i];
        double r = 1.0 / sqrt(ss / D + eps);
        rstd[n] = (float)r;
        for (int i = 0; i < D; i++) out[n * D + i] = (float)(x[n * D + i] * r * w[i]);
    }
}

void rmsnorm_backward_ref(float *dx, float *dw, const float *dout, const float *x, const float *w,
                          const float *rstd, int N, int D) {
    // straight from the chain rule: dx_j = sum_i dy_i w_i (r delta_ij - x_i x_j r^3 / D)
    for (int n = 0; n < N; n++) {
        const float *xr = x + n * D, *dy = dout + n * D;
        double r = rstd[n];
        for (int j = 0; j < D; j++) {
            double acc = 0;
            for (int i = 0; i < D; i++)
                acc += dy[i] * w[i] * ((i == j ? r : 0) - (double)xr[i] * xr[j] * r * r * r / D);
            dx[n * D + j] += (float)acc;
        }
        for (int i = 0; i < D; i++) dw[i] += (float)(dy[i] * xr[i] * r);
    }
}

void swiglu_rows_forward(float *a, const float *gu, int N, int F) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *g = gu + (size_t)n * 2 * F;
        vec_swiglu(a + (size_t)n * F, g, g + F, F);
    }
}

void swiglu_rows_backward(float *dgu, const float *da, const float *gu, int N, int F) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *g = gu + (size_t)n * 2 * F;
        float *dg = dgu + (size_t)n * 2 * F;
        vec_swiglu_backward(dg, dg + F, da + (size_t)n * F, g, g + F, F);
    }
}

void xent_forward_backward(float *logits, const int *targets, int Nt, int V, float scale, double *loss_sum) {
    double total = 0;
#pragma omp parallel for schedule(static) reduction(+ : total)
    for (int n = 0; n < Nt; n++) {
        float *z = logits + (size_t)n * V;
        float mx = z[0];
        for (int i = 1; i < V; i++) mx = z[i] > mx ? z[i] : mx;
        const float zt = z[targets[n]];
        // z <- exp(z - max) in place; the loss needs only their sum
        double sum = vec_exp_sum(z, z, mx, V);
        total += mx + log(sum) - zt;
        if (scale != 0.0f) {
            float f = (float)(scale / sum);
            for (int i = 0; i < V; i++) z[i] *= f;
            z[targets[n]] -= scale;
        }
    }
    *loss_sum += total;
}

void xent_ref(float *dlogits, const float *logits, const int *targets, int Nt, int V, float scale, double *loss_sum) {
    for (int n = 0; n < Nt; n++) {
        const float *z = logits + n * V;
        double sum = 0;
        for (int i = 0; i < V; i++) sum += exp((double)z[i]);
        *loss_sum += log(sum) - z[targets[n]];
        for (int i = 0; i < V; i++) dlogits[n * V + i] = (float)((exp((double)z[i]) / sum - (i == targets[n])) * scale);
    }
}

void swiglu_forward_ref(float *a, const float *g, const float *u, long n) {
    for (long i = 0; i < n; i++) a[i] = (float)(g[i] / (1.0 + exp(-(double)g[i])) * u[i]);
}
void swiglu_backward_ref(float *dg, float *du, const float *da, const float *g, const float *u, long n) {
    for (long i = 0; i < n; i++) {
        double s = 1.0 / (1.0 + exp(-(double)g[i]));
        dg[i] = (float)(da[i] * u[i] * (s + g[i] * s * (1 - s)));
        du[i] = (float)(da[i] * g[i] * s);
    }
}
void embed_backward_ref(float *dtable, const float *dout, const int *tokens, int N, int D) {
    for (int n = 0; n < N; n++)
        for (int i = 0; i < D; i++) dtable[(size_t)tokens[n] * D + i] += dout[(size_t)n * D + i];
}
