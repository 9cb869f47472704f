//! Replaying one reference case on the optimizer built from it: the recorded steps (curvature
//! estimates, gradients, every step's parameters compared), the final state, the verdict.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use moment_optim::{GradEntry, MomentOptimizer, ParamTensor, TransformState};
use serde_json::Value;

use super::{
    ABSMAX_RTOL, CUDA_MODE_CODE_AGREEMENT, CaseError, CaseResult, CaseSetup, ParamSpec, RunOptions,
    f32s, malformed,
};

/// The allowed error of a case's comparisons.
#[derive(Clone, Copy)]
struct Tolerance {
    rtol: f64,
    atol: f64,
    /// The bitsandbytes CPU-path mode: 8-bit block max-abs at [`ABSMAX_RTOL`], every code equal.
    cpu_path: bool,
}

/// Values out of tolerance: the case's error at once, or (`keep_going`: the whole trajectory
/// is compared, so the worst ratio covers every step) the first one, reported at the end.
struct Failures {
    keep_going: bool,
    first: Option<String>,
}

impl Failures {
    fn tolerance(&mut self, m: String) -> Result<(), CaseError> {
        if !self.keep_going {
            return Err(CaseError::Tolerance(m));
        }
        self.first.get_or_insert(m);
        Ok(())
    }
}

/// One case being replayed on backend `B`.
pub(super) struct Replay<'a, B: Backend> {
    class: &'a str,
    lr: f64,
    specs: Vec<ParamSpec>,
    steps: &'a [Value],
    optim: MomentOptimizer<B>,
    params: Vec<ParamTensor<B>>,
    device: B::Device,
    tolerance: Tolerance,
    failures: Failures,
}

/// A flat tensor of `values` on `device`.
fn flat<B: Backend>(values: Vec<f32>, device: &B::Device) -> Tensor<B, 1> {
    let n = values.len();
    Tensor::from_data(TensorData::new(values, [n]), device)
}

impl<'a, B: Backend> Replay<'a, B> {
    /// The optimizer the case's setup ported, and its parameters at their initial values.
    pub(super) fn new(setup: CaseSetup<'a, B>, options: &RunOptions, keep_going: bool) -> Self {
        let CaseSetup {
            class,
            chain,
            lr,
            rtol,
            atol,
            specs,
            steps,
        } = setup;
        let device = Default::default();
        let params = specs
            .iter()
            .map(|s| ParamTensor {
                path: s.name.clone(),
                shape: s.shape.clone(),
                value: flat(s.init.clone(), &device),
                grad: None,
            })
            .collect();
        Replay {
            class,
            lr,
            specs,
            steps,
            optim: MomentOptimizer::new(chain),
            params,
            device,
            tolerance: Tolerance {
                rtol,
                atol,
                cpu_path: options.port.bnb_kernel == moment_optim::BnbKernel::Cpu,
            },
            failures: Failures {
                keep_going,
                first: None,
            },
        }
    }

    /// Every recorded step, in order: its curvature estimates (if any), its gradients, then
    /// the parameters compared with the recorded ones.
    pub(super) fn steps(&mut self, result: &mut CaseResult) -> Result<(), CaseError> {
        let steps = self.steps;
        for (t, step) in steps.iter().enumerate() {
            // Curvature estimates (Sophia): fed before the step, as `update_hessian()` /
            // `step(hessian=…)` do.
            if let Some(h) = step.get("hessian_grads") {
                self.feed_curvature(t, h)?;
            }
            self.step(t, step, result)?;
        }
        Ok(())
    }

