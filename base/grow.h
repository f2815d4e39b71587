/*
 * base/grow.h -- the one way brigade grows an array: geometric capacity,
 * overflow-checked sizes, the old block kept intact when realloc fails.
 * Must not log or record an error message: callers know what the array is
 * and name it in their own bg_errorf.
 */
#ifndef BG_GROW_H
#define BG_GROW_H

#include <stdint.h>
#include <stdlib.h>

/*
 * Make *arr (of *cap elements of `elem` bytes) hold at least `need`
 * elements. Capacity doubles from at least 8, so appends cost O(1)
 * amortised. On success returns 0 and *arr and *cap may have moved or grown; on
 * overflow or out of memory returns -1 and leaves *arr and *cap untouched
 * (the caller still owns the old block). Cannot fail when need <= *cap.
 */
static inline int bg_grow(void *arr, size_t *cap, size_t need, size_t elem)
{
    void **p = (void **)arr;
    if (need <= *cap) return 0;
    size_t nc = *cap ? *cap : 8;
    while (nc < need) {
        if (nc > SIZE_MAX / 2) return -1;
        nc *= 2;
    }
    if (elem && nc > SIZE_MAX / elem) return -1;
    void *n = realloc(*p, nc * elem);
    if (!n) return -1;
    *p = n;
    *cap = nc;
    return 0;
}

#endif
