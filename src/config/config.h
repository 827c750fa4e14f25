// MoeConfig: the model of SPEC §1 and its variants (MLA attention, q/k norm, sandwich norm,
// multi-token prediction, TinyInit), read from and written to a Hugging Face config.json in
// the key names of its model_type: moe_v1 (DeepSeek-V3 names), pangu_ultra_moe (openPangu's),
// deepseek_v3, qwen3_moe and mixtral (the reference library's). Defaults are documented in
// README "Config keys".
#pragma once
#include <stdbool.h>

typedef enum { MOE_SCORE_SOFTMAX = 0, MOE_SCORE_SIGMOID = 1 } MoeScoreFunc;
typedef enum { MOE_TOPK_GREEDY = 0, MOE_TOPK_GROUP_LIMITED = 1, MOE_TOPK_MOGE = 2 } MoeTopkMethod;
typedef enum { MOE_AUX_BATCH = 0, MOE_AUX_SEQUENCE = 1, MOE_AUX_EP_GROUP = 2 } MoeAuxScope;
// model_type: which key names config.json uses and which tensor names the checkpoint holds
typedef enum {
    MOE_FAMILY_MOE_V1 = 0, MOE_FAMILY_PANGU = 1, MOE_FAMILY_DEEPSEEK_V3 = 2, MOE_FAMILY_QWEN3_MOE = 3,
    MOE_FAMILY_MIXTRAL = 4, MOE_N_FAMILIES
} MoeFamily;
// initialisation: PyTorch's defaults (model.c), or TinyInit (std sqrt(1/(2 D L)), embedding 0.5)
typedef enum { MOE_INIT_PYTORCH = 0, MOE_INIT_TINY = 1 } MoeInit;

typedef struct {
    int vocab_size;              // V
    int hidden_size;             // D
    int num_hidden_layers;       // L
    int num_attention_heads;     // H
    int num_key_value_heads;     // Hkv
    int head_dim;                // hd
    int intermediate_size;       // Fd, dense FFN width
    int moe_intermediate_size;   // Fe, routed expert width
    int n_routed_experts;        // E
    int num_experts_per_tok;     // K
    int n_shared_experts;        // Fs = n_shared_experts * Fe
    int first_k_dense_replace;   // layers [0, this) are dense
    MoeScoreFunc scoring_func;
    MoeTopkMethod topk_method;
    int n_group, topk_group;
    bool norm_topk_prob;
    float routed_scaling_factor;
    float rms_norm_eps;
    float rope_theta;
    int max_position_embeddings;
    bool tie_word_embeddings;
    float aux_loss_alpha;
    MoeAuxScope aux_scope;
    float bias_update_speed;
    float capacity_factor;       // 0 = dropless
    MoeFamily family;            // model_type
    // multi-head latent attention when kv_lora_rank > 0 (DeepSeek-V2/V3, Pangu Ultra MoE):
    // queries through q_lora_rank (0: one q_proj), keys and values through a kv_lora_rank
    // latent, a RoPE key of qk_rope_head_dim shared by the heads
    int q_lora_rank, kv_lora_rank;
    int qk_nope_head_dim, qk_rope_head_dim, v_head_dim;
    bool qk_norm;                // Qwen3: RMSNorm over each head's q and k before RoPE
    bool rope_interleave;        // RoPE pairs (2i, 2i+1) (DeepSeek-V3's layout) instead of (i, i+d/2)
    bool sandwich_norm;          // depth-scaled sandwich norm: a norm after attention and after the FFN
    int num_mtp_layers;          // multi-token prediction modules after the stack
    float mtp_loss_weight;       // lambda: the MTP losses' weight (their mean times this)
    MoeInit init_method;
    // Qwen3's layer pattern: a layer is MoE when (l + 1) % decoder_sparse_step == 0 and l is
    // not in mlp_only_layers (and l >= first_k_dense_replace)
    int decoder_sparse_step;
    int n_mlp_only, mlp_only[64];
    // YaRN RoPE scaling (rope_type "yarn"), as the reference library computes it
    bool yarn;
    float yarn_factor, yarn_beta_fast, yarn_beta_slow, yarn_mscale, yarn_mscale_all_dim, yarn_attention_factor;
    int yarn_original_max_pos;
} MoeConfig;

extern const char *const MOE_FAMILY_NAMES[MOE_N_FAMILIES];   // the model_type strings

void config_defaults(MoeConfig *c);
// Parses and validates; errors name `path` and the key.
int config_load(MoeConfig *c, const char *path);
int config_parse(MoeConfig *c, const char *json_text, const char *path);
int config_validate(const MoeConfig *c, const char *path);
int config_save(const MoeConfig *c, const char *path);   // atomic (tmp + rename)
char *config_to_json(const MoeConfig *c);                // caller frees with free()

static inline bool config_layer_is_moe(const MoeConfig *c, int l) {
    if (l < c->first_k_dense_replace || c->n_routed_experts <= 0) return false;
    if (l >= c->num_hidden_layers) return true;   // a multi-token-prediction module's layer
    for (int i = 0; i < c->n_mlp_only; i++)
        if (c->mlp_only[i] == l) return false;
    return (l + 1) % c->decoder_sparse_step == 0;
}
static inline bool config_is_mla(const MoeConfig *c) { return c->kv_lora_rank > 0; }
// the layers with blocks: the stack's, then one per multi-token-prediction module
static inline int config_n_layers(const MoeConfig *c) { return c->num_hidden_layers + c->num_mtp_layers; }
// widths of a layer's attention: per head q/k (qk), v; the rotated part of each q/k head
static inline int config_qk_dim(const MoeConfig *c) {
    return config_is_mla(c) ? c->qk_nope_head_dim + c->qk_rope_head_dim : c->head_dim;
}
static inline int config_v_dim(const MoeConfig *c) { return config_is_mla(c) ? c->v_head_dim : c->head_dim; }
static inline int config_rope_dim(const MoeConfig *c) { return config_is_mla(c) ? c->qk_rope_head_dim : c->head_dim; }
// the softmax scale of attention: 1/sqrt(q.k width), under MLA with YaRN times mscale^2
float config_attn_scale(const MoeConfig *c);
int config_n_moe_layers(const MoeConfig *c);
// matrix weights one token multiplies (SPEC §5 N_active)
double config_active_params(const MoeConfig *c);
double config_total_params(const MoeConfig *c);
// layer l's parameters: those every token uses (attention, norms, dense FFN or router and
// shared experts, an MTP module's own) and the routed experts'
void config_layer_params(const MoeConfig *c, int l, double *shared, double *routed);
double config_flops_per_token(const MoeConfig *c, int T);   // 6 N_active + 6 L T D
// the reference library's family (deepseek_v3, qwen3_moe, mixtral) that computes c's math,
// with c's values; an error naming what has no counterpart there
int config_hf_family(const MoeConfig *c, MoeConfig *out);
