/*
 * engine/checkpoint.c -- checkpoint directories: step directories, the
 * manifest, the `latest` marker, and opening a complete checkpoint.
 *
 * Publication order is the whole safety argument: stage files are each
 * written atomically by their ranks; publish then re-validates every one,
 * records its size and CRC in manifest.json (atomically), and only then
 * moves `latest` (atomically). A crash anywhere leaves `latest` naming the
 * previous complete checkpoint. Must NOT delete user files or know what the
 * tensors mean.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "base/grow.h"
#include "engine/checkpoint.h"
#include "engine/checkpoint_fs.h"
#include "engine/checkpoint_shard.h"

#define CKPT_MAX_FILES 65536 /* also the most stages a manifest may name */
#define CKPT_MAX_DP (1 << 20)
#define CKPT_MAX_SMALL_FILE (16u << 20) /* manifest and latest are tiny */

static char *str_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *str_printf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0) s = NULL;
    va_end(ap);
    return s;
}

bg_status_t bg_ckpt_step_path(const char *dir, int64_t step, char **out)
{
    if (!dir || !*dir || step < 0)
        return bg_errorf(BG_ERR_INVALID, "checkpoint: bad directory or step %" PRId64, step);
    char *s = str_printf("%s/step-%06" PRId64, dir, step);
    if (!s) return bg_errorf(BG_ERR_NOMEM, "checkpoint: out of memory");
    *out = s;
    return BG_OK;
}

bg_status_t bg_ckpt_shard_path(const char *step_path, int stage, int shard, char **out)
{
    if (stage < 0 || shard < 0)
        return bg_errorf(BG_ERR_INVALID, "checkpoint: bad stage %d or shard %d", stage, shard);
    char *s = str_printf("%s/stage-%d.dp-%d.safetensors", step_path, stage, shard);
    if (!s) return bg_errorf(BG_ERR_NOMEM, "checkpoint: out of memory");
    *out = s;
    return BG_OK;
}

bg_status_t bg_ckpt_stage_path(const char *step_path, int stage, char **out)
{
    if (stage < 0) return bg_errorf(BG_ERR_INVALID, "checkpoint: bad stage %d", stage);
    char *s = str_printf("%s/stage-%d.safetensors", step_path, stage);
    if (!s) return bg_errorf(BG_ERR_NOMEM, "checkpoint: out of memory");
    *out = s;
    return BG_OK;
}

/* Whole small file into a NUL-terminated malloc'd buffer; BG_ERR_IO with errno kept on failure. */
static bg_status_t read_small(const char *path, char **out, size_t *out_len, int *err)
{
    *err = 0;
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        *err = errno;
        return bg_errorf(BG_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    }
    bg_status_t st = BG_OK;
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    if (!buf) {
        st = bg_errorf(BG_ERR_NOMEM, "%s: out of memory", path);
        goto err_close;
    }
    for (;;) {
        if (len + 1 == cap) {
            if (cap >= CKPT_MAX_SMALL_FILE) {
                st = bg_errorf(BG_ERR_INVALID, "%s: larger than %u bytes", path, CKPT_MAX_SMALL_FILE);
                goto err_free;
            }
            if (bg_grow(&buf, &cap, cap + 1, 1)) {
                st = bg_errorf(BG_ERR_NOMEM, "%s: out of memory", path);
                goto err_free;
            }
        }
        size_t got = fread(buf + len, 1, cap - 1 - len, fp);
        len += got;
        if (got == 0) break;
    }
    if (ferror(fp)) {
        st = bg_errorf(BG_ERR_IO, "%s: read failed", path);
        goto err_free;
    }
    fclose(fp);
    buf[len] = '\0';
    *out = buf;
    *out_len = len;
    return BG_OK;

err_free:
    free(buf);
err_close:
    fclose(fp);
    return st;
}

void bg_ckpt_manifest_free(bg_ckpt_manifest_t *m)
{
    if (!m) return;
    for (int i = 0; i < m->nfiles; i++) free(m->files[i].name);
    free(m->files);
    free(m->schedule);
    free(m->model);
    memset(m, 0, sizeof(*m));
}

/* "step-<digits>" with an optional trailing newline. */
static bool valid_marker(const char *s, size_t len)
{
    if (len > 0 && s[len - 1] == '\n') len--;
    if (len < 6 || len > 25 || strncmp(s, "step-", 5) != 0) return false;
    int64_t v = 0;
    for (size_t i = 5; i < len; i++) {
        if (!isdigit((unsigned char)s[i])) return false;
        v = v * 10 + (s[i] - '0');
        if (v > (INT64_MAX - 9) / 10) return false;
    }
    return true;
}

