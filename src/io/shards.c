#include "shards.h"
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "../base/base.h"
#include "../base/fileio.h"

static int cmp_entry(const void *a, const void *b) {
    return strcmp(((const ShardEntry *)a)->t->name, ((const ShardEntry *)b)->t->name);
}

// the set's entries sorted by name; a name twice is refused (what names the set in messages)
static int sort_entries(StShards *s, const char *what) {
    qsort(s->e, s->n, sizeof(ShardEntry), cmp_entry);
    for (int i = 1; i < s->n; i++) {
        const ShardEntry *a = &s->e[i - 1], *b = &s->e[i];
        if (strcmp(a->t->name, b->t->name)) continue;
        char nm[128];
        moe_printable(nm, sizeof nm, b->t->name);
        if (a->file == b->file) MOE_ERR("%s: tensor \"%s\" is listed twice in \"weight_map\"", what, nm);
        MOE_ERR("%s: tensor \"%s\" is in both %s and %s", what, nm, s->files[a->file].path, s->files[b->file].path);
    }
    return MOE_OK;
}

// a shard's name in the index: a plain file name inside the directory
static bool shard_name_ok(const char *f) {
    if (!f[0] || strlen(f) > 255 || strchr(f, '/') || strstr(f, "..") || !strcmp(f, ".")) return false;
    for (const char *p = f; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f || *p == '\\') return false;
    return true;
}

int shards_open_index(StShards *s, const char *dir, const char *text, size_t len) {
    memset(s, 0, sizeof *s);
    char path[4096];
    path_join(path, sizeof path, dir, SHARDS_INDEX);
    s->dir = moe_strdup(dir);
    s->index_path = moe_strdup(path);
    const char *ip = s->index_path;
    const char *end = text;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    for (; root && end < text + len; end++)   // nothing but white space after the object
        if (*end != ' ' && *end != '\t' && *end != '\n' && *end != '\r') { cJSON_Delete(root); root = NULL; break; }
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map"), *meta = cJSON_GetObjectItemCaseSensitive(root, "metadata");
    int rc = MOE_OK;
    if (!cJSON_IsObject(root)) { moe_seterr("%s: malformed JSON (expected an object with \"weight_map\")", ip); rc = MOE_FAIL; }
    else if (meta && !cJSON_IsObject(meta)) { moe_seterr("%s: \"metadata\" must be a JSON object", ip); rc = MOE_FAIL; }
    else if (!cJSON_IsObject(wm)) { moe_seterr("%s: \"weight_map\" must be an object of tensor names to file names", ip); rc = MOE_FAIL; }
    else if (!wm->child) { moe_seterr("%s: \"weight_map\" is empty", ip); rc = MOE_FAIL; }
    // the distinct shard files, in order of first mention; fidx[i]: the file of entry i
    const int n = rc ? 0 : cJSON_GetArraySize(wm);
    const char **fname = MOE_NEW(const char *, n > 0 ? n : 1);
    int *fidx = MOE_NEW(int, n > 0 ? n : 1), nf = 0, i = 0;
    for (const cJSON *it = rc ? NULL : wm->child; it && rc == MOE_OK; it = it->next, i++) {
        char nm[128], fn[128];
        moe_printable(nm, sizeof nm, it->string);
        if (!cJSON_IsString(it)) { moe_seterr("%s: tensor \"%s\": the file name must be a string", ip, nm); rc = MOE_FAIL; break; }
        if (!shard_name_ok(it->valuestring)) {
            moe_seterr("%s: tensor \"%s\": \"%s\" is not a file name in the checkpoint directory", ip, nm, moe_printable(fn, sizeof fn, it->valuestring));
            rc = MOE_FAIL; break;
        }
        int k = 0;
        while (k < nf && strcmp(fname[k], it->valuestring)) k++;   // few shards: a linear look-up
        if (k == nf) fname[nf++] = it->valuestring;
        fidx[i] = k;
    }
    // open every shard (an error names the shard file), then resolve each entry in its file
    if (rc == MOE_OK) {
        s->files = MOE_NEW(StFile, nf);
        for (int k = 0; k < nf && rc == MOE_OK; k++) {
            path_join(path, sizeof path, dir, fname[k]);
            rc = st_open(&s->files[k], path);
            if (rc == MOE_OK) s->n_files++;
        }
    }
    if (rc == MOE_OK) {
        s->e = MOE_NEW(ShardEntry, n);
        i = 0;
        for (const cJSON *it = wm->child; it && rc == MOE_OK; it = it->next, i++) {
            const StTensor *t = st_find(&s->files[fidx[i]], it->string);
            if (!t) {
                char nm[128];
                moe_seterr("%s: tensor \"%s\" is mapped to %s, which does not hold it", ip, moe_printable(nm, sizeof nm, it->string),
                           s->files[fidx[i]].path);
                rc = MOE_FAIL;
            } else s->e[s->n++] = (ShardEntry){t, fidx[i]};
        }
    }
    if (rc == MOE_OK) rc = sort_entries(s, ip);
    // every tensor in the shards is one the index maps to its file
    for (int k = 0; k < s->n_files && rc == MOE_OK; k++)
        for (int j = 0; j < s->files[k].n && rc == MOE_OK; j++) {
            const StTensor *t = &s->files[k].t[j];
            const StFile *where;
            if (shards_find(s, t->name, &where) == t) continue;
            char nm[128];
            moe_printable(nm, sizeof nm, t->name);
            if (where) moe_seterr("%s: tensor \"%s\" is in both %s and %s", ip, nm, s->files[k].path, where->path);
            else moe_seterr("%s: tensor \"%s\" in %s is not in \"weight_map\"", ip, nm, s->files[k].path);
            rc = MOE_FAIL;
        }
    moe_free(fname);
    moe_free(fidx);
    cJSON_Delete(root);
    if (rc) shards_close(s);
    return rc;
}

