/*
 * transport/transport.h -- how bytes move between brigade ranks.
 *
 * The public face of the transport room: bootstrap from the launcher's
 * environment, a TCP rendezvous store (key/value + barrier + liveness),
 * UCX tagged point-to-point of host or device buffers, and collectives for
 * data parallelism (allreduce, reduce-scatter, all-gather, broadcast,
 * barrier) over rank groups.
 *
 * Must NOT: know what the bytes mean (no tensors, layers, schedules), include
 * anything outside base/, exit or abort, or block without a deadline.
 *
 * Threading: one thread drives a bg_tp_t and everything made from it. The
 * store runs a private reader thread that only flags failures.
 * Conventions: output parameters last and set only on BG_OK; errors are
 * recorded with bg_errorf and name the peer rank and the cause.
 * Design, tag layout, failure detection and env vars: docs/transport.md.
 */
#ifndef BG_TRANSPORT_H
#define BG_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

/* ------------------------------------------------------------------ */
/* Bootstrap                                                           */
/* ------------------------------------------------------------------ */

typedef struct {
    int rank;             /* 0..world_size-1 */
    int world_size;       /* >= 1 */
    int local_rank;       /* rank among the ranks of this host, -1 unknown */
    char master_addr[256]; /* host of the rendezvous store */
    int master_port;       /* its TCP port */
    int store_external;    /* 1: a launcher hosts the store; rank 0 is a client */
    char source[16];       /* which launcher's variables were used */
} bg_tp_bootstrap_t;

/*
 * Read rank, world size, local rank and the rendezvous address from the
 * environment: BRIGADE_* first, then torchrun (RANK, WORLD_SIZE, LOCAL_RANK,
 * MASTER_ADDR, MASTER_PORT), Slurm (SLURM_PROCID, SLURM_NTASKS,
 * SLURM_LOCALID), Open MPI (OMPI_COMM_WORLD_RANK/_SIZE/_LOCAL_RANK), PMI
 * (PMI_RANK, PMI_SIZE). The address comes from BRIGADE_MASTER_ADDR/PORT, else
 * MASTER_ADDR/PORT, else 127.0.0.1:29500. BRIGADE_STORE=external marks a
 * launcher-hosted store. BG_ERR_INVALID names the variable that is malformed
 * or missing.
 */
bg_status_t bg_tp_bootstrap_from_env(bg_tp_bootstrap_t *out);

/* ------------------------------------------------------------------ */
/* Rendezvous store                                                    */
/* ------------------------------------------------------------------ */

/*
 * Job credentials. Every connection to a store proves it knows the job's
 * secret (HMAC challenge-response both ways; the secret never crosses the
 * wire) and names its job, so strangers and other jobs are refused before
 * they can read, write or take a rank's slot.
 */
#define BG_TP_JOB_MAX 64
typedef struct {
    unsigned char key[32];   /* derived from the secret and the job id */
    char job[BG_TP_JOB_MAX]; /* the job's id, printable; sent in clear */
} bg_tp_auth_t;

/* A fresh secret: 64 hex characters of 32 random bytes (libsodium) into
 * secret (cap >= 65). Cannot fail but for no entropy. */
bg_status_t bg_tp_auth_generate(char *secret, size_t cap);
/* Credentials from a secret (at least 16 bytes) and a job id (NULL: derived
 * from the secret). BG_ERR_INVALID for a short secret or a bad job id. */
bg_status_t bg_tp_auth_from_secret(const char *secret, const char *job, bg_tp_auth_t *out);
/* Credentials of this process's job: the secret from BRIGADE_JOB_SECRET,
 * else ~/.config/brigade/secret (refused unless a regular file of this user
 * with mode 0600 or stricter); the job id from BRIGADE_JOB_ID, else the
 * outer launcher's (SLURM_JOB_ID.SLURM_STEP_ID, TORCHELASTIC_RUN_ID, Open
 * MPI's job id), else derived from the secret. BG_ERR_INVALID names what is
 * missing or unsafe. */
