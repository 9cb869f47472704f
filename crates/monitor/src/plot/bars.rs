//! [`bar_chart`]: bars coloured by series, labelled once per run of equal labels.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{FONT, legend, no_data, palette, tick};
use crate::error::MonitorError;

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
