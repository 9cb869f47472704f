//! Fused one-pass steps: a chain may carry a [`FusedStep`], an implementation of the *whole*
//! chain that reads the parameter, gradient and state once and writes them once, in place when
//! the buffers are uniquely owned. The engine uses it when it applies (backend and tensor
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

/// A chain's one-pass implementation for some backends (see the [module docs](self)).
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

    /// [`FusedStep::step`] that also returns the gradient's `Σ g²` exactly as [`sum_squares`]
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

/// What a one-pass CPU step does besides the update: measure the gradient's `Σ g²`, and/or
/// read the gradient multiplied by a clipping factor.
#[derive(Debug, Clone, Copy, Default)]
#[cfg_attr(not(feature = "ndarray"), allow(dead_code))]
struct Pass {
    measure: bool,
    scale: Option<f32>,
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

/// One-pass kernels for a backend outside this crate (e.g. moment-cuda's CubeCL kernels on
/// burn's CUDA and wgpu backends), registered with [`register_device_steps`]. The fused
/// chains call them before their CPU kernels; each method gets the step's constants (rounded
/// as the composed chain rounds them), the parameter, the gradient and the chain's state for
/// the fused transform, whose layout and lengths were already checked and whose `step` counter
/// was already advanced. A method either performs the whole step (writing every state tensor
/// the composed chain writes, in the same layout) and returns the new parameter, or returns the
/// inputs unchanged and leaves `st` untouched. The defaults decline.
pub trait DeviceSteps<B: Backend>: Send + Sync {
    /// Adam/AdamW ([`AdamScalars`]); `st.tensors` are `exp_avg`, `exp_avg_sq`
    /// [, `max_exp_avg_sq`].
    fn adam(
        &self,
        sc: &AdamScalars,
        param: Tensor<B, 1>,
        grad: Tensor<B, 1>,
        st: &mut TransformState<B>,
    ) -> FusedResult<B> {
        let _ = (sc, st);
        Err((param, grad))
    }

    /// Lion ([`LionScalars`]); `st.tensors` is `exp_avg`.
    fn lion(
        &self,
        sc: &LionScalars,
        param: Tensor<B, 1>,
        grad: Tensor<B, 1>,
        st: &mut TransformState<B>,
    ) -> FusedResult<B> {
        let _ = (sc, st);
        Err((param, grad))
    }

    /// Sophia ([`SophiaScalars`]); `st.tensors` are the momentum, the curvature estimate
    /// (read only) and `win_rate` (`[1]`, to be written).
    fn sophia(
        &self,
        sc: &SophiaScalars,
        param: Tensor<B, 1>,
        grad: Tensor<B, 1>,
        st: &mut TransformState<B>,
    ) -> FusedResult<B> {
        let _ = (sc, st);
        Err((param, grad))
    }

    /// 8-bit blockwise Adam/AdamW ([`Adam8Scalars`]); `st.tensors` are `absmax1`, `absmax2`
    /// (one per block), `st.codes` are `state1`, `state2` (`u8`, one per element).
    fn adam8bit(
        &self,
        sc: &Adam8Scalars,
        param: Tensor<B, 1>,
        grad: Tensor<B, 1>,
        st: &mut TransformState<B>,
    ) -> FusedResult<B> {
        let _ = (sc, st);
        Err((param, grad))
    }
}

type DeviceRegistry =
    std::sync::RwLock<Vec<(std::any::TypeId, Box<dyn std::any::Any + Send + Sync>)>>;

fn registry() -> &'static DeviceRegistry {
    static REGISTRY: std::sync::OnceLock<DeviceRegistry> = std::sync::OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

/// Make the fused chains use `steps` on backend `B` (replacing an earlier registration for
/// `B`). For the optimizer of an autodiff backend, register its inner backend: the step runs
/// there.
pub fn register_device_steps<B: Backend>(steps: std::sync::Arc<dyn DeviceSteps<B>>) {
    let id = std::any::TypeId::of::<B>();
    let mut reg = registry()
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    reg.retain(|(k, _)| *k != id);
    reg.push((id, Box::new(steps)));
}

/// Whether device kernels are registered for `B`.
pub fn has_device_steps<B: Backend>() -> bool {
    device_steps::<B>().is_some()
}

fn device_steps<B: Backend>() -> Option<std::sync::Arc<dyn DeviceSteps<B>>> {
    let id = std::any::TypeId::of::<B>();
    let reg = registry()
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    reg.iter()
        .find(|(k, _)| *k == id)
        .and_then(|(_, v)| v.downcast_ref::<std::sync::Arc<dyn DeviceSteps<B>>>())
        .cloned()
}

/// Run `f` with `B`'s device kernels, or hand the inputs back.
fn on_device<B: Backend>(
    param: Tensor<B, 1>,
    grad: Tensor<B, 1>,
    f: impl FnOnce(&dyn DeviceSteps<B>, Tensor<B, 1>, Tensor<B, 1>) -> FusedResult<B>,
) -> FusedResult<B> {
    match device_steps::<B>() {
        Some(d) => f(&*d, param, grad),
        None => Err((param, grad)),
    }
}

/// Advance `st`'s `step` counter (the first counter) around `f`; put it back when `f` hands
/// its inputs back.
fn with_counter<B: Backend>(
    st: &mut TransformState<B>,
    f: impl FnOnce(&mut TransformState<B>) -> FusedResult<B>,
) -> FusedResult<B> {
    let before = st.counters[0].1;
    st.counters[0].1 = before.saturating_add(1);
    let out = f(st);
    if out.is_err() {
        st.counters[0].1 = before;
    }
    out
}

/// Whether `st`'s first tensors are `names`, each as long as `param` and `grad`.
fn streams_fit<B: Backend>(
    st: &TransformState<B>,
    names: &[&str],
    param: &Tensor<B, 1>,
    grad: &Tensor<B, 1>,
) -> bool {
    let n = param.dims()[0];
    grad.dims()[0] == n
        && st.tensors.len() >= names.len()
        && st
            .tensors
            .iter()
            .zip(names)
            .all(|(t, name)| t.name == *name && t.tensor.dims()[0] == n)
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

/// The Adam family's chain `[flip] → [L2] → scale_by_adam → [decoupled] → −lr`, fused.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FusedAdam {
    /// Index of `scale_by_adam` in the chain (its state holds the moments and the counter).
    pub adam_index: usize,
    /// Negate the gradient first.
    pub maximize: bool,
    /// Coupled L2 λ (0: none).
    pub coupled: f64,
    /// Decoupled λ (0: none).
    pub decoupled: f64,
    /// β1.
    pub beta1: f64,
    /// β2.
    pub beta2: f64,
    /// ε.
    pub eps: f64,
    /// AMSGrad.
    pub amsgrad: bool,
}

/// Per-step f32 constants of [`FusedAdam`], rounded exactly as the composed transforms round
/// them (device kernels take them as they are). Per element, in this order:
/// `g ← maximize ? −g : g; g ← g + θ·coupled; m ← m + (g − m)·(1−β1); v ← v·β2 + g·g·(1−β2);
/// v̂ ← amsgrad ? max(vmax, v) : v; u ← m / (√v̂ · inv_bc2_sqrt + ε) · inv_bc1; u ← u + θ·decoupled;
/// θ ← θ + u·neg_lr`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamScalars {
    /// Negate the gradient.
    pub maximize: bool,
    /// Coupled L2 λ.
    pub coupled: Option<f32>,
    /// Decoupled λ.
    pub decoupled: Option<f32>,
    /// 1 − β1.
    pub one_minus_b1: f32,
    /// β2.
    pub b2: f32,
    /// 1 − β2.
    pub one_minus_b2: f32,
    /// 1 / √(1 − β2ᵗ) (computed in f64, rounded once).
    pub inv_bc2_sqrt: f32,
    /// ε.
    pub eps: f32,
    /// 1 / (1 − β1ᵗ) (computed in f64, rounded once).
    pub inv_bc1: f32,
    /// −lr.
    pub neg_lr: f32,
    /// AMSGrad.
    pub amsgrad: bool,
}

#[cfg_attr(not(feature = "ndarray"), allow(dead_code))]
impl AdamScalars {
    /// One element, in the composed chain's order of f32 operations; the flags are constants
    /// so each variant's loop is branch-free (and vectorizes).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn elem<const MAXIMIZE: bool, const L2: bool, const DECOUPLED: bool, const AMS: bool>(
        &self,
        p: &mut f32,
        g: f32,
        m: &mut f32,
        v: &mut f32,
        vmax: &mut f32,
        wd_l2: f32,
        wd_dec: f32,
    ) {
        // × −1 like burn's `neg` (keeps a NaN's sign bit, unlike unary minus)
        #[allow(clippy::neg_multiply)]
        let mut g = if MAXIMIZE { g * -1.0 } else { g };
        if L2 {
            g += *p * wd_l2;
        }
        let m1 = *m + (g - *m) * self.one_minus_b1;
        let v1 = *v * self.b2 + g * g * self.one_minus_b2;
        let vu = if AMS {
            // burn's `max_pair`: `a < b ? b : a` (a NaN already in vmax stays)
            let x = if *vmax < v1 { v1 } else { *vmax };
            *vmax = x;
            x
        } else {
            v1
        };
        let den = vu.sqrt() * self.inv_bc2_sqrt + self.eps;
        let mut out = m1 / den * self.inv_bc1;
        if DECOUPLED {
            out += *p * wd_dec;
        }
        *p += out * self.neg_lr;
        *m = m1;
        *v = v1;
    }

    /// A contiguous chunk (`xs` is empty unless AMSGrad).
    #[inline(always)]
    fn chunk<const MAXIMIZE: bool, const L2: bool, const DECOUPLED: bool, const AMS: bool>(
        &self,
        ps: &mut [f32],
        gs: &[f32],
        ms: &mut [f32],
        vs: &mut [f32],
        xs: &mut [f32],
    ) {
        let wd_l2 = self.coupled.unwrap_or(0.0);
        let wd_dec = self.decoupled.unwrap_or(0.0);
        let it = ps.iter_mut().zip(gs).zip(ms.iter_mut()).zip(vs.iter_mut());
        if AMS {
            for ((((p, g), m), v), x) in it.zip(xs.iter_mut()) {
                self.elem::<MAXIMIZE, L2, DECOUPLED, AMS>(p, *g, m, v, x, wd_l2, wd_dec);
            }
        } else {
            let mut unused = 0.0f32;
            for (((p, g), m), v) in it {
                self.elem::<MAXIMIZE, L2, DECOUPLED, AMS>(p, *g, m, v, &mut unused, wd_l2, wd_dec);
            }
        }
    }

    /// Dispatch to the variant for these flags.
    #[inline(always)]
    fn run(&self, ps: &mut [f32], gs: &[f32], ms: &mut [f32], vs: &mut [f32], xs: &mut [f32]) {
        macro_rules! pick {
            ($($a:literal $b:literal $c:literal $d:literal),*) => {
                match (self.maximize, self.coupled.is_some(), self.decoupled.is_some(), self.amsgrad) {
                    $(($a, $b, $c, $d) => self.chunk::<$a, $b, $c, $d>(ps, gs, ms, vs, xs),)*
                }
            };
        }
        pick!(
            false false false false, false false false true, false false true false,
            false false true true, false true false false, false true false true,
            false true true false, false true true true, true false false false,
            true false false true, true false true false, true false true true,
            true true false false, true true false true, true true true false,
            true true true true
        );
    }
}

/// One element-wise pass over a contiguous chunk: the parameter, the gradient and the state
/// streams (same length). Returns a count the kernel keeps (Sophia's unclipped coordinates; 0
/// otherwise), summed over chunks.
#[cfg_attr(not(feature = "ndarray"), allow(dead_code))]
trait Kernel: Sync {
    fn run(&self, p: &mut [f32], g: &[f32], s: &mut [&mut [f32]]) -> u64;
}

impl Kernel for AdamScalars {
    #[inline(always)]
    fn run(&self, p: &mut [f32], g: &[f32], s: &mut [&mut [f32]]) -> u64 {
        match s {
            [m, v] => AdamScalars::run(self, p, g, m, v, &mut []),
            [m, v, x] => AdamScalars::run(self, p, g, m, v, x),
            _ => {}
        }
        0
    }
}

