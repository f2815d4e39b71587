/*
 * partition/json_util.h -- internal helpers for partition's JSON files
 * (profiles and plans): read a whole file, parse it with a line:column on
 * error, and fetch typed members with messages that name the file and key.
 * Internal to partition/; must not be included by other rooms.
 */
#ifndef BG_PARTITION_JSON_UTIL_H
#define BG_PARTITION_JSON_UTIL_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdint.h>

#include "base/status.h"
#include "layers/tensor.h"

/* Parse `path` (at most 256 MiB) into *out; BG_ERR_IO if unreadable,
 * BG_ERR_INVALID "path:LINE:COL: invalid JSON" if malformed. */
bg_status_t bg_json_load_file(const char *path, cJSON **out);
/* Parse text; `what` names it in messages. */
bg_status_t bg_json_parse(const char *text, size_t len, const char *what, cJSON **out);
/* Write `root` pretty-printed to `path`; BG_ERR_IO on failure. */
bg_status_t bg_json_save_file(const char *path, const cJSON *root);

/* Members: BG_ERR_INVALID "what: key 'k' missing / must be ..." */
bg_status_t bg_json_get_int(const cJSON *o, const char *k, const char *what, int64_t lo, int64_t hi,
                            int64_t *out);
bg_status_t bg_json_get_num(const cJSON *o, const char *k, const char *what, double lo, double *out);
bg_status_t bg_json_get_str(const cJSON *o, const char *k, const char *what, char *buf, size_t n);
bg_status_t bg_json_get_bool(const cJSON *o, const char *k, const char *what, bool *out);
/* A compute dtype spelled exactly as bg_dtype_name writes it (f32, bf16,
 * fp16): files keep one spelling, so aliases the CLI takes are refused. */
bg_status_t bg_json_get_dtype(const cJSON *o, const char *k, const char *what, bg_dtype_t *out);
/* Array member (may be empty). */
bg_status_t bg_json_get_array(const cJSON *o, const char *k, const char *what, const cJSON **out);

#endif
