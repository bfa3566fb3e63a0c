//! CPU benchmark of the audio and video preprocessing (tokenizers-mm).
//!
//! | case            | input                                           | output                                    |
//! |-----------------|-------------------------------------------------|-------------------------------------------|
//! | audio 30 s      | 44.1 kHz stereo f32, 30 s (synthesised here)    | mono 16 kHz `[480 000]` → mel `[80, 3000]`, 375 tokens |
//! | ├ downmix+resample | `[2, 1 323 000]`                             | `[480 000]` (rubato sinc, 160 phases)     |
//! | └ log-mel       | `[480 000]` @ 16 kHz                            | `[80, 3000]` f32                          |
//! | video 10 s 720p | H.264 1280×720 30 fps, 300 frames (ffmpeg CLI)  | 180 frames 728×1288, overlay, grid `[180, 52, 92]`, 107 640 tokens |
//!
//! Throughput: audio in seconds of audio per second; video in source frames per second (all 300
//! are decoded, 180 are sampled, stamped and resized). The video case needs `--features ffmpeg`
//! and the `ffmpeg` CLI (Debian package `ffmpeg`) to synthesise the clip in a temp dir; without
//! either it prints why and skips.
//!
//! Run: `cargo bench --bench preprocess_av [--features ffmpeg]`.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tokenizers_mm::audio::{downmix_mean, resample, MelConfig, MelExtractor};

const SR_IN: u32 = 44_100;
const SECONDS: usize = 30;

/// Deterministic stereo "speech-like" signal: a few harmonics with slow vibrato plus noise.
fn stereo_clip() -> Vec<Vec<f32>> {
    let n = SR_IN as usize * SECONDS;
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut noise = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    let mut left = Vec::with_capacity(n);
    let mut right = Vec::with_capacity(n);
    for i in 0..n {
        let t = i as f64 / f64::from(SR_IN);
        let f0 = 140.0 + 20.0 * (2.0 * std::f64::consts::PI * 0.7 * t).sin();
        let v: f64 = (1..6).map(|k| (2.0 * std::f64::consts::PI * f0 * k as f64 * t).sin() / k as f64).sum();
        left.push((0.2 * v) as f32 + 0.01 * noise());
        right.push((0.15 * v) as f32 + 0.01 * noise());
    }
    vec![left, right]
}

fn bench_audio(c: &mut Criterion) {
    let planes = stereo_clip();
    let mel = MelExtractor::new(&MelConfig::whisper(80)).expect("mel config");
    let mut g = c.benchmark_group("audio_30s_44k1_stereo");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.throughput(Throughput::Elements(SECONDS as u64)); // seconds of audio
    g.bench_function("downmix+resample+logmel", |b| {
        b.iter(|| {
            let mono = downmix_mean(&planes);
            let x = resample(&mono, SR_IN, 16_000).expect("resample");
            let m = mel.compute(&x).expect("mel");
            assert_eq!((m.n_mels, m.n_frames), (80, 3000));
            m
        })
    });
    let mono = downmix_mean(&planes);
    g.bench_function("downmix+resample", |b| b.iter(|| resample(&downmix_mean(&planes), SR_IN, 16_000).expect("resample")));
    let x = resample(&mono, SR_IN, 16_000).expect("resample");
    g.bench_function("logmel_80", |b| b.iter(|| mel.compute(&x).expect("mel")));
    g.finish();
}

#[cfg(feature = "ffmpeg")]
fn bench_video(c: &mut Criterion) {
    use std::time::Instant;

    use tokenizers_mm::video::{load_video, VideoConfig};
    use tokenizers_mm::Limits;
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => return eprintln!("video bench skipped: no temp dir ({e})"),
    };
    let path = dir.path().join("testsrc2_720p_10s.mp4");
    let made = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30:duration=10"])
        .args(["-c:v", "libx264", "-pix_fmt", "yuv420p", "-preset", "veryfast", "-y"])
        .arg(&path)
        .status();
    match made {
        Ok(s) if s.success() => {}
        Ok(s) => return eprintln!("video bench skipped: ffmpeg CLI failed ({s})"),
        Err(e) => return eprintln!("video bench skipped: no ffmpeg CLI ({e}); apt-get install ffmpeg"),
    }
    let cfg = VideoConfig::default();
    let limits = Limits::default();
    let mut g = c.benchmark_group("video_10s_720p");
    g.sample_size(10).measurement_time(Duration::from_secs(30));
    g.throughput(Throughput::Elements(300)); // source frames
    g.bench_function("decode+sample+overlay+resize", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                let v = load_video(&path, &cfg, &limits).expect("video");
                assert_eq!(v.grid_thw, [180, 52, 92]);
            }
            start.elapsed()
        })
    });
    g.bench_function("…+normalise+patchify", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                let v = load_video(&path, &cfg, &limits).expect("video");
                let px = v.pixel_values(&cfg).expect("patches");
                assert_eq!(px.len(), 180 * 52 * 92 * 588);
            }
            start.elapsed()
        })
    });
    g.finish();
}

#[cfg(not(feature = "ffmpeg"))]
fn bench_video(_c: &mut Criterion) {
    eprintln!("video bench skipped: built without the `ffmpeg` feature (cargo bench --bench preprocess_av --features ffmpeg)");
}

criterion_group!(benches, bench_audio, bench_video);
criterion_main!(benches);
