// Pipeline schedules (pipeline.h)
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "../base/base.h"
#include "../model/schedule.h"
#include "parallel.h"
#include "pipeline.h"

// the k-th forward or backward of a stage's list: in groups of S micro-batches, the chunks
// in turn (forwards from the first chunk, backwards from the last)
static PipeOp nth(int kind, int k, int S, int V) {
    const int grp = k / (S * V), i = k % (S * V);
    int chunk = i / S;
    if (kind == PIPE_B) chunk = V - 1 - chunk;
    return (PipeOp){(unsigned char)kind, (unsigned char)chunk, 0, grp * S + i % S, -1};
}

static int pipe_sizes(int S, int V, int m) {
    if (S < 1 || V < 1 || m < 1) MOE_ERR("pipeline: sizes must be positive (stages %d, virtual %d, micro-batches %d)", S, V, m);
    if (V > PIPE_MAX_V) MOE_ERR("pipeline: --vpp %d is more than %d", V, PIPE_MAX_V);
    if (S > PIPE_MAX_STAGES) MOE_ERR("pipeline: --pp %d is more than %d", S, PIPE_MAX_STAGES);
    if (V > 1 && m % S) MOE_ERR("--vpp %d needs the micro-batches a step (%d) to be a multiple of --pp %d", V, m, S);
    return MOE_OK;
}

int pipe_list(int S, int V, int stage, int m, bool pair, PipeOp *ops, int *n_ops, int *warmup) {
    MOE_TRY(pipe_sizes(S, V, m));
    if (stage < 0 || stage >= S) MOE_ERR("pipeline: stage %d of %d", stage, S);
    const int T = m * V;
    // Megatron's warm-up: the forwards that fill the pipe before this stage's first backward;
    // pairing waits for one more (and at V = 1 for as many as interleaving would): a pair
    // starts when both its forward's input and its backward's gradient are there, and the
    // last stage must not pair a micro-batch's forward with its own backward
    int W = V == 1 ? S - stage - 1 : 2 * (S - stage - 1) + (V - 1) * S;
    if (pair) W = 2 * (S - stage - 1) + (V - 1) * S + 1;
    if (V > 1 && m == S) W = T;   // (one group: all forwards first, as Megatron does)
    if (W > T) W = T;
    int n = 0;
    for (int k = 0; k < W; k++) ops[n++] = nth(PIPE_F, k, S, V);
    for (int i = 0; i < T - W; i++) {
        const PipeOp f = nth(PIPE_F, W + i, S, V), b = nth(PIPE_B, i, S, V);
        if (pair) ops[n++] = (PipeOp){PIPE_PAIR, f.chunk, b.chunk, f.mb, b.mb};
        else ops[n++] = f, ops[n++] = b;
    }
    for (int k = T - W; k < T; k++) ops[n++] = nth(PIPE_B, k, S, V);
    if (warmup) *warmup = W;
    if (n_ops) *n_ops = n;
    return MOE_OK;
}

int pipe_check(int S, int V, int m, bool pair, PipeSim *sim) { return pipe_simulate(S, V, m, pair, NULL, sim); }

