// The MoE layer as grouped work over permuted tokens (SPEC §1):
//   router:   logits = xn Wr^T [N,E] -> scores s -> top-K of s + b (greedy | group_limited | moge)
//             -> weights w [N,K] (normalised, scaled)
//   dispatch: capacity (drops lowest w first), then a counting sort of assignments by expert:
//             rows [offsets[e], offsets[e+1]) belong to expert e, in token order
//   experts:  per expert one GEMM chain over its rows (gather fused into the row copy),
//             results added back to their tokens with their weights
//   balance:  Switch aux loss (batch | sequence scope), aux-loss-free bias update, metrics
// The shared experts are an ordinary dense SwiGLU, run by the model beside this.
#pragma once
#include <stdbool.h>
#include "../config/config.h"

typedef struct {
    int N, E, K, D, F, A;   // A: kept assignments (rows)
    float *logits;          // [N,E] router logits (scratch)
    float *scores;          // [N,E] s (softmax or sigmoid of the logits)
    int *sel;               // [N,K] selected experts
    float *w;               // [N,K] final weights
    int *row;               // [N,K] permuted row of each assignment, -1 when dropped
    int *offsets;           // [E+1]
    int *row_tok;           // [N*K] token of each row
    int *row_slot;          // [N*K] n*K + k of each row
    float *xe;              // [N*K,D] gathered expert inputs
    float *gu;              // [N*K,2F] gate and up pre-activations, side by side
    float *ae;              // [N*K,F] silu(g) * u
    float *ye;              // [N*K,D] expert outputs (before weighting)
    int *load;              // [E] routed assignments per expert (before capacity)
    int dropped;            // assignments dropped by capacity
    int borrowed;           // MOE_BORROW_* flags: buffers that belong to the caller
    // expert parallelism (moe_experts_forward_ep): xe, gu and ae then hold the R rows this
    // process's experts received, expert-major (expert e's rows from every source, sources
    // in rank order); ye stays this process's A rows in its own permuted order
    int R, rcap;            // rows received, rows allocated
    int *ecnt;              // [P*El] rows from source s for local expert e, s-major
    int *scnt, *sdsp, *rcnt, *rdsp;   // [P] rows sent to / received from each rank
    int *roff;              // [El+1] expert-major row offsets
    int el_alloc;           // El the arrays above were sized for
    int req, req_w;         // the exchanges in flight for this layer (MoeComm.start): rows, and
                            // in the backward pass the rows' weights and their gradients
    int keep;               // MOE_KEEP_*: how the received rows are kept for the backward pass
    double *ep_f, ep_n;     // aux_scope "ep_group": the group's f [E] and P [E], and its tokens
    // dynamic placement (MoePlacement): rows are sorted by replica slot instead of expert;
    // the assignment of token n to expert e goes to slot key_slot[key_first[e] + n % key_n[e]]
    int n_keys;             // P*S slots (0: sort by expert)
    const int *key_n, *key_first, *key_slot;
} MoeActs;
enum { MOE_BORROW_XE_AE = 1, MOE_BORROW_GU = 2, MOE_BORROW_YE = 4, MOE_BORROW_LOGITS = 8 };
// Under expert parallelism an owner keeps the rows it received as one process keeps its own
// (the model's bf16 stash and recomputation), so that a gradient does not depend on the rank
// that holds a row: MOE_KEEP_BF16 rounds xe to bf16 after the forward GEMMs (one process
// gathers it from the bf16 copy of xn), and gu and ae too unless they are recomputed in the
// backward pass, gu = xe Wgu^T from the rounded xe (MOE_KEEP_RECOMPUTE_GU), ae = swiglu(gu)
// from the kept gu (MOE_KEEP_RECOMPUTE_AE). 0: f32, where recomputation is exact.
enum { MOE_KEEP_BF16 = 1, MOE_KEEP_RECOMPUTE_AE = 2, MOE_KEEP_RECOMPUTE_GU = 4 };

typedef struct {            // expert weights of one layer, experts contiguous
    const float *router;    // [E,D]
    const float *gate_up;   // [E,2F,D]: expert e's gate_proj then its up_proj, one GEMM
    const float *down;      // [E,D,F]
} MoeWeights;

typedef struct {
    float *router, *gate_up, *down;     // same shapes as MoeWeights
    bool set;                           // overwrite them (the step's first backward), else add
} MoeGrads;

// Expert parallelism: the transport between the P processes of an expert-parallel group,
// each holding E/P experts (src/dist implements it over MPI). Counts are in rows of
// `width` floats; the calls are collective over the group. start posts an exchange and
// returns at once (its handle in *req); wait completes it. ms: time from each exchange's
// start to its completion; exposed_ms: time the caller spent blocked in counts and wait.
typedef struct MoeComm {
    int rank, size;
    int (*counts)(struct MoeComm *c, const int *send, int *recv, int n);   // n ints to each rank
    int (*start)(struct MoeComm *c, const float *send, const int *scnt, const int *sdsp, float *recv,
                 const int *rcnt, const int *rdsp, int width, int *req);
    int (*wait)(struct MoeComm *c, int req);
    int (*sum)(struct MoeComm *c, double *buf, int n);   // all-reduce (sum) over the group
    double ms, exposed_ms;
} MoeComm;

