use super::*;

const MANIFEST: &str = "[package]\nname = \"moment-a\"\n\n[lints]\nworkspace = true\n";
const ROOT: &str =
    "[workspace]\nmembers = [\"crates/a\"]\n\n[workspace.lints.clippy]\ndbg_macro = \"warn\"\n";
const DOC: &str =
    "# A\n\n## Code map\n\n**`crates/a` (moment-a).** `m.rs`: a module.\n\n## Invariants\n";

/// A one-crate workspace (`crates/a`) with these files, plus a short `src/lib.rs`.
fn input(files: &[(&str, String)]) -> Input {
    let mut input = Input {
        root_manifest: ROOT.into(),
        architecture: Some(DOC.into()),
        exceptions: Some(String::new()),
        ..Input::default()
    };
    input.manifests.insert("crates/a".into(), MANIFEST.into());
    input
        .files
        .insert("crates/a/src/lib.rs".into(), "pub fn f() {}\n".into());
    for (p, t) in files {
        input.files.insert((*p).into(), t.clone());
    }
    input
}

fn found(input: &Input, rule: Rule) -> Vec<(String, usize)> {
    let r = check(input);
    let v = r.violations.iter().filter(|v| v.rule == rule);
    v.map(|v| (v.path.clone(), v.line)).collect()
}

/// `fn name() { … }` spanning `lines` lines.
fn long_fn(name: &str, lines: usize) -> String {
    format!(
        "fn {name}() {{\n{}}}\n",
        "    let _ = 1;\n".repeat(lines - 2)
    )
}

#[test]
fn braces_in_literals_comments_and_lifetimes_do_not_count() {
    let src = r##"fn a<'x>(s: &'x str) -> char {
let _ = "}}} \" {";
let _ = r#"}"# ;
let _ = br"}" ; let _ = b'}'; let _ = c"}";
// } a comment
/* { /* nested } */ } */
let _ = ['{', '\'', '\u{7d}', '"'];
'outer: loop { break 'outer; }
let r#fn = 1; let _ = r#fn;
'}'
}
fn b() -> &'static str { "{" }
"##;
    let s = scan(src).expect("scans");
    let fns: Vec<(&str, usize, usize)> = s
        .fns
        .iter()
        .map(|f| (f.name.as_str(), f.start, f.end))
        .collect();
    assert_eq!(fns, [("a", 1, 11), ("b", 12, 12)]);
    assert!(scan("fn a() { \"}\" ").is_err());
    assert!(scan("fn a() { '}' }}").is_err());
    assert!(scan("fn a() { /* } */").is_err());
}

#[test]
fn long_fns_are_flagged_from_fn_to_closing_brace() {
    let ok = long_fn("ok", MAX_FN_LINES);
    let long = long_fn("long", MAX_FN_LINES + 1);
    let decl = "trait T {\n    fn d(&self);\n}\n";
    let src = format!("//! m\n{ok}#[inline]\n{long}{decl}");
    let inp = input(&[("crates/a/src/m.rs", src)]);
    let line = 1 + MAX_FN_LINES + 2; // the `fn long` line, not its attribute
    assert_eq!(
        found(&inp, Rule::FnLength),
        [("crates/a/src/m.rs".into(), line)]
    );
}

#[test]
fn test_code_is_exempt() {
    let n = MAX_FN_LINES + 10;
    let src = format!(
        "fn short() {{}}\n#[cfg(test)]\nmod tests {{\n{}}}\n#[test]\n{}#[cfg(all(feature = \"x\", test))]\nimpl S {{\n{}}}\n#[cfg(not(test))]\n{}",
        long_fn("in_mod", n),
        long_fn("test_fn", n),
        long_fn("in_impl", n),
        long_fn("not_test", n),
    );
    let inp = input(&[("crates/a/src/m.rs", src)]);
    let flagged = found(&inp, Rule::FnLength);
    assert_eq!(flagged.len(), 1, "{flagged:?}");
    let s = scan(&inp.files["crates/a/src/m.rs"]).expect("scans");
    let not_test = s.fns.iter().find(|f| f.name == "not_test").expect("found");
    assert_eq!(flagged[0].1, not_test.start);
    assert!(!not_test.test);
    assert!(
        s.fns
            .iter()
            .filter(|f| f.name != "not_test" && f.name != "short")
            .all(|f| f.test)
    );
}

