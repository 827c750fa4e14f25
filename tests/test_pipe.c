// Pipeline schedules (src/parallel/pipeline.c): every stage's list of Megatron's interleaved
// 1F1B order, simulated together, is complete, deadlock-free, keeps each chunk's backwards in
// micro-batch order, and idles exactly the bubble the schedule promises, (S-1)/(m·V); the
// activations kept at once, per chunk, stop growing with m. One PASS/FAIL line per check.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "../src/base/base.h"
#include "../src/io/checkpoint.h"
#include "../src/model/schedule.h"
#include "../src/parallel/pipeline.h"

static int n_pass, n_fail;
static void check(const char *name, int ok, const char *detail) {
    if (ok) { printf("PASS pipe: %s\n", name); n_pass++; }
    else { printf("FAIL pipe: %s: %s\n", name, detail); n_fail++; }
}

// Staged blobs: for each layout, the stages' tensors are the whole model's, each once (the
// embedding's copy on the last stage aside), and a stage loads its tensors by name from a
// whole checkpoint bit for bit
static void staged_blobs(void) {
    char dir[] = "/tmp/moe-pipe.XXXXXX", detail[512] = "", name[200];
    if (!mkdtemp(dir)) { check("temporary directory", 0, "mkdtemp"); return; }
    // 7 layers (the first dense) and one MTP module, tied or not
    for (int tied = 0; tied < 2; tied++) {
        char js[512], ck[128];
        snprintf(js, sizeof js, "{\"hidden_size\": 16, \"num_hidden_layers\": 7, \"num_attention_heads\": 2, \"intermediate_size\": 24,"
                 " \"moe_intermediate_size\": 8, \"n_routed_experts\": 4, \"num_experts_per_tok\": 2, \"first_k_dense_replace\": 1,"
                 " \"num_mtp_layers\": 1, \"max_position_embeddings\": 32, \"tie_word_embeddings\": %s}", tied ? "true" : "false");
        MoeConfig c;
        if (config_parse(&c, js, "staged.json") != MOE_OK) { check("staged config", 0, moe_errmsg()); return; }
        Model full;
        model_build(&full, &c, false);
        model_init_weights(&full, 5);
        snprintf(ck, sizeof ck, "%s/ck%d", dir, tied);
        if (ckpt_save(ck, &full, NULL, false) != MOE_OK) { check("save", 0, moe_errmsg()); return; }
        int bad = 0, layouts = 0;
        const int SV[][2] = {{2, 1}, {2, 2}, {4, 1}, {3, 2}, {7, 1}};
        for (int k = 0; k < 5; k++) {
            LayerShard ls = {SV[k][0], SV[k][1], 0, {0}};
            if (layer_cuts(&c, ls.S, ls.V, NULL, 0, ls.cut) != MOE_OK) { bad++; snprintf(detail, sizeof detail, "%s", moe_errmsg()); continue; }
            layouts++;
            int *seen = calloc((size_t)full.n_tensors, sizeof(int));
            for (int st = 0; st < ls.S; st++) {
                LayerShard me = layer_shard_at(&ls, st);
                Model m;
                if (ckpt_load_model_staged(ck, &m, false, NULL, &me) != MOE_OK) { bad++; snprintf(detail, sizeof detail, "load: %s", moe_errmsg()); continue; }
                for (int i = 0; i < m.n_tensors; i++) {
                    const ParamTensor *t = &m.tensors[i];
                    const int f = model_find_tensor(&full, t->name);
                    if (f < 0 || memcmp(m.params + t->offset, full.params + full.tensors[f].offset, sizeof(float) * t->numel)) {
                        if (!bad++) snprintf(detail, sizeof detail, "S %d V %d stage %d: %s differs", ls.S, ls.V, st, t->name);
                        continue;
                    }
                    seen[f]++;
                }
                model_free(&m);
            }
            for (int f = 0; f < full.n_tensors; f++) {
                const int want = !strcmp(full.tensors[f].name, "model.embed_tokens.weight") ? 2 : 1;   // stage 0 and the copy
                if (seen[f] != want && !bad++)
                    snprintf(detail, sizeof detail, "S %d V %d: %s held %d times", ls.S, ls.V, full.tensors[f].name, seen[f]);
            }
            free(seen);
        }
        snprintf(name, sizeof name, "%d layouts of a 7+1-layer MTP model (%s): the stages hold each tensor once (the embedding's copy "
                 "on the last), loaded by name bit for bit", layouts, tied ? "tied" : "untied");
        check(name, bad == 0 && layouts == 5, detail);
        // the refusals
        int cut[PP_MAX_CHUNKS + 1], counts[] = {3, 4}, zero[] = {0, 7}, three[] = {2, 2, 3};
        struct { const char *what; int S, V; const int *counts; int n; const char *want; } r[] = {
            {"S·V above the layer count", 4, 2, NULL, 0, "8 chunks for 7 layers"},
            {"--pp-layers not summing to the layers", 2, 1, (int[]){3, 3}, 2, "counts 6 layers, the model has 7"},
            {"--pp-layers with a chunk of none", 2, 1, zero, 2, "chunk 0 has 0 layers"},
            {"--pp-layers of another chunk count", 2, 1, three, 3, "3 counts for 2 chunks"},
        };
        for (int i = 0; !tied && i < 4; i++) {
            const int rc = layer_cuts(&c, r[i].S, r[i].V, r[i].counts, r[i].n, cut);
            snprintf(name, sizeof name, "layer cuts refuse %s in one line", r[i].what);
            check(name, rc == MOE_FAIL && strstr(moe_errmsg(), r[i].want) && !strchr(moe_errmsg(), '\n'), moe_errmsg());
        }
        if (!tied) {
            int ok = layer_cuts(&c, 2, 1, counts, 2, cut) == MOE_OK && cut[0] == 0 && cut[1] == 3 && cut[2] == 8;
            check("--pp-layers 3,4: chunks [0,3) and [3,8), the MTP module with the last", ok, moe_errmsg());
        }
        model_free(&full);
    }
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) {}
}

