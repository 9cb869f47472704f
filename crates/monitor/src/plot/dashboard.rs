//! [`dashboard`]: the six-panel view of one run — loss, learning rate, gradient norm,
//! update/weight per layer, optimizer-state memory, step time.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::{
    FONT, Panel, Run, Series, bounds, distinct, finite, legend, line_panel, no_data, palette, tick,
};
use crate::error::MonitorError;
use crate::record::{MemoryRecord, SpikeMetric, StepRecord};

/// The six-panel dashboard of one run (refused steps marked on the loss and gradient-norm
/// panels, counted in the title).
pub fn dashboard(run: &Run, path: impl AsRef<Path>, size: (u32, u32)) -> Result<(), MonitorError> {
    render!(path.as_ref(), size, |root| draw_dashboard(&root, run))
}

/// What the panels read: the steps that ran, and where refused steps were attempted.
struct Steps<'a> {
    /// Records of the steps that ran.
    recs: Vec<&'a StepRecord>,
    /// A refused step is a marker where it was attempted (after the last step that ran), not
    /// a point of the series: its record carries the counter of the step before it.
    refused: Vec<f64>,
}

impl<'a> Steps<'a> {
    fn new(run: &'a Run) -> Self {
        Self {
            refused: run
                .records
                .iter()
                .filter(|r| r.refused.is_some())
                .map(|r| step(r) + 0.5)
                .collect(),
            recs: run.records.iter().filter(|r| r.refused.is_none()).collect(),
        }
    }

    /// `title`, saying what the refused-step markers are when there are any.
    fn marked(&self, title: &str) -> String {
        if self.refused.is_empty() {
            title.to_string()
        } else {
            format!("{title}; magenta: refused steps")
        }
    }

    /// The dashboard's title: run name, steps run and refused.
    fn title(&self, run: &Run) -> String {
        if self.refused.is_empty() {
            format!("{} — {} steps", run.name, self.recs.len())
        } else {
            format!(
                "{} — {} steps, {} refused",
                run.name,
                self.recs.len(),
                self.refused.len()
            )
        }
    }

    /// The spikes of `metric`, at the step they were detected.
    fn spikes(&self, metric: SpikeMetric) -> Vec<(f64, f64)> {
        self.recs
            .iter()
            .flat_map(|r| r.spikes.iter())
            .filter(|s| s.metric == metric && s.value.is_finite())
            .map(|s| (s.step as f64, s.value))
            .collect()
    }
}

fn step(r: &StepRecord) -> f64 {
    r.step as f64
}

fn draw_dashboard<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    run: &Run,
) -> Result<(), String> {
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (title_area, body) = root.split_vertically(36);
    let steps = Steps::new(run);
    title_area
        .titled(&steps.title(run), (FONT, 20))
        .map_err(|e| e.to_string())?;
    let panels = body.split_evenly((3, 2));
    loss_panel(&panels[0], &steps)?;
    lr_panel(&panels[1], &steps)?;
    grad_norm_panel(&panels[2], &steps)?;
    update_ratio_panel(&panels[3], &steps)?;
    memory_panel(&panels[4], &steps)?;
    step_time_panel(&panels[5], &steps)?;
    Ok(())
}

/// Loss, spikes as red dots, refused steps as vertical lines.
fn loss_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    steps: &Steps<'_>,
) -> Result<(), String> {
    let loss: Vec<(f64, f64)> = steps
        .recs
        .iter()
        .filter_map(|r| finite(r.loss).map(|l| (step(r), l)))
        .collect();
    line_panel(
        area,
        &Panel {
            title: &steps.marked("loss (red: spikes)"),
            x_desc: "step",
            y_desc: "loss",
            series: vec![Series {
                name: "loss".into(),
                points: loss,
                color: palette(0),
            }],
            hline: None,
            markers: steps.spikes(SpikeMetric::Loss),
            vlines: steps.refused.clone(),
            legend: false,
        },
    )
}

/// Learning rate per parameter group (one series when the records name no groups).
fn lr_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    steps: &Steps<'_>,
) -> Result<(), String> {
    let recs = &steps.recs;
    let groups = distinct(recs.iter().flat_map(|r| r.group_lrs.keys()));
    let lr_series: Vec<Series> = if groups.is_empty() {
        vec![Series {
            name: "lr".into(),
            points: recs.iter().map(|r| (step(r), r.lr)).collect(),
            color: palette(0),
        }]
    } else {
        groups
            .iter()
            .enumerate()
            .map(|(i, g)| Series {
                name: g.clone(),
                points: recs
                    .iter()
                    .filter_map(|r| r.group_lrs.get(g).map(|v| (step(r), *v)))
                    .collect(),
                color: palette(i),
            })
            .collect()
    };
    line_panel(
        area,
        &Panel {
            title: "learning rate",
            x_desc: "step",
            y_desc: "lr",
            legend: lr_series.len() > 1,
            series: lr_series,
            hline: None,
            markers: Vec::new(),
            vlines: Vec::new(),
        },
    )
}

