// Timing the collectives for moe calibrate: a sum over every rank of the job (the ring
// all-reduce moe simulate prices), as many times as fit in a budget, the slowest rank's time.
// The sum is started and then waited for, the calls moe train's gradient buckets make (Open
// MPI's non-blocking all-reduce is another algorithm than its blocking one).
#include <math.h>
#include "../base/base.h"
#include "../dist/dist.h"
#include "../kernels/gemm.h"
#include "parallel.h"

// Every rank must agree on stopping (the first clock past t_end decides): after round k, once
// the budget is spent and at least three rounds ran
static int agree_stop(int k, double t_end, bool *stop) {
    double v = k >= 2 && time_now() > t_end ? 1 : 0;
    const int rc = dist_max_f64(&v, 1, DIST_WORLD);
    *stop = rc != MOE_OK || v > 0 || k > 100000;
    return rc;
}

// The same work on every rank: chunks of a g x g x g GEMM, each followed by moe_progress()
// when `progress` (what moe train's blocks give an exchange in flight)
typedef struct { float *a; int g; } Work;
static Work work_new(int g) {
    Work w = {MOE_NEW(float, (size_t)3 * g * g), g};
    for (int i = 0; i < 2 * g * g; i++) w.a[i] = 1e-2f * (float)(i % 5);
    return w;
}
static void work_run(const Work *w, int chunks, bool progress) {
    const int g = w->g;
    for (int j = 0; j < chunks; j++) {
        gemm(false, true, g, g, g, 1, w->a, g, w->a + (size_t)g * g, g, 0, w->a + (size_t)2 * g * g, g);
        if (progress) moe_progress();
    }
}

int par_time_allreduce(size_t n_floats, double seconds, double *best) {
    float *buf = MOE_NEW(float, n_floats ? n_floats : 1);
    for (size_t i = 0; i < n_floats; i++) buf[i] = 1e-3f * (float)(i % 7);
    int rc = dist_sum_f32(buf, n_floats, DIST_WORLD);   // (warm-up: connections, buffers)
    double b = INFINITY, t_end = time_now() + seconds;
    for (int k = 0; rc == MOE_OK; k++) {
        double go = 0;
        rc = dist_sum_f64(&go, 1, DIST_WORLD);           // (start together)
        const double t0 = time_now();
        int req = -1;
        if (rc == MOE_OK) rc = dist_sum_f32_start(buf, n_floats, DIST_WORLD, &req);
        if (rc == MOE_OK) rc = dist_wait(req);
        double dt = time_now() - t0;
        if (rc == MOE_OK) rc = dist_max_f64(&dt, 1, DIST_WORLD);
        if (dt < b) b = dt;
        bool stop = true;
        if (rc == MOE_OK) rc = agree_stop(k, t_end, &stop);
        if (stop) break;
    }
    moe_free(buf);
    *best = b;
    return rc;
}

// The experts' exchange as moe train makes it, over an EP group of every rank: the counts
// (a blocking all-to-all of ints), then `rows` rows of `width` floats to every rank started
// and waited for. *alone: the exchange by itself. *with and *work: the exchange started, then
// `chunks` GEMMs of 512 x 512 x 512 each followed by moe_progress() (Open MPI moves the rows
// only inside MPI calls, and moe train's blocks give an exchange in flight one such call
// each, a few milliseconds apart), then waited for; and the same GEMMs without an exchange.
// The best of as many rounds as fit in the budget, the slowest rank's times.
int par_time_alltoall(int rows, int width, int chunks, double seconds, double *alone, double *with, double *work) {
    DistInfo *di = dist_info();
    MoeComm *c = &di->moe;
    const int P = c->size, n = rows * P;
    if (P < 2) MOE_ERR("the all-to-all timing needs an expert-parallel group of at least 2 ranks");
    float *send = MOE_NEW(float, (size_t)n * width), *recv = MOE_NEW(float, (size_t)n * width);
    const Work w = work_new(512);
    int *cnt = MOE_NEW(int, 4 * (size_t)P), *dsp = cnt + P, *rcnt = dsp + P, *rdsp = rcnt + P;
    for (size_t i = 0; i < (size_t)n * width; i++) send[i] = 1e-3f * (float)(i % 7);
    for (int r = 0; r < P; r++) cnt[r] = rows, dsp[r] = r * rows;
    double b[3] = {INFINITY, INFINITY, INFINITY}, t_end = time_now() + seconds;
    int rc = MOE_OK;
    for (int k = 0; rc == MOE_OK; k++) {
        for (int mode = 0; mode < 3 && rc == MOE_OK; mode++) {   // alone, with the GEMMs, the GEMMs alone
            double go = 0;
            rc = dist_sum_f64(&go, 1, DIST_WORLD);
            const double t0 = time_now();
            int req = -1;
            if (mode < 2 && rc == MOE_OK) rc = c->counts(c, cnt, rcnt, 1);
            if (mode < 2 && rc == MOE_OK) {
                for (int r = 0; r < P; r++) rdsp[r] = r ? rdsp[r - 1] + rcnt[r - 1] : 0;
                rc = c->start(c, send, cnt, dsp, recv, rcnt, rdsp, width, &req);
            }
            if (mode > 0 && rc == MOE_OK) work_run(&w, chunks, true);
            if (req >= 0 && rc == MOE_OK) rc = c->wait(c, req);
            double dt = time_now() - t0;
            if (rc == MOE_OK) rc = dist_max_f64(&dt, 1, DIST_WORLD);
            if (dt < b[mode]) b[mode] = dt;
        }
        bool stop = true;
        if (rc == MOE_OK) rc = agree_stop(k, t_end, &stop);
        if (stop) break;
    }
    moe_free(send); moe_free(recv); moe_free(w.a); moe_free(cnt);
    *alone = b[0], *with = b[1], *work = b[2];
    return rc;
}

