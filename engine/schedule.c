/*
 * engine/schedule.c -- the schedule data structure: actions, lists, edges,
 * editing, the transfer-insertion helper and the text printer.
 *
 * Must NOT decide order (generators do, engine/schedule_gen.c), judge
 * validity beyond argument ranges (the checker does), or know about tensors,
 * devices or time.
 */
#include "engine/schedule_impl.h"

#include <stdlib.h>

#include <string.h>

#include "base/grow.h"

/* Actions a schedule may hold (about 0.8 GB of action lists); see docs/engine.md. */
#define BG_SCHED_MAX_ACTIONS (1 << 25)

/* ------------------------------------------------------------------ actions */

bg_action_t bg_action_compute(bg_act_kind_t kind, int mb, int chunk)
{
    bg_action_t a = {kind, mb, chunk, -1, -1, -1};
    if (kind == BG_ACT_ALLREDUCE) a.mb = -1;
    if (kind == BG_ACT_OPTIMIZER) a.mb = a.chunk = -1;
    return a;
}

bg_action_t bg_action_transfer(bg_act_kind_t kind, int mb, int src, int dst, int peer)
{
    bg_action_t a = {kind, mb, bg_act_is_send(kind) ? src : dst, src, dst, peer};
    return a;
}

uint64_t bg_action_tag(const bg_action_t *a)
{
    if (!bg_act_is_send(a->kind) && !bg_act_is_recv(a->kind)) return 0;
    uint64_t grad = a->kind == BG_ACT_SEND_GRAD || a->kind == BG_ACT_RECV_GRAD;
    return grad << 63 | ((uint64_t)a->mb & 0x7fffff) << 40 | ((uint64_t)a->src & 0xfffff) << 20 |
           ((uint64_t)a->dst & 0xfffff);
}

const char *bg_act_kind_name(bg_act_kind_t k)
{
    static const char *names[BG_ACT_COUNT] = {
        "F", "B", "W", "BW", "SEND_ACT", "RECV_ACT", "SEND_GRAD", "RECV_GRAD", "ALLREDUCE",
        "OPTIMIZER"};
    if ((unsigned)k >= BG_ACT_COUNT) return "?";
    return names[k];
}

char *bg_action_str(const bg_action_t *a, char *buf, size_t len)
{
    const char *n = bg_act_kind_name(a->kind);
    if (!len) return buf;
    if (bg_act_is_compute(a->kind))
        snprintf(buf, len, "%s(mb=%d, c=%d)", n, a->mb, a->chunk);
    else if (bg_act_is_send(a->kind) || bg_act_is_recv(a->kind))
        snprintf(buf, len, "%s(mb=%d, %d->%d, peer %d)", n, a->mb, a->src, a->dst, a->peer);
    else if (a->kind == BG_ACT_ALLREDUCE)
        snprintf(buf, len, "%s(c=%d)", n, a->chunk);
    else
        snprintf(buf, len, "%s", n);
    return buf;
}

/* --------------------------------------------------------------- lifecycle */

/* Append edge without checks; the caller validated it. */
static bg_status_t push_edge(bg_sched_t *s, int src, int dst, int grad)
{
    if (bg_grow(&s->edges, &s->cap_edges, (size_t)s->nedges + 1, sizeof(*s->edges)))
        return bg_errorf(BG_ERR_NOMEM, "schedule: out of memory for edges");
    s->edges[s->nedges++] = (bg_sched_edge_t){src, dst, grad};
    return BG_OK;
}

