//! The engine: parameter groups, global-norm clipping, the non-finite policy, the observer
//! hook, state accounting and records, over flat named tensors.
//!
//! [`MomentOptimizer`] does not know about burn modules; [`ModuleOptimizer`](crate::ModuleOptimizer)
//! walks a module with paths and drives it. A step runs in three phases:
//! [`prepare`](MomentOptimizer::prepare) (validate everything, resolve groups, create state,
//! apply the non-finite policy and clipping — nothing is modified if it fails),
//! [`apply`](MomentOptimizer::apply) once per parameter, and [`finish`](MomentOptimizer::finish).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use burn::tensor::{ElementConversion, Tensor, backend::Backend};

use crate::error::{OptimError, Result};
use crate::observer::{Observer, ParamView, RefusedStep};
use crate::record::{
    CodeRecord, GroupRecord, MIN_RECORD_VERSION, OptimizerRecord, ParamRecord, RECORD_VERSION,
    TensorRecord, TransformRecord,
};
use crate::select::Selector;
use crate::stats::{code_values, overflow_safe_sumsq, read_scalars, tensor_values};
use crate::transform::{Chain, StepCtx, TransformState};
use crate::validate;

/// What to do when a gradient contains NaN or ±Inf.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NonFinitePolicy {
    /// Fail the step with [`OptimError::NonFiniteGradient`] naming the parameters; nothing changes.
    #[default]
    Error,
    /// Skip the whole step: parameters, state and step counters stay exactly as they were.
    SkipStep,
    /// Replace every non-finite gradient element by 0, then step normally.
    ZeroGradient,
    /// Hand non-finite gradients to the optimizer unchanged and let its own semantics decide,
    /// as the reference does: 8-bit Adam (CUDA semantics) zeroes that element's state and
    /// leaves that parameter element untouched; torch-semantics optimizers produce non-finite
    /// parameters, as torch does. The reported gradient norm and global clipping use the
    /// finite elements only. Events are still counted in the [`StepReport`].
    Propagate,
}

/// When the engine measures the gradients (global norm, non-finite elements).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GradientScan {
    /// Read every gradient once before anything changes (the default), so that the step can
    /// be refused ([`NonFinitePolicy::Error`], [`NonFinitePolicy::SkipStep`],
    /// [`OptimError::GradientTooLarge`]) or changed ([`NonFinitePolicy::ZeroGradient`],
    /// clipping) before it starts. Costs one more read of every gradient (4 B/param in f32,
    /// ~15–20% of a fused AdamW step on a CPU).
    #[default]
    BeforeStep,
    /// Measure each gradient in the same pass over memory as its update where the fused CPU
    /// kernel can (Adam/AdamW, Lion, Sophia on burn's CPU backends: the same bits as
    /// `BeforeStep` measures), else right before its update — the step reads each gradient
    /// once, as PyTorch's (unchecked) step does. Only with [`NonFinitePolicy::Propagate`] and
    /// no clipping, the one setup where the step never depends on the measurement (the
    /// builder refuses others); gradients whose squares overflow f32 are not refused (the
    /// reference does not refuse them either). The report's `grad_norm`, `non_finite` and
    /// `non_finite_paths` are complete after [`MomentOptimizer::finish`]
    /// ([`PreparedStep::report`] shows only the gradients measured first). Gradients not
    /// readable on the host (GPU backends) and the steps of a sharded optimizer are measured
    /// before the step, as with `BeforeStep`.
    InPass,
}

/// A set of parameters with its own optimizer chain and learning-rate multiplier.
#[derive(Debug, Clone)]
pub struct ParamGroup<B: Backend> {
    name: String,
    selector: Selector,
    chain: Chain<B>,
    lr_mult: f64,
}

impl<B: Backend> ParamGroup<B> {
    /// A group called `name` updating the parameters `selector` picks with `chain`.
    pub fn new(name: impl Into<String>, selector: Selector, chain: Chain<B>) -> Self {
        Self {
            name: name.into(),
            selector,
            chain,
            lr_mult: 1.0,
        }
    }

    /// Multiply the step's learning rate by `mult` for this group.
    pub fn lr_mult(mut self, mult: f64) -> Self {
        self.lr_mult = mult;
        self
    }

    /// The group's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The group's chain.
    pub fn chain(&self) -> &Chain<B> {
        &self.chain
    }
}

/// Builds a [`MomentOptimizer`]; groups are matched in the order they were added.
#[derive(Debug, Clone)]
pub struct MomentOptimizerBuilder<B: Backend> {
    groups: Vec<ParamGroup<B>>,
    max_grad_norm: Option<f64>,
    non_finite: NonFinitePolicy,
    scan: GradientScan,
}

impl<B: Backend> MomentOptimizerBuilder<B> {
    /// Add a parameter group. The first group whose selector matches a parameter owns it.
    pub fn group(mut self, group: ParamGroup<B>) -> Self {
        self.groups.push(group);
        self
    }

    /// Clip the global L2 norm of all gradients to `max_norm` (torch `clip_grad_norm_`:
    /// scale by `max_norm / (norm + 1e-6)` when `norm > max_norm`).
    pub fn clip_grad_norm(mut self, max_norm: f64) -> Self {
        self.max_grad_norm = Some(max_norm);
        self
    }

    /// Choose the non-finite-gradient policy (default [`NonFinitePolicy::Error`]).
    pub fn non_finite(mut self, policy: NonFinitePolicy) -> Self {
        self.non_finite = policy;
        self
    }

    /// Choose when gradients are measured (default [`GradientScan::BeforeStep`]);
    /// [`GradientScan::InPass`] needs [`NonFinitePolicy::Propagate`] and no clipping.
    pub fn gradient_scan(mut self, scan: GradientScan) -> Self {
        self.scan = scan;
        self
    }

    /// Validate and build.
    pub fn build(self) -> Result<MomentOptimizer<B>> {
        if self.groups.is_empty() {
            return Err(OptimError::invalid(
                "optimizer",
                "groups",
                0,
                "at least one parameter group",
            ));
        }
        for (i, g) in self.groups.iter().enumerate() {
            validate::non_negative("param_group", "lr_mult", g.lr_mult)?;
            if self.groups[..i].iter().any(|o| o.name == g.name) {
                return Err(OptimError::invalid(
                    "param_group",
                    "name",
                    &g.name,
                    "a name not used by another group",
                ));
            }
        }
        if let Some(c) = self.max_grad_norm {
            validate::positive("optimizer", "max_grad_norm", c)?;
        }
        if self.scan == GradientScan::InPass {
            if self.non_finite != NonFinitePolicy::Propagate {
                return Err(OptimError::invalid(
                    "optimizer",
                    "gradient_scan",
                    "InPass",
                    "NonFinitePolicy::Propagate with GradientScan::InPass (the other policies \
                     decide before the step, so they need GradientScan::BeforeStep)",
                ));
            }
            if self.max_grad_norm.is_some() {
                return Err(OptimError::invalid(
                    "optimizer",
                    "gradient_scan",
                    "InPass",
                    "no clipping with GradientScan::InPass (clipping needs the global norm \
                     before the step: use GradientScan::BeforeStep)",
                ));
            }
        }
        for g in &self.groups {
            if g.chain
                .transforms()
                .iter()
                .skip(1)
                .any(|t| t.group_sums() > 0)
            {
                return Err(OptimError::invalid(
                    "param_group",
                    "chain",
                    g.chain.label(),
                    "a chain whose group-reducing transform (e.g. Prodigy) comes first",
                ));
            }
        }
        let group_states = self.groups.iter().map(|g| g.chain.init_group()).collect();
        Ok(MomentOptimizer {
            group_states,
            groups: self.groups,
            max_grad_norm: self.max_grad_norm,
            non_finite: self.non_finite,
            scan: self.scan,
            params: BTreeMap::new(),
            pending: BTreeMap::new(),
            observer: None,
            steps: 0,
            last_report: None,
        })
    }
}