// The timing jitter between ranks: every rank runs the same `chunks` GEMMs, then meets the
// others at a counts exchange (as at every layer of expert parallelism), for about `seconds`.
// *frac: the rounds' time over the ranks' mean time in their GEMMs, minus one: the wait for
// the slowest rank at each meeting over the work between meetings; *interval: that work's
// mean length (seconds). *decay: how the wait's share falls when meetings are b times
// further apart, from the same rounds: the ranks' GEMM times summed over runs of b meetings,
// the slowest over the mean minus one, for b = 1, 2, 4, .. (while there are 8 runs), its
// log-log slope (0: does not fall; 0.5: independent noise averaging out)
int par_time_sync(int chunks, double seconds, double *frac, double *interval, double *decay) {
    MoeComm *c = &dist_info()->moe;
    const int P = c->size, N = 4096;
    if (P < 2) MOE_ERR("the jitter timing needs an expert-parallel group of at least 2 ranks");
    const Work w = work_new(192);
    int *cnt = MOE_NEW(int, 2 * (size_t)P), *rcnt = cnt + P;
    double *t = MOE_NEW(double, (size_t)P * N);   // (rank r's GEMM times in row r)
    for (int r = 0; r < P; r++) cnt[r] = 1;
    int rc = c->counts(c, cnt, rcnt, 1);
    double seg = 0, t0 = time_now();
    bool stop = false;
    int k = 0;
    for (; rc == MOE_OK && !stop && k < N; k++) {
        const double s0 = time_now();
        work_run(&w, chunks, false);
        seg += t[(size_t)c->rank * N + k] = time_now() - s0;
        rc = c->counts(c, cnt, rcnt, 1);
        if (k % 16 == 15 && rc == MOE_OK) rc = agree_stop(k, t0 + seconds, &stop);   // (not at every meeting)
    }
    double tot = time_now() - t0;
    if (rc == MOE_OK) rc = dist_sum_f64(&seg, 1, DIST_WORLD);
    if (rc == MOE_OK) rc = dist_max_f64(&tot, 1, DIST_WORLD);
    if (rc == MOE_OK) rc = dist_sum_f64(t, P * N, DIST_WORLD);
    *frac = fmax(0, tot / (seg / P) - 1);
    *interval = seg / P / imax(k, 1);
    double sx = 0, sy = 0, sxx = 0, sxy = 0, np = 0;   // (the least-squares slope of log share on log b)
    for (int b = 1; rc == MOE_OK && k / b >= 8; b *= 2) {
        double wait = 0, work = 0;
        for (int j = 0; j + b <= k; j += b) {
            double mx = 0, sum = 0;
            for (int r = 0; r < P; r++) {
                double s = 0;
                for (int i = j; i < j + b; i++) s += t[(size_t)r * N + i];
                mx = fmax(mx, s), sum += s;
            }
            wait += mx - sum / P, work += sum / P;
        }
        if (!(wait > 0)) break;
        const double x = log(b), y = log(wait / work);
        sx += x, sy += y, sxx += x * x, sxy += x * y, np++;
    }
    *decay = np >= 3 ? fmin(1, fmax(0, -(np * sxy - sx * sy) / (np * sxx - sx * sx))) : 0;
    moe_free(w.a); moe_free(cnt); moe_free(t);
    return rc;
}

// Ranks that outnumber the cores: every rank runs `chunks` GEMMs at once (*all), then only
// the even ranks do while the odd ones wait for them in a count exchange (*half); the best of
// as many rounds as fit in `seconds`, the working ranks' slowest time. A waiting rank that
// gives its core away entirely lets half the ranks finish in about half the time; one that
// spins keeps its share and they take as long as all of them.
int par_time_yield(int chunks, double seconds, double *all, double *half) {
    DistInfo *di = dist_info();
    MoeComm *c = &di->moe;
    const int P = c->size;
    if (P < 2) MOE_ERR("the yield timing needs an expert-parallel group of at least 2 ranks");
    const Work w = work_new(192);
    int *cnt = MOE_NEW(int, 2 * (size_t)P), *rcnt = cnt + P;
    for (int r = 0; r < P; r++) cnt[r] = 1;
    double b[2] = {INFINITY, INFINITY}, t_end = time_now() + seconds;
    int rc = MOE_OK;
    for (int k = 0; rc == MOE_OK; k++) {
        for (int mode = 0; mode < 2 && rc == MOE_OK; mode++) {   // all ranks work; the even ones only
            rc = c->counts(c, cnt, rcnt, 1);
            double dt = 0;
            if (mode == 0 || c->rank % 2 == 0) {
                const double t0 = time_now();
                work_run(&w, chunks, false);
                dt = time_now() - t0;
            }
            if (rc == MOE_OK) rc = c->counts(c, cnt, rcnt, 1);   // (the odd ranks wait here)
            if (rc == MOE_OK) rc = dist_max_f64(&dt, 1, DIST_WORLD);
            if (dt < b[mode]) b[mode] = dt;
        }
        bool stop = true;
        if (rc == MOE_OK) rc = agree_stop(k, t_end, &stop);
        if (stop) break;
    }
    moe_free(w.a); moe_free(cnt);
    *all = b[0], *half = b[1];
    return rc;
}
