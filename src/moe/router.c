#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "../base/base.h"
#include "../kernels/gemm.h"
#include "moe.h"

void moe_acts_alloc(MoeActs *a, int Nmax, int E, int K, int D, int F, int borrow) {
    memset(a, 0, sizeof *a);
    size_t NK = (size_t)Nmax * K;
    a->E = E; a->K = K; a->D = D; a->F = F;
    if (!(borrow & MOE_BORROW_LOGITS)) a->logits = MOE_NEW(float, (size_t)Nmax * E);
    a->scores = MOE_NEW(float, (size_t)Nmax * E);
    a->sel = MOE_NEW(int, NK);
    a->w = MOE_NEW(float, NK);
    a->row = MOE_NEW(int, NK);
    a->offsets = MOE_NEW(int, 2 * E + 2);   // room for a placement's P*S <= 2E slots
    a->row_tok = MOE_NEW(int, NK);
    a->row_slot = MOE_NEW(int, NK);
    a->borrowed = borrow;
    if (!(borrow & MOE_BORROW_XE_AE)) { a->xe = MOE_NEW(float, NK * D); a->ae = MOE_NEW(float, NK * F); }
    if (!(borrow & MOE_BORROW_GU)) a->gu = MOE_NEW(float, NK * 2 * F);
    if (!(borrow & MOE_BORROW_YE)) a->ye = MOE_NEW(float, NK * D);
    a->load = MOE_NEW(int, E);
}
void moe_acts_free(MoeActs *a) {
    void *p[] = {a->scores, a->sel, a->w, a->row, a->offsets, a->row_tok, a->row_slot, a->load, a->ep_f};
    for (size_t i = 0; i < sizeof p / sizeof *p; i++) moe_free(p[i]);
    if (!(a->borrowed & MOE_BORROW_XE_AE)) { moe_free(a->xe); moe_free(a->ae); }
    if (!(a->borrowed & MOE_BORROW_GU)) moe_free(a->gu);
    if (!(a->borrowed & MOE_BORROW_YE)) moe_free(a->ye);
    if (!(a->borrowed & MOE_BORROW_LOGITS)) moe_free(a->logits);
    memset(a, 0, sizeof *a);
}

// top-m of v[0..n) restricted to allowed (NULL = all), ties to the lower index
static void topk_indices(const float *v, int n, int m, const unsigned char *allowed, int *out) {
    unsigned char taken[4096];
    memset(taken, 0, n);
    for (int j = 0; j < m; j++) {
        int best = -1;
        for (int i = 0; i < n; i++) {
            if (taken[i] || (allowed && !allowed[i])) continue;
            if (best < 0 || v[i] > v[best]) best = i;
        }
        out[j] = best;
        taken[best] = 1;
    }
}

static void select_token(const MoeConfig *c, const float *s, const float *bias, int *sel) {
    int E = c->n_routed_experts, K = c->num_experts_per_tok;
    float sb[4096];
    for (int e = 0; e < E; e++) sb[e] = s[e] + (bias ? bias[e] : 0.0f);
    if (c->topk_method == MOE_TOPK_GREEDY) {
        topk_indices(sb, E, K, NULL, sel);
    } else if (c->topk_method == MOE_TOPK_GROUP_LIMITED) {
        int G = c->n_group, per = E / G, top2[2], keep[4096];
        float gscore[4096];
        for (int g = 0; g < G; g++) {
            topk_indices(sb + g * per, per, 2, NULL, top2);
            gscore[g] = sb[g * per + top2[0]] + sb[g * per + top2[1]];
        }
        topk_indices(gscore, G, c->topk_group, NULL, keep);
        unsigned char allowed[4096];
        memset(allowed, 0, E);
        for (int j = 0; j < c->topk_group; j++) memset(allowed + keep[j] * per, 1, per);
        topk_indices(sb, E, K, allowed, sel);
    } else {   // moge: K/G from every group
        int G = c->n_group, per = E / G, m = K / G;
        for (int g = 0; g < G; g++) {
            topk_indices(sb + g * per, per, m, NULL, sel + g * m);
            for (int j = 0; j < m; j++) sel[g * m + j] += g * per;
        }
    }
}

