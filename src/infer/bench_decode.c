// Decoding speed over a KV cache (moe bench --decode): what bench/mla_decode.sh measures.
#include <stdlib.h>
#include <string.h>
#include "../base/base.h"
#include "infer.h"

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int infer_bench_decode(Model *m, int ctx, const int *chunks, int n_chunks, int reps, int mla_form, DecodeTiming *out) {
    const MoeConfig *c = &m->cfg;
    int chunk = 0;
    for (int i = 0; i < n_chunks; i++) {
        if (chunks[i] < 1) MOE_ERR("decode bench: chunks of new tokens must be positive, got %d", chunks[i]);
        chunk = imax(chunk, chunks[i]);
    }
    if (ctx < 1 || reps < 1 || n_chunks < 1 || n_chunks > DECODE_MAX_CHUNKS) MOE_ERR("decode bench: context, chunks and repetitions must be positive");
    if (ctx + chunk > c->max_position_embeddings)
        MOE_ERR("decode bench: %d cached + %d new tokens exceed max_position_embeddings %d", ctx, chunk, c->max_position_embeddings);
    const int L = c->num_hidden_layers, R = ctx + chunk, Nmax = imax(ctx, chunk);
    int wk, wv;
    kv_cache_widths(c, &wk, &wv);
    KvCache cache = {R, MOE_NEW(float *, L), MOE_NEW(float *, L)};
    for (int l = 0; l < L; l++) {
        cache.k[l] = MOE_NEW(float, (size_t)R * wk);
        cache.v[l] = wv ? MOE_NEW(float, (size_t)R * wv) : NULL;
    }
    Acts a;
    acts_alloc(&a, m, Nmax, ACTS_INFER);
    Batch b;
    batch_alloc(&b, Nmax, 1);
    int *targets_buf = b.targets, *slot = MOE_NEW(int, Nmax);
    b.targets = NULL; b.n_seq = 0;
    Rng r;
    rng_seed(&r, 11);
    ForwardOpts fo = {.train = false, .cache = &cache, .slot = slot, .mla_form = mla_form};
    ForwardOut fout;
    double *ts = MOE_NEW(double, reps);
    int rc = MOE_OK;
    // the prefill: ctx tokens in one forward pass, the last one's logits
    for (int n = 0; n < ctx; n++) { b.tokens[n] = (int)rng_below(&r, (unsigned)imin(c->vocab_size, 256)); b.pos[n] = n; b.kv_lo[n] = 0; slot[n] = n; }
    b.N = ctx; a.n_out = 1; a.out_rows[0] = ctx - 1;
    double t0 = time_now();
    rc = model_forward(m, &a, &b, &fo, &fout);
    out->prefill_s = time_now() - t0;
    // chunks of new tokens over the ctx cached ones, at the same positions each time (the
    // cache keeps its length); every new token's logits, as speculation verifies them
    for (int k = 0; k < n_chunks && rc == MOE_OK; k++) {
        const int nc = chunks[k];
        for (int i = 0; i < reps && rc == MOE_OK; i++) {
            for (int n = 0; n < nc; n++) {
                b.tokens[n] = (int)rng_below(&r, (unsigned)imin(c->vocab_size, 256)); b.pos[n] = ctx + n; b.kv_lo[n] = 0;
                slot[n] = ctx + n; a.out_rows[n] = n;
            }
            b.N = nc; a.n_out = nc;
            t0 = time_now();
            rc = model_forward(m, &a, &b, &fo, &fout);
            ts[i] = time_now() - t0;
        }
        qsort(ts, reps, sizeof *ts, cmp_double);
        out->step_s[k] = ts[reps / 2];
    }
    b.targets = targets_buf;
    for (int l = 0; l < L; l++) { moe_free(cache.k[l]); moe_free(cache.v[l]); }
    moe_free(cache.k); moe_free(cache.v); moe_free(slot); moe_free(ts);
    batch_free(&b); acts_free(&a);
    return rc;
}
