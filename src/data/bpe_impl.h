// Byte-level BPE's tables (tokenizer.h's Bpe), shared by bpe_read.c, which builds them from a
// tokenizer.json, and bpe.c, which encodes with them: private to the two.
#pragma once
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
static inline int byte_cp(int b) {
    if ((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)) return b;
    int n = 0;
    for (int x = 0; x < b; x++)
        if (!((x >= '!' && x <= '~') || (x >= 0xA1 && x <= 0xAC) || (x >= 0xAE && x <= 0xFF))) n++;
    return 256 + n;
}

static inline int utf8_put(char *o, int cp) {
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xC0 | cp >> 6); o[1] = (char)(0x80 | (cp & 63)); return 2; }
    o[0] = (char)(0xE0 | cp >> 12); o[1] = (char)(0x80 | ((cp >> 6) & 63)); o[2] = (char)(0x80 | (cp & 63));
    return 3;
}

static inline uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) { h ^= (unsigned char)s[i]; h *= 1099511628211ULL; }
    return h;
}
static inline uint64_t hash_pair(uint64_t k) { k ^= k >> 33; k *= 0xff51afd7ed558ccdULL; k ^= k >> 33; return k; }

static inline int vocab_find(const Bpe *b, const char *s, size_t n) {
    if (!b->vocab.slot) return -1;
    for (uint32_t h = (uint32_t)hash_bytes(s, n) & b->vocab.mask;; h = (h + 1) & b->vocab.mask) {
        int id = b->vocab.slot[h];
        if (id < 0) return -1;
        if ((size_t)b->str_len[id] == n && !memcmp(b->arena + b->str_off[id], s, n)) return id;
    }
}
static inline const PairSlot *pair_find(const Bpe *b, int l, int r) {
    uint64_t key = (uint64_t)(uint32_t)l << 32 | (uint32_t)r;
    for (uint32_t h = (uint32_t)hash_pair(key) & b->pair_mask;; h = (h + 1) & b->pair_mask) {
        const PairSlot *p = &b->pairs[h];
        if (p->new_id < 0) return NULL;
        if (p->key == key) return p;
    }
}
