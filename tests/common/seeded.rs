//! One seeded sampling run and its golden tokens, checked natively (tests/sampling.rs) and in
//! the browser (tests/web_sampling.rs): the draw uses only SplitMix64 and IEEE basic arithmetic,
//! so every target gives these tokens; a change here changes every seeded generation.

use pocketlm::sample::{Sampler, SamplingParams};

pub const GOLDEN: [u32; 12] = [94, 55, 76, 65, 60, 34, 58, 91, 79, 96, 80, 20];

/// 64 tokens drawn from fixed random logits with every truncation and a penalty on.
pub fn tokens(seed: u64) -> Vec<u32> {
    let mut rng = pocketlm::reference::Rng::new(99);
    let rows: Vec<Vec<f32>> = (0..64).map(|_| rng.vec(100, -4.0, 4.0)).collect();
    let mut s = Sampler::new(SamplingParams {
        temperature: 0.9,
        top_k: 40,
        top_p: 0.95,
        min_p: 0.05,
        repetition_penalty: 1.1,
        seed: Some(seed),
        ..SamplingParams::default()
    })
    .unwrap();
    rows.iter().map(|r| s.sample_logits(r).unwrap()).collect()
}
