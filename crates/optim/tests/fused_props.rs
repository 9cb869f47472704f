//! Property tests of the fused CPU path at the sizes where its structure shows: lengths just
//! below, at and above the SIMD width (16), the Σg² block (256), the 8-bit quantization block
//! (64…4096), the in-pass measuring block (4096) and the size where the work is split over
//! threads (32768), with 1–3 threads. One `fused_matches_composed_*` property per fused family
//! over random hyper-parameters (β on both sides of 0.5 and exactly 0.5, where torch's lerp
//! switches formula; AMSGrad, maximize, coupled/decoupled decay, global clipping) and
//! gradients with NaN, ±0, subnormals and huge values: the fused step gives the composed
//! chain's bits, its record and (measured in the pass or before it) the same gradient norm —
//! Adafactor within its tolerance (f64 sums, see its property).
//! Case count: `PROPTEST_CASES` (CI keeps it small).
// Tests may unwrap and panic (the workspace lints deny it in library code).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable
)]

mod common;

use common::{B, flat, values};
use moment_optim::optimizers::adam_chain;
use moment_optim::{
    AdafactorConfig, Adam8bitConfig, BnbKernel, Chain, Decay, GradEntry, GradientScan, LionConfig,
    MomentOptimizer, NonFinitePolicy, ParamGroup, ParamTensor, Selector, SophiaConfig,
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

/// Gradient values the kernels must treat exactly as the composed chain does.
const SPECIALS: [f32; 10] = [
    f32::NAN,
    0.0,
    -0.0,
    1e-40,  // subnormal
    -1e-45, // the smallest subnormal, negative
    f32::MIN_POSITIVE,
    1e15,
    -1e15,
    1e30,
    -1e30,
];

/// Which of [`SPECIALS`] a gradient may hold.
#[derive(Clone, Copy, Debug)]
enum Specials {
    None,
    All,
    /// Lion: `sign` of a NaN is ±1 by the NaN's sign bit, and the sign of a NaN is not
    /// reproducible across compiled code (IEEE 754 leaves it unspecified; LLVM may turn
    /// `x · −1` into a sign flip in one inlining context and not in another), so a NaN
    /// gradient moves that element by ±lr either way. Lion's NaN gradients are checked on a
    /// fixed example instead (`tests/fused.rs::fused_matches_composed_on_non_finite_gradients`).
    NoNan,
    /// Adafactor: ±1e30 squares overflow f32, and such a gradient is refused before stepping.
    NoHuge,
}

fn specials(on: bool, kind: Specials) -> Specials {
    if on { kind } else { Specials::None }
}

/// Seeded host data (burn's global RNG is shared between concurrently running tests):
/// `steps` gradients, one of them huge and one zero when there are enough steps; about one
/// element in 64 of every gradient is one of [`SPECIALS`] as `specials` allows.
fn data(n: usize, steps: usize, seed: u64, specials: Specials) -> (Vec<f32>, Vec<Vec<f32>>) {
    let mut s = seed | 1;
    let mut bits = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let next = |scale: f32, bits: u64| ((bits >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale;
    let init = (0..n).map(|_| next(2.0, bits())).collect();
    let pool: Vec<f32> = match specials {
        Specials::None => vec![],
        Specials::All => SPECIALS.to_vec(),
        Specials::NoNan => SPECIALS.iter().copied().filter(|x| !x.is_nan()).collect(),
        Specials::NoHuge => SPECIALS
            .iter()
            .copied()
            .filter(|x| x.abs() < 1e20)
            .collect(),
    };
    let grads = (0..steps)
        .map(|k| {
            let scale = match k {
                1 => 1e3,
                2 => 0.0,
                _ => 2.0,
            };
            (0..n)
                .map(|_| {
                    let b = bits();
                    if !pool.is_empty() && b & 63 == 0 {
                        pool[(b >> 8) as usize % pool.len()]
                    } else {
                        next(scale, b)
                    }
                })
                .collect()
        })
        .collect();
    (init, grads)
}

/// How a run is set up besides the chain: how gradients are scanned, global clipping, the
/// parameter's shape (`None`: flat) and whether a curvature estimate comes before every
/// second step (Sophia).
#[derive(Clone)]
struct Setup {
    scan: GradientScan,
    max_norm: Option<f64>,
    shape: Option<Vec<usize>>,
    curvature: bool,
}

impl Setup {
    fn flat() -> Self {
        Setup {
            scan: GradientScan::BeforeStep,
            max_norm: None,
            shape: None,
            curvature: false,
        }
    }
}

/// One run's outcome: the final parameter, the optimizer's record (JSON), each step's
/// reported (gradient norm, clip factor) and how many steps took the fused path.
struct Outcome {
    param: Vec<f32>,
    record: String,
    norms: Vec<(u64, u64)>,
    fused_steps: usize,
}

fn run(
    chain: Chain<B>,
    setup: &Setup,
    init: &[f32],
    grads: &[Vec<f32>],
    threads: usize,
) -> Outcome {
    moment_optim::fused::set_threads(threads);
    let mut builder = MomentOptimizer::builder()
        .group(ParamGroup::new("all", Selector::All, chain))
        .non_finite(NonFinitePolicy::Propagate)
        .gradient_scan(setup.scan);
    if let Some(max_norm) = setup.max_norm {
        builder = builder.clip_grad_norm(max_norm);
    }
    let mut opt = builder.build().unwrap();
    let shape = setup.shape.clone().unwrap_or_else(|| vec![init.len()]);
    let mut p = vec![ParamTensor {
        path: "w".into(),
        shape: shape.clone(),
        value: flat(init),
        grad: None,
    }];
    let (mut norms, mut fused_steps) = (Vec::new(), 0);
    for (k, g) in grads.iter().enumerate() {
        if setup.curvature && k % 2 == 1 {
            // a positive, varied estimate derived from the gradient (composed in both paths)
            let est: Vec<f32> = g.iter().map(|x| (x * 1.5).abs() + 0.25).collect();
            opt.update_curvature(vec![GradEntry {
                path: "w".into(),
                param_shape: shape.clone(),
                grad_shape: shape.clone(),
                grad: flat(&est),
                param: None,
            }])
            .unwrap();
        }
        p[0].grad = Some(flat(g));
        let report = opt.step(1e-2, &mut p).unwrap();
        fused_steps += report.params_fused;
        norms.push((report.grad_norm.to_bits(), report.clip_factor.to_bits()));
    }
    let record = serde_json::to_string(&opt.to_record()).unwrap();
    Outcome {
        param: values(&p[0].value),
        record,
        norms,
        fused_steps,
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter()
        .map(|x| if x.is_nan() { u32::MAX } else { x.to_bits() })
        .collect()
}

/// The fused runs (measured in the pass where the setup allows it, and scanned first) against
/// the composed chain: the same parameter bits, record and reported norms, every step fused.
/// A chain without a fused step fails (the property would compare the composed chain with
/// itself).
fn check_fused_is_composed(
    chain: Chain<B>,
    setup: &Setup,
    init: &[f32],
    grads: &[Vec<f32>],
    threads: usize,
) -> Result<(), TestCaseError> {
    prop_assert!(chain.fused().is_some(), "no fused step");
    let n = init.len();
    let composed = run(chain.clone().composed(), setup, init, grads, 1);
    prop_assert_eq!(composed.fused_steps, 0);
    let mut scans = vec![GradientScan::BeforeStep];
    if setup.max_norm.is_none() {
        // measuring in the pass is only allowed without clipping
        scans.push(GradientScan::InPass);
    }
    for scan in scans {
        let fused = run(
            chain.clone(),
            &Setup {
                scan,
                ..setup.clone()
            },
            init,
            grads,
            threads,
        );
        prop_assert_eq!(
            fused.fused_steps,
            grads.len(),
            "{:?}: every step fused",
            scan
        );
        prop_assert_eq!(
            bits(&fused.param),
            bits(&composed.param),
            "{:?}: parameters, n = {}",
            scan,
            n
        );
        prop_assert_eq!(
            &fused.record,
            &composed.record,
            "{:?}: records, n = {}",
            scan,
            n
        );
        prop_assert_eq!(
            &fused.norms,
            &composed.norms,
            "{:?}: norms and clip factors",
            scan
        );
    }
    Ok(())
}

/// β1 (or any EMA coefficient whose lerp weight is 1 − β): below, at and above 0.5, where
/// torch's lerp switches formula.
fn beta() -> impl Strategy<Value = f64> {
    prop_oneof![0.0f64..0.5, Just(0.5), 0.5f64..0.999, Just(0.9)]
}

/// No clipping, or global clipping at a bound that clips everything, some steps or nothing.
fn clipping() -> impl Strategy<Value = Option<f64>> {
    prop_oneof![
        Just(None),
        prop::sample::select(vec![1e-3f64, 0.5, 1.0, 1e3]).prop_map(Some)
    ]
}

fn decay(kind: u8, lambda: f64) -> Decay {
    match kind {
        0 => Decay::None,
        1 => Decay::Coupled(lambda),
        _ => Decay::Decoupled(lambda),
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        // each case runs up to three optimizers over up to 100k elements
        cases: ProptestConfig::default().cases.min(24),
        ..ProptestConfig::default()
    })]

    #[test]
    fn fused_matches_composed_adam(
        n in length(),
        b1 in beta(),
        b2 in 0.5f64..0.9999,
        eps_exp in -10i32..-3,
        decay_kind in 0u8..3,
        lambda in 0.0f64..0.2,
        amsgrad: bool,
        maximize: bool,
        max_norm in clipping(),
        with_specials: bool,
        seed: u64,
        threads in 1usize..=3,
    ) {
        let chain = adam_chain(
            "adam", (b1, b2), 10f64.powi(eps_exp), decay(decay_kind, lambda), amsgrad, maximize,
        )
        .unwrap();
        let (init, grads) = data(n, 4, seed, specials(with_specials, Specials::All));
        let setup = Setup { max_norm, ..Setup::flat() };
        check_fused_is_composed(chain, &setup, &init, &grads, threads)?;
    }

    #[test]
    fn fused_matches_composed_lion(
        n in length(),
        b1 in beta(),
        b2 in beta(),
        lambda in 0.0f64..0.5,
        maximize: bool,
        max_norm in clipping(),
        with_specials: bool,
        seed: u64,
        threads in 1usize..=3,
    ) {
        let chain = LionConfig { betas: (b1, b2), weight_decay: lambda, maximize }
            .build()
            .unwrap();
        let (init, grads) = data(n, 4, seed, specials(with_specials, Specials::NoNan));
        let setup = Setup { max_norm, ..Setup::flat() };
        check_fused_is_composed(chain, &setup, &init, &grads, threads)?;
    }

    #[test]
    fn fused_matches_composed_sophia(
        n in length(),
        variant_h: bool,
        b1 in beta(),
        b2 in 0.5f64..0.999,
        rho in 0.01f64..1.0,
        eps_exp in -12i32..-6,
        decay_kind in 0u8..3,
        lambda in 0.0f64..0.2,
        maximize: bool,
        max_norm in clipping(),
        with_specials: bool,
        seed: u64,
        threads in 1usize..=3,
    ) {
        let base = if variant_h { SophiaConfig::h() } else { SophiaConfig::g() };
        let chain = SophiaConfig {
            betas: (b1, b2),
            rho,
            eps: 10f64.powi(eps_exp),
            decay: decay(decay_kind, lambda),
            maximize,
            ..base
        }
        .build()
        .unwrap();
        let (init, grads) = data(n, 4, seed, specials(with_specials, Specials::All));
        let setup = Setup { max_norm, curvature: true, ..Setup::flat() };
        check_fused_is_composed(chain, &setup, &init, &grads, threads)?;
    }

    #[test]
    fn fused_matches_composed_adam8bit(
        k in 1usize..5,
        d in -1isize..=1,
        block_exp in 6u32..=12,
        b1 in 0.5f64..0.99,
        b2 in 0.9f64..0.9999,
        lambda in 0.0f64..0.1,
        max_norm in clipping(),
        with_specials: bool,
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
        let (init, grads) = data(n, 3, seed, specials(with_specials, Specials::All));
        let setup = Setup { max_norm, ..Setup::flat() };
        check_fused_is_composed(chain, &setup, &init, &grads, threads)?;
    }

    /// Adafactor's fused step sums rows and columns in f64 over fixed blocks where the
    /// composed chain sums in f32 in burn's order (docs/algorithms/adafactor.md), so the two
    /// agree within the family's reference tolerance, not bitwise: NaN where the other has
    /// NaN, every other element within 1e-6 + 1e-5·|composed|.
    #[test]
    fn fused_matches_composed_adafactor(
        rows in 1usize..300,
        cols in 1usize..300,
        lead in prop::sample::select(vec![1usize, 3]),
        torch: bool,
        beta1 in prop::option::of(beta()),
        lambda in 0.0f64..0.2,
        relative_step: bool,
        scale_parameter: bool,
        maximize: bool,
        max_norm in clipping(),
        with_specials: bool,
        seed: u64,
        threads in 1usize..=3,
    ) {
        let config = if torch {
            AdafactorConfig { weight_decay: lambda, maximize, ..AdafactorConfig::torch() }
        } else {
            AdafactorConfig {
                beta1,
                weight_decay: lambda,
                relative_step,
                scale_parameter,
                maximize,
                ..AdafactorConfig::default()
            }
        };
        let chain: Chain<B> = config.build().unwrap();
        prop_assert!(chain.fused().is_some(), "no fused step");
        let shape = if lead == 1 { vec![rows, cols] } else { vec![lead, rows, cols] };
        let n = shape.iter().product();
        // ±1e30 squared overflows f32: Adafactor refuses such a gradient before stepping
        let (init, grads) = data(n, 4, seed, specials(with_specials, Specials::NoHuge));
        let setup = Setup { max_norm, shape: Some(shape), ..Setup::flat() };
        let composed = run(chain.clone().composed(), &setup, &init, &grads, 1);
        let fused = run(chain, &setup, &init, &grads, threads);
        prop_assert_eq!(fused.fused_steps, grads.len(), "every step fused");
        for (i, (x, y)) in fused.param.iter().zip(&composed.param).enumerate() {
            prop_assert!(
                (x.is_nan() && y.is_nan()) || (x - y).abs() <= 1e-6 + 1e-5 * y.abs(),
                "element {}: fused {} vs composed {}", i, x, y
            );
        }
    }

    #[test]
    fn the_thread_count_never_changes_a_bit(
        n in (1usize << 15)..(3 << 15),
        seed: u64,
        threads in 2usize..=4,
    ) {
        let chain = adam_chain("adam", (0.9, 0.999), 1e-8, Decay::Decoupled(0.01), false, false)
            .unwrap();
        let (init, grads) = data(n, 3, seed, Specials::None);
        let setup = Setup { scan: GradientScan::InPass, ..Setup::flat() };
        let one = run(chain.clone(), &setup, &init, &grads, 1);
        let many = run(chain, &setup, &init, &grads, threads);
        prop_assert_eq!(bits(&one.param), bits(&many.param));
        prop_assert_eq!(one.record, many.record);
        prop_assert_eq!(one.norms, many.norms);
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
