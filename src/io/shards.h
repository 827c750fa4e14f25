// A checkpoint directory's weights as one set of tensors, as Hugging Face writes them:
// DIR/model.safetensors, or the shards that DIR/model.safetensors.index.json lists
// ({"metadata": {...}, "weight_map": {tensor: file}}). The index is untrusted input like
// the files: its JSON, every file name (a plain name in DIR) and every mapping are checked,
// and each tensor must be in exactly the file the index names for it.
#pragma once
#include <stddef.h>
#include "safetensors.h"

#define SHARDS_SINGLE "model.safetensors"
#define SHARDS_INDEX "model.safetensors.index.json"

typedef struct {
    const StTensor *t;       // into files[file]
    int file;
} ShardEntry;

typedef struct {
    char *dir;
    char *index_path;        // DIR/model.safetensors.index.json, or NULL for one file
    StFile *files;
    int n_files;
    ShardEntry *e;           // every tensor of the set, sorted by name
    int n;
} StShards;

// model.safetensors when it is there (as transformers chooses), else the index's shards
int shards_open(StShards *s, const char *dir);
// the set an index text describes (shards_open reads it from DIR/SHARDS_INDEX); the shard
// files are opened from dir
int shards_open_index(StShards *s, const char *dir, const char *text, size_t len);
void shards_close(StShards *s);
// tensor `name`, or NULL; *file (when file is not NULL) gets the file that holds it
const StTensor *shards_find(const StShards *s, const char *name, const StFile **file);
// copy tensor `name` into dst as f32; checks the shape against (d0, d1) (d1 = 0 for 1-D)
int shards_read_f32(const StShards *s, const char *name, float *dst, int64_t d0, int64_t d1);
// iteration in name order: i in [0, s->n)
static inline const StTensor *shards_tensor(const StShards *s, int i, const StFile **file) {
    if (file) *file = &s->files[s->e[i].file];
    return s->e[i].t;
}

// Writes items (in order) into DIR as shards of at most max_shard_bytes each (a tensor larger
// than that gets a shard of its own; 0: no limit): one shard is DIR/model.safetensors, more
// are DIR/model-0000k-of-0000n.safetensors with the index written last, atomically. The form
// not written (a stale index, or model.safetensors) is removed, so that shards_open reads the
// new set. meta_json goes into every shard's __metadata__; get is called as st_write says.
int shards_write(const char *dir, const StWriteItem *items, int n, StDtype dtype, const char *meta_json,
                 size_t max_shard_bytes);
