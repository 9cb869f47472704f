//! Phase 1 of a step, [`MomentOptimizer::prepare`]: every check and decision before anything
//! changes, one named function per job, then the commit.

use std::collections::{HashMap, HashSet};

use burn::tensor::{Tensor, backend::Backend};

use super::scan::{Settled, settle, settle_gradients, sum_squares_before_step};
use super::{GradEntry, GradientScan, MomentOptimizer, NonFinitePolicy, ParamState, StepReport};
use crate::error::{OptimError, Result};
use crate::stats::read_scalars;
use crate::validate;

/// The outcome of [`MomentOptimizer::prepare`], consumed by `apply` and `finish`.
#[derive(Debug)]
pub struct PreparedStep<B: Backend> {
    pub(super) lr: f64,
    pub(super) grads: HashMap<String, Tensor<B, 1>>,
    pub(super) report: StepReport,
    pub(super) observe: bool,
    /// [`GradientScan::InPass`]: paths whose gradient is measured when applied.
    pub(super) unmeasured: HashSet<String>,
    /// Σg² so far (the report's norm is its root once every gradient is measured).
    pub(super) sumsq: f64,
    /// The clipping factor, when the step clips.
    pub(super) clip_scale: Option<f32>,
    /// Paths whose gradient is not scaled by `clip_scale` yet (a fused CPU step scales it in
    /// its pass; [`MomentOptimizer::apply`] scales it first if that step declines).
    pub(super) deferred: HashSet<String>,
}

impl<B: Backend> PreparedStep<B> {
    /// The report so far (norms, clipping, non-finite counts; with [`GradientScan::InPass`]
    /// only the gradients measured before the step count until [`MomentOptimizer::finish`]).
    pub fn report(&self) -> &StepReport {
        &self.report
    }

    /// Count a gradient measured during the step ([`GradientScan::InPass`], policy
    /// [`NonFinitePolicy::Propagate`]): `s` is its `Σ g²` when the fused pass measured it.
    pub(super) fn measured(&mut self, path: &str, g: &Tensor<B, 1>, s: Option<f64>) {
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

    /// At the end of an [`GradientScan::InPass`] step: measure
    /// the gradients prepared but never applied (they still count), then complete the
    /// report's non-finite paths (sorted) and norm.
    pub(super) fn measure_unapplied(&mut self) {
        let left: Vec<String> = self.unmeasured.drain().collect();
        for path in left {
            if let Some(g) = self.grads.get(&path).cloned() {
                self.measured(&path, &g, None);
            }
        }
        self.report.non_finite_paths.sort();
        self.report.grad_norm = self.sumsq.sqrt();
    }

    /// A step skipped for non-finite gradients ([`NonFinitePolicy::SkipStep`]): nothing to
    /// apply, the norm `NaN`.
    fn skipped(lr: f64, mut report: StepReport, sumsq: f64) -> Self {
        report.skipped = true;
        report.grad_norm = f64::NAN;
        PreparedStep {
            lr,
            grads: HashMap::new(),
            report,
            observe: false,
            unmeasured: Default::default(),
            sumsq,
            clip_scale: None,
            deferred: Default::default(),
        }
    }
}

/// What the non-finite policy makes of a step once every gradient is measured (a refusal is
/// an error instead).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NonFiniteVerdict {
    /// Go on with the step (no non-finite gradient, or the policy zeroes or propagates them).
    Proceed,
    /// Skip the whole step ([`NonFinitePolicy::SkipStep`]).
    Skip,
}

impl<B: Backend> MomentOptimizer<B> {
    /// Phase 1 of a step: validate `lr` and every gradient, create state for new parameters,
    /// apply the non-finite policy and global clipping. On error nothing has changed, and the
    /// observer is told ([`Observer::on_refused`](crate::Observer::on_refused)).
    pub fn prepare(&mut self, lr: f64, grads: Vec<GradEntry<B>>) -> Result<PreparedStep<B>> {
        self.prepare_owned(lr, grads, &|_| true, &mut || Ok(()))
    }

    /// [`MomentOptimizer::prepare`] for one shard of a sharded optimizer (ZeRO stage 1):
    /// every gradient is validated and counts in the global statistics (non-finite policy,
    /// gradient norm, clipping — so every peer takes the same decisions), but state is created
    /// and kept, and [`MomentOptimizer::apply`] updates, only for the paths `owns` accepts.
    /// `agree` runs once everything is checked and nothing is changed yet; if it fails (a
    /// peer's check failed: [`OptimError::NotAgreed`]) its error is returned and nothing
    /// changes. Chains that reduce over all their tensors (group phase: Prodigy, Adam-mini's…)
    /// need every tensor and are refused ([`OptimError::UnshardableGroup`]) unless `owns`
    /// accepts all paths.
    ///
    /// A refused step (any error) is reported to the observer
    /// ([`Observer::on_refused`](crate::Observer::on_refused)).
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

