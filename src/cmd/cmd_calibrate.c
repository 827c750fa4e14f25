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
    "usage: moe calibrate --out CLUSTER.json --intra LINK --inter LINK [--comm-share F] [--sync S[,MS,D]]\n"
    "                     [--idle-kept F] [--seconds S] [--name N]\n"
    "       mpirun -np 2 ./moe calibrate --comm [--seconds S]\n"
    "  measures this machine with moe.c's own kernels on the current threads (--threads, or\n"
    "  OMP_NUM_THREADS) and writes a cluster file for moe simulate: the sgemm peak, the GEMM\n"
    "  efficiency by the smallest side (fitted to 8 sizes), core attention, memory bandwidth\n"
    "  and what the elementwise kernels get of it, the fixed cost of an operation. --comm (under\n"
    "  mpirun) prints one line of JSON over the job's ranks: a ring all-reduce's rates (bw_gbs,\n"
    "  latency_us), the experts' all-to-all's as moe train sends it (a2a_bw_gbs, a2a_latency_us),\n"
    "  the share of a core an exchange overlapped with work costs (comm_share) and the ranks'\n"
    "  timing jitter (sync: the wait at meetings sync_ms of work apart, over that work, falling\n"
    "  as that work's length to the power -sync_decay); with twice as many ranks as cores, what a waiting rank keeps of its\n"
    "  core (idle_kept, else -1). LINK is BW_GBS,LAT_US[,A2A_BW_GBS,A2A_LAT_US] from such a line: --intra\n"
    "  for ranks on one host, --inter for ranks on emulated hosts (scripts/cluster-emu.sh);\n"
    "  --comm-share, --sync (SYNC,SYNC_MS,SYNC_DECAY, or SYNC alone: no decay) and --idle-kept go to the\n"
    "  efficiency section (default 0). scripts/calibrate.sh\n"
    "  runs all of it.\n";

// up to max comma-separated numbers of s into v: how many, or -1 for text that is not one
static int split_nums(const char *s, double *v, int max) {
    int n = 0;
    for (const char *p = s;; p++) {
        char *end;
        if (n == max) return -1;
        v[n++] = strtod(p, &end);
        if (end == p || (*end && *end != ',')) return -1;
        if (!*end) return n;
        p = end;
    }
}
// BW_GBS,LAT_US and optionally the all-to-all's A2A_BW_GBS,A2A_LAT_US (else v[2..3] stay 0)
static int parse_link(const char *s, const char *flag, double v[4]) {
    const int n = split_nums(s, v, 4);
    if (n != 2 && n != 4) MOE_ERR("%s must be BW_GBS,LAT_US[,A2A_BW_GBS,A2A_LAT_US] (two or four numbers), not \"%s\"", flag, s);
    for (int i = 0; i < n; i++)
        if (!(v[i] >= 0 && v[i] < 1e7) || (i % 2 == 0 && !(v[i] > 0)))
            MOE_ERR("%s must be BW_GBS,LAT_US[,A2A_BW_GBS,A2A_LAT_US] with positive bandwidths, not \"%s\"", flag, s);
    if (n == 2) v[2] = v[3] = 0;
    return MOE_OK;
}
// SYNC[,SYNC_MS,SYNC_DECAY]: the jitter's share, the interval it was measured at and its decay
static int parse_sync(const char *s, double v[3]) {
    const int n = split_nums(s, v, 3);
    if (n != 1 && n != 3) MOE_ERR("--sync must be SYNC[,SYNC_MS,SYNC_DECAY] (one or three numbers), not \"%s\"", s);
    if (n == 1) v[1] = v[2] = 0;
    if (!(v[0] >= 0 && v[0] < 1) || (n == 3 && !(v[1] > 0 && v[1] < 1e6 && v[2] >= 0 && v[2] <= 1)))
        MOE_ERR("--sync must be SYNC[,SYNC_MS,SYNC_DECAY]: a fraction in [0, 1), a positive interval in ms and an exponent in [0, 1], not \"%s\"", s);
    return MOE_OK;
}
static void add_link(cJSON *r, const char *key, const double v[4]) {
    cJSON *o = cJSON_AddObjectToObject(r, key);
    cJSON_AddItemToObject(o, "bw_gbs", cJSON_CreateNumber(v[0]));
    cJSON_AddItemToObject(o, "latency_us", cJSON_CreateNumber(v[1]));
    if (v[2] > 0) {
        cJSON_AddItemToObject(o, "a2a_bw_gbs", cJSON_CreateNumber(v[2]));
        cJSON_AddItemToObject(o, "a2a_latency_us", cJSON_CreateNumber(v[3]));
    }
}

static cJSON *num(double v) { return cJSON_CreateNumber(v); }

