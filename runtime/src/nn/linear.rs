//! The one projection type: `y = x·Wᵀ + b` with `W` `[out, in]` (PyTorch `Linear` layout) and an
//! optional bias. Attention, the SwiGLU MLPs (dense, routed experts, shared experts), the vision
//! tower and the resampler all hold their projections as [`Linear`], and the CUDA mirror uploads
//! from it, so a new weight storage (e.g. a quantised block format) changes this file, not six.

use crate::ops::gemm::{Precision, WeightRef, GEMV_MAX_ROWS};
use crate::ops::matmul_xwt_slow;
use crate::ops::quant::{qgemv_batch, qmatmul_int8, qmatmul_xwt_slow, QGemvJob, QType, QWeight};
use crate::tensor::Tensor;
use crate::weights::Weights;
use crate::{Error, Result};

/// How a [`Linear`] stores `W` `[out, in]`.
#[derive(Clone, Debug)]
pub enum LinearWeight {
    /// f32 / bf16 / f16 (upcast to f32 inside the GEMM): the checkpoint's own tensor.
    Dense(Tensor),
    /// A ggml block format (weight-only quantisation, `ops/quant/`): `x` stays f32 and is
    /// quantised to Q8 per row inside [`crate::ops::quant::qmatmul_xwt`].
    Quant(QWeight),
}

impl From<Tensor> for LinearWeight {
    fn from(t: Tensor) -> LinearWeight {
        LinearWeight::Dense(t)
    }
}

impl LinearWeight {
    /// `(out, in)`. Errors: a dense weight that is not 2-D.
    pub fn dims(&self) -> Result<(usize, usize)> {
        match self {
            LinearWeight::Dense(t) => t.dims2(),
            LinearWeight::Quant(q) => Ok(q.dims()),
        }
    }

    /// The dense tensor. Errors: [`Error::Unsupported`] for a quantised weight (the CUDA mirror
    /// uploads dense weights only).
    pub fn dense(&self) -> Result<&Tensor> {
        match self {
            LinearWeight::Dense(t) => Ok(t),
            LinearWeight::Quant(q) => Err(crate::error::unsupported(
                format!("a quantised weight ({}) on this path", q.qtype()),
                "load without --quant",
            )),
        }
    }

    /// The block format, `None` when dense.
    pub fn qtype(&self) -> Option<QType> {
        match self {
            LinearWeight::Dense(_) => None,
            LinearWeight::Quant(q) => Some(q.qtype()),
        }
    }
}

/// A linear layer `y = x Wᵀ + b`.
pub struct Linear {
    /// `[out, in]`, dense or quantised.
    pub weight: LinearWeight,
    /// `[out]` f32.
    pub bias: Option<Vec<f32>>,
    /// The GEMM precision of a dense bf16 weight ([`Precision::Exact`] unless the model was
    /// switched, e.g. `ernie --bf16-activations`); quantised weights and the GEMV ignore it.
    pub precision: Precision,
}

impl Linear {
    /// A projection from its parts. Errors: [`Error::ShapeMismatch`] when `weight` is not 2-D or
    /// the bias length is not its row count.
    pub fn new(weight: Tensor, bias: Option<Vec<f32>>) -> Result<Linear> {
        let (out, _) = weight.dims2()?;
        let weight = LinearWeight::Dense(weight);
        if let Some(b) = &bias {
            if b.len() != out {
                return Err(Error::ShapeMismatch { op: "Linear::new", expected: format!("bias [{out}]"), got: format!("[{}]", b.len()) });
            }
        }
        Ok(Linear::of(weight, bias))
    }

    /// A projection from a weight and bias taken as they are (callers that read the weight with a
    /// checked shape), at [`Precision::Exact`].
    pub fn of(weight: impl Into<LinearWeight>, bias: Option<Vec<f32>>) -> Linear {
        Linear { weight: weight.into(), bias, precision: Precision::Exact }
    }

    /// Loads `{prefix}.weight` `[out, in]` and, when `bias`, `{prefix}.bias` `[out]`.
    /// Errors: [`Error::TensorShape`]; a missing tensor is recorded for [`Weights::finish`].
    pub fn load(w: &mut Weights, prefix: &str, out: usize, inp: usize, bias: bool) -> Result<Linear> {
        let weight = w.take(&format!("{prefix}.weight"), &[out, inp])?;
        let bias = load_bias(w, &format!("{prefix}.bias"), out, bias)?;
        Ok(Linear::of(weight, bias))
    }

