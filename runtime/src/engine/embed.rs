//! Embeddings: [`Engine::embed`] turns each input into one vector pooled from the decoder's final
//! normalised hidden states (`Transformer::forward(.., Logits::Hidden, ..)`, `[t, h]`), with no
//! LM head and no cache kept afterwards.
//!
//! Per input, in order:
//! 1. tokenize: text as untrusted plain text ([`TextTokenizer::encode_plain`]: special-token text
//!    stays literal, no BOS/EOS added), or ids as given;
//! 2. for [`Pooling::EndOfSentence`], append the `<|end_of_sentence|>` id;
//! 3. one forward pass on the engine's device → hidden `[t, h]`;
//! 4. pool → `[h]` (rule on [`Pooling`]);
//! 5. truncate to `dimensions` → `[d]` (Matryoshka style, as OpenAI's `dimensions`);
//! 6. L2-normalise when asked (after truncation, so the returned vector has unit norm).
//!
//! Each input runs its own forward pass over a cache sized to it. Packing several inputs into one
//! forward (block-diagonal causal mask) is a later step; the results will not change.
//!
//! [`TextTokenizer::encode_plain`]: tokenizers_mm::TextTokenizer::encode_plain

use tokenizers_mm::StreamPrompt;

use super::Engine;
use crate::error::unsupported;
use crate::infer::pool::{l2_normalize, pool, Pooling};
use crate::model::decoder::Logits;
use crate::{Error, Result};

/// The special token whose hidden state [`Pooling::EndOfSentence`] returns (ERNIE's `sep_token`).
pub const END_OF_SENTENCE: &str = "<|end_of_sentence|>";

/// One thing to embed.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum EmbedInput {
    /// Untrusted text: tokenized without special-token parsing and without BOS/EOS.
    Text(String),
    /// Token ids used as is (OpenAI's array-of-integers input); each must be `< vocab_size`.
    Ids(Vec<u32>),
    /// Text with media (`image`, `audio`, `video` bytes). On a VL checkpoint, images are embedded
    /// through the same stream and prefill as captioning (`Engine::media_hidden_states`); on an
    /// ERNIE 5.0 checkpoint with audio parts, one audio clip is embedded through its codec codes
    /// as audio understanding reads it (`Engine::audio_hidden_states`); video bytes get
    /// [`Error::Unsupported`].
    Media {
        /// The text part.
        text: String,
        /// The media, in order.
        media: Vec<Media>,
    },
}

/// Raw media bytes for [`EmbedInput::Media`] (decoded by tokenizers-mm once media lands).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Media {
    /// An encoded image file's bytes.
    Image(Vec<u8>),
    /// An encoded audio file's bytes.
    Audio(Vec<u8>),
    /// An encoded video file's bytes.
    Video(Vec<u8>),
}

/// Options of one [`Engine::embed`] call. The default is last-token pooling, no normalisation,
/// full width, no token limit beyond the model's context.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EmbedOptions {
    /// How rows become one vector.
    pub pooling: Pooling,
    /// L2-normalise each vector (after `dimensions` truncation).
    pub normalize: bool,
    /// Keep the first `d` components (`1..=hidden_size`); `None` keeps all `hidden_size`.
    pub dimensions: Option<usize>,
    /// Reject inputs longer than this many tokens (after the `<|end_of_sentence|>` append).
    pub max_tokens: Option<usize>,
}

/// One embedding: `vector` is `[d]` f32, `d = dimensions.unwrap_or(hidden_size)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Embedding {
    /// `[d]` f32.
    pub vector: Vec<f32>,
    /// Tokens the forward pass saw for this input (the appended `<|end_of_sentence|>` included).
    pub n_tokens: usize,
}

