#include "config.h"
#include <cjson/cJSON.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include "../base/base.h"
#include "../base/fileio.h"

void config_defaults(MoeConfig *c) {
    memset(c, 0, sizeof *c);
    c->vocab_size = 260;
    c->hidden_size = 256;
    c->num_hidden_layers = 4;
    c->num_attention_heads = 4;
    c->num_key_value_heads = 0;   // 0: same as heads
    c->head_dim = 0;              // 0: hidden_size / heads
    c->intermediate_size = 0;     // 0: 4 * hidden_size
    c->moe_intermediate_size = 0; // 0: hidden_size
    c->n_routed_experts = 8;
    c->num_experts_per_tok = 2;
    c->n_shared_experts = 1;
    c->first_k_dense_replace = 0;
    c->scoring_func = MOE_SCORE_SOFTMAX;
    c->topk_method = MOE_TOPK_GREEDY;
    c->n_group = 1;
    c->topk_group = 1;
    c->norm_topk_prob = true;
    c->routed_scaling_factor = 1.0f;
    c->rms_norm_eps = 1e-5f;
    c->rope_theta = 10000.0f;
    c->max_position_embeddings = 2048;
    c->tie_word_embeddings = false;
    c->aux_loss_alpha = 0.0f;
    c->aux_scope = MOE_AUX_BATCH;
    c->bias_update_speed = 0.0f;
    c->capacity_factor = 0.0f;
    c->mtp_loss_weight = 0.3f;    // DeepSeek-V3's lambda over its first 10T tokens
    c->decoder_sparse_step = 1;
}

float config_attn_scale(const MoeConfig *c) {
    float s = 1.0f / sqrtf((float)config_qk_dim(c));
    if (config_is_mla(c) && c->yarn && c->yarn_mscale_all_dim != 0 && c->yarn_factor > 1) {
        const float m = 0.1f * c->yarn_mscale_all_dim * logf(c->yarn_factor) + 1.0f;
        s *= m * m;
    }
    return s;
}

static int get_int(const cJSON *it, const char *path, int *out) {
    if (!cJSON_IsNumber(it) || it->valuedouble != floor(it->valuedouble) || fabs(it->valuedouble) > INT_MAX)
        MOE_ERR("%s: key \"%s\" must be an integer", path, it->string);
    *out = (int)it->valuedouble;
    return MOE_OK;
}
static int get_float(const cJSON *it, const char *path, float *out) {
    // a float that config_to_json can write back (JSON has no inf or nan)
    if (!cJSON_IsNumber(it) || !(fabs(it->valuedouble) <= FLT_MAX)) MOE_ERR("%s: key \"%s\" must be a finite number", path, it->string);
    *out = (float)it->valuedouble;
    return MOE_OK;
}
static int get_bool(const cJSON *it, const char *path, bool *out) {
    if (!cJSON_IsBool(it)) MOE_ERR("%s: key \"%s\" must be true or false", path, it->string);
    *out = cJSON_IsTrue(it);
    return MOE_OK;
}
static int get_enum(const cJSON *it, const char *path, const char *const *names, int n, int *out) {
    if (cJSON_IsString(it))
        for (int i = 0; i < n; i++)
            if (!strcmp(it->valuestring, names[i])) { *out = i; return MOE_OK; }
    char opts[256] = "";
    for (int i = 0; i < n; i++) { strcat(opts, i ? ", \"" : "\""); strcat(opts, names[i]); strcat(opts, "\""); }
    MOE_ERR("%s: key \"%s\" must be one of %s", path, it->string, opts);
}

static const char *const SCORE_NAMES[] = {"softmax", "sigmoid"};
static const char *const TOPK_NAMES[] = {"greedy", "group_limited", "moge"};
static const char *const SCOPE_NAMES[] = {"batch", "sequence", "ep_group"};
static const char *const INIT_NAMES[] = {"pytorch", "tiny"};
const char *const MOE_FAMILY_NAMES[MOE_N_FAMILIES] = {"moe_v1", "pangu_ultra_moe", "deepseek_v3", "qwen3_moe", "mixtral"};

