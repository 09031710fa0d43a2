/* The lecture's MLP training step, for one floating-point type: included by fast_step.c
 * once per (type, instruction set), after the arenas' layout (Dims, Blocks, Arenas, the PARAM_, ACT_ and
 * BLK_ pieces), with
 *
 *     real       float or double
 *     NAME(f)    f's name for this inclusion (f_float_avx512, ...)
 *     GEMM       sgemm or dgemm: the BLAS that scipy ships (see fast_step.c)
 *     EXP, TANH  exp and tanh for `real`: the vectorisable exp32 / tanh32 for float, libm's for double
 *
 * Two steps: `step`, the whole batch layer by layer on one core (BLAS may use more), and
 * `step_blocked` further down, for large batches. The same math as ops.py; each pass below is a small
 * function whose loops the C compiler vectorises:
 *
 *     forward                                    backward (the forward read bottom-up)
 *     embedding_forward   gather rows of C       embedding_backward   scatter-add into dC
 *     (gemm)              hprebn = embcat W1     (gemm x2)            dembcat, dW1
 *     batchnorm_tanh_fwd  + b1, xhat, h=tanh(.)  batchnorm_tanh_bwd   dhprebn, dbngain, dbnbias, db1
 *     (gemm)              logits^T = W2^T h^T    (gemm x2)            dh, dW2^T
 *     cross_entropy       + b2, loss, dlogits^T, db2 (made in the forward's passes)
 *
 * Every array is row-major. Loops go along a row of H (or of B, for the transposed logits) and touch
 * few arrays, through `restrict` pointers, which is what lets the compiler vectorise them.
 */

/* --- the arenas, as named pointers ---------------------------------------------------------------
 * Each arena's pieces (fast_step.c lays them out: fill_in_*_sizes, lay_out), pointed at once per call. */

typedef struct {
    real *C, *W1, *b1, *W2T, *b2, *bngain, *bnbias;
} NAME(Params);

typedef struct {
    real *embcat, *dembcat;  /* (B, K) */
    real *hprebn, *h, *dh;  /* (B, H); hprebn becomes xhat */
    real *logitsT;  /* (V, B), then dlogits^T */
    real *mean, *var_inv;  /* (H) */
    real *colmax;  /* (B) */
    real *scratch;  /* (3 H) */
} NAME(Acts);

typedef struct {
    real *xhat, *h;  /* (B*H) each, block by block: the panel of columns [j0, j1) starts at B*j0 */
    real *logitsT, *logits_g;  /* (V, B), (ngroups, V, B) */
    real *tables, *dC_g, *dh;  /* per group: (T, V, wmax), (V, E), (chunk) */
    real *mean, *var_inv;  /* (H) */
    real *colmax;  /* (B) */
    real *cols;  /* per group: (2 wmax) */
} NAME(BlockedActs);

/* What the passes of one step see: the sizes, the training set, the minibatch, the parameters and their
 * gradients, the activations of the step that runs, the minibatch's targets and the double scratch. */
typedef struct {
    const Dims *dims;
    const Data *data;
    const Blocks *blocks;  /* NULL: the whole-batch step */
    const int64_t *ix;  /* the minibatch: B rows of the training set */
    int64_t param_size;
    NAME(Params) p, g;
    NAME(Acts) a;  /* the whole-batch step's */
    NAME(BlockedActs) b;  /* the blocked step's */
    int64_t *Yb;
    double *dwork;
} NAME(Step);

static NAME(Params) NAME(point_params)(void *arena, const int64_t *off)
{
    real *r = arena;
    return (NAME(Params)){.C = r + off[PARAM_C], .W1 = r + off[PARAM_W1], .b1 = r + off[PARAM_B1],
                          .W2T = r + off[PARAM_W2T], .b2 = r + off[PARAM_B2], .bngain = r + off[PARAM_BNGAIN],
                          .bnbias = r + off[PARAM_BNBIAS]};
}

static NAME(Acts) NAME(point_acts)(void *arena, const int64_t *off)
{
    real *r = arena;
    return (NAME(Acts)){.embcat = r + off[ACT_EMBCAT], .dembcat = r + off[ACT_DEMBCAT],
                        .hprebn = r + off[ACT_HPREBN], .h = r + off[ACT_H], .dh = r + off[ACT_DH],
                        .logitsT = r + off[ACT_LOGITST], .mean = r + off[ACT_MEAN], .var_inv = r + off[ACT_VAR_INV],
                        .colmax = r + off[ACT_COLMAX], .scratch = r + off[ACT_SCRATCH]};
}

