//! Sampling: greedy, temperature, truncation, penalties, seeds, and stop conditions. Every test
//! is deterministic (fixed seeds), so statistical bounds cannot flake.

use pocketlm::sample::{
    Sampler, SamplingParams, SamplingPlan, StopCriteria, StopReason, StopStream,
};

#[path = "common/seeded.rs"]
mod seeded;

fn params() -> SamplingParams {
    SamplingParams {
        seed: Some(7),
        ..SamplingParams::default()
    }
}

fn ids(dist: &[(u32, f64)]) -> Vec<u32> {
    dist.iter().map(|d| d.0).collect()
}

fn softmax(logits: &[f64]) -> Vec<f64> {
    let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let w: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
    let s: f64 = w.iter().sum();
    w.iter().map(|x| x / s).collect()
}

/// Logits whose softmax is exactly-ish `probs`.
fn logits_of(probs: &[f64]) -> Vec<f32> {
    probs.iter().map(|p| p.ln() as f32).collect()
}

#[test]
fn greedy_picks_the_max_with_ties_to_the_lower_id() {
    let mut s = Sampler::new(SamplingParams::greedy()).unwrap();
    assert_eq!(s.sample_logits(&[0.1, 2.5, -3.0, 2.4]).unwrap(), 1);
    assert_eq!(s.sample_logits(&[1.0, 3.0, f32::NAN, 3.0]).unwrap(), 1);
    assert_eq!(s.sample_logits(&[-0.0, 0.0]).unwrap(), 0, "-0 equals +0");
    assert_eq!(
        s.sample_candidates(&[(9, 1.0), (4, 5.0), (2, 5.0)])
            .unwrap(),
        2
    );
    assert_eq!(
        s.distribution_from_logits(&[0.0, 7.0, 1.0]).unwrap(),
        vec![(1, 1.0)]
    );
    // Greedy ignores the seed.
    let row = [0.5, 0.2, 0.9, 0.1];
    for seed in 0..5 {
        let mut g = Sampler::new(SamplingParams {
            seed: Some(seed),
            ..SamplingParams::greedy()
        })
        .unwrap();
        assert_eq!(g.sample_logits(&row).unwrap(), 2);
    }
}

#[test]
fn temperature_matches_softmax_statistically() {
    let logits: Vec<f32> = vec![2.0, 1.0, 0.5, 0.0, -1.0, -3.0];
    for t in [0.5f32, 1.0, 1.7] {
        let mut s = Sampler::new(SamplingParams {
            temperature: t,
            seed: Some(1234),
            penalty_last_n: 0,
            ..SamplingParams::default()
        })
        .unwrap();
        let expected = softmax(
            &logits
                .iter()
                .map(|&l| f64::from(l) / f64::from(t))
                .collect::<Vec<_>>(),
        );
        // The distribution itself: exact up to rounding.
        let dist = s.distribution_from_logits(&logits).unwrap();
        assert_eq!(ids(&dist), vec![0, 1, 2, 3, 4, 5]);
        for (id, p) in &dist {
            assert!((p - expected[*id as usize]).abs() < 1e-12, "T={t} id={id}");
        }
        // The draws: each frequency within 5 standard deviations of its probability (a bound a
        // correct sampler exceeds with probability < 1e-5 per bin; the seed is fixed, so the
        // outcome is the same on every run).
        let n = 40_000;
        let mut counts = [0usize; 6];
        for _ in 0..n {
            counts[s.sample_logits(&logits).unwrap() as usize] += 1;
        }
        for (i, &c) in counts.iter().enumerate() {
            let p = expected[i];
            let sd = (p * (1.0 - p) / n as f64).sqrt();
            let f = c as f64 / n as f64;
            assert!(
                (f - p).abs() <= 5.0 * sd + 1.0 / n as f64,
                "T={t} token {i}: frequency {f}, probability {p}"
            );
        }
    }
}

