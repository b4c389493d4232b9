/*
 * Compiled kernel of the streaming anomaly detector (twin/models/statistical/anomaly.py).
 *
 * It computes exactly what the pure-Python reference computes, operation for operation, in
 * the same order and the same IEEE double arithmetic (built with -ffp-contract=off: no fused
 * multiply-add), so the scores agree to the last bit on ordinary inputs; the equality test in
 * tests/models/statistical/test_detector_kernel.py checks every point of the NAB dev set.
 * Where the reference relies on numpy (partition, sums) it uses orderings that do not depend
 * on numpy's internals: order statistics are exact whatever the algorithm, sums are taken in
 * ascending order (tail sums) or in buffer order, left to right.
 *
 * Plain C99 against the CPython API and the buffer protocol (no numpy headers): it builds with
 * any C compiler and the Python headers, and the package falls back to the reference where it
 * does not build (setup.py marks the extension optional). The GIL is held throughout, so a
 * module-wide scratch buffer serves every detector.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_BIN 1e15
#define RECUR_CHECK_P 0.01
#define VAR_RATE 0.01
#define RESUM 4096
#define MAX_STEP_RATIO 16.0
#define STEP_RATE 0.01

/* Python's min(a, b) / max(a, b): the first argument unless the second is strictly smaller /
 * larger (matters only for NaN, which must propagate the same way as in the reference). */
#define PYMIN(a, b) ((b) < (a) ? (b) : (a))
#define PYMAX(a, b) ((b) > (a) ? (b) : (a))

/* ------------------------------------------------------------------ scratch + selection */

static double *g_scratch = NULL;
static Py_ssize_t g_scratch_len = 0;

static double *scratch(Py_ssize_t n) {
    if (n > g_scratch_len) {
        double *p = (double *)realloc(g_scratch, (size_t)n * sizeof(double));
        if (!p) return NULL;
        g_scratch = p;
        g_scratch_len = n;
    }
    return g_scratch;
}

static inline void swapd(double *a, double *b) {
    double t = *a;
    *a = *b;
    *b = t;
}

/* Rearrange a[0..n) so that a[k] is the k-th smallest, a[<k] <= a[k] <= a[>k]. */
static void nth_element(double *a, Py_ssize_t n, Py_ssize_t k) {
    Py_ssize_t lo = 0, hi = n - 1;
    while (hi > lo) {
        if (hi - lo < 16) { /* insertion sort of the small rest */
            for (Py_ssize_t i = lo + 1; i <= hi; i++) {
                double v = a[i];
                Py_ssize_t j = i - 1;
                while (j >= lo && a[j] > v) {
                    a[j + 1] = a[j];
                    j--;
                }
                a[j + 1] = v;
            }
            return;
        }
        Py_ssize_t mid = lo + (hi - lo) / 2;
        if (a[mid] < a[lo]) swapd(&a[mid], &a[lo]);
        if (a[hi] < a[lo]) swapd(&a[hi], &a[lo]);
        if (a[hi] < a[mid]) swapd(&a[hi], &a[mid]);
        double pivot = a[mid];
        Py_ssize_t i = lo, j = hi;
        while (i <= j) {
            while (a[i] < pivot) i++;
            while (pivot < a[j]) j--;
            if (i <= j) {
                swapd(&a[i], &a[j]);
                i++;
                j--;
            }
        }
        if (k <= j)
            hi = j;
        else if (k >= i)
            lo = i;
        else
            return;
    }
}

static int cmp_double(const void *pa, const void *pb) {
    double a = *(const double *)pa, b = *(const double *)pb;
    if (a < b) return -1;
    if (a > b) return 1;
    return isnan(a) - isnan(b);
}

/* Sum of a[0..n) in ascending order, left to right (np.add.accumulate(np.sort(a))[-1]). */
static double seq_sum_sorted(double *a, Py_ssize_t n) {
    qsort(a, (size_t)n, sizeof(double), cmp_double);
    double s = a[0];
    for (Py_ssize_t i = 1; i < n; i++) s += a[i];
    return s;
}

/* ------------------------------------------------------------------ tail model */

typedef struct {
    double *v;          /* window values strictly beyond the cut (unordered multiset) */
    Py_ssize_t n, cap;
    Py_ssize_t eq;      /* window values equal to the cut (ties are counted, not stored) */
    double cut;
    int on;
} Cands;

static int cands_push(Cands *c, double x) {
    if (c->n == c->cap) {
        Py_ssize_t nc = c->cap ? 2 * c->cap : 16;
        double *p = (double *)realloc(c->v, (size_t)nc * sizeof(double));
        if (!p) return -1;
        c->v = p;
        c->cap = nc;
    }
    c->v[c->n++] = x;
    return 0;
}

static void cands_remove(Cands *c, double x) {
    for (Py_ssize_t i = 0; i < c->n; i++)
        if (c->v[i] == x) {
            c->v[i] = c->v[--c->n];
            return;
        }
}

static void cands_free(Cands *c) {
    free(c->v);
    c->v = NULL;
    c->n = c->cap = 0;
    c->on = 0;
}

