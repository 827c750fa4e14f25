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
#include <time.h>
#include <unistd.h>
#include "../base/base.h"
#include "../base/fileio.h"
#include "../io/safetensors.h"
#include "shards.h"
#include "checkpoint.h"

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

// the train_state metadata: the trainer's object with the save id added
static char *state_meta_json(const char *json, unsigned long long id) {
    cJSON *s = cJSON_Parse(json);
    if (!cJSON_IsObject(s)) { cJSON_Delete(s); return NULL; }
    char buf[32];
    snprintf(buf, sizeof buf, "%llu", id);
    cJSON_DeleteItemFromObject(s, "ckpt_id");
    cJSON_AddStringToObject(s, "ckpt_id", buf);
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
    for (int l = 0; l < config_n_layers(c); l++) {
        if (!config_layer_is_moe(c, l)) continue;
        snprintf(names[nb], 64, "model.layers.%d.mlp.gate.e_score_correction_bias", l);
        it[k++] = (StWriteItem){names[nb], 1, {c->n_routed_experts}, m->bias + (size_t)l * c->n_routed_experts, NULL, NULL};
        nb++;
    }
    *n_out = k;
    return it;
}

static const float *moment_item(void *ctx, int i) {   // train_state item i: tensor i / 2, m then v
    CkptState *s = ctx;
    s->calls++;
    return s->moment(s->ctx, i / 2, i % 2);
}

int ckpt_save(const char *dir, const Model *m, CkptState *st, bool bf16) {
    // a fresh id for this save, in both files
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    const unsigned long long id = ((unsigned long long)ts.tv_sec << 20) ^ (unsigned long long)ts.tv_nsec * 2654435761ULL ^
                                  (unsigned long long)getpid() ^ (st ? (unsigned long long)st->step << 40 : 0);
    if (st) st->calls = 0;
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
    snprintf(meta, sizeof meta, "{\"format\":\"pt\",\"step\":\"%ld\",\"ckpt_id\":\"%llu\"}", st ? st->step : 0L,
             st ? id : 0ULL);
    path_join(path, sizeof path, dir, "model.safetensors");
    snprintf(next, sizeof next, "%s.new", path);
    int rc = st_write(next, items, n, bf16 ? ST_BF16 : ST_F32, meta);
    moe_free(items);
    if (rc) return rc;
    if (st) {
        char *sm = state_meta_json(st->json, id);
        if (!sm) MOE_ERR("%s: internal: the train state is not a JSON object", dir);
        StWriteItem *it = MOE_NEW(StWriteItem, 2 * m->n_tensors);
        char (*nm)[112] = (char (*)[112])moe_alloc(sizeof(*nm) * 2 * m->n_tensors);
        for (int i = 0; i < m->n_tensors; i++) {
            const ParamTensor *t = &m->tensors[i];
            snprintf(nm[2 * i], 112, "adam.m.%s", t->name);
            snprintf(nm[2 * i + 1], 112, "adam.v.%s", t->name);
            if (st->moment) {
                it[2 * i] = (StWriteItem){nm[2 * i], t->ndim, {t->shape[0], t->shape[1]}, NULL, moment_item, st};
                it[2 * i + 1] = (StWriteItem){nm[2 * i + 1], t->ndim, {t->shape[0], t->shape[1]}, NULL, moment_item, st};
            } else {
                it[2 * i] = (StWriteItem){nm[2 * i], t->ndim, {t->shape[0], t->shape[1]}, st->m + t->offset, NULL, NULL};
                it[2 * i + 1] = (StWriteItem){nm[2 * i + 1], t->ndim, {t->shape[0], t->shape[1]}, st->v + t->offset, NULL, NULL};
            }
        }
        path_join(path, sizeof path, dir, "train_state.safetensors");
        snprintf(next, sizeof next, "%s.new", path);
        rc = st_write(next, it, 2 * m->n_tensors, ST_F32, sm);
        free(sm); moe_free(nm); moe_free(it);
        if (rc) return rc;
    }
    // 2. the journal makes the set final; 3. the renames
    char journal[4096];
    path_join(journal, sizeof journal, dir, "ckpt.commit");
    const char *jtext = "moe.c checkpoint journal: rename every NAME.new over NAME\n";
    MOE_TRY(file_write_atomic(journal, jtext, strlen(jtext)));
    return ckpt_recover(dir);
}

// DeepSeek-V3's MTP layers hold copies of the embedding and the head, which moe.c shares
static bool mtp_copy(const MoeConfig *c, const char *name) {
    int l, len = 0;
    char rest[64];
    if (sscanf(name, "model.layers.%d.%63s%n", &l, rest, &len) != 2 || name[len]) return false;
    return l >= c->num_hidden_layers && l < config_n_layers(c) &&
           (!strcmp(rest, "embed_tokens.weight") || !strcmp(rest, "shared_head.head.weight"));
}

