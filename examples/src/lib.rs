//! Wiring for moment: the README's main command (`train` binary), the reference-case runner
//! (`golden` binary, `cargo xtask golden`) and the generated memory table (`memory-table`).

pub mod bench;
pub mod compare;
pub mod golden;
pub mod memory;
pub mod model_bench;
