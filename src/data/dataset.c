#include <cjson/cJSON.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include "data.h"

int data_format_parse(const char *s, DataFormat *out) {
    if (!strcmp(s, "auto")) *out = DATA_AUTO;
    else if (!strcmp(s, "qa")) *out = DATA_QA;
    else if (!strcmp(s, "jsonl")) *out = DATA_JSONL;
    else if (!strcmp(s, "text")) *out = DATA_TEXT;
    else MOE_ERR("--format must be auto, qa, jsonl or text, got \"%s\"", s);
    return MOE_OK;
}

// tok and ex grow by doubling (moe_realloc, freed with moe_free)
typedef struct { TokIds t; Example *ex; int nex, capex; } Builder;
static void push_ex(Builder *b, Example e) {
    if (b->nex == b->capex) { b->capex = b->capex ? b->capex * 2 : 1024; b->ex = moe_realloc(b->ex, sizeof(Example) * b->capex); }
    b->ex[b->nex++] = e;
}
// the tokenizer's prompt, then its answer (byte: <bos> q <sep> a <eos>); q and a point into d->text
static int add_qa(Builder *b, const Tokenizer *tk, const char *base, const char *q, int ql, const char *a, int al) {
    long off = b->t.n;
    MOE_TRY(tokenizer_prompt(tk, q, ql, &b->t));
    long np = b->t.n - off;
    MOE_TRY(tokenizer_answer(tk, a, al, &b->t));
    long len = b->t.n - off;
    push_ex(b, (Example){off, (int)len, (int)np, q - base, ql, a - base, al});
    return MOE_OK;
}

static bool ends_with(const char *s, const char *suf) {
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && !strcmp(s + n - m, suf);
}

int dataset_load(Dataset *d, const char *path, DataFormat fmt, int max_inputs, int limit) {
    Tokenizer byte;
    tokenizer_byte(&byte);
    return dataset_load_tok(d, path, fmt, max_inputs, limit, &byte);
}

int dataset_load_tok(Dataset *d, const char *path, DataFormat fmt, int max_inputs, int limit, const Tokenizer *tk) {
    memset(d, 0, sizeof *d);
    size_t len;
    char *text = file_read_all(path, &len);
    if (!text) return MOE_FAIL;
    return dataset_parse_tok(d, text, len, path, fmt, max_inputs, limit, tk);
}

