#include <math.h>
#include <string.h>
#include "../base/base.h"
#include "ops.h"
#include "../kernels/gemm.h"
#include "../kernels/simd.h"

// One query row against keys [lo, hi], in blocks of 64 keys: scores for the block, then
// an online-softmax update (running max m, running sum l) of the output accumulator.
#define ATT_BLOCK 64
void attention_forward_ref(float *out, float *lse, const float *q, const float *k, const float *v,
                           const int *kv_lo, const int *kv_hi, int N, int H, int Hkv, int hd_qk, int hd_v,
                           float scale) {
    const int group = H / Hkv, qs = H * hd_qk, ks = Hkv * hd_qk, vs = Hkv * hd_v, os = H * hd_v;
    double sc[4096];
    for (int n = 0; n < N; n++)
        for (int h = 0; h < H; h++) {
            int kh = h / group, lo = kv_lo[n], hi = kv_hi[n];
            double mx = -1e300, sum = 0;
            for (int j = lo; j <= hi; j++) {
                double s = 0;
                for (int i = 0; i < hd_qk; i++) s += (double)q[n * qs + h * hd_qk + i] * k[j * ks + kh * hd_qk + i];
                sc[j - lo] = s * scale;
                if (sc[j - lo] > mx) mx = sc[j - lo];
            }
            for (int j = lo; j <= hi; j++) sum += exp(sc[j - lo] - mx);
            for (int i = 0; i < hd_v; i++) {
                double o = 0;
                for (int j = lo; j <= hi; j++) o += exp(sc[j - lo] - mx) / sum * v[j * vs + kh * hd_v + i];
                out[n * os + h * hd_v + i] = (float)o;
            }
            if (lse) lse[n * H + h] = (float)(mx + log(sum));
        }
}

void attention_backward_ref(float *dq, float *dk, float *dv, const float *dout, const float *q,
                            const float *k, const float *v, const int *kv_lo, int N, int H, int Hkv,
                            int hd_qk, int hd_v, float scale) {
    // explicit probabilities P, then dP = dout V^T, dS = P * (dP - rowsum(dP * P))
    const int group = H / Hkv, qs = H * hd_qk, ks = Hkv * hd_qk, vs = Hkv * hd_v, os = H * hd_v;
    memset(dq, 0, sizeof(float) * N * qs);
    memset(dk, 0, sizeof(float) * N * ks);
    memset(dv, 0, sizeof(float) * N * vs);
    double P[4096], dP[4096];
    for (int n = 0; n < N; n++)
        for (int h = 0; h < H; h++) {
            int kh = h / group, lo = kv_lo[n];
            double mx = -1e300, sum = 0, rs = 0;
            for (int j = lo; j <= n; j++) {
                double s = 0;
                for (int i = 0; i < hd_qk; i++) s += (double)q[n * qs + h * hd_qk + i] * k[j * ks + kh * hd_qk + i];
                P[j - lo] = s * scale;
                if (P[j - lo] > mx) mx = P[j - lo];
            }
            for (int j = lo; j <= n; j++) sum += (P[j - lo] = exp(P[j - lo] - mx));
            for (int j = lo; j <= n; j++) {
                P[j - lo] /= sum;
                double d = 0;
                for (int i = 0; i < hd_v; i++) d += (double)dout[n * os + h * hd_v + i] * v[j * vs + kh * hd_v + i];
                dP[j - lo] = d;
                rs += d * P[j - lo];
            }
            for (int j = lo; j <= n; j++) {
                double ds = P[j - lo] * (dP[j - lo] - rs) * scale;
                for (int i = 0; i < hd_v; i++) dv[j * vs + kh * hd_v + i] += (float)(P[j - lo] * dout[n * os + h * hd_v + i]);
                for (int i = 0; i < hd_qk; i++) {
                    dq[n * qs + h * hd_qk + i] += (float)(ds * k[j * ks + kh * hd_qk + i]);
                    dk[j * ks + kh * hd_qk + i] += (float)(ds * q[n * qs + h * hd_qk + i]);
                }
            }
        }
}

// ---------------------------------------------------------------- tiled (training layout)
// Attention in blocks of AT query rows (forward) or AT keys (backward), each block against
// everything causality lets it see, in one GEMM per product: the forward takes query tile i
// against keys 0 .. i0+AT-1, S = Q_i K^T (scaled), the exact row softmax (no online
// rescaling), O_i = P V. Work items are (example, head) pairs; memory is O(AT T) per thread,
// O(T) per row, never T x T. (Tile-by-tile products, FlashAttention-2 style, were 15% slower
// forward and backward here: 64x64x64 GEMMs pay more per call than they compute.)

