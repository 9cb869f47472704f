//! Fused one-pass steps: a chain may have a [`FusedStep`], an implementation of the *whole*
//! chain that reads the parameter, gradient and state once and writes them once, in place when
//! the buffers are uniquely owned. [`plan`] derives it from the chain's transforms (their types,
//! order and hyper-parameters); nothing attaches one by hand. The engine uses it when it applies (backend and tensor
//! supported; an observed parameter is copied instead of updated in place) and falls back to the composed chain otherwise.
//! A fused step must give the same numbers as the composed chain (the CPU kernels here repeat
//! its f32 operations in the same order, so they are bitwise equal — tested; Adafactor's within
//! tolerance, see below) and leave the
//! state in the same layout, so records and resumes do not depend on the path taken.
//!
//! Implemented on burn's ndarray backend with f32 tensors (feature `ndarray`, default) and on
//! burn's flex backend (feature `flex`: its storage is taken copy-on-write, same kernels),
//! multi-threaded over contiguous chunks, AVX2 when the CPU has it: the Adam family
//! ([`FusedAdam`]: Adam/AdamW, amsgrad, maximize, coupled or decoupled decay), Lion
//! ([`FusedLion`]) and Sophia ([`FusedSophia`], both variants; its win rate is counted in the
//! same pass) share one driver: an element-wise kernel over the parameter, the gradient and k
//! state streams. 8-bit Adam/AdamW with CUDA-kernel semantics ([`FusedAdam8bit`]) works block
//! by block (decode, update, new max-abs, re-encode). Adafactor ([`FusedAdafactor`], CPU only)
//! runs three passes over fixed blocks of rows and agrees with the composed chain within the
//! family's tolerance rather than bitwise (its sums run in f64). Everything else runs composed.

use std::fmt::Debug;

use burn::tensor::{Tensor, backend::Backend};

use crate::transform::TransformState;

/// A chain's one-pass implementation for some backends (see [`crate::fused`]).
pub trait FusedStep<B: Backend>: Send + Sync + Debug {
    /// Name, for reports.
    fn name(&self) -> &'static str;

    /// Step `param` (of logical `shape`) with `grad` at `lr`, advancing `states` (the chain's states, in chain
    /// order) exactly as the composed chain would, and return the new parameter; or hand the
    /// inputs back unchanged (`Err`) when this backend or tensor is not supported.
    #[allow(clippy::result_large_err)]
    fn step(
        &self,
        lr: f64,
        shape: &[usize],
        param: Tensor<B, 1>,
        grad: Tensor<B, 1>,
        states: &mut [TransformState<B>],
    ) -> FusedResult<B>;

    /// [`FusedStep::step`] that also returns the gradient's `Σ g²` exactly as [`crate::fused::sum_squares`]
    /// computes it (same blocks, same order: the same bits), measured in the same pass over
    /// memory as the update where the kernel can (the engine's [`GradientScan::InPass`]).
    /// `None` in the result: not measured (the caller measures). The default measures nothing.
    ///
    /// [`GradientScan::InPass`]: crate::GradientScan::InPass
    #[allow(clippy::result_large_err)]
    fn step_measured(
        &self,
        lr: f64,
        shape: &[usize],
        param: Tensor<B, 1>,
        grad: Tensor<B, 1>,
        states: &mut [TransformState<B>],
    ) -> MeasuredResult<B> {
        self.step(lr, shape, param, grad, states).map(|p| (p, None))
    }

    /// [`FusedStep::step`] with the gradient multiplied by `scale` (global clipping) inside the
    /// pass: each element `g·scale` rounded to f32 exactly as `grad.mul_scalar(scale)` would
    /// be, without writing the scaled gradient to memory. The default declines (`Err`, inputs
    /// unchanged); the engine then scales the gradient first and calls [`FusedStep::step`].
    #[allow(clippy::result_large_err)]
    fn step_scaled(
        &self,
        lr: f64,
        shape: &[usize],
        param: Tensor<B, 1>,
        grad: Tensor<B, 1>,
        scale: f32,
        states: &mut [TransformState<B>],
    ) -> FusedResult<B> {
        let _ = (lr, shape, scale, states);
        Err((param, grad))
    }
}

/// A fused step's outcome: the new parameter, or the inputs handed back unchanged.
pub type FusedResult<B> = Result<Tensor<B, 1>, (Tensor<B, 1>, Tensor<B, 1>)>;

