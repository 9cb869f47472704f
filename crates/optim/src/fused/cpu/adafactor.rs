//! Adafactor on the CPU: the statistics, the update's RMS and the parameter step, in passes
//! over fixed blocks of rows on the worker pool.

use burn::tensor::{Tensor, backend::Backend};

use super::buf::{Buf, put_floats, take_floats, take_param_grad};
use super::pool::{PARALLEL_MIN, run_jobs, threads};
use crate::fused::FusedAdafactor;
use crate::rules;
use crate::transform::TransformState;

/// `Σ f(a_i, b_i)` in 16 f32 lanes (vectorizes), the lanes added in f64.
#[inline(always)]
fn lane_sum(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> f64 {
    let mut acc = [0.0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..16 {
            acc[k] += f(x[k], y[k]);
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(&x, &y)| f(x, y)).sum();
    acc.iter().map(|&a| f64::from(a)).sum::<f64>() + f64::from(tail)
}

/// One row of Adafactor's statistics: adds `(g·sign)² + add` to the column sums `cols`
/// (f64) and returns the row's sum ([`lane_sum`]). A function with a `&mut` argument, so
/// the column sums are known not to alias anything else (vectorizes).
#[inline(always)]
fn col_sum_row(cols: &mut [f64], g: &[f32], sign: f32, add: f32) -> f64 {
    let u = |gv: f32| {
        let gv = gv * sign;
        gv * gv + add
    };
    for (cs, &gv) in cols.iter_mut().zip(g) {
        *cs += f64::from(u(gv));
    }
    lane_sum(g, g, |gv, _| u(gv))
}

/// Greatest common divisor.
fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// The step's second-moment constants (rounded as the composed chain rounds them), and the
/// vector form's second-moment update of one row, as the composed chain computes it:
/// HF `v·β2t + (g² + ε1)·(1 − β2t)`, torch `lerp(v, g², w)`.
#[derive(Clone, Copy)]
struct SecondMomentRow {
    sign: f32,
    hf: bool,
    b2t: f32,
    one_minus_b2t: f32,
    eps1: f32,
    w: f32,
}

impl SecondMomentRow {
    /// `lerp(a, b, w)` as the composed chain computes it.
    #[inline(always)]
    fn lerp(self, a: f32, b: f32) -> f32 {
        rules::lerp(a, b, self.w, 1.0 - self.w)
    }

    /// A method with plain-value fields and a `&mut` argument, so LLVM knows the row does
    /// not alias them: as a closure over captured references it reloaded them per element
    /// and stayed scalar (two thirds of the first pass).
    #[inline(always)]
    fn apply(self, v: &mut [f32], g: &[f32]) {
        let Self {
            sign,
            hf,
            b2t,
            one_minus_b2t,
            eps1,
            w,
        } = self;
        if hf {
            // v ← v·β2t + (g² + ε1)·(1 − β2t)
            for (x, &gv) in v.iter_mut().zip(g) {
                let gv = gv * sign;
                *x = rules::ema(*x, gv * gv + eps1, b2t, one_minus_b2t);
            }
        } else {
            // v ← lerp(v, g², w) as torch computes it (the side of the smaller weight)
            let one_minus_w = 1.0 - w;
            for (x, &gv) in v.iter_mut().zip(g) {
                let gv = gv * sign;
                *x = rules::lerp(*x, gv * gv, w, one_minus_w);
            }
        }
    }
}

/// What [`adafactor`]'s passes need to scale a row of the gradient.
#[derive(Clone, Copy)]
struct AdafactorScales<'a> {
    factored: Option<(usize, usize, usize)>,
    r_dim: usize,
    rowf: &'a [f32],
    colf: &'a [f32],
    norm: &'a [f32],
    hf: bool,
    eps_sq: f32,
}

impl AdafactorScales<'_> {
    /// Row `row`'s scales of the update `scale·g` into `out` (factored: from the row and
    /// column factors; full: from the row's slice `v` of the second moment). Always
    /// inlined, so it runs at the SIMD level of the pass (out of line it was compiled for
    /// baseline SSE2: 4-wide `sqrt` and division, about half of the vector form's step).
    #[inline(always)]
    fn fill(&self, row: usize, v: &[f32], out: &mut [f32]) {
        let (hf, eps_sq) = (self.hf, self.eps_sq);
        match self.factored {
            Some((_, _, c)) => {
                let li = row / self.r_dim;
                let cf = &self.colf[li * c..(li + 1) * c];
                let rr = self.rowf[row];
                if hf {
                    for (o, &x) in out.iter_mut().zip(cf) {
                        *o = rr * x;
                    }
                } else {
                    let nm = self.norm[li];
                    for (o, &x) in out.iter_mut().zip(cf) {
                        *o = rules::inv_sqrt(rules::clamp_min((rr * x) / nm, eps_sq));
                    }
                }
            }
            None => {
                if hf {
                    for (o, &x) in out.iter_mut().zip(v) {
                        *o = rules::inv_sqrt(x);
                    }
                } else {
                    for (o, &x) in out.iter_mut().zip(v) {
                        *o = rules::inv_sqrt(rules::clamp_min(x, eps_sq));
                    }
                }
            }
        }
    }
}

