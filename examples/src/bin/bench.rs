//! `cargo xtask bench`: optimizer step time against the machine's measured streaming bandwidth.
//!
//! ```text
//! cargo run --release -p moment-examples --bin bench -- [--optimizers all|LIST] [--sizes 1M,16M]
//!     [--threads N] [--reps N] [--json PATH] [--chart PATH] [--quick] [--impls LIST]
//!     [--model tiny,small|none] [--model-optimizers LIST] [--batch B] [--seq S] [--model-reps N]
//!     [--torch PYTHON|none] [--replot JSON] [--validate JSON] [--table JSON]
//! ```
//!
//! Backends: ndarray (CPU, default), flex (CPU), wgpu and cuda (features `wgpu` / `cuda`,
//! moment-cuda's kernels; the bandwidth is then the device's, measured with a trivial CubeCL
//! kernel of each access pattern, and every step is followed by a device sync). For each optimizer and size: one flat f32 parameter of that size
//! (`adafactor-matrix`: a `[n/1024, 1024]` matrix, which Adafactor factors),
//! random gradients, `reps` timed steps after two warm-up steps; median and minimum step time,
//! the bytes the algorithm must move per parameter (its floor), effective GB/s
//! (`bytes · n / median`), that as a % of the streaming bandwidth of the same access pattern
//! over the same number of elements, measured right before and right after the row (the
//! higher of the two; [`moment_examples::bench::stream`]), and the state bytes per parameter
//! from the accounting API.
//! Implementations: `moment-fused` (one pass, where the chain has one; the engine's default
//! checks: every gradient is scanned before the step), `moment-inpass` (the same with
//! `NonFinitePolicy::Propagate` and `GradientScan::InPass`: the gradient is measured inside
//! the fused pass and read once, as PyTorch's unchecked step reads it), `moment-fused-clip`
//! (Adam/AdamW: the default step with `clip_grad_norm(1.0)`, what LLM training runs; its peer is
//! torch's `clip_grad_norm_(…, 1.0)` then the fused step, `torch-fused-clip`), `moment-composed`
//! (the chain's tensor ops) and `burn-optim` (burn's own AdamW / Adam, where burn has it).
//! PyTorch's `AdamW` / `Adam` (`torch-fused`, `torch-foreach`) run in the same process tree
//! through `xtask/gpu/torch_adamw.py` (embedded in this binary) when `--torch PYTHON` (default
//! `python3`, or `$MOMENT_TORCH_PYTHON`) can import torch and `--impls` lists `torch` (default) — on the CPU with the same thread
//! count, or on the card with `--backend cuda`; otherwise the run says why and goes on.
//! Model level (`--model`, default `tiny`): a training step of the test transformer split into
//! forward, backward, optimizer and monitor time per optimizer ([`moment_examples::model_bench`]).
//! `--chart` (default: the `--json` path with `.png`) draws each implementation's % of the
//! measured bandwidth at the largest size; `--replot JSON` redraws it from a saved report.
//! Schema of `--json`: [`moment_examples::bench::report`] (checked before it is written;
//! `--validate JSON` checks a saved report; `--table JSON` prints its rows as the markdown
//! tables of `docs/benchmarks.md`) and `docs/benchmarks.md`.

use std::process::ExitCode;
use std::time::Instant;

use burn::backend::{Autodiff, NdArray};
use burn::module::Param;
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use moment_examples::bench::pattern::{Pattern, pattern_of};
use moment_examples::bench::report::{
    Report, Row, SCHEMA_VERSION, parse_and_validate, row_floor_bytes, validate,
};
use moment_examples::bench::stats::{effective_gbps, pct_of, summarize};
use moment_examples::bench::stream::cpu_stream_gbps;
use moment_examples::model_bench::{ModelRow, time_model};
use moment_monitor::plot::{Bar, bar_chart};
use moment_optim::{
    AdafactorConfig, Adam8bitConfig, AdamWConfig, Chain, GradEntry, GradientScan, LionConfig,
    MomentOptimizer, NonFinitePolicy, ParamGroup, ParamTensor, Selector, SophiaConfig,
};
use serde::Deserialize;

