//! Sign and orthogonalised-momentum classes: `Lion` and torch's `Muon`.

use super::args::{Args, bad};
use super::{ArgValue, Config, PortOptions, PortedConfig};
use crate::error::Result;
use crate::optimizers::{LionConfig, MuonConfig};
use crate::transforms::{MuonScale, NsPrecision};

/// `lion_pytorch.Lion` (lucidrains; its argument names are also accepted for
/// `pytorch_optimizer.Lion`).
pub(super) fn lion(a: &mut Args<'_>, _: &PortOptions) -> Result<PortedConfig> {
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
    Ok(PortedConfig {
        config: Config::Lion(config),
        lr,
    })
}

/// `torch.optim.Muon`.
pub(super) fn muon(a: &mut Args<'_>, _: &PortOptions) -> Result<PortedConfig> {
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
    Ok(PortedConfig {
        config: Config::Muon(config),
        lr,
    })
}
