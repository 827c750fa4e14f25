// Hugging Face tokenizer.json, byte-level BPE: encoding as the `tokenizers` library does,
// decoding (bpe_read.c reads the file, every field checked and every id bounded).
//
// Encoding, as tokenizers' Tokenizer::encode(text, add_special_tokens=False):
//   1. added tokens are cut out of the raw text (leftmost, then longest, literal match)
//   2. each stretch between them is normalized (nothing, or NFC with utf8proc)
//   3. pre-tokenizers in order: Split (a regex or a string, any behavior, invert) and
//      ByteLevel last (optionally the GPT-2 regex, optionally a prefix space)
//   4. each piece becomes bytes -> the alphabet's ids, merged by rank (BPE::merge_word)
// Regexes run on PCRE2 in UTF + UCP mode (JIT when available); `tokenizers` uses
// Oniguruma, whose \s also takes U+0085, so \s and \S are widened to match it.
// A tokenizer is used by one thread at a time (scratch buffers and PCRE2 match data).
#include "bpe_impl.h"

const char *bpe_token_bytes(const Bpe *b, int id, int *len) {
    if (id < 0 || !b->dec_len || b->dec_len[id] < 0) return NULL;
    *len = b->dec_len[id];
    return b->arena + b->dec_off[id];
}
int bpe_token_id(const Bpe *b, const char *s, size_t n) {
    for (int k = 0; k < b->n_added; k++)
        if ((size_t)b->added_len[k] == n && !memcmp(b->arena + b->added_off[k], s, n)) return b->added_id[k];
    return vocab_find(b, s, n);
}

// ---- encoding

static void *grow(void *p, int *cap, int need, size_t elem) {
    if (need <= *cap) return p;
    int c = *cap ? *cap : 64;
    while (c < need) c *= 2;
    void *q = realloc(p, (size_t)c * elem);
    if (!q) { fprintf(stderr, "moe: out of memory (tokenizer)\n"); exit(1); }   // as moe_alloc does
    *cap = c;
    return q;
}

static void heap_push(Bpe *b, int *n, HeapItem it) {
    int i = (*n)++;
    while (i > 0) {
        HeapItem *p = &b->heap[(i - 1) / 2];
        if (p->rank < it.rank || (p->rank == it.rank && p->pos <= it.pos)) break;
        b->heap[i] = *p;
        i = (i - 1) / 2;
    }
    b->heap[i] = it;
}
static HeapItem heap_pop(Bpe *b, int *n) {
    HeapItem top = b->heap[0], last = b->heap[--(*n)];
    int i = 0;
    for (;;) {
        int c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && (b->heap[c + 1].rank < b->heap[c].rank || (b->heap[c + 1].rank == b->heap[c].rank && b->heap[c + 1].pos < b->heap[c].pos))) c++;
        if (last.rank < b->heap[c].rank || (last.rank == b->heap[c].rank && last.pos <= b->heap[c].pos)) break;
        b->heap[i] = b->heap[c];
        i = c;
    }
    b->heap[i] = last;
    return top;
}

