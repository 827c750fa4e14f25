// libFuzzer: the bytes are a training data file (moe train --data) read as Q/A lines, JSON
// lines and text in turn, with the byte tokenizer and a short sequence limit. Each read either
// refuses with one line naming the file, or gives examples that lie inside the token stream
// (in the tokenizer's range), fit the limit, keep their prompt inside themselves, and point
// their question and answer at text inside the file.
#include <stdint.h>
#include "../../src/data/data.h"
#include "fuzz_common.h"

static void check_dataset(const Dataset *d, size_t len, int max_inputs) {
    if (d->n < 1 || d->n_tok < 0) { fprintf(stderr, "fuzz: %d examples, %ld tokens\n", d->n, d->n_tok); abort(); }
    for (int i = 0; i < d->n; i++) {
        const Example *e = &d->ex[i];
        if (e->off < 0 || e->len < 2 || e->off + e->len > d->n_tok || e->len - 1 > max_inputs || e->n_prompt < 1 || e->n_prompt > e->len) {
            fprintf(stderr, "fuzz: example %d: off %ld len %d prompt %d of %ld tokens\n", i, e->off, e->len, e->n_prompt, d->n_tok);
            abort();
        }
        for (int t = 0; t < e->len; t++)
            if (d->tok[e->off + t] < 0 || d->tok[e->off + t] >= 260) { fprintf(stderr, "fuzz: token %d\n", d->tok[e->off + t]); abort(); }
        if (d->format != DATA_TEXT) {
            int ql, al;
            const char *q = dataset_question(d, i, &ql), *a = dataset_answer(d, i, &al);
            if (q < d->text || a < d->text || ql < 0 || al < 0 || q + ql > d->text + len || a + al > d->text + len) abort();
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const DataFormat FMT[] = {DATA_QA, DATA_JSONL, DATA_TEXT};
    Tokenizer byte;
    tokenizer_byte(&byte);
    for (int f = 0; f < 3; f++) {
        char *text = malloc(size + 1);
        memcpy(text, data, size);
        text[size] = 0;
        Dataset d;
        const int max_inputs = 48;
        if (dataset_parse_tok(&d, text, size, "fuzz.txt", FMT[f], max_inputs, 0, &byte) != MOE_OK) fuzz_check_message("fuzz.txt");
        else {
            check_dataset(&d, size, max_inputs);
            dataset_free(&d);
        }
    }
    return 0;
}
