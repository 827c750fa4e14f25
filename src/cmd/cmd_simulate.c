#include <stdlib.h>
#include <string.h>
#include "../base/base.h"
#include "../sim/sim.h"
#include "cmd.h"

static const char *HELP =
    "usage: moe simulate --model CFG.json --cluster CLUSTER.json --layout tp=T,pp=P,vpp=V,ep=E[,etp=X][,dp=D]\n"
    "                    --micro-batch M --global-batch G --seq T [options]\n"
    "  one training step predicted: its time split into compute per block kind, exposed\n"
    "  communication per kind, the pipeline bubble and the optimizer; tokens/s, MFU, memory per\n"
    "  device (docs/SIMULATE.md). Data parallelism takes the devices left over.\n"
    "  --devices N          devices in all (default: the cluster file's)\n"
    "  --dp D               data-parallel replicas (default devices / (tp x pp))\n"
    "  --recompute MODE     none | selective (norms, SwiGLU) | full (default selective)\n"
    "  --load LOG.jsonl|S   expert load: a run's log (its last 20 expert_load steps) or the busiest\n"
    "                       device's load over the mean, S >= 1 (default 1: balanced)\n"
    "  --a2a flat|hier|dedup  the experts' all-to-all: to every peer, gathered by node, or each token\n"
    "                       once a node (DeepEP-style; default hier)\n"
    "  --ep-overlap off|layer|1f1b|dualpipe  the experts' all-to-all exposed; under the layer's other\n"
    "                       work; paired with another micro-batch's pass of the other direction,\n"
    "                       transfer by transfer (moe train's pairs); all of it under the other pass\n"
    "                       (DeepSeek's DualPipe) (default off)\n"
    "  --pp-layers N1,...   layers in each chunk (pp x vpp counts, 0 allowed)\n"
    "  --pp-split even|ends|balance  even cuts of the layers (moe train's), of the layers and the two\n"
    "                       ends counted as a layer each (Megatron's), or balanced by cost (--search's)\n"
    "  --dp-overlap on|off  gradient reduction under the last backward passes (default on)\n"
    "  --tp-overlap on|off  tensor-parallel collectives in pieces beside the GEMMs they feed (Ascend's\n"
    "                       MC2, Megatron's TP communication overlap; default off)\n"
    "  --zero 0|1           optimizer state split over the data-parallel ranks (default 1)\n"
    "  --act-dtype bf16|f32 how f32 training keeps its saved activations (default bf16, moe train's)\n"
    "  --attention flash|unfused  core attention fused, or its scores materialised (default flash)\n"
    "  --devices-per-node N the ranks a host holds (default the cluster file's)\n"
    "  --cores-per-rank C   cores each device (rank) has, for CPU cluster files (default the file's\n"
    "                       cores_per_device; 0.5 when two ranks share a core)\n"
    "  --idle-yields on|off ranks that share cores give theirs up while they wait (mpirun\n"
    "                       --oversubscribe's ranks do; default off: a waiting device keeps its core)\n"
    "  --search             rank every layout that fits by throughput and print the best --top N (10)\n"
    "  --json               one JSON object (step_ms, tokens_per_s, mfu, memory_gb, breakdown in ms)\n";

static int parse_layout(const char *s, SimLayout *l) {
    char buf[256];
    if (strlen(s) >= sizeof buf) MOE_ERR("--layout is too long");
    strcpy(buf, s);
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        char *eq = strchr(tok, '=');
        if (!eq) MOE_ERR("--layout: \"%s\" is not key=value (keys tp, pp, vpp, ep, etp, dp)", tok);
        *eq = 0;
        char *end;
        const long v = strtol(eq + 1, &end, 10);
        if (*end || end == eq + 1 || v < 1 || v > 1000000) MOE_ERR("--layout: %s=%s must be a positive whole number", tok, eq + 1);
        if (!strcmp(tok, "tp")) l->tp = (int)v;
        else if (!strcmp(tok, "pp")) l->pp = (int)v;
        else if (!strcmp(tok, "vpp")) l->vpp = (int)v;
        else if (!strcmp(tok, "ep")) l->ep = (int)v;
        else if (!strcmp(tok, "dp")) l->dp = (int)v;
        else if (!strcmp(tok, "etp")) l->etp = (int)v;
        else MOE_ERR("--layout: unknown key \"%s\" (keys tp, pp, vpp, ep, etp, dp)", tok);
    }
    return MOE_OK;
}