// One pre-token's bytes -> ids: the alphabet's ids (unknown bytes dropped, or <unk>), then
// merges by lowest rank, leftmost first, as tokenizers' Word::merge_all.
static void merge_word(Bpe *b, const char *s, int n, TokIds *out) {
    if (b->ignore_merges) {
        size_t need = (size_t)n * 2 + 1;
        if (need > b->buf_cap) { b->buf = realloc(b->buf, need); b->buf_cap = need; if (!b->buf) { fprintf(stderr, "moe: out of memory (tokenizer)\n"); exit(1); } }
        size_t k = 0;
        for (int i = 0; i < n; i++) k += (size_t)utf8_put(b->buf + k, byte_cp((unsigned char)s[i]));
        int id = vocab_find(b, b->buf, k);
        if (id >= 0) { tokids_push(out, id); return; }
    }
    if (n > b->sym_cap) {
        int cap = b->sym_cap, c2;
        b->sym_c = grow(b->sym_c, &cap, n, sizeof(int));
        c2 = b->sym_cap; b->sym_prev = grow(b->sym_prev, &c2, n, sizeof(int));
        c2 = b->sym_cap; b->sym_next = grow(b->sym_next, &c2, n, sizeof(int));
        c2 = b->sym_cap; b->sym_len = grow(b->sym_len, &c2, n, sizeof(int));
        b->sym_cap = cap;
    }
    int *c = b->sym_c, *prev = b->sym_prev, *next = b->sym_next, *len = b->sym_len;
    int ns = 0;
    bool last_unk = false;
    for (int i = 0; i < n; i++) {
        int id = b->byte_id[(unsigned char)s[i]];
        if (id < 0 && b->unk < 0) continue;   // no such character and no <unk>: dropped
        if (id < 0 && b->fuse_unk && last_unk) { len[ns - 1]++; continue; }
        last_unk = id < 0;
        c[ns] = id < 0 ? b->unk : id; len[ns] = 1; prev[ns] = ns - 1; next[ns] = ns + 1;
        ns++;
    }
    if (ns == 0) return;
    next[ns - 1] = -1;
    b->heap = grow(b->heap, &b->heap_cap, 3 * ns + 4, sizeof(HeapItem));
    int nh = 0;
    for (int i = 0; i + 1 < ns; i++) {
        const PairSlot *p = pair_find(b, c[i], c[i + 1]);
        if (p) heap_push(b, &nh, (HeapItem){p->rank, i, p->new_id});
    }
    while (nh > 0) {
        HeapItem top = heap_pop(b, &nh);
        int i = top.pos, j = next[i];
        if (len[i] == 0 || j < 0) continue;
        const PairSlot *p = pair_find(b, c[i], c[j]);
        if (!p || p->new_id != top.new_id) continue;   // stale: a neighbour has merged since
        c[i] = top.new_id; len[i] += len[j]; next[i] = next[j]; len[j] = 0;
        if (next[i] >= 0) prev[next[i]] = i;
        if (nh + 2 > b->heap_cap) b->heap = grow(b->heap, &b->heap_cap, nh + 2, sizeof(HeapItem));
        if (prev[i] >= 0 && (p = pair_find(b, c[prev[i]], c[i]))) heap_push(b, &nh, (HeapItem){p->rank, prev[i], p->new_id});
        if (next[i] >= 0 && (p = pair_find(b, c[i], c[next[i]]))) heap_push(b, &nh, (HeapItem){p->rank, i, p->new_id});
    }
    for (int i = 0; i >= 0; i = next[i]) tokids_push(out, c[i]);
}

