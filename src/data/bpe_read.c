// Hugging Face tokenizer.json, byte-level BPE: reading it, every field checked and every id
// bounded (bpe.c encodes and decodes with what this builds).
#include "bpe_impl.h"

static int cp_byte[324];         // byte_cp's inverse, -1 where no byte

// next code point of s[*i..n), -1 when not valid UTF-8 (then *i moves one byte)
static int utf8_next(const char *s, int n, int *i) {
    const unsigned char *u = (const unsigned char *)s + *i;
    int left = n - *i, len, cp;
    if (u[0] < 0x80) { (*i)++; return u[0]; }
    if ((u[0] & 0xE0) == 0xC0) { len = 2; cp = u[0] & 31; }
    else if ((u[0] & 0xF0) == 0xE0) { len = 3; cp = u[0] & 15; }
    else if ((u[0] & 0xF8) == 0xF0) { len = 4; cp = u[0] & 7; }
    else { (*i)++; return -1; }
    if (left < len) { (*i)++; return -1; }
    for (int k = 1; k < len; k++) {
        if ((u[k] & 0xC0) != 0x80) { (*i)++; return -1; }
        cp = cp << 6 | (u[k] & 63);
    }
    *i += len;
    return cp;
}

static uint32_t pow2_at_least(size_t n) { uint32_t c = 16; while (c < 2 * n) c *= 2; return c; }

static long arena_add(Bpe *b, const char *s, size_t n) {
    if (b->arena_len + n + 1 > b->arena_cap) {
        size_t cap = b->arena_cap ? b->arena_cap : 1 << 16;
        while (cap < b->arena_len + n + 1) cap *= 2;
        b->arena = moe_realloc(b->arena, cap);
        b->arena_cap = cap;
    }
    long off = (long)b->arena_len;
    memcpy(b->arena + off, s, n);
    b->arena[off + n] = 0;
    b->arena_len += n + 1;
    return off;
}

// false when the text is there already
static bool vocab_insert(Bpe *b, int id) {
    const char *s = b->arena + b->str_off[id];
    size_t n = (size_t)b->str_len[id];
    for (uint32_t h = (uint32_t)hash_bytes(s, n) & b->vocab.mask;; h = (h + 1) & b->vocab.mask) {
        int o = b->vocab.slot[h];
        if (o < 0) { b->vocab.slot[h] = id; return true; }
        if ((size_t)b->str_len[o] == n && !memcmp(b->arena + b->str_off[o], s, n)) return false;
    }
}
// a later merge of the same pair replaces an earlier one, as a HashMap built from the list does
static void pair_insert(Bpe *b, int l, int r, int rank, int new_id) {
    uint64_t key = (uint64_t)(uint32_t)l << 32 | (uint32_t)r;
    for (uint32_t h = (uint32_t)hash_pair(key) & b->pair_mask;; h = (h + 1) & b->pair_mask) {
        PairSlot *p = &b->pairs[h];
        if (p->new_id < 0 || p->key == key) { p->key = key; p->rank = rank; p->new_id = new_id; return; }
    }
}

// ---- reading the JSON

// a string of the file, fit for a one-line message: at most 60 bytes, control bytes as '?'
// (rotating static buffers: a message may show several)
static const char *shown(const char *s) {
    static char buf[4][68];
    static int k;
    char *o = buf[k++ & 3];
    size_t i = 0;
    for (; s && s[i] && i < 60; i++) o[i] = (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? '?' : s[i];
    if (s && s[i]) { memcpy(o + i, "...", 3); i += 3; }
    o[i] = 0;
    return o;
}

static bool json_int(const cJSON *j, long lo, long hi, long *out) {
    if (!cJSON_IsNumber(j)) return false;
    double v = j->valuedouble;
    if (!(v >= (double)lo && v <= (double)hi) || v != floor(v)) return false;
    *out = (long)v;
    return true;
}
static bool json_null(const cJSON *j) { return !j || cJSON_IsNull(j); }
static const char *json_type(const cJSON *o) {
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "type");
    return cJSON_IsString(t) ? t->valuestring : NULL;
}
// a bool field that must be false (or absent)
static bool json_false(const cJSON *o, const char *k) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, k);
    return json_null(j) || cJSON_IsFalse(j);
}
static bool json_true(const cJSON *o, const char *k) { return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, k)); }

