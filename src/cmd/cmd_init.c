#include <string.h>
#include "../base/base.h"
#include "../io/checkpoint.h"
#include "cmd.h"

static const char *HELP =
    "usage: moe init --model CFG.json --out DIR [--seed S] [--bf16]\n"
    "  writes a freshly initialised checkpoint (config.json + model.safetensors) to DIR\n";

int cmd_init(int argc, char **argv) {
    Args a;
    args_init(&a, argc, argv, "init");
    if (args_bool(&a, "--help")) { fputs(HELP, stdout); return 0; }
    const char *cfg_path = cmd_required(&a, "--model");
    if (!cfg_path) return cmd_fail("init");
    const char *out = cmd_required(&a, "--out");
    if (!out) return cmd_fail("init");
    unsigned long long seed;
    if (args_u64(&a, "--seed", 1234, &seed)) return cmd_fail("init");
    bool bf16 = args_bool(&a, "--bf16");
    if (args_finish(&a)) return cmd_fail("init");
    MoeConfig c;
    if (config_load(&c, cfg_path)) return cmd_fail("init");
    if (ckpt_exists(out)) {
        moe_seterr("%s: already holds a checkpoint; refusing to overwrite it", out);
        return cmd_fail("init");
    }
    Model m;
    model_build(&m, &c, false);
    model_init_weights(&m, seed);
    int rc = ckpt_save(out, &m, NULL, bf16);
    if (rc == MOE_OK)
        fprintf(stderr, "moe init: %s: %.2fM parameters (%.2fM active per token)\n", out, config_total_params(&c) / 1e6,
                config_active_params(&c) / 1e6);
    model_free(&m);
    return rc ? cmd_fail("init") : 0;
}