// Which keys each model_type reads and writes, under which name. A field has at most one
// name per family; keys of moe.c's own training settings (balance, capacity, MTP weight,
// init) are accepted by every family and written for the reference library's families only
// when they differ from the default.
#define OWN (1u << MOE_FAMILY_MOE_V1 | 1u << MOE_FAMILY_PANGU)
#define DS (1u << MOE_FAMILY_DEEPSEEK_V3)
#define QW (1u << MOE_FAMILY_QWEN3_MOE)
#define MX (1u << MOE_FAMILY_MIXTRAL)
#define V1 (1u << MOE_FAMILY_MOE_V1)
#define PG (1u << MOE_FAMILY_PANGU)
#define ALL (OWN | DS | QW | MX)
typedef enum { K_INT, K_INT_NULL, K_FLT, K_BOOL, K_SCORE, K_TOPK, K_SCOPE, K_INIT } KeyKind;
typedef struct {
    const char *name;
    unsigned families;
    KeyKind kind;
    size_t off;
    bool setting;          // a training setting of moe.c's: written for every family only when not default
} KeyDef;
#define O(f) offsetof(MoeConfig, f)
static const KeyDef KEYS[] = {
    {"vocab_size", ALL, K_INT, O(vocab_size), false},
    {"hidden_size", ALL, K_INT, O(hidden_size), false},
    {"num_hidden_layers", ALL, K_INT, O(num_hidden_layers), false},
    {"num_attention_heads", ALL, K_INT, O(num_attention_heads), false},
    {"num_key_value_heads", ALL, K_INT, O(num_key_value_heads), false},
    {"head_dim", V1 | DS | QW | MX, K_INT_NULL, O(head_dim), false},   // (null: hidden / heads)
    {"intermediate_size", OWN | DS | QW, K_INT, O(intermediate_size), false},
    {"moe_intermediate_size", OWN | DS | QW, K_INT, O(moe_intermediate_size), false},
    {"intermediate_size", MX, K_INT, O(moe_intermediate_size), false},   // Mixtral: the experts' width
    {"n_routed_experts", V1 | DS, K_INT, O(n_routed_experts), false},
    {"num_routed_experts", PG, K_INT, O(n_routed_experts), false},
    {"num_experts", QW, K_INT, O(n_routed_experts), false},
    {"num_local_experts", QW, K_INT, O(n_routed_experts), false},   // as the library 5.x writes it
    {"num_local_experts", MX, K_INT, O(n_routed_experts), false},
    {"num_experts_per_tok", ALL, K_INT, O(num_experts_per_tok), false},
    {"n_shared_experts", V1 | DS, K_INT, O(n_shared_experts), false},
    {"num_shared_experts", PG, K_INT, O(n_shared_experts), false},
    {"first_k_dense_replace", V1 | DS, K_INT, O(first_k_dense_replace), false},
    {"num_dense_layers", PG, K_INT, O(first_k_dense_replace), false},
    {"scoring_func", OWN | DS, K_SCORE, O(scoring_func), false},
    {"topk_method", OWN | DS, K_TOPK, O(topk_method), false},
    {"n_group", OWN | DS, K_INT, O(n_group), false},
    {"topk_group", OWN | DS, K_INT, O(topk_group), false},
    {"norm_topk_prob", OWN | DS | QW, K_BOOL, O(norm_topk_prob), false},
    {"routed_scaling_factor", OWN | DS, K_FLT, O(routed_scaling_factor), false},
    {"rms_norm_eps", ALL, K_FLT, O(rms_norm_eps), false},
    {"rope_theta", ALL, K_FLT, O(rope_theta), false},
    {"max_position_embeddings", ALL, K_INT, O(max_position_embeddings), false},
    {"tie_word_embeddings", ALL, K_BOOL, O(tie_word_embeddings), false},
    {"q_lora_rank", V1 | DS, K_INT_NULL, O(q_lora_rank), false},
    {"kv_lora_rank", V1 | DS, K_INT, O(kv_lora_rank), false},
    {"qk_nope_head_dim", V1 | DS, K_INT, O(qk_nope_head_dim), false},
    {"qk_rope_head_dim", V1 | DS, K_INT, O(qk_rope_head_dim), false},
    {"v_head_dim", V1 | DS, K_INT, O(v_head_dim), false},
    {"attention_q_lora_dim", PG, K_INT_NULL, O(q_lora_rank), false},
    {"attention_kv_lora_dim", PG, K_INT, O(kv_lora_rank), false},
    {"attention_qk_dim", PG, K_INT, O(qk_nope_head_dim), false},
    {"attention_qk_rope_dim", PG, K_INT, O(qk_rope_head_dim), false},
    {"attention_v_dim", PG, K_INT, O(v_head_dim), false},
    {"rope_interleave", V1 | DS, K_BOOL, O(rope_interleave), false},
    {"qk_norm", V1, K_BOOL, O(qk_norm), false},
    {"sandwich_norm", OWN, K_BOOL, O(sandwich_norm), false},
    {"num_mtp_layers", OWN, K_INT, O(num_mtp_layers), false},
    {"num_nextn_predict_layers", DS, K_INT, O(num_mtp_layers), false},
    {"init_method", OWN, K_INIT, O(init_method), false},
    {"decoder_sparse_step", QW, K_INT, O(decoder_sparse_step), false},
    {"mtp_loss_weight", ALL, K_FLT, O(mtp_loss_weight), true},
    {"aux_loss_alpha", ALL, K_FLT, O(aux_loss_alpha), true},
    {"aux_scope", ALL, K_SCOPE, O(aux_scope), true},
    {"bias_update_speed", ALL, K_FLT, O(bias_update_speed), true},
    {"capacity_factor", ALL, K_FLT, O(capacity_factor), true},
};
#undef O
#define N_KEYS (int)(sizeof KEYS / sizeof *KEYS)

