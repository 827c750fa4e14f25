// moe serve's HTTP side and decoding thread (server.h)
#include <microhttpd.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include "../base/base.h"
#include "../infer/engine.h"
#include "../kernels/gemm.h"
#include "metrics.h"
#include "server.h"

extern const char serve_page_html[];   // page.c: GET /

typedef struct Job Job;
typedef struct { Job *job; int i; } Item;
struct Job {
    ApiJob req;
    Item *items;           // [n] the engine's tags
    ApiResult *res;        // [n]
    char **out;            // [n] the answers' texts
    int remaining;         // texts not finished
    int status;            // 0 while running; then 200 or the failure's
    char err[256];
    double t0;
    struct MHD_Connection *conn;
    Job *prev, *next;      // the server's jobs in flight
};

typedef struct {           // one connection's request
    int kind, path;
    char *body;
    size_t n, cap;
    bool too_big;
    double t0;
    Job *job;
} Conn;

struct Server {
    struct MHD_Daemon *d;
    Model *m;
    const Tokenizer *tk;
    ServeOpts o;
    Engine *e;
    Metrics met;
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop, thread_on;
    Item *q;               // FIFO ring of texts waiting for a slot, [max_pending]
    int qhead, qn;
    int inflight;          // texts queued or decoding
    Job *jobs;
    long next_id;
    int port;
    int threads;           // the model's threads (OpenMP's count is per thread: the decoding thread sets its own)
};

static long rss_bytes(void) {
    long pages = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) { if (fscanf(f, "%ld %ld", &pages, &rss) != 2) rss = 0; fclose(f); }
    return rss * sysconf(_SC_PAGESIZE);
}

static int path_of(int kind) {
    switch (kind) {
    case API_SOLVE: return MET_SOLVE;
    case API_COMPLETIONS: return MET_COMPLETIONS;
    case API_GET_PAGE: return MET_PAGE;
    case API_GET_HEALTH: return MET_HEALTH;
    case API_GET_METRICS: return MET_METRICS;
    default: return MET_OTHER;
    }
}

// queues body (malloc'd, taken) with status; the request's latency counts when it was a POST
static enum MHD_Result reply(Server *s, struct MHD_Connection *c, Conn *cc, int status, char *body, const char *type) {
    if (!body) { body = strdup("{\"error\": {\"code\": 500, \"message\": \"out of memory\"}}"); status = 500; type = "application/json"; }
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
    if (!r) { free(body); return MHD_NO; }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    bool post = cc->kind == API_SOLVE || cc->kind == API_COMPLETIONS;
    metrics_request(&s->met, cc->path, status, post ? time_now() - cc->t0 : -1);
    return ret;
}

static enum MHD_Result reply_error(Server *s, struct MHD_Connection *c, Conn *cc, int status, const char *msg) {
    return reply(s, c, cc, status, api_error_json(status, msg), "application/json");
}

static void job_free(Job *j) {
    if (!j) return;
    for (int i = 0; i < j->req.n; i++) moe_free(j->out[i]);
    api_job_free(&j->req);
    free(j->items); free(j->res); free(j->out);
    free(j);
}

// under s->mu: text i of j is over (answer set, or failed with status); a finished job goes on
// `ready` to be resumed once the lock is released
static void item_done(Server *s, Job *j, int status, const char *err, Job **ready) {
    if (status != 200 && j->status == 0) { j->status = status; snprintf(j->err, sizeof j->err, "%s", err); }
    s->inflight--;
    if (--j->remaining > 0) return;
    if (j->status == 0) j->status = 200;
    if (j->prev) j->prev->next = j->next; else s->jobs = j->next;
    if (j->next) j->next->prev = j->prev;
    j->next = *ready;
    *ready = j;
}

static void resume_all(Job *ready) {
    while (ready) {
        Job *n = ready->next;
        MHD_resume_connection(ready->conn);   // the handler answers it; the job is its connection's now
        ready = n;
    }
}

