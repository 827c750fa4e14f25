// The attention block: h = x + Wo attention(rope(Wq xn), rope(Wk xn), Wv xn), xn = rmsnorm(x)
// (grouped-query attention, pre-norm).
#include <stdio.h>
#include "block.h"

static void attention_tensors(Layout *lo, const MoeConfig *c, int l, const ExpertShard *sh, ParamViews *v) {
    (void)sh;
    const int D = c->hidden_size, Hq = c->num_attention_heads * c->head_dim, Hk = c->num_key_value_heads * c->head_dim;
    LayerParams *p = &v->layer[l];
    char nm[96];
#define T(suffix, d0, d1, role, view) do { snprintf(nm, sizeof nm, "model.layers.%d.%s", l, suffix); \
        layout_tensor(lo, nm, d0, d1, role, view); } while (0)
    T("input_layernorm.weight", D, 0, role_norm(l), &p->in_norm);
    // q, k and v one after another: the backward pass reads them as one [Hq+2Hk, D] block
    T("self_attn.q_proj.weight", Hq, D, role_matrix(l), &p->wq);
    T("self_attn.k_proj.weight", Hk, D, role_matrix(l), &p->wk);
    T("self_attn.v_proj.weight", Hk, D, role_matrix(l), &p->wv);
    T("self_attn.o_proj.weight", D, Hq, role_matrix(l), &p->wo);
#undef T
}

const BlockKind BLOCK_ATTENTION = {"attention", attention_tensors};
