// Hugging Face tokenizer.json, byte-level BPE: reading it (every field checked, every id
// bounded), encoding as the `tokenizers` library does, decoding.
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
#define PCRE2_CODE_UNIT_WIDTH 8
#include <cjson/cJSON.h>
#include <math.h>
#include <pcre2.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>
#include "tokenizer.h"

enum {
    BPE_MAX_IDS = 1 << 22,       // ids and entries of vocab and merges: larger is refused
    BPE_MAX_TOKEN = 4096,        // bytes of one token's text
    BPE_MAX_ADDED = 1 << 16,
    BPE_MAX_STEPS = 16,          // pre-tokenizers in a Sequence
    BPE_MAX_PATTERN = 1 << 16,
};

typedef enum { SPLIT_REMOVED, SPLIT_ISOLATED, SPLIT_MERGED_PREV, SPLIT_MERGED_NEXT, SPLIT_CONTIGUOUS } SplitBehavior;

typedef struct {
    bool byte_level;             // ByteLevel: else Split
    bool prefix_space;           // ByteLevel add_prefix_space
    bool invert;                 // Split
    SplitBehavior behavior;
    pcre2_code *re;              // Split's pattern, or ByteLevel's GPT-2 regex (use_regex); NULL: none
    pcre2_match_data *md;
} PreStep;

typedef struct { int start, end; bool match; } Span;
typedef struct { Span *s; int n, cap; } Spans;

typedef struct { int rank, pos, new_id; } HeapItem;

// open addressing: string -> id (keys are token texts in the arena)
typedef struct { int *slot; uint32_t mask; } StrMap;
// (a, b) -> rank, new id
typedef struct { uint64_t key; int rank, new_id; } PairSlot;

struct Bpe {
    const char *name;
    char *arena;                 // token texts, then decoded bytes
    size_t arena_len, arena_cap;
    long *str_off; int *str_len; // [n_vocab] token text (len -1: no token with this id)
    long *dec_off; int *dec_len; // [n_vocab] its bytes (ByteLevel decoder)
    StrMap vocab;                // the model's vocabulary
    PairSlot *pairs; uint32_t pair_mask;
    int byte_id[256];            // id of each byte's alphabet character, -1 when missing
    int unk;                     // -1: unknown characters are dropped
    bool fuse_unk, ignore_merges, nfc;
    // added tokens, by first byte, longest first
    int n_added;
    int *added_id; long *added_off; int *added_len;   // content in the arena
    int *by_byte[256]; int n_by_byte[256];
    PreStep step[BPE_MAX_STEPS];
    int n_steps;
    pcre2_match_context *mctx;
    Spans spans[BPE_MAX_STEPS];
    // merge_word's scratch
    int *sym_c, *sym_prev, *sym_next, *sym_len; HeapItem *heap; int sym_cap, heap_cap;
    char *buf; size_t buf_cap;   // ignore_merges' word text; prefix space
};

// ---- GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the rest
// take code points 256.. in byte order
static int byte_cp(int b) {
    if ((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)) return b;
    int n = 0;
    for (int x = 0; x < b; x++)
        if (!((x >= '!' && x <= '~') || (x >= 0xA1 && x <= 0xAC) || (x >= 0xAE && x <= 0xFF))) n++;
    return 256 + n;
}
static int cp_byte[324];         // inverse, -1 where no byte

static int utf8_put(char *o, int cp) {
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xC0 | cp >> 6); o[1] = (char)(0x80 | (cp & 63)); return 2; }
    o[0] = (char)(0xE0 | cp >> 12); o[1] = (char)(0x80 | ((cp >> 6) & 63)); o[2] = (char)(0x80 | (cp & 63));
    return 3;
}
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

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) { h ^= (unsigned char)s[i]; h *= 1099511628211ULL; }
    return h;
}
static uint64_t hash_pair(uint64_t k) { k ^= k >> 33; k *= 0xff51afd7ed558ccdULL; k ^= k >> 33; return k; }
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

static int vocab_find(const Bpe *b, const char *s, size_t n) {
    if (!b->vocab.slot) return -1;
    for (uint32_t h = (uint32_t)hash_bytes(s, n) & b->vocab.mask;; h = (h + 1) & b->vocab.mask) {
        int id = b->vocab.slot[h];
        if (id < 0) return -1;
        if ((size_t)b->str_len[id] == n && !memcmp(b->arena + b->str_off[id], s, n)) return id;
    }
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
static const PairSlot *pair_find(const Bpe *b, int l, int r) {
    uint64_t key = (uint64_t)(uint32_t)l << 32 | (uint32_t)r;
    for (uint32_t h = (uint32_t)hash_pair(key) & b->pair_mask;; h = (h + 1) & b->pair_mask) {
        const PairSlot *p = &b->pairs[h];
        if (p->new_id < 0) return NULL;
        if (p->key == key) return p;
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