    /// Replaces a dense `W` by its `qtype` quantisation (ggml's reference quantizer, rows in
    /// parallel). A weight whose `in` is not a multiple of the block size (32 for Q8_0, 256 for the
    /// K-quants), or that is already quantised, stays as it is; returns whether it was quantised.
    /// Errors: as [`QWeight::quantize`] (a dense weight that is not 2-D).
    pub fn quantize(&mut self, qtype: QType) -> Result<bool> {
        let LinearWeight::Dense(t) = &self.weight else { return Ok(false) };
        let (_, inp) = t.dims2()?;
        if inp % qtype.block_elems() != 0 {
            return Ok(false); // no partial blocks in ggml's formats: keep this one dense
        }
        let q = QWeight::quantize(t, qtype)?;
        // The dense source is not read again: its mmapped pages leave the resident set now, so
        // quantising at load holds one tensor's 16-bit pages at a time, not the whole checkpoint.
        t.release_pages();
        self.weight = LinearWeight::Quant(q);
        Ok(true)
    }

    /// Output width (`out`).
    pub fn out_dim(&self) -> usize {
        self.weight.dims().map(|d| d.0).unwrap_or(0)
    }

    /// Input width (`in`).
    pub fn in_dim(&self) -> usize {
        self.weight.dims().map(|d| d.1).unwrap_or(0)
    }

    /// The dense weight as a [`WeightRef`] (`[out, in]`), `None` when quantised: for callers that
    /// batch several projections into one [`crate::ops::gemm::gemv_batch`] pass.
    pub fn dense_ref(&self) -> Option<WeightRef<'_>> {
        match &self.weight {
            LinearWeight::Dense(t) => Some(WeightRef::of(t)),
            LinearWeight::Quant(_) => None,
        }
    }

    /// `x`: `[t, in]` → `[t, out]`. Dense weights take [`crate::ops::gemm::matmul_with`] at
    /// [`Linear::precision`] (packed GEMM, or the streaming GEMV for `t ≤ 4`); quantised ones
    /// [`qgemv_batch`] for `t ≤ 4` and above that [`qmatmul_int8`] (the integer GEMM: the same
    /// quantised activations and integers as the block dots of
    /// [`crate::ops::quant::qmatmul_xwt`]; on CPUs without AVX-512 VNNI the dequantised f32
    /// panels or those block dots). The slow twin for every row count is [`qmatmul_xwt_slow`]:
    /// `deq(W)` against f32 activations in f64.
    /// Errors: [`Error::ShapeMismatch`] when `x` is not a whole number of rows.
    pub fn forward(&self, x: &[f32]) -> Result<Vec<f32>> {
        let (out, inp) = self.weight.dims()?;
        let mut y = vec![0.0f32; x.len() / inp.max(1) * out]; // [t, out]
        match &self.weight {
            LinearWeight::Dense(w) => crate::ops::gemm::matmul_with(x, w, &mut y, self.precision)?,
            // Decode: the batch GEMV reuses its per-thread activation buffers (no allocation).
            LinearWeight::Quant(q) if x.len() <= GEMV_MAX_ROWS * inp => {
                qgemv_batch(&[QGemvJob::new(q, x, x.len() / inp.max(1), &mut y)])?
            }
            // Prefill: the integer GEMM (ops/quant/igemm.rs; it picks the fallbacks).
            LinearWeight::Quant(q) => qmatmul_int8(x, q, &mut y)?,
        }
        add_bias(&mut y, self.bias.as_deref());
        Ok(y)
    }

    /// Slow twin of [`Linear::forward`] ([`matmul_xwt_slow`]; quantised: [`qmatmul_xwt_slow`]).
    pub fn forward_slow(&self, x: &[f32]) -> Result<Vec<f32>> {
        let (out, inp) = self.weight.dims()?;
        let mut y = vec![0.0f32; x.len() / inp.max(1) * out]; // [t, out]
        match &self.weight {
            LinearWeight::Dense(w) => matmul_xwt_slow(x, w, &mut y)?,
            LinearWeight::Quant(q) => qmatmul_xwt_slow(x, q, &mut y)?,
        }
        add_bias(&mut y, self.bias.as_deref());
        Ok(y)
    }
}

/// Takes bias `name` (`[len]`, f32) when `use_bias`, else `None` (ERNIE's `use_bias` config key).
pub(crate) fn load_bias(w: &mut Weights, name: &str, len: usize, use_bias: bool) -> Result<Option<Vec<f32>>> {
    if use_bias {
        w.take_f32(name, &[len]).map(Some)
    } else {
        Ok(None)
    }
}

/// Adds `bias` (`[n]`) to every row of `y` (`[t, n]`).
pub fn add_bias(y: &mut [f32], bias: Option<&[f32]>) {
    if let Some(b) = bias {
        for row in y.chunks_exact_mut(b.len()) {
            row.iter_mut().zip(b).for_each(|(v, b)| *v += b);
        }
    }
}