void moe_router_forward(const MoeConfig *c, MoeActs *a, const float *xn, const MoeWeights *W,
                        const float *bias, int N) {
    int E = a->E, K = a->K;
    a->N = N;
    linear_forward(a->logits, xn, W->router, N, a->D, E, false);
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *z = a->logits + (size_t)n * E;
        float *s = a->scores + (size_t)n * E;
        if (c->scoring_func == MOE_SCORE_SOFTMAX) {
            float mx = z[0], sum = 0;
            for (int e = 1; e < E; e++) mx = z[e] > mx ? z[e] : mx;
            for (int e = 0; e < E; e++) sum += (s[e] = expf(z[e] - mx));
            for (int e = 0; e < E; e++) s[e] /= sum;
        } else {
            for (int e = 0; e < E; e++) s[e] = 1.0f / (1.0f + expf(-z[e]));
        }
        int *sel = a->sel + (size_t)n * K;
        float *w = a->w + (size_t)n * K;
        select_token(c, s, bias, sel);
        float sum = 0;
        for (int k = 0; k < K; k++) sum += (w[k] = s[sel[k]]);
        float norm = c->norm_topk_prob ? 1.0f / (sum + 1e-20f) : 1.0f;
        for (int k = 0; k < K; k++) w[k] *= norm * c->routed_scaling_factor;
    }
}

void moe_topk_ref(const MoeConfig *c, const float *scores, const float *bias, int N, int *sel) {
    // brute force over every K-subset is too slow; instead sort (s+b, index) pairs and walk
    int E = c->n_routed_experts, K = c->num_experts_per_tok;
    for (int n = 0; n < N; n++) {
        const float *s = scores + (size_t)n * E;
        int order[4096];
        for (int e = 0; e < E; e++) order[e] = e;
        // insertion sort: by s+b descending, index ascending
        for (int i = 1; i < E; i++) {
            int x = order[i], j = i - 1;
            float vx = s[x] + (bias ? bias[x] : 0);
            while (j >= 0) {
                float vj = s[order[j]] + (bias ? bias[order[j]] : 0);
                if (vj > vx || (vj == vx && order[j] < x)) break;
                order[j + 1] = order[j]; j--;
            }
            order[j + 1] = x;
        }
        int *out = sel + (size_t)n * K, m = 0;
        if (c->topk_method == MOE_TOPK_GREEDY) {
            for (int i = 0; i < K; i++) out[m++] = order[i];
        } else if (c->topk_method == MOE_TOPK_GROUP_LIMITED) {
            int G = c->n_group, per = E / G;
            float gs[4096]; int cnt[4096] = {0};
            for (int g = 0; g < G; g++) gs[g] = 0;
            for (int i = 0; i < E; i++) {   // the first two seen of a group are its top-2
                int g = order[i] / per;
                if (cnt[g]++ < 2) gs[g] += s[order[i]] + (bias ? bias[order[i]] : 0);
            }
            unsigned char keep[4096] = {0};
            for (int t = 0; t < c->topk_group; t++) {
                int best = -1;
                for (int g = 0; g < G; g++)
                    if (!keep[g] && (best < 0 || gs[g] > gs[best])) best = g;
                keep[best] = 1;
            }
            for (int i = 0; i < E && m < K; i++)
                if (keep[order[i] / per]) out[m++] = order[i];
        } else {
            int G = c->n_group, per = E / G, q = K / G;
            for (int g = 0; g < G; g++) {
                int got = 0;
                for (int i = 0; i < E && got < q; i++)
                    if (order[i] / per == g) { out[m++] = order[i]; got++; }
            }
        }
    }
}
