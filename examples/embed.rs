//! Embeds texts with `Engine::embed` and prints each vector's size and cosine similarity to the
//! first. Usage: `cargo run --example embed -- MODEL_DIR "text one" "text two" ...`

use ernie_runtime::{EmbedInput, EmbedOptions, Engine, Pooling};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().ok_or_else(|| anyhow::anyhow!("usage: embed MODEL_DIR TEXT..."))?;
    let inputs: Vec<EmbedInput> = args.map(EmbedInput::Text).collect();
    let engine = Engine::load(dir.as_ref())?;
    // Unit vectors, so a dot product is the cosine similarity.
    let opts = EmbedOptions { pooling: Pooling::Mean, normalize: true, ..Default::default() };
    let embeddings = engine.embed(&inputs, &opts)?;
    for (i, e) in embeddings.iter().enumerate() {
        let cos: f32 = e.vector.iter().zip(&embeddings[0].vector).map(|(a, b)| a * b).sum();
        println!("input {i}: {} tokens -> [{}] f32, cosine to input 0 = {cos:.4}", e.n_tokens, e.vector.len());
    }
    Ok(())
}
