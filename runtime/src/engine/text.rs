//! The text half of [`Engine`]: where requests run ([`Engine::to_device`]), plain generation
//! (prefill + [`Generator`] steps) and MTP self-speculative decoding. The loops themselves are in
//! `infer/`; these methods hand them the engine's [`crate::infer::Session`].

use super::Engine;
use crate::backend::{Device, DeviceSpec};
use crate::infer::speculative::{self, DraftMode, DraftStats, Drafter};
use crate::infer::{generate, DeviceCache, GenerateRequest, Generation, Generator};
use crate::model::cuda::CudaModel;
use crate::model::decoder::Logits;
use crate::model::mtp::Mtp;
use crate::nn::kv_cache::KvCache;
use crate::ops::gemm::{Kernel, Precision};
use crate::Result;

impl Engine {
    /// Moves generation to `device`: for CUDA, uploads the weights once (bf16) and keeps them
    /// beside the CPU model; for CPU, drops any GPU copy. Requests then run there (the device is
    /// chosen once per model, not per op).
    ///
    /// Errors: [`crate::Error::CudaUnavailable`] / [`crate::Error::Cuda`] when the upload fails
    /// (out of memory), [`crate::Error::Config`] for shapes the kernels do not support (such as
    /// expert biases), [`crate::Error::Unsupported`] for routing-group (VL) layers.
    pub fn to_device(&mut self, device: &Device) -> Result<()> {
        self.gpu = match device {
            Device::Cpu => None,
            // The GPU mirror uploads dense weights only; a quantised embedding has no dense copy.
            Device::Cuda(_) if self.model.embed_quant.is_some() => {
                return Err(crate::error::unsupported("a quantised GGUF model on a GPU", "run it with --device cpu"))
            }
            Device::Cuda(dev) => Some(CudaModel::upload(&self.model, dev)?),
        };
        Ok(())
    }

    /// Sets the CPU GEMM precision of the decoder's projections (`model/precision.rs`):
    /// [`Precision::Bf16Activations`] rounds the activations of bf16-weight prefill GEMMs to bf16
    /// (`vdpbf16ps`, error bound in `ops/gemm`'s module doc), [`Precision::Exact`] (the default)
    /// restores the exact kernels. Returns the kernel those GEMMs now run: the exact kernel of this
    /// CPU when it lacks `avx512_bf16`. The vision tower and a GPU copy are not affected.
    pub fn set_precision(&mut self, precision: Precision) -> Kernel {
        crate::model::precision::set_precision(&mut self.model, precision);
        Kernel::detect(precision)
    }

    /// Where generation runs.
    pub fn device(&self) -> DeviceSpec {
        self.runner().device()
    }

    /// A KV cache for `max_seq` positions on the engine's device.
    /// Errors: as [`KvCache::new`] (0 or more than `max_position_embeddings`), device allocation.
    pub fn new_cache(&self, max_seq: usize) -> Result<DeviceCache> {
        self.runner().new_cache(max_seq)
    }

    /// One forward pass of `tokens` on the engine's device, appending them to `cache`; returns what
    /// [`crate::Transformer::forward`] returns for `which` (f32, on the host).
    ///
    /// Errors: those of the forward pass, and [`crate::Error::Request`] when `cache` belongs to
    /// another device than the engine's (made before [`Engine::to_device`]).
    pub fn forward(&self, tokens: &[u32], cache: &mut DeviceCache, which: Logits) -> Result<Vec<f32>> {
        self.runner().forward(tokens, cache, which, None)
    }

    /// Generates from `prompt_ids`: one prefill forward over the whole prompt, then one decode
    /// step per token until an eos id or the budget. `on_text` receives text deltas as they become
    /// valid UTF-8 (never when the checkpoint has no tokenizer).
    ///
    /// The steps are [`Engine::start_generation`] and [`Generator::step`], the one decode loop of
    /// the crate (the server drives the same steps itself).
    ///
    /// Errors: [`crate::Error::Request`] for an empty prompt, a prompt with no room under
    /// `max_position_embeddings`, bad sampling values or an id outside the vocabulary.
    pub fn generate(&self, prompt_ids: &[u32], req: &GenerateRequest, on_text: &mut dyn FnMut(&str)) -> Result<Generation> {
        self.generate_cancellable(prompt_ids, req, on_text, &|| false)
    }

    /// [`Engine::generate`] that asks `should_stop` before every decode step and ends with
    /// [`crate::StopReason::Cancelled`] when it says yes (the tokens so far are kept).
    pub fn generate_cancellable(
        &self,
        prompt_ids: &[u32],
        req: &GenerateRequest,
        on_text: &mut dyn FnMut(&str),
        should_stop: &dyn Fn() -> bool,
    ) -> Result<Generation> {
        generate(self.session(), prompt_ids, req, on_text, should_stop)
    }

    /// Validates the request and runs the prefill forward; the returned [`Generator`] yields the
    /// new tokens one [`Generator::step`] at a time.
    ///
    /// Errors: as [`Engine::generate`] (empty prompt, no room under `max_position_embeddings`,
    /// bad sampling values, token ids out of range).
    pub fn start_generation(&self, prompt_ids: &[u32], req: &GenerateRequest) -> Result<Generator<'_>> {
        Generator::start(self.session(), prompt_ids.len(), req, &mut |runner, cache| runner.forward(prompt_ids, cache, Logits::Last, None))
    }

    /// The MTP draft module, when the checkpoint ships one.
    pub fn mtp(&self) -> Result<Option<Mtp>> {
        Mtp::from_model(&self.model)
    }

    /// [`Engine::generate`] with MTP self-speculative decoding on the engine's device
    /// ([`speculative::generate_speculative`]): with [`DraftMode::Off`], or `Auto` on a checkpoint
    /// without MTP tensors or on a CUDA device, it is plain decoding there.
    ///
    /// Errors: as [`Engine::generate`]; [`crate::Error::InvalidOption`] (`draft_tokens`) for
    /// `Fixed(d)` on a checkpoint without MTP; [`crate::Error::Unsupported`] for `Fixed(d)` on a
    /// CUDA device.
    pub fn generate_speculative(
        &self,
        prompt_ids: &[u32],
        req: &GenerateRequest,
        mode: DraftMode,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<(Generation, DraftStats)> {
        if self.gguf && matches!(mode, DraftMode::Fixed(_)) {
            return Err(crate::error::option_err(
                "draft_tokens",
                "GGUF files have no MTP module (llama.cpp's converter drops the MTP tensors): draft from the safetensors checkpoint, or decode without drafting",
            ));
        }
        let mtp = self.mtp()?;
        speculative::generate_speculative(self.session(), mtp.as_ref(), prompt_ids, req, mode, on_text)
    }

    /// The speculative loop over any [`Drafter`] and a caller-owned CPU cache (tests inspect it
    /// afterwards) on the CPU model: see [`speculative::generate_speculative_with`].
    pub fn generate_speculative_with(
        &self,
        prompt_ids: &[u32],
        req: &GenerateRequest,
        mode: DraftMode,
        drafter: &mut dyn Drafter,
        cache: &mut KvCache,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<(Generation, DraftStats)> {
        speculative::generate_speculative_with(self.session(), &self.model, prompt_ids, req, mode, drafter, cache, on_text)
    }
}
