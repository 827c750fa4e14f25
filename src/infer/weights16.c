// Answering from a BF16 checkpoint (models/solver ships one): its weights are f32 in the
// blob but every value is a bf16 one, so a bf16 copy holds them exactly in half the bytes.
// Decoding multiplies a few rows by every weight it uses, so its speed is the memory's; the
// linear layers over a few rows read the copy (kernels_weight_shadow), the products the same.
#include <string.h>
#include "../base/base.h"
#include "../kernels/gemm.h"
#include "../kernels/simd.h"
#include "infer.h"

static uint16_t *w16;

bool infer_weights_bf16(const Model *m) {
    infer_weights_bf16_off();
    const size_t n = m->n_params, chunk = 1 << 16;
    uint16_t *w = MOE_NEW(uint16_t, n);
    float *back = MOE_NEW(float, chunk);
    for (size_t i = 0; i < n; i += chunk) {   // the copy, and whether it is exact
        const long k = (long)(n - i < chunk ? n - i : chunk);
        vec_to_bf16(w + i, m->params + i, k);
        vec_from_bf16(back, w + i, k);
        if (memcmp(back, m->params + i, sizeof(float) * k)) { moe_free(w); moe_free(back); return false; }
    }
    moe_free(back);
    w16 = w;
    kernels_weight_shadow(m->params, n, w16);
    return true;
}

void infer_weights_bf16_off(void) {
    kernels_weight_shadow(NULL, 0, NULL);
    moe_free(w16);
    w16 = NULL;
}
