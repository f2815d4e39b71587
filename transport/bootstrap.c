/*
 * transport/bootstrap.c -- who am I: rank, world size, local rank and the
 * rendezvous address, read from whichever launcher started this process.
 *
 * Must NOT: contact anything (pure environment parsing), guess silently
 * when a launcher's variables are half present (that is an error naming the
 * missing variable).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "transport/transport.h"

/* Parse env var `name` as an int in [lo, hi]. 0 = absent, 1 = ok, -1 = bad. */
static int env_int(const char *name, int lo, int hi, int *out)
{
    const char *v = getenv(name);
    if (!v || !*v) return 0;
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || *end || x < lo || x > hi) {
        bg_errorf(BG_ERR_INVALID, "bootstrap: %s='%s' is not an integer in %d..%d", name, v, lo,
                  hi);
        return -1;
    }
    *out = (int)x;
    return 1;
}

typedef struct {
    const char *source, *rank, *size, *local;
} launcher_vars_t;

/* The order is the contract (docs/transport.md): brigade's own variables
 * win, so a launcher can override what an outer scheduler set. */
static const launcher_vars_t launchers[] = {
    {"brigade", "BRIGADE_RANK", "BRIGADE_WORLD_SIZE", "BRIGADE_LOCAL_RANK"},
    {"torchrun", "RANK", "WORLD_SIZE", "LOCAL_RANK"},
    {"slurm", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"},
    {"openmpi", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"},
    {"pmi", "PMI_RANK", "PMI_SIZE", NULL},
};

bg_status_t bg_tp_bootstrap_from_env(bg_tp_bootstrap_t *out)
{
    bg_tp_bootstrap_t b;
    memset(&b, 0, sizeof(b));
    b.local_rank = -1;
    const launcher_vars_t *found = NULL;
    for (size_t i = 0; i < sizeof(launchers) / sizeof(launchers[0]); i++) {
        const launcher_vars_t *l = &launchers[i];
        int r = env_int(l->rank, 0, 1 << 20, &b.rank);
        if (r < 0) return BG_ERR_INVALID;
        if (r == 0) continue;
        int s = env_int(l->size, 1, 1 << 20, &b.world_size);
        if (s < 0) return BG_ERR_INVALID;
        if (s == 0)
            return bg_errorf(BG_ERR_INVALID, "bootstrap: %s is set but %s is not", l->rank,
                             l->size);
        if (b.rank >= b.world_size)
            return bg_errorf(BG_ERR_INVALID, "bootstrap: %s=%d is not below %s=%d", l->rank,
                             b.rank, l->size, b.world_size);
        if (l->local && env_int(l->local, 0, 1 << 20, &b.local_rank) < 0) return BG_ERR_INVALID;
        found = l;
        break;
    }
    if (!found) {
        /* No launcher: a single process is a valid job of one. */
        b.rank = 0;
        b.world_size = 1;
        b.local_rank = 0;
        snprintf(b.source, sizeof(b.source), "single");
    } else {
        snprintf(b.source, sizeof(b.source), "%s", found->source);
    }

    const char *addr = getenv("BRIGADE_MASTER_ADDR");
    if (!addr || !*addr) addr = getenv("MASTER_ADDR");
    if (!addr || !*addr) addr = "127.0.0.1";
    if (strlen(addr) >= sizeof(b.master_addr))
        return bg_errorf(BG_ERR_INVALID, "bootstrap: master address '%.40s...' too long", addr);
    snprintf(b.master_addr, sizeof(b.master_addr), "%s", addr);
    int pr = env_int("BRIGADE_MASTER_PORT", 1, 65535, &b.master_port);
    if (pr < 0) return BG_ERR_INVALID;
    if (pr == 0) {
        pr = env_int("MASTER_PORT", 1, 65535, &b.master_port);
        if (pr < 0) return BG_ERR_INVALID;
        if (pr == 0) b.master_port = 29500;
    }
    const char *store = getenv("BRIGADE_STORE");
    if (store && *store) {
        if (!strcmp(store, "external")) b.store_external = 1;
        else if (strcmp(store, "rank0"))
            return bg_errorf(BG_ERR_INVALID,
                             "bootstrap: BRIGADE_STORE='%s' (expected 'rank0' or 'external')",
                             store);
    }
    *out = b;
    return BG_OK;
}
