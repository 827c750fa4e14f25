// libFuzzer: the bytes are a model.safetensors.index.json, opened against a fixed directory
// of shards (made once, in a temporary directory): two good shards that split a, b | c, d, a
// third holding a copy of "a", and a file that is not a safetensors file. Every tensor of an
// accepted set is found by name and read.
#include <stdint.h>
#include <unistd.h>
#include "../../src/base/fileio.h"
#include "../../src/io/shards.h"
#include "fuzz_common.h"

static char dir[64];

static void cleanup(void) {
    const char *names[] = {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "dup.safetensors",
                           "junk.safetensors"};
    char p[256];
    for (int i = 0; i < 4; i++) { path_join(p, sizeof p, dir, names[i]); unlink(p); }
    rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc; (void)argv;
    snprintf(dir, sizeof dir, "/tmp/fuzz-shards.XXXXXX");
    if (!mkdtemp(dir)) abort();
    atexit(cleanup);
    static const float v[12] = {1, -2, 3.5f, 0, 1e-3f, 7, 8, 9, 10, 11, 12, 13};
    StWriteItem s1[] = {{.name = "a", .ndim = 1, .shape = {2}, .data = v}, {.name = "b", .ndim = 2, .shape = {2, 2}, .data = v}};
    StWriteItem s2[] = {{.name = "c", .ndim = 1, .shape = {3}, .data = v}, {.name = "d", .ndim = 0, .data = v}};
    char p[256];
    path_join(p, sizeof p, dir, "model-00001-of-00002.safetensors");
    if (st_write(p, s1, 2, ST_F32, "{\"format\":\"pt\"}")) abort();
    path_join(p, sizeof p, dir, "model-00002-of-00002.safetensors");
    if (st_write(p, s2, 2, ST_BF16, NULL)) abort();
    path_join(p, sizeof p, dir, "dup.safetensors");
    if (st_write(p, s1, 1, ST_F32, NULL)) abort();
    path_join(p, sizeof p, dir, "junk.safetensors");
    if (file_write_atomic(p, "not a safetensors file", 22)) abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    StShards s;
    if (shards_open_index(&s, dir, (const char *)data, size) != MOE_OK) { fuzz_check_message(dir); return 0; }
    for (int i = 0; i < s.n; i++) {
        const StFile *f, *g;
        const StTensor *t = shards_tensor(&s, i, &f);
        if (shards_find(&s, t->name, &g) != t || g != f) abort();
        if (i && strcmp(s.e[i - 1].t->name, t->name) >= 0) abort();   // sorted, unique
        float x[16];
        if (t->numel > 16 || st_tensor_f32(f, t, x) != MOE_OK) abort();
        if (t->ndim == 1 && shards_read_f32(&s, t->name, x, t->shape[0], 0) != MOE_OK) abort();
    }
    float one;
    if (shards_read_f32(&s, "e", &one, 1, 0) == MOE_OK) abort();
    fuzz_check_message(dir);
    shards_close(&s);
    return 0;
}
