//! Picking the next token: penalties, top-k, top-p, min-p, temperature and a seeded draw, plus
//! the stop conditions of a generation ([`StopCriteria`], [`StopStream`]).
//!
//! The order is llama.cpp's default chain: repetition / presence / frequency penalties over the
//! last [`SamplingParams::penalty_last_n`] tokens, then top-k, top-p and min-p (computed on the
//! untempered distribution), then temperature, then one draw. Temperature 0 is greedy: the
//! highest penalized logit, ties to the lower token id, with no random number drawn.
//!
//! Determinism: the same parameters, seed and logits give the same tokens natively and in wasm.
//! Penalties are applied in f32 exactly as llama.cpp does; probabilities are computed in f64 with
//! only IEEE basic arithmetic (our own `exp`, not the platform's libm, whose last bit may differ
//! between targets); the generator is SplitMix64 ([`crate::rng::Rng`]). Ordering is total:
//! by logit descending (NaN counted as −inf, −0 equal to +0), ties to the lower id — the same
//! order as the GPU's top-k ([`crate::kernels::sample`]).

use std::collections::{HashMap, VecDeque};

use crate::error::{Error, Result};
pub use crate::kernels::Draw;
use crate::rng::Rng;

/// The most tokens a logit bias may name.
pub const MAX_LOGIT_BIAS: usize = 1024;