/// What happened in one step.
#[derive(Debug, Clone, PartialEq)]
pub struct StepReport {
    /// The engine's step counter after this call (unchanged when skipped).
    pub step: u64,
    /// Learning rate passed to the step (before group multipliers).
    pub lr: f64,
    /// Global L2 norm of all gradients before clipping (after zeroing non-finite elements
    /// under [`NonFinitePolicy::ZeroGradient`]; `NaN` when the step was skipped for them).
    pub grad_norm: f64,
    /// Factor the gradients were multiplied by (1 when not clipped).
    pub clip_factor: f64,
    /// Whether clipping engaged.
    pub clipped: bool,
    /// Number of non-finite gradient elements seen.
    pub non_finite: u64,
    /// Parameters that had non-finite gradient elements.
    pub non_finite_paths: Vec<String>,
    /// Whether the step was skipped (policy [`NonFinitePolicy::SkipStep`]).
    pub skipped: bool,
    /// Number of parameters updated.
    pub params_updated: usize,
    /// How many of them took their chain's fused one-pass path ([`crate::fused`]).
    pub params_fused: usize,
    /// The global clipping threshold (`None` without clipping).
    pub clip_threshold: Option<f64>,
    /// The non-finite gradient policy in force.
    pub policy: NonFinitePolicy,
    /// Learning rate of each parameter group (`lr` × the group's multiplier), in group order.
    pub group_lrs: Vec<(String, f64)>,
}

/// One gradient handed to [`MomentOptimizer::prepare`].
#[derive(Debug, Clone)]
pub struct GradEntry<B: Backend> {
    /// Parameter path.
    pub path: String,
    /// Shape of the parameter.
    pub param_shape: Vec<usize>,
    /// Shape of the gradient (must equal `param_shape`).
    pub grad_shape: Vec<usize>,
    /// The gradient, flat.
    pub grad: Tensor<B, 1>,
    /// The parameter's current value, flat. Only chains that reduce over their whole group
    /// before stepping (Prodigy's `⟨g, θ0 − θ⟩`) need it; `None` is fine for every other chain
    /// (and a step fails with [`OptimError::MissingParameterValue`] for those).
    pub param: Option<Tensor<B, 1>>,
}

/// The outcome of [`MomentOptimizer::prepare`], consumed by `apply` and `finish`.
#[derive(Debug)]
pub struct PreparedStep<B: Backend> {
    lr: f64,
    grads: HashMap<String, Tensor<B, 1>>,
    report: StepReport,
    observe: bool,
    /// [`GradientScan::InPass`]: paths whose gradient is measured when applied.
    unmeasured: std::collections::HashSet<String>,
    /// Σg² so far (the report's norm is its root once every gradient is measured).
    sumsq: f64,
    /// The clipping factor, when the step clips.
    clip_scale: Option<f32>,
    /// Paths whose gradient is not scaled by `clip_scale` yet (a fused CPU step scales it in
    /// its pass; [`MomentOptimizer::apply`] scales it first if that step declines).
    deferred: std::collections::HashSet<String>,
}

impl<B: Backend> PreparedStep<B> {
    /// The report so far (norms, clipping, non-finite counts; with [`GradientScan::InPass`]
    /// only the gradients measured before the step count until [`MomentOptimizer::finish`]).
    pub fn report(&self) -> &StepReport {
        &self.report
    }

    /// Count a gradient measured during the step ([`GradientScan::InPass`], policy
    /// [`NonFinitePolicy::Propagate`]): `s` is its `Σ g²` when the fused pass measured it.
    fn measured(&mut self, path: &str, g: &Tensor<B, 1>, s: Option<f64>) {
        let s = s
            .or_else(|| crate::fused::sum_squares(g))
            .unwrap_or_else(|| {
                read_scalars(vec![g.clone().square().sum()])
                    .into_iter()
                    .next()
                    .unwrap_or(f64::NAN)
            });
        let (_, s, bad) = settle(g.clone(), s, NonFinitePolicy::Propagate);
        if bad > 0 {
            self.report.non_finite += bad;
            self.report.non_finite_paths.push(path.to_string());
        }
        self.sumsq += s;
    }
}

/// A gradient's measured `Σ g²` (`s`, non-finite when `g` has NaN/±Inf elements or its f32
/// block sums overflowed) made final under `policy`: the gradient the step uses (non-finite
/// elements zeroed under [`NonFinitePolicy::ZeroGradient`]), the sum the report and clipping
/// use (finite elements only under `Propagate`, +Inf under `Error`/`SkipStep`) and the number
/// of non-finite elements.
fn settle<B: Backend>(
    g: Tensor<B, 1>,
    s: f64,
    policy: NonFinitePolicy,
) -> (Tensor<B, 1>, f64, u64) {
    if s.is_finite() {
        return (g, s, 0);
    }
    let bad = g
        .clone()
        .is_finite()
        .bool_not()
        .int()
        .sum()
        .into_scalar()
        .elem::<i64>() as u64;
    if bad == 0 {
        let s = overflow_safe_sumsq(&g);
        return (g, s, 0);
    }
    match policy {
        NonFinitePolicy::ZeroGradient => {
            let mask = g.clone().is_finite().bool_not();
            let g = g.mask_fill(mask, 0.0);
            let s = overflow_safe_sumsq(&g);
            (g, s, bad)
        }
        NonFinitePolicy::Propagate => {
            let mask = g.clone().is_finite().bool_not();
            let s = overflow_safe_sumsq(&g.clone().mask_fill(mask, 0.0));
            (g, s, bad)
        }
        NonFinitePolicy::Error | NonFinitePolicy::SkipStep => (g, f64::INFINITY, bad),
    }
}

/// A named parameter for [`MomentOptimizer::step`]: flat value and optional gradient.
#[derive(Debug, Clone)]
pub struct ParamTensor<B: Backend> {
    /// Parameter path.
    pub path: String,
    /// Logical shape.
    pub shape: Vec<usize>,
    /// Value, flat.
    pub value: Tensor<B, 1>,
    /// Gradient, flat; `None` means "no gradient this step" (state untouched).
    pub grad: Option<Tensor<B, 1>>,
}

