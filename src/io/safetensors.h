// safetensors: u64-LE header length, JSON header {name: {dtype, shape, data_offsets}},
// then row-major data. We read F32, BF16 and F16 (converted to f32 on the way) and write
// F32 and BF16. A file from elsewhere is untrusted input: st_open checks every header field
// (see safetensors.c) before anything points into the data, and never reads out of bounds.
#pragma once
#include <stddef.h>
#include <stdint.h>

// ST_OTHER: a dtype of the format we know the size of (F64, I64, U8, BOOL, F8_E4M3, ...):
// its offsets are checked like any other, but it cannot be read as f32
typedef enum { ST_F32 = 0, ST_BF16 = 1, ST_F16 = 2, ST_OTHER = 3 } StDtype;

typedef struct {
    char *name;
    StDtype dtype;
    const char *dtype_name;  // as in the header ("F32", "I64", ...)
    int ndim;                // 0 (a scalar) to 4
    int64_t shape[4];
    size_t numel;            // product of shape, 1 for a scalar
    size_t nbytes;           // numel times the element size
    const uint8_t *data;     // into buf
} StTensor;

typedef struct {
    char *path;              // names the file in every message
    const uint8_t *buf;      // the whole file, mapped read-only (st_open) or the caller's (st_open_mem)
    size_t size;
    size_t map_len;          // nonzero when buf is our mapping
    StTensor *t;             // in header order
    int n;
    int *by_name;            // indices into t sorted by name, for st_find
    char *metadata_json;     // the "__metadata__" object as JSON text, or NULL
} StFile;

// Largest header accepted (Hugging Face's own reader refuses more than 100 MB too).
#define ST_MAX_HEADER ((size_t)100 << 20)

int st_open(StFile *f, const char *path);
// Parses a safetensors image in memory (size bytes at buf, not copied: it must outlive f);
// path names it in messages.
int st_open_mem(StFile *f, const void *buf, size_t size, const char *path);
void st_close(StFile *f);
const StTensor *st_find(const StFile *f, const char *name);
// copy tensor `name` into dst as f32; checks the shape against (d0, d1) (d1 = 0 for 1-D)
int st_read_f32(const StFile *f, const char *name, float *dst, int64_t d0, int64_t d1);
// copy any tensor of f (F32, BF16 or F16, any shape) into dst (t->numel floats)
int st_tensor_f32(const StFile *f, const StTensor *t, float *dst);
// fetch a string value from __metadata__
const char *st_meta(const StFile *f, const char *key, char *buf, size_t cap);

// IEEE 754 half -> f32, exact (subnormals, inf, nan with its payload)
float st_f16_to_f32(uint16_t h);

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

// Writes atomically; dtype (ST_F32 or ST_BF16) applies to every tensor. meta: NULL or a flat
// JSON object of string values to store as __metadata__.
int st_write(const char *path, const StWriteItem *items, int n, StDtype dtype, const char *meta_json);
