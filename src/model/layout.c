// The parameter blob: the tensors the stack's blocks declare (block.h), in order, for one
// ExpertShard; views point into the parameter and gradient blobs.
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "../base/base.h"
#include "block.h"

struct Layout {
    Model *m;
    int cap;
    float *base;           // NULL: the first walk, which lists the tensors
    int idx;
};

void layout_tensor(Layout *lo, const char *name, int d0, int d1, TensorRole role, float **view) {
    Model *m = lo->m;
    if (lo->base) { *view = lo->base + m->tensors[lo->idx++].offset; return; }
    if (m->n_tensors == lo->cap) {
        lo->cap = lo->cap ? lo->cap * 2 : 64;
        ParamTensor *t = MOE_NEW(ParamTensor, lo->cap);
        if (m->tensors) { memcpy(t, m->tensors, sizeof(ParamTensor) * m->n_tensors); moe_free(m->tensors); }
        m->tensors = t;
    }
    ParamTensor *t = &m->tensors[m->n_tensors++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->ndim = d1 ? 2 : 1;
    t->shape[0] = d0;
    t->shape[1] = d1;
    t->numel = (size_t)d0 * (d1 ? d1 : 1);
    t->offset = m->n_params;
    t->decay = role.decay;
    t->expert = role.expert >= 0;
    t->expert_id = role.expert;
    t->layer = role.layer;
    t->embedding = role.embedding;
    t->gain = role.gain;
    m->n_params += t->numel;
}

int model_layer_blocks(const MoeConfig *c, int l, const BlockKind **out) {
    int n = 0;
    if (l >= c->num_hidden_layers) out[n++] = &BLOCK_MTP;   // a multi-token-prediction module's input
    out[n++] = config_is_mla(c) ? &BLOCK_MLA : &BLOCK_ATTENTION;
    if (!config_layer_is_moe(c, l)) out[n++] = &BLOCK_DENSE_FFN;
    else {
        out[n++] = &BLOCK_MOE_FFN;
        if (c->n_shared_experts > 0) out[n++] = &BLOCK_SHARED_EXPERT;
    }
    return n;
}

static void layout_walk(Layout *lo, const MoeConfig *c, const ExpertShard *sh, const LayerShard *ls, ParamViews *v) {
    const int L = config_n_layers(c);
    if (layer_shard_holds(ls, c, -1)) BLOCK_EMBEDDING.tensors(lo, c, -1, sh, v);
    for (int l = 0; l < L; l++) {
        if (!layer_shard_holds(ls, c, l)) continue;
        const BlockKind *b[8];
        for (int i = 0, n = model_layer_blocks(c, l, b); i < n; i++) b[i]->tensors(lo, c, l, sh, v);
    }
    if (layer_shard_holds(ls, c, L)) BLOCK_HEAD.tensors(lo, c, L, sh, v);
}

void model_layout(Model *m, const MoeConfig *c) { model_layout_sharded(m, c, NULL); }

void model_layout_sharded(Model *m, const MoeConfig *c, const ExpertShard *sh) { model_layout_staged(m, c, sh, NULL); }

void model_layout_staged(Model *m, const MoeConfig *c, const ExpertShard *sh, const LayerShard *ls) {
    memset(m, 0, sizeof *m);
    m->cfg = *c;
    Layout lo = {m, 0, NULL, 0};
    ParamViews scratch = {.layer = MOE_NEW(LayerParams, config_n_layers(c))};
    layout_walk(&lo, c, sh, ls, &scratch);
    moe_free(scratch.layer);
}

void model_build(Model *m, const MoeConfig *c, bool with_grads) { model_build_sharded(m, c, with_grads, NULL); }

void model_build_sharded(Model *m, const MoeConfig *c, bool with_grads, const ExpertShard *sh) {
    model_build_staged(m, c, with_grads, sh, NULL);
}

void model_build_staged(Model *m, const MoeConfig *c, bool with_grads, const ExpertShard *sh, const LayerShard *ls) {
    model_layout_staged(m, c, sh, ls);
    MemCategory old = mem_category(MEM_PARAMS);
    m->params = MOE_NEW(float, m->n_params);
    m->w.layer = MOE_NEW(LayerParams, config_n_layers(c));
    Layout lo = {m, 0, m->params, 0};
    layout_walk(&lo, c, sh, ls, &m->w);
    if (with_grads) {
        mem_category(MEM_GRADS);
        m->grads = MOE_NEW(float, m->n_params);
        mem_category(MEM_PARAMS);
        m->g.layer = MOE_NEW(LayerParams, config_n_layers(c));
        lo = (Layout){m, 0, m->grads, 0};
        layout_walk(&lo, c, sh, ls, &m->g);
    }
    m->bias = MOE_NEW(float, (size_t)config_n_layers(c) * (c->n_routed_experts > 0 ? c->n_routed_experts : 1));
    if (c->yarn) {
        // the attention factor: given, or mscale(factor, mscale) / mscale(factor, mscale_all_dim)
        // when both are set, else mscale(factor) (mscale(f, m) = 0.1 m ln f + 1, 1 for f <= 1)
#define MSCALE(f, m) ((f) <= 1 ? 1.0f : 0.1f * (m) * logf(f) + 1.0f)
        float af = c->yarn_attention_factor;
        if (af == 0) af = c->yarn_mscale && c->yarn_mscale_all_dim ? MSCALE(c->yarn_factor, c->yarn_mscale) / MSCALE(c->yarn_factor, c->yarn_mscale_all_dim)
                                                                     : MSCALE(c->yarn_factor, 1.0f);
#undef MSCALE
        rope_table_init_yarn(&m->rope, c->max_position_embeddings, config_rope_dim(c), c->rope_theta, c->rope_interleave,
                             c->yarn_factor, c->yarn_original_max_pos, c->yarn_beta_fast, c->yarn_beta_slow, af);
    } else {
        rope_table_init(&m->rope, c->max_position_embeddings, config_rope_dim(c), c->rope_theta, c->rope_interleave);
    }
    mem_category(old);
}

void model_free(Model *m) {
    moe_free(m->tensors); moe_free(m->params); moe_free(m->grads);
    moe_free(m->w.layer); moe_free(m->g.layer); moe_free(m->bias);
    rope_table_free(&m->rope);
    memset(m, 0, sizeof *m);
}

int model_find_tensor(const Model *m, const char *name) {
    for (int i = 0; i < m->n_tensors; i++)
        if (!strcmp(m->tensors[i].name, name)) return i;
    return -1;
}

void model_init_weights(Model *m, unsigned long long seed) {
    // PyTorch's defaults, which small models learn much faster from than GPT-2's N(0, 0.02)
    // (numbers__place_value: 0.99 exact match after 100 s against 0.28): embeddings N(0,1)
    // as nn.Embedding; matrices N(0, 1/(3 fan_in)), the variance of nn.Linear's uniform
    // init. A tied embedding is also the output head, so it starts at N(0, 1/D) instead.
    // Norms start at 1 (the sandwich norm's post-norms at c/sqrt(L), as their blocks
    // declare), the balance bias at 0. TinyInit (init_method "tiny") draws every matrix
    // with std sqrt(1/(2 D L)) and the embedding with 0.5, as Pangu Ultra does.
    // Each tensor draws from its own stream (the seed and its name), so a process that
    // holds some of the experts initialises them exactly as one that holds them all.
    Rng r;
    for (int i = 0; i < m->n_tensors; i++) {
        ParamTensor *t = &m->tensors[i];
        float *p = m->params + t->offset;
        uint64_t h = 1469598103934665603ULL;   // FNV-1a of the name
        for (const char *q = t->name; *q; q++) h = (h ^ (unsigned char)*q) * 1099511628211ULL;
        rng_seed(&r, seed ^ (h * 0x9E3779B97F4A7C15ULL));
        if (t->ndim == 1) { for (size_t j = 0; j < t->numel; j++) p[j] = t->gain ? t->gain : 1.0f; continue; }
        float s = 1.0f / sqrtf(3.0f * t->shape[1]);
        if (t->embedding) s = m->cfg.tie_word_embeddings ? 1.0f / sqrtf((float)t->shape[1]) : 1.0f;
        if (m->cfg.init_method == MOE_INIT_TINY)   // TinyInit (Pangu Ultra): sqrt(1/(2 D L)), embedding 0.5
            s = t->embedding ? 0.5f : sqrtf(1.0f / (2.0f * m->cfg.hidden_size * m->cfg.num_hidden_layers));
        for (size_t j = 0; j < t->numel; j++) p[j] = s * rng_normal(&r);
    }
    memset(m->bias, 0, sizeof(float) * (size_t)config_n_layers(&m->cfg) * imax(m->cfg.n_routed_experts, 1));
}

