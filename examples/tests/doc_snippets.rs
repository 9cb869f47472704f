//! Every Rust code block in README.md and docs/ is code that CI compiles and runs: it must be,
//! word for word (after removing common indentation), a `// snippet` … `// end snippet`
//! region of one of the snippet examples.
// Tests may unwrap and panic (the workspace lints deny it in library code).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable
)]

use std::path::{Path, PathBuf};

/// The examples whose `// snippet` regions the docs show.
const SNIPPET_SOURCES: &[&str] = &[
    "examples/examples/readme.rs",
    "examples/examples/readme_cuda.rs",
    "crates/dist/examples/doc_snippets.rs",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Lines without their common leading whitespace, trailing whitespace removed.
fn dedent(lines: &[&str]) -> String {
    let indent = lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    lines
        .iter()
        .map(|l| l.get(indent..).unwrap_or("").trim_end())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The ```` ```rust ```` blocks of a markdown file, with their line numbers.
fn rust_blocks(text: &str) -> Vec<(usize, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut blocks = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim_start().starts_with("```rust") {
            let start = i + 1;
            let mut end = start;
            while end < lines.len() && !lines[end].trim_start().starts_with("```") {
                end += 1;
            }
            blocks.push((start, dedent(&lines[start..end])));
            i = end;
        }
        i += 1;
    }
    blocks
}

/// The `// snippet` regions of a source file.
fn regions(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim() == "// snippet" {
            let start = i + 1;
            let mut end = start;
            while end < lines.len() && lines[end].trim() != "// end snippet" {
                end += 1;
            }
            assert!(end < lines.len(), "an unterminated `// snippet` region");
            out.push(dedent(&lines[start..end]));
            i = end;
        }
        i += 1;
    }
    out
}

fn markdown_files() -> Vec<PathBuf> {
    let mut files = vec![root().join("README.md")];
    let mut dirs = vec![root().join("docs")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

#[test]
fn every_rust_block_in_the_docs_is_compiled_code() {
    let regions: Vec<String> = SNIPPET_SOURCES
        .iter()
        .flat_map(|f| regions(&std::fs::read_to_string(root().join(f)).unwrap()))
        .collect();
    assert!(regions.len() >= 10, "{} snippet regions", regions.len());
    let mut checked = 0;
    let mut missing = Vec::new();
    for file in markdown_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        for (line, block) in rust_blocks(&text) {
            checked += 1;
            if !regions.contains(&block) {
                missing.push(format!("{}:{line}:\n{block}", file.display()));
            }
        }
    }
    assert!(
        checked >= 10,
        "only {checked} Rust blocks found in the docs"
    );
    assert!(
        missing.is_empty(),
        "Rust blocks that are not a `// snippet` region of {SNIPPET_SOURCES:?} (edit both):\n\n{}",
        missing.join("\n\n")
    );
}

/// The checker itself: a block differing by one character is not a region.
#[test]
fn a_changed_block_is_caught() {
    let source = "fn f() {\n    // snippet\n    let x = 1;\n    x + 1\n    // end snippet\n}\n";
    let regions = regions(source);
    assert_eq!(regions, vec!["let x = 1;\nx + 1".to_string()]);
    let doc = "text\n```rust\nlet x = 1;\nx + 1\n```\n```rust\nlet x = 2;\n```\n";
    let blocks = rust_blocks(doc);
    assert_eq!(blocks.len(), 2);
    assert!(regions.contains(&blocks[0].1));
    assert!(!regions.contains(&blocks[1].1));
}
