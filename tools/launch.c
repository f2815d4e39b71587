/*
 * tools/launch.c -- spawn, watch and (when one fails) stop all ranks.
 *
 * Guarantees, in order of importance: no rank outlives the launcher
 * (PR_SET_PDEATHSIG in every child, one process group for the job, SIGTERM
 * then SIGKILL on failure or interruption); the first rank at fault is named
 * -- died (how), failed (its own message, from the store), unresponsive or
 * hung (the store's liveness checks) -- with its stage, dp and host; every
 * line a rank prints reaches the terminal, prefixed with who printed it.
 * Each job has a fresh secret that only its ranks learn: in the environment
 * of local ranks, on ssh's stdin for remote ones (never a command line).
 * Must not interpret the ranks' work.
 */
#include "tools/launch.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "transport/transport.h"

/* Everything one run shares between its steps. */
typedef struct launch_job {
    char secret[72];   /* hex; the ranks' BRIGADE_JOB_SECRET */
    int port;          /* the store's */
    int all_local;     /* no --hosts: UCX may stay on this host's devices */
} launch_job_t;

typedef struct rank_proc {
    pid_t pid;
    int keepalive_fd;   /* remote ranks: write end of ssh's stdin; closing it kills the rank */
    int out_fd, err_fd; /* read ends; -1 when closed */
    char out_buf[4096], err_buf[4096];
    size_t out_len, err_len;
    int done, status;
} rank_proc_t;

static volatile sig_atomic_t launch_interrupted;

static void on_signal(int sig)
{
    launch_interrupted = sig;
}

static void set_env_int(const char *k, long v)
{
    char buf[32];
    snprintf(buf, sizeof(buf), "%ld", v);
    setenv(k, buf, 1);
}

int bg_launch_interrupted(void)
{
    return (int)launch_interrupted;
}

int bg_launch_host_of(const bg_launch_conf_t *c, int r, int *local)
{
    int first = 0;
    for (int h = 0; h < c->nhosts; h++) {
        if (r < first + c->slots[h]) {
            *local = r - first;
            return h;
        }
        first += c->slots[h];
    }
    *local = r;
    return -1;
}

/* Append s to buf single-quoted for a POSIX shell. */
static void shq(char *buf, size_t cap, const char *s)
{
    size_t n = strlen(buf);
    if (n + 2 >= cap)
        return;
    buf[n++] = '\'';
    for (; *s && n + 5 < cap; s++) {
        if (*s == '\'') {
            memcpy(buf + n, "'\\''", 4);
            n += 4;
        } else {
            buf[n++] = *s;
        }
    }
    buf[n++] = '\'';
    buf[n++] = ' ';
    buf[n] = 0;
}

/*
 * The command ssh runs on a remote host: the rank in the background, and a
 * watcher that kills it when ssh's stdin closes (the launcher died or gave
 * up), so a lost connection never leaves an orphan behind.
 */
static void remote_command(const bg_launch_conf_t *c, int r, int local, int port, char *buf,
                           size_t cap)
{
    char cwd[1024], tmp[64];
    if (!getcwd(cwd, sizeof(cwd)))
        snprintf(cwd, sizeof(cwd), "/");
    buf[0] = 0;
    /* The first line of ssh's stdin is the job secret (read byte by byte,
     * so the watcher still gets the rest); fd 3: ssh's stdin for the watcher
     * (background jobs read /dev/null); fd 4: the rank's stderr; the
     * shell's own job chatter goes nowhere. */
    strncat(buf,
            "IFS= read -r BRIGADE_JOB_SECRET || exit 126; export BRIGADE_JOB_SECRET; "
            "exec 3<&0 4>&2 2>/dev/null; cd ",
            cap - strlen(buf) - 1);
    shq(buf, cap, cwd);
    strncat(buf, "&& env ", cap - strlen(buf) - 1);
    const char *kv[][2] = {{"BRIGADE_MASTER_ADDR", c->master_addr ? c->master_addr : "127.0.0.1"},
                           {"BRIGADE_STORE", "external"},
                           {"BRIGADE_WORKER", "1"}};
    for (size_t i = 0; i < sizeof(kv) / sizeof(kv[0]); i++) {
        char a[512];
        snprintf(a, sizeof(a), "%s=%s", kv[i][0], kv[i][1]);
        shq(buf, cap, a);
    }
    for (int i = 0; c->env && c->env[i]; i++)
        shq(buf, cap, c->env[i]);
    snprintf(tmp, sizeof(tmp), "BRIGADE_RANK=%d", r), shq(buf, cap, tmp);
    snprintf(tmp, sizeof(tmp), "BRIGADE_WORLD_SIZE=%d", c->nranks), shq(buf, cap, tmp);
    snprintf(tmp, sizeof(tmp), "BRIGADE_LOCAL_RANK=%d", local), shq(buf, cap, tmp);
    snprintf(tmp, sizeof(tmp), "BRIGADE_MASTER_PORT=%d", port), shq(buf, cap, tmp);
    shq(buf, cap, c->remote_exe ? c->remote_exe : c->argv[0]);
    for (int i = 1; c->argv[i]; i++)
        shq(buf, cap, c->argv[i]);
    /* When the rank ends first, the watcher and its cat must go, or ssh waits. */
    strncat(buf,
            "2>&4 & p=$!; (cat <&3 >/dev/null; kill -9 $p 2>/dev/null) & w=$!; "
            "wait $p; rc=$?; pkill -P $w 2>/dev/null; kill $w 2>/dev/null; wait $w 2>/dev/null; "
            "exit $rc",
            cap - strlen(buf) - 1);
}

