// moe: one binary, subcommands (SPEC §4). Dispatch only; each command lives in src/cmd/.
#include <stdio.h>
#include <string.h>
#include "base/base.h"
#include "cmd/cmd.h"
#include "parallel/parallel.h"

typedef struct { const char *name; int (*run)(int, char **); const char *doc; } Command;

static const Command COMMANDS[] = {
    {"init", cmd_init, "write a freshly initialised checkpoint"},
    {"train", cmd_train, "train (or --resume) a model on Q/A or text data"},
    {"eval", cmd_eval, "loss and (--generate) exact match on a data file"},
    {"grad", cmd_grad, "gradient of one batch's loss, as safetensors"},
    {"solve", cmd_solve, "answer questions greedily"},
    {"gen-math", cmd_gen_math, "generate math question/answer data"},
    {"bench", cmd_bench, "training-step speed on random tokens"},
    {"plan", cmd_plan, "predicted memory of a training step, by category"},
    {"plot", cmd_plot, "an SVG of a run: loss, tokens/s, expert-load heatmaps"},
    {"export", cmd_export, "write a checkpoint as a Hugging Face directory (--format hf)"},
    {"serve", cmd_serve, "answer over HTTP: a page, /v1/solve, /v1/completions (continuous batching)"},
    {"calibrate", cmd_calibrate, "measure this machine's rates for moe simulate (--comm under mpirun: the links)"},
    {"simulate", cmd_simulate, "predict a training step on a cluster: time by term, MFU, memory (--search: best layouts)"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: moe COMMAND [options]   (moe COMMAND --help for its options)\n\ncommands:\n");
    for (size_t i = 0; i < sizeof COMMANDS / sizeof *COMMANDS; i++)
        fprintf(f, "  %-9s %s\n", COMMANDS[i].name, COMMANDS[i].doc);
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (dist_init(&argc, &argv) != MOE_OK) { fprintf(stderr, "moe: %s\n", moe_errmsg()); return 1; }
    const DistInfo *dist = dist_info();
    if (dist->size > 1 && strcmp(argv[1], "train") && strcmp(argv[1], "calibrate")) {
        // only training is distributed; P copies of any other command would write the same files
        if (dist->rank == 0) fprintf(stderr, "moe %s: runs on one process (only train and calibrate --comm run under mpirun with %d ranks)\n", argv[1], dist->size);
        dist_finalize();
        return 1;
    }
    for (size_t i = 0; i < sizeof COMMANDS / sizeof *COMMANDS; i++)
        if (!strcmp(argv[1], COMMANDS[i].name)) {
            int rc = COMMANDS[i].run(argc - 2, argv + 2);
            if (rc && dist->size > 1) dist_abort(rc);   // a failed rank ends the whole job
            dist_finalize();
            return rc;
        }
    fprintf(stderr, "moe: unknown command \"%s\"\n", argv[1]);
    usage(stderr);
    return 2;
}
