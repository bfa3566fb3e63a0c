//! ERNIE 5.0 elastic sub-models at load time (report §3.3 "Once-For-All"; spec §1.6, §6.3, §8
//! rows 7-9): keep a subset of decoder layers (dropped layers are identity on the residual
//! stream), a subset of experts per MoE layer (the others get router logit −∞ before the softmax,
//! so kept probabilities renormalise and a masked expert is never selected), and a smaller top-k
//! (renormalising over the k chosen). Dropped layers and masked experts are never read, so with
//! memory-mapped weights their pages are never resident.

use std::collections::BTreeMap;
use std::str::FromStr;

use crate::config::{MlpKind, TextConfig};
use crate::error::option_err;
use crate::{Error, Result};

/// Which decoder layers to keep.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LayerSpec {
    /// Exactly these layer indices (`--layers 0,1,4-7`).
    Keep(Vec<usize>),
    /// Keep this many: drop evenly spaced layers from the middle, never the first or last two
    /// (spec §8 row 7) (`--layers 12`).
    Count(usize),
}

/// Which experts to keep, for every MoE layer or per layer.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ExpertSpec {
    /// Applies to every MoE layer not named in `per_layer` (`--experts 0-31`).
    pub all: Option<Vec<usize>>,
    /// Per-layer subsets (`--experts "1:0-31;5:0-15"`).
    pub per_layer: BTreeMap<usize, Vec<usize>>,
}

/// Elastic sub-model selection. The default keeps the full model.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ElasticOptions {
    /// Decoder layers to keep (`None`: all).
    pub layers: Option<LayerSpec>,
    /// Experts to keep per MoE layer (`None`: all).
    pub experts: Option<ExpertSpec>,
    /// Override of `moe_k`.
    pub top_k: Option<usize>,
}

/// What [`ElasticOptions::resolve`] decided for a config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElasticPlan {
    /// `[num_hidden_layers]`: whether layer l runs.
    pub keep_layer: Vec<bool>,
    /// Per MoE layer index: `[num_experts]` kept flags (absent = all kept).
    pub expert_mask: BTreeMap<usize, Vec<bool>>,
    /// Effective top-k for every MoE layer.
    pub top_k: Option<usize>,
}

impl ElasticOptions {
    /// Checks the options against `cfg` and resolves them to per-layer decisions.
    ///
    /// Errors: [`Error::InvalidOption`] naming the option for an out-of-range layer or expert, an empty
    /// selection, a count that cannot be met without dropping the first or last two layers, a
    /// top-k of 0 or above the number of kept experts, or expert/top-k options on a dense model.
    pub fn resolve(&self, cfg: &TextConfig) -> Result<ElasticPlan> {
        let n = cfg.num_hidden_layers;
        let keep_layer = match &self.layers {
            None => vec![true; n],
            Some(LayerSpec::Keep(list)) => {
                if list.is_empty() {
                    return Err(option_err("layers", "keep at least one layer"));
                }
                let mut keep = vec![false; n];
                for &l in list {
                    *keep.get_mut(l).ok_or_else(|| option_err("layers", format!("layer {l} does not exist (the model has {n})")))? = true;
                }
                keep
            }
            Some(LayerSpec::Count(c)) => count_layers(*c, n)?,
        };
        let moe = cfg.moe.as_ref();
        if moe.is_none() && (self.experts.is_some() || self.top_k.is_some()) {
            let option = if self.experts.is_some() { "experts" } else { "top_k" };
            return Err(option_err(option, "expert and top-k selection need a MoE checkpoint"));
        }
        let mut expert_mask = BTreeMap::new();
        let mut min_kept = moe.map_or(0, |m| m.num_experts);
        if let (Some(spec), Some(m)) = (&self.experts, moe) {
            for &l in spec.per_layer.keys() {
                if cfg.mlp_layer_types.get(l) != Some(&MlpKind::Moe) {
                    return Err(option_err("experts", format!("layer {l} is not a MoE layer")));
                }
            }
            for (l, kind) in cfg.mlp_layer_types.iter().enumerate() {
                let Some(list) = spec.per_layer.get(&l).or(spec.all.as_ref()) else { continue };
                if *kind != MlpKind::Moe {
                    continue;
                }
                let mut mask = vec![false; m.num_experts];
                for &e in list {
                    *mask.get_mut(e).ok_or_else(|| {
                        option_err("experts", format!("expert {e} does not exist (layer {l} has {})", m.num_experts))
                    })? = true;
                }
                let kept = mask.iter().filter(|&&k| k).count();
                min_kept = min_kept.min(kept);
                expert_mask.insert(l, mask);
            }
        }
        if let Some(m) = moe {
            let k = self.top_k.unwrap_or(m.top_k);
            if k == 0 || k > min_kept {
                return Err(option_err("top_k", format!("{k} must be in 1..={min_kept} (the fewest kept experts of any layer)")));
            }
        }
        Ok(ElasticPlan { keep_layer, expert_mask, top_k: self.top_k })
    }
}

