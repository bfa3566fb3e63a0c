//! Per-layer expert load by modality: how many routing slots each expert of each MoE layer
//! received from text, image, video and audio tokens, written as JSON and as a heatmap PNG (the
//! routing visualisation of the ERNIE 5.0 report, which shows modality-specific experts emerging
//! in a modality-agnostic router).
//!
//! Worked example: layer 1 routes 2 text tokens among 4 experts with top-2, ids `[[0, 1], [0, 3]]`
//! (`add(1, 0, 4, 2, &[0, 1, 0, 3])`). Then text load at layer 1 is `[2, 1, 0, 1]` and fraction
//! `[0.5, 0.25, 0, 0.25]` (count / (tokens · k)); the heatmap's text panel has one column (layer
//! 1) of 4 cells, expert 0 the brightest.
//!
//! Heatmap layout (pixels): one panel per modality present (text, image, video, audio order),
//! side by side `PANEL_GAP_PX` apart inside a `MARGIN_PX` border. A panel is a title strip
//! (`TITLE_PX` high: "text: 123 tokens", then the axis hints "layer 1-27 →  expert ↓") above a grid
//! of experts (rows, expert 0 at the top) × layers (columns, in the order of the JSON `layers`),
//! each cell `CELL_PX` square including its 1 px grid line. A cell's colour is its load fraction
//! divided by the panel's largest fraction, through a viridis lookup table (dark purple = no
//! load, yellow = the panel's hottest expert).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::Path;

use ab_glyph::{point, Font, FontRef, GlyphId, PxScale, ScaleFont};
use image::codecs::png::PngEncoder;
use image::{ExtendedColorType, ImageEncoder, Rgb, RgbImage};
use serde_json::{json, Value};

use crate::{Error, Result};

mod collect;
pub use collect::IMAGE_GEN_MODALITY;

/// Modality names by id (the `modality` argument of [`RoutingStats::add`]).
pub const MODALITY_NAMES: [&str; 5] = ["text", "image", "video", "audio", "image_gen"];

/// Side of one heatmap cell, pixels, including its 1 px grid line (top/left edge).
const CELL_PX: u32 = 12;
/// Border around the whole image.
const MARGIN_PX: u32 = 8;
/// Horizontal space between two panels.
const PANEL_GAP_PX: u32 = 24;
/// Height of the title strip above each grid (title line + axis-hint line).
const TITLE_PX: u32 = 36;
/// Narrowest panel, so the title fits even with few layers.
const MIN_PANEL_W: u32 = 168;
/// Font sizes of the title and the axis hints.
const TITLE_FONT_PX: f32 = 14.0;
const HINT_FONT_PX: f32 = 11.0;

const BACKGROUND: Rgb<u8> = Rgb([255, 255, 255]);
const GRID: Rgb<u8> = Rgb([210, 210, 210]);
const INK: Rgb<u8> = Rgb([30, 30, 30]);

/// Routing counts of one (modality, layer).
#[derive(Clone, Debug, Default, PartialEq)]
struct LayerLoad {
    /// Tokens counted (`expert_ids.len() / top_k` summed over calls).
    tokens: u64,
    /// Routing slots counted (`expert_ids.len()` summed), the fraction's denominator.
    slots: u64,
    /// `[num_experts]` slots per expert.
    load: Vec<u64>,
}

/// Everything recorded for one modality.
#[derive(Clone, Debug, Default, PartialEq)]
struct ModalityStats {
    /// Largest `num_experts` seen.
    num_experts: usize,
    /// Largest `top_k` seen.
    top_k: usize,
    /// Expert ids ≥ `num_experts` (ignored, but counted in the slots).
    out_of_range: u64,
    /// By checkpoint layer index.
    layers: BTreeMap<usize, LayerLoad>,
}

/// One modality's counts laid out over the JSON `layers`.
struct Table<'a> {
    name: &'static str,
    stats: &'a ModalityStats,
    /// `[layers, E]` slot counts.
    load: Vec<Vec<u64>>,
    /// `[layers, E]` count / slots.
    fraction: Vec<Vec<f64>>,
}

