//! The CubeCL kernels on burn's CUDA backend (feature `cuda`; needs an NVIDIA GPU and driver,
//! run by `cargo xtask gpu-check`'s script): the fused-kernel suite of `common/suite.rs`.
#![cfg(feature = "cuda")]
// Tests may unwrap and panic (the workspace lints deny it in library code).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable
)]

type G = moment_cuda::Cuda;

include!("common/suite.rs");
