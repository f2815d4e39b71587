/*
 * tools/opt.c -- table-driven option parsing for every `brigade` command,
 * and the help, man page, completion and option list made from the same
 * tables (see opt.h). Numbers are parsed by hand: strtol/strtod accept
 * leading blanks, "+", "0x", "nan" and "inf", none of which a person means.
 * Must not know what any option means, and must not call exit().
 */
#include "tools/opt.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* ---- strict numbers ---- */

/* "-?[0-9]+" to int64; 0 ok, -1 not that syntax, -2 too large for int64. */
static int scan_int(const char *s, int64_t *out)
{
    const char *p = s;
    int neg = *p == '-';
    p += neg;
    if (!isdigit((unsigned char)*p))
        return -1;
    uint64_t acc = 0, lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    int big = 0;
    for (; isdigit((unsigned char)*p); p++) {
        unsigned d = (unsigned)(*p - '0');
        if (acc > (lim - d) / 10)
            big = 1;
        else
            acc = acc * 10 + d;
    }
    if (*p)
        return -1;
    if (big)
        return -2;
    *out = neg ? (acc == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)acc) : (int64_t)acc;
    return 0;
}

/* Decimal number syntax -?(D+[.D*]|.D+)([eE][+-]?D+)? over the whole string. */
static int is_decimal(const char *s)
{
    const char *p = s + (*s == '-');
    int digits = 0;
    while (isdigit((unsigned char)*p))
        p++, digits++;
    if (*p == '.')
        for (p++; isdigit((unsigned char)*p); p++)
            digits++;
    if (!digits)
        return 0;
    if (*p == 'e' || *p == 'E') {
        p++;
        p += *p == '+' || *p == '-';
        if (!isdigit((unsigned char)*p))
            return 0;
        while (isdigit((unsigned char)*p))
            p++;
    }
    return *p == 0;
}

/* Decimal to double; 0 ok, -1 not a number, -2 beyond double's range. */
static int scan_double(const char *s, double *out)
{
    if (!is_decimal(s))
        return -1;
    errno = 0;
    double v = strtod(s, NULL);
    if (errno == ERANGE && isinf(v))
        return -2;
    *out = v;
    return 0;
}

/* ---- one option ---- */

static int range_error(const bg_cmd_spec_t *cmd, const bg_opt_t *o, const char *v)
{
    char lo[32], hi[32];
    if (o->kind == BG_OPT_DOUBLE || o->kind == BG_OPT_FLOAT) {
        snprintf(lo, sizeof(lo), "%g", o->dmin);
        snprintf(hi, sizeof(hi), "%s%g", o->dmax_open ? "<" : "", o->dmax);
    } else {
        snprintf(lo, sizeof(lo), "%lld", (long long)o->min);
        snprintf(hi, sizeof(hi), "%lld", (long long)o->max);
    }
    return bg_opt_usage_error(cmd, "--%s: %s is out of range (%s..%s%s%s)", o->name, v, lo, hi,
                              o->word ? " or " : "", o->word ? o->word : "");
}

/* An integer kind's value into *out, range-checked; 0 or a printed usage error (2). */
static int get_integer(const bg_cmd_spec_t *cmd, const bg_opt_t *o, const char *v, int64_t *out)
{
    if (o->word && !strcmp(v, o->word)) {
        *out = o->word_value;
        return 0;
    }
    int64_t x;
    int r = scan_int(v, &x);
    double d;
    if (r == -1) {
        /* 1e30 is a number, just not one in range: say so rather than "not an integer". */
        if (scan_double(v, &d) == -2 ||
            (scan_double(v, &d) == 0 && (d < (double)o->min || d > (double)o->max)))
            return range_error(cmd, o, v);
        return bg_opt_usage_error(cmd, "--%s: '%s' is not an integer%s%s", o->name, v,
                                  o->word ? " or " : "", o->word ? o->word : "");
    }
    if (r == -2 || x < o->min || x > o->max)
        return range_error(cmd, o, v);
    *out = x;
    return 0;
}

