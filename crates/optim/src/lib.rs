//! # moment-optim
//!
//! Optimizers for [Burn](https://burn.dev) that match their reference implementations step for
//! step, built as compositions of small per-tensor transforms (optax style).
//!
//! * [`transform`]: the [`Transform`] trait (`init`/`update`) and [`Chain`].
//! * [`transforms`]: the building blocks (`scale_by_adam`, `add_decayed_weights`, …).
//! * [`optimizers`]: named optimizers as validated configs that build chains
//!   ([`AdamConfig`], [`AdamWConfig`], [`AdafactorConfig`], [`Adam8bitConfig`],
//!   [`SophiaConfig`], [`LambConfig`], [`ShampooConfig`], [`LionConfig`], [`MuonConfig`],
//!   [`AdemamixConfig`], [`ScheduleFreeConfig`], [`CameConfig`], [`MarsConfig`], [`AdamMiniConfig`],
//!   [`SoapConfig`], [`ProdigyConfig`]).
//! * [`quant`]: the blockwise 8-bit codec (bitsandbytes' dynamic maps and rounding rules);
//!   [`curvature`]: Sophia's estimators; [`linalg`]: inverse matrix roots in tensor ops, host eigen/QR.
//! * [`MomentOptimizer`]: parameter groups ([`ParamGroup`], [`Selector`]), global-norm
//!   clipping, the [`NonFinitePolicy`], the [`Observer`] hook, exact [`StateMemory`]
//!   accounting and versioned [`OptimizerRecord`]s.
//! * [`ModuleOptimizer`]: burn's `Optimizer<M, B>` over a module, with parameter paths.
//! * [`port`]: build an optimizer from a reference class name and its constructor arguments
//!   (porting a PyTorch config).
//!
//! ```no_run
//! use burn::backend::{Autodiff, NdArray};
//! use moment_optim::{AdamWConfig, MomentOptimizer, ParamGroup, Selector};
//! # fn main() -> Result<(), moment_optim::OptimError> {
//! type B = NdArray;
//! let adamw = AdamWConfig::default();
//! let engine = MomentOptimizer::<B>::builder()
//!     // no decay on vectors (biases, norms)
//!     .group(ParamGroup::new("no_decay", Selector::rank_between(0, 1), adamw.with_weight_decay(0.0).build()?))
//!     .group(ParamGroup::new("decay", Selector::all(), adamw.build()?))
//!     .clip_grad_norm(1.0)
//!     .build()?;
//! // let mut optim = engine.for_module::<MyModel<Autodiff<B>>, Autodiff<B>>();
//! // model = burn::optim::Optimizer::step(&mut optim, 1e-3, model, grads);
//! # let _ = engine; Ok(()) }
//! ```

pub mod chain;
pub mod checkpoint;
pub mod curvature;
pub mod error;
pub mod fused;
pub mod linalg;
pub mod module;
pub mod observer;
pub mod optimizer;
pub mod optimizers;
pub mod port;
pub mod quant;
pub mod record;
pub mod rules;
pub mod select;
pub mod simd;
pub mod state_view;
pub mod stats;
pub mod transform;
pub mod transforms;
mod validate;

pub use chain::Chain;
pub use error::{CheckpointError, OptimError, PortError, Result};
pub use module::{ModuleOptimizer, module_params, module_values, set_module_params};
pub use observer::{Observer, ParamView, RefusedStep};
pub use optimizer::{
    GradEntry, GradientScan, MomentOptimizer, MomentOptimizerBuilder, NonFinitePolicy, ParamGroup,
    ParamMemory, ParamTensor, PreparedStep, StateMemory, StepReport,
};
pub use optimizers::{
    AdafactorConfig, Adam8bitConfig, AdamConfig, AdamMiniConfig, AdamWConfig, AdemamixConfig,
    CameConfig, Decay, LambBiasCorrection, LambConfig, LambDecay, LionConfig, MarsConfig,
    MuonConfig, ProdigyConfig, ScheduleFreeConfig, ShampooConfig, SoapConfig, SophiaConfig,
    TrustRatio,
};
pub use record::{GroupRecord, OptimizerRecord, RECORD_VERSION};
pub use select::Selector;
pub use simd::{SimdLevel, set_simd_limit, simd_level};
pub use transform::{CodeTensor, StateTensor, StepCtx, Transform, TransformState};
pub use transforms::{AdafactorConvention, BnbKernel, ProdigyDecay, SophiaVariant};
