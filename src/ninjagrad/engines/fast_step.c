/* ninjagrad.engines._fast_step: the fast engine's training steps, compiled when the package is installed.
 *
 * The steps themselves are fast_step_kernel.h; this file holds what they need around them:
 *   - BLAS: scipy's OpenBLAS, called through the function pointers scipy.linalg.cython_blas exports
 *     (fast.py hands them over with set_blas), so no BLAS is linked at build time;
 *   - exp and tanh for float32 that the compiler can vectorise (exp32, tanh32);
 *   - the arenas' layouts: each piece's size filled in one function, their offsets by lay_out; the
 *     kernels see them as structs of named pointers, and Python reads the parameters' order and shapes
 *     from param_layout;
 *   - a small pool of threads for the blocked step's groups (run_groups);
 *   - one copy of the kernels per instruction set on x86-64 with GCC (AVX-512, AVX2 + FMA, baseline),
 *     the best one the CPU has chosen at import;
 *   - Step, the object fast.py makes per batch size: it checks the arrays it is given once, owns the
 *     activations' arena, and runs steps on minibatches of indices (Step.run).
 *
 * Compiled ahead of time, when the package is installed, the steps need no compiler, JIT or LLVM at run
 * time: a run's first step is as fast as the others.
 *
 * B batch, T context (block_size), E n_embd, K = T*E, H n_hidden, V vocab, N training examples
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#define HAVE_THREADS 1
#endif

#if defined(_MSC_VER) && !defined(__clang__)
#define restrict __restrict
#endif

#define BN_EPS 1e-5  /* the same as ops.BN_EPS */
#define ALIGN 16     /* every piece of an arena starts on a multiple of 16 elements (64 bytes in float32) */

/* --- BLAS ------------------------------------------------------------------------------------- */

typedef void sgemm_fn(const char *ta, const char *tb, const int *m, const int *n, const int *k, const float *alpha,
                      const float *a, const int *lda, const float *b, const int *ldb, const float *beta, float *c,
                      const int *ldc);
typedef void dgemm_fn(const char *ta, const char *tb, const int *m, const int *n, const int *k, const double *alpha,
                      const double *a, const int *lda, const double *b, const int *ldb, const double *beta,
                      double *c, const int *ldc);
static sgemm_fn *blas_sgemm;
static dgemm_fn *blas_dgemm;

/* Row-major C (M, N) = op(A) op(B) (+ beta C), op = 'N' or 'T', through the column-major Fortran
 * BLAS: a row-major matrix is its transpose in column-major order, so C^T = op(B)^T op(A)^T is
 * asked for, with the operands swapped and the same flags. */
static inline void sgemm_rm(char ta, char tb, int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                            const float *B, int64_t ldb, float beta, float *C, int64_t ldc)
{
    int m = (int)N, n = (int)M, k = (int)K, la = (int)ldb, lb = (int)lda, lc = (int)ldc;
    float one = 1.0f;
    blas_sgemm(&tb, &ta, &m, &n, &k, &one, B, &la, A, &lb, &beta, C, &lc);
}

static inline void dgemm_rm(char ta, char tb, int64_t M, int64_t N, int64_t K, const double *A, int64_t lda,
                            const double *B, int64_t ldb, double beta, double *C, int64_t ldc)
{
    int m = (int)N, n = (int)M, k = (int)K, la = (int)ldb, lb = (int)lda, lc = (int)ldc;
    double one = 1.0;
    blas_dgemm(&tb, &ta, &m, &n, &k, &one, B, &la, A, &lb, &beta, C, &lc);
}

/* --- exp and tanh for float32, vectorisable ----------------------------------------------------
 * A call of libm's expf or tanhf per element is one call per element: at the lecture's shapes a
 * step makes ~7,000, which would cost more than all the matmuls. These are plain arithmetic (a
 * range reduction, a polynomial, an exponent built from bits), so a loop over them compiles to
 * vector instructions. Accurate to a few units in the last place of float32; double keeps libm.
 *
 *     exp(x)  = 2^n exp(r),  n = floor(x / ln 2 + 1/2),  r = x - n ln 2,  |r| <= ln(2) / 2
 *     tanh(x) = x P(x^2) / Q(x^2)  for |x| <= 9, a rational fit; +-1 beyond
 *
 * expm1(r) ~ r + r^2 (P0 + P1 r + P2 r^2 + P3 r^3 + P4 r^4) on |r| <= ln(2)/2 is a least-squares fit of
 * (expm1(r) - r) / r^2 at 400 Chebyshev nodes of that interval, made in double with NumPy's
 * Polynomial.fit: relative error 2.5e-8 (~0.2 ulp of float32), where the Taylor series needs terms to r^7
 * for the same. tanh(x) ~ x P(x^2) / Q(x^2) on |x| <= TANH_BIG, P and Q of degree 4 (Q(0) = 1), is a
 * rational fit made by tools/fit_tanh.py (least squares on the relative error, reweighted toward the
 * minimax fit): < 3 ulp in float32, from nine multiply-adds and one division, half the work of going
 * through expm1. tests/test_fast_engine.py holds both to 4 ulp of libm in double. */
#define LOG2E 1.4426950408889634f
#define LN2_HI 0.693359375f  /* ln 2 in two parts, so that n * LN2_HI is exact (Cody and Waite) */
#define LN2_LO -2.12194440e-4f
#define EXP_MIN -87.0f  /* exp(-87) ~ 1.6e-38 is still a normal float32; below it we return that */
#define EXP_MAX 88.0f
#define TANH_BIG 9.0f  /* float32 tanh is 1 - 2^-24 at 9 and 1.0 from 9.01: past 9, within one step of it */