int shards_open(StShards *s, const char *dir) {
    memset(s, 0, sizeof *s);
    char path[4096];
    path_join(path, sizeof path, dir, SHARDS_SINGLE);
    if (path_exists(path)) {
        StFile f;
        MOE_TRY(st_open(&f, path));
        s->dir = moe_strdup(dir);
        s->files = MOE_NEW(StFile, 1);
        s->files[0] = f;
        s->n_files = 1;
        s->e = MOE_NEW(ShardEntry, f.n ? f.n : 1);
        for (int i = 0; i < f.n; i++) s->e[i] = (ShardEntry){&s->files[0].t[f.by_name[i]], 0};   // by_name: sorted already
        s->n = f.n;
        return MOE_OK;
    }
    path_join(path, sizeof path, dir, SHARDS_INDEX);
    struct stat st;
    if (stat(path, &st) != 0) {
        if (!path_exists(dir)) MOE_ERR("%s: checkpoint directory does not exist", dir);
        MOE_ERR("%s: no %s or %s (not a checkpoint directory?)", dir, SHARDS_SINGLE, SHARDS_INDEX);
    }
    if ((size_t)st.st_size > ST_MAX_HEADER) MOE_ERR("%s: %lld bytes, over the %zu MB limit for an index", path, (long long)st.st_size, ST_MAX_HEADER >> 20);
    size_t len;
    char *text = file_read_all(path, &len);
    if (!text) return MOE_FAIL;
    const int rc = shards_open_index(s, dir, text, len);
    free(text);
    return rc;
}

void shards_close(StShards *s) {
    for (int k = 0; k < s->n_files; k++) st_close(&s->files[k]);
    moe_free(s->files);
    moe_free(s->e);
    moe_free(s->dir);
    moe_free(s->index_path);
    memset(s, 0, sizeof *s);
}

const StTensor *shards_find(const StShards *s, const char *name, const StFile **file) {
    int lo = 0, hi = s->n - 1;
    while (lo <= hi) {
        const int mid = lo + (hi - lo) / 2, c = strcmp(s->e[mid].t->name, name);
        if (!c) return shards_tensor(s, mid, file);
        if (c < 0) lo = mid + 1; else hi = mid - 1;
    }
    if (file) *file = NULL;
    return NULL;
}