impl Table<'_> {
    /// The largest per-layer token count (every MoE layer sees the same tokens in a normal forward).
    fn tokens(&self) -> u64 {
        self.stats.layers.values().map(|l| l.tokens).max().unwrap_or(0)
    }
}

/// Expert load per MoE layer and modality; see the module docs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RoutingStats {
    /// By modality id (0 text, 1 image, 2 video, 3 audio, 4 generated image tokens).
    modalities: [Option<ModalityStats>; 5],
    /// Tokens passed with a modality id > 4 (not counted anywhere else).
    unknown_modality_tokens: u64,
}

impl RoutingStats {
    /// No routing recorded yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether nothing has been recorded (then [`RoutingStats::write_heatmap_png`] errors).
    pub fn is_empty(&self) -> bool {
        self.modalities.iter().all(Option::is_none)
    }

    /// Counts one routing decision batch: for layer `layer` (checkpoint index), tokens of `modality`
    /// (0 text, 1 image, 2 video, 3 audio) routed among `num_experts` experts; `expert_ids` is
    /// `[tokens, top_k]` flattened.
    ///
    /// Never panics on bad input: an expert id ≥ `num_experts` is not counted for any expert but
    /// is counted in the modality's `out_of_range` (and in the slots, so fractions then sum to
    /// less than 1); a modality id > 3 only increments `unknown_modality_tokens`; a length that is
    /// not a multiple of `top_k` counts `len / top_k` tokens (floor) and `len` slots.
    pub fn add(&mut self, layer: usize, modality: u8, num_experts: usize, top_k: usize, expert_ids: &[u32]) {
        let tokens = expert_ids.len().checked_div(top_k).unwrap_or(0) as u64;
        let Some(slot) = self.modalities.get_mut(usize::from(modality)) else {
            self.unknown_modality_tokens += tokens;
            return;
        };
        let m = slot.get_or_insert_with(ModalityStats::default);
        m.num_experts = m.num_experts.max(num_experts);
        m.top_k = m.top_k.max(top_k);
        let l = m.layers.entry(layer).or_default();
        if l.load.len() < num_experts {
            l.load.resize(num_experts, 0);
        }
        l.tokens += tokens;
        l.slots += expert_ids.len() as u64;
        for &id in expert_ids {
            match l.load.get_mut(id as usize).filter(|_| (id as usize) < num_experts) {
                Some(count) => *count += 1,
                None => m.out_of_range += 1,
            }
        }
    }

    /// Sorted union of the layers any modality was recorded at.
    fn layers(&self) -> Vec<usize> {
        let set: BTreeSet<usize> = self.modalities.iter().flatten().flat_map(|m| m.layers.keys().copied()).collect();
        set.into_iter().collect()
    }