/* A file name listed in a manifest must stay inside the step directory. */
static bool plain_name(const char *s)
{
    return *s && !strchr(s, '/') && strcmp(s, ".") && strcmp(s, "..");
}

static bool json_int(const cJSON *j, int64_t lo, int64_t hi, int64_t *out)
{
    if (!cJSON_IsNumber(j)) return false;
    double d = j->valuedouble;
    if (!(d >= (double)lo && d <= (double)hi) || d != (double)(int64_t)d) return false;
    *out = (int64_t)d;
    return true;
}

static bg_status_t manifest_from_json(const char *path, const cJSON *root, bg_ckpt_manifest_t *m)
{
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(root, "format");
    if (!cJSON_IsString(fmt) || strcmp(fmt->valuestring, BG_CKPT_FORMAT))
        return bg_errorf(BG_ERR_INVALID, "%s: not a brigade manifest (format must be \"%s\")",
                         path, BG_CKPT_FORMAT);
    int64_t step, stages, dp;
    if (!json_int(cJSON_GetObjectItemCaseSensitive(root, "step"), 0, INT64_MAX / 2, &step) ||
        !json_int(cJSON_GetObjectItemCaseSensitive(root, "stages"), 1, CKPT_MAX_FILES, &stages) ||
        !json_int(cJSON_GetObjectItemCaseSensitive(root, "dp"), 1, CKPT_MAX_DP, &dp))
        return bg_errorf(BG_ERR_INVALID,
                         "%s: step (0..2^62), stages (1..%d) and dp (1..%d) must be integers in "
                         "range",
                         path, CKPT_MAX_FILES, CKPT_MAX_DP);
    const cJSON *sched = cJSON_GetObjectItemCaseSensitive(root, "schedule");
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    const cJSON *files = cJSON_GetObjectItemCaseSensitive(root, "files");
    if (!cJSON_IsString(sched) || !cJSON_IsString(model))
        return bg_errorf(BG_ERR_INVALID, "%s: schedule and model must be strings", path);
    int n = cJSON_IsArray(files) ? cJSON_GetArraySize(files) : -1;
    if (n < 1 || n > CKPT_MAX_FILES)
        return bg_errorf(BG_ERR_INVALID, "%s: \"files\" must be a non-empty array", path);
    /* One file per stage (per stage and replica when sharded) is what
     * publish writes; anything else is not ours. */
    int64_t shards = 1;
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(root, "shards");
    if (sh && (!json_int(sh, 1, CKPT_MAX_DP, &shards) || (shards != 1 && shards != dp)))
        return bg_errorf(BG_ERR_INVALID, "%s: \"shards\" must be 1 or dp (%lld)", path,
                         (long long)dp);
    if (n != stages * shards)
        return bg_errorf(BG_ERR_INVALID,
                         "%s: %d files listed for %lld stages x %lld shards (one per stage%s)",
                         path, n, (long long)stages, (long long)shards,
                         shards > 1 ? " and replica" : "");
    m->shards = (int)shards;
    m->step = step, m->stages = (int)stages, m->dp = (int)dp;
    m->schedule = strdup(sched->valuestring);
    m->model = strdup(model->valuestring);
    m->files = calloc((size_t)n, sizeof(*m->files));
    if (!m->schedule || !m->model || !m->files)
        return bg_errorf(BG_ERR_NOMEM, "%s: out of memory", path);
    for (const cJSON *e = files->child; e; e = e->next) {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(e, "name");
        int64_t bytes, crc;
        if (!cJSON_IsString(name) || !plain_name(name->valuestring) ||
            !json_int(cJSON_GetObjectItemCaseSensitive(e, "bytes"), 8, INT64_MAX / 2, &bytes) ||
            !json_int(cJSON_GetObjectItemCaseSensitive(e, "crc32"), 0, UINT32_MAX, &crc))
            return bg_errorf(BG_ERR_INVALID,
                             "%s: files[%d] must be {\"name\": plain file name, \"bytes\", "
                             "\"crc32\"}",
                             path, m->nfiles);
        bg_ckpt_file_entry_t *fe = &m->files[m->nfiles];
        fe->stage = m->nfiles / m->shards, fe->shard = m->nfiles % m->shards;
        int64_t fs, fk;
        if (m->shards > 1 &&
            (!json_int(cJSON_GetObjectItemCaseSensitive(e, "stage"), 0, CKPT_MAX_FILES, &fs) ||
             !json_int(cJSON_GetObjectItemCaseSensitive(e, "shard"), 0, CKPT_MAX_DP, &fk) ||
             fs != fe->stage || fk != fe->shard))
            return bg_errorf(BG_ERR_INVALID,
                             "%s: files[%d] must say \"stage\": %d, \"shard\": %d (files "
                             "listed stage by stage, replica by replica)",
                             path, m->nfiles, fe->stage, fe->shard);
        m->nfiles++;
        fe->bytes = (uint64_t)bytes;
        fe->crc32 = (uint32_t)crc;
        if (!(fe->name = strdup(name->valuestring)))
            return bg_errorf(BG_ERR_NOMEM, "%s: out of memory", path);
    }
    return BG_OK;
}