    /// Step `t`'s recorded curvature estimates, one per parameter.
    fn feed_curvature(&mut self, t: usize, h: &Value) -> Result<(), CaseError> {
        let specs = &self.specs;
        let h = h
            .as_array()
            .ok_or_else(|| malformed("steps[].hessian_grads"))?;
        if h.len() != specs.len() {
            return Err(malformed("steps[].hessian_grads arity"));
        }
        let entries = specs
            .iter()
            .zip(h)
            .map(|(s, v)| {
                Ok(GradEntry {
                    path: s.name.clone(),
                    param_shape: s.shape.clone(),
                    grad_shape: s.shape.clone(),
                    grad: flat(f32s(v, "steps[].hessian_grads")?, &self.device),
                    param: None,
                })
            })
            .collect::<Result<Vec<_>, CaseError>>()?;
        let used = self
            .optim
            .update_curvature(entries)
            .map_err(|e| CaseError::Fail(format!("step {}: curvature: {e}", t + 1)))?;
        if used == 0 {
            return Err(CaseError::Unsupported(format!(
                "`{}` takes no curvature estimates in moment",
                self.class
            )));
        }
        Ok(())
    }

    /// Step `t`: the recorded gradients in, the parameters compared with the recorded ones.
    fn step(&mut self, t: usize, step: &Value, result: &mut CaseResult) -> Result<(), CaseError> {
        let grads = step
            .get("grads")
            .and_then(Value::as_array)
            .ok_or_else(|| malformed("steps[].grads"))?;
        let expected = step
            .get("params")
            .and_then(Value::as_array)
            .ok_or_else(|| malformed("steps[].params"))?;
        let n = self.specs.len();
        if grads.len() != n || expected.len() != n {
            return Err(malformed("steps[] arity"));
        }
        for (p, g) in self.params.iter_mut().zip(grads) {
            let g = f32s(g, "steps[].grads")?;
            if g.len() != p.shape.iter().product::<usize>() {
                return Err(malformed("steps[].grads length"));
            }
            p.grad = Some(flat(g, &self.device));
        }
        self.optim
            .step(self.lr, &mut self.params)
            .map_err(|e| CaseError::Fail(format!("step {}: {e}", t + 1)))?;
        let Tolerance { rtol, atol, .. } = self.tolerance;
        for (p, e) in self.params.iter().zip(expected) {
            let e = f32s(e, "steps[].params")?;
            let a = p
                .value
                .to_data()
                .to_vec::<f32>()
                .map_err(|e| CaseError::Fail(format!("{e:?}")))?;
            if let Err(m) = compare(&a, &e, rtol, atol, 1.0, result) {
                self.failures
                    .tolerance(format!("step {} param `{}`: {m}", t + 1, p.path))?;
            }
        }
        Ok(())
    }

    /// Final state: every reference state tensor moment keeps under the same name.
    pub(super) fn final_state(
        &mut self,
        case: &Value,
        result: &mut CaseResult,
    ) -> Result<(), CaseError> {
        let fs = case
            .get("final_state")
            .and_then(Value::as_object)
            .ok_or_else(|| malformed("no final_state"))?;
        for (pname, states) in fs {
            let Some(ours) = self.optim.state(pname) else {
                return Err(CaseError::Fail(format!("no state for `{pname}`")));
            };
            let constants = self.optim.constants(pname).unwrap_or_default();
            let Some(states) = states.as_object() else {
                return Err(malformed("final_state entry"));
            };
            for (key, st) in states {
                let values = f32s(
                    st.get("values").unwrap_or(&Value::Null),
                    "final_state values",
                )?;
                let entry = StateEntry {
                    pname,
                    key,
                    ours,
                    constants: &constants,
                };
                entry.compare(values, self.tolerance, &mut self.failures, result)?;
            }
        }
        Ok(())
    }

    /// After the steps and the final state: the 8-bit code agreement this mode requires, then
    /// the first tolerance failure kept, if any.
    pub(super) fn verdict(self, result: &CaseResult) -> Result<(), CaseError> {
        if let Some(agreement) = result.code_agreement() {
            let required = if self.tolerance.cpu_path {
                1.0
            } else {
                CUDA_MODE_CODE_AGREEMENT
            };
            if agreement < required {
                return Err(CaseError::Fail(format!(
                    "8-bit codes agree with the reference's in {:.3}% ({} of {}), below the {:.1}% this mode requires",
                    100.0 * agreement,
                    result.codes_equal,
                    result.codes_total,
                    100.0 * required
                )));
            }
        }
        self.failures
            .first
            .map_or(Ok(()), |m| Err(CaseError::Tolerance(m)))
    }
}

