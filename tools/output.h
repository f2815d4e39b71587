/*
 * tools/output.h -- "-o -" for the commands that write a file: the library
 * writers take a path, so the file goes to a private temporary file first
 * and is then copied to standard output. Must not format anything itself.
 */
#ifndef BG_TOOLS_OUTPUT_H
#define BG_TOOLS_OUTPUT_H

#include <stddef.h>
#include <stdio.h>

/* Whether an -o value means standard output. */
int bg_out_is_stdout(const char *path);

/* A fresh empty temporary file; its name into buf. 0 ok, 1 (message printed). */
int bg_out_tmp(const char *cmd, char *buf, size_t n);

/* Copy file `tmp` to stdout, then remove it (also on failure). 0 ok, 1 (printed). */
int bg_out_cat(const char *cmd, const char *tmp);

/* A stream that discards what is written (for prose under --json); never NULL
 * unless /dev/null cannot be opened, then stderr. Close with bg_out_close. */
FILE *bg_out_null(void);
void bg_out_close(FILE *f);

#endif
