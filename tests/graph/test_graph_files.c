/*
 * tests/graph/test_graph_files.c -- file-driven checks of the parser:
 *   bad/NAME.graph  each starts with "# expect: L:C: error: MESSAGE" and must
 *                   fail with exactly that located message (FILE:L:C prefix);
 *   corpus/, regress/  fuzzer seeds and past fuzzer findings: each must
 *                   parse or fail with a well-formed located message.
 * Must not skip a directory silently: an empty bad/ is a failure.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "layers/graph.h"
#include "test_util.h"

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Sorted names of the files in dir ending in `ext` ("" for all); count in *n. */
static char **list_dir(const char *dir, const char *ext, int *n)
{
    *n = 0;
    DIR *d = opendir(dir);
    if (!d) return NULL;
    char **v = NULL;
    int cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name), le = strlen(ext);
        if (e->d_name[0] == '.' || l < le || strcmp(e->d_name + l - le, ext)) continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 64;
            v = realloc(v, (size_t)cap * sizeof(*v));
            if (!v) abort();
        }
        v[(*n)++] = strdup(e->d_name);
    }
    closedir(d);
    if (v) qsort(v, (size_t)*n, sizeof(*v), cmp_str);
    return v;
}

static void free_list(char **v, int n)
{
    for (int i = 0; i < n; i++) free(v[i]);
    free(v);
}

/* "PATH:L:C: error: ...\n<line>\n<caret line ending in ^>" */
static int well_formed(const char *path, const char *m)
{
    size_t lp = strlen(path);
    if (strncmp(m, path, lp) || m[lp] != ':') return 0;
    int line = 0, col = 0, used = 0;
    if (sscanf(m + lp, ":%d:%d: error: %n", &line, &col, &used) != 2 || used == 0) return 0;
    if (line < 1 || col < 1) return 0;
    const char *a = strchr(m, '\n');
    const char *b = a ? strchr(a + 1, '\n') : NULL;
    if (!b || strchr(b + 1, '\n')) return 0;
    size_t lc = strlen(b + 1);
    return lc > 0 && b[lc] == '^';
}

static void check_bad(const char *dir)
{
    int n;
    char **names = list_dir(dir, ".graph", &n);
    CHECK_MSG(n >= 25, "only %d error cases in %s", n, dir);
    for (int i = 0; i < n; i++) {
        char path[1024], want[2200], line[1024];
        if (snprintf(path, sizeof(path), "%s/%s", dir, names[i]) >= (int)sizeof(path)) {
            CHECK_MSG(0, "path too long: %s/%s", dir, names[i]);
            continue;
        }
        FILE *f = fopen(path, "r");
        if (!f || !fgets(line, sizeof(line), f) || strncmp(line, "# expect: ", 10)) {
            CHECK_MSG(0, "%s: no '# expect: ' first line", path);
            if (f) fclose(f);
            continue;
        }
        fclose(f);
        line[strcspn(line, "\n")] = 0;
        snprintf(want, sizeof(want), "%s:%s", path, line + 10);
        bg_graph_t *g = NULL;
        bg_status_t st = bg_graph_parse_file(path, 1, &g);
        CHECK_MSG(st == BG_ERR_INVALID, "%s: got %s", names[i], bg_status_str(st));
        if (g) bg_graph_free(g);
        const char *m = bg_last_error();
        CHECK_MSG(!strncmp(m, want, strlen(want)), "%s:\n  want %s\n  got  %s", names[i], want, m);
        CHECK_MSG(well_formed(path, m), "%s: malformed message:\n%s", names[i], m);
    }
    free_list(names, n);
}

static void check_survives(const char *dir, int *count)
{
    int n;
    char **names = list_dir(dir, "", &n);
    for (int i = 0; i < n; i++) {
        char path[2048];
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        for (int64_t batch = 1; batch <= 1024; batch *= 1024) {
            bg_graph_t *g = NULL;
            bg_status_t st = bg_graph_parse_file(path, batch, &g);
            CHECK_MSG(st == BG_OK || st == BG_ERR_INVALID, "%s: %s: %s", names[i],
                      bg_status_str(st), bg_last_error());
            if (st == BG_ERR_INVALID)
                CHECK_MSG(well_formed(path, bg_last_error()), "%s: malformed message:\n%s",
                          names[i], bg_last_error());
            bg_graph_free(g);
        }
    }
    *count += n;
    free_list(names, n);
}

int main(void)
{
    const char *src = getenv("BRIGADE_SOURCE_DIR");
    char dir[1024];
    if (!src) src = ".";
    snprintf(dir, sizeof(dir), "%s/tests/graph/bad", src);
    check_bad(dir);
    int n = 0;
    snprintf(dir, sizeof(dir), "%s/tests/graph/corpus", src);
    check_survives(dir, &n);
    snprintf(dir, sizeof(dir), "%s/tests/graph/regress", src);
    check_survives(dir, &n);
    snprintf(dir, sizeof(dir), "%s/models", src);
    check_survives(dir, &n);
    CHECK_MSG(n > 0, "no corpus files found under %s/tests/graph", src);
    return bg_test_finish("test_graph_files");
}