// Oniguruma's \s also matches U+0085 (NEL): widen \s and \S to take it
static char *widen_space(const char *p, size_t n) {
    char *o = malloc(n * 12 + 1);
    if (!o) return NULL;
    size_t k = 0;
    bool cls = false;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (c == '\\' && i + 1 < n) {
            char e = p[i + 1];
            if (e == 's' && cls) { memcpy(o + k, "\\s\\x{85}", 8); k += 8; }
            else if (e == 's') { memcpy(o + k, "[\\s\\x{85}]", 10); k += 10; }
            else if (e == 'S' && !cls) { memcpy(o + k, "[^\\s\\x{85}]", 11); k += 11; }
            else { o[k++] = c; o[k++] = e; }
            i++;
            continue;
        }
        if (!cls && c == '[') {
            cls = true;
            o[k++] = c;
            // a ']' first in the class (after an optional '^') is a literal
            if (i + 1 < n && p[i + 1] == '^') o[k++] = p[++i];
            if (i + 1 < n && p[i + 1] == ']') o[k++] = p[++i];
            continue;
        }
        if (cls && c == '[' && i + 1 < n && p[i + 1] == ':') {   // [:alpha:]
            const char *end = strstr(p + i + 2, ":]");
            if (end && (size_t)(end - p) < n) { size_t m = (size_t)(end - p) + 2 - i; memcpy(o + k, p + i, m); k += m; i += m - 1; continue; }
        }
        if (cls && c == ']') cls = false;
        o[k++] = c;
    }
    o[k] = 0;
    return o;
}

static int compile_re(Bpe *b, PreStep *st, const char *pat, size_t n, bool literal, const char *what) {
    if (n > BPE_MAX_PATTERN) MOE_ERR("%s: %s: pattern of %zu bytes (at most %d)", b->name, what, n, BPE_MAX_PATTERN);
    char *w = literal ? NULL : widen_space(pat, n);
    if (!literal && !w) MOE_ERR("%s: out of memory for a pattern", b->name);
    int err;
    PCRE2_SIZE eoff;
    uint32_t opt = PCRE2_UTF | PCRE2_MATCH_INVALID_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP);
    st->re = pcre2_compile((PCRE2_SPTR)(literal ? pat : w), literal ? n : PCRE2_ZERO_TERMINATED, opt, &err, &eoff, NULL);
    free(w);
    if (!st->re) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(err, msg, sizeof msg);
        MOE_ERR("%s: %s: the regex does not compile (%s at offset %zu)", b->name, what, (char *)msg, (size_t)eoff);
    }
    pcre2_jit_compile(st->re, PCRE2_JIT_COMPLETE);   // interpreted when JIT is not there
    st->md = pcre2_match_data_create_from_pattern(st->re, NULL);
    if (!st->md) MOE_ERR("%s: out of memory for a regex", b->name);
    return MOE_OK;
}

