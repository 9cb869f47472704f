//! `cargo xtask tidy`: source checks over every `.rs` file of the workspace (each member's
//! whole directory, `target/` and hidden directories skipped), in the spirit of
//! rust-analyzer's tidy tests. Every violation is printed as `path:line: rule: message`
//! (cycles add indented notes); the command fails if there is any.
//!
//! Rules:
//!
//! * `file-length`: no file over [`MAX_FILE_LINES`] lines, not counting the lines of test
//!   code (`#[cfg(test)]` items such as test modules, `#[test]` fns). Files under a member's
//!   `tests/` directory, files behind `#![cfg(test)]` and the files of `#[cfg(test)] mod x;`
//!   are exempt.
//! * `fn-length`: no fn over [`MAX_FN_LINES`] lines, counted from the line of its `fn`
//!   keyword to the line of its closing brace; fns in test code are exempt.
//! * `stale-exception` / `bad-exception`: the justified exceptions to the two length rules
//!   ("tables") are listed in one place, [`EXCEPTIONS_FILE`]: one `path` (file length) or
//!   `path::fn_name` (every fn of that name in that file) per line, with a `# reason`. An
//!   entry without a reason, a duplicate, or one that no longer applies (file gone or short
//!   enough, no fn of that name over the limit) is itself a violation, so the list cannot rot.
//!   A file entry does not exempt the file's fns.
//! * `lint-header`: lint levels live in the workspace's `[workspace.lints]`: every member's
//!   Cargo.toml has `[lints] workspace = true`, and no crate root (`src/lib.rs`,
//!   `src/main.rs`, `src/bin/*.rs`) sets lint levels with `#![allow|warn|deny|forbid|expect]`,
//!   also not under `#![cfg_attr(..)]`. Module-level attributes (a module's own `#![allow]`)
//!   and the roots of test, example and bench targets are not checked.
//! * `code-map`: every module (a file under a member's `src/` other than the crate roots
//!   `lib.rs`, `main.rs` and `bin/…`, and other than test-only files) is named in the "Code map" section of
//!   [`ARCHITECTURE_FILE`], in a code span (backticks). The section is split into paragraphs
//!   by lines starting with ``**`dir`**`` (a member's directory, trailing `/` optional); a
//!   module `a/b` of that member is named by one of `a/b.rs`, `a/b/mod.rs`, `a/b/`, `a::b`
//!   (two or more segments), `crate::a::b`, `moment_x::a::b`, each path form also with a
//!   `src/` prefix, in its member's paragraph, or by its full path from the workspace root
//!   (`crates/x/src/a/b.rs`) anywhere in the code map. Naming a directory with a trailing
//!   slash (`transforms/`) names every module under it; naming a file (`fused.rs`) does not.
//!   A bare word (`fused`) names nothing: too many of them are item or command names.
//! * `import-cycle`: no cycle between the top-level modules of a crate (its library or
//!   `main.rs` tree). Module X depends on module Y when non-test code of X names an item of
//!   Y by a path: `crate::y::…` (also in `use` trees, `$crate::y::…` in macros) or
//!   `super::…` resolving into Y, or `crate::Name` / `super::Name` where the crate root
//!   re-exports `Name` from Y (`pub use y::Name;`; glob re-exports are not followed). A module
//!   naming its own ancestors or descendants adds no edge (they share the top-level module),
//!   nor do `mod` declarations, doc links and comments. Each elementary cycle is reported,
//!   with the file:line of every reference that makes one of its edges.
//! * `scan`: a file the scanner cannot read (unbalanced braces, unterminated literal or
//!   comment), or a scan that found no `.rs` file or no function at all (a vacuous pass).
//!
//! The scanner is a small lexer (strings, raw strings, chars, lifetimes and nested comments
//! are skipped, so braces in them do not count) plus brace matching; the crate has no
//! dependencies.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;
use std::process::ExitCode;

mod cycles;
mod rules;
mod scan;

use scan::{FileScan, scan};

/// Longest file, in lines outside test code.
const MAX_FILE_LINES: usize = 800;
/// Longest fn, in lines from `fn` to its closing brace.
const MAX_FN_LINES: usize = 120;
/// The one list of justified exceptions to the length rules.
const EXCEPTIONS_FILE: &str = "xtask/tidy-exceptions.txt";
/// The document whose "Code map" section must name every module.
const ARCHITECTURE_FILE: &str = "docs/ARCHITECTURE.md";
/// Most cycles reported per strongly connected group of modules.
const MAX_CYCLES: usize = 20;
/// Most references listed per edge of a reported cycle.
const MAX_SITES: usize = 8;

