//! Sinks, plots, reports and the burn-train adapter, on records from a real optimizer run.
// Tests may unwrap and panic (the workspace lints deny it in library code).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable
)]

use std::path::PathBuf;

use burn::backend::NdArray;
use burn::tensor::{Tensor, TensorData};
use moment_monitor::tensorboard::{self, crc32c, encode_event, frame, read_event_file};
use moment_monitor::{
    CSV_COLUMNS, CsvSink, JsonlSink, LayerMetric, MemorySink, Monitor, MonitorConfig, Run, Sink,
    StepInfo, StepRecord, Summary, TensorBoardSink, plot, read_csv, read_jsonl, replot, report,
};
use moment_optim::{AdamWConfig, MomentOptimizer, ParamTensor};

type B = NdArray<f32>;

fn flat(v: &[f32]) -> Tensor<B, 1> {
    Tensor::from_data(TensorData::new(v.to_vec(), [v.len()]), &Default::default())
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("moment-out-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// 30 AdamW steps over three tensors in two layers, observed every 3rd step, loss with a spike
/// at step 20 and the optimizer's accounting; `extra` sinks receive the records.
fn run(extra: Vec<Box<dyn Sink>>) -> Vec<StepRecord> {
    let mut opt = MomentOptimizer::<B>::new(AdamWConfig::default().build::<B>().unwrap());
    let mut mon = Monitor::new(MonitorConfig::default().with_interval(3)).unwrap();
    let mem = MemorySink::new();
    mon.add_sink(mem.clone());
    for s in extra {
        mon.add_sink(BoxedSink(s));
    }
    let mon = mon.shared();
    opt.set_observer(mon.clone());
    let mut ps: Vec<ParamTensor<B>> = [
        ("model.blocks.0.w", 6),
        ("model.blocks.0.b", 2),
        ("model.blocks.1.w", 4),
    ]
    .iter()
    .map(|&(p, n)| ParamTensor {
        path: p.into(),
        shape: vec![n],
        value: flat(&vec![0.5; n]),
        grad: None,
    })
    .collect();
    for step in 0..30 {
        for (i, p) in ps.iter_mut().enumerate() {
            let n = p.shape[0];
            let g: Vec<f32> = (0..n)
                .map(|j| ((step * 7 + i * 3 + j) % 5) as f32 - 2.0 + 0.1)
                .collect();
            p.grad = Some(flat(&g));
        }
        opt.step(1e-2, &mut ps).unwrap();
        let loss = if step == 19 {
            9.0
        } else {
            3.0 - 0.05 * step as f64 + 0.01 * (step % 2) as f64
        };
        mon.lock()
            .unwrap()
            .finish_step(
                StepInfo::new()
                    .loss(loss)
                    .tokens(256)
                    .memory(opt.state_memory()),
            )
            .unwrap();
    }
    mon.lock().unwrap().flush().unwrap();
    mem.records()
}

struct BoxedSink(Box<dyn Sink>);

impl Sink for BoxedSink {
    fn write(&mut self, r: &StepRecord) -> Result<(), moment_monitor::MonitorError> {
        self.0.write(r)
    }
    fn flush(&mut self) -> Result<(), moment_monitor::MonitorError> {
        self.0.flush()
    }
}

#[test]
fn jsonl_and_csv_round_trip() {
    let dir = tmp("rt");
    let jsonl = dir.join("m.jsonl");
    let csv = dir.join("m.csv");
    let recs = run(vec![
        Box::new(JsonlSink::create(&jsonl).unwrap()),
        Box::new(CsvSink::create(&csv).unwrap()),
    ]);
    assert_eq!(recs.len(), 30);
    assert!(recs[0].params.len() == 3 && recs[0].layers.len() == 2);
    assert!(recs[0].params[0].states.len() >= 2);
    // Spike at step 20 (index 19).
    assert_eq!(recs[19].spikes.len(), 1, "{:?}", recs[19].spikes);
    let back = read_jsonl(&jsonl).unwrap();
    assert_eq!(back.len(), recs.len());
    for (b, r) in back.iter().zip(&recs) {
        assert!(
            b == r,
            "step {} differs after the round trip:\n{b:?}\n{r:?}",
            r.step
        );
    }

    let rows = read_csv(&csv).unwrap();
    assert_eq!(rows.len(), 30);
    for (row, r) in rows.iter().zip(&recs) {
        let get = |k: &str| row.iter().find(|(c, _)| c == k).unwrap().1;
        assert_eq!(get("step"), Some(r.step as f64));
        assert_eq!(get("loss"), r.loss);
        assert_eq!(get("lr"), Some(r.lr));
        assert_eq!(get("grad_norm"), Some(r.grad_norm));
        assert_eq!(get("clip_threshold"), None);
        assert_eq!(get("update_to_weight"), r.update_to_weight());
        assert_eq!(
            get("state_bytes"),
            r.memory.as_ref().map(|m| m.state_bytes as f64)
        );
        assert_eq!(get("spikes"), Some(r.spikes.len() as f64));
        assert_eq!(row.len(), CSV_COLUMNS.len());
    }
    // Every third step observed ⇒ update/weight present exactly there.
    assert!(rows.iter().zip(&recs).all(|(row, r)| {
        let u = row.iter().find(|(c, _)| c == "update_to_weight").unwrap().1;
        u.is_some() == (r.step == 1 || r.step % 3 == 0)
    }));

    // A non-finite value is written as null and read back as NaN; a broken line is an error
    // naming the line.
    let mut bad = recs[0].clone();
    bad.grad_norm = f64::NAN;
    let p = dir.join("nan.jsonl");
    let mut s = JsonlSink::create(&p).unwrap();
    s.write(&bad).unwrap();
    s.flush().unwrap();
    drop(s);
    assert!(
        std::fs::read_to_string(&p)
            .unwrap()
            .contains("\"grad_norm\":null")
    );
    assert!(read_jsonl(&p).unwrap()[0].grad_norm.is_nan());
    std::fs::write(&p, "{\"step\":1}\n").unwrap();
    let e = read_jsonl(&p).unwrap_err().to_string();
    assert!(e.contains(":1:"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tensorboard_crc_encoding_and_file_read_back() {
    // CRC-32C check value of "123456789".
    assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    // Event{wall_time: 1.5, step: 3, summary{value{tag: "a", simple_value: 2.0}}}, encoded by
    // hand from tensorflow/core/util/event.proto and summary.proto.
    let mut want = vec![0x09];
    want.extend_from_slice(&1.5f64.to_le_bytes());
    // Value = tag (3 bytes) + simple_value (5 bytes) = 8; Summary = 0x0a 0x08 + 8 = 10.
    want.extend_from_slice(&[0x10, 0x03, 0x2a, 0x0a, 0x0a, 0x08, 0x0a, 0x01, b'a', 0x15]);
    want.extend_from_slice(&2.0f32.to_le_bytes());
    assert_eq!(encode_event(1.5, 3, Some(&[("a".into(), 2.0)])), want);
    let framed = frame(b"xyz");
    assert_eq!(&framed[..8], &3u64.to_le_bytes());
    assert_eq!(framed.len(), 8 + 4 + 3 + 4);

    let dir = tmp("tb");
    let tb = TensorBoardSink::create(&dir).unwrap();
    let path = tb.path().to_path_buf();
    assert!(
        path.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("events.out.tfevents.")
    );
    let recs = run(vec![Box::new(tb)]);
    let ev = read_event_file(&path).unwrap();
    assert_eq!(ev.file_version.as_deref(), Some("brain.Event:2"));
    let loss: Vec<(i64, f32)> = ev
        .scalars
        .iter()
        .filter(|s| s.tag == "train/loss")
        .map(|s| (s.step, s.value))
        .collect();
    let want: Vec<(i64, f32)> = recs
        .iter()
        .map(|r| (r.step as i64, r.loss.unwrap() as f32))
        .collect();
    assert_eq!(loss, want);
    let layer = ev
        .scalars
        .iter()
        .find(|s| s.tag == "layer/model.blocks.1/update_to_weight" && s.step == 3)
        .unwrap();
    let l = recs[2]
        .layers
        .iter()
        .find(|l| l.layer == "model.blocks.1")
        .unwrap();
    assert_eq!(layer.value, l.update_to_weight as f32);
    assert_eq!(
        tensorboard::record_scalars(&recs[1]).len() + 1 + 2 * 2,
        tensorboard::record_scalars(&recs[2]).len(),
        "observed steps add the overall update/weight and two scalars per layer"
    );

    // Corruption is detected.
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 6] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    assert!(
        read_event_file(&path)
            .unwrap_err()
            .to_string()
            .contains("CRC")
    );
    std::fs::write(&path, &bytes[..n - 3]).unwrap();
    assert!(read_event_file(&path).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Fraction of pixels that differ from the top-left (background) pixel.
fn png_check(path: &std::path::Path, size: (u32, u32)) -> f64 {
    let img = image::open(path).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), size);
    let bg = *img.get_pixel(0, 0);
    let differ = img.pixels().filter(|p| **p != bg).count();
    differ as f64 / (size.0 * size.1) as f64
}

#[test]
fn plots_are_valid_images_of_the_requested_size_and_not_blank() {
    let dir = tmp("plots");
    let recs = run(vec![]);
    let a = Run::new("adamw", recs.clone());
    let mut shifted = recs.clone();
    for r in &mut shifted {
        r.loss = r.loss.map(|l| l + 0.3);
        r.wall_s *= 2.0;
    }
    let b = Run::new("other", shifted);

    let dash = dir.join("dash.png");
    plot::dashboard(&a, &dash, (1200, 900)).unwrap();
    let ink = png_check(&dash, (1200, 900));
    assert!(ink > 0.02, "dashboard ink {ink}");
    // Red spike markers are drawn on the loss panel.
    let img = image::open(&dash).unwrap().to_rgb8();
    assert!(img.pixels().any(|p| p.0 == [255, 0, 0]));

    let heat = dir.join("heat.png");
    plot::layer_heatmap(&a, LayerMetric::UpdateToWeight, &heat, (800, 400)).unwrap();
    assert!(png_check(&heat, (800, 400)) > 0.2);

    let over = dir.join("overlay.png");
    plot::overlay(&[a.clone(), b], Some(1.5), &over, (1000, 500)).unwrap();
    assert!(png_check(&over, (1000, 500)) > 0.02);

    let svg = dir.join("dash.svg");
    plot::dashboard(&a, &svg, (1000, 700)).unwrap();
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(
        text.contains("<svg") && text.contains("width=\"1000\"") && text.contains("height=\"700\"")
    );
    assert!(text.contains("<polyline") || text.contains("<path"));
    assert!(text.contains("learning rate"));

    // A run with no data draws "no data" panels rather than failing.
    plot::dashboard(
        &Run::new("empty", vec![]),
        dir.join("empty.png"),
        (600, 400),
    )
    .unwrap();
    // Unsupported extension and tiny sizes are errors.
    assert!(plot::dashboard(&a, dir.join("x.jpg"), (600, 400)).is_err());
    assert!(plot::dashboard(&a, dir.join("x.png"), (10, 10)).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn reports_summarize_the_run() {
    let recs = run(vec![]);
    let s = Summary::from_run(&Run::new("adamw", recs.clone()), Some(1.0));
    let losses: Vec<f64> = recs.iter().map(|r| r.loss.unwrap()).collect();
    let last10 = losses[20..].iter().sum::<f64>() / 10.0;
    assert!((s.final_loss.unwrap() - last10).abs() < 1e-12);
    assert!((s.gap_to_floor.unwrap() - (last10 - 1.0)).abs() < 1e-12);
    // Best 10-step average: the last window (the loss falls and the spike is at step 20).
    assert!((s.best_loss.unwrap() - last10).abs() < 1e-12);
    assert_eq!(s.steps, 30);
    assert_eq!((s.loss_spikes, s.clip_rate), (1, 0.0));
    // AdamW on 12 elements: exp_avg + exp_avg_sq = 8 B/element plus step counters.
    let sb = s.state_bytes.unwrap();
    assert!(sb >= 96 && s.state_bytes_per_param.unwrap() >= 8.0);
    assert_eq!(s.state_by_kind.values().sum::<u64>(), sb);
    let md = report::markdown(
        "T",
        std::slice::from_ref(&s),
        &[("Dash".into(), "d.png".into())],
    );
    assert!(md.contains("| adamw | 30 | "), "{md}");
    assert!(md.contains(&format!("{last10:.4}")));
    assert!(md.contains("![Dash](d.png)"));
    assert!(md.contains("| adamw | exp_avg_sq |"));
    let t = report::text(&[s]);
    assert_eq!(t.lines().count(), 2);
    assert!(t.lines().nth(1).unwrap().starts_with("adamw"));
}

#[test]
fn replot_redraws_a_saved_run() {
    let dir = tmp("replot");
    let run_dir = dir.join("adamw");
    let recs = run(vec![Box::new(
        JsonlSink::create(run_dir.join(moment_monitor::files::METRICS_JSONL)).unwrap(),
    )]);
    let files = replot(&run_dir, Some(1.0)).unwrap();
    for f in &files {
        assert!(std::fs::metadata(f).unwrap().len() > 100, "{}", f.display());
    }
    let summary: Summary = serde_json::from_str(
        &std::fs::read_to_string(run_dir.join(moment_monitor::files::SUMMARY_JSON)).unwrap(),
    )
    .unwrap();
    assert_eq!(
        summary,
        Summary::from_run(&Run::new("adamw", recs), Some(1.0))
    );
    assert!(replot(dir.join("missing"), None).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

#[cfg(feature = "burn-train")]
#[test]
fn burn_train_metric_reads_the_monitor() {
    use burn::data::dataloader::Progress;
    use burn_train::metric::{Metric, MetricMetadata, Numeric};
    use moment_monitor::{MonitorMetric, MonitorQuantity};

    let mut opt = MomentOptimizer::<B>::new(AdamWConfig::default().build::<B>().unwrap());
    let mon = MonitorConfig::default().build().unwrap().shared();
    opt.set_observer(mon.clone());
    let mut metric = MonitorMetric::new(mon.clone(), MonitorQuantity::GradNorm);
    let mut ratio = MonitorMetric::new(mon.clone(), MonitorQuantity::UpdateToWeight);
    let meta = MetricMetadata {
        progress: Progress {
            items_processed: 1,
            items_total: 1,
        },
        global_progress: Progress {
            items_processed: 0,
            items_total: 1,
        },
        iteration: Some(1),
        lr: Some(0.1),
    };
    let mut ps = vec![ParamTensor {
        path: "w".into(),
        shape: vec![2],
        value: flat(&[1.0, 1.0]),
        grad: Some(flat(&[3.0, 4.0])),
    }];
    opt.step(0.1, &mut ps).unwrap();
    let e = metric.update(&(), &meta);
    assert!(e.formatted.contains("5.0000"), "{}", e.formatted);
    assert!((metric.value().current() - 5.0).abs() < 1e-6);
    ratio.update(&(), &meta);
    let want = mon
        .lock()
        .unwrap()
        .latest()
        .unwrap()
        .update_to_weight()
        .unwrap();
    assert!((ratio.value().current() - want).abs() < 1e-12 && want > 0.0);
    assert_eq!(metric.name().as_str(), "Grad Norm");
    // burn-train writes `<dir>/train/epoch-N/<name>.log`: a separator in a name aborts training.
    for q in [
        MonitorQuantity::GradNorm,
        MonitorQuantity::UpdateToWeight,
        MonitorQuantity::ClipRate,
        MonitorQuantity::StateMemory,
        MonitorQuantity::NonFinite,
        MonitorQuantity::Spikes,
        MonitorQuantity::RefusedSteps,
    ] {
        let name = MonitorMetric::new(mon.clone(), q).name();
        assert!(!name.contains(['/', '\\']) && !name.is_empty(), "{name}");
    }
}

/// AdamW under the default non-finite policy (`Error`), the loop finishing every step with a
/// loss (refused ones too): a step that runs, a NaN gradient (refused), a gradient of the
/// wrong length (refused), two steps that run.
fn refused_run(extra: Vec<Box<dyn Sink>>) -> (Vec<StepRecord>, u64) {
    let mut opt = MomentOptimizer::<B>::new(AdamWConfig::default().build::<B>().unwrap());
    let mut mon = Monitor::new(MonitorConfig::default()).unwrap();
    let mem = MemorySink::new();
    mon.add_sink(mem.clone());
    for s in extra {
        mon.add_sink(BoxedSink(s));
    }
    let mon = mon.shared();
    opt.set_observer(mon.clone());
    let mut ps = vec![ParamTensor {
        path: "w".into(),
        shape: vec![2],
        value: flat(&[1.0, 1.0]),
        grad: None,
    }];
    let grads: [&[f32]; 5] = [
        &[0.3, 0.4],
        &[f32::NAN, 0.4],
        &[0.3],
        &[0.3, 0.4],
        &[0.1, 0.2],
    ];
    for (i, g) in grads.iter().enumerate() {
        ps[0].grad = Some(flat(g));
        let before = values(&ps[0].value);
        let refused = opt.step(1e-2, &mut ps).is_err();
        assert_eq!(refused, i == 1 || i == 2);
        if refused {
            assert_eq!(values(&ps[0].value), before);
        }
        mon.lock()
            .unwrap()
            .finish_step(StepInfo::new().loss(3.0 - 0.1 * i as f64))
            .unwrap();
    }
    mon.lock().unwrap().flush().unwrap();
    let n = mon.lock().unwrap().refused_steps();
    (mem.records(), n)
}

fn values(t: &Tensor<B, 1>) -> Vec<f32> {
    t.to_data().to_vec::<f32>().unwrap()
}

/// Refused steps are records (step counter unchanged, kind, path, reason, the loop's loss),
/// survive the JSONL and CSV round trips, count in the summary and the reports, and show in
/// TensorBoard's scalars; files written before refusals were recorded still read.
#[test]
fn refused_steps_are_recorded_round_trip_and_are_summarized() {
    let dir = tmp("refused");
    let jsonl = dir.join("m.jsonl");
    let csv = dir.join("m.csv");
    let (recs, n) = refused_run(vec![
        Box::new(JsonlSink::create(&jsonl).unwrap()),
        Box::new(CsvSink::create(&csv).unwrap()),
    ]);
    assert_eq!(n, 2);
    assert_eq!(
        recs.iter().map(|r| r.step).collect::<Vec<_>>(),
        [1, 1, 1, 2, 3],
        "a refused step does not advance the step counter"
    );
    let kinds: Vec<Option<&str>> = recs
        .iter()
        .map(|r| r.refused.as_ref().map(|x| x.kind.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            None,
            Some("NonFiniteGradient"),
            Some("ShapeMismatch"),
            None,
            None
        ]
    );
    let nan = &recs[1];
    let why = nan.refused.as_ref().unwrap();
    assert_eq!(why.path.as_deref(), Some("w"));
    assert!(why.reason.contains("non-finite gradient"), "{}", why.reason);
    assert_eq!(
        (nan.non_finite, nan.non_finite_paths.as_slice()),
        (1, &["w".to_string()][..])
    );
    assert_eq!(
        (nan.policy.as_str(), nan.lr, nan.loss),
        ("Error", 1e-2, Some(2.9))
    );
    assert!(nan.grad_norm.is_nan() && !nan.ran() && nan.params.is_empty());
    assert_eq!(recs[2].refused.as_ref().unwrap().path.as_deref(), Some("w"));
    assert!(recs.iter().all(|r| r.spikes.is_empty()));

    // JSONL: every field back (NaN as null on both sides); records that ran have no
    // `refused` key, so older readers and files are unaffected.
    let back = read_jsonl(&jsonl).unwrap();
    let json = |r: &StepRecord| serde_json::to_value(r).unwrap();
    assert_eq!(
        back.iter().map(json).collect::<Vec<_>>(),
        recs.iter().map(json).collect::<Vec<_>>()
    );
    assert_eq!(back[1].refused, recs[1].refused);
    let lines: Vec<String> = std::fs::read_to_string(&jsonl)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert!(lines[1].contains("\"refused\":{\"kind\":\"NonFiniteGradient\""));
    assert!(!lines[0].contains("refused"));

    // CSV: a `refused` column; a file with the older 16 columns still reads.
    let rows = read_csv(&csv).unwrap();
    let col: Vec<Option<f64>> = rows
        .iter()
        .map(|row| row.iter().find(|(c, _)| c == "refused").unwrap().1)
        .collect();
    assert_eq!(col, [0.0, 1.0, 1.0, 0.0, 0.0].map(Some));
    let text = std::fs::read_to_string(&csv).unwrap();
    let old: String = text
        .lines()
        .map(|l| l.rsplit_once(',').unwrap().0.to_string() + "\n")
        .collect();
    let old_csv = dir.join("old.csv");
    std::fs::write(&old_csv, old).unwrap();
    let old_rows = read_csv(&old_csv).unwrap();
    assert_eq!(old_rows.len(), 5);
    assert_eq!(old_rows[0].len(), CSV_COLUMNS.len() - 1);

    // TensorBoard: `train/refused` is 1 on refused steps.
    let refused_tag = |r: &StepRecord| {
        tensorboard::record_scalars(r)
            .into_iter()
            .find(|(t, _)| t == "train/refused")
            .map(|(_, v)| v)
    };
    assert_eq!(refused_tag(&recs[0]), Some(0.0));
    assert_eq!(refused_tag(&recs[1]), Some(1.0));

    // Summary and reports.
    let s = Summary::from_run(&Run::new("adamw", recs.clone()), None);
    assert_eq!((s.steps, s.refused, s.non_finite), (3, 2, 1));
    assert_eq!(
        s.refusals
            .iter()
            .map(|(k, n)| (k.as_str(), *n))
            .collect::<Vec<_>>(),
        [("NonFiniteGradient", 1), ("ShapeMismatch", 1)]
    );
    let md = report::markdown("T", std::slice::from_ref(&s), &[]);
    assert!(
        md.contains("2 refused steps (NonFiniteGradient: 1, ShapeMismatch: 1)"),
        "{md}"
    );
    let t = report::text(std::slice::from_ref(&s));
    assert!(
        t.lines().next().unwrap().trim_end().ends_with("refused"),
        "{t}"
    );
    assert!(t.lines().nth(1).unwrap().trim_end().ends_with(" 2"), "{t}");
    // A summary.json written before refusals were counted still reads (as none).
    let mut v = serde_json::to_value(&s).unwrap();
    let m = v.as_object_mut().unwrap();
    m.remove("refused");
    m.remove("refusals");
    let old: Summary = serde_json::from_value(v).unwrap();
    assert_eq!((old.refused, old.refusals.len()), (0, 0));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The dashboard marks refused steps (vertical lines in `plot::REFUSED` on the loss and
/// gradient-norm panels); a run without any has no such pixel.
#[test]
fn the_dashboard_marks_refused_steps() {
    let dir = tmp("refused-plot");
    let has = |recs: Vec<StepRecord>, name: &str| {
        let path = dir.join(name);
        plot::dashboard(&Run::new("r", recs), &path, (1200, 900)).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        let c = plot::REFUSED;
        img.pixels().filter(|p| p.0 == [c.0, c.1, c.2]).count()
    };
    let (recs, _) = refused_run(vec![]);
    assert!(has(recs.clone(), "refused.png") > 100);
    assert_eq!(has(run(vec![]), "clean.png"), 0);
    // Every step refused (no loss, no gradient norm): the markers still draw.
    let only: Vec<StepRecord> = recs.into_iter().filter(|r| !r.ran()).collect();
    assert!(has(only, "only.png") > 100);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The burn-train path: the Learner steps a `ModuleOptimizer` through burn's
/// `Optimizer::step`, owns it and never calls `take_error`. A NaN gradient under the default
/// policy is refused; the monitor attached to the engine records it and the metrics show it.
#[cfg(feature = "burn-train")]
#[test]
fn a_refused_step_under_burn_trains_optimizer_trait_reaches_the_monitor_and_its_metrics() {
    use burn::backend::Autodiff;
    use burn::data::dataloader::Progress;
    use burn::module::Module;
    use burn::nn::{Linear, LinearConfig};
    use burn::optim::{GradientsParams, Optimizer};
    use burn::tensor::backend::Backend;
    use burn_train::metric::{Metric, MetricMetadata, Numeric};
    use moment_monitor::{MonitorMetric, MonitorQuantity};

    type AB = Autodiff<B>;

    #[derive(Module, Debug)]
    struct Net<B: Backend> {
        head: Linear<B>,
    }

    let device = Default::default();
    let mut model = Net::<AB> {
        head: LinearConfig::new(3, 2).init(&device),
    };
    let mut engine = MomentOptimizer::new(AdamWConfig::default().build().unwrap());
    let mon = MonitorConfig::default().build().unwrap().shared();
    engine.set_observer(mon.clone());
    let mut optim = engine.for_module::<Net<AB>, AB>();
    let mut grad_norm = MonitorMetric::new(mon.clone(), MonitorQuantity::GradNorm);
    let mut refused = MonitorMetric::new(mon.clone(), MonitorQuantity::RefusedSteps);
    let meta = MetricMetadata {
        progress: Progress {
            items_processed: 1,
            items_total: 1,
        },
        global_progress: Progress {
            items_processed: 0,
            items_total: 1,
        },
        iteration: Some(1),
        lr: Some(0.1),
    };
    let mut formatted = Vec::new();
    for x0 in [0.5, f32::NAN, 0.5] {
        let x = Tensor::<AB, 2>::from_data(TensorData::new(vec![x0, 1.0, 2.0], [1, 3]), &device);
        let loss = model.head.forward(x).sum();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = Optimizer::step(&mut optim, 1e-2, model, grads);
        formatted.push(grad_norm.update(&(), &meta).formatted);
        refused.update(&(), &meta);
        if x0.is_nan() {
            assert_eq!(refused.value().current(), 1.0);
            let m = mon.lock().unwrap();
            let why = m.latest().unwrap().refused.clone().unwrap();
            assert_eq!(why.kind, "NonFiniteGradient");
            assert!(why.path.is_some_and(|p| p.starts_with("head.")));
        }
    }
    assert!(!formatted[0].contains("refused"), "{}", formatted[0]);
    assert!(formatted[1].ends_with("(1 refused)"), "{}", formatted[1]);
    assert!(formatted[2].ends_with("(1 refused)"), "{}", formatted[2]);
    assert_eq!(refused.name().as_str(), "Refused Steps");
    mon.lock().unwrap().flush().unwrap();
    let m = mon.lock().unwrap();
    let recs = m.records();
    assert_eq!(
        recs.iter()
            .map(|r| (r.step, r.refused.is_some()))
            .collect::<Vec<_>>(),
        [(1, false), (1, true), (2, false)]
    );
    assert_eq!(m.refused_steps(), 1);
    assert_eq!(optim.engine().steps(), 2);
}
