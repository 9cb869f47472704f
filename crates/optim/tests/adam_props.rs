//! Property tests: the universal invariants and Adam/AdamW's own (see `../shared/design.md`),
//! run over a table of optimizer configurations. Case count: `PROPTEST_CASES` (CI keeps it small).
// Tests may unwrap and panic (the workspace lints deny it in library code).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable
)]

mod common;

use common::*;
use moment_optim::{AdamConfig, AdamWConfig, Chain};
use proptest::prelude::*;

/// The table: every variant the Adam family offers.
fn table() -> Vec<(&'static str, Chain<B>, bool)> {
    // (name, chain, has weight decay)
    vec![
        ("adam", AdamConfig::default().build().unwrap(), false),
        (
            "adam-amsgrad",
            AdamConfig {
                amsgrad: true,
                ..Default::default()
            }
            .build()
            .unwrap(),
            false,
        ),
        (
            "adam-l2",
            AdamConfig {
                weight_decay: 0.1,
                ..Default::default()
            }
            .build()
            .unwrap(),
            true,
        ),
        ("adamw", AdamWConfig::default().build().unwrap(), true),
        (
            "adamw-nodecay",
            AdamWConfig::default()
                .with_weight_decay(0.0)
                .build()
                .unwrap(),
            false,
        ),
        (
            "adamw-amsgrad",
            AdamWConfig {
                amsgrad: true,
                ..Default::default()
            }
            .build()
            .unwrap(),
            true,
        ),
        (
            "adam-maximize",
            AdamConfig {
                maximize: true,
                ..Default::default()
            }
            .build()
            .unwrap(),
            false,
        ),
    ]
}

/// `steps` gradients of `n` elements, magnitudes spread over many decades.
fn grads(n: usize, steps: usize) -> impl Strategy<Value = Vec<Vec<f32>>> {
    let elem = prop_oneof![
        4 => -10.0f32..10.0,
        1 => -1e3f32..1e3,
        1 => -1e-3f32..1e-3,
        1 => Just(0.0f32),
    ];
    prop::collection::vec(prop::collection::vec(elem, n), steps)
}

fn case() -> impl Strategy<Value = (Vec<f32>, Vec<Vec<f32>>, f64)> {
    (1usize..12, 1usize..8).prop_flat_map(|(n, steps)| {
        (
            prop::collection::vec(-3.0f32..3.0, n),
            grads(n, steps),
            prop_oneof![Just(1e-3f64), 1e-5f64..1e-1],
        )
    })
}

fn delta(before: &[f32], after: &[f32]) -> Vec<f64> {
    after
        .iter()
        .zip(before)
        .map(|(a, b)| f64::from(*a) - f64::from(*b))
        .collect()
}

