//! `Engine::embed` with `EmbedInput::Media` on a VL checkpoint (issue #12 item 4): the image
//! prompt through the checkpoint's chat template and the VL prefill, against transformers' final
//! hidden state for the same processor inputs (`tests/fixtures/vl-template/embed.json`,
//! `tests/reference/make_vl_template_reference.py`).

use crate::common::*;
use ernie_runtime::{EmbedInput, EmbedOptions, Engine, Error, Media, Pooling};

/// The text path's bound (`tests/model/embed.rs`): f32 CPU math against torch's f32 reductions.
const HIDDEN_ATOL: f32 = 1e-4;

fn reference() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("vl-template/embed.json")).unwrap()).unwrap()
}

#[test]
fn image_embedding_matches_transformers_last_hidden_state() {
    let r = reference();
    let engine = Engine::load(&fixture("vl-moe-f32")).unwrap();
    let h = engine.model.cfg.hidden_size;
    let shape: Vec<usize> = r["shape"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect();
    assert_eq!(shape[1], h);
    let t = shape[0];
    let want = f32s(&r["last_hidden_state"]); // [t, h]
    let png = std::fs::read(fixture("vl-template/image.png")).unwrap();
    let input = EmbedInput::Media { text: r["prompt"].as_str().unwrap().into(), media: vec![Media::Image(png)] };
    for pooling in [Pooling::Last, Pooling::Mean] {
        let got = engine.embed(std::slice::from_ref(&input), &EmbedOptions { pooling, ..Default::default() }).unwrap();
        assert_eq!(got[0].n_tokens, t);
        let expect: Vec<f32> = match pooling {
            Pooling::Last => want[(t - 1) * h..].to_vec(),
            _ => (0..h).map(|j| (0..t).map(|i| want[i * h + j] as f64).sum::<f64>() as f32 / t as f32).collect(),
        };
        let d = max_abs_diff(&got[0].vector, &expect);
        eprintln!("{pooling:?}: max |Δ| = {d:e}");
        assert!(d < HIDDEN_ATOL, "{pooling:?}: max |Δ| {d}");
    }
    // A text checkpoint refuses media; end_of_sentence pooling is refused on media for now.
    let eos = engine.embed(std::slice::from_ref(&input), &EmbedOptions { pooling: Pooling::EndOfSentence, ..Default::default() });
    assert!(matches!(eos, Err(Error::Request(_))), "{eos:?}");
    let text = Engine::load(&fixture("dense-f32")).unwrap();
    assert!(matches!(text.embed(&[input], &EmbedOptions::default()), Err(Error::Request(_))));
}