// Keys the reference library writes that do not change the math: accepted, not used.
static const char *const INFO_KEYS[] = {
    "architectures", "torch_dtype", "dtype", "transformers_version", "bos_token_id", "eos_token_id",
    "pad_token_id", "sep_token_id", "decoder_start_token_id", "use_cache", "initializer_range",
    "max_window_layers", "_name_or_path", "auto_map", "return_dict", "output_hidden_states",
    "output_attentions", "torchscript", "use_bfloat16", "tokenizer_class", "id2label", "label2id",
    "is_encoder_decoder", "is_decoder", "add_cross_attention", "tie_encoder_decoder", "chunk_size_feed_forward",
    "pruned_heads", "problem_type", "finetuning_task", "task_specific_params", "prefix", "tf_legacy_loss",
    "cross_attention_hidden_size", "ep_size", "output_router_logits", "router_aux_loss_coef",
    "qk_head_dim",   // DeepSeek-V3: derived (nope + rope), recomputed by the library on load
    // generation settings (generate's defaults, not the model's)
    "max_length", "min_length", "do_sample", "early_stopping", "num_beams", "num_beam_groups",
    "diversity_penalty", "temperature", "top_k", "top_p", "typical_p", "repetition_penalty",
    "length_penalty", "no_repeat_ngram_size", "encoder_no_repeat_ngram_size", "bad_words_ids",
    "num_return_sequences", "output_scores", "return_dict_in_generate", "forced_bos_token_id",
    "forced_eos_token_id", "remove_invalid_values", "exponential_decay_length_penalty",
    "suppress_tokens", "begin_suppress_tokens",
};

static bool is_info_key(const char *k) {
    for (size_t i = 0; i < sizeof INFO_KEYS / sizeof *INFO_KEYS; i++)
        if (!strcmp(k, INFO_KEYS[i])) return true;
    return false;
}

static int read_key(MoeConfig *c, const KeyDef *kd, const cJSON *it, const char *path) {
    void *dst = (char *)c + kd->off;
    int e;
    switch (kd->kind) {
    case K_INT_NULL: if (cJSON_IsNull(it)) { *(int *)dst = 0; return MOE_OK; } /* fall through */
    case K_INT: return get_int(it, path, (int *)dst);
    case K_FLT: return get_float(it, path, (float *)dst);
    case K_BOOL: return get_bool(it, path, (bool *)dst);
    case K_SCORE: MOE_TRY(get_enum(it, path, SCORE_NAMES, 2, &e)); c->scoring_func = e; return MOE_OK;
    case K_SCOPE: MOE_TRY(get_enum(it, path, SCOPE_NAMES, 3, &e)); c->aux_scope = e; return MOE_OK;
    case K_INIT: MOE_TRY(get_enum(it, path, INIT_NAMES, 2, &e)); c->init_method = e; return MOE_OK;
    case K_TOPK:
        // DeepSeek-V3's own name for group-limited selection with the correction bias
        if (cJSON_IsString(it) && !strcmp(it->valuestring, "noaux_tc")) { c->topk_method = MOE_TOPK_GROUP_LIMITED; return MOE_OK; }
        MOE_TRY(get_enum(it, path, TOPK_NAMES, 3, &e)); c->topk_method = e; return MOE_OK;
    }
    return MOE_OK;
}

// rope_scaling / rope_parameters: the default RoPE, or YaRN with its parameters
static int parse_rope(MoeConfig *c, const cJSON *it, const char *path) {
    const char *k = it->string;
    if (!cJSON_IsObject(it)) MOE_ERR("%s: key \"%s\" must be an object or null", path, k);
    const cJSON *t = cJSON_GetObjectItem(it, "rope_type");
    if (!t) t = cJSON_GetObjectItem(it, "type");
    const char *type = cJSON_IsString(t) ? t->valuestring : t ? "" : "default";
    for (const cJSON *x = it->child; x; x = x->next) {
        static const char *const known[] = {"rope_type", "type", "rope_theta", "factor", "original_max_position_embeddings",
                                            "beta_fast", "beta_slow", "mscale", "mscale_all_dim", "attention_factor",
                                            "truncate"};
        bool ok = false;
        for (size_t i = 0; i < sizeof known / sizeof *known; i++) ok |= !strcmp(x->string, known[i]);
        char pk[128];
        if (!ok) MOE_ERR("%s: key \"%s\" has \"%s\", which moe.c does not implement", path, k, moe_printable(pk, sizeof pk, x->string));
        if (strcmp(x->string, "rope_type") && strcmp(x->string, "type") &&
            !(cJSON_IsNumber(x) && fabs(x->valuedouble) <= FLT_MAX) && !(cJSON_IsBool(x) && !strcmp(x->string, "truncate")))
            MOE_ERR("%s: key \"%s\": \"%s\" must be a finite number", path, k, moe_printable(pk, sizeof pk, x->string));
    }
    const cJSON *th = cJSON_GetObjectItem(it, "rope_theta");
    if (th) c->rope_theta = (float)th->valuedouble;
    if (!strcmp(type, "default")) { c->yarn = false; return MOE_OK; }
    if (strcmp(type, "yarn"))
        { char pk[128]; MOE_ERR("%s: key \"%s\": rope_type \"%s\" is not supported (default or yarn)", path, k, moe_printable(pk, sizeof pk, type)); }
    const cJSON *tr = cJSON_GetObjectItem(it, "truncate");
    if (tr && !cJSON_IsTrue(tr)) MOE_ERR("%s: key \"%s\": truncate false is not supported", path, k);
#define NUM(name, dflt) (cJSON_GetObjectItem(it, name) ? (float)cJSON_GetObjectItem(it, name)->valuedouble : (dflt))
    c->yarn = true;
    c->yarn_original_max_pos = (int)NUM("original_max_position_embeddings", 0);
    c->yarn_factor = NUM("factor", 0);
    c->yarn_beta_fast = NUM("beta_fast", 32);
    c->yarn_beta_slow = NUM("beta_slow", 1);
    c->yarn_mscale = NUM("mscale", 0);
    c->yarn_mscale_all_dim = NUM("mscale_all_dim", 0);
    c->yarn_attention_factor = NUM("attention_factor", 0);
#undef NUM
    return MOE_OK;
}