static inline float clampf(float x, float lo, float hi)
{
    x = x < lo ? lo : x;
    return x > hi ? hi : x;
}

static inline float exp32(float x)
{
    x = clampf(x, EXP_MIN, EXP_MAX);
    float n = floorf(x * LOG2E + 0.5f);
    float r = (x - n * LN2_HI) - n * LN2_LO;
    float q = r + r * r * (0.5f + r * (0.16666576266288757f + r * (0.04166646674275398f +
                                       r * (0.008363175205886364f + r * 0.0013933643931522965f))));  /* expm1(r) */
    int32_t bits = ((int32_t)n + 127) << 23;  /* 2^n: the exponent field is n + 127 */
    float s;
    memcpy(&s, &bits, sizeof s);
    return s + s * q;
}

static inline float tanh32(float x)
{
    float a = clampf(x, -TANH_BIG, TANH_BIG);
    float s = a * a;
    float p = a * (0.99999997955849318f + s * (0.1338106156974242f + s * (0.0034956303708691652f +
                   s * (2.0609761731129804e-05f + s * 1.3355576286382071e-08f))));
    float q = 1.0f + s * (0.46714377195989493f + s * (0.025877144001049568f + s * (0.00032857032057243506f +
                          s * 7.7769381794564071e-07f)));
    return clampf(p / q, -1.0f, 1.0f);
}

/* --- the training set and the arenas ---------------------------------------------------------- */

/* The training set as the engine keeps it: contexts X (N, T) and targets Y (N,), uint8 or int32,
 * strided views of one (N, T+1) array, read where they lie. */
typedef struct {
    const char *X, *Y;
    int64_t N, T, x_row, x_col, y_step, itemsize;  /* strides in bytes */
} Data;

