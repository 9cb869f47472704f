//! Plots of monitored runs with `plotters`: PNG (text drawn from the DejaVu Sans font embedded
//! by the `dejavu` crate, so no system fonts are needed) or SVG, chosen by the file extension.
//!
//! * [`dashboard`]: loss with spikes marked, learning rate per group, global gradient norm
//!   with the clipping threshold, update/weight ratio per layer, optimizer-state memory by kind
//!   (stacked), step time; refused optimizer steps as vertical lines ([`REFUSED`]) on the loss
//!   and gradient-norm panels.
//! * [`layer_heatmap`]: a per-layer quantity over the observed steps.
//! * [`overlay`]: several runs' loss against step and against wall time, with an optional floor.
//! * [`bar_chart`]: bars coloured by series, with an optional dashed reference line.
//!
//! This module holds what the charts share (the embedded font, file rendering, palette,
//! bounds, tick text, legend, the line panel); each chart has its own module. The data they
//! draw, [`Run`], lives in `crate::run`.

use std::sync::OnceLock;

use plotters::coord::{CoordTranslate, Shift};
use plotters::prelude::*;

pub use crate::run::Run;

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

/// Draw on a PNG or SVG file chosen by `path`'s extension (defined before the chart modules,
/// which use it; paths are absolute so it expands anywhere).
macro_rules! render {
    ($path:expr, $size:expr, |$root:ident| $body:expr) => {{
        let path: &::std::path::Path = $path;
        let size: (u32, u32) = $size;
        let fail = |reason: String| $crate::error::MonitorError::Plot {
            path: path.to_path_buf(),
            reason,
        };
        if size.0 < 64 || size.1 < 64 {
            return Err(fail(format!("size {}×{} is below 64×64", size.0, size.1)));
        }
        $crate::plot::fonts().map_err(fail)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            ::std::fs::create_dir_all(dir).map_err(|e| $crate::error::MonitorError::io(dir, e))?;
        }
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("png") => {
                let $root = ::plotters::prelude::BitMapBackend::new(path, size).into_drawing_area();
                $body.map_err(fail)?;
                $root.present().map_err(|e| fail(e.to_string()))?;
            }
            Some("svg") => {
                let $root = ::plotters::prelude::SVGBackend::new(path, size).into_drawing_area();
                $body.map_err(fail)?;
                $root.present().map_err(|e| fail(e.to_string()))?;
            }
            _ => return Err(fail("the file name must end in .png or .svg".into())),
        }
        Ok(())
    }};
}

mod bars;
mod dashboard;
mod heatmap;
mod overlay;

pub use bars::{Bar, bar_chart};
pub use dashboard::dashboard;
pub use heatmap::{LayerMetric, layer_heatmap};
pub use overlay::overlay;

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

fn finite(v: Option<f64>) -> Option<f64> {
    v.filter(|x| x.is_finite())
}

/// The distinct names in first-seen order (series of a panel: groups, layers, state kinds).
fn distinct<'a>(names: impl IntoIterator<Item = &'a String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for n in names {
        if !out.contains(n) {
            out.push(n.clone());
        }
    }
    out
}
