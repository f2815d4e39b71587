/*
 * tools/opt.h -- the one option parser of every `brigade` command, and the
 * texts made from the same tables: --help, the man page, bash completion
 * and the machine-readable option list the tests iterate over.
 *
 * A command describes its options as rows (long name, optional short name,
 * kind with range or choices, metavar, help, default shown) whose
 * destinations are offsets into the command's own argument struct, so the
 * tables are static and one row can serve two commands (train and eval).
 * Parsing is strict: a number must be the whole string and in range; an
 * unknown option, a missing value or a bad one is a usage error naming the
 * option. Must not know any command's meaning, and must not call exit():
 * results are return codes the command turns into exit codes.
 */
#ifndef BG_TOOLS_OPT_H
#define BG_TOOLS_OPT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "base/status.h"

typedef enum {
    BG_OPT_FLAG,   /* no value; bool destination set to true */
    BG_OPT_INT,    /* int in [min, max] */
    BG_OPT_I64,    /* int64_t in [min, max] */
    BG_OPT_U64,    /* uint64_t from an integer in [min, max] (min >= 0) */
    BG_OPT_DOUBLE, /* double in [dmin, dmax] */
    BG_OPT_FLOAT,  /* float from a double in [dmin, dmax] */
    BG_OPT_STRING, /* const char *, pointing into argv */
    BG_OPT_PATH,   /* as STRING; completion offers file names */
    BG_OPT_CHOICE, /* const char *, one of `choices` (the table's own string) */
    BG_OPT_CUSTOM, /* `parse` converts the value; its error message is shown */
} bg_opt_kind_t;

/* Value converter of BG_OPT_CUSTOM rows: BG_ERR_INVALID with a message
 * (bg_errorf) for a bad value; writes *dst only on success. */
typedef bg_status_t (*bg_opt_parse_fn)(const char *value, void *dst);

typedef struct bg_opt {
    const char *name; /* long name without "--"; NULL ends a table */
    char short_name;  /* e.g. 'o' for -o; 0: none */
    bg_opt_kind_t kind;
    const char *metavar;        /* value's name in help ("N", "FILE"); NULL for flags */
    const char *help;           /* one line */
    const char *def;            /* default shown in help; NULL: none shown */
    size_t off;                 /* destination: offset into the command's argument struct */
    int64_t min, max;           /* integer kinds */
    double dmin, dmax;          /* DOUBLE, FLOAT */
    int dmax_open;              /* 1: dmax itself is excluded ([dmin, dmax)) */
    const char *const *choices; /* CHOICE: NULL-terminated */
    const char *word;           /* integer kinds: a word also accepted ("auto"), or NULL */
    int64_t word_value;         /* ... stored in its place */
    bg_opt_parse_fn parse;      /* CUSTOM */
    const char *group;          /* help heading printed before this row, or NULL */
} bg_opt_t;

typedef struct bg_cmd_spec {
    const char *name;              /* "train" */
    const char *args;              /* synopsis after the name: "MODEL [options]" */
    const char *summary;           /* one line for the command list */
    const char *about;             /* paragraph for --help and the man page; may be NULL */
    const bg_opt_t *const *tables; /* NULL-terminated list of NULL-name-terminated tables */
    int min_pos, max_pos;          /* positional arguments allowed */
    const char *pos_name;          /* "MODEL", for messages */
    int (*run)(int argc, char **argv);
} bg_cmd_spec_t;

/*
 * Parse argv[1..argc) (argv[0] is the command's name) into the struct at
 * `dst` (rows' offsets) and collect positional arguments into pos[] (room
 * for cmd->max_pos pointers), their count into *npos. "--opt=value", "--opt value",
 * "-o value", "-ovalue" and "--" (end of options) are understood; -h and
 * --help print the command's help to stdout. Returns 0 to go on, 1 when
 * help was printed (exit 0), 2 after printing a usage error to stderr.
 * Destinations of options not given keep what the caller put there.
 */
int bg_opt_parse(const bg_cmd_spec_t *cmd, int argc, char **argv, void *dst, char **pos, int *npos);

/* Whether long option `name` appears in argv (after a successful parse). */
int bg_opt_given(int argc, char **argv, const char *name);

/* Print "brigade CMD: " + message to stderr; returns 2 (a usage error). */
int bg_opt_usage_error(const bg_cmd_spec_t *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* --help text of one command (synopsis, about, options by group). */
void bg_opt_print_help(const bg_cmd_spec_t *cmd, FILE *f);
/* The command list `brigade --help` prints; cmds NULL-terminated. */
void bg_opt_print_commands(const bg_cmd_spec_t *const *cmds, FILE *f);
/* The man page (groff -man) of all commands. */
void bg_opt_print_man(const bg_cmd_spec_t *const *cmds, const char *version, FILE *f);
/* A bash completion script for `brigade`; `extra` names commands without options. */
void bg_opt_print_completion(const bg_cmd_spec_t *const *cmds, const char *const *extra, FILE *f);
/* One line per option: command, long name, kind, min, max, tab-separated; the
 * tests drive every numeric option from it. */
void bg_opt_print_table(const bg_cmd_spec_t *const *cmds, FILE *f);

#endif
