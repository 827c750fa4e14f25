#include <math.h>
#include "../base/base.h"
#include "ops.h"

void rope_table_init(RopeTable *t, int max_pos, int hd, float theta, bool interleave) {
    t->max_pos = max_pos;
    t->interleave = interleave;
    t->half = hd / 2;
    t->cos = MOE_NEW(float, (size_t)max_pos * t->half);
    t->sin = MOE_NEW(float, (size_t)max_pos * t->half);
    for (int p = 0; p < max_pos; p++)
        for (int i = 0; i < t->half; i++) {
            double ang = p * pow((double)theta, -2.0 * i / hd);
            t->cos[(size_t)p * t->half + i] = (float)cos(ang);
            t->sin[(size_t)p * t->half + i] = (float)sin(ang);
        }
}
// YaRN (as the reference library computes it): each frequency between its extrapolated
// (unscaled) and interpolated (divided by factor) value along a ramp over the dimensions whose
// wavelength falls between beta_fast and beta_slow rotations of the original context; cos and
// sin scaled by the attention factor
void rope_table_init_yarn(RopeTable *t, int max_pos, int hd, float theta, bool interleave, float factor, int orig_max,
                          float beta_fast, float beta_slow, float attn_factor) {
    rope_table_init(t, max_pos, hd, theta, interleave);
    const double two_pi = 2 * 3.14159265358979323846;
#define CORR(rot) (hd * log(orig_max / ((rot) * two_pi)) / (2 * log((double)theta)))
    double lo = floor(CORR(beta_fast)), hi = ceil(CORR(beta_slow));
#undef CORR
    lo = fmax(lo, 0); hi = fmin(hi, hd - 1);
    if (lo == hi) hi += 0.001;
    for (int i = 0; i < t->half; i++) {
        const double pf = pow((double)theta, 2.0 * i / hd);
        const double ramp = fmin(fmax((i - lo) / (hi - lo), 0.0), 1.0);
        const double inv = (1.0 / (factor * pf)) * ramp + (1.0 / pf) * (1.0 - ramp);
        for (int p = 0; p < max_pos; p++) {
            t->cos[(size_t)p * t->half + i] = (float)(cos(p * inv) * attn_factor);
            t->sin[(size_t)p * t->half + i] = (float)(sin(p * inv) * attn_factor);
        }
    }
}
void rope_table_free(RopeTable *t) { moe_free(t->cos); moe_free(t->sin); }

// rotate each head's pairs (x_i, x_{i+half}), or (x_{2i}, x_{2i+1}) interleaved, by +angle
// (dir = 1) or -angle (dir = -1); head h's rotated part starts at h * stride + off of a row
static void rope_apply(float *x, const int *pos, const RopeTable *t, int N, int nh, int stride, int off, float dir) {
    const int half = t->half, step = t->interleave ? 2 : 1, gap = t->interleave ? 1 : half;
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *c = t->cos + (size_t)pos[n] * half, *s = t->sin + (size_t)pos[n] * half;
        for (int h = 0; h < nh; h++) {
            float *xh = x + ((size_t)n * nh + h) * stride + off;
            for (int i = 0; i < half; i++) {
                float *pa = xh + i * step, *pb = pa + gap;
                float a = *pa, b = *pb, si = dir * s[i];
                *pa = a * c[i] - b * si;
                *pb = b * c[i] + a * si;
            }
        }
    }
}
void rope_forward(float *x, const int *pos, const RopeTable *t, int N, int nh, int hd) {
    rope_apply(x, pos, t, N, nh, hd, 0, 1.0f);
}
void rope_backward(float *dx, const int *pos, const RopeTable *t, int N, int nh, int hd) {
    rope_apply(dx, pos, t, N, nh, hd, 0, -1.0f);
}
void rope_forward_part(float *x, const int *pos, const RopeTable *t, int N, int nh, int stride, int off) {
    rope_apply(x, pos, t, N, nh, stride, off, 1.0f);
}
void rope_backward_part(float *dx, const int *pos, const RopeTable *t, int N, int nh, int stride, int off) {
    rope_apply(dx, pos, t, N, nh, stride, off, -1.0f);
}

void rope_forward_ref(float *x, const int *pos, int N, int nh, int hd, float theta, bool interleave) {
    // the textbook form: x * cos + rotate_half(x) * sin, rotate_half(x) = [-x2, x1]; the
    // interleaved layout as the reference library computes it: de-interleave, rotate, back
    int half = hd / 2;
    float tmp[1024], de[1024];
    for (int n = 0; n < N; n++)
        for (int h = 0; h < nh; h++) {
            float *xh = x + ((size_t)n * nh + h) * hd;
            if (interleave) {
                for (int i = 0; i < half; i++) { de[i] = xh[2 * i]; de[half + i] = xh[2 * i + 1]; }
                for (int i = 0; i < hd; i++) xh[i] = de[i];
            }
            for (int i = 0; i < hd; i++) {
                int fi = i % half;
                double ang = pos[n] * pow((double)theta, -2.0 * fi / hd);
                float rot = i < half ? -xh[i + half] : xh[i - half];
                tmp[i] = (float)(xh[i] * cos(ang) + rot * sin(ang));
            }
            if (interleave) for (int i = 0; i < half; i++) { xh[2 * i] = tmp[i]; xh[2 * i + 1] = tmp[half + i]; }
            else for (int i = 0; i < hd; i++) xh[i] = tmp[i];
        }
}
