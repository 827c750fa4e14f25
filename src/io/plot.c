#include "plot.h"
#include <cjson/cJSON.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../base/base.h"
#include "../base/fileio.h"

// ---------------------------------------------------------------- the log

void runlog_free(RunLog *r) {
    moe_free(r->step); moe_free(r->loss); moe_free(r->ce); moe_free(r->tps); moe_free(r->eval); moe_free(r->is);
    moe_free(r->rank_load); moe_free(r->load);
    memset(r, 0, sizeof *r);
}

static double num(const cJSON *o, const char *k, double dflt) {
    const cJSON *v = cJSON_GetObjectItem(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : dflt;
}

int runlog_read(const char *path, RunLog *r) {
    memset(r, 0, sizeof *r);
    size_t len;
    char *text = file_read_all(path, &len);
    if (!text) MOE_ERR("%s: cannot open (no log.jsonl in the run directory?)", path);
    int cap = 0, line = 0, rc = MOE_OK;
    r->L = r->E = -1;
    for (char *p = text; p < text + len && rc == MOE_OK;) {
        char *nl = memchr(p, '\n', text + len - p);
        if (!nl) break;   // a torn last line (the run was killed while writing it)
        *nl = 0;
        line++;
        char *q = p;
        p = nl + 1;
        while (*q == ' ' || *q == '\t' || *q == '\r') q++;
        if (!*q) continue;
        cJSON *o = cJSON_Parse(q);
        if (!o || !cJSON_IsObject(o)) { moe_seterr("%s:%d: not a JSON object", path, line); rc = MOE_FAIL; cJSON_Delete(o); break; }
        const cJSON *st = cJSON_GetObjectItem(o, "step"), *lo = cJSON_GetObjectItem(o, "loss");
        if (!cJSON_IsNumber(st) || !cJSON_IsNumber(lo)) {
            moe_seterr("%s:%d: a log line needs numeric \"step\" and \"loss\"", path, line);
            rc = MOE_FAIL; cJSON_Delete(o); break;
        }
        const cJSON *el = cJSON_GetObjectItem(o, "expert_load");
        int L = cJSON_IsArray(el) ? cJSON_GetArraySize(el) : 0;
        int E = L > 0 && cJSON_IsArray(cJSON_GetArrayItem(el, 0)) ? cJSON_GetArraySize(cJSON_GetArrayItem(el, 0)) : 0;
        if (r->L < 0) { r->L = L; r->E = E; }
        else if (L != r->L || E != r->E) {
            moe_seterr("%s:%d: expert_load is %d x %d here but %d x %d before", path, line, L, E, r->L, r->E);
            rc = MOE_FAIL; cJSON_Delete(o); break;
        }
        if (r->n == cap) {
            cap = cap ? 2 * cap : 256;
            r->step = moe_realloc(r->step, sizeof(long) * cap);
            r->loss = moe_realloc(r->loss, sizeof(double) * cap); r->ce = moe_realloc(r->ce, sizeof(double) * cap);
            r->tps = moe_realloc(r->tps, sizeof(double) * cap); r->eval = moe_realloc(r->eval, sizeof(double) * cap);
            r->is = moe_realloc(r->is, sizeof(double) * cap * (L > 0 ? L : 1));
            r->rank_load = moe_realloc(r->rank_load, sizeof(double) * cap * (L > 0 ? L : 1));
            r->load = moe_realloc(r->load, sizeof(long) * cap * (L * E > 0 ? L * E : 1));
        }
        const int i = r->n++;
        r->step[i] = (long)st->valuedouble;
        r->loss[i] = lo->valuedouble;
        r->ce[i] = num(o, "ce", NAN);
        r->tps[i] = num(o, "tokens_per_s", NAN);
        r->eval[i] = num(o, "eval_loss", NAN);
        if (!isnan(r->eval[i])) r->eval_points++;
        const cJSON *is = cJSON_GetObjectItem(o, "IS"), *rl = cJSON_GetObjectItem(o, "rank_load");
        if (cJSON_IsArray(rl)) r->rank_points++;
        for (int l = 0; l < L; l++) {
            const cJSON *v = cJSON_IsArray(is) ? cJSON_GetArrayItem(is, l) : NULL;
            r->is[(size_t)i * L + l] = cJSON_IsNumber(v) ? v->valuedouble : NAN;
            v = cJSON_IsArray(rl) ? cJSON_GetArrayItem(rl, l) : NULL;
            r->rank_load[(size_t)i * L + l] = cJSON_IsNumber(v) ? v->valuedouble : NAN;
            const cJSON *row = cJSON_GetArrayItem(el, l);
            if (!cJSON_IsArray(row) || cJSON_GetArraySize(row) != E) {
                moe_seterr("%s:%d: expert_load row %d does not have %d entries", path, line, l, E);
                rc = MOE_FAIL;
                break;
            }
            for (int e = 0; e < E; e++) {
                const cJSON *v = cJSON_GetArrayItem(row, e);
                r->load[((size_t)i * L + l) * E + e] = cJSON_IsNumber(v) ? (long)v->valuedouble : 0;
            }
        }
        cJSON_Delete(o);
    }
    free(text);
    if (rc == MOE_OK && r->n == 0) { moe_seterr("%s: no complete log lines", path); rc = MOE_FAIL; }
    if (r->L < 0) r->L = r->E = 0;
    if (rc) runlog_free(r);
    return rc;
}

// ---------------------------------------------------------------- PNG (stored deflate) + base64

static uint32_t crc_table[256];
static void crc_init(void) {
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[n] = c;
    }
}
static uint32_t crc(uint32_t c, const unsigned char *b, size_t n) {
    c ^= 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) c = crc_table[(c ^ b[i]) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

typedef struct { unsigned char *b; size_t n, cap; } Buf;   // b: moe_alloc'd (moe_free)
static void put(Buf *o, const void *p, size_t n) {
    if (o->n + n > o->cap) { o->cap = (o->n + n) * 2 + 64; o->b = moe_realloc(o->b, o->cap); }
    if (n) memcpy(o->b + o->n, p, n);   // the IEND chunk has no data (p NULL)
    o->n += n;
}
static void put32(Buf *o, uint32_t v) { unsigned char b[4] = {v >> 24, v >> 16, v >> 8, v}; put(o, b, 4); }
static void chunk(Buf *o, const char *type, const unsigned char *data, size_t n) {
    put32(o, (uint32_t)n);
    size_t at = o->n;
    put(o, type, 4);
    put(o, data, n);
    put32(o, crc(0, o->b + at, n + 4));
}

// rgb [h][w][3] -> a PNG file in memory
static Buf png_rgb(const unsigned char *rgb, int w, int h) {
    static int ready;
    if (!ready) { crc_init(); ready = 1; }
    Buf o = {0}, z = {0};
    put(&o, "\x89PNG\r\n\x1a\n", 8);
    unsigned char ihdr[13] = {w >> 24, w >> 16, w >> 8, w, h >> 24, h >> 16, h >> 8, h, 8, 2, 0, 0, 0};
    chunk(&o, "IHDR", ihdr, 13);
    // raw scanlines (filter 0), then a zlib stream of stored blocks
    size_t raw_n = (size_t)h * (1 + 3 * (size_t)w);
    unsigned char *raw = MOE_NEW(unsigned char, raw_n);
    for (int y = 0; y < h; y++) {
        raw[(size_t)y * (1 + 3 * w)] = 0;
        memcpy(raw + (size_t)y * (1 + 3 * w) + 1, rgb + (size_t)y * 3 * w, 3 * (size_t)w);
    }
    put(&z, "\x78\x01", 2);
    for (size_t off = 0; off < raw_n || raw_n == 0;) {
        size_t n = raw_n - off > 65535 ? 65535 : raw_n - off;
        unsigned char hd[5] = {off + n == raw_n, n & 0xFF, n >> 8, ~n & 0xFF, (~n >> 8) & 0xFF};
        put(&z, hd, 5);
        put(&z, raw + off, n);
        off += n;
        if (raw_n == 0) break;
    }
    uint32_t a = 1, b = 0;
    for (size_t i = 0; i < raw_n; i++) { a = (a + raw[i]) % 65521; b = (b + a) % 65521; }
    put32(&z, (b << 16) | a);
    chunk(&o, "IDAT", z.b, z.n);
    chunk(&o, "IEND", NULL, 0);
    moe_free(raw); moe_free(z.b);
    return o;
}

static void base64(FILE *f, const unsigned char *b, size_t n) {
    static const char T[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)b[i] << 16 | (i + 1 < n ? (uint32_t)b[i + 1] << 8 : 0) | (i + 2 < n ? b[i + 2] : 0);
        fputc(T[v >> 18 & 63], f);
        fputc(T[v >> 12 & 63], f);
        fputc(i + 1 < n ? T[v >> 6 & 63] : '=', f);
        fputc(i + 2 < n ? T[v & 63] : '=', f);
    }
}