typedef struct {
    double *buf;
    Py_ssize_t len, cap, n, pos, since, every, min_tail;
    double frac, beta_floor, rel_floor, recur;
    double q_hi, q_lo, b_hi, b_lo, k_over_n;
    /* Candidates: the window's values > hi.cut (< lo.cut) and the number equal to it, kept
     * as values move in and out.
     * At a refit the cut is raised to the (k + every)-th largest (smallest) value; at most
     * ``every`` values leave before the next refit, so >= k candidates usually remain and the
     * refit selects among ~k + every values instead of the whole window. With fewer, it
     * selects over the window and rebuilds the list (exact either way). */
    Cands hi, lo;
    int two_sided;
} Tail;

static int tail_init(Tail *t, Py_ssize_t window, Py_ssize_t every, double frac,
                     Py_ssize_t min_tail, int two_sided, double beta_floor, double rel_floor,
                     double recur) {
    t->cap = window;
    t->len = window < 64 ? window : 64;
    t->buf = (double *)calloc((size_t)t->len, sizeof(double));
    if (!t->buf) return -1;
    t->n = t->pos = t->since = 0;
    t->every = every;
    t->frac = frac;
    t->min_tail = min_tail;
    t->two_sided = two_sided;
    t->beta_floor = beta_floor;
    t->rel_floor = rel_floor;
    t->recur = recur;
    t->q_hi = INFINITY;
    t->q_lo = -INFINITY;
    t->b_hi = t->b_lo = 1.0;
    t->k_over_n = 1.0;
    memset(&t->hi, 0, sizeof(Cands)); /* off: the first refit selects over the window */
    memset(&t->lo, 0, sizeof(Cands));
    return 0;
}

static void tail_free(Tail *t) {
    free(t->buf);
    t->buf = NULL;
    cands_free(&t->hi);
    cands_free(&t->lo);
}

static double tail_pvalue(const Tail *t, double s) {
    if (s > t->q_hi) {
        double p = t->k_over_n * exp(-(s - t->q_hi) / t->b_hi);
        if (p < RECUR_CHECK_P && t->recur > 0.0) {
            Py_ssize_t c = 0;
            const double *b = t->buf;
            for (Py_ssize_t i = 0; i < t->n; i++) c += b[i] >= s;
            if (c) { /* seen c times in n points: p >= (c + 1) / (n + 1) */
                double f = t->recur * (double)(c + 1) / (double)(t->n + 1);
                p = PYMAX(p, f);
            }
        }
        return p;
    }
    if (s < t->q_lo) {
        double p = t->k_over_n * exp(-(t->q_lo - s) / t->b_lo);
        if (p < RECUR_CHECK_P && t->recur > 0.0) {
            Py_ssize_t c = 0;
            const double *b = t->buf;
            for (Py_ssize_t i = 0; i < t->n; i++) c += b[i] <= s;
            if (c) { /* seen c times in n points: p >= (c + 1) / (n + 1) */
                double f = t->recur * (double)(c + 1) / (double)(t->n + 1);
                p = PYMAX(p, f);
            }
        }
        return p;
    }
    return 1.0;
}

/* The k largest of a[0..n) into a[n-k..n) (a is reordered); returns the k-th largest and, in
 * *cut, the (k + m)-th largest (-inf when n < k + m). */
static double select_top(double *a, Py_ssize_t n, Py_ssize_t k, Py_ssize_t m, double *cut) {
    nth_element(a, n, n - k);
    double q = a[n - k];
    if (n - k - m >= 0) {
        nth_element(a, n - k, n - k - m);
        *cut = a[n - k - m];
    } else {
        *cut = -INFINITY;
    }
    return q;
}

/* The k smallest of a[0..n) into a[0..k); returns the k-th smallest; *cut as above. */
static double select_bottom(double *a, Py_ssize_t n, Py_ssize_t k, Py_ssize_t m, double *cut) {
    nth_element(a, n, k - 1);
    double q = a[k - 1];
    if (k + m - 1 < n) {
        nth_element(a + k, n - k, m - 1);
        *cut = a[k + m - 1];
    } else {
        *cut = INFINITY;
    }
    return q;
}

/* Top side of a refit: *q = k-th largest of the window, *sum = ascending sum of the k
 * largest; keeps the candidates (values > cut, count of values == cut) for the next refit. */
