//! Fused one-pass steps: a chain may carry a [`FusedStep`], an implementation of the *whole*
//! chain that reads the parameter, gradient and state once and writes them once, in place when
//! the buffers are uniquely owned. The engine uses it when it applies (backend and tensor
//! supported; an observed parameter is copied instead of updated in place) and falls back to the composed chain otherwise.
//! A fused step must give the same numbers as the composed chain (the CPU kernels here repeat
//! its f32 operations in the same order, so they are bitwise equal — tested) and leave the
//! state in the same layout, so records and resumes do not depend on the path taken.
//!
//! Implemented: the Adam family (Adam/AdamW, amsgrad, maximize, coupled or decoupled decay) on
//! burn's ndarray backend with f32 tensors (feature `ndarray`, default), multi-threaded over
//! contiguous chunks. Everything else runs composed.

use std::fmt::Debug;

use burn::tensor::{Tensor, backend::Backend};

use crate::transform::TransformState;

static THREADS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Threads the CPU kernels use (0 = automatic: `MOMENT_THREADS`, else all cores).
pub fn set_threads(n: usize) {
    THREADS.store(n, std::sync::atomic::Ordering::Relaxed);
}

/// A chain's one-pass implementation for some backends (see the [module docs](self)).
pub trait FusedStep<B: Backend>: Send + Sync + Debug {
    /// Name, for reports.
    fn name(&self) -> &'static str;

    /// Step `param` with `grad` at `lr`, advancing `states` (the chain's states, in chain
    /// order) exactly as the composed chain would, and return the new parameter; or hand the
    /// inputs back unchanged (`Err`) when this backend or tensor is not supported.
    #[allow(clippy::result_large_err)]
    fn step(
        &self,
        lr: f64,
        param: Tensor<B, 1>,
        grad: Tensor<B, 1>,
        states: &mut [TransformState<B>],
    ) -> Result<Tensor<B, 1>, (Tensor<B, 1>, Tensor<B, 1>)>;
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
/// them.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(not(feature = "ndarray"), allow(dead_code))]
struct AdamScalars {
    maximize: bool,
    coupled: Option<f32>,
    decoupled: Option<f32>,
    one_minus_b1: f32,
    b2: f32,
    one_minus_b2: f32,
    bc2_sqrt: f32,
    eps: f32,
    bc1: f32,
    neg_lr: f32,
    amsgrad: bool,
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
        let den = vu.sqrt() / self.bc2_sqrt + self.eps;
        let mut out = m1 / den / self.bc1;
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

impl FusedAdam {
    #[cfg_attr(not(feature = "ndarray"), allow(dead_code))]
    fn scalars(&self, lr: f64, t: u64) -> AdamScalars {
        let ti = i32::try_from(t).unwrap_or(i32::MAX);
        let (b1, b2) = (self.beta1, self.beta2);
        AdamScalars {
            maximize: self.maximize,
            coupled: (self.coupled > 0.0).then_some(self.coupled as f32),
            decoupled: (self.decoupled > 0.0).then_some(self.decoupled as f32),
            one_minus_b1: (1.0 - b1) as f32,
            b2: b2 as f32,
            one_minus_b2: (1.0 - b2) as f32,
            bc2_sqrt: (1.0 - b2.powi(ti)).sqrt() as f32,
            eps: self.eps as f32,
            bc1: (1.0 - b1.powi(ti)) as f32,
            neg_lr: -(lr as f32),
            amsgrad: self.amsgrad,
        }
    }
}

impl<B: Backend> FusedStep<B> for FusedAdam {
    fn name(&self) -> &'static str {
        "fused_adam"
    }

    fn step(
        &self,
        lr: f64,
        param: Tensor<B, 1>,
        grad: Tensor<B, 1>,
        states: &mut [TransformState<B>],
    ) -> Result<Tensor<B, 1>, (Tensor<B, 1>, Tensor<B, 1>)> {
        #[cfg(feature = "ndarray")]
        {
            cpu::adam(self, lr, param, grad, states)
        }
        #[cfg(not(feature = "ndarray"))]
        {
            let _ = (lr, states);
            Err((param, grad))
        }
    }
}

#[cfg(feature = "ndarray")]
mod cpu {
    //! burn-ndarray f32: take the buffers out of the tensors (no copy when uniquely owned),
    //! run one pass over contiguous chunks on scoped threads, put them back.

    use std::any::Any;
    use std::sync::Mutex;

    /// One chunk's slices: parameter, gradient, exp_avg, exp_avg_sq, max_exp_avg_sq (or empty).
    type Job<'a> = (
        &'a mut [f32],
        &'a [f32],
        &'a mut [f32],
        &'a mut [f32],
        &'a mut [f32],
    );

    use burn::backend::ndarray::{NdArrayTensor, SharedArray};
    use burn::tensor::{Tensor, TensorPrimitive, backend::Backend};

    use super::FusedAdam;
    use crate::transform::TransformState;

