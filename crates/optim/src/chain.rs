//! [`Chain`]: a named sequence of [`Transform`]s, the description of an optimizer, and the
//! one-pass step derived from it ([`crate::fused::plan`]).

use std::sync::Arc;

use burn::tensor::{Tensor, backend::Backend};

use crate::error::Result;
use crate::fused::FusedStep;
use crate::transform::{StepCtx, Transform, TransformState};

/// A sequence of transforms applied in order; a named optimizer is a `Chain`.
///
/// Its one-pass implementation, when it has one, is derived from the transforms themselves
/// ([`crate::fused::plan`] recognises the chain's shape and reads the hyper-parameters off its
/// transforms), so the chain and its fused step cannot disagree.
#[derive(Debug, Clone)]
pub struct Chain<B: Backend> {
    label: String,
    transforms: Vec<Arc<dyn Transform<B>>>,
    /// [`crate::fused::plan`] of `transforms`, kept up to date by [`Chain::then`]; `None` also
    /// after [`Chain::composed`].
    fused: Option<Arc<dyn FusedStep<B>>>,
    /// [`Chain::composed`] was called: never derive a fused step.
    composed_only: bool,
}

impl<B: Backend> Chain<B> {
    /// An empty chain with a human-readable label (e.g. `adamw`).
    pub fn new(label: impl Into<String>) -> Self {
        Self {
            label: label.into(),
            transforms: Vec::new(),
            fused: None,
            composed_only: false,
        }
    }

    /// The chain's one-pass implementation ([`crate::fused::plan`] of its transforms), if it
    /// has one; the engine uses it where it applies.
    pub fn fused(&self) -> Option<&Arc<dyn FusedStep<B>>> {
        self.fused.as_ref()
    }

    /// The same chain without its fused implementation, now and after further
    /// [`Chain::then`]s (always composed; benchmarks and tests compare the two).
    pub fn composed(mut self) -> Self {
        self.fused = None;
        self.composed_only = true;
        self
    }

    /// Append a transform (and derive the fused step of the longer chain).
    pub fn then(mut self, t: impl Transform<B> + 'static) -> Self {
        self.transforms.push(Arc::new(t));
        self.fused = match self.composed_only {
            true => None,
            false => crate::fused::plan(&self.transforms),
        };
        self
    }

    /// Append a transform only when `cond` holds (for optional steps like weight decay).
    pub fn then_if(self, cond: bool, t: impl Transform<B> + 'static) -> Self {
        if cond { self.then(t) } else { self }
    }

    /// The chain's label.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Names of the transforms, in order (the chain's structural identity, used by records).
    pub fn transform_names(&self) -> Vec<&'static str> {
        self.transforms.iter().map(|t| t.name()).collect()
    }

    /// The transforms, in order.
    pub fn transforms(&self) -> &[Arc<dyn Transform<B>>] {
        &self.transforms
    }

    /// Fresh state for every transform.
    pub fn init(
        &self,
        path: &str,
        shape: &[usize],
        device: &B::Device,
    ) -> Result<Vec<TransformState<B>>> {
        self.transforms
            .iter()
            .map(|t| t.init(path, shape, device))
            .collect()
    }

    /// Fresh group-level state for every transform (see [`Transform::init_group`]).
    pub fn init_group(&self) -> Vec<TransformState<B>> {
        self.transforms.iter().map(|t| t.init_group()).collect()
    }

    /// Whether a transform of the chain squares the gradient in f32 (see
    /// [`Transform::squares_gradient_in_f32`]).
    pub fn squares_gradient_in_f32(&self) -> bool {
        self.transforms()
            .iter()
            .any(|t| t.squares_gradient_in_f32())
    }

    /// Whether any transform reduces over the whole group ([`Transform::group_sums`]).
    pub fn has_group_phase(&self) -> bool {
        self.transforms.iter().any(|t| t.group_sums() > 0)
    }

    /// Run the whole chain on `grad`; `states` must come from [`Chain::init`] and
    /// `group_states` from [`Chain::init_group`]. `ctx.group` is replaced by each transform's
    /// own group state.
    pub fn update(
        &self,
        ctx: &StepCtx<'_, B>,
        grad: Tensor<B, 1>,
        states: &mut [TransformState<B>],
        group_states: &[TransformState<B>],
    ) -> Tensor<B, 1> {
        debug_assert_eq!(states.len(), self.transforms.len());
        debug_assert_eq!(group_states.len(), self.transforms.len());
        self.transforms
            .iter()
            .zip(states.iter_mut())
            .zip(group_states)
            .fold(grad, |u, ((t, s), gs)| {
                let ctx = StepCtx {
                    lr: ctx.lr,
                    param: ctx.param,
                    shape: ctx.shape,
                    path: ctx.path,
                    group: gs,
                };
                t.update(&ctx, u, s)
            })
    }
}
