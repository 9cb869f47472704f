//! Build a moment optimizer from a reference implementation's class name and constructor
//! arguments — porting a PyTorch (or other reference) config. The reference runner uses this
//! for every recorded case; users can use it to carry a Python config over unchanged.
//!
//! Unknown argument names are an error (a silently ignored argument would change the math).
//! Arguments that only choose an implementation strategy in torch (`foreach`, `fused`,
//! `capturable`, `differentiable`) are accepted and have no effect.
//!
//! One table (`PORTS`) maps each reference class — and the aliases accepted for it — to the
//! function that reads its arguments; [`SUPPORTED_CLASSES`], [`family`] and [`families`] are
//! derived from it, so the lists cannot disagree with what [`from_reference`] accepts.

use std::collections::BTreeMap;

use burn::tensor::backend::Backend;

use crate::chain::Chain;
pub use crate::error::PortError;
use crate::error::{OptimError, Result};
use crate::optimizers::{
    AdafactorConfig, Adam8bitConfig, AdamConfig, AdamMiniConfig, AdamWConfig, AdemamixConfig,
    CameConfig, LambConfig, LionConfig, MarsConfig, MuonConfig, ProdigyConfig, ScheduleFreeConfig,
    ShampooConfig, SoapConfig, SophiaConfig,
};
use crate::transforms::BnbKernel;

mod adafactor;
mod adam;
mod args;
mod preconditioned;
mod sign;
#[cfg(test)]
mod tests;

use args::Args;

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

/// Choices a reference config cannot express: which code path of the reference to follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PortOptions {
    /// bitsandbytes classes: reproduce the CUDA kernels (default) or the CPU code path.
    pub bnb_kernel: BnbKernel,
}

/// One row of the port table: a reference class family and the function that maps its
/// constructor arguments.
struct Port {
    /// The class names accepted: the reference's own first, then aliases (re-exports, the
    /// paged bitsandbytes variants, the same class in another package) ported the same way.
    classes: &'static [&'static str],
    /// The family label of the reference cases (`optimizer` in
    /// `testdata/reference/FORMAT.md`; `cargo xtask golden --optimizer`).
    family: &'static str,
    /// Reads the arguments (consuming those it maps) into a config and a learning rate.
    port: PortFn,
}

/// A port function: arguments (and [`PortOptions`]) to a config and a learning rate.
type PortFn = fn(&mut Args<'_>, &PortOptions) -> Result<PortedConfig>;

/// The port table: every reference class [`from_reference`] understands.
const PORTS: &[Port] = &[
    Port {
        classes: &["torch.optim.Adam"],
        family: "adam",
        port: adam::torch_adam,
    },
    Port {
        classes: &["torch.optim.AdamW"],
        family: "adamw",
        port: adam::torch_adamw,
    },
    Port {
        classes: &["torch.optim.Adafactor"],
        family: "adafactor",
        port: adafactor::torch_adafactor,
    },
    Port {
        classes: &[
            "transformers.optimization.Adafactor",
            "transformers.Adafactor",
        ],
        family: "adafactor",
        port: adafactor::transformers_adafactor,
    },
    Port {
        classes: &[
            "bitsandbytes.optim.Adam8bit",
            "bitsandbytes.optim.PagedAdam8bit",
        ],
        family: "adam8bit",
        port: adam::bnb_adam8bit,
    },
    Port {
        classes: &[
            "bitsandbytes.optim.AdamW8bit",
            "bitsandbytes.optim.PagedAdamW8bit",
        ],
        family: "adamw8bit",
        port: adam::bnb_adamw8bit,
    },
    Port {
        classes: &["sophia_opt.SophiaG", "sophia.SophiaG"],
        family: "sophia",
        port: preconditioned::sophia_g,
    },
    Port {
        classes: &["pytorch_optimizer.SophiaH"],
        family: "sophia",
        port: preconditioned::sophia_h,
    },
    Port {
        classes: &["pytorch_optimizer.Lamb"],
        family: "lamb",
        port: adam::lamb,
    },
    Port {
        classes: &["pytorch_optimizer.Shampoo"],
        family: "shampoo",
        port: preconditioned::shampoo,
    },
    Port {
        classes: &["pytorch_optimizer.ScalableShampoo"],
        family: "shampoo",
        port: preconditioned::scalable_shampoo,
    },
    Port {
        classes: &["lion_pytorch.Lion", "pytorch_optimizer.Lion"],
        family: "lion",
        port: sign::lion,
    },
    Port {
        classes: &["torch.optim.Muon"],
        family: "muon",
        port: sign::muon,
    },
    Port {
        classes: &["pytorch_optimizer.AdEMAMix"],
        family: "ademamix",
        port: adam::ademamix,
    },
    Port {
        classes: &["schedulefree.AdamWScheduleFree"],
        family: "schedulefree-adamw",
        port: adam::schedule_free_adamw,
    },
    Port {
        classes: &["pytorch_optimizer.CAME"],
        family: "came",
        port: adafactor::came,
    },
    Port {
        classes: &["pytorch_optimizer.MARS"],
        family: "mars",
        port: adam::mars,
    },
    Port {
        classes: &["pytorch_optimizer.AdamMini"],
        family: "adam-mini",
        port: adam::adam_mini,
    },
    Port {
        classes: &["pytorch_optimizer.Prodigy"],
        family: "prodigy",
        port: adam::prodigy,
    },
    Port {
        classes: &["pytorch_optimizer.SOAP"],
        family: "soap",
        port: preconditioned::soap,
    },
];

/// How many class names (aliases included) the table holds.
const N_CLASSES: usize = {
    let (mut n, mut i) = (0, 0);
    while i < PORTS.len() {
        n += PORTS[i].classes.len();
        i += 1;
    }
    n
};

/// Every class name of the table, in table order.
const CLASSES: [&str; N_CLASSES] = {
    let mut out = [""; N_CLASSES];
    let (mut i, mut k) = (0, 0);
    while i < PORTS.len() {
        let mut j = 0;
        while j < PORTS[i].classes.len() {
            out[k] = PORTS[i].classes[j];
            k += 1;
            j += 1;
        }
        i += 1;
    }
    out
};

/// The reference classes [`from_reference`] understands, aliases included (derived from the
/// port table).
pub const SUPPORTED_CLASSES: &[&str] = &CLASSES;

/// The family label of the reference cases (`testdata/reference/FORMAT.md`) that a supported
/// class belongs to, e.g. `"adamw"` for `torch.optim.AdamW`; `None` for unsupported classes.
pub fn family(class: &str) -> Option<&'static str> {
    lookup(class).map(|p| p.family)
}

