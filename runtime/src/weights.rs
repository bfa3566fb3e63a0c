//! Checkpoint tensors: memory-mapped safetensors files (one file or an HF sharded index), every
//! tensor shape- and dtype-checked when a component takes it, and [`Weights::finish`] proving that
//! each tensor was used exactly as the config expects (nanoGPT's key asserts, made an error).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use memmap2::Mmap;
use safetensors::{Dtype as StDtype, SafeTensors};

use crate::io::read_json;
use crate::tensor::{DType, Tensor};
use crate::{Error, Result};

/// Whether [`Weights::take`] prefaults the tensors it hands out ([`set_prefault`]).
static PREFAULT: AtomicBool = AtomicBool::new(false);

/// Process-wide: when `on`, every tensor a model takes from a mapped checkpoint has its pages
/// populated at load ([`Tensor::prefault`]) instead of faulting them in during the first tokens.
/// Only the tensors taken are touched (elastic layers never taken stay unread), so peak RSS is
/// still the touched pages — but all of them at once. Off by default (`ernie --prefault on|auto`
/// turns it on): a short prompt touches only the experts it routes to, so populating everything
/// made the first token slower in our measurement (README, Benchmarks).
pub fn set_prefault(on: bool) {
    PREFAULT.store(on, Ordering::Relaxed);
}

/// All tensors of a checkpoint, by stored name (the model loader renames them to the canonical
/// spelling through `model/names.rs`), plus the bookkeeping that lets [`Weights::finish`] list what was missing and
/// what was never used.
pub struct Weights {
    tensors: BTreeMap<String, Tensor>,
    used: BTreeSet<String>,
    missing: Vec<String>,
}

