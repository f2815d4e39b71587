/*
 * engine/train.c -- one rank's training run: join the job, parse the model,
 * cut it into chunks, build the schedule, open data, then step, evaluate,
 * log and checkpoint until done -- or, in evaluation-only mode, load the
 * parameters and evaluate once. What it prints and writes to --metrics is
 * engine/train_report.c's; accuracy comes from engine/metrics.h.
 *
 * Rank r is stage r % S of replica r / S: pipeline neighbours are adjacent
 * ranks (same node when ranks fill nodes in order), replicas are strided.
 * A global batch of N rows is cut into D replica slices and each slice into
 * M micro-batches; micro-batch m of replica d reads rows (d*M + m) * N/(D*M)
 * onwards, so S=1, D=1 with D*M micro-batches reads the same rows in the
 * same order as any layout.
 * Must not spawn processes or exit; the rank that prints is rank 0.
 */
#include "engine/train.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/checked.h"
#include "base/clock.h"
#include "engine/checkpoint.h"
#include "engine/data.h"
#include "engine/metrics.h"
#include "engine/net.h"
#include "engine/runtime.h"
#include "engine/schedule.h"
#include "engine/trace.h"
#include "engine/train_impl.h"
#include "layers/graph.h"
#include "partition/placement.h"
#include "partition/plan_io.h"
#include "transport/transport.h"

void bg_train_conf_default(bg_train_conf_t *c)
{
    memset(c, 0, sizeof(*c));
    c->stages = 1;
    c->dp = 1;
    c->chunks = 0; /* the schedule's default (partition/schedules.def) */
    c->schedule = "1f1b";
    c->micro_batches = 1;
    c->batch = 64;
    c->seed = 1;
    c->device = "cpu";
    c->dtype = "f32";
    c->log_every = 10;
    c->heartbeat_timeout = 10;
    c->hang_timeout = 300;
    c->async_checkpoint = true;
    bg_optim_conf_default(&c->optim);
}

static bg_status_t feed(void *ctx, int mb, int input, void *dst, size_t bytes)
{
    train_t *t = ctx;
    const bg_data_info_t *info = bg_data_info(t->ds);
    int64_t row0 = ((int64_t)t->dp * t->M + mb) * t->mb_rows;
    /* bg_data_open bounded a whole batch's bytes; checked anyway since the
     * columns come from the user's data spec. */
    size_t want = 0;
    if (input == t->target_input) {
        if (!bg_mul3_size((size_t)t->mb_rows, (size_t)info->target_cols, 4, &want))
            want = SIZE_MAX;
        if (bytes != want)
            return bg_errorf(BG_ERR_INVALID,
                             "targets input '%s' holds %zu bytes per micro-batch "
                             "but the data gives %zu",
                             bg_graph_input(t->g, input)->name, bytes, want);
        return bg_data_fetch(t->ds, t->split, t->data_step, row0, t->mb_rows, NULL, dst);
    }
    if (!bg_mul3_size((size_t)t->mb_rows, (size_t)info->input_cols,
                      bg_dtype_size(info->input_dtype), &want))
        want = SIZE_MAX;
    if (bytes != want)
        return bg_errorf(BG_ERR_INVALID,
                         "input '%s' holds %zu bytes per micro-batch but the "
                         "data gives %zu (%lld columns of %s)",
                         bg_graph_input(t->g, input)->name, bytes, want,
                         (long long)info->input_cols, bg_dtype_name(info->input_dtype));
    return bg_data_fetch(t->ds, t->split, t->data_step, row0, t->mb_rows, dst, NULL);
}

/* The bubble of the steps noted since the last log point: every rank's
 * timings reach every rank through one world sum (train_report.c). */
static bg_status_t bubble_sum(train_t *t, double *out)
{
    float *v = NULL;
    size_t n = 0;
    bg_status_t st = bg_train_bubble_pack_(t, &v, &n);
    if (st == BG_OK && t->world_group && n)
        st = bg_tp_allreduce(t->world_group, v, n, BG_TP_F32, BG_TP_SUM, BG_TP_MEM_HOST,
                             wait_bound(t));
    if (st == BG_OK)
        *out = bg_train_bubble_unpack_(t, v);
    free(v);
    return st;
}

/* ---------------------------------------------------------------- setup */

/* The chunk boundaries of `brigade plan -o`, after checking that the plan
 * was made for this model's layers and this layout. */
