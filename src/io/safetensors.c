#include "safetensors.h"
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include "../base/base.h"
#include "../base/fileio.h"
#include "../kernels/bf16.h"

// The format's dtypes with their element sizes; only the first three convert to f32.
static const struct { const char *name; StDtype dtype; size_t esize; } DTYPES[] = {
    {"F32", ST_F32, 4}, {"BF16", ST_BF16, 2}, {"F16", ST_F16, 2},
    {"F64", ST_OTHER, 8}, {"I64", ST_OTHER, 8}, {"U64", ST_OTHER, 8}, {"I32", ST_OTHER, 4},
    {"U32", ST_OTHER, 4}, {"I16", ST_OTHER, 2}, {"U16", ST_OTHER, 2}, {"I8", ST_OTHER, 1},
    {"U8", ST_OTHER, 1}, {"BOOL", ST_OTHER, 1}, {"F8_E4M3", ST_OTHER, 1}, {"F8_E5M2", ST_OTHER, 1},
    {"F8_E8M0", ST_OTHER, 1},
};

float st_f16_to_f32(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    uint32_t bits;
    if (exp == 0x1f) bits = sign | 0x7f800000u | (man << 13);        // inf, nan (payload kept)
    else if (exp) bits = sign | ((exp + 112) << 23) | (man << 13);   // normal: rebias 15 -> 127
    else {                                                           // zero, subnormal: man * 2^-24
        const float v = (float)man * 0x1p-24f;                       // exact in f32
        return sign ? -v : v;
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static void shape_str(char *out, size_t cap, int ndim, const int64_t *shape) {
    size_t n = (size_t)snprintf(out, cap, "[");
    for (int d = 0; d < ndim && n < cap; d++) n += (size_t)snprintf(out + n, cap - n, d ? ",%lld" : "%lld", (long long)shape[d]);
    if (n < cap) snprintf(out + n, cap - n, "]");
}

// a JSON number holding a whole number in [0, 2^53] (doubles are exact up to there)
static bool json_u53(const cJSON *x, uint64_t *out) {
    if (!cJSON_IsNumber(x)) return false;
    const double d = x->valuedouble;
    if (!(d >= 0 && d <= 9007199254740992.0) || (double)(uint64_t)d != d) return false;
    *out = (uint64_t)d;
    return true;
}

static int cmp_by_name(const void *a, const void *b, void *ctx) {
    const StTensor *t = ctx;
    return strcmp(t[*(const int *)a].name, t[*(const int *)b].name);
}
static int cmp_by_offset(const void *a, const void *b, void *ctx) {
    const StTensor *x = (const StTensor *)ctx + *(const int *)a, *y = (const StTensor *)ctx + *(const int *)b;
    if (x->data != y->data) return x->data < y->data ? -1 : 1;
    return x->nbytes < y->nbytes ? -1 : x->nbytes > y->nbytes;
}

// One header entry: every field checked against the format and the file's data section
// [data0, data0 + data_size). nm is the tensor's name made printable.
static int parse_entry(StTensor *t, const cJSON *it, const char *path, const char *nm, const uint8_t *data0,
                       size_t data_size) {
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(it, "dtype"), *sh = cJSON_GetObjectItemCaseSensitive(it, "shape"),
                *off = cJSON_GetObjectItemCaseSensitive(it, "data_offsets");
    if (!cJSON_IsObject(it) || !cJSON_IsString(dt) || !cJSON_IsArray(sh) || !cJSON_IsArray(off))
        MOE_ERR("%s: tensor \"%s\": header entry needs dtype, shape and data_offsets", path, nm);
    size_t esize = 0;
    for (size_t i = 0; i < sizeof DTYPES / sizeof DTYPES[0]; i++)
        if (!strcmp(dt->valuestring, DTYPES[i].name)) { t->dtype = DTYPES[i].dtype; t->dtype_name = DTYPES[i].name; esize = DTYPES[i].esize; }
    if (!esize) {
        char d[32];
        MOE_ERR("%s: tensor \"%s\": unknown dtype \"%s\" (F32, BF16 or F16 are read)", path, nm, moe_printable(d, sizeof d, dt->valuestring));
    }
    const int ndim = cJSON_GetArraySize(sh);
    if (ndim > 4) MOE_ERR("%s: tensor \"%s\": %d dimensions, at most 4 are read", path, nm, ndim);
    t->ndim = ndim;
    uint64_t numel = 1, nbytes;
    for (int d = 0; d < ndim; d++) {
        uint64_t n;
        if (!json_u53(cJSON_GetArrayItem(sh, d), &n)) MOE_ERR("%s: tensor \"%s\": shape[%d] is not a non-negative integer", path, nm, d);
        t->shape[d] = (int64_t)n;
        if (__builtin_mul_overflow(numel, n, &numel)) MOE_ERR("%s: tensor \"%s\": shape's element count overflows", path, nm);
    }
    if (__builtin_mul_overflow(numel, (uint64_t)esize, &nbytes) || nbytes > SIZE_MAX)
        MOE_ERR("%s: tensor \"%s\": shape's byte count overflows", path, nm);
    uint64_t b, e;
    if (cJSON_GetArraySize(off) != 2 || !json_u53(cJSON_GetArrayItem(off, 0), &b) || !json_u53(cJSON_GetArrayItem(off, 1), &e))
        MOE_ERR("%s: tensor \"%s\": data_offsets must be two non-negative integers [begin, end]", path, nm);
    if (e < b) MOE_ERR("%s: tensor \"%s\": data_offsets [%llu, %llu] end before they begin", path, nm, (unsigned long long)b, (unsigned long long)e);
    if (e > data_size)
        MOE_ERR("%s: tensor \"%s\": data [%llu, %llu) lies outside the file's %zu data bytes (truncated?)", path, nm,
                (unsigned long long)b, (unsigned long long)e, data_size);
    if (e - b != nbytes) {
        char s[128];
        shape_str(s, sizeof s, ndim, t->shape);
        MOE_ERR("%s: tensor \"%s\": data_offsets hold %llu bytes, shape %s of %s needs %llu", path, nm,
                (unsigned long long)(e - b), s, t->dtype_name, (unsigned long long)nbytes);
    }
    t->numel = (size_t)numel;
    t->nbytes = (size_t)nbytes;
    t->data = data0 + b;
    return MOE_OK;
}

// The header and the layout of f->buf (f->size bytes); on failure the caller closes f.
static int st_parse(StFile *f) {
    const char *path = f->path;
    const uint8_t *buf = f->buf;
    const size_t size = f->size;
    if (size < 8) MOE_ERR("%s: truncated safetensors file (%zu bytes, no header)", path, size);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | buf[i];
    if (hlen > ST_MAX_HEADER)
        MOE_ERR("%s: header length %llu is over the %zu MB limit (not a safetensors file?)", path, (unsigned long long)hlen, ST_MAX_HEADER >> 20);
    if (hlen > size - 8)
        MOE_ERR("%s: truncated safetensors file (header says %llu bytes, file has %zu)", path, (unsigned long long)hlen, size - 8);
    const char *htext = (const char *)buf + 8, *end = NULL;
    cJSON *root = hlen ? cJSON_ParseWithLengthOpts(htext, (size_t)hlen, &end, 0) : NULL;
    if (!root || !cJSON_IsObject(root)) { cJSON_Delete(root); MOE_ERR("%s: malformed safetensors header JSON", path); }
    // the writer may pad the header (to align the data): spaces only after the object
    for (const char *p = end; p < htext + hlen; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            cJSON_Delete(root);
            MOE_ERR("%s: malformed safetensors header JSON (text after the object, at byte %zu)", path, (size_t)(p - htext) + 8);
        }
    const uint8_t *data0 = buf + 8 + hlen;
    const size_t data_size = size - 8 - (size_t)hlen;
    const int count = cJSON_GetArraySize(root);
    f->t = MOE_NEW(StTensor, count > 0 ? count : 1);
    int rc = MOE_OK;
    for (const cJSON *it = root->child; it && rc == MOE_OK; it = it->next) {
        char nm[128];
        moe_printable(nm, sizeof nm, it->string);
        if (!strcmp(it->string, "__metadata__")) {
            if (!cJSON_IsObject(it)) { moe_seterr("%s: \"__metadata__\" must be a JSON object", path); rc = MOE_FAIL; }
            else if (f->metadata_json) { moe_seterr("%s: \"__metadata__\" appears twice in the header", path); rc = MOE_FAIL; }
            else f->metadata_json = cJSON_PrintUnformatted(it);
            continue;
        }
        StTensor *t = &f->t[f->n];
        rc = parse_entry(t, it, path, nm, data0, data_size);
        if (rc == MOE_OK) { t->name = moe_strdup(it->string); f->n++; }
    }
    cJSON_Delete(root);
    if (rc) return rc;
    // names are unique (a JSON object may repeat a key; the format may not)
    f->by_name = MOE_NEW(int, f->n ? f->n : 1);
    for (int i = 0; i < f->n; i++) f->by_name[i] = i;
    qsort_r(f->by_name, f->n, sizeof(int), cmp_by_name, f->t);
    for (int i = 1; i < f->n; i++)
        if (!strcmp(f->t[f->by_name[i - 1]].name, f->t[f->by_name[i]].name)) {
            char nm[128];
            MOE_ERR("%s: tensor \"%s\" appears twice in the header", path, moe_printable(nm, sizeof nm, f->t[f->by_name[i]].name));
        }
    // the tensors cover the data exactly, without overlaps or gaps (the format's own rule)
    int *order = MOE_NEW(int, f->n ? f->n : 1);
    for (int i = 0; i < f->n; i++) order[i] = i;
    qsort_r(order, f->n, sizeof(int), cmp_by_offset, f->t);
    const uint8_t *expect = data0;
    for (int i = 0; i < f->n && rc == MOE_OK; i++) {
        const StTensor *t = &f->t[order[i]];
        char nm[128], other[128];
        moe_printable(nm, sizeof nm, t->name);
        if (t->data < expect) {
            moe_seterr("%s: tensor \"%s\": data [%zu, %zu) overlaps tensor \"%s\"", path, nm, (size_t)(t->data - data0),
                       (size_t)(t->data - data0) + t->nbytes, moe_printable(other, sizeof other, f->t[order[i - 1]].name));
            rc = MOE_FAIL;
        } else if (t->data > expect) {
            moe_seterr("%s: tensor \"%s\": data starts at %zu, leaving a gap after byte %zu", path, nm,
                       (size_t)(t->data - data0), (size_t)(expect - data0));
            rc = MOE_FAIL;
        }
        expect = t->data + t->nbytes;
    }
    moe_free(order);
    if (rc) return rc;
    if (expect != data0 + data_size)
        MOE_ERR("%s: %zu bytes after the last tensor's data (the header does not describe them)", path, (size_t)(data0 + data_size - expect));
    return MOE_OK;
}

int st_open_mem(StFile *f, const void *buf, size_t size, const char *path) {
    memset(f, 0, sizeof *f);
    f->path = moe_strdup(path);
    f->buf = size ? buf : (const uint8_t *)"";
    f->size = size;
    if (st_parse(f)) { st_close(f); return MOE_FAIL; }
    return MOE_OK;
}

int st_open(StFile *f, const char *path) {
    memset(f, 0, sizeof *f);
    const int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) MOE_ERR("%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) { close(fd); MOE_ERR("%s: cannot open: not a regular file", path); }
    // mapped, not read: a checkpoint may be many GB and only the tensors asked for are touched
    void *p = st.st_size > 0 ? mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0) : NULL;
    const int err = errno;
    close(fd);
    if (p == MAP_FAILED) MOE_ERR("%s: cannot map: %s", path, strerror(err));
    f->path = moe_strdup(path);
    f->buf = p ? p : (const uint8_t *)"";
    f->size = (size_t)st.st_size;
    f->map_len = p ? f->size : 0;
    if (st_parse(f)) { st_close(f); return MOE_FAIL; }
    return MOE_OK;
}

void st_close(StFile *f) {
    for (int i = 0; i < f->n; i++) moe_free(f->t[i].name);
    moe_free(f->t);
    moe_free(f->by_name);
    moe_free(f->path);
    if (f->map_len) munmap((void *)f->buf, f->map_len);
    free(f->metadata_json);
    memset(f, 0, sizeof *f);
}

const StTensor *st_find(const StFile *f, const char *name) {
    int lo = 0, hi = f->n - 1;
    while (lo <= hi) {
        const int mid = lo + (hi - lo) / 2, c = strcmp(f->t[f->by_name[mid]].name, name);
        if (!c) return &f->t[f->by_name[mid]];
        if (c < 0) lo = mid + 1; else hi = mid - 1;
    }
    return NULL;
}

int st_tensor_f32(const StFile *f, const StTensor *t, float *dst) {
    const uint8_t *p = t->data;
    if (t->dtype == ST_F32) { memcpy(dst, p, t->numel * 4); return MOE_OK; }
    if (t->dtype == ST_OTHER) {
        char nm[128];
        MOE_ERR("%s: tensor \"%s\": dtype %s cannot be read as f32 (F32, BF16 or F16 can)", f->path, moe_printable(nm, sizeof nm, t->name), t->dtype_name);
    }
    for (size_t i = 0; i < t->numel; i++) {
        uint16_t h;
        memcpy(&h, p + 2 * i, 2);
        dst[i] = t->dtype == ST_BF16 ? bf16_to_f32(h) : st_f16_to_f32(h);
    }
    return MOE_OK;
}

int st_read_f32(const StFile *f, const char *name, float *dst, int64_t d0, int64_t d1) {
    char nm[128];
    const StTensor *t = st_find(f, name);
    if (!t) MOE_ERR("%s: missing tensor \"%s\"", f->path, moe_printable(nm, sizeof nm, name));
    const int want_ndim = d1 ? 2 : 1;
    if (t->ndim != want_ndim || t->shape[0] != d0 || (d1 && t->shape[1] != d1)) {
        char got[128];
        shape_str(got, sizeof got, t->ndim, t->shape);
        moe_printable(nm, sizeof nm, name);
        if (d1) MOE_ERR("%s: tensor \"%s\" has shape %s, expected [%lld,%lld]", f->path, nm, got, (long long)d0, (long long)d1);
        MOE_ERR("%s: tensor \"%s\" has shape %s, expected [%lld]", f->path, nm, got, (long long)d0);
    }
    return st_tensor_f32(f, t, dst);
}

const char *st_meta(const StFile *f, const char *key, char *buf, size_t cap) {
    if (!f->metadata_json) return NULL;
    cJSON *m = cJSON_Parse(f->metadata_json);
    cJSON *v = cJSON_GetObjectItemCaseSensitive(m, key);
    const char *res = NULL;
    if (cJSON_IsString(v)) { snprintf(buf, cap, "%s", v->valuestring); res = buf; }
    cJSON_Delete(m);
    return res;
}

int st_write(const char *path, const StWriteItem *items, int n, StDtype dtype, const char *meta_json) {
    if (dtype != ST_F32 && dtype != ST_BF16) {
        for (int i = 0; i < n; i++) if (items[i].get) items[i].get(items[i].ctx, i);   // as promised: once each
        MOE_ERR("%s: internal error: safetensors are written as F32 or BF16", path);
    }
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
