// moe_gemm.cu: grouped GEMM over the experts' stacked weights, on tensor cores (mma.sync, sm_80+).
#include "common.cuh"

/*
 * The two expert GEMMs of the MoE block, visiting rows in moe_align order (one expert per tile):
 *
 *   moe_gemm_swiglu_bf16_<tile>  act[p] = silu(x[p / k] . W_gu[e][0:N]^T) * (x[p / k] . W_gu[e][N:2N]^T)
 *       x      [n_tokens, K=hidden] bf16      W_gu [E, 2N, K] bf16 (gate rows first, then up rows)
 *       act    [n_pairs, N=inter]   bf16      p = pair id = token * top_k + slot
 *   moe_gemm_down_bf16_<tile>    out[p] = w[p] * (act[p] . W_d[e]^T)
 *       act    [n_pairs, K=inter]   bf16      W_d  [E, N, K] bf16,  w = topk_weights [n_pairs] f32
 *       out    [n_pairs, N=hidden]  bf16
 *   sorted_ids / expert_ids / n_padded come from moe_align_u32 run with block_m = the tile's BM.
 *   K must be a multiple of 8 and every matrix 16-byte aligned (16-byte vector loads).
 *
 * Grid: x = tile index (capacity / BM tiles, those past n_padded exit at once), y = N / BN.
 * Block: WARPS_M x WARPS_N warps; warp (wm, wn) owns the [BM/WARPS_M, BN/WARPS_N] sub-tile.
 *
 * Steps per block:
 *   1. read the tile's expert and its BM pair ids (sentinel n_pairs = padding row)
 *   2. for each BK slice of K:
 *      a. gather the A rows (x row p / k, or act row p) into shared memory, zeros for padding
 *         rows; load the B rows of W[e] (gate and up rows for swiglu) the same way
 *      b. per 16-wide k step: load A/B fragments from shared memory as packed bf16 pairs and run
 *         mma.sync.m16n8k16 (bf16 in, f32 accumulate); swiglu keeps a gate and an up accumulator
 *   3. epilogue in f32: swiglu -> silu(gate) * up; down -> * routing weight; round once to bf16
 *      and store row p of the output. Padding rows are never stored.
 *
 * Shared-memory rows are padded by 8 bf16 (16 bytes): with a row stride of (BK + 8) * 2 bytes the
 * 8 row-groups x 4 lanes of a fragment load hit 32 different banks.
 *
 * Kept deliberately simple (no cp.async pipeline, no ldmatrix, no wgmma): correctness first; the
 * tile shapes live in tuning.rs so a faster variant can slot in behind the same launcher.
 */

__device__ __forceinline__ void mma_m16n8k16_bf16(float (&d)[4], const uint32_t (&a)[4],
                                                  const uint32_t (&b)[2]) {
#if defined(ERNIE_HOST_EMU)
    emu::mma_m16n8k16_bf16(d, a, b);  // CPU tests: warp-collective emulation (host_emu.h)
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
    __trap();  // Kernels::new refuses devices below sm_80, so this is never reached
#endif
}

__device__ __forceinline__ uint32_t load_b32(const bf16_t* p) {
    return *reinterpret_cast<const uint32_t*>(p);
}

