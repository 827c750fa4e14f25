// Expert ownership: which routed experts a process holds (model.h, ExpertShard).
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
