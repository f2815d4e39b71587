/*
 * layers/attention.cu -- CUDA half of the attention kind: grouped-query,
 * rotary positions, memory-efficient (flash-style) attention.
 * Same math, saved/workspace layout (layers/attention_impl.h) and F/B/W
 * split as layers/attention.c. Projections go through bg_gemm (cuBLAS);
 * this file adds rope, the fused tiled attention forward and its backward.
 *
 * Kernel design (why this way):
 *  - One block per (sequence, head, tile of R query rows) in F; R = 16 per
 *    warp. Score tiles S = q k^T live in shared memory only; an online
 *    softmax (running max m, sum l per row) rescales the output tile, so
 *    F keeps y and the per-row lse = m + log l, nothing of size T^2.
 *    Tiles entirely above the causal diagonal are never visited.
 *  - Tile products use tensor cores through wmma (bf16 or fp16 16x16x16,
 *    f32 accumulate) when the compute dtype is bf16 or fp16. wmma rather
 *    than cuBLAS batched GEMMs on tiles: those would put every score tile
 *    through global memory and need a launch per tile row; rather than raw
 *    mma.sync PTX: wmma's fragment layouts are opaque, which costs a trip
 *    of each score tile through shared memory for the per-row softmax, but
 *    keeps the kernel short, portable across sm_80+ and reviewable. The
 *    register-resident PTX version is the next step if attention shows up
 *    in profiles.
 *  - f32 runs compute tile products with plain f32 FMAs (no TF32): f32 is
 *    the agreement mode with the CPU (1e-4), and TF32 would break it.
 *  - B recomputes score tiles from q, k and lse in two kernels, one owning
 *    key tiles (dK, dV, summing the G query heads of a kv head in order)
 *    and one owning query tiles (dQ). No atomics anywhere: every output
 *    element has one writer and a fixed summation order, so results are
 *    bit-repeatable run to run.
 *  - Head sizes are padded to a multiple of 16 with zeros in shared memory;
 *    up to 128 is supported (the shared-memory budget of the backward).
 * Must not synchronise with the host or keep state between calls.
 */
#include "layers/cuda_common.cuh" /* first: it includes the C headers with C linkage */
#include "layers/attention_impl.h"

#include <math.h>
#include <mma.h>
#include <type_traits>

#define ATT_MAX_HS 128 /* padded head size the shared-memory plan fits */

/* Warps per block (16 tile rows each) per compute dtype: bf16 and fp16
 * tiles are half the bytes, so they can be twice as tall. */
template <typename T> struct att_tile {
    static const int NW = 2;
};
template <> struct att_tile<__nv_bfloat16> {
    static const int NW = 4;
};
template <> struct att_tile<__half> {
    static const int NW = 4;
};

/* Sizes a kernel needs (plain values: passed by value to the device). */
typedef struct att_kdims {
    int64_t T, Wq, C;
    int H, G, hs, hsp, ntiles; /* hsp: hs rounded up to 16; ntiles: ceil(T / R) */
    int64_t ko, vo;
    bool causal;
    float scale;
} att_kdims_t;

/* ---- shared-memory plans: one function per kernel, used by the host for
 * the size and by the kernel for the pointers (base NULL: size only) ---- */

static __host__ __device__ size_t att_take(size_t *off, size_t bytes)
{
    size_t at = *off;
    *off += (bytes + 127) / 128 * 128;
    return at;
}

template <typename T> struct att_smem {
    T *q, *k, *v, *dy, *p, *ds; /* operand tiles (R x hsp; p, ds R x R) */
    float *s, *dp, *acc, *acc2; /* scores, their gradient (R x R); accumulators (R x hsp) */
    float *m, *l;               /* per row: running max / sum, or lse / dsum */
};