static int refit_side_hi(Tail *t, Py_ssize_t n, Py_ssize_t k, Py_ssize_t m, double *a,
                         double *q, double *sum) {
    Cands *c = &t->hi;
    Py_ssize_t g = c->n;
    if (c->on && g + c->eq >= k) {
        memcpy(a, c->v, (size_t)g * sizeof(double));
        if (g >= k) {
            double cut;
            *q = select_top(a, g, k, m, &cut);
            *sum = seq_sum_sorted(a + (g - k), k);
            if (cut > c->cut) { /* raise the cut: ties at the new cut become a count */
                Py_ssize_t j = 0, eq = 0;
                for (Py_ssize_t i = 0; i < g; i++) {
                    double v = c->v[i];
                    if (v > cut)
                        c->v[j++] = v;
                    else if (v == cut)
                        eq++;
                }
                c->n = j;
                c->eq = eq;
                c->cut = cut;
            }
        } else { /* the k-th largest is the cut value itself */
            for (Py_ssize_t i = g; i < k; i++) a[i] = c->cut;
            *q = c->cut;
            *sum = seq_sum_sorted(a, k);
        }
        return 0;
    }
    const double *b = t->buf;
    double cut;
    memcpy(a, b, (size_t)n * sizeof(double));
    *q = select_top(a, n, k, m, &cut);
    *sum = seq_sum_sorted(a + (n - k), k);
    c->n = c->eq = 0;
    c->on = 0;
    if (cut == -INFINITY) return 0; /* fewer than k + m values: no list yet */
    for (Py_ssize_t i = 0; i < n; i++) {
        if (b[i] > cut) {
            if (cands_push(c, b[i]) < 0) return -1;
        } else if (b[i] == cut) {
            c->eq++;
        }
    }
    c->cut = cut;
    c->on = 1;
    return 0;
}

static int refit_side_lo(Tail *t, Py_ssize_t n, Py_ssize_t k, Py_ssize_t m, double *a,
                         double *q, double *sum) {
    Cands *c = &t->lo;
    Py_ssize_t g = c->n;
    if (c->on && g + c->eq >= k) {
        memcpy(a, c->v, (size_t)g * sizeof(double));
        if (g >= k) {
            double cut;
            *q = select_bottom(a, g, k, m, &cut);
            *sum = seq_sum_sorted(a, k);
            if (cut < c->cut) {
                Py_ssize_t j = 0, eq = 0;
                for (Py_ssize_t i = 0; i < g; i++) {
                    double v = c->v[i];
                    if (v < cut)
                        c->v[j++] = v;
                    else if (v == cut)
                        eq++;
                }
                c->n = j;
                c->eq = eq;
                c->cut = cut;
            }
        } else {
            for (Py_ssize_t i = g; i < k; i++) a[i] = c->cut;
            *q = c->cut;
            *sum = seq_sum_sorted(a, k);
        }
        return 0;
    }
    const double *b = t->buf;
    double cut;
    memcpy(a, b, (size_t)n * sizeof(double));
    *q = select_bottom(a, n, k, m, &cut);
    *sum = seq_sum_sorted(a, k);
    c->n = c->eq = 0;
    c->on = 0;
    if (cut == INFINITY) return 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (b[i] < cut) {
            if (cands_push(c, b[i]) < 0) return -1;
        } else if (b[i] == cut) {
            c->eq++;
        }
    }
    c->cut = cut;
    c->on = 1;
    return 0;
}

static int tail_refit(Tail *t) {
    Py_ssize_t n = t->n;
    Py_ssize_t k = (Py_ssize_t)((double)n * t->frac);
    if (k < t->min_tail) k = t->min_tail;
    Py_ssize_t m = t->every;
    double *a = scratch(n);
    if (!a) return -1;
    double q_hi, q_lo = 0.0, s_hi, s_lo = 0.0;
    if (refit_side_hi(t, n, k, m, a, &q_hi, &s_hi) < 0) return -1;
    if ((t->two_sided || t->rel_floor > 0.0) && refit_side_lo(t, n, k, m, a, &q_lo, &s_lo) < 0)
        return -1;
    double floor_ = t->beta_floor;
    if (t->rel_floor > 0.0) floor_ = PYMAX(floor_, t->rel_floor * (q_hi - q_lo));
    t->q_hi = q_hi;
    double mm = s_hi / (double)k - q_hi;
    mm = PYMAX(mm, floor_);
    t->b_hi = PYMAX(mm, 1e-12);
    t->k_over_n = (double)k / (double)n;
    if (t->two_sided) {
        t->q_lo = q_lo;
        mm = q_lo - s_lo / (double)k;
        mm = PYMAX(mm, floor_);
        t->b_lo = PYMAX(mm, 1e-12);
    }
    return 0;
}

static int tail_add(Tail *t, double s) {
    if (t->pos == t->len && t->len < t->cap) {
        Py_ssize_t nl = 2 * t->len < t->cap ? 2 * t->len : t->cap;
        double *nb = (double *)realloc(t->buf, (size_t)nl * sizeof(double));
        if (!nb) return -1;
        memset(nb + t->len, 0, (size_t)(nl - t->len) * sizeof(double));
        t->buf = nb;
        t->len = nl;
    }
    if (t->n == t->cap) { /* the oldest value leaves the window */
        double old = t->buf[t->pos];
        if (t->hi.on) {
            if (old > t->hi.cut)
                cands_remove(&t->hi, old);
            else if (old == t->hi.cut)
                t->hi.eq--;
        }
        if (t->lo.on) {
            if (old < t->lo.cut)
                cands_remove(&t->lo, old);
            else if (old == t->lo.cut)
                t->lo.eq--;
        }
    }
    if (t->hi.on) {
        if (s > t->hi.cut) {
            if (cands_push(&t->hi, s) < 0) return -1;
        } else if (s == t->hi.cut) {
            t->hi.eq++;
        }
    }
    if (t->lo.on) {
        if (s < t->lo.cut) {
            if (cands_push(&t->lo, s) < 0) return -1;
        } else if (s == t->lo.cut) {
            t->lo.eq++;
        }
    }
    t->buf[t->pos] = s;
    t->pos += 1;
    if (t->pos == t->cap) t->pos = 0;
    if (t->n < t->cap) t->n += 1;
    t->since += 1;
    if (t->since >= t->every && t->n >= 4 * t->min_tail) {
        t->since = 0;
        return tail_refit(t);
    }
    return 0;
}