#define AT 64

// One tile: mi query rows (Q, row stride qs) against the keys and values from K and V on,
// row r seeing the first c0 + r of them (causal); out (stride os) and lse (stride lss, or
// NULL) of those rows. S: mi rows of at least c0 + mi - 1 scores (stride ss).
static void tile_forward(float *S, int ss, const float *Q, int qs, const float *K, int ks, const float *V, int vs,
                         float *out, int os, float *lse, int lss, int mi, int c0, int hd_qk, int hd_v, float scale) {
    const int nk = c0 + mi - 1;
    gemm(false, true, mi, nk, hd_qk, scale, Q, qs, K, ks, 0.0f, S, ss);
    for (int r = 0; r < mi; r++) {
        float *sr = S + (size_t)r * ss;
        const int cmax = c0 + r;
        float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
        for (int c = 0; c < cmax; c++) mx = sr[c] > mx ? sr[c] : mx;
        const float sum = vec_exp_sum(sr, sr, mx, cmax), inv = 1.0f / sum;
#pragma omp simd
        for (int c = 0; c < cmax; c++) sr[c] *= inv;
        for (int c = cmax; c < nk; c++) sr[c] = 0;
        if (lse) lse[(size_t)r * lss] = mx + logf(sum);
    }
    gemm(false, false, mi, hd_v, nk, 1.0f, S, ss, V, vs, 0.0f, out, os);
}

// the examples' first rows (seg[nseg] = N); *Tmax: the longest example
static int attention_segments(const int *kv_lo, int N, int *seg, int *Tmax) {
    int nseg = 0;
    for (int n = 0; n < N; n++)
        if (kv_lo[n] == n) seg[nseg++] = n;
    seg[nseg] = N;
    *Tmax = 0;
    for (int si = 0; si < nseg; si++) *Tmax = imax(*Tmax, seg[si + 1] - seg[si]);
    return nseg;
}

// row n, head h, against keys kv_lo[n] .. kv_hi[n] in blocks, the softmax online
static void row_forward(float *out, float *lse, const float *q, const float *k, const float *v, const int *kv_lo,
                        const int *kv_hi, int n, int h, int H, int Hkv, int hd_qk, int hd_v, float scale) {
    const int group = H / Hkv, qs = H * hd_qk, ks = Hkv * hd_qk, vs = Hkv * hd_v, os = H * hd_v;
    const float *qh = q + (size_t)n * qs + h * hd_qk;
    float *o = out + (size_t)n * os + h * hd_v;
    const int kh = h / group;
    float m = -INFINITY, l = 0;
    float acc[ATT_HD_V_MAX], sc[ATT_BLOCK];
    for (int i = 0; i < hd_v; i++) acc[i] = 0;
    for (int j0 = kv_lo[n]; j0 <= kv_hi[n]; j0 += ATT_BLOCK) {
        const int nb = imin(ATT_BLOCK, kv_hi[n] - j0 + 1);
        float bm = -INFINITY;
        for (int j = 0; j < nb; j++) {
            const float *kj = k + (size_t)(j0 + j) * ks + kh * hd_qk;
            float s = 0;
#pragma omp simd reduction(+ : s)
            for (int i = 0; i < hd_qk; i++) s += qh[i] * kj[i];
            sc[j] = s * scale;
            bm = sc[j] > bm ? sc[j] : bm;
        }
        if (bm > m) {   // rescale what we have to the new max
            float c = expf(m - bm);
            l *= c;
            for (int i = 0; i < hd_v; i++) acc[i] *= c;
            m = bm;
        }
        l += vec_exp_sum(sc, sc, m, nb);   // the block's probabilities, unnormalised
        for (int j = 0; j < nb; j++) {
            const float p = sc[j], *vj = v + (size_t)(j0 + j) * vs + kh * hd_v;
#pragma omp simd
            for (int i = 0; i < hd_v; i++) acc[i] += p * vj[i];
        }
    }
    float inv = 1.0f / l;
    for (int i = 0; i < hd_v; i++) o[i] = acc[i] * inv;
    if (lse) lse[(size_t)n * H + h] = m + logf(l);
}

