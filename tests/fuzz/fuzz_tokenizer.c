// libFuzzer: tokenizer.json bytes -> load -> encode a fixed text -> decode. Loading must refuse
// what it cannot read with a message, and never read or write out of bounds; what loads must
// encode and decode without fault, every id below n_vocab.
//   clang -fsanitize=fuzzer,address,undefined -Isrc tests/fuzz/fuzz_tokenizer.c \
//     src/data/tokenizer.c src/data/bpe.c src/data/bpe_read.c src/base/base.c src/base/fileio.c \
//     -lcjson -lpcre2-8 -lutf8proc -lm -o build/fuzz/fuzz_tokenizer
//   build/fuzz/fuzz_tokenizer tests/fuzz/corpus/fuzz_tokenizer
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "data/tokenizer.h"

static const char TEXT[] =
    "Hello world! It's 12345 + 678 = 13023.\n\n  Grüße, e\xcc\x81t\xc3\xa9 \xe4\xbd\xa0\xe5\xa5\xbd \xf0\x9f\x98\x80"
    "<|endoftext|>\t\r\n ab ab<|e|>c \xc2\x85 \xff\xfe invalid utf-8 \xe2\x82";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    Tokenizer t;
    if (tokenizer_parse_json(&t, (const char *)data, size, "fuzz/tokenizer.json") != MOE_OK) {
        if (!moe_errmsg()[0] || strchr(moe_errmsg(), '\n')) abort();   // refusals are one line
        return 0;
    }
    TokIds ids = {0};
    if (tokenizer_encode(&t, TEXT, sizeof TEXT - 1, &ids) == MOE_OK) {
        for (long i = 0; i < ids.n; i++)
            if (ids.id[i] < 0 || ids.id[i] >= t.n_vocab) abort();
        char *out;
        size_t len;
        tokenizer_decode(&t, ids.id, ids.n, &out, &len);
        moe_free(out);
        TokIds p = {0};
        tokenizer_prompt(&t, "What is 2 + 2?", 14, &p);
        tokenizer_answer(&t, "4", 1, &p);
        tokids_free(&p);
    }
    tokids_free(&ids);
    tokenizer_free(&t);
    return 0;
}
