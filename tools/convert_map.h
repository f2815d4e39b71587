/*
 * tools/convert_map.h -- which Hugging Face tensors make up each parameter
 * of a brigade graph, for `brigade convert` (tools/cmd_convert.c).
 *
 * Two naming families. GPT-2 (`wte`, `wpe`, `h.N.ln_1`, `h.N.attn.c_attn`,
 * ...): Conv1D weights are stored (in, out), the transpose of brigade's
 * (out, in), and c_attn is q, k and v merged, as brigade's qkv. Llama
 * (`model.embed_tokens`, `model.layers.N.self_attn.q_proj`, ...): q, k, v
 * separate (or merged as `qkv_proj`), gate and up separate (or merged as
 * `gate_up_proj`), stacked in brigade's qkv and w13 in that order.
 * The mapping follows the graph's structure, not its layer names: a layer's
 * block is the number in its path (`layers.3.w13` -> 3) and its role the
 * order of its kind within the block (the first norm is the one before
 * attention, the first linear the one after the second norm), so any file
 * laid out as GPT-2 or Llama blocks maps, whatever it calls its layers.
 * Must not read or write files: cmd_convert.c does.
 */
#ifndef BG_TOOLS_CONVERT_MAP_H
#define BG_TOOLS_CONVERT_MAP_H

#include <stdbool.h>
#include <stdint.h>

#include "layers/graph.h"

typedef enum { BG_HF_GPT2, BG_HF_LLAMA } bg_hf_family_t;

#define BG_HF_NAME_MAX 192

/* Rows [r0, r0 + rows) of a brigade parameter (all of a 1-D one), stored
 * as HF tensor `name`, transposed there when `transposed` (Conv1D). */
typedef struct bg_hf_piece {
    char name[BG_HF_NAME_MAX]; /* the family's canonical full name */
    int64_t r0, rows;
    bool transposed;
} bg_hf_piece_t;

/* One brigade parameter and its pieces, in row order. */
typedef struct bg_hf_entry {
    int param; /* graph parameter id */
    int n;     /* 1, 2 (gate, up) or 3 (q, k, v) */
    bg_hf_piece_t piece[3];
} bg_hf_entry_t;

typedef struct bg_hf_map {
    bg_hf_family_t family;
    int n;
    bg_hf_entry_t *e; /* every parameter the graph owns, in id order */
} bg_hf_map_t;

/* Llama when the graph has rmsnorm or swiglu layers, else GPT-2. */
bg_hf_family_t bg_hf_family_of(const bg_graph_t *g);

/*
 * The map of every parameter g owns (a head tied with share= owns none: HF
 * files tie it too). `merged`: Llama's q/k/v as one `qkv_proj` and gate/up
 * as one `gate_up_proj`. BG_ERR_INVALID naming the layer when one has no
 * place in the family's blocks; BG_ERR_NOMEM. *out set only on success.
 */
bg_status_t bg_hf_map_build(const bg_graph_t *g, bg_hf_family_t fam, bool merged, bg_hf_map_t *out);
void bg_hf_map_free(bg_hf_map_t *m);

/* Other spellings of an HF name a file may use: without the family's
 * prefix ("model.", or "transformer." added for GPT-2). "" when none. */
void bg_hf_alt_name(bg_hf_family_t fam, const char *name, char *out, size_t n);

/* Tensors HF files carry that are not parameters (attention mask buffers,
 * rotary tables): ignored without a word. */
bool bg_hf_is_buffer(const char *name);

#endif