static NAME(BlockedActs) NAME(point_blocked_acts)(void *arena, const int64_t *off)
{
    real *r = arena;
    return (NAME(BlockedActs)){.xhat = r + off[BLK_XHAT], .h = r + off[BLK_H], .logitsT = r + off[BLK_LOGITST],
                               .logits_g = r + off[BLK_LOGITS_G], .tables = r + off[BLK_TABLES],
                               .dC_g = r + off[BLK_DC_G], .dh = r + off[BLK_DH], .mean = r + off[BLK_MEAN],
                               .var_inv = r + off[BLK_VAR_INV], .colmax = r + off[BLK_COLMAX],
                               .cols = r + off[BLK_COLS]};
}

static NAME(Step) NAME(point_step)(const Arenas *A)
{
    NAME(Step) s = {.dims = &A->dims, .data = &A->data, .blocks = A->blocks, .param_size = A->param_size,
                    .p = NAME(point_params)(A->P, A->param_off), .g = NAME(point_params)(A->G, A->param_off),
                    .Yb = A->Yb, .dwork = A->dwork};
    if (A->blocks)
        s.b = NAME(point_blocked_acts)(A->work, A->work_off);
    else
        s.a = NAME(point_acts)(A->work, A->work_off);
    return s;
}

/* --- embedding ---------------------------------------------------------------------------------- */

/* embcat[b] = concat_t C[X[ix[b], t]], the minibatch gathered straight from the training set (B, K). */
static void NAME(embedding_forward)(const Data *d, const int64_t *restrict ix, int64_t B, int64_t E,
                                    const real *restrict C, real *restrict embcat)
{
    int64_t T = d->T;
    for (int64_t b = 0; b < B; b++) {
        for (int64_t t = 0; t < T; t++) {
            const real *row = C + data_x(d, ix[b], t) * E;
            real *out = embcat + (b * T + t) * E;
            for (int64_t e = 0; e < E; e++)
                out[e] = row[e];
        }
    }
}

/* dC[v] += dembcat[b, t] for every (b, t) with X[ix[b], t] == v. Accumulate, never assign: a character
 * that appears twice in the batch gets both contributions. dC comes in all zero. */
static void NAME(embedding_backward)(const Data *d, const int64_t *restrict ix, int64_t B, int64_t E,
                                     const real *restrict dembcat, real *restrict dC)
{
    int64_t T = d->T;
    for (int64_t b = 0; b < B; b++) {
        for (int64_t t = 0; t < T; t++) {
            real *row = dC + data_x(d, ix[b], t) * E;
            const real *in = dembcat + (b * T + t) * E;
            for (int64_t e = 0; e < E; e++)
                row[e] += in[e];
        }
    }
}

/* C[v] -= lr dC[v], then dC[v] = 0, for the rows the batch touched (a large vocabulary: the other rows
 * have no gradient). Clearing while updating makes a repeated row update once. */
static void NAME(embedding_sgd_and_clear)(const Data *d, const int64_t *restrict ix, int64_t B, int64_t E,
                                          real lr, real *restrict C, real *restrict dC)
{
    int64_t T = d->T;
    for (int64_t b = 0; b < B; b++) {
        for (int64_t t = 0; t < T; t++) {
            int64_t v = data_x(d, ix[b], t);
            for (int64_t e = 0; e < E; e++) {
                C[v * E + e] -= lr * dC[v * E + e];
                dC[v * E + e] = 0;
            }
        }
    }
}

/* --- bias + batchnorm + tanh -------------------------------------------------------------------- */

/* The forward's column sums are accumulated in double (rounded once, at the end): over a near-constant
 * column the float32 mean's rounding, divided by a tiny standard deviation, would be most of the float32
 * gradients' error below batchnorm (5x the manual engine's in a batch of 14 with 2 contexts, a case
 * tests/test_fast_engine.py keeps). */
static void NAME(add_bias_and_sum)(int64_t n, real *restrict x, const real *restrict bias, double *restrict sum)
{
    for (int64_t j = 0; j < n; j++) {
        real v = x[j] + bias[j];
        x[j] = v;
        sum[j] += v;
    }
}

static void NAME(sum_squared_differences)(int64_t n, const real *restrict x, const real *restrict mean,
                                          double *restrict ssd)
{
    for (int64_t j = 0; j < n; j++) {
        double dx = x[j] - mean[j];
        ssd[j] += dx * dx;
    }
}

/* mean = sum / n, rounded once */
static void NAME(mean_from_sum)(int64_t n, int64_t B, const double *restrict sum, real *restrict mean)
{
    for (int64_t j = 0; j < n; j++)
        mean[j] = (real)(sum[j] / (double)B);
}

/* var_inv = 1 / sqrt(var + eps), var the Bessel-corrected (n-1) variance, as hpreact.var(0, unbiased=True) */
static void NAME(var_inv_from_ssd)(int64_t n, int64_t B, const double *restrict ssd, real *restrict var_inv)
{
    for (int64_t j = 0; j < n; j++)
        var_inv[j] = (real)(1.0 / sqrt(ssd[j] / (double)(B - 1) + BN_EPS));
}

