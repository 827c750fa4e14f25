// The EP group's hierarchical all-to-all (hier.h)
#include "hier.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../base/base.h"
#include "dist_mpi.h"

// Ranks of the EP group on one host (MPI_COMM_TYPE_SHARED) hand their rows to the host's
// leader (its lowest rank); the leaders exchange one message per pair of hosts; each leader
// hands every rank of its host what came for it. Point-to-point throughout (tags carry a
// sequence number), so that several exchanges may be in flight in any order.
static MPI_Comm comm = MPI_COMM_NULL, node_comm = MPI_COMM_NULL;   // the EP group, its ranks on this host
static int P, me, n_hosts, my_host, node_rank, node_size;   // P ranks, this one's place, hosts
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

const char *hier_error(const Hier *h) { return h->err[0] ? h->err : NULL; }
// records the first failed MPI call of the exchange
#define HIER_TRY(h, call) \
    do { int rc_ = (call); if (rc_ != MPI_SUCCESS) { mpi_error_text((h)->err, sizeof (h)->err, #call, rc_); goto hier_fail; } } while (0)

void hier_free(Hier *h) {
    if (!h) return;
    free(h->G); free(h->S2); free(h->R2); free(h->S3);
    moe_free(h->C); moe_free(h->goff); moe_free(h->rq);
    moe_free(h);
}

void hier_finalize(void) {
    if (node_comm != MPI_COMM_NULL) MPI_Comm_free(&node_comm);
}

int hier_setup(MPI_Comm ep_comm, int *hosts) {
    hier_finalize();
    comm = ep_comm;
    MPI_TRY(MPI_Comm_size(comm, &P));
    MPI_TRY(MPI_Comm_rank(comm, &me));
    MPI_TRY(MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, me, MPI_INFO_NULL, &node_comm));
    MPI_TRY(MPI_Comm_rank(node_comm, &node_rank));
    MPI_TRY(MPI_Comm_size(node_comm, &node_size));
    int leader = me;
    MPI_TRY(MPI_Bcast(&leader, 1, MPI_INT, 0, node_comm));   // node rank 0 is the lowest EP rank there
    moe_free(host_of); moe_free(leader_of); moe_free(host_first); moe_free(host_members);
    leader_of = MOE_NEW(int, P); host_of = MOE_NEW(int, P);
    host_first = MOE_NEW(int, P + 1); host_members = MOE_NEW(int, P);
    MPI_TRY(MPI_Allgather(&leader, 1, MPI_INT, leader_of, 1, MPI_INT, comm));
    n_hosts = 0;
    for (int r = 0; r < P; r++) if (leader_of[r] == r) host_of[r] = n_hosts++;   // hosts by leader rank
    for (int r = 0; r < P; r++) host_of[r] = host_of[leader_of[r]];
    host_first[0] = 0;
    for (int hh = 0, k = 0; hh < n_hosts; hh++) {
        for (int r = 0; r < P; r++) if (host_of[r] == hh) host_members[k++] = r;
        host_first[hh + 1] = k;
    }
    my_host = host_of[me];
    *hosts = n_hosts;
    return MOE_OK;
}

static int leader_rank(int hh) { return host_members[host_first[hh]]; }

int hier_start(const float *send, const int *scnt, float *recv, int width, Hier **out) {
    Hier *h = MOE_NEW(Hier, 1);
    h->W = (size_t)width; h->send = send; h->recv = recv;
    h->tag = 100 + 3 * (int)(hier_seq++ % 10000);   // tag, tag + 1, tag + 2: its three phases
    h->C = MOE_NEW(int, P * P);
    HIER_TRY(h, MPI_Allgather(scnt, P, MPI_INT, h->C, P, MPI_INT, comm));   // C[s*P + d]
    h->rq = MOE_NEW(MPI_Request, 2 * P + 4);
    size_t mine = 0, in = 0;
    for (int d = 0; d < P; d++) mine += h->C[me * P + d];
    for (int s2 = 0; s2 < P; s2++) in += h->C[s2 * P + me];
    if (node_rank != 0) {   // hand everything to the leader; what is ours comes back from it
        int ld = leader_rank(my_host);
        HIER_TRY(h, MPI_Isend(send, (int)(mine * h->W), MPI_FLOAT, ld, h->tag, comm, &h->rq[h->nrq++]));
        HIER_TRY(h, MPI_Irecv(recv, (int)(in * h->W), MPI_FLOAT, ld, h->tag + 1, comm, &h->rq[h->nrq++]));
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
                                  h->tag, comm, &h->rq[h->nrq++]));
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
    size_t o = h->goff[j];
    for (int d2 = 0; d2 < d; d2++) o += h->C[s * P + d2];
    return o;
}

// Posts the next phase's messages. A failure (out of memory, an MPI call) leaves h->err
// set, and hier_step then ends the exchange.
static void hier_next(Hier *h) {
    const int H = n_hosts, mh = my_host;
    const size_t W = h->W;
    const int *hm = host_members, *hf = host_first;
    size_t *soff = NULL, *roff = NULL, *off = NULL, *dst = NULL;   // this phase's scratch
    h->nrq = 0;
    if (h->phase == 1) {
        // phase 2: to every host, for each of its ranks d, for each local source s: (s -> d)
        size_t tot = 0;
        for (int hh = 0; hh < H; hh++)
            for (int a = hf[hh]; a < hf[hh + 1]; a++)
                for (int b = hf[mh]; b < hf[mh + 1]; b++) tot += h->C[hm[b] * P + hm[a]];
        h->S2 = hier_rows(h, tot);
        if (!h->S2) goto hier_fail;
        soff = MOE_NEW(size_t, H + 1);
        size_t o = 0;
        for (int hh = 0; hh < H; hh++) {
            soff[hh] = o;
            for (int a = hf[hh]; a < hf[hh + 1]; a++)
                for (int b = hf[mh]; b < hf[mh + 1]; b++) {
                    int s = hm[b], d = hm[a], j = b - hf[mh];
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
            for (int a = hf[mh]; a < hf[mh + 1]; a++)
                for (int b = hf[hh]; b < hf[hh + 1]; b++) rtot += h->C[hm[b] * P + hm[a]];
        }
        roff[H] = rtot;
        h->R2 = hier_rows(h, rtot);
        if (!h->R2) goto hier_fail;
        moe_free(h->rq);
        h->rq = MOE_NEW(MPI_Request, 2 * H + 2);
        for (int hh = 0; hh < H; hh++) {
            if (hh == mh) {
                memcpy(h->R2 + roff[hh] * W, h->S2 + soff[hh] * W, sizeof(float) * (soff[hh + 1] - soff[hh]) * W);
                continue;
            }
            HIER_TRY(h, MPI_Irecv(h->R2 + roff[hh] * W, (int)((roff[hh + 1] - roff[hh]) * W), MPI_FLOAT, leader_rank(hh),
                                  h->tag + 2, comm, &h->rq[h->nrq++]));
            HIER_TRY(h, MPI_Isend(h->S2 + soff[hh] * W, (int)((soff[hh + 1] - soff[hh]) * W), MPI_FLOAT, leader_rank(hh),
                                  h->tag + 2, comm, &h->rq[h->nrq++]));
        }
        h->phase = 2;
    } else if (h->phase == 2) {
        // phase 3: each local rank d gets (s -> d) for every source s, in EP rank order
        size_t o = 0, tot = 0;
        for (int a = hf[mh]; a < hf[mh + 1]; a++)
            for (int s = 0; s < P; s++) tot += h->C[s * P + hm[a]];
        h->S3 = hier_rows(h, tot);
        if (!h->S3) goto hier_fail;
        off = MOE_NEW(size_t, P);   // where (s -> d) for the current d sits in R2
        dst = MOE_NEW(size_t, hf[mh + 1] - hf[mh] + 1);
        size_t so = 0;
        for (int a = hf[mh]; a < hf[mh + 1]; a++) {
            int d = hm[a];
            // R2 order: host hh, our rank a', its source b: locate (s -> d)
            o = 0;
            for (int hh = 0; hh < H; hh++)
                for (int a2 = hf[mh]; a2 < hf[mh + 1]; a2++)
                    for (int b = hf[hh]; b < hf[hh + 1]; b++) {
                        int s = hm[b];
                        if (a2 == a) off[s] = o;
                        o += h->C[s * P + hm[a2]];
                    }
            dst[a - hf[mh]] = so;
            for (int s = 0; s < P; s++) {
                size_t n = h->C[s * P + d];
                memcpy(h->S3 + so * W, h->R2 + off[s] * W, sizeof(float) * n * W);
                so += n;
            }
        }
        dst[hf[mh + 1] - hf[mh]] = so;
        moe_free(h->rq);
        h->rq = MOE_NEW(MPI_Request, hf[mh + 1] - hf[mh] + 1);
        memcpy(h->recv, h->S3, sizeof(float) * dst[1] * W);   // the leader is member 0
        for (int a = hf[mh] + 1; a < hf[mh + 1]; a++) {
            int j = a - hf[mh];
            HIER_TRY(h, MPI_Isend(h->S3 + dst[j] * W, (int)((dst[j + 1] - dst[j]) * W), MPI_FLOAT, hm[a], h->tag + 1,
                                  comm, &h->rq[h->nrq++]));
        }
        h->phase = 3;
    }
hier_fail:   // reached on success too: the scratch goes either way
    moe_free(soff); moe_free(roff); moe_free(off); moe_free(dst);
}

bool hier_step(Hier *h, bool block) {
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

