// moe simulate --search: every layout of `devices` devices that the model and the cluster
// allow, priced by sim_step, the ones that fit ranked by throughput.
#include <stdlib.h>
#include <string.h>
#include "../base/base.h"
#include "../model/model.h"
#include "sim.h"

static int by_speed(const void *a, const void *b) {
    const double x = ((const SimCandidate *)a)->r.tokens_per_s, y = ((const SimCandidate *)b)->r.tokens_per_s;
    return x < y ? 1 : x > y ? -1 : 0;
}

int sim_search(const MoeConfig *c, const Cluster *cl, const SimLayout *base, int devices, SimCandidate *out, int cap, int *n) {
    static const int VPPS[] = {1, 2, 3, 4, 6, 8}, MBS[] = {1, 2, 4, 8}, RCS[] = {SIM_RC_NONE, SIM_RC_SELECTIVE, SIM_RC_FULL};
    const int L = c->num_hidden_layers, E = config_n_moe_layers(c) > 0 ? c->n_routed_experts : 1;
    int found = 0, kept = 0;
    SimCandidate *all = NULL;
    int all_cap = 0;
    for (int tp = 1; tp <= cl->devices_per_node; tp *= 2) {
        if (c->num_attention_heads % tp) continue;
        for (int pp = 1; pp <= imin(L, 64); pp++) {
            if (devices % (tp * pp)) continue;
            const int dp = devices / (tp * pp);
            for (int vi = 0; vi < 6; vi++) {
                const int vpp = VPPS[vi];
                if ((vpp > 1 && pp == 1) || pp * vpp > L + 2 || pp * vpp > PP_MAX_CHUNKS) continue;
                for (int ep = 1; ep <= E; ep++)
                for (int ei = 0; ei < (tp > 1 && E > 1 ? 2 : 1); ei++) {   // experts whole, or split like tp
                    const int etp = ei ? tp : 1;
                    if (E % ep || (dp * tp) % (ep * etp)) continue;
                    for (int mi = 0; mi < 4; mi++) {
                        const int mb = MBS[mi];
                        if (base->global_batch % (dp * mb)) continue;
                        const int m = base->global_batch / (dp * mb);
                        if (vpp > 1 && m % pp) continue;
                        for (int ri = 0; ri < 3; ri++) {
                            SimLayout l = *base;
                            l.n_pp_layers = 0;   // (cuts balanced by cost)
                            l.split = SIM_SPLIT_BALANCE;
                            l.tp = tp, l.pp = pp, l.vpp = vpp, l.ep = ep, l.etp = etp, l.dp = dp, l.micro_batch = mb, l.recompute = RCS[ri];
                            SimResult r;
                            if (sim_step(c, cl, &l, &r) != MOE_OK) continue;   // (a size the schedule refuses)
                            found++;
                            if (!r.fits) continue;
                            if (kept == all_cap) {
                                all_cap = all_cap ? 2 * all_cap : 256;
                                all = moe_realloc(all, all_cap * sizeof *all);
                            }
                            all[kept++] = (SimCandidate){l, r};
                        }
                    }
                }
            }
        }
    }
    if (kept) qsort(all, kept, sizeof *all, by_speed);
    const int k = kept < cap ? kept : cap;
    if (k) memcpy(out, all, k * sizeof *all);
    moe_free(all);
    *n = kept;
    (void)found;
    return MOE_OK;
}
