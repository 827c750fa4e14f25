// What a resume needs beyond the model: the train state's JSON (step, data cursor, AdamW's
// step count, the settings, a recorded expert placement), the merge of the saved settings
// with the ones the command line gave, and the log carried over.
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include "../base/base.h"
#include "../base/fileio.h"
#include "train.h"

char *train_state_json(const TrainConfig *tc, const TrainProgress *pr, long adam_t, const MoePlacement *pl) {
    cJSON *s = cJSON_CreateObject();
    cJSON_AddNumberToObject(s, "step", (double)pr->step);
    cJSON_AddNumberToObject(s, "cursor", (double)pr->cursor);
    cJSON_AddNumberToObject(s, "adam_t", (double)adam_t);
    char buf[32];
    snprintf(buf, sizeof buf, "%llu", tc->seed);
    cJSON_AddStringToObject(s, "seed", buf);
#define N(k, v) cJSON_AddNumberToObject(s, k, (double)(v))
    N("lr", tc->opt.lr); N("min_lr", tc->opt.min_lr); N("weight_decay", tc->opt.weight_decay);
    N("beta1", tc->opt.beta1); N("beta2", tc->opt.beta2); N("eps", tc->opt.eps); N("clip", tc->opt.clip);
    N("warmup", tc->opt.warmup); N("decay_steps", tc->opt.decay_steps);
    N("batch", tc->batch); N("micro_batch", tc->micro_batch); N("seq", tc->seq);
    N("ckpt_every", tc->ckpt_every); N("format", tc->format);
#undef N
    cJSON_AddBoolToObject(s, "shuffle", tc->shuffle);
    if (tc->n_weights) {
        cJSON *w = cJSON_AddArrayToObject(s, "data_weights");
        for (int i = 0; i < tc->n_weights; i++) cJSON_AddItemToArray(w, cJSON_CreateNumber(tc->data_weights[i]));
    }
    if (pl) {   // dynamic expert placement: each rank's slots, layer by layer
        cJSON *p = cJSON_AddObjectToObject(s, "placement");
        cJSON_AddNumberToObject(p, "ep", pl->P);
        cJSON_AddNumberToObject(p, "slots_per_rank", pl->S);
        cJSON *a = cJSON_AddArrayToObject(p, "slot_expert");
        for (size_t i = 0; i < (size_t)pl->L * pl->P * pl->S; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(pl->slot_expert[i]));
    }
    char *out = cJSON_PrintUnformatted(s);
    cJSON_Delete(s);
    return out;
}

// the recorded placement, checked against the model: [L][ep][S] expert ids, each MoE
// layer's slots on a rank distinct and every expert in some slot
static int read_placement(const cJSON *p, const MoeConfig *c, TrainProgress *pr) {
    const cJSON *ep = cJSON_GetObjectItem(p, "ep"), *S = cJSON_GetObjectItem(p, "slots_per_rank"),
                *a = cJSON_GetObjectItem(p, "slot_expert");
    if (!cJSON_IsNumber(ep) || !cJSON_IsNumber(S) || !cJSON_IsArray(a) || ep->valueint < 1 || S->valueint < 1) return MOE_FAIL;
    const int L = config_n_layers(c), E = c->n_routed_experts, P = ep->valueint, n = S->valueint;
    if (cJSON_GetArraySize(a) != L * P * n || P * n < E) return MOE_FAIL;
    int *slots = MOE_NEW(int, (size_t)L * P * n), i = 0, rc = MOE_OK;
    const cJSON *v;
    cJSON_ArrayForEach(v, a) slots[i++] = cJSON_IsNumber(v) ? v->valueint : -1;
    char *seen = MOE_NEW(char, E > 0 ? E : 1);
    for (int l = 0; l < L && rc == MOE_OK; l++) {
        if (!config_layer_is_moe(c, l)) continue;
        memset(seen, 0, (size_t)E);
        for (int g = 0; g < P * n && rc == MOE_OK; g++) {
            const int e = slots[(size_t)l * P * n + g];
            if (e < 0 || e >= E) rc = MOE_FAIL;
            else seen[e] = 1;
            for (int h = g / n * n; h < g && rc == MOE_OK; h++) if (slots[(size_t)l * P * n + h] == e) rc = MOE_FAIL;
        }
        for (int e = 0; e < E && rc == MOE_OK; e++) if (!seen[e]) rc = MOE_FAIL;
    }
    moe_free(seen);
    if (rc) { moe_free(slots); return rc; }
    pr->slots = slots; pr->slots_ep = P; pr->slots_S = n;
    return MOE_OK;
}

