//! The CubeCL kernels (one unit per element; flags are compile-time, so every variant is a
//! branch-free kernel). Each repeats the f32 operations of the matching CPU kernel in
//! moment-optim's `fused` module in the same order.

// The kernels spell the CPU kernels' operations as they are (`x * -1.0` as burn's `neg`,
// `a = a op b` inside `#[cube]` code, which CubeCL expands).
#![allow(clippy::neg_multiply, clippy::assign_op_pattern)]

use cubecl::prelude::*;

/// Adam/AdamW, in place on `p`, `m`, `v` (and `vmax` with AMSGrad; a 1-element dummy
/// otherwise).
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn adam(
    p: &mut Tensor<f32>,
    g: &Tensor<f32>,
    m: &mut Tensor<f32>,
    v: &mut Tensor<f32>,
    vmax: &mut Tensor<f32>,
    one_minus_b1: f32,
    b2: f32,
    one_minus_b2: f32,
    inv_bc2_sqrt: f32,
    eps: f32,
    inv_bc1: f32,
    neg_lr: f32,
    wd_l2: f32,
    wd_dec: f32,
    #[comptime] maximize: bool,
    #[comptime] l2: bool,
    #[comptime] decoupled: bool,
    #[comptime] ams: bool,
) {
    let i = ABSOLUTE_POS;
    if i < p.len() {
        let theta = p[i];
        let gi = grad_in(g[i], theta, wd_l2, maximize, l2);
        let m0 = m[i];
        let m1 = m0 + (gi - m0) * one_minus_b1;
        let v1 = v[i] * b2 + gi * gi * one_minus_b2;
        let mut vu = v1;
        if ams {
            let x = vmax[i];
            vu = select(x < v1, v1, x);
            vmax[i] = vu;
        }
        let den = f32::sqrt(vu) * inv_bc2_sqrt + eps;
        let mut out = m1 / den * inv_bc1;
        if decoupled {
            out += theta * wd_dec;
        }
        p[i] = theta + out * neg_lr;
        m[i] = m1;
        v[i] = v1;
    }
}

/// The gradient the update sees: negated with `maximize`, plus coupled L2 decay `λ·θ`.
#[cube]
fn grad_in(
    g: f32,
    theta: f32,
    wd_l2: f32,
    #[comptime] maximize: bool,
    #[comptime] l2: bool,
) -> f32 {
    let mut gi = g;
    if maximize {
        gi = gi * -1.0;
    }
    if l2 {
        gi += theta * wd_l2;
    }
    gi
}

/// `sign` as the CPU kernels compute it: 0 for ±0, else ±1 by the sign bit.
#[cube]
fn sign_bit(x: f32) -> f32 {
    let neg = u32::reinterpret(x) >= 0x8000_0000u32;
    select(x == 0.0, 0.0, select(neg, -1.0, 1.0))
}

/// Lion, in place on `p` and `m`.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn lion(
    p: &mut Tensor<f32>,
    g: &Tensor<f32>,
    m: &mut Tensor<f32>,
    b1: f32,
    one_minus_b1: f32,
    b2: f32,
    one_minus_b2: f32,
    wd: f32,
    neg_lr: f32,
    #[comptime] maximize: bool,
    #[comptime] decoupled: bool,
) {
    let i = ABSOLUTE_POS;
    if i < p.len() {
        let theta = p[i];
        let gi = grad_in(g[i], theta, 0.0, maximize, false);
        let m0 = m[i];
        let mut u = sign_bit(m0 * b1 + gi * one_minus_b1);
        m[i] = m0 * b2 + gi * one_minus_b2;
        if decoupled {
            u += theta * wd;
        }
        p[i] = theta + u * neg_lr;
    }
}

