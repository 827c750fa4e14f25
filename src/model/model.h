// The moe_v1 model: one parameter blob with named views (as llm.c's ParameterTensors),
// gradients in a second blob of the same layout, and the forward/backward pass of the
// layer stack over a micro-batch of packed examples.
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include "../moe/moe.h"
#include "../ops/ops.h"
#include "../config/config.h"
#include "../data/data.h"

typedef struct {
    char name[96];
    int ndim;
    int shape[2];
    size_t offset, numel;
    // its role, as the block that declares it says (block.h)
    bool decay;          // AdamW weight decay: matrices
    bool expert;         // a routed expert's weight (sharded under expert parallelism)
    int layer;           // its layer; L for an untied lm_head, -1 for the embedding and final norm
    int expert_id;       // a routed expert's index in its layer, else -1
    bool embedding;      // initialised as an embedding
    float gain;          // a norm's initial value (0: 1)
    bool pp_shared;      // pipeline: the embedding held by the first and the last stage (summed over both)
    bool pp_copy;        // ... and this is the last stage's copy (counted once, by the first)
} ParamTensor;

typedef struct {
    float *in_norm, *post_norm;          // [D] the attention's and the FFN's input norms
    float *wq, *wk, *wv, *wo;            // [H*hd,D] [Hkv*hd,D] [Hkv*hd,D] [D,H*hd]; q|k|v contiguous
                                         // (MLA: wq is q_proj [H*qk,D] without query compression; wo [D,H*v])
    float *q_norm, *k_norm;              // [hd] q/k norm (Qwen3)
    float *attn_post_norm, *ffn_post_norm; // [D] sandwich norm: after attention, after the FFN
    float *q_a, *q_a_norm, *q_b;         // MLA: [qr,D] [qr] [H*qk,qr] (query compression)
    float *kv_a, *kv_a_norm, *kv_b;      // MLA: [kvr+rope,D] [kvr] [H*(nope+v),kvr]
    float *mtp_enorm, *mtp_hnorm, *mtp_eh, *mtp_norm; // an MTP module's [D] [D] [D,2D] [D] (layers L..)
    float *gate, *up, *down;             // dense [Fd,D] [Fd,D] [D,Fd]; up follows gate: [2Fd,D]
    float *router;                       // [E,D]
    float *e_gate_up, *e_down;           // [E,2Fe,D] (gate then up per expert), [E,D,Fe]
    float *s_gate, *s_up, *s_down;       // shared [Fs,D] [Fs,D] [D,Fs]; up follows gate
} LayerParams;

typedef struct {
    float *embed;                        // [V,D]
    float *norm;                         // [D]
    float *head;                         // [V,D] (= embed when tied)
    LayerParams *layer;                  // [L]
} ParamViews;

typedef struct {
    MoeConfig cfg;
    int n_tensors;
    ParamTensor *tensors;
    size_t n_params;
    float *params, *grads;               // blobs
    ParamViews w, g;
    float *bias;                         // [L,E] e_score_correction_bias (a buffer, no gradient)
    RopeTable rope;
} Model;

// Which routed experts a process holds, and how tokens reach the others' (expert
// parallelism): all of them (no shard: NULL, or ne 0); experts [e0, e0 + ne) of every MoE
// layer; or, under a dynamic placement, the experts of row `rank` of place's slots. comm is
// the EP group's transport (NULL on one process). A model's blob is built for one shard,
// which its passes are then given (ForwardOpts.shard); this is the one place that says
// which rank holds which expert.
typedef struct {
    int e0, ne;
    const MoePlacement *place;
    int rank;
    MoeComm *comm;
} ExpertShard;
// the experts of each MoE layer this shard holds, and the global id of its j-th
int shard_experts(const ExpertShard *s, const MoeConfig *c);
int shard_expert(const ExpertShard *s, int l, int j);
// the same sharding as EP rank `rank` of the group holds it
ExpertShard shard_at(const ExpertShard *s, int rank);
bool shard_holds(const ExpertShard *s, const MoeConfig *c, int rank, int l, int e);


