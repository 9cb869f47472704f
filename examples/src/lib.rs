//! Wiring for moment: the README's main command (`train` binary) and the reference-case
//! runner (`golden` binary, `cargo xtask golden`).

pub mod golden;