    /// One [`Table`] per modality present, in id order; rows follow `layers`, a layer the modality
    /// never reached is all zeros.
    fn tables(&self, layers: &[usize]) -> Vec<Table<'_>> {
        let mut out = Vec::new();
        for (name, m) in MODALITY_NAMES.iter().zip(&self.modalities) {
            let Some(m) = m else { continue };
            let mut load = Vec::with_capacity(layers.len()); // [layers, E]
            let mut fraction = Vec::with_capacity(layers.len()); // [layers, E]
            for layer in layers {
                let mut row = vec![0u64; m.num_experts];
                let mut slots = 0;
                if let Some(l) = m.layers.get(layer) {
                    row[..l.load.len()].copy_from_slice(&l.load);
                    slots = l.slots;
                }
                fraction.push(row.iter().map(|&c| if slots == 0 { 0.0 } else { c as f64 / slots as f64 }).collect());
                load.push(row);
            }
            out.push(Table { name, stats: m, load, fraction });
        }
        out
    }

    /// The statistics as JSON:
    /// `{"layers": [1, 2, 3], "modalities": {"text": {"tokens": n, "top_k": k, "num_experts": E,
    /// "out_of_range": 0, "load": [[count per expert] per layer], "fraction": [[count / (tokens·k)]
    /// per layer]}, "image": {…}}}`. Only modalities that occurred appear; `layers` is sorted and
    /// the union over modalities; `tokens` is the largest per-layer token count (every MoE layer
    /// sees the same tokens in a normal forward); `unknown_modality_tokens` appears only when
    /// non-zero.
    pub fn to_json(&self) -> Value {
        let layers = self.layers();
        let mut modalities = serde_json::Map::new();
        for t in self.tables(&layers) {
            modalities.insert(
                t.name.to_string(),
                json!({
                    "tokens": t.tokens(),
                    "top_k": t.stats.top_k,
                    "num_experts": t.stats.num_experts,
                    "out_of_range": t.stats.out_of_range,
                    "load": t.load,
                    "fraction": t.fraction,
                }),
            );
        }
        let mut v = json!({ "layers": layers, "modalities": modalities });
        if self.unknown_modality_tokens > 0 {
            v["unknown_modality_tokens"] = json!(self.unknown_modality_tokens);
        }
        v
    }

    /// Writes [`RoutingStats::to_json`] (pretty-printed) to `path`.
    ///
    /// Errors: [`Error::Io`] naming `path`.
    pub fn write_json(&self, path: &Path) -> Result<()> {
        let mut text = serde_json::to_string_pretty(&self.to_json())
            .map_err(|e| Error::Io { path: path.to_path_buf(), source: io::Error::other(e) })?;
        text.push('\n');
        fs::write(path, text).map_err(|source| Error::Io { path: path.to_path_buf(), source })
    }

    /// Renders the heatmap (module docs) and writes it to `path` as PNG, whatever the extension.
    ///
    /// Errors: [`Error::Request`] ("no MoE routing was recorded") when nothing was added, e.g.
    /// for a dense model; [`Error::Io`] naming `path` when it cannot be written.
    pub fn write_heatmap_png(&self, path: &Path) -> Result<()> {
        let img = self.render_heatmap().map_err(|e| match e {
            Error::Io { source, .. } => Error::Io { path: path.to_path_buf(), source },
            other => other,
        })?;
        let mut png = Vec::new();
        PngEncoder::new(&mut png)
            .write_image(img.as_raw(), img.width(), img.height(), ExtendedColorType::Rgb8)
            .map_err(|e| Error::Io { path: path.to_path_buf(), source: io::Error::other(e) })?;
        fs::write(path, png).map_err(|source| Error::Io { path: path.to_path_buf(), source })
    }

    /// The heatmap as an RGB image (see [`heatmap_size`] for its size).
    fn render_heatmap(&self) -> Result<RgbImage> {
        if self.is_empty() {
            return Err(Error::Request("no MoE routing was recorded".into()));
        }
        let layers = self.layers();
        let tables = self.tables(&layers);
        let panels: Vec<usize> = tables.iter().map(|t| t.stats.num_experts).collect();
        let (width, height) = heatmap_size(layers.len(), &panels);
        let font = FontRef::try_from_slice(tokenizers_mm::video::ROBOTO_REGULAR).map_err(|e| Error::Io {
            path: "<bundled Roboto-Regular.ttf>".into(),
            source: io::Error::new(io::ErrorKind::InvalidData, e),
        })?;
        let mut img = RgbImage::from_pixel(width, height, BACKGROUND);
        let mut x0 = MARGIN_PX;
        for t in &tables {
            let panel_w = panel_width(layers.len());
            let clip = x0 + panel_w;
            draw_text(&mut img, &font, TITLE_FONT_PX, x0, MARGIN_PX, clip, &format!("{}: {} tokens", t.name, t.tokens()));
            let hint_y = MARGIN_PX + 19;
            // Columns are the recorded layers in order; name the first and last.
            let first_last = match (layers.first(), layers.last()) {
                (Some(a), Some(b)) if a != b => format!("layer {a}-{b}"),
                (Some(a), _) => format!("layer {a}"),
                _ => "layer".to_string(),
            };
            let x = draw_text(&mut img, &font, HINT_FONT_PX, x0, hint_y, clip, &first_last);
            draw_arrow(&mut img, x + 3, hint_y + 7, Direction::Right, clip);
            let x = draw_text(&mut img, &font, HINT_FONT_PX, x + 24, hint_y, clip, "expert");
            draw_arrow(&mut img, x + 6, hint_y + 7, Direction::Down, clip);

            // Grid: column = layer, row = expert, each cell CELL_PX with a grid line on its top/left.
            let top = MARGIN_PX + TITLE_PX;
            let max = t.fraction.iter().flatten().fold(0.0f64, |a, &b| a.max(b));
            let (grid_w, grid_h) = (layers.len() as u32 * CELL_PX + 1, t.stats.num_experts as u32 * CELL_PX + 1);
            for y in top..top + grid_h {
                for x in x0..x0 + grid_w {
                    img.put_pixel(x, y, GRID);
                }
            }
            for (col, row) in t.fraction.iter().enumerate() {
                for (expert, &f) in row.iter().enumerate() {
                    let color = viridis(if max > 0.0 { f / max } else { 0.0 });
                    let (cx, cy) = (x0 + col as u32 * CELL_PX + 1, top + expert as u32 * CELL_PX + 1);
                    for y in cy..cy + CELL_PX - 1 {
                        for x in cx..cx + CELL_PX - 1 {
                            img.put_pixel(x, y, color);
                        }
                    }
                }
            }
            x0 += panel_w + PANEL_GAP_PX;
        }
        Ok(img)
    }
}

