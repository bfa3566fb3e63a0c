//! Preallocated key/value cache: per layer `[max_seq, n_kv_heads, head_dim]` f32 for K (post-RoPE)
//! and V, plus the RoPE table sized to the same `max_seq`, allocated once up front (llama2.c's
//! run state).
//!
//! ERNIE-4.5-VL prompts place visual tokens on a 3-D grid, so the next text position is below the
//! token count; the cache carries that `rope_delta` (spec §3.6: `max position + 1 − T`, ≤ 0) and
//! every later sequential row `i` is rotated at `len + i + rope_delta`.

use crate::config::TextConfig;
use crate::ops::RopeTable;
use crate::{Error, Result};

/// One layer's cache.
pub struct LayerKv {
    /// `[max_seq, n_kv_heads, head_dim]`
    pub k: Vec<f32>,
    /// `[max_seq, n_kv_heads, head_dim]`
    pub v: Vec<f32>,
}

/// How much of a preallocated cache is filled: the length bookkeeping shared by this cache and
/// the CUDA one (`cuda/model.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheLen {
    len: usize,
    max_seq: usize,
}

impl CacheLen {
    /// An empty cache of `max_seq` positions.
    pub fn new(max_seq: usize) -> CacheLen {
        CacheLen { len: 0, max_seq }
    }

    /// Positions filled so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no position is filled.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Positions it can hold.
    pub fn capacity(&self) -> usize {
        self.max_seq
    }

    /// Errors with [`Error::Request`] if `n` more positions do not fit.
    pub fn check_room(&self, n: usize) -> Result<()> {
        if self.len + n > self.max_seq {
            return Err(Error::Request(format!(
                "sequence of {} tokens exceeds the KV cache of {} positions",
                self.len + n,
                self.max_seq
            )));
        }
        Ok(())
    }

    /// Marks `n` more positions as filled (after every layer wrote them).
    pub(crate) fn advance(&mut self, n: usize) {
        self.len += n;
    }

    /// Drops positions `len..` (speculative-decoding rollback; the stale rows are overwritten by
    /// the next append). Errors when `len` exceeds the current length.
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        if len > self.len {
            return Err(Error::Request(format!("cannot truncate a cache of {} to {len}", self.len)));
        }
        self.len = len;
        Ok(())
    }

    /// Empties the cache.
    pub fn reset(&mut self) {
        self.len = 0;
    }
}

/// The whole model's cache and its current length.
pub struct KvCache {
    /// Per decoder layer (by checkpoint index).
    pub layers: Vec<LayerKv>,
    /// RoPE tables for `max_seq` positions.
    pub rope: RopeTable,
    fill: CacheLen,
    /// Rotary position minus cache slot for sequential rows (0 for text; ≤ 0 after a VL prompt).
    rope_delta: i64,
}

impl KvCache {
    /// Allocates room for `max_seq` positions. Errors when `max_seq` is 0 or exceeds
    /// `max_position_embeddings`.
    pub fn new(cfg: &TextConfig, max_seq: usize) -> Result<KvCache> {
        KvCache::with_layers(cfg, cfg.num_hidden_layers, max_seq)
    }

    /// A cache of `n_layers` layers with `cfg`'s KV width (the MTP block has its own one-layer
    /// cache).
    pub fn with_layers(cfg: &TextConfig, n_layers: usize, max_seq: usize) -> Result<KvCache> {
        if max_seq == 0 || max_seq > cfg.max_position_embeddings {
            return Err(Error::Request(format!(
                "context of {max_seq} tokens is outside 1..={} (max_position_embeddings)",
                cfg.max_position_embeddings
            )));
        }
        let kv_dim = cfg.kv_dim();
        let layers = (0..n_layers)
            .map(|_| LayerKv { k: vec![0.0; max_seq * kv_dim], v: vec![0.0; max_seq * kv_dim] })
            .collect();
        let rope = match cfg.mrope_section {
            Some(section) => RopeTable::with_mrope(cfg.head_dim, cfg.rope_theta, max_seq, section),
            None => RopeTable::new(cfg.head_dim, cfg.rope_theta, max_seq),
        };
        Ok(KvCache { layers, rope, fill: CacheLen::new(max_seq), rope_delta: 0 })
    }

    /// Positions filled so far.
    pub fn len(&self) -> usize {
        self.fill.len()
    }

    /// Whether no position is filled.
    pub fn is_empty(&self) -> bool {
        self.fill.is_empty()
    }

    /// Positions it can hold.
    pub fn capacity(&self) -> usize {
        self.fill.capacity()
    }

    /// Errors if `n` more positions do not fit ([`CacheLen::check_room`]).
    pub fn check_room(&self, n: usize) -> Result<()> {
        self.fill.check_room(n)
    }

    pub(crate) fn advance(&mut self, n: usize) {
        self.fill.advance(n);
    }

    /// Drops positions `len..` ([`CacheLen::truncate`]); the rope delta stays.
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        self.fill.truncate(len)
    }

    /// Empties the cache for a new sequence (rope delta back to 0).
    pub fn reset(&mut self) {
        self.fill.reset();
        self.rope_delta = 0;
    }

    /// Sets the rope delta after a 3-D prompt (module docs). Errors when it is positive (a 3-D
    /// prompt never places text past its token count) or more negative than the filled length.
    pub fn set_rope_delta(&mut self, delta: i64) -> Result<()> {
        if delta > 0 || -delta > self.len() as i64 {
            return Err(Error::Request(format!("rope delta {delta} is outside -{}..=0", self.len())));
        }
        self.rope_delta = delta;
        Ok(())
    }

    /// The rope delta (0 unless a 3-D prompt set it).
    pub fn rope_delta(&self) -> i64 {
        self.rope_delta
    }

    /// Rotary position of the next sequential row: `len + rope_delta`.
    pub fn next_position(&self) -> usize {
        (self.len() as i64 + self.rope_delta).max(0) as usize
    }

    /// Split borrow for a forward pass: the layers (written), the RoPE table (read), the length
    /// (first slot written).
    pub(crate) fn parts(&mut self) -> (&mut [LayerKv], &RopeTable, usize) {
        (&mut self.layers, &self.rope, self.fill.len())
    }
}