// Chunk passes (model_run_span): a micro-batch through the model chunk by chunk, each chunk
// with its own activations and the stream (forward) and its gradient (backward) copied
// between them as stages hand them on, gives the gradients, loss and balance loss of one pass
// over the whole stack bit for bit
static void fill_batch(Batch *b, const MoeConfig *c) {
    Rng r;
    rng_seed(&r, 11);
    const int lens[] = {14, 9, 17};
    int n = 0;
    b->n_seq = 3;
    b->n_targets = 0;
    for (int s = 0; s < 3; s++) {
        b->seq_start[s] = n;
        for (int i = 0; i < lens[s]; i++, n++) {
            b->tokens[n] = (int)rng_below(&r, 256);
            b->pos[n] = i;
            b->kv_lo[n] = b->seq_start[s];
            b->targets[n] = i >= lens[s] / 2 ? (int)rng_below(&r, (uint64_t)c->vocab_size) : -1;
            b->n_targets += b->targets[n] >= 0;
        }
    }
    b->seq_start[3] = n;
    b->N = n;
}

// 7 layers (the first dense), 4 experts top-2 + a shared one, an MTP module, sequence aux loss
static int chunk_config(MoeConfig *c, int tied) {
    char js[600];
    snprintf(js, sizeof js, "{\"hidden_size\": 16, \"num_hidden_layers\": 7, \"num_attention_heads\": 2, \"intermediate_size\": 24,"
             " \"moe_intermediate_size\": 8, \"n_routed_experts\": 4, \"num_experts_per_tok\": 2, \"first_k_dense_replace\": 1,"
             " \"n_shared_experts\": 1, \"num_mtp_layers\": 1, \"max_position_embeddings\": 32, \"aux_loss_alpha\": 0.01,"
             " \"aux_scope\": \"sequence\", \"tie_word_embeddings\": %s}", tied ? "true" : "false");
    return config_parse(c, js, "chunks.json");
}

