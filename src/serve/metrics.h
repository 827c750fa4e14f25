// moe serve's counters, rendered as Prometheus text (GET /metrics). Thread-safe.
#pragma once
#include <pthread.h>

#define MET_LAT_BUCKETS 12
#define MET_BATCH_BUCKETS 9
enum { MET_SOLVE, MET_COMPLETIONS, MET_PAGE, MET_HEALTH, MET_METRICS, MET_OTHER, MET_NPATH };

typedef struct {
    pthread_mutex_t mu;
    long requests[MET_NPATH][6];      // by path and status class (index status / 100: 2xx..5xx)
    long questions;                   // texts answered
    long lat_bucket[MET_LAT_BUCKETS]; // request latency (POSTs answered), cumulative at render
    double lat_sum;
    long lat_count;
    long batch_bucket[MET_BATCH_BUCKETS];   // sequences in each forward pass
    double batch_sum;
    long batch_count, batch_tokens;
    long pending, live;               // gauges: texts waiting for a slot, sequences decoding
} Metrics;

void metrics_init(Metrics *m);
void metrics_request(Metrics *m, int path, int status, double seconds);   // seconds < 0: no latency
void metrics_batch(Metrics *m, int sequences, int tokens);
void metrics_gauges(Metrics *m, long pending, long live, long answered);
// the text (malloc'd); rss_bytes: the process's resident memory
char *metrics_render(Metrics *m, long rss_bytes);
