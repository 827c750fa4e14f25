// Inference: batched greedy decoding with a key/value cache, and the eval loss.
#pragma once
#include "../data/data.h"
#include "../model/model.h"

#define GEN_MAX_NEW 64

// Greedy answers for n questions (SPEC §2: prompt <bos> q <sep>, argmax with ties to the
// lower id, stop at <eos> or 64 tokens), with tokenizer tk's prompt, end and decoding.
// answers[i] is NUL-terminated, from moe_alloc (the caller moe_frees it); on failure, the
// answers of the chunks not reached stay untouched.
int generate_greedy(Model *m, const Tokenizer *tk, const char *const *q, const int *qlen, int n, char **answers, int batch);

// How to decode: MLA's form under the cache (MLA_FORM_*), and self-speculation by the first
// multi-token-prediction module (the answers are those of plain greedy decoding)
typedef struct { int mla_form; bool speculative; } GenOpts;
// the defaults: MLA's form per forward pass by cost; speculation when c has MTP modules
void gen_opts_default(GenOpts *go, const MoeConfig *c);
// drafts verified and accepted, and the stack's forward passes (prefills and decoding steps)
typedef struct { long drafted, accepted, forwards; } GenStats;
// generate_greedy with options (NULL: the defaults) and statistics (NULL: none); an error
// when go asks for speculation from a model without MTP modules
int generate_greedy_ex(Model *m, const Tokenizer *tk, const char *const *q, const int *qlen, int n, char **answers,
                       int batch, const GenOpts *go, GenStats *st);

// Decoding speed (moe bench --decode), one sequence of random tokens: the prefill of ctx
// tokens in one forward pass, then for each chunk size the median over reps forward passes
// of chunks[k] new tokens over those ctx cached ones (1: one decoding step), MLA in form
// mla_form. out->step_s has n_chunks entries (at most DECODE_MAX_CHUNKS).
#define DECODE_MAX_CHUNKS 16
typedef struct { double prefill_s, step_s[DECODE_MAX_CHUNKS]; } DecodeTiming;
int infer_bench_decode(Model *m, int ctx, const int *chunks, int n_chunks, int reps, int mla_form, DecodeTiming *out);

// Mean cross-entropy over the target tokens of the first `limit` examples (all when 0),
// without balance losses or capacity: what `moe eval` reports.
// sh: the experts m holds (under expert parallelism every rank of the group takes part; NULL: all)
int eval_loss(Model *m, const ExpertShard *sh, const Dataset *d, int limit, int batch, double *loss, long *tokens);
// The logits at every position of each of the first n examples (one forward each): *out
// [sum of rows, V] (moe_alloc'd), rows[i] the positions of example i.
int eval_logits(Model *m, const Dataset *d, int n, float **out, int *rows);

// weights16.c: when every weight of m is a bf16 value (a BF16 checkpoint), keep a bf16 copy
// that the linear layers over a few rows (decoding) read: the same answers, half the memory
// traffic. Returns whether it is on (until infer_weights_bf16_off or the process ends).
bool infer_weights_bf16(const Model *m);
void infer_weights_bf16_off(void);