#[test]
fn top_k_keeps_the_k_best() {
    let s = Sampler::new(SamplingParams {
        top_k: 2,
        ..params()
    })
    .unwrap();
    let dist = s
        .distribution_from_logits(&[1.0, 2.0, 3.0, 4.0, 5.0])
        .unwrap();
    assert_eq!(ids(&dist), vec![4, 3]);
    let e = softmax(&[5.0, 4.0]);
    assert!((dist[0].1 - e[0]).abs() < 1e-12 && (dist[1].1 - e[1]).abs() < 1e-12);
    // Ties at the cut go to the lower id.
    let dist = s.distribution_from_logits(&[3.0, 1.0, 3.0, 3.0]).unwrap();
    assert_eq!(ids(&dist), vec![0, 2]);
    // k larger than the row keeps everything.
    let s = Sampler::new(SamplingParams {
        top_k: 10,
        ..params()
    })
    .unwrap();
    assert_eq!(s.distribution_from_logits(&[0.0, 1.0]).unwrap().len(), 2);
}

#[test]
fn top_p_keeps_the_smallest_nucleus() {
    // Probabilities 0.5, 0.3, 0.15, 0.05 (in shuffled order).
    let logits = logits_of(&[0.15, 0.5, 0.05, 0.3]);
    for (top_p, expected) in [
        (0.4, vec![1]),
        (0.75, vec![1, 3]),
        (0.81, vec![1, 3, 0]),
        (0.96, vec![1, 3, 0, 2]),
        (1.0, vec![1, 3, 0, 2]),
    ] {
        let s = Sampler::new(SamplingParams { top_p, ..params() }).unwrap();
        let dist = s.distribution_from_logits(&logits).unwrap();
        assert_eq!(ids(&dist), expected, "top_p = {top_p}");
        // Renormalized over the kept tokens.
        let kept: f64 = [0.15, 0.5, 0.05, 0.3]
            .iter()
            .enumerate()
            .filter(|(i, _)| expected.contains(&(*i as u32)))
            .map(|(_, p)| p)
            .sum();
        assert!((dist[0].1 - 0.5 / kept).abs() < 1e-6, "top_p = {top_p}");
    }
    // Temperature comes after truncation (llama.cpp's order): a high temperature flattens the
    // draw but does not change which tokens top-p keeps.
    let s = Sampler::new(SamplingParams {
        top_p: 0.75,
        temperature: 5.0,
        ..params()
    })
    .unwrap();
    assert_eq!(
        ids(&s.distribution_from_logits(&logits).unwrap()),
        vec![1, 3]
    );
}

#[test]
fn min_p_drops_tokens_below_a_fraction_of_the_best() {
    let logits = logits_of(&[0.5, 0.3, 0.15, 0.05]);
    for (min_p, expected) in [
        (0.0, vec![0, 1, 2, 3]),
        (0.2, vec![0, 1, 2]),
        (0.35, vec![0, 1]),
        (0.7, vec![0]),
        (1.0, vec![0]),
    ] {
        let s = Sampler::new(SamplingParams { min_p, ..params() }).unwrap();
        assert_eq!(
            ids(&s.distribution_from_logits(&logits).unwrap()),
            expected,
            "min_p = {min_p}"
        );
    }
    // top-k, then top-p, then min-p.
    let s = Sampler::new(SamplingParams {
        top_k: 3,
        top_p: 0.9,
        min_p: 0.4,
        ..params()
    })
    .unwrap();
    assert_eq!(
        ids(&s.distribution_from_logits(&logits).unwrap()),
        vec![0, 1]
    );
}