/* which: 0 forward, 1 backward over key tiles, 2 backward over query tiles. */
template <typename T>
static __host__ __device__ size_t att_carve(unsigned char *base, int which, int hsp,
                                            att_smem<T> *sm)
{
    const size_t R = 16 * att_tile<T>::NW, op = R * hsp * sizeof(T), sq = R * R;
    size_t off = 0, o[12];
    o[0] = att_take(&off, op);                                      /* q */
    o[1] = att_take(&off, op);                                      /* k */
    o[2] = att_take(&off, op);                                      /* v */
    o[3] = att_take(&off, which ? op : 0);                          /* dy */
    o[4] = att_take(&off, sq * sizeof(T));                          /* p */
    o[5] = att_take(&off, which ? sq * sizeof(T) : 0);              /* ds */
    o[6] = att_take(&off, sq * sizeof(float));                      /* s */
    o[7] = att_take(&off, which ? sq * sizeof(float) : 0);          /* dp */
    o[8] = att_take(&off, R * hsp * sizeof(float));                 /* acc */
    o[9] = att_take(&off, which == 1 ? R * hsp * sizeof(float) : 0); /* acc2 */
    o[10] = att_take(&off, R * sizeof(float));                      /* m */
    o[11] = att_take(&off, R * sizeof(float));                      /* l */
    if (base) {
        sm->q = (T *)(base + o[0]), sm->k = (T *)(base + o[1]), sm->v = (T *)(base + o[2]);
        sm->dy = (T *)(base + o[3]), sm->p = (T *)(base + o[4]), sm->ds = (T *)(base + o[5]);
        sm->s = (float *)(base + o[6]), sm->dp = (float *)(base + o[7]);
        sm->acc = (float *)(base + o[8]), sm->acc2 = (float *)(base + o[9]);
        sm->m = (float *)(base + o[10]), sm->l = (float *)(base + o[11]);
    }
    return off;
}

/* ---- warp tile products over shared memory ---- */

/*
 * One warp: C (16 x n, f32, ldc) = (acc ? C : 0) + A (16 x k, lda) op(B),
 * op(B) = B^T for B (n x k, ldb) when BT, else B (k x n, ldb); n, k
 * multiples of 16. Fixed summation order (k ascending).
 */
template <typename T, bool BT> struct att_mm {
    static __device__ void run(float *C, int ldc, const T *A, int lda, const T *B, int ldb, int n,
                               int k, bool acc)
    {
        int lane = threadIdx.x & 31;
        for (int e = lane; e < 16 * n; e += 32) {
            int r = e / n, j = e % n;
            float s = acc ? C[r * ldc + j] : 0.0f;
            for (int kk = 0; kk < k; kk++)
                s += bg_ld(&A[r * lda + kk]) * bg_ld(BT ? &B[j * ldb + kk] : &B[kk * ldb + j]);
            C[r * ldc + j] = s;
        }
        __syncwarp();
    }
};

#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
/* 16-bit T (bf16, fp16) on tensor cores (sm_80+ for both: one guard, one
 * code path). Pointers are 32-byte aligned and leading dimensions
 * multiples of 16 by the shared-memory plan. */
template <typename T, bool BT> struct att_mm_wmma {
    static __device__ void run(float *C, int ldc, const T *A, int lda, const T *B, int ldb, int n,
                               int k, bool acc)
    {
        using namespace nvcuda;
        typedef typename std::conditional<BT, wmma::col_major, wmma::row_major>::type blay;
        for (int n0 = 0; n0 < n; n0 += 16) {
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> c;
            if (acc)
                wmma::load_matrix_sync(c, C + n0, ldc, wmma::mem_row_major);
            else
                wmma::fill_fragment(c, 0.0f);
            for (int k0 = 0; k0 < k; k0 += 16) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
                wmma::fragment<wmma::matrix_b, 16, 16, 16, T, blay> b;
                wmma::load_matrix_sync(a, A + k0, lda);
                wmma::load_matrix_sync(b, BT ? B + (size_t)n0 * ldb + k0 : B + (size_t)k0 * ldb + n0,
                                       ldb);
                wmma::mma_sync(c, a, b, c);
            }
            wmma::store_matrix_sync(C + n0, c, ldc, wmma::mem_row_major);
        }
        __syncwarp();
    }
};
template <bool BT> struct att_mm<__nv_bfloat16, BT> : att_mm_wmma<__nv_bfloat16, BT> {
};
template <bool BT> struct att_mm<__half, BT> : att_mm_wmma<__half, BT> {
};
#endif

/* ---- tile loads and stores ---- */

/*
 * dst (R x hsp) = rows r0.. of a head's columns of src (row stride ld,
 * first column col); rows >= T and columns >= hs become 0. Whole block.
 */
template <typename T>
static __device__ void att_load(T *dst, const T *src, int64_t ld, int64_t col, int64_t r0,
                                const att_kdims_t &d, int R)
{
    for (int e = threadIdx.x; e < R * d.hsp; e += blockDim.x) {
        int r = e / d.hsp, c = e % d.hsp;
        bool in = r0 + r < d.T && c < d.hs;
        bg_st(&dst[e], in ? bg_ld(&src[(r0 + r) * ld + col + c]) : 0.0f);
    }
}

