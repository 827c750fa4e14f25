#include "base.h"
#include <errno.h>
#include <malloc.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>

static _Thread_local char err_msg[1024];
static _Thread_local char err_src[256];

void moe_seterr_at(const char *src, int line, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err_msg, sizeof err_msg, fmt, ap);
    va_end(ap);
    snprintf(err_src, sizeof err_src, "%s:%d", src, line);
}
const char *moe_errmsg(void) { return err_msg[0] ? err_msg : "unknown error"; }
const char *moe_errsrc(void) { return err_src; }

static MemCategory mem_cat = MEM_OTHER;
static size_t mem_total[MEM_N];
static int mem_dry;
MemCategory mem_category(MemCategory c) { MemCategory old = mem_cat; mem_cat = c; return old; }
size_t mem_bytes(MemCategory c) { return mem_total[c]; }
void mem_dry_run(int on) { mem_dry = on; }

// Blocks of 4 MB and up are mapped on their own, their data on a 2 MB boundary, and ask for
// transparent huge pages: the GEMMs walk weights, gradients and activations in strided
// panels, and with 4 KB pages nearly every panel row is a TLB miss (AdamW 89-93 -> 74-78 ms
// on bench-s, steps about 3% faster). The header sits alone in the 4 KB page before the data, and the
// mapping ends at the data's last 4 KB page, so that no huge page holds anything but data
// (a partial last 2 MB stays in small pages).
// Every block's header (just before its data) keeps its size, category and mapping length.
#define HUGE_PAGE ((size_t)2 << 20)
#define HUGE_MIN ((size_t)4 << 20)
#define SMALL_PAGE ((size_t)4096)
static void *map_huge(size_t bytes) {
    const size_t len = SMALL_PAGE + ((bytes + SMALL_PAGE - 1) & ~(SMALL_PAGE - 1)), total = len + HUGE_PAGE;
    // a dry run reserves address space only (never touched, not counted against memory), so
    // that a plan of a model far larger than the machine's memory still runs
    char *raw = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | (mem_dry ? MAP_NORESERVE : 0), -1, 0);
    if (raw == MAP_FAILED) return NULL;
    char *data = (char *)(((uintptr_t)raw + SMALL_PAGE + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1));
    char *start = data - SMALL_PAGE;
    if (start > raw) munmap(raw, start - raw);   // keep [start, start + len)
    if (start + len < raw + total) munmap(start + len, raw + total - (start + len));
    if (!mem_dry) madvise(data, len - SMALL_PAGE, MADV_HUGEPAGE);
    ((size_t *)data)[-1] = len;
    return data;
}
void mem_keep_freed(void) {
    mallopt(M_MMAP_THRESHOLD, 64 << 20);   // (moe_alloc maps its blocks of 4 MiB and more itself)
    mallopt(M_TRIM_THRESHOLD, 256 << 20);
}

void *moe_alloc(size_t bytes) {
    if (bytes == 0) bytes = 64;
    size_t rounded = (bytes + 63) & ~(size_t)63;
    const int huge = rounded >= HUGE_MIN;
    char *user = huge ? map_huge(rounded) : NULL;
    if (!huge) {
        size_t *p = aligned_alloc(64, rounded + 64);
        if (p) { user = (char *)p + 64; ((size_t *)user)[-1] = 0; }
    }
    if (!user) {
        fprintf(stderr, "moe: out of memory allocating %zu bytes\n", bytes);
        exit(2);
    }
    size_t *h = (size_t *)user - 3;   // [size, category, mapping length or 0]
    h[0] = rounded;
    h[1] = (size_t)mem_cat;
    __atomic_fetch_add(&mem_total[mem_cat], rounded, __ATOMIC_RELAXED);
    // every block is touched now (zeroed), so that the measured peak RSS is what `moe plan`
    // counts; a dry run leaves big buffers untouched, small ones (structs, tables) are zeroed
    if (!mem_dry || rounded < (1 << 20)) memset(user, 0, rounded);
    return user;
}
void moe_free(void *user) {
    if (!user) return;
    size_t *h = (size_t *)user - 3;
    __atomic_fetch_sub(&mem_total[h[1]], h[0], __ATOMIC_RELAXED);
    if (h[2]) munmap((char *)user - SMALL_PAGE, h[2]); else free((char *)user - 64);
}
// a new block under the old one's category, the old contents copied, the old block freed
void *moe_realloc(void *user, size_t bytes) {
    if (!user) return moe_alloc(bytes);
    const size_t *h = (const size_t *)user - 3;
    MemCategory old = mem_category((MemCategory)h[1]);
    void *p = moe_alloc(bytes);
    mem_category(old);
    memcpy(p, user, h[0] < bytes ? h[0] : bytes);
    moe_free(user);
    return p;
}

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}
void rng_seed(Rng *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&seed);
}
static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
uint64_t rng_u64(Rng *r) {
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3];
    s[2] ^= t; s[3] = rotl(s[3], 45);
    return result;
}
float rng_normal(Rng *r) {
    double u1 = ((rng_u64(r) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
    double u2 = (rng_u64(r) >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2));
}
uint64_t rng_below(Rng *r, uint64_t n) { return n ? rng_u64(r) % n : 0; }

double time_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}
long peak_rss_kb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}
char *moe_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = moe_alloc(n);
    memcpy(d, s, n);
    return d;
}
const char *moe_printable(char *out, size_t cap, const char *s) {
    size_t i = 0;
    if (cap < 5) { if (cap) out[0] = 0; return out; }
    for (; s[i] && i < cap - 1; i++) out[i] = (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? '?' : s[i];
    out[i] = 0;
    if (s[i]) memcpy(out + cap - 4, "...", 4);
    return out;
}
char *file_read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) { moe_seterr("%s: cannot open: %s", path, strerror(errno)); return NULL; }
    // plain malloc: callers free() the text
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    for (;;) {
        if (buf && n == cap) {
            char *grown = realloc(buf, 2 * cap + 1);
            if (!grown) free(buf);
            buf = grown; cap *= 2;
        }
        if (!buf) { fclose(f); moe_seterr("%s: out of memory reading it (%zu bytes so far)", path, n); return NULL; }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) { free(buf); moe_seterr("%s: read error", path); return NULL; }
    buf[n] = 0;
    if (len) *len = n;
    return buf;
}

void (*moe_progress_hook)(void) = NULL;
