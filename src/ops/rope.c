#include <math.h>
#include "../base/base.h"
#include "ops.h"

void rope_table_init(RopeTable *t, int max_pos, int hd, float theta) {
    t->max_pos = max_pos;
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
void rope_table_free(RopeTable *t) { moe_free(t->cos); moe_free(t->sin); }

// rotate each head's pairs (x_i, x_{i+half}) by +angle (dir = 1) or -angle (dir = -1)
static void rope_apply(float *x, const int *pos, const RopeTable *t, int N, int nh, int hd, float dir) {
    int half = hd / 2;
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *c = t->cos + (size_t)pos[n] * half, *s = t->sin + (size_t)pos[n] * half;
        for (int h = 0; h < nh; h++) {
            float *xh = x + ((size_t)n * nh + h) * hd;
            for (int i = 0; i < half; i++) {
                float a = xh[i], b = xh[i + half], si = dir * s[i];
                xh[i] = a * c[i] - b * si;
                xh[i + half] = b * c[i] + a * si;
            }
        }
    }
}
void rope_forward(float *x, const int *pos, const RopeTable *t, int N, int nh, int hd) {
    rope_apply(x, pos, t, N, nh, hd, 1.0f);
}
void rope_backward(float *dx, const int *pos, const RopeTable *t, int N, int nh, int hd) {
    rope_apply(dx, pos, t, N, nh, hd, -1.0f);
}

void rope_forward_ref(float *x, const int *pos, int N, int nh, int hd, float theta) {
    // the textbook form: x * cos + rotate_half(x) * sin, rotate_half(x) = [-x2, x1]
    int half = hd / 2;
    float tmp[1024];
    for (int n = 0; n < N; n++)
        for (int h = 0; h < nh; h++) {
            float *xh = x + ((size_t)n * nh + h) * hd;
            for (int i = 0; i < hd; i++) {
                int fi = i % half;
                double ang = pos[n] * pow((double)theta, -2.0 * fi / hd);
                float rot = i < half ? -xh[i + half] : xh[i - half];
                tmp[i] = (float)(xh[i] * cos(ang) + rot * sin(ang));
            }
            for (int i = 0; i < hd; i++) xh[i] = tmp[i];
        }
}
