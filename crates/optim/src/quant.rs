//! Blockwise dynamic 8-bit quantization (bitsandbytes' optimizer-state codec), reusable for any
//! state (8-bit Adam's moments today, 8-bit Lion later).
//!
//! A [`QuantMap`] is a sorted table of 256 `f32` values in `[-1, 1]` (signed) or `[0, 1]`
//! (unsigned). A tensor is cut into blocks of [`BLOCK_SIZE`] elements (the last one partial);
//! each block stores its `absmax = max|x|` in `f32` and each element the code of `x / absmax`.
//! Two rounding rules exist in bitsandbytes and both are provided:
//!
//! * [`Rounding::Nearest`] — the CUDA kernels' `quantize_2D`: a 7-step binary search over the
//!   map, then a midpoint test (ties go to the probed pivot). With `keep_sign` the first
//!   moment's sign survives quantization (a code whose value has the wrong sign moves one step).
//! * [`Rounding::CpuLut`] — the CPU library of bitsandbytes ≥ 0.50: a 65536-entry lookup table
//!   over `[-1, 1]` (bins 3e-5 wide, so codes finer than that are unreachable), no sign fix.
//!
//! The maps are built by code ([`QuantMap::dynamic`], bnb's `create_dynamic_map`, reproducing
//! its `float32` `linspace` bit for bit); tests check them against the published values.
//!
//! Slice functions ([`quantize_blockwise`], [`dequantize_blockwise`]) run on the host and
//! return errors for a zero block size or mismatched absmax; tensor functions ([`encode`],
//! [`decode`], [`block_absmax`]) run on any burn backend and expect a block size ≥ 1 (the
//! configs validate it).

use std::sync::OnceLock;

use burn::tensor::{Int, Tensor, TensorData, backend::Backend};

use crate::error::{OptimError, Result};

/// Elements per quantization block (bitsandbytes ≥ 0.44 for optimizer state).
pub const BLOCK_SIZE: usize = 256;

/// Entries of the CPU lookup table.
const LUT_SIZE: usize = 65536;

/// How a normalised value becomes a code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Rounding {
    /// Exact nearest code, bitsandbytes' CUDA kernel (`quantize_2D`).
    #[default]
    Nearest,
    /// bitsandbytes' CPU lookup table (an approximation of nearest).
    CpuLut,
}

/// A 256-entry quantization map, sorted ascending.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantMap {
    values: [f32; 256],
    signed: bool,
    /// How many values have the sign bit set (they come first: the map is sorted).
    negatives: u8,
    lut: OnceLockLut,
    buckets: OnceLockBuckets,
}

/// Lazily built bucket table of [`QuantMap::nearest_fast`] (not part of the map's identity).
#[derive(Debug, Clone, Default)]
struct OnceLockBuckets(OnceLock<Buckets>);

/// The table of [`NearestCoder`]: per bucket (a range of consecutive floats) one entry, the
/// code of its lowest value in bits 0–7 and, in bits 8–24, the [`NearestCoder::low_key`] from
/// which the code is one higher ([`NEVER`] if none), or [`SLOW`].
#[derive(Debug, Clone)]
struct Buckets {
    table: Box<[u32; BUCKETS + 1]>,
}

