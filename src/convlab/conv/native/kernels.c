/* Kernels of `native` (convlab/conv/native/layer.py): convolution as small matrix products on
 * columns built per image while they sit in the cache, in plain C.
 *
 * Compiled at first use by convlab/conv/native/build.py, once per element type:
 *     cc -O3 -march=native -fopenmp -shared -fPIC -DREAL=float -DNATIVE_ABI='"..."' kernels.c
 * The caller (convlab/conv/native/op.py) has checked every tensor: on the CPU, of type REAL,
 * contiguous NCHW, with the sizes below, and few enough numbers for a long to index:
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
 *    A large image goes in bands of output rows whose columns stay under COLUMN_NUMBERS,
 *    so the workspace is bounded by the image, not by kH*kW copies of it.
 * 2. One register-blocked product, `gemm`, does all the arithmetic: C += A @ B with
 *    a tile of up to MR rows x NV vectors of C held in registers while the loop over
 *    R streams one row of B and one number per row of A. Forward, weight gradient and
 *    input gradient are the same product with different operands:
 *        forward  out_g  (M, P)  = W_g   (M, K) @ cols   (K, P)
 *        dW       dW_g   (M, K) += dout_g (M, P) @ colsT (P, K)
 *        dx       dcols  (K, P)  = W_g^T (K, M) @ dout_g (M, P), then col2im into dx
 *    with M = C_out/G. Rows of B and C are padded to whole vectors (zeros in B) so
 *    the tile never needs a scalar tail. dcols overwrite the columns the weight gradient
 *    has just read: one band of columns per thread, not two, a smaller footprint in the cache.
 * 3. Images are shared out among the threads of PyTorch's own OpenMP pool (this
 *    library links the libgomp that torch has loaded); the weight gradient is summed
 *    per thread and the partial sums of the team that actually ran added at the end.
 *    OpenMP may grant fewer threads than asked (OMP_THREAD_LIMIT, OMP_DYNAMIC, a call from
 *    inside another parallel region): only areas written in this call are ever read.
 * 4. Where a product would be mostly copying, the copy is skipped. At stride 1 a full-width column row
 *    is a run of the image from its tap on, so with one output channel per group (depthwise) the
 *    forward and dx are sums of weight * run, and with long rows dW reads the runs in place from a
 *    copy of the image. Transposed columns (short rows) take each (c, i) of a pixel as one vector, and
 *    stride 2 is gathered at a constant stride, which compilers turn into vector shuffles.
 *
 * Non-finite numbers: a product only ever meets numbers F.conv2d's would (0 * Inf is NaN),
 * so NaN and Inf land where they land in F.conv2d: padding within a row ("junk", below)
 * is zeroed where an image or the weight is not finite, and no stale number is ever read.
 */
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#else
static int omp_get_thread_num(void) { return 0; }
static int omp_get_num_threads(void) { return 1; }
#endif

#ifndef REAL
#define REAL float
#endif
#ifndef NATIVE_ABI
#define NATIVE_ABI "unversioned"
#endif

#ifndef VECTOR_BYTES
#define VECTOR_BYTES 64 /* one AVX-512 register; build.py passes 32 where the CPU has none */
#endif
#define VL ((long)(VECTOR_BYTES / sizeof(REAL)))
#define MR 6 /* rows of C per tile */
#define LONG_ROW (8 * VL) /* dW by dot products from rows this long */
#define NR_T 4 /* gemm_t: rows of B per tile */
/* Numbers of one band's columns, at most (one output row's may be more): 4 MB of floats. Every
 * layer of the reference network and the bench takes an image in one band. */
#define COLUMN_NUMBERS (1L << 20)
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

static inline long min_long(long a, long b) { return a < b ? a : b; }

/* Zeroes the last vector of a row of ld_r numbers (a multiple of VL, at least VL) in one store. Called
 * before the row's numbers are written, it leaves the row's tail past them zero at the cost of one
 * instruction: a loop over the tail becomes a call to memset per row, which small images feel. */
