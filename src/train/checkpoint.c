// Checkpoint directory: config.json + model.safetensors (SPEC §3) and
// train_state.safetensors: AdamW moments "adam.m.<name>", "adam.v.<name>", with the step,
// data cursor and training settings as JSON in its __metadata__ ("train_state").
//
// Crash safety: each file is first written whole as NAME.new (itself via tmp + rename);
// then the journal ckpt.commit is written atomically; then each NAME.new is renamed over
// NAME and the journal removed. A reader that finds a journal finishes the renames (all
// .new files are complete by then); .new files without a journal are an unfinished save
// and are deleted, leaving the previous checkpoint as it was, and so are the NAME.new.tmp
// files of a write cut short.
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "../base/base.h"
#include "../io/fileio.h"
#include "../io/safetensors.h"
#include "train.h"

static const char *CKPT_FILES[] = {"config.json", "model.safetensors", "train_state.safetensors"};
#define N_CKPT_FILES 3

bool ckpt_exists(const char *dir) {
    char p[4096];
    path_join(p, sizeof p, dir, "model.safetensors");
    if (path_exists(p)) return true;
    path_join(p, sizeof p, dir, "config.json");
    return path_exists(p);
}

int ckpt_recover(const char *dir) {
    char journal[4096], from[4096], to[4096];
    path_join(journal, sizeof journal, dir, "ckpt.commit");
    bool roll = path_exists(journal);
    // a NAME.new.tmp (or the journal's .tmp) is never part of a save: its write was cut
    snprintf(from, sizeof from, "%s.tmp", journal);
    if (path_exists(from)) unlink(from);
    for (int i = 0; i < N_CKPT_FILES; i++) {
        path_join(to, sizeof to, dir, CKPT_FILES[i]);
        snprintf(from, sizeof from, "%s.new.tmp", to);
        if (path_exists(from)) unlink(from);
        snprintf(from, sizeof from, "%s.new", to);
        if (!path_exists(from)) continue;
        if (roll) {
            if (rename(from, to) != 0) MOE_ERR("%s: cannot finish an interrupted checkpoint: %s", from, strerror(errno));
        } else {
            unlink(from);
        }
    }
    if (roll) { fsync_dir_of(journal); unlink(journal); }
    return MOE_OK;
}

static char *state_meta_json(const TrainConfig *tc, const TrainProgress *pr, const AdamW *opt) {
    cJSON *s = cJSON_CreateObject();
    cJSON_AddNumberToObject(s, "step", (double)pr->step);
    cJSON_AddNumberToObject(s, "cursor", (double)pr->cursor);
    cJSON_AddNumberToObject(s, "adam_t", (double)opt->t);
    char buf[32];
    snprintf(buf, sizeof buf, "%llu", pr->ckpt_id);
    cJSON_AddStringToObject(s, "ckpt_id", buf);
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
    if (pr->place) {   // dynamic expert placement: each rank's slots, layer by layer
        const MoePlacement *pl = pr->place;
        cJSON *p = cJSON_AddObjectToObject(s, "placement");
        cJSON_AddNumberToObject(p, "ep", pl->P);
        cJSON_AddNumberToObject(p, "slots_per_rank", pl->S);
        cJSON *a = cJSON_AddArrayToObject(p, "slot_expert");
        for (size_t i = 0; i < (size_t)pl->L * pl->P * pl->S; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(pl->slot_expert[i]));
    }
    char *inner = cJSON_PrintUnformatted(s);
    cJSON_Delete(s);
    cJSON *meta = cJSON_CreateObject();
    cJSON_AddStringToObject(meta, "train_state", inner);
    cJSON_AddStringToObject(meta, "format", "moe.c train state v1");
    free(inner);
    char *out = cJSON_PrintUnformatted(meta);
    cJSON_Delete(meta);
    return out;
}

