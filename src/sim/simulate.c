// One training step predicted (sim.h, docs/SIMULATE.md). The step is built from the bottom:
//  1. each layer's forward on one device and one micro-batch, term by term: its GEMMs at the
//     cluster's GEMM efficiency for their shape, core attention at its own efficiency, the
//     elementwise work (norms, SwiGLU, permutes) at memory bandwidth, a fixed cost per op;
//     the backward is twice the GEMMs, 2.5 times core attention (it recomputes the scores)
//     and twice the elementwise work; recomputation adds forward work to the backward;
//  2. the communication each layer starts: tensor parallel all-gathers and reduce-scatters,
//     the experts' all-to-all (dispatch and combine), split between the node's links and the
//     network; the part not hidden under other compute is exposed;
//  3. chunks of layers on pipeline stages, run by the interleaved 1F1B lists of moe train
//     (pipe_simulate, the same code that checks the schedule), with the point-to-point time
//     between stages: the bubble and the exposed transfer come out of that simulation;
//  4. the gradient reduction over the data-parallel ranks (exposed beyond the last
//     micro-batch's passes when overlapped), the optimizer at memory bandwidth, a fixed cost.
#include <math.h>
#include <string.h>
#include "../base/base.h"
#include "../model/model.h"
#include "../parallel/pipeline.h"
#include "sim.h"

const char *const SIM_TERM_NAMES[SIM_T_N] = {"attention", "mla", "dense_ffn", "experts", "shared", "router", "norms", "head",
                                             "recompute", "activation_stash", "imbalance", "op_overhead", "tp", "ep_all_to_all", "ep_sync", "pp_send_recv",
                                             "dp_reduce", "dp_sync", "bubble", "optimizer", "step_overhead"};
const char *const SIM_MEM_NAMES[SIM_M_N] = {"weights", "gradients", "optimizer", "activations", "workspace"};

typedef struct {
    const MoeConfig *c;
    const Cluster *cl;
    const SimLayout *lay;
    double n;         // tokens of one micro-batch (micro_batch · seq)
    double b;         // bytes an activation element takes
    double ops;       // operations counted (their fixed cost goes to op_overhead)
    double sync;      // at every expert-parallel exchange, the group's wait for its slowest device
                      // over the work before it is the devices' jitter (sync_at, measured for two)
                      // times this: how far the largest of ep draws sits above their mean
} Ctx;

// one pass's time by term, with the communication it starts
// (ep_pair: the all-to-all this pass leaves exposed when it runs paired with another
// micro-batch's pass of the other direction, transfer by transfer: see layer_cost)
typedef struct { double t[SIM_T_N]; double tp, ep, ep_window, ep_pair, sync, ops; } Cost;

static double gemm_s(Ctx *x, double m, double n, double k) {
    if (m <= 0 || n <= 0 || k <= 0) return 0;
    x->ops += 1;
    return sim_gemm_time(x->cl, m, n, k, x->b);
}
// A GEMM's time: its FLOPs at the GEMM peak times the efficiency of its shape, or reading
// its operands and writing its result at memory bandwidth, whichever is longer (a roofline:
// a GEMM of few rows is bound by reading the weights)
double sim_gemm_time(const Cluster *cl, double m, double n, double k, double b) {
    const double lo = fmin(m, fmin(n, k));
    const double flops = 2 * m * n * k / (cl->gemm_peak * cl->gemm_max * lo / (lo + cl->gemm_half));
    return fmax(flops, (m * k + n * k + m * n) * b / (cl->mem_bw * cl->mem_eff));
}

