/*
 * transport/direct.c -- the same-host direct path of reduce-scatter,
 * all-gather and allreduce over host buffers: each member reads what it
 * needs straight out of its peers' buffers with process_vm_readv (cross
 * memory attach), so a byte crosses memory once instead of the ring's
 * copy into scratch, then read again to add.
 *
 * When (ring.c asks bg_tp_cma_plan at every start; every member decides
 * alike): every member on this host (the host names published at the
 * rendezvous), host memory, at least BRIGADE_TP_DIRECT_MIN bytes (default
 * 1 MiB: measured, below it the notice rounds cost more than the saved
 * copies), BRIGADE_TP_CMA not 0. ring.c keeps its ring planned: a group
 * whose members cannot read each other (no ptrace permission, another pid
 * namespace) falls back to it on every member, with one INFO line.
 *
 * Protocol. Notices are small messages in the collective class (tag step
 * 1023, segment = round); each round goes from every member to every other.
 *   R0 ready    {pid, nonce address and value, buffer address, count,
 *               dtype, kind, host}: "my buffer holds my input (all-gather:
 *               my shard is final); read it". Checked against our own call.
 *   R1 verdict  only in the group's first direct collective (the probe):
 *               "I read every peer's nonce through process_vm_readv". All
 *               1: the group uses the path from then on; else the ring.
 *               Collectives started meanwhile send R0, then wait for it
 *               (if the probing one fails first, they fail with it).
 *   R2 rs-done  owner b has read its shard from every peer and written the
 *               result: "I no longer read your buffer; my shard is final".
 *   R3 ag-done  once every shard is copied in: "I read nobody any more".
 * Reduce-scatter: after every R0, owner b reads x[b+1], x[b+2], ... of its
 * shard block by block (two cache-sized blocks of scratch) and adds in the
 * ring's order ((x[b+1] + x[b+2]) + ...) + x[b], one IEEE operation each
 * (reduce.c; AVG divides once, on the owner): the ring's bits exactly.
 * All-gather: member i copies shard c from c's buffer into place once it
 * is final (c's R0 in an all-gather, c's R2 in an allreduce).
 * In-place safety: before its R2s a member writes only its own shard,
 * which no peer reads; it writes shard c only after c's R2 (c reads us no
 * more), and peers read only shard c of c's buffer. A member completes only
 * when every peer has sent R2 (reduce-scatter) and R3 (all-gather), each
 * sent after all of that peer's reads: nobody reads its buffer any more,
 * so the caller may reuse it at once. A member that fails (its read
 * failed, a peer died) returns at once and sends no R2 / R3 but marked
 * failed, so no peer completes that collective with success: reads of a
 * buffer already back with its caller can only end in a failure, never
 * in a result.
 *
 * Progress: at most BUDGET bytes copied per advance call; nothing blocks.
 * A failed read (ESRCH: the peer is gone; EFAULT; a short read) fails the
 * collective naming the peer's rank, host, pid and the errno's text; a
 * member that fails once reading has begun sends its missing R2 / R3 with
 * a failure mark, so its peers fail at once instead of at their deadline.
 *
 * Must NOT: write into a peer's memory, read a peer's buffer before its
 * ready or after its R2/R3 went out, reduce in any other order, take
 * device buffers, or be named by coll.c.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "transport/coll_int.h"

#define DEFAULT_MIN ((size_t)1 << 20)
#define DEFAULT_BLOCK ((size_t)256 << 10)
#define BUDGET ((size_t)1 << 20)
#define NOTICE_STEP 1023 /* ring steps stop at 2 * 512 - 3 */
#define READY_MAGIC 0x62672d636d613031ull
#define HOSTLEN 64

enum { R_READY, R_VERDICT, R_RSDONE, R_AGDONE, NROUNDS };
enum { Q_IDLE = 0, Q_POSTED, Q_DONE }; /* a notice request's state */
enum { TOK_OK = 1, TOK_FAILED = 0xee };  /* what an rs-done / ag-done says */

/* R0 on the wire (both sides are this build on this host). */
typedef struct {
    uint64_t magic;
    int64_t pid;
    uint64_t nonce_addr, nonce;
    uint64_t addr, count;
    uint32_t dtype, kind;
    char host[HOSTLEN];
} ready_t;

