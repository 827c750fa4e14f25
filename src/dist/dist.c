#include "dist.h"
#include <mpi.h>
#include <stdlib.h>
#include <limits.h>
#include <string.h>
#include <unistd.h>
#include "../base/base.h"

static DistInfo g = {.rank = 0, .size = 1, .ep = 1, .dp = 1, .pp = 1, .ssize = 1};
static MPI_Comm ep_comm = MPI_COMM_NULL, rep_comm = MPI_COMM_NULL, node_comm = MPI_COMM_NULL;
static MPI_Comm stage_comm = MPI_COMM_NULL, pipe_comm = MPI_COMM_NULL, embed_comm = MPI_COMM_NULL, model_comm = MPI_COMM_NULL;

static bool under_launcher(void) {
    return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMI_SIZE") || getenv("PMIX_RANK") || getenv("SLURM_STEP_ID");
}

DistInfo *dist_info(void) { return &g; }

// An MPI call's error (it comes back only under an error handler that returns errors; MPI's
// default ends the job): "NAME failed: MPI's reason". call is the call's text; its name is
// what comes before the '('.
static void mpi_error_text(char *out, size_t cap, const char *call, int code) {
    char why[MPI_MAX_ERROR_STRING];
    int n = 0;
    if (MPI_Error_string(code, why, &n) != MPI_SUCCESS) snprintf(why, sizeof why, "error code %d", code);
    snprintf(out, cap, "%.*s failed: %s", (int)strcspn(call, "("), call, why);
}
static int mpi_fail(const char *call, int code) {
    char msg[512];
    mpi_error_text(msg, sizeof msg, call, code);
    MOE_ERR("%s", msg);
}
#define MPI_TRY(call) do { int rc_ = (call); if (rc_ != MPI_SUCCESS) return mpi_fail(#call, rc_); } while (0)

int dist_init(int *argc, char ***argv) {
    if (!under_launcher()) return MOE_OK;
    int provided;
    if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) MOE_ERR("MPI_Init failed");
    g.mpi = true;
    MPI_TRY(MPI_Comm_rank(MPI_COMM_WORLD, &g.rank));
    MPI_TRY(MPI_Comm_size(MPI_COMM_WORLD, &g.size));
    g.dp = g.ssize = g.size;
    g.dp_rank = g.srank = g.rank;
    return MOE_OK;
}

void dist_finalize(void) {
    if (!g.mpi) return;
    if (node_comm != MPI_COMM_NULL) MPI_Comm_free(&node_comm);
    if (ep_comm != MPI_COMM_NULL) MPI_Comm_free(&ep_comm);
    if (rep_comm != MPI_COMM_NULL) MPI_Comm_free(&rep_comm);
    MPI_Comm *more[] = {&stage_comm, &pipe_comm, &embed_comm, &model_comm};
    for (int i = 0; i < 4; i++) if (*more[i] != MPI_COMM_NULL) MPI_Comm_free(more[i]);
    MPI_Finalize();
}

static MPI_Comm comm_of(DistGroup grp) {
    switch (grp) {
    case DIST_EP: return ep_comm;
    case DIST_REPLICAS: return rep_comm;
    case DIST_STAGE: return stage_comm == MPI_COMM_NULL ? MPI_COMM_WORLD : stage_comm;
    case DIST_PIPE: return pipe_comm;
    case DIST_EMBED: return embed_comm;
    case DIST_MODEL: return model_comm;
    case DIST_WORLD: break;
    }
    return MPI_COMM_WORLD;
}

// ---------------------------------------------------------------- requests in flight
// A small table of non-blocking operations. Each remembers when it started and when it was
// seen complete (by a wait, or by the progress hook that compute loops call), so that
// comm_ms is the time exchanges were in flight and exposed_ms the time compute waited.
#define MAX_REQ 4096   // buckets of every layer (a few each) plus the exchanges in flight
typedef struct Hier Hier;
// A request whose MPI_Test failed counts as done; its wait returns the error (err, err_call).
static struct { MPI_Request r; Hier *h; double t0, t1; bool used, done; double *ms; int err; const char *err_call; } reqs[MAX_REQ];
static int n_active, n_hi;   // requests in flight; entries [0, n_hi) may be in use
static bool hier_step(Hier *h, bool block);   // advances a hierarchical exchange; true when done
static void hier_free(Hier *h);
static const char *hier_error(const Hier *h);   // why the exchange failed, or NULL

