// rope.cu: rotary position embedding, interleaved (GPT-J) pairing, in place on q or k.
#include "common.cuh"

/*
 * Pair m of a head is the two adjacent lanes (2m, 2m + 1) (spec §2.4; NOT the NeoX half split):
 *   theta_m = pos * rope_theta^(-2m / head_dim)
 *   y[2m]   = x[2m] * cos - x[2m+1] * sin
 *   y[2m+1] = x[2m+1] * cos + x[2m] * sin
 *
 * The angle is formed and reduced in f64: positions reach 131072 and rope_theta is 5e5, and an
 * f32 product pos * inv_freq is already off by ~1e-2 rad there. The kernel is memory-bound, so
 * the f64 math is free on data-centre parts. The rotation itself is f32, rounded once to bf16.
 *
 *   rope_bf16:    x [n_tokens, n_heads, head_dim] bf16 (in place), pos [n_tokens] u32
 *   rope_3d_bf16: x as above, pos [n_tokens, 3] u32 = (t, h, w) (ERNIE-4.5-VL, spec §3.5):
 *                 with P = head_dim / 2 pairs and F = n_t_pairs (freq_allocation),
 *                 pair m < P - F uses h when m is even and w when m is odd; pair m >= P - F uses t.
 *                 For text tokens t = h = w, which reduces exactly to rope_bf16.
 *
 * Steps (one thread per (token, head, pair), grid-stride):
 *   1. decode the flat index into token, head, pair m; pick the position component for m
 *   2. angle = pos * theta^(-2m/head_dim) in f64; (sin, cos) in f64, then f32
 *   3. rotate the pair in f32, store both lanes as bf16
 */
__device__ __forceinline__ void rope_rotate_pair(bf16_t* pair, double pos, int m, int head_dim,
                                                 float theta) {
    const double inv_freq = pow((double)theta, -2.0 * (double)m / (double)head_dim);
    double s, c;
    sincos(pos * inv_freq, &s, &c);
    const float sin_f = (float)s;
    const float cos_f = (float)c;
    const float x0 = bf16_to_f32(pair[0]);
    const float x1 = bf16_to_f32(pair[1]);
    pair[0] = f32_to_bf16(x0 * cos_f - x1 * sin_f);
    pair[1] = f32_to_bf16(x1 * cos_f + x0 * sin_f);
}

extern "C" __global__ void rope_bf16(bf16_t* __restrict__ x, const uint32_t* __restrict__ pos,
                                     int n_tokens, int n_heads, int head_dim, float theta) {
    const int n_pairs = head_dim / 2;
    const int64_t total = (int64_t)n_tokens * n_heads * n_pairs;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int m = (int)(i % n_pairs);
        const int64_t token_head = i / n_pairs;
        const int64_t token = token_head / n_heads;
        rope_rotate_pair(x + token_head * head_dim + 2 * m, (double)pos[token], m, head_dim, theta);
    }
}

extern "C" __global__ void rope_3d_bf16(bf16_t* __restrict__ x, const uint32_t* __restrict__ pos_thw,
                                        int n_tokens, int n_heads, int head_dim, float theta,
                                        int n_t_pairs) {
    const int n_pairs = head_dim / 2;
    const int first_t_pair = n_pairs - n_t_pairs;
    const int64_t total = (int64_t)n_tokens * n_heads * n_pairs;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int m = (int)(i % n_pairs);
        const int64_t token_head = i / n_pairs;
        const int64_t token = token_head / n_heads;
        // component 0 = t, 1 = h, 2 = w
        const int component = m >= first_t_pair ? 0 : (m % 2 == 0 ? 1 : 2);
        const double p = (double)pos_thw[token * 3 + component];
        rope_rotate_pair(x + token_head * head_dim + 2 * m, p, m, head_dim, theta);
    }
}
