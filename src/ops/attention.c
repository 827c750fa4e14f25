#include <math.h>
#include <string.h>
#include "../base/base.h"
#include "ops.h"
#include "../kernels/gemm.h"
#include "../kernels/simd.h"

// One query row against keys [lo, hi], in blocks of 64 keys: scores for the block, then
// an online-softmax update (running max m, running sum l) of the output accumulator.
#define ATT_BLOCK 64
void attention_forward(float *out, float *lse, const float *q, const float *k, const float *v,
                       const int *kv_lo, const int *kv_hi, int N, int H, int Hkv, int hd) {
    const float scale = 1.0f / sqrtf((float)hd);
    const int group = H / Hkv, qs = H * hd, ks = Hkv * hd;
#pragma omp parallel for collapse(2) schedule(dynamic, 8)
    for (int n = 0; n < N; n++)
        for (int h = 0; h < H; h++) {
            const float *qh = q + (size_t)n * qs + h * hd;
            float *o = out + (size_t)n * qs + h * hd;
            const int kh = h / group;
            float m = -INFINITY, l = 0;
            float acc[512], sc[ATT_BLOCK];
            for (int i = 0; i < hd; i++) acc[i] = 0;
            for (int j0 = kv_lo[n]; j0 <= kv_hi[n]; j0 += ATT_BLOCK) {
                const int nb = imin(ATT_BLOCK, kv_hi[n] - j0 + 1);
                float bm = -INFINITY;
                for (int j = 0; j < nb; j++) {
                    const float *kj = k + (size_t)(j0 + j) * ks + kh * hd;
                    float s = 0;
#pragma omp simd reduction(+ : s)
                    for (int i = 0; i < hd; i++) s += qh[i] * kj[i];
                    sc[j] = s * scale;
                    bm = sc[j] > bm ? sc[j] : bm;
                }
                if (bm > m) {   // rescale what we have to the new max
                    float c = expf(m - bm);
                    l *= c;
                    for (int i = 0; i < hd; i++) acc[i] *= c;
                    m = bm;
                }
                for (int j = 0; j < nb; j++) {
                    const float p = expf(sc[j] - m);
                    const float *vj = v + (size_t)(j0 + j) * ks + kh * hd;
                    l += p;
#pragma omp simd
                    for (int i = 0; i < hd; i++) acc[i] += p * vj[i];
                }
            }
            float inv = 1.0f / l;
            for (int i = 0; i < hd; i++) o[i] = acc[i] * inv;
            if (lse) lse[(size_t)n * H + h] = m + logf(l);
        }
}

void attention_forward_ref(float *out, float *lse, const float *q, const float *k, const float *v,
                           const int *kv_lo, const int *kv_hi, int N, int H, int Hkv, int hd) {
    const int group = H / Hkv, qs = H * hd, ks = Hkv * hd;
    double sc[4096];
    for (int n = 0; n < N; n++)
        for (int h = 0; h < H; h++) {
            int kh = h / group, lo = kv_lo[n], hi = kv_hi[n];
            double mx = -1e300, sum = 0;
            for (int j = lo; j <= hi; j++) {
                double s = 0;
                for (int i = 0; i < hd; i++) s += (double)q[n * qs + h * hd + i] * k[j * ks + kh * hd + i];
                sc[j - lo] = s / sqrt((double)hd);
                if (sc[j - lo] > mx) mx = sc[j - lo];
            }
            for (int j = lo; j <= hi; j++) sum += exp(sc[j - lo] - mx);
            for (int i = 0; i < hd; i++) {
                double o = 0;
                for (int j = lo; j <= hi; j++) o += exp(sc[j - lo] - mx) / sum * v[j * ks + kh * hd + i];
                out[n * qs + h * hd + i] = (float)o;
            }
            if (lse) lse[n * H + h] = (float)(mx + log(sum));
        }
}

