// Built-in math question/answer generator, in the alternating-line layout of DeepMind's
// mathematics_dataset and with its phrasing where we know it, so that `make demo` needs
// no download. Seeded: the same (n, seed, tasks) always gives the same file.
#include <stdlib.h>
#include <string.h>
#include "data.h"

const MathTask MATH_TASKS[] = {
    {"add", "signed multi-digit addition"},
    {"sub", "signed multi-digit subtraction"},
    {"mul", "signed multiplication"},
    {"place_value", "digit place value of an integer"},
    {"round", "rounding an integer to a power of ten"},
    {"compare", "which of two numbers is bigger or smaller"},
    {"linear_1d", "solving a*x + b = c for integer x"},
    {"differentiate", "derivative of a polynomial in x"},
};
const int N_MATH_TASKS = sizeof MATH_TASKS / sizeof *MATH_TASKS;

static long rint_digits(Rng *r, int maxd) {   // a number of 1..maxd digits
    int d = 1 + (int)rng_below(r, maxd);
    long lo = 1, hi;
    for (int i = 1; i < d; i++) lo *= 10;
    hi = lo * 10;
    if (d == 1) lo = 0;
    return lo + (long)rng_below(r, hi - lo);
}
static long rsigned(Rng *r, int maxd) { long v = rint_digits(r, maxd); return rng_below(r, 3) == 0 ? -v : v; }

static const char *PLACE[] = {"units", "tens", "hundreds", "thousands", "ten thousands",
                              "hundred thousands", "millions"};
static const char *ROUND_NAME[] = {"ten", "one hundred", "one thousand", "ten thousand", "one hundred thousand"};

static void term(char *out, size_t cap, long coef, int power, int first) {
    char body[64];
    long a = coef < 0 ? -coef : coef;
    if (power == 0) snprintf(body, sizeof body, "%ld", a);
    else if (power == 1) snprintf(body, sizeof body, a == 1 ? "x" : "%ld*x", a);
    else if (a == 1) snprintf(body, sizeof body, "x**%d", power);
    else snprintf(body, sizeof body, "%ld*x**%d", a, power);
    size_t n = strlen(out);
    if (first) snprintf(out + n, cap - n, "%s%s", coef < 0 ? "-" : "", body);
    else snprintf(out + n, cap - n, " %s %s", coef < 0 ? "-" : "+", body);
}

