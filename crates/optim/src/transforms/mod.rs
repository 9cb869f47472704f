//! The building blocks named optimizers are chained from.
//!
//! | transform | maps `u` to | state |
//! | --- | --- | --- |
//! | [`flip_sign`] | `-u` (torch's `maximize`) | — |
//! | [`add_decayed_weights`] | `u + λ·θ` (before a moment transform: coupled L2; after it: decoupled decay) | — |
//! | [`scale_by_adam`] | `m̂ / (√v̂ + ε)` with torch's order of operations | `exp_avg`, `exp_avg_sq`, (`max_exp_avg_sq`), `step` |
//! | [`ScaleByAdafactor`] | Adafactor's whole descent step `θ_old − θ_new` (factored second moment, clipping, relative step, β1, decay; sets its own step size) | `exp_avg_sq_row`/`_col` or `exp_avg_sq` (HF), `row_var`/`col_var` or `variance` (torch), (`exp_avg`), `step` |
//! | [`ScaleByAdam8bit`] | 8-bit Adam's whole descent step (bitsandbytes: blockwise 8-bit moments, decoupled decay; sets its own step) | codes `state1`, `state2` + `absmax1`, `absmax2` (or float `state1`, `state2`), `step` |
//! | [`scale_by_learning_rate`] | `-lr·u` (the only place the step's sign is decided) | — |

mod adafactor;
mod adam;
mod adam8bit;
mod basic;

pub use adafactor::{AdafactorConvention, ScaleByAdafactor};
pub use adam::{ScaleByAdam, scale_by_adam};
pub use adam8bit::{BnbKernel, ScaleByAdam8bit};
pub use basic::{
    AddDecayedWeights, FlipSign, ScaleByLearningRate, add_decayed_weights, flip_sign,
    scale_by_learning_rate,
};