impl PartialEq for OnceLockBuckets {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// A table entry that sends the value to the binary search (its bucket spans more than two
/// codes — none does for the dynamic maps — or the value is outside the table: |x| ≥ 2, NaN).
const SLOW: u32 = 1 << 31;
/// Mantissa bits below the bucket index (23 − 7: 128 buckets per binade — the finest the
/// dynamic maps need: the unsigned map's top codes are 0.007 apart, a bucket in [0.5, 1) is
/// 0.0039 wide).
const BUCKET_SHIFT: u32 = 16;
/// The bits of a value's position inside its bucket ([`NearestCoder::low_key`]).
const LOW_MASK: u32 = (1 << BUCKET_SHIFT) - 1;
/// An entry's threshold when no value of the bucket has a higher code (above every low key).
const NEVER: u32 = 1 << BUCKET_SHIFT;
/// Buckets per binade.
const BUCKETS_PER_EXPONENT: usize = 1 << (23 - BUCKET_SHIFT);
/// Smallest biased exponent with its own row (2^-24); row 0 holds every magnitude below it
/// (zero and denormals included). The build checks that each row-0 bucket has one code (for
/// the dynamic maps: their smallest decision point is ~1.6e-7 > 2^-23); one that had more
/// would be [`SLOW`], still exact.
const BUCKET_MIN_EXPONENT: u32 = 127 - 24;
/// Rows per sign: the small-magnitude row, then the binades 2^-24 … 2^0 (magnitudes below 2).
const BUCKET_ROWS: usize = 1 + 24 + 1;
/// Buckets in the table; entry `BUCKETS` is the [`SLOW`] entry for values outside it.
const BUCKETS: usize = 2 * BUCKET_ROWS * BUCKETS_PER_EXPONENT;

/// A key that orders floats by value (−0.0 just below +0.0).
fn order_key(x: f32) -> u32 {
    let b = x.to_bits();
    if b >> 31 == 1 { !b } else { b | 1 << 31 }
}

/// Inverse of [`order_key`].
fn from_order_key(k: u32) -> f32 {
    f32::from_bits(if k >> 31 == 1 { k & !(1 << 31) } else { !k })
}

/// The lazily built CPU lookup table (not part of the map's identity).
#[derive(Debug, Clone, Default)]
struct OnceLockLut(OnceLock<Vec<u8>>);

impl PartialEq for OnceLockLut {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// `torch.linspace(a, b, n)` in float32 on CPU: a step rounded once, then a single-rounding
/// fma from the nearer end.
fn linspace_f32(a: f32, b: f32, n: usize) -> Vec<f32> {
    let step = (b - a) / (n - 1) as f32;
    (0..n)
        .map(|i| {
            if i < n / 2 {
                step.mul_add(i as f32, a)
            } else {
                (-step).mul_add((n - 1 - i) as f32, b)
            }
        })
        .collect()
}

impl QuantMap {
    /// bitsandbytes' `create_dynamic_map(signed, max_exponent_bits=7, total_bits=8)`:
    /// for `i = 0..=6`, the midpoints of a `linspace(0.1, 1, k)` scaled by `10^(i−6)`
    /// (`k = 2^i + 1` signed, `2^(i+1) + 1` unsigned), mirrored when signed, plus 0 and 1.
    pub fn dynamic(signed: bool) -> Self {
        let mut data: Vec<f32> = Vec::with_capacity(256);
        for i in 0..=6u32 {
            let k = if signed {
                (1usize << i) + 1
            } else {
                (1usize << (i + 1)) + 1
            };
            let b = linspace_f32(0.1, 1.0, k);
            let scale = 10f64.powi(i as i32 - 6) as f32;
            for j in 0..k - 1 {
                let mu = (b[j] + b[j + 1]) / 2.0;
                data.push(scale * mu);
                if signed {
                    data.push(-scale * mu);
                }
            }
        }
        data.push(0.0);
        data.push(1.0);
        data.sort_by(f32::total_cmp);
        #[allow(clippy::expect_used, reason = "invariant: 256 entries by construction")]
        let values: [f32; 256] = data
            .try_into()
            .expect("the dynamic map has exactly 256 entries by construction");
        let negatives = values.iter().filter(|v| v.is_sign_negative()).count() as u8;
        Self {
            values,
            signed,
            negatives,
            lut: OnceLockLut::default(),
            buckets: OnceLockBuckets::default(),
        }
    }

    /// The signed dynamic map (8-bit Adam's `qmap1`, for `exp_avg`), built once.
    pub fn dynamic_signed() -> &'static QuantMap {
        static MAP: OnceLock<QuantMap> = OnceLock::new();
        MAP.get_or_init(|| QuantMap::dynamic(true))
    }

    /// The unsigned dynamic map (8-bit Adam's `qmap2`, for `exp_avg_sq`), built once.
    pub fn dynamic_unsigned() -> &'static QuantMap {
        static MAP: OnceLock<QuantMap> = OnceLock::new();
        MAP.get_or_init(|| QuantMap::dynamic(false))
    }

    /// The 256 values, ascending.
    pub fn values(&self) -> &[f32; 256] {
        &self.values
    }