bg_status_t bg_tp_auth_from_env(bg_tp_auth_t *out);

/*
 * The server: a TCP key/value store with barriers that also watches every
 * rank's connection, heartbeats and progress, and tells the others when a
 * rank closes without goodbye, reports a failure, stops heartbeating or
 * stops making progress. Hosted by rank 0 (bg_tp_create does it) or by a
 * launcher through these calls. It serves on its own thread from create
 * until destroy.
 */
typedef struct bg_tp_server bg_tp_server_t;

/* Bind `bind_addr:port` (a name or IPv4 address, resolved; NULL =
 * 127.0.0.1; never all interfaces; port 0 = any free port) for `world_size`
 * ranks of the job `auth` and start serving. BG_ERR_IO names the address
 * and errno; BG_ERR_INVALID an unresolvable or wildcard address. */
bg_status_t bg_tp_server_create(const char *bind_addr, int port, int world_size,
                                const bg_tp_auth_t *auth, bg_tp_server_t **out);
/* The port actually bound (useful after port 0). */
int bg_tp_server_port(const bg_tp_server_t *srv);
/*
 * Cap the bytes of keys and values the store holds (default 256 MiB; 0: no
 * cap). A set that would go past it is refused: the client gets
 * BG_ERR_NOMEM "store at ADDR:PORT: store is full: ..." at once, and the
 * store keeps serving everyone else. Callable from any thread at any time;
 * replacing a key counts only the difference. The key count has its own
 * cap (65536).
 */
void bg_tp_server_set_limit(bg_tp_server_t *srv, size_t bytes);
/*
 * Liveness bounds: a rank with no heartbeat for heartbeat_s is declared
 * unresponsive, a rank whose progress count has not moved for hang_s is
 * declared hung (the one stalled longest); <= 0 turns a check off. Defaults:
 * 10 s and off. Call before ranks connect (the heartbeat interval is told
 * at hello).
 */
void bg_tp_server_set_liveness(bg_tp_server_t *srv, double heartbeat_s, double hang_s);

typedef enum {
    BG_TP_FAULT_NONE = 0,
    BG_TP_FAULT_DIED,         /* connection closed without goodbye */
    BG_TP_FAULT_FAILED,       /* the rank reported an error (bg_tp_fail) */
    BG_TP_FAULT_UNRESPONSIVE, /* no heartbeat within the bound */
    BG_TP_FAULT_HUNG,         /* heartbeats, but no progress within the bound */
} bg_tp_fault_kind_t;

typedef struct {
    int rank;
    bg_tp_fault_kind_t kind;
    bg_status_t status; /* FAILED: the rank's own status */
    char host[64];      /* as the rank said at hello */
    char why[512];      /* the rank's message (FAILED) or the store's account */
} bg_tp_fault_t;

/* The first fault of the job, if any (1, *out set), else 0. Any thread. */
int bg_tp_server_fault(bg_tp_server_t *srv, bg_tp_fault_t *out);
/*
 * Block until every rank has said goodbye or failed, at most timeout_s (< 0:
 * forever). BG_OK if all left cleanly; BG_ERR_PEER naming the first faulty
 * rank; BG_ERR_TIMEOUT naming ranks still connected or never seen.
 */
bg_status_t bg_tp_server_wait(bg_tp_server_t *srv, double timeout_s);
/* Stop serving and free. Connected ranks will see the store as lost. */
void bg_tp_server_destroy(bg_tp_server_t *srv);

/* A rank's connection to the store. */
typedef struct bg_tp_store bg_tp_store_t;

/* Connect as `rank` of `world_size` of the job `auth`, retrying until
 * timeout_s (the server may start later than its clients). A store of
 * another job, or one that cannot prove the secret, is refused naming both
 * jobs; so is this client by such a store. Once connected a thread
 * heartbeats at the interval the store asks for. */
