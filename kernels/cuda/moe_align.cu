// moe_align.cu: group (token, slot) pairs by expert, padded to the grouped GEMM's tile height.
#include "common.cuh"

// Shared-memory bound on the expert count (3 x 1025 x 4 B = 12 KiB of counters).
#define ALIGN_MAX_EXPERTS 1024

/*
 * moe_align_u32: count per expert -> exclusive prefix sum padded to block_m -> scatter pair ids.
 *
 *   topk_ids    [n_pairs]   u32  routing output [n_tokens, top_k] flattened; pair id = token*top_k + slot
 *   sorted_ids  [capacity]  u32  out: pair ids grouped by expert, each group padded to a multiple of
 *                                block_m with the sentinel n_pairs (= T*k, "no row")
 *   expert_ids  [capacity / block_m] u32  out: the expert of each block_m-row tile; tiles past the
 *                                padded total hold the sentinel n_experts
 *   n_padded    [1]         u32  out: padded total = the rows the GEMM must visit
 *   capacity = round_up(n_pairs + min(n_experts, n_pairs) * (block_m - 1), block_m), the worst case
 *   (every non-empty expert wastes at most block_m - 1 rows); see moe_align.rs `capacity`.
 *
 * Worked example (vLLM moe_align_block_size style): T = 4 tokens, k = 3, E = 5, block_m = 4
 *   topk_ids   = [[2, 3, 4], [1, 2, 4], [1, 3, 4], [1, 2, 3]]   -> pairs 0..11, sentinel 12
 *   per expert:   e0: -   e1: 3 6 9   e2: 0 4 10   e3: 1 7 11   e4: 2 5 8
 *   counts     = [0, 3, 3, 3, 3]  -> padded [0, 4, 4, 4, 4] -> offsets [0, 0, 4, 8, 12, 16]
 *   n_padded   = 16, capacity = round_up(12 + 5 * 3, 4) = 28 (7 tiles)
 *   sorted_ids = [3 6 9 12 | 0 4 10 12 | 1 7 11 12 | 2 5 8 12 | 12 12 12 12 | ...x3 tiles]
 *   expert_ids = [1, 2, 3, 4, 5, 5, 5]
 *   Expert 0 gets no tile at all. Within one expert the order of pair ids is whatever order the
 *   atomics landed in (shown sorted here); nothing downstream depends on it, because the GEMM
 *   writes row p of its output for pair p and moe_reduce reads pairs by id.
 *
 * Steps (one block; threads stride over experts / pairs / output slots):
 *   1. zero counts[e]                                                      | barrier
 *   2. counts[topk_ids[i]] += 1 (shared atomics); ids >= n_experts are dropped (routing never
 *      produces them)                                                      | barrier
 *   3. thread 0: offsets[e+1] = offsets[e] + round_up(counts[e], block_m); n_padded = offsets[E].
 *      A serial scan is enough: E <= 1024 steps, once per MoE layer.       | barrier
 *   4. sorted_ids[0..capacity) = sentinel; expert_ids[tile] = e for the tiles of each expert, the
 *      sentinel n_experts past the padded total; cursor[e] = offsets[e]   | barrier (also orders
 *      the sentinel writes before the scatter below overwrites some of them)
 *   5. sorted_ids[atomicAdd(&cursor[e], 1)] = i for each pair i of expert e.
 */
extern "C" __global__ void moe_align_u32(const uint32_t* __restrict__ topk_ids,
                                         uint32_t* __restrict__ sorted_ids,
                                         uint32_t* __restrict__ expert_ids,
                                         uint32_t* __restrict__ n_padded,
                                         int n_pairs, int n_experts, int block_m, int capacity) {
    __shared__ uint32_t counts[ALIGN_MAX_EXPERTS];
    __shared__ uint32_t offsets[ALIGN_MAX_EXPERTS + 1];
    __shared__ uint32_t cursor[ALIGN_MAX_EXPERTS];
    const int tid = threadIdx.x;
    const int n_threads = blockDim.x;

    // 1.
    for (int e = tid; e < n_experts; e += n_threads) {
        counts[e] = 0;
    }
    __syncthreads();

    // 2.
    for (int i = tid; i < n_pairs; i += n_threads) {
        const uint32_t e = topk_ids[i];
        if (e < (uint32_t)n_experts) {
            atomicAdd(&counts[e], 1u);
        }
    }
    __syncthreads();

    // 3.
    if (tid == 0) {
        offsets[0] = 0;
        for (int e = 0; e < n_experts; ++e) {
            const uint32_t padded = (counts[e] + block_m - 1) / block_m * block_m;
            offsets[e + 1] = offsets[e] + padded;
        }
        *n_padded = offsets[n_experts];
    }
    __syncthreads();

    // 4.
    const uint32_t sentinel = (uint32_t)n_pairs;
    for (int i = tid; i < capacity; i += n_threads) {
        sorted_ids[i] = sentinel;
    }
    const int n_tiles = capacity / block_m;
    const int used_tiles = (int)(offsets[n_experts] / block_m);
    for (int e = tid; e < n_experts; e += n_threads) {
        for (uint32_t tile = offsets[e] / block_m; tile < offsets[e + 1] / block_m; ++tile) {
            expert_ids[tile] = (uint32_t)e;
        }
        cursor[e] = offsets[e];
    }
    for (int tile = used_tiles + tid; tile < n_tiles; tile += n_threads) {
        expert_ids[tile] = (uint32_t)n_experts;
    }
    __syncthreads();

    // 5.
    for (int i = tid; i < n_pairs; i += n_threads) {
        const uint32_t e = topk_ids[i];
        if (e < (uint32_t)n_experts) {
            const uint32_t pos = atomicAdd(&cursor[e], 1u);
            sorted_ids[pos] = (uint32_t)i;
        }
    }
}
