/* The whole expert step of an MoE layer on a CPU, one call each way: gather, SwiGLU experts, gated combine.
 *
 *     y[t] = sum over kept pairs n of token t:  w_n * FFN_{e(n)}(x[t]),   FFN_e(x) = (silu(x Wg_e) * (x Wu_e)) Wd_e
 *
 * The readable layer (moe_core/layer/moe_layer.py) runs the same computation as torch ops (gather, a matmul pair
 * per expert, the activation, index_add). At the Playground's sizes (256 tokens, 8 experts of 64 x 128) each expert's matmul
 * is ~10 us of arithmetic, and torch spends about as long again dispatching it, six matmuls per expert per
 * step plus the slicing around them. Here every expert's rows go through in blocks of at most BLOCK_ROWS
 * (so a block's intermediates stay in cache at any size), with a small matmul of our own:
 *
 *   moe_gemm:  C (M x N) = [C +] A @ B, A read through (row, column) strides, so that A^T costs nothing.
 *              A 4-row x 64-column (float32) tile of C is kept in registers while k runs: 16 AVX-512
 *              registers, one load of B's row and 4 broadcasts of A per 16 fused multiply-adds. On this
 *              project's CPUs it runs within ~10-20 % of MKL's sgemm at 64 x 64 x 128 (MKL is faster on big
 *              matrices, where the readable layer runs instead; see EXPERT_WEIGHTS_LIMIT in ../__init__.py).
 *
 * Forward per block of R rows of expert e:   xb = x[tok]; hb = xb @ W_in[e]; ab = swiglu(hb); yb = ab @ W_out[e];
 *                                            y[tok] (+)= w * yb
 * Backward per block (dy: dL/dy):            dyc = w * dy[tok], dw = <dy[tok], yb>;   da = dyc @ W_out[e]^T;
 *                                            dh = swiglu'(da, hb);  dW_out[e] += ab^T @ dyc;  dW_in[e] += xb^T @ dh;
 *                                            dx[tok] (+)= dh @ W_in[e]^T
 * The forward keeps xb, hb, ab (and yb when there are gates) in caller-owned arrays for the backward, as the
 * torch path's autograd would. Results match it to float rounding (fused multiply-adds, another sum order);
 * tests/moe_core/test_native.py and the layer-vs-reference tests check both paths.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "vector_math.h"

/* a * b + c as one fused multiply-add where the CPU has it (the matmul's inner loop): ISO C mode turns
 * contraction off by default in GCC; the rest of the kernels keep it off */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=fast")
#elif defined(__clang__)
#pragma clang fp contract(fast)
#endif

int moe_experts_abi_version(void) { return 1; }

/* 1 where moe_gemm is built for AVX-512 and AVX2 (HOT's clones): only there was it measured as fast as MKL's
 * sgemm behind torch at the Playground's sizes. A baseline build (SSE2 on x86: no FMA, 4 lanes) is several times
 * slower, and ARM was not measured: there moe_core keeps torch's matmuls (native.for_tensors(matmul=True)). */
int moe_gemm_vectorized(void) {
#ifdef MOE_HOT_CLONES
    return 1;
#else
    return 0;
#endif
}

#define GEMM_ROWS 4     /* rows of C per register tile */
#define BLOCK_ROWS 128  /* rows of one expert per block: x, h, activation and output of a block ~ 230 KB */

/* One tile of C: rows r < MI, columns j < NJ of the tile at (i0, j0), kept in acc while k runs. The bounds are
 * passed as the compile-time constants GEMM_ROWS and GEMM_COLS for a full tile (then the compiler keeps acc in
 * vector registers and unrolls the rows) or as the ragged sizes at the edges. */
#define GEMM_TILE(T_, MI, NJ)                                                                                 \
    do {                                                                                                      \
        for (int r = 0; r < (MI); r++)                                                                        \
            for (int j = 0; j < (NJ); j++) acc[r][j] = accumulate ? c0[r * ldc + j] : 0;                      \
        for (int64_t k = 0; k < K; k++) {                                                                     \
            const T_ *bk = b0 + k * ldb, *ak = a0 + k * a_col;                                                \
            for (int r = 0; r < (MI); r++) {                                                                  \
                T_ ar = ak[r * a_row];                                                                        \
                for (int j = 0; j < (NJ); j++) acc[r][j] += ar * bk[j];                                       \
            }                                                                                                 \
        }                                                                                                     \
        for (int r = 0; r < (MI); r++)                                                                        \
            for (int j = 0; j < (NJ); j++) c0[r * ldc + j] = acc[r][j];                                       \
    } while (0)