bg_status_t bg_tp_store_connect(const char *addr, int port, int rank, int world_size,
                                const bg_tp_auth_t *auth, double timeout_s,
                                bg_tp_store_t **out);
/* Publish key = value (key at most 1 KiB, value at most 1 MiB). Later sets
 * of one key replace it. Waits for the store's acknowledgement (at most the
 * connect timeout); a refusal (BG_ERR_NOMEM: out of memory or over the
 * budget; BG_ERR_INVALID) comes back at once with the store's reason. */
bg_status_t bg_tp_store_set(bg_tp_store_t *st, const char *key, const void *val, size_t len);
/* Wait until `key` exists and copy its value into buf (cap bytes); *len gets
 * its length. BG_ERR_TIMEOUT names ranks that never connected; BG_ERR_PEER if a
 * rank died meanwhile; BG_ERR_INVALID if cap is too small; a refusal by the
 * store (e.g. BG_ERR_NOMEM) with its reason, at once. */
bg_status_t bg_tp_store_get(bg_tp_store_t *st, const char *key, void *buf, size_t cap,
                            double timeout_s, size_t *len);
/* All world_size ranks meet at barrier `name`; a timeout names who did not. */
bg_status_t bg_tp_store_barrier(bg_tp_store_t *st, const char *name, double timeout_s);
/* Tell the store this rank failed with `status` and `why` (its error
 * message), so every other rank stops waiting for it at once. Best effort:
 * cannot fail. */
void bg_tp_store_fail(bg_tp_store_t *st, bg_status_t status, const char *why);
/* Count one unit of progress (an action finished); heartbeats carry the
 * count. Lock-free; any thread. */
void bg_tp_store_note_progress(bg_tp_store_t *st);
/* Say goodbye (so the server does not report this rank dead) and free. */
void bg_tp_store_close(bg_tp_store_t *st);

/* ------------------------------------------------------------------ */
/* Transport context                                                   */
/* ------------------------------------------------------------------ */

typedef struct bg_tp bg_tp_t;

typedef enum {
    BG_TP_MEM_HOST = 0,
    BG_TP_MEM_CUDA = 1,
} bg_tp_mem_t;

typedef enum {
    BG_TP_DEVICE_AUTO = 0, /* direct if UCX supports CUDA memory, else staged */
    BG_TP_DEVICE_DIRECT,   /* device pointers handed to UCX (needs CUDA-aware UCX) */
    BG_TP_DEVICE_STAGED,   /* through pinned host buffers, copy and wire overlapped */
} bg_tp_device_path_t;

typedef struct {
    bg_tp_bootstrap_t boot;
    double timeout_s;         /* rendezvous and default wait deadline; <= 0: 60 */
    bg_tp_device_path_t device_path;
    size_t chunk_bytes;       /* wire chunk; 0: BRIGADE_TP_CHUNK or 4 MiB */
    int stage_depth;          /* chunks in flight per staged request; 0: 4 */
    bg_tp_auth_t auth;        /* the job's credentials (world_size > 1) */
    double heartbeat_s;       /* rank 0's own store: unresponsive after this; 0: 10 */
    double hang_s;            /* rank 0's own store: hung after this; <= 0: off */
    int device;               /* CUDA device this rank uses: the transport's streams,
                                 events and scratch live there; -1: the device
                                 current at bg_tp_create */
} bg_tp_config_t;

/* Defaults from the environment: bootstrap plus BRIGADE_TP_TIMEOUT,
 * BRIGADE_TP_DEVICE_PATH=auto|direct|staged, BRIGADE_TP_CHUNK,
 * BRIGADE_TP_STAGE_DEPTH, device -1 (the current device), and the job's
 * credentials (bg_tp_auth_from_env) when the job has more than one rank. */
bg_status_t bg_tp_config_from_env(bg_tp_config_t *out);

/*
 * Join the job: connect to (or, on rank 0, host) the store, create the UCX
 * context and worker, publish this rank's address and wait for all ranks.
 * Endpoints are created on first use. Errors name the rank(s) that did not
 * arrive, or the UCX / socket failure.
 */
