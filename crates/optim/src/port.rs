//! Build a moment optimizer from a reference implementation's class name and constructor
//! arguments — porting a PyTorch (or other reference) config. The reference runner uses this
//! for every recorded case; users can use it to carry a Python config over unchanged.
//!
//! Unknown argument names are an error (a silently ignored argument would change the math).
//! Arguments that only choose an implementation strategy in torch (`foreach`, `fused`,
//! `capturable`, `differentiable`) are accepted and have no effect.

use std::collections::{BTreeMap, BTreeSet};

use burn::tensor::backend::Backend;

use crate::error::{OptimError, Result};
use crate::optimizers::{
    AdafactorConfig, Adam8bitConfig, AdamConfig, AdamMiniConfig, AdamWConfig, AdemamixConfig,
    CameConfig, Decay, LambConfig, LambDecay, LionConfig, MarsConfig, MuonConfig, ProdigyConfig,
    ScheduleFreeConfig, ShampooConfig, SoapConfig, SophiaConfig, TrustRatio,
};
use crate::transform::Chain;
use crate::transforms::BnbKernel;
use crate::transforms::{Graft, ShampooMomentum, Statistics};
use crate::transforms::{MuonScale, NsPrecision, ProdigyDecay};

/// A constructor argument value (the JSON / Python subset configs use).
#[derive(Debug, Clone, PartialEq)]
pub enum ArgValue {
    /// `None` / `null`.
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// A list or tuple.
    List(Vec<ArgValue>),
}

/// Constructor arguments by name.
pub type RefArgs = BTreeMap<String, ArgValue>;

/// A ported optimizer: its chain and the learning rate the reference was constructed with
/// (moment takes the learning rate per step, as burn's schedulers do).
#[derive(Debug, Clone)]
pub struct Ported<B: Backend> {
    /// The optimizer chain.
    pub chain: Chain<B>,
    /// Learning rate to pass to each step.
    pub lr: f64,
}

/// The reference classes [`from_reference`] understands.
pub const SUPPORTED_CLASSES: &[&str] = &[
    "torch.optim.Adam",
    "torch.optim.AdamW",
    "torch.optim.Adafactor",
    "transformers.optimization.Adafactor",
    "bitsandbytes.optim.Adam8bit",
    "bitsandbytes.optim.AdamW8bit",
    "bitsandbytes.optim.PagedAdam8bit",
    "bitsandbytes.optim.PagedAdamW8bit",
    "sophia_opt.SophiaG",
    "pytorch_optimizer.SophiaH",
    "pytorch_optimizer.Lamb",
    "pytorch_optimizer.Shampoo",
    "pytorch_optimizer.ScalableShampoo",
    "lion_pytorch.Lion",
    "torch.optim.Muon",
    "pytorch_optimizer.AdEMAMix",
    "schedulefree.AdamWScheduleFree",
    "pytorch_optimizer.CAME",
    "pytorch_optimizer.MARS",
    "pytorch_optimizer.AdamMini",
    "pytorch_optimizer.Prodigy",
    "pytorch_optimizer.SOAP",
];

/// Choices a reference config cannot express: which code path of the reference to follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PortOptions {
    /// bitsandbytes classes: reproduce the CUDA kernels (default) or the CPU code path.
    pub bnb_kernel: BnbKernel,
}

/// Build the moment equivalent of `class(**args)`.
///
/// Returns [`OptimError::Unsupported`] for classes moment does not implement (yet) and
/// [`OptimError::InvalidConfig`] for bad or unknown arguments.
pub fn from_reference<B: Backend>(class: &str, args: &RefArgs) -> Result<Ported<B>> {
    from_reference_with(class, args, &PortOptions::default())
}

