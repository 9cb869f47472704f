use burn::tensor::{Bool, Int, Tensor, TensorData, backend::Backend};

use crate::error::Result;
use crate::quant::{self, QuantMap, Rounding};
use crate::state_view::{Fresh, FreshCodes};
use crate::stats::tensor_values;
use crate::transform::{StepCtx, Transform, TransformState};

/// Which bitsandbytes code path 8-bit Adam reproduces (`../shared/optimizers.md` §3c, §3d).
///
/// | | [`Cuda`](Self::Cuda) (what GPU users run; default) | [`Cpu`](Self::Cpu) (bnb ≥ 0.50 CPU library) |
/// | --- | --- | --- |
/// | rounding | exact nearest code, first moment keeps its sign | 65536-entry lookup table, no sign fix |
/// | weight decay | after the Adam step: `θ ← (θ + Δ)·(1 − lr·λ)` | before it: `θ ← θ·(1 − lr·λ) + Δ` |
/// | non-finite gradient element (8-bit state) | its state is zeroed, its parameter element untouched | propagates (NaN) |
/// | denominator (8-bit state) | `√v + ε·√(1−β2^t)`, step `−lr·√(1−β2^t)/(1−β1^t)` | `√v/√(1−β2^t) + ε`, step `−lr/(1−β1^t)` |
/// | denominator (float32 state) | `√v + ε·√(1−β2^t)` | `√v + ε·√(1−β2^t)` |
/// | moments `m`, `v` | `m·β1 + (1−β1)·g`, `v·β2 + (1−β2)·g·g`, each op rounded; `1 − β` as `1.0f − (float)β` | torch's `m.mul_(β1).add_(g, alpha=1−β1)`, `v.mul_(β2).addcmul_(g, g, value=1−β2)`: one fma each (`fma(g, α1, m·β1)`, `fma(α2·g, g, v·β2)`), `α = (float)(1 − β)` rounded from double |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BnbKernel {
    /// The CUDA kernels (`kOptimizerStatic8bit2StateBlockwise`, `kOptimizer32bit2State`).
    #[default]
    Cuda,
    /// The CPU code path of bitsandbytes ≥ 0.50 (what the reference cases were recorded from).
    Cpu,
}

/// 8-bit Adam's whole step for one tensor, bitsandbytes semantics: both moments stored as
/// blockwise dynamic 8-bit codes ([`quant`]: signed map for `exp_avg`, unsigned for
/// `exp_avg_sq`, per-block absmax) when the tensor has at least `min_8bit_size` elements,
/// float32 otherwise; decoupled weight decay.
///
/// Like the kernel it mirrors, this transform applies the learning rate and the decay itself
/// and outputs the full descent amount `θ_old − θ_new` (its chain ends with
/// [`flip_sign`](super::flip_sign)).
///
/// State (bitsandbytes' names): 8-bit — codes `state1`, `state2` (1 byte each per element),
/// tensors `absmax1`, `absmax2` (4 bytes per block); 32-bit — tensors `state1`, `state2`; and
/// the counter `step`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScaleByAdam8bit {
    /// β1.
    pub beta1: f64,
    /// β2.
    pub beta2: f64,
    /// ε.
    pub eps: f64,
    /// Decoupled decay λ.
    pub weight_decay: f64,
    /// Tensors with fewer elements keep float32 state.
    pub min_8bit_size: usize,
    /// Elements per quantization block.
    pub block_size: usize,
    /// Which bitsandbytes code path to reproduce.
    pub kernel: BnbKernel,
}

crate::state_view! {
    /// 8-bit Adam's blockwise-quantized state (tensors of at least `min_8bit_size` elements;
    /// bitsandbytes' names): per-block `absmax1`, `absmax2`, codes `state1`, `state2`.
    pub(crate) struct Adam8bitState {
        counters { step }
        tensors { absmax1, absmax2 }
        codes { state1, state2 }
    }
}

