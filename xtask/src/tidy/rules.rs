//! The length, exception, lint-header and code-map rules.

use std::collections::{BTreeMap, BTreeSet};

use super::scan::{FileScan, Tok, is_ident_continue, render, split_top};
use super::{
    ARCHITECTURE_FILE, EXCEPTIONS_FILE, Input, MAX_FILE_LINES, MAX_FN_LINES, Member, Rule,
    Violation,
};

enum Target {
    File(String),
    Fn(String, String),
}

pub(super) fn check_lengths(
    input: &Input,
    scans: &BTreeMap<&str, FileScan>,
    test_files: &BTreeSet<&str>,
    out: &mut Vec<Violation>,
) {
    let exceptions = parse_exceptions(input.exceptions.as_deref().unwrap_or(""), out);
    let listed = |t: &dyn Fn(&Target) -> bool| exceptions.iter().any(|(_, e)| t(e));
    for (path, s) in scans {
        if test_files.contains(path) {
            continue;
        }
        let lines = s.lines - s.test_lines;
        if lines > MAX_FILE_LINES && !listed(&|e| matches!(e, Target::File(p) if p == path)) {
            let tests = if s.test_lines > 0 {
                format!(" outside tests ({} in all)", s.lines)
            } else {
                String::new()
            };
            let msg = format!(
                "{lines} lines{tests}, over {MAX_FILE_LINES}: split it, or list it in {EXCEPTIONS_FILE} with a reason"
            );
            out.push(Violation::new(path, 1, Rule::FileLength, msg));
        }
        for f in s.fns.iter().filter(|f| !f.test) {
            let len = f.end + 1 - f.start;
            if len > MAX_FN_LINES
                && !listed(&|e| matches!(e, Target::Fn(p, n) if p == path && *n == f.name))
            {
                let msg = format!(
                    "fn `{}` has {len} lines, over {MAX_FN_LINES}: split it, or list `{path}::{}` in {EXCEPTIONS_FILE} with a reason",
                    f.name, f.name
                );
                out.push(Violation::new(path, f.start, Rule::FnLength, msg));
            }
        }
    }
    for (line, target) in &exceptions {
        let stale = match target {
            Target::File(p) => match scans.get(p.as_str()) {
                None => Some(format!("`{p}`: no such .rs file in the workspace")),
                Some(_) if test_files.contains(p.as_str()) => {
                    Some(format!("`{p}` is test code, exempt anyway"))
                }
                Some(s) if s.lines - s.test_lines <= MAX_FILE_LINES => Some(format!(
                    "`{p}` has {} lines outside tests, within the {MAX_FILE_LINES} limit: remove the entry",
                    s.lines - s.test_lines
                )),
                Some(_) => None,
            },
            Target::Fn(p, n) => {
                let longest = scans
                    .get(p.as_str())
                    .filter(|_| !test_files.contains(p.as_str()))
                    .and_then(|s| {
                        s.fns
                            .iter()
                            .filter(|f| !f.test && f.name == *n)
                            .map(|f| f.end + 1 - f.start)
                            .max()
                    });
                match longest {
                    None => Some(format!("no non-test fn `{n}` in `{p}`: remove the entry")),
                    Some(len) if len <= MAX_FN_LINES => Some(format!(
                        "fn `{n}` in `{p}` has {len} lines, within the {MAX_FN_LINES} limit: remove the entry"
                    )),
                    Some(_) => None,
                }
            }
        };
        if let Some(msg) = stale {
            out.push(Violation::new(
                EXCEPTIONS_FILE,
                *line,
                Rule::StaleException,
                msg,
            ));
        }
    }
}