bg_status_t bg_sched_create(int p, int m, int v, const int *chunk_rank, bg_sched_t **out)
{
    if (p < 1 || m < 1 || v < 1)
        return bg_errorf(BG_ERR_INVALID, "schedule: need p, m, v >= 1 (got p=%d m=%d v=%d)", p,
                         m, v);
    if (m >= BG_SCHED_MAX_MB || (long)p * v >= BG_SCHED_MAX_CHUNKS)
        return bg_errorf(BG_ERR_INVALID, "schedule: m=%d or p*v=%ld too large", m, (long)p * v);
    /* Each (micro-batch, chunk) costs at most 8 actions (F, B, W and four
     * transfers, plus a share of the per-chunk ones); refuse before any
     * allocation rather than run the machine out of memory. */
    if ((double)p * v * m * 8 > (double)BG_SCHED_MAX_ACTIONS)
        return bg_errorf(BG_ERR_INVALID,
                         "schedule: %d ranks x %d chunks x %d micro-batches would need about "
                         "%.3g actions, more than the %d a schedule may hold",
                         p, v, m, (double)p * v * m * 8, BG_SCHED_MAX_ACTIONS);
    int n = p * v;
    if (chunk_rank) {
        for (int c = 0; c < n; c++)
            if (chunk_rank[c] < 0 || chunk_rank[c] >= p)
                return bg_errorf(BG_ERR_INVALID, "schedule: chunk %d mapped to rank %d of %d", c,
                                 chunk_rank[c], p);
    }
    bg_status_t st = BG_ERR_NOMEM;
    bg_sched_t *s = calloc(1, sizeof(*s));
    if (!s) goto err_nomem;
    s->p = p, s->m = m, s->v = v, s->nchunks = n;
    snprintf(s->name, sizeof(s->name), "custom");
    s->chunk_rank = malloc((size_t)n * sizeof(int));
    s->lists = calloc((size_t)p, sizeof(*s->lists));
    if (!s->chunk_rank || !s->lists) goto err_free;
    for (int c = 0; c < n; c++) s->chunk_rank[c] = chunk_rank ? chunk_rank[c] : c % p;
    for (int c = 0; c + 1 < n; c++)
        if ((st = push_edge(s, c, c + 1, 1)) != BG_OK) goto err_free;
    *out = s;
    return BG_OK;
err_free:
    bg_sched_free(s);
err_nomem:
    if (st == BG_ERR_NOMEM) bg_errorf(st, "schedule: out of memory");
    return st;
}

void bg_sched_free(bg_sched_t *s)
{
    if (!s) return;
    if (s->lists)
        for (int r = 0; r < s->p; r++) free(s->lists[r].a);
    free(s->lists);
    free(s->chunk_rank);
    free(s->edges);
    free(s);
}

bg_status_t bg_sched_clone(const bg_sched_t *s, bg_sched_t **out)
{
    bg_sched_t *c = NULL;
    bg_status_t st = bg_sched_create(s->p, s->m, s->v, s->chunk_rank, &c);
    if (st) return st;
    memcpy(c->name, s->name, sizeof(c->name));
    c->flush_free = s->flush_free;
    c->nedges = 0;
    for (int i = 0; i < s->nedges; i++)
        if ((st = push_edge(c, s->edges[i].src, s->edges[i].dst, s->edges[i].grad))) goto err;
    for (int r = 0; r < s->p; r++) {
        const bg_sched_list_t *l = &s->lists[r];
        if (!l->len) continue;
        c->lists[r].a = malloc(l->len * sizeof(bg_action_t));
        if (!c->lists[r].a) {
            st = bg_errorf(BG_ERR_NOMEM, "schedule: out of memory");
            goto err;
        }
        memcpy(c->lists[r].a, l->a, l->len * sizeof(bg_action_t));
        c->lists[r].len = c->lists[r].cap = l->len;
    }
    *out = c;
    return BG_OK;
err:
    bg_sched_free(c);
    return st;
}

/* --------------------------------------------------------------- accessors */

int bg_sched_ranks(const bg_sched_t *s) { return s->p; }
int bg_sched_microbatches(const bg_sched_t *s) { return s->m; }
int bg_sched_chunks_per_rank(const bg_sched_t *s) { return s->v; }
int bg_sched_chunks(const bg_sched_t *s) { return s->nchunks; }
const char *bg_sched_name(const bg_sched_t *s) { return s->name; }
int bg_sched_flush_free(const bg_sched_t *s) { return s->flush_free; }

