/* The SwiGLU activation of the experts, forward and backward, in one pass over memory each way.
 *
 *     h = [gate | up]  (R, 2H), one matmul's output        a = silu(gate) * up          (R, H)
 *     dgate = da * up * silu'(gate),  dup = da * silu(gate),  silu'(g) = s(g) (1 + g (1 - s(g))),  s = sigmoid
 *
 * With torch ops this is silu + mul forward and mul + mul + silu_backward backward, each a pass over (R, H)
 * arrays that do not fit in cache at bench sizes (4096 x 128 floats = 2 MB), two of them on the strided
 * halves of h. Here the forward reads h once and writes a; the backward recomputes the sigmoid from h (cheaper
 * than storing silu(gate), one exp per element) and writes dh in place of both halves.
 * Called by experts.c; the readable layer's torch ops run where this is not built.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "kernels.h"
#include "vector_math.h"

int moe_swiglu_abi_version(void) { return 1; }

static inline float sigmoid_f32(float x) {
    float e = exp_nonpositive_f32(-fabsf(x)); /* exp(-|x|) in (0, 1]: never overflows */
    float r = 1.0f / (1.0f + e);
    return x >= 0.0f ? r : e * r;
}

static inline double sigmoid_f64(double x) { return 1.0 / (1.0 + exp(-x)); }

#define DEFINE_SWIGLU(SUF, T_)                                                                            \
    HOT void moe_swiglu_forward_##SUF(const T_ *h, int64_t R, int64_t H, T_ *act) {                       \
        for (int64_t r = 0; r < R; r++) {                                                                 \
            const T_ *g = h + r * 2 * H, *u = g + H;                                                      \
            T_ *a = act + r * H;                                                                          \
            for (int64_t i = 0; i < H; i++) a[i] = g[i] * sigmoid_##SUF(g[i]) * u[i];                     \
        }                                                                                                 \
    }                                                                                                     \
    HOT void moe_swiglu_backward_##SUF(const T_ *da, const T_ *h, int64_t R, int64_t H, T_ *dh) {         \
        for (int64_t r = 0; r < R; r++) {                                                                 \
            const T_ *g = h + r * 2 * H, *u = g + H, *d = da + r * H;                                     \
            T_ *dg = dh + r * 2 * H, *du = dg + H;                                                        \
            for (int64_t i = 0; i < H; i++) {                                                             \
                T_ s = sigmoid_##SUF(g[i]);                                                               \
                du[i] = d[i] * g[i] * s;                                                                  \
                dg[i] = d[i] * u[i] * s * ((T_)1 + g[i] * ((T_)1 - s));                                   \
            }                                                                                             \
        }                                                                                                 \
    }

DEFINE_SWIGLU(f32, float)
DEFINE_SWIGLU(f64, double)