static int get_double(const bg_cmd_spec_t *cmd, const bg_opt_t *o, const char *v, double *out)
{
    double d;
    int r = scan_double(v, &d);
    if (r == -1)
        return bg_opt_usage_error(cmd, "--%s: '%s' is not a number", o->name, v);
    if (r == -2 || !(d >= o->dmin && (o->dmax_open ? d < o->dmax : d <= o->dmax)))
        return range_error(cmd, o, v);
    *out = d;
    return 0;
}

static int get_choice(const bg_cmd_spec_t *cmd, const bg_opt_t *o, const char *v, const char **out)
{
    for (int i = 0; o->choices[i]; i++)
        if (!strcmp(v, o->choices[i])) {
            *out = o->choices[i];
            return 0;
        }
    char list[256] = "";
    for (int i = 0; o->choices[i]; i++) {
        size_t k = strlen(list);
        snprintf(list + k, sizeof(list) - k, "%s%s", i ? ", " : "", o->choices[i]);
    }
    return bg_opt_usage_error(cmd, "--%s: '%s' is not one of %s", o->name, v, list);
}

/* Store value v (NULL for flags) of row o into the struct at dst; 0 or 2. */
static int apply(const bg_cmd_spec_t *cmd, const bg_opt_t *o, const char *v, char *dst)
{
    void *p = dst + o->off;
    int64_t i = 0;
    double d = 0;
    int rc = 0;
    switch (o->kind) {
    case BG_OPT_FLAG:
        *(bool *)p = true;
        break;
    case BG_OPT_INT:
    case BG_OPT_I64:
    case BG_OPT_U64:
        if ((rc = get_integer(cmd, o, v, &i)) != 0)
            break;
        if (o->kind == BG_OPT_INT)
            *(int *)p = (int)i;
        else if (o->kind == BG_OPT_I64)
            *(int64_t *)p = i;
        else
            *(uint64_t *)p = (uint64_t)i;
        break;
    case BG_OPT_DOUBLE:
    case BG_OPT_FLOAT:
        if ((rc = get_double(cmd, o, v, &d)) != 0)
            break;
        if (o->kind == BG_OPT_DOUBLE)
            *(double *)p = d;
        else
            *(float *)p = (float)d;
        break;
    case BG_OPT_STRING:
    case BG_OPT_PATH:
        if (!*v)
            return bg_opt_usage_error(cmd, "--%s: empty value", o->name);
        *(const char **)p = v;
        break;
    case BG_OPT_CHOICE:
        rc = get_choice(cmd, o, v, (const char **)p);
        break;
    case BG_OPT_CUSTOM:
        if (o->parse(v, p) != BG_OK)
            rc = bg_opt_usage_error(cmd, "--%s: %s", o->name, bg_last_error());
        break;
    }
    return rc;
}

/* ---- the command line ---- */

static const bg_opt_t *find_long(const bg_cmd_spec_t *cmd, const char *name, size_t len)
{
    for (int t = 0; cmd->tables[t]; t++)
        for (const bg_opt_t *o = cmd->tables[t]; o->name; o++)
            if (strlen(o->name) == len && !strncmp(o->name, name, len))
                return o;
    return NULL;
}

static const bg_opt_t *find_short(const bg_cmd_spec_t *cmd, char c)
{
    for (int t = 0; cmd->tables[t]; t++)
        for (const bg_opt_t *o = cmd->tables[t]; o->name; o++)
            if (o->short_name && o->short_name == c)
                return o;
    return NULL;
}

/* A following word that is itself a long option is not taken as a value:
 * `--metrics --steps 5` is a forgotten value, not a file named --steps. */
static int is_long_option(const char *s)
{
    return s[0] == '-' && s[1] == '-' && s[2];
}

