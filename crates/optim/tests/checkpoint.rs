//! Checkpoint files: resume bitwise, atomic saves, and clear errors (state untouched) for
//! truncated, corrupted, foreign and mismatched files.
// Tests may unwrap and panic (the workspace lints deny it in library code).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable
)]

mod common;

use std::error::Error as _;

use common::{B, flat, values};
use moment_optim::{
    Adam8bitConfig, AdamWConfig, Chain, CheckpointError, LionConfig, MomentOptimizer, OptimError,
    ParamTensor, SophiaConfig,
};

fn dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("moment-ckpt-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A parameter of 5000 elements (over 8-bit Adam's minimum) and its gradient at `step`.
fn grad(step: usize) -> Vec<f32> {
    (0..5000)
        .map(|i| (((i * 7 + step * 13) % 29) as f32 - 14.0) * 0.05)
        .collect()
}

fn param() -> Vec<ParamTensor<B>> {
    vec![ParamTensor {
        path: "w".into(),
        shape: vec![5000],
        value: flat(&(0..5000).map(|i| (i % 11) as f32 * 0.1).collect::<Vec<_>>()),
        grad: None,
    }]
}

fn steps(opt: &mut MomentOptimizer<B>, p: &mut [ParamTensor<B>], range: std::ops::Range<usize>) {
    for s in range {
        p[0].grad = Some(flat(&grad(s)));
        opt.step(1e-2, p).unwrap();
    }
}

fn chains() -> Vec<(&'static str, Chain<B>)> {
    vec![
        ("adamw", AdamWConfig::default().build().unwrap()),
        ("adamw8bit", Adam8bitConfig::adamw().build().unwrap()),
        ("lion", LionConfig::default().build().unwrap()),
        ("sophia", SophiaConfig::g().build().unwrap()),
    ]
}

#[test]
fn a_checkpoint_resumes_bitwise() {
    let d = dir("resume");
    for (name, chain) in chains() {
        let mut whole = MomentOptimizer::new(chain.clone());
        let mut pw = param();
        steps(&mut whole, &mut pw, 0..6);

        let mut first = MomentOptimizer::new(chain.clone());
        let mut p = param();
        steps(&mut first, &mut p, 0..3);
        let path = d.join(format!("{name}.ckpt"));
        first.save_checkpoint(&path).unwrap();
        let mut resumed = MomentOptimizer::new(chain);
        resumed.load_checkpoint(&path, &Default::default()).unwrap();
        steps(&mut resumed, &mut p, 3..6);
        assert_eq!(values(&p[0].value), values(&pw[0].value), "{name}");
        assert_eq!(resumed.to_record(), whole.to_record(), "{name}");
        // No temporary file is left behind.
        let left: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
    let _ = std::fs::remove_dir_all(&d);
}

/// A target optimizer with state, and its record, to check errors leave it untouched.
fn target() -> MomentOptimizer<B> {
    let mut opt = MomentOptimizer::new(AdamWConfig::default().build().unwrap());
    let mut p = param();
    steps(&mut opt, &mut p, 10..12);
    opt
}

/// `e` is a checkpoint error about `file`, whose [`CheckpointError`] is `source()` and
/// satisfies `kind`, and whose message contains `needle`.
fn checkpoint_error(
    e: OptimError,
    file: &std::path::Path,
    kind: fn(&CheckpointError) -> bool,
    needle: &str,
) -> CheckpointError {
    let OptimError::Checkpoint { path, source } = &e else {
        panic!("expected a checkpoint error with `{needle}`, got {e}");
    };
    assert_eq!(path, file);
    assert!(kind(source), "{source:?}: unexpected kind ({needle})");
    assert!(e.to_string().contains(needle), "{e}: expected `{needle}`");
    let inner = e.source().and_then(|s| s.downcast_ref::<CheckpointError>());
    assert!(inner.is_some(), "{e}: the CheckpointError is the source");
    source.clone()
}

#[test]
fn truncated_corrupted_and_foreign_files_are_clear_errors_and_change_nothing() {
    let d = dir("bad");
    let mut src = MomentOptimizer::new(AdamWConfig::default().build().unwrap());
    let mut p = param();
    steps(&mut src, &mut p, 0..3);
    let good = d.join("good.ckpt");
    src.save_checkpoint(&good).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let mut opt = target();
    let before = opt.to_record();
    let bad = d.join("bad.ckpt");
    type Kind = fn(&CheckpointError) -> bool;
    let magic: Kind = |e| matches!(e, CheckpointError::BadMagic);
    let header: Kind = |e| matches!(e, CheckpointError::TruncatedHeader { len: 10, .. });
    let payload: Kind = |e| matches!(e, CheckpointError::TruncatedPayload { .. });
    let trailing: Kind = |e| matches!(e, CheckpointError::TrailingBytes { extra: 1, .. });
    let crc: Kind = |e| matches!(e, CheckpointError::ChecksumMismatch { .. });
    let format: Kind = |e| {
        matches!(
            e,
            CheckpointError::UnsupportedFormat {
                found: 9,
                supported: 1
            }
        )
    };
    let cases: Vec<(Vec<u8>, Kind, &str)> = vec![
        (Vec::new(), magic, "not a moment checkpoint"),
        (
            b"{\"version\":3}".to_vec(),
            magic,
            "not a moment checkpoint",
        ),
        (bytes[..10].to_vec(), header, "truncated"),
        (bytes[..bytes.len() - 1].to_vec(), payload, "truncated"),
        (bytes[..bytes.len() / 2].to_vec(), payload, "truncated"),
        (
            [bytes.clone(), vec![0]].concat(),
            trailing,
            "unexpected bytes",
        ),
        (
            {
                let mut b = bytes.clone();
                let i = b.len() - 20;
                b[i] ^= 0x01;
                b
            },
            crc,
            "checksum",
        ),
        (
            {
                let mut b = bytes.clone();
                b[8] = 9;
                b
            },
            format,
            "format 9",
        ),
    ];
    for (content, kind, needle) in cases {
        std::fs::write(&bad, &content).unwrap();
        let e = opt
            .load_checkpoint(&bad, &Default::default())
            .expect_err(needle);
        let inner = checkpoint_error(e, &bad, kind, needle);
        assert!(inner.source().is_none(), "{inner:?} wraps nothing");
        assert_eq!(
            opt.to_record(),
            before,
            "state changed by a failed load ({needle})"
        );
    }
    let missing = d.join("missing.ckpt");
    let e = opt
        .load_checkpoint(&missing, &Default::default())
        .unwrap_err();
    // The I/O error is kept whole: reachable through `source()`, with its kind.
    let io = e
        .source()
        .and_then(|s| s.source())
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .expect("the io::Error is the checkpoint error's source");
    assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
    let inner = checkpoint_error(
        e,
        &missing,
        |e| matches!(e, CheckpointError::Read(_)),
        "cannot read",
    );
    assert_eq!(
        inner.io_error().map(std::io::Error::kind),
        Some(std::io::ErrorKind::NotFound)
    );
    // A checksummed payload that is not a record keeps serde_json's error as its source.
    let junk = b"not json";
    let mut file = b"MOMENTCK".to_vec();
    file.extend_from_slice(&1u32.to_le_bytes());
    file.extend_from_slice(&(junk.len() as u64).to_le_bytes());
    file.extend_from_slice(&moment_optim::checkpoint::crc32c(junk).to_le_bytes());
    file.extend_from_slice(junk);
    std::fs::write(&bad, &file).unwrap();
    let e = opt.load_checkpoint(&bad, &Default::default()).unwrap_err();
    let inner = checkpoint_error(
        e,
        &bad,
        |e| matches!(e, CheckpointError::UnreadableRecord(_)),
        "unreadable record",
    );
    assert!(
        inner
            .source()
            .is_some_and(|s| s.downcast_ref::<serde_json::Error>().is_some()),
        "{inner:?}"
    );
    assert_eq!(opt.to_record(), before);
    // Another optimizer's checkpoint: the record check refuses it.
    let mut lion = MomentOptimizer::new(LionConfig::default().build::<B>().unwrap());
    let lion_before = lion.to_record();
    let e = lion
        .load_checkpoint(&good, &Default::default())
        .unwrap_err();
    assert!(matches!(e, OptimError::RecordMismatch { .. }), "{e}");
    assert_eq!(lion.to_record(), lion_before);
    // The good file still loads.
    opt.load_checkpoint(&good, &Default::default()).unwrap();
    assert_eq!(opt.to_record(), src.to_record());
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_failed_save_keeps_the_previous_checkpoint() {
    let d = dir("atomic");
    let path = d.join("run.ckpt");
    let old = target();
    old.save_checkpoint(&path).unwrap();
    let old_bytes = std::fs::read(&path).unwrap();
    // Make the temporary file impossible to create: a directory already has its name.
    let tmp = d.join(format!(".run.ckpt.tmp-{}", std::process::id()));
    std::fs::create_dir(&tmp).unwrap();
    let mut newer = MomentOptimizer::new(AdamWConfig::default().build::<B>().unwrap());
    let mut p = param();
    steps(&mut newer, &mut p, 0..5);
    let e = newer.save_checkpoint(&path).unwrap_err();
    let inner = checkpoint_error(
        e,
        &path,
        |e| matches!(e, CheckpointError::Write(_)),
        "cannot save",
    );
    assert!(
        inner
            .source()
            .is_some_and(|s| s.downcast_ref::<std::io::Error>().is_some()),
        "{inner:?}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), old_bytes);
    assert!(tmp.is_dir(), "a directory that was not ours was removed");
    // A path that names no file.
    let dots = d.join("..");
    let e = newer.save_checkpoint(&dots).unwrap_err();
    checkpoint_error(
        e,
        &dots,
        |e| matches!(e, CheckpointError::NotAFilePath),
        "not a file path",
    );
    std::fs::remove_dir(&tmp).unwrap();
    // Once it can, the save replaces the file whole.
    newer.save_checkpoint(&path).unwrap();
    let mut check = MomentOptimizer::new(AdamWConfig::default().build::<B>().unwrap());
    check.load_checkpoint(&path, &Default::default()).unwrap();
    assert_eq!(check.to_record(), newer.to_record());
    let _ = std::fs::remove_dir_all(&d);
}
