// The training loop: set up a run (new or resumed, on one process or several), then step,
// log, evaluate and checkpoint until the steps or the time budget run out.
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "../base/base.h"
#include "../base/fileio.h"
#include "../infer/infer.h"
#include "../kernels/gemm.h"
#include "../parallel/parallel.h"
#include "../parallel/pipeline.h"
#include "train.h"

int train_check_config(const TrainConfig *tc) {
    if (tc->batch <= 0) MOE_ERR("--batch must be positive, got %d", tc->batch);
    if (tc->micro_batch <= 0) MOE_ERR("--micro-batch must be positive, got %d", tc->micro_batch);
    if (tc->seq <= 0) MOE_ERR("--seq must be positive, got %d", tc->seq);
    if (tc->steps <= 0) MOE_ERR("--steps must be positive, got %d", tc->steps);
    if (!(tc->opt.lr > 0)) MOE_ERR("--lr must be positive, got %g", tc->opt.lr);
    if (tc->opt.warmup < 0 || tc->opt.decay_steps < 0) MOE_ERR("--warmup and --decay-steps must be >= 0");
    if (tc->ckpt_every < 0) MOE_ERR("--ckpt-every must be >= 0");
    if (tc->time_budget < 0) MOE_ERR("--time-budget must be >= 0");
    return MOE_OK;
}

static int load_data(Dataset *d, const char *list, DataFormat fmt, int seq, const Tokenizer *tk) {
    char buf[8192];
    snprintf(buf, sizeof buf, "%s", list);
    Dataset parts[32];
    int n = 0;
    for (char *p = strtok(buf, ","); p; p = strtok(NULL, ",")) {
        if (n == 32) MOE_ERR("--data: at most 32 files");
        if (dataset_load_tok(&parts[n], p, fmt, seq, 0, tk) != MOE_OK) {
            for (int i = 0; i < n; i++) dataset_free(&parts[i]);
            return MOE_FAIL;
        }
        n++;
    }
    if (n == 0) MOE_ERR("--data: no file given");
    return dataset_concat(d, parts, n);
}

// Everything a run holds; freed by run_free whatever was set up.
typedef struct {
    Model m;
    ExpertShard shard;            // the experts this rank holds (zero without --ep: all of them)
    AdamW opt;
    TrainProgress pr;
    Dataset d, evd;
    Tokenizer tk;                 // the model directory's tokenizer.json, else bytes
    size_t *zoff;                 // --zero 1 on several ranks: the shares of the blob
    bool overlap, halves;         // gradient sums during the backward pass; halves under EP
    int local_batch;              // this rank's examples of a step
    Acts a[2];                    // (pipeline: a[0] only the step's load statistics)
    Batch b[2];
    LayerShard ls;                // pipeline: this stage's layers (S 1: all)
    Pipe pipe;
    DataOrder order;
    int *ids;
    MoePlacement places[2];       // dynamic placement: the current one and the next
    int cur_place;
    double *win_load;             // expert loads over the current placement window
    PlaceCost pcost;
    double peak, flops_tok;       // the job's sgemm peak (FLOP/s) and FLOPs a token
    TrainLog log;
    bool allocated;
} Run;

static void run_free(Run *R) {
    if (R->allocated && R->ls.S > 1) {
        par_pipe_free(&R->pipe);
        moe_free(R->a[0].load); moe_free(R->a[0].drop_l); moe_free(R->a[0].rows_l);
        order_free(&R->order);
    } else if (R->allocated) {
        for (int h = 0; h < (R->halves ? 2 : 1); h++) { acts_free(&R->a[h]); batch_free(&R->b[h]); }
        order_free(&R->order);
    }
    if (R->cur_place >= 0) moe_placement_free(&R->places[R->cur_place]);
    trainlog_close(&R->log);
    moe_free(R->ids); moe_free(R->win_load); moe_free(R->zoff); moe_free(R->pr.slots);
    dataset_free(&R->d); dataset_free(&R->evd);
    tokenizer_free(&R->tk);
    adamw_free(&R->opt);
    if (R->m.tensors) model_free(&R->m);
}

