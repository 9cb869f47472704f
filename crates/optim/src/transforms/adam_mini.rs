use burn::tensor::{Tensor, backend::Backend};

use super::lerp;
use crate::error::{OptimError, Result};
use crate::state_view::Fresh;
use crate::transform::{StepCtx, Transform, TransformState};

/// How Adam-mini partitions one parameter, chosen from its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MiniBlocks {
    /// Per-element Adam (embeddings, LM head).
    Elementwise,
    /// One second moment per attention head (query/key projections): blocks of
    /// `num_embeds²/num_heads` elements (or `num_heads` blocks without `num_embeds`).
    Heads,
    /// One per (query group, slot) of a fused QKV weight: `[groups, heads/groups + 2, ·]`
    /// (the q heads of the group, then k and v; 3 slots without grouped-query attention).
    Qkv,
    /// One second moment for the whole tensor.
    Tensor,
}

/// Adam-mini (Zhang et al. 2024; pytorch_optimizer's `AdamMini` rules): Adam's first moment,
/// but one second moment per *block* — the mean of `g²` over it — with blocks chosen from the
/// parameter path (the core's path-aware routing):
///
/// | path contains | blocks |
/// | --- | --- |
/// | `embed`, `embd`, `wte`, `lm_head.weight`, `output.weight` | per element (Adam) |
/// | `q_proj.weight`, `k_proj.weight`, `wq.weight`, `wk.weight` | one per head |
/// | `attn.attn.weight`, `attn.qkv.weight` | one per (query group, q/k/v) |
/// | anything else | one per tensor |
///
/// `θ ← θ·(1 − lr·λ) − lr·(m/(1−β1^t)) / (√v/√(1−β2^t) + ε)`, with λ = 0 for paths containing
/// `norm` or `ln_f`. Self-scaling (the decay depends on the path): outputs the descent amount.
/// State: `m`, and `v` (per element) or `v_mean` (per block); counter `step`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScaleByAdamMini {
    /// β1.
    pub beta1: f64,
    /// β2.
    pub beta2: f64,
    /// ε.
    pub eps: f64,
    /// Decoupled decay (0 on norms).
    pub weight_decay: f64,
    /// Attention heads (q/k blocks).
    pub num_heads: usize,
    /// Query groups of a fused QKV weight (= heads without grouped-query attention).
    pub num_query_groups: usize,
    /// Model width: q/k blocks have `num_embeds²/num_heads` elements (None: `num_heads` blocks).
    pub num_embeds: Option<usize>,
}

impl ScaleByAdamMini {
    /// The partition of the parameter at `path`.
    pub fn blocks(&self, path: &str) -> MiniBlocks {
        let has = |pats: &[&str]| pats.iter().any(|p| path.contains(p));
        if has(&["embed", "embd", "wte", "lm_head.weight", "output.weight"]) {
            MiniBlocks::Elementwise
        } else if has(&["q_proj.weight", "k_proj.weight", "wq.weight", "wk.weight"]) {
            MiniBlocks::Heads
        } else if has(&["attn.attn.weight", "attn.qkv.weight"]) {
            MiniBlocks::Qkv
        } else {
            MiniBlocks::Tensor
        }
    }

    /// The naming of [`AdamMiniState`] for the parameter at `path`: `v` per element (0) or
    /// `v_mean` per block (1).
    fn naming(&self, path: &str) -> usize {
        match self.blocks(path) {
            MiniBlocks::Elementwise => 0,
            MiniBlocks::Heads | MiniBlocks::Qkv | MiniBlocks::Tensor => 1,
        }
    }

    fn decay(&self, path: &str) -> f64 {
        if path.contains("norm") || path.contains("ln_f") {
            0.0
        } else {
            self.weight_decay
        }
    }
}

crate::state_view! {
    /// Adam-mini's state (pytorch_optimizer's names): `m`, and the second moment `v` per
    /// element (naming 0) or `v_mean` per block (naming 1).
    pub(crate) struct AdamMiniState {
        counters { step }
        tensors { m, v = "v" | "v_mean" }
    }
}

