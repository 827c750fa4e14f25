#include "dist.h"
#include <mpi.h>
#include <stdlib.h>
#include <limits.h>
#include <string.h>
#include <unistd.h>
#include "../base/base.h"
#include "dist_mpi.h"
#include "hier.h"

static DistInfo g = {.rank = 0, .size = 1, .ep = 1, .dp = 1, .pp = 1, .ssize = 1};
static MPI_Comm ep_comm = MPI_COMM_NULL, rep_comm = MPI_COMM_NULL;
static MPI_Comm stage_comm = MPI_COMM_NULL, pipe_comm = MPI_COMM_NULL, embed_comm = MPI_COMM_NULL, model_comm = MPI_COMM_NULL;

static bool under_launcher(void) {
    return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMI_SIZE") || getenv("PMIX_RANK") || getenv("SLURM_STEP_ID");
}

DistInfo *dist_info(void) { return &g; }

void mpi_error_text(char *out, size_t cap, const char *call, int code) {
    char why[MPI_MAX_ERROR_STRING];
    int n = 0;
    if (MPI_Error_string(code, why, &n) != MPI_SUCCESS) snprintf(why, sizeof why, "error code %d", code);
    snprintf(out, cap, "%.*s failed: %s", (int)strcspn(call, "("), call, why);
}
int mpi_fail(const char *call, int code) {
    char msg[512];
    mpi_error_text(msg, sizeof msg, call, code);
    MOE_ERR("%s", msg);
}

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
    hier_finalize();
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
// A request whose MPI_Test failed counts as done; its wait returns the error (err, err_call).
static struct { MPI_Request r; Hier *h; double t0, t1; bool used, done; double *ms; int err; const char *err_call; } reqs[MAX_REQ];
static int n_active, n_hi;   // requests in flight; entries [0, n_hi) may be in use

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
        MOE_TRY(hier_start(send, scnt, recv, width, &h));
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
    MOE_TRY(hier_setup(ep_comm, &g.hosts));
    // automatic: hierarchical when the EP group spans hosts and some host has several of
    // its ranks (with one rank a host the two are the same exchange)
    g.hier = mode == DIST_A2A_HIER || (mode == DIST_A2A_AUTO && g.hosts > 1 && g.hosts < ep);
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
