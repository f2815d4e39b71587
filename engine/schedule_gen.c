/*
 * engine/schedule_gen.c -- the schedule generators: gpipe, 1f1b, interleaved
 * (Megatron), zb-h1 and zb-v (Qi et al. 2023), dualpipev (DeepSeek's
 * DualPipe in a V).
 *
 * Which generator serves which kind is the table's GENERATOR column
 * (partition/schedules.def); the rules on p, m, v are checked from the same
 * table before a generator runs, and so is the row's placement of chunks on
 * ranks. Each generator decides only the order of compute actions per rank;
 * the shared tail (bg_sched_finish_, also used for schedule files) adds
 * transfers for the adjacent edges, one ALLREDUCE per chunk and the
 * OPTIMIZER step, so every schedule places communication the same way. Must NOT depend on measured
 * costs or on anything outside engine/ but the schedule table: a schedule is
 * a pure function of (kind, p, m, v, flags).
 */
#include "engine/schedule_impl.h"

#include <stdlib.h>
#include <string.h>

/* Backward of (mb, c) on rank r: BW, or B then W when split. */
static bg_status_t emit_backward(bg_sched_t *s, int r, int mb, int c, int split)
{
    if (!split) return bg_sched_append(s, r, bg_action_compute(BG_ACT_BW, mb, c));
    bg_status_t st = bg_sched_append(s, r, bg_action_compute(BG_ACT_B, mb, c));
    return st ? st : bg_sched_append(s, r, bg_action_compute(BG_ACT_W, mb, c));
}

/* Index of the last W or BW of chunk c on rank r, or -1. */
static long last_weight(const bg_sched_t *s, int r, int c)
{
    const bg_sched_list_t *l = &s->lists[r];
    for (long i = (long)l->len - 1; i >= 0; i--)
        if ((l->a[i].kind == BG_ACT_W || l->a[i].kind == BG_ACT_BW) && l->a[i].chunk == c)
            return i;
    return -1;
}

/*
 * Turn compute-only lists into a full schedule: transfers of every edge, then
 * ALLREDUCE(c) after chunk c's last W -- past the gradient sends that follow
 * it, so the critical-path send is issued first -- and OPTIMIZER last.
 */
bg_status_t bg_sched_finish_(bg_sched_t *s)
{
    bg_status_t st = bg_sched_insert_all_transfers_(s);
    for (int c = 0; c < s->nchunks && !st; c++) {
        int r = s->chunk_rank[c];
        long i = last_weight(s, r, c);
        if (i < 0) return bg_errorf(BG_ERR_INTERNAL, "schedule: chunk %d has no W", c);
        size_t at = (size_t)i + 1;
        while (at < s->lists[r].len && bg_act_is_send(s->lists[r].a[at].kind)) at++;
        st = bg_sched_insert(s, r, at, bg_action_compute(BG_ACT_ALLREDUCE, -1, c));
    }
    for (int r = 0; r < s->p && !st; r++)
        st = bg_sched_append(s, r, bg_action_compute(BG_ACT_OPTIMIZER, -1, -1));
    return st;
}

/* GPipe: every F in micro-batch order, then every backward in the same order
 * (micro-batch order keeps gradient accumulation deterministic). */
static bg_status_t gen_gpipe(bg_sched_t *s, int split)
{
    bg_status_t st = BG_OK;
    for (int r = 0; r < s->p; r++) {
        for (int mb = 0; mb < s->m && !st; mb++)
            st = bg_sched_append(s, r, bg_action_compute(BG_ACT_F, mb, r));
        for (int mb = 0; mb < s->m && !st; mb++) st = emit_backward(s, r, mb, r, split);
    }
    return st;
}

/* PipeDream-Flush: rank r runs min(p-r-1, m) warm-up forwards, then alternates
 * one F and one backward, then drains the remaining backwards. */
static bg_status_t gen_1f1b(bg_sched_t *s, int split)
{
    bg_status_t st = BG_OK;
    for (int r = 0; r < s->p && !st; r++) {
        int warm = s->p - r - 1 < s->m ? s->p - r - 1 : s->m;
        int f = 0, b = 0;
        while (f < warm && !st) st = bg_sched_append(s, r, bg_action_compute(BG_ACT_F, f++, r));
        while (f < s->m && !st) {
            st = bg_sched_append(s, r, bg_action_compute(BG_ACT_F, f++, r));
            if (!st) st = emit_backward(s, r, b++, r, split);
        }
        while (b < s->m && !st) st = emit_backward(s, r, b++, r, split);
    }
    return st;
}