static inline int64_t data_at(const Data *d, const char *p)
{
    if (d->itemsize == 1)
        return *(const uint8_t *)p;
    int32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline int64_t data_x(const Data *d, int64_t row, int64_t t)
{
    return data_at(d, d->X + row * d->x_row + t * d->x_col);
}

static inline int64_t data_y(const Data *d, int64_t row)
{
    return data_at(d, d->Y + row * d->y_step);
}

/* The step's sizes: B batch, T context, E n_embd, K = T*E, H n_hidden, V vocab. */
typedef struct {
    int64_t B, T, E, K, H, V;
} Dims;

/* The blocked step's column blocks of the hidden layer (see fast_step_kernel.h): block i is the columns
 * bounds[i] .. bounds[i+1], at most wmax wide; thread group g takes the blocks g, g + ngroups, ...; each
 * goes down the batch in chunks of at most `chunk` elements. */
typedef struct {
    int64_t ngroups, nblk, wmax, chunk;
    const int64_t *bounds;  /* nblk + 1 column bounds */
} Blocks;

/* rows * w of the chunks the blocked step goes down the batch in: 128 KB in float32, so that a chunk's dh,
 * the rows of h and xhat and the logits it meets stay in L1/L2 (at B=4096, H=1024 on one core, 32K elements
 * a chunk beat 8K, 16K, 64K and 128K). */
#define ROW_CHUNK_ELEMENTS (32 * 1024)

static int64_t block_rows(int64_t B, int64_t w)
{
    int64_t rows = ROW_CHUNK_ELEMENTS / w;
    rows = rows < 16 ? 16 : rows;
    return rows < B ? rows : B;
}

static int64_t block_chunk(int64_t B, int64_t wmax)
{
    int64_t chunk = ROW_CHUNK_ELEMENTS > 16 * wmax ? ROW_CHUNK_ELEMENTS : 16 * wmax;
    return chunk < B * wmax ? chunk : B * wmax;
}

/* Each arena is one array of `real`, its pieces one after the other, each starting on a multiple of ALIGN
 * elements; the gaps between pieces are zero in the parameter arenas. fill_in_*_sizes says how large each
 * piece is (its name in the enum is its place); lay_out says where each starts. The kernels reach the
 * pieces through structs of named pointers (fast_step_kernel.h), pointed in one place each. */

/* The parameter arena, and the gradient arena laid out the same way. W2 is kept transposed: the backward's
 * dh = dlogits W2^T and dW2^T = dlogits^T h are then plain row-major products, ~2x faster in OpenBLAS than
 * on transposed operands for H x 27. */
enum { PARAM_C, PARAM_W1, PARAM_B1, PARAM_W2T, PARAM_B2, PARAM_BNGAIN, PARAM_BNBIAS, NPARAMS };

/* Each piece's name as the model has it, whether it is kept transposed, and its (rows, cols) here. */
static const char *const PARAM_NAMES[NPARAMS] = {"C", "W1", "b1", "W2", "b2", "bngain", "bnbias"};
static const int PARAM_TRANSPOSED[NPARAMS] = {[PARAM_W2T] = 1};

static void fill_in_param_shapes(int64_t rows[NPARAMS], int64_t cols[NPARAMS], const Dims *d)
{
    rows[PARAM_C] = d->V, cols[PARAM_C] = d->E;
    rows[PARAM_W1] = d->K, cols[PARAM_W1] = d->H;
    rows[PARAM_B1] = 1, cols[PARAM_B1] = d->H;
    rows[PARAM_W2T] = d->V, cols[PARAM_W2T] = d->H;
    rows[PARAM_B2] = 1, cols[PARAM_B2] = d->V;
    rows[PARAM_BNGAIN] = 1, cols[PARAM_BNGAIN] = d->H;
    rows[PARAM_BNBIAS] = 1, cols[PARAM_BNBIAS] = d->H;
}

static void fill_in_param_sizes(int64_t size[NPARAMS], const Dims *d)
{
    int64_t rows[NPARAMS], cols[NPARAMS];
    fill_in_param_shapes(rows, cols, d);
    for (int i = 0; i < NPARAMS; i++)
        size[i] = rows[i] * cols[i];
}

/* The whole-batch step's activations: embcat, dembcat (B, K); hprebn (then xhat), h, dh (B, H); logits^T
 * (then dlogits^T) (V, B); batchnorm's mean and var_inv (H); the softmax's per-example max (B); the
 * backward's column scratch (3 H). */
enum { ACT_EMBCAT, ACT_DEMBCAT, ACT_HPREBN, ACT_H, ACT_DH, ACT_LOGITST, ACT_MEAN, ACT_VAR_INV, ACT_COLMAX,
       ACT_SCRATCH, NACTS };

static void fill_in_act_sizes(int64_t size[NACTS], const Dims *d)
{
    size[ACT_EMBCAT] = size[ACT_DEMBCAT] = d->B * d->K;
    size[ACT_HPREBN] = size[ACT_H] = size[ACT_DH] = d->B * d->H;
    size[ACT_LOGITST] = d->V * d->B;
    size[ACT_MEAN] = size[ACT_VAR_INV] = d->H;
    size[ACT_COLMAX] = d->B;
    size[ACT_SCRATCH] = 3 * d->H;
}

/* The blocked step's activations: the xhat and h panels (B*H each, block by block); logits^T (V, B); the
 * groups' partial logits^T (g, V, B); each group's tables (g, T, V, wmax), partial dC (g, V, E) and dh
 * (g, chunk); mean, var_inv (H); the softmax's per-example max (B); each group's column scratch
 * (g, 2 wmax). */
enum { BLK_XHAT, BLK_H, BLK_LOGITST, BLK_LOGITS_G, BLK_TABLES, BLK_DC_G, BLK_DH, BLK_MEAN, BLK_VAR_INV,
       BLK_COLMAX, BLK_COLS, NBLKACTS };

static void fill_in_blocked_sizes(int64_t size[NBLKACTS], const Dims *d, const Blocks *b)
{
    int64_t g = b->ngroups;
    size[BLK_XHAT] = size[BLK_H] = d->B * d->H;
    size[BLK_LOGITST] = d->V * d->B;
    size[BLK_LOGITS_G] = g * d->V * d->B;
    size[BLK_TABLES] = g * d->T * d->V * b->wmax;
    size[BLK_DC_G] = g * d->V * d->E;
    size[BLK_DH] = g * b->chunk;
    size[BLK_MEAN] = size[BLK_VAR_INV] = d->H;
    size[BLK_COLMAX] = d->B;
    size[BLK_COLS] = g * 2 * b->wmax;
}

#define NWORK ((int)NACTS > (int)NBLKACTS ? (int)NACTS : (int)NBLKACTS)  /* pieces of either activations' arena */

/* offset[i] = where piece i starts, each on a multiple of ALIGN; returns the arena's size. */
static int64_t lay_out(int64_t *offset, const int64_t *size, int n)
{
    int64_t at = 0;
    for (int i = 0; i < n; i++) {
        offset[i] = at;
        at += (size[i] + ALIGN - 1) / ALIGN * ALIGN;
    }
    return at;
}

/* Doubles the step sums in: the softmax's (B), then batchnorm's column sums (2 H for the whole-batch
 * step's forward, 3 wmax a group for the blocked step's forward and backward). */
static int64_t dwork_size(const Dims *d, const Blocks *b)
{
    return d->B + (b ? 3 * b->ngroups * b->wmax : 2 * d->H);
}

/* What a call of the steps works on: the sizes, the training set, the three arenas with their offsets, the
 * minibatch's targets and the double scratch; blocks NULL for the whole-batch step. */
typedef struct {
    Dims dims;
    Data data;
    const Blocks *blocks;
    void *P, *G, *work;
    int64_t param_size;  /* elements of P (and G) */
    int64_t param_off[NPARAMS], work_off[NWORK];
    int64_t *Yb;
    double *dwork;
} Arenas;

/* --- threads for the blocked step's groups ------------------------------------------------------
 * Group 0 runs on the calling thread, group g on worker g, each worker started on first use and then
 * asleep on a condition variable between calls (no spinning: the machines this runs on are shared, and
 * spinning threads took the CPU from torch's in the same process). Waking them costs tens of
 * microseconds, against milliseconds of work per call at the batch sizes that use them. */

typedef void group_fn(void *ctx, int64_t g);

#define MAX_GROUPS 256  /* the most groups (threads) a blocked step may ask for; the module's MAX_GROUPS */

#ifdef HAVE_THREADS

static struct {
    pthread_mutex_t lock;  /* one run_groups at a time, process-wide */
    pthread_mutex_t mu;
    pthread_cond_t go, done;
    int64_t started;  /* workers 1 .. started are running */
    uint64_t generation;  /* bumped for every call: a worker runs once per generation */
    uint64_t birth[MAX_GROUPS];  /* the generation before worker g's first: it runs every later one */
    int64_t ngroups, remaining;
    group_fn *fn;
    void *ctx;
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER};

static void *pool_worker(void *arg)
{
    int64_t g = (int64_t)(intptr_t)arg;
    pthread_mutex_lock(&pool.mu);
    uint64_t seen = pool.birth[g];
    for (;;) {
        while (pool.generation == seen)
            pthread_cond_wait(&pool.go, &pool.mu);
        seen = pool.generation;
        if (g >= pool.ngroups)
            continue;  /* not needed this time */
        group_fn *fn = pool.fn;
        void *ctx = pool.ctx;
        pthread_mutex_unlock(&pool.mu);
        fn(ctx, g);
        pthread_mutex_lock(&pool.mu);
        if (--pool.remaining == 0)
            pthread_cond_signal(&pool.done);
    }
    return NULL;
}

/* After fork() only the forking thread exists in the child: its workers must be started again. */
static void pool_after_fork(void)
{
    pthread_mutex_init(&pool.lock, NULL);
    pthread_mutex_init(&pool.mu, NULL);
    pthread_cond_init(&pool.go, NULL);
    pthread_cond_init(&pool.done, NULL);
    pool.started = 0;
}

/* fn(ctx, g) for g = 0 .. ngroups-1, group g on thread g (those beyond the threads there are run on this
 * one); returns when all are done. */
static void run_groups(int64_t ngroups, group_fn *fn, void *ctx)
{
    if (ngroups <= 1) {
        if (ngroups == 1)
            fn(ctx, 0);
        return;
    }
    pthread_mutex_lock(&pool.lock);
    pthread_mutex_lock(&pool.mu);
    while (pool.started < ngroups - 1 && pool.started < MAX_GROUPS - 1) {
        pthread_t t;
        pool.birth[pool.started + 1] = pool.generation;
        if (pthread_create(&t, NULL, pool_worker, (void *)(intptr_t)(pool.started + 1)) != 0)
            break;  /* no more threads: the groups left over run here */
        pthread_detach(t);
        pool.started++;
    }
    int64_t helpers = pool.started < ngroups - 1 ? pool.started : ngroups - 1;
    pool.fn = fn, pool.ctx = ctx, pool.ngroups = helpers + 1, pool.remaining = helpers;
    pool.generation++;
    pthread_cond_broadcast(&pool.go);
    pthread_mutex_unlock(&pool.mu);
    fn(ctx, 0);
    for (int64_t g = helpers + 1; g < ngroups; g++)
        fn(ctx, g);
    pthread_mutex_lock(&pool.mu);
    while (pool.remaining > 0)
        pthread_cond_wait(&pool.done, &pool.mu);
    pthread_mutex_unlock(&pool.mu);
    pthread_mutex_unlock(&pool.lock);
}
#else
static void run_groups(int64_t ngroups, group_fn *fn, void *ctx)
{
    for (int64_t g = 0; g < ngroups; g++)
        fn(ctx, g);
}
#endif

/* --- the kernel, once per type and instruction set --------------------------------------------- */

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)

