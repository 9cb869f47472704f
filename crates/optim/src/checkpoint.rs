//! Checkpoint files of an optimizer's state — the only file I/O moment-optim does.
//!
//! Format (version 1): the 8 bytes `MOMENTCK`, the format version (`u32` LE), the payload
//! length (`u64` LE), the payload's CRC-32C (`u32` LE), then the payload: the
//! [`OptimizerRecord`] as JSON (backend-independent; exact `f32`s). Loading checks all four
//! before parsing, so a truncated or corrupted file is a clear [`OptimError::Checkpoint`] (its
//! [`CheckpointError`] says what is wrong, an I/O error is kept as its `source()`) and the
//! optimizer's in-memory state is untouched; a record of another optimizer or model is the
//! record check's [`OptimError::RecordMismatch`], also without changing anything.
//!
//! Saving is atomic: the bytes go to a temporary file in the same directory
//! (`.NAME.tmp-PID`), which is flushed to disk and then renamed over `NAME`. A crash or an
//! error mid-save leaves the previous checkpoint as it was.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use burn::tensor::backend::Backend;

pub use crate::error::CheckpointError;
use crate::error::{OptimError, Result};
use crate::optimizer::MomentOptimizer;
use crate::record::OptimizerRecord;

const MAGIC: &[u8; 8] = b"MOMENTCK";
/// Checkpoint file format version written by this crate.
pub const CHECKPOINT_FORMAT: u32 = 1;
const HEADER: usize = 8 + 4 + 8 + 4;

const CASTAGNOLI: u32 = 0x82F6_3B78;

const fn crc_table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ CASTAGNOLI
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

static CRC_TABLE: [u32; 256] = crc_table();

/// CRC-32C (Castagnoli) of `data`.
pub fn crc32c(data: &[u8]) -> u32 {
    !data.iter().fold(!0u32, |c, &b| {
        CRC_TABLE[((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8)
    })
}

fn err(path: &Path, source: CheckpointError) -> OptimError {
    OptimError::Checkpoint {
        path: path.to_path_buf(),
        source,
    }
}

/// The checkpoint bytes of `record` (header + JSON payload).
pub fn to_bytes(record: &OptimizerRecord) -> Result<Vec<u8>, CheckpointError> {
    let payload = serde_json::to_vec(record).map_err(|e| CheckpointError::Encode(Arc::new(e)))?;
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&CHECKPOINT_FORMAT.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32c(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// The record in checkpoint `bytes`; the error says what is wrong (not a checkpoint, a newer
/// format, truncated, trailing bytes, checksum mismatch, unparsable payload).
pub fn from_bytes(bytes: &[u8]) -> Result<OptimizerRecord, CheckpointError> {
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(CheckpointError::BadMagic);
    }
    if bytes.len() < HEADER {
        return Err(CheckpointError::TruncatedHeader {
            len: bytes.len(),
            header: HEADER,
        });
    }
    let word =
        |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    let format = word(8);
    if format != CHECKPOINT_FORMAT {
        return Err(CheckpointError::UnsupportedFormat {
            found: format,
            supported: CHECKPOINT_FORMAT,
        });
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&bytes[12..20]);
    let len = u64::from_le_bytes(len);
    let have = (bytes.len() - HEADER) as u64;
    if have < len {
        return Err(CheckpointError::TruncatedPayload {
            have,
            expected: len,
        });
    }
    if have > len {
        return Err(CheckpointError::TrailingBytes {
            extra: have - len,
            payload: len,
        });
    }
    let payload = &bytes[HEADER..];
    let (stored, computed) = (word(20), crc32c(payload));
    if stored != computed {
        return Err(CheckpointError::ChecksumMismatch { stored, computed });
    }
    serde_json::from_slice(payload).map_err(|e| CheckpointError::UnreadableRecord(Arc::new(e)))
}

/// Write `bytes` to `path` atomically (temporary file in the same directory, flushed, renamed).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| err(path, CheckpointError::NotAFilePath))?
        .to_string_lossy()
        .into_owned();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let written = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        // Only our own temporary file is removed; the previous checkpoint is untouched.
        if tmp.is_file() {
            let _ = std::fs::remove_file(&tmp);
        }
        return Err(err(path, CheckpointError::Write(Arc::new(e))));
    }
    // Make the rename itself durable (best effort: not every platform can sync a directory).
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

impl<B: Backend> MomentOptimizer<B> {
    /// Save the optimizer's state to `path`, atomically (see the [module docs](self)).
    pub fn save_checkpoint(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let bytes = to_bytes(&self.to_record()).map_err(|e| err(path, e))?;
        write_atomic(path, &bytes)
    }

    /// Load the state saved by [`save_checkpoint`](Self::save_checkpoint), creating its
    /// tensors on `device`. A missing, truncated or corrupted file, or one written by another
    /// optimizer or for another model, is an error and leaves the current state untouched.
    pub fn load_checkpoint(&mut self, path: impl AsRef<Path>, device: &B::Device) -> Result<()> {
        let path = path.as_ref();
        let bytes =
            std::fs::read(path).map_err(|e| err(path, CheckpointError::Read(Arc::new(e))))?;
        let record = from_bytes(&bytes).map_err(|e| err(path, e))?;
        self.load_record(record, device)
    }
}

#[cfg(test)]
mod tests {
    use super::crc32c;

    #[test]
    fn crc32c_check_value() {
        // The standard check value of CRC-32C.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
    }
}
