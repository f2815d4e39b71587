/*
 * tools/commands.h -- the `brigade` subcommands. Each spec (tools/opt.h)
 * names its options; each entry point takes the arguments after
 * `brigade` (argv[0] is the subcommand) and returns the process exit code:
 * 0 ok, 1 runtime failure, 2 bad input or usage. Subcommands print their
 * own messages; they must not call exit().
 */
#ifndef BG_TOOLS_COMMANDS_H
#define BG_TOOLS_COMMANDS_H

#include "partition/schedules.h"
#include "tools/opt.h"

/* What --schedule of train, eval and schedule accepts, for help texts: the
 * schedule table's names (aliases are accepted too) and schedule files;
 * bg_sched_resolve decides. */
#define BG_SCHEDULE_HELP BG_SCHED_NAMES_FILE

/* brigade check MODEL [--batch N] [--dtype f32|bf16] [--json] | --kinds */
extern const bg_cmd_spec_t bg_check_spec;
int bg_cmd_check(int argc, char **argv);

/* brigade plan MODEL --stages S|auto [...]: stage split and shape (cmd_plan.c) */
extern const bg_cmd_spec_t bg_plan_spec;
int bg_cmd_plan(int argc, char **argv);

/* brigade train MODEL [options]: launcher or worker (cmd_train.c) */
extern const bg_cmd_spec_t bg_train_spec;
int bg_cmd_train(int argc, char **argv);

/* brigade eval MODEL (--init FILE | --resume): one evaluation (cmd_eval.c) */
extern const bg_cmd_spec_t bg_eval_spec;
int bg_cmd_eval(int argc, char **argv);

/* brigade data INPUT.txt -o PREFIX [--val F]: byte-level token shards (cmd_data.c) */
extern const bg_cmd_spec_t bg_data_spec;
int bg_cmd_data(int argc, char **argv);

/* brigade convert MODEL IN -o OUT: Hugging Face names <-> brigade names (cmd_convert.c) */
extern const bg_cmd_spec_t bg_convert_spec;
int bg_cmd_convert(int argc, char **argv);

/* brigade profile MODEL: time every layer's F/B/W, write a JSON profile (cmd_profile.c) */
extern const bg_cmd_spec_t bg_profile_spec;
int bg_cmd_profile(int argc, char **argv);

/* brigade plot METRICS [-o PNG]: loss curves with gnuplot (cmd_plot.c) */
extern const bg_cmd_spec_t bg_plot_spec;
int bg_cmd_plot(int argc, char **argv);

/* brigade schedule --stages P --micro-batches M: lists + simulation (cmd_schedule.c) */
extern const bg_cmd_spec_t bg_schedule_spec;
int bg_cmd_schedule(int argc, char **argv);

/* brigade trace report TRACE.json: busy, idle, communication per rank (cmd_trace.c) */
extern const bg_cmd_spec_t bg_trace_spec;
int bg_cmd_trace(int argc, char **argv);

#endif
