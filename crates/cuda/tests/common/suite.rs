// The fused-kernel suite, shared by `tests/wgpu.rs` and `tests/cuda.rs` (included there with
// `type G` = the GPU backend under test): every fused kernel against the composed reference
// path (moment-optim's chain of burn tensor ops on the CPU backend, the path the reference
// cases check), on random inputs with the edge cases (a huge gradient, a zero gradient, tiny elements,
// 1-element and odd-sized tensors), within the family's reference tolerance. State records
// written on the GPU load into a CPU optimizer and continue there.

use burn::backend::NdArray;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use moment_cuda::{StepPath, step_path};
use moment_optim::{Chain, GradEntry, MomentOptimizer, ParamTensor};
use serde_json::Value;

type Cpu = NdArray<f32>;

/// Tolerance of the Adam, Lion and Sophia reference families (`shared/optimizers.md`).
const TOL: Tol = Tol {
    rtol: 1e-5,
    atol: 1e-6,
};

/// `|a − e| ≤ atol + rtol·|e|`.
#[derive(Clone, Copy)]
struct Tol {
    rtol: f64,
    atol: f64,
}

/// Sizes: one element, a partial cube, several cubes with a partial last one.
const SIZES: [usize; 3] = [1, 1000, 70_001];

fn setup() {
    moment_cuda::enable::<G>();
}

fn flat<B: Backend>(v: &[f32]) -> Tensor<B, 1> {
    Tensor::from_data(TensorData::new(v.to_vec(), [v.len()]), &Default::default())
}

fn values<B: Backend>(t: &Tensor<B, 1>) -> Vec<f32> {
    t.to_data().to_vec::<f32>().unwrap()
}

/// The inputs of one run: initial parameter, a gradient per step, and (for Sophia) a curvature
/// estimate before every second step. Host-generated (xorshift), so both backends see the same.
struct Inputs {
    init: Vec<f32>,
    grads: Vec<Vec<f32>>,
    curvature: Vec<Option<Vec<f32>>>,
}

fn inputs(n: usize, steps: usize, curvature: bool) -> Inputs {
    let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ (n as u64).wrapping_mul(0x1234_5677);
    let mut next = |scale: f32| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale
    };
    let init = (0..n).map(|_| next(1.0)).collect();
    let mut grads = Vec::new();
    let mut curv = Vec::new();
    for s in 0..steps {
        curv.push((curvature && s % 2 == 1).then(|| (0..n).map(|_| next(3.0).abs()).collect()));
        // one step with a huge gradient, one with zeros: the edge cases
        let scale = match s {
            1 => 1e3,
            3 => 0.0,
            _ => 2.0,
        };
        // Every 11th element tiny (±1e-12): values that round to the zero code, where the
        // 8-bit encoder's sign fix decides.
        grads.push(
            (0..n)
                .map(|i| {
                    let x = next(scale);
                    if i % 11 == 5 { x.signum() * 1e-12 } else { x }
                })
                .collect(),
        );
    }
    Inputs {
        init,
        grads,
        curvature: curv,
    }
}

/// Runs `chain` on backend `B` over `inp`; returns the parameter, the record (as JSON) and how
/// many parameter-steps took the fused path. With `keep_alias`, a clone of the parameter is
/// held across each step and must not have been written through.
fn run<B: Backend>(chain: Chain<B>, inp: &Inputs, keep_alias: bool) -> (Vec<f32>, Value, usize) {
    let n = inp.init.len();
    let mut opt = MomentOptimizer::new(chain);
    let init = flat::<B>(&inp.init);
    let mut p = vec![ParamTensor {
        path: "w".into(),
        shape: vec![n],
        value: init.clone(),
        grad: None,
    }];
    let mut fused = 0;
    let mut aliases = Vec::new();
    for (g, c) in inp.grads.iter().zip(&inp.curvature) {
        if let Some(c) = c {
            opt.update_curvature(vec![GradEntry {
                path: "w".into(),
                param_shape: vec![n],
                grad_shape: vec![n],
                grad: flat(c),
                param: None,
            }])
            .unwrap();
        }
        if keep_alias {
            aliases.push((p[0].value.clone(), values(&p[0].value)));
        }
        p[0].grad = Some(flat(g));
        fused += opt.step(1e-2, &mut p).unwrap().params_fused;
    }
    assert_eq!(values(&init), inp.init, "the initial buffer was written through");
    for (t, v) in aliases {
        assert_eq!(values(&t), v, "a shared buffer was written through");
    }
    let record = serde_json::to_value(opt.to_record()).unwrap();
    (values(&p[0].value), record, fused)
}

