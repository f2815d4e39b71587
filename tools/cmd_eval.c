/*
 * tools/cmd_eval.c -- `brigade eval MODEL (--init FILE | --resume
 * --checkpoint-dir DIR)`: evaluate given weights once on the held-out
 * split, in any layout, and exit: a bg_train_run with eval_only set (no
 * optimizer step, no checkpoint). Accepts train's option rows where they
 * make sense (layout, data, device, checkpoints, launching) and shares its
 * steps (train_cli.h). Must not evaluate anything itself.
 * Exit codes: 0 ok, 1 runtime failure, 2 bad usage.
 */
#include <stddef.h>
#include <stdio.h>

#include "tools/commands.h"
#include "tools/train_cli.h"

static const bg_opt_t *const eval_tables[] = {
    bg_train_layout_opts, bg_train_data_opts,   bg_train_device_opts,
    bg_train_load_opts,   bg_train_launch_opts, NULL,
};

const bg_cmd_spec_t bg_eval_spec = {
    .name = "eval",
    .args = "MODEL (--init FILE | --resume --checkpoint-dir DIR) [options]",
    .summary = "evaluate trained weights once on the held-out split",
    .about = "Loads weights (a safetensors file, or the latest checkpoint), evaluates them "
             "once on the held-out split of --data in the given layout, and exits: no "
             "optimizer step, no checkpoint.",
    .tables = eval_tables,
    .min_pos = 1,
    .max_pos = 1,
    .pos_name = "MODEL",
    .run = bg_cmd_eval,
};

int bg_cmd_eval(int argc, char **argv)
{
    bg_train_args_t a;
    int rc = bg_train_cli_parse(&bg_eval_spec, argc, argv, &a);
    if (rc)
        return rc == 1 ? 0 : rc;
    if (!a.c.init == !a.c.resume)
        return bg_opt_usage_error(&bg_eval_spec,
                                  "give the weights: exactly one of --init FILE or --resume");
    a.c.eval_only = 1;
    if ((rc = bg_train_cli_apply_plan(&bg_eval_spec, argc, argv, &a)) != 0 ||
        (rc = bg_train_cli_validate(&bg_eval_spec, &a)) != 0)
        return rc;
    return bg_train_cli_start(&bg_eval_spec, argc, argv, &a);
}
