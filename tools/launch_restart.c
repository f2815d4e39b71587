/*
 * tools/launch_restart.c -- the restart loop around bg_launch_run: a job
 * that failed at runtime (a rank died, hung, stopped heartbeating or
 * failed) is stopped by the launcher as always; here it waits (exponential
 * backoff, bounded) and starts every rank again with --resume, so they
 * continue from `latest` (or from the initial state before the first
 * checkpoint). A rank that fails again at once after a restart, before any
 * step, or an ssh host that no longer answers, means a slot is lost: with
 * --elastic the partitioner re-plans for the ranks that remain (fewer
 * replicas first, then fewer stages; same global batch) and the job
 * resumes in that layout from the same checkpoint.
 * Must not restart after bad input (exit 2) or a signal to the launcher,
 * and must not look inside the ranks: it only edits their command line.
 */
#include "tools/launch_restart.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "base/clock.h"
#include "layers/graph.h"
#include "partition/chain_graph.h"
#include "partition/partition.h"
#include "partition/plan_io.h"

/* A layout the job may run in and what the partitioner predicts for it. */
typedef struct layout {
    int S, D, M;   /* stages, replicas, micro-batches per replica */
    double step_s; /* predicted step; 0 when unknown */
} layout_t;

typedef struct restart_state {
    const bg_restart_conf_t *rc;
    const bg_launch_conf_t *base;
    layout_t cur, old;    /* old: before the last re-plan (old.S == 0: none) */
    int k;                /* restarts so far */
    double t_fail;        /* when the last failure was seen (bg_now_s) */
    char cause[768];      /* the last failure, as the launcher named it */
    int *slots;           /* --hosts: ranks each host may still run */
    char plan[4096];      /* the elastic plan file, once there is one */
    char env_restart[32]; /* BRIGADE_RESTART=k for the ranks */
} restart_state_t;

char **bg_argv_edit(char *const *argv, const char *const *drop_val, const char *const *drop_flag,
                    const char *const *add)
{
    size_t n = 0, na = 0;
    while (argv[n])
        n++;
    while (add && add[na])
        na++;
    char **w = calloc(n + na + 1, sizeof(char *));
    size_t o = 0;
    for (size_t i = 0; w && i < n; i++) {
        if (!strcmp(argv[i], "--")) {
            while (i < n)
                w[o++] = argv[i++];
            break;
        }
        int skip = 0;
        for (int d = 0; drop_val && drop_val[d] && !skip; d++) {
            size_t l = strlen(drop_val[d]);
            const char *a = argv[i];
            if (strncmp(a, "--", 2) || strncmp(a + 2, drop_val[d], l))
                continue;
            skip = a[2 + l] == '=' ? 1 : a[2 + l] == 0 ? 2 : 0;
        }
        for (int d = 0; drop_flag && drop_flag[d] && !skip; d++)
            skip = !strncmp(argv[i], "--", 2) && !strcmp(argv[i] + 2, drop_flag[d]);
        if (skip == 2 && i + 1 < n)
            i++; /* its value */
        if (!skip)
            w[o++] = argv[i];
    }
    for (size_t i = 0; w && i < na; i++)
        w[o++] = (char *)add[i];
    return w;
}

/* ------------------------------------------------------------ prediction */

/*
 * The partitioner's best split of the model for layout L (c's schedule,
 * chunks, batch, device and dtype) into L->step_s; with `save`, written
 * there as a plan file for --plan. 0, or -1 when the layout cannot run the
 * model (too few layers, a schedule rule, memory) or the model cannot be
 * priced; quiet either way (the caller says what it does instead).
 */