/* GEMM_COLS: columns of C per register tile (64 float32 = 4 AVX-512 registers per row; 32 float64). */
#define DEFINE_GEMM(SUF, T_, GEMM_COLS)                                                                       \
    HOT void moe_gemm_##SUF(int64_t M, int64_t N, int64_t K, const T_ *a, int64_t a_row, int64_t a_col,       \
                            const T_ *b, int64_t ldb, T_ *c, int64_t ldc, int accumulate) {                   \
        for (int64_t i0 = 0; i0 < M; i0 += GEMM_ROWS) {                                                       \
            int64_t mi = M - i0 < GEMM_ROWS ? M - i0 : GEMM_ROWS;                                             \
            const T_ *a0 = a + i0 * a_row;                                                                    \
            for (int64_t j0 = 0; j0 < N; j0 += GEMM_COLS) {                                                   \
                int64_t nj = N - j0 < GEMM_COLS ? N - j0 : GEMM_COLS;                                         \
                T_ acc[GEMM_ROWS][GEMM_COLS];                                                                 \
                T_ *c0 = c + i0 * ldc + j0;                                                                   \
                const T_ *b0 = b + j0;                                                                        \
                if (mi == GEMM_ROWS && nj == GEMM_COLS)                                                       \
                    GEMM_TILE(T_, GEMM_ROWS, GEMM_COLS); /* the full tile, in registers */                    \
                else if (nj == GEMM_COLS)                                                                     \
                    GEMM_TILE(T_, mi, GEMM_COLS); /* the last rows of a full-width panel */                   \
                else                                                                                          \
                    GEMM_TILE(T_, mi, nj); /* a narrow last panel */                                          \
            }                                                                                                 \
        }                                                                                                     \
    }

/* out (cols x rows) = in (rows x cols)^T (the backward's W^T). 8 x 8 tiles with fixed bounds, then the ragged
 * edges; for float32, where the compiler has __builtin_shufflevector (GCC 12+, clang), a tile is 8 vector
 * loads, 24 shuffles and 8 vector stores (~0.2 ns per element here, 3x the plain loop). */
#if defined(__has_builtin)
#if __has_builtin(__builtin_shufflevector)
#define MOE_HAS_SHUFFLEVECTOR 1
#endif
#endif

#define DEFINE_TRANSPOSE_EDGES(SUF, T_)                                                                       \
    static inline void transpose_edges_##SUF(const T_ *in, int64_t rows, int64_t cols, T_ *out) {             \
        int64_t rows8 = rows - rows % 8, cols8 = cols - cols % 8;                                             \
        for (int64_t i = 0; i < rows; i++)                                                                    \
            for (int64_t j = i < rows8 ? cols8 : 0; j < cols; j++) out[j * rows + i] = in[i * cols + j];      \
    }
#define DEFINE_TRANSPOSE_PLAIN(SUF, T_)                                                                       \
    static void transpose_plain_##SUF(const T_ *in, int64_t rows, int64_t cols, T_ *out) {                    \
        for (int64_t i0 = 0; i0 + 8 <= rows; i0 += 8)                                                         \
            for (int64_t j0 = 0; j0 + 8 <= cols; j0 += 8)                                                     \
                for (int i = 0; i < 8; i++)                                                                   \
                    for (int j = 0; j < 8; j++) out[(j0 + j) * rows + i0 + i] = in[(i0 + i) * cols + j0 + j]; \
        transpose_edges_##SUF(in, rows, cols, out);                                                           \
    }
DEFINE_TRANSPOSE_EDGES(f32, float)
DEFINE_TRANSPOSE_EDGES(f64, double)
DEFINE_TRANSPOSE_PLAIN(f64, double)
#ifndef MOE_HAS_SHUFFLEVECTOR
DEFINE_TRANSPOSE_PLAIN(f32, float)
#endif

