#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "../base/base.h"
#include "../parallel/parallel.h"
#include "../kernels/gemm.h"
#include "../model/model.h"
#include "../optim/optim.h"
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
const char *cmd_ckpt_or_solver(Args *a) {
    const char *v = args_str(a, "--ckpt", NULL);
    if (v || args_has(a, "--ckpt")) return v;
    struct stat st;
    if (stat("models/solver/config.json", &st) == 0) return "models/solver";
    static char path[4200];
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    char *slash = n > 0 ? (exe[n] = 0, strrchr(exe, '/')) : NULL;
    if (slash) {
        *slash = 0;
        snprintf(path, sizeof path, "%s/models/solver", exe);
        char cfg[4300];
        snprintf(cfg, sizeof cfg, "%s/config.json", path);
        if (stat(cfg, &st) == 0) return path;
    }
    moe_seterr("no --ckpt given, and no shipped solver (models/solver) here or beside the binary");
    return NULL;
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

// The parameters' kinds that `moe plan` reports, from a tensor's name and layer
static int param_kind(const ParamTensor *t, const MoeConfig *c) {
    if (t->layer >= c->num_hidden_layers && t->layer < config_n_layers(c)) return PK_MTP;
    if (t->embedding) return PK_EMBEDDING;
    if (t->layer < 0 || t->ndim == 1) return t->layer < 0 && t->ndim == 2 ? PK_HEAD : PK_NORMS;
    if (t->layer >= config_n_layers(c)) return PK_HEAD;
    if (t->expert) return PK_EXPERTS;
    if (strstr(t->name, "self_attn.")) return PK_ATTENTION;
    if (strstr(t->name, "shared_expert")) return PK_SHARED;
    if (strstr(t->name, ".gate.weight")) return PK_ROUTER;
    return PK_DENSE;
}
const char *const PK_NAMES[PK_N] = {"embedding", "attention", "router", "routed experts", "shared experts",
                                    "dense FFN", "norms", "MTP modules", "output head"};

void cmd_plan_step(const MoeConfig *c, int ntok, int mode, double mb[MEM_N], double kind_mb[PK_N]) {
    size_t before[MEM_N];
    for (int i = 0; i < MEM_N; i++) before[i] = mem_bytes(i);
    mem_dry_run(1);
    Model m;
    model_build(&m, c, true);
    AdamW opt;
    adamw_alloc(&opt, m.n_params);
    Acts acts;
    acts_alloc(&acts, &m, ntok, mode);
    mem_dry_run(0);
    for (int i = 0; i < MEM_N; i++) mb[i] = (mem_bytes(i) - before[i]) / 1048576.0;
    if (kind_mb) {
        for (int k = 0; k < PK_N; k++) kind_mb[k] = 0;
        for (int i = 0; i < m.n_tensors; i++) kind_mb[param_kind(&m.tensors[i], c)] += m.tensors[i].numel * 4.0 / 1048576.0;
    }
    acts_free(&acts); adamw_free(&opt); model_free(&m);
}

// Before a training step's buffers are allocated for real: its planned size against the
// memory this machine has available
int cmd_check_fits(const MoeConfig *c, int ntok, int mode, const char *cfg) {
    double mb[MEM_N], total = 0;
    cmd_plan_step(c, ntok, mode, mb, NULL);
    for (int i = 0; i < MEM_N; i++) total += mb[i];
    FILE *f = fopen("/proc/meminfo", "r");
    double avail_mb = 0;
    char line[256];
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %lf kB", &avail_mb) == 1) { avail_mb /= 1024; break; }
    if (f) fclose(f);
    if (avail_mb > 0 && total > avail_mb)
        MOE_ERR("%s: a training step needs %.1f GB (see moe plan), this machine has %.1f GB available", cfg,
                total / 1024, avail_mb / 1024);
    return MOE_OK;
}
