/*
 * tests/engine/test_train_faults.c -- failures reach the user fast, through
 * the real `brigade train`: one rank's error (a stage-0 --init failure, a
 * broken checkpoint on resume, an unwritable --metrics or --checkpoint-dir,
 * data that does not fit the model) stops the job within 2 s of what a
 * successful run of the same shape takes, with the failing rank's own
 * message; a SIGSTOPped rank of a 2x2 run is named by its own id within
 * 15 s and no process is left; a stranger hammering the store's port
 * during a 2-rank run changes nothing (same checkpoint as an undisturbed
 * run); two worker-mode jobs on one port refuse each other, naming both.
 * argv[1]: the brigade binary. Models come from BRIGADE_SOURCE_DIR. Writes
 * only under its own temporary directory.
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/clock.h"
#include "ckpt_same.h"
#include "test_util.h"
#include "transport/store_wire.h"
#include "transport/tp_harness.h"

static const char *brigade, *srcdir;
static char tmp[256], mlp[512], gpt[512];

/* Start `brigade train MODEL args...` (NULL-terminated), stdout to
 * /dev/null, stderr to `log`. */
static pid_t start(const char *log, const char *model, const char *const *args)
{
    const char *argv[64] = {brigade, "train", model};
    int n = 3;
    for (int i = 0; args[i] && n < 62; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        if (!freopen("/dev/null", "w", stdout) || !freopen(log, "w", stderr))
            _exit(126);
        execv(brigade, (char *const *)argv);
        _exit(127);
    }
    return pid;
}

/* Wait for pid at most `secs`; its exit code (-1: still running after the
 * bound, then killed; 128+N: signal N). *took gets the seconds waited. */