int bg_sched_chunk_rank(const bg_sched_t *s, int chunk)
{
    return chunk < 0 || chunk >= s->nchunks ? -1 : s->chunk_rank[chunk];
}

size_t bg_sched_len(const bg_sched_t *s, int rank)
{
    return rank < 0 || rank >= s->p ? 0 : s->lists[rank].len;
}

const bg_action_t *bg_sched_actions(const bg_sched_t *s, int rank)
{
    return rank < 0 || rank >= s->p ? NULL : s->lists[rank].a;
}

int bg_sched_edges(const bg_sched_t *s) { return s->nedges; }

bg_status_t bg_sched_edge(const bg_sched_t *s, int i, int *src, int *dst, int *with_grad)
{
    if (i < 0 || i >= s->nedges)
        return bg_errorf(BG_ERR_INVALID, "schedule: edge %d of %d", i, s->nedges);
    *src = s->edges[i].src;
    *dst = s->edges[i].dst;
    *with_grad = s->edges[i].grad;
    return BG_OK;
}

int bg_sched_find_edge_(const bg_sched_t *s, int src, int dst)
{
    for (int i = 0; i < s->nedges; i++)
        if (s->edges[i].src == src && s->edges[i].dst == dst) return i;
    return -1;
}

long bg_sched_find_(const bg_sched_t *s, int rank, bg_act_kind_t kind, int mb, int chunk)
{
    const bg_sched_list_t *l = &s->lists[rank];
    for (size_t i = 0; i < l->len; i++)
        if (l->a[i].kind == kind && l->a[i].mb == mb && l->a[i].chunk == chunk) return (long)i;
    return -1;
}

long bg_sched_xfer_index_(const bg_sched_t *s, const bg_action_t *a)
{
    int grad = a->kind == BG_ACT_SEND_GRAD || a->kind == BG_ACT_RECV_GRAD;
    if (!bg_act_is_send(a->kind) && !bg_act_is_recv(a->kind)) return -1;
    if (a->mb < 0 || a->mb >= s->m) return -1;
    int e = grad ? bg_sched_find_edge_(s, a->dst, a->src) : bg_sched_find_edge_(s, a->src, a->dst);
    if (e < 0) return -1;
    return ((long)grad * s->nedges + e) * s->m + a->mb;
}

/* ----------------------------------------------------------------- editing */

bg_status_t bg_sched_insert(bg_sched_t *s, int rank, size_t index, bg_action_t a)
{
    if (rank < 0 || rank >= s->p)
        return bg_errorf(BG_ERR_INVALID, "schedule: rank %d of %d", rank, s->p);
    bg_sched_list_t *l = &s->lists[rank];
    if (index > l->len)
        return bg_errorf(BG_ERR_INVALID, "schedule: rank %d: index %zu past end %zu", rank, index,
                         l->len);
    if (bg_grow(&l->a, &l->cap, l->len + 1, sizeof(*l->a)))
        return bg_errorf(BG_ERR_NOMEM, "schedule: out of memory for rank %d", rank);
    memmove(l->a + index + 1, l->a + index, (l->len - index) * sizeof(*l->a));
    l->a[index] = a;
    l->len++;
    return BG_OK;
}

bg_status_t bg_sched_append(bg_sched_t *s, int rank, bg_action_t a)
{
    return bg_sched_insert(s, rank, bg_sched_len(s, rank), a);
}

bg_status_t bg_sched_remove(bg_sched_t *s, int rank, size_t index)
{
    if (rank < 0 || rank >= s->p || index >= s->lists[rank].len)
        return bg_errorf(BG_ERR_INVALID, "schedule: no action %zu on rank %d", index, rank);
    bg_sched_list_t *l = &s->lists[rank];
    memmove(l->a + index, l->a + index + 1, (l->len - index - 1) * sizeof(*l->a));
    l->len--;
    return BG_OK;
}