static StWriteItem *model_items(const Model *m, int *n_out) {
    const MoeConfig *c = &m->cfg;
    int n = m->n_tensors + config_n_moe_layers(c);
    StWriteItem *it = MOE_NEW(StWriteItem, n);
    int k = 0;
    for (int i = 0; i < m->n_tensors; i++) {
        const ParamTensor *t = &m->tensors[i];
        it[k] = (StWriteItem){t->name, t->ndim, {t->shape[0], t->shape[1]}, m->params + t->offset, NULL, NULL};
        k++;
    }
    static char names[1024][64];
    int nb = 0;
    for (int l = 0; l < c->num_hidden_layers; l++) {
        if (!config_layer_is_moe(c, l)) continue;
        snprintf(names[nb], 64, "model.layers.%d.mlp.gate.e_score_correction_bias", l);
        it[k++] = (StWriteItem){names[nb], 1, {c->n_routed_experts}, m->bias + (size_t)l * c->n_routed_experts, NULL, NULL};
        nb++;
    }
    *n_out = k;
    return it;
}

typedef struct {
    const float *(*moment)(void *ctx, int ti, int which);
    void *ctx;
    int calls;
} MomentSrc;
static const float *moment_item(void *ctx, int i) {   // train_state item i: tensor i / 2, m then v
    MomentSrc *s = ctx;
    s->calls++;
    return s->moment(s->ctx, i / 2, i % 2);
}

static int save(const char *dir, const Model *m, const AdamW *opt, const TrainConfig *tc,
                const TrainProgress *pr, bool bf16, MomentSrc *src);

int ckpt_save(const char *dir, const Model *m, const AdamW *opt, const TrainConfig *tc,
              const TrainProgress *pr, bool bf16) {
    return save(dir, m, opt, tc, pr, bf16, NULL);
}
int ckpt_save_moments(const char *dir, const Model *m, const AdamW *opt, const TrainConfig *tc,
                      const TrainProgress *pr, const float *(*moment)(void *ctx, int ti, int which), void *ctx,
                      int *calls) {
    MomentSrc s = {moment, ctx, 0};
    int rc = save(dir, m, opt, tc, pr, false, &s);
    *calls = s.calls;
    return rc;
}

static int save(const char *dir, const Model *m, const AdamW *opt, const TrainConfig *tc,
                const TrainProgress *pr, bool bf16, MomentSrc *src) {
    MOE_TRY(dir_ensure(dir));
    MOE_TRY(ckpt_recover(dir));
    char path[4096], next[4096];
    // 1. every file whole as NAME.new
    path_join(path, sizeof path, dir, "config.json");
    snprintf(next, sizeof next, "%s.new", path);
    MOE_TRY(config_save(&m->cfg, next));
    int n;
    StWriteItem *items = model_items(m, &n);
    char meta[128];
    snprintf(meta, sizeof meta, "{\"format\":\"pt\",\"step\":\"%ld\",\"ckpt_id\":\"%llu\"}", pr ? pr->step : 0L,
             pr ? pr->ckpt_id : 0ULL);
    path_join(path, sizeof path, dir, "model.safetensors");
    snprintf(next, sizeof next, "%s.new", path);
    int rc = st_write(next, items, n, bf16 ? ST_BF16 : ST_F32, meta);
    moe_free(items);
    if (rc) return rc;
    bool with_state = opt && tc && pr;
    if (with_state) {
        StWriteItem *st = MOE_NEW(StWriteItem, 2 * m->n_tensors);
        char (*nm)[112] = malloc(sizeof(*nm) * 2 * m->n_tensors);
        for (int i = 0; i < m->n_tensors; i++) {
            const ParamTensor *t = &m->tensors[i];
            snprintf(nm[2 * i], 112, "adam.m.%s", t->name);
            snprintf(nm[2 * i + 1], 112, "adam.v.%s", t->name);
            if (src) {
                st[2 * i] = (StWriteItem){nm[2 * i], t->ndim, {t->shape[0], t->shape[1]}, NULL, moment_item, src};
                st[2 * i + 1] = (StWriteItem){nm[2 * i + 1], t->ndim, {t->shape[0], t->shape[1]}, NULL, moment_item, src};
            } else {
                st[2 * i] = (StWriteItem){nm[2 * i], t->ndim, {t->shape[0], t->shape[1]}, opt->m + t->offset, NULL, NULL};
                st[2 * i + 1] = (StWriteItem){nm[2 * i + 1], t->ndim, {t->shape[0], t->shape[1]}, opt->v + t->offset, NULL, NULL};
            }
        }
        char *sm = state_meta_json(tc, pr, opt);
        path_join(path, sizeof path, dir, "train_state.safetensors");
        snprintf(next, sizeof next, "%s.new", path);
        rc = st_write(next, st, 2 * m->n_tensors, ST_F32, sm);
        free(sm); free(nm); moe_free(st);
        if (rc) return rc;
    }
    // 2. the journal makes the set final; 3. the renames
    char journal[4096];
    path_join(journal, sizeof journal, dir, "ckpt.commit");
    const char *jtext = "moe.c checkpoint journal: rename every NAME.new over NAME\n";
    MOE_TRY(file_write_atomic(journal, jtext, strlen(jtext)));
    return ckpt_recover(dir);
}