#[test]
fn penalties_change_exactly_the_seen_tokens() {
    let p = SamplingParams {
        repetition_penalty: 2.0,
        presence_penalty: 0.5,
        frequency_penalty: 0.25,
        ..params()
    };
    let mut s = Sampler::new(p.clone()).unwrap();
    s.accept(&[0, 1, 1, 4]);
    let mut logits = vec![2.0f32, -1.0, 0.5, 3.0, 0.0, 1.0];
    s.apply_penalties(&mut logits);
    // 0: 2 / 2 − (1·0.25 + 0.5); 1: −1 · 2 − (2·0.25 + 0.5); 4: 0 · 2 − (0.25 + 0.5).
    assert_eq!(logits, vec![0.25, -3.0, 0.5, 3.0, -0.75, 1.0]);

    // The window holds only the last penalty_last_n tokens.
    let mut s = Sampler::new(SamplingParams {
        penalty_last_n: 2,
        ..p.clone()
    })
    .unwrap();
    s.accept(&[0, 1, 1, 4]);
    assert_eq!(
        (s.window_count(0), s.window_count(1), s.window_count(4)),
        (0, 1, 1)
    );
    let mut logits = vec![2.0f32, -1.0, 0.5, 3.0, 0.0, 1.0];
    s.apply_penalties(&mut logits);
    assert_eq!(logits, vec![2.0, -2.75, 0.5, 3.0, -0.75, 1.0]);

    // Sampled tokens join the window: greedy with a strong presence penalty alternates.
    let mut s = Sampler::new(SamplingParams {
        presence_penalty: 2.0,
        penalty_last_n: 1,
        ..SamplingParams::greedy()
    })
    .unwrap();
    let row = [1.0, 0.0];
    let picks: Vec<u32> = (0..4).map(|_| s.sample_logits(&row).unwrap()).collect();
    assert_eq!(picks, vec![0, 1, 0, 1]);
    // Penalties apply to the candidate path too.
    s.clear_history();
    s.accept(&[5]);
    assert_eq!(s.sample_candidates(&[(5, 1.0), (6, 0.0)]).unwrap(), 6);
}

#[test]
fn same_seed_same_tokens() {
    let a = seeded::tokens(42);
    assert_eq!(a, seeded::tokens(42));
    assert_ne!(a, seeded::tokens(43));
    // The golden prefix; tests/web_sampling.rs checks the same in the browser.
    assert_eq!(a[..12], seeded::GOLDEN);
}

#[test]
fn candidate_and_full_row_paths_agree() {
    let mut rng = pocketlm::reference::Rng::new(5);
    let rows: Vec<Vec<f32>> = (0..200).map(|_| rng.vec(50, -3.0, 3.0)).collect();
    let p = SamplingParams {
        temperature: 0.8,
        top_k: 10,
        top_p: 0.9,
        min_p: 0.05,
        repetition_penalty: 1.3,
        presence_penalty: 0.4,
        frequency_penalty: 0.2,
        seed: Some(11),
        ..SamplingParams::default()
    };
    let (mut full, mut cand) = (Sampler::new(p.clone()).unwrap(), Sampler::new(p).unwrap());
    for row in &rows {
        // Every token as a candidate, in a scrambled order.
        let mut c: Vec<(u32, f32)> = row
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, l))
            .collect();
        let n = c.len();
        for i in 0..n {
            c.swap(i, rng.range(i, n - 1));
        }
        assert_eq!(
            full.distribution_from_logits(row).unwrap(),
            cand.distribution_from_candidates(&c).unwrap()
        );
        assert_eq!(
            full.sample_logits(row).unwrap(),
            cand.sample_candidates(&c).unwrap()
        );
    }

    // Without penalties, the GPU's top-k (k ≥ top_k) is enough.
    let p = SamplingParams {
        temperature: 1.2,
        top_k: 8,
        top_p: 0.95,
        seed: Some(3),
        ..SamplingParams::default()
    };
    let (mut full, mut cand) = (Sampler::new(p.clone()).unwrap(), Sampler::new(p).unwrap());
    for row in &rows {
        let topk = pocketlm::reference::ops::topk(row, row.len(), 16);
        let c: Vec<(u32, f32)> = topk.into_iter().next().unwrap();
        assert_eq!(
            full.sample_logits(row).unwrap(),
            cand.sample_candidates(&c).unwrap()
        );
    }
}