/* nsteps steps on the minibatches ixs (nsteps * B int64s) over the arenas; losses[s] gets step s's loss. */
typedef int64_t train_steps_fn(const Arenas *A, const int64_t *ixs, int64_t nsteps, double lr, int update,
                               double *losses);

/* fast_step_variants.h includes the kernels once per instruction set, for the type set here, and undefines
 * these macros after. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define MULTIVERSION 1
#endif

#define real float
#define GEMM sgemm_rm
#define EXP exp32
#define TANH tanh32
#define NAME(f) CAT(CAT(f, _float_), ISA)
#include "fast_step_variants.h"

#define real double
#define GEMM dgemm_rm
#define EXP exp
#define TANH tanh
#define NAME(f) CAT(CAT(f, _double_), ISA)
#include "fast_step_variants.h"

typedef void exp_tanh_fn(int64_t n, const float *x, float *e, float *t);

typedef struct {
    const char *name;
    train_steps_fn *f32, *f64;
    exp_tanh_fn *exp_tanh;
} Variant;

static const Variant variants[] = {
#ifdef MULTIVERSION
    {"avx512", train_steps_float_avx512, train_steps_double_avx512, exp_tanh_float_avx512},
    {"avx2", train_steps_float_avx2, train_steps_double_avx2, exp_tanh_float_avx2},
#endif
    {"generic", train_steps_float_generic, train_steps_double_generic, exp_tanh_float_generic},
};
#define NVARIANTS ((int)(sizeof variants / sizeof variants[0]))

static const Variant *current;  /* the one train_steps runs */

static int cpu_has(const char *name)
{
#ifdef MULTIVERSION
    if (!strcmp(name, "avx512"))
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
               __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (!strcmp(name, "avx2"))
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
    return !strcmp(name, "generic");
}

/* --- Python ------------------------------------------------------------------------------------- */

