// A cluster file (clusters/*.json): a device's peak and memory, the links in and between
// nodes, and the efficiencies that turn peaks into times (sim.h). Each number of a published
// system's file carries its source under "sources"; keys that only document are skipped.
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "../base/base.h"
#include "sim.h"

static const char *const DOC_KEYS[] = {"description", "sources", "conventions", "unverified", "calibrated_on", "notes", NULL};

typedef struct { const char *key; double *dst; double scale; bool required; bool may_be_zero; } NumKey;

static bool is_doc(const char *k) {
    for (int i = 0; DOC_KEYS[i]; i++)
        if (!strcmp(DOC_KEYS[i], k)) return true;
    return false;
}

// the numbers of one object (prefix names it in messages); unknown keys are errors
static int read_nums(const cJSON *obj, const char *path, const char *prefix, const NumKey *keys, int nkeys) {
    char pk[96];
    if (!cJSON_IsObject(obj)) MOE_ERR("%s: \"%s\" must be an object", path, prefix);
    for (const cJSON *it = obj->child; it; it = it->next) {
        if (is_doc(it->string)) continue;
        int k = 0;
        while (k < nkeys && strcmp(keys[k].key, it->string)) k++;
        if (k == nkeys) MOE_ERR("%s: unknown key \"%s%s%s\"", path, prefix, *prefix ? "." : "", moe_printable(pk, sizeof pk, it->string));
        if (cJSON_IsNull(it)) continue;   // (a figure nobody published)
        const double v = it->valuedouble;
        if (!cJSON_IsNumber(it) || !isfinite(v) || v < 0 || (v == 0 && !keys[k].may_be_zero))
            MOE_ERR("%s: \"%s%s%s\" must be a %s number", path, prefix, *prefix ? "." : "", it->string,
                    keys[k].may_be_zero ? "non-negative" : "positive");
        *keys[k].dst = v * keys[k].scale;
    }
    for (int k = 0; k < nkeys; k++)
        if (keys[k].required && !(*keys[k].dst > 0 || (keys[k].may_be_zero && *keys[k].dst >= 0)))
            MOE_ERR("%s: \"%s%s%s\" is missing", path, prefix, *prefix ? "." : "", keys[k].key);
    return MOE_OK;
}