#ifdef MOE_HAS_SHUFFLEVECTOR
typedef float v8sf __attribute__((vector_size(32)));
#define SHUF(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
HOT static void transpose_f32(const float *in, int64_t rows, int64_t cols, float *out) {
    for (int64_t i0 = 0; i0 + 8 <= rows; i0 += 8)
        for (int64_t j0 = 0; j0 + 8 <= cols; j0 += 8) {
            v8sf r[8], t[8], s[8];
            for (int i = 0; i < 8; i++) memcpy(&r[i], in + (i0 + i) * cols + j0, sizeof(v8sf));
            for (int i = 0; i < 8; i += 2) { /* interleave row pairs */
                t[i] = SHUF(r[i], r[i + 1], 0, 8, 1, 9, 4, 12, 5, 13);
                t[i + 1] = SHUF(r[i], r[i + 1], 2, 10, 3, 11, 6, 14, 7, 15);
            }
            for (int i = 0; i < 8; i += 4) { /* then pairs of pairs: 4-row columns in each 128-bit half */
                s[i] = SHUF(t[i], t[i + 2], 0, 1, 8, 9, 4, 5, 12, 13);
                s[i + 1] = SHUF(t[i], t[i + 2], 2, 3, 10, 11, 6, 7, 14, 15);
                s[i + 2] = SHUF(t[i + 1], t[i + 3], 0, 1, 8, 9, 4, 5, 12, 13);
                s[i + 3] = SHUF(t[i + 1], t[i + 3], 2, 3, 10, 11, 6, 7, 14, 15);
            }
            for (int j = 0; j < 4; j++) { /* join the halves: columns j and j + 4 */
                v8sf lo = SHUF(s[j], s[j + 4], 0, 1, 2, 3, 8, 9, 10, 11);
                v8sf hi = SHUF(s[j], s[j + 4], 4, 5, 6, 7, 12, 13, 14, 15);
                memcpy(out + (j0 + j) * rows + i0, &lo, sizeof(v8sf));
                memcpy(out + (j0 + j + 4) * rows + i0, &hi, sizeof(v8sf));
            }
        }
    transpose_edges_f32(in, rows, cols, out);
}
#else
#define transpose_f32 transpose_plain_f32
#endif
#define transpose_f64 transpose_plain_f64

