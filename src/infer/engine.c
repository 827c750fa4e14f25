// Continuous batching (engine.h). Slot s owns cache positions [s * R, (s+1) * R) of every
// layer, R = max_position_embeddings; a step's batch lays the live sequences' new tokens end
// to end, each attending to its own slot's range only.
#include <stdlib.h>
#include <string.h>
#include "../base/base.h"
#include "engine.h"
#include "infer.h"

enum { SEQ_FREE = 0, SEQ_PREFILL, SEQ_DECODE };

typedef struct {
    int state;
    TokIds prompt;         // SEQ_PREFILL: the prompt's ids
    int len;               // positions in the cache
    int nxt;               // SEQ_DECODE: the next greedy token, not fed yet
    int n_new, max_new;    // tokens generated (that added bytes), and the cap
    int row;               // this step's logits row (-1: not in the step)
    char *out;
    size_t alen, acap;
    void *tag;
} Seq;

struct Engine {
    Model *m;
    const Tokenizer *tk;
    int S, R, Nmax;
    KvCache cache;
    Acts a;
    Batch b;
    int *slot, *targets_buf;
    Seq *seq;
    EngineResult *done;    // finished, not taken yet (at most S)
    int n_done;
    int last_rows, last_seqs;
};

int engine_new(Engine **out, Model *m, const Tokenizer *tk, int slots, int step_tokens) {
    const MoeConfig *c = &m->cfg;
    if (slots < 1) MOE_ERR("engine: %d slots (at least 1)", slots);
    Engine *e = MOE_NEW(Engine, 1);
    memset(e, 0, sizeof *e);
    e->m = m; e->tk = tk; e->S = slots; e->R = c->max_position_embeddings;
    e->Nmax = imax(step_tokens, e->R + slots);
    int wk, wv;
    kv_cache_widths(c, &wk, &wv);
    const int L = c->num_hidden_layers;
    e->cache = (KvCache){e->S * e->R, MOE_NEW(float *, L), MOE_NEW(float *, L)};
    for (int l = 0; l < L; l++) {
        e->cache.k[l] = MOE_NEW(float, (size_t)e->S * e->R * wk);
        e->cache.v[l] = wv ? MOE_NEW(float, (size_t)e->S * e->R * wv) : NULL;
    }
    acts_alloc(&e->a, m, e->Nmax, ACTS_INFER);
    batch_alloc(&e->b, e->Nmax, e->S);
    e->targets_buf = e->b.targets;
    e->b.targets = NULL; e->b.n_seq = 0;
    e->slot = MOE_NEW(int, e->Nmax);
    e->seq = MOE_NEW(Seq, e->S);
    memset(e->seq, 0, sizeof(Seq) * e->S);
    e->done = MOE_NEW(EngineResult, e->S);
    *out = e;
    return MOE_OK;
}

void engine_free(Engine *e) {
    if (!e) return;
    for (int l = 0; l < e->m->cfg.num_hidden_layers; l++) { moe_free(e->cache.k[l]); moe_free(e->cache.v[l]); }
    moe_free(e->cache.k); moe_free(e->cache.v);
    for (int s = 0; s < e->S; s++) { tokids_free(&e->seq[s].prompt); moe_free(e->seq[s].out); }
    for (int i = 0; i < e->n_done; i++) moe_free(e->done[i].text);
    e->b.targets = e->targets_buf;
    batch_free(&e->b);
    acts_free(&e->a);
    moe_free(e->slot); moe_free(e->seq); moe_free(e->done);
    moe_free(e);
}

int engine_free_slots(const Engine *e) {
    int n = 0;
    for (int s = 0; s < e->S; s++) n += e->seq[s].state == SEQ_FREE;
    return n - e->n_done;   // a finished sequence's slot is free once its result is taken
}

int engine_live(const Engine *e) {
    int n = 0;
    for (int s = 0; s < e->S; s++) n += e->seq[s].state != SEQ_FREE;
    return n;
}

