/*
 * engine/train_report.c -- what a training run shows: the banner, the
 * progress line (a bar rewritten in place on a terminal), eval lines, and
 * the --metrics file (a header line per run, then one JSON object per
 * logged step or evaluation, each tagged with the run's id). Rank 0 only,
 * but for the bubble's note and pack, which every rank runs.
 * Opening the metrics file can fail (BG_ERR_IO, naming the file); printing
 * cannot (a full disk shows in the metrics file's own error on close).
 * Also packs each rank's step timings for the world sum at log points and
 * turns the sum into the bubble (bg_bubble, defined once in engine/sim.c),
 * and at the end of a run with --metrics sums every rank's peak resident
 * memory into one record.
 * Must NOT compute what it prints beyond formatting and that bubble
 * (train.c sums over ranks) or print anything a user did not ask for.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "base/grow.h"
#include "engine/train_impl.h"

static void fmt_eta(double s, char *buf, size_t n)
{
    if (s < 0 || s > 1e7)
        s = 0;
    int h = (int)(s / 3600), m = (int)(s / 60) % 60, sec = (int)s % 60;
    if (h)
        snprintf(buf, n, "%dh%02dm", h, m);
    else
        snprintf(buf, n, "%dm%02ds", m, sec);
}

/* The progress bar is rewritten in place with \r: end its line before
 * anything else is printed, so no other line shares it. */
void bg_train_bar_end_(train_t *t)
{
    if (!t->bar_open)
        return;
    putchar('\n');
    t->bar_open = false;
}

/* v printed with `fmt` into buf, or "null" when it is not finite: JSON has
 * no NaN or Infinity, and a metrics file must stay parseable. */
static const char *jnum(char *buf, size_t len, const char *fmt, double v)
{
    if (!isfinite(v))
        return "null";
    snprintf(buf, len, fmt, v);
    return buf;
}

/* `"run":"<id>",` opening every metrics object of this run. */
static void metrics_begin(train_t *t)
{
    fprintf(t->metrics, "{\"run\":\"%s\",", t->run_id);
}

void bg_train_log_eval_(train_t *t, int64_t step, double loss, double acc, int64_t samples)
{
    bg_train_bar_end_(t);
    if (bg_data_info(t->ds)->kind == BG_DATA_IMAGES)
        printf("eval  step %lld | loss %.4f | accuracy %.2f%% (%lld samples)\n", (long long)step,
               loss, 100.0 * acc, (long long)samples);
    else
        printf("eval  step %lld | loss %.4f (%.3f bits/token)\n", (long long)step, loss,
               loss / log(2.0));
    if (t->metrics) {
        char b1[32], b2[32];
        metrics_begin(t);
        fprintf(t->metrics, "\"step\":%lld,\"eval_loss\":%s,\"eval_accuracy\":%s}\n",
                (long long)step, jnum(b1, sizeof(b1), "%.6f", loss),
                jnum(b2, sizeof(b2), "%.6f", acc));
        fflush(t->metrics);
    }
    fflush(stdout);
}

void bg_train_log_step_(train_t *t, int64_t step, const float *sums, int64_t window, double bubble,
                        double t_elapsed, int64_t steps_done, const bg_rt_stats_t *s)
{
    const bg_data_info_t *info = bg_data_info(t->ds);
    double loss = sums[1] > 0 ? sums[0] / sums[1] : NAN;
    /* sums over ranks and logged steps: loss, losses, step time (the
     * bubble comes from every rank's timings, bg_bubble). */
    double step_s = sums[2] / (t->world * (double)window);
    double per_step = t_elapsed / (double)steps_done;
    double rate = (double)t->c->batch / per_step;
    if (info->kind == BG_DATA_TOKENS)
        rate *= (double)info->input_cols;
    char eta[32];
    fmt_eta(per_step * (double)(t->steps - step - 1), eta, sizeof(eta));
    const char *unit = info->kind == BG_DATA_TOKENS ? "tok/s" : "samples/s";
    if (t->tty) {
        int w = 24, fill = (int)((double)w * (double)(step + 1) / (double)t->steps);
        char bar[32];
        for (int i = 0; i < w; i++)
            bar[i] = i < fill ? '#' : '.';
        bar[w] = 0;
        printf("\r[%s] step %lld/%lld | loss %.4f | %.0f %s | %.1f ms/step | bubble %.1f%% | "
               "eta %s   ",
               bar, (long long)step + 1, (long long)t->steps, loss, rate, unit, step_s * 1e3,
               100.0 * bubble, eta);
        t->bar_open = true;
        if (step + 1 == t->steps)
            bg_train_bar_end_(t);
    } else {
        printf("step %lld/%lld | loss %.4f | %.0f %s | %.1f ms/step | bubble %.1f%% | lr %.2e | "
               "eta %s\n",
               (long long)step + 1, (long long)t->steps, loss, rate, unit, step_s * 1e3,
               100.0 * bubble, s->lr, eta);
    }
    fflush(stdout);
    if (t->metrics) {
        char b[6][32];
        metrics_begin(t);
        fprintf(t->metrics,
                "\"step\":%lld,\"loss\":%s,\"lr\":%s,\"%s\":%s,\"step_ms\":%s,"
                "\"bubble\":%s,\"grad_norm\":%s}\n",
                (long long)step + 1, jnum(b[0], 32, "%.6f", loss), jnum(b[1], 32, "%.6g", s->lr),
                info->kind == BG_DATA_TOKENS ? "tokens_per_s" : "samples_per_s",
                jnum(b[2], 32, "%.1f", rate), jnum(b[3], 32, "%.3f", step_s * 1e3),
                jnum(b[4], 32, "%.4f", bubble), jnum(b[5], 32, "%.6g", s->grad_norm));
        fflush(t->metrics);
    }
}

