// moe calibrate: this machine's rates measured with moe.c's own kernels, in the terms of a
// cluster file (sim.h): the sgemm peak, the GEMM efficiency curve by the smallest side, core
// attention, memory bandwidth and what the elementwise kernels get of it, the fixed cost of
// an operation; and (under mpirun) the collectives' bandwidth and latency.
#include <math.h>
#include <string.h>
#include <unistd.h>
#include "../base/base.h"
#include "../kernels/gemm.h"
#include "../ops/ops.h"
#include "../parallel/parallel.h"
#include "sim.h"

// the best of repeated runs of fn within `seconds` (at least 3)
typedef void (*Work)(void *);
static double best_time(Work fn, void *arg, double seconds) {
    fn(arg);   // (warm-up)
    double best = INFINITY, end = time_now() + seconds;
    for (int k = 0; k < 3 || time_now() < end; k++) {
        const double t0 = time_now();
        fn(arg);
        const double dt = time_now() - t0;
        if (dt < best) best = dt;
        if (k > 100000) break;
    }
    return best;
}

typedef struct { int m, n, k; float *a, *b, *c; } GemmArg;
static void run_gemm(void *p) {
    GemmArg *g = p;
    linear_forward(g->c, g->a, g->b, g->m, g->k, g->n, false);   // c[m,n] = a[m,k] b[n,k]^T
}
typedef struct { int N, H, hd; float *q, *k, *v, *o, *lse, *dq, *dk, *dv, *dout; int *lo; } AttArg;
static void run_attention(void *p) {
    AttArg *a = p;
    const float sc = 1.0f / sqrtf((float)a->hd);
    attention_forward_train(a->o, a->lse, a->q, a->k, a->v, a->lo, a->N, a->H, a->H, a->hd, a->hd, sc);
    attention_backward_train(a->dq, a->dk, a->dv, a->dout, a->q, a->k, a->v, a->o, a->lse, a->lo, a->N, a->H, a->H, a->hd, a->hd, sc);
}
typedef struct { size_t n; float *x, *y, *w, *r; int N, D; } MemArg;
static void run_copy(void *p) { MemArg *m = p; memcpy(m->y, m->x, m->n * sizeof(float)); }
static void run_norm(void *p) { MemArg *m = p; rmsnorm_forward(m->y, m->r, m->x, m->w, m->N, m->D, 1e-5f); }

static float *filled(size_t n) {
    float *p = MOE_NEW(float, n);
    for (size_t i = 0; i < n; i++) p[i] = 1e-3f * (float)((i * 2654435761u) % 1000) - 0.5f;
    return p;
}

int sim_calibrate_compute(CalibCompute *out, double seconds) {
    memset(out, 0, sizeof *out);
    const double each = seconds / 16;
    out->peak = kernels_measure_peak_gflops(2 * each) * 1e9;
    // GEMMs whose smallest side m runs 8 .. 1024 (the others 1024), and the curve
    // gemm_max · m / (m + gemm_half) nearest them in log space (every size weighs alike):
    // for each gemm_half on a grid, the best gemm_max is the geometric mean of the ratios
    const int K = 1024;
    float *a = filled((size_t)1024 * K), *b = filled((size_t)K * K), *c = filled((size_t)1024 * K);
    int np = 0;
    for (int m = 8; m <= 1024; m *= 2, np++) {
        GemmArg g = {m, K, K, a, b, c};
        const double t = best_time(run_gemm, &g, each);
        out->gemm_m[np] = m;
        out->gemm_eff[np] = 2.0 * m * K * K / t / out->peak;
    }
    out->n_gemm = np;
    // the memory side of the roofline first (simulate prices a GEMM with both)
    {
        const int N = 16384, D = 1024;
        MemArg mm = {(size_t)N * D, filled((size_t)N * D), filled((size_t)N * D), filled(D), filled(N), N, D};
        const double tc = best_time(run_copy, &mm, each);
        out->mem_bw = 2.0 * mm.n * sizeof(float) / tc;
        const double tn = best_time(run_norm, &mm, each);
        out->mem_eff = fmin(1.0, 2.0 * mm.n * sizeof(float) / tn / out->mem_bw);
        moe_free(mm.x); moe_free(mm.y); moe_free(mm.w); moe_free(mm.r);
    }
    // then gemm_max and gemm_half: the roofline nearest the measured times in log space
    Cluster cl = {.peak = out->peak, .gemm_peak = out->peak, .mem_bw = out->mem_bw, .mem_eff = out->mem_eff};
    double best_err = INFINITY;
    for (double half = 1; half <= 8192; half *= 1.05)
        for (int j = 0; j <= 160; j++) {
            const double mx = fmin(1.0, 0.2 + 0.005 * j);
            cl.gemm_max = mx, cl.gemm_half = half;
            double err = 0;
            for (int i = 0; i < np; i++) {
                const double t = 2.0 * out->gemm_m[i] * K * K / (out->gemm_eff[i] * out->peak);
                const double d = log(sim_gemm_time(&cl, out->gemm_m[i], K, K, sizeof(float)) / t);
                err += d * d;
            }
            if (err < best_err) best_err = err, out->gemm_half = half, out->gemm_max = mx;
        }
    moe_free(a); moe_free(b); moe_free(c);
    // core attention, forward and backward (3.5 times the forward's causal FLOPs, as simulate
    // prices it): 8 sequences of 256, 8 heads of 64
    {
        const int T = 256, B = 8, H = 8, hd = 64, N = B * T;
        AttArg at = {N, H, hd, filled((size_t)N * H * hd), filled((size_t)N * H * hd), filled((size_t)N * H * hd),
                     filled((size_t)N * H * hd), filled((size_t)N * H), filled((size_t)N * H * hd), filled((size_t)N * H * hd),
                     filled((size_t)N * H * hd), filled((size_t)N * H * hd), MOE_NEW(int, N)};
        for (int i = 0; i < N; i++) at.lo[i] = i / T * T;
        const double t = best_time(run_attention, &at, 2 * each);
        const double fwd = 2.0 * N * T * H * hd;   // q.k and p.v over half the square
        out->attn_eff = fmin(1.0, 3.5 * fwd / t / out->peak);
        float *bufs[] = {at.q, at.k, at.v, at.o, at.lse, at.dq, at.dk, at.dv, at.dout};
        for (int i = 0; i < 9; i++) moe_free(bufs[i]);
        moe_free(at.lo);
    }
    // the fixed cost of an operation: the larger of a GEMM too small to take time and an
    // elementwise kernel's parallel region over 4 rows (moe.c's ops each open one)
    {
        float *s = filled(64);
        GemmArg g = {1, 4, 4, s, s + 16, s + 32};
        const double tg = best_time(run_gemm, &g, each / 4);
        MemArg mm = {256, filled(256), filled(256), filled(64), filled(4), 4, 64};
        const double tn = best_time(run_norm, &mm, each / 4);
        out->op_us = 1e6 * fmax(tg, tn);
        moe_free(s); moe_free(mm.x); moe_free(mm.y); moe_free(mm.w); moe_free(mm.r);
    }
    return MOE_OK;
}

