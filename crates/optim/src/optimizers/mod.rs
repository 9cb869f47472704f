//! Named optimizers: each is a [`Chain`](crate::Chain) of [transforms](crate::transforms) built
//! from a validated config.

mod adafactor;
mod adam;

pub use adafactor::AdafactorConfig;
pub use adam::{AdamConfig, AdamWConfig, Decay, adam_chain};