#[test]
fn plans_put_every_setting_on_the_gpu_but_top_k_past_the_candidates() {
    let plan = |p: SamplingParams| p.plan(64, 1000);
    let t = |temperature| SamplingParams {
        temperature,
        ..SamplingParams::default()
    };
    assert_eq!(plan(SamplingParams::greedy()), SamplingPlan::Greedy);
    assert_eq!(
        plan(SamplingParams {
            top_p: 0.5,
            repetition_penalty: 1.2,
            ..SamplingParams::greedy()
        }),
        SamplingPlan::Greedy
    );
    assert_eq!(plan(t(0.7)), SamplingPlan::Gumbel);
    // A top-k as large as the vocabulary truncates nothing.
    for top_k in [0, 1000, 5000] {
        let p = SamplingParams { top_k, ..t(0.7) };
        assert_eq!(plan(p), SamplingPlan::Gumbel, "top_k {top_k}");
    }
    for p in [
        SamplingParams {
            top_k: 64,
            ..t(0.7)
        },
        SamplingParams {
            top_p: 0.9,
            ..t(0.7)
        },
        SamplingParams {
            min_p: 0.1,
            ..t(0.7)
        },
        SamplingParams {
            top_k: 40,
            top_p: 0.9,
            ..t(0.7)
        },
    ] {
        assert_eq!(plan(p.clone()), SamplingPlan::Candidates, "{p:?}");
    }
    assert_eq!(
        plan(SamplingParams {
            top_k: 65,
            ..t(0.7)
        }),
        SamplingPlan::FullRow
    );
}

/// The GPU's candidates with the row's softmax statistics decide top-p and min-p exactly when
/// the kept set ends inside them; otherwise they say so and the whole row decides.
#[test]
fn gpu_candidates_with_statistics_agree_with_the_full_row() {
    let mut rng = pocketlm::reference::Rng::new(9);
    let vocab = 3000;
    let cases = [
        (0.9, 0.0, 1.0),
        (0.5, 0.0, 0.7),
        (1.0, 0.05, 1.3),
        (0.95, 0.2, 0.9),
        (0.999, 0.0, 1.0),
        (1.0, 1e-4, 1.0),
    ];
    let (mut decided, mut undecided) = (0, 0);
    for (i, &(top_p, min_p, temperature)) in cases.iter().enumerate() {
        let p = SamplingParams {
            temperature,
            top_p,
            min_p,
            seed: Some(i as u64),
            ..SamplingParams::default()
        };
        assert_eq!(p.plan(64, vocab), SamplingPlan::Candidates);
        let (mut full, mut gpu) = (Sampler::new(p.clone()).unwrap(), Sampler::new(p).unwrap());
        for r in 0..40 {
            // Peaked rows (a few strong tokens) and flat ones.
            let mut row = rng.vec(vocab, -3.0, 3.0);
            if r % 2 == 0 {
                for _ in 0..8 {
                    let t = rng.range(0, vocab - 1);
                    row[t] += rng.uniform(8.0, 14.0);
                }
            }
            let cands = pocketlm::reference::ops::topk(&row, vocab, 64).remove(0);
            let (m, z) = pocketlm::reference::ops::logit_stats(&row, vocab)[0];
            let want = full.sample_logits(&row).unwrap();
            match gpu
                .sample_gpu_candidates(&cands, (m, z as f32), vocab)
                .unwrap()
            {
                Some(t) => {
                    decided += 1;
                    assert_eq!(t, want, "top_p {top_p}, min_p {min_p}, row {r}");
                }
                None => {
                    undecided += 1;
                    assert_eq!(gpu.sample_penalized_logits(&row).unwrap(), want);
                }
            }
        }
    }
    assert!(
        decided > 40 && undecided > 20,
        "{decided} decided, {undecided} not"
    );
}