/*
 * Interleaved 1F1B (Megatron-LM's forward_backward_pipelining_with_
 * interleaving), for any m as PyTorch allows: micro-batches in rounds of p,
 * the last round shorter. Megatron's order for m rounded up to a multiple of
 * p -- warm-up forwards, then one F and one backward alternately, then
 * cool-down -- with the padding micro-batches' actions left out
 * (partition/schedules.c says why that stays deadlock-free). The order and
 * warm-up live there, so the in-flight closed form and this generator
 * cannot drift apart. Local chunk j of rank r is global chunk j*p + r.
 */
static bg_status_t emit_interleaved(bg_sched_t *s, int r, long k, int backward, int split)
{
    int mb, j;
    bg_sched_interleaved_item_(s->p, s->v, k, backward, &mb, &j);
    if (mb >= s->m) return BG_OK; /* padding */
    if (!backward) return bg_sched_append(s, r, bg_action_compute(BG_ACT_F, mb, j * s->p + r));
    return emit_backward(s, r, mb, j * s->p + r, split);
}

static bg_status_t gen_interleaved(bg_sched_t *s, int split)
{
    long total = (long)bg_sched_interleaved_pad_(s->p, s->m) * s->v;
    bg_status_t st = BG_OK;
    for (int r = 0; r < s->p && !st; r++) {
        long warm = bg_sched_interleaved_warmup_(s->p, s->m, s->v, r);
        for (long k = 0; k < warm && !st; k++) st = emit_interleaved(s, r, k, 0, split);
        for (long k = 0; k < total - warm && !st; k++) {
            st = emit_interleaved(s, r, k + warm, 0, split);
            if (!st) st = emit_interleaved(s, r, k, 1, split);
        }
        for (long k = total - warm; k < total && !st; k++) st = emit_interleaved(s, r, k, 1, split);
    }
    return st;
}

/*
 * Zero Bubble H1. Built by list-scheduling the pipeline in unit time steps
 * (T_F = T_B = T_W, no communication cost), the setting the handcrafted
 * schedule of Qi et al. is drawn for. At each step a rank picks, in priority:
 *   F  if its input has arrived, fewer than p - r micro-batches wait for
 *      their B (1F1B's stash on rank r) and fewer than p wait for their W
 *      (1F1B's peak, reached on rank 0);
 *   B  if its output gradient has arrived;
 *   W  the oldest deferred one (fills what would be bubble);
 *   idle otherwise.
 * F first keeps the downstream ranks fed, as 1F1B's steady state does; B
 * still never waits on a W, which is where the saving comes from. The p cap on
 * pending W is what lets later ranks defer W into the cool-down: the closed
 * form (p-1)(F+B-W) needs the last rank to hold p pending W at its end
 * (docs/schedules.md). Deferred W run in micro-batch order, so gradient
 * accumulation order is kept. Verified against the closed form for
 * p <= 8, m in p..32 in tests/engine/test_sim.c.
 */
static bg_status_t gen_zbh1(bg_sched_t *s, int split)
{
    (void)split; /* B and W are always separate here: W fills the bubble */
    int p = s->p, m = s->m;
    bg_status_t st = BG_OK;
    /* fend/bend: step at which F/B of (rank, mb) ends; `never` until run. */
    const long never = 1L << 40;
    long *fend = malloc((size_t)p * m * sizeof(long));
    long *bend = malloc((size_t)p * m * sizeof(long));
    int *nf = calloc((size_t)p, sizeof(int)), *nb = calloc((size_t)p, sizeof(int));
    int *nw = calloc((size_t)p, sizeof(int));
    if (!fend || !bend || !nf || !nb || !nw) {
        st = bg_errorf(BG_ERR_NOMEM, "zb-h1: out of memory");
        goto out;
    }
    for (long i = 0; i < (long)p * m; i++) fend[i] = bend[i] = never;
    long done = 0, limit_t = 8L * (3L * m + p) + 64;
    for (long t = 0; done < (long)p && !st; t++) {
        if (t > limit_t) {
            st = bg_errorf(BG_ERR_INTERNAL, "zb-h1: generator made no progress (p=%d m=%d)", p, m);
            break;
        }
        done = 0;
        for (int r = 0; r < p && !st; r++) {
            int b = nb[r], f = nf[r];
            int b_ready = b < m && fend[r * m + b] <= t &&
                          (r == p - 1 || bend[(r + 1) * m + b] <= t);
            int f_ready = f < m && (r == 0 || fend[(r - 1) * m + f] <= t) && f - b < p - r &&
                          f - nw[r] < p;
            if (f_ready) {
                fend[r * m + f] = t + 1;
                nf[r]++;
                st = bg_sched_append(s, r, bg_action_compute(BG_ACT_F, f, r));
            } else if (b_ready) {
                bend[r * m + b] = t + 1;
                nb[r]++;
                st = bg_sched_append(s, r, bg_action_compute(BG_ACT_B, b, r));
            } else if (nw[r] < nb[r]) {
                st = bg_sched_append(s, r, bg_action_compute(BG_ACT_W, nw[r]++, r));
            }
            done += nw[r] == m;
        }
    }
out:
    free(fend), free(bend), free(nf), free(nb), free(nw);
    return st;
}

