//! The CubeCL kernels (one unit per element; flags are compile-time, so every variant is a
//! branch-free kernel). Their arithmetic is moment-optim's element rules
//! (`moment_optim::rules`), the same text the CPU kernels expand; what is written here is only
//! each kernel's skeleton: indexing, flags, the 8-bit block reduction.

// The rules spell burn's operations as they are (`x * -1.0` as burn's `neg`); `a = a op b`
// inside `#[cube]` code, which CubeCL expands.
#![allow(clippy::neg_multiply, clippy::assign_op_pattern)]

use cubecl::prelude::*;

// moment-optim's element rules (`moment_optim::rules`), expanded here inside `#[cube]`: the
// GPU kernels below and the CPU kernels call the same text. `select` comes from CubeCL's
// prelude; `sign_negative` is this side's primitive.
moment_optim::element_rules!(#[cube]; table = Tensor<f32>);

/// The sign bit of `x` (the GPU side's primitive for the element rules).
#[cube]
fn sign_negative(x: f32) -> bool {
    u32::reinterpret(x) >= 0x8000_0000u32
}

/// Adam/AdamW, in place on `p`, `m`, `v` (and `vmax` with AMSGrad; a 1-element dummy
/// otherwise). `w1` is 1 − β1 (the lerp weight), `w1_rest` is 1 − w1 in f32.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn adam(
    p: &mut Tensor<f32>,
    g: &Tensor<f32>,
    m: &mut Tensor<f32>,
    v: &mut Tensor<f32>,
    vmax: &mut Tensor<f32>,
    w1: f32,
    w1_rest: f32,
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
        let m1 = lerp(m[i], gi, w1, w1_rest);
        let v1 = ema_sq(v[i], gi, b2, one_minus_b2);
        let mut vu = v1;
        if ams {
            vu = running_max(vmax[i], v1);
            vmax[i] = vu;
        }
        let mut out = adam_direction(m1, vu, inv_bc2_sqrt, eps, inv_bc1);
        if decoupled {
            out = add_decay(out, theta, wd_dec);
        }
        p[i] = apply_update(theta, out, neg_lr);
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
        gi = negate(gi);
    }
    if l2 {
        gi = add_decay(gi, theta, wd_l2);
    }
    gi
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
        let mut u = sign(ema(m0, gi, b1, one_minus_b1));
        m[i] = ema(m0, gi, b2, one_minus_b2);
        if decoupled {
            u = add_decay(u, theta, wd);
        }
        p[i] = apply_update(theta, u, neg_lr);
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
        let mut m1 = ema(m0, gi, b1, w);
        let mut den = sophia_g_den(hi, rho, eps);
        if variant_h {
            m1 = lerp(m0, gi, w, 1.0 - w);
            den = clamp_min(hi, eps);
        }
        let u = clamp_sym(m1 / den, clip);
        if f32::abs(u) < clip {
            wins[CUBE_POS].fetch_add(1u32);
        }
        m[i] = m1;
        let mut step = u;
        if decoupled {
            step = add_decay(step, theta, wd_dec);
        }
        p[i] = apply_update(theta, step, neg_lr);
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
    let m = ema(m_old, g, b1, one_minus_b1);
    let v = ema_sq_bnb(v_old, g, b2, one_minus_b2);
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
        let delta = adam8_delta(m, v, eps_c2, step_size);
        let mut descent = negate(delta);
        if decay {
            descent = adam8_decayed_descent(theta, delta, keep);
        }
        descent = select(finite(gi), descent, 0.0);
        p[i] = theta + negate(descent);
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
        let k1 = nearest_code(map1, y1, -1.0);
        // bitsandbytes' sign fix: the code keeps the sign of the unquantized value.
        let k1 = fix_sign(k1, sign_negative(map1[k1 as usize]), m);
        // All units have read their old codes (the reduction synchronised the cube).
        c1[i] = C::cast_from(k1);
        c2[i] = C::cast_from(nearest_code(map2, y2, 0.0));
        i += units;
    }
    if UNIT_POS == 0 {
        a1[b] = n1;
        a2[b] = n2;
    }
}
