//! Which SIMD instruction set the fused CPU kernels run at: the CPU's widest, capped by the
//! `MOMENT_SIMD` environment variable (read once) and by [`set_simd_limit`].
//!
//! The kernels are plain Rust compiled once per level (`#[target_feature]`); every level gives
//! the same bits (no FMA contraction, the same operations in the same order), which the fused
//! test suite checks by running at each level the machine has (`MOMENT_SIMD=scalar|avx2|avx512`).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, Ordering};

/// A SIMD level of the fused CPU kernels (x86-64; elsewhere only [`SimdLevel::Baseline`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SimdLevel {
    /// The target's baseline (SSE2 on x86-64), what LLVM vectorizes without run-time features.
    Baseline,
    /// AVX2: 8 f32 lanes.
    Avx2,
    /// AVX-512F: 16 f32 lanes.
    Avx512,
}

impl SimdLevel {
    /// Every level, narrowest first.
    pub const ALL: [SimdLevel; 3] = [SimdLevel::Baseline, SimdLevel::Avx2, SimdLevel::Avx512];

    /// The name `MOMENT_SIMD` takes for it: `scalar`, `avx2`, `avx512`.
    pub fn name(self) -> &'static str {
        match self {
            SimdLevel::Baseline => "scalar",
            SimdLevel::Avx2 => "avx2",
            SimdLevel::Avx512 => "avx512",
        }
    }

    /// Parse a `MOMENT_SIMD` value (`scalar` or `baseline`, `avx2`, `avx512`; any case).
    pub fn parse(s: &str) -> Option<SimdLevel> {
        match s.trim().to_ascii_lowercase().as_str() {
            "scalar" | "baseline" => Some(SimdLevel::Baseline),
            "avx2" => Some(SimdLevel::Avx2),
            "avx512" | "avx512f" => Some(SimdLevel::Avx512),
            _ => None,
        }
    }

    /// Whether this CPU can run the level.
    pub fn supported(self) -> bool {
        self <= detected_simd_level()
    }
}

/// The widest level this CPU supports.
pub fn detected_simd_level() -> SimdLevel {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return SimdLevel::Avx512;
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            return SimdLevel::Avx2;
        }
    }
    SimdLevel::Baseline
}

const NO_LIMIT: u8 = u8::MAX;
static LIMIT: AtomicU8 = AtomicU8::new(NO_LIMIT);

/// Cap the level the kernels use (`None`: only `MOMENT_SIMD` caps it). Process-wide, like
/// [`crate::fused::set_threads`]; meant for A/B measurements and tests. Results do not depend
/// on it, only speed.
pub fn set_simd_limit(limit: Option<SimdLevel>) {
    LIMIT.store(limit.map_or(NO_LIMIT, |l| l as u8), Ordering::Relaxed);
}

/// `MOMENT_SIMD`, read once. A value that names no level is reported on stderr (once) and
/// ignored; a level the CPU lacks caps at what it has.
fn env_limit() -> Option<SimdLevel> {
    static ENV: OnceLock<Option<SimdLevel>> = OnceLock::new();
    *ENV.get_or_init(|| {
        let v = std::env::var("MOMENT_SIMD").ok()?;
        let level = SimdLevel::parse(&v);
        if level.is_none() {
            eprintln!(
                "moment: MOMENT_SIMD={v:?} is not a SIMD level (scalar, avx2, avx512); ignored"
            );
        }
        level
    })
}

/// The level the fused CPU kernels use now: the CPU's widest, capped by `MOMENT_SIMD` and
/// [`set_simd_limit`]. Never above what the CPU supports (the kernels rely on that).
pub fn simd_level() -> SimdLevel {
    let mut level = detected_simd_level();
    if let Some(cap) = env_limit() {
        level = level.min(cap);
    }
    let limit = LIMIT.load(Ordering::Relaxed);
    if let Some(cap) = SimdLevel::ALL.into_iter().find(|l| *l as u8 == limit) {
        level = level.min(cap);
    }
    level
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_and_others_do_not() {
        for level in SimdLevel::ALL {
            assert_eq!(SimdLevel::parse(level.name()), Some(level));
            assert_eq!(SimdLevel::parse(&level.name().to_uppercase()), Some(level));
        }
        assert_eq!(SimdLevel::parse("baseline"), Some(SimdLevel::Baseline));
        for bad in ["", "sse", "avx", "avx-512", "neon"] {
            assert_eq!(SimdLevel::parse(bad), None, "{bad}");
        }
    }

    /// The limit caps the level and never lifts it above the CPU's (the kernels' safety relies
    /// on that). Only speed depends on the level, so concurrently running tests are unaffected.
    #[test]
    fn the_limit_caps_and_never_exceeds_the_cpu() {
        let cpu = detected_simd_level();
        for limit in SimdLevel::ALL {
            set_simd_limit(Some(limit));
            let level = simd_level();
            assert!(level <= cpu && level <= limit, "{limit:?} -> {level:?}");
            if std::env::var("MOMENT_SIMD").is_err() {
                assert_eq!(level, limit.min(cpu));
            }
        }
        set_simd_limit(None);
        assert!(simd_level() <= cpu);
    }
}
