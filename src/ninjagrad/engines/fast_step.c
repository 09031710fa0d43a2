/* ninjagrad.engines._fast_step: the fast engine's training steps, compiled when the package is installed.
 *
 * The steps themselves are fast_step_kernel.h; this file holds what they need around them:
 *   - BLAS: scipy's OpenBLAS, called through the function pointers scipy.linalg.cython_blas exports
 *     (fast.py hands them over with set_blas), so no BLAS is linked at build time;
 *   - exp and tanh for float32 that the compiler can vectorise (exp32, tanh32);
 *   - the arenas' layouts (param_offsets, work_offsets, work_offsets_blocked);
 *   - a small pool of threads for the blocked step's groups (run_groups);
 *   - one copy of the kernels per instruction set on x86-64 with GCC (AVX-512, AVX2 + FMA, baseline),
 *     the best one the CPU has chosen at import;
 *   - train_steps, the entry point fast.py calls, which checks its arguments before anything is read.
 *
 * The steps were first written with numba. Compiled ahead of time they run as fast or faster and spare
 * every run numba's ~110 MiB of LLVM and runtime (a third of a lecture run's memory), the first run's
 * compilation (~15 s for the blocked step) and a dependency.
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
#define TANH_BIG 9.0f  /* tanh(9) rounds to 1.0 in float32 */

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

static int64_t aligned(int64_t n)
{
    return (n + ALIGN - 1) / ALIGN * ALIGN;
}

/* po: where C (V, E), W1 (K, H), b1 (H), W2^T (V, H), b2 (V), bngain (H), bnbias (H) start in the
 * parameter arena (and their gradients in the gradient arena); po[7] is its size. W2 is kept
 * transposed: the backward's dh = dlogits W2^T and dW2^T = dlogits^T h are then plain row-major
 * products, ~2x faster in OpenBLAS than on transposed operands for H x 27.
 * wo: where embcat, dembcat (B, K), hprebn/xhat, h, dh (B, H), logits^T (V, B), mean, var_inv (H), the
 * softmax's per-example max (B) and the backward's scratch (3 H) start in the activation arena;
 * wo[10] is its size. */
typedef struct {
    int64_t V, E, K, H, B;
    int64_t po[8], wo[11];
} Layout;

static void offsets(int64_t *offs, const int64_t *sizes, int n)
{
    offs[0] = 0;
    for (int i = 0; i < n; i++)
        offs[i + 1] = offs[i] + aligned(sizes[i]);
}

static void make_layout(Layout *L, int64_t V, int64_t E, int64_t K, int64_t H, int64_t B)
{
    int64_t psizes[7] = {V * E, K * H, H, V * H, V, H, H};
    int64_t wsizes[10] = {B * K, B * K, B * H, B * H, B * H, V * B, H, H, B, 3 * H};
    L->V = V, L->E = E, L->K = K, L->H = H, L->B = B;
    offsets(L->po, psizes, 7);
    offsets(L->wo, wsizes, 10);
}

/* The blocked step's layout (see fast_step_kernel.h): groups of column blocks, and where its pieces start in
 * the activation arena: the xhat and h panels (B*H each), logits^T (V, B), the groups' partial logits^T
 * (g, V, B), each group's tables (g, T, V, wmax), partial dC (g, V, E) and dh scratch (g, chunk), mean,
 * var_inv (H), the softmax's per-example max (B), each group's column scratch (g, 2 wmax); wo[11] is its
 * size. */
typedef struct {
    int64_t ngroups, nblk, wmax, chunk;
    const int64_t *bounds;  /* nblk + 1 column bounds: block i is bounds[i] .. bounds[i+1] */
    int64_t wo[12];
} Blocked;

/* rows * w of the chunks the blocked step goes down the batch in: 128 KB in float32, so a chunk's dh, the
 * rows of h and xhat and the logits it meets stay in L1/L2. Measured at B=4096, H=1024, float32, 2 cores
 * (the numba version of this step, when the first layer was still a matmul; fastest of 8 steps): 8K
 * elements 14.7 ms/step, 16K 13.6, 32K 13.0-13.4, 64K 16.6, 128K 15.7. */
