//! Preallocated key/value cache: per layer `[max_seq, n_kv_heads, head_dim]` f32 for K (post-RoPE)
//! and V, plus the RoPE table sized to the same `max_seq`, allocated once up front (llama2.c's
//! run state).

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

/// The whole model's cache and its current length.
pub struct KvCache {
    pub layers: Vec<LayerKv>,
    pub rope: RopeTable,
    len: usize,
    max_seq: usize,
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
        Ok(KvCache { layers, rope: RopeTable::new(cfg.head_dim, cfg.rope_theta, max_seq), len: 0, max_seq })
    }

    /// Positions filled so far.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.max_seq
    }

    /// Errors if `n` more positions do not fit.
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

    /// Empties the cache for a new sequence.
    pub fn reset(&mut self) {
        self.len = 0;
    }

    /// Split borrow for a forward pass: the layers (written), the RoPE table (read), the length.
    pub(crate) fn parts(&mut self) -> (&mut [LayerKv], &RopeTable, usize) {
        (&mut self.layers, &self.rope, self.len)
    }
}
