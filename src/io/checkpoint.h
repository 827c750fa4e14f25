// Checkpoint directory (SPEC §3): config.json, model.safetensors, and for a resume
// train_state.safetensors (AdamW moments "adam.m.<name>", "adam.v.<name>" and the trainer's
// state as JSON in its __metadata__ "train_state"). What that JSON says is the trainer's
// business (src/train/resume.c); this layer only stamps both files with one save id, so that
// a model and a state from different saves are never taken for a pair.
// Saves go through a journal so that a crash leaves the previous checkpoint whole.
#pragma once
#include <stdbool.h>
#include "../model/model.h"

typedef struct {
    const char *json;         // the trainer's state: one JSON object (gets "ckpt_id" added)
    long step;                // recorded in model.safetensors's metadata
    // the moments, in the blob layout of the model being saved: whole arrays, or, for
    // moments that are not whole in this process (--zero 1), moment(ctx, ti, which) gives
    // tensor ti's m (which 0) or v (1), valid until the next call, NULL to fail the save.
    // moment() is called for every tensor in order, m before v, unless the save fails
    // before train_state.safetensors; *calls counts the calls made, so that a caller
    // whose calls are collective can make the rest.
    const float *m, *v;
    const float *(*moment)(void *ctx, int ti, int which);
    void *ctx;
    int calls;
} CkptState;

// st NULL: config.json and model.safetensors only (moe init); bf16: the weights as BF16
int ckpt_save(const char *dir, const Model *m, CkptState *st, bool bf16);
int ckpt_load_model(const char *dir, Model *m, bool with_grads);
// only the routed experts of shard sh (expert parallelism; NULL: all); the tensors are
// read by name, so a checkpoint of any layout loads into any shard
int ckpt_load_model_shard(const char *dir, Model *m, bool with_grads, const ExpertShard *sh);
// and only the layers of ls (pipeline parallelism; NULL: all)
int ckpt_load_model_staged(const char *dir, Model *m, bool with_grads, const ExpertShard *sh, const LayerShard *ls);
// train_state.safetensors: the moments into mom_m, mom_v (the blob layout of m) and the
// trainer's JSON (*json, malloc'd); checks that it comes from the save model.safetensors
// comes from
int ckpt_load_state(const char *dir, const Model *m, float *mom_m, float *mom_v, char **json);
bool ckpt_exists(const char *dir);
// repair an interrupted save (roll forward a complete journal, drop partial files)
int ckpt_recover(const char *dir);
// m's weights under the names of target (config_hf_family: the same model in the reference
// library's family) in dir: config.json and model.safetensors (bf16: BF16 weights)
int ckpt_export(const char *dir, const Model *m, const MoeConfig *target, bool bf16);