bg_status_t bg_sched_set(bg_sched_t *s, int rank, size_t index, bg_action_t a)
{
    if (rank < 0 || rank >= s->p || index >= s->lists[rank].len)
        return bg_errorf(BG_ERR_INVALID, "schedule: no action %zu on rank %d", index, rank);
    s->lists[rank].a[index] = a;
    return BG_OK;
}

/* --------------------------------------------------------------- transfers */

/*
 * Where one edge's transfers go on one rank, found in a single pass: for
 * every micro-batch the index of F(mb, fchunk) and of its backward (B, or
 * BW when there is no B) of bchunk, -1 when absent. The first occurrence
 * wins, as a search from the front would find.
 */
typedef struct {
    long *blk;   /* one block: BW indices [m], then f, then b */
    long *f, *b; /* [m] each */
} anchors_t;

/* Micro-batch numbers an edge's anchors span: a flush-free step also
 * holds carried backwards, written mb + m. */
static int anchor_mbs(const bg_sched_t *s)
{
    return s->flush_free ? 2 * s->m : s->m;
}

static bg_status_t find_anchors(const bg_sched_t *s, int rank, int fchunk, int bchunk,
                                anchors_t *an)
{
    const bg_sched_list_t *l = &s->lists[rank];
    int n = anchor_mbs(s);
    long *bw = malloc(3 * (size_t)n * sizeof(long));
    if (!bw) return bg_errorf(BG_ERR_NOMEM, "schedule: out of memory for rank %d", rank);
    an->blk = bw, an->f = bw + n, an->b = bw + 2 * (size_t)n;
    for (int mb = 0; mb < n; mb++) an->f[mb] = an->b[mb] = bw[mb] = -1;
    for (size_t i = 0; i < l->len; i++) {
        const bg_action_t *a = &l->a[i];
        if (a->mb < 0 || a->mb >= n) continue;
        long *slot = a->kind == BG_ACT_F && a->chunk == fchunk   ? &an->f[a->mb]
                     : a->kind == BG_ACT_B && a->chunk == bchunk  ? &an->b[a->mb]
                     : a->kind == BG_ACT_BW && a->chunk == bchunk ? &bw[a->mb]
                                                                  : NULL;
        if (slot && *slot < 0) *slot = (long)i;
    }
    for (int mb = 0; mb < n; mb++)
        if (an->b[mb] < 0) an->b[mb] = bw[mb];
    return BG_OK;
}

/* One rank's side of an edge: per micro-batch, one action before or after
 * the F anchor and (with gradients) one before or after the B anchor. */
typedef struct {
    int rank;
    anchors_t an;
    int f_after, b_after; /* insert after (1) or before (0) the anchor */
    bg_act_kind_t f_kind, b_kind;
    int peer;
} side_t;