static int finish(pid_t pid, double t0, double secs, double *took)
{
    int st = 0;
    pid_t w;
    while ((w = waitpid(pid, &st, WNOHANG)) == 0 && bg_now_s() - t0 < secs)
        usleep(5000);
    *took = bg_now_s() - t0;
    if (w != pid) {
        kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
        return -1;
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static int run(const char *log, const char *model, const char *const *args, double bound,
               double *took)
{
    double t0 = bg_now_s();
    return finish(start(log, model, args), t0, bound, took);
}

static int log_has(const char *log, const char *phrase)
{
    char cmd[1200];
    snprintf(cmd, sizeof(cmd), "grep -qF -- '%s' '%s'", phrase, log);
    return system(cmd) == 0;
}

/* ---- fail fast ---- */

typedef struct {
    const char *name;
    const char *model;
    const char *args[16];
    const char *phrase; /* of the cause, in the failing rank's message */
} fail_case_t;

static void test_fail_fast(void)
{
    char log[400], ck[300], ckbad[300], init[400], cmd[1200];
    double took;
    snprintf(log, sizeof(log), "%s/fail.log", tmp);
    snprintf(ck, sizeof(ck), "%s/ck", tmp);
    snprintf(ckbad, sizeof(ckbad), "%s/ckbad", tmp);
    /* A 2-stage checkpoint: its stage-1 file is a bad --init for stage 0,
     * and a copy with a truncated stage-0 file is a bad resume. */
    const char *mk[] = {"--stages", "2", "--steps", "2", "--data", "synthetic:images",
                        "--checkpoint-dir", ck, NULL};
    double base;
    CHECK_MSG(run(log, mlp, mk, 60, &base) == 0, "the reference run failed (see %s)", log);
    snprintf(init, sizeof(init), "%s/step-000002/stage-1.safetensors", ck);
    snprintf(cmd, sizeof(cmd), "cp -r '%s' '%s' && truncate -s 100 '%s/step-000002/stage-0.safetensors'",
             ck, ckbad, ckbad);
    CHECK(system(cmd) == 0);
    const fail_case_t cases[] = {
        {"stage-0 --init", mlp,
         {"--stages", "2", "--steps", "2", "--data", "synthetic:images", "--init", init, NULL},
         "fc1.weight"},
        {"broken checkpoint on resume", mlp,
         {"--stages", "2", "--steps", "4", "--data", "synthetic:images", "--checkpoint-dir", ckbad,
          "--resume", NULL},
         "stage-0.safetensors"},
        {"--metrics a directory", mlp,
         {"--stages", "2", "--steps", "2", "--data", "synthetic:images", "--metrics", tmp, NULL},
         tmp},
        {"--checkpoint-dir a file", mlp,
         {"--stages", "2", "--steps", "2", "--data", "synthetic:images", "--checkpoint-dir",
          "/etc/passwd", NULL},
         "/etc/passwd"},
        {"data that does not fit the model", gpt,
         {"--stages", "2", "--steps", "2", "--data", "synthetic:images", NULL},
         "tokens"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const fail_case_t *c = &cases[i];
        int rc = run(log, c->model, c->args, 60, &took);
        CHECK_MSG(rc == 1 || rc == 2, "%s: exit %d (see %s)", c->name, rc, log);
        CHECK_MSG(took < base + 2.0, "%s: took %.2f s, a good run %.2f s", c->name, took, base);
        CHECK_MSG(log_has(log, c->phrase), "%s: the message does not name '%s'", c->name,
                  c->phrase);
        /* When the job ran, the launcher names the rank at fault with its place. */
        if (log_has(log, "all ranks stopped"))
            CHECK_MSG(log_has(log, "(stage ") && log_has(log, " on host "),
                      "%s: the launcher's message does not name rank, stage and host", c->name);
        printf("%-34s exit %d after %.2f s (good run %.2f s)\n", c->name, rc, took, base);
    }
}

/* ---- a stopped rank ---- */

/* The pid of rank `rank` among the processes whose command line has marker. */
static pid_t rank_pid(const char *marker, int rank, char *port, size_t cap)
{
    char cmd[400], path[64], env[16384];
    snprintf(cmd, sizeof(cmd), "pgrep -f -- '[%c]%s'", marker[0], marker + 1);
    FILE *p = popen(cmd, "r");
    long v;
    pid_t found = 0;
    while (p && fscanf(p, "%ld", &v) == 1) {
        snprintf(path, sizeof(path), "/proc/%ld/environ", v);
        int fd = open(path, O_RDONLY);
        ssize_t n = fd >= 0 ? read(fd, env, sizeof(env) - 1) : -1;
        if (fd >= 0)
            close(fd);
        char want[32];
        snprintf(want, sizeof(want), "BRIGADE_RANK=%d", rank);
        for (ssize_t i = 0; n > 0 && i < n; i += (ssize_t)strlen(env + i) + 1) {
            env[n] = 0;
            if (!strcmp(env + i, want))
                found = (pid_t)v;
            if (port && !strncmp(env + i, "BRIGADE_MASTER_PORT=", 20))
                snprintf(port, cap, "%s", env + i + 20);
        }
        if (found)
            break;
    }
    if (p)
        pclose(p);
    return found;
}

static int count_marked(const char *marker)
{
    char cmd[400];
    snprintf(cmd, sizeof(cmd), "pgrep -c -f -- '[%c]%s'", marker[0], marker + 1);
    FILE *p = popen(cmd, "r");
    int n = 0;
    if (p && fscanf(p, "%d", &n) != 1)
        n = 0;
    if (p)
        pclose(p);
    return n;
}

static void test_sigstop(void)
{
    char marker[300], log[400];
    snprintf(marker, sizeof(marker), "%s/stop_marker", tmp);
    snprintf(log, sizeof(log), "%s/stop.log", tmp);
    const char *args[] = {"--stages", "2", "--dp", "2", "--steps", "1000000", "--data",
                          "synthetic:images", "--log-every", "100000", "--metrics", marker, NULL};
    pid_t job = start(log, mlp, args);
    pid_t victim = 0;
    for (int i = 0; i < 200 && !victim; i++, usleep(50000))
        victim = rank_pid(marker, 1, NULL, 0);
    CHECK_MSG(victim > 0, "rank 1 did not start");
    usleep(1500000); /* training */
    double t0 = bg_now_s(), took;
    kill(victim, SIGSTOP);
    int rc = finish(job, t0, 30, &took);
    CHECK_MSG(rc == 1, "the launcher exited %d after a rank stopped (see %s)", rc, log);
    CHECK_MSG(took < 15.0, "a stopped rank was named after %.1f s", took);
    CHECK_MSG(log_has(log, "rank 1 (stage 1, dp 0) on host") && log_has(log, "unresponsive"),
              "the message does not name rank 1 as unresponsive (see %s)", log);
    usleep(300000);
    CHECK_MSG(count_marked(marker) == 0, "processes left behind after a stopped rank");
    printf("SIGSTOP of rank 1 in a 2x2 run: named after %.2f s, nothing left\n", took);
}

/* ---- a stranger at the store's port ---- */

/* Everything a stranger without the secret can try: requests without a
 * hello, a hello without proof as rank 1, a made-up job, a random proof,
 * oversized and garbage bytes, a flood of connections. */
static void hammer(int port)
{
    unsigned char junk[4096], nonce[32] = {1}, hello[36] = {0, 0, 0, 2};
    for (size_t i = 0; i < sizeof(junk); i++)
        junk[i] = (unsigned char)(i * 2654435761u >> 11);
    int fds[40];
    for (int round = 0; round < 3; round++) {
        int fd = tph_raw_connect(port);
        bg_tp_wire_send(fd, MSG_GET, 1, 0, "bg/tp/addr/0", NULL, 0);
        bg_tp_wire_send(fd, MSG_SET, 2, 0, "bg/tp/addr/1", "evil", 4);
        bg_tp_wire_send(fd, MSG_BARRIER, 3, 0, "bg/tp/fini", NULL, 0);
        bg_tp_wire_send(fd, MSG_HELLO, 4, 1, NULL, hello, sizeof(hello));
        close(fd);
        fd = tph_raw_connect(port);
        bg_tp_wire_send(fd, MSG_AUTH, 1, 0, "some-job", nonce, sizeof(nonce));
        bg_tp_wire_send(fd, MSG_HELLO, 2, 1, NULL, hello, sizeof(hello));
        close(fd);
        fd = tph_raw_connect(port);
        wire_hdr_t h = {htonl(MSG_SET), htonl(1), 0, htonl(4), htonl(1u << 20)};
        send(fd, &h, sizeof(h), MSG_NOSIGNAL);
        send(fd, junk, sizeof(junk), MSG_NOSIGNAL);
        close(fd);
        fd = tph_raw_connect(port);
        send(fd, junk, sizeof(junk), MSG_NOSIGNAL);
        close(fd);
        for (int i = 0; i < 40; i++)
            fds[i] = tph_raw_connect(port);
        usleep(300000);
        for (int i = 0; i < 40; i++)
            if (fds[i] >= 0)
                close(fds[i]);
    }
}

static void test_stranger(void)
{
    char log[400], quiet[300], loud[300], marker[300];
    snprintf(log, sizeof(log), "%s/stranger.log", tmp);
    snprintf(quiet, sizeof(quiet), "%s/ck_quiet", tmp);
    snprintf(loud, sizeof(loud), "%s/ck_loud", tmp);
    snprintf(marker, sizeof(marker), "%s/loud_marker", tmp);
    double took;
    const char *a1[] = {"--stages", "2", "--steps", "150", "--data", "synthetic:images",
                        "--log-every", "1000", "--checkpoint-dir", quiet, NULL};
    CHECK_MSG(run(log, mlp, a1, 120, &took) == 0, "the undisturbed run failed (see %s)", log);
    const char *a2[] = {"--stages", "2", "--steps", "150", "--data", "synthetic:images",
                        "--log-every", "1000", "--checkpoint-dir", loud, "--metrics", marker,
                        NULL};
    double t0 = bg_now_s();
    pid_t job = start(log, mlp, a2);
    char port[16] = "";
    for (int i = 0; i < 200 && !port[0]; i++, usleep(20000))
        rank_pid(marker, 1, port, sizeof(port));
    CHECK_MSG(port[0], "could not find the store's port");
    if (port[0])
        hammer(atoi(port));
    double hammered = bg_now_s() - t0;
    int rc = finish(job, t0, 120, &took);
    CHECK_MSG(rc == 0, "the run under attack exited %d (see %s)", rc, log);
    CHECK_MSG(took > hammered, "the run ended before the stranger was done: the test proves nothing");
    CHECK_MSG(bg_test_same_checkpoints(quiet, loud),
              "a stranger changed the training: checkpoints differ");
    printf("stranger at port %s for %.1f s of a %.1f s run: same checkpoint\n", port, hammered,
           took);
}

/* ---- the secret over ssh ---- */

/* --hosts through an `ssh` that runs the remote command here (first on
 * PATH) and records its command line: the ranks learn the secret (they
 * join and train), and no command line carries it. */
static void test_ssh_secret(void)
{
    char bin[300], ssh[400], args[400], log[400];
    snprintf(bin, sizeof(bin), "%s/bin", tmp);
    snprintf(ssh, sizeof(ssh), "%s/ssh", bin);
    snprintf(args, sizeof(args), "%s/ssh_args", tmp);
    snprintf(log, sizeof(log), "%s/ssh.log", tmp);
    mkdir(bin, 0700);
    FILE *f = fopen(ssh, "w");
    CHECK(f != NULL);
    if (!f)
        return;
    fprintf(f, "#!/bin/sh\nprintf '%%s\\n' \"$@\" >> '%s'\n", args);
    fprintf(f, "for a; do last=$a; done\nexec sh -c \"$last\"\n");
    fclose(f);
    chmod(ssh, 0700);
    char *path = getenv("PATH"), newpath[4096];
    snprintf(newpath, sizeof(newpath), "%s:%s", bin, path ? path : "/usr/bin:/bin");
    char *saved = path ? strdup(path) : NULL;
    setenv("PATH", newpath, 1);
    const char *a[] = {"--stages", "2", "--steps", "3", "--data", "synthetic:images", "--hosts",
                       "127.0.0.1:1,localhost:1", NULL};
    double took;
    int rc = run(log, mlp, a, 120, &took);
    if (saved)
        setenv("PATH", saved, 1);
    free(saved);
    CHECK_MSG(rc == 0, "a run over (local) ssh exited %d (see %s)", rc, log);
    CHECK_MSG(log_has(args, "BRIGADE_RANK=1"), "the ssh stand-in was not used");
    CHECK_MSG(!log_has(args, "BRIGADE_JOB_SECRET="), "the secret is on ssh's command line");
    printf("--hosts over ssh: the ranks got the secret on stdin, not the command line\n");
}

/* ---- two jobs, one port ---- */

/* Rank `rank` of a 2-rank worker-mode job (rank 0 hosts the store) of
 * `steps` steps, with --heartbeat-timeout `hb`. */
static pid_t start_worker(const char *log, int rank, const char *port, const char *secret,
                          const char *steps, const char *hb)
{
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        char r[16];
        snprintf(r, sizeof(r), "%d", rank);
        setenv("BRIGADE_RANK", r, 1);
        setenv("BRIGADE_WORLD_SIZE", "2", 1);
        setenv("BRIGADE_MASTER_ADDR", "127.0.0.1", 1);
        setenv("BRIGADE_MASTER_PORT", port, 1);
        setenv("BRIGADE_JOB_SECRET", secret, 1);
        setenv("BRIGADE_TP_TIMEOUT", "20", 1);
        unsetenv("BRIGADE_STORE");
        if (!freopen("/dev/null", "w", stdout) || !freopen(log, "w", stderr))
            _exit(126);
        execl(brigade, brigade, "train", mlp, "--stages", "2", "--steps", steps, "--data",
              "synthetic:images", "--log-every", "100000", "--heartbeat-timeout", hb,
              (char *)NULL);
        _exit(127);
    }
    return pid;
}

/* A free port for a rank-0-hosted store: bind 0, read it, close. */
static void free_port(char *port, size_t cap)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof(sa);
    bind(fd, (struct sockaddr *)&sa, sizeof(sa));
    getsockname(fd, (struct sockaddr *)&sa, &sl);
    close(fd);
    snprintf(port, cap, "%d", ntohs(sa.sin_port));
}

static void test_two_jobs(void)
{
    char port[16], log[4][400];
    free_port(port, sizeof(port));
    const char *secret[2] = {"secret-of-job-a-0123456789", "secret-of-job-b-0123456789"};
    pid_t pid[4];
    double t0 = bg_now_s(), took;
    for (int i = 0; i < 4; i++) {
        snprintf(log[i], sizeof(log[i]), "%s/two_%d.log", tmp, i);
        pid[i] = start_worker(log[i], i % 2, port, secret[i / 2], "30", "10");
    }
    int ok[2] = {1, 1}, refused = 0;
    for (int i = 0; i < 4; i++) {
        int rc = finish(pid[i], t0, 60, &took);
        ok[i / 2] &= rc == 0;
        refused += rc != 0 && log_has(log[i], "this store serves job") &&
                   log_has(log[i], "not job");
    }
    CHECK_MSG(ok[0] + ok[1] == 1, "two jobs on one port: %d of them finished", ok[0] + ok[1]);
    CHECK_MSG(refused == 2, "%d ranks were refused naming both jobs (want 2)", refused);
    CHECK_MSG(took < 30, "took %.1f s", took);
    printf("two jobs on port %s: one trained, the other's ranks refused naming both (%.1f s)\n",
           port, took);
}

/* Without a launcher rank 0 hosts the store: when it stops, the others
 * hear nothing from the store and name rank 0 within the heartbeat timeout. */
static void test_sigstop_host(void)
{
    char port[16], log[2][400];
    free_port(port, sizeof(port));
    const char *secret = "secret-of-the-stopped-job-0123";
    pid_t pid[2];
    for (int r = 0; r < 2; r++) {
        snprintf(log[r], sizeof(log[r]), "%s/host_%d.log", tmp, r);
        pid[r] = start_worker(log[r], r, port, secret, "1000000", "1");
    }
    usleep(2500000); /* joined and training */
    double t0 = bg_now_s(), took;
    kill(pid[0], SIGSTOP);
    int rc = finish(pid[1], t0, 20, &took);
    kill(pid[0], SIGKILL);
    kill(pid[0], SIGCONT);
    waitpid(pid[0], NULL, 0);
    CHECK_MSG(rc == 1, "rank 1 exited %d after rank 0 (the store's host) stopped (see %s)", rc,
              log[1]);
    CHECK_MSG(took < 4.0, "rank 1 noticed after %.1f s", took);
    CHECK_MSG(log_has(log[1], "rank 0, which hosts the rendezvous store") &&
                  log_has(log[1], "unresponsive"),
              "rank 1's message does not name rank 0 (see %s)", log[1]);
    printf("SIGSTOP of rank 0 hosting the store, --heartbeat-timeout 1: rank 1 named it after "
           "%.2f s\n",
           took);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s BRIGADE\n", argv[0]);
        return 2;
    }
    brigade = argv[1];
    srcdir = getenv("BRIGADE_SOURCE_DIR");
    if (!srcdir)
        srcdir = ".";
    snprintf(mlp, sizeof(mlp), "%s/models/mlp-fashion.graph", srcdir);
    snprintf(gpt, sizeof(gpt), "%s/models/gpt-tiny.graph", srcdir);
    snprintf(tmp, sizeof(tmp), "/tmp/bg_faults_%d", (int)getpid());
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s' && mkdir -p '%s'", tmp, tmp);
    if (system(cmd) != 0)
        return 1;
    unsetenv("BRIGADE_JOB_SECRET");
    test_fail_fast();
    test_two_jobs();
    test_stranger();
    test_sigstop();
    test_sigstop_host();
    test_ssh_secret();
    int rc = bg_test_finish("test_train_faults");
    if (rc == 0) {
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp);
        if (system(cmd) != 0)
            rc = 1;
    }
    return rc;
}