// the model and optimizer: a checkpoint's (its settings merged with the command line's)
// or a fresh initialisation; under --ep this rank's experts only
static int run_model(Run *R, const TrainArgs *ar, TrainConfig *tc) {
    const DistInfo *di = dist_info();
    MoeConfig c0;
    char cp[4096];
    const char *from = ar->resume ? ar->resume : ar->init_from;   // a checkpoint's config
    if (from) {
        path_join(cp, sizeof cp, from, "config.json");
        MOE_TRY(ckpt_recover(from));
        if (!path_exists(cp)) MOE_ERR("%s: missing config.json (not a checkpoint directory?)", from);
    }
    MOE_TRY(config_load(&c0, from ? cp : ar->model_cfg));
    const int ep = tc->ep;
    if (ep > 1 && (c0.n_routed_experts == 0 || c0.n_routed_experts % ep))
        MOE_ERR("--ep %d must divide the model's n_routed_experts %d", ep, c0.n_routed_experts);
    if (ep > 1) {
        const int ne = c0.n_routed_experts / ep;
        R->shard = (ExpertShard){di->ep_rank * ne, ne, NULL, di->ep_rank, &dist_info()->moe};
    }
    R->ls = (LayerShard){tc->pp, tc->vpp, di->stage, {0}};
    if (tc->n_pp_layers && tc->pp == 1) MOE_ERR("--pp-layers needs pipeline stages (--pp)");
    if (tc->pp > 1) MOE_TRY(layer_cuts(&c0, tc->pp, tc->vpp, tc->n_pp_layers ? tc->pp_layers : NULL, tc->n_pp_layers, R->ls.cut));
    const LayerShard *ls = tc->pp > 1 ? &R->ls : NULL;
    if (!ar->resume) {
        if (ar->init_from) MOE_TRY(ckpt_load_model_staged(ar->init_from, &R->m, true, &R->shard, ls));
        else {
            model_build_staged(&R->m, &c0, true, &R->shard, ls);   // (without --ep: the zero shard, every expert)
            model_init_weights(&R->m, tc->seed);
        }
        if (!(tc->zero && di->ssize > 1)) adamw_alloc(&R->opt, R->m.n_params);   // (--zero 1: a share, later)
    } else {
        MOE_TRY(ckpt_load_model_staged(ar->resume, &R->m, true, &R->shard, ls));
        adamw_alloc(&R->opt, R->m.n_params);
        char *js;
        MOE_TRY(ckpt_load_state(ar->resume, &R->m, R->opt.m, R->opt.v, &js));
        TrainConfig saved = *tc;
        path_join(cp, sizeof cp, ar->resume, "train_state.safetensors");
        int rc = train_state_read(js, cp, &R->m.cfg, &saved, &R->pr, &R->opt.t);
        moe_free(js);
        MOE_TRY(rc);
        train_resume_merge(tc, &saved);
    }
    layer_shard_mark(&R->m, ls);
    return MOE_OK;
}

