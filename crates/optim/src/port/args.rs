//! Typed access to a reference constructor's arguments, remembering which were consumed (so
//! an argument moment does not map is an error, never silently ignored).

use std::collections::BTreeSet;

use super::{ArgValue, RefArgs};
use crate::error::{OptimError, PortError, Result};
use crate::optimizers::Decay;

/// Typed access to arguments, remembering which were consumed.
pub(super) struct Args<'a> {
    args: &'a RefArgs,
    used: BTreeSet<&'a str>,
}

impl<'a> Args<'a> {
    pub(super) fn new(args: &'a RefArgs) -> Self {
        Self {
            args,
            used: BTreeSet::new(),
        }
    }

    pub(super) fn take(&mut self, key: &'static str) -> Option<&'a ArgValue> {
        let (k, v) = self.args.get_key_value(key)?;
        self.used.insert(k.as_str());
        Some(v)
    }

    pub(super) fn float(&mut self, key: &'static str, default: f64) -> Result<f64> {
        match self.take(key) {
            None | Some(ArgValue::Null) => Ok(default),
            Some(v) => as_f64(v).ok_or_else(|| bad(key, v, "a number")),
        }
    }

    pub(super) fn opt_float(&mut self, key: &'static str) -> Result<Option<f64>> {
        match self.take(key) {
            None | Some(ArgValue::Null) => Ok(None),
            Some(v) => as_f64(v)
                .map(Some)
                .ok_or_else(|| bad(key, v, "None or a number")),
        }
    }

    pub(super) fn uint(&mut self, key: &'static str, default: u64) -> Result<u64> {
        match self.take(key) {
            None | Some(ArgValue::Null) => Ok(default),
            Some(v) => match as_f64(v) {
                Some(x) if x >= 0.0 && x.fract() == 0.0 && x < 2f64.powi(53) => Ok(x as u64),
                _ => Err(bad(key, v, "a non-negative integer")),
            },
        }
    }

    pub(super) fn triple(
        &mut self,
        key: &'static str,
        default: (f64, f64, f64),
    ) -> Result<(f64, f64, f64)> {
        match self.take(key) {
            None | Some(ArgValue::Null) => Ok(default),
            Some(v @ ArgValue::List(items)) => match items.as_slice() {
                [x, y, z] => Ok((
                    as_f64(x).ok_or_else(|| bad(key, v, "three numbers"))?,
                    as_f64(y).ok_or_else(|| bad(key, v, "three numbers"))?,
                    as_f64(z).ok_or_else(|| bad(key, v, "three numbers"))?,
                )),
                _ => Err(bad(key, v, "three numbers")),
            },
            Some(v) => Err(bad(key, v, "three numbers")),
        }
    }

    /// pytorch_optimizer's decay arguments: `weight_decay` (0), `weight_decouple` (decoupled
    /// `θ·(1 − lr·λ)` or coupled L2) and `fixed_decay` (unsupported when true).
    pub(super) fn pytorch_optimizer_decay(&mut self, decouple_default: bool) -> Result<Decay> {
        let wd = self.float("weight_decay", 0.0)?;
        if self.bool("fixed_decay", false)? {
            return Err(not_implemented(
                "fixed_decay",
                "pytorch_optimizer fixed_decay=True (θ·(1 − λ), lr-independent) is not implemented",
            ));
        }
        Ok(if self.bool("weight_decouple", decouple_default)? {
            Decay::Decoupled(wd)
        } else {
            Decay::Coupled(wd)
        })
    }

    pub(super) fn bool(&mut self, key: &'static str, default: bool) -> Result<bool> {
        match self.take(key) {
            None | Some(ArgValue::Null) => Ok(default),
            Some(ArgValue::Bool(b)) => Ok(*b),
            Some(v) => Err(bad(key, v, "true or false")),
        }
    }

    pub(super) fn pair(&mut self, key: &'static str, default: (f64, f64)) -> Result<(f64, f64)> {
        match self.take(key) {
            None | Some(ArgValue::Null) => Ok(default),
            Some(v @ ArgValue::List(items)) => match items.as_slice() {
                [a, b] => Ok((
                    as_f64(a).ok_or_else(|| bad(key, v, "two numbers"))?,
                    as_f64(b).ok_or_else(|| bad(key, v, "two numbers"))?,
                )),
                _ => Err(bad(key, v, "two numbers")),
            },
            Some(v) => Err(bad(key, v, "two numbers")),
        }
    }

    pub(super) fn ignore(&mut self, keys: &[&'static str]) {
        for k in keys {
            self.take(k);
        }
    }

    pub(super) fn finish(self) -> Result<()> {
        match self.args.keys().find(|k| !self.used.contains(k.as_str())) {
            None => Ok(()),
            Some(k) => Err(OptimError::InvalidConfig {
                optimizer: "port",
                field: "argument",
                value: k.clone(),
                allowed: "an argument of the reference constructor that moment maps",
            }),
        }
    }
}

pub(super) fn as_f64(v: &ArgValue) -> Option<f64> {
    match v {
        ArgValue::Float(x) => Some(*x),
        ArgValue::Int(i) => Some(*i as f64),
        _ => None,
    }
}

/// The error for an argument whose value (or the behaviour it enables) moment does not
/// implement: [`PortError::UnsupportedArgument`].
pub(super) fn not_implemented(argument: &'static str, reason: impl Into<String>) -> OptimError {
    PortError::UnsupportedArgument {
        argument,
        reason: reason.into(),
    }
    .into()
}

pub(super) fn bad(key: &'static str, v: &ArgValue, allowed: &'static str) -> OptimError {
    OptimError::invalid("port", key, format!("{v:?}"), allowed)
}