static int parse_counts(const char *v, SimLayout *l) {
    return args_parse_counts(v, "--pp-layers", 0, l->pp_layers, PP_MAX_CHUNKS, &l->n_pp_layers);
}

static int on_off(Args *a, const char *flag, bool def, bool *out) {
    const char *v = args_str(a, flag, def ? "on" : "off");
    if (strcmp(v, "on") && strcmp(v, "off")) MOE_ERR("%s must be on or off, not \"%s\"", flag, v);
    *out = !strcmp(v, "on");
    return MOE_OK;
}

static void print_layout(char *out, size_t cap, const SimLayout *l) {
    char etp[32] = "";
    if (l->etp > 1) snprintf(etp, sizeof etp, "etp=%d,", l->etp);
    snprintf(out, cap, "tp=%d,pp=%d,vpp=%d,ep=%d,%sdp=%d", l->tp, l->pp, l->vpp, l->ep, etp, l->dp);
}
static const char *RC_NAMES[] = {"none", "selective", "full"};

static void print_json(const SimLayout *l, const SimResult *r) {
    char lay[128];
    print_layout(lay, sizeof lay, l);
    printf("{\"layout\":\"%s\",\"micro_batch\":%d,\"recompute\":\"%s\",\"devices\":%d,\"micro_batches\":%d,"
           "\"step_ms\":%.3f,\"tokens_per_s\":%.1f,\"mfu\":%.4f,\"bubble_fraction\":%.4f,\"memory_gb\":%.3f,\"fits\":%s,"
           "\"memory_stage\":%d,\"memory_breakdown_gb\":{", lay, l->micro_batch, RC_NAMES[l->recompute], sim_devices(l),
           r->micro_batches, r->step_s * 1e3, r->tokens_per_s, r->mfu, r->bubble_fraction, r->mem_total / 1e9,
           r->fits ? "true" : "false", r->mem_stage);
    for (int k = 0; k < SIM_M_N; k++) printf("%s\"%s\":%.3f", k ? "," : "", SIM_MEM_NAMES[k], r->mem[k] / 1e9);
    printf("},\"breakdown\":{");
    for (int k = 0; k < SIM_T_N; k++) printf("%s\"%s\":%.3f", k ? "," : "", SIM_TERM_NAMES[k], r->term[k] * 1e3);
    printf("},\"ep_all_to_all_total_ms\":%.3f,\"dp_reduce_total_ms\":%.3f}\n", r->ep_total_s * 1e3, r->dp_total_s * 1e3);
}

static void print_text(const char *cfg, const Cluster *cl, const SimLayout *l, const SimResult *r) {
    char lay[128];
    print_layout(lay, sizeof lay, l);
    printf("%s on %s, %s, micro-batch %d x seq %d, global batch %d (%d micro-batches a pipeline), recompute %s:\n", cfg, cl->name,
           lay, l->micro_batch, l->seq, l->global_batch, r->micro_batches, RC_NAMES[l->recompute]);
    printf("  step %.1f ms   %.0f tokens/s   MFU %.1f%%   bubble %.3f\n", r->step_s * 1e3, r->tokens_per_s, 100 * r->mfu,
           r->bubble_fraction);
    printf("  %-16s %12s %7s\n", "term", "ms", "share");
    for (int k = 0; k < SIM_T_N; k++)
        if (r->term[k] > 0) printf("  %-16s %12.2f %6.1f%%\n", SIM_TERM_NAMES[k], r->term[k] * 1e3, 100 * r->term[k] / r->step_s);
    if (r->ep_total_s > 0) printf("  (all-to-all before overlap %.2f ms)\n", r->ep_total_s * 1e3);
    if (r->dp_total_s > 0) printf("  (gradient reduction before overlap %.2f ms)\n", r->dp_total_s * 1e3);
    printf("memory of the fullest device (stage %d): %.2f GB of %.0f GB%s\n", r->mem_stage, r->mem_total / 1e9, cl->mem_bytes / 1e9,
           r->fits ? "" : "  DOES NOT FIT");
    for (int k = 0; k < SIM_M_N; k++) printf("  %-16s %10.2f GB\n", SIM_MEM_NAMES[k], r->mem[k] / 1e9);
}