#[derive(Debug, Clone)]
struct ParamState<B: Backend> {
    group: usize,
    shape: Vec<usize>,
    states: Vec<TransformState<B>>,
}

/// Exact optimizer-state memory.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StateMemory {
    /// Per parameter, in path order.
    pub params: Vec<ParamMemory>,
    /// Bytes per state kind (`exp_avg`, `exp_avg_sq`, `step`, …) over all parameters.
    pub by_kind: BTreeMap<String, u64>,
    /// All state bytes.
    pub total_bytes: u64,
    /// Parameter elements that have state.
    pub param_elements: u64,
}

impl StateMemory {
    /// State bytes per parameter element (0 when there is no state yet).
    pub fn bytes_per_param(&self) -> f64 {
        if self.param_elements == 0 {
            0.0
        } else {
            self.total_bytes as f64 / self.param_elements as f64
        }
    }
}

/// State memory of one parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamMemory {
    /// Parameter path.
    pub path: String,
    /// Parameter elements.
    pub elements: u64,
    /// Bytes per state kind.
    pub by_kind: BTreeMap<String, u64>,
    /// All state bytes of this parameter.
    pub total_bytes: u64,
}

/// The optimizer engine. See the [module docs](self).
#[derive(Clone)]
pub struct MomentOptimizer<B: Backend> {
    groups: Vec<ParamGroup<B>>,
    /// Group-level transform state (see [`Transform::group_sums`]), per group, per transform.
    group_states: Vec<Vec<TransformState<B>>>,
    max_grad_norm: Option<f64>,
    non_finite: NonFinitePolicy,
    scan: GradientScan,
    params: BTreeMap<String, ParamState<B>>,
    /// Loaded but not yet materialised states (no device known yet), by path.
    pending: BTreeMap<String, ParamRecord>,
    observer: Option<Arc<Mutex<dyn Observer<B>>>>,
    steps: u64,
    last_report: Option<StepReport>,
}

impl<B: Backend> std::fmt::Debug for MomentOptimizer<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MomentOptimizer")
            .field("groups", &self.groups)
            .field("max_grad_norm", &self.max_grad_norm)
            .field("non_finite", &self.non_finite)
            .field("scan", &self.scan)
            .field("steps", &self.steps)
            .field("params_with_state", &self.params.len())
            .field("observer", &self.observer.is_some())
            .finish()
    }
}

impl<B: Backend> MomentOptimizer<B> {
    /// A builder with no groups yet.
    pub fn builder() -> MomentOptimizerBuilder<B> {
        MomentOptimizerBuilder {
            groups: Vec::new(),
            max_grad_norm: None,
            non_finite: NonFinitePolicy::default(),
            scan: GradientScan::default(),
        }
    }

