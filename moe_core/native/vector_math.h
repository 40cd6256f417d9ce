/* Shared by the kernels: a vectorizable exp for float32, and HOT, which builds a function for AVX-512 and
 * AVX2 CPUs next to the baseline one and picks at load time (GCC's target_clones; elsewhere a no-op). */
#ifndef MOE_VECTOR_MATH_H
#define MOE_VECTOR_MATH_H

#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11
#define HOT __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define HOT
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