/* In the child, between fork and exec: only async-signal-safe calls. */
static void child_exec(const bg_launch_conf_t *c, const launch_job_t *j, int rank, pid_t pgid,
                       pid_t parent, int out_w, int err_w, int in_r)
{
    int port = j->port;
    setpgid(0, pgid);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(127); /* the launcher died before we got here */
    dup2(out_w, STDOUT_FILENO);
    dup2(err_w, STDERR_FILENO);
    int local = rank, h = c->hosts ? bg_launch_host_of(c, rank, &local) : -1;
    if (h >= 0) {
        static char cmd[16384];
        dup2(in_r, STDIN_FILENO);
        remote_command(c, rank, local, port, cmd, sizeof(cmd));
        execlp("ssh", "ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=accept-new", "-o",
               "ServerAliveInterval=5", "-o", "ServerAliveCountMax=2", c->hosts[h], cmd,
               (char *)NULL);
        dprintf(STDERR_FILENO, "brigade: cannot exec ssh: %s\n", strerror(errno));
        _exit(127);
    }
    set_env_int("BRIGADE_RANK", rank);
    set_env_int("BRIGADE_WORLD_SIZE", c->nranks);
    set_env_int("BRIGADE_LOCAL_RANK", rank);
    set_env_int("BRIGADE_MASTER_PORT", port);
    setenv("BRIGADE_MASTER_ADDR", c->master_addr ? c->master_addr : "127.0.0.1", 1);
    setenv("BRIGADE_STORE", "external", 1);
    setenv("BRIGADE_WORKER", "1", 1);
    setenv("BRIGADE_JOB_SECRET", j->secret, 1);
    /* Every rank is on this host: UCX needs no network device but loopback,
     * so it opens no port on the others (shared memory is unaffected). */
    if (j->all_local && !getenv("UCX_NET_DEVICES"))
        setenv("UCX_NET_DEVICES", "lo", 1);
    if (c->tty)
        setenv("BRIGADE_TTY", "1", 1);
    for (int i = 0; c->env && c->env[i]; i++)
        putenv((char *)c->env[i]); /* lives until exec; putenv keeps the pointer */
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    execv(c->exe ? c->exe : c->argv[0], c->argv);
    dprintf(STDERR_FILENO, "brigade: cannot exec %s: %s\n", c->exe ? c->exe : c->argv[0],
            strerror(errno));
    _exit(127);
}

static void rank_name(const bg_launch_conf_t *c, int r, char *buf, size_t len)
{
    int s = c->stages > 0 ? c->stages : 1;
    if (c->workers > 0 && r >= c->workers)
        snprintf(buf, len, "rank %d (ps server %d)", r, r - c->workers);
    else
        snprintf(buf, len, "rank %d (stage %d, dp %d)", r, r % s, r / s);
}

