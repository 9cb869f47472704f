//! Named optimizers: each is a [`Chain`](crate::Chain) of [transforms](crate::transforms) built
//! from a validated config.

mod adam;

pub use adam::{AdamConfig, AdamWConfig, Decay, adam_chain};
