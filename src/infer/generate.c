// Greedy decoding with a KV cache, batched over sequences; with multi-token prediction,
// self-speculative: the first MTP module drafts the token after the main head's, the next
// forward pass verifies it, and the answer is the one plain greedy decoding gives.
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

// One chunk of S sequences and what generation knows of each. Sequence s owns cache slots
// [s * R, (s+1) * R); position i of it is slot s * R + i, in the stack's layers' caches and
// in the MTP module's.
typedef struct {
    const Tokenizer *tk;
    int S, R, D;
    int *len;              // [S] positions in the cache (fed to the stack)
    int *nxt;              // [S] the next greedy token, not fed yet
    int *draft;            // [S] the MTP module's guess at the token after nxt (-1: none)
    int *mlen;             // [S] positions the MTP module has read
    int *done, *n_out;     // [S] finished; tokens that added bytes to the answer
    int *tok;              // [S, R+1] the tokens at each position
    float *hs;             // [S*R, D] the stack's output at each position (the MTP module's input)
    char **out;
    size_t *alen, *acap;
} GenState;

// Greedy token t is the answer's next: 1 when it is to be fed at position len[s], 0 when the
// answer ends (at <eos>, GEN_MAX_NEW tokens or the sequence's last slot)
static int gen_take(GenState *g, int s, int t) {
    const int na_s = g->n_out[s];   // n_out counts the tokens that added bytes (a C string: NULs add none)
    if (t == g->tk->eos || na_s >= GEN_MAX_NEW || g->len[s] >= g->R) { g->done[s] = 1; return 0; }
    g->n_out[s] += tokenizer_decode_append(g->tk, t, &g->out[s], &g->alen[s], &g->acap[s]) > 0;
    if (na_s + 1 >= GEN_MAX_NEW) { g->done[s] = 1; return 0; }
    return 1;
}

// The MTP module over the positions [mlen, len) of the unfinished sequences (position i reads
// the token at i + 1, the one at len being nxt): its drafts from each one's last position
static int gen_draft(Model *m, Acts *a, Batch *b, const KvCache *cache, GenState *g, int *slot, float *h, int mla_form) {
    const int D = g->D, R = g->R, V = m->cfg.vocab_size;
    int n = 0, *row = MOE_NEW(int, g->S);
    a->n_out = 0;
    for (int s = 0; s < g->S; s++) {
        row[s] = -1;
        g->draft[s] = -1;
        if (g->done[s] || g->mlen[s] >= g->len[s]) continue;
        g->tok[(size_t)s * (R + 1) + g->len[s]] = g->nxt[s];
        for (int i = g->mlen[s]; i < g->len[s]; i++, n++) {
            b->tokens[n] = g->tok[(size_t)s * (R + 1) + i + 1]; b->pos[n] = i; b->kv_lo[n] = s * R; slot[n] = s * R + i;
            memcpy(h + (size_t)n * D, g->hs + ((size_t)s * R + i) * D, sizeof(float) * D);
        }
        a->out_rows[row[s] = a->n_out++] = n - 1;
        g->mlen[s] = g->len[s];
    }
    int rc = MOE_OK;
    if (n > 0) {
        b->N = n;
        ForwardOpts fo = {.train = false, .cache = cache, .slot = slot, .mla_form = mla_form, .mtp_k = 1, .mtp_h = h};
        ForwardOut fout;
        rc = model_forward(m, a, b, &fo, &fout);
        for (int s = 0; s < g->S && rc == MOE_OK; s++)
            if (row[s] >= 0) g->draft[s] = argmax(a->logits + (size_t)row[s] * V, V);
    }
    moe_free(row);
    return rc;
}

// the prompts' tokens (*maxq the longest, *total all); an error for a prompt the model cannot hold
static int gen_prompts(const Tokenizer *tk, const MoeConfig *c, const char *const *q, const int *qlen, int S, TokIds *pr,
                       int *maxq, int *total) {
    int longest = 0;
    for (int s = 0; s < S; s++) {
        MOE_TRY(tokenizer_prompt(tk, q[s], qlen[s], &pr[s]));
        if (pr[s].n > *maxq) { *maxq = (int)pr[s].n; longest = s; }
        *total += (int)pr[s].n;
    }
    if (*maxq >= c->max_position_embeddings)
        MOE_ERR("question of %d bytes is too long for max_position_embeddings %d", qlen[longest], c->max_position_embeddings);
    for (int s = 0; s < S; s++)
        if (pr[s].n > 4096) MOE_ERR("question of %d bytes is too long", qlen[s]);
    return MOE_OK;
}

