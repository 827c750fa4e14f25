#include <stdlib.h>
#include <string.h>
#include "../base/base.h"
#include "../infer/infer.h"
#include "../io/checkpoint.h"
#include "../io/safetensors.h"
#include "cmd.h"

static const char *HELP =
    "usage: moe eval --ckpt DIR --data FILE [--limit N] [--generate] [--json] [--batch B] [--show N]\n"
    "                [--logits OUT.safetensors] [--speculative on|off|auto] [--mla-form auto|absorbed|expanded]\n"
    "  mean cross-entropy over the answer tokens; --generate adds greedy exact match, the time\n"
    "  per answer and, when speculating, the fraction of the MTP module's drafts the model\n"
    "  accepted; --logits writes every position's logits of each example (ex<i>.logits [positions, vocab])\n";

// --logits: each example's logits at every position, as one safetensors file
static int write_logits(Model *m, const Dataset *d, int limit, const char *path) {
    const int n = limit > 0 && limit < d->n ? limit : d->n, V = m->cfg.vocab_size;
    int *rows = MOE_NEW(int, n + 1);
    float *lg;
    if (eval_logits(m, d, n, &lg, rows)) { moe_free(rows); return MOE_FAIL; }
    StWriteItem *it = MOE_NEW(StWriteItem, n + 1);
    char (*names)[32] = (char (*)[32])moe_alloc((size_t)(n + 1) * 32);
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        snprintf(names[i], 32, "ex%d.logits", i);
        it[i] = (StWriteItem){names[i], 2, {rows[i], V}, lg + off, NULL, NULL};
        off += (size_t)rows[i] * V;
    }
    int rc = st_write(path, it, n, ST_F32, NULL);
    moe_free(names); moe_free(it); moe_free(lg); moe_free(rows);
    return rc;
}

int cmd_eval(int argc, char **argv) {
    Args a;
    args_init(&a, argc, argv, "eval");
    if (args_bool(&a, "--help")) { fputs(HELP, stdout); return 0; }
    const char *ckpt = cmd_required(&a, "--ckpt");
    if (!ckpt) return cmd_fail("eval");
    const char *data = cmd_required(&a, "--data");
    if (!data) return cmd_fail("eval");
    int limit, batch, show;
    const char *fmt = args_str(&a, "--format", "auto");
    DataFormat df;
    if (cmd_threads(&a) || args_int(&a, "--limit", 0, &limit) || args_int(&a, "--batch", 64, &batch) ||
        args_int(&a, "--show", 0, &show) || data_format_parse(fmt, &df))
        return cmd_fail("eval");
    bool gen = args_bool(&a, "--generate"), json = args_bool(&a, "--json");
    const char *logits = args_str(&a, "--logits", NULL);
    GenFlags gf;
    if (cmd_gen_flags(&a, &gf)) return cmd_fail("eval");
    if (args_finish(&a)) return cmd_fail("eval");
    if (limit < 0) { moe_seterr("--limit must be positive, got %d", limit); return cmd_fail("eval"); }
    if (batch <= 0) { moe_seterr("--batch must be positive, got %d", batch); return cmd_fail("eval"); }
    Model m;
    if (ckpt_load_model(ckpt, &m, false)) return cmd_fail("eval");
    infer_weights_bf16(&m);
    GenOpts go;
    if (cmd_gen_opts(&gf, &m.cfg, &go)) { model_free(&m); return cmd_fail("eval"); }
    Tokenizer tk;   // the checkpoint's tokenizer.json, else bytes
    Dataset d;
    if (tokenizer_for_dir(&tk, ckpt, m.cfg.vocab_size)) { model_free(&m); return cmd_fail("eval"); }
    if (dataset_load_tok(&d, data, df, m.cfg.max_position_embeddings - 1, limit, &tk)) { tokenizer_free(&tk); model_free(&m); return cmd_fail("eval"); }
    if (d.skipped) fprintf(stderr, "moe eval: skipped %d examples longer than max_position_embeddings\n", d.skipped);
    double loss;
    long tokens;
    double t0 = time_now();
    int rc = eval_loss(&m, NULL, &d, limit, batch, &loss, &tokens);
    if (rc == MOE_OK && logits) rc = write_logits(&m, &d, limit, logits);
    double em = 0, gen_s = 0;
    GenStats st = {0};
    if (rc == MOE_OK && gen) {
        const char **qs = MOE_NEW(const char *, d.n);
        int *ql = MOE_NEW(int, d.n);
        char **ans = MOE_NEW(char *, d.n);   // zeroed: NULL where generation did not get to
        for (int i = 0; i < d.n; i++) qs[i] = dataset_question(&d, i, &ql[i]);
        double tg = time_now();
        rc = generate_greedy_ex(&m, &tk, qs, ql, d.n, ans, batch, &go, &st);
        gen_s = time_now() - tg;
        int hit = 0;
        for (int i = 0; rc == MOE_OK && i < d.n; i++) {
            int al;
            const char *ref = dataset_answer(&d, i, &al);
            bool ok = (int)strlen(ans[i]) == al && !memcmp(ans[i], ref, al);
            hit += ok;
            if (i < show) fprintf(stderr, "%s %.*s -> %s (expected %.*s)\n", ok ? "ok " : "BAD", ql[i], qs[i], ans[i], al, ref);
        }
        for (int i = 0; i < d.n; i++) moe_free(ans[i]);
        em = (double)hit / d.n;
        moe_free(qs); moe_free(ql); moe_free(ans);
    }
    double el = time_now() - t0;
    if (rc == MOE_OK) {
        if (json) {
            printf("{\"loss\":%.9g,\"tokens\":%ld,\"examples\":%d", loss, tokens, d.n);
            if (gen) printf(",\"exact_match\":%.6f,\"ms_per_answer\":%.3f,\"speculative\":%s", em, 1e3 * gen_s / d.n,
                            go.speculative ? "true" : "false");
            if (gen && go.speculative)
                printf(",\"drafts\":%ld,\"accepted_fraction\":%.6f", st.drafted, st.drafted ? (double)st.accepted / st.drafted : 0.0);
            if (gen) printf(",\"forwards\":%ld", st.forwards);
            printf("}\n");
        } else {
            printf("loss %.6f over %ld target tokens of %d examples", loss, tokens, d.n);
            if (gen) printf("; exact match %.4f (%.2f ms per answer)", em, 1e3 * gen_s / d.n);
            if (gen && go.speculative)
                printf("; %.1f%% of %ld drafts accepted", st.drafted ? 100.0 * st.accepted / st.drafted : 0.0, st.drafted);
            printf("  [%.1f s]\n", el);
        }
    }
    dataset_free(&d);
    tokenizer_free(&tk);
    infer_weights_bf16_off();
    model_free(&m);
    return rc ? cmd_fail("eval") : 0;
}
