/*
 * base/status.c -- status names, per-thread error messages, stderr logging.
 * Must not exit, allocate, or depend on any other part of brigade.
 */
#include "base/status.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BG_ERRMSG_MAX 1024

static _Thread_local char bg_errmsg[BG_ERRMSG_MAX];

const char *bg_status_str(bg_status_t st)
{
    switch (st) {
    case BG_OK:
        return "ok";
    case BG_ERR_INVALID:
        return "invalid input";
    case BG_ERR_NOMEM:
        return "out of memory";
    case BG_ERR_IO:
        return "i/o error";
    case BG_ERR_UNSUPPORTED:
        return "unsupported";
    case BG_ERR_CUDA:
        return "CUDA error";
    case BG_ERR_UCX:
        return "UCX error";
    case BG_ERR_TIMEOUT:
        return "timed out";
    case BG_ERR_PEER:
        return "peer failure";
    case BG_ERR_CANCELED:
        return "canceled";
    case BG_ERR_INTERNAL:
        return "internal error";
    }
    return "unknown status";
}

bg_status_t bg_verrorf(bg_status_t st, const char *fmt, va_list ap)
{
    vsnprintf(bg_errmsg, sizeof(bg_errmsg), fmt, ap);
    return st;
}

bg_status_t bg_errorf(bg_status_t st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    bg_verrorf(st, fmt, ap);
    va_end(ap);
    return st;
}

bg_status_t bg_error_prefix(bg_status_t st, const char *fmt, ...)
{
    char prefix[256], old[BG_ERRMSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof(prefix), fmt, ap);
    va_end(ap);
    memcpy(old, bg_errmsg, sizeof(old));
    size_t np = strlen(prefix), no = strnlen(old, sizeof(old) - 1);
    if (np > sizeof(bg_errmsg) - 1)
        np = sizeof(bg_errmsg) - 1;
    if (no > sizeof(bg_errmsg) - 1 - np)
        no = sizeof(bg_errmsg) - 1 - np;
    memcpy(bg_errmsg, prefix, np);
    memcpy(bg_errmsg + np, old, no);
    bg_errmsg[np + no] = '\0';
    return st;
}

const char *bg_last_error(void)
{
    return bg_errmsg;
}

void bg_clear_error(void)
{
    bg_errmsg[0] = '\0';
}

static int bg_log_level(void)
{
    static int level = -1;
    if (level < 0) {
        const char *e = getenv("BRIGADE_LOG");
        level = BG_LOG_WARN;
        if (e) {
            if (!strcmp(e, "error"))
                level = BG_LOG_ERROR;
            else if (!strcmp(e, "info"))
                level = BG_LOG_INFO;
            else if (!strcmp(e, "debug"))
                level = BG_LOG_DEBUG;
        }
    }
    return level;
}

int bg_log_enabled(bg_log_level_t level)
{
    return (int)level <= bg_log_level();
}

void bg_log(bg_log_level_t level, const char *fmt, ...)
{
    static const char *names[] = {"error", "warning", "info", "debug"};
    if (!bg_log_enabled(level))
        return;
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    fprintf(stderr, "brigade: %s: %s\n", names[level], line);
}