static const char *GPT2_PATTERN = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static int parse_pre_step(Bpe *b, const cJSON *o, const char *where) {
    const char *type = json_type(o);
    if (b->n_steps == BPE_MAX_STEPS) MOE_ERR("%s: pre_tokenizer: more than %d steps", b->name, BPE_MAX_STEPS);
    if (b->n_steps > 0 && b->step[b->n_steps - 1].byte_level)
        MOE_ERR("%s: pre_tokenizer: %s after ByteLevel is not supported (ByteLevel must come last)", b->name, shown(type ? type : "a step"));
    PreStep *st = &b->step[b->n_steps];
    if (type && !strcmp(type, "ByteLevel")) {
        const cJSON *ps = cJSON_GetObjectItemCaseSensitive(o, "add_prefix_space");
        const cJSON *ur = cJSON_GetObjectItemCaseSensitive(o, "use_regex");
        if ((ps && !cJSON_IsBool(ps)) || (ur && !cJSON_IsBool(ur)))
            MOE_ERR("%s: %s: add_prefix_space and use_regex must be booleans", b->name, where);
        st->byte_level = true;
        st->prefix_space = cJSON_IsTrue(ps);
        b->n_steps++;
        if (!ur || cJSON_IsTrue(ur)) MOE_TRY(compile_re(b, st, GPT2_PATTERN, strlen(GPT2_PATTERN), false, where));
        return MOE_OK;
    }
    if (type && !strcmp(type, "Split")) {
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(o, "pattern");
        const cJSON *re = cJSON_GetObjectItemCaseSensitive(pat, "Regex"), *str = cJSON_GetObjectItemCaseSensitive(pat, "String");
        const cJSON *beh = cJSON_GetObjectItemCaseSensitive(o, "behavior"), *inv = cJSON_GetObjectItemCaseSensitive(o, "invert");
        if (!cJSON_IsObject(pat) || (!cJSON_IsString(re) && !cJSON_IsString(str)))
            MOE_ERR("%s: %s: \"pattern\" must be {\"Regex\": string} or {\"String\": string}", b->name, where);
        if (!cJSON_IsString(beh)) MOE_ERR("%s: %s: \"behavior\" must be a string", b->name, where);
        if (inv && !cJSON_IsBool(inv)) MOE_ERR("%s: %s: \"invert\" must be a boolean", b->name, where);
        static const char *const NAMES[] = {"Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous"};
        int k = 0;
        while (k < 5 && strcmp(beh->valuestring, NAMES[k])) k++;
        if (k == 5) MOE_ERR("%s: %s: behavior \"%s\" is not supported", b->name, where, shown(beh->valuestring));
        st->behavior = (SplitBehavior)k;
        st->invert = cJSON_IsTrue(inv);
        b->n_steps++;
        const char *p = cJSON_IsString(re) ? re->valuestring : str->valuestring;
        if (!*p) MOE_ERR("%s: %s: empty pattern", b->name, where);
        return compile_re(b, st, p, strlen(p), !cJSON_IsString(re), where);
    }
    MOE_ERR("%s: %s: pre-tokenizer %s is not supported (byte-level BPE reads Split and ByteLevel only)",
            b->name, where, shown(type ? type : "without a type"));
}

static int parse_normalizer(Bpe *b, const cJSON *n) {
    if (json_null(n)) return MOE_OK;
    const char *type = json_type(n);
    if (type && !strcmp(type, "NFC")) { b->nfc = true; return MOE_OK; }
    if (type && !strcmp(type, "Sequence")) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(n, "normalizers"), *e;
        if (!cJSON_IsArray(list)) MOE_ERR("%s: normalizer: a Sequence needs a \"normalizers\" list", b->name);
        cJSON_ArrayForEach(e, list) {
            const char *t = json_type(e);
            if (!t || strcmp(t, "NFC")) MOE_ERR("%s: normalizer %s is not supported (NFC only)", b->name, shown(t ? t : "without a type"));
            b->nfc = true;
        }
        return MOE_OK;
    }
    MOE_ERR("%s: normalizer %s is not supported (NFC only)", b->name, shown(type ? type : "without a type"));
}