#[path = "bench/args.rs"]
mod args;
use args::{Command, Settings};

type B = NdArray<f32>;
type BoxError = Box<dyn std::error::Error>;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn chain<Bk: Backend>(name: &str) -> Result<Chain<Bk>, BoxError> {
    Ok(match name {
        "adamw" => AdamWConfig::default().build()?,
        "adam" => moment_optim::AdamConfig::default().build()?,
        "lion" => LionConfig::default().build()?,
        "sophia" => SophiaConfig::g().build()?,
        "adafactor" | "adafactor-matrix" => AdafactorConfig::transformers().build()?,
        "adamw8bit" => Adam8bitConfig::adamw().build()?,
        other => return Err(format!("unknown optimizer `{other}`").into()),
    })
}

/// The benchmarked parameter's shape: a vector, or for `*-matrix` a `[n/1024, 1024]` matrix.
fn shape_of(name: &str, n: usize) -> Vec<usize> {
    if name.ends_with("-matrix") && n.is_multiple_of(1024) {
        vec![n / 1024, 1024]
    } else {
        vec![n]
    }
}

/// The streaming-bandwidth yardstick of the backend the rows run on.
struct Yardstick {
    backend: String,
    threads: usize,
    reps: usize,
}

impl Yardstick {
    /// GB/s of `pattern` over `n` elements per stream.
    fn measure(&self, n: usize, pattern: Pattern) -> Result<f64, BoxError> {
        Ok(match self.backend.as_str() {
            #[cfg(feature = "wgpu")]
            "wgpu" => moment_cuda::stream_gbps::<moment_cuda::Wgpu>(
                &Default::default(),
                n,
                pattern.reads,
                pattern.writes,
                self.reps,
            )?,
            #[cfg(feature = "cuda")]
            "cuda" => moment_cuda::stream_gbps::<moment_cuda::Cuda>(
                &Default::default(),
                n,
                pattern.reads,
                pattern.writes,
                self.reps,
            )?,
            // in-cache sizes pass in well under a millisecond: more passes for a stable median
            _ => {
                let reps = if n <= 1 << 22 {
                    4 * self.reps
                } else {
                    self.reps
                };
                cpu_stream_gbps(n, pattern, self.threads, reps)?
            }
        })
    }

    /// Runs `timed` between two measurements of `pattern` at `n` elements; the higher one is
    /// the row's reference (this class of machine drifts by tens of % within minutes, so the
    /// yardstick is taken next to the row, never minutes away).
    fn around<T>(
        &self,
        n: usize,
        pattern: Pattern,
        timed: impl FnOnce() -> Result<T, BoxError>,
    ) -> Result<(T, f64), BoxError> {
        let before = self.measure(n, pattern)?;
        let out = timed()?;
        let after = self.measure(n, pattern)?;
        Ok((out, before.max(after)))
    }
}

mod flat {
    use burn::module::{Module, Param};
    use burn::tensor::{Tensor, backend::Backend};

    /// A module holding one flat parameter, for burn's optimizers.
    #[derive(Module, Debug)]
    pub struct Flat<B: Backend> {
        /// The parameter.
        pub w: Param<Tensor<B, 1>>,
    }
}
use flat::Flat;

/// The engine's checks a moment row runs with.
#[derive(Clone, Copy)]
enum Checks {
    /// The defaults: every gradient scanned before the step.
    Default,
    /// `NonFinitePolicy::Propagate` + `GradientScan::InPass`.
    InPass,
    /// The defaults plus `clip_grad_norm(1.0)`.
    Clip,
}