crate::state_view! {
    /// 8-bit Adam's float32 state (smaller tensors; bitsandbytes' names).
    pub(crate) struct Adam32bitState {
        counters { step }
        tensors { state1, state2 }
    }
}

/// The moments of one tensor, from its state view.
enum Moments<'a, B: Backend> {
    /// Blockwise 8-bit codes and their per-block absmax.
    Quantized {
        state1: &'a mut Tensor<B, 1, Int>,
        state2: &'a mut Tensor<B, 1, Int>,
        absmax1: &'a mut Tensor<B, 1>,
        absmax2: &'a mut Tensor<B, 1>,
    },
    /// float32.
    Float {
        state1: &'a mut Tensor<B, 1>,
        state2: &'a mut Tensor<B, 1>,
    },
}

impl ScaleByAdam8bit {
    fn quantized(&self, n: usize) -> bool {
        n >= self.min_8bit_size
    }

    /// The step counter and the moments of a tensor of `n` elements.
    fn moments<'a, B: Backend>(
        &self,
        n: usize,
        state: &'a mut TransformState<B>,
    ) -> (&'a mut u64, Moments<'a, B>) {
        if self.quantized(n) {
            let s = Adam8bitState::view(state);
            let moments = Moments::Quantized {
                state1: s.state1,
                state2: s.state2,
                absmax1: s.absmax1,
                absmax2: s.absmax2,
            };
            (s.step, moments)
        } else {
            let s = Adam32bitState::view(state);
            let moments = Moments::Float {
                state1: s.state1,
                state2: s.state2,
            };
            (s.step, moments)
        }
    }

    /// Step 1: the moments before this step (decoded from their 8-bit codes).
    fn decode<B: Backend>(
        &self,
        moments: &Moments<'_, B>,
        device: &B::Device,
    ) -> (Tensor<B, 1>, Tensor<B, 1>) {
        match moments {
            Moments::Quantized {
                state1,
                state2,
                absmax1,
                absmax2,
            } => {
                let map1 = quant::map_tensor::<B>(QuantMap::dynamic_signed(), device);
                let map2 = quant::map_tensor::<B>(QuantMap::dynamic_unsigned(), device);
                (
                    quant::decode(
                        &map1,
                        (*state1).clone(),
                        (*absmax1).clone(),
                        self.block_size,
                    ),
                    quant::decode(
                        &map2,
                        (*state2).clone(),
                        (*absmax2).clone(),
                        self.block_size,
                    ),
                )
            }
            Moments::Float { state1, state2 } => ((*state1).clone(), (*state2).clone()),
        }
    }

    /// Step 2: the moments after this step (the kernel's or torch's CPU arithmetic); the
    /// skipped elements' state zeroed.
    fn advance<B: Backend>(
        &self,
        (m_old, v_old): (Tensor<B, 1>, Tensor<B, 1>),
        g: Tensor<B, 1>,
        skip: Option<&Tensor<B, 1, Bool>>,
        cuda: bool,
    ) -> (Tensor<B, 1>, Tensor<B, 1>) {
        let (mut m, mut v) = if cuda {
            // β and 1 − β in f32, as the kernel's `1.0f - beta`; separate roundings.
            let (b1, b2) = (self.beta1 as f32, self.beta2 as f32);
            (
                m_old.mul_scalar(b1).add(g.clone().mul_scalar(1.0 - b1)),
                v_old
                    .mul_scalar(b2)
                    .add(g.clone().mul_scalar(1.0 - b2).mul(g)),
            )
        } else {
            torch_cpu_moments(m_old, v_old, g, self.beta1, self.beta2)
        };
        if let Some(mask) = skip {
            m = m.mask_fill(mask.clone(), 0.0);
            v = v.mask_fill(mask.clone(), 0.0);
        }
        (m, v)
    }

    /// Step 3: the descent amount `θ_old − θ_new`: the Adam part with bias corrections
    /// `c1 = 1 − β1^t`, `c2 = √(1 − β2^t)`, then decoupled decay; skipped elements stay.
    fn descent<B: Backend>(
        &self,
        ctx: &StepCtx<'_, B>,
        (m, v): (&Tensor<B, 1>, &Tensor<B, 1>),
        (c1, c2): (f64, f64),
        cuda: bool,
        quantized: bool,
        skip: Option<Tensor<B, 1, Bool>>,
    ) -> Tensor<B, 1> {
        // The Adam part of the step, added to θ. bnb's float32 paths (CUDA kernel and CPU) use
        // the `ε·√(1−β2^t)` form; only the CPU 8-bit path divides by `√(1−β2^t)` first.
        let delta = if cuda || !quantized {
            let step_size = -(ctx.lr * c2 / c1) as f32;
            m.clone()
                .div(v.clone().sqrt().add_scalar((c2 * self.eps) as f32))
                .mul_scalar(step_size)
        } else {
            m.clone()
                .div(
                    v.clone()
                        .sqrt()
                        .div_scalar(c2 as f32)
                        .add_scalar(self.eps as f32),
                )
                .mul_scalar(-(ctx.lr / c1) as f32)
        };
        let mut descent = if self.weight_decay > 0.0 {
            let keep = (1.0 - ctx.lr * self.weight_decay) as f32;
            let new = if cuda {
                ctx.param.clone().add(delta).mul_scalar(keep)
            } else {
                ctx.param.clone().mul_scalar(keep).add(delta)
            };
            ctx.param.clone().sub(new)
        } else {
            delta.neg()
        };
        if let Some(mask) = skip {
            descent = descent.mask_fill(mask, 0.0);
        }
        descent
    }

    /// Step 4: store the new moments (re-encoded to 8-bit codes with their absmax).
    fn store<B: Backend>(
        &self,
        moments: Moments<'_, B>,
        (m, v): (Tensor<B, 1>, Tensor<B, 1>),
        cuda: bool,
    ) {
        match moments {
            Moments::Quantized {
                state1,
                state2,
                absmax1,
                absmax2,
            } => {
                let rounding = if cuda {
                    Rounding::Nearest
                } else {
                    Rounding::CpuLut
                };
                let a1 = quant::block_absmax(m.clone(), self.block_size);
                let a2 = quant::block_absmax(v.clone(), self.block_size);
                *state1 = quant::encode(
                    QuantMap::dynamic_signed(),
                    m,
                    a1.clone(),
                    self.block_size,
                    rounding,
                    cuda,
                );
                *state2 = quant::encode(
                    QuantMap::dynamic_unsigned(),
                    v,
                    a2.clone(),
                    self.block_size,
                    rounding,
                    false,
                );
                *absmax1 = a1;
                *absmax2 = a2;
            }
            Moments::Float { state1, state2 } => {
                *state1 = m;
                *state2 = v;
            }
        }
    }
}