#[test]
fn file_length_counts_lines_outside_tests() {
    let body = |n: usize| "const X: u8 = 1;\n".repeat(n);
    let test_mod = format!("#[cfg(test)]\nmod tests {{\n{}}}\n", body(300));
    let over = body(MAX_FILE_LINES + 1);
    let files = [
        (
            "crates/a/src/m.rs",
            format!("{}{test_mod}", body(MAX_FILE_LINES)),
        ),
        ("crates/a/src/over.rs", over.clone()),
        ("crates/a/tests/big.rs", over.clone()),
        ("crates/a/src/t.rs", format!("#![cfg(test)]\n{over}")),
        ("crates/a/src/u.rs", "#[cfg(test)]\nmod v;\n".to_string()),
        ("crates/a/src/u/v.rs", over.clone()),
        ("crates/a/examples/e.rs", over),
    ];
    let inp = input(&files);
    assert_eq!(
        found(&inp, Rule::FileLength),
        [
            ("crates/a/examples/e.rs".into(), 1),
            ("crates/a/src/over.rs".into(), 1)
        ]
    );
}

#[test]
fn exceptions_apply_and_stale_or_malformed_ones_fail() {
    let long = long_fn("table", MAX_FN_LINES + 5);
    let big = "const X: u8 = 1;\n".repeat(MAX_FILE_LINES + 1);
    let mut inp = input(&[
        (
            "crates/a/src/m.rs",
            format!("{long}{}", long_fn("short", 3)),
        ),
        ("crates/a/src/big.rs", big),
    ]);
    inp.exceptions = Some(
        "# header comment\n\
         crates/a/src/m.rs::table  # a table of presets\n\
         crates/a/src/big.rs # generated data\n\
         crates/a/src/m.rs::short # stale: short\n\
         crates/a/src/m.rs::gone # stale: no such fn\n\
         crates/a/src/m.rs # stale: short file\n\
         crates/a/src/nope.rs # stale: no file\n\
         crates/a/src/big.rs\n\
         crates/a/src/big.rs # twice\n\
         crates/a/src # not a file\n"
            .into(),
    );
    assert!(found(&inp, Rule::FnLength).is_empty());
    assert!(found(&inp, Rule::FileLength).is_empty());
    let at = |v: Vec<(String, usize)>| v.into_iter().map(|(_, l)| l).collect::<Vec<_>>();
    assert_eq!(at(found(&inp, Rule::StaleException)), [4, 5, 6, 7]);
    assert_eq!(at(found(&inp, Rule::BadException)), [8, 9, 10]);
    assert!(
        found(&inp, Rule::StaleException)
            .iter()
            .all(|(p, _)| p == EXCEPTIONS_FILE)
    );
}

#[test]
fn lint_header_is_only_in_the_workspace() {
    let header = "//! a\n#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::dbg_macro))]\n#![doc = \"x\"]\n#![warn(missing_docs)]\npub fn f() {}\n";
    let mut inp = input(&[
        (
            "crates/a/src/m.rs",
            "#![allow(clippy::neg_multiply)]\n".into(),
        ),
        (
            "crates/a/src/bin/tool.rs",
            "#![allow(dead_code)]\nfn main() {}\n".into(),
        ),
        (
            "crates/a/tests/t.rs",
            "#![allow(clippy::unwrap_used)]\n".into(),
        ),
    ]);
    inp.files
        .insert("crates/a/src/lib.rs".into(), header.into());
    let r = check(&inp);
    let v: Vec<&Violation> = r
        .violations
        .iter()
        .filter(|v| v.rule == Rule::LintHeader)
        .collect();
    let at: Vec<(&str, usize)> = v.iter().map(|v| (v.path.as_str(), v.line)).collect();
    assert_eq!(
        at,
        [
            ("crates/a/src/bin/tool.rs", 1),
            ("crates/a/src/lib.rs", 2),
            ("crates/a/src/lib.rs", 4)
        ]
    );
    assert!(
        v[1].message.contains("cfg_attr(not(test))"),
        "{}",
        v[1].message
    );
    assert!(
        v[1].message
            .contains("duplicates the workspace's clippy::dbg_macro")
    );
    inp.manifests
        .insert("crates/a".into(), "[package]\nname = \"moment-a\"\n".into());
    assert!(found(&inp, Rule::LintHeader).contains(&("crates/a/Cargo.toml".into(), 1)));
}