static inline void clear_last_vector(REAL *row, long ld_r) { store(row + ld_r - VL, (vec){0}); }

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

/* How one band of an image's columns is laid out: K rows (one per weight, (c, i, j)) of `row` numbers per
 * output row, padded to `ld`. At stride 1 a column row can take whole input rows ("full width": `row` = W,
 * so the kW - 1 numbers past each output row are junk that no result reads) and is then one contiguous
 * copy of the input instead of a short one per output row; where output rows are short (conv2: 8 of 12)
 * that saves more than the extra multiplications cost. A band is `band` output rows, the last one fewer. */
typedef struct {
    long k;    /* C_in/G * kH * kW, the length of each dot product */
    long ldk;  /* K rounded up to whole vectors */
    long m;    /* C_out/G, output channels per group */
    long p;    /* H_out * W_out, output pixels */
    long row;  /* numbers per output row in the columns: W (full width) or W_out */
    long band; /* output rows per band */
    long ld;   /* numbers per column row, a multiple of VL: a whole band's */
    int full;  /* full width */
    /* How the backward sums dW (native_backward says why): */
    int by_output; /* C_out/G a whole number of vectors: dW^T = cols @ dout^T */
    int long_rows; /* else, rows of at least LONG_ROW: dot products of rows */
    int row_runs;  /*   at full width on runs of the image read in place (dw_from_taps) */
    int runs;      /* else, through transposed columns, each (c, i) of a pixel one vector-long run */
    int taps;      /* full width, one output channel per group: forward and dx without columns */
} Layout;

static Layout layout(const Shape *s) {
    Layout l;
    l.k = s->c_in / s->groups * s->kh * s->kw;
    l.ldk = round_up(l.k, VL);
    l.m = s->c_out / s->groups;
    l.p = s->h_out * s->w_out;
    l.full = s->sh == 1 && s->sw == 1 && s->w <= 2 * s->w_out;
    l.row = l.full ? s->w : s->w_out;
    long per_row = (l.ldk > 0 ? l.ldk : 1) * l.row;
    l.band = COLUMN_NUMBERS / per_row;
    l.band = l.band < 1 ? 1 : min_long(l.band, s->h_out);
    l.ld = round_up(l.band * l.row, VL);
    l.by_output = l.m % VL == 0;
    l.long_rows = !l.by_output && l.ld >= LONG_ROW;
    l.row_runs = l.long_rows && l.full;
    l.runs = !l.by_output && !l.long_rows && s->sw == 1 && s->dw == 1 && s->kw <= VL;
    l.taps = l.full && l.m == 1;
    return l;
}

/* Numbers in a band of `rows` output rows that hold results: (rows - 1) * row + W_out. */
static long span(const Shape *s, const Layout *l, long rows) { return (rows - 1) * l->row + s->w_out; }

/* Offset in x_g of the input number that weight (c, i, j) meets at output pixel (0, 0). */
static long tap_offset(const Shape *s, long c, long i, long j) { return (c * s->h + i * s->dh) * s->w + j * s->dw; }

/* Numbers in one padded group of one image, (C_in/G, H, W), and a vector of zeros past it that
 * dw_from_taps and im2col_transposed's runs may read; 0 without padding. */
static long padded_image(const Shape *s) {
    return s->h == s->h_in && s->w == s->w_in ? 0 : round_up(s->c_in / s->groups * s->h * s->w, VL) + VL;
}

/* Numbers of the backward's copy of one group of one image: the padded image, or where dW reads runs of
 * the image (dw_from_taps, im2col_transposed's runs) the image as it is, since a run may read a vector
 * past the image: the copy has zeros there, a caller's tensor may end there. 0 where x is read in place. */
static long image_copy(const Shape *s, const Layout *l) {
    long padded_n = padded_image(s);
    return padded_n || !(l->runs || l->row_runs) ? padded_n : round_up(s->c_in / s->groups * s->h * s->w, VL) + VL;
}