impl Engine {
    /// Embeds each input: returns one [`Embedding`] per input, in input order, each `[d]` with
    /// `d = opts.dimensions.unwrap_or(hidden_size)`. See the module docs for the steps.
    ///
    /// Errors ([`Error::Request`] unless noted; the first failing input stops the call):
    /// no inputs; an input with no tokens; a token id `>= vocab_size`; an input longer than
    /// `opts.max_tokens` or `max_position_embeddings`; `dimensions` of 0 or above `hidden_size`;
    /// [`EmbedInput::Media`] on a checkpoint without the parts its media need, or with
    /// `EndOfSentence` pooling; video, several audio clips or audio mixed with images
    /// ([`Error::Unsupported`]); text without a tokenizer (tokenizer.json or tokenizer.model), or
    /// `EndOfSentence` pooling with a tokenizer that has no `<|end_of_sentence|>`;
    /// [`Error::Tokenizer`] when encoding fails.
    pub fn embed(&self, inputs: &[EmbedInput], opts: &EmbedOptions) -> Result<Vec<Embedding>> {
        let h = self.model.cfg.hidden_size;
        let d = match opts.dimensions {
            None => h,
            Some(d) if (1..=h).contains(&d) => d,
            Some(d) => return Err(Error::Request(format!("dimensions {d} must be in 1..={h} (the hidden size)"))),
        };
        if inputs.is_empty() {
            return Err(Error::Request("no inputs to embed".into()));
        }
        let eos = match opts.pooling {
            Pooling::EndOfSentence => Some(self.tokenizer()?.token_id(END_OF_SENTENCE).ok_or_else(|| {
                Error::Request(format!("end-of-sentence pooling needs {END_OF_SENTENCE}, which this tokenizer lacks"))
            })?),
            _ => None,
        };
        let mut out = Vec::with_capacity(inputs.len());
        for (i, input) in inputs.iter().enumerate() {
            let (hidden, n_tokens) = match input {
                EmbedInput::Media { text, media } => {
                    let hidden = self.media_hidden_states(text, media, opts).map_err(|e| with_index(e, i))?; // [t, h]
                    let t = hidden.len() / h;
                    (hidden, t)
                }
                _ => {
                    let mut ids = self.embed_ids(input).map_err(|e| with_index(e, i))?;
                    ids.extend(eos);
                    (self.hidden_states(&ids, opts.max_tokens).map_err(|e| with_index(e, i))?, ids.len()) // [t, h]
                }
            };
            let mut vector = pool(&hidden, h, opts.pooling); // [h]
            vector.truncate(d); // [d]
            if opts.normalize {
                l2_normalize(&mut vector);
            }
            out.push(Embedding { vector, n_tokens });
        }
        Ok(out)
    }

    /// Token ids of one input, before any pooling token is appended.
    fn embed_ids(&self, input: &EmbedInput) -> Result<Vec<u32>> {
        let ids = match input {
            EmbedInput::Text(text) => self.tokenizer()?.encode_plain(text)?,
            EmbedInput::Ids(ids) => ids.clone(),
            EmbedInput::Media { .. } => {
                return Err(unsupported("media inputs to embeddings (not supported yet)", "embed text or token ids"))
            }
        };
        if ids.is_empty() {
            return Err(Error::Request("the input has no tokens".into()));
        }
        Ok(ids)
    }

