//! The per-element arithmetic of the fused families, written once.
//!
//! [`element_rules!`](crate::element_rules) holds the element rules — small functions of
//! `f32`s in the exact order of f32 operations of the composed transforms — as one macro body
//! expanded twice:
//!
//! * here, as plain `#[inline(always)]` functions the CPU kernels of [`crate::fused`] and the
//!   scalar codec of [`crate::quant`] call;
//! * in moment-cuda, inside CubeCL's `#[cube]` (`moment_optim::element_rules!(#[cube])`), the
//!   functions the GPU kernels call.
//!
//! So a rule cannot drift between the CPU and the GPU: there is one text. What differs
//! between the two sides is kept outside the rules, as primitives each side defines under the
//! same name before expanding them: `select(c, a, b)` (both values evaluated, no branch) and
//! `sign_negative(x)` (the sign bit, so −0.0 and NaNs with the bit set count as negative).
//! The flags of a variant (maximize, coupled/decoupled decay, AMSGrad, Sophia's variant) stay
//! in each kernel's loop: compile-time constants on both sides (const generics on the CPU,
//! `#[comptime]` on CubeCL), so every variant stays branch-free.
//!
//! Rules may use only what both sides have: f32 `+ − × ÷`, comparisons, `f32::sqrt`,
//! `f32::abs`, `u32` arithmetic, indexing a table, `while` loops, `let mut` and tuples.
//! The composed transforms ([`crate::transforms`]) stay the readable tensor-op reference; the
//! `fused_matches_composed_*` properties (crates/optim/tests/fused_props.rs on the CPU,
//! crates/cuda/tests/props.rs on wgpu) tie the rules to them.