int pipe_simulate(int S, int V, int m, bool pair, const PipeCost *cost, PipeSim *sim) {
    MOE_TRY(pipe_sizes(S, V, m));
    const int T = m * V, G = S * V, len = 2 * T;
    PipeOp *ops = MOE_NEW(PipeOp, (size_t)S * len);
    double *fdone = MOE_NEW(double, (size_t)m * G), *bdone = MOE_NEW(double, (size_t)m * G), *tfree = MOE_NEW(double, S);
    int *ptr = MOE_NEW(int, S), *lastb = MOE_NEW(int, G), *live = MOE_NEW(int, (size_t)S * V), *live_all = MOE_NEW(int, S);
    double *live_bytes = MOE_NEW(double, S);
    const double *bytes = cost ? cost->bytes : NULL;
    int *nops = MOE_NEW(int, S);
    int rc = MOE_OK;
    for (int s = 0; s < S && rc == MOE_OK; s++) rc = pipe_list(S, V, s, m, pair, ops + (size_t)s * len, &nops[s], NULL);
    if (rc != MOE_OK) goto done;
    for (size_t i = 0; i < (size_t)m * G; i++) fdone[i] = bdone[i] = -1;
    for (int g = 0; g < G; g++) lastb[g] = -1;
    memset(sim, 0, sizeof *sim);
    const double tf1 = 1.0 / V, tb1 = 2.0 / V, p2p = cost && S > 1 ? cost->p2p : 0;
    double busy_max = 0;
    for (int s = 0; s < S; s++) {
        double b = 0;
        for (int j = 0; j < V; j++) b += cost ? cost->tf[s * V + j] + cost->tb[s * V + j] : tf1 + tb1;
        if (b > busy_max) busy_max = b;
    }
    busy_max *= m;
    // each stage runs its list in order; a pass starts when its stage is free and its input
    // exists (the previous chunk's forward; the next chunk's backward and its own forward);
    // a pair when both of its passes' inputs exist, taking both passes' time
    for (bool moved = true; moved;) {
        moved = false;
        for (int s = 0; s < S; s++) {
            while (ptr[s] < nops[s]) {
                const PipeOp o = ops[(size_t)s * len + ptr[s]];
                const bool has_f = o.kind != PIPE_B, has_b = o.kind != PIPE_F;
                const int gf = o.chunk * S + s, cb = o.kind == PIPE_PAIR ? o.chunk2 : o.chunk, mbb = o.kind == PIPE_PAIR ? o.mb2 : o.mb;
                const int gb = cb * S + s;
                double ready = 0, dt = 0;
                if (has_f) {
                    if (fdone[(size_t)o.mb * G + gf] >= 0) { rc = MOE_FAIL; moe_seterr("pipeline check: stage %d runs the forward of micro-batch %d twice", s, o.mb); goto done; }
                    if (gf > 0 && fdone[(size_t)o.mb * G + gf - 1] < 0) break;
                    if (gf > 0) ready = fdone[(size_t)o.mb * G + gf - 1] + p2p;
                    dt += cost ? cost->tf[s * V + o.chunk] : tf1;
                }
                if (has_b) {
                    if (bdone[(size_t)mbb * G + gb] >= 0) { rc = MOE_FAIL; moe_seterr("pipeline check: stage %d runs the backward of micro-batch %d twice", s, mbb); goto done; }
                    const double f = fdone[(size_t)mbb * G + gb];
                    if (f < 0) break;
                    if (gb < G - 1 && bdone[(size_t)mbb * G + gb + 1] < 0) break;
                    const double r = gb < G - 1 ? bdone[(size_t)mbb * G + gb + 1] + p2p : f;
                    if (r > ready) ready = r;
                    if (mbb <= lastb[gb]) {
                        rc = MOE_FAIL;
                        moe_seterr("pipeline check: chunk %d's backward of micro-batch %d after that of %d", gb, mbb, lastb[gb]);
                        goto done;
                    }
                    lastb[gb] = mbb;
                    dt += cost ? cost->tb[s * V + cb] : tb1;
                }
                const double start = ready > tfree[s] ? ready : tfree[s], end = tfree[s] = start + dt;
                if (has_f) {   // (a pair's forward activations exist while its backward's are freed)
                    fdone[(size_t)o.mb * G + gf] = end;
                    int *lv = &live[s * V + o.chunk];
                    ++*lv, ++live_all[s];
                    if (*lv > sim->in_flight[o.chunk]) sim->in_flight[o.chunk] = *lv;
                    if (*lv > sim->at[s][o.chunk]) sim->at[s][o.chunk] = *lv;
                    if (live_all[s] > sim->in_flight_total) sim->in_flight_total = live_all[s];
                    if (bytes && (live_bytes[s] += bytes[s * V + o.chunk]) > sim->peak_bytes[s]) sim->peak_bytes[s] = live_bytes[s];
                }
                if (has_b) {
                    bdone[(size_t)mbb * G + gb] = end;
                    live[s * V + cb]--, live_all[s]--;
                    if (bytes) live_bytes[s] -= bytes[s * V + cb];
                }
                if (end > sim->makespan) sim->makespan = end;
                ptr[s]++;
                moved = true;
            }
        }
    }
    for (int s = 0; s < S; s++)
        if (ptr[s] < nops[s]) {
            const PipeOp o = ops[(size_t)s * len + ptr[s]];
            rc = MOE_FAIL;
            moe_seterr("pipeline check: deadlock: stage %d waits at its pass %d (%s of micro-batch %d, chunk %d)", s, ptr[s],
                       o.kind == PIPE_F ? "forward" : o.kind == PIPE_B ? "backward" : "pair, forward", o.mb, o.chunk);
            goto done;
        }
    sim->busy = busy_max;
    sim->bubble = (sim->makespan - busy_max) / busy_max;
done:
    moe_free(ops); moe_free(fdone); moe_free(bdone); moe_free(tfree);
    moe_free(ptr); moe_free(lastb); moe_free(live); moe_free(live_all); moe_free(live_bytes); moe_free(nops);
    return rc;
}

