// The schedules (lists of stages) and the one driver that runs them (schedule.h).
#include "schedule.h"
#include "../base/base.h"
#include "pass.h"

#define LIST(...) {(const Stage[]){__VA_ARGS__}, sizeof((Stage[]){__VA_ARGS__}) / sizeof(Stage)}
// a stage of pass A or B at the current layer, or at the previous one (lag 1)
#define A(kind) {0, STAGE_##kind, 0}
#define B(kind) {1, STAGE_##kind, 0}
#define A_PREV(kind) {0, STAGE_##kind, 1}
#define B_PREV(kind) {1, STAGE_##kind, 1}
#define READY {0, STAGE_GRADS_READY, 0}
#define B_READY {1, STAGE_GRADS_READY, 0}

// one pass: each layer's stages in order
#define FORWARD {PH_FORWARD, LIST(A(FWD_BEGIN)), LIST(A(FWD_ATTN), A(FWD_EXPERTS), A(FWD_SHARED), A(FWD_FINISH)), \
                 LIST(A(FWD_END))}
#define BACKWARD {PH_BACKWARD, LIST(READY, A(BWD_BEGIN)),                                            \
                  LIST(A(BWD_FFN_OR_SEND), A(BWD_ROUTER_SHARED), A(BWD_OWNER_EXPERTS),        \
                       A(BWD_ATTENTION), READY),                                              \
                  LIST(A(BWD_END), READY)}

// Two halves. Forward, per layer: A finishes the previous layer and runs its attention
// (hiding B's combine), B the same (hiding A's dispatch), then A's experts and shared
// expert (hiding B's dispatch and A's combine), then B's.
#define FORWARD_HALVES {PH_FORWARD, LIST(A(FWD_BEGIN), B(FWD_BEGIN)),                              \
                        LIST(A_PREV(FWD_FINISH), A(FWD_ATTN), B_PREV(FWD_FINISH), B(FWD_ATTN), \
                             A(FWD_EXPERTS), A(FWD_SHARED), B(FWD_EXPERTS), B(FWD_SHARED)),    \
                        LIST(A(FWD_END), B(FWD_END))}
// Backward, per layer: A and B send their output gradients (each hidden by the other's
// router and shared-expert work), then the experts' GEMMs of A and B (each hiding the
// other's exchange), then A's attention block hides B's returning input gradients. A's
// stages come first: A may write the gradients, B adds to them.
#define BACKWARD_HALVES {PH_BACKWARD, LIST(READY, A(BWD_BEGIN), B(BWD_BEGIN)),                         \
                         LIST(A(BWD_FFN_OR_SEND), A(BWD_ROUTER_SHARED), B(BWD_FFN_OR_SEND),      \
                              B(BWD_ROUTER_SHARED), A(BWD_OWNER_EXPERTS), B(BWD_OWNER_EXPERTS),  \
                              A(BWD_ATTENTION), B(BWD_ATTENTION), READY),                        \
                         LIST(A(BWD_END), B(BWD_END), READY)}

// A pair: A a forward, B the backward of another micro-batch. Per iteration, A finishes its
// previous layer and runs its attention and router, whose dispatch B's FFN backward and
// router hide; A's experts (at their owners) hide B's output gradients on their way; B's
// owner GEMMs and attention hide A's combine, which A_PREV(FWD_FINISH) waits for next time.
// Each walks its own span in its own direction; only B reports gradients.
#define PAIR {PH_PAIR, LIST(A(FWD_BEGIN), B_READY, B(BWD_BEGIN)),                               \
              LIST(A_PREV(FWD_FINISH), A(FWD_ATTN), B(BWD_FFN_OR_SEND), B(BWD_ROUTER_SHARED),   \
                   A(FWD_EXPERTS), A(FWD_SHARED), B(BWD_OWNER_EXPERTS), B(BWD_ATTENTION), B_READY), \
              LIST(A(FWD_END), B(BWD_END), B_READY)}

const Schedule SCHED_FORWARD = {"forward", 1, 1, (const SchedPhase[]){FORWARD}};
const Schedule SCHED_TRAIN = {"train", 1, 2, (const SchedPhase[]){FORWARD, BACKWARD}};
const Schedule SCHED_CHUNK_FORWARD = {"chunk-forward", 1, 1, (const SchedPhase[]){FORWARD}};
const Schedule SCHED_CHUNK_BACKWARD = {"chunk-backward", 1, 1, (const SchedPhase[]){BACKWARD}};
const Schedule SCHED_TRAIN_HALVES = {"train-halves", 2, 2, (const SchedPhase[]){FORWARD_HALVES, BACKWARD_HALVES}};
const Schedule SCHED_PAIR = {"pair", 2, 1, (const SchedPhase[]){PAIR}};