fn time_moment<Bk: Backend>(
    chain: Chain<Bk>,
    checks: Checks,
    n: usize,
    shape: Vec<usize>,
    reps: usize,
) -> Result<(Vec<f64>, f64), BoxError> {
    let device = Default::default();
    let group = || ParamGroup::new("all", Selector::All, chain.clone());
    let mut opt = match checks {
        Checks::Default => MomentOptimizer::new(chain.clone()),
        Checks::InPass => MomentOptimizer::builder()
            .group(group())
            .non_finite(NonFinitePolicy::Propagate)
            .gradient_scan(GradientScan::InPass)
            .build()?,
        Checks::Clip => MomentOptimizer::builder()
            .group(group())
            .clip_grad_norm(1.0)
            .build()?,
    };
    let mut params = vec![ParamTensor {
        path: "w".into(),
        shape,
        value: Tensor::<Bk, 1>::random([n], Distribution::Normal(0.0, 0.5), &device),
        grad: None,
    }];
    let grads: Vec<Tensor<Bk, 1>> = (0..3)
        .map(|_| Tensor::random([n], Distribution::Normal(0.0, 1.0), &device))
        .collect();
    let mut times = Vec::new();
    for step in 0..reps + 2 {
        let grad = grads[step % grads.len()].clone();
        let t0 = if let Checks::Clip = checks {
            // What a training loop hands the engine: a gradient nobody else holds (burn's
            // `backward`), which clipping scales in place, as torch's `clip_grad_norm_`
            // scales `p.grad` (its row, too, gets a fresh copy outside the timed region).
            let grad = Tensor::from_data(grad.to_data(), &device);
            Bk::sync(&device).map_err(|e| format!("device sync: {e:?}"))?;
            let t0 = Instant::now();
            let p = &mut params[0];
            let mut prep = opt.prepare(
                1e-3,
                vec![GradEntry {
                    path: p.path.clone(),
                    param_shape: p.shape.clone(),
                    grad_shape: p.shape.clone(),
                    grad,
                    param: None,
                }],
            )?;
            let value = std::mem::replace(&mut p.value, Tensor::zeros([0], &device));
            p.value = opt.apply(&mut prep, "w", value);
            opt.finish(prep);
            t0
        } else {
            params[0].grad = Some(grad);
            let t0 = Instant::now();
            opt.step(1e-3, &mut params)?;
            t0
        };
        // make sure the work is done (a no-op on the synchronous CPU backends)
        Bk::sync(&device).map_err(|e| format!("device sync: {e:?}"))?;
        if step >= 2 {
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    Ok((times, opt.state_memory().bytes_per_param()))
}

fn time_burn<Bk: Backend>(name: &str, n: usize, reps: usize) -> Option<Vec<f64>> {
    let device = Default::default();
    let mut module = Flat::<Autodiff<Bk>> {
        w: Param::from_tensor(Tensor::random([n], Distribution::Normal(0.0, 0.5), &device)),
    };
    let grads: Vec<Tensor<Bk, 1>> = (0..3)
        .map(|_| Tensor::random([n], Distribution::Normal(0.0, 1.0), &device))
        .collect();
    let mut times = Vec::new();
    macro_rules! drive {
        ($optim:expr) => {{
            let mut optim = $optim;
            for step in 0..reps + 2 {
                let mut gp = GradientsParams::new();
                gp.register(module.w.id, grads[step % grads.len()].clone());
                let t0 = Instant::now();
                module = optim.step(1e-3, module, gp);
                Bk::sync(&device).ok()?;
                if step >= 2 {
                    times.push(t0.elapsed().as_secs_f64());
                }
            }
        }};
    }
    match name {
        "adamw" => {
            drive!(burn::optim::AdamWConfig::new().init::<Autodiff<Bk>, Flat<Autodiff<Bk>>>())
        }
        "adam" => drive!(burn::optim::AdamConfig::new().init::<Autodiff<Bk>, Flat<Autodiff<Bk>>>()),
        _ => return None,
    }
    Some(times)
}

/// The chart of `--chart`: each row's % of the measured bandwidth at the largest size.
fn draw_chart(rows: &[Row], threads: usize, path: &str) -> Result<(), BoxError> {
    let Some(n) = rows.iter().map(|r| r.numel).max() else {
        return Err(format!("no optimizer results: no chart written to {path}").into());
    };
    let bars: Vec<Bar> = rows
        .iter()
        .filter(|r| r.numel == n)
        .map(|r| Bar {
            label: r.optimizer.clone(),
            series: r.implementation.clone(),
            value: r.pct_of_bandwidth,
        })
        .collect();
    bar_chart(
        &format!(
            "optimizer step, % of the streaming bandwidth of its access pattern ({n} f32, {threads} threads)"
        ),
        "% of bandwidth",
        &bars,
        Some((100.0, "measured bandwidth")),
        path,
        (1200, 600),
    )?;
    println!("\nChart written to {path}");
    Ok(())
}

/// `--replot JSON`: redraw the chart of a saved `--json` report (to `--chart`, default the
/// report's path with `.png`) without running anything.
fn replot_chart(from: &str, chart: Option<String>) -> Result<(), BoxError> {
    #[derive(Deserialize)]
    struct Saved {
        threads: usize,
        results: Vec<Row>,
    }
    let text = std::fs::read_to_string(from).map_err(|e| format!("--replot {from}: {e}"))?;
    let saved: Saved = serde_json::from_str(&text)
        .map_err(|e| format!("--replot {from}: not a bench report: {e}"))?;
    let path = chart.unwrap_or_else(|| {
        std::path::Path::new(from)
            .with_extension("png")
            .display()
            .to_string()
    });
    draw_chart(&saved.results, saved.threads, &path)
}

/// `--validate JSON`: check a saved report against the schema.
fn validate_file(path: &str) -> Result<(), BoxError> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("--validate {path}: {e}"))?;
    let report = parse_and_validate(&text).map_err(|e| format!("--validate {path}: {e}"))?;
    println!(
        "{path}: a valid bench report (schema {SCHEMA_VERSION}, git {}, {} rows, {} model rows)",
        report.git_rev,
        report.results.len(),
        report.model_results.len()
    );
    Ok(())
}

