/*
 * engine/data_synth.c -- seeded synthetic datasets for benchmarks and tests.
 *
 * Every value is a Philox draw keyed by (seed, split) and counted by the
 * element's position, so no memory is held and any row is computed in
 * isolation. Images are learnable (a per-class prototype plus noise) so
 * that a smoke run's loss falls; tokens are uniform (loss floor ln(vocab)),
 * which is what a throughput benchmark wants. Must NOT read files.
 *
 * Spec: synthetic[:images|:tokens][,n=N][,eval=N][,dim=D][,classes=C][,vocab=V]
 *   images: n/eval are sample counts (default 8192 / 1024), dim 784, classes 10
 *   tokens: n/eval are stream lengths in tokens (default 1M / 64K), vocab 256
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/checked.h"
#include "base/rng.h"
#include "engine/data_impl.h"

typedef struct {
    bool tokens;
    int64_t n[2]; /* images: samples; tokens: stream length */
    int64_t dim, classes, vocab, T;
    bg_rng_key_t key[2]; /* per split */
    bg_rng_key_t proto;
} synth_impl_t;

/* 4 uniforms in [0,1) for element block `b` of a stream. */
static void uniforms4(bg_rng_key_t key, uint64_t b, float out[4])
{
    uint32_t w[4];
    bg_rng_block(key, b, w);
    for (int i = 0; i < 4; i++) out[i] = (float)(w[i] >> 8) * (1.0f / 16777216.0f);
}

static int32_t synth_label(const synth_impl_t *m, bg_split_t split, int64_t sample)
{
    uint32_t w[4];
    /* The high half of the counter space keeps labels apart from pixel draws. */
    bg_rng_block(m->key[split], ((uint64_t)1 << 63) | (uint64_t)sample, w);
    return (int32_t)(w[0] % (uint32_t)m->classes);
}

static uint32_t synth_token(const synth_impl_t *m, bg_split_t split, int64_t pos)
{
    uint32_t w[4];
    bg_rng_block(m->key[split], (uint64_t)pos / 4, w);
    return w[pos % 4] % (uint32_t)m->vocab;
}

static bg_status_t synth_row(const void *p, bg_split_t split, int64_t sample, void *input,
                             int32_t *target)
{
    const synth_impl_t *m = p;
    if (m->tokens) {
        int64_t pos = sample * m->T;
        for (int64_t j = 0; j < m->T; j++) {
            if (input) ((int32_t *)input)[j] = (int32_t)synth_token(m, split, pos + j);
            if (target) target[j] = (int32_t)synth_token(m, split, pos + j + 1);
        }
        return BG_OK;
    }
    int32_t label = synth_label(m, split, sample);
    if (target) *target = label;
    if (input) {
        float *x = input, noise[4], proto[4];
        int64_t blocks_per_row = (m->dim + 3) / 4;
        for (int64_t b = 0; b < blocks_per_row; b++) {
            uniforms4(m->key[split], (uint64_t)(sample * blocks_per_row + b), noise);
            uniforms4(m->proto, (uint64_t)(label * blocks_per_row + b), proto);
            for (int i = 0; i < 4 && 4 * b + i < m->dim; i++)
                x[4 * b + i] = 0.6f * proto[i] + 0.4f * noise[i];
        }
    }
    return BG_OK;
}

/*
 * Every draw is counted by its element block: sample * blocks_per_row + b
 * for pixels, label * blocks_per_row + b for prototypes, and labels live in
 * the counter space's high half. Sizes whose counters would pass 2^62 (or
 * whose row would not fit in memory) are refused here rather than wrapping.
 */
static bg_status_t synth_check_counters(const char *spec, const synth_impl_t *m)
{
    const int64_t lim = (int64_t)1 << 62;
    int64_t bpr = m->dim / 4 + 1, x;
    bool ok = m->dim <= lim / (int64_t)sizeof(float) && m->n[0] < lim && m->n[1] < lim;
    if (ok && !m->tokens)
        ok = bg_mul_i64(m->n[0] > m->n[1] ? m->n[0] : m->n[1], bpr, &x) && x < lim &&
             bg_mul_i64(m->classes, bpr, &x) && x < lim;
    if (!ok)
        return bg_errorf(BG_ERR_INVALID,
                         "data spec 'synthetic%s': n=%" PRId64 ", eval=%" PRId64 ", dim=%" PRId64
                         " too large (samples x dim and dim x 4 bytes must stay below 2^62)",
                         spec, m->n[0], m->n[1], m->dim);
    return BG_OK;
}

