#include <string.h>
#include "../base/base.h"
#include "../kernels/gemm.h"
#include "../io/checkpoint.h"
#include "../optim/optim.h"
#include "../train/train.h"
#include "cmd.h"

static const char *HELP =
    "usage: moe plan --model CFG.json --batch B --seq T [--recompute none|selective|full] [--act-dtype f32|bf16] [--json]\n"
    "  predicted memory of a training step, by category: parameters, gradients, optimizer\n"
    "  state, saved activations, workspace (compare with moe bench's peak_rss_mb);\n"
    "  defaults as in train: --recompute selective --act-dtype bf16\n";

// The plan is the allocation itself: the model, optimizer and activations of a training
// step are allocated in dry mode (reserved, never touched) and counted by category.
int cmd_plan(int argc, char **argv) {
    Args a;
    args_init(&a, argc, argv, "plan");
    if (args_bool(&a, "--help")) { fputs(HELP, stdout); return 0; }
    const char *cfg = cmd_required(&a, "--model");
    if (!cfg) return cmd_fail("plan");
    int B, T, mode;
    if (cmd_threads(&a) || args_int(&a, "--batch", 8, &B) || args_int(&a, "--seq", 256, &T) || cmd_acts_mode(&a, &mode, 0)) return cmd_fail("plan");
    bool json = args_bool(&a, "--json");
    if (args_finish(&a)) return cmd_fail("plan");
    if (B <= 0 || T <= 0) { moe_seterr("--batch and --seq must be positive"); return cmd_fail("plan"); }
    MoeConfig c;
    if (config_load(&c, cfg)) return cmd_fail("plan");
    double base_mb = peak_rss_kb() / 1024.0;   // the binary and its libraries
    mem_dry_run(1);
    Model m;
    model_build(&m, &c, true);
    AdamW opt;
    adamw_alloc(&opt, m.n_params);
    Acts acts;
    acts_alloc(&acts, &m, B * T, mode);
    mem_dry_run(0);
    const char *names[MEM_N] = {"other", "parameters", "gradients", "optimizer state", "saved activations", "workspace"};
    const int order[] = {MEM_PARAMS, MEM_GRADS, MEM_OPTIM, MEM_ACTS, MEM_WORK, MEM_OTHER};
    // OpenBLAS reserves a GEMM buffer per thread, of which these GEMMs touch about 8 MiB;
    // MKL's buffers come to about 19 MiB at 1 or 2 threads (measured: bench-tiny and bench-s
    // peak RSS minus everything counted here)
    double blas_mb = strcmp(kernels_blas_name(), "mkl") ? 8.0 * kernels_threads() : 19.0;
    double total = base_mb + blas_mb;
    for (int i = 0; i < MEM_N; i++) total += mem_bytes(i) / 1048576.0;
    if (json) {
        printf("{");
        for (int i = 0; i < MEM_N; i++) printf("\"%s_mb\":%.1f,", names[order[i]], mem_bytes(order[i]) / 1048576.0);
        printf("\"runtime_mb\":%.1f,\"total_mb\":%.1f}\n", base_mb + blas_mb, total);
    } else {
        printf("%s, batch %d x seq %d (%d tokens):\n", cfg, B, T, B * T);
        for (int i = 0; i < MEM_N; i++) printf("  %-18s %9.1f MB\n", names[order[i]], mem_bytes(order[i]) / 1048576.0);
        printf("  %-18s %9.1f MB (binary, libraries, BLAS buffers)\n", "runtime", base_mb + blas_mb);
        printf("  %-18s %9.1f MB\n", "total", total);
    }
    acts_free(&acts); adamw_free(&opt); model_free(&m);
    return 0;
}
