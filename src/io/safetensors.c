#include "safetensors.h"
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <stdbool.h>
#include <string.h>
#include "../base/base.h"
#include "../kernels/bf16.h"
#include "../base/fileio.h"

static int cmp_offsets(const void *a, const void *b) {
    const StTensor *x = a, *y = b;
    return x->data < y->data ? -1 : x->data > y->data;
}

int st_open(StFile *f, const char *path) {
    memset(f, 0, sizeof *f);
    size_t size;
    uint8_t *buf = (uint8_t *)file_read_all(path, &size);
    if (!buf) return MOE_FAIL;
    f->path = moe_strdup(path);
    f->buf = buf;
    f->size = size;
    if (size < 8) { st_close(f); MOE_ERR("%s: truncated safetensors file (%zu bytes, no header)", path, size); }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | buf[i];
    if (hlen > size - 8) { st_close(f); MOE_ERR("%s: truncated safetensors file (header says %llu bytes, file has %zu)", path, (unsigned long long)hlen, size - 8); }
    char *htext = MOE_NEW(char, hlen + 1);
    memcpy(htext, buf + 8, hlen);
    cJSON *root = cJSON_Parse(htext);
    moe_free(htext);
    if (!root || !cJSON_IsObject(root)) { cJSON_Delete(root); st_close(f); MOE_ERR("%s: malformed safetensors header JSON", path); }
    const uint8_t *data0 = buf + 8 + hlen;
    size_t data_size = size - 8 - hlen;
    int count = cJSON_GetArraySize(root);
    f->t = MOE_NEW(StTensor, count > 0 ? count : 1);
    int rc = MOE_OK;
    for (cJSON *it = root->child; it; it = it->next) {
        if (!strcmp(it->string, "__metadata__")) { f->metadata_json = cJSON_PrintUnformatted(it); continue; }
        StTensor *t = &f->t[f->n];
        cJSON *dt = cJSON_GetObjectItem(it, "dtype"), *sh = cJSON_GetObjectItem(it, "shape"),
              *off = cJSON_GetObjectItem(it, "data_offsets");
        if (!cJSON_IsString(dt) || !cJSON_IsArray(sh) || !cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2) {
            moe_seterr("%s: tensor \"%s\": header entry needs dtype, shape and data_offsets", path, it->string);
            rc = MOE_FAIL; break;
        }
        size_t esz;
        if (!strcmp(dt->valuestring, "F32")) { t->dtype = ST_F32; esz = 4; }
        else if (!strcmp(dt->valuestring, "BF16")) { t->dtype = ST_BF16; esz = 2; }
        else { moe_seterr("%s: tensor \"%s\": dtype %s not supported (F32 or BF16)", path, it->string, dt->valuestring); rc = MOE_FAIL; break; }
        t->ndim = cJSON_GetArraySize(sh);
        if (t->ndim > 4) { moe_seterr("%s: tensor \"%s\": more than 4 dimensions", path, it->string); rc = MOE_FAIL; break; }
        size_t numel = 1;
        for (int d = 0; d < t->ndim; d++) {
            cJSON *x = cJSON_GetArrayItem(sh, d);
            if (!cJSON_IsNumber(x) || x->valuedouble < 0) { moe_seterr("%s: tensor \"%s\": bad shape", path, it->string); rc = MOE_FAIL; break; }
            t->shape[d] = (int64_t)x->valuedouble;
            numel *= (size_t)t->shape[d];
        }
        if (rc) break;
        double b = cJSON_GetArrayItem(off, 0)->valuedouble, e = cJSON_GetArrayItem(off, 1)->valuedouble;
        if (b < 0 || e < b || e > (double)data_size) {
            moe_seterr("%s: tensor \"%s\": data [%.0f, %.0f) lies outside the file's %zu data bytes (truncated?)", path, it->string, b, e, data_size);
            rc = MOE_FAIL; break;
        }
        t->nbytes = (size_t)(e - b);
        if (t->nbytes != numel * esz) {
            moe_seterr("%s: tensor \"%s\": %zu bytes for shape of %zu elements of %s", path, it->string, t->nbytes, numel, dt->valuestring);
            rc = MOE_FAIL; break;
        }
        t->data = data0 + (size_t)b;
        t->name = moe_strdup(it->string);
        f->n++;
    }
    cJSON_Delete(root);
    if (rc) { st_close(f); return rc; }
    // the data must be covered without overlaps (the format's own rule)
    StTensor *sorted = MOE_NEW(StTensor, f->n ? f->n : 1);
    memcpy(sorted, f->t, sizeof(StTensor) * f->n);
    qsort(sorted, f->n, sizeof(StTensor), cmp_offsets);
    const uint8_t *expect = data0;
    for (int i = 0; i < f->n; i++) {
        if (sorted[i].data != expect) { rc = MOE_FAIL; moe_seterr("%s: tensor \"%s\": data offsets overlap or leave a gap", path, sorted[i].name); break; }
        expect += sorted[i].nbytes;
    }
    moe_free(sorted);
    if (rc) { st_close(f); return rc; }
    return MOE_OK;
}

void st_close(StFile *f) {
    for (int i = 0; i < f->n; i++) moe_free(f->t[i].name);
    moe_free(f->t);
    moe_free(f->path);
    free(f->buf);
    free(f->metadata_json);
    memset(f, 0, sizeof *f);
}