/*
 * A rank of a V-placed schedule: its two chunks (0: r, on the way down; 1:
 * 2p-1-r, on the way back up) and how many F, B, W of each it has emitted.
 * Generators count padding micro-batches (>= m) like real ones and emit only
 * the real ones; see gen_zbv.
 */
typedef struct {
    int r, c[2], f[2], b[2], w[2];
} vrank_t;

static vrank_t vrank(const bg_sched_t *s, int r)
{
    vrank_t q = {r, {r, 2 * s->p - 1 - r}, {0, 0}, {0, 0}, {0, 0}};
    return q;
}

/* The next F, B or W (kind k) of the rank's chunk i; nothing for padding. */
static bg_status_t v_next(bg_sched_t *s, vrank_t *q, bg_act_kind_t k, int i)
{
    int *n = k == BG_ACT_F ? q->f : k == BG_ACT_B ? q->b : q->w;
    int mb = n[i]++;
    if (mb >= s->m) return BG_OK;
    return bg_sched_append(s, q->r, bg_action_compute(k, mb, q->c[i]));
}

/* Run `n` times the sequence of (kind, chunk) pairs in `seq` (len pairs). */
static bg_status_t v_repeat(bg_sched_t *s, vrank_t *q, int n, const int (*seq)[2], int len)
{
    bg_status_t st = BG_OK;
    for (int t = 0; t < n && !st; t++)
        for (int i = 0; i < len && !st; i++) st = v_next(s, q, (bg_act_kind_t)seq[i][0], seq[i][1]);
    return st;
}

#define VF0 {BG_ACT_F, 0}
#define VF1 {BG_ACT_F, 1}
#define VB0 {BG_ACT_B, 0}
#define VB1 {BG_ACT_B, 1}
#define VW0 {BG_ACT_W, 0}
#define VW1 {BG_ACT_W, 1}

/*
 * ZB-V (Qi et al., "Zero Bubble Pipeline Parallelism", section 6): two
 * chunks per rank in a V, B and W split, W filling what would be bubble. The
 * handcrafted order for F = B = W, per rank r with n = max(m, 2p-1)
 * micro-batches (the shortest that fills the V; padding ones are dropped,
 * as for interleaved, which keeps the lists deadlock-free):
 *   warm-up   2(p-r)-1 F of chunk 0; r times (F1, F0); p-r times (F1 B1 W1);
 *   steady    until both chunks' F are done: (F0 if any left) B0 W0 F1 B1 W1;
 *   cool-down r times (B0 B1), p-r times (B0 W0), then the deferred W of
 *             chunk 1, then of chunk 0.
 * Every rank's stash peaks at 2p chunk activations (2p-r-1 of chunk 0, r+1
 * of chunk 1), 1F1B's rank-0 peak on every rank. Each chunk's W run in
 * micro-batch order. p = 1 works too (both chunks on rank 0).
 */
static bg_status_t gen_zbv(bg_sched_t *s, int split)
{
    (void)split; /* always split: W fills the bubble */
    static const int f0[][2] = {VF0}, f1f0[][2] = {VF1, VF0}, fbw1[][2] = {VF1, VB1, VW1};
    static const int steady[][2] = {VB0, VW0, VF1, VB1, VW1}, b0b1[][2] = {VB0, VB1};
    static const int b0w0[][2] = {VB0, VW0}, w0[][2] = {VW0}, w1[][2] = {VW1};
    int p = s->p, n = s->m > 2 * p - 1 ? s->m : 2 * p - 1;
    bg_status_t st = BG_OK;
    for (int r = 0; r < p && !st; r++) {
        vrank_t q = vrank(s, r);
        st = v_repeat(s, &q, 2 * (p - r) - 1, f0, 1);
        if (!st) st = v_repeat(s, &q, r, f1f0, 2);
        if (!st) st = v_repeat(s, &q, p - r, fbw1, 3);
        while (!st && (q.f[1] < q.f[0] || q.f[0] < n)) {
            if (q.f[0] < n) st = v_next(s, &q, BG_ACT_F, 0);
            if (!st) st = v_repeat(s, &q, 1, steady, 5);
        }
        if (!st) st = v_repeat(s, &q, r, b0b1, 2);
        if (!st) st = v_repeat(s, &q, p - r, b0w0, 2);
        if (!st) st = v_repeat(s, &q, q.b[1] - q.w[1], w1, 1);
        if (!st) st = v_repeat(s, &q, q.b[0] - q.w[0], w0, 1);
    }
    return st;
}