    /// Whether the map covers `[-1, 1]` (else `[0, 1]`).
    pub fn is_signed(&self) -> bool {
        self.signed
    }

    /// The value of `code`.
    #[inline]
    pub fn decode(&self, code: u8) -> f32 {
        self.values[code as usize]
    }

    /// The CUDA kernel's nearest code of a normalised `x` (a NaN gives code 0): the element
    /// rule [`crate::rules::nearest_code`], which the GPU kernel expands too.
    pub fn nearest(&self, x: f32) -> u8 {
        let lower = if self.signed { -1.0f32 } else { 0.0 };
        // a code of the 256-entry map: at most 255
        crate::rules::nearest_code(&self.values, x, lower) as u8
    }

    /// [`QuantMap::nearest`], faster (see [`NearestCoder`]).
    #[inline]
    pub fn nearest_fast(&self, x: f32) -> u8 {
        self.coder().code(x)
    }

    /// The bucket table behind [`QuantMap::nearest_fast`] (built on first use), looked up once
    /// for a loop.
    pub fn coder(&self) -> NearestCoder<'_> {
        let b = self.buckets.0.get_or_init(|| self.build_buckets());
        NearestCoder {
            map: self,
            table: &b.table,
        }
    }

    /// `up[c]`: the smallest value whose code is above `c` (bisection over the floats in
    /// `[-2, 2]`, using that [`QuantMap::nearest`] is monotone); `+inf` for the top code.
    /// The table: per bucket, the code `c` of its lowest value and the low key of `up[c]` if
    /// its highest value's code is `c + 1` ([`NEVER`] if it is `c`), else [`SLOW`].
    fn build_buckets(&self) -> Buckets {
        let mut up = [f32::INFINITY; 256];
        let (lo_key, hi_key) = (order_key(-2.0), order_key(2.0));
        for (c, u) in up.iter_mut().enumerate() {
            if self.nearest(2.0) as usize <= c {
                continue;
            }
            // smallest key in (lo, hi] whose code exceeds c
            let (mut lo, mut hi) = (lo_key, hi_key);
            while hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                if self.nearest(from_order_key(mid)) as usize > c {
                    hi = mid;
                } else {
                    lo = mid;
                }
            }
            *u = from_order_key(hi);
        }
        let table = (0..BUCKETS)
            .map(|i| {
                let sign = (i / (BUCKET_ROWS * BUCKETS_PER_EXPONENT)) as u32;
                let row = (i / BUCKETS_PER_EXPONENT) % BUCKET_ROWS;
                let top = (i % BUCKETS_PER_EXPONENT) as u32;
                // magnitudes of the bucket
                let (m_lo, m_hi) = if row == 0 {
                    (0.0, f32::from_bits((BUCKET_MIN_EXPONENT << 23) - 1))
                } else {
                    let base = (BUCKET_MIN_EXPONENT + row as u32 - 1) << 23 | top << BUCKET_SHIFT;
                    (
                        f32::from_bits(base),
                        f32::from_bits(base | ((1 << BUCKET_SHIFT) - 1)),
                    )
                };
                let (lo, hi) = if sign == 0 {
                    (m_lo, m_hi)
                } else {
                    (-m_hi, -m_lo)
                };
                let (ca, cb) = (self.nearest(lo), self.nearest(hi));
                if ca == cb {
                    u32::from(ca) | NEVER << 8
                } else if u16::from(cb) == u16::from(ca) + 1 && row > 0 {
                    // up[ca] lies in (lo, hi]: same sign, binade and top bits, so its low key
                    // orders it among the bucket's values.
                    u32::from(ca) | NearestCoder::low_key(up[usize::from(ca)]) << 8
                } else {
                    SLOW
                }
            })
            .chain([SLOW])
            .collect::<Box<[u32]>>();
        #[allow(
            clippy::expect_used,
            reason = "invariant: BUCKETS + 1 entries by construction"
        )]
        let table = table
            .try_into()
            .expect("BUCKETS + 1 entries by construction");
        Buckets { table }
    }

    /// The nearest code with the first moment's sign kept (the CUDA kernel's fix-up: a code
    /// whose value has the other sign than `x` moves one step towards `x`). Note −0.0 counts as
    /// negative, as `signbit` does: it lands on the smallest negative code, not on 0.
    pub fn nearest_keep_sign(&self, x: f32) -> u8 {
        self.fix_sign(self.nearest(x), x)
    }

    /// The kernel's sign fix of `code` for the unquantized value `v`: the element rule
    /// [`crate::rules::fix_sign`]. `decode(code)` is negative exactly when
    /// `code < negatives` (the map is sorted, its sign-negative values first), so the code's
    /// sign needs no table load here.
    #[inline(always)]
    pub(crate) fn fix_sign(&self, code: u8, v: f32) -> u8 {
        // a code of the 256-entry map: the rule keeps it below 256
        crate::rules::fix_sign(u32::from(code), code < self.negatives, v) as u8
    }

    /// The CPU library's 65536-entry table: entry `i` counts the code midpoints
    /// `0.5·(c[k] + c[k+1])` below `−1 + 2i/65535` (float32 arithmetic).
    pub fn cpu_lut(&self) -> &[u8] {
        self.lut.0.get_or_init(|| {
            let mids: Vec<f32> = self
                .values
                .windows(2)
                .map(|w| 0.5f32 * (w[0] + w[1]))
                .collect();
            (0..LUT_SIZE)
                .map(|i| {
                    let edge = -1.0f32 + (2.0f32 * i as f32) / 65535.0f32;
                    mids.partition_point(|&m| m < edge) as u8
                })
                .collect()
        })
    }

    /// The CPU library's code of `x` in a block of max-abs `absmax > 0`.
    pub fn lut_code(&self, x: f32, absmax: f32) -> u8 {
        self.cpu_lut()[lut_index(x * (1.0 / absmax))]
    }
}

