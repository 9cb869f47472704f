//! The kept worker pool of the CPU passes and how many threads they use.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::simd::simd;

/// Below this many elements one thread does the whole tensor.
pub(super) const PARALLEL_MIN: usize = 1 << 15;

/// Threads the passes use: [`crate::fused::set_threads`]'s count, else `MOMENT_THREADS`, else
/// all cores.
pub(super) fn threads() -> usize {
    match crate::fused::THREADS.load(Ordering::Relaxed) {
        0 => std::env::var("MOMENT_THREADS")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|n: &usize| *n > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        n => n,
    }
}

/// The worker threads of the CPU passes: `threads() − 1` of them (the calling thread is the
/// last one), started once and kept — starting and joining a scoped thread costs ~33 µs
/// here, twice per step (scan and kernel), ~15% of an AdamW step at 1M elements. Rebuilt
/// when [`crate::fused::set_threads`] changes the count; `None` if the OS refuses the threads.
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
pub(super) fn run_jobs<J: Send>(jobs: Vec<J>, run: impl Fn(J) -> u64 + Sync) -> u64 {
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