fn run() -> Result<(), BoxError> {
    match args::parse(std::env::args().skip(1))? {
        Command::Validate(path) => validate_file(&path),
        Command::Table(path) => print_tables(&path),
        Command::Replot { from, chart } => replot_chart(&from, chart),
        Command::Bench(settings) => bench(&settings),
    }
}

/// `--table JSON`: a saved report's rows as the markdown tables of `docs/benchmarks.md`.
fn print_tables(path: &str) -> Result<(), BoxError> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("--table {path}: {e}"))?;
    let report = parse_and_validate(&text).map_err(|e| format!("--table {path}: {e}"))?;
    print!(
        "{}\n{}",
        moment_examples::bench::report::markdown_table(&report),
        moment_examples::bench::report::model_markdown_table(&report)
    );
    Ok(())
}

/// A bench run: the step-time rows, torch's, the model-level rows, then the chart and the
/// report asked for.
fn bench(s: &Settings) -> Result<(), BoxError> {
    moment_optim::fused::set_threads(s.threads);
    let names: Vec<&str> = s.names.iter().map(String::as_str).collect();
    let yardstick = Yardstick {
        backend: s.backend.clone(),
        threads: s.threads,
        reps: if s.quick { 3 } else { 5 },
    };
    print_intro(&s.backend, s.threads);
    let mut rows = step_rows(s, &names, &yardstick)?;
    let torch_skipped = add_torch_rows(s, &names, &yardstick, &mut rows);
    let model_rows = model_rows(s)?;
    let chart = s.chart.clone().or_else(|| {
        s.json.as_ref().map(|j| {
            std::path::Path::new(j)
                .with_extension("png")
                .display()
                .to_string()
        })
    });
    if let Some(path) = chart.as_ref().filter(|_| !rows.is_empty()) {
        draw_chart(&rows, s.threads, path)?;
    }
    if let Some(path) = &s.json {
        let report = Report {
            schema_version: SCHEMA_VERSION,
            host: cpu_model_name(),
            git_rev: git_rev(),
            threads: s.threads,
            quick: s.quick,
            torch_skipped,
            results: rows,
            model_results: model_rows,
        };
        write_report(&report, path)?;
    }
    Ok(())
}

/// What the rows run on and what each is measured against, then the rows' table header.
fn print_intro(backend: &str, threads: usize) {
    match backend {
        "ndarray" | "flex" => println!(
            "{backend} CPU, {threads} threads; each row's bandwidth: its access pattern over the same number of elements, measured right before and after it (the higher)"
        ),
        _ => println!(
            "{backend} device; each row's bandwidth: a device kernel of its access pattern over the same number of elements, right before and after it (the higher)"
        ),
    }
    println!();
    print_header();
}