/// The element rules (see [`crate::rules`]), expanded with the given attributes on every
/// function, e.g. `element_rules!(#[inline(always)])` or `element_rules!(#[cube])`. The
/// expanding module must have in scope `select(bool, T, T) -> T` and
/// `sign_negative(f32) -> bool`, and name the type of a 256-entry code table with
/// `table = TYPE` (indexable by `usize`).
#[macro_export]
#[doc(hidden)]
macro_rules! element_rules {
    ($(#[$attr:meta])*; table = $table:ty) => {
        /// `lerp(a, b, w)` in the shape of torch's CPU kernel (`../shared/optimizers.md` §0,
        /// without its fma, as `transforms::lerp` rounds it): `a + (b − a)·w` for `|w| < 0.5`,
        /// else `b − (b − a)·(1 − w)`; `one_minus_w` is `1 − w` in f32.
        $(#[$attr])*
        pub fn lerp(a: f32, b: f32, w: f32, one_minus_w: f32) -> f32 {
            select(f32::abs(w) < 0.5, a + (b - a) * w, b - (b - a) * one_minus_w)
        }

        /// An exponential moving average in torch's `mul_(β).add_(x, alpha=1−β)` order:
        /// `v·β + x·(1 − β)`.
        $(#[$attr])*
        pub fn ema(v: f32, x: f32, beta: f32, one_minus_beta: f32) -> f32 {
            v * beta + x * one_minus_beta
        }

        /// The second-moment EMA `v·β2 + g·g·(1 − β2)` (torch's `mul_` then `addcmul_`).
        $(#[$attr])*
        pub fn ema_sq(v: f32, g: f32, beta2: f32, one_minus_beta2: f32) -> f32 {
            v * beta2 + g * g * one_minus_beta2
        }

        /// bitsandbytes' second-moment EMA `v·β2 + g·(1 − β2)·g` (its kernels' order).
        $(#[$attr])*
        pub fn ema_sq_bnb(v: f32, g: f32, beta2: f32, one_minus_beta2: f32) -> f32 {
            v * beta2 + g * one_minus_beta2 * g
        }

        /// burn's `max_pair` as AMSGrad uses it: `acc < x ? x : acc` (a NaN already in `acc`
        /// stays).
        $(#[$attr])*
        pub fn running_max(acc: f32, x: f32) -> f32 {
            select(acc < x, x, acc)
        }

        /// Adam's bias-corrected direction `m / (√v · inv_bc2_sqrt + ε) · inv_bc1`, with the
        /// corrections `1/√(1 − β2ᵗ)` and `1/(1 − β1ᵗ)` computed in f64 and rounded once.
        $(#[$attr])*
        pub fn adam_direction(m: f32, v: f32, inv_bc2_sqrt: f32, eps: f32, inv_bc1: f32) -> f32 {
            m / (f32::sqrt(v) * inv_bc2_sqrt + eps) * inv_bc1
        }

        /// The gradient negated as burn's `neg` does it (`× −1`, which keeps a NaN's sign
        /// bit flipped the same way on every backend, unlike unary minus).
        $(#[$attr])*
        pub fn negate(g: f32) -> f32 {
            g * -1.0
        }

        /// `x + θ·λ`: coupled L2 decay added to the gradient, or decoupled decay added to the
        /// update.
        $(#[$attr])*
        pub fn add_decay(x: f32, theta: f32, lambda: f32) -> f32 {
            x + theta * lambda
        }

        /// The parameter after the step: `θ + u·(−lr)`.
        $(#[$attr])*
        pub fn apply_update(theta: f32, u: f32, neg_lr: f32) -> f32 {
            theta + u * neg_lr
        }

        /// `sign` as burn-ndarray computes it: 0 for ±0, else ±1 by the sign bit (so a NaN
        /// gives ±1).
        $(#[$attr])*
        pub fn sign(x: f32) -> f32 {
            select(x == 0.0, 0.0, select(sign_negative(x), -1.0, 1.0))
        }

        /// `clamp(q, −c, c)` as burn-ndarray's SIMD min/max compute it (a NaN stays NaN).
        $(#[$attr])*
        pub fn clamp_sym(q: f32, c: f32) -> f32 {
            select(q < -c, -c, select(q > c, c, q))
        }

        /// burn's `clamp_min(x, lo)`: `x < lo ? lo : x`, so a NaN `x` stays NaN (unlike
        /// `f32::max`, which drops it). Sophia-H's denominator `max(h, ε)`, Adafactor's floors.
        $(#[$attr])*
        pub fn clamp_min(x: f32, lo: f32) -> f32 {
            select(x < lo, lo, x)
        }

        /// `1 / √x` (`x.sqrt().recip()`): Adafactor's row and column factors and its
        /// unfactored scale.
        $(#[$attr])*
        pub fn inv_sqrt(x: f32) -> f32 {
            1.0 / f32::sqrt(x)
        }

        /// Adafactor's unclipped, unscaled step of one element: `s·g / d · lr` (`s` the
        /// element's `1/√v̂`, `d` the RMS clipping denominator, `lr` the effective rate).
        $(#[$attr])*
        pub fn adafactor_step(s: f32, g: f32, d: f32, lr: f32) -> f32 {
            s * g / d * lr
        }

        /// The parameter after a descent step `u` that was not scaled by `−lr`: `θ − u`.
        $(#[$attr])*
        pub fn descend(theta: f32, u: f32) -> f32 {
            theta - u
        }

        /// Sophia-G's denominator `h·ρ + ε`.
        $(#[$attr])*
        pub fn sophia_g_den(h: f32, rho: f32, eps: f32) -> f32 {
            h * rho + eps
        }

        /// 8-bit Adam's step `m / (√v + ε·c2) · step_size` (bitsandbytes' order).
        $(#[$attr])*
        pub fn adam8_delta(m: f32, v: f32, eps_c2: f32, step_size: f32) -> f32 {
            m / (f32::sqrt(v) + eps_c2) * step_size
        }

        /// bitsandbytes' decoupled decay folded into the step: `θ − (θ + δ)·keep` with
        /// `keep = 1 − lr·λ` (the descent, to be subtracted from θ).
        $(#[$attr])*
        pub fn adam8_decayed_descent(theta: f32, delta: f32, keep: f32) -> f32 {
            theta - (theta + delta) * keep
        }

        /// bitsandbytes' CUDA nearest code of a normalised `x` in the sorted 256-entry `map`
        /// (its binary search, ties broken as the kernel breaks them; a NaN gives code 0).
        /// `lower0` is the map's lower end (−1 signed, 0 unsigned).
        $(#[$attr])*
        pub fn nearest_code(map: &$table, x: f32, lower0: f32) -> u32 {
            let mut pivot = 127u32;
            let mut lower_pivot = 0u32;
            let mut upper_pivot = 255u32;
            let mut lower = lower0;
            let mut upper = 1.0f32;
            let mut val = map[127];
            let mut step = 64u32;
            while step > 0 {
                let gt = x > val;
                lower_pivot = select(gt, pivot, lower_pivot);
                lower = select(gt, val, lower);
                upper_pivot = select(gt, upper_pivot, pivot);
                upper = select(gt, upper, val);
                pivot = select(gt, pivot + step, pivot - step);
                val = map[(pivot & 255) as usize];
                step /= 2;
            }
            let above = select(x > (upper + val) * 0.5, upper_pivot, pivot);
            let below = select(x < (lower + val) * 0.5, lower_pivot, pivot);
            select(x > val, above, below)
        }

        /// bitsandbytes' sign fix of a first-moment `code` for the unquantized value `v`: a
        /// code whose value has the other sign (`code_negative`) moves one step towards `v`,
        /// wrapping (−0.0 counts as negative, as `signbit` does).
        $(#[$attr])*
        pub fn fix_sign(code: u32, code_negative: bool, v: f32) -> u32 {
            let moved = select(v > 0.0, (code + 1) & 255, (code + 255) & 255);
            select(code_negative != sign_negative(v), moved, code)
        }
    };
}

/// `c ? a : b` with both values already evaluated (the CPU side's primitive for the rules).
#[inline(always)]
fn select<T>(c: bool, a: T, b: T) -> T {
    if c { a } else { b }
}

/// The sign bit of `x` (the CPU side's primitive for the rules).
#[inline(always)]
fn sign_negative(x: f32) -> bool {
    x.is_sign_negative()
}

// `g * -1.0` is burn's `neg`, spelled as the rules must spell it on both sides.
#[allow(clippy::neg_multiply)]
mod expanded {
    use super::{select, sign_negative};
    crate::element_rules!(#[inline(always)]; table = [f32; 256]);
}

pub use expanded::*;
