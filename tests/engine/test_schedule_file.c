/*
 * tests/engine/test_schedule_file.c -- schedule files (`--schedule
 * file:PATH`): every table row's compute order written as a file loads back
 * as the identical schedule (transfers, ALLREDUCE, OPTIMIZER included);
 * refusals name the file line of the first bad action and why (header,
 * unknown action, chunk on the wrong rank, missing work, order, a deadlock
 * with its cycle); bg_sched_resolve checks the file's shape against the run.
 * Must NOT write outside /tmp.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/schedule.h"
#include "test_util.h"

/* s's compute lists in the file format, with an explicit placement map. */
static char *to_file(const bg_sched_t *s, size_t *len)
{
    char *buf = NULL;
    FILE *f = open_memstream(&buf, len);
    int p = bg_sched_ranks(s);
    fprintf(f, "brigade-schedule 1\n# written by the test\nranks %d\nmicro-batches %d\nchunks %d\n",
            p, bg_sched_microbatches(s), bg_sched_chunks_per_rank(s));
    fprintf(f, "placement map");
    for (int c = 0; c < bg_sched_chunks(s); c++)
        fprintf(f, " %d", bg_sched_chunk_rank(s, c));
    fprintf(f, "\n");
    for (int r = 0; r < p; r++) {
        fprintf(f, "rank %d\n", r);
        const bg_action_t *a = bg_sched_actions(s, r);
        for (size_t i = 0; i < bg_sched_len(s, r); i++)
            if (bg_act_is_compute(a[i].kind))
                fprintf(f, "  %s %d %d   # action %zu\n", bg_act_kind_name(a[i].kind), a[i].mb,
                        a[i].chunk, i);
    }
    fclose(f);
    return buf;
}

static char *printed(const bg_sched_t *s)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    CHECK_OK(bg_sched_print(s, f, BG_PRINT_COMM));
    fclose(f);
    return buf;
}

/* Every row at p = 3, m = 6, split and not: file round trip is identical. */
static void round_trip(void)
{
    for (int k = 0; k < BG_SCHED_KIND_COUNT; k++)
        for (int split = 0; split < 2; split++) {
            const bg_sched_desc_t *d = bg_sched_desc((bg_sched_kind_t)k);
            bg_sched_t *s = NULL, *back = NULL;
            CHECK_OK(bg_sched_generate(d->kind, 3, 6, d->chunks_default,
                                       split ? BG_SCHED_SPLIT_BW : 0, &s));
            if (!s)
                continue;
            if (bg_sched_flush_free(s)) { /* files hold one flushed step only */
                bg_sched_free(s);
                continue;
            }
            size_t len;
            char *text = to_file(s, &len);
            CHECK_OK(bg_sched_parse_file_text(text, len, "rt.txt", &back));
            if (back) {
                char *a = printed(s), *b = printed(back);
                CHECK_MSG(!strcmp(a, b), "%s: file round trip differs:\n%s\nvs\n%s", d->name, a, b);
                CHECK(!strcmp(bg_sched_name(back), "file"));
                free(a), free(b);
            }
            bg_sched_free(back);
            bg_sched_free(s);
            free(text);
        }
}

static const char *head = "brigade-schedule 1\nranks 2\nmicro-batches 2\n";

/* Parsing `body` after the header must fail mentioning every needle. */
#define EXPECT_REFUSED(body, ...) refused(__LINE__, body, (const char *[]){__VA_ARGS__, NULL})
static void refused(int line, const char *body, const char **needles)
{
    char text[2048];
    snprintf(text, sizeof(text), "%s%s", head, body);
    bg_sched_t *s = NULL;
    bg_status_t st = bg_sched_parse_file_text(text, strlen(text), "bad.txt", &s);
    CHECK_MSG(st == BG_ERR_INVALID && !s, "line %d: accepted", line);
    for (int i = 0; needles[i]; i++)
        CHECK_MSG(strstr(bg_last_error(), needles[i]), "line %d: '%s' lacks '%s'", line,
                  bg_last_error(), needles[i]);
    bg_sched_free(s);
}

/* A valid 2-rank file: rank 0 mixes B/W, rank 1 fuses. Lines 4.. below. */
#define GOOD0 "rank 0\nF 0 0\nF 1 0\nB 0 0\nW 0 0\nB 1 0\nW 1 0\n"
#define GOOD1 "rank 1\nF 0 1\nBW 0 1\nF 1 1\nBW 1 1\n"

