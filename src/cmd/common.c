#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../base/base.h"
#include "../parallel/parallel.h"
#include "../kernels/gemm.h"
#include "../model/model.h"
#include "cmd.h"

int cmd_fail(const char *cmd) {
    const DistInfo *d = dist_info();
    char who[32] = "";
    if (d->size > 1) snprintf(who, sizeof who, "rank %d: ", d->rank);
    if (getenv("MOE_DEBUG")) fprintf(stderr, "moe %s: %s%s [%s]\n", cmd, who, moe_errmsg(), moe_errsrc());
    else fprintf(stderr, "moe %s: %s%s\n", cmd, who, moe_errmsg());
    return 1;
}
const char *cmd_required(Args *a, const char *flag) {
    const char *v = args_str(a, flag, NULL);
    if (!v && args_has(a, flag)) return NULL;   // error already set: no value
    if (!v) moe_seterr("missing required option %s (see moe %s --help)", flag, a->cmd);
    return v;
}
// Defaults: train, bench and plan use selective recomputation and bf16 storage, the fastest
// setting that still doubles the micro-batch on bench-s (bench/RESULTS.md); grad is exact
// (none, f32) because it is what the oracle compares.
int cmd_acts_mode(Args *a, int *mode, int exact) {
    const char *v = args_str(a, "--recompute", exact ? "none" : "selective");
    if (!v) return MOE_FAIL;
    *mode = ACTS_TRAIN;
    if (!strcmp(v, "selective")) *mode |= ACTS_RECOMPUTE;
    else if (!strcmp(v, "full")) *mode |= ACTS_RECOMPUTE | ACTS_RECOMPUTE_FULL;
    else if (strcmp(v, "none")) MOE_ERR("--recompute must be none, selective or full, got \"%s\"", v);
    v = args_str(a, "--act-dtype", exact ? "f32" : "bf16");
    if (!v) return MOE_FAIL;
    if (!strcmp(v, "bf16")) *mode |= ACTS_BF16;
    else if (strcmp(v, "f32")) MOE_ERR("--act-dtype must be f32 or bf16, got \"%s\"", v);
    return MOE_OK;
}

int cmd_threads(Args *a) {
    int t;
    MOE_TRY(args_int(a, "--threads", 0, &t));
    if (t < 0) MOE_ERR("--threads must be positive, got %d", t);
    if (t == 0 && getenv("OMP_NUM_THREADS")) t = atoi(getenv("OMP_NUM_THREADS"));
    MOE_TRY(kernels_blas(getenv("MOE_BLAS")));
    kernels_set_threads(t);
    return MOE_OK;
}
