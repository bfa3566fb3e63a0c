// host_emu_entry.cpp: C entry points that run the MoE kernels (routing, align, grouped GEMM,
// reduce) and the rmsnorm / rope / attention kernels on the CPU
// through host_emu.h. Built by build.rs only with the `host-emu` feature; used by tests/host_emu.rs
// via src/host_emu.rs. The .cu files are included (not declared) so the kernel signatures the
// entry points call are exactly the ones in the source, with no hand-copied prototypes.
#define ERNIE_HOST_EMU 1
#include "routing.cu"
#include "moe_align.cu"
#include "moe_reduce.cu"

// Each entry takes the launch shape the Rust launcher computed (grid.x, block.x), so the emulated
// run uses the same configuration as a GPU launch. Returns 0, or -1 if the emulation failed.
extern "C" int emu_moe_route_f32(unsigned grid_x, unsigned block_x, const float* logits,
                                 const float* bias, uint32_t* topk_ids, float* topk_weights,
                                 int n_tokens, int n_experts, int top_k, float norm_min) {
    return emu::launch(dim3{grid_x, 1, 1}, dim3{block_x, 1, 1}, [&] {
        moe_route_f32(logits, bias, topk_ids, topk_weights, n_tokens, n_experts, top_k, norm_min);
    });
}

extern "C" int emu_moe_align_u32(unsigned grid_x, unsigned block_x, const uint32_t* topk_ids,
                                 uint32_t* sorted_ids, uint32_t* expert_ids, uint32_t* n_padded,
                                 int n_pairs, int n_experts, int block_m, int capacity) {
    return emu::launch(dim3{grid_x, 1, 1}, dim3{block_x, 1, 1}, [&] {
        moe_align_u32(topk_ids, sorted_ids, expert_ids, n_padded, n_pairs, n_experts, block_m,
                      capacity);
    });
}

extern "C" int emu_moe_reduce_bf16(unsigned grid_x, unsigned block_x, const uint16_t* slot_out,
                                   const uint16_t* shared_out, uint16_t* out, int n_tokens,
                                   int top_k, int hidden) {
    return emu::launch(dim3{grid_x, 1, 1}, dim3{block_x, 1, 1}, [&] {
        if (shared_out != nullptr) {
            moe_reduce_add_bf16(slot_out, shared_out, out, n_tokens, top_k, hidden);
        } else {
            moe_reduce_bf16(slot_out, out, n_tokens, top_k, hidden);
        }
    });
}

// The grouped GEMM, through the warp-collective mma emulation in host_emu.h. `block_m` picks the
// tile instantiation exactly as tuning.rs names it.
#include "moe_gemm.cu"

extern "C" int emu_moe_gemm_swiglu_bf16(int block_m, unsigned grid_x, unsigned grid_y,
                                        unsigned block_x, const uint16_t* x,
                                        const uint16_t* w_gate_up, const uint32_t* sorted_ids,
                                        const uint32_t* expert_ids, const uint32_t* n_padded,
                                        uint16_t* act, int n_pairs, int top_k, int n_experts,
                                        int inter, int hidden) {
    if (block_m != 64 && block_m != 16) return -1;
    return emu::launch(dim3{grid_x, grid_y, 1}, dim3{block_x, 1, 1}, [&] {
        if (block_m == 64) {
            moe_gemm_swiglu_bf16_m64n64k32(x, w_gate_up, sorted_ids, expert_ids, n_padded, act,
                                           n_pairs, top_k, n_experts, inter, hidden);
        } else {
            moe_gemm_swiglu_bf16_m16n64k64(x, w_gate_up, sorted_ids, expert_ids, n_padded, act,
                                           n_pairs, top_k, n_experts, inter, hidden);
        }
    });
}

extern "C" int emu_moe_gemm_down_bf16(int block_m, unsigned grid_x, unsigned grid_y,
                                      unsigned block_x, const uint16_t* act,
                                      const uint16_t* w_down, const uint32_t* sorted_ids,
                                      const uint32_t* expert_ids, const uint32_t* n_padded,
                                      const float* topk_weights, uint16_t* out, int n_pairs,
                                      int n_experts, int hidden, int inter) {
    if (block_m != 64 && block_m != 16) return -1;
    return emu::launch(dim3{grid_x, grid_y, 1}, dim3{block_x, 1, 1}, [&] {
        if (block_m == 64) {
            moe_gemm_down_bf16_m64n64k32(act, w_down, sorted_ids, expert_ids, n_padded,
                                         topk_weights, out, n_pairs, n_experts, hidden, inter);
        } else {
            moe_gemm_down_bf16_m16n64k64(act, w_down, sorted_ids, expert_ids, n_padded,
                                         topk_weights, out, n_pairs, n_experts, hidden, inter);
        }
    });
}

// The layer kernels around the MoE, so the CPU tests cover their barriers and reductions too.
#include "rmsnorm.cu"
#include "rope.cu"
#include "attention.cu"

extern "C" int emu_rmsnorm_bf16(unsigned grid_x, unsigned block_x, const uint16_t* x,
                                const uint16_t* w, uint16_t* out, int n_rows, int hidden,
                                float eps) {
    return emu::launch(dim3{grid_x, 1, 1}, dim3{block_x, 1, 1},
                       [&] { rmsnorm_bf16(x, w, out, n_rows, hidden, eps); });
}

// n_t_pairs < 0 selects the 1-D kernel (positions [n_tokens]); otherwise the 3-D one.
extern "C" int emu_rope_bf16(unsigned grid_x, unsigned block_x, uint16_t* x, const uint32_t* pos,
                             int n_tokens, int n_heads, int head_dim, float theta, int n_t_pairs) {
    return emu::launch(dim3{grid_x, 1, 1}, dim3{block_x, 1, 1}, [&] {
        if (n_t_pairs < 0) {
            rope_bf16(x, pos, n_tokens, n_heads, head_dim, theta);
        } else {
            rope_3d_bf16(x, pos, n_tokens, n_heads, head_dim, theta, n_t_pairs);
        }
    });
}

extern "C" int emu_attention_bf16(int decode, unsigned grid_x, unsigned grid_y, unsigned block_x,
                                  const uint16_t* q, const uint16_t* k_cache,
                                  const uint16_t* v_cache, uint16_t* out, int n_queries,
                                  int kv_len, int n_heads, int n_kv_heads, int head_dim,
                                  float scale, int causal) {
    return emu::launch(dim3{grid_x, grid_y, 1}, dim3{block_x, 1, 1}, [&] {
        if (decode) {
            attention_decode_bf16(q, k_cache, v_cache, out, n_queries, kv_len, n_heads,
                                  n_kv_heads, head_dim, scale, causal);
        } else {
            attention_prefill_bf16(q, k_cache, v_cache, out, n_queries, kv_len, n_heads,
                                   n_kv_heads, head_dim, scale, causal);
        }
    });
}