/// Entries of the exceptions file, by line; malformed ones are reported.
fn parse_exceptions(text: &str, out: &mut Vec<Violation>) -> Vec<(usize, Target)> {
    let mut entries: Vec<(usize, Target)> = Vec::new();
    let mut seen = BTreeSet::new();
    for (k, raw) in text.lines().enumerate() {
        let line = k + 1;
        let t = raw.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let bad = |msg: String| Violation::new(EXCEPTIONS_FILE, line, Rule::BadException, msg);
        let (entry, reason) = t
            .split_once('#')
            .map_or((t, ""), |(e, r)| (e.trim(), r.trim()));
        if reason.is_empty() {
            out.push(bad(format!("`{entry}` has no `# reason`")));
            continue;
        }
        let target = if let Some((p, f)) = entry.split_once(".rs::") {
            if !f.chars().all(is_ident_continue) || f.is_empty() {
                out.push(bad(format!("`{entry}`: expected `path.rs::fn_name`")));
                continue;
            }
            Target::Fn(format!("{p}.rs"), f.to_string())
        } else if entry.ends_with(".rs") && !entry.contains(char::is_whitespace) {
            Target::File(entry.to_string())
        } else {
            out.push(bad(format!(
                "`{entry}`: expected `path.rs` or `path.rs::fn_name`"
            )));
            continue;
        };
        if !seen.insert(entry.to_string()) {
            out.push(bad(format!("`{entry}` is listed twice")));
            continue;
        }
        entries.push((line, target));
    }
    entries
}

/// `(level, lints, under cfg_attr(pred))` of a crate-level attribute.
fn lint_levels(
    attr: &[Tok],
    cfg: Option<String>,
    out: &mut Vec<(String, Vec<String>, Option<String>)>,
) {
    let [
        Tok::Ident(name),
        Tok::Punct('('),
        args @ ..,
        Tok::Punct(')'),
    ] = attr
    else {
        return;
    };
    match name.as_str() {
        "allow" | "warn" | "deny" | "forbid" | "expect" => {
            let lints = split_top(args, ',')
                .into_iter()
                .filter(|l| !l.is_empty())
                .map(render);
            out.push((name.clone(), lints.collect(), cfg));
        }
        "cfg_attr" => {
            let parts = split_top(args, ',');
            if let Some((pred, attrs)) = parts.split_first() {
                for a in attrs {
                    lint_levels(a, Some(render(pred)), out);
                }
            }
        }
        _ => {}
    }
}

/// The lint names of `[workspace.lints.*]`, as written in attributes (`clippy::x`).
fn workspace_lints(manifest: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut tool: Option<String> = None;
    for l in manifest.lines().map(str::trim) {
        if l.starts_with('[') {
            tool = l
                .strip_prefix("[workspace.lints.")
                .and_then(|t| t.strip_suffix(']'))
                .map(str::to_string);
        } else if let (Some(t), Some((k, _))) = (&tool, l.split_once('=')) {
            let k = k.trim().replace('-', "_");
            out.insert(if t == "rust" { k } else { format!("{t}::{k}") });
        }
    }
    out
}

pub(super) fn check_lint_header(
    input: &Input,
    members: &[Member],
    scans: &BTreeMap<&str, FileScan>,
    out: &mut Vec<Violation>,
) {
    for m in members {
        let manifest = &input.manifests[&m.dir];
        let lines: Vec<&str> = manifest.lines().map(str::trim).collect();
        let table = lines.iter().position(|l| *l == "[lints]");
        let inherits = table.is_some_and(|t| {
            lines[t + 1..]
                .iter()
                .take_while(|l| !l.starts_with('['))
                .any(|l| l.replace(' ', "") == "workspace=true")
        }) || lines.iter().any(|l| {
            let l = l.replace(' ', "");
            l == "lints.workspace=true" || l == "lints={workspace=true}"
        });
        if !inherits {
            let msg = format!(
                "{} does not inherit the workspace lints: add `[lints]` with `workspace = true`",
                m.name
            );
            out.push(Violation::new(
                &format!("{}/Cargo.toml", m.dir),
                table.map_or(1, |t| t + 1),
                Rule::LintHeader,
                msg,
            ));
        }
    }
    let ws = workspace_lints(&input.root_manifest);
    for (path, s) in scans {
        if !members.iter().any(|m| m.is_crate_root(path)) {
            continue;
        }
        for (line, attr) in &s.file_attrs {
            let mut levels = Vec::new();
            lint_levels(attr, None, &mut levels);
            for (level, lints, cfg) in levels {
                let dup: Vec<&str> = lints
                    .iter()
                    .filter(|l| ws.contains(*l))
                    .map(String::as_str)
                    .collect();
                let under = cfg.map_or(String::new(), |c| format!(" (under `cfg_attr({c})`)"));
                let dup = if dup.is_empty() {
                    String::new()
                } else {
                    format!("; duplicates the workspace's {}", dup.join(", "))
                };
                let msg = format!(
                    "crate-level `{level}({})`{under}: lint levels belong in the root Cargo.toml's [workspace.lints]{dup}",
                    lints.join(", ")
                );
                out.push(Violation::new(path, *line, Rule::LintHeader, msg));
            }
        }
    }
}

