//! Helpers shared by the multi-peer tests.

use burn::backend::NdArray;
use burn::tensor::{Tensor, TensorData};

/// Deterministic pseudo-random numbers in [-1, 1).
#[allow(dead_code, reason = "not every test binary uses every helper")]
pub fn noise(seed: u64, n: usize) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// A flat f32 tensor on the default NdArray device.
#[allow(dead_code, reason = "not every test binary uses every helper")]
pub fn flat(v: &[f32]) -> Tensor<NdArray<f32>, 1> {
    Tensor::from_data(TensorData::new(v.to_vec(), [v.len()]), &Default::default())
}

/// A flat tensor's values.
#[allow(dead_code, reason = "not every test binary uses every helper")]
pub fn values(t: &Tensor<NdArray<f32>, 1>) -> Vec<f32> {
    t.to_data().to_vec::<f32>().unwrap()
}

/// Ends the test process if a scenario runs past `secs` (a peer that fails leaves the others
/// blocked in a collective call, which has no timeout: fail instead of hanging CI).
pub struct Watchdog(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Watchdog {
    pub fn new(secs: u64) -> Self {
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = done.clone();
        std::thread::spawn(move || {
            let t0 = std::time::Instant::now();
            while t0.elapsed().as_secs() < secs {
                if flag.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            eprintln!("scenario still running after {secs} s (a peer failed or deadlocked)");
            std::process::exit(101);
        });
        Self(done)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}