/// `xs` in runs of `len` elements (at least one), the last one shorter.
fn runs<T>(xs: &mut [T], len: usize) -> Vec<&mut [T]> {
    xs.chunks_mut(len.max(1)).collect()
}

/// [`adafactor`]'s rows, blocks and groups, fixed by the shape (so the sums do not depend on
/// the thread count), and how many blocks each thread takes.
#[derive(Clone, Copy)]
struct Layout {
    /// Elements per row (a factored tensor's columns; 1024 for a vector).
    width: usize,
    /// Rows per leading index (`r` of a factored `(l, r, c)`; 1 for a vector).
    r_dim: usize,
    /// Rows per block.
    block_rows: usize,
    /// Elements per block.
    block: usize,
    /// Blocks in the tensor.
    nblocks: usize,
    /// Blocks per group (factored: one set of partial column sums per group).
    group_blocks: usize,
    /// Groups in the tensor.
    ngroups: usize,
    /// Blocks per thread (whole groups).
    per: usize,
}

impl Layout {
    fn new(n: usize, factored: Option<(usize, usize, usize)>) -> Self {
        // Rows of `width` elements; blocks of whole rows (≈ 8k elements), fixed by the shape.
        let (rows, width) = match factored {
            Some((l, r, c)) => (l * r, c),
            None => (n.div_ceil(1024), 1024),
        };
        let r_dim = factored.map_or(1, |(_, r, _)| r);
        let block_rows = (8192 / width).max(1);
        let block = block_rows * width;
        let nblocks = rows.div_ceil(block_rows);
        // Factored: the column sums are kept per group of blocks (≈ 256k elements), fixed by
        // the shape, so they do not depend on the thread count; threads take whole groups. A
        // group stays within one leading index when it can (its rows divide `r`). Per block,
        // the partial sums cost 8 bytes × columns every `block_rows` rows: 4 B/param more
        // traffic for a 4096-wide matrix.
        let group_blocks = match factored {
            Some((l, r, _)) if l > 1 && r.is_multiple_of(block_rows) => gcd(r / block_rows, 32),
            Some(_) => 32,
            None => 1,
        };
        let ngroups = nblocks.div_ceil(group_blocks);
        let nt = threads().min(n.div_ceil(PARALLEL_MIN)).max(1).min(ngroups);
        let per = ngroups.div_ceil(nt) * group_blocks;
        Self {
            width,
            r_dim,
            block_rows,
            block,
            nblocks,
            group_blocks,
            ngroups,
            per,
        }
    }
}

/// The factors [`AdafactorScales`] reads: HF `(r_factor, c_factor, [])`, torch
/// `(row, col, norm)`.
type Factors = (Vec<f32>, Vec<f32>, Vec<f32>);