static int layout_predict(const bg_train_conf_t *c, layout_t *L, const char *save)
{
    bg_graph_t *g = NULL;
    bg_chain_t chain = {0};
    bg_costs_t costs = {0};
    bg_plan_t plan = {0};
    const bg_sched_desc_t *d = NULL;
    bg_device_desc_t dev;
    bg_dtype_t dt = BG_F32;
    int v = 0, rows = c->batch / (L->D * L->M), ok = 0, have_costs = 0, have_plan = 0;
    const bg_costs_t **per = calloc((size_t)L->S, sizeof(*per));
    if (!per || rows < 1 || rows * L->D * L->M != c->batch || bg_sched_lookup(c->schedule, &d) ||
        bg_sched_resolve_chunks(d, c->chunks, &v) || bg_sched_check_shape(d, L->S, L->M, v) ||
        bg_dtype_parse(c->dtype, &dt) || bg_device_preset(c->device, &dev) ||
        bg_graph_parse_file(c->model, 1, &g) || bg_chain_from_graph(g, dt, &chain))
        goto out;
    if (bg_costs_build(&chain, &dev, rows, NULL, &costs))
        goto out;
    have_costs = 1;
    for (int s = 0; s < L->S; s++)
        per[s] = &costs;
    bg_part_config_t cfg = {
        .schedule = d->kind,
        .stages = L->S,
        .chunks = v,
        .micro_batches = L->M,
        .dp = L->D,
        .recompute = c->recompute,
        .opt_state_bytes = c->optim.kind == BG_OPT_ADAMW ? 8 : 0,
        /* CPU ranks share this machine's cores, as bg_train binds them. */
        .cores = strcmp(c->device, "cpu") ? 0 : (int)sysconf(_SC_NPROCESSORS_ONLN),
    };
    bg_part_problem_t pb = {&chain, per, cfg};
    if (bg_partition_optimal(&pb, &plan))
        goto out;
    have_plan = 1;
    L->step_s = plan.step_s;
    bg_plan_meta_t meta = {c->model, "optimal", c->device};
    ok = !save || bg_plan_save(save, &plan, &chain, &meta) == BG_OK;
out:
    if (have_plan)
        bg_plan_free(&plan);
    if (have_costs)
        bg_costs_free(&costs);
    if (chain.n_layers)
        bg_chain_free(&chain);
    bg_graph_free(g);
    free(per);
    return ok ? 0 : -1;
}

/*
 * The layout for `avail` ranks (fewer than now): the most replicas that fit
 * with the same stages and a micro-batch count that keeps the global batch
 * (M x D constant), else fewer stages with one replica. Its plan is written
 * to st->plan. 0, or -1 when no layout fits (message printed).
 */
static int replan(restart_state_t *st, int avail)
{
    const bg_train_conf_t *c = st->rc->train;
    layout_t cur = st->cur, next = {0};
    int md = cur.M * cur.D;
    snprintf(st->plan, sizeof(st->plan), "%s/elastic-plan.json", c->checkpoint_dir);
    for (int d = cur.D - 1; d >= 1 && !next.S; d--)
        if (cur.S * d <= avail && md % d == 0) {
            layout_t L = {cur.S, d, md / d, 0};
            if (layout_predict(c, &L, st->plan) == 0)
                next = L;
        }
    for (int s = cur.S - 1; s >= 1 && !next.S; s--)
        if (s <= avail) {
            layout_t L = {s, 1, md, 0};
            if (layout_predict(c, &L, st->plan) == 0)
                next = L;
        }
    if (!next.S) {
        fprintf(stderr,
                "brigade: elastic: no layout of the model runs on %d rank(s) with global "
                "batch %d; restarting as %d stages x %d dp\n",
                avail, c->batch, cur.S, cur.D);
        return -1;
    }
    if (layout_predict(c, &cur, NULL) != 0)
        cur.step_s = 0;
    fprintf(stderr,
            "brigade: elastic: %d of %d ranks remain: re-planned %d stages x %d dp, %d "
            "micro-batches (predicted %.3g ms/step) -> %d stages x %d dp, %d micro-batches "
            "(predicted %.3g ms/step), global batch %d; plan %s\n",
            avail, cur.S * cur.D, cur.S, cur.D, cur.M, cur.step_s * 1e3, next.S, next.D, next.M,
            next.step_s * 1e3, c->batch, st->plan);
    st->old = cur;
    st->cur = next;
    return 0;
}

/* ------------------------------------------------------------- reporting */

static void add_layout(cJSON *o, const layout_t *L)
{
    cJSON_AddNumberToObject(o, "stages", L->S);
    cJSON_AddNumberToObject(o, "dp", L->D);
    cJSON_AddNumberToObject(o, "micro_batches", L->M);
    if (L->step_s > 0)
        cJSON_AddNumberToObject(o, "predicted_step_ms", L->step_s * 1e3);
}

/*
 * The metrics file's record of restart st->k: one JSON object on one line,
 * {"event":"restart", "step": the first step after it, ...}; `step` keeps
 * it a line the metrics readers accept (it carries no loss, so no curve
 * takes a point from it). Best effort: a metrics file that cannot be
 * written is said once on stderr.
 */