static double mem_s(Ctx *x, double bytes) {
    x->ops += 1;
    return bytes / (x->cl->mem_bw * x->cl->mem_eff);
}
// a link: in a node when the group (stride apart, size ranks) lies in one node
static void link(const Cluster *cl, int stride, int size, double *bw, double *lat) {
    const bool in = (long)stride * size <= cl->devices_per_node;
    *bw = in ? cl->intra_bw : cl->inter_bw;
    *lat = in ? cl->intra_lat : cl->inter_lat;
}
static double coll_eff(const Cluster *cl, double bytes) { return cl->coll_max * bytes / (bytes + cl->coll_half); }
// ring all-gather or reduce-scatter of `bytes` (the whole tensor) over size ranks; all-reduce is both
static double ring_s(const Cluster *cl, double bytes, int size, int stride) {
    if (size <= 1 || bytes <= 0) return 0;
    double bw, lat;
    link(cl, stride, size, &bw, &lat);
    const double part = bytes * (size - 1) / size;
    return part / (bw * coll_eff(cl, bytes / size)) + (size - 1) * lat;
}
// the experts' all-to-all: each device sends `bytes` (its rows, one per token and chosen
// expert), (e-1)/e of it away; the share to the peers in its node goes over the node's links,
// the rest over the network, both at once. flat: a message to every peer; hier: one message a
// node (gathered in the node first); dedup (DeepEP-style): a token crosses the network once
// for each other node that holds one of its experts, then fans out inside that node
static double a2a_s(const MoeConfig *c, const Cluster *cl, const SimLayout *l, double bytes) {
    const int e = l->ep;
    if (e <= 1 || bytes <= 0) return 0;
    // (the experts spread over the tensor- and data-parallel ranks of a stage: an EP group is
    // e devices etp apart, consecutive when each expert is whole on one device)
    const int in_node = imax(1, imin(e, cl->devices_per_node / l->etp));
    const int nodes = (e + in_node - 1) / in_node;
    const double per_peer = bytes / e;
    double out_bytes = (e - in_node) * per_peer;
    if (l->a2a == SIM_A2A_DEDUP && nodes > 1) {
        // the distinct nodes a token's k experts sit on (uniform routing), at most topk_group
        // when the router limits each token to that many groups and a group is a node's experts
        const double k = c->num_experts_per_tok;
        double distinct = nodes * (1 - pow(1 - 1.0 / nodes, k));
        if (c->topk_method == MOE_TOPK_GROUP_LIMITED && c->n_group == nodes && c->topk_group < distinct) distinct = c->topk_group;
        out_bytes = bytes / k * distinct * (nodes - 1) / nodes;
    }
    const double t_in = (in_node - 1) * per_peer / (cl->intra_a2a_bw * coll_eff(cl, per_peer));
    const double msg = l->a2a == SIM_A2A_FLAT ? per_peer : out_bytes / imax(1, nodes - 1);
    const double t_out = out_bytes / (cl->inter_a2a_bw * coll_eff(cl, msg));
    const double lat = l->a2a == SIM_A2A_FLAT ? (in_node - 1) * cl->intra_a2a_lat + (e - in_node) * cl->inter_a2a_lat
                                              : (in_node - 1) * cl->intra_a2a_lat + (nodes - 1) * cl->inter_a2a_lat;
    return fmax(t_in, t_out) + lat;
}

