// Subcommands. Each returns the process exit status; they alone print errors.
#pragma once
#include "args.h"
#include "../base/base.h"
#include "../config/config.h"
#include "../infer/infer.h"

int cmd_init(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_grad(int argc, char **argv);
int cmd_solve(int argc, char **argv);
int cmd_gen_math(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_plan(int argc, char **argv);
int cmd_plot(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_simulate(int argc, char **argv);
int cmd_calibrate(int argc, char **argv);

// prints "moe CMD: <message>" (with the source location under MOE_DEBUG=1); returns 1
int cmd_fail(const char *cmd);
// the value of a required flag, or NULL with the error set
const char *cmd_required(Args *a, const char *flag);
// --ckpt DIR, or when it is not given the shipped solver: models/solver in the current
// directory, else beside the binary; NULL with the error set when there is none
const char *cmd_ckpt_or_solver(Args *a);
// --threads N (or OMP_NUM_THREADS) for BLAS and OpenMP
int cmd_threads(Args *a);
// Generation's flags (gen_flags.c): --mla-form auto|absorbed|expanded and --speculative
// on|off|auto (auto: on when the model has MTP modules), read before args_finish and turned
// into options once the model's config is known
typedef struct { const char *mla_form, *speculative; } GenFlags;
int cmd_gen_flags(Args *a, GenFlags *f);
int cmd_gen_opts(const GenFlags *f, const MoeConfig *c, GenOpts *go);
// moe bench --decode (cmd_bench_decode.c): prefill and decoding speed, KV bytes a token
int cmd_bench_decode(Args *a, const char *cfg);
// --recompute none|selective|full and --act-dtype f32|bf16 as an acts_alloc mode
int cmd_acts_mode(Args *a, int *mode, int exact);

// A training step's buffers (model, gradients, AdamW, activations of ntok tokens in acts mode
// `mode`) allocated in a dry run (reserved, never touched): MB by memory category, and (when
// kind_mb is not NULL) the parameters' MB by kind
enum { PK_EMBEDDING, PK_ATTENTION, PK_ROUTER, PK_EXPERTS, PK_SHARED, PK_DENSE, PK_NORMS, PK_MTP, PK_HEAD, PK_N };
extern const char *const PK_NAMES[PK_N];
void cmd_plan_step(const MoeConfig *c, int ntok, int mode, double mb[MEM_N], double kind_mb[PK_N]);
// an error naming cfg when that step needs more memory than this machine has available
int cmd_check_fits(const MoeConfig *c, int ntok, int mode, const char *cfg);