/* ------------------------------------------------------------------ bin counts (hash map) */

typedef struct {
    int64_t *keys;
    int32_t *vals; /* 0 = empty slot (a present key always has a count >= 1) */
    Py_ssize_t cap, size;
} CountMap;

static inline size_t cm_hash(int64_t k, Py_ssize_t cap) {
    uint64_t h = (uint64_t)k * 0x9E3779B97F4A7C15ULL;
    return (size_t)(h >> 17) & (size_t)(cap - 1);
}

static int cm_alloc(CountMap *m, Py_ssize_t cap) {
    m->keys = (int64_t *)calloc((size_t)cap, sizeof(int64_t));
    m->vals = (int32_t *)calloc((size_t)cap, sizeof(int32_t));
    if (!m->keys || !m->vals) {
        free(m->keys);
        free(m->vals);
        m->keys = NULL;
        m->vals = NULL;
        return -1;
    }
    m->cap = cap;
    m->size = 0;
    return 0;
}

static void cm_free(CountMap *m) {
    free(m->keys);
    free(m->vals);
    m->keys = NULL;
    m->vals = NULL;
    m->cap = m->size = 0;
}

static inline int32_t cm_get(const CountMap *m, int64_t k) {
    if (!m->cap) return 0;
    size_t mask = (size_t)m->cap - 1, i = cm_hash(k, m->cap);
    while (m->vals[i]) {
        if (m->keys[i] == k) return m->vals[i];
        i = (i + 1) & mask;
    }
    return 0;
}

static int cm_add(CountMap *m, int64_t k, int32_t d);

static int cm_grow(CountMap *m, Py_ssize_t cap) {
    CountMap old = *m;
    if (cm_alloc(m, cap) < 0) {
        *m = old;
        return -1;
    }
    for (Py_ssize_t i = 0; i < old.cap; i++)
        if (old.vals[i]) cm_add(m, old.keys[i], old.vals[i]);
    free(old.keys);
    free(old.vals);
    return 0;
}