/* One option word at argv[*i] (advancing *i past a separate value); 0, 1 or 2. */
static int parse_one(const bg_cmd_spec_t *cmd, int argc, char **argv, int *i, char *dst)
{
    const char *a = argv[*i], *val = NULL;
    const bg_opt_t *o;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
        bg_opt_print_help(cmd, stdout);
        return 1;
    }
    if (a[1] == '-') {
        const char *eq = strchr(a + 2, '=');
        size_t len = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
        if (!(o = find_long(cmd, a + 2, len)))
            return bg_opt_usage_error(cmd, "unknown option '--%.*s' (see brigade %s --help)",
                                      (int)len, a + 2, cmd->name);
        val = eq ? eq + 1 : NULL;
    } else {
        if (!(o = find_short(cmd, a[1])))
            return bg_opt_usage_error(cmd, "unknown option '-%c' (see brigade %s --help)", a[1],
                                      cmd->name);
        val = a[2] ? a + 2 : NULL;
    }
    if (o->kind == BG_OPT_FLAG) {
        if (val)
            return bg_opt_usage_error(cmd, "--%s takes no value", o->name);
        return apply(cmd, o, NULL, dst);
    }
    if (!val) {
        if (*i + 1 >= argc || is_long_option(argv[*i + 1]))
            return bg_opt_usage_error(cmd, "--%s: missing value %s", o->name,
                                      o->metavar ? o->metavar : "");
        val = argv[++*i];
    }
    return apply(cmd, o, val, dst);
}

int bg_opt_parse(const bg_cmd_spec_t *cmd, int argc, char **argv, void *dst, char **pos, int *npos)
{
    int n = 0, ended = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!ended && !strcmp(a, "--")) {
            ended = 1;
        } else if (ended || a[0] != '-' || !a[1]) {
            /* "-" alone is a name (standard input/output) */
            if (n == cmd->max_pos && !cmd->max_pos)
                return bg_opt_usage_error(cmd, "unexpected argument '%s'", a);
            if (n == cmd->max_pos)
                return bg_opt_usage_error(cmd, "more than %d %s given ('%s')", cmd->max_pos,
                                          cmd->pos_name, a);
            pos[n++] = argv[i];
        } else {
            int rc = parse_one(cmd, argc, argv, &i, dst);
            if (rc)
                return rc;
        }
    }
    if (n < cmd->min_pos)
        return bg_opt_usage_error(cmd, "missing %s (see brigade %s --help)", cmd->pos_name,
                                  cmd->name);
    *npos = n;
    return 0;
}

int bg_opt_given(int argc, char **argv, const char *name)
{
    size_t len = strlen(name);
    for (int i = 1; i < argc && strcmp(argv[i], "--"); i++)
        if (!strncmp(argv[i], "--", 2) && !strncmp(argv[i] + 2, name, len) &&
            (argv[i][2 + len] == 0 || argv[i][2 + len] == '='))
            return 1;
    return 0;
}

int bg_opt_usage_error(const bg_cmd_spec_t *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "brigade %s: ", cmd->name);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 2;
}

/* ---- texts from the tables ---- */

/* "-o, --output FILE" or "    --batch N" into buf. */
static void opt_label(const bg_opt_t *o, char *buf, size_t n)
{
    char mv[128] = "";
    if (o->metavar) {
        snprintf(mv, sizeof(mv), " %s", o->metavar);
    } else if (o->kind == BG_OPT_CHOICE) {
        for (int i = 0; o->choices[i]; i++) {
            size_t k = strlen(mv);
            snprintf(mv + k, sizeof(mv) - k, "%s%s", i ? "|" : " ", o->choices[i]);
        }
    }
    if (o->short_name)
        snprintf(buf, n, "-%c, --%s%s", o->short_name, o->name, mv);
    else
        snprintf(buf, n, "    --%s%s", o->name, mv);
}

/* Text broken at spaces into lines of at most `width` (longer words stand alone). */
static void print_wrapped(FILE *f, const char *s, int width)
{
    while (*s) {
        int len = (int)strlen(s), cut = len;
        if (len > width) {
            for (cut = width; cut > 0 && s[cut] != ' '; cut--)
                ;
            if (!cut)
                cut = (int)strcspn(s, " ");
        }
        fprintf(f, "%.*s\n", cut, s);
        s += cut;
        while (*s == ' ')
            s++;
    }
}

