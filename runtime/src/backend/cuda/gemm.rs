//! Dense projections through cuBLAS (`cublasGemmEx`, f32 compute): the GPU twin of
//! [`crate::ops::matmul_xwt`], plus [`Linear`], a weight (and optional bias) in device memory.
//!
//! Row-major `out[t, n] = x[t, k] · w[n, k]ᵀ` is, in cuBLAS's column-major terms,
//! `outᵀ[n, t] = op(W)[n, k] · Xᵀ[k, t]` with `W` stored column-major as `[k, n]` (ld = k):
//! `transa = T, transb = N, m = n, n = t, k = k, lda = k, ldb = k, ldc = n`. A bias is broadcast
//! into `out` first by a rank-1 GEMM (`bias[n, 1] · ones[1, t]`), then the product accumulates onto
//! it with `beta = 1`; the same `beta = 1` lets a projection add straight into the residual stream.

use std::ffi::c_void;
use std::sync::Arc;

use ernie_kernels::cudarc::cublas::{result as cublas, sys};
use ernie_kernels::cudarc::driver::{CudaSlice, DevicePtr, DevicePtrMut, DeviceRepr};
use half::{bf16, f16};

use super::{cuda_err, CudaDevice};
use crate::tensor::{Elems, Tensor};
use crate::{Error, Result};

/// Element types the GEMMs read or write. Supported (input, output) pairs with f32 compute:
/// (bf16, bf16), (bf16, f32), (f32, f32).
pub trait GemmElem: DeviceRepr {
    const DATA_TYPE: sys::cudaDataType;
}

impl GemmElem for bf16 {
    const DATA_TYPE: sys::cudaDataType = sys::cudaDataType::CUDA_R_16BF;
}

impl GemmElem for f32 {
    const DATA_TYPE: sys::cudaDataType = sys::cudaDataType::CUDA_R_32F;
}

fn int(op: &'static str, what: &str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| Error::ShapeMismatch { op, expected: format!("{what} < 2^31"), got: v.to_string() })
}

/// One `cublasGemmEx` call in column-major terms (see the module doc), alpha = 1.
///
/// # Safety
/// `a`, `b`, `c` must be device pointers of this device holding at least the elements the
/// dimensions and leading dimensions address, of the types given.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_ex(
    dev: &CudaDevice,
    trans_a: bool,
    (m, n, k): (i32, i32, i32),
    (a, a_type, lda): (u64, sys::cudaDataType, i32),
    (b, b_type, ldb): (u64, sys::cudaDataType, i32),
    (c, c_type, ldc): (u64, sys::cudaDataType, i32),
    beta: f32,
) -> Result<()> {
    let alpha = 1.0f32;
    let op_a = if trans_a { sys::cublasOperation_t::CUBLAS_OP_T } else { sys::cublasOperation_t::CUBLAS_OP_N };
    // SAFETY: the caller guarantees the pointers and dimensions (see `# Safety`); alpha and beta
    // are f32 on the host, as CUBLAS_COMPUTE_32F with the default host pointer mode requires; the
    // handle is this device's and is bound to its stream.
    unsafe {
        cublas::gemm_ex(
            *dev.blas().handle(),
            op_a,
            sys::cublasOperation_t::CUBLAS_OP_N,
            m,
            n,
            k,
            (&alpha) as *const f32 as *const c_void,
            a as *const c_void,
            a_type,
            lda,
            b as *const c_void,
            b_type,
            ldb,
            (&beta) as *const f32 as *const c_void,
            c as *mut c_void,
            c_type,
            ldc,
            sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
        )
    }
    .map_err(cuda_err("cublasGemmEx"))
}