#[test]
fn stop_strings_are_withheld_across_chunks() {
    let mut s = StopStream::new(StopCriteria {
        eos_ids: vec![2],
        stop_strings: vec!["</s>".into(), "\n\nUser:".into()],
        max_tokens: None,
    })
    .unwrap();
    let step = s.push(10, "Hello </");
    assert_eq!((step.text.as_str(), step.stop), ("Hello ", None));
    assert_eq!(s.held(), "</");
    // A false start is released once it cannot be a stop string any more.
    let step = s.push(11, "b> ok\n");
    assert_eq!((step.text.as_str(), step.stop), ("</b> ok", None));
    assert_eq!(s.held(), "\n");
    let step = s.push(12, "\nUs");
    assert_eq!((step.text.as_str(), step.stop), ("", None));
    let step = s.push(13, "er: hi");
    assert_eq!(step.text, "");
    assert_eq!(step.stop, Some(StopReason::StopString(1)));
    // After a stop, nothing more.
    assert_eq!(s.push(14, "more").text, "");

    // A stop string inside one chunk: the text before it is emitted.
    let mut s = StopStream::new(StopCriteria {
        stop_strings: vec!["STOP".into(), "OP".into()],
        ..StopCriteria::default()
    })
    .unwrap();
    let step = s.push(1, "abcSTOPdef");
    assert_eq!(
        (step.text.as_str(), step.stop),
        ("abc", Some(StopReason::StopString(0)))
    );

    // Multi-byte characters: held text splits only at character boundaries.
    let mut s = StopStream::new(StopCriteria {
        stop_strings: vec!["é!".into()],
        ..StopCriteria::default()
    })
    .unwrap();
    assert_eq!(s.push(1, "caf").text, "caf");
    assert_eq!(s.push(2, "é").text, "");
    assert_eq!(s.push(3, "s").text, "és");

    // EOS and max_tokens release the held text; EOS's own text is not emitted.
    let mut s = StopStream::new(StopCriteria {
        eos_ids: vec![2],
        stop_strings: vec!["</s>".into()],
        max_tokens: Some(3),
    })
    .unwrap();
    assert_eq!(s.push(5, "a<").text, "a");
    let step = s.push(2, "</s>");
    assert_eq!(
        (step.text.as_str(), step.stop),
        ("<", Some(StopReason::Eos(2)))
    );
    let mut s = StopStream::new(StopCriteria {
        stop_strings: vec!["</s>".into()],
        max_tokens: Some(2),
        ..StopCriteria::default()
    })
    .unwrap();
    assert_eq!(s.push(5, "x").stop, None);
    let step = s.push(6, "</");
    assert_eq!(
        (step.text.as_str(), step.stop),
        ("</", Some(StopReason::MaxTokens))
    );
    // finish() hands back what is held when generation ends for another reason.
    let mut s = StopStream::new(StopCriteria {
        stop_strings: vec!["</s>".into()],
        ..StopCriteria::default()
    })
    .unwrap();
    assert_eq!(s.push(1, "y</").text, "y");
    assert_eq!(s.finish(), "</");
}

#[test]
fn bad_parameters_are_typed_errors() {
    let bad = [
        SamplingParams {
            temperature: -0.1,
            ..params()
        },
        SamplingParams {
            temperature: f32::NAN,
            ..params()
        },
        SamplingParams {
            temperature: f32::INFINITY,
            ..params()
        },
        SamplingParams {
            top_p: 0.0,
            ..params()
        },
        SamplingParams {
            top_p: 1.5,
            ..params()
        },
        SamplingParams {
            top_p: f32::NAN,
            ..params()
        },
        SamplingParams {
            min_p: -0.1,
            ..params()
        },
        SamplingParams {
            min_p: 1.1,
            ..params()
        },
        SamplingParams {
            repetition_penalty: 0.0,
            ..params()
        },
        SamplingParams {
            presence_penalty: 2.5,
            ..params()
        },
        SamplingParams {
            frequency_penalty: -3.0,
            ..params()
        },
        SamplingParams {
            frequency_penalty: f32::NAN,
            ..params()
        },
    ];
    for p in bad {
        let err = Sampler::new(p.clone()).unwrap_err();
        assert_eq!(err.code(), "invalid_sampling_params", "{p:?}");
        assert!(p.validate().is_err());
    }
    match Sampler::new(SamplingParams {
        top_p: 2.0,
        ..params()
    })
    .unwrap_err()
    {
        pocketlm::Error::InvalidSamplingParams { param, .. } => assert_eq!(param, "top_p"),
        other => panic!("{other:?}"),
    }
    assert!(SamplingParams::default().validate().is_ok());
    assert!(SamplingParams::greedy().validate().is_ok());

    let mut s = Sampler::new(params()).unwrap();
    assert_eq!(s.sample_logits(&[]).unwrap_err().code(), "no_candidates");
    assert_eq!(
        s.sample_candidates(&[]).unwrap_err().code(),
        "no_candidates"
    );
    assert_eq!(
        s.sample_logits(&[f32::NEG_INFINITY, f32::NAN])
            .unwrap_err()
            .code(),
        "no_candidates"
    );
    let err = StopStream::new(StopCriteria {
        stop_strings: vec![String::new()],
        ..StopCriteria::default()
    })
    .unwrap_err();
    assert_eq!(err.code(), "invalid_sampling_params");
}