/* Rank 0's line saying it finished its first step after a restart. */
static void note_line(const bg_launch_conf_t *c, int r, const char *line, size_t len)
{
    size_t ml = strlen(BG_LAUNCH_STEP_MARK);
    if (r != 0 || len <= ml || memcmp(line, BG_LAUNCH_STEP_MARK, ml) != 0)
        return;
    char tail[64];
    long long step = -1, from = -1;
    snprintf(tail, sizeof(tail), "%.*s", (int)(len - ml), line + ml);
    if (sscanf(tail, " step %lld, resumed from step %lld", &step, &from) != 2)
        return;
    if (c->result)
        c->result->stepped = 1;
    if (c->on_step)
        c->on_step(c->on_step_arg, step, from);
}

/* Forward complete lines (or \r-terminated progress updates) with a prefix. */
static void flush_lines(const bg_launch_conf_t *c, int r, char *buf, size_t *len, FILE *to,
                        int final)
{
    size_t start = 0;
    for (size_t i = 0; i < *len; i++) {
        if (buf[i] != '\n' && buf[i] != '\r')
            continue;
        note_line(c, r, buf + start, i - start);
        if (c->quiet_prefix)
            fprintf(to, "%.*s%c", (int)(i - start), buf + start, buf[i]);
        else
            fprintf(to, "[r%d] %.*s%c", r, (int)(i - start), buf + start, buf[i]);
        start = i + 1;
    }
    if (final && start < *len) {
        if (c->quiet_prefix)
            fprintf(to, "%.*s\n", (int)(*len - start), buf + start);
        else
            fprintf(to, "[r%d] %.*s\n", r, (int)(*len - start), buf + start);
        start = *len;
    }
    if (start == 0 && *len == 4096 - 1) { /* a very long line: pass it on in pieces */
        fprintf(to, "[r%d] %.*s\n", r, (int)*len, buf);
        start = *len;
    }
    memmove(buf, buf + start, *len - start);
    *len -= start;
    fflush(to);
}

static void pump_fd(const bg_launch_conf_t *c, int r, int *fd, char *buf, size_t *len, FILE *to)
{
    ssize_t n = read(*fd, buf + *len, 4096 - 1 - *len);
    if (n > 0) {
        *len += (size_t)n;
        flush_lines(c, r, buf, len, to, 0);
    } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
        flush_lines(c, r, buf, len, to, 1);
        close(*fd);
        *fd = -1;
    }
}

static void describe_exit(int status, char *buf, size_t len)
{
    if (WIFSIGNALED(status))
        snprintf(buf, len, "killed by signal %d (%s)", WTERMSIG(status),
                 strsignal(WTERMSIG(status)));
    else
        snprintf(buf, len, "exited with status %d", WEXITSTATUS(status));
}

static int failed(int status)
{
    return !WIFEXITED(status) || WEXITSTATUS(status) != 0;
}

/* Reap rank r if it has exited (`block`: wait for it). Returns 1 when it
 * finished in this call; p->status then holds how. */
static int reap(rank_proc_t *p, int block)
{
    int st;
    if (p->done || waitpid(p->pid, &st, block ? 0 : WNOHANG) != p->pid)
        return 0;
    p->done = 1;
    p->status = st;
    return 1;
}

/* Wait up to `grace` seconds for children, then SIGKILL the whole group. */
static void stop_all(rank_proc_t *p, int n, pid_t pgid, double grace)
{
    kill(-pgid, SIGTERM);
    double deadline = bg_now_s() + grace;
    for (;;) {
        int alive = 0;
        for (int r = 0; r < n; r++) {
            reap(&p[r], 0);
            alive += !p[r].done;
        }
        if (!alive || bg_now_s() > deadline)
            break;
        usleep(20000);
    }
    kill(-pgid, SIGKILL);
    for (int r = 0; r < n; r++)
        reap(&p[r], 1);
}

/* Start rank r in the job's process group (*pgid: 0 until the first rank
 * makes it). 0 ok, 1 with a message when a pipe or fork failed. */