/* Rebuild side->rank's list with the side's transfers in place: O(len + m). */
static bg_status_t splice_side(bg_sched_t *s, const side_t *sd, bg_sched_edge_t e)
{
    bg_sched_list_t *l = &s->lists[sd->rank];
    size_t add = (size_t)s->m * (e.grad ? 2 : 1), n = 0;
    int nmb = anchor_mbs(s);
    /* at[i]: which transfers sit next to action i (bit 0 F-before, 1 F-after,
     * 2 B-before, 3 B-after) and for which micro-batch. */
    unsigned char *at = calloc(l->len + 1, 1);
    int *atmb = calloc(l->len + 1, sizeof(int));
    bg_action_t *out = malloc((l->len + add) * sizeof(*out));
    bg_status_t st = BG_OK;
    if (!at || !atmb || !out) {
        st = bg_errorf(BG_ERR_NOMEM, "schedule: out of memory for rank %d", sd->rank);
        goto err_free;
    }
    for (int mb = 0; mb < nmb; mb++) { /* anchors checked: -1 only for absent carried ones */
        if (sd->an.f[mb] >= 0) at[sd->an.f[mb]] |= sd->f_after ? 2 : 1, atmb[sd->an.f[mb]] = mb;
        if (e.grad && sd->an.b[mb] >= 0)
            at[sd->an.b[mb]] |= sd->b_after ? 8 : 4, atmb[sd->an.b[mb]] = mb;
    }
    for (size_t i = 0; i < l->len; i++) {
        int mb = atmb[i];
        if (at[i] & 1) out[n++] = bg_action_transfer(sd->f_kind, mb, e.src, e.dst, sd->peer);
        if (at[i] & 4) out[n++] = bg_action_transfer(sd->b_kind, mb, e.dst, e.src, sd->peer);
        out[n++] = l->a[i];
        if (at[i] & 2) out[n++] = bg_action_transfer(sd->f_kind, mb, e.src, e.dst, sd->peer);
        if (at[i] & 8) out[n++] = bg_action_transfer(sd->b_kind, mb, e.dst, e.src, sd->peer);
    }
    free(l->a);
    l->a = out, l->len = l->cap = n;
    out = NULL;
err_free:
    free(out);
    free(atmb);
    free(at);
    return st;
}

/* Index of the backward anchor of micro-batch mb on a side: in a flush-free
 * step a micro-batch's backward is either this step's (mb) or carried
 * (mb + m), never both; -1 when neither. */
static long b_anchor(const bg_sched_t *s, const side_t *sd, int mb)
{
    if (!s->flush_free || sd->an.b[mb] >= 0) return sd->an.b[mb];
    return sd->an.b[mb + s->m];
}

/* The first missing anchor in the order a micro-batch-by-micro-batch
 * insertion would meet it, as BG_ERR_INVALID; BG_OK when none is missing. */
static bg_status_t check_anchors(const bg_sched_t *s, const side_t *src, const side_t *dst,
                                 bg_sched_edge_t e)
{
    for (int mb = 0; mb < s->m; mb++) {
        const side_t *miss = src->an.f[mb] < 0                    ? src
                             : dst->an.f[mb] < 0                  ? dst
                             : e.grad && b_anchor(s, dst, mb) < 0 ? dst
                             : e.grad && b_anchor(s, src, mb) < 0 ? src
                                                                  : NULL;
        if (!miss) continue;
        int f_missing = miss->an.f[mb] < 0;
        bg_act_kind_t k = f_missing ? miss->f_kind : miss->b_kind;
        return bg_errorf(BG_ERR_INVALID, "schedule: rank %d has no %s(mb=%d, c=%d) to attach %s",
                         miss->rank, f_missing ? "F" : "B", mb, miss == src ? e.src : e.dst,
                         bg_act_kind_name(k));
    }
    return BG_OK;
}

/*
 * Insert the transfers of edge e for every micro-batch (see
 * bg_sched_add_transfer): SEND_ACT after F on the source rank, RECV_ACT
 * before F on the destination, SEND_GRAD after the destination's backward
 * and RECV_GRAD before the source's. One pass per rank, so a whole
 * schedule's transfers cost O(edges x actions), not a search per insert.
 * Leaves s partly edited on failure: callers work on a clone.
 */
static bg_status_t insert_edge_transfers(bg_sched_t *s, bg_sched_edge_t e)
{
    int rs = s->chunk_rank[e.src], rd = s->chunk_rank[e.dst];
    if (rs == rd) return BG_OK; /* local handoff */
    side_t src = {.rank = rs, .f_after = 1, .b_after = 0, .f_kind = BG_ACT_SEND_ACT,
                  .b_kind = BG_ACT_RECV_GRAD, .peer = rd};
    side_t dst = {.rank = rd, .f_after = 0, .b_after = 1, .f_kind = BG_ACT_RECV_ACT,
                  .b_kind = BG_ACT_SEND_GRAD, .peer = rs};
    bg_status_t st = find_anchors(s, rs, e.src, e.src, &src.an);
    if (st == BG_OK) st = find_anchors(s, rd, e.dst, e.dst, &dst.an);
    if (st == BG_OK) st = check_anchors(s, &src, &dst, e);
    if (st == BG_OK) st = splice_side(s, &src, e);
    if (st == BG_OK) st = splice_side(s, &dst, e);
    free(src.an.blk);
    free(dst.an.blk);
    return st;
}