static void gen_one(Rng *r, int task, char *q, char *a, size_t cap) {
    switch (task) {
    case 0: { long x = rsigned(r, 6), y = rsigned(r, 6);
        if (rng_below(r, 2)) snprintf(q, cap, "What is %ld + %ld?", x, y);
        else snprintf(q, cap, "Add %ld and %ld.", x, y);
        snprintf(a, cap, "%ld", x + y); break; }
    case 1: { long x = rsigned(r, 6), y = rsigned(r, 6);
        if (rng_below(r, 2)) snprintf(q, cap, "What is %ld - %ld?", x, y);
        else snprintf(q, cap, "Calculate %ld - %ld.", x, y);
        snprintf(a, cap, "%ld", x - y); break; }
    case 2: { long x = rsigned(r, 4), y = rsigned(r, 3);
        if (rng_below(r, 2)) snprintf(q, cap, "What is %ld times %ld?", x, y);
        else snprintf(q, cap, "Multiply %ld and %ld.", x, y);
        snprintf(a, cap, "%ld", x * y); break; }
    case 3: { long x = rint_digits(r, 7); int p = 0; long t = x; int nd = 1;
        while (t >= 10) { t /= 10; nd++; }
        p = (int)rng_below(r, nd);
        long d = x; for (int i = 0; i < p; i++) d /= 10;
        snprintf(q, cap, "What is the %s digit of %ld?", PLACE[p], x);
        snprintf(a, cap, "%ld", d % 10); break; }
    case 4: { long x = rsigned(r, 7); int p = 1 + (int)rng_below(r, 5); long m = 1;
        for (int i = 0; i < p; i++) m *= 10;
        long ax = x < 0 ? -x : x, rr = (ax + m / 2) / m * m;   // half away from zero
        if (rng_below(r, 2)) snprintf(q, cap, "Round %ld to the nearest %s.", x, ROUND_NAME[p - 1]);
        else snprintf(q, cap, "What is %ld rounded to the nearest %s?", x, ROUND_NAME[p - 1]);
        snprintf(a, cap, "%ld", x < 0 ? -rr : rr); break; }
    case 5: { long x = rsigned(r, 5), y = rsigned(r, 5); while (y == x) y = rsigned(r, 5);
        int kind = (int)rng_below(r, 3);
        if (kind == 0) { snprintf(q, cap, "Which is bigger: %ld or %ld?", x, y); snprintf(a, cap, "%ld", x > y ? x : y); }
        else if (kind == 1) { snprintf(q, cap, "Which is smaller: %ld or %ld?", x, y); snprintf(a, cap, "%ld", x < y ? x : y); }
        else { snprintf(q, cap, "Is %ld greater than %ld?", x, y); snprintf(a, cap, "%s", x > y ? "True" : "False"); }
        break; }
    case 6: { long x = rsigned(r, 2), k = rsigned(r, 2); if (k == 0) k = 3;
        long b = rsigned(r, 3), c = k * x + b;
        char lhs[64] = "";
        term(lhs, sizeof lhs, k, 1, 1);
        if (b) term(lhs, sizeof lhs, b, 0, 0);
        snprintf(q, cap, "Solve %s = %ld for x.", lhs, c);
        snprintf(a, cap, "%ld", x); break; }
    default: { int deg = 1 + (int)rng_below(r, 3); long co[4];
        char poly[128] = "", der[128] = "";
        int first = 1, dfirst = 1;
        for (int p = deg; p >= 0; p--) {
            co[p] = p == deg ? rsigned(r, 2) : (rng_below(r, 2) ? rsigned(r, 2) : 0);
            if (co[p] == 0 && p == deg) co[p] = 2;
            if (!co[p]) continue;
            term(poly, sizeof poly, co[p], p, first); first = 0;
            if (p > 0) { term(der, sizeof der, co[p] * p, p - 1, dfirst); dfirst = 0; }
        }
        if (dfirst) strcpy(der, "0");
        snprintf(q, cap, "Differentiate %s with respect to x.", poly);
        snprintf(a, cap, "%s", der); break; }
    }
}

int genmath_write(FILE *f, long n, unsigned long long seed, const char *tasks) {
    int sel[16], ns = 0;
    if (!tasks || !*tasks) { for (int i = 0; i < N_MATH_TASKS; i++) sel[ns++] = i; }
    else {
        char buf[512]; snprintf(buf, sizeof buf, "%s", tasks);
        for (char *t = strtok(buf, ","); t; t = strtok(NULL, ",")) {
            int found = -1;
            for (int i = 0; i < N_MATH_TASKS; i++) if (!strcmp(t, MATH_TASKS[i].name)) found = i;
            if (found < 0) {
                char list[256] = "";
                for (int i = 0; i < N_MATH_TASKS; i++) { strcat(list, i ? ", " : ""); strcat(list, MATH_TASKS[i].name); }
                MOE_ERR("--tasks: unknown task \"%s\" (known: %s)", t, list);
            }
            if (ns < 16) sel[ns++] = found;
        }
    }
    Rng r;
    rng_seed(&r, seed);
    char q[256], a[256];
    for (long i = 0; i < n; i++) {
        gen_one(&r, sel[rng_below(&r, ns)], q, a, sizeof q);
        fprintf(f, "%s\n%s\n", q, a);
    }
    return ferror(f) ? MOE_FAIL : MOE_OK;
}