static int spawn_rank(const bg_launch_conf_t *c, const launch_job_t *j, rank_proc_t *p, int r,
                      pid_t *pgid)
{
    int o[2], e[2], in[2] = {-1, -1};
    if (pipe2(o, O_CLOEXEC) || pipe2(e, O_CLOEXEC) || (c->hosts && pipe2(in, O_CLOEXEC))) {
        fprintf(stderr, "brigade: pipe: %s\n", strerror(errno));
        return 1;
    }
    fflush(stdout);
    fflush(stderr);
    pid_t self = getpid(), pid = fork();
    if (pid < 0) {
        fprintf(stderr, "brigade: cannot start rank %d: %s\n", r, strerror(errno));
        close(o[0]), close(o[1]), close(e[0]), close(e[1]);
        return 1;
    }
    if (pid == 0) {
        close(o[0]);
        close(e[0]);
        if (in[1] >= 0)
            close(in[1]);
        child_exec(c, j, r, *pgid, self, o[1], e[1], in[0]);
    }
    if (!*pgid)
        *pgid = pid;
    setpgid(pid, *pgid); /* also done by the child: whoever runs first wins the race */
    close(o[1]);
    close(e[1]);
    if (in[0] >= 0) {
        close(in[0]);
        /* The remote command's first line: far below a pipe's buffer. */
        dprintf(in[1], "%s\n", j->secret);
    }
    p[r].keepalive_fd = in[1];
    p[r].pid = pid;
    p[r].out_fd = o[0];
    p[r].err_fd = e[0];
    return 0;
}

/* The store's first fault, unless it is a death (the exit status tells
 * more about those): a rank's own failure report or a liveness verdict. */
static int store_verdict(bg_tp_server_t *srv, bg_tp_fault_t *fault)
{
    bg_tp_fault_t f;
    if (!bg_tp_server_fault(srv, &f) || f.kind == BG_TP_FAULT_DIED)
        return 0;
    *fault = f;
    return 1;
}

/* Forward what ranks print until one fails, the store reports a fault, a
 * signal comes, or all are done. fds/map have room for 2 n entries. Returns
 * the rank that failed first, or -1; *fault gets the store's verdict. */
static int watch(const bg_launch_conf_t *c, rank_proc_t *p, struct pollfd *fds, int *map,
                 bg_tp_server_t *srv, bg_tp_fault_t *fault)
{
    int n = c->nranks, first_bad = -1;
    for (;;) {
        int nf = 0;
        for (int r = 0; r < n; r++) {
            if (p[r].out_fd >= 0)
                fds[nf] = (struct pollfd){p[r].out_fd, POLLIN, 0}, map[nf++] = r;
            if (p[r].err_fd >= 0)
                fds[nf] = (struct pollfd){p[r].err_fd, POLLIN, 0}, map[nf++] = -1 - r;
        }
        if (nf)
            poll(fds, (nfds_t)nf, 100);
        else
            usleep(50000);
        for (int i = 0; i < nf; i++) {
            if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            int r = map[i] >= 0 ? map[i] : -1 - map[i];
            if (map[i] >= 0)
                pump_fd(c, r, &p[r].out_fd, p[r].out_buf, &p[r].out_len, stdout);
            else
                pump_fd(c, r, &p[r].err_fd, p[r].err_buf, &p[r].err_len, stderr);
        }
        int alive = 0;
        for (int r = 0; r < n; r++) {
            if (!reap(&p[r], 0)) {
                alive += !p[r].done;
                continue;
            }
            int st = p[r].status;
            /* A rank killed by a signal is a better root cause than its peers'
             * error exits, which it usually triggered. */
            if (failed(st) &&
                (first_bad < 0 || (WIFSIGNALED(st) && !WIFSIGNALED(p[first_bad].status))))
                first_bad = r;
        }
        if (store_verdict(srv, fault) || first_bad >= 0 || launch_interrupted || !alive)
            return first_bad;
    }
}

/* Where rank r runs, for messages. */
static void rank_host(const bg_launch_conf_t *c, int r, const char *said, char *buf, size_t len)
{
    int local = 0, h = c->hosts ? bg_launch_host_of(c, r, &local) : -1;
    if (said && *said)
        snprintf(buf, len, "%s", said);
    else if (h >= 0)
        snprintf(buf, len, "%s", c->hosts[h]);
    else if (gethostname(buf, len) != 0)
        snprintf(buf, len, "localhost");
    buf[len - 1] = 0;
}

/*
 * The store named a rank at fault: an unresponsive or hung one is killed at
 * once (SIGKILL also ends a stopped process); the others were told by the
 * store and get a moment to leave on their own, then everything is stopped.
 */
