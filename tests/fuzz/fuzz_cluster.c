// libFuzzer: the bytes are a cluster file (moe simulate --cluster) and, the same bytes, a run
// log for --load. Each reader either refuses with one line naming the file, or returns
// numbers simulate can use: rates positive and finite, fractions at most 1, a skew >= 1.
#include <math.h>
#include <stdint.h>
#include "../../src/sim/sim.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    Cluster cl;
    if (cluster_parse(&cl, (const char *)data, size, "fuzz.json") != MOE_OK) fuzz_check_message("fuzz.json");
    else {
        const double pos[] = {cl.peak, cl.gemm_peak, cl.mfu_peak, cl.mem_bytes, cl.mem_bw, cl.intra_bw, cl.inter_bw,
                              cl.gemm_max, cl.attn_eff, cl.mem_eff, cl.coll_max};
        for (size_t i = 0; i < sizeof pos / sizeof *pos; i++)
            if (!(pos[i] > 0 && isfinite(pos[i]))) { fprintf(stderr, "fuzz: cluster rate %zu is %g\n", i, pos[i]); abort(); }
        if (cl.devices < 1 || cl.devices_per_node < 1 || cl.gemm_max > 1 || cl.comm_share >= 1 || cl.comm_share < 0 || !cl.name[0]) abort();
    }
    char *text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = 0;
    double skew;
    if (sim_skew_parse(text, size, "fuzz.jsonl", 4, 20, &skew) != MOE_OK) fuzz_check_message("fuzz.jsonl");
    else if (!(skew >= 1 - 1e-9 && isfinite(skew))) { fprintf(stderr, "fuzz: skew %g\n", skew); abort(); }
    free(text);
    return 0;
}
