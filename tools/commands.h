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

#endif
