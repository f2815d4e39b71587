/*
 * layers/swiglu.c -- the SwiGLU gate of Llama's feed-forward block, fused:
 * x (..., 2H) -> y (..., H), y = silu(a) * b with a = x[..., :H] (gate)
 * and b = x[..., H:] (up), silu(a) = a * sigmoid(a).
 *
 * Why one fused kind instead of `silu` + `mul`: the gate and up
 * projections become one linear(out=2H) (one GEMM, one activation), and
 * the block keeps one (..., 2H) input for backward instead of three
 * tensors (a, b and silu(a)); F and B are each one pass over memory. The
 * parameter count is unchanged (the fused weight is (2H, C) = w1 and w3
 * stacked).
 *
 * B recomputes sigmoid from the kept input; nothing saved. No parameters,
 * no W. The CPU half computes in f32 with the branch-free exp of
 * cpu_math.h (vectorisable; < 2 ulp). Must not keep state between calls.
 */
#include "layers/layer.h"
#include "layers/cpu_math.h"
#include "layers/cpu_util.h"
#include "layers/kernels_cuda.h"

static bg_status_t swiglu_infer(bg_layer_spec_t *spec, bg_errbuf_t *err)
{
    const bg_shape_t *x = &spec->in[0];
    if (x->dtype != BG_F32)
        return bg_errbuf_set(err, "swiglu: input must be a float tensor, got %s",
                             bg_dtype_name(x->dtype));
    int64_t last = x->d[x->ndim - 1];
    if (last % 2)
        return bg_errbuf_set(err, "swiglu: last dimension %lld is odd; it must be 2H (gate | up)",
                             (long long)last);
    spec->out = *x;
    spec->out.d[x->ndim - 1] = last / 2;
    return BG_OK;
}

/* Per output element: F exp, add, divide, two multiplies (~6);
 * B recomputes the sigmoid and forms both gradients (~12). */
static void swiglu_cost(const bg_layer_spec_t *spec, bg_dtype_t dtype, bg_layer_cost_t *c)
{
    (void)dtype;
    double n = (double)bg_shape_numel(&spec->out);
    c->fwd_flops = 6.0 * n;
    c->bwd_input_flops = 12.0 * n;
}

/* y (rows, H) from x (rows, 2H). */
BG_CPU_WIDE static void swiglu_forward_cpu(const float *x, float *y, int64_t rows, int64_t H)
{
    for (int64_t r = 0; r < rows; r++) {
        const float *a = x + r * 2 * H, *b = a + H;
        float *yr = y + r * H;
        for (int64_t j = 0; j < H; j++)
            yr[j] = a[j] / (1.0f + bg_cpu_expf(-a[j])) * b[j];
    }
}

/*
 * With e = exp(-a), s = 1 / (1 + e), 1 - s = e s (no cancellation near s = 1):
 * da = dy b s (1 + a e s), db = dy a s.
 */
BG_CPU_WIDE static void swiglu_backward_cpu(const float *x, const float *dy, float *dx, int64_t rows, int64_t H)
{
    for (int64_t r = 0; r < rows; r++) {
        const float *a = x + r * 2 * H, *b = a + H, *dyr = dy + r * H;
        float *da = dx + r * 2 * H, *db = da + H;
        for (int64_t j = 0; j < H; j++) {
            float e = bg_cpu_expf(-a[j]), s = 1.0f / (1.0f + e);
            da[j] = dyr[j] * b[j] * s * (1.0f + a[j] * (e * s));
            db[j] = dyr[j] * (a[j] * s);
        }
    }
}

static bg_status_t swiglu_forward(const bg_layer_call_t *c)
{
#ifdef BG_HAVE_CUDA
    if (bg_backend_device(c->be) == BG_DEV_CUDA)
        return bg_cuda_swiglu_forward(c);
#endif
    bg_status_t st = bg_cpu_require_f32(c, "forward");
    if (st != BG_OK)
        return st;
    swiglu_forward_cpu(c->in[0]->data, c->out->data, bg_tensor_rows(c->out),
                       bg_tensor_cols(c->out));
    return BG_OK;
}

static bg_status_t swiglu_backward_input(const bg_layer_call_t *c)
{
    if (!c->din[0])
        return BG_OK;
#ifdef BG_HAVE_CUDA
    if (bg_backend_device(c->be) == BG_DEV_CUDA)
        return bg_cuda_swiglu_backward_input(c);
#endif
    bg_status_t st = bg_cpu_require_f32(c, "backward-input");
    if (st != BG_OK)
        return st;
    swiglu_backward_cpu(c->in[0]->data, c->dout->data, c->din[0]->data, bg_tensor_rows(c->dout),
                        bg_tensor_cols(c->dout));
    return BG_OK;
}

const bg_layer_kind_t bg_kind_swiglu = {
    .name = "swiglu",
    .min_inputs = 1,
    .max_inputs = 1,
    .doc = "swiglu(x): x = (gate | up) over the last dim (2H) -> silu(gate) * up (H)",
    .infer = swiglu_infer,
    .cost = swiglu_cost,
    .forward = swiglu_forward,
    .backward_input = swiglu_backward_input,
};
