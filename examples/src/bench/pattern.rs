//! Access patterns: which f32 streams an optimizer's minimal one-pass step reads and writes,
//! and the bytes per parameter that pass must move (the row's floor).

/// `reads` f32 streams read and `writes` of them written back, per element (an optimizer
/// step's shape: the written streams are among the read ones). `reads == 0` names the
/// classic write-only patterns instead: `(0, 1)` copy (`a ← b`), `(0, 2)` triad
/// (`a ← b + s·c`). The same encoding as `moment_cuda::stream_gbps`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pattern {
    /// Streams read (or 0 for copy / triad).
    pub reads: usize,
    /// Streams written.
    pub writes: usize,
}

impl Pattern {
    /// `a ← b`.
    pub const COPY: Pattern = Pattern {
        reads: 0,
        writes: 1,
    };
    /// `a ← b + s·c`.
    pub const TRIAD: Pattern = Pattern {
        reads: 0,
        writes: 2,
    };

    /// Streams moved per element (each read and each write counts once).
    pub fn streams(self) -> usize {
        match (self.reads, self.writes) {
            (0, 1) => 2,
            (0, 2) => 3,
            (r, w) => r + w,
        }
    }

    /// Bytes moved per element with f32 streams.
    pub fn bytes_per_element(self) -> f64 {
        4.0 * self.streams() as f64
    }

    /// A human label (`4R 3W`, `copy (1R 1W)`).
    pub fn label(self) -> String {
        match (self.reads, self.writes) {
            (0, 1) => "copy (1R 1W)".to_string(),
            (0, 2) => "triad (2R 1W)".to_string(),
            (r, w) => format!("{r}R {w}W"),
        }
    }
}

/// The streams of `optimizer`'s minimal one-pass f32 step (unknown names: `p -= lr·g`).
pub fn pattern_of(optimizer: &str) -> Pattern {
    let (reads, writes) = match optimizer {
        // p, g, m, v read; p, m, v written
        "adamw" | "adam" => (4, 3),
        // p, g, m read; p, m written
        "lion" => (3, 2),
        // p, g, m, h read; p, m written
        "sophia" => (4, 2),
        // The bench's parameter is a vector, which Adafactor does not factor: p, g, v read;
        // p, v written
        "adafactor" => (3, 2),
        // `adafactor-matrix`: a [n/1024, 1024] matrix, factored: p, g read, p written (the
        // row/column statistics are O(rows + cols))
        "adafactor-matrix" => (2, 1),
        // p, g read, p written; the two u8 codes (¼ stream each) are in `floor_bytes`
        "adamw8bit" => (2, 1),
        _ => (2, 1),
    };
    Pattern { reads, writes }
}

/// Bytes per parameter `optimizer`'s minimal one-pass step moves (its floor).
pub fn floor_bytes(optimizer: &str) -> f64 {
    match optimizer {
        // p read and written, g read, two u8 codes read and written
        "adamw8bit" => 4.0 * 3.0 + 4.0,
        other => pattern_of(other).bytes_per_element(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floors_are_the_streams_each_step_must_move() {
        // p, g, m, v read + p, m, v written = 7 f32 streams
        assert_eq!(floor_bytes("adamw"), 28.0);
        assert_eq!(floor_bytes("adam"), 28.0);
        assert_eq!(floor_bytes("lion"), 20.0);
        assert_eq!(floor_bytes("sophia"), 24.0);
        assert_eq!(floor_bytes("adafactor"), 20.0);
        assert_eq!(floor_bytes("adafactor-matrix"), 12.0);
        // f32 p r/w + g r (12 B) and two u8 codes r/w (4 B)
        assert_eq!(floor_bytes("adamw8bit"), 16.0);
    }

    #[test]
    fn copy_and_triad_count_their_write_only_destination() {
        assert_eq!(Pattern::COPY.streams(), 2);
        assert_eq!(Pattern::TRIAD.streams(), 3);
        assert_eq!(pattern_of("adamw").streams(), 7);
        assert_eq!(pattern_of("adamw").label(), "4R 3W");
        assert_eq!(Pattern::TRIAD.label(), "triad (2R 1W)");
    }
}