// Keys whose every value but one (the one that leaves the math as moe.c computes it) is refused.
static int fixed_key(MoeConfig *c, const cJSON *it, const char *path, bool *known) {
    const char *k = it->string;
    *known = true;
#define REFUSE(why) MOE_ERR("%s: key \"%s\" %s", path, k, why)
    if (!strcmp(k, "hidden_act")) {
        if (!cJSON_IsString(it) || strcmp(it->valuestring, "silu")) REFUSE("must be \"silu\" (the experts are SwiGLU)");
    } else if (!strcmp(k, "attention_bias") || !strcmp(k, "mlp_bias") || !strcmp(k, "use_sliding_window")) {
        if (!cJSON_IsFalse(it)) REFUSE("must be false: moe.c has no biases and no sliding window");
    } else if (!strcmp(k, "attention_dropout") || !strcmp(k, "router_jitter_noise") || !strcmp(k, "hidden_dropout")) {
        if (!cJSON_IsNumber(it) || it->valuedouble != 0) REFUSE("must be 0: moe.c trains without dropout or noise");
    } else if (!strcmp(k, "pretraining_tp") || !strcmp(k, "moe_layer_freq")) {
        if (!cJSON_IsNumber(it) || it->valuedouble != 1) REFUSE("must be 1: every layer from the first MoE one is MoE");
    } else if (!strcmp(k, "mlp_only_layers") && c->family == MOE_FAMILY_QWEN3_MOE) {
        const cJSON *x;
        if (!cJSON_IsArray(it) || cJSON_GetArraySize(it) > 64) REFUSE("must be a list of at most 64 layer indices");
        c->n_mlp_only = 0;
        cJSON_ArrayForEach(x, it) {
            if (!cJSON_IsNumber(x) || x->valuedouble != floor(x->valuedouble) || x->valuedouble < 0 || x->valuedouble > 1e6)
                REFUSE("must list layer indices");
            c->mlp_only[c->n_mlp_only++] = (int)x->valuedouble;
        }
    } else if (!strcmp(k, "sliding_window")) {
        // used only with use_sliding_window (Qwen3); Mixtral's must be null
        if (!cJSON_IsNull(it) && !(c->family == MOE_FAMILY_QWEN3_MOE && cJSON_IsNumber(it)))
            REFUSE("must be null: moe.c attends over the whole sequence");
    } else if (!strcmp(k, "layer_types")) {
        const cJSON *x;
        if (!cJSON_IsArray(it)) REFUSE("must be a list");
        cJSON_ArrayForEach(x, it) if (!cJSON_IsString(x) || strcmp(x->valuestring, "full_attention"))
            REFUSE("must list \"full_attention\" layers only");
    } else if (!strcmp(k, "rope_scaling") || !strcmp(k, "rope_parameters")) {
        if (!cJSON_IsNull(it)) MOE_TRY(parse_rope(c, it, path));
    } else if (!strcmp(k, "quantization_config")) {
        REFUSE("is not supported: the weights must be F32, BF16 or F16");
    } else if (!strcmp(k, "seq_aux") && c->family == MOE_FAMILY_DEEPSEEK_V3) {
        bool b;
        MOE_TRY(get_bool(it, path, &b));
        if (b) c->aux_scope = MOE_AUX_SEQUENCE;
    } else *known = false;
#undef REFUSE
    return MOE_OK;
}

// Each family's defaults where they differ from moe_v1's (the reference library's for its
// own families, as its config classes set them).
static void family_defaults(MoeConfig *c, MoeFamily f) {
    c->family = f;
    switch (f) {
    case MOE_FAMILY_DEEPSEEK_V3:
        c->scoring_func = MOE_SCORE_SIGMOID; c->topk_method = MOE_TOPK_GROUP_LIMITED; c->rope_interleave = true;
        break;
    case MOE_FAMILY_PANGU:
        c->scoring_func = MOE_SCORE_SIGMOID;
        break;
    case MOE_FAMILY_QWEN3_MOE:
        c->n_shared_experts = 0; c->qk_norm = true; c->norm_topk_prob = false; c->rope_theta = 1e4f;
        break;
    case MOE_FAMILY_MIXTRAL:
        c->n_shared_experts = 0; c->rope_theta = 1e6f;
        break;
    default: break;
    }
}

static int parse_family(const cJSON *root, const char *path, MoeFamily *f) {
    const cJSON *mt = cJSON_GetObjectItem(root, "model_type");
    *f = MOE_FAMILY_MOE_V1;
    if (!mt) return MOE_OK;
    for (int i = 0; i < MOE_N_FAMILIES; i++)
        if (cJSON_IsString(mt) && !strcmp(mt->valuestring, MOE_FAMILY_NAMES[i])) { *f = (MoeFamily)i; return MOE_OK; }
    MOE_ERR("%s: \"model_type\" must be one of \"moe_v1\", \"pangu_ultra_moe\", \"deepseek_v3\", \"qwen3_moe\", \"mixtral\"", path);
}