int engine_add(Engine *e, const char *text, int len, bool raw, int max_new, void *tag) {
    if (max_new < 1 || max_new > GEN_MAX_NEW) MOE_ERR("max_new %d is outside 1..%d", max_new, GEN_MAX_NEW);
    if (engine_free_slots(e) <= 0) MOE_ERR("engine: no free slot");
    int s = 0;
    while (e->seq[s].state != SEQ_FREE) s++;
    Seq *q = &e->seq[s];
    TokIds ids = {0};
    int rc = MOE_OK;
    if (raw) {
        if (e->tk->bos >= 0) tokids_push(&ids, e->tk->bos);
        rc = tokenizer_encode(e->tk, text, (size_t)len, &ids);
    } else {
        rc = tokenizer_prompt(e->tk, text, len, &ids);
    }
    if (rc == MOE_OK && (ids.n < 1 || ids.n >= e->R)) {
        rc = MOE_FAIL;
        moe_seterr("prompt of %ld tokens does not fit max_position_embeddings %d", ids.n, e->R);
    }
    if (rc == MOE_OK && ids.n > e->Nmax - e->S) {
        rc = MOE_FAIL;
        moe_seterr("prompt of %ld tokens is longer than a step takes (%d)", ids.n, e->Nmax - e->S);
    }
    if (rc != MOE_OK) { tokids_free(&ids); return MOE_FAIL; }
    moe_free(q->out);
    *q = (Seq){.state = SEQ_PREFILL, .prompt = ids, .max_new = max_new, .row = -1, .tag = tag};
    q->out = MOE_NEW(char, GEN_MAX_NEW + 1);
    q->out[0] = 0;
    q->acap = GEN_MAX_NEW + 1;
    return MOE_OK;
}

static int argmax(const float *z, int V) {
    int best = 0;
    for (int i = 1; i < V; i++) if (z[i] > z[best]) best = i;
    return best;
}

static void finish(Engine *e, Seq *q, const char *why) {
    e->done[e->n_done++] = (EngineResult){q->tag, q->out, q->n_new, (int)q->prompt.n, why};
    q->out = NULL;
    tokids_free(&q->prompt);
    q->state = SEQ_FREE;
}

// greedy token t for sequence q (as generate.c's gen_take): 1 when it is to be fed next
static int take(Engine *e, Seq *q, int t) {
    const int na = q->n_new;   // tokens that added bytes (a C string: NULs add none)
    if (t == e->tk->eos) { finish(e, q, "stop"); return 0; }
    if (na >= q->max_new || q->len >= e->R) { finish(e, q, "length"); return 0; }
    q->n_new += tokenizer_decode_append(e->tk, t, &q->out, &q->alen, &q->acap) > 0;
    if (na + 1 >= q->max_new) { finish(e, q, "length"); return 0; }
    return 1;
}

int engine_step(Engine *e, int *finished) {
    const int R = e->R, V = e->m->cfg.vocab_size;
    Batch *b = &e->b;
    Acts *a = &e->a;
    int n = 0, rows = 0, seqs = 0;
    // the decoding sequences' tokens first: they always fit
    for (int s = 0; s < e->S; s++) {
        Seq *q = &e->seq[s];
        q->row = -1;
        if (q->state != SEQ_DECODE) continue;
        b->tokens[n] = q->nxt; b->pos[n] = q->len; b->kv_lo[n] = s * R; e->slot[n] = s * R + q->len;
        a->out_rows[rows] = n;
        q->row = rows++;
        n++; seqs++;
    }
    // then the prompts that fit what is left of the step
    for (int s = 0; s < e->S; s++) {
        Seq *q = &e->seq[s];
        if (q->state != SEQ_PREFILL || n + q->prompt.n > e->Nmax) continue;
        for (int i = 0; i < q->prompt.n; i++, n++) {
            b->tokens[n] = q->prompt.id[i]; b->pos[n] = i; b->kv_lo[n] = s * R; e->slot[n] = s * R + i;
        }
        a->out_rows[rows] = n - 1;
        q->row = rows++;
        seqs++;
    }
    e->last_rows = n; e->last_seqs = seqs;
    int before = e->n_done;
    if (n > 0) {
        b->N = n;
        a->n_out = rows;
        ForwardOpts fo = {.train = false, .cache = &e->cache, .slot = e->slot, .mla_form = MLA_FORM_AUTO};
        ForwardOut fout;
        MOE_TRY(model_forward(e->m, a, b, &fo, &fout));
        for (int s = 0; s < e->S; s++) {
            Seq *q = &e->seq[s];
            if (q->row < 0) continue;
            if (q->state == SEQ_PREFILL) { q->len = (int)q->prompt.n; q->state = SEQ_DECODE; }   // the prompt is in the cache
            else q->len++;   // nxt went into the cache at position len
            q->nxt = argmax(a->logits + (size_t)q->row * V, V);
            take(e, q, q->nxt);
        }
    }
    if (finished) *finished = e->n_done - before;
    return MOE_OK;
}

int engine_take(Engine *e, EngineResult *out, int cap) {
    int n = imin(cap, e->n_done);
    memcpy(out, e->done, sizeof(EngineResult) * n);
    memmove(e->done, e->done + n, sizeof(EngineResult) * (e->n_done - n));
    e->n_done -= n;
    return n;
}

int engine_last_rows(const Engine *e, int *sequences) {
    if (sequences) *sequences = e->last_seqs;
    return e->last_rows;
}