/// [`FusedAdafactor`] on ndarray/flex: everything taken out of the tensors; the
/// passes run over fixed blocks of whole rows (a factored tensor's rows; 1024-element rows
/// for a vector) on the worker pool; put back.
#[allow(clippy::result_large_err)]
pub(in crate::fused) fn adafactor<B: Backend>(
    fused: &FusedAdafactor,
    lr: f64,
    factored: Option<(usize, usize, usize)>,
    param: Tensor<B, 1>,
    grad: Tensor<B, 1>,
    st: &mut TransformState<B>,
) -> Result<Tensor<B, 1>, (Tensor<B, 1>, Tensor<B, 1>)> {
    use crate::transforms::AdafactorConvention;
    let t = &fused.transform;
    let n = param.dims()[0];
    let k = st.tensors.len();
    let (mut p, g) = take_param_grad(param, grad)?;
    let Some(mut bufs) = take_floats(st, k) else {
        return Err((p.back(), g.back()));
    };
    // Nothing can fail from here on.
    let step = crate::fused::advance_step(st);
    let tf = step as f64;
    let hf = t.convention == AdafactorConvention::Transformers;
    let one_minus_b2 = tf.powf(t.decay_rate);
    let b2t = 1.0 - one_minus_b2;
    let mom = SecondMomentRow {
        sign: if fused.maximize { -1.0f32 } else { 1.0 },
        hf,
        b2t: b2t as f32,
        one_minus_b2t: (1.0 - b2t) as f32,
        eps1: t.eps1 as f32,
        // the weight of `lerp(a, b, w)`
        w: one_minus_b2 as f32,
    };
    let eps_sq = (t.eps1 * t.eps1) as f32;
    let lay = Layout::new(n, factored);
    let ps = p.slice_mut();
    let mut m_buf = t.beta1.and_then(|_| bufs.pop());
    g.with(|gs| {
        // --- pass 0 (factored): row sums and per-block column sums of g² (+ ε1), in f64 ---
        let (rowf, colf, norm): Factors = match factored {
            Some(lrc) => {
                let Some(f) = factored_statistics(gs, lrc, &lay, mom, &mut bufs) else {
                    return;
                };
                f
            }
            None => (Vec::new(), Vec::new(), Vec::new()),
        };
        let full = factored.is_none();
        let scales = AdafactorScales {
            factored,
            r_dim: lay.r_dim,
            rowf: &rowf,
            colf: &colf,
            norm: &norm,
            hf,
            eps_sq,
        };
        // --- pass 1: (full: the second moment;) Σ upd² and Σ θ² per block, in f64 ---
        let vs: &mut [f32] = match (full, bufs.first_mut()) {
            (true, Some(v)) => v.slice_mut(),
            _ => &mut [],
        };
        let sums = first_pass(ps, gs, vs, &lay, scales, mom);
        let up = UpdateScale::new(t, lr, tf, hf, n, &sums);
        // --- pass 2: θ ← θ − step (β1 EMA and decay as the composed chain orders them) ---
        let vs: &[f32] = match (full, bufs.first_mut()) {
            (true, Some(v)) => v.slice_mut(),
            _ => &[],
        };
        let ms: &mut [f32] = match m_buf.as_mut() {
            Some(m) => m.slice_mut(),
            None => &mut [],
        };
        second_pass(ps, gs, vs, ms, &lay, scales, mom.sign, up);
    });
    if let Some(m) = m_buf {
        bufs.push(m);
    }
    put_floats(st, bufs);
    drop(g);
    Ok(p.back())
}

/// Pass 0 of a factored `(l, r, c)` tensor: the row and column sums of `g²` (+ ε1), the row
/// and column statistics (`bufs[0]`, `bufs[1]`) updated with them, and the [`Factors`]; `None`
/// (statistics untouched) without two statistics tensors (checked by the caller).
fn factored_statistics(
    gs: &[f32],
    (l, r, c): (usize, usize, usize),
    lay: &Layout,
    mom: SecondMomentRow,
    bufs: &mut [Buf<f32>],
) -> Option<Factors> {
    let (row_sums, col_sums) = statistic_sums(gs, (l, r, c), lay, mom);
    // (two statistics tensors: checked by the caller)
    let [row_state, col_state, ..] = bufs else {
        return None;
    };
    let (rs, cs) = (row_state.slice_mut(), col_state.slice_mut());
    Some(if mom.hf {
        hf_factors(rs, cs, &row_sums, &col_sums, (l, r, c), mom)
    } else {
        torch_factors(rs, cs, &row_sums, &col_sums, (l, r, c), mom)
    })
}