/// Sophia (both variants), in place on `p` and `m`; `h` is read only. Each unclipped
/// coordinate adds one to `wins[CUBE_POS]` (summed on the host side of the launch).
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn sophia(
    p: &mut Tensor<f32>,
    g: &Tensor<f32>,
    m: &mut Tensor<f32>,
    h: &Tensor<f32>,
    wins: &mut Tensor<Atomic<u32>>,
    b1: f32,
    w: f32,
    rho: f32,
    eps: f32,
    clip: f32,
    wd_l2: f32,
    wd_dec: f32,
    neg_lr: f32,
    #[comptime] maximize: bool,
    #[comptime] l2: bool,
    #[comptime] decoupled: bool,
    #[comptime] variant_h: bool,
) {
    let i = ABSOLUTE_POS;
    if i < p.len() {
        let theta = p[i];
        let gi = grad_in(g[i], theta, wd_l2, maximize, l2);
        let m0 = m[i];
        let hi = h[i];
        let mut m1 = m0 * b1 + gi * w;
        let mut den = hi * rho + eps;
        if variant_h {
            // lerp as `transforms::lerp` rounds it; max(h, ε)
            m1 = select(
                f32::abs(w) < 0.5,
                m0 + (gi - m0) * w,
                gi - (gi - m0) * (1.0 - w),
            );
            den = select(hi < eps, eps, hi);
        }
        let q = m1 / den;
        let u = select(q < -clip, -clip, select(q > clip, clip, q));
        if f32::abs(u) < clip {
            wins[CUBE_POS].fetch_add(1u32);
        }
        m[i] = m1;
        let mut step = u;
        if decoupled {
            step += theta * wd_dec;
        }
        p[i] = theta + step * neg_lr;
    }
}

/// Sophia's win rate: `Σ wins / n` into `out[0]` (one unit; `wins` holds the per-cube counts
/// of [`sophia`]).
#[cube(launch)]
pub fn win_rate(wins: &Tensor<u32>, out: &mut Tensor<f32>, n: f32) {
    if ABSOLUTE_POS == 0 {
        let mut s = 0u32;
        for i in 0..wins.len() {
            s += wins[i];
        }
        out[0] = f32::cast_from(s) / n;
    }
}

/// Whether `x` is finite, by its exponent bits (immune to fast-math assumptions).
#[cube]
fn finite(x: f32) -> bool {
    (u32::reinterpret(x) & 0x7f80_0000u32) != 0x7f80_0000u32
}