static bg_status_t split_from_plan(train_t *t, int nch, int *first)
{
    bg_plan_file_t pf;
    bg_status_t st = bg_plan_load(t->c->plan, &pf);
    if (st != BG_OK)
        return st;
    int L = bg_graph_n_layers(t->g);
    const char **names = malloc(sizeof(char *) * (size_t)L + 1);
    if (!names)
        st = bg_errorf(BG_ERR_NOMEM, "out of memory");
    for (int l = 0; st == BG_OK && l < L; l++)
        names[l] = bg_graph_layer(t->g, l)->spec.name;
    if (st == BG_OK)
        st = bg_plan_file_check_layers(&pf, names, L);
    if (st == BG_OK && pf.n_chunks != nch)
        st = bg_errorf(BG_ERR_INVALID, "%s has %d chunks, this run needs %d (%d stages x %d)",
                       t->c->plan, pf.n_chunks, nch, t->S, t->V);
    for (int c = 0; st == BG_OK && c <= nch; c++)
        first[c] = pf.bounds[c];
    free(names);
    bg_plan_file_free(&pf);
    return st;
}

static bg_status_t setup_layout(train_t *t)
{
    const bg_train_conf_t *c = t->c;
    t->S = c->stages;
    t->D = c->dp;
    t->M = c->micro_batches;
    bg_status_t st = bg_train_graph_open(c, &t->g); /* checks that the batch divides */
    if (st == BG_OK)
        t->mb_rows = c->batch / (t->D * t->M);
    /* A table row, "file:PATH" or auto (from the run's split of g when
     * profiled); the schedule fixes chunks per rank. */
    if (st == BG_OK)
        st = bg_train_sched_resolve(c, t->g, &t->sched, t->sched_why, sizeof(t->sched_why));
    if (st != BG_OK)
        return st;
    t->V = bg_sched_chunks_per_rank(t->sched);
    int nch = t->S * t->V;
    int *first = calloc((size_t)nch + 1, sizeof(int));
    if (!first)
        return bg_errorf(BG_ERR_NOMEM, "out of memory");
    st = c->plan ? split_from_plan(t, nch, first) : bg_net_split_even(t->g, nch, first);
    if (st == BG_OK)
        st = bg_net_create(t->g, nch, first, &t->net);
    free(first);
    if (st != BG_OK)
        return st;
    /* Skip connections: a tensor goes straight from its producer's chunk to
     * each consumer's chunk, so the schedule gets those edges too. */
    for (int e = 0; e < t->net->n_edges; e++) {
        const bg_net_edge_t *ed = &t->net->edges[e];
        if (ed->dst == ed->src + 1)
            continue;
        if ((st = bg_sched_add_transfer(t->sched, ed->src, ed->dst, 1)) != BG_OK)
            return st;
    }
    return bg_sched_check(t->sched, NULL);
}

static bg_status_t setup_data(train_t *t)
{
    const bg_train_conf_t *c = t->c;
    bg_train_data_plan_t dp;
    bg_status_t st = bg_train_data_plan_(c, t->g, &dp);
    if (st != BG_OK)
        return st;
    t->target_input = dp.target_input;
    st = bg_data_open(dp.spec, &dp.o, &t->ds);
    if (st == BG_OK)
        st = bg_train_data_fits_(c, t->g, &dp, t->ds);
    bg_train_data_plan_free_(&dp);
    if (st != BG_OK)
        return st;
    const bg_data_info_t *info = bg_data_info(t->ds);
    t->steps = c->steps;
    if (!t->steps) {
        double ep = c->epochs > 0 ? c->epochs : 0;
        t->steps = ep > 0 ? (int64_t)ceil(ep * (double)info->steps_per_epoch) : 100;
    }
    return BG_OK;
}

/*
 * Bind this rank to its share of the machine (distinct cores on CPU runs,
 * cores near its GPU on GPU runs) and say where it landed. Ranks are packed
 * node by node in rank order, which keeps pipeline neighbours together.
 * Local ranks only: under --hosts/srun the node count is not known here,
 * so binding is skipped rather than guessed.
 */