bg_status_t bg_ckpt_manifest_parse(const char *text, size_t len, const char *what,
                                   bg_ckpt_manifest_t *out)
{
    cJSON *root = cJSON_ParseWithLength(text, len);
    bg_status_t st = BG_OK;
    if (!cJSON_IsObject(root)) {
        st = bg_errorf(BG_ERR_INVALID, "%s: not a valid JSON object", what);
        goto err_json;
    }
    bg_ckpt_manifest_t m = {0};
    st = manifest_from_json(what, root, &m);
    if (st != BG_OK) {
        bg_ckpt_manifest_free(&m);
        goto err_json;
    }
    *out = m;
err_json:
    cJSON_Delete(root);
    return st;
}

bg_status_t bg_ckpt_manifest_read(const char *step_path, bg_ckpt_manifest_t *out)
{
    char *path = str_printf("%s/manifest.json", step_path);
    if (!path) return bg_errorf(BG_ERR_NOMEM, "checkpoint: out of memory");
    char *text = NULL;
    size_t len;
    int err;
    bg_status_t st = read_small(path, &text, &len, &err);
    if (st != BG_OK) {
        if (err == ENOENT)
            st = bg_errorf(BG_ERR_INVALID,
                           "%s: missing: the checkpoint is incomplete or was never published", path);
        goto err_path;
    }
    st = bg_ckpt_manifest_parse(text, len, path, out);
    free(text);
err_path:
    free(path);
    return st;
}

/* The step directory `latest` names, or *step_path NULL if there is no checkpoint. */
bg_status_t bg_ckpt_dir_latest(const char *dir, char **step_path)
{
    char *marker = str_printf("%s/latest", dir);
    if (!marker) return bg_errorf(BG_ERR_NOMEM, "checkpoint: out of memory");
    char *text = NULL, *sp = NULL, *mpath = NULL;
    size_t len;
    int err;
    bg_status_t st = read_small(marker, &text, &len, &err);
    if (st != BG_OK) {
        if (err == ENOENT || err == ENOTDIR) { /* no directory or nothing published yet */
            bg_clear_error();
            *step_path = NULL;
            st = BG_OK;
        }
        goto err_marker;
    }
    if (!valid_marker(text, len)) {
        st = bg_errorf(BG_ERR_INVALID, "%s: corrupt marker (expected 'step-NNNNNN', got %zu bytes)",
                       marker, len);
        goto err_text;
    }
    if (text[len - 1] == '\n') text[len - 1] = '\0';
    if (!(sp = str_printf("%s/%s", dir, text))) {
        st = bg_errorf(BG_ERR_NOMEM, "checkpoint: out of memory");
        goto err_text;
    }
    mpath = str_printf("%s/manifest.json", sp);
    struct stat sb;
    if (!mpath || stat(mpath, &sb) != 0) {
        st = bg_errorf(BG_ERR_INVALID,
                       "%s names %s, which has no manifest.json (deleted or corrupt checkpoint)",
                       marker, text);
        free(sp);
        goto err_text;
    }
    *step_path = sp;

err_text:
    free(mpath);
    free(text);
err_marker:
    free(marker);
    return st;
}

/*
 * The published step is about to be rewritten: point `latest` at the newest
 * other step directory that has a manifest, or remove it if there is none,
 * so that a crash mid-rewrite never leaves `latest` naming files in flux.
 */
