/*
 * tools/cmd_train.c -- `brigade train`: options, then either the launcher
 * (run by a person: spawn stages x dp local ranks) or one worker (run by
 * the launcher, srun or mpirun: rank variables in the environment).
 * Decides exit codes: 0 ok, 1 runtime failure, 2 bad usage.
 */
#include <errno.h>
#include <stdbool.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/schedule.h"
#include "engine/train.h"
#include "layers/backend.h"
#include "layers/graph.h"
#include "partition/plan_io.h"
#include "tools/commands.h"
#include "tools/launch.h"

static void train_usage(FILE *f)
{
    fprintf(f, "usage: brigade train MODEL.graph [options]\n"
               "\n"
               "Layout and schedule:\n"
               "  --stages S            pipeline stages (default 1)\n"
               "  --dp D                data-parallel replicas per stage (default 1)\n"
               "  --schedule NAME       gpipe | 1f1b | interleaved | zb-h1 (default 1f1b)\n"
               "  --chunks V            model chunks per rank, interleaved only (default 2)\n"
               "  --micro-batches M     micro-batches per step per replica (default: stages)\n"
               "  --batch N             global batch: samples or sequences per step (default 64)\n"
               "  --plan FILE           stage split from `brigade plan -o FILE`\n"
               "  --recompute           keep only chunk inputs; recompute activations in backward\n"
               "Run length and data:\n"
               "  --steps N             optimizer steps (default: from --epochs, else 100)\n"
               "  --epochs E            passes over the training split\n"
               "  --data SPEC           fashion-mnist[:DIR] | tokens:PREFIX | synthetic[:...]\n"
               "  --eval-every N        evaluate on the held-out split every N steps (0: at end)\n"
               "  --eval-batches N      batches per evaluation (0: the whole split)\n"
               "  --log-every N         progress line every N steps (default 10)\n"
               "  --metrics FILE        append one JSON object per log line\n"
               "Optimizer:\n"
               "  --optimizer NAME      adamw | sgd (default adamw)\n"
               "  --lr X                peak learning rate (default 1e-3)\n"
               "  --warmup N            linear warmup steps (default 0)\n"
               "  --min-lr-frac X       cosine decays to lr*X (default 0.1)\n"
               "  --weight-decay X      decoupled weight decay for matrices (default 0)\n"
               "  --momentum X          SGD momentum (default 0.9)\n"
               "  --clip X              clip gradients to global norm X (default off)\n"
               "  --seed N              initialisation and shuffling seed (default 1)\n"
               "Device:\n"
               "  --device cpu|cuda     backend (default cpu)\n"
               "  --dtype f32|bf16      compute dtype (bf16: CUDA only; fp32 master weights)\n"
               "Checkpoints and profiling:\n"
               "  --checkpoint-dir DIR  write checkpoints under DIR\n"
               "  --checkpoint-every N  every N steps (default: only at the end)\n"
               "  --resume              continue from DIR/latest (any earlier layout)\n"
               "  --init FILE           load weights by name from a safetensors file\n"
               "  --trace FILE          Chrome-trace/Perfetto JSON of every rank's actions\n"
               "Launching:\n"
               "  --hosts H1[:N],H2[:N] run ranks on these hosts over ssh\n"
               "  --hostfile FILE       one HOST[:N] per line\n"
               "  -h, --help            this help\n");
}

enum {
    O_STAGES = 256,
    O_DP,
    O_SCHED,
    O_CHUNKS,
    O_MB,
    O_BATCH,
    O_PLAN,
    O_RECOMP,
    O_STEPS,
    O_EPOCHS,
    O_DATA,
    O_EVAL,
    O_EVALB,
    O_LOG,
    O_METRICS,
    O_OPT,
    O_LR,
    O_WARM,
    O_MINLR,
    O_WD,
    O_MOM,
    O_CLIP,
    O_SEED,
    O_DEV,
    O_DTYPE,
    O_CKDIR,
    O_CKEVERY,
    O_RESUME,
    O_INIT,
    O_TRACE,
    O_HOSTS,
    O_HOSTFILE,
    O_SPLIT,
};