int config_parse(MoeConfig *c, const char *text, const char *path) {
    config_defaults(c);
    cJSON *root = cJSON_ParseWithOpts(text, NULL, 1);   // nothing but white space after the object
    if (!root) {
        const char *at = cJSON_GetErrorPtr();
        int line = 1;
        if (at) for (const char *p = text; p < at; p++) line += *p == '\n';
        MOE_ERR("%s: malformed JSON near line %d", path, line);
    }
    if (!cJSON_IsObject(root)) { cJSON_Delete(root); MOE_ERR("%s: expected a JSON object", path); }
    MoeFamily fam;
    int rc = parse_family(root, path, &fam);
    if (rc == MOE_OK) family_defaults(c, fam);
    const unsigned bit = 1u << fam;
    bool sliding = false;
    for (cJSON *it = root->child; it && rc == MOE_OK; it = it->next) {
        const char *k = it->string;
        if (!strcmp(k, "model_type") || is_info_key(k)) continue;
        if (!strcmp(k, "use_sliding_window")) sliding = cJSON_IsTrue(it);
        int i = 0;
        while (i < N_KEYS && !((KEYS[i].families & bit) && !strcmp(KEYS[i].name, k))) i++;
        if (i < N_KEYS) { rc = read_key(c, &KEYS[i], it, path); continue; }
        bool known;
        rc = fixed_key(c, it, path, &known);
        if (rc == MOE_OK && !known) {
            char pk[128];
            moe_seterr("%s: unknown key \"%s\" for model_type \"%s\"", path, moe_printable(pk, sizeof pk, k), MOE_FAMILY_NAMES[fam]);
            rc = MOE_FAIL;
        }
    }
    cJSON_Delete(root);
    if (rc != MOE_OK) return rc;
    if (sliding) MOE_ERR("%s: key \"use_sliding_window\" must be false: moe.c attends over the whole sequence", path);
    if (c->yarn) {   // the reference library's fallbacks
        if (c->yarn_original_max_pos <= 0) c->yarn_original_max_pos = c->max_position_embeddings;
        if (c->yarn_factor <= 0 && c->yarn_original_max_pos > 0)
            c->yarn_factor = (float)c->max_position_embeddings / c->yarn_original_max_pos;
    }
    if (c->num_key_value_heads == 0) c->num_key_value_heads = c->num_attention_heads;
    if (c->head_dim == 0 && c->num_attention_heads > 0) c->head_dim = c->hidden_size / c->num_attention_heads;
    if (c->intermediate_size == 0 && c->hidden_size > 0) {   // (a bad hidden_size is refused below)
        if (c->hidden_size > INT_MAX / 4)
            MOE_ERR("%s: \"hidden_size\" (%d) is too large for the default \"intermediate_size\" (4 * hidden_size); give it", path, c->hidden_size);
        c->intermediate_size = 4 * c->hidden_size;
    }
    if (c->moe_intermediate_size == 0) c->moe_intermediate_size = c->hidden_size;
    return config_validate(c, path);
}