static double layer_acts(const Ctx *x, int l, int mode);
static double compute_s(const Cost *p);
// a transfer of t seconds under w seconds of work: what sticks out, plus what the hidden part
// costs the work (the transfer takes comm_share of the device's cores meanwhile)
static double overlap_s(const Cluster *cl, double t, double w) {
    return fmax(0, t - w) + fmin(t, w) * cl->comm_share / (1 - cl->comm_share);
}
// the devices' jitter: at meetings w seconds of work apart, the wait for the slower of two as
// a share of w (cluster sync measured at sync_s, falling as a power of w; not raised below it)
static double sync_at(const Cluster *cl, double w) {
    return cl->sync_decay > 0 ? cl->sync * pow(fmax(w, cl->sync_s) / cl->sync_s, -cl->sync_decay) : cl->sync;
}
// the expected largest of n standard normal draws (0 for one)
static double max_normal(int n) {
    if (n <= 1) return 0;
    double s = 0;
    const double h = 1e-2;   // (the same to 12 digits as 1e-3 for n up to 256)
    for (double z = -8; z < 8; z += h) {   // n z phi(z) Phi(z)^(n-1)
        const double phi = exp(-0.5 * z * z) / sqrt(2 * M_PI), Phi = 0.5 * erfc(-z / sqrt(2));
        s += n * z * phi * pow(Phi, n - 1) * h;
    }
    return s;
}
// An expert-parallel layer's exposed exchanges when paired, and its waits at them.
// Paired (moe train's SCHED_PAIR, one layer of the forward A beside one of the backward B,
// priced here as this layer's own two passes): A's dispatch travels under B's restore,
// recomputation and shared-expert backward; B's output gradients under A's experts; A's
// combine under the owners' backward GEMMs and B's attention; B's input gradients come back
// to a B that waits for them at once. Every exchange is also a meeting, two a pass: the jitter
// of the work before it (sim_step's x->sync).
static void ep_waits(const Ctx *x, bool mla, Cost *f, Cost *bk) {
    const Cluster *cl = x->cl;
    const double one = f->ep / 2;
    const double w_disp = bk->t[SIM_T_RECOMPUTE] + bk->t[SIM_T_SHARED], w_send = f->t[SIM_T_EXPERTS] + f->t[SIM_T_SHARED] + f->t[SIM_T_IMBALANCE];
    const double w_comb = bk->t[SIM_T_EXPERTS] + bk->t[SIM_T_IMBALANCE] + bk->t[mla ? SIM_T_MLA : SIM_T_ATTENTION] + bk->t[SIM_T_ROUTER];
    f->ep_pair = overlap_s(cl, one, w_disp) + overlap_s(cl, one, w_comb);
    bk->ep_pair = overlap_s(cl, one, w_send) + one + (bk->ep - 2 * one);   // (and a full recomputation's exchanges)
    const double wf = compute_s(f), wb = compute_s(bk);
    f->sync = x->sync > 0 ? x->sync * sync_at(cl, wf / 2) * wf : 0;
    bk->sync = x->sync > 0 ? x->sync * sync_at(cl, wb / 2) * wb : 0;
}
// layer l's forward on one device and one micro-batch; back: its backward (with recomputation)
static void layer_cost(Ctx *x, int l, Cost *fwd, Cost *back) {
    const MoeConfig *c = x->c;
    const SimLayout *L = x->lay;
    const double n = x->n, b = x->b, D = c->hidden_size, t = L->tp, T = L->seq, H = c->num_attention_heads;
    const bool moe = config_layer_is_moe(c, l), mla = config_is_mla(c);
    Cost f = {0};
    double gemm = 0, core, elem_norm, elem_ffn = 0, tp_window;
    const double ops0 = x->ops;
    // attention or MLA: the projections, then the scores and p·v (causal: half the square)
    if (mla) {
        const double qk = config_qk_dim(c), v = c->v_head_dim, qr = c->q_lora_rank, kvr = c->kv_lora_rank, r = c->qk_rope_head_dim;
        gemm = qr > 0 ? gemm_s(x, n, qr, D) + gemm_s(x, n, H * qk / t, qr) : gemm_s(x, n, H * qk / t, D);
        gemm += gemm_s(x, n, kvr + r, D) + gemm_s(x, n, H * (c->qk_nope_head_dim + v) / t, kvr) + gemm_s(x, n, D, H * v / t);
        core = n * T * H * (qk + v) / t;
    } else {
        const double hd = c->head_dim, kv = c->num_key_value_heads;
        gemm = gemm_s(x, n, (H + 2 * kv) * hd / t, D) + gemm_s(x, n, D, H * hd / t);
        core = 2 * n * T * H * hd / t;
    }
    if (L->unfused_attention) {
        // the scores materialised (Megatron before flash attention): q·k and p·v as batched GEMMs
        // over the whole square, the scores written, softmaxed, dropped out and read back, about
        // 11 bytes a score forward (2 written, 2+2 softmax, 2+2+1 dropout with its mask)
        const double dqk = config_qk_dim(c), dv = config_v_dim(c), heads = H / t, seqs = n / T;
        core = seqs * heads * (gemm_s(x, T, T, dqk) + gemm_s(x, T, dv, T)) + mem_s(x, 11 * seqs * heads * T * T);
    } else {
        x->ops += 1;
        core /= x->cl->peak * x->cl->attn_eff;
    }
    f.t[mla ? SIM_T_MLA : SIM_T_ATTENTION] = gemm + core;
    // the norms (input, FFN input, the sandwich's two, an MTP module's two) and the residual adds,
    // over the tokens of this rank's sequence-parallel share
    const bool is_mtp = l >= c->num_hidden_layers;
    const double norms = (c->sandwich_norm ? 4 : 2) + (is_mtp ? 2 : 0);
    elem_norm = mem_s(x, norms * 2 * n * D * b / t) + mem_s(x, 2 * 3 * n * D * b / t);
    f.t[SIM_T_NORMS] = elem_norm;
    if (is_mtp) f.t[SIM_T_HEAD] += gemm_s(x, n, D, 2 * D);   // the module's projection
    if (!moe) {
        const double F = c->intermediate_size;
        elem_ffn = mem_s(x, 3 * n * F / t * b);
        const double g = gemm_s(x, n, 2 * F / t, D) + gemm_s(x, n, D, F / t);
        f.t[SIM_T_DENSE_FFN] = g + elem_ffn;
        tp_window = gemm + g;
        f.tp = 4 * ring_s(x->cl, n * D * b, L->tp, 1);   // all-gather and reduce-scatter around attention and the FFN
    } else {
        const double E = c->n_routed_experts, k = c->num_experts_per_tok, Fe = c->moe_intermediate_size;
        // each device routes its sequence-parallel share of the tokens, n/t, and sends a row per
        // token and chosen expert; under expert tensor parallelism (etp) the etp devices that
        // split an expert's width all-gather the rows they received, and reduce-scatter after
        const double et = L->etp, sent = n / t * k, rows = sent * et;   // rows balanced
        const double per_expert = rows * L->ep / E;     // each of its E/ep experts
        f.t[SIM_T_ROUTER] = gemm_s(x, n / t, E, D) + mem_s(x, 3 * n / t * E * 4);
        const double ops1 = x->ops;
        double ex = E / L->ep * (gemm_s(x, per_expert, 2 * Fe / et, D) + gemm_s(x, per_expert, D, Fe / et));
        x->ops = ops1 + 2;                              // one grouped GEMM each way
        elem_ffn = mem_s(x, 3 * rows * Fe / et * b) + mem_s(x, 4 * rows * D * b);   // SwiGLU; the permutes there and back
        f.t[SIM_T_EXPERTS] = ex + elem_ffn;
        f.t[SIM_T_IMBALANCE] = (L->skew - 1) * (ex + elem_ffn);
        double tp_colls = 2;
        tp_window = gemm + ex;
        if (c->n_shared_experts > 0) {
            const double Fs = c->n_shared_experts * Fe;
            const double es = mem_s(x, 3 * n * Fs / t * b), g = gemm_s(x, n, 2 * Fs / t, D) + gemm_s(x, n, D, Fs / t);
            elem_ffn += es;
            f.t[SIM_T_SHARED] = g + es;
            tp_window += g;
            tp_colls += 2;
        }
        f.tp = tp_colls * ring_s(x->cl, n * D * b, L->tp, 1) + 2 * ring_s(x->cl, rows * D * b, L->etp, 1);
        f.ep = 2 * a2a_s(c, x->cl, L, sent * D * b * L->skew);      // dispatch and combine
        f.ep_window = f.t[mla ? SIM_T_MLA : SIM_T_ATTENTION] + f.t[SIM_T_SHARED] + f.t[SIM_T_NORMS];
    }
    f.ops = x->ops - ops0;
    f.t[SIM_T_OVERHEAD] = f.ops * x->cl->op_us * 1e-6;
    // --tp-overlap (Ascend's MC2, Megatron's TP comm overlap): each tensor-parallel collective
    // runs in pieces beside the GEMM it feeds or drains: the projections' and the FFN's
    if (L->tp_overlap) f.tp = overlap_s(x->cl, f.tp, tp_window);
    // backward: twice the GEMMs and elementwise work, 2.5 times core attention; recomputation
    Cost bk = f;
    for (int i = 0; i < SIM_T_N; i++) bk.t[i] = 2 * f.t[i];
    bk.t[mla ? SIM_T_MLA : SIM_T_ATTENTION] += 0.5 * core;
    if (L->recompute == SIM_RC_FULL) {
        double fw = 0;
        for (int i = 0; i <= SIM_T_IMBALANCE; i++) fw += f.t[i];
        bk.t[SIM_T_RECOMPUTE] = fw;
        bk.tp += f.tp;
        bk.ep += f.ep;
        bk.t[SIM_T_OVERHEAD] += f.t[SIM_T_OVERHEAD];
    } else if (L->recompute == SIM_RC_SELECTIVE) {   // (and materialised scores: the attention's core again)
        bk.t[SIM_T_RECOMPUTE] = elem_norm + elem_ffn + (L->unfused_attention ? core : 0);
    }
    if (L->act_bf16 && x->b == 4) {   // the saved activations packed to bf16 (read 4, write 2 bytes) and back
        const double kept = layer_acts(x, l, L->recompute) / 4;
        f.t[SIM_T_STASH] = mem_s(x, kept * 6);
        bk.t[SIM_T_STASH] = mem_s(x, kept * 6);
    }
    if (moe && L->ep > 1) ep_waits(x, mla, &f, &bk);
    *fwd = f;
    *back = bk;
}

