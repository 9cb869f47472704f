//! `Σ x²` in fixed blocks (the same bits whatever the thread count), the chunking of the
//! passes, and the scaling pass.

use super::pool::{PARALLEL_MIN, run_jobs, threads};
use super::simd::simd;

#[inline(always)]
pub(super) fn scale_slice(xs: &mut [f32], c: f32) {
    for x in xs {
        *x *= c;
    }
}

/// Elements per block of [`sumsq_fold`]: eight f32 lanes each, block totals in f64.
const SUMSQ_BLOCK: usize = 256;

/// `acc` plus `Σ x²` of `c`, block by block: eight f32 lanes per block of
/// [`SUMSQ_BLOCK`] (vectorizes), each block's total added to `acc` in f64, in order. A
/// block whose f32 sum overflows gives +Inf; the engine then tells overflow from NaN/Inf
/// gradients itself. Folding a slice in pieces that are whole blocks gives the same bits
/// as folding it at once (the in-pass measurement relies on it).
#[inline(always)]
pub(super) fn sumsq_fold(acc: f64, c: &[f32]) -> f64 {
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
pub(super) fn chunk_len(n: usize) -> usize {
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
pub(super) fn total_of_blocks(blocks: &[f64]) -> f64 {
    blocks.iter().fold(0.0, |total, s| total + s)
}

pub(super) fn sum_squares_slice(xs: &[f32]) -> f64 {
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

/// Elements per kernel call when the pass also measures `Σ g²`: the gradient's block is
/// summed right before the kernel reads it again from L1 (16 KiB), so memory sees one read.
/// A multiple of [`SUMSQ_BLOCK`].
pub(super) const MEASURE_BLOCK: usize = 16 * SUMSQ_BLOCK;
