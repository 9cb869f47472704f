//! The composable core: per-tensor [`Transform`]s with `init`/`update` and their state,
//! chained into a [`Chain`](crate::Chain) (optax style; `crate::chain`).
//!
//! A transform maps an incoming *direction* (at the head of a chain: the gradient) to an
//! outgoing one. Every transform upstream of [`scale_by_learning_rate`] produces an ascent-like
//! direction (same sign as the gradient); `scale_by_learning_rate` multiplies by `-lr` — the
//! only place where the sign of the step is decided. The engine then adds the final update to
//! the parameter: `θ ← θ + u`.
//!
//! Tensors are handled flat (`Tensor<B, 1>`, row-major) together with their logical shape, so
//! transforms are object-safe and rank-generic; shape-aware transforms reshape as they need.
//!
//! [`scale_by_learning_rate`]: crate::transforms::scale_by_learning_rate

use std::any::Any;
use std::fmt::Debug;

use burn::tensor::{Int, Tensor, backend::Backend};

use crate::error::Result;

/// What a transform may read about the current step and parameter.
#[derive(Debug)]
pub struct StepCtx<'a, B: Backend> {
    /// Learning rate of this step for this parameter (scheduler value × group multiplier).
    pub lr: f64,
    /// The parameter before this step, flat.
    pub param: &'a Tensor<B, 1>,
    /// The parameter's logical shape.
    pub shape: &'a [usize],
    /// The parameter's path, e.g. `blocks.0.attn.q.weight`.
    pub path: &'a str,
    /// This transform's group-level state (see [`Transform::group_sums`]); empty for
    /// transforms without one.
    pub group: &'a TransformState<B>,
}

/// One named state tensor (e.g. `exp_avg`), stored flat with its logical shape.
#[derive(Debug, Clone)]
pub struct StateTensor<B: Backend> {
    /// State kind, using the reference implementation's name (`exp_avg`, `exp_avg_sq`, …).
    pub name: &'static str,
    /// Logical shape.
    pub shape: Vec<usize>,
    /// Values, flat, row-major.
    pub tensor: Tensor<B, 1>,
}

impl<B: Backend> StateTensor<B> {
    /// A zero-filled state tensor.
    pub fn zeros(name: &'static str, shape: &[usize], device: &B::Device) -> Self {
        let n = shape.iter().product::<usize>();
        Self {
            name,
            shape: shape.to_vec(),
            tensor: Tensor::zeros([n], device),
        }
    }

    /// Exact bytes this tensor occupies (elements × element size of its dtype).
    pub fn bytes(&self) -> u64 {
        let n: usize = self.shape.iter().product();
        (n * self.tensor.dtype().size()) as u64
    }
}

/// One named tensor of 8-bit codes (e.g. the quantized `state1` of 8-bit Adam), stored flat as
/// a `u8` integer tensor with its logical shape.
#[derive(Debug, Clone)]
pub struct CodeTensor<B: Backend> {
    /// State kind, using the reference implementation's name (`state1`, `state2`, …).
    pub name: &'static str,
    /// Logical shape.
    pub shape: Vec<usize>,
    /// Codes, flat, row-major, dtype `u8`.
    pub tensor: Tensor<B, 1, Int>,
}

impl<B: Backend> CodeTensor<B> {
    /// A tensor of `u8` codes, all equal to `code`.
    pub fn filled(name: &'static str, shape: &[usize], code: u8, device: &B::Device) -> Self {
        let n = shape.iter().product::<usize>();
        Self {
            name,
            shape: shape.to_vec(),
            tensor: u8_tensor(vec![code; n], device),
        }
    }

    /// Exact bytes this tensor occupies (elements × element size of its dtype).
    pub fn bytes(&self) -> u64 {
        let n: usize = self.shape.iter().product();
        (n * self.tensor.dtype().size()) as u64
    }
}

// Code tensors' storage is the 8-bit codec's business (kept reachable here).
pub use crate::quant::{code_dtype, u8_tensor};

