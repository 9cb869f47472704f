//! Factored second-moment classes: the two Adafactors (transformers' and torch's, two
//! different conventions) and pytorch_optimizer's `CAME`.

use super::args::{Args, as_f64, bad, not_implemented};
use super::{ArgValue, Config, PortOptions, PortedConfig};
use crate::error::{OptimError, Result};
use crate::optimizers::{AdafactorConfig, CameConfig};

/// `transformers.optimization.Adafactor` (also imported as `transformers.Adafactor`).
pub(super) fn transformers_adafactor(a: &mut Args<'_>, _: &PortOptions) -> Result<PortedConfig> {
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
    Ok(PortedConfig {
        config: Config::Adafactor(config),
        lr,
    })
}

/// `torch.optim.Adafactor`.
pub(super) fn torch_adafactor(a: &mut Args<'_>, _: &PortOptions) -> Result<PortedConfig> {
    let d = AdafactorConfig::torch();
    let lr = a.float("lr", 1e-2)?;
    let (eps1, eps2) = match a.take("eps") {
        None | Some(ArgValue::Null) => (d.eps1, d.eps2),
        Some(v @ ArgValue::List(items)) => match items.as_slice() {
            [e1, e2] => (
                match e1 {
                    ArgValue::Null => d.eps1,
                    e => as_f64(e).ok_or_else(|| bad("eps", v, "(None or a number, a number)"))?,
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
    Ok(PortedConfig {
        config: Config::Adafactor(config),
        lr,
    })
}

/// `pytorch_optimizer.CAME`.
pub(super) fn came(a: &mut Args<'_>, _: &PortOptions) -> Result<PortedConfig> {
    let d = CameConfig::default();
    let lr = a.float("lr", 2e-4)?;
    let betas = a.triple("betas", d.betas)?;
    let decay = a.pytorch_optimizer_decay(true)?;
    if a.bool("ams_bound", false)? {
        return Err(not_implemented(
            "ams_bound",
            "CAME(ams_bound=True) is not implemented",
        ));
    }
    let config = CameConfig {
        betas,
        eps: (a.float("eps1", d.eps.0)?, a.float("eps2", d.eps.1)?),
        clip_threshold: a.float("clip_threshold", d.clip_threshold)?,
        decay,
        maximize: a.bool("maximize", false)?,
    };
    Ok(PortedConfig {
        config: Config::Came(config),
        lr,
    })
}
