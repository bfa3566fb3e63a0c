//! Never a panic: every file under `../shared/media/audio` (including `audio/edge_wav/`) and
//! `../shared/media/video`, the GIFs, and truncated and bit-flipped copies of each, through the
//! whole audio / video pipeline. Each run must return `Ok` or a typed error whose message names
//! the file; a panic anywhere fails the test (all cases run, then the failures are listed).
//!
//! Corrupt copies are deterministic (xorshift with a fixed seed) and written to a temp dir.

mod common;

use common::{media_dir, root};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use tokenizers_mm::audio::{preprocess_audio, AudioConfig};
use tokenizers_mm::video::{load_video, VideoConfig};
use tokenizers_mm::{Error, Limits};



fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if !p.extension().is_some_and(|x| x == "txt" || x == "md") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// `(label, bytes)` variants of one file: itself, truncations, bit flips.
fn variants(bytes: &[u8], seed: u64) -> Vec<(String, Vec<u8>)> {
    let n = bytes.len();
    let mut out = vec![("orig".to_string(), bytes.to_vec())];
    let mut cuts: Vec<usize> = vec![0, 1, 4, 12, 44, 100, n / 3, n / 2, n.saturating_sub(1)];
    cuts.retain(|&c| c < n);
    cuts.dedup();
    for c in cuts {
        out.push((format!("trunc{c}"), bytes[..c].to_vec()));
    }
    let mut rng = Rng(seed | 1);
    for (k, flips) in [1usize, 4, 16, 64, 256].into_iter().enumerate() {
        if n == 0 {
            break;
        }
        let mut b = bytes.to_vec();
        for _ in 0..flips {
            let bit = (rng.next() % (n as u64 * 8)) as usize;
            b[bit / 8] ^= 1 << (bit % 8);
        }
        out.push((format!("flip{flips}#{k}"), b));
    }
    // Header-targeted flips: the first 64 bytes hold the container headers.
    for k in 0..4 {
        let mut b = bytes.to_vec();
        let at = (rng.next() % (n.min(64) as u64).max(1)) as usize;
        if at < n {
            b[at] ^= 0xFF;
            out.push((format!("hdr{at}#{k}"), b));
        }
    }
    out
}

#[derive(Default)]
struct Tally {
    ok: usize,
    errors: usize,
    failures: Vec<String>,
}

fn run_case<T>(tally: &mut Tally, path: &Path, label: &str, f: impl FnOnce() -> Result<T, Error>) {
    let name = path.file_name().unwrap().to_string_lossy().to_string();
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(_)) => tally.ok += 1,
        Ok(Err(e)) => {
            tally.errors += 1;
            let msg = e.to_string();
            let names_file = msg.contains(&name) || matches!(e, Error::InvalidConfig { .. });
            if !names_file {
                tally.failures.push(format!("{name} [{label}]: error does not name the file: {msg}"));
            }
        }
        Err(p) => {
            let what = p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()));
            tally.failures.push(format!("{name} [{label}]: PANIC {}", what.unwrap_or_default()));
        }
    }
}

#[test]
fn audio_corpus_and_corruptions_never_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = AudioConfig::default();
    let limits = Limits::default();
    let mut tally = Tally::default();
    for (i, src) in files_under(&media_dir().join("audio")).into_iter().enumerate() {
        let bytes = std::fs::read(&src).unwrap();
        for (label, b) in variants(&bytes, 0x9E37_79B9_7F4A_7C15 ^ i as u64) {
            let path = tmp.path().join(src.file_name().unwrap());
            std::fs::write(&path, &b).unwrap();
            run_case(&mut tally, &path, &label, || preprocess_audio(&path, &cfg, &limits));
        }
        // The originals must all be accepted or refused consistently with the corpus notes.
        let res = preprocess_audio(&src, &cfg, &limits);
        eprintln!(
            "{}: {}",
            src.strip_prefix(media_dir()).unwrap().display(),
            match &res {
                Ok(a) => format!("ok {} {} Hz x{} -> {} samples, mel {}x{}, {} tokens", a.codec, a.source_sample_rate, a.source_channels, a.samples.len(), a.mel.n_mels, a.mel.n_frames, a.n_tokens),
                Err(e) => format!("error: {e}"),
            }
        );
    }
    eprintln!("audio: {} ok, {} typed errors, {} failures", tally.ok, tally.errors, tally.failures.len());
    assert!(tally.failures.is_empty(), "{}", tally.failures.join("\n"));
}

#[test]
fn video_corpus_gifs_and_corruptions_never_panic() {
    let tmp = tempfile::tempdir().unwrap();
    // Smaller frames keep the many corrupted runs fast; sampling is the processor's.
    let cfg = VideoConfig { min_pixels: 28 * 28, max_pixels: 56 * 56 * 4, ..Default::default() };
    let limits = Limits::default();
    let mut tally = Tally::default();
    let mut sources = files_under(&media_dir().join("video"));
    sources.push(media_dir().join("images/chelsea_tiny_12x8.gif"));
    sources.push(root().join("tests/fixtures/av/anim_7f.gif"));
    for (i, src) in sources.into_iter().enumerate() {
        let bytes = std::fs::read(&src).unwrap();
        for (label, b) in variants(&bytes, 0xD1B5_4A32_D192_ED03 ^ i as u64) {
            let path = tmp.path().join(src.file_name().unwrap());
            std::fs::write(&path, &b).unwrap();
            run_case(&mut tally, &path, &label, || load_video(&path, &cfg, &limits));
        }
    }
    eprintln!("video: {} ok, {} typed errors, {} failures", tally.ok, tally.errors, tally.failures.len());
    assert!(tally.failures.is_empty(), "{}", tally.failures.join("\n"));
}

#[test]
fn limits_refuse_before_decoding() {
    let media = media_dir();
    let wav = media.join("audio/espeak_en_44k1_s24_stereo.wav");
    let tight = Limits { max_audio_seconds: 1.0, ..Limits::default() };
    match preprocess_audio(&wav, &AudioConfig::default(), &tight) {
        Err(Error::LimitExceeded { what, .. }) => assert_eq!(what, "audio duration (s)"),
        other => panic!("expected a duration limit error, got {other:?}"),
    }
    let small = Limits { max_file_bytes: 1000, ..Limits::default() };
    match preprocess_audio(&wav, &AudioConfig::default(), &small) {
        Err(Error::LimitExceeded { what, .. }) => assert_eq!(what, "file size (bytes)"),
        other => panic!("expected a file size limit error, got {other:?}"),
    }
    let gif = root().join("tests/fixtures/av/anim_7f.gif");
    let few = Limits { max_video_frames: 3, ..Limits::default() };
    match load_video(&gif, &VideoConfig::default(), &few) {
        Err(Error::LimitExceeded { what, .. }) => assert_eq!(what, "video frames"),
        other => panic!("expected a frame limit error, got {other:?}"),
    }
    let tiny = Limits { max_pixels: 100, ..Limits::default() };
    match load_video(&gif, &VideoConfig::default(), &tiny) {
        Err(Error::LimitExceeded { what, .. }) => assert_eq!(what, "decoded pixels"),
        other => panic!("expected a pixel limit error, got {other:?}"),
    }
}