impl Weights {
    /// Opens the safetensors files of checkpoint directory `dir`: the shards named by
    /// `model.safetensors.index.json` when it exists, else `model.safetensors`.
    ///
    /// Errors: [`Error::Io`] for unreadable files, [`Error::Json`] for a bad index,
    /// [`Error::Safetensors`] for a malformed file (truncated, header length past the end of the
    /// file, unsupported dtype, a tensor name in two shards).
    pub fn open(dir: &Path) -> Result<Weights> {
        let index = dir.join("model.safetensors.index.json");
        let files = if index.exists() {
            let v: serde_json::Value = read_json(&index)?;
            let map = v.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| Error::Safetensors {
                path: index.clone(),
                reason: "no \"weight_map\" object".into(),
            })?;
            let mut files = BTreeSet::new();
            for (name, file) in map {
                let file = file.as_str().ok_or_else(|| Error::Safetensors {
                    path: index.clone(),
                    reason: format!("weight_map[{name:?}] is not a file name"),
                })?;
                if file.contains('/') || file.contains("..") {
                    return Err(Error::Safetensors { path: index.clone(), reason: format!("shard name {file:?} leaves the directory") });
                }
                files.insert(dir.join(file));
            }
            files.into_iter().collect()
        } else {
            vec![dir.join("model.safetensors")]
        };
        Weights::from_files(&files)
    }

    /// Maps each file and indexes its tensors. See [`Weights::open`] for the errors.
    pub fn from_files(files: &[PathBuf]) -> Result<Weights> {
        let mut tensors = BTreeMap::new();
        for path in files {
            let file = File::open(path).map_err(|source| Error::Io { path: path.clone(), source })?;
            // SAFETY: the map is read-only; a checkpoint modified while we run is outside our contract,
            // as for every mmap-based loader (safetensors, llama.cpp).
            let map = unsafe { Mmap::map(&file) }.map_err(|source| Error::Io { path: path.clone(), source })?;
            let map = Arc::new(map);
            let st = SafeTensors::deserialize(&map)
                .map_err(|e| Error::Safetensors { path: path.clone(), reason: e.to_string() })?;
            for (name, view) in st.tensors() {
                let dtype = match view.dtype() {
                    StDtype::F32 => DType::F32,
                    StDtype::BF16 => DType::Bf16,
                    StDtype::F16 => DType::F16,
                    other => {
                        return Err(Error::Safetensors { path: path.clone(), reason: format!("tensor {name}: dtype {other:?} is not supported") })
                    }
                };
                // `view.data()` borrows `map`; recover its byte offset to keep a view, not a copy.
                let start = view.data().as_ptr() as usize - map.as_ptr() as usize;
                let tensor = Tensor::from_mmap(&map, start, dtype, view.shape().to_vec());
                let canonical = name.to_string();
                if tensors.insert(canonical.clone(), tensor).is_some() {
                    return Err(Error::Safetensors { path: path.clone(), reason: format!("tensor {canonical} appears twice") });
                }
            }
        }
        Ok(Weights { tensors, used: BTreeSet::new(), missing: Vec::new() })
    }

    /// Builds a checkpoint from in-memory tensors (tests, synthetic benchmark models).
    pub fn from_tensors(tensors: impl IntoIterator<Item = (String, Tensor)>) -> Weights {
        let tensors = tensors.into_iter().collect();
        Weights { tensors, used: BTreeSet::new(), missing: Vec::new() }
    }

    /// Renames every tensor through `f` (a model family's spelling table: `model/names.rs`).
    /// Errors: [`Error::Safetensors`] when two stored names map to one.
    pub fn rename(&mut self, f: impl Fn(&str) -> String) -> Result<()> {
        let old = std::mem::take(&mut self.tensors);
        for (name, t) in old {
            let new = f(&name);
            if self.tensors.insert(new.clone(), t).is_some() {
                return Err(Error::Safetensors { path: PathBuf::from("model.safetensors"), reason: format!("two tensors map to {new} (last: {name})") });
            }
        }
        Ok(())
    }

    /// Whether the checkpoint holds `name` (canonical spelling).
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Tensor `name` without taking it (for tools that copy a checkpoint tensor by tensor, such as
    /// the GGUF exporter); `None` if absent.
    pub fn peek(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(name)
    }

    /// Names that start with `prefix`.
    pub fn names_with_prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.tensors.range(prefix.to_string()..).map(|(k, _)| k.as_str()).take_while(move |k| k.starts_with(prefix))
    }

    /// Takes tensor `name`, checking its shape. A missing tensor is recorded for
    /// [`Weights::finish`] and a shape-only placeholder is returned so loading can go on and report
    /// every missing name at once; a placeholder never reaches a forward pass because `finish`
    /// fails first.
    ///
    /// Errors: [`Error::TensorShape`] when the stored shape differs from `shape`.
    pub fn take(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let Some(t) = self.tensors.get(name) else {
            self.missing.push(name.to_string());
            return Ok(Tensor::placeholder(shape.to_vec()));
        };
        if t.shape() != shape {
            return Err(Error::TensorShape { name: name.to_string(), expected: shape.to_vec(), got: t.shape().to_vec() });
        }
        self.used.insert(name.to_string());
        if PREFAULT.load(Ordering::Relaxed) {
            t.prefault();
        }
        Ok(t.clone())
    }

    /// Takes `name` if present (optional tensors such as biases); `None` otherwise.
    pub fn take_opt(&mut self, name: &str, shape: &[usize]) -> Result<Option<Tensor>> {
        if self.contains(name) {
            self.take(name, shape).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Takes `name` and converts it to f32 (router weights, biases and norms are small and used in
    /// f32: spec §2.6).
    pub fn take_f32(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let t = self.take(name, shape)?;
        Ok(if t.is_placeholder() { vec![0.0; shape.iter().product()] } else { t.to_f32_vec() })
    }

    /// Marks every tensor whose name starts with `prefix` as used and returns them (tensors kept
    /// for later features, such as the MTP module, or deliberately ignored, such as a tied head).
    pub fn take_prefix(&mut self, prefix: &str) -> BTreeMap<String, Tensor> {
        let names: Vec<String> = self.names_with_prefix(prefix).map(str::to_string).collect();
        names
            .into_iter()
            .filter_map(|n| {
                let t = self.tensors.get(&n).cloned();
                self.used.insert(n.clone());
                t.map(|t| (n, t))
            })
            .collect()
    }

    /// Fails with [`Error::TensorSet`] listing every missing and every unused tensor.
    pub fn finish(self) -> Result<()> {
        let unused: Vec<String> = self.tensors.keys().filter(|k| !self.used.contains(*k)).cloned().collect();
        if self.missing.is_empty() && unused.is_empty() {
            return Ok(());
        }
        Err(Error::TensorSet { missing: self.missing, unused })
    }
}

