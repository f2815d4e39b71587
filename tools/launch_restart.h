/*
 * tools/launch_restart.h -- `brigade train --max-restarts N [--elastic]`:
 * run the job with the launcher (tools/launch.h) and, when it fails at
 * runtime, wait (bounded exponential backoff) and start every rank again
 * resuming from `latest` in the checkpoint directory, at most N times;
 * with --elastic, re-plan for fewer ranks when one cannot come back.
 * Must not restart a job that refused its input (exit 2) or that a signal
 * stopped, and must not know how ranks train (it edits their argv only).
 */
#ifndef BG_LAUNCH_RESTART_H
#define BG_LAUNCH_RESTART_H

#include <stdbool.h>

#include "engine/train.h"
#include "tools/launch.h"

/* The longest wait between two restarts, whatever the backoff grew to. */
#define BG_RESTART_BACKOFF_MAX_S 30.0

typedef struct bg_restart_conf {
    int max_restarts;             /* restarts after the first run; 0: run once */
    double backoff_s;             /* first wait; doubles after each failure before a step */
    bool elastic;                 /* re-plan for the ranks that remain when one cannot come back */
    const bg_train_conf_t *train; /* layout, model, batch, device, checkpoint dir, metrics */
} bg_restart_conf_t;

/*
 * Run the job `base` describes (base->argv: the workers' command line,
 * which may be edited per restart: --resume added, the layout replaced by
 * an elastic plan) until it succeeds, refuses its input, is interrupted or
 * has failed 1 + max_restarts times. Each restart is logged on stderr with
 * its cause, the step resumed from and the time lost, and appended to the
 * metrics file as {"event":"restart",...}. Returns bg_launch_run's exit
 * code of the last run (1 also when out of memory, with a message).
 */
int bg_launch_restart_run(const bg_launch_conf_t *base, const bg_restart_conf_t *rc);

/*
 * argv without the options named in drop_val (each with its value, as
 * "--name V" or "--name=V") and drop_flag, then the strings of `add`;
 * everything from "--" on is kept as is. NULL-terminated; the caller frees
 * the array (not the strings, which are argv's or add's). NULL when out of
 * memory.
 */
char **bg_argv_edit(char *const *argv, const char *const *drop_val, const char *const *drop_flag,
                    const char *const *add);

#endif
