#include "dist.h"
#include <mpi.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "../base/base.h"

static DistInfo g = {.rank = 0, .size = 1, .ep = 1, .dp = 1};
static MPI_Comm ep_comm = MPI_COMM_NULL, rep_comm = MPI_COMM_NULL;

static bool under_launcher(void) {
    return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMI_SIZE") || getenv("PMIX_RANK") || getenv("SLURM_STEP_ID");
}

DistInfo *dist_info(void) { return &g; }

int dist_init(int *argc, char ***argv) {
    if (!under_launcher()) return MOE_OK;
    int provided;
    if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) MOE_ERR("MPI_Init failed");
    g.mpi = true;
    MPI_Comm_rank(MPI_COMM_WORLD, &g.rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g.size);
    g.dp = g.size;
    g.dp_rank = g.rank;
    return MOE_OK;
}

void dist_finalize(void) {
    if (!g.mpi) return;
    if (ep_comm != MPI_COMM_NULL) MPI_Comm_free(&ep_comm);
    if (rep_comm != MPI_COMM_NULL) MPI_Comm_free(&rep_comm);
    MPI_Finalize();
}

static MPI_Comm comm_of(DistGroup grp) {
    return grp == DIST_EP ? ep_comm : grp == DIST_REPLICAS ? rep_comm : MPI_COMM_WORLD;
}

// ---------------------------------------------------------------- requests in flight
// A small table of non-blocking operations. Each remembers when it started and when it was
// seen complete (by a wait, or by the progress hook that compute loops call), so that
// comm_ms is the time exchanges were in flight and exposed_ms the time compute waited.
#define MAX_REQ 256
static struct { MPI_Request r; double t0, t1; bool used, done; double *ms; } reqs[MAX_REQ];
static int n_active;

static void progress(void) {
    if (n_active == 0) return;
    for (int i = 0; i < MAX_REQ; i++) {
        if (!reqs[i].used || reqs[i].done) continue;
        int flag = 0;
        MPI_Test(&reqs[i].r, &flag, MPI_STATUS_IGNORE);
        if (flag) { reqs[i].done = true; reqs[i].t1 = time_now(); n_active--; }
    }
    if (n_active == 0) moe_progress_hook = NULL;
}

static int req_new(double *ms) {
    for (int i = 0; i < MAX_REQ; i++)
        if (!reqs[i].used) {
            reqs[i].used = true; reqs[i].done = false; reqs[i].t0 = time_now(); reqs[i].ms = ms;
            n_active++;
            moe_progress_hook = progress;
            return i;
        }
    return -1;
}

// completes request i; the blocked time goes to *exposed
static int req_wait(int i, double *exposed) {
    if (i < 0 || i >= MAX_REQ || !reqs[i].used) MOE_ERR("internal: no exchange %d in flight", i);
    if (!reqs[i].done) {
        double t = time_now();
        if (MPI_Wait(&reqs[i].r, MPI_STATUS_IGNORE) != MPI_SUCCESS) MOE_ERR("MPI_Wait failed");
        reqs[i].t1 = time_now();
        *exposed += (reqs[i].t1 - t) * 1e3;
        reqs[i].done = true;
        if (--n_active == 0) moe_progress_hook = NULL;
    }
    *reqs[i].ms += (reqs[i].t1 - reqs[i].t0) * 1e3;
    reqs[i].used = false;
    return MOE_OK;
}

// ---------------------------------------------------------------- MoeComm over the EP group
static int ep_counts(MoeComm *c, const int *send, int *recv, int n) {
    double t = time_now();
    if (MPI_Alltoall(send, n, MPI_INT, recv, n, MPI_INT, ep_comm) != MPI_SUCCESS) MOE_ERR("MPI_Alltoall failed");
    double ms = (time_now() - t) * 1e3;
    c->ms += ms; c->exposed_ms += ms;
    return MOE_OK;
}
static int ep_start(MoeComm *c, const float *send, const int *scnt, const int *sdsp, float *recv, const int *rcnt,
                    const int *rdsp, int width, int *req) {
    MPI_Datatype row;
    MPI_Type_contiguous(width, MPI_FLOAT, &row);
    MPI_Type_commit(&row);
    int i = req_new(&c->ms);
    if (i < 0) { MPI_Type_free(&row); MOE_ERR("internal: too many exchanges in flight"); }
    int rc = MPI_Ialltoallv(send, scnt, sdsp, row, recv, rcnt, rdsp, row, ep_comm, &reqs[i].r);
    MPI_Type_free(&row);   // freed once the exchange no longer needs it
    if (rc != MPI_SUCCESS) MOE_ERR("MPI_Ialltoallv failed");
    *req = i;
    return MOE_OK;
}
static int ep_wait(MoeComm *c, int req) { return req_wait(req, &c->exposed_ms); }