    /// One group (`default`, every parameter) running `chain`.
    #[allow(
        clippy::expect_used,
        reason = "invariant: one default group with lr_mult 1 always validates"
    )]
    pub fn new(chain: Chain<B>) -> Self {
        Self::builder()
            .group(ParamGroup::new("default", Selector::All, chain))
            .build()
            .expect("a single default group with lr_mult 1 is always valid")
    }

    /// Attach an observer (replaces any previous one). Keep a clone of the `Arc` to read it.
    pub fn set_observer(&mut self, observer: Arc<Mutex<dyn Observer<B>>>) {
        self.observer = Some(observer);
    }

    /// Detach the observer.
    pub fn clear_observer(&mut self) {
        self.observer = None;
    }

    /// Completed steps.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The groups, in match order.
    pub fn groups(&self) -> &[ParamGroup<B>] {
        &self.groups
    }

    /// Report of the last step call, if any.
    pub fn last_report(&self) -> Option<&StepReport> {
        self.last_report.as_ref()
    }

    /// The chain states of a parameter, if it has been stepped.
    pub fn state(&self, path: &str) -> Option<&[TransformState<B>]> {
        self.params.get(path).map(|p| p.states.as_slice())
    }

    /// The group-level states of a group's chain (one per transform, empty for transforms
    /// without one; e.g. Prodigy's `d`, `d_max`), if the group exists.
    pub fn group_state(&self, group: &str) -> Option<&[TransformState<B>]> {
        let i = self.groups.iter().position(|g| g.name == group)?;
        Some(self.group_states[i].as_slice())
    }

    /// The constant tables (e.g. quantization maps) of the chain that updates a stepped
    /// parameter, by reference name.
    pub fn constants(&self, path: &str) -> Option<Vec<(&'static str, Vec<f32>)>> {
        let ps = self.params.get(path)?;
        Some(
            self.groups[ps.group]
                .chain
                .transforms()
                .iter()
                .flat_map(|t| t.constants())
                .collect(),
        )
    }

    /// The evaluation view of a parameter (Schedule-Free's averaged `x`), or the parameter
    /// itself when its chain has no separate evaluation point or it has not been stepped.
    pub fn eval_view(&self, path: &str, param: Tensor<B, 1>) -> Tensor<B, 1> {
        self.view(path, param, true)
    }

    /// Inverse of [`MomentOptimizer::eval_view`].
    pub fn train_view(&self, path: &str, param: Tensor<B, 1>) -> Tensor<B, 1> {
        self.view(path, param, false)
    }

    fn view(&self, path: &str, param: Tensor<B, 1>, eval: bool) -> Tensor<B, 1> {
        let Some(ps) = self.params.get(path) else {
            return param;
        };
        let chain = &self.groups[ps.group].chain;
        let mut p = param;
        for (t, st) in chain.transforms().iter().zip(&ps.states) {
            let v = if eval {
                t.eval_view(p.clone(), st)
            } else {
                t.train_view(p.clone(), st)
            };
            if let Some(v) = v {
                p = v;
            }
        }
        p
    }

    /// Name of the group that owns `path` with `shape`, if any.
    pub fn group_of(&self, path: &str, shape: &[usize]) -> Option<&str> {
        self.resolve_group(path, shape)
            .map(|g| self.groups[g].name.as_str())
    }

    fn resolve_group(&self, path: &str, shape: &[usize]) -> Option<usize> {
        self.groups
            .iter()
            .position(|g| g.selector.matches(path, shape))
    }

    /// Check shapes and routing of `grads` and build state for parameters seen for the first
    /// time (restored from a lazily loaded record when there is one). Changes nothing.
    /// State is built only for the paths `owns` accepts; the others are checked.
    fn fresh_states(
        &self,
        grads: &[GradEntry<B>],
        owns: &dyn Fn(&str) -> bool,
    ) -> Result<Vec<(String, ParamState<B>)>> {
        let mut fresh: Vec<(String, ParamState<B>)> = Vec::new();
        for e in grads {
            if e.grad_shape != e.param_shape
                || e.grad.dims()[0] != e.param_shape.iter().product::<usize>()
            {
                return Err(OptimError::ShapeMismatch {
                    path: e.path.clone(),
                    expected: e.param_shape.clone(),
                    actual: e.grad_shape.clone(),
                });
            }
            if let Some(ps) = self.params.get(&e.path) {
                if ps.shape != e.param_shape {
                    return Err(OptimError::ShapeMismatch {
                        path: e.path.clone(),
                        expected: ps.shape.clone(),
                        actual: e.param_shape.clone(),
                    });
                }
                continue;
            }
            let group = self.resolve_group(&e.path, &e.param_shape).ok_or_else(|| {
                OptimError::UnmatchedParameter {
                    path: e.path.clone(),
                    shape: e.param_shape.clone(),
                }
            })?;
            if !owns(&e.path) {
                continue;
            }
            let device = e.grad.device();
            let mut states = self.groups[group]
                .chain
                .init(&e.path, &e.param_shape, &device)?;
            if let Some(rec) = self.pending.get(&e.path) {
                restore_states(
                    &self.groups[group],
                    rec,
                    &e.param_shape,
                    &mut states,
                    &device,
                )?;
            }
            fresh.push((
                e.path.clone(),
                ParamState {
                    group,
                    shape: e.param_shape.clone(),
                    states,
                },
            ));
        }
        Ok(fresh)
    }

    /// Feed curvature estimates (one flat tensor per parameter, e.g. Sophia-G's sampled-label
    /// gradients or a Hutchinson Hessian diagonal for Sophia-H) to the transforms that use them;
    /// state is created for parameters not stepped yet. Returns how many parameters' chains
    /// took the estimate (parameters in groups without a curvature transform are left alone).
    /// Shapes and non-finite values are checked as in a step (the non-finite policy applies:
    /// `SkipStep` ignores the whole call). On error nothing changes.
    pub fn update_curvature(&mut self, estimates: Vec<GradEntry<B>>) -> Result<usize> {
        let mut estimates = sorted_by_path(estimates)?;
        let fresh = self.fresh_states(&estimates, &|_| true)?;
        // Count non-finite elements (a sum of |x| could overflow for finite values).
        let counts = read_scalars(
            estimates
                .iter()
                .map(|e| e.grad.clone().is_finite().bool_not().int().sum().float())
                .collect(),
        );
        let bad: Vec<String> = estimates
            .iter()
            .zip(&counts)
            .filter(|(_, c)| **c > 0.0)
            .map(|(e, _)| e.path.clone())
            .collect();
        if !bad.is_empty() {
            match self.non_finite {
                NonFinitePolicy::Error => {
                    return Err(OptimError::NonFiniteGradient {
                        first_path: bad[0].clone(),
                        count: bad.len() as u64,
                        paths: bad,
                    });
                }
                NonFinitePolicy::SkipStep => return Ok(0),
                NonFinitePolicy::ZeroGradient => {
                    for e in estimates.iter_mut() {
                        let mask = e.grad.clone().is_finite().bool_not();
                        e.grad = e.grad.clone().mask_fill(mask, 0.0);
                    }
                }
                NonFinitePolicy::Propagate => {}
            }
        }
        // Fresh state is kept only where a transform takes the estimate (no state is created
        // for parameters of groups without a curvature transform).
        let mut fresh: HashMap<String, ParamState<B>> = fresh.into_iter().collect();
        let mut used = 0;
        for e in estimates {
            let new = fresh.remove(&e.path);
            let is_new = new.is_some();
            let mut ps = match new {
                Some(ps) => ps,
                None => match self.params.remove(&e.path) {
                    Some(ps) => ps,
                    None => continue,
                },
            };
            let chain = &self.groups[ps.group].chain;
            let mut took = false;
            for (t, st) in chain.transforms().iter().zip(ps.states.iter_mut()) {
                took |= t.update_curvature(e.grad.clone(), st);
            }
            used += usize::from(took);
            if took || !is_new {
                if is_new {
                    self.pending.remove(&e.path);
                }
                self.params.insert(e.path, ps);
            }
        }
        Ok(used)
    }

    /// Phase 1 of a step: validate `lr` and every gradient, create state for new parameters,
    /// apply the non-finite policy and global clipping. On error nothing has changed, and the
    /// observer is told ([`Observer::on_refused`]).
    pub fn prepare(&mut self, lr: f64, grads: Vec<GradEntry<B>>) -> Result<PreparedStep<B>> {
        self.prepare_owned(lr, grads, &|_| true, &mut || Ok(()))
    }

    /// [`MomentOptimizer::prepare`] for one shard of a sharded optimizer (ZeRO stage 1):
    /// every gradient is validated and counts in the global statistics (non-finite policy,
    /// gradient norm, clipping — so every peer takes the same decisions), but state is created
    /// and kept, and [`MomentOptimizer::apply`] updates, only for the paths `owns` accepts.
    /// `agree` runs once everything is checked and nothing is changed yet; if it fails (a
    /// peer's check failed) its error is returned and nothing changes. Chains that reduce
    /// over all their tensors (group phase: Prodigy, Adam-mini's…) need every tensor and are
    /// refused unless `owns` accepts all paths.
    ///
    /// A refused step (any error) is reported to the observer ([`Observer::on_refused`]).
    pub fn prepare_owned(
        &mut self,
        lr: f64,
        grads: Vec<GradEntry<B>>,
        owns: &dyn Fn(&str) -> bool,
        agree: &mut dyn FnMut() -> Result<()>,
    ) -> Result<PreparedStep<B>> {
        let prepared = self.try_prepare(lr, grads, owns, agree);
        if let Err(e) = &prepared {
            self.notify_refused(lr, e);
        }
        prepared
    }

    /// Tell the observer that a step with learning rate `lr` was refused with `error`
    /// ([`Observer::on_refused`], with the unchanged step counter). The engine does this
    /// itself for every step it refuses; an adaptor that refuses a step before it reaches the
    /// engine (e.g. [`ModuleOptimizer`](crate::ModuleOptimizer) in evaluation mode) calls it
    /// so that the observer still sees the refusal. Changes nothing else.
    pub fn notify_refused(&self, lr: f64, error: &OptimError) {
        if let Some(obs) = &self.observer
            && let Ok(mut obs) = obs.lock()
        {
            obs.on_refused(&RefusedStep {
                step: self.steps,
                lr,
                policy: self.non_finite,
                error: error.clone(),
            });
        }
    }

    /// [`MomentOptimizer::prepare_owned`] without the observer's refusal notice.
    fn try_prepare(
        &mut self,
        lr: f64,
        grads: Vec<GradEntry<B>>,
        owns: &dyn Fn(&str) -> bool,
        agree: &mut dyn FnMut() -> Result<()>,
    ) -> Result<PreparedStep<B>> {
        if !validate::learning_rate(lr) {
            return Err(OptimError::InvalidLearningRate { lr });
        }
        if let Some(g) = self
            .groups
            .iter()
            .find(|g| !validate::learning_rate(lr * g.lr_mult))
        {
            return Err(OptimError::InvalidLearningRate { lr: lr * g.lr_mult });
        }
        let mut grads = sorted_by_path(grads)?;
        let all_owned = grads.iter().all(|e| owns(&e.path));
        if !all_owned && let Some(g) = self.groups.iter().find(|g| g.chain.has_group_phase()) {
            return Err(OptimError::Unsupported {
                reason: format!(
                    "sharded state: group `{}` ({}) reduces over all its tensors and cannot be \
                     split over peers",
                    g.name,
                    g.chain.label()
                ),
            });
        }
        let shapes: HashMap<String, Vec<usize>> = grads
            .iter()
            .map(|e| (e.path.clone(), e.param_shape.clone()))
            .collect();

        // Shapes, groups and fresh state: into a scratch map, merged only on success.
        let fresh = self.fresh_states(&grads, owns)?;
        let fresh_group: HashMap<&str, usize> =
            fresh.iter().map(|(p, s)| (p.as_str(), s.group)).collect();
        let mut values: HashMap<String, Tensor<B, 1>> = HashMap::new();
        for e in grads.iter_mut() {
            let group = fresh_group
                .get(e.path.as_str())
                .copied()
                .or_else(|| self.params.get(&e.path).map(|p| p.group));
            if group.is_some_and(|g| self.groups[g].chain.has_group_phase()) {
                match e.param.take() {
                    Some(v) if v.dims()[0] == e.grad.dims()[0] => {
                        values.insert(e.path.clone(), v);
                    }
                    Some(v) => {
                        return Err(OptimError::ShapeMismatch {
                            path: e.path.clone(),
                            expected: e.param_shape.clone(),
                            actual: v.dims().to_vec(),
                        });
                    }
                    None => {
                        return Err(OptimError::MissingParameterValue {
                            path: e.path.clone(),
                        });
                    }
                }
            }
            e.param = None;
        }

        // Non-finite detection and norms: one reduction per tensor (read in place on CPU
        // backends with a kernel, else tensor ops with one sync for all). With
        // `GradientScan::InPass`, host-readable gradients are measured when applied instead
        // (counted as 0 here: under `Propagate` without clipping nothing below depends on them).
        let in_pass = self.scan == GradientScan::InPass && all_owned;
        let mut unmeasured = std::collections::HashSet::new();
        let host: Vec<Option<f64>> = grads
            .iter()
            .map(|e| {
                if in_pass && crate::fused::host_readable(&e.grad) {
                    unmeasured.insert(e.path.clone());
                    Some(0.0)
                } else {
                    crate::fused::sum_squares(&e.grad)
                }
            })
            .collect();
        let mut device = read_scalars(
            grads
                .iter()
                .zip(&host)
                .filter(|(_, h)| h.is_none())
                .map(|(e, _)| e.grad.clone().square().sum())
                .collect(),
        )
        .into_iter();
        let sumsq: Vec<f64> = host
            .into_iter()
            .map(|h| h.unwrap_or_else(|| device.next().unwrap_or(f64::NAN)))
            .collect();
        let mut report = StepReport {
            step: self.steps,
            lr,
            grad_norm: 0.0,
            clip_factor: 1.0,
            clipped: false,
            non_finite: 0,
            non_finite_paths: Vec::new(),
            clip_threshold: self.max_grad_norm,
            policy: self.non_finite,
            group_lrs: self
                .groups
                .iter()
                .map(|g| (g.name.clone(), lr * g.lr_mult))
                .collect(),
            skipped: false,
            params_updated: 0,
            params_fused: 0,
        };
        let mut total = 0.0f64;
        let mut entries: Vec<(String, Tensor<B, 1>)> = Vec::with_capacity(grads.len());
        let mut sums: Vec<f64> = Vec::with_capacity(grads.len());
        for (e, s) in grads.into_iter().zip(sumsq) {
            let (g, s, bad) = settle(e.grad, s, self.non_finite);
            if bad > 0 {
                report.non_finite += bad;
                report.non_finite_paths.push(e.path.clone());
            }
            total += s;
            sums.push(s);
            entries.push((e.path, g));
        }
        if report.non_finite > 0 {
            match self.non_finite {
                NonFinitePolicy::Error => {
                    return Err(OptimError::NonFiniteGradient {
                        first_path: report.non_finite_paths[0].clone(),
                        paths: report.non_finite_paths,
                        count: report.non_finite,
                    });
                }
                NonFinitePolicy::SkipStep => {
                    agree()?;
                    report.skipped = true;
                    report.grad_norm = f64::NAN;
                    return Ok(PreparedStep {
                        lr,
                        grads: HashMap::new(),
                        report,
                        observe: false,
                        unmeasured: Default::default(),
                        sumsq: total,
                        clip_scale: None,
                        deferred: Default::default(),
                    });
                }
                NonFinitePolicy::ZeroGradient | NonFinitePolicy::Propagate => {}
            }
        }
        report.grad_norm = total.sqrt();
        if let Some(max) = self.max_grad_norm
            && report.grad_norm > max
        {
            report.clip_factor = max / (report.grad_norm + 1e-6);
            report.clipped = true;
        }

        // Transforms that square the gradient in f32 overflow to NaN parameters (as their
        // references do) once Σg² nears f32::MAX: refuse such a step while nothing has changed.
        // A sixteenth of f32::MAX leaves room for the ε terms and the f32 rounding of the sums.
        let limit = f64::from(f32::MAX) / 16.0;
        let clip2 = report.clip_factor * report.clip_factor;
        for ((path, _), &s) in entries.iter().zip(&sums) {
            // (NaN sums — already handled by the non-finite policy — compare false.)
            if s * clip2 <= limit || s.is_nan() {
                continue;
            }
            // (owned or not: every peer refuses the same step)
            let group = fresh_group
                .get(path.as_str())
                .copied()
                .or_else(|| self.params.get(path).map(|p| p.group))
                .or_else(|| {
                    shapes
                        .get(path)
                        .and_then(|shape| self.resolve_group(path, shape))
                });
            if let Some(g) = group
                && self.groups[g].chain.squares_gradient_in_f32()
            {
                return Err(OptimError::GradientTooLarge {
                    path: path.clone(),
                    optimizer: self.groups[g].chain.label().to_string(),
                    sum_sq: s * clip2,
                    limit,
                });
            }
        }

        agree()?;
        // Commit: everything below cannot fail.
        if !all_owned {
            entries.retain(|(path, _)| owns(path));
        }
        for (path, st) in fresh {
            self.pending.remove(&path);
            self.params.insert(path, st);
        }
        // Clipping: gradients a fused CPU step will read are scaled inside its pass
        // (`FusedStep::step_scaled`: no scaled copy written); the others now, in place where
        // they are not shared. Either way each element is `g·c` rounded once, as `mul_scalar`.
        let clip_scale = report.clipped.then_some(report.clip_factor as f32);
        let mut deferred = std::collections::HashSet::new();
        if let Some(c) = clip_scale {
            entries = entries
                .into_iter()
                .map(|(path, g)| {
                    let fused = self
                        .params
                        .get(&path)
                        .is_some_and(|ps| self.groups[ps.group].chain.fused().is_some());
                    if fused && crate::fused::host_readable(&g) {
                        deferred.insert(path.clone());
                        (path, g)
                    } else {
                        (path, crate::fused::scale(g, c))
                    }
                })
                .collect();
        }
        self.steps += 1;
        report.step = self.steps;
        self.group_phase(lr, &entries, &values);
        let observe = match &self.observer {
            Some(o) => o.lock().map(|o| o.wants(self.steps)).unwrap_or(false),
            None => false,
        };
        Ok(PreparedStep {
            lr,
            grads: entries.into_iter().collect(),
            report,
            observe,
            unmeasured,
            sumsq: total,
            clip_scale,
            deferred,
        })
    }

    /// The group phase of chains that reduce over all their tensors (see
    /// [`Transform::group_sums`]): every tensor contributes its partial sums, one read-back for
    /// all, then each group's transform folds its totals into its group state.
    fn group_phase(
        &mut self,
        lr: f64,
        entries: &[(String, Tensor<B, 1>)],
        values: &HashMap<String, Tensor<B, 1>>,
    ) {
        for gi in 0..self.groups.len() {
            let Some(t) = self.groups[gi].chain.transforms().first().cloned() else {
                continue;
            };
            let k = t.group_sums();
            if k == 0 {
                continue;
            }
            let lr = lr * self.groups[gi].lr_mult;
            let mut partials = Vec::new();
            for (path, grad) in entries {
                let (Some(ps), Some(param)) = (self.params.get_mut(path), values.get(path)) else {
                    continue;
                };
                if ps.group != gi {
                    continue;
                }
                let ctx = StepCtx {
                    lr,
                    param,
                    shape: &ps.shape,
                    path,
                    group: &self.group_states[gi][0],
                };
                let p = t.contribute(&ctx, grad, &mut ps.states[0]);
                debug_assert_eq!(p.len(), k);
                partials.extend(p);
            }
            let vals = read_scalars(partials);
            let mut sums = vec![0.0f64; k];
            for chunk in vals.chunks(k) {
                for (s, v) in sums.iter_mut().zip(chunk) {
                    *s += v;
                }
            }
            t.reduce(lr, &sums, &mut self.group_states[gi][0]);
        }
    }

    /// Phase 2: update one parameter (flat) and return its new value. Parameters without a
    /// prepared gradient (or a skipped step) are returned unchanged.
    pub fn apply(
        &mut self,
        prep: &mut PreparedStep<B>,
        path: &str,
        param: Tensor<B, 1>,
    ) -> Tensor<B, 1> {
        let Some(grad) = prep.grads.remove(path) else {
            return param;
        };
        let measure = prep.unmeasured.remove(path);
        // the clipping factor, when this gradient still has to be scaled by it
        let mut unscaled = prep.clip_scale.filter(|_| prep.deferred.remove(path));
        let Some(ps) = self.params.get_mut(path) else {
            if measure {
                prep.measured(path, &grad, None);
            }
            return param;
        };
        let group = &self.groups[ps.group];
        let lr = prep.lr * group.lr_mult;
        let watch = prep.observe
            && self.observer.as_ref().is_some_and(|o| {
                o.lock()
                    .map(|o| o.wants_param(path, &ps.shape))
                    .unwrap_or(false)
            });
        // The one-pass path when the chain has one. A watched parameter keeps its old value
        // and gradient alive (so the fused step copies instead of updating in place) and its
        // update is recovered as `new − old`, exactly the update the composed path adds.
        let (param, grad) = match group.chain.fused() {
            Some(f) => {
                let seen = watch.then(|| {
                    let clipped = match unscaled {
                        Some(c) => grad.clone().mul_scalar(c),
                        None => grad.clone(),
                    };
                    (param.clone(), clipped)
                });
                // (a handle only: the fused step reads the gradient in place either way)
                let kept = measure.then(|| grad.clone());
                let out = if let Some(c) = unscaled {
                    match f.step_scaled(lr, &ps.shape, param, grad, c, &mut ps.states) {
                        Ok(p) => Ok((p, None)),
                        Err((param, grad)) => {
                            unscaled = None;
                            let grad = crate::fused::scale(grad, c);
                            f.step(lr, &ps.shape, param, grad, &mut ps.states)
                                .map(|p| (p, None))
                        }
                    }
                } else if measure {
                    f.step_measured(lr, &ps.shape, param, grad, &mut ps.states)
                } else {
                    f.step(lr, &ps.shape, param, grad, &mut ps.states)
                        .map(|p| (p, None))
                };
                match out {
                    Ok((new, s)) => {
                        if let Some(g) = &kept {
                            prep.measured(path, g, s);
                        }
                        prep.report.params_updated += 1;
                        prep.report.params_fused += 1;
                        if let Some((old, grad)) = seen {
                            let update = new.clone().sub(old);
                            self.notify(prep, path, lr, &grad, &update, &new);
                        }
                        return new;
                    }
                    Err(back) => back,
                }
            }
            None => (param, grad),
        };
        let grad = match unscaled {
            Some(c) => crate::fused::scale(grad, c),
            None => grad,
        };
        if measure {
            prep.measured(path, &grad, None);
        }
        let empty = TransformState::empty();
        let ctx = StepCtx {
            lr,
            param: &param,
            shape: &ps.shape,
            path,
            group: &empty,
        };
        let grad_seen = watch.then(|| grad.clone());
        let update = group
            .chain
            .update(&ctx, grad, &mut ps.states, &self.group_states[ps.group]);
        let new = param.clone().add(update.clone());
        prep.report.params_updated += 1;
        if let Some(grad) = grad_seen {
            self.notify(prep, path, lr, &grad, &update, &new);
        }
        new
    }

    /// Hand one updated parameter to the observer.
    fn notify(
        &self,
        prep: &PreparedStep<B>,
        path: &str,
        lr: f64,
        grad: &Tensor<B, 1>,
        update: &Tensor<B, 1>,
        new: &Tensor<B, 1>,
    ) {
        let (Some(obs), Some(ps)) = (&self.observer, self.params.get(path)) else {
            return;
        };
        if let Ok(mut obs) = obs.lock() {
            obs.on_param(&ParamView {
                step: prep.report.step,
                path,
                group: &self.groups[ps.group].name,
                shape: &ps.shape,
                grad,
                update,
                param: new,
                lr,
                state: &ps.states,
            });
        }
    }

    /// Phase 3: close the step, notify the observer, keep and return the report.
    pub fn finish(&mut self, mut prep: PreparedStep<B>) -> StepReport {
        if self.scan == GradientScan::InPass && !prep.report.skipped {
            // Gradients prepared but never applied still count.
            let left: Vec<String> = prep.unmeasured.drain().collect();
            for path in left {
                if let Some(g) = prep.grads.get(&path).cloned() {
                    prep.measured(&path, &g, None);
                }
            }
            prep.report.non_finite_paths.sort();
            prep.report.grad_norm = prep.sumsq.sqrt();
        }
        let report = prep.report;
        if let Some(obs) = &self.observer
            && let Ok(mut obs) = obs.lock()
        {
            obs.on_step(&report);
        }
        self.last_report = Some(report.clone());
        report
    }

    /// One whole step over flat named tensors (the module-free API, used by the reference
    /// runner). Parameters are updated in place; on error nothing changes and the observer is
    /// told ([`Observer::on_refused`]).
    pub fn step(&mut self, lr: f64, params: &mut [ParamTensor<B>]) -> Result<StepReport> {
        let grads = params
            .iter()
            .filter_map(|p| {
                p.grad.as_ref().map(|g| GradEntry {
                    path: p.path.clone(),
                    param_shape: p.shape.clone(),
                    grad_shape: p.shape.clone(),
                    grad: g.clone(),
                    param: Some(p.value.clone()),
                })
            })
            .collect::<Vec<_>>();
        for p in params.iter() {
            if let Some(g) = &p.grad
                && g.dims()[0] != p.value.dims()[0]
            {
                let e = OptimError::ShapeMismatch {
                    path: p.path.clone(),
                    expected: p.shape.clone(),
                    actual: vec![g.dims()[0]],
                };
                self.notify_refused(lr, &e);
                return Err(e);
            }
        }
        let mut prep = self.prepare(lr, grads)?;
        let mut order: Vec<usize> = (0..params.len()).collect();
        order.sort_by(|&a, &b| params[a].path.cmp(&params[b].path));
        for i in order {
            // Moved out (not cloned) so a fused step can update the buffer in place.
            let device = params[i].value.device();
            let value = std::mem::replace(&mut params[i].value, Tensor::zeros([0], &device));
            params[i].value = self.apply(&mut prep, &params[i].path.clone(), value);
        }
        Ok(self.finish(prep))
    }

    /// Exact bytes of optimizer state, per parameter and per state kind.
    pub fn state_memory(&self) -> StateMemory {
        let mut mem = StateMemory::default();
        for (path, ps) in &self.params {
            let mut pm = ParamMemory {
                path: path.clone(),
                elements: ps.shape.iter().product::<usize>() as u64,
                by_kind: BTreeMap::new(),
                total_bytes: 0,
            };
            for st in &ps.states {
                for t in &st.tensors {
                    *pm.by_kind.entry(t.name.to_string()).or_default() += t.bytes();
                }
                for c in &st.codes {
                    *pm.by_kind.entry(c.name.to_string()).or_default() += c.bytes();
                }
                for (name, _) in &st.counters {
                    *pm.by_kind.entry(name.to_string()).or_default() += 8;
                }
                for (name, _) in &st.scalars {
                    *pm.by_kind.entry(name.to_string()).or_default() += 8;
                }
            }
            pm.total_bytes = pm.by_kind.values().sum();
            for (k, v) in &pm.by_kind {
                *mem.by_kind.entry(k.clone()).or_default() += v;
            }
            mem.total_bytes += pm.total_bytes;
            mem.param_elements += pm.elements;
            mem.params.push(pm);
        }
        for st in self.group_states.iter().flatten() {
            let names = st.counters.iter().map(|(n, _)| n);
            for name in names.chain(st.scalars.iter().map(|(n, _)| n)) {
                *mem.by_kind.entry(name.to_string()).or_default() += 8;
                mem.total_bytes += 8;
            }
        }
        mem
    }

    /// The full state as a versioned, backend-independent record (reads tensors back).
    pub fn to_record(&self) -> OptimizerRecord {
        let mut params: BTreeMap<String, ParamRecord> = self.pending.clone();
        for (path, ps) in &self.params {
            let group = &self.groups[ps.group];
            let transforms = group
                .chain
                .transforms()
                .iter()
                .zip(&ps.states)
                .filter(|(t, _)| t.stateful())
                .map(|(t, st)| transform_record(t.name(), st))
                .collect();
            params.insert(
                path.clone(),
                ParamRecord {
                    path: path.clone(),
                    group: group.name.clone(),
                    shape: ps.shape.clone(),
                    transforms,
                },
            );
        }
        let groups = self
            .groups
            .iter()
            .zip(&self.group_states)
            .filter(|(g, _)| g.chain.has_group_phase())
            .map(|(g, states)| GroupRecord {
                name: g.name.clone(),
                transforms: g
                    .chain
                    .transforms()
                    .iter()
                    .zip(states)
                    .filter(|(t, _)| t.group_sums() > 0)
                    .map(|(t, st)| transform_record(t.name(), st))
                    .collect(),
            })
            .collect();
        OptimizerRecord {
            version: RECORD_VERSION,
            steps: self.steps,
            params: params.into_values().collect(),
            groups,
        }
    }

    /// The group states a record holds, checked against this optimizer's chains; fresh
    /// states for groups the record has no entry for.
    fn restore_group_states(
        &self,
        record: &OptimizerRecord,
    ) -> Result<Vec<Vec<TransformState<B>>>> {
        let mut out: Vec<Vec<TransformState<B>>> =
            self.groups.iter().map(|g| g.chain.init_group()).collect();
        for gr in &record.groups {
            let gi = self.group_index(&gr.name)?;
            let chain = &self.groups[gi].chain;
            let mut recs = gr.transforms.iter();
            for (t, st) in chain.transforms().iter().zip(out[gi].iter_mut()) {
                if t.group_sums() == 0 {
                    continue;
                }
                let mismatch = |what: String| OptimError::RecordMismatch {
                    reason: format!("group `{}`: {what}", gr.name),
                };
                let tr = recs
                    .next()
                    .ok_or_else(|| mismatch(format!("no group state for `{}`", t.name())))?;
                if tr.name != t.name()
                    || tr.counters.len() != st.counters.len()
                    || tr.scalars.len() != st.scalars.len()
                    || tr
                        .counters
                        .iter()
                        .zip(&st.counters)
                        .any(|(a, b)| a.0 != b.0)
                    || tr.scalars.iter().zip(&st.scalars).any(|(a, b)| a.0 != b.0)
                {
                    return Err(mismatch(format!(
                        "group state of `{}` does not match transform `{}`",
                        tr.name,
                        t.name()
                    )));
                }
                for (c, r) in st.counters.iter_mut().zip(&tr.counters) {
                    c.1 = r.1;
                }
                for (c, r) in st.scalars.iter_mut().zip(&tr.scalars) {
                    c.1 = r.1;
                }
            }
            if recs.next().is_some() {
                return Err(OptimError::RecordMismatch {
                    reason: format!("group `{}` has more group states than its chain", gr.name),
                });
            }
        }
        for g in &self.groups {
            let has_params = record.params.iter().any(|p| p.group == g.name);
            if g.chain.has_group_phase()
                && has_params
                && !record.groups.iter().any(|r| r.name == g.name)
            {
                return Err(OptimError::RecordMismatch {
                    reason: format!(
                        "group `{}` ({}) keeps group-level state, the record has none for it",
                        g.name,
                        g.chain.label()
                    ),
                });
            }
        }
        Ok(out)
    }

    /// Load a record, creating its tensors on `device` now. Everything is checked first
    /// (version, groups, transforms, state names and shapes); on error the current state is
    /// untouched.
    pub fn load_record(&mut self, record: OptimizerRecord, device: &B::Device) -> Result<()> {
        self.check_record(&record)?;
        let group_states = self.restore_group_states(&record)?;
        let mut params = BTreeMap::new();
        for rec in &record.params {
            let group = self.group_index(&rec.group)?;
            let mut states = self.groups[group]
                .chain
                .init(&rec.path, &rec.shape, device)?;
            restore_states(&self.groups[group], rec, &rec.shape, &mut states, device)?;
            params.insert(
                rec.path.clone(),
                ParamState {
                    group,
                    shape: rec.shape.clone(),
                    states,
                },
            );
        }
        self.params = params;
        self.group_states = group_states;
        self.pending.clear();
        self.steps = record.steps;
        Ok(())
    }

    /// Load a record whose tensors are created lazily, on the device of each parameter's next
    /// gradient (burn's `Optimizer::load_record` has no device). Structure is checked now;
    /// values and shapes when each parameter is next stepped.
    pub fn load_record_lazy(&mut self, record: OptimizerRecord) -> Result<()> {
        self.check_record(&record)?;
        self.group_states = self.restore_group_states(&record)?;
        self.params.clear();
        self.pending = record
            .params
            .into_iter()
            .map(|p| (p.path.clone(), p))
            .collect();
        self.steps = record.steps;
        Ok(())
    }

    fn group_index(&self, name: &str) -> Result<usize> {
        self.groups
            .iter()
            .position(|g| g.name == name)
            .ok_or_else(|| OptimError::RecordMismatch {
                reason: format!("record has parameter group `{name}`, this optimizer has none"),
            })
    }

    fn check_record(&self, record: &OptimizerRecord) -> Result<()> {
        if !(MIN_RECORD_VERSION..=RECORD_VERSION).contains(&record.version) {
            return Err(OptimError::RecordMismatch {
                reason: format!(
                    "record format version {} (this build reads versions {MIN_RECORD_VERSION}..={RECORD_VERSION})",
                    record.version
                ),
            });
        }
        for rec in &record.params {
            let group = &self.groups[self.group_index(&rec.group)?];
            let expected: Vec<&str> = group
                .chain
                .transforms()
                .iter()
                .filter(|t| t.stateful())
                .map(|t| t.name())
                .collect();
            let found: Vec<&str> = rec.transforms.iter().map(|t| t.name.as_str()).collect();
            if expected != found {
                return Err(OptimError::RecordMismatch {
                    reason: format!(
                        "`{}` was saved by transforms {found:?}, group `{}` ({}) has {expected:?}",
                        rec.path,
                        group.name,
                        group.chain.label()
                    ),
                });
            }
        }
        Ok(())
    }
}

