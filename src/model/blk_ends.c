// The stack's two ends: the token embedding, and the final norm with the output head (the
// embedding itself when tied).
#include "block.h"

static void embedding_tensors(Layout *lo, const MoeConfig *c, int l, const ExpertShard *sh, ParamViews *v) {
    (void)l; (void)sh;
    layout_tensor(lo, "model.embed_tokens.weight", c->vocab_size, c->hidden_size, (TensorRole){-1, -1, true, true}, &v->embed);
}

static void head_tensors(Layout *lo, const MoeConfig *c, int l, const ExpertShard *sh, ParamViews *v) {
    (void)sh;
    layout_tensor(lo, "model.norm.weight", c->hidden_size, 0, role_norm(-1), &v->norm);
    // the head is a bucket of its own (layer L): its gradient is complete after the forward
    // pass, which computes it with the cross-entropy
    if (!c->tie_word_embeddings) layout_tensor(lo, "lm_head.weight", c->vocab_size, c->hidden_size, role_matrix(l), &v->head);
    else v->head = v->embed;
}

const BlockKind BLOCK_EMBEDDING = {"embedding", embedding_tensors};
const BlockKind BLOCK_HEAD = {"head", head_tensors};