    /// [`MomentOptimizer::prepare_owned`] without the observer's refusal notice: the checks
    /// and decisions in order, then (once `agree` passed) the commit.
    fn try_prepare(
        &mut self,
        lr: f64,
        grads: Vec<GradEntry<B>>,
        owns: &dyn Fn(&str) -> bool,
        agree: &mut dyn FnMut() -> Result<()>,
    ) -> Result<PreparedStep<B>> {
        self.check_learning_rates(lr)?;
        let mut grads = sorted_by_path(grads)?;
        let all_owned = grads.iter().all(|e| owns(&e.path));
        if !all_owned {
            self.check_shardable()?;
        }
        let shapes = param_shapes(&grads);

        // Shapes, groups and fresh state: into a scratch map, merged only on success.
        let fresh = self.fresh_states(&grads, owns)?;
        let fresh_group: HashMap<&str, usize> =
            fresh.iter().map(|(p, s)| (p.as_str(), s.group)).collect();
        let values = self.take_group_phase_values(&mut grads, &fresh_group)?;

        let in_pass = self.scan == GradientScan::InPass && all_owned;
        let (sumsq, unmeasured) = sum_squares_before_step(&grads, in_pass);
        let mut report = self.new_report(lr);
        let Settled {
            mut entries,
            sums,
            total,
        } = settle_gradients(grads, sumsq, self.non_finite, &mut report);
        if self.non_finite_verdict(&report)? == NonFiniteVerdict::Skip {
            agree()?;
            return Ok(PreparedStep::skipped(lr, report, total));
        }
        self.set_norm_and_clip_factor(&mut report, total);
        self.check_squares_fit_f32(&entries, &sums, report.clip_factor, &fresh_group, &shapes)?;

        agree()?;
        // Commit: everything below cannot fail.
        if !all_owned {
            entries.retain(|(path, _)| owns(path));
        }
        self.commit_fresh_states(fresh);
        let clip_scale = report.clipped.then_some(report.clip_factor as f32);
        let (entries, deferred) = self.scale_or_defer_clipping(entries, clip_scale);
        self.steps += 1;
        report.step = self.steps;
        self.group_phase(lr, &entries, &values);
        let observe = self.observer_wants_step();
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

    /// `lr`, and `lr` times every group's multiplier, must be valid learning rates.
    fn check_learning_rates(&self, lr: f64) -> Result<()> {
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
        Ok(())
    }

    /// A sharded step (some paths not owned) is refused when a chain reduces over all its
    /// tensors (group phase), which a peer cannot do with part of them.
    fn check_shardable(&self) -> Result<()> {
        if let Some(g) = self.groups.iter().find(|g| g.chain.has_group_phase()) {
            return Err(OptimError::UnshardableGroup {
                group: g.name.clone(),
                chain: g.chain.label().to_string(),
            });
        }
        Ok(())
    }

    /// Check shapes and routing of `grads` and build state for parameters seen for the first
    /// time (restored from a lazily loaded record when there is one). Changes nothing.
    /// State is built only for the paths `owns` accepts; the others are checked.
    pub(super) fn fresh_states(
        &self,
        grads: &[GradEntry<B>],
        owns: &dyn Fn(&str) -> bool,
    ) -> Result<Vec<(String, ParamState<B>)>> {
        let mut fresh: Vec<(String, ParamState<B>)> = Vec::new();
        for e in grads {
            check_grad_shape(e)?;
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
                super::records::restore_states(
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

    /// Take the parameter values out of `grads` (every entry's `param` is `None` afterwards):
    /// those of chains with a group phase are returned by path, checked for presence and
    /// length; the others are dropped.
    fn take_group_phase_values(
        &self,
        grads: &mut [GradEntry<B>],
        fresh_group: &HashMap<&str, usize>,
    ) -> Result<HashMap<String, Tensor<B, 1>>> {
        let mut values: HashMap<String, Tensor<B, 1>> = HashMap::new();
        for e in grads.iter_mut() {
            let group = self.known_group(fresh_group, &e.path);
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
        Ok(values)
    }

    /// The report of a step at `lr` before anything is measured (nothing clipped, nothing
    /// non-finite, nothing updated; `step` the counter before the step).
    fn new_report(&self, lr: f64) -> StepReport {
        StepReport {
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
        }
    }

    /// The non-finite policy's decision once the gradients are measured: refuse
    /// ([`NonFinitePolicy::Error`]), skip, or proceed.
    fn non_finite_verdict(&self, report: &StepReport) -> Result<NonFiniteVerdict> {
        if report.non_finite == 0 {
            return Ok(NonFiniteVerdict::Proceed);
        }
        match self.non_finite {
            NonFinitePolicy::Error => Err(OptimError::NonFiniteGradient {
                first_path: report.non_finite_paths[0].clone(),
                paths: report.non_finite_paths.clone(),
                count: report.non_finite,
            }),
            NonFinitePolicy::SkipStep => Ok(NonFiniteVerdict::Skip),
            NonFinitePolicy::ZeroGradient | NonFinitePolicy::Propagate => {
                Ok(NonFiniteVerdict::Proceed)
            }
        }
    }

    /// The global norm `√total` and, when it exceeds the threshold, the clipping factor
    /// `max / (norm + 1e-6)` (torch's `clip_grad_norm_`).
    fn set_norm_and_clip_factor(&self, report: &mut StepReport, total: f64) {
        report.grad_norm = total.sqrt();
        if let Some(max) = self.max_grad_norm
            && report.grad_norm > max
        {
            report.clip_factor = max / (report.grad_norm + 1e-6);
            report.clipped = true;
        }
    }

    /// Transforms that square the gradient in f32 overflow to NaN parameters (as their
    /// references do) once Σg² nears f32::MAX: refuse such a step while nothing has changed.
    /// A sixteenth of f32::MAX leaves room for the ε terms and the f32 rounding of the sums.
    /// Every gradient counts, owned or not, so that every peer refuses the same step.
    fn check_squares_fit_f32(
        &self,
        entries: &[(String, Tensor<B, 1>)],
        sums: &[f64],
        clip_factor: f64,
        fresh_group: &HashMap<&str, usize>,
        shapes: &HashMap<String, Vec<usize>>,
    ) -> Result<()> {
        let limit = f64::from(f32::MAX) / 16.0;
        let clip2 = clip_factor * clip_factor;
        for ((path, _), &s) in entries.iter().zip(sums) {
            // (NaN sums — already handled by the non-finite policy — compare false.)
            if s * clip2 <= limit || s.is_nan() {
                continue;
            }
            let group = self.known_group(fresh_group, path).or_else(|| {
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
        Ok(())
    }

    /// Keep the state created for first-seen parameters (the lazily loaded records it was
    /// restored from are consumed).
    fn commit_fresh_states(&mut self, fresh: Vec<(String, ParamState<B>)>) {
        for (path, st) in fresh {
            self.pending.remove(&path);
            self.params.insert(path, st);
        }
    }

    /// Clipping: gradients a fused CPU step will read are scaled inside its pass
    /// (`FusedStep::step_scaled`: no scaled copy written) and their paths returned as
    /// deferred; the others now, in place where they are not shared. Either way each element
    /// is `g·c` rounded once, as `mul_scalar`.
    fn scale_or_defer_clipping(
        &self,
        entries: Vec<(String, Tensor<B, 1>)>,
        clip_scale: Option<f32>,
    ) -> (Vec<(String, Tensor<B, 1>)>, HashSet<String>) {
        let mut deferred = HashSet::new();
        let Some(c) = clip_scale else {
            return (entries, deferred);
        };
        let entries = entries
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
        (entries, deferred)
    }
}

/// A gradient must have its parameter's shape, and as many elements.
fn check_grad_shape<B: Backend>(e: &GradEntry<B>) -> Result<()> {
    if e.grad_shape != e.param_shape || e.grad.dims()[0] != e.param_shape.iter().product::<usize>()
    {
        return Err(OptimError::ShapeMismatch {
            path: e.path.clone(),
            expected: e.param_shape.clone(),
            actual: e.grad_shape.clone(),
        });
    }
    Ok(())
}

/// Each gradient's parameter shape, by path.
fn param_shapes<B: Backend>(grads: &[GradEntry<B>]) -> HashMap<String, Vec<usize>> {
    grads
        .iter()
        .map(|e| (e.path.clone(), e.param_shape.clone()))
        .collect()
}

/// `entries` sorted by path; a path given twice is an error.
pub(super) fn sorted_by_path<B: Backend>(
    mut entries: Vec<GradEntry<B>>,
) -> Result<Vec<GradEntry<B>>> {
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    if let Some(w) = entries.windows(2).find(|w| w[0].path == w[1].path) {
        return Err(OptimError::DuplicatePath {
            path: w[0].path.clone(),
        });
    }
    Ok(entries)
}