/// Keep `count` of `n` layers: drop `n - count` evenly spaced layers from `2..n-2`.
fn count_layers(count: usize, n: usize) -> Result<Vec<bool>> {
    if count == 0 || count > n {
        return Err(option_err("layers", format!("cannot keep {count} of {n} layers")));
    }
    let candidates: Vec<usize> = (2..n.saturating_sub(2)).collect();
    let drop = n - count;
    if drop > candidates.len() {
        return Err(option_err(
            "layers",
            format!("keeping {count}: keeping the first and last two layers allows at least {} of {n}; give an explicit list instead", n - candidates.len()),
        ));
    }
    let mut keep = vec![true; n];
    for j in 0..drop {
        // Evenly spaced over the candidates, centred in each of `drop` equal bins.
        let idx = (2 * j + 1) * candidates.len() / (2 * drop);
        keep[candidates[idx]] = false;
    }
    Ok(keep)
}

/// Parses `0,2,5-9` into `[0, 2, 5, 6, 7, 8, 9]` (sorted, deduplicated). Errors:
/// [`Error::InvalidOption`] for `option` naming the bad part, or an empty list.
pub fn parse_index_list(s: &str, option: &'static str) -> Result<Vec<usize>> {
    let bad = |part: &str| option_err(option, format!("{part:?} is not an index or a range like 4-7"));
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let a: usize = a.trim().parse().map_err(|_| bad(part))?;
                let b: usize = b.trim().parse().map_err(|_| bad(part))?;
                if a > b || b - a > 1 << 20 {
                    return Err(bad(part));
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().map_err(|_| bad(part))?),
        }
    }
    if out.is_empty() {
        return Err(option_err(option, "empty list"));
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

impl FromStr for LayerSpec {
    type Err = Error;

    /// A bare number is a count (`12`); anything with `,` or `-` is a list (`0,1,4-7`, or `5,` for
    /// the single layer 5).
    fn from_str(s: &str) -> Result<LayerSpec> {
        let s = s.trim();
        if !s.contains(',') && !s.contains('-') {
            return s.parse().map(LayerSpec::Count).map_err(|_| option_err("layers", format!("{s:?} is not a count or a list")));
        }
        parse_index_list(s, "layers").map(LayerSpec::Keep)
    }
}

impl FromStr for ExpertSpec {
    type Err = Error;

    /// `0-31` for every MoE layer, or `1:0-31;5:0-15` per layer (layers not named keep all).
    fn from_str(s: &str) -> Result<ExpertSpec> {
        let s = s.trim();
        if !s.contains(':') {
            return Ok(ExpertSpec { all: Some(parse_index_list(s, "experts")?), per_layer: BTreeMap::new() });
        }
        let mut per_layer = BTreeMap::new();
        for part in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (l, list) = part.split_once(':').ok_or_else(|| option_err("experts", format!("{part:?} is not LAYER:EXPERTS")))?;
            let l: usize = l.trim().parse().map_err(|_| option_err("experts", format!("layer {l:?} is not a number")))?;
            if per_layer.insert(l, parse_index_list(list, "experts")?).is_some() {
                return Err(option_err("experts", format!("layer {l} given twice")));
            }
        }
        Ok(ExpertSpec { all: None, per_layer })
    }
}
