//! [`overlay`]: several runs' loss against step and against wall time.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::{Panel, Run, Series, finite, line_panel, palette};
use crate::error::MonitorError;
use crate::record::StepRecord;

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
