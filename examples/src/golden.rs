//! The reference-case runner behind `cargo xtask golden`.
//!
//! Reads every `*.json` case of a directory (format: `testdata/reference/FORMAT.md`), builds the
//! optimizer from `reference.class` + `reference_args` through [`moment_optim::port`], replays
//! the recorded gradients and compares every step's parameters, and the final state where
//! moment keeps the same quantity, at the case's own tolerance. Cases whose class or protocol
//! moment does not implement are `UNSUPPORTED`, never `PASS`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use burn::backend::NdArray;
use burn::tensor::backend::Backend;
use moment_optim::port::{ArgValue, PortOptions, RefArgs, from_reference_with};
use moment_optim::{Chain, OptimError};
use serde_json::Value;

mod differences;
mod replay;
pub use differences::{DIFFERENCES, Difference};
use replay::Replay;

/// The project's copy of the reference cases.
pub fn default_cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/reference/cases")
}

/// The hyper-parameter sweep's cases (`testdata/reference/sweep/`: settings drawn at random
/// from each family's valid range, recorded by its `record.py`).
pub fn sweep_cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/reference/sweep/cases")
}

/// What `golden` runs when no `--dir` is given: the reference cases, then the sweep.
pub fn default_case_dirs() -> Vec<PathBuf> {
    vec![default_cases_dir(), sweep_cases_dir()]
}

/// Outcome of one case.
#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    /// Every step and the comparable final state are within tolerance.
    Pass,
    /// A value is out of tolerance, or the case could not be read.
    Fail(String),
    /// moment does not implement this class or protocol yet.
    Unsupported(String),
    /// moment differs from the reference here on purpose: the case failed (or was refused)
    /// within a documented [`Difference`], whose reason this holds, followed by the failure.
    Differs(String),
}

/// One case's result.
#[derive(Debug, Clone)]
pub struct CaseResult {
    /// Case id (file stem when the file cannot be read).
    pub id: String,
    /// Family label (`optimizer` field).
    pub family: String,
    /// Outcome.
    pub status: Status,
    /// Largest |actual − expected| over all compared parameters and steps.
    pub max_abs: f64,
    /// Largest |actual − expected| / |expected| over elements with expected ≠ 0.
    pub max_rel: f64,
    /// Largest error as a fraction of the allowed error (≤ 1 passes).
    pub worst_ratio: f64,
    /// Final-state tensors compared.
    pub state_compared: usize,
    /// 8-bit state codes compared with the reference's: all must agree in the CPU-path mode,
    /// at least [`CUDA_MODE_CODE_AGREEMENT`] of them in the default (CUDA-kernel) mode.
    pub codes_total: u64,
    /// Of those, codes equal to the reference's.
    pub codes_equal: u64,
    /// Largest |actual − expected| / |expected| over the 8-bit block max-abs state
    /// (`absmax*`), if the case records any (an expected 0 counts as 0 when matched exactly,
    /// as infinite otherwise). Bounded by [`ABSMAX_RTOL`] in the CPU-path mode.
    pub absmax_max_rel: Option<f64>,
}

impl CaseResult {
    /// Fraction of 8-bit codes equal to the reference's, if the case records any.
    pub fn code_agreement(&self) -> Option<f64> {
        (self.codes_total > 0).then(|| self.codes_equal as f64 / self.codes_total as f64)
    }
}

/// How to run cases: choices the reference config cannot express.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Passed to [`moment_optim::port::from_reference_with`] (e.g. which bitsandbytes code path).
    pub port: PortOptions,
    /// The backend the optimizer runs on (default ndarray; wgpu and cuda with their features,
    /// moment-cuda's fused kernels enabled).
    pub backend: crate::compare::BackendKind,
}

impl fmt::Display for CaseResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tag = match &self.status {
            Status::Pass => "PASS",
            Status::Fail(_) => "FAIL",
            Status::Unsupported(_) => "UNSUPPORTED",
            Status::Differs(_) => "DIFFERS",
        };
        write!(
            f,
            "{tag} {} max_abs={:.3e} max_rel={:.3e} tol_ratio={:.3}",
            self.id, self.max_abs, self.max_rel, self.worst_ratio
        )?;
        if let Some(a) = self.code_agreement() {
            write!(f, " codes_agree={:.2}%", 100.0 * a)?;
        }
        if let Some(r) = self.absmax_max_rel {
            write!(f, " absmax_rel={r:.3e}")?;
        }
        match &self.status {
            Status::Pass => write!(f, " state_tensors={}", self.state_compared),
            Status::Fail(why) | Status::Unsupported(why) | Status::Differs(why) => {
                write!(f, " ({why})")
            }
        }
    }
}

