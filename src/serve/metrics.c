// Prometheus counters (metrics.h)
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "metrics.h"

static const double LAT_LE[MET_LAT_BUCKETS] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10};
static const int BATCH_LE[MET_BATCH_BUCKETS] = {1, 2, 4, 8, 16, 32, 64, 128, 256};
static const char *const PATH[MET_NPATH] = {"/v1/solve", "/v1/completions", "/", "/health", "/metrics", "other"};

void metrics_init(Metrics *m) {
    memset(m, 0, sizeof *m);
    pthread_mutex_init(&m->mu, NULL);
}

void metrics_request(Metrics *m, int path, int status, double seconds) {
    pthread_mutex_lock(&m->mu);
    int c = status / 100;
    if (c < 1 || c > 5) c = 5;
    m->requests[path][c]++;
    if (seconds >= 0) {
        for (int i = 0; i < MET_LAT_BUCKETS; i++) if (seconds <= LAT_LE[i]) { m->lat_bucket[i]++; break; }
        m->lat_sum += seconds;
        m->lat_count++;
    }
    pthread_mutex_unlock(&m->mu);
}

void metrics_batch(Metrics *m, int sequences, int tokens) {
    pthread_mutex_lock(&m->mu);
    for (int i = 0; i < MET_BATCH_BUCKETS; i++) if (sequences <= BATCH_LE[i]) { m->batch_bucket[i]++; break; }
    m->batch_sum += sequences;
    m->batch_count++;
    m->batch_tokens += tokens;
    pthread_mutex_unlock(&m->mu);
}

void metrics_gauges(Metrics *m, long pending, long live, long answered) {
    pthread_mutex_lock(&m->mu);
    m->pending = pending; m->live = live; m->questions += answered;
    pthread_mutex_unlock(&m->mu);
}

typedef struct { char *s; size_t n, cap; } Buf;
static void put(Buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(Buf *b, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(b->s ? b->s + b->n : NULL, b->s ? b->cap - b->n : 0, fmt, ap);
        va_end(ap);
        if (k < 0) return;
        if (b->s && b->n + (size_t)k < b->cap) { b->n += (size_t)k; return; }
        size_t cap = (b->cap + (size_t)k + 1) * 2;
        char *s = realloc(b->s, cap);
        if (!s) return;
        b->s = s; b->cap = cap;
    }
}

char *metrics_render(Metrics *m, long rss_bytes) {
    Buf b = {0};
    pthread_mutex_lock(&m->mu);
    put(&b, "# HELP moe_requests_total HTTP requests answered, by path and status class.\n# TYPE moe_requests_total counter\n");
    for (int p = 0; p < MET_NPATH; p++)
        for (int c = 2; c <= 5; c++)
            if (m->requests[p][c]) put(&b, "moe_requests_total{path=\"%s\",code=\"%dxx\"} %ld\n", PATH[p], c, m->requests[p][c]);
    long err = 0;
    for (int p = 0; p < MET_NPATH; p++) err += m->requests[p][4] + m->requests[p][5];
    put(&b, "# HELP moe_errors_total Requests answered with a 4xx or 5xx status.\n# TYPE moe_errors_total counter\nmoe_errors_total %ld\n", err);
    put(&b, "# HELP moe_answers_total Questions and prompts answered.\n# TYPE moe_answers_total counter\nmoe_answers_total %ld\n", m->questions);
    put(&b, "# HELP moe_request_duration_seconds Time from a POST's arrival to its answer.\n# TYPE moe_request_duration_seconds histogram\n");
    long cum = 0;
    for (int i = 0; i < MET_LAT_BUCKETS; i++) {
        cum += m->lat_bucket[i];
        put(&b, "moe_request_duration_seconds_bucket{le=\"%g\"} %ld\n", LAT_LE[i], cum);
    }
    put(&b, "moe_request_duration_seconds_bucket{le=\"+Inf\"} %ld\nmoe_request_duration_seconds_sum %.6f\nmoe_request_duration_seconds_count %ld\n",
        m->lat_count, m->lat_sum, m->lat_count);
    put(&b, "# HELP moe_batch_sequences Sequences in each decoding forward pass.\n# TYPE moe_batch_sequences histogram\n");
    cum = 0;
    for (int i = 0; i < MET_BATCH_BUCKETS; i++) {
        cum += m->batch_bucket[i];
        put(&b, "moe_batch_sequences_bucket{le=\"%d\"} %ld\n", BATCH_LE[i], cum);
    }
    put(&b, "moe_batch_sequences_bucket{le=\"+Inf\"} %ld\nmoe_batch_sequences_sum %.0f\nmoe_batch_sequences_count %ld\n",
        m->batch_count, m->batch_sum, m->batch_count);
    put(&b, "# HELP moe_batch_tokens_total Tokens through the forward passes.\n# TYPE moe_batch_tokens_total counter\nmoe_batch_tokens_total %ld\n",
        m->batch_tokens);
    put(&b, "# HELP moe_pending Texts waiting for a decoding slot.\n# TYPE moe_pending gauge\nmoe_pending %ld\n", m->pending);
    put(&b, "# HELP moe_live_sequences Sequences being decoded.\n# TYPE moe_live_sequences gauge\nmoe_live_sequences %ld\n", m->live);
    put(&b, "# HELP process_resident_memory_bytes Resident memory.\n# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes %ld\n",
        rss_bytes);
    pthread_mutex_unlock(&m->mu);
    return b.s;
}
