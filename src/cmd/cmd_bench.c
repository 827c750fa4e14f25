#include <stdlib.h>
#include <string.h>
#include "../base/base.h"
#include "../base/prof.h"
#include "../kernels/gemm.h"
#include "../io/checkpoint.h"
#include "../optim/optim.h"
#include "../train/train.h"
#include "cmd.h"

static const char *HELP =
    "usage: moe bench --model CFG.json --batch B --seq T [--steps N] [--threads N] [--profile]\n"
    "                 [--recompute none|selective|full] [--act-dtype f32|bf16] [--json]\n"
    "  training-step speed (forward, backward, AdamW) on random tokens\n"
    "  (defaults as in train: --recompute selective --act-dtype bf16)\n"
    "usage: moe bench --model CFG.json --decode [--seq C] [--chunks N,..] [--steps R] [--mla-form F] [--kv-only] [--json]\n"
    "  inference over a KV cache: the prefill of C random tokens, then for each N the median of\n"
    "  R forward passes of N new tokens over them (N 1: a decoding step); the cache's bytes a token\n";

int cmd_bench(int argc, char **argv) {
    Args a;
    args_init(&a, argc, argv, "bench");
    if (args_bool(&a, "--help")) { fputs(HELP, stdout); return 0; }
    const char *cfg = cmd_required(&a, "--model");
    if (!cfg) return cmd_fail("bench");
    if (args_has(&a, "--decode")) return cmd_bench_decode(&a, cfg);
    int B, T, steps, mode;
    if (cmd_threads(&a) || args_int(&a, "--batch", 8, &B) || args_int(&a, "--seq", 256, &T) ||
        args_int(&a, "--steps", 5, &steps) || cmd_acts_mode(&a, &mode, 0))
        return cmd_fail("bench");
    bool json = args_bool(&a, "--json"), profile = args_bool(&a, "--profile");
    if (args_finish(&a)) return cmd_fail("bench");
    if (B <= 0 || T <= 0 || steps <= 0) { moe_seterr("--batch, --seq and --steps must be positive"); return cmd_fail("bench"); }
    MoeConfig c;
    if (config_load(&c, cfg)) return cmd_fail("bench");
    if (T > c.max_position_embeddings) { moe_seterr("--seq %d exceeds max_position_embeddings %d", T, c.max_position_embeddings); return cmd_fail("bench"); }
    if (cmd_check_fits(&c, B * T, mode, cfg)) return cmd_fail("bench");
    Model m;
    model_build(&m, &c, true);
    model_init_weights(&m, 1);
    AdamW opt;
    adamw_alloc(&opt, m.n_params);
    OptConfig oc;
    opt_defaults(&oc);
    // random byte tokens as B text windows of T+1 tokens (every position a target)
    Dataset d = {0};
    d.n = B; d.n_tok = (long)B * (T + 1);
    d.tok = MOE_NEW(int, d.n_tok);   // dataset_free frees them
    d.ex = MOE_NEW(Example, B);
    d.path = moe_strdup("(random tokens)");
    Rng r;
    rng_seed(&r, 7);
    for (long i = 0; i < d.n_tok; i++) d.tok[i] = (int)rng_below(&r, 256);
    for (int i = 0; i < B; i++) d.ex[i] = (Example){(long)i * (T + 1), T + 1, 1, 0, 0, 0, 0};
    Acts acts;
    acts_alloc(&acts, &m, B * T, mode);
    Batch b;
    batch_alloc(&b, B * T, B);
    int *ids = MOE_NEW(int, B);
    for (int i = 0; i < B; i++) ids[i] = i;
    double peak = kernels_measure_peak_gflops(0.5) * 1e9;
    StepLoss sl;
    double best = 1e30;
    int rc = MOE_OK;
    for (int s = 0; s <= steps && rc == MOE_OK; s++) {   // step 0 warms up
        if (s == 1) { prof_enabled = profile; prof_reset(); }
        double t0 = time_now();
        rc = train_accumulate(&m, &acts, &b, &d, ids, B, B, &sl);
        double to = prof_begin();
        adamw_step(&opt, &m, &oc, oc.lr, grad_clip_scale(grad_norm(m.grads, m.n_params), oc.clip));
        prof_end(PROF_OPTIM, false, to, 0);
        double dt = time_now() - t0;
        if (s > 0 && dt < best) best = dt;
    }
    if (rc == MOE_OK && profile) prof_print(steps);
    if (rc == MOE_OK) {
        double tps = (double)B * T / best, mfu = config_flops_per_token(&c, T) * tps / peak;
        double rss = peak_rss_kb() / 1024.0;
        if (json)
            printf("{\"tokens_per_s\":%.1f,\"step_ms\":%.2f,\"mfu\":%.4f,\"peak_rss_mb\":%.1f,\"peak_gflops\":%.1f,\"threads\":%d,\"blas\":\"%s\"}\n",
                   tps, best * 1e3, mfu, rss, peak / 1e9, kernels_threads(), kernels_blas_name());
        else
            printf("%s: %.0f tokens/s, %.1f ms/step, MFU %.1f%% of %.1f GFLOP/s (%d threads, %s), peak RSS %.0f MB\n", cfg, tps,
                   best * 1e3, 100 * mfu, peak / 1e9, kernels_threads(), kernels_blas_name(), rss);
    }
    moe_free(ids); batch_free(&b); acts_free(&acts); dataset_free(&d); adamw_free(&opt); model_free(&m);
    return rc ? cmd_fail("bench") : 0;
}