fn lut_index(y: f32) -> usize {
    ((y.clamp(-1.0, 1.0) + 1.0) * 0.5 * 65535.0 + 0.5) as u16 as usize
}

/// Number of blocks covering `n` elements.
pub fn num_blocks(n: usize, block: usize) -> usize {
    n.div_ceil(block)
}

/// Quantize `x` blockwise: `(codes, absmax per block)`. A block whose values are all zero gets
/// absmax 0 (and decodes to zeros whatever its codes).
pub fn quantize_blockwise(
    map: &QuantMap,
    x: &[f32],
    block: usize,
    rounding: Rounding,
    keep_sign: bool,
) -> Result<(Vec<u8>, Vec<f32>)> {
    check_block(block)?;
    let mut codes = Vec::with_capacity(x.len());
    let mut absmax = Vec::with_capacity(num_blocks(x.len(), block));
    for chunk in x.chunks(block) {
        let a = chunk.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        absmax.push(a);
        for &v in chunk {
            codes.push(encode_one(map, v, a, rounding, keep_sign));
        }
    }
    Ok((codes, absmax))
}

fn check_block(block: usize) -> Result<()> {
    if block == 0 {
        Err(OptimError::invalid(
            "quant",
            "block",
            0,
            "a block size >= 1",
        ))
    } else {
        Ok(())
    }
}

/// [`QuantMap::nearest`] through a bucket table: the floats are cut into buckets by sign,
/// binade and top 7 mantissa bits (magnitudes below 2^-24 share one bucket per sign); as the
/// binary search is monotone in `x`, a bucket whose two ends get codes `c` and at most `c + 1`
/// needs one comparison: of the value's position in the bucket with that of the smallest value
/// of code above `c`, both kept in the bucket's one 32-bit entry. Every bucket of the dynamic
/// maps qualifies; values outside (|x| ≥ 2, NaN) run the search. The table takes 26 KB per map.
/// From [`QuantMap::coder`]: the table is fetched once, so a loop does a few bit operations,
/// one load and a comparison per value — with no branch when it uses [`NearestCoder::entry`] and
/// [`NearestCoder::code_from`] (LLVM then vectorizes the load as a gather).
#[derive(Debug, Clone, Copy)]
pub struct NearestCoder<'a> {
    map: &'a QuantMap,
    table: &'a [u32; BUCKETS + 1],
}