typedef struct {
    ready_t out;
    ready_t *in;         /* [n] peers' R0 */
    size_t *ag_off;      /* [n] elements of shard c copied so far */
    uint8_t *verdict_in; /* [n] */
    uint8_t *sink;       /* [2n] R2 / R3 land here */
    uint8_t *q;          /* [NROUNDS][n][2] (recv, send): Q_* */
    uint8_t verdict_out, tok;
    char *acc, *tmp; /* reduce blocks (scratch) */
    size_t block;    /* elements per reduce block */
    size_t pos;      /* next element of my shard to reduce */
    int probing;     /* this collective probes the group */
    int verdict_sent;
    int direct;  /* the group uses the path: R2 / R3 posted, reading */
    int reduced;  /* my shard is final, R2 sent */
    int gathered; /* every shard copied in, R3 sent */
    int told;     /* peers told of this member's failure */
    char why[240]; /* why my probe failed */
} cma_t;

static const char *const names[] = {"allreduce", "reduce-scatter", "all-gather"};

/* This process's identity for the probe: a peer that reads our pid's
 * memory at &nonce and finds this value reads this process. */
static uint64_t nonce;

static int mod(int a, int n)
{
    return ((a % n) + n) % n;
}

/* Elements per reduce block (BRIGADE_TP_CMA_BLOCK bytes, default 256 KiB:
 * two of them stay in cache while the peers' pieces stream through). */
static size_t block_elems(const bg_tp_coll_t *c)
{
    size_t b = bg_tp_coll_knob("BRIGADE_TP_CMA_BLOCK", DEFAULT_BLOCK) / c->esz;
    return b ? b : 1;
}

size_t bg_tp_cma_plan(const bg_tp_coll_t *c, int *use)
{
    const char *on = getenv("BRIGADE_TP_CMA");
    *use = 0;
    if (c->mem != BG_TP_MEM_HOST || (on && *on && strtol(on, NULL, 10) == 0) || c->g->n < 2)
        return 0;
    if (c->count * c->esz < bg_tp_coll_knob("BRIGADE_TP_DIRECT_MIN", DEFAULT_MIN))
        return 0;
    for (int i = 0; i < c->g->n; i++)
        if (!bg_tp_peer_same_host(c->tp, c->g->ranks[i]))
            return 0;
    *use = 1;
    return c->kind == COLL_ALLGATHER ? 0 : 2 * block_elems(c) * c->esz;
}

/* ---------------- notices ---------------- */

static uint8_t *qstate(bg_tp_coll_t *c, int r, int j, int send)
{
    cma_t *x = c->ext;
    return &x->q[((size_t)r * (size_t)c->g->n + (size_t)j) * 2 + (size_t)send];
}

/* Post round r's receive from (send 0) or send to (send 1) member j of
 * `len` bytes at buf. Fails the collective on error. */
static void post(bg_tp_coll_t *c, int r, int j, int send, void *buf, size_t len)
{
    int rank = c->g->ranks[j];
    bg_tp_lane_t pair = {0};
    bg_tp_lane_post(c, &pair, bg_tp_coll_tag(c, NOTICE_STEP, (size_t)r), send ? rank : -1, buf,
                    send ? len : 0, send ? -1 : rank, buf, send ? 0 : len);
    bg_tp_req_t *q = send ? pair.sreq : pair.rreq;
    if (c->done) { /* failed: the collective's cancel did not see it yet */
        if (q)
            bg_tp_cancel(c->tp, q);
        return;
    }
    c->xreq[((size_t)r * (size_t)c->g->n + (size_t)j) * 2 + (size_t)send] = q;
    *qstate(c, r, j, send) = Q_POSTED;
}

/* Round r with every other member, one direction: receives into
 * base + j * stride, or sends of `base`. */
static void post_all(bg_tp_coll_t *c, int r, int send, void *base, size_t stride, size_t len)
{
    for (int j = 0; j < c->g->n && !c->done; j++)
        if (j != c->g->me)
            post(c, r, j, send, (char *)base + (send ? 0 : (size_t)j * stride), len);
}

/* An rs-done / ag-done from member j that says it failed: fail too. */
static void peer_failed(bg_tp_coll_t *c, int j)
{
    char msg[BG_TP_COLL_ERRLEN];
    snprintf(msg, sizeof(msg), "%s #%u: rank %d (host %s) failed its part of the collective",
             names[c->kind], c->seq, c->g->ranks[j], ((cma_t *)c->ext)->in[j].host);
    bg_tp_coll_fail(c, BG_ERR_PEER, msg);
}

/* 1 when the request (r, j, send) has finished, 0 while it runs, was never
 * posted, or failed (then the collective has failed). */