template <int BM, int BN, int BK, int WARPS_M, int WARPS_N, bool SWIGLU>
__device__ __forceinline__ void moe_gemm_tile(const bf16_t* __restrict__ a,
                                              const bf16_t* __restrict__ w,
                                              const uint32_t* __restrict__ sorted_ids,
                                              const uint32_t* __restrict__ expert_ids,
                                              const uint32_t* __restrict__ n_padded,
                                              const float* __restrict__ topk_weights,
                                              bf16_t* __restrict__ out,
                                              int n_pairs, int pairs_per_a_row, int n_experts,
                                              int N, int K) {
    constexpr int THREADS = WARPS_M * WARPS_N * WARP_SIZE;
    constexpr int WM = BM / WARPS_M;  // rows per warp
    constexpr int WN = BN / WARPS_N;  // columns per warp
    constexpr int MT = WM / 16;       // m16 fragments per warp
    constexpr int NT = WN / 8;        // n8 fragments per warp
    constexpr int LDS = BK + 8;       // padded shared row stride, in bf16
    constexpr int B_ROWS = SWIGLU ? 2 * BN : BN;
    constexpr int CHUNKS = BK / 8;    // 16-byte chunks per row slice
    static_assert(WM % 16 == 0 && WN % 8 == 0 && BK % 16 == 0, "tile must split into mma shapes");

    __shared__ __align__(16) bf16_t As[BM * LDS];
    __shared__ __align__(16) bf16_t Bs[B_ROWS * LDS];
    __shared__ uint32_t rows[BM];

    // 1. which expert, which pairs. Both exits are uniform over the block (before any barrier).
    const int tile = blockIdx.x;
    const int n0 = blockIdx.y * BN;
    if ((uint32_t)tile * BM >= *n_padded) {
        return;
    }
    const uint32_t expert = expert_ids[tile];
    if (expert >= (uint32_t)n_experts) {
        return;
    }
    const int tid = threadIdx.x;
    for (int r = tid; r < BM; r += THREADS) {
        rows[r] = sorted_ids[(int64_t)tile * BM + r];
    }
    __syncthreads();

    const int64_t w_rows = SWIGLU ? 2 * (int64_t)N : (int64_t)N;
    const bf16_t* w_e = w + (int64_t)expert * w_rows * K;
    const int warp = tid / WARP_SIZE;
    const int lane = tid % WARP_SIZE;
    const int group = lane >> 2;  // fragment row (A, C) / column (B) within the 8-group
    const int quad = lane & 3;    // fragment k pair (A, B) / column pair (C)
    const int warp_m = warp / WARPS_N;
    const int warp_n = warp % WARPS_N;

    float acc[MT][NT][4];
    float acc_up[SWIGLU ? MT : 1][SWIGLU ? NT : 1][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int nt = 0; nt < NT; ++nt)
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                acc[mt][nt][i] = 0.0f;
                if (SWIGLU) acc_up[SWIGLU ? mt : 0][SWIGLU ? nt : 0][i] = 0.0f;
            }

    for (int k0 = 0; k0 < K; k0 += BK) {
        // 2a. gather A rows and load B rows for this K slice.
        for (int c = tid; c < BM * CHUNKS; c += THREADS) {
            const int r = c / CHUNKS;
            const int kc = (c % CHUNKS) * 8;
            const uint32_t pair = rows[r];
            uint4 v = make_uint4(0u, 0u, 0u, 0u);
            if (pair < (uint32_t)n_pairs && k0 + kc < K) {
                const int64_t a_row = (int64_t)(pair / (uint32_t)pairs_per_a_row);
                v = *reinterpret_cast<const uint4*>(a + a_row * K + k0 + kc);
            }
            *reinterpret_cast<uint4*>(&As[r * LDS + kc]) = v;
        }
        for (int c = tid; c < B_ROWS * CHUNKS; c += THREADS) {
            const int r = c / CHUNKS;
            const int kc = (c % CHUNKS) * 8;
            const int n = n0 + (r % BN);
            const int64_t w_row = (SWIGLU && r >= BN) ? (int64_t)N + n : (int64_t)n;
            uint4 v = make_uint4(0u, 0u, 0u, 0u);
            if (n < N && k0 + kc < K) {
                v = *reinterpret_cast<const uint4*>(w_e + w_row * K + k0 + kc);
            }
            *reinterpret_cast<uint4*>(&Bs[r * LDS + kc]) = v;
        }
        __syncthreads();

        // 2b. tensor-core steps over the slice.
#pragma unroll
        for (int kk = 0; kk < BK; kk += 16) {
            uint32_t af[MT][4];
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
                const bf16_t* p = &As[(warp_m * WM + mt * 16 + group) * LDS + kk + quad * 2];
                af[mt][0] = load_b32(p);                // (row g,     k 2q..2q+1)
                af[mt][1] = load_b32(p + 8 * LDS);      // (row g + 8, k 2q..2q+1)
                af[mt][2] = load_b32(p + 8);            // (row g,     k 2q+8..)
                af[mt][3] = load_b32(p + 8 * LDS + 8);  // (row g + 8, k 2q+8..)
            }
#pragma unroll
            for (int nt = 0; nt < NT; ++nt) {
                // B[k][n] = W[n][k]: a column of B is a row of W, so pairs along k are contiguous.
                const bf16_t* p = &Bs[(warp_n * WN + nt * 8 + group) * LDS + kk + quad * 2];
                const uint32_t bf[2] = {load_b32(p), load_b32(p + 8)};
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) {
                    mma_m16n8k16_bf16(acc[mt][nt], af[mt], bf);
                }
                if (SWIGLU) {
                    const bf16_t* q = p + BN * LDS;
                    const uint32_t bu[2] = {load_b32(q), load_b32(q + 8)};
#pragma unroll
                    for (int mt = 0; mt < MT; ++mt) {
                        mma_m16n8k16_bf16(acc_up[SWIGLU ? mt : 0][SWIGLU ? nt : 0], af[mt], bu);
                    }
                }
            }
        }
        __syncthreads();  // the next slice overwrites As/Bs
    }

    // 3. epilogue: C fragment element i sits at row g + 8 * (i / 2), column 2q + (i % 2).
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            const int r = warp_m * WM + mt * 16 + group + half * 8;
            const uint32_t pair = rows[r];
            if (pair >= (uint32_t)n_pairs) {
                continue;
            }
            const float scale = SWIGLU ? 1.0f : topk_weights[pair];
            bf16_t* out_row = out + (int64_t)pair * N;
