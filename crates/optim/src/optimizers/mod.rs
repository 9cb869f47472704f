//! Named optimizers: each is a [`Chain`](crate::Chain) of [transforms](crate::transforms) built
//! from a validated config.

mod adafactor;
mod adam;
mod adam8bit;
mod adam_mini;
mod ademamix;
mod came;
mod init;
mod lamb;
mod lion;
mod mars;
mod muon;
mod prodigy;
mod schedule_free;
mod shampoo;
mod soap;
mod sophia;

pub use adafactor::AdafactorConfig;
pub(crate) use adam::decay_chain;
pub use adam::{AdamConfig, AdamWConfig, Decay, adam_chain};
pub use adam_mini::AdamMiniConfig;
pub use adam8bit::Adam8bitConfig;
pub use ademamix::AdemamixConfig;
pub use came::CameConfig;
pub use lamb::{LambBiasCorrection, LambConfig, LambDecay, TrustRatio};
pub use lion::LionConfig;
pub use mars::MarsConfig;
pub use muon::MuonConfig;
pub use prodigy::ProdigyConfig;
pub use schedule_free::ScheduleFreeConfig;
pub use shampoo::ShampooConfig;
pub use soap::SoapConfig;
pub use sophia::SophiaConfig;
