//! The optimizer-state memory table in `docs/memory.md`, generated from the accounting API
//! ([`MomentOptimizer::state_memory`]) rather than typed by hand: each optimizer's state is
//! created for each shape (by preparing one step) and its exact bytes are read back.
//!
//! `cargo run -p moment-examples --bin memory-table` prints the table; a test checks that
//! `docs/memory.md` holds the current output.

use burn::backend::NdArray;
use burn::tensor::Tensor;
use moment_optim::{
    AdafactorConfig, Adam8bitConfig, AdamConfig, AdamMiniConfig, AdamWConfig, AdemamixConfig,
    CameConfig, Chain, GradEntry, LambConfig, LionConfig, MarsConfig, MomentOptimizer, MuonConfig,
    OptimError, ProdigyConfig, ScheduleFreeConfig, ShampooConfig, SoapConfig, SophiaConfig,
};

type B = NdArray<f32>;

/// Shapes of the table's columns: a bias, a norm weight, the 8-bit threshold, the reference
/// cases' 8-bit matrix, a square layer, a 3-D stack and an LLM-sized projection.
pub const SHAPES: &[&[usize]] = &[
    &[7],
    &[1024],
    &[4096],
    &[64, 65],
    &[1024, 1024],
    &[8, 256, 256],
    &[4096, 1024],
];

/// The table's rows: (label, chain).
pub fn optimizers() -> Result<Vec<(&'static str, Chain<B>)>, OptimError> {
    Ok(vec![
        ("Adam / AdamW (torch)", AdamWConfig::default().build()?),
        (
            "Adam, amsgrad",
            AdamConfig {
                amsgrad: true,
                ..AdamConfig::default()
            }
            .build()?,
        ),
        (
            "Adafactor (transformers / torch)",
            AdafactorConfig::transformers().build()?,
        ),
        (
            "Adafactor, β1 = 0.9",
            AdafactorConfig {
                beta1: Some(0.9),
                ..AdafactorConfig::transformers()
            }
            .build()?,
        ),
        ("8-bit Adam / AdamW (bnb)", Adam8bitConfig::adamw().build()?),
        ("Sophia-G / Sophia-H", SophiaConfig::g().build()?),
        ("LAMB", LambConfig::default().build()?),
        ("Lion", LionConfig::default().build()?),
        ("AdEMAMix", AdemamixConfig::default().build()?),
        (
            "Schedule-Free AdamW",
            ScheduleFreeConfig::default().build()?,
        ),
        ("CAME", CameConfig::default().build()?),
        ("Muon (2-D only)", MuonConfig::default().build()?),
        ("MARS", MarsConfig::default().build()?),
        (
            "Adam-mini (per-tensor blocks)",
            AdamMiniConfig {
                num_heads: 8,
                ..AdamMiniConfig::default()
            }
            .build()?,
        ),
        (
            "Prodigy (incl. 64 B of group state)",
            ProdigyConfig::default().build()?,
        ),
        ("SOAP (every axis rotated)", SoapConfig::default().build()?),
        (
            "Shampoo (Gupta form, unblocked)",
            ShampooConfig::gupta().build()?,
        ),
        (
            "Shampoo (scalable, blocks of 512)",
            ShampooConfig::scalable().build()?,
        ),
    ])
}

/// Exact state bytes of `chain` for one parameter of `shape` (step counters included).
pub fn state_bytes(chain: Chain<B>, shape: &[usize]) -> Result<u64, OptimError> {
    let mut opt = MomentOptimizer::new(chain);
    let n: usize = shape.iter().product();
    let device = Default::default();
    let prep = opt.prepare(
        0.0,
        vec![GradEntry {
            path: "p".into(),
            param_shape: shape.to_vec(),
            grad_shape: shape.to_vec(),
            grad: Tensor::<B, 1>::zeros([n], &device),
            param: Some(Tensor::<B, 1>::zeros([n], &device)),
        }],
    )?;
    opt.finish(prep);
    Ok(opt.state_memory().total_bytes)
}

fn shape_label(shape: &[usize]) -> String {
    format!(
        "[{}]",
        shape
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("×")
    )
}

/// The markdown table: bytes of optimizer state per parameter element (fp32 parameters;
/// parameters and gradients themselves excluded).
pub fn table() -> Result<String, OptimError> {
    let mut out = String::from("| optimizer |");
    for s in SHAPES {
        out.push_str(&format!(" {} |", shape_label(s)));
    }
    out.push_str("\n| --- |");
    out.push_str(&" ---: |".repeat(SHAPES.len()));
    out.push('\n');
    for (label, chain) in optimizers()? {
        out.push_str(&format!("| {label} |"));
        for s in SHAPES {
            let n: usize = s.iter().product();
            match state_bytes(chain.clone(), s) {
                Ok(bytes) => out.push_str(&format!(" {:.3} |", bytes as f64 / n as f64)),
                // e.g. Muon on a vector: not a shape this optimizer takes
                Err(OptimError::UnsupportedShape { .. }) => out.push_str(" — |"),
                Err(e) => return Err(e),
            }
        }
        out.push('\n');
    }
    Ok(out)
}
