// Dynamic expert placement (DeepSeek's EPLB, Pangu's dynamic device balancing): from the
// experts' recent loads, give the hottest experts extra replicas and pack all replicas onto
// the ranks of an EP group so that the predicted per-rank load is even.
#include <stdlib.h>
#include <string.h>
#include "../base/base.h"
#include "moe.h"

typedef struct { double load; int expert; } Replica;
static int by_load_desc(const void *x, const void *y) {
    const Replica *a = x, *b = y;
    if (a->load != b->load) return a->load > b->load ? -1 : 1;
    return a->expert - b->expert;   // deterministic: every rank computes the same placement
}

int moe_place(const double *load, int E, int P, int R, int *slot_expert, double *rank_load) {
    if (P <= 0 || E <= 0 || R < 0 || (E + R) % P) MOE_ERR("placement: %d experts + %d redundant slots do not split over %d ranks", E, R, P);
    const int S = (E + R) / P;
    if (S < 1) MOE_ERR("placement: no slot per rank");
    // 1. replicas: each extra slot goes to the expert with the highest load per replica
    // (at most one replica per rank)
    if (R > E * (P - 1)) MOE_ERR("placement: %d redundant slots exceed one replica of each expert per rank", R);
    int *rep = MOE_NEW(int, E);
    for (int e = 0; e < E; e++) rep[e] = 1;
    for (int r = 0; r < R; r++) {
        int best = -1;
        for (int e = 0; e < E; e++)
            if (rep[e] < P && (best < 0 || load[e] * rep[best] > load[best] * rep[e])) best = e;
        rep[best]++;
    }
    // 2. pack: replicas by load (each carries load / replicas), heaviest first, each onto the
    // least loaded rank with a free slot; a rank holds at most one replica of an expert
    Replica *all = MOE_NEW(Replica, E + R);
    int n = 0;
    for (int e = 0; e < E; e++)
        for (int k = 0; k < rep[e]; k++) all[n++] = (Replica){load[e] / rep[e], e};
    qsort(all, n, sizeof *all, by_load_desc);
    int *fill = MOE_NEW(int, P);
    for (int p = 0; p < P; p++) rank_load[p] = 0;
    int rc = MOE_OK;
    for (int i = 0; i < n && rc == MOE_OK; i++) {
        int best = -1;
        for (int p = 0; p < P; p++) {
            if (fill[p] == S) continue;
            bool has = false;
            for (int s = 0; s < fill[p] && !has; s++) has = slot_expert[p * S + s] == all[i].expert;
            if (has) continue;
            if (best < 0 || rank_load[p] < rank_load[best]) best = p;
        }
        if (best < 0) { moe_seterr("placement: expert %d has more replicas than ranks", all[i].expert); rc = MOE_FAIL; break; }
        slot_expert[best * S + fill[best]++] = all[i].expert;
        rank_load[best] += all[i].load;
    }
    // each rank's slots in expert order (its grouped GEMMs then run expert by expert)
    for (int p = 0; p < P && rc == MOE_OK; p++)
        for (int a = 1; a < S; a++)
            for (int b = a; b > 0 && slot_expert[p * S + b - 1] > slot_expert[p * S + b]; b--) {
                int t = slot_expert[p * S + b]; slot_expert[p * S + b] = slot_expert[p * S + b - 1]; slot_expert[p * S + b - 1] = t;
            }
    moe_free(rep); moe_free(all); moe_free(fill);
    return rc;
}

void moe_placement_alloc(MoePlacement *pl, int L, int E, int P, int R) {
    memset(pl, 0, sizeof *pl);
    pl->L = L; pl->E = E; pl->P = P; pl->R = R; pl->S = (E + R) / P;
    pl->slot_expert = MOE_NEW(int, (size_t)L * P * pl->S);
    pl->rep_slot = MOE_NEW(int, (size_t)L * P * pl->S);
    pl->rep_n = MOE_NEW(int, (size_t)L * E);
    pl->rep_first = MOE_NEW(int, (size_t)L * E);
}
void moe_placement_free(MoePlacement *pl) {
    moe_free(pl->slot_expert); moe_free(pl->rep_slot); moe_free(pl->rep_n); moe_free(pl->rep_first);
    memset(pl, 0, sizeof *pl);
}
int moe_placement_index(MoePlacement *pl, int l) {
    const int E = pl->E, G = pl->P * pl->S;
    const int *se = pl->slot_expert + (size_t)l * G;
    int *n = pl->rep_n + (size_t)l * E, *first = pl->rep_first + (size_t)l * E, *rs = pl->rep_slot + (size_t)l * G;
    memset(n, 0, sizeof(int) * E);
    for (int g = 0; g < G; g++) n[se[g]]++;
    for (int e = 0, o = 0; e < E; e++) {
        if (n[e] == 0) MOE_ERR("placement: expert %d of layer %d has no slot", e, l);
        first[e] = o;
        o += n[e];
    }
    int *fill = MOE_NEW(int, E);
    for (int g = 0; g < G; g++) rs[first[se[g]] + fill[se[g]]++] = g;
    moe_free(fill);
    return MOE_OK;
}