static int finished(bg_tp_coll_t *c, int r, int j, int send)
{
    cma_t *x = c->ext;
    uint8_t *s = qstate(c, r, j, send);
    if (*s != Q_POSTED)
        return *s == Q_DONE;
    if (!bg_tp_coll_poll(c, &c->xreq[((size_t)r * (size_t)c->g->n + (size_t)j) * 2 + (size_t)send]))
        return 0;
    *s = Q_DONE;
    if (!send && r >= R_RSDONE && x->sink[(r == R_AGDONE ? c->g->n : 0) + j] != TOK_OK) {
        peer_failed(c, j);
        return 0;
    }
    return 1;
}

/* This member failed in a group that chose the path: tell every peer that
 * still waits for an rs-done / ag-done from it, so that none waits for its
 * deadline. Best effort: one-byte sends released at once (the byte is
 * static, so it may leave later). Cannot fail. */
static void tell_failure(bg_tp_coll_t *c)
{
    static const uint8_t failed = TOK_FAILED;
    for (int r = R_RSDONE; r <= R_AGDONE; r++) {
        if ((r == R_RSDONE && c->kind == COLL_ALLGATHER) ||
            (r == R_AGDONE && c->kind == COLL_REDUCE_SCATTER))
            continue;
        for (int j = 0; j < c->g->n; j++) {
            bg_tp_req_t *q = NULL;
            if (j == c->g->me || *qstate(c, r, j, 1) != Q_IDLE)
                continue;
            if (bg_tp_send_raw(c->tp, BG_TP_CLASS_COLL, c->g->ranks[j],
                               bg_tp_coll_tag(c, NOTICE_STEP, (size_t)r), &failed, 1,
                               BG_TP_MEM_HOST, &q) == BG_OK)
                bg_tp_cancel(c->tp, q);
            *qstate(c, r, j, 1) = Q_DONE;
        }
    }
}

/* 1 when round r's requests one way (send) have all finished; the first
 * member still awaited is noted for a timeout's message. */
static int round_finished(bg_tp_coll_t *c, int r, int send)
{
    int all = 1;
    for (int j = 0; j < c->g->n && !c->done; j++)
        if (j != c->g->me && !finished(c, r, j, send)) {
            if (all && !send)
                c->waiting_on = c->g->ranks[j];
            all = 0;
        }
    return all && !c->done;
}

/* ---------------- reading peers ---------------- */

/* Copy m elements at element offset `off` of member j's buffer into dst.
 * 1 on success; else the collective fails naming the peer. */
static int peer_read(bg_tp_coll_t *c, int j, void *dst, size_t off, size_t m)
{
    const ready_t *p = &((cma_t *)c->ext)->in[j];
    size_t want = m * c->esz, got = 0;
    while (got < want) {
        struct iovec lo = {(char *)dst + got, want - got};
        struct iovec re = {(void *)(uintptr_t)(p->addr + off * c->esz + got), want - got};
        ssize_t r = process_vm_readv((pid_t)p->pid, &lo, 1, &re, 1, 0);
        if (r > 0) {
            got += (size_t)r;
            continue;
        }
        int e = r < 0 ? errno : 0;
        if (e == EINTR)
            continue;
        char msg[BG_TP_COLL_ERRLEN];
        snprintf(msg, sizeof(msg), "%s: reading %zu bytes of rank %d (host %s, pid %lld) at %#llx: %s",
                 names[c->kind], want - got, c->g->ranks[j], p->host, (long long)p->pid,
                 (unsigned long long)(uintptr_t)re.iov_base, e ? strerror(e) : "short read");
        bg_tp_coll_fail(c, e == ESRCH ? BG_ERR_PEER : BG_ERR_IO, msg);
        return 0;
    }
    return 1;
}

/* Can this process read member j's memory? 1 if so, else 0 with x->why. */
static int probe(bg_tp_coll_t *c, int j)
{
    cma_t *x = c->ext;
    const ready_t *p = &x->in[j];
    uint64_t v = 0;
    struct iovec lo = {&v, sizeof(v)}, re = {(void *)(uintptr_t)p->nonce_addr, sizeof(v)};
    /* Testing: BRIGADE_TP_CMA_DENY=<rank> makes that rank's probe fail. */
    const char *deny = getenv("BRIGADE_TP_CMA_DENY");
    int e = EPERM;
    ssize_t r = -1;
    if (!deny || !*deny || atoi(deny) != bg_tp_rank(c->tp)) {
        r = process_vm_readv((pid_t)p->pid, &lo, 1, &re, 1, 0);
        e = errno;
    }
    if (r == (ssize_t)sizeof(v) && v == p->nonce)
        return 1;
    snprintf(x->why, sizeof(x->why), "rank %d cannot read rank %d (host %s, pid %lld): %s",
             bg_tp_rank(c->tp), c->g->ranks[j], p->host, (long long)p->pid,
             r < 0 ? strerror(e) : "another process answers to that pid");
    return 0;
}