// ---------------------------------------------------------------- drawing

#define W 960          // SVG width
#define ML 70          // left margin of the plot areas
#define MR 30
#define PW (W - ML - MR)

static void xml_text(FILE *f, const char *s) {
    for (; *s; s++) {
        if (*s == '<') fputs("&lt;", f);
        else if (*s == '>') fputs("&gt;", f);
        else if (*s == '&') fputs("&amp;", f);
        else fputc(*s, f);
    }
}

// "nice" tick step for a span
static double tick_step(double span, int want) {
    double raw = span / want, p = pow(10, floor(log10(raw))), m = raw / p;
    return (m < 1.5 ? 1 : m < 3 ? 2 : m < 7 ? 5 : 10) * p;
}

static void fmt_num(char *b, size_t cap, double v) {
    double a = fabs(v);
    if (a >= 1e4) snprintf(b, cap, "%.0fk", v / 1e3);
    else if (a >= 100 || v == floor(v)) snprintf(b, cap, "%.0f", v);
    else if (a >= 1) snprintf(b, cap, "%.1f", v);
    else snprintf(b, cap, "%.3g", v);
}

typedef struct { const double *y; const char *name, *color; bool points; } Series;

// one panel of line series against the steps; log y when the data spans > 20x
static void line_panel(FILE *f, const RunLog *r, int top, int h, const char *ylabel, const Series *s, int ns) {
    double lo = INFINITY, hi = -INFINITY;
    for (int k = 0; k < ns; k++)
        for (int i = 0; i < r->n; i++) {
            double v = s[k].y[i];
            if (isfinite(v)) { lo = fmin(lo, v); hi = fmax(hi, v); }
        }
    if (!isfinite(lo)) { lo = 0; hi = 1; }
    bool logy = lo > 0 && hi / lo > 20;
    double a = logy ? log10(lo) : lo, b = logy ? log10(hi) : hi;
    if (b - a < 1e-12) { a -= 0.5; b += 0.5; }
    double pad = 0.05 * (b - a);
    a -= pad; b += pad;
    if (!logy && lo >= 0 && a < 0) a = 0;
    const long x0 = r->step[0], x1 = r->step[r->n - 1] > x0 ? r->step[r->n - 1] : x0 + 1;
#define PX(st) (ML + (double)((st) - x0) / (x1 - x0) * PW)
#define PY(v) (top + h - ((logy ? log10(v) : (v)) - a) / (b - a) * h)
    fprintf(f, "<rect x='%d' y='%d' width='%d' height='%d' fill='#fafafa' stroke='#999'/>\n", ML, top, PW, h);
    // y ticks
    if (logy) {
        for (int e = (int)floor(a); e <= (int)ceil(b); e++)
            for (int mlt = 1; mlt <= 5; mlt += 4) {
                double v = mlt * pow(10, e), lv = log10(v);
                if (lv < a || lv > b) continue;
                double y = top + h - (lv - a) / (b - a) * h;
                char t[32]; fmt_num(t, sizeof t, v);
                fprintf(f, "<line x1='%d' x2='%d' y1='%.1f' y2='%.1f' stroke='#ddd'/><text x='%d' y='%.1f' text-anchor='end' class='t'>%s</text>\n",
                        ML, ML + PW, y, y, ML - 5, y + 4, t);
            }
    } else {
        double st = tick_step(b - a, 5);
        for (double v = ceil(a / st) * st; v <= b + 1e-12; v += st) {
            double y = top + h - (v - a) / (b - a) * h;
            char t[32]; fmt_num(t, sizeof t, fabs(v) < st * 1e-6 ? 0 : v);
            fprintf(f, "<line x1='%d' x2='%d' y1='%.1f' y2='%.1f' stroke='#ddd'/><text x='%d' y='%.1f' text-anchor='end' class='t'>%s</text>\n",
                    ML, ML + PW, y, y, ML - 5, y + 4, t);
        }
    }
    // x ticks
    double st = tick_step((double)(x1 - x0), 8);
    for (double v = ceil(x0 / st) * st; v <= x1 + 1e-9; v += st) {
        double x = PX(v);
        fprintf(f, "<line x1='%.1f' x2='%.1f' y1='%d' y2='%d' stroke='#999'/><text x='%.1f' y='%d' text-anchor='middle' class='t'>%.0f</text>\n",
                x, x, top + h, top + h + 4, x, top + h + 16, v);
    }
    fprintf(f, "<text x='18' y='%d' transform='rotate(-90 18 %d)' text-anchor='middle' class='l'>", top + h / 2, top + h / 2);
    xml_text(f, ylabel);
    fprintf(f, "%s</text>\n", logy ? " (log)" : "");
    for (int k = 0; k < ns; k++) {
        fprintf(f, "<polyline fill='none' stroke='%s' stroke-width='1.5' points='", s[k].color);
        for (int i = 0; i < r->n; i++)
            if (isfinite(s[k].y[i]) && (!logy || s[k].y[i] > 0)) fprintf(f, "%.1f,%.1f ", PX(r->step[i]), PY(s[k].y[i]));
        fprintf(f, "'/>\n");
        if (s[k].points)
            for (int i = 0; i < r->n; i++)
                if (isfinite(s[k].y[i]) && (!logy || s[k].y[i] > 0))
                    fprintf(f, "<circle cx='%.1f' cy='%.1f' r='3' fill='%s'/>\n", PX(r->step[i]), PY(s[k].y[i]), s[k].color);
        fprintf(f, "<rect x='%d' y='%d' width='14' height='3' fill='%s'/><text x='%d' y='%d' class='t'>", ML + PW - 150,
                top + 12 + 16 * k, s[k].color, ML + PW - 132, top + 16 + 16 * k);
        xml_text(f, s[k].name);
        fprintf(f, "</text>\n");
    }
#undef PX
#undef PY
}