/// The step-time rows on `--backend` (moment-cuda's kernels enabled on a GPU backend).
fn step_rows(s: &Settings, names: &[&str], yardstick: &Yardstick) -> Result<Vec<Row>, BoxError> {
    let (sizes, reps, filter) = (&s.sizes, s.reps, s.impl_filter.as_str());
    match s.backend.as_str() {
        "flex" => {
            bench_rows::<burn::backend::Flex<f32>>("flex", names, sizes, reps, yardstick, filter)
        }
        #[cfg(feature = "wgpu")]
        "wgpu" => {
            moment_cuda::enable::<moment_cuda::Wgpu>();
            bench_rows::<moment_cuda::Wgpu>("wgpu", names, sizes, reps, yardstick, filter)
        }
        #[cfg(feature = "cuda")]
        "cuda" => {
            moment_cuda::enable::<moment_cuda::Cuda>();
            bench_rows::<moment_cuda::Cuda>("cuda", names, sizes, reps, yardstick, filter)
        }
        _ => bench_rows::<B>("ndarray", names, sizes, reps, yardstick, filter),
    }
}

/// PyTorch's rows of the Adam-family optimizers asked for, when `--impls` lists `torch`,
/// added to `rows`; or why there are none (printed), for the report.
fn add_torch_rows(
    s: &Settings,
    names: &[&str],
    yardstick: &Yardstick,
    rows: &mut Vec<Row>,
) -> Option<String> {
    let torch_device = match s.backend.as_str() {
        "ndarray" | "flex" => Some("cpu"),
        "cuda" => Some("cuda"),
        _ => None,
    };
    let torch_names: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| matches!(*n, "adamw" | "adam"))
        .collect();
    let wants_torch = s.impl_filter.split(',').any(|f| f.trim() == "torch");
    let mut torch_skipped = None;
    if wants_torch && !torch_names.is_empty() {
        torch_skipped = if s.quick {
            Some("--quick runs no torch rows".to_string())
        } else if s.torch_python == "none" {
            Some("--torch none".to_string())
        } else if let Some(device) = torch_device {
            match torch_rows(
                &s.torch_python,
                device,
                &torch_names,
                &s.sizes,
                s.threads,
                s.reps,
                yardstick,
            ) {
                Ok(t) => {
                    rows.extend(t);
                    None
                }
                Err(e) => Some(e.to_string()),
            }
        } else {
            Some(format!("torch has no `{}` device", s.backend))
        };
    }
    if let Some(note) = &torch_skipped {
        println!("\ntorch rows skipped: {note}");
    }
    torch_skipped
}

/// `--model`: a training step of the test model per preset and `--model-optimizers` entry,
/// split into its parts, printed as a markdown table.
fn model_rows(s: &Settings) -> Result<Vec<ModelRow>, BoxError> {
    let mut model_rows: Vec<ModelRow> = Vec::new();
    if s.model == "none" {
        return Ok(model_rows);
    }
    let (batch, seq, model_reps) = (s.batch, s.seq, s.model_reps);
    println!(
        "\nTraining step of the test model ({batch} × {seq} tokens, vocab 256), medians over {model_reps} steps; monitor cost = extra time per step (mean) with per-layer norms every step / every 10th step, as a % of the whole step and × the optimizer step alone:\n"
    );
    println!(
        "| model | params | optimizer | forward ms | backward ms | optimizer ms | tokens/s | monitor every step | monitor interval 10 |"
    );
    println!("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for preset in s.model.split(',').map(str::trim) {
        for opt in s.model_optimizers.split(',').map(str::trim) {
            let r = time_model(preset, opt, batch, seq, model_reps)?;
            print_model_row(&r);
            model_rows.push(r);
        }
    }
    Ok(model_rows)
}