/// Run-wide summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Passed cases.
    pub passed: usize,
    /// Failed cases.
    pub failed: usize,
    /// Unsupported cases.
    pub unsupported: usize,
    /// Cases that differ within a documented [`Difference`].
    pub differs: usize,
}

impl Summary {
    /// Count one result.
    pub fn add(&mut self, status: &Status) {
        match status {
            Status::Pass => self.passed += 1,
            Status::Fail(_) => self.failed += 1,
            Status::Unsupported(_) => self.unsupported += 1,
            Status::Differs(_) => self.differs += 1,
        }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "golden: {} passed, {} failed, {} unsupported, {} documented differences",
            self.passed, self.failed, self.unsupported, self.differs
        )
    }
}

/// Run every `*.json` in `dir` (sorted by name) whose family is in `families` (all when empty).
pub fn run_dir(dir: &Path, families: &[String]) -> std::io::Result<(Vec<CaseResult>, Summary)> {
    run_dir_with(dir, families, &RunOptions::default())
}

/// [`run_dir`] with explicit [`RunOptions`].
pub fn run_dir_with(
    dir: &Path,
    families: &[String],
    options: &RunOptions,
) -> std::io::Result<(Vec<CaseResult>, Summary)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let mut results = Vec::new();
    let mut summary = Summary::default();
    for file in files {
        // Cases of other families are skipped unread beyond their family; a file whose family
        // cannot be read is run (and reported) whatever the filter.
        if !families.is_empty() && family_of(&file).is_some_and(|f| !families.contains(&f)) {
            continue;
        }
        let r = run_file_with(&file, options);
        summary.add(&r.status);
        results.push(r);
    }
    Ok((results, summary))
}

/// The `optimizer` field of a case file, if it can be read.
fn family_of(file: &Path) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    let case: Value = serde_json::from_str(&text).ok()?;
    case.get("optimizer")?.as_str().map(str::to_string)
}

/// Run one case file.
pub fn run_file(file: &Path) -> CaseResult {
    run_file_with(file, &RunOptions::default())
}

/// [`run_file`] with explicit [`RunOptions`].
pub fn run_file_with(file: &Path, options: &RunOptions) -> CaseResult {
    let stem = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut result = CaseResult {
        id: stem,
        family: String::new(),
        status: Status::Pass,
        max_abs: 0.0,
        max_rel: 0.0,
        worst_ratio: 0.0,
        state_compared: 0,
        codes_total: 0,
        codes_equal: 0,
        absmax_max_rel: None,
    };
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            result.status = Status::Fail(format!("cannot read {}: {e}", file.display()));
            return result;
        }
    };
    let case: Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            result.status = Status::Fail(format!("not valid JSON: {e}"));
            return result;
        }
    };
    if let Some(id) = case.get("id").and_then(Value::as_str) {
        result.id = id.to_string();
    }
    if let Some(f) = case.get("optimizer").and_then(Value::as_str) {
        result.family = f.to_string();
    }
    if result.family.is_empty() {
        result.status = Status::Fail(format!(
            "{}: malformed case: no `optimizer` family",
            file.display()
        ));
        return result;
    }
    let difference = DIFFERENCES.iter().find(|d| (d.applies)(&case, options));
    let outcome = match run_case(&case, options, difference.is_some(), &mut result) {
        // A broken case is never explained by a difference.
        Err(CaseError::Fail(m)) if m.starts_with("malformed") => {
            result.status = Status::Fail(format!("{}: {m}", file.display()));
            return result;
        }
        other => other,
    };
    // Only a tolerance mismatch (finite, within the bound) or the named refusal can be
    // explained by a difference; any other failure stays a failure.
    result.status = match (outcome, difference) {
        (Ok(()), _) => Status::Pass,
        (Err(CaseError::Tolerance(m)), Some(d)) if result.worst_ratio <= d.max_ratio => {
            Status::Differs(format!("{} ({}); {m}", d.reason, d.documented))
        }
        (Err(CaseError::Tolerance(m)), Some(d)) => Status::Fail(format!(
            "{m}; beyond the documented difference's bound ({:.3} > {} of the tolerance: {})",
            result.worst_ratio, d.max_ratio, d.reason
        )),
        (Err(CaseError::Unsupported(m)), Some(d)) if d.refusal.is_some_and(|r| m.contains(r)) => {
            Status::Differs(format!("{} ({}); {m}", d.reason, d.documented))
        }
        (Err(CaseError::Tolerance(m) | CaseError::Fail(m)), _) => Status::Fail(m),
        (Err(CaseError::Unsupported(m)), _) => Status::Unsupported(m),
    };
    result
}