static int run_chunked(Model *m, const Batch *b, int mode, const int *cut, int K, ForwardOut *tot) {
    const MoeConfig *c = &m->cfg;
    Acts *a = MOE_NEW(Acts, K);
    ForwardOpts fo = {.train = true, .ce_scale = 1.0f / b->n_targets, .aux_scale = 1.0f / b->n_seq,
                      .mtp_scale = c->num_mtp_layers ? c->mtp_loss_weight / c->num_mtp_layers / b->n_targets : 0};
    const size_t ND = (size_t)b->N * c->hidden_size;
    int rc = MOE_OK;
    memset(tot, 0, sizeof *tot);
    for (int k = 0; k < K; k++) acts_alloc_span(&a[k], m, b->N, mode, cut[k], cut[k + 1] - cut[k]);   // each its chunk's layers
    for (int k = 0; k < K && rc == MOE_OK; k++) {   // forward, chunk after chunk
        LayerSpan sp = {cut[k], cut[k + 1] - cut[k]};
        if (k > 0) memcpy(acts_stream(&a[k], sp.l0, b->N), acts_stream(&a[k - 1], sp.l0, b->N), sizeof(float) * ND);
        Acts *ap = &a[k];
        const Batch *bp = b;
        ForwardOut o = {0};
        rc = model_run_span(m, &SCHED_CHUNK_FORWARD, &ap, &bp, &fo, &o, &sp);
        tot->ce_sum += o.ce_sum; tot->aux += o.aux; tot->mtp_ce_sum += o.mtp_ce_sum;
    }
    for (int k = K - 1; k >= 0 && rc == MOE_OK; k--) {   // backward, from the top chunk down
        LayerSpan sp = {cut[k], cut[k + 1] - cut[k]};
        if (k < K - 1) memcpy(acts_dstream(&a[k]), acts_dstream(&a[k + 1]), sizeof(float) * ND);
        Acts *ap = &a[k];
        const Batch *bp = b;
        rc = model_run_span(m, &SCHED_CHUNK_BACKWARD, &ap, &bp, &fo, NULL, &sp);
    }
    for (int k = 0; k < K; k++) acts_free(&a[k]);
    moe_free(a);
    return rc;
}