fn close(a: f64, e: f64, tol: Tol) -> bool {
    (a.is_nan() && e.is_nan()) || a == e || (a - e).abs() <= tol.atol + tol.rtol * e.abs()
}

fn assert_close(actual: &[f32], expected: &[f32], tol: Tol, what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        let (a, e) = (f64::from(a), f64::from(e));
        assert!(
            close(a, e, tol),
            "{what}: element {i}: {a} vs {e} (|diff| {:e})",
            (a - e).abs()
        );
    }
}

/// Two records have the same structure (keys, array lengths, strings, integers) and their
/// floats agree within the tolerance.
fn assert_records_close(a: &Value, e: &Value, tol: Tol, at: &str) {
    match (a, e) {
        (Value::Object(x), Value::Object(y)) => {
            let kx: Vec<_> = x.keys().collect();
            let ky: Vec<_> = y.keys().collect();
            assert_eq!(kx, ky, "record keys at {at}");
            for (k, v) in x {
                assert_records_close(v, &y[k], tol, &format!("{at}.{k}"));
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len(), "record array length at {at}");
            for (i, (v, w)) in x.iter().zip(y).enumerate() {
                assert_records_close(v, w, tol, &format!("{at}[{i}]"));
            }
        }
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            assert!(close(x, y, tol), "record value at {at}: {x} vs {y}");
        }
        _ => assert_eq!(a, e, "record at {at}"),
    }
}

/// Fused on the GPU against composed on the CPU, for every size; the fused path must be taken
/// on every step. Returns the GPU record of the largest size.
fn check(name: &str, gpu: Chain<G>, cpu: Chain<Cpu>, curvature: bool) -> Value {
    check_with(name, gpu, cpu, curvature, &SIZES, TOL)
}

fn check_with(
    name: &str,
    gpu: Chain<G>,
    cpu: Chain<Cpu>,
    curvature: bool,
    sizes: &[usize],
    tol: Tol,
) -> Value {
    setup();
    assert!(gpu.fused().is_some(), "{name} has a fused step");
    let mut last = Value::Null;
    for &n in sizes {
        let inp = inputs(n, 5, curvature);
        let (f, rf, fused) = run(gpu.clone(), &inp, false);
        assert_eq!(fused, inp.grads.len(), "{name}, n = {n}: fused path taken");
        let (c, rc, composed) = run(cpu.clone().composed(), &inp, false);
        assert_eq!(composed, 0);
        let what = format!("{name}, n = {n}");
        assert_close(&f, &c, tol, &what);
        assert_records_close(&rf, &rc, tol, &what);
        last = rf;
    }
    last
}

#[test]
fn gpu_backend_takes_the_fused_path_once_enabled() {
    setup();
    assert_eq!(step_path::<G>(), StepPath::Fused);
    assert_eq!(step_path::<Cpu>(), StepPath::Composed);
}

#[test]
fn adam_family_kernel_matches_the_composed_path() {
    use moment_optim::Decay;
    use moment_optim::optimizers::adam_chain;
    for decay in [Decay::None, Decay::Coupled(0.05), Decay::Decoupled(0.1)] {
        for amsgrad in [false, true] {
            for maximize in [false, true] {
                let name = format!("adam {decay:?} amsgrad={amsgrad} maximize={maximize}");
                check(
                    &name,
                    adam_chain("adam", (0.9, 0.999), 1e-8, decay, amsgrad, maximize).unwrap(),
                    adam_chain("adam", (0.9, 0.999), 1e-8, decay, amsgrad, maximize).unwrap(),
                    false,
                );
            }
        }
    }
}

#[test]
fn lion_kernel_matches_the_composed_path() {
    use moment_optim::LionConfig;
    for maximize in [false, true] {
        for weight_decay in [0.0, 0.1] {
            let cfg = LionConfig {
                maximize,
                weight_decay,
                ..LionConfig::default()
            };
            check(
                &format!("lion maximize={maximize} wd={weight_decay}"),
                cfg.build().unwrap(),
                cfg.build().unwrap(),
                false,
            );
        }
    }
}