/* ---------------------------------------------------------------- bubble */

/* Floats per (step, rank) in the pack: t0 and t1 each as whole seconds
 * plus fraction (a float holds neither CLOCK_MONOTONIC reading whole, but
 * whole seconds below 2^24 and a fraction to 1e-7 s it does), busy, dp + 1. */
#define BUB_SLOT 6

void bg_train_bubble_note_(train_t *t)
{
    int n;
    const bg_rt_event_t *ev = bg_rt_events(t->rt, &n);
    double o = bg_rt_time_origin(t->rt);
    bg_bubble_rank_t r = {o, o, 0};
    for (int i = 0; i < n; i++) {
        if (i == 0 || o + ev[i].t0 < r.t0)
            r.t0 = o + ev[i].t0;
        if (o + ev[i].t1 > r.t1)
            r.t1 = o + ev[i].t1;
        if (bg_act_is_compute(ev[i].kind) || ev[i].kind == BG_ACT_OPTIMIZER)
            r.busy += ev[i].t1 - ev[i].t0;
        else if (ev[i].wait) /* inside the OPTIMIZER's slice, and not compute */
            r.busy -= ev[i].t1 - ev[i].t0;
    }
    if (bg_grow(&t->bub, &t->capbub, t->nbub + 1, sizeof(*t->bub)) == 0)
        t->bub[t->nbub++] = r;
}

static void split_time(double v, float *out)
{
    double w = floor(v);
    out[0] = (float)w;
    out[1] = (float)(v - w);
}

bg_status_t bg_train_bubble_pack_(train_t *t, float **out, size_t *n)
{
    size_t per = (size_t)t->world * BUB_SLOT;
    if (t->nbub && per > SIZE_MAX / sizeof(float) / t->nbub)
        return bg_errorf(BG_ERR_NOMEM, "bubble: %zu steps of %d ranks overflow", t->nbub, t->world);
    float *v = calloc(t->nbub * per + 1, sizeof(float));
    if (!v)
        return bg_errorf(BG_ERR_NOMEM, "bubble: out of memory for %zu steps", t->nbub);
    for (size_t k = 0; k < t->nbub; k++) {
        float *s = v + k * per + (size_t)t->rank * BUB_SLOT;
        split_time(t->bub[k].t0, s);
        split_time(t->bub[k].t1, s + 2);
        s[4] = (float)t->bub[k].busy;
        s[5] = (float)(t->dp + 1);
    }
    *out = v;
    *n = t->nbub * per;
    return BG_OK;
}

/* Ranks of replica d in one step's summed slots into r[]; returns how many. */
static int pipeline_ranks(const train_t *t, const float *s, int d, bg_bubble_rank_t *r)
{
    int n = 0;
    for (int i = 0; i < t->world; i++, s += BUB_SLOT)
        if ((int)s[5] == d + 1)
            r[n++] = (bg_bubble_rank_t){(double)s[0] + s[1], (double)s[2] + s[3], s[4]};
    return n;
}