static void chunk_passes(void) {
    char name[200], detail[400] = "";
    for (int tied = 0; tied < 2; tied++) {
        MoeConfig c;
        if (chunk_config(&c, tied) != MOE_OK) { check("chunk config", 0, moe_errmsg()); return; }
        Model m;
        model_build(&m, &c, true);
        model_init_weights(&m, 3);
        Batch b;
        batch_alloc(&b, 64, 4);
        fill_batch(&b, &c);
        const int modes[] = {ACTS_TRAIN, ACTS_TRAIN_SELECTIVE | ACTS_BF16, ACTS_TRAIN | ACTS_RECOMPUTE | ACTS_RECOMPUTE_FULL};
        const char *mname[] = {"exact", "default (selective, bf16)", "full recompute"};
        for (int mi = 0; mi < 3; mi++) {
            // the whole stack in one pass
            memset(m.grads, 0, sizeof(float) * m.n_params);
            Acts a;
            acts_alloc(&a, &m, b.N, modes[mi]);
            ForwardOpts fo = {.train = true, .ce_scale = 1.0f / b.n_targets, .aux_scale = 1.0f / b.n_seq,
                              .mtp_scale = c.mtp_loss_weight / c.num_mtp_layers / b.n_targets};
            ForwardOut ref = {0};
            Acts *ap = &a;
            const Batch *bp = &b;
            int rc = model_run(&m, &SCHED_TRAIN, &ap, &bp, &fo, &ref);
            acts_free(&a);
            float *g0 = MOE_NEW(float, m.n_params);
            memcpy(g0, m.grads, sizeof(float) * m.n_params);
            // the same in chunks: 2, 3 and 7 of them
            const int cuts[3][9] = {{0, 3, 8}, {0, 1, 4, 8}, {0, 1, 2, 3, 4, 5, 6, 8}};
            const int Ks[3] = {2, 3, 7};
            int bad = rc != MOE_OK;
            if (bad) snprintf(detail, sizeof detail, "one pass: %s", moe_errmsg());
            for (int k = 0; k < 3 && !bad; k++) {
                memset(m.grads, 0, sizeof(float) * m.n_params);
                ForwardOut o;
                if (run_chunked(&m, &b, modes[mi], cuts[k], Ks[k], &o) != MOE_OK) { bad = 1; snprintf(detail, sizeof detail, "%s", moe_errmsg()); break; }
                // (the balance loss sums the layers' terms chunk by chunk: another order of a double sum)
                if (o.ce_sum != ref.ce_sum || fabs(o.aux - ref.aux) > 1e-12 * fabs(ref.aux) || o.mtp_ce_sum != ref.mtp_ce_sum) {
                    bad = 1;
                    snprintf(detail, sizeof detail, "%d chunks: ce %.9g aux %.9g mtp %.9g vs %.9g %.9g %.9g", Ks[k], o.ce_sum, o.aux,
                             o.mtp_ce_sum, ref.ce_sum, ref.aux, ref.mtp_ce_sum);
                }
                for (int t = 0; t < m.n_tensors && !bad; t++) {
                    const ParamTensor *pt = &m.tensors[t];
                    if (memcmp(m.grads + pt->offset, g0 + pt->offset, sizeof(float) * pt->numel)) {
                        bad = 1;
                        snprintf(detail, sizeof detail, "%d chunks: gradient of %s differs", Ks[k], pt->name);
                    }
                }
            }
            moe_free(g0);
            snprintf(name, sizeof name, "chunk passes (2, 3, 7 chunks) = one pass, bit for bit: gradients, loss, MTP loss (balance loss to 1e-12) "
                     "(%s, %s; dense + MoE + shared + MTP)", mname[mi], tied ? "tied" : "untied");
            check(name, !bad, detail);
        }
        if (!tied) {   // a chunk's activations are its layers' (saved activations, MEM_ACTS)
            size_t b0 = mem_bytes(MEM_ACTS);
            Acts a;
            acts_alloc(&a, &m, 256, ACTS_TRAIN);
            const size_t whole = mem_bytes(MEM_ACTS) - b0;
            acts_free(&a);
            b0 = mem_bytes(MEM_ACTS);
            acts_alloc_span(&a, &m, 256, ACTS_TRAIN, 3, 1);
            const size_t one = mem_bytes(MEM_ACTS) - b0;
            acts_free(&a);
            snprintf(detail, sizeof detail, "one layer's %zu bytes, the whole stack's %zu", one, whole);
            check("a one-layer chunk keeps about 1/8 of the 8-layer stack's saved activations", one * 5 < whole && one > 0, detail);
        }
        batch_free(&b);
        model_free(&m);
    }
}