// --search: the best `top` layouts of `devices` (the flags fixed in l), as a table or JSON
static int run_search(const char *cfg, const MoeConfig *c, const Cluster *cl, const SimLayout *l, int devices, int top, bool json) {
    SimCandidate *best = MOE_NEW(SimCandidate, top);
    int n;
    const double t0 = time_now();
    sim_search(c, cl, l, devices, best, top, &n);
    if (n == 0) { moe_free(best); moe_seterr("--search: no layout of %d devices fits %s on %s", devices, cfg, cl->name); return cmd_fail("simulate"); }
    if (json) {
        printf("[");
        for (int i = 0; i < imin(n, top); i++) { if (i) printf(","); print_json(&best[i].lay, &best[i].r); }
        printf("]\n");
    } else {
        printf("%s on %s: %d devices, global batch %d x seq %d; %d layouts fit (%.1f s); the best %d:\n", cfg, cl->name, devices,
               l->global_batch, l->seq, n, time_now() - t0, imin(n, top));
        printf("  %-4s %-32s %3s %-9s %10s %12s %6s %8s %8s\n", "rank", "layout", "mb", "recompute", "step s", "tokens/s", "MFU",
               "bubble", "mem GB");
        for (int i = 0; i < imin(n, top); i++) {
            char lay[128];
            print_layout(lay, sizeof lay, &best[i].lay);
            printf("  %-4d %-32s %3d %-9s %10.3f %12.0f %5.1f%% %8.3f %8.1f\n", i + 1, lay, best[i].lay.micro_batch,
                   RC_NAMES[best[i].lay.recompute], best[i].r.step_s, best[i].r.tokens_per_s, 100 * best[i].r.mfu,
                   best[i].r.bubble_fraction, best[i].r.mem_total / 1e9);
        }
    }
    moe_free(best);
    return 0;
}

