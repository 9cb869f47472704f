//! The fused CPU path gives the composed chain's numbers bit for bit, never mutates a buffer
//! someone else holds, and falls back cleanly.

mod common;

use burn::tensor::Tensor;
use common::{B, flat, values};
use moment_optim::{AdamConfig, AdamWConfig, Chain, MomentOptimizer, ParamTensor};

fn run(chain: Chain<B>, n: usize, steps: usize, keep_alias: bool) -> (Vec<f32>, String) {
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
    for g in grads {
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

#[test]
fn fused_adam_family_is_bitwise_the_composed_chain() {
    let configs: Vec<(&str, Chain<B>)> = vec![
        ("adamw", AdamWConfig::default().build().unwrap()),
        (
            "adamw wd 0.1 maximize",
            AdamWConfig {
                weight_decay: 0.1,
                maximize: true,
                ..AdamWConfig::default()
            }
            .build()
            .unwrap(),
        ),
        (
            "adam L2 amsgrad",
            AdamConfig {
                weight_decay: 0.05,
                amsgrad: true,
                ..AdamConfig::default()
            }
            .build()
            .unwrap(),
        ),
    ];
    for (name, chain) in configs {
        assert!(chain.fused().is_some(), "{name} has a fused step");
        // 100k elements: several threads; 1000: one.
        for n in [1000usize, 100_000] {
            let (fused, rf) = run(chain.clone(), n, 5, false);
            let (composed, rc) = run(chain.clone().composed(), n, 5, false);
            assert_eq!(fused, composed, "{name}, n = {n}");
            assert_eq!(rf, rc, "{name}: records differ");
            // The same through shared (aliased) parameter buffers: copy-on-write, same numbers.
            let (aliased, _) = run(chain.clone(), n, 5, true);
            assert_eq!(aliased, composed, "{name}, aliased");
        }
    }
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