static bg_status_t bind_rank(train_t *t)
{
    if (getenv("BRIGADE_NO_BIND"))
        return BG_OK;
    const char *local = getenv("BRIGADE_LOCAL_RANK");
    if (!local || atoi(local) != t->rank)
        return BG_OK; /* not a single-node job */
    bg_topo_t *topo = NULL;
    bg_status_t st = bg_topo_load(&topo);
    if (st != BG_OK)
        return st;
    bg_rank_place_t *pl = calloc((size_t)t->world, sizeof(*pl));
    bg_place_opts_t o = {.stages = t->c->stages,
                         .dp = t->c->dp,
                         .nodes = 1,
                         .use_gpus = !strcmp(t->c->device, "cuda")};
    if (!pl)
        st = bg_errorf(BG_ERR_NOMEM, "out of memory");
    if (st == BG_OK)
        st = bg_place_ranks(topo, &o, pl);
    if (st == BG_OK)
        st = bg_place_bind(topo, pl[t->rank].cpuset);
    if (st == BG_OK && t->rank == 0) {
        printf("placement:");
        for (int r = 0; r < t->world; r++)
            printf(" r%d(s%d,d%d)->cpus %s%s%s", r, pl[r].stage, pl[r].dp, pl[r].cpuset,
                   pl[r].gpu >= 0 ? " gpu" : "", pl[r].shared ? " shared" : "");
        printf("\n");
    }
    free(pl);
    bg_topo_free(topo);
    return st;
}

bg_status_t bg_train_loss_scale(const bg_train_conf_t *c, bg_dtype_t dtype, float *scale,
                                bool *dynamic)
{
    const char *v = c->loss_scale ? c->loss_scale : dtype == BG_F16 ? "dynamic" : NULL;
    *scale = 0.0f, *dynamic = false;
    if (!v)
        return BG_OK;
    const char *num = v;
    if (!strncmp(v, "dynamic", 7) && (!v[7] || v[7] == ':')) {
        *dynamic = true;
        num = v[7] ? v + 8 : "65536"; /* dynamic:N starts at N */
    }
    char *end = NULL;
    double x = strtod(num, &end);
    if (end == num || *end || !(x > 0) || x > 16777216.0)
        return bg_errorf(BG_ERR_INVALID,
                         "--loss-scale %s: expected 'dynamic', 'dynamic:N' or N, with N in "
                         "(0, 2^24]",
                         v);
    *scale = (float)x;
    return BG_OK;
}

static bg_status_t setup_runtime(train_t *t)
{
    const bg_train_conf_t *c = t->c;
    bg_device_t dev = strcmp(c->device, "cuda") ? BG_DEV_CPU : BG_DEV_CUDA;
    const char *local = getenv("BRIGADE_LOCAL_RANK");
    int index = bg_backend_local_index(dev, local ? atoi(local) : t->rank);
    bg_status_t st = bg_backend_create(dev, index, &t->be);
    if (st != BG_OK)
        return st;
    bg_rt_conf_t rc;
    memset(&rc, 0, sizeof(rc));
    rc.net = t->net;
    rc.sched = t->sched;
    rc.stage = t->stage;
    rc.dp = t->dp;
    rc.stages = t->S;
    rc.dps = t->D;
    rc.be = t->be;
    if ((st = bg_dtype_parse(c->dtype, &rc.dtype)) != BG_OK)
        return st;
    if ((st = bg_train_loss_scale(c, rc.dtype, &rc.loss_scale, &rc.scale_dynamic)) != BG_OK)
        return st;
    /* 2bw: a step's carried backwards run after the previous update, which
     * may change a dynamic scale: one gradient would mix two scales */
    if (rc.scale_dynamic && bg_sched_flush_free(t->sched))
        return bg_errorf(BG_ERR_INVALID, "--schedule 2bw cannot use a dynamic loss scale (a "
                         "step's gradient would mix two scales); give a fixed --loss-scale N");
    rc.scale_window = c->loss_scale_window;
    rc.tp = t->tp;
    rc.optim = c->optim;
    rc.optim.total = t->steps;
    rc.seed = c->seed;
    rc.recompute = c->recompute;
    rc.zero = c->zero;
    rc.timeout_s = wait_bound(t);
    rc.ps = t->ps;
    rc.ps.steps = t->steps;
    return bg_rt_create(&rc, &t->rt);
}


/* The held-out split's batches to evaluate: all of it, or --eval-batches. */
static int64_t eval_batches(const train_t *t)
{
    int64_t nb = bg_data_info(t->ds)->eval_steps;
    if (t->c->eval_batches > 0 && t->c->eval_batches < nb)
        nb = t->c->eval_batches;
    return nb;
}

/*
 * Data without a single held-out batch: an error when the user asked for
 * evaluation (--eval-every, --eval-batches), else a notice that the end-of-
 * run evaluation is skipped. Evaluation-only runs check in eval_only.
 */
