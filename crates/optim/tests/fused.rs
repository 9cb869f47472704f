//! The fused CPU path gives the composed chain's numbers bit for bit, never mutates a buffer
//! someone else holds, and falls back cleanly.
// Tests may unwrap and panic (the workspace lints deny it in library code).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable
)]

mod common;

use burn::tensor::Tensor;
use common::{B, flat, values};
use moment_optim::{AdamConfig, AdamWConfig, Chain, MomentOptimizer, ParamTensor};

fn run(chain: Chain<B>, n: usize, steps: usize, keep_alias: bool) -> (Vec<f32>, String) {
    run_with_curvature(chain, n, steps, keep_alias, false)
}

/// As [`run`]; with `curvature`, a Hessian-like estimate (positive, varied) is handed to the
/// optimizer before every second step (Sophia's curvature update, composed in both paths).
fn run_with_curvature(
    chain: Chain<B>,
    n: usize,
    steps: usize,
    keep_alias: bool,
    curvature: bool,
) -> (Vec<f32>, String) {
    let expect_fused = usize::from(chain.fused().is_some());
    // Host-generated data (burn's global RNG is shared between concurrently running tests).
    let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ n as u64;
    let mut next = |scale: f32| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale
    };
    let init = flat(&(0..n).map(|_| next(1.0)).collect::<Vec<_>>());
    let grads: Vec<Tensor<B, 1>> = (0..steps)
        .map(|s| {
            // one step with a huge gradient, one with zeros: the edge cases
            let scale = match s {
                1 => 1e3,
                3 => 0.0,
                _ => 2.0,
            };
            flat(&(0..n).map(|_| next(scale)).collect::<Vec<_>>())
        })
        .collect();
    let mut opt = MomentOptimizer::new(chain);
    let mut p = vec![ParamTensor {
        path: "w".into(),
        shape: vec![n],
        value: init.clone(),
        grad: None,
    }];
    let before = values(&init);
    let mut aliases = Vec::new();
    for (k, g) in grads.into_iter().enumerate() {
        if curvature && k % 2 == 1 {
            let est = flat(&(0..n).map(|_| next(3.0).abs()).collect::<Vec<_>>());
            opt.update_curvature(vec![moment_optim::GradEntry {
                path: "w".into(),
                param_shape: vec![n],
                grad_shape: vec![n],
                grad: est,
                param: None,
            }])
            .unwrap();
        }
        if keep_alias {
            aliases.push((p[0].value.clone(), values(&p[0].value)));
        }
        p[0].grad = Some(g);
        let report = opt.step(1e-2, &mut p).unwrap();
        assert_eq!(report.params_fused, expect_fused, "path taken");
    }
    // Buffers held elsewhere were never written through.
    assert_eq!(values(&init), before);
    for (t, v) in aliases {
        assert_eq!(values(&t), v);
    }
    let record = serde_json::to_string(&opt.to_record()).unwrap();
    (values(&p[0].value), record)
}

/// Bit patterns, with every NaN mapped to one value (NaN payloads are not part of the contract).
fn bits(v: &[f32]) -> Vec<u32> {
    v.iter()
        .map(|x| if x.is_nan() { u32::MAX } else { x.to_bits() })
        .collect()
}

