//! The 8-bit codec: maps built by code equal the published bitsandbytes maps bit for bit; the
//! tensor encoder equals the scalar one; round-trip, absmax, zero, idempotence, block isolation
//! and sign properties. Case count: `PROPTEST_CASES`.
// Tests may unwrap and panic (the workspace lints deny it in library code).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable
)]

mod common;

use burn::tensor::{Int, Tensor};
use common::*;
use moment_optim::quant::{
    self, BLOCK_SIZE, QuantMap, Rounding, dequantize_blockwise, quantize_blockwise,
};
use proptest::prelude::*;

/// bitsandbytes' signed dynamic map, f32 bit patterns (`../shared/optimizers.md` §3b, measured
/// from bitsandbytes 0.50.2 `create_dynamic_map(signed=True)`).
pub const SIGNED_MAP_BITS: [u32; 256] = [
    0xbf7e3333, 0xbf7a999a, 0xbf770000, 0xbf736666, 0xbf6fcccd, 0xbf6c3333, 0xbf68999a, 0xbf650000,
    0xbf616666, 0xbf5dcccd, 0xbf5a3333, 0xbf56999a, 0xbf530000, 0xbf4f6666, 0xbf4bcccd, 0xbf483333,
    0xbf44999a, 0xbf410000, 0xbf3d6666, 0xbf39cccd, 0xbf363334, 0xbf32999a, 0xbf2f0000, 0xbf2b6666,
    0xbf27cccd, 0xbf243334, 0xbf20999a, 0xbf1d0000, 0xbf196666, 0xbf15cccd, 0xbf123334, 0xbf0e999a,
    0xbf0b0000, 0xbf076666, 0xbf03cccc, 0xbf003333, 0xbef93332, 0xbef20000, 0xbeeacccc, 0xbee3999a,
    0xbedc6666, 0xbed53333, 0xbece0000, 0xbec6cccc, 0xbebf999a, 0xbeb86666, 0xbeb13333, 0xbeaa0000,
    0xbea2cccc, 0xbe9b999a, 0xbe946666, 0xbe8d3334, 0xbe860000, 0xbe7d9999, 0xbe6f3333, 0xbe60cccd,
    0xbe526666, 0xbe440000, 0xbe35999a, 0xbe273333, 0xbe18cccd, 0xbe0a6666, 0xbdf80000, 0xbddb3334,
    0xbdc9eb85, 0xbdc428f7, 0xbdbe6667, 0xbdb8a3d7, 0xbdb2e148, 0xbdad1eb8, 0xbda75c2a, 0xbda1999a,
    0xbd9bd70a, 0xbd96147b, 0xbd9051eb, 0xbd8a8f5d, 0xbd84cccd, 0xbd7e147b, 0xbd728f5d, 0xbd670a3d,
    0xbd5b851f, 0xbd500000, 0xbd447ae1, 0xbd38f5c3, 0xbd2d70a3, 0xbd21eb85, 0xbd166667, 0xbd0ae148,
    0xbcfeb852, 0xbce7ae15, 0xbcd0a3d7, 0xbcb9999a, 0xbca28f5d, 0xbc8b851f, 0xbc68f5c3, 0xbc3ae148,
    0xbc1f3b64, 0xbc160418, 0xbc0ccccd, 0xbc039581, 0xbbf4bc6a, 0xbbe24dd3, 0xbbcfdf3b, 0xbbbd70a4,
    0xbbab020d, 0xbb989374, 0xbb8624dd, 0xbb676c8a, 0xbb428f5c, 0xbb1db22d, 0xbaf1a9fc, 0xbaa7ef9d,
    0xba7765ff, 0xba59e83e, 0xba3c6a80, 0xba1eecc1, 0xba016f01, 0xb9c7e283, 0xb98ce705, 0xb923d70b,
    0xb8ba1f4b, 0xb88aefb3, 0xb8378034, 0xb7b24206, 0xb70205ff, 0xb65a1a94, 0xb513a3b7, 0x00000000,
    0x3513a3b7, 0x365a1a94, 0x370205ff, 0x37b24206, 0x38378034, 0x388aefb3, 0x38ba1f4b, 0x3923d70b,
    0x398ce705, 0x39c7e283, 0x3a016f01, 0x3a1eecc1, 0x3a3c6a80, 0x3a59e83e, 0x3a7765ff, 0x3aa7ef9d,
    0x3af1a9fc, 0x3b1db22d, 0x3b428f5c, 0x3b676c8a, 0x3b8624dd, 0x3b989374, 0x3bab020d, 0x3bbd70a4,
    0x3bcfdf3b, 0x3be24dd3, 0x3bf4bc6a, 0x3c039581, 0x3c0ccccd, 0x3c160418, 0x3c1f3b64, 0x3c3ae148,
    0x3c68f5c3, 0x3c8b851f, 0x3ca28f5d, 0x3cb9999a, 0x3cd0a3d7, 0x3ce7ae15, 0x3cfeb852, 0x3d0ae148,
    0x3d166667, 0x3d21eb85, 0x3d2d70a3, 0x3d38f5c3, 0x3d447ae1, 0x3d500000, 0x3d5b851f, 0x3d670a3d,
    0x3d728f5d, 0x3d7e147b, 0x3d84cccd, 0x3d8a8f5d, 0x3d9051eb, 0x3d96147b, 0x3d9bd70a, 0x3da1999a,
    0x3da75c2a, 0x3dad1eb8, 0x3db2e148, 0x3db8a3d7, 0x3dbe6667, 0x3dc428f7, 0x3dc9eb85, 0x3ddb3334,
    0x3df80000, 0x3e0a6666, 0x3e18cccd, 0x3e273333, 0x3e35999a, 0x3e440000, 0x3e526666, 0x3e60cccd,
    0x3e6f3333, 0x3e7d9999, 0x3e860000, 0x3e8d3334, 0x3e946666, 0x3e9b999a, 0x3ea2cccc, 0x3eaa0000,
    0x3eb13333, 0x3eb86666, 0x3ebf999a, 0x3ec6cccc, 0x3ece0000, 0x3ed53333, 0x3edc6666, 0x3ee3999a,
    0x3eeacccc, 0x3ef20000, 0x3ef93332, 0x3f003333, 0x3f03cccc, 0x3f076666, 0x3f0b0000, 0x3f0e999a,
    0x3f123334, 0x3f15cccd, 0x3f196666, 0x3f1d0000, 0x3f20999a, 0x3f243334, 0x3f27cccd, 0x3f2b6666,
    0x3f2f0000, 0x3f32999a, 0x3f363334, 0x3f39cccd, 0x3f3d6666, 0x3f410000, 0x3f44999a, 0x3f483333,
    0x3f4bcccd, 0x3f4f6666, 0x3f530000, 0x3f56999a, 0x3f5a3333, 0x3f5dcccd, 0x3f616666, 0x3f650000,
    0x3f68999a, 0x3f6c3333, 0x3f6fcccd, 0x3f736666, 0x3f770000, 0x3f7a999a, 0x3f7e3333, 0x3f800000,
];