// SCHED_PAIR on one process: F0, then the pair (A = F1, B = B0), then B1 gives the
// gradients and losses of F0 B0 F1 B1 (bit for bit untied; with a tied embedding the head's
// and the embedding's contributions to the one tensor are added in another order); also with
// the pair spanning two chunks, A the first chunk's forward, B the second's backward
static int run_one(Model *m, const Schedule *s, Acts **a, const Batch **b, const ForwardOpts *fo, ForwardOut *o, const LayerSpan *sp) {
    return model_run_span(m, s, a, b, fo, o, sp);
}
static void pair_passes(void) {
    char detail[400] = "";
    for (int tied = 0; tied < 2; tied++) {
        MoeConfig c;
        if (chunk_config(&c, tied) != MOE_OK) { check("pair config", 0, moe_errmsg()); return; }
        Model m;
        model_build(&m, &c, true);
        model_init_weights(&m, 5);
        Batch bt[2];
        for (int i = 0; i < 2; i++) { batch_alloc(&bt[i], 64, 4); fill_batch(&bt[i], &c); }
        for (int n = 0; n < bt[1].N; n++) bt[1].tokens[n] = (bt[1].tokens[n] * 7 + 3) % 256;   // another micro-batch
        ForwardOpts fo = {.train = true, .ce_scale = 1.0f / bt[0].n_targets, .aux_scale = 1.0f / bt[0].n_seq,
                          .mtp_scale = c.mtp_loss_weight / c.num_mtp_layers / bt[0].n_targets};
        const int L = config_n_layers(&c), mode = ACTS_TRAIN_SELECTIVE | ACTS_BF16;
        for (int split = 0; split < 2; split++) {
            // chunks: the whole stack, or [0, 3) and [3, L)
            const int K = split ? 2 : 1, cut[3] = {0, split ? 3 : L, L};
            Acts a[2][2];
            for (int i = 0; i < 2; i++)
                for (int k = 0; k < K; k++) acts_alloc_span(&a[i][k], &m, bt[i].N, mode, cut[k], cut[k + 1] - cut[k]);
            double ce[2][2] = {{0}};
            float *g[2] = {NULL, NULL};
            int rc = MOE_OK;
            for (int way = 0; way < 2 && rc == MOE_OK; way++) {
                memset(m.grads, 0, sizeof(float) * m.n_params);
                // the passes in order; way 1 runs step 'P' as one pair
                // whole stack: F0 B0 F1 B1, way 1: F0 (F1|B0) B1
                // two chunks: F0c0 F0c1 B0c1 F1c0 F1c1 B1c1 B0c0 B1c0, way 1: F0c0 F0c1 (F1c0|B0c1) F1c1 B1c1 B0c0 B1c0
                typedef struct { char kind; int mb, k; } Op;
                const Op seq1[] = {{'F', 0, 0}, {'B', 0, 0}, {'F', 1, 0}, {'B', 1, 0}};
                const Op seq2[] = {{'F', 0, 0}, {'F', 0, 1}, {'B', 0, 1}, {'F', 1, 0}, {'F', 1, 1}, {'B', 1, 1}, {'B', 0, 0}, {'B', 1, 0}};
                const Op *seq = split ? seq2 : seq1;
                const int n_ops = split ? 8 : 4, pair_at = split ? 2 : 1;   // ops pair_at and pair_at + 1 become one pair
                for (int o = 0; o < n_ops && rc == MOE_OK; o++) {
                    const Op op = seq[o];
                    if (way == 1 && o == pair_at) {   // (B mb op.mb chunk op.k) with (F of seq[o + 1])
                        const Op f = seq[o + 1];
                        const size_t fnd = (size_t)bt[f.mb].N * c.hidden_size, bnd = (size_t)bt[op.mb].N * c.hidden_size;
                        if (f.k > 0) memcpy(acts_stream(&a[f.mb][f.k], cut[f.k], bt[f.mb].N), acts_stream(&a[f.mb][f.k - 1], cut[f.k], bt[f.mb].N), sizeof(float) * fnd);
                        if (op.k < K - 1) memcpy(acts_dstream(&a[op.mb][op.k]), acts_dstream(&a[op.mb][op.k + 1]), sizeof(float) * bnd);
                        Acts *ap[2] = {&a[f.mb][f.k], &a[op.mb][op.k]};
                        const Batch *bp[2] = {&bt[f.mb], &bt[op.mb]};
                        const LayerSpan sp[2] = {{cut[f.k], cut[f.k + 1] - cut[f.k]}, {cut[op.k], cut[op.k + 1] - cut[op.k]}};
                        ForwardOut out[2] = {{0}};
                        rc = run_one(&m, &SCHED_PAIR, ap, bp, &fo, out, sp);
                        ce[way][f.mb] += out[0].ce_sum + out[0].mtp_ce_sum + out[0].aux;
                        o++;
                        continue;
                    }
                    Acts *ap = &a[op.mb][op.k];
                    const Batch *bp = &bt[op.mb];
                    const LayerSpan sp = {cut[op.k], cut[op.k + 1] - cut[op.k]};
                    const size_t nd = (size_t)bt[op.mb].N * c.hidden_size;
                    if (op.kind == 'F') {
                        if (op.k > 0) memcpy(acts_stream(ap, sp.l0, bp->N), acts_stream(&a[op.mb][op.k - 1], sp.l0, bp->N), sizeof(float) * nd);
                        ForwardOut out = {0};
                        rc = run_one(&m, &SCHED_CHUNK_FORWARD, &ap, &bp, &fo, &out, &sp);
                        ce[way][op.mb] += out.ce_sum + out.mtp_ce_sum + out.aux;
                    } else {
                        if (op.k < K - 1) memcpy(acts_dstream(ap), acts_dstream(&a[op.mb][op.k + 1]), sizeof(float) * nd);
                        rc = run_one(&m, &SCHED_CHUNK_BACKWARD, &ap, &bp, &fo, NULL, &sp);
                    }
                }
                g[way] = MOE_NEW(float, m.n_params);
                memcpy(g[way], m.grads, sizeof(float) * m.n_params);
            }
            int bad = rc != MOE_OK;
            if (bad) snprintf(detail, sizeof detail, "%s", moe_errmsg());
            double worst = 0;
            for (int i = 0; i < 2 && !bad; i++)
                if (ce[0][i] != ce[1][i]) { bad = 1; snprintf(detail, sizeof detail, "micro-batch %d's losses %.9g vs %.9g", i, ce[1][i], ce[0][i]); }
            for (int t = 0; t < m.n_tensors && !bad; t++) {
                const ParamTensor *pt = &m.tensors[t];
                for (size_t j = 0; j < pt->numel; j++) {
                    const double x = g[1][pt->offset + j], y = g[0][pt->offset + j], d = fabs(x - y) / (fabs(y) + 1e-6);
                    if (d > worst) worst = d;
                    if (tied ? d > 1e-5 : x != y) {
                        bad = 1;
                        snprintf(detail, sizeof detail, "gradient of %s [%zu]: %.9g vs %.9g", pt->name, j, x, y);
                        break;
                    }
                }
            }
            if (!bad) snprintf(detail, sizeof detail, "largest relative difference %.2g", worst);
            char name[300];
            snprintf(name, sizeof name, "SCHED_PAIR: a forward and another micro-batch's backward in one phase = the two passes apart (%s, %s)",
                     split ? "two chunks, the pair across them" : "the whole stack", tied ? "tied: to 1e-5" : "untied: bit for bit");
            check(name, !bad, detail);
            if (g[0]) moe_free(g[0]);
            if (g[1]) moe_free(g[1]);
            for (int i = 0; i < 2; i++)
                for (int k = 0; k < K; k++) acts_free(&a[i][k]);
        }
        for (int i = 0; i < 2; i++) batch_free(&bt[i]);
        model_free(&m);
    }
}