#[test]
fn fused_adam_family_is_bitwise_the_composed_chain() {
    use moment_optim::Decay;
    use moment_optim::optimizers::adam_chain;
    let decays = [Decay::None, Decay::Coupled(0.05), Decay::Decoupled(0.1)];
    for decay in decays {
        for amsgrad in [false, true] {
            for maximize in [false, true] {
                let name = format!("{decay:?} amsgrad={amsgrad} maximize={maximize}");
                let chain: Chain<B> =
                    adam_chain("adam", (0.9, 0.999), 1e-8, decay, amsgrad, maximize).unwrap();
                assert!(chain.fused().is_some(), "{name} has a fused step");
                // 100k elements: several threads; 1000: one.
                for n in [1000usize, 100_000] {
                    let (fused, rf) = run(chain.clone(), n, 5, false);
                    let (composed, rc) = run(chain.clone().composed(), n, 5, false);
                    assert_eq!(bits(&fused), bits(&composed), "{name}, n = {n}");
                    assert_eq!(rf, rc, "{name}: records differ");
                    // Through shared (aliased) parameter buffers: copy-on-write, same numbers.
                    let (aliased, _) = run(chain.clone(), n, 5, true);
                    assert_eq!(bits(&aliased), bits(&composed), "{name}, aliased");
                }
            }
        }
    }
    // The AdamW / Adam configs users build carry it too.
    assert!(
        AdamWConfig::default()
            .build::<B>()
            .unwrap()
            .fused()
            .is_some()
    );
    assert!(
        AdamConfig::default()
            .build::<B>()
            .unwrap()
            .fused()
            .is_some()
    );
}

/// Non-finite gradients under `Propagate` (per-element semantics), Adam family, Lion and
/// Sophia: the same bits, NaN aside.
#[test]
fn fused_matches_composed_on_non_finite_gradients() {
    use moment_optim::{NonFinitePolicy, ParamGroup, Selector};
    let g = [
        1.0f32,
        f32::NAN,
        f32::INFINITY,
        -f32::INFINITY,
        0.0,
        -0.0,
        3e38,
        1e-40,
    ];
    use moment_optim::{LionConfig, SophiaConfig};
    for chain in [
        AdamWConfig::default().build::<B>().unwrap(),
        AdamConfig {
            amsgrad: true,
            maximize: true,
            weight_decay: 0.1,
            ..AdamConfig::default()
        }
        .build::<B>()
        .unwrap(),
        LionConfig {
            weight_decay: 0.1,
            ..LionConfig::default()
        }
        .build()
        .unwrap(),
        SophiaConfig::g().build().unwrap(),
        SophiaConfig {
            maximize: true,
            ..SophiaConfig::h()
        }
        .build()
        .unwrap(),
    ] {
        let mut out = Vec::new();
        for c in [chain.clone(), chain.clone().composed()] {
            let mut opt = MomentOptimizer::builder()
                .group(ParamGroup::new("all", Selector::All, c))
                .non_finite(NonFinitePolicy::Propagate)
                .build()
                .unwrap();
            let mut p = vec![ParamTensor {
                path: "w".into(),
                shape: vec![g.len()],
                value: flat(&[0.5, -0.5, 1.0, -1.0, 0.0, 2.0, 1e30, -1e-30]),
                grad: None,
            }];
            for _ in 0..3 {
                p[0].grad = Some(flat(&g));
                opt.step(1e-2, &mut p).unwrap();
            }
            out.push(bits(&values(&p[0].value)));
        }
        assert_eq!(out[0], out[1], "{}", chain.label());
    }
}

/// Buffers of 16 MiB and more are moved once into huge-page-advised memory, as a view that
/// starts on a 2 MiB boundary inside a longer allocation: the numbers, the records (read
/// through burn's `into_data`, which must honour the view's offset) and shared buffers
/// (copied, never re-homed or written through) are as on the composed path.
#[test]
fn large_rehomed_buffers_keep_numbers_and_records() {
    let n = (1usize << 22) + 7;
    let chain = AdamWConfig::default().build::<B>().unwrap();
    let (fused, rf) = run(chain.clone(), n, 3, false);
    let (composed, rc) = run(chain.clone().composed(), n, 3, false);
    assert!(bits(&fused) == bits(&composed), "large AdamW step differs");
    assert!(rf == rc, "large AdamW records differ");
    let (aliased, _) = run(chain, n, 3, true);
    assert!(
        bits(&aliased) == bits(&composed),
        "large aliased AdamW differs"
    );
}

