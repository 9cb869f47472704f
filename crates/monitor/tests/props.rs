//! Property-based tests: sink round trips (JSONL, CSV, TensorBoard framing), the spike
//! detector's invariants and the monitor's per-step bookkeeping.
//!
//! `PROPTEST_CASES` sets the number of cases (CI: 32).
// Tests may unwrap and panic (the workspace lints deny it in library code).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable
)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use burn::backend::NdArray;
use burn::tensor::{Tensor, TensorData};
use moment_monitor::tensorboard::{TensorBoardSink, crc32c, read_event_file};
use moment_monitor::{
    CSV_COLUMNS, CsvSink, JsonlSink, LayerStats, MemoryRecord, MemorySink, MonitorConfig,
    ParamStats, Refusal, Run, Sink, Spike, SpikeCheck, SpikeConfig, SpikeDetector, SpikeMetric,
    StateStats, StepInfo, StepRecord, read_csv, read_jsonl,
};
use moment_optim::{
    AdamWConfig, MomentOptimizer, NonFinitePolicy, Observer, OptimError, ParamTensor, RefusedStep,
    StepReport,
};
use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;

type B = NdArray<f32>;

// ---------------------------------------------------------------------------------------------
// Helpers

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A fresh directory under the system temp dir, removed on drop (also when a case fails).
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let d = std::env::temp_dir().join(format!("moment-props-{}-{n}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Self(d)
    }

    fn join(&self, f: &str) -> PathBuf {
        self.0.join(f)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn write_all(mut sink: impl Sink, recs: &[StepRecord]) {
    for r in recs {
        sink.write(r).unwrap();
    }
    sink.flush().unwrap();
}

/// CRC-32C written out bit by bit (reflected polynomial 0x82F63B78), independent of the
/// crate's table-driven one.
fn crc32c_reference(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// TFRecord's mask, from its definition.
fn masked_reference(data: &[u8]) -> u32 {
    crc32c_reference(data)
        .rotate_right(15)
        .wrapping_add(0xA282_EAD8)
}

/// Every float field that is a plain `f64` (not `Option`; the per-group learning rates
/// included) and documented to read back as `NaN` when it was non-finite.
fn plain_floats(r: &mut StepRecord) -> Vec<&mut f64> {
    let mut v: Vec<&mut f64> = vec![&mut r.wall_s, &mut r.lr, &mut r.grad_norm, &mut r.clip_rate];
    v.extend(r.group_lrs.values_mut());
    for p in &mut r.params {
        v.extend([
            &mut p.grad_norm,
            &mut p.weight_norm,
            &mut p.update_norm,
            &mut p.update_to_weight,
            &mut p.update_dot_grad,
            &mut p.cos_update_grad,
        ]);
        for s in &mut p.states {
            v.extend([&mut s.norm, &mut s.min, &mut s.max]);
        }
    }
    for l in &mut r.layers {
        v.extend([
            &mut l.grad_norm,
            &mut l.weight_norm,
            &mut l.update_norm,
            &mut l.update_to_weight,
            &mut l.cos_update_grad,
        ]);
    }
    for s in &mut r.spikes {
        v.extend([&mut s.value, &mut s.median, &mut s.z]);
    }
    v
}

/// Every float of a record (optional ones included), as bits, to tell −0.0 from 0.0.
fn float_bits(r: &StepRecord) -> Vec<Option<u64>> {
    let mut r = r.clone();
    let opt = |x: Option<f64>| x.map(f64::to_bits);
    let mut v: Vec<Option<u64>> = [
        r.step_time_s,
        r.tokens_per_s,
        r.loss,
        r.val_loss,
        r.clip_threshold,
    ]
    .into_iter()
    .map(opt)
    .collect();
    v.extend(
        r.params
            .iter()
            .flat_map(|p| p.states.iter().map(|s| opt(s.sqrt_norm))),
    );
    v.extend(plain_floats(&mut r).into_iter().map(|x| Some(x.to_bits())));
    v
}

// ---------------------------------------------------------------------------------------------
// Strategies

/// Finite f64 of every kind: normal and subnormal, both signs and zeros, the extremes, and
/// plenty of ordinary magnitudes.
fn finite() -> impl Strategy<Value = f64> {
    use proptest::num::f64 as f;
    prop_oneof![
        4 => f::POSITIVE | f::NEGATIVE | f::NORMAL | f::SUBNORMAL | f::ZERO,
        1 => prop::sample::select(vec![
            f64::MAX,
            f64::MIN,
            f64::MIN_POSITIVE,
            -f64::MIN_POSITIVE,
            f64::from_bits(1),
            1e300,
            -1e-300,
            0.0,
            -0.0,
            0.1,
            1.0 / 3.0,
        ]),
        3 => -1e3f64..1e3,
    ]
}

fn non_finite() -> impl Strategy<Value = f64> {
    prop::sample::select(vec![f64::NAN, f64::INFINITY, f64::NEG_INFINITY])
}

/// Names with arbitrary printable Unicode (quotes, backslashes, commas, emoji …).
fn name() -> impl Strategy<Value = String> {
    "\\PC{0,10}"
}

fn state_stats() -> impl Strategy<Value = StateStats> {
    (
        name(),
        any::<u64>(),
        finite(),
        option::of(finite()),
        finite(),
        finite(),
    )
        .prop_map(|(name, numel, norm, sqrt_norm, min, max)| StateStats {
            name,
            numel,
            norm,
            sqrt_norm,
            min,
            max,
        })
}

fn param_stats() -> impl Strategy<Value = ParamStats> {
    (
        (name(), name(), name(), any::<u64>()),
        proptest::array::uniform6(finite()),
        vec(state_stats(), 0..3),
    )
        .prop_map(|((path, group, layer, numel), f, states)| ParamStats {
            path,
            group,
            layer,
            numel,
            grad_norm: f[0],
            weight_norm: f[1],
            update_norm: f[2],
            update_to_weight: f[3],
            update_dot_grad: f[4],
            cos_update_grad: f[5],
            states,
        })
}

fn layer_stats() -> impl Strategy<Value = LayerStats> {
    (
        name(),
        any::<u32>(),
        any::<u64>(),
        proptest::array::uniform5(finite()),
    )
        .prop_map(|(layer, params, numel, f)| LayerStats {
            layer,
            params,
            numel,
            grad_norm: f[0],
            weight_norm: f[1],
            update_norm: f[2],
            update_to_weight: f[3],
            cos_update_grad: f[4],
        })
}

fn memory() -> impl Strategy<Value = MemoryRecord> {
    (
        any::<u64>(),
        btree_map(name(), any::<u64>(), 0..3),
        proptest::array::uniform3(any::<u64>()),
        option::of(any::<u64>()),
        option::of(any::<u64>()),
    )
        .prop_map(|(state_bytes, state_by_kind, n, peak, rss)| MemoryRecord {
            state_bytes,
            state_by_kind,
            param_elements: n[0],
            param_bytes: n[1],
            grad_bytes: n[2],
            peak_rss_bytes: peak,
            rss_bytes: rss,
        })
}

fn spike() -> impl Strategy<Value = Spike> {
    (
        any::<u64>(),
        any::<bool>(),
        proptest::array::uniform3(finite()),
    )
        .prop_map(|(step, loss, f)| Spike {
            step,
            metric: if loss {
                SpikeMetric::Loss
            } else {
                SpikeMetric::GradNorm
            },
            value: f[0],
            median: f[1],
            z: f[2],
        })
}

fn refusal() -> impl Strategy<Value = Refusal> {
    (name(), option::of(name()), name()).prop_map(|(kind, path, reason)| Refusal {
        kind,
        path,
        reason,
    })
}

/// A record whose floats are all finite (of any magnitude).
fn record() -> impl Strategy<Value = StepRecord> {
    let head = (
        any::<u64>(),
        finite(),
        option::of(finite()),
        option::of(any::<u64>()),
        option::of(finite()),
        option::of(finite()),
        option::of(finite()),
        finite(),
        btree_map(name(), finite(), 0..3),
        finite(),
        option::of(finite()),
        any::<bool>(),
    );
    let tail = (
        finite(),
        any::<u64>(),
        vec(name(), 0..3),
        name(),
        any::<bool>(),
        option::of(memory()),
        vec(param_stats(), 0..3),
        vec(layer_stats(), 0..3),
        vec(spike(), 0..3),
        option::of(refusal()),
    );
    (head, tail).prop_map(
        |(
            (
                step,
                wall_s,
                step_time_s,
                tokens,
                tokens_per_s,
                loss,
                val_loss,
                lr,
                group_lrs,
                grad_norm,
                clip_threshold,
                clipped,
            ),
            (
                clip_rate,
                non_finite,
                non_finite_paths,
                policy,
                skipped,
                memory,
                params,
                layers,
                spikes,
                refused,
            ),
        )| StepRecord {
            step,
            wall_s,
            step_time_s,
            tokens,
            tokens_per_s,
            loss,
            val_loss,
            lr,
            group_lrs,
            grad_norm,
            clip_threshold,
            clipped,
            clip_rate,
            non_finite,
            non_finite_paths,
            policy,
            skipped,
            memory,
            params,
            layers,
            spikes,
            refused,
        },
    )
}

/// Any valid spike-detector configuration with a small window.
fn spike_config() -> impl Strategy<Value = SpikeConfig> {
    (1usize..10, 0.0f64..1.0, 0.5f64..12.0, 0.0f64..0.2).prop_map(|(window, h, threshold, r)| {
        SpikeConfig {
            window,
            min_history: 1 + ((window - 1) as f64 * h) as usize,
            threshold,
            min_rel_scale: r,
        }
    })
}

fn verdicts(config: SpikeConfig, xs: &[f64]) -> Vec<Option<SpikeCheck>> {
    let mut d = SpikeDetector::new(config).unwrap();
    xs.iter().map(|&x| d.push(x)).collect()
}

fn flat(v: &[f32]) -> Tensor<B, 1> {
    Tensor::from_data(TensorData::new(v.to_vec(), [v.len()]), &Default::default())
}

fn report(step: u64, clipped: bool, skipped: bool) -> StepReport {
    StepReport {
        step,
        lr: 1e-3,
        grad_norm: 1.0,
        clip_factor: 1.0,
        clipped,
        non_finite: u64::from(skipped),
        non_finite_paths: Vec::new(),
        skipped,
        params_updated: usize::from(!skipped),
        params_fused: 0,
        clip_threshold: Some(1.0),
        policy: NonFinitePolicy::SkipStep,
        group_lrs: vec![("default".into(), 1e-3)],
    }
}

fn csv_cell(row: &[(String, Option<f64>)], col: &str) -> Option<f64> {
    row.iter().find(|(c, _)| c == col).unwrap().1
}

/// Equal as floats, NaN equal to NaN (the CSV writes `NaN`, `inf`, `-inf`).
fn same(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
        (None, None) => true,
        _ => false,
    }
}

fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Properties

#[test]
fn crc32c_reference_matches_the_standard_check_value() {
    // The catalogued check value of CRC-32C over "123456789".
    assert_eq!(crc32c_reference(b"123456789"), 0xE306_9283);
    assert_eq!(crc32c(b"123456789"), 0xE306_9283);
}

proptest! {
    /// JSONL: what `JsonlSink` writes, `read_jsonl` (and `Run::from_jsonl`, which `replot`
    /// uses) reads back exactly — every field, floats bit for bit (−0.0, subnormals, ±MAX),
    /// u64 counters up to `u64::MAX`, arbitrary Unicode names.
    #[test]
    fn jsonl_round_trip_is_exact(recs in vec(record(), 0..6)) {
        let dir = TempDir::new("jsonl");
        let path = dir.join("metrics.jsonl");
        write_all(JsonlSink::create(&path).unwrap(), &recs);
        prop_assert_eq!(read_lines(&path).len(), recs.len());
        let back = read_jsonl(&path).unwrap();
        prop_assert_eq!(&back, &recs);
        for (b, r) in back.iter().zip(&recs) {
            prop_assert_eq!(float_bits(b), float_bits(r));
        }
        let run = Run::from_jsonl("r", &path).unwrap();
        prop_assert_eq!(run.records, recs);
    }

    /// JSONL: a non-finite value in any plain float field (norms, ratios, lr, spike z …) is
    /// written as `null` and read back as NaN; every other field is unchanged.
    #[test]
    fn jsonl_non_finite_plain_floats_read_back_as_nan(
        rec in record(),
        picks in vec((any::<prop::sample::Index>(), non_finite()), 1..6),
    ) {
        let mut rec = rec;
        let mut hit = Vec::new();
        {
            let mut fs = plain_floats(&mut rec);
            let n = fs.len();
            for (i, x) in &picks {
                let i = i.index(n);
                *fs[i] = *x;
                hit.push(i);
            }
        }
        let dir = TempDir::new("jsonl-nan");
        let path = dir.join("metrics.jsonl");
        write_all(JsonlSink::create(&path).unwrap(), std::slice::from_ref(&rec));
        let text = std::fs::read_to_string(&path).unwrap();
        prop_assert!(text.contains("null"), "{}", text);
        let mut back = read_jsonl(&path).unwrap().remove(0);
        {
            let fb = plain_floats(&mut back);
            let fr = plain_floats(&mut rec);
            for (i, (b, r)) in fb.into_iter().zip(fr).enumerate() {
                if hit.contains(&i) {
                    prop_assert!(b.is_nan(), "field {} read back as {}", i, b);
                    *b = 0.0;
                    *r = 0.0;
                }
            }
        }
        prop_assert_eq!(back, rec);
    }

    /// CSV: a header of exactly `CSV_COLUMNS`, one line per record, and every cell parses back
    /// to the written value bit for bit (non-finite values included).
    #[test]
    fn csv_rows_match_records(
        recs in vec(record(), 0..6),
        bad in vec((any::<prop::sample::Index>(), 0usize..4, non_finite()), 0..3),
    ) {
        let mut recs = recs;
        // Some non-finite values in the scalar columns.
        if !recs.is_empty() {
            let n = recs.len();
            for (i, f, x) in bad {
                let r = &mut recs[i.index(n)];
                match f {
                    0 => r.loss = Some(x),
                    1 => r.grad_norm = x,
                    2 => r.lr = x,
                    _ => r.step_time_s = Some(x),
                }
            }
        }
        let dir = TempDir::new("csv");
        let path = dir.join("metrics.csv");
        write_all(CsvSink::create(&path).unwrap(), &recs);
        let lines = read_lines(&path);
        prop_assert_eq!(lines.len(), recs.len() + 1);
        prop_assert_eq!(&lines[0], &CSV_COLUMNS.join(","));
        let rows = read_csv(&path).unwrap();
        prop_assert_eq!(rows.len(), recs.len());
        for (row, r) in rows.iter().zip(&recs) {
            let cols: Vec<&str> = row.iter().map(|(c, _)| c.as_str()).collect();
            prop_assert_eq!(&cols[..], &CSV_COLUMNS[..]);
            let get = |c: &str| csv_cell(row, c);
            let mem = r.memory.as_ref();
            let b = |x: bool| Some(if x { 1.0 } else { 0.0 });
            let expect: [(&str, Option<f64>); 17] = [
                ("step", Some(r.step as f64)),
                ("wall_s", Some(r.wall_s)),
                ("step_time_s", r.step_time_s),
                ("tokens_per_s", r.tokens_per_s),
                ("loss", r.loss),
                ("lr", Some(r.lr)),
                ("grad_norm", Some(r.grad_norm)),
                ("clip_threshold", r.clip_threshold),
                ("clipped", b(r.clipped)),
                ("clip_rate", Some(r.clip_rate)),
                ("non_finite", Some(r.non_finite as f64)),
                ("skipped", b(r.skipped)),
                ("update_to_weight", r.update_to_weight()),
                ("state_bytes", mem.map(|m| m.state_bytes as f64)),
                ("peak_rss_bytes", mem.and_then(|m| m.peak_rss_bytes).map(|x| x as f64)),
                ("spikes", Some(r.spikes.len() as f64)),
                ("refused", b(r.refused.is_some())),
            ];
            for (col, want) in expect {
                prop_assert!(same(get(col), want), "{}: {:?} vs {:?}", col, get(col), want);
            }
            // The update/weight column is filled exactly on observed (layer-carrying) steps.
            prop_assert_eq!(get("update_to_weight").is_some(), !r.layers.is_empty());
        }
    }

    /// TensorBoard: the event file is a sequence of TFRecords whose length and payload CRCs
    /// are valid masked CRC-32Cs (checked with an independent bitwise CRC), one per record plus
    /// the file-version event, with no trailing bytes; `read_event_file` gives back the
    /// written scalars in order with their steps.
    #[test]
    fn tensorboard_records_are_framed_and_read_back(
        recs in vec((0u64..=i64::MAX as u64, record()), 0..6),
    ) {
        let recs: Vec<StepRecord> = recs
            .into_iter()
            .map(|(step, mut r)| {
                r.step = step;
                r
            })
            .collect();
        let dir = TempDir::new("tb");
        let sink = TensorBoardSink::create(dir.join("tb")).unwrap();
        let path = sink.path().to_path_buf();
        write_all(sink, &recs);

        // Framing, by hand.
        let bytes = std::fs::read(&path).unwrap();
        let mut i = 0;
        let mut frames = 0;
        while i < bytes.len() {
            prop_assert!(i + 12 <= bytes.len(), "truncated header at {}", i);
            let len_bytes = &bytes[i..i + 8];
            let len = u64::from_le_bytes(len_bytes.try_into().unwrap()) as usize;
            let crc = u32::from_le_bytes(bytes[i + 8..i + 12].try_into().unwrap());
            prop_assert_eq!(crc, masked_reference(len_bytes));
            prop_assert!(i + 12 + len + 4 <= bytes.len(), "truncated payload at {}", i);
            let payload = &bytes[i + 12..i + 12 + len];
            let crc = u32::from_le_bytes(bytes[i + 12 + len..i + 16 + len].try_into().unwrap());
            prop_assert_eq!(crc, masked_reference(payload));
            prop_assert_eq!(crc32c(payload), crc32c_reference(payload));
            i += 16 + len;
            frames += 1;
        }
        prop_assert_eq!(i, bytes.len());
        prop_assert_eq!(frames, recs.len() + 1);

        // Content.
        let ev = read_event_file(&path).unwrap();
        prop_assert_eq!(ev.file_version.as_deref(), Some("brain.Event:2"));
        let series = |tag: &str| -> Vec<(i64, u32)> {
            ev.scalars
                .iter()
                .filter(|s| s.tag == tag)
                .map(|s| (s.step, s.value.to_bits()))
                .collect()
        };
        let want = |f: &dyn Fn(&StepRecord) -> Option<f64>| -> Vec<(i64, u32)> {
            recs.iter()
                .filter_map(|r| f(r).map(|x| (r.step as i64, (x as f32).to_bits())))
                .collect()
        };
        prop_assert_eq!(series("train/loss"), want(&|r| r.loss));
        prop_assert_eq!(series("train/lr"), want(&|r| Some(r.lr)));
        prop_assert_eq!(series("train/grad_norm"), want(&|r| Some(r.grad_norm)));
        prop_assert_eq!(series("train/clip_rate"), want(&|r| Some(r.clip_rate)));
        prop_assert_eq!(
            series("train/refused"),
            want(&|r| Some(if r.refused.is_some() { 1.0 } else { 0.0 }))
        );
        prop_assert_eq!(series("train/step_time_s"), want(&|r| r.step_time_s));
        prop_assert_eq!(
            series("memory/state_bytes"),
            want(&|r| r.memory.as_ref().map(|m| m.state_bytes as f64))
        );
        // Every finite scalar is there: per record loss?, lr, grad_norm, clip_rate,
        // non_finite, refused, update_to_weight (observed steps, when finite: the layers' √Σ‖·‖² can
        // overflow), step_time_s?, tokens_per_s?,
        // memory (state_bytes, peak_rss_bytes?), and two per layer.
        let count: usize = recs
            .iter()
            .map(|r| {
                5 + usize::from(r.loss.is_some())
                    + usize::from(r.update_to_weight().is_some_and(f64::is_finite))
                    + usize::from(r.step_time_s.is_some())
                    + usize::from(r.tokens_per_s.is_some())
                    + r.memory
                        .as_ref()
                        .map_or(0, |m| 1 + usize::from(m.peak_rss_bytes.is_some()))
                    + 2 * r.layers.len()
            })
            .sum();
        prop_assert_eq!(ev.scalars.len(), count);
        let layer_tags = ev.scalars.iter().filter(|s| s.tag.starts_with("layer/")).count();
        prop_assert_eq!(layer_tags, 2 * recs.iter().map(|r| r.layers.len()).sum::<usize>());
    }

    /// Spikes are upward only: a non-increasing series (constant runs included) is never
    /// flagged, whatever the settings.
    #[test]
    fn spike_non_increasing_series_never_flags(
        config in spike_config(),
        start in -1e6f64..1e6,
        drops in vec(prop_oneof![2 => Just(0.0), 3 => 0.0f64..1e3], 0..80),
    ) {
        let mut xs = vec![start];
        for d in drops {
            let last = *xs.last().unwrap();
            xs.push(last - d);
        }
        for (i, v) in verdicts(config, &xs).iter().enumerate() {
            prop_assert!(v.is_none(), "value {} ({}) flagged: {:?}", i, xs[i], v);
        }
    }

    /// The robust z-score is scale-free: multiplying every value by 2^k (exact in floating
    /// point) flags the same steps, with the same z and the median scaled by 2^k.
    #[test]
    fn spike_verdicts_are_invariant_under_power_of_two_scaling(
        config in spike_config(),
        xs in vec(prop_oneof![8 => 1.0f64..2.0, 1 => 10.0f64..1e3, 1 => -1e3f64..-1e-3], 0..60),
        k in -40i32..40,
    ) {
        let c = 2f64.powi(k);
        let scaled: Vec<f64> = xs.iter().map(|x| x * c).collect();
        let a = verdicts(config, &xs);
        let b = verdicts(config, &scaled);
        for (i, (a, b)) in a.iter().zip(&b).enumerate() {
            match (a, b) {
                (None, None) => {}
                (Some(a), Some(b)) => {
                    prop_assert_eq!(a.z.to_bits(), b.z.to_bits(), "z at {}", i);
                    prop_assert_eq!((a.median * c).to_bits(), b.median.to_bits(), "median at {}", i);
                }
                _ => prop_assert!(false, "value {}: {:?} unscaled, {:?} scaled", i, a, b),
            }
        }
    }

    /// In a constant history `c` (MAD 0), the scale is `min_rel_scale·|c|`: a value
    /// `c + |c|·d` is flagged, with median `c` and z = d / min_rel_scale, exactly when
    /// `d / min_rel_scale > threshold` (tested 1% away from the boundary).
    #[test]
    fn spike_outlier_after_constant_history(
        window in 1usize..20,
        extra in 0usize..30,
        threshold in 0.5f64..20.0,
        rel in 1e-3f64..0.5,
        c in prop_oneof![1e-6f64..1e6, -1e6f64..-1e-6],
        above in any::<bool>(),
        m in 0.0f64..1.0,
    ) {
        let config = SpikeConfig { window, min_history: window, threshold, min_rel_scale: rel };
        let mut d = SpikeDetector::new(config).unwrap();
        for _ in 0..window + extra {
            prop_assert!(d.push(c).is_none());
        }
        // d/rel is either > 1.01·threshold or < 0.99·threshold.
        let ratio = if above { 1.01 + 100.0 * m } else { 0.99 * m };
        let dev = rel * threshold * ratio;
        let x = c + c.abs() * dev;
        match d.push(x) {
            Some(v) => {
                prop_assert!(above, "{} flagged after constant {}: {:?}", x, c, v);
                prop_assert_eq!(v.median, c);
                let z = dev / rel;
                prop_assert!((v.z - z).abs() <= 1e-6 * z, "z {} expected {}", v.z, z);
            }
            None => prop_assert!(!above, "{} not flagged after constant {}", x, c),
        }
    }

    /// The window is the last `window` finite values: after a random prefix has scrolled out,
    /// a detector judges exactly like a fresh one fed the same values; non-finite values are
    /// flagged (z NaN) once `min_history` finite values were seen, never before, and never
    /// enter the window; nothing finite is flagged before `min_history` values.
    #[test]
    fn spike_window_holds_only_the_last_finite_values(
        config in spike_config(),
        prefix in vec(-1e3f64..1e3, 0..20),
        xs in vec(prop_oneof![6 => -1e3f64..1e3, 1 => non_finite()], 0..60),
    ) {
        let mut a = SpikeDetector::new(config).unwrap();
        for &p in &prefix {
            a.push(p);
        }
        let mut fresh = SpikeDetector::new(config).unwrap();
        let mut seen = 0usize; // finite values of `xs` pushed so far
        for (i, &x) in xs.iter().enumerate() {
            let va = a.push(x);
            if x.is_finite() {
                let vf = fresh.push(x);
                if seen < config.min_history {
                    prop_assert!(vf.is_none(), "fresh detector flagged value {} with {} values", i, seen);
                }
                if seen >= config.window {
                    prop_assert_eq!(va, vf, "value {}", i);
                }
                seen += 1;
            } else {
                let history = prefix.len() + seen;
                if history >= config.min_history {
                    prop_assert!(va.is_some_and(|v| v.z.is_nan()), "value {} ({}): {:?}", i, x, va);
                } else {
                    prop_assert!(va.is_none(), "value {} ({}) flagged with {} values", i, x, history);
                }
            }
        }
    }
}

proptest! {
    // Real optimizer steps: cap the cases (CI's 32 is below the cap).
    #![proptest_config(ProptestConfig {
        cases: ProptestConfig::default().cases.min(48),
        ..ProptestConfig::default()
    })]

    /// Per-parameter statistics (params, layers, the CSV's update/weight) are recorded on
    /// step 1 and on steps k, 2k, … for interval k — real AdamW steps — and on no others;
    /// every step gets a record.
    #[test]
    fn monitor_observes_on_step_one_and_multiples_of_the_interval(
        k in 1u64..8,
        n in 1u64..14,
    ) {
        let mut opt = MomentOptimizer::<B>::new(AdamWConfig::default().build::<B>().unwrap());
        let mon = MonitorConfig::default().with_interval(k).build().unwrap().shared();
        opt.set_observer(mon.clone());
        let mut ps = vec![ParamTensor {
            path: "model.blocks.0.w".into(),
            shape: vec![3],
            value: flat(&[0.5, -1.0, 2.0]),
            grad: None,
        }];
        for s in 0..n {
            let s = s as f32;
            ps[0].grad = Some(flat(&[1.0 + s, -0.5, 0.25 * s]));
            opt.step(1e-2, &mut ps).unwrap();
            mon.lock().unwrap().finish_step(StepInfo::new().loss(1.0)).unwrap();
        }
        let m = mon.lock().unwrap();
        let recs = m.records();
        prop_assert_eq!(recs.iter().map(|r| r.step).collect::<Vec<_>>(), (1..=n).collect::<Vec<_>>());
        let mut expected: Vec<u64> = std::iter::once(1).chain((k..=n).step_by(k as usize)).collect();
        expected.dedup();
        let with = |f: &dyn Fn(&StepRecord) -> bool| -> Vec<u64> {
            recs.iter().filter(|r| f(r)).map(|r| r.step).collect()
        };
        prop_assert_eq!(with(&|r| !r.params.is_empty()), expected.clone());
        prop_assert_eq!(with(&|r| !r.layers.is_empty()), expected.clone());
        prop_assert_eq!(with(&|r| r.update_to_weight().is_some()), expected);
    }
}