/* counts[k] += d (d = +1 or a bulk count); removes the key when it drops to 0. */
static int cm_add(CountMap *m, int64_t k, int32_t d) {
    if (2 * (m->size + 1) > m->cap) {
        if (cm_grow(m, m->cap ? 2 * m->cap : 16) < 0) return -1;
    }
    size_t mask = (size_t)m->cap - 1, i = cm_hash(k, m->cap);
    while (m->vals[i]) {
        if (m->keys[i] == k) break;
        i = (i + 1) & mask;
    }
    if (!m->vals[i]) {
        if (d <= 0) return 0; /* cannot happen: evicted keys are always present */
        m->keys[i] = k;
        m->vals[i] = d;
        m->size++;
        return 0;
    }
    m->vals[i] += d;
    if (m->vals[i] > 0) return 0;
    /* delete with backward shift (keeps linear probing chains intact) */
    m->vals[i] = 0;
    m->size--;
    size_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (!m->vals[j]) break;
        size_t h = cm_hash(m->keys[j], m->cap);
        /* can the entry at j move to the hole at i? (its home h is not in (i, j]) */
        int move = (i <= j) ? (h <= i || h > j) : (h <= i && h > j);
        if (move) {
            m->keys[i] = m->keys[j];
            m->vals[i] = m->vals[j];
            m->vals[j] = 0;
            i = j;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ detector */

typedef struct {
    PyObject_HEAD
    /* configuration */
    Py_ssize_t warmup, window, rescale_every, short_window, long_window, suppress;
    double n_bins, fast_alpha, season_seconds, season_gate, fire_p, suppress_scale, ref_step;
    /* state */
    Py_ssize_t n, since_rescale, suppress_left;
    double last_score, last_pvalue, m_fast, width, ss_var, x_var, x_mean, step, last_t;
    Tail value, resid, season, short_tail, long_tail, stuck;
    Py_ssize_t run, stuck_window; /* current run of identical values; 0 = stuck view off */
    double prev_x;
    CountMap counts;
    double *sh, *lg; /* rings of the last short_window / long_window surprises */
    Py_ssize_t sh_head, sh_len, lg_head, lg_len;
    double sh_sum, lg_sum;
    double *lag_t, *lag_x; /* ring of (t, x) over the last period */
    Py_ssize_t lag_cap, lag_head, lag_len;
    int ready;
} Kernel;

static void kernel_clear(Kernel *k) {
    tail_free(&k->value);
    tail_free(&k->resid);
    tail_free(&k->season);
    tail_free(&k->short_tail);
    tail_free(&k->long_tail);
    tail_free(&k->stuck);
    cm_free(&k->counts);
    free(k->sh);
    free(k->lg);
    free(k->lag_t);
    free(k->lag_x);
    k->sh = k->lg = k->lag_t = k->lag_x = NULL;
    k->ready = 0;
}

static void Kernel_dealloc(Kernel *self) {
    kernel_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Kernel_init(Kernel *self, PyObject *args, PyObject *kwds) {
    Py_ssize_t warmup, window, rescale_every, short_window, long_window, tail_every, min_tail,
        suppress;
    double n_bins, fast_alpha, tail_frac, rel_beta_floor, nats_beta_floor, recur_weight,
        season_seconds, season_gate, fire_p, suppress_scale, ref_step, stuck_floor;
    Py_ssize_t stuck_window;
    if (kwds && PyDict_GET_SIZE(kwds)) {
        PyErr_SetString(PyExc_TypeError, "Kernel takes positional arguments only");
        return -1;
    }
    if (!PyArg_ParseTuple(args, "nnnddnnndnddddddnddnd", &warmup, &window, &rescale_every,
                          &n_bins, &fast_alpha, &short_window, &long_window, &tail_every,
                          &tail_frac, &min_tail, &rel_beta_floor, &nats_beta_floor,
                          &recur_weight, &season_seconds, &season_gate, &fire_p, &suppress,
                          &suppress_scale, &ref_step, &stuck_window, &stuck_floor))
        return -1;
    if (window < 1 || short_window < 1 || long_window < 1 || tail_every < 1 || min_tail < 1 ||
        rescale_every < 1 || warmup < 1 || 4 * min_tail > window || stuck_window < 0) {
        PyErr_SetString(PyExc_ValueError, "invalid detector configuration");
        return -1;
    }
    kernel_clear(self);
    self->warmup = warmup;
    self->window = window;
    self->rescale_every = rescale_every;
    self->short_window = short_window;
    self->long_window = long_window;
    self->suppress = suppress;
    self->n_bins = n_bins;
    self->fast_alpha = fast_alpha;
    self->season_seconds = season_seconds;
    self->season_gate = season_gate;
    self->fire_p = fire_p;
    self->suppress_scale = suppress_scale;
    self->ref_step = ref_step;
    self->step = 0.0;
    self->last_t = NAN;
    self->run = 0;
    self->prev_x = NAN;
    self->stuck_window = stuck_window;
    self->n = self->since_rescale = self->suppress_left = 0;
    self->last_score = 0.0;
    self->last_pvalue = 1.0;
    self->m_fast = self->width = self->ss_var = self->x_var = self->x_mean = 0.0;
    self->sh_head = self->sh_len = self->lg_head = self->lg_len = 0;
    self->sh_sum = self->lg_sum = 0.0;
    self->lag_cap = self->lag_head = self->lag_len = 0;
    int bad = 0;
    bad |= tail_init(&self->value, window, tail_every, tail_frac, min_tail, 1, 0.0,
                     rel_beta_floor, recur_weight);
    bad |= tail_init(&self->resid, window, tail_every, tail_frac, min_tail, 1, 0.0,
                     rel_beta_floor, recur_weight);
    bad |= tail_init(&self->season, window, tail_every, tail_frac, min_tail, 1, 0.0,
                     rel_beta_floor, recur_weight);
    bad |= tail_init(&self->short_tail, window, tail_every, tail_frac, min_tail, 0,
                     nats_beta_floor, 0.0, 0.0);
    bad |= tail_init(&self->long_tail, window, tail_every, tail_frac, min_tail, 0,
                     nats_beta_floor, 0.0, 0.0);
    if (stuck_window > 0)
        bad |= tail_init(&self->stuck, stuck_window, tail_every, tail_frac, min_tail, 0,
                         stuck_floor, 0.0, 1.0);
    self->sh = (double *)calloc((size_t)short_window, sizeof(double));
    self->lg = (double *)calloc((size_t)long_window, sizeof(double));
    if (bad || !self->sh || !self->lg) {
        kernel_clear(self);
        PyErr_NoMemory();
        return -1;
    }
    self->ready = 1;
    return 0;
}

static inline int64_t kbin(double x, double width) {
    double q = x / width;
    if (-MAX_BIN < q && q < MAX_BIN) return (int64_t)floor(q);
    return q > 0 ? (int64_t)MAX_BIN : -(int64_t)MAX_BIN;
}

/* Left-to-right sum of a ring (oldest first): np.add.accumulate(np.array(deque))[-1]. */
static double ring_sum(const double *a, Py_ssize_t cap, Py_ssize_t head, Py_ssize_t len) {
    double s = a[head];
    for (Py_ssize_t i = 1; i < len; i++) s += a[(head + i) % cap];
    return s;
}

static double quantile_of(double *a, Py_ssize_t n, double q) {
    double h = q * (double)(n - 1);
    double fl = floor(h);
    Py_ssize_t lo = (Py_ssize_t)fl;
    nth_element(a, n, lo);
    double va = a[lo], vb = va;
    if (lo + 1 < n) {
        vb = a[lo + 1];
        for (Py_ssize_t i = lo + 2; i < n; i++)
            if (a[i] < vb) vb = a[i];
    }
    return va + (vb - va) * (h - fl);
}

static int kernel_rescale(Kernel *k) {
    k->since_rescale = 0;
    const double *arr = k->value.buf;
    Py_ssize_t n = k->value.n;
    double *a = scratch(n);
    if (!a) return -1;
    memcpy(a, arr, (size_t)n * sizeof(double));
    double lo = quantile_of(a, n, 0.01);
    memcpy(a, arr, (size_t)n * sizeof(double));
    double hi = quantile_of(a, n, 0.99);
    double w = (hi - lo) / k->n_bins;
    if (!(w > 0.0)) {
        double s = arr[0];
        for (Py_ssize_t i = 1; i < n; i++) s += arr[i];
        double mean = s / (double)n;
        double d0 = arr[0] - mean;
        double ss = d0 * d0;
        for (Py_ssize_t i = 1; i < n; i++) {
            double d = arr[i] - mean;
            ss += d * d;
        }
        double sd = sqrt(ss / (double)n);
        if (sd > 0.0)
            w = sd;
        else {
            double m = fabs(mean) * 1e-3;
            w = PYMAX(m, 1e-9);
        }
    }
    if (!isfinite(w)) w = 1e300;
    k->width = w;
    /* rebuild the bin counts from the window */
    Py_ssize_t cap = 16;
    while (cap < 2 * k->counts.size + 2 && cap < 4 * n) cap *= 2;
    cm_free(&k->counts);
    if (cm_alloc(&k->counts, cap) < 0) return -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        double q = arr[i] / w;
        q = q < -MAX_BIN ? -MAX_BIN : q;
        q = q > MAX_BIN ? MAX_BIN : q;
        if (cm_add(&k->counts, (int64_t)floor(q), 1) < 0) return -1;
    }
    return 0;
}

static void lag_popleft(Kernel *k) {
    k->lag_head = (k->lag_head + 1) % k->lag_cap;
    k->lag_len--;
}

static int lag_append(Kernel *k, double t, double x) {
    if (k->lag_len == k->lag_cap) {
        Py_ssize_t nc = k->lag_cap ? 2 * k->lag_cap : 64;
        if (nc > k->window + 1) nc = k->window + 1;
        double *nt = (double *)malloc((size_t)nc * sizeof(double));
        double *nx = (double *)malloc((size_t)nc * sizeof(double));
        if (!nt || !nx) {
            free(nt);
            free(nx);
            return -1;
        }
        for (Py_ssize_t i = 0; i < k->lag_len; i++) {
            nt[i] = k->lag_t[(k->lag_head + i) % k->lag_cap];
            nx[i] = k->lag_x[(k->lag_head + i) % k->lag_cap];
        }
        free(k->lag_t);
        free(k->lag_x);
        k->lag_t = nt;
        k->lag_x = nx;
        k->lag_cap = nc;
        k->lag_head = 0;
    }
    Py_ssize_t j = (k->lag_head + k->lag_len) % k->lag_cap;
    k->lag_t[j] = t;
    k->lag_x[j] = x;
    k->lag_len++;
    return 0;
}

/* Seasonal residual: returns 1 and sets *rs when a reference one period earlier exists. */
static int seasonal_residual(Kernel *k, double t, double x, double *rs, int *err) {
    double period = k->season_seconds;
    if (period <= 0.0) return 0;
    double target = t - period;
    while (k->lag_len >= 2 && k->lag_t[(k->lag_head + 1) % k->lag_cap] <= target)
        lag_popleft(k);
    int has = 0;
    if (k->lag_len) {
        double t0 = k->lag_t[k->lag_head];
        if (target - period / 48.0 <= t0 && t0 <= target) {
            *rs = x - k->lag_x[k->lag_head];
            has = 1;
            if (k->x_var == 0.0) k->x_mean = k->m_fast;
        }
    }
    if (lag_append(k, t, x) < 0) {
        *err = 1;
        return 0;
    }
    if (k->lag_len > k->window) lag_popleft(k);
    return has;
}

static void update_gate(Kernel *k, double x, double rs) {
    k->ss_var += VAR_RATE * (rs * rs - k->ss_var);
    double d = x - k->x_mean;
    k->x_mean += VAR_RATE * d;
    k->x_var += VAR_RATE * (d * d - k->x_var);
    if (!(isfinite(k->x_var) && isfinite(k->ss_var))) {
        k->x_mean = x;
        k->x_var = 0.0;
        k->ss_var = 0.0;
    }
}

/* One point; returns the score, or -1.0 with a Python error set (out of memory). */
static double kernel_update(Kernel *k, double t, double x) {
    if (!isfinite(x)) {
        k->last_score = 0.0;
        k->last_pvalue = 1.0;
        return 0.0;
    }
    k->n += 1;
    Py_ssize_t n = k->n;
    double gap = t - k->last_t;
    if (gap > 0.0) k->step = k->step == 0.0 ? gap : k->step + STEP_RATE * (gap - k->step);
    k->last_t = t;
    if (n == 1) k->m_fast = x;
    double r = x - k->m_fast;
    k->m_fast += k->fast_alpha * r;
    if (!isfinite(k->m_fast)) k->m_fast = x;
    double rs = 0.0;
    int err = 0;
    int has_rs = seasonal_residual(k, t, x, &rs, &err);
    if (err) goto nomem;

    if (n <= k->warmup) {
        if (tail_add(&k->value, x) < 0 || tail_add(&k->resid, r) < 0) goto nomem;
        if (has_rs && tail_add(&k->season, rs) < 0) goto nomem;
        if (n == k->warmup && kernel_rescale(k) < 0) goto nomem;
        k->last_score = 0.0;
        k->last_pvalue = 1.0;
        return 0.0;
    }

    k->since_rescale += 1;
    if (k->since_rescale >= k->rescale_every && kernel_rescale(k) < 0) goto nomem;

    double pa = tail_pvalue(&k->value, x), pb = tail_pvalue(&k->resid, r);
    double p = PYMIN(pa, pb);
    if (has_rs) {
        if (k->season.n >= k->warmup && k->ss_var < k->season_gate * k->x_var) {
            double ps = tail_pvalue(&k->season, rs);
            p = PYMIN(p, ps);
        }
        if (tail_add(&k->season, rs) < 0) goto nomem;
        update_gate(k, x, rs);
    }

    int64_t b = kbin(x, k->width);
    Py_ssize_t total = k->value.n + 1;
    double c = (double)cm_get(&k->counts, b) +
               0.5 * (double)(cm_get(&k->counts, b - 1) + cm_get(&k->counts, b + 1));
    double surprise = -log((c + 0.1) / (double)total);

    if (k->sh_len == k->short_window) {
        k->sh_sum -= k->sh[k->sh_head];
        k->sh_sum += surprise;
        k->sh[k->sh_head] = surprise;
        k->sh_head = (k->sh_head + 1) % k->short_window;
    } else {
        k->sh_sum += surprise;
        k->sh[(k->sh_head + k->sh_len) % k->short_window] = surprise;
        k->sh_len++;
    }
    if (k->lg_len == k->long_window) {
        k->lg_sum -= k->lg[k->lg_head];
        k->lg_sum += surprise;
        k->lg[k->lg_head] = surprise;
        k->lg_head = (k->lg_head + 1) % k->long_window;
    } else {
        k->lg_sum += surprise;
        k->lg[(k->lg_head + k->lg_len) % k->long_window] = surprise;
        k->lg_len++;
    }
    if (n % RESUM == 0) {
        k->sh_sum = ring_sum(k->sh, k->short_window, k->sh_head, k->sh_len);
        k->lg_sum = ring_sum(k->lg, k->long_window, k->lg_head, k->lg_len);
    }
    double sm = k->sh_sum / (double)k->sh_len;
    double lm = k->lg_sum / (double)k->lg_len;
    double pq = tail_pvalue(&k->short_tail, sm);
    p = PYMIN(p, pq);
    if (tail_add(&k->short_tail, sm) < 0) goto nomem;
    if (n > k->warmup + k->long_window) {
        double pl = tail_pvalue(&k->long_tail, lm);
        p = PYMIN(p, pl);
    }
    if (tail_add(&k->long_tail, lm) < 0) goto nomem;

    if (k->stuck_window > 0) { /* stuck value: a run of identical values longer than usual */
        if (x == k->prev_x) {
            k->run += 1;
            if (k->stuck.n >= k->warmup) {
                double pr = tail_pvalue(&k->stuck, (double)k->run);
                p = PYMIN(p, pr);
            }
        } else {
            if (tail_add(&k->stuck, (double)k->run) < 0) goto nomem;
            k->run = 0;
        }
        k->prev_x = x;
    }

    if (k->value.n == k->value.cap) {
        double old = k->value.buf[k->value.pos];
        if (cm_add(&k->counts, kbin(old, k->width), -1) < 0) goto nomem;
    }
    if (cm_add(&k->counts, b, 1) < 0) goto nomem;
    if (tail_add(&k->value, x) < 0 || tail_add(&k->resid, r) < 0) goto nomem;

    if (!(p >= 0.0)) p = 1.0;
    if (k->step > 0.0 && k->step < k->ref_step) {
        double ratio = PYMIN(k->ref_step / k->step, MAX_STEP_RATIO);
        double pr = p * ratio;
        p = PYMIN(1.0, pr);
    }
    k->last_pvalue = p;
    double score = 1.0 - p;
    if (k->suppress_left > 0) {
        k->suppress_left -= 1;
        score *= k->suppress_scale;
    } else if (p <= k->fire_p) {
        k->suppress_left = k->suppress;
    }
    k->last_score = score;
    return score;
nomem:
    PyErr_NoMemory();
    return -1.0;
}

static int check_ready(Kernel *self) {
    if (!self->ready) {
        PyErr_SetString(PyExc_RuntimeError, "Kernel.__init__ was not called");
        return -1;
    }
    return 0;
}

static PyObject *Kernel_update(Kernel *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "update(timestamp, value) takes 2 arguments");
        return NULL;
    }
    if (check_ready(self) < 0) return NULL;
    double t = PyFloat_AsDouble(args[0]);
    if (t == -1.0 && PyErr_Occurred()) return NULL;
    double x = PyFloat_AsDouble(args[1]);
    if (x == -1.0 && PyErr_Occurred()) return NULL;
    double s = kernel_update(self, t, x);
    if (s == -1.0 && PyErr_Occurred()) return NULL;
    return PyFloat_FromDouble(s);
}

