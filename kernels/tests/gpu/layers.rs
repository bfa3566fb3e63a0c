//! Routing grid, rmsnorm, rope, attention, embedding and elementwise kernels on the GPU.

use ernie_kernels::attention::AttentionDims;
use ernie_kernels::rmsnorm::NormDims;
use ernie_kernels::rope::RopeDims;
use ernie_kernels::routing::RouteDims;
use half::bf16;

use crate::reference::*;
use crate::{gpu, Gpu, NORM_MIN, ROUTE_RTOL};

const ONE_ULP_RTOL: f32 = 8e-3;
const RMS_NORM_RTOL: f32 = 2.0 * ONE_ULP_RTOL;
const ATTN_ATOL: f32 = 2e-3;
const ATTN_RTOL: f32 = 1e-2;
const THETA: f32 = 500_000.0;

fn route(g: &Gpu, logits: &[f32], bias: &[f32], dims: RouteDims) -> (Vec<u32>, Vec<f32>) {
    let n = dims.n_tokens * dims.top_k;
    let (l, b) = (g.upload(logits), g.upload(bias));
    let (mut ids, mut w) = (g.zeros::<u32>(n), g.zeros::<f32>(n));
    g.kernels
        .moe_route(
            &g.stream,
            &l.as_view(),
            &b.as_view(),
            &mut ids.as_view_mut(),
            &mut w.as_view_mut(),
            dims,
            NORM_MIN,
        )
        .unwrap();
    (g.download(&ids), g.download(&w))
}

#[test]
fn gpu_route_grid_and_ties() {
    let Some(g) = gpu() else { return };
    let cases = [
        (1, 64, 6),
        (33, 60, 6),
        (511, 64, 8),
        (511, 60, 1),
        (33, 256, 8),
        (33, 5, 5),
        (1, 1, 1),
    ];
    for (i, &(n_tokens, n_experts, top_k)) in cases.iter().enumerate() {
        let mut rng = XorShift(0x5eed ^ i as u64);
        let logits = rng.vec(n_tokens * n_experts, 3.0);
        let bias = rng.vec(n_experts, 0.05);
        let (ids, w) = route(
            &g,
            &logits,
            &bias,
            RouteDims {
                n_tokens,
                n_experts,
                top_k,
            },
        );
        let (want_ids, want_w) = reference_route(&logits, &bias, n_experts, top_k, NORM_MIN);
        assert_eq!(ids, want_ids, "T={n_tokens} E={n_experts} k={top_k}");
        for (a, b) in w.iter().zip(&want_w) {
            assert!((a - b).abs() <= ROUTE_RTOL * b.abs() + 1e-30);
        }
    }
    let (ids, _) = route(
        &g,
        &[0.5; 120],
        &[0.0; 60],
        RouteDims {
            n_tokens: 2,
            n_experts: 60,
            top_k: 6,
        },
    );
    assert_eq!(
        ids,
        [0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5],
        "all-equal scores: lowest indices"
    );
}

