// Tokens and data (SPEC §2): byte tokenizer, Q/A and text readers, batching.
#pragma once
#include <stdbool.h>
#include "../base/base.h"
#include "tokenizer.h"

enum { TOK_PAD = 256, TOK_BOS = 257, TOK_SEP = 258, TOK_EOS = 259 };

typedef enum { DATA_AUTO = 0, DATA_QA, DATA_JSONL, DATA_TEXT } DataFormat;

// One example is `len` tokens at tok + off: <bos> q <sep> a <eos> (or a text window).
// Its inputs are the first len-1 tokens; input i has a target when i + 1 >= n_prompt.
typedef struct { long off; int len, n_prompt; long q_off; int q_len; long a_off; int a_len; } Example;

typedef struct {
    char *path;
    char *text;            // the file, for question/answer strings (NUL-separated in place)
    int *tok;
    long n_tok;
    Example *ex;
    int n;
    int skipped;           // examples longer than the sequence limit
    DataFormat format;
    int n_files;           // dataset_concat: the files joined, file f's examples [file_start[f], file_start[f+1])
    int file_start[33];
} Dataset;

// Reads PATH; examples whose inputs exceed max_inputs tokens are skipped (counted).
// limit > 0 keeps the first `limit` examples.
int dataset_load(Dataset *d, const char *path, DataFormat fmt, int max_inputs, int limit);
// The same with a tokenizer (dataset_load: the byte tokenizer). Q/A examples are the
// tokenizer's prompt and answer (tokenizer_prompt, tokenizer_answer); text is encoded whole.
int dataset_load_tok(Dataset *d, const char *path, DataFormat fmt, int max_inputs, int limit, const Tokenizer *tk);
// The same from text[len] (malloc'd, NUL after the end; the dataset owns it from here, freed
// on failure too); path names it in errors (and picks the format under DATA_AUTO)
int dataset_parse_tok(Dataset *d, char *text, size_t len, const char *path, DataFormat fmt, int max_inputs, int limit,
                      const Tokenizer *tk);
void dataset_free(Dataset *d);
const char *dataset_question(const Dataset *d, int i, int *len);
const char *dataset_answer(const Dataset *d, int i, int *len);
int data_format_parse(const char *s, DataFormat *out);

// Several datasets read as one (train --data A,B)
int dataset_concat(Dataset *out, Dataset *parts, int n);

// A micro-batch: the real tokens of its examples laid end to end (no padding). Token n
// attends to [kv_lo[n], n]; that mask keeps examples apart.
typedef struct {
    int N;                 // tokens
    int *tokens, *pos, *kv_lo, *targets;   // [N]; target -1 = not a target
    int n_seq;
    int *seq_start;        // [n_seq+1]
    int n_targets;
} Batch;

// Batch buffers sized for max_tokens; fill from example ids.
void batch_alloc(Batch *b, int max_tokens, int max_seq);
void batch_free(Batch *b);
void batch_fill(Batch *b, const Dataset *d, const int *ids, int count);
// prompt-only batch for generation: <bos> q <sep>
int encode_prompt(int *out, int cap, const char *q, int qlen);

// Seeded epoch-by-epoch shuffling: example = perm_epoch(cursor / n)[cursor % n].
typedef struct {
    unsigned long long seed; int n; bool shuffle; long epoch; int *perm;
    // a weighted mixture of files (order_init_mix): position c draws file f with probability
    // w_f (seeded by c), then file f's next example in its own shuffled epochs
    int n_files, *fstart;
    double *cum;           // [n_files] cumulative weights, the last 1
    long next, *fcount, *fepoch;
    int **fperm;
} DataOrder;
void order_init(DataOrder *o, int n, unsigned long long seed, bool shuffle);
void order_init_mix(DataOrder *o, const Dataset *d, const double *weights, unsigned long long seed, bool shuffle);
int order_example(DataOrder *o, long cursor);
void order_free(DataOrder *o);

// Built-in seeded math Q/A generator (moe gen-math).
typedef struct { const char *name; const char *doc; } MathTask;
extern const MathTask MATH_TASKS[];
extern const int N_MATH_TASKS;
// writes n question/answer line pairs; tasks: comma list or NULL for all
int genmath_write(FILE *f, long n, unsigned long long seed, const char *tasks);