/// [`FusedStep::step_measured`]'s outcome: the new parameter and the gradient's `Σ g²` when
/// it was measured, or the inputs handed back unchanged.
pub type MeasuredResult<B> = Result<(Tensor<B, 1>, Option<f64>), (Tensor<B, 1>, Tensor<B, 1>)>;

/// [`FusedStep`] for a fused step whose CPU kernel can measure `Σ g²` in its own pass: `step`
/// and `step_measured` both call the type's `run(lr, param, grad, states, measure)`.
macro_rules! measuring_fused_step {
    ($ty:ty, $name:literal) => {
        impl<B: Backend> FusedStep<B> for $ty {
            fn name(&self) -> &'static str {
                $name
            }

            fn step(
                &self,
                lr: f64,
                _shape: &[usize],
                param: Tensor<B, 1>,
                grad: Tensor<B, 1>,
                states: &mut [TransformState<B>],
            ) -> FusedResult<B> {
                self.run(lr, param, grad, states, Pass::default())
                    .map(|(p, _)| p)
            }

            fn step_measured(
                &self,
                lr: f64,
                _shape: &[usize],
                param: Tensor<B, 1>,
                grad: Tensor<B, 1>,
                states: &mut [TransformState<B>],
            ) -> MeasuredResult<B> {
                let pass = Pass {
                    measure: true,
                    scale: None,
                };
                self.run(lr, param, grad, states, pass)
            }

            fn step_scaled(
                &self,
                lr: f64,
                _shape: &[usize],
                param: Tensor<B, 1>,
                grad: Tensor<B, 1>,
                scale: f32,
                states: &mut [TransformState<B>],
            ) -> FusedResult<B> {
                let pass = Pass {
                    measure: false,
                    scale: Some(scale),
                };
                self.run(lr, param, grad, states, pass).map(|(p, _)| p)
            }
        }
    };
}

// One file per family (its `Fused*` step, its per-step constants and their per-element
// arithmetic), declared after `measuring_fused_step!`, which they use; `registry`: the device
// kernels of other crates' backends; `cpu`: burn-ndarray/flex buffers, the worker pool and the
// CPU passes.
mod adafactor;
mod adam;
mod adam8bit;
#[cfg(feature = "ndarray")]
mod cpu;
mod lion;
mod plan;
mod registry;
mod sophia;

pub use adafactor::FusedAdafactor;
pub use adam::{AdamScalars, FusedAdam};
pub use adam8bit::{Adam8Scalars, FusedAdam8bit};
pub use lion::{FusedLion, LionScalars};
pub use plan::plan;
pub use registry::{DeviceSteps, has_device_steps, register_device_steps};
pub use sophia::{FusedSophia, SophiaScalars};

/// [`set_threads`]' count (0: automatic), read by the CPU passes.
static THREADS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Threads the CPU kernels use (0 = automatic: `MOMENT_THREADS`, else all cores). The passes
/// run on a kept pool of that many threads minus one (the calling thread is the last one),
/// started on first use and started again when the count changes.
pub fn set_threads(n: usize) {
    THREADS.store(n, std::sync::atomic::Ordering::Relaxed);
}

