// The Tokenizer interface: the byte tokenizer (SPEC §2) here, byte-level BPE in bpe.c.
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include "../base/fileio.h"
#include "data.h"
#include "tokenizer.h"

void tokids_push(TokIds *v, int id) {
    if (v->n == v->cap) { v->cap = v->cap ? v->cap * 2 : 256; v->id = moe_realloc(v->id, sizeof(int) * v->cap); }
    v->id[v->n++] = id;
}
void tokids_free(TokIds *v) { moe_free(v->id); memset(v, 0, sizeof *v); }

void tokenizer_byte(Tokenizer *t) {
    memset(t, 0, sizeof *t);
    t->kind = TOKENIZER_BYTE;
    t->n_vocab = 260;
    t->pad = TOK_PAD; t->bos = TOK_BOS; t->sep = TOK_SEP; t->eos = TOK_EOS;
}

int tokenizer_parse_json(Tokenizer *t, const char *json, size_t len, const char *name) {
    memset(t, 0, sizeof *t);
    t->path = moe_strdup(name);
    if (bpe_parse(t, json, len, t->path) != MOE_OK) { tokenizer_free(t); return MOE_FAIL; }
    return MOE_OK;
}

int tokenizer_load_json(Tokenizer *t, const char *path) {
    size_t len;
    char *json = file_read_all(path, &len);
    if (!json) return MOE_FAIL;
    int rc = tokenizer_parse_json(t, json, len, path);
    free(json);
    return rc;
}

void tokenizer_free(Tokenizer *t) {
    if (t->bpe) bpe_free(t->bpe);
    moe_free(t->path);
    memset(t, 0, sizeof *t);
}

int tokenizer_token_id(const Tokenizer *t, const char *s) {
    if (t->kind == TOKENIZER_BPE) return bpe_token_id(t->bpe, s, strlen(s));
    return strlen(s) == 1 ? (unsigned char)s[0] : -1;
}

// tokenizer_config.json's "bos_token" / "eos_token": a string, {"content": string} or null
static int config_token(const Tokenizer *t, const cJSON *cfg, const char *key, const char *path, int *id) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(cfg, key);
    if (!j) return MOE_OK;   // not named: keep what tokenizer.json says
    if (cJSON_IsNull(j)) { *id = -1; return MOE_OK; }
    if (cJSON_IsObject(j)) j = cJSON_GetObjectItemCaseSensitive(j, "content");
    if (!cJSON_IsString(j)) MOE_ERR("%s: \"%s\" must be a string, {\"content\": string} or null", path, key);
    *id = tokenizer_token_id(t, j->valuestring);
    if (*id < 0) MOE_ERR("%s: the %s it names is not a token of %s", path, key, t->path);
    return MOE_OK;
}

int tokenizer_for_dir(Tokenizer *t, const char *dir, int vocab_size) {
    char p[4096];
    path_join(p, sizeof p, dir, "tokenizer.json");
    if (!path_exists(p)) { tokenizer_byte(t); return MOE_OK; }
    MOE_TRY(tokenizer_load_json(t, p));
    path_join(p, sizeof p, dir, "tokenizer_config.json");
    int rc = MOE_OK;
    bool named = false;
    if (path_exists(p)) {
        size_t len;
        char *js = file_read_all(p, &len);
        cJSON *cfg = js ? cJSON_ParseWithLength(js, len) : NULL;
        free(js);
        if (!cfg) { if (js) moe_seterr("%s: not valid JSON", p); rc = MOE_FAIL; }
        else if (!cJSON_IsObject(cfg)) { moe_seterr("%s: expected a JSON object", p); rc = MOE_FAIL; }
        else {
            named = cJSON_GetObjectItemCaseSensitive(cfg, "eos_token") != NULL;
            rc = config_token(t, cfg, "bos_token", p, &t->bos);
            if (rc == MOE_OK) rc = config_token(t, cfg, "eos_token", p, &t->eos);
        }
        cJSON_Delete(cfg);
    }
    // neither file names an end of sequence: the usual names among the tokens
    static const char *const EOS[] = {"<|endoftext|>", "</s>", ("<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>"), "<|end_of_text|>"};
    for (int k = 0; rc == MOE_OK && !named && t->eos < 0 && k < 4; k++) t->eos = tokenizer_token_id(t, EOS[k]);
    if (rc == MOE_OK && t->n_vocab > vocab_size)
        { moe_seterr("%s: ids up to %d do not fit the model's vocab_size %d", t->path, t->n_vocab - 1, vocab_size); rc = MOE_FAIL; }
    if (rc != MOE_OK) tokenizer_free(t);
    return rc;
}

