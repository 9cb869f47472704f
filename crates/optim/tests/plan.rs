//! `fused::plan` derives a chain's one-pass step from its transforms: every chain of up to
//! five transforms built from the fusable pieces is tried; exactly the shapes of the plan's
//! table get a fused step, and each of those gives the composed chain's numbers (bitwise;
//! Adafactor within its tolerance) with the fused step actually taken.
// Tests may unwrap and panic (the workspace lints deny it in library code).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable
)]

mod common;

use common::{B, flat, values};
use moment_optim::transforms::{
    add_decayed_weights, flip_sign, scale_by_adam, scale_by_learning_rate,
};
use moment_optim::{
    AdafactorConfig, Adam8bitConfig, BnbKernel, Chain, MomentOptimizer, ParamTensor, SophiaVariant,
    transforms,
};

/// The pieces chains are made of.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Piece {
    Flip,
    Decay,
    ZeroDecay,
    Adam,
    Lion,
    Sophia,
    Adam8bit,
    Adam8bitCpuKernel,
    Adafactor,
    LearningRate,
}

const PIECES: [Piece; 10] = [
    Piece::Flip,
    Piece::Decay,
    Piece::ZeroDecay,
    Piece::Adam,
    Piece::Lion,
    Piece::Sophia,
    Piece::Adam8bit,
    Piece::Adam8bitCpuKernel,
    Piece::Adafactor,
    Piece::LearningRate,
];

fn chain(pieces: &[Piece]) -> Chain<B> {
    let adam8 = |kernel| {
        Adam8bitConfig {
            block_size: 64,
            min_8bit_size: 0,
            kernel,
            ..Adam8bitConfig::default()
        }
        .transform()
        .unwrap()
    };
    pieces
        .iter()
        .fold(Chain::new("hand-built"), |c, p| match p {
            Piece::Flip => c.then(flip_sign()),
            Piece::Decay => c.then(add_decayed_weights(0.05)),
            Piece::ZeroDecay => c.then(add_decayed_weights(0.0)),
            Piece::Adam => c.then(scale_by_adam(0.9, 0.99, 1e-8, false)),
            Piece::Lion => c.then(transforms::ScaleByLion {
                beta1: 0.9,
                beta2: 0.99,
            }),
            Piece::Sophia => c.then(transforms::ScaleBySophia {
                variant: SophiaVariant::G,
                beta1: 0.965,
                beta2: 0.99,
                rho: 0.04 * 64.0,
                eps: 1e-15,
            }),
            Piece::Adam8bit => c.then(adam8(BnbKernel::Cuda)),
            Piece::Adam8bitCpuKernel => c.then(adam8(BnbKernel::Cpu)),
            Piece::Adafactor => c.then(AdafactorConfig::default().transform().unwrap()),
            Piece::LearningRate => c.then(scale_by_learning_rate()),
        })
}

/// The plan's table, written independently of it: the fused step's name for this chain, if
/// the chain has one of the fusable shapes.
fn expected(pieces: &[Piece]) -> Option<&'static str> {
    use Piece::*;
    let rest = pieces.strip_prefix(&[Flip]).unwrap_or(pieces);
    let maximize = rest.len() < pieces.len();
    match rest {
        [Adam8bit, Flip] if !maximize => return Some("fused_adam8bit"),
        [Adafactor, Flip] => return Some("fused_adafactor"),
        _ => {}
    }
    let rest = rest.strip_suffix(&[LearningRate])?;
    let (coupled, rest) = match rest.strip_prefix(&[Decay]) {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let core = match rest {
        [core] | [core, Decay] => *core,
        _ => return None,
    };
    match core {
        Adam => Some("fused_adam"),
        Lion if !coupled => Some("fused_lion"),
        Sophia => Some("fused_sophia"),
        _ => None,
    }
}

/// Every sequence of 1..=`max` pieces.
fn all_chains(max: usize) -> Vec<Vec<Piece>> {
    let mut out: Vec<Vec<Piece>> = vec![Vec::new()];
    let mut all = Vec::new();
    for _ in 0..max {
        out = out
            .iter()
            .flat_map(|prefix| {
                PIECES.iter().map(move |p| {
                    let mut v = prefix.clone();
                    v.push(*p);
                    v
                })
            })
            .collect();
        all.extend(out.iter().cloned());
    }
    all
}

/// The parameter after three steps, and how many of them took the fused step.
fn run(chain: Chain<B>) -> (Vec<f32>, usize) {
    let n = 300;
    let wave = |k: usize, s: f32| -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 7 + k * 13) % 23) as f32 / 23.0 * s - s / 2.0)
            .collect()
    };
    let mut opt = MomentOptimizer::new(chain);
    let mut p = vec![ParamTensor {
        path: "w".into(),
        shape: vec![n],
        value: flat(&wave(0, 2.0)),
        grad: None,
    }];
    let mut fused = 0;
    for k in 1..=3 {
        p[0].grad = Some(flat(&wave(k, 0.5)));
        fused += opt.step(1e-2, &mut p).unwrap().params_fused;
    }
    (values(&p[0].value), fused)
}

#[test]
fn plan_fuses_exactly_its_shapes_and_each_matches_composed() {
    let mut fusable = 0;
    for pieces in all_chains(5) {
        let c = chain(&pieces);
        let got = c.fused().map(|f| f.name());
        assert_eq!(got, expected(&pieces), "{pieces:?}");
        let Some(name) = got else { continue };
        fusable += 1;
        let (f, taken) = run(c.clone());
        let (composed, none) = run(c.composed());
        assert_eq!((taken, none), (3, 0), "{pieces:?}: paths taken");
        for (i, (x, y)) in f.iter().zip(&composed).enumerate() {
            let same = match name {
                "fused_adafactor" => (x - y).abs() <= 1e-6 + 1e-5 * y.abs(),
                _ => x.to_bits() == y.to_bits(),
            };
            assert!(same, "{pieces:?} element {i}: fused {x} vs composed {y}");
        }
    }
    // Adam and Sophia: 2 (flip) × 2 (L2) × 2 (decoupled); Lion: 2 × 2; 8-bit: 1; Adafactor: 2.
    assert_eq!(fusable, 8 + 8 + 4 + 1 + 2);
}

#[test]
fn composed_chains_stay_composed_when_extended() {
    let c = chain(&[Piece::Adam])
        .composed()
        .then(scale_by_learning_rate());
    assert!(c.fused().is_none());
    assert!(chain(&[Piece::Adam, Piece::LearningRate]).fused().is_some());
}