/// One markdown table row of the model-level table.
fn print_model_row(r: &ModelRow) {
    println!(
        "| {} | {} | {} | {:.1} | {:.1} | {:.2} | {:.0} | {:.2} ms ({:.1}%, {:.2}×) | {:.2} ms ({:.1}%, {:.2}×) |",
        r.preset,
        r.params,
        r.optimizer,
        r.forward_ms,
        r.backward_ms,
        r.optimizer_ms,
        r.tokens_per_s,
        r.monitor_every_step_ms,
        r.monitor_every_step_pct,
        r.monitor_every_step_vs_optimizer,
        r.monitor_interval10_ms,
        r.monitor_interval10_pct,
        r.monitor_interval10_vs_optimizer,
    );
}

/// The CPU's model name (`/proc/cpuinfo`), or `unknown`.
fn cpu_model_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// The checkout's short git revision, or empty.
fn git_rev() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// `--json`: the report, written only if it keeps its own schema.
fn write_report(report: &Report, path: &str) -> Result<(), BoxError> {
    let problems = validate(report);
    if !problems.is_empty() {
        return Err(format!(
            "the report breaks its own schema (not written):\n{}",
            problems.join("\n")
        )
        .into());
    }
    std::fs::write(path, serde_json::to_string_pretty(report)?)?;
    println!("\nJSON written to {path}");
    Ok(())
}

