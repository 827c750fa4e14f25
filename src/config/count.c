// What a config's model counts: its MoE layers, its parameters (all, and those one token
// multiplies) and its training FLOPs per token (SPEC §5), as moe plan, bench and train report them.
#include "config.h"

int config_n_moe_layers(const MoeConfig *c) {
    int n = 0;
    for (int l = 0; l < config_n_layers(c); l++) n += config_layer_is_moe(c, l);
    return n;
}

// one layer's attention weights (matrices and norms)
static double attn_params(const MoeConfig *c) {
    const double D = c->hidden_size, H = c->num_attention_heads;
    if (config_is_mla(c)) {
        const double r = c->qk_rope_head_dim, qk = (double)c->qk_nope_head_dim + r, kvr = c->kv_lora_rank, qr = c->q_lora_rank;
        const double q = qr > 0 ? D * qr + qr + qr * H * qk : D * H * qk;
        return q + D * (kvr + r) + kvr + kvr * H * ((double)c->qk_nope_head_dim + c->v_head_dim) + H * c->v_head_dim * D;
    }
    const double q = H * c->head_dim, kv = (double)c->num_key_value_heads * c->head_dim;
    return D * q * 2 + D * kv * 2 + (c->qk_norm ? 2.0 * c->head_dim : 0);
}
// a layer's FFN weights that one token multiplies (active) or all of them
static double ffn_params(const MoeConfig *c, int l, bool active) {
    const double D = c->hidden_size;
    if (!config_layer_is_moe(c, l)) return 3.0 * D * c->intermediate_size;
    return D * c->n_routed_experts + 3.0 * D * c->moe_intermediate_size *
           ((active ? c->num_experts_per_tok : c->n_routed_experts) + c->n_shared_experts);
}
// the norms of a layer: input and FFN input, and the sandwich's two post-norms
static double norm_params(const MoeConfig *c) { return (c->sandwich_norm ? 4.0 : 2.0) * c->hidden_size; }
// a multi-token-prediction module besides its layer: two input norms, the [D, 2D] projection, its head's norm
static double mtp_params(const MoeConfig *c) { const double D = c->hidden_size; return 3 * D + 2 * D * D; }

void config_layer_params(const MoeConfig *c, int l, double *shared, double *routed) {
    const double D = c->hidden_size;
    *routed = config_layer_is_moe(c, l) ? 3.0 * D * c->moe_intermediate_size * c->n_routed_experts : 0;
    *shared = attn_params(c) + norm_params(c) + ffn_params(c, l, false) - *routed + (l >= c->num_hidden_layers ? mtp_params(c) : 0);
}

double config_active_params(const MoeConfig *c) {
    const double D = c->hidden_size;
    double n = 0;
    for (int l = 0; l < config_n_layers(c); l++) n += attn_params(c) + ffn_params(c, l, true);
    // the output head, once per MTP module too (it is shared), and their projections
    return n + D * c->vocab_size * (1 + c->num_mtp_layers) + c->num_mtp_layers * 2 * D * D;
}
double config_total_params(const MoeConfig *c) {
    const double D = c->hidden_size;
    double n = D * c->vocab_size * (c->tie_word_embeddings ? 1 : 2) + D;
    for (int l = 0; l < config_n_layers(c); l++) n += attn_params(c) + norm_params(c) + ffn_params(c, l, false);
    return n + c->num_mtp_layers * mtp_params(c);
}
// SPEC §5: 6 N_active + the attention scores' 6 L T D (causal: half of 12 L T D); under MLA the
// heads' q.k and p.v widths in place of D
double config_flops_per_token(const MoeConfig *c, int T) {
    const double w = config_is_mla(c) ? c->num_attention_heads * 0.5 * (config_qk_dim(c) + config_v_dim(c)) : c->hidden_size;
    return 6.0 * config_active_params(c) + 6.0 * config_n_layers(c) * (double)T * w;
}