/* ---------------- starting ---------------- */

static cma_t *cma_alloc(int n)
{
    size_t nn = (size_t)n;
    size_t sz = sizeof(cma_t) + nn * (sizeof(ready_t) + sizeof(size_t) + 3 + NROUNDS * 2);
    cma_t *x = calloc(1, sz);
    if (!x)
        return NULL;
    char *p = (char *)(x + 1); /* ready_t and size_t first: aligned */
    x->in = (ready_t *)p;
    p += nn * sizeof(ready_t);
    x->ag_off = (size_t *)p;
    p += nn * sizeof(size_t);
    x->verdict_in = (uint8_t *)p;
    x->sink = x->verdict_in + nn;
    x->q = x->sink + 2 * nn;
    return x;
}

static void nonce_init(void)
{
    while (!nonce)
        if (getrandom(&nonce, sizeof(nonce), 0) != (ssize_t)sizeof(nonce))
            nonce = ((uint64_t)getpid() << 32) ^ (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)&nonce;
}

void bg_tp_cma_start(bg_tp_coll_t *c, void *scratch)
{
    bg_tp_group_t *g = c->g;
    int n = g->n;
    cma_t *x = cma_alloc(n);
    bg_tp_req_t **req = calloc((size_t)NROUNDS * 2 * (size_t)n, sizeof(*req));
    int probing = g->cma == 0 && !g->cma_probing;
    long *pids = probing && !g->cma_pids ? calloc((size_t)n, sizeof(long)) : NULL;
    if (!x || !req || (probing && !g->cma_pids && !pids)) {
        free(x), free(req), free(pids);
        bg_tp_coll_fail(c, BG_ERR_NOMEM, "collective: out of memory for the direct path");
        return;
    }
    if (pids)
        g->cma_pids = pids;
    c->ext = x;
    c->xreq = req;
    c->nxreq = NROUNDS * 2 * n;
    c->cma = 1;
    x->probing = probing;
    g->cma_probing |= probing;
    x->block = block_elems(c);
    x->acc = scratch;
    x->tmp = scratch ? (char *)scratch + x->block * c->esz : NULL;
    x->pos = bg_tp_shard_offset(c->count, n, g->me);
    x->tok = TOK_OK;
    nonce_init();
    x->out = (ready_t){.magic = READY_MAGIC,
                       .pid = (int64_t)getpid(),
                       .nonce_addr = (uint64_t)(uintptr_t)&nonce,
                       .nonce = nonce,
                       .addr = (uint64_t)(uintptr_t)c->buf,
                       .count = c->count,
                       .dtype = (uint32_t)c->dt,
                       .kind = (uint32_t)c->kind};
    gethostname(x->out.host, HOSTLEN - 1);
    post_all(c, R_READY, 0, x->in, sizeof(ready_t), sizeof(ready_t));
    if (probing)
        post_all(c, R_VERDICT, 0, x->verdict_in, 1, 1);
    post_all(c, R_READY, 1, &x->out, 0, sizeof(ready_t));
}

/* ---------------- advancing ---------------- */

/* Peer j's ready against our own call. 1 if it matches; else the
 * collective fails naming the peer. */
static int ready_check(bg_tp_coll_t *c, int j)
{
    ready_t *p = &((cma_t *)c->ext)->in[j];
    const bg_tp_group_t *g = c->g;
    p->host[HOSTLEN - 1] = '\0';
    size_t bytes = c->count * c->esz; /* bounded at start */
    const char *bad = p->magic != READY_MAGIC                ? "not a ready notice"
                      : p->kind != (uint32_t)c->kind         ? "another collective kind"
                      : p->count != c->count                 ? "another element count"
                      : p->dtype != (uint32_t)c->dt          ? "another dtype"
                      : p->pid <= 0 || !p->addr              ? "no pid or buffer"
                      : p->addr > UINT64_MAX - bytes         ? "a buffer past the address space"
                      : g->cma == 1 && p->pid != g->cma_pids[j] ? "a pid other than the probed one"
                                                                : NULL;
    if (!bad)
        return 1;
    char msg[BG_TP_COLL_ERRLEN];
    snprintf(msg, sizeof(msg),
             "%s #%u: rank %d (host %s) announced %s (count %llu, dtype %u, kind %u; ours %zu, "
             "%d, %d): members must start the same collectives in the same order",
             names[c->kind], c->seq, g->ranks[j], p->host, bad, (unsigned long long)p->count,
             p->dtype, p->kind, c->count, (int)c->dt, (int)c->kind);
    bg_tp_coll_fail(c, BG_ERR_INVALID, msg);
    return 0;
}