// Expert-parallel scratch shared by all layers (grown on demand)
typedef struct {
    float *t1, *t2;         // [cap, max(D, ...)] rows in flight and reordered
    float *dae, *dgu;       // [cap,F], [cap,2F]
    float *w1, *w2;         // [cap] the rows' weights and weight gradients, in flight and reordered
    size_t cap1, cap2, capa, capg, capw1, capw2;
} MoeEpWork;

typedef struct {            // workspace for the backward pass, sized for N*K rows
    float *dye, *dxe;       // [N*K,D], one buffer: dxe overwrites dye expert by expert
    float *dae;             // [N*K,F]
    float *dgu;             // [N*K,2F]
    float *dw;              // [N,K]
    float *ds;              // [N,E]
    float *wrow, *dwrow;    // [N*K] each row's weight and its gradient (backward without ye)
} MoeWork;

// borrow (MOE_BORROW_* flags): those buffers are left NULL for the caller to point at
// shared scratch
void moe_acts_alloc(MoeActs *a, int Nmax, int E, int K, int D, int F, int borrow);
// row r of xe <- xn[row_tok[r]] (the permutation's gather)
void moe_gather(MoeActs *a, const float *xn);
// xe <- the gather of xn and gu <- xe Wgu^T, expert by expert, as moe_experts_forward
// computes them (for recomputation)
void moe_experts_gate_up(MoeActs *a, const float *xn, const MoeWeights *W);
// gu <- xe Wgu^T over rows grouped by expert (as moe_grouped_forward computes it; with xn,
// the rows of xe are first gathered from xn[row_tok[r]], expert by expert)
void moe_grouped_gate_up(int n, const int *off, float *xe, float *gu, const MoeWeights *W, int D, int F,
                         const float *xn, const int *row_tok);
void moe_acts_free(MoeActs *a);
// own_dgu false: the backward pass writes the experts' gate/up gradients over the
// activations' gu (swiglu's backward reads each element before it writes it)
void moe_work_alloc(MoeWork *w, int Nmax, int E, int K, int D, int F, bool own_dgu);
void moe_work_free(MoeWork *w);

// router: scores, selection and weights for N tokens
void moe_router_forward(const MoeConfig *c, MoeActs *a, const float *xn, const MoeWeights *W,
                        const float *bias, int N);
void moe_topk_ref(const MoeConfig *c, const float *scores, const float *bias, int N, int *sel);
// capacity (when capacity_factor > 0 and `train`) and the permutation by expert
void moe_dispatch(const MoeConfig *c, MoeActs *a, bool train);
// out[N,D] += sum_k w_k expert_{sel_k}(xn)
void moe_experts_forward(MoeActs *a, const float *xn, const MoeWeights *W, float *out);
void moe_experts_forward_ref(const MoeActs *a, const float *xn, const MoeWeights *W, float *out);
// dxn += ..., grads += ..., fills work->dw (gradient of each assignment's weight).
// have_ye: the experts' outputs a->ye are at hand, dw_r = dout . ye_r; otherwise (full
// recomputation) dw_r = (dout W_down) . ae_r, the same number without ye.
void moe_experts_backward(MoeActs *a, MoeWork *wk, const float *dout, const MoeWeights *W, MoeGrads *G, float *dxn,
                          bool have_ye);
// ds from dw (through normalisation and scaling) is written into work->ds; balance losses
// add to it; then this turns ds into dlogits and accumulates dWr and dxn.
void moe_weights_backward(const MoeConfig *c, const MoeActs *a, MoeWork *wk);
void moe_router_backward(const MoeConfig *c, const MoeActs *a, MoeWork *wk, const float *xn,
                         const MoeWeights *W, MoeGrads *G, float *dxn);

// The grouped expert GEMMs over rows grouped by expert (expert e: rows [off[e], off[e+1]),
// weights block e of W): forward gu, ae, ye; backward dae, dgu, dx (which may share dy's
// buffer) and the weight gradients
// (with xn: the rows of xe are first gathered from xn[row_tok[r]], expert by expert)
void moe_grouped_forward(int n, const int *off, float *xe, float *gu, float *ae, float *ye,
                         const MoeWeights *W, int D, int F, const float *xn, const int *row_tok);
// With wrow (each row's routing weight): dy holds the unweighted output gradients (or, with
// dsrc, gets them gathered from dsrc[row_tok[r]] expert by expert), which this scales in
// place, and dwrow gets each row's weight gradient (dy W_down) . ae
void moe_grouped_backward(int n, const int *off, const float *xe, const float *gu, const float *ae, float *dy,
                          float *dae, float *dgu, float *dx, const MoeWeights *W, MoeGrads *G, int D, int F,
                          const float *wrow, float *dwrow, const float *dsrc, const int *row_tok);