/// `sign` as burn-ndarray computes it: 0 for ±0, else ±1 by the sign bit (so a NaN gives ±1).
#[inline(always)]
#[cfg_attr(not(feature = "ndarray"), allow(dead_code))]
fn sign(x: f32) -> f32 {
    if x == 0.0 {
        0.0
    } else if x.is_sign_positive() {
        1.0
    } else {
        -1.0
    }
}

/// Lion's chain `[flip] → scale_by_lion → [decoupled] → −lr`, fused.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FusedLion {
    /// Index of `scale_by_lion` in the chain.
    pub lion_index: usize,
    /// Negate the gradient first.
    pub maximize: bool,
    /// Decoupled λ (0: none).
    pub decoupled: f64,
    /// β1 (interpolation for the sign).
    pub beta1: f64,
    /// β2 (momentum decay).
    pub beta2: f64,
}

/// Per-step f32 constants of [`FusedLion`]. Per element: `g ← maximize ? −g : g;
/// u ← sign(m·β1 + g·(1−β1)); m ← m·β2 + g·(1−β2); u ← u + θ·decoupled; θ ← θ + u·neg_lr`
/// (`sign(±0) = 0`, otherwise ±1 by the sign bit).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LionScalars {
    /// Negate the gradient.
    pub maximize: bool,
    /// β1.
    pub b1: f32,
    /// 1 − β1.
    pub one_minus_b1: f32,
    /// β2.
    pub b2: f32,
    /// 1 − β2.
    pub one_minus_b2: f32,
    /// Decoupled λ.
    pub decoupled: Option<f32>,
    /// −lr.
    pub neg_lr: f32,
}

#[cfg_attr(not(feature = "ndarray"), allow(dead_code))]
impl LionScalars {
    #[inline(always)]
    fn chunk<const MAXIMIZE: bool, const DECOUPLED: bool>(
        &self,
        ps: &mut [f32],
        gs: &[f32],
        ms: &mut [f32],
    ) {
        let wd = self.decoupled.unwrap_or(0.0);
        for ((p, g), m) in ps.iter_mut().zip(gs).zip(ms.iter_mut()) {
            #[allow(clippy::neg_multiply)]
            let g = if MAXIMIZE { *g * -1.0 } else { *g };
            let mut u = sign(*m * self.b1 + g * self.one_minus_b1);
            *m = *m * self.b2 + g * self.one_minus_b2;
            if DECOUPLED {
                u += *p * wd;
            }
            *p += u * self.neg_lr;
        }
    }
}

impl Kernel for LionScalars {
    #[inline(always)]
    fn run(&self, p: &mut [f32], g: &[f32], s: &mut [&mut [f32]]) -> u64 {
        if let [m] = s {
            match (self.maximize, self.decoupled.is_some()) {
                (false, false) => self.chunk::<false, false>(p, g, m),
                (false, true) => self.chunk::<false, true>(p, g, m),
                (true, false) => self.chunk::<true, false>(p, g, m),
                (true, true) => self.chunk::<true, true>(p, g, m),
            }
        }
        0
    }
}

measuring_fused_step!(FusedLion, "fused_lion");

impl FusedLion {
    /// This step's constants.
    pub fn scalars(&self, lr: f64) -> LionScalars {
        LionScalars {
            maximize: self.maximize,
            b1: self.beta1 as f32,
            one_minus_b1: (1.0 - self.beta1) as f32,
            b2: self.beta2 as f32,
            one_minus_b2: (1.0 - self.beta2) as f32,
            decoupled: (self.decoupled > 0.0).then_some(self.decoupled as f32),
            neg_lr: -(lr as f32),
        }
    }

    /// The step, measuring `Σ g²` and/or scaling the gradient in the same pass as `pass` asks
    /// (CPU kernel only; a scaled pass never takes the device kernel).
    #[allow(clippy::result_large_err)]
    fn run<B: Backend>(
        &self,
        lr: f64,
        param: Tensor<B, 1>,
        grad: Tensor<B, 1>,
        states: &mut [TransformState<B>],
        pass: Pass,
    ) -> MeasuredResult<B> {
        let sc = self.scalars(lr);
        let Some(st) = states.get_mut(self.lion_index) else {
            return Err((param, grad));
        };
        let names = ["exp_avg"];
        if !(st.counters.is_empty() && streams_fit(st, &names, &param, &grad)) {
            return Err((param, grad));
        }
        let (param, grad) = match pass.scale {
            Some(_) => (param, grad),
            None => match on_device(param, grad, |d, p, g| d.lion(&sc, p, g, st)) {
                Ok(p) => return Ok((p, None)),
                Err(x) => x,
            },
        };
        #[cfg(feature = "ndarray")]
        {
            cpu::one_pass(param, grad, st, &names, pass, |_| sc).map(|(p, _, s)| (p, s))
        }
        #[cfg(not(feature = "ndarray"))]
        {
            let _ = pass;
            Err((param, grad))
        }
    }
}

/// Sophia's chain `[flip] → [L2] → scale_by_sophia → [decoupled] → −lr`, fused (the curvature
/// update stays a separate step, as in the composed path).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FusedSophia {
    /// Index of `scale_by_sophia` in the chain.
    pub sophia_index: usize,
    /// Negate the gradient first.
    pub maximize: bool,
    /// Coupled L2 λ (0: none).
    pub coupled: f64,
    /// Decoupled λ (0: none).
    pub decoupled: f64,
    /// Sophia-H (`true`: lerp momentum, `max(h, ε)` denominator, clip at ρ) or Sophia-G.
    pub variant_h: bool,
    /// β1.
    pub beta1: f64,
    /// ρ (Sophia-G: ρ·batch size, as the transform holds it).
    pub rho: f64,
    /// ε.
    pub eps: f64,
}

/// Per-step f32 constants of [`FusedSophia`]. Per element: `g ← maximize ? −g : g;
/// g ← g + θ·coupled`; Sophia-H: `m ← lerp(m, g, w)` (rounded as `transforms::lerp`),
/// `den ← max(h, ε)`; Sophia-G: `m ← m·β1 + g·w`, `den ← h·ρ + ε`; then
/// `u ← clamp(m/den, −clip, clip)`, a win when `|u| < clip`, `u ← u + θ·decoupled`,
/// `θ ← θ + u·neg_lr`; the win rate (wins / n) goes to the state's `win_rate`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SophiaScalars {
    /// Negate the gradient.
    pub maximize: bool,
    /// Sophia-H (else Sophia-G).
    pub variant_h: bool,
    /// Coupled L2 λ.
    pub coupled: Option<f32>,
    /// Decoupled λ.
    pub decoupled: Option<f32>,
    /// β1.
    pub b1: f32,
    /// 1 − β1 (the lerp weight / the gradient's weight).
    pub w: f32,
    /// ρ (Sophia-G).
    pub rho: f32,
    /// ε.
    pub eps: f32,
    /// Clip bound (ρ for Sophia-H, 1 for Sophia-G).
    pub clip: f32,
    /// −lr.
    pub neg_lr: f32,
}

#[cfg_attr(not(feature = "ndarray"), allow(dead_code))]
impl SophiaScalars {
    #[inline(always)]
    fn chunk<const MAXIMIZE: bool, const L2: bool, const DECOUPLED: bool, const H: bool>(
        &self,
        ps: &mut [f32],
        gs: &[f32],
        ms: &mut [f32],
        hs: &[f32],
    ) -> u64 {
        let (wd_l2, wd_dec, c) = (
            self.coupled.unwrap_or(0.0),
            self.decoupled.unwrap_or(0.0),
            self.clip,
        );
        let mut win = 0u64;
        for (((p, g), m), h) in ps.iter_mut().zip(gs).zip(ms.iter_mut()).zip(hs) {
            #[allow(clippy::neg_multiply)]
            let mut g = if MAXIMIZE { *g * -1.0 } else { *g };
            if L2 {
                g += *p * wd_l2;
            }
            let (m1, den) = if H {
                // lerp(m, g, w) as `transforms::lerp` rounds it; clamp_min(h, ε)
                let m1 = if self.w.abs() < 0.5 {
                    *m + (g - *m) * self.w
                } else {
                    g - (g - *m) * (1.0 - self.w)
                };
                (m1, if *h < self.eps { self.eps } else { *h })
            } else {
                (*m * self.b1 + g * self.w, *h * self.rho + self.eps)
            };
            // clamp(−c, c) as burn-ndarray computes it here (its SIMD min/max keep a NaN)
            let u = m1 / den;
            let u = if u < -c {
                -c
            } else if u > c {
                c
            } else {
                u
            };
            win += u64::from(u.abs() < c);
            *m = m1;
            let mut u = u;
            if DECOUPLED {
                u += *p * wd_dec;
            }
            *p += u * self.neg_lr;
        }
        win
    }
}

impl Kernel for SophiaScalars {
    #[inline(always)]
    fn run(&self, p: &mut [f32], g: &[f32], s: &mut [&mut [f32]]) -> u64 {
        let [m, h] = s else { return 0 };
        macro_rules! pick {
            ($($a:literal $b:literal $c:literal $d:literal),*) => {
                match (self.maximize, self.coupled.is_some(), self.decoupled.is_some(), self.variant_h) {
                    $(($a, $b, $c, $d) => self.chunk::<$a, $b, $c, $d>(p, g, m, h),)*
                }
            };
        }
        pick!(
            false false false false, false false false true, false false true false,
            false false true true, false true false false, false true false true,
            false true true false, false true true true, true false false false,
            true false false true, true false true false, true false true true,
            true true false false, true true false true, true true true false,
            true true true true
        )
    }
}

measuring_fused_step!(FusedSophia, "fused_sophia");

impl FusedSophia {
    /// This step's constants.
    pub fn scalars(&self, lr: f64) -> SophiaScalars {
        SophiaScalars {
            maximize: self.maximize,
            variant_h: self.variant_h,
            coupled: (self.coupled > 0.0).then_some(self.coupled as f32),
            decoupled: (self.decoupled > 0.0).then_some(self.decoupled as f32),
            b1: self.beta1 as f32,
            w: (1.0 - self.beta1) as f32,
            rho: self.rho as f32,
            eps: self.eps as f32,
            clip: if self.variant_h { self.rho as f32 } else { 1.0 },
            neg_lr: -(lr as f32),
        }
    }

    /// The momentum and curvature state names of this variant.
    fn names(&self) -> [&'static str; 2] {
        if self.variant_h {
            ["momentum", "hessian_moment"]
        } else {
            ["exp_avg", "hessian"]
        }
    }

    /// The step, measuring `Σ g²` and/or scaling the gradient in the same pass as `pass` asks
    /// (CPU kernel only; a scaled pass never takes the device kernel).
    #[allow(clippy::result_large_err)]
    fn run<B: Backend>(
        &self,
        lr: f64,
        param: Tensor<B, 1>,
        grad: Tensor<B, 1>,
        states: &mut [TransformState<B>],
        pass: Pass,
    ) -> MeasuredResult<B> {
        let sc = self.scalars(lr);
        let Some(st) = states.get_mut(self.sophia_index) else {
            return Err((param, grad));
        };
        let names = self.names();
        let ok = st.tensors.len() == 3
            && st.tensors[2].name == "win_rate"
            && st.tensors[2].tensor.dims()[0] == 1
            && st.counters.first().is_some_and(|c| c.0 == "step")
            && streams_fit(st, &names, &param, &grad);
        if !ok {
            return Err((param, grad));
        }
        let (param, grad) = match pass.scale {
            Some(_) => (param, grad),
            None => match with_counter(st, |st| {
                on_device(param, grad, |d, p, g| d.sophia(&sc, p, g, st))
            }) {
                Ok(p) => return Ok((p, None)),
                Err(x) => x,
            },
        };
        #[cfg(feature = "ndarray")]
        {
            let n = param.dims()[0];
            let (p, win, sumsq) = cpu::one_pass(param, grad, st, &names, pass, |st| {
                st.counters[0].1 = st.counters[0].1.saturating_add(1);
                sc
            })?;
            if n > 0 {
                // `mean` of the 0/1 mask as burn-ndarray computes it (exact count below 2^24).
                let rate = win as f32 / n as f32;
                let device = st.tensors[2].tensor.device();
                st.tensors[2].tensor =
                    Tensor::from_data(burn::tensor::TensorData::new(vec![rate], [1]), &device);
            }
            Ok((p, sumsq))
        }
        #[cfg(not(feature = "ndarray"))]
        {
            let _ = pass;
            Err((param, grad))
        }
    }
}

