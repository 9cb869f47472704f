//! The Adam family's fused step ([`FusedAdam`]) and its per-element arithmetic.

use burn::tensor::{Tensor, backend::Backend};

#[cfg(feature = "ndarray")]
use super::cpu;
use super::registry::on_device;
use super::{
    FusedResult, FusedStep, Kernel, MeasuredResult, Pass, advance_step, all_len, with_counter,
};
use crate::rules;
use crate::transform::TransformState;
use crate::transforms::adam::AdamState;

/// The Adam family's chain `[flip] → [L2] → scale_by_adam → [decoupled] → −lr`, fused.
///
/// Derived from the chain by [`plan`](super::plan): its fields are the chain's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FusedAdam {
    /// Index of `scale_by_adam` in the chain (its state holds the moments and the counter).
    pub(crate) adam_index: usize,
    /// Negate the gradient first.
    pub(crate) maximize: bool,
    /// Coupled L2 λ (0: none).
    pub(crate) coupled: f64,
    /// Decoupled λ (0: none).
    pub(crate) decoupled: f64,
    /// β1.
    pub(crate) beta1: f64,
    /// β2.
    pub(crate) beta2: f64,
    /// ε.
    pub(crate) eps: f64,
    /// AMSGrad.
    pub(crate) amsgrad: bool,
}

/// Per-step f32 constants of [`FusedAdam`], rounded exactly as the composed transforms round
/// them (device kernels take them as they are). Per element, in this order:
/// `g ← maximize ? −g : g; g ← g + θ·coupled; m ← lerp(m, g, 1−β1); v ← v·β2 + g·g·(1−β2);
/// v̂ ← amsgrad ? max(vmax, v) : v; u ← m / (√v̂ · inv_bc2_sqrt + ε) · inv_bc1; u ← u + θ·decoupled;
/// θ ← θ + u·neg_lr`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamScalars {
    /// Negate the gradient.
    pub maximize: bool,
    /// Coupled L2 λ.
    pub coupled: Option<f32>,
    /// Decoupled λ.
    pub decoupled: Option<f32>,
    /// 1 − β1 (the first moment's lerp weight).
    pub one_minus_b1: f32,
    /// 1 − (1 − β1), in f32: the lerp's other weight (used when 1 − β1 ≥ 0.5).
    pub lerp_rest: f32,
    /// β2.
    pub b2: f32,
    /// 1 − β2.
    pub one_minus_b2: f32,
    /// 1 / √(1 − β2ᵗ) (computed in f64, rounded once).
    pub inv_bc2_sqrt: f32,
    /// ε.
    pub eps: f32,
    /// 1 / (1 − β1ᵗ) (computed in f64, rounded once).
    pub inv_bc1: f32,
    /// −lr.
    pub neg_lr: f32,
    /// AMSGrad.
    pub amsgrad: bool,
}

#[cfg_attr(not(feature = "ndarray"), allow(dead_code))]
impl AdamScalars {
    /// One element: the element rules ([`crate::rules`]) in the composed chain's order; the
    /// flags are constants so each variant's loop is branch-free (and vectorizes).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn elem<const MAXIMIZE: bool, const L2: bool, const DECOUPLED: bool, const AMS: bool>(
        &self,
        p: &mut f32,
        g: f32,
        m: &mut f32,
        v: &mut f32,
        vmax: &mut f32,
        wd_l2: f32,
        wd_dec: f32,
    ) {
        let mut g = if MAXIMIZE { rules::negate(g) } else { g };
        if L2 {
            g = rules::add_decay(g, *p, wd_l2);
        }
        let m1 = rules::lerp(*m, g, self.one_minus_b1, self.lerp_rest);
        let v1 = rules::ema_sq(*v, g, self.b2, self.one_minus_b2);
        let vu = if AMS {
            let x = rules::running_max(*vmax, v1);
            *vmax = x;
            x
        } else {
            v1
        };
        let mut out = rules::adam_direction(m1, vu, self.inv_bc2_sqrt, self.eps, self.inv_bc1);
        if DECOUPLED {
            out = rules::add_decay(out, *p, wd_dec);
        }
        *p = rules::apply_update(*p, out, self.neg_lr);
        *m = m1;
        *v = v1;
    }

    /// A contiguous chunk (`xs` is empty unless AMSGrad).
    #[inline(always)]
    fn chunk<const MAXIMIZE: bool, const L2: bool, const DECOUPLED: bool, const AMS: bool>(
        &self,
        ps: &mut [f32],
        gs: &[f32],
        ms: &mut [f32],
        vs: &mut [f32],
        xs: &mut [f32],
    ) {
        let wd_l2 = self.coupled.unwrap_or(0.0);
        let wd_dec = self.decoupled.unwrap_or(0.0);
        let it = ps.iter_mut().zip(gs).zip(ms.iter_mut()).zip(vs.iter_mut());
        if AMS {
            for ((((p, g), m), v), x) in it.zip(xs.iter_mut()) {
                self.elem::<MAXIMIZE, L2, DECOUPLED, AMS>(p, *g, m, v, x, wd_l2, wd_dec);
            }
        } else {
            let mut unused = 0.0f32;
            for (((p, g), m), v) in it {
                self.elem::<MAXIMIZE, L2, DECOUPLED, AMS>(p, *g, m, v, &mut unused, wd_l2, wd_dec);
            }
        }
    }

    /// Dispatch to the variant for these flags.
    #[inline(always)]
    fn run(&self, ps: &mut [f32], gs: &[f32], ms: &mut [f32], vs: &mut [f32], xs: &mut [f32]) {
        macro_rules! pick {
            ($($a:literal $b:literal $c:literal $d:literal),*) => {
                match (self.maximize, self.coupled.is_some(), self.decoupled.is_some(), self.amsgrad) {
                    $(($a, $b, $c, $d) => self.chunk::<$a, $b, $c, $d>(ps, gs, ms, vs, xs),)*
                }
            };
        }
        pick!(
            false false false false, false false false true, false false true false,
            false false true true, false true false false, false true false true,
            false true true false, false true true true, true false false false,
            true false false true, true false true false, true false true true,
            true true false false, true true false true, true true true false,
            true true true true
        );
    }
}

