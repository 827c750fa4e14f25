// File formats from elsewhere (src/io/safetensors.c, src/io/shards.c): each kind of bad
// safetensors file or shard index is refused with one line that names the file; F16 reads
// exactly; sharded writes read back. One PASS/FAIL line per check.
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "../src/base/base.h"
#include "../src/base/fileio.h"
#include "../src/io/safetensors.h"
#include "../src/io/shards.h"

static int n_pass, n_fail;
static char dir[64];

static void check(const char *name, int ok, const char *detail) {
    if (ok) { printf("PASS io: %s\n", name); n_pass++; }
    else { printf("FAIL io: %s: %s\n", name, detail); n_fail++; }
}

// the last error is one line, names `file` and contains `what`
static void check_refusal(const char *name, int rc, const char *file, const char *what) {
    const char *m = moe_errmsg();
    char detail[1400];
    snprintf(detail, sizeof detail, "rc %d, message: %s", rc, m);
    check(name, rc == MOE_FAIL && strstr(m, file) && strstr(m, what) && !strchr(m, '\n'), detail);
}

static void write_file(const char *name, const void *data, size_t n) {
    char p[256];
    path_join(p, sizeof p, dir, name);
    FILE *f = fopen(p, "wb");
    fwrite(data, 1, n, f);
    fclose(f);
}

// a safetensors file of the header text `h` (its length prefixed) and `n` data bytes
static void write_st(const char *name, const char *h, const void *data, size_t n) {
    size_t hl = strlen(h);
    uint8_t *b = malloc(8 + hl + n + 1);
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)((uint64_t)hl >> (8 * i));
    memcpy(b + 8, h, hl);
    if (n) memcpy(b + 8 + hl, data, n);
    write_file(name, b, 8 + hl + n);
    free(b);
}

static int open_st(const char *name, StFile *f) {
    char p[256];
    path_join(p, sizeof p, dir, name);
    int rc = st_open(f, p);
    if (rc == MOE_OK) st_close(f);
    return rc;
}