#pragma unroll
            for (int nt = 0; nt < NT; ++nt) {
                const int col = n0 + warp_n * WN + nt * 8 + quad * 2;
                float v0 = acc[mt][nt][half * 2];
                float v1 = acc[mt][nt][half * 2 + 1];
                if (SWIGLU) {
                    v0 = silu_f32(v0) * acc_up[SWIGLU ? mt : 0][SWIGLU ? nt : 0][half * 2];
                    v1 = silu_f32(v1) * acc_up[SWIGLU ? mt : 0][SWIGLU ? nt : 0][half * 2 + 1];
                } else {
                    v0 *= scale;
                    v1 *= scale;
                }
                if (col < N) out_row[col] = f32_to_bf16(v0);
                if (col + 1 < N) out_row[col + 1] = f32_to_bf16(v1);
            }
        }
    }
}

// ---- instantiations; keep in sync with tuning.rs MOE_GEMM_TILES (a unit test checks) ----
// m64n64k32: prefill, many rows per expert. 2x2 warps, each warp 32x32.
// m16n64k64: decode-shaped, 1-2 rows per expert: a 64-row tile would be >95% padding, so use the
//            smallest mma height and spread the 4 warps along N; weight bandwidth dominates.

extern "C" __global__ void __launch_bounds__(128)
moe_gemm_swiglu_bf16_m64n64k32(const bf16_t* x, const bf16_t* w_gate_up, const uint32_t* sorted_ids,
                               const uint32_t* expert_ids, const uint32_t* n_padded, bf16_t* act,
                               int n_pairs, int top_k, int n_experts, int inter, int hidden) {
    moe_gemm_tile<64, 64, 32, 2, 2, true>(x, w_gate_up, sorted_ids, expert_ids, n_padded, nullptr,
                                          act, n_pairs, top_k, n_experts, inter, hidden);
}

extern "C" __global__ void __launch_bounds__(128)
moe_gemm_down_bf16_m64n64k32(const bf16_t* act, const bf16_t* w_down, const uint32_t* sorted_ids,
                             const uint32_t* expert_ids, const uint32_t* n_padded,
                             const float* topk_weights, bf16_t* out,
                             int n_pairs, int n_experts, int hidden, int inter) {
    moe_gemm_tile<64, 64, 32, 2, 2, false>(act, w_down, sorted_ids, expert_ids, n_padded,
                                           topk_weights, out, n_pairs, 1, n_experts, hidden, inter);
}

extern "C" __global__ void __launch_bounds__(128)
moe_gemm_swiglu_bf16_m16n64k64(const bf16_t* x, const bf16_t* w_gate_up, const uint32_t* sorted_ids,
                               const uint32_t* expert_ids, const uint32_t* n_padded, bf16_t* act,
                               int n_pairs, int top_k, int n_experts, int inter, int hidden) {
    moe_gemm_tile<16, 64, 64, 1, 4, true>(x, w_gate_up, sorted_ids, expert_ids, n_padded, nullptr,
                                          act, n_pairs, top_k, n_experts, inter, hidden);
}

extern "C" __global__ void __launch_bounds__(128)
moe_gemm_down_bf16_m16n64k64(const bf16_t* act, const bf16_t* w_down, const uint32_t* sorted_ids,
                             const uint32_t* expert_ids, const uint32_t* n_padded,
                             const float* topk_weights, bf16_t* out,
                             int n_pairs, int n_experts, int hidden, int inter) {
    moe_gemm_tile<16, 64, 64, 1, 4, false>(act, w_down, sorted_ids, expert_ids, n_padded,
                                           topk_weights, out, n_pairs, 1, n_experts, hidden, inter);
}