int ckpt_load_model(const char *dir, Model *m, bool with_grads) { return ckpt_load_model_shard(dir, m, with_grads, 0, 0); }

int ckpt_load_model_shard(const char *dir, Model *m, bool with_grads, int e0, int ne) {
    char path[4096];
    if (!path_exists(dir)) MOE_ERR("%s: checkpoint directory does not exist", dir);
    MOE_TRY(ckpt_recover(dir));
    MoeConfig c;
    path_join(path, sizeof path, dir, "config.json");
    if (!path_exists(path)) MOE_ERR("%s: missing config.json (not a checkpoint directory?)", dir);
    MOE_TRY(config_load(&c, path));
    path_join(path, sizeof path, dir, "model.safetensors");
    StFile f;
    MOE_TRY(st_open(&f, path));
    if (ne <= 0) { e0 = 0; ne = c.n_routed_experts; }
    model_build_shard(m, &c, with_grads, e0, ne);
    int rc = MOE_OK;
    for (int i = 0; i < m->n_tensors && rc == MOE_OK; i++) {
        const ParamTensor *t = &m->tensors[i];
        rc = st_read_f32(&f, t->name, m->params + t->offset, t->shape[0], t->ndim == 2 ? t->shape[1] : 0);
    }
    // every tensor in the file must be one the config describes (this process may hold
    // only some of the experts: names are checked against the whole layout)
    Model full;
    model_layout(&full, &c);
    int expected = full.n_tensors;
    for (int l = 0; l < c.num_hidden_layers && rc == MOE_OK; l++) {
        if (!config_layer_is_moe(&c, l)) continue;
        char nm[96];
        snprintf(nm, sizeof nm, "model.layers.%d.mlp.gate.e_score_correction_bias", l);
        if (!st_find(&f, nm)) continue;   // absent: zero bias, as in Hugging Face checkpoints without it
        rc = st_read_f32(&f, nm, m->bias + (size_t)l * c.n_routed_experts, c.n_routed_experts, 0);
        expected++;
    }
    if (rc == MOE_OK && f.n != expected) {
        for (int i = 0; i < f.n; i++) {
            const char *nm = f.t[i].name;
            if (model_find_tensor(&full, nm) >= 0 || strstr(nm, "e_score_correction_bias")) continue;
            moe_seterr("%s: unexpected tensor \"%s\" (config.json does not describe it)", path, nm);
            rc = MOE_FAIL;
            break;
        }
    }
    model_free(&full);
    st_close(&f);
    if (rc) model_free(m);
    return rc;
}

// the recorded placement, checked against the model: [L][ep][S] expert ids, each MoE
// layer's slots on a rank distinct and every expert in some slot
static int load_placement(const cJSON *p, const MoeConfig *c, TrainProgress *pr) {
    const cJSON *ep = cJSON_GetObjectItem(p, "ep"), *S = cJSON_GetObjectItem(p, "slots_per_rank"),
                *a = cJSON_GetObjectItem(p, "slot_expert");
    if (!cJSON_IsNumber(ep) || !cJSON_IsNumber(S) || !cJSON_IsArray(a) || ep->valueint < 1 || S->valueint < 1) return MOE_FAIL;
    const int L = c->num_hidden_layers, E = c->n_routed_experts, P = ep->valueint, n = S->valueint;
    if (cJSON_GetArraySize(a) != L * P * n || P * n < E) return MOE_FAIL;
    int *slots = malloc(sizeof(int) * (size_t)L * P * n), i = 0, rc = MOE_OK;
    const cJSON *v;
    cJSON_ArrayForEach(v, a) slots[i++] = cJSON_IsNumber(v) ? v->valueint : -1;
    char *seen = calloc((size_t)E, 1);
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
    free(seen);
    if (rc) { free(slots); return rc; }
    pr->slots = slots; pr->slots_ep = P; pr->slots_S = n;
    return MOE_OK;
}