static void NAME(normalise_and_tanh)(int64_t n, real *restrict x, const real *restrict mean,
                                     const real *restrict var_inv, const real *restrict gain,
                                     const real *restrict bias, real *restrict h)
{
    for (int64_t j = 0; j < n; j++) {
        real xh = (x[j] - mean[j]) * var_inv[j];
        x[j] = xh;
        h[j] = TANH(gain[j] * xh + bias[j]);
    }
}

/* hprebn += b1; xhat = (hprebn - mean) / sqrt(var + eps); h = tanh(bngain xhat + bnbias).
 *
 * var is the batch's Bessel-corrected (n-1) variance, as in the lecture, from the squared differences
 * to the mean (two passes, as ops.batchnorm_forward: no cancellation when the mean is large). xhat
 * overwrites hprebn: the backward needs xhat and h, not hprebn. b1 is added although batchnorm
 * subtracts it again, as the lecture's forward does: without it, in batches of one repeated example,
 * the float32 gradients of C and W1 are ~100x less accurate (for ~0.8 us of a ~34 us step).
 * `acc` holds 2*H doubles.
 */
static void NAME(batchnorm_tanh_forward)(int64_t B, int64_t H, real *restrict hprebn, const real *restrict b1,
                                         const real *restrict bngain, const real *restrict bnbias,
                                         real *restrict h, real *restrict mean, real *restrict var_inv,
                                         double *restrict acc)
{
    double *sum = acc, *ssd = acc + H;
    for (int64_t j = 0; j < H; j++)
        sum[j] = ssd[j] = 0;
    for (int64_t i = 0; i < B; i++)
        NAME(add_bias_and_sum)(H, hprebn + i * H, b1, sum);
    NAME(mean_from_sum)(H, B, sum, mean);
    for (int64_t i = 0; i < B; i++)
        NAME(sum_squared_differences)(H, hprebn + i * H, mean, ssd);
    NAME(var_inv_from_ssd)(H, B, ssd, var_inv);
    for (int64_t i = 0; i < B; i++)
        NAME(normalise_and_tanh)(H, hprebn + i * H, mean, var_inv, bngain, bnbias, h + i * H);
}

static void NAME(tanh_backward_and_sums)(int64_t n, real *restrict dh, const real *restrict h,
                                         const real *restrict xhat, real *restrict sb, real *restrict sg,
                                         real *restrict sx)
{
    for (int64_t j = 0; j < n; j++) {
        real v = ((real)1 - h[j] * h[j]) * dh[j];  /* dhpreact */
        dh[j] = v;
        sb[j] += v;
        sg[j] += v * xhat[j];
        sx[j] += xhat[j];
    }
}

static void NAME(batchnorm_input_grad)(int64_t n, real *restrict dh, const real *restrict xhat, real nb,
                                       const real *restrict a, const real *restrict sb, const real *restrict csg)
{
    for (int64_t j = 0; j < n; j++)
        dh[j] = a[j] * (nb * dh[j] - sb[j] - csg[j] * xhat[j]);  /* dhprebn */
}

/* dhpreact = (1 - h^2) dh; then batchnorm's backward, written over dh in place:
 *
 *     dhprebn = bngain var_inv / n (n dhpreact - dbnbias - n/(n-1) xhat dbngain)
 *
 * with dbnbias = sum_B dhpreact, dbngain = sum_B dhpreact xhat, and db1 = sum_B dhprebn, which by the
 * line above is -bngain var_inv / n * n/(n-1) dbngain sum_B xhat: ~0, since batchnorm subtracts the
 * mean (b1 has no effect on the loss), computed, not assumed. `scratch` holds 3*H reals. The sums
 * here stay in the activations' type: in double they come no nearer the manual engine's numbers (the
 * forward's mean is what needs double) and cost ~1 us of a lecture step. */
static void NAME(batchnorm_tanh_backward)(int64_t B, int64_t H, real *restrict dh, const real *restrict xhat,
                                          const real *restrict h, const real *restrict bngain,
                                          const real *restrict var_inv, real *restrict dbngain,
                                          real *restrict dbnbias, real *restrict db1, real *restrict scratch)
{
    real *sx = scratch, *a = scratch + H, *csg = scratch + 2 * H;
    for (int64_t j = 0; j < H; j++)
        dbnbias[j] = dbngain[j] = sx[j] = 0;
    for (int64_t i = 0; i < B; i++)
        NAME(tanh_backward_and_sums)(H, dh + i * H, h + i * H, xhat + i * H, dbnbias, dbngain, sx);
    /* per column, in the activations' type, as ops.batchnorm_backward computes them */
    real bessel = (real)((double)B / (double)(B - 1));
    for (int64_t j = 0; j < H; j++) {
        a[j] = bngain[j] * var_inv[j] / (real)B;  /* bngain var_inv / n */
        csg[j] = bessel * dbngain[j];  /* n/(n-1) dbngain */
        db1[j] = -(a[j] * (csg[j] * sx[j]));
    }
    for (int64_t i = 0; i < B; i++)
        NAME(batchnorm_input_grad)(H, dh + i * H, xhat + i * H, (real)B, a, dbnbias, csg);
}