static void metrics_record(const restart_state_t *st, long long step, long long from, double lost)
{
    const char *path = st->rc->train->metrics;
    cJSON *o = path ? cJSON_CreateObject() : NULL;
    if (!o)
        return;
    cJSON_AddStringToObject(o, "event", "restart");
    cJSON_AddNumberToObject(o, "restart", st->k);
    cJSON_AddNumberToObject(o, "step", (double)step);
    cJSON_AddNumberToObject(o, "resumed_from", (double)from);
    cJSON_AddNumberToObject(o, "lost_s", lost);
    cJSON_AddStringToObject(o, "cause", st->cause);
    add_layout(o, &st->cur);
    if (st->old.S)
        add_layout(cJSON_AddObjectToObject(o, "replanned_from"), &st->old);
    char *line = cJSON_PrintUnformatted(o);
    FILE *f = line ? fopen(path, "a") : NULL;
    /* One write of the whole line: rank 0 appends to the same file. */
    if (!f || fprintf(f, "%s\n", line) < 0 || fclose(f) != 0)
        fprintf(stderr, "brigade: cannot append the restart to --metrics %s\n", path);
    free(line);
    cJSON_Delete(o);
}

/* bg_launch_conf_t.on_step: rank 0 finished its first step after restart st->k. */
static void on_first_step(void *arg, long long step, long long from)
{
    restart_state_t *st = arg;
    double lost = bg_now_s() - st->t_fail;
    fprintf(stderr,
            "brigade: restart %d: resumed from step %lld; first step (%lld) done %.2f s after "
            "the failure (time lost)\n",
            st->k, from, step, lost);
    metrics_record(st, step, from, lost);
}

/* ---------------------------------------------------------------- hosts */

/* Whether ssh reaches `host` within a few seconds (BatchMode: no prompt). */
static int host_answers(const char *host)
{
    pid_t pid = fork();
    if (pid == 0) {
        int null = open("/dev/null", O_RDWR);
        dup2(null, STDIN_FILENO), dup2(null, STDOUT_FILENO), dup2(null, STDERR_FILENO);
        execlp("ssh", "ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", host, "true",
               (char *)NULL);
        _exit(127);
    }
    int status = 0;
    return pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
           WEXITSTATUS(status) == 0;
}

/* --hosts: drop the hosts ssh no longer reaches; the slots that remain. */
static int hosts_probe(restart_state_t *st)
{
    const bg_launch_conf_t *b = st->base;
    int total = 0;
    for (int h = 0; h < b->nhosts; h++) {
        if (st->slots[h] && !host_answers(b->hosts[h])) {
            fprintf(stderr, "brigade: host %s does not answer ssh: its %d slot(s) are lost\n",
                    b->hosts[h], st->slots[h]);
            st->slots[h] = 0;
        }
        total += st->slots[h];
    }
    return total;
}

/* ------------------------------------------------------------------ loop */

/* Sleep `s` seconds unless a signal asks the launcher to stop: 0, or the signal. */
static int backoff_wait(double s)
{
    double end = bg_now_s() + s;
    while (bg_now_s() < end && !bg_launch_interrupted())
        usleep(20000);
    return bg_launch_interrupted();
}

/*
 * After failure number st->k (0-based run that failed): which slots remain,
 * and the layout to resume in. `lost_rank`: the rank that failed again at
 * once after a restart (its slot is gone), or -1. Returns the ranks the
 * next run may use.
 */
static int slots_left(restart_state_t *st, int lost_rank)
{
    const bg_launch_conf_t *b = st->base;
    int world = st->cur.S * st->cur.D;
    if (!b->hosts)
        return lost_rank >= 0 ? world - 1 : world;
    bg_launch_conf_t now = *b;
    now.slots = st->slots;
    int local = 0, h = lost_rank >= 0 ? bg_launch_host_of(&now, lost_rank, &local) : -1;
    if (h >= 0 && st->slots[h] > 0)
        st->slots[h]--;
    int avail = hosts_probe(st);
    return avail < world ? avail : world;
}