int ckpt_load_state(const char *dir, const Model *m, AdamW *opt, TrainConfig *tc, TrainProgress *pr) {
    char path[4096], buf[4096];
    path_join(path, sizeof path, dir, "train_state.safetensors");
    if (!path_exists(path)) MOE_ERR("%s: missing: the checkpoint has no training state to resume from", path);
    StFile f;
    MOE_TRY(st_open(&f, path));
    int rc = MOE_OK;
    // the train state can be long (a recorded placement): a buffer as large as the metadata
    const size_t cap = f.metadata_json ? strlen(f.metadata_json) + 1 : 1;
    char *mbuf = malloc(cap);
    const char *js = st_meta(&f, "train_state", mbuf, cap);
    cJSON *s = js ? cJSON_Parse(js) : NULL;
    free(mbuf);
    if (!s) { st_close(&f); MOE_ERR("%s: no readable \"train_state\" metadata", path); }
    pr->slots = NULL;
    const cJSON *pl = cJSON_GetObjectItem(s, "placement");
    if (pl && load_placement(pl, &m->cfg, pr)) {
        cJSON_Delete(s); st_close(&f);
        MOE_ERR("%s: the recorded expert placement does not fit the model", path);
    }
#define GETN(k) (cJSON_IsNumber(cJSON_GetObjectItem(s, k)) ? cJSON_GetObjectItem(s, k)->valuedouble : (rc = MOE_FAIL, 0))
    pr->step = (long)GETN("step");
    pr->cursor = (long)GETN("cursor");
    opt->t = (long)GETN("adam_t");
    tc->opt.lr = GETN("lr"); tc->opt.min_lr = GETN("min_lr"); tc->opt.weight_decay = GETN("weight_decay");
    tc->opt.beta1 = GETN("beta1"); tc->opt.beta2 = GETN("beta2"); tc->opt.eps = GETN("eps");
    tc->opt.clip = GETN("clip"); tc->opt.warmup = (int)GETN("warmup"); tc->opt.decay_steps = (int)GETN("decay_steps");
    tc->batch = (int)GETN("batch"); tc->micro_batch = (int)GETN("micro_batch"); tc->seq = (int)GETN("seq");
    tc->ckpt_every = (int)GETN("ckpt_every"); tc->format = (DataFormat)GETN("format");
#undef GETN
    tc->shuffle = cJSON_IsTrue(cJSON_GetObjectItem(s, "shuffle"));
    cJSON *sd = cJSON_GetObjectItem(s, "seed"), *id = cJSON_GetObjectItem(s, "ckpt_id");
    if (!cJSON_IsString(sd) || !cJSON_IsString(id)) rc = MOE_FAIL;
    else { tc->seed = strtoull(sd->valuestring, NULL, 10); pr->ckpt_id = strtoull(id->valuestring, NULL, 10); }
    cJSON_Delete(s);
    if (rc) { free(pr->slots); pr->slots = NULL; st_close(&f); MOE_ERR("%s: \"train_state\" metadata is incomplete", path); }
    for (int i = 0; i < m->n_tensors && rc == MOE_OK; i++) {
        const ParamTensor *t = &m->tensors[i];
        char nm[112];
        snprintf(nm, sizeof nm, "adam.m.%s", t->name);
        rc = st_read_f32(&f, nm, opt->m + t->offset, t->shape[0], t->ndim == 2 ? t->shape[1] : 0);
        snprintf(nm, sizeof nm, "adam.v.%s", t->name);
        if (rc == MOE_OK) rc = st_read_f32(&f, nm, opt->v + t->offset, t->shape[0], t->ndim == 2 ? t->shape[1] : 0);
    }
    st_close(&f);
    if (rc) return rc;
    // the model file must be the one this state was saved with
    path_join(path, sizeof path, dir, "model.safetensors");
    MOE_TRY(st_open(&f, path));
    const char *mid = st_meta(&f, "ckpt_id", buf, sizeof buf);
    unsigned long long model_id = mid ? strtoull(mid, NULL, 10) : 0;
    st_close(&f);
    if (model_id != pr->ckpt_id)
        MOE_ERR("%s: inconsistent checkpoint: model.safetensors and train_state.safetensors come from different saves", dir);
    return MOE_OK;
}
