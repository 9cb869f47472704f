//! The monitor against hand-computed values from real optimizer steps.
// Tests may unwrap and panic (the workspace lints deny it in library code).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable
)]

use std::sync::{Arc, Mutex};

use burn::backend::NdArray;
use burn::tensor::{Tensor, TensorData};
use moment_monitor::{
    LayerKey, MemorySink, Monitor, MonitorConfig, ParamStats, SpikeConfig, SpikeDetector, StepInfo,
    StepRecord, aggregate_layers,
};
use moment_optim::{
    AdamWConfig, Chain, MomentOptimizer, NonFinitePolicy, ParamGroup, ParamTensor, Selector,
};

type B = NdArray<f32>;

fn flat(v: &[f32]) -> Tensor<B, 1> {
    Tensor::from_data(TensorData::new(v.to_vec(), [v.len()]), &Default::default())
}

fn values(t: &Tensor<B, 1>) -> Vec<f32> {
    t.to_data().to_vec::<f32>().unwrap()
}

fn param(path: &str, v: &[f32]) -> ParamTensor<B> {
    ParamTensor {
        path: path.into(),
        shape: vec![v.len()],
        value: flat(v),
        grad: None,
    }
}

fn adamw() -> MomentOptimizer<B> {
    MomentOptimizer::new(
        AdamWConfig::default()
            .with_weight_decay(0.0)
            .build::<B>()
            .unwrap(),
    )
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * (1.0 + b.abs())
}