int dataset_parse_tok(Dataset *d, char *text, size_t len, const char *path, DataFormat fmt, int max_inputs, int limit,
                      const Tokenizer *tk) {
    memset(d, 0, sizeof *d);
    if (max_inputs <= 0) { free(text); MOE_ERR("sequence length must be positive, got %d", max_inputs); }
    if (fmt == DATA_AUTO) fmt = (ends_with(path, ".jsonl") || ends_with(path, ".json")) ? DATA_JSONL : DATA_QA;
    if (len == 0) { free(text); MOE_ERR("%s: empty data file", path); }
    Builder b = {0};
    int rc = MOE_OK;
    if (fmt == DATA_TEXT) {
        // the token stream in windows of max_inputs + 1 tokens, stride max_inputs
        TokIds all = {0};
        rc = tokenizer_encode(tk, text, len, &all);
        for (long s = 0; rc == MOE_OK && s + 1 < all.n; s += max_inputs) {
            long n = all.n - s < (long)max_inputs + 1 ? all.n - s : (long)max_inputs + 1;
            Example e = {b.t.n, (int)n, 1, 0, 0, 0, 0};
            for (long i = 0; i < n; i++) tokids_push(&b.t, all.id[s + i]);
            push_ex(&b, e);
            if (limit > 0 && b.nex >= limit) break;
        }
        tokids_free(&all);
    } else {
        // split into lines in place (NUL-terminated), dropping '\r'
        int nlines = 0, lineno = 0;
        char *p = text, *end = text + len;
        char *q = NULL; int ql = 0, qline = 0;
        while (p < end && rc == MOE_OK) {
            char *nl = memchr(p, '\n', end - p);
            char *le = nl ? nl : end;
            lineno++;
            *le = 0;
            if (le - p > INT_MAX) { moe_seterr("%s: line %d is longer than %d bytes", path, lineno, INT_MAX); rc = MOE_FAIL; break; }
            int ll = (int)(le - p);
            if (ll > 0 && p[ll - 1] == '\r') p[--ll] = 0;
            bool last = !nl || nl + 1 >= end;
            if (ll == 0) {
                if (!last || fmt == DATA_JSONL) {
                    if (fmt == DATA_JSONL) { p = le + 1; continue; }   // blank JSON lines are harmless
                    moe_seterr("%s: line %d is empty (expected alternating question and answer lines)", path, lineno);
                    rc = MOE_FAIL;
                    break;
                }
                break;
            }
            if (fmt == DATA_JSONL) {
                cJSON *o = cJSON_Parse(p);
                cJSON *jq = cJSON_GetObjectItem(o, "question"), *ja = cJSON_GetObjectItem(o, "answer");
                if (!o || !cJSON_IsString(jq) || !cJSON_IsString(ja)) {
                    cJSON_Delete(o);
                    moe_seterr("%s: line %d: expected a JSON object with string \"question\" and \"answer\"", path, lineno);
                    rc = MOE_FAIL;
                    break;
                }
                // keep the decoded strings in the text buffer: they are never longer than the line
                size_t lq = strlen(jq->valuestring), la = strlen(ja->valuestring);
                if (lq + la + 2 <= (size_t)ll + 1) {
                    memcpy(p, jq->valuestring, lq + 1);
                    memcpy(p + lq + 1, ja->valuestring, la + 1);
                    rc = add_qa(&b, tk, text, p, (int)lq, p + lq + 1, (int)la);
                }
                cJSON_Delete(o);
                nlines += 2;
            } else if (nlines % 2 == 0) {
                q = p; ql = ll; qline = lineno;
                nlines++;
            } else {
                rc = add_qa(&b, tk, text, q, ql, p, ll);
                nlines++;
            }
            if (rc != MOE_OK || (limit > 0 && b.nex >= limit)) break;
            p = le + 1;
        }
        if (rc == MOE_OK && fmt == DATA_QA && nlines % 2)
            { moe_seterr("%s: odd number of lines: the question on line %d has no answer", path, qline); rc = MOE_FAIL; }
    }
    if (rc == MOE_OK && b.nex == 0) { moe_seterr("%s: no examples", path); rc = MOE_FAIL; }
    if (rc != MOE_OK) { free(text); tokids_free(&b.t); moe_free(b.ex); return rc; }
    // skip what does not fit the sequence length
    int kept = 0;
    for (int i = 0; i < b.nex; i++) {
        if (b.ex[i].len - 1 > max_inputs) { d->skipped++; continue; }
        b.ex[kept++] = b.ex[i];
    }
    if (kept == 0) { free(text); tokids_free(&b.t); moe_free(b.ex); MOE_ERR("%s: every example is longer than the sequence length %d", path, max_inputs); }
    d->path = moe_strdup(path);
    d->text = text; d->tok = b.t.id; d->n_tok = b.t.n; d->ex = b.ex; d->n = kept; d->format = fmt;
    return MOE_OK;
}

void dataset_free(Dataset *d) {
    moe_free(d->path); free(d->text); moe_free(d->tok); moe_free(d->ex);   // text is file_read_all's
    memset(d, 0, sizeof *d);
}
const char *dataset_question(const Dataset *d, int i, int *len) { *len = d->ex[i].q_len; return d->text + d->ex[i].q_off; }
const char *dataset_answer(const Dataset *d, int i, int *len) { *len = d->ex[i].a_len; return d->text + d->ex[i].a_off; }

