//! Fuzz the whole image path on arbitrary bytes: format sniffing, header checks, every decoder
//! (png, jpeg, webp, gif, bmp, tiff), Pillow-mode conversion, EXIF orientation, smart_resize,
//! the two-pass resize and patchify. Any panic, abort or sanitizer report is a bug; errors are
//! expected. Limits are small so each input stays fast (a 2048x2048 header is refused before
//! decoding, the resize target is at most 64 patches of 28x28).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use tokenizers_mm::image::{ImageProcessor, ImageProcessorConfig};
use tokenizers_mm::Limits;

fuzz_target!(|data: &[u8]| {
    let config = ImageProcessorConfig { max_pixels: 28 * 28 * 64, ..ImageProcessorConfig::default() };
    let mut proc = ImageProcessor::new(config);
    proc.limits = Limits { max_file_bytes: 1 << 22, max_pixels: 1 << 22, ..Limits::default() };
    if let Ok(p) = proc.process_bytes(data, Path::new("fuzz-input")) {
        assert_eq!(p.pixel_values.len(), p.grid_thw[1] * p.grid_thw[2] * p.patch_dim);
    }
});
