#include <string.h>
#include "../base/base.h"
#include "infer.h"

// Forward passes only, in batches of examples; the logits of the target rows only.
int eval_loss(Model *m, const ExpertShard *sh, const Dataset *d, int limit, int batch, double *loss, long *tokens) {
    int n = limit > 0 && limit < d->n ? limit : d->n;
    int maxlen = 0;
    for (int i = 0; i < n; i++) maxlen = imax(maxlen, d->ex[i].len - 1);
    Acts a;
    acts_alloc(&a, m, batch * maxlen, ACTS_INFER | (sh && sh->comm ? ACTS_EP : 0));
    Batch b;
    batch_alloc(&b, batch * maxlen, batch);
    int *ids = MOE_NEW(int, batch);
    double sum = 0;
    long cnt = 0;
    int rc = MOE_OK;
    ForwardOpts fo = {.train = false, .shard = sh};
    for (int s = 0; s < n && rc == MOE_OK; s += batch) {
        int nb = imin(batch, n - s);
        for (int i = 0; i < nb; i++) ids[i] = s + i;
        batch_fill(&b, d, ids, nb);
        a.n_out = 0;
        for (int t = 0; t < b.N; t++)
            if (b.targets[t] >= 0) a.out_rows[a.n_out++] = t;
        ForwardOut fout;
        rc = model_forward(m, &a, &b, &fo, &fout);
        sum += fout.ce_sum;
        cnt += b.n_targets;
    }
    *loss = cnt ? sum / cnt : 0;
    *tokens = cnt;
    moe_free(ids); batch_free(&b); acts_free(&a);
    return rc;
}

// The logits of every position of each of the first n examples, one example per forward
// pass: out [sum of lengths, V], rows[i] the positions of example i.
int eval_logits(Model *m, const Dataset *d, int n, float **out, int *rows) {
    const int V = m->cfg.vocab_size;
    n = imin(n, d->n);
    long total = 0;
    int maxlen = 1;
    for (int i = 0; i < n; i++) { rows[i] = d->ex[i].len - 1; total += rows[i]; maxlen = imax(maxlen, rows[i]); }
    Acts a;
    acts_alloc(&a, m, maxlen, ACTS_INFER);
    Batch b;
    batch_alloc(&b, maxlen, 1);
    *out = MOE_NEW(float, (size_t)total * V + 1);
    ForwardOpts fo = {.train = false};
    int rc = MOE_OK;
    float *o = *out;
    for (int i = 0; i < n && rc == MOE_OK; i++) {
        batch_fill(&b, d, &i, 1);
        a.n_out = b.N;
        for (int t = 0; t < b.N; t++) a.out_rows[t] = t;
        ForwardOut fout;
        rc = model_forward(m, &a, &b, &fo, &fout);
        memcpy(o, a.logits, sizeof(float) * (size_t)b.N * V);
        o += (size_t)b.N * V;
    }
    batch_free(&b); acts_free(&a);
    if (rc) { moe_free(*out); *out = NULL; }
    return rc;
}
