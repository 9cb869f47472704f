//! Lion's fused step ([`FusedLion`]) and its per-element arithmetic.

use burn::tensor::{Tensor, backend::Backend};

#[cfg(feature = "ndarray")]
use super::cpu;
use super::registry::on_device;
use super::{FusedResult, FusedStep, Kernel, MeasuredResult, Pass, all_len};
use crate::rules;
use crate::transform::TransformState;
use crate::transforms::lion::LionState;

/// Lion's chain `[flip] → scale_by_lion → [decoupled] → −lr`, fused.
///
/// Derived from the chain by [`plan`](super::plan): its fields are the chain's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FusedLion {
    /// Index of `scale_by_lion` in the chain.
    pub(crate) lion_index: usize,
    /// Negate the gradient first.
    pub(crate) maximize: bool,
    /// Decoupled λ (0: none).
    pub(crate) decoupled: f64,
    /// β1 (interpolation for the sign).
    pub(crate) beta1: f64,
    /// β2 (momentum decay).
    pub(crate) beta2: f64,
}

/// Per-step f32 constants of [`FusedLion`]. Per element: `g ← maximize ? −g : g;
/// u ← sign(m·β1 + g·(1−β1)); m ← m·β2 + g·(1−β2); u ← u + θ·decoupled; θ ← θ + u·neg_lr`
/// (`sign(±0) = 0`, otherwise ±1 by the sign bit).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LionScalars {
    /// Negate the gradient.
    pub maximize: bool,
    /// β1.
    pub b1: f32,
    /// 1 − β1.
    pub one_minus_b1: f32,
    /// β2.
    pub b2: f32,
    /// 1 − β2.
    pub one_minus_b2: f32,
    /// Decoupled λ.
    pub decoupled: Option<f32>,
    /// −lr.
    pub neg_lr: f32,
}

#[cfg_attr(not(feature = "ndarray"), allow(dead_code))]
impl LionScalars {
    #[inline(always)]
    fn chunk<const MAXIMIZE: bool, const DECOUPLED: bool>(
        &self,
        ps: &mut [f32],
        gs: &[f32],
        ms: &mut [f32],
    ) {
        let wd = self.decoupled.unwrap_or(0.0);
        for ((p, g), m) in ps.iter_mut().zip(gs).zip(ms.iter_mut()) {
            let g = if MAXIMIZE { rules::negate(*g) } else { *g };
            let mut u = rules::sign(rules::ema(*m, g, self.b1, self.one_minus_b1));
            *m = rules::ema(*m, g, self.b2, self.one_minus_b2);
            if DECOUPLED {
                u = rules::add_decay(u, *p, wd);
            }
            *p = rules::apply_update(*p, u, self.neg_lr);
        }
    }
}

impl Kernel for LionScalars {
    #[inline(always)]
    fn run(&self, p: &mut [f32], g: &[f32], s: &mut [&mut [f32]]) -> u64 {
        if let [m] = s {
            match (self.maximize, self.decoupled.is_some()) {
                (false, false) => self.chunk::<false, false>(p, g, m),
                (false, true) => self.chunk::<false, true>(p, g, m),
                (true, false) => self.chunk::<true, false>(p, g, m),
                (true, true) => self.chunk::<true, true>(p, g, m),
            }
        }
        0
    }
}

measuring_fused_step!(FusedLion, "fused_lion");

impl FusedLion {
    /// This step's constants.
    pub fn scalars(&self, lr: f64) -> LionScalars {
        LionScalars {
            maximize: self.maximize,
            b1: self.beta1 as f32,
            one_minus_b1: (1.0 - self.beta1) as f32,
            b2: self.beta2 as f32,
            one_minus_b2: (1.0 - self.beta2) as f32,
            decoupled: (self.decoupled > 0.0).then_some(self.decoupled as f32),
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
        let Some(st) = states.get_mut(self.lion_index) else {
            return Err((param, grad));
        };
        let n = param.dims()[0];
        let fits = grad.dims()[0] == n
            && LionState::try_view(st).is_some_and(|s| all_len([&*s.exp_avg], n));
        if !fits {
            return Err((param, grad));
        }
        let (param, grad) = match pass.scale {
            Some(_) => (param, grad),
            None => match on_device(param, grad, |d, p, g| d.lion(&sc, p, g, st)) {
                Ok(p) => return Ok((p, None)),
                Err(x) => x,
            },
        };
        #[cfg(feature = "ndarray")]
        {
            // the one stream: exp_avg
            cpu::one_pass(param, grad, st, 1, pass, |_| sc).map(|(p, _, s)| (p, s))
        }
        #[cfg(not(feature = "ndarray"))]
        {
            let _ = pass;
            Err((param, grad))
        }
    }
}