/* The probing collective: once every ready is in, probe each peer and tell
 * all; once every verdict is in, settle the group's choice. */
static void probe_advance(bg_tp_coll_t *c)
{
    cma_t *x = c->ext;
    bg_tp_group_t *g = c->g;
    if (!x->verdict_sent) {
        x->verdict_out = 1;
        for (int j = 0; j < g->n; j++)
            if (j != g->me && !probe(c, j))
                x->verdict_out = 0;
        x->verdict_sent = 1;
        post_all(c, R_VERDICT, 1, &x->verdict_out, 0, 1);
    }
    if (c->done || !round_finished(c, R_VERDICT, 0))
        return;
    int ok = x->verdict_out, who = -1;
    for (int j = 0; j < g->n; j++)
        if (j != g->me && !x->verdict_in[j]) {
            ok = 0;
            who = who < 0 ? g->ranks[j] : who;
        }
    for (int j = 0; j < g->n; j++)
        g->cma_pids[j] = j == g->me ? (long)getpid() : (long)x->in[j].pid;
    g->cma = ok > 0 ? 1 : -1;
    if (g->cma < 0 && !x->why[0])
        snprintf(x->why, sizeof(x->why), "rank %d cannot read its peers", who);
    if (g->cma < 0)
        bg_log(BG_LOG_INFO, "rank %d: group of %d ranks: same-host direct collectives unavailable "
                            "(%s); using the ring",
               bg_tp_rank(c->tp), g->n, x->why);
}

/* Before the group's choice is known: readies in, probe, then either
 * start reading (x->direct) or hand c back to the ring (c->cma = 0). */
static int decide(bg_tp_coll_t *c)
{
    cma_t *x = c->ext;
    bg_tp_group_t *g = c->g;
    int n = g->n;
    if (g->cma == -2) { /* nothing will settle the choice this one waits for */
        char msg[BG_TP_COLL_ERRLEN];
        snprintf(msg, sizeof(msg),
                 "%s #%u: the group's first same-host collective, which decides whether its "
                 "members can read each other, failed",
                 names[c->kind], c->seq);
        bg_tp_coll_fail(c, BG_ERR_PEER, msg);
        return 1;
    }
    for (int j = 0; j < n && !c->done; j++)
        if (j != g->me && *qstate(c, R_READY, j, 0) == Q_POSTED && finished(c, R_READY, j, 0))
            ready_check(c, j);
    if (c->done || !round_finished(c, R_READY, 0))
        return 0;
    if (x->probing)
        probe_advance(c);
    if (c->done || g->cma == 0)
        return 0;
    for (int j = 0; j < n && g->cma > 0 && !x->probing; j++)
        if (j != g->me && !ready_check(c, j)) /* now against the probed pids */
            return 1;
    if (g->cma < 0) {
        /* The ring's messages must not pass our notices: wait for them. */
        if (!round_finished(c, R_READY, 1) || (x->probing && !round_finished(c, R_VERDICT, 1)))
            return 0;
        c->cma = 0;
        return 1;
    }
    if (c->kind != COLL_ALLGATHER)
        post_all(c, R_RSDONE, 0, x->sink, 1, 1);
    if (c->kind != COLL_REDUCE_SCATTER)
        post_all(c, R_AGDONE, 0, x->sink + n, 1, 1);
    x->direct = 1;
    return 1;
}

/* Reduce blocks of my shard in chain order while budget lasts; R2 out
 * when the shard is final. 1 if anything moved. */