// the stack's two ends on one micro-batch: the embedding (first chunk), the heads (last)
static void ends_cost(Ctx *x, bool first, bool last, Cost *fwd, Cost *back) {
    const MoeConfig *c = x->c;
    const double n = x->n, D = c->hidden_size, t = x->lay->tp, Vv = c->vocab_size;
    Cost f = {0};
    const double ops0 = x->ops;
    if (first) f.t[SIM_T_HEAD] += mem_s(x, n * D * x->b);
    if (last) {
        const double heads = 1 + c->num_mtp_layers;
        f.t[SIM_T_HEAD] += heads * (gemm_s(x, n, Vv / t, D) + mem_s(x, 3 * n * Vv / t * 4));
        f.t[SIM_T_NORMS] += heads * mem_s(x, 2 * n * D * x->b / t);
    }
    f.ops = x->ops - ops0;
    f.t[SIM_T_OVERHEAD] = f.ops * x->cl->op_us * 1e-6;
    Cost bk = f;
    for (int i = 0; i < SIM_T_N; i++) bk.t[i] = 2 * f.t[i];
    *fwd = f;
    *back = bk;
}

static void cost_add(Cost *a, const Cost *b) {
    for (int i = 0; i < SIM_T_N; i++) a->t[i] += b->t[i];
    a->tp += b->tp;
    a->ep += b->ep;
    a->ep_window += b->ep_window;
    a->ep_pair += b->ep_pair;
    a->sync += b->sync;
}
// a pass's compute (with its tensor-parallel collectives), and the all-to-all it leaves
// exposed: all of it (off); what the layer's own other work does not cover (layer: one part
// of the micro-batch travels while another computes); or, in the 1F1B steady state, what the
// other direction's pass of another micro-batch does not cover (1f1b, as Megatron's "1F1B
// overlap", DeepSeek's DualPipe and Pangu's adaptive pipe overlap do)
static double compute_s(const Cost *p) {
    double s = 0;
    for (int i = 0; i <= SIM_T_OVERHEAD; i++) s += p->t[i];
    return s + p->tp;
}
// Overlap is not free: the transfer's kernels take a share of the device (comm_share of its
// cores: DeepSeek's 20 of 132 SMs), so the compute it hides under runs that much slower.
static double ep_exposed(const Cluster *cl, const Cost *p, const Cost *other, int mode) {
    if (mode == SIM_OV_OFF) return p->ep;
    if (mode == SIM_OV_1F1B) return p->ep_pair;
    // layer: under the layer's other work; dualpipe: all of it under the other pass's compute
    // (DeepSeek's DualPipe overlaps both directions' exchanges in full)
    return overlap_s(cl, p->ep, mode == SIM_OV_LAYER ? p->ep_window : compute_s(other));
}

