// The run's log (one JSON object per step in DIR/log.jsonl), the progress line, and the
// load summary at the end of training.
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "../base/base.h"
#include "../base/fileio.h"
#include "../parallel/parallel.h"
#include "train.h"

enum { LAST = 50 };   // the summary's "last steps" window

int trainlog_open(TrainLog *r, const MoeConfig *c, const TrainArgs *ar, const TrainConfig *tc, long start_step, bool root, int ep) {
    memset(r, 0, sizeof *r);
    const int L = config_n_layers(c);
    r->c = c;
    r->quiet = tc->quiet;
    r->tty = isatty(2);
    r->ep = ep;
    r->steps = tc->steps;
    r->time_budget = tc->time_budget;
    r->start_step = start_step;
    r->bal_sum = MOE_NEW(double, (size_t)L * 3);
    r->bal_last = MOE_NEW(double, (size_t)LAST * L * 3);
    r->run_drop = MOE_NEW(long, L);
    r->ls = MOE_NEW(LoadStats, L > 0 ? L : 1);
    if (!root) return MOE_OK;
    char path[4096];
    path_join(path, sizeof path, ar->out, "log.jsonl");
    MOE_TRY(dir_ensure(ar->out));
    MOE_TRY(ar->resume ? train_log_carry(ar->resume, path, start_step) : file_write_atomic(path, "", 0));
    if (!(r->log = fopen(path, "a"))) MOE_ERR("%s: cannot open for appending", path);
    return MOE_OK;
}

void trainlog_close(TrainLog *r) {
    if (r->log) fclose(r->log);
    moe_free(r->bal_sum); moe_free(r->bal_last); moe_free(r->run_drop); moe_free(r->ls);
    memset(r, 0, sizeof *r);
}

static void fmt_eta(char *buf, size_t cap, double s) {
    if (s < 0 || !isfinite(s)) { snprintf(buf, cap, "?"); return; }
    int t = (int)(s + 0.5);
    if (t >= 3600) snprintf(buf, cap, "%dh%02dm", t / 3600, t / 60 % 60);
    else snprintf(buf, cap, "%dm%02ds", t / 60, t % 60);
}

// per MoE layer, its entries of v[L] as a JSON array
static void json_layers(FILE *f, const char *key, const MoeConfig *c, const double *v, const char *fmt) {
    fprintf(f, ",\"%s\":[", key);
    for (int l = 0, first = 1; l < config_n_layers(c); l++)
        if (config_layer_is_moe(c, l)) { fprintf(f, first ? "" : ","); fprintf(f, fmt, v[l]); first = 0; }
    fprintf(f, "]");
}

static void progress(const TrainLog *r, const Acts *a, const StepFigures *f) {
    const MoeConfig *c = r->c;
    const int L = config_n_layers(c);
    double per_step = f->elapsed / (f->step - r->start_step), eta = per_step * (r->steps - f->step);
    if (r->time_budget > 0 && r->time_budget - f->elapsed < eta) eta = r->time_budget - f->elapsed;
    char etas[32];
    fmt_eta(etas, sizeof etas, eta);
    char evs[32] = "";
    if (f->eval_ce >= 0) snprintf(evs, sizeof evs, " | eval %.4f", f->eval_ce);
    // max/mean load of each MoE layer (the worst one when there are many), drops, IS
    char bal[256] = "";
    int nb = 0, n_moe = config_n_moe_layers(c), worst = -1;
    for (int l = 0; l < L; l++)
        if (config_layer_is_moe(c, l) && (worst < 0 || r->ls[l].max_mean > r->ls[worst].max_mean)) worst = l;
    if (n_moe > 0 && n_moe <= 8) {
        nb += snprintf(bal + nb, sizeof bal - nb, " | load max/mean");
        for (int l = 0; l < L; l++)
            if (config_layer_is_moe(c, l)) nb += snprintf(bal + nb, sizeof bal - nb, " %.2f", r->ls[l].max_mean);
    } else if (n_moe > 0) {
        nb += snprintf(bal + nb, sizeof bal - nb, " | load max/mean %.2f (layer %d)", r->ls[worst].max_mean, worst);
    }
    if (c->capacity_factor > 0 && a->assigned > 0)
        nb += snprintf(bal + nb, sizeof bal - nb, " | drop %.2f%%", 100.0 * a->dropped / a->assigned);
    if (f->bubble_ms >= 0 && f->dt > 0)
        nb += snprintf(bal + nb, sizeof bal - nb, " | bubble %.1f%%", 100.0 * f->bubble_ms / (f->dt * 1e3));
    if (r->ep > 1 && n_moe > 0) {
        double is = 0;
        for (int l = 0; l < L; l++) if (config_layer_is_moe(c, l) && r->ls[l].is > is) is = r->ls[l].is;
        nb += snprintf(bal + nb, sizeof bal - nb, " | IS %.3f", is);
    }
    char mtp[48] = "";
    if (c->num_mtp_layers) snprintf(mtp, sizeof mtp, " mtp %.4f", f->sl.mtp);
    char of[16] = "";
    if (r->steps != TRAIN_STEPS_UNBOUNDED) snprintf(of, sizeof of, "/%d", r->steps);
    fprintf(stderr, "%sstep %ld%s | loss %.4f (ce %.4f aux %.4f%s)%s | lr %.2e | %.0f tok/s | MFU %.1f%%%s | ETA %s%s",
            r->tty ? "\r\033[K" : "", f->step, of, f->sl.loss, f->sl.ce, f->sl.aux, mtp, evs, f->lr, f->tps,
            100 * f->mfu, bal, etas, r->tty ? "" : "\n");
}

