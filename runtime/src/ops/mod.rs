//! CPU operators. Each fast operator has a slow, obvious twin (`*_slow`) that stays in the code
//! and is tested against it (conventions Part 3, item 5). Activations are row-major `f32` slices
//! with their shape in the comment; weights are [`Tensor`](crate::Tensor)s of f32, bf16 or f16.

mod activation;
mod exp_fast;
pub mod conv1d;
mod matmul;
pub mod gemm;
mod norm;
pub mod quant;
mod resample_bilinear;
mod rope;
pub mod conv2d;
pub mod group_norm;
pub mod resample;

pub use activation::{erf, gelu_erf_in_place, quick_gelu_in_place, silu, silu_mul, silu_mul_in_place, silu_mul_slow, softmax_in_place};
pub use exp_fast::{quick_gelu_fast_in_place, softmax_fast_in_place, EXP_FAST_ULPS};
pub use matmul::{dot, matmul_xwt, matmul_xwt_slow};
pub use norm::{layer_norm, layer_norm_slow, rms_norm, rms_norm_slow};
pub use resample_bilinear::{area_pool_1x1, resample_bilinear, resample_bilinear_slow};
pub use rope::{
    rope_apply, rope_interleaved, rope_interleaved_slow, rope_mrope_real_slow, rope_mrope_slow, rope_vision, rope_vision_slow, RopePositions,
    RopeTable,
};
