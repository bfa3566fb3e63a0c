//! `TextTokenizer::apply_chat_template`: render the chat template ([`crate::chat`]) and turn
//! the rendering into ids so that message content can never inject special tokens.
//!
//! The template is rendered a second time with each message's content replaced by a sentinel,
//! which splits the prompt into *template pieces* and *content pieces*. Special-token text is
//! parsed only in template pieces (with the tokenizer's own added-token matcher); everything
//! between two template special tokens — template text and content alike — is then encoded in
//! one call with special parsing off.
//!
//! Why not encode each piece on its own: ERNIE's tokenizer has no pre-tokenizer, so BPE runs
//! over the whole stretch between two added tokens and merges *across* a template/content
//! boundary (`"User: " + "What"` gives `▁What`, not `▁` + `What`). Splitting only where the
//! tokenizer itself splits — at special tokens — keeps those merges.
//!
//! Exactness: the ids equal transformers' `apply_chat_template(..., tokenize=True)` whenever
//! 1. no message content contains special-token text (otherwise transformers injects the
//!    special id and we deliberately do not), and
//! 2. no special-token match straddles a template/content boundary (content ending in `"<|end_of"`
//!    right before template text `"_sentence|>"` — impossible for the ERNIE template, whose
//!    specials are whole literals), and
//! 3. special tokens have no `lstrip`/`rstrip`/`single_word` flags reaching into content
//!    (none in ERNIE), and
//! 4. the normalizer works character by character (ERNIE: `Replace(" ", "▁")`), so normalizing
//!    a stretch equals normalizing it inside the whole prompt.
//!
//! The golden test checks this against transformers.
//!
//! If the template rewrites content (e.g. `message.content | trim`) the sentinel pieces do not
//! reassemble the real rendering; then the real rendering is encoded with special parsing if no
//! content holds special-token text, and [`Error::TemplateRewritesContent`] is returned otherwise.

use crate::chat::{reassemble, sentinel, sentinel_marker, split_pieces, ChatMessage, Piece};
use crate::error::{Error, Result};

use super::TextTokenizer;

impl TextTokenizer {
    /// Render the chat template to the prompt string (transformers
    /// `apply_chat_template(messages, tokenize=False, add_generation_prompt=...)`).
    ///
    /// Errors: [`Error::Template`] (render failure, `raise_exception`).
    pub fn render_chat_template(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        self.chat.render(messages, add_generation_prompt)
    }

    /// Render and tokenize a conversation: returns prompt ids `[n_tokens]`. Template text is
    /// parsed for special tokens; message content never becomes special ids (see the module
    /// docs for when this equals transformers' `apply_chat_template(tokenize=True)`).
    ///
    /// Errors: [`Error::Template`], [`Error::TemplateRewritesContent`], [`Error::Encode`].
    pub fn apply_chat_template(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<Vec<u32>> {
        let rendered = self.render_chat_template(messages, add_generation_prompt)?;

        let contents: Vec<&str> = messages.iter().map(|m| m.content.as_str()).collect();
        let marker = sentinel_marker(&contents);
        let masked: Vec<ChatMessage> = messages
            .iter()
            .enumerate()
            .map(|(i, m)| ChatMessage { role: m.role.clone(), content: sentinel(&marker, i) })
            .collect();
        let masked_render = self.chat.render(&masked, add_generation_prompt)?;

        match split_pieces(&masked_render, &marker, messages.len()) {
            Some(pieces) if reassemble(&pieces, &contents) == rendered => self.encode_pieces(&pieces, &contents),
            _ => {
                // The template rewrote content: spans unknown. Safe only without special text in content.
                for (i, m) in messages.iter().enumerate() {
                    if let Some(tok) = self.find_special_text(&m.content) {
                        return Err(Error::TemplateRewritesContent {
                            origin: self.chat.origin().to_string(),
                            message_index: i,
                            token: tok.to_string(),
                        });
                    }
                }
                self.encode_with_specials(&rendered)
            }
        }
    }

    /// Special tokens only from template pieces; every stretch between them encoded in one call
    /// with special parsing off (see module docs).
    pub(crate) fn encode_pieces(&self, pieces: &[Piece<'_>], contents: &[&str]) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        let mut run = String::new();
        for piece in pieces {
            match *piece {
                Piece::Content(i) => run.push_str(contents[i]),
                Piece::Template(text) => {
                    let enc = self
                        .special_tokenizer()
                        .encode(text, false)
                        .map_err(|e| Error::Encode { message: e.to_string() })?;
                    let mut cursor = 0;
                    for (&id, &(start, end)) in enc.get_ids().iter().zip(enc.get_offsets()) {
                        if self.is_special_id(id) && start >= cursor && end <= text.len() {
                            run.push_str(text.get(cursor..start).unwrap_or_default());
                            self.flush_run(&mut run, &mut ids)?;
                            ids.push(id);
                            cursor = end;
                        }
                    }
                    run.push_str(text.get(cursor..).unwrap_or_default());
                }
            }
        }
        self.flush_run(&mut run, &mut ids)?;
        Ok(ids)
    }

    fn flush_run(&self, run: &mut String, ids: &mut Vec<u32>) -> Result<()> {
        if !run.is_empty() {
            ids.extend(self.encode_plain(run)?);
            run.clear();
        }
        Ok(())
    }
}
