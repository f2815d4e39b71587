/*
 * tools/main.c -- the `brigade` command: dispatches subcommands, and
 * prints the texts made from their option tables (`brigade help`, and the
 * hidden `help --man`, `help --bash-completion`, `help --options` the build
 * and the tests use). Exit codes: 0 ok, 1 runtime failure, 2 bad input or
 * usage. Subcommands live in tools/cmd_*.c (commands.h); this file only
 * routes to them and must not grow their logic.
 */
#include <stdio.h>
#include <string.h>

#include "tools/commands.h"

#ifndef BG_VERSION
#define BG_VERSION "0.1.0" /* the build passes the project version */
#endif

static const bg_cmd_spec_t *const commands[] = {
    &bg_check_spec,    &bg_plan_spec,  &bg_profile_spec,
    &bg_schedule_spec, &bg_train_spec, &bg_eval_spec,
    &bg_data_spec,     &bg_plot_spec,  &bg_convert_spec, &bg_trace_spec, NULL,
};

/* Commands without options, for completion. */
static const char *const plain_commands[] = {"help", "version", NULL};

static const bg_cmd_spec_t *find(const char *name)
{
    for (int i = 0; commands[i]; i++)
        if (!strcmp(commands[i]->name, name))
            return commands[i];
    return NULL;
}

/* brigade help [COMMAND | --man | --bash-completion | --options] */
static int help(int argc, char **argv)
{
    if (argc < 3) {
        bg_opt_print_commands(commands, stdout);
        return 0;
    }
    const bg_cmd_spec_t *c = find(argv[2]);
    if (c)
        bg_opt_print_help(c, stdout);
    else if (!strcmp(argv[2], "--man"))
        bg_opt_print_man(commands, BG_VERSION, stdout);
    else if (!strcmp(argv[2], "--bash-completion"))
        bg_opt_print_completion(commands, plain_commands, stdout);
    else if (!strcmp(argv[2], "--options"))
        bg_opt_print_table(commands, stdout);
    else {
        fprintf(stderr, "brigade help: unknown command '%s'\n", argv[2]);
        return 2;
    }
    return fflush(stdout) == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        bg_opt_print_commands(commands, stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help"))
        return help(argc, argv);
    if (!strcmp(argv[1], "version") || !strcmp(argv[1], "--version")) {
        printf("brigade " BG_VERSION "\n");
        return 0;
    }
    const bg_cmd_spec_t *c = find(argv[1]);
    if (c)
        return c->run(argc - 1, argv + 1);
    fprintf(stderr, "brigade: unknown command '%s'\n", argv[1]);
    bg_opt_print_commands(commands, stderr);
    return 2;
}
