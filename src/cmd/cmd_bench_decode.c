// moe bench --decode: prefill and decoding speed over a KV cache, and the cache's size a token.
#include <stdlib.h>
#include <string.h>
#include "../base/base.h"
#include "../kernels/gemm.h"
#include "cmd.h"

// the KV cache's bytes a token (f32, every layer of the stack)
static double kv_bytes_per_token(const MoeConfig *c) {
    int wk, wv;
    kv_cache_widths(c, &wk, &wv);
    return 4.0 * c->num_hidden_layers * (wk + wv);
}

int cmd_bench_decode(Args *a, const char *cfg) {
    (void)args_bool(a, "--decode");
    int ctx, reps, chunks[DECODE_MAX_CHUNKS], nc = 0;
    GenFlags gf;
    const char *cl = args_str(a, "--chunks", "1");
    if (!cl || cmd_threads(a) || args_int(a, "--seq", 512, &ctx) || args_int(a, "--steps", 5, &reps) || cmd_gen_flags(a, &gf))
        return cmd_fail("bench");
    for (const char *p = cl; *p && nc < DECODE_MAX_CHUNKS; nc++) {   // a comma-separated list
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || (*end && *end != ',') || v < 1 || v > 1 << 20) {
            moe_seterr("--chunks must be positive integers separated by commas, got \"%s\"", cl);
            return cmd_fail("bench");
        }
        chunks[nc] = (int)v;
        p = *end ? end + 1 : end;
    }
    bool json = args_bool(a, "--json"), kv_only = args_bool(a, "--kv-only");
    if (args_finish(a)) return cmd_fail("bench");
    MoeConfig c;
    if (config_load(&c, cfg)) return cmd_fail("bench");
    GenOpts go;
    if (cmd_gen_opts(&gf, &c, &go)) return cmd_fail("bench");
    const double kvb = kv_bytes_per_token(&c);
    const char *form = !config_is_mla(&c) ? "gqa" : go.mla_form == MLA_FORM_ABSORBED ? "absorbed"
                       : go.mla_form == MLA_FORM_EXPANDED ? "expanded" : "auto";
    if (kv_only) {
        if (json) printf("{\"kv_bytes_per_token\":%.0f,\"layers\":%d}\n", kvb, c.num_hidden_layers);
        else printf("%s: KV cache %.0f bytes a token (%d layers, f32)\n", cfg, kvb, c.num_hidden_layers);
        return 0;
    }
    Model m;
    model_build(&m, &c, false);
    model_init_weights(&m, 1);
    DecodeTiming t;
    int rc = infer_bench_decode(&m, ctx, chunks, nc, reps, go.mla_form, &t);
    if (rc == MOE_OK && json) {
        printf("{\"form\":\"%s\",\"ctx\":%d,\"prefill_ms\":%.3f,\"kv_bytes_per_token\":%.0f,\"threads\":%d,\"blas\":\"%s\",\"steps\":[",
               form, ctx, 1e3 * t.prefill_s, kvb, kernels_threads(), kernels_blas_name());
        for (int k = 0; k < nc; k++) printf("%s{\"chunk\":%d,\"ms\":%.3f}", k ? "," : "", chunks[k], 1e3 * t.step_s[k]);
        printf("]}\n");
    } else if (rc == MOE_OK) {
        printf("%s (%s): prefill of %d tokens %.2f ms; KV cache %.0f bytes a token\n", cfg, form, ctx, 1e3 * t.prefill_s, kvb);
        for (int k = 0; k < nc; k++)
            printf("  %d new tokens over them: %.3f ms (%.3f ms a token)\n", chunks[k], 1e3 * t.step_s[k], 1e3 * t.step_s[k] / chunks[k]);
    }
    model_free(&m);
    return rc ? cmd_fail("bench") : 0;
}