int tokenizer_encode(const Tokenizer *t, const char *s, size_t len, TokIds *out) {
    if (t->kind == TOKENIZER_BPE) return bpe_encode(t, s, len, out);
    for (size_t i = 0; i < len; i++) tokids_push(out, (unsigned char)s[i]);
    return MOE_OK;
}

// the bytes of one id; "?" for ids without text
static const char *token_bytes(const Tokenizer *t, int id, int *len, char *one) {
    const char *s = NULL;
    if (t->kind == TOKENIZER_BPE && id >= 0 && id < t->n_vocab) s = bpe_token_bytes(t->bpe, id, len);
    else if (t->kind == TOKENIZER_BYTE && id >= 0 && id < 256) { one[0] = (char)id; *len = 1; s = one; }
    if (!s) { *len = 1; s = "?"; }
    return s;
}

int tokenizer_decode(const Tokenizer *t, const int *ids, long n, char **out, size_t *len) {
    size_t total = 0;
    char one[1];
    int l;
    for (long i = 0; i < n; i++) { token_bytes(t, ids[i], &l, one); total += (size_t)l; }
    char *o = moe_alloc(total + 1);
    size_t k = 0;
    for (long i = 0; i < n; i++) {
        const char *s = token_bytes(t, ids[i], &l, one);
        memcpy(o + k, s, (size_t)l);
        k += (size_t)l;
    }
    o[k] = 0;
    *out = o;
    *len = k;
    return MOE_OK;
}

size_t tokenizer_decode_append(const Tokenizer *t, int id, char **buf, size_t *len, size_t *cap) {
    char one[1];
    int l;
    const char *s = token_bytes(t, id, &l, one);
    if (*len + (size_t)l + 1 > *cap) {
        size_t c = *cap ? *cap : 64;
        while (c < *len + (size_t)l + 1) c *= 2;
        *buf = moe_realloc(*buf, c);
        *cap = c;
    }
    size_t k0 = *len;
    for (int i = 0; i < l; i++) if (s[i]) (*buf)[(*len)++] = s[i];
    (*buf)[*len] = 0;
    return *len - k0;
}

int tokenizer_prompt(const Tokenizer *t, const char *q, int ql, TokIds *out) {
    if (t->bos >= 0) tokids_push(out, t->bos);
    if (t->kind == TOKENIZER_BYTE) {
        MOE_TRY(tokenizer_encode(t, q, (size_t)ql, out));
        tokids_push(out, t->sep);
        return MOE_OK;
    }
    char *s = moe_alloc((size_t)ql + 2);
    memcpy(s, q, (size_t)ql);
    s[ql] = '\n';
    int rc = tokenizer_encode(t, s, (size_t)ql + 1, out);
    moe_free(s);
    return rc;
}

int tokenizer_answer(const Tokenizer *t, const char *a, int al, TokIds *out) {
    MOE_TRY(tokenizer_encode(t, a, (size_t)al, out));
    if (t->eos >= 0) tokids_push(out, t->eos);
    return MOE_OK;
}

int tokenizer_copy_files(const char *from_dir, const char *to_dir) {
    static const char *const FILES[] = {"tokenizer.json", "tokenizer_config.json"};
    char from[4096], to[4096], rf[4096], rt[4096];
    for (int k = 0; k < 2; k++) {
        path_join(from, sizeof from, from_dir, FILES[k]);
        path_join(to, sizeof to, to_dir, FILES[k]);
        if (!path_exists(from) || (realpath(from, rf) && realpath(to, rt) && !strcmp(rf, rt))) continue;
        size_t n;
        char *js = file_read_all(from, &n);
        if (!js) return MOE_FAIL;
        int rc = file_write_atomic(to, js, n);
        free(js);
        MOE_TRY(rc);
    }
    return MOE_OK;
}
