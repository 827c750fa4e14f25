// The schedule of a micro-batch's passes: which stage of which pass runs at which layer, as
// data. One driver (model_run) runs any list; one pass, and the two halves of a micro-batch
// interleaved under expert parallelism, are two lists of the same stages.
#pragma once
#include <stdbool.h>
#include "model.h"

// What a stage does to one pass (a micro-batch, or one half of it) at layer l. The stages
// are model.c's; EP: under expert parallelism, where a layer's rows travel to their
// experts' owners and back between stages, so that other work can hide the exchange.
typedef enum {
    STAGE_FWD_BEGIN,          // positions checked, embedding
    STAGE_FWD_ATTN,           // attention block, then a dense layer's FFN, or the router and
                              // the rows' dispatch to the experts (EP: sent to the owners)
    STAGE_FWD_EXPERTS,        // the routed experts (EP: the owners' GEMMs, the rows sent back)
    STAGE_FWD_SHARED,         // the shared experts, into the stream
    STAGE_FWD_FINISH,         // the experts' outputs join the stream (EP: they arrive);
                              // balance loss, load statistics, bf16 stash of the layer
    STAGE_FWD_END,            // final norm, head, cross-entropy; training: the head's backward
    STAGE_BWD_BEGIN,          // the head's input gradient in place, final norm's backward
    STAGE_BWD_FFN_OR_SEND,    // the layer's saved activations back (bf16 unpack, recompute);
                              // the dense FFN's backward, or the routed experts' on one
                              // process, or (EP) their output gradients sent to the owners
    STAGE_BWD_ROUTER_SHARED,  // the routing weights, balance loss and router on one process
                              // (EP: in STAGE_BWD_ATTENTION); the shared experts' backward
    STAGE_BWD_OWNER_EXPERTS,  // EP: the owners' expert GEMMs on the gradients that arrived
    STAGE_BWD_ATTENTION,      // (EP: the experts' input gradients arrive, then the router's
                              // backward) post-attention norm, attention block, input norm
    STAGE_BWD_END,            // embedding backward
    STAGE_GRADS_READY,        // ForwardOpts.grads_ready(l): layer l's gradients are complete
                              // for all passes (L: the head, -1: embedding and final norm)
    STAGE_N_KINDS
} StageKind;

typedef struct {
    unsigned char pass;       // which pass: an index into model_run's arrays (0 = A, 1 = B)
    unsigned char kind;       // StageKind
    unsigned char lag;        // in a body: run on the layer this many iterations behind the
                              // current one (1: forward l - 1, backward l + 1); else 0
} Stage;

typedef struct { const Stage *s; int n; } StageList;

// A phase walks the L layers once, ascending (forward) or descending (backward): its
// prologue, its body once per iteration, its epilogue. Body stage k runs at iteration i on
// the layer lag_k iterations behind, and is skipped when that is outside the stack: the
// body runs L + max lag times, filling and draining like a software pipeline. The prologue
// runs at the layer before the first (forward -1, backward L) and the epilogue at the one
// after the last (forward L, backward -1): the layers STAGE_GRADS_READY reports there.
// Each pass walks its own direction: backward is a mask, bit p set when pass p walks
// descending (PH_FORWARD, PH_BACKWARD; PH_PAIR: pass A forward, pass B backward, so that one
// micro-batch's forward and another's backward share a phase).
enum { PH_FORWARD = 0, PH_BACKWARD = 3, PH_PAIR = 2 };
typedef struct {
    unsigned char backward;
    StageList prologue, body, epilogue;
} SchedPhase;

#define SCHED_MAX_PASSES 2
// Pass 0 writes the gradients over m->grads when ForwardOpts.grad_set, the others add to
// them: a list must run pass 0's stages first wherever they write a gradient.
typedef struct {
    const char *name;
    int n_passes;             // micro-batches (or halves) run together
    int n_phases;
    const SchedPhase *phase;  // in order
} Schedule;

extern const Schedule SCHED_FORWARD;         // one pass, forward only (inference, eval)
extern const Schedule SCHED_TRAIN;           // one pass, forward then backward
extern const Schedule SCHED_CHUNK_FORWARD;   // pipeline chunks (model_run_span): one pass's
extern const Schedule SCHED_CHUNK_BACKWARD;  // forward alone, its backward alone (activations kept between)
extern const Schedule SCHED_TRAIN_HALVES;    // two halves of a micro-batch interleaved layer by
                                             // layer, one half's exchanges in flight while the
                                             // other computes (EP with --overlap on)
extern const Schedule SCHED_PAIR;            // pipeline: pass A's forward and pass B's backward (another
                                             // micro-batch, maybe another chunk) interleaved layer by
                                             // layer, each one's expert exchanges under the other's compute

// Runs the schedule's phases over passes a[i], b[i], out[i] (i < s->n_passes). Training: the
// gradients are written or added as in ForwardOpts.grad_set; logits as model_forward's.
int model_run(Model *m, const Schedule *s, Acts *a[], const Batch *b[], const ForwardOpts *o, ForwardOut out[]);
// The same over layers span[i] for pass i (pipeline chunks; NULL: the whole stack). A span
// that does not start the stack takes its input from acts_stream(a, l0) instead of the
// embedding, one that does not end it leaves acts_stream(a, l0 + n) instead of running the
// head; backward, one that does not end it starts from acts_dstream(a) and one that does not
// start it leaves d(input) there. Each pass's layers are walked on their own, so passes of
// different spans can share a phase.
int model_run_span(Model *m, const Schedule *s, Acts *a[], const Batch *b[], const ForwardOpts *o, ForwardOut out[],
                   const LayerSpan span[]);
