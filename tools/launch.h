/*
 * tools/launch.h -- the local launcher behind `brigade train`: spawn the
 * ranks of a job on this machine, host their rendezvous store, prefix their
 * output, and make sure that when one rank dies, all die, within seconds,
 * and no process outlives the launcher.
 * Must not know about models or schedules: it runs argv N times.
 */
#ifndef BG_LAUNCH_H
#define BG_LAUNCH_H

#include <stddef.h>

/* What one run of the job came to, for a caller that may restart it
 * (tools/launch_restart.c). Filled by bg_launch_run when conf.result is set. */
typedef struct bg_launch_result {
    int rank;        /* the rank at fault, -1 when none was named */
    char cause[768]; /* e.g. "rank 1 (stage 1, dp 0) died: killed by signal 9 (Killed) on host h" */
    double t_fail;   /* bg_now_s() when the fault was seen; 0: none */
    int stepped;     /* rank 0 said (BG_LAUNCH_STEP_MARK) that it finished a step */
} bg_launch_result_t;

/* The line rank 0 prints after its first step when BRIGADE_RESTART is set:
 * "<mark> step S, resumed from step R"; the launcher calls on_step for it. */
#define BG_LAUNCH_STEP_MARK "brigade: first step after restart:"

typedef struct bg_launch_conf {
    int nranks;
    int stages;          /* to name ranks as (stage, dp) in messages */
    int workers;         /* ranks from here on are parameter servers; 0: none are */
    char *const *argv;   /* the worker command line (argv[0] is exec'd) */
    const char *exe;     /* path to exec; NULL: argv[0] */
    double term_grace_s; /* SIGTERM -> SIGKILL delay; <= 0: 3 s */
    int quiet_prefix;    /* 1: do not prefix output lines */
    int tty;             /* the launcher's stdout is a terminal: ranks may draw a bar */
    /* Remote ranks (ssh): hosts[i] runs slots[i] ranks, in order. NULL = all local.
     * A remote rank is killed when the launcher's end of ssh's stdin closes. */
    const char *const *hosts;
    const int *slots;
    int nhosts;
    const char *master_addr; /* address remote ranks use to reach the store */
    const char *remote_exe;  /* the brigade binary's path on remote hosts (same path) */
    int port;                /* store port; 0: any free one */
    double heartbeat_s;      /* a rank silent this long is stopped and named; <= 0: 10 */
    double hang_s;           /* a rank without progress this long likewise; <= 0: off */
    const char *const *env;  /* NULL-terminated "KEY=VALUE" for every rank; may be NULL */
    /* NULL, or filled when the run ends. */
    bg_launch_result_t *result;
    /* Called (launcher thread) when rank 0 prints BG_LAUNCH_STEP_MARK:
     * `step` is the step it finished, `from` the step it resumed from. */
    void (*on_step)(void *arg, long long step, long long from);
    void *on_step_arg;
} bg_launch_conf_t;

/*
 * The address of this host that routes to `host` (a name or address),
 * numeric, into out: where remote ranks can reach a store that listens on
 * that address only. 0, or -1 when `host` does not resolve or has no route.
 */
int bg_launch_route_addr(const char *host, char *out, size_t cap);

/* Host index of rank r (hosts fill their slots in order; a host with 0
 * slots gets none), *local its index there; -1 and *local = r when r is
 * past every slot or there are no hosts. Cannot fail. */
int bg_launch_host_of(const bg_launch_conf_t *c, int r, int *local);

/* The signal (SIGINT, SIGTERM, SIGHUP) that asked the launcher to stop
 * since its first run, or 0. */
int bg_launch_interrupted(void);

/*
 * Run the job to completion. Returns 0 when every rank exited 0, 1 when a
 * rank failed (the message names rank, stage, dp and how it died, e.g.
 * "killed by signal 9 (Killed)"), 2 when the job could not be started or a
 * rank refused its input, 128 + N when signal N (SIGINT, SIGTERM, SIGHUP)
 * stopped the launcher: every rank is stopped first.
 */
int bg_launch_run(const bg_launch_conf_t *c);

#endif
