use burn::tensor::{Tensor, backend::Backend};

use crate::error::Result;
use crate::state_view::Fresh;
use crate::transform::{StepCtx, Transform, TransformState};

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

crate::state_view! {
    /// Prodigy's per-tensor state (pytorch_optimizer's names).
    pub(crate) struct ProdigyState {
        counters { step }
        tensors { p0, s, exp_avg, exp_avg_sq }
    }
}

crate::state_view! {
    /// Prodigy's group-level state (pytorch_optimizer's names): `skipped` is 1 after a step
    /// whose denominator was 0 (no tensor moves).
    pub(crate) struct ProdigyGroupState {
        counters { step, skipped }
        scalars { d, d_max, d_hat, d_numerator, d_de_nom, d_lr }
    }
}

impl ScaleByProdigy {
    fn beta3(&self) -> f64 {
        self.beta3.unwrap_or_else(|| self.betas.1.sqrt())
    }

    /// (d, d_lr) of the current step, from the group state's `d` and `step` before its
    /// reduction.
    fn step_size(&self, lr: f64, d: f64, step: u64) -> (f64, f64) {
        let t = step.saturating_add(1);
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
        let zeros = || Fresh::zeros(shape, device);
        Ok(ProdigyState::init([zeros(), zeros(), zeros(), zeros()]))
    }

    fn group_sums(&self) -> usize {
        2
    }

    fn init_group(&self) -> TransformState<B> {
        // d = d_max = d0; d_hat, d_numerator, d_de_nom, d_lr = 0.
        ProdigyGroupState::init([self.d0, self.d0, 0.0, 0.0, 0.0, 0.0])
    }

    fn contribute(
        &self,
        ctx: &StepCtx<'_, B>,
        grad: &Tensor<B, 1>,
        state: &mut TransformState<B>,
    ) -> Vec<Tensor<B, 1>> {
        let (b1, b2) = self.betas;
        let group = ProdigyGroupState::read(ctx.group);
        let (d, d_lr) = self.step_size(ctx.lr, *group.d, *group.step);
        let g = if self.maximize {
            grad.clone().neg()
        } else {
            grad.clone()
        };
        let st = ProdigyState::view(state);
        if *st.step == 0 {
            *st.p0 = ctx.param.clone();
        }
        *st.step = st.step.saturating_add(1);
        let dot = g.clone().mul(st.p0.clone().sub(ctx.param.clone())).sum();
        let m = st
            .exp_avg
            .clone()
            .mul_scalar(b1 as f32)
            .add(g.clone().mul_scalar((d * (1.0 - b1)) as f32));
        let v = st.exp_avg_sq.clone().mul_scalar(b2 as f32).add(
            g.clone()
                .mul_scalar((d * d * (1.0 - b2)) as f32)
                .mul(g.clone()),
        );
        let s_rate = (d / self.d0) * if self.safeguard_warmup { d } else { d_lr };
        let s =
            st.s.clone()
                .mul_scalar(self.beta3() as f32)
                .add(g.mul_scalar(s_rate as f32));
        let s_abs = s.clone().abs().sum();
        *st.s = s;
        *st.exp_avg = m;
        *st.exp_avg_sq = v;
        vec![dot, s_abs]
    }

    fn reduce(&self, lr: f64, sums: &[f64], group: &mut TransformState<B>) {
        let group = ProdigyGroupState::view(group);
        let (d, d_lr) = self.step_size(lr, *group.d, *group.step);
        let f = |x: f64| x as f32 as f64;
        // The reference keeps the numerator and denominator as f32 tensors.
        let alpha = f((d / self.d0) * d_lr);
        let num = f(f(*group.d_numerator * f(self.beta3())) + f(alpha * f(sums[0])));
        let den = f(sums[1]);
        *group.step = group.step.saturating_add(1);
        *group.d_numerator = num;
        *group.d_de_nom = den;
        *group.d_lr = d_lr;
        if den == 0.0 {
            *group.skipped = 1;
            return;
        }
        *group.skipped = 0;
        let d_hat = f(f(self.d_coef * num) / den);
        let mut d_new = d;
        if d_new == self.d0 {
            d_new = d_new.max(d_hat);
        }
        let d_max = group.d_max.max(d_hat);
        d_new = d_max.min(d_new * self.growth_rate);
        *group.d = d_new;
        *group.d_max = d_max;
        *group.d_hat = d_hat;
    }

    fn update(
        &self,
        ctx: &StepCtx<'_, B>,
        _: Tensor<B, 1>,
        state: &mut TransformState<B>,
    ) -> Tensor<B, 1> {
        let group = ProdigyGroupState::read(ctx.group);
        if *group.skipped != 0 {
            return ctx.param.zeros_like();
        }
        let (d, d_lr) = (*group.d, *group.d_lr);
        let st = ProdigyState::view(state);
        let m = st.exp_avg.clone();
        let root = st.exp_avg_sq.clone().sqrt();
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
