//! Curvature-preconditioned classes: Sophia (the official SophiaG and pytorch_optimizer's
//! SophiaH), pytorch_optimizer's `Shampoo`, `ScalableShampoo` and `SOAP`.

use super::args::{Args, not_implemented};
use super::{ArgValue, Config, PortOptions, PortedConfig};
use crate::error::{OptimError, Result};
use crate::optimizers::{Decay, ShampooConfig, SoapConfig, SophiaConfig};
use crate::transforms::{Graft, ShampooMomentum, Statistics};

/// `sophia_opt.SophiaG` (the official SophiaG; also imported as `sophia.SophiaG`).
pub(super) fn sophia_g(a: &mut Args<'_>, _: &PortOptions) -> Result<PortedConfig> {
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
    Ok(PortedConfig {
        config: Config::Sophia(config),
        lr,
    })
}

/// `pytorch_optimizer.SophiaH`.
pub(super) fn sophia_h(a: &mut Args<'_>, _: &PortOptions) -> Result<PortedConfig> {
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
    Ok(PortedConfig {
        config: Config::Sophia(config),
        lr,
    })
}

/// `pytorch_optimizer.Shampoo` (Gupta et al.'s original).
pub(super) fn shampoo(a: &mut Args<'_>, _: &PortOptions) -> Result<PortedConfig> {
    let mut c = ShampooConfig::gupta();
    let lr = a.float("lr", 1e-3)?;
    c.shampoo.momentum = ShampooMomentum::LerpPrevious(a.float("momentum", 0.0)?);
    c = c.with_decay(a.pytorch_optimizer_decay(false)?);
    c.shampoo.precondition_frequency = a.uint("preconditioning_compute_steps", 1)?;
    c.shampoo.matrix_eps = a.float("matrix_eps", 1e-6)?;
    c.maximize = a.bool("maximize", false)?;
    Ok(PortedConfig {
        config: Config::Shampoo(c),
        lr,
    })
}

/// `pytorch_optimizer.ScalableShampoo` (Anil et al.'s distributed Shampoo).
pub(super) fn scalable_shampoo(a: &mut Args<'_>, _: &PortOptions) -> Result<PortedConfig> {
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
        return Err(not_implemented(
            "decoupled_learning_rate",
            "ScalableShampoo(decoupled_learning_rate=False) is not implemented",
        ));
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
        return Err(not_implemented(
            "skip_preconditioning_rank_lt",
            "ScalableShampoo skip_preconditioning_rank_lt > 1 is not implemented",
        ));
    }
    c.shampoo.max_preconditioned_dim =
        Some(a.uint("no_preconditioning_for_layers_with_dim_gt", 8192)? as usize);
    c.shampoo.merge_small_dims = a.bool("shape_interpretation", true)?;
    c.shampoo.graft = graft(a.uint("graft_type", 1)?, b2)?;
    if a.uint("pre_conditioner_type", 0)? != 0 {
        return Err(not_implemented(
            "pre_conditioner_type",
            "ScalableShampoo pre_conditioner_type INPUT/OUTPUT is not implemented (ALL is)",
        ));
    }
    c.shampoo.graft_eps = a.float("diagonal_eps", 1e-10)?;
    c.shampoo.matrix_eps = a.float("matrix_eps", 1e-6)?;
    // SVD and Schur–Newton roots: moment computes the same root with its own
    // deterministic coupled Newton iteration in f64.
    a.ignore(&["use_svd"]);
    c.maximize = a.bool("maximize", false)?;
    Ok(PortedConfig {
        config: Config::Shampoo(c),
        lr,
    })
}

/// ScalableShampoo's `graft_type` (its `LayerWiseGrafting` enum); `beta2` is RMSProp's.
fn graft(graft_type: u64, beta2: f64) -> Result<Graft> {
    Ok(match graft_type {
        0 => Graft::None,
        1 => Graft::Sgd,
        2 => Graft::AdaGrad,
        3 => Graft::RmsProp(beta2),
        4 => Graft::SqrtN,
        other => {
            return Err(OptimError::invalid(
                "port",
                "graft_type",
                other,
                "0 (none), 1 (SGD), 2 (AdaGrad), 3 (RMSProp), 4 (SQRT_N)",
            ));
        }
    })
}

/// `pytorch_optimizer.SOAP`.
pub(super) fn soap(a: &mut Args<'_>, _: &PortOptions) -> Result<PortedConfig> {
    let d = SoapConfig::default();
    let lr = a.float("lr", 3e-3)?;
    match a.take("data_format") {
        None | Some(ArgValue::Null) => {}
        Some(ArgValue::Str(s)) if s == "channels_first" => {}
        Some(v) => {
            return Err(not_implemented(
                "data_format",
                format!("SOAP data_format {v:?} is not implemented (channels_first is)"),
            ));
        }
    }
    let config = SoapConfig {
        betas: a.pair("betas", d.betas)?,
        shampoo_beta: a.opt_float("shampoo_beta")?,
        eps: a.float("eps", d.eps)?,
        weight_decay: a.float("weight_decay", d.weight_decay)?,
        precondition_frequency: a.uint("precondition_frequency", d.precondition_frequency)?,
        max_precondition_dim: usize::try_from(
            a.uint("max_precondition_dim", d.max_precondition_dim as u64)?,
        )
        .map_err(|_| OptimError::invalid("port", "max_precondition_dim", "too large", "a usize"))?,
        merge_dims: a.bool("merge_dims", d.merge_dims)?,
        precondition_1d: a.bool("precondition_1d", d.precondition_1d)?,
        correct_bias: a.bool("correct_bias", d.correct_bias)?,
        normalize_gradient: a.bool("normalize_gradient", d.normalize_gradient)?,
        maximize: a.bool("maximize", false)?,
    };
    Ok(PortedConfig {
        config: Config::Soap(config),
        lr,
    })
}
