/*
 * partition/json_util.c -- file reading and checked member access over
 * cJSON for partition's profile and plan files. Errors name the file, the
 * key and what was expected; nothing here exits. No other room uses it.
 */
#include "partition/json_util.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define BG_JSON_MAX_BYTES (256L << 20)

bg_status_t bg_json_parse(const char *text, size_t len, const char *what, cJSON **out)
{
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!root) {
        /* report where the parser stopped as LINE:COL */
        int line = 1, col = 1;
        const char *stop = end && end >= text && end <= text + len ? end : text;
        for (const char *p = text; p < stop; p++) {
            if (*p == '\n') {
                line++;
                col = 1;
            } else {
                col++;
            }
        }
        return bg_errorf(BG_ERR_INVALID, "%s:%d:%d: error: invalid JSON", what, line, col);
    }
    *out = root;
    return BG_OK;
}

bg_status_t bg_json_load_file(const char *path, cJSON **out)
{
    FILE *f = fopen(path, "rb");
    if (!f) return bg_errorf(BG_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    bg_status_t st;
    char *buf = NULL;
    struct stat sb;
    /* fopen succeeds on a directory; its "size" would be nonsense. */
    if (fstat(fileno(f), &sb) != 0) {
        st = bg_errorf(BG_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
        goto err_close;
    }
    if (!S_ISREG(sb.st_mode)) {
        st = bg_errorf(BG_ERR_INVALID, "%s: %s", path,
                       S_ISDIR(sb.st_mode) ? "is a directory, not a JSON file"
                                           : "not a regular file");
        goto err_close;
    }
    if (fseek(f, 0, SEEK_END) != 0) {
        st = bg_errorf(BG_ERR_IO, "%s: cannot seek: %s", path, strerror(errno));
        goto err_close;
    }
    long n = ftell(f);
    if (n < 0 || n > BG_JSON_MAX_BYTES) {
        st = bg_errorf(BG_ERR_INVALID, "%s: size %ld is not that of a plan or profile", path, n);
        goto err_close;
    }
    rewind(f);
    buf = malloc((size_t)n + 1);
    if (!buf) {
        st = bg_errorf(BG_ERR_NOMEM, "%s: out of memory", path);
        goto err_close;
    }
    if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
        st = bg_errorf(BG_ERR_IO, "%s: read failed", path);
        goto err_free;
    }
    buf[n] = '\0';
    st = bg_json_parse(buf, (size_t)n, path, out);
err_free:
    free(buf);
err_close:
    fclose(f);
    return st;
}

bg_status_t bg_json_save_file(const char *path, const cJSON *root)
{
    char *text = cJSON_Print(root);
    if (!text) return bg_errorf(BG_ERR_NOMEM, "%s: cannot format JSON", path);
    bg_status_t st = BG_OK;
    FILE *f = fopen(path, "wb");
    if (!f) {
        st = bg_errorf(BG_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
        goto err_free;
    }
    size_t len = strlen(text);
    if (fwrite(text, 1, len, f) != len || fputc('\n', f) == EOF) st = bg_errorf(BG_ERR_IO, "%s: write failed", path);
    if (fclose(f) != 0 && !st) st = bg_errorf(BG_ERR_IO, "%s: write failed: %s", path, strerror(errno));
err_free:
    cJSON_free(text);
    return st;
}

static const cJSON *member(const cJSON *o, const char *k)
{
    return cJSON_IsObject(o) ? cJSON_GetObjectItemCaseSensitive(o, k) : NULL;
}

bg_status_t bg_json_get_int(const cJSON *o, const char *k, const char *what, int64_t lo, int64_t hi,
                            int64_t *out)
{
    const cJSON *v = member(o, k);
    if (!v) return bg_errorf(BG_ERR_INVALID, "%s: key '%s' missing", what, k);
    double d = cJSON_IsNumber(v) ? v->valuedouble : NAN;
    if (!(d == floor(d)) || d < (double)lo || d > (double)hi)
        return bg_errorf(BG_ERR_INVALID, "%s: '%s' must be an integer in [%lld, %lld]", what, k,
                         (long long)lo, (long long)hi);
    *out = (int64_t)d;
    return BG_OK;
}

bg_status_t bg_json_get_num(const cJSON *o, const char *k, const char *what, double lo, double *out)
{
    const cJSON *v = member(o, k);
    if (!v) return bg_errorf(BG_ERR_INVALID, "%s: key '%s' missing", what, k);
    double d = cJSON_IsNumber(v) ? v->valuedouble : NAN;
    if (!isfinite(d) || d < lo)
        return bg_errorf(BG_ERR_INVALID, "%s: '%s' must be a number >= %g", what, k, lo);
    *out = d;
    return BG_OK;
}

bg_status_t bg_json_get_str(const cJSON *o, const char *k, const char *what, char *buf, size_t n)
{
    const cJSON *v = member(o, k);
    if (!v) return bg_errorf(BG_ERR_INVALID, "%s: key '%s' missing", what, k);
    if (!cJSON_IsString(v) || !v->valuestring)
        return bg_errorf(BG_ERR_INVALID, "%s: '%s' must be a string", what, k);
    if (strlen(v->valuestring) >= n)
        return bg_errorf(BG_ERR_INVALID, "%s: '%s' is longer than %zu characters", what, k, n - 1);
    strcpy(buf, v->valuestring);
    return BG_OK;
}

bg_status_t bg_json_get_bool(const cJSON *o, const char *k, const char *what, bool *out)
{
    const cJSON *v = member(o, k);
    if (!v) return bg_errorf(BG_ERR_INVALID, "%s: key '%s' missing", what, k);
    if (!cJSON_IsBool(v)) return bg_errorf(BG_ERR_INVALID, "%s: '%s' must be true or false", what, k);
    *out = cJSON_IsTrue(v);
    return BG_OK;
}

bg_status_t bg_json_get_array(const cJSON *o, const char *k, const char *what, const cJSON **out)
{
    const cJSON *v = member(o, k);
    if (!v) return bg_errorf(BG_ERR_INVALID, "%s: key '%s' missing", what, k);
    if (!cJSON_IsArray(v)) return bg_errorf(BG_ERR_INVALID, "%s: '%s' must be an array", what, k);
    *out = v;
    return BG_OK;
}

bg_status_t bg_json_get_dtype(const cJSON *o, const char *k, const char *what, bg_dtype_t *out)
{
    char buf[32];
    bg_status_t st = bg_json_get_str(o, k, what, buf, sizeof(buf));
    if (st != BG_OK)
        return st;
    static const bg_dtype_t floats[] = {BG_F32, BG_BF16, BG_F16};
    for (size_t i = 0; i < sizeof(floats) / sizeof(floats[0]); i++)
        if (!strcmp(buf, bg_dtype_name(floats[i]))) {
            *out = floats[i];
            return BG_OK;
        }
    return bg_errorf(BG_ERR_INVALID, "%s: dtype '%s' (want f32, bf16 or fp16)", what, buf);
}
