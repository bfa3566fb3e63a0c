//! The GEMM precision of a loaded decoder (`ernie --bf16-activations`, issue #13 item 1): every
//! projection [`Linear`] of the decoder — attention q/k/v/o, dense and shared SwiGLU MLPs, every
//! routed expert's gate/up/down — and the LM head take the same [`Precision`]. Only dense bf16
//! weights in GEMMs of more than `GEMV_MAX_ROWS` rows (prefill) change kernel; the decode GEMV,
//! f16 / f32 and quantised weights stay exact (`ops/gemm/mod.rs` documents the error bound).
//! Routers, norms and the MTP weights are not `Linear`s of this walk and stay exact.

use crate::model::decoder::{Mlp, Transformer};
use crate::nn::linear::Linear;
use crate::nn::mlp::SwiGlu;
use crate::nn::moe::MoeBlock;
use crate::ops::gemm::Precision;

fn swiglu(m: &mut SwiGlu, p: Precision, n: &mut usize) {
    for l in [&mut m.gate, &mut m.up, &mut m.down] {
        set(l, p, n);
    }
}

fn moe(b: &mut MoeBlock, p: Precision, n: &mut usize) {
    for e in &mut b.experts {
        swiglu(e, p, n);
    }
    if let Some(s) = &mut b.shared {
        swiglu(s, p, n);
    }
}

fn set(l: &mut Linear, p: Precision, n: &mut usize) {
    l.precision = p;
    *n += 1;
}

/// Sets the precision of every projection of `model` (module doc) and returns how many
/// [`Linear`]s it set.
pub fn set_precision(model: &mut Transformer, p: Precision) -> usize {
    let mut n = 0;
    for layer in &mut model.layers {
        let a = &mut layer.self_attn;
        for l in [&mut a.q_proj, &mut a.k_proj, &mut a.v_proj, &mut a.o_proj] {
            set(l, p, &mut n);
        }
        match &mut layer.mlp {
            Mlp::Dense(m) => swiglu(m, p, &mut n),
            Mlp::Moe(b) => moe(b, p, &mut n),
            Mlp::Grouped(g) => {
                for b in &mut g.groups {
                    moe(b, p, &mut n);
                }
                if let Some(s) = &mut g.shared {
                    swiglu(s, p, &mut n);
                }
            }
        }
    }
    set(&mut model.lm_head, p, &mut n);
    n
}