// Which layers a process holds (pipeline parallelism, docs/PIPELINE.md): the
// config_n_layers(c) layers cut into K = S·V chunks, chunk g = layers [cut[g], cut[g+1]),
// held by stage g % S; the multi-token-prediction modules always in the last chunk. The
// embedding goes with the first chunk, the final norm and head with the last, and the last
// stage keeps a copy of the embedding when the head is tied to it or MTP modules embed.
// NULL (or S 1): everything.
#define PP_MAX_CHUNKS 256
typedef struct { int S, V, stage; int cut[PP_MAX_CHUNKS + 1]; } LayerShard;
// The cuts of S·V chunks into cut[0..K]: counts[i] layers of the stack (num_hidden_layers
// of them, MTP modules not counted) in chunk i when given (n_counts = K), else as even as
// can be (the earlier chunks one more). An error (one line) when impossible.
int layer_cuts(const MoeConfig *c, int S, int V, const int *counts, int n_counts, int *cut);
// layer l held (-1: the embedding, config_n_layers: the final norm and head)
bool layer_shard_holds(const LayerShard *ls, const MoeConfig *c, int l);
// local chunk j of the stage: global chunk j·S + stage, layers [*l0, *l0 + *n)
void layer_shard_chunk(const LayerShard *ls, int j, int *l0, int *n);
LayerShard layer_shard_at(const LayerShard *ls, int stage);
// marks the embedding of a blob built for ls as held by both ends (pp_shared, pp_copy)
void layer_shard_mark(Model *m, const LayerShard *ls);

// a run of consecutive layers [l0, l0 + n): what one pass of a pipeline chunk covers
typedef struct { int l0, n; } LayerSpan;

void model_build(Model *m, const MoeConfig *c, bool with_grads);
// the same with only the routed experts of shard sh (their global names; NULL: all)
void model_build_sharded(Model *m, const MoeConfig *c, bool with_grads, const ExpertShard *sh);
// tensor names only (no blobs): what a full checkpoint of c holds, or shard sh of it
void model_layout(Model *m, const MoeConfig *c);
void model_layout_sharded(Model *m, const MoeConfig *c, const ExpertShard *sh);
// the same for the layers of ls only (NULL: all); names stay the whole model's
void model_build_staged(Model *m, const MoeConfig *c, bool with_grads, const ExpertShard *sh, const LayerShard *ls);
void model_layout_staged(Model *m, const MoeConfig *c, const ExpertShard *sh, const LayerShard *ls);
void model_free(Model *m);
void model_init_weights(Model *m, unsigned long long seed);
// the tensor index of `name`, or -1
int model_find_tensor(const Model *m, const char *name);

// Per-layer saved activations (training) or one reused set (inference).
typedef struct {
    float *x;              // [N,D] layer input (points into Acts.xs)
    float *rstd1, *xn1;    // [N], [N,D]
    float *q, *k, *v;      // [N,H*hd], [N,Hkv*hd] x2 (q, k after RoPE); MLA [N,H*qk] x2, [N,H*v]
    float *att, *lse;      // [N,H*hd], [N,H]
    float *qr, *kr;        // q/k norm: q, k before it, [N,H*hd] [N,Hkv*hd]
    float *rstd_q, *rstd_k; // q/k norm: [N*H], [N*Hkv]
    float *ao, *rstd_ao;   // sandwich: the attention's output before its norm [N,D], [N]
    float *fy, *rstd_fy;   // sandwich: the FFN's output before its norm [N,D], [N]
    float *cq, *cqn, *rstd_cq;     // MLA: the query latent, normalised [N,qr] x2, [N]
    float *ckv, *ckvn, *rstd_ckv;  // MLA: the key/value latent and RoPE key [N,kvr+rope], normalised [N,kvr], [N]
    float *mtp_in, *mtp_cat, *rstd_e, *rstd_hp; // MTP module: its input [N,D], [enorm(e) | hnorm(h)] [N,2D], [N] x2
    float *h;              // [N,D] after the attention residual
    float *rstd2, *xn2;    // [N], [N,D]
    float *gu, *a;         // dense or shared-expert SwiGLU: [N,2F] gate|up, [N,F] silu(g)*u
    MoeActs moe;
    unsigned short *stash; // ACTS_BF16: this layer's saved intermediates, bf16
} LayerActs;