impl Kernel for AdamScalars {
    #[inline(always)]
    fn run(&self, p: &mut [f32], g: &[f32], s: &mut [&mut [f32]]) -> u64 {
        match s {
            [m, v] => AdamScalars::run(self, p, g, m, v, &mut []),
            [m, v, x] => AdamScalars::run(self, p, g, m, v, x),
            _ => {}
        }
        0
    }
}

measuring_fused_step!(FusedAdam, "fused_adam");

impl FusedAdam {
    /// The constants of step `t` (1-based).
    pub fn scalars(&self, lr: f64, t: u64) -> AdamScalars {
        let ti = i32::try_from(t).unwrap_or(i32::MAX);
        let (b1, b2) = (self.beta1, self.beta2);
        AdamScalars {
            maximize: self.maximize,
            coupled: (self.coupled > 0.0).then_some(self.coupled as f32),
            decoupled: (self.decoupled > 0.0).then_some(self.decoupled as f32),
            one_minus_b1: (1.0 - b1) as f32,
            lerp_rest: 1.0 - (1.0 - b1) as f32,
            b2: b2 as f32,
            one_minus_b2: (1.0 - b2) as f32,
            inv_bc2_sqrt: (1.0 / (1.0 - b2.powi(ti)).sqrt()) as f32,
            eps: self.eps as f32,
            inv_bc1: (1.0 / (1.0 - b1.powi(ti))) as f32,
            neg_lr: -(lr as f32),
            amsgrad: self.amsgrad,
        }
    }

    /// The step, measuring `Σ g²` and/or scaling the gradient in the same pass as `pass` asks
    /// (CPU kernel only; a scaled pass never takes the device kernel).
    #[allow(clippy::result_large_err)]
    fn run<B: Backend>(
        &self,
        lr: f64,
        param: Tensor<B, 1>,
        grad: Tensor<B, 1>,
        states: &mut [TransformState<B>],
        pass: Pass,
    ) -> MeasuredResult<B> {
        let Some(st) = states.get_mut(self.adam_index) else {
            return Err((param, grad));
        };
        let n = param.dims()[0];
        let fits = grad.dims()[0] == n
            && AdamState::try_view(st).is_some_and(|s| {
                s.max_exp_avg_sq.is_some() == self.amsgrad
                    && all_len([&*s.exp_avg, &*s.exp_avg_sq], n)
                    && all_len(s.max_exp_avg_sq.as_deref(), n)
            });
        if !fits {
            return Err((param, grad));
        }
        // the streams, in the view's order: exp_avg, exp_avg_sq [, max_exp_avg_sq]
        let streams = 2 + usize::from(self.amsgrad);
        let (param, grad) = match pass.scale {
            Some(_) => (param, grad),
            None => match with_counter(st, |st| {
                let sc = self.scalars(lr, st.counter("step").unwrap_or(0));
                on_device(param, grad, |d, p, g| d.adam(&sc, p, g, st))
            }) {
                Ok(p) => return Ok((p, None)),
                Err(x) => x,
            },
        };
        #[cfg(feature = "ndarray")]
        {
            cpu::one_pass(param, grad, st, streams, pass, |st| {
                self.scalars(lr, advance_step(st))
            })
            .map(|(p, _, s)| (p, s))
        }
        #[cfg(not(feature = "ndarray"))]
        {
            let _ = pass;
            Err((param, grad))
        }
    }
}
