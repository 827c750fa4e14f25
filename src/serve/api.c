// moe serve's requests and responses (api.h), on cJSON.
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>
#include "../base/base.h"
#include "../infer/infer.h"
#include "api.h"

int api_route(const char *method, const char *url, int *status) {
    static const struct { const char *path, *method; int kind; } R[] = {
        {"/", "GET", API_GET_PAGE}, {"/index.html", "GET", API_GET_PAGE}, {"/health", "GET", API_GET_HEALTH},
        {"/metrics", "GET", API_GET_METRICS}, {"/v1/solve", "POST", API_SOLVE}, {"/v1/completions", "POST", API_COMPLETIONS},
    };
    size_t n = strcspn(url, "?#");
    bool known = false;
    for (size_t i = 0; i < sizeof R / sizeof R[0]; i++) {
        if (strlen(R[i].path) != n || strncmp(R[i].path, url, n)) continue;
        known = true;
        if (!strcmp(method, R[i].method) || (!strcmp(method, "HEAD") && !strcmp(R[i].method, "GET"))) return R[i].kind;
    }
    *status = known ? 405 : 404;
    char path[256];
    const size_t k = n < sizeof path - 1 ? n : sizeof path - 1;
    memcpy(path, url, k);
    path[k] = 0;
    char shown[256];
    moe_printable(shown, sizeof shown, path);
    if (known) moe_seterr("%s is not allowed on %s", method, shown);
    else moe_seterr("no such path: %s", shown);
    return 0;
}

void api_job_free(ApiJob *job) {
    for (int i = 0; i < job->n; i++) free(job->text[i]);
    free(job->text);
    free(job->len);
    memset(job, 0, sizeof *job);
}

// texts: a string or (when `list`) an array of strings, each 1..max_text bytes
static int take_texts(const cJSON *v, const char *key, bool one_ok, const ApiLimits *lim, ApiJob *job, int *status) {
    *status = 400;
    const bool one = cJSON_IsString(v);
    if (!(one && one_ok) && !cJSON_IsArray(v))
        MOE_ERR("\"%s\" must be %s", key, one_ok ? "a string or an array of strings" : "an array of strings");
    int n = one ? 1 : cJSON_GetArraySize(v);
    if (n < 1) MOE_ERR("\"%s\" is empty", key);
    if (n > lim->max_items) { *status = 413; MOE_ERR("\"%s\" has %d items (at most %d a request)", key, n, lim->max_items); }
    job->text = calloc((size_t)n, sizeof(char *));
    job->len = calloc((size_t)n, sizeof(int));
    if (!job->text || !job->len) { free(job->text); free(job->len); job->text = NULL; job->len = NULL; MOE_ERR("out of memory"); }
    int i = 0;
    for (const cJSON *it = one ? v : v->child; it && i < n; it = one ? NULL : it->next, i++) {
        if (!cJSON_IsString(it) || !it->valuestring) MOE_ERR("\"%s\"[%d] is not a string", key, i);
        size_t l = strlen(it->valuestring);
        if (l == 0) MOE_ERR("\"%s\"[%d] is an empty string", key, i);
        if (l > (size_t)lim->max_text) MOE_ERR("\"%s\"[%d] has %zu bytes (at most %d)", key, i, l, lim->max_text);
        job->text[i] = strdup(it->valuestring);
        if (!job->text[i]) MOE_ERR("out of memory");
        job->len[i] = (int)l;
        job->n = i + 1;
    }
    return MOE_OK;
}

static int parse_solve(const cJSON *root, const ApiLimits *lim, ApiJob *job, int *status) {
    const cJSON *qs = NULL;
    for (const cJSON *it = root->child; it; it = it->next) {
        if (!strcmp(it->string, "questions")) qs = it;
        else {
            char k[72];
            *status = 400;
            MOE_ERR("unknown key \"%s\" (the body is {\"questions\": [...]})", moe_printable(k, sizeof k, it->string));
        }
    }
    if (!qs) { *status = 400; MOE_ERR("missing \"questions\" (the body is {\"questions\": [...]})"); }
    job->max_new = GEN_MAX_NEW;
    return take_texts(qs, "questions", false, lim, job, status);
}

// OpenAI's completions shape; decoding is greedy, so what would sample is refused
static int parse_completions(const cJSON *root, const ApiLimits *lim, ApiJob *job, int *status) {
    *status = 400;
    const cJSON *prompt = NULL;
    job->max_new = 16;   // OpenAI's default
    job->raw = true;
    for (const cJSON *it = root->child; it; it = it->next) {
        const char *k = it->string;
        if (!strcmp(k, "prompt")) prompt = it;
        else if (!strcmp(k, "max_tokens")) {
            const double v = cJSON_IsNumber(it) ? it->valuedouble : 0;
            if (!(v >= 1 && v <= GEN_MAX_NEW) || v != (double)(int)v)
                MOE_ERR("\"max_tokens\" must be an integer from 1 to %d", GEN_MAX_NEW);
            job->max_new = (int)it->valuedouble;
        } else if (!strcmp(k, "temperature")) {
            if (!cJSON_IsNumber(it) || it->valuedouble != 0) MOE_ERR("\"temperature\" must be 0: decoding is greedy");
        } else if (!strcmp(k, "n")) {
            if (!cJSON_IsNumber(it) || it->valuedouble != 1) MOE_ERR("\"n\" must be 1");
        } else if (!strcmp(k, "stream")) {
            if (!cJSON_IsFalse(it)) MOE_ERR("\"stream\" must be false: streaming is not supported");
        } else if (!strcmp(k, "model") || !strcmp(k, "user")) {
            if (!cJSON_IsString(it)) MOE_ERR("\"%s\" must be a string", k);
        } else {
            char shown[72];
            MOE_ERR("unknown key \"%s\" (known: prompt, max_tokens, temperature, n, stream, model, user)", moe_printable(shown, sizeof shown, k));
        }
    }
    if (!prompt) MOE_ERR("missing \"prompt\"");
    return take_texts(prompt, "prompt", true, lim, job, status);
}