static bg_status_t unpublish(const char *dir, int64_t step)
{
    DIR *d = opendir(dir);
    if (!d) return bg_errorf(BG_ERR_IO, "%s: cannot list: %s", dir, strerror(errno));
    int64_t best = -1;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (!valid_marker(e->d_name, len) || e->d_name[len - 1] == '\n') continue;
        int64_t s = strtoll(e->d_name + 5, NULL, 10);
        char *m = str_printf("%s/%s/manifest.json", dir, e->d_name);
        struct stat sb;
        if (m && s != step && s > best && stat(m, &sb) == 0) best = s;
        free(m);
    }
    closedir(d);
    char *marker = str_printf("%s/latest", dir);
    if (!marker) return bg_errorf(BG_ERR_NOMEM, "checkpoint: out of memory");
    bg_status_t st = BG_OK;
    if (best >= 0) {
        char line[40];
        snprintf(line, sizeof(line), "step-%06" PRId64 "\n", best);
        st = bg_write_file_atomic(marker, line, strlen(line));
    } else if (unlink(marker) == 0) {
        st = bg_fsync_dir(dir);
    } else if (errno != ENOENT) {
        st = bg_errorf(BG_ERR_IO, "%s: cannot remove: %s", marker, strerror(errno));
    }
    if (st == BG_OK)
        bg_log(BG_LOG_WARN, "checkpoint: rewriting published step %" PRId64 "; %s meanwhile",
               step, best >= 0 ? "latest names the previous step" : "no checkpoint is published");
    free(marker);
    return st;
}

bg_status_t bg_ckpt_begin(const char *dir, int64_t step, char **step_path)
{
    char *sp = NULL, *cur = NULL;
    bg_status_t st = bg_ckpt_step_path(dir, step, &sp);
    if (st != BG_OK) return st;
    if ((st = bg_ckpt_dir_latest(dir, &cur)) != BG_OK) {
        /* A broken marker is replaced by the next publish; it must not block saving. */
        bg_log(BG_LOG_WARN, "checkpoint: ignoring unusable marker: %s", bg_last_error());
        bg_clear_error();
        st = BG_OK;
    }
    if (cur && !strcmp(cur, sp) && (st = unpublish(dir, step)) != BG_OK) goto err_free;
    if ((st = bg_mkdir_p(sp)) != BG_OK) goto err_free;
    free(cur);
    *step_path = sp;
    return BG_OK;

err_free:
    free(cur);
    free(sp);
    return st;
}

static char *manifest_json(int64_t step, int stages, int dp, int shards, const char *schedule,
                           const char *model, const bg_ckpt_file_entry_t *files, int n)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *arr = cJSON_CreateArray();
    char *text = NULL;
    if (!root || !arr) goto err_json;
    cJSON_AddItemToObject(root, "format", cJSON_CreateString(BG_CKPT_FORMAT));
    cJSON_AddItemToObject(root, "step", cJSON_CreateNumber((double)step));
    cJSON_AddItemToObject(root, "stages", cJSON_CreateNumber(stages));
    cJSON_AddItemToObject(root, "dp", cJSON_CreateNumber(dp));
    if (shards > 1) /* unsharded manifests stay exactly as they were */
        cJSON_AddItemToObject(root, "shards", cJSON_CreateNumber(shards));
    cJSON_AddItemToObject(root, "schedule", cJSON_CreateString(schedule));
    cJSON_AddItemToObject(root, "model", cJSON_CreateString(model));
    cJSON_AddItemToObject(root, "files", arr);
    arr = NULL; /* owned by root now */
    cJSON *farr = cJSON_GetObjectItemCaseSensitive(root, "files");
    for (int i = 0; i < n; i++) {
        cJSON *e = cJSON_CreateObject();
        if (!e) goto err_json;
        cJSON_AddItemToArray(farr, e);
        cJSON_AddItemToObject(e, "name", cJSON_CreateString(files[i].name));
        cJSON_AddItemToObject(e, "bytes", cJSON_CreateNumber((double)files[i].bytes));
        cJSON_AddItemToObject(e, "crc32", cJSON_CreateNumber((double)files[i].crc32));
        if (shards > 1) {
            cJSON_AddItemToObject(e, "stage", cJSON_CreateNumber(files[i].stage));
            cJSON_AddItemToObject(e, "shard", cJSON_CreateNumber(files[i].shard));
        }
    }
    text = cJSON_Print(root);