// the settings against the model and the ranks (after a resume's merge)
static int run_check(const Run *R, const TrainArgs *ar, TrainConfig *tc) {
    const DistInfo *di = dist_info();
    const MoeConfig *c = &R->m.cfg;
    if (tc->micro_batch > tc->batch) tc->micro_batch = tc->batch;
    if (tc->seq == 0) tc->seq = imin(256, c->max_position_embeddings);   // --seq not given
    MOE_TRY(train_check_config(tc));
    if (tc->pp > 1) {
        if (tc->batch % di->ssize)
            MOE_ERR("--batch %d must be a multiple of the %d ranks of a pipeline stage (each takes batch / (P/S) examples)", tc->batch, di->ssize);
        if (tc->replace_every > 0) MOE_ERR("--replace-every does not work with --pp yet");
        const int local = tc->batch / di->ssize, mb = imin(tc->micro_batch, local), m = (local + mb - 1) / mb;
        if (tc->vpp > 1 && m % tc->pp)
            MOE_ERR("--vpp %d needs the micro-batches a step (%d: %d examples a rank in micro-batches of %d) to be a multiple of --pp %d",
                    tc->vpp, m, local, mb, tc->pp);
    } else if (tc->batch % di->size) MOE_ERR("--batch %d must be a multiple of the %d ranks (each takes batch / P examples)", tc->batch, di->size);
    if (tc->replace_every > 0 && tc->ep == 1) MOE_ERR("--replace-every needs expert parallelism (--ep > 1)");
    if (tc->replace_every > 0 && (tc->redundant > c->n_routed_experts || (c->n_routed_experts + tc->redundant) % tc->ep))
        MOE_ERR("--redundant-experts %d: the %d experts and the redundant slots must split evenly over --ep %d (at most %d redundant)",
                tc->redundant, c->n_routed_experts, tc->ep, c->n_routed_experts);
    if (tc->micro_batch > tc->batch / di->ssize) tc->micro_batch = tc->batch / di->ssize;
    if (tc->seq > c->max_position_embeddings) MOE_ERR("--seq %d exceeds max_position_embeddings %d of the model", tc->seq, c->max_position_embeddings);
    if (ar->resume && R->pr.step >= tc->steps) MOE_ERR("%s: already trained %ld steps; ask for more with --steps", ar->resume, R->pr.step);
    return MOE_OK;
}

// The tokenizer of the checkpoint resumed, or of the folder holding --model's config.json:
// its tokenizer.json when there is one (copied into --out, so that every checkpoint of the
// run carries it, with tokenizer_config.json), else the byte tokenizer.
static int run_tokenizer(Run *R, const TrainArgs *ar) {
    char dir[4096];
    const char *ck = ar->resume ? ar->resume : ar->init_from;
    snprintf(dir, sizeof dir, "%s", ck ? ck : ar->model_cfg);
    if (!ck) { char *sl = strrchr(dir, '/'); if (sl) *sl = 0; else snprintf(dir, sizeof dir, "."); }
    MOE_TRY(tokenizer_for_dir(&R->tk, dir, R->m.cfg.vocab_size));
    if (R->tk.kind != TOKENIZER_BPE || dist_info()->rank != 0) return MOE_OK;
    MOE_TRY(dir_ensure(ar->out));
    return tokenizer_copy_files(dir, ar->out);
}

