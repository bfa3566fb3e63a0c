//! Streaming detokenization: generated ids in, final text out as soon as it is stable.

use crate::error::{Error, Result};

use super::TextTokenizer;

/// Streaming detokenizer: feed generated ids one at a time, get text as soon as it is final.
///
/// Guarantee: the concatenation of everything [`push`](Self::push) returned plus
/// [`finish`](Self::finish) equals [`TextTokenizer::decode`] of all pushed ids (same
/// `skip_special`), and no returned chunk ends in a broken UTF-8 sequence.
///
/// How (text-generation-inference's prefix/read offsets, plus one rule for byte fallback):
/// the text of `ids[prefix..]` minus the text of `ids[prefix..read]` is new. Text is held back
/// while (a) the last visible token is a byte-fallback piece `<0xNN>` — `ByteFallback` decodes
/// a whole run of byte pieces at once and turns *every* byte of an invalid run into U+FFFD, so
/// a run is only final once a non-byte piece follows — or (b) the decoded window ends in U+FFFD
/// (other decoders' incomplete characters). Window boundaries therefore never split a byte
/// run, which is what makes the concatenation exact.
///
/// Worked example (ERNIE fixture): `😀` is `<0xF0> <0x9F> <0x98> <0x80>`; pushing them returns
/// `None` four times; pushing `▁and` then returns `"😀 and"`.
pub struct IncrementalDecoder<'a> {
    tok: &'a TextTokenizer,
    skip_special: bool,
    /// Ids not yet fully retired: `ids[prefix..]` is the current window.
    ids: Vec<u32>,
    /// Start of the context window (its text was already emitted).
    prefix: usize,
    /// End of the emitted part of the window.
    read: usize,
    /// The last visible (not skipped) id is a byte-fallback piece.
    in_byte_run: bool,
}

impl<'a> IncrementalDecoder<'a> {
    /// A decoder over `tok`; `skip_special` as in [`TextTokenizer::decode`].
    pub fn new(tok: &'a TextTokenizer, skip_special: bool) -> Self {
        IncrementalDecoder { tok, skip_special, ids: Vec::new(), prefix: 0, read: 0, in_byte_run: false }
    }

    /// Add one generated id; returns the newly completed text, or `None` while held back.
    ///
    /// An id with no token (see [`TextTokenizer::decode`]) adds no text.
    ///
    /// Errors: [`Error::Decode`], [`Error::IncrementalPrefix`].
    pub fn push(&mut self, id: u32) -> Result<Option<String>> {
        if id as usize >= self.tok.vocab_size() {
            return Ok(None);
        }
        self.ids.push(id);
        let visible = !(self.skip_special && self.tok.is_special_id(id));
        if visible {
            self.in_byte_run = self.tok.is_byte_token(id);
        }
        if self.in_byte_run {
            return Ok(None);
        }
        let (before, after) = self.window_texts()?;
        if after.len() > before.len() && !after.ends_with('\u{FFFD}') {
            let new = after[before.len()..].to_string();
            self.advance();
            Ok(Some(new))
        } else {
            Ok(None)
        }
    }

    /// Flush whatever is held back (an unfinished byte run decodes as `decode` would: valid
    /// characters, or U+FFFD per byte). The decoder can be reused afterwards.
    ///
    /// Errors: [`Error::Decode`], [`Error::IncrementalPrefix`].
    pub fn finish(&mut self) -> Result<String> {
        let (before, after) = self.window_texts()?;
        let rest = after[before.len()..].to_string();
        self.ids.clear();
        self.prefix = 0;
        self.read = 0;
        self.in_byte_run = false;
        Ok(rest)
    }

    /// Texts of `ids[prefix..read]` and `ids[prefix..]`; checks the second extends the first.
    fn window_texts(&self) -> Result<(String, String)> {
        let before = self.tok.decode(&self.ids[self.prefix..self.read], self.skip_special)?;
        let after = self.tok.decode(&self.ids[self.prefix..], self.skip_special)?;
        if !after.starts_with(&before) {
            return Err(Error::IncrementalPrefix { expected: before, actual: after });
        }
        Ok((before, after))
    }

    /// Emitted up to the end: slide the window and drop ids no longer needed as context.
    fn advance(&mut self) {
        self.prefix = self.read;
        self.read = self.ids.len();
        self.ids.drain(..self.prefix);
        self.read -= self.prefix;
        self.prefix = 0;
    }
}
