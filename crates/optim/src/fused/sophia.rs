//! Sophia's fused step ([`FusedSophia`], both variants) and its per-element arithmetic.

use burn::tensor::{Tensor, backend::Backend};

#[cfg(feature = "ndarray")]
use super::cpu;
use super::registry::on_device;
use super::{
    FusedResult, FusedStep, Kernel, MeasuredResult, Pass, advance_step, all_len, with_counter,
};
use crate::rules;
use crate::transform::TransformState;
use crate::transforms::sophia::SophiaState;

/// Sophia's chain `[flip] → [L2] → scale_by_sophia → [decoupled] → −lr`, fused (the curvature
/// update stays a separate step, as in the composed path).
///
/// Derived from the chain by [`plan`](super::plan): its fields are the chain's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FusedSophia {
    /// Index of `scale_by_sophia` in the chain.
    pub(crate) sophia_index: usize,
    /// Negate the gradient first.
    pub(crate) maximize: bool,
    /// Coupled L2 λ (0: none).
    pub(crate) coupled: f64,
    /// Decoupled λ (0: none).
    pub(crate) decoupled: f64,
    /// Sophia-H (`true`: lerp momentum, `max(h, ε)` denominator, clip at ρ) or Sophia-G.
    pub(crate) variant_h: bool,
    /// β1.
    pub(crate) beta1: f64,
    /// ρ (Sophia-G: ρ·batch size, as the transform holds it).
    pub(crate) rho: f64,
    /// ε.
    pub(crate) eps: f64,
}

/// Per-step f32 constants of [`FusedSophia`]. Per element: `g ← maximize ? −g : g;
/// g ← g + θ·coupled`; Sophia-H: `m ← lerp(m, g, w)` (rounded as `transforms::lerp`),
/// `den ← max(h, ε)`; Sophia-G: `m ← m·β1 + g·w`, `den ← h·ρ + ε`; then
/// `u ← clamp(m/den, −clip, clip)`, a win when `|u| < clip`, `u ← u + θ·decoupled`,
/// `θ ← θ + u·neg_lr`; the win rate (wins / n) goes to the state's `win_rate`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SophiaScalars {
    /// Negate the gradient.
    pub maximize: bool,
    /// Sophia-H (else Sophia-G).
    pub variant_h: bool,
    /// Coupled L2 λ.
    pub coupled: Option<f32>,
    /// Decoupled λ.
    pub decoupled: Option<f32>,
    /// β1.
    pub b1: f32,
    /// 1 − β1 (the lerp weight / the gradient's weight).
    pub w: f32,
    /// ρ (Sophia-G).
    pub rho: f32,
    /// ε.
    pub eps: f32,
    /// Clip bound (ρ for Sophia-H, 1 for Sophia-G).
    pub clip: f32,
    /// −lr.
    pub neg_lr: f32,
}

#[cfg_attr(not(feature = "ndarray"), allow(dead_code))]
impl SophiaScalars {
    #[inline(always)]
    fn chunk<const MAXIMIZE: bool, const L2: bool, const DECOUPLED: bool, const H: bool>(
        &self,
        ps: &mut [f32],
        gs: &[f32],
        ms: &mut [f32],
        hs: &[f32],
    ) -> u64 {
        let (wd_l2, wd_dec, c) = (
            self.coupled.unwrap_or(0.0),
            self.decoupled.unwrap_or(0.0),
            self.clip,
        );
        let mut win = 0u64;
        for (((p, g), m), h) in ps.iter_mut().zip(gs).zip(ms.iter_mut()).zip(hs) {
            let mut g = if MAXIMIZE { rules::negate(*g) } else { *g };
            if L2 {
                g = rules::add_decay(g, *p, wd_l2);
            }
            let (m1, den) = if H {
                (
                    rules::lerp(*m, g, self.w, 1.0 - self.w),
                    rules::clamp_min(*h, self.eps),
                )
            } else {
                (
                    rules::ema(*m, g, self.b1, self.w),
                    rules::sophia_g_den(*h, self.rho, self.eps),
                )
            };
            let u = rules::clamp_sym(m1 / den, c);
            win += u64::from(u.abs() < c);
            *m = m1;
            let mut u = u;
            if DECOUPLED {
                u = rules::add_decay(u, *p, wd_dec);
            }
            *p = rules::apply_update(*p, u, self.neg_lr);
        }
        win
    }
}

impl Kernel for SophiaScalars {
    #[inline(always)]
    fn run(&self, p: &mut [f32], g: &[f32], s: &mut [&mut [f32]]) -> u64 {
        let [m, h] = s else { return 0 };
        macro_rules! pick {
            ($($a:literal $b:literal $c:literal $d:literal),*) => {
                match (self.maximize, self.coupled.is_some(), self.decoupled.is_some(), self.variant_h) {
                    $(($a, $b, $c, $d) => self.chunk::<$a, $b, $c, $d>(p, g, m, h),)*
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
        )
    }
}

measuring_fused_step!(FusedSophia, "fused_sophia");

impl FusedSophia {
    /// This step's constants.
    pub fn scalars(&self, lr: f64) -> SophiaScalars {
        SophiaScalars {
            maximize: self.maximize,
            variant_h: self.variant_h,
            coupled: (self.coupled > 0.0).then_some(self.coupled as f32),
            decoupled: (self.decoupled > 0.0).then_some(self.decoupled as f32),
            b1: self.beta1 as f32,
            w: (1.0 - self.beta1) as f32,
            rho: self.rho as f32,
            eps: self.eps as f32,
            clip: if self.variant_h { self.rho as f32 } else { 1.0 },
            neg_lr: -(lr as f32),
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
        let sc = self.scalars(lr);
        let Some(st) = states.get_mut(self.sophia_index) else {
            return Err((param, grad));
        };
        let n = param.dims()[0];
        // the variant's names (naming 0: Sophia-G's, 1: Sophia-H's)
        let naming = usize::from(self.variant_h);
        let fits = grad.dims()[0] == n
            && SophiaState::<B>::LAYOUT
                .fit(st, &[])
                .is_some_and(|f| f.naming == naming)
            && SophiaState::try_view(st).is_some_and(|s| {
                all_len([&*s.exp_avg, &*s.hessian], n) && all_len([&*s.win_rate], 1)
            });
        if !fits {
            return Err((param, grad));
        }
        let (param, grad) = match pass.scale {
            Some(_) => (param, grad),
            None => match with_counter(st, |st| {
                on_device(param, grad, |d, p, g| d.sophia(&sc, p, g, st))
            }) {
                Ok(p) => return Ok((p, None)),
                Err(x) => x,
            },
        };
        #[cfg(feature = "ndarray")]
        {
            let n = param.dims()[0];
            // the streams, in the view's order: the momentum and the curvature estimate
            let (p, win, sumsq) = cpu::one_pass(param, grad, st, 2, pass, |st| {
                advance_step(st);
                sc
            })?;
            if n > 0
                && let Some(s) = SophiaState::try_view(st)
            {
                // `mean` of the 0/1 mask as burn-ndarray computes it (exact count below 2^24).
                let rate = win as f32 / n as f32;
                let device = s.win_rate.device();
                *s.win_rate =
                    Tensor::from_data(burn::tensor::TensorData::new(vec![rate], [1]), &device);
            }
            Ok((p, sumsq))
        }
        #[cfg(not(feature = "ndarray"))]
        {
            let _ = pass;
            Err((param, grad))
        }
    }
}
