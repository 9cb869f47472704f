//! The CPU's streaming bandwidth for an access pattern: the yardstick of the bench's
//! "% of bandwidth" column.
//!
//! Measured like the optimizer rows it is compared with, so the column is a like-for-like
//! ratio: the same number of elements as the row (in cache at 1M, in memory at 16M), the same
//! thread count, kernels compiled for the SIMD level moment's fused kernels run at, buffers
//! backed like moment's state (huge pages where the OS gives them), and threads started once
//! and kept across repetitions, the caller streaming its own share (as moment's worker pool),
//! so neither thread start-up nor wake-up latency is counted against the yardstick.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use super::pattern::Pattern;
use super::stats::{StatsError, effective_gbps, summarize};

/// Streaming GB/s of `pattern` over `n` f32 elements per stream, split into `threads`
/// contiguous chunks; the median of `reps` timed passes after one untimed pass.
pub fn cpu_stream_gbps(
    n: usize,
    pattern: Pattern,
    threads: usize,
    reps: usize,
) -> Result<f64, StatsError> {
    let threads = threads.max(1);
    let buffers = match (pattern.reads, pattern.writes) {
        (0, w) => w + 1,
        (r, _) => r,
    };
    let mut bufs: Vec<Vec<f32>> = (0..buffers)
        .map(|i| {
            let mut b = Vec::with_capacity(n);
            moment_optim::fused::advise_huge_pages(b.spare_capacity_mut());
            b.resize(n, 1.0 + i as f32 * 1e-3);
            b
        })
        .collect();
    let chunk = n.div_ceil(threads).max(1);
    let mut per_thread: Vec<Vec<&mut [f32]>> = (0..threads).map(|_| Vec::new()).collect();
    for b in bufs.iter_mut() {
        for (t, c) in b.chunks_mut(chunk).enumerate() {
            per_thread[t].push(c);
        }
    }
    // This thread streams the first chunk itself and the others wait for each pass spinning,
    // as a kept worker pool does (moment's passes run on rayon's pool, the caller included):
    // no thread start and no sleep/wake-up per pass is counted against the yardstick (on a
    // 2-core VM a futex wake-up costs tens of µs, a tenth of an in-cache 1M pass).
    let passes = reps.max(1) + 1;
    let go = AtomicUsize::new(0);
    let finished = AtomicUsize::new(0);
    let mut times = Vec::with_capacity(passes);
    let mut mine = per_thread.remove(0);
    std::thread::scope(|s| {
        for mut streams in per_thread {
            let (go, finished) = (&go, &finished);
            s.spawn(move || {
                for pass in 1..=passes {
                    while go.load(Ordering::Acquire) < pass {
                        std::hint::spin_loop();
                    }
                    if streams.len() == buffers {
                        stream_best(&mut streams, pattern);
                    }
                    finished.fetch_add(1, Ordering::AcqRel);
                }
            });
        }
        let workers = threads - 1;
        for pass in 1..=passes {
            let t0 = Instant::now();
            go.store(pass, Ordering::Release);
            if mine.len() == buffers {
                stream_best(&mut mine, pattern);
            }
            while finished.load(Ordering::Acquire) < pass * workers {
                std::hint::spin_loop();
            }
            times.push(t0.elapsed().as_secs_f64());
        }
    });
    times.remove(0);
    let median = summarize(&times)?.median;
    Ok(effective_gbps(pattern.bytes_per_element(), n, median))
}

/// [`stream_kernel`] at the SIMD level moment's fused kernels run at
/// ([`moment_optim::simd_level`]; a baseline SSE2 build of the same loops reaches ~30% less
/// on an AVX-512 machine: fewer loads in flight, which would flatter every %).
fn stream_best(st: &mut [&mut [f32]], pattern: Pattern) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        fn avx512(st: &mut [&mut [f32]], pattern: Pattern) {
            stream_kernel(st, pattern)
        }
        #[target_feature(enable = "avx2")]
        fn avx2(st: &mut [&mut [f32]], pattern: Pattern) {
            stream_kernel(st, pattern)
        }
        // The level the optimizer kernels use (`MOMENT_SIMD` caps both alike).
        match moment_optim::simd_level() {
            // SAFETY: `simd_level` never exceeds what the CPU has, here AVX-512F.
            #[allow(unsafe_code)]
            moment_optim::SimdLevel::Avx512 => return unsafe { avx512(st, pattern) },
            // SAFETY: as above, for AVX2.
            #[allow(unsafe_code)]
            moment_optim::SimdLevel::Avx2 => return unsafe { avx2(st, pattern) },
            moment_optim::SimdLevel::Baseline => {}
        }
    }
    stream_kernel(st, pattern)
}

