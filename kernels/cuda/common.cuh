// common.cuh: the helpers every kernel file shares: integer types, bf16 <-> f32, warp and block
// reductions, and an order-preserving float key for arg-max.
//
// Header-free on purpose: NVRTC gets no include paths at run time (the GPU machine has only the
// driver and libnvrtc), so nothing here may include <cuda_bf16.h> or <cstdint>. bf16 is carried as
// its raw 16 bits and converted by hand; mma.sync takes packed pairs of those bits directly.
//
// The same file compiles as host C++ under ERNIE_HOST_EMU (see host_emu.h), which supplies the CUDA
// built-ins (threadIdx, __shfl_xor_sync, __syncthreads, atomicAdd, ...) with honest emulations.
// module.rs resolves `#include "common.cuh"` textually; the host_emu.h include below sits in a
// branch NVRTC never takes, so NVRTC never tries to open it.
#pragma once

#if defined(ERNIE_HOST_EMU)
#include "host_emu.h"
#else
typedef unsigned char uint8_t;
typedef unsigned short uint16_t;
typedef unsigned int uint32_t;
typedef int int32_t;
typedef unsigned long long uint64_t;
typedef long long int64_t;
#endif

// Raw bf16 bits: 1 sign, 8 exponent, 7 mantissa; the top half of an f32.
typedef uint16_t bf16_t;

#define WARP_SIZE 32
#define FULL_MASK 0xffffffffu

__device__ __forceinline__ float f32_pos_inf() { return __uint_as_float(0x7f800000u); }
__device__ __forceinline__ float f32_neg_inf() { return __uint_as_float(0xff800000u); }

__device__ __forceinline__ float bf16_to_f32(bf16_t h) {
    return __uint_as_float(((uint32_t)h) << 16);
}

// Round to nearest, ties to even (what torch and half::bf16::from_f32 do); NaN stays a quiet NaN
// with its sign, rather than rounding up into infinity.
__device__ __forceinline__ bf16_t f32_to_bf16(float f) {
    uint32_t u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        return (bf16_t)((u >> 16) | 0x0040u);
    }
    u += 0x7fffu + ((u >> 16) & 1u);
    return (bf16_t)(u >> 16);
}

// Rounds an f32 to the nearest bf16 and back: "round where the reference rounds".
__device__ __forceinline__ float round_bf16(float f) { return bf16_to_f32(f32_to_bf16(f)); }

// Two bf16 in one 32-bit register, element `lo` at the lower address (= lower 16 bits), which is
// the layout mma.sync fragments and little-endian 32-bit loads both use.
__device__ __forceinline__ uint32_t pack_bf16x2(bf16_t lo, bf16_t hi) {
    return ((uint32_t)hi << 16) | (uint32_t)lo;
}

__device__ __forceinline__ float silu_f32(float x) { return x / (1.0f + expf(-x)); }

// ---- warp reductions (every lane of the warp must take part; results land in every lane) ----

__device__ __forceinline__ float warp_sum(float v) {
    for (int offset = WARP_SIZE / 2; offset > 0; offset >>= 1) {
        v += __shfl_xor_sync(FULL_MASK, v, offset);
    }
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int offset = WARP_SIZE / 2; offset > 0; offset >>= 1) {
        v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, offset));
    }
    return v;
}

__device__ __forceinline__ uint64_t warp_max_u64(uint64_t v) {
    for (int offset = WARP_SIZE / 2; offset > 0; offset >>= 1) {
        uint64_t other = __shfl_xor_sync(FULL_MASK, v, offset);
        v = other > v ? other : v;
    }
    return v;
}

// Block-wide sum for blocks of up to 1024 threads (blockDim.x a multiple of 32). Every thread of
// the block must call it; the result lands in every thread. Uses 32 floats of shared memory and
// ends with a barrier so the scratch can be reused by a following call.
__device__ __forceinline__ float block_sum(float v) {
    __shared__ float partial[WARP_SIZE];
    const int lane = threadIdx.x % WARP_SIZE;
    const int warp = threadIdx.x / WARP_SIZE;
    const int n_warps = blockDim.x / WARP_SIZE;
    v = warp_sum(v);
    if (lane == 0) {
        partial[warp] = v;
    }
    __syncthreads();
    float total = lane < n_warps ? partial[lane] : 0.0f;
    total = warp_sum(total);
    __syncthreads();
    return total;
}

// ---- ordered keys for arg-max with a deterministic tie-break ----

// Maps a float to a u32 whose unsigned order is the float order (-inf lowest, +inf highest).
// -0.0 is folded into +0.0 first so that the two compare equal, as floats do. NaN must be
// replaced by the caller (routing maps it to -inf).
__device__ __forceinline__ uint32_t f32_order_key(float f) {
    if (f == 0.0f) {
        f = 0.0f;
    }
    const uint32_t u = __float_as_uint(f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// (score, index) packed so that the u64 maximum is the highest score and, among equal scores, the
// LOWEST index. 0 is below every real key (f32_order_key(-inf) = 0x007fffff), so it marks
// "already taken".
__device__ __forceinline__ uint64_t argmax_key(float score, uint32_t index) {
    return ((uint64_t)f32_order_key(score) << 32) | (uint64_t)(0xffffffffu - index);
}

__device__ __forceinline__ uint32_t argmax_key_index(uint64_t key) {
    return 0xffffffffu - (uint32_t)(key & 0xffffffffu);
}

__device__ __forceinline__ int ceil_div(int a, int b) { return (a + b - 1) / b; }
