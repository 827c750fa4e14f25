// Expert load for moe simulate --load LOG.jsonl: how much the busiest device of an
// expert-parallel group takes over the mean, from the expert_load lists a training run logs
// (one list of per-expert token counts per MoE layer and step).
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include "../base/base.h"
#include "sim.h"

// one step's lists: the mean over its layers of max-device / mean-device load
static int step_skew(const cJSON *load, const char *path, int line, int ep, double *sum, int *count) {
    if (ep < 1 || ep > 4096) MOE_ERR("--load: ep=%d must be 1 to 4096", ep);
    if (!cJSON_IsArray(load)) MOE_ERR("%s:%d: \"expert_load\" must be a list of lists", path, line);
    for (const cJSON *layer = load->child; layer; layer = layer->next) {
        const int E = cJSON_GetArraySize(layer);
        if (!cJSON_IsArray(layer) || E < 1) MOE_ERR("%s:%d: \"expert_load\" must be a list of non-empty lists", path, line);
        if (E % ep) MOE_ERR("%s:%d: %d experts a layer cannot be spread over ep=%d devices", path, line, E, ep);
        double dev[4096] = {0}, tot = 0, mx = 0;
    
        int e = 0;
        for (const cJSON *x = layer->child; x; x = x->next, e++) {
            if (!cJSON_IsNumber(x) || !(x->valuedouble >= 0) || x->valuedouble > 1e15)
                MOE_ERR("%s:%d: \"expert_load\" holds a count that is not a non-negative number", path, line);
            dev[e / (E / ep)] += x->valuedouble;
            tot += x->valuedouble;
        }
        if (tot <= 0) continue;
        for (int d = 0; d < ep; d++) mx = dev[d] > mx ? dev[d] : mx;
        *sum += mx / (tot / ep);
        (*count)++;
    }
    return MOE_OK;
}

int sim_skew_from_log(const char *path, int ep, int last, double *skew) {
    size_t len;
    char *text = file_read_all(path, &len);
    if (!text) return MOE_FAIL;
    const int rc = sim_skew_parse(text, len, path, ep, last, skew);
    free(text);   // (malloc'd)
    return rc;
}

int sim_skew_parse(char *text, size_t len, const char *path, int ep, int last, double *skew) {
    // the line starts of the steps that log expert_load, the last `last` of them
    int cap = 1024, n = 0, rc = MOE_OK, lineno = 0;
    char **lines = MOE_NEW(char *, cap);
    int *nos = MOE_NEW(int, cap);
    for (char *p = text; p < text + len;) {
        char *nl = memchr(p, '\n', text + len - p);
        if (nl) *nl = 0;
        lineno++;
        if (strstr(p, "\"expert_load\"")) {
            if (n == cap) {
                cap *= 2;
                lines = moe_realloc(lines, cap * sizeof *lines);
                nos = moe_realloc(nos, cap * sizeof *nos);
            }
            lines[n] = p;
            nos[n++] = lineno;
        }
        p = nl ? nl + 1 : text + len;
    }
    double sum = 0;
    int count = 0;
    if (n == 0) { rc = MOE_FAIL; moe_seterr("%s: no line logs \"expert_load\" (a run of a model with MoE layers writes it)", path); }
    for (int i = n > last ? n - last : 0; i < n && rc == MOE_OK; i++) {
        cJSON *o = cJSON_Parse(lines[i]);
        if (!cJSON_IsObject(o)) { rc = MOE_FAIL; moe_seterr("%s:%d: not a JSON object", path, nos[i]); }
        else rc = step_skew(cJSON_GetObjectItemCaseSensitive(o, "expert_load"), path, nos[i], ep, &sum, &count);
        cJSON_Delete(o);
    }
    if (rc == MOE_OK && count == 0) { rc = MOE_FAIL; moe_seterr("%s: the expert_load lists are all empty", path); }
    if (rc == MOE_OK) *skew = sum / count;
    moe_free(lines);
    moe_free(nos);
    return rc;
}
