/* Softmax top-k routing, forward and backward, one pass per token (C99, no dependencies but libm).
 *
 * The math is moe_core/layer/routers/base.py's, written as loops so that a CPU does it in one call instead of
 * ~20 tensor ops each way (each costs ~5 us of dispatch at the Playground's 256 x 8 router; the arithmetic
 * is ~10 us for all of them). moe_core/accelerator/kernels.py compiles this file with the system's C compiler;
 * layer.c calls it; without a compiler the readable layer's torch ops run instead.
 *
 * Forward, for each token t (logits l, E experts, k slots):
 *     lse_t = log sum_e exp(l_te);  p_te = exp(l_te - lse_t)                        softmax, via the logsumexp
 *     i_t1..i_tk = the k largest p_te (ties: the lower expert first, like a stable sort)
 *     g_tj = p_t,i_tj / sum_m p_t,i_tm   (normalize)   or   p_t,i_tj                 (GShard/Mixtral | Switch)
 *     counts_e = #{(t, j): i_tj = e}
 *     load_balance = E / (k T) sum_e counts_e P_e,  P_e = mean_t p_te                Switch, top-k normalized
 *     z = mean_t lse_t^2                                                             ST-MoE router z-loss
 * and the (t, j) pairs grouped by expert, slot-major within an expert (pair n = j*T + t): a stable counting
 * sort, the same order as torch.sort(stable=True) of the slot-major expert list, with each pair's gate
 * (gates_sorted, what the dispatch multiplies by; its gradient comes back in the same order). sorted_experts
 * may be NULL when the caller does not want it.
 *
 * Backward: with dp_te = dL/dp_te from the gates and the balance loss,
 *     dp_t,i_m += (dg_tm - sum_j dg_tj g_tj) / S_t   (normalize, S_t = sum_j p_t,i_tj)   or   dg_tm
 *     dp_te    += dL_lb * E / (k T) * counts_e / T
 *     dl_te     = p_te (dp_te - sum_f p_tf dp_tf) + dL_z * 2 lse_t / T * p_te          softmax and z-loss
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "vector_math.h"

int moe_route_abi_version(void) { return 2; }

static inline double exp_nonpositive_f64(double x) { return exp(x); }
static inline float log_f32(float x) { return logf(x); }
static inline double log_f64(double x) { return log(x); }

/* The k largest of row[0..E-1], largest first, ties to the lower index (like a stable sort). k <= 2 takes
 * one branch-free pass (the comparisons are coin flips to a branch predictor), larger k takes k passes.
 * A NaN row picks arbitrary experts, but always k distinct valid ones, so the counting sort stays in bounds
 * (training stops on the NaN loss right after). */
#define DEFINE_TOPK(SUF, T_)                                                                              \
    static void topk_##SUF(const T_ *row, int64_t E, int64_t k, int64_t *idx, unsigned char *taken) {     \
        if (k <= 2) {                                                                                     \
            T_ v1 = row[0], v2 = -(T_)INFINITY;                                                           \
            int64_t i1 = 0, i2 = E > 1 ? 1 : 0;                                                           \
            for (int64_t e = 1; e < E; e++) {                                                             \
                T_ v = row[e];                                                                            \
                int above1 = v > v1, above2 = v > v2;                                                     \
                T_ nv2 = above1 ? v1 : (above2 ? v : v2);                                                 \
                int64_t ni2 = above1 ? i1 : (above2 ? e : i2);                                            \
                v1 = above1 ? v : v1;                                                                     \
                i1 = above1 ? e : i1;                                                                     \
                v2 = nv2;                                                                                 \
                i2 = ni2;                                                                                 \
            }                                                                                             \
            idx[0] = i1;                                                                                  \
            if (k == 2) idx[1] = i2;                                                                      \
            return;                                                                                       \
        }                                                                                                 \
        memset(taken, 0, (size_t)E);                                                                      \
        for (int64_t j = 0; j < k; j++) {                                                                 \
            int64_t best = -1;                                                                            \
            for (int64_t e = 0; e < E; e++) {                                                             \
                if (taken[e]) continue;                                                                   \
                if (best < 0 || row[e] > row[best] || row[best] != row[best]) best = e;                                       \
            }                                                                                             \
            taken[best] = 1;                                                                              \
            idx[j] = best;                                                                                \
        }                                                                                                 \
    }