/* --- softmax + cross-entropy -------------------------------------------------------------------- */

static void NAME(add_bias_and_max)(int64_t n, real *restrict row, real bias, real *restrict colmax)
{
    for (int64_t i = 0; i < n; i++) {
        real v = row[i] + bias;
        row[i] = v;
        colmax[i] = colmax[i] > v ? colmax[i] : v;
    }
}

static void NAME(exp_and_sum)(int64_t n, real *restrict row, const real *restrict colmax, double *restrict colsum)
{
    for (int64_t i = 0; i < n; i++)
        row[i] = EXP(row[i] - colmax[i]);  /* counts */
    for (int64_t i = 0; i < n; i++)
        colsum[i] += row[i];  /* in double, as a Python float accumulates */
}

static void NAME(scale_row)(int64_t n, real *restrict row, const double *restrict scale)
{
    for (int64_t i = 0; i < n; i++)
        row[i] *= (real)scale[i];
}

/* logits += b2; loss = -mean_b log softmax(logits)_b,Y[b]; dlogits = (softmax - onehot(Y)) / n.
 *
 * The logits come transposed, (V, B), so that every pass runs along the batch: 32 examples are two
 * AVX-512 vectors, where a row of 27 characters vectorises badly. colmax (B reals) and colsum (B
 * doubles) are scratch. Returns the loss; dlogits^T is written over the logits, and db2 = sum_B dlogits.
 */
static double NAME(cross_entropy)(int64_t V, int64_t B, real *restrict logitsT, const real *restrict b2,
                                  const int64_t *restrict Yb, real *restrict db2, real *restrict colmax,
                                  double *restrict colsum)
{
    real inv_n = (real)(1.0 / (double)B);
    for (int64_t i = 0; i < B; i++) {
        colmax[i] = -INFINITY;  /* subtracted for stability; its gradient is zero */
        colsum[i] = 0;
    }
    for (int64_t v = 0; v < V; v++)
        NAME(add_bias_and_max)(B, logitsT + v * B, b2[v], colmax);
    double loss = 0;
    for (int64_t i = 0; i < B; i++)
        loss -= (double)(logitsT[Yb[i] * B + i] - colmax[i]);  /* the target's shifted logit, before exp */
    for (int64_t v = 0; v < V; v++)
        NAME(exp_and_sum)(B, logitsT + v * B, colmax, colsum);
    for (int64_t i = 0; i < B; i++) {
        loss += log(colsum[i]);  /* -log(counts[y] / sum(counts)), without computing counts[y] */
        colsum[i] = (double)((real)(1.0 / colsum[i]) * inv_n);  /* now the scale: probs / n = counts * scale */
    }
    for (int64_t v = 0; v < V; v++)
        NAME(scale_row)(B, logitsT + v * B, colsum);
    for (int64_t i = 0; i < B; i++)
        logitsT[Yb[i] * B + i] -= inv_n;
    for (int64_t v = 0; v < V; v++) {
        double acc = 0;
        for (int64_t i = 0; i < B; i++)
            acc += logitsT[v * B + i];
        db2[v] = (real)acc;
    }
    return loss / (double)B;
}

/* e = exp(x), t = tanh(x), elementwise, with the functions the step uses: for the tests. */
static inline void NAME(exp_tanh)(int64_t n, const real *restrict x, real *restrict e, real *restrict t)
{
    for (int64_t i = 0; i < n; i++) {
        e[i] = EXP(x[i]);
        t[i] = TANH(x[i]);
    }
}

/* --- the update --------------------------------------------------------------------------------- */

/* p -= lr g, the lecture's update (optim.SGD), with lr in the parameters' type as torch's
 * p.sub_(g, alpha=lr) has it. */
static void NAME(sgd_update)(int64_t n, real *restrict p, const real *restrict g, real lr)
{
    for (int64_t k = 0; k < n; k++)
        p[k] -= lr * g[k];
}

/* The SGD update of every parameter after a step; dC is all zero again afterwards. Only the rows of
 * dC the batch touched can be non-zero. */