// activations one layer keeps for one micro-batch on one device, bytes (sim.h: flash-style
// attention keeps no scores; sequence parallel splits what the tensor-parallel group shares)
static double layer_acts(const Ctx *x, int l, int mode) {
    const MoeConfig *c = x->c;
    const double n = x->n, b = x->b, D = c->hidden_size, t = x->lay->tp, H = c->num_attention_heads;
    if (mode == SIM_RC_FULL) return n * D * b / t;   // the layer's input only
    double q, attn_out;
    if (config_is_mla(c)) {
        q = (c->q_lora_rank + c->kv_lora_rank + c->qk_rope_head_dim) + H * (config_qk_dim(c) * 2 + c->v_head_dim) / t;
        attn_out = H * c->v_head_dim / t;
    } else {
        q = (H + 2.0 * c->num_key_value_heads) * c->head_dim / t;
        attn_out = H * c->head_dim / t;
    }
    const double norms = mode == SIM_RC_SELECTIVE ? 0 : (c->sandwich_norm ? 4 : 2) * D / t;
    double per = D / t + q + attn_out + norms + D / t;   // input, q/k/v, attention output, norm outputs, sum
    if (!config_layer_is_moe(c, l)) per += (mode == SIM_RC_SELECTIVE ? 2 : 3) * c->intermediate_size / t;
    else {
        const double k = c->num_experts_per_tok, Fe = c->moe_intermediate_size;
        per += c->n_routed_experts * 4 / b / t + k / t * (2 * D + (mode == SIM_RC_SELECTIVE ? 2 : 3) * Fe * x->lay->skew);
        per += c->n_shared_experts * (mode == SIM_RC_SELECTIVE ? 2 : 3) * Fe / t;
    }
    // materialised scores keep the softmax and dropout outputs and the mask: 5 bytes a score
    const double scores = x->lay->unfused_attention && mode == SIM_RC_NONE ? 5 * (n / x->lay->seq) * H / t * x->lay->seq * x->lay->seq : 0;
    return n * per * b + scores;
}