// TemplateProcessing's single template: a special token before $A is the bos, one after it the eos
static int parse_template(Bpe *b, Tokenizer *t, const cJSON *p) {
    const cJSON *single = cJSON_GetObjectItemCaseSensitive(p, "single"), *sp = cJSON_GetObjectItemCaseSensitive(p, "special_tokens"), *e;
    if (!cJSON_IsArray(single)) MOE_ERR("%s: post_processor: TemplateProcessing needs a \"single\" list", b->name);
    bool seen_a = false;
    int before = 0, after = 0, bos = -1, eos = -1;
    cJSON_ArrayForEach(e, single) {
        const cJSON *seq = cJSON_GetObjectItemCaseSensitive(e, "Sequence"), *tok = cJSON_GetObjectItemCaseSensitive(e, "SpecialToken");
        if (cJSON_IsObject(seq)) {
            const cJSON *id = cJSON_GetObjectItemCaseSensitive(seq, "id");
            if (!cJSON_IsString(id) || strcmp(id->valuestring, "A") || seen_a)
                MOE_ERR("%s: post_processor: the single template must hold the sequence $A once", b->name);
            seen_a = true;
            continue;
        }
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(tok, "id");
        if (!cJSON_IsString(name)) MOE_ERR("%s: post_processor: template items must be Sequence or SpecialToken", b->name);
        const cJSON *spec = cJSON_GetObjectItemCaseSensitive(sp, name->valuestring);
        const cJSON *ids = cJSON_GetObjectItemCaseSensitive(spec, "ids");
        long id;
        if (!cJSON_IsArray(ids) || cJSON_GetArraySize(ids) != 1 || !json_int(cJSON_GetArrayItem(ids, 0), 0, t->n_vocab - 1, &id))
            MOE_ERR("%s: post_processor: special token \"%s\" needs one id below %d in \"special_tokens\"", b->name, shown(name->valuestring), t->n_vocab);
        if (seen_a) { after++; eos = (int)id; } else { before++; bos = (int)id; }
    }
    if (!seen_a) MOE_ERR("%s: post_processor: the single template has no $A", b->name);
    if (before == 1) t->bos = bos;
    if (after == 1) t->eos = eos;
    return MOE_OK;
}

static int parse_post(Bpe *b, Tokenizer *t, const cJSON *p) {
    if (json_null(p)) return MOE_OK;
    const char *type = json_type(p);
    if (type && !strcmp(type, "ByteLevel")) return MOE_OK;   // offsets only
    if (type && !strcmp(type, "TemplateProcessing")) return parse_template(b, t, p);
    if (type && !strcmp(type, "Sequence")) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(p, "processors"), *e;
        if (!cJSON_IsArray(list)) MOE_ERR("%s: post_processor: a Sequence needs a \"processors\" list", b->name);
        cJSON_ArrayForEach(e, list) {
            const char *t2 = json_type(e);
            if (t2 && !strcmp(t2, "Sequence")) MOE_ERR("%s: post_processor: nested Sequence is not supported", b->name);
            MOE_TRY(parse_post(b, t, e));
        }
        return MOE_OK;
    }
    MOE_ERR("%s: post_processor %s is not supported (ByteLevel or TemplateProcessing only)", b->name, shown(type ? type : "without a type"));
}

static int parse_decoder(Bpe *b, const cJSON *d) {
    const char *type = json_null(d) ? NULL : json_type(d);
    if (type && !strcmp(type, "ByteLevel")) return MOE_OK;
    if (type && !strcmp(type, "Sequence")) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(d, "decoders");
        if (cJSON_IsArray(list) && cJSON_GetArraySize(list) == 1) return parse_decoder(b, cJSON_GetArrayItem(list, 0));
    }
    MOE_ERR("%s: decoder %s is not supported (ByteLevel only)", b->name, shown(json_null(d) ? "null" : type ? type : "without a type"));
}

static int set_token(Bpe *b, Tokenizer *t, long id, const char *s, const char *what) {
    size_t n = strlen(s);
    if (n > BPE_MAX_TOKEN) MOE_ERR("%s: %s: token %ld is %zu bytes long (at most %d)", b->name, what, id, n, BPE_MAX_TOKEN);
    if (b->str_len[id] >= 0) {
        if ((size_t)b->str_len[id] == n && !memcmp(b->arena + b->str_off[id], s, n)) return MOE_OK;
        MOE_ERR("%s: %s: id %ld is given to two different tokens", b->name, what, id);
    }
    b->str_off[id] = arena_add(b, s, n);
    b->str_len[id] = (int)n;
    (void)t;
    return MOE_OK;
}