void attention_backward_ref(float *dq, float *dk, float *dv, const float *dout, const float *q,
                            const float *k, const float *v, const int *kv_lo, int N, int H, int Hkv, int hd) {
    // explicit probabilities P, then dP = dout V^T, dS = P * (dP - rowsum(dP * P))
    const int group = H / Hkv, qs = H * hd, ks = Hkv * hd;
    memset(dq, 0, sizeof(float) * N * qs);
    memset(dk, 0, sizeof(float) * N * ks);
    memset(dv, 0, sizeof(float) * N * ks);
    double P[4096], dP[4096];
    double scale = 1.0 / sqrt((double)hd);
    for (int n = 0; n < N; n++)
        for (int h = 0; h < H; h++) {
            int kh = h / group, lo = kv_lo[n];
            double mx = -1e300, sum = 0, rs = 0;
            for (int j = lo; j <= n; j++) {
                double s = 0;
                for (int i = 0; i < hd; i++) s += (double)q[n * qs + h * hd + i] * k[j * ks + kh * hd + i];
                P[j - lo] = s * scale;
                if (P[j - lo] > mx) mx = P[j - lo];
            }
            for (int j = lo; j <= n; j++) sum += (P[j - lo] = exp(P[j - lo] - mx));
            for (int j = lo; j <= n; j++) {
                P[j - lo] /= sum;
                double d = 0;
                for (int i = 0; i < hd; i++) d += (double)dout[n * qs + h * hd + i] * v[j * ks + kh * hd + i];
                dP[j - lo] = d;
                rs += d * P[j - lo];
            }
            for (int j = lo; j <= n; j++) {
                double ds = P[j - lo] * (dP[j - lo] - rs) * scale;
                for (int i = 0; i < hd; i++) {
                    dv[j * ks + kh * hd + i] += (float)(P[j - lo] * dout[n * qs + h * hd + i]);
                    dq[n * qs + h * hd + i] += (float)(ds * k[j * ks + kh * hd + i]);
                    dk[j * ks + kh * hd + i] += (float)(ds * q[n * qs + h * hd + i]);
                }
            }
        }
}

// ---------------------------------------------------------------- tiled (training layout)
// Flash-attention-2 over tiles of AT queries x AT keys, each tile product one small GEMM:
// S = Q_i K_j^T (scaled), online softmax per row, O_i += P V_j. Work items are
// (example, head) pairs; memory is O(AT^2 + AT hd) per thread, never T x T.

#define AT 64

static int attention_segments(const int *kv_lo, int N, int *seg) {
    int nseg = 0;
    for (int n = 0; n < N; n++)
        if (kv_lo[n] == n) seg[nseg++] = n;
    seg[nseg] = N;
    return nseg;
}

void attention_forward_train(float *out, float *lse, const float *q, const float *k, const float *v,
                             const int *kv_lo, int N, int H, int Hkv, int hd) {
    const float scale = 1.0f / sqrtf((float)hd);
    const int group = H / Hkv, qs = H * hd, ks = Hkv * hd;
    int *seg = MOE_NEW(int, N + 1);
    const int nseg = attention_segments(kv_lo, N, seg);
#pragma omp parallel
    {
        float *S = MOE_NEW(float, AT * AT), *O = MOE_NEW(float, (size_t)AT * hd);
        float m[AT], l[AT];
#pragma omp for collapse(2) schedule(dynamic, 1)
        for (int si = 0; si < nseg; si++)
            for (int h = 0; h < H; h++) {
                const int s0 = seg[si], T = seg[si + 1] - s0, kh = h / group;
                const float *Q = q + (size_t)s0 * qs + h * hd, *K = k + (size_t)s0 * ks + kh * hd,
                            *Vv = v + (size_t)s0 * ks + kh * hd;
                for (int i0 = 0; i0 < T; i0 += AT) {
                    const int mi = imin(AT, T - i0);
                    for (int r = 0; r < mi; r++) { m[r] = -INFINITY; l[r] = 0; }
                    memset(O, 0, sizeof(float) * (size_t)mi * hd);
                    for (int j0 = 0; j0 <= i0; j0 += AT) {
                        const int nj = imin(AT, i0 + mi - j0);
                        gemm(false, true, mi, nj, hd, scale, Q + (size_t)i0 * qs, qs, K + (size_t)j0 * ks, ks, 0.0f, S, AT);
                        for (int r = 0; r < mi; r++) {
                            float *sr = S + r * AT;
                            const int cmax = j0 == i0 ? r + 1 : nj;   // causal mask on the diagonal tile
                            float bm = m[r];
#pragma omp simd reduction(max : bm)
                            for (int c = 0; c < cmax; c++) bm = sr[c] > bm ? sr[c] : bm;
                            const float corr = expf(m[r] - bm);
                            const float sum = vec_exp_sum(sr, sr, bm, cmax);
                            for (int c = cmax; c < nj; c++) sr[c] = 0;
                            l[r] = l[r] * corr + sum;
                            m[r] = bm;
                            if (corr != 1.0f) for (int i = 0; i < hd; i++) O[(size_t)r * hd + i] *= corr;
                        }
                        gemm(false, false, mi, hd, nj, 1.0f, S, AT, Vv + (size_t)j0 * ks, ks, 1.0f, O, hd);
                    }
                    for (int r = 0; r < mi; r++) {
                        float *o = out + (size_t)(s0 + i0 + r) * qs + h * hd, inv = 1.0f / l[r];
                        for (int i = 0; i < hd; i++) o[i] = O[(size_t)r * hd + i] * inv;
                        if (lse) lse[(size_t)(s0 + i0 + r) * H + h] = m[r] + logf(l[r]);
                    }
                }
            }
        moe_free(S); moe_free(O);
    }
    moe_free(seg);
}

