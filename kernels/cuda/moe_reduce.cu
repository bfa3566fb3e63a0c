// moe_reduce.cu: fold the top_k expert rows of each token back into token order.
#include "common.cuh"

/*
 * moe_reduce_bf16 / moe_reduce_add_bf16: out[t] = sum_j slot_out[t*k + j] (+ shared_out[t]).
 *
 *   slot_out   [n_tokens * top_k, hidden] bf16  moe_gemm_down output; row p = pair p (token*k + slot),
 *                                               already scaled by its routing weight
 *   shared_out [n_tokens, hidden]         bf16  the shared-expert MLP output (_add variant only)
 *   out        [n_tokens, hidden]         bf16
 *
 * Steps (one block per token, threads stride over hidden):
 *   1. acc = sum over slots j = 0..k-1 of slot_out[t*k + j][h], in f32 and in slot order
 *   2. (_add) acc += shared_out[t][h]   (the shared expert has weight 1 and no gate, spec §2.4)
 *   3. out[t][h] = bf16(acc)            one rounding for the whole sum
 */
template <bool ADD_SHARED>
__device__ __forceinline__ void moe_reduce_impl(const bf16_t* __restrict__ slot_out,
                                                const bf16_t* __restrict__ shared_out,
                                                bf16_t* __restrict__ out,
                                                int n_tokens, int top_k, int hidden) {
    const int token = blockIdx.x;
    if (token >= n_tokens) {
        return;
    }
    const bf16_t* rows = slot_out + (int64_t)token * top_k * hidden;
    for (int h = threadIdx.x; h < hidden; h += blockDim.x) {
        float acc = 0.0f;
        for (int j = 0; j < top_k; ++j) {
            acc += bf16_to_f32(rows[(int64_t)j * hidden + h]);
        }
        if (ADD_SHARED) {
            acc += bf16_to_f32(shared_out[(int64_t)token * hidden + h]);
        }
        out[(int64_t)token * hidden + h] = f32_to_bf16(acc);
    }
}

extern "C" __global__ void moe_reduce_bf16(const bf16_t* __restrict__ slot_out,
                                           bf16_t* __restrict__ out,
                                           int n_tokens, int top_k, int hidden) {
    moe_reduce_impl<false>(slot_out, nullptr, out, n_tokens, top_k, hidden);
}

extern "C" __global__ void moe_reduce_add_bf16(const bf16_t* __restrict__ slot_out,
                                               const bf16_t* __restrict__ shared_out,
                                               bf16_t* __restrict__ out,
                                               int n_tokens, int top_k, int hidden) {
    moe_reduce_impl<true>(slot_out, shared_out, out, n_tokens, top_k, hidden);
}