static const struct option train_opts[] = {
    {"stages", 1, 0, O_STAGES},
    {"dp", 1, 0, O_DP},
    {"schedule", 1, 0, O_SCHED},
    {"chunks", 1, 0, O_CHUNKS},
    {"micro-batches", 1, 0, O_MB},
    {"batch", 1, 0, O_BATCH},
    {"plan", 1, 0, O_PLAN},
    {"recompute", 0, 0, O_RECOMP},
    {"steps", 1, 0, O_STEPS},
    {"epochs", 1, 0, O_EPOCHS},
    {"data", 1, 0, O_DATA},
    {"eval-every", 1, 0, O_EVAL},
    {"eval-batches", 1, 0, O_EVALB},
    {"log-every", 1, 0, O_LOG},
    {"metrics", 1, 0, O_METRICS},
    {"optimizer", 1, 0, O_OPT},
    {"lr", 1, 0, O_LR},
    {"warmup", 1, 0, O_WARM},
    {"min-lr-frac", 1, 0, O_MINLR},
    {"weight-decay", 1, 0, O_WD},
    {"momentum", 1, 0, O_MOM},
    {"clip", 1, 0, O_CLIP},
    {"seed", 1, 0, O_SEED},
    {"device", 1, 0, O_DEV},
    {"dtype", 1, 0, O_DTYPE},
    {"checkpoint-dir", 1, 0, O_CKDIR},
    {"checkpoint-every", 1, 0, O_CKEVERY},
    {"resume", 0, 0, O_RESUME},
    {"init", 1, 0, O_INIT},
    {"trace", 1, 0, O_TRACE},
    {"hosts", 1, 0, O_HOSTS},
    {"hostfile", 1, 0, O_HOSTFILE},
    {"split-bw", 0, 0, O_SPLIT},
    {"help", 0, 0, 'h'},
    {0, 0, 0, 0},
};

/* Strict numeric parsing: the whole string, in range, or a usage error. */
static int parse_i64(const char *opt, const char *s, int64_t lo, int64_t hi, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "brigade train: --%s expects an integer in [%lld, %lld], got '%s'\n", opt,
                (long long)lo, (long long)hi, s);
        return 0;
    }
    *out = v;
    return 1;
}

static int parse_f(const char *opt, const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi)) {
        fprintf(stderr, "brigade train: --%s expects a number in [%g, %g], got '%s'\n", opt, lo, hi,
                s);
        return 0;
    }
    *out = v;
    return 1;
}

/*
 * --hosts "h1:2,h2" and/or --hostfile (one "HOST[:SLOTS]" per line, # comments)
 * into names and slot counts. Hosts without a count share the ranks the
 * counted ones leave, evenly. Fewer slots than ranks is a usage error.
 */
static int parse_hosts(const char *list, const char *file, int nranks, char **names, int *slots,
                       int *n)
{
    char buf[8192] = "";
    if (list)
        snprintf(buf, sizeof(buf), "%s", list);
    if (file) {
        FILE *f = fopen(file, "r");
        if (!f) {
            fprintf(stderr, "brigade train: cannot read --hostfile %s: %s\n", file,
                    strerror(errno));
            return 2;
        }
        char line[512];
        while (fgets(line, sizeof(line), f)) {
            char *hash = strchr(line, '#');
            if (hash)
                *hash = 0;
            char *tok = strtok(line, " \t\r\n");
            if (!tok)
                continue;
            size_t k = strlen(buf);
            snprintf(buf + k, sizeof(buf) - k, "%s%s", k ? "," : "", tok);
        }
        fclose(f);
    }
    int known = 0, unknown = 0;
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        if (*n >= 256) {
            fprintf(stderr, "brigade train: more than 256 hosts\n");
            return 2;
        }
        char *colon = strchr(tok, ':');
        int sl = 0;
        if (colon) {
            *colon = 0;
            char *end;
            long v = strtol(colon + 1, &end, 10);
            if (*end || v < 1 || v > 4096) {
                fprintf(stderr, "brigade train: bad slot count in host '%s:%s'\n", tok, colon + 1);
                return 2;
            }
            sl = (int)v;
            known += sl;
        } else {
            unknown++;
        }
        if (!*tok) {
            fprintf(stderr, "brigade train: empty host name in --hosts\n");
            return 2;
        }
        names[*n] = strdup(tok);
        slots[(*n)++] = sl;
    }
    if (!*n) {
        fprintf(stderr, "brigade train: --hosts/--hostfile names no host\n");
        return 2;
    }
    int left = nranks - known, share = unknown ? (left + unknown - 1) / unknown : 0;
    for (int i = 0; i < *n; i++)
        if (!slots[i])
            slots[i] = share > 0 ? share : 1;
    int total = 0;
    for (int i = 0; i < *n; i++)
        total += slots[i];
    if (total < nranks) {
        fprintf(stderr, "brigade train: %d host slots for %d ranks\n", total, nranks);
        return 2;
    }
    return 0;
}