// the matches of step st's regex in s[0..n), gaps between them included, as find_matches
static int find_spans(Bpe *b, const PreStep *st, Spans *sp, const char *s, int n) {
    sp->n = 0;
    int prev = 0;
    PCRE2_SIZE at = 0;
    uint32_t opt = 0;
    while (at <= (PCRE2_SIZE)n) {
        int rc = pcre2_match(st->re, (PCRE2_SPTR)s, (PCRE2_SIZE)n, at, opt, st->md, b->mctx);
        if (rc == PCRE2_ERROR_NOMATCH) {
            if (!opt) break;
            // no non-empty match at an empty match's place: step over one character
            opt = 0;
            at++;
            while (at < (PCRE2_SIZE)n && ((unsigned char)s[at] & 0xC0) == 0x80) at++;
            continue;
        }
        if (rc < 0) {
            PCRE2_UCHAR msg[120];
            pcre2_get_error_message(rc, msg, sizeof msg);
            MOE_ERR("%s: a pre-tokenizer regex failed on the text (%s)", b->name, (char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(st->md);
        int ms = (int)ov[0], me = (int)ov[1];
        sp->s = grow(sp->s, &sp->cap, sp->n + 2, sizeof(Span));
        if (prev != ms) sp->s[sp->n++] = (Span){prev, ms, false};
        sp->s[sp->n++] = (Span){ms, me, true};
        prev = me;
        at = (PCRE2_SIZE)me;
        opt = ms == me ? PCRE2_NOTEMPTY_ATSTART | PCRE2_ANCHORED : 0;
    }
    sp->s = grow(sp->s, &sp->cap, sp->n + 1, sizeof(Span));
    if (prev != n) sp->s[sp->n++] = (Span){prev, n, false};
    return MOE_OK;
}

static int pretokenize(Bpe *b, int k, const char *s, int n, TokIds *out);

// Split's behaviours, as NormalizedString::split: which spans become pieces, merged how
static int split_step(Bpe *b, int k, const char *s, int n, TokIds *out) {
    const PreStep *st = &b->step[k];
    Spans *sp = &b->spans[k];
    MOE_TRY(find_spans(b, st, sp, s, n));
    Span *v = sp->s;
    int m = 0;
    if (st->invert) for (int i = 0; i < sp->n; i++) v[i].match = !v[i].match;
    switch (st->behavior) {
    case SPLIT_ISOLATED: m = sp->n; break;
    case SPLIT_REMOVED:
        for (int i = 0; i < sp->n; i++) if (!v[i].match) v[m++] = v[i];
        break;
    case SPLIT_CONTIGUOUS: {
        bool pm = false;
        for (int i = 0; i < sp->n; i++) {
            bool im = v[i].match;
            if (im == pm && m > 0) v[m - 1].end = v[i].end;
            else v[m++] = v[i];
            pm = im;
        }
        break;
    }
    case SPLIT_MERGED_PREV: {
        bool pm = false;
        for (int i = 0; i < sp->n; i++) {
            bool im = v[i].match;
            if (im && !pm && m > 0) v[m - 1].end = v[i].end;
            else v[m++] = v[i];
            pm = im;
        }
        break;
    }
    case SPLIT_MERGED_NEXT: {   // from the end: a match joins the piece after it
        bool pm = false;
        int w = sp->n;
        for (int i = sp->n - 1; i >= 0; i--) {
            bool im = v[i].match;
            if (im && !pm && w < sp->n) v[w].start = v[i].start;
            else v[--w] = v[i];
            pm = im;
        }
        m = sp->n - w;
        memmove(v, v + w, sizeof(Span) * (size_t)m);
        break;
    }
    }
    // the next step reuses no span list of this level: safe to recurse over v
    for (int i = 0; i < m; i++) MOE_TRY(pretokenize(b, k + 1, s + v[i].start, v[i].end - v[i].start, out));
    return MOE_OK;
}

static int pretokenize(Bpe *b, int k, const char *s, int n, TokIds *out) {
    if (n == 0) return MOE_OK;   // empty pieces are dropped
    if (k == b->n_steps) { merge_word(b, s, n, out); return MOE_OK; }
    const PreStep *st = &b->step[k];
    if (!st->byte_level) return split_step(b, k, s, n, out);
    char *own = NULL;
    if (st->prefix_space && s[0] != ' ') {
        own = malloc((size_t)n + 1);
        if (!own) MOE_ERR("%s: out of memory", b->name);
        own[0] = ' ';
        memcpy(own + 1, s, (size_t)n);
        s = own; n++;
    }
    int rc = MOE_OK;
    if (st->re) {   // the GPT-2 regex, Isolated
        Spans *sp = &b->spans[k];
        rc = find_spans(b, st, sp, s, n);
        for (int i = 0; rc == MOE_OK && i < sp->n; i++) merge_word(b, s + sp->s[i].start, sp->s[i].end - sp->s[i].start, out);
    } else merge_word(b, s, n, out);
    free(own);
    return rc;
}

static int encode_stretch(Bpe *b, const char *s, size_t n, TokIds *out) {
    if (n == 0) return MOE_OK;
    if (n > (size_t)1 << 30) MOE_ERR("%s: text of %zu bytes is too long to encode at once", b->name, n);
    utf8proc_uint8_t *norm = NULL;
    if (b->nfc) {
        utf8proc_ssize_t r = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &norm, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
        if (r >= 0) { s = (const char *)norm; n = (size_t)r; }
        else norm = NULL;   // not valid UTF-8: left as it is
    }
    int rc = pretokenize(b, 0, s, (int)n, out);
    free(norm);
    return rc;
}

int bpe_encode(const Tokenizer *t, const char *s, size_t n, TokIds *out) {
    Bpe *b = t->bpe;
    size_t from = 0;
    for (size_t i = 0; i < n;) {
        int c = (unsigned char)s[i], hit = -1;
        for (int j = 0; j < b->n_by_byte[c]; j++) {
            int k = b->by_byte[c][j];
            if ((size_t)b->added_len[k] <= n - i && !memcmp(s + i, b->arena + b->added_off[k], (size_t)b->added_len[k])) { hit = k; break; }
        }
        if (hit < 0) { i++; continue; }
        MOE_TRY(encode_stretch(b, s + from, i - from, out));
        tokids_push(out, b->added_id[hit]);
        i += (size_t)b->added_len[hit];
        from = i;
    }
    return encode_stretch(b, s + from, n - from, out);
}
