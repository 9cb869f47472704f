//! `cargo xtask <task>`: the project's task runner. It shells out to cargo (its own build lives
//! in `target/xtask`, so it never evicts the workspace build).
//!
//! * `golden [--dir DIR] [--optimizer FAMILY,…] [--bnb-kernel cuda|cpu] [--strict]` — run reference cases.
//! * `ci` — what CI runs: fmt check, clippy `-D warnings`, the test suite, strict golden for
//!   the implemented families.
//! * `bench [--optimizers all|LIST] [--sizes 1M,16M] [--threads N] [--reps N] [--json PATH]
//!   [--quick]` — optimizer step times against the measured bandwidth (release build of
//!   `moment-examples`' `bench`; see `docs/benchmarks.md`).

use std::process::{Command, ExitCode};

/// Families whose reference cases must all pass (`ci` runs them with `--strict`).
const IMPLEMENTED_FAMILIES: &str = "adam,adamw,adafactor,adam8bit,adamw8bit,sophia,lamb,shampoo,lion,muon,ademamix,schedulefree-adamw,came,mars,adam-mini,soap,prodigy";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((task, rest)) = args.split_first() else {
        return usage();
    };
    match task.as_str() {
        "golden" => golden(rest),
        "ci" => ci(),
        "bench" => bench(rest),
        _ => usage(),
    }
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: cargo xtask <task>\n  golden [--dir DIR] [--optimizer FAMILY,...] [--bnb-kernel cuda|cpu] [--strict]\n  ci\n  bench [--optimizers all|LIST] [--sizes 1M,16M] [--threads N] [--reps N] [--json PATH] [--quick]"
    );
    ExitCode::from(2)
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    // Run in the workspace root whatever the caller's directory.
    c.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    c
}

fn run(mut c: Command) -> bool {
    eprintln!("xtask: {c:?}");
    match c.status() {
        Ok(s) => s.success(),
        Err(e) => {
            eprintln!("xtask: cannot run cargo: {e}");
            false
        }
    }
}

fn golden(rest: &[String]) -> ExitCode {
    let mut c = cargo();
    c.args([
        "run",
        "--quiet",
        "-p",
        "moment-examples",
        "--bin",
        "golden",
        "--",
    ]);
    c.args(rest);
    if run(c) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn bench(rest: &[String]) -> ExitCode {
    let mut c = cargo();
    c.args([
        "run",
        "--release",
        "--quiet",
        "-p",
        "moment-examples",
        "--bin",
        "bench",
        "--",
    ]);
    c.args(rest);
    if run(c) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn ci() -> ExitCode {
    let steps: Vec<Vec<&str>> = vec![
        vec!["fmt", "--all", "--check"],
        vec![
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
        vec!["test", "--workspace"],
        vec![
            "run",
            "--quiet",
            "-p",
            "moment-examples",
            "--bin",
            "golden",
            "--",
            "--strict",
            "--optimizer",
            IMPLEMENTED_FAMILIES,
        ],
    ];
    for s in steps {
        let mut c = cargo();
        c.args(&s);
        if !run(c) {
            eprintln!("xtask ci: `cargo {}` failed", s.join(" "));
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