// data, the optimizer's share, buffers, the log
static int run_alloc(Run *R, const TrainArgs *ar, const TrainConfig *tc) {
    const DistInfo *di = dist_info();
    MOE_TRY(run_tokenizer(R, ar));
    MOE_TRY(load_data(&R->d, ar->data, tc->format, tc->seq, &R->tk));
    if (R->d.skipped && !tc->quiet) fprintf(stderr, "moe train: skipped %d examples longer than --seq %d\n", R->d.skipped, tc->seq);
    if (tc->zero && di->ssize > 1) {   // this rank keeps the moments of its share of the (stage's) blob only
        R->zoff = MOE_NEW(size_t, di->ssize + 1);
        par_zero_parts(R->m.n_params, di->ssize, R->zoff);
        const size_t lo = R->zoff[di->srank], n = R->zoff[di->srank + 1] - lo;
        if (ar->resume) adamw_shard(&R->opt, lo, n);   // cut from the checkpoint's moments
        else adamw_alloc_part(&R->opt, lo, n);
        if (!tc->quiet)
            fprintf(stderr, "moe train: --zero 1: AdamW moments of 1/%d of the parameters a rank (%.1f MB instead of %.1f)\n",
                    di->ssize, 8.0 * R->opt.n / 1e6, 8.0 * R->m.n_params / 1e6);
    }
    if (ar->eval_data)
        MOE_TRY(dataset_load_tok(&R->evd, ar->eval_data, tc->format, R->m.cfg.max_position_embeddings - 1, tc->eval_limit, &R->tk));
    MOE_TRY(trainlog_open(&R->log, &R->m.cfg, ar, tc, R->pr.step, di->rank == 0, tc->ep));
    // --overlap (on by default under MPI): gradient sums start during the backward pass, and
    // with expert parallelism each micro-batch runs as two interleaved halves
    R->overlap = di->size > 1 && tc->overlap != 0 && tc->pp == 1;
    R->halves = R->overlap && tc->ep > 1 && tc->micro_batch >= 2;
    const int mb = R->halves ? (tc->micro_batch + 1) / 2 : tc->micro_batch;
    const int mode = (tc->acts_mode ? tc->acts_mode : ACTS_TRAIN) | (R->shard.comm ? ACTS_EP : 0);
    if (tc->pp > 1) {   // the stage's chunks' activations; a[0] holds the step's statistics
        const int local = tc->batch / di->ssize;
        // under expert parallelism with --overlap on, each steady forward and backward run as a
        // pair (SCHED_PAIR), one micro-batch's expert exchanges hidden by another's compute
        MOE_TRY(par_pipe_alloc(&R->pipe, &R->m, &R->ls, (local + mb - 1) / mb, mb * tc->seq, mb, mode, tc->overlap != 0,
                               tc->overlap != 0 && tc->ep > 1));
        const MoeConfig *c = &R->m.cfg;
        R->a[0].load = MOE_NEW(long, (size_t)config_n_layers(c) * imax(c->n_routed_experts, 1));
        R->a[0].drop_l = MOE_NEW(long, config_n_layers(c));
        R->a[0].rows_l = MOE_NEW(long, config_n_layers(c));
    } else
        for (int h = 0; h < (R->halves ? 2 : 1); h++) {
            acts_alloc(&R->a[h], &R->m, mb * tc->seq, mode);
            batch_alloc(&R->b[h], mb * tc->seq, mb);
        }
    if (tc->n_weights) {   // a weighted mixture of the --data files
        if (tc->n_weights != R->d.n_files)
            MOE_ERR("--data-weights gives %d weights for %d --data files", tc->n_weights, R->d.n_files);
        order_init_mix(&R->order, &R->d, tc->data_weights, tc->seed, tc->shuffle);
    } else {
        order_init(&R->order, R->d.n, tc->seed, tc->shuffle);
    }
    R->allocated = true;
    R->local_batch = tc->batch / di->ssize;
    R->ids = MOE_NEW(int, tc->batch);
    const MoeConfig *c = &R->m.cfg;
    R->win_load = MOE_NEW(double, (size_t)config_n_layers(c) * imax(c->n_routed_experts, 1));
    R->peak = kernels_measure_peak_gflops(0.3) * 1e9;
    MOE_TRY(dist_sum_f64(&R->peak, 1, DIST_WORLD));   // the job's peak: every rank's, measured side by side
    R->flops_tok = config_flops_per_token(c, tc->seq);
    R->pcost = (PlaceCost){18.0 * c->hidden_size * c->moe_intermediate_size / (R->peak / di->size), 0, 1, tc->replace_always};
    return MOE_OK;
}

