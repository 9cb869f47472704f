//! Plots of monitored runs with `plotters`: PNG (text drawn from the DejaVu Sans font embedded
//! by the `dejavu` crate, so no system fonts are needed) or SVG, chosen by the file extension.
//!
//! * [`dashboard`]: loss with spikes marked, learning rate per group, global gradient norm
//!   with the clipping threshold, update/weight ratio per layer, optimizer-state memory by kind
//!   (stacked), step time; refused optimizer steps as vertical lines ([`REFUSED`]) on the loss
//!   and gradient-norm panels.
//! * [`layer_heatmap`]: a per-layer quantity over the observed steps.
//! * [`overlay`]: several runs' loss against step and against wall time, with an optional floor.

use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::{CoordTranslate, Shift};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::error::MonitorError;
use crate::record::{SpikeMetric, StepRecord};

/// A named run: what the plots and reports read.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    /// Display name (e.g. the optimizer).
    pub name: String,
    /// Its records in step order.
    pub records: Vec<StepRecord>,
}

impl Run {
    /// A run from records.
    pub fn new(name: impl Into<String>, records: Vec<StepRecord>) -> Self {
        Self {
            name: name.into(),
            records,
        }
    }

    /// Read a run saved as JSON Lines.
    pub fn from_jsonl(
        name: impl Into<String>,
        path: impl AsRef<Path>,
    ) -> Result<Self, MonitorError> {
        Ok(Self::new(name, crate::sink::read_jsonl(path)?))
    }
}

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

    fn value(self, l: &crate::record::LayerStats) -> f64 {
        match self {
            LayerMetric::UpdateToWeight => l.update_to_weight.log10(),
            LayerMetric::GradNorm => l.grad_norm.log10(),
            LayerMetric::CosUpdateGrad => l.cos_update_grad,
        }
    }
}

const FONT: &str = "sans-serif";

fn fonts() -> Result<(), String> {
    static ONCE: OnceLock<Result<(), String>> = OnceLock::new();
    ONCE.get_or_init(|| {
        for (style, bytes) in [
            (FontStyle::Normal, dejavu::sans::regular()),
            (FontStyle::Bold, dejavu::sans::bold()),
            (FontStyle::Oblique, dejavu::sans::oblique()),
            (FontStyle::Italic, dejavu::sans::oblique()),
        ] {
            plotters::style::register_font(FONT, style, bytes)
                .map_err(|_| "the embedded DejaVu font did not parse".to_string())?;
        }
        Ok(())
    })
    .clone()
}

/// Draw on a PNG or SVG file chosen by `path`'s extension.
macro_rules! render {
    ($path:expr, $size:expr, |$root:ident| $body:expr) => {{
        let path: &Path = $path;
        let size: (u32, u32) = $size;
        let fail = |reason: String| MonitorError::Plot {
            path: path.to_path_buf(),
            reason,
        };
        if size.0 < 64 || size.1 < 64 {
            return Err(fail(format!("size {}×{} is below 64×64", size.0, size.1)));
        }
        fonts().map_err(fail)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| MonitorError::io(dir, e))?;
        }
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("png") => {
                let $root = BitMapBackend::new(path, size).into_drawing_area();
                $body.map_err(fail)?;
                $root.present().map_err(|e| fail(e.to_string()))?;
            }
            Some("svg") => {
                let $root = SVGBackend::new(path, size).into_drawing_area();
                $body.map_err(fail)?;
                $root.present().map_err(|e| fail(e.to_string()))?;
            }
            _ => return Err(fail("the file name must end in .png or .svg".into())),
        }
        Ok(())
    }};
}

/// A colour per series index (Tableau 10).
pub fn palette(i: usize) -> RGBColor {
    const C: [(u8, u8, u8); 10] = [
        (31, 119, 180),
        (255, 127, 14),
        (44, 160, 44),
        (214, 39, 40),
        (148, 103, 189),
        (140, 86, 75),
        (227, 119, 194),
        (127, 127, 127),
        (188, 189, 34),
        (23, 190, 207),
    ];
    let (r, g, b) = C[i % C.len()];
    RGBColor(r, g, b)
}