/// `cargo xtask tidy`.
pub fn main(args: &[String]) -> ExitCode {
    if !args.is_empty() {
        eprintln!("usage: cargo xtask tidy (no options)");
        return ExitCode::from(2);
    }
    if run() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Runs every check on the workspace, prints the violations; true if there were none.
pub fn run() -> bool {
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let input = match load(root) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("xtask tidy: {e}");
            return false;
        }
    };
    let report = check(&input);
    for v in &report.violations {
        println!("{v}");
    }
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for v in &report.violations {
        *counts.entry(v.rule.name()).or_default() += 1;
    }
    let by_rule: Vec<String> = counts.iter().map(|(r, n)| format!("{r} {n}")).collect();
    eprintln!(
        "xtask tidy: {} .rs files, {} fns; {} violation(s){}",
        report.files,
        report.fns,
        report.violations.len(),
        if by_rule.is_empty() {
            String::new()
        } else {
            format!(" ({})", by_rule.join(", "))
        }
    );
    report.violations.is_empty()
}

/// The rule a violation breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Rule {
    Scan,
    FileLength,
    FnLength,
    StaleException,
    BadException,
    LintHeader,
    CodeMap,
    ImportCycle,
}

impl Rule {
    fn name(self) -> &'static str {
        match self {
            Rule::Scan => "scan",
            Rule::FileLength => "file-length",
            Rule::FnLength => "fn-length",
            Rule::StaleException => "stale-exception",
            Rule::BadException => "bad-exception",
            Rule::LintHeader => "lint-header",
            Rule::CodeMap => "code-map",
            Rule::ImportCycle => "import-cycle",
        }
    }
}

/// One violation: `path:line: rule: message`, then indented notes.
#[derive(Debug)]
struct Violation {
    path: String,
    line: usize,
    rule: Rule,
    message: String,
    notes: Vec<String>,
}

impl Violation {
    fn new(path: &str, line: usize, rule: Rule, message: String) -> Self {
        Violation {
            path: path.to_string(),
            line,
            rule,
            message,
            notes: Vec::new(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}: {}",
            self.path,
            self.line,
            self.rule.name(),
            self.message
        )?;
        for n in &self.notes {
            write!(f, "\n    {n}")?;
        }
        Ok(())
    }
}

/// What the checks read, in memory (paths relative to the workspace root, `/`-separated).
#[derive(Default)]
struct Input {
    root_manifest: String,
    /// Member directory → its Cargo.toml.
    manifests: BTreeMap<String, String>,
    /// Path → contents of every `.rs` file.
    files: BTreeMap<String, String>,
    architecture: Option<String>,
    exceptions: Option<String>,
}

struct Report {
    violations: Vec<Violation>,
    files: usize,
    fns: usize,
}

fn load(root: &Path) -> Result<Input, String> {
    let read = |rel: &str| {
        std::fs::read_to_string(root.join(rel)).map_err(|e| format!("cannot read {rel}: {e}"))
    };
    let mut input = Input {
        root_manifest: read("Cargo.toml")?,
        architecture: read(ARCHITECTURE_FILE).ok(),
        exceptions: read(EXCEPTIONS_FILE).ok(),
        ..Input::default()
    };
    for m in workspace_members(&input.root_manifest) {
        input
            .manifests
            .insert(m.clone(), read(&format!("{m}/Cargo.toml"))?);
        walk(root, &m, &mut input.files)?;
    }
    Ok(input)
}

fn walk(root: &Path, rel: &str, out: &mut BTreeMap<String, String>) -> Result<(), String> {
    let dir = root.join(rel);
    let entries = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = format!("{rel}/{name}");
        let kind = entry.file_type().map_err(|e| format!("{path}: {e}"))?;
        if kind.is_dir() && name != "target" && !name.starts_with('.') {
            walk(root, &path, out)?;
        } else if kind.is_file() && name.ends_with(".rs") {
            let text = std::fs::read_to_string(root.join(&path))
                .map_err(|e| format!("cannot read {path}: {e}"))?;
            out.insert(path, text);
        }
    }
    Ok(())
}

