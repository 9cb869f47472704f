//! `docs/memory.md` holds the table the accounting API produces today.
// Tests may unwrap and panic (the workspace lints deny it in library code).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable
)]

#[test]
fn docs_memory_table_is_current() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/memory.md"))
        .expect("docs/memory.md exists");
    let begin = "<!-- memory-table:begin -->\n";
    let start = doc.find(begin).expect("begin marker") + begin.len();
    let end = doc.find("<!-- memory-table:end -->").expect("end marker");
    let table = moment_examples::memory::table().unwrap();
    assert_eq!(
        doc[start..end].trim(),
        table.trim(),
        "docs/memory.md is stale: regenerate it with `cargo run -p moment-examples --bin memory-table`"
    );
}

#[test]
fn table_states_the_known_asymptotes() {
    // Independent of the doc: the numbers the algorithms promise for a 1024×1024 matrix.
    let t = moment_examples::memory::table().unwrap();
    let row = |label: &str| -> Vec<f64> {
        let line = t
            .lines()
            .find(|l| l.starts_with(&format!("| {label} |")))
            .unwrap();
        line.split('|')
            .skip(2)
            .filter(|c| !c.trim().is_empty())
            .map(|c| c.trim().parse().unwrap())
            .collect()
    };
    assert_eq!(row("Adam / AdamW (torch)")[4], 8.0);
    assert_eq!(row("8-bit Adam / AdamW (bnb)")[4], 2.031);
    assert_eq!(row("Adafactor (transformers / torch)")[4], 0.008);
}