struct Series {
    name: String,
    points: Vec<(f64, f64)>,
    color: RGBColor,
}

struct Panel<'a> {
    title: &'a str,
    x_desc: &'a str,
    y_desc: &'a str,
    series: Vec<Series>,
    hline: Option<(f64, String)>,
    markers: Vec<(f64, f64)>,
    /// Steps marked by a vertical line in [`REFUSED`] (refused optimizer steps).
    vlines: Vec<f64>,
    legend: bool,
}

/// The colour of refused-step markers.
pub const REFUSED: RGBColor = RGBColor(204, 0, 204);

fn bounds(vals: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let (lo, hi) = vals
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    if lo > hi {
        return None;
    }
    let pad = if hi > lo {
        0.05 * (hi - lo)
    } else {
        lo.abs().max(1.0) * 0.05
    };
    Some((lo - pad, hi + pad))
}

/// Axis tick text: plain up to 4 significant digits in [1e-3, 1e5), else `1.2e-4`.
fn tick(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if (1e-3..1e5).contains(&a) {
        let digits = (3 - a.log10().floor() as i32).clamp(0, 6) as usize;
        let s = format!("{v:.digits$}");
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    } else {
        format!("{v:.1e}")
    }
}

/// The series legend every chart uses, at `position`.
fn legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
) -> Result<(), String> {
    chart
        .configure_series_labels()
        .label_font((FONT, 11))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(position)
        .draw()
        .map_err(|e| e.to_string())
}

fn no_data<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, title: &str) -> Result<(), String> {
    let (w, h) = area.dim_in_pixel();
    area.draw(&Text::new(
        format!("{title}: no data"),
        (w as i32 / 2 - 60, h as i32 / 2),
        (FONT, 14).into_font().color(&BLACK),
    ))
    .map_err(|e| e.to_string())
}

fn line_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    p: &Panel<'_>,
) -> Result<(), String> {
    let xs = p
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|q| q.0))
        .chain(p.vlines.iter().copied());
    let ys = p
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|q| q.1))
        .chain(p.hline.iter().map(|h| h.0))
        .chain(p.markers.iter().map(|m| m.1));
    // Vertical markers alone (e.g. every step refused) still draw, on a unit y range.
    let ys = bounds(ys).or_else(|| (!p.vlines.is_empty()).then_some((0.0, 1.0)));
    let (Some((x0, x1)), Some((y0, y1))) = (bounds(xs), ys) else {
        return no_data(area, p.title);
    };
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let mut chart = ChartBuilder::on(area)
        .caption(p.title, (FONT, 16))
        .margin(8)
        .x_label_area_size(32)
        .y_label_area_size(64)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(p.x_desc)
        .y_desc(p.y_desc)
        .label_style((FONT, 11))
        .x_labels(6)
        .y_labels(6)
        .x_label_formatter(&|v| tick(*v))
        .y_label_formatter(&|v| tick(*v))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(err)?;
    for s in &p.series {
        let color = s.color;
        let pts: Vec<(f64, f64)> = s
            .points
            .iter()
            .copied()
            .filter(|q| q.0.is_finite() && q.1.is_finite())
            .collect();
        let drawn = chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))
            .map_err(err)?;
        if p.legend {
            drawn.label(s.name.clone()).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
            });
        }
    }
    if let Some((y, name)) = &p.hline {
        let drawn = chart
            .draw_series(DashedLineSeries::new(
                vec![(x0, *y), (x1, *y)],
                6,
                4,
                BLACK.stroke_width(1),
            ))
            .map_err(err)?;
        if p.legend {
            drawn
                .label(name.clone())
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLACK));
        }
    }
    let vlines = p.vlines.iter().filter(|x| x.is_finite());
    for &x in vlines {
        chart
            .draw_series(LineSeries::new(
                vec![(x, y0), (x, y1)],
                REFUSED.stroke_width(1),
            ))
            .map_err(err)?;
    }
    if !p.markers.is_empty() {
        chart
            .draw_series(
                p.markers
                    .iter()
                    .map(|&(x, y)| Circle::new((x, y), 5, RED.filled())),
            )
            .map_err(err)?;
    }
    if p.legend {
        legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    }
    Ok(())
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