/* Worker when a launcher (ours, srun, mpirun, torchrun) gave us a rank. */
static int is_worker(void)
{
    static const char *vars[] = {"BRIGADE_WORKER", "BRIGADE_RANK",         "RANK",
                                 "SLURM_PROCID",   "OMPI_COMM_WORLD_RANK", "PMI_RANK"};
    for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
        if (getenv(vars[i]))
            return 1;
    return 0;
}

/*
 * Catch bad input before spawning ranks: a malformed model, a batch that
 * does not split, a schedule that cannot be built. Each rank re-checks, but
 * a person should get one message and exit code 2, not S*D of them.
 */
static int preflight(const bg_train_conf_t *c)
{
    if (c->batch % (c->dp * c->micro_batches)) {
        fprintf(stderr,
                "brigade train: --batch %d is not divisible by dp (%d) x micro-batches (%d)\n",
                c->batch, c->dp, c->micro_batches);
        return 2;
    }
    bg_sched_t *s = NULL;
    bg_graph_t *g = NULL;
    int v = 1;
    bg_status_t st = bg_sched_resolve(c->schedule, c->stages, c->micro_batches, c->chunks, 0, &s);
    if (st == BG_OK)
        v = bg_sched_chunks_per_rank(s);
    if (st == BG_OK)
        st = bg_graph_parse_file(c->model, c->batch / (c->dp * c->micro_batches), &g);
    if (st == BG_OK && c->plan) {
        /* A plan made for another model (or an edited one) is bad input. */
        bg_plan_file_t pf;
        int L = bg_graph_n_layers(g);
        const char **names = malloc(sizeof(char *) * (size_t)L + 1);
        st = names ? bg_plan_load(c->plan, &pf) : bg_errorf(BG_ERR_NOMEM, "out of memory");
        for (int l = 0; st == BG_OK && l < L; l++)
            names[l] = bg_graph_layer(g, l)->spec.name;
        if (st == BG_OK) {
            st = bg_plan_file_check_layers(&pf, names, L);
            bg_plan_file_free(&pf);
        }
        free(names);
    }
    if (st == BG_OK && bg_graph_n_layers(g) < c->stages * v)
        st = bg_errorf(BG_ERR_INVALID,
                       "%s has %d layers, fewer than the %d chunks of %d stages x %d", c->model,
                       bg_graph_n_layers(g), c->stages * v, c->stages, v);
    bg_graph_free(g);
    bg_sched_free(s);
    if (st == BG_OK)
        return 0;
    fprintf(stderr, "brigade train: %s\n", bg_last_error());
    return 2;
}

