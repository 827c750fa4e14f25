// Inside the model: a pass over one micro-batch (or one half of it), whose stages model.c
// runs one at a time for the schedule's driver (schedule.c).
#pragma once
#include "schedule.h"
#include "block.h"

#define HEAD_CHUNK 256   // rows of the output head per GEMM while training

typedef struct {
    Model *m;
    Acts *a;
    const Batch *b;
    const ForwardOpts *o;
    ForwardOut *out;
    float *x;              // forward: the residual stream entering the current layer
    int *kv_hi;
    double pairs;          // (query, key) pairs, for the attention FLOP count
    bool gset;             // this pass writes the gradients first: overwrite, do not add
    int l0, n;             // its layers [l0, l0 + n) (model_run_span)
    bool first, last;      // they start the stack (the embedding), end it (the head)
} Pass;

// Runs stage `kind` (StageKind) of pass P at layer l (which only the per-layer stages and
// STAGE_GRADS_READY read).
int pass_run_stage(Pass *P, int kind, int l);
// After a failure: frees what a forward pass holds between its stages.
void pass_abort(Pass *P);

// ---- shared by the stages and the blocks' passes (acts.c, blk_*.c)
// the residual stream entering layer l (l = L: the stack's output)
float *pass_resid(const Acts *a, int l, int N);
// how an intermediate of this role is stored under a's mode: the one storage policy
Storage acts_storage(const Acts *a, SaveRole role);
// a layer's saved intermediates packed to bf16 (pack) or back (ACTS_BF16)
void acts_stash(const Acts *a, const Model *m, int l, int N, bool pack);
// what layer l's backward pass reads, recomputed as the forward pass made it
void acts_restore(Pass *P, int l);
static inline LayerActs *pass_layer(Pass *P, int l) { return &P->a->layer[P->a->train ? l : 0]; }
// expert parallelism: the transport to the other experts' owners (NULL: every expert here),
// and a dynamic placement's slots
static inline MoeComm *pass_ep_comm(const Pass *P) { return P->o->shard ? P->o->shard->comm : NULL; }
static inline const MoePlacement *pass_ep_place(const Pass *P) { return P->o->shard ? P->o->shard->place : NULL; }
// out (+)= swiglu(x) with gate_proj followed by up_proj as one [2F,D] GEMM, and its backward
// pass (the gate/up gradients written over gu; bw 0 writes the weight gradients, 1 adds)
void swiglu_ffn_forward(float *out, float *gu, float *act, const float *x, const float *Wgu, const float *Wd, int N,
                        int D, int F, bool acc);
void swiglu_ffn_backward(float *dx, float *dWgu, float *dWd, const float *dout, const float *x, float *gu,
                         const float *act, const float *Wgu, const float *Wd, float *da, int N, int D, int F, float bw);

// the attention blocks' output: h = x + att Wo^T (sandwich norm: + rmsnorm(att Wo^T)), and
// its backward pass dh -> a->datt (blk_attention.c; the MLA block shares them)
void attn_post_norm_tensor(Layout *lo, const MoeConfig *c, int l, LayerParams *p);
void attn_output_forward(Pass *P, int l, const float *att, int width);
void attn_output_backward(Pass *P, int l, const float *att, int width);
// the sandwich norm: out += rmsnorm(y, w) (tmp: [N,D] scratch), and dout -> dy (overwritten), dw
void sandwich_add(float *tmp, float *out, const float *y, float *rstd, const float *w, int N, int D, float eps);
void sandwich_backward(float *dy, float *dw, const float *dout, const float *y, const float *w, const float *rstd,
                       int N, int D, bool gset);
// where the FFN of layer l adds its output: the stream, or under the sandwich norm the
// buffer its post-norm reads (blk_ffn.c)
float *pass_ffn_out(Pass *P, int l);
void ffn_norm_tensors(Layout *lo, const MoeConfig *c, int l, LayerParams *p);

// ---- the blocks' passes (block.h lists the kinds; each kind's file holds its own)
int blk_embedding_forward(Pass *P);                 // blk_ends.c (a chunk that does not start the stack: its input)
int blk_head_forward(Pass *P);                      // final norm, head, cross-entropy (+ the head's backward)
void blk_head_backward(Pass *P);                    // the final norm's backward pass
void pass_chunk_dstream(Pass *P);                   // a chunk below the top: d(output) given
void blk_embedding_backward(Pass *P);
void blk_attention_forward(Pass *P, int l);         // blk_attention.c: h = x + attention(rmsnorm(x))
void blk_attention_backward(Pass *P, int l);        // dh -> dx (and the input norm)
void blk_mla_forward(Pass *P, int l);               // blk_mla.c: the same under multi-head latent attention
void blk_mla_backward(Pass *P, int l);
void blk_ffn_norm_forward(Pass *P, int l);          // blk_ffn.c: xn2 = rmsnorm(h), the stream starts at h
void blk_ffn_norm_backward(Pass *P, int l);         // dh += rmsnorm^T(dxn)
void blk_ffn_post_forward(Pass *P, int l);          // sandwich: x = h + rmsnorm(the FFN's output)
void blk_ffn_post_backward(Pass *P, int l);         // sandwich: a->dx -> the FFN output's gradient
void blk_dense_ffn_forward(Pass *P, int l);
void blk_dense_ffn_backward(Pass *P, int l);
int blk_moe_route_forward(Pass *P, int l);          // blk_moe.c: router, dispatch (EP: rows sent)
int blk_moe_experts_forward(Pass *P, int l);          // the experts' GEMMs (EP: the owners', rows sent back)
int blk_moe_finish_forward(Pass *P, int l);         // outputs into the stream, balance loss, statistics
int blk_moe_backward_start(Pass *P, int l);         // the experts' backward (EP: output gradients sent)
void blk_moe_router_backward(Pass *P, int l); // routing weights, balance loss, router
int blk_moe_owner_backward(Pass *P, int l);         // EP: the owners' GEMMs on what arrived
int blk_moe_backward_finish(Pass *P, int l);        // EP: the input gradients and dw arrive
void mtp_prepare(Pass *P);                          // blk_mtp.c: the modules' tokens and targets
void blk_mtp_forward(Pass *P, int l);               // an MTP module's input (layers L..)
void blk_mtp_backward(Pass *P, int l);              // its gradient back to the stream and embedding
void blk_shared_expert_forward(Pass *P, int l);     // blk_shared.c
void blk_shared_expert_backward(Pass *P, int l);
