// moe serve's HTTP API as plain functions: a request's route and body in, the work it asks
// for (or an error with its status) out, and the JSON of each answer. No sockets here, so
// that the whole of it can be fuzzed (tests/fuzz/fuzz_serve_api.c).
#pragma once
#include <stdbool.h>
#include <stddef.h>

enum { API_GET_PAGE = 1, API_GET_HEALTH, API_GET_METRICS, API_SOLVE, API_COMPLETIONS };

// The route of method + url (the path; a query string is ignored): an API_* value, or 0 with
// *status 404 (unknown path) or 405 (known path, other method)
int api_route(const char *method, const char *url, int *status);

typedef struct {
    int max_body;          // bytes (larger: 413)
    int max_items;         // questions or prompts in one request (more: 413)
    int max_text;          // bytes of one question or prompt (more: 400)
} ApiLimits;

// One request's work: n texts, each decoded up to max_new tokens; raw: completions' prompts
// as they are, else questions
typedef struct {
    int kind;              // API_SOLVE or API_COMPLETIONS
    int n;
    char **text;           // [n] NUL-terminated (no NULs inside)
    int *len;
    int max_new;
    bool raw;
} ApiJob;

// The body of a POST to route `kind`: MOE_OK with the job, or MOE_FAIL with *status (400,
// 413) and the message set (moe_errmsg)
int api_parse(int kind, const char *body, size_t len, const ApiLimits *lim, ApiJob *job, int *status);
void api_job_free(ApiJob *job);

// One text's result
typedef struct { const char *text; double ms; int n_prompt, n_tokens; const char *finish; } ApiResult;

// The response bodies (malloc'd, NUL-terminated; the caller frees them). Texts that are not
// valid UTF-8 have each bad byte replaced by U+FFFD.
char *api_solve_json(const ApiResult *r, int n);
char *api_completions_json(const ApiResult *r, int n, const char *model, long id, long created);
char *api_error_json(int status, const char *message);
char *api_health_json(bool stopping, const char *model, const char *model_type, int slots, int live, int pending);
