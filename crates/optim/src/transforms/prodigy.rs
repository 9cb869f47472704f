use burn::tensor::{Tensor, backend::Backend};

use crate::error::Result;
use crate::transform::{StateTensor, StepCtx, Transform, TransformState};

/// How Prodigy's decay acts on `θ` (decay is always applied to the parameter, never to the
/// gradient).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ProdigyDecay {
    /// `θ ← θ·(1 − λ·d_lr)` (pytorch_optimizer's `weight_decouple=True`, the default).
    Decoupled(f64),
    /// `θ ← θ·(1 − λ)`, independent of the step size (`fixed_decay=True`).
    Fixed(f64),
}

/// Prodigy (Mishchenko & Defazio 2024, *Prodigy: An Expeditiously Adaptive Parameter-Free
/// Learner*; pytorch_optimizer semantics): Adam whose step size `d` estimates the distance to
/// the solution from the whole group, so the learning rate can stay at 1.
///
/// ```text
/// d_lr = d·lr/bc                  (bc = (1−β1^t)/√(1−β2^t) with bias_correction, else 1)
/// per tensor (group phase 1, old d):
///   num_i = ⟨g, θ0 − θ⟩
///   m ← β1·m + d(1−β1)·g ; v ← β2·v + d²(1−β2)·g²
///   s ← β3·s + (d/d0)·d_lr·g      (d instead of d_lr with safeguard_warmup)
/// group (phase 2):
///   N ← β3·N + (d/d0)·d_lr·Σ num_i ; D = Σ ‖s‖₁ ; D = 0 → no tensor moves this step
///   d̂ = d_coef·N/D ; d_max ← max(d_max, d̂) ; d ← min(d_max, d·growth_rate)
/// per tensor (apply, new d):
///   θ ← θ·(1 − λ·d_lr) − d_lr · m / (√v + d·ε)     (ε = None: d_lr·atan2(m, √v))
/// ```
///
/// The group phase runs through [`Transform::group_sums`]: the engine calls
/// [`Transform::contribute`] for every tensor of the group, then [`Transform::reduce`] once,
/// then each tensor's update. Self-scaling (outputs the descent amount; the chain ends with
/// `flip_sign`). Per-tensor state `p0`, `s`, `exp_avg`, `exp_avg_sq`, counter `step`; group
/// state counters `step`, `skipped` and scalars `d`, `d_max`, `d_hat`, `d_numerator`,
/// `d_de_nom`, `d_lr`. `N` and the totals are rounded to f32 where the reference keeps f32
/// tensors.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScaleByProdigy {
    /// (β1, β2).
    pub betas: (f64, f64),
    /// β3 for `s` and the numerator; `None` = √β2.
    pub beta3: Option<f64>,
    /// Initial distance estimate d0 > 0.
    pub d0: f64,
    /// Multiplier of the estimate.
    pub d_coef: f64,
    /// Largest factor `d` may grow by per step (`f64::INFINITY` = unbounded).
    pub growth_rate: f64,
    /// Decay.
    pub decay: ProdigyDecay,
    /// Adam bias correction folded into `d_lr`.
    pub bias_correction: bool,
    /// Use `d` instead of `d_lr` in `s` (for warm-up schedules).
    pub safeguard_warmup: bool,
    /// ε added to `√v` (scaled by d); `None` = Adam-atan2 update.
    pub eps: Option<f64>,
    /// Ascend instead (negates the gradient first).
    pub maximize: bool,
}

const D: usize = 0;
const D_MAX: usize = 1;
const D_HAT: usize = 2;
const D_NUM: usize = 3;
const D_DEN: usize = 4;
const D_LR: usize = 5;

impl ScaleByProdigy {
    fn beta3(&self) -> f64 {
        self.beta3.unwrap_or_else(|| self.betas.1.sqrt())
    }

    /// (d, d_lr) of the current step, from the group state before its reduction.
    fn step_size<B: Backend>(&self, lr: f64, group: &TransformState<B>) -> (f64, f64) {
        let d = group.scalars[D].1;
        let t = group.counters[0].1.saturating_add(1);
        let bc = if self.bias_correction {
            let ti = i32::try_from(t).unwrap_or(i32::MAX);
            (1.0 - self.betas.0.powi(ti)) / (1.0 - self.betas.1.powi(ti)).sqrt()
        } else {
            1.0
        };
        (d, d * lr / bc)
    }
}