err_json:
    cJSON_Delete(arr);
    cJSON_Delete(root);
    return text;
}

/* Stage file i of a publish (shards per stage) validated into *fe. */
static bg_status_t publish_entry(const char *sp, int64_t step, int i, int shards,
                                 bg_ckpt_file_entry_t *fe)
{
    char *path = NULL;
    bg_st_file_t *f = NULL;
    fe->stage = i / shards, fe->shard = i % shards;
    bg_status_t st = shards > 1 ? bg_ckpt_shard_path(sp, fe->stage, fe->shard, &path)
                                : bg_ckpt_stage_path(sp, fe->stage, &path);
    if (st != BG_OK) return st;
    st = bg_st_open(path, &f);
    if (st != BG_OK) {
        bg_error_prefix(st, "checkpoint step %" PRId64 " stage %d not complete: ", step,
                        fe->stage);
        goto err_path;
    }
    bg_st_file_digest(f, &fe->bytes, &fe->crc32);
    bg_st_close(f);
    const char *base = strrchr(path, '/');
    if (!(fe->name = strdup(base ? base + 1 : path)))
        st = bg_errorf(BG_ERR_NOMEM, "checkpoint: out of memory");
err_path:
    free(path);
    return st;
}

/* bg_ckpt_publish with `shards` files per stage. */
static bg_status_t publish(const char *dir, int64_t step, int stages, int dp, int shards,
                           const char *schedule, const char *model)
{
    if (stages < 1 || dp < 1 || stages > CKPT_MAX_FILES || dp > CKPT_MAX_DP || !schedule ||
        !model || (shards != 1 && shards != dp) || (int64_t)stages * shards > CKPT_MAX_FILES)
        return bg_errorf(BG_ERR_INVALID, "checkpoint publish: bad layout or names");
    int n = stages * shards;
    char *sp = NULL, *mpath = NULL, *marker = NULL, *json = NULL, *line = NULL;
    bg_ckpt_file_entry_t *files = calloc((size_t)n, sizeof(*files));
    if (!files) return bg_errorf(BG_ERR_NOMEM, "checkpoint: out of memory");
    bg_status_t st = bg_ckpt_step_path(dir, step, &sp);
    for (int i = 0; i < n && st == BG_OK; i++)
        st = publish_entry(sp, step, i, shards, &files[i]);
    if (st != BG_OK) goto err_free;
    json = manifest_json(step, stages, dp, shards, schedule, model, files, n);
    mpath = str_printf("%s/manifest.json", sp);
    marker = str_printf("%s/latest", dir);
    line = str_printf("step-%06" PRId64 "\n", step);
    if (!json || !mpath || !marker || !line) {
        st = bg_errorf(BG_ERR_NOMEM, "checkpoint: out of memory");
        goto err_free;
    }
    if ((st = bg_write_file_atomic(mpath, json, strlen(json))) != BG_OK) goto err_free;
    st = bg_write_file_atomic(marker, line, strlen(line));

err_free:
    for (int i = 0; i < n; i++) free(files[i].name);
    free(files);
    free(sp);
    free(mpath);
    free(marker);
    free(json);
    free(line);
    return st;
}

bg_status_t bg_ckpt_publish(const char *dir, int64_t step, int stages, int dp,
                            const char *schedule, const char *model)
{
    return publish(dir, step, stages, dp, 1, schedule, model);
}

bg_status_t bg_ckpt_publish_sharded(const char *dir, int64_t step, int stages, int dp,
                                    const char *schedule, const char *model)
{
    return publish(dir, step, stages, dp, dp, schedule, model);
}

/* ---------------------------------------------------------------- reading */

typedef struct {
    const char *name;
    int file;
    const bg_st_tensor_t *t;
} name_ref_t;

struct bg_ckpt {
    bg_ckpt_manifest_t man;
    bg_st_file_t **files;
    name_ref_t *refs; /* sorted by (name, file) */
    size_t nrefs;
    ckpt_table_t tb; /* logical tensors: whole, or assembled from pieces */
};

static int cmp_ref(const void *a, const void *b)
{
    const name_ref_t *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : (x->file > y->file) - (x->file < y->file);
}

