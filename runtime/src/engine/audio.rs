//! The audio half of [`Engine`] on codec codes (spec `ernie5-generation.md` §5.2-5.3): text →
//! codes by next-codec prediction, and codes as a prompt's audio input (understanding). Codes are
//! `[Q][frames]`; the codec (`model/audio_codec/`) turns PCM into codes and back.
//!
//! ```no_run
//! # use ernie_runtime::{Engine, Prompt, GenerateRequest};
//! # use ernie_runtime::infer::next_codec::AudioGenOptions;
//! # fn main() -> ernie_runtime::Result<()> {
//! let engine = Engine::load(std::path::Path::new("ernie5-checkpoint"))?;
//! let msg = tokenizers_mm::ChatMessage { role: "user".into(), content: "Say hello.".into() };
//! let out = engine.generate_audio_codes(&Prompt::Chat(vec![msg]), &AudioGenOptions::default())?;
//! let caption = engine.caption_audio_codes(&out.codes, "What is said?", &GenerateRequest { sampling: Default::default(), max_new_tokens: 32 })?;
//! # Ok(()) }
//! ```

use std::path::Path;

use super::{Engine, Prompt};
use crate::error::unsupported;
use crate::infer::next_codec::{generate_codes, prefill_with_audio, AudioCodes, AudioGenOptions};
use crate::infer::{DeviceCache, GenerateRequest, Generation, Generator, Runner};
use crate::model::audio_codec::{read_audio_bytes, MimiCodec};
use crate::model::audio_lm::{check_codes, AudioLm};
use crate::model::decoder::Logits;
use crate::nn::kv_cache::KvCache;
use crate::{Error, Result};

/// Text before a prompt's first clip: the ERNIE chat format with tokenizers-mm's media label.
const AUDIO_PROMPT_HEAD: &str = "<|begin_of_sentence|>User: Audio 1:";
/// Text after the question: the generation prompt.
const AUDIO_PROMPT_TAIL: &str = "\nAssistant: ";

impl Engine {
    /// The audio parts; [`Error::Request`] naming what is missing.
    pub fn audio(&self) -> Result<&AudioLm> {
        self.audio.as_ref().ok_or_else(|| {
            Error::Request(format!(
                "{} has no audio parts (an `audio` section in config.json and audio.embed_tokens): it cannot take in or generate audio",
                self.dir().display()
            ))
        })
    }

    /// Loads the checkpoint's Mimi codec from `audio_codec/` (spec `ernie5-generation.md` §1,
    /// §5: a transformers Mimi directory; or the folder set with
    /// [`Engine::set_external_parts`]) and checks it fits the `audio` config: the LM's
    /// `num_levels` ≤ the codec's quantizers, its codebook ≤ the codec's.
    ///
    /// Errors: no audio parts; [`Error::Request`] naming `audio_codec/` when it is missing or
    /// does not fit; the codec's load errors.
    pub fn load_audio_codec(&self) -> Result<MimiCodec> {
        let audio = self.audio()?;
        let dir = self.audio_codec_dir();
        if !dir.join("config.json").is_file() && dir != self.dir().join(crate::engine::AUDIO_CODEC_DIR) {
            return Err(Error::Request(format!("{} is not a Mimi codec directory: it has no config.json", dir.display())));
        }
        if !dir.join("config.json").is_file() {
            return Err(Error::Request(format!(
                "{} has no audio_codec/ (a Mimi codec directory with config.json and model.safetensors): it cannot turn audio codes into sound or sound into codes",
                self.dir().display()
            )));
        }
        let codec = MimiCodec::load(&dir)?;
        if audio.num_levels() > codec.num_levels() || audio.codebook_size() > codec.codebook_size() {
            return Err(Error::Request(format!(
                "{}: the codec has {} levels of {} codes, the model's audio config needs {} levels of {}",
                dir.display(),
                codec.num_levels(),
                codec.codebook_size(),
                audio.num_levels(),
                audio.codebook_size()
            )));
        }
        Ok(codec)
    }

    /// The id of the token named `token` (`<|BOA|>` / `<|EOA|>`), or an error naming it.
    fn audio_token(&self, token: &str) -> Result<u32> {
        self.tokenizer()?
            .token_id(token)
            .ok_or_else(|| Error::Request(format!("the tokenizer has no {token} token (audio section of config.json)")))
    }

    /// Generates audio codes `[Q][frames]` for `prompt` (chat messages go through the chat
    /// template) followed by `<|BOA|>` (spec §5.3; [`generate_codes`]).
    pub fn generate_audio_codes(&self, prompt: &Prompt, opts: &AudioGenOptions) -> Result<AudioCodes> {
        self.generate_audio_codes_with(prompt, opts, &mut |_, _| {})
    }

    /// [`Engine::generate_audio_codes`], handing each frame's codes (`[Q]`) to `on_frame` as it
    /// is sampled (a streaming codec decoder plays them).
    ///
    /// Errors: no audio parts or heads; [`Error::Unsupported`] on a CUDA engine (NCP runs on the
    /// CPU); prompt and option errors of [`generate_codes`].
    pub fn generate_audio_codes_with(&self, prompt: &Prompt, opts: &AudioGenOptions, on_frame: &mut dyn FnMut(usize, &[u32])) -> Result<AudioCodes> {
        let audio = self.audio()?;
        audio.heads()?;
        let Runner::Cpu(model) = self.runner() else {
            return Err(unsupported("audio generation on a CUDA device", "run it on the cpu device"));
        };
        let ids = self.encode_prompt(prompt)?;
        let boa = self.audio_token(&audio.cfg.boa_token)?;
        generate_codes(model, audio, &ids, boa, opts, on_frame)
    }