int dist_setup(int ep) {
    if (ep <= 0 || g.size % ep) MOE_ERR("--ep %d must divide the number of ranks %d", ep, g.size);
    g.ep = ep; g.ep_rank = g.rank % ep;
    g.dp = g.size / ep; g.dp_rank = g.rank / ep;
    memset(&g.moe, 0, sizeof g.moe);
    g.moe.rank = g.ep_rank; g.moe.size = ep;
    g.moe.counts = ep_counts; g.moe.start = ep_start; g.moe.wait = ep_wait;
    if (!g.mpi) return MOE_OK;
    if (ep_comm != MPI_COMM_NULL) MPI_Comm_free(&ep_comm);
    if (rep_comm != MPI_COMM_NULL) MPI_Comm_free(&rep_comm);
    MPI_Comm_split(MPI_COMM_WORLD, g.dp_rank, g.ep_rank, &ep_comm);
    MPI_Comm_split(MPI_COMM_WORLD, g.ep_rank, g.dp_rank, &rep_comm);
    return MOE_OK;
}

bool dist_multi_host(void) {
    if (!g.mpi || g.size == 1) return false;
    MPI_Comm node;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, g.rank, MPI_INFO_NULL, &node);
    int n;
    MPI_Comm_size(node, &n);
    MPI_Comm_free(&node);
    int all_local = n == g.size, every;
    MPI_Allreduce(&all_local, &every, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    return !every;
}

static int sum(void *buf, size_t n, MPI_Datatype t, MPI_Op op, DistGroup grp) {
    if (!g.mpi) return MOE_OK;
    MPI_Comm c = comm_of(grp);
    if (c == MPI_COMM_NULL) return MOE_OK;
    int sz;
    MPI_Comm_size(c, &sz);
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
    int sz;
    MPI_Comm_size(c, &sz);
    if (sz == 1 || n == 0) return MOE_OK;
    if (n > (1u << 30)) return dist_sum_f32(buf, n, grp);   // one blocking call per GB-sized piece
    int i = req_new(&g.ms);
    if (i < 0) MOE_ERR("internal: too many reductions in flight");
    if (MPI_Iallreduce(MPI_IN_PLACE, buf, (int)n, MPI_FLOAT, MPI_SUM, c, &reqs[i].r) != MPI_SUCCESS) MOE_ERR("MPI_Iallreduce failed");
    *req = i;
    return MOE_OK;
}
int dist_wait(int req) { return req < 0 ? MOE_OK : req_wait(req, &g.exposed_ms); }

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
                    MPI_Recv(recv + (size_t)r * n + off, cnt, MPI_FLOAT, r, 7, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
                    off += cnt;
                }
        } else {
            for (size_t off = 0; off < n;) {
                int cnt = n - off > (1u << 30) ? 1 << 30 : (int)(n - off);
                MPI_Send(send + off, cnt, MPI_FLOAT, 0, 7, MPI_COMM_WORLD);
                off += cnt;
            }
        }
    }
    g.ms += (time_now() - t0) * 1e3;
    return MOE_OK;
}

int dist_bcast_int(int *v, int n) {
    if (g.mpi && g.size > 1) MPI_Bcast(v, n, MPI_INT, 0, MPI_COMM_WORLD);
    return MOE_OK;
}

void dist_barrier(void) {
    if (g.mpi && g.size > 1) MPI_Barrier(MPI_COMM_WORLD);
}

void dist_abort(int code) {
    if (g.mpi && g.size > 1) MPI_Abort(MPI_COMM_WORLD, code);
}
