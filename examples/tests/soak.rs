//! Opt-in soak test (ignored by default; it runs for hours at the full length):
//!
//! ```sh
//! cargo test --release -p moment-examples --test soak -- --ignored --nocapture
//! # shorter / fewer: MOMENT_SOAK_STEPS=2000 MOMENT_SOAK_OPTIMIZERS=adamw,lion cargo test …
//! ```
//!
//! Trains the tiny test model for `MOMENT_SOAK_STEPS` (default 10 000) steps with each
//! optimizer (`MOMENT_SOAK_OPTIMIZERS`, default all of `moment list`) and asserts: every loss
//! and validation loss finite; the optimizer state does not grow after the first step (exact
//! bytes from the accounting API) and the process's resident memory stays within 1.5× of
//! its size after the first tenth of the run plus 64 MiB; the final validation loss is below
//! the first and within 0.25 nats of the best seen (no late divergence).
// Tests may unwrap and panic (the workspace lints deny it in library code).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable
)]

use moment_examples::compare::{RunConfig, compare, presets};

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
#[ignore = "opt-in soak run: hours at the default length (see the module docs)"]
fn soak_every_optimizer_for_many_steps() {
    let steps: u64 = env_or("MOMENT_SOAK_STEPS", 10_000);
    let names: Vec<String> = match std::env::var("MOMENT_SOAK_OPTIMIZERS") {
        Ok(list) => list.split(',').map(|s| s.trim().to_string()).collect(),
        Err(_) => presets().iter().map(|p| p.name.to_string()).collect(),
    };
    let out = std::env::temp_dir().join(format!("moment-soak-{}", std::process::id()));
    let cfg = RunConfig {
        steps,
        eval_every: (steps / 20).max(1),
        progress: false,
        ..RunConfig::default()
    };
    let mut failures = Vec::new();
    for name in &names {
        let t0 = std::time::Instant::now();
        compare(&cfg, std::slice::from_ref(name), &out).unwrap();
        let recs = moment_monitor::read_jsonl(out.join(name).join("metrics.jsonl")).unwrap();
        let mut problems = Vec::new();
        if recs.len() as u64 != steps {
            problems.push(format!("{} records for {steps} steps", recs.len()));
        }
        if let Some(r) = recs.iter().find(|r| {
            r.loss.is_some_and(|l| !l.is_finite()) || r.val_loss.is_some_and(|l| !l.is_finite())
        }) {
            problems.push(format!("non-finite loss at step {}", r.step));
        }
        let state: Vec<u64> = recs
            .iter()
            .filter_map(|r| r.memory.as_ref().map(|m| m.state_bytes))
            .collect();
        if let (Some(first), Some(max)) = (state.first(), state.iter().max())
            && max > first
        {
            problems.push(format!("state grew from {first} to {max} bytes"));
        }
        let rss: Vec<u64> = recs
            .iter()
            .filter_map(|r| r.memory.as_ref().and_then(|m| m.rss_bytes))
            .collect();
        if rss.len() > 10 {
            let base = rss[rss.len() / 10];
            let last = rss[rss.len() - 1];
            if last as f64 > 1.5 * base as f64 + 64.0 * 1048576.0 {
                problems.push(format!("resident memory grew from {base} to {last} bytes"));
            }
        }
        let vals: Vec<f64> = recs.iter().filter_map(|r| r.val_loss).collect();
        match (vals.first(), vals.last()) {
            (Some(&first), Some(&last)) => {
                let best = vals.iter().copied().fold(f64::INFINITY, f64::min);
                if last >= first || last > best + 0.25 {
                    problems.push(format!(
                        "validation loss first {first:.4}, best {best:.4}, last {last:.4}"
                    ));
                }
            }
            _ => problems.push("no validation loss".into()),
        }
        eprintln!(
            "soak {name}: {steps} steps in {:.0} s, final val {:?}: {}",
            t0.elapsed().as_secs_f64(),
            vals.last(),
            if problems.is_empty() {
                "ok".to_string()
            } else {
                problems.join("; ")
            }
        );
        if !problems.is_empty() {
            failures.push(format!("{name}: {}", problems.join("; ")));
        }
    }
    let _ = std::fs::remove_dir_all(&out);
    assert!(failures.is_empty(), "{failures:#?}");
}