// the layers of each chunk: --pp-layers counts, where (unlike moe train's) a chunk may hold
// none; or even cuts (moe train's); or even cuts of the layers and the two ends counted as a
// layer each (Megatron's account-for-embedding/loss-in-pipeline-split); or balanced: each
// chunk as near 1/K of the whole as whole layers allow, the embedding charged to the first
// and the heads and MTP modules to the last (how Pangu placed 61 layers on its stages). The
// MTP modules go with the last chunk.
static void ends_cost(Ctx *x, bool first, bool last, Cost *fwd, Cost *back);
static void layer_cost(Ctx *x, int l, Cost *fwd, Cost *back);
static double pass_pair_s(const Cost *f, const Cost *b) {
    double s = f->tp + b->tp + f->ep + b->ep;
    for (int i = 0; i <= SIM_T_OVERHEAD; i++) s += f->t[i] + b->t[i];
    return s;
}
static int sim_cuts(Ctx *x, int *cut) {
    const MoeConfig *c = x->c;
    const SimLayout *l = x->lay;
    const int K = l->pp * l->vpp, L = c->num_hidden_layers;
    if (K > PP_MAX_CHUNKS) MOE_ERR("--layout: pp x vpp = %d chunks, more than %d", K, PP_MAX_CHUNKS);
    if (l->n_pp_layers) {
        if (l->n_pp_layers != K) MOE_ERR("--pp-layers has %d counts for pp x vpp = %d chunks", l->n_pp_layers, K);
        cut[0] = 0;
        for (int g = 0; g < K; g++) cut[g + 1] = cut[g] + l->pp_layers[g];
        if (cut[K] != L) MOE_ERR("--pp-layers counts %d layers, the model has %d", cut[K], L);
    } else if (l->split == SIM_SPLIT_EVEN || K == 1) {
        return layer_cuts(c, l->pp, l->vpp, NULL, 0, cut);
    } else if (l->split == SIM_SPLIT_ENDS) {
        const int U = L + 2;
        int u = 0;
        cut[0] = 0;
        for (int g = 0; g < K; g++) {
            u += U / K + (g < U % K);
            cut[g + 1] = imin(L, imax(cut[g], u - 1));
        }
        cut[K] = L;
    } else {
        double *w = MOE_NEW(double, L), pre, post = 0, total = 0;
        const double ops = x->ops;
        Cost f, b;
        for (int i = 0; i < L; i++) { layer_cost(x, i, &f, &b); total += w[i] = pass_pair_s(&f, &b); }
        ends_cost(x, true, false, &f, &b);
        pre = pass_pair_s(&f, &b);
        ends_cost(x, false, true, &f, &b);
        post = pass_pair_s(&f, &b);
        for (int i = L; i < config_n_layers(c); i++) { layer_cost(x, i, &f, &b); post += pass_pair_s(&f, &b); }
        x->ops = ops;
        total += pre + post;
        double cum = pre;
        int i = 0;
        cut[0] = 0;
        for (int g = 0; g < K - 1; g++) {
            while (i < L && cum + w[i] / 2 <= (g + 1) * total / K) cum += w[i++];
            cut[g + 1] = i;
        }
        cut[K] = L;
        moe_free(w);
    }
    cut[K] += config_n_layers(c) - L;
    return MOE_OK;
}

static int check(const MoeConfig *c, const Cluster *cl, const SimLayout *l) {
    if (l->tp < 1 || l->pp < 1 || l->vpp < 1 || l->ep < 1 || l->dp < 1) MOE_ERR("--layout: tp, pp, vpp, ep and dp must be positive");
    if (l->micro_batch < 1 || l->global_batch < 1 || l->seq < 1) MOE_ERR("--micro-batch, --global-batch and --seq must be positive");
    if (l->vpp > 1 && l->pp == 1) MOE_ERR("--layout: vpp=%d needs pp above 1", l->vpp);
    if (c->num_attention_heads % l->tp) MOE_ERR("--layout: tp=%d must divide the model's %d attention heads", l->tp, c->num_attention_heads);
    if (l->tp > cl->devices_per_node) MOE_ERR("--layout: tp=%d spans nodes of %d devices (%s)", l->tp, cl->devices_per_node, cl->name);
    if (config_n_moe_layers(c) > 0) {
        if (c->n_routed_experts % l->ep) MOE_ERR("--layout: ep=%d must divide the model's %d routed experts", l->ep, c->n_routed_experts);
        if (l->etp < 1 || l->tp % l->etp) MOE_ERR("--layout: etp=%d must divide tp=%d", l->etp, l->tp);
        if ((l->dp * l->tp) % (l->ep * l->etp))
            MOE_ERR("--layout: ep x etp = %d must divide dp x tp = %d (the ranks a stage's experts spread over)", l->ep * l->etp, l->dp * l->tp);
    } else if (l->ep > 1) MOE_ERR("--layout: ep=%d for a model without MoE layers", l->ep);
    if (!l->n_pp_layers && l->split == SIM_SPLIT_EVEN && l->pp * l->vpp > c->num_hidden_layers) MOE_ERR("--layout: pp x vpp = %d chunks for %d layers", l->pp * l->vpp, c->num_hidden_layers);
    if (l->global_batch % (l->dp * l->micro_batch))
        MOE_ERR("--global-batch %d must be a multiple of dp %d x --micro-batch %d", l->global_batch, l->dp, l->micro_batch);
    const int m = l->global_batch / (l->dp * l->micro_batch);
    if (l->vpp > 1 && m % l->pp) MOE_ERR("--layout: vpp=%d needs the %d micro-batches a pipeline to be a multiple of pp=%d", l->vpp, m, l->pp);
    if (l->skew < 1) MOE_ERR("--load: the skew (busiest device over the mean) must be at least 1");
    return MOE_OK;
}

