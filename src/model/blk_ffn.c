// The dense feed-forward block: x + Wd (silu(Wg xn) * Wu xn), xn = rmsnorm(h).
#include <stdio.h>
#include "block.h"

static void dense_ffn_tensors(Layout *lo, const MoeConfig *c, int l, const ExpertShard *sh, ParamViews *v) {
    (void)sh;
    const int D = c->hidden_size, F = c->intermediate_size;
    LayerParams *p = &v->layer[l];
    char nm[96];
#define T(suffix, d0, d1, role, view) do { snprintf(nm, sizeof nm, "model.layers.%d.%s", l, suffix); \
        layout_tensor(lo, nm, d0, d1, role, view); } while (0)
    T("post_attention_layernorm.weight", D, 0, role_norm(l), &p->post_norm);
    T("mlp.gate_proj.weight", F, D, role_matrix(l), &p->gate);   // gate then up: one [2F, D] GEMM
    T("mlp.up_proj.weight", F, D, role_matrix(l), &p->up);
    T("mlp.down_proj.weight", D, F, role_matrix(l), &p->down);
#undef T
}

const BlockKind BLOCK_DENSE_FFN = {"dense_ffn", dense_ffn_tensors};