impl NearestCoder<'_> {
    /// The kernel's nearest code of a normalised `x` (= [`QuantMap::nearest`]).
    #[inline(always)]
    pub fn code(&self, x: f32) -> u8 {
        self.lookup(Self::bucket(x), x)
    }

    /// The table index of `x` (sign, binade, top mantissa bits; the [`SLOW`] entry outside the
    /// table). Branch-free, so a loop of it vectorizes.
    #[inline(always)]
    pub fn bucket(x: f32) -> u32 {
        let bits = x.to_bits();
        let exp = (bits >> 23) & 0xFF;
        let small = exp < BUCKET_MIN_EXPONENT;
        let row = if small {
            0
        } else {
            exp - BUCKET_MIN_EXPONENT + 1
        };
        let top = if small {
            0
        } else {
            (bits & 0x7F_FFFF) >> BUCKET_SHIFT
        };
        let i = (bits >> 31) * (BUCKET_ROWS * BUCKETS_PER_EXPONENT) as u32
            + row * BUCKETS_PER_EXPONENT as u32
            + top;
        if row < BUCKET_ROWS as u32 {
            i
        } else {
            BUCKETS as u32
        }
    }

    /// The position of `x` inside its bucket, increasing with `x` for either sign: the low
    /// mantissa bits, complemented for negative values.
    #[inline(always)]
    pub fn low_key(x: f32) -> u32 {
        let bits = x.to_bits();
        (bits ^ ((bits as i32 >> 31) as u32)) & LOW_MASK
    }

    /// The table entry of a [`NearestCoder::bucket`] (a bucket past the table gets the
    /// [`SLOW`] entry).
    #[inline(always)]
    pub fn entry(&self, bucket: u32) -> u32 {
        // In bounds by the `min` (no check, so a loop of it vectorizes).
        self.table[(bucket as usize).min(BUCKETS)]
    }

    /// Whether an entry sends its values to [`QuantMap::nearest`] ([`NearestCoder::code_from`]
    /// is then meaningless).
    #[inline(always)]
    pub fn is_slow(entry: u32) -> bool {
        entry & SLOW != 0
    }

    /// The code of `x` from its bucket's entry, which must not be [`NearestCoder::is_slow`].
    /// Branch-free.
    #[inline(always)]
    pub fn code_from(entry: u32, x: f32) -> u8 {
        let threshold = (entry >> 8) & (2 * NEVER - 1);
        (entry as u8).wrapping_add(u8::from(Self::low_key(x) >= threshold))
    }

    /// The code of `x` given its [`NearestCoder::bucket`].
    #[inline(always)]
    pub fn lookup(&self, bucket: u32, x: f32) -> u8 {
        let e = self.entry(bucket);
        if Self::is_slow(e) {
            self.slow(x)
        } else {
            Self::code_from(e, x)
        }
    }

    #[cold]
    #[inline(never)]
    fn slow(&self, x: f32) -> u8 {
        self.map.nearest(x)
    }

    /// The map's sign fix (see [`QuantMap::nearest_keep_sign`]) of `code` for the unquantized
    /// value `v`.
    #[inline(always)]
    pub fn fix_sign(&self, code: u8, v: f32) -> u8 {
        self.map.fix_sign(code, v)
    }

    /// The largest code a negative value may keep under the sign fix, when the map holds 0
    /// right after its negative values (the dynamic signed map does; `None` otherwise). Then
    /// [`QuantMap::fix_sign`] of a value's nearest code is one `min`: the nearest code of a
    /// value of negative sign (−0.0 included) is at most that zero's and moves just below it,
    /// that of a non-negative one is at least it and stays — see
    /// [`NearestCoder::code_keep_sign`].
    pub fn negative_limit(&self) -> Option<u8> {
        let n = self.map.negatives;
        (n > 0 && self.map.values[usize::from(n)] == 0.0).then(|| n - 1)
    }

    /// [`NearestCoder::code_from`] with the sign fix of the unquantized value `v` folded in,
    /// for `x = v / a` with `a > 0` (or `x` = ±0 of `v`'s sign) and `limit` from
    /// [`NearestCoder::negative_limit`]: `x` then has `v`'s sign, and the fix is a `min`
    /// (branch-free, three vector instructions instead of about fifteen).
    #[inline(always)]
    pub fn code_keep_sign(entry: u32, x: f32, limit: u8) -> u8 {
        let cap = if x.is_sign_negative() { limit } else { u8::MAX };
        Self::code_from(entry, x).min(cap)
    }

    /// [`encode_one`] with [`Rounding::Nearest`]: the code of `v` in a block of max-abs `a`,
    /// the sign of `v` kept when `keep_sign`.
    #[inline(always)]
    pub fn encode(&self, v: f32, a: f32, keep_sign: bool) -> u8 {
        let y = if a > 0.0 { v / a } else { 0.0 };
        let code = self.code(y);
        // The kernel tests the sign of the unquantized value (−0.0 included).
        if keep_sign {
            self.map.fix_sign(code, v)
        } else {
            code
        }
    }
}

