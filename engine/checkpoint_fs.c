/*
 * engine/checkpoint_fs.c -- tmp + fsync + rename + directory fsync.
 * Must NOT leave a partially written file under a final name, and must
 * never unlink anything but its own temporary file.
 */
#include "engine/checkpoint_fs.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static char *dup_printf(const char *a, const char *b, long n)
{
    size_t len = strlen(a) + strlen(b) + 32;
    char *s = malloc(len);
    if (s) snprintf(s, len, "%s%s%ld", a, b, n);
    return s;
}

/* Directory part of `path` ("." if none) into a malloc'd string. */
static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash) return strdup(".");
    if (slash == path) return strdup("/");
    return strndup(path, (size_t)(slash - path));
}

bg_status_t bg_fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return bg_errorf(BG_ERR_IO, "%s: cannot open directory: %s", dir, strerror(errno));
    /* Some filesystems refuse fsync on directories (EINVAL); nothing more can be done there. */
    if (fsync(fd) != 0 && errno != EINVAL) {
        int e = errno;
        close(fd);
        return bg_errorf(BG_ERR_IO, "%s: fsync of directory failed: %s", dir, strerror(e));
    }
    close(fd);
    return BG_OK;
}

bg_status_t bg_mkdir_p(const char *path)
{
    char *p = strdup(path);
    if (!p) return bg_errorf(BG_ERR_NOMEM, "%s: out of memory", path);
    bg_status_t st = BG_OK;
    for (char *s = p + 1;; s++) {
        if (*s != '/' && *s != '\0') continue;
        char saved = *s;
        *s = '\0';
        if (mkdir(p, 0777) != 0 && errno != EEXIST) {
            st = bg_errorf(BG_ERR_IO, "%s: cannot create directory: %s", p, strerror(errno));
            break;
        }
        *s = saved;
        if (saved == '\0') break;
    }
    if (st == BG_OK) {
        struct stat sb;
        if (stat(path, &sb) != 0 || !S_ISDIR(sb.st_mode))
            st = bg_errorf(BG_ERR_IO, "%s: exists and is not a directory", path);
    }
    free(p);
    return st;
}

bg_status_t bg_atomic_open(const char *path, bg_atomic_file_t *out)
{
    bg_atomic_file_t f = {.fd = -1};
    f.path = strdup(path);
    f.tmp = dup_printf(path, ".tmp.", (long)getpid());
    if (!f.path || !f.tmp) {
        free(f.path);
        free(f.tmp);
        return bg_errorf(BG_ERR_NOMEM, "%s: out of memory", path);
    }
    f.fd = open(f.tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (f.fd < 0) {
        bg_status_t st = bg_errorf(BG_ERR_IO, "%s: cannot create: %s", f.tmp, strerror(errno));
        free(f.path);
        free(f.tmp);
        return st;
    }
    *out = f;
    return BG_OK;
}

bg_status_t bg_atomic_write(bg_atomic_file_t *f, const void *buf, size_t n)
{
    const char *p = buf;
    while (n > 0) {
        ssize_t w = write(f->fd, p, n > (1u << 30) ? (1u << 30) : n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0)
            return bg_errorf(BG_ERR_IO, "%s: write failed: %s", f->tmp,
                             w < 0 ? strerror(errno) : "no progress");
        p += w;
        n -= (size_t)w;
    }
    return BG_OK;
}

static void atomic_release(bg_atomic_file_t *f)
{
    free(f->path);
    free(f->tmp);
    f->path = f->tmp = NULL;
    f->fd = -1;
}

void bg_atomic_abort(bg_atomic_file_t *f)
{
    if (f->fd >= 0) close(f->fd);
    if (f->tmp) unlink(f->tmp);
    atomic_release(f);
}

/*
 * Test-only: BRIGADE_TEST_CKPT_STALL_S=X holds every safetensors file for
 * X seconds between its last byte and its rename, so tests can kill a run
 * in the middle of a checkpoint write and check that `latest` still loads.
 */
static void test_stall(const char *path)
{
    const char *v = getenv("BRIGADE_TEST_CKPT_STALL_S");
    size_t n = strlen(path), k = strlen(".safetensors");
    if (!v || !*v || n < k || strcmp(path + n - k, ".safetensors"))
        return;
    double s = strtod(v, NULL);
    if (s > 0 && s < 3600) {
        struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
        }
    }
}

bg_status_t bg_atomic_commit(bg_atomic_file_t *f)
{
    bg_status_t st = BG_OK;
    test_stall(f->path);
    if (fsync(f->fd) != 0) {
        st = bg_errorf(BG_ERR_IO, "%s: fsync failed: %s", f->tmp, strerror(errno));
        goto err_abort;
    }
    int fd = f->fd;
    f->fd = -1;
    if (close(fd) != 0) {
        st = bg_errorf(BG_ERR_IO, "%s: close failed: %s", f->tmp, strerror(errno));
        goto err_abort;
    }
    if (rename(f->tmp, f->path) != 0) {
        st = bg_errorf(BG_ERR_IO, "%s: cannot rename to %s: %s", f->tmp, f->path, strerror(errno));
        goto err_abort;
    }
    char *dir = dir_of(f->path);
    if (!dir) {
        st = bg_errorf(BG_ERR_NOMEM, "%s: out of memory", f->path);
    } else {
        st = bg_fsync_dir(dir);
        free(dir);
    }
    atomic_release(f);
    return st;

err_abort:
    bg_atomic_abort(f);
    return st;
}

bg_status_t bg_write_file_atomic(const char *path, const void *buf, size_t n)
{
    bg_atomic_file_t f;
    bg_status_t st = bg_atomic_open(path, &f);
    if (st != BG_OK) return st;
    st = bg_atomic_write(&f, buf, n);
    if (st != BG_OK) {
        bg_atomic_abort(&f);
        return st;
    }
    return bg_atomic_commit(&f);
}