/// 8-bit blockwise Adam/AdamW with bitsandbytes' CUDA-kernel semantics
/// (`scale_by_adam_8bit → flip_sign`, quantized state), fused: per block, decode both moments,
/// update them and the parameter, take the new block max-abs and re-encode (exact nearest
/// code, sign fix for `state1`) — one pass over the parameter, gradient and the two `u8` code
/// streams. Parameters below `min_8bit_size` (32-bit state) and the CPU-kernel mode run
/// composed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FusedAdam8bit {
    /// The transform (its `kernel` must be [`BnbKernel::Cuda`](crate::BnbKernel::Cuda)).
    pub transform: crate::transforms::ScaleByAdam8bit,
}

/// Per-step constants of the 8-bit kernel, rounded as the composed transform rounds them.
/// Per element of a block (old max-abs `a1`, `a2`; a non-finite gradient leaves the element
/// and zeroes its moments): `m ← map1[c1]·a1·β1 + g·(1−β1); v ← map2[c2]·a2·β2 + g·(1−β2)·g;
/// δ ← m / (√v + eps_c2) · step_size; d ← keep ? θ − (θ + δ)·keep : −δ; θ ← θ − d`; then the
/// block's new max-abs of `m` and `v` (NaN ignored) and the nearest codes of `m/a1'`, `v/a2'`
/// (`state1` with the kernel's sign fix).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Adam8Scalars {
    /// β1.
    pub b1: f32,
    /// 1 − β1.
    pub one_minus_b1: f32,
    /// β2.
    pub b2: f32,
    /// 1 − β2.
    pub one_minus_b2: f32,
    /// ε·√(1 − β2ᵗ).
    pub eps_c2: f32,
    /// −lr·√(1 − β2ᵗ)/(1 − β1ᵗ).
    pub step_size: f32,
    /// `1 − lr·λ` with decoupled decay λ > 0.
    pub keep: Option<f32>,
    /// Elements per quantization block.
    pub block: usize,
}

impl FusedAdam8bit {
    /// The constants of step `t` (1-based).
    pub fn scalars(&self, lr: f64, t: u64) -> Adam8Scalars {
        let tr = &self.transform;
        let ti = i32::try_from(t).unwrap_or(i32::MAX);
        let c1 = 1.0 - tr.beta1.powi(ti);
        let c2 = (1.0 - tr.beta2.powi(ti)).sqrt();
        let (b1, b2) = (tr.beta1 as f32, tr.beta2 as f32);
        Adam8Scalars {
            b1,
            one_minus_b1: 1.0 - b1,
            b2,
            one_minus_b2: 1.0 - b2,
            eps_c2: (c2 * tr.eps) as f32,
            step_size: -(lr * c2 / c1) as f32,
            keep: (tr.weight_decay > 0.0).then_some((1.0 - lr * tr.weight_decay) as f32),
            block: tr.block_size,
        }
    }
}

impl<B: Backend> FusedStep<B> for FusedAdam8bit {
    fn name(&self) -> &'static str {
        "fused_adam8bit"
    }

    fn step(
        &self,
        lr: f64,
        _shape: &[usize],
        param: Tensor<B, 1>,
        grad: Tensor<B, 1>,
        states: &mut [TransformState<B>],
    ) -> FusedResult<B> {
        let t = &self.transform;
        let n = param.dims()[0];
        if t.kernel != crate::BnbKernel::Cuda || n < t.min_8bit_size || n == 0 {
            return Err((param, grad));
        }
        let Some(st) = states.first_mut() else {
            return Err((param, grad));
        };
        let block = t.block_size;
        let nb = crate::quant::num_blocks(n, block);
        let layout_ok = st.tensors.len() == 2
            && st.tensors[0].name == "absmax1"
            && st.tensors[1].name == "absmax2"
            && st.tensors.iter().all(|x| x.tensor.dims()[0] == nb)
            && st.codes.len() == 2
            && st.codes[0].name == "state1"
            && st.codes[1].name == "state2"
            && st.codes.iter().all(|c| c.tensor.dims()[0] == n)
            && st.counters.first().is_some_and(|c| c.0 == "step")
            && block > 0
            && grad.dims()[0] == n;
        if !layout_ok {
            return Err((param, grad));
        }
        let (param, grad) = match with_counter(st, |st| {
            let sc = self.scalars(lr, st.counters[0].1);
            on_device(param, grad, |d, p, g| d.adam8bit(&sc, p, g, st))
        }) {
            Ok(p) => return Ok(p),
            Err(x) => x,
        };
        #[cfg(feature = "ndarray")]
        {
            cpu::adam8bit(self, lr, param, grad, st)
        }
        #[cfg(not(feature = "ndarray"))]
        {
            Err((param, grad))
        }
    }
}

measuring_fused_step!(FusedAdam, "fused_adam");

impl FusedAdam {
    /// The constants of step `t` (1-based).
    pub fn scalars(&self, lr: f64, t: u64) -> AdamScalars {
        let ti = i32::try_from(t).unwrap_or(i32::MAX);
        let (b1, b2) = (self.beta1, self.beta2);
        AdamScalars {
            maximize: self.maximize,
            coupled: (self.coupled > 0.0).then_some(self.coupled as f32),
            decoupled: (self.decoupled > 0.0).then_some(self.decoupled as f32),
            one_minus_b1: (1.0 - b1) as f32,
            b2: b2 as f32,
            one_minus_b2: (1.0 - b2) as f32,
            inv_bc2_sqrt: (1.0 / (1.0 - b2.powi(ti)).sqrt()) as f32,
            eps: self.eps as f32,
            inv_bc1: (1.0 / (1.0 - b1.powi(ti))) as f32,
            neg_lr: -(lr as f32),
            amsgrad: self.amsgrad,
        }
    }

    /// The step, measuring `Σ g²` and/or scaling the gradient in the same pass as `pass` asks
    /// (CPU kernel only; a scaled pass never takes the device kernel).
    #[allow(clippy::result_large_err)]
    fn run<B: Backend>(
        &self,
        lr: f64,
        param: Tensor<B, 1>,
        grad: Tensor<B, 1>,
        states: &mut [TransformState<B>],
        pass: Pass,
    ) -> MeasuredResult<B> {
        let names: &[&str] = if self.amsgrad {
            &["exp_avg", "exp_avg_sq", "max_exp_avg_sq"]
        } else {
            &["exp_avg", "exp_avg_sq"]
        };
        let Some(st) = states.get_mut(self.adam_index) else {
            return Err((param, grad));
        };
        let ok = st.tensors.len() == names.len()
            && st.counters.first().is_some_and(|c| c.0 == "step")
            && streams_fit(st, names, &param, &grad);
        if !ok {
            return Err((param, grad));
        }
        let (param, grad) = match pass.scale {
            Some(_) => (param, grad),
            None => match with_counter(st, |st| {
                let sc = self.scalars(lr, st.counters[0].1);
                on_device(param, grad, |d, p, g| d.adam(&sc, p, g, st))
            }) {
                Ok(p) => return Ok((p, None)),
                Err(x) => x,
            },
        };
        #[cfg(feature = "ndarray")]
        {
            cpu::one_pass(param, grad, st, names, pass, |st| {
                let t = st.counters[0].1.saturating_add(1);
                st.counters[0].1 = t;
                self.scalars(lr, t)
            })
            .map(|(p, _, s)| (p, s))
        }
        #[cfg(not(feature = "ndarray"))]
        {
            let _ = pass;
            Err((param, grad))
        }
    }
}

/// Adafactor's chain `[flip] → scale_by_adafactor → flip`, fused on the CPU (no device
/// kernel): the row/column (or full) statistics, the update and its RMS, and the parameter
/// step in three passes over the gradient (one over the parameter for its RMS when the step is
/// parameter-scaled, one to write it), multi-threaded over fixed blocks of rows. Its sums run in
/// f64 over fixed blocks (so the result does not depend on the thread count) where the composed
/// chain sums in f32 in burn's order: the two agree to rounding (tested within the family's
/// reference tolerance), not bitwise like the other fused steps. Both conventions, rank ≥ 2
/// (factored) and ≤ 1, β1, decay.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FusedAdafactor {
    /// Index of `scale_by_adafactor` in the chain.
    pub index: usize,
    /// Negate the gradient first.
    pub maximize: bool,
    /// The transform's settings.
    pub transform: crate::transforms::ScaleByAdafactor,
}

impl<B: Backend> FusedStep<B> for FusedAdafactor {
    fn name(&self) -> &'static str {
        "fused_adafactor"
    }

    fn step(
        &self,
        lr: f64,
        shape: &[usize],
        param: Tensor<B, 1>,
        grad: Tensor<B, 1>,
        states: &mut [TransformState<B>],
    ) -> FusedResult<B> {
        let n = param.dims()[0];
        let Some(st) = states.get_mut(self.index) else {
            return Err((param, grad));
        };
        let factored = crate::transforms::factored_dims(shape);
        let lens: Vec<usize> = match factored {
            Some((l, r, c)) => vec![l * r, l * c],
            None => vec![n],
        };
        let k = lens.len() + usize::from(self.transform.beta1.is_some());
        let ok = n > 0
            && grad.dims()[0] == n
            && shape.iter().product::<usize>() == n
            && st.tensors.len() == k
            && st.counters.first().is_some_and(|c| c.0 == "step")
            && st
                .tensors
                .iter()
                .zip(lens.iter().chain([&n]))
                .all(|(t, &len)| t.tensor.dims()[0] == len);
        if !ok {
            return Err((param, grad));
        }
        #[cfg(feature = "ndarray")]
        {
            cpu::adafactor(self, lr, factored, param, grad, st)
        }
        #[cfg(not(feature = "ndarray"))]
        {
            let _ = (lr, factored);
            Err((param, grad))
        }
    }
}

#[cfg(feature = "ndarray")]
mod cpu {
    //! burn-ndarray f32: take the buffers out of the tensors (no copy when uniquely owned),
    //! run one pass over contiguous chunks on the kept worker pool, put them back.

    use std::any::Any;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    /// One chunk's slices: parameter, gradient, state streams, and where its `Σ g²` goes.
    type Job<'a> = (&'a mut [f32], &'a [f32], Vec<&'a mut [f32]>, &'a mut [f64]);

    #[cfg(feature = "flex")]
    use burn::backend::flex::FlexTensor;
    use burn::backend::ndarray::{NdArrayTensor, SharedArray};
    use burn::tensor::{Int, Tensor, TensorPrimitive, backend::Backend};

    use super::{Adam8Scalars, Kernel};
    use crate::transform::TransformState;

    /// Below this many elements one thread does the whole tensor.
    const PARALLEL_MIN: usize = 1 << 15;

    fn threads() -> usize {
        match super::THREADS.load(Ordering::Relaxed) {
            0 => std::env::var("MOMENT_THREADS")
                .ok()
                .and_then(|v| v.parse().ok())
                .filter(|n: &usize| *n > 0)
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
            n => n,
        }
    }

    /// A float primitive as `Any`, or `t` back (quantized).
    #[allow(clippy::result_large_err)]
    fn float_any<B: Backend>(t: Tensor<B, 1>) -> Result<Box<dyn Any>, Tensor<B, 1>> {
        match t.into_primitive() {
            TensorPrimitive::Float(p) => Ok(Box::new(p)),
            q @ TensorPrimitive::QFloat(_) => Err(Tensor::from_primitive(q)),
        }
    }