int par_pipe_alloc(Pipe *p, const Model *model, const LayerShard *ls, int m, int ntok, int mb, int acts_mode, bool overlap, bool pair) {
    memset(p, 0, sizeof *p);
    p->overlap = overlap;
    p->pair = pair;
    p->ls = *ls;
    p->m = m;
    p->Nmax = ntok;
    p->D = model->cfg.hidden_size;
    for (int w = 0; w < 2; w++) {
        p->ahead[w] = MOE_NEW(float, (size_t)ntok * p->D + PIPE_STAMP);
        p->ahead_req[w] = -1;
    }
    const int S = ls->S, V = ls->V;
    PipeSim sim;
    MOE_TRY(pipe_check(S, V, m, pair, &sim));
    p->ops = MOE_NEW(PipeOp, 2 * m * V);
    MOE_TRY(pipe_list(S, V, ls->stage, m, pair, p->ops, &p->n_ops, NULL));
    const size_t ND = (size_t)ntok * model->cfg.hidden_size;
    for (int j = 0; j < V; j++) {
        int l0, n;
        layer_shard_chunk(ls, j, &l0, &n);
        const int k = p->pool[j] = imax(1, sim.at[ls->stage][j]);
        p->acts[j] = MOE_NEW(Acts, k);
        p->batch[j] = MOE_NEW(Batch, k);
        p->sendbuf[j] = MOE_NEW(float, (size_t)k * (ND + PIPE_STAMP));
        p->sendreq[j] = MOE_NEW(int, k);
        for (int i = 0; i < k; i++) {
            acts_alloc_span(&p->acts[j][i], model, ntok, acts_mode, l0, n);
            batch_alloc(&p->batch[j][i], ntok, mb);
            p->sendreq[j][i] = -1;
        }
    }
    return MOE_OK;
}

void par_pipe_free(Pipe *p) {
    for (int j = 0; j < PIPE_MAX_V; j++) {
        for (int i = 0; i < p->pool[j]; i++) { acts_free(&p->acts[j][i]); batch_free(&p->batch[j][i]); }
        moe_free(p->acts[j]); moe_free(p->batch[j]); moe_free(p->sendbuf[j]); moe_free(p->sendreq[j]);
    }
    moe_free(p->ops);
    moe_free(p->ahead[0]);
    moe_free(p->ahead[1]);
    memset(p, 0, sizeof *p);
}

// the message to global chunk g of micro-batch mb: its input stream (dir 0) or its output's
// gradient (dir 1); messages between two ranks keep their order, so tags may repeat
// (an eval runs after a step's messages have all arrived, so its tags may repeat training's)
static int pipe_tag_eval(int mb, int g, int G) { return (int)(((long)mb * G + g) % 30000); }
static int pipe_tag(const Pipe *p, int mb, int g, int dir) {
    return (int)((((long)mb * p->ls.S * p->ls.V + g) * 2 + dir) % 30000);
}

// Receives are posted one pass ahead: while pass k computes, the inputs of pass k+1 (the
// stream, the gradient of the output, or both for a pair) can arrive into the staging
// buffers (sized for the largest micro-batch; a message may be shorter). A pass waits for
// its own inputs; that wait is the bubble (its neighbour had not sent them yet, or they were
// still in transit). w 0: the forward's input stream, w 1: the backward's output gradient.
static bool needs_recv(const Pipe *p, const PipeOp *o, int w, int *from, int *tag) {
    const int S = p->ls.S, G = S * p->ls.V;
    if (w == 0 && o->kind != PIPE_B) {
        const int g = o->chunk * S + p->ls.stage;
        if (g > 0) { *from = (g - 1) % S; *tag = pipe_tag(p, o->mb, g, 0); return true; }
    }
    if (w == 1 && o->kind != PIPE_F) {
        const int chunk = o->kind == PIPE_PAIR ? o->chunk2 : o->chunk, mb = o->kind == PIPE_PAIR ? o->mb2 : o->mb;
        const int g = chunk * S + p->ls.stage;
        if (g < G - 1) { *from = (g + 1) % S; *tag = pipe_tag(p, mb, g, 1); return true; }
    }
    return false;
}