/*
 * DualPipeV's rank state: the V rank, W deferred by a B-only backward in a
 * FIFO (chunk index, micro-batch), and whether B and W are split throughout.
 */
typedef struct {
    vrank_t q;
    int (*wq)[2]; /* 2m entries: every backward of the rank at most */
    int wq_head, wq_len, split;
} dpv_t;

/* Full backward of the rank's chunk i: BW (B then W when split). */
static bg_status_t dpv_full(bg_sched_t *s, dpv_t *d, int i)
{
    int mb = d->q.b[i]++;
    d->q.w[i]++;
    return emit_backward(s, d->q.r, mb, d->q.c[i], d->split);
}

/* B only; its W waits in the FIFO. */
static bg_status_t dpv_b(bg_sched_t *s, dpv_t *d, int i)
{
    int mb = d->q.b[i]++;
    d->wq[d->wq_head + d->wq_len][0] = i;
    d->wq[d->wq_head + d->wq_len][1] = mb;
    d->wq_len++;
    return bg_sched_append(s, d->q.r, bg_action_compute(BG_ACT_B, mb, d->q.c[i]));
}

/* The oldest deferred W, if any. */
static bg_status_t dpv_w(bg_sched_t *s, dpv_t *d)
{
    if (!d->wq_len) return BG_OK;
    int i = d->wq[d->wq_head][0], mb = d->wq[d->wq_head][1];
    d->wq_head++, d->wq_len--;
    d->q.w[i]++;
    return bg_sched_append(s, d->q.r, bg_action_compute(BG_ACT_W, mb, d->q.c[i]));
}

/* "Overlapped" F of chunk fi and full backward of chunk bi: adjacent in the
 * list (docs/schedules.md: the overlap is F, its SEND_ACT, then the
 * backward's RECV_GRAD and BW, so the activation leaves during the BW). */
static bg_status_t dpv_fb(bg_sched_t *s, dpv_t *d, int fi, int bi)
{
    bg_status_t st = v_next(s, &d->q, BG_ACT_F, fi);
    return st ? st : dpv_full(s, d, bi);
}

/* Steps 6-8 of gen_dualpipev: backwards of both chunks, switching to B-only
 * (W deferred) half-way, the switch point alternating with the rank's
 * parity; then chunk 0's remaining backwards each after a deferred W; then
 * the W still deferred. */
static bg_status_t dpv_drain(bg_sched_t *s, dpv_t *d)
{
    int p = s->p, r = d->q.r, n6 = r + 1, zb = 0;
    bg_status_t st = BG_OK;
    for (int i = 0; i < n6 && !st; i++) {
        if (i == n6 / 2 && r % 2 == 1) zb = 1;
        st = zb ? dpv_b(s, d, 1) : dpv_full(s, d, 1);
        if (i == n6 / 2 && r % 2 == 0) zb = 1;
        if (!st) st = zb ? dpv_b(s, d, 0) : dpv_full(s, d, 0);
    }
    for (int i = 0; i < p - r - 1 && !st; i++) {
        st = dpv_w(s, d);
        if (!st) st = zb ? dpv_b(s, d, 0) : dpv_full(s, d, 0);
    }
    while (d->wq_len && !st) st = dpv_w(s, d);
    return st;
}