/* Whether query i may see key j (both inside the sequence). */
static __device__ __forceinline__ bool att_sees(const att_kdims_t &d, int64_t i, int64_t j)
{
    return i < d.T && j < d.T && (!d.causal || j <= i);
}

/* blockIdx.x -> (tile, head, sequence): one flat grid dimension (2^31 - 1). */
static __device__ __forceinline__ void att_block(const att_kdims_t &d, int heads, int64_t *tile,
                                                 int64_t *h, int64_t *b)
{
    int64_t x = blockIdx.x;
    *tile = x % d.ntiles;
    *h = (x / d.ntiles) % heads;
    *b = x / d.ntiles / heads;
}

/* A block that owns a tile of query rows (F and B's dq kernel). */
template <typename T> struct att_qblock {
    att_smem<T> sm;
    int64_t i0, h, b, kh; /* first query row, head, sequence, its kv head */
    int64_t jend;         /* keys the tile's rows may see end here (causal: the diagonal) */
    const T *base;        /* the sequence's qkv rows */
};

/* Carve plan `which`, decode the block, load its q tile, zero the
 * accumulator (visible to all after the caller's next __syncthreads). */
template <typename T>
static __device__ att_qblock<T> att_qblock_start(unsigned char *sh, int which, const T *qkv,
                                                 const att_kdims_t &d)
{
    const int R = 16 * att_tile<T>::NW;
    att_qblock<T> q;
    int64_t tile;
    att_carve<T>(sh, which, d.hsp, &q.sm);
    att_block(d, d.H, &tile, &q.h, &q.b);
    q.i0 = tile * R, q.kh = q.h / d.G;
    q.jend = d.causal ? (q.i0 + R < d.T ? q.i0 + R : d.T) : d.T;
    q.base = qkv + q.b * d.T * d.Wq;
    att_load(q.sm.q, q.base, d.Wq, q.h * d.hs, q.i0, d, R);
    for (int e = threadIdx.x; e < R * d.hsp; e += blockDim.x)
        q.sm.acc[e] = 0.0f;
    return q;
}

/* The key/value tile at rows j0.. of kv head kh, once every warp is done
 * with the previous one; visible to all on return. */
template <typename T>
static __device__ void att_next_kv(const att_qblock<T> &q, int64_t j0, const att_kdims_t &d)
{
    const int R = 16 * att_tile<T>::NW;
    __syncthreads();
    att_load(q.sm.k, q.base, d.Wq, d.ko + q.kh * d.hs, j0, d, R);
    att_load(q.sm.v, q.base, d.Wq, d.vo + q.kh * d.hs, j0, d, R);
    __syncthreads();
}

/* ---- kernels ---- */

/* In place over (N, Wq): rotate q heads and k heads (rotate_half pairs);
 * inverse = the transpose. One thread per (row, head, pair). */
template <typename T>
__global__ void att_rope_kernel(T *qkv, int64_t N, att_kdims_t d, int nh, double theta,
                                bool inverse)
{
    int64_t half = d.hs / 2, total = N * nh * half;
    for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < total;
         e += (int64_t)gridDim.x * blockDim.x) {
        int64_t i = e % half, h = e / half % nh, n = e / half / nh;
        double a = (double)(n % d.T) * pow(theta, -2.0 * (double)i / (double)d.hs), sn, cs;
        sincos(a, &sn, &cs);
        float co = (float)cs, si = inverse ? -(float)sn : (float)sn;
        T *x = qkv + n * d.Wq + h * d.hs;
        float x0 = bg_ld(&x[i]), x1 = bg_ld(&x[i + half]);
        bg_st(&x[i], x0 * co - x1 * si);
        bg_st(&x[i + half], x1 * co + x0 * si);
    }
}

/*
 * Online softmax of one warp's 16 score rows (s, ld R) against keys j0..:
 * p (ld R) = exp(s * scale - m_new) on visible keys, 0 elsewhere; the
 * running m, l and the warp's rows of acc (ld hsp) are rescaled.
 */
