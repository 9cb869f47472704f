//! Adam-like classes: torch `Adam`/`AdamW`, bitsandbytes' 8-bit Adam, pytorch_optimizer's
//! `Lamb`, `AdEMAMix`, `MARS`, `AdamMini`, `Prodigy`, and schedule-free AdamW.

use super::args::{Args, as_f64, bad, not_implemented};
use super::{ArgValue, Config, PortOptions, PortedConfig};
use crate::error::{OptimError, Result};
use crate::optimizers::{
    Adam8bitConfig, AdamConfig, AdamMiniConfig, AdamWConfig, AdemamixConfig, Decay, LambConfig,
    LambDecay, MarsConfig, ProdigyConfig, ScheduleFreeConfig, TrustRatio,
};
use crate::transforms::ProdigyDecay;

/// `torch.optim.Adam`.
pub(super) fn torch_adam(a: &mut Args<'_>, _: &PortOptions) -> Result<PortedConfig> {
    torch_adam_family(a, false)
}

/// `torch.optim.AdamW`.
pub(super) fn torch_adamw(a: &mut Args<'_>, _: &PortOptions) -> Result<PortedConfig> {
    torch_adam_family(a, true)
}

/// torch's Adam and AdamW: the same arguments, different defaults.
fn torch_adam_family(a: &mut Args<'_>, adamw: bool) -> Result<PortedConfig> {
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
    let config = if decoupled {
        Config::AdamW(AdamWConfig {
            betas,
            eps,
            weight_decay,
            amsgrad,
            maximize,
        })
    } else {
        Config::Adam(AdamConfig {
            betas,
            eps,
            weight_decay,
            amsgrad,
            maximize,
        })
    };
    Ok(PortedConfig { config, lr })
}

/// `bitsandbytes.optim.Adam8bit` (and `PagedAdam8bit`).
pub(super) fn bnb_adam8bit(a: &mut Args<'_>, options: &PortOptions) -> Result<PortedConfig> {
    bnb_8bit(a, options, Adam8bitConfig::default())
}

/// `bitsandbytes.optim.AdamW8bit` (and `PagedAdamW8bit`).
pub(super) fn bnb_adamw8bit(a: &mut Args<'_>, options: &PortOptions) -> Result<PortedConfig> {
    bnb_8bit(a, options, Adam8bitConfig::adamw())
}

/// bitsandbytes' 8-bit Adam classes, from the class's defaults `d`.
fn bnb_8bit(a: &mut Args<'_>, options: &PortOptions, d: Adam8bitConfig) -> Result<PortedConfig> {
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
        return Err(not_implemented(
            "percentile_clipping",
            "bitsandbytes percentile_clipping < 100 (removed in bnb 0.50) is not implemented; use the engine's global-norm clipping",
        ));
    }
    if !a.bool("block_wise", true)? {
        return Err(not_implemented(
            "block_wise",
            "bitsandbytes block_wise=False (non-blockwise 8-bit state, removed in bnb 0.50) is not implemented",
        ));
    }
    if !matches!(a.take("args"), None | Some(ArgValue::Null)) {
        return Err(not_implemented(
            "args",
            "bitsandbytes `args` overrides are not mapped; pass the arguments directly",
        ));
    }
    if a.float("max_unorm", 0.0)? != 0.0 {
        return Err(not_implemented(
            "max_unorm",
            "bitsandbytes max_unorm (update-norm clipping) is not implemented",
        ));
    }
    // optim_bits is ignored by the 8-bit classes; is_paged only chooses memory placement.
    a.ignore(&["optim_bits", "is_paged"]);
    Ok(PortedConfig {
        config: Config::Adam8bit(config),
        lr,
    })
}

