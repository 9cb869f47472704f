//! Issue-5 optimizers (Lion, Muon, AdEMAMix, Schedule-Free). Lion and Muon invariants: Lion moves every coordinate by exactly 0 or lr (no decay); Muon's
//! Newton–Schulz is scale invariant, odd, transpose-equivariant and lands singular values in
//! the known band; bf16 rounding is round-to-nearest-even; the standard routing covers every
//! parameter exactly once and a 1-D parameter can never reach Muon. `PROPTEST_CASES` cases.
// Tests may unwrap and panic (the workspace lints deny it in library code).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable
)]

mod common;

use common::*;
use moment_optim::transforms::{NsPrecision, round_bf16};
use moment_optim::{
    AdamWConfig, LionConfig, MomentOptimizer, MuonConfig, OptimError, ParamGroup, ParamTensor,
    Selector,
};
use proptest::prelude::*;

/// One Muon step from zero momentum with μ = 0 and no decay: the update direction is NS(g)·scale.
fn muon_direction(g: &[f32], rows: usize, cols: usize, precision: NsPrecision) -> Vec<f32> {
    let config = MuonConfig {
        momentum: 0.0,
        nesterov: false,
        weight_decay: 0.0,
        precision,
        ..MuonConfig::default()
    };
    let mut opt = MomentOptimizer::new(config.build().unwrap());
    let mut params = vec![shaped("w", &[rows, cols], &vec![0.0; rows * cols])];
    params[0].grad = Some(flat(g));
    opt.step(1.0, &mut params).unwrap();
    let scale = (rows as f32 / cols as f32).max(1.0).sqrt();
    values(&params[0].value)
        .iter()
        .map(|x| -x / scale)
        .collect()
}