// a resume with the same --ep and slots takes up the checkpoint's placement at once
static int take_up_placement(Run *R, const TrainConfig *tc) {
    const MoeConfig *c = &R->m.cfg;
    const int L = config_n_layers(c), E = c->n_routed_experts, S = (E + tc->redundant) / imax(tc->ep, 1);
    TrainProgress *pr = &R->pr;
    int rc = MOE_OK;
    if (tc->replace_every > 0 && pr->slots_ep == tc->ep && pr->slots_S == S) {
        moe_placement_alloc(&R->places[0], L, E, tc->ep, tc->redundant);
        memcpy(R->places[0].slot_expert, pr->slots, sizeof(int) * (size_t)L * tc->ep * S);
        int moved = 0;
        for (int l = 0; l < L && rc == MOE_OK; l++)
            if (config_layer_is_moe(c, l)) { rc = moe_placement_index(&R->places[0], l); moved += par_layer_moves(c, &R->shard, &R->places[0], l); }
        if (rc == MOE_OK) rc = par_migrate(&R->m, &R->shard, &R->opt, &R->places[0]);
        if (rc == MOE_OK) {
            R->cur_place = 0;
            if (!tc->quiet) fprintf(stderr, "moe train: the checkpoint's expert placement taken up (%d experts moved)\n", moved);
        } else moe_placement_free(&R->places[0]);
    } else if (!tc->quiet)
        fprintf(stderr, "moe train: the checkpoint's expert placement (--ep %d, %d slots a rank) is not taken up %s; "
                        "experts start in order\n", pr->slots_ep, pr->slots_S,
                tc->replace_every == 0 ? "without --replace-every" : "with other --ep or --redundant-experts");
    moe_free(pr->slots);
    pr->slots = NULL;
    return rc;
}

// every --replace-every steps: place the experts again from the window's loads
static int replace_experts(Run *R, const TrainConfig *tc, int *moved) {
    const MoeConfig *c = &R->m.cfg;
    const int nx = R->cur_place == 0 ? 1 : 0;
    double before, after;
    R->pcost.windows = fmax(1.0, (double)(tc->steps - R->pr.step) / tc->replace_every);
    MOE_TRY(par_place_again(&R->m, &R->shard, &R->opt, R->win_load, tc->redundant, &R->pcost, &R->places[nx], moved, &before, &after));
    if (R->cur_place >= 0) moe_placement_free(&R->places[R->cur_place]);
    R->cur_place = nx;
    memset(R->win_load, 0, sizeof(double) * (size_t)config_n_layers(c) * c->n_routed_experts);
    if (!tc->quiet)
        fprintf(stderr, "%smoe train: step %ld: experts placed again (%d slots a rank, %d redundant, %d experts moved): "
                        "worst predicted rank load %.3f -> %.3f of the mean\n",
                R->log.tty ? "\r\033[K" : "", R->pr.step, R->places[nx].S, tc->redundant, *moved, before, after);
    return MOE_OK;
}

