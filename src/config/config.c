#include "config.h"
#include <cjson/cJSON.h>
#include <float.h>
#include <limits.h>
#include <math.h>
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
    int rc = MOE_OK;
    int e;
    for (cJSON *it = root->child; it && rc == MOE_OK; it = it->next) {
        const char *k = it->string;
#define INT(name) else if (!strcmp(k, #name)) rc = get_int(it, path, &c->name)
#define FLT(name) else if (!strcmp(k, #name)) rc = get_float(it, path, &c->name)
#define BOOL(name) else if (!strcmp(k, #name)) rc = get_bool(it, path, &c->name)
        if (0) {}
        INT(vocab_size); INT(hidden_size); INT(num_hidden_layers); INT(num_attention_heads);
        INT(num_key_value_heads); INT(head_dim); INT(intermediate_size); INT(moe_intermediate_size);
        INT(n_routed_experts); INT(num_experts_per_tok); INT(n_shared_experts);
        INT(first_k_dense_replace); INT(n_group); INT(topk_group); INT(max_position_embeddings);
        BOOL(norm_topk_prob); BOOL(tie_word_embeddings);
        FLT(routed_scaling_factor); FLT(rms_norm_eps); FLT(rope_theta); FLT(aux_loss_alpha);
        FLT(bias_update_speed); FLT(capacity_factor);
        else if (!strcmp(k, "scoring_func")) { rc = get_enum(it, path, SCORE_NAMES, 2, &e); c->scoring_func = e; }
        else if (!strcmp(k, "topk_method")) { rc = get_enum(it, path, TOPK_NAMES, 3, &e); c->topk_method = e; }
        else if (!strcmp(k, "aux_scope")) { rc = get_enum(it, path, SCOPE_NAMES, 3, &e); c->aux_scope = e; }
        else if (!strcmp(k, "model_type")) {
            if (!cJSON_IsString(it) || strcmp(it->valuestring, "moe_v1"))
                { moe_seterr("%s: \"model_type\" must be \"moe_v1\"", path); rc = MOE_FAIL; }
        } else if (!strcmp(k, "architectures") || !strcmp(k, "torch_dtype") ||
                   !strcmp(k, "transformers_version") || !strcmp(k, "bos_token_id") ||
                   !strcmp(k, "eos_token_id") || !strcmp(k, "pad_token_id")) {
            // informational Hugging Face keys: accepted, not used
        } else { char pk[128]; moe_seterr("%s: unknown key \"%s\"", path, moe_printable(pk, sizeof pk, k)); rc = MOE_FAIL; }
#undef INT
#undef FLT
#undef BOOL
    }
    cJSON_Delete(root);
    if (rc != MOE_OK) return rc;
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
    if (c->head_dim % 2) MOE_ERR("%s: \"head_dim\" must be even for RoPE, got %d", path, c->head_dim);
    if (c->first_k_dense_replace < 0) MOE_ERR("%s: \"first_k_dense_replace\" must be >= 0", path);
    if (c->n_routed_experts < 0) MOE_ERR("%s: \"n_routed_experts\" must be >= 0", path);
    if (c->n_shared_experts < 0) MOE_ERR("%s: \"n_shared_experts\" must be >= 0", path);
    if (!(c->rms_norm_eps > 0)) MOE_ERR("%s: \"rms_norm_eps\" must be positive", path);
    if (!(c->rope_theta > 0)) MOE_ERR("%s: \"rope_theta\" must be positive", path);
    if (c->capacity_factor < 0) MOE_ERR("%s: \"capacity_factor\" must be >= 0 (0 = dropless)", path);
    if (c->aux_loss_alpha < 0) MOE_ERR("%s: \"aux_loss_alpha\" must be >= 0", path);
    if (c->bias_update_speed < 0) MOE_ERR("%s: \"bias_update_speed\" must be >= 0", path);
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

char *config_to_json(const MoeConfig *c) {
    cJSON *r = cJSON_CreateObject();
    cJSON *arch = cJSON_AddArrayToObject(r, "architectures");
    cJSON_AddItemToArray(arch, cJSON_CreateString("MoeV1ForCausalLM"));
    cJSON_AddStringToObject(r, "model_type", "moe_v1");
    cJSON_AddStringToObject(r, "torch_dtype", "float32");
#define N(name) cJSON_AddNumberToObject(r, #name, c->name)
#define B(name) cJSON_AddBoolToObject(r, #name, c->name)
    N(vocab_size); N(hidden_size); N(num_hidden_layers); N(num_attention_heads); N(num_key_value_heads);
    N(head_dim); N(intermediate_size); N(moe_intermediate_size); N(n_routed_experts);
    N(num_experts_per_tok); N(n_shared_experts); N(first_k_dense_replace);
    cJSON_AddStringToObject(r, "scoring_func", SCORE_NAMES[c->scoring_func]);
    cJSON_AddStringToObject(r, "topk_method", TOPK_NAMES[c->topk_method]);
    N(n_group); N(topk_group); B(norm_topk_prob);
    // floats go through %.9g so that a float survives the round trip exactly
    char buf[64];
#define F(name) do { snprintf(buf, sizeof buf, "%.9g", (double)c->name); \
                     cJSON_AddRawToObject(r, #name, buf); } while (0)
    F(routed_scaling_factor); F(rms_norm_eps); F(rope_theta);
    N(max_position_embeddings); B(tie_word_embeddings);
    F(aux_loss_alpha);
    cJSON_AddStringToObject(r, "aux_scope", SCOPE_NAMES[c->aux_scope]);
    F(bias_update_speed); F(capacity_factor);
    // SPEC §2 byte tokenizer specials, for Hugging Face tooling
    cJSON_AddNumberToObject(r, "bos_token_id", 257);
    cJSON_AddNumberToObject(r, "eos_token_id", 259);
    cJSON_AddNumberToObject(r, "pad_token_id", 256);
#undef N
#undef B
#undef F
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

int config_n_moe_layers(const MoeConfig *c) {
    int n = 0;
    for (int l = 0; l < c->num_hidden_layers; l++) n += config_layer_is_moe(c, l);
    return n;
}

static double attn_params(const MoeConfig *c) {
    double D = c->hidden_size, q = (double)c->num_attention_heads * c->head_dim, kv = (double)c->num_key_value_heads * c->head_dim;
    return D * q * 2 + D * kv * 2;
}
double config_active_params(const MoeConfig *c) {
    double D = c->hidden_size, n = 0;
    for (int l = 0; l < c->num_hidden_layers; l++) {
        n += attn_params(c);
        if (config_layer_is_moe(c, l))
            n += D * c->n_routed_experts + 3.0 * D * c->moe_intermediate_size *
                 (c->num_experts_per_tok + c->n_shared_experts);
        else
            n += 3.0 * D * c->intermediate_size;
    }
    return n + D * c->vocab_size;   // output head
}
double config_total_params(const MoeConfig *c) {
    double D = c->hidden_size, n = D * c->vocab_size * (c->tie_word_embeddings ? 1 : 2) + D;
    for (int l = 0; l < c->num_hidden_layers; l++) {
        n += attn_params(c) + 2 * D;
        if (config_layer_is_moe(c, l))
            n += D * c->n_routed_experts + 3.0 * D * c->moe_intermediate_size *
                 (c->n_routed_experts + c->n_shared_experts);
        else
            n += 3.0 * D * c->intermediate_size;
    }
    return n;
}
double config_flops_per_token(const MoeConfig *c, int T) {
    return 6.0 * config_active_params(c) + 6.0 * c->num_hidden_layers * (double)T * c->hidden_size;
}