// A list refers to passes the schedule has, and lags only in a body.
static int sched_check(const Schedule *s) {
    if (s->n_passes < 1 || s->n_passes > SCHED_MAX_PASSES)
        MOE_ERR("internal: schedule %s runs %d passes (1 to %d)", s->name, s->n_passes, SCHED_MAX_PASSES);
    for (int f = 0; f < s->n_phases; f++) {
        const StageList *lists[3] = {&s->phase[f].prologue, &s->phase[f].body, &s->phase[f].epilogue};
        for (int k = 0; k < 3; k++)
            for (int i = 0; i < lists[k]->n; i++) {
                const Stage st = lists[k]->s[i];
                if (st.pass >= s->n_passes || st.kind >= STAGE_N_KINDS || (k != 1 && st.lag))
                    MOE_ERR("internal: schedule %s, phase %d, list %d, stage %d: pass %d of %d, kind %d, lag %d",
                            s->name, f, k, i, st.pass, s->n_passes, st.kind, st.lag);
            }
    }
    return MOE_OK;
}

// the layer of pass p at iteration i of a phase over its span ([l0, l0 + n)); i = -1 and
// i = n are the prologue's and the epilogue's (the head's side or the embedding's)
static int layer_at(const Pass *p, bool backward, int i) { return p->l0 + (backward ? p->n - 1 - i : i); }
static bool walks_back(const SchedPhase *ph, int pass) { return ph->backward >> pass & 1; }

static int run_list(Pass *P, const StageList *list, const SchedPhase *ph, bool epilogue) {
    for (int i = 0; i < list->n; i++) {
        const int q = list->s[i].pass;
        MOE_TRY(pass_run_stage(&P[q], list->s[i].kind, layer_at(&P[q], walks_back(ph, q), epilogue ? P[q].n : -1)));
    }
    return MOE_OK;
}

// each pass over its own span: body stage k runs at iteration i on its pass's layer lag_k
// iterations behind, when that is within the pass's span
static int run_phase(Pass *P, int n_passes, const SchedPhase *ph) {
    MOE_TRY(run_list(P, &ph->prologue, ph, false));
    int max_lag = 0, max_n = 0;
    for (int k = 0; k < ph->body.n; k++) max_lag = imax(max_lag, ph->body.s[k].lag);
    for (int i = 0; i < n_passes; i++) max_n = imax(max_n, P[i].n);
    for (int i = 0; i < max_n + max_lag; i++)
        for (int k = 0; k < ph->body.n; k++) {
            const Stage st = ph->body.s[k];
            Pass *p = &P[st.pass];
            const int j = i - st.lag;
            if (j >= 0 && j < p->n) MOE_TRY(pass_run_stage(p, st.kind, layer_at(p, walks_back(ph, st.pass), j)));
        }
    return run_list(P, &ph->epilogue, ph, true);
}

int model_run(Model *m, const Schedule *s, Acts *a[], const Batch *b[], const ForwardOpts *o, ForwardOut out[]) {
    return model_run_span(m, s, a, b, o, out, NULL);
}

int model_run_span(Model *m, const Schedule *s, Acts *a[], const Batch *b[], const ForwardOpts *o, ForwardOut out[],
                   const LayerSpan span[]) {
    MOE_TRY(sched_check(s));
    // training runs the multi-token-prediction modules' layers after the stack's; inference
    // the stack's, or one module's layer (o->mtp_k)
    const MoeConfig *c = &m->cfg;
    if (o->mtp_k && (o->train || o->mtp_k > c->num_mtp_layers || span))
        MOE_ERR("internal: multi-token-prediction module %d of %d run alone%s", o->mtp_k, c->num_mtp_layers,
                o->train ? " in training" : span ? " over a span" : "");
    const int top = o->mtp_k ? c->num_hidden_layers + o->mtp_k : o->train ? config_n_layers(c) : c->num_hidden_layers;
    Pass P[SCHED_MAX_PASSES];
    for (int i = 0; i < s->n_passes; i++) {
        const LayerSpan sp = span ? span[i] : o->mtp_k ? (LayerSpan){top - 1, 1} : (LayerSpan){0, top};
        if (sp.l0 < 0 || sp.n < 1 || sp.l0 + sp.n > top)
            MOE_ERR("internal: span of layers [%d, %d) outside the %d layers run", sp.l0, sp.l0 + sp.n, top);
        P[i] = (Pass){m, a[i], b[i], o, out ? &out[i] : NULL, NULL, NULL, 0, o->grad_set && i == 0, sp.l0, sp.n,
                      o->mtp_k || sp.l0 == 0, sp.l0 + sp.n == top};
    }
    int rc = MOE_OK;
    for (int f = 0; f < s->n_phases && rc == MOE_OK; f++) rc = run_phase(P, s->n_passes, &s->phase[f]);
    if (rc != MOE_OK)
        for (int i = 0; i < s->n_passes; i++) pass_abort(&P[i]);
    return rc;
}

int model_forward(Model *m, Acts *a, const Batch *b, const ForwardOpts *o, ForwardOut *out) {
    return model_run(m, &SCHED_FORWARD, &a, &b, o, out);
}
