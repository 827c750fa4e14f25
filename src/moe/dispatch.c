#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "../base/base.h"
#include "moe.h"

typedef struct { float w; int n, k; } Cand;
static int cand_cmp(const void *x, const void *y) {   // highest w first, then lower token
    const Cand *a = x, *b = y;
    if (a->w != b->w) return a->w > b->w ? -1 : 1;
    return a->n - b->n;
}

void moe_dispatch(const MoeConfig *c, MoeActs *a, bool train) {
    int N = a->N, E = a->E, K = a->K;
    memset(a->load, 0, sizeof(int) * E);
    for (int i = 0; i < N * K; i++) { a->load[a->sel[i]]++; a->row[i] = 0; }
    a->dropped = 0;
    if (train && c->capacity_factor > 0) {
        // each expert keeps at most ceil(c N K / E) assignments, highest weight first
        int cap = (int)ceil((double)c->capacity_factor * N * K / E);
        Cand *cand = MOE_NEW(Cand, N * K);
        int *start = MOE_NEW(int, E + 1), *fill = MOE_NEW(int, E);
        for (int e = 0; e < E; e++) start[e + 1] = start[e] + a->load[e];
        for (int n = 0; n < N; n++)
            for (int k = 0; k < K; k++) {
                int e = a->sel[n * K + k];
                cand[start[e] + fill[e]++] = (Cand){a->w[n * K + k], n, k};
            }
        for (int e = 0; e < E; e++) {
            if (a->load[e] <= cap) continue;
            qsort(cand + start[e], a->load[e], sizeof(Cand), cand_cmp);
            for (int i = cap; i < a->load[e]; i++) {
                a->row[cand[start[e] + i].n * K + cand[start[e] + i].k] = -1;
                a->dropped++;
            }
        }
        moe_free(cand); moe_free(start); moe_free(fill);
    }
    // counting sort of the kept assignments by expert (or by replica slot under a
    // placement); rows keep token order
    const int nk = a->n_keys > 0 ? a->n_keys : E;
#define KEY(i) (a->n_keys > 0 ? a->key_slot[a->key_first[a->sel[i]] + ((i) / K) % a->key_n[a->sel[i]]] : a->sel[i])
    int *cnt = MOE_NEW(int, nk);
    for (int i = 0; i < N * K; i++)
        if (a->row[i] >= 0) cnt[KEY(i)]++;
    a->offsets[0] = 0;
    for (int e = 0; e < nk; e++) a->offsets[e + 1] = a->offsets[e] + cnt[e];
    a->A = a->offsets[nk];
    memcpy(cnt, a->offsets, sizeof(int) * nk);
    for (int i = 0; i < N * K; i++) {
        if (a->row[i] < 0) continue;
        int r = cnt[KEY(i)]++;
        a->row[i] = r;
        a->row_tok[r] = i / K;
        a->row_slot[r] = i;
    }
    moe_free(cnt);
#undef KEY
}