/// Global gradient norm before clipping, with the clipping threshold, spikes and refused steps.
fn grad_norm_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    steps: &Steps<'_>,
) -> Result<(), String> {
    let recs = &steps.recs;
    let clip = recs.iter().find_map(|r| r.clip_threshold);
    line_panel(
        area,
        &Panel {
            title: &steps.marked("global grad norm (before clipping)"),
            x_desc: "step",
            y_desc: "‖g‖",
            series: vec![Series {
                name: "grad norm".into(),
                points: recs.iter().map(|r| (step(r), r.grad_norm)).collect(),
                color: palette(1),
            }],
            hline: clip.map(|c| (c, format!("clip {c}"))),
            markers: steps.spikes(SpikeMetric::GradNorm),
            vlines: steps.refused.clone(),
            legend: clip.is_some(),
        },
    )
}

/// log₁₀ ‖Δθ‖/‖θ‖ per layer (legend up to 10 layers).
fn update_ratio_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    steps: &Steps<'_>,
) -> Result<(), String> {
    let recs = &steps.recs;
    let layers = distinct(recs.iter().flat_map(|r| r.layers.iter().map(|l| &l.layer)));
    let ratio_series: Vec<Series> = layers
        .iter()
        .enumerate()
        .map(|(i, name)| Series {
            name: name.clone(),
            points: recs
                .iter()
                .filter_map(|r| {
                    r.layers
                        .iter()
                        .find(|l| &l.layer == name)
                        .map(|l| (step(r), l.update_to_weight.log10()))
                })
                .collect(),
            color: palette(i),
        })
        .collect();
    line_panel(
        area,
        &Panel {
            title: "update/weight per layer",
            x_desc: "step",
            y_desc: "log10 ‖Δθ‖/‖θ‖",
            legend: ratio_series.len() <= 10,
            series: ratio_series,
            hline: None,
            markers: Vec::new(),
            vlines: Vec::new(),
        },
    )
}

/// Optimizer-state memory by kind, stacked, in MiB.
fn memory_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    steps: &Steps<'_>,
) -> Result<(), String> {
    let recs = &steps.recs;
    let kinds = distinct(
        recs.iter()
            .filter_map(|r| r.memory.as_ref())
            .flat_map(|m| m.state_by_kind.keys()),
    );
    let mem_steps: Vec<(f64, &MemoryRecord)> = recs
        .iter()
        .filter_map(|r| r.memory.as_ref().map(|m| (step(r), m)))
        .collect();
    let mut cumulative = vec![0.0; mem_steps.len()];
    let bands: Vec<Series> = kinds
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let points = mem_steps
                .iter()
                .zip(cumulative.iter_mut())
                .map(|((x, m), c)| {
                    *c += m.state_by_kind.get(k).copied().unwrap_or(0) as f64 / (1 << 20) as f64;
                    (*x, *c)
                })
                .collect();
            Series {
                name: k.clone(),
                points,
                color: palette(i),
            }
        })
        .collect();
    stacked_panel(area, "optimizer state memory by kind", &bands)
}

/// Step time in milliseconds.
fn step_time_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    steps: &Steps<'_>,
) -> Result<(), String> {
    line_panel(
        area,
        &Panel {
            title: "step time",
            x_desc: "step",
            y_desc: "ms",
            series: vec![Series {
                name: "step time".into(),
                points: steps
                    .recs
                    .iter()
                    .filter_map(|r| finite(r.step_time_s).map(|t| (step(r), t * 1e3)))
                    .collect(),
                color: palette(2),
            }],
            hline: None,
            markers: Vec::new(),
            vlines: Vec::new(),
            legend: false,
        },
    )
}

fn stacked_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    layers: &[Series],
) -> Result<(), String> {
    let top = layers.last().map(|s| s.points.clone()).unwrap_or_default();
    let (Some((x0, x1)), Some((_, y1))) = (
        bounds(top.iter().map(|q| q.0)),
        bounds(top.iter().map(|q| q.1).chain([0.0])),
    ) else {
        return no_data(area, title);
    };
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 16))
        .margin(8)
        .x_label_area_size(32)
        .y_label_area_size(64)
        .build_cartesian_2d(x0..x1, 0.0..y1)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc("MiB")
        .label_style((FONT, 11))
        .x_label_formatter(&|v| tick(*v))
        .y_label_formatter(&|v| tick(*v))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(err)?;
    // Cumulative series, drawn from the top down so each band shows.
    for s in layers.iter().rev() {
        let color = s.color;
        chart
            .draw_series(AreaSeries::new(s.points.clone(), 0.0, color).border_style(BLACK))
            .map_err(err)?
            .label(s.name.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
    }
    legend(&mut chart, SeriesLabelPosition::LowerRight)?;
    Ok(())
}