double bg_train_bubble_unpack_(train_t *t, const float *sum)
{
    bg_bubble_rank_t *r = calloc((size_t)t->world, sizeof(*r));
    double total = 0;
    int count = 0;
    for (size_t k = 0; r && k < t->nbub; k++)
        for (int d = 0; d < t->D; d++) {
            int n = pipeline_ranks(t, sum + k * (size_t)t->world * BUB_SLOT, d, r);
            if (n)
                total += bg_bubble(r, n), count++;
        }
    free(r);
    t->nbub = 0;
    return count ? total / count : 0;
}

/* A JSON string literal: quotes, backslashes and control bytes escaped. */
static void json_string(FILE *f, const char *v)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p < 0x20)
            fprintf(f, "\\u%04x", *p);
        else
            fputc(*p, f);
    }
    fputc('"', f);
}

/*
 * Rank 0 opens the metrics file and writes the run's header line: the
 * layout, the schedule and where the run started, under an id that tags
 * every later line. Only rank 0 writes metrics, so its id is the run's:
 * its wall clock (microseconds) and pid, in hex.
 */
bg_status_t bg_train_metrics_open_(train_t *t)
{
    const bg_train_conf_t *c = t->c;
    if (t->rank != 0 || !c->metrics)
        return BG_OK;
    t->metrics = fopen(c->metrics, "a");
    if (!t->metrics)
        return bg_errorf(BG_ERR_IO, "cannot open metrics file %s: %s", c->metrics, strerror(errno));
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    unsigned long long us =
        (unsigned long long)now.tv_sec * 1000000ull + (unsigned long long)now.tv_nsec / 1000;
    snprintf(t->run_id, sizeof(t->run_id), "%llx-%x", us, (unsigned)getpid());
    struct tm tm;
    char started[32];
    gmtime_r(&now.tv_sec, &tm);
    strftime(started, sizeof(started), "%Y-%m-%dT%H:%M:%SZ", &tm);
    fprintf(t->metrics, "{\"run\":\"%s\",\"model\":", t->run_id);
    json_string(t->metrics, c->model);
    fprintf(t->metrics, ",\"stages\":%d,\"dp\":%d,\"chunks\":%d,\"schedule\":", t->S, t->D, t->V);
    json_string(t->metrics, bg_sched_name(t->sched));
    fprintf(t->metrics, ",\"micro_batches\":%d,\"batch\":%d,\"resume_step\":", t->M, c->batch);
    if (t->resumed)
        fprintf(t->metrics, "%lld", (long long)t->start_step);
    else
        fputs("null", t->metrics);
    fprintf(t->metrics, ",\"started\":\"%s\"}\n", started);
    if (fflush(t->metrics) != 0)
        return bg_errorf(BG_ERR_IO, "writing metrics file %s: %s", c->metrics, strerror(errno));
    return BG_OK;
}

void bg_train_banner_(train_t *t)
{
    const bg_train_conf_t *c = t->c;
    const bg_data_info_t *info = bg_data_info(t->ds);
    char what[48];
    if (c->eval_only)
        snprintf(what, sizeof(what), "evaluation only");
    else
        snprintf(what, sizeof(what), "%lld steps", (long long)t->steps);
    printf("brigade: %s | %d stages x %d dp%s | %s, %d micro-batches of %lld | %s %s | data %s "
           "| %s\n",
           bg_graph_model_name(t->g)[0] ? bg_graph_model_name(t->g) : c->model, t->S, t->D,
           c->zero && t->D > 1 ? " (ZeRO-1)" : "", bg_sched_name(t->sched), t->M, (long long)t->mb_rows, c->device, c->dtype, info->name,
           what);
    if (t->sched_why[0])
        printf("%s\n", t->sched_why);
    fflush(stdout);
}

bg_status_t bg_train_report_rss_(train_t *t, int64_t step)
{
    if (!t->c->metrics)
        return BG_OK;
    float *mib = calloc((size_t)t->world + 1, sizeof(float));
    if (!mib)
        return bg_errorf(BG_ERR_NOMEM, "out of memory for the ranks' peak memory");
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0) /* Linux: ru_maxrss is VmHWM, in KiB */
        mib[t->rank] = (float)ru.ru_maxrss / 1024.0f;
    bg_status_t st = world_sum(t, mib, t->world);
    if (st == BG_OK && t->metrics) {
        fprintf(t->metrics, "{\"run\":\"%s\",\"step\":%lld,\"peak_rss_mib\":[", t->run_id,
                (long long)step);
        for (int r = 0; r < t->world; r++)
            fprintf(t->metrics, "%s%.1f", r ? "," : "", (double)mib[r]);
        fputs("]}\n", t->metrics);
        fflush(t->metrics);
    }
    free(mib);
    return st;
}