static void progress(void) {
    if (n_active == 0) return;
    for (int i = 0; i < n_hi; i++) {
        if (!reqs[i].used || reqs[i].done) continue;
        int flag = 0;
        if (reqs[i].h) flag = hier_step(reqs[i].h, false);
        else if ((reqs[i].err = MPI_Test(&reqs[i].r, &flag, MPI_STATUS_IGNORE)) != MPI_SUCCESS)
            { reqs[i].err_call = "MPI_Test"; flag = 1; }
        if (flag) { reqs[i].done = true; reqs[i].t1 = time_now(); n_active--; }
    }
    if (n_active == 0) moe_progress_hook = NULL;
}

static int req_new(double *ms) {
    for (int i = 0; i < MAX_REQ; i++)
        if (!reqs[i].used) {
            reqs[i].used = true; reqs[i].done = false; reqs[i].t0 = time_now(); reqs[i].ms = ms; reqs[i].h = NULL;
            reqs[i].err = MPI_SUCCESS;
            if (i + 1 > n_hi) n_hi = i + 1;
            n_active++;
            moe_progress_hook = progress;
            return i;
        }
    return -1;
}

// gives back the slot of an operation that did not start
static void req_drop(int i) {
    reqs[i].used = false;
    if (--n_active == 0) moe_progress_hook = NULL;
}

// completes request i (and gives its slot back, failed or not); the blocked time goes to *exposed
static int req_wait(int i, double *exposed) {
    if (i < 0 || i >= MAX_REQ || !reqs[i].used) MOE_ERR("internal: no exchange %d in flight", i);
    if (!reqs[i].done) {
        double t = time_now();
        if (reqs[i].h) hier_step(reqs[i].h, true);
        else if ((reqs[i].err = MPI_Wait(&reqs[i].r, MPI_STATUS_IGNORE)) != MPI_SUCCESS) reqs[i].err_call = "MPI_Wait";
        reqs[i].t1 = time_now();
        *exposed += (reqs[i].t1 - t) * 1e3;
        reqs[i].done = true;
        if (--n_active == 0) moe_progress_hook = NULL;
    }
    *reqs[i].ms += (reqs[i].t1 - reqs[i].t0) * 1e3;
    int rc = reqs[i].err == MPI_SUCCESS ? MOE_OK : mpi_fail(reqs[i].err_call, reqs[i].err);
    if (reqs[i].h) {
        if (hier_error(reqs[i].h)) { moe_seterr("%s", hier_error(reqs[i].h)); rc = MOE_FAIL; }
        hier_free(reqs[i].h);
        reqs[i].h = NULL;
    }
    reqs[i].used = false;
    return rc;
}

// ---------------------------------------------------------------- MoeComm over the EP group
static int ep_counts(MoeComm *c, const int *send, int *recv, int n) {
    double t = time_now();
    if (MPI_Alltoall(send, n, MPI_INT, recv, n, MPI_INT, ep_comm) != MPI_SUCCESS) MOE_ERR("MPI_Alltoall failed");
    double ms = (time_now() - t) * 1e3;
    c->ms += ms; c->exposed_ms += ms;
    return MOE_OK;
}
static int hier_start(const float *send, const int *scnt, float *recv, const int *rcnt, int width, Hier **out);

static bool prefix_layout(const int *cnt, const int *dsp, int n) {
    for (int i = 0, o = 0; i < n; o += cnt[i], i++)
        if (dsp[i] != o) return false;
    return true;
}

