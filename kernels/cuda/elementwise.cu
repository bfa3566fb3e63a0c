// elementwise.cu: residual adds and the SwiGLU gate for the dense FFN / shared expert.
#include "common.cuh"

/*
 * All kernels: one thread per element, grid-stride; math in f32, one bf16 rounding per output.
 *
 *   add_bf16:            out[i] = a[i] + b[i]                                [n]
 *   add_inplace_bf16:    acc[i] = acc[i] + b[i]   (residual stream update)   [n]
 *   silu_mul_bf16:       out[i] = silu(gate[i]) * up[i]                      [n]
 *   silu_mul_fused_bf16: out[t][j] = silu(gu[t][j]) * gu[t][inter + j]
 *                        gu [n_rows, 2 * inter] (gate columns first, as W_gate_up stacks them),
 *                        out [n_rows, inter]
 *   to_f32_bf16:         out[i] = f32(x[i])   (exact widening; the MoE router runs in f32)
 */
extern "C" __global__ void add_bf16(const bf16_t* __restrict__ a, const bf16_t* __restrict__ b,
                                    bf16_t* __restrict__ out, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        out[i] = f32_to_bf16(bf16_to_f32(a[i]) + bf16_to_f32(b[i]));
    }
}

extern "C" __global__ void add_inplace_bf16(bf16_t* __restrict__ acc, const bf16_t* __restrict__ b,
                                            int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        acc[i] = f32_to_bf16(bf16_to_f32(acc[i]) + bf16_to_f32(b[i]));
    }
}

extern "C" __global__ void silu_mul_bf16(const bf16_t* __restrict__ gate,
                                         const bf16_t* __restrict__ up,
                                         bf16_t* __restrict__ out, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        out[i] = f32_to_bf16(silu_f32(bf16_to_f32(gate[i])) * bf16_to_f32(up[i]));
    }
}

extern "C" __global__ void silu_mul_fused_bf16(const bf16_t* __restrict__ gate_up,
                                               bf16_t* __restrict__ out, int n_rows, int inter) {
    const int64_t n = (int64_t)n_rows * inter;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t row = i / inter;
        const int64_t j = i % inter;
        const bf16_t* gu = gate_up + row * 2 * inter;
        out[i] = f32_to_bf16(silu_f32(bf16_to_f32(gu[j])) * bf16_to_f32(gu[inter + j]));
    }
}

extern "C" __global__ void to_f32_bf16(const bf16_t* __restrict__ x, float* __restrict__ out,
                                       int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        out[i] = bf16_to_f32(x[i]);
    }
}
