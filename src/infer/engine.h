// Continuous batching: greedy decoding of sequences that join and leave while others run.
// The engine owns a fixed number of sequence slots over one KV cache; each engine_step is
// one forward pass over every live sequence's new tokens (a newcomer's whole prompt, the
// others' last token), so a request never waits for a batch to drain. The answers are
// greedy decoding's (SPEC §2), as generate_greedy gives them.
#pragma once
#include "../data/tokenizer.h"
#include "../model/model.h"

typedef struct Engine Engine;

// slots: sequences decoded together at most; step_tokens: the tokens one forward pass takes
// at most (prompts wait their turn beyond it; at least max_position_embeddings)
int engine_new(Engine **e, Model *m, const Tokenizer *tk, int slots, int step_tokens);
void engine_free(Engine *e);

int engine_free_slots(const Engine *e);
int engine_live(const Engine *e);   // sequences started and not finished

// Starts a sequence in a free slot (the caller checks engine_free_slots): raw = false, text
// is a question (the prompt <bos> q <sep>); raw = true, <bos> and text as it is. At most
// max_new tokens are generated (1..64). tag comes back with the result. Fails, with a
// message and nothing started, when the prompt does not fit the model's positions.
int engine_add(Engine *e, const char *text, int len, bool raw, int max_new, void *tag);

// One forward pass over the live sequences; *finished: how many ended (engine_take).
int engine_step(Engine *e, int *finished);

// A finished sequence: its text (moe_alloc'd: the caller moe_frees it), its tokens, and
// why it stopped: "stop" (<eos>) or "length" (max_new tokens or the model's last position)
typedef struct { void *tag; char *text; int n_tokens, n_prompt; const char *finish; } EngineResult;
// Moves up to cap finished results into out; returns how many
int engine_take(Engine *e, EngineResult *out, int cap);

// The rows of the last forward pass (for batch-size statistics)
int engine_last_rows(const Engine *e, int *sequences);
