//! Checkpoints written by an earlier build keep loading and resuming bitwise.
//!
//! `tests/data/checkpoint-v3/` holds, per optimizer, a checkpoint file (record format 3)
//! written after 3 steps by the code of commit 392f5d0 (before the moment-optim redesign of
//! issue 25), and the parameter's f32 bits after steps 3 and 6 of that build's uninterrupted
//! run. Loading the file into today's optimizer and taking steps 4–6 must give those bits
//! exactly: the record format, the state layout and every optimizer's arithmetic are
//! unchanged. Regenerate (only when a change is meant to alter one of these) with
//! `MOMENT_WRITE_CHECKPOINT_FIXTURES=1 cargo test -p moment-optim --test checkpoint_v3`.
// Tests may unwrap and panic (the workspace lints deny it in library code).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable
)]

mod common;

use common::{B, flat, values};
use moment_optim::{
    AdafactorConfig, Adam8bitConfig, AdamWConfig, CameConfig, Chain, LionConfig, MomentOptimizer,
    ParamTensor, ProdigyConfig, ScheduleFreeConfig, ShampooConfig, SophiaConfig,
};
use std::path::PathBuf;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/checkpoint-v3")
}

/// Every optimizer with a fixture: the fused families (Adam, 8-bit, Lion, Sophia,
/// Adafactor) and chains with group-level state (Prodigy), an evaluation view
/// (Schedule-Free), matrix statistics (Shampoo) and factored moments (CAME). 8-bit needs
/// at least 4096 elements to quantize; the others use a small matrix.
fn chains() -> Vec<(&'static str, [usize; 2], Chain<B>)> {
    vec![
        ("adamw", [16, 24], AdamWConfig::default().build().unwrap()),
        (
            "adamw-amsgrad",
            [16, 24],
            AdamWConfig {
                amsgrad: true,
                ..Default::default()
            }
            .build()
            .unwrap(),
        ),
        (
            "adamw8bit",
            [64, 80],
            Adam8bitConfig::adamw().build().unwrap(),
        ),
        ("lion", [16, 24], LionConfig::default().build().unwrap()),
        ("sophia", [16, 24], SophiaConfig::g().build().unwrap()),
        (
            "adafactor",
            [16, 24],
            AdafactorConfig::default().build().unwrap(),
        ),
        (
            "prodigy",
            [16, 24],
            ProdigyConfig::default().build().unwrap(),
        ),
        (
            "schedulefree",
            [16, 24],
            ScheduleFreeConfig::default().build().unwrap(),
        ),
        (
            "shampoo",
            [16, 24],
            ShampooConfig::default().build().unwrap(),
        ),
        ("came", [16, 24], CameConfig::default().build().unwrap()),
    ]
}

fn param(shape: [usize; 2]) -> Vec<ParamTensor<B>> {
    let n = shape[0] * shape[1];
    vec![ParamTensor {
        path: "w".into(),
        shape: shape.to_vec(),
        value: flat(
            &(0..n)
                .map(|i| ((i % 11) as f32 - 5.0) * 0.1)
                .collect::<Vec<_>>(),
        ),
        grad: None,
    }]
}

fn grad(n: usize, step: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (((i * 7 + step * 13) % 29) as f32 - 14.0) * 0.05)
        .collect()
}

fn steps(opt: &mut MomentOptimizer<B>, p: &mut [ParamTensor<B>], range: std::ops::Range<usize>) {
    let n = p[0].shape.iter().product();
    for s in range {
        p[0].grad = Some(flat(&grad(n, s)));
        opt.step(1e-2, p).unwrap();
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
struct Expected {
    commit: String,
    after_3: Vec<u32>,
    after_6: Vec<u32>,
}

/// Writes the fixtures from this build (see the module docs).
fn write_fixtures() {
    let dir = fixtures();
    std::fs::create_dir_all(&dir).unwrap();
    let commit = std::env::var("MOMENT_FIXTURE_COMMIT").unwrap_or_else(|_| "unknown".into());
    for (name, shape, chain) in chains() {
        let mut opt = MomentOptimizer::new(chain);
        let mut p = param(shape);
        steps(&mut opt, &mut p, 0..3);
        opt.save_checkpoint(dir.join(format!("{name}.ckpt")))
            .unwrap();
        let after_3 = bits(&values(&p[0].value));
        steps(&mut opt, &mut p, 3..6);
        let expected = Expected {
            commit: commit.clone(),
            after_3,
            after_6: bits(&values(&p[0].value)),
        };
        let text = serde_json::to_string(&expected).unwrap();
        std::fs::write(dir.join(format!("{name}.json")), text).unwrap();
    }
}

#[test]
fn checkpoints_from_before_the_redesign_load_and_resume_bitwise() {
    if std::env::var_os("MOMENT_WRITE_CHECKPOINT_FIXTURES").is_some() {
        write_fixtures();
    }
    let dir = fixtures();
    let mut checked = 0;
    for (name, shape, chain) in chains() {
        let text = std::fs::read_to_string(dir.join(format!("{name}.json")))
            .unwrap_or_else(|e| panic!("{name}: fixture missing ({e})"));
        let expected: Expected = serde_json::from_str(&text).unwrap();
        let n = shape[0] * shape[1];
        assert_eq!(expected.after_3.len(), n, "{name}");
        assert_eq!(expected.after_6.len(), n, "{name}");
        assert_ne!(
            expected.after_3, expected.after_6,
            "{name}: steps 4-6 moved nothing"
        );

        let mut opt = MomentOptimizer::new(chain);
        opt.load_checkpoint(dir.join(format!("{name}.ckpt")), &Default::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut p = param(shape);
        let start: Vec<f32> = expected
            .after_3
            .iter()
            .map(|&b| f32::from_bits(b))
            .collect();
        p[0].value = flat(&start);
        steps(&mut opt, &mut p, 3..6);
        let got = bits(&values(&p[0].value));
        let differing = got
            .iter()
            .zip(&expected.after_6)
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(
            differing, 0,
            "{name}: {differing} of {n} elements differ after resuming"
        );
        checked += 1;
    }
    assert_eq!(checked, 10, "every fixture compared");
}