#[test]
fn gpu_rms_norm_rope_embedding_elementwise() {
    let Some(g) = gpu() else { return };
    let (s, k) = (&g.stream, &g.kernels);
    let mut rng = XorShift(7);

    for (n_rows, hidden) in [(1, 2560), (33, 200), (511, 64)] {
        let (x, w) = (rng.bf16s(n_rows * hidden, 4.0), rng.bf16s(hidden, 1.5));
        let (xd, wd) = (g.upload(&x), g.upload(&w));
        let mut od = g.zeros::<bf16>(x.len());
        let dims = NormDims {
            n_rows,
            hidden,
            eps: 1e-5,
        };
        k.rms_norm(s, &xd.as_view(), &wd.as_view(), &mut od.as_view_mut(), dims)
            .unwrap();
        let want = reference_rms_norm(&x, &w, hidden, 1e-5);
        assert_close(
            &format!("rmsnorm {n_rows}x{hidden}"),
            &g.download(&od),
            &want,
            1e-6,
            RMS_NORM_RTOL,
        );
    }

    for (n_tokens, n_heads, head_dim) in [(1, 20, 128), (33, 4, 128), (511, 2, 64), (33, 3, 80)] {
        let x = rng.bf16s(n_tokens * n_heads * head_dim, 2.0);
        let pos: Vec<u32> = (0..n_tokens as u32).map(|t| (t * 4099) % 131_072).collect();
        let dims = RopeDims {
            n_tokens,
            n_heads,
            head_dim,
            theta: THETA,
        };
        let mut xd = g.upload(&x);
        k.rope(s, &mut xd.as_view_mut(), &g.upload(&pos).as_view(), dims)
            .unwrap();
        let mut want = x.clone();
        reference_rope(&mut want, &pos, n_heads, head_dim, THETA, None);
        assert_close("rope", &g.download(&xd), &want, 0.0, ONE_ULP_RTOL);

        let f = 20.min(head_dim / 2);
        let thw: Vec<u32> = (0..n_tokens as u32)
            .flat_map(|t| [t, 100 + t % 7, 200 + t / 7])
            .collect();
        let mut xd = g.upload(&x);
        k.rope_3d(s, &mut xd.as_view_mut(), &g.upload(&thw).as_view(), dims, f)
            .unwrap();
        let mut want = x.clone();
        reference_rope(&mut want, &thw, n_heads, head_dim, THETA, Some(f));
        assert_close("rope_3d", &g.download(&xd), &want, 0.0, ONE_ULP_RTOL);
    }

    let (vocab, hidden) = (512, 72);
    let table = rng.bf16s(vocab * hidden, 1.0);
    let ids: Vec<u32> = vec![0, 511, 7, 7, 600]; // 600 >= vocab: a zero row
    let mut od = g.zeros::<bf16>(ids.len() * hidden);
    k.embedding(
        s,
        &g.upload(&table).as_view(),
        &g.upload(&ids).as_view(),
        &mut od.as_view_mut(),
        vocab,
        hidden,
    )
    .unwrap();
    let out = g.download(&od);
    for (t, &id) in ids.iter().enumerate() {
        let row = &out[t * hidden..][..hidden];
        if (id as usize) < vocab {
            assert_eq!(row, &table[id as usize * hidden..][..hidden]);
        } else {
            assert!(row.iter().all(|v| *v == bf16::ZERO));
        }
    }

    let n = 1000;
    let (a, b) = (rng.bf16s(n, 3.0), rng.bf16s(n, 3.0));
    let (ad, bd) = (g.upload(&a), g.upload(&b));
    let mut od = g.zeros::<bf16>(n);
    k.add(s, &ad.as_view(), &bd.as_view(), &mut od.as_view_mut())
        .unwrap();
    let want: Vec<bf16> = a
        .iter()
        .zip(&b)
        .map(|(x, y)| bf16::from_f32(x.to_f32() + y.to_f32()))
        .collect();
    assert_eq!(g.download(&od), want, "add");
    let mut accd = g.upload(&a);
    k.add_inplace(s, &mut accd.as_view_mut(), &bd.as_view())
        .unwrap();
    assert_eq!(g.download(&accd), want, "add_inplace");
    k.silu_mul(s, &ad.as_view(), &bd.as_view(), &mut od.as_view_mut())
        .unwrap();
    let want: Vec<bf16> = a
        .iter()
        .zip(&b)
        .map(|(x, y)| bf16::from_f32(silu(x.to_f32()) * y.to_f32()))
        .collect();
    assert_close("silu_mul", &g.download(&od), &want, 1e-6, ONE_ULP_RTOL);
    let mut od = g.zeros::<bf16>(n / 2);
    k.silu_mul_fused(s, &ad.as_view(), &mut od.as_view_mut(), 10, 50)
        .unwrap();
    let want: Vec<bf16> = (0..n / 2)
        .map(|i| {
            let (row, j) = (i / 50, i % 50);
            bf16::from_f32(silu(a[row * 100 + j].to_f32()) * a[row * 100 + 50 + j].to_f32())
        })
        .collect();
    assert_close(
        "silu_mul_fused",
        &g.download(&od),
        &want,
        1e-6,
        ONE_ULP_RTOL,
    );
}

#[test]
fn gpu_attention_decode_and_prefill() {
    let Some(g) = gpu() else { return };
    let shapes = [
        AttnShape {
            n_queries: 1,
            kv_len: 1,
            n_heads: 20,
            n_kv_heads: 4,
            head_dim: 128,
            causal: true,
        },
        AttnShape {
            n_queries: 1,
            kv_len: 511,
            n_heads: 20,
            n_kv_heads: 4,
            head_dim: 128,
            causal: true,
        },
        AttnShape {
            n_queries: 1,
            kv_len: 4099,
            n_heads: 20,
            n_kv_heads: 4,
            head_dim: 128,
            causal: true,
        },
        AttnShape {
            n_queries: 33,
            kv_len: 33,
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: 64,
            causal: true,
        },
        AttnShape {
            n_queries: 33,
            kv_len: 50,
            n_heads: 2,
            n_kv_heads: 1,
            head_dim: 128,
            causal: true,
        },
        AttnShape {
            n_queries: 16,
            kv_len: 16,
            n_heads: 16,
            n_kv_heads: 16,
            head_dim: 80,
            causal: false,
        },
    ];
    for (i, shape) in shapes.into_iter().enumerate() {
        let mut rng = XorShift(40 + i as u64);
        let d = shape.head_dim;
        let rows = (shape.kv_len + 7) * shape.n_kv_heads * d;
        let q = rng.bf16s(shape.n_queries * shape.n_heads * d, 1.0);
        let (mut kc, mut vc) = (rng.bf16s(rows, 1.0), rng.bf16s(rows, 1.0));
        let valid = shape.kv_len * shape.n_kv_heads * d;
        for x in kc[valid..].iter_mut().chain(vc[valid..].iter_mut()) {
            *x = bf16::NAN; // rows past kv_len must never be read
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
        let mut od = g.zeros::<bf16>(q.len());
        let (qd, kd, vd) = (g.upload(&q), g.upload(&kc), g.upload(&vc));
        g.kernels
            .attention(
                &g.stream,
                &qd.as_view(),
                &kd.as_view(),
                &vd.as_view(),
                &mut od.as_view_mut(),
                dims,
            )
            .unwrap();
        let want = reference_attention(&q, &kc, &vc, &shape, scale);
        assert_close(
            &format!("attention case {i}"),
            &g.download(&od),
            &want,
            ATTN_ATOL,
            ATTN_RTOL,
        );
    }
}
