//! The engine: parameter groups, global-norm clipping, the non-finite policy, the observer
//! hook, state accounting and records, over flat named tensors.
//!
//! [`MomentOptimizer`] does not know about burn modules; [`ModuleOptimizer`](crate::ModuleOptimizer)
//! walks a module with paths and drives it. A step runs in three phases:
//! [`prepare`](MomentOptimizer::prepare) (validate everything, resolve groups, create state,
//! apply the non-finite policy and clipping — nothing is modified if it fails),
//! [`apply`](MomentOptimizer::apply) once per parameter, and [`finish`](MomentOptimizer::finish).
//!
//! The engine is split by responsibility: `builder` (configuration and its validation),
//! `groups` (parameter groups, routing, the group phase), `prepare` (phase 1, one named
//! function per job), `scan` (measuring gradients, the non-finite policy per gradient),
//! `apply` (phase 2: fused or composed update), `step` (phase 3 and the flat one-call step),
//! `curvature` (feeding curvature estimates), `observe` (the observer hook), `memory` (state
//! accounting) and `records` (saving and loading state).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use burn::tensor::{Tensor, backend::Backend};

use crate::chain::Chain;
use crate::observer::Observer;
use crate::record::ParamRecord;
use crate::select::Selector;
use crate::transform::TransformState;

mod apply;
mod builder;
mod curvature;
mod groups;
mod memory;
mod observe;
mod prepare;
mod records;
mod scan;
mod step;

pub use crate::observer::{NonFinitePolicy, StepReport};
pub use builder::{GradientScan, MomentOptimizerBuilder};
pub use groups::ParamGroup;
pub use memory::{ParamMemory, StateMemory};
pub use prepare::PreparedStep;
pub use step::ParamTensor;

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
    /// (and a step fails with
    /// [`OptimError::MissingParameterValue`](crate::OptimError::MissingParameterValue) for
    /// those).
    pub param: Option<Tensor<B, 1>>,
}

/// The state the engine keeps for one parameter.
#[derive(Debug, Clone)]
struct ParamState<B: Backend> {
    group: usize,
    shape: Vec<usize>,
    states: Vec<TransformState<B>>,
}

/// The optimizer engine. See the [module docs](self).
#[derive(Clone)]
pub struct MomentOptimizer<B: Backend> {
    groups: Vec<ParamGroup<B>>,
    /// Group-level transform state (see
    /// [`Transform::group_sums`](crate::Transform::group_sums)), per group, per transform.
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
        MomentOptimizerBuilder::new()
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

    /// Report of the last step call, if any.
    pub fn last_report(&self) -> Option<&StepReport> {
        self.last_report.as_ref()
    }

    /// The chain states of a parameter, if it has been stepped.
    pub fn state(&self, path: &str) -> Option<&[TransformState<B>]> {
        self.params.get(path).map(|p| p.states.as_slice())
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
}
