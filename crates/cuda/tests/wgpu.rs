//! The CubeCL kernels on burn's wgpu backend (feature `wgpu`; in CI a software Vulkan device,
//! mesa's llvmpipe): the fused-kernel suite of `common/suite.rs`.
#![cfg(feature = "wgpu")]
// Tests may unwrap and panic (the workspace lints deny it in library code).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable
)]

type G = moment_cuda::Wgpu;

include!("common/suite.rs");