bg_status_t bg_sched_insert_all_transfers_(bg_sched_t *s)
{
    for (int i = 0; i < s->nedges; i++) {
        bg_status_t st = insert_edge_transfers(s, s->edges[i]);
        if (st) return st;
    }
    return BG_OK;
}

bg_status_t bg_sched_add_transfer(bg_sched_t *s, int src, int dst, int with_grad)
{
    if (src < 0 || dst >= s->nchunks || src >= dst)
        return bg_errorf(BG_ERR_INVALID,
                         "schedule: transfer %d -> %d: need 0 <= src < dst < %d (model order)",
                         src, dst, s->nchunks);
    if (bg_sched_find_edge_(s, src, dst) >= 0)
        return bg_errorf(BG_ERR_INVALID, "schedule: edge %d -> %d already exists", src, dst);
    bg_sched_t *c = NULL;
    bg_status_t st = bg_sched_clone(s, &c);
    if (st) return st;
    bg_sched_edge_t e = {src, dst, with_grad ? 1 : 0};
    if ((st = push_edge(c, src, dst, e.grad)) || (st = insert_edge_transfers(c, e))) goto err;
    /* Swap contents so the caller's handle now holds the edited schedule. */
    bg_sched_t tmp = *s;
    *s = *c;
    *c = tmp;
err:
    bg_sched_free(c);
    return st;
}

/* ----------------------------------------------------------------- printer */

static void token(const bg_sched_t *s, const bg_action_t *a, char *buf, size_t len)
{
    switch (a->kind) {
    case BG_ACT_F:
    case BG_ACT_B:
    case BG_ACT_W:
    case BG_ACT_BW:
        if (s->v == 1)
            snprintf(buf, len, "%s%d", bg_act_kind_name(a->kind), a->mb);
        else
            snprintf(buf, len, "%s%dc%d", bg_act_kind_name(a->kind), a->mb, a->chunk);
        break;
    case BG_ACT_SEND_ACT: snprintf(buf, len, "sa%d>%d:%d", a->src, a->dst, a->mb); break;
    case BG_ACT_RECV_ACT: snprintf(buf, len, "ra%d>%d:%d", a->src, a->dst, a->mb); break;
    case BG_ACT_SEND_GRAD: snprintf(buf, len, "sg%d>%d:%d", a->src, a->dst, a->mb); break;
    case BG_ACT_RECV_GRAD: snprintf(buf, len, "rg%d>%d:%d", a->src, a->dst, a->mb); break;
    case BG_ACT_ALLREDUCE: snprintf(buf, len, "AR%d", a->chunk); break;
    case BG_ACT_OPTIMIZER: snprintf(buf, len, "OPT"); break;
    default: snprintf(buf, len, "?"); break;
    }
}

bg_status_t bg_sched_print(const bg_sched_t *s, FILE *f, unsigned flags)
{
    char tok[64];
    for (int r = 0; r < s->p; r++) {
        fprintf(f, "rank %d:", r);
        const bg_sched_list_t *l = &s->lists[r];
        for (size_t i = 0; i < l->len; i++) {
            if (!(flags & BG_PRINT_COMM) && !bg_act_is_compute(l->a[i].kind)) continue;
            token(s, &l->a[i], tok, sizeof(tok));
            fprintf(f, " %s", tok);
        }
        fputc('\n', f);
    }
    if (ferror(f)) return bg_errorf(BG_ERR_IO, "schedule: writing the printed schedule failed");
    return BG_OK;
}