/// The `members = [...]` of the root manifest's `[workspace]`.
fn workspace_members(manifest: &str) -> Vec<String> {
    // The line that starts with the key (not `default-members`, not a comment).
    let mut offset = 0;
    let mut start = None;
    for l in manifest.split_inclusive('\n') {
        let key = l.trim_start().strip_prefix("members");
        if key.is_some_and(|k| k.trim_start().starts_with('=')) {
            start = Some(offset);
            break;
        }
        offset += l.len();
    }
    let Some(start) = start else {
        return Vec::new();
    };
    let rest = &manifest[start..];
    let (Some(open), Some(close)) = (rest.find('['), rest.find(']')) else {
        return Vec::new();
    };
    rest[open + 1..close]
        .split(',')
        .map(|s| s.trim().trim_matches('"').trim_end_matches('/').to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// A workspace member.
struct Member {
    dir: String,
    name: String,
}

impl Member {
    /// The module path of a file under `src/` (empty for a crate root), or `None` for files
    /// outside the library/main module tree (`src/bin/…`, tests, examples, …).
    fn module_path(&self, path: &str) -> Option<Vec<String>> {
        let rel = path.strip_prefix(&self.dir)?.strip_prefix("/src/")?;
        if rel.starts_with("bin/") {
            return None;
        }
        if rel == "lib.rs" || rel == "main.rs" {
            return Some(Vec::new());
        }
        let mut parts: Vec<String> = rel
            .trim_end_matches(".rs")
            .split('/')
            .map(String::from)
            .collect();
        if parts.last().is_some_and(|p| p == "mod") {
            parts.pop();
        }
        Some(parts)
    }

    fn is_crate_root(&self, path: &str) -> bool {
        let Some(rel) = path
            .strip_prefix(&self.dir)
            .and_then(|r| r.strip_prefix("/src/"))
        else {
            return false;
        };
        let bin_root = |b: &str| match b.split_once('/') {
            None => true,
            Some((_, rest)) => rest == "main.rs",
        };
        matches!(rel, "lib.rs" | "main.rs") || rel.strip_prefix("bin/").is_some_and(bin_root)
    }

    fn ident(&self) -> String {
        self.name.replace('-', "_")
    }
}

fn members(input: &Input) -> Vec<Member> {
    let members = input.manifests.iter().map(|(dir, manifest)| {
        let package = manifest
            .lines()
            .map(str::trim)
            .skip_while(|l| *l != "[package]")
            .skip(1)
            .take_while(|l| !l.starts_with('['));
        let name = package
            .filter_map(|l| l.split_once('='))
            .find_map(|(k, v)| (k.trim() == "name").then(|| v.trim().trim_matches('"').to_string()))
            .unwrap_or_else(|| dir.clone());
        Member {
            dir: dir.clone(),
            name,
        }
    });
    members.collect()
}

fn check(input: &Input) -> Report {
    let mut violations = Vec::new();
    let mut scans: BTreeMap<&str, FileScan> = BTreeMap::new();
    for (path, text) in &input.files {
        match scan(text) {
            Ok(s) => {
                scans.insert(path, s);
            }
            Err((line, why)) => {
                violations.push(Violation::new(
                    path,
                    line,
                    Rule::Scan,
                    format!("cannot scan: {why}"),
                ));
            }
        }
    }
    let fns = scans.values().map(|s| s.fns.len()).sum();
    if input.files.is_empty() {
        violations.push(Violation::new(
            "Cargo.toml",
            1,
            Rule::Scan,
            "found no .rs files".into(),
        ));
    } else if fns == 0 {
        violations.push(Violation::new(
            "Cargo.toml",
            1,
            Rule::Scan,
            "found no fns".into(),
        ));
    }
    let members = members(input);
    let test_files = test_files(&members, &scans);
    rules::check_lengths(input, &scans, &test_files, &mut violations);
    rules::check_lint_header(input, &members, &scans, &mut violations);
    rules::check_code_map(input, &members, &test_files, &mut violations);
    for m in &members {
        cycles::check_cycles(m, &scans, &test_files, &mut violations);
    }
    violations.sort_by(|a, b| (&a.path, a.line, a.rule).cmp(&(&b.path, b.line, b.rule)));
    Report {
        violations,
        files: input.files.len(),
        fns,
    }
}

/// Files that are test code as a whole: under a member's `tests/`, behind `#![cfg(test)]`,
/// or the file (and submodules) of a `#[cfg(test)] mod x;`.
fn test_files<'a>(members: &[Member], scans: &BTreeMap<&'a str, FileScan>) -> BTreeSet<&'a str> {
    let mut test_mods: Vec<(usize, Vec<String>)> = Vec::new();
    for (m, member) in members.iter().enumerate() {
        for (path, s) in scans {
            if let Some(mp) = member.module_path(path) {
                for decl in &s.test_mod_decls {
                    test_mods.push((m, mp.iter().chain(decl).cloned().collect()));
                }
            }
        }
    }
    let mut out = BTreeSet::new();
    for (path, s) in scans {
        let member = members
            .iter()
            .enumerate()
            .find(|(_, m)| path.starts_with(&format!("{}/", m.dir)));
        let in_tests_dir =
            member.is_some_and(|(_, m)| path[m.dir.len() + 1..].starts_with("tests/"));
        let under_test_mod = member.is_some_and(|(k, m)| {
            m.module_path(path).is_some_and(|mp| {
                test_mods
                    .iter()
                    .any(|(tk, t)| *tk == k && mp.starts_with(t))
            })
        });
        if in_tests_dir || s.whole_file_test || under_test_mod {
            out.insert(*path);
        }
    }
    out
}

#[cfg(test)]
mod tests;