typedef struct {
    int Nmax, L, D, train;
    bool recompute, full;  // recomputation (selective; full): the buffers below are shared scratch
    float *rc_xn, *rc_a, *rc_xe, *rc_ae, *rc_h, *rc_ye, *rc_mgu, *router_logits;
    float *rc_k, *rc_v;    // MLA: the expanded keys and values every layer recomputes into
    bool bf16;             // saved intermediates packed per layer; f32 working set shared
    float *ws_q, *ws_k, *ws_v, *ws_att, *ws_h, *ws_xn1, *ws_xn2, *ws_gu, *ws_a, *ws_mgu, *ws_mxe, *ws_mae;
    float *ws_qr, *ws_kr, *ws_ao, *ws_fy, *ws_cq, *ws_cqn, *ws_ckv, *ws_ckvn, *ws_mcat;   // (the variants' own)
    int M;                 // training: multi-token-prediction modules (layers L - M .. L - 1 of a->L)
    int l0, ln;            // the layers these activations are for: [l0, l0 + ln) (acts_alloc_span)
    float *tmp;            // [N,D] scratch of the sandwich norms' passes
    float *kvb;            // MLA: [N, H*(nope+v)] the latent through kv_b
    // multi-token prediction (training): each module's input tokens and targets [M][Nmax];
    // the gradient each head gives the stream it reads [M+1][Nmax,D] (0: the main head's);
    // scratch [Nmax,2D]
    int *mtp_tok, *mtp_tgt;
    float *dhead, *dmtp;
    float *xs;             // [L+1][N,D] residual stream
    LayerActs *layer;
    float *rstdf, *xf;     // final norm
    float *xt;             // [N,D] gathered output rows
    float *logits;         // inference [N,V]; training one chunk of rows (then dlogits)
    float *dxt;            // training: [N,D] gradient at the head's input rows (dh's buffer: used up before dh)
    int *out_rows;         // [N]
    int n_out;
    // backward workspace
    float *dx, *dh, *dxn, *dq, *dk, *dv, *datt, *da;
    float *dmla;           // MLA: the latents' gradients
    MoeWork mw;
    MoeEpWork ew;          // expert parallelism (Model.comm)
    bool ep;
    // per-step statistics
    long *load;            // [L,E] routed assignments (accumulated over micro-batches)
    long *drop_l;          // [L] assignments dropped by capacity, per layer
    long *rows_l;          // [L] expert parallelism: rows this rank's experts computed, per layer
    long dropped, assigned;
} Acts;

