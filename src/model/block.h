// Blocks: the parts a layer is made of (attention, dense FFN, MoE FFN, shared expert) and
// the stack's two ends (embedding; final norm and output head). Each block kind has its own
// file (blk_*.c) and declares its tensors there, with their roles set explicitly; the
// model's blob is the declarations of the stack's blocks in order (layout.c), for one
// ExpertShard. A new block kind is a new file and a line in model_layer_blocks.
#pragma once
#include "model.h"

// A tensor's role, as its block declares it.
typedef struct {
    int layer;             // its layer; -1 the embedding and final norm; L an untied head
    int expert;            // a routed expert's id in its layer, -1 for any other tensor
    bool decay;            // AdamW weight decay (matrices)
    bool embedding;        // initialised as an embedding
} TensorRole;

// Receives the declarations: a first walk adds the tensors to the model's list, a second
// points each view into a blob.
typedef struct Layout Layout;
void layout_tensor(Layout *lo, const char *name, int d0, int d1, TensorRole role, float **view);

typedef struct {
    const char *name;
    // block l's tensors (l = -1 before the layers, L after them) in blob order; their views
    // go to v (v->layer[l] for a layer's blocks)
    void (*tensors)(Layout *lo, const MoeConfig *c, int l, const ExpertShard *sh, ParamViews *v);
} BlockKind;

extern const BlockKind BLOCK_EMBEDDING, BLOCK_ATTENTION, BLOCK_DENSE_FFN, BLOCK_MOE_FFN, BLOCK_SHARED_EXPERT, BLOCK_HEAD;

// the blocks of layer l, in order; returns how many
int model_layer_blocks(const MoeConfig *c, int l, const BlockKind **out);

static inline TensorRole role_norm(int l) { return (TensorRole){l, -1, false, false}; }
static inline TensorRole role_matrix(int l) { return (TensorRole){l, -1, true, false}; }