/* Open manifest entry i, checking size and CRC before trusting its header. */
static bg_status_t open_entry(const char *step_path, const bg_ckpt_file_entry_t *fe,
                              bg_st_file_t **out)
{
    char *path = str_printf("%s/%s", step_path, fe->name);
    if (!path) return bg_errorf(BG_ERR_NOMEM, "checkpoint: out of memory");
    bg_status_t st = BG_OK;
    struct stat sb;
    if (stat(path, &sb) != 0) {
        st = errno == ENOENT ? bg_errorf(BG_ERR_INVALID,
                                         "%s: listed in the manifest but missing (partial "
                                         "checkpoint)",
                                         path)
                             : bg_errorf(BG_ERR_IO, "%s: %s", path, strerror(errno));
        goto err_path;
    }
    if (!S_ISREG(sb.st_mode)) {
        st = bg_errorf(BG_ERR_INVALID, "%s: %s, not a checkpoint file", path,
                       S_ISDIR(sb.st_mode) ? "is a directory" : "not a regular file");
        goto err_path;
    }
    if ((uint64_t)sb.st_size != fe->bytes) {
        st = bg_errorf(BG_ERR_INVALID,
                       "%s: %" PRIu64 " bytes, the manifest says %" PRIu64 " (%s checkpoint file)",
                       path, (uint64_t)sb.st_size, fe->bytes,
                       (uint64_t)sb.st_size < fe->bytes ? "truncated" : "altered");
        goto err_path;
    }
    bg_st_file_t *f;
    if ((st = bg_st_open(path, &f)) != BG_OK) goto err_path;
    uint64_t bytes;
    uint32_t crc;
    bg_st_file_digest(f, &bytes, &crc);
    if (crc != fe->crc32 || bytes != fe->bytes) {
        st = bg_errorf(BG_ERR_INVALID,
                       "%s: CRC-32 %08" PRIx32 " does not match the manifest's %08" PRIx32
                       " (corrupted checkpoint file)",
                       path, crc, fe->crc32);
        bg_st_close(f);
        goto err_path;
    }
    *out = f;
err_path:
    free(path);
    return st;
}

bg_status_t bg_ckpt_open(const char *step_path, bg_ckpt_t **out)
{
    bg_ckpt_t *c = calloc(1, sizeof(*c));
    if (!c) return bg_errorf(BG_ERR_NOMEM, "checkpoint: out of memory");
    bg_status_t st = bg_ckpt_manifest_read(step_path, &c->man);
    if (st != BG_OK) goto err_free;
    c->files = calloc((size_t)c->man.nfiles, sizeof(*c->files));
    if (!c->files) {
        st = bg_errorf(BG_ERR_NOMEM, "checkpoint: out of memory");
        goto err_free;
    }
    size_t total = 0;
    for (int i = 0; i < c->man.nfiles; i++) {
        if ((st = open_entry(step_path, &c->man.files[i], &c->files[i])) != BG_OK) goto err_free;
        total += bg_st_count(c->files[i]);
    }
    c->refs = calloc(total + 1, sizeof(*c->refs));
    if (!c->refs) {
        st = bg_errorf(BG_ERR_NOMEM, "checkpoint: out of memory");
        goto err_free;
    }
    for (int i = 0; i < c->man.nfiles; i++) {
        for (size_t k = 0; k < bg_st_count(c->files[i]); k++) {
            const bg_st_tensor_t *t = bg_st_tensor_at(c->files[i], k);
            c->refs[c->nrefs++] = (name_ref_t){t->name, i, t};
        }
    }
    qsort(c->refs, c->nrefs, sizeof(*c->refs), cmp_ref);
    if ((st = bg_ckpt_table_build_(c->files, c->man.nfiles, &c->tb)) != BG_OK) goto err_free;
    *out = c;
    return BG_OK;

err_free:
    bg_ckpt_close(c);
    return st;
}

void bg_ckpt_close(bg_ckpt_t *c)
{
    if (!c) return;
    for (int i = 0; c->files && i < c->man.nfiles; i++) bg_st_close(c->files[i]);
    free(c->files);
    free(c->refs);
    bg_ckpt_table_free_(&c->tb);
    bg_ckpt_manifest_free(&c->man);
    free(c);
}

const bg_ckpt_manifest_t *bg_ckpt_manifest(const bg_ckpt_t *c)
{
    return &c->man;
}

int bg_ckpt_file_count(const bg_ckpt_t *c)
{
    return c->man.nfiles;
}

const bg_st_file_t *bg_ckpt_file(const bg_ckpt_t *c, int i)
{
    return i >= 0 && i < c->man.nfiles ? c->files[i] : NULL;
}