impl<B: Backend> Transform<B> for ScaleByAdamMini {
    fn name(&self) -> &'static str {
        "scale_by_adam_mini"
    }

    fn init(&self, path: &str, shape: &[usize], device: &B::Device) -> Result<TransformState<B>> {
        let n: usize = shape.iter().product();
        let bad = |reason: &'static str| OptimError::UnsupportedShape {
            transform: "scale_by_adam_mini",
            path: path.to_string(),
            shape: shape.to_vec(),
            reason,
        };
        let (m_shape, v_shape): (Vec<usize>, Vec<usize>) = match self.blocks(path) {
            MiniBlocks::Elementwise => (shape.to_vec(), shape.to_vec()),
            MiniBlocks::Heads => {
                let h = self.num_heads;
                let size = match self.num_embeds {
                    Some(e) if h > 0 && (e * e).is_multiple_of(h) => e * e / h,
                    Some(_) => return Err(bad("num_embeds² is not a multiple of num_heads")),
                    None if h > 0 && n.is_multiple_of(h) => n / h,
                    None => {
                        return Err(bad("the number of elements is not a multiple of num_heads"));
                    }
                };
                if size == 0 || !n.is_multiple_of(size) {
                    return Err(bad(
                        "the tensor does not split into head blocks of num_embeds²/num_heads",
                    ));
                }
                (vec![n / size, size], vec![n / size])
            }
            MiniBlocks::Qkv => {
                let (h, g) = (self.num_heads, self.num_query_groups);
                if g == 0 || !h.is_multiple_of(g) {
                    return Err(bad("num_heads is not a multiple of num_query_groups"));
                }
                let slots = h / g + 2;
                if !n.is_multiple_of(g * slots) {
                    return Err(bad(
                        "the number of elements is not a multiple of groups·(heads/groups + 2)",
                    ));
                }
                (vec![g, slots, n / (g * slots)], vec![g, slots])
            }
            MiniBlocks::Tensor => (shape.to_vec(), Vec::new()),
        };
        Ok(AdamMiniState::init_named(
            self.naming(path),
            [
                Fresh::zeros(&m_shape, device),
                Fresh::zeros(&v_shape, device),
            ],
        ))
    }

    fn update(
        &self,
        ctx: &StepCtx<'_, B>,
        g: Tensor<B, 1>,
        state: &mut TransformState<B>,
    ) -> Tensor<B, 1> {
        let s = AdamMiniState::view(state);
        let t = s.step.saturating_add(1);
        *s.step = t;
        let n = g.dims()[0];
        if n == 0 {
            return g;
        }
        let ti = i32::try_from(t).unwrap_or(i32::MAX);
        let bc1 = 1.0 - self.beta1.powi(ti);
        let bc2_sqrt = (1.0 - self.beta2.powi(ti)).sqrt();
        let m = lerp(s.m.clone(), g.clone(), 1.0 - self.beta1);
        // (1 − β2) is formed in f64 and rounded once, as torch does with Python floats.
        let (b2, one_minus_b2) = (self.beta2 as f32, (1.0 - self.beta2) as f32);
        let g2 = g.clone().mul(g);
        let v_elem = match self.blocks(ctx.path) {
            MiniBlocks::Elementwise => {
                let v = s.v.clone().mul_scalar(b2).add(g2.mul_scalar(one_minus_b2));
                *s.v = v.clone();
                v
            }
            MiniBlocks::Heads | MiniBlocks::Qkv | MiniBlocks::Tensor => {
                // One second moment per block: `v_mean` has one element per block.
                let k = s.v.dims()[0];
                let means = g2.reshape([k, n / k]).mean_dim(1).reshape([k]);
                let v =
                    s.v.clone()
                        .mul_scalar(b2)
                        .add(means.mul_scalar(one_minus_b2));
                *s.v = v.clone();
                v.reshape([k, 1]).expand([k, n / k]).reshape([n])
            }
        };
        let update = m.clone().div_scalar(bc1 as f32).div(
            v_elem
                .sqrt()
                .div_scalar(bc2_sqrt as f32)
                .add_scalar(self.eps as f32),
        );
        *s.m = m;
        let mut descent = update.mul_scalar(ctx.lr as f32);
        let wd = self.decay(ctx.path);
        if wd > 0.0 {
            descent = descent.add(ctx.param.clone().mul_scalar((ctx.lr * wd) as f32));
        }
        descent
    }
}
