/*
 * tests/test_util.h -- tiny test harness shared by all rooms' tests:
 * CHECK macros that report file:line and keep going, a seeded random fill
 * (tests never run on zeros), poison values to prove every element was
 * written, tolerance comparison, and a shell runner. Header-only; tests only.
 */
#ifndef BG_TEST_UTIL_H
#define BG_TEST_UTIL_H

#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int bg_test_failures;

#define CHECK(cond)                                                                              \
    do {                                                                                         \
        if (!(cond)) {                                                                           \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);             \
            bg_test_failures++;                                                                  \
        }                                                                                        \
    } while (0)

#define CHECK_MSG(cond, ...)                                                                     \
    do {                                                                                         \
        if (!(cond)) {                                                                           \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond);             \
            fprintf(stderr, __VA_ARGS__);                                                        \
            fprintf(stderr, "\n");                                                               \
            bg_test_failures++;                                                                  \
        }                                                                                        \
    } while (0)

/* Status must be BG_OK; prints the recorded error otherwise. */
#define CHECK_OK(expr)                                                                           \
    do {                                                                                         \
        bg_status_t st_ = (expr);                                                                \
        if (st_ != BG_OK) {                                                                      \
            fprintf(stderr, "%s:%d: %s -> %s: %s\n", __FILE__, __LINE__, #expr,                  \
                    bg_status_str(st_), bg_last_error());                                        \
            bg_test_failures++;                                                                  \
        }                                                                                        \
    } while (0)

#define TEST_SKIP(...)                                                                           \
    do {                                                                                         \
        printf("SKIP: ");                                                                        \
        printf(__VA_ARGS__);                                                                     \
        printf("\n");                                                                            \
        return 0;                                                                                \
    } while (0)

static inline int bg_test_finish(const char *name)
{
    if (bg_test_failures) {
        fprintf(stderr, "%s: %d check(s) failed\n", name, bg_test_failures);
        return 1;
    }
    printf("%s: ok\n", name);
    return 0;
}

/* Run a shell command built printf-style; its exit status, 128 if it did
 * not exit normally (end-to-end tests driving the brigade binary). */
static inline int bg_test_sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline int bg_test_sh(const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : 128;
}

/* The start every test driving the brigade binary shares: *bin = argv[1],
 * *src = BRIGADE_SOURCE_DIR ("." when unset) and wd[wdlen] = a fresh
 * /tmp/bg_<tag>_<pid>. False, after saying why, when argv[1] is missing or
 * wd cannot be made: the test then fails. */
static inline bool bg_test_cli_start(int argc, char **argv, const char *tag, const char **bin,
                                     const char **src, char *wd, size_t wdlen)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s BRIGADE\n", argv[0]);
        return false;
    }
    *bin = argv[1];
    *src = getenv("BRIGADE_SOURCE_DIR") ? getenv("BRIGADE_SOURCE_DIR") : ".";
    snprintf(wd, wdlen, "/tmp/bg_%s_%d", tag, (int)getpid());
    if (bg_test_sh("rm -rf '%s' && mkdir -p '%s'", wd, wd) != 0) {
        fprintf(stderr, "%s: cannot make %s\n", argv[0], wd);
        return false;
    }
    return true;
}

/* xorshift64*: deterministic test data, independent of libc rand(). */
static inline uint64_t bg_test_next(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}

/* Uniform in [lo, hi). */
static inline float bg_test_uniform(uint64_t *s, float lo, float hi)
{
    return lo + (hi - lo) * (float)((bg_test_next(s) >> 40) * (1.0 / 16777216.0));
}

static inline void bg_test_fill(float *x, int64_t n, uint64_t *s, float lo, float hi)
{
    for (int64_t i = 0; i < n; i++) x[i] = bg_test_uniform(s, lo, hi);
}

/* A signalling pattern no kernel produces by accident. */
#define BG_POISON_F32 (-7.7777e30f)
static inline void bg_test_poison(float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++) x[i] = BG_POISON_F32;
}
static inline int64_t bg_test_count_poison(const float *x, int64_t n)
{
    int64_t c = 0;
    for (int64_t i = 0; i < n; i++) c += x[i] == BG_POISON_F32 || isnan(x[i]);
    return c;
}

/* Max over i of |a-b| / (atol + rtol*|b|); <= 1 means within tolerance. */
static inline double bg_test_max_err(const float *a, const float *b, int64_t n, double atol,
                                     double rtol, int64_t *worst)
{
    double m = 0;
    for (int64_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - (double)b[i]) / (atol + rtol * fabs((double)b[i]));
        if (!(e <= m)) { /* also catches NaN */
            m = isnan(e) ? INFINITY : e;
            if (worst) *worst = i;
        }
    }
    return m;
}

#endif
