// Multi-head latent attention in its absorbed form (inference, ops.h): every head reads the
// same cached rows [c | kr], and the latent's up-projection moves to the query and output
// sides instead of expanding every row.
#include <math.h>
#include <string.h>
#include "../base/base.h"
#include "ops.h"
#include "../kernels/gemm.h"
#include "../kernels/simd.h"

void mla_attention_absorbed(float *out, float *lse, const float *q, const float *cache, const float *Wkvb,
                            const int *kv_lo, const int *kv_hi, int N, int H, int nope, int rope, int vd,
                            int kvr, float scale) {
    const int qk = nope + rope, w = nope + vd, cw = kvr + rope;
    float *qt = MOE_NEW(float, (size_t)N * H * cw), *ot = MOE_NEW(float, (size_t)N * H * kvr);
    // q~_h = [Wk_h^T q_nope_h | q_rope_h]: per head one GEMM over the tokens, [N, nope] x [nope, kvr]
    for (int h = 0; h < H; h++)
        gemm(false, false, N, kvr, nope, 1.0f, q + h * qk, H * qk, Wkvb + (size_t)h * w * kvr, kvr, 0.0f, qt + h * cw, H * cw);
    for (int n = 0; n < N; n++)
        for (int h = 0; h < H; h++)
            memcpy(qt + ((size_t)n * H + h) * cw + kvr, q + (size_t)n * H * qk + h * qk + nope, sizeof(float) * rope);
    int Smax = 1;
    for (int n = 0; n < N; n++) Smax = imax(Smax, kv_hi[n] - kv_lo[n] + 1);
    // work items: a token's heads in blocks, enough blocks to keep the threads busy when few tokens
    const int nth = kernels_threads(), nb = imin(H, imax(1, (2 * nth + N - 1) / N)), hb = (H + nb - 1) / nb;
#pragma omp parallel
    {
        float *sc = MOE_NEW(float, (size_t)hb * Smax);
#pragma omp for collapse(2) schedule(dynamic, 1)
        for (int n = 0; n < N; n++)
            for (int b = 0; b < nb; b++) {
                const int h0 = b * hb, nh = imin(hb, H - h0), lo = kv_lo[n], S = kv_hi[n] - lo + 1;
                if (nh <= 0) continue;
                const float *rows = cache + (size_t)lo * cw;
                // scores [nh, S] = scale q~ [c | kr]^T, the exact row softmax, o~ [nh, kvr] = P c
                gemm(false, true, nh, S, cw, scale, qt + ((size_t)n * H + h0) * cw, cw, rows, cw, 0.0f, sc, S);
                for (int i = 0; i < nh; i++) {
                    float *sr = sc + (size_t)i * S, mx = -INFINITY;
                    for (int j = 0; j < S; j++) mx = sr[j] > mx ? sr[j] : mx;
                    const float sum = vec_exp_sum(sr, sr, mx, S), inv = 1.0f / sum;
                    for (int j = 0; j < S; j++) sr[j] *= inv;
                    if (lse) lse[(size_t)n * H + h0 + i] = mx + logf(sum);
                }
                gemm(false, false, nh, kvr, S, 1.0f, sc, S, rows, cw, 0.0f, ot + ((size_t)n * H + h0) * kvr, kvr);
            }
        moe_free(sc);
    }
    // out_h = Wv_h o~_h: per head one GEMM over the tokens, [N, kvr] x [kvr, vd]
    for (int h = 0; h < H; h++)
        gemm(false, true, N, vd, kvr, 1.0f, ot + h * kvr, H * kvr, Wkvb + ((size_t)h * w + nope) * kvr, kvr, 0.0f,
             out + h * vd, H * vd);
    moe_free(qt); moe_free(ot);
}

void mla_attention_absorbed_ref(float *out, float *lse, const float *q, const float *cache, const float *Wkvb,
                                const int *kv_lo, const int *kv_hi, int N, int H, int nope, int rope, int vd,
                                int kvr, float scale) {
    const int qk = nope + rope, w = nope + vd, cw = kvr + rope;
    int Smax = 1;
    for (int n = 0; n < N; n++) Smax = imax(Smax, kv_hi[n] - kv_lo[n] + 1);
    double *qt = MOE_NEW(double, cw), *ot = MOE_NEW(double, kvr), *sc = MOE_NEW(double, Smax);
    for (int n = 0; n < N; n++)
        for (int h = 0; h < H; h++) {
            const float *qh = q + (size_t)n * H * qk + h * qk, *Wk = Wkvb + (size_t)h * w * kvr, *Wv = Wk + (size_t)nope * kvr;
            for (int j = 0; j < kvr; j++) {
                double s = 0;
                for (int i = 0; i < nope; i++) s += (double)Wk[(size_t)i * kvr + j] * qh[i];
                qt[j] = s;
            }
            for (int i = 0; i < rope; i++) qt[kvr + i] = qh[nope + i];
            const int lo = kv_lo[n], S = kv_hi[n] - lo + 1;
            double mx = -1e300, sum = 0;
            for (int s = 0; s < S; s++) {
                const float *r = cache + (size_t)(lo + s) * cw;
                double d = 0;
                for (int i = 0; i < cw; i++) d += qt[i] * r[i];
                sc[s] = d * scale;
                if (sc[s] > mx) mx = sc[s];
            }
            for (int s = 0; s < S; s++) sum += (sc[s] = exp(sc[s] - mx));
            for (int i = 0; i < kvr; i++) {
                double o = 0;
                for (int s = 0; s < S; s++) o += sc[s] / sum * cache[(size_t)(lo + s) * cw + i];
                ot[i] = o;
            }
            for (int i = 0; i < vd; i++) {
                double o = 0;
                for (int j = 0; j < kvr; j++) o += (double)Wv[(size_t)i * kvr + j] * ot[j];
                out[(size_t)n * H * vd + h * vd + i] = (float)o;
            }
            if (lse) lse[(size_t)n * H + h] = (float)(mx + log(sum));
        }
    moe_free(qt); moe_free(ot); moe_free(sc);
}
