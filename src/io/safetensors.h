// safetensors: u64-LE header length, JSON header {name: {dtype, shape, data_offsets}},
// then row-major data. We read and write F32 and BF16 (converted to/from f32 on the way).
#pragma once
#include <stddef.h>
#include <stdint.h>

typedef enum { ST_F32 = 0, ST_BF16 = 1 } StDtype;

typedef struct {
    char *name;
    StDtype dtype;
    int ndim;
    int64_t shape[4];
    size_t nbytes;
    const uint8_t *data;     // into the file buffer
} StTensor;

typedef struct {
    char *path;
    uint8_t *buf;            // whole file
    size_t size;
    StTensor *t;
    int n;
    char *metadata_json;     // the "__metadata__" object as JSON text, or NULL
} StFile;

int st_open(StFile *f, const char *path);
void st_close(StFile *f);
const StTensor *st_find(const StFile *f, const char *name);
// copy tensor `name` into dst as f32; checks the shape against (d0, d1) (d1 = 0 for 1-D)
int st_read_f32(const StFile *f, const char *name, float *dst, int64_t d0, int64_t d1);
// fetch a string value from __metadata__
const char *st_meta(const StFile *f, const char *key, char *buf, size_t cap);

typedef struct {
    const char *name;
    int ndim;
    int64_t shape[4];
    const float *data;       // f32 source
    // or, when get is set, the source comes from get(ctx, i) (item i) just before it is
    // written: called once per item in order, even after a write error; NULL fails the write
    const float *(*get)(void *ctx, int i);
    void *ctx;
} StWriteItem;

// Writes atomically; dtype applies to every tensor. meta: NULL or a flat JSON object of
// string values to store as __metadata__.
int st_write(const char *path, const StWriteItem *items, int n, StDtype dtype, const char *meta_json);