int cmd_simulate(int argc, char **argv) {
    Args a;
    args_init(&a, argc, argv, "simulate");
    if (args_bool(&a, "--help")) { fputs(HELP, stdout); return 0; }
    const char *cfg = cmd_required(&a, "--model");
    const char *clf = cfg ? cmd_required(&a, "--cluster") : NULL;
    if (!clf) return cmd_fail("simulate");
    const bool search = args_bool(&a, "--search"), json = args_bool(&a, "--json");
    const char *layout = search ? args_str(&a, "--layout", NULL) : cmd_required(&a, "--layout");
    if (!search && !layout) return cmd_fail("simulate");
    SimLayout l = {.tp = 1, .pp = 1, .vpp = 1, .ep = 1, .etp = 1, .recompute = SIM_RC_SELECTIVE, .a2a = SIM_A2A_HIER, .dp_overlap = true, .skew = 1.0};
    int devices, zero, top, dpn;
    double cores;
    static const char *A2A[] = {"flat", "hier", "dedup"}, *ATT[] = {"flash", "unfused"}, *ADT[] = {"bf16", "f32"},
                      *OV[] = {"off", "layer", "1f1b", "dualpipe"}, *SPLITS[] = {"even", "ends", "balance"};
    int k_att, k_adt;   // (the names in the order of the SIM_RC_, SIM_A2A_, SIM_OV_ and SIM_SPLIT_ values)
    if (args_pick(&a, "--recompute", RC_NAMES, 3, "selective", &l.recompute) || args_pick(&a, "--a2a", A2A, 3, "hier", &l.a2a) ||
        args_pick(&a, "--attention", ATT, 2, "flash", &k_att) || args_pick(&a, "--act-dtype", ADT, 2, "bf16", &k_adt) ||
        args_pick(&a, "--ep-overlap", OV, 4, "off", &l.ep_overlap) || args_pick(&a, "--pp-split", SPLITS, 3, "even", &l.split))
        return cmd_fail("simulate");
    const char *ppl = args_str(&a, "--pp-layers", NULL), *load = args_str(&a, "--load", NULL);
    if (args_int(&a, "--devices", 0, &devices) || args_int(&a, "--dp", 0, &l.dp) || args_int(&a, "--micro-batch", 1, &l.micro_batch) ||
        args_int(&a, "--global-batch", 0, &l.global_batch) || args_int(&a, "--seq", 0, &l.seq) || args_int(&a, "--zero", 1, &zero) ||
        args_int(&a, "--top", 10, &top) || args_double(&a, "--cores-per-rank", 0, &cores) || args_int(&a, "--devices-per-node", 0, &dpn) || on_off(&a, "--dp-overlap", true, &l.dp_overlap) ||
        on_off(&a, "--idle-yields", false, &l.idle_yields) ||
        on_off(&a, "--tp-overlap", false, &l.tp_overlap))
        return cmd_fail("simulate");
    if (args_finish(&a)) return cmd_fail("simulate");
    if (l.global_batch <= 0 || l.seq <= 0) { moe_seterr("--global-batch and --seq are required (positive)"); return cmd_fail("simulate"); }
    if (zero != 0 && zero != 1) { moe_seterr("--zero must be 0 or 1"); return cmd_fail("simulate"); }
    if (top < 1) { moe_seterr("--top must be positive"); return cmd_fail("simulate"); }
    l.zero1 = zero == 1;
    l.unfused_attention = k_att == 1;
    l.act_bf16 = k_adt == 0;
    if (ppl && parse_counts(ppl, &l)) return cmd_fail("simulate");
    if (layout && parse_layout(layout, &l)) return cmd_fail("simulate");
    MoeConfig c;
    Cluster cl;
    if (config_load(&c, cfg) || cluster_load(&cl, clf)) return cmd_fail("simulate");
    if (dpn < 0 || dpn > 1000000) { moe_seterr("--devices-per-node must be positive"); return cmd_fail("simulate"); }
    if (dpn) cl.devices_per_node = dpn;
    if (cores != 0) {
        if (!(cores > 0 && cores <= 4096)) { moe_seterr("--cores-per-rank must be positive"); return cmd_fail("simulate"); }
        cluster_set_cores(&cl, cores);
    }
    if (devices < 0) { moe_seterr("--devices must be positive"); return cmd_fail("simulate"); }
    if (devices == 0) devices = l.dp > 0 ? l.tp * l.pp * l.dp : cl.devices;
    if (load) {
        char *end;
        const double s = strtod(load, &end);
        if (*end == 0 && end != load) l.skew = s;
        else if (sim_skew_from_log(load, l.ep, 20, &l.skew)) return cmd_fail("simulate");
        if (!(l.skew >= 1 && l.skew < 1e6)) { moe_seterr("--load: skew %g must be at least 1", l.skew); return cmd_fail("simulate"); }
    }
    if (search) return run_search(cfg, &c, &cl, &l, devices, top, json);
    if (l.dp == 0) {
        if (devices % (l.tp * l.pp)) {
            moe_seterr("--devices %d is not a multiple of tp x pp = %d", devices, l.tp * l.pp);
            return cmd_fail("simulate");
        }
        l.dp = devices / (l.tp * l.pp);
    } else if (devices != l.tp * l.pp * l.dp) {
        moe_seterr("--devices %d but tp x pp x dp = %d", devices, l.tp * l.pp * l.dp);
        return cmd_fail("simulate");
    }
    SimResult r;
    if (sim_step(&c, &cl, &l, &r)) return cmd_fail("simulate");
    if (json) print_json(&l, &r);
    else print_text(cfg, &cl, &l, &r);
    return 0;
}