// a token's bytes under the ByteLevel decoder: each character mapped back to its byte, or the
// token's own UTF-8 when one character is outside the alphabet
static void set_decoded(Bpe *b, int id) {
    int n = b->str_len[id];
    char tmp[BPE_MAX_TOKEN];
    const char *s = b->arena + b->str_off[id];
    int k = 0, i = 0;
    bool mapped = true;
    while (i < n) {
        int cp = utf8_next(s, n, &i);
        if (cp < 0 || cp >= 324 || cp_byte[cp] < 0) { mapped = false; break; }
        tmp[k++] = (char)cp_byte[cp];
    }
    if (!mapped) { memcpy(tmp, s, (size_t)n); k = n; }
    b->dec_off[id] = arena_add(b, tmp, (size_t)k);   // (may move the arena: s is not used after)
    b->dec_len[id] = k;
}

// the id tables' size: one past the largest id of the vocabulary and the added tokens (whose
// entries are checked here)
static int id_count(const Bpe *b, const cJSON *vocab, const cJSON *added, int *V) {
    const cJSON *e;
    long max_id = -1, id = 0;
    cJSON_ArrayForEach(e, vocab) {
        if (!json_int(e, 0, BPE_MAX_IDS - 1, &id)) MOE_ERR("%s: model.vocab[\"%s\"]: id must be an integer in [0, %d)", b->name, shown(e->string), BPE_MAX_IDS);
        if (id > max_id) max_id = id;
    }
    int i = 0;
    cJSON_ArrayForEach(e, added) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(e, "content");
        if (!cJSON_IsObject(e) || !json_int(cJSON_GetObjectItemCaseSensitive(e, "id"), 0, BPE_MAX_IDS - 1, &id) || !cJSON_IsString(c) || !*c->valuestring)
            MOE_ERR("%s: added_tokens[%d]: needs an integer \"id\" in [0, %d) and a non-empty string \"content\"", b->name, i, BPE_MAX_IDS);
        if (!json_false(e, "lstrip") || !json_false(e, "rstrip") || !json_false(e, "single_word"))
            MOE_ERR("%s: added_tokens[%d] (\"%s\"): lstrip, rstrip and single_word are not supported", b->name, i, shown(c->valuestring));
        if (id > max_id) max_id = id;
        i++;
    }
    *V = (int)max_id + 1;
    return MOE_OK;
}

// model.vocab: each token's string by id, and the lookup by string
static int read_vocab(Bpe *b, Tokenizer *t, const cJSON *vocab, int nv, int V) {
    const cJSON *e;
    long id = 0;
    t->n_vocab = V;
    b->str_off = MOE_NEW(long, V); b->str_len = MOE_NEW(int, V);
    b->dec_off = MOE_NEW(long, V); b->dec_len = MOE_NEW(int, V);
    for (int k = 0; k < V; k++) b->str_len[k] = b->dec_len[k] = -1;
    b->vocab.mask = pow2_at_least((size_t)nv) - 1;
    b->vocab.slot = MOE_NEW(int, (size_t)b->vocab.mask + 1);
    memset(b->vocab.slot, 0xff, sizeof(int) * ((size_t)b->vocab.mask + 1));
    cJSON_ArrayForEach(e, vocab) {
        json_int(e, 0, BPE_MAX_IDS - 1, &id);
        if (b->str_len[id] >= 0) MOE_ERR("%s: model.vocab: id %ld is given to two tokens", b->name, id);
        MOE_TRY(set_token(b, t, id, e->string, "model.vocab"));
        if (!vocab_insert(b, (int)id)) MOE_ERR("%s: model.vocab: token \"%s\" appears twice", b->name, shown(e->string));
    }
    return MOE_OK;
}