#[test]
fn fused_threads_setting_does_not_change_results() {
    let chain = AdamWConfig::default().build::<B>().unwrap();
    moment_optim::fused::set_threads(1);
    let (one, _) = run(chain.clone(), 200_000, 3, false);
    moment_optim::fused::set_threads(3);
    let (three, _) = run(chain, 200_000, 3, false);
    moment_optim::fused::set_threads(0);
    assert_eq!(one, three);
}

#[test]
fn fused_lion_is_bitwise_the_composed_chain() {
    use moment_optim::LionConfig;
    for maximize in [false, true] {
        for weight_decay in [0.0, 0.1] {
            let chain: Chain<B> = LionConfig {
                maximize,
                weight_decay,
                ..LionConfig::default()
            }
            .build()
            .unwrap();
            let name = format!("maximize={maximize} wd={weight_decay}");
            assert!(chain.fused().is_some(), "{name}");
            for n in [1000usize, 100_000] {
                let (fused, rf) = run(chain.clone(), n, 5, false);
                let (composed, rc) = run(chain.clone().composed(), n, 5, false);
                assert_eq!(bits(&fused), bits(&composed), "{name}, n = {n}");
                assert_eq!(rf, rc, "{name}: records differ");
                let (aliased, _) = run(chain.clone(), n, 5, true);
                assert_eq!(bits(&aliased), bits(&composed), "{name}, aliased");
            }
        }
    }
}

#[test]
fn fused_sophia_is_bitwise_the_composed_chain_including_its_win_rate() {
    use moment_optim::{Decay, SophiaConfig};
    for h in [false, true] {
        for maximize in [false, true] {
            for decay in [Decay::None, Decay::Coupled(0.05), Decay::Decoupled(0.1)] {
                let base = if h {
                    SophiaConfig::h()
                } else {
                    SophiaConfig::g()
                };
                let chain: Chain<B> = SophiaConfig {
                    maximize,
                    decay,
                    ..base
                }
                .build()
                .unwrap();
                let name = format!("H={h} maximize={maximize} {decay:?}");
                assert!(chain.fused().is_some(), "{name}");
                for n in [1000usize, 100_000] {
                    let (fused, rf) = run_with_curvature(chain.clone(), n, 6, false, true);
                    let (composed, rc) =
                        run_with_curvature(chain.clone().composed(), n, 6, false, true);
                    assert_eq!(bits(&fused), bits(&composed), "{name}, n = {n}");
                    // The records hold the moments, the curvature and the win rate.
                    assert!(rf.contains("win_rate"));
                    assert_eq!(rf, rc, "{name}: records differ");
                }
            }
        }
    }
}

#[test]
fn fused_adam8bit_is_bitwise_the_composed_chain_codes_included() {
    use moment_optim::{Adam8bitConfig, BnbKernel};
    for (name, cfg) in [
        ("adam8bit", Adam8bitConfig::default()),
        ("adamw8bit", Adam8bitConfig::adamw()),
    ] {
        let chain: Chain<B> = cfg.build().unwrap();
        assert!(chain.fused().is_some(), "{name}");
        // Partial last blocks; one thread and several.
        for n in [4096 + 37usize, 100_000 + 13] {
            let (fused, rf) = run(chain.clone(), n, 5, false);
            let (composed, rc) = run(chain.clone().composed(), n, 5, false);
            assert_eq!(bits(&fused), bits(&composed), "{name}, n = {n}");
            assert!(rf.contains("state1"));
            assert_eq!(rf, rc, "{name}: records (codes, absmax) differ");
            let (aliased, _) = run(chain.clone(), n, 5, true);
            assert_eq!(bits(&aliased), bits(&composed), "{name}, aliased");
        }
    }
    // bnb's CPU mode and tensors under min_8bit_size stay composed.
    let cpu: Chain<B> = Adam8bitConfig {
        kernel: BnbKernel::Cpu,
        ..Adam8bitConfig::default()
    }
    .build()
    .unwrap();
    assert!(cpu.fused().is_none());
    let (_, _) = run_expect(Adam8bitConfig::default().build().unwrap(), 1000, 0);
}