static void *decode_thread(void *arg) {
    Server *s = arg;
    kernels_set_threads(s->threads);
    EngineResult *res = MOE_NEW(EngineResult, s->o.slots);
    pthread_mutex_lock(&s->mu);
    while (!s->stop) {
        if (s->qn == 0 && engine_live(s->e) == 0) { pthread_cond_wait(&s->cv, &s->mu); continue; }
        Job *ready = NULL;
        while (s->qn > 0 && engine_free_slots(s->e) > 0) {
            Item *it = &s->q[s->qhead];
            s->qhead = (s->qhead + 1) % s->o.max_pending;
            s->qn--;
            Job *j = it->job;
            Item *tag = &j->items[it->i];
            if (engine_add(s->e, j->req.text[tag->i], j->req.len[tag->i], j->req.raw, j->req.max_new, tag) != MOE_OK)
                item_done(s, j, 400, moe_errmsg(), &ready);
        }
        metrics_gauges(&s->met, s->qn, engine_live(s->e), 0);
        pthread_mutex_unlock(&s->mu);
        resume_all(ready);
        ready = NULL;
        int fin = 0, seqs = 0;
        int rc = engine_live(s->e) ? engine_step(s->e, &fin) : MOE_OK;
        const int rows = rc == MOE_OK ? engine_last_rows(s->e, &seqs) : 0;
        if (rows > 0) metrics_batch(&s->met, seqs, rows);
        pthread_mutex_lock(&s->mu);
        if (rc != MOE_OK) {   // nothing the engine holds can go on: every live text fails
            fprintf(stderr, "moe serve: decoding failed: %s\n", moe_errmsg());
            s->stop = true;
            break;
        }
        int n = engine_take(s->e, res, s->o.slots);
        double now = time_now();
        for (int k = 0; k < n; k++) {
            Item *tag = res[k].tag;
            Job *j = tag->job;
            j->out[tag->i] = res[k].text;
            j->res[tag->i] = (ApiResult){res[k].text, 1e3 * (now - j->t0), res[k].n_prompt, res[k].n_tokens, res[k].finish};
            item_done(s, j, 200, "", &ready);
        }
        metrics_gauges(&s->met, s->qn, engine_live(s->e), n);
        pthread_mutex_unlock(&s->mu);
        resume_all(ready);
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    moe_free(res);
    return NULL;
}

// the parsed job into the queue (503 when the server holds max_pending texts already)
static int enqueue(Server *s, Conn *cc, struct MHD_Connection *c, ApiJob *req, int *status) {
    Job *j = calloc(1, sizeof *j);
    if (!j) { *status = 500; MOE_ERR("out of memory"); }
    j->req = *req;
    memset(req, 0, sizeof *req);
    const int n = j->req.n;
    j->items = calloc((size_t)n, sizeof(Item));
    j->res = calloc((size_t)n, sizeof(ApiResult));
    j->out = calloc((size_t)n, sizeof(char *));
    if (!j->items || !j->res || !j->out) { job_free(j); *status = 500; MOE_ERR("out of memory"); }
    for (int i = 0; i < n; i++) j->items[i] = (Item){j, i};
    j->remaining = n;
    j->t0 = cc->t0;
    j->conn = c;
    pthread_mutex_lock(&s->mu);
    if (s->stop || s->inflight + n > s->o.max_pending) {
        int busy = s->inflight;
        bool stopping = s->stop;
        pthread_mutex_unlock(&s->mu);
        job_free(j);
        *status = 503;
        if (stopping) MOE_ERR("the server is stopping");
        MOE_ERR("busy: %d texts in flight, %d more would pass the limit of %d; retry later", busy, n, s->o.max_pending);
    }
    for (int i = 0; i < n; i++) s->q[(s->qhead + s->qn++) % s->o.max_pending] = j->items[i];
    s->inflight += n;
    j->next = s->jobs;
    if (s->jobs) s->jobs->prev = j;
    s->jobs = j;
    cc->job = j;
    MHD_suspend_connection(c);   // before the decoding thread can finish it and resume
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return MOE_OK;
}

static char *health_json(Server *s) {
    pthread_mutex_lock(&s->mu);
    const bool stopping = s->stop;
    const int live = engine_live(s->e), pending = s->qn;
    pthread_mutex_unlock(&s->mu);
    return api_health_json(stopping, s->o.model_name, MOE_FAMILY_NAMES[s->m->cfg.family], s->o.slots, live, pending);
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                               const char *version, const char *upload, size_t *upload_size, void **con_cls) {
    (void)version;
    Server *s = cls;
    Conn *cc = *con_cls;
    if (!cc) {
        if (!(cc = calloc(1, sizeof *cc))) return MHD_NO;
        *con_cls = cc;
        cc->t0 = time_now();
        int status = 404;
        cc->kind = api_route(method, url, &status);
        cc->path = path_of(cc->kind);
        if (!cc->kind) return reply_error(s, c, cc, status, moe_errmsg());
        if (cc->kind == API_SOLVE || cc->kind == API_COMPLETIONS) {
            const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
            if (cl && strtoull(cl, NULL, 10) > (unsigned long long)s->o.lim.max_body) {
                char msg[96];
                snprintf(msg, sizeof msg, "body of %.20s bytes (at most %d)", cl, s->o.lim.max_body);
                return reply_error(s, c, cc, 413, msg);
            }
            return MHD_YES;   // the body follows
        }
    }
    switch (cc->kind) {
    case API_GET_PAGE: return reply(s, c, cc, 200, strdup(serve_page_html), "text/html; charset=utf-8");
    case API_GET_HEALTH: return reply(s, c, cc, 200, health_json(s), "application/json");
    case API_GET_METRICS: return reply(s, c, cc, 200, metrics_render(&s->met, rss_bytes()), "text/plain; version=0.0.4");
    default: break;
    }
    if (*upload_size) {   // more of the body
        if (!cc->too_big && cc->n + *upload_size > (size_t)s->o.lim.max_body) {
            cc->too_big = true;
            free(cc->body); cc->body = NULL; cc->n = cc->cap = 0;
        }
        if (!cc->too_big) {
            if (cc->n + *upload_size > cc->cap) {
                size_t cap = (cc->n + *upload_size) * 2;
                char *b = realloc(cc->body, cap);
                if (!b) return MHD_NO;
                cc->body = b; cc->cap = cap;
            }
            memcpy(cc->body + cc->n, upload, *upload_size);
            cc->n += *upload_size;
        }
        *upload_size = 0;
        return MHD_YES;
    }
    if (cc->job) {   // resumed: the answers are in
        Job *j = cc->job;
        if (j->status != 200) return reply_error(s, c, cc, j->status, j->err);
        char *body = j->req.kind == API_SOLVE ? api_solve_json(j->res, j->req.n)
                     : api_completions_json(j->res, j->req.n, s->o.model_name, __atomic_fetch_add(&s->next_id, 1, __ATOMIC_RELAXED),
                                            (long)time(NULL));
        return reply(s, c, cc, 200, body, "application/json");
    }
    if (cc->too_big) {
        char msg[64];
        snprintf(msg, sizeof msg, "body larger than %d bytes", s->o.lim.max_body);
        return reply_error(s, c, cc, 413, msg);
    }
    ApiJob req;
    int status = 400;
    if (api_parse(cc->kind, cc->body ? cc->body : "", cc->n, &s->o.lim, &req, &status) != MOE_OK)
        return reply_error(s, c, cc, status, moe_errmsg());
    if (enqueue(s, cc, c, &req, &status) != MOE_OK) {
        api_job_free(&req);
        return reply_error(s, c, cc, status, moe_errmsg());
    }
    return MHD_YES;
}

static void completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe) {
    (void)cls; (void)c; (void)toe;
    Conn *cc = *con_cls;
    if (!cc) return;
    job_free(cc->job);
    free(cc->body);
    free(cc);
    *con_cls = NULL;
}

