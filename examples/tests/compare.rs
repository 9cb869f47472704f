//! End to end: `moment compare` on a very short schedule writes a complete, sane run directory;
//! the binary's errors are one line and a non-zero exit.
// Tests may unwrap and panic (the workspace lints deny it in library code).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable
)]

use std::path::Path;
use std::process::Command;

use moment_examples::compare::{BackendKind, RunConfig, compare, replot_dirs};

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("moment-cmp-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn compare_writes_a_complete_run_directory_with_decreasing_losses() {
    let out = tmp("e2e");
    let cfg = RunConfig {
        steps: 24,
        eval_every: 8,
        progress: false,
        ..RunConfig::default()
    };
    let names = vec!["adamw".to_string(), "lion".to_string()];
    let summaries = compare(&cfg, &names, &out).unwrap();
    assert_eq!(summaries.len(), 2);
    for f in ["overlay.png", "overlay.svg", "report.md", "summary.json"] {
        assert!(out.join(f).metadata().unwrap().len() > 100, "{f}");
    }
    for n in &names {
        for f in ["metrics.jsonl", "metrics.csv", "dashboard.png"] {
            assert!(
                out.join(n).join(f).metadata().unwrap().len() > 100,
                "{n}/{f}"
            );
        }
        let recs = moment_monitor::read_jsonl(out.join(n).join("metrics.jsonl")).unwrap();
        assert_eq!(recs.len(), 24);
        let losses: Vec<f64> = recs.iter().map(|r| r.loss.unwrap()).collect();
        assert!(losses.iter().all(|l| l.is_finite()));
        let head: f64 = losses[..4].iter().sum::<f64>() / 4.0;
        let tail: f64 = losses[20..].iter().sum::<f64>() / 4.0;
        assert!(tail < head - 0.1, "{n}: training loss {head} -> {tail}");
        let vals: Vec<f64> = recs.iter().filter_map(|r| r.val_loss).collect();
        assert_eq!(vals.len(), 3, "validation at steps 8, 16, 24");
        assert!(vals[2] < vals[0], "{n}: validation {vals:?}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let rows = json.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for row in rows {
        for key in [
            "optimizer",
            "final_val_loss",
            "best_val_loss",
            "loss_floor",
            "steps",
            "steps_per_s",
            "state_bytes",
            "state_bytes_per_param",
            "peak_rss_bytes",
            "spikes",
            "clip_rate",
        ] {
            assert!(row.get(key).is_some(), "summary.json lacks {key}: {row}");
        }
        let floor = row["loss_floor"].as_f64().unwrap();
        let best = row["best_val_loss"].as_f64().unwrap();
        assert!(
            best > floor,
            "validation {best} below the entropy floor {floor}"
        );
    }
    // AdamW keeps 8 B/param of moments; Lion 4.
    assert!((rows[0]["state_bytes_per_param"].as_f64().unwrap() - 8.0).abs() < 0.1);
    assert!((rows[1]["state_bytes_per_param"].as_f64().unwrap() - 4.0).abs() < 0.1);
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.contains("| adamw | 24 |") && md.contains("| lion | 24 |"),
        "{md}"
    );

    // Re-plotting the saved comparison needs no training.
    std::fs::remove_file(out.join("overlay.png")).unwrap();
    replot_dirs(std::slice::from_ref(&out), None).unwrap();
    assert!(out.join("overlay.png").exists());
    let _ = std::fs::remove_dir_all(&out);
}

fn moment(args: &[&str], dir: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_moment"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn cli_errors_are_one_clear_line() {
    let dir = tmp("cli");
    std::fs::create_dir_all(&dir).unwrap();
    for (args, needle) in [
        (
            vec!["compare", "--optimizers", "adamw,nope"],
            "unknown optimizer `nope`",
        ),
        (vec!["train", "--optimizer", "adamw", "lr=-1"], "lr"),
        (vec!["train", "--optimizer", "adamw", "bogus=1"], "bogus"),
        (
            vec!["compare", "--text", "/nonexistent/file.txt"],
            "/nonexistent/file.txt",
        ),
        (
            vec!["compare", "--backend", "tpu"],
            "expected ndarray, flex, wgpu",
        ),
        (vec!["plot", "/nonexistent-run"], "/nonexistent-run"),
        (vec!["frobnicate"], "unknown command"),
    ] {
        let (ok, err) = moment(&args, &dir);
        assert!(!ok, "{args:?} should fail");
        assert!(err.starts_with("moment: "), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    // A GPU backend this binary was built without names the feature to build with.
    if !cfg!(feature = "cuda") {
        let (ok, err) = moment(&["compare", "--backend", "cuda"], &dir);
        assert!(!ok);
        assert!(err.contains("built without the `cuda` feature"), "{err}");
    }
    let (ok, _) = moment(&["list"], &dir);
    assert!(ok);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn compare_trains_on_the_flex_backend_too() {
    let out = tmp("flex");
    let cfg = RunConfig {
        steps: 16,
        eval_every: 8,
        progress: false,
        backend: BackendKind::Flex,
        ..RunConfig::default()
    };
    let s = compare(&cfg, &["adamw".to_string()], &out).unwrap();
    let recs = moment_monitor::read_jsonl(out.join("adamw").join("metrics.jsonl")).unwrap();
    assert_eq!(recs.len(), 16);
    let vals: Vec<f64> = recs.iter().filter_map(|r| r.val_loss).collect();
    assert!(
        vals.len() == 2 && vals[1] < vals[0] && vals[1].is_finite(),
        "{vals:?}"
    );
    assert!((s[0].state_bytes_per_param.unwrap() - 8.0).abs() < 0.1);
    let _ = std::fs::remove_dir_all(&out);
}

/// Same seed and inputs ⇒ bitwise identical runs on the CPU: losses, gradient norms and the
/// per-layer norms of every step, for a plain optimizer and for Sophia (whose curvature
/// estimate samples labels from the model) — data order and sampler included. A different
/// seed gives a different run (so the comparison is not vacuous).
#[test]
fn same_seed_runs_are_bitwise_identical_sophia_sampler_included() {
    let run = |name: &str, seed: u64| {
        let out = tmp(&format!("det-{name}-{seed}"));
        let cfg = RunConfig {
            steps: 12,
            eval_every: 6,
            progress: false,
            seed,
            ..RunConfig::default()
        };
        compare(&cfg, &["adamw".to_string(), "sophia".to_string()], &out).unwrap();
        let mut traces = Vec::new();
        for opt in ["adamw", "sophia"] {
            let recs = moment_monitor::read_jsonl(out.join(opt).join("metrics.jsonl")).unwrap();
            let trace: Vec<String> = recs
                .iter()
                .map(|r| {
                    let loss = r.loss.map(f64::to_bits);
                    let val = r.val_loss.map(f64::to_bits);
                    let layers = serde_json::to_string(&r.layers).unwrap();
                    format!(
                        "{} {loss:?} {val:?} {} {layers}",
                        r.step,
                        r.grad_norm.to_bits()
                    )
                })
                .collect();
            assert_eq!(trace.len(), 12);
            traces.push(trace);
        }
        let _ = std::fs::remove_dir_all(&out);
        traces
    };
    let a = run("a", 7);
    let b = run("b", 7);
    assert_eq!(a, b, "same seed, different runs");
    let c = run("c", 8);
    assert_ne!(a[1], c[1], "another seed gave the same Sophia run");
}