int trainlog_step(TrainLog *r, const Acts *a, const StepFigures *f) {
    const MoeConfig *c = r->c;
    const int L = config_n_layers(c), E = c->n_routed_experts, ep = r->ep;
    // under EP, the rows each rank's experts computed: the largest, smallest and total over
    // the group give the rank load (max/mean) and the device imbalance IS
    double *rmax = MOE_NEW(double, 3 * (L > 0 ? L : 1)), *rmin = rmax + L, *rsum = rmax + 2 * L;
    int rc = MOE_OK;
    if (ep > 1) {
        for (int l = 0; l < L; l++) { rmax[l] = rsum[l] = (double)a->rows_l[l]; rmin[l] = -(double)a->rows_l[l]; }
        rc = dist_max_f64(rmax, 2 * L, DIST_EP);   // max of rows and of -rows
        if (rc == MOE_OK) rc = dist_sum_f64(rsum, L, DIST_EP);
        // pipeline: each layer's figures are its stage's (the others computed no rows of it)
        if (rc == MOE_OK && dist_info()->pp > 1) rc = dist_sum_f64(rmax, 3 * L, DIST_PIPE);
    }
    if (rc) { moe_free(rmax); return rc; }
    char *line = NULL;
    size_t line_len = 0;
    FILE *ls = open_memstream(&line, &line_len);
    if (!ls) { moe_free(rmax); MOE_ERR("out of memory for the log line"); }
    fprintf(ls, "{\"step\":%ld,\"loss\":%.9g,\"ce\":%.9g,\"aux\":%.9g,\"lr\":%.9g,\"grad_norm\":%.9g,"
                "\"tokens_per_s\":%.1f,\"mfu\":%.5f,\"step_ms\":%.2f,\"tokens\":%ld,\"dropped\":%ld,",
            f->step, f->sl.loss, f->sl.ce, f->sl.aux, f->lr, f->gnorm, f->tps, f->mfu, f->dt * 1e3, f->sl.tokens, a->dropped);
    if (c->num_mtp_layers) fprintf(ls, "\"mtp_loss\":%.9g,", f->sl.mtp);   // per module, before its weight
    if (f->bubble_ms >= 0)
        fprintf(ls, "\"bubble_ms\":%.2f,\"pp_transit_ms\":%.2f,\"pp_exposed_ms\":%.2f,", f->bubble_ms, f->pp_transit_ms, f->pp_exposed_ms);
    if (f->comm_ms >= 0)
        fprintf(ls, "\"comm_ms\":%.2f,\"comm_exposed_ms\":%.2f,\"ep_exposed_ms\":%.2f,\"dp_exposed_ms\":%.2f,",
                f->comm_ms, f->exposed_ms, f->ep_exposed, f->dp_exposed);
    fprintf(ls, "\"expert_load\":[");
    const long slot = r->n_bal % LAST;
    for (int l = 0, first = 1; l < L; l++) {
        if (!config_layer_is_moe(c, l)) continue;
        fprintf(ls, first ? "[" : ",[");
        first = 0;
        for (int e = 0; e < E; e++) fprintf(ls, e ? ",%ld" : "%ld", a->load[(size_t)l * E + e]);
        fprintf(ls, "]");
        moe_load_stats(a->load + (size_t)l * E, E, ep, f->sl.tokens, &r->ls[l]);
        if (ep > 1) r->ls[l].is = f->sl.tokens > 0 ? (rmax[l] + rmin[l]) / f->sl.tokens : 0;   // max - min
        double v[3] = {r->ls[l].max_mean, r->ls[l].maxvio, r->ls[l].is};
        for (int k = 0; k < 3; k++) {
            r->bal_sum[l * 3 + k] += v[k];
            r->bal_last[((size_t)slot * L + l) * 3 + k] = v[k];
        }
        r->run_drop[l] += a->drop_l[l];
    }
    r->n_bal++;
    r->run_assigned += f->sl.tokens * c->num_experts_per_tok;   // per MoE layer
    fprintf(ls, "]");
    if (f->moved >= 0) fprintf(ls, ",\"experts_moved\":%d", f->moved);   // placed again after this step
    if (ep > 1) {
        // rows each rank's experts computed: the largest over the EP group / mean; and the
        // device imbalance per MoE layer (the EP group's ranks are the devices)
        double *v = MOE_NEW(double, 2 * (L > 0 ? L : 1));
        for (int l = 0; l < L; l++) { v[l] = rsum[l] > 0 ? rmax[l] * ep / rsum[l] : 0; v[L + l] = r->ls[l].is; }
        json_layers(ls, "rank_load", c, v, "%.4f");
        json_layers(ls, "IS", c, v + L, "%.6f");
        moe_free(v);
    }
    moe_free(rmax);
    if (f->eval_ce >= 0) fprintf(ls, ",\"eval_loss\":%.9g", f->eval_ce);
    fprintf(ls, "}\n");
    fclose(ls);
    if (r->log) { fputs(line, r->log); fflush(r->log); }
    free(line);
    if (!r->quiet && (r->tty || f->elapsed - r->t_print >= 10 || f->step == r->start_step + 1 || f->step == r->steps ||
                      f->stop_time)) {   // not a terminal: a line every 10 s instead of a live line
        r->t_print = f->elapsed;
        progress(r, a, f);
    }
    return MOE_OK;
}