/// A transform's state for one parameter: named float tensors, named code tensors and named
/// integer counters.
#[derive(Debug, Clone)]
pub struct TransformState<B: Backend> {
    /// Named tensors, in a fixed order defined by the transform's `init`.
    pub tensors: Vec<StateTensor<B>>,
    /// Named `u8` code tensors (quantized state), in a fixed order defined by `init`.
    pub codes: Vec<CodeTensor<B>>,
    /// Named counters (e.g. `step`), in a fixed order defined by `init`.
    pub counters: Vec<(&'static str, u64)>,
    /// Named host-side f64 scalars (e.g. Schedule-Free's `weight_sum`), in a fixed order
    /// defined by `init`; recorded exactly, 8 bytes each.
    pub scalars: Vec<(&'static str, f64)>,
}

impl<B: Backend> Default for TransformState<B> {
    fn default() -> Self {
        Self::empty()
    }
}

impl<B: Backend> TransformState<B> {
    /// A stateless transform's state.
    pub fn empty() -> Self {
        Self {
            tensors: Vec::new(),
            codes: Vec::new(),
            counters: Vec::new(),
            scalars: Vec::new(),
        }
    }

    /// Float tensors and counters, no codes.
    pub fn new(tensors: Vec<StateTensor<B>>, counters: Vec<(&'static str, u64)>) -> Self {
        Self {
            tensors,
            codes: Vec::new(),
            counters,
            scalars: Vec::new(),
        }
    }

    /// The scalar called `name`, if any.
    pub fn scalar(&self, name: &str) -> Option<f64> {
        self.scalars
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
    }

    /// The code tensor called `name`, if any.
    pub fn code(&self, name: &str) -> Option<&Tensor<B, 1, Int>> {
        self.codes
            .iter()
            .find(|t| t.name == name)
            .map(|t| &t.tensor)
    }

    /// The state tensor called `name`, if any.
    pub fn tensor(&self, name: &str) -> Option<&Tensor<B, 1>> {
        self.tensors
            .iter()
            .find(|t| t.name == name)
            .map(|t| &t.tensor)
    }

    /// The counter called `name`, if any.
    pub fn counter(&self, name: &str) -> Option<u64> {
        self.counters
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
    }

    /// The counter called `name`, if any, to advance.
    pub fn counter_mut(&mut self, name: &str) -> Option<&mut u64> {
        self.counters
            .iter_mut()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
    }

    /// Exact bytes of state: tensors, codes, plus counters (8 bytes each).
    pub fn bytes(&self) -> u64 {
        self.tensors.iter().map(StateTensor::bytes).sum::<u64>()
            + self.codes.iter().map(CodeTensor::bytes).sum::<u64>()
            + 8 * (self.counters.len() + self.scalars.len()) as u64
    }
}

/// A per-tensor gradient transformation: `init` builds its state for one parameter, `update`
/// maps an incoming direction to an outgoing one and advances the state.
///
/// Implementations are immutable hyper-parameter holders (`Send + Sync`); all mutable data lives
/// in [`TransformState`]. They are `'static` values (`Any`), so that
/// [`fused::plan`](crate::fused::plan) can recognise the transforms of a chain by type.
pub trait Transform<B: Backend>: Send + Sync + Debug + Any {
    /// Stable name, used in records (`scale_by_adam`, …).
    fn name(&self) -> &'static str;

    /// Whether the transform keeps per-parameter state (stateless ones are not recorded).
    fn stateful(&self) -> bool {
        true
    }

    /// Whether the transform accumulates squares (or outer products) of the gradient in f32
    /// in a way that turns an overflow into NaN parameters, as its reference does (Adafactor's
    /// factored statistics, CAME, SOAP). The engine refuses a step whose gradient could
    /// overflow there ([`OptimError::GradientTooLarge`](crate::OptimError::GradientTooLarge)).
    fn squares_gradient_in_f32(&self) -> bool {
        false
    }

    /// Fresh state for a parameter of `shape`. Errors when the transform cannot handle the
    /// shape — checked once, before any step touches the parameter.
    fn init(&self, path: &str, shape: &[usize], device: &B::Device) -> Result<TransformState<B>>;

    /// Tables this transform uses for every parameter (e.g. quantization maps), under the names
    /// the reference gives them in its state. Constants, not per-parameter state: they are
    /// neither recorded nor counted as state memory.
    fn constants(&self) -> Vec<(&'static str, Vec<f32>)> {
        Vec::new()
    }

    /// Feed a curvature estimate for this parameter (e.g. Sophia's Hessian EMA, every k steps;
    /// see [`MomentOptimizer::update_curvature`](crate::MomentOptimizer::update_curvature)).
    /// Returns whether the transform uses curvature (the default: no, and nothing changes).
    fn update_curvature(&self, estimate: Tensor<B, 1>, state: &mut TransformState<B>) -> bool {
        let _ = (estimate, state);
        false
    }

    /// The parameter to *evaluate* from the training parameter, when the transform keeps a
    /// separate evaluation point (Schedule-Free's averaged `x`). Default: none.
    fn eval_view(&self, param: Tensor<B, 1>, state: &TransformState<B>) -> Option<Tensor<B, 1>> {
        let _ = (param, state);
        None
    }

    /// Inverse of [`Transform::eval_view`]: the training parameter from the evaluation one.
    fn train_view(&self, param: Tensor<B, 1>, state: &TransformState<B>) -> Option<Tensor<B, 1>> {
        let _ = (param, state);
        None
    }

    /// Number of per-tensor partial sums this transform reduces over *all* tensors of its group
    /// before any of them updates (Prodigy's distance estimate); 0 (the default) for ordinary
    /// per-tensor transforms. A transform with group sums must be the first of its chain: its
    /// [`Transform::contribute`] sees the (clipped) gradient.
    fn group_sums(&self) -> usize {
        0
    }

    /// Fresh group-level state (host counters and scalars only), kept once per parameter
    /// group, recorded with the optimizer and visible to every tensor's step as
    /// [`StepCtx::group`]. Default: empty.
    fn init_group(&self) -> TransformState<B> {
        TransformState::empty()
    }

    /// Group phase 1, for each tensor of the group with a gradient, before any tensor updates:
    /// advance the per-tensor state that does not depend on the group result and return this
    /// tensor's [`Transform::group_sums`] partial sums (one-element tensors, read back together).
    fn contribute(
        &self,
        ctx: &StepCtx<'_, B>,
        grad: &Tensor<B, 1>,
        state: &mut TransformState<B>,
    ) -> Vec<Tensor<B, 1>> {
        let _ = (ctx, grad, state);
        Vec::new()
    }

    /// Group phase 2, once per group and step: fold the group's totals (each partial sum added
    /// over the group's tensors in path order, in f64) into the group state. `lr` is the group's
    /// learning rate for this step.
    fn reduce(&self, lr: f64, sums: &[f64], group: &mut TransformState<B>) {
        let _ = (lr, sums, group);
    }

    /// Transform `input` (flat, same length as the parameter) and advance `state`.
    fn update(
        &self,
        ctx: &StepCtx<'_, B>,
        input: Tensor<B, 1>,
        state: &mut TransformState<B>,
    ) -> Tensor<B, 1>;
}
