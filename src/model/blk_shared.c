// The shared experts of a MoE layer: one dense SwiGLU of n_shared_experts x
// moe_intermediate_size over every token, on the MoE block's normalised input.
#include <stdio.h>
#include "block.h"

static void shared_expert_tensors(Layout *lo, const MoeConfig *c, int l, const ExpertShard *sh, ParamViews *v) {
    (void)sh;
    const int D = c->hidden_size, F = c->n_shared_experts * c->moe_intermediate_size;
    LayerParams *p = &v->layer[l];
    char nm[96];
#define T(suffix, d0, d1, view) do { snprintf(nm, sizeof nm, "model.layers.%d.%s", l, suffix); \
        layout_tensor(lo, nm, d0, d1, role_matrix(l), view); } while (0)
    T("mlp.shared_experts.gate_proj.weight", F, D, &p->s_gate);   // gate then up: one [2F, D] GEMM
    T("mlp.shared_experts.up_proj.weight", F, D, &p->s_up);
    T("mlp.shared_experts.down_proj.weight", D, F, &p->s_down);
#undef T
}

const BlockKind BLOCK_SHARED_EXPERT = {"shared_expert", shared_expert_tensors};