static int post_recv(Pipe *p, int k) {
    for (int w = 0; w < 2; w++) {
        int from, tag;
        p->ahead_req[w] = -1;
        if (k < p->n_ops && needs_recv(p, &p->ops[k], w, &from, &tag))
            MOE_TRY(dist_pipe_irecv(p->ahead[w], (size_t)p->Nmax * p->D + PIPE_STAMP, from, tag, &p->ahead_req[w]));
    }
    return MOE_OK;
}

// pass k's inputs into dst[w] (n[w] floats; NULL: none), then pass k+1's receives posted
// (--overlap off: pass k's are posted now, and nothing ahead)
// Each message ends with its sender's clock at the send (PIPE_STAMP floats): of a wait, the
// part after that moment was the data in transit, the part before it the data not yet made
// (meaningful where the ranks' clocks agree: one host, the emulated hosts).
static int take_inputs(Pipe *p, int k, float *dst[2], const size_t n[2]) {
    const double t = time_now();
    if (!p->overlap) MOE_TRY(post_recv(p, k));
    for (int w = 0; w < 2; w++) {
        if (!dst[w]) continue;
        if (p->ahead_req[w] < 0) MOE_ERR("internal: pipeline pass %d has no receive posted", k);
        const double t0 = time_now();
        MOE_TRY(dist_wait(p->ahead_req[w]));
        const double t1 = time_now();
        p->ahead_req[w] = -1;
        memcpy(dst[w], p->ahead[w], sizeof(float) * n[w]);
        double sent;
        memcpy(&sent, p->ahead[w] + n[w], sizeof sent);
        p->transit_ms += fmax(0, t1 - fmax(sent, t0)) * 1e3;
    }
    p->bubble_ms += (time_now() - t) * 1e3;
    return p->overlap ? post_recv(p, k + 1) : MOE_OK;
}

static int pipe_send(Pipe *p, int j, int slot, const float *src, size_t n, int stage, int tag) {
    float *buf = p->sendbuf[j] + (size_t)slot * ((size_t)p->Nmax * p->D + PIPE_STAMP);
    if (p->sendreq[j][slot] >= 0) {   // the slot's last message must be out before the buffer is reused
        const double t = time_now();
        MOE_TRY(dist_wait(p->sendreq[j][slot]));
        p->exposed_ms += (time_now() - t) * 1e3;
        p->sendreq[j][slot] = -1;
    }
    memcpy(buf, src, sizeof(float) * n);
    const double now = time_now();
    memcpy(buf + n, &now, sizeof now);
    return dist_pipe_isend(buf, n + PIPE_STAMP, stage, tag, &p->sendreq[j][slot]);
}

static void add_stats(Acts *to, const Acts *from, const MoeConfig *c) {
    const int L = config_n_layers(c), LE = L * imax(c->n_routed_experts, 1);
    for (int i = 0; i < LE; i++) to->load[i] += from->load[i];
    for (int l = 0; l < L; l++) { to->drop_l[l] += from->drop_l[l]; to->rows_l[l] += from->rows_l[l]; }
    to->dropped += from->dropped;
    to->assigned += from->assigned;
}

