// Ownership: which routed experts (ExpertShard) and which layers (LayerShard) a process
// holds (model.h).
#include "../base/base.h"
#include "model.h"

int shard_experts(const ExpertShard *s, const MoeConfig *c) {
    if (!s || (!s->place && s->ne == 0)) return c->n_routed_experts;
    return s->place ? s->place->S : s->ne;
}

int shard_expert(const ExpertShard *s, int l, int j) {
    if (!s || (!s->place && s->ne == 0)) return j;
    if (!s->place) return s->e0 + j;
    return s->place->slot_expert[((size_t)l * s->place->P + s->rank) * s->place->S + j];
}

ExpertShard shard_at(const ExpertShard *s, int rank) {
    ExpertShard r = *s;
    r.rank = rank;
    if (!s->place) r.e0 = rank * s->ne;
    return r;
}

bool shard_holds(const ExpertShard *s, const MoeConfig *c, int rank, int l, int e) {
    const ExpertShard r = shard_at(s, rank);
    for (int j = 0, n = shard_experts(&r, c); j < n; j++)
        if (shard_expert(&r, l, j) == e) return true;
    return false;
}

int layer_cuts(const MoeConfig *c, int S, int V, const int *counts, int n_counts, int *cut) {
    const int L = c->num_hidden_layers, M = config_n_layers(c) - L, K = S * V;
    if (S < 1 || V < 1) MOE_ERR("--pp %d and --vpp %d must be positive", S, V);
    if (K > PP_MAX_CHUNKS) MOE_ERR("--pp %d x --vpp %d = %d chunks, more than %d", S, V, K, PP_MAX_CHUNKS);
    if (K > L) MOE_ERR("--pp %d x --vpp %d = %d chunks for %d layers: at most one chunk a layer", S, V, K, L);
    cut[0] = 0;
    if (counts) {
        if (n_counts != K) MOE_ERR("--pp-layers has %d counts for %d chunks (--pp x --vpp)", n_counts, K);
        for (int g = 0; g < K; g++) {
            if (counts[g] < 1) MOE_ERR("--pp-layers: chunk %d has %d layers (at least 1)", g, counts[g]);
            cut[g + 1] = cut[g] + counts[g];
        }
        if (cut[K] != L) MOE_ERR("--pp-layers counts %d layers, the model has %d (num_hidden_layers)", cut[K], L);
    } else {
        for (int g = 0; g < K; g++) cut[g + 1] = cut[g] + L / K + (g < L % K);
    }
    cut[K] += M;   // the MTP modules with the last chunk
    return MOE_OK;
}

bool layer_shard_holds(const LayerShard *ls, const MoeConfig *c, int l) {
    if (!ls || ls->S <= 1) return true;
    const int K = ls->S * ls->V, last = ls->stage == ls->S - 1;
    if (l < 0) return ls->stage == 0 || (last && (c->tie_word_embeddings || config_n_layers(c) > c->num_hidden_layers));
    if (l >= config_n_layers(c)) return last;
    for (int g = ls->stage; g < K; g += ls->S)
        if (l >= ls->cut[g] && l < ls->cut[g + 1]) return true;
    return false;
}

void layer_shard_chunk(const LayerShard *ls, int j, int *l0, int *n) {
    const int g = j * ls->S + ls->stage;
    *l0 = ls->cut[g];
    *n = ls->cut[g + 1] - ls->cut[g];
}

LayerShard layer_shard_at(const LayerShard *ls, int stage) {
    LayerShard r = *ls;
    r.stage = stage;
    return r;
}

void layer_shard_mark(Model *m, const LayerShard *ls) {
    if (!ls || ls->S <= 1) return;
    LayerShard first = layer_shard_at(ls, 0), last = layer_shard_at(ls, ls->S - 1);
    if (!layer_shard_holds(&last, &m->cfg, -1)) return;   // the last stage has no copy
    (void)first;
    for (int i = 0; i < m->n_tensors; i++)
        if (m->tensors[i].embedding) {
            m->tensors[i].pp_shared = true;
            m->tensors[i].pp_copy = ls->stage == ls->S - 1;
        }
}
