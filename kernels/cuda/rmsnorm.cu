// rmsnorm.cu: RMSNorm over the last dimension (spec §2.4), bf16 in/out, f32 statistics.
#include "common.cuh"

/*
 * rmsnorm_bf16: out[t] = bf16( bf16(x[t] * r) * w ),  r = 1 / sqrt(mean(x[t]^2) + eps)
 *
 *   x [n_rows, hidden] bf16,  w [hidden] bf16,  out [n_rows, hidden] bf16;  blockDim.x % 32 == 0
 *
 * Steps (one block per row):
 *   1. each thread sums x^2 over its strided columns in f32; block_sum gives the row total
 *   2. r = rsqrt(total / hidden + eps)
 *   3. normalise, round to bf16 (HF casts back to the activation dtype BEFORE the weight multiply,
 *      and the CPU reference does the same), multiply by w in f32, round again
 */
extern "C" __global__ void rmsnorm_bf16(const bf16_t* __restrict__ x, const bf16_t* __restrict__ w,
                                        bf16_t* __restrict__ out, int n_rows, int hidden,
                                        float eps) {
    const int row = blockIdx.x;
    if (row >= n_rows) {
        return;
    }
    const bf16_t* xr = x + (int64_t)row * hidden;
    bf16_t* orow = out + (int64_t)row * hidden;

    // 1.
    float sum_sq = 0.0f;
    for (int h = threadIdx.x; h < hidden; h += blockDim.x) {
        const float v = bf16_to_f32(xr[h]);
        sum_sq += v * v;
    }
    sum_sq = block_sum(sum_sq);

    // 2.
    const float r = rsqrtf(sum_sq / (float)hidden + eps);

    // 3.
    for (int h = threadIdx.x; h < hidden; h += blockDim.x) {
        const float normed = round_bf16(bf16_to_f32(xr[h]) * r);
        orow[h] = f32_to_bf16(normed * bf16_to_f32(w[h]));
    }
}
