//! The decoded-image type every image path produces: 8-bit RGB, interleaved.

/// An 8-bit RGB image, interleaved, row-major: `data[(y * width + x) * 3 + c]`, `[H, W, 3]` u8.
#[derive(Clone, PartialEq, Eq)]
pub struct RgbImage {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `[H, W, 3]` u8, `width * height * 3` bytes.
    pub data: Vec<u8>,
}

impl std::fmt::Debug for RgbImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RgbImage({}x{} WxH)", self.width, self.height)
    }
}

impl RgbImage {
    /// Wraps `[H, W, 3]` bytes; `None` when the length does not match.
    pub fn from_raw(width: u32, height: u32, data: Vec<u8>) -> Option<RgbImage> {
        (data.len() as u64 == u64::from(width) * u64::from(height) * 3).then_some(RgbImage { width, height, data })
    }
}
