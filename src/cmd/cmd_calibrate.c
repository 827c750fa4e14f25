#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "../base/base.h"
#include "../base/fileio.h"
#include "../kernels/gemm.h"
#include "../parallel/parallel.h"
#include "../sim/sim.h"
#include "cmd.h"

static const char *HELP =
    "usage: moe calibrate --out CLUSTER.json --intra BW_GBS,LAT_US --inter BW_GBS,LAT_US [--seconds S] [--name N]\n"
    "       mpirun -np 2 ./moe calibrate --comm [--seconds S]\n"
    "  measures this machine with moe.c's own kernels on the current threads (--threads, or\n"
    "  OMP_NUM_THREADS) and writes a cluster file for moe simulate: the sgemm peak, the GEMM\n"
    "  efficiency by the smallest side (fitted to 8 sizes), core attention, memory bandwidth\n"
    "  and what the elementwise kernels get of it, the fixed cost of an operation. --comm (under\n"
    "  mpirun) prints one line, {\"bw_gbs\":...,\"latency_us\":...}: a ring all-reduce's rates\n"
    "  over the job's ranks, what --intra (ranks on one host) and --inter (ranks on emulated\n"
    "  hosts, scripts/cluster-emu.sh) take. scripts/calibrate.sh runs all of it.\n";

static int parse_link(const char *v, const char *flag, double *bw, double *lat) {
    char *end;
    *bw = strtod(v, &end);
    if (end == v || *end != ',') MOE_ERR("%s must be BW_GBS,LAT_US (two numbers), not \"%s\"", flag, v);
    const char *l = end + 1;
    *lat = strtod(l, &end);
    if (end == l || *end || !(*bw > 0 && *bw < 1e6) || !(*lat >= 0 && *lat < 1e7))
        MOE_ERR("%s must be BW_GBS,LAT_US with a positive bandwidth, not \"%s\"", flag, v);
    return MOE_OK;
}

static cJSON *num(double v) { return cJSON_CreateNumber(v); }

