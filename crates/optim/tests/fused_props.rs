//! Property tests of the fused CPU path at the sizes where its structure shows: lengths just
//! below, at and above the SIMD width (16), the Σg² block (256), the 8-bit quantization block
//! (64…4096), the in-pass measuring block (4096) and the size where the work is split over
//! threads (32768), with 1–3 threads. The fused step gives the composed chain's bits, its
//! record and (measured in the pass or before it) the same gradient norm.
//! Case count: `PROPTEST_CASES` (CI keeps it small).

mod common;

use common::{B, flat, values};
use moment_optim::optimizers::adam_chain;
use moment_optim::{
    Adam8bitConfig, BnbKernel, Chain, Decay, GradientScan, LionConfig, MomentOptimizer,
    NonFinitePolicy, ParamGroup, ParamTensor, Selector,
};
use proptest::prelude::*;

/// Lengths on either side of the fused path's boundaries, and anywhere up to 3 thread
/// chunks' worth.
fn length() -> impl Strategy<Value = usize> {
    prop_oneof![
        (
            prop::sample::select(vec![16usize, 256, 4096, 1 << 15]),
            1usize..4,
            -1isize..=1
        )
            .prop_map(|(block, k, d)| (block * k).saturating_add_signed(d).max(1)),
        1usize..100_000,
    ]
}

/// Seeded host data (burn's global RNG is shared between concurrently running tests):
/// `steps` gradients, one of them huge and one zero when there are enough steps.
fn data(n: usize, steps: usize, seed: u64) -> (Vec<f32>, Vec<Vec<f32>>) {
    let mut s = seed | 1;
    let mut next = |scale: f32| {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale
    };
    let init = (0..n).map(|_| next(2.0)).collect();
    let grads = (0..steps)
        .map(|k| {
            let scale = match k {
                1 => 1e3,
                2 => 0.0,
                _ => 2.0,
            };
            (0..n).map(|_| next(scale)).collect()
        })
        .collect();
    (init, grads)
}

/// Final parameter, the optimizer's record (JSON) and each step's reported gradient norm.
fn run(
    chain: Chain<B>,
    scan: GradientScan,
    init: &[f32],
    grads: &[Vec<f32>],
    threads: usize,
) -> (Vec<f32>, String, Vec<u64>) {
    moment_optim::fused::set_threads(threads);
    let expect_fused = usize::from(chain.fused().is_some());
    let mut opt = MomentOptimizer::builder()
        .group(ParamGroup::new("all", Selector::All, chain))
        .non_finite(NonFinitePolicy::Propagate)
        .gradient_scan(scan)
        .build()
        .unwrap();
    let mut p = vec![ParamTensor {
        path: "w".into(),
        shape: vec![init.len()],
        value: flat(init),
        grad: None,
    }];
    let mut norms = Vec::new();
    for g in grads {
        p[0].grad = Some(flat(g));
        let report = opt.step(1e-2, &mut p).unwrap();
        assert_eq!(report.params_fused, expect_fused, "path taken");
        norms.push(report.grad_norm.to_bits());
    }
    let record = serde_json::to_string(&opt.to_record()).unwrap();
    (values(&p[0].value), record, norms)
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter()
        .map(|x| if x.is_nan() { u32::MAX } else { x.to_bits() })
        .collect()
}

/// The fused run (in-pass measurement and scan first) against the composed chain. A chain
/// without a fused step fails (the property would compare the composed chain with itself).
fn check_fused_is_composed(
    chain: Chain<B>,
    n: usize,
    steps: usize,
    seed: u64,
    threads: usize,
) -> Result<(), TestCaseError> {
    prop_assert!(chain.fused().is_some(), "no fused step");
    let (init, grads) = data(n, steps, seed);
    let composed = run(
        chain.clone().composed(),
        GradientScan::BeforeStep,
        &init,
        &grads,
        1,
    );
    let fused = run(chain.clone(), GradientScan::InPass, &init, &grads, threads);
    let before = run(chain, GradientScan::BeforeStep, &init, &grads, threads);
    for (what, other) in [("in pass", &fused), ("scan first", &before)] {
        prop_assert_eq!(
            bits(&other.0),
            bits(&composed.0),
            "{}: parameters, n = {}",
            what,
            n
        );
        prop_assert_eq!(&other.1, &composed.1, "{}: records, n = {}", what, n);
        prop_assert_eq!(&other.2, &composed.2, "{}: gradient norms, n = {}", what, n);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        // each case runs three optimizers over up to 100k elements
        cases: ProptestConfig::default().cases.min(24),
        ..ProptestConfig::default()
    })]

    #[test]
    fn fused_adam_is_the_composed_chain_across_block_and_thread_boundaries(
        n in length(),
        b1 in 0.0f64..0.999,
        b2 in 0.5f64..0.9999,
        eps_exp in -10i32..-3,
        decay in prop::sample::select(vec![0u8, 1, 2]),
        lambda in 0.0f64..0.2,
        amsgrad: bool,
        maximize: bool,
        seed: u64,
        threads in 1usize..=3,
    ) {
        let decay = match decay {
            0 => Decay::None,
            1 => Decay::Coupled(lambda),
            _ => Decay::Decoupled(lambda),
        };
        let chain = adam_chain("adam", (b1, b2), 10f64.powi(eps_exp), decay, amsgrad, maximize)
            .unwrap();
        check_fused_is_composed(chain, n, 4, seed, threads)?;
    }

    #[test]
    fn fused_lion_is_the_composed_chain_across_block_and_thread_boundaries(
        n in length(),
        b1 in 0.0f64..0.999,
        b2 in 0.0f64..0.999,
        lambda in 0.0f64..0.5,
        maximize: bool,
        seed: u64,
        threads in 1usize..=3,
    ) {
        let chain = LionConfig { betas: (b1, b2), weight_decay: lambda, maximize }
            .build()
            .unwrap();
        check_fused_is_composed(chain, n, 4, seed, threads)?;
    }

    #[test]
    fn fused_8bit_adam_is_the_composed_chain_codes_included_across_quantization_blocks(
        k in 1usize..5,
        d in -1isize..=1,
        block_exp in 6u32..=12,
        b1 in 0.5f64..0.99,
        b2 in 0.9f64..0.9999,
        lambda in 0.0f64..0.1,
        seed: u64,
        threads in 1usize..=3,
    ) {
        let block = 1usize << block_exp;
        let n = (block * k * 3).saturating_add_signed(d).max(1);
        let chain = Adam8bitConfig {
            betas: (b1, b2),
            weight_decay: lambda,
            min_8bit_size: 0,
            block_size: block,
            // (the CPU-library mode has no fused step: composed only)
            kernel: BnbKernel::Cuda,
            ..Adam8bitConfig::default()
        }
        .build()
        .unwrap();
        // the record holds the codes and the absmax of every block
        check_fused_is_composed(chain, n, 3, seed, threads)?;
    }

    #[test]
    fn the_thread_count_never_changes_a_bit(
        n in (1usize << 15)..(3 << 15),
        seed: u64,
        threads in 2usize..=4,
    ) {
        let chain = adam_chain("adam", (0.9, 0.999), 1e-8, Decay::Decoupled(0.01), false, false)
            .unwrap();
        let (init, grads) = data(n, 3, seed);
        let one = run(chain.clone(), GradientScan::InPass, &init, &grads, 1);
        let many = run(chain, GradientScan::InPass, &init, &grads, threads);
        prop_assert_eq!(bits(&one.0), bits(&many.0));
        prop_assert_eq!(one.1, many.1);
        prop_assert_eq!(one.2, many.2);
    }
}