bg_status_t bg_tp_create(const bg_tp_config_t *cfg, bg_tp_t **out);
/*
 * Leave: cancel what is still outstanding, close endpoints with progress,
 * meet the others at a final barrier (skipped once a peer has died), destroy
 * worker and context; rank 0 keeps its store up until every rank has left.
 * Returns the first error met on the way (the context is freed regardless).
 */
bg_status_t bg_tp_destroy(bg_tp_t *tp);

/*
 * This rank failed with `status` (its message: `why`): the store tells every
 * other rank at once, so none waits for it, and bg_tp_destroy then skips the
 * final barrier. Call before bg_tp_destroy. Cannot fail.
 */
void bg_tp_fail(bg_tp_t *tp, bg_status_t status, const char *why);
/* One action finished: the heartbeat carries the count, and a rank whose
 * count stops moving is declared hung. Lock-free, any thread. */
void bg_tp_note_progress(bg_tp_t *tp);

int bg_tp_rank(const bg_tp_t *tp);
/* The context's default deadline (BRIGADE_TP_TIMEOUT), seconds. */
double bg_tp_timeout(const bg_tp_t *tp);
int bg_tp_world_size(const bg_tp_t *tp);
/* The store this context joined (for extra key/value exchange by callers). */
bg_tp_store_t *bg_tp_store(bg_tp_t *tp);
/* 1 when UCX can move CUDA memory itself (ucp_context_query memory types). */
int bg_tp_cuda_direct_supported(const bg_tp_t *tp);
/* Path device buffers take on this context (never AUTO). */
bg_tp_device_path_t bg_tp_device_path(const bg_tp_t *tp);
/* The CUDA device of the context's streams (-1: none, e.g. no GPU). */
int bg_tp_cuda_device(const bg_tp_t *tp);
/* 1 when `rank` has been reported dead; `why` gets the cause if non-NULL. */
int bg_tp_peer_dead(const bg_tp_t *tp, int rank, const char **why);

/* ------------------------------------------------------------------ */
/* Tags                                                                */
/* ------------------------------------------------------------------ */

/*
 * Tags are opaque to the transport: callers own the low BG_TP_TAG_BITS
 * bits and give them whatever layout they like (the engine's is in
 * engine/tag.h). The transport keeps the bits above for itself (a traffic
 * class, so collectives never match user messages, and the sender's rank,
 * since UCX matches tags, not senders); their layout is private.
 * A tag wider than BG_TP_TAG_BITS is refused with BG_ERR_INVALID, never
 * masked. A (peer, tag) pair must be unique among messages in flight
 * between two ranks in one direction; same-tag messages match in posting
 * order.
 */
#define BG_TP_TAG_BITS 44
#define BG_TP_TAG_MAX ((UINT64_C(1) << BG_TP_TAG_BITS) - 1)

/* ------------------------------------------------------------------ */
/* Point-to-point                                                      */
/* ------------------------------------------------------------------ */

typedef struct bg_tp_req bg_tp_req_t;

/*
 * Start sending `len` bytes of `buf` to `peer` under `tag` (at most
 * BG_TP_TAG_MAX). The buffer must stay untouched until the request completes.
 * Lengths must match the receiver's exactly. A dead peer fails at once with
 * BG_ERR_PEER. *req is released by a completing test/wait or by cancel.
 */
bg_status_t bg_tp_send(bg_tp_t *tp, int peer, uint64_t tag, const void *buf, size_t len,
                       bg_tp_mem_t mem, bg_tp_req_t **req);
/* Start receiving exactly `len` bytes from `peer` under `tag` into buf. */
bg_status_t bg_tp_recv(bg_tp_t *tp, int peer, uint64_t tag, void *buf, size_t len,
                       bg_tp_mem_t mem, bg_tp_req_t **req);
