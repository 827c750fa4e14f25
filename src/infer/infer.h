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


// Mean cross-entropy over the target tokens of the first `limit` examples (all when 0),
// without balance losses or capacity: what `moe eval` reports.
// sh: the experts m holds (under expert parallelism every rank of the group takes part; NULL: all)
int eval_loss(Model *m, const ExpertShard *sh, const Dataset *d, int limit, int batch, double *loss, long *tokens);
// The logits at every position of each of the first n examples (one forward each): *out
// [sum of rows, V] (moe_alloc'd), rows[i] the positions of example i.
int eval_logits(Model *m, const Dataset *d, int n, float **out, int *rows);