// mode: ACTS_INFER (one reused set) or ACTS_TRAIN (every layer's intermediates kept), with
// ACTS_RECOMPUTE (--recompute selective: the norm outputs, the SwiGLU products and the
// experts' gathered inputs are recomputed in the backward pass from what is kept; the
// recomputation repeats the forward arithmetic, so gradients are bit-identical) and
// ACTS_BF16 (--act-dtype bf16: each layer's saved intermediates are packed to bf16 after
// its forward pass and unpacked into one shared f32 working set for its backward pass;
// all arithmetic stays f32; a MoE layer's post-attention norm output is packed whatever
// the recomputation, so that an expert's owner under expert parallelism can keep its rows
// as they are here)
// ACTS_RECOMPUTE_FULL (--recompute full) adds the attention block's output h (the o_proj
// GEMM again) and the experts' gate/up pre-activations (their gate|up GEMMs again).
// ACTS_EP: the routed experts' rows live on their owners (expert parallelism, moe/ep.c).
enum { ACTS_INFER = 0, ACTS_TRAIN = 1, ACTS_RECOMPUTE = 2, ACTS_BF16 = 4, ACTS_RECOMPUTE_FULL = 8, ACTS_EP = 16 };
#define ACTS_TRAIN_SELECTIVE (ACTS_TRAIN | ACTS_RECOMPUTE)
void acts_alloc(Acts *a, const Model *m, int Nmax, int mode);
// training activations for the layers [l0, l0 + n) only (a pipeline chunk's passes); the
// embedding's side and the heads as the span needs them (MTP buffers only where its
// modules are)
void acts_alloc_span(Acts *a, const Model *m, int Nmax, int mode, int l0, int n);
// pipeline chunks (model_run_span): the residual stream entering layer l of a pass over N
// tokens, where a chunk that does not start the stack finds its input and one that does not
// end it leaves its output; and the stream's gradient, where a chunk that does not end the
// stack finds d(output) before its backward pass and leaves d(input) after it
float *acts_stream(const Acts *a, int l, int N);
float *acts_dstream(const Acts *a);
void acts_free(Acts *a);

// Key/value cache for generation: slot s of layer l holds the keys of one position (MLA:
// k[l] holds the normalised latent and the rotated RoPE key, [kvr + rope] a slot; v unused).
typedef struct { int S; float **k, **v; } KvCache;
// the floats one slot of one layer holds in k and in v
void kv_cache_widths(const MoeConfig *c, int *wk, int *wv);

typedef struct {
    bool train;            // capacity on, dlogits written, activations kept
    float ce_scale;        // d(loss)/d(ce_sum): 1 / targets in the global batch
    float aux_scale;       // weight of each balance unit (micro-batch or sequence)
    float mtp_scale;       // d(loss)/d(an MTP module's ce_sum): mtp_loss_weight / M * ce_scale
    const ExpertShard *shard; // the experts the model's blob holds (NULL: all of them)
    const KvCache *cache;  // inference: keys/values go to cache slots
    const int *slot;       // [N] cache slot of each token (kv range is [kv_lo, slot])
    // training: called once layer l's gradients are complete (l = L: the head's, after the
    // forward pass; -1: the embedding's and final norm's), so that their reduction can start early
    int (*grads_ready)(void *ctx, int l);
    void *ctx;
    // training: this micro-batch's gradients are the first of the step, written over
    // m->grads instead of added to them (no clearing pass; one process, no halves)
    bool grad_set;
    // inference with a cache, MLA: how attention reads the cached latents (MLA_FORM_*)
    int mla_form;
    // inference: run multi-token-prediction module mtp_k (1..num_mtp_layers) alone instead of
    // the stack: the batch's tokens are t_{i+k} at positions i, mtp_h [N,D] the stream at
    // depth k - 1 there; the logits are the module's head's
    int mtp_k;
    const float *mtp_h;
    // inference: where the stream the head reads (the stack's output, or module mtp_k's) is
    // copied, [N,D] (NULL: nowhere)
    float *stream_out;
} ForwardOpts;

// MLA under a cache: expand the cached latents through kv_b into every head's keys and values
// (cost ~ cached slots read), or absorb kv_b into the queries and outputs (cost ~ new tokens);
// AUTO picks the cheaper per forward call by the estimate in blk_mla.c
enum { MLA_FORM_AUTO = 0, MLA_FORM_ABSORBED, MLA_FORM_EXPANDED };

typedef struct { double ce_sum, aux, mtp_ce_sum; } ForwardOut;   // (mtp: summed over the modules)

// Logits are computed for the target rows (training) or for `out_rows` set by the caller
// (inference: a->n_out rows of a->out_rows before the call); they land in a->logits.
// One forward pass (SCHED_FORWARD); training runs its passes with model_run (schedule.h),
// which writes m->grads (o->grad_set) or adds to them.
int model_forward(Model *m, Acts *a, const Batch *b, const ForwardOpts *o, ForwardOut *out);
