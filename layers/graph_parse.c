/*
 * layers/graph_parse.c -- the `.graph` language (docs/graph-format.md):
 * lexer, expression evaluator, and a statement interpreter that unrolls
 * `repeat` by re-reading its body, building the graph as it goes.
 *
 * Every failure is an error at a source position (FILE:LINE:COL, the line,
 * a caret), never a crash: input sizes, nesting, expansion, dimensions and
 * parameter counts are all bounded (graph.h limits), so no input can make
 * it hang or allocate without bound.
 * Must not print, exit, or know about schedules, stages or backends.
 */
#include "layers/graph_impl.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- tokens */

typedef enum { T_EOF, T_NL, T_IDENT, T_INT, T_FLOAT, T_PUNCT } tok_kind_t;

typedef struct tok {
    tok_kind_t k;
    char c;            /* T_PUNCT: the character */
    uint32_t off, len; /* source bytes */
    int line, col;
    int64_t i;         /* T_INT */
    double f;          /* T_FLOAT */
} tok_t;

typedef struct val {
    bool is_int;
    int64_t i;
    double f; /* also set for ints */
} val_t;

#define KIND_SLOTS 32 /* auto-name counters per scope: kinds, then `repeat` */

typedef struct scope {
    char prefix[BG_NAME_MAX]; /* "block.3." ("" at top level) */
    bg_strmap_t names;        /* layer and repeat labels used in this scope */
    int auto_count[KIND_SLOTS];
} scope_t;

typedef struct parser {
    const char *src;
    size_t len;
    const char *fname;
    int64_t batch;

    tok_t *tok;
    int ntok, cap_tok;
    int pos;

    bg_graph_t *g;
    bg_strmap_t env;    /* tensor binding name -> tensor id (latest binding) */
    bg_strmap_t consts; /* let name -> index into cval */
    val_t *cval;
    int ncval, cap_cval;

    scope_t scope[BG_GRAPH_MAX_DEPTH + 1];
    int depth; /* index of the innermost scope */
    int64_t steps;
    int expr_depth;
    bool any_stmt;
} parser_t;

static const char *const keywords[] = {"model", "let", "input", "repeat", "as", "true", "false"};

static bool is_keyword(const char *s)
{
    for (size_t i = 0; i < sizeof(keywords) / sizeof(keywords[0]); i++)
        if (!strcmp(s, keywords[i])) return true;
    return false;
}

/* ---------------------------------------------------------------- errors */

/* Append src line `line` (1-based) and a caret under `col` to buf. The line
 * is windowed around the column so a long line stays readable, and control
 * bytes are shown as '?' so a message never carries terminal escapes. */
static void render_line(const parser_t *p, int line, int col, char *buf, size_t n)
{
    size_t s = 0;
    for (int l = 1; l < line && s < p->len; s++)
        if (p->src[s] == '\n') l++;
    size_t e = s;
    while (e < p->len && p->src[e] != '\n') e++;
    if (e > s && p->src[e - 1] == '\r') e--;
    size_t c = (size_t)(col > 0 ? col - 1 : 0); /* caret offset within the line */
    size_t ws = s, we = e;
    const size_t W = 160;
    if (e - s > W) {
        ws = s + (c > W / 2 ? c - W / 2 : 0);
        if (ws > e) ws = e;
        we = ws + W < e ? ws + W : e;
    }
    char text[200], caret[200];
    size_t t = 0, k = 0;
    if (ws > s) {
        memcpy(text, "...", 3);
        memcpy(caret, "   ", 3);
        t = k = 3;
    }
    for (size_t i = ws; i < we; i++) {
        unsigned char ch = (unsigned char)p->src[i];
        text[t++] = ch == '\t' || (ch >= 0x20 && ch != 0x7f) ? (char)ch : '?';
        if (i < s + c) caret[k++] = ch == '\t' ? '\t' : ' ';
    }
    if (we < e) {
        memcpy(text + t, "...", 3);
        t += 3;
    }
    text[t] = 0;
    caret[k++] = '^';
    caret[k] = 0;
    snprintf(buf, n, "\n%s\n%s", text, caret);
}

