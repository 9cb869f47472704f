//! The CubeCL kernels on burn's wgpu backend (feature `wgpu`; in CI a software Vulkan device,
//! mesa's llvmpipe): the fused-kernel suite of `common/suite.rs`.
#![cfg(feature = "wgpu")]

type G = moment_cuda::Wgpu;

include!("common/suite.rs");
