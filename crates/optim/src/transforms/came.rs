use burn::tensor::{Tensor, backend::Backend};

use super::adafactor::{approx_rsqrt, factored_dims, factored_ema, rms};
use super::lerp;
use crate::error::Result;
use crate::transform::{StateTensor, StepCtx, Transform, TransformState};

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

impl<B: Backend> Transform<B> for ScaleByCame {
    fn squares_gradient_in_f32(&self) -> bool {
        true
    }

    fn name(&self) -> &'static str {
        "scale_by_came"
    }

    fn init(&self, _: &str, shape: &[usize], device: &B::Device) -> Result<TransformState<B>> {
        let mut tensors = vec![StateTensor::zeros("exp_avg", shape, device)];
        match shape {
            [lead @ .., r, c] => {
                let mut row = lead.to_vec();
                row.push(*r);
                let mut col = lead.to_vec();
                col.push(*c);
                tensors.push(StateTensor::zeros("exp_avg_sq_row", &row, device));
                tensors.push(StateTensor::zeros("exp_avg_sq_col", &col, device));
                tensors.push(StateTensor::zeros("exp_avg_res_row", &row, device));
                tensors.push(StateTensor::zeros("exp_avg_res_col", &col, device));
            }
            _ => tensors.push(StateTensor::zeros("exp_avg_sq", shape, device)),
        }
        Ok(TransformState::new(tensors, Vec::new()))
    }

    fn update(
        &self,
        ctx: &StepCtx<'_, B>,
        g: Tensor<B, 1>,
        state: &mut TransformState<B>,
    ) -> Tensor<B, 1> {
        let n = g.dims()[0];
        if n == 0 {
            return g;
        }
        let dims = factored_dims(ctx.shape);
        let u = g.clone().square().add_scalar(self.eps1 as f32);
        let update = match dims {
            Some((l, r, c)) => {
                let row = state.tensors[1].tensor.clone().reshape([l, r, 1]);
                let col = state.tensors[2].tensor.clone().reshape([l, 1, c]);
                let (row, col) = factored_ema(row, col, u.reshape([l, r, c]), self.beta2);
                let upd = approx_rsqrt(&row, &col)
                    .mul(g.reshape([l, r, c]))
                    .reshape([n]);
                state.tensors[1].tensor = row.reshape([l * r]);
                state.tensors[2].tensor = col.reshape([l * c]);
                upd
            }
            None => {
                let v = state.tensors[1]
                    .tensor
                    .clone()
                    .mul_scalar(self.beta2 as f32)
                    .add(u.mul_scalar((1.0 - self.beta2) as f32));
                state.tensors[1].tensor = v.clone();
                v.sqrt().recip().mul(g)
            }
        };
        let denom = rms(&update, n)
            .div_scalar(self.clip_threshold as f32)
            .clamp_min(1.0);
        let update = update.div(denom);
        let m = lerp(
            state.tensors[0].tensor.clone(),
            update.clone(),
            1.0 - self.beta1,
        );
        state.tensors[0].tensor = m.clone();
        match dims {
            Some((l, r, c)) => {
                let res = update
                    .sub(m.clone())
                    .square()
                    .add_scalar(self.eps2 as f32)
                    .reshape([l, r, c]);
                let row = state.tensors[3].tensor.clone().reshape([l, r, 1]);
                let col = state.tensors[4].tensor.clone().reshape([l, 1, c]);
                let (row, col) = factored_ema(row, col, res, self.beta3);
                let out = approx_rsqrt(&row, &col)
                    .mul(m.reshape([l, r, c]))
                    .reshape([n]);
                state.tensors[3].tensor = row.reshape([l * r]);
                state.tensors[4].tensor = col.reshape([l * c]);
                out
            }
            None => m,
        }
    }
}
