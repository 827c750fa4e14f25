// Tokenizers: text <-> token ids. Two kinds behind one interface:
//   TOKENIZER_BYTE  SPEC §2: ids 0-255 are bytes, 256 <pad>, 257 <bos>, 258 <sep>, 259 <eos>
//   TOKENIZER_BPE   Hugging Face tokenizer.json, byte-level BPE (GPT-2, Qwen2/3, DeepSeek-V3):
//                   added tokens matched literally, NFC, Split/ByteLevel pre-tokenizers
//                   (PCRE2 in UTF+UCP mode), merges by rank, ByteLevel decoder (bpe.c)
// A checkpoint directory with a tokenizer.json uses it; any other uses the byte tokenizer.
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include "../base/base.h"

typedef enum { TOKENIZER_BYTE = 0, TOKENIZER_BPE } TokenizerKind;

typedef struct Bpe Bpe;

typedef struct {
    TokenizerKind kind;
    int n_vocab;              // every id produced is < n_vocab
    int bos, sep, eos, pad;   // special ids, -1 when the tokenizer has none (BPE: no sep, no pad)
    Bpe *bpe;                 // TOKENIZER_BPE only
    char *path;               // the tokenizer.json read (NULL for the byte tokenizer)
} Tokenizer;

// A growable list of ids (moe_realloc); {0} is empty.
typedef struct { int *id; long n, cap; } TokIds;
void tokids_push(TokIds *v, int id);
void tokids_free(TokIds *v);

// The byte tokenizer of SPEC §2 (never fails, holds nothing: tokenizer_free is optional).
void tokenizer_byte(Tokenizer *t);
// A Hugging Face tokenizer.json; anything it cannot reproduce exactly is refused with one
// line naming the file and the component. `name` labels messages when parsing from memory.
int tokenizer_load_json(Tokenizer *t, const char *path);
int tokenizer_parse_json(Tokenizer *t, const char *json, size_t len, const char *name);
// The tokenizer of checkpoint DIR: DIR/tokenizer.json when present (its bos/eos from
// DIR/tokenizer_config.json when that names them), else the byte tokenizer. Its ids must fit
// the model's vocab_size.
int tokenizer_for_dir(Tokenizer *t, const char *dir, int vocab_size);
// copies from_dir's tokenizer.json and tokenizer_config.json (those there) into to_dir, so
// that a checkpoint written there carries its tokenizer; a file onto itself is left alone
int tokenizer_copy_files(const char *from_dir, const char *to_dir);
void tokenizer_free(Tokenizer *t);

// Appends the ids of text s[0..len) to out (BPE: as Hugging Face's encode with
// add_special_tokens=False; special tokens written in the text are matched).
int tokenizer_encode(const Tokenizer *t, const char *s, size_t len, TokIds *out);
// The bytes of ids (ids outside the vocabulary, and the byte tokenizer's specials, are '?');
// *out is NUL-terminated, from moe_alloc (moe_free it); *len excludes the NUL.
int tokenizer_decode(const Tokenizer *t, const int *ids, long n, char **out, size_t *len);
// For answers held as C strings: appends the bytes of one id but its NUL bytes to *buf
// (moe_realloc'd as it grows, NUL-terminated), returns the number of bytes appended.
size_t tokenizer_decode_append(const Tokenizer *t, int id, char **buf, size_t *len, size_t *cap);

// A question/answer example (SPEC §2). Byte: <bos> q <sep> | a <eos>. BPE: [bos] "q\n" | a [eos]
// (the prompt is encoded as one text, the answer as another). Both append to out.
int tokenizer_prompt(const Tokenizer *t, const char *q, int ql, TokIds *out);
int tokenizer_answer(const Tokenizer *t, const char *a, int al, TokIds *out);

// Looks up a token's id by its text (added tokens and vocabulary); -1 when absent.
int tokenizer_token_id(const Tokenizer *t, const char *s);

// internal: bpe.c
int bpe_parse(Tokenizer *t, const char *json, size_t len, const char *name);
void bpe_free(Bpe *b);
int bpe_encode(const Tokenizer *t, const char *s, size_t len, TokIds *out);
const char *bpe_token_bytes(const Bpe *b, int id, int *len);   // NULL: no such id
int bpe_token_id(const Bpe *b, const char *s, size_t len);