int main(void) {
    char name[160], detail[512];
    // the grid: stages, virtual stages, micro-batches (V > 1: multiples of S)
    const int Ss[] = {1, 2, 3, 4, 8}, Vs[] = {1, 2, 3, 4};
    int bad = 0, runs = 0;
    detail[0] = 0;
    for (int a = 0; a < 5; a++)
        for (int b = 0; b < 4; b++)
            for (int f = 1; f <= 4; f *= 2) {
                const int S = Ss[a], V = Vs[b], m = f * S;
                PipeSim sim;
                runs++;
                if (pipe_check(S, V, m, false, &sim) != MOE_OK) {
                    if (!bad++) snprintf(detail, sizeof detail, "S %d V %d m %d: %s", S, V, m, moe_errmsg());
                    continue;
                }
                const double want = (double)(S - 1) / (m * V);
                if (fabs(sim.bubble - want) > 1e-9) {
                    if (!bad++) snprintf(detail, sizeof detail, "S %d V %d m %d: bubble %.6f, the schedule's %.6f", S, V, m, sim.bubble, want);
                }
            }
    snprintf(name, sizeof name, "%d layouts (S 1-8, V 1-4, m = S, 2S, 4S): complete, no deadlock, backwards in order, bubble (S-1)/(mV)", runs);
    check(name, bad == 0, detail);

    // the same grid paired (SCHED_PAIR: each steady forward and backward one pass)
    bad = 0, runs = 0;
    int worst_mem = 0;
    for (int a = 0; a < 5; a++)
        for (int b = 0; b < 4; b++)
            for (int f = 1; f <= 4; f *= 2) {
                const int S = Ss[a], V = Vs[b], m = f * S;
                PipeSim sim, plain;
                runs++;
                if (pipe_check(S, V, m, true, &sim) != MOE_OK || pipe_check(S, V, m, false, &plain) != MOE_OK) {
                    if (!bad++) snprintf(detail, sizeof detail, "S %d V %d m %d paired: %s", S, V, m, moe_errmsg());
                    continue;
                }
                const double want = (double)(S - 1) / (m * V);
                if (fabs(sim.bubble - want) > 1e-9 && !bad++)
                    snprintf(detail, sizeof detail, "S %d V %d m %d paired: bubble %.6f, the schedule's %.6f", S, V, m, sim.bubble, want);
                if (sim.in_flight_total - plain.in_flight_total > worst_mem) worst_mem = sim.in_flight_total - plain.in_flight_total;
            }
    snprintf(name, sizeof name, "%d layouts paired: complete, no deadlock, backwards in order, bubble (S-1)/(mV) (%d more chunk activations kept at most)",
             runs, worst_mem);
    check(name, bad == 0, detail);
    {   // a paired list: S 2, V 1, m 4, stage 0: warm-up 3, then pairs, then the cool-down
        PipeOp ops[16];
        int W, n;
        int ok = pipe_list(2, 1, 0, 4, true, ops, &n, &W) == MOE_OK;
        char got[256] = "";
        for (int i = 0; ok && i < n; i++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%s", i ? " " : "",
                     ops[i].kind == PIPE_PAIR ? (snprintf(detail, sizeof detail, "F%d|B%d", ops[i].mb, ops[i].mb2), detail)
                                              : (snprintf(detail, sizeof detail, "%c%d", ops[i].kind == PIPE_F ? 'F' : 'B', ops[i].mb), detail));
        snprintf(detail, sizeof detail, "got %s (warm-up %d)", got, W);
        check("S 2, V 1, m 4, stage 0 paired: F0 F1 F2 F3|B0 B1 B2 B3 (warm-up 2(S-1)+1)", ok && W == 3 && !strcmp(got, "F0 F1 F2 F3|B0 B1 B2 B3"), detail);
    }

    // V = 1 takes any m; the bubble is (S-1)/m
    bad = 0;
    for (int S = 1; S <= 6; S++)
        for (int m = 1; m <= 13; m++) {
            PipeSim sim;
            if (pipe_check(S, 1, m, false, &sim) != MOE_OK || fabs(sim.bubble - (double)(S - 1) / m) > 1e-9) {
                if (!bad++) snprintf(detail, sizeof detail, "S %d m %d: %s bubble %.6f", S, m, moe_errmsg(), sim.bubble);
            }
        }
    check("V = 1, S 1-6, m 1-13 (also m < S): 1F1B's bubble (S-1)/m", bad == 0, detail);

    // memory: at V = 1 stage 0 keeps min(m, S) micro-batches; interleaving keeps more chunks,
    // each 1/V of the layers; neither grows past m = 2S
    PipeSim s1, s2, s3;
    int ok = pipe_check(4, 1, 16, false, &s1) == MOE_OK && pipe_check(4, 1, 64, false, &s2) == MOE_OK;
    snprintf(detail, sizeof detail, "S 4 V 1: in flight %d (m 16), %d (m 64)", s1.in_flight_total, s2.in_flight_total);
    check("S 4, V 1: at most S micro-batches' activations kept, whatever m", ok && s1.in_flight_total == 4 && s2.in_flight_total == 4, detail);
    ok = pipe_check(4, 2, 8, false, &s1) == MOE_OK && pipe_check(4, 2, 16, false, &s2) == MOE_OK && pipe_check(4, 2, 64, false, &s3) == MOE_OK;
    snprintf(detail, sizeof detail, "S 4 V 2: in flight %d, %d, %d chunk passes (m 8, 16, 64), per chunk [%d %d]", s1.in_flight_total,
             s2.in_flight_total, s3.in_flight_total, s3.in_flight[0], s3.in_flight[1]);
    check("S 4, V 2: the chunk activations kept stop growing at m = 2S", ok && s2.in_flight_total == s3.in_flight_total &&
          s3.in_flight_total <= 2 * 4 * 2, detail);

    // the list of one stage: warm-up, alternation, cool-down
    PipeOp ops[64];
    int W;
    ok = pipe_list(2, 2, 0, 4, false, ops, NULL, &W) == MOE_OK;
    char got[256] = "";
    for (int i = 0; ok && i < 16; i++)
        snprintf(got + strlen(got), sizeof got - strlen(got), "%s%c%d.%d", i ? " " : "", ops[i].kind == PIPE_F ? 'F' : 'B', ops[i].mb, ops[i].chunk);
    const char *want = "F0.0 F1.0 F0.1 F1.1 F2.0 B0.1 F3.0 B1.1 F2.1 B0.0 F3.1 B1.0 B2.1 B3.1 B2.0 B3.0";
    snprintf(detail, sizeof detail, "got %s (warm-up %d)", got, W);
    check("S 2, V 2, m 4, stage 0: Megatron's order (warm-up 4 = 2(S-1-0) + (V-1)S)", ok && W == 4 && !strcmp(got, want), detail);

    // that order's activation bytes, chunk 0 keeping 1 and chunk 1 keeping 10 a micro-batch:
    // 22 after the warm-up, 23 after F2.0; the per-chunk maxima (4 and 2) would sum to 24
    const double tf[4] = {1, 1, 1, 1}, tb[4] = {2, 2, 2, 2}, bytes[4] = {1, 10, 1, 10};
    const PipeCost pc = {tf, tb, 0, bytes};
    ok = pipe_simulate(2, 2, 4, false, &pc, &s1) == MOE_OK;
    snprintf(detail, sizeof detail, "stage 0 peak %g bytes, per chunk at most %d and %d", s1.peak_bytes[0], s1.at[0][0], s1.at[0][1]);
    check("S 2, V 2, m 4, stage 0: the peak activation bytes held at once (23), not the chunks' maxima summed (24)",
          ok && s1.peak_bytes[0] == 23 && s1.at[0][0] * 1 + s1.at[0][1] * 10 == 24, detail);

    int rc = pipe_list(4, 2, 0, 6, false, ops, NULL, &W);
    snprintf(detail, sizeof detail, "rc %d: %s", rc, moe_errmsg());
    check("V > 1 with m not a multiple of S is refused in one line", rc == MOE_FAIL && strstr(moe_errmsg(), "multiple of --pp 4") &&
          !strchr(moe_errmsg(), '\n'), detail);
    staged_blobs();
    chunk_passes();
    pair_passes();
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail != 0;
}