static PyObject *Kernel_score_into(Kernel *self, PyObject *args) {
    Py_buffer bt, bv, bo;
    if (check_ready(self) < 0) return NULL;
    if (!PyArg_ParseTuple(args, "y*y*w*", &bt, &bv, &bo)) return NULL;
    PyObject *ret = NULL;
    Py_ssize_t n = bv.len / (Py_ssize_t)sizeof(double);
    if (bt.len != bv.len || bo.len != bv.len || bv.len % (Py_ssize_t)sizeof(double)) {
        PyErr_SetString(PyExc_ValueError, "score_into needs three float64 buffers of one length");
        goto done;
    }
    const double *ts = (const double *)bt.buf, *vs = (const double *)bv.buf;
    double *out = (double *)bo.buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        double s = kernel_update(self, ts[i], vs[i]);
        if (s == -1.0 && PyErr_Occurred()) goto done;
        out[i] = s;
    }
    ret = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&bt);
    PyBuffer_Release(&bv);
    PyBuffer_Release(&bo);
    return ret;
}

static Py_ssize_t tail_bytes(const Tail *t) {
    return (t->len + t->hi.cap + t->lo.cap) * (Py_ssize_t)sizeof(double);
}

static PyObject *Kernel_state_bytes(Kernel *self, PyObject *Py_UNUSED(ignored)) {
    Py_ssize_t b = (Py_ssize_t)Py_TYPE(self)->tp_basicsize;
    b += tail_bytes(&self->value) + tail_bytes(&self->resid) + tail_bytes(&self->season) +
         tail_bytes(&self->short_tail) + tail_bytes(&self->long_tail) +
         (self->stuck_window > 0 ? tail_bytes(&self->stuck) : 0);
    b += self->counts.cap * (Py_ssize_t)(sizeof(int64_t) + sizeof(int32_t));
    b += (self->short_window + self->long_window) * (Py_ssize_t)sizeof(double);
    b += 2 * self->lag_cap * (Py_ssize_t)sizeof(double);
    return PyLong_FromSsize_t(b);
}