impl<B: Backend> Transform<B> for ScaleByAdam8bit {
    fn name(&self) -> &'static str {
        "scale_by_adam_8bit"
    }

    fn constants(&self) -> Vec<(&'static str, Vec<f32>)> {
        vec![
            ("qmap1", QuantMap::dynamic_signed().values().to_vec()),
            ("qmap2", QuantMap::dynamic_unsigned().values().to_vec()),
        ]
    }

    fn init(&self, _: &str, shape: &[usize], device: &B::Device) -> Result<TransformState<B>> {
        let n: usize = shape.iter().product();
        Ok(if self.quantized(n) {
            let nb = quant::num_blocks(n, self.block_size);
            let absmax = || Fresh::zeros(&[nb], device);
            let codes = || FreshCodes::filled(shape, 0, device);
            Adam8bitState::init([absmax(), absmax()], [codes(), codes()])
        } else {
            let zeros = || Fresh::zeros(shape, device);
            Adam32bitState::init([zeros(), zeros()])
        })
    }

    fn update(
        &self,
        ctx: &StepCtx<'_, B>,
        g: Tensor<B, 1>,
        state: &mut TransformState<B>,
    ) -> Tensor<B, 1> {
        let n = g.dims()[0];
        let (count, moments) = self.moments(n, state);
        let t = count.saturating_add(1);
        *count = t;
        if n == 0 {
            return g;
        }
        let ti = i32::try_from(t).unwrap_or(i32::MAX);
        let c1 = 1.0 - self.beta1.powi(ti);
        let c2 = (1.0 - self.beta2.powi(ti)).sqrt();
        let cuda = self.kernel == BnbKernel::Cuda;
        let quantized = self.quantized(n);
        let device = g.device();

        // Non-finite elements: the CUDA 8-bit kernel zeroes their state and skips them.
        let skip: Option<Tensor<B, 1, Bool>> =
            (cuda && quantized).then(|| g.clone().is_finite().bool_not());
        let g = match &skip {
            Some(mask) => g.mask_fill(mask.clone(), 0.0),
            None => g,
        };

        let old = self.decode(&moments, &device);
        let (m, v) = self.advance(old, g, skip.as_ref(), cuda);
        let descent = self.descent(ctx, (&m, &v), (c1, c2), cuda, quantized, skip);
        self.store(moments, (m, v), cuda);
        descent
    }
}

