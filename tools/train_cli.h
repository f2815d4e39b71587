/*
 * tools/train_cli.h -- what `brigade train` and `brigade eval` share: their
 * argument struct, the option rows both accept (layout, data, device,
 * checkpoints, launching), and the steps of a run: parse, apply --plan,
 * validate, start (launcher or worker). Each step prints its own message
 * and returns an exit code (0 = go on). Must not know the engine's
 * internals: bg_train_run does the work.
 */
#ifndef BG_TOOLS_TRAIN_CLI_H
#define BG_TOOLS_TRAIN_CLI_H

#include "engine/train.h"
#include "tools/opt.h"

typedef struct bg_train_args {
    bg_train_conf_t c;
    const char *hosts, *hostfile;
    bool force; /* start more local ranks than the memory estimate allows */
    char plan_sched[32]; /* the schedule a --plan names; c.schedule then points here */
    int max_restarts;       /* train: restarts after a runtime failure (launch_restart.h) */
    double restart_backoff; /* train: first wait before a restart, seconds */
    bool elastic;           /* train: re-plan for fewer ranks when one cannot come back */
} bg_train_args_t;

/* Rows train and eval both accept (offsets into bg_train_args_t). */
extern const bg_opt_t bg_train_layout_opts[], bg_train_data_opts[], bg_train_device_opts[],
    bg_train_load_opts[], bg_train_launch_opts[];

/* Defaults, argv into a (model from the one positional); 0, 1 after --help, 2. */
int bg_train_cli_parse(const bg_cmd_spec_t *cmd, int argc, char **argv, bg_train_args_t *a);

/* --plan fixes the layout; with explicit layout flags too it is a usage error.
 * Without a plan, micro-batches default to the stages. 0 or 2. */
int bg_train_cli_apply_plan(const bg_cmd_spec_t *cmd, int argc, char **argv, bg_train_args_t *a);

/* Checks a person should hear once, before any rank starts; 0, 1 (no CUDA) or 2. */
int bg_train_cli_validate(const bg_cmd_spec_t *cmd, const bg_train_args_t *a);

/* Run this rank (under a launcher) or launch stages x dp ranks of
 * `brigade CMD argv...`; the exit code of the job. */
int bg_train_cli_start(const bg_cmd_spec_t *cmd, int argc, char **argv, const bg_train_args_t *a);

#endif