// diverging colour for log2(load / mean) in [-2, 2]: blue (idle) - white (even) - red (hot)
static void load_color(double ratio, unsigned char *c) {
    double t = ratio > 0 ? log2(ratio) / 2 : -1;
    if (t > 1) t = 1;
    if (t < -1) t = -1;
    if (t >= 0) { c[0] = 255; c[1] = (unsigned char)(255 * (1 - 0.85 * t)); c[2] = (unsigned char)(255 * (1 - 0.9 * t)); }
    else { t = -t; c[0] = (unsigned char)(255 * (1 - 0.9 * t)); c[1] = (unsigned char)(255 * (1 - 0.7 * t)); c[2] = 255; }
}

static void png_image(FILE *f, const unsigned char *rgb, int w, int h, double x, double y, double dw, double dh) {
    Buf png = png_rgb(rgb, w, h);
    fprintf(f, "<image x='%.1f' y='%.1f' width='%.1f' height='%.1f' preserveAspectRatio='none' "
               "style='image-rendering:pixelated' href='data:image/png;base64,", x, y, dw, dh);
    base64(f, png.b, png.n);
    fprintf(f, "'/>\n");
    moe_free(png.b);
}

// experts (rows) x steps (columns, averaged into at most PW bins), one MoE layer
static void heat_panel(FILE *f, const RunLog *r, int l, int top, int h) {
    const int E = r->E, L = r->L;
    const int bins = r->n < PW ? r->n : PW;
    unsigned char *rgb = MOE_NEW(unsigned char, (size_t)bins * E * 3);
    double sum_mm = 0;
    int n_mm = 0;
    for (int c = 0; c < bins; c++) {
        int i0 = (int)((long)c * r->n / bins), i1 = (int)((long)(c + 1) * r->n / bins);
        if (i1 <= i0) i1 = i0 + 1;
        double tot = 0;
        for (int i = i0; i < i1; i++)
            for (int e = 0; e < E; e++) tot += r->load[((size_t)i * L + l) * E + e];
        double mean = tot / E;
        for (int e = 0; e < E; e++) {
            double v = 0;
            for (int i = i0; i < i1; i++) v += r->load[((size_t)i * L + l) * E + e];
            load_color(mean > 0 ? v / mean : 1, rgb + ((size_t)e * bins + c) * 3);
        }
    }
    // max/mean over the last 50 steps, for the label
    for (int i = r->n > 50 ? r->n - 50 : 0; i < r->n; i++) {
        double tot = 0, mx = 0;
        for (int e = 0; e < E; e++) { double v = r->load[((size_t)i * L + l) * E + e]; tot += v; mx = fmax(mx, v); }
        if (tot > 0) { sum_mm += mx * E / tot; n_mm++; }
    }
    png_image(f, rgb, bins, E, ML, top, PW, h);
    moe_free(rgb);
    fprintf(f, "<rect x='%d' y='%d' width='%d' height='%d' fill='none' stroke='#999'/>\n", ML, top, PW, h);
    fprintf(f, "<text x='%d' y='%d' text-anchor='end' class='t'>0</text><text x='%d' y='%d' text-anchor='end' class='t'>%d</text>\n",
            ML - 5, top + 10, ML - 5, top + h, E - 1);
    fprintf(f, "<text x='18' y='%d' transform='rotate(-90 18 %d)' text-anchor='middle' class='l'>expert</text>\n", top + h / 2, top + h / 2);
    // step ticks along the bottom edge
    const long x0 = r->step[0], x1 = r->step[r->n - 1] > x0 ? r->step[r->n - 1] : x0 + 1;
    double st = tick_step((double)(x1 - x0), 8);
    for (double v = ceil(x0 / st) * st; v <= x1 + 1e-9; v += st) {
        double x = ML + (v - x0) / (x1 - x0) * PW;
        fprintf(f, "<line x1='%.1f' x2='%.1f' y1='%d' y2='%d' stroke='#999'/><text x='%.1f' y='%d' text-anchor='middle' class='t'>%.0f</text>\n",
                x, x, top + h, top + h + 4, x, top + h + 15, v);
    }
    fprintf(f, "<text x='%d' y='%d' class='l'>MoE layer %d: expert load / mean load, max/mean over the last %d steps %.3f</text>\n",
            ML, top - 6, l, n_mm, n_mm ? sum_mm / n_mm : 0);
}

