// base: errors with file:line, aligned allocation, rng, timer.
// Everything above this layer returns MOE_OK / MOE_FAIL and leaves a one-line message
// in moe_errmsg(); only the command layer prints it and exits.
#pragma once
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define MOE_OK 0
#define MOE_FAIL (-1)

// Records "message" (printf-style) as the current error; the source location is kept
// apart and shown only with MOE_DEBUG=1, so users see the file and problem, not our code.
void moe_seterr_at(const char *src, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
#define moe_seterr(...) moe_seterr_at(__FILE__, __LINE__, __VA_ARGS__)
// set the error and return MOE_FAIL from the current function
#define MOE_ERR(...) do { moe_seterr(__VA_ARGS__); return MOE_FAIL; } while (0)
#define MOE_TRY(expr) do { if ((expr) != MOE_OK) return MOE_FAIL; } while (0)
const char *moe_errmsg(void);
const char *moe_errsrc(void);

// 64-byte aligned, zeroed; dies with a message on exhaustion (as llm.c's mallocCheck).
// Every allocation is counted under the current memory category (for `moe plan`); in dry
// mode blocks of 1 MiB and more are reserved but not touched (not zeroed either), so a plan
// costs little resident memory.
void *moe_alloc(size_t bytes);
typedef enum { MEM_OTHER, MEM_PARAMS, MEM_GRADS, MEM_OPTIM, MEM_ACTS, MEM_WORK, MEM_N } MemCategory;
MemCategory mem_category(MemCategory c);   // sets the category, returns the previous one
size_t mem_bytes(MemCategory c);           // bytes allocated under c so far (not freed)
void mem_dry_run(int on);
void moe_free(void *p);
// for loops that allocate and free the same buffers again and again (answering questions one
// at a time): freed blocks under 64 MiB stay with the process for reuse instead of going back
// to the system, whose fresh pages fault and are zeroed on every reuse
void mem_keep_freed(void);
// resizes a block from moe_alloc (or NULL) to `bytes`, keeping its contents and category
// (what is new is as moe_alloc leaves it); dies on exhaustion like moe_alloc. For growable
// arrays; moe_free frees.
void *moe_realloc(void *p, size_t bytes);
#define MOE_NEW(type, n) ((type *)moe_alloc(sizeof(type) * (size_t)(n)))

// xoshiro256** seeded by splitmix64: deterministic, serialisable (4 words).
typedef struct { uint64_t s[4]; } Rng;
void rng_seed(Rng *r, uint64_t seed);
uint64_t rng_u64(Rng *r);
float rng_normal(Rng *r);             // N(0,1)
uint64_t rng_below(Rng *r, uint64_t n);

double time_now(void);                 // seconds, monotonic
long peak_rss_kb(void);

// small helpers
static inline int imin(int a, int b) { return a < b ? a : b; }
static inline int imax(int a, int b) { return a > b ? a : b; }
char *moe_strdup(const char *s);
// text from a file (a key, a tensor name) made safe for a one-line message: control
// characters become '?', and it is cut to fit cap bytes, ending in "..." (returns out)
const char *moe_printable(char *out, size_t cap, const char *s);
// read a whole file; returns NULL and sets the error on failure
char *file_read_all(const char *path, size_t *len);

// Progress of outstanding communication (non-blocking MPI needs the process to call into
// MPI now and then): compute loops call moe_progress() on the main thread between pieces
// of work; src/dist sets the hook while exchanges are in flight.
extern void (*moe_progress_hook)(void);
static inline void moe_progress(void) { if (moe_progress_hook) moe_progress_hook(); }