fn finite(v: Option<f64>) -> Option<f64> {
    v.filter(|x| x.is_finite())
}

fn draw_dashboard<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    run: &Run,
) -> Result<(), String> {
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (title_area, body) = root.split_vertically(36);
    let step = |r: &StepRecord| r.step as f64;
    // A refused step is a marker where it was attempted (after the last step that ran), not
    // a point of the series: its record carries the counter of the step before it.
    let refused: Vec<f64> = run
        .records
        .iter()
        .filter(|r| r.refused.is_some())
        .map(|r| step(r) + 0.5)
        .collect();
    let recs: Vec<&StepRecord> = run.records.iter().filter(|r| r.refused.is_none()).collect();
    let recs = &recs;
    let title = if refused.is_empty() {
        format!("{} — {} steps", run.name, recs.len())
    } else {
        format!(
            "{} — {} steps, {} refused",
            run.name,
            recs.len(),
            refused.len()
        )
    };
    title_area
        .titled(&title, (FONT, 20))
        .map_err(|e| e.to_string())?;
    let panels = body.split_evenly((3, 2));
    let marked = |title: &str| {
        if refused.is_empty() {
            title.to_string()
        } else {
            format!("{title}; magenta: refused steps")
        }
    };

    let loss: Vec<(f64, f64)> = recs
        .iter()
        .filter_map(|r| finite(r.loss).map(|l| (step(r), l)))
        .collect();
    let loss_spikes: Vec<(f64, f64)> = recs
        .iter()
        .flat_map(|r| r.spikes.iter())
        .filter(|s| s.metric == SpikeMetric::Loss && s.value.is_finite())
        .map(|s| (s.step as f64, s.value))
        .collect();
    line_panel(
        &panels[0],
        &Panel {
            title: &marked("loss (red: spikes)"),
            x_desc: "step",
            y_desc: "loss",
            series: vec![Series {
                name: "loss".into(),
                points: loss,
                color: palette(0),
            }],
            hline: None,
            markers: loss_spikes,
            vlines: refused.clone(),
            legend: false,
        },
    )?;

    let mut groups: Vec<String> = Vec::new();
    for r in recs {
        for g in r.group_lrs.keys() {
            if !groups.contains(g) {
                groups.push(g.clone());
            }
        }
    }
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
        &panels[1],
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
    )?;

    let clip = recs.iter().find_map(|r| r.clip_threshold);
    let grad_spikes: Vec<(f64, f64)> = recs
        .iter()
        .flat_map(|r| r.spikes.iter())
        .filter(|s| s.metric == SpikeMetric::GradNorm && s.value.is_finite())
        .map(|s| (s.step as f64, s.value))
        .collect();
    line_panel(
        &panels[2],
        &Panel {
            title: &marked("global grad norm (before clipping)"),
            x_desc: "step",
            y_desc: "‖g‖",
            series: vec![Series {
                name: "grad norm".into(),
                points: recs.iter().map(|r| (step(r), r.grad_norm)).collect(),
                color: palette(1),
            }],
            hline: clip.map(|c| (c, format!("clip {c}"))),
            markers: grad_spikes,
            vlines: refused.clone(),
            legend: clip.is_some(),
        },
    )?;

    let mut layers: Vec<String> = Vec::new();
    for r in recs {
        for l in &r.layers {
            if !layers.contains(&l.layer) {
                layers.push(l.layer.clone());
            }
        }
    }
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
        &panels[3],
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
    )?;

    let mut kinds: Vec<String> = Vec::new();
    for r in recs {
        if let Some(m) = &r.memory {
            for k in m.state_by_kind.keys() {
                if !kinds.contains(k) {
                    kinds.push(k.clone());
                }
            }
        }
    }
    let mem_steps: Vec<(f64, &crate::record::MemoryRecord)> = recs
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
    stacked_panel(&panels[4], "optimizer state memory by kind", &bands)?;

    line_panel(
        &panels[5],
        &Panel {
            title: "step time",
            x_desc: "step",
            y_desc: "ms",
            series: vec![Series {
                name: "step time".into(),
                points: recs
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
    )?;
    Ok(())
}

/// The six-panel dashboard of one run (refused steps marked on the loss and gradient-norm
/// panels, counted in the title).
pub fn dashboard(run: &Run, path: impl AsRef<Path>, size: (u32, u32)) -> Result<(), MonitorError> {
    render!(path.as_ref(), size, |root| draw_dashboard(&root, run))
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
    let mut layers: Vec<String> = Vec::new();
    for r in &observed {
        for l in &r.layers {
            if !layers.contains(&l.layer) {
                layers.push(l.layer.clone());
            }
        }
    }
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

fn draw_overlay<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    runs: &[Run],
    floor: Option<f64>,
) -> Result<(), String> {
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (left, right) = root.split_horizontally(root.dim_in_pixel().0 / 2);
    // Validation loss when the runs have it (smooth, comparable), else the training loss.
    let use_val = runs
        .iter()
        .any(|r| r.records.iter().any(|x| x.val_loss.is_some()));
    let pick = |r: &StepRecord| if use_val { r.val_loss } else { r.loss };
    let what = if use_val { "validation loss" } else { "loss" };
    for (area, by_time) in [(left, false), (right, true)] {
        let series = runs
            .iter()
            .enumerate()
            .map(|(i, run)| Series {
                name: run.name.clone(),
                points: run
                    .records
                    .iter()
                    .filter_map(|r| {
                        let x = if by_time { r.wall_s } else { r.step as f64 };
                        finite(pick(r)).map(|l| (x, l))
                    })
                    .collect(),
                color: palette(i),
            })
            .collect();
        line_panel(
            &area,
            &Panel {
                title: &format!("{what} vs {}", if by_time { "wall time" } else { "step" }),
                x_desc: if by_time { "seconds" } else { "step" },
                y_desc: what,
                series,
                hline: floor.map(|f| (f, format!("floor {f:.4}"))),
                markers: Vec::new(),
                vlines: Vec::new(),
                legend: true,
            },
        )?;
    }
    Ok(())
}

/// Several runs' loss against step (left) and wall time (right); `floor` draws a known lower
/// bound (e.g. the corpus's entropy rate).
pub fn overlay(
    runs: &[Run],
    floor: Option<f64>,
    path: impl AsRef<Path>,
    size: (u32, u32),
) -> Result<(), MonitorError> {
    render!(path.as_ref(), size, |root| draw_overlay(&root, runs, floor))
}

/// One bar of [`bar_chart`].
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    /// Label under the bar.
    pub label: String,
    /// Legend entry (bars with the same one share a colour).
    pub series: String,
    /// Height.
    pub value: f64,
}

fn draw_bars<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    y_desc: &str,
    bars: &[Bar],
    hline: Option<(f64, &str)>,
) -> Result<(), String> {
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let top = bars
        .iter()
        .map(|b| b.value)
        .chain(hline.map(|h| h.0))
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max);
    if bars.is_empty() || top <= 0.0 {
        return no_data(root, title);
    }
    let mut series: Vec<&str> = Vec::new();
    for b in bars {
        if !series.contains(&b.series.as_str()) {
            series.push(&b.series);
        }
    }
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let mut chart = ChartBuilder::on(root)
        .caption(title, (FONT, 18))
        .margin(12)
        .x_label_area_size(60)
        .y_label_area_size(64)
        .build_cartesian_2d(-0.6..bars.len() as f64 - 0.4, 0.0..top * 1.15)
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .y_desc(y_desc)
        .label_style((FONT, 11))
        // The bars' labels are drawn below, one per group.
        .x_labels(0)
        .y_label_formatter(&|v| tick(*v))
        .draw()
        .map_err(err)?;
    for (si, s) in series.iter().enumerate() {
        let color = palette(si);
        chart
            .draw_series(
                bars.iter()
                    .enumerate()
                    .filter(|(_, b)| b.series == *s && b.value.is_finite())
                    .map(|(i, b)| {
                        Rectangle::new(
                            [(i as f64 - 0.38, 0.0), (i as f64 + 0.38, b.value)],
                            color.filled(),
                        )
                    }),
            )
            .map_err(err)?
            .label(s.to_string())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
    }
    chart
        .draw_series(
            bars.iter()
                .enumerate()
                .filter(|(_, b)| b.value.is_finite())
                .map(|(i, b)| {
                    Text::new(
                        tick(b.value),
                        (i as f64, b.value + top * 0.01),
                        (FONT, 11)
                            .into_font()
                            .color(&BLACK)
                            .pos(Pos::new(HPos::Center, VPos::Bottom)),
                    )
                }),
        )
        .map_err(err)?;
    if let Some((y, name)) = hline {
        chart
            .draw_series(DashedLineSeries::new(
                vec![(-0.6, y), (bars.len() as f64 - 0.4, y)],
                6,
                4,
                BLACK.stroke_width(1),
            ))
            .map_err(err)?
            .label(name.to_string())
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLACK));
    }
    let style = (FONT, 11)
        .into_font()
        .color(&BLACK)
        .pos(Pos::new(HPos::Center, VPos::Top));
    for (x, label) in label_groups(bars) {
        let (px, py) = chart.backend_coord(&(x, 0.0));
        root.draw(&Text::new(label, (px, py + 8), style.clone()))
            .map_err(err)?;
    }
    legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    Ok(())
}

