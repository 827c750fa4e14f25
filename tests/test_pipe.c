// Pipeline schedules (src/parallel/pipeline.c): every stage's list of Megatron's interleaved
// 1F1B order, simulated together, is complete, deadlock-free, keeps each chunk's backwards in
// micro-batch order, and idles exactly the bubble the schedule promises, (S-1)/(m·V); the
// activations kept at once, per chunk, stop growing with m. One PASS/FAIL line per check.
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "../src/base/base.h"
#include "../src/parallel/pipeline.h"

static int n_pass, n_fail;
static void check(const char *name, int ok, const char *detail) {
    if (ok) { printf("PASS pipe: %s\n", name); n_pass++; }
    else { printf("FAIL pipe: %s: %s\n", name, detail); n_fail++; }
}

int main(void) {
    char name[160], detail[512];
    // the grid: stages, virtual stages, micro-batches (V > 1: multiples of S)
    const int Ss[] = {1, 2, 3, 4, 8}, Vs[] = {1, 2, 3, 4};
    int bad = 0, runs = 0;
    detail[0] = 0;
    for (int a = 0; a < 5; a++)
        for (int b = 0; b < 4; b++)
            for (int f = 1; f <= 4; f *= 2) {
                const int S = Ss[a], V = Vs[b], m = f * S;
                PipeSim sim;
                runs++;
                if (pipe_check(S, V, m, &sim) != MOE_OK) {
                    if (!bad++) snprintf(detail, sizeof detail, "S %d V %d m %d: %s", S, V, m, moe_errmsg());
                    continue;
                }
                const double want = (double)(S - 1) / (m * V);
                if (fabs(sim.bubble - want) > 1e-9) {
                    if (!bad++) snprintf(detail, sizeof detail, "S %d V %d m %d: bubble %.6f, the schedule's %.6f", S, V, m, sim.bubble, want);
                }
            }
    snprintf(name, sizeof name, "%d layouts (S 1-8, V 1-4, m = S, 2S, 4S): complete, no deadlock, backwards in order, bubble (S-1)/(mV)", runs);
    check(name, bad == 0, detail);

    // V = 1 takes any m; the bubble is (S-1)/m
    bad = 0;
    for (int S = 1; S <= 6; S++)
        for (int m = 1; m <= 13; m++) {
            PipeSim sim;
            if (pipe_check(S, 1, m, &sim) != MOE_OK || fabs(sim.bubble - (double)(S - 1) / m) > 1e-9) {
                if (!bad++) snprintf(detail, sizeof detail, "S %d m %d: %s bubble %.6f", S, m, moe_errmsg(), sim.bubble);
            }
        }
    check("V = 1, S 1-6, m 1-13 (also m < S): 1F1B's bubble (S-1)/m", bad == 0, detail);

    // memory: at V = 1 stage 0 keeps min(m, S) micro-batches; interleaving keeps more chunks,
    // each 1/V of the layers; neither grows past m = 2S
    PipeSim s1, s2, s3;
    int ok = pipe_check(4, 1, 16, &s1) == MOE_OK && pipe_check(4, 1, 64, &s2) == MOE_OK;
    snprintf(detail, sizeof detail, "S 4 V 1: in flight %d (m 16), %d (m 64)", s1.in_flight_total, s2.in_flight_total);
    check("S 4, V 1: at most S micro-batches' activations kept, whatever m", ok && s1.in_flight_total == 4 && s2.in_flight_total == 4, detail);
    ok = pipe_check(4, 2, 8, &s1) == MOE_OK && pipe_check(4, 2, 16, &s2) == MOE_OK && pipe_check(4, 2, 64, &s3) == MOE_OK;
    snprintf(detail, sizeof detail, "S 4 V 2: in flight %d, %d, %d chunk passes (m 8, 16, 64), per chunk [%d %d]", s1.in_flight_total,
             s2.in_flight_total, s3.in_flight_total, s3.in_flight[0], s3.in_flight[1]);
    check("S 4, V 2: the chunk activations kept stop growing at m = 2S", ok && s2.in_flight_total == s3.in_flight_total &&
          s3.in_flight_total <= 2 * 4 * 2, detail);

    // the list of one stage: warm-up, alternation, cool-down
    PipeOp ops[64];
    int W;
    ok = pipe_list(2, 2, 0, 4, ops, &W) == MOE_OK;
    char got[256] = "";
    for (int i = 0; ok && i < 16; i++)
        snprintf(got + strlen(got), sizeof got - strlen(got), "%s%c%d.%d", i ? " " : "", ops[i].kind == PIPE_F ? 'F' : 'B', ops[i].mb, ops[i].chunk);
    const char *want = "F0.0 F1.0 F0.1 F1.1 F2.0 B0.1 F3.0 B1.1 F2.1 B0.0 F3.1 B1.0 B2.1 B3.1 B2.0 B3.0";
    snprintf(detail, sizeof detail, "got %s (warm-up %d)", got, W);
    check("S 2, V 2, m 4, stage 0: Megatron's order (warm-up 4 = 2(S-1-0) + (V-1)S)", ok && W == 4 && !strcmp(got, want), detail);

    int rc = pipe_list(4, 2, 0, 6, ops, &W);
    snprintf(detail, sizeof detail, "rc %d: %s", rc, moe_errmsg());
    check("V > 1 with m not a multiple of S is refused in one line", rc == MOE_FAIL && strstr(moe_errmsg(), "multiple of --pp 4") &&
          !strchr(moe_errmsg(), '\n'), detail);
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail != 0;
}
