//! `cargo xtask bench`: optimizer step time against the machine's measured streaming bandwidth.
//!
//! ```text
//! cargo run --release -p moment-examples --bin bench -- [--optimizers all|LIST] [--sizes 1M,16M]
//!     [--threads N] [--reps N] [--json PATH] [--chart PATH] [--quick] [--impls LIST]
//!     [--model tiny,small|none] [--model-optimizers LIST] [--batch B] [--seq S] [--model-reps N]
//!     [--torch PYTHON|none] [--replot JSON]
//! ```
//!
//! Backends: ndarray (CPU, default), flex (CPU), wgpu and cuda (features `wgpu` / `cuda`,
//! moment-cuda's kernels; the bandwidth is then the device's, measured with a trivial CubeCL
//! kernel of each access pattern, and every step is followed by a device sync). For each optimizer and size: one flat f32 parameter of that size
//! (`adafactor-matrix`: a `[n/1024, 1024]` matrix, which Adafactor factors),
//! random gradients, `reps` timed steps after two warm-up steps; median and minimum step time,
//! the bytes the algorithm must move per parameter (its floor), effective GB/s
//! (`bytes · n / median`), that as a % of the bandwidth measured in the same run with a kernel of
//! the same access pattern, and the state bytes per parameter from the accounting API.
//! Implementations: `moment-fused` (one pass, where the chain has one; the engine's default
//! checks: every gradient is scanned before the step), `moment-inpass` (the same with
//! `NonFinitePolicy::Propagate` and `GradientScan::InPass`: the gradient is measured inside
//! the fused pass and read once, as PyTorch's unchecked step reads it), `moment-composed`
//! (the chain's tensor ops) and `burn-optim` (burn's own AdamW / Adam, where burn has it).
//! PyTorch's `AdamW` / `Adam` (`torch-fused`, `torch-foreach`) run in the same process tree
//! through `xtask/gpu/torch_adamw.py` (embedded in this binary) when `--torch PYTHON` (default
//! `python3`, or `$MOMENT_TORCH_PYTHON`) can import torch and `--impls` lists `torch` (default) — on the CPU with the same thread
//! count, or on the card with `--backend cuda`; otherwise the run says why and goes on.
//! Model level (`--model`, default `tiny`): a training step of the test transformer split into
//! forward, backward, optimizer and monitor time per optimizer ([`moment_examples::model_bench`]).
//! `--chart` (default: the `--json` path with `.png`) draws each implementation's % of the
//! measured bandwidth at the largest size; `--replot JSON` redraws it from a saved report.
//! Schema of `--json`: `docs/benchmarks.md`.

use std::process::ExitCode;
use std::time::Instant;

use burn::backend::{Autodiff, NdArray};
use burn::module::Param;
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use moment_examples::model_bench::{ModelRow, time_model};
use moment_monitor::plot::{Bar, bar_chart};
use moment_optim::{
    AdafactorConfig, Adam8bitConfig, AdamWConfig, Chain, GradientScan, LionConfig, MomentOptimizer,
    NonFinitePolicy, ParamGroup, ParamTensor, Selector, SophiaConfig,
};
use serde::{Deserialize, Serialize};