/// Width of one panel for `n_layers` columns: the grid (cells plus the closing grid line) or the
/// minimum that fits the title, whichever is wider.
fn panel_width(n_layers: usize) -> u32 {
    (n_layers as u32 * CELL_PX + 1).max(MIN_PANEL_W)
}

/// `(width, height)` of the heatmap for `n_layers` columns and one panel per entry of
/// `panel_experts` (its expert count): panels side by side with gaps, inside the margin; the
/// height is the title strip plus the tallest grid.
fn heatmap_size(n_layers: usize, panel_experts: &[usize]) -> (u32, u32) {
    let n = panel_experts.len() as u32;
    let width = 2 * MARGIN_PX + n * panel_width(n_layers) + n.saturating_sub(1) * PANEL_GAP_PX;
    let tallest = panel_experts.iter().map(|&e| e as u32 * CELL_PX + 1).max().unwrap_or(0);
    (width, 2 * MARGIN_PX + TITLE_PX + tallest)
}

/// matplotlib's viridis at 0, 1/8, …, 1 (sRGB); [`viridis`] interpolates linearly between them.
const VIRIDIS: [[u8; 3]; 9] = [
    [68, 1, 84],
    [71, 44, 122],
    [59, 81, 139],
    [44, 113, 142],
    [33, 144, 141],
    [39, 173, 129],
    [92, 200, 99],
    [170, 220, 50],
    [253, 231, 37],
];

/// Colour of `v` in [0, 1] (clamped; NaN maps to 0).
fn viridis(v: f64) -> Rgb<u8> {
    let v = if v.is_nan() { 0.0 } else { v.clamp(0.0, 1.0) };
    let pos = v * (VIRIDIS.len() - 1) as f64;
    let i = (pos.floor() as usize).min(VIRIDIS.len() - 2);
    let t = pos - i as f64;
    let (a, b) = (VIRIDIS[i], VIRIDIS[i + 1]);
    Rgb(std::array::from_fn(|c| (a[c] as f64 + (b[c] as f64 - a[c] as f64) * t).round() as u8))
}