#define ROW_CHUNK_ELEMENTS (32 * 1024)

static int64_t block_rows(int64_t B, int64_t w)
{
    int64_t rows = ROW_CHUNK_ELEMENTS / w;
    rows = rows < 16 ? 16 : rows;
    return rows < B ? rows : B;
}

static void make_blocked(Blocked *K, int64_t B, int64_t T, int64_t E, int64_t H, int64_t V, int64_t ngroups,
                         int64_t wmax)
{
    int64_t chunk = ROW_CHUNK_ELEMENTS > 16 * wmax ? ROW_CHUNK_ELEMENTS : 16 * wmax;
    K->ngroups = ngroups, K->wmax = wmax, K->chunk = chunk < B * wmax ? chunk : B * wmax;
    int64_t sizes[11] = {B * H, B * H, V * B, ngroups * V * B, ngroups * T * V * wmax, ngroups * V * E,
                         ngroups * K->chunk, H, H, B, ngroups * 2 * wmax};
    offsets(K->wo, sizes, 11);
}

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

typedef int64_t train_steps_fn(const Layout *L, const Blocked *K, void *P, void *G, void *work, double *dwork,
                               int64_t *Yb, const Data *d, const int64_t *ixs, int64_t nsteps, double lr,
                               int update, double *losses);

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

static const char *const ARGS = "train_steps(P, G, work, Yb, dims, Xtr, Ytr, ix_address, nsteps, lr, update, "
                                "blocks, losses)";

