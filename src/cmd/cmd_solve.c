#include <stdlib.h>
#include <string.h>
#include "../base/base.h"
#include "../infer/infer.h"
#include "../io/checkpoint.h"
#include "cmd.h"

static const char *HELP =
    "usage: moe solve --ckpt DIR [QUESTION...]\n"
    "  one greedy answer line per question; questions from stdin lines when none are given\n"
    "  --latency prints the time per answer to stderr\n";

int cmd_solve(int argc, char **argv) {
    Args a;
    args_init(&a, argc, argv, "solve");
    if (args_bool(&a, "--help")) { fputs(HELP, stdout); return 0; }
    const char *ckpt = cmd_required(&a, "--ckpt");
    if (!ckpt) return cmd_fail("solve");
    if (cmd_threads(&a)) return cmd_fail("solve");
    bool latency = args_bool(&a, "--latency");
    char **pos = MOE_NEW(char *, argc);
    int n = args_positionals(&a, pos, argc);
    if (args_finish(&a)) { moe_free(pos); return cmd_fail("solve"); }
    Model m;
    if (ckpt_load_model(ckpt, &m, false)) { moe_free(pos); return cmd_fail("solve"); }
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
        rc = generate_greedy(&m, &tk, &q, &ql, 1, &ans, 1);
        if (rc == MOE_OK) {
            printf("%s\n", ans);
            fflush(stdout);
            if (latency) fprintf(stderr, "%.1f ms\n", 1e3 * (time_now() - t0));
        }
        moe_free(ans);
    }
    moe_free(pos);
    tokenizer_free(&tk);
    model_free(&m);
    return rc ? cmd_fail("solve") : 0;
}