/* One thread's part of the workspace. */
typedef struct {
    REAL *padded, *padded_dx; /* (C_in/G, H, W): the image with its zero border, its gradient */
    REAL *cols;               /* (K, ld) columns, or (band * W_out, ldk) transposed; then their gradient */
    REAL *dout;               /* (M, ld) a band of one group's output, or its gradient, in the columns' layout */
    REAL *dout_t;             /* (ld, M) the gradient transposed */
    REAL *dw;                 /* (C_out, ldk), or (G, K, M): this thread's partial weight gradient */
} Area;

/* Offsets of an Area's parts from its start, and its size: the one place the workspace is laid out.
 * The workspace is W^T (G, K, M) for dx, then one area per thread. */
typedef struct {
    long padded, padded_dx, cols, dout, dout_t, dw, size, shared;
} AreaLayout;

static AreaLayout area_layout(const Shape *s, const Layout *l) {
    AreaLayout a;
    long at = 0, copy_n = image_copy(s, l);
    a.padded = at, at += copy_n;
    a.padded_dx = at, at += copy_n;
    /* ld >= band * W_out: the transposed columns fit too, and a run's vector past their end */
    a.cols = at, at += l->ldk * l->ld + VL;
    a.dout = at, at += l->m * l->ld;
    a.dout_t = at, at += l->ld * l->m;
    a.dw = at, at += s->c_out * l->ldk;
    a.size = round_up(at, VL);
    a.shared = round_up(s->c_out * l->k, VL);
    return a;
}

static Area area_of(const AreaLayout *a, REAL *workspace, int thread) {
    REAL *start = workspace + a->shared + thread * a->size;
    return (Area){start + a->padded, start + a->padded_dx, start + a->cols, start + a->dout,
                  start + a->dout_t, start + a->dw};
}

/* cols (K, ld) of a band of `rows` output rows from y0 on, of one group of one image x_g (C_in/G, H, W):
 * cols[(c,i,j), y*row + x] = x_g[c, (y0 + y)*sH + i*dH, x*sW + j*dW]. Numbers span..ld_r
 * of each row are zero: the weight gradient sums over them. */
static void im2col(const Shape *s, const Layout *l, const REAL *x_g, long y0, long rows, REAL *cols) {
    long k = 0, used = span(s, l, rows), ld_r = round_up(used, VL);
    x_g += y0 * s->sh * s->w;
    for (long c = 0; c < s->c_in / s->groups; c++)
        for (long i = 0; i < s->kh; i++)
            for (long j = 0; j < s->kw; j++, k++) {
                const REAL *from = x_g + tap_offset(s, c, i, j);
                REAL *to = cols + k * l->ld;
                clear_last_vector(to, ld_r);
                if (l->full) {
                    memcpy(to, from, used * sizeof(REAL));
                    continue;
                }
                for (long y = 0; y < rows; y++, to += l->row) {
                    const REAL *in_row = from + y * s->sh * s->w;
                    if (s->sw == 2) /* a constant stride: compilers gather it with vector shuffles */
                        for (long x = 0; x < s->w_out; x++) to[x] = in_row[2 * x];
                    else
                        for (long x = 0; x < s->w_out; x++) to[x] = in_row[x * s->sw];
                }
            }
}

/* Whether n numbers are all finite: x * 0 is 0 for them and NaN for an Inf or a NaN. Four sums, so that
 * the additions do not wait on one another. */
static int all_finite(const REAL *x, long n) {
    vec acc[4] = {{0}, {0}, {0}, {0}};
    long i = 0;
    for (; i + 4 * VL <= n; i += 4 * VL)
        for (int u = 0; u < 4; u++) acc[u] += load(x + i + u * VL) * 0;
    for (; i + VL <= n; i += VL) acc[0] += load(x + i) * 0;
    vec all = acc[0] + acc[1] + acc[2] + acc[3];
    REAL sum = 0;
    for (int lane = 0; lane < VL; lane++) sum += all[lane];
    for (; i < n; i++) sum += x[i] * 0;
    return sum == sum;
}