// Rows of one sequence each seeing one key more than the last (a prompt's prefill) in runs
// of at least RUN_MIN go through tile_forward's GEMMs; the rest row by row.
#define RUN_MIN 16
void attention_forward(float *out, float *lse, const float *q, const float *k, const float *v,
                       const int *kv_lo, const int *kv_hi, int N, int H, int Hkv, int hd_qk, int hd_v,
                       float scale) {
    int *run = NULL, nrun = 0, Tmax = 0;   // run r: rows [run[2r], run[2r+1])
    unsigned char *tiled = NULL;
    if (N >= RUN_MIN) {
        run = MOE_NEW(int, N + 1);
        tiled = MOE_NEW(unsigned char, N);
        for (int n0 = 0, n1; n0 < N; n0 = n1) {
            for (n1 = n0 + 1; n1 < N && kv_lo[n1] == kv_lo[n0] && kv_hi[n1] == kv_hi[n1 - 1] + 1; n1++) {}
            if (n1 - n0 < RUN_MIN) continue;
            run[2 * nrun] = n0; run[2 * nrun + 1] = n1; nrun++;
            memset(tiled + n0, 1, (size_t)(n1 - n0));
            Tmax = imax(Tmax, kv_hi[n1 - 1] - kv_lo[n0] + 1);
        }
    }
    const int group = H / Hkv, qs = H * hd_qk, ks = Hkv * hd_qk, vs = Hkv * hd_v, os = H * hd_v;
#pragma omp parallel
    {
#pragma omp for collapse(2) schedule(dynamic, 8)
        for (int n = 0; n < N; n++)
            for (int h = 0; h < H; h++)
                if (!tiled || !tiled[n]) row_forward(out, lse, q, k, v, kv_lo, kv_hi, n, h, H, Hkv, hd_qk, hd_v, scale);
        if (nrun > 0) {
            float *S = MOE_NEW(float, (size_t)AT * Tmax);
#pragma omp for collapse(2) schedule(dynamic, 1)
            for (int r = 0; r < nrun; r++)
                for (int h = 0; h < H; h++) {
                    const int n0 = run[2 * r], T = run[2 * r + 1] - n0, lo = kv_lo[n0], kh = h / group;
                    const int c0 = kv_hi[n0] - lo + 1;   // the keys the run's first row sees
                    for (int i0 = 0; i0 < T; i0 += AT)
                        tile_forward(S, Tmax, q + (size_t)(n0 + i0) * qs + h * hd_qk, qs, k + (size_t)lo * ks + kh * hd_qk, ks,
                                     v + (size_t)lo * vs + kh * hd_v, vs, out + (size_t)(n0 + i0) * os + h * hd_v, os,
                                     lse ? lse + (size_t)(n0 + i0) * H + h : NULL, H, imin(AT, T - i0), c0 + i0, hd_qk, hd_v, scale);
                }
            moe_free(S);
        }
    }
    moe_free(run);
    moe_free(tiled);
}

void attention_forward_train(float *out, float *lse, const float *q, const float *k, const float *v,
                             const int *kv_lo, int N, int H, int Hkv, int hd_qk, int hd_v, float scale) {
    const int group = H / Hkv, qs = H * hd_qk, ks = Hkv * hd_qk, vs = Hkv * hd_v, os = H * hd_v;
    int *seg = MOE_NEW(int, N + 1);
    int Tmax;
    const int nseg = attention_segments(kv_lo, N, seg, &Tmax);
#pragma omp parallel
    {
        float *S = MOE_NEW(float, (size_t)AT * Tmax);
#pragma omp for collapse(2) schedule(dynamic, 1)
        for (int si = 0; si < nseg; si++)
            for (int h = 0; h < H; h++) {
                const int s0 = seg[si], T = seg[si + 1] - s0, kh = h / group;
                const float *Q = q + (size_t)s0 * qs + h * hd_qk, *K = k + (size_t)s0 * ks + kh * hd_qk,
                            *Vv = v + (size_t)s0 * vs + kh * hd_v;
                for (int i0 = 0; i0 < T; i0 += AT)   // row i0 + r sees keys 0 .. i0 + r
                    tile_forward(S, Tmax, Q + (size_t)i0 * qs, qs, K, ks, Vv, vs, out + (size_t)(s0 + i0) * os + h * hd_v, os,
                                 lse ? lse + (size_t)(s0 + i0) * H + h : NULL, H, imin(AT, T - i0), i0 + 1, hd_qk, hd_v, scale);
            }
        moe_free(S);
    }
    moe_free(seg);
}

