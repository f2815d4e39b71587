/*
 * tests/engine/test_tag.c -- the engine's tag layout (engine/tag.h): fields
 * round-trip at their limits without touching each other or the
 * transport's bits, and a value that does not fit is refused, never masked.
 */
#include "engine/tag.h"
#include "test_util.h"

int main(void)
{
    uint64_t t, u;
    CHECK_OK(bg_tag_edge(BG_TAG_GRAD, BG_TAG_MB_MAX, BG_TAG_CHUNK_MAX, BG_TAG_CHUNK_MAX, &t));
    CHECK(t <= BG_TP_TAG_MAX);
    CHECK_OK(bg_tag_edge(BG_TAG_ACT, BG_TAG_MB_MAX, BG_TAG_CHUNK_MAX, BG_TAG_CHUNK_MAX, &u));
    CHECK(t != u); /* kinds apart */
    CHECK_OK(bg_tag_edge(BG_TAG_ACT, 3, 1, 2, &t));
    CHECK_OK(bg_tag_edge(BG_TAG_ACT, 3, 2, 1, &u));
    CHECK(t != u); /* direction of the edge is part of the key */
    CHECK_OK(bg_tag_edge(BG_TAG_ACT, 4, 1, 2, &u));
    CHECK(t != u);
    CHECK_OK(bg_tag_param(BG_TAG_MB_MAX, BG_TAG_PARAM_MAX, &t));
    CHECK(t <= BG_TP_TAG_MAX);

    /* Out of range: an error naming the field; the output is untouched. */
    u = 42;
    CHECK(bg_tag_edge(BG_TAG_ACT, BG_TAG_MB_MAX + 1, 0, 1, &u) == BG_ERR_INVALID);
    CHECK(strstr(bg_last_error(), "micro-batch") != NULL);
    CHECK(bg_tag_edge(BG_TAG_ACT, 0, BG_TAG_CHUNK_MAX + 1, 1, &u) == BG_ERR_INVALID);
    CHECK(bg_tag_edge(BG_TAG_ACT, 0, 0, -1, &u) == BG_ERR_INVALID);
    CHECK(bg_tag_param(0, 1 << 24, &u) == BG_ERR_INVALID);
    CHECK(strstr(bg_last_error(), "parameter id") != NULL);
    CHECK(u == 42);
    return bg_test_finish("test_tag");
}
