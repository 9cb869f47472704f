//! Configuring the engine: [`MomentOptimizerBuilder`], [`GradientScan`] and the checks
//! [`MomentOptimizerBuilder::build`] runs.

use std::collections::BTreeMap;

use burn::tensor::backend::Backend;

use super::{MomentOptimizer, NonFinitePolicy, ParamGroup};
use crate::error::{OptimError, Result};
use crate::validate;

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
    /// ([`PreparedStep::report`](super::PreparedStep::report) shows only the gradients
    /// measured first). Gradients not readable on the host (GPU backends) and the steps of a
    /// sharded optimizer are measured before the step, as with `BeforeStep`.
    InPass,
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
    /// A builder with no groups yet ([`MomentOptimizer::builder`]).
    pub(super) fn new() -> Self {
        Self {
            groups: Vec::new(),
            max_grad_norm: None,
            non_finite: NonFinitePolicy::default(),
            scan: GradientScan::default(),
        }
    }

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
        self.check_groups()?;
        if let Some(c) = self.max_grad_norm {
            validate::positive("optimizer", "max_grad_norm", c)?;
        }
        self.check_gradient_scan()?;
        self.check_group_sums_lead()?;
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

    /// At least one group; multipliers non-negative; names unique.
    fn check_groups(&self) -> Result<()> {
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
        Ok(())
    }

    /// [`GradientScan::InPass`] only with [`NonFinitePolicy::Propagate`] and no clipping.
    fn check_gradient_scan(&self) -> Result<()> {
        if self.scan != GradientScan::InPass {
            return Ok(());
        }
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
        Ok(())
    }

    /// A transform with group sums (e.g. Prodigy) must lead its chain.
    fn check_group_sums_lead(&self) -> Result<()> {
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
        Ok(())
    }
}