#[test]
fn sophia_kernel_matches_the_composed_path_win_rate_included() {
    use moment_optim::{Decay, SophiaConfig};
    for h in [false, true] {
        for maximize in [false, true] {
            for decay in [Decay::None, Decay::Coupled(0.05), Decay::Decoupled(0.1)] {
                let base = if h {
                    SophiaConfig::h()
                } else {
                    SophiaConfig::g()
                };
                let cfg = SophiaConfig {
                    maximize,
                    decay,
                    ..base
                };
                let rec = check(
                    &format!("sophia H={h} maximize={maximize} {decay:?}"),
                    cfg.build().unwrap(),
                    cfg.build().unwrap(),
                    true,
                );
                assert!(rec.to_string().contains("win_rate"));
            }
        }
    }
}

/// 8-bit blockwise Adam/AdamW: one cube per block (partial last block, several blocks), the
/// same parameters within the 8-bit family's tolerance and the same codes and max-abs values.
#[test]
fn adam8bit_kernel_matches_the_composed_path_codes_included() {
    use moment_optim::Adam8bitConfig;
    for (name, cfg) in [
        ("adam8bit", Adam8bitConfig::default()),
        ("adamw8bit", Adam8bitConfig::adamw()),
    ] {
        let rec = check_with(
            name,
            cfg.build().unwrap(),
            cfg.build().unwrap(),
            false,
            &[4096 + 37, 70_001],
            Tol {
                rtol: 5e-4,
                atol: 1e-3,
            },
        );
        assert!(rec.to_string().contains("state1"));
    }
}

/// On the GPU the same numbers come out of the composed and the fused path (the composed chain
/// runs through burn's GPU ops, fused or not by burn).
#[test]
fn fused_and_composed_agree_on_the_gpu_and_shared_buffers_are_not_written() {
    use moment_optim::AdamWConfig;
    setup();
    let chain: Chain<G> = AdamWConfig::default().build().unwrap();
    let inp = inputs(4099, 4, false);
    let (f, rf, nf) = run(chain.clone(), &inp, true);
    let (c, rc, nc) = run(chain.composed(), &inp, false);
    assert_eq!((nf, nc), (4, 0));
    assert_close(&f, &c, TOL, "adamw on the GPU, fused vs composed");
    assert_records_close(&rf, &rc, TOL, "adamw on the GPU");
}

/// Save on the GPU, load on the CPU: the record written by the fused path resumes on the
/// composed CPU path and continues as a CPU-only run does.
#[test]
fn a_record_saved_on_the_gpu_resumes_on_the_cpu() {
    use moment_optim::AdamWConfig;
    setup();
    let cfg = AdamWConfig {
        amsgrad: true,
        ..AdamWConfig::default()
    };
    let n = 3001;
    let inp = inputs(n, 6, false);
    let first = Inputs {
        init: inp.init.clone(),
        grads: inp.grads[..3].to_vec(),
        curvature: vec![None; 3],
    };
    // 3 steps on the GPU (fused), then 3 on the CPU from the record.
    let mut gpu = MomentOptimizer::new(cfg.build::<G>().unwrap());
    let mut p = vec![ParamTensor {
        path: "w".into(),
        shape: vec![n],
        value: flat::<G>(&first.init),
        grad: None,
    }];
    for g in &first.grads {
        p[0].grad = Some(flat(g));
        assert_eq!(gpu.step(1e-2, &mut p).unwrap().params_fused, 1);
    }
    let record = gpu.to_record();
    let mut cpu = MomentOptimizer::new(cfg.build::<Cpu>().unwrap());
    cpu.load_record(record, &Default::default()).unwrap();
    let mut q = vec![ParamTensor {
        path: "w".into(),
        shape: vec![n],
        value: flat::<Cpu>(&values(&p[0].value)),
        grad: None,
    }];
    for g in &inp.grads[3..] {
        q[0].grad = Some(flat(g));
        cpu.step(1e-2, &mut q).unwrap();
    }
    // The whole run on the CPU.
    let (all_cpu, rc, _) = run(cfg.build::<Cpu>().unwrap(), &inp, false);
    assert_close(&values(&q[0].value), &all_cpu, TOL, "resumed on the CPU");
    let resumed = serde_json::to_value(cpu.to_record()).unwrap();
    assert_records_close(&resumed, &rc, TOL, "resumed record");
}