/// Final parameter, record and each step's (norm, clip factor) with global clipping at
/// `max_norm`; `fused_steps` counts the steps that took the fused path.
fn run_clipped(
    chain: Chain<B>,
    max_norm: f64,
    init: &[f32],
    grads: &[Vec<f32>],
    threads: usize,
) -> (Vec<f32>, String, Vec<(u64, u64)>, usize) {
    moment_optim::fused::set_threads(threads);
    let mut opt = MomentOptimizer::builder()
        .group(ParamGroup::new("all", Selector::All, chain))
        .clip_grad_norm(max_norm)
        .build()
        .unwrap();
    let mut p = vec![ParamTensor {
        path: "w".into(),
        shape: vec![init.len()],
        value: flat(init),
        grad: None,
    }];
    let (mut seen, mut fused_steps) = (Vec::new(), 0);
    for g in grads {
        p[0].grad = Some(flat(g));
        let report = opt.step(1e-2, &mut p).unwrap();
        fused_steps += report.params_fused;
        seen.push((report.grad_norm.to_bits(), report.clip_factor.to_bits()));
    }
    let record = serde_json::to_string(&opt.to_record()).unwrap();
    (values(&p[0].value), record, seen, fused_steps)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: ProptestConfig::default().cases.min(24),
        ..ProptestConfig::default()
    })]

    /// Clipping scales the gradient inside the fused pass (no scaled copy written): the same
    /// bits as the composed chain, whose gradient is scaled first (`mul_scalar`).
    #[test]
    fn clipping_inside_the_fused_pass_is_scaling_first(
        n in length(),
        family in 0u8..4,
        max_norm in prop::sample::select(vec![1e-3f64, 0.5, 1.0, 1e3]),
        seed: u64,
        threads in 1usize..=3,
    ) {
        let chain: Chain<B> = match family {
            0 => adam_chain("adamw", (0.9, 0.999), 1e-8, Decay::Decoupled(0.01), false, false)
                .unwrap(),
            1 => adam_chain("adam", (0.8, 0.99), 1e-6, Decay::Coupled(0.1), true, true).unwrap(),
            2 => LionConfig::default().build().unwrap(),
            _ => Adam8bitConfig { min_8bit_size: 0, ..Adam8bitConfig::default() }.build().unwrap(),
        };
        let (init, grads) = data(n, 3, seed);
        let composed = run_clipped(chain.clone().composed(), max_norm, &init, &grads, 1);
        let fused = run_clipped(chain, max_norm, &init, &grads, threads);
        prop_assert_eq!(fused.3, grads.len(), "every step fused");
        prop_assert_eq!(composed.3, 0);
        prop_assert_eq!(bits(&fused.0), bits(&composed.0), "parameters, n = {}", n);
        prop_assert_eq!(&fused.1, &composed.1, "records");
        prop_assert_eq!(&fused.2, &composed.2, "norms and clip factors");
    }
}

#[test]
fn the_length_strategy_reaches_every_boundary() {
    // a vacuity guard: the boundaries named in the module docs are all drawn
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..4000 {
        seen.insert(length().new_tree(&mut runner).unwrap().current());
    }
    for n in [
        15usize, 16, 17, 255, 256, 257, 4095, 4096, 4097, 32767, 32768, 32769, 65537,
    ] {
        assert!(seen.contains(&n), "{n} never drawn");
    }
}