/// A case that compares nothing must not pass: it needs parameters, steps, and a final state
/// with at least one entry for every parameter it names. Checked before anything is built.
fn check_compares_something(case: &Value) -> Result<(), CaseError> {
    let non_empty = |key: &str| {
        case.get(key).is_some_and(|v| match v {
            Value::Array(a) => !a.is_empty(),
            Value::Object(o) => !o.is_empty(),
            _ => false,
        })
    };
    for (key, what) in [
        ("params", "no params"),
        ("steps", "no steps"),
        ("final_state", "no final_state"),
    ] {
        if !non_empty(key) {
            return Err(malformed(what));
        }
    }
    let empty_entry = case["final_state"].as_object().and_then(|fs| {
        fs.iter()
            .find(|(_, v)| v.as_object().is_none_or(|o| o.is_empty()))
    });
    if let Some((name, _)) = empty_entry {
        return Err(malformed(&format!(
            "final_state entry `{name}` holds nothing"
        )));
    }
    Ok(())
}

enum CaseError {
    /// Values out of tolerance (finite): the only failure a [`Difference`] can explain.
    Tolerance(String),
    Fail(String),
    Unsupported(String),
}

fn malformed(what: &str) -> CaseError {
    CaseError::Fail(format!("malformed case: {what}"))
}

fn f32s(v: &Value, what: &str) -> Result<Vec<f32>, CaseError> {
    v.as_array()
        .ok_or_else(|| malformed(what))?
        .iter()
        .map(|x| x.as_f64().map(|x| x as f32).ok_or_else(|| malformed(what)))
        .collect()
}

fn to_arg(v: &Value) -> ArgValue {
    match v {
        Value::Null => ArgValue::Null,
        Value::Bool(b) => ArgValue::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) if !n.is_f64() => ArgValue::Int(i),
            _ => ArgValue::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => ArgValue::Str(s.clone()),
        Value::Array(a) => ArgValue::List(a.iter().map(to_arg).collect()),
        Value::Object(_) => ArgValue::Str(v.to_string()),
    }
}

struct ParamSpec {
    name: String,
    shape: Vec<usize>,
    init: Vec<f32>,
}

/// `keep_going`: compare the whole trajectory after a failing step (the worst ratio then covers
/// every step) and report the first failure at the end.
fn run_case(
    case: &Value,
    options: &RunOptions,
    keep_going: bool,
    result: &mut CaseResult,
) -> Result<(), CaseError> {
    use crate::compare::BackendKind;
    match options.backend {
        BackendKind::NdArray => run_case_on::<NdArray<f32>>(case, options, keep_going, result),
        BackendKind::Flex => {
            run_case_on::<burn::backend::Flex<f32>>(case, options, keep_going, result)
        }
        #[cfg(feature = "wgpu")]
        BackendKind::Wgpu => {
            moment_cuda::enable::<moment_cuda::Wgpu>();
            run_case_on::<moment_cuda::Wgpu>(case, options, keep_going, result)
        }
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => {
            moment_cuda::enable::<moment_cuda::Cuda>();
            run_case_on::<moment_cuda::Cuda>(case, options, keep_going, result)
        }
        #[allow(unreachable_patterns)]
        other => Err(CaseError::Fail(format!(
            "backend {other:?} is not compiled into this binary"
        ))),
    }
}

/// A case's configuration, read and checked before anything runs.
struct CaseSetup<'a, B: Backend> {
    /// The reference class.
    class: &'a str,
    /// The chain ported from the reference class and arguments.
    chain: Chain<B>,
    /// The learning rate of every step.
    lr: f64,
    /// The case's relative tolerance.
    rtol: f64,
    /// The case's absolute tolerance.
    atol: f64,
    /// The parameters, in the case's order.
    specs: Vec<ParamSpec>,
    /// The recorded steps.
    steps: &'a [Value],
}

/// One case on backend `B`: its setup, the replay of its steps, its final state, the verdict.
fn run_case_on<B: Backend>(
    case: &Value,
    options: &RunOptions,
    keep_going: bool,
    result: &mut CaseResult,
) -> Result<(), CaseError> {
    let mut replay = Replay::new(read_setup::<B>(case, options)?, options, keep_going);
    replay.steps(result)?;
    replay.final_state(case, result)?;
    replay.verdict(result)
}

