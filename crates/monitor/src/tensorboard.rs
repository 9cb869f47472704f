//! TensorBoard event files with scalar summaries, written and read without TensorFlow.
//!
//! Format: a sequence of TFRecords — `u64` little-endian length, masked CRC-32C of the length
//! bytes, the payload, masked CRC-32C of the payload — whose payloads are `tensorflow.Event`
//! protobufs. The first event carries `file_version = "brain.Event:2"`; every other one a
//! `Summary` with `Value { tag, simple_value }` entries. Only the protobuf fields used here are
//! encoded (Event: 1 wall_time double, 2 step int64, 3 file_version string, 5 summary;
//! Summary: 1 value; Value: 1 tag string, 2 simple_value float).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::MonitorError;
use crate::record::StepRecord;
use crate::sink::Sink;

/// CRC-32C (Castagnoli), as TFRecord uses (moment-optim's, which checksums checkpoints).
pub use moment_optim::checkpoint::crc32c;

/// TFRecord's masked CRC.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    let c = crc32c(data);
    (c.rotate_right(15)).wrapping_add(0xA282_EAD8)
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn field_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    varint(out, u64::from(field << 3 | 2));
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// The protobuf encoding of an `Event` with the given summary values (or the file-version
/// event when `values` is `None`).
pub fn encode_event(wall_time: f64, step: i64, values: Option<&[(String, f32)]>) -> Vec<u8> {
    let mut e = Vec::new();
    e.push(0x09); // field 1, fixed64
    e.extend_from_slice(&wall_time.to_le_bytes());
    if step != 0 {
        e.push(0x10); // field 2, varint
        varint(&mut e, step as u64);
    }
    match values {
        None => field_bytes(&mut e, 3, b"brain.Event:2"),
        Some(values) => {
            let mut summary = Vec::new();
            for (tag, v) in values {
                let mut value = Vec::new();
                field_bytes(&mut value, 1, tag.as_bytes());
                value.push(0x15); // field 2, fixed32
                value.extend_from_slice(&v.to_le_bytes());
                field_bytes(&mut summary, 1, &value);
            }
            field_bytes(&mut e, 5, &summary);
        }
    }
    e
}

/// Frame a payload as one TFRecord.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(payload.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(&masked_crc32c(payload).to_le_bytes());
    out
}

/// The scalars a record contributes (tag, value): `train/…` step facts (`train/refused` is 1
/// for a step the optimizer refused, else 0) and
/// `layer/<layer>/{update_to_weight,grad_norm}` on observed steps.
pub fn record_scalars(r: &StepRecord) -> Vec<(String, f32)> {
    let mut v: Vec<(String, f32)> = Vec::new();
    let mut put = |tag: &str, x: Option<f64>| {
        if let Some(x) = x.filter(|x| x.is_finite()) {
            v.push((tag.to_string(), x as f32));
        }
    };
    put("train/loss", r.loss);
    put("train/lr", Some(r.lr));
    put("train/grad_norm", Some(r.grad_norm));
    put("train/clip_rate", Some(r.clip_rate));
    put("train/non_finite", Some(r.non_finite as f64));
    put(
        "train/refused",
        Some(f64::from(u8::from(r.refused.is_some()))),
    );
    put("train/update_to_weight", r.update_to_weight());
    put("train/step_time_s", r.step_time_s);
    put("train/tokens_per_s", r.tokens_per_s);
    if let Some(m) = &r.memory {
        put("memory/state_bytes", Some(m.state_bytes as f64));
        put("memory/peak_rss_bytes", m.peak_rss_bytes.map(|b| b as f64));
    }
    for l in &r.layers {
        put(
            &format!("layer/{}/update_to_weight", l.layer),
            Some(l.update_to_weight),
        );
        put(&format!("layer/{}/grad_norm", l.layer), Some(l.grad_norm));
    }
    v
}

/// Writes `events.out.tfevents.<unix seconds>.moment` in a directory.
#[derive(Debug)]
pub struct TensorBoardSink {
    path: PathBuf,
    out: BufWriter<File>,
}

impl TensorBoardSink {
    /// Create the directory if needed and a new event file in it.
    pub fn create(dir: impl AsRef<Path>) -> Result<Self, MonitorError> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| MonitorError::io(dir, e))?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let path = dir.join(format!("events.out.tfevents.{}.moment", now as u64));
        let f = File::create(&path).map_err(|e| MonitorError::io(&path, e))?;
        let mut out = BufWriter::new(f);
        out.write_all(&frame(&encode_event(now, 0, None)))
            .map_err(|e| MonitorError::io(&path, e))?;
        Ok(Self { path, out })
    }

    /// The event file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Sink for TensorBoardSink {
    fn write(&mut self, r: &StepRecord) -> Result<(), MonitorError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let values = record_scalars(r);
        self.out
            .write_all(&frame(&encode_event(now, r.step as i64, Some(&values))))
            .map_err(|e| MonitorError::io(&self.path, e))
    }

    fn flush(&mut self) -> Result<(), MonitorError> {
        self.out
            .flush()
            .map_err(|e| MonitorError::io(&self.path, e))
    }
}

