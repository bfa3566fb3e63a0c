// routing.cu: the ERNIE 4.5 MoE router after the router matmul (spec §2.4), all in f32.
#include "common.cuh"

// Experts per token handled by one warp: 32 lanes x ROUTE_EXPERTS_PER_LANE registers.
#define ROUTE_MAX_EXPERTS 256
#define ROUTE_EXPERTS_PER_LANE (ROUTE_MAX_EXPERTS / WARP_SIZE)

/*
 * moe_route_f32: softmax -> biased top-k -> renormalised unbiased weights. One warp per token.
 *
 *   logits       [n_tokens, n_experts] f32   router logits (x . W_gate^T, computed in f32)
 *   bias         [n_experts]           f32   e_score_correction_bias (zeros if the model has none)
 *   topk_ids     [n_tokens, top_k]     u32   out: selected experts, best first
 *   topk_weights [n_tokens, top_k]     f32   out: renormalised probabilities of those experts
 *   1 <= n_experts <= 256, 1 <= top_k <= n_experts; blockDim.x a multiple of 32.
 *
 * Steps (lane l owns experts e = l, l + 32, l + 64, ...):
 *   1. m = max_e logits[e]                              (warp max)
 *   2. p[e] = exp(logits[e] - m) / sum_e exp(...)        softmax over ALL experts (warp sum)
 *   3. key[e] = (p[e] + bias[e], e)                      bias only steers the choice; NaN -> -inf
 *   4. repeat top_k times: the warp arg-max of key (higher score wins, equal scores go to the
 *      LOWER expert index: the key packs (score, ~e) so one u64 max decides both), the owning lane
 *      retires that expert and broadcasts its UNBIASED p; slot j is written by lane j % 32.
 *   5. w_j = p_j / max(sum_j p_j, norm_min)              each lane rescales the slots it wrote.
 *
 * f32 throughout: router probabilities make discrete choices, and bf16 would create false ties.
 */
extern "C" __global__ void moe_route_f32(const float* __restrict__ logits,
                                         const float* __restrict__ bias,
                                         uint32_t* __restrict__ topk_ids,
                                         float* __restrict__ topk_weights,
                                         int n_tokens, int n_experts, int top_k, float norm_min) {
    const int lane = threadIdx.x % WARP_SIZE;
    const int warps_per_block = blockDim.x / WARP_SIZE;
    const int token = blockIdx.x * warps_per_block + threadIdx.x / WARP_SIZE;
    if (token >= n_tokens) {
        return;  // the whole warp leaves together, so no shuffle below loses a partner
    }
    const float* row = logits + (int64_t)token * n_experts;

    // 1. max logit, for a softmax that cannot overflow.
    float p[ROUTE_EXPERTS_PER_LANE];
    float m = f32_neg_inf();
#pragma unroll
    for (int j = 0; j < ROUTE_EXPERTS_PER_LANE; ++j) {
        const int e = lane + j * WARP_SIZE;
        p[j] = e < n_experts ? row[e] : f32_neg_inf();
        m = fmaxf(m, p[j]);
    }
    m = warp_max(m);

    // 2. softmax over all experts.
    float sum = 0.0f;
#pragma unroll
    for (int j = 0; j < ROUTE_EXPERTS_PER_LANE; ++j) {
        const int e = lane + j * WARP_SIZE;
        p[j] = e < n_experts ? expf(p[j] - m) : 0.0f;
        sum += p[j];
    }
    sum = warp_sum(sum);
#pragma unroll
    for (int j = 0; j < ROUTE_EXPERTS_PER_LANE; ++j) {
        p[j] = p[j] / sum;
    }

    // 3. selection keys from the biased scores; 0 marks "not an expert / already taken".
    uint64_t key[ROUTE_EXPERTS_PER_LANE];
#pragma unroll
    for (int j = 0; j < ROUTE_EXPERTS_PER_LANE; ++j) {
        const int e = lane + j * WARP_SIZE;
        float score = e < n_experts ? p[j] + bias[e] : 0.0f;
        if (score != score) {
            score = f32_neg_inf();  // a NaN can never win, but must not block the slot either
        }
        key[j] = e < n_experts ? argmax_key(score, (uint32_t)e) : 0ull;
    }

    // 4. top-k by repeated warp arg-max.
    float picked_sum = 0.0f;
    for (int slot = 0; slot < top_k; ++slot) {
        uint64_t best = 0;
#pragma unroll
        for (int j = 0; j < ROUTE_EXPERTS_PER_LANE; ++j) {
            best = key[j] > best ? key[j] : best;
        }
        best = warp_max_u64(best);
        const uint32_t e = argmax_key_index(best);
        const int owner = (int)(e % WARP_SIZE);
        const int owner_j = (int)(e / WARP_SIZE);
        float p_e = 0.0f;
#pragma unroll
        for (int j = 0; j < ROUTE_EXPERTS_PER_LANE; ++j) {
            // Static register indices only: a dynamic p[owner_j] would spill p[] to local memory.
            if (lane == owner && j == owner_j) {
                p_e = p[j];
                key[j] = 0;
            }
        }
        p_e = __shfl_sync(FULL_MASK, p_e, owner);
        picked_sum += p_e;
        if (lane == slot % WARP_SIZE) {
            topk_ids[(int64_t)token * top_k + slot] = e;
            topk_weights[(int64_t)token * top_k + slot] = p_e;
        }
    }

    // 5. renormalise the unbiased probabilities of the chosen experts. Each lane only touches the
    // slots it wrote itself, so no cross-lane memory ordering is needed.
    const float denom = fmaxf(picked_sum, norm_min);
    for (int slot = lane; slot < top_k; slot += WARP_SIZE) {
        float* w = &topk_weights[(int64_t)token * top_k + slot];
        *w = *w / denom;
    }
}