/* Full width: zeroes a band's junk numbers in cols (past W_out in every output row but the last) for an
 * image that holds an Inf or a NaN, so that the weight gradient's products with their zero output
 * gradients stay zero (0 * Inf is NaN). */
static void zero_junk(const Shape *s, const Layout *l, long rows, REAL *cols) {
    if (!l->full || l->row == s->w_out) return;
    for (long k = 0; k < l->k; k++)
        for (long y = 0; y + 1 < rows; y++)
            memset(cols + k * l->ld + y * l->row + s->w_out, 0, (l->row - s->w_out) * sizeof(REAL));
}

/* The transpose of compact columns of a band: colsT (rows * W_out, ldk), colsT[y*W_out + x, (c,i,j)].
 * Numbers K..ldk of each row are not read. With `runs` (stride and dilation 1 along W, kW <= VL) the kW
 * numbers of each (c, i) are copied as one vector: the VL - kW numbers it writes past them are
 * overwritten next, as every store lies past the one before, up to a vector past the last row (the
 * workspace has room for it); the source must have a vector of readable numbers past its end. */
static void im2col_transposed(const Shape *s, const Layout *l, const REAL *x_g, long y0, long rows, REAL *cols_t) {
    /* In locals: a store through `to` could otherwise alias the shape, which would be read again. */
    const long c_n = s->c_in / s->groups, kh = s->kh, kw = s->kw, w_out = s->w_out, ldk = l->ldk;
    const long row_step = s->sh * s->w, x_step = s->sw, i_step = s->dh * s->w, j_step = s->dw, c_step = s->h * s->w;
    const int runs = l->runs;
    x_g += y0 * row_step;
    for (long y = 0; y < rows; y++)
        for (long x = 0; x < w_out; x++) {
            REAL *to = cols_t + (y * w_out + x) * ldk;
            const REAL *pixel = x_g + y * row_step + x * x_step;
            for (long c = 0; c < c_n; c++)
                for (long i = 0; i < kh; i++) {
                    const REAL *from = pixel + c * c_step + i * i_step;
                    if (runs) {
                        store(to, load(from));
                        to += kw;
                        continue;
                    }
                    for (long j = 0; j < kw; j++) *to++ = from[j * j_step];
                }
        }
}

/* Adds a band's columns, laid out as im2col's, back into the input pixels they were read from:
 * dx_g (C_in/G, H, W). `whole`: full width, junk included (zero where the weight is finite), in one run
 * per row; else output row by output row, junk left out. */
static void col2im(const Shape *s, const Layout *l, const REAL *cols, long y0, long rows, int whole,
                   REAL *dx_g) {
    long k = 0, used = span(s, l, rows);
    dx_g += y0 * s->sh * s->w;
    for (long c = 0; c < s->c_in / s->groups; c++)
        for (long i = 0; i < s->kh; i++)
            for (long j = 0; j < s->kw; j++, k++) {
                REAL *to = dx_g + tap_offset(s, c, i, j);
                const REAL *from = cols + k * l->ld;
                if (l->full && whole) {
                    for (long q = 0; q < used; q++) to[q] += from[q];
                    continue;
                }
                for (long y = 0; y < rows; y++, from += l->row) {
                    REAL *out_row = to + y * s->sh * s->w;
                    if (s->sw == 2) /* a constant stride, as im2col's */
                        for (long x = 0; x < s->w_out; x++) out_row[2 * x] += from[x];
                    else
                        for (long x = 0; x < s->w_out; x++) out_row[x * s->sw] += from[x];
                }
            }
}

/* Full width, one output channel per group (depthwise): the columns are never built. Each column row is a
 * run of the image from its tap on, so the band's `used` output numbers (M = 1, junk included: it is never
 * read) are sums over the taps of weight * run, in the taps' order, as gemm's tile adds them up. */