impl<B: Backend> Transform<B> for ScaleByProdigy {
    fn name(&self) -> &'static str {
        "scale_by_prodigy"
    }

    fn init(&self, _: &str, shape: &[usize], device: &B::Device) -> Result<TransformState<B>> {
        Ok(TransformState::new(
            vec![
                StateTensor::zeros("p0", shape, device),
                StateTensor::zeros("s", shape, device),
                StateTensor::zeros("exp_avg", shape, device),
                StateTensor::zeros("exp_avg_sq", shape, device),
            ],
            vec![("step", 0)],
        ))
    }

    fn group_sums(&self) -> usize {
        2
    }

    fn init_group(&self) -> TransformState<B> {
        let mut st = TransformState::new(Vec::new(), vec![("step", 0), ("skipped", 0)]);
        st.scalars = vec![
            ("d", self.d0),
            ("d_max", self.d0),
            ("d_hat", 0.0),
            ("d_numerator", 0.0),
            ("d_de_nom", 0.0),
            ("d_lr", 0.0),
        ];
        st
    }

    fn contribute(
        &self,
        ctx: &StepCtx<'_, B>,
        grad: &Tensor<B, 1>,
        state: &mut TransformState<B>,
    ) -> Vec<Tensor<B, 1>> {
        let (b1, b2) = self.betas;
        let (d, d_lr) = self.step_size(ctx.lr, ctx.group);
        let g = if self.maximize {
            grad.clone().neg()
        } else {
            grad.clone()
        };
        if state.counters[0].1 == 0 {
            state.tensors[0].tensor = ctx.param.clone();
        }
        state.counters[0].1 = state.counters[0].1.saturating_add(1);
        let dot = g
            .clone()
            .mul(state.tensors[0].tensor.clone().sub(ctx.param.clone()))
            .sum();
        let m = state.tensors[2]
            .tensor
            .clone()
            .mul_scalar(b1 as f32)
            .add(g.clone().mul_scalar((d * (1.0 - b1)) as f32));
        let v = state.tensors[3].tensor.clone().mul_scalar(b2 as f32).add(
            g.clone()
                .mul_scalar((d * d * (1.0 - b2)) as f32)
                .mul(g.clone()),
        );
        let s_rate = (d / self.d0) * if self.safeguard_warmup { d } else { d_lr };
        let s = state.tensors[1]
            .tensor
            .clone()
            .mul_scalar(self.beta3() as f32)
            .add(g.mul_scalar(s_rate as f32));
        let s_abs = s.clone().abs().sum();
        state.tensors[1].tensor = s;
        state.tensors[2].tensor = m;
        state.tensors[3].tensor = v;
        vec![dot, s_abs]
    }

    fn reduce(&self, lr: f64, sums: &[f64], group: &mut TransformState<B>) {
        let (d, d_lr) = self.step_size(lr, group);
        let f = |x: f64| x as f32 as f64;
        // The reference keeps the numerator and denominator as f32 tensors.
        let alpha = f((d / self.d0) * d_lr);
        let num = f(f(group.scalars[D_NUM].1 * f(self.beta3())) + f(alpha * f(sums[0])));
        let den = f(sums[1]);
        group.counters[0].1 = group.counters[0].1.saturating_add(1);
        group.scalars[D_NUM].1 = num;
        group.scalars[D_DEN].1 = den;
        group.scalars[D_LR].1 = d_lr;
        if den == 0.0 {
            group.counters[1].1 = 1;
            return;
        }
        group.counters[1].1 = 0;
        let d_hat = f(f(self.d_coef * num) / den);
        let mut d_new = d;
        if d_new == self.d0 {
            d_new = d_new.max(d_hat);
        }
        let d_max = group.scalars[D_MAX].1.max(d_hat);
        d_new = d_max.min(d_new * self.growth_rate);
        group.scalars[D].1 = d_new;
        group.scalars[D_MAX].1 = d_max;
        group.scalars[D_HAT].1 = d_hat;
    }

    fn update(
        &self,
        ctx: &StepCtx<'_, B>,
        _: Tensor<B, 1>,
        state: &mut TransformState<B>,
    ) -> Tensor<B, 1> {
        let group = ctx.group;
        if group.counters[1].1 != 0 {
            return ctx.param.zeros_like();
        }
        let d = group.scalars[D].1;
        let d_lr = group.scalars[D_LR].1;
        let m = state.tensors[2].tensor.clone();
        let root = state.tensors[3].tensor.clone().sqrt();
        let dir = match self.eps {
            Some(eps) => m.div(root.add_scalar((d * eps) as f32)),
            None => m.atan2(root),
        };
        let descent = dir.mul_scalar(d_lr as f32);
        match self.decay {
            ProdigyDecay::Decoupled(wd) if wd > 0.0 => {
                descent.add(ctx.param.clone().mul_scalar((wd * d_lr) as f32))
            }
            ProdigyDecay::Fixed(wd) if wd > 0.0 => {
                descent.add(ctx.param.clone().mul_scalar(wd as f32))
            }
            _ => descent,
        }
    }
}