static void NAME(update)(const NAME(Step) *s, double lr)
{
    const Dims *D = s->dims;
    real step = (real)lr;
    if (D->V <= D->B * D->T) {
        /* a small vocabulary (27 rows against the batch's 96 lookups): C with everything else, in one
         * pass over the arenas (rows no example touched get C - lr * 0, which is C, and the gaps
         * between pieces are zero in both), then dC cleared whole: ~0.4-1 us less a step than
         * visiting the batch's rows */
        NAME(sgd_update)(s->param_size, s->p.C, s->g.C, step);
        memset(s->g.C, 0, (size_t)(D->V * D->E) * sizeof(real));
    } else {  /* a large vocabulary: only the rows the batch touched */
        int64_t from_W1 = s->p.W1 - s->p.C;  /* C comes first: everything after it */
        NAME(sgd_update)(s->param_size - from_W1, s->p.W1, s->g.W1, step);
        NAME(embedding_sgd_and_clear)(s->data, s->ix, D->B, D->E, step, s->p.C, s->g.C);
    }
}

/* Yb[b] = Y[ix[b]]; false, having written nothing, if an index lies outside the training set (the
 * only bounds check: it guards every later read). */
static int NAME(minibatch_targets)(const Data *d, const int64_t *ix, int64_t B, int64_t *Yb)
{
    for (int64_t b = 0; b < B; b++)
        if (ix[b] < 0 || ix[b] >= d->N)
            return 0;
    for (int64_t b = 0; b < B; b++)
        Yb[b] = data_y(d, ix[b]);
    return 1;
}

/* --- the step ----------------------------------------------------------------------------------- */

/* Forward, backward and (if `update`) the SGD update for the minibatch s->ix; returns the loss, or NaN
 * having done nothing if an index lies outside the training set. dC must be all zero on entry; it is
 * all zero again on return when `update` is set. */
static double NAME(step)(const NAME(Step) *s, double lr, int update)
{
    int64_t B = s->dims->B, K = s->dims->K, H = s->dims->H, V = s->dims->V, E = s->dims->E;
    const NAME(Params) *p = &s->p, *g = &s->g;
    const NAME(Acts) *a = &s->a;
    double *colsum = s->dwork, *acc = s->dwork + B;  /* (B), (2 H) */

    if (!NAME(minibatch_targets)(s->data, s->ix, B, s->Yb))
        return NAN;
    /* forward */
    NAME(embedding_forward)(s->data, s->ix, B, E, p->C, a->embcat);  /* (B, K) */
    GEMM('N', 'N', B, H, K, a->embcat, K, p->W1, H, 0, a->hprebn, H);  /* (B, H); b1 is added in the next pass */
    NAME(batchnorm_tanh_forward)(B, H, a->hprebn, p->b1, p->bngain, p->bnbias, a->h, a->mean, a->var_inv,
                                 acc);  /* hprebn becomes xhat; h */
    GEMM('N', 'T', V, B, H, p->W2T, H, a->h, H, 0, a->logitsT, B);  /* (V, B) logits^T; b2 added in the next pass */
    double loss = NAME(cross_entropy)(V, B, a->logitsT, p->b2, s->Yb, g->b2, a->colmax, colsum);  /* dlogits^T */
    /* backward */
    GEMM('T', 'N', B, H, V, a->logitsT, B, p->W2T, H, 0, a->dh, H);  /* (B, H) dh = dlogits W2 */
    GEMM('N', 'N', V, H, B, a->logitsT, B, a->h, H, 0, g->W2T, H);  /* (V, H) dW2^T = dlogits^T h */
    NAME(batchnorm_tanh_backward)(B, H, a->dh, a->hprebn, a->h, p->bngain, a->var_inv, g->bngain, g->bnbias, g->b1,
                                  a->scratch);  /* dh becomes dhprebn */
    GEMM('N', 'T', B, K, H, a->dh, H, p->W1, H, 0, a->dembcat, K);  /* (B, K) dembcat = dhprebn W1^T */
    GEMM('T', 'N', K, H, B, a->embcat, K, a->dh, H, 0, g->W1, H);  /* (K, H) dW1 = embcat^T dhprebn */
    NAME(embedding_backward)(s->data, s->ix, B, E, a->dembcat, g->C);  /* (V, E) */
    if (update)
        NAME(update)(s, lr);
    return loss;
}


