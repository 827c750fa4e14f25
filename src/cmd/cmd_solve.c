#include <stdlib.h>
#include <string.h>
#include "../base/base.h"
#include "../infer/infer.h"
#include "../io/checkpoint.h"
#include "cmd.h"

static const char *HELP =
    "usage: moe solve [--ckpt DIR] [QUESTION...]\n"
    "  one greedy answer line per question; questions from stdin lines when none are given\n"
    "  --ckpt DIR       the model (default: the shipped solver, models/solver)\n"
    "  --latency prints the time per answer to stderr (with speculation: and the drafts accepted)\n"
    "  --speculative on|off|auto  draft with the first multi-token-prediction module, verify\n"
    "                   with the model (the answers are greedy decoding's); auto: when it has one;\n"
    "                   default off (slower on the small models measured, bench/RESULTS.md)\n"
    "  --mla-form auto|absorbed|expanded  how MLA attention reads its latent cache (auto: by cost)\n";

int cmd_solve(int argc, char **argv) {
    Args a;
    args_init(&a, argc, argv, "solve");
    if (args_bool(&a, "--help")) { fputs(HELP, stdout); return 0; }
    const char *ckpt = cmd_ckpt_or_solver(&a);
    if (!ckpt) return cmd_fail("solve");
    if (cmd_threads(&a)) return cmd_fail("solve");
    bool latency = args_bool(&a, "--latency");
    GenFlags gf;
    if (cmd_gen_flags(&a, &gf)) return cmd_fail("solve");
    char **pos = MOE_NEW(char *, argc);
    int n = args_positionals(&a, pos, argc);
    if (args_finish(&a)) { moe_free(pos); return cmd_fail("solve"); }
    mem_keep_freed();   // each answer allocates its cache and activations afresh
    Model m;
    if (ckpt_load_model(ckpt, &m, false)) { moe_free(pos); return cmd_fail("solve"); }
    infer_weights_bf16(&m);
    GenOpts go;
    if (cmd_gen_opts(&gf, &m.cfg, &go)) { moe_free(pos); model_free(&m); return cmd_fail("solve"); }
    Tokenizer tk;   // the checkpoint's tokenizer.json, else bytes
    if (tokenizer_for_dir(&tk, ckpt, m.cfg.vocab_size)) { moe_free(pos); model_free(&m); return cmd_fail("solve"); }
    int rc = MOE_OK;
    char line[4096];
    // stdin: answer line by line, so that an interactive user sees each answer at once
    bool from_stdin = n == 0;
    for (int i = 0; rc == MOE_OK; i++) {
        const char *q;
        if (from_stdin) {
            if (!fgets(line, sizeof line, stdin)) break;
            line[strcspn(line, "\r\n")] = 0;
            q = line;
        } else {
            if (i >= n) break;
            q = pos[i];
        }
        int ql = (int)strlen(q);
        char *ans = NULL;
        double t0 = time_now();
        GenStats st;
        rc = generate_greedy_ex(&m, &tk, &q, &ql, 1, &ans, 1, &go, &st);
        if (rc == MOE_OK) {
            printf("%s\n", ans);
            fflush(stdout);
            if (latency && go.speculative)
                fprintf(stderr, "%.1f ms, %ld of %ld drafts accepted\n", 1e3 * (time_now() - t0), st.accepted, st.drafted);
            else if (latency) fprintf(stderr, "%.1f ms\n", 1e3 * (time_now() - t0));
        }
        moe_free(ans);
    }
    moe_free(pos);
    tokenizer_free(&tk);
    infer_weights_bf16_off();
    model_free(&m);
    return rc ? cmd_fail("solve") : 0;
}