static bg_status_t check_eval(train_t *t)
{
    const bg_data_info_t *info = bg_data_info(t->ds);
    if (t->c->eval_only || eval_batches(t) > 0)
        return BG_OK;
    if (t->c->eval_every > 0 || t->c->eval_batches > 0)
        return bg_errorf(BG_ERR_INVALID,
                         "--eval-%s: data %s has no held-out batch to evaluate (%lld held-out "
                         "samples, batch %d)",
                         t->c->eval_every > 0 ? "every" : "batches", info->name,
                         (long long)info->n_eval, t->c->batch);
    if (t->rank == 0)
        printf("note: data %s has no held-out batch (%lld held-out samples, batch %d): "
               "evaluation skipped\n",
               info->name, (long long)info->n_eval, t->c->batch);
    return BG_OK;
}

/* One evaluation pass over the held-out split; sums[4]: loss sum, losses,
 * argmax hits, rows, over every rank. */
static bg_status_t eval_pass(train_t *t, float *sums)
{
    int64_t nb = eval_batches(t);
    t->split = BG_SPLIT_EVAL;
    for (int64_t b = 0; b < nb; b++) {
        t->data_step = b;
        bg_rt_stats_t s;
        bg_accuracy_t acc = {0, 0};
        bg_status_t st = bg_rt_eval(t->rt, t->M, feed, t, bg_accuracy_add, &acc, &s);
        if (st != BG_OK)
            return st;
        sums[0] += (float)s.loss_sum;
        sums[1] += (float)s.loss_count;
        sums[2] += (float)acc.correct;
        sums[3] += (float)acc.rows;
    }
    t->split = BG_SPLIT_TRAIN;
    return world_sum(t, sums, 4);
}

static bg_status_t evaluate(train_t *t, int64_t step, double *acc_out)
{
    float sums[4] = {0, 0, 0, 0};
    bg_status_t st = eval_pass(t, sums);
    if (st != BG_OK)
        return st;
    double loss = sums[1] > 0 ? sums[0] / sums[1] : NAN;
    double acc = sums[3] > 0 ? sums[2] / sums[3] : NAN;
    if (acc_out)
        *acc_out = acc;
    if (t->rank == 0)
        bg_train_log_eval_(t, step, loss, acc, (int64_t)sums[3]);
    return BG_OK;
}

static bg_status_t write_trace(train_t *t)
{
    int n;
    const bg_rt_event_t *ev = bg_rt_events(t->rt, &n);
    bg_status_t st =
        bg_trace_write_part(t->c->trace, t->rank, t->stage, t->dp, ev, n, bg_rt_time_origin(t->rt));
    bg_status_t s2 = world_barrier(t);
    if (st == BG_OK)
        st = s2;
    if (st == BG_OK && t->rank == 0) {
        bg_train_bar_end_(t);
        st = bg_trace_merge(t->c->trace, t->world);
        if (st == BG_OK)
            printf("trace of the last step written to %s\n", t->c->trace);
    }
    return st;
}

/*
 * After the last step: drain (2bw's carried backwards and their update),
 * the final evaluation, reports, the trace and the last checkpoint's end;
 * rank 0 prints the accuracy and the totals. `done` steps ran since t0.
 */
static bg_status_t train_finish(train_t *t, double t0, int64_t done)
{
    const bg_train_conf_t *c = t->c;
    bg_status_t drained = bg_rt_drain(t->rt);
    if (drained != BG_OK)
        return drained;
    double acc = NAN;
    bool have_eval = eval_batches(t) > 0; /* else check_eval printed why not */
    bg_status_t st = have_eval ? evaluate(t, t->steps, &acc) : BG_OK;
    if (t->rank == 0)
        bg_train_bar_end_(t);
    if (st == BG_OK && have_eval && t->rank == 0 && bg_data_info(t->ds)->kind == BG_DATA_IMAGES)
        printf("final test accuracy: %.2f%%\n", 100.0 * acc);
    if (st == BG_OK)
        st = bg_train_ps_report_(t);
    if (st == BG_OK && c->trace)
        st = write_trace(t);
    if (st == BG_OK)
        st = bg_train_ckpt_finish_(t); /* the last save overlapped the evaluation */
    if (st == BG_OK)
        st = bg_train_report_rss_(t, t->start_step + done);
    if (t->rank == 0) {
        printf("trained %lld steps in %.1f s", (long long)done, bg_now_s() - t0);
        if (c->checkpoint_dir) /* what checkpointing cost: docs/checkpoints.md */
            printf(" (checkpoints held training %.3f s)", bg_train_ckpt_held_s_(t));
        printf("\n");
        fflush(stdout);
    }
    return st;
}