template <typename T>
static __device__ void att_online(const att_kdims_t &d, const att_smem<T> &sm, int w, int64_t i0,
                                  int64_t j0, int R)
{
    int lane = threadIdx.x & 31;
    for (int r = w * 16; r < w * 16 + 16; r++) {
        int64_t i = i0 + r;
        float mo = sm.m[r], lo = sm.l[r], mx = -INFINITY;
        for (int c = lane; c < R; c += 32)
            if (att_sees(d, i, j0 + c))
                mx = fmaxf(mx, sm.s[r * R + c] * d.scale);
        float mn = fmaxf(mo, bg_warp_max(mx)), sum = 0.0f;
        for (int c = lane; c < R; c += 32) {
            float p = att_sees(d, i, j0 + c) ? expf(sm.s[r * R + c] * d.scale - mn) : 0.0f;
            bg_st(&sm.p[r * R + c], p);
            sum += p;
        }
        sum = bg_warp_sum(sum);
        float alpha = mn == -INFINITY ? 1.0f : expf(mo - mn); /* exp(-inf) = 0 on the first tile */
        for (int e = lane; e < d.hsp; e += 32)
            sm.acc[r * d.hsp + e] *= alpha;
        __syncwarp();
        if (lane == 0)
            sm.m[r] = mn, sm.l[r] = lo * alpha + sum;
    }
    __syncwarp();
}

/* F: y (head columns) and lse of one (sequence, head, query tile). */
template <typename T> __global__ void att_fwd_kernel(const T *qkv, T *y, float *lse, att_kdims_t d)
{
    extern __shared__ __align__(128) unsigned char att_sh[];
    const int R = 16 * att_tile<T>::NW, w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const att_qblock<T> qb = att_qblock_start<T>(att_sh, 0, qkv, d);
    const att_smem<T> &sm = qb.sm;
    const int64_t i0 = qb.i0, h = qb.h, b = qb.b;
    for (int r = threadIdx.x; r < R; r += blockDim.x)
        sm.m[r] = -INFINITY, sm.l[r] = 0.0f;
    for (int64_t j0 = 0; j0 < qb.jend; j0 += R) {
        att_next_kv(qb, j0, d);
        float *s = sm.s + w * 16 * R;
        att_mm<T, true>::run(s, R, sm.q + w * 16 * d.hsp, d.hsp, sm.k, d.hsp, R, d.hsp, false);
        att_online(d, sm, w, i0, j0, R);
        att_mm<T, false>::run(sm.acc + w * 16 * d.hsp, d.hsp, sm.p + w * 16 * R, R, sm.v, d.hsp,
                              d.hsp, R, true);
    }
    __syncwarp();
    for (int r = w * 16; r < w * 16 + 16; r++) {
        int64_t i = i0 + r;
        if (i >= d.T)
            break;
        float l = sm.l[r], inv = 1.0f / l;
        for (int e = lane; e < d.hs; e += 32)
            bg_st(&y[(b * d.T + i) * d.C + h * d.hs + e], sm.acc[r * d.hsp + e] * inv);
        if (lane == 0)
            lse[(b * d.H + h) * d.T + i] = sm.m[r] + logf(l);
    }
}

/* dsum (B, H, T) = per head rowsum(dy * y); warp per (row, head), grid-stride. */
template <typename T>
__global__ void att_dsum_kernel(const T *dy, const T *y, float *dsum, int64_t N, att_kdims_t d)
{
    int lane = threadIdx.x & 31;
    int64_t warps = ((int64_t)gridDim.x * blockDim.x) >> 5;
    for (int64_t r = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5; r < N * d.H;
         r += warps) {
        int64_t n = r / d.H, h = r % d.H;
        float s = 0.0f;
        for (int e = lane; e < d.hs; e += 32)
            s += bg_ld(&dy[n * d.C + h * d.hs + e]) * bg_ld(&y[n * d.C + h * d.hs + e]);
        s = bg_warp_sum(s);
        if (lane == 0)
            dsum[((n / d.T) * d.H + h) * d.T + n % d.T] = s;
    }
}

/* lse and dsum of query rows i0.. of head h into m, l (0 past T). */
template <typename T>
static __device__ void att_load_rows(const att_smem<T> &sm, const float *lse, const float *dsum,
                                     int64_t bh, int64_t i0, const att_kdims_t &d, int R)
{
    for (int r = threadIdx.x; r < R; r += blockDim.x) {
        bool in = i0 + r < d.T;
        sm.m[r] = in ? lse[bh * d.T + i0 + r] : 0.0f;
        sm.l[r] = in ? dsum[bh * d.T + i0 + r] : 0.0f;
    }
}

