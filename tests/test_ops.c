// Every op three ways: fast vs its _ref twin, and backward vs finite differences of a
// random projection of the forward output (loss = sum(out * R)). One PASS/FAIL line each.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../src/base/base.h"
#include "../src/kernels/gemm.h"
#include "../src/kernels/simd.h"
#include "../src/infer/infer.h"
#include "../src/model/schedule.h"
#include "../src/moe/moe.h"
#include "../src/ops/ops.h"
#include "../src/optim/optim.h"

static int n_pass, n_fail;
static Rng rng;

static void check(const char *name, double err, double tol) {
    bool ok = err <= tol && isfinite(err);
    printf("%s %s (err %.2e, tol %.0e)\n", ok ? "PASS" : "FAIL", name, err, tol);
    ok ? n_pass++ : n_fail++;
}
static float *rnd(size_t n, float scale) {
    float *p = MOE_NEW(float, n);
    for (size_t i = 0; i < n; i++) p[i] = scale * rng_normal(&rng);
    return p;
}
static float *copy(const float *x, size_t n) { float *p = MOE_NEW(float, n); memcpy(p, x, n * 4); return p; }
static double relerr(const float *a, const float *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) { num += (double)(a[i] - b[i]) * (a[i] - b[i]); den += (double)b[i] * b[i]; }
    return sqrt(num) / (sqrt(den) + 1e-30);
}
static double dot(const float *a, const float *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

// central differences on `npoints` coordinates of x: d/dx_i loss(x) vs grad[i]
typedef double (*LossFn)(void *ctx);
static double fd_h = 1e-2;
// For piecewise functions (routing): a signature of the discrete choices; a probe that
// changes them measures a jump, not a derivative, and is drawn again.
static long (*fd_signature)(void *ctx);
static double fd_check(float *x, const float *grad, size_t n, LossFn f, void *ctx, int npoints) {
    double num = 0, den = 0;
    long base = fd_signature ? (f(ctx), fd_signature(ctx)) : 0;
    int kept = 0, tries = 0;
    while (kept < npoints && tries < 20 * npoints) {
        tries++;
        size_t i = rng_below(&rng, n);
        float keep = x[i], h = (float)fd_h * fmaxf(1.0f, fabsf(keep));
        x[i] = keep + h; double lp = f(ctx);
        long sp = fd_signature ? fd_signature(ctx) : 0;
        x[i] = keep - h; double lm = f(ctx);
        long sm = fd_signature ? fd_signature(ctx) : 0;
        x[i] = keep;
        if (sp != base || sm != base) continue;
        kept++;
        double fd = (lp - lm) / (2 * h);
        num += (fd - grad[i]) * (fd - grad[i]);
        den += fd * fd;
    }
    // too few kept probes test nothing (none kept would be a 0/0 "error" of 0): fail, with
    // infinity rather than NaN, which fmax would drop when errors are combined
    if (2 * kept < npoints) {
        printf("  finite differences: %d of %d probes kept (%d drawn, the rest flipped a discrete choice); "
               "at least %d needed\n", kept, npoints, tries, (npoints + 1) / 2);
        return INFINITY;
    }
    return sqrt(num / (den + 1e-20));
}

static void test_gemm(void) {
    int M = 37, N = 29, K = 41;
    for (int t = 0; t < 4; t++) {
        bool ta = t & 1, tb = t & 2;
        float *A = rnd((size_t)M * K, 1), *B = rnd((size_t)K * N, 1), *C = rnd((size_t)M * N, 1);
        float *C2 = copy(C, (size_t)M * N);
        gemm(ta, tb, M, N, K, 0.7f, A, ta ? M : K, B, tb ? K : N, 0.3f, C, N);
        gemm_ref(ta, tb, M, N, K, 0.7f, A, ta ? M : K, B, tb ? K : N, 0.3f, C2, N);
        char nm[64]; snprintf(nm, sizeof nm, "gemm ta=%d tb=%d vs ref", ta, tb != 0);
        check(nm, relerr(C, C2, (size_t)M * N), 1e-5);
        moe_free(A); moe_free(B); moe_free(C); moe_free(C2);
    }
}

// ---------------- rmsnorm
typedef struct { int N, D; float *x, *w, *R, *out, *rstd; } RmsCtx;
static double rms_loss(void *p) {
    RmsCtx *c = p;
    rmsnorm_forward(c->out, c->rstd, c->x, c->w, c->N, c->D, 1e-5f);
    return dot(c->out, c->R, (size_t)c->N * c->D);
}
static void test_rmsnorm(void) {
    int N = 7, D = 48;
    RmsCtx c = {N, D, rnd(N * D, 1), rnd(D, 1), rnd(N * D, 1), MOE_NEW(float, N * D), MOE_NEW(float, N)};
    float *o2 = MOE_NEW(float, N * D), *r2 = MOE_NEW(float, N);
    rms_loss(&c);
    rmsnorm_forward_ref(o2, r2, c.x, c.w, N, D, 1e-5f);
    check("rmsnorm forward vs ref", relerr(c.out, o2, N * D), 1e-6);
    float *dx = MOE_NEW(float, N * D), *dw = MOE_NEW(float, D), *dx2 = MOE_NEW(float, N * D), *dw2 = MOE_NEW(float, D);
    rmsnorm_backward(dx, dw, c.R, c.x, c.w, c.rstd, N, D);
    rmsnorm_backward_ref(dx2, dw2, c.R, c.x, c.w, c.rstd, N, D);
    check("rmsnorm backward dx vs ref", relerr(dx, dx2, N * D), 1e-5);
    check("rmsnorm backward dw vs ref", relerr(dw, dw2, D), 1e-5);
    check("rmsnorm backward dx vs finite differences", fd_check(c.x, dx, N * D, rms_loss, &c, 40), 1e-2);
    check("rmsnorm backward dw vs finite differences", fd_check(c.w, dw, D, rms_loss, &c, 20), 1e-2);
}

// ---------------- rope
static void test_rope(void) {
    for (int il = 0; il < 2; il++) {   // rotate-half, then interleaved
    int N = 9, nh = 3, hd = 16;
    RopeTable t;
    rope_table_init(&t, 64, hd, 10000.0f, il);
    int pos[9] = {0, 1, 2, 3, 0, 1, 17, 40, 63};
    float *x = rnd(N * nh * hd, 1), *x2 = copy(x, N * nh * hd), *y = rnd(N * nh * hd, 1), *xc = copy(x, N * nh * hd);
    rope_forward(x, pos, &t, N, nh, hd);
    rope_forward_ref(x2, pos, N, nh, hd, 10000.0f, il);
    check(il ? "rope interleaved forward vs ref" : "rope forward vs ref", relerr(x, x2, N * nh * hd), 1e-5);
    // the backward pass is the transpose: <R x, y> = <x, R^T y>
    float *yb = copy(y, N * nh * hd);
    rope_backward(yb, pos, &t, N, nh, hd);
    double l = dot(x, y, N * nh * hd), r = dot(xc, yb, N * nh * hd);
    check(il ? "rope interleaved backward is the adjoint of forward" : "rope backward is the adjoint of forward", fabs(l - r) / fabs(l), 1e-5);
    // on the rotated part of each head only (MLA's q: [nope | rope] per head)
    const int stride = hd + 6;
    float *z = rnd(N * nh * stride, 3), *z2 = copy(z, N * nh * stride), *zr = MOE_NEW(float, N * nh * hd);
    rope_forward_part(z, pos, &t, N, nh, stride, 6);
    for (int i = 0; i < N * nh; i++) memcpy(zr + (size_t)i * hd, z2 + (size_t)i * stride + 6, sizeof(float) * hd);
    rope_forward_ref(zr, pos, N, nh, hd, 10000.0f, il);
    double e = 0;
    for (int i = 0; i < N * nh; i++) {
        e = fmax(e, relerr(z + (size_t)i * stride + 6, zr + (size_t)i * hd, hd));
        e = fmax(e, relerr(z + (size_t)i * stride, z2 + (size_t)i * stride, 6));   // the rest untouched
    }
    check(il ? "rope interleaved on each head's part vs ref" : "rope on each head's part vs ref", e, 1e-5);
    rope_table_free(&t);
    }
}

// ---------------- attention
// q, k [.., heads*hd_qk]; v, out [.., heads*hd_v]; ref: the loss through attention_forward_ref
typedef struct { int N, H, Hkv, hd_qk, hd_v; float scale; bool ref; int *lo, *hi; float *q, *k, *v, *R, *out, *lse; } AttCtx;
static double att_loss(void *p) {
    AttCtx *c = p;
    (c->ref ? attention_forward_ref : attention_forward)(c->out, c->lse, c->q, c->k, c->v, c->lo, c->hi, c->N, c->H,
                                                         c->Hkv, c->hd_qk, c->hd_v, c->scale);
    return dot(c->out, c->R, (size_t)c->N * c->H * c->hd_v);
}
static void test_attention(void) {
    // three examples of lengths 5, 1, 7 packed end to end; GQA 4 query heads on 2 kv heads
    int N = 13, H = 4, Hkv = 2, hd = 8, lens[3] = {5, 1, 7};
    int lo[13], hi[13], n = 0;
    for (int s = 0, start = 0; s < 3; start += lens[s], s++)
        for (int i = 0; i < lens[s]; i++, n++) { lo[n] = start; hi[n] = n; }
    size_t nq = (size_t)N * H * hd, nk = (size_t)N * Hkv * hd;
    const float scale = 1.0f / sqrtf((float)hd);
    AttCtx c = {N, H, Hkv, hd, hd, scale, false, lo, hi, rnd(nq, 1), rnd(nk, 1), rnd(nk, 1), rnd(nq, 1),
                MOE_NEW(float, nq), MOE_NEW(float, N * H)};
    float *o2 = MOE_NEW(float, nq), *l2 = MOE_NEW(float, N * H);
    att_loss(&c);
    attention_forward_ref(o2, l2, c.q, c.k, c.v, lo, hi, N, H, Hkv, hd, hd, scale);
    check("attention forward vs ref", relerr(c.out, o2, nq), 1e-5);
    check("attention lse vs ref", relerr(c.lse, l2, N * H), 1e-5);
    float *dq = MOE_NEW(float, nq), *dk = MOE_NEW(float, nk), *dv = MOE_NEW(float, nk);
    float *dq2 = MOE_NEW(float, nq), *dk2 = MOE_NEW(float, nk), *dv2 = MOE_NEW(float, nk);
    attention_backward_train(dq, dk, dv, c.R, c.q, c.k, c.v, c.out, c.lse, lo, N, H, Hkv, hd, hd, scale);
    attention_backward_ref(dq2, dk2, dv2, c.R, c.q, c.k, c.v, lo, N, H, Hkv, hd, hd, scale);
    check("attention backward dq vs ref", relerr(dq, dq2, nq), 1e-5);
    check("attention backward dk vs ref", relerr(dk, dk2, nk), 1e-5);
    check("attention backward dv vs ref", relerr(dv, dv2, nk), 1e-5);
    check("attention backward dq vs finite differences", fd_check(c.q, dq, nq, att_loss, &c, 40), 1e-2);
    check("attention backward dk vs finite differences", fd_check(c.k, dk, nk, att_loss, &c, 40), 1e-2);
    check("attention backward dv vs finite differences", fd_check(c.v, dv, nk, att_loss, &c, 40), 1e-2);
    // examples never see each other: changing example 0 leaves example 2's output alone
    att_loss(&c);   // fd_check leaves the output of its last probe behind
    float *save = copy(c.out, nq);
    for (int i = 0; i < 5 * Hkv * hd; i++) c.v[i] += 1.0f;
    att_loss(&c);
    check("attention keeps examples apart", relerr(c.out + 6 * H * hd, save + 6 * H * hd, 7 * H * hd), 0);
}

// the tiled training kernels, with examples longer than one 64-wide tile
static void test_attention_tiled(void) {
    const int H = 4, Hkv = 2, hd = 16, lens[4] = {70, 1, 130, 64};
    int N = 0;
    for (int s = 0; s < 4; s++) N += lens[s];
    int *lo = MOE_NEW(int, N), *hi = MOE_NEW(int, N), n = 0;
    for (int s = 0, start = 0; s < 4; start += lens[s], s++)
        for (int i = 0; i < lens[s]; i++, n++) { lo[n] = start; hi[n] = n; }
    size_t nq = (size_t)N * H * hd, nk = (size_t)N * Hkv * hd;
    float *q = rnd(nq, 1), *k = rnd(nk, 1), *v = rnd(nk, 1), *R = rnd(nq, 1);
    float *o1 = MOE_NEW(float, nq), *l1 = MOE_NEW(float, N * H), *o2 = MOE_NEW(float, nq), *l2 = MOE_NEW(float, N * H);
    const float scale = 1.0f / sqrtf((float)hd);
    attention_forward_train(o1, l1, q, k, v, lo, N, H, Hkv, hd, hd, scale);
    attention_forward_ref(o2, l2, q, k, v, lo, hi, N, H, Hkv, hd, hd, scale);
    check("tiled attention forward vs ref (examples of 70, 1, 130, 64)", relerr(o1, o2, nq), 1e-5);
    check("tiled attention lse vs ref", relerr(l1, l2, N * H), 1e-5);
    float *dq = MOE_NEW(float, nq), *dk = MOE_NEW(float, nk), *dv = MOE_NEW(float, nk);
    float *dq2 = MOE_NEW(float, nq), *dk2 = MOE_NEW(float, nk), *dv2 = MOE_NEW(float, nk);
    for (size_t i = 0; i < nq; i++) dq[i] = NAN;   // the kernel overwrites: nothing it skips may survive
    for (size_t i = 0; i < nk; i++) dk[i] = dv[i] = NAN;
    attention_backward_train(dq, dk, dv, R, q, k, v, o1, l1, lo, N, H, Hkv, hd, hd, scale);
    attention_backward_ref(dq2, dk2, dv2, R, q, k, v, lo, N, H, Hkv, hd, hd, scale);
    check("tiled attention backward dq vs ref", relerr(dq, dq2, nq), 1e-5);
    check("tiled attention backward dk vs ref", relerr(dk, dk2, nk), 1e-5);
    check("tiled attention backward dv vs ref", relerr(dv, dv2, nk), 1e-5);
}

// MLA's shapes: a query/key head dim (24) other than the value head dim (16), and a scale of
// the caller's (1/sqrt(hd_qk) times a yarn-like mscale^2), one kv head for all four query
// heads and one each. Packed examples through every kernel against the refs, and the refs'
// backward against finite differences of the ref forward.
static void att_check_packed(const int *lens, int n_ex, int H, int Hkv, int hd_qk, int hd_v, float scale, bool fd) {
    int N = 0;
    for (int s = 0; s < n_ex; s++) N += lens[s];
    int *lo = MOE_NEW(int, N), *hi = MOE_NEW(int, N), n = 0;
    for (int s = 0, start = 0; s < n_ex; start += lens[s], s++)
        for (int i = 0; i < lens[s]; i++, n++) { lo[n] = start; hi[n] = n; }
    char tag[96], nm[192];
    int w = snprintf(tag, sizeof tag, "hd_qk %d hd_v %d H %d Hkv %d, examples", hd_qk, hd_v, H, Hkv);
    for (int s = 0; s < n_ex && w < (int)sizeof tag; s++) w += snprintf(tag + w, sizeof tag - w, " %d", lens[s]);
    const size_t nq = (size_t)N * H * hd_qk, nk = (size_t)N * Hkv * hd_qk, nv = (size_t)N * Hkv * hd_v, no = (size_t)N * H * hd_v;
    AttCtx c = {N, H, Hkv, hd_qk, hd_v, scale, true, lo, hi, rnd(nq, 1), rnd(nk, 1), rnd(nv, 1), rnd(no, 1),
                MOE_NEW(float, no), MOE_NEW(float, N * H)};
    float *o1 = MOE_NEW(float, no), *l1 = MOE_NEW(float, N * H);
    att_loss(&c);   // c.out, c.lse: the ref's
    attention_forward(o1, l1, c.q, c.k, c.v, lo, hi, N, H, Hkv, hd_qk, hd_v, scale);
    snprintf(nm, sizeof nm, "attention forward vs ref (%s): out, lse", tag);
    check(nm, fmax(relerr(o1, c.out, no), relerr(l1, c.lse, N * H)), 1e-5);
    attention_forward_train(o1, l1, c.q, c.k, c.v, lo, N, H, Hkv, hd_qk, hd_v, scale);
    snprintf(nm, sizeof nm, "tiled attention forward vs ref (%s): out, lse", tag);
    check(nm, fmax(relerr(o1, c.out, no), relerr(l1, c.lse, N * H)), 1e-5);
    float *dq = MOE_NEW(float, nq), *dk = MOE_NEW(float, nk), *dv = MOE_NEW(float, nv);
    float *dq2 = MOE_NEW(float, nq), *dk2 = MOE_NEW(float, nk), *dv2 = MOE_NEW(float, nv);
    for (size_t i = 0; i < nq; i++) dq[i] = NAN;   // overwritten: nothing it skips may survive
    for (size_t i = 0; i < nk; i++) dk[i] = NAN;
    for (size_t i = 0; i < nv; i++) dv[i] = NAN;
    attention_backward_train(dq, dk, dv, c.R, c.q, c.k, c.v, o1, l1, lo, N, H, Hkv, hd_qk, hd_v, scale);
    attention_backward_ref(dq2, dk2, dv2, c.R, c.q, c.k, c.v, lo, N, H, Hkv, hd_qk, hd_v, scale);
    const char *gname[3] = {"dq", "dk", "dv"};
    float *g[3] = {dq, dk, dv}, *g2[3] = {dq2, dk2, dv2}, *x[3] = {c.q, c.k, c.v};
    const size_t gn[3] = {nq, nk, nv};
    for (int i = 0; i < 3; i++) {
        snprintf(nm, sizeof nm, "tiled attention backward %s vs ref (%s)", gname[i], tag);
        check(nm, relerr(g[i], g2[i], gn[i]), 1e-5);
    }
    for (int i = 0; i < 3 && fd; i++) {
        snprintf(nm, sizeof nm, "attention backward ref %s vs finite differences (%s)", gname[i], tag);
        check(nm, fd_check(x[i], g2[i], gn[i], att_loss, &c, 40), 1e-2);
    }
    moe_free(lo); moe_free(hi); moe_free(c.q); moe_free(c.k); moe_free(c.v); moe_free(c.R); moe_free(c.out);
    moe_free(c.lse); moe_free(o1); moe_free(l1);
    for (int i = 0; i < 3; i++) { moe_free(g[i]); moe_free(g2[i]); }
}

// queries against a KV cache of S slots, row n reading keys kv_lo[n] .. kv_hi[n]: the fast
// kernel against the reference
static void att_vs_ref_cache(const char *what, const int *lo, const int *hi, int N, int S, int H, int Hkv, int hd_qk, int hd_v,
                             float scale) {
    const size_t nq = (size_t)N * H * hd_qk, nk = (size_t)S * Hkv * hd_qk, nv = (size_t)S * Hkv * hd_v, no = (size_t)N * H * hd_v;
    float *q = rnd(nq, 1), *k = rnd(nk, 1), *v = rnd(nv, 1);
    float *o1 = MOE_NEW(float, no), *l1 = MOE_NEW(float, N * H), *o2 = MOE_NEW(float, no), *l2 = MOE_NEW(float, N * H);
    attention_forward(o1, l1, q, k, v, lo, hi, N, H, Hkv, hd_qk, hd_v, scale);
    attention_forward_ref(o2, l2, q, k, v, lo, hi, N, H, Hkv, hd_qk, hd_v, scale);
    char nm[200];
    snprintf(nm, sizeof nm, "attention forward, %s, vs ref (hd_qk %d hd_v %d H %d Hkv %d, %d slots): out, lse", what, hd_qk, hd_v, H, Hkv, S);
    check(nm, fmax(relerr(o1, o2, no), relerr(l1, l2, N * H)), 1e-5);
    moe_free(q); moe_free(k); moe_free(v); moe_free(o1); moe_free(l1); moe_free(o2); moe_free(l2);
}

// the inference form: each query its own window (one key, a whole cache, windows wider than
// one 64-key block); then prefill rows (each seeing one key more than the last) in runs long
// enough for the tiled path: one from its sequence's first slot, one continuing at slot 50
// of a sequence that starts at 30 (its first row sees 21 keys), 100 rows across two 64-row
// tiles; between them a lone row and a short run, row by row
static void att_check_cache(int H, int Hkv, int hd_qk, int hd_v, float scale) {
    const int lo[6] = {0, 10, 3, 50, 0, 20}, hi[6] = {149, 10, 70, 90, 0, 149};
    att_vs_ref_cache("over a KV cache, windows kv_lo..kv_hi", lo, hi, 6, 150, H, Hkv, hd_qk, hd_v, scale);
    enum { N = 40 + 1 + 5 + 100 };
    int plo[N], phi[N], n = 0;
    for (int i = 0; i < 40; i++, n++) { plo[n] = 0; phi[n] = i; }
    plo[n] = 100; phi[n] = 120; n++;
    for (int i = 0; i < 5; i++, n++) { plo[n] = 130; phi[n] = 130 + i; }
    for (int i = 0; i < 100; i++, n++) { plo[n] = 30; phi[n] = 50 + i; }
    att_vs_ref_cache("prefill runs of 40 and 100 over a KV cache, one from slot 50", plo, phi, N, 300, H, Hkv, hd_qk, hd_v, scale);
}

static void test_attention_qk_v_dims(void) {
    const int H = 4, hd_qk = 24, hd_v = 16, short_lens[4] = {5, 1, 9, 3}, long_lens[3] = {70, 1, 130};
    const float scale = 1.3f * 1.3f / sqrtf((float)hd_qk);
    for (int Hkv = 1; Hkv <= H; Hkv *= 4) {
        att_check_packed(short_lens, 4, H, Hkv, hd_qk, hd_v, scale, true);
        att_check_packed(long_lens, 3, H, Hkv, hd_qk, hd_v, scale, false);
        att_check_cache(H, Hkv, hd_qk, hd_v, scale);
    }
}

// MLA's absorbed form (inference): fast vs its ref, and vs the expanded form (each cached
// latent through kv_b into per-head keys [k_nope | kr] and values, then attention)
static void test_mla_absorbed(void) {
    enum { S = 150, N = 6, H = 4, nope = 8, rope = 4, vd = 12, kvr = 16 };
    const int qk = nope + rope, w = nope + vd, cw = kvr + rope;
    int lo[N] = {0, 10, 3, 50, 0, 20}, hi[N] = {149, 10, 70, 90, 0, 149};
    const float scale = 1.0f / sqrtf((float)qk);
    float *q = rnd((size_t)N * H * qk, 1), *cache = rnd((size_t)S * cw, 1), *W = rnd((size_t)H * w * kvr, 0.3f);
    const size_t no = (size_t)N * H * vd;
    float *o1 = MOE_NEW(float, no), *l1 = MOE_NEW(float, N * H), *o2 = MOE_NEW(float, no), *l2 = MOE_NEW(float, N * H),
          *o3 = MOE_NEW(float, no), *l3 = MOE_NEW(float, N * H);
    mla_attention_absorbed(o1, l1, q, cache, W, lo, hi, N, H, nope, rope, vd, kvr, scale);
    mla_attention_absorbed_ref(o2, l2, q, cache, W, lo, hi, N, H, nope, rope, vd, kvr, scale);
    check("MLA absorbed attention vs ref (150 slots, windows kv_lo..kv_hi): out, lse", fmax(relerr(o1, o2, no), relerr(l1, l2, N * H)), 1e-5);
    // the expanded form: kvb = c Wkvb^T, k_h = [kvb_h nope part | kr], v_h = kvb_h v part
    float *kvb = MOE_NEW(float, (size_t)S * H * w), *K = MOE_NEW(float, (size_t)S * H * qk), *V = MOE_NEW(float, (size_t)S * H * vd);
    gemm_ref(false, true, S, H * w, kvr, 1.0f, cache, cw, W, kvr, 0.0f, kvb, H * w);
    for (int s = 0; s < S; s++)
        for (int h = 0; h < H; h++) {
            memcpy(K + ((size_t)s * H + h) * qk, kvb + ((size_t)s * H + h) * w, sizeof(float) * nope);
            memcpy(K + ((size_t)s * H + h) * qk + nope, cache + (size_t)s * cw + kvr, sizeof(float) * rope);
            memcpy(V + ((size_t)s * H + h) * vd, kvb + ((size_t)s * H + h) * w + nope, sizeof(float) * vd);
        }
    attention_forward_ref(o3, l3, q, K, V, lo, hi, N, H, H, qk, vd, scale);
    check("MLA absorbed attention vs the expanded keys and values: out, lse", fmax(relerr(o1, o3, no), relerr(l1, l3, N * H)), 1e-5);
    moe_free(q); moe_free(cache); moe_free(W); moe_free(o1); moe_free(l1); moe_free(o2); moe_free(l2); moe_free(o3);
    moe_free(l3); moe_free(kvb); moe_free(K); moe_free(V);
}

// ---------------- swiglu, xent, embed
typedef struct { int N, F; float *gu, *R, *a; } SwCtx;   // gu [N, 2F]: gate | up
static double sw_loss(void *p) { SwCtx *c = p; swiglu_rows_forward(c->a, c->gu, c->N, c->F); return dot(c->a, c->R, (size_t)c->N * c->F); }
typedef struct { int N, V; float *z, *work; int *t; } XeCtx;
static double xe_loss(void *p) {
    XeCtx *c = p;
    memcpy(c->work, c->z, sizeof(float) * c->N * c->V);
    double s = 0;
    xent_forward_backward(c->work, c->t, c->N, c->V, 0, &s);
    return s;
}
static void test_small_ops(void) {
    const int SN = 10, SF = 30;
    const long n = (long)SN * SF;
    SwCtx s = {SN, SF, rnd(2 * n, 2), rnd(n, 1), MOE_NEW(float, n)};
    float *a2 = MOE_NEW(float, n), *dgu = MOE_NEW(float, 2 * n), *dgu2 = MOE_NEW(float, 2 * n);
    sw_loss(&s);
    for (int r = 0; r < SN; r++) swiglu_forward_ref(a2 + r * SF, s.gu + 2 * r * SF, s.gu + 2 * r * SF + SF, SF);
    check("swiglu forward vs ref", relerr(s.a, a2, n), 1e-6);
    swiglu_rows_backward(dgu, s.R, s.gu, SN, SF);
    for (int r = 0; r < SN; r++)
        swiglu_backward_ref(dgu2 + 2 * r * SF, dgu2 + 2 * r * SF + SF, s.R + r * SF, s.gu + 2 * r * SF, s.gu + 2 * r * SF + SF, SF);
    check("swiglu backward vs ref", relerr(dgu, dgu2, 2 * n), 1e-5);
    check("swiglu backward vs finite differences", fd_check(s.gu, dgu, 2 * n, sw_loss, &s, 60), 1e-2);

    int N = 6, V = 40;
    int t[6] = {0, 5, 39, 7, 7, 12};
    XeCtx x = {N, V, rnd(N * V, 3), MOE_NEW(float, N * V), t};
    float *d = copy(x.z, N * V), *d2 = MOE_NEW(float, N * V);
    double l1 = 0, l2 = 0;
    xent_forward_backward(d, t, N, V, 1.0f, &l1);
    xent_ref(d2, x.z, t, N, V, 1.0f, &l2);
    check("softmax cross-entropy loss vs ref", fabs(l1 - l2) / l2, 1e-6);
    check("softmax cross-entropy dlogits vs ref", relerr(d, d2, N * V), 1e-5);
    check("softmax cross-entropy vs finite differences", fd_check(x.z, d, N * V, xe_loss, &x, 40), 1e-2);

    int D = 8, toks[5] = {3, 1, 3, 0, 2};
    float *dout = rnd(5 * D, 1), *dt = MOE_NEW(float, 4 * D), *dt2 = MOE_NEW(float, 4 * D), *tab = rnd(4 * D, 1), *o = MOE_NEW(float, 5 * D);
    embed_backward(dt, dout, toks, 5, D);
    embed_backward_ref(dt2, dout, toks, 5, D);
    embed_forward(o, toks, tab, 5, D);
    check("embedding backward vs ref (repeated ids)", relerr(dt, dt2, 4 * D), 0);
    check("embedding forward picks rows", relerr(o + 2 * D, tab + 3 * D, D), 0);
}

// ---------------- MoE: selection, grouped experts, their backward
typedef struct { MoeConfig c; MoeActs a; MoeWork w; float *xn, *R, *out; MoeWeights W; float *bias; int N; } MoeCtx;
static long moe_signature(void *p) {
    MoeCtx *m = p;
    long h = 1469598103;
    for (int i = 0; i < m->N * m->c.num_experts_per_tok; i++) h = h * 1099511 + m->a.sel[i] * 7 + (m->a.row[i] >= 0);
    return h;
}
static double moe_loss(void *p) {
    MoeCtx *m = p;
    moe_router_forward(&m->c, &m->a, m->xn, &m->W, m->bias, m->N);
    moe_dispatch(&m->c, &m->a, true);
    memset(m->out, 0, sizeof(float) * m->N * m->c.hidden_size);
    moe_experts_forward(&m->a, m->xn, &m->W, m->out);
    return dot(m->out, m->R, (size_t)m->N * m->c.hidden_size);
}
static void test_moe(void) {
    const char *names[] = {"greedy", "group_limited", "moge"};
    for (int method = 0; method < 3; method++) {
        MoeConfig c;
        config_defaults(&c);
        c.n_routed_experts = 16; c.num_experts_per_tok = 4; c.topk_method = method;
        c.n_group = 4; c.topk_group = 2;
        int N = 200, E = 16, K = 4;
        float *s = MOE_NEW(float, N * E), *bias = rnd(E, 0.05f);
        for (int i = 0; i < N * E; i++) s[i] = (float)rng_below(&rng, 8) / 8;   // many exact ties
        int *sel = MOE_NEW(int, N * K);
        MoeActs a;
        // the router's selection against the sorted reference: sigmoid scores from
        // logits = logit(s) through an identity router, so that the scores have many ties
        c.scoring_func = MOE_SCORE_SIGMOID;
        c.hidden_size = E;
        float *eye = MOE_NEW(float, E * E), *xl = MOE_NEW(float, N * E);
        for (int e = 0; e < E; e++) eye[e * E + e] = 1;
        for (int i = 0; i < N * E; i++) { float p = 0.05f + 0.9f * s[i]; xl[i] = logf(p / (1 - p)); }
        moe_acts_alloc(&a, N, E, K, E, 4, 0);
        MoeWeights mw = {eye, NULL, NULL};
        moe_router_forward(&c, &a, xl, &mw, bias, N);
        float *sref = MOE_NEW(float, N * E);
        memcpy(sref, a.scores, sizeof(float) * N * E);
        moe_topk_ref(&c, sref, bias, N, sel);
        int bad = 0;
        for (int n = 0; n < N; n++) {   // same set (order within a token does not matter)
            for (int k = 0; k < K; k++) {
                int found = 0;
                for (int j = 0; j < K; j++) found |= a.sel[n * K + j] == sel[n * K + k];
                bad += !found;
            }
        }
        char nm[96]; snprintf(nm, sizeof nm, "top-k %s vs ref (with ties and bias)", names[method]);
        check(nm, bad, 0);
        if (method == 2) {   // moge: every group gets exactly K/G of each token
            int worst = 0;
            for (int n = 0; n < N; n++) {
                int cnt[4] = {0};
                for (int k = 0; k < K; k++) cnt[a.sel[n * K + k] / 4]++;
                for (int g = 0; g < 4; g++) worst = imax(worst, abs(cnt[g] - 1));
            }
            check("moge: every group gets K/n_group per token", worst, 0);
        }
        moe_acts_free(&a);
        moe_free(s); moe_free(bias); moe_free(sel); moe_free(eye); moe_free(xl); moe_free(sref);
    }
    // grouped experts forward vs the token-by-token reference, and backward vs FD
    for (int cap = 0; cap < 2; cap++) {
        MoeCtx m;
        config_defaults(&m.c);
        int N = 23, D = 12, F = 10, E = 6, K = 2;
        m.c.hidden_size = D; m.c.n_routed_experts = E; m.c.num_experts_per_tok = K; m.c.moe_intermediate_size = F;
        m.c.capacity_factor = cap ? 0.8f : 0;
        m.N = N;
        moe_acts_alloc(&m.a, N, E, K, D, F, 0);
        moe_work_alloc(&m.w, N, E, K, D, F, true);
        m.xn = rnd(N * D, 1); m.R = rnd(N * D, 1); m.out = MOE_NEW(float, N * D); m.bias = MOE_NEW(float, E);
        float *router = rnd(E * D, 0.5f), *g = rnd(E * 2 * F * D, 0.3f), *dn = rnd(E * D * F, 0.3f);
        m.W = (MoeWeights){router, g, dn};
        moe_loss(&m);
        float *o2 = MOE_NEW(float, N * D);
        moe_experts_forward_ref(&m.a, m.xn, &m.W, o2);
        char nm[128];
        snprintf(nm, sizeof nm, "grouped experts forward vs ref%s (%d dropped)", cap ? " with capacity" : "", m.a.dropped);
        check(nm, relerr(m.out, o2, N * D), 1e-5);
        float *dx = MOE_NEW(float, N * D), *dr = MOE_NEW(float, E * D), *dg = MOE_NEW(float, E * 2 * F * D),
              *dd = MOE_NEW(float, E * D * F);
        MoeGrads G = {dr, dg, dd, false};
        moe_experts_backward(&m.a, &m.w, m.R, &m.W, &G, dx, true);
        moe_weights_backward(&m.c, &m.a, &m.w);
        moe_router_backward(&m.c, &m.a, &m.w, m.xn, &m.W, &G, dx);
        {   // the backward pass without ye (full recomputation) gives the same gradients
            float *dx2 = MOE_NEW(float, N * D), *dr2 = MOE_NEW(float, E * D), *dg2 = MOE_NEW(float, E * 2 * F * D),
                  *dd2 = MOE_NEW(float, E * D * F), *dw1 = copy(m.w.dw, N * K);
            for (int i = 0; i < E * D; i++) dr2[i] = NAN;   // and written over (set), not added to
            for (int i = 0; i < E * 2 * F * D; i++) dg2[i] = NAN;
            for (int i = 0; i < E * D * F; i++) dd2[i] = NAN;
            MoeGrads G2 = {dr2, dg2, dd2, true};
            moe_experts_backward(&m.a, &m.w, m.R, &m.W, &G2, dx2, false);
            double e = relerr(m.w.dw, dw1, N * K);
            moe_weights_backward(&m.c, &m.a, &m.w);
            moe_router_backward(&m.c, &m.a, &m.w, m.xn, &m.W, &G2, dx2);
            e = fmax(e, fmax(fmax(relerr(dx2, dx, N * D), relerr(dr2, dr, E * D)), fmax(relerr(dg2, dg, E * 2 * F * D), relerr(dd2, dd, E * D * F))));
            snprintf(nm, sizeof nm, "MoE backward without the experts' outputs, overwriting the gradients = with them, adding%s", cap ? ", capacity" : "");
            check(nm, e, 1e-5);
            moe_free(dx2); moe_free(dr2); moe_free(dg2); moe_free(dd2); moe_free(dw1);
        }
        // finite differences hold while no perturbation flips a selection: small steps
        snprintf(nm, sizeof nm, "MoE backward (experts, weights, router) vs finite differences%s", cap ? ", capacity" : "");
        fd_h = 2e-3;
        fd_signature = moe_signature;
        double e1 = fd_check(g, dg, E * 2 * F * D, moe_loss, &m, 30), e2 = fd_check(dn, dd, E * D * F, moe_loss, &m, 30),
               e3 = fd_check(router, dr, E * D, moe_loss, &m, 30), e4 = fd_check(m.xn, dx, N * D, moe_loss, &m, 30);
        fd_h = 1e-2;
        fd_signature = NULL;
        moe_loss(&m);
        double e = fmax(fmax(e1, e2), fmax(e3, e4));
        if (e > 4e-2) printf("  experts gate/up %.2e down %.2e router %.2e input %.2e\n", e1, e2, e3, e4);
        check(nm, e, 4e-2);
        moe_acts_free(&m.a); moe_work_free(&m.w);
    }
}

// vector kernels against their scalar twins, at awkward lengths (tails)
static void test_simd(void) {
    char nm[96];
    int n = 1003;
    float *x = rnd(n, 8), *y = MOE_NEW(float, n), *y2 = MOE_NEW(float, n);
    float s1 = vec_exp_sum(y, x, 3.0f, n), s2 = vec_exp_sum_ref(y2, x, 3.0f, n);
    snprintf(nm, sizeof nm, "vec_exp_sum (%s) vs ref", simd_level());
    check(nm, relerr(y, y2, n) + fabs(s1 - s2) / s2, 1e-6);
    float *g = rnd(n, 3), *u = rnd(n, 1), *a = MOE_NEW(float, n), *a2 = MOE_NEW(float, n);
    vec_swiglu(a, g, u, n);
    swiglu_forward_ref(a2, g, u, n);
    snprintf(nm, sizeof nm, "vec_swiglu (%s) vs ref", simd_level());
    check(nm, relerr(a, a2, n), 1e-6);
    float *da = rnd(n, 1), *dg = MOE_NEW(float, n), *du = MOE_NEW(float, n), *dg2 = MOE_NEW(float, n), *du2 = MOE_NEW(float, n);
    vec_swiglu_backward(dg, du, da, g, u, n);
    swiglu_backward_ref(dg2, du2, da, g, u, n);
    snprintf(nm, sizeof nm, "vec_swiglu_backward (%s) vs ref", simd_level());
    check(nm, relerr(dg, dg2, n) + relerr(du, du2, n), 1e-6);
    // in place (dg over g, du over u), as the model's backward pass runs it, at every level
    float *G = MOE_NEW(float, n), *U = MOE_NEW(float, n);
    for (int lv = simd_cap(2); lv >= 0; lv--) {
        simd_cap(lv);
        memcpy(G, g, sizeof(float) * n); memcpy(U, u, sizeof(float) * n);
        vec_swiglu_backward(G, U, da, G, U, n);
        float e1 = relerr(G, dg2, n) + relerr(U, du2, n);
        vec_swiglu(a, g, u, n);
        float s3 = vec_exp_sum(y, x, 3.0f, n);
        snprintf(nm, sizeof nm, "vec_swiglu_backward in place, vec_swiglu, vec_exp_sum (%s) vs ref", simd_level());
        // each against the tolerance the checks above give it alone (their sum reached 1.07e-6
        // with every term below 4e-7)
        check(nm, fmax(fmax(e1 / 2, relerr(a, a2, n)), relerr(y, y2, n) + fabs(s3 - s2) / s2), 1e-6);
    }
    simd_cap(2);
    moe_free(G); moe_free(U);
    float *p1 = rnd(n, 1), *p2 = MOE_NEW(float, n), *m1 = rnd(n, 1), *m2 = MOE_NEW(float, n),
          *v1 = rnd(n, 1), *v2 = MOE_NEW(float, n);
    for (int i = 0; i < n; i++) v1[i] = v1[i] * v1[i];
    memcpy(p2, p1, sizeof(float) * n); memcpy(m2, m1, sizeof(float) * n); memcpy(v2, v1, sizeof(float) * n);
    const AdamWArgs aa = {0.7f, 0.9f, 0.95f, 1e-2f, 1.3f, 1e-8f, 0.999f};
    vec_adamw(p1, g, m1, v1, n, &aa);
    vec_adamw_ref(p2, g, m2, v2, n, &aa);
    snprintf(nm, sizeof nm, "vec_adamw (%s) vs ref", simd_level());
    check(nm, relerr(p1, p2, n) + relerr(m1, m2, n) + relerr(v1, v2, n), 1e-6);
    double es = 0;   // lengths that leave every kind of tail (the kernel reads x in quarters)
    for (int ln = 1; ln <= n; ln = ln < 40 ? ln + 1 : ln * 3 + 1)
        es = fmax(es, fabs(vec_sumsq(g, ln) - vec_sumsq_ref(g, ln)) / vec_sumsq_ref(g, ln));
    snprintf(nm, sizeof nm, "vec_sumsq (%s) vs ref, lengths 1 .. %d", simd_level(), n);
    check(nm, es, 1e-12);
    // bf16 packing: random values, ties to even, infinities, NaNs, denormals and zeros
    float *f = rnd(n, 100), *f1 = MOE_NEW(float, n), *f2 = MOE_NEW(float, n);
    const uint32_t special[] = {0x3f808000u, 0x3f818000u, 0x7f800000u, 0xff800000u, 0x7fc00000u, 0x7f800001u,
                                0xff812345u, 0x00000001u, 0x807fffffu, 0x00000000u, 0x80000000u, 0x7f7fffffu};
    for (int i = 0; i < 12; i++) memcpy(&f[7 * i + 3], &special[i], 4);
    uint16_t *h1 = MOE_NEW(uint16_t, n), *h2 = MOE_NEW(uint16_t, n);
    int bad16 = 0;   // from aligned starts (streaming stores) and from starts off a vector boundary
    for (int off = 0; off < 4; off++) {
        vec_to_bf16(h1 + off, f + off, n - off);
        vec_to_bf16_ref(h2 + off, f + off, n - off);
        vec_from_bf16(f1 + off, h1 + off, n - off);
        vec_from_bf16_ref(f2 + off, h2 + off, n - off);
        bad16 += memcmp(h1, h2, sizeof(uint16_t) * n) || memcmp(f1, f2, sizeof(float) * n);
    }
    snprintf(nm, sizeof nm, "vec_to_bf16 / vec_from_bf16 (%s) vs ref, bit for bit (NaN, inf, ties), offsets 0-3", simd_level());
    check(nm, bad16, 0);
    // in-place rounding: the pack/unpack round trip of the reference, bit for bit
    bad16 = 0;
    for (int off = 0; off < 4; off++) {
        memcpy(f1, f, sizeof(float) * n);
        vec_round_bf16(f1 + off, n - off);
        memcpy(f2, f, sizeof(float) * n);
        vec_to_bf16_ref(h2 + off, f + off, n - off);
        vec_from_bf16_ref(f2 + off, h2 + off, n - off);
        bad16 += memcmp(f1, f2, sizeof(float) * n) != 0;
        memcpy(f1, f, sizeof(float) * n);
        vec_round_bf16_ref(f1 + off, n - off);
        bad16 += memcmp(f1, f2, sizeof(float) * n) != 0;
    }
    snprintf(nm, sizeof nm, "vec_round_bf16 (%s) and its ref = vec_from_bf16(vec_to_bf16(x)), bit for bit, offsets 0-3", simd_level());
    check(nm, bad16, 0);
    // vec_zero: a blob big enough for streaming stores, starting off a vector boundary, and
    // a huge-page block from moe_alloc (its header apart from the data)
    {
        const size_t zn = ((size_t)5 << 20) + 7;
        float *z = MOE_NEW(float, zn + 1);
        check("moe_alloc of a big block gives zeroed memory", z[0] == 0 && z[zn] == 0 ? 0 : 1, 0);
        for (size_t i = 0; i <= zn; i++) z[i] = 1.0f;
        vec_zero(z + 1, zn - 1);
        size_t bad = z[0] != 1.0f || z[zn] != 1.0f;
        for (size_t i = 1; i < zn; i++) bad += z[i] != 0.0f;
        snprintf(nm, sizeof nm, "vec_zero (%s, streaming) zeroes exactly its range", simd_level());
        check(nm, (double)bad, 0);
        moe_free(z);
    }
    // and the fallback the dispatcher picks on CPUs without AVX2
    simd_force_scalar(1);
    vec_exp_sum(y, x, 3.0f, n);
    vec_swiglu(a, g, u, n);
    check("scalar fallback of vec_exp_sum and vec_swiglu vs ref", relerr(y, y2, n) + relerr(a, a2, n), 1e-6);
    simd_force_scalar(0);
}

// Answering from bf16 weights: vec_gemv_bf16 (each level) against its ref and against
// linear_forward on the f32 values; linear_forward reads the registered copy only for a few
// rows inside the registered blob; infer_weights_bf16 turns on only for bf16-exact weights
static void test_gemv_bf16(void) {
    char nm[160];
    const int in = 203, out = 37, N = 3;   // (odd sizes: the vector loops' tails)
    float *W = rnd((size_t)in * out, 1), *x = rnd((size_t)N * in, 1), *y = MOE_NEW(float, N * out), *y2 = MOE_NEW(float, N * out);
    uint16_t *w16 = MOE_NEW(uint16_t, (size_t)in * out);
    vec_to_bf16_ref(w16, W, (long)in * out);
    vec_from_bf16_ref(W, w16, (long)in * out);   // W's values now bf16 ones
    linear_forward(y2, x, W, N, in, out, false);
    for (int lv = 2; lv >= 0; lv--) {
        const int got = simd_cap(lv);
        vec_gemv_bf16(y, x, w16, N, in, out, 0);
        snprintf(nm, sizeof nm, "vec_gemv_bf16 (%s) = the f32 product of the same values (to summation order)", simd_level());
        if (got == lv) check(nm, relerr(y, y2, (size_t)N * out), 1e-6);
    }
    simd_cap(2);
    float *y3 = MOE_NEW(float, N * out);
    for (int i = 0; i < N * out; i++) y3[i] = y[i] = 1.0f;
    vec_gemv_bf16(y, x, w16, N, in, out, 1);
    for (int i = 0; i < N * out; i++) y3[i] += y2[i];
    check("vec_gemv_bf16 accumulates into y (acc)", relerr(y, y3, (size_t)N * out), 1e-6);
    // registered: a few rows read the copy (poisoned here, to see which is read), more rows and
    // weights outside the blob do not
    uint16_t *poison = MOE_NEW(uint16_t, (size_t)in * out);
    for (size_t i = 0; i < (size_t)in * out; i++) poison[i] = 0x3f80;   // 1.0
    kernels_weight_shadow(W, (size_t)in * out, poison);
    linear_forward(y, x, W, N, in, out, false);
    double d_few = fabs(y[0] - y2[0]);
    const int NB = KERNELS_GEMV_ROWS + 1;
    float *xb = rnd((size_t)NB * in, 1), *yb = MOE_NEW(float, NB * out), *yb2 = MOE_NEW(float, NB * out);
    linear_forward(yb, xb, W, NB, in, out, false);
    kernels_weight_shadow(NULL, 0, NULL);
    linear_forward(yb2, xb, W, NB, in, out, false);
    snprintf(nm, sizeof nm, "linear_forward reads the registered bf16 copy for %d rows, not for %d (copy poisoned: %.3g apart)", N, NB, d_few);
    check(nm, d_few > 1e-3 ? relerr(yb, yb2, (size_t)NB * out) : 1, 0);
    // infer_weights_bf16: on for a model whose weights are bf16 values, off otherwise
    MoeConfig c;
    const char *js = "{\"hidden_size\": 16, \"num_hidden_layers\": 1, \"num_attention_heads\": 2, \"moe_intermediate_size\": 8,"
                     " \"n_routed_experts\": 4, \"num_experts_per_tok\": 2, \"max_position_embeddings\": 32}";
    int ok = config_parse(&c, js, "w16.json") == MOE_OK;
    Model m;
    if (ok) {
        model_build(&m, &c, false);
        model_init_weights(&m, 1);
        const bool f32_on = infer_weights_bf16(&m);
        vec_round_bf16_ref(m.params, (long)m.n_params);
        const bool bf_on = infer_weights_bf16(&m);
        infer_weights_bf16_off();
        model_free(&m);
        snprintf(nm, sizeof nm, "infer_weights_bf16: off for f32 weights (%d), on once they are bf16 values (%d)", f32_on, bf_on);
        ok = !f32_on && bf_on;
    }
    check(nm, ok ? 0 : 1, 0);
    moe_free(W); moe_free(x); moe_free(y); moe_free(y2); moe_free(y3); moe_free(w16); moe_free(poison);
    moe_free(xb); moe_free(yb); moe_free(yb2);
}

static void test_adamw(void) {
    MoeConfig c;
    config_defaults(&c);
    c.hidden_size = 16; c.num_hidden_layers = 1; c.intermediate_size = 32; c.n_routed_experts = 4;
    c.moe_intermediate_size = 8; c.vocab_size = 260; c.max_position_embeddings = 16;
    Model m1, m2;
    model_build(&m1, &c, true); model_build(&m2, &c, true);
    model_init_weights(&m1, 3); model_init_weights(&m2, 3);
    AdamW a1, a2;
    adamw_alloc(&a1, m1.n_params); adamw_alloc(&a2, m2.n_params);
    OptConfig o;
    opt_defaults(&o);
    o.weight_decay = 0.1f;
    for (int s = 0; s < 5; s++) {
        // the fast step applies the clipping factor on the fly; the reference gets clipped grads
        float gs = s % 2 ? 0.5f : 1.0f;
        for (size_t i = 0; i < m1.n_params; i++) { m1.grads[i] = 0.01f * rng_normal(&rng); m2.grads[i] = m1.grads[i] * gs; }
        adamw_step(&a1, &m1, &o, 1e-2f, gs);
        adamw_step_ref(&a2, &m2, &o, 1e-2f);
    }
    check("AdamW step vs ref (5 steps, decay on matrices only, clipping factor fused)", relerr(m1.params, m2.params, m1.n_params), 1e-6);
    model_free(&m1); model_free(&m2); adamw_free(&a1); adamw_free(&a2);
}

// The schedule driver: a micro-batch as one pass (SCHED_TRAIN) and as two interleaved halves
// (SCHED_TRAIN_HALVES) give the same loss and gradients (sequence-scope balance, dropless:
// the halves change the sums' order only), both write over stale gradients (grad_set: pass A
// writes, B adds), and both report every layer's gradients ready once, head to embedding.
typedef struct { int n, layer[16]; } ReadyLog;
static int ready_record(void *ctx, int l) { ReadyLog *r = ctx; if (r->n < 16) r->layer[r->n] = l; r->n++; return MOE_OK; }

static void test_schedule(void) {
    MoeConfig c;
    config_defaults(&c);
    c.hidden_size = 16; c.num_hidden_layers = 3; c.num_attention_heads = 4; c.num_key_value_heads = 2;
    c.head_dim = 4; c.intermediate_size = 24; c.moe_intermediate_size = 8; c.n_routed_experts = 4;
    c.first_k_dense_replace = 1; c.max_position_embeddings = 16;
    c.aux_loss_alpha = 0.01f; c.aux_scope = MOE_AUX_SEQUENCE;
    Model m;
    model_build(&m, &c, true);
    model_init_weights(&m, 5);
    enum { S = 4, LEN = 9 };   // four examples: <bos> 3 question bytes <sep> 3 answer bytes <eos>
    int tok[S * LEN];
    Example ex[S];
    for (int i = 0; i < S * LEN; i++) tok[i] = (int)rng_below(&rng, 256);
    for (int s = 0; s < S; s++) ex[s] = (Example){.off = (long)s * LEN, .len = LEN, .n_prompt = 5};
    Dataset d = {.tok = tok, .ex = ex, .n = S};
    const int ids[S] = {0, 1, 2, 3};
    float *g[2];
    double ce[2] = {0, 0};
    ReadyLog rl[2] = {{0}, {0}};
    for (int h = 0; h < 2; h++) {   // h = 0: one pass, 1: two halves
        const Schedule *sched = h ? &SCHED_TRAIN_HALVES : &SCHED_TRAIN;
        const int np = sched->n_passes, per = S / np;
        Acts a[2];
        Batch b[2];
        Acts *as[2];
        const Batch *bs[2];
        for (int p = 0; p < np; p++) {
            acts_alloc(&a[p], &m, per * LEN, ACTS_TRAIN);
            batch_alloc(&b[p], per * LEN, per);
            batch_fill(&b[p], &d, ids + p * per, per);
            as[p] = &a[p]; bs[p] = &b[p];
        }
        ForwardOpts fo = {.train = true, .ce_scale = 1.0f / (S * (LEN - 5)), .aux_scale = 1.0f / S,
                          .grads_ready = ready_record, .ctx = &rl[h], .grad_set = true};
        for (size_t i = 0; i < m.n_params; i++) m.grads[i] = 7.0f;   // stale: written over
        ForwardOut out[2];
        int rc = model_run(&m, sched, as, bs, &fo, out);
        for (int p = 0; p < np; p++) { ce[h] += out[p].ce_sum; acts_free(&a[p]); batch_free(&b[p]); }
        g[h] = rc == MOE_OK ? copy(m.grads, m.n_params) : NULL;
    }
    check("schedule: the halves' loss is the single pass's", fabs(ce[1] - ce[0]) / ce[0], 1e-6);
    check("schedule: the halves' gradients (A writes, B adds) are the single pass's",
          g[0] && g[1] ? relerr(g[1], g[0], m.n_params) : 1, 1e-5);
    int order_ok = 1;
    for (int h = 0; h < 2; h++) {
        order_ok &= rl[h].n == c.num_hidden_layers + 2;   // the head, every layer, the embedding
        for (int i = 0; i < rl[h].n && i < 16; i++) order_ok &= rl[h].layer[i] == c.num_hidden_layers - i;
    }
    check("schedule: grads_ready reports L (the head), L-1 .. 0, -1 once each, in order", order_ok ? 0 : 1, 0);
    // a list naming a pass the schedule does not run is refused, not run
    const Stage bad[] = {{1, STAGE_FWD_BEGIN, 0}};
    const SchedPhase ph = {false, {bad, 1}, {NULL, 0}, {NULL, 0}};
    const Schedule sb = {"bad", 1, 1, &ph};
    Acts a1;
    Batch b1;
    acts_alloc(&a1, &m, LEN, ACTS_INFER);
    batch_alloc(&b1, LEN, 1);
    batch_fill(&b1, &d, ids, 1);
    Acts *as1[1] = {&a1};
    const Batch *bs1[1] = {&b1};
    ForwardOpts fo = {0};
    ForwardOut out;
    check("schedule: a stage of a pass the schedule lacks is refused", model_run(&m, &sb, as1, bs1, &fo, &out) == MOE_FAIL ? 0 : 1, 0);
    acts_free(&a1); batch_free(&b1);
    moe_free(g[0]); moe_free(g[1]);
    model_free(&m);
}

static void test_placement(void) {
    // a skewed load: a few hot experts, the rest light
    enum { E = 32, P = 4 };
    double load[E];
    for (int e = 0; e < E; e++) load[e] = 100 + 10 * (e % 7);
    load[3] = 2500; load[17] = 1800; load[30] = 1200;
    double total = 0;
    for (int e = 0; e < E; e++) total += load[e];
    for (int R = 0; R <= 8; R += 4) {
        int slots[(E + 8)];
        double rl[P];
        int rc = moe_place(load, E, P, R, slots, rl);
        const int S = (E + R) / P;
        int seen[E] = {0}, dup = 0, sorted = 1;
        double mx = 0, sum = 0;
        for (int p = 0; p < P; p++) {
            for (int s = 0; s < S; s++) {
                seen[slots[p * S + s]]++;
                for (int t = 0; t < s; t++) dup += slots[p * S + t] == slots[p * S + s];
                if (s && slots[p * S + s - 1] > slots[p * S + s]) sorted = 0;
            }
            mx = rl[p] > mx ? rl[p] : mx;
            sum += rl[p];
        }
        int missing = 0;
        for (int e = 0; e < E; e++) missing += seen[e] == 0;
        char nm[96];
        snprintf(nm, sizeof nm, "placement R=%d: every expert placed once or more, no rank twice", R);
        check(nm, rc == MOE_OK && !missing && !dup && sorted ? 0 : 1, 0);
        snprintf(nm, sizeof nm, "placement R=%d: predicted loads add up to the total", R);
        check(nm, fabs(sum - total) / total, 1e-12);
        if (R == 8) {   // replicating the hot experts evens the ranks out
            snprintf(nm, sizeof nm, "placement R=%d: max rank load / mean - 1 (<= 0.1)", R);
            check(nm, rc == MOE_OK ? mx / (total / P) - 1 : 1, 0.1);
        }
    }
    int slots[8];
    double rl[3];
    check("placement refuses slots that do not split over the ranks", moe_place(load, 8, 3, 0, slots, rl) == MOE_FAIL ? 0 : 1, 0);
}

int main(void) {
    rng_seed(&rng, 42);
    test_gemm();
    test_rmsnorm();
    test_rope();
    test_attention();
    test_attention_tiled();
    test_attention_qk_v_dims();
    test_mla_absorbed();
    test_small_ops();
    test_moe();
    test_simd();
    test_gemv_bf16();
    test_adamw();
    test_placement();
    test_schedule();
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail != 0;
}