/// The code map: code spans per member paragraph (keyed by directory), and all of them.
fn code_map(doc: &str) -> Option<(BTreeMap<String, BTreeSet<String>>, BTreeSet<String>)> {
    let start = doc
        .lines()
        .position(|l| l.trim_start().starts_with("## Code map"))?;
    let (mut per, mut all) = (BTreeMap::new(), BTreeSet::new());
    let mut current: Option<(String, String)> = None;
    let flush = |cur: Option<(String, String)>, per: &mut BTreeMap<String, BTreeSet<String>>| {
        if let Some((dir, text)) = cur {
            let spans: &mut BTreeSet<String> = per.entry(dir).or_default();
            spans.extend(
                text.split('`')
                    .skip(1)
                    .step_by(2)
                    .map(|s| s.trim().to_string()),
            );
        }
    };
    for l in doc
        .lines()
        .skip(start + 1)
        .take_while(|l| !l.starts_with("## "))
    {
        all.extend(
            l.split('`')
                .skip(1)
                .step_by(2)
                .map(|s| s.trim().to_string()),
        );
        if let Some(rest) = l.strip_prefix("**`") {
            let dir = rest
                .split('`')
                .next()
                .unwrap_or("")
                .trim_end_matches('/')
                .to_string();
            flush(current.replace((dir, String::new())), &mut per);
        }
        if let Some((_, text)) = &mut current {
            text.push_str(l);
            text.push('\n');
        }
    }
    flush(current, &mut per);
    Some((per, all))
}

pub(super) fn check_code_map(
    input: &Input,
    members: &[Member],
    test_files: &BTreeSet<&str>,
    out: &mut Vec<Violation>,
) {
    let Some((per, all)) = input.architecture.as_deref().and_then(code_map) else {
        let msg = "no `## Code map` section: every module must be named there".into();
        out.push(Violation::new(ARCHITECTURE_FILE, 1, Rule::CodeMap, msg));
        return;
    };
    let empty = BTreeSet::new();
    for m in members {
        let spans = per.get(&m.dir).unwrap_or(&empty);
        let full = format!("{}/src/", m.dir);
        let named_dir = |rel: &str| {
            let d = format!("{rel}/");
            spans.contains(&d)
                || spans.contains(&format!("src/{d}"))
                || all.contains(&format!("{full}{d}"))
        };
        for path in input.files.keys() {
            if test_files.contains(path.as_str()) {
                continue;
            }
            let Some(mp) = m.module_path(path).filter(|mp| !mp.is_empty()) else {
                continue;
            };
            let rel = mp.join("/");
            let files = [format!("{rel}.rs"), format!("{rel}/mod.rs")];
            let colons = mp.join("::");
            let named = named_dir(&rel)
                || files.iter().any(|f| {
                    spans.contains(f)
                        || spans.contains(&format!("src/{f}"))
                        || all.contains(&format!("{full}{f}"))
                })
                || (mp.len() > 1 && spans.contains(&colons))
                || spans.contains(&format!("crate::{colons}"))
                || spans.contains(&format!("{}::{colons}", m.ident()))
                || (1..mp.len()).any(|k| named_dir(&mp[..k].join("/")));
            if !named {
                let para = if per.contains_key(&m.dir) {
                    String::new()
                } else {
                    " (it has no such paragraph yet)".into()
                };
                let dir = if mp.len() > 1 { &mp[0] } else { &rel };
                let msg = format!(
                    "module `{colons}` of {} is not in {ARCHITECTURE_FILE}'s code map: name `{}` (or a directory holding it, e.g. `{dir}/`) in the **`{}`** paragraph{para}",
                    m.name, files[0], m.dir
                );
                out.push(Violation::new(path, 1, Rule::CodeMap, msg));
            }
        }
    }
}
