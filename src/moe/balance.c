#include <math.h>
#include <string.h>
#include "../base/base.h"
#include "moe.h"

// dL/ds'_{n,i} = scale alpha E f_i / n for the tokens [t0, t1) of a unit of n tokens
static void aux_grad(const MoeConfig *c, const MoeActs *a, MoeWork *wk, int t0, int t1, const double *f, double n,
                     float scale) {
    const int E = a->E;
    const bool sig = c->scoring_func == MOE_SCORE_SIGMOID;
    double g[4096];
    for (int e = 0; e < E; e++) g[e] = scale * c->aux_loss_alpha * E * f[e] / n;
    for (int t = t0; t < t1; t++) {
        const float *s = a->scores + (size_t)t * E;
        float *ds = wk->ds + (size_t)t * E;
        if (sig) {   // s' = s / sum(s): ds_e = (g_e - sum_j g_j s'_j) / sum(s)
            double sum = 0, dot = 0;
            for (int e = 0; e < E; e++) sum += s[e];
            for (int e = 0; e < E; e++) dot += g[e] * s[e] / sum;
            for (int e = 0; e < E; e++) ds[e] += (float)((g[e] - dot) / sum);
        } else {
            for (int e = 0; e < E; e++) ds[e] += (float)g[e];
        }
    }
}

// assignment counts and summed normalised scores of tokens [t0, t1) into f[E], P[E]
static void aux_sums(const MoeConfig *c, const MoeActs *a, int t0, int t1, double *f, double *P) {
    const int E = a->E, K = a->K;
    const bool sig = c->scoring_func == MOE_SCORE_SIGMOID;
    for (int e = 0; e < E; e++) f[e] = P[e] = 0;
    for (int t = t0; t < t1; t++) {
        const float *s = a->scores + (size_t)t * E;
        double sum = 1;
        if (sig) { sum = 0; for (int e = 0; e < E; e++) sum += s[e]; }
        for (int e = 0; e < E; e++) P[e] += s[e] / sum;
        for (int k = 0; k < K; k++) f[a->sel[(size_t)t * K + k]] += 1;
    }
}

// One unit of tokens [t0, t1): loss = alpha E sum_i f_i P_i with f_i = count_i / (n K)
// and P_i = mean_n s'_i; dL/ds'_{n,i} = alpha E f_i / n (f is a count: no gradient).
static double aux_unit(const MoeConfig *c, const MoeActs *a, MoeWork *wk, int t0, int t1, float scale) {
    const int E = a->E, K = a->K, n = t1 - t0;
    if (n <= 0) return 0;
    double f[4096], P[4096];
    aux_sums(c, a, t0, t1, f, P);
    double loss = 0;
    for (int e = 0; e < E; e++) {
        f[e] /= (double)n * K;
        P[e] /= n;
        loss += f[e] * P[e];
    }
    loss *= c->aux_loss_alpha * E;
    if (wk) aux_grad(c, a, wk, t0, t1, f, n, scale);
    return loss * scale;
}

int moe_aux_ep_group(const MoeConfig *c, MoeActs *a, MoeComm *comm, float scale, double *share) {
    // Pangu's EP-group scope: f and P over the tokens of every rank of the group, reduced
    // here; the loss is the group's (each rank reports 1/size of it), and each rank's
    // backward pass adds the gradient at its own tokens from the group's f
    const int E = a->E, K = a->K;
    *share = 0;
    if (c->aux_loss_alpha <= 0) return MOE_OK;
    if (!a->ep_f) a->ep_f = MOE_NEW(double, 2 * E + 1);
    double *f = a->ep_f, *P = a->ep_f + E;
    aux_sums(c, a, 0, a->N, f, P);
    P[E] = a->N;
    MOE_TRY(comm->sum(comm, f, 2 * E + 1));
    const double n = P[E];
    double loss = 0;
    for (int e = 0; e < E && n > 0; e++) {
        f[e] /= n * K;
        P[e] /= n;
        loss += f[e] * P[e];
    }
    a->ep_n = n;
    *share = loss * c->aux_loss_alpha * E * scale / comm->size;
    return MOE_OK;
}

double moe_aux_loss(const MoeConfig *c, const MoeActs *a, MoeWork *wk, const int *seq_start,
                    int n_seq, float scale) {
    if (c->aux_loss_alpha <= 0) return 0;
    if (c->aux_scope == MOE_AUX_SEQUENCE) {
        double total = 0;
        for (int s = 0; s < n_seq; s++) total += aux_unit(c, a, wk, seq_start[s], seq_start[s + 1], scale);
        return total;
    }
    if (c->aux_scope == MOE_AUX_EP_GROUP && a->ep_f) {   // f from moe_aux_ep_group (gradient only)
        if (wk && a->ep_n > 0) aux_grad(c, a, wk, 0, a->N, a->ep_f, a->ep_n, scale);
        return 0;
    }
// "batch", and "ep_group" on one process (the EP group is this rank alone)
    return aux_unit(c, a, wk, 0, a->N, scale);
}

void moe_bias_update(float *bias, const long *load, int E, float gamma) {
    double mean = 0;
    for (int e = 0; e < E; e++) mean += load[e];
    mean /= E;
    for (int e = 0; e < E; e++) {
        double d = mean - load[e];
        bias[e] += gamma * (float)((d > 0) - (d < 0));
    }
}

void moe_load_stats(const long *load, int E, int P, long tokens, LoadStats *s) {
    double sum = 0, mx = 0;
    for (int e = 0; e < E; e++) { sum += load[e]; mx = load[e] > mx ? load[e] : mx; }
    double mean = E > 0 ? sum / E : 0;
    s->max_mean = mean > 0 ? mx / mean : 0;
    s->maxvio = mean > 0 ? (mx - mean) / mean : 0;
    s->is = 0;
    if (P > 1 && E % P == 0 && tokens > 0) {
        double dmax = 0, dmin = 1e300;
        for (int d = 0; d < P; d++) {
            double v = 0;
            for (int e = d * (E / P); e < (d + 1) * (E / P); e++) v += load[e];
            dmax = v > dmax ? v : dmax;
            dmin = v < dmin ? v : dmin;
        }
        s->is = (dmax - dmin) / tokens;
    }
}
