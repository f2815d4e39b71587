/*
 * layers/embedding.cu -- CUDA half of embedding: out[n] = tokens[ids[n]]
 * (+ positions[n mod T]); W adds dy into the rows of the ids (and of the
 * positions). No B (ids are integers), nothing saved.
 *
 * Determinism of W without atomics: positions are a plain per-(t, j) loop
 * over the sequences in order. Tokens need grouping by id: a stable radix
 * sort (CUB) of (id, position) pairs puts each id's positions together in
 * increasing order; the first slot of each run owns that id's row and sums
 * the run in order. Same ids -> same order -> same bits, at O(N) cost and
 * with one block per position of parallelism. The sort's scratch comes from
 * the stream-ordered pool (cudaMallocAsync): the kind has no workspace.
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
 * Block i looks at slot i of the sorted (id, position) pairs. Only the
 * first slot of a run of equal ids works: it sums dy over the run's
 * positions in increasing order and adds the sum into the id's row.
 */
template <typename T>
__global__ void embedding_tok_grad_kernel(const int32_t *sid, const int32_t *spos, const T *dy,
                                          float *gt, int64_t n, int64_t dim, int64_t vocab)
{
    int64_t i = blockIdx.x;
    int32_t id = sid[i];
    if ((i > 0 && sid[i - 1] == id) || id < 0 || id >= vocab)
        return;
    for (int64_t j = threadIdx.x; j < dim; j += blockDim.x) {
        float acc = 0.0f;
        for (int64_t m = i; m < n && sid[m] == id; m++)
            acc += bg_ld(&dy[(int64_t)spos[m] * dim + j]);
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
    bg_status_t ret = emb_sort_ids((const int32_t *)c->in[0]->data, d->n, &s, st);
    if (ret == BG_OK) {
        int threads = d->dim >= 256 ? 256 : (int)((d->dim + 31) / 32 * 32);
        embedding_tok_grad_kernel<T><<<(unsigned)d->n, threads, 0, st>>>(
            s.keys_out, s.vals_out, (const T *)c->dout->data, (float *)c->grads[0]->data, d->n,
            d->dim, d->vocab);
        cudaError_t e = cudaGetLastError();
        if (e != cudaSuccess)
            ret = bg_cuda_fail(e, "launch of embedding_tok_grad_kernel", __FILE__, __LINE__);
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
    return c->dtype == BG_BF16 ? embedding_forward_t<__nv_bfloat16>(c, st)
                               : embedding_forward_t<float>(c, st);
}

bg_status_t bg_cuda_embedding_backward_weight(const bg_layer_call_t *c)
{
    cudaStream_t st;
    BG_TRY_STATUS(bg_cuda_stream_of(c->be, c->stream, &st));
    return c->dtype == BG_BF16 ? embedding_wgrad_t<__nv_bfloat16>(c, st)
                               : embedding_wgrad_t<float>(c, st);
}
