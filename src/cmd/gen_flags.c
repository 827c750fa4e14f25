// The decoding flags that solve and eval --generate share.
#include <string.h>
#include "../base/base.h"
#include "cmd.h"

int cmd_gen_flags(Args *a, GenFlags *f) {
    f->mla_form = args_str(a, "--mla-form", "auto");
    // off unless asked: measured slower than plain decoding on the small models trained here
    // (bench/RESULTS.md: 70% of drafts accepted, 24-44% more time per answer on pangu-tiny)
    f->speculative = args_str(a, "--speculative", "off");
    return f->mla_form && f->speculative ? MOE_OK : MOE_FAIL;
}

int cmd_gen_opts(const GenFlags *f, const MoeConfig *c, GenOpts *go) {
    gen_opts_default(go, c);
    if (!strcmp(f->mla_form, "auto")) go->mla_form = MLA_FORM_AUTO;
    else if (!strcmp(f->mla_form, "absorbed")) go->mla_form = MLA_FORM_ABSORBED;
    else if (!strcmp(f->mla_form, "expanded")) go->mla_form = MLA_FORM_EXPANDED;
    else MOE_ERR("--mla-form must be auto, absorbed or expanded, got \"%s\"", f->mla_form);
    if (!strcmp(f->speculative, "on")) go->speculative = true;
    else if (!strcmp(f->speculative, "off")) go->speculative = false;
    else if (strcmp(f->speculative, "auto")) MOE_ERR("--speculative must be on, off or auto, got \"%s\"", f->speculative);
    if (go->speculative && c->num_mtp_layers == 0)
        MOE_ERR("--speculative on needs a model with multi-token prediction (num_mtp_layers > 0)");
    return MOE_OK;
}
