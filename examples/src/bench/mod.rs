//! The pieces of `cargo xtask bench` that are arithmetic or format, kept apart from the
//! binary so they are unit-tested: access patterns and their byte floors ([`pattern`]), the
//! statistics and GB/s arithmetic ([`stats`]), the CPU streaming-bandwidth yardstick
//! ([`stream`]) and the JSON report with its schema check ([`report`]).

pub mod pattern;
pub mod report;
pub mod stats;
pub mod stream;