int config_validate(const MoeConfig *c, const char *path) {
#define POS(name) if (c->name <= 0) MOE_ERR("%s: \"" #name "\" must be positive, got %d", path, c->name)
    POS(vocab_size); POS(hidden_size); POS(num_hidden_layers); POS(num_attention_heads);
    POS(num_key_value_heads); POS(head_dim); POS(intermediate_size); POS(max_position_embeddings);
#undef POS
    // every per-layer walk (here, the parameter counts, the model's layout) is bounded
    if (c->num_hidden_layers > 100000) MOE_ERR("%s: \"num_hidden_layers\" (%d) is over 100000", path, c->num_hidden_layers);
    if (c->vocab_size < 260) MOE_ERR("%s: \"vocab_size\" must be at least 260 (bytes + 4 specials), got %d", path, c->vocab_size);
    if (c->num_attention_heads % c->num_key_value_heads)
        MOE_ERR("%s: \"num_attention_heads\" (%d) must be a multiple of \"num_key_value_heads\" (%d)", path,
                c->num_attention_heads, c->num_key_value_heads);
    if (!config_is_mla(c) && c->head_dim % 2) MOE_ERR("%s: \"head_dim\" must be even for RoPE, got %d", path, c->head_dim);
    if (c->first_k_dense_replace < 0) MOE_ERR("%s: \"first_k_dense_replace\" must be >= 0", path);
    if (c->n_routed_experts < 0) MOE_ERR("%s: \"n_routed_experts\" must be >= 0", path);
    if (c->n_shared_experts < 0) MOE_ERR("%s: \"n_shared_experts\" must be >= 0", path);
    if (!(c->rms_norm_eps > 0)) MOE_ERR("%s: \"rms_norm_eps\" must be positive", path);
    if (!(c->rope_theta > 0)) MOE_ERR("%s: \"rope_theta\" must be positive", path);
    if (c->capacity_factor < 0) MOE_ERR("%s: \"capacity_factor\" must be >= 0 (0 = dropless)", path);
    if (c->aux_loss_alpha < 0) MOE_ERR("%s: \"aux_loss_alpha\" must be >= 0", path);
    if (c->bias_update_speed < 0) MOE_ERR("%s: \"bias_update_speed\" must be >= 0", path);
    if (config_is_mla(c)) {
        if (c->qk_rope_head_dim <= 0 || c->qk_rope_head_dim % 2)
            MOE_ERR("%s: \"qk_rope_head_dim\" must be positive and even for MLA, got %d", path, c->qk_rope_head_dim);
        if (c->qk_nope_head_dim < 0) MOE_ERR("%s: \"qk_nope_head_dim\" must be >= 0", path);
        if (c->v_head_dim <= 0) MOE_ERR("%s: \"v_head_dim\" must be positive for MLA", path);
        if (c->q_lora_rank < 0) MOE_ERR("%s: \"q_lora_rank\" must be >= 0 (0 or null: no query compression)", path);
        if (c->qk_norm) MOE_ERR("%s: \"qk_norm\" applies to grouped-query attention, not MLA (kv_lora_rank > 0)", path);
    } else {
        if (c->family == MOE_FAMILY_DEEPSEEK_V3 || c->family == MOE_FAMILY_PANGU)
            MOE_ERR("%s: \"kv_lora_rank\" must be positive: model_type \"%s\" uses MLA attention", path,
                    MOE_FAMILY_NAMES[c->family]);
        if (c->q_lora_rank || c->qk_rope_head_dim || c->qk_nope_head_dim || c->v_head_dim)
            MOE_ERR("%s: \"q_lora_rank\", \"qk_*_head_dim\" and \"v_head_dim\" need \"kv_lora_rank\" > 0 (MLA)", path);
    }
    {   // every width a buffer or GEMM is sized by fits an int
        const double H = c->num_attention_heads, w[] = {H * c->head_dim, (double)c->num_key_value_heads * c->head_dim,
            H * ((double)c->qk_nope_head_dim + c->qk_rope_head_dim), H * ((double)c->qk_nope_head_dim + c->v_head_dim),
            (double)c->kv_lora_rank + c->qk_rope_head_dim, 2.0 * c->intermediate_size, 2.0 * c->moe_intermediate_size,
            (double)c->n_shared_experts * c->moe_intermediate_size * 2, 2.0 * c->hidden_size};
        for (size_t i = 0; i < sizeof w / sizeof *w; i++)
            if (w[i] > INT_MAX / 4) MOE_ERR("%s: the model's widths are too large (a layer's projection over %d values)", path, INT_MAX / 4);
    }
    if (c->decoder_sparse_step <= 0) MOE_ERR("%s: \"decoder_sparse_step\" must be positive", path);
    if (c->yarn && !(c->yarn_factor > 0 && c->yarn_beta_fast > c->yarn_beta_slow && c->yarn_beta_slow > 0))
        MOE_ERR("%s: YaRN needs factor > 0 and beta_fast > beta_slow > 0", path);
    if (c->kv_lora_rank < 0) MOE_ERR("%s: \"kv_lora_rank\" must be >= 0", path);
    if (c->num_mtp_layers < 0 || c->num_mtp_layers > 16) MOE_ERR("%s: \"num_mtp_layers\" must be between 0 and 16", path);
    if (!(c->mtp_loss_weight >= 0)) MOE_ERR("%s: \"mtp_loss_weight\" must be >= 0", path);
    if (config_n_moe_layers(c) > 0) {
        int E = c->n_routed_experts, K = c->num_experts_per_tok;
        if (c->moe_intermediate_size <= 0) MOE_ERR("%s: \"moe_intermediate_size\" must be positive", path);
        if (K <= 0 || K > E)
            MOE_ERR("%s: \"num_experts_per_tok\" (%d) must be between 1 and \"n_routed_experts\" (%d)", path, K, E);
        if (c->topk_method != MOE_TOPK_GREEDY) {
            int G = c->n_group;
            if (G <= 0 || E % G)
                MOE_ERR("%s: \"n_group\" (%d) must divide \"n_routed_experts\" (%d)", path, G, E);
            if (c->topk_method == MOE_TOPK_GROUP_LIMITED) {
                if (c->topk_group <= 0 || c->topk_group > G)
                    MOE_ERR("%s: \"topk_group\" (%d) must be between 1 and \"n_group\" (%d)", path, c->topk_group, G);
                if (E / G < 2) MOE_ERR("%s: group_limited needs at least 2 experts per group", path);
                if (K > c->topk_group * (E / G))
                    MOE_ERR("%s: \"num_experts_per_tok\" (%d) exceeds the experts in \"topk_group\" groups (%d)", path,
                            K, c->topk_group * (E / G));
            } else if (K % G)
                MOE_ERR("%s: moge needs \"num_experts_per_tok\" (%d) divisible by \"n_group\" (%d)", path, K, G);
            else if (K / G > E / G)
                MOE_ERR("%s: moge: K/n_group (%d) exceeds experts per group (%d)", path, K / G, E / G);
        }
    }
    return MOE_OK;
}

