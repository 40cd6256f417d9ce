/* The kernels one C file calls from another: experts.c runs the activation and the row moves per block,
 * layer.c runs the router, the experts and the matmul. */
#ifndef MOE_KERNELS_H
#define MOE_KERNELS_H

#include <stdint.h>

#include "vector_math.h" /* HOT_DECL */

#define DECLARE_SHARED(SUF, T_)                                                                           \
    HOT_DECL void moe_swiglu_forward_##SUF(const T_ *h, int64_t R, int64_t H, T_ *act);                            \
    HOT_DECL void moe_swiglu_backward_##SUF(const T_ *da, const T_ *h, int64_t R, int64_t H, T_ *dh);              \
    HOT_DECL void moe_gather_rows_##SUF(const T_ *src, const int64_t *idx, int64_t n, int64_t d, T_ *out);         \
    HOT_DECL void moe_scatter_rows_##SUF(const T_ *rows, const T_ *scale, const int64_t *idx, int64_t n,           \
                                int64_t d, int accumulate, T_ *out);                                      \
    HOT_DECL void moe_gather_rows_grad_##SUF(const T_ *dy, const int64_t *idx, int64_t n, int64_t d,               \
                                    const T_ *rows, const T_ *scale, T_ *out, T_ *d_scale);               \
    HOT_DECL void moe_gemm_##SUF(int64_t M, int64_t N, int64_t K, const T_ *a, int64_t a_row, int64_t a_col,       \
                        const T_ *b, int64_t ldb, T_ *c, int64_t ldc, int accumulate);                    \
    HOT_DECL int moe_route_forward_##SUF(const T_ *logits, int64_t T, int64_t E, int64_t k, int normalize, T_ *probs, \
                                T_ *lse, T_ *gates, int64_t *index, int64_t *counts, int64_t *pair_order,  \
                                int64_t *token_order, int64_t *sorted_experts, T_ *gates_sorted,          \
                                T_ *load_balance, T_ *z);                                                 \
    HOT_DECL int moe_route_backward_##SUF(const T_ *probs, const T_ *lse, const T_ *gates, const int64_t *index,   \
                                 const int64_t *counts, const T_ *d_gates, const T_ *d_gates_sorted,      \
                                 const int64_t *pair_order, int64_t T, int64_t E, int64_t k, int normalize, \
                                 double d_load_balance, double d_z, T_ *d_logits);                        \
    HOT_DECL int moe_experts_forward_##SUF(const T_ *x, int64_t T, int64_t d, int64_t h, int64_t E,               \
                                  const int64_t *counts, const int64_t *token_order, const T_ *gates,     \
                                  const T_ *w_in, const T_ *w_out, int accumulate, T_ *y, T_ *xs, T_ *hs, \
                                  T_ *acts, T_ *ys);                                                      \
    HOT_DECL int moe_experts_backward_##SUF(const T_ *dy, int64_t T, int64_t d, int64_t h, int64_t E,             \
                                   const int64_t *counts, const int64_t *token_order, const T_ *gates,    \
                                   const T_ *w_in, const T_ *w_out, int accumulate, const T_ *xs,         \
                                   const T_ *hs, const T_ *acts, const T_ *ys, T_ *dx, T_ *d_gates,       \
                                   T_ *dw_in, T_ *dw_out);

DECLARE_SHARED(f32, float)
DECLARE_SHARED(f64, double)

#endif