#[test]
fn per_parameter_norms_cosine_and_state_statistics_match_hand_computation() {
    let mut opt = adamw();
    let mon = MonitorConfig::default()
        .with_interval(2)
        .build()
        .unwrap()
        .shared();
    opt.set_observer(mon.clone());
    let mut ps = vec![param("w", &[3.0, 0.0, 0.0, 4.0])];
    let mut reports = Vec::new();
    for _ in 0..4 {
        ps[0].grad = Some(flat(&[1.0, -2.0, 2.0, 4.0]));
        reports.push(opt.step(0.1, &mut ps).unwrap());
        mon.lock().unwrap().finish_step(StepInfo::new()).unwrap();
    }
    let m = mon.lock().unwrap();
    let recs = m.records();
    assert_eq!(
        recs.iter().map(|r| r.step).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    // Interval 2 (and step 1): per-parameter stats on steps 1, 2, 4 only.
    assert_eq!(
        recs.iter().map(|r| r.params.len()).collect::<Vec<_>>(),
        [1, 1, 0, 1]
    );
    // Observed steps still take the fused path (it is AdamW on ndarray).
    assert!(reports.iter().all(|r| r.params_fused == 1), "{reports:?}");
    let p = &recs[0].params[0];
    assert!(close(p.grad_norm, 5.0, 1e-6), "‖g‖ = √(1+4+4+16) = 5");
    assert!(close(recs[0].grad_norm, 5.0, 1e-6));
    // Adam's first step moves every element by −lr·sign(g): ‖Δ‖ = 0.1·√4.
    assert!(close(p.update_norm, 0.2, 1e-5), "{}", p.update_norm);
    // ⟨Δ, g⟩ = −0.1·Σ|g| = −0.9; cos = −0.9 / (0.2·5).
    assert!(
        close(p.update_dot_grad, -0.9, 1e-5),
        "{}",
        p.update_dot_grad
    );
    assert!(
        close(p.cos_update_grad, -0.9, 1e-5),
        "{}",
        p.cos_update_grad
    );
    // θ after: [2.9, 0.1, −0.1, 3.9].
    let w = (2.9f64 * 2.9 + 0.01 + 0.01 + 3.9 * 3.9).sqrt();
    assert!(close(p.weight_norm, w, 1e-6));
    assert!(close(p.update_to_weight, 0.2 / w, 1e-5));
    assert_eq!(p.layer, "w");
    // exp_avg = 0.1·g: ‖m‖ = 0.5, min −0.2, max 0.4, signed so no ‖√m‖.
    let st = |name: &str| p.states.iter().find(|s| s.name == name).unwrap();
    let m1 = st("exp_avg");
    assert!(close(m1.norm, 0.5, 1e-6) && close(m1.min, -0.2, 1e-6) && close(m1.max, 0.4, 1e-6));
    assert_eq!(m1.sqrt_norm, None);
    // exp_avg_sq = 0.001·g² = [0.001, 0.004, 0.004, 0.016].
    let v = st("exp_avg_sq");
    assert!(close(v.min, 0.001, 1e-5) && close(v.max, 0.016, 1e-5));
    assert!(close(v.norm, 2.89e-4f64.sqrt(), 1e-5), "{}", v.norm);
    assert!(close(v.sqrt_norm.unwrap(), 0.025f64.sqrt(), 1e-5));
    // One layer = the one parameter.
    assert_eq!(recs[0].layers.len(), 1);
    assert!(close(recs[0].layers[0].grad_norm, 5.0, 1e-6));
    assert!(recs[2].layers.is_empty());
    assert_eq!(recs[0].policy, "Error");
    assert_eq!(recs[0].group_lrs.get("default").copied(), Some(0.1));
}

#[test]
fn observing_does_not_change_the_trajectory() {
    let run = |observe: bool| {
        let mut opt = adamw();
        if observe {
            opt.set_observer(MonitorConfig::default().build().unwrap().shared());
        }
        let mut ps = vec![param("a", &[0.5, -1.5, 2.0]), param("b", &[1.0; 5])];
        for k in 0..5 {
            let s = k as f32;
            ps[0].grad = Some(flat(&[0.3 - s, 1.1, -0.7 * s]));
            ps[1].grad = Some(flat(&[s, -s, 0.5, 2.0 * s, -1.0]));
            opt.step(0.01, &mut ps).unwrap();
        }
        ps.iter().map(|p| values(&p.value)).collect::<Vec<_>>()
    };
    assert_eq!(run(false), run(true));
}

#[test]
fn layers_aggregate_by_path_and_the_filter_limits_what_is_observed() {
    let mut opt = adamw();
    let mon = MonitorConfig::default()
        .with_filter(Selector::glob("model.*"))
        .build()
        .unwrap()
        .shared();
    opt.set_observer(mon.clone());
    let grads: [(&str, Vec<f32>); 4] = [
        ("model.blocks.0.attn.weight", vec![1.0, 2.0]),
        ("model.blocks.0.mlp.weight", vec![2.0, 0.0, -4.0]),
        ("model.blocks.1.attn.weight", vec![3.0]),
        ("lm_head.weight", vec![7.0, 7.0]),
    ];
    let mut ps: Vec<_> = grads
        .iter()
        .map(|(p, g)| param(p, &vec![1.0; g.len()]))
        .collect();
    for (p, (_, g)) in ps.iter_mut().zip(&grads) {
        p.grad = Some(flat(g));
    }
    let report = opt.step(0.1, &mut ps).unwrap();
    assert_eq!(report.params_fused, 4);
    let m = mon.lock().unwrap();
    let r = m.latest().unwrap();
    let paths: Vec<&str> = r.params.iter().map(|p| p.path.as_str()).collect();
    assert!(!paths.contains(&"lm_head.weight"), "{paths:?}");
    assert_eq!(paths.len(), 3);
    let names: Vec<&str> = r.layers.iter().map(|l| l.layer.as_str()).collect();
    assert_eq!(names, ["model.blocks.0", "model.blocks.1"]);
    let b0 = &r.layers[0];
    assert_eq!((b0.params, b0.numel), (2, 5));
    // √(1 + 4 + 4 + 0 + 16) = 5.
    assert!(close(b0.grad_norm, 5.0, 1e-6), "{}", b0.grad_norm);
    // Every element moves by −0.1·sign(g) (0 where g = 0): ‖Δ‖ = 0.1·√4, ⟨Δ,g⟩ = −0.1·9.
    assert!(close(b0.update_norm, 0.2, 1e-5));
    assert!(close(b0.cos_update_grad, -0.9 / (0.2 * 5.0), 1e-5));
    // The global norm still covers every gradient: √(25 + 9 + 98).
    assert!(close(r.grad_norm, 132f64.sqrt(), 1e-6));
}

#[test]
fn layer_keys() {
    let block = LayerKey::Block;
    assert_eq!(
        block.layer_of("model.blocks.3.attn.q.weight"),
        "model.blocks.3"
    );
    assert_eq!(block.layer_of("lm_head.weight"), "lm_head");
    assert_eq!(block.layer_of("model.embed.weight"), "model.embed");
    assert_eq!(block.layer_of("w"), "w");
    assert_eq!(LayerKey::Depth(2).layer_of("a.b.c.d"), "a.b");
    assert_eq!(LayerKey::Depth(9).layer_of("a.b"), "a.b");
    assert_eq!(LayerKey::Param.layer_of("a.b.c"), "a.b.c");
    assert!(
        MonitorConfig::default()
            .with_layers(LayerKey::Depth(0))
            .build()
            .is_err()
    );
    assert!(MonitorConfig::default().with_interval(0).build().is_err());
}

#[test]
fn aggregate_layers_combines_norms_as_root_sum_of_squares() {
    let p = |layer: &str, g: f64, w: f64, u: f64, dot: f64| ParamStats {
        path: format!("{layer}.x"),
        group: "g".into(),
        layer: layer.into(),
        numel: 10,
        grad_norm: g,
        weight_norm: w,
        update_norm: u,
        update_to_weight: u / w,
        update_dot_grad: dot,
        cos_update_grad: dot / (u * g),
        states: vec![],
    };
    let layers = aggregate_layers(&[
        p("a", 3.0, 6.0, 0.3, -0.5),
        p("b", 1.0, 1.0, 1.0, 1.0),
        p("a", 4.0, 8.0, 0.4, -0.7),
    ]);
    assert_eq!(layers.len(), 2);
    let a = &layers[0];
    assert_eq!((a.layer.as_str(), a.params, a.numel), ("a", 2, 20));
    assert!(close(a.grad_norm, 5.0, 1e-12) && close(a.weight_norm, 10.0, 1e-12));
    assert!(close(a.update_norm, 0.5, 1e-12) && close(a.update_to_weight, 0.05, 1e-12));
    assert!(close(a.cos_update_grad, -1.2 / (0.5 * 5.0), 1e-12));
}

#[test]
fn clipping_non_finite_policy_memory_and_time_are_recorded() {
    let sgd = Chain::<B>::new("sgd").then(moment_optim::transforms::scale_by_learning_rate());
    let mut opt = MomentOptimizer::builder()
        .group(ParamGroup::new("all", Selector::all(), sgd))
        .clip_grad_norm(1.0)
        .non_finite(NonFinitePolicy::ZeroGradient)
        .build()
        .unwrap();
    let mut mon = MonitorConfig::default().build().unwrap();
    let sink = MemorySink::new();
    mon.add_sink(sink.clone());
    let mon = mon.shared();
    opt.set_observer(mon.clone());
    let mut ps = vec![param("w", &[0.0, 0.0])];
    let grads: [[f32; 2]; 4] = [[3.0, 4.0], [0.3, 0.4], [f32::NAN, 0.5], [0.3, 0.4]];
    for (i, g) in grads.iter().enumerate() {
        ps[0].grad = Some(flat(g));
        opt.step(1.0, &mut ps).unwrap();
        if i < 3 {
            mon.lock()
                .unwrap()
                .finish_step(
                    StepInfo::new()
                        .loss(2.0 - i as f64 * 0.1)
                        .tokens(100)
                        .step_time(std::time::Duration::from_millis(50))
                        .memory(opt.state_memory()),
                )
                .unwrap();
        }
    }
    // The fourth step is finished by flush, with what the monitor measured itself.
    mon.lock().unwrap().flush().unwrap();
    let recs = sink.records();
    assert_eq!(recs.len(), 4);
    assert_eq!(
        recs.iter().map(|r| r.clipped).collect::<Vec<_>>(),
        [true, false, false, false]
    );
    let rates: Vec<f64> = recs.iter().map(|r| r.clip_rate).collect();
    assert_eq!(rates, [1.0, 0.5, 1.0 / 3.0, 0.25]);
    assert_eq!(recs[0].clip_threshold, Some(1.0));
    assert_eq!(
        (recs[2].non_finite, recs[2].policy.as_str()),
        (1, "ZeroGradient")
    );
    assert_eq!(recs[2].non_finite_paths, ["w"]);
    assert!(close(recs[2].grad_norm, 0.5, 1e-6));
    assert_eq!(recs[1].loss, Some(1.9));
    assert_eq!(recs[0].step_time_s, Some(0.05));
    assert!(close(recs[0].tokens_per_s.unwrap(), 2000.0, 1e-9));
    let mem = recs[0].memory.as_ref().unwrap();
    assert_eq!(mem.param_elements, 2);
    assert_eq!((mem.param_bytes, mem.grad_bytes), (8, 8));
    assert_eq!(mem.state_bytes, opt.state_memory().total_bytes);
    if cfg!(target_os = "linux") {
        assert!(mem.peak_rss_bytes.unwrap() > 1 << 20);
    }
    assert_eq!((recs[3].loss, recs[3].memory.as_ref()), (None, None));
    assert!(recs[3].step_time_s.unwrap() >= 0.0);
    assert!(recs.windows(2).all(|w| w[0].wall_s <= w[1].wall_s));
}

#[test]
fn spike_detector_flags_jumps_and_non_finite_values_only() {
    let mut d = SpikeDetector::new(SpikeConfig {
        window: 20,
        min_history: 5,
        threshold: 6.0,
        min_rel_scale: 0.0,
    })
    .unwrap();
    // A noisy slow decline: 3.0, 2.99, … with ±0.02 alternation; a jump at index 30.
    let mut flagged = Vec::new();
    for i in 0..60 {
        let base = 3.0 - 0.01 * i as f64 + if i % 2 == 0 { 0.02 } else { -0.02 };
        let x = match i {
            30 => base + 1.0,
            45 => f64::NAN,
            _ => base,
        };
        if let Some(c) = d.push(x) {
            flagged.push((i, c));
        }
    }
    let at: Vec<usize> = flagged.iter().map(|f| f.0).collect();
    assert_eq!(at, [30, 45]);
    let (_, jump) = flagged[0];
    // Median of the 20 values before: their middle; the MAD of the ±0.02 zig-zag on a 0.01/step
    // slope is ≈ 0.05, so z ≈ 1.1 / (1.4826·0.05) ≈ 15 — well above 6.
    assert!(jump.z > 6.0 && jump.z < 40.0, "{}", jump.z);
    assert!(flagged[1].1.z.is_nan());
    // Downward jumps are not spikes.
    let mut d = SpikeDetector::new(SpikeConfig::default()).unwrap();
    for i in 0..30 {
        assert!(
            d.push(if i == 20 {
                0.0
            } else {
                1.0 + 0.001 * (i % 3) as f64
            })
            .is_none()
        );
    }
    // Nothing is flagged before min_history values.
    let mut d = SpikeDetector::new(SpikeConfig::default()).unwrap();
    for x in [1.0, 100.0, f64::NAN, 1e9] {
        assert!(d.push(x).is_none());
    }
    assert!(
        SpikeDetector::new(SpikeConfig {
            min_history: 0,
            ..SpikeConfig::default()
        })
        .is_err()
    );
}

#[test]
fn spikes_are_attached_to_records() {
    let mut mon = Monitor::new(MonitorConfig::default().with_spikes(
        Some(SpikeConfig {
            window: 10,
            min_history: 5,
            threshold: 5.0,
            min_rel_scale: 0.01,
        }),
        None,
    ))
    .unwrap();
    let mut opt = adamw();
    let sink = MemorySink::new();
    mon.add_sink(sink.clone());
    let mon = mon.shared();
    opt.set_observer(mon.clone());
    let mut ps = vec![param("w", &[1.0])];
    for i in 0..12 {
        ps[0].grad = Some(flat(&[0.1]));
        opt.step(0.01, &mut ps).unwrap();
        let loss = if i == 8 { 10.0 } else { 2.0 + 0.001 * i as f64 };
        mon.lock()
            .unwrap()
            .finish_step(StepInfo::new().loss(loss))
            .unwrap();
    }
    let recs: Vec<StepRecord> = sink.records();
    let with: Vec<u64> = recs
        .iter()
        .filter(|r| !r.spikes.is_empty())
        .map(|r| r.step)
        .collect();
    assert_eq!(with, [9]);
    assert_eq!(mon.lock().unwrap().spikes().len(), 1);
    assert_eq!(recs[8].spikes[0].value, 10.0);
}

#[test]
fn a_sink_that_cannot_be_created_is_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("moment-mon-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("a-file");
    std::fs::write(&file, "x").unwrap();
    let err = moment_monitor::JsonlSink::create(file.join("metrics.jsonl")).unwrap_err();
    assert!(err.to_string().contains("a-file"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[allow(dead_code)]
fn shared_is_an_observer(m: Arc<Mutex<Monitor>>) -> Arc<Mutex<dyn moment_optim::Observer<B>>> {
    m
}