/*
 * B over key tiles: one block per (sequence, kv head, key tile) sums, over
 * the G query heads of the kv head and the query tiles that see the keys,
 *   dv += p^T dy,  dk += dS^T q * scale,  p = exp(s - lse), dS = p (dp - dsum)
 * with s^T = k q^T scale and dp^T = v dy^T computed transposed (keys as rows).
 */
template <typename T>
__global__ void att_bwd_kv_kernel(const T *qkv, const T *dy, const float *lse, const float *dsum,
                                  T *dqkv, att_kdims_t d)
{
    extern __shared__ __align__(128) unsigned char att_sh[];
    const int R = 16 * att_tile<T>::NW, w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    att_smem<T> sm;
    att_carve<T>(att_sh, 1, d.hsp, &sm);
    int64_t tile, g, b;
    att_block(d, d.H / d.G, &tile, &g, &b);
    int64_t j0 = tile * R;
    const T *base = qkv + b * d.T * d.Wq;
    att_load(sm.k, base, d.Wq, d.ko + g * d.hs, j0, d, R);
    att_load(sm.v, base, d.Wq, d.vo + g * d.hs, j0, d, R);
    for (int e = threadIdx.x; e < R * d.hsp; e += blockDim.x)
        sm.acc[e] = sm.acc2[e] = 0.0f;
    for (int64_t h = g * d.G; h < (g + 1) * d.G; h++)
        for (int64_t i0 = d.causal ? j0 : 0; i0 < d.T; i0 += R) {
            __syncthreads();
            att_load(sm.q, base, d.Wq, h * d.hs, i0, d, R);
            att_load(sm.dy, dy + b * d.T * d.C, d.C, h * d.hs, i0, d, R);
            att_load_rows(sm, lse, dsum, b * d.H + h, i0, d, R);
            __syncthreads();
            float *st = sm.s + w * 16 * R, *dpt = sm.dp + w * 16 * R;
            att_mm<T, true>::run(st, R, sm.k + w * 16 * d.hsp, d.hsp, sm.q, d.hsp, R, d.hsp, false);
            att_mm<T, true>::run(dpt, R, sm.v + w * 16 * d.hsp, d.hsp, sm.dy, d.hsp, R, d.hsp,
                                 false);
            for (int e = lane; e < 16 * R; e += 32) {
                int r = e / R, c = e % R; /* key row r of this warp, query column c */
                bool vis = att_sees(d, i0 + c, j0 + w * 16 + r);
                float p = vis ? expf(st[e] * d.scale - sm.m[c]) : 0.0f;
                bg_st(&sm.p[w * 16 * R + e], p);
                bg_st(&sm.ds[w * 16 * R + e], p * (dpt[e] - sm.l[c]));
            }
            __syncwarp();
            att_mm<T, false>::run(sm.acc2 + w * 16 * d.hsp, d.hsp, sm.p + w * 16 * R, R, sm.dy,
                                  d.hsp, d.hsp, R, true);
            att_mm<T, false>::run(sm.acc + w * 16 * d.hsp, d.hsp, sm.ds + w * 16 * R, R, sm.q,
                                  d.hsp, d.hsp, R, true);
        }
    __syncwarp();
    for (int e = lane; e < 16 * d.hsp; e += 32) {
        int r = w * 16 + e / d.hsp, c = e % d.hsp;
        if (j0 + r >= d.T || c >= d.hs)
            continue;
        T *row = dqkv + (b * d.T + j0 + r) * d.Wq;
        bg_st(&row[d.ko + g * d.hs + c], sm.acc[r * d.hsp + c] * d.scale);
        bg_st(&row[d.vo + g * d.hs + c], sm.acc2[r * d.hsp + c]);
    }
}

/* B over query tiles: one block per (sequence, head, query tile),
 * dq = sum over visible key tiles of dS k * scale. */