/// `QuantMap::nearest` of moment-optim: the index of the code nearest to `x` in the sorted
/// 256-entry `map` (bitsandbytes' binary search, ties as the kernel breaks them).
#[cube]
fn nearest(map: &Tensor<f32>, x: f32, lower0: f32) -> u32 {
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

/// Max-abs of the cube's `x` values (NaN ignored), in `sh` (one slot per unit; the cube size
/// a power of two); every unit gets the result.
#[cube]
fn cube_max(sh: &mut SharedMemory<f32>, x: f32) -> f32 {
    let u = UNIT_POS as usize;
    sh[u] = x;
    sync_cube();
    // The cube has `units` units (CUBE_DIM, a runtime value the loop can count down).
    let mut s = (CUBE_DIM / 2) as usize;
    while s > 0 {
        if u < s {
            let o = sh[u + s];
            sh[u] = select(o > sh[u], o, sh[u]);
        }
        sync_cube();
        s /= 2;
    }
    let out = sh[0];
    sync_cube();
    out
}

/// The 8-bit moments of element `i` after this step (`skip`: non-finite gradient).
#[cube]
#[allow(clippy::too_many_arguments)]
fn moments8<C: Int>(
    gi: f32,
    c1: &Tensor<C>,
    c2: &Tensor<C>,
    map1: &Tensor<f32>,
    map2: &Tensor<f32>,
    i: usize,
    old1: f32,
    old2: f32,
    b1: f32,
    one_minus_b1: f32,
    b2: f32,
    one_minus_b2: f32,
) -> (f32, f32) {
    let skip = !finite(gi);
    let g = select(skip, 0.0, gi);
    let m_old = map1[u32::cast_from(c1[i]) as usize] * old1;
    let v_old = map2[u32::cast_from(c2[i]) as usize] * old2;
    let m = m_old * b1 + g * one_minus_b1;
    let v = v_old * b2 + g * one_minus_b2 * g;
    (select(skip, 0.0, m), select(skip, 0.0, v))
}

/// 8-bit blockwise Adam/AdamW (bitsandbytes' CUDA-kernel semantics; codes stored as `C`: `u8`,
/// or `i32` where the runtime has no 8-bit storage), one cube per
/// quantization block of `block` elements: decode both moments, update them and `p`, reduce
/// the block's new max-abs in shared memory, re-encode (the second pass recomputes the moments
/// from the old codes, which no unit has overwritten yet).
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn adam8bit<C: Int>(
    p: &mut Tensor<f32>,
    g: &Tensor<f32>,
    c1: &mut Tensor<C>,
    c2: &mut Tensor<C>,
    a1: &mut Tensor<f32>,
    a2: &mut Tensor<f32>,
    map1: &Tensor<f32>,
    map2: &Tensor<f32>,
    b1: f32,
    one_minus_b1: f32,
    b2: f32,
    one_minus_b2: f32,
    eps_c2: f32,
    step_size: f32,
    keep: f32,
    block: u32,
    #[comptime] decay: bool,
    #[comptime] units: usize,
    #[define(C)] _codes: StorageType,
) {
    let b = CUBE_POS;
    if b >= a1.len() {
        terminate!();
    }
    let n = p.len();
    let start = b * block as usize;
    let end = select(start + block as usize > n, n, start + block as usize);
    let old1 = a1[b];
    let old2 = a2[b];
    let mut n1 = 0.0f32;
    let mut n2 = 0.0f32;
    let mut i = start + UNIT_POS as usize;
    while i < end {
        let gi = g[i];
        let (m, v) = moments8(
            gi,
            c1,
            c2,
            map1,
            map2,
            i,
            old1,
            old2,
            b1,
            one_minus_b1,
            b2,
            one_minus_b2,
        );
        let theta = p[i];
        let delta = m / (f32::sqrt(v) + eps_c2) * step_size;
        let mut descent = delta * -1.0;
        if decay {
            descent = theta - (theta + delta) * keep;
        }
        descent = select(finite(gi), descent, 0.0);
        p[i] = theta + descent * -1.0;
        let (ma, va) = (f32::abs(m), f32::abs(v));
        n1 = select(ma > n1, ma, n1);
        n2 = select(va > n2, va, n2);
        i += units;
    }
    let mut sh = SharedMemory::<f32>::new(units);
    let n1 = cube_max(&mut sh, n1);
    let n2 = cube_max(&mut sh, n2);
    let mut i = start + UNIT_POS as usize;
    while i < end {
        let (m, v) = moments8(
            g[i],
            c1,
            c2,
            map1,
            map2,
            i,
            old1,
            old2,
            b1,
            one_minus_b1,
            b2,
            one_minus_b2,
        );
        let y1 = select(n1 > 0.0, m / n1, 0.0);
        let y2 = select(n2 > 0.0, v / n2, 0.0);
        let mut k1 = nearest(map1, y1, -1.0);
        // bitsandbytes' sign fix: the code keeps the sign of the unquantized value.
        let neg_code = u32::reinterpret(map1[k1 as usize]) >= 0x8000_0000u32;
        let neg_val = u32::reinterpret(m) >= 0x8000_0000u32;
        if neg_code != neg_val {
            k1 = select(m > 0.0, (k1 + 1) & 255, (k1 + 255) & 255);
        }
        // All units have read their old codes (the reduction synchronised the cube).
        c1[i] = C::cast_from(k1);
        c2[i] = C::cast_from(nearest(map2, y2, 0.0));
        i += units;
    }
    if UNIT_POS == 0 {
        a1[b] = n1;
        a2[b] = n2;
    }
}
