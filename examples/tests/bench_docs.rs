//! The published benchmark figures are the committed report's: `docs/bench/results.json` is a
//! full, valid run; `docs/benchmarks.md` shows its tables verbatim and names its commit; every
//! figure README.md quotes from it is the report's own, rounded as printed. Re-running the
//! bench without updating the docs fails here.
// Tests may unwrap and panic (the workspace lints deny it in library code).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable
)]

use moment_examples::bench::report::{
    OPTIMIZERS, Report, Row, markdown_table, model_markdown_table, parse_and_validate,
};

const REPORT: &str = include_str!("../../docs/bench/results.json");
const BENCHMARKS: &str = include_str!("../../docs/benchmarks.md");
const README: &str = include_str!("../../README.md");

fn report() -> Report {
    parse_and_validate(REPORT).unwrap_or_else(|e| panic!("docs/bench/results.json: {e}"))
}

fn row<'a>(r: &'a Report, optimizer: &str, implementation: &str, numel: usize) -> &'a Row {
    r.results
        .iter()
        .find(|x| {
            x.optimizer == optimizer
                && x.numel == numel
                && x.implementation.split(' ').next() == Some(implementation)
        })
        .unwrap_or_else(|| panic!("no {optimizer} {implementation} row at {numel}"))
}

const M16: usize = 16 << 20;

#[test]
fn the_committed_report_is_a_full_valid_run() {
    let r = report();
    assert!(!r.quick, "a --quick report");
    assert_eq!(r.torch_skipped, None, "torch rows were skipped");
    for opt in OPTIMIZERS {
        for n in [1 << 20, M16] {
            row(&r, opt, "moment-fused", n);
            row(&r, opt, "moment-composed", n);
        }
    }
    for opt in ["adamw", "adam"] {
        for imp in [
            "moment-fused-clip",
            "burn-optim",
            "torch-fused",
            "torch-fused-clip",
        ] {
            row(&r, opt, imp, M16);
        }
    }
    assert!(r.model_results.len() >= 2, "model rows");
}

#[test]
fn benchmarks_md_shows_the_committed_tables_and_commit() {
    let r = report();
    assert!(
        BENCHMARKS.contains(&markdown_table(&r)),
        "docs/benchmarks.md lacks the committed report's table (`bench --table docs/bench/results.json`)"
    );
    assert!(
        BENCHMARKS.contains(&model_markdown_table(&r)),
        "docs/benchmarks.md lacks the committed report's model table"
    );
    assert!(
        BENCHMARKS.contains(&format!("at commit {}", r.git_rev)),
        "docs/benchmarks.md does not name the report's commit {}",
        r.git_rev
    );
}

#[test]
fn readme_quotes_the_committed_report() {
    let r = report();
    let ms = |opt: &str, imp: &str| format!("{:.1} ms", row(&r, opt, imp, M16).median_ms);
    let ratio = |a: f64, b: f64| format!("{:.2}×", a / b);
    let fused = row(&r, "adamw", "moment-fused", M16).median_ms;
    let inpass = row(&r, "adamw", "moment-inpass", M16).median_ms;
    let clip = row(&r, "adamw", "moment-fused-clip", M16).median_ms;
    let burn = row(&r, "adamw", "burn-optim", M16).median_ms;
    let torch = row(&r, "adamw", "torch-fused", M16).median_ms;
    let torch_clip = row(&r, "adamw", "torch-fused-clip", M16).median_ms;
    let quotes = [
        format!("default checks {}", ms("adamw", "moment-fused")),
        format!("in pass {}", ms("adamw", "moment-inpass")),
        format!("torch's fused AdamW {}", ms("adamw", "torch-fused")),
        format!("clipped at 1.0 {}", ms("adamw", "moment-fused-clip")),
        format!(
            "torch's `clip_grad_norm_` + fused step {}",
            ms("adamw", "torch-fused-clip")
        ),
        format!("({} faster)", ratio(torch_clip, clip)),
        format!("(in pass {} torch's time)", ratio(inpass, torch)),
        format!("{} burn-optim's AdamW", ratio(burn, fused)),
        format!("commit {}", r.git_rev),
    ];
    for q in quotes {
        assert!(
            README.contains(&q),
            "README.md does not say `{q}` (the committed report's figure)"
        );
    }
}
