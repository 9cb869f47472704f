//! Spike detection on a scalar series by a rolling robust z-score.

use std::collections::VecDeque;

use crate::error::MonitorError;

/// Settings of a [`SpikeDetector`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpikeConfig {
    /// Values in the rolling window (the most recent finite values before the current one).
    pub window: usize,
    /// Values needed in the window before anything is flagged.
    pub min_history: usize,
    /// A value is a spike when `(x − median) / (1.4826 · MAD) > threshold` (upward only).
    pub threshold: f64,
    /// Floor on the scale, relative to |median|, so a perfectly flat history does not make
    /// every tiny wiggle a spike.
    pub min_rel_scale: f64,
}

impl Default for SpikeConfig {
    /// Window 50, 10 values of history, threshold 6, scale floor 1% of the median.
    fn default() -> Self {
        Self {
            window: 50,
            min_history: 10,
            threshold: 6.0,
            min_rel_scale: 0.01,
        }
    }
}

impl SpikeConfig {
    /// Check the settings.
    pub fn validate(&self) -> Result<(), MonitorError> {
        if self.window == 0 || self.min_history == 0 || self.min_history > self.window {
            return Err(MonitorError::Config(format!(
                "spike window {} / min_history {}: need 1 ≤ min_history ≤ window",
                self.window, self.min_history
            )));
        }
        if !(self.threshold.is_finite() && self.threshold > 0.0) {
            return Err(MonitorError::Config(format!(
                "spike threshold {} must be finite and > 0",
                self.threshold
            )));
        }
        if !(self.min_rel_scale.is_finite() && self.min_rel_scale >= 0.0) {
            return Err(MonitorError::Config(format!(
                "spike min_rel_scale {} must be finite and ≥ 0",
                self.min_rel_scale
            )));
        }
        Ok(())
    }
}

/// The verdict on one value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpikeCheck {
    /// Median of the window.
    pub median: f64,
    /// Robust z-score (`NaN` for a non-finite value).
    pub z: f64,
}

/// Rolling robust z-score detector. Non-finite values are always spikes (once there is any
/// history) and never enter the window.
#[derive(Debug, Clone)]
pub struct SpikeDetector {
    config: SpikeConfig,
    window: VecDeque<f64>,
}

impl SpikeDetector {
    /// A detector with validated settings.
    pub fn new(config: SpikeConfig) -> Result<Self, MonitorError> {
        config.validate()?;
        Ok(Self {
            config,
            window: VecDeque::with_capacity(config.window),
        })
    }

    /// Judge `x` against the window, then add it (if finite). `Some` when it is a spike.
    pub fn push(&mut self, x: f64) -> Option<SpikeCheck> {
        let verdict = if self.window.len() < self.config.min_history {
            None
        } else {
            let mut v: Vec<f64> = self.window.iter().copied().collect();
            let median = median_of(&mut v);
            if !x.is_finite() {
                Some(SpikeCheck {
                    median,
                    z: f64::NAN,
                })
            } else {
                let mut dev: Vec<f64> = v.iter().map(|y| (y - median).abs()).collect();
                let scale = (1.4826 * median_of(&mut dev))
                    .max(self.config.min_rel_scale * median.abs())
                    .max(f64::MIN_POSITIVE);
                let z = (x - median) / scale;
                (z > self.config.threshold).then_some(SpikeCheck { median, z })
            }
        };
        if x.is_finite() {
            if self.window.len() == self.config.window {
                self.window.pop_front();
            }
            self.window.push_back(x);
        }
        verdict
    }
}

fn median_of(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}
