// Blocks: the parts a layer is made of (attention, dense FFN, MoE FFN, shared expert) and
// the stack's two ends (embedding; final norm and output head). Each block kind has its own
// file (blk_*.c) and declares its tensors there, with their roles set explicitly; the
// model's blob is the declarations of the stack's blocks in order (layout.c), for one
// ExpertShard. A new block kind is a new file and a line in model_layer_blocks.
#pragma once
#include <stddef.h>
#include "model.h"

// A tensor's role, as its block declares it.
typedef struct {
    int layer;             // its layer; -1 the embedding and final norm; L an untied head
    int expert;            // a routed expert's id in its layer, -1 for any other tensor
    bool decay;            // AdamW weight decay (matrices)
    bool embedding;        // initialised as an embedding
    float gain;            // a norm's initial value (0: 1)
} TensorRole;

// Receives the declarations: a first walk adds the tensors to the model's list, a second
// points each view into a blob.
typedef struct Layout Layout;
void layout_tensor(Layout *lo, const char *name, int d0, int d1, TensorRole role, float **view);

// What a block saves for its backward pass: each intermediate with its role, which alone
// decides (acts_storage, acts.c) whether it is kept in f32, packed to bf16 or recomputed.
typedef enum {
    SAVE_RESIDUAL,         // a layer's input x: kept (bf16: packed)
    SAVE_ACT,              // q, k, v, the attention output: kept
    SAVE_STAT,             // rstd, lse: small, always f32
    SAVE_SUM,              // h = x + attention: recomputed under --recompute full
    SAVE_NORM_OUT,         // a norm's output: recomputed under selective and full
    SAVE_EXPERT_INPUT,     // a MoE layer's normalised input: the experts' rows are gathered from
                           // it, and an owner under expert parallelism rounds them as stored
                           // here: packed under bf16 whatever the recomputation, recomputed in f32
    SAVE_PRE_ACT,          // SwiGLU's gate|up pre-activations: kept
    SAVE_PRODUCT,          // silu(g) * u: recomputed under selective and full
    SAVE_ROWS_IN,          // the experts' gathered input rows: recomputed under selective and full
    SAVE_ROWS_PRE_ACT,     // the experts' gate|up rows: recomputed under full
    SAVE_ROWS_PRODUCT,     // the experts' silu(g) * u rows: recomputed under selective and full
    SAVE_KV_EXPANDED,      // MLA's keys and values expanded from the latent: recomputed (one kv_b
                           // GEMM) under selective and full
} SaveRole;
typedef enum { STORE_F32, STORE_BF16, STORE_RECOMPUTE } Storage;

typedef struct {
    SaveRole role;
    size_t field;          // offsetof the float * in LayerActs (in MoeActs for rows)
    bool rows;             // per expert row (the MoE block's), else per token
    int width;             // floats a token (a row)
} SavedDecl;
#define SAVED(role, member, width) ((SavedDecl){role, offsetof(LayerActs, member), false, width})
#define SAVED_ROWS(role, member, width) ((SavedDecl){role, offsetof(MoeActs, member), true, width})

typedef struct {
    const char *name;
    // block l's tensors (l = -1 before the layers, L after them) in blob order; their views
    // go to v (v->layer[l] for a layer's blocks)
    void (*tensors)(Layout *lo, const MoeConfig *c, int l, const ExpertShard *sh, ParamViews *v);
    // the intermediates block l saves for its backward pass (at most 16); returns how many
    int (*saved)(const MoeConfig *c, int l, SavedDecl *out);
} BlockKind;

extern const BlockKind BLOCK_EMBEDDING, BLOCK_ATTENTION, BLOCK_MLA, BLOCK_MTP, BLOCK_DENSE_FFN, BLOCK_MOE_FFN, BLOCK_SHARED_EXPERT, BLOCK_HEAD;

// the blocks of layer l, in order; returns how many
int model_layer_blocks(const MoeConfig *c, int l, const BlockKind **out);

static inline TensorRole role_norm(int l) { return (TensorRole){l, -1, false, false, 0}; }
static inline TensorRole role_gain(int l, float g) { return (TensorRole){l, -1, false, false, g}; }
static inline TensorRole role_matrix(int l) { return (TensorRole){l, -1, true, false, 0}; }