/// bitsandbytes' CPU path (8-bit and float32 state alike) updates the moments with torch ops
/// on float32 tensors: `m.mul_(β1).add_(g, alpha=1−β1)` and
/// `v.mul_(β2).addcmul_(g, g, value=1−β2)`. On torch's AVX2/AVX-512 CPU kernels (what the
/// reference cases were recorded with) that is, per element,
///
/// ```text
/// m ← fma(g, α1, m·β1)        α1 = (float)(1 − β1), the difference taken in double
/// v ← fma(α2·g, g, v·β2)      α2 = (float)(1 − β2)
/// ```
///
/// with `β` rounded to float and `m·β1`, `α2·g`, `v·β2` rounded once each (`add` with `alpha`
/// is `vec::fmadd(other, alpha, self)`; `addcmul`'s last multiply is fused into the add, as
/// probed). The CUDA kernel's `1.0f − β` differs from `(float)(1 − β)` by up to 3e-8, i.e.
/// 1.3e-5 relative to `1 − β` for β2 = 0.999 — all but the last bits of the gap moment's CPU
/// mode had on the recorded `absmax2` (≤ 1.1e-7 without the fma). torch's scalar `DEFAULT`
/// kernels (no AVX) would round the product and the sum separately instead; the recordings
/// follow the fma. See `docs/algorithms/adam8bit.md`.
///
/// Slices of equal length, updated in place.
fn torch_cpu_moment_update(m: &mut [f32], v: &mut [f32], g: &[f32], beta1: f64, beta2: f64) {
    let (b1, a1) = (beta1 as f32, (1.0 - beta1) as f32);
    let (b2, a2) = (beta2 as f32, (1.0 - beta2) as f32);
    for ((m, v), &g) in m.iter_mut().zip(v.iter_mut()).zip(g) {
        *m = g.mul_add(a1, *m * b1);
        *v = (a2 * g).mul_add(g, *v * b2);
    }
}

/// [`torch_cpu_moment_update`] on tensors. burn has no fused multiply-add, so this runs on the
/// host (the CPU-path mode reproduces a reference; the default mode stays on the device).
fn torch_cpu_moments<B: Backend>(
    m: Tensor<B, 1>,
    v: Tensor<B, 1>,
    g: Tensor<B, 1>,
    beta1: f64,
    beta2: f64,
) -> (Tensor<B, 1>, Tensor<B, 1>) {
    let n = g.dims()[0];
    let device = g.device();
    let (mut mh, mut vh) = (tensor_values(&m), tensor_values(&v));
    torch_cpu_moment_update(&mut mh, &mut vh, &tensor_values(&g), beta1, beta2);
    let back = |x: Vec<f32>| Tensor::<B, 1>::from_data(TensorData::new(x, [n]), &device);
    (back(mh), back(vh))
}