    /// Below this many elements one thread does the whole tensor.
    const PARALLEL_MIN: usize = 1 << 15;

    fn threads() -> usize {
        match super::THREADS.load(std::sync::atomic::Ordering::Relaxed) {
            0 => std::env::var("MOMENT_THREADS")
                .ok()
                .and_then(|v| v.parse().ok())
                .filter(|n: &usize| *n > 0)
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
            n => n,
        }
    }

    /// The ndarray tensor behind `t`, or `t` back (another backend, or quantized).
    #[allow(clippy::result_large_err)]
    fn as_ndarray<B: Backend>(t: Tensor<B, 1>) -> Result<NdArrayTensor, Tensor<B, 1>> {
        let prim = match t.into_primitive() {
            TensorPrimitive::Float(p) => p,
            q @ TensorPrimitive::QFloat(_) => return Err(Tensor::from_primitive(q)),
        };
        let any: Box<dyn Any> = Box::new(prim);
        match any.downcast::<NdArrayTensor>() {
            Ok(nd) => Ok(*nd),
            Err(any) => Err(Tensor::from_primitive(TensorPrimitive::Float(
                *any.downcast::<B::FloatTensorPrimitive>()
                    .expect("a float primitive downcasts to its own type"),
            ))),
        }
    }

    /// The f32 array behind `t` (copied only when shared or borrowed), or `t` back.
    #[allow(clippy::result_large_err)]
    fn take<B: Backend>(t: Tensor<B, 1>) -> Result<SharedArray<f32>, Tensor<B, 1>> {
        match as_ndarray(t)? {
            NdArrayTensor::F32(storage) => {
                let arr = storage.into_owned();
                if arr.is_standard_layout() {
                    Ok(arr)
                } else {
                    Err(give(NdArrayTensor::from(arr)))
                }
            }
            other => Err(give(other)),
        }
    }

    /// The ndarray f32 tensor behind `t`, not copied (for reading), or `t` back.
    #[allow(clippy::result_large_err)]
    fn peek<B: Backend>(t: Tensor<B, 1>) -> Result<NdArrayTensor, Tensor<B, 1>> {
        match as_ndarray(t)? {
            NdArrayTensor::F32(s) if s.view().is_standard_layout() => Ok(NdArrayTensor::F32(s)),
            other => Err(give(other)),
        }
    }

    /// Wrap an ndarray tensor as a tensor of `B` (only called when `B` is ndarray).
    fn give<B: Backend>(nd: NdArrayTensor) -> Tensor<B, 1> {
        let any: Box<dyn Any> = Box::new(nd);
        Tensor::from_primitive(TensorPrimitive::Float(
            *any.downcast::<B::FloatTensorPrimitive>()
                .expect("only called after B's float primitive was an NdArrayTensor"),
        ))
    }

    fn back<B: Backend>(a: SharedArray<f32>) -> Tensor<B, 1> {
        give(NdArrayTensor::from(a))
    }

    pub(super) fn sum_squares<B: Backend>(t: &Tensor<B, 1>) -> Option<f64> {
        let nd = peek(t.clone()).ok()?;
        let NdArrayTensor::F32(s) = &nd else {
            return None;
        };
        let view = s.view();
        let xs = view.as_slice()?;
        let part = |c: &[f32]| -> f64 {
            // Eight f32 lanes per block of 256 (vectorizes), block totals added in f64. A block
            // whose f32 sum overflows gives +Inf; the engine then tells overflow from NaN/Inf
            // gradients itself.
            c.chunks(256)
                .map(|b| {
                    let mut acc = [0.0f32; 8];
                    let mut lanes = b.chunks_exact(8);
                    for l in &mut lanes {
                        for (a, x) in acc.iter_mut().zip(l) {
                            *a += x * x;
                        }
                    }
                    let tail: f32 = lanes.remainder().iter().map(|x| x * x).sum();
                    acc.iter().map(|a| f64::from(*a)).sum::<f64>() + f64::from(tail)
                })
                .sum()
        };
        let n = xs.len();
        let nt = threads().min(n.div_ceil(PARALLEL_MIN)).max(1);
        if nt <= 1 {
            return Some(part(xs));
        }
        let chunk = n.div_ceil(nt);
        Some(std::thread::scope(|scope| {
            let handles: Vec<_> = xs
                .chunks(chunk)
                .map(|c| scope.spawn(move || part(c)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or(f64::NAN))
                .sum()
        }))
    }

    /// [`AdamScalars::run`] compiled for AVX2 when the CPU has it (8-wide `sqrt`/`div`; the
    /// same IEEE operations in the same order, no FMA contraction — results are unchanged).
    fn run_best(
        sc: &super::AdamScalars,
        ps: &mut [f32],
        gs: &[f32],
        ms: &mut [f32],
        vs: &mut [f32],
        xs: &mut [f32],
    ) {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2 (checked just above), the only requirement of
                // calling a `#[target_feature(enable = "avx2")]` function.
                #[allow(unsafe_code)]
                unsafe {
                    run_avx2(sc, ps, gs, ms, vs, xs)
                };
                return;
            }
        }
        sc.run(ps, gs, ms, vs, xs);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn run_avx2(
        sc: &super::AdamScalars,
        ps: &mut [f32],
        gs: &[f32],
        ms: &mut [f32],
        vs: &mut [f32],
        xs: &mut [f32],
    ) {
        sc.run(ps, gs, ms, vs, xs);
    }

