#include <math.h>
#include <string.h>
#include "../base/base.h"
#include "../kernels/simd.h"
#include "optim.h"

void opt_defaults(OptConfig *o) {
    o->lr = 1e-3f; o->min_lr = 0.0f; o->weight_decay = 0.0f;
    o->beta1 = 0.9f; o->beta2 = 0.95f; o->eps = 1e-8f; o->clip = 1.0f;
    o->warmup = 0; o->decay_steps = 0;
}

float lr_at(const OptConfig *o, long step) {
    if (o->warmup > 0 && step <= o->warmup) return o->lr * (float)step / o->warmup;
    if (o->decay_steps <= o->warmup) return o->lr;
    double p = (double)(step - o->warmup) / (o->decay_steps - o->warmup);
    if (p > 1) p = 1;
    return (float)(o->min_lr + 0.5 * (o->lr - o->min_lr) * (1 + cos(M_PI * p)));
}

void adamw_alloc_part(AdamW *a, size_t lo, size_t n) {
    MemCategory old = mem_category(MEM_OPTIM);
    a->m = MOE_NEW(float, n > 0 ? n : 1);
    a->v = MOE_NEW(float, n > 0 ? n : 1);
    a->t = 0;
    a->lo = lo;
    a->n = n;
    mem_category(old);
}
void adamw_alloc(AdamW *a, size_t n) { adamw_alloc_part(a, 0, n); }

void adamw_shard(AdamW *a, size_t lo, size_t n) {
    MemCategory old = mem_category(MEM_OPTIM);
    float *m = MOE_NEW(float, n > 0 ? n : 1), *v = MOE_NEW(float, n > 0 ? n : 1);
    memcpy(m, a->m + (lo - a->lo), sizeof(float) * n);
    memcpy(v, a->v + (lo - a->lo), sizeof(float) * n);
    moe_free(a->m); moe_free(a->v);
    a->m = m; a->v = v; a->lo = lo; a->n = n;
    mem_category(old);
}
void adamw_free(AdamW *a) { moe_free(a->m); moe_free(a->v); }

double grad_norm(const float *g, size_t n) {
    // chunks of 64K elements so that small tensors stay on one thread
    const long chunk = 1 << 16, nc = ((long)n + chunk - 1) / chunk;
    double ss = 0;
#pragma omp parallel for reduction(+ : ss) schedule(static) if (nc > 1)
    for (long c = 0; c < nc; c++) ss += vec_sumsq(g + c * chunk, c == nc - 1 ? (long)n - c * chunk : chunk);
    return sqrt(ss);
}

float grad_clip_scale(double norm, float max_norm) {
    // as torch.nn.utils.clip_grad_norm_: scale by max_norm / (norm + 1e-6) when above
    return max_norm > 0 && norm > max_norm ? (float)(max_norm / (norm + 1e-6)) : 1.0f;
}

// One pass over the blob: the clipping scale is applied on the fly, and
// p <- p (1 - lr wd) - lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps), the torch.optim.AdamW arithmetic.
// One parallel region for all tensors (no fork/join per small tensor).
void adamw_step(AdamW *a, const Model *m, const OptConfig *o, float lr, float gscale) {
    a->t++;
    const float b1 = o->beta1, b2 = o->beta2;
    const double bc1 = 1.0 - pow(b1, (double)a->t), bc2 = 1.0 - pow(b2, (double)a->t);
    const float step = (float)(lr / bc1), rbc2 = (float)(1.0 / sqrt(bc2));
    // each tensor (its part in the shard) in chunks of 16K elements, spread over the threads
    const long chunk = 1 << 14;
    const size_t lo = a->lo, hi = a->lo + a->n;
#pragma omp parallel
    for (int ti = 0; ti < m->n_tensors; ti++) {
        const ParamTensor *t = &m->tensors[ti];
        const size_t o0 = t->offset > lo ? t->offset : lo, o1 = t->offset + t->numel < hi ? t->offset + t->numel : hi;
        if (o0 >= o1) continue;
        const AdamWArgs args = {gscale, b1, b2, step, rbc2, o->eps, t->decay ? 1.0f - lr * o->weight_decay : 1.0f};
        const long n = (long)(o1 - o0), nc = (n + chunk - 1) / chunk;
#pragma omp for schedule(static) nowait
        for (long c = 0; c < nc; c++) {
            const size_t i = o0 + (size_t)c * chunk;
            vec_adamw(m->params + i, m->grads + i, a->m + (i - lo), a->v + (i - lo), c == nc - 1 ? n - c * chunk : chunk, &args);
        }
    }
}

void adamw_step_ref(AdamW *a, const Model *m, const OptConfig *o, float lr) {
    a->t++;
    for (int ti = 0; ti < m->n_tensors; ti++) {
        const ParamTensor *t = &m->tensors[ti];
        for (size_t i = 0; i < t->numel; i++) {
            size_t j = t->offset + i;
            double g = m->grads[j];
            a->m[j] = (float)(o->beta1 * a->m[j] + (1 - o->beta1) * g);
            a->v[j] = (float)(o->beta2 * a->v[j] + (1 - o->beta2) * g * g);
            double mh = a->m[j] / (1 - pow(o->beta1, a->t)), vh = a->v[j] / (1 - pow(o->beta2, a->t));
            double p = m->params[j];
            if (t->decay) p -= lr * o->weight_decay * p;
            m->params[j] = (float)(p - lr * mh / (sqrt(vh) + o->eps));
        }
    }
}
