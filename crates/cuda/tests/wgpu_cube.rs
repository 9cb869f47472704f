//! The fused-kernel suite of `common/suite.rs` on the plain `CubeBackend` over wgpu (no burn
//! operation fusion between moment's steps): the other backend type [`moment_cuda::enable`]
//! accepts.
#![cfg(feature = "wgpu")]
// Tests may unwrap and panic (the workspace lints deny it in library code).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable
)]

type G = burn_cubecl::CubeBackend<burn_wgpu::WgpuRuntime, f32, i32, u32>;

include!("common/suite.rs");