    /// Final normalised hidden states `[t, h]` of text with media on a VL checkpoint: the same
    /// stream (the checkpoint's chat template, one user message, media first unless the text has
    /// `<image>` markers; no generation prompt) and VL prefill as captioning.
    ///
    /// Errors: [`Error::Request`] for a text-only checkpoint, `EndOfSentence` pooling (the stream
    /// ends where the template ends it) or too many tokens; [`Error::Unsupported`] for audio and
    /// video bytes; media decoding and stream errors.
    fn media_hidden_states(&self, text: &str, media: &[Media], opts: &EmbedOptions) -> Result<Vec<f32>> {
        if media.iter().any(|m| matches!(m, Media::Audio(_))) {
            return self.audio_embed_hidden_states(text, media, opts);
        }
        if !self.is_multimodal() {
            return Err(Error::Request("media inputs need a vision-language checkpoint; this is a text model".into()));
        }
        if opts.pooling == Pooling::EndOfSentence {
            // TODO(#12): append <|end_of_sentence|> to a media stream.
            return Err(Error::Request("end_of_sentence pooling is not available for media inputs; use last or mean".into()));
        }
        let mut items = Vec::with_capacity(media.len());
        for (k, m) in media.iter().enumerate() {
            match m {
                Media::Image(bytes) => items.push(self.load_image_bytes(bytes, &format!("image {}", k + 1))?),
                Media::Video(_) => return Err(unsupported("video bytes in embedding inputs", "embed images, or caption videos with `ernie caption --video`")),
                Media::Audio(_) => return Err(unsupported("audio mixed with images in one embedding input", "embed one clip per input")),
            }
        }
        let mut prompt = StreamPrompt::user(text, items.len(), 0, 0);
        if let StreamPrompt::Chat { add_generation_prompt, .. } = &mut prompt {
            *add_generation_prompt = false;
        }
        let stream = self.build_stream(&prompt, items)?;
        let n = stream.input_ids.len();
        if let Some(max) = opts.max_tokens {
            if n > max {
                return Err(Error::Request(format!("{n} tokens exceed the limit of {max}")));
            }
        }
        let vision = self.vision().ok_or_else(|| Error::Request("no vision tower".into()))?;
        let runner = self.runner();
        let mut cache = runner.new_cache(n)?;
        runner.prefill_stream(vision, &stream, &mut cache, Logits::Hidden, None)
    }

    /// Final normalised hidden states `[t, h]` of one audio clip and text on an ERNIE 5.0
    /// checkpoint with audio parts and `audio_codec/`: the bytes → codec codes
    /// ([`Engine::audio_codes_from_bytes`]) → [`Engine::audio_hidden_states`] (the audio question's
    /// layout without the generation prompt).
    ///
    /// Errors: [`Error::Request`] for a checkpoint without audio parts or codec,
    /// `EndOfSentence` pooling, or too many tokens; [`Error::Unsupported`] for more than one clip
    /// or audio mixed with images / video; decoding and codec errors.
    fn audio_embed_hidden_states(&self, text: &str, media: &[Media], opts: &EmbedOptions) -> Result<Vec<f32>> {
        let [Media::Audio(bytes)] = media else {
            return Err(unsupported("more than one audio clip, or audio mixed with images or video, in one embedding input", "embed one clip per input"));
        };
        self.audio()?;
        if opts.pooling == Pooling::EndOfSentence {
            return Err(Error::Request("end_of_sentence pooling is not available for audio inputs; use last or mean".into()));
        }
        let codes = self.audio_codes_from_bytes(bytes, std::path::Path::new("audio"))?; // [Q][frames]
        self.audio_hidden_states(&codes, text, opts.max_tokens)
    }

    /// Final normalised hidden states `[t, h]` of one sequence, from a cache sized to it.
    fn hidden_states(&self, ids: &[u32], max_tokens: Option<usize>) -> Result<Vec<f32>> {
        if let Some(max) = max_tokens {
            if ids.len() > max {
                return Err(Error::Request(format!("{} tokens exceed the limit of {max}", ids.len())));
            }
        }
        // new_cache rejects lengths above max_position_embeddings with a Request error; the pass
        // runs on the engine's device (CPU, or CUDA after `Engine::to_device`).
        let runner = self.runner();
        let mut cache = runner.new_cache(ids.len())?;
        runner.forward(ids, &mut cache, Logits::Hidden, None)
    }
}

/// Prefixes a request error with the input it is about, so a batch caller can find it.
fn with_index(e: Error, i: usize) -> Error {
    match e {
        Error::Request(msg) => Error::Request(format!("input {i}: {msg}")),
        other => other,
    }
}