int bg_cmd_train(int argc, char **argv)
{
    bg_train_conf_t c;
    bg_train_conf_default(&c);
    const char *hosts = NULL, *hostfile = NULL;
    int64_t iv;
    double fv;
    int mb_set = 0, layout_set = 0;
    optind = 1;
    opterr = 0;
    for (;;) {
        int idx = 0, o = getopt_long(argc, argv, "h", train_opts, &idx);
        if (o == -1)
            break;
        const char *name = o >= 256 ? train_opts[idx].name : "";
        switch (o) {
        case 'h':
            train_usage(stdout);
            return 0;
        case O_STAGES:
            layout_set = 1;
            if (!parse_i64(name, optarg, 1, 256, &iv))
                return 2;
            c.stages = (int)iv;
            break;
        case O_DP:
            layout_set = 1;
            if (!parse_i64(name, optarg, 1, 256, &iv))
                return 2;
            c.dp = (int)iv;
            break;
        case O_CHUNKS:
            layout_set = 1;
            if (!parse_i64(name, optarg, 1, 64, &iv))
                return 2;
            c.chunks = (int)iv;
            break;
        case O_MB:
            if (!parse_i64(name, optarg, 1, 65536, &iv))
                return 2;
            c.micro_batches = (int)iv;
            mb_set = 1;
            break;
        case O_BATCH:
            if (!parse_i64(name, optarg, 1, 1 << 24, &iv))
                return 2;
            c.batch = (int)iv;
            break;
        case O_STEPS:
            if (!parse_i64(name, optarg, 1, INT64_MAX / 2, &iv))
                return 2;
            c.steps = iv;
            break;
        case O_EPOCHS:
            if (!parse_f(name, optarg, 1e-6, 1e6, &fv))
                return 2;
            c.epochs = fv;
            break;
        case O_EVAL:
            if (!parse_i64(name, optarg, 0, INT64_MAX / 2, &iv))
                return 2;
            c.eval_every = iv;
            break;
        case O_EVALB:
            if (!parse_i64(name, optarg, 0, INT64_MAX / 2, &iv))
                return 2;
            c.eval_batches = iv;
            break;
        case O_LOG:
            if (!parse_i64(name, optarg, 1, INT64_MAX / 2, &iv))
                return 2;
            c.log_every = iv;
            break;
        case O_WARM:
            if (!parse_i64(name, optarg, 0, INT64_MAX / 2, &iv))
                return 2;
            c.optim.warmup = iv;
            break;
        case O_CKEVERY:
            if (!parse_i64(name, optarg, 1, INT64_MAX / 2, &iv))
                return 2;
            c.checkpoint_every = iv;
            break;
        case O_SEED:
            if (!parse_i64(name, optarg, 0, INT64_MAX, &iv))
                return 2;
            c.seed = (uint64_t)iv;
            break;
        case O_LR:
            if (!parse_f(name, optarg, 0, 1e3, &fv))
                return 2;
            c.optim.lr = (float)fv;
            break;
        case O_MINLR:
            if (!parse_f(name, optarg, 0, 1, &fv))
                return 2;
            c.optim.min_lr_frac = (float)fv;
            break;
        case O_WD:
            if (!parse_f(name, optarg, 0, 1e3, &fv))
                return 2;
            c.optim.weight_decay = (float)fv;
            break;
        case O_MOM:
            if (!parse_f(name, optarg, 0, 1, &fv))
                return 2;
            c.optim.momentum = (float)fv;
            break;
        case O_CLIP:
            if (!parse_f(name, optarg, 0, 1e9, &fv))
                return 2;
            c.optim.clip = (float)fv;
            break;
        case O_OPT:
            if (bg_optim_kind_parse(optarg, &c.optim.kind) != BG_OK) {
                fprintf(stderr, "brigade train: %s\n", bg_last_error());
                return 2;
            }
            break;
        case O_SCHED:
            layout_set = 1;
            c.schedule = optarg;
            break;
        case O_PLAN:
            c.plan = optarg;
            break;
        case O_RECOMP:
            c.recompute = true;
            break;
        case O_SPLIT:
            c.split_bw = true;
            break;
        case O_DATA:
            c.data = optarg;
            break;
        case O_METRICS:
            c.metrics = optarg;
            break;
        case O_DEV:
            c.device = optarg;
            break;
        case O_DTYPE:
            c.dtype = optarg;
            break;
        case O_CKDIR:
            c.checkpoint_dir = optarg;
            break;
        case O_RESUME:
            c.resume = true;
            break;
        case O_INIT:
            c.init = optarg;
            break;
        case O_TRACE:
            c.trace = optarg;
            break;
        case O_HOSTS:
            hosts = optarg;
            break;
        case O_HOSTFILE:
            hostfile = optarg;
            break;
        default:
            fprintf(stderr, "brigade train: unknown or incomplete option '%s'\n", argv[optind - 1]);
            train_usage(stderr);
            return 2;
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, "brigade train: expected exactly one MODEL file\n");
        train_usage(stderr);
        return 2;
    }
    c.model = argv[optind];
    if (c.plan) {
        /* The plan fixes the layout: stages, dp, chunks, micro-batches, batch. */
        bg_plan_file_t pf;
        if (bg_plan_load(c.plan, &pf) != BG_OK) {
            fprintf(stderr, "brigade train: %s\n", bg_last_error());
            return 2;
        }
        if (layout_set || mb_set) {
            fprintf(stderr,
                    "brigade train: --plan %s fixes --stages/--dp/--chunks/--schedule/"
                    "--micro-batches; drop them or drop --plan\n",
                    c.plan);
            bg_plan_file_free(&pf);
            return 2;
        }
        c.stages = pf.cfg.stages;
        c.dp = pf.cfg.dp;
        c.chunks = pf.cfg.chunks;
        c.micro_batches = pf.cfg.micro_batches;
        c.batch = (int)pf.global_batch;
        c.recompute = c.recompute || pf.cfg.recompute;
        c.schedule = bg_sched_kind_name(pf.cfg.schedule);
        bg_plan_file_free(&pf);
        mb_set = 1;
    }
    if (!mb_set)
        c.micro_batches = c.stages; /* the least that fills the pipeline */
    if (strcmp(c.device, "cpu") && strcmp(c.device, "cuda")) {
        fprintf(stderr, "brigade train: --device must be cpu or cuda, got '%s'\n", c.device);
        return 2;
    }
    if (strcmp(c.dtype, "f32") && strcmp(c.dtype, "bf16")) {
        fprintf(stderr, "brigade train: --dtype must be f32 or bf16, got '%s'\n", c.dtype);
        return 2;
    }
    if (!strcmp(c.dtype, "bf16") && !strcmp(c.device, "cpu")) {
        fprintf(stderr, "brigade train: --dtype bf16 needs --device cuda (the CPU backend is the "
                        "f32 reference)\n");
        return 2;
    }
    if (c.resume && !c.checkpoint_dir) {
        fprintf(stderr, "brigade train: --resume needs --checkpoint-dir\n");
        return 2;
    }
    if (access(c.model, R_OK) != 0) {
        fprintf(stderr, "brigade train: cannot read %s: %s\n", c.model, strerror(errno));
        return 2;
    }

    if (!is_worker() && preflight(&c) != 0)
        return 2;
    if (!is_worker() && !strcmp(c.device, "cuda") && !bg_backend_available(BG_DEV_CUDA)) {
        bg_backend_t *be = NULL;
        bg_status_t st = bg_backend_create(BG_DEV_CUDA, 0, &be); /* for the reason */
        bg_backend_destroy(be);
        fprintf(stderr, "brigade train: --device cuda: %s\n",
                st != BG_OK ? bg_last_error() : "no CUDA device");
        return 1;
    }

    if (is_worker()) {
        bg_status_t st = bg_train_run(&c);
        if (st == BG_OK)
            return 0;
        fprintf(stderr, "brigade: %s\n", bg_last_error());
        return st == BG_ERR_INVALID ? 2 : 1;
    }

    char *host_names[256];
    int host_slots[256], nhosts = 0;
    if ((hosts || hostfile) &&
        parse_hosts(hosts, hostfile, c.stages * c.dp, host_names, host_slots, &nhosts) != 0)
        return 2;
    char *wargv[512];
    int wn = 0;
    wargv[wn++] = "brigade";
    wargv[wn++] = "train";
    for (int i = 1; i < argc && wn < 510; i++) {
        if (!strncmp(argv[i], "--hosts", 7) || !strncmp(argv[i], "--hostfile", 10)) {
            if (!strchr(argv[i], '='))
                i++;
            continue;
        }
        wargv[wn++] = argv[i];
    }
    wargv[wn] = NULL;
    bg_launch_conf_t lc = {
        .nranks = c.stages * c.dp,
        .stages = c.stages,
        .argv = wargv,
        .exe = "/proc/self/exe",
        .tty = isatty(STDOUT_FILENO),
    };
    char self_exe[4096], master[256];
    if (nhosts) {
        ssize_t k = readlink("/proc/self/exe", self_exe, sizeof(self_exe) - 1);
        self_exe[k > 0 ? k : 0] = 0;
        bool all_loop = true;
        for (int i = 0; i < nhosts; i++)
            all_loop &= !strcmp(host_names[i], "127.0.0.1") || !strcmp(host_names[i], "localhost");
        /* Remote ranks reach the store at this machine's name unless told otherwise. */
        const char *ma = getenv("BRIGADE_MASTER_ADDR");
        if (ma)
            snprintf(master, sizeof(master), "%s", ma);
        else if (all_loop || gethostname(master, sizeof(master)) != 0)
            snprintf(master, sizeof(master), "127.0.0.1");
        lc.hosts = (const char *const *)host_names;
        lc.slots = host_slots;
        lc.nhosts = nhosts;
        lc.master_addr = master;
        lc.remote_exe = self_exe;
    }
    int rc = bg_launch_run(&lc);
    for (int i = 0; i < nhosts; i++)
        free(host_names[i]);
    return rc;
}