static void refusals(void)
{
    bg_sched_t *s = NULL;
    char text[1024];
    snprintf(text, sizeof(text), "%s%s%s", head, GOOD0, GOOD1);
    CHECK_OK(bg_sched_parse_file_text(text, strlen(text), "good.txt", &s));
    bg_sched_free(s);
    s = NULL;
    CHECK(bg_sched_parse_file_text("ranks 2\n", 8, "h.txt", &s) == BG_ERR_INVALID);
    CHECK(strstr(bg_last_error(), "h.txt:1:") && strstr(bg_last_error(), "brigade-schedule 1"));
    EXPECT_REFUSED("colour blue\n", "bad.txt:4:", "unknown header line 'colour'");
    EXPECT_REFUSED("rank 0\nF 0 0\nSEND 0 0\n", "bad.txt:6:", "unknown action 'SEND'");
    EXPECT_REFUSED("rank 0\nF 0 1\n", "bad.txt:5:", "chunk 1 runs on rank 1");
    EXPECT_REFUSED("rank 0\nF 2 0\n", "bad.txt:5:", "micro-batch must be an integer in 0..1");
    EXPECT_REFUSED("rank 3\n", "bad.txt:4:", "rank must be an integer in 0..1");
    EXPECT_REFUSED(GOOD0 "rank 0\n", "bad.txt:11:", "rank 0 listed twice");
    EXPECT_REFUSED("placement map 0 1 1\nrank 0\n", "bad.txt:5:", "lists 3 ranks for 2 chunks");
    /* Missing work names what is missing. */
    EXPECT_REFUSED("rank 0\nF 0 0\nF 1 0\nB 0 0\nW 0 0\n" GOOD1, "bad.txt",
                   "no B (or BW)(mb=1, c=0)");
    EXPECT_REFUSED("rank 0\nF 0 0\nF 1 0\nB 0 0\nB 1 0\n" GOOD1, "bad.txt",
                   "no W (or BW)(mb=0, c=0)");
    /* Order: B before its F, named at its line (6). */
    EXPECT_REFUSED("rank 0\nF 0 0\nB 1 0\nF 1 0\nB 0 0\nW 0 0\nW 1 0\n" GOOD1,
                   "bad.txt:6:", "B(mb=1, c=0)", "runs before F(mb=1, c=0)");
    /* W out of micro-batch order. */
    EXPECT_REFUSED("rank 0\nF 0 0\nF 1 0\nB 0 0\nB 1 0\nW 1 0\nW 0 0\n" GOOD1,
                   "bad.txt:9:", "out of micro-batch order");
    /* Deadlock: rank 0 waits for mb 0's gradient before forwarding mb 1 while
     * rank 1 runs both forwards first; the cycle is named, at rank 0's wait
     * for the gradient (attached to B 0 0 at line 6). */
    EXPECT_REFUSED("rank 0\nF 0 0\nB 0 0\nF 1 0\nW 0 0\nB 1 0\nW 1 0\n"
                   "rank 1\nF 0 1\nF 1 1\nBW 0 1\nBW 1 1\n",
                   "bad.txt:6:", "deadlock", "cycle of waits: rank 0", "(back to rank 0)");
}

/* bg_sched_resolve: a table name or a file, whose shape must be the run's. */
static void resolve(void)
{
    char path[64];
    snprintf(path, sizeof(path), "/tmp/bg_sched_file_%d.txt", (int)getpid());
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (!f)
        return;
    fprintf(f, "%s%s%s", head, GOOD0, GOOD1);
    fclose(f);
    char name[80];
    snprintf(name, sizeof(name), "file:%s", path);
    bg_sched_t *s = NULL;
    CHECK_OK(bg_sched_resolve(name, 2, 2, 0, 0, &s));
    CHECK(s && bg_sched_ranks(s) == 2 && bg_sched_chunks_per_rank(s) == 1);
    bg_sched_free(s);
    s = NULL;
    CHECK(bg_sched_resolve(name, 3, 2, 0, 0, &s) == BG_ERR_INVALID && !s);
    CHECK(strstr(bg_last_error(), "is for 2 ranks") && strstr(bg_last_error(), "3 stages"));
    CHECK(bg_sched_resolve("file:/nonexistent/x.txt", 2, 2, 0, 0, &s) == BG_ERR_IO);
    CHECK(strstr(bg_last_error(), "/nonexistent/x.txt") != NULL);
    CHECK_OK(bg_sched_resolve("zb-v", 2, 4, 0, 0, &s));
    CHECK(s && bg_sched_chunks_per_rank(s) == 2 && !strcmp(bg_sched_name(s), "zb-v"));
    bg_sched_free(s);
    s = NULL;
    CHECK(bg_sched_resolve("dualpipev", 2, 3, 0, 0, &s) == BG_ERR_INVALID && !s);
    CHECK(bg_sched_resolve("nope", 2, 3, 0, 0, &s) == BG_ERR_INVALID && !s);
    unlink(path);
}

int main(void)
{
    round_trip();
    refusals();
    resolve();
    return bg_test_finish("test_schedule_file");
}