int dataset_concat(Dataset *out, Dataset *parts, int n) {
    if (n == 1) { *out = parts[0]; out->n_files = 1; out->file_start[0] = 0; out->file_start[1] = out->n; return MOE_OK; }
    memset(out, 0, sizeof *out);
    long ntok = 0, nex = 0;
    for (int i = 0; i < n; i++) { ntok += parts[i].n_tok; nex += parts[i].n; }
    // question/answer text offsets stay relative to each part's buffer: keep one joined copy
    // (malloc'd, as file_read_all's text is: dataset_free frees it)
    size_t tlen = 0;
    for (int i = 0; i < n; i++) tlen += parts[i].ex[parts[i].n - 1].a_off + parts[i].ex[parts[i].n - 1].a_len + 1;
    out->text = malloc(tlen + 1);
    if (!out->text) {
        for (int i = 0; i < n; i++) dataset_free(&parts[i]);
        MOE_ERR("out of memory joining %d data files (%zu bytes of text)", n, tlen + 1);
    }
    out->tok = MOE_NEW(int, ntok);
    out->ex = MOE_NEW(Example, nex);
    long to = 0, eo = 0; size_t xo = 0;
    for (int i = 0; i < n; i++) {
        Dataset *p = &parts[i];
        size_t plen = p->ex[p->n - 1].a_off + p->ex[p->n - 1].a_len + 1;
        memcpy(out->text + xo, p->text, plen);
        memcpy(out->tok + to, p->tok, sizeof(int) * p->n_tok);
        out->file_start[i] = (int)eo;
        for (int j = 0; j < p->n; j++) {
            Example e = p->ex[j];
            e.off += to; e.q_off += (long)xo; e.a_off += (long)xo;
            out->ex[eo++] = e;
        }
        to += p->n_tok; xo += plen;
        out->skipped += p->skipped;
        out->format = p->format;
        dataset_free(p);
    }
    out->n_tok = ntok; out->n = (int)nex;
    out->n_files = n;
    out->file_start[n] = (int)nex;
    out->path = moe_strdup("(several files)");
    return MOE_OK;
}

void batch_alloc(Batch *b, int max_tokens, int max_seq) {
    memset(b, 0, sizeof *b);
    b->tokens = MOE_NEW(int, max_tokens); b->pos = MOE_NEW(int, max_tokens);
    b->kv_lo = MOE_NEW(int, max_tokens); b->targets = MOE_NEW(int, max_tokens);
    b->seq_start = MOE_NEW(int, max_seq + 1);
}
void batch_free(Batch *b) {
    moe_free(b->tokens); moe_free(b->pos); moe_free(b->kv_lo); moe_free(b->targets); moe_free(b->seq_start);
    memset(b, 0, sizeof *b);
}
void batch_fill(Batch *b, const Dataset *d, const int *ids, int count) {
    int n = 0;
    b->n_targets = 0;
    for (int s = 0; s < count; s++) {
        const Example *e = &d->ex[ids[s]];
        const int *t = d->tok + e->off;
        b->seq_start[s] = n;
        for (int i = 0; i < e->len - 1; i++, n++) {
            b->tokens[n] = t[i];
            b->pos[n] = i;
            b->kv_lo[n] = b->seq_start[s];
            b->targets[n] = i + 1 >= e->n_prompt ? t[i + 1] : -1;
            b->n_targets += b->targets[n] >= 0;
        }
    }
    b->seq_start[count] = n;
    b->n_seq = count;
    b->N = n;
}
int encode_prompt(int *out, int cap, const char *q, int qlen) {
    if (qlen + 2 > cap) return -1;
    int n = 0;
    out[n++] = TOK_BOS;
    for (int i = 0; i < qlen; i++) out[n++] = (unsigned char)q[i];
    out[n++] = TOK_SEP;
    return n;
}

