// Tokenizers: moe.c's byte-level BPE against Hugging Face `tokenizers` (the reference ids of
// tests/tok/expected.jsonl, written by tests/tok/make_fixtures.py), the byte tokenizer's
// SPEC §2 layout, and malformed tokenizer.json files refused with one line.
// usage: build/test_tok [--bench FILE]   (--bench: encode FILE with each tokenizer, print MB/s)
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "data/data.h"
#include "data/tokenizer.h"

static int n_pass, n_fail;
static void check(int ok, const char *what, const char *detail) {
    if (ok) { n_pass++; printf("PASS tok: %s\n", what); }
    else { n_fail++; printf("FAIL tok: %s%s%s\n", what, detail ? ": " : "", detail ? detail : ""); }
}

static const char *NAMES[] = {"qwen3", "deepseek3", "gpt2"};
enum { N_TOK = 3 };

static void reference(Tokenizer *tk) {
    size_t len;
    char *all = file_read_all("tests/tok/expected.jsonl", &len);
    if (!all) { check(0, "tests/tok/expected.jsonl", moe_errmsg()); return; }
    int lines = 0, mism[N_TOK] = {0}, dmism[N_TOK] = {0};
    long tokens[N_TOK] = {0};
    char first[N_TOK][400] = {{0}};
    for (char *p = all, *nl; p < all + len; p = nl + 1) {
        nl = memchr(p, '\n', (size_t)(all + len - p));
        if (!nl) nl = all + len;
        *nl = 0;
        cJSON *o = cJSON_Parse(p);
        const cJSON *text = cJSON_GetObjectItem(o, "text");
        if (!cJSON_IsString(text)) { cJSON_Delete(o); continue; }
        lines++;
        const char *s = text->valuestring;
        for (int k = 0; k < N_TOK; k++) {
            const cJSON *ref = cJSON_GetObjectItem(o, NAMES[k]), *e;
            TokIds ids = {0};
            int rc = tokenizer_encode(&tk[k], s, strlen(s), &ids);
            int n = cJSON_GetArraySize(ref), i = 0, same = rc == MOE_OK && ids.n == n;
            cJSON_ArrayForEach(e, ref) { if (same && ids.id[i] != e->valueint) same = 0; i++; }
            tokens[k] += n;
            if (!same) {
                if (!mism[k]++) {
                    int w = snprintf(first[k], sizeof first[k], "\"%.60s\": got", s);
                    for (long j = 0; j < ids.n && j < 20 && w < 300; j++) w += snprintf(first[k] + w, sizeof first[k] - w, " %d", ids.id[j]);
                    w += snprintf(first[k] + w, sizeof first[k] - w, ", expected");
                    i = 0;
                    cJSON_ArrayForEach(e, ref) if (i++ < 20 && w < 390) w += snprintf(first[k] + w, sizeof first[k] - w, " %d", e->valueint);
                }
            }
            // decoding the reference ids gives what tokenizers' decode gives (the text, NFC'd)
            char key[32];
            snprintf(key, sizeof key, "%s.decoded", NAMES[k]);
            const cJSON *dec = cJSON_GetObjectItem(o, key);
            const char *want = cJSON_IsString(dec) ? dec->valuestring : s;
            int *rid = MOE_NEW(int, n + 1);
            i = 0;
            cJSON_ArrayForEach(e, ref) rid[i++] = e->valueint;
            char *out;
            size_t ol;
            tokenizer_decode(&tk[k], rid, n, &out, &ol);
            if (ol != strlen(want) || memcmp(out, want, ol)) dmism[k]++;
            moe_free(out); moe_free(rid);
            tokids_free(&ids);
        }
        cJSON_Delete(o);
    }
    free(all);
    for (int k = 0; k < N_TOK; k++) {
        char what[160];
        snprintf(what, sizeof what, "%s: encode equals Hugging Face tokenizers on %d texts (%ld tokens), %d mismatches",
                 NAMES[k], lines, tokens[k], mism[k]);
        check(lines > 250 && mism[k] == 0, what, mism[k] ? first[k] : NULL);
        snprintf(what, sizeof what, "%s: decode of the reference ids gives tokenizers' text on %d texts, %d mismatches", NAMES[k], lines, dmism[k]);
        check(dmism[k] == 0, what, NULL);
    }
}