/// [`run`] asserting how many parameters took the fused path each step.
fn run_expect(chain: Chain<B>, n: usize, fused: usize) -> (Vec<f32>, u64) {
    let mut opt = MomentOptimizer::new(chain);
    let mut p = vec![ParamTensor {
        path: "w".into(),
        shape: vec![n],
        value: flat(&vec![0.5; n]),
        grad: None,
    }];
    p[0].grad = Some(flat(&vec![0.1; n]));
    let r = opt.step(1e-2, &mut p).unwrap();
    assert_eq!(r.params_fused, fused);
    (values(&p[0].value), r.step)
}

/// A block whose first moment is all zeros of negative sign (negative codes under a max-abs
/// of 0, stepped with −0.0 gradients): the kernel's sign fix sends −0.0 to the smallest
/// negative code, and the fused encoder, which folds that fix into a `min` on the normalised
/// value's sign, must keep the zero's sign when the block's max-abs is 0.
#[test]
fn fused_adam8bit_keeps_the_sign_of_a_zero_block() {
    use moment_optim::Adam8bitConfig;
    let n = 4096;
    let chain: Chain<B> = Adam8bitConfig::adamw().build().unwrap();
    let param = || ParamTensor {
        path: "w".into(),
        shape: vec![n],
        value: flat(&(0..n).map(|i| (i % 7) as f32 * 0.1).collect::<Vec<_>>()),
        grad: None,
    };
    // One step to get a record; then the first block's first moment becomes −0.0 everywhere.
    let mut opt = MomentOptimizer::new(chain.clone());
    let mut p = vec![param()];
    p[0].grad = Some(flat(&vec![0.25; n]));
    opt.step(1e-2, &mut p).unwrap();
    let mut record = opt.to_record();
    let t = &mut record.params[0].transforms[0];
    let absmax = t
        .tensors
        .iter_mut()
        .find(|x| x.name == "absmax1")
        .expect("absmax1");
    absmax.values[0] = 0.0;
    let block = n / absmax.values.len();
    let codes = t
        .codes
        .iter_mut()
        .find(|x| x.name == "state1")
        .expect("state1");
    codes.values[..block].fill(0);
    let mut out = Vec::new();
    for c in [chain.clone(), chain.composed()] {
        let mut opt = MomentOptimizer::new(c);
        opt.load_record(record.clone(), &Default::default())
            .unwrap();
        let mut p = vec![param()];
        p[0].grad = Some(flat(&vec![-0.0; n]));
        let fused = opt.step(1e-2, &mut p).unwrap().params_fused;
        let rec = opt.to_record();
        let t = &rec.params[0].transforms[0];
        let codes = &t.codes.iter().find(|x| x.name == "state1").unwrap().values;
        out.push((
            bits(&values(&p[0].value)),
            codes[..block].to_vec(),
            rec,
            fused,
        ));
    }
    // the kernel's choice: −0.0 → the smallest negative code (one below the zero's)
    assert!(out[1].1.iter().all(|&c| c == 126), "{:?}", &out[1].1[..8]);
    assert_eq!(out[0].0, out[1].0);
    assert_eq!(out[0].1, out[1].1);
    assert_eq!(out[0].2, out[1].2);
    assert_eq!(
        (out[0].3, out[1].3),
        (1, 0),
        "steps that took the fused path"
    );
}

/// 8-bit Adam on non-finite gradients under `Propagate` (CUDA semantics: state zeroed and the
/// parameter untouched at those elements): the same bits and the same codes.
#[test]
fn fused_adam8bit_matches_composed_on_non_finite_gradients() {
    let n = 5000;
    let g: Vec<f32> = (0..n)
        .map(|i| match i % 97 {
            3 => f32::NAN,
            5 => f32::INFINITY,
            7 => -f32::INFINITY,
            _ => ((i * 31 % 17) as f32 - 8.0) * 0.1,
        })
        .collect();
    // Finite gradients whose squares overflow: v and its block max-abs become +inf, so v/absmax
    // is NaN — the blocks the fast encoder hands back to the binary search.
    let huge: Vec<f32> = (0..n)
        .map(|i| match i % 701 {
            11 => f32::MAX,
            12 => -1e30,
            _ => ((i * 13 % 11) as f32 - 5.0) * 0.01,
        })
        .collect();
    for g in [g, huge] {
        adam8bit_fused_equals_composed(n, &g);
    }
}

