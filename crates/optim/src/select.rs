//! Parameter selection for groups: by rank and by path pattern.
//!
//! Paths are burn module paths joined with `.`, e.g. `blocks.0.attn.q.weight`. Patterns are
//! globs where `*` matches any run of characters (dots included) and `?` one character:
//! `*.norm*.weight`, `blocks.*.mlp.*`, `embed.weight`.

use std::ops::{BitAnd, BitOr, Not};

/// Decides whether a parameter (by path and shape) belongs to a group.
#[derive(Debug, Clone, PartialEq)]
pub enum Selector {
    /// Every parameter.
    All,
    /// Parameters whose rank (number of dims) is in `min..=max`.
    Rank {
        /// Smallest rank selected.
        min: usize,
        /// Largest rank selected.
        max: usize,
    },
    /// Parameters whose path matches a glob.
    Glob(String),
    /// Both selectors match.
    And(Box<Selector>, Box<Selector>),
    /// Either selector matches.
    Or(Box<Selector>, Box<Selector>),
    /// The selector does not match.
    Not(Box<Selector>),
}

impl Selector {
    /// Every parameter.
    pub fn all() -> Self {
        Selector::All
    }
    /// Parameters of exactly rank `r`.
    pub fn rank(r: usize) -> Self {
        Selector::Rank { min: r, max: r }
    }
    /// Parameters of rank `min..=max`.
    pub fn rank_between(min: usize, max: usize) -> Self {
        Selector::Rank { min, max }
    }
    /// Parameters whose path matches the glob `pattern` (`*`, `?`).
    pub fn glob(pattern: impl Into<String>) -> Self {
        Selector::Glob(pattern.into())
    }
    /// Parameters whose path contains `needle` (shorthand for `*needle*`).
    pub fn path_contains(needle: &str) -> Self {
        Selector::Glob(format!("*{needle}*"))
    }

    /// Whether a parameter with this path and shape is selected.
    pub fn matches(&self, path: &str, shape: &[usize]) -> bool {
        match self {
            Selector::All => true,
            Selector::Rank { min, max } => (*min..=*max).contains(&shape.len()),
            Selector::Glob(p) => glob_match(p.as_bytes(), path.as_bytes()),
            Selector::And(a, b) => a.matches(path, shape) && b.matches(path, shape),
            Selector::Or(a, b) => a.matches(path, shape) || b.matches(path, shape),
            Selector::Not(a) => !a.matches(path, shape),
        }
    }
}

impl BitAnd for Selector {
    type Output = Selector;
    fn bitand(self, rhs: Selector) -> Selector {
        Selector::And(Box::new(self), Box::new(rhs))
    }
}

impl BitOr for Selector {
    type Output = Selector;
    fn bitor(self, rhs: Selector) -> Selector {
        Selector::Or(Box::new(self), Box::new(rhs))
    }
}

impl Not for Selector {
    type Output = Selector;
    fn not(self) -> Selector {
        Selector::Not(Box::new(self))
    }
}

/// Iterative glob matcher with single-star backtracking (linear in practice, no recursion).
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        let s = Selector::glob("blocks.*.attn.*.weight");
        assert!(s.matches("blocks.0.attn.q.weight", &[4, 4]));
        assert!(s.matches("blocks.12.attn.out.weight", &[4, 4]));
        assert!(!s.matches("blocks.0.mlp.up.weight", &[4, 4]));
        assert!(!s.matches("blocks.0.attn.q.bias", &[4]));
        assert!(Selector::glob("embed.weight").matches("embed.weight", &[3, 2]));
        assert!(!Selector::glob("embed.weight").matches("embed.weights", &[3, 2]));
        assert!(Selector::glob("b?").matches("b0", &[1]));
        assert!(!Selector::glob("b?").matches("b", &[1]));
        assert!(Selector::glob("*").matches("", &[]));
        assert!(Selector::path_contains("norm").matches("blocks.1.norm1.gamma", &[8]));
    }

    #[test]
    fn ranks_and_combinators() {
        let hidden = Selector::rank(2) & !Selector::path_contains("embed");
        assert!(hidden.matches("blocks.0.mlp.up.weight", &[8, 4]));
        assert!(!hidden.matches("embed.weight", &[8, 4]));
        assert!(!hidden.matches("blocks.0.mlp.up.bias", &[8]));
        let vec_or_norm = Selector::rank_between(0, 1) | Selector::glob("*norm*");
        assert!(vec_or_norm.matches("x", &[]));
        assert!(vec_or_norm.matches("final_norm.scale", &[2, 2]));
        assert!(!vec_or_norm.matches("w", &[2, 2]));
    }
}