/// [`from_reference`] with explicit [`PortOptions`].
pub fn from_reference_with<B: Backend>(
    class: &str,
    args: &RefArgs,
    options: &PortOptions,
) -> Result<Ported<B>> {
    let mut a = Args::new(class, args);
    let ported = match class {
        "torch.optim.Adam" | "torch.optim.AdamW" => {
            let adamw = class.ends_with("AdamW");
            let d = if adamw {
                AdamWConfig::default()
            } else {
                let c = AdamConfig::default();
                AdamWConfig {
                    betas: c.betas,
                    eps: c.eps,
                    weight_decay: c.weight_decay,
                    amsgrad: c.amsgrad,
                    maximize: c.maximize,
                }
            };
            let lr = a.float("lr", 1e-3)?;
            let betas = a.pair("betas", d.betas)?;
            let eps = a.float("eps", d.eps)?;
            let weight_decay = a.float("weight_decay", d.weight_decay)?;
            let amsgrad = a.bool("amsgrad", d.amsgrad)?;
            let maximize = a.bool("maximize", d.maximize)?;
            // torch >= 2.6: Adam(decoupled_weight_decay=True) is AdamW.
            let decoupled = a.bool("decoupled_weight_decay", adamw)?;
            a.ignore(&["foreach", "fused", "capturable", "differentiable"]);
            let chain = if decoupled {
                AdamWConfig {
                    betas,
                    eps,
                    weight_decay,
                    amsgrad,
                    maximize,
                }
                .build()?
            } else {
                AdamConfig {
                    betas,
                    eps,
                    weight_decay,
                    amsgrad,
                    maximize,
                }
                .build()?
            };
            Ported { chain, lr }
        }
        "transformers.optimization.Adafactor" | "transformers.Adafactor" => {
            let d = AdafactorConfig::transformers();
            let lr = a.opt_float("lr")?;
            let (eps1, eps2) = a.pair("eps", (d.eps1, d.eps2))?;
            let relative_step = a.bool("relative_step", d.relative_step)?;
            let config = AdafactorConfig {
                eps1,
                eps2,
                clip_threshold: a.float("clip_threshold", d.clip_threshold)?,
                decay_rate: a.float("decay_rate", d.decay_rate)?,
                beta1: a.opt_float("beta1")?,
                weight_decay: a.float("weight_decay", d.weight_decay)?,
                scale_parameter: a.bool("scale_parameter", d.scale_parameter)?,
                relative_step,
                warmup_init: a.bool("warmup_init", d.warmup_init)?,
                ..d
            };
            // HF: `lr` and `relative_step` are exclusive; without relative step lr is required.
            let lr = match (relative_step, lr) {
                (true, None) => 1.0,
                (false, Some(lr)) => lr,
                (true, Some(lr)) => {
                    return Err(OptimError::invalid(
                        "port",
                        "lr",
                        lr,
                        "None when relative_step=True (transformers raises too)",
                    ));
                }
                (false, None) => {
                    return Err(OptimError::invalid(
                        "port",
                        "lr",
                        "None",
                        "a learning rate when relative_step=False",
                    ));
                }
            };
            Ported {
                chain: config.build()?,
                lr,
            }
        }
        "torch.optim.Adafactor" => {
            let d = AdafactorConfig::torch();
            let lr = a.float("lr", 1e-2)?;
            let (eps1, eps2) = match a.take("eps") {
                None | Some(ArgValue::Null) => (d.eps1, d.eps2),
                Some(v @ ArgValue::List(items)) => match items.as_slice() {
                    [e1, e2] => (
                        match e1 {
                            ArgValue::Null => d.eps1,
                            e => as_f64(e)
                                .ok_or_else(|| bad("eps", v, "(None or a number, a number)"))?,
                        },
                        as_f64(e2).ok_or_else(|| bad("eps", v, "(None or a number, a number)"))?,
                    ),
                    _ => return Err(bad("eps", v, "(None or a number, a number)")),
                },
                Some(v) => return Err(bad("eps", v, "(None or a number, a number)")),
            };
            let config = AdafactorConfig {
                eps1,
                eps2,
                clip_threshold: a.float("d", d.clip_threshold)?,
                decay_rate: a.float("beta2_decay", d.decay_rate)?,
                weight_decay: a.float("weight_decay", d.weight_decay)?,
                maximize: a.bool("maximize", d.maximize)?,
                ..d
            };
            a.ignore(&["foreach"]);
            Ported {
                chain: config.build()?,
                lr,
            }
        }
        "bitsandbytes.optim.Adam8bit"
        | "bitsandbytes.optim.AdamW8bit"
        | "bitsandbytes.optim.PagedAdam8bit"
        | "bitsandbytes.optim.PagedAdamW8bit" => {
            let d = if class.ends_with("AdamW8bit") {
                Adam8bitConfig::adamw()
            } else {
                Adam8bitConfig::default()
            };
            let lr = a.float("lr", 1e-3)?;
            let min_8bit_size = a.float("min_8bit_size", d.min_8bit_size as f64)?;
            if !(min_8bit_size >= 0.0 && min_8bit_size.fract() == 0.0) {
                return Err(OptimError::invalid(
                    "port",
                    "min_8bit_size",
                    min_8bit_size,
                    "a non-negative integer",
                ));
            }
            let config = Adam8bitConfig {
                betas: a.pair("betas", d.betas)?,
                eps: a.float("eps", d.eps)?,
                weight_decay: a.float("weight_decay", d.weight_decay)?,
                min_8bit_size: min_8bit_size as usize,
                kernel: options.bnb_kernel,
                ..d
            };
            if a.bool("amsgrad", false)? {
                return Err(OptimError::invalid(
                    "port",
                    "amsgrad",
                    true,
                    "false: bitsandbytes' 8-bit classes accept amsgrad but ignore it (bnb#1261); moment will not silently drop it",
                ));
            }
            if a.float("percentile_clipping", 100.0)? != 100.0 {
                return Err(OptimError::Unsupported {
                    reason: "bitsandbytes percentile_clipping < 100 (removed in bnb 0.50) is not implemented; use the engine's global-norm clipping".into(),
                });
            }
            if !a.bool("block_wise", true)? {
                return Err(OptimError::Unsupported {
                    reason: "bitsandbytes block_wise=False (non-blockwise 8-bit state, removed in bnb 0.50) is not implemented".into(),
                });
            }
            if !matches!(a.take("args"), None | Some(ArgValue::Null)) {
                return Err(OptimError::Unsupported {
                    reason:
                        "bitsandbytes `args` overrides are not mapped; pass the arguments directly"
                            .into(),
                });
            }
            if a.float("max_unorm", 0.0)? != 0.0 {
                return Err(OptimError::Unsupported {
                    reason: "bitsandbytes max_unorm (update-norm clipping) is not implemented"
                        .into(),
                });
            }
            // optim_bits is ignored by the 8-bit classes; is_paged only chooses memory placement.
            a.ignore(&["optim_bits", "is_paged"]);
            Ported {
                chain: config.build()?,
                lr,
            }
        }
        "sophia_opt.SophiaG" | "sophia.SophiaG" => {
            let d = SophiaConfig::g();
            let lr = a.float("lr", 1e-4)?;
            let config = SophiaConfig {
                betas: a.pair("betas", d.betas)?,
                rho: a.float("rho", d.rho)?,
                // `step(bs=…)` in the official code; a config field in moment.
                bs: a.float("bs", d.bs)?,
                decay: Decay::Decoupled(a.float("weight_decay", 0.1)?),
                maximize: a.bool("maximize", false)?,
                ..d
            };
            a.ignore(&["capturable"]);
            Ported {
                chain: config.build()?,
                lr,
            }
        }
        "pytorch_optimizer.SophiaH" => {
            let d = SophiaConfig::h();
            let lr = a.float("lr", 6e-2)?;
            let decay = a.pytorch_optimizer_decay(true)?;
            let config = SophiaConfig {
                betas: a.pair("betas", d.betas)?,
                rho: a.float("p", d.rho)?,
                eps: a.float("eps", d.eps)?,
                decay,
                maximize: a.bool("maximize", false)?,
                ..d
            };
            // These configure pytorch_optimizer's own Hutchinson estimate; moment takes
            // estimates through `update_curvature` (see `curvature::Hutchinson`).
            a.ignore(&["update_period", "num_samples", "hessian_distribution"]);
            Ported {
                chain: config.build()?,
                lr,
            }
        }
        "pytorch_optimizer.Lamb" => {
            let d = LambConfig::pytorch_optimizer();
            let lr = a.float("lr", 1e-3)?;
            if a.bool("rectify", false)? {
                return Err(OptimError::Unsupported {
                    reason: "pytorch_optimizer Lamb(rectify=True) (RAdam rectification) is not implemented".into(),
                });
            }
            if a.bool("pre_norm", false)? {
                return Err(OptimError::Unsupported {
                    reason:
                        "pytorch_optimizer Lamb(pre_norm=True): use the engine's clip_grad_norm"
                            .into(),
                });
            }
            // `weight_decouple=False` is not L2: the reference never touches the gradient
            // (`apply_weight_decay(grad=None)` / no foreach add to the grads) and adds `λθ` to
            // the Adam direction before the norms (`_step_foreach`: `_foreach_add_(updates,
            // params, alpha=weight_decay)`), so the trust ratio sees `r + λθ`.
            let decay = match a.pytorch_optimizer_decay(true)? {
                Decay::Coupled(wd) => LambDecay::InUpdate(wd),
                Decay::Decoupled(wd) => LambDecay::DecoupledBeforeNorm(wd),
                Decay::None => LambDecay::DecoupledBeforeNorm(0.0),
            };
            // One `eps` for both the Adam denominator and the trust ratio's `‖u‖ + eps`.
            let eps = a.float("eps", d.eps)?;
            let config = LambConfig {
                betas: a.pair("betas", d.betas)?,
                eps,
                trust_eps: eps,
                decay,
                max_weight_norm: Some(a.float("clamp", 10.0)?),
                grad_averaging: a.bool("grad_averaging", d.grad_averaging)?,
                trust_ratio: if a.bool("adam", false)? {
                    TrustRatio::Never
                } else {
                    TrustRatio::Always
                },
                maximize: a.bool("maximize", false)?,
                ..d
            };
            // Only used with rectify=True / pre_norm=True (rejected above).
            a.ignore(&["degenerated_to_sgd", "n_sma_threshold", "max_grad_norm"]);
            Ported {
                chain: config.build()?,
                lr,
            }
        }
        "pytorch_optimizer.Shampoo" => {
            let mut c = ShampooConfig::gupta();
            let lr = a.float("lr", 1e-3)?;
            c.shampoo.momentum = ShampooMomentum::LerpPrevious(a.float("momentum", 0.0)?);
            c = c.with_decay(a.pytorch_optimizer_decay(false)?);
            c.shampoo.precondition_frequency = a.uint("preconditioning_compute_steps", 1)?;
            c.shampoo.matrix_eps = a.float("matrix_eps", 1e-6)?;
            c.maximize = a.bool("maximize", false)?;
            Ported {
                chain: c.build()?,
                lr,
            }
        }
        "pytorch_optimizer.ScalableShampoo" => {
            let mut c = ShampooConfig::scalable();
            let lr = a.float("lr", 1e-3)?;
            let (b1, b2) = a.pair("betas", (0.9, 0.999))?;
            c.shampoo.statistics = if b2 == 1.0 {
                Statistics::Sum
            } else {
                Statistics::Ema(b2)
            };
            c.shampoo.momentum = ShampooMomentum::Heavy {
                beta1: b1,
                nesterov: a.bool("nesterov", true)?,
                moving_average: a.bool("moving_average_for_momentum", false)?,
            };
            let wd = a.float("weight_decay", 0.0)?;
            c = c.with_decay(if a.bool("decoupled_weight_decay", false)? {
                Decay::Decoupled(wd)
            } else {
                Decay::Coupled(wd)
            });
            if !a.bool("decoupled_learning_rate", true)? {
                return Err(OptimError::Unsupported {
                    reason: "ScalableShampoo(decoupled_learning_rate=False) is not implemented"
                        .into(),
                });
            }
            let exp = a.uint("inverse_exponent_override", 0)?;
            c.shampoo.exponent_override = if exp > 0 {
                Some(u32::try_from(exp).map_err(|_| {
                    OptimError::invalid(
                        "port",
                        "inverse_exponent_override",
                        exp,
                        "an exponent <= 64",
                    )
                })?)
            } else {
                None
            };
            c.shampoo.start_preconditioning_step = a.uint("start_preconditioning_step", 25)?;
            c.shampoo.precondition_frequency = a.uint("preconditioning_compute_steps", 1000)?;
            c.shampoo.statistics_frequency = a.uint("statistics_compute_steps", 1)?;
            c.shampoo.block_size = Some(a.uint("block_size", 512)? as usize);
            if a.uint("skip_preconditioning_rank_lt", 1)? > 1 {
                return Err(OptimError::Unsupported {
                    reason: "ScalableShampoo skip_preconditioning_rank_lt > 1 is not implemented"
                        .into(),
                });
            }
            c.shampoo.max_preconditioned_dim =
                Some(a.uint("no_preconditioning_for_layers_with_dim_gt", 8192)? as usize);
            c.shampoo.merge_small_dims = a.bool("shape_interpretation", true)?;
            c.shampoo.graft = match a.uint("graft_type", 1)? {
                0 => Graft::None,
                1 => Graft::Sgd,
                2 => Graft::AdaGrad,
                3 => Graft::RmsProp(b2),
                4 => Graft::SqrtN,
                other => {
                    return Err(OptimError::invalid(
                        "port",
                        "graft_type",
                        other,
                        "0 (none), 1 (SGD), 2 (AdaGrad), 3 (RMSProp), 4 (SQRT_N)",
                    ));
                }
            };
            if a.uint("pre_conditioner_type", 0)? != 0 {
                return Err(OptimError::Unsupported {
                    reason: "ScalableShampoo pre_conditioner_type INPUT/OUTPUT is not implemented (ALL is)".into(),
                });
            }
            c.shampoo.graft_eps = a.float("diagonal_eps", 1e-10)?;
            c.shampoo.matrix_eps = a.float("matrix_eps", 1e-6)?;
            // SVD and Schur–Newton roots: moment computes the same root with its own
            // deterministic coupled Newton iteration in f64.
            a.ignore(&["use_svd"]);
            c.maximize = a.bool("maximize", false)?;
            Ported {
                chain: c.build()?,
                lr,
            }
        }
        "lion_pytorch.Lion" | "pytorch_optimizer.Lion" => {
            let lr = a.float("lr", 1e-4)?;
            let mut weight_decay = a.float("weight_decay", 0.0)?;
            // lucidrains: decoupled_weight_decay=True divides λ by the initial lr.
            if a.bool("decoupled_weight_decay", false)? && lr > 0.0 {
                weight_decay /= lr;
            }
            let config = LionConfig {
                betas: a.pair("betas", (0.9, 0.99))?,
                weight_decay,
                maximize: a.bool("maximize", false)?,
            };
            a.ignore(&["use_triton"]);
            Ported {
                chain: config.build()?,
                lr,
            }
        }
        "torch.optim.Muon" => {
            let d = MuonConfig::default();
            let lr = a.float("lr", 1e-3)?;
            let coefficients = a.triple("ns_coefficients", d.ns_coefficients)?;
            let scale = match a.take("adjust_lr_fn") {
                None | Some(ArgValue::Null) => MuonScale::Original,
                Some(ArgValue::Str(s)) if s == "original" => MuonScale::Original,
                Some(ArgValue::Str(s)) if s == "match_rms_adamw" => MuonScale::MatchRmsAdamW,
                Some(ArgValue::Str(s)) if s == "spectral_unclamped" => MuonScale::SpectralUnclamped,
                Some(v) => {
                    return Err(bad(
                        "adjust_lr_fn",
                        v,
                        "None, \"original\", \"match_rms_adamw\" or \"spectral_unclamped\"",
                    ));
                }
            };
            let config = MuonConfig {
                momentum: a.float("momentum", d.momentum)?,
                nesterov: a.bool("nesterov", d.nesterov)?,
                ns_coefficients: coefficients,
                ns_steps: a.uint("ns_steps", d.ns_steps as u64)? as usize,
                eps: a.float("eps", d.eps)?,
                // torch runs Newton–Schulz in bfloat16: reproduce it exactly.
                precision: NsPrecision::Bf16,
                scale,
                weight_decay: a.float("weight_decay", d.weight_decay)?,
                maximize: false,
            };
            Ported {
                chain: config.build()?,
                lr,
            }
        }
        "pytorch_optimizer.AdEMAMix" => {
            let d = AdemamixConfig::default();
            let lr = a.float("lr", 1e-3)?;
            let betas = a.triple("betas", d.betas)?;
            let decay = a.pytorch_optimizer_decay(false)?;
            let config = AdemamixConfig {
                betas,
                alpha: a.float("alpha", d.alpha)?,
                warmup: a.opt_float("t_alpha_beta3")?,
                eps: a.float("eps", d.eps)?,
                decay,
                maximize: a.bool("maximize", false)?,
            };
            Ported {
                chain: config.build()?,
                lr,
            }
        }
        "schedulefree.AdamWScheduleFree" => {
            let d = ScheduleFreeConfig::default();
            let lr = a.float("lr", 0.0025)?;
            let config = ScheduleFreeConfig {
                betas: a.pair("betas", d.betas)?,
                eps: a.float("eps", d.eps)?,
                weight_decay: a.float("weight_decay", d.weight_decay)?,
                warmup_steps: a.uint("warmup_steps", d.warmup_steps)?,
                r: a.float("r", d.r)?,
                weight_lr_power: a.float("weight_lr_power", d.weight_lr_power)?,
            };
            a.ignore(&["foreach"]);
            Ported {
                chain: config.build()?,
                lr,
            }
        }
        "pytorch_optimizer.CAME" => {
            let d = CameConfig::default();
            let lr = a.float("lr", 2e-4)?;
            let betas = a.triple("betas", d.betas)?;
            let decay = a.pytorch_optimizer_decay(true)?;
            if a.bool("ams_bound", false)? {
                return Err(OptimError::Unsupported {
                    reason: "CAME(ams_bound=True) is not implemented".into(),
                });
            }
            let config = CameConfig {
                betas,
                eps: (a.float("eps1", d.eps.0)?, a.float("eps2", d.eps.1)?),
                clip_threshold: a.float("clip_threshold", d.clip_threshold)?,
                decay,
                maximize: a.bool("maximize", false)?,
            };
            Ported {
                chain: config.build()?,
                lr,
            }
        }
        "pytorch_optimizer.MARS" => {
            let d = MarsConfig::default();
            let lr = a.float("lr", 3e-3)?;
            match a.take("mars_type") {
                None | Some(ArgValue::Null) => {}
                Some(ArgValue::Str(s)) if s == "adamw" => {}
                Some(v) => {
                    return Err(OptimError::Unsupported {
                        reason: format!("MARS mars_type {v:?} is not implemented (adamw is)"),
                    });
                }
            }
            if a.bool("optimize_1d", false)? {
                return Err(OptimError::Unsupported {
                    reason: "MARS(optimize_1d=True) is not implemented".into(),
                });
            }
            for flag in ["ams_bound", "cautious", "fixed_decay"] {
                if a.bool(flag, false)? {
                    return Err(OptimError::Unsupported {
                        reason: format!("MARS({flag}=True) is not implemented"),
                    });
                }
            }
            if !a.bool("weight_decouple", true)? {
                return Err(OptimError::Unsupported {
                    reason: "MARS(weight_decouple=False) is not implemented".into(),
                });
            }
            let lr_1d = a.float("lr_1d", 3e-3)?;
            if lr <= 0.0 {
                return Err(OptimError::invalid(
                    "port",
                    "lr",
                    lr,
                    "a learning rate > 0 (MARS's 1-D lr is taken relative to it; the reference divides by it too)",
                ));
            }
            let config = MarsConfig {
                betas: a.pair("betas", d.betas)?,
                gamma: a.float("gamma", d.gamma)?,
                eps: a.float("eps", d.eps)?,
                weight_decay: a.float("weight_decay", d.weight_decay)?,
                lr_1d_ratio: lr_1d / lr,
                betas_1d: a.pair("betas_1d", d.betas_1d)?,
                weight_decay_1d: a.float("weight_decay_1d", d.weight_decay_1d)?,
            };
            if a.bool("maximize", false)? {
                return Err(OptimError::Unsupported {
                    reason: "MARS(maximize=True) is not implemented".into(),
                });
            }
            Ported {
                chain: config.build()?,
                lr,
            }
        }
        "pytorch_optimizer.AdamMini" => {
            let d = AdamMiniConfig::default();
            let lr = a.float("lr", 1.0)?;
            if a.bool("model_sharding", false)? {
                return Err(OptimError::Unsupported {
                    reason:
                        "AdamMini(model_sharding=True) is not implemented (sharding is issue 12)"
                            .into(),
                });
            }
            if a.bool("maximize", false)? {
                return Err(OptimError::Unsupported {
                    reason: "AdamMini(maximize=True) is not implemented".into(),
                });
            }
            let groups = match a.take("num_query_groups") {
                None | Some(ArgValue::Null) => None,
                Some(v) => match as_f64(v) {
                    Some(x) if x >= 1.0 && x.fract() == 0.0 && x < 1e9 => Some(x as usize),
                    _ => return Err(bad("num_query_groups", v, "None or a positive integer")),
                },
            };
            let config = AdamMiniConfig {
                betas: a.pair("betas", d.betas)?,
                eps: a.float("eps", d.eps)?,
                weight_decay: a.float("weight_decay", d.weight_decay)?,
                num_heads: a.uint("num_heads", 32)? as usize,
                num_query_groups: groups,
                num_embeds: Some(a.uint("num_embeds", 2048)? as usize),
            };
            Ported {
                chain: config.build()?,
                lr,
            }
        }
        "pytorch_optimizer.SOAP" => {
            let d = SoapConfig::default();
            let lr = a.float("lr", 3e-3)?;
            match a.take("data_format") {
                None | Some(ArgValue::Null) => {}
                Some(ArgValue::Str(s)) if s == "channels_first" => {}
                Some(v) => {
                    return Err(OptimError::Unsupported {
                        reason: format!(
                            "SOAP data_format {v:?} is not implemented (channels_first is)"
                        ),
                    });
                }
            }
            let config = SoapConfig {
                betas: a.pair("betas", d.betas)?,
                shampoo_beta: a.opt_float("shampoo_beta")?,
                eps: a.float("eps", d.eps)?,
                weight_decay: a.float("weight_decay", d.weight_decay)?,
                precondition_frequency: a
                    .uint("precondition_frequency", d.precondition_frequency)?,
                max_precondition_dim: usize::try_from(
                    a.uint("max_precondition_dim", d.max_precondition_dim as u64)?,
                )
                .map_err(|_| {
                    OptimError::invalid("port", "max_precondition_dim", "too large", "a usize")
                })?,
                merge_dims: a.bool("merge_dims", d.merge_dims)?,
                precondition_1d: a.bool("precondition_1d", d.precondition_1d)?,
                correct_bias: a.bool("correct_bias", d.correct_bias)?,
                normalize_gradient: a.bool("normalize_gradient", d.normalize_gradient)?,
                maximize: a.bool("maximize", false)?,
            };
            Ported {
                chain: config.build()?,
                lr,
            }
        }
        "pytorch_optimizer.Prodigy" => {
            let d = ProdigyConfig::default();
            let lr = a.float("lr", 1.0)?;
            let wd = a.float("weight_decay", 0.0)?;
            let decouple = a.bool("weight_decouple", true)?;
            let fixed = a.bool("fixed_decay", false)?;
            if !decouple && wd > 0.0 {
                return Err(OptimError::Unsupported {
                    reason: "Prodigy(weight_decouple=False): the reference adds λ·θ to the gradient after the moments \
                             and d estimate have consumed it, so the decay has no effect; moment refuses rather than \
                             silently do nothing (use weight_decouple=True)"
                        .into(),
                });
            }
            let config = ProdigyConfig {
                betas: a.pair("betas", d.betas)?,
                beta3: a.opt_float("beta3")?,
                d0: a.float("d0", d.d0)?,
                d_coef: a.float("d_coef", d.d_coef)?,
                growth_rate: a.float("growth_rate", d.growth_rate)?,
                decay: if fixed {
                    ProdigyDecay::Fixed(wd)
                } else {
                    ProdigyDecay::Decoupled(wd)
                },
                bias_correction: a.bool("bias_correction", d.bias_correction)?,
                safeguard_warmup: a.bool("safeguard_warmup", d.safeguard_warmup)?,
                eps: match a.take("eps") {
                    None => d.eps,
                    Some(ArgValue::Null) => None,
                    Some(v) => Some(as_f64(v).ok_or_else(|| bad("eps", v, "None or a number"))?),
                },
                maximize: a.bool("maximize", false)?,
            };
            a.ignore(&["foreach"]);
            Ported {
                chain: config.build()?,
                lr,
            }
        }
        other => {
            return Err(OptimError::Unsupported {
                reason: format!(
                    "`{other}` is not implemented in moment yet (supported: {})",
                    SUPPORTED_CLASSES.join(", ")
                ),
            });
        }
    };
    a.finish()?;
    if !crate::validate::learning_rate(ported.lr) {
        return Err(OptimError::invalid(
            "port",
            "lr",
            ported.lr,
            "a value >= 0 that is finite in f32",
        ));
    }
    Ok(ported)
}