/// The x labels of [`bar_chart`]: each run of neighbouring bars with the same label gets it
/// once, centred under the run (so a group of bars reads as one, and long labels of narrow
/// bars do not overlap).
fn label_groups(bars: &[Bar]) -> Vec<(f64, &str)> {
    let mut groups: Vec<(usize, usize, &str)> = Vec::new();
    for (i, b) in bars.iter().enumerate() {
        match groups.last_mut() {
            Some((_, end, label)) if *label == b.label => *end = i,
            _ => groups.push((i, i, &b.label)),
        }
    }
    groups
        .into_iter()
        .map(|(start, end, label)| ((start + end) as f64 / 2.0, label))
        .collect()
}

/// A bar chart (coloured by [`Bar::series`]) with an optional dashed reference line.
pub fn bar_chart(
    title: &str,
    y_desc: &str,
    bars: &[Bar],
    hline: Option<(f64, &str)>,
    path: impl AsRef<Path>,
    size: (u32, u32),
) -> Result<(), MonitorError> {
    render!(path.as_ref(), size, |root| draw_bars(
        &root, title, y_desc, bars, hline
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bar(label: &str) -> Bar {
        Bar {
            label: label.into(),
            series: "s".into(),
            value: 1.0,
        }
    }

    #[test]
    fn bar_labels_are_one_per_run_of_neighbours_centred_under_it() {
        let bars: Vec<Bar> = ["adamw", "adamw", "adamw", "lion", "adamw", "adamw"]
            .into_iter()
            .map(bar)
            .collect();
        assert_eq!(
            label_groups(&bars),
            vec![(1.0, "adamw"), (3.0, "lion"), (4.5, "adamw")]
        );
        assert!(label_groups(&[]).is_empty());
    }
}
