// libFuzzer: moe serve's request handling (src/serve/api.c). The first byte picks the route
// and the limits, the rest is the request body (and, once, the URL). A body is either refused
// with a 400 or 413 and one line, or gives a job whose texts are each 1..max_text bytes with no
// NUL, at most max_items of them, max_new in 1..64; the answers' JSON (the job's own texts as
// answers: any bytes) must parse back with the same number of answers.
#include <cjson/cJSON.h>
#include <stdint.h>
#include "../../src/serve/api.h"
#include "../../src/infer/infer.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const int kind = data[0] & 1 ? API_COMPLETIONS : API_SOLVE;
    ApiLimits lim = {.max_body = data[0] & 2 ? 64 : 1 << 20, .max_items = data[0] & 4 ? 2 : 256, .max_text = data[0] & 8 ? 8 : 4096};
    const char *body = (const char *)data + 1;
    size_t len = size - 1;
    // the URL router, on the body as a path
    char *url = malloc(len + 1);
    memcpy(url, body, len);
    url[len] = 0;
    int status = 0;
    int route = api_route(data[0] & 16 ? "POST" : "GET", url, &status);
    if (!route && status != 404 && status != 405) abort();
    if (!route) fuzz_check_message("");
    free(url);

    ApiJob job;
    status = 0;
    if (api_parse(kind, body, len, &lim, &job, &status) != MOE_OK) {
        if (status != 400 && status != 413) { fprintf(stderr, "fuzz: refused with status %d\n", status); abort(); }
        fuzz_check_message("");
        char *e = api_error_json(status, moe_errmsg());
        cJSON *back = cJSON_Parse(e);
        if (!back) { fprintf(stderr, "fuzz: error JSON does not parse: %s\n", e); abort(); }
        cJSON_Delete(back);
        free(e);
        if (job.n || job.text) abort();
        return 0;
    }
    if (job.n < 1 || job.n > lim.max_items || job.max_new < 1 || job.max_new > GEN_MAX_NEW || job.raw != (kind == API_COMPLETIONS)) abort();
    ApiResult *r = calloc((size_t)job.n, sizeof *r);
    for (int i = 0; i < job.n; i++) {
        if (job.len[i] < 1 || job.len[i] > lim.max_text || strlen(job.text[i]) != (size_t)job.len[i]) abort();
        r[i] = (ApiResult){job.text[i], 1.5, job.len[i], i, i & 1 ? "length" : "stop"};
    }
    char *js = kind == API_SOLVE ? api_solve_json(r, job.n) : api_completions_json(r, job.n, job.text[0], 7, 1);
    cJSON *back = cJSON_Parse(js);
    const cJSON *arr = back ? cJSON_GetObjectItem(back, kind == API_SOLVE ? "answers" : "choices") : NULL;
    if (!arr || cJSON_GetArraySize(arr) != job.n) { fprintf(stderr, "fuzz: response JSON wrong: %s\n", js); abort(); }
    cJSON_Delete(back);
    free(js);
    free(r);
    api_job_free(&job);
    return 0;
}