/// bitsandbytes' unsigned dynamic map, f32 bit patterns (same source, `signed=False`).
pub const UNSIGNED_MAP_BITS: [u32; 256] = [
    0x00000000, 0x34ae7baa, 0x35500998, 0x360e9b38, 0x3692ccf6, 0x36de4c51, 0x3714e5d5, 0x3783126e,
    0x37e171a0, 0x381fe868, 0x384f1800, 0x387e479a, 0x3896bb99, 0x38ae5364, 0x38c5eb31, 0x3906594b,
    0x394154ca, 0x397c5049, 0x399ba5e4, 0x39b923a2, 0x39d6a163, 0x39f41f22, 0x3a08ce71, 0x3a178d50,
    0x3a264c30, 0x3a350b10, 0x3a43c9ef, 0x3a5288d0, 0x3a6147af, 0x3a70068e, 0x3a7ec56e, 0x3a958106,
    0x3aba5e35, 0x3adf3b64, 0x3b020c4a, 0x3b147ae1, 0x3b26e978, 0x3b395810, 0x3b4bc6a7, 0x3b5e3540,
    0x3b70a3d7, 0x3b818937, 0x3b8ac082, 0x3b93f7cf, 0x3b9d2f1a, 0x3ba66666, 0x3baf9db2, 0x3bb8d4fd,
    0x3bc20c4a, 0x3bcb4395, 0x3bd47ae1, 0x3bddb22e, 0x3be6e978, 0x3bf020c5, 0x3bf9580f, 0x3c0147ae,
    0x3c05e354, 0x3c0a7ef9, 0x3c0f1aa0, 0x3c13b645, 0x3c1851eb, 0x3c1ced92, 0x3c218937, 0x3c2f5c2a,
    0x3c466667, 0x3c5d70a3, 0x3c747ae2, 0x3c85c28f, 0x3c9147af, 0x3c9ccccd, 0x3ca851eb, 0x3cb3d70b,
    0x3cbf5c29, 0x3ccae147, 0x3cd66667, 0x3ce1eb87, 0x3ced70a3, 0x3cf8f5c3, 0x3d023d70, 0x3d080000,
    0x3d0dc28f, 0x3d13851f, 0x3d1947af, 0x3d1f0a3d, 0x3d24cccd, 0x3d2a8f5c, 0x3d3051eb, 0x3d36147b,
    0x3d3bd70a, 0x3d41999a, 0x3d475c28, 0x3d4d1eb8, 0x3d52e147, 0x3d58a3d7, 0x3d5e6667, 0x3d6428f7,
    0x3d69eb87, 0x3d6fae15, 0x3d7570a3, 0x3d7b3333, 0x3d807ae2, 0x3d835c2a, 0x3d863d71, 0x3d891eb8,
    0x3d8c0000, 0x3d8ee148, 0x3d91c290, 0x3d94a3d7, 0x3d97851f, 0x3d9a6667, 0x3d9d47af, 0x3da028f6,
    0x3da30a3e, 0x3da5eb85, 0x3da8cccd, 0x3dabae15, 0x3dae8f5c, 0x3db170a4, 0x3db451eb, 0x3db73333,
    0x3dba147b, 0x3dbcf5c3, 0x3dbfd70b, 0x3dc2b852, 0x3dc5999a, 0x3dc87ae2, 0x3dcb5c29, 0x3dd40000,
    0x3de26666, 0x3df0cccd, 0x3dff3333, 0x3e06cccc, 0x3e0e0000, 0x3e153334, 0x3e1c6666, 0x3e23999a,
    0x3e2acccc, 0x3e320000, 0x3e393334, 0x3e406666, 0x3e47999a, 0x3e4ecccc, 0x3e560000, 0x3e5d3334,
    0x3e646666, 0x3e6b999a, 0x3e72cccc, 0x3e7a0000, 0x3e809999, 0x3e843333, 0x3e87cccd, 0x3e8b6666,
    0x3e8f0000, 0x3e92999a, 0x3e963333, 0x3e99cccc, 0x3e9d6666, 0x3ea10000, 0x3ea4999a, 0x3ea83333,
    0x3eabcccc, 0x3eaf6666, 0x3eb30000, 0x3eb6999a, 0x3eba3333, 0x3ebdcccc, 0x3ec16666, 0x3ec50000,
    0x3ec8999a, 0x3ecc3333, 0x3ecfcccc, 0x3ed36666, 0x3ed70000, 0x3eda999a, 0x3ede3333, 0x3ee1cccc,
    0x3ee56666, 0x3ee90000, 0x3eec999a, 0x3ef03333, 0x3ef3cccc, 0x3ef76666, 0x3efb0000, 0x3efe9999,
    0x3f01199a, 0x3f02e666, 0x3f04b333, 0x3f068000, 0x3f084ccc, 0x3f0a199a, 0x3f0be666, 0x3f0db334,
    0x3f0f8000, 0x3f114ccd, 0x3f13199a, 0x3f14e666, 0x3f16b334, 0x3f188000, 0x3f1a4ccd, 0x3f1c199a,
    0x3f1de666, 0x3f1fb334, 0x3f218000, 0x3f234ccd, 0x3f25199a, 0x3f26e666, 0x3f28b334, 0x3f2a8000,
    0x3f2c4ccd, 0x3f2e199a, 0x3f2fe666, 0x3f31b334, 0x3f338000, 0x3f354ccd, 0x3f37199a, 0x3f38e666,
    0x3f3ab334, 0x3f3c8000, 0x3f3e4ccd, 0x3f40199a, 0x3f41e666, 0x3f43b334, 0x3f458000, 0x3f474ccc,
    0x3f49199a, 0x3f4ae666, 0x3f4cb334, 0x3f4e8000, 0x3f504ccc, 0x3f52199a, 0x3f53e666, 0x3f55b334,
    0x3f578000, 0x3f594ccc, 0x3f5b199a, 0x3f5ce666, 0x3f5eb334, 0x3f608000, 0x3f624ccc, 0x3f64199a,
    0x3f65e666, 0x3f67b334, 0x3f698000, 0x3f6b4ccc, 0x3f6d199a, 0x3f6ee666, 0x3f70b334, 0x3f728000,
    0x3f744ccc, 0x3f76199a, 0x3f77e666, 0x3f79b334, 0x3f7b8000, 0x3f7d4ccc, 0x3f7f199a, 0x3f800000,
];