#define DEFINE_EXPERTS(SUF, T_)                                                                               \
    /* x (T, d); counts (E,) rows per expert, summing to N; token_order (N,) the token of each row, grouped   \
     * by expert; gates (N,) or NULL (every gate 1); w_in (E, d, 2h), w_out (E, h, d); accumulate 0 when      \
     * token_order hits each token once (y is written, not added to). y (T, d) is written whole. xs (N, d),   \
     * hs (N, 2h), acts (N, h): kept for the backward, or all NULL when no gradient is wanted; ys (N, d):     \
     * the un-gated outputs, kept when there are gates to differentiate, else NULL. 0, or 1 when out of       \
     * memory. */                                                                                             \
    HOT int moe_experts_forward_##SUF(const T_ *x, int64_t T, int64_t d, int64_t h, int64_t E,                \
                                      const int64_t *counts, const int64_t *token_order, const T_ *gates,     \
                                      const T_ *w_in, const T_ *w_out, int accumulate, T_ *y, T_ *xs,         \
                                      T_ *hs, T_ *acts, T_ *ys) {                                             \
        int keep = xs != NULL;                                                                                \
        size_t work_rows = (size_t)(keep ? 0 : d + 3 * h) + (size_t)(ys ? 0 : d);                             \
        T_ *work = work_rows ? malloc((size_t)BLOCK_ROWS * work_rows * sizeof(T_)) : NULL;                    \
        if (work_rows && !work) return 1;                                                                     \
        T_ *w = work;                                                                                         \
        T_ *xb_w = keep ? NULL : w, *hb_w = keep ? NULL : w + BLOCK_ROWS * d;                                 \
        T_ *ab_w = keep ? NULL : hb_w + BLOCK_ROWS * 2 * h;                                                   \
        T_ *yb_w = ys ? NULL : w + (keep ? 0 : BLOCK_ROWS * (d + 3 * h));                                     \
        if (accumulate) memset(y, 0, (size_t)(T * d) * sizeof(T_));                                           \
        int64_t row = 0;                                                                                      \
        for (int64_t e = 0; e < E; e++) {                                                                     \
            const T_ *wi = w_in + e * d * 2 * h, *wo = w_out + e * h * d;                                     \
            for (int64_t r0 = row; r0 < row + counts[e]; r0 += BLOCK_ROWS) {                                  \
                int64_t R = row + counts[e] - r0 < BLOCK_ROWS ? row + counts[e] - r0 : BLOCK_ROWS;            \
                T_ *xb = keep ? xs + r0 * d : xb_w, *hb = keep ? hs + r0 * 2 * h : hb_w;                      \
                T_ *ab = keep ? acts + r0 * h : ab_w, *yb = ys ? ys + r0 * d : yb_w;                          \
                moe_gather_rows_##SUF(x, token_order + r0, R, d, xb);                                         \
                moe_gemm_##SUF(R, 2 * h, d, xb, d, 1, wi, 2 * h, hb, 2 * h, 0);                               \
                moe_swiglu_forward_##SUF(hb, R, h, ab);                                                       \
                moe_gemm_##SUF(R, d, h, ab, h, 1, wo, d, yb, d, 0);                                           \
                moe_scatter_rows_##SUF(yb, gates ? gates + r0 : NULL, token_order + r0, R, d, accumulate, y); \
            }                                                                                                 \
            row += counts[e];                                                                                 \
        }                                                                                                     \
        free(work);                                                                                           \
        return 0;                                                                                             \
    }                                                                                                         \
                                                                                                              \
    /* dy (T, d) and the forward's arguments and kept arrays (ys only with gates). dx (T, d) or NULL,         \
     * written whole; d_gates (N,) or NULL; dw_in (E, d, 2h) and dw_out (E, h, d), written whole (zero for    \
     * an expert without rows). 0, or 1 when out of memory. */                                                \
    HOT int moe_experts_backward_##SUF(const T_ *dy, int64_t T, int64_t d, int64_t h, int64_t E,              \
                                       const int64_t *counts, const int64_t *token_order, const T_ *gates,    \
                                       const T_ *w_in, const T_ *w_out, int accumulate, const T_ *xs,         \
                                       const T_ *hs, const T_ *acts, const T_ *ys, T_ *dx, T_ *d_gates,       \
                                       T_ *dw_in, T_ *dw_out) {                                               \
        /* work: W_in[e]^T (2h, d), W_out[e]^T (d, h), and per block dy rows (R, d), d activation (R, h),     \
         * d [gate | up] (R, 2h), dx rows (R, d) */                                                           \
        T_ *work = malloc((size_t)(3 * h * d + BLOCK_ROWS * (2 * d + 3 * h)) * sizeof(T_));                   \
        if (!work) return 1;                                                                                  \
        T_ *wi_t = work, *wo_t = wi_t + 2 * h * d, *dyb = wo_t + h * d, *dab = dyb + BLOCK_ROWS * d;          \
        T_ *dhb = dab + BLOCK_ROWS * h, *dxb = dhb + BLOCK_ROWS * 2 * h;                                      \
        if (dx && accumulate) memset(dx, 0, (size_t)(T * d) * sizeof(T_));                                    \
        int64_t row = 0;                                                                                      \
        for (int64_t e = 0; e < E; e++) {                                                                     \
            T_ *gi = dw_in + e * d * 2 * h, *go = dw_out + e * h * d;                                         \
            if (counts[e] == 0) {                                                                             \
                memset(gi, 0, (size_t)(d * 2 * h) * sizeof(T_));                                              \
                memset(go, 0, (size_t)(h * d) * sizeof(T_));                                                  \
                continue;                                                                                     \
            }                                                                                                 \
            transpose_##SUF(w_out + e * h * d, h, d, wo_t);                                                   \
            if (dx) transpose_##SUF(w_in + e * d * 2 * h, d, 2 * h, wi_t);                                    \
            for (int64_t r0 = row; r0 < row + counts[e]; r0 += BLOCK_ROWS) {                                  \
                int64_t R = row + counts[e] - r0 < BLOCK_ROWS ? row + counts[e] - r0 : BLOCK_ROWS;            \
                int more = r0 > row; /* weight gradients add up over an expert's blocks */                    \
                const int64_t *tok = token_order + r0;                                                        \
                moe_gather_rows_grad_##SUF(dy, tok, R, d, d_gates ? ys + r0 * d : NULL,                       \
                                           gates ? gates + r0 : NULL, dyb, d_gates ? d_gates + r0 : NULL);    \
                moe_gemm_##SUF(R, h, d, dyb, d, 1, wo_t, h, dab, h, 0);                                       \
                moe_swiglu_backward_##SUF(dab, hs + r0 * 2 * h, R, h, dhb);                                   \
                moe_gemm_##SUF(h, d, R, acts + r0 * h, 1, h, dyb, d, go, d, more);                            \
                moe_gemm_##SUF(d, 2 * h, R, xs + r0 * d, 1, d, dhb, 2 * h, gi, 2 * h, more);                  \
                if (dx) {                                                                                     \
                    moe_gemm_##SUF(R, d, 2 * h, dhb, 2 * h, 1, wi_t, d, dxb, d, 0);                           \
                    moe_scatter_rows_##SUF(dxb, NULL, tok, R, d, accumulate, dx);                             \
                }                                                                                             \
            }                                                                                                 \
            row += counts[e];                                                                                 \
        }                                                                                                     \
        free(work);                                                                                           \
        return 0;                                                                                             \
    }

DEFINE_GEMM(f32, float, 64)
DEFINE_GEMM(f64, double, 32)
DEFINE_EXPERTS(f32, float)
DEFINE_EXPERTS(f64, double)
