// A training run's log.jsonl, read back, and drawn as one self-contained SVG: loss curves
// (train, and eval where logged), tokens/s, and a heatmap of expert load (experts x steps)
// for every MoE layer. The heatmaps are PNG images inside the SVG (written here, stored
// deflate), so the file needs nothing else to open in a browser.
#pragma once

typedef struct {
    int n;                 // steps
    int L, E;              // MoE layers in expert_load, experts per layer
    long *step;            // [n]
    double *loss, *ce, *tps, *eval;   // [n]; eval NaN where not logged
    double *is;            // [n*L] device imbalance IS when logged, else NaN
    double *rank_load;     // [n*L] busiest EP rank / mean when logged, else NaN
    int rank_points;
    long *load;            // [n*L*E]
    int eval_points;
} RunLog;

int runlog_read(const char *path, RunLog *r);
void runlog_free(RunLog *r);
// title: a line at the top (the run's name)
int plot_svg(const RunLog *r, const char *title, const char *out_path);
