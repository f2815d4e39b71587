/*
 * tools/cmd_data.c -- `brigade data INPUT.txt -o PREFIX [--val F]
 * [--shard-tokens N]`: turn any text file into byte-level llm.c token
 * shards (PREFIX_train_*.bin, PREFIX_val_*.bin) for `--data tokens:PREFIX`.
 * Only parses arguments and reports; the tokenizer and the file format live
 * in engine/data (bg_data_make_shards). Must not call exit().
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/data.h"
#include "tools/commands.h"
#include "tools/output.h"

typedef struct data_args {
    const char *prefix;
    double val;
    int64_t shard;
} data_args_t;

/* clang-format off */
static const bg_opt_t data_opts[] = {
    {.name = "output", .short_name = 'o', .kind = BG_OPT_PATH, .metavar = "PREFIX",
     .help = "output path prefix (directories are created)", .off = offsetof(data_args_t, prefix)},
    {.name = "val", .kind = BG_OPT_DOUBLE, .metavar = "F",
     .help = "fraction of the text, from its end, held out for evaluation", .def = "0.1",
     .off = offsetof(data_args_t, val), .dmin = 0, .dmax = 1, .dmax_open = 1},
    {.name = "shard-tokens", .kind = BG_OPT_I64, .metavar = "N",
     .help = "at most N tokens per shard",
     .def = "100000000", .off = offsetof(data_args_t, shard), .min = 1, .max = INT64_MAX},
    {0},
};
/* clang-format on */

static const bg_opt_t *const data_tables[] = {data_opts, NULL};

const bg_cmd_spec_t bg_data_spec = {
    .name = "data",
    .args = "INPUT.txt -o PREFIX [options]",
    .summary = "turn a text file into byte-level token shards",
    .about = "Byte-level tokenizer (token = byte, vocab 256): writes llm.c .bin shards "
             "PREFIX_train_000000.bin ... and PREFIX_val_000000.bin ...; train with "
             "--data tokens:PREFIX.",
    .tables = data_tables,
    .min_pos = 1,
    .max_pos = 1,
    .pos_name = "INPUT.txt",
    .run = bg_cmd_data,
};

/* Parse argv into `a` and the input; 0 ok, 2 usage error (printed), 1 after --help. */
static int data_parse(int argc, char **argv, const char **in, data_args_t *a)
{
    *a = (data_args_t){NULL, 0.1, 0};
    char *pos[1];
    int npos, rc = bg_opt_parse(&bg_data_spec, argc, argv, a, pos, &npos);
    if (rc)
        return rc;
    *in = pos[0];
    if (!a->prefix)
        return bg_opt_usage_error(&bg_data_spec, "missing -o PREFIX");
    if (bg_out_is_stdout(a->prefix))
        return bg_opt_usage_error(&bg_data_spec,
                                  "-o -: the shards are several files; give a path prefix");
    return 0;
}

int bg_cmd_data(int argc, char **argv)
{
    const char *in;
    data_args_t a;
    int rc = data_parse(argc, argv, &in, &a);
    if (rc)
        return rc == 1 ? 0 : rc;
    if (access(in, R_OK) != 0) {
        fprintf(stderr, "brigade data: %s: %s\n", in, strerror(errno));
        return 2;
    }
    bg_data_shards_info_t info;
    bg_status_t st = bg_data_make_shards(in, a.prefix, a.val, a.shard, &info);
    if (st != BG_OK) {
        fprintf(stderr, "brigade data: %s\n", bg_last_error());
        return st == BG_ERR_INVALID ? 2 : 1;
    }
    printf("%s: %lld train tokens in %d shard%s, %lld val tokens in %d shard%s (vocab 256)\n"
           "train with: --data tokens:%s\n",
           in, (long long)info.train_tokens, info.train_files, info.train_files == 1 ? "" : "s",
           (long long)info.val_tokens, info.val_files, info.val_files == 1 ? "" : "s", a.prefix);
    return 0;
}
