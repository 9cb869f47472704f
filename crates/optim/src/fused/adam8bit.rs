//! 8-bit blockwise Adam/AdamW's fused step ([`FusedAdam8bit`]) and its per-step constants;
//! the block kernel is the CPU's (`cpu/adam8bit.rs`).

use burn::tensor::{Tensor, backend::Backend};

#[cfg(feature = "ndarray")]
use super::cpu;
use super::registry::on_device;
use super::{FusedResult, FusedStep, all_len, with_counter};
use crate::transform::TransformState;
use crate::transforms::adam8bit::Adam8bitState;

/// 8-bit blockwise Adam/AdamW with bitsandbytes' CUDA-kernel semantics
/// (`scale_by_adam_8bit → flip_sign`, quantized state), fused: per block, decode both moments,
/// update them and the parameter, take the new block max-abs and re-encode (exact nearest
/// code, sign fix for `state1`) — one pass over the parameter, gradient and the two `u8` code
/// streams. Parameters below `min_8bit_size` (32-bit state) and the CPU-kernel mode run
/// composed.
///
/// Derived from the chain by [`plan`](super::plan): its fields are the chain's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FusedAdam8bit {
    /// The transform (its `kernel` must be [`BnbKernel::Cuda`](crate::BnbKernel::Cuda)).
    pub(crate) transform: crate::transforms::ScaleByAdam8bit,
}

/// Per-step constants of the 8-bit kernel, rounded as the composed transform rounds them.
/// Per element of a block (old max-abs `a1`, `a2`; a non-finite gradient leaves the element
/// and zeroes its moments): `m ← map1[c1]·a1·β1 + g·(1−β1); v ← map2[c2]·a2·β2 + g·(1−β2)·g;
/// δ ← m / (√v + eps_c2) · step_size; d ← keep ? θ − (θ + δ)·keep : −δ; θ ← θ − d`; then the
/// block's new max-abs of `m` and `v` (NaN ignored) and the nearest codes of `m/a1'`, `v/a2'`
/// (`state1` with the kernel's sign fix).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Adam8Scalars {
    /// β1.
    pub b1: f32,
    /// 1 − β1.
    pub one_minus_b1: f32,
    /// β2.
    pub b2: f32,
    /// 1 − β2.
    pub one_minus_b2: f32,
    /// ε·√(1 − β2ᵗ).
    pub eps_c2: f32,
    /// −lr·√(1 − β2ᵗ)/(1 − β1ᵗ).
    pub step_size: f32,
    /// `1 − lr·λ` with decoupled decay λ > 0.
    pub keep: Option<f32>,
    /// Elements per quantization block.
    pub block: usize,
}

impl FusedAdam8bit {
    /// The constants of step `t` (1-based).
    pub fn scalars(&self, lr: f64, t: u64) -> Adam8Scalars {
        let tr = &self.transform;
        let ti = i32::try_from(t).unwrap_or(i32::MAX);
        let c1 = 1.0 - tr.beta1.powi(ti);
        let c2 = (1.0 - tr.beta2.powi(ti)).sqrt();
        let (b1, b2) = (tr.beta1 as f32, tr.beta2 as f32);
        Adam8Scalars {
            b1,
            one_minus_b1: 1.0 - b1,
            b2,
            one_minus_b2: 1.0 - b2,
            eps_c2: (c2 * tr.eps) as f32,
            step_size: -(lr * c2 / c1) as f32,
            keep: (tr.weight_decay > 0.0).then_some((1.0 - lr * tr.weight_decay) as f32),
            block: tr.block_size,
        }
    }
}

impl<B: Backend> FusedStep<B> for FusedAdam8bit {
    fn name(&self) -> &'static str {
        "fused_adam8bit"
    }

    fn step(
        &self,
        lr: f64,
        _shape: &[usize],
        param: Tensor<B, 1>,
        grad: Tensor<B, 1>,
        states: &mut [TransformState<B>],
    ) -> FusedResult<B> {
        let t = &self.transform;
        let n = param.dims()[0];
        if t.kernel != crate::BnbKernel::Cuda || n < t.min_8bit_size || n == 0 {
            return Err((param, grad));
        }
        let Some(st) = states.first_mut() else {
            return Err((param, grad));
        };
        let block = t.block_size;
        let nb = crate::quant::num_blocks(n, block);
        let fits = block > 0
            && grad.dims()[0] == n
            && Adam8bitState::try_view(st).is_some_and(|s| {
                all_len([&*s.absmax1, &*s.absmax2], nb)
                    && [&*s.state1, &*s.state2].iter().all(|c| c.dims()[0] == n)
            });
        if !fits {
            return Err((param, grad));
        }
        let (param, grad) = match with_counter(st, |st| {
            let sc = self.scalars(lr, st.counter("step").unwrap_or(0));
            on_device(param, grad, |d, p, g| d.adam8bit(&sc, p, g, st))
        }) {
            Ok(p) => return Ok(p),
            Err(x) => x,
        };
        #[cfg(feature = "ndarray")]
        {
            cpu::adam8bit(self, lr, param, grad, st)
        }
        #[cfg(not(feature = "ndarray"))]
        {
            Err((param, grad))
        }
    }
}