fn adam8bit_fused_equals_composed(n: usize, g: &[f32]) {
    use moment_optim::{Adam8bitConfig, NonFinitePolicy, ParamGroup, Selector};
    let chain: Chain<B> = Adam8bitConfig::adamw().build().unwrap();
    let mut out = Vec::new();
    for c in [chain.clone(), chain.composed()] {
        let mut opt = MomentOptimizer::builder()
            .group(ParamGroup::new("all", Selector::All, c))
            .non_finite(NonFinitePolicy::Propagate)
            .build()
            .unwrap();
        let mut p = vec![ParamTensor {
            path: "w".into(),
            shape: vec![n],
            value: flat(
                &(0..n)
                    .map(|i| (i % 13) as f32 * 0.1 - 0.6)
                    .collect::<Vec<_>>(),
            ),
            grad: None,
        }];
        for _ in 0..3 {
            p[0].grad = Some(flat(g));
            opt.step(1e-2, &mut p).unwrap();
        }
        out.push((
            bits(&values(&p[0].value)),
            serde_json::to_string(&opt.to_record()).unwrap(),
        ));
    }
    assert_eq!(out[0].0, out[1].0);
    assert_eq!(out[0].1, out[1].1);
}

/// Adafactor on a shaped parameter: final values, the record, and how many steps took the
/// fused path.
fn run_adafactor(
    chain: Chain<B>,
    shape: &[usize],
    steps: usize,
) -> (Vec<f32>, serde_json::Value, usize) {
    let n: usize = shape.iter().product();
    let mut state = 0x2545_F491_4F6C_DD1Du64 ^ n as u64;
    let mut next = |scale: f32| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale
    };
    let init: Vec<f32> = (0..n).map(|_| next(1.0)).collect();
    let mut opt = MomentOptimizer::new(chain);
    let mut p = vec![common::shaped("w", shape, &init)];
    let mut fused = 0;
    for s in 0..steps {
        let scale = match s {
            1 => 1e3,
            3 => 0.0,
            _ => 2.0,
        };
        p[0].grad = Some(flat(&(0..n).map(|_| next(scale)).collect::<Vec<_>>()));
        fused += opt.step(1e-2, &mut p).unwrap().params_fused;
    }
    (
        values(&p[0].value),
        serde_json::to_value(opt.to_record()).unwrap(),
        fused,
    )
}

/// Every number in two JSON records agrees within `rtol`/`atol` (same structure otherwise).
fn records_close(a: &serde_json::Value, b: &serde_json::Value, rtol: f64, atol: f64, at: &str) {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            assert!((x - y).abs() <= atol + rtol * y.abs(), "{at}: {x} vs {y}");
        }
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len(), "{at}");
            for (i, (x, y)) in x.iter().zip(y).enumerate() {
                records_close(x, y, rtol, atol, &format!("{at}[{i}]"));
            }
        }
        (Value::Object(x), Value::Object(y)) => {
            assert_eq!(
                x.keys().collect::<Vec<_>>(),
                y.keys().collect::<Vec<_>>(),
                "{at}"
            );
            for (k, v) in x {
                records_close(v, &y[k], rtol, atol, &format!("{at}.{k}"));
            }
        }
        _ => assert_eq!(a, b, "{at}"),
    }
}

