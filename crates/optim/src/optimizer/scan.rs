//! Measuring gradients: `Σ g²` per gradient before the step, and each measurement made final
//! under the non-finite policy ([`settle`], also for the gradients measured during a
//! [`GradientScan::InPass`](super::GradientScan::InPass) step).

use std::collections::HashSet;

use burn::tensor::{ElementConversion, Tensor, backend::Backend};

use super::{GradEntry, NonFinitePolicy, StepReport};
use crate::stats::{overflow_safe_sumsq, read_scalars};

/// The gradients of a step after [`settle_gradients`], in path order.
pub(super) struct Settled<B: Backend> {
    /// Path and the gradient the step uses.
    pub(super) entries: Vec<(String, Tensor<B, 1>)>,
    /// Each gradient's final `Σ g²` (as [`settle`] makes it), in the order of `entries`.
    pub(super) sums: Vec<f64>,
    /// The sum of `sums`, added in path order.
    pub(super) total: f64,
}

/// Each gradient's `Σ g²`, in the order of `grads`: one reduction per tensor, read in place on
/// CPU backends with a kernel, else tensor ops with one device read for all. With `in_pass`,
/// host-readable gradients are left to be measured when applied: they count as 0 here and
/// their paths are returned (under `Propagate` without clipping nothing in `prepare` depends
/// on them).
pub(super) fn sum_squares_before_step<B: Backend>(
    grads: &[GradEntry<B>],
    in_pass: bool,
) -> (Vec<f64>, HashSet<String>) {
    let mut unmeasured = HashSet::new();
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
    let sumsq = host
        .into_iter()
        .map(|h| h.unwrap_or_else(|| device.next().unwrap_or(f64::NAN)))
        .collect();
    (sumsq, unmeasured)
}

/// Make every gradient's measurement final under `policy` ([`settle`]), counting non-finite
/// elements and the paths that had them in `report`.
pub(super) fn settle_gradients<B: Backend>(
    grads: Vec<GradEntry<B>>,
    sumsq: Vec<f64>,
    policy: NonFinitePolicy,
    report: &mut StepReport,
) -> Settled<B> {
    let mut total = 0.0f64;
    let mut entries: Vec<(String, Tensor<B, 1>)> = Vec::with_capacity(grads.len());
    let mut sums: Vec<f64> = Vec::with_capacity(grads.len());
    for (e, s) in grads.into_iter().zip(sumsq) {
        let (g, s, bad) = settle(e.grad, s, policy);
        if bad > 0 {
            report.non_finite += bad;
            report.non_finite_paths.push(e.path.clone());
        }
        total += s;
        sums.push(s);
        entries.push((e.path, g));
    }
    Settled {
        entries,
        sums,
        total,
    }
}

/// A gradient's measured `Σ g²` (`s`, non-finite when `g` has NaN/±Inf elements or its f32
/// block sums overflowed) made final under `policy`: the gradient the step uses (non-finite
/// elements zeroed under [`NonFinitePolicy::ZeroGradient`]), the sum the report and clipping
/// use (finite elements only under `Propagate`, +Inf under `Error`/`SkipStep`) and the number
/// of non-finite elements.
pub(super) fn settle<B: Backend>(
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