/// The reference-case families moment implements: those of [`SUPPORTED_CLASSES`], each once,
/// in table order.
pub fn families() -> impl Iterator<Item = &'static str> {
    PORTS
        .iter()
        .enumerate()
        .filter(|&(i, p)| PORTS[..i].iter().all(|q| q.family != p.family))
        .map(|(_, p)| p.family)
}

/// The table row that accepts `class`.
fn lookup(class: &str) -> Option<&'static Port> {
    PORTS.iter().find(|p| p.classes.contains(&class))
}

/// The error for a class outside the table: it lists every supported name.
fn unsupported(class: &str) -> OptimError {
    PortError::UnknownClass {
        class: class.to_string(),
        supported: SUPPORTED_CLASSES,
    }
    .into()
}

/// What a port function reads from the arguments: a config (not yet built for a backend)
/// and the learning rate.
struct PortedConfig {
    config: Config,
    lr: f64,
}

/// The config a port function produced, built into a chain once the backend is known.
enum Config {
    Adam(AdamConfig),
    AdamW(AdamWConfig),
    Adafactor(AdafactorConfig),
    Adam8bit(Adam8bitConfig),
    Sophia(SophiaConfig),
    Lamb(LambConfig),
    Shampoo(ShampooConfig),
    Lion(LionConfig),
    Muon(MuonConfig),
    Ademamix(AdemamixConfig),
    ScheduleFree(ScheduleFreeConfig),
    Came(CameConfig),
    Mars(MarsConfig),
    AdamMini(AdamMiniConfig),
    Soap(SoapConfig),
    Prodigy(ProdigyConfig),
}

impl Config {
    fn build<B: Backend>(&self) -> Result<Chain<B>> {
        match self {
            Config::Adam(c) => c.build(),
            Config::AdamW(c) => c.build(),
            Config::Adafactor(c) => c.build(),
            Config::Adam8bit(c) => c.build(),
            Config::Sophia(c) => c.build(),
            Config::Lamb(c) => c.build(),
            Config::Shampoo(c) => c.build(),
            Config::Lion(c) => c.build(),
            Config::Muon(c) => c.build(),
            Config::Ademamix(c) => c.build(),
            Config::ScheduleFree(c) => c.build(),
            Config::Came(c) => c.build(),
            Config::Mars(c) => c.build(),
            Config::AdamMini(c) => c.build(),
            Config::Soap(c) => c.build(),
            Config::Prodigy(c) => c.build(),
        }
    }
}

/// Build the moment equivalent of `class(**args)`.
///
/// Returns [`OptimError::Port`] for classes moment does not implement (yet) and for arguments
/// whose value it does not implement ([`PortError`]), and [`OptimError::InvalidConfig`] for
/// values of the wrong type or range and for argument names the port does not know.
pub fn from_reference<B: Backend>(class: &str, args: &RefArgs) -> Result<Ported<B>> {
    from_reference_with(class, args, &PortOptions::default())
}

/// [`from_reference`] with explicit [`PortOptions`].
pub fn from_reference_with<B: Backend>(
    class: &str,
    args: &RefArgs,
    options: &PortOptions,
) -> Result<Ported<B>> {
    let port = lookup(class).ok_or_else(|| unsupported(class))?;
    let mut a = Args::new(args);
    let PortedConfig { config, lr } = (port.port)(&mut a, options)?;
    let chain = config.build()?;
    a.finish()?;
    if !crate::validate::learning_rate(lr) {
        return Err(OptimError::invalid(
            "port",
            "lr",
            lr,
            "a value >= 0 that is finite in f32",
        ));
    }
    Ok(Ported { chain, lr })
}