/// One reference final-state entry, `pname.key`, and moment's state of parameter `pname`.
struct StateEntry<'s, B: Backend> {
    pname: &'s str,
    key: &'s str,
    ours: &'s [TransformState<B>],
    constants: &'s [(&'static str, Vec<f32>)],
}

impl<B: Backend> StateEntry<'_, B> {
    fn fail(&self, m: String) -> CaseError {
        CaseError::Fail(format!("final state `{}.{}`: {m}", self.pname, self.key))
    }

    /// The entry's reference `values` against moment's state of the same name: a tensor at
    /// the case's tolerance, 8-bit codes counted, constant tables and counters exactly; a
    /// reference entry without a counterpart fails unless [`NOT_KEPT`] lists it.
    fn compare(
        &self,
        values: Vec<f32>,
        tolerance: Tolerance,
        failures: &mut Failures,
        result: &mut CaseResult,
    ) -> Result<(), CaseError> {
        let key = self.key;
        if let Some(t) = self.ours.iter().find_map(|s| s.tensor(key)) {
            self.compare_tensor(t, values, tolerance, failures, result)?;
            result.state_compared += 1;
        } else if let Some(c) = self.ours.iter().find_map(|s| s.code(key)) {
            self.count_codes(c, &values, result)?;
        } else if let Some((_, table)) = self.constants.iter().find(|(n, _)| *n == key) {
            // Constant tables (quantization maps) must match bit for bit.
            let same = table.len() == values.len()
                && table
                    .iter()
                    .zip(&values)
                    .all(|(a, e)| a.to_bits() == e.to_bits());
            if !same {
                return Err(self.fail("constant table differs from the reference".into()));
            }
            result.state_compared += 1;
        } else if let Some(c) = self.ours.iter().find_map(|s| s.counter(key)) {
            if values.len() != 1 || f64::from(values[0]) != c as f64 {
                return Err(self.fail(format!("counter {c}, reference {values:?}")));
            }
            result.state_compared += 1;
        } else if !NOT_KEPT.iter().any(|(k, _)| *k == key) {
            return Err(self.fail(
                "the reference keeps this state and moment has no counterpart (add it, or list it in NOT_KEPT with the reason)".into(),
            ));
        }
        Ok(())
    }

    /// A state tensor at the case's tolerance (scaled by the largest reference magnitude),
    /// up to sign where [`UP_TO_SIGN`] says so.
    fn compare_tensor(
        &self,
        t: &Tensor<B, 1>,
        mut values: Vec<f32>,
        tolerance: Tolerance,
        failures: &mut Failures,
        result: &mut CaseResult,
    ) -> Result<(), CaseError> {
        let key = self.key;
        let mut a = t
            .to_data()
            .to_vec::<f32>()
            .map_err(|e| CaseError::Fail(format!("{e:?}")))?;
        if UP_TO_SIGN.iter().any(|(prefix, _)| key.starts_with(prefix)) {
            a.iter_mut().for_each(|x| *x = x.abs());
            values.iter_mut().for_each(|x| *x = x.abs());
        }
        let scale = values.iter().fold(1.0f64, |m, v| m.max(f64::from(v.abs())));
        // 8-bit block max-abs: in the CPU-path mode at the format's 1e-6 relative
        // (moment reproduces bnb's CPU arithmetic, so they agree bit for bit), in the
        // default mode at the case tolerance (its codes, hence its decoded moments,
        // differ from the recording's).
        let absmax = key.starts_with("absmax");
        if absmax {
            let rel = absmax_rel(&a, &values);
            result.absmax_max_rel = Some(result.absmax_max_rel.map_or(rel, |r| r.max(rel)));
        }
        let (rtol, atol) = if absmax && tolerance.cpu_path {
            (ABSMAX_RTOL, 0.0)
        } else {
            (tolerance.rtol, tolerance.atol)
        };
        if let Err(m) = compare(&a, &values, rtol, atol, scale, result) {
            failures.tolerance(format!("final state `{}.{key}`: {m}", self.pname))?;
        }
        Ok(())
    }

    /// 8-bit codes: agreement is counted, not required here (see `CaseResult`).
    fn count_codes(
        &self,
        c: &Tensor<B, 1, Int>,
        values: &[f32],
        result: &mut CaseResult,
    ) -> Result<(), CaseError> {
        let a = moment_optim::stats::code_values(c);
        if a.len() != values.len() {
            return Err(self.fail(format!("{} codes, reference has {}", a.len(), values.len())));
        }
        result.codes_total += a.len() as u64;
        result.codes_equal += a
            .iter()
            .zip(values)
            .filter(|(a, e)| f32::from(**a) == **e)
            .count() as u64;
        Ok(())
    }
}

