/*
 * tests/data/data_test_util.h -- scratch directories and file helpers for
 * the data and checkpoint tests. Tests only; never removes anything outside
 * the mkdtemp directory it created.
 */
#ifndef BG_DATA_TEST_UTIL_H
#define BG_DATA_TEST_UTIL_H

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* snprintf into an array, failing the test binary if the path would not fit. */
#define PATHF(buf, ...)                                                                            \
    do {                                                                                           \
        if (snprintf(buf, sizeof(buf), __VA_ARGS__) >= (int)sizeof(buf)) {                         \
            fprintf(stderr, "%s:%d: path too long\n", __FILE__, __LINE__);                         \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

/* A fresh directory under $TMPDIR (or /tmp); exits the test on failure. */
static inline char *bg_test_tmpdir(const char *tag)
{
    const char *base = getenv("TMPDIR");
    char *path = malloc(4096);
    snprintf(path, 4096, "%s/bg-%s-XXXXXX", base && *base ? base : "/tmp", tag);
    if (!path || !mkdtemp(path)) {
        perror("mkdtemp");
        exit(1);
    }
    return path;
}

/* rm -r of a directory this test created (one level of subdirectories deep is enough). */
static inline void bg_test_rmtree(const char *path)
{
    DIR *d = opendir(path);
    if (!d) {
        unlink(path);
        return;
    }
    struct dirent *e;
    char sub[4096];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        PATHF(sub, "%s/%s", path, e->d_name);
        struct stat sb;
        if (lstat(sub, &sb) == 0 && S_ISDIR(sb.st_mode))
            bg_test_rmtree(sub);
        else
            unlink(sub);
    }
    closedir(d);
    rmdir(path);
}

/* Replace `path` with n bytes. Unlinking first avoids ext4's flush-on-truncate
   (auto_da_alloc), which makes thousands of rewrites take seconds. */
static inline int bg_test_write_file(const char *path, const void *data, size_t n)
{
    unlink(path);
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(data, 1, n, f);
    return fclose(f) == 0 && w == n ? 0 : -1;
}

/* Whole file into a malloc'd buffer (NULL on failure). */
static inline unsigned char *bg_test_read_file(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc(len > 0 ? (size_t)len : 1);
    if (buf && fread(buf, 1, (size_t)len, f) != (size_t)len) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *n = (size_t)len;
    return buf;
}

/* True if `msg` contains `needle` (prints both when it does not). */
static inline int bg_test_msg_has(const char *msg, const char *needle)
{
    if (strstr(msg, needle)) return 1;
    fprintf(stderr, "  message '%s' lacks '%s'\n", msg, needle);
    return 0;
}

#endif
