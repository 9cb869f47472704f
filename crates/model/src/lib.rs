//! # moment-model
//!
//! Models and data to exercise optimizers on, knowing nothing about optimizers.
//!
//! * [`MarkovCorpus`]: a seeded first-order Markov chain over `V` tokens whose entropy rate —
//!   the best achievable next-token loss in nats — is computed exactly (stationary
//!   distribution × row entropies), so a training curve can be read against its floor.
//! * [`BigramLm`]: a small next-token model (embedding → hidden SiLU layer → LM head) that
//!   can reach that floor; its parameter paths (`embed.weight`, `hidden.weight`,
//!   `hidden.bias`, `head.weight`, `head.bias`) are stable.
//!
//! The test transformer (`TestModel`, `TestModelForCausalLM`) is not implemented yet.

mod corpus;
mod lm;

pub use corpus::{MarkovCorpus, ModelError, SplitMix64};
pub use lm::{BigramLm, BigramLmConfig, sample_batch};