#[test]
fn every_module_is_in_the_code_map() {
    let files = [
        "crates/a/src/m.rs",
        "crates/a/src/missing.rs",
        "crates/a/src/d/mod.rs",
        "crates/a/src/d/x.rs",
        "crates/a/src/d/y.rs",
        "crates/a/src/e.rs",
        "crates/a/src/e/f.rs",
        "crates/a/src/e/g.rs",
        "crates/a/src/h/mod.rs",
        "crates/a/src/h/i.rs",
        "crates/a/src/h/i/j.rs",
        "crates/a/src/bin/tool.rs",
        "crates/a/tests/t.rs",
    ];
    let mut files: Vec<(&str, String)> = files.iter().map(|p| (*p, String::new())).collect();
    files[0].1 = "#[cfg(test)]\nmod t;\n".into();
    files.push(("crates/a/src/m/t.rs", String::new())); // test code: needs no entry
    let mut inp = input(&files);
    inp.architecture = Some(
        "## Code map\n\n**`crates/a/`.** `m.rs`, `src/d/` (all of it), `e.rs`, `e::f`,\n\
         `crate::h::i`, `h/i/j.rs` \n`crates/a/src/h/mod.rs` \n\n**`crates/b`.** `missing.rs`\n\n## Next\n`crates/a/src/e/g.rs`\n"
            .into(),
    );
    let paths: Vec<String> = found(&inp, Rule::CodeMap)
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    assert_eq!(paths, ["crates/a/src/e/g.rs", "crates/a/src/missing.rs"]);
    // `h` is named by its full path, `h::i` by `crate::h::i`; a bare word names nothing.
    inp.architecture = Some("## Code map\n\n**`crates/a`.** `m`\n".into());
    assert_eq!(found(&inp, Rule::CodeMap).len(), 11);
    inp.architecture = None;
    assert_eq!(found(&inp, Rule::CodeMap), [(ARCHITECTURE_FILE.into(), 1)]);
}

#[test]
fn import_cycles_are_found_with_their_references() {
    let files = [
        (
            "crates/a/src/lib.rs",
            "pub mod a;\npub mod b;\npub mod c;\npub use a::{Name as Alias, Other};\n",
        ),
        (
            "crates/a/src/a.rs",
            "use crate::{b::X, self as _};\npub struct Name;\npub struct Other;\n#[cfg(test)]\nmod tests {\n    use crate::c::Z;\n}\n",
        ),
        (
            "crates/a/src/b/mod.rs",
            "mod inner;\npub struct X;\nmod local { use super::X; }\n",
        ),
        (
            "crates/a/src/b/inner.rs",
            "use super::X;\n\nfn f() -> super::super::a::Name { todo!() }\n",
        ),
        (
            "crates/a/src/c.rs",
            "pub struct Z;\nfn g() { let _ = crate::Alias; }\n#[cfg(test)]\nuse super::a::Other;\n",
        ),
    ];
    let files: Vec<(&str, String)> = files.iter().map(|(p, t)| (*p, (*t).to_string())).collect();
    let inp = input(&files);
    let r = check(&inp);
    let cycles: Vec<&Violation> = r
        .violations
        .iter()
        .filter(|v| v.rule == Rule::ImportCycle)
        .collect();
    assert_eq!(cycles.len(), 1, "{cycles:?}");
    let v = cycles[0];
    assert_eq!((v.path.as_str(), v.line), ("crates/a/src/a.rs", 1));
    assert_eq!(v.message, "moment-a: a -> b -> a");
    let notes = v.notes.join("\n");
    assert!(
        notes.contains("crates/a/src/a.rs:1: crate::b::X"),
        "{notes}"
    );
    assert!(
        notes.contains("crates/a/src/b/inner.rs:3: super::super::a::Name"),
        "{notes}"
    );
    // c -> a (through the re-export `Alias`) alone is no cycle: a -> c is test code only.
    let mut inp = inp;
    inp.files.insert(
        "crates/a/src/a.rs".into(),
        "pub struct Name;\npub struct Other;\nfn h() { crate::c::Z; }\n".into(),
    );
    let r = check(&inp);
    let msgs: Vec<&str> = r
        .violations
        .iter()
        .filter(|v| v.rule == Rule::ImportCycle)
        .map(|v| v.message.as_str())
        .collect();
    assert_eq!(msgs, ["moment-a: a -> c -> a"]);
}