int par_pipe_run(Pipe *p, Model *model, const ForwardOpts *fo, const Dataset *d, const int *ids, int count, int micro_batch,
                 ForwardOut *sum, long *tokens, Acts *stats) {
    const MoeConfig *c = &model->cfg;
    const int S = p->ls.S, V = p->ls.V, G = S * V, st = p->ls.stage, D = c->hidden_size;
    const int L = config_n_layers(c), LE = L * imax(c->n_routed_experts, 1);
    if (fo->grad_set) MOE_ERR("internal: pipelined passes add to the gradients");
    if ((count + micro_batch - 1) / micro_batch != p->m) MOE_ERR("internal: %d examples in micro-batches of %d for %d", count, micro_batch, p->m);
    memset(sum, 0, sizeof *sum);
    *tokens = 0;
    p->bubble_ms = p->exposed_ms = p->transit_ms = 0;
    for (int j = 0; j < V; j++)
        for (int i = 0; i < p->pool[j]; i++) {
            Acts *a = &p->acts[j][i];
            memset(a->load, 0, sizeof(long) * LE);
            memset(a->drop_l, 0, sizeof(long) * L);
            memset(a->rows_l, 0, sizeof(long) * L);
            a->dropped = a->assigned = 0;
        }
    int rc = p->overlap ? post_recv(p, 0) : MOE_OK;
    for (int k = 0; k < p->n_ops && rc == MOE_OK; k++) {
        const PipeOp o = p->ops[k];
        const bool has_f = o.kind != PIPE_B, has_b = o.kind != PIPE_F;
        // the forward's (micro-batch mb, chunk jf) and the backward's (mb2 or mb, chunk jb)
        const int jf = o.chunk, jb = o.kind == PIPE_PAIR ? o.chunk2 : o.chunk, mbb = o.kind == PIPE_PAIR ? o.mb2 : o.mb;
        const int gf = jf * S + st, gb = jb * S + st;
        Acts *a[2] = {NULL, NULL};
        const Batch *bc[2] = {NULL, NULL};
        LayerSpan span[2] = {{0, 0}, {0, 0}};
        float *dst[2] = {NULL, NULL};
        size_t nd[2] = {0, 0};
        if (has_f) {
            int l0, n;
            layer_shard_chunk(&p->ls, jf, &l0, &n);
            span[0] = (LayerSpan){l0, n};
            a[0] = &p->acts[jf][o.mb % p->pool[jf]];
            Batch *b = &p->batch[jf][o.mb % p->pool[jf]];
            const int s0 = o.mb * micro_batch;
            batch_fill(b, d, ids + s0, imin(micro_batch, count - s0));
            bc[0] = b;
            nd[0] = (size_t)b->N * D;
            if (gf > 0) dst[0] = acts_stream(a[0], l0, b->N);
        }
        if (has_b) {
            int l0, n;
            layer_shard_chunk(&p->ls, jb, &l0, &n);
            span[1] = (LayerSpan){l0, n};
            a[1] = &p->acts[jb][mbb % p->pool[jb]];
            bc[1] = &p->batch[jb][mbb % p->pool[jb]];
            nd[1] = (size_t)bc[1]->N * D;
            if (gb < G - 1) dst[1] = acts_dstream(a[1]);
        }
        rc = take_inputs(p, k, dst, nd);
        ForwardOut out[2] = {{0}};
        if (rc == MOE_OK) {
            if (o.kind == PIPE_PAIR) rc = model_run_span(model, &SCHED_PAIR, a, bc, fo, out, span);
            else if (has_f) rc = model_run_span(model, &SCHED_CHUNK_FORWARD, &a[0], &bc[0], fo, &out[0], &span[0]);
            else rc = model_run_span(model, &SCHED_CHUNK_BACKWARD, &a[1], &bc[1], fo, NULL, &span[1]);
        }
        if (rc != MOE_OK) break;
        if (has_f) {
            sum->ce_sum += out[0].ce_sum;
            sum->aux += out[0].aux;
            sum->mtp_ce_sum += out[0].mtp_ce_sum;
            if (gf == 0) *tokens += bc[0]->N;
            if (gf < G - 1)
                rc = pipe_send(p, jf, o.mb % p->pool[jf], acts_stream(a[0], span[0].l0 + span[0].n, bc[0]->N), nd[0], (gf + 1) % S,
                               pipe_tag(p, o.mb, gf + 1, 0));
        }
        if (rc == MOE_OK && has_b && gb > 0)
            rc = pipe_send(p, jb, mbb % p->pool[jb], acts_dstream(a[1]), nd[1], (gb - 1) % S, pipe_tag(p, mbb, gb - 1, 1));
    }
    p->ahead_req[0] = p->ahead_req[1] = -1;   // (set only after a failure, when the job ends: nothing more is waited for)
    for (int j = 0; j < V; j++)   // everything sent before the buffers go on
        for (int i = 0; i < p->pool[j]; i++)
            if (p->sendreq[j][i] >= 0) {
                const double t = time_now();
                if (dist_wait(p->sendreq[j][i]) && rc == MOE_OK) rc = MOE_FAIL;
                p->exposed_ms += (time_now() - t) * 1e3;
                p->sendreq[j][i] = -1;
            }
    for (int j = 0; j < V; j++)
        for (int i = 0; i < p->pool[j]; i++) add_stats(stats, &p->acts[j][i], c);
    return rc;
}

