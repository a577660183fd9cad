/* Kernels of `native` (convlab/conv/native.py): convolution as small matrix products on
 * columns built per image while they sit in the cache, in plain C.
 *
 * Compiled at first use by convlab/conv/native_build.py, once per element type:
 *     cc -O3 -march=native -fopenmp -shared -fPIC -DREAL=float  native_kernels.c
 * Every tensor is contiguous, NCHW:
 *     x     (N, C_in, H_in, W_in)      weight (C_out, C_in/G, kH, kW)
 *     out   (N, C_out, H_out, W_out)   K = C_in/G * kH * kW, P = H_out * W_out
 * Zero padding is done here, one image at a time, into a bordered copy (C_in/G, H, W) in the
 * thread's workspace: H = H_in + top + bottom, W = W_in + left + right. The whole padded batch,
 * which F.pad would write to memory and read back (38 MB at 128 x 64 x 32 x 32), never exists.
 *
 * Why it is fast:
 * 1. Columns never leave the cache. An image's columns (K x P numbers: 57 KB at the
 *    reference network's conv1, 64 KB at conv2) are built, multiplied and dropped
 *    before the next image, by the thread that owns that image. im2col + GEMM in
 *    PyTorch writes kH*kW copies of the whole batch to memory and reads them back.
 * 2. One register-blocked product, `gemm`, does all the arithmetic: C += A @ B with
 *    a tile of up to MR rows x NV vectors of C held in registers while the loop over
 *    R streams one row of B and one number per row of A. Forward, weight gradient and
 *    input gradient are the same product with different operands:
 *        forward  out_g  (M, P)  = W_g   (M, K) @ cols   (K, P)
 *        dW       dW_g   (M, K) += dout_g (M, P) @ colsT (P, K)
 *        dx       dcols  (K, P)  = W_g^T (K, M) @ dout_g (M, P), then col2im into dx
 *    with M = C_out/G. Rows of B and C are padded to whole vectors (zeros in B) so
 *    the tile never needs a scalar tail.
 * 3. Images are shared out among the threads of PyTorch's own OpenMP pool (this
 *    library links the libgomp that torch has loaded); the weight gradient is summed
 *    per thread and the partial sums added once at the end.
 */
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#else
static int omp_get_thread_num(void) { return 0; }
#endif

#ifndef REAL
#define REAL float
#endif

#ifndef VECTOR_BYTES
#define VECTOR_BYTES 64 /* one AVX-512 register; native_build.py passes 32 where the CPU has none */
#endif
#define VL ((long)(VECTOR_BYTES / sizeof(REAL)))
#define MR 6 /* rows of C per tile */
#define LONG_ROW (8 * VL) /* dW by dot products from rows this long */
#define NR_T 4 /* gemm_t: rows of B per tile */
/* Tiles that fit the vector registers: accumulators + operands + one broadcast number. */
#if VECTOR_BYTES == 64
#define NV 4   /* vectors of C per tile row: 6 x 4 + 4 + 1 of AVX-512's 32 registers */
#define MR_T 4 /* gemm_t: rows of A per tile, 4 x 4 + 4 + 4 of 32 */
#else
#define NV 2   /* 6 x 2 + 2 + 1 of AVX2's 16 registers: 6 x 4 spilled to memory */
#define MR_T 2 /* 2 x 4 + 2 + 4 of 16 */
#endif

typedef REAL vec __attribute__((vector_size(VECTOR_BYTES)));