// the pieces around the expert GEMMs: out += weighted rows (ye); dye and dw from dout;
// dxn += the rows' input gradients
void moe_combine(const MoeActs *a, float *out);
void moe_combine_backward(const MoeActs *a, MoeWork *wk, const float *dout);
void moe_scatter_backward(const MoeActs *a, const float *dxe, float *dxn);
// work->dw from work->dwrow, each row's weight gradient (0 for a dropped assignment)
void moe_rows_dw(const MoeActs *a, MoeWork *wk);
// The same over an expert-parallel group, in stages so that a caller can compute other
// work while rows travel (W holds this process's experts, block comm->rank of E/comm->size):
//   dispatch: counts to every owner, then the rows start towards their owners;
//   experts:  the rows arrive, the owner's grouped GEMMs, the outputs start back;
//   combine:  the outputs arrive, out += their weighted sum.
int moe_ep_dispatch(MoeActs *a, MoeEpWork *w, MoeComm *comm, const float *xn);
int moe_ep_experts(MoeActs *a, MoeEpWork *w, MoeComm *comm, const MoeWeights *W);
int moe_ep_combine(MoeActs *a, MoeComm *comm, float *out);
// backward: output gradients and the rows' weights start to the owners; the owners' GEMMs
// (weight gradients stay there) and the input gradients and the rows' weight gradients start
// back; they arrive, are scattered into dxn and fill work->dw
int moe_ep_backward_send(MoeActs *a, MoeWork *wk, MoeEpWork *w, MoeComm *comm, const float *dout);
int moe_ep_backward_experts(MoeActs *a, MoeWork *wk, MoeEpWork *w, MoeComm *comm, const MoeWeights *W,
                            MoeGrads *G);
int moe_ep_backward_finish(MoeActs *a, MoeWork *wk, MoeComm *comm, float *dxn);
void moe_ep_acts_free(MoeActs *a);
void moe_ep_acts_free_counts(MoeActs *a);
void moe_ep_work_free(MoeEpWork *w);

// Switch aux loss alpha * E * sum_i f_i P_i over the tokens of each unit (the whole
// micro-batch, or each sequence [seq_start[s], seq_start[s+1]) for "sequence" scope),
// each unit weighted by `scale`. Returns the weighted sum; adds its gradient to work->ds
// when wk != NULL.
double moe_aux_loss(const MoeConfig *c, const MoeActs *a, MoeWork *wk, const int *seq_start,
                    int n_seq, float scale);
// SPEC §5 load figures of one layer's expert loads (one step): max/mean, MaxVio, and the
// device imbalance IS = (max - min device load) / tokens for P devices holding E/P
// consecutive experts each (0 when P = 1)
typedef struct { double max_mean, maxvio, is; } LoadStats;
void moe_load_stats(const long *load, int E, int P, long tokens, LoadStats *s);
// aux_scope "ep_group" under expert parallelism (forward): f and P reduced over the group
// (kept in a for the backward pass, where moe_aux_loss adds the gradient); *share is this
// rank's part of the loss (the group's loss / group size)
int moe_aux_ep_group(const MoeConfig *c, MoeActs *a, MoeComm *comm, float scale, double *share);
// A placement of every MoE layer's experts over the P ranks of an EP group, S slots a rank
// (layers that are not MoE keep empty rows). Slot g = p*S + s is slot s of rank p.
typedef struct {
    int L, E, P, S, R;
    int *slot_expert;       // [L][P*S] expert in each slot (ascending within a rank)
    int *rep_n, *rep_first; // [L][E] each expert's replica count and first entry in rep_slot
    int *rep_slot;          // [L][P*S] the slots holding each expert, grouped by expert
} MoePlacement;
void moe_placement_alloc(MoePlacement *pl, int L, int E, int P, int R);
void moe_placement_free(MoePlacement *pl);
// layer l from slot_expert (rep_* derived); returns MOE_FAIL for a slot table that misses
// an expert
int moe_placement_index(MoePlacement *pl, int l);
// Dynamic expert placement over P ranks with S = (E + R) / P expert slots each: the R extra
// slots replicate the experts with the highest load per replica, then replicas (each
// predicted to carry load / replicas) are packed heaviest first onto the least loaded rank
// with room, never two replicas of one expert on a rank. slot_expert[p*S + s]: the expert in
// slot s of rank p (ascending within a rank); rank_load[p]: its predicted load.
int moe_place(const double *load, int E, int P, int R, int *slot_expert, double *rank_load);
// DeepSeek aux-loss-free update: b_i += gamma * sign(mean(load) - load_i)
void moe_bias_update(float *bias, const long *load, int E, float gamma);