    pub(super) fn adam<B: Backend>(
        fused: &FusedAdam,
        lr: f64,
        param: Tensor<B, 1>,
        grad: Tensor<B, 1>,
        states: &mut [TransformState<B>],
    ) -> Result<Tensor<B, 1>, (Tensor<B, 1>, Tensor<B, 1>)> {
        let n = param.dims()[0];
        let k = if fused.amsgrad { 3 } else { 2 };
        const NAMES: [&str; 3] = ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"];
        let Some(st) = states.get_mut(fused.adam_index) else {
            return Err((param, grad));
        };
        let layout_ok = st.tensors.len() == k
            && st.tensors.iter().zip(NAMES).all(|(t, name)| t.name == name)
            && st.tensors.iter().all(|t| t.tensor.dims()[0] == n)
            && st.counters.first().is_some_and(|c| c.0 == "step");
        if !layout_ok || grad.dims()[0] != n {
            return Err((param, grad));
        }
        let mut p = match take(param) {
            Ok(a) => a,
            Err(p) => return Err((p, grad)),
        };
        // The gradient is only read: borrow its buffer (no copy even when shared).
        let g = match peek(grad) {
            Ok(nd) => nd,
            Err(g) => return Err((back(p), g)),
        };
        let empty = || Tensor::<B, 1>::zeros([0], &Default::default());
        let mut moments: Vec<SharedArray<f32>> = Vec::with_capacity(k);
        for i in 0..k {
            let t = std::mem::replace(&mut st.tensors[i].tensor, empty());
            match take(t) {
                Ok(a) => moments.push(a),
                Err(t) => {
                    // Put everything back as it was.
                    st.tensors[i].tensor = t;
                    for (j, a) in moments.into_iter().enumerate() {
                        st.tensors[j].tensor = back(a);
                    }
                    return Err((back(p), give(g)));
                }
            }
        }
        let t = st.counters[0].1.saturating_add(1);
        st.counters[0].1 = t;
        let sc = fused.scalars(lr, t);
        {
            let NdArrayTensor::F32(gst) = &g else {
                unreachable!("peek only returns f32 tensors")
            };
            let gview = gst.view();
            let gs = gview.as_slice().expect("standard layout checked in peek");
            let ps = p.as_slice_mut().expect("standard layout checked in take");
            let mut it = moments.iter_mut();
            let ms = it.next().and_then(|a| a.as_slice_mut()).expect("exp_avg");
            let vs = it
                .next()
                .and_then(|a| a.as_slice_mut())
                .expect("exp_avg_sq");
            let xs: &mut [f32] = it.next().and_then(|a| a.as_slice_mut()).unwrap_or(&mut []);
            let nt = threads().min(n.div_ceil(PARALLEL_MIN)).max(1);
            if nt <= 1 {
                run_best(&sc, ps, gs, ms, vs, xs);
            } else {
                let chunk = n.div_ceil(nt);
                let sc = &sc;
                let xs_chunks: Vec<&mut [f32]> = if xs.is_empty() {
                    (0..nt).map(|_| <&mut [f32]>::default()).collect()
                } else {
                    xs.chunks_mut(chunk).collect()
                };
                // One job per chunk; whoever takes a job runs it. This thread runs job 0 and
                // any job whose thread the OS refused to start.
                let jobs: Vec<Mutex<Option<Job<'_>>>> = ps
                    .chunks_mut(chunk)
                    .zip(gs.chunks(chunk))
                    .zip(ms.chunks_mut(chunk))
                    .zip(vs.chunks_mut(chunk))
                    .zip(xs_chunks)
                    .map(|((((p, g), m), v), x)| Mutex::new(Some((p, g, m, v, x))))
                    .collect();
                let run_job = |job: &Mutex<Option<Job<'_>>>| {
                    let taken = job.lock().ok().and_then(|mut j| j.take());
                    if let Some((p, g, m, v, x)) = taken {
                        run_best(sc, p, g, m, v, x);
                    }
                };
                std::thread::scope(|scope| {
                    for job in jobs.iter().skip(1) {
                        let _ =
                            std::thread::Builder::new().spawn_scoped(scope, move || run_job(job));
                    }
                    for job in &jobs {
                        run_job(job);
                    }
                });
            }
        }
        for (i, a) in moments.into_iter().enumerate() {
            st.tensors[i].tensor = back(a);
        }
        drop(g);
        Ok(back(p))
    }
}