static int mix_example(DataOrder *o, long cursor);
void order_init(DataOrder *o, int n, unsigned long long seed, bool shuffle) {
    memset(o, 0, sizeof *o);
    o->seed = seed; o->n = n; o->shuffle = shuffle; o->epoch = -1;
    o->perm = MOE_NEW(int, n);
}
int order_example(DataOrder *o, long cursor) {
    if (o->cum) return mix_example(o, cursor);
    long ep = cursor / o->n;
    if (ep != o->epoch) {
        for (int i = 0; i < o->n; i++) o->perm[i] = i;
        if (o->shuffle) {
            Rng r;
            rng_seed(&r, o->seed * 0x9E3779B97F4A7C15ULL + (unsigned long long)ep + 1);
            for (int i = o->n - 1; i > 0; i--) {
                int j = (int)rng_below(&r, (uint64_t)i + 1), t = o->perm[i];
                o->perm[i] = o->perm[j]; o->perm[j] = t;
            }
        }
        o->epoch = ep;
    }
    return o->perm[cursor % o->n];
}
static void shuffle_perm(int *perm, int n, unsigned long long seed, bool shuffle) {
    for (int i = 0; i < n; i++) perm[i] = i;
    if (!shuffle) return;
    Rng r;
    rng_seed(&r, seed);
    for (int i = n - 1; i > 0; i--) {
        int j = (int)rng_below(&r, (uint64_t)i + 1), t = perm[i];
        perm[i] = perm[j]; perm[j] = t;
    }
}

void order_init_mix(DataOrder *o, const Dataset *d, const double *weights, unsigned long long seed, bool shuffle) {
    memset(o, 0, sizeof *o);
    o->seed = seed; o->n = d->n; o->shuffle = shuffle; o->n_files = d->n_files;
    o->fstart = MOE_NEW(int, d->n_files + 1);
    o->cum = MOE_NEW(double, d->n_files);
    o->fcount = MOE_NEW(long, d->n_files); o->fepoch = MOE_NEW(long, d->n_files);
    o->fperm = MOE_NEW(int *, d->n_files);
    double tot = 0;
    for (int f = 0; f < d->n_files; f++) tot += weights[f];
    for (int f = 0, acc = 0; f <= d->n_files; f++) { o->fstart[f] = d->file_start[f]; (void)acc; }
    for (int f = 0; f < d->n_files; f++) {
        o->cum[f] = (f ? o->cum[f - 1] : 0) + weights[f] / tot;
        o->fperm[f] = MOE_NEW(int, d->file_start[f + 1] - d->file_start[f] + 1);
        o->fepoch[f] = -1;
    }
    o->cum[d->n_files - 1] = 1.0;
}

// the example at mixture position `cursor`: positions are drawn in order (a resume replays
// the draws from 0), so the sequence depends on the seed and the weights only
static int mix_example(DataOrder *o, long cursor) {
    if (cursor < o->next) {   // back: replay from the start
        o->next = 0;
        for (int f = 0; f < o->n_files; f++) { o->fcount[f] = 0; o->fepoch[f] = -1; }
    }
    int ex = 0;
    for (; o->next <= cursor; o->next++) {
        Rng r;
        rng_seed(&r, o->seed * 0xD1B54A32D192ED03ULL + (unsigned long long)o->next * 0x9E3779B97F4A7C15ULL + 7);
        const double u = (double)(rng_u64(&r) >> 11) * (1.0 / 9007199254740992.0);
        int f = 0;
        while (f < o->n_files - 1 && u >= o->cum[f]) f++;
        const int nf = o->fstart[f + 1] - o->fstart[f];
        const long k = o->fcount[f]++, ep = k / nf;
        if (ep != o->fepoch[f]) {
            shuffle_perm(o->fperm[f], nf, o->seed * 0x9E3779B97F4A7C15ULL + (unsigned long long)f * 1000003ULL + (unsigned long long)ep + 1, o->shuffle);
            o->fepoch[f] = ep;
        }
        ex = o->fstart[f] + o->fperm[f][k % nf];
    }
    return ex;
}

void order_free(DataOrder *o) {
    moe_free(o->perm);
    if (o->fperm) for (int f = 0; f < o->n_files; f++) moe_free(o->fperm[f]);
    moe_free(o->fperm); moe_free(o->fstart); moe_free(o->cum); moe_free(o->fcount); moe_free(o->fepoch);
}