// Each stage's device: its share of the weights (the dense ones over tp, the experts' over
// ep·etp) and of the optimizer state (under ZeRO-1 over the ranks that hold the same weights):
//  - gradients over the data-parallel ranks (ZeRO-1: reduce-scatter, then the parameters'
//    all-gather; else an all-reduce: the same bytes): the dense weights over the dp replicas
//    (tp apart), the experts' over the ranks that hold the same experts (dp·tp/(ep·etp))
//  - AdamW: read parameter, gradient, two moments, write three (mixed precision: the f32
//    master and the bf16 copy), and the gradient norm's pass
//  - memory: weights, gradients (f32), optimizer state (AdamW's two moments, and under mixed
//    precision the f32 master copy), the activations in flight (pipe_simulate's peak: the
//    most its list keeps at once), one layer's working set and the logits
// The slowest stage's reduction and update go to *dp_s and *opt_s, the fullest device's
// memory to out.
static void stage_shares(Ctx *x, const double *dense, const double *expert, const int *cut,
                         const PipeSim *s1, double *dp_s, double *opt_s, SimResult *out) {
    const Cluster *cl = x->cl;
    const SimLayout *lay = x->lay;
    const int S = lay->pp, V = lay->vpp, edp = lay->dp * lay->tp / (lay->ep * lay->etp);
    const bool mixed = x->b == 2;
    *dp_s = *opt_s = 0;
    for (int s = 0; s < S; s++) {
        const double pd = dense[s] / lay->tp, pe = expert[s] / (lay->ep * lay->etp);
        const double p_opt = lay->zero1 ? pd / lay->dp + pe / edp : pd + pe;
        *dp_s = fmax(*dp_s, 2 * ring_s(cl, pd * x->b, lay->dp, lay->tp) + 2 * ring_s(cl, pe * x->b, edp, lay->ep * lay->etp));
        *opt_s = fmax(*opt_s, (p_opt * (mixed ? 30 : 28) + (pd + pe) * 4) / (cl->mem_bw * cl->mem_eff));
        double mem[SIM_M_N] = {0};
        mem[SIM_M_WEIGHTS] = (pd + pe) * x->b;
        mem[SIM_M_GRADS] = (pd + pe) * 4;
        mem[SIM_M_OPTIM] = p_opt * (mixed ? 12 : 8);
        mem[SIM_M_ACTS] = s1->peak_bytes[s];
        for (int j = 0; j < V; j++) {
            const int g = j * S + s;
            if (lay->recompute == SIM_RC_FULL)   // the layer being recomputed
                mem[SIM_M_WORK] = fmax(mem[SIM_M_WORK], layer_acts(x, cut[g], SIM_RC_NONE));
        }
        if (s == S - 1) mem[SIM_M_WORK] += x->n * x->c->vocab_size / lay->tp * 4 * 2;   // the logits and their gradient, f32
        double tot = 0;
        for (int k = 0; k < SIM_M_N; k++) tot += mem[k];
        if (tot > out->mem_total) {
            out->mem_total = tot;
            out->mem_stage = s;
            memcpy(out->mem, mem, sizeof mem);
        }
    }
}

// The step's waits beyond the pipeline's: the data-parallel replicas of an expert-parallel
// group (of one device without experts spread) meet only at the step's gradient sums, so each
// waits for their jitter over the step's work w. Ranks that outnumber the cores and yield while
// they wait: the waiting one's share of a core goes to the ranks still working (but for the
// share idle_kept it still takes, polling), so its idle time is lost only when fewer ranks
// than cores can run: none of it at two ranks a core, all of it at one.
static void step_waits(const Cluster *cl, const SimLayout *lay, double w, SimResult *out) {
    const int reps = lay->dp / lay->ep;
    if (cl->sync > 0 && reps > 1) out->term[SIM_T_DP_SYNC] = sync_at(cl, w) * w * max_normal(reps) / max_normal(2);
    if (lay->idle_yields && cl->cores < 1) {
        const double kept = cl->idle_kept + (1 - cl->idle_kept) * fmax(0, 2 - 1 / cl->cores);
        out->term[SIM_T_BUBBLE] *= kept;
        out->term[SIM_T_EP_SYNC] *= kept;
        out->term[SIM_T_IMBALANCE] *= kept;
        out->term[SIM_T_DP_SYNC] *= kept;
    }
}