/* A buffer of `ndim` dimensions whose items are one of `formats` (struct codes); writable if asked. */
static int get_buffer(PyObject *obj, Py_buffer *view, const char *what, int ndim, const char *formats, int writable)
{
    int flags = PyBUF_STRIDES | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) < 0)
        return -1;
    const char *f = view->format ? view->format : "B";
    while (*f == '@' || *f == '=' || *f == '<')
        f++;
    if (view->ndim != ndim || strlen(f) != 1 || !strchr(formats, f[0])) {
        PyErr_Format(PyExc_TypeError, "%s: expected a %d-d array of one of the types '%s', got %d-d '%s'", what,
                     ndim, formats, view->ndim, view->format ? view->format : "B");
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static int contiguous(Py_buffer *view, const char *what)
{
    if (!PyBuffer_IsContiguous(view, 'C')) {
        PyErr_Format(PyExc_ValueError, "%s must be contiguous", what);
        return 0;
    }
    return 1;
}

/* --- Step: the steps on minibatches of one size, over the engine's arrays ---------------------------
 *
 *     Step(P, G, X, Y, V, E, H, B, blocks=None)      checks the arrays once, owns the activations' arena
 *     step.run(ixs, lr, update, losses) -> steps run
 *
 * P and G are the parameter and gradient arenas (param_layout), X (N, T) and Y (N,) the training set,
 * uint8 or int32 views read where they lie; blocks = [ngroups, 0, c_1, ..., H] chooses the blocked step.
 * The Step holds P, G, X and Y (their memory cannot move while it lives). Its activations' arena starts as
 * NaN, so that a pass that read what no pass wrote would show in the loss. */

typedef struct {
    PyObject_HEAD
    Py_buffer P, G, X, Y;
    int held;  /* how many of P, G, X, Y are held, in that order */
    int ready;  /* initialised: run may be called */
    int64_t *bounds;  /* the blocked step's column bounds, a copy; NULL for the whole-batch step */
    Blocks blocks;
    Arenas A;
    size_t itemsize;  /* of the arenas: 4 (float32) or 8 (float64) */
    int64_t work_size;  /* elements of the activations' arena */
} StepObject;

static void step_clear(StepObject *self)
{
    Py_buffer *held[4] = {&self->P, &self->G, &self->X, &self->Y};
    for (int i = 0; i < self->held; i++)
        PyBuffer_Release(held[i]);
    self->held = 0;
    self->ready = 0;
    PyMem_RawFree(self->bounds);
    PyMem_RawFree(self->A.work);
    PyMem_RawFree(self->A.Yb);
    PyMem_RawFree(self->A.dwork);
    self->bounds = NULL, self->A.work = NULL, self->A.Yb = NULL, self->A.dwork = NULL;
}

static void step_dealloc(StepObject *self)
{
    step_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* P and G: 1-d contiguous float arrays of one type; X (N, T) and Y (N,): uint8 or int32 alike. */
static int hold_arrays(StepObject *self, PyObject *P, PyObject *G, PyObject *X, PyObject *Y)
{
    struct { PyObject *obj; Py_buffer *view; const char *name, *formats; int ndim, writable; } arrays[4] = {
        {P, &self->P, "P", "fd", 1, 1}, {G, &self->G, "G", "fd", 1, 1},
        {X, &self->X, "X", "BiI", 2, 0}, {Y, &self->Y, "Y", "BiI", 1, 0},
    };
    for (; self->held < 4; self->held++) {
        int i = self->held;
        if (get_buffer(arrays[i].obj, arrays[i].view, arrays[i].name, arrays[i].ndim, arrays[i].formats,
                       arrays[i].writable) < 0)
            return -1;
    }
    if (!contiguous(&self->P, "P") || !contiguous(&self->G, "G"))
        return -1;
    if (self->P.itemsize != self->G.itemsize || self->X.itemsize != self->Y.itemsize ||
        (self->X.itemsize != 1 && self->X.itemsize != 4)) {
        PyErr_SetString(PyExc_TypeError, "P and G must share one float type; X and Y uint8 or int32 alike");
        return -1;
    }
    if (self->Y.shape[0] != self->X.shape[0] || self->X.shape[1] < 1) {
        PyErr_SetString(PyExc_ValueError, "bad shapes: X (N, T) with T >= 1 and Y (N,) expected");
        return -1;
    }
    self->itemsize = (size_t)self->P.itemsize;
    return 0;
}

/* [ngroups in 1..MAX_GROUPS, c_0 = 0, c_1, ..., c_n = H], bounds increasing: copied into self->blocks. */
static int take_blocks(StepObject *self, PyObject *obj, const Dims *d)
{
    Py_buffer view;
    if (get_buffer(obj, &view, "blocks", 1, "lq", 0) < 0)
        return -1;
    int ok = contiguous(&view, "blocks");
    const int64_t *bl = view.buf;
    int64_t nb = ok ? view.shape[0] : 0, wmax = 0;
    if (ok) {
        ok = nb >= 3 && bl[0] >= 1 && bl[0] <= MAX_GROUPS && bl[1] == 0 && bl[nb - 1] == d->H;
        for (int64_t i = 1; ok && i < nb - 1; i++) {
            ok = bl[i + 1] > bl[i];
            wmax = bl[i + 1] - bl[i] > wmax ? bl[i + 1] - bl[i] : wmax;
        }
        if (!ok)
            PyErr_Format(PyExc_ValueError, "blocks: [ngroups in 1..%d, 0, ..., H=%lld] with increasing column "
                                           "bounds expected", MAX_GROUPS, (long long)d->H);
    }
    if (ok && !(self->bounds = PyMem_RawMalloc((size_t)(nb - 1) * sizeof(int64_t)))) {
        PyErr_NoMemory();
        ok = 0;
    }
    if (ok) {
        memcpy(self->bounds, bl + 1, (size_t)(nb - 1) * sizeof(int64_t));
        self->blocks = (Blocks){.ngroups = bl[0], .nblk = nb - 2, .wmax = wmax, .chunk = block_chunk(d->B, wmax),
                                .bounds = self->bounds};
    }
    PyBuffer_Release(&view);
    return ok ? 0 : -1;
}

/* The arenas' offsets; P and G must be large enough. */
static int lay_out_arenas(StepObject *self)
{
    Arenas *A = &self->A;
    int64_t psize[NPARAMS], wsize[NWORK];
    fill_in_param_sizes(psize, &A->dims);
    A->param_size = lay_out(A->param_off, psize, NPARAMS);
    if (A->blocks) {
        fill_in_blocked_sizes(wsize, &A->dims, A->blocks);
        self->work_size = lay_out(A->work_off, wsize, NBLKACTS);
    } else {
        fill_in_act_sizes(wsize, &A->dims);
        self->work_size = lay_out(A->work_off, wsize, NACTS);
    }
    if (self->P.shape[0] < A->param_size || self->G.shape[0] < A->param_size) {
        PyErr_Format(PyExc_ValueError, "arenas too small: P and G need %lld elements", (long long)A->param_size);
        return -1;
    }
    return 0;
}

/* The activations' arena (NaN), the minibatch's targets and the double scratch. */
static int allocate_work(StepObject *self)
{
    Arenas *A = &self->A;
    A->work = PyMem_RawMalloc((size_t)self->work_size * self->itemsize);
    A->Yb = PyMem_RawMalloc((size_t)A->dims.B * sizeof(int64_t));
    A->dwork = PyMem_RawMalloc((size_t)dwork_size(&A->dims, A->blocks) * sizeof(double));
    if (!A->work || !A->Yb || !A->dwork) {
        PyErr_NoMemory();
        return -1;
    }
    for (int64_t i = 0; i < self->work_size; i++) {
        if (self->itemsize == sizeof(float))
            ((float *)A->work)[i] = NAN;
        else
            ((double *)A->work)[i] = NAN;
    }
    return 0;
}

static int step_init(StepObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"P", "G", "X", "Y", "V", "E", "H", "B", "blocks", NULL};
    PyObject *P, *G, *X, *Y, *blocks = Py_None;
    long long V, E, H, B;
    step_clear(self);
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOOLLLL|O:Step", kwlist, &P, &G, &X, &Y, &V, &E, &H, &B, &blocks))
        return -1;
    if (hold_arrays(self, P, G, X, Y) < 0)
        return -1;
    int64_t T = self->X.shape[1];
    if (V < 1 || E < 1 || H < 1 || B < 2) {
        PyErr_Format(PyExc_ValueError, "bad shapes: V, E, H >= 1 and a batch of >= 2 expected; got V=%lld E=%lld "
                                       "H=%lld B=%lld", V, E, H, B);
        return -1;
    }
    self->A.dims = (Dims){.B = B, .T = T, .E = E, .K = T * E, .H = H, .V = V};
    self->A.data = (Data){self->X.buf, self->Y.buf, self->X.shape[0], T, self->X.strides[0], self->X.strides[1],
                          self->Y.strides[0], self->X.itemsize};
    self->A.P = self->P.buf, self->A.G = self->G.buf;
    self->A.blocks = NULL;
    if (blocks != Py_None) {
        if (take_blocks(self, blocks, &self->A.dims) < 0)
            return -1;
        self->A.blocks = &self->blocks;
    }
    if (lay_out_arenas(self) < 0 || allocate_work(self) < 0)
        return -1;
    self->ready = 1;
    return 0;
}

/* ixs: the minibatches, (nsteps, B) or one (B,), C-contiguous int64; losses: float64, one per step. */
static PyObject *step_run(StepObject *self, PyObject *args)
{
    PyObject *oixs, *olosses;
    double lr;
    int update;
    if (!PyArg_ParseTuple(args, "OdpO:run", &oixs, &lr, &update, &olosses))
        return NULL;
    if (!self->ready)
        return PyErr_Format(PyExc_RuntimeError, "Step: not initialised");
    Py_buffer ixs, losses;
    if (PyObject_GetBuffer(oixs, &ixs, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
        return NULL;
    if (get_buffer(olosses, &losses, "losses", 1, "d", 1) < 0) {
        PyBuffer_Release(&ixs);
        return NULL;
    }
    const char *f = ixs.format ? ixs.format : "B";
    while (*f == '@' || *f == '=' || *f == '<')
        f++;
    int64_t B = self->A.dims.B, nsteps = ixs.ndim == 2 ? ixs.shape[0] : 1;
    PyObject *result = NULL;
    if ((ixs.ndim != 1 && ixs.ndim != 2) || ixs.shape[ixs.ndim - 1] != B || ixs.itemsize != 8 || strlen(f) != 1 ||
        !strchr("lq", f[0]))
        PyErr_Format(PyExc_ValueError, "ixs: contiguous int64 minibatches of %lld, (n, B) or (B,), expected",
                     (long long)B);
    else if (!contiguous(&losses, "losses"))
        ;
    else if (losses.shape[0] < nsteps)
        PyErr_Format(PyExc_ValueError, "losses: room for %lld steps expected", (long long)nsteps);
    else {
        train_steps_fn *run = self->itemsize == sizeof(float) ? current->f32 : current->f64;
        int64_t done;
        Py_BEGIN_ALLOW_THREADS
        done = run(&self->A, ixs.buf, nsteps, lr, update, losses.buf);
        Py_END_ALLOW_THREADS
        result = PyLong_FromLongLong(done);
    }
    PyBuffer_Release(&ixs);
    PyBuffer_Release(&losses);
    return result;
}

static PyObject *step_work_size(StepObject *self, void *closure)
{
    return PyLong_FromLongLong(self->work_size);
}

static PyMethodDef step_methods[] = {
    {"run", (PyCFunction)step_run, METH_VARARGS,
     "run(ixs, lr, update, losses) -> steps run\n\n"
     "A training step of the lecture's MLP per minibatch of ixs ((n, B) or (B,) int64 indices into the\n"
     "training set); losses[s] gets step s's loss. With update false, the gradients are left in G and the\n"
     "parameters untouched. A step whose loss is not finite (or whose minibatch holds an index outside the\n"
     "training set: its loss is NaN and nothing is computed) is the last one run."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef step_getset[] = {
    {"work_size", (getter)step_work_size, NULL, "elements of the activations' arena", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject StepType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ninjagrad.engines._fast_step.Step",
    .tp_doc = "Step(P, G, X, Y, V, E, H, B, blocks=None): the fast engine's steps on minibatches of B; "
              "blocks None runs the whole batch layer by layer on this thread (BLAS threads aside), blocks = "
              "[ngroups, 0, c_1, ..., H] the blocked step, column blocks c_i..c_i+1 dealt to ngroups threads.",
    .tp_basicsize = sizeof(StepObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)step_init,
    .tp_dealloc = (destructor)step_dealloc,
    .tp_methods = step_methods,
    .tp_getset = step_getset,
};

/* --- the module's functions ---------------------------------------------------------------------- */

/* (size, ((name, offset, (rows, cols), transposed), ...)): the parameter arena's pieces in their order. */
static PyObject *py_param_layout(PyObject *self, PyObject *args)
{
    long long V, E, K, H;
    if (!PyArg_ParseTuple(args, "LLLL:param_layout", &V, &E, &K, &H))
        return NULL;
    Dims d = {.E = E, .K = K, .H = H, .V = V};
    int64_t rows[NPARAMS], cols[NPARAMS], size[NPARAMS], offset[NPARAMS];
    fill_in_param_shapes(rows, cols, &d);
    fill_in_param_sizes(size, &d);
    int64_t total = lay_out(offset, size, NPARAMS);
    PyObject *pieces = PyTuple_New(NPARAMS);
    for (int i = 0; pieces && i < NPARAMS; i++) {
        PyObject *piece = Py_BuildValue("(sL(LL)O)", PARAM_NAMES[i], (long long)offset[i], (long long)rows[i],
                                        (long long)cols[i], PARAM_TRANSPOSED[i] ? Py_True : Py_False);
        if (!piece) {
            Py_CLEAR(pieces);
            break;
        }
        PyTuple_SET_ITEM(pieces, i, piece);
    }
    return pieces ? Py_BuildValue("(LN)", (long long)total, pieces) : NULL;
}

static void *capsule_pointer(PyObject *capsule)
{
    if (!PyCapsule_CheckExact(capsule)) {
        PyErr_SetString(PyExc_TypeError, "set_blas takes the capsules of scipy.linalg.cython_blas.__pyx_capi__");
        return NULL;
    }
    return PyCapsule_GetPointer(capsule, PyCapsule_GetName(capsule));
}

static PyObject *py_set_blas(PyObject *self, PyObject *args)
{
    PyObject *s, *d;
    if (!PyArg_ParseTuple(args, "OO:set_blas", &s, &d))
        return NULL;
    void *ps = capsule_pointer(s), *pd = ps ? capsule_pointer(d) : NULL;
    if (!pd)
        return NULL;
    blas_sgemm = (sgemm_fn *)ps;
    blas_dgemm = (dgemm_fn *)pd;
    Py_RETURN_NONE;
}

static PyObject *py_available_isas(PyObject *self, PyObject *unused)
{
    PyObject *out = PyList_New(0);
    for (int i = 0; out && i < NVARIANTS; i++) {
        if (!cpu_has(variants[i].name))
            continue;
        PyObject *name = PyUnicode_FromString(variants[i].name);
        if (!name || PyList_Append(out, name) < 0) {
            Py_XDECREF(name);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(name);
    }
    return out;
}

static PyObject *py_use_isa(PyObject *self, PyObject *args)
{
    const char *name;
    if (!PyArg_ParseTuple(args, "s:use_isa", &name))
        return NULL;
    for (int i = 0; i < NVARIANTS; i++) {
        if (!strcmp(variants[i].name, name)) {
            if (!cpu_has(name))
                return PyErr_Format(PyExc_ValueError, "this CPU cannot run the %s kernel", name);
            current = &variants[i];
            Py_RETURN_NONE;
        }
    }
    return PyErr_Format(PyExc_ValueError, "no kernel for the instruction set %s", name);
}

static PyObject *py_exp_tanh(PyObject *self, PyObject *args)
{
    PyObject *ox, *oe, *ot;
    if (!PyArg_ParseTuple(args, "OOO:exp_tanh", &ox, &oe, &ot))
        return NULL;
    Py_buffer x, e, t;
    if (get_buffer(ox, &x, "x", 1, "f", 0) < 0)
        return NULL;
    if (get_buffer(oe, &e, "e", 1, "f", 1) < 0) {
        PyBuffer_Release(&x);
        return NULL;
    }
    if (get_buffer(ot, &t, "t", 1, "f", 1) < 0) {
        PyBuffer_Release(&x);
        PyBuffer_Release(&e);
        return NULL;
    }
    PyObject *result = NULL;
    if (!PyBuffer_IsContiguous(&x, 'C') || !PyBuffer_IsContiguous(&e, 'C') || !PyBuffer_IsContiguous(&t, 'C') ||
        e.shape[0] != x.shape[0] || t.shape[0] != x.shape[0])
        PyErr_SetString(PyExc_ValueError, "exp_tanh: x, e, t must be contiguous float32 arrays of one length");
    else {
        current->exp_tanh(x.shape[0], x.buf, e.buf, t.buf);
        result = Py_NewRef(Py_None);
    }
    PyBuffer_Release(&x);
    PyBuffer_Release(&e);
    PyBuffer_Release(&t);
    return result;
}

/* The six matmuls of a float32 step of shapes (B, K, H, V), as `step` makes them, n times over buffers of
 * their sizes: the floor under a step's time on one core. Returns the seconds per repeat. */
static PyObject *py_matmul_floor(PyObject *self, PyObject *args)
{
    long long B, K, H, V, n;
    if (!PyArg_ParseTuple(args, "LLLLL:matmul_floor", &B, &K, &H, &V, &n))
        return NULL;
    if (B < 1 || K < 1 || H < 1 || V < 1 || n < 1 || !blas_sgemm)
        return PyErr_Format(PyExc_ValueError, "matmul_floor: positive sizes, and set_blas first");
    size_t sizes[8] = {B * K, K * H, B * H, B * H, V * H, V * B, V * H, K * H};  /* the step's operands */
    float *m[8] = {0};
    PyObject *result = NULL;
    for (int i = 0; i < 8; i++)
        if (!(m[i] = PyMem_RawCalloc(sizes[i], sizeof(float)))) {
            PyErr_NoMemory();
            goto done;
        }
    float *embcat = m[0], *W1 = m[1], *hprebn = m[2], *h = m[3], *W2T = m[4], *logitsT = m[5], *dW2T = m[6];
    float *dW1 = m[7], *dh = hprebn, *dembcat = embcat;
    PyObject *time = PyImport_ImportModule("time");
    PyObject *t0 = time ? PyObject_CallMethod(time, "perf_counter", NULL) : NULL;
    if (t0) {
        Py_BEGIN_ALLOW_THREADS
        for (long long r = 0; r < n; r++) {
            sgemm_rm('N', 'N', B, H, K, embcat, K, W1, H, 0, hprebn, H);
            sgemm_rm('N', 'T', V, B, H, W2T, H, h, H, 0, logitsT, B);
            sgemm_rm('T', 'N', B, H, V, logitsT, B, W2T, H, 0, dh, H);
            sgemm_rm('N', 'N', V, H, B, logitsT, B, h, H, 0, dW2T, H);
            sgemm_rm('N', 'T', B, K, H, dh, H, W1, H, 0, dembcat, K);
            sgemm_rm('T', 'N', K, H, B, embcat, K, dh, H, 0, dW1, H);
        }
        Py_END_ALLOW_THREADS
        PyObject *t1 = PyObject_CallMethod(time, "perf_counter", NULL);
        if (t1)
            result = PyFloat_FromDouble((PyFloat_AsDouble(t1) - PyFloat_AsDouble(t0)) / (double)n);
        Py_XDECREF(t1);
    }
    Py_XDECREF(t0);
    Py_XDECREF(time);
done:
    for (int i = 0; i < 8; i++)
        PyMem_RawFree(m[i]);
    return result;
}

static PyObject *py_isa(PyObject *self, PyObject *unused)
{
    return PyUnicode_FromString(current->name);
}

static PyMethodDef methods[] = {
    {"param_layout", py_param_layout, METH_VARARGS,
     "param_layout(V, E, K, H) -> (size, ((name, offset, (rows, cols), transposed), ...)): the parameter\n"
     "arena's pieces in their order, each under the model's name for it; a transposed piece holds the\n"
     "parameter's transpose (W2 as W2^T)."},
    {"set_blas", py_set_blas, METH_VARARGS, "set_blas(sgemm, dgemm): the capsules of scipy.linalg.cython_blas."},
    {"available_isas", py_available_isas, METH_NOARGS, "The kernel's instruction sets this CPU can run, best first."},
    {"use_isa", py_use_isa, METH_VARARGS, "use_isa(name): run the kernel compiled for that instruction set."},
    {"exp_tanh", py_exp_tanh, METH_VARARGS,
     "exp_tanh(x, e, t): e = exp(x), t = tanh(x) for float32 arrays, as the float32 step computes them."},
    {"matmul_floor", py_matmul_floor, METH_VARARGS,
     "matmul_floor(B, K, H, V, n): seconds per repeat of the six float32 matmuls of a step, n repeats."},
    {"isa", py_isa, METH_NOARGS, "The instruction set of the kernel Step.run runs."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fast_step", "The fast engine's training steps (fast_step.c).", -1, methods,
};

PyMODINIT_FUNC PyInit__fast_step(void)
{
#ifdef HAVE_THREADS
    pthread_atfork(NULL, NULL, pool_after_fork);
#endif
#ifdef MULTIVERSION
    __builtin_cpu_init();
#endif
    for (int i = 0; i < NVARIANTS && !current; i++)
        if (cpu_has(variants[i].name))
            current = &variants[i];
    if (PyType_Ready(&StepType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m && (PyModule_AddIntConstant(m, "MAX_GROUPS", MAX_GROUPS) < 0 ||
              PyModule_AddObjectRef(m, "Step", (PyObject *)&StepType) < 0))
        Py_CLEAR(m);
    return m;
}