template <typename T>
__global__ void att_bwd_q_kernel(const T *qkv, const T *dy, const float *lse, const float *dsum,
                                 T *dqkv, att_kdims_t d)
{
    extern __shared__ __align__(128) unsigned char att_sh[];
    const int R = 16 * att_tile<T>::NW, w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const att_qblock<T> qb = att_qblock_start<T>(att_sh, 2, qkv, d);
    const att_smem<T> &sm = qb.sm;
    const int64_t i0 = qb.i0, h = qb.h, b = qb.b;
    att_load(sm.dy, dy + b * d.T * d.C, d.C, h * d.hs, i0, d, R);
    att_load_rows(sm, lse, dsum, b * d.H + h, i0, d, R);
    for (int64_t j0 = 0; j0 < qb.jend; j0 += R) {
        att_next_kv(qb, j0, d);
        float *s = sm.s + w * 16 * R, *dp = sm.dp + w * 16 * R;
        att_mm<T, true>::run(s, R, sm.q + w * 16 * d.hsp, d.hsp, sm.k, d.hsp, R, d.hsp, false);
        att_mm<T, true>::run(dp, R, sm.dy + w * 16 * d.hsp, d.hsp, sm.v, d.hsp, R, d.hsp, false);
        for (int e = lane; e < 16 * R; e += 32) {
            int r = w * 16 + e / R, c = e % R;
            float p = att_sees(d, i0 + r, j0 + c) ? expf(s[e] * d.scale - sm.m[r]) : 0.0f;
            bg_st(&sm.ds[w * 16 * R + e], p * (dp[e] - sm.l[r]));
        }
        __syncwarp();
        att_mm<T, false>::run(sm.acc + w * 16 * d.hsp, d.hsp, sm.ds + w * 16 * R, R, sm.k, d.hsp,
                              d.hsp, R, true);
    }
    __syncwarp();
    for (int e = lane; e < 16 * d.hsp; e += 32) {
        int r = w * 16 + e / d.hsp, c = e % d.hsp;
        if (i0 + r < d.T && c < d.hs)
            bg_st(&dqkv[(b * d.T + i0 + r) * d.Wq + h * d.hs + c], sm.acc[r * d.hsp + c] * d.scale);
    }
}

/* ---- launchers ---- */

/* Everything one call needs: dims, byte pointers into saved/workspace. */
typedef struct att_run {
    bg_att_dims_t d;
    bg_att_layout_t l;
    bg_dtype_t dt;
    char *qkv, *y, *dqkv, *dy;
    float *lse, *dsum;
    cudaStream_t st;
} att_run_t;

static bg_status_t att_run_of(const bg_layer_call_t *c, att_run_t *r)
{
    BG_TRY_STATUS(bg_cuda_stream_of(c->be, c->stream, &r->st));
    r->d = bg_att_dims_of(c->spec);
    r->dt = c->dtype;
    r->l = bg_att_layout_of(&r->d, (int64_t)bg_dtype_size(c->dtype));
    if (r->d.N == 0)
        return BG_OK;
    if (r->d.hs > ATT_MAX_HS)
        return bg_errorf(BG_ERR_UNSUPPORTED,
                         "layer %s: attention on CUDA supports head sizes up to %d, got %lld",
                         c->spec->name, ATT_MAX_HS, (long long)r->d.hs);
    char *s = (char *)c->saved->data;
    r->qkv = s + r->l.qkv, r->y = s + r->l.y, r->dqkv = s + r->l.dqkv;
    r->lse = (float *)(s + r->l.lse);
    if (c->workspace) {
        char *w = (char *)c->workspace->data;
        r->dy = w + r->l.dy;
        r->dsum = (float *)(w + r->l.dsum);
    }
    return BG_OK;
}

/* Kernel dims for tiles of R rows; heads = the grid's head count. */
static att_kdims_t att_kdims(const bg_att_dims_t *d, int R)
{
    att_kdims_t k;
    k.T = d->T, k.Wq = d->Wq, k.C = d->C;
    k.H = (int)d->H, k.G = (int)d->G, k.hs = (int)d->hs, k.hsp = (int)((d->hs + 15) / 16 * 16);
    k.ntiles = (int)((d->T + R - 1) / R);
    k.ko = d->ko, k.vo = d->vo;
    k.causal = d->causal;
    k.scale = d->scale;
    return k;
}

/* A GEMM in the call's dtype (C in dtype too unless f32_c). */
static bg_gemm_args_t att_gemm_args(bg_dtype_t dt, bool ta, bool tb, int64_t m, int64_t n,
                                    int64_t k, const void *a, int64_t lda, const void *b,
                                    int64_t ldb, void *out, int64_t ldc, bool f32_acc)
{
    bg_gemm_args_t g = {};
    g.trans_a = ta, g.trans_b = tb;
    g.m = m, g.n = n, g.k = k;
    g.alpha = 1.0f, g.beta = f32_acc ? 1.0f : 0.0f;
    g.a = a, g.lda = lda, g.b = b, g.ldb = ldb, g.c = out, g.ldc = ldc;
    g.ab = dt, g.c_dtype = f32_acc ? BG_F32 : dt;
    return g;
}

