//! The fused CPU steps on burn's flex backend (feature `flex`): taken, and bitwise equal to
//! the composed chain on the same backend, for every fused family.
#![cfg(feature = "flex")]
// Tests may unwrap and panic (the workspace lints deny it in library code).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable
)]

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use moment_optim::{
    Adam8bitConfig, AdamWConfig, Chain, LionConfig, MomentOptimizer, ParamTensor, SophiaConfig,
};

type F = Flex<f32>;

fn flat(v: &[f32]) -> Tensor<F, 1> {
    Tensor::from_data(TensorData::new(v.to_vec(), [v.len()]), &Default::default())
}

fn bits(t: &Tensor<F, 1>) -> Vec<u32> {
    t.to_data()
        .to_vec::<f32>()
        .unwrap()
        .iter()
        .map(|x| if x.is_nan() { u32::MAX } else { x.to_bits() })
        .collect()
}

fn run(chain: Chain<F>, n: usize, keep_alias: bool) -> (Vec<u32>, String, usize) {
    let mut state = 0x2545_F491_4F6C_DD1Du64 ^ n as u64;
    let mut next = |scale: f32| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale
    };
    let init: Vec<f32> = (0..n).map(|_| next(1.0)).collect();
    let mut opt = MomentOptimizer::new(chain);
    let mut p = vec![ParamTensor {
        path: "w".into(),
        shape: vec![n],
        value: flat(&init),
        grad: None,
    }];
    let mut fused = 0;
    let mut aliases = Vec::new();
    for s in 0..4 {
        if keep_alias {
            aliases.push((p[0].value.clone(), bits(&p[0].value)));
        }
        let scale = if s == 1 { 1e3 } else { 2.0 };
        p[0].grad = Some(flat(&(0..n).map(|_| next(scale)).collect::<Vec<_>>()));
        fused += opt.step(1e-2, &mut p).unwrap().params_fused;
    }
    for (t, b) in aliases {
        assert_eq!(bits(&t), b, "a shared flex buffer was written through");
    }
    let record = serde_json::to_string(&opt.to_record()).unwrap();
    (bits(&p[0].value), record, fused)
}

#[test]
fn fused_steps_run_on_flex_and_equal_the_composed_chain() {
    let chains: Vec<(&str, Chain<F>)> = vec![
        ("adamw", AdamWConfig::default().build().unwrap()),
        ("lion", LionConfig::default().build().unwrap()),
        ("sophia-g", SophiaConfig::g().build().unwrap()),
        ("adamw8bit", Adam8bitConfig::adamw().build().unwrap()),
    ];
    for (name, chain) in chains {
        for n in [5000usize, 70_001] {
            let (f, rf, taken) = run(chain.clone(), n, false);
            assert_eq!(taken, 4, "{name}: the fused path was not taken on flex");
            let (c, rc, composed) = run(chain.clone().composed(), n, false);
            assert_eq!(composed, 0);
            assert_eq!(f, c, "{name}, n = {n}");
            assert_eq!(rf, rc, "{name}: records differ");
            let (a, _, _) = run(chain.clone(), n, true);
            assert_eq!(a, c, "{name}: aliased");
        }
    }
}
