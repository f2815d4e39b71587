/*
 * tests/transport/test_tp_unit.c -- single-process checks: tag packing,
 * bootstrap from each launcher's variables (and its errors), and the store
 * (set/get/barrier, timeouts naming missing ranks, refused hellos).
 *
 * Must NOT: start UCX or other processes (the integration tests do).
 */
#include "test_util.h"
#include "transport/transport.h"

static void clear_env(void)
{
    const char *v[] = {"BRIGADE_RANK", "BRIGADE_WORLD_SIZE", "BRIGADE_LOCAL_RANK",
                       "BRIGADE_MASTER_ADDR", "BRIGADE_MASTER_PORT", "BRIGADE_STORE", "RANK",
                       "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "SLURM_PROCID",
                       "SLURM_NTASKS", "SLURM_LOCALID", "OMPI_COMM_WORLD_RANK",
                       "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK", "PMI_RANK",
                       "PMI_SIZE", NULL};
    for (int i = 0; v[i]; i++) unsetenv(v[i]);
}

static void test_bootstrap(void)
{
    bg_tp_bootstrap_t b;
    clear_env();
    CHECK_OK(bg_tp_bootstrap_from_env(&b));
    CHECK(b.rank == 0 && b.world_size == 1 && !strcmp(b.source, "single"));
    CHECK(!strcmp(b.master_addr, "127.0.0.1") && b.master_port == 29500);

    setenv("SLURM_PROCID", "3", 1), setenv("SLURM_NTASKS", "8", 1), setenv("SLURM_LOCALID", "1", 1);
    setenv("OMPI_COMM_WORLD_RANK", "5", 1), setenv("OMPI_COMM_WORLD_SIZE", "6", 1);
    CHECK_OK(bg_tp_bootstrap_from_env(&b));
    CHECK(b.rank == 3 && b.world_size == 8 && b.local_rank == 1 && !strcmp(b.source, "slurm"));
    setenv("RANK", "2", 1), setenv("WORLD_SIZE", "4", 1), setenv("MASTER_ADDR", "node7", 1);
    setenv("MASTER_PORT", "1234", 1);
    CHECK_OK(bg_tp_bootstrap_from_env(&b));
    CHECK(b.rank == 2 && b.world_size == 4 && !strcmp(b.source, "torchrun"));
    CHECK(!strcmp(b.master_addr, "node7") && b.master_port == 1234);
    setenv("BRIGADE_RANK", "1", 1), setenv("BRIGADE_WORLD_SIZE", "2", 1);
    setenv("BRIGADE_MASTER_PORT", "4321", 1), setenv("BRIGADE_STORE", "external", 1);
    CHECK_OK(bg_tp_bootstrap_from_env(&b));
    CHECK(b.rank == 1 && b.world_size == 2 && b.master_port == 4321 && b.store_external);
    CHECK(!strcmp(b.source, "brigade"));

    clear_env();
    setenv("PMI_RANK", "0", 1), setenv("PMI_SIZE", "3", 1);
    CHECK_OK(bg_tp_bootstrap_from_env(&b));
    CHECK(b.world_size == 3 && !strcmp(b.source, "pmi"));
    /* Errors name the variable. */
    setenv("PMI_RANK", "5", 1);
    CHECK(bg_tp_bootstrap_from_env(&b) == BG_ERR_INVALID && strstr(bg_last_error(), "PMI_RANK"));
    setenv("PMI_RANK", "x1", 1);
    CHECK(bg_tp_bootstrap_from_env(&b) == BG_ERR_INVALID && strstr(bg_last_error(), "PMI_RANK"));
    clear_env();
    setenv("RANK", "0", 1);
    CHECK(bg_tp_bootstrap_from_env(&b) == BG_ERR_INVALID && strstr(bg_last_error(), "WORLD_SIZE"));
    clear_env();
}

static void test_store(void)
{
    bg_tp_server_t *srv = NULL;
    CHECK_OK(bg_tp_server_create("127.0.0.1", 0, 2, &srv));
    if (!srv) return;
    int port = bg_tp_server_port(srv);
    CHECK(port > 0);
    bg_tp_store_t *a = NULL, *bad = NULL;
    CHECK_OK(bg_tp_store_connect("127.0.0.1", port, 0, 2, 5, &a));
    /* Refused: wrong world size, duplicate rank. */
    CHECK(bg_tp_store_connect("127.0.0.1", port, 1, 3, 5, &bad) != BG_OK);
    CHECK(strstr(bg_last_error(), "world size mismatch") != NULL);
    CHECK(bg_tp_store_connect("127.0.0.1", port, 0, 2, 5, &bad) != BG_OK);
    CHECK(strstr(bg_last_error(), "connected twice") != NULL);
    if (!a) return;
    char v[64];
    size_t len = 0;
    CHECK_OK(bg_tp_store_set(a, "k", "hello", 6));
    CHECK_OK(bg_tp_store_get(a, "k", v, sizeof(v), 5, &len));
    CHECK(len == 6 && !strcmp(v, "hello"));
    CHECK(bg_tp_store_get(a, "k", v, 2, 5, &len) == BG_ERR_INVALID);
    /* Rank 1 never connects: a get and a barrier time out naming it. */
    CHECK(bg_tp_store_get(a, "never", v, sizeof(v), 0.2, &len) == BG_ERR_TIMEOUT);
    CHECK(strstr(bg_last_error(), "never connected: rank 1") != NULL);
    CHECK(bg_tp_store_barrier(a, "b0", 0.2) == BG_ERR_TIMEOUT);
    CHECK(strstr(bg_last_error(), "not at barrier: rank 1") != NULL);
    CHECK(bg_tp_server_wait(srv, 0.1) == BG_ERR_TIMEOUT);
    bg_tp_store_close(a);
    bg_tp_server_destroy(srv);
}

int main(void)
{
    test_bootstrap();
    test_store();
    return bg_test_finish("test_tp_unit");
}