static bg_status_t perr_at(const parser_t *p, int line, int col, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static bg_status_t perr_at(const parser_t *p, int line, int col, const char *fmt, ...)
{
    char msg[512], where[420];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    render_line(p, line, col, where, sizeof(where));
    return bg_errorf(BG_ERR_INVALID, "%s:%d:%d: error: %s%s", p->fname, line, col, msg, where);
}

#define perr(p, t, ...) perr_at((p), (t)->line, (t)->col, __VA_ARGS__)

/* A token as users see it in messages. */
static const char *tok_desc(const parser_t *p, const tok_t *t, char *buf, size_t n)
{
    if (t->k == T_EOF) return "end of file";
    if (t->k == T_NL) return "end of line";
    int len = t->len > 40 ? 40 : (int)t->len;
    snprintf(buf, n, "'%.*s%s'", len, p->src + t->off, t->len > 40 ? "..." : "");
    return buf;
}

/* Closest candidate within the typo budget of `name`, or NULL. Ties go to
 * the alphabetically first so messages do not depend on hash order. */
static const char *best_match(const char *name, const char *cand, const char *best, int *bestd)
{
    int d = bg_edit_distance(name, cand, bg_typo_budget(name));
    if (d > bg_typo_budget(name) || d == 0) return best;
    if (!best || d < *bestd || (d == *bestd && strcmp(cand, best) < 0)) {
        *bestd = d;
        return cand;
    }
    return best;
}

static const char *suggest_map(const bg_strmap_t *m, const char *name)
{
    const char *best = NULL;
    int bestd = 0;
    for (size_t i = 0; i < m->cap; i++)
        if (m->e[i].key) best = best_match(name, m->e[i].key, best, &bestd);
    return best;
}

static const char *suggest_list(const char *const *list, int n, const char *name)
{
    const char *best = NULL;
    int bestd = 0;
    for (int i = 0; i < n; i++) best = best_match(name, list[i], best, &bestd);
    return best;
}

/* "; did you mean 'x'?" or "" -- into buf. */
static const char *dym(const char *s, char *buf, size_t n)
{
    if (!s) return "";
    snprintf(buf, n, "; did you mean '%s'?", s);
    return buf;
}

/* ---------------------------------------------------------------- lexer */

static bg_status_t push_tok(parser_t *p, const tok_t *t)
{
    if (p->ntok == p->cap_tok) {
        int nc = p->cap_tok ? p->cap_tok * 2 : 256;
        tok_t *nt = realloc(p->tok, (size_t)nc * sizeof(*nt));
        if (!nt) return bg_errorf(BG_ERR_NOMEM, "%s: out of memory reading tokens", p->fname);
        p->tok = nt;
        p->cap_tok = nc;
    }
    p->tok[p->ntok++] = *t;
    return BG_OK;
}

static bool is_ident_start(int c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
static bool is_digit(int c) { return c >= '0' && c <= '9'; }

/* Reject over-long lines before anything else: they bound every later
 * column and the message renderer. */
static bg_status_t check_lines(const parser_t *p)
{
    int line = 1;
    size_t start = 0;
    for (size_t i = 0; i <= p->len; i++) {
        if (i == p->len || p->src[i] == '\n') {
            if (i - start > BG_GRAPH_MAX_LINE)
                return perr_at(p, line, BG_GRAPH_MAX_LINE + 1,
                               "line is longer than %d characters", BG_GRAPH_MAX_LINE);
            line++;
            start = i + 1;
        }
    }
    return BG_OK;
}

/* Scan a number at src[i]: INT (digits) or FLOAT (digits.digits, exponent). */
static bg_status_t lex_number(parser_t *p, size_t i, tok_t *t)
{
    size_t j = i;
    bool is_float = false;
    while (j < p->len && is_digit(p->src[j])) j++;
    /* A '.' is part of the number only before a digit: "block.0.fc" stays a path. */
    if (j + 1 < p->len && p->src[j] == '.' && is_digit(p->src[j + 1])) {
        is_float = true;
        j++;
        while (j < p->len && is_digit(p->src[j])) j++;
    }
    if (j < p->len && (p->src[j] == 'e' || p->src[j] == 'E')) {
        size_t k = j + 1;
        if (k < p->len && (p->src[k] == '+' || p->src[k] == '-')) k++;
        if (k < p->len && is_digit(p->src[k])) {
            is_float = true;
            j = k;
            while (j < p->len && is_digit(p->src[j])) j++;
        }
    }
    t->len = (uint32_t)(j - i);
    char buf[64];
    if (t->len >= sizeof(buf)) return perr(p, t, "number is too long");
    memcpy(buf, p->src + i, t->len);
    buf[t->len] = 0;
    if (is_float) {
        t->k = T_FLOAT;
        errno = 0;
        t->f = strtod(buf, NULL);
        if (errno == ERANGE && !isfinite(t->f)) return perr(p, t, "number %s is out of range", buf);
        if (!isfinite(t->f)) return perr(p, t, "number %s is out of range", buf);
        return BG_OK;
    }
    t->k = T_INT;
    t->i = 0;
    for (size_t k = 0; k < t->len; k++)
        if (__builtin_mul_overflow(t->i, 10, &t->i) ||
            __builtin_add_overflow(t->i, buf[k] - '0', &t->i))
            return perr(p, t, "integer %s is too large (limit %lld)", buf, (long long)INT64_MAX);
    return BG_OK;
}

static bg_status_t lex(parser_t *p)
{
    bg_status_t st = check_lines(p);
    if (st != BG_OK) return st;
    int line = 1;
    size_t ls = 0; /* offset of the current line's first byte */
    size_t i = 0;
    while (i < p->len) {
        unsigned char c = (unsigned char)p->src[i];
        tok_t t = {.off = (uint32_t)i, .len = 1, .line = line, .col = (int)(i - ls) + 1};
        if (c == '\n') {
            t.k = T_NL;
            if ((st = push_tok(p, &t)) != BG_OK) return st;
            line++;
            ls = ++i;
            continue;
        }
        if (c == ' ' || c == '\t' || c == '\r') {
            i++;
            continue;
        }
        if (c == '#') {
            while (i < p->len && p->src[i] != '\n') i++;
            continue;
        }
        if (is_ident_start(c)) {
            size_t j = i;
            while (j < p->len && (is_ident_start(p->src[j]) || is_digit(p->src[j]))) j++;
            t.k = T_IDENT;
            t.len = (uint32_t)(j - i);
            if (t.len > BG_GRAPH_MAX_IDENT)
                return perr(p, &t, "name is longer than %d characters", BG_GRAPH_MAX_IDENT);
            i = j;
        } else if (is_digit(c)) {
            if ((st = lex_number(p, i, &t)) != BG_OK) return st;
            i += t.len;
        } else if (strchr("=()[]{},:+-*/.", c) && c) {
            t.k = T_PUNCT;
            t.c = (char)c;
            i++;
        } else if (c >= 0x21 && c < 0x7f) {
            return perr(p, &t, "unexpected character '%c'", c);
        } else {
            return perr(p, &t, "unexpected byte 0x%02x (graph files are ASCII outside comments)", c);
        }
        if ((st = push_tok(p, &t)) != BG_OK) return st;
    }
    tok_t e = {.k = T_EOF, .off = (uint32_t)p->len, .len = 0, .line = line,
               .col = (int)(p->len - ls) + 1};
    /* A file ending in a newline: place EOF just after the last line's text
     * so messages show that line rather than an empty one. */
    if (line > 1 && ls == p->len) {
        size_t s = ls - 1;
        while (s > 0 && p->src[s - 1] != '\n') s--;
        size_t end = ls - 1;
        if (end > s && p->src[end - 1] == '\r') end--;
        e.line = line - 1;
        e.col = (int)(end - s) + 1;
    }
    return push_tok(p, &e);
}

/* ---------------------------------------------------------------- helpers */

static const tok_t *cur(const parser_t *p) { return &p->tok[p->pos]; }
static const tok_t *peek(const parser_t *p, int k)
{
    int i = p->pos + k;
    return &p->tok[i < p->ntok ? i : p->ntok - 1];
}
static void advance(parser_t *p)
{
    if (p->tok[p->pos].k != T_EOF) p->pos++;
}
static bool is_punct(const tok_t *t, char c) { return t->k == T_PUNCT && t->c == c; }
static bool is_word(const parser_t *p, const tok_t *t, const char *w)
{
    return t->k == T_IDENT && t->len == strlen(w) && !memcmp(p->src + t->off, w, t->len);
}
static void tok_text(const parser_t *p, const tok_t *t, char *buf, size_t n)
{
    size_t l = t->len < n - 1 ? t->len : n - 1;
    memcpy(buf, p->src + t->off, l);
    buf[l] = 0;
}
static void skip_nl(parser_t *p)
{
    while (cur(p)->k == T_NL) advance(p);
}

/* Consume punctuation c or fail with "expected 'c' <context>". */
static bg_status_t expect_punct(parser_t *p, char c, const char *context)
{
    const tok_t *t = cur(p);
    if (is_punct(t, c)) {
        advance(p);
        return BG_OK;
    }
    char b[64];
    return perr(p, t, "expected '%c' %s, found %s", c, context, tok_desc(p, t, b, sizeof(b)));
}

/* A user-chosen name (tensor, constant, label): an identifier, no keyword. */
static bg_status_t expect_name(parser_t *p, const char *what, char *out, size_t n)
{
    const tok_t *t = cur(p);
    char b[64];
    if (t->k != T_IDENT)
        return perr(p, t, "expected %s, found %s", what, tok_desc(p, t, b, sizeof(b)));
    tok_text(p, t, out, n);
    if (is_keyword(out)) return perr(p, t, "'%s' is a keyword and cannot be %s", out, what);
    advance(p);
    return BG_OK;
}

/* ---------------------------------------------------------------- expressions */

static bg_status_t parse_sum(parser_t *p, val_t *out);

static val_t vint(int64_t i) { return (val_t){.is_int = true, .i = i, .f = (double)i}; }
static val_t vflt(double f) { return (val_t){.is_int = false, .i = 0, .f = f}; }

static bg_status_t lookup_const(parser_t *p, const tok_t *t, val_t *out)
{
    char name[BG_GRAPH_MAX_IDENT + 1], b[96];
    tok_text(p, t, name, sizeof(name));
    if (!strcmp(name, "B")) {
        *out = vint(p->batch);
        return BG_OK;
    }
    const int64_t *ix = bg_strmap_get(&p->consts, name);
    if (ix) {
        *out = p->cval[*ix];
        return BG_OK;
    }
    if (bg_strmap_get(&p->env, name))
        return perr(p, t, "'%s' is a tensor, not a constant (sizes are numbers or let constants)",
                    name);
    const char *s = suggest_map(&p->consts, name);
    if (!s && bg_edit_distance(name, "B", bg_typo_budget(name)) <= bg_typo_budget(name)) s = "B";
    return perr(p, t, "unknown constant '%s'%s", name, dym(s, b, sizeof(b)));
}

static bg_status_t parse_primary(parser_t *p, val_t *out)
{
    const tok_t *t = cur(p);
    char b[64];
    bg_status_t st;
    if (t->k == T_INT) {
        *out = vint(t->i);
        advance(p);
        return BG_OK;
    }
    if (t->k == T_FLOAT) {
        *out = vflt(t->f);
        advance(p);
        return BG_OK;
    }
    if (t->k == T_IDENT) {
        if (is_word(p, t, "true") || is_word(p, t, "false"))
            return perr(p, t, "expected a number here, found %s", tok_desc(p, t, b, sizeof(b)));
        if ((st = lookup_const(p, t, out)) != BG_OK) return st;
        advance(p);
        return BG_OK;
    }
    if (is_punct(t, '(')) {
        if (++p->expr_depth > BG_GRAPH_MAX_EXPR_DEPTH)
            return perr(p, t, "expression nested deeper than %d", BG_GRAPH_MAX_EXPR_DEPTH);
        advance(p);
        if ((st = parse_sum(p, out)) != BG_OK) return st;
        p->expr_depth--;
        return expect_punct(p, ')', "to close the parenthesis");
    }
    return perr(p, t, "expected a number, a constant or '(', found %s", tok_desc(p, t, b, sizeof(b)));
}

static bg_status_t parse_unary(parser_t *p, val_t *out)
{
    const tok_t *t = cur(p);
    if (!is_punct(t, '-') && !is_punct(t, '+')) return parse_primary(p, out);
    if (++p->expr_depth > BG_GRAPH_MAX_EXPR_DEPTH)
        return perr(p, t, "expression nested deeper than %d", BG_GRAPH_MAX_EXPR_DEPTH);
    advance(p);
    bg_status_t st = parse_unary(p, out);
    if (st != BG_OK) return st;
    p->expr_depth--;
    if (t->c == '+') return BG_OK;
    if (!out->is_int) {
        out->f = -out->f;
        return BG_OK;
    }
    if (out->i == INT64_MIN) return perr(p, t, "integer overflow in expression");
    *out = vint(-out->i);
    return BG_OK;
}

/* a OP b for OP in + - * /, at operator token t: integers stay exact (or
 * fail on overflow); a division that does not come out even is a float. */
static bg_status_t apply_op(parser_t *p, const tok_t *t, val_t a, val_t b, val_t *out)
{
    char op = t->c;
    if (op == '/' && (b.is_int ? b.i == 0 : b.f == 0.0)) return perr(p, t, "division by zero");
    if (a.is_int && b.is_int) {
        int64_t r;
        bool ovf = false;
        switch (op) {
        case '+': ovf = __builtin_add_overflow(a.i, b.i, &r); break;
        case '-': ovf = __builtin_sub_overflow(a.i, b.i, &r); break;
        case '*': ovf = __builtin_mul_overflow(a.i, b.i, &r); break;
        default:
            if (a.i == INT64_MIN && b.i == -1) ovf = true;
            else if (a.i % b.i) {
                *out = vflt((double)a.i / (double)b.i);
                return BG_OK;
            } else r = a.i / b.i;
        }
        if (ovf) return perr(p, t, "integer overflow in expression");
        *out = vint(r);
        return BG_OK;
    }
    double r = op == '+' ? a.f + b.f : op == '-' ? a.f - b.f : op == '*' ? a.f * b.f : a.f / b.f;
    if (!isfinite(r)) return perr(p, t, "expression overflows (result is not a finite number)");
    *out = vflt(r);
    return BG_OK;
}

static bg_status_t parse_product(parser_t *p, val_t *out)
{
    bg_status_t st = parse_unary(p, out);
    while (st == BG_OK && (is_punct(cur(p), '*') || is_punct(cur(p), '/'))) {
        const tok_t *op = cur(p);
        val_t b;
        advance(p);
        if ((st = parse_unary(p, &b)) == BG_OK) st = apply_op(p, op, *out, b, out);
    }
    return st;
}

static bg_status_t parse_sum(parser_t *p, val_t *out)
{
    bg_status_t st = parse_product(p, out);
    while (st == BG_OK && (is_punct(cur(p), '+') || is_punct(cur(p), '-'))) {
        const tok_t *op = cur(p);
        val_t b;
        advance(p);
        if ((st = parse_product(p, &b)) == BG_OK) st = apply_op(p, op, *out, b, out);
    }
    return st;
}

static bg_status_t parse_expr(parser_t *p, val_t *out)
{
    p->expr_depth = 0;
    return parse_sum(p, out);
}

/* An EXPR that must be an integer (sizes, counts). Integral floats such as
 * 1e3 are accepted; 2.5 or 768/5 are not. */
static bg_status_t parse_int_expr(parser_t *p, const char *what, int64_t *out)
{
    const tok_t *t = cur(p);
    val_t v;
    bg_status_t st = parse_expr(p, &v);
    if (st != BG_OK) return st;
    if (!v.is_int) {
        if (v.f != floor(v.f) || fabs(v.f) > 9007199254740992.0)
            return perr(p, t, "%s must be an integer, got %g", what, v.f);
        v = vint((int64_t)v.f);
    }
    *out = v.i;
    return BG_OK;
}

/* ---------------------------------------------------------------- scopes */

static bg_status_t push_scope(parser_t *p, const tok_t *at, const char *label, int64_t iter)
{
    const scope_t *parent = &p->scope[p->depth];
    scope_t *s = &p->scope[p->depth + 1];
    memset(s, 0, sizeof(*s));
    char prefix[BG_NAME_MAX + 32];
    int n = snprintf(prefix, sizeof(prefix), "%s%s.%lld.", parent->prefix, label, (long long)iter);
    if (n < 0 || (size_t)n >= sizeof(s->prefix))
        return perr(p, at, "layer paths under '%s%s' get longer than %d characters",
                    parent->prefix, label, BG_NAME_MAX - 1);
    memcpy(s->prefix, prefix, (size_t)n + 1);
    p->depth++;
    return BG_OK;
}

static void pop_scope(parser_t *p)
{
    bg_strmap_free(&p->scope[p->depth].names);
    p->depth--;
}

/* Claim a name in the current scope: `label` when given (must be free),
 * else the first free of `base`, `base_1`, `base_2`... (`base_0`, `base_1`...
 * when `numbered`), counting in slot `slot` of the scope. */
static bg_status_t claim_name(parser_t *p, const tok_t *at, const char *label, const char *base,
                              int slot, bool numbered, char *out, size_t n)
{
    scope_t *s = &p->scope[p->depth];
    if (label[0]) {
        if (bg_strmap_get(&s->names, label))
            return perr(p, at, "name '%s%s' is already used in this scope", s->prefix, label);
        snprintf(out, n, "%s", label);
    } else {
        for (;;) {
            int k = s->auto_count[slot]++;
            if (k == 0 && !numbered) snprintf(out, n, "%s", base);
            else snprintf(out, n, "%s_%d", base, k);
            if (!bg_strmap_get(&s->names, out)) break;
        }
    }
    return bg_strmap_put(&s->names, out, 1);
}

/* ---------------------------------------------------------------- statements */

static bg_status_t parse_block(parser_t *p, const tok_t *open);

static bg_status_t stmt_model(parser_t *p, const tok_t *kw)
{
    if (p->any_stmt || p->depth > 0)
        return perr(p, kw, "'model' must be the first statement of the file");
    advance(p);
    const tok_t *first = cur(p), *last = NULL;
    /* NAME may contain '-' and '.' ("gpt2-124m"): join adjacent tokens. */
    while (cur(p)->k == T_IDENT || cur(p)->k == T_INT || cur(p)->k == T_FLOAT ||
           is_punct(cur(p), '-') || is_punct(cur(p), '.')) {
        if (last && cur(p)->off != last->off + last->len) break;
        last = cur(p);
        advance(p);
    }
    char b[64];
    if (!last || first->k != T_IDENT)
        return perr(p, first, "expected a model name, found %s", tok_desc(p, first, b, sizeof(b)));
    size_t n = last->off + last->len - first->off;
    if (n >= sizeof(p->g->model))
        return perr(p, first, "model name is longer than %d characters", BG_NAME_MAX - 1);
    memcpy(p->g->model, p->src + first->off, n);
    p->g->model[n] = 0;
    return BG_OK;
}

static bg_status_t stmt_let(parser_t *p)
{
    advance(p);
    const tok_t *nt = cur(p);
    char name[BG_GRAPH_MAX_IDENT + 1];
    bg_status_t st = expect_name(p, "a constant's name", name, sizeof(name));
    if (st != BG_OK) return st;
    if (!strcmp(name, "B"))
        return perr(p, nt, "'B' is the batch size (--batch) and cannot be redefined");
    if ((st = expect_punct(p, '=', "after the constant's name")) != BG_OK) return st;
    val_t v;
    if ((st = parse_expr(p, &v)) != BG_OK) return st;
    int64_t *ix = bg_strmap_get(&p->consts, name);
    if (ix) {
        p->cval[*ix] = v; /* rebinding, like tensors: later uses see the new value */
        return BG_OK;
    }
    if (p->ncval == p->cap_cval) {
        int nc = p->cap_cval ? p->cap_cval * 2 : 16;
        val_t *nv = realloc(p->cval, (size_t)nc * sizeof(*nv));
        if (!nv) return bg_errorf(BG_ERR_NOMEM, "%s: out of memory", p->fname);
        p->cval = nv;
        p->cap_cval = nc;
    }
    if ((st = bg_strmap_put(&p->consts, name, p->ncval)) != BG_OK) return st;
    p->cval[p->ncval++] = v;
    return BG_OK;
}

/* One dimension of a shape: integer in [1, BG_GRAPH_MAX_DIM]. */
static bg_status_t parse_dim(parser_t *p, int64_t *out)
{
    const tok_t *t = cur(p);
    int64_t d;
    bg_status_t st = parse_int_expr(p, "a dimension", &d);
    if (st != BG_OK) return st;
    if (d < 1 || d > BG_GRAPH_MAX_DIM)
        return perr(p, t, "dimension %lld is out of range (1 to %lld)", (long long)d,
                    (long long)BG_GRAPH_MAX_DIM);
    *out = d;
    return BG_OK;
}

/* Elements of a shape, or -1 when they exceed BG_GRAPH_MAX_NUMEL. */
static int64_t checked_numel(const bg_shape_t *s)
{
    int64_t n = 1;
    for (int i = 0; i < s->ndim; i++) {
        if (s->d[i] < 1 || s->d[i] > BG_GRAPH_MAX_DIM) return -1;
        if (__builtin_mul_overflow(n, s->d[i], &n) || n > BG_GRAPH_MAX_NUMEL) return -1;
    }
    return n;
}

static bg_status_t stmt_input(parser_t *p, const tok_t *kw)
{
    if (p->depth > 0) return perr(p, kw, "'input' is only allowed outside repeat blocks");
    advance(p);
    const tok_t *nt = cur(p);
    char b[96];
    bg_graph_input_t in;
    memset(&in, 0, sizeof(in));
    in.line = kw->line;
    in.col = kw->col;
    bg_status_t st = expect_name(p, "an input's name", in.name, sizeof(in.name));
    if (st != BG_OK) return st;
    if (!strcmp(in.name, "B")) return perr(p, nt, "'B' is the batch size and cannot name an input");
    int prev = bg_graph_find_input(p->g, in.name);
    if (prev >= 0)
        return perr(p, nt, "input '%s' is already declared at %d:%d", in.name,
                    p->g->inputs[prev].line, p->g->inputs[prev].col);
    if (p->g->n_inputs >= BG_GRAPH_MAX_INPUTS)
        return perr(p, kw, "more than %d inputs", BG_GRAPH_MAX_INPUTS);
    if ((st = expect_punct(p, ':', "after the input's name (input NAME : f32[B, ...])")) != BG_OK)
        return st;
    const tok_t *dt = cur(p);
    static const char *const dtypes[] = {"f32", "i32"};
    if (is_word(p, dt, "f32")) in.shape.dtype = BG_F32;
    else if (is_word(p, dt, "i32")) in.shape.dtype = BG_I32;
    else {
        char w[BG_GRAPH_MAX_IDENT + 1] = "", d[64];
        if (dt->k == T_IDENT) tok_text(p, dt, w, sizeof(w));
        return perr(p, dt, "expected a dtype (f32 or i32), found %s%s", tok_desc(p, dt, d, sizeof(d)),
                    dym(w[0] ? suggest_list(dtypes, 2, w) : NULL, b, sizeof(b)));
    }
    advance(p);
    if ((st = expect_punct(p, '[', "before the input's dimensions")) != BG_OK) return st;
    skip_nl(p);
    const tok_t *bt = cur(p);
    if (!is_word(p, bt, "B") || !(is_punct(peek(p, 1), ',') || is_punct(peek(p, 1), ']')))
        return perr(p, bt, "the first dimension of an input must be B (the batch size)");
    advance(p);
    in.shape.ndim = 1;
    in.shape.d[0] = p->batch;
    skip_nl(p);
    while (is_punct(cur(p), ',')) {
        advance(p);
        skip_nl(p);
        if (in.shape.ndim == BG_MAX_DIMS)
            return perr(p, cur(p), "inputs have at most %d dimensions", BG_MAX_DIMS);
        if ((st = parse_dim(p, &in.shape.d[in.shape.ndim])) != BG_OK) return st;
        in.shape.ndim++;
        skip_nl(p);
    }
    if ((st = expect_punct(p, ']', "after the input's dimensions")) != BG_OK) return st;
    if (checked_numel(&in.shape) < 0)
        return perr(p, nt, "input '%s' has more than %lld elements", in.name,
                    (long long)BG_GRAPH_MAX_NUMEL);
    int id, tid;
    if ((st = bg_graph_add_tensor(p->g, in.name, in.name, &in.shape, -1, p->g->n_inputs, &tid)))
        return st;
    in.tensor = tid;
    if ((st = bg_graph_add_input(p->g, &in, &id)) != BG_OK) return st;
    return bg_strmap_put(&p->env, in.name, tid);
}

static bg_status_t stmt_repeat(parser_t *p, const tok_t *kw)
{
    advance(p);
    const tok_t *ct = cur(p);
    int64_t n;
    bg_status_t st = parse_int_expr(p, "the repeat count", &n);
    if (st != BG_OK) return st;
    if (n < 1 || n > BG_GRAPH_MAX_REPEAT)
        return perr(p, ct, "repeat count %lld is out of range (1 to %d)", (long long)n,
                    BG_GRAPH_MAX_REPEAT);
    if (p->depth >= BG_GRAPH_MAX_DEPTH)
        return perr(p, kw, "repeat blocks nested deeper than %d", BG_GRAPH_MAX_DEPTH);
    char label[BG_GRAPH_MAX_IDENT + 1] = "", name[BG_NAME_MAX];
    const tok_t *lt = kw;
    if (is_word(p, cur(p), "as")) {
        advance(p);
        lt = cur(p);
        if ((st = expect_name(p, "a repeat label", label, sizeof(label))) != BG_OK) return st;
    }
    int kinds;
    bg_layer_kinds(&kinds);
    /* Unlabeled repeats are always numbered: repeat_0, repeat_1, ... */
    if ((st = claim_name(p, lt, label, "repeat", kinds, true, name, sizeof(name))) != BG_OK)
        return st;
    const tok_t *open = cur(p);
    if ((st = expect_punct(p, '{', "to open the repeat body")) != BG_OK) return st;
    int body = p->pos;
    for (int64_t i = 0; i < n; i++) {
        if (++p->steps > BG_GRAPH_MAX_STEPS)
            return perr(p, kw, "the model expands to more than %d statements (repeats unrolled)",
                        BG_GRAPH_MAX_STEPS);
        p->pos = body;
        if ((st = push_scope(p, lt, name, i)) != BG_OK) return st;
        st = parse_block(p, open);
        pop_scope(p);
        if (st != BG_OK) return st;
    }
    advance(p); /* the '}' parse_block stopped at */
    return BG_OK;
}

/* ---- layer statements ---- */

typedef struct arg_state {
    bg_graph_layer_t L;
    const tok_t *in_tok[BG_MAX_INPUTS];
    const tok_t *key_tok[BG_MAX_ATTRS];
    const tok_t *share_tok;
    char label[BG_GRAPH_MAX_IDENT + 1];
} arg_state_t;

/* Index of `key` in the kind's key table, or -1. */
static int find_key(const bg_layer_kind_t *k, const char *key)
{
    for (int i = 0; i < k->n_keys; i++)
        if (!strcmp(k->keys[i].key, key)) return i;
    return -1;
}

/* share=PATH: a parameter's global name, dotted ("embed.tokens", "block.0.fc.weight"). */
static bg_status_t parse_ref(parser_t *p, char *out, size_t n)
{
    const tok_t *t = cur(p), *last = t;
    char b[64];
    if (t->k != T_IDENT)
        return perr(p, t, "expected a parameter name such as embed.tokens, found %s",
                    tok_desc(p, t, b, sizeof(b)));
    advance(p);
    /* "block.0.1.fc" lexes "0.1" as a float: path components are raw text. */
    while (is_punct(cur(p), '.') && (peek(p, 1)->k == T_IDENT || peek(p, 1)->k == T_INT ||
                                     peek(p, 1)->k == T_FLOAT)) {
        advance(p);
        last = cur(p);
        advance(p);
    }
    size_t len = last->off + last->len - t->off;
    if (len >= n) return perr(p, t, "parameter name is longer than %d characters", (int)n - 1);
    /* Rebuild without any spaces around the dots. */
    size_t o = 0;
    for (size_t i = t->off; i < last->off + last->len; i++)
        if (p->src[i] != ' ' && p->src[i] != '\t') out[o++] = p->src[i];
    out[o] = 0;
    return BG_OK;
}

static bg_status_t parse_keyword_arg(parser_t *p, arg_state_t *a)
{
    const bg_layer_kind_t *k = a->L.spec.kind;
    const tok_t *kt = cur(p);
    char key[BG_GRAPH_MAX_IDENT + 1], b[96];
    tok_text(p, kt, key, sizeof(key));
    int ki = find_key(k, key);
    if (ki < 0) {
        if (k->n_keys == 0) return perr(p, kt, "%s takes no keys, found '%s'", k->name, key);
        const char *names[BG_MAX_ATTRS];
        int nk = k->n_keys < BG_MAX_ATTRS ? k->n_keys : BG_MAX_ATTRS;
        for (int i = 0; i < nk; i++) names[i] = k->keys[i].key;
        return perr(p, kt, "%s has no key '%s'%s", k->name, key,
                    dym(suggest_list(names, nk, key), b, sizeof(b)));
    }
    if (bg_attrs_find(&a->L.spec.attrs, key))
        return perr(p, kt, "key '%s' is given twice", key);
    advance(p); /* key */
    advance(p); /* '=' */
    const tok_t *vt = cur(p);
    bg_status_t st;
    switch (k->keys[ki].type) {
    case BG_ATTR_INT: {
        int64_t v;
        char what[BG_GRAPH_MAX_IDENT + 2];
        snprintf(what, sizeof(what), "%s=", key);
        if ((st = parse_int_expr(p, what, &v)) != BG_OK) return st;
        st = bg_attrs_set_int(&a->L.spec.attrs, key, v);
        break;
    }
    case BG_ATTR_FLOAT: {
        val_t v;
        if ((st = parse_expr(p, &v)) != BG_OK) return st;
        st = bg_attrs_set_float(&a->L.spec.attrs, key, v.f);
        break;
    }
    case BG_ATTR_BOOL:
        if (!is_word(p, vt, "true") && !is_word(p, vt, "false"))
            return perr(p, vt, "%s= needs true or false, found %s", key,
                        tok_desc(p, vt, b, sizeof(b)));
        st = bg_attrs_set_bool(&a->L.spec.attrs, key, is_word(p, vt, "true"));
        advance(p);
        break;
    case BG_ATTR_REF: {
        char ref[BG_NAME_MAX];
        if ((st = parse_ref(p, ref, sizeof(ref))) != BG_OK) return st;
        st = bg_attrs_set_ref(&a->L.spec.attrs, key, ref);
        a->share_tok = vt;
        break;
    }
    default: return perr(p, kt, "key '%s' has an unsupported type", key);
    }
    if (st != BG_OK) return perr(p, kt, "%s", bg_last_error());
    return BG_OK;
}

static bg_status_t parse_positional_arg(parser_t *p, arg_state_t *a)
{
    const tok_t *t = cur(p);
    char name[BG_GRAPH_MAX_IDENT + 1], b[96];
    bg_layer_spec_t *s = &a->L.spec;
    if (t->k != T_IDENT)
        return perr(p, t, "expected a tensor name or KEY=VALUE, found %s", tok_desc(p, t, b, sizeof(b)));
    if (s->n_in == BG_MAX_INPUTS || s->n_in >= s->kind->max_inputs)
        return perr(p, t, "%s takes at most %d input%s", s->kind->name, s->kind->max_inputs,
                    s->kind->max_inputs == 1 ? "" : "s");
    tok_text(p, t, name, sizeof(name));
    const int64_t *id = bg_strmap_get(&p->env, name);
    if (!id) {
        if (bg_strmap_get(&p->consts, name) || !strcmp(name, "B"))
            return perr(p, t, "'%s' is a constant, not a tensor", name);
        return perr(p, t, "unknown tensor '%s'%s", name,
                    dym(suggest_map(&p->env, name), b, sizeof(b)));
    }
    a->L.in[s->n_in] = (int)*id;
    s->in[s->n_in] = p->g->tensors[*id].shape;
    a->in_tok[s->n_in++] = t;
    advance(p);
    return BG_OK;
}

/* "(ARG, ..., KEY=VALUE, ...)" -- newlines allowed inside. */
static bg_status_t parse_args(parser_t *p, arg_state_t *a)
{
    bg_status_t st = expect_punct(p, '(', "after the layer kind");
    if (st != BG_OK) return st;
    bool seen_key = false;
    skip_nl(p);
    while (!is_punct(cur(p), ')')) {
        const tok_t *t = cur(p);
        if (t->k == T_IDENT && is_punct(peek(p, 1), '=')) {
            seen_key = true;
            st = parse_keyword_arg(p, a);
        } else if (seen_key) {
            return perr(p, t, "tensor arguments must come before KEY=VALUE arguments");
        } else {
            st = parse_positional_arg(p, a);
        }
        if (st != BG_OK) return st;
        skip_nl(p);
        if (is_punct(cur(p), ',')) {
            advance(p);
            skip_nl(p);
        } else if (!is_punct(cur(p), ')')) {
            char b[64];
            return perr(p, cur(p), "expected ',' or ')' in the argument list, found %s",
                        tok_desc(p, cur(p), b, sizeof(b)));
        }
    }
    advance(p); /* ')' */
    return BG_OK;
}

/* Parameters of a freshly inferred layer: own slots become graph parameters,
 * shared slots resolve share= to an existing parameter of the same shape. */
static bg_status_t bind_params(parser_t *p, arg_state_t *a, const tok_t *kt, int layer_id)
{
    bg_graph_layer_t *L = &a->L;
    const bg_layer_kind_t *k = L->spec.kind;
    char b[128], s1[96], s2[96];
    L->n_params = k->params ? k->params(&L->spec, L->slot) : 0;
    bool used_share = false;
    for (int j = 0; j < L->n_params; j++) {
        bg_param_desc_t *d = &L->slot[j];
        if (d->shared) {
            const char *ref = bg_attrs_ref(&L->spec.attrs, "share");
            const tok_t *rt = a->share_tok ? a->share_tok : kt;
            int id = ref ? bg_graph_find_param(p->g, ref) : -1;
            if (id < 0)
                return perr(p, rt, "unknown parameter '%s'%s", ref ? ref : "",
                            dym(ref ? suggest_map(&p->g->param_ids, ref) : NULL, b, sizeof(b)));
            const bg_shape_t *have = &p->g->params[id].desc.shape;
            if (!bg_shape_eq(have, &d->shape))
                return perr(p, rt,
                            "share=%s is %s but %s's %s must be %s (shared parameters must have "
                            "the same shape; transposition is not supported)",
                            ref, bg_shape_str(have, s1, sizeof(s1)), L->spec.name, d->suffix,
                            bg_shape_str(&d->shape, s2, sizeof(s2)));
            L->param[j] = id;
            used_share = true;
            continue;
        }
        bg_graph_param_t gp;
        memset(&gp, 0, sizeof(gp));
        int n = snprintf(gp.name, sizeof(gp.name), "%s.%s", L->spec.name, d->suffix);
        if (n < 0 || (size_t)n >= sizeof(gp.name))
            return perr(p, kt, "parameter name '%s.%s' is longer than %d characters", L->spec.name,
                        d->suffix, BG_NAME_MAX - 1);
        gp.numel = checked_numel(&d->shape);
        if (gp.numel < 0)
            return perr(p, kt, "parameter %s %s is too large (limit %lld elements)", gp.name,
                        bg_shape_str(&d->shape, s1, sizeof(s1)), (long long)BG_GRAPH_MAX_NUMEL);
        if (p->g->totals.params + gp.numel > BG_GRAPH_MAX_PARAMS)
            return perr(p, kt, "the model has more than %lld parameters", (long long)BG_GRAPH_MAX_PARAMS);
        p->g->totals.params += gp.numel; /* running count; bg_graph_finish recomputes */
        gp.desc = *d;
        gp.owner = layer_id;
        gp.slot = j;
        int id;
        bg_status_t st = bg_graph_add_param(p->g, &gp, &id);
        if (st != BG_OK) return st;
        L->param[j] = id;
    }
    if (bg_attrs_ref(&L->spec.attrs, "share") && !used_share)
        return perr(p, a->share_tok ? a->share_tok : kt, "%s has no parameter that share= can replace",
                    k->name);
    return BG_OK;
}

/* Checks after the arguments are read: required keys, input count, shape
 * inference, output limits. */
static bg_status_t check_layer(parser_t *p, arg_state_t *a, const tok_t *kt, const tok_t *close)
{
    bg_layer_spec_t *s = &a->L.spec;
    const bg_layer_kind_t *k = s->kind;
    for (int i = 0; i < k->n_keys; i++)
        if (k->keys[i].required && !bg_attrs_find(&s->attrs, k->keys[i].key))
            return perr(p, close, "%s needs %s=", k->name, k->keys[i].key);
    if (s->n_in < k->min_inputs)
        return perr(p, close, "%s takes %d input%s, got %d", k->name, k->min_inputs,
                    k->min_inputs == 1 ? "" : "s", s->n_in);
    bg_errbuf_t err = {{0}};
    if (bg_layer_infer(s, &err) != BG_OK) return perr(p, kt, "layer '%s': %s", s->name, err.msg);
    char b[96];
    if (s->out.ndim < 1 || s->out.ndim > BG_MAX_DIMS || checked_numel(&s->out) < 0)
        return perr(p, kt, "layer '%s': output %s is out of range (at most %lld elements, each "
                    "dimension 1 to %lld)", s->name, bg_shape_str(&s->out, b, sizeof(b)),
                    (long long)BG_GRAPH_MAX_NUMEL, (long long)BG_GRAPH_MAX_DIM);
    return BG_OK;
}

static bg_status_t stmt_layer(parser_t *p)
{
    const tok_t *start = cur(p), *kt;
    char out[BG_GRAPH_MAX_IDENT + 1], kname[BG_GRAPH_MAX_IDENT + 1], b[96];
    arg_state_t a;
    memset(&a, 0, sizeof(a));
    a.L.line = start->line;
    a.L.col = start->col;
    bg_status_t st = expect_name(p, "a tensor name", out, sizeof(out));
    if (st != BG_OK) return st;
    if (!strcmp(out, "B")) return perr(p, start, "'B' is the batch size and cannot name a tensor");
    advance(p); /* '=' (checked by the caller) */
    kt = cur(p);
    if (kt->k != T_IDENT)
        return perr(p, kt, "expected a layer kind after '=', found %s", tok_desc(p, kt, b, sizeof(b)));
    tok_text(p, kt, kname, sizeof(kname));
    a.L.spec.kind = bg_layer_kind_find(kname);
    if (!a.L.spec.kind) {
        int nk;
        const bg_layer_kind_t *const *all = bg_layer_kinds(&nk);
        const char *names[KIND_SLOTS];
        for (int i = 0; i < nk && i < KIND_SLOTS; i++) names[i] = all[i]->name;
        const char *s = suggest_list(names, nk < KIND_SLOTS ? nk : KIND_SLOTS, kname);
        if (s) return perr(p, kt, "unknown layer kind '%s'; did you mean '%s'?", kname, s);
        if (bg_strmap_get(&p->env, kname) || bg_strmap_get(&p->consts, kname))
            return perr(p, kt, "expected a layer kind such as linear(...), found the name '%s' "
                        "(tensors cannot be copied; use the tensor directly)", kname);
        return perr(p, kt, "unknown layer kind '%s' (see docs/graph-format.md for the kinds)", kname);
    }
    advance(p);
    if ((st = parse_args(p, &a)) != BG_OK) return st;
    const tok_t *close = &p->tok[p->pos - 1];
    if (is_word(p, cur(p), "as")) {
        advance(p);
        if ((st = expect_name(p, "a layer label", a.label, sizeof(a.label))) != BG_OK) return st;
    }
    if (p->g->n_layers >= BG_GRAPH_MAX_LAYERS)
        return perr(p, kt, "the model has more than %d layers (repeats unrolled)", BG_GRAPH_MAX_LAYERS);
    /* Name first: inference messages cite the layer's path. */
    int kix = 0, nk;
    const bg_layer_kind_t *const *all = bg_layer_kinds(&nk);
    while (kix < nk && all[kix] != a.L.spec.kind) kix++;
    char local[BG_NAME_MAX];
    const tok_t *name_tok = a.label[0] ? &p->tok[p->pos - 1] : kt;
    if ((st = claim_name(p, name_tok, a.label, kname, kix < KIND_SLOTS - 1 ? kix : 0, false, local,
                         sizeof(local))) != BG_OK)
        return st;
    int n = snprintf(a.L.spec.name, sizeof(a.L.spec.name), "%s%s", p->scope[p->depth].prefix, local);
    if (n < 0 || (size_t)n >= sizeof(a.L.spec.name))
        return perr(p, name_tok, "layer path '%s%s' is longer than %d characters",
                    p->scope[p->depth].prefix, local, BG_NAME_MAX - 1);
    if ((st = check_layer(p, &a, kt, close)) != BG_OK) return st;
    int lid = p->g->n_layers, tid;
    if ((st = bind_params(p, &a, kt, lid)) != BG_OK) return st;
    if ((st = bg_graph_add_tensor(p->g, a.L.spec.name, out, &a.L.spec.out, lid, -1, &tid)) != BG_OK)
        return st;
    a.L.out = tid;
    if ((st = bg_graph_add_layer(p->g, &a.L, &lid)) != BG_OK) return st;
    return bg_strmap_put(&p->env, out, tid);
}

static bg_status_t parse_statement(parser_t *p)
{
    const tok_t *t = cur(p);
    char b[96], w[BG_GRAPH_MAX_IDENT + 1];
    bg_status_t st;
    if (++p->steps > BG_GRAPH_MAX_STEPS)
        return perr(p, t, "the model expands to more than %d statements (repeats unrolled)",
                    BG_GRAPH_MAX_STEPS);
    if (t->k == T_IDENT && is_punct(peek(p, 1), '=')) {
        tok_text(p, t, w, sizeof(w));
        if (is_keyword(w)) return perr(p, t, "'%s' is a keyword and cannot be a tensor name", w);
    }
    if (is_word(p, t, "model")) st = stmt_model(p, t);
    else if (is_word(p, t, "let")) st = stmt_let(p);
    else if (is_word(p, t, "input")) st = stmt_input(p, t);
    else if (is_word(p, t, "repeat")) st = stmt_repeat(p, t);
    else if (t->k == T_IDENT && is_punct(peek(p, 1), '=')) st = stmt_layer(p);
    else if (t->k == T_IDENT) {
        tok_text(p, t, w, sizeof(w));
        if (bg_layer_kind_find(w) && is_punct(peek(p, 1), '('))
            return perr(p, t, "the output of %s(...) must be bound to a name: NAME = %s(...)", w, w);
        static const char *const stmts[] = {"model", "let", "input", "repeat"};
        const char *s = suggest_list(stmts, 4, w);
        if (s) return perr(p, t, "unknown statement '%s'; did you mean '%s'?", w, s);
        return perr(p, peek(p, 1), "expected '=' after '%s' (NAME = KIND(...))", w);
    } else if (is_punct(t, '}'))
        return perr(p, t, "'}' without a matching 'repeat ... {'");
    else
        return perr(p, t, "expected a statement, found %s", tok_desc(p, t, b, sizeof(b)));
    if (st == BG_OK) p->any_stmt = true;
    return st;
}

/* Statements until EOF (open == NULL: top level) or the '}' closing `open`,
 * which is left unconsumed. */
static bg_status_t parse_block(parser_t *p, const tok_t *open)
{
    char b[64];
    for (;;) {
        skip_nl(p);
        const tok_t *t = cur(p);
        if (t->k == T_EOF) {
            if (open)
                return perr(p, t, "missing '}' to close the repeat block opened at %d:%d",
                            open->line, open->col);
            return BG_OK;
        }
        if (is_punct(t, '}') && open) return BG_OK;
        bg_status_t st = parse_statement(p);
        if (st != BG_OK) return st;
        t = cur(p);
        if (t->k == T_NL) advance(p);
        else if (t->k != T_EOF && !(open && is_punct(t, '}')))
            return perr(p, t, "unexpected %s after the statement (one statement per line)",
                        tok_desc(p, t, b, sizeof(b)));
    }
}

/* ---------------------------------------------------------------- whole file */

/* The loss exists, and every tensor but the loss feeds some layer: a layer
 * that cannot reach the loss is dead weight no schedule can train. */
static bg_status_t check_dataflow(parser_t *p)
{
    bg_graph_t *g = p->g;
    for (int l = g->n_layers - 1; l >= 0 && g->loss_layer < 0; l--)
        if (!strcmp(g->layers[l].spec.kind->name, "cross_entropy") ||
            !strcmp(g->layers[l].spec.kind->name, "classifier"))
            g->loss_layer = l;
    if (g->loss_layer < 0) {
        const tok_t *e = &p->tok[p->ntok - 1];
        return perr(p, e, "the model has no loss: add `loss = cross_entropy(logits, targets)`");
    }
    g->loss_tensor = g->layers[g->loss_layer].out;
    for (int t = 0; t < g->n_tensors; t++) {
        const bg_graph_tensor_t *T = &g->tensors[t];
        if (T->n_consumers || t == g->loss_tensor) continue;
        if (T->producer < 0) {
            const bg_graph_input_t *in = &g->inputs[T->input];
            return perr_at(p, in->line, in->col, "input '%s' is never used", in->name);
        }
        const bg_graph_layer_t *L = &g->layers[T->producer];
        return perr_at(p, L->line, L->col,
                       "the output of layer '%s' ('%s') is never used: every layer must lead to "
                       "the loss (the last cross_entropy)",
                       L->spec.name, T->var);
    }
    return BG_OK;
}

static void parser_free(parser_t *p)
{
    free(p->tok);
    free(p->cval);
    bg_strmap_free(&p->env);
    bg_strmap_free(&p->consts);
    while (p->depth > 0) pop_scope(p);
    bg_strmap_free(&p->scope[0].names);
}

bg_status_t bg_graph_parse_string(const char *text, size_t len, const char *name, int64_t batch,
                                  bg_graph_t **out)
{
    parser_t p;
    memset(&p, 0, sizeof(p));
    p.src = text;
    p.len = len;
    p.fname = name ? name : "<string>";
    p.batch = batch;
    bg_status_t st;
    if (batch < 1 || batch > BG_GRAPH_MAX_DIM)
        return bg_errorf(BG_ERR_INVALID, "%s: batch size %lld is out of range (1 to %lld)", p.fname,
                         (long long)batch, (long long)BG_GRAPH_MAX_DIM);
    if (!text && len) return bg_errorf(BG_ERR_INVALID, "%s: no text", p.fname);
    if (len > BG_GRAPH_MAX_FILE_BYTES)
        return bg_errorf(BG_ERR_INVALID, "%s:1:1: error: file is larger than %d bytes", p.fname,
                         BG_GRAPH_MAX_FILE_BYTES);
    if ((st = bg_graph_new(p.fname, batch, &p.g)) != BG_OK) return st;
    if ((st = lex(&p)) != BG_OK) goto err_parse;
    if ((st = parse_block(&p, NULL)) != BG_OK) goto err_parse;
    if ((st = bg_graph_finish(p.g)) != BG_OK) goto err_parse;
    if ((st = check_dataflow(&p)) != BG_OK) goto err_parse;
    parser_free(&p);
    *out = p.g;
    return BG_OK;
err_parse:
    parser_free(&p);
    bg_graph_free(p.g);
    return st;
}

bg_status_t bg_graph_parse_file(const char *path, int64_t batch, bg_graph_t **out)
{
    bg_status_t st;
    char *buf = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return bg_errorf(BG_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    buf = malloc((size_t)BG_GRAPH_MAX_FILE_BYTES + 1);
    if (!buf) {
        st = bg_errorf(BG_ERR_NOMEM, "%s: out of memory reading the file", path);
        goto err_close;
    }
    /* Read one byte past the limit to tell "exactly at" from "over". */
    size_t n = fread(buf, 1, (size_t)BG_GRAPH_MAX_FILE_BYTES + 1, f);
    if (ferror(f)) {
        st = bg_errorf(BG_ERR_IO, "%s: cannot read: %s", path, strerror(errno));
        goto err_free;
    }
    fclose(f);
    f = NULL;
    st = bg_graph_parse_string(buf, n, path, batch, out);
err_free:
    free(buf);
err_close:
    if (f) fclose(f);
    return st;
}