/// Typed access to arguments, remembering which were consumed.
struct Args<'a> {
    args: &'a RefArgs,
    used: BTreeSet<&'a str>,
}

impl<'a> Args<'a> {
    fn new(_class: &str, args: &'a RefArgs) -> Self {
        Self {
            args,
            used: BTreeSet::new(),
        }
    }

    fn take(&mut self, key: &'static str) -> Option<&'a ArgValue> {
        let (k, v) = self.args.get_key_value(key)?;
        self.used.insert(k.as_str());
        Some(v)
    }

    fn float(&mut self, key: &'static str, default: f64) -> Result<f64> {
        match self.take(key) {
            None | Some(ArgValue::Null) => Ok(default),
            Some(v) => as_f64(v).ok_or_else(|| bad(key, v, "a number")),
        }
    }

    fn opt_float(&mut self, key: &'static str) -> Result<Option<f64>> {
        match self.take(key) {
            None | Some(ArgValue::Null) => Ok(None),
            Some(v) => as_f64(v)
                .map(Some)
                .ok_or_else(|| bad(key, v, "None or a number")),
        }
    }

    fn uint(&mut self, key: &'static str, default: u64) -> Result<u64> {
        match self.take(key) {
            None | Some(ArgValue::Null) => Ok(default),
            Some(v) => match as_f64(v) {
                Some(x) if x >= 0.0 && x.fract() == 0.0 && x < 2f64.powi(53) => Ok(x as u64),
                _ => Err(bad(key, v, "a non-negative integer")),
            },
        }
    }

    fn triple(&mut self, key: &'static str, default: (f64, f64, f64)) -> Result<(f64, f64, f64)> {
        match self.take(key) {
            None | Some(ArgValue::Null) => Ok(default),
            Some(v @ ArgValue::List(items)) => match items.as_slice() {
                [x, y, z] => Ok((
                    as_f64(x).ok_or_else(|| bad(key, v, "three numbers"))?,
                    as_f64(y).ok_or_else(|| bad(key, v, "three numbers"))?,
                    as_f64(z).ok_or_else(|| bad(key, v, "three numbers"))?,
                )),
                _ => Err(bad(key, v, "three numbers")),
            },
            Some(v) => Err(bad(key, v, "three numbers")),
        }
    }

    /// pytorch_optimizer's decay arguments: `weight_decay` (0), `weight_decouple` (decoupled
    /// `θ·(1 − lr·λ)` or coupled L2) and `fixed_decay` (unsupported when true).
    fn pytorch_optimizer_decay(&mut self, decouple_default: bool) -> Result<Decay> {
        let wd = self.float("weight_decay", 0.0)?;
        if self.bool("fixed_decay", false)? {
            return Err(OptimError::Unsupported {
                reason: "pytorch_optimizer fixed_decay=True (θ·(1 − λ), lr-independent) is not implemented".into(),
            });
        }
        Ok(if self.bool("weight_decouple", decouple_default)? {
            Decay::Decoupled(wd)
        } else {
            Decay::Coupled(wd)
        })
    }

    fn bool(&mut self, key: &'static str, default: bool) -> Result<bool> {
        match self.take(key) {
            None | Some(ArgValue::Null) => Ok(default),
            Some(ArgValue::Bool(b)) => Ok(*b),
            Some(v) => Err(bad(key, v, "true or false")),
        }
    }

    fn pair(&mut self, key: &'static str, default: (f64, f64)) -> Result<(f64, f64)> {
        match self.take(key) {
            None | Some(ArgValue::Null) => Ok(default),
            Some(v @ ArgValue::List(items)) => match items.as_slice() {
                [a, b] => Ok((
                    as_f64(a).ok_or_else(|| bad(key, v, "two numbers"))?,
                    as_f64(b).ok_or_else(|| bad(key, v, "two numbers"))?,
                )),
                _ => Err(bad(key, v, "two numbers")),
            },
            Some(v) => Err(bad(key, v, "two numbers")),
        }
    }

    fn ignore(&mut self, keys: &[&'static str]) {
        for k in keys {
            self.take(k);
        }
    }

    fn finish(self) -> Result<()> {
        match self.args.keys().find(|k| !self.used.contains(k.as_str())) {
            None => Ok(()),
            Some(k) => Err(OptimError::InvalidConfig {
                optimizer: "port",
                field: "argument",
                value: k.clone(),
                allowed: "an argument of the reference constructor that moment maps",
            }),
        }
    }
}

fn as_f64(v: &ArgValue) -> Option<f64> {
    match v {
        ArgValue::Float(x) => Some(*x),
        ArgValue::Int(i) => Some(*i as f64),
        _ => None,
    }
}

fn bad(key: &'static str, v: &ArgValue, allowed: &'static str) -> OptimError {
    OptimError::invalid("port", key, format!("{v:?}"), allowed)
}