/// The row sums and the column sums (per leading index) of `(g·sign)²` (+ ε1 for HF), in
/// f64: row by row on the worker pool, the column sums in parts per group of blocks.
fn statistic_sums(
    gs: &[f32],
    (l, r, c): (usize, usize, usize),
    lay: &Layout,
    mom: SecondMomentRow,
) -> (Vec<f64>, Vec<f64>) {
    let Layout {
        block_rows,
        block,
        group_blocks,
        ngroups,
        per,
        ..
    } = *lay;
    let mut row_sums = vec![0.0f64; l * r];
    let mut col_parts = vec![0.0f64; ngroups * c];
    let group_rows = group_blocks * block_rows;
    let jobs: Vec<_> = gs
        .chunks(per * block)
        .zip(runs(&mut row_sums, per * block_rows))
        .zip(runs(&mut col_parts, per / group_blocks * c))
        .collect();
    let (add, sign) = (if mom.hf { mom.eps1 } else { 0.0 }, mom.sign);
    run_jobs(
        jobs,
        #[inline(always)]
        |((gj, rows), cols)| {
            {
                let it = gj.chunks(group_rows * c).zip(rows.chunks_mut(group_rows));
                for ((gb, rb), cb) in it.zip(cols.chunks_mut(c)) {
                    for (grow, rs) in gb.chunks(c).zip(rb.iter_mut()) {
                        *rs = col_sum_row(cb, grow, sign, add);
                    }
                }
            }
            0
        },
    );
    let col_sums = column_sums(gs, &col_parts, (l, r, c), group_rows, mom);
    (row_sums, col_sums)
}

/// Column sums per leading index. A group of whole rows lies within one leading index when
/// `r` is a multiple of the group's rows (or `l` = 1): then its partial sums `col_parts` are
/// added up; otherwise the sums are taken row by row.
fn column_sums(
    gs: &[f32],
    col_parts: &[f64],
    (l, r, c): (usize, usize, usize),
    group_rows: usize,
    mom: SecondMomentRow,
) -> Vec<f64> {
    let (hf, eps1, sign) = (mom.hf, mom.eps1, mom.sign);
    let mut col_sums = vec![0.0f64; l * c];
    if r.is_multiple_of(group_rows) || l == 1 {
        for (b, part) in col_parts.chunks(c).enumerate() {
            let li = (b * group_rows) / r;
            for (s, x) in col_sums[li * c..(li + 1) * c].iter_mut().zip(part) {
                *s += x;
            }
        }
    } else {
        for row in 0..l * r {
            let li = row / r;
            let grow = &gs[row * c..(row + 1) * c];
            for (s, &gv) in col_sums[li * c..(li + 1) * c].iter_mut().zip(grow) {
                let gv = gv * sign;
                let u = if hf { gv * gv + eps1 } else { gv * gv };
                *s += f64::from(u);
            }
        }
    }
    col_sums
}

/// HF: the row and column statistics `rs`, `cs` updated from the sums, and their factors.
fn hf_factors(
    rs: &mut [f32],
    cs: &mut [f32],
    row_sums: &[f64],
    col_sums: &[f64],
    (l, r, c): (usize, usize, usize),
    mom: SecondMomentRow,
) -> Factors {
    let (b2t32, omb32) = (mom.b2t, mom.one_minus_b2t);
    // row ← row·β2t + mean_j(g² + ε1)·(1 − β2t); same for columns
    for (x, s) in rs.iter_mut().zip(row_sums) {
        *x = rules::ema(*x, (*s / c as f64) as f32, b2t32, omb32);
    }
    for (x, s) in cs.iter_mut().zip(col_sums) {
        *x = rules::ema(*x, (*s / r as f64) as f32, b2t32, omb32);
    }
    // r_factor = 1/√(row / mean_i row), c_factor = 1/√col
    let mut rf = vec![0.0f32; l * r];
    for li in 0..l {
        let rows = &rs[li * r..(li + 1) * r];
        let sum: f64 = rows.iter().map(|&x| f64::from(x)).sum();
        let mean = (sum / r as f64) as f32;
        for (f, &x) in rf[li * r..(li + 1) * r].iter_mut().zip(rows) {
            *f = rules::inv_sqrt(x / mean);
        }
    }
    let cf: Vec<f32> = cs.iter().map(|&x| rules::inv_sqrt(x)).collect();
    (rf, cf, Vec::new())
}