/// A transform's state as a record (exact values).
fn transform_record<B: Backend>(name: &str, st: &TransformState<B>) -> TransformRecord {
    TransformRecord {
        name: name.to_string(),
        tensors: st
            .tensors
            .iter()
            .map(|s| TensorRecord {
                name: s.name.to_string(),
                shape: s.shape.clone(),
                values: tensor_values(&s.tensor),
            })
            .collect(),
        codes: st
            .codes
            .iter()
            .map(|c| CodeRecord {
                name: c.name.to_string(),
                shape: c.shape.clone(),
                values: code_values(&c.tensor),
            })
            .collect(),
        counters: st
            .counters
            .iter()
            .map(|(n, v)| (n.to_string(), *v))
            .collect(),
        scalars: st
            .scalars
            .iter()
            .map(|(n, v)| (n.to_string(), *v))
            .collect(),
    }
}

/// `entries` sorted by path; a path given twice is an error.
fn sorted_by_path<B: Backend>(mut entries: Vec<GradEntry<B>>) -> Result<Vec<GradEntry<B>>> {
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    if let Some(w) = entries.windows(2).find(|w| w[0].path == w[1].path) {
        return Err(OptimError::DuplicatePath {
            path: w[0].path.clone(),
        });
    }
    Ok(entries)
}

