//! Pooling final hidden states `[t, h]` into one embedding `[h]`, and L2 normalisation (the
//! numeric half of `Engine::embed`).

use crate::{Error, Result};

/// How hidden rows `[t, h]` become one vector `[h]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Pooling {
    /// Row `t - 1`: with causal attention the last token is the only one that has seen the whole
    /// input, which is why decoder embedders (e5-mistral, Qwen3-Embedding) pool there.
    #[default]
    Last,
    /// The mean of all `t` rows.
    Mean,
    /// `<|end_of_sentence|>` is appended to the input and its row (`t`, the new last) is returned:
    /// the model's own end-of-text marker, so every input ends on the same token.
    EndOfSentence,
}

impl std::str::FromStr for Pooling {
    type Err = Error;

    fn from_str(s: &str) -> Result<Pooling> {
        match s {
            "last" => Ok(Pooling::Last),
            "mean" => Ok(Pooling::Mean),
            "eos" | "end_of_sentence" => Ok(Pooling::EndOfSentence),
            _ => Err(Error::Request(format!("unknown pooling {s:?} (expected last, mean or eos)"))),
        }
    }
}

/// Pools hidden rows `[t, h]` into `[h]` per `pooling` (for `EndOfSentence` the appended token is
/// the last row, so it pools like `Last`). No rows (or `h == 0`) gives zeros `[h]`.
pub fn pool(hidden: &[f32], h: usize, pooling: Pooling) -> Vec<f32> {
    let t = hidden.len().checked_div(h).unwrap_or(0);
    if t == 0 {
        return vec![0.0; h];
    }
    match pooling {
        Pooling::Last | Pooling::EndOfSentence => hidden[(t - 1) * h..t * h].to_vec(),
        Pooling::Mean => {
            // Sum in f64: t can be thousands of rows and the mean should not depend on t's size.
            let mut sum = vec![0.0f64; h];
            for row in hidden.chunks_exact(h) {
                sum.iter_mut().zip(row).for_each(|(s, &x)| *s += x as f64);
            }
            sum.iter().map(|s| (s / t as f64) as f32).collect()
        }
    }
}

/// Scales `v` to unit L2 norm; an all-zero vector stays zero (no direction to keep).
pub fn l2_normalize(v: &mut [f32]) {
    let norm = v.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x = (*x as f64 / norm) as f32);
    }
}
