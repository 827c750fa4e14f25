// Command-line flags: --name VALUE or --name=VALUE. Every flag a command reads is marked;
// args_finish rejects anything left over, so a typo is an error, not a silent default.
#pragma once
#include <stdbool.h>

typedef struct {
    int argc;
    char **argv;
    unsigned char used[256];
    const char *cmd;
    char given[2048];      // " --a --b " the flags present, for resume merging
} Args;

void args_init(Args *a, int argc, char **argv, const char *cmd);
const char *args_str(Args *a, const char *flag, const char *def);
int args_int(Args *a, const char *flag, int def, int *out);
int args_float(Args *a, const char *flag, float def, float *out);
int args_double(Args *a, const char *flag, double def, double *out);
int args_u64(Args *a, const char *flag, unsigned long long def, unsigned long long *out);
bool args_bool(Args *a, const char *flag);     // a switch without value
// positionals (not flags, not flag values) in order; marks them used
int args_positionals(Args *a, char **out, int cap);
int args_finish(Args *a);
bool args_has(const Args *a, const char *flag);
// a flag whose value is one of names[0..n) (def when absent): its index into *out; else the
// error "FLAG must be a, b or c, got \"v\""
int args_pick(Args *a, const char *flag, const char *const *names, int n, const char *def, int *out);
// "N1,N2,...": whole numbers of at least lo (at most 100000), up to cap of them, into out[*n]
int args_parse_counts(const char *v, const char *flag, int lo, int *out, int cap, int *n);