static int parse(Cluster *cl, const cJSON *root, const char *path) {
    char pk[96];
    double devices = 0, dpn = 0, peak_bf16 = 0, peak_fp16 = 0, peak_fp32 = 0, peak_fp8 = 0, peak_tf32 = 0, peak_mfu = 0;
    char gemm_dtype[8] = "";
    const cJSON *peak = NULL, *intra = NULL, *inter = NULL, *eff = NULL;
    bool has_dtype = false;
    for (const cJSON *it = root->child; it; it = it->next) {
        const char *k = it->string;
        if (is_doc(k)) continue;
        if (!strcmp(k, "name")) {
            if (!cJSON_IsString(it) || strlen(it->valuestring) >= sizeof cl->name) MOE_ERR("%s: \"name\" must be a string of under 64 bytes", path);
            strcpy(cl->name, it->valuestring);
        } else if (!strcmp(k, "dtype")) {
            if (!cJSON_IsString(it) || (strcmp(it->valuestring, "bf16") && strcmp(it->valuestring, "fp32")))
                MOE_ERR("%s: \"dtype\" must be \"bf16\" or \"fp32\"", path);
            strcpy(cl->dtype, it->valuestring);
            has_dtype = true;
        } else if (!strcmp(k, "gemm_dtype")) {
            if (!cJSON_IsString(it) || (strcmp(it->valuestring, "bf16") && strcmp(it->valuestring, "fp8") && strcmp(it->valuestring, "fp32")))
                MOE_ERR("%s: \"gemm_dtype\" must be \"bf16\", \"fp8\" or \"fp32\"", path);
            strcpy(gemm_dtype, it->valuestring);
        } else if (!strcmp(k, "peak_flops")) peak = it;
        else if (!strcmp(k, "intra_node")) intra = it;
        else if (!strcmp(k, "inter_node")) inter = it;
        else if (!strcmp(k, "efficiency")) eff = it;
        else if (!strcmp(k, "cores_per_device")) {
            if (!cJSON_IsNumber(it) || !(it->valuedouble > 0 && it->valuedouble <= 4096)) MOE_ERR("%s: \"cores_per_device\" must be a positive number", path);
            cl->cores = it->valuedouble;
        } else if (strcmp(k, "devices") && strcmp(k, "devices_per_node") && strcmp(k, "memory_gb") && strcmp(k, "memory_bw_gbs"))
            MOE_ERR("%s: unknown key \"%s\"", path, moe_printable(pk, sizeof pk, k));
    }
    const NumKey top[] = {{"devices", &devices, 1, true, false}, {"devices_per_node", &dpn, 1, true, false},
                          {"memory_gb", &cl->mem_bytes, 1e9, true, false}, {"memory_bw_gbs", &cl->mem_bw, 1e9, true, false}};
    // (the top level's other keys were checked above; read only these four here)
    for (int k = 0; k < 4; k++) {
        const cJSON *it = cJSON_GetObjectItemCaseSensitive(root, top[k].key);
        if (!it) MOE_ERR("%s: \"%s\" is missing", path, top[k].key);
        if (!cJSON_IsNumber(it) || !isfinite(it->valuedouble) || it->valuedouble <= 0) MOE_ERR("%s: \"%s\" must be a positive number", path, top[k].key);
        *top[k].dst = it->valuedouble * top[k].scale;
    }
    if (devices != floor(devices) || dpn != floor(dpn) || devices > 1e7 || dpn > devices)
        MOE_ERR("%s: \"devices\" and \"devices_per_node\" must be whole numbers, devices_per_node at most devices", path);
    cl->devices = (int)devices;
    cl->devices_per_node = (int)dpn;
    if (!has_dtype) MOE_ERR("%s: \"dtype\" is missing (\"bf16\" or \"fp32\": what training computes in)", path);
    if (!peak) MOE_ERR("%s: \"peak_flops\" is missing", path);
    const NumKey pk_keys[] = {{"bf16", &peak_bf16, 1, false, false}, {"fp16", &peak_fp16, 1, false, false},
                              {"fp32", &peak_fp32, 1, false, false}, {"fp8", &peak_fp8, 1, false, false},
                              {"tf32", &peak_tf32, 1, false, false}, {"mfu", &peak_mfu, 1, false, false}};
    MOE_TRY(read_nums(peak, path, "peak_flops", pk_keys, 6));
    cl->peak = !strcmp(cl->dtype, "bf16") ? peak_bf16 : peak_fp32;
    if (!(cl->peak > 0)) MOE_ERR("%s: \"peak_flops.%s\" is missing (the dtype training computes in)", path, cl->dtype);
    cl->mfu_peak = peak_mfu > 0 ? peak_mfu : cl->peak;
    cl->gemm_peak = cl->peak;
    if (gemm_dtype[0]) {
        cl->gemm_peak = !strcmp(gemm_dtype, "fp8") ? peak_fp8 : !strcmp(gemm_dtype, "bf16") ? peak_bf16 : peak_fp32;
        if (!(cl->gemm_peak > 0)) MOE_ERR("%s: \"peak_flops.%s\" is missing (gemm_dtype)", path, gemm_dtype);
    }
    if (!intra || !inter) MOE_ERR("%s: \"%s\" is missing", path, !intra ? "intra_node" : "inter_node");
    const NumKey in_keys[] = {{"bw_gbs", &cl->intra_bw, 1e9, true, false}, {"latency_us", &cl->intra_lat, 1e-6, true, true},
                              {"a2a_bw_gbs", &cl->intra_a2a_bw, 1e9, false, false}, {"a2a_latency_us", &cl->intra_a2a_lat, 1e-6, false, true}};
    const NumKey out_keys[] = {{"bw_gbs", &cl->inter_bw, 1e9, true, false}, {"latency_us", &cl->inter_lat, 1e-6, true, true},
                               {"a2a_bw_gbs", &cl->inter_a2a_bw, 1e9, false, false}, {"a2a_latency_us", &cl->inter_a2a_lat, 1e-6, false, true}};
    cl->intra_lat = cl->inter_lat = cl->intra_a2a_lat = cl->inter_a2a_lat = -1;
    MOE_TRY(read_nums(intra, path, "intra_node", in_keys, 4));
    MOE_TRY(read_nums(inter, path, "inter_node", out_keys, 4));
    // (the experts' all-to-all: its own measured rates when given, else the link's)
    if ((cl->intra_a2a_bw > 0) != (cl->intra_a2a_lat >= 0) || (cl->inter_a2a_bw > 0) != (cl->inter_a2a_lat >= 0))
        MOE_ERR("%s: \"a2a_bw_gbs\" and \"a2a_latency_us\" go together (the experts' all-to-all measured on that link)", path);
    if (!(cl->intra_a2a_bw > 0)) cl->intra_a2a_bw = cl->intra_bw, cl->intra_a2a_lat = cl->intra_lat;
    if (!(cl->inter_a2a_bw > 0)) cl->inter_a2a_bw = cl->inter_bw, cl->inter_a2a_lat = cl->inter_lat;
    if (!eff) MOE_ERR("%s: \"efficiency\" is missing", path);
    cl->op_us = cl->step_ms = cl->comm_share = -1;
    const NumKey eff_keys[] = {
        {"gemm_max", &cl->gemm_max, 1, true, false},     {"gemm_half", &cl->gemm_half, 1, true, true},
        {"attention", &cl->attn_eff, 1, true, false},    {"memory", &cl->mem_eff, 1, true, false},
        {"collective_max", &cl->coll_max, 1, true, false}, {"collective_half_mb", &cl->coll_half, 1e6, true, true},
        {"op_us", &cl->op_us, 1, true, true},            {"step_ms", &cl->step_ms, 1, true, true},
        {"comm_share", &cl->comm_share, 1, true, true},  {"sync", &cl->sync, 1, false, true},
        {"idle_kept", &cl->idle_kept, 1, false, true},   {"sync_ms", &cl->sync_s, 1e-3, false, false},
        {"sync_decay", &cl->sync_decay, 1, false, true}};
    cl->gemm_half = cl->coll_half = -1;
    MOE_TRY(read_nums(eff, path, "efficiency", eff_keys, 13));
    if (cl->sync_decay > 1) MOE_ERR("%s: \"efficiency.sync_decay\" is an exponent in [0, 1], got %g", path, cl->sync_decay);
    if (cl->sync_decay > 0 && !(cl->sync_s > 0)) MOE_ERR("%s: \"efficiency.sync_decay\" needs \"efficiency.sync_ms\" (the interval it falls from)", path);
    if (cl->gemm_max > 1 || cl->attn_eff > 1 || cl->mem_eff > 1 || cl->coll_max > 1 || cl->comm_share >= 1 || cl->sync >= 1 || cl->idle_kept > 1)
        MOE_ERR("%s: the efficiencies gemm_max, attention, memory, collective_max, comm_share, sync and idle_kept are fractions (comm_share and sync under 1)", path);
    if (!cl->name[0]) MOE_ERR("%s: \"name\" is missing", path);
    if (cl->cores == 0) cl->cores = 1;
    return MOE_OK;
}

int cluster_parse(Cluster *cl, const char *text, size_t len, const char *path) {
    memset(cl, 0, sizeof *cl);
    cJSON *root = cJSON_ParseWithLength(text, len);
    if (!root) MOE_ERR("%s: not valid JSON", path);
    int rc = cJSON_IsObject(root) ? parse(cl, root, path) : (moe_seterr("%s: not a JSON object", path), MOE_FAIL);
    cJSON_Delete(root);
    return rc;
}

int cluster_load(Cluster *cl, const char *path) {
    size_t len;
    char *text = file_read_all(path, &len);
    if (!text) return MOE_FAIL;
    const int rc = cluster_parse(cl, text, len, path);
    free(text);   // (malloc'd)
    return rc;
}

void cluster_set_cores(Cluster *cl, double cores) {
    const double f = cores / cl->cores;
    cl->peak *= f, cl->gemm_peak *= f, cl->mfu_peak *= f, cl->mem_bw *= f;
    cl->cores = cores;
}
