// embedding.cu: token-id row gather.
#include "common.cuh"

/*
 * embedding_bf16: out[t] = table[ids[t]]
 *
 *   table [vocab, hidden] bf16,  ids [n_tokens] u32,  out [n_tokens, hidden] bf16
 *
 * Steps (one block per token, threads stride over hidden):
 *   1. read the id; an id >= vocab cannot be reported from a kernel, so it yields a zero row
 *      (the runtime validates ids on the host before upload; zeros make a bad id visible rather
 *      than reading out of bounds)
 *   2. copy the row
 */
extern "C" __global__ void embedding_bf16(const bf16_t* __restrict__ table,
                                          const uint32_t* __restrict__ ids,
                                          bf16_t* __restrict__ out,
                                          int n_tokens, int hidden, int vocab) {
    const int token = blockIdx.x;
    if (token >= n_tokens) {
        return;
    }
    const uint32_t id = ids[token];
    bf16_t* orow = out + (int64_t)token * hidden;
    if (id >= (uint32_t)vocab) {
        for (int h = threadIdx.x; h < hidden; h += blockDim.x) orow[h] = 0;
        return;
    }
    const bf16_t* src = table + (int64_t)id * hidden;
    for (int h = threadIdx.x; h < hidden; h += blockDim.x) {
        orow[h] = src[h];
    }
}