static PyObject *py_train_steps(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    enum { P, G, WORK, YB, DIMS, XTR, YTR, NBUF };
    static const char *names[NBUF] = {"P", "G", "work", "Yb", "dims", "Xtr", "Ytr"};
    static const char *formats[NBUF] = {"fd", "fd", "fd", "lq", "lq", "BiIl", "BiIl"};
    static const int ndims[NBUF] = {1, 1, 1, 1, 1, 2, 1};
    static const int writable[NBUF] = {1, 1, 1, 1, 0, 0, 0};
    Py_buffer v[NBUF], losses, blocks;
    int got = 0, have_losses = 0, have_blocks = 0;
    PyObject *result = NULL;
    double *dwork = NULL;

    if (nargs != 13) {
        PyErr_Format(PyExc_TypeError, "%s takes 13 arguments, got %zd", ARGS, nargs);
        return NULL;
    }
    if (!current || !blas_sgemm || !blas_dgemm) {
        PyErr_SetString(PyExc_RuntimeError, "_fast_step: call set_blas first");
        return NULL;
    }
    for (; got < NBUF; got++)
        if (get_buffer(args[got], &v[got], names[got], ndims[got], formats[got], writable[got]) < 0)
            goto done;
    if (get_buffer(args[12], &losses, "losses", 1, "d", 1) < 0)
        goto done;
    have_losses = 1;
    int64_t ix_address = PyLong_AsLongLong(args[7]), nsteps = PyLong_AsLongLong(args[8]);
    double lr = PyFloat_AsDouble(args[9]);
    int update = PyObject_IsTrue(args[10]);
    if (PyErr_Occurred() || update < 0)
        goto done;
    if (args[11] != Py_None) {
        if (get_buffer(args[11], &blocks, "blocks", 1, "lq", 0) < 0)
            goto done;
        have_blocks = 1;
        if (!contiguous(&blocks, "blocks"))
            goto done;
    }
    for (int i = 0; i < XTR; i++)  /* all but the training set, which is read through its strides */
        if (!contiguous(&v[i], names[i]))
            goto done;
    if (!contiguous(&losses, "losses"))
        goto done;

    size_t item = (size_t)v[P].itemsize;
    if ((size_t)v[G].itemsize != item || (size_t)v[WORK].itemsize != item || v[YB].itemsize != 8 ||
        v[DIMS].itemsize != 8 || v[XTR].itemsize != v[YTR].itemsize || (v[XTR].itemsize != 1 && v[XTR].itemsize != 4)) {
        PyErr_SetString(PyExc_TypeError, "P, G and work must share one float type; Yb and dims must be int64; "
                                         "Xtr and Ytr uint8 or int32 alike");
        goto done;
    }
    const int64_t *dims = (const int64_t *)v[DIMS].buf;
    int64_t B = v[YB].shape[0], N = v[XTR].shape[0], T = v[XTR].shape[1];
    if (v[DIMS].shape[0] != 3 || dims[0] < 1 || dims[1] < 1 || dims[2] < 1 || T < 1 || B < 2 ||
        v[YTR].shape[0] != N || nsteps < 0 || losses.shape[0] < nsteps) {
        PyErr_Format(PyExc_ValueError, "bad shapes: dims (V, E, H) all >= 1, a batch of >= 2, Xtr (N, T) and "
                                       "Ytr (N,), losses of >= nsteps; got B=%lld N=%lld T=%lld nsteps=%lld",
                     (long long)B, (long long)N, (long long)T, (long long)nsteps);
        goto done;
    }
    Layout L;
    make_layout(&L, dims[0], dims[1], T * dims[1], dims[2], B);
    if (v[P].shape[0] < L.po[7] || v[G].shape[0] < L.po[7] || (!have_blocks && v[WORK].shape[0] < L.wo[10])) {
        PyErr_Format(PyExc_ValueError, "arenas too small: P and G need %lld elements, work %lld",
                     (long long)L.po[7], (long long)L.wo[10]);
        goto done;
    }
    Blocked K;
    if (have_blocks) {  /* [ngroups, c_0 = 0, c_1, ..., c_n = H] */
        const int64_t *bl = (const int64_t *)blocks.buf;
        int64_t nb = blocks.shape[0], wmax = 0;
        int ok = nb >= 3 && bl[0] >= 1 && bl[0] <= MAX_GROUPS && bl[1] == 0 && bl[nb - 1] == L.H;
        for (int64_t i = 1; ok && i < nb - 1; i++) {
            ok = bl[i + 1] > bl[i];
            wmax = bl[i + 1] - bl[i] > wmax ? bl[i + 1] - bl[i] : wmax;
        }
        if (!ok) {
            PyErr_Format(PyExc_ValueError, "blocks: [ngroups in 1..%d, 0, ..., H=%lld] with increasing column "
                                           "bounds expected", MAX_GROUPS, (long long)L.H);
            goto done;
        }
        make_blocked(&K, B, T, dims[1], L.H, L.V, bl[0], wmax);
        K.nblk = nb - 2, K.bounds = bl + 1;
        if (v[WORK].shape[0] < K.wo[11]) {
            PyErr_Format(PyExc_ValueError, "arenas too small: work needs %lld elements for these blocks",
                         (long long)K.wo[11]);
            goto done;
        }
    }
    Data d = {v[XTR].buf, v[YTR].buf, N, T, v[XTR].strides[0], v[XTR].strides[1], v[YTR].strides[0],
              v[XTR].itemsize};
    /* the steps' sums in double: the softmax's (B), then batchnorm's column sums (2 H for the whole-batch
     * step's forward, 3 wmax a group for the blocked one's forward and backward) */
    int64_t columns = have_blocks ? 3 * K.ngroups * K.wmax : 2 * L.H;
    size_t ndouble = (size_t)(B + columns);
    dwork = PyMem_RawMalloc(ndouble * sizeof(double));
    if (!dwork) {
        PyErr_NoMemory();
        goto done;
    }
    train_steps_fn *run = item == sizeof(float) ? current->f32 : current->f64;
    int64_t done_steps;
    Py_BEGIN_ALLOW_THREADS
    done_steps = run(&L, have_blocks ? &K : NULL, v[P].buf, v[G].buf, v[WORK].buf, dwork, (int64_t *)v[YB].buf, &d,
                     (const int64_t *)(intptr_t)ix_address, nsteps, lr, update, (double *)losses.buf);
    Py_END_ALLOW_THREADS
    result = PyLong_FromLongLong(done_steps);
done:
    PyMem_RawFree(dwork);
    for (int i = 0; i < got; i++)
        PyBuffer_Release(&v[i]);
    if (have_losses)
        PyBuffer_Release(&losses);
    if (have_blocks)
        PyBuffer_Release(&blocks);
    return result;
}

