//! 8-bit blockwise Adam/AdamW on the CPU: block decoders, the per-block update and encoder,
//! and the driver that splits whole blocks over the threads.

use burn::tensor::{Int, Tensor, backend::Backend};

use super::buf::{Buf, put_floats, take_floats, take_param_grad};
use super::pool::{PARALLEL_MIN, run_jobs, threads};
use crate::fused::{Adam8Scalars, FusedAdam8bit};
use crate::rules;
use crate::transform::TransformState;

/// One thread's share of an 8-bit step: whole blocks of the parameter `p`, its gradient
/// `g`, both moments' codes and one max-abs per block (`a1`, `a2`).
struct Blocks8<'a> {
    p: &'a mut [f32],
    g: &'a [f32],
    c1: &'a mut [u8],
    c2: &'a mut [u8],
    a1: &'a mut [f32],
    a2: &'a mut [f32],
}

/// How a block's codes become values: `out[i] = table[codes[i]] · scale`.
trait DecodeCodes: Copy {
    fn decode(self, table: &[f32; 256], codes: &[u8], scale: f32, out: &mut [f32]);
}

/// One table load per code.
#[derive(Clone, Copy)]
struct LoadDecode;

impl DecodeCodes for LoadDecode {
    #[inline(always)]
    fn decode(self, table: &[f32; 256], codes: &[u8], scale: f32, out: &mut [f32]) {
        for (o, &k) in out.iter_mut().zip(codes) {
            *o = table[k as usize] * scale;
        }
    }
}

/// The table held in 16 AVX-512 registers, 16 codes at a time: eight two-register
/// permutes pick by the low 5 bits, three rounds of blends by bits 5–7 (LLVM leaves the
/// table loads scalar; 0.19 vs 0.36 ns per code here). Exists only where the CPU has
/// AVX-512F.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct PermuteDecode(());

#[cfg(target_arch = "x86_64")]
impl PermuteDecode {
    fn detect() -> Option<Self> {
        (crate::simd_level() == crate::SimdLevel::Avx512).then_some(Self(()))
    }
}

