/*
 * tools/cmd_data.c -- `brigade data INPUT.txt -o PREFIX [--val F]
 * [--shard-tokens N]`: turn any text file into byte-level llm.c token
 * shards (PREFIX_train_*.bin, PREFIX_val_*.bin) for `--data tokens:PREFIX`.
 * Only parses arguments and reports; the tokenizer and the file format live
 * in engine/data (bg_data_make_shards). Must not call exit().
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/data.h"
#include "tools/commands.h"

static void data_usage(FILE *f)
{
    fprintf(f, "usage: brigade data INPUT.txt -o PREFIX [--val F] [--shard-tokens N]\n"
               "  Byte-level tokenizer (token = byte, vocab 256): writes llm.c .bin shards\n"
               "  PREFIX_train_000000.bin ... and PREFIX_val_000000.bin ...; train with\n"
               "  --data tokens:PREFIX.\n"
               "  -o PREFIX           output path prefix (directories are created)\n"
               "  --val F             fraction of the text, from its end, held out for\n"
               "                      evaluation: 0 <= F < 1 (default 0.1)\n"
               "  --shard-tokens N    at most N tokens per shard (default 100000000)\n");
}

/* Parse argv into the three settings; 0 ok, 2 usage error (printed), 1 after --help. */
static int data_parse(int argc, char **argv, const char **in, const char **prefix, double *val,
                      long long *shard)
{
    *in = *prefix = NULL;
    *val = 0.1;
    *shard = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            data_usage(stdout);
            return 1;
        }
        if (!strcmp(a, "-o") || !strcmp(a, "--output") || !strcmp(a, "--val") ||
            !strcmp(a, "--shard-tokens")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "brigade data: %s needs a value\n", a);
                return 2;
            }
            const char *v = argv[++i];
            char *end;
            errno = 0;
            if (!strcmp(a, "-o") || !strcmp(a, "--output")) {
                *prefix = v;
            } else if (!strcmp(a, "--val")) {
                *val = strtod(v, &end);
                if (errno || end == v || *end || !(*val >= 0 && *val < 1)) {
                    fprintf(stderr, "brigade data: --val needs a number in [0, 1), got '%s'\n", v);
                    return 2;
                }
            } else {
                *shard = strtoll(v, &end, 10);
                if (errno || end == v || *end || *shard < 1) {
                    fprintf(stderr, "brigade data: --shard-tokens needs a positive integer, got '%s'\n",
                            v);
                    return 2;
                }
            }
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "brigade data: unknown option '%s'\n", a);
            data_usage(stderr);
            return 2;
        } else if (!*in) {
            *in = a;
        } else {
            fprintf(stderr, "brigade data: more than one input ('%s' and '%s')\n", *in, a);
            return 2;
        }
    }
    if (!*in || !*prefix) {
        fprintf(stderr, "brigade data: %s\n", !*in ? "missing INPUT.txt" : "missing -o PREFIX");
        data_usage(stderr);
        return 2;
    }
    return 0;
}

int bg_cmd_data(int argc, char **argv)
{
    const char *in, *prefix;
    double val;
    long long shard;
    int rc = data_parse(argc, argv, &in, &prefix, &val, &shard);
    if (rc) return rc == 1 ? 0 : rc;
    if (access(in, R_OK) != 0) {
        fprintf(stderr, "brigade data: %s: %s\n", in, strerror(errno));
        return 2;
    }
    bg_data_shards_info_t info;
    bg_status_t st = bg_data_make_shards(in, prefix, val, shard, &info);
    if (st != BG_OK) {
        fprintf(stderr, "brigade data: %s\n", bg_last_error());
        return st == BG_ERR_INVALID ? 2 : 1;
    }
    printf("%s: %lld train tokens in %d shard%s, %lld val tokens in %d shard%s (vocab 256)\n"
           "train with: --data tokens:%s\n",
           in, (long long)info.train_tokens, info.train_files, info.train_files == 1 ? "" : "s",
           (long long)info.val_tokens, info.val_files, info.val_files == 1 ? "" : "s", prefix);
    return 0;
}
