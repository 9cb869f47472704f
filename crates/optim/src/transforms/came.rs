use burn::tensor::{Tensor, backend::Backend};

use super::adafactor::{approx_rsqrt, factored_dims, factored_ema, rms};
use super::lerp;
use crate::error::Result;
use crate::state_view::Fresh;
use crate::transform::{StepCtx, Transform, TransformState};

/// CAME (Luo et al. 2023, *Confidence-guided Adaptive Memory Efficient Optimization*;
/// pytorch_optimizer's form): Adafactor's factored second moment ([`factored_ema`],
/// [`approx_rsqrt`]) and RMS clipping, a first moment, and a factored *confidence* statistic
/// of the residual `(û − m)² + ε2` that rescales the momentum:
///
/// ```text
/// û = g·rsqrt(V̂(g² + ε1)) ; û ← û / max(1, RMS(û)/d) ; m ← lerp(m, û, 1−β1)
/// rank ≥ 2: S ← factored EMA_β3((û − m)² + ε2) ; u = m·rsqrt(Ŝ)     vectors: u = m
/// ```
/// No bias correction. State: `exp_avg`, `exp_avg_sq_row/col` and `exp_avg_res_row/col`
/// (rank ≥ 2) or `exp_avg_sq` (vectors).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScaleByCame {
    /// β1 (momentum).
    pub beta1: f64,
    /// β2 (second moment).
    pub beta2: f64,
    /// β3 (confidence).
    pub beta3: f64,
    /// ε1, added to g².
    pub eps1: f64,
    /// ε2, added to the residual.
    pub eps2: f64,
    /// RMS clip threshold d.
    pub clip_threshold: f64,
}

crate::state_view! {
    /// CAME's state for tensors of rank ≥ 2 (pytorch_optimizer's names): the momentum, the
    /// factored second moment and the factored confidence statistic.
    pub(crate) struct CameFactoredState {
        tensors { exp_avg, exp_avg_sq_row, exp_avg_sq_col, exp_avg_res_row, exp_avg_res_col }
    }
}

crate::state_view! {
    /// CAME's state for vectors (and scalars): the momentum and the full second moment.
    pub(crate) struct CameVectorState {
        tensors { exp_avg, exp_avg_sq }
    }
}

impl ScaleByCame {
    /// `û / max(1, RMS(û)/d)`, then `m ← lerp(m, û, 1−β1)`: the clipped update and the new
    /// momentum (stored in `exp_avg`).
    fn clip_and_momentum<B: Backend>(
        &self,
        update: Tensor<B, 1>,
        n: usize,
        exp_avg: &mut Tensor<B, 1>,
    ) -> (Tensor<B, 1>, Tensor<B, 1>) {
        let denom = rms(&update, n)
            .div_scalar(self.clip_threshold as f32)
            .clamp_min(1.0);
        let update = update.div(denom);
        let m = lerp(exp_avg.clone(), update.clone(), 1.0 - self.beta1);
        *exp_avg = m.clone();
        (update, m)
    }

    /// Rank ≥ 2, as `[l, r, c]`: factored second moment, clipping, momentum, confidence.
    fn update_factored<B: Backend>(
        &self,
        (l, r, c): (usize, usize, usize),
        g: Tensor<B, 1>,
        s: CameFactoredState<'_, B>,
    ) -> Tensor<B, 1> {
        let n = g.dims()[0];
        let u = g.clone().square().add_scalar(self.eps1 as f32);
        let row = s.exp_avg_sq_row.clone().reshape([l, r, 1]);
        let col = s.exp_avg_sq_col.clone().reshape([l, 1, c]);
        let (row, col) = factored_ema(row, col, u.reshape([l, r, c]), self.beta2);
        let update = approx_rsqrt(&row, &col)
            .mul(g.reshape([l, r, c]))
            .reshape([n]);
        *s.exp_avg_sq_row = row.reshape([l * r]);
        *s.exp_avg_sq_col = col.reshape([l * c]);
        let (update, m) = self.clip_and_momentum(update, n, s.exp_avg);
        let res = update
            .sub(m.clone())
            .square()
            .add_scalar(self.eps2 as f32)
            .reshape([l, r, c]);
        let row = s.exp_avg_res_row.clone().reshape([l, r, 1]);
        let col = s.exp_avg_res_col.clone().reshape([l, 1, c]);
        let (row, col) = factored_ema(row, col, res, self.beta3);
        let out = approx_rsqrt(&row, &col)
            .mul(m.reshape([l, r, c]))
            .reshape([n]);
        *s.exp_avg_res_row = row.reshape([l * r]);
        *s.exp_avg_res_col = col.reshape([l * c]);
        out
    }

    /// Vectors: full second moment, clipping, momentum (no confidence).
    fn update_vector<B: Backend>(
        &self,
        g: Tensor<B, 1>,
        s: CameVectorState<'_, B>,
    ) -> Tensor<B, 1> {
        let n = g.dims()[0];
        let u = g.clone().square().add_scalar(self.eps1 as f32);
        let v = s
            .exp_avg_sq
            .clone()
            .mul_scalar(self.beta2 as f32)
            .add(u.mul_scalar((1.0 - self.beta2) as f32));
        *s.exp_avg_sq = v.clone();
        let update = v.sqrt().recip().mul(g);
        let (_, m) = self.clip_and_momentum(update, n, s.exp_avg);
        m
    }
}

impl<B: Backend> Transform<B> for ScaleByCame {
    fn squares_gradient_in_f32(&self) -> bool {
        true
    }

    fn name(&self) -> &'static str {
        "scale_by_came"
    }

    fn init(&self, _: &str, shape: &[usize], device: &B::Device) -> Result<TransformState<B>> {
        let zeros = |shape: &[usize]| Fresh::zeros(shape, device);
        Ok(match shape {
            [lead @ .., r, c] => {
                let mut row = lead.to_vec();
                row.push(*r);
                let mut col = lead.to_vec();
                col.push(*c);
                CameFactoredState::init([
                    zeros(shape),
                    zeros(&row),
                    zeros(&col),
                    zeros(&row),
                    zeros(&col),
                ])
            }
            _ => CameVectorState::init([zeros(shape), zeros(shape)]),
        })
    }

    fn update(
        &self,
        ctx: &StepCtx<'_, B>,
        g: Tensor<B, 1>,
        state: &mut TransformState<B>,
    ) -> Tensor<B, 1> {
        if g.dims()[0] == 0 {
            return g;
        }
        match factored_dims(ctx.shape) {
            Some(dims) => self.update_factored(dims, g, CameFactoredState::view(state)),
            None => self.update_vector(g, CameVectorState::view(state)),
        }
    }
}
