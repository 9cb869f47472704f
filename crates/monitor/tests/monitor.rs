//! The monitor against hand-computed values from a real optimizer.

use std::sync::{Arc, Mutex};

use burn::backend::NdArray;
use burn::tensor::{Tensor, TensorData};
use moment_monitor::NormMonitor;
use moment_optim::{AdamWConfig, MomentOptimizer, ParamTensor};

type B = NdArray<f32>;

fn flat(v: &[f32]) -> Tensor<B, 1> {
    Tensor::from_data(TensorData::new(v.to_vec(), [v.len()]), &Default::default())
}

#[test]
fn records_norms_at_the_interval_and_writes_jsonl() {
    let mut opt = MomentOptimizer::new(
        AdamWConfig::default()
            .with_weight_decay(0.0)
            .build::<B>()
            .unwrap(),
    );
    let mon = Arc::new(Mutex::new(NormMonitor::new(2)));
    opt.set_observer(mon.clone());
    let mut ps = vec![ParamTensor {
        path: "w".into(),
        shape: vec![4],
        value: flat(&[3.0, 0.0, 0.0, 4.0]),
        grad: None,
    }];
    for _ in 0..4 {
        ps[0].grad = Some(flat(&[1.0, -2.0, 2.0, 4.0]));
        opt.step(0.1, &mut ps).unwrap();
    }
    let m = mon.lock().unwrap();
    let recs = m.records();
    assert_eq!(
        recs.iter().map(|r| r.step).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    // Interval 2 (and step 1): per-parameter stats on steps 1, 2, 4 only.
    assert_eq!(
        recs.iter().map(|r| r.params.len()).collect::<Vec<_>>(),
        vec![1, 1, 0, 1]
    );
    let p = &recs[0].params[0];
    assert!((p.grad_norm - 5.0).abs() < 1e-6, "‖g‖ = √(1+4+4+16) = 5");
    assert!((recs[0].grad_norm - 5.0).abs() < 1e-6);
    // Adam's first step moves every element by lr: ‖Δ‖ = 0.1·√4.
    assert!((p.update_norm - 0.2).abs() < 1e-6, "{}", p.update_norm);
    // θ after: [2.9, 0.1, -0.1, 3.9].
    let w = (2.9f64 * 2.9 + 0.01 + 0.01 + 3.9 * 3.9).sqrt();
    assert!((p.weight_norm - w).abs() < 1e-5);
    assert!((p.update_to_weight - 0.2 / w).abs() < 1e-6);
    // exp_avg after one step = 0.1·g ⇒ ‖m‖ = 0.5.
    let m_norm = p
        .state_norms
        .iter()
        .find(|(k, _)| k == "exp_avg")
        .unwrap()
        .1;
    assert!((m_norm - 0.5).abs() < 1e-6);

    let mut out = Vec::new();
    m.write_jsonl(&mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert_eq!(text.lines().count(), 4);
    assert!(text.lines().next().unwrap().starts_with("{\"step\":1,"));
    assert!(text.contains("\"path\":\"w\""));
}