// The eval loss under pipeline parallelism: forward passes only, each micro-batch through the
// stage's chunks in order (micro-batch after micro-batch: the stages take turns; an eval is
// small next to training), the streams handed on as in training; the last chunk's stage
// computes the loss of the target rows, summed to every stage over DIST_PIPE.
int par_pipe_eval(const LayerShard *ls, Model *m, const ExpertShard *sh, const Dataset *d, int limit, int batch, double *loss,
                  long *tokens) {
    const int S = ls->S, V = ls->V, G = S * V, st = ls->stage, D = m->cfg.hidden_size;
    const int n = limit > 0 && limit < d->n ? limit : d->n;
    int maxlen = 1;
    for (int i = 0; i < n; i++) maxlen = imax(maxlen, d->ex[i].len - 1);
    const int Nmax = batch * maxlen;
    Acts *a = MOE_NEW(Acts, V);
    for (int j = 0; j < V; j++) {
        int l0, nl;
        layer_shard_chunk(ls, j, &l0, &nl);
        acts_alloc_span(&a[j], m, Nmax, ACTS_INFER | (sh && sh->comm ? ACTS_EP : 0), l0, nl);
    }
    Batch b;
    batch_alloc(&b, Nmax, batch);
    int *ids = MOE_NEW(int, batch);
    double sum[2] = {0, 0};   // the loss summed over the target rows, their count
    ForwardOpts fo = {.train = false, .shard = sh};
    int rc = MOE_OK;
    for (int s0 = 0, mb = 0; s0 < n && rc == MOE_OK; s0 += batch, mb++) {
        const int nb = imin(batch, n - s0);
        for (int i = 0; i < nb; i++) ids[i] = s0 + i;
        batch_fill(&b, d, ids, nb);
        const size_t ND = (size_t)b.N * D;
        for (int j = 0; j < V && rc == MOE_OK; j++) {
            const int g = j * S + st;
            int l0, nl;
            layer_shard_chunk(ls, j, &l0, &nl);
            nl = imin(nl, m->cfg.num_hidden_layers - l0);   // (an eval runs the stack, not the MTP modules)
            const LayerSpan span = {l0, nl};
            Acts *ap = &a[j];
            const Batch *bp = &b;
            int req = -1;
            if (g > 0) {
                rc = dist_pipe_irecv(acts_stream(ap, l0, b.N), ND, (g - 1) % S, pipe_tag_eval(mb, g, G), &req);
                if (rc == MOE_OK) rc = dist_wait(req);
            }
            ap->n_out = 0;
            if (g == G - 1)
                for (int t = 0; t < b.N; t++)
                    if (b.targets[t] >= 0) ap->out_rows[ap->n_out++] = t;
            ForwardOut out = {0};
            if (rc == MOE_OK) rc = model_run_span(m, &SCHED_CHUNK_FORWARD, &ap, &bp, &fo, &out, &span);
            if (rc == MOE_OK && g == G - 1) sum[0] += out.ce_sum, sum[1] += b.n_targets;
            if (rc == MOE_OK && g < G - 1) {
                rc = dist_pipe_isend(acts_stream(ap, l0 + nl, b.N), ND, (g + 1) % S, pipe_tag_eval(mb, g + 1, G), &req);
                if (rc == MOE_OK) rc = dist_wait(req);   // (the buffer is the chunk's own, reused next)
            }
        }
    }
    if (rc == MOE_OK) rc = dist_sum_f64(sum, 2, DIST_PIPE);
    *loss = sum[1] > 0 ? sum[0] / sum[1] : 0;
    *tokens = (long)sum[1];
    for (int j = 0; j < V; j++) acts_free(&a[j]);
    moe_free(a);
    moe_free(ids);
    batch_free(&b);
    return rc;
}
