// The process layout with pipeline stages (src/dist, --pp S --ep E): run under mpirun with
// P ranks and the sizes as arguments. Each rank checks its place (stage, data rank, EP rank,
// replica), a sum over each group against the ranks that group must hold, and a ring of
// point-to-point messages between neighbouring stages. One PASS/FAIL line per check (rank 0
// prints them, after a sum of the failures over the world).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../src/base/base.h"
#include "../src/parallel/parallel.h"

int main(int argc, char **argv) {
    if (dist_init(&argc, &argv) != MOE_OK || argc != 3) { fprintf(stderr, "usage: mpirun -np P test_dist_groups PP EP\n"); return 2; }
    const int pp = atoi(argv[1]), ep = atoi(argv[2]);
    if (dist_setup(ep, pp, DIST_A2A_FLAT) != MOE_OK) { fprintf(stderr, "%s\n", moe_errmsg()); dist_finalize(); return 1; }
    const DistInfo *d = dist_info();
    const int P = d->size, r = d->rank, ss = P / pp;
    long bad[4] = {0};   // place, sums, messages, (unused)
    // the layout: consecutive stages, EP groups consecutive within a stage
    bad[0] += d->pp != pp || d->ssize != ss || d->stage != r / ss || d->srank != r % ss || d->ep_rank != (r % ss) % ep ||
              d->dp_rank != (r % ss) / ep || d->dp != ss / ep;
    // sums of (rank + 1) over each group, against the members the layout says it has
    struct { DistGroup g; const char *name; } G[] = {{DIST_STAGE, "stage"}, {DIST_EP, "ep"}, {DIST_REPLICAS, "replicas"},
                                                     {DIST_PIPE, "pipe"}, {DIST_EMBED, "embed"}, {DIST_MODEL, "model"}};
    for (int k = 0; k < 6; k++) {
        double v = r + 1, want = 0;
        const bool member = G[k].g != DIST_EMBED || d->stage == 0 || d->stage == pp - 1;
        if (dist_sum_f64(&v, 1, G[k].g) != MOE_OK) { bad[1]++; continue; }
        for (int q = 0; q < P; q++) {
            const int st = q / ss, sr = q % ss, e = sr % ep, dp = sr / ep;
            bool in = false;
            switch (G[k].g) {
            case DIST_STAGE: in = st == d->stage; break;
            case DIST_EP: in = st == d->stage && dp == d->dp_rank; break;
            case DIST_REPLICAS: in = st == d->stage && e == d->ep_rank; break;
            case DIST_PIPE: in = sr == d->srank; break;
            case DIST_EMBED: in = st == 0 || st == pp - 1; break;
            case DIST_MODEL: in = dp == d->dp_rank; break;
            default: break;
            }
            want += in ? q + 1 : 0;
        }
        if (!member) want = r + 1;   // not in the group: untouched
        if (v != want) { bad[1]++; fprintf(stderr, "rank %d: sum over %s %g, want %g\n", r, G[k].name, v, want); }
    }
    // a ring: each stage sends its stage and rank forward, receives from the previous one
    if (pp > 1) {
        float out[2] = {(float)d->stage, (float)r}, in[2] = {-1, -1};
        int rs, rr;
        if (dist_pipe_irecv(in, 2, (d->stage + pp - 1) % pp, 5, &rr) || dist_pipe_isend(out, 2, (d->stage + 1) % pp, 5, &rs) ||
            dist_wait(rs) || dist_wait(rr))
            bad[2]++;
        else if (in[0] != (float)((d->stage + pp - 1) % pp) || in[1] != (float)(((d->stage + pp - 1) % pp) * ss + d->srank)) bad[2]++;
    }
    dist_sum_long(bad, 4, DIST_WORLD);
    if (r == 0) {
        printf("%s dist groups P %d --pp %d --ep %d: every rank's stage, data rank, EP rank and replica\n", bad[0] ? "FAIL" : "PASS", P, pp, ep);
        printf("%s dist groups P %d --pp %d --ep %d: sums over stage, EP, replicas, pipe, first+last stages, one model hold their members\n",
               bad[1] ? "FAIL" : "PASS", P, pp, ep);
        if (pp > 1) printf("%s dist groups P %d --pp %d --ep %d: point-to-point to the next stage, from the previous\n", bad[2] ? "FAIL" : "PASS", P, pp, ep);
    }
    dist_finalize();
    return 0;
}