/// How to pick tokens. The defaults are neutral (OpenAI's: temperature 1, nothing truncated, no
/// penalties); [`SamplingParams::greedy`] is temperature 0.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    /// 0 = greedy; otherwise logits are divided by it before the draw. Must be finite and ≥ 0.
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens; 0 = off.
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability sums to at least `top_p`;
    /// in (0, 1], 1 = off.
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` × the most likely one's probability; in [0, 1],
    /// 0 = off.
    pub min_p: f32,
    /// > 0, 1 = off. A seen token's logit is divided by it when positive, multiplied when not.
    pub repetition_penalty: f32,
    /// In [−2, 2], 0 = off. Subtracted once from the logit of every seen token.
    pub presence_penalty: f32,
    /// In [−2, 2], 0 = off. Subtracted from a seen token's logit once per occurrence.
    pub frequency_penalty: f32,
    /// How many of the most recent tokens the penalties look at; 0 turns penalties off.
    pub penalty_last_n: usize,
    /// The draw's seed: the same seed gives the same tokens. `None` seeds from the clock.
    pub seed: Option<u64>,
    /// Added to these tokens' logits before the draw (OpenAI's `logit_bias`): each token at
    /// most once, biases in [−100, 100] (−100 bans a token, 100 all but forces it).
    pub logit_bias: Vec<(u32, f32)>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            penalty_last_n: 64,
            seed: None,
            logit_bias: Vec::new(),
        }
    }
}

impl SamplingParams {
    /// Always the most likely token.
    pub fn greedy() -> Self {
        SamplingParams {
            temperature: 0.0,
            ..SamplingParams::default()
        }
    }

    /// Checks every parameter's range; the error names the first one out of range.
    pub fn validate(&self) -> Result<()> {
        fn bad(param: &'static str, value: f32, expected: &'static str) -> Result<()> {
            Err(Error::InvalidSamplingParams {
                param,
                value: value.to_string(),
                expected,
            })
        }
        let t = self.temperature;
        if !(t.is_finite() && t >= 0.0) {
            return bad("temperature", t, "a finite number >= 0 (0 = greedy)");
        }
        let p = self.top_p;
        if !(p > 0.0 && p <= 1.0) {
            return bad("top_p", p, "a number in (0, 1] (1 = off)");
        }
        let m = self.min_p;
        if !(0.0..=1.0).contains(&m) {
            return bad("min_p", m, "a number in [0, 1] (0 = off)");
        }
        let r = self.repetition_penalty;
        if !(r.is_finite() && r > 0.0) {
            return bad("repetition_penalty", r, "a finite number > 0 (1 = off)");
        }
        for (param, v) in [
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ] {
            if !(-2.0..=2.0).contains(&v) {
                return bad(param, v, "a number in [-2, 2] (0 = off)");
            }
        }
        if self.logit_bias.len() > MAX_LOGIT_BIAS {
            return Err(Error::InvalidSamplingParams {
                param: "logit_bias",
                value: format!("{} tokens", self.logit_bias.len()),
                expected: "at most 1024 tokens",
            });
        }
        let mut seen = std::collections::HashSet::new();
        for &(token, bias) in &self.logit_bias {
            if !(-100.0..=100.0).contains(&bias) {
                return bad("logit_bias", bias, "biases in [-100, 100]");
            }
            if !seen.insert(token) {
                return Err(Error::InvalidSamplingParams {
                    param: "logit_bias",
                    value: format!("token {token} twice"),
                    expected: "each token once",
                });
            }
        }
        Ok(())
    }

    /// What the GPU computes for a step under these parameters, with `candidates` best logits
    /// selected on the GPU from a vocabulary of `vocab` (see [`SamplingPlan`]).
    pub fn plan(&self, candidates: usize, vocab: usize) -> SamplingPlan {
        let top_k_off = self.top_k == 0 || self.top_k >= vocab;
        if self.temperature == 0.0 {
            SamplingPlan::Greedy
        } else if top_k_off && self.top_p >= 1.0 && self.min_p == 0.0 {
            SamplingPlan::Gumbel
        } else if !top_k_off && self.top_k > candidates {
            SamplingPlan::FullRow
        } else {
            SamplingPlan::Candidates
        }
    }

    /// Whether any penalty changes logits.
    pub fn penalties_on(&self) -> bool {
        self.penalty_last_n > 0
            && (self.repetition_penalty != 1.0
                || self.presence_penalty != 0.0
                || self.frequency_penalty != 0.0)
    }
}

/// How a step's token is picked on the GPU ([`SamplingParams::plan`]). Penalties, when on, are
/// applied to the logits on the GPU first, in every plan. Each plan reads back at most the best
/// candidates and 16 bytes on WebGPU; the CPU backend reads its row where the candidates do not
/// decide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SamplingPlan {
    /// Temperature 0: the GPU's argmax.
    Greedy,
    /// Temperature only (nothing truncated): a Gumbel-max draw on the GPU, keyed by one number of
    /// the seeded generator per token.
    Gumbel,
    /// Truncation within the candidates (top-k up to their number, top-p, min-p): the GPU's best
    /// candidates and the row's softmax statistics; the draw is finished on the CPU
    /// ([`Sampler::sample_gpu_candidates`]); when the kept set may reach past the candidates
    /// the engine draws from the nucleus on the GPU ([`crate::kernels::Nucleus`]; the CPU
    /// backend from its row).
    Candidates,
    /// Top-k above the number of candidates (below the vocabulary): on WebGPU the candidates,
    /// then a draw from the nucleus on the GPU ([`crate::kernels::Nucleus`]); on the CPU
    /// backend the whole row.
    FullRow,
}

/// Picks tokens with one [`SamplingParams`], one seeded generator and a window of recent tokens
/// for the penalties.
///
/// The window holds the tokens given to [`Sampler::accept`] (the prompt, if penalties should see
/// it) and every token this sampler picked, the last [`SamplingParams::penalty_last_n`] of them.
#[derive(Clone, Debug)]
pub struct Sampler {
    params: SamplingParams,
    rng: Rng,
    recent: VecDeque<u32>,
    counts: HashMap<u32, u32>,
}

impl Sampler {
    /// Fails with [`Error::InvalidSamplingParams`] when a parameter is out of range.
    pub fn new(params: SamplingParams) -> Result<Self> {
        params.validate()?;
        let seed = params.seed.unwrap_or_else(clock_seed);
        Ok(Sampler {
            params,
            rng: Rng::new(seed),
            recent: VecDeque::new(),
            counts: HashMap::new(),
        })
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Adds tokens to the penalty window (oldest first), e.g. the prompt.
    pub fn accept(&mut self, tokens: &[u32]) {
        let n = self.params.penalty_last_n;
        if n == 0 {
            return;
        }
        for &t in tokens {
            self.recent.push_back(t);
            *self.counts.entry(t).or_insert(0) += 1;
            if self.recent.len() > n {
                let old = self.recent.pop_front().expect("window is not empty");
                if let Some(c) = self.counts.get_mut(&old) {
                    *c -= 1;
                    if *c == 0 {
                        self.counts.remove(&old);
                    }
                }
            }
        }
    }

    /// Empties the penalty window (a new conversation); the generator keeps its state.
    pub fn clear_history(&mut self) {
        self.recent.clear();
        self.counts.clear();
    }

    /// Each distinct token of the penalty window with its count, by token id (what the GPU's
    /// penalty kernel applies); empty when penalties are off.
    pub fn penalty_list(&self) -> Vec<(u32, u32)> {
        if !self.params.penalties_on() {
            return Vec::new();
        }
        let mut list: Vec<(u32, u32)> = self.counts.iter().map(|(&t, &c)| (t, c)).collect();
        list.sort_unstable();
        list
    }

    /// The GPU's view of the next draw under `plan`: the penalties and, for
    /// [`SamplingPlan::Gumbel`], a fresh key from the seeded generator (one number per token, as
    /// a CPU draw takes) and 1 / temperature. `n_pen` is the length of [`Sampler::penalty_list`];
    /// the row is left 0 for the caller.
    pub fn gpu_draw(&mut self, plan: SamplingPlan) -> Draw {
        let key = if plan == SamplingPlan::Gumbel {
            self.rng.next_u64()
        } else {
            0
        };
        let p = &self.params;
        let n_pen = if p.penalties_on() {
            self.counts.len() as u32
        } else {
            0
        };
        Draw {
            key_lo: key as u32,
            key_hi: (key >> 32) as u32,
            inv_temp: if p.temperature > 0.0 {
                1.0 / p.temperature
            } else {
                0.0
            },
            n_pen,
            repetition: p.repetition_penalty,
            presence: p.presence_penalty,
            frequency: p.frequency_penalty,
            row: 0,
            n_bias: p.logit_bias.len() as u32,
        }
    }

    /// Records a token the GPU picked (greedy or Gumbel) in the penalty window.
    pub fn accept_picked(&mut self, token: u32) -> u32 {
        self.accept(&[token]);
        token
    }

    /// Picks the next token from the GPU's best candidates of a row whose penalties the GPU
    /// already applied, with the row's softmax statistics `(max, Σ exp(x − max))` over the whole
    /// vocabulary of `vocab` tokens ([`crate::kernels::logit_stats`]). `None` (nothing drawn)
    /// when the kept set may reach past the candidates: then sample the whole row with
    /// [`Sampler::sample_penalized_logits`]. The result equals the whole row's draw whenever it
    /// is `Some`, up to the rounding of the GPU's f32 sum in top-p's cut.
    pub fn sample_gpu_candidates(
        &mut self,
        candidates: &[(u32, f32)],
        stats: (f32, f32),
        vocab: usize,
    ) -> Result<Option<u32>> {
        let mut ranked = self.rank(candidates.to_vec(), false)?;
        let p = &self.params;
        let whole = candidates.len() >= vocab;
        let top_k_on = p.top_k > 0 && p.top_k < vocab;
        if top_k_on && p.top_k > candidates.len() && !whole {
            return Ok(None);
        }
        if p.temperature > 0.0 && !whole && !top_k_on {
            // Σ exp(x − max) over the whole row, from the GPU's (M, Z).
            let max = f64::from(ranked[0].1);
            let total = f64::from(stats.1) * exp(f64::from(stats.0) - max);
            let Some(keep) = self.kept(&ranked, Some(total)) else {
                return Ok(None);
            };
            ranked.truncate(keep);
            // The cuts are made; what is left is drawn from as is.
            let dist = self.finish_cut(ranked);
            return Ok(Some(self.draw(&dist)));
        }
        let dist = self.finish(ranked);
        Ok(Some(self.draw(&dist)))
    }

    /// Picks the next token from a whole row of logits whose penalties and logit bias the GPU
    /// already applied.
    pub fn sample_penalized_logits(&mut self, logits: &[f32]) -> Result<u32> {
        let ranked = self.rank_logits_with(logits, false)?;
        let dist = self.finish(ranked);
        Ok(self.draw(&dist))
    }

    /// How often each token occurs in the penalty window.
    pub fn window_count(&self, token: u32) -> u32 {
        self.counts.get(&token).copied().unwrap_or(0)
    }

    /// `logit` after the penalties for `token`, as llama.cpp computes it (in f32).
    pub fn penalize(&self, token: u32, logit: f32) -> f32 {
        let count = self.window_count(token);
        if count == 0 || !self.params.penalties_on() {
            return logit;
        }
        let p = &self.params;
        let mut l = logit;
        if l <= 0.0 {
            l *= p.repetition_penalty;
        } else {
            l /= p.repetition_penalty;
        }
        l - (count as f32 * p.frequency_penalty + p.presence_penalty)
    }

    /// Applies the penalties to a whole row of logits indexed by token id, in place.
    pub fn apply_penalties(&self, logits: &mut [f32]) {
        if !self.params.penalties_on() {
            return;
        }
        for &token in self.counts.keys() {
            if let Some(l) = logits.get_mut(token as usize) {
                *l = self.penalize(token, *l);
            }
        }
    }

    /// The distribution the next draw from a full row of logits (indexed by token id) uses:
    /// (token, probability) after penalties, truncation and temperature, best first, summing to
    /// 1. Greedy gives the one best token with probability 1.
    pub fn distribution_from_logits(&self, logits: &[f32]) -> Result<Vec<(u32, f64)>> {
        let ranked = self.rank_logits(logits)?;
        Ok(self.finish(ranked))
    }

    /// As [`Sampler::distribution_from_logits`], for the GPU's top-k candidates.
    pub fn distribution_from_candidates(
        &self,
        candidates: &[(u32, f32)],
    ) -> Result<Vec<(u32, f64)>> {
        let ranked = self.rank_candidates(candidates)?;
        Ok(self.finish(ranked))
    }

    /// Picks the next token from a full row of logits indexed by token id, and adds it to the
    /// penalty window.
    pub fn sample_logits(&mut self, logits: &[f32]) -> Result<u32> {
        let ranked = self.rank_logits(logits)?;
        let dist = self.finish(ranked);
        Ok(self.draw(&dist))
    }

    /// Picks the next token from (token, logit) candidates — the GPU's top-k
    /// ([`crate::kernels::sample::TopK::read`]), in any order — and adds it to the penalty window.
    ///
    /// The candidate set is what the GPU returned: tokens outside it are never picked, even when
    /// penalties would have lowered a candidate below them (or a negative presence penalty raised
    /// them), and a `top_k` larger than the GPU's k keeps all candidates. With no penalties and
    /// `top_k` in 1..=the GPU's k (or greedy) the result equals [`Sampler::sample_logits`] on the
    /// whole row.
    pub fn sample_candidates(&mut self, candidates: &[(u32, f32)]) -> Result<u32> {
        let ranked = self.rank_candidates(candidates)?;
        let dist = self.finish(ranked);
        Ok(self.draw(&dist))
    }

    fn draw(&mut self, dist: &[(u32, f64)]) -> u32 {
        let token = if dist.len() == 1 {
            // Greedy, or truncation left one: still draw when sampling, so that how many numbers
            // a generation consumes depends only on its length.
            if self.params.temperature > 0.0 {
                self.rng.next_u64();
            }
            dist[0].0
        } else {
            let u = self.rng.unit();
            let mut cum = 0.0;
            let mut pick = dist[dist.len() - 1].0;
            for &(t, p) in dist {
                cum += p;
                if u < cum {
                    pick = t;
                    break;
                }
            }
            pick
        };
        self.accept(&[token]);
        token
    }

    /// Penalized candidates from a whole row, best first, cut to top-k when it is on.
    fn rank_logits(&self, logits: &[f32]) -> Result<Vec<(u32, f32)>> {
        self.rank_logits_with(logits, true)
    }

    fn rank_logits_with(&self, logits: &[f32], penalize: bool) -> Result<Vec<(u32, f32)>> {
        if logits.is_empty() {
            return Err(Error::NoCandidates {
                detail: "the logits row is empty".into(),
            });
        }
        let mut row: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, canonical(l)))
            .collect();
        if penalize && self.params.penalties_on() {
            for &token in self.counts.keys() {
                if let Some(c) = row.get_mut(token as usize) {
                    c.1 = canonical(self.penalize(token, c.1));
                }
            }
        }
        // The logit bias after the penalties, as the GPU adds it (shaders/bias.wgsl).
        if penalize {
            for &(token, bias) in &self.params.logit_bias {
                if let Some(c) = row.get_mut(token as usize) {
                    c.1 = canonical(c.1 + bias);
                }
            }
        }
        let keep = if self.params.temperature == 0.0 {
            1
        } else {
            self.params.top_k
        };
        if keep > 0 && keep < row.len() {
            row.select_nth_unstable_by(keep - 1, order);
            row.truncate(keep);
        }
        row.sort_unstable_by(order);
        drop_neg_inf(row)
    }

    fn rank_candidates(&self, candidates: &[(u32, f32)]) -> Result<Vec<(u32, f32)>> {
        self.rank(candidates.to_vec(), true)
    }

    /// Candidates best first, penalized first when asked, without −inf.
    fn rank(&self, mut row: Vec<(u32, f32)>, penalize: bool) -> Result<Vec<(u32, f32)>> {
        if row.is_empty() {
            return Err(Error::NoCandidates {
                detail: "the candidate list is empty".into(),
            });
        }
        for c in &mut row {
            let l = canonical(c.1);
            c.1 = canonical(if penalize { self.penalize(c.0, l) } else { l });
        }
        row.sort_unstable_by(order);
        drop_neg_inf(row)
    }

    /// Truncation, temperature and normalization of ranked (best first) candidates.
    fn finish(&self, mut ranked: Vec<(u32, f32)>) -> Vec<(u32, f64)> {
        let p = &self.params;
        if p.temperature == 0.0 {
            return vec![(ranked[0].0, 1.0)];
        }
        if p.top_k > 0 {
            ranked.truncate(p.top_k);
        }
        let keep = self.kept(&ranked, None).unwrap_or(ranked.len());
        ranked.truncate(keep);
        self.finish_cut(ranked)
    }

    /// How many of `ranked` (best first, untempered) top-p and then min-p keep: a prefix, as
    /// both cut a descending list. `row_total` is Σ exp(x − max) over every token the draw may
    /// pick when `ranked` holds only the best of them (the GPU's candidates); `None` when it holds
    /// them all. The result is `None` when the kept set may reach past `ranked`.
    fn kept(&self, ranked: &[(u32, f32)], row_total: Option<f64>) -> Option<usize> {
        let p = &self.params;
        let max = f64::from(ranked[0].1);
        let whole = row_total.is_none();
        let mut keep: Option<usize> = None;
        let mut undecided = !whole && p.top_p >= 1.0 && p.min_p <= 0.0;
        if p.top_p < 1.0 {
            let w: Vec<f64> = ranked.iter().map(|c| exp(f64::from(c.1) - max)).collect();
            let total = row_total.unwrap_or_else(|| w.iter().sum());
            let target = f64::from(p.top_p) * total;
            let mut cum = 0.0;
            match w.iter().position(|wi| {
                cum += wi;
                cum >= target
            }) {
                Some(i) => keep = Some(i + 1),
                None => undecided |= !whole,
            }
        }
        if p.min_p > 0.0 {
            let min = f64::from(p.min_p);
            // The best token has relative probability 1 ≥ min_p, so it always stays.
            match ranked.iter().position(|c| exp(f64::from(c.1) - max) < min) {
                Some(i) => keep = Some(keep.map_or(i, |k| k.min(i))),
                None => undecided |= !whole,
            }
        }
        match keep {
            Some(k) => Some(k),
            None if undecided => None,
            None => Some(ranked.len()),
        }
    }

    /// Temperature and normalization of what the truncations kept (best first).
    fn finish_cut(&self, ranked: Vec<(u32, f32)>) -> Vec<(u32, f64)> {
        let max = f64::from(ranked[0].1);
        let t = f64::from(self.params.temperature);
        let w: Vec<f64> = ranked
            .iter()
            .map(|c| exp((f64::from(c.1) - max) / t))
            .collect();
        let total: f64 = w.iter().sum();
        ranked
            .iter()
            .zip(w)
            .map(|(c, wi)| (c.0, wi / total))
            .collect()
    }
}

/// The uniform number in (0, 1) that the GPU's Gumbel draw (shaders/gumbel.wgsl) uses for
/// element `e` of row `row` under the 64-bit `key`: the same 32-bit hash, 24 bits of it centred
/// in their interval. The draw picks the argmax of `x[e] / temperature − ln(−ln(u))`.
pub fn gumbel_uniform(key: u64, row: u32, e: u32) -> f32 {
    fn mix32(mut x: u32) -> u32 {
        x ^= x >> 16;
        x = x.wrapping_mul(0x7feb_352d);
        x ^= x >> 15;
        x = x.wrapping_mul(0x846c_a68b);
        x ^= x >> 16;
        x
    }
    let h = mix32(e ^ mix32(row ^ mix32((key >> 32) as u32 ^ mix32(key as u32))));
    ((h >> 8) as f32 + 0.5) * (1.0 / 16_777_216.0)
}

/// NaN as −inf, −0 as +0: the GPU top-k's conventions.
pub(crate) fn canonical(l: f32) -> f32 {
    if l.is_nan() {
        f32::NEG_INFINITY
    } else if l == 0.0 {
        0.0
    } else {
        l
    }
}

/// Best first: logit descending, ties to the lower id.
pub(crate) fn order(a: &(u32, f32), b: &(u32, f32)) -> std::cmp::Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

fn drop_neg_inf(mut row: Vec<(u32, f32)>) -> Result<Vec<(u32, f32)>> {
    row.retain(|c| c.1 != f32::NEG_INFINITY);
    if row.is_empty() {
        return Err(Error::NoCandidates {
            detail: "every candidate's logit is -inf or NaN".into(),
        });
    }
    Ok(row)
}

/// e^x from IEEE basic operations only, so every target computes the same bits (the platform's
/// `exp` may differ in the last bit between native libm and wasm). Relative error ≈ 1e-16.
fn exp(x: f64) -> f64 {
    // fdlibm's split of ln 2: the high part has its low 32 bits zero.
    const LN2_HI: f64 = f64::from_bits(0x3FE6_2E42_FEE0_0000);
    const LN2_LO: f64 = f64::from_bits(0x3DEA_39EF_3579_3C76);
    const INV_LN2: f64 = std::f64::consts::LOG2_E;
    if x.is_nan() || x < -745.0 {
        return 0.0;
    }
    if x > 709.0 {
        return f64::INFINITY;
    }
    let k = (x * INV_LN2).round();
    // k·LN2_HI is exact: LN2_HI has its low bits zero.
    let r = (x - k * LN2_HI) - k * LN2_LO;
    // Taylor series to r^13 by Horner: |r| ≤ 0.35, so the remainder is below 1e-17.
    let mut p = 1.0;
    for i in (1..=13).rev() {
        p = 1.0 + r * p / f64::from(i);
    }
    let k = k as i32;
    if k >= -1022 {
        p * f64::from_bits(((k + 1023) as u64) << 52)
    } else {
        // Subnormal result: scale in two steps.
        p * f64::from_bits(((k + 1023 + 64) as u64) << 52) * f64::from_bits((1023 - 64) << 52)
    }
}

/// A seed for `seed: None`: the clock, mixed with a counter so that samplers made in the same
/// instant differ.
fn clock_seed() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    #[cfg(target_arch = "wasm32")]
    let now = (js_sys::Date::now() * 1000.0) as u64;
    #[cfg(not(target_arch = "wasm32"))]
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    Rng::new(now ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15)).next_u64()
}

/// When a generation ends.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StopCriteria {
    /// Tokens that end the generation (end of turn / end of text); their text is not emitted.
    pub eos_ids: Vec<u32>,
    /// Strings that end the generation; neither they nor anything after them is emitted.
    pub stop_strings: Vec<String>,
    /// The most tokens to generate; `None` = no limit.
    pub max_tokens: Option<usize>,
}

/// Why a generation stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// One of [`StopCriteria::eos_ids`] was generated.
    Eos(u32),
    /// `stop_strings[index]` appeared in the text.
    StopString(usize),
    /// [`StopCriteria::max_tokens`] tokens were generated.
    MaxTokens,
}

/// What to do after one token: `text` may be shown now; `stop` says whether generation ends.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StopStep {
    pub text: String,
    pub stop: Option<StopReason>,
}

/// Applies [`StopCriteria`] to a stream of generated tokens and their decoded text, holding back
/// any tail of the text that could be the start of a stop string, so that a stream never shows
/// part of one.
#[derive(Clone, Debug)]
pub struct StopStream {
    criteria: StopCriteria,
    held: String,
    tokens: usize,
    stopped: Option<StopReason>,
}

impl StopStream {
    /// Fails with [`Error::InvalidSamplingParams`] for an empty stop string.
    pub fn new(criteria: StopCriteria) -> Result<Self> {
        if criteria.stop_strings.iter().any(String::is_empty) {
            return Err(Error::InvalidSamplingParams {
                param: "stop",
                value: "\"\"".into(),
                expected: "non-empty stop strings",
            });
        }
        Ok(StopStream {
            criteria,
            held: String::new(),
            tokens: 0,
            stopped: None,
        })
    }

    /// Why the stream stopped, once it has.
    pub fn stopped(&self) -> Option<&StopReason> {
        self.stopped.as_ref()
    }

    /// The text held back so far (a possible start of a stop string).
    pub fn held(&self) -> &str {
        &self.held
    }

    /// Feeds one generated token and the text it decoded to (possibly empty). After a stop,
    /// further tokens are ignored and give an empty step with the same reason.
    pub fn push(&mut self, token: u32, text: &str) -> StopStep {
        if let Some(reason) = &self.stopped {
            return StopStep {
                text: String::new(),
                stop: Some(reason.clone()),
            };
        }
        self.tokens += 1;
        if self.criteria.eos_ids.contains(&token) {
            return self.stop(StopReason::Eos(token));
        }
        self.held.push_str(text);
        // The held text contains no whole stop string, so a match ends in the new text; the
        // earliest one wins (ties: the first listed).
        let found = self
            .criteria
            .stop_strings
            .iter()
            .enumerate()
            .filter_map(|(i, s)| self.held.find(s.as_str()).map(|at| (at, i)))
            .min();
        if let Some((at, i)) = found {
            self.held.truncate(at);
            return self.stop(StopReason::StopString(i));
        }
        if self.criteria.max_tokens.is_some_and(|m| self.tokens >= m) {
            return self.stop(StopReason::MaxTokens);
        }
        let keep = self.partial_stop_len();
        let text = self.held[..self.held.len() - keep].to_string();
        self.held.drain(..self.held.len() - keep);
        StopStep { text, stop: None }
    }

    /// Ends the stream without a stop condition (e.g. the context is full): returns the held text.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    fn stop(&mut self, reason: StopReason) -> StopStep {
        self.stopped = Some(reason.clone());
        StopStep {
            text: std::mem::take(&mut self.held),
            stop: Some(reason),
        }
    }

    /// The length of the longest tail of the held text that is a proper prefix of a stop string.
    fn partial_stop_len(&self) -> usize {
        let held = self.held.as_str();
        let mut best = 0;
        for s in &self.criteria.stop_strings {
            let max = (s.len() - 1).min(held.len());
            for len in (best + 1..=max).rev() {
                let start = held.len() - len;
                if held.is_char_boundary(start) && s.starts_with(&held[start..]) {
                    best = len;
                    break;
                }
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_std_closely() {
        for i in -2000..=200 {
            let x = f64::from(i) * 0.37;
            let (a, b) = (exp(x), x.exp());
            assert!(
                (a - b).abs() <= b * 4e-16 || (a - b).abs() < 1e-300,
                "exp({x}) = {a}, std {b}"
            );
        }
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-800.0), 0.0);
    }
}

/// A model's own sampling defaults as request fields (`temperature`, `top_k`, `top_p`,
/// `min_p`, `repetition_penalty`): what a request that does not set a field gets instead of
/// [`SamplingParams::default`]. From `generation_config.json` (`do_sample: false` is greedy) or
/// a GGUF file's `general.sampling.*` keys. Only the fields the file sets, and only valid
/// values: a model file is untrusted, and a bad default must not make every request fail.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SamplingDefaults(serde_json::Map<String, serde_json::Value>);

impl SamplingDefaults {
    /// From the text of a `generation_config.json`; unreadable text gives no defaults.
    pub fn from_generation_config(json: &str) -> SamplingDefaults {
        let Ok(serde_json::Value::Object(config)) = serde_json::from_str(json) else {
            return SamplingDefaults::default();
        };
        let number = |k: &str| config.get(k).and_then(serde_json::Value::as_f64);
        if config.get("do_sample") == Some(&serde_json::Value::Bool(false)) {
            return SamplingDefaults::from_values(&[("temperature", Some(0.0))]);
        }
        SamplingDefaults::from_values(&[
            ("temperature", number("temperature")),
            ("top_k", number("top_k")),
            ("top_p", number("top_p")),
            ("min_p", number("min_p")),
            ("repetition_penalty", number("repetition_penalty")),
        ])
    }

    /// From a GGUF file's `general.sampling.temp`, `.top_k`, `.top_p`, `.min_p` and
    /// `.penalty_repeat` (llama.cpp's keys); a key of the wrong type is left out.
    pub fn from_gguf(meta: &crate::formats::gguf::GgufMetadata) -> SamplingDefaults {
        let number = |k: &str| {
            meta.get_opt::<f64>(k)
                .ok()
                .flatten()
                .or_else(|| meta.get_opt::<i64>(k).ok().flatten().map(|v| v as f64))
        };
        SamplingDefaults::from_values(&[
            ("temperature", number("general.sampling.temp")),
            ("top_k", number("general.sampling.top_k")),
            ("top_p", number("general.sampling.top_p")),
            ("min_p", number("general.sampling.min_p")),
            (
                "repetition_penalty",
                number("general.sampling.penalty_repeat"),
            ),
        ])
    }

    /// The values that are valid on their own (as [`SamplingParams::validate`] checks them).
    fn from_values(values: &[(&str, Option<f64>)]) -> SamplingDefaults {
        let mut map = serde_json::Map::new();
        for &(key, v) in values {
            let Some(v) = v.filter(|v| v.is_finite()) else {
                continue;
            };
            let ok = match key {
                "temperature" => v >= 0.0,
                "top_k" => v >= 0.0 && v.fract() == 0.0 && v <= 1e9,
                "top_p" => v > 0.0 && v <= 1.0,
                "min_p" => (0.0..=1.0).contains(&v),
                "repetition_penalty" => v > 0.0,
                _ => false,
            };
            if ok {
                map.insert(key.to_string(), serde_json::json!(v));
            }
        }
        SamplingDefaults(map)
    }

    /// The defaults as a JSON object of request fields.
    pub fn fields(&self) -> &serde_json::Map<String, serde_json::Value> {
        &self.0
    }

    /// Fills the fields of `request` (a JSON object) that are absent or null with the
    /// defaults.
    pub fn apply(&self, request: &mut serde_json::Value) {
        if let serde_json::Value::Object(r) = request {
            for (k, v) in &self.0 {
                if r.get(k).is_none_or(serde_json::Value::is_null) {
                    r.insert(k.clone(), v.clone());
                }
            }
        }
    }
}

#[cfg(test)]
mod defaults_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn generation_config_defaults_fill_only_what_a_request_leaves_out() {
        let d = SamplingDefaults::from_generation_config(
            r#"{"do_sample": true, "temperature": 0.6, "top_p": 0.95, "top_k": 20,
                "repetition_penalty": -1, "max_new_tokens": 100, "eos_token_id": 2}"#,
        );
        assert_eq!(
            serde_json::Value::Object(d.fields().clone()),
            json!({"temperature": 0.6, "top_p": 0.95, "top_k": 20.0})
        );
        let mut r = json!({"prompt": "x", "temperature": 0, "top_p": null});
        d.apply(&mut r);
        assert_eq!(
            r,
            json!({"prompt": "x", "temperature": 0, "top_p": 0.95, "top_k": 20.0})
        );
        let greedy =
            SamplingDefaults::from_generation_config(r#"{"do_sample": false, "temperature": 0.7}"#);
        assert_eq!(greedy.fields().get("temperature"), Some(&json!(0.0)));
        assert!(SamplingDefaults::from_generation_config("not json")
            .fields()
            .is_empty());
    }

    #[test]
    fn gguf_sampling_keys_are_defaults_and_bad_ones_are_left_out() {
        use crate::formats::gguf::{GgufHeader, MetaValue};
        let bytes = crate::fuzzing::gguf_bytes(&[
            ("general.sampling.temp", MetaValue::F32(0.7)),
            ("general.sampling.top_k", MetaValue::I32(64)),
            ("general.sampling.top_p", MetaValue::F32(1.5)),
            ("general.sampling.min_p", MetaValue::String("x".into())),
            ("general.sampling.penalty_repeat", MetaValue::F64(1.1)),
        ]);
        let header = GgufHeader::parse_file(&bytes, "sampling.gguf").unwrap();
        let d = SamplingDefaults::from_gguf(&header.metadata);
        let f = d.fields();
        assert!(
            (f["temperature"].as_f64().unwrap() - 0.7).abs() < 1e-6,
            "{f:?}"
        );
        assert_eq!(f["top_k"], json!(64.0));
        assert_eq!(f["repetition_penalty"], json!(1.1));
        assert!(
            !f.contains_key("top_p") && !f.contains_key("min_p"),
            "{f:?}"
        );
    }
}

/// The most alternatives a token's log probabilities list (OpenAI's `top_logprobs` limit).
pub const MAX_TOP_LOGPROBS: usize = 20;

/// One generated token's log probability and its most likely alternatives (OpenAI's
/// `logprobs`), under the logits the draw saw (after penalties, the logit bias and a grammar's
/// mask; before temperature and truncation).
#[derive(Clone, Debug, PartialEq)]
pub struct TokenLogprobs {
    pub token: u32,
    pub logprob: f32,
    /// The `top` most likely tokens with their log probabilities, best first.
    pub top: Vec<(u32, f32)>,
}

/// [`TokenLogprobs`] from the GPU's candidates (best first) and the row's (max, Σ exp(x −
/// max)); `None` when `token` is not among the candidates (then the whole row is needed).
pub fn logprobs_from_candidates(
    token: u32,
    candidates: &[(u32, f32)],
    (max, sum): (f32, f32),
    top: usize,
) -> Option<TokenLogprobs> {
    let lse = f64::from(max) + f64::from(sum).ln();
    let lp = |l: f32| (f64::from(l) - lse) as f32;
    let logit = candidates.iter().find(|c| c.0 == token)?.1;
    Some(TokenLogprobs {
        token,
        logprob: lp(logit),
        top: candidates
            .iter()
            .take(top)
            .map(|&(t, l)| (t, lp(l)))
            .collect(),
    })
}

/// The index of the largest of `values`, the lowest on ties (0 when none beats −inf).
pub(crate) fn argmax_index(values: impl Iterator<Item = f32>) -> u32 {
    let mut best = (0u32, f32::NEG_INFINITY);
    for (i, v) in values.enumerate() {
        if v > best.1 {
            best = (i as u32, v);
        }
    }
    best.0
}

/// The best `k` (token, logit) of a whole row indexed by token id, best first: [`canonical`]
/// logits, ties to the lower id.
pub(crate) fn top_of_row(row: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut best: Vec<(u32, f32)> = row
        .iter()
        .enumerate()
        .map(|(i, &l)| (i as u32, canonical(l)))
        .collect();
    let keep = k.min(best.len());
    if keep > 0 && keep < best.len() {
        best.select_nth_unstable_by(keep - 1, order);
    }
    best.truncate(keep);
    best.sort_by(order);
    best
}

/// A row's softmax statistics: its largest logit and Σ exp(x − max), NaNs left out.
pub(crate) fn row_softmax_stats(row: &[f32]) -> (f32, f64) {
    let max = row
        .iter()
        .copied()
        .filter(|l| !l.is_nan())
        .fold(f32::NEG_INFINITY, f32::max);
    let sum = row
        .iter()
        .filter(|l| !l.is_nan())
        .map(|&l| exp(f64::from(l) - f64::from(max)))
        .sum();
    (max, sum)
}

/// [`TokenLogprobs`] from a whole row of logits.
pub fn logprobs_from_row(token: u32, row: &[f32], top: usize) -> TokenLogprobs {
    let (max, sum) = row_softmax_stats(row);
    let best = top_of_row(row, top);
    let logit = row
        .get(token as usize)
        .copied()
        .unwrap_or(f32::NEG_INFINITY);
    logprobs_from_candidates(token, &[(token, logit)], (max, sum as f32), 0)
        .map(|mut t| {
            let lse = f64::from(max) + sum.ln();
            t.top = best
                .into_iter()
                .map(|(i, l)| (i, (f64::from(l) - lse) as f32))
                .collect();
            t
        })
        .unwrap_or(TokenLogprobs {
            token,
            logprob: f32::NEG_INFINITY,
            top: Vec::new(),
        })
}

#[cfg(test)]
mod logprob_tests {
    use super::*;

    #[test]
    fn candidates_and_the_whole_row_give_the_same_log_probabilities() {
        let row: Vec<f32> = (0..500)
            .map(|i| ((i * 37 % 101) as f32) * 0.07 - 3.0)
            .collect();
        let from_row = logprobs_from_row(7, &row, 5);
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let sum: f32 = row.iter().map(|&l| (l - max).exp()).sum();
        let mut cands: Vec<(u32, f32)> = row
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, l))
            .collect();
        cands.sort_by(order);
        cands.truncate(64);
        let top = cands[3].0;
        let from_c = logprobs_from_candidates(top, &cands, (max, sum), 5).unwrap();
        let again = logprobs_from_row(top, &row, 5);
        assert!((from_c.logprob - again.logprob).abs() < 1e-5);
        assert_eq!(
            from_c.top.iter().map(|t| t.0).collect::<Vec<_>>(),
            from_row.top.iter().map(|t| t.0).collect::<Vec<_>>()
        );
        // The probabilities of the whole row sum to 1.
        let p: f64 = (0..500)
            .map(|t| f64::from(logprobs_from_row(t, &row, 0).logprob).exp())
            .sum();
        assert!((p - 1.0).abs() < 1e-4, "{p}");
        // A token outside the candidates needs the row.
        let outside = (0..500u32)
            .find(|t| !cands.iter().any(|c| c.0 == *t))
            .unwrap();
        assert!(logprobs_from_candidates(outside, &cands, (max, sum), 5).is_none());
    }
}