// Each unfinished sequence feeds nxt, and its draft after it when there is one: the rows of
// the batch (row[s] sequence s's first, drafted[s] whether a draft follows it); 0 when all are done
static int gen_feed(GenState *g, Acts *a, Batch *b, int *slot, int *row, int *drafted) {
    const int R = g->R;
    int na = 0;
    for (int s = 0; s < g->S; s++) {
        if (g->done[s] || !gen_take(g, s, g->nxt[s])) continue;
        const int p = g->len[s];
        drafted[s] = g->draft[s] >= 0 && p + 1 < R;
        row[s] = na;
        for (int j = 0; j <= drafted[s]; j++, na++) {
            const int t = j ? g->draft[s] : g->nxt[s];
            b->tokens[na] = t; b->pos[na] = p + j; b->kv_lo[na] = s * R; slot[na] = s * R + p + j;
            g->tok[(size_t)s * (R + 1) + p + j] = t;
            a->out_rows[na] = na;
        }
    }
    b->N = na; a->n_out = na;
    return na;
}

// After the forward of gen_feed's rows: nxt is in the cache; a draft that greedy decoding
// agrees with is too, and the token after it is known (logits [rows, V]; h the stream the
// head read, kept for the MTP module when speculating)
static void gen_accept(GenState *g, const float *logits, int V, const float *h, const int *row, const int *drafted, GenStats *st) {
    const int R = g->R, D = g->D;
    for (int s = 0; s < g->S; s++) {
        if (g->done[s]) continue;
        const int r = row[s], p = g->len[s], g1 = argmax(logits + (size_t)r * V, V);
        if (g->hs) memcpy(g->hs + ((size_t)s * R + p) * D, h + (size_t)r * D, sizeof(float) * (drafted[s] + 1) * D);
        g->len[s] = p + 1;
        g->nxt[s] = g1;
        if (!drafted[s]) continue;
        st->drafted++;
        if (g1 != g->draft[s]) continue;
        st->accepted++;
        if (!gen_take(g, s, g1)) continue;
        g->len[s] = p + 2;
        g->nxt[s] = argmax(logits + (size_t)(r + 1) * V, V);
    }
}

