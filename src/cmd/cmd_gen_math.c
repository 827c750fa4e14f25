#include <string.h>
#include "../base/base.h"
#include "../data/data.h"
#include "../base/fileio.h"
#include "cmd.h"

static void help(void) {
    printf("usage: moe gen-math --n N [--seed S] [--tasks a,b,...] [--out FILE]\n"
           "  writes N math question/answer pairs as alternating lines (stdout without --out)\n"
           "  tasks:\n");
    for (int i = 0; i < N_MATH_TASKS; i++) printf("    %-14s %s\n", MATH_TASKS[i].name, MATH_TASKS[i].doc);
}

int cmd_gen_math(int argc, char **argv) {
    Args a;
    args_init(&a, argc, argv, "gen-math");
    if (args_bool(&a, "--help")) { help(); return 0; }
    int n;
    unsigned long long seed;
    if (args_int(&a, "--n", 0, &n) || args_u64(&a, "--seed", 1, &seed)) return cmd_fail("gen-math");
    const char *tasks = args_str(&a, "--tasks", NULL), *out = args_str(&a, "--out", NULL);
    if (args_finish(&a)) return cmd_fail("gen-math");
    if (n <= 0) { moe_seterr("--n must be positive, got %d", n); return cmd_fail("gen-math"); }
    FILE *f = out ? file_atomic_open(out) : stdout;
    if (!f) return cmd_fail("gen-math");
    int rc = genmath_write(f, n, seed, tasks);
    if (out) {
        if (rc) file_atomic_abort(f, out);
        else rc = file_atomic_commit(f, out);
    }
    return rc ? cmd_fail("gen-math") : 0;
}