int config_load(MoeConfig *c, const char *path) {
    char *text = file_read_all(path, NULL);
    if (!text) return MOE_FAIL;
    int rc = config_parse(c, text, path);
    free(text);
    return rc;
}

static const char *const ARCH_NAMES[MOE_N_FAMILIES] = {"MoeV1ForCausalLM", "PanguUltraMoEForCausalLM",
    "DeepseekV3ForCausalLM", "Qwen3MoeForCausalLM", "MixtralForCausalLM"};

// %.9g (a float survives the round trip exactly), with a decimal point: the reference
// library's config classes type-check their float fields
static void float_text(char *buf, size_t cap, double v) {
    snprintf(buf, cap, "%.9g", v);
    if (!strpbrk(buf, ".eEn")) strncat(buf, ".0", cap - strlen(buf) - 1);
}

static void write_key(cJSON *r, const KeyDef *kd, const MoeConfig *c) {
    const void *src = (const char *)c + kd->off;
    char buf[64];
    switch (kd->kind) {
    case K_INT_NULL:
        if (*(const int *)src == 0 && c->family != MOE_FAMILY_MOE_V1) { cJSON_AddNullToObject(r, kd->name); break; }
        /* fall through */
    case K_INT: cJSON_AddNumberToObject(r, kd->name, *(const int *)src); break;
    case K_FLT:
        float_text(buf, sizeof buf, (double)*(const float *)src);
        cJSON_AddRawToObject(r, kd->name, buf);
        break;
    case K_BOOL: cJSON_AddBoolToObject(r, kd->name, *(const bool *)src); break;
    case K_SCORE: cJSON_AddStringToObject(r, kd->name, SCORE_NAMES[c->scoring_func]); break;
    case K_TOPK:
        cJSON_AddStringToObject(r, kd->name, c->family == MOE_FAMILY_DEEPSEEK_V3 && c->topk_method == MOE_TOPK_GROUP_LIMITED
                                                 ? "noaux_tc" : TOPK_NAMES[c->topk_method]);
        break;
    case K_SCOPE: cJSON_AddStringToObject(r, kd->name, SCOPE_NAMES[c->aux_scope]); break;
    case K_INIT: cJSON_AddStringToObject(r, kd->name, INIT_NAMES[c->init_method]); break;
    }
}

// moe.c's own families write every key; the reference library's families write their own
// keys, and moe.c's training settings where they are not the defaults
char *config_to_json(const MoeConfig *c) {
    MoeConfig def;
    config_defaults(&def);
    family_defaults(&def, c->family);
    const unsigned bit = 1u << c->family;
    const bool own = (OWN & bit) != 0;
    cJSON *r = cJSON_CreateObject();
    cJSON *arch = cJSON_AddArrayToObject(r, "architectures");
    cJSON_AddItemToArray(arch, cJSON_CreateString(ARCH_NAMES[c->family]));
    cJSON_AddStringToObject(r, "model_type", MOE_FAMILY_NAMES[c->family]);
    cJSON_AddStringToObject(r, "torch_dtype", "float32");
    for (int i = 0; i < N_KEYS; i++) {
        const KeyDef *kd = &KEYS[i];
        if (!(kd->families & bit)) continue;
        if (!own && kd->setting && !memcmp((const char *)c + kd->off, (const char *)&def + kd->off,
                                           kd->kind == K_FLT ? sizeof(float) : kd->kind == K_BOOL ? sizeof(bool) : sizeof(int)))
            continue;
        if (!config_is_mla(c) && kd->off != offsetof(MoeConfig, rope_interleave) &&
            (kd->off == offsetof(MoeConfig, q_lora_rank) || kd->off == offsetof(MoeConfig, kv_lora_rank) ||
             kd->off == offsetof(MoeConfig, qk_nope_head_dim) || kd->off == offsetof(MoeConfig, qk_rope_head_dim) ||
             kd->off == offsetof(MoeConfig, v_head_dim)))
            continue;   // GQA: no MLA keys
        write_key(r, kd, c);
    }
    if (c->family == MOE_FAMILY_QWEN3_MOE) {
        cJSON *ml = cJSON_AddArrayToObject(r, "mlp_only_layers");
        for (int i = 0; i < c->n_mlp_only; i++) cJSON_AddItemToArray(ml, cJSON_CreateNumber(c->mlp_only[i]));
    }
    if (c->yarn) {
        cJSON *y = cJSON_AddObjectToObject(r, "rope_scaling");
        cJSON_AddStringToObject(y, "type", "yarn");
        cJSON_AddStringToObject(y, "rope_type", "yarn");
        char buf[64];
#define YF(key, v) do { float_text(buf, sizeof buf, (double)(v)); cJSON_AddRawToObject(y, key, buf); } while (0)
        YF("factor", c->yarn_factor);
        cJSON_AddNumberToObject(y, "original_max_position_embeddings", c->yarn_original_max_pos);
        YF("beta_fast", c->yarn_beta_fast);
        YF("beta_slow", c->yarn_beta_slow);
        YF("mscale", c->yarn_mscale);
        YF("mscale_all_dim", c->yarn_mscale_all_dim);
        if (c->yarn_attention_factor) YF("attention_factor", c->yarn_attention_factor);
#undef YF
    }
    if (!own) {   // the reference library's fixed settings, as it writes them
        cJSON_AddStringToObject(r, "hidden_act", "silu");
        cJSON_AddBoolToObject(r, "attention_bias", false);
        cJSON_AddNumberToObject(r, "attention_dropout", 0);
    }
    if (c->family == MOE_FAMILY_MOE_V1 || c->family == MOE_FAMILY_PANGU) {   // SPEC §2 byte tokenizer specials
        cJSON_AddNumberToObject(r, "bos_token_id", 257);
        cJSON_AddNumberToObject(r, "eos_token_id", 259);
        cJSON_AddNumberToObject(r, "pad_token_id", 256);
    }
    char *s = cJSON_Print(r);
    cJSON_Delete(r);
    return s;
}