/// The case's setup; the first check that fails (format, something to compare, class, dtype,
/// arguments, the port, tolerance, parameters, steps, in this order) is the case's error.
fn read_setup<'a, B: Backend>(
    case: &'a Value,
    options: &RunOptions,
) -> Result<CaseSetup<'a, B>, CaseError> {
    let format = case.get("format").and_then(Value::as_i64);
    if format != Some(1) {
        return Err(CaseError::Unsupported(format!(
            "case format {format:?} (this runner reads format 1)"
        )));
    }
    check_compares_something(case)?;
    let class = case
        .pointer("/reference/class")
        .and_then(Value::as_str)
        .ok_or_else(|| malformed("reference.class"))?;
    let dtype = case.get("dtype").and_then(Value::as_str).unwrap_or("?");
    if dtype != "float32" {
        return Err(CaseError::Unsupported(format!("dtype {dtype}")));
    }
    let args = reference_args(case)?;
    let ported = match from_reference_with::<B>(class, &args, &options.port) {
        Ok(p) => p,
        Err(OptimError::Port(e)) => return Err(CaseError::Unsupported(e.to_string())),
        Err(e) => return Err(CaseError::Fail(format!("cannot build `{class}`: {e}"))),
    };
    let tol_rtol = case.pointer("/tolerance/rtol").and_then(Value::as_f64);
    let tol_atol = case.pointer("/tolerance/atol").and_then(Value::as_f64);
    let (Some(rtol), Some(atol)) = (tol_rtol, tol_atol) else {
        return Err(malformed("tolerance"));
    };
    let specs = param_specs(case)?;
    let steps = case
        .get("steps")
        .and_then(Value::as_array)
        .ok_or_else(|| malformed("steps"))?;
    Ok(CaseSetup {
        class,
        chain: ported.chain,
        lr: ported.lr,
        rtol,
        atol,
        specs,
        steps,
    })
}

/// The reference constructor's arguments, with the per-step ones merged in.
fn reference_args(case: &Value) -> Result<RefArgs, CaseError> {
    let mut args: RefArgs = case
        .get("reference_args")
        .and_then(Value::as_object)
        .ok_or_else(|| malformed("reference_args"))?
        .iter()
        .map(|(k, v)| (k.clone(), to_arg(v)))
        .collect();
    // Per-step keyword arguments (the same at every step, e.g. SophiaG's `bs`) are
    // configuration in moment: the port takes them with the constructor's.
    if let Some(step_args) = case.get("step_args").and_then(Value::as_object) {
        for (k, v) in step_args {
            if args.insert(k.clone(), to_arg(v)).is_some() {
                return Err(malformed("step_args repeats a constructor argument"));
            }
        }
    }
    Ok(args)
}

/// The case's parameters: name, shape and initial values of each.
fn param_specs(case: &Value) -> Result<Vec<ParamSpec>, CaseError> {
    case.get("params")
        .and_then(Value::as_array)
        .ok_or_else(|| malformed("params"))?
        .iter()
        .map(|p| {
            let name = p
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| malformed("params[].name"))?;
            let shape = p
                .get("shape")
                .and_then(Value::as_array)
                .ok_or_else(|| malformed("params[].shape"))?
                .iter()
                .map(|d| {
                    d.as_u64()
                        .map(|d| d as usize)
                        .ok_or_else(|| malformed("params[].shape"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let init = f32s(p.get("init").unwrap_or(&Value::Null), "params[].init")?;
            if init.len() != shape.iter().product::<usize>() {
                return Err(malformed("params[].init length"));
            }
            Ok(ParamSpec {
                name: name.to_string(),
                shape,
                init,
            })
        })
        .collect()
}

/// Relative bound on the 8-bit block max-abs state (`absmax*`) in the CPU-path mode: the
/// reference format's suggestion (`testdata/reference/FORMAT.md`, "Comparing"). moment's
/// CPU-path mode reproduces bitsandbytes' CPU arithmetic (torch's fused multiply-add moment
/// updates, `1 − β` rounded from double; `docs/algorithms/adam8bit.md`), so the recorded values
/// are met bit for bit.
pub const ABSMAX_RTOL: f64 = 1e-6;

/// Share of 8-bit codes that must equal the recorded (bitsandbytes CPU-path) ones in the
/// default mode, whose exact-nearest quantizer differs from the recording's lookup table: the
/// lowest agreement over the 23 reference and sweep 8-bit cases is 97.33% (CPU-path mode:
/// 100% of codes, required).
pub const CUDA_MODE_CODE_AGREEMENT: f64 = 0.97;

/// The `--optimizer` word for every family moment implements: those of the classes
/// [`moment_optim::port`] accepts ([`moment_optim::port::families`], from its port table), so
/// that `cargo xtask ci` keeps no list of its own.
pub const IMPLEMENTED: &str = "implemented";

/// Collect `--optimizer a,b` style family lists, [`IMPLEMENTED`] expanded.
pub fn parse_families(list: &str) -> Vec<String> {
    let mut families = Vec::new();
    for f in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match f {
            IMPLEMENTED => families.extend(moment_optim::port::families().map(String::from)),
            _ => families.push(f.to_string()),
        }
    }
    families
}

/// Per-family counts, for reports.
pub fn by_family(results: &[CaseResult]) -> BTreeMap<String, Summary> {
    let mut m: BTreeMap<String, Summary> = BTreeMap::new();
    for r in results {
        m.entry(r.family.clone()).or_default().add(&r.status);
    }
    m
}

#[cfg(test)]
mod tests;
