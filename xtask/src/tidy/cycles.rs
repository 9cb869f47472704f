//! The import-cycle rule: the graph of a crate's top-level modules and its cycles.

use std::collections::{BTreeMap, BTreeSet};

use super::scan::{Anchor, FileScan, flatten_use};
use super::{MAX_CYCLES, MAX_SITES, Member, Rule, Violation};

/// A reference that makes an edge of the module graph.
pub(super) struct Site {
    path: String,
    line: usize,
    text: String,
}

pub(super) fn check_cycles(
    m: &Member,
    scans: &BTreeMap<&str, FileScan>,
    test_files: &BTreeSet<&str>,
    out: &mut Vec<Violation>,
) {
    let files: Vec<(&str, Vec<String>, &FileScan)> = scans
        .iter()
        .filter_map(|(p, s)| Some((*p, m.module_path(p)?, s)))
        .collect();
    let tops: BTreeSet<String> = files
        .iter()
        .filter_map(|(_, mp, _)| mp.first().cloned())
        .collect();
    // `pub use y::Name;` at the crate root: `crate::Name` is an item of `y`.
    let mut reexports: BTreeMap<String, String> = BTreeMap::new();
    for (_, _, s) in files.iter().filter(|(_, mp, _)| mp.is_empty()) {
        for u in &s.file_uses {
            for (path, binding) in flatten_use(u) {
                let path: Vec<&String> = path
                    .iter()
                    .skip_while(|p| *p == "crate" || *p == "self")
                    .collect();
                if let Some(top) = path
                    .first()
                    .filter(|t| tops.contains(**t) && binding != "*")
                {
                    reexports.insert(binding, (*top).clone());
                }
            }
        }
    }
    let resolve = |name: &str| {
        tops.get(name)
            .cloned()
            .or_else(|| reexports.get(name).cloned())
    };
    let mut edges: BTreeMap<(String, String), Vec<Site>> = BTreeMap::new();
    for (path, mp, s) in &files {
        if test_files.contains(path) {
            continue;
        }
        for r in s.refs.iter().filter(|r| !r.test) {
            let here: Vec<String> = mp.iter().chain(&r.scope).cloned().collect();
            let Some(from) = here.first() else { continue };
            let to = match r.anchor {
                Anchor::Crate => resolve(&r.first),
                Anchor::Super(n) if n < here.len() => Some(here[0].clone()),
                Anchor::Super(n) if n == here.len() => resolve(&r.first),
                Anchor::Super(_) => None,
            };
            if let Some(to) = to.filter(|t| t != from) {
                let site = Site {
                    path: path.to_string(),
                    line: r.line,
                    text: r.text.clone(),
                };
                edges.entry((from.clone(), to)).or_default().push(site);
            }
        }
    }
    for cycle in cycles(&edges) {
        let first = &edges[&(cycle[0].clone(), cycle[1].clone())][0];
        let msg = format!("{}: {} -> {}", m.name, cycle.join(" -> "), cycle[0]);
        let mut v = Violation::new(&first.path, first.line, Rule::ImportCycle, msg);
        for (k, from) in cycle.iter().enumerate() {
            let to = &cycle[(k + 1) % cycle.len()];
            let sites = &edges[&(from.clone(), to.clone())];
            v.notes
                .push(format!("{from} -> {to} ({} reference(s)):", sites.len()));
            for s in sites.iter().take(MAX_SITES) {
                v.notes.push(format!("  {}:{}: {}", s.path, s.line, s.text));
            }
            if sites.len() > MAX_SITES {
                v.notes
                    .push(format!("  … and {} more", sites.len() - MAX_SITES));
            }
        }
        out.push(v);
    }
}

/// The elementary cycles of the graph (each once, starting at its smallest module), at most
/// [`MAX_CYCLES`] per strongly connected group.
pub(super) fn cycles(edges: &BTreeMap<(String, String), Vec<Site>>) -> Vec<Vec<String>> {
    let nodes: Vec<&String> = edges
        .keys()
        .flat_map(|(a, b)| [a, b])
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let idx = |n: &String| nodes.iter().position(|m| *m == n).unwrap_or(0);
    let mut adj = vec![Vec::new(); nodes.len()];
    for (a, b) in edges.keys() {
        adj[idx(a)].push(idx(b));
    }
    let reach: Vec<Vec<bool>> = (0..nodes.len())
        .map(|s| {
            let (mut seen, mut todo) = (vec![false; nodes.len()], vec![s]);
            while let Some(v) = todo.pop() {
                for &w in &adj[v] {
                    if !seen[w] {
                        seen[w] = true;
                        todo.push(w);
                    }
                }
            }
            seen
        })
        .collect();
    let mut out = Vec::new();
    let mut done = vec![false; nodes.len()];
    for s in 0..nodes.len() {
        if done[s] || !reach[s][s] {
            continue;
        }
        let group: Vec<usize> = (0..nodes.len())
            .filter(|&v| reach[s][v] && reach[v][s])
            .collect();
        let mut found: Vec<Vec<usize>> = Vec::new();
        let mut budget = 100_000usize;
        for &start in &group {
            let mut path = vec![start];
            dfs(start, &adj, &group, &mut path, &mut found, &mut budget);
        }
        for &v in &group {
            done[v] = true;
        }
        out.extend(
            found
                .into_iter()
                .map(|c| c.into_iter().map(|v| nodes[v].clone()).collect()),
        );
    }
    out
}

fn dfs(
    start: usize,
    adj: &[Vec<usize>],
    group: &[usize],
    path: &mut Vec<usize>,
    found: &mut Vec<Vec<usize>>,
    budget: &mut usize,
) {
    let Some(&v) = path.last() else { return };
    for &w in &adj[v] {
        if found.len() >= MAX_CYCLES || *budget == 0 {
            return;
        }
        *budget -= 1;
        if w == start {
            found.push(path.clone());
        } else if w > start && group.contains(&w) && !path.contains(&w) {
            path.push(w);
            dfs(start, adj, group, path, found, budget);
            path.pop();
        }
    }
}
