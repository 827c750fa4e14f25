#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "../base/base.h"
#include "../io/safetensors.h"
#include "../io/checkpoint.h"
#include "../optim/optim.h"
#include "../train/train.h"
#include "cmd.h"

static const char *HELP =
    "usage: moe grad --ckpt DIR --data FILE --limit N --out G.safetensors [--micro-batch M]\n"
    "                [--recompute none|selective|full] [--act-dtype f32|bf16] [--json]\n"
    "  gradient of the training loss (balance losses included) of the first N examples taken\n"
    "  as one batch; one tensor per parameter, same names. --json prints the loss pieces.\n"
    "  Exact by default (--recompute none --act-dtype f32).\n";

int cmd_grad(int argc, char **argv) {
    Args a;
    args_init(&a, argc, argv, "grad");
    if (args_bool(&a, "--help")) { fputs(HELP, stdout); return 0; }
    const char *ckpt, *data, *out;
    if (!(ckpt = cmd_required(&a, "--ckpt")) || !(data = cmd_required(&a, "--data")) || !(out = cmd_required(&a, "--out")))
        return cmd_fail("grad");
    int limit, micro, mode;
    const char *fmt = args_str(&a, "--format", "auto");
    DataFormat df;
    if (cmd_threads(&a) || args_int(&a, "--limit", 0, &limit) || args_int(&a, "--micro-batch", 0, &micro) ||
        data_format_parse(fmt, &df) || cmd_acts_mode(&a, &mode, 1))
        return cmd_fail("grad");
    bool json = args_bool(&a, "--json");
    if (args_finish(&a)) return cmd_fail("grad");
    if (limit <= 0) { moe_seterr("--limit must be positive, got %d", limit); return cmd_fail("grad"); }
    if (micro < 0) { moe_seterr("--micro-batch must be positive, got %d", micro); return cmd_fail("grad"); }
    Model m;
    if (ckpt_load_model(ckpt, &m, true)) return cmd_fail("grad");
    Dataset d;
    if (dataset_load(&d, data, df, m.cfg.max_position_embeddings, limit)) { model_free(&m); return cmd_fail("grad"); }
    int n = d.n, maxlen = 0;
    if (micro == 0 || micro > n) micro = n;
    for (int i = 0; i < n; i++) maxlen = imax(maxlen, d.ex[i].len - 1);
    Acts acts;
    acts_alloc(&acts, &m, micro * maxlen, mode);
    Batch b;
    batch_alloc(&b, micro * maxlen, micro);
    int *ids = MOE_NEW(int, n);
    for (int i = 0; i < n; i++) ids[i] = i;
    StepLoss sl;
    // the first micro-batch writes every gradient without reading it: a NaN left here would
    // show a gradient that it missed (the PyTorch-oracle tests read this output)
    for (size_t i = 0; i < m.n_params; i++) m.grads[i] = NAN;
    int rc = train_accumulate(&m, &acts, &b, &d, ids, n, micro, &sl);
    if (rc == MOE_OK) {
        StWriteItem *it = MOE_NEW(StWriteItem, m.n_tensors);
        for (int i = 0; i < m.n_tensors; i++) {
            ParamTensor *t = &m.tensors[i];
            it[i] = (StWriteItem){t->name, t->ndim, {t->shape[0], t->shape[1]}, m.grads + t->offset, NULL, NULL};
        }
        char meta[256];
        snprintf(meta, sizeof meta, "{\"loss\":\"%.9g\",\"ce\":\"%.9g\",\"aux\":\"%.9g\"}", sl.loss, sl.ce, sl.aux);
        rc = st_write(out, it, m.n_tensors, ST_F32, meta);
        moe_free(it);
        if (rc == MOE_OK && json)
            printf("{\"loss\":%.9g,\"ce\":%.9g,\"aux\":%.9g,\"tokens\":%ld,\"targets\":%ld,\"examples\":%d}\n", sl.loss, sl.ce,
                   sl.aux, sl.tokens, sl.targets, n);
    }
    moe_free(ids); batch_free(&b); acts_free(&acts); dataset_free(&d); model_free(&m);
    return rc ? cmd_fail("grad") : 0;
}
