// moe simulate (issue 16): one training step of a model on a cluster, predicted from the
// model's shape, the layout and a cluster file's rates, every millisecond attributed to a
// term (docs/SIMULATE.md). cluster.c reads the cluster file (untrusted: each bad field is a
// one-line error), simulate.c prices a step, search.c ranks the layouts that fit.
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include "../config/config.h"
#include "../model/model.h"

// ---- the machine (clusters/*.json)
typedef struct {
    char name[64];
    int devices, devices_per_node;
    char dtype[8];                  // what the training runs compute in: "bf16" (mixed precision) or "fp32"
    double peak;                    // FLOP/s per device in that dtype
    double gemm_peak;               // FLOP/s of the linear layers' GEMMs (gemm_dtype, e.g. fp8; else peak)
    double mfu_peak;                // FLOP/s that MFU is quoted against (peak_flops.mfu, else peak)
    double mem_bytes, mem_bw;       // bytes per device, bytes/s
    double intra_bw, intra_lat;     // in a node: bytes/s per device and direction, seconds
    double inter_bw, inter_lat;     // between nodes
    double intra_a2a_bw, intra_a2a_lat, inter_a2a_bw, inter_a2a_lat;   // the experts' all-to-all on those links
                                    // (counts, then the rows, as moe train sends them; else the rates above)
    // efficiency: what the rates above become in practice
    double gemm_max, gemm_half;     // a GEMM of smallest side m runs at peak · gemm_max · m / (m + gemm_half)
    double attn_eff;                // core attention (q·k, softmax, p·v) as a fraction of peak
    double mem_eff;                 // fraction of mem_bw that elementwise work (norms, SwiGLU, the optimizer) gets
    double coll_max, coll_half;     // a message of b bytes gets bw · coll_max · b / (b + coll_half)
    double comm_share;              // the share of a device's cores overlapped communication takes
    double idle_kept;               // of a core that a waiting rank yields, the share it still takes
                                    // (ranks that outnumber the cores; 0: all of it goes to the others)
    double sync;                    // at an exchange, the wait for the slower of two devices, over the work
                                    // since the last one (their timing jitter; more for more devices)
    double sync_s, sync_decay;      // the work between meetings sync was measured at (seconds), and the
                                    // power of that work's length the share falls with (0: does not)
    double cores;                   // cores a device has (CPU files: what the rates were measured on; else 1)
    double op_us;                   // fixed cost of one operation (a launch, a barrier), microseconds
    double step_ms;                 // fixed cost of one step (data, logging, the host), milliseconds
} Cluster;

// Reads and checks a cluster file; unknown keys, missing or non-positive numbers are errors
// naming the field. Keys that only document ("description", "sources", ...) are skipped.
int cluster_load(Cluster *cl, const char *path);
int cluster_parse(Cluster *cl, const char *text, size_t len, const char *path);   // (text need not end in 0)
// A device of `cores` cores instead of the file's cores_per_device: its compute and memory
// rates scaled alike (CPU ranks: 2 cores for one process, 1 each for two, 0.5 for four)
void cluster_set_cores(Cluster *cl, double cores);

// ---- one layout
enum { SIM_RC_NONE, SIM_RC_SELECTIVE, SIM_RC_FULL };
enum { SIM_A2A_FLAT, SIM_A2A_HIER, SIM_A2A_DEDUP };
enum { SIM_OV_OFF, SIM_OV_LAYER, SIM_OV_1F1B, SIM_OV_DUALPIPE };
enum { SIM_SPLIT_EVEN, SIM_SPLIT_ENDS, SIM_SPLIT_BALANCE };
typedef struct {
    int tp, pp, vpp, ep, dp;        // dp: the data-parallel replicas (devices / (tp·pp))
    int etp;                        // expert tensor parallel: an expert's width split over etp of the tp ranks
    int micro_batch, global_batch, seq;
    int n_pp_layers, pp_layers[PP_MAX_CHUNKS];   // uneven cuts: layers in each chunk (none: even)
    int split;                      // SIM_SPLIT_*, without pp_layers: moe train's even cuts, the ends as a layer
                                    // each (Megatron's account-for-embedding/loss), or balanced by cost
    int recompute;                  // SIM_RC_*
    int a2a;                        // SIM_A2A_*: the experts' all-to-all: flat, by node, or once a node per token
    int ep_overlap;                 // SIM_OV_*: the all-to-all exposed; under the layer's other work; paired
                                    // with another micro-batch's pass (1F1B, transfer by transfer as moe
                                    // train's SCHED_PAIR); or all of it under the other pass (DualPipe)
    bool dp_overlap;                // gradient reduction under the last backward passes
    bool tp_overlap;                // tensor-parallel collectives in pieces beside their GEMMs (MC2)
    bool idle_yields;               // devices that share cores (cores < 1) give them up while they wait
    bool zero1;                     // optimizer state split over the data-parallel ranks
    bool unfused_attention;         // scores materialised (no flash attention): batched GEMMs, softmax in memory
    bool act_bf16;                  // f32 training that keeps its saved activations in bf16 (moe train's default)
    double skew;                    // expert load: the busiest device's over the mean (1 = balanced)
} SimLayout;