/// One pattern's loop: plain zipped slices (vectorizable, trivial arithmetic).
#[inline(always)]
fn stream_kernel(st: &mut [&mut [f32]], pattern: Pattern) {
    match (pattern.reads, pattern.writes) {
        (0, 1) => {
            let [a, b] = st else { return };
            a.copy_from_slice(b);
        }
        (0, 2) => {
            let [a, b, c] = st else { return };
            for ((a, b), c) in a.iter_mut().zip(b.iter()).zip(c.iter()) {
                *a = *b + 0.5 * *c;
            }
        }
        (2, 1) => {
            let [p, g] = st else { return };
            for (p, g) in p.iter_mut().zip(g.iter()) {
                *p -= 0.01 * *g;
            }
        }
        (3, 2) => {
            let [p, g, m] = st else { return };
            for ((p, g), m) in p.iter_mut().zip(g.iter()).zip(m.iter_mut()) {
                *m = 0.9 * *m + *g;
                *p -= 0.01 * *m;
            }
        }
        (4, 2) => {
            let [p, g, m, h] = st else { return };
            for (((p, g), m), h) in p.iter_mut().zip(g.iter()).zip(m.iter_mut()).zip(h.iter()) {
                *m = 0.9 * *m + *g;
                *p -= 0.01 * *m * *h;
            }
        }
        (4, 3) => {
            let [p, g, m, v] = st else { return };
            for (((p, g), m), v) in p
                .iter_mut()
                .zip(g.iter())
                .zip(m.iter_mut())
                .zip(v.iter_mut())
            {
                *m = 0.9 * *m + *g;
                *v = 0.99 * *v + *g;
                *p -= 0.01 * (*m + *v);
            }
        }
        (_, writes) => {
            for s in st.iter_mut().take(writes) {
                for x in s.iter_mut() {
                    *x *= 0.5;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pattern_measures_a_positive_finite_bandwidth_even_with_more_threads_than_chunks() {
        for p in [
            Pattern::COPY,
            Pattern::TRIAD,
            Pattern {
                reads: 4,
                writes: 3,
            },
            Pattern {
                reads: 3,
                writes: 2,
            },
            Pattern {
                reads: 4,
                writes: 2,
            },
            Pattern {
                reads: 2,
                writes: 1,
            },
        ] {
            for (n, threads) in [(1 << 14, 2), (3, 4), (1, 1)] {
                let g = cpu_stream_gbps(n, p, threads, 3).unwrap();
                assert!(
                    g.is_finite() && g > 0.0,
                    "{p:?} n={n} threads={threads}: {g}"
                );
            }
        }
    }

    #[test]
    fn the_kernels_touch_every_element_of_every_written_stream() {
        // 4R 3W: m ← 0.9m + g; v ← 0.99v + g; p ← p − 0.01(m + v), over two threads' chunks
        let n = 1001;
        let mut p = vec![1.0f32; n];
        let g = vec![1.0f32; n];
        let mut m = vec![0.0f32; n];
        let mut v = vec![0.0f32; n];
        {
            let (p1, p2) = p.split_at_mut(500);
            let (m1, m2) = m.split_at_mut(500);
            let (v1, v2) = v.split_at_mut(500);
            let mut g1 = g[..500].to_vec();
            let mut g2 = g[500..].to_vec();
            let pattern = Pattern {
                reads: 4,
                writes: 3,
            };
            stream_best(&mut [p1, &mut g1, m1, v1], pattern);
            stream_best(&mut [p2, &mut g2, m2, v2], pattern);
        }
        assert!(m.iter().all(|&x| x == 1.0));
        assert!(v.iter().all(|&x| x == 1.0));
        assert!(p.iter().all(|&x| (x - 0.98).abs() < 1e-6));
    }
}