/// One element's code in a block of max-abs `a` (see [`Rounding`]).
#[inline]
pub fn encode_one(map: &QuantMap, v: f32, a: f32, rounding: Rounding, keep_sign: bool) -> u8 {
    match rounding {
        Rounding::Nearest => map.coder().encode(v, a, keep_sign),
        Rounding::CpuLut if a > 0.0 => map.lut_code(v, a),
        Rounding::CpuLut => 0,
    }
}

/// Inverse of [`quantize_blockwise`]: `map[code] · absmax[block]`.
pub fn dequantize_blockwise(
    map: &QuantMap,
    codes: &[u8],
    absmax: &[f32],
    block: usize,
) -> Result<Vec<f32>> {
    check_block(block)?;
    if absmax.len() != num_blocks(codes.len(), block) {
        return Err(OptimError::ShapeMismatch {
            path: "absmax".into(),
            expected: vec![num_blocks(codes.len(), block)],
            actual: vec![absmax.len()],
        });
    }
    Ok(codes
        .iter()
        .enumerate()
        .map(|(i, &c)| map.decode(c) * absmax[i / block])
        .collect())
}

// ---- tensor versions (any backend) -------------------------------------------------------

/// The map's values as a device tensor.
pub fn map_tensor<B: Backend>(map: &QuantMap, device: &B::Device) -> Tensor<B, 1> {
    Tensor::from_data(TensorData::new(map.values.to_vec(), [256]), device)
}

/// `x` padded with zeros to whole blocks, as `[blocks, block]`.
fn blocks<B: Backend>(x: Tensor<B, 1>, block: usize) -> Tensor<B, 2> {
    let n = x.dims()[0];
    let nb = num_blocks(n, block);
    let pad = nb * block - n;
    let x = if pad > 0 {
        let device = x.device();
        Tensor::cat(vec![x, Tensor::zeros([pad], &device)], 0)
    } else {
        x
    };
    x.reshape([nb, block])
}

/// `max|x|` of every block of `x` (`[num_blocks]`). NaN entries are ignored, as the kernel's
/// `fmaxf` (and the host's `f32::max`) do.
pub fn block_absmax<B: Backend>(x: Tensor<B, 1>, block: usize) -> Tensor<B, 1> {
    let nb = num_blocks(x.dims()[0], block);
    let a = x.abs();
    let a = a.clone().mask_fill(a.is_nan(), 0.0);
    blocks(a, block).max_dim(1).reshape([nb])
}

/// Each element's block value: `per_block` (`[num_blocks]`) repeated over `n` elements.
pub fn per_element<B: Backend>(per_block: Tensor<B, 1>, n: usize, block: usize) -> Tensor<B, 1> {
    let nb = per_block.dims()[0];
    per_block
        .reshape([nb, 1])
        .expand([nb, block])
        .reshape([nb * block])
        .slice(0..n)
}

/// `map[codes] · absmax[block]` for `n = codes.len()` elements.
pub fn decode<B: Backend>(
    map: &Tensor<B, 1>,
    codes: Tensor<B, 1, Int>,
    absmax: Tensor<B, 1>,
    block: usize,
) -> Tensor<B, 1> {
    let n = codes.dims()[0];
    map.clone()
        .select(0, codes)
        .mul(per_element(absmax, n, block))
}

