/* A whole softmax top-k MoE layer on a CPU, one call each way: router matmul, routing, capacity, experts.
 *
 * moe_core/accelerator/fused_layer.py calls this for the softmax_topk and switch routers when everything fits (see
 * forward() in ../__init__.py); otherwise MoELayer.route_and_mix runs the same steps as torch ops: router linear ->
 * softmax top-k -> capacity.assign_slots -> gather -> experts -> weighted scatter -> the weighted aux loss.
 * At the Playground's sizes each of those steps, and its autograd node, cost more in dispatch than in
 * arithmetic; here they are plain calls from one C function to the others:
 *
 *   logits = x_r W_r^T                      (T, E)   x_r: the router's input (x, or its jittered copy)
 *   route.c: probs, top-k, gates, counts, load-balance and z losses, the pairs sorted by expert
 *   capacity C (when given): an expert keeps the first C of its pairs in that order (GShard's priority:
 *                            every first choice before any second choice, then earlier tokens)
 *   experts.c: y = sum over kept pairs of gate * FFN_e(x)
 *   aux = aux_coef * load_balance + z_coef * z
 *
 * Backward: experts.c's backward (dx, gate gradients, expert weight gradients), then route.c's backward
 * with the kept pairs' gate gradients (0 for dropped pairs), then dW_r = dlogits^T x_r, dx_r = dlogits W_r.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "vector_math.h"

int moe_layer_abi_version(void) { return 2; }

#define DEFINE_LAYER(SUF, T_)                                                                             \
    /* logits (T, E) = x (T, d) @ w (E, d)^T: one dot product per (token, expert), in 8 lanes so that it    \
     * vectorizes (E is often 8 or fewer: too narrow for the matmul's 64-column tiles) */                  \
    HOT static void router_logits_##SUF(const T_ *x, const T_ *w, int64_t T, int64_t d, int64_t E, T_ *logits) { \
        for (int64_t t = 0; t < T; t++) {                                                                 \
            const T_ *xt = x + t * d;                                                                     \
            for (int64_t e = 0; e < E; e++) {                                                             \
                const T_ *we = w + e * d;                                                                 \
                T_ lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};                                                    \
                int64_t i = 0;                                                                            \
                for (; i + 8 <= d; i += 8)                                                                \
                    for (int l = 0; l < 8; l++) lane[l] += xt[i + l] * we[i + l];                         \
                T_ dot = ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7])); \
                for (; i < d; i++) dot += xt[i] * we[i];                                                  \
                logits[t * E + e] = dot;                                                                  \
            }                                                                                             \
        }                                                                                                 \
    }                                                                                                     \
                                                                                                          \
    /* Inputs: x (T, d); xr (T, d), the router's input (may be x); w_router (E, d); w_in (E, d, 2h);          \
     * w_out (E, h, d); k, normalize; capacity C or -1 (none); unit_gates: every gate is exactly 1 (top-1     \
     * renormalized), so no multiply. Outputs, all written whole: y (T, d); logits, probs (T, E); lse (T);   \
     * gates, combine (T, k) (combine: 0 where dropped); index (T, k); counts, kept_counts (E,); dropped    \
     * (T, k) bytes; kept_pairs, token_order, gates_kept (T*k,): the kept pairs grouped by expert, their     \
     * tokens and gates, the first sum(kept_counts) entries; load_balance, z, aux: scalars.  \
     * for the backward (NULL when no gradient is wanted): xs, hs, acts as in experts.c, and ys (N, d) when \
     * there are gates. Returns 0, or 1 when out of memory. */                                            \
    HOT int moe_layer_forward_##SUF(                                                                      \
        const T_ *x, const T_ *xr, int64_t T, int64_t d, int64_t h, int64_t E, int64_t k, int normalize,  \
        int64_t capacity, int unit_gates, const T_ *w_router, const T_ *w_in, const T_ *w_out,            \
        double aux_coef, double z_coef, T_ *y, T_ *logits, T_ *probs, T_ *lse, T_ *gates, T_ *combine,    \
        int64_t *index, int64_t *counts, int64_t *kept_counts, unsigned char *dropped, int64_t *kept_pairs, \
        int64_t *token_order, T_ *gates_kept, T_ *load_balance, T_ *z_loss, T_ *aux,                    \
        T_ *xs, T_ *hs, T_ *acts, T_ *ys) {                                                               \
        router_logits_##SUF(xr, w_router, T, d, E, logits);                                               \
        T_ lb, z;                                                                                         \
        int status = moe_route_forward_##SUF(logits, T, E, k, normalize, probs, lse, gates, index, counts, \
                                             kept_pairs, token_order, NULL, gates_kept, &lb, &z);         \
        if (status) return status;                                                                        \
        memset(dropped, 0, (size_t)(T * k));                                                              \
        if (capacity >= 0) { /* keep each expert's first C pairs: its segment's prefix, moved left */    \
            int64_t src = 0, dst = 0;                                                                     \
            for (int64_t e = 0; e < E; e++) {                                                             \
                kept_counts[e] = counts[e] < capacity ? counts[e] : capacity;                             \
                for (int64_t i = 0; i < counts[e]; i++, src++) {                                          \
                    if (i < kept_counts[e]) {                                                             \
                        kept_pairs[dst] = kept_pairs[src];                                                \
                        token_order[dst] = token_order[src];                                              \
                        gates_kept[dst++] = gates_kept[src];                                              \
                    } else { /* pair n = j*T + t: slot j of token t */                                    \
                        int64_t n = kept_pairs[src], j = n / T;                                           \
                        dropped[(n - j * T) * k + j] = 1;                                                 \
                    }                                                                                     \
                }                                                                                         \
            }                                                                                             \
        } else {                                                                                          \
            memcpy(kept_counts, counts, (size_t)E * sizeof(int64_t));                                     \
        }                                                                                                 \
        for (int64_t i = 0; i < T * k; i++) combine[i] = dropped[i] ? (T_)0 : gates[i];                   \
        T_ weighted = lb * (T_)aux_coef;                                                                  \
        *load_balance = lb;                                                                               \
        *z_loss = z;                                                                                      \
        *aux = weighted + (T_)z_coef * z;                                                                 \
        int accumulate = !(k == 1 && capacity < 0); /* top-1 dropless: each token exactly once */        \
        return moe_experts_forward_##SUF(x, T, d, h, E, kept_counts, token_order,                         \
                                         unit_gates ? NULL : gates_kept, w_in, w_out, accumulate, y, xs, hs, \
                                         acts, unit_gates ? NULL : ys);                                   \
    }                                                                                                     \
                                                                                                          \
    /* dy (T, d); d_load_balance, d_z: the gradients reaching those losses (the aux loss's folded in by the \
     * caller); then the forward's inputs and outputs. dx (T, d) and, when xr is not x, dxr (T, d) (else    \
     * NULL: the router's part is added into dx); dw_router (E, d), dw_in, dw_out: all written whole. */   \
    HOT int moe_layer_backward_##SUF(                                                                     \
        const T_ *dy, double d_load_balance, double d_z, const T_ *xr, int64_t T, int64_t d, int64_t h,   \
        int64_t E, int64_t k, int normalize, int64_t capacity, int unit_gates, const T_ *w_router,         \
        const T_ *w_in, const T_ *w_out, const T_ *probs, const T_ *lse, const T_ *gates,                 \
        const int64_t *index, const int64_t *counts, const int64_t *kept_counts, const int64_t *kept_pairs, \
        const int64_t *token_order, const T_ *gates_kept, const T_ *xs, const T_ *hs,                     \
        const T_ *acts, const T_ *ys, T_ *dx, T_ *dxr, T_ *dw_router, T_ *dw_in, T_ *dw_out) {            \
        int64_t n_kept = 0;                                                                               \
        for (int64_t e = 0; e < E; e++) n_kept += kept_counts[e];                                         \
        T_ *d_gates_kept = unit_gates ? NULL : malloc((size_t)(n_kept > 0 ? n_kept : 1) * sizeof(T_));   \
        T_ *d_gates = unit_gates ? NULL : malloc((size_t)(T * k) * sizeof(T_));                           \
        T_ *d_logits = malloc((size_t)(T * E) * sizeof(T_));                                              \
        int status = 1;                                                                                   \
        if ((!unit_gates && (!d_gates_kept || !d_gates)) || !d_logits) goto done;                         \
        int accumulate = !(k == 1 && capacity < 0);                                                       \
        status = moe_experts_backward_##SUF(dy, T, d, h, E, kept_counts, token_order,                     \
                                            unit_gates ? NULL : gates_kept, w_in, w_out, accumulate, xs, hs, \
                                            acts, ys, dx, d_gates_kept, dw_in, dw_out);                   \
        if (status) goto done;                                                                            \
        if (d_gates) { /* back to the (T, k) layout; a dropped pair's gate had no effect */              \
            memset(d_gates, 0, (size_t)(T * k) * sizeof(T_));                                             \
            for (int64_t i = 0; i < n_kept; i++) {                                                        \
                int64_t n = kept_pairs[i], j = n / T;                                                     \
                d_gates[(n - j * T) * k + j] = d_gates_kept[i];                                           \
            }                                                                                             \
        }                                                                                                 \
        status = moe_route_backward_##SUF(probs, lse, gates, index, counts, d_gates, NULL, NULL, T, E, k, \
                                          normalize, d_load_balance, d_z, d_logits);                      \
        if (status) goto done;                                                                            \
        moe_gemm_##SUF(E, d, T, d_logits, 1, E, xr, d, dw_router, d, 0);    /* dW_r = dlogits^T x_r */     \
        if (dxr)                                                                                          \
            moe_gemm_##SUF(T, d, E, d_logits, E, 1, w_router, d, dxr, d, 0); /* dx_r = dlogits W_r */      \
        else                                                                                              \
            moe_gemm_##SUF(T, d, E, d_logits, E, 1, w_router, d, dx, d, 1);                               \
    done:                                                                                                 \
        free(d_gates_kept);                                                                               \
        free(d_gates);                                                                                    \
        free(d_logits);                                                                                   \
        return status;                                                                                    \
    }

DEFINE_LAYER(f32, float)
DEFINE_LAYER(f64, double)
