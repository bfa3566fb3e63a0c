//! rmsnorm.cu, rope.cu and attention.cu through the host emulation, against the references.

use ernie_kernels::attention::AttentionDims;
use ernie_kernels::host_emu;
use ernie_kernels::rmsnorm::NormDims;
use ernie_kernels::rope::RopeDims;
use half::bf16;

use crate::reference::*;

/// One bf16 rounding apart: f32 sums in a different order may round to the neighbouring bf16.
const ONE_ULP_RTOL: f32 = 8e-3;
/// RMSNorm rounds twice (before and after the weight): a one-ulp flip of the first rounding is
/// scaled by |w| <= 1.5 and rounded again.
const RMS_NORM_RTOL: f32 = 2.0 * ONE_ULP_RTOL;
/// Attention outputs average bf16 values; the kernel's online softmax reassociates the sums.
const ATTN_ATOL: f32 = 2e-3;
const ATTN_RTOL: f32 = 1e-2;
const THETA: f32 = 500_000.0;

#[test]
fn rms_norm_matches_reference() {
    let mut rng = XorShift(0xabc);
    for n_rows in [1, 33, 511] {
        for hidden in [64, 200, 2560] {
            if n_rows == 511 && hidden == 2560 {
                continue; // the emulation runs one fiber per thread: keep the test quick
            }
            let x = rng.bf16s(n_rows * hidden, 4.0);
            let w = rng.bf16s(hidden, 1.5);
            let dims = NormDims {
                n_rows,
                hidden,
                eps: 1e-5,
            };
            let got = host_emu::rms_norm(&x, &w, dims).unwrap();
            let want = reference_rms_norm(&x, &w, hidden, 1e-5);
            assert_close(
                &format!("rmsnorm T={n_rows} H={hidden}"),
                &got,
                &want,
                1e-6,
                RMS_NORM_RTOL,
            );
        }
    }
}

#[test]
fn rope_is_interleaved_gptj_pairing() {
    // head_dim 4, position 1, x = [1, 0, 0, 0]: pair 0 rotates lanes (0, 1) by 1 rad.
    let mut x = vec![bf16::ONE, bf16::ZERO, bf16::ZERO, bf16::ZERO];
    let dims = RopeDims {
        n_tokens: 1,
        n_heads: 1,
        head_dim: 4,
        theta: THETA,
    };
    host_emu::rope(&mut x, &[1], dims, None).unwrap();
    assert_eq!(x[0], bf16::from_f32(1f32.cos()));
    assert_eq!(x[1], bf16::from_f32(1f32.sin()));
    assert_eq!(
        (x[2], x[3]),
        (bf16::ZERO, bf16::ZERO),
        "NeoX pairing would touch lane 2"
    );
}

#[test]
fn rope_1d_and_3d_match_reference() {
    let mut rng = XorShift(0xdef);
    for (n_tokens, n_heads, head_dim) in [(1, 4, 128), (33, 2, 128), (511, 1, 64), (33, 3, 80)] {
        let x0 = rng.bf16s(n_tokens * n_heads * head_dim, 2.0);
        let dims = RopeDims {
            n_tokens,
            n_heads,
            head_dim,
            theta: THETA,
        };
        // positions up to 131071, where an f32 angle would already be off
        let pos: Vec<u32> = (0..n_tokens).map(|t| (t as u32 * 4099) % 131_072).collect();
        let (mut got, mut want) = (x0.clone(), x0.clone());
        host_emu::rope(&mut got, &pos, dims, None).unwrap();
        reference_rope(&mut want, &pos, n_heads, head_dim, THETA, None);
        assert_close(
            &format!("rope T={n_tokens} d={head_dim}"),
            &got,
            &want,
            0.0,
            ONE_ULP_RTOL,
        );

        // 3-D with t = h = w collapses to 1-D exactly (spec §3.5).
        let thw_text: Vec<u32> = pos.iter().flat_map(|&p| [p, p, p]).collect();
        let mut got3 = x0.clone();
        host_emu::rope(&mut got3, &thw_text, dims, Some(20.min(head_dim / 2))).unwrap();
        assert_eq!(got3, got, "3-D rope with t = h = w must equal 1-D rope");

        // distinct (t, h, w), as for image tokens
        let thw: Vec<u32> = (0..n_tokens as u32)
            .flat_map(|t| [t, 100 + t % 7, 200 + t / 7])
            .collect();
        let (mut got3, mut want3) = (x0.clone(), x0.clone());
        let f = 20.min(head_dim / 2);
        host_emu::rope(&mut got3, &thw, dims, Some(f)).unwrap();
        reference_rope(&mut want3, &thw, n_heads, head_dim, THETA, Some(f));
        assert_close(
            &format!("rope3d T={n_tokens} d={head_dim}"),
            &got3,
            &want3,
            0.0,
            ONE_ULP_RTOL,
        );
    }
}