/// `out[t, n] (+)= x[t, k] · w[n, k]ᵀ` on the device; `accumulate` adds onto `out` (beta = 1).
///
/// - `x` `[t, k]`, `w` `[n, k]` (bf16 or f32, the same), `out` `[t, n]` (bf16 or f32; f32 input
///   needs f32 output), f32 accumulation
///
/// Errors: [`Error::ShapeMismatch`] for lengths that disagree with `n`, `k`, or sizes past i32;
/// [`Error::Cuda`] for an unsupported dtype pair or a cuBLAS failure.
pub fn matmul_xwt<I, O, X, W, Y>(dev: &CudaDevice, x: &X, w: &W, out: &mut Y, n: usize, k: usize, accumulate: bool) -> Result<()>
where
    I: GemmElem,
    O: GemmElem,
    X: DevicePtr<I>,
    W: DevicePtr<I>,
    Y: DevicePtrMut<O>,
{
    const OP: &str = "cuda::matmul_xwt";
    if I::DATA_TYPE == sys::cudaDataType::CUDA_R_32F && O::DATA_TYPE != sys::cudaDataType::CUDA_R_32F {
        return Err(Error::Cuda { op: OP, message: "f32 inputs need an f32 output".into() });
    }
    if k == 0 || x.len() % k != 0 || w.len() != n * k || out.len() != (x.len() / k) * n {
        return Err(Error::ShapeMismatch {
            op: OP,
            expected: format!("x [t, {k}], w [{n}, {k}], out [t, {n}]"),
            got: format!("x {}, w {}, out {} elements", x.len(), w.len(), out.len()),
        });
    }
    let t = x.len() / k;
    if t == 0 || n == 0 {
        return Ok(());
    }
    let (n32, t32, k32) = (int(OP, "n", n)?, int(OP, "t", t)?, int(OP, "k", k)?);
    let stream = dev.stream();
    let (w_ptr, _w_rec) = w.device_ptr(stream);
    let (x_ptr, _x_rec) = x.device_ptr(stream);
    let (y_ptr, _y_rec) = out.device_ptr_mut(stream);
    // SAFETY: w holds n*k, x t*k and out t*n elements (checked above) of the types named; the
    // pointers belong to `dev`'s context and stay alive (borrowed) until the records drop after the
    // call is queued on the same stream.
    unsafe {
        gemm_ex(
            dev,
            true,
            (n32, t32, k32),
            (w_ptr, I::DATA_TYPE, k32),
            (x_ptr, I::DATA_TYPE, k32),
            (y_ptr, O::DATA_TYPE, n32),
            if accumulate { 1.0 } else { 0.0 },
        )
    }
}

/// `out[r, :] (+)= bias` for every row r of `out` (`[t, n]`, `bias` `[n]` bf16): a rank-1 GEMM
/// `bias[n, 1] · ones[1, t]`. Errors as [`matmul_xwt`].
pub fn add_bias_rows<O: GemmElem, Y: DevicePtrMut<O>>(
    dev: &CudaDevice,
    bias: &CudaSlice<bf16>,
    out: &mut Y,
    accumulate: bool,
) -> Result<()> {
    const OP: &str = "cuda::add_bias_rows";
    let n = bias.len();
    if n == 0 || out.len() % n != 0 {
        return Err(Error::ShapeMismatch { op: OP, expected: format!("out [t, {n}]"), got: format!("{} elements", out.len()) });
    }
    let t = out.len() / n;
    if t == 0 {
        return Ok(());
    }
    let (n32, t32) = (int(OP, "n", n)?, int(OP, "t", t)?);
    dev.with_ones(t, |ones| {
        let stream = dev.stream();
        let (b_ptr, _b_rec) = bias.device_ptr(stream);
        let (o_ptr, _o_rec) = ones.device_ptr(stream);
        let (y_ptr, _y_rec) = out.device_ptr_mut(stream);
        // SAFETY: bias holds n, ones at least t (with_ones), out t*n elements (checked above);
        // A = bias as an [n, 1] column (lda n), B = ones as a [1, t] row (ldb 1), C = out (ldc n).
        unsafe {
            gemm_ex(
                dev,
                false,
                (n32, t32, 1),
                (b_ptr, sys::cudaDataType::CUDA_R_16BF, n32),
                (o_ptr, sys::cudaDataType::CUDA_R_16BF, 1),
                (y_ptr, O::DATA_TYPE, n32),
                if accumulate { 1.0 } else { 0.0 },
            )
        }
    })
}

/// A `[n, k]` projection weight (PyTorch `Linear` layout) in bf16 on the device, with its bias.
pub struct Linear {
    /// `[n, k]`; shared (`Arc`) so a tied head and the embedding use one copy.
    pub w: Arc<CudaSlice<bf16>>,
    /// `[n]`
    pub bias: Option<CudaSlice<bf16>>,
    /// Output width `n`.
    pub n: usize,
    /// Input width `k`.
    pub k: usize,
}