// added_tokens: by id, and by first byte for matching (longest first)
static int read_added(Bpe *b, Tokenizer *t, const cJSON *added, int na, int nv) {
    const cJSON *e;
    long id = 0, max_added = -1;
    int i = 0;
    b->n_added = na;
    b->added_id = MOE_NEW(int, na + 1); b->added_off = MOE_NEW(long, na + 1); b->added_len = MOE_NEW(int, na + 1);
    cJSON_ArrayForEach(e, added) {
        const char *c = cJSON_GetObjectItemCaseSensitive(e, "content")->valuestring;
        json_int(cJSON_GetObjectItemCaseSensitive(e, "id"), 0, BPE_MAX_IDS - 1, &id);
        for (int k = 0; k < i; k++)
            if (b->added_id[k] == id) MOE_ERR("%s: added_tokens: id %ld appears twice", b->name, id);
        // tokenizers ignores a stored id that differs from the one it gives: the vocabulary's
        // for a token in it, else the next after the vocabulary and the added tokens so far
        long want = vocab_find(b, c, strlen(c));
        if (want < 0) want = max_added >= nv ? max_added + 1 : nv;
        if (id != want) MOE_ERR("%s: added_tokens[%d] (\"%s\"): id %ld, where tokenizers gives %ld", b->name, i, shown(c), id, want);
        if (id > max_added) max_added = id;
        MOE_TRY(set_token(b, t, id, c, "added_tokens"));
        b->added_id[i] = (int)id; b->added_off[i] = b->str_off[id]; b->added_len[i] = b->str_len[id];
        i++;
    }
    for (int k = 0; k < na; k++) b->n_by_byte[(unsigned char)b->arena[b->added_off[k]]]++;
    for (int c = 0; c < 256; c++) { b->by_byte[c] = b->n_by_byte[c] ? MOE_NEW(int, b->n_by_byte[c]) : NULL; b->n_by_byte[c] = 0; }
    for (int k = 0; k < na; k++) {
        int c = (unsigned char)b->arena[b->added_off[k]], *l = b->by_byte[c], n = b->n_by_byte[c]++;
        while (n > 0 && b->added_len[l[n - 1]] < b->added_len[k]) { l[n] = l[n - 1]; n--; }   // stable: the earlier of equals first
        l[n] = k;
        for (int j = 0; j < b->n_by_byte[c]; j++)
            if (j != n && b->added_len[l[j]] == b->added_len[k] && !memcmp(b->arena + b->added_off[l[j]], b->arena + b->added_off[k], (size_t)b->added_len[k]))
                MOE_ERR("%s: added_tokens: \"%s\" appears twice", b->name, shown(b->arena + b->added_off[k]));
    }
    return MOE_OK;
}

// model.merges, ranked by position: "a b" or ["a", "b"], both tokens and their merge in the vocabulary
static int read_merges(Bpe *b, const cJSON *merges, int nm) {
    const cJSON *e;
    int i = 0;
    b->pair_mask = pow2_at_least((size_t)nm) - 1;
    b->pairs = MOE_NEW(PairSlot, (size_t)b->pair_mask + 1);
    for (uint32_t k = 0; k <= b->pair_mask; k++) b->pairs[k].new_id = -1;
    char tmp[2 * BPE_MAX_TOKEN + 3];
    cJSON_ArrayForEach(e, merges) {
        const char *l, *r;
        size_t ll, rl;
        if (cJSON_IsString(e)) {
            const char *sp = strchr(e->valuestring, ' ');
            if (!sp || strchr(sp + 1, ' ')) MOE_ERR("%s: model.merges[%d]: \"%s\" is not two tokens parted by one space", b->name, i, shown(e->valuestring));
            l = e->valuestring; ll = (size_t)(sp - l); r = sp + 1; rl = strlen(r);
        } else if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2 && cJSON_IsString(e->child) && cJSON_IsString(e->child->next)) {
            l = e->child->valuestring; ll = strlen(l); r = e->child->next->valuestring; rl = strlen(r);
        } else MOE_ERR("%s: model.merges[%d]: expected \"a b\" or [\"a\", \"b\"]", b->name, i);
        int li = vocab_find(b, l, ll), ri = vocab_find(b, r, rl);
        if (li < 0 || ri < 0) MOE_ERR("%s: model.merges[%d]: token \"%s\" is not in the vocabulary", b->name, i, shown(li < 0 ? l : r));
        if (ll + rl > 2 * BPE_MAX_TOKEN) MOE_ERR("%s: model.merges[%d]: tokens too long", b->name, i);
        memcpy(tmp, l, ll); memcpy(tmp + ll, r, rl);
        int ni = vocab_find(b, tmp, ll + rl);
        tmp[ll + rl] = 0;
        if (ni < 0) MOE_ERR("%s: model.merges[%d]: the merged token \"%s\" is not in the vocabulary", b->name, i, shown(tmp));
        pair_insert(b, li, ri, i, ni);
        i++;
    }
    return MOE_OK;
}

