/*
 * tools/commands.h -- entry points of the `brigade` subcommands. Each takes
 * the arguments after its name (argv[0] is the subcommand) and returns the
 * process exit code: 0 ok, 1 runtime failure, 2 bad input or usage.
 * Subcommands print their own messages; they must not call exit().
 */
#ifndef BG_TOOLS_COMMANDS_H
#define BG_TOOLS_COMMANDS_H

/* brigade check MODEL [--batch N] [--dtype f32|bf16] [--json] | --kinds */
int bg_cmd_check(int argc, char **argv);

/* brigade plan MODEL --stages S|auto [...]: stage split and shape (cmd_plan.c) */
int bg_cmd_plan(int argc, char **argv);

/* brigade train MODEL [options]: launcher or worker (cmd_train.c) */
int bg_cmd_train(int argc, char **argv);

/* brigade data INPUT.txt -o PREFIX [--val F]: byte-level token shards (cmd_data.c) */
int bg_cmd_data(int argc, char **argv);

/* brigade profile MODEL: time every layer's F/B/W, write a JSON profile (cmd_profile.c) */
int bg_cmd_profile(int argc, char **argv);

/* brigade plot METRICS [-o PNG]: loss curve with gnuplot (cmd_plot.c) */
int bg_cmd_plot(int argc, char **argv);

/* brigade schedule --stages P --micro-batches M: lists + simulation (cmd_schedule.c) */
int bg_cmd_schedule(int argc, char **argv);

#endif
