/*
 * engine/metrics.c -- metrics the training loop asks of an evaluation,
 * computed from the loss layer's inputs the runtime hands over.
 * Must NOT touch devices or the transport.
 */
#include "engine/metrics.h"

bg_status_t bg_accuracy_add(void *ctx, const bg_rt_output_t *o)
{
    bg_accuracy_t *acc = ctx;
    int64_t V = o->classes;
    for (int64_t r = 0; o->argmax && r < o->rows; r++) /* a fused classifier's */
        acc->correct += o->argmax[r] == o->targets[r];
    for (int64_t r = 0; !o->argmax && r < o->rows; r++) {
        const float *row = o->logits + r * V; /* [V] */
        int64_t best = 0;
        for (int64_t v = 1; v < V; v++)
            if (row[v] > row[best])
                best = v;
        acc->correct += best == o->targets[r];
    }
    acc->rows += o->rows;
    return BG_OK;
}