// tokenizer.json's "model" (byte-level BPE; the options that change encoding refused) and
// "added_tokens"
static int parse_model(Bpe *b, Tokenizer *t, const cJSON *root) {
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!cJSON_IsObject(m)) MOE_ERR("%s: no \"model\" object", b->name);
    const char *type = json_type(m);
    if (type && strcmp(type, "BPE")) MOE_ERR("%s: model type %s is not supported (BPE only)", b->name, shown(type));
    if (!json_false(m, "byte_fallback")) MOE_ERR("%s: model.byte_fallback is not supported (byte-level BPE only)", b->name);
    const cJSON *drop = cJSON_GetObjectItemCaseSensitive(m, "dropout");
    if (!json_null(drop) && !(cJSON_IsNumber(drop) && drop->valuedouble == 0))
        MOE_ERR("%s: model.dropout is not supported (it makes encoding random)", b->name);
    static const char *const AFFIX[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int k = 0; k < 2; k++) {
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(m, AFFIX[k]);
        if (!json_null(a) && !(cJSON_IsString(a) && !*a->valuestring)) MOE_ERR("%s: model.%s is not supported", b->name, AFFIX[k]);
    }
    b->fuse_unk = json_true(m, "fuse_unk");
    b->ignore_merges = json_true(m, "ignore_merges");
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(m, "vocab"), *merges = cJSON_GetObjectItemCaseSensitive(m, "merges");
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    if (!cJSON_IsObject(vocab)) MOE_ERR("%s: model.vocab must be an object of token: id", b->name);
    if (!json_null(merges) && !cJSON_IsArray(merges)) MOE_ERR("%s: model.merges must be a list", b->name);
    if (!json_null(added) && !cJSON_IsArray(added)) MOE_ERR("%s: added_tokens must be a list", b->name);
    int nv = cJSON_GetArraySize(vocab), nm = cJSON_GetArraySize(merges), na = cJSON_GetArraySize(added);
    if (nv == 0) MOE_ERR("%s: model.vocab is empty", b->name);
    if (nv > BPE_MAX_IDS || nm > BPE_MAX_IDS || na > BPE_MAX_ADDED)
        MOE_ERR("%s: %d tokens, %d merges, %d added tokens: more than moe.c reads (%d, %d, %d)", b->name, nv, nm, na,
                BPE_MAX_IDS, BPE_MAX_IDS, BPE_MAX_ADDED);
    int V;
    MOE_TRY(id_count(b, vocab, added, &V));
    MOE_TRY(read_vocab(b, t, vocab, nv, V));
    MOE_TRY(read_added(b, t, added, na, nv));
    MOE_TRY(read_merges(b, merges, nm));
    const cJSON *unk = cJSON_GetObjectItemCaseSensitive(m, "unk_token");
    b->unk = -1;
    if (!json_null(unk)) {
        if (!cJSON_IsString(unk)) MOE_ERR("%s: model.unk_token must be a string or null", b->name);
        b->unk = vocab_find(b, unk->valuestring, strlen(unk->valuestring));
        if (b->unk < 0) MOE_ERR("%s: model.unk_token \"%s\" is not in the vocabulary", b->name, shown(unk->valuestring));
    }
    for (int c = 0; c < 256; c++) {
        char u[4];
        b->byte_id[c] = vocab_find(b, u, (size_t)utf8_put(u, byte_cp(c)));
    }
    for (int k = 0; k < V; k++) if (b->str_len[k] >= 0) set_decoded(b, k);
    return MOE_OK;
}