/// PyTorch's Adam / AdamW step times from `torch_adamw.py` run by `python` on `device`
/// (`cpu` with `threads` threads, or `cuda`), with the same sizes, warm-up and repetitions,
/// as bench rows (backend `torch-cpu` / `torch-cuda`); each size's yardstick is measured right
/// before and after the script. An error says why there are none.
fn torch_rows(
    python: &str,
    device: &str,
    names: &[&str],
    sizes: &[usize],
    threads: usize,
    reps: usize,
    yardstick: &Yardstick,
) -> Result<Vec<Row>, BoxError> {
    const SCRIPT: &str = include_str!("../../../xtask/gpu/torch_adamw.py");
    let pattern = pattern_of("adamw");
    let before: Vec<f64> = sizes
        .iter()
        .map(|&n| yardstick.measure(n, pattern))
        .collect::<Result<_, _>>()?;
    let dir = std::env::temp_dir().join(format!("moment-bench-torch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let script = dir.join("torch_adamw.py");
    let json = dir.join("torch.json");
    std::fs::write(&script, SCRIPT).map_err(|e| format!("{}: {e}", script.display()))?;
    let sizes_arg: Vec<String> = sizes.iter().map(usize::to_string).collect();
    let out = std::process::Command::new(python)
        .arg(&script)
        .args(["--device", device, "--threads", &threads.to_string()])
        .args(["--warmup", "2", "--reps", &reps.to_string()])
        .args(["--optimizers", &names.join(",")])
        .args(["--sizes", &sizes_arg.join(",")])
        .arg("--json")
        .arg(&json)
        .output()
        .map_err(|e| format!("{python}: {e}"))?;
    let report = std::fs::read_to_string(&json);
    let _ = std::fs::remove_dir_all(&dir);
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().last().unwrap_or("").trim().to_string();
        return Err(format!("{python} {} ({last})", out.status).into());
    }
    let after: Vec<f64> = sizes
        .iter()
        .map(|&n| yardstick.measure(n, pattern))
        .collect::<Result<_, _>>()?;
    let report: serde_json::Value = serde_json::from_str(&report.map_err(|e| e.to_string())?)
        .map_err(|e| format!("torch report: {e}"))?;
    let version = report["torch"].as_str().unwrap_or("?").to_string();
    let mut rows = Vec::new();
    for r in report["results"].as_array().into_iter().flatten() {
        let field = |k: &str| {
            r[k].as_f64()
                .ok_or(format!("torch report: row without `{k}`"))
        };
        let optimizer = r["optimizer"].as_str().unwrap_or("?").to_string();
        let implementation = r["impl"].as_str().unwrap_or("torch").to_string();
        let bytes = row_floor_bytes(&optimizer, &implementation);
        let numel = field("numel")? as usize;
        let median_ms = field("median_ms")?;
        let gbps = effective_gbps(bytes, numel, median_ms / 1e3);
        let at = sizes.iter().position(|&n| n == numel).ok_or(format!(
            "torch report: a row of {numel} elements, a size not asked for"
        ))?;
        let bandwidth = before[at].max(after[at]);
        let row = Row {
            optimizer,
            implementation: format!("{implementation} {version}"),
            backend: format!("torch-{device}"),
            numel,
            reps,
            median_ms,
            min_ms: field("min_ms")?,
            bytes_per_param: bytes,
            gbps,
            bandwidth_gbps: bandwidth,
            pct_of_bandwidth: pct_of(gbps, bandwidth),
            // exp_avg and exp_avg_sq in f32 (the step count is one scalar per tensor)
            state_bytes_per_param: 8.0,
        };
        print_row(&row);
        rows.push(row);
    }
    Ok(rows)
}

fn print_header() {
    println!(
        "| optimizer | impl | numel | median ms | min ms | bytes/param (floor) | GB/s | bandwidth GB/s | % of bandwidth | state B/param |"
    );
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
}

/// One markdown table row.
fn print_row(row: &Row) {
    println!(
        "| {} | {} | {} | {:.2} | {:.2} | {:.0} | {:.1} | {:.1} | {:.0}% | {:.3} |",
        row.optimizer,
        row.implementation,
        row.numel,
        row.median_ms,
        row.min_ms,
        row.bytes_per_param,
        row.gbps,
        row.bandwidth_gbps,
        row.pct_of_bandwidth,
        row.state_bytes_per_param
    );
}

/// How one row's step is run.
enum Impl<Bk: Backend> {
    Moment(Chain<Bk>, Checks),
    Burn,
}

/// The step-time rows of every optimizer, implementation and size on backend `Bk`.
fn bench_rows<Bk: Backend>(
    backend: &str,
    names: &[&str],
    sizes: &[usize],
    reps: usize,
    yardstick: &Yardstick,
    impl_filter: &str,
) -> Result<Vec<Row>, BoxError> {
    let mut rows = Vec::new();
    for &n in sizes {
        for name in names {
            let base = chain::<Bk>(name)?;
            let mut impls: Vec<(&str, Impl<Bk>)> = Vec::new();
            let adam_like = matches!(*name, "adamw" | "adam");
            if base.fused().is_some() {
                impls.push(("moment-fused", Impl::Moment(base.clone(), Checks::Default)));
                impls.push(("moment-inpass", Impl::Moment(base.clone(), Checks::InPass)));
                if adam_like {
                    impls.push((
                        "moment-fused-clip",
                        Impl::Moment(base.clone(), Checks::Clip),
                    ));
                }
            }
            impls.push((
                "moment-composed",
                Impl::Moment(base.composed(), Checks::Default),
            ));
            if adam_like {
                impls.push(("burn-optim", Impl::Burn));
            }
            for (imp, how) in impls {
                if !impl_filter.split(',').any(|f| f.trim() == imp) {
                    continue;
                }
                let bytes = row_floor_bytes(name, imp);
                let ((times, state), bandwidth) =
                    yardstick.around(n, pattern_of(name), || match how {
                        Impl::Moment(c, checks) => {
                            time_moment(c, checks, n, shape_of(name, n), reps)
                        }
                        Impl::Burn => time_burn::<Bk>(name, n, reps)
                            .map(|t| (t, 8.0))
                            .ok_or_else(|| "burn-optim step failed".into()),
                    })?;
                let summary = summarize(&times)?;
                let gbps = effective_gbps(bytes, n, summary.median);
                let row = Row {
                    optimizer: name.to_string(),
                    implementation: imp.to_string(),
                    backend: backend.into(),
                    numel: n,
                    reps: summary.count,
                    median_ms: summary.median * 1e3,
                    min_ms: summary.min * 1e3,
                    bytes_per_param: bytes,
                    gbps,
                    bandwidth_gbps: bandwidth,
                    pct_of_bandwidth: pct_of(gbps, bandwidth),
                    state_bytes_per_param: state,
                };
                print_row(&row);
                rows.push(row);
            }
        }
    }
    Ok(rows)
}