/// Draws `text` with its top at `y` (ascender line) from `x`, clipped at `clip_x`; returns the
/// pen position after the last glyph. Glyphs missing from Roboto (e.g. arrows) draw nothing.
fn draw_text(img: &mut RgbImage, font: &FontRef<'_>, px: f32, x: u32, y: u32, clip_x: u32, text: &str) -> u32 {
    let scaled = font.as_scaled(PxScale::from(px));
    let baseline = y as f32 + scaled.ascent();
    let mut pen = x as f32;
    let mut prev: Option<GlyphId> = None;
    for c in text.chars() {
        let id = scaled.glyph_id(c);
        if let Some(p) = prev {
            pen += scaled.kern(p, id);
        }
        let glyph = id.with_scale_and_position(px, point(pen, baseline));
        pen += scaled.h_advance(id);
        prev = Some(id);
        let Some(outline) = font.outline_glyph(glyph) else { continue };
        let bounds = outline.px_bounds();
        outline.draw(|gx, gy, coverage| {
            let (x, y) = (bounds.min.x as i64 + i64::from(gx), bounds.min.y as i64 + i64::from(gy));
            if x >= 0 && y >= 0 && x < i64::from(clip_x.min(img.width())) && y < i64::from(img.height()) {
                let p = img.get_pixel_mut(x as u32, y as u32);
                let a = coverage.clamp(0.0, 1.0);
                *p = Rgb(std::array::from_fn(|c| (p[c] as f32 * (1.0 - a) + INK[c] as f32 * a).round() as u8));
            }
        });
    }
    pen.ceil().max(0.0) as u32
}

#[derive(Clone, Copy)]
enum Direction {
    Right,
    Down,
}

