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

#include "base/grow.h"
#include <string.h>

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

/* Index of B or BW of (mb, chunk) on rank, or -1. */
static long find_backward(const bg_sched_t *s, int rank, int mb, int chunk)
{
    long i = bg_sched_find_(s, rank, BG_ACT_B, mb, chunk);
    return i >= 0 ? i : bg_sched_find_(s, rank, BG_ACT_BW, mb, chunk);
}

/* Insert `a` next to the action (kind/mb/chunk) on rank: after it when
 * `after`, else before it. Fails if that action is absent. */
static bg_status_t insert_next_to(bg_sched_t *s, int rank, long at, int after, bg_action_t a,
                                  const char *what, int mb, int chunk)
{
    if (at < 0)
        return bg_errorf(BG_ERR_INVALID, "schedule: rank %d has no %s(mb=%d, c=%d) to attach %s",
                         rank, what, mb, chunk, bg_act_kind_name(a.kind));
    return bg_sched_insert(s, rank, (size_t)at + (after ? 1 : 0), a);
}

/*
 * Insert the transfers of edge e for every micro-batch (see
 * bg_sched_add_transfer). Leaves s partly edited on failure: callers work on
 * a clone.
 */
static bg_status_t insert_edge_transfers(bg_sched_t *s, bg_sched_edge_t e)
{
    int rs = s->chunk_rank[e.src], rd = s->chunk_rank[e.dst];
    bg_status_t st = BG_OK;
    if (rs == rd) return BG_OK; /* local handoff */
    for (int mb = 0; mb < s->m && !st; mb++) {
        st = insert_next_to(s, rs, bg_sched_find_(s, rs, BG_ACT_F, mb, e.src), 1,
                            bg_action_transfer(BG_ACT_SEND_ACT, mb, e.src, e.dst, rd), "F", mb,
                            e.src);
        if (!st)
            st = insert_next_to(s, rd, bg_sched_find_(s, rd, BG_ACT_F, mb, e.dst), 0,
                                bg_action_transfer(BG_ACT_RECV_ACT, mb, e.src, e.dst, rs), "F",
                                mb, e.dst);
        if (!e.grad) continue;
        if (!st)
            st = insert_next_to(s, rd, find_backward(s, rd, mb, e.dst), 1,
                                bg_action_transfer(BG_ACT_SEND_GRAD, mb, e.dst, e.src, rs), "B",
                                mb, e.dst);
        if (!st)
            st = insert_next_to(s, rs, find_backward(s, rs, mb, e.src), 0,
                                bg_action_transfer(BG_ACT_RECV_GRAD, mb, e.dst, e.src, rd), "B",
                                mb, e.src);
    }
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
