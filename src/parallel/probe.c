// Timing the collectives for moe calibrate: a sum over every rank of the job (the ring
// all-reduce moe simulate prices), as many times as fit in a budget, the slowest rank's time.
// The sum is started and then waited for, the calls moe train's gradient buckets make (Open
// MPI's non-blocking all-reduce is another algorithm than its blocking one).
#include <math.h>
#include "../base/base.h"
#include "../dist/dist.h"
#include "parallel.h"

int par_time_allreduce(size_t n_floats, double seconds, double *best) {
    float *buf = MOE_NEW(float, n_floats ? n_floats : 1);
    for (size_t i = 0; i < n_floats; i++) buf[i] = 1e-3f * (float)(i % 7);
    int rc = dist_sum_f32(buf, n_floats, DIST_WORLD);   // (warm-up: connections, buffers)
    double b = INFINITY, t_end = time_now() + seconds;
    for (int k = 0; rc == MOE_OK; k++) {
        double go = 0;
        rc = dist_sum_f64(&go, 1, DIST_WORLD);           // (start together)
        const double t0 = time_now();
        int req = -1;
        if (rc == MOE_OK) rc = dist_sum_f32_start(buf, n_floats, DIST_WORLD, &req);
        if (rc == MOE_OK) rc = dist_wait(req);
        double dt = time_now() - t0;
        if (rc == MOE_OK) rc = dist_max_f64(&dt, 1, DIST_WORLD);
        if (dt < b) b = dt;
        // every rank must agree on stopping: rank 0's clock decides
        double stop = k >= 2 && time_now() > t_end ? 1 : 0;
        if (rc == MOE_OK) rc = dist_max_f64(&stop, 1, DIST_WORLD);
        if (stop > 0 || k > 100000) break;
    }
    moe_free(buf);
    *best = b;
    return rc;
}