    /// A primitive of `B`'s float type (as `Any`) back into a tensor.
    #[allow(
        clippy::expect_used,
        reason = "invariant: only called with B's own primitive"
    )]
    fn float_back<B: Backend>(any: Box<dyn Any>) -> Tensor<B, 1> {
        Tensor::from_primitive(TensorPrimitive::Float(
            *any.downcast::<B::FloatTensorPrimitive>()
                .expect("only called with B's own float primitive"),
        ))
    }

    /// A primitive of `B`'s int type (as `Any`) back into a tensor.
    #[allow(
        clippy::expect_used,
        reason = "invariant: only called with B's own primitive"
    )]
    fn int_back<B: Backend>(any: Box<dyn Any>) -> Tensor<B, 1, Int> {
        Tensor::from_primitive(
            *any.downcast::<B::IntTensorPrimitive>()
                .expect("only called with B's own int primitive"),
        )
    }

    /// Whether a flex tensor is a plain contiguous buffer of exactly its elements.
    #[cfg(feature = "flex")]
    fn flex_plain(t: &FlexTensor, dtype: burn::tensor::DType) -> bool {
        let n = t.layout().num_elements();
        t.dtype() == dtype
            && t.layout().contiguous_offsets() == Some((0, n))
            && t.bytes().len() == n * dtype.size()
    }

    /// A host buffer of `T` taken out of a tensor of a supported CPU backend (copied only when
    /// shared), written in place and put back.
    pub(super) enum Buf<T> {
        /// burn-ndarray storage.
        Nd(SharedArray<T>),
        /// burn-flex storage (copy-on-write on first mutable access).
        #[cfg(feature = "flex")]
        Flex(FlexTensor),
    }

    /// `Buf<$elem>`'s `take` (out of a `Tensor<B, 1, $kind>`), `slice_mut` and `back`.
    macro_rules! buf_impl {
        ($elem:ty, $kind:ty, $variant:ident, $dtype:expr, $to_any:expr, $back:ident) => {
            impl Buf<$elem> {
                /// The buffer behind `t`, or `t` back (another backend, dtype or layout).
                #[allow(clippy::result_large_err)]
                fn take<B: Backend>(t: Tensor<B, 1, $kind>) -> Result<Self, Tensor<B, 1, $kind>> {
                    Self::take_with(t, true)
                }

                /// [`Self::take`]; `rehome`: move a large unique buffer into huge pages
                /// ([`Buf::rehome`]; worth it for buffers that stay, not for one-step ones).
                fn take_with<B: Backend>(
                    t: Tensor<B, 1, $kind>,
                    rehome: bool,
                ) -> Result<Self, Tensor<B, 1, $kind>> {
                    let any: Box<dyn Any> = $to_any(t)?;
                    let any = match any.downcast::<NdArrayTensor>() {
                        Ok(nd) => {
                            return match *nd {
                                NdArrayTensor::$variant(storage) => {
                                    let unique = storage.is_unique();
                                    let arr = storage.into_owned();
                                    if arr.is_standard_layout() {
                                        let mut buf = Buf::Nd(arr);
                                        if unique && rehome {
                                            // (a shared one was just copied by `into_owned`;
                                            // moving that copy again would double the cost)
                                            buf.rehome();
                                        }
                                        Ok(buf)
                                    } else {
                                        Err($back::<B>(Box::new(NdArrayTensor::from(arr))))
                                    }
                                }
                                other => Err($back::<B>(Box::new(other))),
                            };
                        }
                        Err(any) => any,
                    };
                    #[cfg(feature = "flex")]
                    let any = match any.downcast::<FlexTensor>() {
                        Ok(ft) if flex_plain(&ft, $dtype) => return Ok(Buf::Flex(*ft)),
                        Ok(ft) => return Err($back::<B>(ft)),
                        Err(any) => any,
                    };
                    Err($back::<B>(any))
                }

                #[allow(
                    clippy::expect_used,
                    reason = "invariant: `take` keeps only standard-layout arrays"
                )]
                fn slice_mut(&mut self) -> &mut [$elem] {
                    match self {
                        Buf::Nd(a) => a.as_slice_mut().expect("standard layout checked in take"),
                        #[cfg(feature = "flex")]
                        Buf::Flex(t) => t.storage_mut::<$elem>(),
                    }
                }

                fn back<B: Backend>(self) -> Tensor<B, 1, $kind> {
                    match self {
                        Buf::Nd(a) => $back::<B>(Box::new(NdArrayTensor::from(a))),
                        #[cfg(feature = "flex")]
                        Buf::Flex(t) => $back::<B>(Box::new(t)),
                    }
                }
            }
        };
    }

    /// Buffers of at least this many bytes are re-homed ([`Buf::rehome`]).
    const REHOME_MIN: usize = 16 << 20;
    const HUGE_PAGE: usize = 2 << 20;

    impl<T: Copy + Default> Buf<T> {
        /// Move a large, uniquely owned ndarray buffer (once) into memory whose 2 MiB-aligned
        /// interior is advised for huge pages ([`super::advise_huge_pages`]) before it is first
        /// touched, so the step streams through 2 MiB pages from its first call instead of
        /// whenever `khugepaged` gets to them. The array's data then starts on a 2 MiB
        /// boundary (a view into a `Vec` up to 2 MiB longer: < 12.5% at the 16 MiB threshold,
        /// < 1% from 256 MiB), which is how an already re-homed buffer is recognised: the next
        /// steps cost one pointer check. burn-ndarray honours the view's offset everywhere
        /// (`into_data` drains it). One copy per buffer, on its first fused step; flex buffers
        /// and small ones are left as they are.
        fn rehome(&mut self) {
            #[allow(irrefutable_let_patterns)]
            let Buf::Nd(a) = self else { return };
            let n = a.len();
            let start = a.as_ptr() as usize;
            if size_of::<T>() * n < REHOME_MIN || start.is_multiple_of(HUGE_PAGE) {
                return;
            }
            let Some(src) = a.as_slice() else { return };
            let pad = HUGE_PAGE / size_of::<T>();
            let mut v: Vec<T> = Vec::with_capacity(n + pad);
            let base = v.as_ptr() as usize;
            let k = (base.next_multiple_of(HUGE_PAGE) - base) / size_of::<T>();
            super::advise_huge_pages(v.spare_capacity_mut());
            v.resize(k, T::default());
            v.extend_from_slice(src);
            let Ok(mut b) = SharedArray::<T>::from_shape_vec(vec![k + n], v) else {
                return;
            };
            b.slice_axis_inplace(ndarray::Axis(0), ndarray::Slice::from(k..k + n));
            if b.is_standard_layout() && b.len() == n {
                *a = b;
            }
        }
    }

    #[cfg(test)]
    // `Buf` has one variant unless the `flex` feature is on
    #[allow(irrefutable_let_patterns)]
    mod rehome_tests {
        use super::*;

        #[test]
        fn rehome_moves_a_large_buffer_to_a_2mib_boundary_once_and_keeps_it() {
            let n = REHOME_MIN / 4 + 3;
            let data: Vec<f32> = (0..n).map(|i| i as f32 * 0.5).collect();
            let arr = SharedArray::<f32>::from_shape_vec(vec![n], data.clone()).unwrap();
            let mut b = Buf::Nd(arr);
            b.rehome();
            let Buf::Nd(a) = &b else {
                panic!("ndarray buffer")
            };
            let at = a.as_ptr() as usize;
            assert_eq!(at % HUGE_PAGE, 0, "data starts on a 2 MiB boundary");
            assert_eq!(a.shape(), &[n]);
            assert!(a.is_standard_layout());
            assert!(
                a.as_slice().unwrap() == &data[..],
                "contents moved unchanged"
            );
            // A second call recognises it and does not move it again.
            b.rehome();
            let Buf::Nd(a) = &b else {
                panic!("ndarray buffer")
            };
            assert_eq!(a.as_ptr() as usize, at);
            // Through burn: the tensor's data is exactly the view (the offset is drained).
            let t: Tensor<burn::backend::NdArray<f32>, 1> = b.back();
            assert!(t.into_data().to_vec::<f32>().unwrap() == data);
            // Small buffers stay where they are.
            let small = SharedArray::<f32>::from_shape_vec(vec![1000], vec![1.0; 1000]).unwrap();
            let p = small.as_ptr();
            let mut b = Buf::Nd(small);
            b.rehome();
            let Buf::Nd(a) = &b else {
                panic!("ndarray buffer")
            };
            assert_eq!(a.as_ptr(), p);
        }
    }

    buf_impl!(
        f32,
        burn::tensor::Float,
        F32,
        burn::tensor::DType::F32,
        float_any,
        float_back
    );
    buf_impl!(
        u8,
        Int,
        U8,
        burn::tensor::DType::U8,
        |t: Tensor<B, 1, Int>| -> Result<Box<dyn Any>, Tensor<B, 1, Int>> {
            Ok(Box::new(t.into_primitive()))
        },
        int_back
    );

    /// A gradient borrowed for reading (never copied).
    pub(super) enum View {
        Nd(NdArrayTensor),
        #[cfg(feature = "flex")]
        Flex(FlexTensor),
    }

    impl View {
        /// The f32 tensor behind `t` with a plain contiguous layout, or `t` back.
        #[allow(clippy::result_large_err)]
        fn peek<B: Backend>(t: Tensor<B, 1>) -> Result<Self, Tensor<B, 1>> {
            let any = float_any(t)?;
            let any = match any.downcast::<NdArrayTensor>() {
                Ok(nd) => {
                    return match *nd {
                        NdArrayTensor::F32(s) if s.view().is_standard_layout() => {
                            Ok(View::Nd(NdArrayTensor::F32(s)))
                        }
                        other => Err(float_back::<B>(Box::new(other))),
                    };
                }
                Err(any) => any,
            };
            #[cfg(feature = "flex")]
            let any = match any.downcast::<FlexTensor>() {
                Ok(ft) if flex_plain(&ft, burn::tensor::DType::F32) => return Ok(View::Flex(*ft)),
                Ok(ft) => return Err(float_back::<B>(ft)),
                Err(any) => any,
            };
            Err(float_back::<B>(any))
        }

        /// Run `f` on the values.
        #[allow(
            clippy::expect_used,
            clippy::unreachable,
            reason = "invariant: `peek` keeps only standard-layout f32 views"
        )]
        fn with<R>(&self, f: impl FnOnce(&[f32]) -> R) -> R {
            match self {
                View::Nd(NdArrayTensor::F32(s)) => {
                    let v = s.view();
                    f(v.as_slice().expect("standard layout checked in peek"))
                }
                View::Nd(_) => unreachable!("peek only keeps f32 tensors"),
                #[cfg(feature = "flex")]
                View::Flex(t) => f(t.storage::<f32>()),
            }
        }

        fn back<B: Backend>(self) -> Tensor<B, 1> {
            match self {
                View::Nd(nd) => float_back::<B>(Box::new(nd)),
                #[cfg(feature = "flex")]
                View::Flex(t) => float_back::<B>(Box::new(t)),
            }
        }
    }

    pub(super) fn readable<B: Backend>(t: &Tensor<B, 1>) -> bool {
        View::peek(t.clone()).is_ok()
    }

    /// [`super::scale`] on a CPU buffer (in place when unique), or `t` back.
    #[allow(clippy::result_large_err)]
    pub(super) fn scale<B: Backend>(t: Tensor<B, 1>, c: f32) -> Result<Tensor<B, 1>, Tensor<B, 1>> {
        let mut buf = Buf::<f32>::take_with(t, false)?;
        let xs = buf.slice_mut();
        let chunk = chunk_len(xs.len());
        if chunk >= xs.len() {
            simd(
                #[inline(always)]
                || scale_slice(xs, c),
            );
        } else {
            run_jobs(
                xs.chunks_mut(chunk).collect(),
                #[inline(always)]
                |x| {
                    scale_slice(x, c);
                    0
                },
            );
        }
        Ok(buf.back())
    }

    #[inline(always)]
    fn scale_slice(xs: &mut [f32], c: f32) {
        for x in xs {
            *x *= c;
        }
    }

    pub(super) fn sum_squares<B: Backend>(t: &Tensor<B, 1>) -> Option<f64> {
        let view = View::peek(t.clone()).ok()?;
        Some(view.with(sum_squares_slice))
    }

    /// Elements per block of [`sumsq_fold`]: eight f32 lanes each, block totals in f64.
    const SUMSQ_BLOCK: usize = 256;

    /// `acc` plus `Σ x²` of `c`, block by block: eight f32 lanes per block of
    /// [`SUMSQ_BLOCK`] (vectorizes), each block's total added to `acc` in f64, in order. A
    /// block whose f32 sum overflows gives +Inf; the engine then tells overflow from NaN/Inf
    /// gradients itself. Folding a slice in pieces that are whole blocks gives the same bits
    /// as folding it at once (the in-pass measurement relies on it).
    #[inline(always)]
    fn sumsq_fold(acc: f64, c: &[f32]) -> f64 {
        c.chunks(SUMSQ_BLOCK).fold(acc, |total, b| {
            let mut lanes_acc = [0.0f32; 8];
            let (lanes, tail) = b.as_chunks::<8>();
            for l in lanes {
                for (a, x) in lanes_acc.iter_mut().zip(l) {
                    *a += x * x;
                }
            }
            // An identity, as far as the numbers go. Without it LLVM's SLP vectorizer shaped
            // the accumulator after the f64 reduction below and split it into 2 + 4 + 1 + 1
            // lanes (scalar loads and multiplies in the hot loop, ~20% of an in-cache AdamW
            // step); behind the barrier the loop is one 8-wide multiply-add per 8 elements.
            // Same lanes, same order: the same bits.
            let lanes_acc = std::hint::black_box(lanes_acc);
            let tail: f32 = tail.iter().map(|x| x * x).sum();
            total + (lanes_acc.iter().map(|a| f64::from(*a)).sum::<f64>() + f64::from(tail))
        })
    }

    /// The chunk length the CPU passes split `n` elements into (one chunk per thread): whole
    /// [`MEASURE_BLOCK`]s, so `Σ g²` has the same blocks whatever the thread count.
    fn chunk_len(n: usize) -> usize {
        let nt = threads().min(n.div_ceil(PARALLEL_MIN)).max(1);
        // (at least one block: an empty tensor is one empty chunk)
        n.div_ceil(nt)
            .next_multiple_of(MEASURE_BLOCK)
            .max(MEASURE_BLOCK)
    }

    /// `Σ x²` of `c` per [`MEASURE_BLOCK`] (each by [`sumsq_fold`] from 0) into `out`, one
    /// slot per block.
    #[inline(always)]
    fn sumsq_blocks(c: &[f32], out: &mut [f64]) {
        for (b, o) in c.chunks(MEASURE_BLOCK).zip(out.iter_mut()) {
            *o = sumsq_fold(0.0, b);
        }
    }

    /// The total of per-block sums: added in block order, so neither the thread count nor
    /// the chunking changes a bit of it (tests/fused_props.rs).
    fn total_of_blocks(blocks: &[f64]) -> f64 {
        blocks.iter().fold(0.0, |total, s| total + s)
    }

    fn sum_squares_slice(xs: &[f32]) -> f64 {
        let mut blocks = vec![0.0f64; xs.len().div_ceil(MEASURE_BLOCK)];
        let chunk = chunk_len(xs.len());
        if chunk >= xs.len() {
            // At the widest SIMD level (same lanes, same order: the same bits).
            simd(
                #[inline(always)]
                || sumsq_blocks(xs, &mut blocks),
            );
        } else {
            let jobs: Vec<_> = xs
                .chunks(chunk)
                .zip(blocks.chunks_mut(chunk / MEASURE_BLOCK))
                .collect();
            run_jobs(
                jobs,
                // Inlined into `run_jobs`' SIMD wrapper (out of line it was baseline SSE2).
                #[inline(always)]
                |(c, out)| {
                    sumsq_blocks(c, out);
                    0
                },
            );
        }
        total_of_blocks(&blocks)
    }

    /// The parameter's buffer (taken) and the gradient's (borrowed), or both tensors back.
    #[allow(clippy::result_large_err, clippy::type_complexity)]
    fn take_param_grad<B: Backend>(
        param: Tensor<B, 1>,
        grad: Tensor<B, 1>,
    ) -> Result<(Buf<f32>, View), (Tensor<B, 1>, Tensor<B, 1>)> {
        let p = match Buf::<f32>::take(param) {
            Ok(a) => a,
            Err(p) => return Err((p, grad)),
        };
        // The gradient is only read: borrow its buffer (no copy even when shared).
        match View::peek(grad) {
            Ok(g) => Ok((p, g)),
            Err(g) => Err((p.back(), g)),
        }
    }

    /// The buffers of `st`'s first `k` float tensors, or `None` with `st` as it was.
    fn take_floats<B: Backend>(st: &mut TransformState<B>, k: usize) -> Option<Vec<Buf<f32>>> {
        let mut out = Vec::with_capacity(k);
        for i in 0..k {
            let empty = Tensor::<B, 1>::zeros([0], &Default::default());
            match Buf::<f32>::take(std::mem::replace(&mut st.tensors[i].tensor, empty)) {
                Ok(a) => out.push(a),
                Err(t) => {
                    st.tensors[i].tensor = t;
                    put_floats(st, out);
                    return None;
                }
            }
        }
        Some(out)
    }

    /// Put buffers taken by [`take_floats`] back.
    fn put_floats<B: Backend>(st: &mut TransformState<B>, bufs: Vec<Buf<f32>>) {
        for (i, a) in bufs.into_iter().enumerate() {
            st.tensors[i].tensor = a.back();
        }
    }

    /// The worker threads of the CPU passes: `threads() − 1` of them (the calling thread is the
    /// last one), started once and kept — starting and joining a scoped thread costs ~33 µs
    /// here, twice per step (scan and kernel), ~15% of an AdamW step at 1M elements. Rebuilt
    /// when [`super::set_threads`] changes the count; `None` if the OS refuses the threads.
    fn pool(workers: usize) -> Option<Arc<rayon::ThreadPool>> {
        static POOL: Mutex<Option<(usize, Arc<rayon::ThreadPool>)>> = Mutex::new(None);
        let mut held = POOL.lock().ok()?;
        if held.as_ref().map(|(k, _)| *k) != Some(workers) {
            let built = rayon::ThreadPoolBuilder::new()
                .num_threads(workers)
                .thread_name(|i| format!("moment-cpu-{i}"))
                .build()
                .ok()?;
            *held = Some((workers, Arc::new(built)));
        }
        held.as_ref().map(|(_, p)| Arc::clone(p))
    }

    /// Run `jobs` on the [`pool`]'s threads and this one, each at the widest SIMD level
    /// ([`simd`]); whoever takes a job runs it — this thread runs the first and any job no
    /// worker has started (so a missing pool only costs speed). Returns the sum of `run`'s
    /// results.
    fn run_jobs<J: Send>(jobs: Vec<J>, run: impl Fn(J) -> u64 + Sync) -> u64 {
        let jobs: Vec<Mutex<Option<J>>> = jobs.into_iter().map(|j| Mutex::new(Some(j))).collect();
        let total = AtomicU64::new(0);
        let take_and_run = |job: &Mutex<Option<J>>| {
            if let Some(j) = job.lock().ok().and_then(|mut j| j.take()) {
                total.fetch_add(
                    simd(
                        #[inline(always)]
                        || run(j),
                    ),
                    Ordering::Relaxed,
                );
            }
        };
        let pool = if jobs.len() > 1 {
            pool(threads().saturating_sub(1).max(1))
        } else {
            None
        };
        match pool {
            Some(pool) => pool.in_place_scope(|scope| {
                for job in jobs.iter().skip(1) {
                    let take_and_run = &take_and_run;
                    scope.spawn(move |_| take_and_run(job));
                }
                for job in &jobs {
                    take_and_run(job);
                }
            }),
            None => jobs.iter().for_each(take_and_run),
        }
        total.into_inner()
    }

    /// Elements per kernel call when the pass also measures `Σ g²`: the gradient's block is
    /// summed right before the kernel reads it again from L1 (16 KiB), so memory sees one read.
    /// A multiple of [`SUMSQ_BLOCK`].
    const MEASURE_BLOCK: usize = 16 * SUMSQ_BLOCK;

    /// `k.run` at the CPU's widest SIMD level ([`simd`]); with `sumsq`, the chunk's `Σ g²`
    /// per [`MEASURE_BLOCK`] as [`sumsq_blocks`] gives it (of the gradient as given), measured
    /// block by block in the same pass; with `scale`, the kernel reads each block of the
    /// gradient multiplied by it (one f32 multiply per element, into an L1-resident scratch
    /// block: the bits of `mul_scalar`, without writing a scaled gradient to memory).
    fn run_best<K: Kernel>(
        k: &K,
        p: &mut [f32],
        g: &[f32],
        s: &mut [&mut [f32]],
        sumsq: Option<&mut [f64]>,
        scale: Option<f32>,
    ) -> u64 {
        if sumsq.is_none() && scale.is_none() {
            return simd(
                #[inline(always)]
                || k.run(p, g, s),
            );
        }
        simd(
            #[inline(always)]
            || {
                let mut count = 0u64;
                let mut sums = sumsq.map(|o| o.iter_mut());
                let mut scratch = [0.0f32; MEASURE_BLOCK];
                let mut rest: Vec<&mut [f32]> = s.iter_mut().map(std::mem::take).collect();
                let mut cur: Vec<&mut [f32]> = Vec::with_capacity(rest.len());
                for (pb, gb) in p.chunks_mut(MEASURE_BLOCK).zip(g.chunks(MEASURE_BLOCK)) {
                    if let Some(total) = sums.as_mut().and_then(Iterator::next) {
                        *total = sumsq_fold(0.0, gb);
                    }
                    cur.clear();
                    for r in rest.iter_mut() {
                        let (head, tail) = std::mem::take(r).split_at_mut(gb.len());
                        cur.push(head);
                        *r = tail;
                    }
                    count += match scale {
                        Some(c) => {
                            let sb = &mut scratch[..gb.len()];
                            for (x, y) in sb.iter_mut().zip(gb) {
                                *x = y * c;
                            }
                            k.run(pb, sb, &mut cur)
                        }
                        None => k.run(pb, gb, &mut cur),
                    };
                }
                count
            },
        )
    }

    /// `f()` compiled for the SIMD level [`crate::simd_level`] gives (the CPU's widest —
    /// AVX-512F, else AVX2, else the baseline — capped by `MOMENT_SIMD`). The kernels' loops are plain Rust that LLVM vectorizes; inlined here they get
    /// 16- or 8-wide `sqrt`/`div`/loads — the same IEEE operations in the same order and no
    /// FMA contraction, so results are bitwise those of the baseline build (tested: fused ≡
    /// composed). Wider vectors matter even for the memory-bound steps: fewer instructions per
    /// byte keep more loads in flight (AdamW at 16M on a 2-core AMD EPYC: 9.9 ms AVX2 → 8.6 ms
    /// AVX-512; docs/benchmarks.md).
    #[inline(always)]
    fn simd<R>(f: impl FnOnce() -> R) -> R {
        #[cfg(target_arch = "x86_64")]
        {
            match crate::simd_level() {
                // SAFETY: `simd_level` never exceeds what the CPU supports, so the CPU has
                // AVX-512F: the only requirement of a `#[target_feature(enable = "avx512f")]`
                // function.
                #[allow(unsafe_code)]
                crate::SimdLevel::Avx512 => return unsafe { on_avx512(f) },
                // SAFETY: as above, for AVX2.
                #[allow(unsafe_code)]
                crate::SimdLevel::Avx2 => return unsafe { on_avx2(f) },
                crate::SimdLevel::Baseline => {}
            }
        }
        f()
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn on_avx512<R>(f: impl FnOnce() -> R) -> R {
        f()
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    #[inline]
    fn on_avx2<R>(f: impl FnOnce() -> R) -> R {
        f()
    }

    /// The one-pass driver: check that `st`'s first tensors are `names` with the parameter's
    /// length, take the parameter and those state buffers out (no copy when uniquely owned),
    /// borrow the gradient's, call `make` (which may advance counters and gives the kernel; only
    /// reached when nothing can fail any more), run the kernel over contiguous chunks on scoped
    /// threads and put everything back. Returns the new parameter and the kernel's count, or the
    /// inputs unchanged (and `st` untouched) when the backend, dtype or layout does not fit.
    /// With `measure`, also the gradient's `Σ g²`, bitwise as [`sum_squares`] gives it (same
    /// chunks, same blocks, same order), read in the same pass.
    #[allow(clippy::result_large_err, clippy::type_complexity)]
    pub(super) fn one_pass<B: Backend, K: Kernel>(
        param: Tensor<B, 1>,
        grad: Tensor<B, 1>,
        st: &mut TransformState<B>,
        names: &[&str],
        pass: super::Pass,
        make: impl FnOnce(&mut TransformState<B>) -> K,
    ) -> Result<(Tensor<B, 1>, u64, Option<f64>), (Tensor<B, 1>, Tensor<B, 1>)> {
        let n = param.dims()[0];
        let k = names.len();
        let layout_ok = st.tensors.len() >= k
            && st
                .tensors
                .iter()
                .zip(names)
                .all(|(t, name)| t.name == *name)
            && st.tensors[..k].iter().all(|t| t.tensor.dims()[0] == n);
        if !layout_ok || grad.dims()[0] != n {
            return Err((param, grad));
        }
        let (mut p, g) = take_param_grad(param, grad)?;
        let Some(mut streams) = take_floats(st, k) else {
            return Err((p.back(), g.back()));
        };
        let kernel = make(st);
        let measure = pass.measure;
        // Σ g² per MEASURE_BLOCK (when measuring), as `sum_squares_slice` gives it.
        let mut sums = vec![
            0.0f64;
            if measure {
                n.div_ceil(MEASURE_BLOCK)
            } else {
                0
            }
        ];
        let count = g.with(|gs| {
            let ps = p.slice_mut();
            let mut ss: Vec<&mut [f32]> = streams.iter_mut().map(Buf::<f32>::slice_mut).collect();
            let chunk = chunk_len(n);
            let nt = n.div_ceil(chunk).max(1);
            if nt <= 1 {
                let out = measure.then_some(sums.as_mut_slice());
                run_best(&kernel, ps, gs, &mut ss, out, pass.scale)
            } else {
                let kernel = &kernel;
                let mut per_job: Vec<Vec<&mut [f32]>> = (0..nt).map(|_| Vec::new()).collect();
                for s in ss {
                    for (j, c) in s.chunks_mut(chunk).enumerate() {
                        per_job[j].push(c);
                    }
                }
                let mut outs: Vec<&mut [f64]> = sums.chunks_mut(chunk / MEASURE_BLOCK).collect();
                outs.resize_with(nt, Default::default);
                let jobs: Vec<Job<'_>> = ps
                    .chunks_mut(chunk)
                    .zip(gs.chunks(chunk))
                    .zip(per_job)
                    .zip(outs)
                    .map(|(((p, g), s), out)| (p, g, s, out))
                    .collect();
                run_jobs(jobs, |(p, g, mut s, out)| {
                    run_best(kernel, p, g, &mut s, measure.then_some(out), pass.scale)
                })
            }
        });
        put_floats(st, streams);
        drop(g);
        let sumsq = measure.then(|| total_of_blocks(&sums));
        Ok((p.back(), count, sumsq))
    }

    /// One thread's share of an 8-bit step: whole blocks of the parameter `p`, its gradient
    /// `g`, both moments' codes and one max-abs per block (`a1`, `a2`).
    struct Blocks8<'a> {
        p: &'a mut [f32],
        g: &'a [f32],
        c1: &'a mut [u8],
        c2: &'a mut [u8],
        a1: &'a mut [f32],
        a2: &'a mut [f32],
    }

    /// How a block's codes become values: `out[i] = table[codes[i]] · scale`.
    trait DecodeCodes: Copy {
        fn decode(self, table: &[f32; 256], codes: &[u8], scale: f32, out: &mut [f32]);
    }

    /// One table load per code.
    #[derive(Clone, Copy)]
    struct LoadDecode;

    impl DecodeCodes for LoadDecode {
        #[inline(always)]
        fn decode(self, table: &[f32; 256], codes: &[u8], scale: f32, out: &mut [f32]) {
            for (o, &k) in out.iter_mut().zip(codes) {
                *o = table[k as usize] * scale;
            }
        }
    }

    /// The table held in 16 AVX-512 registers, 16 codes at a time: eight two-register
    /// permutes pick by the low 5 bits, three rounds of blends by bits 5–7 (LLVM leaves the
    /// table loads scalar; 0.19 vs 0.36 ns per code here). Exists only where the CPU has
    /// AVX-512F.
    #[cfg(target_arch = "x86_64")]
    #[derive(Clone, Copy)]
    struct PermuteDecode(());

    #[cfg(target_arch = "x86_64")]
    impl PermuteDecode {
        fn detect() -> Option<Self> {
            (crate::simd_level() == crate::SimdLevel::Avx512).then_some(Self(()))
        }
    }

    #[cfg(target_arch = "x86_64")]
    impl DecodeCodes for PermuteDecode {
        #[inline(always)]
        fn decode(self, table: &[f32; 256], codes: &[u8], scale: f32, out: &mut [f32]) {
            // SAFETY: a `PermuteDecode` is only made where the CPU has AVX-512F.
            #[allow(unsafe_code)]
            unsafe {
                decode_permute(table, codes, scale, out);
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn decode_permute(table: &[f32; 256], codes: &[u8], scale: f32, out: &mut [f32]) {
        use std::arch::x86_64::{
            __m128i, _mm_loadu_si128, _mm512_cvtepu8_epi32, _mm512_loadu_ps, _mm512_mask_blend_ps,
            _mm512_mul_ps, _mm512_permutex2var_ps, _mm512_set1_epi32, _mm512_set1_ps,
            _mm512_storeu_ps, _mm512_test_epi32_mask,
        };
        let n = codes.len().min(out.len());
        let (head, tail) = (n / 16 * 16, n % 16);
        let rows = table.as_chunks::<16>().0;
        // SAFETY: every load reads 64 bytes of one 16-float row of `table`; the code loads read
        // `codes[i..i + 16]` and the stores write `out[i..i + 16]` with `i + 16 <= n`.
        #[allow(unsafe_code)]
        unsafe {
            let t: [_; 16] = std::array::from_fn(|r| _mm512_loadu_ps(rows[r].as_ptr()));
            let s = _mm512_set1_ps(scale);
            let bit = |b: i32| _mm512_set1_epi32(1 << b);
            let (b5, b6, b7) = (bit(5), bit(6), bit(7));
            for i in (0..head).step_by(16) {
                let k =
                    _mm512_cvtepu8_epi32(_mm_loadu_si128(codes.as_ptr().add(i).cast::<__m128i>()));
                let pick = |r: usize| _mm512_permutex2var_ps(t[2 * r], k, t[2 * r + 1]);
                let (m5, m6, m7) = (
                    _mm512_test_epi32_mask(k, b5),
                    _mm512_test_epi32_mask(k, b6),
                    _mm512_test_epi32_mask(k, b7),
                );
                let q: [_; 4] =
                    std::array::from_fn(|r| _mm512_mask_blend_ps(m5, pick(2 * r), pick(2 * r + 1)));
                let lo = _mm512_mask_blend_ps(m6, q[0], q[1]);
                let hi = _mm512_mask_blend_ps(m6, q[2], q[3]);
                let v = _mm512_mul_ps(_mm512_mask_blend_ps(m7, lo, hi), s);
                _mm512_storeu_ps(out.as_mut_ptr().add(i), v);
            }
        }
        LoadDecode.decode(table, &codes[head..n], scale, &mut out[head..head + tail]);
    }

    impl Adam8Scalars {
        /// Whole blocks, compiled for the widest SIMD level the CPU has (the same IEEE
        /// operations in the same order, no FMA contraction): AVX-512F with the table loads as
        /// gathers and permutes (16M, 2 threads: 43 → 27 ms), else AVX2, else the baseline.
        fn blocks_best(&self, b: Blocks8<'_>) {
            // The slices travel as separate arguments from here on: as function arguments they
            // are known not to alias (as fields of a struct they are not, and LLVM left the
            // encoding loop scalar).
            let Blocks8 {
                p,
                g,
                c1,
                c2,
                a1,
                a2,
            } = b;
            let b = (p, g, c1, c2, a1, a2);
            #[cfg(target_arch = "x86_64")]
            {
                if let Some(d) = PermuteDecode::detect() {
                    // SAFETY: the CPU supports AVX-512F (a `PermuteDecode` exists), the only
                    // requirement of calling a `#[target_feature(enable = "avx512f")]` function.
                    #[allow(unsafe_code)]
                    return unsafe { self.blocks_avx512(b.0, b.1, b.2, b.3, b.4, b.5, d) };
                }
                if crate::simd_level() >= crate::SimdLevel::Avx2 {
                    // SAFETY: the CPU supports AVX2 (`simd_level` never exceeds what it has),
                    // the only requirement of calling a `#[target_feature(enable = "avx2")]`
                    // function.
                    #[allow(unsafe_code)]
                    return unsafe { self.blocks_avx2(b.0, b.1, b.2, b.3, b.4, b.5) };
                }
            }
            self.blocks(b.0, b.1, b.2, b.3, b.4, b.5, LoadDecode)
        }

        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f")]
        #[inline(never)]
        #[allow(clippy::too_many_arguments)]
        fn blocks_avx512(
            &self,
            p: &mut [f32],
            g: &[f32],
            c1: &mut [u8],
            c2: &mut [u8],
            a1: &mut [f32],
            a2: &mut [f32],
            d: PermuteDecode,
        ) {
            self.blocks(p, g, c1, c2, a1, a2, d)
        }

        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2")]
        #[inline(never)]
        fn blocks_avx2(
            &self,
            p: &mut [f32],
            g: &[f32],
            c1: &mut [u8],
            c2: &mut [u8],
            a1: &mut [f32],
            a2: &mut [f32],
        ) {
            self.blocks(p, g, c1, c2, a1, a2, LoadDecode)
        }

        /// Per block, passes over data that stays in L1: decode both moments (table lookups),
        /// update moments and parameter (branch-free, vectorizes), the new max-abs, encode
        /// (bucket-table lookups, branch-free).
        #[inline(always)]
        #[allow(clippy::too_many_arguments)]
        fn blocks(
            &self,
            ps: &mut [f32],
            gs: &[f32],
            c1: &mut [u8],
            c2: &mut [u8],
            a1: &mut [f32],
            a2: &mut [f32],
            decode: impl DecodeCodes,
        ) {
            use crate::quant::{NearestCoder, QuantMap};
            let (map1, map2) = (QuantMap::dynamic_signed(), QuantMap::dynamic_unsigned());
            let (v1, v2) = (map1.values(), map2.values());
            let (q1, q2) = (map1.coder(), map2.coder());
            #[allow(
                clippy::unreachable,
                reason = "invariant: the dynamic signed map holds 0"
            )]
            let Some(limit1) = q1.negative_limit() else {
                unreachable!("the dynamic signed map holds 0 after its negative values")
            };
            let mut mb = vec![0.0f32; self.block];
            let mut vb = vec![0.0f32; self.block];
            let it = ps
                .chunks_mut(self.block)
                .zip(gs.chunks(self.block))
                .zip(c1.chunks_mut(self.block))
                .zip(c2.chunks_mut(self.block))
                .zip(a1.iter_mut().zip(a2.iter_mut()));
            for ((((p, g), c1), c2), (a1, a2)) in it {
                let (mb, vb) = (&mut mb[..p.len()], &mut vb[..p.len()]);
                let (old1, old2) = (*a1, *a2);
                decode.decode(v1, c1, old1, mb);
                decode.decode(v2, c2, old2, vb);
                let (n1, n2) = self.update(p, g, mb, vb);
                *a1 = n1;
                *a2 = n2;
                // Encoding as `NearestCoder::encode` does it, branch-free (the table loads
                // become gathers): normalise, bucket, one entry per code, the sign fix (of the
                // unquantized value, −0.0 included). A block that met a slow entry (a NaN
                // moment) is encoded again the scalar way.
                // The zero of an all-zero block keeps the value's sign, so `y1` has `m`'s and
                // the sign fix is one `min` (`code_keep_sign`).
                let norm1 = |m: f32, a: f32| if a > 0.0 { m / a } else { 0.0f32.copysign(m) };
                let norm2 = |v: f32, a: f32| if a > 0.0 { v / a } else { 0.0 };
                let mut slow = 0u32;
                for (((k1, k2), &m), &v) in c1.iter_mut().zip(c2.iter_mut()).zip(&*mb).zip(&*vb) {
                    let (y1, y2) = (norm1(m, n1), norm2(v, n2));
                    let e1 = q1.entry(NearestCoder::bucket(y1));
                    let e2 = q2.entry(NearestCoder::bucket(y2));
                    slow |= e1 | e2;
                    *k1 = NearestCoder::code_keep_sign(e1, y1, limit1);
                    *k2 = NearestCoder::code_from(e2, y2);
                }
                if NearestCoder::is_slow(slow) {
                    for (((k1, k2), &m), &v) in c1.iter_mut().zip(c2.iter_mut()).zip(&*mb).zip(&*vb)
                    {
                        *k1 = q1.encode(m, n1, true);
                        *k2 = q2.encode(v, n2, false);
                    }
                }
            }
        }

        /// The element-wise update of one block: `m`/`v` hold the decoded moments and get the
        /// new ones; returns their max-abs ignoring NaN (as `block_absmax`), taken in a second
        /// pass over the block (in L1; kept per lane in registers — folded into the update
        /// loop, the lane maxima went through masked stores to the stack, ~13% of the step).
        #[inline(always)]
        fn update(&self, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) -> (f32, f32) {
            for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                let skip = !g.is_finite();
                let g = if skip { 0.0 } else { g };
                let (mut mn, mut vn) = (
                    *m * self.b1 + g * self.one_minus_b1,
                    *v * self.b2 + g * self.one_minus_b2 * g,
                );
                if skip {
                    (mn, vn) = (0.0, 0.0);
                }
                let delta = mn / (vn.sqrt() + self.eps_c2) * self.step_size;
                #[allow(clippy::neg_multiply)]
                let mut descent = match self.keep {
                    Some(keep) => *p - (*p + delta) * keep,
                    None => delta * -1.0,
                };
                if skip {
                    descent = 0.0;
                }
                #[allow(clippy::neg_multiply)]
                {
                    *p += descent * -1.0;
                }
                *m = mn;
                *v = vn;
            }
            (max_abs(m), max_abs(v))
        }
    }

    /// `max |x|` ignoring NaN (0 for an empty or all-NaN slice), in 16 lanes: `a > x ? a : x`
    /// ignores a NaN `a`, like `f32::max`, and is one `maxps` (max is exact, so the lane order
    /// does not matter).
    #[inline(always)]
    fn max_abs(x: &[f32]) -> f32 {
        const L: usize = 16;
        let keep = |acc: f32, a: f32| if a > acc { a } else { acc };
        let mut lanes = [0.0f32; L];
        let chunks = x.chunks_exact(L);
        let tail = chunks.remainder();
        for c in chunks {
            for j in 0..L {
                lanes[j] = keep(lanes[j], c[j].abs());
            }
        }
        let head = lanes.iter().fold(0.0f32, |a, &b| keep(a, b));
        tail.iter().fold(head, |a, &b| keep(a, b.abs()))
    }

    /// [`super::FusedAdam8bit`] on ndarray: everything taken out of the tensors, blocks split
    /// over threads, put back.
    #[allow(clippy::result_large_err, clippy::type_complexity)]
    pub(super) fn adam8bit<B: Backend>(
        fused: &super::FusedAdam8bit,
        lr: f64,
        param: Tensor<B, 1>,
        grad: Tensor<B, 1>,
        st: &mut TransformState<B>,
    ) -> Result<Tensor<B, 1>, (Tensor<B, 1>, Tensor<B, 1>)> {
        // Layout checked by the caller.
        let n = param.dims()[0];
        let block = fused.transform.block_size;
        let nb = crate::quant::num_blocks(n, block);
        let (mut p, g) = take_param_grad(param, grad)?;
        let Some(mut absmax) = take_floats(st, 2) else {
            return Err((p.back(), g.back()));
        };
        let mut codes: Vec<Buf<u8>> = Vec::with_capacity(2);
        for i in 0..2 {
            let empty = Tensor::<B, 1, Int>::zeros([0], &Default::default());
            match Buf::<u8>::take(std::mem::replace(&mut st.codes[i].tensor, empty)) {
                Ok(a) => codes.push(a),
                Err(x) => {
                    st.codes[i].tensor = x;
                    for (j, a) in codes.into_iter().enumerate() {
                        st.codes[j].tensor = a.back();
                    }
                    put_floats(st, absmax);
                    return Err((p.back(), g.back()));
                }
            }
        }
        // Nothing can fail from here on.
        let step = st.counters[0].1.saturating_add(1);
        st.counters[0].1 = step;
        let sc = fused.scalars(lr, step);
        g.with(|gs| {
            let ps = p.slice_mut();
            #[allow(clippy::unreachable, reason = "invariant: two tensors taken above")]
            let [a1, a2] = &mut absmax[..] else {
                unreachable!("two absmax tensors taken above")
            };
            #[allow(clippy::unreachable, reason = "invariant: two tensors taken above")]
            let [k1, k2] = &mut codes[..] else {
                unreachable!("two code tensors taken above")
            };
            let (a1, a2) = (a1.slice_mut(), a2.slice_mut());
            let (k1, k2) = (k1.slice_mut(), k2.slice_mut());
            let nt = threads().min(n.div_ceil(PARALLEL_MIN)).max(1);
            if nt <= 1 {
                sc.blocks_best(Blocks8 {
                    p: ps,
                    g: gs,
                    c1: k1,
                    c2: k2,
                    a1,
                    a2,
                });
            } else {
                let per = nb.div_ceil(nt);
                let chunk = per * block;
                let sc = &sc;
                let jobs: Vec<Blocks8<'_>> = ps
                    .chunks_mut(chunk)
                    .zip(gs.chunks(chunk))
                    .zip(k1.chunks_mut(chunk))
                    .zip(k2.chunks_mut(chunk))
                    .zip(a1.chunks_mut(per).zip(a2.chunks_mut(per)))
                    .map(|((((p, g), c1), c2), (a1, a2))| Blocks8 {
                        p,
                        g,
                        c1,
                        c2,
                        a1,
                        a2,
                    })
                    .collect();
                run_jobs(jobs, |b| {
                    sc.blocks_best(b);
                    0
                });
            }
        });
        put_floats(st, absmax);
        for (i, a) in codes.into_iter().enumerate() {
            st.codes[i].tensor = a.back();
        }
        drop(g);
        Ok(p.back())
    }

    /// `Σ f(a_i, b_i)` in 16 f32 lanes (vectorizes), the lanes added in f64.
    #[inline(always)]
    fn lane_sum(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> f64 {
        let mut acc = [0.0f32; 16];
        let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
        let (ra, rb) = (ca.remainder(), cb.remainder());
        for (x, y) in ca.zip(cb) {
            for k in 0..16 {
                acc[k] += f(x[k], y[k]);
            }
        }
        let tail: f32 = ra.iter().zip(rb).map(|(&x, &y)| f(x, y)).sum();
        acc.iter().map(|&a| f64::from(a)).sum::<f64>() + f64::from(tail)
    }

    /// One row of Adafactor's statistics: adds `(g·sign)² + add` to the column sums `cols`
    /// (f64) and returns the row's sum ([`lane_sum`]). A function with a `&mut` argument, so
    /// the column sums are known not to alias anything else (vectorizes).
    #[inline(always)]
    fn col_sum_row(cols: &mut [f64], g: &[f32], sign: f32, add: f32) -> f64 {
        let u = |gv: f32| {
            let gv = gv * sign;
            gv * gv + add
        };
        for (cs, &gv) in cols.iter_mut().zip(g) {
            *cs += f64::from(u(gv));
        }
        lane_sum(g, g, |gv, _| u(gv))
    }

    /// Greatest common divisor.
    fn gcd(a: usize, b: usize) -> usize {
        if b == 0 { a } else { gcd(b, a % b) }
    }

    /// The vector form's second-moment update of one row, as the composed chain computes it:
    /// HF `v·β2t + (g² + ε1)·(1 − β2t)`, torch `lerp(v, g², w)`.
    #[derive(Clone, Copy)]
    struct SecondMomentRow {
        sign: f32,
        hf: bool,
        b2t: f32,
        one_minus_b2t: f32,
        eps1: f32,
        w: f32,
    }

    impl SecondMomentRow {
        /// A method with plain-value fields and a `&mut` argument, so LLVM knows the row does
        /// not alias them: as a closure over captured references it reloaded them per element
        /// and stayed scalar (two thirds of the first pass).
        #[inline(always)]
        fn apply(self, v: &mut [f32], g: &[f32]) {
            let Self {
                sign,
                hf,
                b2t,
                one_minus_b2t,
                eps1,
                w,
            } = self;
            if hf {
                for (x, &gv) in v.iter_mut().zip(g) {
                    let gv = gv * sign;
                    *x = *x * b2t + (gv * gv + eps1) * one_minus_b2t;
                }
            } else if w.abs() < 0.5 {
                // `lerp(a, b, w)` as torch computes it, by the side of the smaller weight
                for (x, &gv) in v.iter_mut().zip(g) {
                    let gv = gv * sign;
                    *x += (gv * gv - *x) * w;
                }
            } else {
                for (x, &gv) in v.iter_mut().zip(g) {
                    let gv = gv * sign;
                    let b = gv * gv;
                    *x = b - (b - *x) * (1.0 - w);
                }
            }
        }
    }

    /// What [`adafactor`]'s passes need to scale a row of the gradient.
    #[derive(Clone, Copy)]
    struct AdafactorScales<'a> {
        factored: Option<(usize, usize, usize)>,
        r_dim: usize,
        rowf: &'a [f32],
        colf: &'a [f32],
        norm: &'a [f32],
        hf: bool,
        eps_sq: f32,
    }

    impl AdafactorScales<'_> {
        /// Row `row`'s scales of the update `scale·g` into `out` (factored: from the row and
        /// column factors; full: from the row's slice `v` of the second moment). Always
        /// inlined, so it runs at the SIMD level of the pass (out of line it was compiled for
        /// baseline SSE2: 4-wide `sqrt` and division, about half of the vector form's step).
        #[inline(always)]
        fn fill(&self, row: usize, v: &[f32], out: &mut [f32]) {
            let (hf, eps_sq) = (self.hf, self.eps_sq);
            match self.factored {
                Some((_, _, c)) => {
                    let li = row / self.r_dim;
                    let cf = &self.colf[li * c..(li + 1) * c];
                    let rr = self.rowf[row];
                    if hf {
                        for (o, &x) in out.iter_mut().zip(cf) {
                            *o = rr * x;
                        }
                    } else {
                        let nm = self.norm[li];
                        for (o, &x) in out.iter_mut().zip(cf) {
                            *o = ((rr * x) / nm).max(eps_sq).sqrt().recip();
                        }
                    }
                }
                None => {
                    if hf {
                        for (o, &x) in out.iter_mut().zip(v) {
                            *o = x.sqrt().recip();
                        }
                    } else {
                        for (o, &x) in out.iter_mut().zip(v) {
                            *o = x.max(eps_sq).sqrt().recip();
                        }
                    }
                }
            }
        }
    }

    /// [`super::FusedAdafactor`] on ndarray/flex: everything taken out of the tensors; the
    /// passes run over fixed blocks of whole rows (a factored tensor's rows; 1024-element rows
    /// for a vector) on the worker pool; put back.
    #[allow(clippy::result_large_err, clippy::too_many_lines)]
    pub(super) fn adafactor<B: Backend>(
        fused: &super::FusedAdafactor,
        lr: f64,
        factored: Option<(usize, usize, usize)>,
        param: Tensor<B, 1>,
        grad: Tensor<B, 1>,
        st: &mut TransformState<B>,
    ) -> Result<Tensor<B, 1>, (Tensor<B, 1>, Tensor<B, 1>)> {
        use crate::transforms::AdafactorConvention;
        let t = &fused.transform;
        let n = param.dims()[0];
        let k = st.tensors.len();
        let (mut p, g) = take_param_grad(param, grad)?;
        let Some(mut bufs) = take_floats(st, k) else {
            return Err((p.back(), g.back()));
        };
        // Nothing can fail from here on.
        let step = st.counters[0].1.saturating_add(1);
        st.counters[0].1 = step;
        let tf = step as f64;
        let hf = t.convention == AdafactorConvention::Transformers;
        let one_minus_b2 = tf.powf(t.decay_rate);
        let b2t = 1.0 - one_minus_b2;
        let (b2t32, omb32) = (b2t as f32, (1.0 - b2t) as f32);
        let eps1 = t.eps1 as f32;
        let eps_sq = (t.eps1 * t.eps1) as f32;
        // `lerp(a, b, w)` as the composed chain computes it
        let w32 = one_minus_b2 as f32;
        let lerp = |a: f32, b: f32| {
            if w32.abs() < 0.5 {
                a + (b - a) * w32
            } else {
                b - (b - a) * (1.0 - w32)
            }
        };
        let sign = if fused.maximize { -1.0f32 } else { 1.0 };
        // Rows of `width` elements; blocks of whole rows (≈ 8k elements), fixed by the shape.
        let (rows, width) = match factored {
            Some((l, r, c)) => (l * r, c),
            None => (n.div_ceil(1024), 1024),
        };
        let r_dim = factored.map_or(1, |(_, r, _)| r);
        let block_rows = (8192 / width).max(1);
        let block = block_rows * width;
        let nblocks = rows.div_ceil(block_rows);
        // Factored: the column sums are kept per group of blocks (≈ 256k elements), fixed by
        // the shape, so they do not depend on the thread count; threads take whole groups. A
        // group stays within one leading index when it can (its rows divide `r`). Per block,
        // the partial sums cost 8 bytes × columns every `block_rows` rows: 4 B/param more
        // traffic for a 4096-wide matrix.
        let group_blocks = match factored {
            Some((l, r, _)) if l > 1 && r.is_multiple_of(block_rows) => gcd(r / block_rows, 32),
            Some(_) => 32,
            None => 1,
        };
        let ngroups = nblocks.div_ceil(group_blocks);
        let nt = threads().min(n.div_ceil(PARALLEL_MIN)).max(1).min(ngroups);
        let per = ngroups.div_ceil(nt) * group_blocks;
        fn runs<T>(xs: &mut [T], len: usize) -> Vec<&mut [T]> {
            xs.chunks_mut(len.max(1)).collect()
        }
        let ps = p.slice_mut();
        let mut m_buf = t.beta1.and_then(|_| bufs.pop());
        g.with(|gs| {
            // --- pass 0 (factored): row sums and per-block column sums of g² (+ ε1), in f64 ---
            let (rowf, colf, norm): (Vec<f32>, Vec<f32>, Vec<f32>) = match factored {
                Some((l, r, c)) => {
                    let mut row_sums = vec![0.0f64; l * r];
                    let mut col_parts = vec![0.0f64; ngroups * c];
                    let group_rows = group_blocks * block_rows;
                    let jobs: Vec<_> = gs
                        .chunks(per * block)
                        .zip(runs(&mut row_sums, per * block_rows))
                        .zip(runs(&mut col_parts, per / group_blocks * c))
                        .collect();
                    let (add, sign) = (if hf { eps1 } else { 0.0 }, sign);
                    run_jobs(
                        jobs,
                        #[inline(always)]
                        |((gj, rows), cols)| {
                            {
                                let it = gj.chunks(group_rows * c).zip(rows.chunks_mut(group_rows));
                                for ((gb, rb), cb) in it.zip(cols.chunks_mut(c)) {
                                    for (grow, rs) in gb.chunks(c).zip(rb.iter_mut()) {
                                        *rs = col_sum_row(cb, grow, sign, add);
                                    }
                                }
                            }
                            0
                        },
                    );
                    // Column sums per leading index. A group of whole rows lies within one
                    // leading index when `r` is a multiple of the group's rows (or `l` = 1);
                    // otherwise the sums are taken row by row.
                    let mut col_sums = vec![0.0f64; l * c];
                    if r.is_multiple_of(group_rows) || l == 1 {
                        for (b, part) in col_parts.chunks(c).enumerate() {
                            let li = (b * group_rows) / r;
                            for (s, x) in col_sums[li * c..(li + 1) * c].iter_mut().zip(part) {
                                *s += x;
                            }
                        }
                    } else {
                        for row in 0..l * r {
                            let li = row / r;
                            let grow = &gs[row * c..(row + 1) * c];
                            for (s, &gv) in col_sums[li * c..(li + 1) * c].iter_mut().zip(grow) {
                                let gv = gv * sign;
                                let u = if hf { gv * gv + eps1 } else { gv * gv };
                                *s += f64::from(u);
                            }
                        }
                    }
                    // (two statistics tensors: checked by the caller)
                    let [row_state, col_state, ..] = &mut bufs[..] else {
                        return;
                    };
                    let (rs, cs) = (row_state.slice_mut(), col_state.slice_mut());
                    if hf {
                        // row ← row·β2t + mean_j(g² + ε1)·(1 − β2t); same for columns
                        for (x, s) in rs.iter_mut().zip(&row_sums) {
                            *x = *x * b2t32 + (*s / c as f64) as f32 * omb32;
                        }
                        for (x, s) in cs.iter_mut().zip(&col_sums) {
                            *x = *x * b2t32 + (*s / r as f64) as f32 * omb32;
                        }
                        // r_factor = 1/√(row / mean_i row), c_factor = 1/√col
                        let mut rf = vec![0.0f32; l * r];
                        for li in 0..l {
                            let rows = &rs[li * r..(li + 1) * r];
                            let sum: f64 = rows.iter().map(|&x| f64::from(x)).sum();
                            let mean = (sum / r as f64) as f32;
                            for (f, &x) in rf[li * r..(li + 1) * r].iter_mut().zip(rows) {
                                *f = (x / mean).sqrt().recip();
                            }
                        }
                        let cf: Vec<f32> = cs.iter().map(|&x| x.sqrt().recip()).collect();
                        (rf, cf, Vec::new())
                    } else {
                        // torch: ‖g‖²/size per row and column, lerped; norm = max(mean_i row, ε1)
                        for (x, s) in rs.iter_mut().zip(&row_sums) {
                            let m = (*s as f32).sqrt();
                            *x = lerp(*x, m * m / c as f32);
                        }
                        for (x, s) in cs.iter_mut().zip(&col_sums) {
                            let m = (*s as f32).sqrt();
                            *x = lerp(*x, m * m / r as f32);
                        }
                        let norm: Vec<f32> = (0..l)
                            .map(|li| {
                                let rows = &rs[li * r..(li + 1) * r];
                                let sum: f64 = rows.iter().map(|&x| f64::from(x)).sum();
                                ((sum / r as f64) as f32).max(eps1)
                            })
                            .collect();
                        (rs.to_vec(), cs.to_vec(), norm)
                    }
                }
                None => (Vec::new(), Vec::new(), Vec::new()),
            };
            let full = factored.is_none();
            let scales = AdafactorScales {
                factored,
                r_dim,
                rowf: &rowf,
                colf: &colf,
                norm: &norm,
                hf,
                eps_sq,
            };
            let fill_scale = |row: usize, v: &[f32], out: &mut [f32]| scales.fill(row, v, out);
            let vrow_update = SecondMomentRow {
                sign,
                hf,
                b2t: b2t32,
                one_minus_b2t: omb32,
                eps1,
                w: w32,
            };
            // --- pass 1: (full: the second moment;) Σ upd² and Σ θ² per block, in f64 ---
            let mut sums = vec![(0.0f64, 0.0f64); nblocks];
            {
                let vs: &mut [f32] = match (full, bufs.first_mut()) {
                    (true, Some(v)) => v.slice_mut(),
                    _ => &mut [],
                };
                let mut vruns = runs(vs, per * block).into_iter();
                let jobs: Vec<_> = ps
                    .chunks(per * block)
                    .zip(gs.chunks(per * block))
                    .zip(runs(&mut sums, per))
                    .enumerate()
                    .map(|(i, x)| (i, x, if full { vruns.next() } else { None }))
                    .collect();
                run_jobs(
                    jobs,
                    #[inline(always)]
                    |(ji, ((pj, gj), sj), mut vj)| {
                        {
                            let mut srow = vec![0.0f32; width];
                            let blocks = pj.chunks(block).zip(gj.chunks(block)).zip(sj.iter_mut());
                            for (bi, ((pb, gb), s)) in blocks.enumerate() {
                                let first = (ji * per + bi) * block_rows;
                                let (mut su, mut sp) = (0.0f64, 0.0f64);
                                for (ri, (prow, grow)) in
                                    pb.chunks(width).zip(gb.chunks(width)).enumerate()
                                {
                                    let row = first + ri;
                                    let w = prow.len();
                                    let vrow: &[f32] = match vj.as_deref_mut() {
                                        Some(v) => {
                                            let off = bi * block + ri * width;
                                            let vr = &mut v[off..off + w];
                                            vrow_update.apply(vr, grow);
                                            vr
                                        }
                                        None => &[],
                                    };
                                    let srow = &mut srow[..w];
                                    fill_scale(row, vrow, srow);
                                    su += lane_sum(srow, grow, |s, gv| {
                                        let u = s * (gv * sign);
                                        u * u
                                    });
                                    sp += lane_sum(prow, prow, |x, _| x * x);
                                }
                                *s = (su, sp);
                            }
                        }
                        0
                    },
                );
            }
            let (su, sp) = sums
                .iter()
                .fold((0.0f64, 0.0f64), |a, b| (a.0 + b.0, a.1 + b.1));
            let sqrt_n = (n as f64).sqrt() as f32;
            let rms_u = (su as f32).sqrt() / sqrt_n;
            let rho = t.rho(lr, tf);
            let scaled = t.scale_parameter || !hf;
            let lr_eff = if scaled {
                ((sp as f32).sqrt() / sqrt_n).max(t.eps2 as f32) * rho as f32
            } else {
                rho as f32
            };
            let denom = (rms_u / t.clip_threshold as f32).max(1.0);
            let b1 = t.beta1.map(|b| (b as f32, (1.0 - b) as f32));
            let decay = (t.weight_decay > 0.0).then_some(if hf {
                lr_eff * t.weight_decay as f32
            } else {
                (lr * t.weight_decay) as f32
            });
            // --- pass 2: θ ← θ − step (β1 EMA and decay as the composed chain orders them) ---
            let vs: &[f32] = match (full, bufs.first_mut()) {
                (true, Some(v)) => v.slice_mut(),
                _ => &[],
            };
            let ms: &mut [f32] = match m_buf.as_mut() {
                Some(m) => m.slice_mut(),
                None => &mut [],
            };
            let mut mruns = runs(ms, per * block).into_iter();
            let jobs: Vec<_> = ps
                .chunks_mut(per * block)
                .zip(gs.chunks(per * block))
                .enumerate()
                .map(|(i, x)| (i, x, if b1.is_some() { mruns.next() } else { None }))
                .collect();
            run_jobs(
                jobs,
                #[inline(always)]
                |(ji, (pj, gj), mut mj)| {
                    {
                        let base = ji * per * block;
                        let mut srow = vec![0.0f32; width];
                        let d = decay.unwrap_or(0.0);
                        let rows = pj.chunks_mut(width).zip(gj.chunks(width));
                        for (ri, (prow, grow)) in rows.enumerate() {
                            let row = base / width + ri;
                            let (off, w) = (ri * width, prow.len());
                            let vrow = if full {
                                &vs[base + off..base + off + w]
                            } else {
                                &[][..]
                            };
                            let srow = &mut srow[..w];
                            fill_scale(row, vrow, srow);
                            let step = |s: f32, gv: f32| s * (gv * sign) / denom * lr_eff;
                            match (mj.as_deref_mut(), b1) {
                                (Some(m), Some((b1, omb1))) => {
                                    let m = &mut m[off..off + w];
                                    let it = prow.iter_mut().zip(grow).zip(&*srow).zip(m);
                                    for (((pv, &gv), &s), mv) in it {
                                        *mv = *mv * b1 + step(s, gv) * omb1;
                                        let mut u = *mv;
                                        if decay.is_some() {
                                            u += *pv * d;
                                        }
                                        *pv += -u;
                                    }
                                }
                                _ if decay.is_some() => {
                                    for ((pv, &gv), &s) in prow.iter_mut().zip(grow).zip(&*srow) {
                                        let u = step(s, gv) + *pv * d;
                                        *pv += -u;
                                    }
                                }
                                _ => {
                                    for ((pv, &gv), &s) in prow.iter_mut().zip(grow).zip(&*srow) {
                                        *pv += -step(s, gv);
                                    }
                                }
                            }
                        }
                    }
                    0
                },
            );
        });
        if let Some(m) = m_buf {
            bufs.push(m);
        }
        put_floats(st, bufs);
        drop(g);
        Ok(p.back())
    }
}