#[cfg(target_arch = "x86_64")]
impl DecodeCodes for PermuteDecode {
    #[inline(always)]
    fn decode(self, table: &[f32; 256], codes: &[u8], scale: f32, out: &mut [f32]) {
        // SAFETY: a `PermuteDecode` is only made where the CPU has AVX-512F.
        #[allow(unsafe_code)]
        unsafe {
            decode_permute(table, codes, scale, out);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
fn decode_permute(table: &[f32; 256], codes: &[u8], scale: f32, out: &mut [f32]) {
    use std::arch::x86_64::{
        __m128i, _mm_loadu_si128, _mm512_cvtepu8_epi32, _mm512_loadu_ps, _mm512_mask_blend_ps,
        _mm512_mul_ps, _mm512_permutex2var_ps, _mm512_set1_epi32, _mm512_set1_ps, _mm512_storeu_ps,
        _mm512_test_epi32_mask,
    };
    let n = codes.len().min(out.len());
    let (head, tail) = (n / 16 * 16, n % 16);
    let rows = table.as_chunks::<16>().0;
    // SAFETY: every load reads 64 bytes of one 16-float row of `table`; the code loads read
    // `codes[i..i + 16]` and the stores write `out[i..i + 16]` with `i + 16 <= n`.
    #[allow(unsafe_code)]
    unsafe {
        let t: [_; 16] = std::array::from_fn(|r| _mm512_loadu_ps(rows[r].as_ptr()));
        let s = _mm512_set1_ps(scale);
        let bit = |b: i32| _mm512_set1_epi32(1 << b);
        let (b5, b6, b7) = (bit(5), bit(6), bit(7));
        for i in (0..head).step_by(16) {
            let k = _mm512_cvtepu8_epi32(_mm_loadu_si128(codes.as_ptr().add(i).cast::<__m128i>()));
            let pick = |r: usize| _mm512_permutex2var_ps(t[2 * r], k, t[2 * r + 1]);
            let (m5, m6, m7) = (
                _mm512_test_epi32_mask(k, b5),
                _mm512_test_epi32_mask(k, b6),
                _mm512_test_epi32_mask(k, b7),
            );
            let q: [_; 4] =
                std::array::from_fn(|r| _mm512_mask_blend_ps(m5, pick(2 * r), pick(2 * r + 1)));
            let lo = _mm512_mask_blend_ps(m6, q[0], q[1]);
            let hi = _mm512_mask_blend_ps(m6, q[2], q[3]);
            let v = _mm512_mul_ps(_mm512_mask_blend_ps(m7, lo, hi), s);
            _mm512_storeu_ps(out.as_mut_ptr().add(i), v);
        }
    }
    LoadDecode.decode(table, &codes[head..n], scale, &mut out[head..head + tail]);
}

impl Adam8Scalars {
    /// Whole blocks, compiled for the widest SIMD level the CPU has (the same IEEE
    /// operations in the same order, no FMA contraction): AVX-512F with the table loads as
    /// gathers and permutes (16M, 2 threads: 43 → 27 ms), else AVX2, else the baseline.
    fn blocks_best(&self, b: Blocks8<'_>) {
        // The slices travel as separate arguments from here on: as function arguments they
        // are known not to alias (as fields of a struct they are not, and LLVM left the
        // encoding loop scalar).
        let Blocks8 {
            p,
            g,
            c1,
            c2,
            a1,
            a2,
        } = b;
        let b = (p, g, c1, c2, a1, a2);
        #[cfg(target_arch = "x86_64")]
        {
            if let Some(d) = PermuteDecode::detect() {
                // SAFETY: the CPU supports AVX-512F (a `PermuteDecode` exists), the only
                // requirement of calling a `#[target_feature(enable = "avx512f")]` function.
                #[allow(unsafe_code)]
                return unsafe { self.blocks_avx512(b.0, b.1, b.2, b.3, b.4, b.5, d) };
            }
            if crate::simd_level() >= crate::SimdLevel::Avx2 {
                // SAFETY: the CPU supports AVX2 (`simd_level` never exceeds what it has),
                // the only requirement of calling a `#[target_feature(enable = "avx2")]`
                // function.
                #[allow(unsafe_code)]
                return unsafe { self.blocks_avx2(b.0, b.1, b.2, b.3, b.4, b.5) };
            }
        }
        self.blocks(b.0, b.1, b.2, b.3, b.4, b.5, LoadDecode)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    fn blocks_avx512(
        &self,
        p: &mut [f32],
        g: &[f32],
        c1: &mut [u8],
        c2: &mut [u8],
        a1: &mut [f32],
        a2: &mut [f32],
        d: PermuteDecode,
    ) {
        self.blocks(p, g, c1, c2, a1, a2, d)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    #[inline(never)]
    fn blocks_avx2(
        &self,
        p: &mut [f32],
        g: &[f32],
        c1: &mut [u8],
        c2: &mut [u8],
        a1: &mut [f32],
        a2: &mut [f32],
    ) {
        self.blocks(p, g, c1, c2, a1, a2, LoadDecode)
    }

    /// Per block, passes over data that stays in L1: decode both moments (table lookups),
    /// update moments and parameter (branch-free, vectorizes), the new max-abs, encode
    /// (bucket-table lookups, branch-free).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn blocks(
        &self,
        ps: &mut [f32],
        gs: &[f32],
        c1: &mut [u8],
        c2: &mut [u8],
        a1: &mut [f32],
        a2: &mut [f32],
        decode: impl DecodeCodes,
    ) {
        use crate::quant::{NearestCoder, QuantMap};
        let (map1, map2) = (QuantMap::dynamic_signed(), QuantMap::dynamic_unsigned());
        let (v1, v2) = (map1.values(), map2.values());
        let (q1, q2) = (map1.coder(), map2.coder());
        #[allow(
            clippy::unreachable,
            reason = "invariant: the dynamic signed map holds 0"
        )]
        let Some(limit1) = q1.negative_limit() else {
            unreachable!("the dynamic signed map holds 0 after its negative values")
        };
        let mut mb = vec![0.0f32; self.block];
        let mut vb = vec![0.0f32; self.block];
        let it = ps
            .chunks_mut(self.block)
            .zip(gs.chunks(self.block))
            .zip(c1.chunks_mut(self.block))
            .zip(c2.chunks_mut(self.block))
            .zip(a1.iter_mut().zip(a2.iter_mut()));
        for ((((p, g), c1), c2), (a1, a2)) in it {
            let (mb, vb) = (&mut mb[..p.len()], &mut vb[..p.len()]);
            let (old1, old2) = (*a1, *a2);
            decode.decode(v1, c1, old1, mb);
            decode.decode(v2, c2, old2, vb);
            let (n1, n2) = self.update(p, g, mb, vb);
            *a1 = n1;
            *a2 = n2;
            // Encoding as `NearestCoder::encode` does it, branch-free (the table loads
            // become gathers): normalise, bucket, one entry per code, the sign fix (of the
            // unquantized value, −0.0 included). A block that met a slow entry (a NaN
            // moment) is encoded again the scalar way.
            // The zero of an all-zero block keeps the value's sign, so `y1` has `m`'s and
            // the sign fix is one `min` (`code_keep_sign`).
            let norm1 = |m: f32, a: f32| if a > 0.0 { m / a } else { 0.0f32.copysign(m) };
            let norm2 = |v: f32, a: f32| if a > 0.0 { v / a } else { 0.0 };
            let mut slow = 0u32;
            for (((k1, k2), &m), &v) in c1.iter_mut().zip(c2.iter_mut()).zip(&*mb).zip(&*vb) {
                let (y1, y2) = (norm1(m, n1), norm2(v, n2));
                let e1 = q1.entry(NearestCoder::bucket(y1));
                let e2 = q2.entry(NearestCoder::bucket(y2));
                slow |= e1 | e2;
                *k1 = NearestCoder::code_keep_sign(e1, y1, limit1);
                *k2 = NearestCoder::code_from(e2, y2);
            }
            if NearestCoder::is_slow(slow) {
                for (((k1, k2), &m), &v) in c1.iter_mut().zip(c2.iter_mut()).zip(&*mb).zip(&*vb) {
                    *k1 = q1.encode(m, n1, true);
                    *k2 = q2.encode(v, n2, false);
                }
            }
        }
    }

    /// The element-wise update of one block: `m`/`v` hold the decoded moments and get the
    /// new ones; returns their max-abs ignoring NaN (as `block_absmax`), taken in a second
    /// pass over the block (in L1; kept per lane in registers — folded into the update
    /// loop, the lane maxima went through masked stores to the stack, ~13% of the step).
    #[inline(always)]
    fn update(&self, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) -> (f32, f32) {
        for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
            let skip = !g.is_finite();
            let g = if skip { 0.0 } else { g };
            let (mut mn, mut vn) = (
                rules::ema(*m, g, self.b1, self.one_minus_b1),
                rules::ema_sq_bnb(*v, g, self.b2, self.one_minus_b2),
            );
            if skip {
                (mn, vn) = (0.0, 0.0);
            }
            let delta = rules::adam8_delta(mn, vn, self.eps_c2, self.step_size);
            let mut descent = match self.keep {
                Some(keep) => rules::adam8_decayed_descent(*p, delta, keep),
                None => rules::negate(delta),
            };
            if skip {
                descent = 0.0;
            }
            *p += rules::negate(descent);
            *m = mn;
            *v = vn;
        }
        (max_abs(m), max_abs(v))
    }
}

/// `max |x|` ignoring NaN (0 for an empty or all-NaN slice), in 16 lanes: `a > x ? a : x`
/// ignores a NaN `a`, like `f32::max`, and is one `maxps` (max is exact, so the lane order
/// does not matter).
#[inline(always)]
fn max_abs(x: &[f32]) -> f32 {
    const L: usize = 16;
    let keep = |acc: f32, a: f32| if a > acc { a } else { acc };
    let mut lanes = [0.0f32; L];
    let chunks = x.chunks_exact(L);
    let tail = chunks.remainder();
    for c in chunks {
        for j in 0..L {
            lanes[j] = keep(lanes[j], c[j].abs());
        }
    }
    let head = lanes.iter().fold(0.0f32, |a, &b| keep(a, b));
    tail.iter().fold(head, |a, &b| keep(a, b.abs()))
}

/// [`FusedAdam8bit`] on ndarray: everything taken out of the tensors, blocks split
/// over threads, put back.
#[allow(clippy::result_large_err, clippy::type_complexity)]
pub(in crate::fused) fn adam8bit<B: Backend>(
    fused: &FusedAdam8bit,
    lr: f64,
    param: Tensor<B, 1>,
    grad: Tensor<B, 1>,
    st: &mut TransformState<B>,
) -> Result<Tensor<B, 1>, (Tensor<B, 1>, Tensor<B, 1>)> {
    // Layout checked by the caller.
    let n = param.dims()[0];
    let block = fused.transform.block_size;
    let nb = crate::quant::num_blocks(n, block);
    let (mut p, g) = take_param_grad(param, grad)?;
    let Some(mut absmax) = take_floats(st, 2) else {
        return Err((p.back(), g.back()));
    };
    let mut codes: Vec<Buf<u8>> = Vec::with_capacity(2);
    for i in 0..2 {
        let empty = Tensor::<B, 1, Int>::zeros([0], &Default::default());
        match Buf::<u8>::take(std::mem::replace(&mut st.codes[i].tensor, empty)) {
            Ok(a) => codes.push(a),
            Err(x) => {
                st.codes[i].tensor = x;
                for (j, a) in codes.into_iter().enumerate() {
                    st.codes[j].tensor = a.back();
                }
                put_floats(st, absmax);
                return Err((p.back(), g.back()));
            }
        }
    }
    // Nothing can fail from here on.
    let step = crate::fused::advance_step(st);
    let sc = fused.scalars(lr, step);
    g.with(|gs| {
        let ps = p.slice_mut();
        #[allow(clippy::unreachable, reason = "invariant: two tensors taken above")]
        let [a1, a2] = &mut absmax[..] else {
            unreachable!("two absmax tensors taken above")
        };
        #[allow(clippy::unreachable, reason = "invariant: two tensors taken above")]
        let [k1, k2] = &mut codes[..] else {
            unreachable!("two code tensors taken above")
        };
        let (a1, a2) = (a1.slice_mut(), a2.slice_mut());
        let (k1, k2) = (k1.slice_mut(), k2.slice_mut());
        let nt = threads().min(n.div_ceil(PARALLEL_MIN)).max(1);
        if nt <= 1 {
            sc.blocks_best(Blocks8 {
                p: ps,
                g: gs,
                c1: k1,
                c2: k2,
                a1,
                a2,
            });
        } else {
            let per = nb.div_ceil(nt);
            let chunk = per * block;
            let sc = &sc;
            let jobs: Vec<Blocks8<'_>> = ps
                .chunks_mut(chunk)
                .zip(gs.chunks(chunk))
                .zip(k1.chunks_mut(chunk))
                .zip(k2.chunks_mut(chunk))
                .zip(a1.chunks_mut(per).zip(a2.chunks_mut(per)))
                .map(|((((p, g), c1), c2), (a1, a2))| Blocks8 {
                    p,
                    g,
                    c1,
                    c2,
                    a1,
                    a2,
                })
                .collect();
            run_jobs(jobs, |b| {
                sc.blocks_best(b);
                0
            });
        }
    });
    put_floats(st, absmax);
    for (i, a) in codes.into_iter().enumerate() {
        st.codes[i].tensor = a.back();
    }
    drop(g);
    Ok(p.back())
}