int ckpt_load_model(const char *dir, Model *m, bool with_grads) { return ckpt_load_model_shard(dir, m, with_grads, NULL); }

int ckpt_load_model_shard(const char *dir, Model *m, bool with_grads, const ExpertShard *sh) {
    return ckpt_load_model_staged(dir, m, with_grads, sh, NULL);
}

int ckpt_load_model_staged(const char *dir, Model *m, bool with_grads, const ExpertShard *sh, const LayerShard *ls) {
    char path[4096];
    if (!path_exists(dir)) MOE_ERR("%s: checkpoint directory does not exist", dir);
    MOE_TRY(ckpt_recover(dir));
    MoeConfig c;
    path_join(path, sizeof path, dir, "config.json");
    if (!path_exists(path)) MOE_ERR("%s: missing config.json (not a checkpoint directory?)", dir);
    MOE_TRY(config_load(&c, path));
    // model.safetensors, or a Hugging Face index and its shards
    StShards f;
    MOE_TRY(shards_open(&f, dir));
    snprintf(path, sizeof path, "%s", f.index_path ? f.index_path : dir);
    model_build_staged(m, &c, with_grads, sh, ls);
    int rc = MOE_OK;
    for (int i = 0; i < m->n_tensors && rc == MOE_OK; i++) {
        const ParamTensor *t = &m->tensors[i];
        rc = shards_read_f32(&f, t->name, m->params + t->offset, t->shape[0], t->ndim == 2 ? t->shape[1] : 0);
    }
    // every tensor in the file must be one the config describes (this process may hold
    // only some of the experts: names are checked against the whole layout)
    Model full;
    model_layout(&full, &c);
    int expected = full.n_tensors;
    for (int l = 0; l < config_n_layers(&c) && rc == MOE_OK; l++) {
        if (!config_layer_is_moe(&c, l)) continue;
        char nm[96];
        snprintf(nm, sizeof nm, "model.layers.%d.mlp.gate.e_score_correction_bias", l);
        if (!shards_find(&f, nm, NULL)) continue;   // absent: zero bias, as in Hugging Face checkpoints without it
        rc = shards_read_f32(&f, nm, m->bias + (size_t)l * c.n_routed_experts, c.n_routed_experts, 0);
        expected++;
    }
    if (rc == MOE_OK && f.n != expected) {
        for (int i = 0; i < f.n; i++) {
            const char *nm = shards_tensor(&f, i, NULL)->name;
            if (model_find_tensor(&full, nm) >= 0 || strstr(nm, "e_score_correction_bias") || mtp_copy(&c, nm)) continue;
            char pn[128];
            moe_seterr("%s: unexpected tensor \"%s\" (config.json does not describe it)", path, moe_printable(pn, sizeof pn, nm));
            rc = MOE_FAIL;
            break;
        }
    }
    model_free(&full);
    shards_close(&f);
    if (rc) model_free(m);
    return rc;
}

int ckpt_load_state(const char *dir, const Model *m, float *mom_m, float *mom_v, char **json) {
    char path[4096], buf[4096];
    *json = NULL;
    path_join(path, sizeof path, dir, "train_state.safetensors");
    if (!path_exists(path)) MOE_ERR("%s: missing: the checkpoint has no training state to resume from", path);
    StFile f;
    MOE_TRY(st_open(&f, path));
    // the train state can be long (a recorded placement): a buffer as large as the metadata
    const size_t cap = f.metadata_json ? strlen(f.metadata_json) + 1 : 1;
    char *js = (char *)moe_alloc(cap);
    cJSON *s = st_meta(&f, "train_state", js, cap) ? cJSON_Parse(js) : NULL;
    const cJSON *id = cJSON_GetObjectItem(s, "ckpt_id");
    if (!cJSON_IsObject(s) || !cJSON_IsString(id)) {
        const bool parsed = cJSON_IsObject(s);
        cJSON_Delete(s); moe_free(js); st_close(&f);
        if (parsed) MOE_ERR("%s: \"train_state\" metadata is incomplete", path);
        MOE_ERR("%s: no readable \"train_state\" metadata", path);
    }
    const unsigned long long state_id = strtoull(id->valuestring, NULL, 10);
    cJSON_Delete(s);
    int rc = MOE_OK;
    for (int i = 0; i < m->n_tensors && rc == MOE_OK; i++) {
        const ParamTensor *t = &m->tensors[i];
        char nm[112];
        snprintf(nm, sizeof nm, "adam.m.%s", t->name);
        rc = st_read_f32(&f, nm, mom_m + t->offset, t->shape[0], t->ndim == 2 ? t->shape[1] : 0);
        snprintf(nm, sizeof nm, "adam.v.%s", t->name);
        if (rc == MOE_OK) rc = st_read_f32(&f, nm, mom_v + t->offset, t->shape[0], t->ndim == 2 ? t->shape[1] : 0);
    }
    st_close(&f);
    if (rc) { moe_free(js); return rc; }
    // the model file must be the one this state was saved with
    path_join(path, sizeof path, dir, "model.safetensors");
    if (st_open(&f, path)) { moe_free(js); return MOE_FAIL; }
    const char *mid = st_meta(&f, "ckpt_id", buf, sizeof buf);
    unsigned long long model_id = mid ? strtoull(mid, NULL, 10) : 0;
    st_close(&f);
    if (model_id != state_id) {
        moe_free(js);
        MOE_ERR("%s: inconsistent checkpoint: model.safetensors and train_state.safetensors come from different saves", dir);
    }
    *json = js;
    return MOE_OK;
}

