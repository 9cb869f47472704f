//! burn-ndarray f32: take the buffers out of the tensors (no copy when uniquely owned),
//! run one pass over contiguous chunks on the kept worker pool, put them back.

// `buf`: buffers taken out of tensors; `pool`: the worker threads; `simd`: the SIMD level the
// passes are compiled for; `sums`: `Σ x²` blocks and chunking; `adam8bit`, `adafactor`: those
// families' kernels. The element-wise families' one-pass driver is here.
mod adafactor;
mod adam8bit;
mod buf;
mod pool;
mod simd;
mod sums;

pub(super) use adafactor::adafactor;
pub(super) use adam8bit::adam8bit;

use burn::tensor::{Tensor, backend::Backend};

use super::{Kernel, Pass};
use crate::transform::TransformState;
use buf::{Buf, View, put_floats, take_floats, take_param_grad};
use pool::run_jobs;
use simd::simd;
use sums::{MEASURE_BLOCK, chunk_len, scale_slice, sum_squares_slice, sumsq_fold, total_of_blocks};

/// One chunk's slices: parameter, gradient, state streams, and where its `Σ g²` goes.
type Job<'a> = (&'a mut [f32], &'a [f32], Vec<&'a mut [f32]>, &'a mut [f64]);

/// [`super::host_readable`]: an f32 tensor of burn's CPU backends, readable in place.
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

/// [`super::sum_squares`] on a CPU buffer, or `None` (another backend, dtype or layout).
pub(super) fn sum_squares<B: Backend>(t: &Tensor<B, 1>) -> Option<f64> {
    let view = View::peek(t.clone()).ok()?;
    Some(view.with(sum_squares_slice))
}

/// `k.run` at the CPU's widest SIMD level ([`simd()`]); with `sumsq`, the chunk's `Σ g²`
/// per [`MEASURE_BLOCK`] as `sums::sumsq_blocks` gives it (of the gradient as given),
/// measured block by block in the same pass; with `scale`, the kernel reads each block of the
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

/// The one-pass driver: check that `st`'s first `streams` tensors (their names were checked
/// by the caller's state view) have the parameter's length, take the parameter and those
/// state buffers out (no copy when uniquely owned),
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
    streams: usize,
    pass: Pass,
    make: impl FnOnce(&mut TransformState<B>) -> K,
) -> Result<(Tensor<B, 1>, u64, Option<f64>), (Tensor<B, 1>, Tensor<B, 1>)> {
    let n = param.dims()[0];
    let k = streams;
    let layout_ok = st
        .tensors
        .get(..k)
        .is_some_and(|ts| ts.iter().all(|t| t.tensor.dims()[0] == n));
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