static bg_status_t train_loop(train_t *t)
{
    const bg_train_conf_t *c = t->c;
    double t0 = bg_now_s();
    int64_t done = 0;
    float sums[3] = {0, 0, 0}; /* loss sum, losses, step seconds */
    int64_t window = 0;
    bg_rt_stats_t s;
    memset(&s, 0, sizeof(s));
    bg_status_t st0 = bg_train_finite_setup_(t);
    if (st0 != BG_OK)
        return st0;
    for (int64_t step = t->start_step; step < t->steps; step++) {
        t->split = BG_SPLIT_TRAIN;
        t->data_step = step;
        bg_train_test_delay_(t, step);
        bg_status_t st = bg_rt_step(t->rt, step, feed, t, &s);
        if (st == BG_OK)
            st = bg_train_finite_step_(t, step, &s);
        if (st == BG_OK)
            st = bg_train_ckpt_poll_(t);
        if (st != BG_OK)
            return st;
        done++;
        /* A restarted job's launcher times the restart up to this line
         * (tools/launch.h, BG_LAUNCH_STEP_MARK). */
        if (done == 1 && t->rank == 0 && getenv("BRIGADE_RESTART")) {
            printf("brigade: first step after restart: step %lld, resumed from step %lld\n",
                   (long long)step + 1, (long long)t->start_step);
            fflush(stdout);
        }
        if (s.skipped && t->rank == 0)
            printf("step %lld: gradients overflowed at loss scale %g: update skipped (%lld so "
                   "far)\n",
                   (long long)step + 1, (double)s.loss_scale, (long long)++t->skipped);
        sums[0] += (float)s.loss_sum;
        sums[1] += (float)s.loss_count;
        sums[2] += (float)s.step_s;
        window++;
        bg_train_bubble_note_(t);
        bool last = step + 1 == t->steps;
        bool logs = (step + 1) % c->log_every == 0 || last;
        bool evals = c->eval_every > 0 && (step + 1) % c->eval_every == 0 && !last;
        bool saves = c->checkpoint_dir &&
                     ((c->checkpoint_every > 0 && (step + 1) % c->checkpoint_every == 0) || last);
        /* Nothing is logged, evaluated or saved past an unread verdict. */
        if ((logs || evals || saves) && (st = bg_train_finite_settle_(t, step)) != BG_OK)
            return st;
        if (logs) {
            double bubble = 0;
            if ((st = world_sum(t, sums, 3)) != BG_OK || (st = bubble_sum(t, &bubble)) != BG_OK)
                return st;
            if (t->rank == 0)
                bg_train_log_step_(t, step, sums, window, bubble, bg_now_s() - t0, done, &s);
            memset(sums, 0, sizeof(sums));
            window = 0;
        }
        if (evals && (st = evaluate(t, step + 1, NULL)) != BG_OK)
            return st;
        if (saves &&
            ((st = bg_rt_drain(t->rt)) != BG_OK || (st = bg_train_save_(t, step + 1)) != BG_OK))
            return st;
    }
    bg_status_t st = bg_train_finite_settle_(t, t->steps - 1); /* no step ran: none pending */
    return st != BG_OK ? st : train_finish(t, t0, done);
}


static void train_free(train_t *t)
{
    bg_train_finite_free_(t);
    bg_train_ckpt_free_(t);
    bg_rt_free(t->rt);
    free(t->bub);
    bg_backend_destroy(t->be);
    bg_data_close(t->ds);
    bg_net_free(t->net);
    bg_sched_free(t->sched);
    bg_graph_free(t->g);
    if (t->metrics)
        fclose(t->metrics);
    if (t->world_group)
        bg_tp_group_destroy(t->world_group);
}

