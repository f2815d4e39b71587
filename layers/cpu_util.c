/*
 * layers/cpu_util.c -- shared CPU loops of the layer kinds (cpu_util.h).
 * Must not hold state or know any kind.
 */
#include "layers/cpu_util.h"

#include <math.h>
#include <stdio.h>

bg_status_t bg_cpu_require_f32(const bg_layer_call_t *c, const char *phase)
{
    if (c->dtype != BG_F32)
        return bg_errorf(BG_ERR_UNSUPPORTED,
                         "layer %s (%s): %s on the cpu backend computes in f32 only, got %s",
                         c->spec->name, c->spec->kind->name, phase, bg_dtype_name(c->dtype));
    return BG_OK;
}

bg_status_t bg_cpu_check_targets(const bg_layer_call_t *c, const int32_t *tg, int64_t rows,
                                 int64_t V)
{
    for (int64_t r = 0; r < rows; r++) {
        if (tg[r] >= 0 && tg[r] < V) continue;
        const bg_shape_t *s = &c->spec->in[1];
        char pos[96] = "";
        int64_t rem = r, idx[BG_MAX_DIMS] = {0};
        for (int i = s->ndim - 1; i >= 0; i--) {
            idx[i] = s->d[i] ? rem % s->d[i] : 0;
            rem = s->d[i] ? rem / s->d[i] : 0;
        }
        size_t len = 0;
        for (int i = 0; i < s->ndim && len < sizeof(pos); i++)
            len += (size_t)snprintf(pos + len, sizeof(pos) - len, "%s%lld", i ? ", " : "",
                                    (long long)idx[i]);
        return bg_errorf(BG_ERR_INVALID,
                         "layer %s (%s): target %d at position [%s] is outside [0, %lld)",
                         c->spec->name, c->spec->kind->name, (int)tg[r], pos, (long long)V);
    }
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

double bg_cpu_lanes_sum(const double *acc)
{
    return ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
}

double bg_cpu_sum(const float *x, int64_t n)
{
    double acc[BG_CPU_LANES] = {0};
    int64_t j = 0;
    for (; j + BG_CPU_LANES <= n; j += BG_CPU_LANES)
        for (int l = 0; l < BG_CPU_LANES; l++)
            acc[l] += x[j + l];
    for (int l = 0; j < n; j++, l++)
        acc[l] += x[j];
    return bg_cpu_lanes_sum(acc);
}

double bg_cpu_sum_sqdev(const float *x, int64_t n, double m)
{
    double acc[BG_CPU_LANES] = {0};
    int64_t j = 0;
    for (; j + BG_CPU_LANES <= n; j += BG_CPU_LANES)
        for (int l = 0; l < BG_CPU_LANES; l++) {
            double d = (double)x[j + l] - m;
            acc[l] += d * d;
        }
    for (int l = 0; j < n; j++, l++) {
        double d = (double)x[j] - m;
        acc[l] += d * d;
    }
    return bg_cpu_lanes_sum(acc);
}

void bg_cpu_norm_forward(const float *x, const float *w, const float *b, int64_t rows, int64_t C,
                         double eps, float *y, float *mean, float *rstd)
{
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * C;
        float *yr = y + r * C;
        /* two passes: no cancellation for rows far from 0 */
        double m = mean ? bg_cpu_sum(xr, C) / (double)C : 0.0;
        double v = bg_cpu_sum_sqdev(xr, C, m) / (double)C;
        float mf = (float)m, rs = (float)(1.0 / sqrt(v + eps));
        if (b)
            for (int64_t j = 0; j < C; j++) yr[j] = (xr[j] - mf) * rs * w[j] + b[j];
        else
            for (int64_t j = 0; j < C; j++) yr[j] = (xr[j] - mf) * rs * w[j];
        if (mean) mean[r] = mf;
        rstd[r] = rs;
    }
}

/* sum_j dy w and sum_j (dy w) xhat of one row, in double lanes. */
static void norm_row_sums(const float *xr, const float *w, const float *dyr, float m, float rs,
                          int64_t C, double *sg, double *sgx)
{
    double ag[BG_CPU_LANES] = {0}, agx[BG_CPU_LANES] = {0};
    int64_t j = 0;
    for (; j + BG_CPU_LANES <= C; j += BG_CPU_LANES)
        for (int l = 0; l < BG_CPU_LANES; l++) {
            float g = dyr[j + l] * w[j + l], xh = (xr[j + l] - m) * rs;
            ag[l] += g;
            agx[l] += (double)g * xh;
        }
    for (int l = 0; j < C; j++, l++) {
        float g = dyr[j] * w[j], xh = (xr[j] - m) * rs;
        ag[l] += g;
        agx[l] += (double)g * xh;
    }
    *sg = bg_cpu_lanes_sum(ag);
    *sgx = bg_cpu_lanes_sum(agx);
}

void bg_cpu_norm_backward_input(const float *x, const float *w, const float *dy,
                                const float *mean, const float *rstd, int64_t rows, int64_t C,
                                float *dx)
{
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * C, *dyr = dy + r * C;
        float *dxr = dx + r * C;
        float m = mean ? mean[r] : 0.0f, rs = rstd[r];
        double sg, sgx;
        norm_row_sums(xr, w, dyr, m, rs, C, &sg, &sgx);
        float mg = mean ? (float)(sg / (double)C) : 0.0f, mgx = (float)(sgx / (double)C);
        for (int64_t j = 0; j < C; j++) {
            float g = dyr[j] * w[j], xh = (xr[j] - m) * rs;
            dxr[j] = rs * (g - mg - xh * mgx);
        }
    }
}

void bg_cpu_norm_backward_weight(const float *x, const float *dy, const float *mean,
                                 const float *rstd, int64_t rows, int64_t C, float *gw,
                                 float *gb)
{
    enum { BLK = 128 };
    double aw[BLK], ab[BLK];
    for (int64_t j0 = 0; j0 < C; j0 += BLK) {
        int64_t nb = C - j0 < BLK ? C - j0 : BLK;
        for (int64_t j = 0; j < nb; j++) aw[j] = ab[j] = 0.0;
        for (int64_t r = 0; r < rows; r++) {
            const float *xr = x + r * C + j0, *dyr = dy + r * C + j0;
            float m = mean ? mean[r] : 0.0f, rs = rstd[r];
            for (int64_t j = 0; j < nb; j++) {
                aw[j] += (double)dyr[j] * ((xr[j] - m) * rs);
                ab[j] += dyr[j];
            }
        }
        for (int64_t j = 0; j < nb; j++) {
            if (gw) gw[j0 + j] += (float)aw[j];
            if (gb) gb[j0 + j] += (float)ab[j];
        }
    }
}