/// torch: the row and column statistics `rs`, `cs` updated from the sums (‖g‖²/size per row
/// and column, lerped), and the norm per leading index, `max(mean_i row, ε1)`.
fn torch_factors(
    rs: &mut [f32],
    cs: &mut [f32],
    row_sums: &[f64],
    col_sums: &[f64],
    (l, r, c): (usize, usize, usize),
    mom: SecondMomentRow,
) -> Factors {
    for (x, s) in rs.iter_mut().zip(row_sums) {
        let m = (*s as f32).sqrt();
        *x = mom.lerp(*x, m * m / c as f32);
    }
    for (x, s) in cs.iter_mut().zip(col_sums) {
        let m = (*s as f32).sqrt();
        *x = mom.lerp(*x, m * m / r as f32);
    }
    let norm: Vec<f32> = (0..l)
        .map(|li| {
            let rows = &rs[li * r..(li + 1) * r];
            let sum: f64 = rows.iter().map(|&x| f64::from(x)).sum();
            rules::clamp_min((sum / r as f64) as f32, mom.eps1)
        })
        .collect();
    (rs.to_vec(), cs.to_vec(), norm)
}

/// Pass 1: (a vector: the second moment `vs`, row by row;) `Σ upd²` and `Σ θ²` per block, in
/// f64.
fn first_pass(
    ps: &[f32],
    gs: &[f32],
    vs: &mut [f32],
    lay: &Layout,
    scales: AdafactorScales<'_>,
    mom: SecondMomentRow,
) -> Vec<(f64, f64)> {
    let Layout {
        width,
        block_rows,
        block,
        nblocks,
        per,
        ..
    } = *lay;
    let full = scales.factored.is_none();
    let sign = mom.sign;
    let fill_scale = |row: usize, v: &[f32], out: &mut [f32]| scales.fill(row, v, out);
    let vrow_update = mom;
    let mut sums = vec![(0.0f64, 0.0f64); nblocks];
    {
        let mut vruns = runs(vs, per * block).into_iter();
        let jobs: Vec<_> = ps
            .chunks(per * block)
            .zip(gs.chunks(per * block))
            .zip(runs(&mut sums, per))
            .enumerate()
            .map(|(i, x)| (i, x, if full { vruns.next() } else { None }))
            .collect();
        run_jobs(
            jobs,
            #[inline(always)]
            |(ji, ((pj, gj), sj), mut vj)| {
                {
                    let mut srow = vec![0.0f32; width];
                    let blocks = pj.chunks(block).zip(gj.chunks(block)).zip(sj.iter_mut());
                    for (bi, ((pb, gb), s)) in blocks.enumerate() {
                        let first = (ji * per + bi) * block_rows;
                        let (mut su, mut sp) = (0.0f64, 0.0f64);
                        for (ri, (prow, grow)) in pb.chunks(width).zip(gb.chunks(width)).enumerate()
                        {
                            let row = first + ri;
                            let w = prow.len();
                            let vrow: &[f32] = match vj.as_deref_mut() {
                                Some(v) => {
                                    let off = bi * block + ri * width;
                                    let vr = &mut v[off..off + w];
                                    vrow_update.apply(vr, grow);
                                    vr
                                }
                                None => &[],
                            };
                            let srow = &mut srow[..w];
                            fill_scale(row, vrow, srow);
                            su += lane_sum(srow, grow, |s, gv| {
                                let u = s * (gv * sign);
                                u * u
                            });
                            sp += lane_sum(prow, prow, |x, _| x * x);
                        }
                        *s = (su, sp);
                    }
                }
                0
            },
        );
    }
    sums
}

/// What pass 2 scales the update by, from pass 1's sums: the effective learning rate (relative
/// to the parameter's RMS when parameter-scaled), the clipping denominator, β1 and the decay.
#[derive(Clone, Copy)]
struct UpdateScale {
    lr_eff: f32,
    denom: f32,
    b1: Option<(f32, f32)>,
    decay: Option<f32>,
}

