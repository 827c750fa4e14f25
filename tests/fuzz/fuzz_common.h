// What every harness checks besides "no crash, no leak, no undefined behaviour": a refusal
// is one line that begins with the name of the file (or directory) it is about.
#pragma once
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../../src/base/base.h"

static inline void fuzz_check_message(const char *name) {
    const char *m = moe_errmsg();
    int bad = strncmp(m, name, strlen(name)) != 0;
    for (const char *p = m; *p; p++) bad |= *p == '\n' || *p == '\r';
    if (bad) {
        fprintf(stderr, "fuzz: the message does not begin with \"%s\" or is not one line: %s\n", name, m);
        abort();
    }
}