const StTensor *st_find(const StFile *f, const char *name) {
    for (int i = 0; i < f->n; i++)
        if (!strcmp(f->t[i].name, name)) return &f->t[i];
    return NULL;
}

int st_read_f32(const StFile *f, const char *name, float *dst, int64_t d0, int64_t d1) {
    const StTensor *t = st_find(f, name);
    if (!t) MOE_ERR("%s: missing tensor \"%s\"", f->path, name);
    int want_ndim = d1 ? 2 : 1;
    if (t->ndim != want_ndim || t->shape[0] != d0 || (d1 && t->shape[1] != d1)) {
        char got[64] = "[";
        for (int d = 0; d < t->ndim; d++) snprintf(got + strlen(got), 20, d ? ",%lld" : "%lld", (long long)t->shape[d]);
        strcat(got, "]");
        if (d1) MOE_ERR("%s: tensor \"%s\" has shape %s, expected [%lld,%lld]", f->path, name, got, (long long)d0, (long long)d1);
        MOE_ERR("%s: tensor \"%s\" has shape %s, expected [%lld]", f->path, name, got, (long long)d0);
    }
    size_t n = (size_t)d0 * (size_t)(d1 ? d1 : 1);
    if (t->dtype == ST_F32) memcpy(dst, t->data, n * 4);
    else for (size_t i = 0; i < n; i++) { uint16_t h; memcpy(&h, t->data + 2 * i, 2); dst[i] = bf16_to_f32(h); }
    return MOE_OK;
}

const char *st_meta(const StFile *f, const char *key, char *buf, size_t cap) {
    if (!f->metadata_json) return NULL;
    cJSON *m = cJSON_Parse(f->metadata_json);
    cJSON *v = cJSON_GetObjectItem(m, key);
    const char *res = NULL;
    if (cJSON_IsString(v)) { snprintf(buf, cap, "%s", v->valuestring); res = buf; }
    cJSON_Delete(m);
    return res;
}

int st_write(const char *path, const StWriteItem *items, int n, StDtype dtype, const char *meta_json) {
    size_t esz = dtype == ST_F32 ? 4 : 2;
    cJSON *h = cJSON_CreateObject();
    if (meta_json) {
        cJSON *m = cJSON_Parse(meta_json);
        if (!m) { cJSON_Delete(h); MOE_ERR("%s: internal error: bad metadata JSON", path); }
        cJSON_AddItemToObject(h, "__metadata__", m);
    }
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        cJSON *t = cJSON_CreateObject();
        cJSON_AddStringToObject(t, "dtype", dtype == ST_F32 ? "F32" : "BF16");
        cJSON *sh = cJSON_AddArrayToObject(t, "shape");
        size_t numel = 1;
        for (int d = 0; d < items[i].ndim; d++) {
            cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)items[i].shape[d]));
            numel *= (size_t)items[i].shape[d];
        }
        cJSON *o = cJSON_AddArrayToObject(t, "data_offsets");
        cJSON_AddItemToArray(o, cJSON_CreateNumber((double)off));
        off += numel * esz;
        cJSON_AddItemToArray(o, cJSON_CreateNumber((double)off));
        cJSON_AddItemToObject(h, items[i].name, t);
    }
    char *text = cJSON_PrintUnformatted(h);
    cJSON_Delete(h);
    size_t hlen = strlen(text), pad = (8 - hlen % 8) % 8;   // keep data 8-byte aligned
    FILE *f = file_atomic_open(path);
    if (!f) {
        free(text);
        for (int i = 0; i < n; i++) if (items[i].get) items[i].get(items[i].ctx, i);   // as promised: once each
        return MOE_FAIL;
    }
    uint64_t total = hlen + pad;
    uint8_t lenb[8];
    for (int i = 0; i < 8; i++) lenb[i] = (uint8_t)(total >> (8 * i));
    fwrite(lenb, 1, 8, f);
    fwrite(text, 1, hlen, f);
    for (size_t i = 0; i < pad; i++) fputc(' ', f);
    free(text);
    uint16_t *tmp = dtype == ST_BF16 ? MOE_NEW(uint16_t, 1 << 16) : NULL;
    bool got = true;
    for (int i = 0; i < n; i++) {
        size_t numel = 1;
        for (int d = 0; d < items[i].ndim; d++) numel *= (size_t)items[i].shape[d];
        const float *src = items[i].get ? items[i].get(items[i].ctx, i) : items[i].data;
        if (!src) { got = false; continue; }
        if (dtype == ST_F32) fwrite(src, 4, numel, f);
        else
            for (size_t s = 0; s < numel; s += 1 << 16) {
                size_t m = numel - s < (1 << 16) ? numel - s : (1 << 16);
                for (size_t j = 0; j < m; j++) tmp[j] = f32_to_bf16(src[s + j]);
                fwrite(tmp, 2, m, f);
            }
    }
    moe_free(tmp);
    if (!got) { file_atomic_abort(f, path); return MOE_FAIL; }   // get set the error
    if (ferror(f)) { file_atomic_abort(f, path); MOE_ERR("%s: write failed", path); }
    return file_atomic_commit(f, path);
}