static PyObject *tuple_of(const int64_t *x, int n)
{
    PyObject *t = PyTuple_New(n);
    for (int i = 0; t && i < n; i++) {
        PyObject *item = PyLong_FromLongLong(x[i]);
        if (!item) {
            Py_DECREF(t);
            return NULL;
        }
        PyTuple_SET_ITEM(t, i, item);
    }
    return t;
}

static PyObject *py_param_offsets(PyObject *self, PyObject *args)
{
    long long V, E, K, H;
    if (!PyArg_ParseTuple(args, "LLLL:param_offsets", &V, &E, &K, &H))
        return NULL;
    Layout L;
    make_layout(&L, V, E, K, H, 0);
    return tuple_of(L.po, 8);
}

static PyObject *py_work_offsets_blocked(PyObject *self, PyObject *args)
{
    long long B, T, E, H, V, ngroups, wmax;
    if (!PyArg_ParseTuple(args, "LLLLLLL:work_offsets_blocked", &B, &T, &E, &H, &V, &ngroups, &wmax))
        return NULL;
    Blocked K;
    make_blocked(&K, B, T, E, H, V, ngroups, wmax);
    return tuple_of(K.wo, 12);
}

static PyObject *py_work_offsets(PyObject *self, PyObject *args)
{
    long long B, K, H, V;
    if (!PyArg_ParseTuple(args, "LLLL:work_offsets", &B, &K, &H, &V))
        return NULL;
    Layout L;
    make_layout(&L, V, 1, K, H, B);
    return tuple_of(L.wo, 11);
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
    {"train_steps", (PyCFunction)(void (*)(void))py_train_steps, METH_FASTCALL,
     "train_steps(P, G, work, Yb, dims, Xtr, Ytr, ix_address, nsteps, lr, update, blocks, losses) -> steps run\n\n"
     "nsteps training steps of the lecture's MLP on the minibatches read from ix_address (nsteps * B int64s,\n"
     "B = len(Yb)); losses[s] gets step s's loss. blocks None: the whole batch layer by layer on this thread\n"
     "(BLAS threads aside); blocks = [ngroups, 0, c_1, ..., H]: the blocked step, column blocks c_i..c_i+1\n"
     "dealt to ngroups threads, each with a one-thread BLAS."},
    {"param_offsets", py_param_offsets, METH_VARARGS,
     "param_offsets(V, E, K, H): where C, W1, b1, W2^T, b2, bngain, bnbias start in a parameter arena; "
     "the last entry is its size."},
    {"work_offsets", py_work_offsets, METH_VARARGS,
     "work_offsets(B, K, H, V): where the step's activations start in its work arena; the last entry is "
     "its size."},
    {"work_offsets_blocked", py_work_offsets_blocked, METH_VARARGS,
     "work_offsets_blocked(B, T, E, H, V, ngroups, wmax): the same for the blocked step, column blocks at most "
     "wmax wide dealt to ngroups threads."},
    {"set_blas", py_set_blas, METH_VARARGS, "set_blas(sgemm, dgemm): the capsules of scipy.linalg.cython_blas."},
    {"available_isas", py_available_isas, METH_NOARGS, "The kernel's instruction sets this CPU can run, best first."},
    {"use_isa", py_use_isa, METH_VARARGS, "use_isa(name): run the kernel compiled for that instruction set."},
    {"exp_tanh", py_exp_tanh, METH_VARARGS,
     "exp_tanh(x, e, t): e = exp(x), t = tanh(x) for float32 arrays, as the float32 step computes them."},
    {"matmul_floor", py_matmul_floor, METH_VARARGS,
     "matmul_floor(B, K, H, V, n): seconds per repeat of the six float32 matmuls of a step, n repeats."},
    {"isa", py_isa, METH_NOARGS, "The instruction set of the kernel train_steps runs."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fast_step", "The fast engine's one-core training step (fast_step.c).", -1, methods,
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
    PyObject *m = PyModule_Create(&module);
    if (m && PyModule_AddIntConstant(m, "MAX_GROUPS", MAX_GROUPS) < 0)
        Py_CLEAR(m);
    return m;
}
