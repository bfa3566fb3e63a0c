//! `ernie generate --output x.png`: one image from an `ernie5` checkpoint with a
//! `visual_generation` head and a `vision_decoder/` (NFSP loop → image decoder → PNG); timings
//! per scale, total and decoder on stderr.

use std::io::IsTerminal;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use ernie_runtime::infer::next_scale::ImageGenOptions;
use ernie_runtime::tools::codec::image::{write_png, Rgb8};
use ernie_runtime::tools::routing_stats::RoutingStats;
use ernie_runtime::{Engine, Prompt};
use indicatif::{ProgressBar, ProgressStyle};
use tokenizers_mm::ChatMessage;

use crate::args::Sampling;

/// Parses `WxH` (pixels) into `(width, height)`.
pub fn parse_size(s: &str) -> Result<(usize, usize)> {
    let parse = || -> Option<(usize, usize)> {
        let (w, h) = s.split_once(['x', 'X'])?;
        Some((w.trim().parse().ok()?, h.trim().parse().ok()?))
    };
    parse().with_context(|| format!("--size {s}: expected WxH in pixels, e.g. 256x256"))
}

/// The image flags of `ernie generate`.
pub struct CliImageOptions<'a> {
    /// `--cfg`.
    pub cfg: f32,
    /// `--size WxH`.
    pub size: Option<&'a str>,
    /// `--routing-stats PATH`.
    pub routing_stats: Option<&'a Path>,
    /// `--vision-decoder DIR`.
    pub vision_decoder: Option<&'a Path>,
}

pub fn run(model: &Path, prompt: &str, out: &Path, sampling: &Sampling, cli: &CliImageOptions<'_>) -> Result<()> {
    let t0 = Instant::now();
    let stats_paths = cli.routing_stats.map(crate::caption::routing_stats_paths).transpose()?;
    let mut engine = Engine::load(model).with_context(|| format!("loading {}", model.display()))?;
    engine.set_external_parts(cli.vision_decoder.map(Path::to_path_buf), None);
    let grid = match cli.size {
        Some(s) => {
            let (w, h) = parse_size(s)?;
            Some(engine.image_grid(w, h)?)
        }
        None => None,
    };
    // Flags left out take the image defaults (temperature 1, top-p 0.97, as the server), not
    // the text ones.
    let defaults = ImageGenOptions::default();
    let (temperature, top_p) = sampling.image((defaults.temperature, defaults.top_p));
    let opts = ImageGenOptions {
        cfg: cli.cfg,
        temperature,
        top_p,
        seed: sampling.seed,
        grid,
        trace_routing: stats_paths.is_some(),
        ..ImageGenOptions::default()
    };
    let prompt = Prompt::Chat(vec![ChatMessage { role: "user".into(), content: prompt.to_string() }]);
    // A progress line per scale, only when stderr is a terminal (as caption does).
    let bar = std::io::stderr().is_terminal().then(|| {
        let b = ProgressBar::new(0);
        b.set_style(ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} scales").unwrap_or_else(|_| ProgressStyle::default_bar()));
        b.set_message("generating");
        b
    });
    let img = engine.generate_image_with(&prompt, &opts, &mut |k, n, _| {
        if let Some(b) = &bar {
            b.set_length(n as u64);
            b.set_position(k as u64 + 1);
        }
    })?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if let Some((json_path, png_path)) = &stats_paths {
        let stats = RoutingStats::collect_image_generation(&engine.model, &img.latent.routing);
        stats.write_json(json_path).with_context(|| format!("writing {}", json_path.display()))?;
        stats.write_heatmap_png(png_path).with_context(|| format!("writing {}", png_path.display()))?;
        eprintln!("routing statistics: {} and {}", json_path.display(), png_path.display());
    }
    let n = img.latent.scale_seconds.len();
    for (k, s) in img.latent.scale_seconds.iter().enumerate() {
        if k + 1 < n {
            eprintln!("scale {}/{}: {:.3} s", k + 1, n - 1, s);
        } else {
            eprintln!("sum slot: {s:.3} s");
        }
    }
    let loop_s: f64 = img.latent.scale_seconds.iter().sum();
    eprintln!("scales: {loop_s:.3} s; decoder: {:.3} s; total (with loading): {:.3} s", img.decoder_seconds, t0.elapsed().as_secs_f64());
    let rgb = Rgb8 { data: img.rgb8, height: img.height, width: img.width };
    write_png(&rgb, out)?;
    eprintln!("wrote {} ({}x{})", out.display(), rgb.width, rgb.height);
    Ok(())
}