/* --- the blocked step: large batches, one column block of the hidden layer at a time --------------
 *
 * The step above runs each layer over the whole batch: at B=4096, H=1024 every (B, H) pass streams
 * 16 MB through DRAM, and its batchnorm reads its input five times. Here the hidden layer is cut into
 * column blocks (~128 columns), and each block goes down the batch in chunks of rows small enough
 * (ROW_CHUNK_ELEMENTS) that a chunk's output is still in L1/L2 when the elementwise pass and the next
 * matmul read it. The blocks are dealt to groups, one group per thread, and each thread calls a
 * one-thread BLAS (the engine sets OpenBLAS to 1 thread). Per block, [j0, j1) of H, w wide:
 *
 *     block_forward                                    block_backward (after the loss)
 *     0. table_t = C W1_t (V, w), t < T       gemm     1. per chunk: dh = dlogits W2^T           gemm
 *     1. per row: hprebn = sum_t table_t[X_t]                       dhpreact = (1 - h^2) dh, sums
 *                 mean; then var (a pass)                           dW2^T += dlogits^T h           gemm
 *     2. per chunk: xhat, h = tanh(.)                  2. per row:  dhprebn (batchnorm backward)
 *                   logits_g^T += W2^T h^T    gemm                  S_t[X_t] += dhprebn, t < T
 *     then, on one thread: logits = sum_g logits_g,   per t:       dW1_t = C^T S_t                gemm
 *     softmax + cross-entropy (-> dlogits, db2)                     dC_g += S_t W1_t^T             gemm
 *     after the backward: dC = sum_g dC_g, the SGD update.
 *
 * The first layer goes through the embedding table: embcat W1 = sum_t C[X_t] W1_t = sum_t (C W1_t)[X_t].
 * With the lecture's V = 27 characters against a batch of thousands, the T products C W1_t are tiny
 * and each row of hprebn is a sum of T of their rows, a gather where embcat W1 would make K = T*E
 * multiply-adds per element; backward, the rows of dhprebn are scatter-added by character into S_t
 * (onehot(X_t)^T dhprebn), from which dW1 and dC are small matmuls. Two K-deep matmuls over the batch
 * (dembcat and dW1) and the forward's one become gathers and scatters: ~24% less time on one core at
 * B = 4096, H = 1024. The engine offers this step for vocabularies up to fast.BLOCKED_MAX_VOCAB.
 *
 * The batchnorm and tanh passes are the one-core step's, summed over the batch in the same order. Each
 * group's partial sums of the logits and of dC are added in a fixed order afterwards, so results do
 * not depend on which thread finished first. xhat and h are kept block by block, each block's (B, w)
 * panel contiguous (the panel of [j0, j1) starts at B*j0), so the row passes run over dense rows. */

static void NAME(tanh_backward_into_h)(int64_t n, real *restrict h, const real *restrict dh,
                                       const real *restrict xhat, double *restrict sb, double *restrict sg)
{
    for (int64_t j = 0; j < n; j++) {
        real v = ((real)1 - h[j] * h[j]) * dh[j];  /* dhpreact, written over h: dW2 of this row is made */
        h[j] = v;
        sb[j] += v;
        sg[j] += (double)v * xhat[j];
    }
}

static void NAME(batchnorm_input_grad_and_sum)(int64_t n, real *restrict dh, const real *restrict xhat, real nb,
                                               const real *restrict a, const real *restrict sb,
                                               const real *restrict csg, double *restrict sum)
{
    for (int64_t j = 0; j < n; j++) {
        real v = a[j] * (nb * dh[j] - sb[j] - csg[j] * xhat[j]);  /* dhprebn */
        dh[j] = v;
        sum[j] += v;
    }
}

static void NAME(add_row)(int64_t n, real *restrict acc, const real *restrict row)
{
    for (int64_t j = 0; j < n; j++)
        acc[j] += row[j];
}

/* One column block's forward: xhat and h of the block (its (B, w) panels), its mean and var_inv, and its
 * share of the logits added to lg (V, B). `table` is the group's (T, V, >= w) scratch, `acc` its
 * column sums (>= 2 w doubles). */
static void NAME(block_forward)(const NAME(Step) *s, int64_t j0, int64_t w, real *restrict table,
                                real *restrict lg, double *restrict acc)
{
    const Data *d = s->data;
    int64_t B = s->dims->B, H = s->dims->H, V = s->dims->V, E = s->dims->E, T = d->T;
    const real *C = s->p.C, *W1 = s->p.W1 + j0, *b1 = s->p.b1 + j0;
    const real *W2T = s->p.W2T + j0, *bngain = s->p.bngain + j0, *bnbias = s->p.bnbias + j0;
    real *xhat = s->b.xhat + B * j0, *h = s->b.h + B * j0;
    real *mean = s->b.mean + j0, *var_inv = s->b.var_inv + j0;
    int64_t rows = block_rows(B, w);
    for (int64_t t = 0; t < T; t++)  /* (V, w) C W1_t */
        GEMM('N', 'N', V, w, E, C, E, W1 + t * E * H, H, 0, table + t * V * w, w);
    double *sum = acc, *ssd = acc + w;
    for (int64_t j = 0; j < w; j++)
        sum[j] = ssd[j] = 0;
    for (int64_t i = 0; i < B; i++) {
        real *x = xhat + i * w;
        memcpy(x, table + data_x(d, s->ix[i], 0) * w, (size_t)w * sizeof(real));
        for (int64_t t = 1; t < T; t++)
            NAME(add_row)(w, x, table + (t * V + data_x(d, s->ix[i], t)) * w);  /* embcat W1 of example i */
        NAME(add_bias_and_sum)(w, x, b1, sum);  /* hprebn, b1 added as the one-core step does */
    }
    NAME(mean_from_sum)(w, B, sum, mean);
    for (int64_t i = 0; i < B; i++)
        NAME(sum_squared_differences)(w, xhat + i * w, mean, ssd);
    NAME(var_inv_from_ssd)(w, B, ssd, var_inv);
    for (int64_t r0 = 0; r0 < B; r0 += rows) {
        int64_t r1 = r0 + rows < B ? r0 + rows : B;
        for (int64_t i = r0; i < r1; i++)
            NAME(normalise_and_tanh)(w, xhat + i * w, mean, var_inv, bngain, bnbias, h + i * w);
        GEMM('N', 'T', V, r1 - r0, w, W2T, H, h + r0 * w, w, 1, lg + r0, B);  /* (V, rows) += W2^T h^T */
    }
}

