/*
 * layers/embedding.cu -- CUDA half of embedding: out[n] = tokens[ids[n]]
 * (+ positions[n mod T]); W adds dy into the rows of the ids (and of the
 * positions). No B (ids are integers), nothing saved.
 *
 * Determinism of W without atomics: positions are a plain per-(t, j) loop
 * over the sequences in order. Tokens need grouping by id: a stable radix
 * sort (CUB) of (id, position) pairs puts each id's positions together in
 * increasing order; the first slot of each run owns that id's row and sums
 * the run in fixed pieces (segments of the sorted slots, summed by their own
 * blocks, combined in segment order), so a long run of one id is not one
 * block's serial loop. Same ids -> same pieces -> same bits, at O(N) cost. The sort's scratch comes
 * from the stream-ordered pool (cudaMallocAsync): the kind has no workspace.
 *
 * Out-of-range ids: checking them on the host would need a device-to-host
 * sync, so instead F writes NaN over that row (the loss turns NaN, which the
 * host sees when it reads it) and W skips the id (no out-of-bounds write).
 * Must not synchronise with the host or keep state between calls.
 */
#include "layers/cuda_common.cuh"

#include <cub/device/device_radix_sort.cuh>
#include <limits.h>

/* ---- kernels ---- */

/* out (N, dim): one thread per element. */
template <typename T>
__global__ void embedding_forward_kernel(const int32_t *ids, const T *tok, const T *pos, T *out,
                                         int64_t n, int64_t T_, int64_t dim, int64_t vocab)
{
    int64_t total = n * dim;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t row = i / dim, j = i % dim;
        int32_t id = ids[row];
        float v;
        if (id < 0 || id >= vocab) {
            v = __int_as_float(0x7fc00000); /* quiet NaN: see file comment */
        } else {
            v = bg_ld(&tok[(int64_t)id * dim + j]);
            if (pos)
                v += bg_ld(&pos[(row % T_) * dim + j]);
        }
        bg_st(&out[i], v);
    }
}

/* gp[t, j] += sum over sequences b (in order) of dy[b*T + t, j]. */
template <typename T>
__global__ void embedding_pos_grad_kernel(const T *dy, float *gp, int64_t seqs, int64_t T_,
                                          int64_t dim)
{
    int64_t total = T_ * dim;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        float acc = 0.0f;
        for (int64_t b = 0; b < seqs; b++)
            acc += bg_ld(&dy[b * total + i]);
        gp[i] += acc;
    }
}

/* Position k of the sort's value input holds k. */
__global__ void embedding_iota_kernel(int32_t *v, int64_t n)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        v[i] = (int32_t)i;
}

/*
 * Long runs of one id (a padding or frequent token) would leave one block
 * summing thousands of rows. The sorted slots are cut into fixed segments
 * of EMB_SEG; a run is summed in pieces: its first piece (up to the next
 * segment boundary) by its first slot's block, each further segment it
 * covers by that segment's block (embedding_cont_kernel, into cont[k]),
 * then the first block adds the pieces in segment order. Fixed pieces,
 * fixed combine order: same ids -> same bits, whatever the timing.
 */
#define EMB_SEG 256

/* Last slot (exclusive) of the run containing slot i, within [i, hi). */
__device__ __forceinline__ int64_t emb_run_end(const int32_t *sid, int64_t i, int64_t hi)
{
    int64_t m = i;
    while (m < hi && sid[m] == sid[i])
        m++;
    return m;
}

/* cont[k] = dy summed over segment k's leading slots that continue the
 * run from segment k - 1 (nothing, when segment k starts a new run). */
template <typename T>
__global__ void embedding_cont_kernel(const int32_t *sid, const int32_t *spos, const T *dy,
                                      float *cont, int64_t n, int64_t dim)
{
    int64_t k = blockIdx.x, a = k * EMB_SEG;
    if (a == 0 || a >= n || sid[a - 1] != sid[a])
        return;
    int64_t b = emb_run_end(sid, a, a + EMB_SEG < n ? a + EMB_SEG : n);
    for (int64_t j = threadIdx.x; j < dim; j += blockDim.x) {
        float acc = 0.0f;
        for (int64_t m = a; m < b; m++)
            acc += bg_ld(&dy[(int64_t)spos[m] * dim + j]);
        cont[k * dim + j] = acc;
    }
}