int server_start(Server **out, Model *m, const Tokenizer *tk, const ServeOpts *o) {
    Server *s = calloc(1, sizeof *s);
    if (!s) MOE_ERR("out of memory");
    s->m = m; s->tk = tk; s->o = *o;
    s->next_id = 1;
    s->threads = kernels_threads();
    metrics_init(&s->met);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    s->q = MOE_NEW(Item, o->max_pending);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)o->port)};
    if (inet_pton(AF_INET, o->host, &addr.sin_addr) != 1) { server_stop(s); MOE_ERR("--host %s is not an IPv4 address", o->host); }
    if (engine_new(&s->e, m, tk, o->slots, 2048) != MOE_OK) { server_stop(s); return MOE_FAIL; }
    if (pthread_create(&s->th, NULL, decode_thread, s)) { server_stop(s); MOE_ERR("cannot start the decoding thread"); }
    s->thread_on = true;
    s->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_ALLOW_SUSPEND_RESUME, 0, NULL, NULL,
                            handler, s, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
                            MHD_OPTION_NOTIFY_COMPLETED, completed, s,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)o->timeout_s,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned)1000,
                            MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)64 * 1024, MHD_OPTION_END);
    if (!s->d) { server_stop(s); MOE_ERR("cannot listen on %s:%d (in use, or not an address of this machine)", o->host, o->port); }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : o->port;
    *out = s;
    return MOE_OK;
}

int server_port(const Server *s) { return s->port; }

void server_stop(Server *s) {
    if (!s) return;
    pthread_mutex_lock(&s->mu);
    s->stop = true;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    if (s->thread_on) pthread_join(s->th, NULL);
    // what is in flight is answered 503; then the connections can close
    Job *ready = NULL;
    pthread_mutex_lock(&s->mu);
    while (s->jobs) {
        Job *j = s->jobs;
        while (j->remaining > 0 && s->jobs == j) item_done(s, j, 503, "the server is stopping", &ready);
    }
    pthread_mutex_unlock(&s->mu);
    resume_all(ready);
    if (s->d) {
        usleep(100 * 1000);   // time to send those answers
        MHD_stop_daemon(s->d);
    }
    engine_free(s->e);
    moe_free(s->q);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s);
}