impl UpdateScale {
    fn new(
        t: &crate::transforms::ScaleByAdafactor,
        lr: f64,
        tf: f64,
        hf: bool,
        n: usize,
        sums: &[(f64, f64)],
    ) -> Self {
        let (su, sp) = sums
            .iter()
            .fold((0.0f64, 0.0f64), |a, b| (a.0 + b.0, a.1 + b.1));
        let sqrt_n = (n as f64).sqrt() as f32;
        let rms_u = (su as f32).sqrt() / sqrt_n;
        let rho = t.rho(lr, tf);
        let scaled = t.scale_parameter || !hf;
        let lr_eff = if scaled {
            rules::clamp_min((sp as f32).sqrt() / sqrt_n, t.eps2 as f32) * rho as f32
        } else {
            rho as f32
        };
        // burn's `clamp_min` (a NaN RMS stays NaN, as in the composed chain; `f32::max` would drop it)
        let denom = rules::clamp_min(rms_u / t.clip_threshold as f32, 1.0);
        let b1 = t.beta1.map(|b| (b as f32, (1.0 - b) as f32));
        let decay = (t.weight_decay > 0.0).then_some(if hf {
            lr_eff * t.weight_decay as f32
        } else {
            (lr * t.weight_decay) as f32
        });
        Self {
            lr_eff,
            denom,
            b1,
            decay,
        }
    }
}

/// Pass 2: `θ ← θ − step` (a vector: scaled by the second moment `vs`; with β1 the EMA `ms`;
/// β1 EMA and decay as the composed chain orders them).
fn second_pass(
    ps: &mut [f32],
    gs: &[f32],
    vs: &[f32],
    ms: &mut [f32],
    lay: &Layout,
    scales: AdafactorScales<'_>,
    sign: f32,
    up: UpdateScale,
) {
    let Layout {
        width, block, per, ..
    } = *lay;
    let full = scales.factored.is_none();
    let UpdateScale {
        lr_eff,
        denom,
        b1,
        decay,
    } = up;
    let fill_scale = |row: usize, v: &[f32], out: &mut [f32]| scales.fill(row, v, out);
    let mut mruns = runs(ms, per * block).into_iter();
    let jobs: Vec<_> = ps
        .chunks_mut(per * block)
        .zip(gs.chunks(per * block))
        .enumerate()
        .map(|(i, x)| (i, x, if b1.is_some() { mruns.next() } else { None }))
        .collect();
    run_jobs(
        jobs,
        #[inline(always)]
        |(ji, (pj, gj), mut mj)| {
            {
                let base = ji * per * block;
                let mut srow = vec![0.0f32; width];
                let d = decay.unwrap_or(0.0);
                let rows = pj.chunks_mut(width).zip(gj.chunks(width));
                for (ri, (prow, grow)) in rows.enumerate() {
                    let row = base / width + ri;
                    let (off, w) = (ri * width, prow.len());
                    let vrow = if full {
                        &vs[base + off..base + off + w]
                    } else {
                        &[][..]
                    };
                    let srow = &mut srow[..w];
                    fill_scale(row, vrow, srow);
                    let step = |s: f32, gv: f32| rules::adafactor_step(s, gv * sign, denom, lr_eff);
                    match (mj.as_deref_mut(), b1) {
                        (Some(m), Some((b1, omb1))) => {
                            let m = &mut m[off..off + w];
                            let it = prow.iter_mut().zip(grow).zip(&*srow).zip(m);
                            for (((pv, &gv), &s), mv) in it {
                                *mv = rules::ema(*mv, step(s, gv), b1, omb1);
                                let mut u = *mv;
                                if decay.is_some() {
                                    u = rules::add_decay(u, *pv, d);
                                }
                                *pv = rules::descend(*pv, u);
                            }
                        }
                        _ if decay.is_some() => {
                            for ((pv, &gv), &s) in prow.iter_mut().zip(grow).zip(&*srow) {
                                let u = rules::add_decay(step(s, gv), *pv, d);
                                *pv = rules::descend(*pv, u);
                            }
                        }
                        _ => {
                            for ((pv, &gv), &s) in prow.iter_mut().zip(grow).zip(&*srow) {
                                *pv = rules::descend(*pv, step(s, gv));
                            }
                        }
                    }
                }
            }
            0
        },
    );
}