static bg_status_t att_gemm(const bg_layer_call_t *c, bg_dtype_t dt, bool ta, bool tb, int64_t m,
                            int64_t n, int64_t k, const void *a, int64_t lda, const void *b,
                            int64_t ldb, void *out, int64_t ldc, bool f32_acc)
{
    bg_gemm_args_t g = att_gemm_args(dt, ta, tb, m, n, k, a, lda, b, ldb, out, ldc, f32_acc);
    return bg_gemm(c->be, c->stream, &g);
}

/* out (m, n) = a (m, k) @ w^T + bias (NULL: none), rounded once
 * (bg_cuda_gemm_bias: the CPU reference rounds once too). */
static bg_status_t att_linear(const bg_layer_call_t *c, const att_run_t &r, int64_t m, int64_t n,
                              int64_t k, const void *a, const void *w, const void *bias, void *out)
{
    bg_gemm_args_t g = att_gemm_args(r.dt, false, true, m, n, k, a, k, w, k, out, n, false);
    return bg_cuda_gemm_bias(c->be, c->stream, &g, bias, r.dt, r.st);
}

template <typename T> static bg_status_t att_rope(const att_run_t *r, void *x, bool inverse)
{
    att_kdims_t k = att_kdims(&r->d, 16);
    int64_t total = r->d.N * (r->d.H + r->d.KV) * (r->d.hs / 2);
    att_rope_kernel<T><<<bg_cuda_blocks(total, 256), 256, 0, r->st>>>(
        (T *)x, r->d.N, k, (int)(r->d.H + r->d.KV), r->d.theta, inverse);
    BG_CUDA_LAUNCH_CHECK("att_rope_kernel");
    return BG_OK;
}

/* Grid of ntiles * heads * B blocks, within the one flat dimension. */
static bg_status_t att_grid(const att_kdims_t &k, int64_t heads, int64_t B, unsigned *out)
{
    int64_t n = (int64_t)k.ntiles * heads * B;
    if (n > 2147483647LL)
        return bg_errorf(BG_ERR_UNSUPPORTED, "attention on CUDA: %lld blocks exceed the grid",
                         (long long)n);
    *out = (unsigned)n;
    return BG_OK;
}

/* Dynamic shared memory of `kernel` for plan `which`, opted in above 48 KiB. */
template <typename T, typename K>
static bg_status_t att_smem_for(K kernel, int which, int hsp, size_t *bytes)
{
    *bytes = att_carve<T>(NULL, which, hsp, NULL);
    BG_CUDA_CHECK(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)*bytes));
    return BG_OK;
}

template <typename T> static bg_status_t att_forward_core(const att_run_t *r)
{
    const int R = 16 * att_tile<T>::NW;
    att_kdims_t k = att_kdims(&r->d, R);
    unsigned grid = 0;
    size_t sm = 0;
    BG_TRY_STATUS(att_grid(k, r->d.H, r->d.B, &grid));
    BG_TRY_STATUS(att_smem_for<T>(att_fwd_kernel<T>, 0, k.hsp, &sm));
    att_fwd_kernel<T><<<grid, 32 * att_tile<T>::NW, sm, r->st>>>((const T *)r->qkv, (T *)r->y,
                                                                 r->lse, k);
    BG_CUDA_LAUNCH_CHECK("att_fwd_kernel");
    return BG_OK;
}

template <typename T> static bg_status_t att_backward_core(const att_run_t *r)
{
    const int R = 16 * att_tile<T>::NW, threads = 32 * att_tile<T>::NW;
    att_kdims_t k = att_kdims(&r->d, R);
    int64_t rows = r->d.N * r->d.H;
    att_dsum_kernel<T><<<bg_cuda_blocks(rows * 32, 256), 256, 0, r->st>>>(
        (const T *)r->dy, (const T *)r->y, r->dsum, r->d.N, k);
    BG_CUDA_LAUNCH_CHECK("att_dsum_kernel");
    unsigned grid = 0;
    size_t sm = 0;
    BG_TRY_STATUS(att_grid(k, r->d.KV, r->d.B, &grid));
    BG_TRY_STATUS(att_smem_for<T>(att_bwd_kv_kernel<T>, 1, k.hsp, &sm));
    att_bwd_kv_kernel<T><<<grid, threads, sm, r->st>>>((const T *)r->qkv, (const T *)r->dy,
                                                       r->lse, r->dsum, (T *)r->dqkv, k);
    BG_CUDA_LAUNCH_CHECK("att_bwd_kv_kernel");
    BG_TRY_STATUS(att_grid(k, r->d.H, r->d.B, &grid));
    BG_TRY_STATUS(att_smem_for<T>(att_bwd_q_kernel<T>, 2, k.hsp, &sm));
    att_bwd_q_kernel<T><<<grid, threads, sm, r->st>>>((const T *)r->qkv, (const T *)r->dy, r->lse,
                                                      r->dsum, (T *)r->dqkv, k);
    BG_CUDA_LAUNCH_CHECK("att_bwd_q_kernel");
    return r->d.rope ? att_rope<T>(r, r->dqkv, true) : BG_OK;
}