proptest! {
    /// The monitor's step bookkeeping, driven through the `Observer` interface: one record per
    /// optimizer step — run, skipped or refused — whether or not the loop finishes it (the
    /// next step or `flush` does); the loss is the one given to `finish_step`; `clip_rate` is
    /// the running fraction of the steps that ran that clipped; skipped and refused steps are
    /// never judged; the loss spikes are exactly a `SpikeDetector`'s verdicts on the losses
    /// of the steps that ran; refused steps keep the step counter and are counted; sinks and
    /// `Monitor::records`/`spikes` agree.
    #[test]
    fn monitor_step_bookkeeping(
        config in spike_config(),
        steps in vec(
            (
                any::<bool>(),
                // 0: ran, 1: skipped, 2: refused
                prop_oneof![6 => Just(0u8), 2 => Just(1u8), 2 => Just(2u8)],
                prop_oneof![8 => 1.0f64..2.0, 1 => 5.0f64..50.0, 1 => non_finite()],
                prop::bool::weighted(0.85),
            ),
            0..40,
        ),
    ) {
        let mut mon = MonitorConfig::default().with_spikes(Some(config), None).build().unwrap();
        let sink = MemorySink::new();
        mon.add_sink(sink.clone());
        let mut step = 0u64;
        for &(clipped, kind, loss, finish) in &steps {
            if kind == 0 {
                step += 1;
            }
            if kind == 2 {
                Observer::<B>::on_refused(&mut mon, &RefusedStep {
                    step,
                    lr: 1e-3,
                    policy: NonFinitePolicy::Error,
                    error: OptimError::DuplicatePath { path: "p".into() },
                });
            } else {
                let skipped = kind == 1;
                Observer::<B>::on_step(&mut mon, &report(step, clipped && !skipped, skipped));
            }
            if finish {
                mon.finish_step(StepInfo::new().loss(loss)).unwrap();
            }
        }
        mon.flush().unwrap();
        // A second finish without a step does nothing.
        mon.finish_step(StepInfo::new().loss(0.0)).unwrap();

        let recs = mon.records().to_vec();
        prop_assert_eq!(recs.len(), steps.len());
        let refused = steps.iter().filter(|s| s.1 == 2).count() as u64;
        prop_assert_eq!(mon.refused_steps(), refused);
        // (Debug form: NaN losses compare unequal.)
        prop_assert_eq!(format!("{:?}", sink.records()), format!("{:?}", recs));
        let mut detector = SpikeDetector::new(config).unwrap();
        let (mut seen, mut clips) = (0u32, 0u32);
        let mut all_spikes = Vec::new();
        let mut step = 0u64;
        for (i, (r, &(clipped, kind, loss, finish))) in recs.iter().zip(&steps).enumerate() {
            let skipped = kind != 0;
            step += u64::from(kind == 0);
            prop_assert_eq!(r.step, step);
            prop_assert_eq!(r.skipped, kind == 1);
            prop_assert_eq!(r.ran(), kind == 0);
            prop_assert_eq!(
                r.refused.as_ref().map(|x| (x.kind.as_str(), x.path.as_deref())),
                (kind == 2).then_some(("DuplicatePath", Some("p")))
            );
            if finish {
                prop_assert!(same(r.loss, Some(loss)), "record {}: loss {:?}", i, r.loss);
            } else {
                prop_assert_eq!(r.loss, None);
            }
            if !skipped {
                seen += 1;
                clips += u32::from(clipped);
            }
            let rate = if seen == 0 { 0.0 } else { f64::from(clips) / f64::from(seen) };
            prop_assert_eq!(r.clip_rate, rate, "record {}", i);
            let expected = match (skipped, r.loss) {
                (false, Some(l)) => detector.push(l),
                _ => None,
            };
            prop_assert_eq!(r.spikes.len(), usize::from(expected.is_some()), "record {}: {:?}", i, r.spikes);
            if let (Some(s), Some(e)) = (r.spikes.first(), expected) {
                prop_assert_eq!(s.metric, SpikeMetric::Loss);
                prop_assert_eq!(s.step, r.step);
                prop_assert!(same(Some(s.value), r.loss));
                prop_assert!(same(Some(s.z), Some(e.z)) && s.median == e.median);
            }
            all_spikes.extend(r.spikes.iter().cloned());
        }
        prop_assert_eq!(format!("{:?}", mon.spikes()), format!("{:?}", all_spikes));
    }

    /// Optional floats (`loss`, `val_loss`, `step_time_s`, `tokens_per_s`, `clip_threshold`,
    /// `sqrt_norm`) that are non-finite are written as `null` and read back as absent: JSON's
    /// `null` cannot tell "not measured" from NaN (docs/monitor.md says so).
    #[test]
    fn jsonl_optional_non_finite_floats_read_back_as_absent(rec in record(), x in non_finite()) {
        let mut rec = rec;
        rec.loss = Some(x);
        let dir = TempDir::new("jsonl-opt");
        let path = dir.join("metrics.jsonl");
        write_all(JsonlSink::create(&path).unwrap(), std::slice::from_ref(&rec));
        let back = read_jsonl(&path).unwrap().remove(0);
        prop_assert!(back.loss.is_none(), "loss {:?} read back as {:?}", x, back.loss);
        prop_assert_eq!(back.step, rec.step);
    }
}