static bg_status_t join(train_t *t)
{
    const bg_train_conf_t *c = t->c;
    bg_tp_config_t tc;
    bg_status_t st = bg_tp_config_from_env(&tc);
    if (st != BG_OK)
        return st;
    int total = tc.boot.world_size, servers = bg_train_ps_ranks(c);
    t->rank = tc.boot.rank;
    t->world = c->stages * c->dp; /* the workers; parameter servers come after them */
    if (total != t->world + servers && !servers)
        return bg_errorf(BG_ERR_INVALID,
                         "rank %d of %d: the job has %d ranks but --stages %d x --dp %d needs %d",
                         t->rank, total, total, c->stages, c->dp, t->world);
    if (total != t->world + servers)
        return bg_errorf(BG_ERR_INVALID,
                         "rank %d of %d: the job has %d ranks but --stages %d x --dp %d + %d "
                         "parameter servers needs %d",
                         t->rank, total, total, c->stages, c->dp, servers, t->world + servers);
    t->stage = t->rank % c->stages;
    t->dp = t->rank / c->stages;
    if ((st = bg_train_ps_setup_(t)) != BG_OK || total == 1)
        return st;
    tc.heartbeat_s = c->heartbeat_timeout;
    tc.hang_s = c->hang_timeout;
    if ((st = bg_tp_create(&tc, &t->tp)) != BG_OK)
        return st;
    if (t->rank >= t->world || t->world == 1)
        return BG_OK; /* servers are in no worker collective */
    int *r = malloc(sizeof(int) * (size_t)t->world);
    if (!r)
        return bg_errorf(BG_ERR_NOMEM, "out of memory");
    for (int i = 0; i < t->world; i++)
        r[i] = i;
    st = bg_tp_group_create(t->tp, r, t->world, &t->world_group);
    free(r);
    return st;
}

/* Evaluation-only: the loaded parameters, evaluated once at the step they
 * were saved at (0 for --init or a fresh start). No step, no checkpoint. */
static bg_status_t eval_only(train_t *t)
{
    const bg_data_info_t *info = bg_data_info(t->ds);
    if (eval_batches(t) < 1)
        return bg_errorf(BG_ERR_INVALID,
                         "evaluation only: data %s has no held-out batch to evaluate (%lld "
                         "held-out samples, batch %d)",
                         info->name, (long long)info->n_eval, t->c->batch);
    return evaluate(t, t->start_step, NULL);
}

bg_status_t bg_train_run(const bg_train_conf_t *c)
{
    train_t t;
    memset(&t, 0, sizeof(t));
    t.c = c;
    t.tty = getenv("BRIGADE_TTY") && !strcmp(getenv("BRIGADE_TTY"), "1");
    bg_status_t st = join(&t);
    bool placed = st == BG_OK; /* stage and dp mean something only after join */
    if (st == BG_OK)
        st = setup_layout(&t);
    if (st == BG_OK)
        st = setup_data(&t);
    if (st == BG_OK)
        st = check_eval(&t);
    if (st == BG_OK)
        st = bg_train_check_outputs(c);
    bool server = placed && t.rank >= t.world;
    if (st == BG_OK && server)
        st = bg_train_serve_(&t);
    if (st == BG_OK && !server)
        st = bind_rank(&t);
    if (st == BG_OK && !server)
        st = setup_runtime(&t);
    if (st == BG_OK && !server)
        st = bg_train_resume_(&t);
    if (st == BG_OK && !server)
        st = bg_train_metrics_open_(&t);
    if (st == BG_OK && t.rank == 0)
        bg_train_banner_(&t);
    if (st == BG_OK && !server)
        st = c->eval_only ? eval_only(&t) : train_loop(&t);
    bg_train_bar_end_(&t); /* errors follow on a line of their own */
    fflush(stdout);
    if (st != BG_OK && !strstr(bg_last_error(), "rank ") && server)
        bg_error_prefix(st, "ps server %d (rank %d): ", t.rank - t.world, t.rank);
    else if (st != BG_OK && !strstr(bg_last_error(), "rank ") && placed)
        bg_error_prefix(st, "rank %d (stage %d, dp %d): ", t.rank, t.stage, t.dp);
    else if (st != BG_OK && !strstr(bg_last_error(), "rank "))
        bg_error_prefix(st, "rank %d of %d: ", t.rank, t.world);
    /* Leaving the job may fail too (peers gone); the first cause is the one to report. */
    char first[1024];
    snprintf(first, sizeof(first), "%s", bg_last_error());
    /* Before anything that could wait: the others stop waiting for us now. */
    if (st != BG_OK && t.tp)
        bg_tp_fail(t.tp, st, first);
    train_free(&t);
    if (t.tp) {
        bg_status_t s2 = bg_tp_destroy(t.tp);
        if (st == BG_OK)
            return s2;
    }
    if (st != BG_OK)
        bg_errorf(st, "%s", first);
    return st;
}