// one optimizer step: the gradient of the global batch, the update, the balance biases,
// and a new expert placement when one is due; f gets the step's figures
static int train_step(Run *R, const TrainConfig *tc, StepFigures *f) {
    const DistInfo *di = dist_info();
    Model *m = &R->m;
    const MoeConfig *c = &m->cfg;
    const int L = config_n_layers(c), E = c->n_routed_experts;
    const double t0 = time_now();
    for (int i = 0; i < tc->batch; i++) R->ids[i] = order_example(&R->order, R->pr.cursor + i);
    const double comm0 = di->ms + di->moe.ms, exposed0 = di->exposed_ms + di->moe.exposed_ms;
    const double dp_exposed0 = di->exposed_ms, ep_exposed0 = di->moe.exposed_ms;
    Acts *as[2] = {&R->a[0], R->halves ? &R->a[1] : NULL};
    Batch *bs[2] = {&R->b[0], R->halves ? &R->b[1] : NULL};
    memset(f, 0, sizeof *f);
    if (R->ls.S > 1) {
        MOE_TRY(train_accumulate_pipe(m, &R->shard, &R->pipe, &R->a[0], &R->d, R->ids + di->srank * R->local_batch, R->local_batch,
                                      tc->micro_batch, &f->sl));
    } else {
        MOE_TRY(train_accumulate_ex(m, &R->shard, as, bs, &R->d, R->ids + di->rank * R->local_batch, R->local_batch, tc->micro_batch,
                                    R->overlap, R->zoff, &f->sl));
    }
    MOE_TRY(par_grad_norm(m, &R->shard, R->zoff, &f->gnorm));
    if (!isfinite(f->gnorm)) MOE_ERR("step %ld: gradient norm is not finite (loss %g); lower --lr", R->pr.step + 1, f->sl.loss);
    f->lr = lr_at(&tc->opt, R->pr.step + 1);
    adamw_step(&R->opt, m, &tc->opt, f->lr, grad_clip_scale(f->gnorm, tc->opt.clip));
    if (R->zoff) MOE_TRY(dist_allgather_f32(m->params, R->zoff));   // every rank's updated share to all
    const long *load = R->a[0].load;
    if (c->bias_update_speed > 0)
        for (int l = 0; l < L; l++)
            if (config_layer_is_moe(c, l)) moe_bias_update(m->bias + (size_t)l * E, load + (size_t)l * E, E, c->bias_update_speed);
    R->pr.step++;
    R->pr.cursor += tc->batch;
    for (size_t i = 0; i < (size_t)L * E; i++) R->win_load[i] += load[i];
    f->step = R->pr.step;
    f->moved = -1;
    if (tc->replace_every > 0 && R->pr.step % tc->replace_every == 0) MOE_TRY(replace_experts(R, tc, &f->moved));
    // the step's slowest rank, as the job sees it; communication in flight, and of it the time
    // waited for the expert-parallel exchanges and for the gradient sums and other collectives
    double v[8] = {time_now() - t0, di->ms + di->moe.ms - comm0, di->exposed_ms + di->moe.exposed_ms - exposed0,
                   di->moe.exposed_ms - ep_exposed0, di->exposed_ms - dp_exposed0, R->pipe.bubble_ms, R->pipe.exposed_ms,
                   R->pipe.transit_ms};
    if (di->size > 1) MOE_TRY(dist_max_f64(v, 8, DIST_WORLD));
    f->bubble_ms = R->ls.S > 1 ? v[5] : -1;
    f->pp_exposed_ms = v[6];
    f->pp_transit_ms = v[7];
    f->dt = v[0];
    f->comm_ms = di->size > 1 ? v[1] : -1;
    f->exposed_ms = v[2]; f->ep_exposed = v[3]; f->dp_exposed = v[4];
    f->tps = f->sl.tokens / f->dt;
    f->mfu = R->flops_tok * f->tps / R->peak;
    return MOE_OK;
}

static int save(Run *R, const TrainArgs *ar, const TrainConfig *tc) {
    char *js = train_state_json(tc, &R->pr, R->opt.t, R->shard.place);
    CkptState st = {.json = js, .step = R->pr.step};
    int rc = par_save_checkpoint_staged(ar->out, &R->m, &R->shard, &R->ls, &R->opt, R->zoff, &st);
    free(js);
    return rc;
}

static void banner(const Run *R, const TrainConfig *tc) {
    const DistInfo *di = dist_info();
    const MoeConfig *c = &R->m.cfg;
    if (tc->quiet) return;
    fprintf(stderr, "moe train: %.2fM params (%.2fM active), %d examples, batch %d x seq %d, %d threads, sgemm peak %.1f GFLOP/s\n",
            config_total_params(c) / 1e6, config_active_params(c) / 1e6, R->d.n, tc->batch, tc->seq, kernels_threads(), R->peak / 1e9);
    if (di->pp > 1)
        fprintf(stderr, "moe train: %d ranks: %d pipeline stages (%d chunks a stage, interleaved 1F1B over %d micro-batches) x %d ranks a "
                        "stage (%d data-parallel x expert parallelism %d)\n", di->size, di->pp, tc->vpp, R->pipe.m, di->ssize, di->dp, tc->ep);
    else if (di->size > 1)
        fprintf(stderr, "moe train: %d ranks: %d data-parallel replicas x expert parallelism %d (%d experts per rank), "
                        "EP group on %d host%s, %s all-to-all, overlap %s\n",
                di->size, di->dp, tc->ep, c->n_routed_experts / tc->ep, di->hosts, di->hosts == 1 ? "" : "s",
                di->hier ? "hierarchical" : "flat", tc->overlap ? "on" : "off");
}