impl Linear {
    /// Uploads `w` (`[n, k]`, any dtype → bf16) and `bias` (`[n]`).
    /// Errors: [`Error::ShapeMismatch`] (not 2-D, bias length), [`Error::Cuda`] (allocation).
    pub fn upload(dev: &CudaDevice, w: &Tensor, bias: Option<&[f32]>) -> Result<Linear> {
        Linear::upload_rows(dev, &[(w, bias)])
    }

    /// Uploads several `[n_i, k]` weights stacked along rows (`[Σ n_i, k]`), e.g. gate and up
    /// projections as one `[2i, h]` GEMM; biases are stacked the same way (all or none).
    /// Errors as [`Linear::upload`], plus parts that disagree on `k` or on having a bias.
    pub fn upload_rows(dev: &CudaDevice, parts: &[(&Tensor, Option<&[f32]>)]) -> Result<Linear> {
        const OP: &str = "cuda::Linear::upload";
        let k = match parts.first() {
            Some((w, _)) => w.dims2()?.1,
            None => return Err(Error::ShapeMismatch { op: OP, expected: "at least one weight".into(), got: "none".into() }),
        };
        let with_bias = parts.iter().filter(|(_, b)| b.is_some()).count();
        if with_bias != 0 && with_bias != parts.len() {
            return Err(Error::ShapeMismatch {
                op: OP,
                expected: "a bias on every stacked part or none".into(),
                got: format!("{with_bias} of {}", parts.len()),
            });
        }
        let mut host: Vec<bf16> = Vec::new();
        let mut bias: Vec<bf16> = Vec::new();
        let mut n = 0;
        for (w, b) in parts {
            let (rows, cols) = w.dims2()?;
            if cols != k {
                return Err(Error::ShapeMismatch { op: OP, expected: format!("[_, {k}]"), got: format!("{:?}", w.shape()) });
            }
            extend_bf16(&mut host, w)?;
            if let Some(b) = b {
                if b.len() != rows {
                    return Err(Error::ShapeMismatch { op: OP, expected: format!("bias [{rows}]"), got: format!("[{}]", b.len()) });
                }
                bias.extend(b.iter().map(|&v| bf16::from_f32(v)));
            }
            n += rows;
        }
        let bias = if with_bias > 0 { Some(dev.upload(&bias)?) } else { None };
        Ok(Linear { w: Arc::new(dev.upload(&host)?), bias, n, k })
    }

    /// `out[t, n] (+)= x[t, k] · wᵀ + bias`; with `accumulate` the result adds onto `out` (the
    /// residual update). Errors as [`matmul_xwt`].
    pub fn forward<O, X, Y>(&self, dev: &CudaDevice, x: &X, out: &mut Y, accumulate: bool) -> Result<()>
    where
        O: GemmElem,
        X: DevicePtr<bf16>,
        Y: DevicePtrMut<O>,
    {
        let accumulate = match &self.bias {
            Some(b) => {
                add_bias_rows(dev, b, out, accumulate)?;
                true
            }
            None => accumulate,
        };
        matmul_xwt(dev, x, &*self.w, out, self.n, self.k, accumulate)
    }
}

/// Appends `t`'s elements as bf16 (a copy of bf16 data, a rounding of f32 / f16).
/// Errors: [`Error::Cuda`] for a shape-only placeholder (a missing tensor).
pub(crate) fn extend_bf16(dst: &mut Vec<bf16>, t: &Tensor) -> Result<()> {
    let before = dst.len();
    match t.elems() {
        Elems::Bf16(s) => dst.extend_from_slice(s),
        Elems::F32(s) => dst.extend(s.iter().map(|&v| bf16::from_f32(v))),
        Elems::F16(s) => dst.extend(s.iter().map(|v: &f16| bf16::from_f32(v.to_f32()))),
    }
    if dst.len() - before != t.numel() {
        return Err(Error::Cuda { op: "upload", message: format!("tensor {:?} has no data", t.shape()) });
    }
    Ok(())
}

/// Uploads a tensor as bf16 (no host copy when it is already bf16).
pub(crate) fn upload_bf16(dev: &CudaDevice, t: &Tensor) -> Result<CudaSlice<bf16>> {
    match t.elems() {
        Elems::Bf16(s) if s.len() == t.numel() => dev.upload(s),
        _ => {
            let mut host = Vec::with_capacity(t.numel());
            extend_bf16(&mut host, t)?;
            dev.upload(&host)
        }
    }
}
