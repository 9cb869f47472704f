//! `cargo xtask <task>`: the project's task runner. It shells out to cargo (its own build lives
//! in `target/xtask`, so it never evicts the workspace build).
//!
//! * `golden [--dir DIR] [--optimizer FAMILY,…] [--bnb-kernel cuda|cpu]
//!   [--backend ndarray|flex|wgpu|cuda] [--strict]` — run reference cases (on a GPU backend
//!   with moment-cuda's fused kernels; `wgpu`/`cuda` build with that feature).
//! * `ci` — what CI runs: tidy, fmt check, clippy `-D warnings` (also moment-cuda with `wgpu`
//!   and `cuda`), the test suite, the GPU kernel suite on wgpu (needs a Vulkan device: mesa's
//!   llvmpipe will do), strict golden for the implemented families (8-bit also in CPU-path
//!   mode), the fused CPU suite at each narrower SIMD level (`MOMENT_SIMD`), moment-optim
//!   without default features.
//! * `bench [--optimizers all|LIST] [--sizes 1M,16M] [--threads N] [--reps N] [--json PATH]
//!   [--quick]` — optimizer step times against the measured bandwidth (release build of
//!   `moment-examples`' `bench`; see `docs/benchmarks.md`).
//! * `gpu-check [--out DIR]` — build the CUDA test and bench binaries here (x86-64, release,
//!   stripped and gzip'd, under 64 MiB together) into `DIR` (default `target/gpu-check`) with `run.sh`,
//!   which runs them on a machine with an NVIDIA GPU and writes its results to `DIR/results/`
//!   (or `$OUT`): the fused-vs-composed kernel tests, the bench at 16M and 256M parameters, and
//!   `torch.optim.AdamW(fused=True)` on the same card.
//! * `tidy` — source checks (file and fn length, one lint header, the code map in
//!   `docs/ARCHITECTURE.md`, no import cycles between a crate's modules; see `tidy.rs`).

use std::process::{Command, ExitCode};

mod tidy;

/// Families with fused GPU kernels: their reference cases also run on wgpu in `ci`.
const GPU_FAMILIES: &str = "adam,adamw,adam8bit,adamw8bit,sophia,lion";

/// Families whose reference cases must all pass (`ci` runs them with `--strict`). Not a list
/// written here: the golden runner expands this word (`moment_examples::golden::IMPLEMENTED`)
/// to the families of the classes moment-optim's port table accepts
/// (`moment_optim::port::families`), the one source of truth.
const IMPLEMENTED_FAMILIES: &str = "implemented";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((task, rest)) = args.split_first() else {
        return usage();
    };
    match task.as_str() {
        "golden" => golden(rest),
        "ci" => ci(),
        "bench" => bench(rest),
        "gpu-check" => gpu_check(rest),
        "tidy" => tidy::main(rest),
        _ => usage(),
    }
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: cargo xtask <task>\n  golden [--dir DIR] [--optimizer FAMILY,...] [--bnb-kernel cuda|cpu] [--backend ndarray|flex|wgpu|cuda] [--strict]\n  ci\n  bench [--optimizers all|LIST] [--sizes 1M,16M] [--backend ndarray|flex|wgpu|cuda] [--threads N] [--reps N] [--json PATH] [--quick] [--replot JSON]\n  gpu-check [--out DIR]\n  tidy"
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

/// `--features wgpu|cuda` when `args` ask for that `--backend` (the GPU backends are behind
/// moment-examples' features).
fn backend_features(c: &mut Command, args: &[String]) {
    if let Some(b) = args
        .windows(2)
        .find(|w| w[0] == "--backend")
        .map(|w| w[1].as_str())
        .filter(|b| matches!(*b, "wgpu" | "cuda"))
    {
        c.args(["--features", b]);
    }
}