/*
 * Block i looks at slot i of the sorted (id, position) pairs. Only the
 * first slot of a run works: it sums the run's first piece in increasing
 * position order, adds the continuation pieces of the segments the run
 * reaches in segment order, and adds the total into the id's row.
 */
template <typename T>
__global__ void embedding_tok_grad_kernel(const int32_t *sid, const int32_t *spos, const T *dy,
                                          const float *cont, float *gt, int64_t n, int64_t dim,
                                          int64_t vocab)
{
    int64_t i = blockIdx.x;
    int32_t id = sid[i];
    if ((i > 0 && sid[i - 1] == id) || id < 0 || id >= vocab)
        return;
    int64_t seg_end = (i / EMB_SEG + 1) * EMB_SEG;
    int64_t first = emb_run_end(sid, i, seg_end < n ? seg_end : n);
    for (int64_t j = threadIdx.x; j < dim; j += blockDim.x) {
        float acc = 0.0f;
        for (int64_t m = i; m < first; m++)
            acc += bg_ld(&dy[(int64_t)spos[m] * dim + j]);
        for (int64_t k = seg_end / EMB_SEG;
             first == seg_end && k * EMB_SEG < n && sid[k * EMB_SEG] == id; k++)
            acc += cont[k * dim + j];
        gt[(int64_t)id * dim + j] += acc;
    }
}

/* ---- launchers ---- */

typedef struct emb_dims {
    int64_t n, T, dim, vocab; /* n = B*T positions */
    bool pos;
} emb_dims_t;

static emb_dims_t emb_dims(const bg_layer_call_t *c)
{
    emb_dims_t d;
    d.n = bg_tensor_numel(c->in[0]);
    d.T = bg_tensor_cols(c->in[0]);
    d.dim = bg_attrs_int(&c->spec->attrs, "dim", 0);
    d.vocab = bg_attrs_int(&c->spec->attrs, "vocab", 0);
    d.pos = bg_attrs_int(&c->spec->attrs, "positions", 0) > 0;
    return d;
}

template <typename T>
static bg_status_t embedding_forward_t(const bg_layer_call_t *c, cudaStream_t st)
{
    emb_dims_t d = emb_dims(c);
    if (!d.n || !d.dim)
        return BG_OK;
    const T *pos = d.pos ? (const T *)c->params[1]->data : NULL;
    embedding_forward_kernel<T><<<bg_cuda_blocks(d.n * d.dim, 256), 256, 0, st>>>(
        (const int32_t *)c->in[0]->data, (const T *)c->params[0]->data, pos, (T *)c->out->data, d.n,
        d.T, d.dim, d.vocab);
    BG_CUDA_LAUNCH_CHECK("embedding_forward_kernel");
    return BG_OK;
}

/* Stream-ordered scratch for the sort: keys, values in/out, CUB temp. */
typedef struct emb_sort {
    int32_t *vals_in, *keys_out, *vals_out;
    void *temp;
    size_t temp_bytes;
    void *block; /* the one allocation all of the above live in */
} emb_sort_t;

static size_t emb_align(size_t x)
{
    return (x + 255) & ~(size_t)255;
}

/* Sort the ids (stable) with their positions; scratch freed by the caller. */
static bg_status_t emb_sort_ids(const int32_t *ids, int64_t n, emb_sort_t *s, cudaStream_t st)
{
    int items = (int)n;
    BG_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(NULL, s->temp_bytes, ids, (int32_t *)NULL,
                                                  (const int32_t *)NULL, (int32_t *)NULL, items, 0,
                                                  32, st));
    size_t arr = emb_align((size_t)n * sizeof(int32_t));
    BG_CUDA_CHECK(cudaMallocAsync(&s->block, 3 * arr + emb_align(s->temp_bytes), st));
    char *p = (char *)s->block;
    s->vals_in = (int32_t *)p;
    s->keys_out = (int32_t *)(p + arr);
    s->vals_out = (int32_t *)(p + 2 * arr);
    s->temp = p + 3 * arr;
    embedding_iota_kernel<<<bg_cuda_blocks(n, 256), 256, 0, st>>>(s->vals_in, n);
    BG_CUDA_LAUNCH_CHECK("embedding_iota_kernel");
    BG_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(s->temp, s->temp_bytes, ids, s->keys_out,
                                                  s->vals_in, s->vals_out, items, 0, 32, st));
    return BG_OK;
}

