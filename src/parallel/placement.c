// Dynamic expert placement at run time (DeepSeek's EPLB): a new placement from the loads
// of the last window, kept per layer unless it pays, and the move of the experts' weights
// and moments to their new ranks (par_reshard).
#include <math.h>
#include <string.h>
#include "../base/base.h"
#include "parallel.h"

int par_migrate(Model *m, ExpertShard *sh, AdamW *opt, const MoePlacement *np) {
    const MoeConfig *c = &m->cfg;
    const int P = np->P;
    const ExpertShard nsh = {0, 0, np, sh->rank, sh->comm};
    Model nm;
    model_build_sharded(&nm, c, true, &nsh);
    AdamW no;
    adamw_alloc(&no, nm.n_params);
    no.t = opt->t;
    memcpy(nm.bias, m->bias, sizeof(float) * (size_t)config_n_layers(c) * c->n_routed_experts);
    Model *from = MOE_NEW(Model, 2 * P), *to = from + P;
    for (int q = 0; q < P; q++) {
        const ExpertShard a = shard_at(sh, q), b = shard_at(&nsh, q);
        model_layout_sharded(&from[q], c, &a);
        model_layout_sharded(&to[q], c, &b);
    }
    float *src[3] = {m->params, opt->m, opt->v}, *dst[3] = {nm.params, no.m, no.v};
    int rc = par_reshard(from, to, 3, src, dst);
    for (int q = 0; q < 2 * P; q++) model_free(&from[q]);
    moe_free(from);
    if (rc) { adamw_free(&no); model_free(&nm); return MOE_FAIL; }
    model_free(m);
    adamw_free(opt);
    *m = nm;
    *opt = no;
    *sh = nsh;
    return MOE_OK;
}

// the slots of layer l under placement np that this model's ranks do not hold yet
int par_layer_moves(const MoeConfig *c, const ExpertShard *sh, const MoePlacement *np, int l) {
    const int G = np->P * np->S;
    const int *se = np->slot_expert + (size_t)l * G;
    int n = 0;
    for (int g = 0; g < G; g++) n += !shard_holds(sh, c, g / np->S, l, se[g]);
    return n;
}

int par_place_again(Model *m, ExpertShard *sh, AdamW *opt, const double *win_load, int R, PlaceCost *pc, MoePlacement *np,
                    int *moved, double *before, double *after) {
    const MoeConfig *c = &m->cfg;
    const DistInfo *di = dist_info();
    const int L = config_n_layers(c), E = c->n_routed_experts, ep = di->ep;
    moe_placement_alloc(np, L, E, ep, R);
    const int S = np->S, G = ep * S;
    double *rl = MOE_NEW(double, 2 * ep), *rt = rl + ep;
    int *ov = MOE_NEW(int, ep * ep + 3 * ep + G), *to = ov + ep * ep, *used = to + ep, *done = used + ep, *tmp = done + ep;
    int rc = MOE_OK;
    *moved = 0;
    *before = *after = 0;
    for (int l = 0; l < L && rc == MOE_OK; l++) {
        if (!config_layer_is_moe(c, l)) continue;
        int *se = np->slot_expert + (size_t)l * G;
        const double *ld = win_load + (size_t)l * E;
        if ((rc = moe_place(ld, E, ep, R, se, rl))) break;
        // ranks are interchangeable: new rank p becomes the old rank that already holds most
        // of its experts (greedy), so that fewer experts move
        for (int p = 0; p < ep; p++)
            for (int q = 0; q < ep; q++) {
                ov[p * ep + q] = 0;
                for (int j = 0; j < S; j++) ov[p * ep + q] += shard_holds(sh, c, q, l, se[p * S + j]);
            }
        for (int p = 0; p < ep; p++) to[p] = used[p] = done[p] = 0;
        for (int k = 0; k < ep; k++) {
            int bp = -1, bq = -1;
            for (int p = 0; p < ep; p++)
                for (int q = 0; q < ep; q++)
                    if (!done[p] && !used[q] && (bp < 0 || ov[p * ep + q] > ov[bp * ep + bq])) { bp = p; bq = q; }
            to[bp] = bq;
            done[bp] = used[bq] = 1;
        }
        for (int p = 0; p < ep; p++) {
            memcpy(tmp + to[p] * S, se + p * S, sizeof(int) * S);
            rt[to[p]] = rl[p];
        }
        memcpy(se, tmp, sizeof(int) * G);
        double mx = 0, sum = 0, bmx = 0;
        for (int p = 0; p < ep; p++) {
            mx = fmax(mx, rt[p]); sum += rt[p];
            double b = 0;   // the current placement, by the same prediction
            for (int e = 0; e < E; e++)
                if (shard_holds(sh, c, p, l, e)) b += ld[e] / (sh->place ? sh->place->rep_n[(size_t)l * E + e] : 1);
            bmx = fmax(bmx, b);
        }
        // a layer stays as it is when its current placement is within 2% of the new one, or
        // when moving its experts would cost more than the window's time the move saves
        const int moves = par_layer_moves(c, sh, np, l);
        const bool pays = pc->always || pc->s_per_move == 0 || (bmx - mx) * pc->s_per_row * pc->windows > moves * pc->s_per_move;
        if (sh->place && (bmx <= 1.02 * mx || !pays)) {   // kept: nothing of this layer moves
            memcpy(se, sh->place->slot_expert + (size_t)l * G, sizeof(int) * G);
            mx = bmx;
        } else *moved += moves;
        rc = moe_placement_index(np, l);
        if (sum > 0) { *after = fmax(*after, mx * ep / sum); *before = fmax(*before, bmx * ep / sum); }
    }
    moe_free(ov);
    moe_free(rl);
    double t0 = time_now();
    if (rc == MOE_OK && sh->place && *moved == 0) sh->place = np;   // the same slots: nothing to rebuild
    else if (rc == MOE_OK) rc = par_migrate(m, sh, opt, np);
    if (rc == MOE_OK && *moved > 0) {   // every rank must decide alike: the slowest rank's figure
        double dt = time_now() - t0;
        rc = dist_max_f64(&dt, 1, DIST_WORLD);
        pc->s_per_move = dt / *moved;
    }
    if (rc) moe_placement_free(np);
    return rc;
}