void trainlog_summary(const TrainLog *r, bool ok, long step, double seconds, double loss, const char *out) {
    if (r->quiet) return;
    if (r->tty) fprintf(stderr, "\n");   // ends the live progress line
    if (!ok) return;
    const MoeConfig *c = r->c;
    const int L = config_n_layers(c);
    fprintf(stderr, "moe train: %ld steps in %.1f s, final loss %.4f, checkpoint %s\n", step - r->start_step, seconds, loss, out);
    const long nl = r->n_bal < LAST ? r->n_bal : LAST;
    for (int l = 0; l < L && r->n_bal > 0; l++) {
        if (!config_layer_is_moe(c, l)) continue;
        double last = 0;
        for (long i = 0; i < nl; i++) last += r->bal_last[((size_t)i * L + l) * 3];
        fprintf(stderr, "  layer %d experts: max/mean %.3f (last %ld steps %.3f)  MaxVio %.3f  drop rate %.4f", l,
                r->bal_sum[l * 3] / r->n_bal, nl, last / nl, r->bal_sum[l * 3 + 1] / r->n_bal,
                r->run_assigned ? (double)r->run_drop[l] / r->run_assigned : 0);
        if (r->ep > 1) fprintf(stderr, "  IS %.4f", r->bal_sum[l * 3 + 2] / r->n_bal);
        fprintf(stderr, "\n");
    }
    if (r->n_bal > 0 && config_n_moe_layers(c) > 0) fprintf(stderr, "  (means over the run's steps of each step's figures)\n");
}