#[test]
fn dynamic_maps_match_published_bits() {
    for (map, bits, name) in [
        (QuantMap::dynamic(true), SIGNED_MAP_BITS, "signed"),
        (QuantMap::dynamic(false), UNSIGNED_MAP_BITS, "unsigned"),
    ] {
        for (i, (v, b)) in map.values().iter().zip(bits).enumerate() {
            assert_eq!(
                v.to_bits(),
                b,
                "{name} map entry {i}: {v:e} vs {:e}",
                f32::from_bits(b)
            );
        }
    }
    let s = QuantMap::dynamic_signed().values();
    assert_eq!((s[0], s[127], s[255]), (-0.99296874, 0.0, 1.0));
    let u = QuantMap::dynamic_unsigned().values();
    assert_eq!((u[0], u[255]), (0.0, 1.0));
}

fn code_tensor(codes: &Tensor<B, 1, Int>) -> Vec<u8> {
    codes.to_data().convert::<u8>().to_vec::<u8>().unwrap()
}

/// Blockwise quantization on the device (tensor path).
fn quantize_tensor(
    map: &QuantMap,
    x: &[f32],
    rounding: Rounding,
    keep_sign: bool,
) -> (Vec<u8>, Vec<f32>) {
    let t = flat(x);
    let absmax = quant::block_absmax(t.clone(), BLOCK_SIZE);
    let codes = quant::encode(map, t, absmax.clone(), BLOCK_SIZE, rounding, keep_sign);
    assert_eq!(
        codes.dtype(),
        burn::tensor::DType::U8,
        "codes are stored as u8"
    );
    (code_tensor(&codes), values(&absmax))
}