/// Largest |a − e| / |e| over two equally long slices; an `e` of 0 contributes 0 when `a` is 0
/// too, and a non-finite difference (or an `a` ≠ 0 against an `e` of 0) infinity.
fn absmax_rel(actual: &[f32], expected: &[f32]) -> f64 {
    actual
        .iter()
        .zip(expected)
        .map(|(&a, &e)| {
            let (a, e) = (f64::from(a), f64::from(e));
            let err = (a - e).abs();
            if !err.is_finite() || (e == 0.0 && err > 0.0) {
                f64::INFINITY
            } else if e == 0.0 {
                0.0
            } else {
                err / e.abs()
            }
        })
        .fold(0.0, f64::max)
}

/// State whose values are defined only up to sign (compared by absolute value), by key prefix,
/// with the reason.
const UP_TO_SIGN: &[(&str, &str)] = &[(
    "Q.",
    "SOAP eigenvector columns are defined up to sign (eigh and QR may flip any column); the update does not depend on it",
)];

/// Reference state entries moment deliberately does not keep, with the reason. Any other
/// reference state without a counterpart fails the case.
const NOT_KEPT: &[(&str, &str)] = &[
    (
        "RMS",
        "transformers Adafactor caches the parameter RMS of the last step; moment recomputes it each step",
    ),
    (
        "dimension",
        "pytorch_optimizer AdamMini stores a tensor's element count as metadata",
    ),
    (
        "head",
        "pytorch_optimizer AdamMini stores the head count as metadata",
    ),
    (
        "precondition_frequency",
        "pytorch_optimizer SOAP copies this hyper-parameter into every parameter's state; moment keeps it in the config",
    ),
    (
        "shampoo_beta",
        "pytorch_optimizer SOAP copies this hyper-parameter into every parameter's state; moment keeps it in the config",
    ),
    (
        "hessian",
        "pytorch_optimizer SophiaH stores the last raw Hessian estimate; moment folds each estimate into hessian_moment when it is fed",
    ),
];

/// Elementwise `|a − e| ≤ atol·atol_scale + rtol·|e|`, updating the result's error statistics.
fn compare(
    actual: &[f32],
    expected: &[f32],
    rtol: f64,
    atol: f64,
    atol_scale: f64,
    result: &mut CaseResult,
) -> Result<(), String> {
    if actual.len() != expected.len() {
        return Err(format!(
            "{} values, reference has {}",
            actual.len(),
            expected.len()
        ));
    }
    let mut first_bad = None;
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        let (a, e) = (f64::from(a), f64::from(e));
        let err = (a - e).abs();
        let allowed = atol * atol_scale + rtol * e.abs();
        if !err.is_finite() {
            // Never within any bound, so never explained by a documented difference.
            result.worst_ratio = f64::INFINITY;
            return Err(format!("element {i}: {a} vs reference {e}"));
        }
        result.max_abs = result.max_abs.max(err);
        if e != 0.0 {
            result.max_rel = result.max_rel.max(err / e.abs());
        }
        result.worst_ratio = result.worst_ratio.max(err / allowed);
        if err > allowed && first_bad.is_none() {
            first_bad = Some(format!(
                "element {i}: {a:.9e} vs reference {e:.9e} (|diff| {err:.3e} > {allowed:.3e})"
            ));
        }
    }
    first_bad.map_or(Ok(()), Err)
}