template <typename T>
static bg_status_t embedding_tok_grad_t(const bg_layer_call_t *c, const emb_dims_t *d,
                                        cudaStream_t st)
{
    if (d->n > INT_MAX)
        return bg_errorf(BG_ERR_UNSUPPORTED,
                         "layer %s (embedding): %lld positions exceed the sort's int range",
                         c->spec->name, (long long)d->n);
    emb_sort_t s = {};
    float *cont = NULL;
    int64_t nseg = (d->n + EMB_SEG - 1) / EMB_SEG;
    bg_status_t ret = emb_sort_ids((const int32_t *)c->in[0]->data, d->n, &s, st);
    cudaError_t e = cudaSuccess;
    if (ret == BG_OK)
        e = cudaMallocAsync((void **)&cont, (size_t)(nseg * d->dim) * sizeof(float) + 4, st);
    if (ret == BG_OK && e != cudaSuccess)
        ret = bg_cuda_fail(e, "cudaMallocAsync(embedding pieces)", __FILE__, __LINE__);
    if (ret == BG_OK) {
        int threads = d->dim >= 256 ? 256 : (int)((d->dim + 31) / 32 * 32);
        const T *dy = (const T *)c->dout->data;
        embedding_cont_kernel<T>
            <<<(unsigned)nseg, threads, 0, st>>>(s.keys_out, s.vals_out, dy, cont, d->n, d->dim);
        embedding_tok_grad_kernel<T><<<(unsigned)d->n, threads, 0, st>>>(
            s.keys_out, s.vals_out, dy, cont, (float *)c->grads[0]->data, d->n, d->dim, d->vocab);
        e = cudaGetLastError();
        if (e != cudaSuccess)
            ret = bg_cuda_fail(e, "launch of embedding_tok_grad_kernel", __FILE__, __LINE__);
    }
    if (cont) {
        e = cudaFreeAsync(cont, st);
        if (e != cudaSuccess && ret == BG_OK)
            ret = bg_cuda_fail(e, "cudaFreeAsync(cont, st)", __FILE__, __LINE__);
    }
    if (s.block) {
        cudaError_t e = cudaFreeAsync(s.block, st);
        if (e != cudaSuccess && ret == BG_OK)
            ret = bg_cuda_fail(e, "cudaFreeAsync(s.block, st)", __FILE__, __LINE__);
    }
    return ret;
}

template <typename T>
static bg_status_t embedding_wgrad_t(const bg_layer_call_t *c, cudaStream_t st)
{
    emb_dims_t d = emb_dims(c);
    if (!d.n || !d.dim)
        return BG_OK;
    if (d.pos && c->grads[1]) {
        embedding_pos_grad_kernel<T><<<bg_cuda_blocks(d.T * d.dim, 256), 256, 0, st>>>(
            (const T *)c->dout->data, (float *)c->grads[1]->data, d.n / d.T, d.T, d.dim);
        BG_CUDA_LAUNCH_CHECK("embedding_pos_grad_kernel");
    }
    if (c->grads[0])
        return embedding_tok_grad_t<T>(c, &d, st);
    return BG_OK;
}

bg_status_t bg_cuda_embedding_forward(const bg_layer_call_t *c)
{
    cudaStream_t st;
    BG_TRY_STATUS(bg_cuda_stream_of(c->be, c->stream, &st));
    return BG_CUDA_DISPATCH(c->dtype, embedding_forward_t, c, st);
}

bg_status_t bg_cuda_embedding_backward_weight(const bg_layer_call_t *c)
{
    cudaStream_t st;
    BG_TRY_STATUS(bg_cuda_stream_of(c->be, c->stream, &st));
    return BG_CUDA_DISPATCH(c->dtype, embedding_wgrad_t, c, st);
}
