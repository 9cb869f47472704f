//! Running a pass compiled for the CPU's widest SIMD level.

/// `f()` compiled for the SIMD level [`crate::simd_level`] gives (the CPU's widest —
/// AVX-512F, else AVX2, else the baseline — capped by `MOMENT_SIMD`). The kernels' loops are plain Rust that LLVM vectorizes; inlined here they get
/// 16- or 8-wide `sqrt`/`div`/loads — the same IEEE operations in the same order and no
/// FMA contraction, so results are bitwise those of the baseline build (tested: fused ≡
/// composed). Wider vectors matter even for the memory-bound steps: fewer instructions per
/// byte keep more loads in flight (AdamW at 16M on a 2-core AMD EPYC: 9.9 ms AVX2 → 8.6 ms
/// AVX-512; docs/benchmarks.md).
#[inline(always)]
pub(super) fn simd<R>(f: impl FnOnce() -> R) -> R {
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
