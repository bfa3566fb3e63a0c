// attention.cu: scaled dot-product attention over the KV cache, GQA, f32 softmax (spec §2.4).
#include "common.cuh"

#define ATTN_MAX_HEAD_DIM 256
#define ATTN_DIMS_PER_LANE (ATTN_MAX_HEAD_DIM / WARP_SIZE)

/*
 * attention_decode_bf16 / attention_prefill_bf16: the same algorithm, two block shapes.
 *
 *   q       [n_queries, n_heads, head_dim]     bf16  (already rotated)
 *   k_cache [max_seq, n_kv_heads, head_dim]    bf16  positions 0..kv_len hold valid keys (post-RoPE)
 *   v_cache [max_seq, n_kv_heads, head_dim]    bf16
 *   out     [n_queries, n_heads, head_dim]     bf16
 *   The queries are the LAST n_queries positions of the sequence: query i sits at absolute
 *   position kv_len - n_queries + i (the runtime appends the new keys before attending).
 *   causal != 0: query i sees keys 0..=kv_len - n_queries + i; causal == 0: all kv_len keys
 *   (bidirectional, e.g. inside one vision frame). Head h reads kv head h / (n_heads / n_kv_heads).
 *   head_dim <= 256; scale is usually head_dim^-0.5.
 *
 * Grid (n_queries, n_heads); decode uses 8 warps per block (one query: split the keys widely),
 * prefill 4. Steps per block:
 *   1. each lane holds head_dim / 32 elements of q (times scale) in f32
 *   2. warp w walks keys j = w, w + WARPS, ...: s = q . k_j (warp sum); online softmax:
 *      m' = max(m, s); l = l * e^(m - m') + e^(s - m'); acc = acc * e^(m - m') + e^(s - m') * v_j
 *   3. the warps' (m, l, acc) go to shared memory; warp 0 rescales them to the common max,
 *      sums, divides by l and writes bf16
 *
 * One warp reduction per key makes this a clear baseline rather than a fast prefill; a tiled
 * tensor-core (flash) prefill can replace it behind the same launcher.
 */
template <int WARPS>
__device__ __forceinline__ void attention_impl(const bf16_t* __restrict__ q,
                                               const bf16_t* __restrict__ k_cache,
                                               const bf16_t* __restrict__ v_cache,
                                               bf16_t* __restrict__ out,
                                               int n_queries, int kv_len, int n_heads,
                                               int n_kv_heads, int head_dim, float scale,
                                               int causal) {
    const int query = blockIdx.x;
    const int head = blockIdx.y;
    if (query >= n_queries || head >= n_heads) {
        return;
    }
    const int kv_head = head / (n_heads / n_kv_heads);
    const int warp = threadIdx.x / WARP_SIZE;
    const int lane = threadIdx.x % WARP_SIZE;
    const int64_t kv_stride = (int64_t)n_kv_heads * head_dim;

    // 1.
    const bf16_t* q_row = q + ((int64_t)query * n_heads + head) * head_dim;
    float qv[ATTN_DIMS_PER_LANE];
    float acc[ATTN_DIMS_PER_LANE];
#pragma unroll
    for (int j = 0; j < ATTN_DIMS_PER_LANE; ++j) {
        const int d = lane + j * WARP_SIZE;
        qv[j] = d < head_dim ? bf16_to_f32(q_row[d]) * scale : 0.0f;
        acc[j] = 0.0f;
    }

    // 2.
    const int last_key = causal ? kv_len - n_queries + query : kv_len - 1;
    float m = f32_neg_inf();
    float l = 0.0f;
    for (int key = warp; key <= last_key; key += WARPS) {
        const bf16_t* k_row = k_cache + (int64_t)key * kv_stride + (int64_t)kv_head * head_dim;
        const bf16_t* v_row = v_cache + (int64_t)key * kv_stride + (int64_t)kv_head * head_dim;
        float s = 0.0f;
#pragma unroll
        for (int j = 0; j < ATTN_DIMS_PER_LANE; ++j) {
            const int d = lane + j * WARP_SIZE;
            if (d < head_dim) s += qv[j] * bf16_to_f32(k_row[d]);
        }
        s = warp_sum(s);
        const float m_new = fmaxf(m, s);
        const float correction = expf(m - m_new);  // 0 on the first key (m = -inf)
        const float p = expf(s - m_new);
        l = l * correction + p;
#pragma unroll
        for (int j = 0; j < ATTN_DIMS_PER_LANE; ++j) {
            const int d = lane + j * WARP_SIZE;
            const float v = d < head_dim ? bf16_to_f32(v_row[d]) : 0.0f;
            acc[j] = acc[j] * correction + p * v;
        }
        m = m_new;
    }

    // 3.
    __shared__ float s_m[WARPS];
    __shared__ float s_l[WARPS];
    __shared__ float s_acc[WARPS][ATTN_MAX_HEAD_DIM];
    if (lane == 0) {
        s_m[warp] = m;
        s_l[warp] = l;
    }
#pragma unroll
    for (int j = 0; j < ATTN_DIMS_PER_LANE; ++j) {
        s_acc[warp][lane + j * WARP_SIZE] = acc[j];
    }
    __syncthreads();
    if (warp != 0) {
        return;
    }
    float m_all = f32_neg_inf();
    for (int w = 0; w < WARPS; ++w) m_all = fmaxf(m_all, s_m[w]);
    float factor[WARPS];
    float l_all = 0.0f;
    for (int w = 0; w < WARPS; ++w) {
        // A warp that saw no key (short causal prefix) has m = -inf and contributes nothing.
        factor[w] = s_m[w] == f32_neg_inf() ? 0.0f : expf(s_m[w] - m_all);
        l_all += s_l[w] * factor[w];
    }
    bf16_t* o_row = out + ((int64_t)query * n_heads + head) * head_dim;
#pragma unroll
    for (int j = 0; j < ATTN_DIMS_PER_LANE; ++j) {
        const int d = lane + j * WARP_SIZE;
        if (d >= head_dim) continue;
        float o = 0.0f;
        for (int w = 0; w < WARPS; ++w) o += s_acc[w][d] * factor[w];
        o_row[d] = f32_to_bf16(o / l_all);
    }
}

extern "C" __global__ void __launch_bounds__(256)
attention_decode_bf16(const bf16_t* q, const bf16_t* k_cache, const bf16_t* v_cache, bf16_t* out,
                      int n_queries, int kv_len, int n_heads, int n_kv_heads, int head_dim,
                      float scale, int causal) {
    attention_impl<8>(q, k_cache, v_cache, out, n_queries, kv_len, n_heads, n_kv_heads, head_dim,
                      scale, causal);
}

extern "C" __global__ void __launch_bounds__(128)
attention_prefill_bf16(const bf16_t* q, const bf16_t* k_cache, const bf16_t* v_cache, bf16_t* out,
                       int n_queries, int kv_len, int n_heads, int n_kv_heads, int head_dim,
                       float scale, int causal) {
    attention_impl<4>(q, k_cache, v_cache, out, n_queries, kv_len, n_heads, n_kv_heads, head_dim,
                      scale, causal);
}
