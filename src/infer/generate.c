#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "../base/base.h"
#include "infer.h"

static int argmax(const float *z, int V) {
    int best = 0;
    for (int i = 1; i < V; i++) if (z[i] > z[best]) best = i;
    return best;
}

// One chunk of S sequences: prefill every prompt in one forward, then decode all the
// unfinished ones together, one token each per forward. Sequence s owns cache slots
// [s * R, (s+1) * R).
static int generate_chunk(Model *m, const Tokenizer *tk, const char *const *q, const int *qlen, int S, char **answers) {
    const MoeConfig *c = &m->cfg;
    // the prompts first: their lengths in tokens size the cache
    TokIds *pr = MOE_NEW(TokIds, S);
    int maxq = 0, total = 0, longest = 0, rc = MOE_OK;
    for (int s = 0; s < S && rc == MOE_OK; s++) {
        rc = tokenizer_prompt(tk, q[s], qlen[s], &pr[s]);
        if (pr[s].n > maxq) { maxq = (int)pr[s].n; longest = s; }
        total += (int)pr[s].n;
    }
    if (rc == MOE_OK && maxq >= c->max_position_embeddings)
        { rc = MOE_FAIL; moe_seterr("question of %d bytes is too long for max_position_embeddings %d", qlen[longest], c->max_position_embeddings); }
    for (int s = 0; s < S && rc == MOE_OK; s++)
        if (pr[s].n > 4096) { rc = MOE_FAIL; moe_seterr("question of %d bytes is too long", qlen[s]); }
    if (rc != MOE_OK) {
        for (int s = 0; s < S; s++) tokids_free(&pr[s]);
        moe_free(pr);
        return rc;
    }
    // answers stop at 64 tokens or at the model's last position, whichever comes first
    const int R = imin(maxq + GEN_MAX_NEW, c->max_position_embeddings);
    const int L = c->num_hidden_layers, V = c->vocab_size;
    int wk, wv;
    kv_cache_widths(c, &wk, &wv);
    KvCache cache = {S * R, MOE_NEW(float *, L), MOE_NEW(float *, L)};
    for (int l = 0; l < L; l++) {
        cache.k[l] = MOE_NEW(float, (size_t)S * R * wk);
        cache.v[l] = wv ? MOE_NEW(float, (size_t)S * R * wv) : NULL;
    }
    Acts a;
    acts_alloc(&a, m, total, ACTS_INFER);
    Batch b;
    batch_alloc(&b, total, S);
    int *slot = MOE_NEW(int, total), *len = MOE_NEW(int, S), *done = MOE_NEW(int, S), *idx = MOE_NEW(int, S),
        *nxt = MOE_NEW(int, S), *n_out = MOE_NEW(int, S);
    size_t *alen = MOE_NEW(size_t, S), *acap = MOE_NEW(size_t, S);
    char **out = answers;
    for (int s = 0; s < S; s++) { out[s] = MOE_NEW(char, GEN_MAX_NEW + 1); acap[s] = GEN_MAX_NEW + 1; }   // zeroed: empty strings
    // prefill
    int n = 0;
    for (int s = 0; s < S; s++) {
        for (int i = 0; i < pr[s].n; i++, n++) {
            b.tokens[n] = pr[s].id[i]; b.pos[n] = i; b.kv_lo[n] = s * R; slot[n] = s * R + i;
        }
        a.out_rows[s] = n - 1;
        len[s] = (int)pr[s].n;
    }
    int *targets_buf = b.targets;   // no targets while generating; batch_free wants it back
    b.N = n; b.targets = NULL; b.n_seq = 0;
    a.n_out = S;
    ForwardOpts fo = {.train = false, .cache = &cache, .slot = slot};
    ForwardOut fout;
    if (rc == MOE_OK) rc = model_forward(m, &a, &b, &fo, &fout);
    for (int s = 0; s < S && rc == MOE_OK; s++) nxt[s] = argmax(a.logits + (size_t)s * V, V);
    while (rc == MOE_OK) {
        int na = 0;
        for (int s = 0; s < S; s++) {
            if (done[s]) continue;
            // n_out counts the tokens that added bytes to the answer (a C string: NULs add none)
            int na_s = n_out[s];
            if (nxt[s] == tk->eos || na_s >= GEN_MAX_NEW || len[s] >= R) { done[s] = 1; continue; }
            n_out[s] += tokenizer_decode_append(tk, nxt[s], &out[s], &alen[s], &acap[s]) > 0;
            if (na_s + 1 >= GEN_MAX_NEW) { done[s] = 1; continue; }
            idx[na] = s;
            b.tokens[na] = nxt[s]; b.pos[na] = len[s]; b.kv_lo[na] = s * R; slot[na] = s * R + len[s];
            a.out_rows[na] = na;
            len[s]++;
            na++;
        }
        if (na == 0) break;
        b.N = na; a.n_out = na;
        rc = model_forward(m, &a, &b, &fo, &fout);
        for (int i = 0; i < na && rc == MOE_OK; i++) nxt[idx[i]] = argmax(a.logits + (size_t)i * V, V);
    }
    b.targets = targets_buf;
    for (int l = 0; l < L; l++) { moe_free(cache.k[l]); moe_free(cache.v[l]); }
    moe_free(cache.k); moe_free(cache.v);
    moe_free(slot); moe_free(len); moe_free(done); moe_free(idx); moe_free(nxt); moe_free(n_out); moe_free(alen); moe_free(acap);
    for (int s = 0; s < S; s++) tokids_free(&pr[s]);
    moe_free(pr);
    batch_free(&b); acts_free(&a);
    return rc;
}

int generate_greedy(Model *m, const Tokenizer *tk, const char *const *q, const int *qlen, int n, char **answers, int batch) {
    if (batch <= 0) batch = 64;
    for (int s = 0; s < n; s += batch)
        MOE_TRY(generate_chunk(m, tk, q + s, qlen + s, imin(batch, n - s), answers + s));
    return MOE_OK;
}

