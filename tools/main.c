/*
 * tools/main.c -- the `brigade` command: dispatches subcommands.
 * The only place that decides exit codes: 0 ok, 1 runtime failure,
 * 2 bad input or usage. Subcommands live in tools/cmd_*.c (commands.h);
 * this file only routes to them and must not grow their logic.
 */
#include <stdio.h>
#include <string.h>

#include "tools/commands.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: brigade <command> [options]\n"
               "commands:\n"
               "  check MODEL        validate a model graph; table of layers, shapes, costs\n"
               "  plan MODEL         split it into pipeline stages; predicted step and memory\n"
               "  profile MODEL      time every layer's F, B, W; JSON profile for plan\n"
               "  schedule           print and simulate a pipeline schedule\n"
               "  train MODEL        train it: pipeline stages x data-parallel ranks\n"
               "  data TEXT          turn a text file into byte-level token shards\n"
               "  plot METRICS       draw the loss curve of a --metrics file (gnuplot)\n"
               "  version            print the version\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "version") || !strcmp(argv[1], "--version")) {
        printf("brigade 0.1.0\n");
        return 0;
    }
    if (!strcmp(argv[1], "check")) return bg_cmd_check(argc - 1, argv + 1);
    if (!strcmp(argv[1], "plan")) return bg_cmd_plan(argc - 1, argv + 1);
    if (!strcmp(argv[1], "train")) return bg_cmd_train(argc - 1, argv + 1);
    if (!strcmp(argv[1], "profile")) return bg_cmd_profile(argc - 1, argv + 1);
    if (!strcmp(argv[1], "plot")) return bg_cmd_plot(argc - 1, argv + 1);
    if (!strcmp(argv[1], "schedule")) return bg_cmd_schedule(argc - 1, argv + 1);
    if (!strcmp(argv[1], "data")) return bg_cmd_data(argc - 1, argv + 1);
    fprintf(stderr, "brigade: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