fn check_attention(shape: AttnShape, seed: u64) {
    let mut rng = XorShift(seed);
    let d = shape.head_dim;
    let max_seq = shape.kv_len + 7;
    let q = rng.bf16s(shape.n_queries * shape.n_heads * d, 1.0);
    let mut k = rng.bf16s(max_seq * shape.n_kv_heads * d, 1.0);
    let mut v = rng.bf16s(max_seq * shape.n_kv_heads * d, 1.0);
    // rows past kv_len are poison: reading them would turn outputs into NaN
    let valid = shape.kv_len * shape.n_kv_heads * d;
    for x in k[valid..].iter_mut().chain(v[valid..].iter_mut()) {
        *x = bf16::NAN;
    }
    let scale = (d as f32).powf(-0.5);
    let dims = AttentionDims {
        n_queries: shape.n_queries,
        kv_len: shape.kv_len,
        n_heads: shape.n_heads,
        n_kv_heads: shape.n_kv_heads,
        head_dim: d,
        scale,
        causal: shape.causal,
    };
    let got = host_emu::attention(&q, &k, &v, dims).unwrap();
    let want = reference_attention(&q, &k, &v, &shape, scale);
    let tag = format!(
        "attention nq={} kv={} heads={}/{} d={} causal={} decode_kernel={}",
        shape.n_queries,
        shape.kv_len,
        shape.n_heads,
        shape.n_kv_heads,
        d,
        shape.causal,
        dims.should_use_decode_kernel()
    );
    assert_close(&tag, &got, &want, ATTN_ATOL, ATTN_RTOL);
}

#[test]
fn attention_decode_matches_reference() {
    for (i, kv_len) in [1, 33, 511].into_iter().enumerate() {
        let shape = AttnShape {
            n_queries: 1,
            kv_len,
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: 128,
            causal: true,
        };
        check_attention(shape, 10 + i as u64);
    }
    let shape = AttnShape {
        n_queries: 1,
        kv_len: 40,
        n_heads: 5,
        n_kv_heads: 1,
        head_dim: 80,
        causal: true,
    };
    check_attention(shape, 20);
}

#[test]
fn attention_prefill_matches_reference() {
    // fresh prompt, prompt after a cached prefix, and bidirectional (one vision frame)
    let shape = AttnShape {
        n_queries: 33,
        kv_len: 33,
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 64,
        causal: true,
    };
    check_attention(shape, 30);
    let shape = AttnShape {
        n_queries: 33,
        kv_len: 50,
        n_heads: 2,
        n_kv_heads: 1,
        head_dim: 128,
        causal: true,
    };
    check_attention(shape, 31);
    let shape = AttnShape {
        n_queries: 16,
        kv_len: 16,
        n_heads: 2,
        n_kv_heads: 2,
        head_dim: 80,
        causal: false,
    };
    check_attention(shape, 32);
}
