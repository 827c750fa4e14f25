#include <stdio.h>
#include <string.h>
#include "../base/base.h"
#include "../base/fileio.h"
#include "../io/plot.h"
#include "cmd.h"

static const char *HELP =
    "usage: moe plot --run DIR --out FILE.svg [--title T]\n"
    "  one self-contained SVG of a training run (DIR/log.jsonl): loss curves (train, and eval\n"
    "  where logged), tokens/s, under expert parallelism the busiest rank's load over the mean,\n"
    "  and a heatmap of expert load (experts x steps) per MoE layer\n";

int cmd_plot(int argc, char **argv) {
    Args a;
    args_init(&a, argc, argv, "plot");
    if (args_bool(&a, "--help")) { fputs(HELP, stdout); return 0; }
    const char *run = cmd_required(&a, "--run");
    if (!run) return cmd_fail("plot");
    const char *out = cmd_required(&a, "--out");
    if (!out) return cmd_fail("plot");
    const char *title = args_str(&a, "--title", run);
    if (!title || args_finish(&a)) return cmd_fail("plot");
    char path[4096];
    path_join(path, sizeof path, run, "log.jsonl");
    if (!path_exists(run)) { moe_seterr("%s: run directory does not exist", run); return cmd_fail("plot"); }
    RunLog r;
    if (runlog_read(path, &r)) return cmd_fail("plot");
    int rc = plot_svg(&r, title, out);
    if (rc == MOE_OK) fprintf(stderr, "moe plot: %s (%d steps, %d MoE layers)\n", out, r.n, r.L);
    runlog_free(&r);
    return rc ? cmd_fail("plot") : 0;
}