int cmd_calibrate(int argc, char **argv) {
    Args a;
    args_init(&a, argc, argv, "calibrate");
    if (args_bool(&a, "--help")) { fputs(HELP, stdout); return 0; }
    const bool comm = args_bool(&a, "--comm");
    double seconds;
    if (cmd_threads(&a) || args_double(&a, "--seconds", comm ? 4 : 16, &seconds)) return cmd_fail("calibrate");
    const char *out = comm ? NULL : cmd_required(&a, "--out");
    const char *intra = comm ? NULL : args_str(&a, "--intra", NULL), *inter = comm ? NULL : args_str(&a, "--inter", NULL);
    const char *name = args_str(&a, "--name", "local");
    if ((!comm && !out) || args_finish(&a)) return cmd_fail("calibrate");
    if (!(seconds > 0 && seconds < 3600)) { moe_seterr("--seconds must be between 0 and 3600"); return cmd_fail("calibrate"); }
    if (comm) {
        double bw, lat;
        if (sim_calibrate_comm(seconds, &bw, &lat)) return cmd_fail("calibrate");
        if (dist_info()->rank == 0) printf("{\"bw_gbs\":%.4f,\"latency_us\":%.2f,\"ranks\":%d}\n", bw / 1e9, lat * 1e6, dist_info()->size);
        return 0;
    }
    double ibw, ilat, obw, olat;
    if (!intra || !inter) { moe_seterr("--intra and --inter are required (mpirun ./moe calibrate --comm measures them; scripts/calibrate.sh runs both)"); return cmd_fail("calibrate"); }
    if (parse_link(intra, "--intra", &ibw, &ilat) || parse_link(inter, "--inter", &obw, &olat)) return cmd_fail("calibrate");
    if (strlen(name) >= 64) { moe_seterr("--name must be under 64 bytes"); return cmd_fail("calibrate"); }
    CalibCompute cc;
    fprintf(stderr, "moe calibrate: measuring for about %.0f s on %d threads (%s)\n", seconds, kernels_threads(), kernels_blas_name());
    if (sim_calibrate_compute(&cc, seconds)) return cmd_fail("calibrate");
    const double mem_gb = (double)sysconf(_SC_PHYS_PAGES) * sysconf(_SC_PAGESIZE) / 1e9;
    cJSON *r = cJSON_CreateObject();
    char desc[256];
    snprintf(desc, sizeof desc, "this machine, measured by moe calibrate with moe.c's kernels on %d threads (%s): one device = one process",
             kernels_threads(), kernels_blas_name());
    cJSON_AddStringToObject(r, "name", name);
    cJSON_AddStringToObject(r, "description", desc);
    cJSON_AddItemToObject(r, "devices", num(1));
    cJSON_AddItemToObject(r, "devices_per_node", num(1));
    cJSON_AddItemToObject(r, "cores_per_device", num(kernels_threads()));
    cJSON_AddStringToObject(r, "dtype", "fp32");
    cJSON *pk = cJSON_AddObjectToObject(r, "peak_flops");
    cJSON_AddItemToObject(pk, "fp32", num(cc.peak));
    cJSON_AddItemToObject(r, "memory_gb", num(mem_gb));
    cJSON_AddItemToObject(r, "memory_bw_gbs", num(cc.mem_bw / 1e9));
    cJSON *in = cJSON_AddObjectToObject(r, "intra_node"), *ot = cJSON_AddObjectToObject(r, "inter_node");
    cJSON_AddItemToObject(in, "bw_gbs", num(ibw));
    cJSON_AddItemToObject(in, "latency_us", num(ilat));
    cJSON_AddItemToObject(ot, "bw_gbs", num(obw));
    cJSON_AddItemToObject(ot, "latency_us", num(olat));
    cJSON *e = cJSON_AddObjectToObject(r, "efficiency");
    cJSON_AddItemToObject(e, "gemm_max", num(cc.gemm_max));
    cJSON_AddItemToObject(e, "gemm_half", num(cc.gemm_half));
    cJSON_AddItemToObject(e, "attention", num(cc.attn_eff));
    cJSON_AddItemToObject(e, "memory", num(cc.mem_eff));
    cJSON_AddItemToObject(e, "collective_max", num(1));
    cJSON_AddItemToObject(e, "collective_half_mb", num(0));
    cJSON_AddItemToObject(e, "comm_share", num(0));
    cJSON_AddItemToObject(e, "op_us", num(cc.op_us));
    cJSON_AddItemToObject(e, "step_ms", num(0));
    cJSON *src = cJSON_AddObjectToObject(r, "sources");
    char pts[1024] = "";
    for (int i = 0; i < cc.n_gemm; i++)
        snprintf(pts + strlen(pts), sizeof pts - strlen(pts), "%s%d: %.3f", i ? ", " : "", cc.gemm_m[i], cc.gemm_eff[i]);
    char line[1300];
    snprintf(line, sizeof line, "GEMMs [m, 1024] x [1024, 1024] of smallest side m, fraction of the sgemm peak: %s; "
             "gemm_max and gemm_half fitted (1/eff linear in 1/m)", pts);
    cJSON_AddStringToObject(src, "efficiency.gemm", line);
    cJSON_AddStringToObject(src, "efficiency.attention", "attention_forward_train + attention_backward_train, 8 x 256 tokens, 8 heads of 64: "
                            "3.5 x the forward's causal FLOPs over the time, a fraction of the peak");
    cJSON_AddStringToObject(src, "memory_bw_gbs", "a 64 MB memcpy (read + write)");
    cJSON_AddStringToObject(src, "efficiency.memory", "rmsnorm_forward over 16384 x 1024, its bytes read and written over the memcpy rate");
    cJSON_AddStringToObject(src, "efficiency.op_us", "the larger of a 1 x 4 x 4 GEMM's time and an rmsnorm_forward over 4 rows (its parallel region)");
    cJSON_AddStringToObject(src, "intra_node", "mpirun -np 2 ./moe calibrate --comm on this host: an all-reduce started and waited for as moe train sums its gradients (MPI_Iallreduce), fitted as a ring (--intra)");
    cJSON_AddStringToObject(src, "inter_node", "the same on two emulated hosts, scripts/cluster-emu.sh (--inter)");
    char *js = cJSON_Print(r);
    cJSON_Delete(r);
    size_t n = strlen(js);
    js = realloc(js, n + 2);
    js[n] = '\n', js[n + 1] = 0;
    const int rc = file_write_atomic(out, js, n + 1);
    free(js);
    if (rc) return cmd_fail("calibrate");
    printf("%s: peak %.1f GFLOP/s, GEMM curve max %.3f half %.0f, attention %.3f, memory %.1f GB/s x %.2f, op %.1f us\n", out,
           cc.peak / 1e9, cc.gemm_max, cc.gemm_half, cc.attn_eff, cc.mem_bw / 1e9, cc.mem_eff, cc.op_us);
    return 0;
}
