//! The device's streaming bandwidth with an optimizer's access pattern, measured with a
//! trivial CubeCL kernel (what `cargo xtask bench --backend wgpu|cuda` compares step times
//! against).

use std::time::Instant;

use burn::tensor::Tensor as BurnTensor;
use cubecl::{calculate_cube_count_elemwise, prelude::*};

use crate::CubeAccess;

/// `reads == 0`: stream 0 ← ½·Σ streams `1..=writes` (copy, triad); otherwise streams
/// `0..writes` ← ½·Σ streams `0..reads` (in place, as an optimizer step).
#[cube(launch)]
fn stream(buf: &mut Tensor<f32>, n: u32, #[comptime] reads: usize, #[comptime] writes: usize) {
    let i = ABSOLUTE_POS;
    let n = n as usize;
    if i < n {
        let mut x = 0.0f32;
        if reads == 0 {
            #[unroll]
            for j in 1..writes + 1 {
                x += buf[j * n + i];
            }
            buf[i] = x * 0.5;
        } else {
            #[unroll]
            for j in 0..reads {
                x += buf[j * n + i];
            }
            #[unroll]
            for j in 0..writes {
                buf[j * n + i] = x * 0.5;
            }
        }
    }
}

/// Streaming bandwidth (GB/s, median of `reps` timed launches after one warm-up) of `reads`
/// f32 streams read and `writes` written, `n` elements each, on `device`. `reads == 0` means
/// plain copy (`writes == 1`) or triad (`writes == 2`): destinations written, not read.
pub fn stream_gbps<B: CubeAccess>(
    device: &B::Device,
    n: usize,
    reads: usize,
    writes: usize,
    reps: usize,
) -> Result<f64, String> {
    let buffers = if reads == 0 { writes + 1 } else { reads };
    if n == 0 || writes == 0 || buffers > 8 || (reads > 0 && writes > reads) {
        return Err(format!(
            "stream_gbps: unsupported pattern {reads} reads / {writes} writes of {n} elements"
        ));
    }
    let total = n
        .checked_mul(buffers)
        .filter(|&t| u32::try_from(t).is_ok())
        .ok_or_else(|| format!("stream_gbps: {buffers} × {n} elements exceed u32 indexing"))?;
    let t = BurnTensor::<B, 1>::ones([total], device);
    let c = B::float_into_cube(t.into_primitive().tensor());
    let dim = CubeDim::new(&c.client, n);
    let count = calculate_cube_count_elemwise(&c.client, n, dim);
    let mut times = Vec::with_capacity(reps + 1);
    for _ in 0..=reps.max(1) {
        B::sync(device).map_err(|e| format!("device sync: {e:?}"))?;
        let t0 = Instant::now();
        stream::launch::<B::Runtime>(
            &c.client,
            count.clone(),
            dim,
            c.clone().into_tensor_arg(),
            n as u32,
            reads,
            writes,
        );
        B::sync(device).map_err(|e| format!("device sync: {e:?}"))?;
        times.push(t0.elapsed().as_secs_f64());
    }
    times.remove(0);
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let streams = if reads == 0 {
        writes + 1
    } else {
        reads + writes
    };
    Ok((streams * 4 * n) as f64 / median / 1e9)
}