int sim_calibrate_comm(double seconds, CalibComm *out) {
    // sizes 4 B .. 16 MB: a ring all-reduce over n ranks takes 2(n-1)/n bytes/bw + 2(n-1) lat
    // (simulate's ring, both halves); fit the two on the smallest and the largest sizes
    static const size_t sizes[] = {1, 1024, 65536, 1 << 20, 4 << 20};
    double t[5];
    const int P = dist_info()->size;
    if (P < 2) MOE_ERR("moe calibrate --comm measures collectives: run it under mpirun with at least 2 ranks");
    for (int i = 0; i < 5; i++) MOE_TRY(par_time_allreduce(sizes[i], seconds / 20, &t[i]));
    const double f = 2.0 * (P - 1) / P, big = sizes[4] * sizeof(float), small = sizes[0] * sizeof(float);
    out->lat = t[0] / (2.0 * (P - 1));
    out->bw = f * (big - small) / fmax(1e-9, t[4] - t[0]);
    // the experts' exchange (every rank in one EP group, flat: the caller's dist_setup): one row
    // and 2048 rows of 512 floats a rank (a micro-batch of 512 tokens, top-4, hidden 512), each
    // (P-1)/P of it away; simulate's flat all-to-all takes (P-1) latencies and the bytes away
    // over the bandwidth
    const int W = 512, rows_big = 2048 / P;
    double a1, a2, with, work, unused;
    MOE_TRY(par_time_alltoall(1, W, 0, seconds / 8, &a1, &unused, &unused));
    MOE_TRY(par_time_alltoall(rows_big, W, 4, seconds / 8, &a2, &with, &work));
    if (work < 1.5 * a2)   // (enough work to hide all of it: a slow link's exchange is longer)
        MOE_TRY(par_time_alltoall(rows_big, W, (int)ceil(4 * 1.5 * a2 / work), seconds / 8, &a2, &with, &work));
    out->a2a_lat = a1 / (P - 1);
    out->a2a_bw = (double)(rows_big - 1) * W * sizeof(float) * (P - 1) / fmax(1e-9, a2 - a1);
    // overlapped: the work took `with` instead of work + alone - hidden; the hidden part's cost
    // over its length r is what simulate's comm_share gives (r = share / (1 - share))
    const double hidden = fmin(a2, work), r = fmin(1, fmax(0, (with - work - (a2 - hidden)) / hidden));
    out->share = r / (1 + r);
    out->a2a_alone = a2, out->a2a_with = with, out->a2a_work = work;
    // the ranks' jitter, meetings about 6 ms of work apart, and how it falls for meetings
    // further apart (a power of the interval)
    MOE_TRY(par_time_sync(40, seconds / 2, &out->sync, &out->sync_s, &out->sync_decay));
    // twice as many ranks as cores: how much of its core a waiting rank keeps (half of them
    // working take 1 + kept times what they would alone, all of them 2)
    out->idle_kept = -1;
    if (P == 2 * sysconf(_SC_NPROCESSORS_ONLN)) {
        double all, half;
        MOE_TRY(par_time_yield(40, seconds / 4, &all, &half));
        out->idle_kept = fmin(1, fmax(0, 2 * half / all - 1));
    }
    return MOE_OK;
}