static int reduce_some(bg_tp_coll_t *c, size_t *budget)
{
    cma_t *x = c->ext;
    int n = c->g->n, me = c->g->me, moved = 0;
    size_t hi = bg_tp_shard_offset(c->count, n, me + 1);
    while (x->pos < hi && *budget > 0 && !c->done) {
        size_t m = hi - x->pos < x->block ? hi - x->pos : x->block;
        for (int k = 1; k < n; k++) {
            if (!peer_read(c, mod(me + k, n), k == 1 ? x->acc : x->tmp, x->pos, m))
                return 1;
            if (k > 1)
                bg_tp_reduce_sum(x->acc, x->tmp, m, c->dt);
        }
        char *dst = c->buf + x->pos * c->esz;
        bg_tp_reduce_sum(dst, x->acc, m, c->dt); /* x[b] + partial: the ring's last hop */
        if (c->op == BG_TP_AVG)
            bg_tp_reduce_div(dst, m, c->dt, n);
        x->pos += m;
        size_t used = m * c->esz * (size_t)(n - 1);
        *budget -= used < *budget ? used : *budget;
        moved = 1;
    }
    if (x->pos == hi && !c->done) {
        x->reduced = 1;
        post_all(c, R_RSDONE, 1, &x->tok, 0, 1);
        moved = 1;
    }
    return moved;
}

/* Copy final shards out of their owners' buffers while budget lasts; R3
 * to all once every shard is in. 1 if anything moved. */
static int gather_some(bg_tp_coll_t *c, size_t *budget)
{
    cma_t *x = c->ext;
    int n = c->g->n, me = c->g->me, moved = 0, all = 1;
    for (int k = 1; k < n && !c->done; k++) {
        int j = mod(me + k, n);
        size_t lo = bg_tp_shard_offset(c->count, n, j);
        size_t left = bg_tp_shard_offset(c->count, n, j + 1) - lo - x->ag_off[j];
        if (!left)
            continue;
        all = 0;
        if (!*budget || (c->kind == COLL_ALLREDUCE && !finished(c, R_RSDONE, j, 0)))
            continue; /* out of budget, or shard j not final yet */
        size_t m = *budget / c->esz ? *budget / c->esz : 1;
        m = left < m ? left : m;
        size_t at = lo + x->ag_off[j];
        if (!peer_read(c, j, c->buf + at * c->esz, at, m))
            return 1;
        x->ag_off[j] += m;
        *budget -= m * c->esz < *budget ? m * c->esz : *budget;
        all &= m == left;
        moved = 1;
    }
    if (all && !c->done) {
        x->gathered = 1;
        post_all(c, R_AGDONE, 1, &x->tok, 0, 1);
        moved = 1;
    }
    return moved;
}

/* 1 when my part is done and every notice posted has come and gone. */
static int all_settled(bg_tp_coll_t *c)
{
    cma_t *x = c->ext;
    int n = c->g->n, all = 1;
    if (c->kind != COLL_ALLGATHER && !x->reduced)
        return 0;
    if (c->kind != COLL_REDUCE_SCATTER && !x->gathered)
        return 0;
    for (int r = 0; r < NROUNDS; r++)
        for (int j = 0; j < n && !c->done; j++)
            for (int send = 0; send < 2; send++)
                if (*qstate(c, r, j, send) == Q_POSTED && !finished(c, r, j, send)) {
                    if (all && !send)
                        c->waiting_on = c->g->ranks[j];
                    all = 0;
                }
    return all && !c->done;
}

static int cma_step(bg_tp_coll_t *c)
{
    cma_t *x = c->ext;
    int moved = 0;
    if (!x->direct) {
        moved = decide(c);
        if (!x->direct || c->done)
            return moved;
    }
    size_t budget = BUDGET;
    if (c->kind != COLL_ALLGATHER && !x->reduced)
        moved |= reduce_some(c, &budget);
    if (c->kind != COLL_REDUCE_SCATTER && !x->gathered && !c->done)
        moved |= gather_some(c, &budget);
    if (!c->done && all_settled(c)) {
        c->done = 1;
        moved = 1;
    }
    return moved;
}

int bg_tp_cma_advance(bg_tp_coll_t *c)
{
    cma_t *x = c->ext;
    int moved = cma_step(c);
    /* The probe failed before the group's choice was made: the collectives
     * started alongside it wait for that choice, so they fail too. */
    if (c->done && c->status != BG_OK && x->probing && c->g->cma == 0)
        c->g->cma = -2;
    /* Every peer of a group that chose the path waits for our R2 / R3. */
    if (c->done && c->status != BG_OK && c->g->cma > 0 && !x->told) {
        x->told = 1;
        tell_failure(c);
    }
    return moved;
}