/// Values spanning many magnitudes, with exact zeros (both signs), a sprinkling of ties to the
/// map and a partial last block.
fn spread() -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(
        prop_oneof![
            4 => (-1.0f32..1.0, -7i32..2).prop_map(|(m, e)| m * 10f32.powi(e)),
            1 => Just(0.0f32),
            1 => Just(-0.0f32),
            1 => (0usize..256).prop_map(|k| QuantMap::dynamic_signed().values()[k]),
        ],
        1..700,
    )
}

/// [`spread`] plus non-finite and overflowing values (what an overflowed moment looks like).
fn hostile() -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(
        prop_oneof![
            6 => (-1.0f32..1.0, -7i32..2).prop_map(|(m, e)| m * 10f32.powi(e)),
            1 => Just(-0.0f32),
            1 => Just(f32::NAN),
            1 => Just(f32::INFINITY),
            1 => Just(f32::NEG_INFINITY),
            1 => Just(1e30f32),
        ],
        1..600,
    )
}

fn maps() -> impl Strategy<Value = (&'static QuantMap, bool)> {
    prop_oneof![
        Just((QuantMap::dynamic_signed(), true)),
        Just((QuantMap::dynamic_signed(), false)),
        Just((QuantMap::dynamic_unsigned(), false)),
    ]
}