/// Codes (`u8` dtype) of `x` in blocks whose max-abs is `absmax` (`[num_blocks]`): the tensor
/// form of [`encode_one`], bit-identical to it.
pub fn encode<B: Backend>(
    map: &QuantMap,
    x: Tensor<B, 1>,
    absmax: Tensor<B, 1>,
    block: usize,
    rounding: Rounding,
    keep_sign: bool,
) -> Tensor<B, 1, Int> {
    let n = x.dims()[0];
    let device = x.device();
    let a = per_element(absmax, n, block);
    let positive = a.clone().greater_elem(0.0);
    let codes = match rounding {
        Rounding::Nearest => {
            let y = x
                .clone()
                .div(a.clone().mask_fill(positive.clone().bool_not(), 1.0))
                .mask_fill(positive.bool_not(), 0.0);
            let table = map_tensor::<B>(map, &device);
            let codes = nearest_tensor(map, &table, y);
            if keep_sign {
                // signbit(v) = v < 0 or v is −0 (1/v < 0).
                let signbit =
                    |v: Tensor<B, 1>| v.clone().lower_elem(0.0).bool_or(v.recip().lower_elem(0.0));
                let wrong = signbit(table.select(0, codes.clone())).not_equal(signbit(x.clone()));
                let delta = Tensor::<B, 1, Int>::ones([n], &device)
                    .mask_fill(x.greater_elem(0.0).bool_not(), -1)
                    .mask_fill(wrong.bool_not(), 0);
                // Codes wrap like the kernel's `unsigned char` arithmetic.
                codes.add(delta).add_scalar(256).remainder_scalar(256)
            } else {
                codes
            }
        }
        Rounding::CpuLut => {
            let lut: Vec<i32> = map.cpu_lut().iter().map(|&c| i32::from(c)).collect();
            let lut = Tensor::<B, 1, Int>::from_data(TensorData::new(lut, [LUT_SIZE]), &device);
            let y = x.mul(
                a.clone()
                    .mask_fill(positive.clone().bool_not(), 1.0)
                    .recip(),
            );
            // NaN (e.g. inf·0 after an overflowed absmax) → index 0, as the host's `as u16`.
            let y = y.clone().mask_fill(y.is_nan(), -1.0);
            let idx = y
                .clamp(-1.0, 1.0)
                .add_scalar(1.0)
                .mul_scalar(0.5)
                .mul_scalar(65535.0)
                .add_scalar(0.5)
                .floor()
                .int();
            lut.select(0, idx).mask_fill(positive.bool_not(), 0)
        }
    };
    let device = codes.device();
    codes.cast(code_dtype::<B>(&device))
}

/// [`QuantMap::nearest`] on a tensor of normalised values (returns the backend's int dtype).
fn nearest_tensor<B: Backend>(
    map: &QuantMap,
    table: &Tensor<B, 1>,
    y: Tensor<B, 1>,
) -> Tensor<B, 1, Int> {
    let n = y.dims()[0];
    let device = y.device();
    let mut pivot = Tensor::<B, 1, Int>::full([n], 127, &device);
    let mut lower_pivot = Tensor::<B, 1, Int>::zeros([n], &device);
    let mut upper_pivot = Tensor::<B, 1, Int>::full([n], 255, &device);
    let mut val = Tensor::<B, 1>::full([n], map.values[127], &device);
    let mut step = 64i64;
    while step > 0 {
        let up = y.clone().greater(val);
        lower_pivot = lower_pivot.mask_where(up.clone(), pivot.clone());
        upper_pivot = pivot.clone().mask_where(up.clone(), upper_pivot);
        let moves = Tensor::<B, 1, Int>::full([n], -step, &device).mask_fill(up, step);
        pivot = pivot.add(moves);
        val = table.clone().select(0, pivot.clone());
        step >>= 1;
    }
    // upper = map[upper_pivot] (255 → 1.0 when never moved); lower = map[lower_pivot] (the
    // kernel's −1 for a never-moved signed lower bound only matters when the answer is 0 anyway).
    let upper = table.clone().select(0, upper_pivot.clone());
    let lower = table.clone().select(0, lower_pivot.clone());
    let above = y.clone().greater(val.clone());
    let take_upper = y
        .clone()
        .greater(upper.add(val.clone()).mul_scalar(0.5))
        .bool_and(above.clone());
    let take_lower = y
        .lower(lower.add(val).mul_scalar(0.5))
        .bool_and(above.bool_not());
    pivot
        .mask_where(take_upper, upper_pivot)
        .mask_where(take_lower, lower_pivot)
}