/// One scalar read back from an event file.
#[derive(Debug, Clone, PartialEq)]
pub struct Scalar {
    /// Event step.
    pub step: i64,
    /// Tag.
    pub tag: String,
    /// Value.
    pub value: f32,
}

/// What [`read_event_file`] found.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EventFile {
    /// The `file_version` of the first event.
    pub file_version: Option<String>,
    /// Every scalar summary value, in file order.
    pub scalars: Vec<Scalar>,
}

struct Reader<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Reader<'a> {
    fn done(&self) -> bool {
        self.i >= self.b.len()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.i.checked_add(n).filter(|&e| e <= self.b.len());
        let end = end.ok_or_else(|| format!("truncated at byte {}", self.i))?;
        let s = &self.b[self.i..end];
        self.i = end;
        Ok(s)
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.take(1)?[0];
            v |= u64::from(b & 0x7F) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    /// (field, wire type, payload for length-delimited / fixed fields, varint value)
    fn field(&mut self) -> Result<(u64, &'a [u8], u64), String> {
        let key = self.varint()?;
        let (field, wire) = (key >> 3, key & 7);
        match wire {
            0 => Ok((field, &[], self.varint()?)),
            1 => Ok((field, self.take(8)?, 0)),
            2 => {
                let n = self.varint()? as usize;
                Ok((field, self.take(n)?, 0))
            }
            5 => Ok((field, self.take(4)?, 0)),
            w => Err(format!("unsupported wire type {w}")),
        }
    }
}

fn parse_event(payload: &[u8], out: &mut EventFile) -> Result<(), String> {
    let mut r = Reader { b: payload, i: 0 };
    let mut step = 0i64;
    let mut values = Vec::new();
    while !r.done() {
        match r.field()? {
            (2, _, v) => step = v as i64,
            (3, s, _) => out.file_version = Some(String::from_utf8_lossy(s).into_owned()),
            (5, s, _) => {
                let mut sr = Reader { b: s, i: 0 };
                while !sr.done() {
                    if let (1, value, _) = sr.field()? {
                        let mut vr = Reader { b: value, i: 0 };
                        let (mut tag, mut x) = (String::new(), None);
                        while !vr.done() {
                            match vr.field()? {
                                (1, t, _) => tag = String::from_utf8_lossy(t).into_owned(),
                                (2, f, _) if f.len() == 4 => {
                                    x = Some(f32::from_le_bytes([f[0], f[1], f[2], f[3]]))
                                }
                                _ => {}
                            }
                        }
                        if let Some(value) = x {
                            values.push((tag, value));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    out.scalars.extend(
        values
            .into_iter()
            .map(|(tag, value)| Scalar { step, tag, value }),
    );
    Ok(())
}

/// Read an event file, checking both CRCs of every record.
pub fn read_event_file(path: impl AsRef<Path>) -> Result<EventFile, MonitorError> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| MonitorError::io(path, e))?;
    let bad = |reason: String| MonitorError::Parse {
        path: path.to_path_buf(),
        line: 0,
        reason,
    };
    let mut out = EventFile::default();
    let mut r = Reader { b: &bytes, i: 0 };
    while !r.done() {
        let at = r.i;
        let len_bytes = r.take(8).map_err(&bad)?;
        let len = u64::from_le_bytes(len_bytes.try_into().map_err(|_| bad("length".into()))?);
        let want = masked_crc32c(len_bytes);
        let got = r.take(4).map_err(&bad)?;
        if u32::from_le_bytes([got[0], got[1], got[2], got[3]]) != want {
            return Err(bad(format!("record at byte {at}: length CRC mismatch")));
        }
        let payload = r.take(len as usize).map_err(&bad)?;
        let want = masked_crc32c(payload);
        let got = r.take(4).map_err(&bad)?;
        if u32::from_le_bytes([got[0], got[1], got[2], got[3]]) != want {
            return Err(bad(format!("record at byte {at}: payload CRC mismatch")));
        }
        parse_event(payload, &mut out).map_err(|e| bad(format!("record at byte {at}: {e}")))?;
    }
    Ok(out)
}