static void stop_for_fault(const bg_launch_conf_t *c, rank_proc_t *p, pid_t pgid,
                           const bg_tp_fault_t *f)
{
    int n = c->nranks;
    if (f->kind != BG_TP_FAULT_FAILED && f->rank >= 0 && f->rank < n && !p[f->rank].done)
        kill(p[f->rank].pid, SIGKILL);
    double deadline = bg_now_s() + 1.0;
    for (int alive = n; alive && bg_now_s() < deadline;) {
        alive = 0;
        for (int r = 0; r < n; r++) {
            reap(&p[r], 0);
            alive += !p[r].done;
        }
        if (alive)
            usleep(10000);
    }
    kill(-pgid, SIGCONT); /* a stopped rank must see the SIGTERM that follows */
    stop_all(p, n, pgid, 0.5);
}

/* The fault for a caller that may restart the job. */
static void note_cause(const bg_launch_conf_t *c, int rank, const char *msg)
{
    if (!c->result)
        return;
    c->result->rank = rank;
    snprintf(c->result->cause, sizeof(c->result->cause), "%s", msg);
}

/* The message and exit code for the store's verdict: the rank's own words
 * for a failure (its exit code: 2 when it refused its input), the store's
 * account for an unresponsive or hung rank. */
static int report_fault(const bg_launch_conf_t *c, const bg_tp_fault_t *f)
{
    char who[64], host[64];
    rank_name(c, f->rank, who, sizeof(who));
    rank_host(c, f->rank, f->host, host, sizeof(host));
    const char *why = f->why;
    size_t wl = strlen(who);
    if (!strncmp(why, who, wl) && why[wl] == ':')
        why += wl + (why[wl + 1] == ' ' ? 2 : 1); /* the rank named itself already */
    const char *what = f->kind == BG_TP_FAULT_FAILED         ? "failed"
                       : f->kind == BG_TP_FAULT_UNRESPONSIVE ? "is unresponsive"
                                                             : "is hung";
    char msg[sizeof(c->result->cause)];
    snprintf(msg, sizeof(msg), "%s on host %s %s: %s", who, host, what, why);
    fprintf(stderr, "brigade: %s; all ranks stopped\n", msg);
    note_cause(c, f->rank, msg);
    return f->kind == BG_TP_FAULT_FAILED && f->status == BG_ERR_INVALID ? 2 : 1;
}

/* The job's exit code after the ranks are gone, with its one message. */
static int report(const bg_launch_conf_t *c, const rank_proc_t *p, int first_bad)
{
    if (launch_interrupted) {
        /* What a shell expects of a command a signal stopped: 128 + the signal
         * (130 for Ctrl-C, 143 for SIGTERM), whatever the ranks did meanwhile. */
        fprintf(stderr, "brigade: interrupted by signal %d (%s); all ranks stopped\n",
                (int)launch_interrupted, strsignal((int)launch_interrupted));
        return 128 + (int)launch_interrupted;
    }
    if (first_bad < 0)
        return 0;
    char who[64], how[96], host[64];
    rank_name(c, first_bad, who, sizeof(who));
    describe_exit(p[first_bad].status, how, sizeof(how));
    rank_host(c, first_bad, NULL, host, sizeof(host));
    char msg[sizeof(c->result->cause)];
    snprintf(msg, sizeof(msg), "%s died: %s on host %s", who, how, host);
    fprintf(stderr, "brigade: %s; all ranks stopped\n", msg);
    note_cause(c, first_bad, msg);
    /* A rank that refused its input (exit 2) makes the job a usage error. */
    return WIFEXITED(p[first_bad].status) && WEXITSTATUS(p[first_bad].status) == 2 ? 2 : 1;
}

int bg_launch_route_addr(const char *host, char *out, size_t cap)
{
    /* A UDP connect sends nothing; it only asks the kernel for the route. */
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_DGRAM;
    if (getaddrinfo(host, "9", &hints, &res) != 0)
        return -1;
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in me = {0};
    socklen_t ml = sizeof(me);
    int ok = fd >= 0 && connect(fd, res->ai_addr, res->ai_addrlen) == 0 &&
             getsockname(fd, (struct sockaddr *)&me, &ml) == 0 &&
             inet_ntop(AF_INET, &me.sin_addr, out, (socklen_t)cap) != NULL;
    if (fd >= 0)
        close(fd);
    freeaddrinfo(res);
    return ok ? 0 : -1;
}