DEFINE_TOPK(f32, float)
DEFINE_TOPK(f64, double)

#define DEFINE_FORWARD(SUF, T_)                                                                           \
    HOT int moe_route_forward_##SUF(const T_ *logits, int64_t T, int64_t E, int64_t k, int normalize,          \
                                T_ *probs, T_ *lse, T_ *gates, int64_t *index, int64_t *counts,           \
                                int64_t *pair_order, int64_t *token_order, int64_t *sorted_experts,       \
                                T_ *gates_sorted, T_ *load_balance, T_ *z) {                              \
        double *prob_sum = calloc((size_t)E, sizeof(double));                                             \
        int64_t *next = malloc((size_t)E * sizeof(int64_t));                                              \
        unsigned char *taken = malloc((size_t)E);                                                         \
        if (!prob_sum || !next || !taken) {                                                               \
            free(prob_sum); free(next); free(taken);                                                      \
            return 1;                                                                                     \
        }                                                                                                 \
        memset(counts, 0, (size_t)E * sizeof(int64_t));                                                   \
        double z_sum = 0.0;                                                                               \
        for (int64_t t = 0; t < T; t++) { /* shifted logits l - max_t, into probs */                     \
            const T_ *l = logits + t * E;                                                                 \
            T_ *p = probs + t * E;                                                                        \
            T_ m = l[0];                                                                                  \
            for (int64_t e = 1; e < E; e++) m = l[e] > m ? l[e] : m;                                      \
            lse[t] = m;                                                                                   \
            for (int64_t e = 0; e < E; e++) p[e] = l[e] - m;                                              \
        }                                                                                                 \
        for (int64_t i = 0; i < T * E; i++) probs[i] = exp_nonpositive_##SUF(probs[i]); /* vectorized */  \
        for (int64_t t = 0; t < T; t++) {                                                                 \
            T_ *p = probs + t * E;                                                                        \
            T_ s = 0;                                                                                     \
            for (int64_t e = 0; e < E; e++) s += p[e];                                                    \
            T_ inv = (T_)1 / s;                                                                           \
            for (int64_t e = 0; e < E; e++) p[e] *= inv;                                                  \
            lse[t] += log_##SUF(s);                                                                       \
            z_sum += (double)lse[t] * (double)lse[t];                                                     \
            for (int64_t e = 0; e < E; e++) prob_sum[e] += (double)p[e];                                  \
            int64_t *it = index + t * k;                                                                  \
            T_ *gt = gates + t * k;                                                                       \
            topk_##SUF(p, E, k, it, taken);                                                               \
            T_ sel = 0;                                                                                   \
            for (int64_t j = 0; j < k; j++) {                                                             \
                gt[j] = p[it[j]];                                                                         \
                sel += gt[j];                                                                             \
                counts[it[j]]++;                                                                          \
            }                                                                                             \
            if (normalize)                                                                                \
                for (int64_t j = 0; j < k; j++) gt[j] /= sel;                                             \
        }                                                                                                 \
        double lb = 0.0;                                                                                  \
        for (int64_t e = 0; e < E; e++) lb += (double)counts[e] * (prob_sum[e] / (double)T);              \
        *load_balance = (T_)((double)E / ((double)k * (double)T) * lb);                                   \
        *z = (T_)(z_sum / (double)T);                                                                     \
        if (pair_order) { /* stable counting sort of the slot-major pairs by expert */                    \
            int64_t start = 0;                                                                            \
            for (int64_t e = 0; e < E; e++) {                                                             \
                next[e] = start;                                                                          \
                start += counts[e];                                                                       \
            }                                                                                             \
            for (int64_t j = 0; j < k; j++)                                                               \
                for (int64_t t = 0; t < T; t++) {                                                         \
                    int64_t e = index[t * k + j], pos = next[e]++;                                        \
                    pair_order[pos] = j * T + t;                                                          \
                    token_order[pos] = t;                                                                 \
                    if (sorted_experts) sorted_experts[pos] = e; /* NULL: not wanted (layer.c) */     \
                    gates_sorted[pos] = gates[t * k + j];                                                 \
                }                                                                                         \
        }                                                                                                 \
        free(prob_sum); free(next); free(taken);                                                          \
        return 0;                                                                                         \
    }