fn for_map(map: &QuantMap, x: Vec<f32>) -> Vec<f32> {
    if map.is_signed() {
        x
    } else {
        x.into_iter().map(f32::abs).collect()
    }
}

proptest! {
    /// The device encoder is bit-identical to the scalar reference, in both rounding rules, and
    /// neither panics on NaN, ±inf or −0.0.
    #[test]
    fn tensor_encoder_equals_scalar((map, keep) in maps(), x in prop_oneof![spread(), hostile()], lut in any::<bool>()) {
        let x = for_map(map, x);
        let rounding = if lut { Rounding::CpuLut } else { Rounding::Nearest };
        let keep = keep && !lut;
        let (c_host, a_host) = quantize_blockwise(map, &x, BLOCK_SIZE, rounding, keep).unwrap();
        let (c_dev, a_dev) = quantize_tensor(map, &x, rounding, keep);
        prop_assert_eq!(a_host.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), a_dev.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
        prop_assert_eq!(c_host, c_dev);
    }

    /// absmax is exactly max|x| of the block; decoding the absmax element gives it back exactly
    /// (the map's end point 1.0, or −0.99296874·a rounded for a negative signed extreme).
    #[test]
    fn absmax_is_exact((map, keep) in maps(), x in spread()) {
        let x = for_map(map, x);
        let (codes, absmax) = quantize_blockwise(map, &x, BLOCK_SIZE, Rounding::Nearest, keep).unwrap();
        prop_assert_eq!(absmax.len(), x.len().div_ceil(BLOCK_SIZE));
        for (b, chunk) in x.chunks(BLOCK_SIZE).enumerate() {
            let a = chunk.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            prop_assert_eq!(absmax[b].to_bits(), a.to_bits());
            if let Some(i) = chunk.iter().position(|v| *v == a && a > 0.0) {
                prop_assert_eq!(map.decode(codes[b * BLOCK_SIZE + i]), 1.0);
            }
        }
    }

    /// Nearest rounding: the decoded value is the closest map value (up to f32 midpoint
    /// rounding), so the error is at most half the local gap times absmax.
    #[test]
    fn round_trip_error_is_nearest((map, _keep) in maps(), x in spread()) {
        let x = for_map(map, x);
        let (codes, absmax) = quantize_blockwise(map, &x, BLOCK_SIZE, Rounding::Nearest, false).unwrap();
        let back = dequantize_blockwise(map, &codes, &absmax, BLOCK_SIZE).unwrap();
        for (i, (&v, &r)) in x.iter().zip(&back).enumerate() {
            let a = absmax[i / BLOCK_SIZE];
            if a == 0.0 { prop_assert_eq!(r, 0.0); continue; }
            let y = f64::from(v) / f64::from(a);
            let best = map.values().iter().map(|&m| (f64::from(m) - y).abs()).fold(f64::INFINITY, f64::min);
            let got = (f64::from(map.decode(codes[i])) - y).abs();
            // up to the f32 rounding of the kernel's midpoints (a few ulp of |y|)
            prop_assert!(got <= best + 4.0 * f64::from(f32::EPSILON) * y.abs().max(1e-38), "element {}: |code − y| {} vs best {}", i, got, best);
            // and the absolute bound: half the widest gap of the map (0.0078 signed, 0.0071 unsigned)
            prop_assert!((f64::from(r) - f64::from(v)).abs() <= 0.0079 * f64::from(a) + 1e-30);
        }
    }

    /// +0 stays zero; the first moment's sign survives with keep_sign — including −0.0, which
    /// (as bnb's `signbit` fix-up does) lands on the smallest negative code.
    #[test]
    fn zero_and_sign(x in spread()) {
        let map = QuantMap::dynamic_signed();
        let (codes, absmax) = quantize_blockwise(map, &x, BLOCK_SIZE, Rounding::Nearest, true).unwrap();
        let back = dequantize_blockwise(map, &codes, &absmax, BLOCK_SIZE).unwrap();
        for (&v, &r) in x.iter().zip(&back) {
            if v == 0.0 && !v.is_sign_negative() { prop_assert_eq!(r, 0.0); }
            else { prop_assert_eq!(r.is_sign_negative(), v.is_sign_negative(), "{} decoded as {}", v, r); }
        }
    }

    /// Decoding then encoding against the same absmax gives the same codes (nearest rounding
    /// is a projection). Re-deriving absmax from decoded values is *not* a fixed point for a
    /// negative extreme: the signed map has no −1 (its minimum is −0.99296874).
    #[test]
    fn idempotent((map, keep) in maps(), x in spread()) {
        let x = for_map(map, x);
        let (codes, absmax) = quantize_blockwise(map, &x, BLOCK_SIZE, Rounding::Nearest, keep).unwrap();
        let back = dequantize_blockwise(map, &codes, &absmax, BLOCK_SIZE).unwrap();
        for (i, (&c, &v)) in codes.iter().zip(&back).enumerate() {
            let a = absmax[i / BLOCK_SIZE];
            let again = quant::encode_one(map, v, a, Rounding::Nearest, keep);
            prop_assert_eq!(map.decode(again) * a, map.decode(c) * a, "element {}", i);
        }
    }

    /// Changing one block never changes another block's codes or absmax.
    #[test]
    fn blocks_are_isolated(x in prop::collection::vec(-1.0f32..1.0, 257..800), k in 0usize..800, v in -100.0f32..100.0) {
        let map = QuantMap::dynamic_signed();
        let (c1, a1) = quantize_blockwise(map, &x, BLOCK_SIZE, Rounding::Nearest, true).unwrap();
        let mut y = x.clone();
        let k = k % y.len();
        y[k] = v;
        let (c2, a2) = quantize_blockwise(map, &y, BLOCK_SIZE, Rounding::Nearest, true).unwrap();
        let kb = k / BLOCK_SIZE;
        for b in 0..a1.len() {
            if b == kb { continue; }
            prop_assert_eq!(a1[b], a2[b]);
            let r = b * BLOCK_SIZE..((b + 1) * BLOCK_SIZE).min(x.len());
            prop_assert_eq!(&c1[r.clone()], &c2[r]);
        }
    }

    /// The unsigned map never decodes to a negative value (a second moment stays ≥ 0).
    #[test]
    fn unsigned_is_non_negative(x in spread(), lut in any::<bool>()) {
        let map = QuantMap::dynamic_unsigned();
        let x: Vec<f32> = x.into_iter().map(f32::abs).collect();
        let rounding = if lut { Rounding::CpuLut } else { Rounding::Nearest };
        let (codes, absmax) = quantize_blockwise(map, &x, BLOCK_SIZE, rounding, false).unwrap();
        prop_assert!(dequantize_blockwise(map, &codes, &absmax, BLOCK_SIZE).unwrap().iter().all(|v| *v >= 0.0));
    }
}