static void forward_from_taps(const Shape *s, const REAL *x_g, const REAL *weight_g, long y0, long used,
                              REAL *out_band) {
    long k = 0;
    x_g += y0 * s->w;
    for (long q = 0; q < used; q++) out_band[q] = 0;
    for (long c = 0; c < s->c_in / s->groups; c++)
        for (long i = 0; i < s->kh; i++)
            for (long j = 0; j < s->kw; j++, k++) {
                const REAL *from = x_g + tap_offset(s, c, i, j);
                REAL w = weight_g[k];
                for (long q = 0; q < used; q++) out_band[q] += w * from[q];
            }
}

/* Full width, the image finite and in the backward's copy (image_copy: a vector of zeros past its end):
 * dW (M, ldk) += dout (M, ld) @ cols^T as gemm_t computes it on im2col's columns, with each column row
 * read in place from the image instead of copied. The kW taps of one (c, i) are rows dW apart; the
 * numbers past `used` that ld_r takes in are image numbers (finite) that meet dout's zero tail. */
static void dw_from_taps(const Shape *s, const Layout *l, const REAL *dout, const REAL *x_g, long y0, long ld_r,
                         REAL *dw_g) {
    x_g += y0 * s->w;
    for (long c = 0; c < s->c_in / s->groups; c++)
        for (long i = 0; i < s->kh; i++)
            gemm_t(l->m, s->kw, ld_r, dout, l->ld, x_g + tap_offset(s, c, i, 0), s->dw,
                   dw_g + (c * s->kh + i) * s->kw, l->ldk);
}

/* Full width, one output channel per group (depthwise), a finite weight: dx_g += each tap's weight times the
 * band's output gradient dout (1, ld), added where col2im would add that tap's column row (junk included:
 * zero there). The columns of dx are never built. */
