//! # moment-cuda
//!
//! The burn CUDA backend adapter for moment. **Fused CubeCL kernels are not implemented yet**:
//! today every backend, CUDA included, runs moment-optim's composed path (the same numbers,
//! one burn op per transform step).
//!
//! What this crate provides now:
//! * with the `cuda` feature, [`Cuda`]: burn's CUDA backend type pinned to the workspace's burn
//!   version (building needs no CUDA toolkit; running needs a CUDA driver);
//! * [`step_path`]: which implementation moment-optim uses for a backend, so callers and the
//!   benchmark can report it honestly.

/// How an optimizer step is executed on a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepPath {
    /// One burn tensor op per transform step (moment-optim's generic path).
    Composed,
}

/// The step implementation moment uses for the backend `B`. Always [`StepPath::Composed`] until
/// fused kernels land.
pub fn step_path<B: burn::tensor::backend::Backend>() -> StepPath {
    StepPath::Composed
}

/// burn's CUDA backend (f32 floats, i32 ints).
#[cfg(feature = "cuda")]
pub type Cuda = burn_cuda::Cuda<f32, i32>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_backend_uses_the_composed_path() {
        assert_eq!(step_path::<burn::backend::NdArray>(), StepPath::Composed);
    }
}
