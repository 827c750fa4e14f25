#include "args.h"
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "../base/base.h"

static const char *SWITCHES[] = {"--json", "--generate", "--bf16", "--quiet", "--no-shuffle", "--help", "--latency", "--profile", NULL};
static bool is_switch(const char *s) {
    for (int i = 0; SWITCHES[i]; i++) if (!strcmp(s, SWITCHES[i])) return true;
    return false;
}

void args_init(Args *a, int argc, char **argv, const char *cmd) {
    memset(a, 0, sizeof *a);
    a->argc = argc < 256 ? argc : 256;
    a->argv = argv;
    a->cmd = cmd;
    strcpy(a->given, " ");
    for (int i = 0; i < a->argc; i++)
        if (!strncmp(argv[i], "--", 2)) {
            char name[128];
            snprintf(name, sizeof name, "%s", argv[i]);
            char *eq = strchr(name, '=');
            if (eq) *eq = 0;
            if (strlen(a->given) + strlen(name) + 2 < sizeof a->given) { strcat(a->given, name); strcat(a->given, " "); }
        }
}

bool args_has(const Args *a, const char *flag) {
    char key[130];
    snprintf(key, sizeof key, " %s ", flag);
    return strstr(a->given, key) != NULL;
}

static const char *find(Args *a, const char *flag, bool *missing_value) {
    size_t fl = strlen(flag);
    *missing_value = false;
    const char *val = NULL;
    for (int i = 0; i < a->argc; i++) {
        const char *s = a->argv[i];
        if (!strcmp(s, flag)) {
            a->used[i] = 1;
            if (i + 1 >= a->argc) { *missing_value = true; return NULL; }
            a->used[i + 1] = 1;
            val = a->argv[i + 1];
            i++;
        } else if (!strncmp(s, flag, fl) && s[fl] == '=') {
            a->used[i] = 1;
            val = s + fl + 1;
        }
    }
    return val;   // the last one wins, as with most tools
}

// the flag's value (NULL when absent); an error when the flag is last and has none
static int value(Args *a, const char *flag, const char **v) {
    bool mv;
    *v = find(a, flag, &mv);
    if (mv) MOE_ERR("%s needs a value", flag);
    return MOE_OK;
}

const char *args_str(Args *a, const char *flag, const char *def) {
    const char *v;
    if (value(a, flag, &v)) return NULL;
    return v ? v : def;
}

int args_pick(Args *a, const char *flag, const char *const *names, int n, const char *def, int *out) {
    const char *v = args_str(a, flag, def);
    if (!v) return MOE_FAIL;
    for (int i = 0; i < n; i++)
        if (!strcmp(names[i], v)) { *out = i; return MOE_OK; }
    char list[160] = "";
    for (int i = 0; i < n; i++)
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", names[i], i == n - 1 ? "" : i == n - 2 ? " or " : ", ");
    MOE_ERR("%s must be %s, got \"%s\"", flag, list, v);
}

int args_int(Args *a, const char *flag, int def, int *out) {
    const char *v;
    MOE_TRY(value(a, flag, &v));
    if (!v) { *out = def; return MOE_OK; }
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (*v == 0 || *end || errno || x < -2000000000L || x > 2000000000L) MOE_ERR("%s: expected an integer, got \"%s\"", flag, v);
    *out = (int)x;
    return MOE_OK;
}
int args_double(Args *a, const char *flag, double def, double *out) {
    const char *v;
    MOE_TRY(value(a, flag, &v));
    if (!v) { *out = def; return MOE_OK; }
    char *end;
    double x = strtod(v, &end);
    if (*v == 0 || *end) MOE_ERR("%s: expected a number, got \"%s\"", flag, v);
    *out = x;
    return MOE_OK;
}
int args_float(Args *a, const char *flag, float def, float *out) {
    double d;
    MOE_TRY(args_double(a, flag, def, &d));
    *out = (float)d;
    return MOE_OK;
}
int args_u64(Args *a, const char *flag, unsigned long long def, unsigned long long *out) {
    const char *v;
    MOE_TRY(value(a, flag, &v));
    if (!v) { *out = def; return MOE_OK; }
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (*v == 0 || *end || errno || *v == '-') MOE_ERR("%s: expected a non-negative integer, got \"%s\"", flag, v);
    *out = x;
    return MOE_OK;
}
bool args_bool(Args *a, const char *flag) {
    bool hit = false;
    for (int i = 0; i < a->argc; i++)
        if (!strcmp(a->argv[i], flag)) { a->used[i] = 1; hit = true; }
    return hit;
}
int args_positionals(Args *a, char **out, int cap) {
    int n = 0;
    for (int i = 0; i < a->argc; i++) {
        if (a->used[i]) continue;
        if (!strncmp(a->argv[i], "--", 2)) { if (!is_switch(a->argv[i]) && !strchr(a->argv[i], '=')) i++; continue; }
        if (n < cap) { out[n++] = a->argv[i]; a->used[i] = 1; }
    }
    return n;
}
int args_finish(Args *a) {
    for (int i = 0; i < a->argc; i++)
        if (!a->used[i]) {
            if (!strncmp(a->argv[i], "--", 2)) MOE_ERR("unknown option %s (see moe %s --help)", a->argv[i], a->cmd);
            MOE_ERR("unexpected argument \"%s\" (see moe %s --help)", a->argv[i], a->cmd);
        }
    return MOE_OK;
}

int args_parse_counts(const char *v, const char *flag, int lo, int *out, int cap, int *n) {
    char buf[2048], *end;
    if (strlen(v) >= sizeof buf) MOE_ERR("%s is too long", flag);
    strcpy(buf, v);
    *n = 0;
    for (char *p = strtok(buf, ","); p; p = strtok(NULL, ",")) {
        const long x = strtol(p, &end, 10);
        if (end == p || *end || x < lo || x > 100000 || *n == cap)
            MOE_ERR("%s must be up to %d whole numbers of at least %d, one per chunk (pp x vpp), got \"%s\"", flag, cap, lo, v);
        out[(*n)++] = (int)x;
    }
    if (*n == 0) MOE_ERR("%s needs one layer count per chunk", flag);
    return MOE_OK;
}