    /// The token ids of an audio question (spec §5.2), and the row of the first frame:
    /// `<|begin_of_sentence|>User: Audio 1:<|BOA|>` + one row per frame + `<|EOA|>` + `text` +
    /// `"\nAssistant: "` (the frame rows hold a filler id; [`Engine::caption_audio_codes`]
    /// replaces their embeddings). `text` never becomes special tokens.
    pub fn audio_prompt_ids(&self, frames: usize, text: &str) -> Result<(Vec<u32>, usize)> {
        self.audio_ids(frames, &format!("{text}{AUDIO_PROMPT_TAIL}"))
    }

    /// [`Engine::audio_prompt_ids`] with `tail` (plain text) in place of the question and the
    /// generation prompt.
    fn audio_ids(&self, frames: usize, tail: &str) -> Result<(Vec<u32>, usize)> {
        let audio = self.audio()?;
        let tok = self.tokenizer()?;
        let (boa, eoa) = (self.audio_token(&audio.cfg.boa_token)?, self.audio_token(&audio.cfg.eoa_token)?);
        let mut ids = tok.encode_with_specials(AUDIO_PROMPT_HEAD)?;
        ids.push(boa);
        let start = ids.len();
        ids.extend(std::iter::repeat_n(0u32, frames));
        ids.push(eoa);
        ids.extend(tok.encode_plain(tail)?);
        Ok((ids, start))
    }

    /// An encoded audio file's bytes as the model's input codes `[num_levels][frames]`: decoded,
    /// downmixed and resampled to the codec rate ([`read_audio_bytes`]; `name` such as
    /// `clip.mp3` is the format hint, a name without extension lets the decoder probe), then
    /// the checkpoint's codec keeps the model's `num_levels` levels.
    ///
    /// Errors: no audio parts or codec ([`Engine::load_audio_codec`]); decoding errors
    /// ([`Error::Tokenizer`], including audio longer than the codec's limit); the codec's errors.
    pub fn audio_codes_from_bytes(&self, bytes: &[u8], name: &Path) -> Result<Vec<Vec<u32>>> {
        let levels = self.audio()?.num_levels();
        let codec = self.load_audio_codec()?;
        codec.encode(&read_audio_bytes(&codec, bytes, name)?, levels) // [Q][frames]
    }

    /// Final normalised hidden states `[t, h]` of an audio clip (codes `[Q][frames]`) followed by
    /// `text`, without the generation prompt: `<|begin_of_sentence|>User: Audio 1:<|BOA|>` +
    /// frames + `<|EOA|>` + `text` (the rows an embedding pools; spec §5.2's input layout).
    ///
    /// Errors: no audio parts; [`Error::Request`] for codes with the wrong level count, unequal
    /// levels, no frames or a code `>= V`, or more tokens than `max_tokens` /
    /// `max_position_embeddings`; [`Error::Unsupported`] on a CUDA engine.
    pub fn audio_hidden_states(&self, codes: &[Vec<u32>], text: &str, max_tokens: Option<usize>) -> Result<Vec<f32>> {
        let audio = self.audio()?;
        let frames = check_codes(codes, audio.num_levels(), audio.codebook_size())?;
        let (ids, start) = self.audio_ids(frames, text)?;
        if let Some(max) = max_tokens {
            if ids.len() > max {
                return Err(Error::Request(format!("{} tokens exceed the limit of {max}", ids.len())));
            }
        }
        let Runner::Cpu(model) = self.runner() else {
            return Err(unsupported("audio input on a CUDA device", "run it on the cpu device"));
        };
        // Rejects lengths above max_position_embeddings with a Request error.
        let mut cache = KvCache::new(&model.cfg, ids.len())?;
        prefill_with_audio(model, audio, &ids, &[(start, codes)], &mut cache, Logits::Hidden) // [t, h]
    }

    /// Answers `text` about an audio clip given as codes `[Q][frames]` (audio understanding:
    /// [`Engine::audio_prompt_ids`], [`prefill_with_audio`], then text decoding as captioning).
    ///
    /// Errors: no audio parts; [`Error::Request`] for codes with the wrong level count, unequal
    /// levels, no frames or a code `>= V`; [`Error::Unsupported`] on a CUDA engine; generation
    /// errors.
    pub fn caption_audio_codes(&self, codes: &[Vec<u32>], text: &str, req: &GenerateRequest) -> Result<Generation> {
        self.start_audio_caption(codes, text, req)?.run(&mut |_| {}, &|| false)
    }

    /// [`Engine::caption_audio_codes`] as a step-wise [`Generator`].
    pub fn start_audio_caption<'e>(&'e self, codes: &[Vec<u32>], text: &str, req: &GenerateRequest) -> Result<Generator<'e>> {
        let audio = self.audio()?;
        let frames = check_codes(codes, audio.num_levels(), audio.codebook_size())?;
        let (ids, start) = self.audio_prompt_ids(frames, text)?;
        Generator::start(self.session(), ids.len(), req, &mut |runner, cache| match (runner, cache) {
            (Runner::Cpu(m), DeviceCache::Cpu(c)) => prefill_with_audio(m, audio, &ids, &[(start, codes)], c, Logits::Last),
            _ => Err(unsupported("audio input on a CUDA device", "run it on the cpu device")),
        })
    }
}