DEFINE_FORWARD(f32, float)
DEFINE_FORWARD(f64, double)

/* d_gates (T, k) and d_gates_sorted (the gradient of the gates in pair_order) may each be NULL. */
#define DEFINE_BACKWARD(SUF, T_)                                                                          \
    HOT int moe_route_backward_##SUF(const T_ *probs, const T_ *lse, const T_ *gates, const int64_t *index,    \
                                 const int64_t *counts, const T_ *d_gates, const T_ *d_gates_sorted,      \
                                 const int64_t *pair_order, int64_t T, int64_t E, int64_t k,              \
                                 int normalize, double d_load_balance, double d_z, T_ *d_logits) {        \
        T_ *dp = malloc((size_t)E * sizeof(T_));                                                          \
        T_ *from_lb = malloc((size_t)E * sizeof(T_));                                                     \
        T_ *dg_all = d_gates_sorted ? malloc((size_t)(T * k) * sizeof(T_)) : NULL;                        \
        if (!dp || !from_lb || (d_gates_sorted && !dg_all)) {                                             \
            free(dp); free(from_lb); free(dg_all);                                                        \
            return 1;                                                                                     \
        }                                                                                                 \
        if (d_gates_sorted) { /* both gradients of the gates, in the (T, k) layout */                     \
            if (d_gates)                                                                                  \
                memcpy(dg_all, d_gates, (size_t)(T * k) * sizeof(T_));                                   \
            else                                                                                          \
                memset(dg_all, 0, (size_t)(T * k) * sizeof(T_));                                          \
            for (int64_t pos = 0; pos < T * k; pos++) {                                                   \
                int64_t n = pair_order[pos], j = n / T, t = n - j * T;                                    \
                dg_all[t * k + j] += d_gates_sorted[pos];                                                 \
            }                                                                                             \
            d_gates = dg_all;                                                                             \
        }                                                                                                 \
        double lb_scale = d_load_balance * (double)E / ((double)k * (double)T * (double)T);               \
        for (int64_t e = 0; e < E; e++) from_lb[e] = (T_)(lb_scale * (double)counts[e]);                  \
        double z_scale = 2.0 * d_z / (double)T;                                                           \
        for (int64_t t = 0; t < T; t++) {                                                                 \
            const T_ *p = probs + t * E;                                                                  \
            T_ *dl = d_logits + t * E;                                                                    \
            memcpy(dp, from_lb, (size_t)E * sizeof(T_));                                                  \
            if (d_gates) {                                                                                \
                const int64_t *it = index + t * k;                                                        \
                const T_ *dg = d_gates + t * k, *g = gates + t * k;                                       \
                if (normalize) {                                                                          \
                    T_ sel = 0, dot = 0;                                                                  \
                    for (int64_t j = 0; j < k; j++) {                                                     \
                        sel += p[it[j]];                                                                  \
                        dot += dg[j] * g[j];                                                              \
                    }                                                                                     \
                    for (int64_t j = 0; j < k; j++) dp[it[j]] += (dg[j] - dot) / sel;                     \
                } else {                                                                                  \
                    for (int64_t j = 0; j < k; j++) dp[it[j]] += dg[j];                                   \
                }                                                                                         \
            }                                                                                             \
            T_ dot = 0;                                                                                   \
            for (int64_t e = 0; e < E; e++) dot += p[e] * dp[e];                                          \
            T_ zc = (T_)(z_scale * (double)lse[t]) - dot;                                                 \
            for (int64_t e = 0; e < E; e++) dl[e] = p[e] * (dp[e] + zc);                                  \
        }                                                                                                 \
        free(dp); free(from_lb); free(dg_all);                                                            \
        return 0;                                                                                         \
    }

DEFINE_BACKWARD(f32, float)
DEFINE_BACKWARD(f64, double)