static void dx_from_taps(const Shape *s, const REAL *dout, const REAL *weight_g, long y0, long used, REAL *dx_g) {
    long k = 0;
    dx_g += y0 * s->w;
    for (long c = 0; c < s->c_in / s->groups; c++)
        for (long i = 0; i < s->kh; i++)
            for (long j = 0; j < s->kw; j++, k++) {
                REAL *to = dx_g + tap_offset(s, c, i, j);
                REAL w = weight_g[k];
                for (long q = 0; q < used; q++) to[q] += w * dout[q];
            }
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

/* The ABI this library was built for: its build key and element type, checked by build.py on loading. */
const char *native_abi(void) { return NATIVE_ABI; }

/* Threads to ask OpenMP for when `requested` are wanted for n images: 1 without OpenMP, at most one per
 * image (the images are what is shared out), at least 1. */
int native_threads(int requested, long n) {
#ifdef _OPENMP
    long t = min_long(requested, n);
    return t < 1 ? 1 : (int)t;
#else
    (void)requested, (void)n;
    return 1;
#endif
}

/* Numbers of workspace native_forward and native_backward need with this many threads. */
long native_workspace(const Shape *s, int threads) {
    Layout l = layout(s);
    AreaLayout a = area_layout(s, &l);
    return a.shared + threads * a.size;
}

/* The band of output rows from y0 on of one group's output (M, P) into dout (M, ld): rows of W_out numbers
 * at multiples of `row`; numbers span..ld_r of each row zero (the junk between rows stays zero: the
 * caller zeroes dout once). */
static void band_to_columns(const Shape *s, const Layout *l, const REAL *dout_g, long y0, long rows,
                            REAL *dout) {
    long used = span(s, l, rows), ld_r = round_up(used, VL);
    for (long o = 0; o < l->m; o++) {
        clear_last_vector(dout + o * l->ld, ld_r);
        for (long y = 0; y < rows; y++)
            memcpy(dout + o * l->ld + y * l->row, dout_g + o * l->p + (y0 + y) * s->w_out,
                   s->w_out * sizeof(REAL));
    }
}

/* out = conv(x, weight) + bias; bias may be NULL. workspace: native_workspace(s, threads) numbers. */
void native_forward(const Shape *s, const REAL *x, const REAL *weight, const REAL *bias, REAL *out,
                    REAL *workspace, int threads) {
    Layout l = layout(s);
    AreaLayout al = area_layout(s, &l);
    long padded_n = padded_image(s);
#pragma omp parallel num_threads(threads)
    {
        Area a = area_of(&al, workspace, omp_get_thread_num());
        memset(a.padded, 0, padded_n * sizeof(REAL)); /* its border stays zero */
#pragma omp for schedule(static)
        for (long n = 0; n < s->n; n++)
            for (long g = 0; g < s->groups; g++) {
                const REAL *x_g = x + (n * s->c_in + g * (s->c_in / s->groups)) * s->h_in * s->w_in;
                if (padded_n) {
                    pad(s, x_g, a.padded);
                    x_g = a.padded;
                }
                for (long y0 = 0; y0 < s->h_out; y0 += l.band) {
                    long rows = min_long(l.band, s->h_out - y0), used = span(s, &l, rows);
                    if (l.taps) {
                        forward_from_taps(s, x_g, weight + g * l.k, y0, used, a.dout);
                    } else {
                        im2col(s, &l, x_g, y0, rows, a.cols);
                        gemm(l.m, round_up(used, VL), l.k, weight + g * l.m * l.k, l.k, a.cols, l.ld, a.dout, l.ld, 0);
                    }
                    for (long o = 0; o < l.m; o++) {
                        REAL *to = out + (n * s->c_out + g * l.m + o) * l.p + y0 * s->w_out;
                        REAL b = bias ? bias[g * l.m + o] : 0;
                        for (long y = 0; y < rows; y++)
                            for (long x = 0; x < s->w_out; x++)
                                to[y * s->w_out + x] = a.dout[o * l.ld + y * l.row + x] + b;
                    }
                }
            }
    }
}

/* grad_x and grad_w (either may be NULL) from grad_out, every number of each written. */
void native_backward(const Shape *s, const REAL *x, const REAL *weight, const REAL *grad_out, REAL *grad_x,
                     REAL *grad_w, REAL *workspace, int threads) {
    Layout l = layout(s);
    AreaLayout al = area_layout(s, &l);
    long k = l.k, m = l.m, p = l.p, ldk = l.ldk, padded_n = padded_image(s), copy_n = image_copy(s, &l);
    long image_n = s->c_in / s->groups * s->h_in * s->w_in; /* one group of one image of x */
    /* dW, three ways to the same sums, by shape:
     * - C_out/G a whole number of vectors (wide layers): dW^T (K, M) += cols (K, P) @ dout^T (P, M), gemm
     *   on the columns as they are, with dout transposed (M * P numbers, not K * P);
     * - else long rows of P (conv1): dot products of rows, dW (M, K) += dout (M, P) @ cols (K, P)^T, gemm_t;
     *   at full width on the image's runs in place (dw_from_taps), unless the image holds an Inf or a NaN:
     *   then on copied columns whose junk is zeroed;
     * - else (conv2) the columns transposed, dW (M, K) += dout (M, P) @ colsT (P, K): gemm_t would spend
     *   more time adding lanes than multiplying. */
    int by_output = l.by_output, long_rows = l.long_rows;
    /* With a non-finite weight the junk of dx's columns is not zero: col2im leaves it out. */
    int weight_finite = grad_x ? all_finite(weight, s->c_out * k) : 1;
    REAL *weight_t = workspace; /* W_g^T (K, M) per group, for dx */
    if (grad_x)
        for (long g = 0; g < s->groups; g++)
            for (long o = 0; o < m; o++)
                for (long q = 0; q < k; q++) weight_t[(g * k + q) * m + o] = weight[(g * m + o) * k + q];
    int team = 1;
#pragma omp parallel num_threads(threads)
    {
#pragma omp single
        team = omp_get_num_threads(); /* the threads OpenMP granted, maybe fewer than asked */
        Area a = area_of(&al, workspace, omp_get_thread_num());
        memset(a.padded, 0, 2 * copy_n * sizeof(REAL)); /* their borders stay zero */
        memset(a.dout, 0, 2 * m * l.ld * sizeof(REAL));   /* dout and dout_t: zero at the junk numbers */
        memset(a.dw, 0, s->c_out * ldk * sizeof(REAL));
#pragma omp for schedule(static)
        for (long n = 0; n < s->n; n++)
            for (long g = 0; g < s->groups; g++) {
                long offset = (n * s->c_in + g * (s->c_in / s->groups)) * s->h_in * s->w_in;
                const REAL *x_g = x + offset;
                if (copy_n && grad_w) {
                    pad(s, x_g, a.padded);
                    x_g = a.padded;
                }
                /* Read by zero_junk only, on the two paths that multiply the columns' junk. */
                int image_finite = grad_w && l.full && (by_output || long_rows)
                                       ? all_finite(x_g, s->c_in / s->groups * s->h * s->w)
                                       : 1;
                REAL *dx_g = !grad_x ? NULL : padded_n ? a.padded_dx : grad_x + offset;
                /* Zeroed here, image by image, while it is about to be in the cache anyway. */
                if (dx_g) memset(dx_g, 0, (padded_n ? padded_n : image_n) * sizeof(REAL));
                for (long y0 = 0; y0 < s->h_out; y0 += l.band) {
                    long rows = min_long(l.band, s->h_out - y0), used = span(s, &l, rows);
                    long ld_r = round_up(used, VL);
                    const REAL *dout_g = grad_out + (n * s->c_out + g * m) * p;
                    if (grad_x || (grad_w && long_rows && !by_output)) /* the paths that read dout's layout */
                        band_to_columns(s, &l, dout_g, y0, rows, a.dout);
                    if (grad_w && by_output) {
                        for (long y = 0; y < rows; y++)
                            for (long x = 0; x < s->w_out; x++)
                                for (long o = 0; o < m; o++)
                                    a.dout_t[(y * l.row + x) * m + o] = dout_g[o * p + (y0 + y) * s->w_out + x];
                        memset(a.dout_t + used * m, 0, (ld_r - used) * m * sizeof(REAL));
                        im2col(s, &l, x_g, y0, rows, a.cols);
                        if (!image_finite) zero_junk(s, &l, rows, a.cols);
                        gemm(k, m, ld_r, a.cols, l.ld, a.dout_t, m, a.dw + g * k * m, m, 1);
                    } else if (grad_w && l.row_runs && image_finite) {
                        dw_from_taps(s, &l, a.dout, x_g, y0, ld_r, a.dw + g * m * ldk);
                    } else if (grad_w && long_rows) {
                        im2col(s, &l, x_g, y0, rows, a.cols);
                        if (!image_finite) zero_junk(s, &l, rows, a.cols);
                        gemm_t(m, k, ld_r, a.dout, l.ld, a.cols, l.ld, a.dw + g * m * ldk, ldk);
                    } else if (grad_w) {
                        im2col_transposed(s, &l, x_g, y0, rows, a.cols);
                        gemm(m, ldk, rows * s->w_out, dout_g + y0 * s->w_out, p, a.cols, ldk, a.dw + g * m * ldk,
                             ldk, 1);
                    }
                    if (grad_x && l.taps && weight_finite) {
                        dx_from_taps(s, a.dout, weight + g * k, y0, used, dx_g);
                    } else if (grad_x) {
                        gemm(k, ld_r, m, weight_t + g * k * m, m, a.dout, l.ld, a.cols, l.ld, 0);
                        col2im(s, &l, a.cols, y0, rows, weight_finite, dx_g);
                    }
                }
                if (padded_n && grad_x) crop(s, a.padded_dx, grad_x + offset);
            }
        /* The partial sums of the team that ran (the loop above ends with every thread waiting). */
        if (grad_w) {
#pragma omp for schedule(static)
            for (long row = 0; row < s->c_out; row++) {
                long g = row / m, o = row % m;
                for (long q = 0; q < k; q++) {
                    REAL sum = 0;
                    for (int t = 0; t < team; t++) {
                        const REAL *dw = area_of(&al, workspace, t).dw;
                        sum += by_output ? dw[(g * k + q) * m + o] : dw[row * ldk + q];
                    }
                    grad_w[row * k + q] = sum;
                }
            }
        }
    }
}