static void specials(Tokenizer *tk) {
    char d[200];
    snprintf(d, sizeof d, "bos %d eos %d", tk[0].bos, tk[0].eos);
    check(tk[0].bos == -1 && tk[0].eos == tokenizer_token_id(&tk[0], "<|im_end|>") && tk[0].eos >= 0,
          "qwen3: no bos, eos <|im_end|> from tokenizer_config.json", d);
    snprintf(d, sizeof d, "bos %d eos %d", tk[1].bos, tk[1].eos);
    check(tk[1].bos == tokenizer_token_id(&tk[1], "<\xef\xbd\x9c" "begin\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>") && tk[1].bos >= 0 &&
          tk[1].eos == tokenizer_token_id(&tk[1], "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>") && tk[1].eos >= 0,
          "deepseek3: bos from TemplateProcessing, eos <｜end▁of▁sentence｜> by name", d);
    snprintf(d, sizeof d, "bos %d eos %d", tk[2].bos, tk[2].eos);
    check(tk[2].bos == -1 && tk[2].eos == tokenizer_token_id(&tk[2], "<|endoftext|>"), "gpt2: eos <|endoftext|>", d);
    // a question/answer example under BPE: [bos] "q\n" | a eos
    TokIds p = {0}, a = {0}, q = {0};
    tokenizer_prompt(&tk[1], "What is 2 + 2?", 14, &p);
    tokenizer_encode(&tk[1], "What is 2 + 2?\n", 15, &q);
    tokenizer_answer(&tk[1], "4", 1, &a);
    int ok = p.n == q.n + 1 && p.id[0] == tk[1].bos && !memcmp(p.id + 1, q.id, sizeof(int) * q.n) && a.n == 2 && a.id[1] == tk[1].eos;
    check(ok, "deepseek3: prompt is bos + \"q\\n\", answer ends with eos", NULL);
    tokids_free(&p); tokids_free(&a); tokids_free(&q);
}

static void byte_tokenizer(void) {
    Tokenizer t;
    tokenizer_byte(&t);
    TokIds p = {0}, a = {0};
    tokenizer_prompt(&t, "1+1\xc3\xa9", 5, &p);
    tokenizer_answer(&t, "2", 1, &a);
    int want_p[] = {TOK_BOS, '1', '+', '1', 0xc3, 0xa9, TOK_SEP}, want_a[] = {'2', TOK_EOS};
    check(p.n == 7 && !memcmp(p.id, want_p, sizeof want_p) && a.n == 2 && !memcmp(a.id, want_a, sizeof want_a),
          "byte: <bos> q-bytes <sep> | a-bytes <eos> (SPEC §2)", NULL);
    int ids[] = {'o', 'k', TOK_EOS, 0, 300};
    char *out;
    size_t ol;
    tokenizer_decode(&t, ids, 5, &out, &ol);
    check(ol == 5 && !memcmp(out, "ok?\0?", 5), "byte: decode maps specials to '?'", NULL);
    moe_free(out);
    char *buf = NULL;
    size_t bl = 0, bc = 0, n0 = tokenizer_decode_append(&t, 0, &buf, &bl, &bc), n1 = tokenizer_decode_append(&t, 'x', &buf, &bl, &bc);
    check(n0 == 0 && n1 == 1 && !strcmp(buf, "x"), "byte: answers as C strings drop NUL bytes", NULL);
    moe_free(buf);
    tokids_free(&p); tokids_free(&a);
    Tokenizer d;
    int rc = tokenizer_for_dir(&d, "tests/tok", 260);   // no tokenizer.json there
    check(rc == MOE_OK && d.kind == TOKENIZER_BYTE, "a directory without tokenizer.json gives the byte tokenizer", NULL);
    rc = tokenizer_for_dir(&d, "tests/tok/qwen3", 260);
    check(rc != MOE_OK && strstr(moe_errmsg(), "vocab_size 260"), "a tokenizer larger than the model's vocab_size is refused", moe_errmsg());
}

// a valid small tokenizer.json with one part replaced
static const char *GOOD =
    "{\"version\":\"1.0\",\"truncation\":null,\"padding\":null,"
    "\"added_tokens\":[{\"id\":6,\"content\":\"<|e|>\",\"special\":true}],"
    "\"normalizer\":%s,"
    "\"pre_tokenizer\":%s,"
    "\"post_processor\":null,\"decoder\":{\"type\":\"ByteLevel\"},"
    "\"model\":{%s\"vocab\":%s,\"merges\":%s}}";
static const char *N0 = "null", *P0 = "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":true}", *M0 = "\"type\":\"BPE\",",
                  *V0 = "{\"a\":0,\"b\":1,\"ab\":2,\"\xc4\xa0\":3,\"\xc4\xa0" "ab\":4,\"c\":5}", *G0 = "[\"a b\",[\"\xc4\xa0\",\"ab\"]]";

static int try_json(const char *norm, const char *pre, const char *model, const char *vocab, const char *merges, Tokenizer *t) {
    char js[4096];
    snprintf(js, sizeof js, GOOD, norm, pre, model, vocab, merges);
    return tokenizer_parse_json(t, js, strlen(js), "bad/tokenizer.json");
}