void bg_opt_print_help(const bg_cmd_spec_t *cmd, FILE *f)
{
    fprintf(f, "usage: brigade %s %s\n", cmd->name, cmd->args);
    fprintf(f, "%s\n", cmd->summary);
    if (cmd->about) {
        fputc('\n', f);
        print_wrapped(f, cmd->about, 78);
    }
    int headed = 0;
    for (int t = 0; cmd->tables[t]; t++) {
        for (const bg_opt_t *o = cmd->tables[t]; o->name; o++) {
            if (o->group || !headed)
                fprintf(f, "\n%s:\n", o->group ? o->group : "Options");
            headed = 1;
            char label[160];
            opt_label(o, label, sizeof(label));
            if (strlen(label) > 22) /* keep two blanks before the help */
                fprintf(f, "  %s\n  %24s", label, "");
            else
                fprintf(f, "  %-24s", label);
            fprintf(f, "%s", o->help);
            if (o->def)
                fprintf(f, " (default %s)", o->def);
            fputc('\n', f);
        }
    }
    fprintf(f, "%s  %-24s%s\n", headed ? "" : "\nOptions:\n", "-h, --help", "this help");
}

void bg_opt_print_commands(const bg_cmd_spec_t *const *cmds, FILE *f)
{
    fprintf(f, "usage: brigade <command> [options]\ncommands:\n");
    for (int c = 0; cmds[c]; c++) {
        char head[64];
        snprintf(head, sizeof(head), "%s %s", cmds[c]->name,
                 cmds[c]->max_pos ? cmds[c]->pos_name : "");
        fprintf(f, "  %-18s %s\n", head, cmds[c]->summary);
    }
    fprintf(f, "  %-18s %s\n", "version", "print the version");
    fprintf(f, "`brigade <command> --help` documents every option of a command.\n");
}

/* Text for groff: backslashes and hyphens escaped, no line starting with a dot. */
static void man_text(FILE *f, const char *s)
{
    if (*s == '.' || *s == '\'')
        fputs("\\&", f);
    for (; *s; s++) {
        if (*s == '\\')
            fputs("\\e", f);
        else if (*s == '-')
            fputs("\\-", f);
        else
            fputc(*s, f);
        if (*s == '\n' && (s[1] == '.' || s[1] == '\''))
            fputs("\\&", f);
    }
}

static void man_command(const bg_cmd_spec_t *c, FILE *f)
{
    fputs(".SS \"brigade ", f);
    man_text(f, c->name);
    fputs(" ", f);
    man_text(f, c->args);
    fputs("\"\n", f);
    man_text(f, c->summary);
    fputs(".\n", f);
    if (c->about) {
        fputs(".PP\n", f);
        man_text(f, c->about);
        fputc('\n', f);
    }
    for (int t = 0; c->tables[t]; t++) {
        for (const bg_opt_t *o = c->tables[t]; o->name; o++) {
            char label[160];
            opt_label(o, label, sizeof(label));
            fputs(".TP\n.B ", f);
            man_text(f, label + strspn(label, " "));
            fputc('\n', f);
            man_text(f, o->help);
            if (o->def) {
                fputs(" (default ", f);
                man_text(f, o->def);
                fputc(')', f);
            }
            fputc('\n', f);
        }
    }
}

void bg_opt_print_man(const bg_cmd_spec_t *const *cmds, const char *version, FILE *f)
{
    fprintf(f, ".TH BRIGADE 1 \"\" \"brigade %s\" \"User Commands\"\n", version);
    fputs(".SH NAME\nbrigade \\- model\\-parallel pipeline training engine\n"
          ".SH SYNOPSIS\n.B brigade\n.I command\n[options] [arguments]\n"
          ".SH DESCRIPTION\nA partitioner cuts a network's layers into pipeline stages; the "
          "engine passes micro\\-batches from stage to stage over UCX, with data parallelism "
          "inside each stage.\n"
          "Numbers are strict: the whole value must be a number in the option's range.\n"
          "\\fB\\-o \\-\\fR writes to standard output; \\fB\\-\\-json\\fR prints JSON on "
          "standard output and nothing else.\n"
          ".SH COMMANDS\n",
          f);
    for (int c = 0; cmds[c]; c++)
        man_command(cmds[c], f);
    fputs(".SS \"brigade version\"\nPrint the version.\n"
          ".SH EXIT STATUS\n0 success; 1 runtime failure; 2 bad input or usage; "
          "130 interrupted by SIGINT (Ctrl\\-C); 143 stopped by SIGTERM.\n"
          ".SH ENVIRONMENT\n.TP\n.B BRIGADE_LOG\nerror, warn (default), info or debug.\n"
          ".TP\n.B BRIGADE_BLAS_THREADS\nOpenBLAS threads per rank (default 1).\n"
          ".TP\n.B BRIGADE_TP_TIMEOUT\nrendezvous and wait deadline in seconds (default 60).\n"
          ".SH SEE ALSO\nThe README and docs/ of the brigade sources.\n",
          f);
}