/* One run of the job in the current layout; its exit code, *res filled. */
static int run_once(restart_state_t *st, bg_launch_result_t *res)
{
    /* A re-planned layout is a fixed schedule: auto's inputs go with it. */
    static const char *const layout_opts[] = {
        "stages", "dp", "micro-batches", "chunks", "schedule", "plan", "profile",
        "schedule-mem-cap", "schedule-latency", "from-trace", "traced-plan", NULL};
    static const char *const resume_flag[] = {"resume", NULL};
    const bg_launch_conf_t *b = st->base;
    const char *add[4] = {NULL}, *env[2] = {NULL};
    int na = 0;
    if (st->k > 0 && st->rc->train->checkpoint_dir)
        add[na++] = "--resume";
    if (st->old.S) {
        add[na++] = "--plan";
        add[na++] = st->plan;
    }
    char **argv = bg_argv_edit(b->argv, st->old.S ? layout_opts : NULL, resume_flag, add);
    if (!argv) {
        fprintf(stderr, "brigade: out of memory\n");
        return 1;
    }
    snprintf(st->env_restart, sizeof(st->env_restart), "BRIGADE_RESTART=%d", st->k);
    if (st->k > 0)
        env[0] = st->env_restart;
    bg_launch_conf_t lc = *b;
    lc.nranks = st->cur.S * st->cur.D;
    lc.stages = st->cur.S;
    lc.argv = argv;
    lc.slots = st->slots;
    lc.env = env;
    lc.result = res;
    lc.on_step = on_first_step;
    lc.on_step_arg = st;
    int rc = bg_launch_run(&lc);
    free(argv);
    return rc;
}

/* Wait before restart st->k + 1 and say why (the ranks were stopped
 * `stop_s` after the failure); 0, or 128 + a signal. */
static int before_restart(restart_state_t *st, int no_step_runs, double stop_s)
{
    double wait = st->rc->backoff_s; /* 0: none (bench/fault) */
    for (int i = 1; i < no_step_runs && wait > 0 && wait < BG_RESTART_BACKOFF_MAX_S; i++)
        wait *= 2;
    if (wait > BG_RESTART_BACKOFF_MAX_S)
        wait = BG_RESTART_BACKOFF_MAX_S;
    fprintf(stderr,
            "brigade: restart %d of %d in %.2g s (cause: %s; ranks stopped %.2f s after it)\n",
            st->k + 1, st->rc->max_restarts, wait, st->cause, stop_s);
    int sig = backoff_wait(wait);
    if (sig)
        fprintf(stderr, "brigade: interrupted by signal %d (%s) before restart %d\n", sig,
                strsignal(sig), st->k + 1);
    return sig ? 128 + sig : 0;
}

int bg_launch_restart_run(const bg_launch_conf_t *base, const bg_restart_conf_t *rc)
{
    const bg_train_conf_t *c = rc->train;
    restart_state_t st = {.rc = rc, .base = base, .cur = {c->stages, c->dp, c->micro_batches, 0}};
    int code = 0, no_step_runs = 0;
    if (base->hosts) {
        st.slots = calloc((size_t)base->nhosts, sizeof(int));
        if (!st.slots) {
            fprintf(stderr, "brigade: out of memory\n");
            return 1;
        }
        memcpy(st.slots, base->slots, sizeof(int) * (size_t)base->nhosts);
    }
    for (;;) {
        bg_launch_result_t res;
        code = run_once(&st, &res);
        double stop_s = bg_now_s() - res.t_fail;
        /* Only a runtime failure may go away on its own. */
        if (code != 1 || bg_launch_interrupted() || res.t_fail == 0)
            break;
        if (st.k >= rc->max_restarts) {
            if (rc->max_restarts > 0)
                fprintf(stderr, "brigade: giving up after %d restart(s)\n", st.k);
            break;
        }
        /* The first run stepped unless it says otherwise (it prints no mark). */
        int stepped = st.k == 0 || res.stepped;
        /* Time is lost from the first failure since the job last stepped. */
        if (stepped || st.t_fail == 0)
            st.t_fail = res.t_fail;
        snprintf(st.cause, sizeof(st.cause), "%s", res.cause);
        no_step_runs = stepped ? 1 : no_step_runs + 1;
        int lost = !stepped ? res.rank : -1, avail = st.cur.S * st.cur.D;
        if (rc->elastic && (lost >= 0 || base->hosts))
            avail = slots_left(&st, lost);
        if (rc->elastic && avail < st.cur.S * st.cur.D) {
            if (lost >= 0)
                fprintf(stderr,
                        "brigade: elastic: rank %d failed again before a step: its slot "
                        "is lost\n",
                        lost);
            if (replan(&st, avail) == 0)
                no_step_runs = 1; /* a new layout starts a fresh backoff */
        }
        if ((code = before_restart(&st, no_step_runs, stop_s)) != 0)
            break;
        st.k++;
    }
    free(st.slots);
    return code;
}