int bpe_parse(Tokenizer *t, const char *json, size_t len, const char *name) {
    if (!cp_byte[0]) {   // (0 is never a valid entry: byte 0 maps to 256)
        for (int c = 0; c < 324; c++) cp_byte[c] = -1;
        for (int c = 0; c < 256; c++) cp_byte[byte_cp(c)] = c;
    }
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root) MOE_ERR("%s: not valid JSON (near byte %ld)", name, cJSON_GetErrorPtr() ? (long)(cJSON_GetErrorPtr() - json) : 0L);
    Bpe *b = MOE_NEW(Bpe, 1);
    memset(b->byte_id, 0xff, sizeof b->byte_id);
    b->name = name;
    t->bpe = b;
    t->kind = TOKENIZER_BPE;
    t->bos = t->sep = t->eos = t->pad = -1;
    int rc = MOE_FAIL;
    if (!cJSON_IsObject(root)) { moe_seterr("%s: expected a JSON object", name); goto done; }
    static const char *const REFUSED[] = {"truncation", "padding"};
    for (int k = 0; k < 2; k++)
        if (!json_null(cJSON_GetObjectItemCaseSensitive(root, REFUSED[k]))) { moe_seterr("%s: \"%s\" is not supported (it must be null)", name, REFUSED[k]); goto done; }
    if (parse_model(b, t, root) || parse_normalizer(b, cJSON_GetObjectItemCaseSensitive(root, "normalizer"))) goto done;
    const cJSON *pre = cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer");
    const char *pt = json_null(pre) ? NULL : json_type(pre);
    if (pt && !strcmp(pt, "Sequence")) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(pre, "pretokenizers"), *e;
        if (!cJSON_IsArray(list)) { moe_seterr("%s: pre_tokenizer: a Sequence needs a \"pretokenizers\" list", name); goto done; }
        int k = 0;
        cJSON_ArrayForEach(e, list) {
            char where[48];
            snprintf(where, sizeof where, "pre_tokenizer.pretokenizers[%d]", k++);
            if (parse_pre_step(b, e, where)) goto done;
        }
    } else if (!json_null(pre) && parse_pre_step(b, pre, "pre_tokenizer")) goto done;
    if (b->n_steps == 0 || !b->step[b->n_steps - 1].byte_level) {
        moe_seterr("%s: pre_tokenizer has no ByteLevel step: only byte-level BPE is supported (Metaspace/SentencePiece is not)", name);
        goto done;
    }
    if (parse_decoder(b, cJSON_GetObjectItemCaseSensitive(root, "decoder")) ||
        parse_post(b, t, cJSON_GetObjectItemCaseSensitive(root, "post_processor"))) goto done;
    b->mctx = pcre2_match_context_create(NULL);
    if (!b->mctx) { moe_seterr("%s: out of memory", name); goto done; }
    pcre2_set_match_limit(b->mctx, 10000000);
    pcre2_set_depth_limit(b->mctx, 100000);
    rc = MOE_OK;
done:
    cJSON_Delete(root);
    return rc;
}

void bpe_free(Bpe *b) {
    if (!b) return;
    for (int k = 0; k < BPE_MAX_STEPS; k++) {
        if (b->step[k].md) pcre2_match_data_free(b->step[k].md);
        if (b->step[k].re) pcre2_code_free(b->step[k].re);
        free(b->spans[k].s);
    }
    if (b->mctx) pcre2_match_context_free(b->mctx);
    for (int c = 0; c < 256; c++) moe_free(b->by_byte[c]);
    moe_free(b->arena); moe_free(b->str_off); moe_free(b->str_len); moe_free(b->dec_off); moe_free(b->dec_len);
    moe_free(b->vocab.slot); moe_free(b->pairs);
    moe_free(b->added_id); moe_free(b->added_off); moe_free(b->added_len);
    free(b->sym_c); free(b->sym_prev); free(b->sym_next); free(b->sym_len); free(b->heap); free(b->buf);
    moe_free(b);
}