// The weights under the tensor names of config `target` (the same blocks in the same order,
// another family's names), the correction bias where target's family has one, and
// DeepSeek-V3's copies of the embedding and head in each MTP layer.
int ckpt_export(const char *dir, const Model *m, const MoeConfig *target, bool bf16) {
    const MoeConfig *c = &m->cfg;
    Model tl;
    model_layout(&tl, target);
    if (tl.n_tensors != m->n_tensors) { model_free(&tl); MOE_ERR("internal: %s's layout has another tensor count", MOE_FAMILY_NAMES[target->family]); }
    const int L = c->num_hidden_layers, M = c->num_mtp_layers, E = c->n_routed_experts;
    const bool has_bias = target->family == MOE_FAMILY_DEEPSEEK_V3 || target->family == MOE_FAMILY_PANGU ||
                          target->family == MOE_FAMILY_MOE_V1;
    StWriteItem *it = MOE_NEW(StWriteItem, m->n_tensors + config_n_layers(c) + 2 * M + 1);
    char (*nm)[96] = (char (*)[96])moe_alloc(sizeof(*nm) * (config_n_layers(c) + 2 * M + 1));
    int n = 0, k = 0, rc = MOE_OK;
    for (int i = 0; i < m->n_tensors; i++) {
        const ParamTensor *t = &m->tensors[i], *u = &tl.tensors[i];
        if (t->numel != u->numel) { rc = MOE_FAIL; moe_seterr("internal: %s and %s differ in shape", t->name, u->name); break; }
        it[n++] = (StWriteItem){u->name, t->ndim, {t->shape[0], t->shape[1]}, m->params + t->offset, NULL, NULL};
    }
    for (int l = 0; l < config_n_layers(c) && rc == MOE_OK; l++) {
        if (!config_layer_is_moe(c, l)) continue;
        const float *b = m->bias + (size_t)l * E;
        if (!has_bias) {
            for (int e = 0; e < E; e++)
                if (b[e] != 0) { rc = MOE_FAIL; moe_seterr("layer %d has a non-zero e_score_correction_bias, which %s has no place for", l, MOE_FAMILY_NAMES[target->family]); }
            continue;
        }
        snprintf(nm[k], 96, "model.layers.%d.mlp.gate.e_score_correction_bias", l);
        it[n++] = (StWriteItem){nm[k++], 1, {E}, b, NULL, NULL};
    }
    for (int j = L; j < L + M && rc == MOE_OK; j++) {   // DeepSeek-V3 keeps both in each MTP layer
        snprintf(nm[k], 96, "model.layers.%d.embed_tokens.weight", j);
        it[n++] = (StWriteItem){nm[k++], 2, {c->vocab_size, c->hidden_size}, m->w.embed, NULL, NULL};
        snprintf(nm[k], 96, "model.layers.%d.shared_head.head.weight", j);
        it[n++] = (StWriteItem){nm[k++], 2, {c->vocab_size, c->hidden_size}, m->w.head, NULL, NULL};
    }
    char path[4096];
    if (rc == MOE_OK) rc = dir_ensure(dir);
    if (rc == MOE_OK) { path_join(path, sizeof path, dir, "config.json"); rc = config_save(target, path); }
    if (rc == MOE_OK) { path_join(path, sizeof path, dir, "model.safetensors"); rc = st_write(path, it, n, bf16 ? ST_BF16 : ST_F32, "{\"format\":\"pt\"}"); }
    moe_free(nm); moe_free(it); model_free(&tl);
    return rc;
}