/*
 * Progress once; *done = 1 when the request has finished, in which case it
 * is released and the return value is its outcome (BG_ERR_PEER naming the
 * dead peer, BG_ERR_UCX with UCX's reason, BG_ERR_INVALID on a length
 * mismatch). While *done = 0 the return value is BG_OK.
 */
bg_status_t bg_tp_test(bg_tp_t *tp, bg_tp_req_t *req, int *done);
/*
 * Progress until the request finishes (released, its outcome returned) or
 * timeout_s passes (< 0: only a peer failure ends the wait). On
 * BG_ERR_TIMEOUT the request stays alive: wait again or cancel it.
 */
bg_status_t bg_tp_wait(bg_tp_t *tp, bg_tp_req_t *req, double timeout_s);
/* Abandon a request and release it. Receives are cancelled in UCX; a send's
 * buffer may still be read until the peer takes the data or dies. */
void bg_tp_cancel(bg_tp_t *tp, bg_tp_req_t *req);
/* Drive UCX, staging copies and collectives. Returns 1 if anything moved.
 * Cheap; the engine calls it between kernels to overlap communication. */
int bg_tp_progress(bg_tp_t *tp);

/* ------------------------------------------------------------------ */
/* Registered memory                                                   */
/* ------------------------------------------------------------------ */

typedef struct bg_tp_mr bg_tp_mr_t;

/* Register [buf, buf+len) with UCX (ucp_mem_map) so transfers inside it skip
 * registration on the hot path. Deregister before freeing the memory. */
bg_status_t bg_tp_mem_register(bg_tp_t *tp, void *buf, size_t len, bg_tp_mem_t mem,
                               bg_tp_mr_t **out);
void bg_tp_mem_deregister(bg_tp_t *tp, bg_tp_mr_t *mr);

/* ------------------------------------------------------------------ */
/* Collectives                                                         */
/* ------------------------------------------------------------------ */

typedef struct bg_tp_group bg_tp_group_t;
typedef struct bg_tp_coll bg_tp_coll_t;

typedef enum { BG_TP_F32 = 0, BG_TP_BF16 = 1 } bg_tp_dtype_t;
typedef enum { BG_TP_SUM = 0, BG_TP_AVG = 1 } bg_tp_op_t;

/*
 * A group of ranks (a stage's data-parallel replicas, the owners of a tied
 * weight). Every member calls create with the same list, in the same order;
 * the order is the ring order. The calling rank must be a member. Local:
 * no communication. Members must start collectives on a group in the same
 * order (like MPI); up to 4096 may be in flight per group.
 */
bg_status_t bg_tp_group_create(bg_tp_t *tp, const int *ranks, int n, bg_tp_group_t **out);
/* Free the group with its scratch cache and device reduction stream. A
 * collective handle still out keeps them until it is freed. */
void bg_tp_group_destroy(bg_tp_group_t *g);
int bg_tp_group_size(const bg_tp_group_t *g);
int bg_tp_group_index(const bg_tp_group_t *g); /* this rank's position */

/*
 * Shards: for the reduce-scatter / all-gather of `count` elements over a
 * group of n, member i owns elements
 *     [bg_tp_shard_offset(count, n, i), bg_tp_shard_offset(count, n, i + 1))
 * with bg_tp_shard_offset(count, n, i) = floor(count * i / n) (exact, no
 * overflow). Shards are contiguous, in member order, cover the buffer,
 * and differ in size by at most one element; with count < n some are
 * empty. i <= 0 gives 0, i >= n gives count. Cannot fail.
 */
size_t bg_tp_shard_offset(size_t count, int n, int i);