type B = NdArray<f32>;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One result row (`--json` `results[]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Row {
    optimizer: String,
    #[serde(rename = "impl")]
    implementation: String,
    backend: String,
    numel: usize,
    median_ms: f64,
    min_ms: f64,
    bytes_per_param: f64,
    gbps: f64,
    pct_of_bandwidth: f64,
    state_bytes_per_param: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    host: String,
    git_rev: String,
    threads: usize,
    /// Per pattern, the higher of the measurements (the % column's reference).
    bandwidth_gbps: Vec<(String, f64)>,
    /// Per pattern, every measurement of the run in order (before the rows, after them).
    bandwidth_samples_gbps: Vec<(String, Vec<f64>)>,
    results: Vec<Row>,
    model_results: Vec<ModelRow>,
}

/// Streams read and written per element by an optimizer's minimal one-pass step (f32).
fn pattern(optimizer: &str) -> (usize, usize) {
    match optimizer {
        // p, g, m, v read; p, m, v written
        "adamw" | "adam" => (4, 3),
        // p, g, m read; p, m written
        "lion" => (3, 2),
        // p, g, m, h read; p, m written
        "sophia" => (4, 2),
        // The bench's parameter is a vector, which Adafactor does not factor: p, g, v read;
        // p, v written (a matrix would keep O(rows + cols) statistics: p, g read, p written)
        "adafactor" => (3, 2),
        // `adafactor-matrix`: a [n/1024, 1024] matrix, factored: p, g read, p written (the
        // row/column statistics are O(rows + cols))
        "adafactor-matrix" => (2, 1),
        // p, g read, p written; the two u8 codes (¼ stream each) are not modelled
        "adamw8bit" => (2, 1),
        _ => (2, 1),
    }
}

/// Bytes per parameter the optimizer's minimal pass moves.
fn floor_bytes(optimizer: &str) -> f64 {
    match optimizer {
        "adamw8bit" => 4.0 * 3.0 + 4.0, // p r/w, g r, 2 codes r/w
        _ => {
            let (r, w) = pattern(optimizer);
            4.0 * (r + w) as f64
        }
    }
}

fn chain<Bk: Backend>(name: &str) -> Result<Chain<Bk>, Box<dyn std::error::Error>> {
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

fn parse_size(s: &str) -> Result<usize, Box<dyn std::error::Error>> {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some('M' | 'm') => (&s[..s.len() - 1], 1usize << 20),
        Some('K' | 'k') => (&s[..s.len() - 1], 1 << 10),
        _ => (s, 1),
    };
    Ok(num.parse::<usize>()? * mult)
}

fn stats(mut times: Vec<f64>) -> (f64, f64) {
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], times[0])
}

/// Streaming bandwidth (GB/s) with `reads` read and `writes` written f32 streams of `n`
/// elements each (the written streams are among the read ones, as in an optimizer step),
/// split over `threads` scoped threads; median of `reps`. Each pattern has its own plain loop
/// over zipped slices (vectorizable, trivial arithmetic).
fn bandwidth(n: usize, reads: usize, writes: usize, threads: usize, reps: usize) -> f64 {
    // (0, 1) = copy (dst ← src), (0, 2) = triad (a ← b + s·c): destinations write-only.
    let buffers = match (reads, writes) {
        (0, w) => w + 1,
        (r, _) => r,
    };
    // Backed like moment's step backs its state (huge pages where the OS gives them), so the
    // % in the table compares like with like.
    let mut bufs: Vec<Vec<f32>> = (0..buffers)
        .map(|i| {
            let mut b = Vec::with_capacity(n);
            moment_optim::fused::advise_huge_pages(b.spare_capacity_mut());
            b.resize(n, 1.0 + i as f32 * 1e-3);
            b
        })
        .collect();
    let chunk = n.div_ceil(threads);
    let mut times = Vec::new();
    for _ in 0..reps + 1 {
        let t0 = Instant::now();
        let mut per_thread: Vec<Vec<&mut [f32]>> = (0..threads).map(|_| Vec::new()).collect();
        for b in bufs.iter_mut() {
            for (t, c) in b.chunks_mut(chunk).enumerate() {
                per_thread[t].push(c);
            }
        }
        std::thread::scope(|s| {
            for mut st in per_thread {
                s.spawn(move || stream_best(&mut st, reads, writes));
            }
        });
        times.push(t0.elapsed().as_secs_f64());
    }
    times.remove(0);
    let (median, _) = stats(times);
    // copy and triad write a stream they do not read
    let streams = match (reads, writes) {
        (0, 1) => 2,
        (0, 2) => 3,
        (r, w) => r + w,
    };
    (streams * 4 * n) as f64 / median / 1e9
}

/// [`stream_kernel`] at the SIMD level moment's fused kernels run at ([`moment_optim::simd_level`]; a baseline
/// SSE2 build of the same loops reaches ~30% less on an AVX-512 machine: fewer loads in
/// flight, so a bandwidth measured that way would flatter every % in the table).
fn stream_best(st: &mut [&mut [f32]], reads: usize, writes: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        fn avx512(st: &mut [&mut [f32]], reads: usize, writes: usize) {
            stream_kernel(st, reads, writes)
        }
        #[target_feature(enable = "avx2")]
        fn avx2(st: &mut [&mut [f32]], reads: usize, writes: usize) {
            stream_kernel(st, reads, writes)
        }
        // The level the optimizer kernels use (`MOMENT_SIMD` caps both alike).
        match moment_optim::simd_level() {
            // SAFETY: `simd_level` never exceeds what the CPU has, here AVX-512F.
            #[allow(unsafe_code)]
            moment_optim::SimdLevel::Avx512 => return unsafe { avx512(st, reads, writes) },
            // SAFETY: as above, for AVX2.
            #[allow(unsafe_code)]
            moment_optim::SimdLevel::Avx2 => return unsafe { avx2(st, reads, writes) },
            moment_optim::SimdLevel::Baseline => {}
        }
    }
    stream_kernel(st, reads, writes)
}

/// One pattern's loop (see [`bandwidth`]).
#[inline(always)]
fn stream_kernel(st: &mut [&mut [f32]], reads: usize, writes: usize) {
    match (reads, writes) {
        (0, 1) => {
            let [a, b] = st else { return };
            a.copy_from_slice(b);
        }
        (0, 2) => {
            let [a, b, c] = st else { return };
            for ((a, b), c) in a.iter_mut().zip(b.iter()).zip(c.iter()) {
                *a = *b + 0.5 * *c;
            }
        }
        (2, 1) => {
            let [p, g] = st else { return };
            for (p, g) in p.iter_mut().zip(g.iter()) {
                *p -= 0.01 * *g;
            }
        }
        (3, 2) => {
            let [p, g, m] = st else { return };
            for ((p, g), m) in p.iter_mut().zip(g.iter()).zip(m.iter_mut()) {
                *m = 0.9 * *m + *g;
                *p -= 0.01 * *m;
            }
        }
        (4, 2) => {
            let [p, g, m, h] = st else { return };
            for (((p, g), m), h) in p.iter_mut().zip(g.iter()).zip(m.iter_mut()).zip(h.iter()) {
                *m = 0.9 * *m + *g;
                *p -= 0.01 * *m * *h;
            }
        }
        (4, 3) => {
            let [p, g, m, v] = st else { return };
            for (((p, g), m), v) in p
                .iter_mut()
                .zip(g.iter())
                .zip(m.iter_mut())
                .zip(v.iter_mut())
            {
                *m = 0.9 * *m + *g;
                *v = 0.99 * *v + *g;
                *p -= 0.01 * (*m + *v);
            }
        }
        _ => {
            for s in st.iter_mut().take(writes) {
                for x in s.iter_mut() {
                    *x *= 0.5;
                }
            }
        }
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

fn time_moment<Bk: Backend>(
    chain: Chain<Bk>,
    scan: GradientScan,
    n: usize,
    shape: Vec<usize>,
    reps: usize,
) -> Result<(Vec<f64>, f64), Box<dyn std::error::Error>> {
    let device = Default::default();
    let mut opt = match scan {
        GradientScan::BeforeStep => MomentOptimizer::new(chain),
        GradientScan::InPass => MomentOptimizer::builder()
            .group(ParamGroup::new("all", Selector::All, chain))
            .non_finite(NonFinitePolicy::Propagate)
            .gradient_scan(scan)
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
        params[0].grad = Some(grads[step % grads.len()].clone());
        let t0 = Instant::now();
        opt.step(1e-3, &mut params)?;
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
fn draw_chart(rows: &[Row], threads: usize, path: &str) -> Result<(), Box<dyn std::error::Error>> {
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
fn replot_chart(from: &str, chart: Option<String>) -> Result<(), Box<dyn std::error::Error>> {
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

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut optimizers = "adamw,adam,lion,sophia,adafactor,adafactor-matrix,adamw8bit".to_string();
    let mut sizes = "1M,16M".to_string();
    let mut threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut reps = 7usize;
    let mut json: Option<String> = None;
    let mut chart: Option<String> = None;
    let mut replot: Option<String> = None;
    let mut impl_filter = "moment-fused,moment-inpass,moment-composed,burn-optim,torch".to_string();
    let mut quick = false;
    let mut backend = "ndarray".to_string();
    let mut model = "tiny".to_string();
    let mut model_optimizers = "adamw,lion,sophia,adafactor".to_string();
    let (mut batch, mut seq, mut model_reps) = (8usize, 128usize, 20usize);
    let mut torch_python =
        std::env::var("MOMENT_TORCH_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--optimizers" => optimizers = value()?,
            "--sizes" => sizes = value()?,
            "--threads" => threads = value()?.parse()?,
            "--reps" => reps = value()?.parse::<usize>()?.max(1),
            "--json" => json = Some(value()?),
            "--chart" => chart = Some(value()?),
            "--impls" => impl_filter = value()?,
            "--model" => model = value()?,
            "--model-optimizers" => model_optimizers = value()?,
            "--batch" => batch = value()?.parse()?,
            "--seq" => seq = value()?.parse()?,
            "--model-reps" => model_reps = value()?.parse::<usize>()?.max(1),
            "--torch" => torch_python = value()?,
            "--backend" => {
                backend = value()?;
                let built = match backend.as_str() {
                    "ndarray" | "flex" => true,
                    "wgpu" => cfg!(feature = "wgpu"),
                    "cuda" => cfg!(feature = "cuda"),
                    other => {
                        return Err(format!(
                            "--backend {other}: expected ndarray, flex, wgpu or cuda"
                        )
                        .into());
                    }
                };
                if !built {
                    return Err(format!(
                        "--backend {backend}: built without the `{backend}` feature (cargo xtask bench adds it)"
                    )
                    .into());
                }
            }
            "--quick" => quick = true,
            "--replot" => replot = Some(value()?),
            other => return Err(format!("unknown argument `{other}`").into()),
        }
    }
    if let Some(from) = replot {
        return replot_chart(&from, chart);
    }
    if optimizers == "all" {
        optimizers = "adamw,adam,lion,sophia,adafactor,adafactor-matrix,adamw8bit".into();
    }
    if quick {
        sizes = "1M".into();
        reps = 3;
        model_optimizers = "adamw".into();
        model_reps = 10;
    }
    let threads = threads.max(1);
    moment_optim::fused::set_threads(threads);
    let sizes: Vec<usize> = sizes.split(',').map(parse_size).collect::<Result<_, _>>()?;
    let names: Vec<&str> = optimizers.split(',').map(str::trim).collect();

    // Bandwidth, over buffers far larger than the caches (≥ 16M f32 = 64 MiB per stream).
    let bw_n = if quick { 1 << 22 } else { 1 << 24 };
    let mut patterns: Vec<(usize, usize)> = vec![(0, 1), (0, 2)];
    for n in &names {
        let p = pattern(n);
        if !patterns.contains(&p) {
            patterns.push(p);
        }
    }
    let bw_reps = if quick { 2 } else { 5 };
    let measure_bw = || -> Result<Vec<((usize, usize), f64)>, String> {
        patterns
            .iter()
            .map(|&(r, w)| {
                let gbps = match backend.as_str() {
                    #[cfg(feature = "wgpu")]
                    "wgpu" => moment_cuda::stream_gbps::<moment_cuda::Wgpu>(
                        &Default::default(),
                        bw_n,
                        r,
                        w,
                        bw_reps,
                    )?,
                    // 64M f32 per stream: far beyond a GPU's L2.
                    #[cfg(feature = "cuda")]
                    "cuda" => moment_cuda::stream_gbps::<moment_cuda::Cuda>(
                        &Default::default(),
                        bw_n.max(1 << 26),
                        r,
                        w,
                        bw_reps,
                    )?,
                    _ => bandwidth(bw_n, r, w, threads, bw_reps),
                };
                Ok(((r, w), gbps))
            })
            .collect::<Result<_, String>>()
    };
    let bw_start = measure_bw()?;
    let bw = bw_start.clone();
    let label = |(r, w): (usize, usize)| match (r, w) {
        (0, 1) => "copy (1R 1W)".to_string(),
        (0, 2) => "triad (2R 1W)".to_string(),
        (r, w) => format!("{r}R {w}W (optimizer pattern)"),
    };
    match backend.as_str() {
        "ndarray" | "flex" => println!(
            "{backend} CPU, {threads} threads; streaming bandwidth ({bw_n} f32 per stream):"
        ),
        _ => println!("{backend} device; streaming bandwidth (device kernels):"),
    }
    for (p, g) in &bw {
        println!("  {:<20} {g:6.1} GB/s", label(*p));
    }
    println!();
    println!(
        "| optimizer | impl | numel | median ms | min ms | bytes/param (floor) | GB/s | % of bandwidth | state B/param |"
    );
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let mut rows = match backend.as_str() {
        "flex" => {
            bench_rows::<burn::backend::Flex<f32>>("flex", &names, &sizes, reps, &bw, &impl_filter)?
        }
        #[cfg(feature = "wgpu")]
        "wgpu" => {
            moment_cuda::enable::<moment_cuda::Wgpu>();
            bench_rows::<moment_cuda::Wgpu>("wgpu", &names, &sizes, reps, &bw, &impl_filter)?
        }
        #[cfg(feature = "cuda")]
        "cuda" => {
            moment_cuda::enable::<moment_cuda::Cuda>();
            bench_rows::<moment_cuda::Cuda>("cuda", &names, &sizes, reps, &bw, &impl_filter)?
        }
        _ => bench_rows::<B>("ndarray", &names, &sizes, reps, &bw, &impl_filter)?,
    };
    let torch_device = match backend.as_str() {
        "ndarray" | "flex" => Some("cpu"),
        "cuda" => Some("cuda"),
        _ => None,
    };
    let torch_names: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| matches!(*n, "adamw" | "adam"))
        .collect();
    let wants_torch = impl_filter.split(',').any(|f| f.trim() == "torch");
    let mut torch_note = None;
    if let Some(device) = torch_device
        && !torch_names.is_empty()
        && !quick
        && torch_python != "none"
        && wants_torch
    {
        match torch_rows(
            &torch_python,
            device,
            &torch_names,
            &sizes,
            threads,
            reps,
            &bw,
        ) {
            Ok(t) => rows.extend(t),
            Err(e) => torch_note = Some(e),
        }
    }
    if let Some(note) = &torch_note {
        println!("\ntorch rows skipped: {note}");
    }
    // The bandwidth again after the rows: this class of machine drifts by tens of % within
    // minutes, and a low first figure would flatter every %. The higher of the two is the
    // reference; the table is printed again against it.
    let bw_end = if quick { Vec::new() } else { measure_bw()? };
    let bw: Vec<((usize, usize), f64)> = bw_start
        .iter()
        .map(|&(p, g)| {
            let end = bw_end.iter().find(|(q, _)| *q == p).map_or(g, |(_, e)| *e);
            (p, g.max(end))
        })
        .collect();
    if !bw_end.is_empty() {
        println!(
            "\nStreaming bandwidth again after the rows (the % below uses the higher figure):"
        );
        for ((p, g), (_, e)) in bw_start.iter().zip(&bw_end) {
            println!("  {:<20} {e:6.1} GB/s (before: {g:.1})", label(*p));
        }
        println!();
        println!(
            "| optimizer | impl | numel | median ms | min ms | bytes/param (floor) | GB/s | % of bandwidth | state B/param |"
        );
        println!("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
        for r in rows.iter_mut() {
            let reference = bw
                .iter()
                .find(|(p, _)| *p == pattern(&r.optimizer))
                .map_or(f64::NAN, |(_, g)| *g);
            r.pct_of_bandwidth = 100.0 * r.gbps / reference;
            print_row(r);
        }
    }
    let mut model_rows = Vec::new();
    if model != "none" {
        println!(
            "\nTraining step of the test model ({batch} × {seq} tokens, vocab 256), medians over {model_reps} steps; monitor cost = extra time per step (mean) with per-layer norms every step / every 10th step:\n"
        );
        println!(
            "| model | params | optimizer | forward ms | backward ms | optimizer ms | tokens/s | monitor every step | monitor interval 10 |"
        );
        println!("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |");
        for preset in model.split(',').map(str::trim) {
            for opt in model_optimizers.split(',').map(str::trim) {
                let r = time_model(preset, opt, batch, seq, model_reps)?;
                println!(
                    "| {} | {} | {} | {:.1} | {:.1} | {:.2} | {:.0} | {:.2} ms ({:.1}%) | {:.2} ms ({:.1}%) |",
                    r.preset,
                    r.params,
                    r.optimizer,
                    r.forward_ms,
                    r.backward_ms,
                    r.optimizer_ms,
                    r.tokens_per_s,
                    r.monitor_every_step_ms,
                    r.monitor_every_step_pct,
                    r.monitor_interval10_ms,
                    r.monitor_interval10_pct
                );
                model_rows.push(r);
            }
        }
    }
    let chart = chart.or_else(|| {
        json.as_ref().map(|j| {
            std::path::Path::new(j)
                .with_extension("png")
                .display()
                .to_string()
        })
    });
    if let Some(path) = chart.as_ref().filter(|_| !rows.is_empty()) {
        draw_chart(&rows, threads, path)?;
    }
    if let Some(path) = json {
        let report = Report {
            host: std::fs::read_to_string("/proc/cpuinfo")
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find(|l| l.starts_with("model name"))
                        .and_then(|l| l.split(':').nth(1))
                        .map(|s| s.trim().to_string())
                })
                .unwrap_or_else(|| "unknown".into()),
            git_rev: std::process::Command::new("git")
                .args(["rev-parse", "--short", "HEAD"])
                .output()
                .ok()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .unwrap_or_default(),
            threads,
            bandwidth_gbps: bw.iter().map(|(p, g)| (label(*p), *g)).collect(),
            bandwidth_samples_gbps: bw_start
                .iter()
                .map(|(p, g)| {
                    let mut all = vec![*g];
                    all.extend(bw_end.iter().filter(|(q, _)| q == p).map(|(_, e)| *e));
                    (label(*p), all)
                })
                .collect(),
            results: rows,
            model_results: model_rows,
        };
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
        println!("\nJSON written to {path}");
    }
    Ok(())
}

/// PyTorch's Adam / AdamW step times from `torch_adamw.py` run by `python` on `device`
/// (`cpu` with `threads` threads, or `cuda`), with the same sizes, warm-up and repetitions,
/// as bench rows (backend `torch-cpu` / `torch-cuda`). An error says why there are none.
fn torch_rows(
    python: &str,
    device: &str,
    names: &[&str],
    sizes: &[usize],
    threads: usize,
    reps: usize,
    bw: &[((usize, usize), f64)],
) -> Result<Vec<Row>, String> {
    const SCRIPT: &str = include_str!("../../../xtask/gpu/torch_adamw.py");
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
        return Err(format!("{python} {} ({last})", out.status));
    }
    let report: serde_json::Value = serde_json::from_str(&report.map_err(|e| e.to_string())?)
        .map_err(|e| format!("torch report: {e}"))?;
    let version = report["torch"].as_str().unwrap_or("?").to_string();
    let bw_of = bw
        .iter()
        .find(|(p, _)| *p == pattern("adamw"))
        .map_or(f64::NAN, |(_, g)| *g);
    let mut rows = Vec::new();
    for r in report["results"].as_array().into_iter().flatten() {
        let field = |k: &str| {
            r[k].as_f64()
                .ok_or(format!("torch report: row without `{k}`"))
        };
        let bytes = floor_bytes("adamw");
        let numel = field("numel")? as usize;
        let median_ms = field("median_ms")?;
        let gbps = bytes * numel as f64 / (median_ms / 1e3) / 1e9;
        let row = Row {
            optimizer: r["optimizer"].as_str().unwrap_or("?").to_string(),
            implementation: format!("{} {version}", r["impl"].as_str().unwrap_or("torch")),
            backend: format!("torch-{device}"),
            numel,
            median_ms,
            min_ms: field("min_ms")?,
            bytes_per_param: bytes,
            gbps,
            pct_of_bandwidth: 100.0 * gbps / bw_of,
            // exp_avg and exp_avg_sq in f32 (the step count is one scalar per tensor)
            state_bytes_per_param: 8.0,
        };
        print_row(&row);
        rows.push(row);
    }
    Ok(rows)
}

/// One markdown table row.
fn print_row(row: &Row) {
    println!(
        "| {} | {} | {} | {:.2} | {:.2} | {:.0} | {:.1} | {:.0}% | {:.3} |",
        row.optimizer,
        row.implementation,
        row.numel,
        row.median_ms,
        row.min_ms,
        row.bytes_per_param,
        row.gbps,
        row.pct_of_bandwidth,
        row.state_bytes_per_param
    );
}

/// The step-time rows of every optimizer, implementation and size on backend `Bk`.
#[allow(clippy::type_complexity)]
fn bench_rows<Bk: Backend>(
    backend: &str,
    names: &[&str],
    sizes: &[usize],
    reps: usize,
    bw: &[((usize, usize), f64)],
    impl_filter: &str,
) -> Result<Vec<Row>, Box<dyn std::error::Error>> {
    let mut rows = Vec::new();
    for &n in sizes {
        for name in names {
            let bytes = floor_bytes(name);
            let bw_of = bw
                .iter()
                .find(|(p, _)| *p == pattern(name))
                .map_or(f64::NAN, |(_, g)| *g);
            let base = chain::<Bk>(name)?;
            let mut impls: Vec<(&str, Option<(Chain<Bk>, GradientScan)>)> = Vec::new();
            if base.fused().is_some() {
                impls.push((
                    "moment-fused",
                    Some((base.clone(), GradientScan::BeforeStep)),
                ));
                impls.push(("moment-inpass", Some((base.clone(), GradientScan::InPass))));
            }
            impls.push((
                "moment-composed",
                Some((base.composed(), GradientScan::BeforeStep)),
            ));
            if matches!(*name, "adamw" | "adam") {
                impls.push(("burn-optim", None));
            }
            for (imp, ch) in impls {
                if !impl_filter.split(',').any(|f| f.trim() == imp) {
                    continue;
                }
                let (times, state) = match ch {
                    Some((c, scan)) => time_moment(c, scan, n, shape_of(name, n), reps)?,
                    None => match time_burn::<Bk>(name, n, reps) {
                        Some(t) => (t, 8.0),
                        None => continue,
                    },
                };
                let (median, min) = stats(times);
                let gbps = bytes * n as f64 / median / 1e9;
                let row = Row {
                    optimizer: name.to_string(),
                    implementation: imp.to_string(),
                    backend: backend.into(),
                    numel: n,
                    median_ms: median * 1e3,
                    min_ms: min * 1e3,
                    bytes_per_param: bytes,
                    gbps,
                    pct_of_bandwidth: 100.0 * gbps / bw_of,
                    state_bytes_per_param: state,
                };
                print_row(&row);
                rows.push(row);
            }
        }
    }
    Ok(rows)
}
