//! [`layer_heatmap`]: a per-layer quantity over the observed steps.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::{FONT, Run, bounds, distinct, no_data};
use crate::error::MonitorError;
use crate::record::{LayerStats, StepRecord};

/// A per-layer quantity for [`layer_heatmap`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerMetric {
    /// log₁₀ ‖Δθ‖/‖θ‖.
    UpdateToWeight,
    /// log₁₀ ‖g‖.
    GradNorm,
    /// cos(Δθ, g).
    CosUpdateGrad,
}

impl LayerMetric {
    fn label(self) -> &'static str {
        match self {
            LayerMetric::UpdateToWeight => "log10 update/weight",
            LayerMetric::GradNorm => "log10 grad norm",
            LayerMetric::CosUpdateGrad => "cos(update, grad)",
        }
    }

    fn value(self, l: &LayerStats) -> f64 {
        match self {
            LayerMetric::UpdateToWeight => l.update_to_weight.log10(),
            LayerMetric::GradNorm => l.grad_norm.log10(),
            LayerMetric::CosUpdateGrad => l.cos_update_grad,
        }
    }
}

/// Map `t ∈ [0, 1]` to a viridis-like colour.
fn colormap(t: f64) -> RGBColor {
    const STOPS: [(f64, f64, f64); 5] = [
        (68.0, 1.0, 84.0),
        (59.0, 82.0, 139.0),
        (33.0, 145.0, 140.0),
        (94.0, 201.0, 98.0),
        (253.0, 231.0, 37.0),
    ];
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let x = t * (STOPS.len() - 1) as f64;
    let i = (x.floor() as usize).min(STOPS.len() - 2);
    let f = x - i as f64;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    let mix = |p: f64, q: f64| (p + (q - p) * f).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

fn draw_heatmap<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    run: &Run,
    metric: LayerMetric,
) -> Result<(), String> {
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let observed: Vec<&StepRecord> = run
        .records
        .iter()
        .filter(|r| !r.layers.is_empty())
        .collect();
    let layers = distinct(
        observed
            .iter()
            .flat_map(|r| r.layers.iter().map(|l| &l.layer)),
    );
    let title = format!("{} — {} per layer", run.name, metric.label());
    let cells: Vec<(usize, usize, f64)> = observed
        .iter()
        .enumerate()
        .flat_map(|(x, r)| {
            let layers = &layers;
            r.layers.iter().filter_map(move |l| {
                let i = layers.iter().position(|n| n == &l.layer)?;
                Some((x, layers.len() - 1 - i, metric.value(l)))
            })
        })
        .collect();
    let Some((lo, hi)) = bounds(cells.iter().map(|c| c.2)) else {
        return no_data(root, &title);
    };
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let steps: Vec<u64> = observed.iter().map(|r| r.step).collect();
    let names = layers.clone();
    let label_w = names.iter().map(|n| n.len()).max().unwrap_or(4).min(28) as u32 * 7 + 10;
    let mut chart = ChartBuilder::on(root)
        .caption(format!("{title}  (colour: {lo:.2} … {hi:.2})"), (FONT, 16))
        .margin(10)
        .x_label_area_size(32)
        .y_label_area_size(label_w)
        .build_cartesian_2d(0.0..observed.len() as f64, -0.5..layers.len() as f64 - 0.5)
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc("step")
        .label_style((FONT, 11))
        .x_labels(8)
        .y_labels(layers.len().min(40))
        .x_label_formatter(&|x| {
            steps
                .get(*x as usize)
                .map_or_else(String::new, |s| s.to_string())
        })
        .y_label_formatter(&|y| {
            let r = y.round();
            if (y - r).abs() > 1e-6 || r < 0.0 {
                return String::new();
            }
            let i = names.len().checked_sub(1 + r as usize);
            i.and_then(|i| names.get(i)).map_or_else(String::new, |n| {
                n.chars()
                    .rev()
                    .take(28)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect()
            })
        })
        .draw()
        .map_err(err)?;
    let span = (hi - lo).max(f64::MIN_POSITIVE);
    chart
        .draw_series(cells.iter().map(|&(x, y, v)| {
            Rectangle::new(
                [(x as f64, y as f64 - 0.5), (x as f64 + 1.0, y as f64 + 0.5)],
                colormap((v - lo) / span).filled(),
            )
        }))
        .map_err(err)?;
    Ok(())
}

/// A heatmap of a per-layer quantity: observed steps across, layers down.
pub fn layer_heatmap(
    run: &Run,
    metric: LayerMetric,
    path: impl AsRef<Path>,
    size: (u32, u32),
) -> Result<(), MonitorError> {
    render!(path.as_ref(), size, |root| draw_heatmap(&root, run, metric))
}