/// The CPU table approximates nearest: away from zero it is at most one code off and agrees on
/// most codes; next to zero its 3e-5-wide bins cannot reach the fine codes (0 itself lands on
/// the code nearest the bin edge 1.5e-5).
#[test]
fn cpu_lut_is_close_to_nearest() {
    let map = QuantMap::dynamic_signed();
    let n = 20001;
    let mut same = 0;
    for i in 0..n {
        let y = -1.0 + 2.0 * i as f32 / (n - 1) as f32;
        let a = map.nearest(y);
        let b = map.lut_code(y, 1.0);
        if y.abs() >= 2e-4 {
            assert!(
                (i32::from(a) - i32::from(b)).abs() <= 1,
                "y {y}: nearest {a}, lut {b}"
            );
        }
        same += usize::from(a == b);
    }
    assert!(same as f64 / n as f64 > 0.99, "agreement {same}/{n}");
    // The LUT cannot reach the finest codes next to zero (bins are 3e-5 wide).
    assert_eq!(map.lut_code(1e-6, 1.0), map.lut_code(0.0, 1.0));
    assert_ne!(map.nearest(1e-6), map.nearest(0.0));
    assert_eq!(map.nearest(0.0), 127);
    assert!(map.decode(map.lut_code(0.0, 1.0)) > 1e-5);
}