/// Non-finite gradients under the `Propagate` policy (per-element semantics): the fused
/// kernels give the composed path's numbers, NaN where it has NaN (8-bit: the moments of
/// those elements zeroed and the parameter left, as bitsandbytes' CUDA kernel does).
#[test]
fn non_finite_policies_behave_as_on_the_composed_path() {
    use moment_optim::{
        Adam8bitConfig, AdamConfig, AdamWConfig, LionConfig, NonFinitePolicy, ParamGroup,
        Selector, SophiaConfig,
    };
    setup();
    let n = 5000;
    let g: Vec<f32> = (0..n)
        .map(|i| match i % 97 {
            3 => f32::NAN,
            5 => f32::INFINITY,
            7 => -f32::INFINITY,
            11 => 3e38,
            13 => 1e-40,
            _ => ((i * 31 % 17) as f32 - 8.0) * 0.1,
        })
        .collect();
    let init: Vec<f32> = (0..n).map(|i| (i % 13) as f32 * 0.1 - 0.6).collect();
    let clean: Vec<f32> = (0..n).map(|i| ((i * 7 % 23) as f32 - 11.0) * 0.05).collect();
    // clean, bad, bad, clean: `SkipStep` must skip exactly the bad steps, `ZeroGradient` zero
    // exactly the bad elements, `Propagate` run the kernels on them.
    let seq = [clean.clone(), g.clone(), g.clone(), clean.clone()];
    fn go<B: Backend>(
        chain: Chain<B>,
        policy: NonFinitePolicy,
        init: &[f32],
        seq: &[Vec<f32>],
    ) -> (Vec<f32>, Value) {
        let mut opt = MomentOptimizer::builder()
            .group(ParamGroup::new("all", Selector::All, chain))
            .non_finite(policy)
            .build()
            .unwrap();
        let mut p = vec![ParamTensor {
            path: "w".into(),
            shape: vec![init.len()],
            value: flat::<B>(init),
            grad: None,
        }];
        for g in seq {
            p[0].grad = Some(flat(g));
            let report = opt.step(1e-2, &mut p).unwrap();
            let bad = g.iter().any(|x| !x.is_finite());
            assert_eq!(report.skipped, bad && policy == NonFinitePolicy::SkipStep);
        }
        (
            values(&p[0].value),
            serde_json::to_value(opt.to_record()).unwrap(),
        )
    }
    let amsgrad = AdamConfig {
        amsgrad: true,
        maximize: true,
        weight_decay: 0.1,
        ..AdamConfig::default()
    };
    let lion = LionConfig {
        weight_decay: 0.1,
        ..LionConfig::default()
    };
    macro_rules! both {
        ($name:expr, $cfg:expr, $tol:expr) => {{
            for policy in [
                NonFinitePolicy::Propagate,
                NonFinitePolicy::SkipStep,
                NonFinitePolicy::ZeroGradient,
            ] {
                let what = format!("{} {policy:?}", $name);
                let (f, rf) = go::<G>($cfg.build().unwrap(), policy, &init, &seq);
                let (c, rc) = go::<Cpu>($cfg.build().unwrap().composed(), policy, &init, &seq);
                assert_close(&f, &c, $tol, &what);
                assert_records_close(&rf, &rc, $tol, &what);
                if policy == NonFinitePolicy::SkipStep {
                    // the same as never seeing the bad steps
                    let (s, _) = go::<G>(
                        $cfg.build().unwrap(),
                        policy,
                        &init,
                        &[clean.clone(), clean.clone()],
                    );
                    assert_close(&f, &s, $tol, &what);
                }
            }
        }};
    }
    both!("adamw", AdamWConfig::default(), TOL);
    both!("adam amsgrad maximize l2", amsgrad, TOL);
    both!("lion", lion, TOL);
    both!("sophia-g", SophiaConfig::g(), TOL);
    both!(
        "adamw8bit",
        Adam8bitConfig::adamw(),
        Tol {
            rtol: 5e-4,
            atol: 1e-3
        }
    );
}