// ---- the prediction, every term in seconds of one step
enum {
    SIM_T_ATTENTION, SIM_T_MLA, SIM_T_DENSE_FFN, SIM_T_EXPERTS, SIM_T_SHARED, SIM_T_ROUTER, SIM_T_NORMS,
    SIM_T_HEAD, SIM_T_RECOMPUTE, SIM_T_STASH, SIM_T_IMBALANCE, SIM_T_OVERHEAD, // compute of the busiest stage
    SIM_T_TP, SIM_T_EP, SIM_T_EP_SYNC, SIM_T_PP, SIM_T_DP, SIM_T_DP_SYNC,       // exposed communication, waiting
    SIM_T_BUBBLE, SIM_T_OPTIMIZER, SIM_T_STEP, SIM_T_N
};
extern const char *const SIM_TERM_NAMES[SIM_T_N];
enum { SIM_M_WEIGHTS, SIM_M_GRADS, SIM_M_OPTIM, SIM_M_ACTS, SIM_M_WORK, SIM_M_N };
extern const char *const SIM_MEM_NAMES[SIM_M_N];

typedef struct {
    double step_s, tokens_per_s, mfu;
    double term[SIM_T_N];            // their sum is step_s
    double ep_total_s, dp_total_s;   // the all-to-all and the gradient reduction before overlap
    double bubble_fraction;          // pipeline idle over busy, the schedule's with these times
    double mem[SIM_M_N];             // bytes, the fullest device
    double mem_total;
    int mem_stage;                   // the stage of that device
    int micro_batches;               // per pipeline and step
    bool fits;
} SimResult;

// Checks the layout against the model and the cluster (one line naming the field) and predicts.
int sim_step(const MoeConfig *c, const Cluster *cl, const SimLayout *lay, SimResult *out);
// one GEMM [m,k] x [k,n] in elements of b bytes: the roofline of its shape's rate and its bytes
double sim_gemm_time(const Cluster *cl, double m, double n, double k, double b);
// the devices a layout uses
static inline int sim_devices(const SimLayout *l) { return l->tp * l->pp * l->dp; }

// Expert load from a run log: the busiest device's load over the mean for ep devices holding
// contiguous experts, averaged over the MoE layers of the last `last` steps that log expert_load.
int sim_skew_from_log(const char *path, int ep, int last, double *skew);
int sim_skew_parse(char *text, size_t len, const char *path, int ep, int last, double *skew);   // (writes 0s over its newlines)

// ---- search: every layout on `devices` devices that fits, best throughput first
typedef struct { SimLayout lay; SimResult r; } SimCandidate;
// base gives the batch, seq and switches; writes up to cap candidates, *n the count found
int sim_search(const MoeConfig *c, const Cluster *cl, const SimLayout *base, int devices, SimCandidate *out, int cap, int *n);

// ---- calibrate.c: this machine's rates, measured with moe.c's kernels (moe calibrate)
typedef struct {
    double peak;                 // sgemm FLOP/s on the current threads
    int n_gemm, gemm_m[16];      // GEMMs of smallest side m (the others 1024) ...
    double gemm_eff[16];         // ... and their fraction of peak
    double gemm_max, gemm_half;  // the curve fitted to them
    double attn_eff, mem_bw, mem_eff, op_us;
} CalibCompute;
int sim_calibrate_compute(CalibCompute *out, double seconds);
// under mpirun, over the job's ranks: a ring all-reduce's bandwidth (bytes/s) and latency (s);
// the experts' all-to-all's (flat, moe train's calls); the share of a device an overlapped
// exchange costs (simulate's comm_share); and the ranks' timing jitter (simulate's sync)
typedef struct {
    double bw, lat, a2a_bw, a2a_lat, share;
    double sync, sync_s, sync_decay;        // (the jitter at meetings sync_s apart; its fall with the interval)
    double idle_kept;                       // (with twice as many ranks as cores, else -1)
    double a2a_alone, a2a_with, a2a_work;   // (seconds: the share's three timings)
} CalibComm;
int sim_calibrate_comm(double seconds, CalibComm *out);
