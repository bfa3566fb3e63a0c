//! Launch shapes as data: the grouped-GEMM tile table and the MoE buffer plan.
//!
//! In the spirit of vLLM's per-shape JSON configs: a const table, picked by a pure function, no
//! autotuner until measurements justify one. Every tile here must have its two kernels
//! instantiated in `cuda/moe_gemm.cu` (a unit test checks the names).

use crate::{bail, moe_align, Result};

/// One instantiated tile shape of the grouped GEMM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TileConfig {
    /// Rows per tile; moe_align must pad each expert's rows to this (`MoePlan::block_m`).
    pub block_m: u32,
    /// Output columns per block.
    pub block_n: u32,
    /// K slice staged in shared memory per step.
    pub block_k: u32,
    /// Warps along M and N; the block has `warps_m * warps_n * 32` threads.
    pub warps_m: u32,
    pub warps_n: u32,
    /// `extern "C"` names of the two kernels for this tile.
    pub swiglu_kernel: &'static str,
    pub down_kernel: &'static str,
}

impl TileConfig {
    /// Threads per block.
    pub const fn threads(&self) -> u32 {
        self.warps_m * self.warps_n * 32
    }
}

/// Prefill: many rows per expert. 2x2 warps of 32x32.
pub const TILE_M64_N64_K32: TileConfig = TileConfig {
    block_m: 64,
    block_n: 64,
    block_k: 32,
    warps_m: 2,
    warps_n: 2,
    swiglu_kernel: "moe_gemm_swiglu_bf16_m64n64k32",
    down_kernel: "moe_gemm_down_bf16_m64n64k32",
};

/// Decode-shaped: one or two rows per expert; the smallest mma height, warps spread along N.
pub const TILE_M16_N64_K64: TileConfig = TileConfig {
    block_m: 16,
    block_n: 64,
    block_k: 64,
    warps_m: 1,
    warps_n: 4,
    swiglu_kernel: "moe_gemm_swiglu_bf16_m16n64k64",
    down_kernel: "moe_gemm_down_bf16_m16n64k64",
};

/// One row of the tile table: use `tile` while the mean rows per active expert is at most
/// `max_rows_per_expert`.
#[derive(Clone, Copy, Debug)]
pub struct TileRule {
    pub max_rows_per_expert: usize,
    pub tile: TileConfig,
}

/// Ordered by `max_rows_per_expert`; the last row catches everything. The 16-row threshold is
/// where a 64-row tile would be more than 75% padding on average.
pub const MOE_GEMM_TILES: &[TileRule] = &[
    TileRule {
        max_rows_per_expert: 16,
        tile: TILE_M16_N64_K64,
    },
    TileRule {
        max_rows_per_expert: usize::MAX,
        tile: TILE_M64_N64_K32,
    },
];

/// The tile for `n_pairs = n_tokens * top_k` rows spread over `n_experts` experts.
/// Mean rows per active expert = n_pairs / min(n_experts, n_pairs) (at best every pair hits a
/// different expert).
pub fn moe_gemm_tile(n_pairs: usize, n_experts: usize) -> TileConfig {
    let active = n_experts.min(n_pairs).max(1);
    let rows_per_expert = n_pairs.div_ceil(active);
    for rule in MOE_GEMM_TILES {
        if rows_per_expert <= rule.max_rows_per_expert {
            return rule.tile;
        }
    }
    TILE_M64_N64_K32
}

/// Sizes and tile of one MoE layer call: what the runtime allocates before launching
/// route → align → gemm → reduce.
///
/// Example: decode of one token on ERNIE-4.5-21B (E = 64, k = 6): n_pairs = 6, tile m16,
/// capacity = round_up(6 + 6 * 15, 16) = 96 sorted slots, 6 tiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MoePlan {
    pub n_tokens: usize,
    pub top_k: usize,
    pub n_experts: usize,
    /// `n_tokens * top_k`: rows of the routing output and of the GEMM outputs.
    pub n_pairs: usize,
    pub tile: TileConfig,
    /// Length of `sorted_ids` (worst-case padded rows).
    pub capacity: usize,
    /// Length of `expert_ids` (= capacity / block_m).
    pub n_tiles: usize,
}

impl MoePlan {
    /// Errors when `top_k` is 0 or exceeds `n_experts`, or the sizes overflow the kernels' ints.
    pub fn new(n_tokens: usize, top_k: usize, n_experts: usize) -> Result<Self> {
        const OP: &str = "MoePlan::new";
        if top_k == 0 || top_k > n_experts {
            bail!(OP, "top_k = {top_k} must be in 1..={n_experts} (n_experts)");
        }
        let n_pairs = crate::mul(OP, n_tokens, top_k)?;
        let tile = moe_gemm_tile(n_pairs, n_experts);
        let capacity = moe_align::capacity(n_pairs, n_experts, tile.block_m as usize)?;
        Ok(Self {
            n_tokens,
            top_k,
            n_experts,
            n_pairs,
            tile,
            capacity,
            n_tiles: capacity / tile.block_m as usize,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ModuleId;

    #[test]
    fn every_tile_is_instantiated() {
        let names = ModuleId::MoeGemm.kernel_names();
        for rule in MOE_GEMM_TILES {
            for kernel in [rule.tile.swiglu_kernel, rule.tile.down_kernel] {
                assert!(
                    names.contains(&kernel),
                    "{kernel} missing from ModuleId::MoeGemm"
                );
            }
            let t = rule.tile;
            let warp_rows = t.block_m / t.warps_m;
            let warp_cols = t.block_n / t.warps_n;
            assert!(warp_rows % 16 == 0 && warp_cols % 8 == 0 && t.block_k % 16 == 0);
            let suffix = format!("m{}n{}k{}", t.block_m, t.block_n, t.block_k);
            assert!(t.swiglu_kernel.ends_with(&suffix) && t.down_kernel.ends_with(&suffix));
        }
    }

    #[test]
    fn decode_and_prefill_pick_different_tiles() {
        assert_eq!(moe_gemm_tile(6, 64), TILE_M16_N64_K64);
        assert_eq!(moe_gemm_tile(512 * 6, 64), TILE_M64_N64_K32);
        assert_eq!(moe_gemm_tile(0, 64), TILE_M16_N64_K64);
    }

    #[test]
    fn plan_for_decode_matches_doc_example() {
        let plan = MoePlan::new(1, 6, 64).unwrap();
        assert_eq!((plan.n_pairs, plan.capacity, plan.n_tiles), (6, 96, 6));
        assert!(MoePlan::new(1, 0, 64).is_err());
        assert!(MoePlan::new(1, 65, 64).is_err());
    }
}