static int generate_chunk(Model *m, const Tokenizer *tk, const char *const *q, const int *qlen, int S, char **answers,
                          const GenOpts *go, GenStats *st) {
    const MoeConfig *c = &m->cfg;
    // the prompts first: their lengths in tokens size the cache
    TokIds *pr = MOE_NEW(TokIds, S);
    int maxq = 0, total = 0;
    int rc = gen_prompts(tk, c, q, qlen, S, pr, &maxq, &total);
    if (rc != MOE_OK) {
        for (int s = 0; s < S; s++) tokids_free(&pr[s]);
        moe_free(pr);
        return rc;
    }
    const bool spec = go->speculative;
    // answers stop at 64 tokens or at the model's last position, whichever comes first
    const int R = imin(maxq + GEN_MAX_NEW, c->max_position_embeddings);
    const int L = c->num_hidden_layers, Lc = spec ? L + 1 : L, V = c->vocab_size, D = c->hidden_size;
    int wk, wv;
    kv_cache_widths(c, &wk, &wv);
    // the stack's layers, and under speculation the first MTP module's (layer L)
    KvCache cache = {S * R, MOE_NEW(float *, Lc), MOE_NEW(float *, Lc)};
    for (int l = 0; l < Lc; l++) {
        cache.k[l] = MOE_NEW(float, (size_t)S * R * wk);
        cache.v[l] = wv ? MOE_NEW(float, (size_t)S * R * wv) : NULL;
    }
    const int Nmax = imax(total, 2 * S);   // the prefill, or two tokens a sequence
    Acts a;
    acts_alloc(&a, m, Nmax, ACTS_INFER);
    Batch b;
    batch_alloc(&b, Nmax, S);
    GenState g = {tk, S, R, D, MOE_NEW(int, S), MOE_NEW(int, S), MOE_NEW(int, S), MOE_NEW(int, S), MOE_NEW(int, S),
                  MOE_NEW(int, S), MOE_NEW(int, (size_t)S * (R + 1)), spec ? MOE_NEW(float, (size_t)S * R * D) : NULL,
                  answers, MOE_NEW(size_t, S), MOE_NEW(size_t, S)};
    int *slot = MOE_NEW(int, Nmax), *row = MOE_NEW(int, S), *drafted = MOE_NEW(int, S);
    float *h = spec ? MOE_NEW(float, (size_t)Nmax * D) : NULL;   // the stream the head read, per row
    for (int s = 0; s < S; s++) { g.out[s] = MOE_NEW(char, GEN_MAX_NEW + 1); g.acap[s] = GEN_MAX_NEW + 1; g.draft[s] = -1; }   // zeroed: empty strings
    // prefill
    int n = 0;
    for (int s = 0; s < S; s++) {
        for (int i = 0; i < pr[s].n; i++, n++) {
            b.tokens[n] = pr[s].id[i]; b.pos[n] = i; b.kv_lo[n] = s * R; slot[n] = s * R + i;
            g.tok[(size_t)s * (R + 1) + i] = pr[s].id[i];
        }
        a.out_rows[s] = n - 1;
        g.len[s] = (int)pr[s].n;
    }
    int *targets_buf = b.targets;   // no targets while generating; batch_free wants it back
    b.N = n; b.targets = NULL; b.n_seq = 0;
    a.n_out = S;
    ForwardOpts fo = {.train = false, .cache = &cache, .slot = slot, .mla_form = go->mla_form, .stream_out = h};
    ForwardOut fout;
    if (rc == MOE_OK) rc = model_forward(m, &a, &b, &fo, &fout);
    st->forwards++;
    for (int s = 0, r = 0; s < S && rc == MOE_OK; r += (int)pr[s].n, s++) {
        g.nxt[s] = argmax(a.logits + (size_t)s * V, V);
        if (spec) memcpy(g.hs + (size_t)s * R * D, h + (size_t)r * D, sizeof(float) * pr[s].n * D);
    }
    if (spec && rc == MOE_OK) rc = gen_draft(m, &a, &b, &cache, &g, slot, h, go->mla_form);
    while (rc == MOE_OK) {
        const int na = gen_feed(&g, &a, &b, slot, row, drafted);
        if (na == 0) break;
        rc = model_forward(m, &a, &b, &fo, &fout);
        st->forwards++;
        if (rc == MOE_OK) gen_accept(&g, a.logits, V, h, row, drafted, st);
        if (spec && rc == MOE_OK) rc = gen_draft(m, &a, &b, &cache, &g, slot, h, go->mla_form);
    }
    b.targets = targets_buf;
    for (int l = 0; l < Lc; l++) { moe_free(cache.k[l]); moe_free(cache.v[l]); }
    moe_free(cache.k); moe_free(cache.v);
    moe_free(g.len); moe_free(g.nxt); moe_free(g.draft); moe_free(g.mlen); moe_free(g.done); moe_free(g.n_out);
    moe_free(g.tok); moe_free(g.hs); moe_free(g.alen); moe_free(g.acap);
    moe_free(slot); moe_free(row); moe_free(drafted); moe_free(h);
    for (int s = 0; s < S; s++) tokids_free(&pr[s]);
    moe_free(pr);
    batch_free(&b); acts_free(&a);
    return rc;
}

void gen_opts_default(GenOpts *go, const MoeConfig *c) {
    *go = (GenOpts){.mla_form = MLA_FORM_AUTO, .speculative = c->num_mtp_layers > 0};
}

int generate_greedy_ex(Model *m, const Tokenizer *tk, const char *const *q, const int *qlen, int n, char **answers,
                       int batch, const GenOpts *go, GenStats *st) {
    GenOpts def;
    if (!go) { gen_opts_default(&def, &m->cfg); go = &def; }
    if (go->speculative && m->cfg.num_mtp_layers == 0) MOE_ERR("speculative decoding needs a model with num_mtp_layers > 0");
    GenStats sink;
    if (!st) st = &sink;
    memset(st, 0, sizeof *st);
    if (batch <= 0) batch = 64;
    for (int s = 0; s < n; s += batch)
        MOE_TRY(generate_chunk(m, tk, q + s, qlen + s, imin(batch, n - s), answers + s, go, st));
    return MOE_OK;
}

int generate_greedy(Model *m, const Tokenizer *tk, const char *const *q, const int *qlen, int n, char **answers, int batch) {
    return generate_greedy_ex(m, tk, q, qlen, n, answers, batch, NULL, NULL);
}