int plot_svg(const RunLog *r, const char *title, const char *out_path) {
    const int H_LOSS = 240, H_TPS = 140, GAP = 56;
    const int h_heat = r->E > 0 ? (r->E * 4 < 64 ? 64 : r->E * 4 > 256 ? 256 : r->E * 4) : 0;
    const int top0 = 56;
    int height = top0 + H_LOSS + GAP + H_TPS + GAP + (r->rank_points > 0 && r->L > 0 ? H_TPS + GAP : 0) +
                 r->L * (h_heat + GAP) + (r->L ? 40 : 0);
    FILE *f = file_atomic_open(out_path);
    if (!f) MOE_ERR("%s: cannot write", out_path);
    fprintf(f, "<svg xmlns='http://www.w3.org/2000/svg' width='%d' height='%d' viewBox='0 0 %d %d' font-family='DejaVu Sans, Arial, sans-serif'>\n",
            W, height, W, height);
    fprintf(f, "<style>.t{font-size:11px;fill:#333}.l{font-size:13px;fill:#111}.h{font-size:16px;font-weight:bold}</style>\n");
    fprintf(f, "<rect width='100%%' height='100%%' fill='white'/>\n<text x='%d' y='26' class='h'>", ML);
    xml_text(f, title);
    fprintf(f, "</text>\n<text x='%d' y='44' class='t'>%d steps (%ld to %ld), %d MoE layers x %d experts</text>\n", ML, r->n,
            r->step[0], r->step[r->n - 1], r->L, r->E);
    Series ls[3] = {{r->loss, "train loss", "#1f77b4", false}, {r->ce, "train cross-entropy", "#ff7f0e", false},
                    {r->eval, "eval loss", "#2ca02c", true}};
    int top = top0;
    line_panel(f, r, top, H_LOSS, "loss", ls, r->eval_points ? 3 : 2);
    top += H_LOSS + GAP;
    Series ts = {r->tps, "tokens/s", "#9467bd", false};
    line_panel(f, r, top, H_TPS, "tokens/s", &ts, 1);
    fprintf(f, "<text x='%d' y='%d' text-anchor='middle' class='t'>step</text>\n", ML + PW / 2, top + H_TPS + 30);
    top += H_TPS + GAP;
    if (r->rank_points > 0 && r->L > 0) {   // expert parallelism: the busiest rank over the mean, per MoE layer
        static const char *colors[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"};
        const int nl = r->L < 8 ? r->L : 8;   // the first 8 MoE layers
        Series *rs = MOE_NEW(Series, nl);
        double **cols = MOE_NEW(double *, nl);
        char (*names)[32] = moe_alloc(sizeof(*names) * nl);
        for (int l = 0; l < nl; l++) {
            cols[l] = MOE_NEW(double, r->n);
            for (int i = 0; i < r->n; i++) cols[l][i] = r->rank_load[(size_t)i * r->L + l];
            snprintf(names[l], sizeof names[l], "MoE layer %d", l);
            rs[l] = (Series){cols[l], names[l], colors[l], false};
        }
        line_panel(f, r, top, H_TPS, "busiest rank / mean", rs, nl);
        top += H_TPS + GAP;
        for (int l = 0; l < nl; l++) moe_free(cols[l]);
        moe_free(cols); moe_free(rs); moe_free(names);
    }
    for (int l = 0; l < r->L; l++) {
        heat_panel(f, r, l, top, h_heat);
        top += h_heat + GAP;
    }
    if (r->L) {   // the colour scale
        unsigned char rgb[64 * 3];
        for (int i = 0; i < 64; i++) load_color(pow(2, -2 + 4.0 * i / 63), rgb + 3 * i);
        png_image(f, rgb, 64, 1, ML, top - 30, 256, 12);
        fprintf(f, "<text x='%d' y='%d' class='t'>1/4</text><text x='%d' y='%d' class='t' text-anchor='middle'>1 (even)</text>"
                   "<text x='%d' y='%d' class='t' text-anchor='end'>4x mean</text><text x='%d' y='%d' class='t'>load / mean load per step (columns average steps)</text>\n",
                ML, top - 4, ML + 128, top - 4, ML + 256, top - 4, ML + 270, top - 20);
    }
    fprintf(f, "</svg>\n");
    return file_atomic_commit(f, out_path);
}