int config_save(const MoeConfig *c, const char *path) {
    char *s = config_to_json(c);
    if (!s) MOE_ERR("%s: out of memory writing the config", path);
    const size_t n = strlen(s);
    char *t = (char *)moe_alloc(n + 2);
    memcpy(t, s, n);
    t[n] = '\n';
    free(s);
    int rc = file_write_atomic(path, t, n + 1);
    moe_free(t);
    return rc;
}

// The reference library's family that computes the same math as c, for `moe export --format hf`.
int config_hf_family(const MoeConfig *c, MoeConfig *out) {
    *out = *c;
    if (c->family == MOE_FAMILY_DEEPSEEK_V3 || c->family == MOE_FAMILY_QWEN3_MOE || c->family == MOE_FAMILY_MIXTRAL)
        return MOE_OK;
    const char *name = MOE_FAMILY_NAMES[c->family];
    if (c->sandwich_norm)
        MOE_ERR("model_type \"%s\" with sandwich_norm has no counterpart in the reference library (deepseek_v3, qwen3_moe, mixtral)", name);
    if (c->init_method != MOE_INIT_PYTORCH) out->init_method = MOE_INIT_PYTORCH;   // (initialisation only)
    if (c->n_mlp_only || c->decoder_sparse_step != 1) MOE_ERR("internal: a layer pattern outside qwen3_moe");
    if (config_is_mla(c)) {
        // DeepSeek-V3: sigmoid scores, group-limited choice (one group: greedy) with the bias;
        // its latent norms keep eps 1e-6
        if (c->scoring_func != MOE_SCORE_SIGMOID && config_n_moe_layers(c) > 0)
            MOE_ERR("\"scoring_func\" softmax has no counterpart in deepseek_v3 (sigmoid), the reference library's MLA family");
        if (c->topk_method == MOE_TOPK_MOGE) MOE_ERR("\"topk_method\" moge has no counterpart in deepseek_v3");
        if (c->rms_norm_eps != 1e-6f)
            MOE_ERR("deepseek_v3 normalises the MLA latents with eps 1e-6: \"rms_norm_eps\" must be 1e-6 to export (got %g)", (double)c->rms_norm_eps);
        if (c->topk_method == MOE_TOPK_GREEDY) { out->topk_method = MOE_TOPK_GROUP_LIMITED; out->n_group = out->topk_group = 1; }
        out->head_dim = c->qk_rope_head_dim;   // the library sizes its RoPE table by head_dim
        out->family = MOE_FAMILY_DEEPSEEK_V3;
        return MOE_OK;
    }
    // grouped-query attention: Qwen3-MoE (q/k norm) or Mixtral (no norm), both softmax top-k
    // over every expert with no shared experts and no correction bias
    if (config_n_moe_layers(c) > 0 && (c->scoring_func != MOE_SCORE_SOFTMAX || c->topk_method != MOE_TOPK_GREEDY ||
                                       c->routed_scaling_factor != 1.0f))
        MOE_ERR("grouped-query attention exports to qwen3_moe or mixtral, whose routers are softmax top-k over every expert "
                "with routed_scaling_factor 1");
    if (c->n_shared_experts) MOE_ERR("\"n_shared_experts\" must be 0: qwen3_moe and mixtral have no shared experts");
    if (c->num_mtp_layers) MOE_ERR("\"num_mtp_layers\" must be 0: qwen3_moe and mixtral have no multi-token prediction");
    if (c->rope_interleave) MOE_ERR("qwen3_moe's and mixtral's RoPE pair (i, i+d/2): \"rope_interleave\" must be false");
    if (c->qk_norm) {   // Qwen3: the first dense layers as mlp_only_layers
        if (c->first_k_dense_replace > 64) MOE_ERR("\"first_k_dense_replace\" above 64 has no qwen3_moe mlp_only_layers");
        out->n_mlp_only = c->first_k_dense_replace;
        for (int l = 0; l < c->first_k_dense_replace; l++) out->mlp_only[l] = l;
        out->first_k_dense_replace = 0;
        out->family = MOE_FAMILY_QWEN3_MOE;
        return MOE_OK;
    }
    if (!c->norm_topk_prob) MOE_ERR("mixtral renormalises the top-k weights: \"norm_topk_prob\" must be true");
    if (c->first_k_dense_replace) MOE_ERR("mixtral has no dense layers: \"first_k_dense_replace\" must be 0");
    out->family = MOE_FAMILY_MIXTRAL;
    return MOE_OK;
}
