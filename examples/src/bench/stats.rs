//! The bench's arithmetic: medians of timed samples, effective GB/s and % of a bandwidth.

use std::fmt;

/// Median and minimum of a set of timed samples (seconds).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// The median: the middle sample, or the mean of the two middle ones for an even count.
    pub median: f64,
    /// The fastest sample.
    pub min: f64,
    /// How many samples.
    pub count: usize,
}

/// Why samples cannot be summarized.
#[derive(Debug, Clone, PartialEq)]
pub enum StatsError {
    /// No samples at all (a row without a single timed step).
    Empty,
    /// A sample that is not a finite, positive duration (a clock or bookkeeping bug).
    NotADuration(f64),
}

impl fmt::Display for StatsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StatsError::Empty => write!(f, "no timed samples"),
            StatsError::NotADuration(x) => {
                write!(f, "timed sample {x} s is not a positive finite duration")
            }
        }
    }
}

impl std::error::Error for StatsError {}

/// The median and minimum of `samples` (seconds, each finite and > 0).
pub fn summarize(samples: &[f64]) -> Result<Summary, StatsError> {
    if let Some(&bad) = samples.iter().find(|x| !(x.is_finite() && **x > 0.0)) {
        return Err(StatsError::NotADuration(bad));
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median = match n {
        0 => return Err(StatsError::Empty),
        _ if n % 2 == 1 => sorted[n / 2],
        _ => 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]),
    };
    Ok(Summary {
        median,
        min: sorted[0],
        count: n,
    })
}

/// Effective bandwidth (GB/s, 10⁹ bytes) of moving `bytes_per_element` bytes for each of
/// `numel` elements in `seconds`.
pub fn effective_gbps(bytes_per_element: f64, numel: usize, seconds: f64) -> f64 {
    bytes_per_element * numel as f64 / seconds / 1e9
}

/// `gbps` as a percentage of `reference` GB/s.
pub fn pct_of(gbps: f64, reference: f64) -> f64 {
    100.0 * gbps / reference
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_of_an_odd_count_is_the_middle_sample_whatever_the_order() {
        let s = summarize(&[5.0, 1.0, 3.0]).unwrap();
        assert_eq!((s.median, s.min, s.count), (3.0, 1.0, 3));
    }

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_two_middle_samples() {
        // the upper-middle sample alone (4.0) would overstate it
        let s = summarize(&[4.0, 1.0, 2.0, 100.0]).unwrap();
        assert_eq!(s.median, 3.0);
        assert_eq!(s.min, 1.0);
    }

    #[test]
    fn one_slow_outlier_does_not_move_the_median() {
        let fast = summarize(&[1.0, 1.1, 0.9, 1.0, 1.05]).unwrap();
        let with_outlier = summarize(&[1.0, 1.1, 0.9, 1.0, 50.0]).unwrap();
        assert_eq!(fast.median, 1.0);
        assert_eq!(with_outlier.median, 1.0);
    }

    #[test]
    fn no_samples_or_a_non_duration_is_an_error() {
        assert_eq!(summarize(&[]), Err(StatsError::Empty));
        assert_eq!(summarize(&[1.0, 0.0]), Err(StatsError::NotADuration(0.0)));
        assert!(matches!(
            summarize(&[1.0, f64::NAN]),
            Err(StatsError::NotADuration(x)) if x.is_nan()
        ));
        assert_eq!(summarize(&[-1.0]), Err(StatsError::NotADuration(-1.0)));
    }

    #[test]
    fn gbps_counts_decimal_gigabytes_per_second() {
        // AdamW's floor, 28 B for each of 16 Mi parameters, in 10 ms: 46.97 GB/s
        let g = effective_gbps(28.0, 16 << 20, 0.010);
        assert!((g - 28.0 * 16_777_216.0 / 0.010 / 1e9).abs() < 1e-12);
        assert!((g - 46.976_204_8).abs() < 1e-6);
        // twice the time, half the rate; twice the bytes, twice the rate
        assert!((effective_gbps(28.0, 16 << 20, 0.020) - g / 2.0).abs() < 1e-12);
        assert!((effective_gbps(56.0, 16 << 20, 0.010) - 2.0 * g).abs() < 1e-12);
    }

    #[test]
    fn percentages_are_relative_to_the_reference() {
        assert_eq!(pct_of(50.0, 100.0), 50.0);
        assert_eq!(pct_of(30.0, 20.0), 150.0);
        assert!(pct_of(1.0, 0.0).is_infinite());
    }
}