static void catch_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
}

/*
 * The job's secret and its store: bound to loopback for a local job, to
 * the master address only for --hosts, with the liveness bounds. 0, or 1
 * with a message.
 */
static int host_store(const bg_launch_conf_t *c, launch_job_t *j, bg_tp_server_t **srv)
{
    bg_tp_auth_t auth;
    j->all_local = !c->hosts;
    if (bg_tp_auth_generate(j->secret, sizeof(j->secret)) != BG_OK ||
        bg_tp_auth_from_secret(j->secret, NULL, &auth) != BG_OK) {
        fprintf(stderr, "brigade: cannot make the job's secret: %s\n", bg_last_error());
        return 1;
    }
    const char *bind = c->hosts && c->master_addr ? c->master_addr : "127.0.0.1";
    if (bg_tp_server_create(bind, c->port, c->nranks, &auth, srv) != BG_OK) {
        fprintf(stderr, "brigade: cannot host the rendezvous store: %s\n", bg_last_error());
        return 1;
    }
    bg_tp_server_set_liveness(*srv, c->heartbeat_s > 0 ? c->heartbeat_s : 10.0, c->hang_s);
    j->port = bg_tp_server_port(*srv);
    return 0;
}

int bg_launch_run(const bg_launch_conf_t *c)
{
    int n = c->nranks, rc = 0, started = 0;
    if (c->result)
        *c->result = (bg_launch_result_t){.rank = -1};
    bg_tp_server_t *srv = NULL;
    launch_job_t job = {0};
    bg_tp_fault_t fault = {0};
    rank_proc_t *p = calloc((size_t)n, sizeof(*p));
    struct pollfd *fds = calloc(2 * (size_t)n, sizeof(*fds));
    int *map = calloc(2 * (size_t)n, sizeof(*map));
    if (!p || !fds || !map) {
        fprintf(stderr, "brigade: out of memory\n");
        rc = 1;
        goto out_mem;
    }
    if ((rc = host_store(c, &job, &srv)) != 0)
        goto out_mem;
    catch_signals();
    pid_t pgid = 0;
    for (int r = 0; r < n; r++)
        p[r].keepalive_fd = -1;
    for (; started < n && !rc; started += !rc)
        rc = spawn_rank(c, &job, p, started, &pgid);
    if (rc) {
        stop_all(p, started, pgid, 0.5);
        goto out;
    }
    int first_bad = watch(c, p, fds, map, srv, &fault);
    if (c->result && (first_bad >= 0 || fault.kind != BG_TP_FAULT_NONE))
        c->result->t_fail = bg_now_s();
    /* A survivor may report a peer's death (seen by UCX) before the store
     * sees the dead rank's connection close: the signal is the root cause. */
    if (fault.kind == BG_TP_FAULT_FAILED && fault.status == BG_ERR_PEER && first_bad >= 0 &&
        WIFSIGNALED(p[first_bad].status))
        fault.kind = BG_TP_FAULT_NONE;
    if (fault.kind != BG_TP_FAULT_NONE && !launch_interrupted) {
        stop_for_fault(c, p, pgid, &fault);
    } else if (first_bad >= 0 || launch_interrupted) {
        /* Give peers a moment to report the failure in their own words. */
        if (!launch_interrupted)
            usleep(200000);
        stop_all(p, n, pgid, c->term_grace_s > 0 ? c->term_grace_s : 3.0);
    }
    /* Drain what the ranks printed before they went. */
    for (int r = 0; r < n; r++) {
        while (p[r].out_fd >= 0)
            pump_fd(c, r, &p[r].out_fd, p[r].out_buf, &p[r].out_len, stdout);
        while (p[r].err_fd >= 0)
            pump_fd(c, r, &p[r].err_fd, p[r].err_buf, &p[r].err_len, stderr);
    }
    rc = fault.kind != BG_TP_FAULT_NONE && !launch_interrupted ? report_fault(c, &fault)
                                                                : report(c, p, first_bad);
out:
    for (int r = 0; r < started; r++)
        if (p[r].keepalive_fd >= 0)
            close(p[r].keepalive_fd);
    bg_tp_server_destroy(srv);
out_mem:
    free(map);
    free(fds);
    free(p);
    return rc;
}