fn golden(rest: &[String]) -> ExitCode {
    let mut c = cargo();
    c.args(["run", "--quiet", "-p", "moment-examples"]);
    backend_features(&mut c, rest);
    c.args(["--bin", "golden", "--"]);
    c.args(rest);
    if run(c) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn bench(rest: &[String]) -> ExitCode {
    let mut c = cargo();
    c.args(["run", "--release", "--quiet", "-p", "moment-examples"]);
    backend_features(&mut c, rest);
    c.args(["--bin", "bench", "--"]);
    c.args(rest);
    if run(c) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn ci() -> ExitCode {
    if !tidy::run() {
        eprintln!("xtask ci: `cargo xtask tidy` failed");
        return ExitCode::FAILURE;
    }
    let clippy = |extra: &[&'static str]| {
        let mut v = vec!["clippy"];
        v.extend_from_slice(extra);
        v.extend_from_slice(&["--all-targets", "--", "-D", "warnings"]);
        v
    };
    let steps: Vec<Vec<&str>> = vec![
        vec!["fmt", "--all", "--check"],
        clippy(&["--workspace"]),
        clippy(&["-p", "moment-cuda", "--features", "wgpu"]),
        clippy(&["-p", "moment-cuda", "--features", "cuda"]),
        clippy(&["-p", "moment-examples", "--features", "wgpu,cuda"]),
        vec!["test", "--workspace"],
        vec!["build", "-p", "moment-optim", "--no-default-features"],
        vec![
            "run",
            "--quiet",
            "-p",
            "moment-examples",
            "--example",
            "readme",
        ],
        vec![
            "run",
            "--quiet",
            "-p",
            "moment-dist",
            "--example",
            "doc_snippets",
        ],
        vec!["test", "-p", "moment-cuda", "--features", "wgpu"],
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
        // The 8-bit cases in bitsandbytes' CPU-path mode, the mode that reproduces their
        // recordings (codes included); the default mode's difference is documented.
        vec![
            "run",
            "--quiet",
            "-p",
            "moment-examples",
            "--bin",
            "golden",
            "--",
            "--strict",
            "--bnb-kernel",
            "cpu",
            "--optimizer",
            "adam8bit,adamw8bit",
        ],
        // The bench, quick, in release; its report checked against the schema.
        vec![
            "run",
            "--release",
            "--quiet",
            "-p",
            "moment-examples",
            "--bin",
            "bench",
            "--",
            "--quick",
            "--json",
            "target/bench-quick.json",
            "--chart",
            "target/bench-quick.png",
        ],
        vec![
            "run",
            "--release",
            "--quiet",
            "-p",
            "moment-examples",
            "--bin",
            "bench",
            "--",
            "--validate",
            "target/bench-quick.json",
        ],
        vec![
            "run",
            "--quiet",
            "-p",
            "moment-examples",
            "--features",
            "wgpu",
            "--bin",
            "golden",
            "--",
            "--backend",
            "wgpu",
            "--strict",
            "--optimizer",
            GPU_FAMILIES,
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
    // The fused CPU kernels at the narrower SIMD levels (the test run above used the widest).
    for level in ["scalar", "avx2"] {
        let mut c = cargo();
        c.env("MOMENT_SIMD", level).args([
            "test",
            "-p",
            "moment-optim",
            "--test",
            "fused",
            "--test",
            "gradient_scan",
        ]);
        if !run(c) {
            eprintln!("xtask ci: the fused suite failed at MOMENT_SIMD={level}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

/// Largest total size of the binaries `gpu-check` prepares (what one transfer to a GPU machine
/// may carry).
const GPU_CHECK_LIMIT: u64 = 64 << 20;

fn gpu_check(rest: &[String]) -> ExitCode {
    let root = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let out = match rest {
        [] => root.join("target/gpu-check"),
        [flag, dir] if flag == "--out" => std::path::PathBuf::from(dir),
        _ => return usage(),
    };
    match prepare_gpu_check(root, &out) {
        Ok(total) => {
            eprintln!(
                "xtask gpu-check: {} ready ({:.1} MiB); on the GPU machine run `bash run.sh` there",
                out.display(),
                total as f64 / (1u64 << 20) as f64
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("xtask gpu-check: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Builds the binaries, copies and strips them into `out` with the scripts; returns the total
/// bytes.
fn prepare_gpu_check(root: &std::path::Path, out: &std::path::Path) -> Result<u64, String> {
    // The kernel tests: the test binary's path from cargo's JSON messages.
    let mut c = cargo();
    c.args([
        "test",
        "--release",
        "-p",
        "moment-cuda",
        "--features",
        "cuda",
        "--test",
        "cuda",
        "--no-run",
        "--message-format=json",
    ]);
    eprintln!("xtask: {c:?}");
    let o = c.output().map_err(|e| format!("cannot run cargo: {e}"))?;
    if !o.status.success() {
        return Err(format!(
            "building the CUDA tests failed:\n{}",
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    let tests = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| l.contains("\"name\":\"cuda\"") && l.contains("\"test\":true"))
        .find_map(|l| json_string(l, "executable"))
        .ok_or("cargo reported no executable for the `cuda` test")?;
    let mut c = cargo();
    c.args([
        "build",
        "--release",
        "-p",
        "moment-examples",
        "--features",
        "cuda",
        "--bin",
        "bench",
    ]);
    if !run(c) {
        return Err("building the bench with --features cuda failed".into());
    }
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let files = [
        (std::path::PathBuf::from(tests), "moment-cuda-tests", true),
        (root.join("target/release/bench"), "bench", true),
        (root.join("xtask/gpu/run.sh"), "run.sh", false),
        (
            root.join("xtask/gpu/torch_adamw.py"),
            "torch_adamw.py",
            false,
        ),
    ];
    let mut total = 0;
    for (from, name, binary) in files {
        let to = out.join(name);
        std::fs::copy(&from, &to).map_err(|e| format!("copy {}: {e}", from.display()))?;
        let shipped = if binary {
            // Symbols are not needed to run; `strip` is binutils' (gcc's toolchain). Stripped,
            // the two binaries are ~85 MB, so they travel gzip'd (~22 MB); run.sh unpacks them.
            let ok = Command::new("strip")
                .arg("--strip-all")
                .arg(&to)
                .status()
                .is_ok_and(|s| s.success())
                && Command::new("gzip")
                    .args(["-9", "-f"])
                    .arg(&to)
                    .status()
                    .is_ok_and(|s| s.success());
            if !ok {
                return Err(format!("strip/gzip {} failed", to.display()));
            }
            out.join(format!("{name}.gz"))
        } else {
            to
        };
        total += std::fs::metadata(&shipped)
            .map_err(|e| format!("{}: {e}", shipped.display()))?
            .len();
    }
    if total > GPU_CHECK_LIMIT {
        return Err(format!(
            "the prepared files take {total} bytes, over the {GPU_CHECK_LIMIT}-byte limit"
        ));
    }
    Ok(total)
}

/// The string value of `"key":"…"` in one line of JSON (cargo's messages escape nothing in
/// paths on Linux but backslashes and quotes, which are undone here).
fn json_string(line: &str, key: &str) -> Option<String> {
    let pat = format!("\"{key}\":\"");
    let start = line.find(&pat)? + pat.len();
    let mut out = String::new();
    let mut chars = line[start..].chars();
    while let Some(ch) = chars.next() {
        match ch {
            '"' => return Some(out),
            '\\' => out.push(chars.next()?),
            c => out.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::json_string;

    #[test]
    fn json_string_reads_cargo_messages() {
        let l = r#"{"reason":"compiler-artifact","executable":"/a/b \"c\"/cuda-1f","fresh":true}"#;
        assert_eq!(
            json_string(l, "executable").as_deref(),
            Some("/a/b \"c\"/cuda-1f")
        );
        assert_eq!(json_string(l, "missing"), None);
        assert_eq!(json_string(r#"{"executable":null}"#, "executable"), None);
    }
}