const bg_st_tensor_t *bg_ckpt_find(const bg_ckpt_t *c, const char *name,
                                   const bg_st_file_t **file)
{
    size_t lo = 0, hi = c->nrefs;
    while (lo < hi) { /* first ref with name >= `name` */
        size_t mid = (lo + hi) / 2;
        if (strcmp(c->refs[mid].name, name) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == c->nrefs || strcmp(c->refs[lo].name, name)) return NULL;
    if (file) *file = c->files[c->refs[lo].file];
    return c->refs[lo].t;
}

/* The logical tensor `name` after checking its shape as bg_st_read_f32
 * does; BG_ERR_INVALID naming the checkpoint or file otherwise. */
static bg_status_t tensor_checked(const bg_ckpt_t *c, const char *name, int ndim,
                                  const int64_t *shape, int64_t numel, const ckpt_tensor_t **out)
{
    const ckpt_tensor_t *x = bg_ckpt_table_find_(&c->tb, name);
    if (!x)
        return bg_errorf(BG_ERR_INVALID,
                         "checkpoint (step %" PRId64 ", %d stage files): no tensor named '%s'",
                         c->man.step, c->man.nfiles, name);
    const bg_ckpt_tensor_info_t *t = &x->info;
    bool same = shape ? t->ndim == ndim : t->numel == numel;
    for (int i = 0; shape && same && i < ndim; i++) same = t->shape[i] == shape[i];
    if (!same) {
        char have[160], want[160];
        bg_st_shape_text(t->ndim, t->shape, have, sizeof(have));
        if (shape)
            bg_st_shape_text(ndim, shape, want, sizeof(want));
        else
            snprintf(want, sizeof(want), "%" PRId64 " elements", numel);
        return bg_errorf(BG_ERR_INVALID, "%s: tensor '%s' has shape %s, expected %s",
                         x->t ? bg_st_path(c->files[x->file])
                              : bg_st_path(c->files[c->tb.pc[x->p0].file]),
                         name, have, want);
    }
    *out = x;
    return BG_OK;
}

bg_status_t bg_ckpt_read_f32(const bg_ckpt_t *c, const char *name, int ndim,
                             const int64_t *shape, int64_t numel, float *dst)
{
    const ckpt_tensor_t *x = bg_ckpt_table_find_(&c->tb, name);
    if (x && x->t) /* whole: the file's own checks and messages */
        return bg_st_read_f32(c->files[x->file], name, ndim, shape, numel, dst);
    bg_status_t st = tensor_checked(c, name, ndim, shape, numel, &x);
    return st == BG_OK ? bg_ckpt_table_read_(&c->tb, c->files, x, 0, x->info.numel, dst) : st;
}

bg_status_t bg_ckpt_read_f32_range(const bg_ckpt_t *c, const char *name, int ndim,
                                   const int64_t *shape, int64_t numel, int64_t off,
                                   int64_t count, float *dst)
{
    const ckpt_tensor_t *x;
    bg_status_t st = tensor_checked(c, name, ndim, shape, numel, &x);
    if (st != BG_OK) return st;
    if (off < 0 || count < 0 || off > x->info.numel || count > x->info.numel - off)
        return bg_errorf(BG_ERR_INVALID,
                         "checkpoint: tensor '%s' has %" PRId64 " elements; [%" PRId64
                         ", +%" PRId64 ") is outside it",
                         name, x->info.numel, off, count);
    if (x->t) return bg_st_read_f32_range(c->files[x->file], name, off, count, dst);
    return bg_ckpt_table_read_(&c->tb, c->files, x, off, count, dst);
}

size_t bg_ckpt_tensor_count(const bg_ckpt_t *c)
{
    return c->tb.nten;
}

void bg_ckpt_tensor_at(const bg_ckpt_t *c, size_t i, bg_ckpt_tensor_info_t *out)
{
    *out = c->tb.ten[i].info;
}

bool bg_ckpt_tensor_info(const bg_ckpt_t *c, const char *name, bg_ckpt_tensor_info_t *out)
{
    const ckpt_tensor_t *x = bg_ckpt_table_find_(&c->tb, name);
    if (x && out) *out = x->info;
    return x != NULL;
}

const char *bg_ckpt_meta(const bg_ckpt_t *c, const char *key)
{
    for (int i = 0; i < c->man.nfiles; i++) {
        const char *v = bg_st_meta(c->files[i], key);
        if (v) return v;
    }
    return NULL;
}