/* F: qkv = x Wqkv^T + bqkv (rotated when rope); fused attention -> y, lse;
 * out = y Wproj^T + bproj (no bias adds when bias=false). */
bg_status_t bg_cuda_attention_forward(const bg_layer_call_t *c)
{
    att_run_t r;
    BG_TRY_STATUS(att_run_of(c, &r));
    if (r.d.N == 0)
        return BG_OK; /* no rows: no scratch was allocated either */
    const bg_att_dims_t &d = r.d;
    BG_TRY_STATUS(att_linear(c, r, d.N, d.Wq, d.C, c->in[0]->data, c->params[d.pqw]->data,
                             d.bias ? c->params[d.pqb]->data : NULL, r.qkv));
    if (d.rope)
        BG_TRY_STATUS(BG_CUDA_DISPATCH(r.dt, att_rope, &r, r.qkv, false));
    BG_TRY_STATUS(BG_CUDA_DISPATCH(r.dt, att_forward_core, &r));
    return att_linear(c, r, d.N, d.C, d.C, r.y, c->params[d.ppw]->data,
                      d.bias ? c->params[d.ppb]->data : NULL, c->out->data);
}

/*
 * B: dy_att (N, C) = dout Wproj; dsum; dqkv (every element written; kept
 * in saved for W; rotated back when rope); dx = dqkv Wqkv when wanted.
 */
bg_status_t bg_cuda_attention_backward_input(const bg_layer_call_t *c)
{
    att_run_t r;
    BG_TRY_STATUS(att_run_of(c, &r));
    if (r.d.N == 0)
        return BG_OK;
    const bg_att_dims_t &d = r.d;
    BG_TRY_STATUS(att_gemm(c, r.dt, false, false, d.N, d.C, d.C, c->dout->data, d.C,
                           c->params[d.ppw]->data, d.C, r.dy, d.C, false));
    BG_TRY_STATUS(BG_CUDA_DISPATCH(r.dt, att_backward_core, &r));
    if (!c->din[0])
        return BG_OK;
    return att_gemm(c, r.dt, false, false, d.N, d.C, d.Wq, r.dqkv, d.Wq, c->params[d.pqw]->data,
                    d.C, c->din[0]->data, d.C, false);
}

/*
 * W (after B of the same micro-batch): dWqkv += dqkv^T x, dbqkv += colsum(dqkv),
 * dWproj += dout^T y, dbproj += colsum(dout); f32 accumulators.
 */
bg_status_t bg_cuda_attention_backward_weight(const bg_layer_call_t *c)
{
    att_run_t r;
    BG_TRY_STATUS(att_run_of(c, &r));
    if (r.d.N == 0)
        return BG_OK;
    const bg_att_dims_t &d = r.d;
    bg_tensor_t *gqw = c->grads[d.pqw], *gpw = c->grads[d.ppw];
    bg_tensor_t *gqb = d.bias ? c->grads[d.pqb] : NULL, *gpb = d.bias ? c->grads[d.ppb] : NULL;
    if (gqw)
        BG_TRY_STATUS(att_gemm(c, r.dt, true, false, d.Wq, d.C, d.N, r.dqkv, d.Wq, c->in[0]->data,
                               d.C, gqw->data, d.C, true));
    if (gqb)
        BG_TRY_STATUS(bg_cuda_colsum_add(r.dqkv, r.dt, d.N, d.Wq, (float *)gqb->data, r.st));
    if (gpw)
        BG_TRY_STATUS(att_gemm(c, r.dt, true, false, d.C, d.C, d.N, c->dout->data, d.C, r.y, d.C,
                               gpw->data, d.C, true));
    if (gpb)
        BG_TRY_STATUS(
            bg_cuda_colsum_add(c->dout->data, r.dt, d.N, d.C, (float *)gpb->data, r.st));
    return BG_OK;
}