/* One rank of gen_dualpipev. */
static bg_status_t dpv_rank(bg_sched_t *s, dpv_t *d)
{
    int p = s->p, r = d->q.r, m = s->m;
    bg_status_t st = BG_OK;
    for (int i = 0; i < 2 * (p - r - 1) && !st; i++) st = v_next(s, &d->q, BG_ACT_F, 0);
    for (int i = 0; i < r + 1 && !st; i++) {
        st = v_next(s, &d->q, BG_ACT_F, 0);
        if (!st) st = v_next(s, &d->q, BG_ACT_F, 1);
    }
    for (int i = 0; i < p - r - 1 && !st; i++) {
        st = dpv_b(s, d, 1);
        if (!st) st = dpv_w(s, d);
        if (!st) st = v_next(s, &d->q, BG_ACT_F, 1);
    }
    for (int i = 0; i < m - 2 * p + r + 1 && !st; i++) {
        st = dpv_fb(s, d, 0, 1);
        if (!st) st = dpv_fb(s, d, 1, 0);
    }
    for (int i = 0; i < p - r - 1 && !st; i++) {
        st = dpv_full(s, d, 1);
        if (!st) st = dpv_fb(s, d, 1, 0);
    }
    return st ? st : dpv_drain(s, d);
}

/*
 * DualPipeV (DeepSeek's DualPipe folded into a V, as PyTorch's
 * ScheduleDualPipeV): two chunks per rank in a V, m >= 2p. Per rank r, with
 * chunk 0 = r (down the V) and chunk 1 = 2p-1-r (back up):
 *   1. 2(p-r-1) F0;            2. r+1 times (F0, F1);
 *   3. p-r-1 times (B1, a deferred W, F1) -- zero-bubble style;
 *   4. m-2p+r+1 times ((F0 + BW1), (F1 + BW0)) -- the overlapped pairs;
 *   5. p-r-1 times (BW1, (F1 + BW0));
 *   6-8. dpv_drain.
 * "(F + BW)" is DualPipe's overlap of one micro-batch's forward with
 * another's backward on the same rank. A list is sequential, so the pair
 * becomes adjacent actions whose transfers interleave: the F's activations
 * are sent (non-blocking) before the BW's gradient is waited for. Each
 * chunk's backwards are full (BW) up to a switch point and B-only after it,
 * so its W still run in micro-batch order.
 */
static bg_status_t gen_dualpipev(bg_sched_t *s, int split)
{
    dpv_t d = {.split = split};
    d.wq = malloc((size_t)2 * s->m * sizeof(*d.wq));
    if (!d.wq) return bg_errorf(BG_ERR_NOMEM, "dualpipev: out of memory");
    bg_status_t st = BG_OK;
    for (int r = 0; r < s->p && !st; r++) {
        d.q = vrank(s, r);
        d.wq_head = d.wq_len = 0;
        st = dpv_rank(s, &d);
    }
    free(d.wq);
    return st;
}

/* Order functions by kind, from the schedule table: a row whose generator
 * is missing or misnamed does not compile. */
typedef bg_status_t (*gen_fn)(bg_sched_t *s, int split);
static const gen_fn generators[] = {
#define BG_SCHED_ROW(id, name, al, place, vd, vmin, vmax, m_ok, m_rule, infl, fill, exact, vers,   \
                     gen)                                                                          \
    [BG_SCHED_##id] = gen,
#include "partition/schedules.def"
};
_Static_assert(sizeof(generators) / sizeof(generators[0]) == BG_SCHED_KIND_COUNT,
               "every schedule kind needs a generator");

bg_status_t bg_sched_generate(bg_sched_kind_t kind, int p, int m, int v, unsigned flags,
                              bg_sched_t **out)
{
    const bg_sched_desc_t *d = bg_sched_desc(kind);
    if (!d) return bg_errorf(BG_ERR_INVALID, "schedule: unknown kind %d", (int)kind);
    bg_status_t st = bg_sched_check_shape(d, p, m, v);
    if (st) return st;
    if (flags & ~(unsigned)BG_SCHED_SPLIT_BW)
        return bg_errorf(BG_ERR_INVALID, "%s: unknown flags 0x%x", d->name, flags);
    bg_sched_t *s = NULL;
    if ((st = bg_sched_create(p, m, v, NULL, &s))) return st;
    /* The row's placement (bg_sched_create checked p * v); the generators
     * and bg_sched_finish_ read chunk_rank, never c % p. */
    for (int c = 0; c < s->nchunks; c++) s->chunk_rank[c] = bg_sched_chunk_rank_of(d, p, c);
    snprintf(s->name, sizeof(s->name), "%s", d->name);
    st = generators[kind](s, (flags & BG_SCHED_SPLIT_BW) != 0);
    if (!st && !s->flush_free) st = bg_sched_finish_(s); /* 2bw places its own */
    if (st) goto err;
    *out = s;
    return BG_OK;
err:
    bg_sched_free(s);
    return st;
}