/// `pytorch_optimizer.Lamb`.
pub(super) fn lamb(a: &mut Args<'_>, _: &PortOptions) -> Result<PortedConfig> {
    let d = LambConfig::pytorch_optimizer();
    let lr = a.float("lr", 1e-3)?;
    if a.bool("rectify", false)? {
        return Err(not_implemented(
            "rectify",
            "pytorch_optimizer Lamb(rectify=True) (RAdam rectification) is not implemented",
        ));
    }
    if a.bool("pre_norm", false)? {
        return Err(not_implemented(
            "pre_norm",
            "pytorch_optimizer Lamb(pre_norm=True): use the engine's clip_grad_norm",
        ));
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
    Ok(PortedConfig {
        config: Config::Lamb(config),
        lr,
    })
}

/// `pytorch_optimizer.AdEMAMix`.
pub(super) fn ademamix(a: &mut Args<'_>, _: &PortOptions) -> Result<PortedConfig> {
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
    Ok(PortedConfig {
        config: Config::Ademamix(config),
        lr,
    })
}

/// `schedulefree.AdamWScheduleFree`.
pub(super) fn schedule_free_adamw(a: &mut Args<'_>, _: &PortOptions) -> Result<PortedConfig> {
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
    Ok(PortedConfig {
        config: Config::ScheduleFree(config),
        lr,
    })
}

/// `pytorch_optimizer.MARS` (the AdamW flavour).
pub(super) fn mars(a: &mut Args<'_>, _: &PortOptions) -> Result<PortedConfig> {
    let d = MarsConfig::default();
    let lr = a.float("lr", 3e-3)?;
    match a.take("mars_type") {
        None | Some(ArgValue::Null) => {}
        Some(ArgValue::Str(s)) if s == "adamw" => {}
        Some(v) => {
            return Err(not_implemented(
                "mars_type",
                format!("MARS mars_type {v:?} is not implemented (adamw is)"),
            ));
        }
    }
    if a.bool("optimize_1d", false)? {
        return Err(not_implemented(
            "optimize_1d",
            "MARS(optimize_1d=True) is not implemented",
        ));
    }
    for flag in ["ams_bound", "cautious", "fixed_decay"] {
        if a.bool(flag, false)? {
            return Err(not_implemented(
                flag,
                format!("MARS({flag}=True) is not implemented"),
            ));
        }
    }
    if !a.bool("weight_decouple", true)? {
        return Err(not_implemented(
            "weight_decouple",
            "MARS(weight_decouple=False) is not implemented",
        ));
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
        return Err(not_implemented(
            "maximize",
            "MARS(maximize=True) is not implemented",
        ));
    }
    Ok(PortedConfig {
        config: Config::Mars(config),
        lr,
    })
}

/// `pytorch_optimizer.AdamMini`.
pub(super) fn adam_mini(a: &mut Args<'_>, _: &PortOptions) -> Result<PortedConfig> {
    let d = AdamMiniConfig::default();
    let lr = a.float("lr", 1.0)?;
    if a.bool("model_sharding", false)? {
        return Err(not_implemented(
            "model_sharding",
            "AdamMini(model_sharding=True) is not implemented (sharding is issue 12)",
        ));
    }
    if a.bool("maximize", false)? {
        return Err(not_implemented(
            "maximize",
            "AdamMini(maximize=True) is not implemented",
        ));
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
    Ok(PortedConfig {
        config: Config::AdamMini(config),
        lr,
    })
}

/// `pytorch_optimizer.Prodigy`.
pub(super) fn prodigy(a: &mut Args<'_>, _: &PortOptions) -> Result<PortedConfig> {
    let d = ProdigyConfig::default();
    let lr = a.float("lr", 1.0)?;
    let wd = a.float("weight_decay", 0.0)?;
    let decouple = a.bool("weight_decouple", true)?;
    let fixed = a.bool("fixed_decay", false)?;
    if !decouple && wd > 0.0 {
        return Err(not_implemented(
            "weight_decouple",
            "Prodigy(weight_decouple=False): the reference adds λ·θ to the gradient after the moments \
                     and d estimate have consumed it, so the decay has no effect; moment refuses rather than \
                     silently do nothing (use weight_decouple=True)",
        ));
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
    Ok(PortedConfig {
        config: Config::Prodigy(config),
        lr,
    })
}
