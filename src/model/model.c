// The stages of a pass over one micro-batch (or one half of it): what each StageKind does,
// made of the blocks' passes (blk_*.c) at layer l. The schedule (schedule.c) decides their
// order, interleaving two halves of a micro-batch so that one half's expert-parallel
// exchanges are in flight while the other half computes.
#include <string.h>
#include "../base/base.h"
#include "pass.h"

static bool is_moe(const Pass *P, int l) { return config_layer_is_moe(&P->m->cfg, l); }

// attention block, then the FFN's input norm and the dense FFN, or the router and the
// dispatch of the MoE layer
static int fwd_attn(Pass *P, int l) {
    if (l >= P->m->cfg.num_hidden_layers) blk_mtp_forward(P, l);
    if (config_is_mla(&P->m->cfg)) blk_mla_forward(P, l);
    else blk_attention_forward(P, l);
    blk_ffn_norm_forward(P, l);
    if (!is_moe(P, l)) { blk_dense_ffn_forward(P, l); return MOE_OK; }
    return blk_moe_route_forward(P, l);
}

// the routed experts' outputs join the stream; balance loss and statistics; bf16 stash
static int fwd_finish(Pass *P, int l) {
    if (is_moe(P, l)) MOE_TRY(blk_moe_finish_forward(P, l));
    if (P->m->cfg.sandwich_norm) blk_ffn_post_forward(P, l);
    if (P->a->bf16) acts_stash(P->a, P->m, l, P->b->N, true);
    P->x = pass_resid(P->a, l + 1, P->b->N);
    return MOE_OK;
}

// x_{l+1} = h + ffn(xn2), xn2 = rmsnorm(h): dh = dx + rmsnorm^T(ffn^T(dx)). First what the
// backward pass reads comes back (bf16 unpack, recomputation); then the dense FFN's backward
// pass, or the routed experts' (on one process), or their output gradients start to the
// experts' owners
static int bwd_ffn_or_send(Pass *P, int l) {
    Acts *a = P->a;
    const size_t ND = (size_t)P->b->N * P->m->cfg.hidden_size;
    if (a->bf16) acts_stash(a, P->m, l, P->b->N, false);
    memcpy(a->dh, a->dx, sizeof(float) * ND);
    if (P->m->cfg.sandwich_norm) blk_ffn_post_backward(P, l);
    memset(a->dxn, 0, sizeof(float) * ND);
    acts_restore(P, l);
    if (!is_moe(P, l)) { blk_dense_ffn_backward(P, l); return MOE_OK; }
    return blk_moe_backward_start(P, l);
}

// the router (on one process; under expert parallelism the owners send the weights'
// gradients back with the rows, and bwd_attention runs it), shared experts
static int bwd_router_shared(Pass *P, int l) {
    if (!is_moe(P, l)) return MOE_OK;
    if (!pass_ep_comm(P)) blk_moe_router_backward(P, l);
    blk_shared_expert_backward(P, l);
    return MOE_OK;
}

// (expert parallelism: the experts' input gradients arrive, then the router's backward)
// the FFN's input norm's and the attention block's backward pass
static int bwd_attention(Pass *P, int l) {
    if (pass_ep_comm(P) && is_moe(P, l)) {
        MOE_TRY(blk_moe_backward_finish(P, l));
        blk_moe_router_backward(P, l);
    }
    blk_ffn_norm_backward(P, l);
    if (config_is_mla(&P->m->cfg)) blk_mla_backward(P, l);
    else blk_attention_backward(P, l);
    if (l >= P->m->cfg.num_hidden_layers) blk_mtp_backward(P, l);
    return MOE_OK;
}

int pass_run_stage(Pass *P, int kind, int l) {
    const bool moe = l >= 0 && l < config_n_layers(&P->m->cfg) && is_moe(P, l), ep = pass_ep_comm(P) != NULL;
    switch ((StageKind)kind) {
    case STAGE_FWD_BEGIN: return blk_embedding_forward(P);
    case STAGE_FWD_ATTN: return fwd_attn(P, l);
    case STAGE_FWD_EXPERTS: return moe ? blk_moe_experts_forward(P, l) : MOE_OK;
    case STAGE_FWD_SHARED:
        if (moe && P->m->cfg.n_shared_experts > 0) blk_shared_expert_forward(P, l);
        return MOE_OK;
    case STAGE_FWD_FINISH: return fwd_finish(P, l);
    case STAGE_FWD_END:
        if (P->last) return blk_head_forward(P);
        moe_free(P->kv_hi);   // a chunk below the top: its output stays in the stream
        P->kv_hi = NULL;
        return MOE_OK;
    case STAGE_BWD_BEGIN:
        if (P->last) blk_head_backward(P);
        else pass_chunk_dstream(P);   // d(output) is in acts_dstream already
        return MOE_OK;
    case STAGE_BWD_FFN_OR_SEND: return bwd_ffn_or_send(P, l);
    case STAGE_BWD_ROUTER_SHARED: return bwd_router_shared(P, l);
    case STAGE_BWD_OWNER_EXPERTS: return moe && ep ? blk_moe_owner_backward(P, l) : MOE_OK;
    case STAGE_BWD_ATTENTION: return bwd_attention(P, l);
    case STAGE_BWD_END:
        if (P->first) blk_embedding_backward(P);   // (else d(input) stays in acts_dstream)
        return MOE_OK;
    case STAGE_GRADS_READY: return P->o->grads_ready ? P->o->grads_ready(P->o->ctx, l) : MOE_OK;
    case STAGE_N_KINDS: break;
    }
    MOE_ERR("internal: no stage of kind %d", kind);
}

void pass_abort(Pass *P) { moe_free(P->kv_hi); P->kv_hi = NULL; }