int train_state_read(const char *json, const char *what, const MoeConfig *c, TrainConfig *tc, TrainProgress *pr,
                     long *adam_t) {
    cJSON *s = cJSON_Parse(json);
    if (!s) MOE_ERR("%s: no readable \"train_state\" metadata", what);
    pr->slots = NULL;
    const cJSON *pl = cJSON_GetObjectItem(s, "placement");
    if (pl && read_placement(pl, c, pr)) { cJSON_Delete(s); MOE_ERR("%s: the recorded expert placement does not fit the model", what); }
    int rc = MOE_OK;
#define GETN(k) (cJSON_IsNumber(cJSON_GetObjectItem(s, k)) ? cJSON_GetObjectItem(s, k)->valuedouble : (rc = MOE_FAIL, 0))
    pr->step = (long)GETN("step");
    pr->cursor = (long)GETN("cursor");
    *adam_t = (long)GETN("adam_t");
    tc->opt.lr = GETN("lr"); tc->opt.min_lr = GETN("min_lr"); tc->opt.weight_decay = GETN("weight_decay");
    tc->opt.beta1 = GETN("beta1"); tc->opt.beta2 = GETN("beta2"); tc->opt.eps = GETN("eps");
    tc->opt.clip = GETN("clip"); tc->opt.warmup = (int)GETN("warmup"); tc->opt.decay_steps = (int)GETN("decay_steps");
    tc->batch = (int)GETN("batch"); tc->micro_batch = (int)GETN("micro_batch"); tc->seq = (int)GETN("seq");
    tc->ckpt_every = (int)GETN("ckpt_every"); tc->format = (DataFormat)GETN("format");
    const cJSON *dw = cJSON_GetObjectItem(s, "data_weights");   // (absent: no mixture)
    tc->n_weights = 0;
    if (cJSON_IsArray(dw) && cJSON_GetArraySize(dw) <= 32) {
        const cJSON *x;
        cJSON_ArrayForEach(x, dw) if (cJSON_IsNumber(x) && x->valuedouble > 0) tc->data_weights[tc->n_weights++] = x->valuedouble;
    }
#undef GETN
    tc->shuffle = cJSON_IsTrue(cJSON_GetObjectItem(s, "shuffle"));
    const cJSON *sd = cJSON_GetObjectItem(s, "seed");
    if (!cJSON_IsString(sd)) rc = MOE_FAIL;
    else tc->seed = strtoull(sd->valuestring, NULL, 10);
    cJSON_Delete(s);
    if (rc) { moe_free(pr->slots); pr->slots = NULL; MOE_ERR("%s: \"train_state\" metadata is incomplete", what); }
    return MOE_OK;
}

void train_resume_merge(TrainConfig *tc, const TrainConfig *saved) {
    const unsigned g = tc->given;
#define KEEP(bit, field) if (!(g & (bit))) tc->field = saved->field
    KEEP(TRAIN_SET_LR, opt.lr); KEEP(TRAIN_SET_MIN_LR, opt.min_lr); KEEP(TRAIN_SET_WEIGHT_DECAY, opt.weight_decay);
    KEEP(TRAIN_SET_BETA1, opt.beta1); KEEP(TRAIN_SET_BETA2, opt.beta2); KEEP(TRAIN_SET_CLIP, opt.clip);
    KEEP(TRAIN_SET_WARMUP, opt.warmup); KEEP(TRAIN_SET_DECAY_STEPS, opt.decay_steps); KEEP(TRAIN_SET_BATCH, batch);
    KEEP(TRAIN_SET_MICRO_BATCH, micro_batch); KEEP(TRAIN_SET_SEQ, seq); KEEP(TRAIN_SET_SEED, seed);
    KEEP(TRAIN_SET_CKPT_EVERY, ckpt_every); KEEP(TRAIN_SET_FORMAT, format); KEEP(TRAIN_SET_SHUFFLE, shuffle);
    if (!(g & TRAIN_SET_DATA_WEIGHTS)) {
        tc->n_weights = saved->n_weights;
        memcpy(tc->data_weights, saved->data_weights, sizeof tc->data_weights);
    }
#undef KEEP
    tc->opt.eps = saved->opt.eps;
    // a new --batch without --micro-batch: one micro-batch, as on a new run
    if (!(g & TRAIN_SET_MICRO_BATCH) && (g & TRAIN_SET_BATCH)) tc->micro_batch = tc->batch;
}

int train_log_carry(const char *from_dir, const char *to_path, long last) {
    char src[4096];
    path_join(src, sizeof src, from_dir, "log.jsonl");
    size_t len = 0;
    char *text = NULL;
    if (path_exists(src) && !(text = file_read_all(src, &len))) return MOE_FAIL;
    char *keep = (char *)moe_alloc(len + 1);
    size_t k = 0;
    for (char *p = text; p && p < text + len;) {
        char *nl = memchr(p, '\n', text + len - p);
        if (!nl) break;   // a torn last line from a crash is dropped
        long step = -1;
        char *s = strstr(p, "\"step\":");
        if (s && s < nl) step = strtol(s + 7, NULL, 10);
        if (step >= 1 && step <= last) { memcpy(keep + k, p, nl + 1 - p); k += nl + 1 - p; }
        p = nl + 1;
    }
    int rc = file_write_atomic(to_path, keep, k);
    moe_free(keep); free(text);
    return rc;
}
