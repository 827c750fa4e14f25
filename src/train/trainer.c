#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "../base/base.h"
#include "../io/fileio.h"
#include "../kernels/gemm.h"
#include "train.h"

static int example_targets(const Dataset *d, int id) { return d->ex[id].len - d->ex[id].n_prompt; }

int train_accumulate(Model *m, Acts *a, Batch *b, const Dataset *d, const int *ids, int count,
                     int micro_batch, StepLoss *out) {
    memset(out, 0, sizeof *out);
    long targets = 0;
    for (int i = 0; i < count; i++) targets += example_targets(d, ids[i]);
    if (targets == 0) MOE_ERR("%s: a batch without any target token", d->path);
    int n_micro = (count + micro_batch - 1) / micro_batch;
    const MoeConfig *c = &m->cfg;
    ForwardOpts fo = {.train = true, .ce_scale = (float)(1.0 / targets)};
    // balance units: micro-batches ("batch") or sequences ("sequence") of the global batch
    fo.aux_scale = c->aux_scope == MOE_AUX_SEQUENCE ? 1.0f / count : 1.0f / n_micro;
    memset(m->grads, 0, sizeof(float) * m->n_params);
    memset(a->load, 0, sizeof(long) * c->num_hidden_layers * imax(c->n_routed_experts, 1));
    a->dropped = a->assigned = 0;
    double ce = 0, aux = 0;
    for (int s = 0; s < count; s += micro_batch) {
        int nb = imin(micro_batch, count - s);
        batch_fill(b, d, ids + s, nb);
        ForwardOut fout;
        MOE_TRY(model_forward(m, a, b, &fo, &fout));
        model_backward(m, a, b, &fo);
        ce += fout.ce_sum;
        aux += fout.aux;
        out->tokens += b->N;
    }
    out->targets = targets;
    out->ce = ce / targets;
    out->aux = aux;
    out->loss = out->ce + out->aux;
    return MOE_OK;
}

// ---------------------------------------------------------------- the training loop

static bool given(const char *flags, const char *name) {
    char key[64];
    snprintf(key, sizeof key, " %s ", name);
    return flags && strstr(flags, key) != NULL;
}

// keep the lines of log.jsonl whose step <= last (a resume continues after `last`)
static int log_carry(const char *from_dir, const char *to_path, long last) {
    char src[4096];
    path_join(src, sizeof src, from_dir, "log.jsonl");
    size_t len = 0;
    char *text = path_exists(src) ? file_read_all(src, &len) : NULL;
    char *keep = malloc(len + 1);
    size_t k = 0;
    for (char *p = text; p && p < text + len;) {
        char *nl = memchr(p, '\n', text + len - p);
        if (!nl) break;   // a torn last line from a crash is dropped
        long step = -1;
        char *s = strstr(p, "\"step\":");
        if (s && s < nl) step = strtol(s + 7, NULL, 10);
        if (step >= 1 && step <= last) { memcpy(keep + k, p, nl + 1 - p); k += nl + 1 - p; }
        p = nl + 1;
    }
    int rc = file_write_atomic(to_path, keep, k);
    free(keep); free(text);
    return rc;
}

static void fmt_eta(char *buf, size_t cap, double s) {
    if (s < 0 || !isfinite(s)) { snprintf(buf, cap, "?"); return; }
    int t = (int)(s + 0.5);
    if (t >= 3600) snprintf(buf, cap, "%dh%02dm", t / 3600, t / 60 % 60);
    else snprintf(buf, cap, "%dm%02ds", t / 60, t % 60);
}

static int load_data(Dataset *d, const char *list, DataFormat fmt, int seq) {
    char buf[8192];
    snprintf(buf, sizeof buf, "%s", list);
    Dataset parts[32];
    int n = 0;
    for (char *p = strtok(buf, ","); p; p = strtok(NULL, ",")) {
        if (n == 32) MOE_ERR("--data: at most 32 files");
        if (dataset_load(&parts[n], p, fmt, seq, 0) != MOE_OK) {
            for (int i = 0; i < n; i++) dataset_free(&parts[i]);
            return MOE_FAIL;
        }
        n++;
    }
    if (n == 0) MOE_ERR("--data: no file given");
    return dataset_concat(d, parts, n);
}

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

