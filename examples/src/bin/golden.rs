//! `golden [--dir DIR]… [--optimizer FAMILY,…] [--bnb-kernel cuda|cpu] [--backend ndarray|flex|wgpu|cuda] [--strict]`: run reference
//! cases (`--bnb-kernel`: which bitsandbytes code path the 8-bit optimizers follow; default cuda).
//! Without `--dir`, the reference cases and the hyper-parameter sweep; `--dir` may be repeated.
//! Usually invoked as `cargo xtask golden …`.

use std::path::PathBuf;
use std::process::ExitCode;

use moment_examples::golden::{
    RunOptions, Summary, default_case_dirs, parse_families, run_dir_with,
};
use moment_optim::BnbKernel;

fn main() -> ExitCode {
    let mut dirs = Vec::new();
    let mut families = Vec::new();
    let mut strict = false;
    let mut options = RunOptions::default();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--dir" => match args.next() {
                Some(d) => dirs.push(PathBuf::from(d)),
                None => return usage("--dir needs a directory"),
            },
            "--optimizer" | "--optimizers" => match args.next() {
                Some(l) => families = parse_families(&l),
                None => return usage("--optimizer needs a comma-separated list of families"),
            },
            "--bnb-kernel" => match args.next().as_deref() {
                Some("cuda") => options.port.bnb_kernel = BnbKernel::Cuda,
                Some("cpu") => options.port.bnb_kernel = BnbKernel::Cpu,
                _ => return usage("--bnb-kernel needs `cuda` or `cpu`"),
            },
            "--backend" => match args.next() {
                Some(b) => match moment_examples::compare::BackendKind::parse(&b) {
                    Ok(k) => options.backend = k,
                    Err(e) => return usage(&e.to_string()),
                },
                None => return usage("--backend needs ndarray, flex, wgpu or cuda"),
            },
            "--strict" => strict = true,
            "-h" | "--help" => {
                println!(
                    "usage: golden [--dir DIR] [--optimizer FAMILY,...] [--bnb-kernel cuda|cpu] [--backend ndarray|flex|wgpu|cuda] [--strict]"
                );
                return ExitCode::SUCCESS;
            }
            other => return usage(&format!("unknown argument `{other}`")),
        }
    }
    if dirs.is_empty() {
        dirs = default_case_dirs();
    }
    let mut summary = Summary::default();
    let mut any = false;
    let mut missing = Vec::new();
    for dir in &dirs {
        let results = match run_dir_with(dir, &families, &options) {
            Ok((r, _)) => r,
            Err(e) => {
                eprintln!("golden: cannot read {}: {e}", dir.display());
                return ExitCode::from(2);
            }
        };
        for r in &results {
            println!("{r}");
            summary.add(&r.status);
        }
        any |= !results.is_empty();
        // Every requested family must have cases in every directory run.
        for f in &families {
            if !results.iter().any(|r| &r.family == f) {
                missing.push(format!("{f} in {}", dir.display()));
            }
        }
    }
    println!("{summary}");
    if !missing.is_empty() {
        eprintln!(
            "golden: no cases of the requested families: {}",
            missing.join(", ")
        );
    }
    if summary.failed > 0
        || (strict && summary.unsupported > 0)
        || (strict && !any)
        || (strict && !missing.is_empty())
    {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn usage(msg: &str) -> ExitCode {
    eprintln!(
        "golden: {msg}\nusage: golden [--dir DIR] [--optimizer FAMILY,...] [--bnb-kernel cuda|cpu] [--backend ndarray|flex|wgpu|cuda] [--strict]"
    );
    ExitCode::from(2)
}