/// Ask the kernel to back `buf`'s memory with transparent huge pages (Linux
/// `madvise(MADV_HUGEPAGE)` on the 2 MiB-aligned part of the buffer; a no-op elsewhere, for
/// buffers under 4 MiB and where the kernel refuses). The CPU steps call it on the parameter
/// and state buffers they take: pages not yet touched — a state tensor that burn allocated
/// zeroed and nobody wrote yet — fault in as 2 MiB pages, and already-touched ones are
/// collapsed later by `khugepaged`. Values are never read or changed; only the TLB reach
/// changes, which is what limits a streaming step over several 64 MiB buffers with 4 KiB
/// pages (AdamW 16M, 2 threads: 9.0 ms → 8.1 ms with the state on huge pages, 7.7 ms with
/// everything; docs/benchmarks.md). Whether it applies depends on
/// `/sys/kernel/mm/transparent_hugepage/enabled` (`madvise` or `always`).
pub fn advise_huge_pages<T>(buf: &[T]) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let start = buf.as_ptr() as usize;
        let end = start + size_of_val(buf);
        let (lo, hi) = (start.next_multiple_of(HUGE), end / HUGE * HUGE);
        if end - start >= 2 * HUGE && hi > lo {
            // SAFETY: `[lo, hi)` lies inside `buf`'s allocation, which this process owns, and
            // MADV_HUGEPAGE is advice about how to back it — it neither reads nor changes the
            // contents, so the borrow is not violated. Errors (EINVAL on memory that cannot
            // take huge pages, e.g. a file mapping) leave everything as it was and are ignored.
            #[allow(unsafe_code)]
            unsafe {
                libc::madvise(lo as *mut libc::c_void, hi - lo, libc::MADV_HUGEPAGE);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = buf;
}

/// What a one-pass CPU step does besides the update: measure the gradient's `Σ g²`, and/or
/// read the gradient multiplied by a clipping factor.
#[derive(Debug, Clone, Copy, Default)]
#[cfg_attr(not(feature = "ndarray"), allow(dead_code))]
struct Pass {
    measure: bool,
    scale: Option<f32>,
}

/// One element-wise pass over a contiguous chunk: the parameter, the gradient and the state
/// streams (same length). Returns a count the kernel keeps (Sophia's unclipped coordinates; 0
/// otherwise), summed over chunks.
#[cfg_attr(not(feature = "ndarray"), allow(dead_code))]
trait Kernel: Sync {
    fn run(&self, p: &mut [f32], g: &[f32], s: &mut [&mut [f32]]) -> u64;
}

/// Advance `st`'s `step` counter around `f`; put it back when `f` hands its inputs back.
pub(super) fn with_counter<B: Backend>(
    st: &mut TransformState<B>,
    f: impl FnOnce(&mut TransformState<B>) -> FusedResult<B>,
) -> FusedResult<B> {
    let before = st.counter("step").unwrap_or(0);
    advance_step(st);
    let out = f(st);
    if out.is_err()
        && let Some(c) = st.counter_mut("step")
    {
        *c = before;
    }
    out
}

/// Advance `st`'s `step` counter by one (saturating) and return the new step.
pub(super) fn advance_step<B: Backend>(st: &mut TransformState<B>) -> u64 {
    match st.counter_mut("step") {
        Some(c) => {
            *c = c.saturating_add(1);
            *c
        }
        None => 0,
    }
}

/// Whether every tensor of `ts` has `n` elements.
pub(super) fn all_len<'a, B: Backend>(
    ts: impl IntoIterator<Item = &'a Tensor<B, 1>>,
    n: usize,
) -> bool {
    ts.into_iter().all(|t| t.dims()[0] == n)
}

/// `Σ x²` of a flat tensor in f64, read in place (no temporary), multi-threaded — on backends
/// with a CPU kernel (ndarray f32); `None` elsewhere (the engine then reduces with tensor ops).
/// Non-finite when `x` holds NaN or ±Inf.
pub fn sum_squares<B: Backend>(t: &Tensor<B, 1>) -> Option<f64> {
    #[cfg(feature = "ndarray")]
    {
        cpu::sum_squares(t)
    }
    #[cfg(not(feature = "ndarray"))]
    {
        let _ = t;
        None
    }
}

/// `t · c`, each element one f32 multiply (the bits of `t.mul_scalar(c)`): multi-threaded and
/// in place when `t` is the only handle on a CPU buffer (a gradient from `backward`), a
/// multi-threaded pass over a copy when it is shared, and `mul_scalar` on other backends.
/// The engine scales gradients with it when it clips.
pub fn scale<B: Backend>(t: Tensor<B, 1>, c: f32) -> Tensor<B, 1> {
    #[cfg(feature = "ndarray")]
    {
        cpu::scale(t, c).unwrap_or_else(|t| t.mul_scalar(c))
    }
    #[cfg(not(feature = "ndarray"))]
    {
        t.mul_scalar(c)
    }
}

/// Whether [`sum_squares`] (and so the CPU kernels' in-pass measurement) can read `t` in
/// place: an f32 tensor of burn's CPU backends.
pub(crate) fn host_readable<B: Backend>(t: &Tensor<B, 1>) -> bool {
    #[cfg(feature = "ndarray")]
    {
        cpu::readable(t)
    }
    #[cfg(not(feature = "ndarray"))]
    {
        let _ = t;
        false
    }
}