fn sv_band(o: &[f32], rows: usize, cols: usize) -> (f64, f64) {
    // Eigenvalues of OᵀO (or OOᵀ) by Jacobi in f64: the squared singular values.
    let (r, c) = if rows <= cols {
        (rows, cols)
    } else {
        (cols, rows)
    };
    let at = |i: usize, k: usize| -> f64 {
        if rows <= cols {
            f64::from(o[i * cols + k])
        } else {
            f64::from(o[k * cols + i])
        }
    };
    let mut m = vec![0.0f64; r * r];
    for i in 0..r {
        for j in 0..r {
            m[i * r + j] = (0..c).map(|k| at(i, k) * at(j, k)).sum();
        }
    }
    for _ in 0..100 {
        for p in 0..r {
            for q in p + 1..r {
                let apq = m[p * r + q];
                if apq.abs() < 1e-15 {
                    continue;
                }
                let theta = (m[q * r + q] - m[p * r + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let (cs, sn) = (1.0 / (t * t + 1.0).sqrt(), t / (t * t + 1.0).sqrt());
                for k in 0..r {
                    let (a, b) = (m[k * r + p], m[k * r + q]);
                    m[k * r + p] = cs * a - sn * b;
                    m[k * r + q] = sn * a + cs * b;
                }
                for k in 0..r {
                    let (a, b) = (m[p * r + k], m[q * r + k]);
                    m[p * r + k] = cs * a - sn * b;
                    m[q * r + k] = sn * a + cs * b;
                }
            }
        }
    }
    let ev: Vec<f64> = (0..r).map(|i| m[i * r + i].max(0.0).sqrt()).collect();
    (
        ev.iter().cloned().fold(f64::INFINITY, f64::min),
        ev.iter().cloned().fold(0.0, f64::max),
    )
}

fn matrix() -> impl Strategy<Value = (usize, usize, Vec<f32>)> {
    (2usize..7, 2usize..7)
        .prop_flat_map(|(r, c)| (Just(r), Just(c), prop::collection::vec(-1.0f32..1.0, r * c)))
}

proptest! {
    /// Without decay every Lion coordinate moves by exactly 0 or lr.
    #[test]
    fn lion_moves_by_zero_or_lr(k in prop::collection::vec(-1024i32..1024, 1..20), seed in 0u64..1000) {
        // multiples of 2⁻¹⁰ in [−1, 1): θ ± lr is exact, so the move is exactly 0 or lr
        let init: Vec<f32> = k.iter().map(|k| *k as f32 / 1024.0).collect();
        let mut opt = MomentOptimizer::new(LionConfig::default().build().unwrap());
        let mut params = vec![param("p", &init, None)];
        let lr = 0.25f32; // a power of two: θ ± lr is exact for |θ| < 1
        for t in 0..5u64 {
            let before = values(&params[0].value);
            let g: Vec<f32> = (0..init.len()).map(|i| (((seed + 3 * t + i as u64) % 5) as f32) - 2.0).collect();
            params[0].grad = Some(flat(&g));
            opt.step(f64::from(lr), &mut params).unwrap();
            for (a, b) in values(&params[0].value).iter().zip(&before) {
                let d = (a - b).abs();
                prop_assert!(d == 0.0 || d == lr, "moved by {}", d);
            }
        }
    }

    /// Newton–Schulz is scale invariant (NS(s·G) = NS(G), up to rounding), odd
    /// (NS(−G) = −NS(G)) and transpose-equivariant (NS(Gᵀ) = NS(G)ᵀ), in f32.
    #[test]
    fn newton_schulz_symmetries((r, c, g) in matrix(), s in 0.01f32..100.0) {
        let base = muon_direction(&g, r, c, NsPrecision::F32);
        let scaled: Vec<f32> = g.iter().map(|x| x * s).collect();
        let neg: Vec<f32> = g.iter().map(|x| -x).collect();
        let gt: Vec<f32> = (0..r * c).map(|ij| g[(ij % r) * c + ij / r]).collect();
        let a = muon_direction(&scaled, r, c, NsPrecision::F32);
        let b = muon_direction(&neg, r, c, NsPrecision::F32);
        let t = muon_direction(&gt, c, r, NsPrecision::F32);
        for i in 0..r * c {
            prop_assert!((a[i] - base[i]).abs() < 1e-4, "scale: {} vs {}", a[i], base[i]);
            prop_assert_eq!(b[i], -base[i]);
        }
        let t_back: Vec<f32> = (0..r * c).map(|ij| t[(ij % c) * r + ij / c]).collect();
        // the transposed problem is orthogonalized along the other side: same matrix
        let tscale = ((c as f32 / r as f32).max(1.0) / (r as f32 / c as f32).max(1.0)).sqrt();
        for i in 0..r * c {
            prop_assert!((t_back[i] - base[i]).abs() < 1e-4 * tscale.max(1.0) + 1e-5, "transpose: {} vs {}", t_back[i], base[i]);
        }
    }

    /// For a well-conditioned gradient the singular values of NS(G) land in the quintic's
    /// band (measured ~[0.67, 1.14] for the default coefficients), in both precisions.
    #[test]
    fn singular_values_in_band(n in 2usize..6, seed in 0u64..1000, bf16 in any::<bool>()) {
        // G = diagonal-dominant, singular values within a factor 4.
        let g: Vec<f32> = (0..n * n).map(|ij| {
            let (i, j) = (ij / n, ij % n);
            if i == j { 1.0 + ((seed + i as u64) % 4) as f32 } else { 0.1 * (((seed * 7 + ij as u64) % 11) as f32 / 11.0 - 0.5) }
        }).collect();
        let precision = if bf16 { NsPrecision::Bf16 } else { NsPrecision::F32 };
        let o = muon_direction(&g, n, n, precision);
        let (lo, hi) = sv_band(&o, n, n);
        prop_assert!(lo > 0.6 && hi < 1.2, "singular values in [{}, {}]", lo, hi);
    }
}

#[test]
fn bf16_rounding_is_nearest_even() {
    assert_eq!(round_bf16(1.0), 1.0);
    let ulp = 2f32.powi(-7);
    assert_eq!(round_bf16(1.0 + ulp / 2.0), 1.0); // tie → even
    assert_eq!(round_bf16(1.0 + 3.0 * ulp / 2.0), 1.0 + 2.0 * ulp); // tie → even (up)
    assert_eq!(round_bf16(1.0 + ulp * 0.51), 1.0 + ulp);
    assert_eq!(round_bf16(-3.0e-5).to_bits() & 0xFFFF, 0);
    assert!(round_bf16(f32::NAN).is_nan());
    assert_eq!(round_bf16(f32::INFINITY), f32::INFINITY);
}

/// On a well-conditioned gradient bf16 and f32 Newton–Schulz differ by bf16 noise only
/// (a few percent), not more (ill-conditioned inputs amplify it along small singular
/// directions).
#[test]
fn bf16_and_f32_agree_to_bf16_noise() {
    let g: Vec<f32> = (0..24)
        .map(|ij| {
            if ij / 6 == ij % 6 {
                1.0 + (ij % 3) as f32
            } else {
                0.05 * ((ij * 7 % 5) as f32 - 2.0)
            }
        })
        .collect();
    let a = muon_direction(&g, 4, 6, NsPrecision::F32);
    let b = muon_direction(&g, 4, 6, NsPrecision::Bf16);
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    let diff: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x - y).collect();
    let rel = norm(&diff) / norm(&a);
    // bf16 has 2⁻⁸ ≈ 0.4% resolution; five quintic iterations amplify it to a few percent
    assert!(rel > 0.0 && rel < 0.05, "relative difference {rel}");
}

/// The standard routing: every parameter lands in exactly one group — 2-D hidden weights in
/// Muon; embeddings, the head and anything not 2-D in AdamW — and a 1-D parameter routed to
/// Muon by mistake is a typed error, not a panic.
#[test]
fn routing_covers_every_parameter_once_and_vectors_never_reach_muon() {
    let groups = MuonConfig::default()
        .groups::<B>(&AdamWConfig::default(), &["embed", "lm_head"])
        .unwrap();
    let mut b = MomentOptimizer::builder();
    for g in groups {
        b = b.group(g);
    }
    let engine = b.build().unwrap();
    let cases: [(&str, &[usize], &str); 6] = [
        ("embed.weight", &[32, 8], "adamw"),
        ("blocks.0.attn.q.weight", &[8, 8], "muon"),
        ("blocks.0.mlp.up.weight", &[16, 8], "muon"),
        ("blocks.0.norm.weight", &[8], "adamw"),
        ("blocks.0.attn.q.bias", &[8], "adamw"),
        ("lm_head.weight", &[32, 8], "adamw"),
    ];
    for (path, shape, want) in cases {
        assert_eq!(engine.group_of(path, shape), Some(want), "{path}");
    }
    let mut wrong = MomentOptimizer::<B>::builder()
        .group(ParamGroup::new(
            "muon",
            Selector::all(),
            MuonConfig::default().build().unwrap(),
        ))
        .build()
        .unwrap();
    let mut params: Vec<ParamTensor<B>> = vec![param("bias", &[0.1, 0.2], Some(&[1.0, 1.0]))];
    match wrong.step(1e-3, &mut params) {
        Err(OptimError::UnsupportedShape { path, .. }) => assert_eq!(path, "bias"),
        other => panic!("{other:?}"),
    }
    assert_eq!(values(&params[0].value), vec![0.1, 0.2]);
}

/// AdEMAMix with α = 0 is Adam (same betas and ε, torch's bias corrections), to float rounding.
#[test]
fn ademamix_without_the_slow_ema_is_adam() {
    let init = [0.5f32, -1.0, 0.25, 2.0];
    let grads: Vec<Vec<f32>> = (0..8)
        .map(|t| (0..4).map(|i| ((t * 5 + i * 3) % 7) as f32 - 3.0).collect())
        .collect();
    let a = trajectory(
        moment_optim::AdemamixConfig {
            alpha: 0.0,
            ..Default::default()
        }
        .build()
        .unwrap(),
        1e-2,
        &init,
        &grads,
    );
    let b = trajectory(
        moment_optim::AdamConfig::default().build().unwrap(),
        1e-2,
        &init,
        &grads,
    );
    for (x, y) in a.iter().flatten().zip(b.iter().flatten()) {
        assert!((x - y).abs() <= 2e-6 * y.abs().max(1.0), "{x} vs {y}");
    }
}

/// Schedule-Free: the evaluation view is `x = lerp(y, z, 1 − 1/β1)` (hand-computed from the
/// state), the training view inverts it, and before any step both are the identity.
#[test]
fn schedule_free_views_round_trip() {
    let config = moment_optim::ScheduleFreeConfig::default();
    let mut opt = MomentOptimizer::new(config.build().unwrap());
    let y0 = flat(&[0.5, -1.0, 2.0]);
    assert_eq!(values(&opt.eval_view("p", y0.clone())), values(&y0));
    let mut params = vec![param("p", &[0.5, -1.0, 2.0], None)];
    for t in 0..4 {
        params[0].grad = Some(flat(&[0.3 * t as f32, -0.2, 1.0]));
        opt.step(1e-2, &mut params).unwrap();
    }
    let y = values(&params[0].value);
    let z = values(opt.state("p").unwrap()[0].tensor("z").unwrap());
    let x = values(&opt.eval_view("p", params[0].value.clone()));
    let w = 1.0 - 1.0 / config.betas.0;
    for i in 0..3 {
        let want = f64::from(y[i]) + w * (f64::from(z[i]) - f64::from(y[i]));
        assert!((f64::from(x[i]) - want).abs() < 1e-6, "{} vs {want}", x[i]);
    }
    let back = values(&opt.train_view("p", flat(&x)));
    for (a, b) in back.iter().zip(&y) {
        assert!((a - b).abs() < 1e-6, "{a} vs {b}");
    }
}

/// Adam-mini: paths pick the blocks; when every element of a block has the same |g| the block
/// mean of g² is g² itself, so Adam-mini equals AdamW with the same decay (norm paths: none).
#[test]
fn adam_mini_blocks_and_equal_magnitude_equivalence() {
    use moment_optim::transforms::{MiniBlocks, ScaleByAdamMini};
    let t = ScaleByAdamMini {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.1,
        num_heads: 2,
        num_query_groups: 2,
        num_embeds: None,
    };
    assert_eq!(
        t.blocks("model.embed_tokens.weight"),
        MiniBlocks::Elementwise
    );
    assert_eq!(
        t.blocks("layers.3.self_attn.q_proj.weight"),
        MiniBlocks::Heads
    );
    assert_eq!(t.blocks("h.0.attn.qkv.weight"), MiniBlocks::Qkv);
    assert_eq!(t.blocks("layers.0.mlp.up.weight"), MiniBlocks::Tensor);

    let grads: Vec<Vec<f32>> = (0..6)
        .map(|s| {
            (0..8)
                .map(|i| if (i + s) % 3 == 0 { -0.5 } else { 0.5 } * (1.0 + s as f32))
                .collect()
        })
        .collect();
    let init: Vec<f32> = (0..8).map(|i| i as f32 / 8.0 - 0.4).collect();
    let mini = moment_optim::AdamMiniConfig {
        weight_decay: 0.1,
        ..Default::default()
    };
    let a = trajectory(mini.build().unwrap(), 1e-2, &init, &grads); // path "p": one block
    let b = trajectory(
        AdamWConfig {
            weight_decay: 0.1,
            ..Default::default()
        }
        .build()
        .unwrap(),
        1e-2,
        &init,
        &grads,
    );
    for (x, y) in a.iter().flatten().zip(b.iter().flatten()) {
        assert!((x - y).abs() <= 2e-6 * y.abs().max(1.0), "{x} vs {y}");
    }
}

/// Adam-mini blocks under grouped-query attention: a fused QKV weight with 4 heads in 2 groups
/// has 2·(4/2 + 2) = 8 second moments; q/k projections split into num_embeds²/num_heads blocks
/// (a GQA k_proj of 2 heads' width gets 2 blocks); shapes that do not divide are typed errors.
#[test]
fn adam_mini_gqa_blocks() {
    let config = moment_optim::AdamMiniConfig {
        num_heads: 4,
        num_query_groups: Some(2),
        num_embeds: Some(8),
        ..Default::default()
    };
    let mut opt = MomentOptimizer::new(config.build().unwrap());
    // q: 8×8 = 64 = 4 blocks of 16; k (GQA, 2 kv heads): 4×8 = 32 = 2 blocks; qkv: 2 groups × 4 slots × 8
    let mut params = vec![
        shaped("l.q_proj.weight", &[8, 8], &[0.1; 64]),
        shaped("l.k_proj.weight", &[4, 8], &[0.1; 32]),
        shaped("l.attn.qkv.weight", &[8, 8], &[0.1; 64]),
    ];
    for p in params.iter_mut() {
        let n: usize = p.shape.iter().product();
        p.grad = Some(flat(&vec![0.5; n]));
    }
    opt.step(1e-3, &mut params).unwrap();
    let v = |p: &str| opt.state(p).unwrap()[0].tensors[1].shape.clone();
    assert_eq!(v("l.q_proj.weight"), vec![4]);
    assert_eq!(v("l.k_proj.weight"), vec![2]);
    assert_eq!(v("l.attn.qkv.weight"), vec![2, 4]);
    let mut bad = vec![shaped("l.attn.qkv.weight", &[5, 3], &[0.1; 15])];
    bad[0].grad = Some(flat(&[0.5; 15]));
    let mut fresh = MomentOptimizer::new(config.build().unwrap());
    assert!(matches!(
        fresh.step(1e-3, &mut bad),
        Err(OptimError::UnsupportedShape { .. })
    ));
}