int shards_read_f32(const StShards *s, const char *name, float *dst, int64_t d0, int64_t d1) {
    const StFile *f;
    if (!shards_find(s, name, &f)) {
        char nm[128];
        MOE_ERR("%s: missing tensor \"%s\"", s->index_path ? s->index_path : s->files[0].path, moe_printable(nm, sizeof nm, name));
    }
    return st_read_f32(f, name, dst, d0, d1);
}

// st_write calls get with the index in the shard's items; the caller's get wants its own
typedef struct { const StWriteItem *item; int index; } ShardGet;
static const float *shard_get(void *ctx, int i) {
    (void)i;
    const ShardGet *g = ctx;
    return g->item->get(g->item->ctx, g->index);
}
static void drain_gets(const StWriteItem *items, int from, int n) {
    for (int i = from; i < n; i++) if (items[i].get) items[i].get(items[i].ctx, i);
}

int shards_write(const char *dir, const StWriteItem *items, int n, StDtype dtype, const char *meta_json,
                 size_t max_shard_bytes) {
    const size_t esize = dtype == ST_F32 ? 4 : 2;
    // shard k holds items [first[k], first[k + 1])
    int *first = MOE_NEW(int, n + 2), n_shards = 0;
    size_t cur = 0, total = 0;
    for (int i = 0; i < n; i++) {
        size_t b = esize;
        for (int d = 0; d < items[i].ndim; d++) b *= (size_t)items[i].shape[d];
        if (i == 0 || (max_shard_bytes && cur > 0 && cur + b > max_shard_bytes)) { first[n_shards++] = i; cur = 0; }
        cur += b;
        total += b;
    }
    if (n_shards == 0) first[n_shards++] = 0;
    first[n_shards] = n;
    char path[4096], other[4096];
    int rc = MOE_OK;
    if (n_shards == 1) {
        path_join(path, sizeof path, dir, SHARDS_SINGLE);
        rc = st_write(path, items, n, dtype, meta_json);
        path_join(other, sizeof other, dir, SHARDS_INDEX);
        if (rc == MOE_OK && path_exists(other) && unlink(other) != 0) { moe_seterr("%s: cannot remove the stale index: %s", other, strerror(errno)); rc = MOE_FAIL; }
        moe_free(first);
        return rc;
    }
    cJSON *root = cJSON_CreateObject(), *meta = cJSON_AddObjectToObject(root, "metadata"),
          *wm = cJSON_AddObjectToObject(root, "weight_map");
    cJSON_AddNumberToObject(meta, "total_size", (double)total);
    ShardGet *gets = MOE_NEW(ShardGet, n ? n : 1);
    StWriteItem *part = MOE_NEW(StWriteItem, n ? n : 1);
    for (int k = 0; k < n_shards && rc == MOE_OK; k++) {
        char name[64];
        snprintf(name, sizeof name, "model-%05d-of-%05d.safetensors", k + 1, n_shards);
        path_join(path, sizeof path, dir, name);
        const int a = first[k], m = first[k + 1] - a;
        for (int j = 0; j < m; j++) {
            part[j] = items[a + j];
            gets[a + j] = (ShardGet){&items[a + j], a + j};
            if (items[a + j].get) { part[j].get = shard_get; part[j].ctx = &gets[a + j]; }
            cJSON_AddStringToObject(wm, items[a + j].name, name);
        }
        rc = st_write(path, part, m, dtype, meta_json);
        if (rc) drain_gets(items, first[k + 1], n);
    }
    moe_free(gets);
    moe_free(part);
    moe_free(first);
    if (rc == MOE_OK) {
        char *text = cJSON_Print(root);
        path_join(path, sizeof path, dir, SHARDS_INDEX);
        rc = file_write_atomic(path, text, strlen(text));
        free(text);
        path_join(other, sizeof other, dir, SHARDS_SINGLE);
        if (rc == MOE_OK && path_exists(other) && unlink(other) != 0) { moe_seterr("%s: cannot remove the stale single file: %s", other, strerror(errno)); rc = MOE_FAIL; }
    }
    cJSON_Delete(root);
    return rc;
}