/// Fill freshly initialised `states` from a record, checking names and shapes.
fn restore_states<B: Backend>(
    group: &ParamGroup<B>,
    rec: &ParamRecord,
    shape: &[usize],
    states: &mut [TransformState<B>],
    device: &B::Device,
) -> Result<()> {
    let mismatch = |reason: String| OptimError::RecordMismatch {
        reason: format!("`{}`: {reason}", rec.path),
    };
    if rec.shape != shape {
        return Err(OptimError::ShapeMismatch {
            path: rec.path.clone(),
            expected: shape.to_vec(),
            actual: rec.shape.clone(),
        });
    }
    let stateful = group
        .chain
        .transforms()
        .iter()
        .zip(states.iter_mut())
        .filter(|(t, _)| t.stateful());
    let mut recs = rec.transforms.iter();
    for (t, st) in stateful {
        let tr = recs
            .next()
            .ok_or_else(|| mismatch(format!("no state for transform `{}`", t.name())))?;
        if tr.name != t.name()
            || tr.tensors.len() != st.tensors.len()
            || tr.codes.len() != st.codes.len()
            || tr.scalars.len() != st.scalars.len()
            || tr.counters.len() != st.counters.len()
        {
            return Err(mismatch(format!(
                "state of `{}` does not match transform `{}`",
                tr.name,
                t.name()
            )));
        }
        for (s, r) in st.tensors.iter_mut().zip(&tr.tensors) {
            let n: usize = s.shape.iter().product();
            if r.name != s.name || r.shape != s.shape || r.values.len() != n {
                return Err(mismatch(format!(
                    "state tensor `{}` {:?} ({} values) where `{}` {:?} was expected",
                    r.name,
                    r.shape,
                    r.values.len(),
                    s.name,
                    s.shape
                )));
            }
            s.tensor =
                Tensor::from_data(burn::tensor::TensorData::new(r.values.clone(), [n]), device);
        }
        for (s, r) in st.codes.iter_mut().zip(&tr.codes) {
            let n: usize = s.shape.iter().product();
            if r.name != s.name || r.shape != s.shape || r.values.len() != n {
                return Err(mismatch(format!(
                    "code tensor `{}` {:?} ({} values) where `{}` {:?} was expected",
                    r.name,
                    r.shape,
                    r.values.len(),
                    s.name,
                    s.shape
                )));
            }
            s.tensor = crate::transform::u8_tensor(r.values.clone(), device);
        }
        for (c, r) in st.counters.iter_mut().zip(&tr.counters) {
            if r.0 != c.0 {
                return Err(mismatch(format!(
                    "counter `{}` where `{}` was expected",
                    r.0, c.0
                )));
            }
            c.1 = r.1;
        }
        for (c, r) in st.scalars.iter_mut().zip(&tr.scalars) {
            if r.0 != c.0 {
                return Err(mismatch(format!(
                    "scalar `{}` where `{}` was expected",
                    r.0, c.0
                )));
            }
            c.1 = r.1;
        }
    }
    Ok(())
}