int api_parse(int kind, const char *body, size_t len, const ApiLimits *lim, ApiJob *job, int *status) {
    memset(job, 0, sizeof *job);
    job->kind = kind;
    if (len > (size_t)lim->max_body) { *status = 413; MOE_ERR("body of %zu bytes (at most %d)", len, lim->max_body); }
    *status = 400;
    if (len == 0) MOE_ERR("empty body: expected a JSON object");
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(body, len, &end, false);
    if (!root) {
        const char *at = cJSON_GetErrorPtr();
        size_t off = at && at >= body && at <= body + len ? (size_t)(at - body) : 0;
        MOE_ERR("malformed JSON at byte %zu", off);
    }
    while (end && end < body + len && (*end == ' ' || *end == '\n' || *end == '\r' || *end == '\t')) end++;
    int rc = MOE_OK;
    if (end && end < body + len) { rc = MOE_FAIL; moe_seterr("malformed JSON: text after the value at byte %zu", (size_t)(end - body)); }
    else if (!cJSON_IsObject(root)) { rc = MOE_FAIL; moe_seterr("the body must be a JSON object"); }
    else if (kind == API_SOLVE) rc = parse_solve(root, lim, job, status);
    else if (kind == API_COMPLETIONS) rc = parse_completions(root, lim, job, status);
    else { rc = MOE_FAIL; moe_seterr("this path takes no body"); }
    cJSON_Delete(root);
    if (rc != MOE_OK) { api_job_free(job); job->kind = kind; }
    return rc;
}

// s with each byte that does not start a valid UTF-8 character replaced by U+FFFD
static char *utf8_clean(const char *s) {
    size_t n = strlen(s), o = 0;
    char *out = malloc(3 * n + 1);
    if (!out) return NULL;
    for (size_t i = 0; i < n;) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(n - i), &cp);
        if (k > 0) { memcpy(out + o, s + i, (size_t)k); o += (size_t)k; i += (size_t)k; }
        else { memcpy(out + o, "\xEF\xBF\xBD", 3); o += 3; i++; }
    }
    out[o] = 0;
    return out;
}

static void add_text(cJSON *obj, const char *key, const char *text) {
    char *c = utf8_clean(text ? text : "");
    cJSON_AddStringToObject(obj, key, c ? c : "");
    free(c);
}

static char *print_del(cJSON *root) {
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return s;
}

char *api_solve_json(const ApiResult *r, int n) {
    cJSON *root = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(root, "answers");
    for (int i = 0; i < n; i++) {
        cJSON *o = cJSON_CreateObject();
        add_text(o, "answer", r[i].text);
        cJSON_AddNumberToObject(o, "ms", (double)(long)(r[i].ms * 1000 + 0.5) / 1000);
        cJSON_AddItemToArray(arr, o);
    }
    return print_del(root);
}

char *api_completions_json(const ApiResult *r, int n, const char *model, long id, long created) {
    cJSON *root = cJSON_CreateObject();
    char ids[32];
    snprintf(ids, sizeof ids, "cmpl-%ld", id);
    cJSON_AddStringToObject(root, "id", ids);
    cJSON_AddStringToObject(root, "object", "text_completion");
    cJSON_AddNumberToObject(root, "created", (double)created);
    add_text(root, "model", model);
    cJSON *arr = cJSON_AddArrayToObject(root, "choices");
    long pt = 0, ct = 0;
    for (int i = 0; i < n; i++) {
        cJSON *o = cJSON_CreateObject();
        add_text(o, "text", r[i].text);
        cJSON_AddNumberToObject(o, "index", i);
        cJSON_AddNullToObject(o, "logprobs");
        cJSON_AddStringToObject(o, "finish_reason", r[i].finish ? r[i].finish : "stop");
        cJSON_AddItemToArray(arr, o);
        pt += r[i].n_prompt; ct += r[i].n_tokens;
    }
    cJSON *u = cJSON_AddObjectToObject(root, "usage");
    cJSON_AddNumberToObject(u, "prompt_tokens", (double)pt);
    cJSON_AddNumberToObject(u, "completion_tokens", (double)ct);
    cJSON_AddNumberToObject(u, "total_tokens", (double)(pt + ct));
    return print_del(root);
}

char *api_error_json(int status, const char *message) {
    cJSON *root = cJSON_CreateObject(), *e = cJSON_AddObjectToObject(root, "error");
    cJSON_AddNumberToObject(e, "code", status);
    add_text(e, "message", message);
    return print_del(root);
}

char *api_health_json(bool stopping, const char *model, const char *model_type, int slots, int live, int pending) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "status", stopping ? "stopping" : "ok");
    add_text(root, "model", model);
    add_text(root, "model_type", model_type);
    cJSON_AddNumberToObject(root, "slots", slots);
    cJSON_AddNumberToObject(root, "live", live);
    cJSON_AddNumberToObject(root, "pending", pending);
    return print_del(root);
}
