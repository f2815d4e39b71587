/*
 * transport/store_auth.c -- the job secret and the store's handshake
 * proofs (store_auth.h, transport.h's bg_tp_auth_*): where the secret comes
 * from (made by a launcher, BRIGADE_JOB_SECRET, or the per-user file
 * ~/.config/brigade/secret that must be mode 0600), the job id, the key
 * derived from both, and the HMACs of the challenge-response.
 *
 * Must NOT: keep or log the secret (only the derived key leaves these
 * functions), accept a secret file others can read, or touch sockets.
 */
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "transport/store_auth.h"

#define SECRET_MIN 16u
#define SECRET_MAX 4096u

static bg_status_t auth_init(void)
{
    /* sodium_init is idempotent and thread-safe; < 0 means no entropy. */
    if (sodium_init() < 0)
        return bg_errorf(BG_ERR_INTERNAL, "libsodium could not initialise (no entropy source?)");
    return BG_OK;
}

bg_status_t bg_tp_auth_generate(char *secret, size_t cap)
{
    unsigned char raw[32];
    if (cap < 2 * sizeof(raw) + 1)
        return bg_errorf(BG_ERR_INVALID, "job secret: buffer of %zu bytes, need %zu", cap,
                         2 * sizeof(raw) + 1);
    bg_status_t st = auth_init();
    if (st != BG_OK)
        return st;
    randombytes_buf(raw, sizeof(raw));
    sodium_bin2hex(secret, cap, raw, sizeof(raw));
    sodium_memzero(raw, sizeof(raw));
    return BG_OK;
}

bg_status_t bg_tp_auth_from_secret(const char *secret, const char *job, bg_tp_auth_t *out)
{
    size_t n = strlen(secret);
    if (n < SECRET_MIN)
        return bg_errorf(BG_ERR_INVALID, "job secret of %zu bytes is too short (at least %u)", n,
                         SECRET_MIN);
    if (job && (strlen(job) >= sizeof(out->job) || !*job))
        return bg_errorf(BG_ERR_INVALID, "job id '%.40s' must have 1..%zu characters", job,
                         sizeof(out->job) - 1);
    bg_status_t st = auth_init();
    if (st != BG_OK)
        return st;
    bg_tp_auth_t a;
    unsigned char h[crypto_hash_sha256_BYTES], id[crypto_auth_hmacsha256_BYTES];
    crypto_hash_sha256(h, (const unsigned char *)secret, n);
    if (job) {
        snprintf(a.job, sizeof(a.job), "%s", job);
    } else {
        /* Derived, so every rank of a launcher's job agrees without being told. */
        static const char label[] = "brigade-job-id";
        crypto_auth_hmacsha256(id, (const unsigned char *)label, sizeof(label) - 1, h);
        sodium_bin2hex(a.job, 17, id, 8);
    }
    /* The key binds the job id, so a per-user secret shared by two jobs
     * still gives each job its own key. */
    crypto_auth_hmacsha256_state s;
    crypto_auth_hmacsha256_init(&s, h, sizeof(h));
    crypto_auth_hmacsha256_update(&s, (const unsigned char *)"brigade-key", 11);
    crypto_auth_hmacsha256_update(&s, (const unsigned char *)a.job, strlen(a.job));
    crypto_auth_hmacsha256_final(&s, a.key);
    sodium_memzero(h, sizeof(h));
    *out = a;
    return BG_OK;
}

/* The secret file: a regular file of this user that nobody else may read.
 * buf gets its first line. BG_OK; BG_ERR_CANCELED (nothing recorded) when
 * there is no such file; other errors recorded. */
static bg_status_t secret_file(char *buf, size_t cap, char *path, size_t pcap)
{
    const char *home = getenv("HOME");
    snprintf(path, pcap, "%s/.config/brigade/secret", home && *home ? home : "");
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? BG_ERR_CANCELED
                               : bg_errorf(BG_ERR_IO, "job secret %s: %s", path, strerror(errno));
    struct stat sb;
    bg_status_t st = BG_OK;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_uid != getuid())
        st = bg_errorf(BG_ERR_INVALID, "job secret %s: not a regular file owned by you", path);
    else if (sb.st_mode & 077)
        st = bg_errorf(BG_ERR_INVALID,
                       "job secret %s has mode %04o: others may read it; run chmod 600 %s", path,
                       (unsigned)(sb.st_mode & 07777), path);
    ssize_t n = st == BG_OK ? read(fd, buf, cap - 1) : 0;
    close(fd);
    if (st != BG_OK)
        return st;
    if (n < 0)
        return bg_errorf(BG_ERR_IO, "job secret %s: %s", path, strerror(errno));
    buf[n] = '\0';
    buf[strcspn(buf, "\r\n")] = '\0';
    return BG_OK;
}