/// A small arrow (Roboto has no arrow glyphs): a 1 px shaft with a 3 px head, starting at
/// `(x, y)` for a right arrow (shaft 14 px) or centred on `x` for a down arrow (shaft 9 px).
fn draw_arrow(img: &mut RgbImage, x: u32, y: u32, dir: Direction, clip_x: u32) {
    let mut put = |x: i64, y: i64| {
        if x >= 0 && y >= 0 && x < i64::from(clip_x.min(img.width())) && y < i64::from(img.height()) {
            img.put_pixel(x as u32, y as u32, INK);
        }
    };
    let (x, y) = (i64::from(x), i64::from(y));
    match dir {
        Direction::Right => {
            let len = 14;
            (0..len).for_each(|i| put(x + i, y));
            (1..=3).for_each(|i| {
                put(x + len - 1 - i, y - i);
                put(x + len - 1 - i, y + i);
            });
        }
        Direction::Down => {
            let (top, len) = (y - 5, 9);
            (0..len).for_each(|i| put(x, top + i));
            (1..=3).for_each(|i| {
                put(x - i, top + len - 1 - i);
                put(x + i, top + len - 1 - i);
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn luminance(p: &Rgb<u8>) -> f64 {
        0.2126 * p[0] as f64 + 0.7152 * p[1] as f64 + 0.0722 * p[2] as f64
    }

    /// Text: layers 1 and 3, 4 experts, top-2; image: layer 1 only, 6 experts, top-1.
    fn example() -> RoutingStats {
        let mut s = RoutingStats::new();
        s.add(1, 0, 4, 2, &[0, 1, 0, 3]); // 2 tokens
        s.add(1, 0, 4, 2, &[0, 2]); // 1 more token
        s.add(3, 0, 4, 2, &[3, 3, 3, 2, 1, 3]); // 3 tokens
        s.add(1, 1, 6, 1, &[5, 5, 4]);
        s
    }

    #[test]
    fn counts_and_fractions() {
        let v = example().to_json();
        assert_eq!(v["layers"], json!([1, 3]));
        let text = &v["modalities"]["text"];
        assert_eq!((text["tokens"].as_u64(), text["top_k"].as_u64(), text["num_experts"].as_u64()), (Some(3), Some(2), Some(4)));
        assert_eq!(text["load"], json!([[3, 1, 1, 1], [0, 1, 1, 4]]));
        assert_eq!(text["fraction"], json!([[0.5, 1.0 / 6.0, 1.0 / 6.0, 1.0 / 6.0], [0.0, 1.0 / 6.0, 1.0 / 6.0, 4.0 / 6.0]]));
        let image = &v["modalities"]["image"];
        assert_eq!(image["tokens"], 3);
        // Layer 3 never saw image tokens: a zero row, not a missing one.
        assert_eq!(image["load"], json!([[0, 0, 0, 0, 1, 2], [0, 0, 0, 0, 0, 0]]));
        assert_eq!(image["fraction"][0][5], 2.0 / 3.0);
        assert!(v["modalities"].get("video").is_none() && v.get("unknown_modality_tokens").is_none());
    }

    #[test]
    fn json_round_trip() {
        let s = example();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("routing.json");
        s.write_json(&path).unwrap();
        let back: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        assert_eq!(back, s.to_json());
    }

    #[test]
    fn bad_ids_do_not_panic() {
        let mut s = RoutingStats::new();
        s.add(0, 2, 4, 2, &[1, 4, u32::MAX, 0]);
        s.add(0, 9, 4, 2, &[0, 1]); // unknown modality
        s.add(0, 2, 4, 0, &[1]); // top_k 0: no tokens, one slot
        s.add(0, 2, 4, 3, &[2, 2]); // ragged: 0 tokens, 2 slots
        let v = s.to_json();
        let video = &v["modalities"]["video"];
        assert_eq!(video["out_of_range"], 2);
        assert_eq!(video["load"], json!([[1, 2, 2, 0]]));
        assert_eq!(video["tokens"], 2);
        assert_eq!(v["unknown_modality_tokens"], 1);
        let sum: f64 = video["fraction"][0].as_array().unwrap().iter().map(|f| f.as_f64().unwrap()).sum();
        assert!((sum - 5.0 / 7.0).abs() < 1e-12, "{sum}");
    }

    #[test]
    fn heatmap_png_size_and_colours() {
        let s = example();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("routing.png");
        s.write_heatmap_png(&path).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        // 2 panels (text 4 experts, image 6) × 2 layers.
        let panel_w = (2 * CELL_PX + 1).max(MIN_PANEL_W);
        assert_eq!(img.width(), 2 * MARGIN_PX + 2 * panel_w + PANEL_GAP_PX);
        assert_eq!(img.height(), 2 * MARGIN_PX + TITLE_PX + 6 * CELL_PX + 1);
        // Cell centre of (layer column c, expert e) in panel p.
        let centre = |p: u32, c: u32, e: u32| {
            img.get_pixel(
                MARGIN_PX + p * (panel_w + PANEL_GAP_PX) + c * CELL_PX + CELL_PX / 2,
                MARGIN_PX + TITLE_PX + e * CELL_PX + CELL_PX / 2,
            )
        };
        // Text hottest: layer 3 (column 1), expert 3; zero: layer 3, expert 0.
        let (hot, cold) = (centre(0, 1, 3), centre(0, 1, 0));
        assert_eq!(*hot, viridis(1.0));
        assert_eq!(*cold, viridis(0.0));
        assert!(luminance(hot) > luminance(cold) + 100.0);
        // Image hottest: layer 1, expert 5.
        assert_eq!(*centre(1, 0, 5), viridis(1.0));
        // The title strip has ink.
        let ink = (MARGIN_PX..MARGIN_PX + TITLE_PX).any(|y| (MARGIN_PX..MARGIN_PX + 60).any(|x| luminance(img.get_pixel(x, y)) < 128.0));
        assert!(ink, "no title text drawn");
    }

    #[test]
    fn empty_stats_is_a_request_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.png");
        match RoutingStats::new().write_heatmap_png(&path) {
            Err(Error::Request(msg)) => assert!(msg.contains("no MoE routing was recorded")),
            other => panic!("expected a Request error, got {other:?}"),
        }
        assert!(!path.exists());
    }

    #[test]
    fn unwritable_png_path_is_an_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir").join("x.png");
        assert!(matches!(example().write_heatmap_png(&path), Err(Error::Io { path: p, .. }) if p == path));
    }
}
