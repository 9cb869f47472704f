//! The smallest moment program: minimize f(x) = x⁴ + 3x³ + 2 from x = 3 with Adam (lr 0.1,
//! 100 steps) — the same trajectory as `torch.optim.Adam` (x = 2.9 after the first step) —
//! then every optimizer preset on the same problem and on the Rosenbrock function.
//!
//! `cargo run --release -p moment-examples --example quickstart`

use burn::backend::NdArray;
use burn::tensor::{Tensor, TensorData};
use moment_examples::compare::presets;
use moment_optim::port::{ArgValue, RefArgs, from_reference};
use moment_optim::{AdamConfig, Chain, MomentOptimizer, ParamTensor};

type B = NdArray<f32>;

fn tensor(v: &[f32]) -> Tensor<B, 1> {
    Tensor::from_data(TensorData::new(v.to_vec(), [v.len()]), &Default::default())
}

fn values(t: &Tensor<B, 1>) -> Vec<f32> {
    t.to_data().to_vec::<f32>().unwrap_or_default()
}

/// Minimize `f` (value and gradient) from `x0` for `steps` steps; returns (x, f(x)) per step.
fn minimize(
    chain: Chain<B>,
    lr: f64,
    x0: &[f32],
    steps: usize,
    f: impl Fn(&[f32]) -> (f32, Vec<f32>),
) -> Result<Vec<(Vec<f32>, f32)>, moment_optim::OptimError> {
    let mut opt = MomentOptimizer::new(chain);
    let mut p = vec![ParamTensor {
        path: "x".into(),
        shape: vec![x0.len()],
        value: tensor(x0),
        grad: None,
    }];
    let mut out = Vec::with_capacity(steps);
    for _ in 0..steps {
        let x = values(&p[0].value);
        p[0].grad = Some(tensor(&f(&x).1));
        opt.step(lr, &mut p)?;
        let x = values(&p[0].value);
        let fx = f(&x).0;
        out.push((x, fx));
    }
    Ok(out)
}

fn poly(x: &[f32]) -> (f32, Vec<f32>) {
    let x = x[0];
    (
        x.powi(4) + 3.0 * x.powi(3) + 2.0,
        vec![4.0 * x.powi(3) + 9.0 * x * x],
    )
}

fn rosenbrock(v: &[f32]) -> (f32, Vec<f32>) {
    let (x, y) = (v[0], v[1]);
    let f = (1.0 - x).powi(2) + 100.0 * (y - x * x).powi(2);
    (
        f,
        vec![
            -2.0 * (1.0 - x) - 400.0 * x * (y - x * x),
            200.0 * (y - x * x),
        ],
    )
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("Adam (lr 0.1) on f(x) = x^4 + 3x^3 + 2 from x = 3:");
    let adam = AdamConfig::default().build::<B>()?;
    let traj = minimize(adam, 0.1, &[3.0], 100, poly)?;
    println!("  step   1  x = {:.6}  f = {:.6}", traj[0].0[0], traj[0].1);
    for (i, (x, fx)) in traj.iter().enumerate().skip(9).step_by(10) {
        println!("  step {:>3}  x = {:.6}  f = {:.6}", i + 1, x[0], fx);
    }
    println!("  (the minimum is at x = -2.25, f = -6.5430)");

    println!("\nEvery preset (lr 0.1, Prodigy 1.0 — it sets its own step size), 200 steps:");
    println!(
        "{:<13} {:>12} {:>12}   {:>14}",
        "optimizer", "x^4+3x^3+2", "x", "rosenbrock f"
    );
    for p in presets() {
        let mut args: RefArgs = p
            .args
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        let lr = if p.name == "prodigy" { 1.0 } else { 0.1 };
        args.insert("lr".into(), ArgValue::Float(lr));
        args.remove("weight_decay");
        let chain = match from_reference::<B>(p.class, &args) {
            Ok(ported) => ported.chain,
            Err(e) => {
                println!("{:<13} skipped: {e}", p.name);
                continue;
            }
        };
        let toy = minimize(chain.clone(), lr, &[3.0], 200, poly);
        let rb = minimize(chain, lr, &[-1.5, 2.0], 200, rosenbrock);
        match (toy, rb) {
            (Ok(t), Ok(r)) => {
                let (x, fx) = t.last().cloned().unwrap_or_default();
                let rf = r.last().map_or(f32::NAN, |l| l.1);
                println!("{:<13} {fx:>12.4} {:>12.4}   {rf:>14.4}", p.name, x[0]);
            }
            (Err(e), _) | (_, Err(e)) => println!("{:<13} not applicable: {e}", p.name),
        }
    }
    println!(
        "\n(Sophia runs without curvature estimates here — its Hessian term stays 0, so it takes\n clipped sign steps; Muon orthogonalizes 2-D matrices only: see `moment compare` for both\n on a real model.)"
    );
    Ok(())
}