/* The words completing --opt's value in bash: choices, or "" (files follow). */
static void completion_case(const bg_cmd_spec_t *c, FILE *f)
{
    for (int t = 0; c->tables[t]; t++)
        for (const bg_opt_t *o = c->tables[t]; o->name; o++) {
            if (o->kind == BG_OPT_CHOICE) {
                fprintf(f, "        --%s) w='", o->name);
                for (int i = 0; o->choices[i]; i++)
                    fprintf(f, "%s%s", i ? " " : "", o->choices[i]);
                fputs("';;\n", f);
            } else if (o->kind == BG_OPT_PATH) {
                fprintf(f, "        --%s%s%c) files=1;;\n", o->name, o->short_name ? "|-" : "",
                        o->short_name ? o->short_name : ' ');
            } else if (o->kind != BG_OPT_FLAG) {
                fprintf(f, "        --%s) return;;\n", o->name);
            }
        }
}

void bg_opt_print_completion(const bg_cmd_spec_t *const *cmds, const char *const *extra, FILE *f)
{
    fputs("# bash completion for brigade (generated by `brigade help --bash-completion`)\n"
          "_brigade() {\n"
          "    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}\n"
          "    local cmd=${COMP_WORDS[1]} opts='' w='' files=0\n"
          "    if [ \"$COMP_CWORD\" -eq 1 ]; then\n"
          "        COMPREPLY=($(compgen -W '",
          f);
    for (int c = 0; cmds[c]; c++)
        fprintf(f, "%s ", cmds[c]->name);
    for (int e = 0; extra[e]; e++)
        fprintf(f, "%s ", extra[e]);
    fputs("--help --version' -- \"$cur\"))\n        return\n    fi\n    case \"$cmd\" in\n", f);
    for (int c = 0; cmds[c]; c++) {
        fprintf(f, "    %s)\n        opts='--help", cmds[c]->name);
        for (int t = 0; cmds[c]->tables[t]; t++)
            for (const bg_opt_t *o = cmds[c]->tables[t]; o->name; o++)
                fprintf(f, " --%s", o->name);
        fputs("'\n        case \"$prev\" in\n", f);
        completion_case(cmds[c], f);
        fputs("        esac;;\n", f);
    }
    fputs("    esac\n"
          "    if [ -n \"$w\" ]; then COMPREPLY=($(compgen -W \"$w\" -- \"$cur\")); return; fi\n"
          "    if [ \"$files\" = 0 ] && [[ $cur == -* ]]; then\n"
          "        COMPREPLY=($(compgen -W \"$opts\" -- \"$cur\"))\n"
          "    else\n"
          "        COMPREPLY=($(compgen -f -- \"$cur\"))\n"
          "    fi\n"
          "}\n"
          "complete -o filenames -F _brigade brigade\n",
          f);
}

static const char *const kind_names[] = {"flag",   "int",    "int64", "uint64", "double",
                                         "double", "string", "path",  "choice", "custom"};

void bg_opt_print_table(const bg_cmd_spec_t *const *cmds, FILE *f)
{
    for (int c = 0; cmds[c]; c++)
        for (int t = 0; cmds[c]->tables[t]; t++)
            for (const bg_opt_t *o = cmds[c]->tables[t]; o->name; o++) {
                bool real = o->kind == BG_OPT_DOUBLE || o->kind == BG_OPT_FLOAT;
                fprintf(f, "%s\t%s\t%s\t", cmds[c]->name, o->name, kind_names[o->kind]);
                if (real)
                    fprintf(f, "%.17g\t%.17g\n", o->dmin, o->dmax);
                else
                    fprintf(f, "%lld\t%lld\n", (long long)o->min, (long long)o->max);
            }
}