static void test_bad_files(void) {
    StFile f;
    const float x[4] = {1, 2, 3, 4};
    write_st("good.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}", x, 16);
    check("a good file opens", open_st("good.safetensors", &f) == MOE_OK, moe_errmsg());
    write_file("short.safetensors", "\x10\0\0", 3);
    check_refusal("truncated file (no header)", open_st("short.safetensors", &f), "short.safetensors", "truncated");
    write_st("hlen.safetensors", "{}", NULL, 0);
    write_file("hlen.safetensors", "\xff\x10\0\0\0\0\0\0{}", 10);
    check_refusal("header length past EOF", open_st("hlen.safetensors", &f), "hlen.safetensors", "truncated");
    write_file("huge.safetensors", "\0\0\0\0\0\x10\0\0{}", 10);
    check_refusal("header length absurd", open_st("huge.safetensors", &f), "huge.safetensors", "limit");
    write_st("past.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", x, 8);
    check_refusal("offsets past EOF", open_st("past.safetensors", &f), "past.safetensors", "tensor \"w\": data [0, 16) lies outside");
    write_st("overlap.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                                    "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", x, 12);
    check_refusal("overlapping tensors", open_st("overlap.safetensors", &f), "overlap.safetensors", "overlaps tensor \"a\"");
    write_st("gap.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                                "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}", x, 12);
    check_refusal("a gap between tensors", open_st("gap.safetensors", &f), "gap.safetensors", "gap");
    write_st("dtype.safetensors", "{\"w\":{\"dtype\":\"Q4_K\",\"shape\":[4],\"data_offsets\":[0,4]}}", x, 4);
    check_refusal("unknown dtype", open_st("dtype.safetensors", &f), "dtype.safetensors", "unknown dtype \"Q4_K\"");
    write_st("mismatch.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,16]}}", x, 16);
    check_refusal("shape/offset mismatch", open_st("mismatch.safetensors", &f), "mismatch.safetensors", "shape [3] of F32 needs 12");
    write_st("neg.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[-4],\"data_offsets\":[0,16]}}", x, 16);
    check_refusal("negative dimension", open_st("neg.safetensors", &f), "neg.safetensors", "shape[0] is not a non-negative integer");
    write_st("ovf.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],\"data_offsets\":[0,0]}}", NULL, 0);
    check_refusal("element count overflow", open_st("ovf.safetensors", &f), "ovf.safetensors", "overflows");
    write_st("dup.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]},"
                                "\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", x, 4);
    check_refusal("duplicate tensor name", open_st("dup.safetensors", &f), "dup.safetensors", "\"w\" appears twice");
    write_st("nl.safetensors", "{\"a\\nb\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", x, 4);
    check_refusal("a name with a newline is printed on one line", open_st("nl.safetensors", &f), "nl.safetensors", "\"a?b\"");
    write_st("tail.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", x, 8);
    check_refusal("bytes after the last tensor", open_st("tail.safetensors", &f), "tail.safetensors", "after the last tensor");
    write_st("json.safetensors", "{\"w\":{\"dtype\":\"F32\",", x, 4);
    check_refusal("malformed header JSON", open_st("json.safetensors", &f), "json.safetensors", "malformed");
}

static void test_f16(void) {
    // every half against the compiler's own conversion (nan: a nan with the same sign)
    int bad = -1;
    for (uint32_t h = 0; h < 65536 && bad < 0; h++) {
        _Float16 v;
        uint16_t hh = (uint16_t)h;
        memcpy(&v, &hh, 2);
        float want = (float)v, got = st_f16_to_f32(hh);
        if (isnan(want) ? !isnan(got) || signbit(got) != signbit(want) : memcmp(&want, &got, 4)) bad = (int)h;
    }
    char d[64];
    snprintf(d, sizeof d, "half 0x%04x converts wrongly", bad);
    check("F16 -> f32 exact for all 65536 halves", bad < 0, d);
    check("F16 subnormal, inf", st_f16_to_f32(0x0001) == 0x1p-24f && st_f16_to_f32(0x7c00) == INFINITY &&
          st_f16_to_f32(0xfc00) == -INFINITY && isnan(st_f16_to_f32(0x7e00)), "");
    // and through a file, with BF16 and I64 (read as f32: refused) alongside
    const uint16_t h[4] = {0x3c00, 0xc000, 0x0001, 0x7bff}, b[2] = {0x3f80, 0xc040};
    uint8_t data[8 + 4 + 8];
    memcpy(data, h, 8); memcpy(data + 8, b, 4); memset(data + 12, 0, 8);
    write_st("f16.safetensors", "{\"__metadata__\":{\"format\":\"pt\"},\"h\":{\"dtype\":\"F16\",\"shape\":[2,2],\"data_offsets\":[0,8]},"
             "\"b\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[8,12]},\"i\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[12,20]}}", data, 20);
    char p[256];
    path_join(p, sizeof p, dir, "f16.safetensors");
    StFile f;
    float y[4] = {0}, z[2] = {0}, s;
    int rc = st_open(&f, p);
    check("F16/BF16/I64 file opens", rc == MOE_OK, moe_errmsg());
    if (rc) return;
    rc = st_read_f32(&f, "h", y, 2, 2) || st_read_f32(&f, "b", z, 2, 0);
    check("F16 and BF16 values", !rc && y[0] == 1 && y[1] == -2 && y[2] == 0x1p-24f && y[3] == 65504 && z[0] == 1 && z[1] == -3, moe_errmsg());
    check_refusal("I64 is not read as f32", st_tensor_f32(&f, st_find(&f, "i"), &s), "f16.safetensors", "dtype I64 cannot be read");
    check_refusal("a missing tensor", st_read_f32(&f, "nope", &s, 1, 0), "f16.safetensors", "missing tensor \"nope\"");
    char m[16];
    check("metadata", st_meta(&f, "format", m, sizeof m) && !strcmp(m, "pt"), "no format");
    st_close(&f);
}

static const float *get_item(void *ctx, int i) { int *calls = ctx; calls[i]++; static float v[64]; for (int j = 0; j < 64; j++) v[j] = (float)(i * 100 + j); return v; }

static void test_shards(void) {
    char sub[128], p[256];
    snprintf(sub, sizeof sub, "%s/sharded", dir);
    dir_ensure(sub);
    // 5 tensors of 64 floats (256 bytes each): at most 600 bytes a shard makes 3 shards
    int calls[5] = {0};
    char names[5][16];
    StWriteItem it[5];
    for (int i = 0; i < 5; i++) {
        snprintf(names[i], sizeof names[i], "t%d", 4 - i);
        it[i] = (StWriteItem){.name = names[i], .ndim = 2, .shape = {8, 8}, .get = get_item, .ctx = calls};
    }
    int rc = shards_write(sub, it, 5, ST_F32, "{\"format\":\"pt\"}", 600);
    check("sharded write", rc == MOE_OK && calls[0] == 1 && calls[4] == 1, moe_errmsg());
    path_join(p, sizeof p, sub, "model-00003-of-00003.safetensors");
    check("three shards and an index", path_exists(p), p);
    StShards s;
    rc = shards_open(&s, sub);
    check("the sharded set opens", rc == MOE_OK && s.n == 5 && s.n_files == 3, moe_errmsg());
    if (rc) return;
    float v[64];
    int ok = 1;
    for (int i = 0; i < 5; i++) {
        ok &= shards_read_f32(&s, names[i], v, 8, 8) == MOE_OK && v[0] == i * 100 && v[63] == i * 100 + 63;
        const StFile *f;
        ok &= shards_tensor(&s, i, &f) != NULL && !strcmp(s.e[i].t->name, names[4 - i]);   // in name order
    }
    check("every tensor reads back from its shard", ok, moe_errmsg());
    check_refusal("a shape mismatch names the shard", shards_read_f32(&s, "t0", v, 64, 0), "model-00003-of-00003.safetensors", "has shape [8,8]");
    check_refusal("a missing tensor names the index", shards_read_f32(&s, "t9", v, 1, 0), SHARDS_INDEX, "missing tensor \"t9\"");
    shards_close(&s);

    // the index broken in each way (written over the good one)
    path_join(p, sizeof p, sub, SHARDS_INDEX);
    const char *A = "model-00001-of-00003.safetensors", *B = "model-00002-of-00003.safetensors", *C = "model-00003-of-00003.safetensors";
    char idx[1024];
    const struct { const char *name, *fmt, *what; } cases[] = {
        {"bad index JSON", "{\"weight_map\": {\"t4\": \"%s\",", "malformed JSON"},
        {"text after the index", "{\"weight_map\": {\"t4\": \"%s\"}} x", "malformed JSON"},
        {"index naming a missing file", "{\"weight_map\": {\"t4\": \"%s\", \"t3\": \"%s\", \"t2\": \"%s\", \"t1\": \"%s\", \"t0\": \"nope.safetensors\"}}", "nope.safetensors: cannot open"},
        {"index file name escaping the directory", "{\"weight_map\": {\"t4\": \"../%s\"}}", "is not a file name in the checkpoint directory"},
        {"weight_map not an object", "{\"weight_map\": [\"%s\"]}", "\"weight_map\" must be an object"},
        {"weight_map value not a string", "{\"weight_map\": {\"t4\": 1}}", "must be a string"},
        {"tensor mapped to the wrong shard", "{\"weight_map\": {\"t4\": \"%s\", \"t3\": \"%s\", \"t2\": \"%s\", \"t1\": \"%s\", \"t0\": \"%s\"}}", "is mapped to"},
        {"tensor not in the index", "{\"weight_map\": {\"t4\": \"%s\", \"t2\": \"%s\", \"t1\": \"%s\", \"t0\": \"%s\"}}", "\"t3\" in"},
        {"tensor listed twice", "{\"weight_map\": {\"t4\": \"%s\", \"t4\": \"%s\", \"t3\": \"%s\", \"t2\": \"%s\", \"t1\": \"%s\", \"t0\": \"%s\"}}", "listed twice"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        if (k == 6) snprintf(idx, sizeof idx, cases[k].fmt, B, A, B, C, C);
        else if (k == 7) snprintf(idx, sizeof idx, cases[k].fmt, A, B, B, C);
        else if (k == 8) snprintf(idx, sizeof idx, cases[k].fmt, A, A, A, B, B, C);
        else snprintf(idx, sizeof idx, cases[k].fmt, A, A, B, B, C);
        file_write_atomic(p, idx, strlen(idx));
        rc = shards_open(&s, sub);
        if (rc == MOE_OK) shards_close(&s);
        check_refusal(cases[k].name, rc, k == 2 ? "nope.safetensors" : SHARDS_INDEX, cases[k].what);
    }
    // a copy of a tensor in a second file the index does not list for it
    char q[256];
    path_join(q, sizeof q, sub, "extra.safetensors");
    StWriteItem one = {.name = "t4", .ndim = 2, .shape = {8, 8}, .data = v};
    st_write(q, &one, 1, ST_F32, NULL);
    snprintf(idx, sizeof idx, "{\"weight_map\": {\"t4\": \"extra.safetensors\", \"t3\": \"%s\", \"t2\": \"%s\", \"t1\": \"%s\", \"t0\": \"%s\"}}", A, B, B, C);
    file_write_atomic(p, idx, strlen(idx));
    rc = shards_open(&s, sub);
    if (rc == MOE_OK) shards_close(&s);
    check_refusal("tensor in two files", rc, SHARDS_INDEX, "is in both");
    check_refusal("a directory without weights", shards_open(&s, dir), dir, "no model.safetensors");

    // one shard: model.safetensors, and the stale index is removed
    rc = shards_write(sub, it, 5, ST_BF16, NULL, 0);
    check("an unsharded write removes the stale index", rc == MOE_OK && !path_exists(p), moe_errmsg());
    rc = shards_open(&s, sub);
    check("model.safetensors opens as a set", rc == MOE_OK && s.n == 5 && s.n_files == 1 && !s.index_path, moe_errmsg());
    if (rc == MOE_OK) shards_close(&s);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/moe-io.XXXXXX");
    if (!mkdtemp(dir)) { perror("mkdtemp"); return 1; }
    test_bad_files();
    test_f16();
    test_shards();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) {}
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail != 0;
}