// everything is checked before anything is written
static int check_out(const TrainArgs *ar) {
    char rout[4096] = "", rres[4096] = "";
    bool same_dir = false;
    if (ar->resume) {
        if (!realpath(ar->resume, rres)) MOE_ERR("%s: checkpoint directory does not exist", ar->resume);
        same_dir = realpath(ar->out, rout) && !strcmp(rout, rres);
    }
    if (ar->init_from && realpath(ar->init_from, rres) && realpath(ar->out, rout) && !strcmp(rout, rres))
        MOE_ERR("%s: fine-tuning never writes over the checkpoint it starts from; choose another --out", ar->out);
    if (!same_dir && ckpt_exists(ar->out)) {
        if (ar->resume) MOE_ERR("%s: already holds a checkpoint; choose an empty --out or --out %s", ar->out, ar->resume);
        MOE_ERR("%s: already holds a checkpoint; continue it with --resume %s, or choose another --out", ar->out, ar->out);
    }
    return MOE_OK;
}

int train_run(const TrainArgs *ar, TrainConfig *tc) {
    const DistInfo *di = dist_info();
    if (di->rank != 0) tc->quiet = true;
    if (tc->ep <= 0) tc->ep = 1;
    if (tc->pp <= 0) tc->pp = 1;
    if (tc->vpp <= 0) tc->vpp = 1;
    MOE_TRY(dist_setup(tc->ep, tc->pp, (DistA2A)tc->a2a));
    MOE_TRY(check_out(ar));
    Run R = {.cur_place = -1};
    int rc = run_model(&R, ar, tc);
    if (rc == MOE_OK) rc = run_check(&R, ar, tc);
    if (rc == MOE_OK) rc = run_alloc(&R, ar, tc);
    if (rc == MOE_OK) banner(&R, tc);
    if (rc == MOE_OK && R.pr.slots) rc = take_up_placement(&R, tc);
    const double t_start = time_now();
    StepFigures f = {0};
    while (rc == MOE_OK && R.pr.step < tc->steps) {
        if ((rc = train_step(&R, tc, &f))) break;
        f.eval_ce = -1;
        if (ar->eval_data && (R.pr.step % tc->eval_every == 0 || R.pr.step == tc->steps)) {
            long et;
            rc = tc->pp > 1 ? par_pipe_eval(&R.ls, &R.m, &R.shard, &R.evd, tc->eval_limit, 64, &f.eval_ce, &et)
                            : eval_loss(&R.m, &R.shard, &R.evd, tc->eval_limit, 64, &f.eval_ce, &et);
            if (rc) break;
        }
        f.elapsed = time_now() - t_start;
        // rank 0's clock decides, so that every rank stops at the same step
        int stop = tc->time_budget > 0 && f.elapsed + f.elapsed / (R.pr.step - R.log.start_step) > tc->time_budget;
        if ((rc = dist_bcast_int(&stop, 1))) break;
        f.stop_time = stop;
        if ((rc = trainlog_step(&R.log, &R.a[0], &f))) break;
        if ((R.pr.step == tc->steps || stop || (tc->ckpt_every > 0 && R.pr.step % tc->ckpt_every == 0)) &&
            (rc = save(&R, ar, tc)))
            break;
        if (stop) break;
    }
    if (R.allocated) trainlog_summary(&R.log, rc == MOE_OK, R.pr.step, time_now() - t_start, f.sl.loss, ar->out);
    run_free(&R);
    return rc;
}
