/* Row moves of the dispatch (called by experts.c): gather the rows of the tokens sent to the experts, and
 * scatter the experts' outputs back, gate-weighted, in one pass each.
 *
 *     gather:          out[i] = src[idx[i]]                                           (index_select)
 *     scatter:         out[idx[i]] (+)= scale[i] * rows[i]        scale may be NULL   (mul + index_add_)
 *     gather_grad:     out[i] = scale[i] * dy[idx[i]];  d_scale[i] = <dy[idx[i]], rows[i]>
 *                                                                 (index_select + vecdot + mul_)
 * torch's index_add_ and vecdot cost ~1.4 ns per element at these shapes (512 x 64), several times a plain
 * loop; the gate multiply and the gate gradient are an extra pass each. Indices are trusted: the router's
 * sort produces them in [0, T).
 */
#include <stdint.h>
#include <string.h>

#include "kernels.h"
#include "vector_math.h"

int moe_rows_abi_version(void) { return 1; }

#define DEFINE_ROWS(SUF, T_)                                                                              \
    HOT void moe_gather_rows_##SUF(const T_ *src, const int64_t *idx, int64_t n, int64_t d, T_ *out) {    \
        for (int64_t i = 0; i < n; i++) memcpy(out + i * d, src + idx[i] * d, (size_t)d * sizeof(T_));    \
    }                                                                                                     \
    HOT void moe_scatter_rows_##SUF(const T_ *rows, const T_ *scale, const int64_t *idx, int64_t n,       \
                                    int64_t d, int accumulate, T_ *out) {                                 \
        for (int64_t i = 0; i < n; i++) {                                                                 \
            const T_ *r = rows + i * d;                                                                   \
            T_ *o = out + idx[i] * d;                                                                     \
            T_ s = scale ? scale[i] : (T_)1;                                                              \
            if (accumulate)                                                                               \
                for (int64_t j = 0; j < d; j++) o[j] += s * r[j];                                         \
            else if (scale)                                                                               \
                for (int64_t j = 0; j < d; j++) o[j] = s * r[j];                                          \
            else                                                                                          \
                memcpy(o, r, (size_t)d * sizeof(T_));                                                     \
        }                                                                                                 \
    }                                                                                                     \
    HOT void moe_gather_rows_grad_##SUF(const T_ *dy, const int64_t *idx, int64_t n, int64_t d,           \
                                        const T_ *rows, const T_ *scale, T_ *out, T_ *d_scale) {          \
        for (int64_t i = 0; i < n; i++) {                                                                 \
            const T_ *g = dy + idx[i] * d;                                                                \
            T_ *o = out + i * d;                                                                          \
            if (d_scale) {                                                                                \
                const T_ *r = rows + i * d;                                                               \
                T_ lane[8] = {0, 0, 0, 0, 0, 0, 0, 0}; /* 8 partial sums: the loop vectorizes */        \
                int64_t j = 0;                                                                            \
                for (; j + 8 <= d; j += 8)                                                                \
                    for (int l = 0; l < 8; l++) lane[l] += g[j + l] * r[j + l];                           \
                T_ dot = ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7])); \
                for (; j < d; j++) dot += g[j] * r[j];                                                    \
                d_scale[i] = dot;                                                                         \
            }                                                                                             \
            T_ s = scale ? scale[i] : (T_)1;                                                              \
            for (int64_t j = 0; j < d; j++) o[j] = s * g[j];                                              \
        }                                                                                                 \
    }

DEFINE_ROWS(f32, float)
DEFINE_ROWS(f64, double)
