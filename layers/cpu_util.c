/*
 * layers/cpu_util.c -- shared CPU loops of the layer kinds (cpu_util.h).
 * Must not hold state or know any kind.
 */
#include "layers/cpu_util.h"

bg_status_t bg_cpu_require_f32(const bg_layer_call_t *c, const char *phase)
{
    if (c->dtype != BG_F32)
        return bg_errorf(BG_ERR_UNSUPPORTED,
                         "layer %s (%s): %s on the cpu backend computes in f32 only, got %s",
                         c->spec->name, c->spec->kind->name, phase, bg_dtype_name(c->dtype));
    return BG_OK;
}

void bg_cpu_add_bias(float *y, const float *b, int64_t rows, int64_t cols)
{
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < cols; j++)
            y[r * cols + j] += b[j];
}

void bg_cpu_colsum_add(const float *d, int64_t rows, int64_t cols, float *g)
{
    enum { BLK = 256 };
    double acc[BLK];
    for (int64_t j0 = 0; j0 < cols; j0 += BLK) {
        int64_t nb = cols - j0 < BLK ? cols - j0 : BLK;
        for (int64_t j = 0; j < nb; j++)
            acc[j] = 0.0;
        for (int64_t r = 0; r < rows; r++) {
            const float *row = d + r * cols + j0;
            for (int64_t j = 0; j < nb; j++)
                acc[j] += row[j];
        }
        for (int64_t j = 0; j < nb; j++)
            g[j0 + j] += (float)acc[j];
    }
}