/// A flat tensor of `u8` codes stored with dtype [`code_dtype`] (burn's `from_data` alone would
/// convert to the backend's default integer type, 4–8 bytes per code).
pub fn u8_tensor<B: Backend>(codes: Vec<u8>, device: &B::Device) -> Tensor<B, 1, Int> {
    let n = codes.len();
    Tensor::<B, 1, Int>::from_data(TensorData::new(codes, [n]), device)
        .cast(code_dtype::<B>(device))
}

/// The dtype code tensors are stored with on `device`: `u8` where the backend supports it as a
/// general type (every CPU backend, CUDA, wgpu on Vulkan/SPIR-V and Metal); `i32` where it
/// does not (wgpu's WGSL compiler has no 8-bit storage: a `u8` tensor there would be
/// reinterpreted as 32-bit words, i.e. garbage) — correct numbers at 4 bytes per code, which
/// the accounting API reports.
pub fn code_dtype<B: Backend>(device: &B::Device) -> burn::tensor::IntDType {
    if B::supports_dtype(device, burn::tensor::DType::U8) {
        burn::tensor::IntDType::U8
    } else {
        burn::tensor::IntDType::I32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every bucket of the dynamic maps takes the one-comparison path (a slow bucket would
    /// still be exact, but would send its blocks back to the binary search): the bucket width
    /// and the small-magnitude row are fine enough for them.
    #[test]
    fn dynamic_maps_have_no_slow_bucket() {
        for map in [QuantMap::dynamic_signed(), QuantMap::dynamic_unsigned()] {
            let coder = map.coder();
            let slow = (0..BUCKETS as u32)
                .filter(|&b| NearestCoder::is_slow(coder.entry(b)))
                .count();
            assert_eq!(slow, 0, "signed = {}", map.is_signed());
            assert!(NearestCoder::is_slow(coder.entry(BUCKETS as u32)));
            assert!(NearestCoder::is_slow(
                coder.entry(NearestCoder::bucket(f32::NAN))
            ));
            assert!(NearestCoder::is_slow(
                coder.entry(NearestCoder::bucket(2.0))
            ));
        }
    }

    /// The one-`min` sign fix equals the kernel's [`QuantMap::fix_sign`] on the dynamic signed
    /// map, for normalised values of either sign: zeros, values that round to the zero code,
    /// values at and around every decision threshold, and a sweep of the range.
    #[test]
    fn folded_sign_fix_matches_the_kernels() {
        let map = QuantMap::dynamic_signed();
        let coder = map.coder();
        let limit = coder
            .negative_limit()
            .expect("the dynamic signed map holds 0");
        assert_eq!(limit, 126);
        assert_eq!(QuantMap::dynamic_unsigned().coder().negative_limit(), None);
        let mut xs = vec![0.0f32, -0.0, 1e-30, -1e-30, 1e-7, -1e-7, 1.0, -1.0];
        for w in map.values().windows(2) {
            let mid = 0.5 * (w[0] + w[1]);
            for x in [mid, w[0], w[1]] {
                let b = x.to_bits();
                xs.extend([
                    x,
                    f32::from_bits(b.wrapping_add(1)),
                    f32::from_bits(b.wrapping_sub(1)),
                ]);
            }
        }
        xs.extend((0..=20_000).map(|i| i as f32 / 10_000.0 - 1.0));
        let mut moved = 0;
        for x in xs.into_iter().filter(|x| x.abs() <= 1.0) {
            let e = coder.entry(NearestCoder::bucket(x));
            let want = map.fix_sign(NearestCoder::code_from(e, x), x);
            assert_eq!(NearestCoder::code_keep_sign(e, x, limit), want, "x = {x:e}");
            moved += usize::from(want != NearestCoder::code_from(e, x));
        }
        // the fix does act (on the negative values that round to the zero code)
        assert!(moved > 0);
    }
}
