// The MoE feed-forward block: xn = rmsnorm(h), the router's scores and top-K, and the routed
// experts (SwiGLU each) over the rows dispatched to them, on this process or their owners'.
#include <stdio.h>
#include "block.h"

static void moe_ffn_tensors(Layout *lo, const MoeConfig *c, int l, const ExpertShard *sh, ParamViews *v) {
    const int D = c->hidden_size, E = c->n_routed_experts, F = c->moe_intermediate_size;
    LayerParams *p = &v->layer[l];
    char nm[96];
    snprintf(nm, sizeof nm, "model.layers.%d.post_attention_layernorm.weight", l);
    layout_tensor(lo, nm, D, 0, role_norm(l), &p->post_norm);
    snprintf(nm, sizeof nm, "model.layers.%d.mlp.gate.weight", l);
    layout_tensor(lo, nm, E, D, role_matrix(l), &p->router);
    // this process's experts (its shard): expert j's gate_proj and up_proj side by side
    // ([2F, D], one GEMM), the experts one after another, then their down_proj
    const int n = shard_experts(sh, c);
    for (int j = 0; j < n; j++) {
        const int e = shard_expert(sh, l, j);
        const TensorRole r = {l, e, true, false};
        float *view;
        snprintf(nm, sizeof nm, "model.layers.%d.mlp.experts.%d.gate_proj.weight", l, e);
        layout_tensor(lo, nm, F, D, r, j == 0 ? &p->e_gate_up : &view);
        snprintf(nm, sizeof nm, "model.layers.%d.mlp.experts.%d.up_proj.weight", l, e);
        layout_tensor(lo, nm, F, D, r, &view);
    }
    for (int j = 0; j < n; j++) {
        const int e = shard_expert(sh, l, j);
        float *view;
        snprintf(nm, sizeof nm, "model.layers.%d.mlp.experts.%d.down_proj.weight", l, e);
        layout_tensor(lo, nm, D, F, (TensorRole){l, e, true, false}, j == 0 ? &p->e_down : &view);
    }
}

const BlockKind BLOCK_MOE_FFN = {"moe_ffn", moe_ffn_tensors};
