#include <string.h>
#include "../base/base.h"
#include "../kernels/gemm.h"
#include "../io/checkpoint.h"
#include "../optim/optim.h"
#include "../parallel/pipeline.h"
#include "../train/train.h"
#include "cmd.h"

static const char *HELP =
    "usage: moe plan --model CFG.json --batch B --seq T [--recompute none|selective|full] [--act-dtype f32|bf16] [--json]\n"
    "  predicted memory of a training step, by category: parameters, gradients, optimizer\n"
    "  state, saved activations, workspace (compare with moe bench's peak_rss_mb);\n"
    "  defaults as in train: --recompute selective --act-dtype bf16\n"
    "  --pp S [--vpp V] [--ep E] [--dp D] [--micro-batch M] [--zero 1]: also the memory of each\n"
    "  pipeline stage: its layers' weights and gradients (its 1/E of the routed experts), the\n"
    "  optimizer (1/D of it under --zero 1), the activations its chunks keep at once under the\n"
    "  interleaved 1F1B schedule of B/(D·E·M) micro-batches of M examples (--batch B is global)\n";

typedef struct { int l0, l1; double w, g, opt, acts, work; } StagePlan;

// stage s of the layout in a dry run: weights and gradients of its layers, the optimizer,
// the activations in flight (sim's counts of each chunk times its span's) and one pass's workspace
static void plan_stage(const MoeConfig *c, const LayerShard *ls, int ep, int dp, bool zero, int ntok, int mode,
                       const PipeSim *sim, StagePlan *out) {
    size_t b[MEM_N];
    for (int i = 0; i < MEM_N; i++) b[i] = mem_bytes(i);
    mem_dry_run(1);
    ExpertShard sh = {0, c->n_routed_experts / ep, NULL, 0, NULL};
    Model m;
    model_build_staged(&m, c, true, ep > 1 ? &sh : NULL, ls);
    AdamW opt;
    adamw_alloc(&opt, zero ? (m.n_params + dp - 1) / dp : m.n_params);
    *out = (StagePlan){ls->cut[ls->stage], 0, (mem_bytes(MEM_PARAMS) - b[MEM_PARAMS]) / 1048576.0,
                       (mem_bytes(MEM_GRADS) - b[MEM_GRADS]) / 1048576.0, (mem_bytes(MEM_OPTIM) - b[MEM_OPTIM]) / 1048576.0, 0, 0};
    for (int j = 0; j < ls->V; j++) {
        int l0, n;
        layer_shard_chunk(ls, j, &l0, &n);
        out->l1 = l0 + n;
        const size_t a0 = mem_bytes(MEM_ACTS), w0 = mem_bytes(MEM_WORK);
        Acts a;
        acts_alloc_span(&a, &m, ntok, mode, l0, n);
        out->acts += sim->at[ls->stage][j] * ((mem_bytes(MEM_ACTS) - a0) / 1048576.0);
        const double w = (mem_bytes(MEM_WORK) - w0) / 1048576.0;
        if (w > out->work) out->work = w;
        acts_free(&a);
    }
    mem_dry_run(0);
    adamw_free(&opt);
    model_free(&m);
}

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
    int S, V, E, D, M, Z;
    if (args_int(&a, "--pp", 1, &S) || args_int(&a, "--vpp", 1, &V) || args_int(&a, "--ep", 1, &E) || args_int(&a, "--dp", 1, &D) ||
        args_int(&a, "--micro-batch", 0, &M) || args_int(&a, "--zero", 0, &Z))
        return cmd_fail("plan");
    const bool staged = args_has(&a, "--pp") || args_has(&a, "--vpp");
    if (args_finish(&a)) return cmd_fail("plan");
    if (B <= 0 || T <= 0) { moe_seterr("--batch and --seq must be positive"); return cmd_fail("plan"); }
    MoeConfig c;
    if (config_load(&c, cfg)) return cmd_fail("plan");
    LayerShard ls = {S, V, 0, {0}};
    PipeSim sim;
    StagePlan *st = NULL;
    if (staged) {
        if (E < 1 || D < 1 || (Z != 0 && Z != 1)) { moe_seterr("--ep and --dp must be positive, --zero 0 or 1"); return cmd_fail("plan"); }
        if (c.n_routed_experts % E) { moe_seterr("--ep %d must divide the model's n_routed_experts %d", E, c.n_routed_experts); return cmd_fail("plan"); }
        if (M == 0) M = imax(1, B / (D * E));
        if (M < 1 || B % (D * E * M)) { moe_seterr("--batch %d must be a multiple of --dp %d x --ep %d x --micro-batch %d", B, D, E, M); return cmd_fail("plan"); }
        if (layer_cuts(&c, S, V, NULL, 0, ls.cut) || pipe_check(S, V, B / (D * E * M), E > 1, &sim)) return cmd_fail("plan");
        st = MOE_NEW(StagePlan, S);
        for (int s = 0; s < S; s++) {
            LayerShard me = layer_shard_at(&ls, s);
            plan_stage(&c, &me, E, D, Z == 1, M * T, mode, &sim, &st[s]);
        }
    }
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
        printf("}");
        if (st) {
            printf(",\"pp\":%d,\"vpp\":%d,\"ep\":%d,\"dp\":%d,\"micro_batch\":%d,\"micro_batches\":%d,\"bubble\":%.4f,\"stages\":[", S, V, E, D, M,
                   B / (D * E * M), sim.bubble);
            for (int s = 0; s < S; s++)
                printf("%s{\"stage\":%d,\"weights_mb\":%.1f,\"gradients_mb\":%.1f,\"optimizer_mb\":%.1f,\"activations_mb\":%.1f,"
                       "\"workspace_mb\":%.1f,\"total_mb\":%.1f}", s ? "," : "", s, st[s].w, st[s].g, st[s].opt, st[s].acts, st[s].work,
                       st[s].w + st[s].g + st[s].opt + st[s].acts + st[s].work);
            printf("]");
        }
        printf("}\n");
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
        if (st) {
            printf("pipeline --pp %d --vpp %d, per rank with --ep %d --dp %d%s, %d micro-batches of %d examples (bubble %.3f):\n", S, V, E, D,
                   Z ? " --zero 1" : "", B / (D * E * M), M, sim.bubble);
            printf("  %-6s %-10s %10s %10s %10s %12s %10s %10s\n", "stage", "layers", "weights", "gradients", "optimizer",
                   "activations", "workspace", "total MB");
            for (int s = 0; s < S; s++) {
                char lay[64] = "";
                for (int j = 0; j < V; j++) {
                    int l0, n;
                    LayerShard me = layer_shard_at(&ls, s);
                    layer_shard_chunk(&me, j, &l0, &n);
                    snprintf(lay + strlen(lay), sizeof lay - strlen(lay), "%s%d-%d", j ? "," : "", l0, l0 + n - 1);
                }
                printf("  %-6d %-10s %10.1f %10.1f %10.1f %12.1f %10.1f %10.1f\n", s, lay, st[s].w, st[s].g, st[s].opt, st[s].acts,
                       st[s].work, st[s].w + st[s].g + st[s].opt + st[s].acts + st[s].work);
            }
            printf("  (activations: what each chunk keeps for the micro-batches in flight at once; workspace: one pass's)\n");
        }
    }
    moe_free(st);
    return 0;
}
