/* Shared by the kernels: a vectorizable exp for float32, and HOT, which builds a function for AVX-512 and
 * AVX2 CPUs next to the baseline one and picks at load time (target_clones: GCC 11+ and clang 19+ on x86-64
 * Linux, which resolve it through an ifunc; elsewhere a no-op and the baseline build, e.g. NEON on ARM). Without
 * it an x86 build is SSE2 only: the matmul of experts.c runs at a fraction of the speed (no FMA, 4-wide). */
#ifndef MOE_VECTOR_MATH_H
#define MOE_VECTOR_MATH_H

#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && defined(__linux__) &&                                                            \
    ((defined(__clang__) && __clang_major__ >= 19) || (!defined(__clang__) && defined(__GNUC__) && __GNUC__ >= 11))
#define HOT __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#define MOE_HOT_CLONES 1
#else
#define HOT
#endif
/* on a declaration of a HOT function defined in another file: clang wants the attribute on every declaration
 * (else callers link to a symbol it never defines); GCC wants it only on the definition (else each caller
 * builds its own resolver around clones that are local to the defining file) */
#if defined(__clang__)
#define HOT_DECL HOT
#else
#define HOT_DECL
#endif

/* exp(x) for x <= 0, written so that loops around it vectorize (no branches, no libm call): Cephes' expf,
 * range reduction by ln 2 in two parts and a degree-6 polynomial, about 1 ulp. Below -87 it returns
 * exp(-87) ~ 1.6e-38 (about the smallest normal float) instead of smaller numbers or 0. */
static inline float exp_nonpositive_f32(float x) {
    const float log2e = 1.44269504088896341f, c1 = 0.693359375f, c2 = -2.12194440e-4f;
    const float round_magic = 12582912.0f; /* 1.5 * 2^23: adding and subtracting it rounds to an integer */
    x = x < -87.0f ? -87.0f : x;
    float n = (x * log2e + round_magic) - round_magic;
    float r = x - n * c1;
    r = r - n * c2;
    float q = 1.9875691500e-4f;
    q = q * r + 1.3981999507e-3f;
    q = q * r + 8.3334519073e-3f;
    q = q * r + 4.1665795894e-2f;
    q = q * r + 1.6666665459e-1f;
    q = q * r + 5.0000001201e-1f;
    q = q * r * r + r + 1.0f;
    uint32_t bits = (uint32_t)((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return q * scale;
}

#endif