static inline vec load(const REAL *p) {
    vec v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void store(REAL *p, vec v) { memcpy(p, &v, sizeof v); }

static inline long round_up(long n, long multiple) { return (n + multiple - 1) / multiple * multiple; }

/* C (mr, nv * VL) (+)= A (mr, R) @ B (R, nv * VL); constant mr and nv unroll into registers. */
static inline __attribute__((always_inline)) void tile(int mr, int nv, long r_len, const REAL *a, long lda,
                                                       const REAL *b, long ldb, REAL *c, long ldc,
                                                       int accumulate) {
    vec acc[MR][NV];
    for (int m = 0; m < mr; m++)
        for (int v = 0; v < nv; v++) acc[m][v] = accumulate ? load(c + m * ldc + v * VL) : (vec){0};
    for (long r = 0; r < r_len; r++) {
        vec bv[NV];
        for (int v = 0; v < nv; v++) bv[v] = load(b + r * ldb + v * VL);
        for (int m = 0; m < mr; m++) {
            vec am = (vec){0} + a[m * lda + r];
            for (int v = 0; v < nv; v++) acc[m][v] += am * bv[v];
        }
    }
    for (int m = 0; m < mr; m++)
        for (int v = 0; v < nv; v++) store(c + m * ldc + v * VL, acc[m][v]);
}

#define TILE(mr, nv)                                                    \
    case (mr) * 8 + (nv):                                               \
        tile(mr, nv, r_len, a, lda, b, ldb, c, ldc, accumulate);        \
        break;
#if NV == 4
#define TILE_ROW(mr) TILE(mr, 1) TILE(mr, 2) TILE(mr, 3) TILE(mr, 4)
#else
#define TILE_ROW(mr) TILE(mr, 1) TILE(mr, 2)
#endif

/* C (M, N) (+)= A (M, R) @ B (R, N), row-major with leading dimensions lda, ldb, ldc;
 * N a multiple of VL. */
static void gemm(long m_len, long n_len, long r_len, const REAL *a_start, long lda, const REAL *b_start,
                 long ldb, REAL *c_start, long ldc, int accumulate) {
    /* A panel of B (R, NV vectors) stays in the cache while every tile of rows of A meets it. */
    for (long n0 = 0; n0 < n_len; n0 += NV * VL) {
        int nv = (n_len - n0) / VL < NV ? (int)((n_len - n0) / VL) : NV;
        for (long m0 = 0; m0 < m_len; m0 += MR) {
            int mr = m_len - m0 < MR ? (int)(m_len - m0) : MR;
            const REAL *a = a_start + m0 * lda, *b = b_start + n0;
            REAL *c = c_start + m0 * ldc + n0;
            switch (mr * 8 + nv) {
                TILE_ROW(1) TILE_ROW(2) TILE_ROW(3) TILE_ROW(4) TILE_ROW(5) TILE_ROW(6)
            }
        }
    }
}

/* C (mr, nr) += A (mr, R) @ B (nr, R)^T, R a multiple of VL: each entry is a dot product of two rows,
 * summed lane by lane in a register and across the lanes once at the end. */
static inline __attribute__((always_inline)) void tile_t(int mr, int nr, long r_len, const REAL *a, long lda,
                                                         const REAL *b, long ldb, REAL *c, long ldc) {
    vec acc[MR_T][NR_T];
    for (int m = 0; m < mr; m++)
        for (int n = 0; n < nr; n++) acc[m][n] = (vec){0};
    for (long r = 0; r < r_len; r += VL) {
        vec av[MR_T], bv[NR_T];
        for (int m = 0; m < mr; m++) av[m] = load(a + m * lda + r);
        for (int n = 0; n < nr; n++) bv[n] = load(b + n * ldb + r);
        for (int m = 0; m < mr; m++)
            for (int n = 0; n < nr; n++) acc[m][n] += av[m] * bv[n];
    }
    for (int m = 0; m < mr; m++)
        for (int n = 0; n < nr; n++) {
            REAL sum = 0;
            for (int l = 0; l < VL; l++) sum += acc[m][n][l];
            c[m * ldc + n] += sum;
        }
}

#define TILE_T(mr, nr)                                  \
    case (mr) * 8 + (nr):                               \
        tile_t(mr, nr, r_len, a, lda, b, ldb, c, ldc);  \
        break;
#define TILE_T_ROW(mr) TILE_T(mr, 1) TILE_T(mr, 2) TILE_T(mr, 3) TILE_T(mr, 4)

/* C (M, N) += A (M, R) @ B (N, R)^T, row-major; R a multiple of VL. */
static void gemm_t(long m_len, long n_len, long r_len, const REAL *a_start, long lda, const REAL *b_start,
                   long ldb, REAL *c_start, long ldc) {
    for (long m0 = 0; m0 < m_len; m0 += MR_T) {
        int mr = m_len - m0 < MR_T ? (int)(m_len - m0) : MR_T;
        for (long n0 = 0; n0 < n_len; n0 += NR_T) {
            int nr = n_len - n0 < NR_T ? (int)(n_len - n0) : NR_T;
            const REAL *a = a_start + m0 * lda, *b = b_start + n0 * ldb;
            REAL *c = c_start + m0 * ldc + n0;
            switch (mr * 8 + nr) {
                TILE_T_ROW(1) TILE_T_ROW(2)
#if MR_T == 4
                TILE_T_ROW(3) TILE_T_ROW(4)
#endif
            }
        }
    }
}

/* h, w: the padded input's size; h_in, w_in: x's own; top, left: zeros added before the first row, column. */
typedef struct {
    long n, c_in, h, w, c_out, kh, kw, sh, sw, dh, dw, groups, h_out, w_out, h_in, w_in, top, left;
} Shape;

/* How one image's columns are laid out: K rows (one per weight, (c, i, j)) of `row` numbers per output
 * row, padded to `ld`. At stride 1 a column row can take whole input rows ("full width": `row` = W, so
 * the kW - 1 numbers past each output row are junk that no result reads) and is then one contiguous
 * copy of the input instead of H_out short ones; where output rows are short (conv2: 8 of 12) that
 * saves more than the extra multiplications cost. */
typedef struct {
    long k;    /* C_in/G * kH * kW, the length of each dot product */
    long m;    /* C_out/G, output channels per group */
    long p;    /* H_out * W_out, output pixels */
    long row;  /* numbers per output row in the columns: W (full width) or W_out */
    long span; /* numbers per column row that hold results: (H_out - 1) * row + W_out */
    long ld;   /* numbers per column row, a multiple of VL */
    int full;  /* full width */
} Layout;

static Layout layout(const Shape *s) {
    Layout l;
    l.k = s->c_in / s->groups * s->kh * s->kw;
    l.m = s->c_out / s->groups;
    l.p = s->h_out * s->w_out;
    l.full = s->sh == 1 && s->sw == 1 && s->w <= 2 * s->w_out;
    l.row = l.full ? s->w : s->w_out;
    l.span = (s->h_out - 1) * l.row + s->w_out;
    l.ld = round_up(s->h_out * l.row, VL);
    return l;
}

/* Offset in x_g of the input number that weight (c, i, j) meets at output pixel (0, 0). */
static long tap_offset(const Shape *s, long c, long i, long j) { return (c * s->h + i * s->dh) * s->w + j * s->dw; }

/* cols (K, ld) of one group of one image, x_g (C_in/G, H, W): cols[(c,i,j), y*row + x] = x_g[c, y*sH+i*dH,
 * x*sW+j*dW]. The numbers past `span` in each row stay as they are. */
static void im2col(const Shape *s, const Layout *l, const REAL *x_g, REAL *cols) {
    long k = 0;
    for (long c = 0; c < s->c_in / s->groups; c++)
        for (long i = 0; i < s->kh; i++)
            for (long j = 0; j < s->kw; j++, k++) {
                const REAL *from = x_g + tap_offset(s, c, i, j);
                REAL *to = cols + k * l->ld;
                if (l->full) {
                    memcpy(to, from, l->span * sizeof(REAL));
                    continue;
                }
                for (long y = 0; y < s->h_out; y++, to += l->row)
                    for (long x = 0; x < s->w_out; x++) to[x] = from[y * s->sh * s->w + x * s->sw];
            }
}

/* Whether n numbers are all finite: x * 0 is 0 for them and NaN for an Inf or a NaN. */
static int all_finite(const REAL *x, long n) {
    vec acc = {0};
    long i = 0;
    for (; i + VL <= n; i += VL) acc += load(x + i) * 0;
    REAL sum = 0;
    for (int lane = 0; lane < VL; lane++) sum += acc[lane];
    for (; i < n; i++) sum += x[i] * 0;
    return sum == sum;
}

/* Full width: zeroes each column row's junk numbers (past W_out in every output row but the last; the
 * rest of the row past `span` is zero already) where the image x_g (C_in/G, H, W) holds an Inf or a NaN,
 * so that the weight gradient's products with their zero output gradients stay zero (0 * Inf is NaN).
 * A finite image, the usual case, costs one pass over it. */
static void zero_junk(const Shape *s, const Layout *l, const REAL *x_g, REAL *cols) {
    if (!l->full || l->row == s->w_out || all_finite(x_g, s->c_in / s->groups * s->h * s->w)) return;
    for (long k = 0; k < l->k; k++)
        for (long y = 0; y + 1 < s->h_out; y++)
            memset(cols + k * l->ld + y * l->row + s->w_out, 0, (l->row - s->w_out) * sizeof(REAL));
}

/* The transpose of compact columns: colsT (P, ld), colsT[y*W_out + x, (c,i,j)]. Numbers K..ld stay as they are. */
static void im2col_transposed(const Shape *s, const REAL *x_g, REAL *cols_t, long ld) {
    for (long y = 0; y < s->h_out; y++)
        for (long x = 0; x < s->w_out; x++) {
            REAL *to = cols_t + (y * s->w_out + x) * ld;
            for (long c = 0; c < s->c_in / s->groups; c++)
                for (long i = 0; i < s->kh; i++) {
                    const REAL *from = x_g + tap_offset(s, c, i, 0) + y * s->sh * s->w + x * s->sw;
                    for (long j = 0; j < s->kw; j++) *to++ = from[j * s->dw];
                }
        }
}

/* Adds columns laid out as im2col's back into the input pixels they were read from: dx_g (C_in/G, H, W).
 * Full width adds the junk numbers too: they are zero (their output gradient is). */
static void col2im(const Shape *s, const Layout *l, const REAL *cols, REAL *dx_g) {
    long k = 0;
    for (long c = 0; c < s->c_in / s->groups; c++)
        for (long i = 0; i < s->kh; i++)
            for (long j = 0; j < s->kw; j++, k++) {
                REAL *to = dx_g + tap_offset(s, c, i, j);
                const REAL *from = cols + k * l->ld;
                if (l->full) {
                    for (long q = 0; q < l->span; q++) to[q] += from[q];
                    continue;
                }
                for (long y = 0; y < s->h_out; y++, from += l->row)
                    for (long x = 0; x < s->w_out; x++) to[y * s->sh * s->w + x * s->sw] += from[x];
            }
}

/* Numbers in one padded group of one image, (C_in/G, H, W); 0 without padding. */
static long padded_image(const Shape *s) {
    return s->h == s->h_in && s->w == s->w_in ? 0 : round_up(s->c_in / s->groups * s->h * s->w, VL);
}

/* The group of one image x_g (C_in/G, H_in, W_in) into the inside of the zero-bordered copy (C_in/G, H, W). */
static void pad(const Shape *s, const REAL *x_g, REAL *padded) {
    for (long c = 0; c < s->c_in / s->groups; c++)
        for (long y = 0; y < s->h_in; y++)
            memcpy(padded + (c * s->h + s->top + y) * s->w + s->left, x_g + (c * s->h_in + y) * s->w_in,
                   s->w_in * sizeof(REAL));
}

/* The reverse for a gradient: dx_g (C_in/G, H_in, W_in) = the inside of padded (C_in/G, H, W). */
static void crop(const Shape *s, const REAL *padded, REAL *dx_g) {
    for (long c = 0; c < s->c_in / s->groups; c++)
        for (long y = 0; y < s->h_in; y++)
            memcpy(dx_g + (c * s->h_in + y) * s->w_in, padded + (c * s->h + s->top + y) * s->w + s->left,
                   s->w_in * sizeof(REAL));
}

/* Numbers of workspace each thread needs: the padded image and its gradient, then the columns. */
static long per_thread(const Shape *s) {
    Layout l = layout(s);
    long columns = round_up(l.k, VL) * (l.ld > round_up(l.p, VL) ? l.ld : round_up(l.p, VL)); /* cols, colsT, dcols */
    long products = 2 * l.m * l.ld; /* one group's output, or its dout in the columns' layout and transposed */
    long weight_grad = s->c_out * round_up(l.k, VL); /* this thread's partial dW */
    return 2 * padded_image(s) + columns + products + weight_grad;
}

/* Threads the kernels will use when asked for `requested`: 1 when compiled without OpenMP. */
int native_threads(int requested) {
#ifdef _OPENMP
    return requested;
#else
    (void)requested;
    return 1;
#endif
}

/* Numbers of workspace native_forward and native_backward need with this many threads. */
long native_workspace(const Shape *s, int threads) {
    return threads * per_thread(s) + s->c_out * layout(s).k; /* + W^T for dx */
}

/* out = conv(x, weight) + bias; bias may be NULL. workspace: native_workspace(s, threads) numbers. */
void native_forward(const Shape *s, const REAL *x, const REAL *weight, const REAL *bias, REAL *out,
                    REAL *workspace, int threads) {
    Layout l = layout(s);
    long area = per_thread(s), padded_n = padded_image(s);
#pragma omp parallel num_threads(threads)
    {
        REAL *padded = workspace + omp_get_thread_num() * area; /* its border stays zero */
        REAL *cols = padded + 2 * padded_n;
        REAL *product = cols + round_up(l.k, VL) * l.ld;
        memset(padded, 0, padded_n * sizeof(REAL));
        memset(cols, 0, l.k * l.ld * sizeof(REAL));
#pragma omp for schedule(static)
        for (long n = 0; n < s->n; n++)
            for (long g = 0; g < s->groups; g++) {
                const REAL *x_g = x + (n * s->c_in + g * (s->c_in / s->groups)) * s->h_in * s->w_in;
                if (padded_n) pad(s, x_g, padded);
                im2col(s, &l, padded_n ? padded : x_g, cols);
                gemm(l.m, l.ld, l.k, weight + g * l.m * l.k, l.k, cols, l.ld, product, l.ld, 0);
                for (long o = 0; o < l.m; o++) {
                    REAL *to = out + (n * s->c_out + g * l.m + o) * l.p;
                    REAL b = bias ? bias[g * l.m + o] : 0;
                    for (long y = 0; y < s->h_out; y++)
                        for (long x = 0; x < s->w_out; x++)
                            to[y * s->w_out + x] = product[o * l.ld + y * l.row + x] + b;
                }
            }
    }
}

/* grad_x (may be NULL; else zeroed by the caller unless the input is padded) and grad_w (may be NULL)
 * from grad_out. */
void native_backward(const Shape *s, const REAL *x, const REAL *weight, const REAL *grad_out, REAL *grad_x,
                     REAL *grad_w, REAL *workspace, int threads) {
    Layout l = layout(s);
    long k = l.k, m = l.m, p = l.p, ldk = round_up(k, VL), area = per_thread(s), padded_n = padded_image(s);
    /* dW, three ways to the same sums, by shape:
     * - C_out/G a whole number of vectors (wide layers): dW^T (K, M) += cols (K, P) @ dout^T (P, M), gemm
     *   on the columns as they are, with dout transposed (M * P numbers, not K * P);
     * - else long rows of P (conv1): dot products of rows, dW (M, K) += dout (M, P) @ cols (K, P)^T, gemm_t;
     * - else (conv2) the columns transposed, dW (M, K) += dout (M, P) @ colsT (P, K): gemm_t would spend
     *   more time adding lanes than multiplying. */
    int by_output = m % VL == 0, long_rows = l.ld >= LONG_ROW;
    /* W_g^T (K, M) per group, for dx: after the per-thread areas. */
    REAL *weight_t = workspace + threads * area;
    if (grad_x)
        for (long g = 0; g < s->groups; g++)
            for (long o = 0; o < m; o++)
                for (long q = 0; q < k; q++) weight_t[(g * k + q) * m + o] = weight[(g * m + o) * k + q];
#pragma omp parallel num_threads(threads)
    {
        REAL *padded = workspace + omp_get_thread_num() * area; /* its border stays zero */
        REAL *padded_dx = padded + padded_n;
        REAL *cols = padded_dx + padded_n;
        REAL *dout = padded + area - s->c_out * ldk - 2 * m * l.ld; /* (M, ld): zero at the junk numbers */
        REAL *dout_t = dout + m * l.ld;                              /* (ld, M): zero at the junk numbers */
        REAL *dw = dout_t + m * l.ld;                                /* (M, ldk), or (K, M) by_output */
        memset(padded, 0, area * sizeof(REAL));
#pragma omp for schedule(static)
        for (long n = 0; n < s->n; n++)
            for (long g = 0; g < s->groups; g++) {
                const REAL *dout_g = grad_out + (n * s->c_out + g * m) * p;
                long offset = (n * s->c_in + g * (s->c_in / s->groups)) * s->h_in * s->w_in;
                const REAL *x_g = x + offset;
                if (padded_n && grad_w) {
                    pad(s, x_g, padded);
                    x_g = padded;
                }
                if (grad_x || (grad_w && long_rows && !by_output)) /* the paths that read dout's layout */
                    for (long o = 0; o < m; o++)
                        for (long y = 0; y < s->h_out; y++)
                            memcpy(dout + o * l.ld + y * l.row, dout_g + o * p + y * s->w_out,
                                   s->w_out * sizeof(REAL));
                if (grad_w && by_output) {
                    for (long y = 0; y < s->h_out; y++)
                        for (long x = 0; x < s->w_out; x++)
                            for (long o = 0; o < m; o++)
                                dout_t[(y * l.row + x) * m + o] = dout_g[o * p + y * s->w_out + x];
                    im2col(s, &l, x_g, cols);
                    zero_junk(s, &l, x_g, cols);
                    gemm(k, m, l.ld, cols, l.ld, dout_t, m, dw + g * k * m, m, 1);
                } else if (grad_w && long_rows) {
                    im2col(s, &l, x_g, cols);
                    zero_junk(s, &l, x_g, cols);
                    gemm_t(m, k, l.ld, dout, l.ld, cols, l.ld, dw + g * m * ldk, ldk);
                } else if (grad_w) {
                    im2col_transposed(s, x_g, cols, ldk);
                    gemm(m, ldk, p, dout_g, p, cols, ldk, dw + g * m * ldk, ldk, 1);
                }
                if (grad_x) {
                    gemm(k, l.ld, m, weight_t + g * k * m, m, dout, l.ld, cols, l.ld, 0);
                    if (padded_n) {
                        memset(padded_dx, 0, padded_n * sizeof(REAL));
                        col2im(s, &l, cols, padded_dx);
                        crop(s, padded_dx, grad_x + offset);
                    } else {
                        col2im(s, &l, cols, grad_x + offset);
                    }
                }
            }
    }
    if (grad_w) {
        memset(grad_w, 0, s->c_out * k * sizeof(REAL));
        for (int t = 0; t < threads; t++) {
            const REAL *dw = workspace + (t + 1) * area - s->c_out * ldk;
            for (long g = 0; g < s->groups; g++)
                for (long o = 0; o < m; o++)
                    for (long q = 0; q < k; q++)
                        grad_w[(g * m + o) * k + q] += by_output ? dw[(g * k + q) * m + o] : dw[(g * m + o) * ldk + q];
        }
    }
}
