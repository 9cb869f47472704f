//! # moment-cuda
//!
//! Fused CubeCL kernels for moment's element-wise optimizers on burn's GPU backends: one
//! kernel launch per parameter reads the parameter, the gradient and the state once and writes
//! them once, in place when the buffers are not shared (burn's own optimizers issue a dozen
//! tensor operations per parameter).
//!
//! * Kernels (feature `cube`, pulled in by `cuda` and `wgpu`): Adam/AdamW (AMSGrad, maximize,
//!   coupled or decoupled decay), Lion, Sophia-G/H (win rate counted in the pass), 8-bit
//!   blockwise Adam/AdamW (bitsandbytes' CUDA-kernel semantics: one cube per block, new
//!   max-abs reduced in shared memory, exact nearest-code re-encode). They repeat the f32
//!   operations of moment-optim's composed chains in the same order, so they agree with the
//!   composed path to rounding (GPU `sqrt` and division need not be correctly rounded; tested
//!   within the reference tolerance).
//! * [`stream_gbps`]: the device's streaming bandwidth for an access pattern (the bench's
//!   yardstick).
//! * [`enable`] registers them with moment-optim for a backend (the plain `CubeBackend` or
//!   burn's fused default type); from then on every moment optimizer on that backend takes the
//!   fused path for those chains, with the same state records as the composed path (save on
//!   GPU, load on CPU). [`enable_all`] does it for every backend compiled in.
//! * Feature `cuda`: [`Cuda`] (burn's CUDA backend; building needs no CUDA toolkit, running
//!   needs the driver). Feature `wgpu`: [`Wgpu`] — the same kernels on Vulkan/Metal, or on a
//!   software Vulkan device (mesa's llvmpipe), which is how CI tests them without a GPU.

#[cfg(feature = "cube")]
mod kernels;
#[cfg(feature = "cube")]
mod steps;
#[cfg(feature = "cube")]
mod stream;

#[cfg(feature = "cube")]
pub use steps::{CubeAccess, CubeSteps};
#[cfg(feature = "cube")]
pub use stream::stream_gbps;

/// How an optimizer step is executed on a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepPath {
    /// One burn tensor op per transform step (moment-optim's generic path).
    Composed,
    /// moment-cuda's one-pass kernels (for the chains that have one; others stay composed).
    Fused,
}

/// The step implementation moment uses for the backend `B` now: [`StepPath::Fused`] once
/// [`enable`] registered kernels for `B`.
pub fn step_path<B: burn::tensor::backend::Backend>() -> StepPath {
    if moment_optim::fused::has_device_steps::<B>() {
        StepPath::Fused
    } else {
        StepPath::Composed
    }
}

/// Make moment's optimizers use the fused kernels on backend `B` (for an autodiff backend,
/// pass its inner backend — the optimizer steps there). Idempotent.
#[cfg(feature = "cube")]
pub fn enable<B: CubeAccess>() {
    moment_optim::fused::register_device_steps::<B>(std::sync::Arc::new(CubeSteps::<B>::default()));
}

/// [`enable`] for every CubeCL backend compiled in: [`Cuda`] and its unfused `CubeBackend`
/// (feature `cuda`), [`Wgpu`] and its unfused `CubeBackend` (feature `wgpu`).
pub fn enable_all() {
    #[cfg(feature = "cuda")]
    {
        enable::<Cuda>();
        enable::<burn_cubecl::CubeBackend<<Cuda as CubeAccess>::Runtime, f32, i32, u8>>();
    }
    #[cfg(feature = "wgpu")]
    {
        enable::<Wgpu>();
        enable::<burn_cubecl::CubeBackend<burn_wgpu::WgpuRuntime, f32, i32, u32>>();
    }
}

/// burn's CUDA backend (f32 floats, i32 ints), with operation fusion.
#[cfg(feature = "cuda")]
pub type Cuda = burn_cuda::Cuda<f32, i32>;

/// burn's wgpu backend (f32 floats, i32 ints), with operation fusion.
#[cfg(feature = "wgpu")]
pub type Wgpu = burn_wgpu::Wgpu<f32, i32>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_backend_uses_the_composed_path() {
        assert_eq!(step_path::<burn::backend::NdArray>(), StepPath::Composed);
    }
}