proptest! {
    #[test]
    fn lr_zero_is_identity((init, gs, _lr) in case()) {
        for (name, chain, _) in table() {
            let traj = trajectory(chain, 0.0, &init, &gs);
            for p in traj {
                prop_assert_eq!(&p, &init, "{}", name);
            }
        }
    }

    #[test]
    fn finite_in_finite_out_and_deterministic((init, gs, lr) in case()) {
        for (name, chain, _) in table() {
            let a = trajectory(chain.clone(), lr, &init, &gs);
            let b = trajectory(chain, lr, &init, &gs);
            prop_assert!(a.iter().flatten().all(|x| x.is_finite()), "{}", name);
            // Bitwise determinism on CPU.
            let bits = |t: &Vec<Vec<f32>>| t.iter().flatten().map(|x| x.to_bits()).collect::<Vec<_>>();
            prop_assert_eq!(bits(&a), bits(&b), "{}", name);
        }
    }

    #[test]
    fn first_step_is_lr_g_over_abs_g_plus_eps(init in prop::collection::vec(-3.0f32..3.0, 1..16), lr in 1e-5f64..1e-1, seed in any::<u64>()) {
        // Fresh state, no decay: Δ = −lr·g/(|g|+ε) exactly in real arithmetic.
        let g: Vec<f32> = init.iter().enumerate().map(|(i, _)| ((seed.rotate_left(i as u32 * 7) % 2001) as f32 - 1000.0) * 1e-2).collect();
        for (name, chain, decay) in table() {
            if decay { continue; }
            let sign = if name.contains("maximize") { 1.0 } else { -1.0 };
            let after = &trajectory(chain, lr, &init, std::slice::from_ref(&g))[0];
            let expected: Vec<f64> = init.iter().zip(&g).map(|(&p, &g)| {
                let g = f64::from(g);
                f64::from(p) + sign * lr * g / (g.abs() + 1e-8)
            }).collect();
            assert_close(after, &expected, 1e-6, 1e-6 * lr.max(1e-7) + 1e-7, name);
        }
    }

    #[test]
    fn constant_gradient_gives_the_same_step_every_step(init in prop::collection::vec(-3.0f32..3.0, 1..8), g in prop::collection::vec(prop_oneof![-5.0f32..-0.01, 0.01f32..5.0], 8), steps in 1usize..30) {
        // m̂ = g and v̂ = g² at every t when the gradient is constant: catches bias-correction
        // off-by-ones (each step must be −lr·g/(|g|+ε), also at t = 1 and t = 30).
        let g = &g[..init.len()];
        let lr = 1e-3;
        for amsgrad in [false, true] {
            let chain = AdamConfig { amsgrad, ..Default::default() }.build().unwrap();
            let gs = vec![g.to_vec(); steps];
            let traj = trajectory(chain, lr, &init, &gs);
            let mut prev: Vec<f32> = init.clone();
            for (t, p) in traj.iter().enumerate() {
                let d = delta(&prev, p);
                for (i, di) in d.iter().enumerate() {
                    let gi = f64::from(g[i]);
                    let want = -lr * gi / (gi.abs() + 1e-8);
                    // f32 parameter resolution around |θ| ≤ 3 is ~2.4e-7 per step.
                    prop_assert!((di - want).abs() <= 1e-6 * lr + 5e-7, "t={} i={} {} vs {}", t + 1, i, di, want);
                }
                prev = p.clone();
            }
        }
    }

    #[test]
    fn update_is_linear_in_lr((init, gs, lr) in case()) {
        // With θ = 0 and no decay, the trajectory depends on lr only as a factor.
        let zeros = vec![0.0f32; init.len()];
        for (name, chain, decay) in table() {
            if decay { continue; }
            let a = trajectory(chain.clone(), lr, &zeros, &gs);
            let b = trajectory(chain, 2.0 * lr, &zeros, &gs);
            for (pa, pb) in a.iter().zip(&b) {
                let want: Vec<f64> = pa.iter().map(|x| 2.0 * f64::from(*x)).collect();
                assert_close(pb, &want, 1e-5, 1e-12, name);
            }
        }
    }

    #[test]
    fn odd_symmetry((init, gs, lr) in case()) {
        // Fresh state, no decay: Δ(−g) = −Δ(g) for the whole trajectory.
        let zeros = vec![0.0f32; init.len()];
        let neg: Vec<Vec<f32>> = gs.iter().map(|g| g.iter().map(|x| -x).collect()).collect();
        for (name, chain, decay) in table() {
            if decay { continue; }
            let a = trajectory(chain.clone(), lr, &zeros, &gs);
            let b = trajectory(chain, lr, &zeros, &neg);
            for (pa, pb) in a.iter().zip(&b) {
                let want: Vec<f64> = pa.iter().map(|x| -f64::from(*x)).collect();
                assert_close(pb, &want, 0.0, 0.0, name);
            }
        }
    }

    #[test]
    fn gradient_scale_invariance_with_negligible_eps((init, gs, lr) in case(), scale in prop_oneof![1e-2f32..1e2, Just(1024.0f32)]) {
        // ε negligible against √v̂: Adam is invariant to rescaling the gradient stream.
        let chain = || AdamConfig { eps: 1e-30, ..Default::default() }.build::<B>().unwrap();
        let scaled: Vec<Vec<f32>> = gs.iter().map(|g| g.iter().map(|x| x * scale).collect()).collect();
        let a = trajectory(chain(), lr, &init, &gs);
        let b = trajectory(chain(), lr, &init, &scaled);
        for (pa, pb) in a.iter().zip(&b) {
            let want: Vec<f64> = pa.iter().map(|x| f64::from(*x)).collect();
            assert_close(pb, &want, 1e-5, 1e-5 * lr, "adam eps=1e-30");
        }
    }

    #[test]
    fn elementwise_permutation_invariance((init, gs, lr) in case(), rot in 0usize..12) {
        let n = init.len();
        let perm = |v: &[f32]| -> Vec<f32> { (0..n).map(|i| v[(i + rot) % n]).collect() };
        for (name, chain, _) in table() {
            let a = trajectory(chain.clone(), lr, &init, &gs);
            let b = trajectory(chain, lr, &perm(&init), &gs.iter().map(|g| perm(g)).collect::<Vec<_>>());
            for (pa, pb) in a.iter().zip(&b) {
                prop_assert_eq!(perm(pa), pb.clone(), "{}", name);
            }
        }
    }

    #[test]
    fn zero_gradient_on_fresh_state_changes_nothing(init in prop::collection::vec(-3.0f32..3.0, 1..16), lr in 1e-5f64..1e-1) {
        for (name, chain, decay) in table() {
            if decay { continue; }
            let traj = trajectory(chain, lr, &init, &[vec![0.0; init.len()], vec![0.0; init.len()]]);
            prop_assert_eq!(&traj[1], &init, "{}", name);
        }
    }

    #[test]
    fn decoupled_decay_adds_exactly_minus_lr_wd_theta((init, gs, lr) in case(), wd in 0.0f64..0.5) {
        // One step from fresh state: AdamW(wd) − AdamW(0) = −lr·wd·θ.
        let g = &gs[0];
        let with = &trajectory(AdamWConfig::default().with_weight_decay(wd).build().unwrap(), lr, &init, std::slice::from_ref(g))[0];
        let without = &trajectory(AdamWConfig::default().with_weight_decay(0.0).build().unwrap(), lr, &init, std::slice::from_ref(g))[0];
        let diff = delta(without, with);
        let want: Vec<f64> = init.iter().map(|p| -lr * wd * f64::from(*p)).collect();
        for (d, w) in diff.iter().zip(&want) {
            // Difference of two f32 parameters near |θ| ≤ 3: resolution ~5e-7.
            prop_assert!((d - w).abs() <= 1e-6, "{} vs {}", d, w);
        }
    }

    #[test]
    fn coupled_l2_equals_adam_on_g_plus_wd_theta((init, gs, lr) in case(), wd in 0.0f64..0.5) {
        let coupled = trajectory(AdamConfig { weight_decay: wd, ..Default::default() }.build().unwrap(), lr, &init, &gs);
        // Plain Adam fed g_t + wd·θ_t, θ_t its own parameter before step t.
        let mut opt = moment_optim::MomentOptimizer::new(AdamConfig::default().build::<B>().unwrap());
        let mut params = vec![param("p", &init, None)];
        for (t, g) in gs.iter().enumerate() {
            let theta = values(&params[0].value);
            let g2: Vec<f32> = g.iter().zip(&theta).map(|(g, p)| g + (wd as f32) * p).collect();
            params[0].grad = Some(flat(&g2));
            opt.step(lr, &mut params).unwrap();
            let want: Vec<f64> = values(&params[0].value).iter().map(|x| f64::from(*x)).collect();
            assert_close(&coupled[t], &want, 1e-6, 1e-6, "adam l2");
        }
    }

    #[test]
    fn cauchy_schwarz_step_bound((init, gs, lr) in case()) {
        // |Δ_t| ≤ lr·(1−β1)/(1−β1^t)·√((1−β2^t)/(1−β2))·√((1−γ^t)/(1−γ)), γ = β1²/β2.
        let (b1, b2) = (0.9f64, 0.999f64);
        let gamma = b1 * b1 / b2;
        let traj = trajectory(AdamConfig::default().build().unwrap(), lr, &init, &gs);
        let mut prev = init.clone();
        for (t, p) in traj.iter().enumerate() {
            let t1 = (t + 1) as i32;
            let bound = lr * (1.0 - b1) / (1.0 - b1.powi(t1))
                * ((1.0 - b2.powi(t1)) / (1.0 - b2)).sqrt()
                * ((1.0 - gamma.powi(t1)) / (1.0 - gamma)).sqrt();
            for d in delta(&prev, p) {
                // + f32 resolution of θ (|θ| stays < 4).
                prop_assert!(d.abs() <= bound * (1.0 + 1e-5) + 5e-7, "t={} |Δ|={} bound={}", t + 1, d.abs(), bound);
            }
            prev = p.clone();
        }
    }

    #[test]
    fn amsgrad_max_dominates_and_never_decreases((init, gs, lr) in case()) {
        let mut opt = moment_optim::MomentOptimizer::new(AdamConfig { amsgrad: true, ..Default::default() }.build::<B>().unwrap());
        let mut params = vec![param("p", &init, None)];
        let mut last_max = vec![0.0f32; init.len()];
        for (t, g) in gs.iter().enumerate() {
            params[0].grad = Some(flat(g));
            opt.step(lr, &mut params).unwrap();
            let st = &opt.state("p").unwrap()[0];
            prop_assert_eq!(st.counter("step"), Some(t as u64 + 1));
            let v = values(st.tensor("exp_avg_sq").unwrap());
            let vmax = values(st.tensor("max_exp_avg_sq").unwrap());
            for i in 0..v.len() {
                prop_assert!(vmax[i] >= v[i] && vmax[i] >= last_max[i]);
            }
            last_max = vmax;
        }
    }
}