static int ep_start(MoeComm *c, const float *send, const int *scnt, const int *sdsp, float *recv, const int *rcnt,
                    const int *rdsp, int width, int *req) {
    if (g.hier && prefix_layout(scnt, sdsp, g.ep) && prefix_layout(rcnt, rdsp, g.ep)) {
        double t = time_now();
        Hier *h;
        MOE_TRY(hier_start(send, scnt, recv, rcnt, width, &h));
        c->exposed_ms += (time_now() - t) * 1e3;   // its count exchange blocks
        int i = req_new(&c->ms);
        if (i < 0) { hier_free(h); MOE_ERR("internal: too many exchanges in flight"); }
        reqs[i].h = h;
        reqs[i].t0 = t;
        *req = i;
        return MOE_OK;
    }
    MPI_Datatype row;
    MPI_TRY(MPI_Type_contiguous(width, MPI_FLOAT, &row));
    int rc = MPI_Type_commit(&row);
    if (rc != MPI_SUCCESS) { MPI_Type_free(&row); return mpi_fail("MPI_Type_commit", rc); }
    int i = req_new(&c->ms);
    if (i < 0) { MPI_Type_free(&row); MOE_ERR("internal: too many exchanges in flight"); }
    rc = MPI_Ialltoallv(send, scnt, sdsp, row, recv, rcnt, rdsp, row, ep_comm, &reqs[i].r);
    MPI_Type_free(&row);   // freed once the exchange no longer needs it
    if (rc != MPI_SUCCESS) { req_drop(i); return mpi_fail("MPI_Ialltoallv", rc); }
    *req = i;
    return MOE_OK;
}
static int ep_wait(MoeComm *c, int req) { return req_wait(req, &c->exposed_ms); }
static int ep_sum(MoeComm *c, double *buf, int n) {
    double t = time_now();
    if (MPI_Allreduce(MPI_IN_PLACE, buf, n, MPI_DOUBLE, MPI_SUM, ep_comm) != MPI_SUCCESS) MOE_ERR("MPI_Allreduce failed");
    double ms = (time_now() - t) * 1e3;
    c->ms += ms; c->exposed_ms += ms;
    return MOE_OK;
}


// ---------------------------------------------------------------- hierarchical all-to-all
// Ranks of the EP group on one host (MPI_COMM_TYPE_SHARED) hand their rows to the host's
// leader (its lowest rank); the leaders exchange one message per pair of hosts; each leader
// hands every rank of its host what came for it. Point-to-point throughout (tags carry a
// sequence number), so that several exchanges may be in flight in any order.
static int n_hosts, my_host, node_rank, node_size;
static int *host_of, *leader_of, *host_first, *host_members;   // [P], [P], [H+1], [P] (EP ranks by host)
static unsigned hier_seq;

struct Hier {
    int phase, tag;
    size_t W;
    const float *send;
    float *recv;
    int *C;                     // [P*P] rows from EP rank s to d
    float *G, *S2, *R2, *S3;    // leader: gathered, to hosts, from hosts, to local ranks
    size_t *goff;               // leader: offset (rows) of local source j's buffer in G
    MPI_Request *rq;
    int nrq;
    char err[160];              // why the exchange failed (it then ends early), or ""
};

// The rows' buffers (G, S2, R2, S3) come from malloc, not moe_alloc: they are written in
// full at once, and zeroing them too would double the copying of every exchange. Running
// out of memory fails the exchange, and its wait returns the error.
static float *hier_rows(Hier *h, size_t rows) {
    float *p = malloc(sizeof(float) * (rows * h->W + 1));
    if (!p && !h->err[0])
        snprintf(h->err, sizeof h->err, "out of memory: %zu bytes for the hierarchical all-to-all", sizeof(float) * rows * h->W);
    return p;
}