/* One column block's backward, from dlogits^T (V, B) to dW1, dW2^T, db1, dbngain, dbnbias of the block
 * (assigned) and its share of dC (added into dC_g). Two passes down the batch in chunks of rows, so
 * that what a chunk's matmuls and loops share stays in L1/L2:
 *   1. dh = dlogits W2^T, dW2^T += dlogits^T h, dhpreact = (1 - h^2) dh written over h, and the column
 *      sums dbnbias = sum_B dhpreact, dbngain = sum_B dhpreact xhat;
 *   2. dhprebn = bngain var_inv / n (n dhpreact - dbnbias - n/(n-1) xhat dbngain), over h again,
 *      db1 = sum_B dhprebn, and each row of dhprebn added to S_t[X_t] for every t: S_t (V, w) =
 *      onehot(X_t)^T dhprebn, accumulated, never assigned, so a character seen twice gets both rows.
 * Then, from the S_t, the first layer's gradients without a K-deep matmul over the batch:
 * dW1_t = embcat_t^T dhprebn = C^T S_t, and dC += dembcat_t scattered by X_t = S_t W1_t^T. */
static void NAME(block_backward)(const NAME(Step) *s, int64_t j0, int64_t w, real *restrict table,
                                 real *restrict cols, double *restrict acc, real *restrict dh, real *restrict dC_g)
{
    const Data *d = s->data;
    int64_t B = s->dims->B, H = s->dims->H, V = s->dims->V, E = s->dims->E, T = d->T;
    const real *C = s->p.C, *W1 = s->p.W1 + j0, *W2T = s->p.W2T + j0, *bngain = s->p.bngain + j0;
    real *dW1 = s->g.W1 + j0, *db1 = s->g.b1 + j0, *dW2T = s->g.W2T + j0;
    real *dbngain = s->g.bngain + j0, *dbnbias = s->g.bnbias + j0;
    const real *xhat = s->b.xhat + B * j0, *var_inv = s->b.var_inv + j0;
    real *h = s->b.h + B * j0;
    const real *dlogitsT = s->b.logitsT;
    real *a = cols, *csg = cols + w;  /* `cols`: the group's 2*wmax reals, `acc` its 3*wmax doubles */
    double *sb = acc, *sg = acc + w, *sdb1 = acc + 2 * w;
    int64_t rows = block_rows(B, w);
    for (int64_t j = 0; j < w; j++)
        sb[j] = sg[j] = sdb1[j] = 0;
    for (int64_t r0 = 0; r0 < B; r0 += rows) {
        int64_t r1 = r0 + rows < B ? r0 + rows : B;
        GEMM('T', 'N', r1 - r0, w, V, dlogitsT + r0, B, W2T, H, 0, dh, w);  /* (rows, w) dh = dlogits W2^T */
        GEMM('N', 'N', V, w, r1 - r0, dlogitsT + r0, B, h + r0 * w, w, r0 == 0 ? 0 : 1, dW2T, H);  /* (V, w) */
        for (int64_t i = r0; i < r1; i++)
            NAME(tanh_backward_into_h)(w, h + i * w, dh + (i - r0) * w, xhat + i * w, sb, sg);
    }
    real bessel = (real)((double)B / (double)(B - 1));
    for (int64_t j = 0; j < w; j++) {
        dbnbias[j] = (real)sb[j];
        dbngain[j] = (real)sg[j];
        a[j] = bngain[j] * var_inv[j] / (real)B;  /* bngain var_inv / n */
        csg[j] = bessel * dbngain[j];  /* n/(n-1) dbngain */
    }
    memset(table, 0, (size_t)(T * V * w) * sizeof(real));  /* S_t, t < T */
    for (int64_t i = 0; i < B; i++) {
        real *row = h + i * w;
        NAME(batchnorm_input_grad_and_sum)(w, row, xhat + i * w, (real)B, a, dbnbias, csg, sdb1);
        for (int64_t t = 0; t < T; t++)
            NAME(add_row)(w, table + (t * V + data_x(d, s->ix[i], t)) * w, row);  /* S_t scatter-added */
    }
    for (int64_t j = 0; j < w; j++)
        db1[j] = (real)sdb1[j];
    for (int64_t t = 0; t < T; t++) {
        const real *S = table + t * V * w;
        GEMM('T', 'N', E, w, V, C, E, S, w, 0, dW1 + t * E * H, H);  /* (E, w) dW1_t = C^T S_t */
        GEMM('N', 'T', V, E, w, S, w, W1 + t * E * H, H, 1, dC_g, E);  /* (V, E) dC_g += S_t W1_t^T */
    }
}

