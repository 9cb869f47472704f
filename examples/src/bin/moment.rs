//! `moment`: train, compare and report (`docs/compare.md`).
//!
//! ```text
//! moment compare [--optimizers a,b,…] [--steps N] [--model tiny|small] [--seed N] [--out DIR]
//!                [--backend ndarray|flex|wgpu|cuda] [--text FILE] [--batch B] [--seq S] [--quiet]
//! moment train --optimizer NAME [same flags] [key=value …]   (reference constructor arguments)
//! moment plot RUN_DIR… [--floor X]
//! moment list
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use moment_examples::compare::{
    BackendKind, Data, Error, RunConfig, compare, corpus, parse_override, preset, presets,
    replot_dirs, train_run, write_report,
};
use moment_monitor::{Summary, report};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("moment: {e}");
            ExitCode::FAILURE
        }
    }
}

const USAGE: &str = "usage:
  moment compare [--optimizers a,b,...] [--steps N] [--model tiny|small] [--seed N] [--out DIR]
                 [--backend ndarray|flex|wgpu|cuda] [--text FILE] [--batch B] [--seq S] [--quiet]
  moment train --optimizer NAME [same flags] [key=value ...]
  moment plot RUN_DIR... [--floor X]
  moment list";

fn run() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = args.split_first() else {
        return Err("no command given (compare, train, plot, list; see `moment --help`)".into());
    };
    match cmd.as_str() {
        "compare" | "train" => {
            let (cfg, names, out) = parse_run(cmd, rest)?;
            let floor = corpus(&cfg)?.loss_floor();
            let summaries = if cmd == "compare" {
                compare(&cfg, &names, &out)?
            } else {
                let corpus = corpus(&cfg)?;
                let run = train_run(&cfg, corpus.as_ref(), &out.join(&cfg.optimizer))?;
                write_report(
                    &out,
                    &format!("moment train: {}", cfg.optimizer),
                    &[run],
                    floor,
                )?
            };
            print!("{}", report::text(&summaries));
            print_best(&summaries);
            println!(
                "report: {}",
                out.join(moment_monitor::files::REPORT_MD).display()
            );
            Ok(())
        }
        "plot" => {
            let mut dirs = Vec::new();
            let mut floor = None;
            let mut it = rest.iter();
            while let Some(a) = it.next() {
                if a == "--floor" {
                    floor = Some(it.next().ok_or("--floor needs a value")?.parse::<f64>()?);
                } else if a.starts_with("--") {
                    return Err(format!("unknown flag `{a}` (see `moment --help`)").into());
                } else {
                    dirs.push(PathBuf::from(a));
                }
            }
            if dirs.is_empty() {
                return Err(
                    "plot needs at least one run directory (see `moment --help`)"
                        .to_string()
                        .into(),
                );
            }
            for f in replot_dirs(&dirs, floor)? {
                println!("wrote {}", f.display());
            }
            Ok(())
        }
        "list" => {
            for p in presets() {
                println!("{:<13} {:<38} {}", p.name, p.class, p.note);
            }
            Ok(())
        }
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            Ok(())
        }
        other => Err(format!("unknown command `{other}` (see `moment --help`)").into()),
    }
}

fn print_best(summaries: &[Summary]) {
    if let Some(best) = summaries
        .iter()
        .filter(|s| s.final_val_loss.is_some_and(f64::is_finite))
        .min_by(|a, b| {
            a.final_val_loss
                .partial_cmp(&b.final_val_loss)
                .unwrap_or(std::cmp::Ordering::Equal)
        })
    {
        println!(
            "lowest final validation loss: {} ({:.4}{})",
            best.name,
            best.final_val_loss.unwrap_or(f64::NAN),
            best.gap_to_floor
                .map_or_else(String::new, |g| format!(", {g:+.4} from the floor"))
        );
    }
}

fn parse_run(cmd: &str, rest: &[String]) -> Result<(RunConfig, Vec<String>, PathBuf), Error> {
    let mut cfg = RunConfig::default();
    let mut names: Vec<String> = presets().iter().map(|p| p.name.to_string()).collect();
    let mut out: Option<PathBuf> = None;
    let mut optimizer: Option<String> = None;
    let mut it = rest.iter();
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{a} needs a value"))
        };
        match a.as_str() {
            "--optimizers" if cmd == "compare" => {
                names = value()?.split(',').map(|s| s.trim().to_string()).collect();
            }
            "--optimizer" if cmd == "train" => optimizer = Some(value()?),
            "--steps" => cfg.steps = value()?.parse()?,
            "--model" => cfg.model = value()?,
            "--seed" => cfg.seed = value()?.parse()?,
            "--out" => out = Some(value()?.into()),
            "--batch" => cfg.batch = value()?.parse()?,
            "--seq" => cfg.seq = value()?.parse()?,
            "--eval-every" => cfg.eval_every = value()?.parse()?,
            "--text" => cfg.data = Data::Text(value()?.into()),
            "--quiet" => cfg.progress = false,
            "--backend" => cfg.backend = BackendKind::parse(&value()?)?,
            kv if cmd == "train" && kv.contains('=') && !kv.starts_with("--") => {
                cfg.overrides.push(parse_override(kv)?);
            }
            other => return Err(format!("unknown argument `{other}` (see `moment --help`)").into()),
        }
    }
    if cmd == "train" {
        let name = optimizer.ok_or("train needs --optimizer NAME (see `moment list`)")?;
        preset(&name)?;
        names = vec![name.clone()];
        cfg.optimizer = name;
    } else {
        for n in &names {
            preset(n)?;
        }
    }
    let out = out.unwrap_or_else(|| {
        PathBuf::from(if cmd == "train" {
            format!("runs/train-{}", cfg.optimizer)
        } else {
            "runs/compare".to_string()
        })
    });
    Ok((cfg, names, out))
}