int train_run(const TrainArgs *ar, TrainConfig *tc, const char *flags) {
    // --- everything is checked before anything is written
    char rout[4096] = "", rres[4096] = "";
    bool same_dir = false;
    if (ar->resume) {
        if (!realpath(ar->resume, rres)) MOE_ERR("%s: checkpoint directory does not exist", ar->resume);
        same_dir = realpath(ar->out, rout) && !strcmp(rout, rres);
    }
    if (!same_dir && ckpt_exists(ar->out)) {
        if (ar->resume) MOE_ERR("%s: already holds a checkpoint; choose an empty --out or --out %s", ar->out, ar->resume);
        MOE_ERR("%s: already holds a checkpoint; continue it with --resume %s, or choose another --out", ar->out, ar->out);
    }
    Model m;
    AdamW opt;
    TrainProgress pr = {0};
    if (ar->resume) {
        MOE_TRY(ckpt_load_model(ar->resume, &m, true));
        adamw_alloc(&opt, m.n_params);
        TrainConfig saved = *tc;
        if (ckpt_load_state(ar->resume, &m, &opt, &saved, &pr) != MOE_OK) { adamw_free(&opt); model_free(&m); return MOE_FAIL; }
        // what the command line says wins; the rest continues as saved
#define KEEP(flag, field) if (!given(flags, flag)) tc->field = saved.field
        KEEP("--lr", opt.lr); KEEP("--min-lr", opt.min_lr); KEEP("--weight-decay", opt.weight_decay);
        KEEP("--beta1", opt.beta1); KEEP("--beta2", opt.beta2); KEEP("--clip", opt.clip);
        KEEP("--warmup", opt.warmup); KEEP("--decay-steps", opt.decay_steps); KEEP("--batch", batch);
        KEEP("--micro-batch", micro_batch); KEEP("--seq", seq); KEEP("--seed", seed);
        KEEP("--ckpt-every", ckpt_every); KEEP("--format", format);
        tc->opt.eps = saved.opt.eps;
        if (!given(flags, "--shuffle")) tc->shuffle = saved.shuffle;
#undef KEEP
        if (!given(flags, "--micro-batch") && given(flags, "--batch")) tc->micro_batch = tc->batch;
    } else {
        MoeConfig c;
        MOE_TRY(config_load(&c, ar->model_cfg));
        model_build(&m, &c, true);
        model_init_weights(&m, tc->seed);
        adamw_alloc(&opt, m.n_params);
    }
    if (tc->micro_batch > tc->batch) tc->micro_batch = tc->batch;
    if (tc->seq == 0) tc->seq = imin(256, m.cfg.max_position_embeddings);   // --seq not given
    int rc = train_check_config(tc);
    if (rc == MOE_OK && tc->seq > m.cfg.max_position_embeddings)
        { moe_seterr("--seq %d exceeds max_position_embeddings %d of the model", tc->seq, m.cfg.max_position_embeddings); rc = MOE_FAIL; }
    if (rc == MOE_OK && ar->resume && pr.step >= tc->steps)
        { moe_seterr("%s: already trained %ld steps; ask for more with --steps", ar->resume, pr.step); rc = MOE_FAIL; }
    Dataset d = {0};
    if (rc == MOE_OK) rc = load_data(&d, ar->data, tc->format, tc->seq);
    if (rc != MOE_OK) { adamw_free(&opt); model_free(&m); return MOE_FAIL; }
    if (d.skipped && !tc->quiet)
        fprintf(stderr, "moe train: skipped %d examples longer than --seq %d\n", d.skipped, tc->seq);
    Dataset evd = {0};
    if (ar->eval_data && dataset_load(&evd, ar->eval_data, tc->format, m.cfg.max_position_embeddings - 1, tc->eval_limit) != MOE_OK) {
        dataset_free(&d); adamw_free(&opt); model_free(&m);
        return MOE_FAIL;
    }

    // --- set up the output
    const MoeConfig *c = &m.cfg;
    char log_path[4096];
    path_join(log_path, sizeof log_path, ar->out, "log.jsonl");
    rc = dir_ensure(ar->out);
    if (rc == MOE_OK) rc = ar->resume ? log_carry(ar->resume, log_path, pr.step) : file_write_atomic(log_path, "", 0);
    FILE *log = rc == MOE_OK ? fopen(log_path, "a") : NULL;
    if (rc == MOE_OK && !log) { moe_seterr("%s: cannot open for appending", log_path); rc = MOE_FAIL; }
    if (rc != MOE_OK) { dataset_free(&d); dataset_free(&evd); adamw_free(&opt); model_free(&m); return MOE_FAIL; }

    Acts a;
    acts_alloc(&a, &m, tc->micro_batch * tc->seq, tc->acts_mode ? tc->acts_mode : ACTS_TRAIN);
    Batch b;
    batch_alloc(&b, tc->micro_batch * tc->seq, tc->micro_batch);
    DataOrder order;
    order_init(&order, d.n, tc->seed, tc->shuffle);
    int *ids = MOE_NEW(int, tc->batch);
    const int L = c->num_hidden_layers, E = c->n_routed_experts;
    long *run_load = MOE_NEW(long, (size_t)L * imax(E, 1));
    long run_dropped = 0, run_assigned = 0;
    double peak = kernels_measure_peak_gflops(0.3) * 1e9;
    double flops_tok = config_flops_per_token(c, tc->seq);
    bool tty = isatty(2);
    if (!tc->quiet)
        fprintf(stderr, "moe train: %.2fM params (%.2fM active), %d examples, batch %d x seq %d, %d threads, sgemm peak %.1f GFLOP/s\n",
                config_total_params(c) / 1e6, config_active_params(c) / 1e6, d.n, tc->batch, tc->seq,
                kernels_threads(), peak / 1e9);
    double t_start = time_now();
    long start_step = pr.step;
    double t_print = 0;   // not a terminal: a line every 10 s instead of a live line
    StepLoss sl = {0};
    while (pr.step < tc->steps) {
        double t0 = time_now();
        for (int i = 0; i < tc->batch; i++) ids[i] = order_example(&order, pr.cursor + i);
        rc = train_accumulate(&m, &a, &b, &d, ids, tc->batch, tc->micro_batch, &sl);
        if (rc) break;
        double gnorm = grad_norm(m.grads, m.n_params);
        if (!isfinite(gnorm)) { moe_seterr("step %ld: gradient norm is not finite (loss %g); lower --lr", pr.step + 1, sl.loss); rc = MOE_FAIL; break; }
        float lr = lr_at(&tc->opt, pr.step + 1);
        adamw_step(&opt, &m, &tc->opt, lr, grad_clip_scale(gnorm, tc->opt.clip));
        if (c->bias_update_speed > 0)
            for (int l = 0; l < L; l++)
                if (config_layer_is_moe(c, l)) moe_bias_update(m.bias + (size_t)l * E, a.load + (size_t)l * E, E, c->bias_update_speed);
        pr.step++;
        pr.cursor += tc->batch;
        double dt = time_now() - t0;
        double tps = sl.tokens / dt, mfu = flops_tok * tps / peak;
        // --- log line
        fprintf(log, "{\"step\":%ld,\"loss\":%.9g,\"ce\":%.9g,\"aux\":%.9g,\"lr\":%.9g,\"grad_norm\":%.9g,"
                     "\"tokens_per_s\":%.1f,\"mfu\":%.5f,\"step_ms\":%.2f,\"tokens\":%ld,\"dropped\":%ld,\"expert_load\":[",
                pr.step, sl.loss, sl.ce, sl.aux, lr, gnorm, tps, mfu, dt * 1e3, sl.tokens, a.dropped);
        double worst = 0;
        int first = 1;
        for (int l = 0; l < L; l++) {
            if (!config_layer_is_moe(c, l)) continue;
            fprintf(log, first ? "[" : ",[");
            first = 0;
            long mx = 0, sum = 0;
            for (int e = 0; e < E; e++) {
                long v = a.load[(size_t)l * E + e];
                fprintf(log, e ? ",%ld" : "%ld", v);
                mx = v > mx ? v : mx; sum += v;
                run_load[(size_t)l * E + e] += v;
            }
            fprintf(log, "]");
            if (sum > 0 && mx * (double)E / sum > worst) worst = mx * (double)E / sum;
        }
        fprintf(log, "]");
        double eval_ce = -1;
        if (ar->eval_data && (pr.step % tc->eval_every == 0 || pr.step == tc->steps)) {
            long et;
            rc = eval_loss(&m, &evd, tc->eval_limit, 64, &eval_ce, &et);
            if (rc) break;
            fprintf(log, ",\"eval_loss\":%.9g", eval_ce);
        }
        fprintf(log, "}\n");
        fflush(log);
        run_dropped += a.dropped; run_assigned += a.assigned;
        // --- progress line
        double elapsed = time_now() - t_start;
        double per_step = elapsed / (pr.step - start_step);
        double eta = per_step * (tc->steps - pr.step);
        if (tc->time_budget > 0 && tc->time_budget - elapsed < eta) eta = tc->time_budget - elapsed;
        bool stop_time = tc->time_budget > 0 && elapsed + per_step > tc->time_budget;
        if (!tc->quiet && (tty || elapsed - t_print >= 10 || pr.step == start_step + 1 || pr.step == tc->steps || stop_time)) {
            t_print = elapsed;
            char etas[32];
            fmt_eta(etas, sizeof etas, eta);
            char evs[32] = "";
            if (eval_ce >= 0) snprintf(evs, sizeof evs, " | eval %.4f", eval_ce);
            fprintf(stderr, "%sstep %ld/%d | loss %.4f (ce %.4f aux %.4f)%s | lr %.2e | %.0f tok/s | MFU %.1f%% | load max/mean %.2f | ETA %s%s",
                    tty ? "\r\033[K" : "", pr.step, tc->steps, sl.loss, sl.ce, sl.aux, evs, lr, tps, 100 * mfu, worst, etas,
                    tty ? "" : "\n");
        }
        // --- checkpoints
        bool last = pr.step == tc->steps || stop_time;
        if (last || (tc->ckpt_every > 0 && pr.step % tc->ckpt_every == 0)) {
            pr.ckpt_id = ((unsigned long long)time(NULL) << 20) ^ (unsigned long long)pr.step * 2654435761ULL ^ (unsigned long long)getpid();
            rc = ckpt_save(ar->out, &m, &opt, tc, &pr, false);
            if (rc) break;
        }
        if (stop_time) break;
    }
    if (!tc->quiet && tty) fprintf(stderr, "\n");
    if (rc == MOE_OK && !tc->quiet) {
        double el = time_now() - t_start;
        fprintf(stderr, "moe train: %ld steps in %.1f s, final loss %.4f, checkpoint %s\n", pr.step - start_step, el, sl.loss, ar->out);
        for (int l = 0; l < L; l++) {
            if (!config_layer_is_moe(c, l)) continue;
            long mx = 0, sum = 0;
            for (int e = 0; e < E; e++) { long v = run_load[(size_t)l * E + e]; mx = v > mx ? v : mx; sum += v; }
            double mean = (double)sum / E;
            fprintf(stderr, "  layer %d experts: max/mean %.3f  MaxVio %.3f  drop rate %.4f\n", l,
                    mean > 0 ? mx / mean : 0, mean > 0 ? (mx - mean) / mean : 0,
                    run_assigned ? (double)run_dropped / run_assigned : 0);
        }
    }
    fclose(log);
    moe_free(run_load); moe_free(ids); order_free(&order); batch_free(&b); acts_free(&a);
    dataset_free(&d); dataset_free(&evd); adamw_free(&opt); model_free(&m);
    return rc;
}