#[test]
fn cycles_are_listed_once_each() {
    let mut edges: BTreeMap<(String, String), Vec<cycles::Site>> = BTreeMap::new();
    for (a, b) in [("x", "y"), ("y", "x"), ("y", "z"), ("z", "x"), ("z", "w")] {
        edges.insert((a.into(), b.into()), Vec::new());
    }
    let found = cycles::cycles(&edges);
    assert_eq!(found, [vec!["x", "y"], vec!["x", "y", "z"]]);
}

#[test]
fn an_empty_scan_fails() {
    let mut inp = input(&[]);
    inp.files.clear();
    assert_eq!(found(&inp, Rule::Scan), [("Cargo.toml".into(), 1)]);
    inp.files
        .insert("crates/a/src/lib.rs".into(), "//! no fns\n".into());
    assert_eq!(found(&inp, Rule::Scan), [("Cargo.toml".into(), 1)]);
    inp.files
        .insert("crates/a/src/lib.rs".into(), "fn f() {\n".into());
    assert_eq!(found(&inp, Rule::Scan).len(), 2);
}

#[test]
fn use_trees_and_members_parse() {
    let toks: Vec<scan::Tok> = scan::lex("pub use a::{b::{C, D as E}, self, f::*};")
        .expect("lexes")
        .into_iter()
        .map(|t| t.tok)
        .collect();
    let flat: Vec<(String, String)> = scan::flatten_use(&toks[2..toks.len() - 1])
        .into_iter()
        .map(|(p, b)| (p.join("::"), b))
        .collect();
    let want = [
        ("a::b::C", "C"),
        ("a::b::D", "E"),
        ("a::self", "self"),
        ("a::f", "*"),
    ];
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(p, b)| (p.to_string(), b.to_string()))
        .collect();
    assert_eq!(flat, want);
    let root = "[workspace]\n# members = [\"old\"]\nresolver = \"3\"\nmembers = [\n    \"crates/a\",\n    \"examples/\",\n]\ndefault-members = [\"x\"]\n";
    assert_eq!(workspace_members(root), ["crates/a", "examples"]);
}

/// The real workspace: files and fns are found, and every file scans (the lexer copes
/// with all of the project's code).
#[test]
fn the_workspace_scans() {
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let inp = load(root).expect("loads");
    let r = check(&inp);
    assert!(
        r.files > 50 && r.fns > 500,
        "{} files, {} fns",
        r.files,
        r.fns
    );
    let scan_errors: Vec<String> = r
        .violations
        .iter()
        .filter(|v| v.rule == Rule::Scan)
        .map(|v| v.to_string())
        .collect();
    assert!(scan_errors.is_empty(), "{scan_errors:?}");
    assert!(inp.files.contains_key("xtask/src/tidy.rs"));
}
