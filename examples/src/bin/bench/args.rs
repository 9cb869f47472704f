//! The bench's command line: [`parse`] it into a [`Command`]; a bench run's flags become
//! [`Settings`], their defaults, `--optimizers all` and `--quick` applied.

use moment_examples::bench::report::OPTIMIZERS;

use super::BoxError;

/// The optimizers `--optimizers` defaults to, and what `all` stands for.
const ALL_OPTIMIZERS: &str = "adamw,adam,lion,sophia,adafactor,adafactor-matrix,adamw8bit";

/// What the command line asks for.
pub enum Command {
    /// Time the rows, print them, and write the chart and report asked for.
    Bench(Box<Settings>),
    /// `--replot JSON`: redraw a saved report's chart (to `chart`, default its path with `.png`).
    Replot { from: String, chart: Option<String> },
    /// `--validate JSON`: check a saved report against the schema.
    Validate(String),
    /// `--table JSON`: print a saved report's rows as markdown tables.
    Table(String),
}

/// A bench run's settings.
pub struct Settings {
    /// The optimizers, each one of [`OPTIMIZERS`].
    pub names: Vec<String>,
    /// Parameter sizes, in elements.
    pub sizes: Vec<usize>,
    /// Threads of the CPU kernels (and torch's), at least 1.
    pub threads: usize,
    /// Timed steps per row.
    pub reps: usize,
    /// `--json`: where the report goes.
    pub json: Option<String>,
    /// `--chart`: where the chart goes (default: the `--json` path with `.png`).
    pub chart: Option<String>,
    /// `--impls`: the implementations to run, comma-separated.
    pub impl_filter: String,
    /// `--quick`.
    pub quick: bool,
    /// `--backend`, one this binary was built with.
    pub backend: String,
    /// `--model`: model presets, comma-separated, or `none`.
    pub model: String,
    /// `--model-optimizers`, comma-separated.
    pub model_optimizers: String,
    /// `--batch`: sequences per model step.
    pub batch: usize,
    /// `--seq`: tokens per sequence.
    pub seq: usize,
    /// `--model-reps`: timed model steps.
    pub model_reps: usize,
    /// `--torch`: the Python that runs torch's rows, or `none`.
    pub torch_python: String,
}

/// The flags as given (or their defaults), before `all` and `--quick` are applied.
struct Flags {
    optimizers: String,
    sizes: String,
    threads: usize,
    reps: usize,
    json: Option<String>,
    chart: Option<String>,
    replot: Option<String>,
    impl_filter: String,
    quick: bool,
    backend: String,
    model: String,
    model_optimizers: String,
    batch: usize,
    seq: usize,
    model_reps: usize,
    torch_python: String,
}

impl Default for Flags {
    fn default() -> Self {
        Flags {
            optimizers: ALL_OPTIMIZERS.to_string(),
            sizes: "1M,16M".to_string(),
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            reps: 7,
            json: None,
            chart: None,
            replot: None,
            impl_filter:
                "moment-fused,moment-inpass,moment-fused-clip,moment-composed,burn-optim,torch"
                    .to_string(),
            quick: false,
            backend: "ndarray".to_string(),
            model: "tiny".to_string(),
            model_optimizers: "adamw,lion,sophia,adafactor".to_string(),
            batch: 8,
            seq: 128,
            model_reps: 20,
            torch_python: std::env::var("MOMENT_TORCH_PYTHON")
                .unwrap_or_else(|_| "python3".to_string()),
        }
    }
}

/// The command `args` (the program name left out) ask for. `--validate` and `--table` act at
/// once (later arguments are not read); `--replot` after every argument was read.
pub fn parse(mut args: impl Iterator<Item = String>) -> Result<Command, BoxError> {
    let mut f = Flags::default();
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--optimizers" => f.optimizers = value()?,
            "--sizes" => f.sizes = value()?,
            "--threads" => f.threads = value()?.parse()?,
            "--reps" => f.reps = value()?.parse::<usize>()?.max(1),
            "--json" => f.json = Some(value()?),
            "--chart" => f.chart = Some(value()?),
            "--impls" => f.impl_filter = value()?,
            "--model" => f.model = value()?,
            "--model-optimizers" => f.model_optimizers = value()?,
            "--batch" => f.batch = value()?.parse()?,
            "--seq" => f.seq = value()?.parse()?,
            "--model-reps" => f.model_reps = value()?.parse::<usize>()?.max(1),
            "--torch" => f.torch_python = value()?,
            "--backend" => f.backend = built_backend(value()?)?,
            "--quick" => f.quick = true,
            "--replot" => f.replot = Some(value()?),
            "--validate" => return Ok(Command::Validate(value()?)),
            "--table" => return Ok(Command::Table(value()?)),
            other => return Err(format!("unknown argument `{other}`").into()),
        }
    }
    if let Some(from) = f.replot {
        return Ok(Command::Replot {
            from,
            chart: f.chart,
        });
    }
    Ok(Command::Bench(Box::new(f.settings()?)))
}

/// `backend`, if it is one of the bench's and this binary was built with it.
fn built_backend(backend: String) -> Result<String, BoxError> {
    let built = match backend.as_str() {
        "ndarray" | "flex" => true,
        "wgpu" => cfg!(feature = "wgpu"),
        "cuda" => cfg!(feature = "cuda"),
        other => {
            return Err(format!("--backend {other}: expected ndarray, flex, wgpu or cuda").into());
        }
    };
    if !built {
        return Err(format!(
            "--backend {backend}: built without the `{backend}` feature (cargo xtask bench adds it)"
        )
        .into());
    }
    Ok(backend)
}

impl Flags {
    /// The run's settings: `all` expanded, `--quick`'s sizes and repetitions (it overrides
    /// `--sizes`, `--reps`, `--model-optimizers` and `--model-reps`), sizes parsed, optimizer
    /// names checked.
    fn settings(self) -> Result<Settings, BoxError> {
        let optimizers = if self.optimizers == "all" {
            ALL_OPTIMIZERS.to_string()
        } else {
            self.optimizers
        };
        let (sizes, reps, model_optimizers, model_reps) = if self.quick {
            ("1M".to_string(), 3, "adamw".to_string(), 10)
        } else {
            (
                self.sizes,
                self.reps,
                self.model_optimizers,
                self.model_reps,
            )
        };
        let sizes: Vec<usize> = sizes.split(',').map(parse_size).collect::<Result<_, _>>()?;
        let names: Vec<String> = optimizers
            .split(',')
            .map(|n| n.trim().to_string())
            .collect();
        if let Some(bad) = names.iter().find(|n| !OPTIMIZERS.contains(&n.as_str())) {
            return Err(format!(
                "--optimizers: unknown `{bad}` (known: {})",
                OPTIMIZERS.join(", ")
            )
            .into());
        }
        Ok(Settings {
            names,
            sizes,
            threads: self.threads.max(1),
            reps,
            json: self.json,
            chart: self.chart,
            impl_filter: self.impl_filter,
            quick: self.quick,
            backend: self.backend,
            model: self.model,
            model_optimizers,
            batch: self.batch,
            seq: self.seq,
            model_reps,
            torch_python: self.torch_python,
        })
    }
}

/// A size: a count, optionally with `K` (2¹⁰) or `M` (2²⁰).
fn parse_size(s: &str) -> Result<usize, BoxError> {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some('M' | 'm') => (&s[..s.len() - 1], 1usize << 20),
        Some('K' | 'k') => (&s[..s.len() - 1], 1 << 10),
        _ => (s, 1),
    };
    Ok(num.parse::<usize>()? * mult)
}