// --comm, under mpirun: every rank one EP group; rank 0 prints the line
static int calibrate_comm(double seconds) {
    CalibComm cc;
    const int P = dist_info()->size;
    if (P < 2) { moe_seterr("--comm measures collectives: run it under mpirun with at least 2 ranks"); return cmd_fail("calibrate"); }
    if (dist_setup(P, 1, DIST_A2A_FLAT) || sim_calibrate_comm(seconds, &cc)) return cmd_fail("calibrate");
    if (dist_info()->rank == 0)
        printf("{\"bw_gbs\":%.4f,\"latency_us\":%.2f,\"a2a_bw_gbs\":%.4f,\"a2a_latency_us\":%.2f,\"comm_share\":%.3f,\"sync\":%.4f,\"sync_ms\":%.2f,\"sync_decay\":%.3f,"
               "\"idle_kept\":%.3f,\"a2a_ms\":{\"alone\":%.3f,\"with_work\":%.3f,\"work\":%.3f},\"ranks\":%d}\n", cc.bw / 1e9,
               cc.lat * 1e6, cc.a2a_bw / 1e9, cc.a2a_lat * 1e6, cc.share, cc.sync, cc.sync_s * 1e3, cc.sync_decay, cc.idle_kept, cc.a2a_alone * 1e3, cc.a2a_with * 1e3,
               cc.a2a_work * 1e3, P);
    return 0;
}

int cmd_calibrate(int argc, char **argv) {
    Args a;
    args_init(&a, argc, argv, "calibrate");
    if (args_bool(&a, "--help")) { fputs(HELP, stdout); return 0; }
    const bool comm = args_bool(&a, "--comm");
    double seconds, share, sync[3] = {0, 0, 0}, kept;
    if (cmd_threads(&a) || args_double(&a, "--seconds", comm ? 4 : 16, &seconds) || args_double(&a, "--comm-share", 0, &share) ||
        args_double(&a, "--idle-kept", 0, &kept))
        return cmd_fail("calibrate");
    const char *sync_s = args_str(&a, "--sync", NULL);
    const char *out = comm ? NULL : cmd_required(&a, "--out");
    const char *intra = comm ? NULL : args_str(&a, "--intra", NULL), *inter = comm ? NULL : args_str(&a, "--inter", NULL);
    const char *name = args_str(&a, "--name", "local");
    if ((!comm && !out) || args_finish(&a)) return cmd_fail("calibrate");
    if (!(seconds > 0 && seconds < 3600)) { moe_seterr("--seconds must be between 0 and 3600"); return cmd_fail("calibrate"); }
    if (!(share >= 0 && share < 1) || !(kept >= 0 && kept <= 1)) {
        moe_seterr("--comm-share must be a fraction in [0, 1), --idle-kept one in [0, 1]");
        return cmd_fail("calibrate");
    }
    if (sync_s && parse_sync(sync_s, sync)) return cmd_fail("calibrate");
    if (comm) return calibrate_comm(seconds);
    double in[4], ot[4];
    if (!intra || !inter) { moe_seterr("--intra and --inter are required (mpirun ./moe calibrate --comm measures them; scripts/calibrate.sh runs both)"); return cmd_fail("calibrate"); }
    if (parse_link(intra, "--intra", in) || parse_link(inter, "--inter", ot)) return cmd_fail("calibrate");
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
    add_link(r, "intra_node", in);
    add_link(r, "inter_node", ot);
    cJSON *e = cJSON_AddObjectToObject(r, "efficiency");
    cJSON_AddItemToObject(e, "gemm_max", num(cc.gemm_max));
    cJSON_AddItemToObject(e, "gemm_half", num(cc.gemm_half));
    cJSON_AddItemToObject(e, "attention", num(cc.attn_eff));
    cJSON_AddItemToObject(e, "memory", num(cc.mem_eff));
    cJSON_AddItemToObject(e, "collective_max", num(1));
    cJSON_AddItemToObject(e, "collective_half_mb", num(0));
    cJSON_AddItemToObject(e, "comm_share", num(share));
    cJSON_AddItemToObject(e, "sync", num(sync[0]));
    if (sync[1] > 0) {
        cJSON_AddItemToObject(e, "sync_ms", num(sync[1]));
        cJSON_AddItemToObject(e, "sync_decay", num(sync[2]));
    }
    cJSON_AddItemToObject(e, "idle_kept", num(kept));
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
    cJSON_AddStringToObject(src, "a2a", "a2a_bw_gbs, a2a_latency_us: moe calibrate --comm's all-to-all, moe train's calls (a blocking "
                            "count exchange, then MPI_Ialltoallv waited for), 1 and 2048 rows of 512 floats a rank, fitted as flat");
    cJSON_AddStringToObject(src, "efficiency.comm_share", "--comm-share: the all-to-all of 2048 rows started before 512^3 GEMMs that "
                            "each call moe_progress() (as moe train's blocks do): the time it added over its hidden length r, share r / (1 + r)");
    cJSON_AddStringToObject(src, "efficiency.sync", "--sync: two ranks meeting at a count exchange every 40 small GEMMs (sync_ms of "
                            "work apart): the rounds' time over the ranks' GEMM time, minus one; sync_decay: the ranks' GEMM times summed "
                            "over runs of b = 1, 2, 4, .. meetings, the slowest over the mean minus one, its log-log slope in b, negated");
    cJSON_AddStringToObject(src, "efficiency.idle_kept", "--idle-kept: twice as many ranks as cores (mpirun --oversubscribe), half of "
                            "them running small GEMMs while the others wait in a count exchange: their time over all of them working, "
                            "2 x that - 1 (0: a waiting rank yields all of its core)");
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