// Backward by key tiles: for key tile j (AT keys) and all the query rows r >= j0 at once
// (lse known, so no online softmax: memory O(T AT) per thread, never T x T),
//   P = exp(S - lse), dV_j += P^T dO, dP = dO V_j^T, dS = P (dP - D) scale,
//   dQ += dS K_j, dK_j += dS^T Q, with D = rowsum(dO * O): five GEMMs per key tile, their
//   M the rows from j0 to the end (fewer, larger products than tile by tile).
void attention_backward_train(float *dq, float *dk, float *dv, const float *dout, const float *q,
                              const float *k, const float *v, const float *out, const float *lse,
                              const int *kv_lo, int N, int H, int Hkv, int hd_qk, int hd_v, float scale) {
    const int group = H / Hkv, qs = H * hd_qk, ks = Hkv * hd_qk, vs = Hkv * hd_v, os = H * hd_v;
    // no clearing first: the first product into each gradient block overwrites it (beta 0) —
    // dQ's at key tile 0, which reaches every query row; dK's and dV's at the group's first head
    int *seg = MOE_NEW(int, N + 1);
    int Tmax;
    const int nseg = attention_segments(kv_lo, N, seg, &Tmax);
#pragma omp parallel
    {
        float *P = MOE_NEW(float, (size_t)Tmax * AT), *dP = MOE_NEW(float, (size_t)Tmax * AT), *Dr = MOE_NEW(float, Tmax);
#pragma omp for collapse(2) schedule(dynamic, 1)
        for (int si = 0; si < nseg; si++)
            for (int kh = 0; kh < Hkv; kh++) {
                const int s0 = seg[si], T = seg[si + 1] - s0;
                const float *K = k + (size_t)s0 * ks + kh * hd_qk, *Vv = v + (size_t)s0 * vs + kh * hd_v;
                float *dK = dk + (size_t)s0 * ks + kh * hd_qk, *dV = dv + (size_t)s0 * vs + kh * hd_v;
                for (int h = kh * group; h < (kh + 1) * group; h++) {
                    const float *Q = q + (size_t)s0 * qs + h * hd_qk, *dO = dout + (size_t)s0 * os + h * hd_v,
                                *Ot = out + (size_t)s0 * os + h * hd_v, *Lr = lse + (size_t)s0 * H + h;
                    float *dQ = dq + (size_t)s0 * qs + h * hd_qk;
                    for (int r = 0; r < T; r++) {
                        float d = 0;
#pragma omp simd reduction(+ : d)
                        for (int i = 0; i < hd_v; i++) d += dO[(size_t)r * os + i] * Ot[(size_t)r * os + i];
                        Dr[r] = d;
                    }
                    const float bkv = h == kh * group ? 0.0f : 1.0f;
                    for (int j0 = 0; j0 < T; j0 += AT) {
                        const int nj = imin(AT, T - j0), mq = T - j0;   // query rows j0 .. T-1
                        const float bq = j0 == 0 ? 0.0f : 1.0f;
                        const float *Qj = Q + (size_t)j0 * qs, *dOj = dO + (size_t)j0 * os;
                        gemm(false, true, mq, nj, hd_qk, scale, Qj, qs, K + (size_t)j0 * ks, ks, 0.0f, P, AT);
                        for (int r = 0; r < mq; r++) {
                            const int cmax = imin(r + 1, nj);   // causal: key j0 + c <= query j0 + r
                            float *pr = P + (size_t)r * AT;
                            vec_exp_sum(pr, pr, Lr[(size_t)(j0 + r) * H], cmax);
                            for (int c = cmax; c < nj; c++) pr[c] = 0;
                        }
                        gemm(true, false, nj, hd_v, mq, 1.0f, P, AT, dOj, os, bkv, dV + (size_t)j0 * vs, vs);
                        gemm(false, true, mq, nj, hd_v, 1.0f, dOj, os, Vv + (size_t)j0 * vs, vs, 0.0f, dP, AT);
                        for (int r = 0; r < mq; r++) {
                            const float dr = Dr[j0 + r];
                            float *dpr = dP + (size_t)r * AT;
                            const float *pr = P + (size_t)r * AT;
#pragma omp simd
                            for (int c = 0; c < nj; c++) dpr[c] = pr[c] * (dpr[c] - dr) * scale;
                        }
                        gemm(false, false, mq, hd_qk, nj, 1.0f, dP, AT, K + (size_t)j0 * ks, ks, bq, dQ + (size_t)j0 * qs, qs);
                        gemm(true, false, nj, hd_qk, mq, 1.0f, dP, AT, Qj, qs, bkv, dK + (size_t)j0 * ks, ks);
                    }
                }
            }
        moe_free(P); moe_free(dP); moe_free(Dr);
    }
    moe_free(seg);
}
