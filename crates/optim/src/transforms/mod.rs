//! The building blocks named optimizers are chained from.
//!
//! | transform | maps `u` to | state |
//! | --- | --- | --- |
//! | [`flip_sign`] | `-u` (torch's `maximize`) | — |
//! | [`add_decayed_weights`] | `u + λ·θ` (before a moment transform: coupled L2; after it: decoupled decay) | — |
//! | [`scale_by_adam`] | `m̂ / (√v̂ + ε)` with torch's order of operations | `exp_avg`, `exp_avg_sq`, (`max_exp_avg_sq`), `step` |
//! | [`ScaleByAdafactor`] | Adafactor's whole descent step `θ_old − θ_new` (factored second moment, clipping, relative step, β1, decay; sets its own step size) | `exp_avg_sq_row`/`_col` or `exp_avg_sq` (HF), `row_var`/`col_var` or `variance` (torch), (`exp_avg`), `step` |
//! | [`ScaleByAdam8bit`] | 8-bit Adam's whole descent step (bitsandbytes: blockwise 8-bit moments, decoupled decay; sets its own step) | codes `state1`, `state2` + `absmax1`, `absmax2` (or float `state1`, `state2`), `step` |
//! | [`ScaleBySophia`] | `clamp(m / denom(h), ±c)`: Sophia-G / Sophia-H (curvature fed by `update_curvature`) | `exp_avg`/`hessian` or `momentum`/`hessian_moment`, `win_rate`, `step` |
//! | [`ScaleByLambMoments`] | LAMB's `m̂ / (√v̂ + ε)` (bias correction optional, grad averaging) | `exp_avg`, `exp_avg_sq`, `step` |
//! | [`ScaleByTrustRatio`] | `φ·u`, `φ = min(‖θ‖, c) / (‖u‖ + ε)` (1 on zero norms) | `weight_norm`, `adam_norm`, `trust_ratio`, `step` |
//! | [`ScaleByShampoo`] | Shampoo's preconditioned (grafted, momentum) direction; roots by coupled Newton | per-block `pre_cond_k`/`inv_pre_cond_k` or `pre_conditioner.statistics.k`/`.pre_conditioners.k`, momentum, graft state, `step`, `root_failures` |
//! | [`ScaleByLion`] | `sign(β1·m + (1−β1)·g)`, then `m ← β2·m + (1−β2)·g` | `exp_avg` |
//! | [`ScaleByMuon`] | Nesterov EMA momentum, quintic Newton–Schulz (f32 or exact bf16), shape scale (2-D only) | `momentum_buffer` |
//! | [`ScaleByAdemamix`] | `(m1/(1−β1^t) + α·m2) / (√v̂ + ε)` with a slow EMA `m2` (α/β3 warm-up) | `exp_avg`, `exp_avg_slow`, `exp_avg_sq`, `step` |
//! | [`ScaleByScheduleFree`] | Schedule-Free AdamW's `y_old − y_new` (train mode; eval/train views) | `z`, `exp_avg_sq`, `k`, `lr_max`, `weight_sum` |
//! | [`ScaleByCame`] | CAME: Adafactor's factored, clipped direction, momentum, confidence-scaled | `exp_avg`, `exp_avg_sq_row/col`, `exp_avg_res_row/col` (or `exp_avg_sq`) |
//! | [`ScaleByMars`] | MARS-AdamW's descent step (variance-reduced for rank ≥ 2, AdamW for vectors) | `exp_avg`, `exp_avg_sq`, `last_grad`, `step` |
//! | [`ScaleByAdamMini`] | Adam-mini's descent step: one second moment per path-chosen block | `m`, `v` or `v_mean`, `step` |
//! | [`ScaleBySoap`] | SOAP's descent step: Adam in the eigenbasis of Shampoo's factors (host eigh/QR refreshes) | `exp_avg`, `exp_avg_sq`, `GG.i`, `Q.i`, `step` |
//! | [`ScaleByProdigy`] | Prodigy's descent step: Adam scaled by a distance estimate `d` reduced over the whole group (engine group phase) | `p0`, `s`, `exp_avg`, `exp_avg_sq`, `step`; group: `d`, `d_max`, `d_numerator`, … |
//! | [`scale_by_learning_rate`] | `-lr·u` (the only place the step's sign is decided) | — |

// The families the fused steps implement are reachable crate-wide, for their state views
// (`transforms::adam::AdamState`, …: `try_view` before a one-pass step).
pub(crate) mod adafactor;
pub(crate) mod adam;
pub(crate) mod adam8bit;
mod adam_mini;
mod ademamix;
mod basic;
mod came;
mod lamb;
pub(crate) mod lion;
mod mars;
mod muon;
mod prodigy;
mod schedule_free;
mod shampoo;
mod soap;
pub(crate) mod sophia;
#[cfg(test)]
mod tests;

pub(crate) use adafactor::factored_dims;
pub use adafactor::{AdafactorConvention, ScaleByAdafactor};
pub use adam::{ScaleByAdam, scale_by_adam};
pub use adam_mini::{MiniBlocks, ScaleByAdamMini};
pub use adam8bit::{BnbKernel, ScaleByAdam8bit};
pub use ademamix::ScaleByAdemamix;
pub use basic::{
    AddDecayedWeights, FlipSign, ScaleByLearningRate, add_decayed_weights, flip_sign,
    scale_by_learning_rate,
};
pub use came::ScaleByCame;
pub use lamb::{ScaleByLambMoments, ScaleByTrustRatio};
pub use lion::ScaleByLion;
pub use mars::ScaleByMars;
pub use muon::{MuonScale, NsPrecision, ScaleByMuon, round_bf16};
pub use prodigy::{ProdigyDecay, ScaleByProdigy};
pub use schedule_free::ScaleByScheduleFree;
pub use shampoo::{
    Graft, InitialRoot, ScaleByShampoo, ShampooMomentum, Statistics, merge_small_dims,
};
pub use soap::ScaleBySoap;
pub use sophia::{ScaleBySophia, SophiaVariant};

use burn::tensor::{Tensor, backend::Backend};

/// torch's CPU `lerp(a, b, w)` kernel shape (`../shared/optimizers.md` §0): `a + w·(b − a)` for
/// `|w| < 0.5`, else `b − (1 − w)·(b − a)`, with `w` rounded to f32 first.
pub(crate) fn lerp<B: Backend, const D: usize>(
    a: Tensor<B, D>,
    b: Tensor<B, D>,
    w: f64,
) -> Tensor<B, D> {
    let w32 = w as f32;
    if w32.abs() < 0.5 {
        a.clone().add(b.sub(a).mul_scalar(w32))
    } else {
        b.clone().sub(b.sub(a).mul_scalar(1.0 - w32))
    }
}