static PyObject *Kernel_internals(Kernel *self, PyObject *Py_UNUSED(ignored)) {
    /* For tests and status pages: sizes of the bounded structures. */
    return Py_BuildValue("{s:n,s:n,s:n,s:n,s:i}", "value_n", self->value.n, "lagged",
                         self->lag_len, "bins", self->counts.size, "suppressing",
                         self->suppress_left, "season_active",
                         (int)(self->ss_var < self->season_gate * self->x_var));
}

static PyObject *Kernel_get_n(Kernel *self, void *c) { return PyLong_FromSsize_t(self->n); }
static PyObject *Kernel_get_last_score(Kernel *self, void *c) {
    return PyFloat_FromDouble(self->last_score);
}
static PyObject *Kernel_get_last_pvalue(Kernel *self, void *c) {
    return PyFloat_FromDouble(self->last_pvalue);
}

static PyMethodDef Kernel_methods[] = {
    {"update", (PyCFunction)(void (*)(void))Kernel_update, METH_FASTCALL,
     "update(timestamp, value) -> score of one point (in time order)"},
    {"_score_into", (PyCFunction)Kernel_score_into, METH_VARARGS,
     "_score_into(ts, values, out): score float64 buffers in order into out"},
    {"state_bytes", (PyCFunction)Kernel_state_bytes, METH_NOARGS,
     "bytes of state held by this detector (struct + every buffer)"},
    {"_internals", (PyCFunction)Kernel_internals, METH_NOARGS, "sizes of the bounded state"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Kernel_getset[] = {
    {"n", (getter)Kernel_get_n, NULL, "points scored (finite values)", NULL},
    {"last_score", (getter)Kernel_get_last_score, NULL, "score of the last point", NULL},
    {"last_pvalue", (getter)Kernel_get_last_pvalue, NULL, "p-value of the last point", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject KernelType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "twin.models.statistical._detector_kernel.Kernel",
    .tp_basicsize = sizeof(Kernel),
    .tp_itemsize = 0,
    .tp_dealloc = (destructor)Kernel_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "Compiled streaming anomaly detector state (see anomaly.py).",
    .tp_methods = Kernel_methods,
    .tp_getset = Kernel_getset,
    .tp_init = (initproc)Kernel_init,
    .tp_new = PyType_GenericNew,
};

static struct PyModuleDef kernel_module = {
    PyModuleDef_HEAD_INIT, "_detector_kernel",
    "Compiled kernel of the streaming anomaly detector.", -1, NULL, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__detector_kernel(void) {
    if (PyType_Ready(&KernelType) < 0) return NULL;
    PyObject *m = PyModule_Create(&kernel_module);
    if (!m) return NULL;
    Py_INCREF(&KernelType);
    if (PyModule_AddObject(m, "Kernel", (PyObject *)&KernelType) < 0) {
        Py_DECREF(&KernelType);
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddIntConstant(m, "ABI", 1) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