static void NAME(group_forward)(void *ctx, int64_t g)
{
    const NAME(Step) *s = ctx;
    const Blocks *bk = s->blocks;
    int64_t V = s->dims->V, B = s->dims->B, T = s->dims->T;
    real *lg = s->b.logits_g + g * V * B;  /* (V, B) this group's share of logits^T */
    real *table = s->b.tables + g * T * V * bk->wmax;
    double *acc = s->dwork + B + g * 3 * bk->wmax;
    memset(lg, 0, (size_t)(V * B) * sizeof(real));
    for (int64_t blk = g; blk < bk->nblk; blk += bk->ngroups)
        NAME(block_forward)(s, bk->bounds[blk], bk->bounds[blk + 1] - bk->bounds[blk], table, lg, acc);
}

static void NAME(group_backward)(void *ctx, int64_t g)
{
    const NAME(Step) *s = ctx;
    const Blocks *bk = s->blocks;
    int64_t V = s->dims->V, E = s->dims->E, T = s->dims->T, B = s->dims->B;
    real *dC_g = s->b.dC_g + g * V * E;  /* (V, E) this group's share of dC */
    real *table = s->b.tables + g * T * V * bk->wmax;
    real *dh = s->b.dh + g * bk->chunk;
    real *cols = s->b.cols + g * 2 * bk->wmax;
    double *acc = s->dwork + B + g * 3 * bk->wmax;
    memset(dC_g, 0, (size_t)(V * E) * sizeof(real));
    for (int64_t blk = g; blk < bk->nblk; blk += bk->ngroups)
        NAME(block_backward)(s, bk->bounds[blk], bk->bounds[blk + 1] - bk->bounds[blk], table, cols, acc, dh, dC_g);
}

/* The blocked step's forward, backward and (if `update`) SGD update; returns the loss, or NaN having
 * done nothing for an index outside the training set. */
static double NAME(step_blocked)(const NAME(Step) *s, double lr, int update)
{
    int64_t V = s->dims->V, E = s->dims->E, B = s->dims->B, ngroups = s->blocks->ngroups;
    const NAME(BlockedActs) *b = &s->b;
    if (!NAME(minibatch_targets)(s->data, s->ix, B, s->Yb))
        return NAN;
    run_groups(ngroups, NAME(group_forward), (void *)s);
    memcpy(b->logitsT, b->logits_g, (size_t)(V * B) * sizeof(real));
    for (int64_t g = 1; g < ngroups; g++)  /* in a fixed order: the sum does not depend on which thread ran first */
        NAME(add_row)(V * B, b->logitsT, b->logits_g + g * V * B);
    double loss = NAME(cross_entropy)(V, B, b->logitsT, s->p.b2, s->Yb, s->g.b2, b->colmax, s->dwork);
    run_groups(ngroups, NAME(group_backward), (void *)s);
    /* all of dC: the rows no example touched get exact zeros from their zero rows of S_t */
    memcpy(s->g.C, b->dC_g, (size_t)(V * E) * sizeof(real));
    for (int64_t g = 1; g < ngroups; g++)
        NAME(add_row)(V * E, s->g.C, b->dC_g + g * V * E);
    if (update)
        NAME(update)(s, lr);
    return loss;
}

/* nsteps steps on the minibatches ixs[s] (B int64s each), by the blocked step when the arenas have blocks,
 * else by the whole-batch step; losses[s] gets step s's loss. A step whose loss is not finite is the last
 * (its update is made, as a one-step call would make it). Returns the number of steps run. */
static int64_t NAME(train_steps)(const Arenas *A, const int64_t *ixs, int64_t nsteps, double lr, int update,
                                 double *losses)
{
    NAME(Step) s = NAME(point_step)(A);
    for (int64_t i = 0; i < nsteps; i++) {
        s.ix = ixs + i * A->dims.B;
        double loss = A->blocks ? NAME(step_blocked)(&s, lr, update) : NAME(step)(&s, lr, update);
        losses[i] = loss;
        if (!isfinite(loss))
            return i + 1;
    }
    return nsteps;
}