/* The job id an outer launcher gives all ranks of one job, or NULL. */
static const char *job_from_env(char *buf, size_t cap)
{
    const char *v = getenv("BRIGADE_JOB_ID");
    if (v && *v)
        return v;
    const char *sj = getenv("SLURM_JOB_ID"), *ss = getenv("SLURM_STEP_ID");
    if (sj && *sj) {
        snprintf(buf, cap, "slurm-%s.%s", sj, ss && *ss ? ss : "0");
        return buf;
    }
    v = getenv("TORCHELASTIC_RUN_ID");
    if (v && *v && strcmp(v, "none")) {
        snprintf(buf, cap, "torchrun-%s", v);
        return buf;
    }
    v = getenv("OMPI_MCA_ess_base_jobid");
    if (v && *v) {
        snprintf(buf, cap, "ompi-%s", v);
        return buf;
    }
    return NULL;
}

bg_status_t bg_tp_auth_from_env(bg_tp_auth_t *out)
{
    char buf[SECRET_MAX], path[1024], job[BG_TP_JOB_MAX];
    const char *secret = getenv("BRIGADE_JOB_SECRET");
    if (!secret || !*secret) {
        bg_status_t st = secret_file(buf, sizeof(buf), path, sizeof(path));
        if (st == BG_ERR_CANCELED)
            return bg_errorf(BG_ERR_INVALID,
                             "no job secret: set BRIGADE_JOB_SECRET for every rank or create %s "
                             "(mode 0600) on every host; see README",
                             path);
        if (st != BG_OK)
            return st;
        secret = buf;
    }
    bg_status_t st = bg_tp_auth_from_secret(secret, job_from_env(job, sizeof(job)), out);
    sodium_memzero(buf, sizeof(buf));
    return st;
}

void bg_tp_auth_nonce(unsigned char n[AUTH_NONCE])
{
    randombytes_buf(n, AUTH_NONCE);
}

static void mac_of(const bg_tp_auth_t *a, const char *label, const unsigned char *n1,
                   const unsigned char *n2, const unsigned char *tail, size_t tail_len,
                   unsigned char mac[AUTH_MAC])
{
    crypto_auth_hmacsha256_state s;
    crypto_auth_hmacsha256_init(&s, a->key, sizeof(a->key));
    crypto_auth_hmacsha256_update(&s, (const unsigned char *)label, strlen(label));
    crypto_auth_hmacsha256_update(&s, (const unsigned char *)a->job, strlen(a->job) + 1);
    crypto_auth_hmacsha256_update(&s, n1, AUTH_NONCE);
    crypto_auth_hmacsha256_update(&s, n2, AUTH_NONCE);
    if (tail_len)
        crypto_auth_hmacsha256_update(&s, tail, tail_len);
    crypto_auth_hmacsha256_final(&s, mac);
}

void bg_tp_auth_server_mac(const bg_tp_auth_t *a, const unsigned char *nonce_c,
                           const unsigned char *nonce_s, unsigned char mac[AUTH_MAC])
{
    mac_of(a, "brigade-s", nonce_c, nonce_s, NULL, 0, mac);
}

void bg_tp_auth_client_mac(const bg_tp_auth_t *a, const unsigned char *nonce_s,
                           const unsigned char *nonce_c, uint32_t rank, uint32_t world,
                           unsigned char mac[AUTH_MAC])
{
    unsigned char t[8] = {(unsigned char)(rank >> 24), (unsigned char)(rank >> 16),
                          (unsigned char)(rank >> 8),  (unsigned char)rank,
                          (unsigned char)(world >> 24), (unsigned char)(world >> 16),
                          (unsigned char)(world >> 8),  (unsigned char)world};
    mac_of(a, "brigade-c", nonce_s, nonce_c, t, sizeof(t), mac);
}

int bg_tp_auth_equal(const unsigned char *x, const unsigned char *y)
{
    return crypto_verify_32(x, y) == 0;
}