/// The fused Adafactor step agrees with the composed chain within the family's reference
/// tolerance (its sums run in f64 over fixed blocks, the composed chain's in f32 in burn's
/// order) for both conventions, every option, full and factored shapes (leading dims, rows not
/// a multiple of the block, several threads' worth), huge and zero gradients; its result does
/// not depend on the thread count; and it is taken on every step.
#[test]
fn fused_adafactor_matches_the_composed_chain() {
    use moment_optim::AdafactorConfig;
    let configs: Vec<(&str, AdafactorConfig)> = vec![
        ("hf default", AdafactorConfig::default()),
        (
            "hf beta1 decay absolute lr maximize",
            AdafactorConfig {
                beta1: Some(0.9),
                weight_decay: 0.1,
                relative_step: false,
                scale_parameter: false,
                maximize: true,
                ..AdafactorConfig::default()
            },
        ),
        (
            "torch decay",
            AdafactorConfig {
                weight_decay: 0.1,
                ..AdafactorConfig::torch()
            },
        ),
    ];
    let shapes: [&[usize]; 6] = [
        &[1000],
        &[64, 96],
        &[3, 40, 50],
        &[2, 200, 20],
        &[5000, 8],
        &[512, 300],
    ];
    for (name, cfg) in &configs {
        let chain: Chain<B> = cfg.build().unwrap();
        assert!(chain.fused().is_some(), "{name}");
        for shape in shapes {
            let at = format!("{name} {shape:?}");
            let (f, rf, taken) = run_adafactor(chain.clone(), shape, 5);
            let (c, rc, _) = run_adafactor(chain.clone().composed(), shape, 5);
            assert_eq!(taken, 5, "{at}: fused path taken");
            assert!(f.iter().all(|x| x.is_finite()), "{at}");
            for (i, (x, y)) in f.iter().zip(&c).enumerate() {
                assert!(
                    (x - y).abs() <= 1e-6 + 1e-5 * y.abs(),
                    "{at}: element {i}: fused {x} vs composed {y}"
                );
            }
            records_close(&rf, &rc, 1e-5, 1e-7, &at);
        }
    }
    // Shapes with several groups of column sums (≈ 256k elements each), so several threads:
    // one matrix, one 3-D tensor whose groups divide its rows, one whose do not (row-by-row
    // column sums); the composed chain agrees and the thread count changes nothing.
    let chain: Chain<B> = AdafactorConfig::default().build().unwrap();
    let big: [&[usize]; 4] = [&[512, 300], &[1024, 600], &[4, 208, 600], &[3, 256, 600]];
    for shape in big {
        let at = format!("hf default {shape:?}");
        moment_optim::fused::set_threads(1);
        let (one, _, _) = run_adafactor(chain.clone(), shape, 3);
        moment_optim::fused::set_threads(3);
        let (three, rf, _) = run_adafactor(chain.clone(), shape, 3);
        moment_optim::fused::set_threads(0);
        assert_eq!(
            bits(&one),
            bits(&three),
            "{at}: thread count changed the result"
        );
        if shape.len() > 2 || shape[0] > 512 {
            let (c, rc, _) = run_adafactor(chain.clone().composed(), shape, 3);
            for (i, (x, y)) in three.iter().zip(&c).enumerate() {
                assert!(
                    (x - y).abs() <= 1e-6 + 1e-5 * y.abs(),
                    "{at}: element {i}: fused {x} vs composed {y}"
                );
            }
            records_close(&rf, &rc, 1e-5, 1e-7, &at);
        }
    }
}

/// CI runs this suite once per SIMD level the machine has (`MOMENT_SIMD=scalar|avx2`, and the
/// default widest): the level asked for must be the level the kernels use, or those runs would
/// test the same code three times.
#[test]
fn the_requested_simd_level_is_the_one_used() {
    use moment_optim::SimdLevel;
    use moment_optim::simd::detected_simd_level;
    let level = moment_optim::simd_level();
    let want = match std::env::var("MOMENT_SIMD") {
        Ok(v) => SimdLevel::parse(&v)
            .unwrap_or_else(|| panic!("MOMENT_SIMD={v:?} names no level"))
            .min(detected_simd_level()),
        Err(_) => detected_simd_level(),
    };
    assert_eq!(level, want);
}
