// Subcommands. Each returns the process exit status; they alone print errors.
#pragma once
#include "args.h"

int cmd_init(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_grad(int argc, char **argv);
int cmd_solve(int argc, char **argv);
int cmd_gen_math(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_plan(int argc, char **argv);
int cmd_plot(int argc, char **argv);

// prints "moe CMD: <message>" (with the source location under MOE_DEBUG=1); returns 1
int cmd_fail(const char *cmd);
// the value of a required flag, or NULL with the error set
const char *cmd_required(Args *a, const char *flag);
// --threads N (or OMP_NUM_THREADS) for BLAS and OpenMP
int cmd_threads(Args *a);
// --recompute none|selective|full and --act-dtype f32|bf16 as an acts_alloc mode
int cmd_acts_mode(Args *a, int *mode, int exact);
