//! Parameter groups: [`ParamGroup`], routing a parameter to its group, and the group phase of
//! chains that reduce over all their tensors.

use std::collections::HashMap;

use burn::tensor::{Tensor, backend::Backend};

use super::MomentOptimizer;
use crate::chain::Chain;
use crate::select::Selector;
use crate::stats::read_scalars;
use crate::transform::{StepCtx, TransformState};

/// A set of parameters with its own optimizer chain and learning-rate multiplier.
#[derive(Debug, Clone)]
pub struct ParamGroup<B: Backend> {
    pub(super) name: String,
    pub(super) selector: Selector,
    pub(super) chain: Chain<B>,
    pub(super) lr_mult: f64,
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

impl<B: Backend> MomentOptimizer<B> {
    /// The groups, in match order.
    pub fn groups(&self) -> &[ParamGroup<B>] {
        &self.groups
    }

    /// The group-level states of a group's chain (one per transform, empty for transforms
    /// without one; e.g. Prodigy's `d`, `d_max`), if the group exists.
    pub fn group_state(&self, group: &str) -> Option<&[TransformState<B>]> {
        let i = self.groups.iter().position(|g| g.name == group)?;
        Some(self.group_states[i].as_slice())
    }

    /// Name of the group that owns `path` with `shape`, if any.
    pub fn group_of(&self, path: &str, shape: &[usize]) -> Option<&str> {
        self.resolve_group(path, shape)
            .map(|g| self.groups[g].name.as_str())
    }

    /// Index of the first group whose selector matches `path` with `shape`.
    pub(super) fn resolve_group(&self, path: &str, shape: &[usize]) -> Option<usize> {
        self.groups
            .iter()
            .position(|g| g.selector.matches(path, shape))
    }

    /// The group of `path` as far as known without resolving selectors: from the state about
    /// to be created (`fresh_group`), else from the state kept.
    pub(super) fn known_group(
        &self,
        fresh_group: &HashMap<&str, usize>,
        path: &str,
    ) -> Option<usize> {
        fresh_group
            .get(path)
            .copied()
            .or_else(|| self.params.get(path).map(|p| p.group))
    }

    /// The group phase of chains that reduce over all their tensors (see
    /// [`Transform::group_sums`](crate::Transform::group_sums)): every tensor contributes its
    /// partial sums, one read-back for all, then each group's transform folds its totals into
    /// its group state.
    pub(super) fn group_phase(
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
}