#[test]
fn bad_block_sizes_and_absmax_are_errors() {
    let map = QuantMap::dynamic_signed();
    assert!(quantize_blockwise(map, &[1.0], 0, Rounding::Nearest, true).is_err());
    assert!(dequantize_blockwise(map, &[1, 2], &[], 256).is_err());
    assert!(dequantize_blockwise(map, &[1, 2], &[1.0], 0).is_err());
}

/// The bucketed `nearest_fast` is `nearest`: at 16 points of every range of the top 16 bits;
/// at both ends and the middle of every range of the top 23 bits with magnitudes 2^-40 … 2
/// (finer than the table's buckets, so their ends are included); at ±0, denormals and tiny
/// values; at every decision point ±3 ulps (found here by a bisection of `nearest` of its
/// own) — for both maps; and `nearest` is monotone along an ascending sweep (the property the
/// bucket table relies on).
#[test]
fn nearest_fast_equals_nearest() {
    for map in [QuantMap::dynamic_signed(), QuantMap::dynamic_unsigned()] {
        for hi in 0u32..1 << 16 {
            for lo in (0u32..16).map(|k| k * 0x1111) {
                let x = f32::from_bits(hi << 16 | lo);
                assert_eq!(
                    map.nearest_fast(x),
                    map.nearest(x),
                    "x = {x:e} ({:#x})",
                    x.to_bits()
                );
            }
        }
        // Both ends and the middle of every 2^9-float range with magnitudes 2^-40 … 2.
        for sign in [0u32, 1] {
            for exp in 87u32..128 {
                for top in 0u32..1 << 14 {
                    let base = sign << 31 | exp << 23 | top << 9;
                    for lo in [0u32, 0xFF, 0x1FF] {
                        let x = f32::from_bits(base | lo);
                        assert_eq!(map.nearest_fast(x), map.nearest(x), "x = {x:e}");
                    }
                }
            }
        }
        for x in [
            0.0f32, -0.0, 1e-45, -1e-45, 1e-38, -1e-38, 1e-20, -1e-20, 9.09e-13, -9.09e-13,
        ] {
            assert_eq!(map.nearest_fast(x), map.nearest(x), "x = {x:e}");
        }
        // decision points: between consecutive floats a < b (by value) with different codes
        let next_up = |x: f32| {
            if x == 0.0 {
                f32::from_bits(1)
            } else if x > 0.0 {
                f32::from_bits(x.to_bits() + 1)
            } else {
                f32::from_bits(x.to_bits() - 1)
            }
        };
        let mut points = 0;
        for c in 0..255u8 {
            if map.nearest(1.0) <= c {
                break;
            }
            let (mut lo, mut hi) = (-1.0f64, 1.0f64);
            for _ in 0..200 {
                let mid = (lo + hi) / 2.0;
                if map.nearest(mid as f32) > c {
                    hi = mid
                } else {
                    lo = mid
                }
            }
            let mut x = (lo as f32).min(hi as f32);
            for _ in 0..3 {
                x = -next_up(-x);
            }
            for _ in 0..7 {
                assert_eq!(
                    map.nearest_fast(x),
                    map.nearest(x),
                    "x = {x:e} near code {c}"
                );
                x = next_up(x);
            }
            points += 1;
        }
        assert!(points > 100, "only {points} decision points checked");
        let mut prev = 0u8;
        for i in 0..=2_000_000u32 {
            let x = -1.0 + 2.0 * (i as f64 / 2_000_000.0);
            let c = map.nearest(x as f32);
            assert!(c >= prev, "nearest not monotone at {x}");
            prev = c;
        }
    }
}
