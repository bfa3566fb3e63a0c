//! CPU benchmark of the ERNIE-4.5-VL image preprocessing for one 1920×1080 photo-like image.
//!
//! | stage                 | shape                                          |
//! |-----------------------|------------------------------------------------|
//! | input                 | JPEG q90 4:2:0 (in memory), 1920 × 1080        |
//! | decode                | → `[1080, 1920, 3]` u8                          |
//! | smart_resize + resize | → `[1092, 1932, 3]` u8 (Pillow bicubic, 2 passes)|
//! | normalise + patchify  | → `[10764, 588]` f32, grid_thw `[1, 78, 138]`  |
//! | tokens                | 2691 LLM tokens                                |
//!
//! Throughput is reported in source pixels per second. JPEG decoding uses libjpeg-turbo with
//! `--features turbojpeg` and zune-jpeg (the `image` crate) otherwise.
//!
//! Run: `cargo bench --bench preprocess [--features turbojpeg]` (about a minute on 2 cores).

use std::io::Cursor;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tokenizers_mm::image::{decode_image_bytes, normalize_patchify, resize, AlphaMode, Filter, ImageProcessor, ImageProcessorConfig, RgbImage};
use tokenizers_mm::Limits;

const W: u32 = 1920;
const H: u32 = 1080;

/// A smooth gradient with texture (so the JPEG has realistic entropy), encoded as JPEG q90.
fn test_jpeg() -> Vec<u8> {
    let img = image::RgbImage::from_fn(W, H, |x, y| {
        let n = (x.wrapping_mul(2654435761) ^ y.wrapping_mul(40503)) >> 27;
        image::Rgb([(x / 8 + n) as u8, (y / 5 + 2 * n) as u8, ((x + y) / 12) as u8])
    });
    let mut out = Vec::new();
    let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(Cursor::new(&mut out), 90);
    img.write_with_encoder(enc).expect("encoding the synthetic JPEG");
    out
}

fn bench(c: &mut Criterion) {
    let jpeg = test_jpeg();
    let name = Path::new("bench.jpg");
    let limits = Limits::default();
    let proc = ImageProcessor::new(ImageProcessorConfig::default());
    let decoded: RgbImage = decode_image_bytes(&jpeg, name, &limits, AlphaMode::default()).expect("decode").rgb;
    let resized = proc.resize_rgb(&decoded, name).expect("resize");
    assert_eq!((resized.height, resized.width), (1092, 1932));

    let mut g = c.benchmark_group("preprocess_1920x1080");
    g.throughput(Throughput::Elements(u64::from(W * H)));
    g.sample_size(20);
    g.bench_function("decode_jpeg", |b| b.iter(|| decode_image_bytes(&jpeg, name, &limits, AlphaMode::default()).map(|d| d.rgb.data.len())));
    g.bench_function("resize_bicubic", |b| b.iter(|| resize(&decoded, 1932, 1092, Filter::Bicubic).data.len()));
    g.bench_function("normalize_patchify", |b| b.iter(|| normalize_patchify(name, &resized, &proc.config).map(|p| p.0.len())));
    g.bench_function("full_pipeline", |b| b.iter(|| proc.process_bytes(&jpeg, name).map(|p| p.pixel_values.len())));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
