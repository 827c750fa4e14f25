#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../base/base.h"
#include "../base/fileio.h"
#include "../io/checkpoint.h"
#include "cmd.h"

static const char *HELP =
    "usage: moe export --ckpt DIR --format hf|moe --out DIR2 [--bf16]\n"
    "  hf: writes the checkpoint as a Hugging Face directory that the reference library loads with\n"
    "  from_pretrained: config.json in the key names of deepseek_v3, qwen3_moe or mixtral (the\n"
    "  family that computes the same math; an error names what has none), the weights under\n"
    "  that family's names, and the checkpoint's tokenizer.json if it has one\n"
    "  moe: the model alone as moe.c's checkpoint (config.json, model.safetensors; no training\n"
    "  state), for shipping (--bf16: half the bytes; moe.c computes in f32 either way)\n";

int cmd_export(int argc, char **argv) {
    Args a;
    args_init(&a, argc, argv, "export");
    if (args_bool(&a, "--help")) { fputs(HELP, stdout); return 0; }
    const char *ckpt = cmd_required(&a, "--ckpt");
    if (!ckpt) return cmd_fail("export");
    const char *out = cmd_required(&a, "--out");
    if (!out) return cmd_fail("export");
    const char *fmt = args_str(&a, "--format", "hf");
    bool bf16 = args_bool(&a, "--bf16");
    if (!fmt || args_finish(&a)) return cmd_fail("export");
    if (strcmp(fmt, "hf") && strcmp(fmt, "moe")) { moe_seterr("--format must be hf or moe, got \"%s\"", fmt); return cmd_fail("export"); }
    if (path_exists(out)) { moe_seterr("%s: already exists; refusing to overwrite it", out); return cmd_fail("export"); }
    Model m;
    if (ckpt_load_model(ckpt, &m, false)) return cmd_fail("export");
    MoeConfig target = m.cfg;
    int rc = strcmp(fmt, "moe") ? config_hf_family(&m.cfg, &target) : MOE_OK;
    if (rc) {
        char why[512];
        snprintf(why, sizeof why, "%s", moe_errmsg());
        moe_seterr("%s: cannot export: %s", ckpt, why);
    }
    if (rc == MOE_OK) rc = strcmp(fmt, "moe") ? ckpt_export(out, &m, &target, bf16) : ckpt_save(out, &m, NULL, bf16);
    if (rc == MOE_OK) rc = tokenizer_copy_files(ckpt, out);   // the tokenizer goes with the weights
    if (rc == MOE_OK)
        fprintf(stderr, "moe export: %s: model_type %s, %.2fM parameters\n", out, MOE_FAMILY_NAMES[target.family],
                config_total_params(&target) / 1e6);
    model_free(&m);
    return rc ? cmd_fail("export") : 0;
}