/*
 * Start an in-place allreduce of `count` elements: every member ends with
 * the reduction of all members' buffers. Large buffers go round a ring
 * (reduce-scatter then all-gather) in segments (BRIGADE_TP_SEGMENT,
 * default 512 KiB) pipelined 8 deep; buffers up to BRIGADE_TP_SMALL bytes
 * (default 64 KiB) take a direct exchange (2 message rounds). When every
 * member runs on this host, host buffers from BRIGADE_TP_DIRECT_MIN bytes
 * (default 1 MiB) are instead read straight out of the peers' buffers
 * (process_vm_readv; BRIGADE_TP_CMA=0 disables it; a group that cannot
 * read its peers keeps the ring), with the same bits. Each start is
 * one bucket and many may overlap. Deterministic: every element of shard b
 * is reduced along the fixed chain b+1, b+2, ..., b (mod n) whatever the
 * path or timing, and the final bits are copied to all, so every rank
 * holds identical bits and runs repeat bit for bit. AVG divides the sum by
 * the group size once, on the shard's owner. Device buffers are reduced by
 * CUDA kernels on the group's stream. The buffer must be untouched until
 * done. BG_ERR_INVALID for an unknown dtype/op or a NULL buffer.
 */
bg_status_t bg_tp_allreduce_start(bg_tp_group_t *g, void *buf, size_t count,
                                  bg_tp_dtype_t dtype, bg_tp_op_t op, bg_tp_mem_t mem,
                                  bg_tp_coll_t **out);
/*
 * Start an in-place reduce-scatter: on completion this member's shard
 * (bg_tp_shard_offset above) of buf holds the reduction of every member's
 * buffer over that shard, with exactly the bits an allreduce would give
 * there. The rest of buf is scratch afterwards: it may hold partial sums.
 * Same ordering rules, paths and errors as allreduce.
 */
bg_status_t bg_tp_reduce_scatter_start(bg_tp_group_t *g, void *buf, size_t count,
                                       bg_tp_dtype_t dtype, bg_tp_op_t op, bg_tp_mem_t mem,
                                       bg_tp_coll_t **out);
/*
 * Start an in-place all-gather: every member's shard of buf (same
 * boundaries) is copied to every other member, so all end with identical
 * buffers. Only this member's shard is read; the rest is overwritten.
 * Reduce-scatter then all-gather of one buffer equals an allreduce bit for
 * bit (ZeRO-1: reduce-scatter gradients, update the owned shard, all-gather
 * parameters).
 */
bg_status_t bg_tp_allgather_start(bg_tp_group_t *g, void *buf, size_t count, bg_tp_dtype_t dtype,
                                  bg_tp_mem_t mem, bg_tp_coll_t **out);
/* Start a pipelined chain broadcast of `len` bytes from group index `root`. */
bg_status_t bg_tp_bcast_start(bg_tp_group_t *g, void *buf, size_t len, int root,
                              bg_tp_mem_t mem, bg_tp_coll_t **out);
/* Start a dissemination barrier over the group. */
bg_status_t bg_tp_barrier_start(bg_tp_group_t *g, bg_tp_coll_t **out);
/* Like bg_tp_test / bg_tp_wait for collectives; a finished handle is freed.
 * Errors name the rank the collective was waiting on. */
bg_status_t bg_tp_coll_test(bg_tp_coll_t *c, int *done);
bg_status_t bg_tp_coll_wait(bg_tp_coll_t *c, double timeout_s);

/* Blocking conveniences: start + wait. */
bg_status_t bg_tp_allreduce(bg_tp_group_t *g, void *buf, size_t count, bg_tp_dtype_t dtype,
                            bg_tp_op_t op, bg_tp_mem_t mem, double timeout_s);
bg_status_t bg_tp_reduce_scatter(bg_tp_group_t *g, void *buf, size_t count, bg_tp_dtype_t dtype,
                                 bg_tp_op_t op, bg_tp_mem_t mem, double timeout_s);
bg_status_t bg_tp_allgather(bg_tp_group_t *g, void *buf, size_t count, bg_tp_dtype_t dtype,
                            bg_tp_mem_t mem, double timeout_s);
bg_status_t bg_tp_bcast(bg_tp_group_t *g, void *buf, size_t len, int root, bg_tp_mem_t mem,
                        double timeout_s);
bg_status_t bg_tp_barrier(bg_tp_group_t *g, double timeout_s);

#endif
