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
// step are allocated in dry mode (reserved, never touched) and counted by category
// (cmd_plan_step); the parameters are also broken down by kind.
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
    double mb[MEM_N], kind[PK_N];
    cmd_plan_step(&c, B * T, mode, mb, kind);
    const char *names[MEM_N] = {"other", "parameters", "gradients", "optimizer state", "saved activations", "workspace"};
    const int order[] = {MEM_PARAMS, MEM_GRADS, MEM_OPTIM, MEM_ACTS, MEM_WORK, MEM_OTHER};
    // OpenBLAS reserves a GEMM buffer per thread, of which these GEMMs touch about 8 MiB;
    // MKL's buffers come to about 19 MiB at 1 or 2 threads (measured: bench-tiny and bench-s
    // peak RSS minus everything counted here)
    double blas_mb = strcmp(kernels_blas_name(), "mkl") ? 8.0 * kernels_threads() : 19.0;
    double total = base_mb + blas_mb;
    for (int i = 0; i < MEM_N; i++) total += mb[i];
    const double n_params = config_total_params(&c);
    if (json) {
        printf("{");
        for (int i = 0; i < MEM_N; i++) printf("\"%s_mb\":%.1f,", names[order[i]], mb[order[i]]);
        printf("\"runtime_mb\":%.1f,\"total_mb\":%.1f,\"params\":%.0f,\"active_params\":%.0f,\"params_by_kind_mb\":{", base_mb + blas_mb,
               total, n_params, config_active_params(&c));
        for (int k = 0; k < PK_N; k++) printf("%s\"%s\":%.1f", k ? "," : "", PK_NAMES[k], kind[k]);
        printf("}}\n");
    } else {
        printf("%s, batch %d x seq %d (%d tokens):\n", cfg, B, T, B * T);
        for (int i = 0; i < MEM_N; i++) printf("  %-18s %11.1f MB\n", names[order[i]], mb[order[i]]);
        printf("  %-18s %11.1f MB (binary, libraries, BLAS buffers)\n", "runtime", base_mb + blas_mb);
        printf("  %-18s %11.1f MB\n", "total", total);
        const double u = n_params >= 1e9 ? 1e9 : 1e6;
        const char *un = n_params >= 1e9 ? "B" : "M";
        printf("parameters: %.2f%s (%.2f%s active per token); their f32 memory by kind:\n", n_params / u, un,
               config_active_params(&c) / u, un);
        for (int k = 0; k < PK_N; k++)
            if (kind[k] > 0) printf("  %-18s %11.1f MB\n", PK_NAMES[k], kind[k]);
    }
    return 0;
}
