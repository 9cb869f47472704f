//! Adafactor's fused step ([`FusedAdafactor`], CPU only); its passes are the CPU's
//! (`cpu/adafactor.rs`).

use burn::tensor::{Tensor, backend::Backend};

#[cfg(feature = "ndarray")]
use super::cpu;
use super::{FusedResult, FusedStep, all_len};
use crate::transform::TransformState;
use crate::transforms::adafactor::{AdafactorFactoredState, AdafactorFullState};

/// Adafactor's chain `[flip] → scale_by_adafactor → flip`, fused on the CPU (no device
/// kernel): the row/column (or full) statistics, the update and its RMS, and the parameter
/// step in three passes over the gradient (one over the parameter for its RMS when the step is
/// parameter-scaled, one to write it), multi-threaded over fixed blocks of rows. Its sums run in
/// f64 over fixed blocks (so the result does not depend on the thread count) where the composed
/// chain sums in f32 in burn's order: the two agree to rounding (tested within the family's
/// reference tolerance), not bitwise like the other fused steps. Both conventions, rank ≥ 2
/// (factored) and ≤ 1, β1, decay.
///
/// Derived from the chain by [`plan`](super::plan): its fields are the chain's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FusedAdafactor {
    /// Index of `scale_by_adafactor` in the chain.
    pub(crate) index: usize,
    /// Negate the gradient first.
    pub(crate) maximize: bool,
    /// The transform's settings.
    pub(crate) transform: crate::transforms::ScaleByAdafactor,
}

impl<B: Backend> FusedStep<B> for FusedAdafactor {
    fn name(&self) -> &'static str {
        "fused_adafactor"
    }

    fn step(
        &self,
        lr: f64,
        shape: &[usize],
        param: Tensor<B, 1>,
        grad: Tensor<B, 1>,
        states: &mut [TransformState<B>],
    ) -> FusedResult<B> {
        let n = param.dims()[0];
        let Some(st) = states.get_mut(self.index) else {
            return Err((param, grad));
        };
        let factored = crate::transforms::factored_dims(shape);
        let beta1 = self.transform.beta1.is_some();
        // the state the composed transform made for this shape, with the expected lengths
        let state_fits = match factored {
            Some((l, r, c)) => AdafactorFactoredState::try_view(st).is_some_and(|s| {
                s.exp_avg.is_some() == beta1
                    && all_len([&*s.exp_avg_sq_row], l * r)
                    && all_len([&*s.exp_avg_sq_col], l * c)
                    && all_len(s.exp_avg.as_deref(), n)
            }),
            None => AdafactorFullState::try_view(st).is_some_and(|s| {
                s.exp_avg.is_some() == beta1
                    && all_len([&*s.exp_avg_sq], n)
                    && all_len(s.exp_avg.as_deref(), n)
            }),
        };
        let ok = n > 0 && grad.dims()[0] == n && shape.iter().product::<usize>() == n && state_fits;
        if !ok {
            return Err((param, grad));
        }
        #[cfg(feature = "ndarray")]
        {
            cpu::adafactor(self, lr, factored, param, grad, st)
        }
        #[cfg(not(feature = "ndarray"))]
        {
            let _ = (lr, factored);
            Err((param, grad))
        }
    }
}