// Backward in the same tiles: for key tile j and query tiles i >= j,
//   P = exp(S - lse), dV_j += P^T dO_i, dP = dO_i V_j^T, dS = P (dP - D) scale,
//   dQ_i += dS K_j, dK_j += dS^T Q_i, with D = rowsum(dO * O).
void attention_backward_train(float *dq, float *dk, float *dv, const float *dout, const float *q,
                              const float *k, const float *v, const float *out, const float *lse,
                              const int *kv_lo, int N, int H, int Hkv, int hd) {
    const float scale = 1.0f / sqrtf((float)hd);
    const int group = H / Hkv, qs = H * hd, ks = Hkv * hd;
    memset(dq, 0, sizeof(float) * (size_t)N * qs);
    memset(dk, 0, sizeof(float) * (size_t)N * ks);
    memset(dv, 0, sizeof(float) * (size_t)N * ks);
    int *seg = MOE_NEW(int, N + 1);
    const int nseg = attention_segments(kv_lo, N, seg);
    int Tmax = 0;
    for (int si = 0; si < nseg; si++) Tmax = imax(Tmax, seg[si + 1] - seg[si]);
#pragma omp parallel
    {
        float *P = MOE_NEW(float, AT * AT), *dP = MOE_NEW(float, AT * AT), *Dr = MOE_NEW(float, Tmax);
#pragma omp for collapse(2) schedule(dynamic, 1)
        for (int si = 0; si < nseg; si++)
            for (int kh = 0; kh < Hkv; kh++) {
                const int s0 = seg[si], T = seg[si + 1] - s0;
                const float *K = k + (size_t)s0 * ks + kh * hd, *Vv = v + (size_t)s0 * ks + kh * hd;
                float *dK = dk + (size_t)s0 * ks + kh * hd, *dV = dv + (size_t)s0 * ks + kh * hd;
                for (int h = kh * group; h < (kh + 1) * group; h++) {
                    const float *Q = q + (size_t)s0 * qs + h * hd, *dO = dout + (size_t)s0 * qs + h * hd,
                                *Ot = out + (size_t)s0 * qs + h * hd, *Lr = lse + (size_t)s0 * H + h;
                    float *dQ = dq + (size_t)s0 * qs + h * hd;
                    for (int r = 0; r < T; r++) {
                        float d = 0;
#pragma omp simd reduction(+ : d)
                        for (int i = 0; i < hd; i++) d += dO[(size_t)r * qs + i] * Ot[(size_t)r * qs + i];
                        Dr[r] = d;
                    }
                    for (int j0 = 0; j0 < T; j0 += AT) {
                        const int nj = imin(AT, T - j0);
                        for (int i0 = j0; i0 < T; i0 += AT) {
                            const int mi = imin(AT, T - i0);
                            gemm(false, true, mi, nj, hd, scale, Q + (size_t)i0 * qs, qs, K + (size_t)j0 * ks, ks, 0.0f, P, AT);
                            for (int r = 0; r < mi; r++) {
                                const int cmax = i0 == j0 ? r + 1 : nj;
                                const float L = Lr[(size_t)(i0 + r) * H];
                                float *pr = P + r * AT;
                                vec_exp_sum(pr, pr, L, cmax);
                                for (int c = cmax; c < nj; c++) pr[c] = 0;
                            }
                            gemm(true, false, nj, hd, mi, 1.0f, P, AT, dO + (size_t)i0 * qs, qs, 1.0f, dV + (size_t)j0 * ks, ks);
                            gemm(false, true, mi, nj, hd, 1.0f, dO + (size_t)i0 * qs, qs, Vv + (size_t)j0 * ks, ks, 0.0f, dP, AT);
                            for (int r = 0; r < mi; r++)
                                for (int c = 0; c < nj; c++)
                                    dP[r * AT + c] = P[r * AT + c] * (dP[r * AT + c] - Dr[i0 + r]) * scale;
                            gemm(false, false, mi, hd, nj, 1.0f, dP, AT, K + (size_t)j0 * ks, ks, 1.0f, dQ + (size_t)i0 * qs, qs);
                            gemm(true, false, nj, hd, mi, 1.0f, dP, AT, Q + (size_t)i0 * qs, qs, 1.0f, dK + (size_t)j0 * ks, ks);
                        }
                    }
                }
            }
        moe_free(P); moe_free(dP); moe_free(Dr);
    }
    moe_free(seg);
}