/* Parse ",k=v,k=v" into the fields of m; `kind` chooses defaults first. */
static bg_status_t synth_parse(const char *spec, synth_impl_t *m)
{
    const char *p = spec;
    if (*p == ':') {
        p++;
        size_t len = strcspn(p, ",");
        if (len == 6 && !strncmp(p, "images", 6))
            m->tokens = false;
        else if (len == 6 && !strncmp(p, "tokens", 6))
            m->tokens = true;
        else
            return bg_errorf(BG_ERR_INVALID, "data spec 'synthetic%s': kind must be images or tokens",
                             spec);
        p += len;
    }
    m->n[0] = m->tokens ? 1 << 20 : 8192;
    m->n[1] = m->tokens ? 1 << 16 : 1024;
    m->dim = 784, m->classes = 10, m->vocab = 256;
    while (*p == ',') {
        p++;
        char key[16];
        long long v;
        int used = 0;
        if (sscanf(p, "%15[a-z]=%lld%n", key, &v, &used) != 2 || (p[used] != ',' && p[used]) ||
            v < 0)
            return bg_errorf(BG_ERR_INVALID, "data spec 'synthetic%s': bad option at '%s' "
                             "(expected key=non-negative integer)", spec, p);
        int64_t *dst = !strcmp(key, "n")         ? &m->n[0]
                       : !strcmp(key, "eval")    ? &m->n[1]
                       : !strcmp(key, "dim")     ? &m->dim
                       : !strcmp(key, "classes") ? &m->classes
                       : !strcmp(key, "vocab")   ? &m->vocab
                                                 : NULL;
        if (!dst)
            return bg_errorf(BG_ERR_INVALID, "data spec 'synthetic%s': unknown option '%s' "
                             "(n, eval, dim, classes, vocab)", spec, key);
        *dst = v;
        p += used;
    }
    if (*p)
        return bg_errorf(BG_ERR_INVALID, "data spec 'synthetic%s': unexpected '%s'", spec, p);
    if (m->dim < 1 || m->classes < 1 || m->vocab < 1 || m->vocab > INT32_MAX ||
        m->classes > INT32_MAX)
        return bg_errorf(BG_ERR_INVALID, "data spec 'synthetic%s': dim, classes and vocab must be "
                         ">= 1 (classes and vocab at most %d)", spec, INT32_MAX);
    return synth_check_counters(spec, m);
}

static void synth_destroy(void *p)
{
    free(p);
}

bg_status_t bg_data_synth_open(const char *spec, const bg_data_opts_t *o, bg_data_info_t *info,
                               bg_data_source_t *out)
{
    synth_impl_t *m = calloc(1, sizeof(*m));
    if (!m) return bg_errorf(BG_ERR_NOMEM, "synthetic: out of memory");
    bg_status_t st = synth_parse(spec, m);
    if (st != BG_OK) goto err_free;
    if (m->tokens && o->seq_len < 1) {
        st = bg_errorf(BG_ERR_INVALID, "synthetic tokens: sequence length must be >= 1");
        goto err_free;
    }
    if (m->tokens && o->vocab > 0 && o->vocab < m->vocab) {
        st = bg_errorf(BG_ERR_INVALID, "synthetic tokens: vocab %" PRId64
                       " exceeds the model's %" PRId64, m->vocab, o->vocab);
        goto err_free;
    }
    m->T = o->seq_len;
    m->key[0] = bg_rng_key(o->seed, "data.synthetic.train");
    m->key[1] = bg_rng_key(o->seed, "data.synthetic.eval");
    m->proto = bg_rng_key(o->seed, "data.synthetic.proto");
    memset(info, 0, sizeof(*info));
    if (m->tokens) {
        info->kind = BG_DATA_TOKENS;
        snprintf(info->name, sizeof(info->name), "synthetic-tokens");
        info->n_train = m->n[0] > 0 ? (m->n[0] - 1) / m->T : 0;
        info->n_eval = m->n[1] > 0 ? (m->n[1] - 1) / m->T : 0;
        info->input_cols = m->T;
        info->input_dtype = BG_I32;
        info->target_cols = m->T;
        info->classes = m->vocab;
        info->train_tokens = m->n[0];
        info->eval_tokens = m->n[1];
    } else {
        info->kind = BG_DATA_IMAGES;
        snprintf(info->name, sizeof(info->name), "synthetic-images");
        info->n_train = m->n[0];
        info->n_eval = m->n[1];
        info->input_cols = m->dim;
        info->input_dtype = BG_F32;
        info->target_cols = 1;
        info->classes = m->classes;
    }
    out->impl = m;
    out->destroy = synth_destroy;
    out->row = synth_row;
    return BG_OK;

err_free:
    free(m);
    return st;
}