static void malformed(void) {
    Tokenizer t;
    int rc = try_json(N0, P0, M0, V0, G0, &t);
    check(rc == MOE_OK, "the small tokenizer.json loads", rc ? moe_errmsg() : NULL);
    if (rc == MOE_OK) {
        TokIds v = {0};
        tokenizer_encode(&t, "ab ab<|e|>c", 11, &v);
        int want[] = {2, 4, 6, 5};
        check(v.n == 4 && !memcmp(v.id, want, sizeof want), "small: \"ab ab<|e|>c\" -> ab, \xc4\xa0" "ab, <|e|>, c", NULL);
        tokids_free(&v);
        tokenizer_free(&t);
    }
    struct { const char *what, *n, *p, *m, *v, *g, *expect; } cases[] = {
        {"merges naming an unknown token", N0, P0, M0, V0, "[\"a x\"]", "not in the vocabulary"},
        {"a merge whose result is not a token", N0, P0, M0, V0, "[\"b a\"]", "merged token"},
        {"a merge of three parts", N0, P0, M0, V0, "[\"a b c\"]", "one space"},
        {"a merge of the wrong type", N0, P0, M0, V0, "[3]", "expected"},
        {"a negative id", N0, P0, M0, "{\"a\":-1}", "[]", "integer in"},
        {"an id out of range", N0, P0, M0, "{\"a\":99999999999}", "[]", "integer in"},
        {"a fractional id", N0, P0, M0, "{\"a\":1.5}", "[]", "integer in"},
        {"duplicate ids", N0, P0, M0, "{\"a\":0,\"b\":0}", "[]", "two tokens"},
        {"a duplicate token", N0, P0, M0, "{\"a\":0,\"a\":1}", "[]", "twice"},
        {"vocab of the wrong type", N0, P0, M0, "[1,2]", "[]", "model.vocab"},
        {"an empty vocab", N0, P0, M0, "{}", "[]", "empty"},
        {"a Metaspace pre-tokenizer", N0, "{\"type\":\"Metaspace\",\"replacement\":\"_\"}", M0, V0, G0, "Metaspace"},
        {"no ByteLevel pre-tokenizer", N0, "null", M0, V0, G0, "ByteLevel"},
        {"a Lowercase normalizer", "{\"type\":\"Lowercase\"}", P0, M0, V0, G0, "Lowercase"},
        {"byte_fallback", N0, P0, "\"type\":\"BPE\",\"byte_fallback\":true,", V0, G0, "byte_fallback"},
        {"a regex that does not compile", N0, "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(\"},\"behavior\":\"Isolated\"},{\"type\":\"ByteLevel\",\"use_regex\":false}]}", M0, V0, G0, "does not compile"},
        {"an unknown Split behavior", N0, "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":\"a\"},\"behavior\":\"Sideways\"},{\"type\":\"ByteLevel\"}]}", M0, V0, G0, "Sideways"},
        {"an added token's id other than tokenizers gives", N0, P0, M0, "{\"a\":0,\"b\":1,\"ab\":2,\"c\":3,\"d\":4,\"e\":5,\"f\":6}", "[]", "where tokenizers gives"},
        {"a WordPiece model", N0, P0, "\"type\":\"WordPiece\",", V0, G0, "WordPiece"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *ex = cases[i].expect;
        rc = try_json(cases[i].n, cases[i].p, cases[i].m, cases[i].v, cases[i].g, &t);
        char what[160];
        snprintf(what, sizeof what, "refused: %s", cases[i].what);
        const char *msg = moe_errmsg();
        check(rc != MOE_OK && strstr(msg, "bad/tokenizer.json") && strstr(msg, ex) && !strchr(msg, '\n'), what, rc ? msg : "loaded");
        if (rc == MOE_OK) tokenizer_free(&t);
    }
    const char *junk[] = {"", "{", "[]", "{\"model\":3}", "{\"model\":{\"vocab\":{\"a\":0}},\"truncation\":{}}", "null"};
    for (int i = 0; i < 6; i++) {
        rc = tokenizer_parse_json(&t, junk[i], strlen(junk[i]), "bad/tokenizer.json");
        char what[80];
        snprintf(what, sizeof what, "refused: malformed file #%d (%s)", i, i ? junk[i] : "empty");
        check(rc != MOE_OK && strstr(moe_errmsg(), "bad/tokenizer.json"), what, rc ? moe_errmsg() : "loaded");
        if (rc == MOE_OK) tokenizer_free(&t);
    }
}

static void bench(Tokenizer *tk, const char *path) {
    size_t len;
    char *s = file_read_all(path, &len);
    if (!s) { fprintf(stderr, "%s\n", moe_errmsg()); return; }
    for (int k = 0; k < N_TOK; k++) {
        TokIds v = {0};
        double t0 = time_now();
        tokenizer_encode(&tk[k], s, len, &v);
        double dt = time_now() - t0;
        printf("%-10s %zu bytes -> %ld tokens in %.3f s: %.1f MB/s\n", NAMES[k], len, v.n, dt, len / dt / 1e6);
        tokids_free(&v);
    }
    free(s);
}

int main(int argc, char **argv) {
    Tokenizer tk[N_TOK];
    for (int k = 0; k < N_TOK; k++) {
        char dir[64];
        snprintf(dir, sizeof dir, "tests/tok/%s", NAMES[k]);
        int rc = tokenizer_for_dir(&tk[k], dir, 1 << 20);
        check(rc == MOE_OK && tk[k].kind == TOKENIZER_BPE, dir, rc ? moe_errmsg() : NULL);
        if (rc) return 1;
    }
    if (argc == 3 && !strcmp(argv[1], "--bench")) { bench(tk, argv[2]); return 0; }
    reference(tk);
    specials(tk);
    byte_tokenizer();
    malformed();
    for (int k = 0; k < N_TOK; k++) tokenizer_free(&tk[k]);
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail > 0;
}
