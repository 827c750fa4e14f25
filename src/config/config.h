// MoeConfig: the moe_v1 model of SPEC §1, read from and written to a Hugging Face style
// config.json (DeepSeek-V3 key names). Defaults are documented in README "Config keys".
#pragma once
#include <stdbool.h>

typedef enum { MOE_SCORE_SOFTMAX = 0, MOE_SCORE_SIGMOID = 1 } MoeScoreFunc;
typedef enum { MOE_TOPK_GREEDY = 0, MOE_TOPK_GROUP_LIMITED = 1, MOE_TOPK_MOGE = 2 } MoeTopkMethod;
typedef enum { MOE_AUX_BATCH = 0, MOE_AUX_SEQUENCE = 1, MOE_AUX_EP_GROUP = 2 } MoeAuxScope;

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
} MoeConfig;

void config_defaults(MoeConfig *c);
// Parses and validates; errors name `path` and the key.
int config_load(MoeConfig *c, const char *path);
int config_parse(MoeConfig *c, const char *json_text, const char *path);
int config_validate(const MoeConfig *c, const char *path);
int config_save(const MoeConfig *c, const char *path);   // atomic (tmp + rename)
char *config_to_json(const MoeConfig *c);                // caller frees with free()

static inline bool config_layer_is_moe(const MoeConfig *c, int l) {
    return l >= c->first_k_dense_replace && c->n_routed_experts > 0;
}
int config_n_moe_layers(const MoeConfig *c);
// matrix weights one token multiplies (SPEC §5 N_active)
double config_active_params(const MoeConfig *c);
double config_total_params(const MoeConfig *c);
double config_flops_per_token(const MoeConfig *c, int T);   // 6 N_active + 6 L T D