static const char *hier_error(const Hier *h) { return h->err[0] ? h->err : NULL; }
// records the first failed MPI call of the exchange
#define HIER_TRY(h, call) \
    do { int rc_ = (call); if (rc_ != MPI_SUCCESS) { mpi_error_text((h)->err, sizeof (h)->err, #call, rc_); goto hier_fail; } } while (0)

static void hier_free(Hier *h) {
    if (!h) return;
    free(h->G); free(h->S2); free(h->R2); free(h->S3);
    moe_free(h->C); moe_free(h->goff); moe_free(h->rq);
    moe_free(h);
}

static int hier_setup(void) {
    MPI_TRY(MPI_Comm_split_type(ep_comm, MPI_COMM_TYPE_SHARED, g.ep_rank, MPI_INFO_NULL, &node_comm));
    MPI_TRY(MPI_Comm_rank(node_comm, &node_rank));
    MPI_TRY(MPI_Comm_size(node_comm, &node_size));
    int leader = g.ep_rank;
    MPI_TRY(MPI_Bcast(&leader, 1, MPI_INT, 0, node_comm));   // node rank 0 is the lowest EP rank there
    const int P = g.ep;
    moe_free(host_of); moe_free(leader_of); moe_free(host_first); moe_free(host_members);
    leader_of = MOE_NEW(int, P); host_of = MOE_NEW(int, P);
    host_first = MOE_NEW(int, P + 1); host_members = MOE_NEW(int, P);
    MPI_TRY(MPI_Allgather(&leader, 1, MPI_INT, leader_of, 1, MPI_INT, ep_comm));
    n_hosts = 0;
    for (int r = 0; r < P; r++) if (leader_of[r] == r) host_of[r] = n_hosts++;   // hosts by leader rank
    for (int r = 0; r < P; r++) host_of[r] = host_of[leader_of[r]];
    host_first[0] = 0;
    for (int hh = 0, k = 0; hh < n_hosts; hh++) {
        for (int r = 0; r < P; r++) if (host_of[r] == hh) host_members[k++] = r;
        host_first[hh + 1] = k;
    }
    my_host = host_of[g.ep_rank];
    return MOE_OK;
}

static int leader_rank(int hh) { return host_members[host_first[hh]]; }

static int hier_start(const float *send, const int *scnt, float *recv, const int *rcnt, int width, Hier **out) {
    const int P = g.ep;
    Hier *h = MOE_NEW(Hier, 1);
    h->W = (size_t)width; h->send = send; h->recv = recv;
    h->tag = 100 + 3 * (int)(hier_seq++ % 10000);   // tag, tag + 1, tag + 2: its three phases
    h->C = MOE_NEW(int, P * P);
    HIER_TRY(h, MPI_Allgather(scnt, P, MPI_INT, h->C, P, MPI_INT, ep_comm));   // C[s*P + d]
    (void)rcnt;
    h->rq = MOE_NEW(MPI_Request, 2 * P + 4);
    size_t mine = 0, in = 0;
    for (int d = 0; d < P; d++) mine += h->C[g.ep_rank * P + d];
    for (int s2 = 0; s2 < P; s2++) in += h->C[s2 * P + g.ep_rank];
    if (node_rank != 0) {   // hand everything to the leader; what is ours comes back from it
        int ld = leader_rank(my_host);
        HIER_TRY(h, MPI_Isend(send, (int)(mine * h->W), MPI_FLOAT, ld, h->tag, ep_comm, &h->rq[h->nrq++]));
        HIER_TRY(h, MPI_Irecv(recv, (int)(in * h->W), MPI_FLOAT, ld, h->tag + 1, ep_comm, &h->rq[h->nrq++]));
        h->phase = 3;
    } else {                // phase 1: gather the host's rows
        const int n = host_first[my_host + 1] - host_first[my_host];
        h->goff = MOE_NEW(size_t, n + 1);
        h->goff[0] = 0;
        for (int j = 0; j < n; j++) {
            int r = host_members[host_first[my_host] + j];
            size_t rows = 0;
            for (int d = 0; d < P; d++) rows += h->C[r * P + d];
            h->goff[j + 1] = h->goff[j] + rows;
        }
        h->G = hier_rows(h, h->goff[n]);
        if (!h->G) goto hier_fail;
        memcpy(h->G, send, sizeof(float) * mine * h->W);   // the leader is member 0
        for (int j = 1; j < n; j++) {
            int r = host_members[host_first[my_host] + j];
            HIER_TRY(h, MPI_Irecv(h->G + h->goff[j] * h->W, (int)((h->goff[j + 1] - h->goff[j]) * h->W), MPI_FLOAT, r,
                                  h->tag, ep_comm, &h->rq[h->nrq++]));
        }
        h->phase = 1;
    }
    *out = h;
    return MOE_OK;
hier_fail:
    moe_seterr("%s", h->err);
    hier_free(h);
    return MOE_FAIL;
}

// block (s -> d) inside local source j's gathered buffer
static size_t g_block(const Hier *h, int j, int s, int d) {
    const int P = g.ep;
    size_t o = h->goff[j];
    for (int d2 = 0; d2 < d; d2++) o += h->C[s * P + d2];
    return o;
}

// Posts the next phase's messages. A failure (out of memory, an MPI call) leaves h->err
// set, and hier_step then ends the exchange.
static void hier_next(Hier *h) {
    const int P = g.ep, H = n_hosts, me = my_host;
    const size_t W = h->W;
    const int *hm = host_members, *hf = host_first;
    size_t *soff = NULL, *roff = NULL, *off = NULL, *dst = NULL;   // this phase's scratch
    h->nrq = 0;
    if (h->phase == 1) {
        // phase 2: to every host, for each of its ranks d, for each local source s: (s -> d)
        size_t tot = 0;
        for (int hh = 0; hh < H; hh++)
            for (int a = hf[hh]; a < hf[hh + 1]; a++)
                for (int b = hf[me]; b < hf[me + 1]; b++) tot += h->C[hm[b] * P + hm[a]];
        h->S2 = hier_rows(h, tot);
        if (!h->S2) goto hier_fail;
        soff = MOE_NEW(size_t, H + 1);
        size_t o = 0;
        for (int hh = 0; hh < H; hh++) {
            soff[hh] = o;
            for (int a = hf[hh]; a < hf[hh + 1]; a++)
                for (int b = hf[me]; b < hf[me + 1]; b++) {
                    int s = hm[b], d = hm[a], j = b - hf[me];
                    size_t n = h->C[s * P + d];
                    memcpy(h->S2 + o * W, h->G + g_block(h, j, s, d) * W, sizeof(float) * n * W);
                    o += n;
                }
        }
        soff[H] = o;
        // from every host, for each of our ranks d, for each of its sources s: (s -> d)
        size_t rtot = 0;
        roff = MOE_NEW(size_t, H + 1);
        for (int hh = 0; hh < H; hh++) {
            roff[hh] = rtot;
            for (int a = hf[me]; a < hf[me + 1]; a++)
                for (int b = hf[hh]; b < hf[hh + 1]; b++) rtot += h->C[hm[b] * P + hm[a]];
        }
        roff[H] = rtot;
        h->R2 = hier_rows(h, rtot);
        if (!h->R2) goto hier_fail;
        moe_free(h->rq);
        h->rq = MOE_NEW(MPI_Request, 2 * H + 2);
        for (int hh = 0; hh < H; hh++) {
            if (hh == me) {
                memcpy(h->R2 + roff[hh] * W, h->S2 + soff[hh] * W, sizeof(float) * (soff[hh + 1] - soff[hh]) * W);
                continue;
            }
            HIER_TRY(h, MPI_Irecv(h->R2 + roff[hh] * W, (int)((roff[hh + 1] - roff[hh]) * W), MPI_FLOAT, leader_rank(hh),
                                  h->tag + 2, ep_comm, &h->rq[h->nrq++]));
            HIER_TRY(h, MPI_Isend(h->S2 + soff[hh] * W, (int)((soff[hh + 1] - soff[hh]) * W), MPI_FLOAT, leader_rank(hh),
                                  h->tag + 2, ep_comm, &h->rq[h->nrq++]));
        }
        h->phase = 2;
    } else if (h->phase == 2) {
        // phase 3: each local rank d gets (s -> d) for every source s, in EP rank order
        size_t o = 0, tot = 0;
        for (int a = hf[me]; a < hf[me + 1]; a++)
            for (int s = 0; s < P; s++) tot += h->C[s * P + hm[a]];
        h->S3 = hier_rows(h, tot);
        if (!h->S3) goto hier_fail;
        off = MOE_NEW(size_t, P);   // where (s -> d) for the current d sits in R2
        dst = MOE_NEW(size_t, hf[me + 1] - hf[me] + 1);
        size_t so = 0;
        for (int a = hf[me]; a < hf[me + 1]; a++) {
            int d = hm[a];
            // R2 order: host hh, our rank a', its source b: locate (s -> d)
            o = 0;
            for (int hh = 0; hh < H; hh++)
                for (int a2 = hf[me]; a2 < hf[me + 1]; a2++)
                    for (int b = hf[hh]; b < hf[hh + 1]; b++) {
                        int s = hm[b];
                        if (a2 == a) off[s] = o;
                        o += h->C[s * P + hm[a2]];
                    }
            dst[a - hf[me]] = so;
            for (int s = 0; s < P; s++) {
                size_t n = h->C[s * P + d];
                memcpy(h->S3 + so * W, h->R2 + off[s] * W, sizeof(float) * n * W);
                so += n;
            }
        }
        dst[hf[me + 1] - hf[me]] = so;
        moe_free(h->rq);
        h->rq = MOE_NEW(MPI_Request, hf[me + 1] - hf[me] + 1);
        memcpy(h->recv, h->S3, sizeof(float) * dst[1] * W);   // the leader is member 0
        for (int a = hf[me] + 1; a < hf[me + 1]; a++) {
            int j = a - hf[me];
            HIER_TRY(h, MPI_Isend(h->S3 + dst[j] * W, (int)((dst[j + 1] - dst[j]) * W), MPI_FLOAT, hm[a], h->tag + 1,
                                  ep_comm, &h->rq[h->nrq++]));
        }
        h->phase = 3;
    }
hier_fail:   // reached on success too: the scratch goes either way
    moe_free(soff); moe_free(roff); moe_free(off); moe_free(dst);
}

static bool hier_step(Hier *h, bool block) {
    for (;;) {
        if (hier_error(h)) return true;   // ended early: its wait reports why
        int flag = 1;
        if (h->nrq > 0) {
            if (block) HIER_TRY(h, MPI_Waitall(h->nrq, h->rq, MPI_STATUSES_IGNORE));
            else HIER_TRY(h, MPI_Testall(h->nrq, h->rq, &flag, MPI_STATUSES_IGNORE));
        }
        if (!flag) return false;
        if (h->phase == 3) { h->nrq = 0; return true; }
        hier_next(h);
    }
hier_fail:
    return true;
}

int dist_setup(int ep, int pp, DistA2A mode) {
    if (pp <= 0 || g.size % pp) MOE_ERR("--pp %d must divide the number of ranks %d", pp, g.size);
    const int ss = g.size / pp;
    if (ep <= 0 || ss % ep) {
        if (pp > 1) MOE_ERR("--ep %d must divide the ranks of a pipeline stage (%d ranks / --pp %d = %d)", ep, g.size, pp, ss);
        MOE_ERR("--ep %d must divide the number of ranks %d", ep, g.size);
    }
    g.pp = pp; g.ssize = ss;
    g.stage = g.rank / ss; g.srank = g.rank % ss;
    g.ep = ep; g.ep_rank = g.srank % ep;
    g.dp = ss / ep; g.dp_rank = g.srank / ep;
    memset(&g.moe, 0, sizeof g.moe);
    g.moe.rank = g.ep_rank; g.moe.size = ep;
    g.moe.counts = ep_counts; g.moe.start = ep_start; g.moe.wait = ep_wait; g.moe.sum = ep_sum;
    if (!g.mpi) return MOE_OK;
    MPI_Comm *all[] = {&ep_comm, &rep_comm, &stage_comm, &pipe_comm, &embed_comm, &model_comm};
    for (int i = 0; i < 6; i++) if (*all[i] != MPI_COMM_NULL) MPI_TRY(MPI_Comm_free(all[i]));
    MPI_TRY(MPI_Comm_split(MPI_COMM_WORLD, g.stage * g.dp + g.dp_rank, g.ep_rank, &ep_comm));
    MPI_TRY(MPI_Comm_split(MPI_COMM_WORLD, g.stage * ep + g.ep_rank, g.dp_rank, &rep_comm));
    MPI_TRY(MPI_Comm_split(MPI_COMM_WORLD, g.stage, g.srank, &stage_comm));
    MPI_TRY(MPI_Comm_split(MPI_COMM_WORLD, g.srank, g.stage, &pipe_comm));
    const bool ends = g.stage == 0 || g.stage == pp - 1;
    MPI_TRY(MPI_Comm_split(MPI_COMM_WORLD, ends ? 0 : MPI_UNDEFINED, g.rank, &embed_comm));
    MPI_TRY(MPI_Comm_split(MPI_COMM_WORLD, g.dp_rank, g.stage * ep + g.ep_rank, &model_comm));
    if (node_comm != MPI_COMM_NULL) MPI_TRY(MPI_Comm_free(&node_comm));
    MOE_TRY(hier_setup());
    // automatic: hierarchical when the EP group spans hosts and some host has several of
    // its ranks (with one rank a host the two are the same exchange)
    g.hosts = n_hosts;
    g.hier = mode == DIST_A2A_HIER || (mode == DIST_A2A_AUTO && n_hosts > 1 && n_hosts < ep);
    return MOE_OK;
}

static int sum(void *buf, size_t n, MPI_Datatype t, MPI_Op op, DistGroup grp) {
    if (!g.mpi) return MOE_OK;
    MPI_Comm c = comm_of(grp);
    if (c == MPI_COMM_NULL) return MOE_OK;
    int sz;
    MPI_TRY(MPI_Comm_size(c, &sz));
    if (sz == 1) return MOE_OK;
    double t0 = time_now();
    size_t el = t == MPI_FLOAT ? 4 : 8;
    for (size_t off = 0; off < n;) {   // MPI counts are int
        int cnt = n - off > (1u << 30) ? 1 << 30 : (int)(n - off);
        if (MPI_Allreduce(MPI_IN_PLACE, (char *)buf + off * el, cnt, t, op, c) != MPI_SUCCESS) MOE_ERR("MPI_Allreduce failed");
        off += cnt;
    }
    g.ms += (time_now() - t0) * 1e3;
    g.exposed_ms += (time_now() - t0) * 1e3;
    return MOE_OK;
}
int dist_sum_f32_start(float *buf, size_t n, DistGroup grp, int *req) {
    *req = -1;
    if (!g.mpi) return MOE_OK;
    MPI_Comm c = comm_of(grp);
    if (c == MPI_COMM_NULL) return MOE_OK;   // (a group this rank is not in)
    int sz;
    MPI_TRY(MPI_Comm_size(c, &sz));
    if (sz == 1 || n == 0) return MOE_OK;
    if (n > (1u << 30)) return dist_sum_f32(buf, n, grp);   // one blocking call per GB-sized piece
    int i = req_new(&g.ms);
    if (i < 0) MOE_ERR("internal: too many reductions in flight");
    int rc = MPI_Iallreduce(MPI_IN_PLACE, buf, (int)n, MPI_FLOAT, MPI_SUM, c, &reqs[i].r);
    if (rc != MPI_SUCCESS) { req_drop(i); return mpi_fail("MPI_Iallreduce", rc); }
    *req = i;
    return MOE_OK;
}
int dist_wait(int req) { return req < 0 ? MOE_OK : req_wait(req, &g.exposed_ms); }

int dist_sum_part_f32(float *buf, const int *cnt, int *req) {
    if (req) *req = -1;
    if (!g.mpi || g.ssize == 1) return MOE_OK;
    if (!req) {
        double t0 = time_now();
        if (MPI_Reduce_scatter(MPI_IN_PLACE, buf, cnt, MPI_FLOAT, MPI_SUM, comm_of(DIST_STAGE)) != MPI_SUCCESS)
            MOE_ERR("MPI_Reduce_scatter failed");
        g.ms += (time_now() - t0) * 1e3;
        g.exposed_ms += (time_now() - t0) * 1e3;
        return MOE_OK;
    }
    int i = req_new(&g.ms);
    if (i < 0) MOE_ERR("internal: too many reductions in flight");
    int rc = MPI_Ireduce_scatter(MPI_IN_PLACE, buf, cnt, MPI_FLOAT, MPI_SUM, comm_of(DIST_STAGE), &reqs[i].r);
    if (rc != MPI_SUCCESS) { req_drop(i); return mpi_fail("MPI_Ireduce_scatter", rc); }
    *req = i;
    return MOE_OK;
}

static int pipe_p2p(float *buf, size_t n, int stage, int tag, int *req, bool send) {
    *req = -1;
    if (!g.mpi || g.pp == 1) MOE_ERR("internal: point-to-point between stages without --pp");
    if (stage < 0 || stage >= g.pp || n > INT_MAX) MOE_ERR("internal: message of %zu floats to stage %d of %d", n, stage, g.pp);
    int i = req_new(&g.ms);
    if (i < 0) MOE_ERR("internal: too many exchanges in flight");
    int rc = send ? MPI_Isend(buf, (int)n, MPI_FLOAT, stage, tag, pipe_comm, &reqs[i].r)
                  : MPI_Irecv(buf, (int)n, MPI_FLOAT, stage, tag, pipe_comm, &reqs[i].r);
    if (rc != MPI_SUCCESS) { req_drop(i); return mpi_fail(send ? "MPI_Isend" : "MPI_Irecv", rc); }
    *req = i;
    return MOE_OK;
}
int dist_pipe_isend(const float *buf, size_t n, int stage, int tag, int *req) { return pipe_p2p((float *)buf, n, stage, tag, req, true); }
int dist_pipe_irecv(float *buf, size_t n, int stage, int tag, int *req) { return pipe_p2p(buf, n, stage, tag, req, false); }

int dist_sum_f32(float *buf, size_t n, DistGroup grp) { return sum(buf, n, MPI_FLOAT, MPI_SUM, grp); }
int dist_sum_f64(double *buf, int n, DistGroup grp) { return sum(buf, n, MPI_DOUBLE, MPI_SUM, grp); }
int dist_sum_long(long *buf, int n, DistGroup grp) { return sum(buf, n, MPI_LONG, MPI_SUM, grp); }
int dist_max_f64(double *buf, int n, DistGroup grp) { return sum(buf, n, MPI_DOUBLE, MPI_MAX, grp); }

int dist_gather_ep0(const float *send, size_t n, float *recv) {
    if (!g.mpi || g.size == 1) { if (recv != send) memcpy(recv, send, sizeof(float) * n); return MOE_OK; }
    double t0 = time_now();
    // EP group 0 is world ranks 0..ep-1; others take no part
    if (g.dp_rank == 0) {
        if (g.ep_rank == 0) {
            memcpy(recv, send, sizeof(float) * n);
            for (int r = 1; r < g.ep; r++)
                for (size_t off = 0; off < n;) {
                    int cnt = n - off > (1u << 30) ? 1 << 30 : (int)(n - off);
                    MPI_TRY(MPI_Recv(recv + (size_t)r * n + off, cnt, MPI_FLOAT, r, 7, MPI_COMM_WORLD, MPI_STATUS_IGNORE));
                    off += cnt;
                }
        } else {
            for (size_t off = 0; off < n;) {
                int cnt = n - off > (1u << 30) ? 1 << 30 : (int)(n - off);
                MPI_TRY(MPI_Send(send + off, cnt, MPI_FLOAT, 0, 7, MPI_COMM_WORLD));
                off += cnt;
            }
        }
    }
    g.ms += (time_now() - t0) * 1e3;
    return MOE_OK;
}

int dist_alltoallv_f32(const float *send, const int *scnt, const int *sdsp, float *recv, const int *rcnt,
                       const int *rdsp, DistGroup grp) {
    MPI_Comm c = g.mpi ? comm_of(grp) : MPI_COMM_NULL;
    int sz = 1;
    if (c != MPI_COMM_NULL) MPI_TRY(MPI_Comm_size(c, &sz));
    if (sz == 1) { if (scnt[0]) memcpy(recv + rdsp[0], send + sdsp[0], sizeof(float) * scnt[0]); return MOE_OK; }
    double t = time_now();
    if (MPI_Alltoallv(send, scnt, sdsp, MPI_FLOAT, recv, rcnt, rdsp, MPI_FLOAT, c) != MPI_SUCCESS)
        MOE_ERR("MPI_Alltoallv failed");
    g.ms += (time_now() - t) * 1e3;
    g.exposed_ms += (time_now() - t) * 1e3;
    return MOE_OK;
}

// counts and displacements of the stage's parts [off[r], off[r+1]) as MPI's ints (--zero 1
// shares a stage's blob over its ranks; without pipeline stages the stage is the world)
static int part_counts(const size_t *off, int *cnt, int *dsp) {
    if (off[g.ssize] > INT_MAX) MOE_ERR("--zero 1: %zu parameters exceed what one MPI call moves (%d)", off[g.ssize], INT_MAX);
    for (int r = 0; r < g.ssize; r++) { cnt[r] = (int)(off[r + 1] - off[r]); dsp[r] = (int)off[r]; }
    return MOE_OK;
}
int dist_allgather_f32(float *buf, const size_t *off) {
    if (!g.mpi || g.ssize == 1) return MOE_OK;
    int *cnt = MOE_NEW(int, g.ssize), *dsp = MOE_NEW(int, g.ssize), rc = part_counts(off, cnt, dsp);
    double t0 = time_now();
    if (rc == MOE_OK && MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf, cnt, dsp, MPI_FLOAT, comm_of(DIST_STAGE)) != MPI_SUCCESS)
        { moe_seterr("MPI_Allgatherv failed"); rc = MOE_FAIL; }
    g.ms += (time_now() - t0) * 1e3;
    g.exposed_ms += (time_now() - t0) * 1e3;
    moe_free(cnt); moe_free(dsp);
    return rc;
}
int dist_gather_f32(const float *part, const size_t *off, float *full) {
    if (!g.mpi || g.ssize == 1) { memcpy(full, part, sizeof(float) * off[1]); return MOE_OK; }
    int *cnt = MOE_NEW(int, g.ssize), *dsp = MOE_NEW(int, g.ssize), rc = part_counts(off, cnt, dsp);
    double t0 = time_now();
    if (rc == MOE_OK && MPI_Gatherv(part, cnt[g.srank], MPI_FLOAT, full, cnt, dsp, MPI_FLOAT, 0, comm_of(DIST_STAGE)) != MPI_SUCCESS)
        { moe_seterr("MPI_Gatherv failed"); rc = MOE_FAIL; }
    g.ms += (time_now() - t0) * 1e3;
    moe_free(cnt); moe_free(dsp);
    return rc;
}

int dist_bcast_int(int *v, int n) {
    if (g.mpi && g.size > 1) MPI_TRY(MPI_Bcast(v, n, MPI_INT, 0, MPI_COMM_WORLD));
    return MOE_OK;
}

void dist_abort(int code) {
    if (g.mpi && g.size > 1) MPI_Abort(MPI_COMM_WORLD, code);
}