int sim_step(const MoeConfig *c, const Cluster *cl, const SimLayout *lay, SimResult *out) {
    MOE_TRY(check(c, cl, lay));
    memset(out, 0, sizeof *out);
    const int S = lay->pp, V = lay->vpp, K = S * V, m = lay->global_batch / (lay->dp * lay->micro_batch);
    int cut[PP_MAX_CHUNKS + 1];
    Ctx x = {c, cl, lay, (double)lay->micro_batch * lay->seq, !strcmp(cl->dtype, "bf16") ? 2.0 : 4.0, 0, 0};
    if (cl->sync > 0 && lay->ep > 1) x.sync = max_normal(lay->ep) / max_normal(2);
    MOE_TRY(sim_cuts(&x, cut));
    double *tf = MOE_NEW(double, K), *tb = MOE_NEW(double, K);
    Cost *cf = MOE_NEW(Cost, K), *cb = MOE_NEW(Cost, K);
    double *dense = MOE_NEW(double, S), *expert = MOE_NEW(double, S), *act_layer = MOE_NEW(double, K);
    for (int g = 0; g < K; g++) {   // chunk g = stage g % S, local chunk g / S
        const int s = g % S, j = g / S, i = s * V + j;
        for (int l = cut[g]; l < cut[g + 1]; l++) {
            Cost f, bk;
            layer_cost(&x, l, &f, &bk);
            cost_add(&cf[i], &f);
            cost_add(&cb[i], &bk);
            double pd, pe;
            config_layer_params(c, l, &pd, &pe);
            dense[s] += pd;
            expert[s] += pe;
            act_layer[i] += layer_acts(&x, l, lay->recompute) * (lay->act_bf16 && x.b == 4 ? 0.5 : 1);
        }
        Cost f, bk;
        ends_cost(&x, g == 0, g == K - 1, &f, &bk);
        cost_add(&cf[i], &f);
        cost_add(&cb[i], &bk);
        tf[i] = compute_s(&cf[i]) + ep_exposed(cl, &cf[i], &cb[i], lay->ep_overlap) + cf[i].sync;
        tb[i] = compute_s(&cb[i]) + ep_exposed(cl, &cb[i], &cf[i], lay->ep_overlap) + cb[i].sync;
    }
    const double D = c->hidden_size, Vv = c->vocab_size;
    dense[0] += D * Vv;                                                   // the embedding
    dense[S - 1] += D * Vv * (c->tie_word_embeddings && S == 1 ? 0 : 1) + D;   // the head and the final norm
    // the pipeline: the stages' lists with these times, without and with the transfers
    double bw, lat;
    link(cl, lay->tp * lay->dp, S, &bw, &lat);
    const double p2p_bytes = x.n * D * x.b / lay->tp;
    const PipeCost pc0 = {tf, tb, 0, NULL}, pc1 = {tf, tb, lat + p2p_bytes / (bw * coll_eff(cl, p2p_bytes)), act_layer};   // (memory: s1's)
    PipeSim s0, s1;
    const bool pair = lay->ep_overlap >= SIM_OV_1F1B && lay->ep > 1;   // (1F1B overlap: moe train's pairs)
    int rc = pipe_simulate(S, V, m, pair, &pc0, &s0);
    if (!rc) rc = pipe_simulate(S, V, m, pair, &pc1, &s1);
    if (rc) goto done;
    // the busiest stage's terms
    int crit = 0;
    double busiest = -1;
    for (int s = 0; s < S; s++) {
        double b = 0;
        for (int j = 0; j < V; j++) b += tf[s * V + j] + tb[s * V + j];
        if (b > busiest) busiest = b, crit = s;
    }
    double ep_all = 0, fb_first = 0;
    for (int j = 0; j < V; j++) {
        const int i = crit * V + j;
        for (int k = 0; k <= SIM_T_OVERHEAD; k++) out->term[k] += m * (cf[i].t[k] + cb[i].t[k]);
        out->term[SIM_T_TP] += m * (cf[i].tp + cb[i].tp);
        out->term[SIM_T_EP] += m * (ep_exposed(cl, &cf[i], &cb[i], lay->ep_overlap) + ep_exposed(cl, &cb[i], &cf[i], lay->ep_overlap));
        out->term[SIM_T_EP_SYNC] += m * (cf[i].sync + cb[i].sync);
        ep_all += m * (cf[i].ep + cb[i].ep);
        fb_first += tb[i];
    }
    out->term[SIM_T_BUBBLE] = s0.makespan - s0.busy;
    step_waits(cl, lay, m * busiest, out);
    out->term[SIM_T_PP] = s1.makespan - s0.makespan;
    out->bubble_fraction = fmax(0, s1.bubble);
    out->ep_total_s = ep_all;
    double dp_s, opt_s;
    stage_shares(&x, dense, expert, cut, &s1, &dp_s, &opt_s, out);
    out->dp_total_s = dp_s;
    // under the last micro-batch's backward passes, at the price of overlap (comm_share)
    out->term[SIM_T_DP] = lay->dp_overlap ? overlap_s(cl, dp_s, fb_first) : dp_s;
    out->term[SIM_T_OPTIMIZER] = opt_s;
    out->term[SIM_T_STEP] = cl->step_ms * 1e-3;
    for (int k = 0; k < SIM_T_N; k++) out->step_s += out->term[k];
    out->micro_batches = m;
    const double tokens = (double)lay->global_batch * lay->seq;
    out->tokens_per_s = tokens / out->step_s;
    out->mfu = config_flops_per_token(c, lay->seq) * tokens / (out->step_s * sim_devices(lay) * cl->mfu_peak);
    out->fits = out->mem_total <= cl->mem_bytes;
done:
    moe_free(tf); moe_free(tb); moe_free(cf); moe_free(cb);
    moe_free(dense); moe_free(expert); moe_free(act_layer);
    return rc;
}
