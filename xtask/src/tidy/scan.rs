//! The scanner: a small Rust lexer (literals, lifetimes and comments skipped) and a
//! brace-matching pass that finds fns, test code, file-level attributes and `use`s, and the
//! paths naming other modules of the crate.

use std::collections::HashMap;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Tok {
    Ident(String),
    Punct(char),
    /// `::`
    PathSep,
    Lifetime,
    Literal,
}

#[derive(Clone, Debug)]
pub(super) struct Token {
    pub(super) tok: Tok,
    pub(super) line: usize,
}

fn is_ident_start(c: char) -> bool {
    c == '_' || c.is_alphabetic()
}

pub(super) fn is_ident_continue(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

/// Index after the closing `quote` of a literal whose body starts at `i` (escapes skipped).
fn skip_quoted(s: &[char], mut i: usize, quote: char, line: &mut usize) -> Option<usize> {
    while i < s.len() {
        match s[i] {
            '\\' => {
                if s.get(i + 1) == Some(&'\n') {
                    *line += 1;
                }
                i += 2;
            }
            c if c == quote => return Some(i + 1),
            c => {
                if c == '\n' {
                    *line += 1;
                }
                i += 1;
            }
        }
    }
    None
}

/// Index after a raw string whose hashes start at `i` (`r` already read), or `None` if `i`
/// does not start one.
fn skip_raw(s: &[char], i: usize, line: &mut usize) -> Option<Result<usize, ()>> {
    let hashes = s[i..].iter().take_while(|&&c| c == '#').count();
    if s.get(i + hashes) != Some(&'"') {
        return None;
    }
    let mut j = i + hashes + 1;
    while j < s.len() {
        if s[j] == '"'
            && s[j + 1..]
                .iter()
                .take(hashes)
                .filter(|&&c| c == '#')
                .count()
                == hashes
        {
            return Some(Ok(j + 1 + hashes));
        }
        if s[j] == '\n' {
            *line += 1;
        }
        j += 1;
    }
    Some(Err(()))
}

/// Tokens of Rust source; `Err((line, why))` for an unterminated literal or comment.
pub(super) fn lex(src: &str) -> Result<Vec<Token>, (usize, &'static str)> {
    let s: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    let unterminated = |l| (l, "unterminated literal");
    while i < s.len() {
        let (c, at) = (s[i], line);
        let next = s.get(i + 1).copied();
        let tok = match c {
            '\n' => {
                line += 1;
                i += 1;
                continue;
            }
            c if c.is_whitespace() => {
                i += 1;
                continue;
            }
            '/' if next == Some('/') => {
                while i < s.len() && s[i] != '\n' {
                    i += 1;
                }
                continue;
            }
            '/' if next == Some('*') => {
                let mut depth = 0;
                loop {
                    match (s.get(i), s.get(i + 1)) {
                        (None, _) => return Err((at, "unterminated block comment")),
                        (Some('/'), Some('*')) => (depth, i) = (depth + 1, i + 2),
                        (Some('*'), Some('/')) => (depth, i) = (depth - 1, i + 2),
                        (Some(c), _) => {
                            line += usize::from(*c == '\n');
                            i += 1;
                        }
                    }
                    if depth == 0 {
                        break;
                    }
                }
                continue;
            }
            '"' => {
                i = skip_quoted(&s, i + 1, '"', &mut line).ok_or(unterminated(at))?;
                Tok::Literal
            }
            '\'' if next == Some('\\') => {
                i = skip_quoted(&s, i + 1, '\'', &mut line).ok_or(unterminated(at))?;
                Tok::Literal
            }
            '\'' if s.get(i + 2) == Some(&'\'') => {
                i += 3;
                Tok::Literal
            }
            '\'' => {
                i += 1;
                while i < s.len() && is_ident_continue(s[i]) {
                    i += 1;
                }
                Tok::Lifetime
            }
            c if is_ident_start(c) => {
                let start = i;
                while i < s.len() && is_ident_continue(s[i]) {
                    i += 1;
                }
                let word: String = s[start..i].iter().collect();
                let after = s.get(i).copied();
                match (word.as_str(), after) {
                    ("r" | "br" | "cr", Some('"' | '#')) => match skip_raw(&s, i, &mut line) {
                        Some(end) => {
                            i = end.map_err(|()| unterminated(at))?;
                            Tok::Literal
                        }
                        None if word == "r" && s.get(i + 1).is_some_and(|&c| is_ident_start(c)) => {
                            let start = i + 1;
                            i = start;
                            while i < s.len() && is_ident_continue(s[i]) {
                                i += 1;
                            }
                            Tok::Ident(s[start..i].iter().collect())
                        }
                        None => Tok::Ident(word),
                    },
                    ("b" | "c", Some('"')) | ("b", Some('\'')) => {
                        let q = s[i];
                        i = skip_quoted(&s, i + 1, q, &mut line).ok_or(unterminated(at))?;
                        Tok::Literal
                    }
                    _ => Tok::Ident(word),
                }
            }
            c if c.is_ascii_digit() => {
                while i < s.len()
                    && (is_ident_continue(s[i])
                        || (s[i] == '.' && s.get(i + 1).is_some_and(char::is_ascii_digit)))
                {
                    i += 1;
                }
                Tok::Literal
            }
            ':' if next == Some(':') => {
                i += 2;
                Tok::PathSep
            }
            c => {
                i += 1;
                Tok::Punct(c)
            }
        };
        out.push(Token { tok, line: at });
    }
    Ok(out)
}

#[derive(Debug)]
pub(super) struct FnItem {
    pub(super) name: String,
    pub(super) start: usize,
    pub(super) end: usize,
    pub(super) test: bool,
}

/// Where a path starts: `crate::` or `super::` (repeated).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Anchor {
    Crate,
    Super(usize),
}

/// A path naming something from elsewhere in the crate.
#[derive(Debug)]
pub(super) struct PathRef {
    pub(super) line: usize,
    /// Inline modules (`mod x { … }`) around the reference, outermost first.
    pub(super) scope: Vec<String>,
    pub(super) anchor: Anchor,
    /// First segment after the anchor (`*` for a glob).
    pub(super) first: String,
    pub(super) text: String,
    pub(super) test: bool,
}

/// What the checks need from one file.
#[derive(Debug, Default)]
pub(super) struct FileScan {
    pub(super) lines: usize,
    pub(super) test_lines: usize,
    pub(super) whole_file_test: bool,
    pub(super) fns: Vec<FnItem>,
    /// Inner attributes at file level: (line, tokens inside the brackets).
    pub(super) file_attrs: Vec<(usize, Vec<Tok>)>,
    pub(super) refs: Vec<PathRef>,
    /// File-level `use` trees (tokens between `use` and `;`).
    pub(super) file_uses: Vec<Vec<Tok>>,
    /// `#[cfg(test)] mod x;` declarations: scope and name.
    pub(super) test_mod_decls: Vec<Vec<String>>,
}

enum Kind {
    Fn(String, usize),
    Mod(String),
    Other,
}

struct Region {
    kind: Kind,
    test: bool,
    start: usize,
}

fn pred_is_test(p: &[Tok]) -> bool {
    match p {
        [Tok::Ident(t)] => t == "test",
        [
            Tok::Ident(all),
            Tok::Punct('('),
            inner @ ..,
            Tok::Punct(')'),
        ] if all == "all" => split_top(inner, ',').iter().any(|e| pred_is_test(e)),
        _ => false,
    }
}

/// `cfg(test)` or `cfg(all(…, test, …))`.
fn is_cfg_test(attr: &[Tok]) -> bool {
    match attr {
        [Tok::Ident(cfg), Tok::Punct('('), pred @ .., Tok::Punct(')')] if cfg == "cfg" => {
            pred_is_test(pred)
        }
        _ => false,
    }
}

/// `#[test]`, `#[some::test]`, or `cfg(test)`.
fn is_test_attr(attr: &[Tok]) -> bool {
    let test_fn = matches!(attr.last(), Some(Tok::Ident(t)) if t == "test")
        && attr
            .iter()
            .all(|t| matches!(t, Tok::Ident(_) | Tok::PathSep));
    test_fn || is_cfg_test(attr)
}

/// `toks` split at `sep` outside brackets.
pub(super) fn split_top(toks: &[Tok], sep: char) -> Vec<&[Tok]> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (k, t) in toks.iter().enumerate() {
        match t {
            Tok::Punct('(' | '[' | '{') => depth += 1,
            Tok::Punct(')' | ']' | '}') => depth -= 1,
            Tok::Punct(c) if *c == sep && depth == 0 => {
                out.push(&toks[start..k]);
                start = k + 1;
            }
            _ => {}
        }
    }
    if start < toks.len() {
        out.push(&toks[start..]);
    }
    out
}

/// Index of the `{` opening the body of the fn whose signature starts at `k`; `None` for a
/// declaration (`;`).
fn fn_body(toks: &[Token], mut k: usize) -> Option<usize> {
    let mut depth = 0i32;
    while let Some(t) = toks.get(k) {
        match t.tok {
            Tok::Punct('(' | '[') => depth += 1,
            Tok::Punct(')' | ']') => depth -= 1,
            Tok::Punct('{') if depth == 0 => return Some(k),
            Tok::Punct(';' | '}') if depth == 0 => return None,
            _ => {}
        }
        k += 1;
    }
    None
}

/// The first segments named by the path (or `use` group) starting at `k`, with a short text.
fn path_firsts(toks: &[Token], k: usize) -> Vec<(String, String)> {
    let seg = |k: usize| -> Option<(String, String)> {
        let Tok::Ident(a) = &toks.get(k)?.tok else {
            return match toks.get(k)?.tok {
                Tok::Punct('*') => Some(("*".into(), "*".into())),
                _ => None,
            };
        };
        let text = match (
            toks.get(k + 1).map(|t| &t.tok),
            toks.get(k + 2).map(|t| &t.tok),
        ) {
            (Some(Tok::PathSep), Some(Tok::Ident(b))) => format!("{a}::{b}"),
            (Some(Tok::PathSep), Some(Tok::Punct('{'))) => format!("{a}::{{…}}"),
            _ => a.clone(),
        };
        Some((a.clone(), text))
    };
    if toks.get(k).map(|t| &t.tok) != Some(&Tok::Punct('{')) {
        return seg(k).into_iter().collect();
    }
    let (mut out, mut depth, mut at_start) = (Vec::new(), 0, false);
    for (j, t) in toks.iter().enumerate().skip(k) {
        match t.tok {
            Tok::Punct('{') => {
                depth += 1;
                if depth == 1 {
                    at_start = true;
                    continue;
                }
            }
            Tok::Punct('}') => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            Tok::Punct(',') if depth == 1 => {
                at_start = true;
                continue;
            }
            _ if depth == 1 && at_start => out.extend(seg(j).filter(|(a, _)| a != "self")),
            _ => {}
        }
        at_start = false;
    }
    out
}

/// Scans one file: its fns, test regions, file-level attributes and `use`s, and the paths
/// that name other modules of its crate. `Err((line, why))` if its braces do not match.
pub(super) fn scan(text: &str) -> Result<FileScan, (usize, &'static str)> {
    let toks = lex(text)?;
    let mut s = Scanner {
        toks: &toks,
        fs: FileScan {
            lines: text.lines().count(),
            ..FileScan::default()
        },
        stack: Vec::new(),
        pending: Vec::new(),
        fn_bodies: HashMap::new(),
        mod_bodies: HashMap::new(),
    };
    let mut i = 0;
    while i < toks.len() {
        i = s.step(i)?;
    }
    match s.stack.last() {
        Some(r) => Err((r.start, "unclosed `{`")),
        None => Ok(s.fs),
    }
}

/// The state of [`scan`].
struct Scanner<'t> {
    toks: &'t [Token],
    fs: FileScan,
    /// Open braces, innermost last.
    stack: Vec<Region>,
    /// Outer attributes since the last `;`, `{` or `}` (those of the next item).
    pending: Vec<(usize, Vec<Tok>)>,
    /// Index of a fn body's `{` → (name, line of `fn`, test).
    fn_bodies: HashMap<usize, (String, usize, bool)>,
    /// Index of an inline module's `{` → (name, test).
    mod_bodies: HashMap<usize, (String, bool)>,
}

impl Scanner<'_> {
    fn tok(&self, k: usize) -> Option<&Tok> {
        self.toks.get(k).map(|t| &t.tok)
    }

    fn in_test(&self) -> bool {
        self.fs.whole_file_test || self.stack.iter().any(|r| r.test)
    }

    fn pending_has(&self, pred: fn(&[Tok]) -> bool) -> bool {
        self.pending.iter().any(|(_, a)| pred(a))
    }

    /// The inline modules around the current token.
    fn scope(&self) -> Vec<String> {
        let mods = self.stack.iter().filter_map(|r| match &r.kind {
            Kind::Mod(m) => Some(m.clone()),
            _ => None,
        });
        mods.collect()
    }

    /// Handles the token at `i`; returns the index of the next one to look at.
    fn step(&mut self, i: usize) -> Result<usize, (usize, &'static str)> {
        let line = self.toks[i].line;
        match &self.toks[i].tok {
            Tok::Punct('#') => return Ok(self.attribute(i)),
            Tok::Ident(w) if w == "fn" => {
                if let (Some(Tok::Ident(name)), Some(body)) =
                    (self.tok(i + 1), fn_body(self.toks, i + 2))
                {
                    let test = self.pending_has(is_test_attr);
                    self.fn_bodies.insert(body, (name.clone(), line, test));
                }
            }
            Tok::Ident(w) if w == "mod" => match (self.tok(i + 1), self.tok(i + 2)) {
                (Some(Tok::Ident(name)), Some(Tok::Punct('{'))) => {
                    let test = self.pending_has(is_cfg_test);
                    self.mod_bodies.insert(i + 2, (name.clone(), test));
                }
                (Some(Tok::Ident(name)), Some(Tok::Punct(';')))
                    if self.pending_has(is_cfg_test) =>
                {
                    let mut path = self.scope();
                    path.push(name.clone());
                    self.fs.test_mod_decls.push(path);
                }
                _ => {}
            },
            Tok::Ident(w) if w == "use" && self.stack.is_empty() => {
                let end = (i..self.toks.len()).find(|&k| self.toks[k].tok == Tok::Punct(';'));
                let tree = &self.toks[i + 1..end.unwrap_or(self.toks.len())];
                self.fs
                    .file_uses
                    .push(tree.iter().map(|t| t.tok.clone()).collect());
            }
            Tok::Ident(w)
                if (w == "crate" || w == "super")
                    && self.tok(i + 1) == Some(&Tok::PathSep)
                    && (i == 0 || self.tok(i - 1) != Some(&Tok::PathSep)) =>
            {
                return Ok(self.path(i));
            }
            Tok::Punct('{') => self.open(i),
            Tok::Punct('}') => self.close(line)?,
            Tok::Punct(';') => self.pending.clear(),
            _ => {}
        }
        Ok(i + 1)
    }

    /// An attribute starting at `i` (`#`): kept for the next item, or as a file-level one.
    fn attribute(&mut self, i: usize) -> usize {
        let inner = self.tok(i + 1) == Some(&Tok::Punct('!'));
        let open = i + 1 + usize::from(inner);
        if self.tok(open) != Some(&Tok::Punct('[')) {
            return i + 1;
        }
        let mut depth = 0;
        let close = (open..self.toks.len()).find(|&k| {
            match self.toks[k].tok {
                Tok::Punct('[') => depth += 1,
                Tok::Punct(']') => depth -= 1,
                _ => {}
            }
            depth == 0
        });
        let Some(close) = close else {
            return i + 1;
        };
        let attr: Vec<Tok> = self.toks[open + 1..close]
            .iter()
            .map(|t| t.tok.clone())
            .collect();
        let line = self.toks[i].line;
        if !inner {
            self.pending.push((line, attr));
        } else if self.stack.is_empty() {
            self.fs.whole_file_test |= is_cfg_test(&attr);
            self.fs.file_attrs.push((line, attr));
        }
        close + 1
    }

    /// A path starting at `i` with `crate::` or `super::`: one reference per first segment.
    fn path(&mut self, i: usize) -> usize {
        let mut k = i;
        let mut supers = 0;
        while matches!(self.tok(k), Some(Tok::Ident(s)) if s == "super")
            && self.tok(k + 1) == Some(&Tok::PathSep)
        {
            supers += 1;
            k += 2;
        }
        let (anchor, prefix, k) = if supers == 0 {
            (Anchor::Crate, "crate::".to_string(), i + 2)
        } else {
            (Anchor::Super(supers), "super::".repeat(supers), k)
        };
        let test = self.in_test() || self.pending_has(is_test_attr);
        for (first, text) in path_firsts(self.toks, k) {
            self.fs.refs.push(PathRef {
                line: self.toks[i].line,
                scope: self.scope(),
                anchor,
                first,
                text: format!("{prefix}{text}"),
                test,
            });
        }
        k
    }

    /// A `{` at `i`: a fn body, an inline module, or another block (test code if its item is
    /// `#[cfg(test)]`).
    fn open(&mut self, i: usize) {
        let line = self.toks[i].line;
        let attr_line = self.pending.first().map_or(line, |(l, _)| *l);
        let (kind, test, start) = if let Some((name, fn_line, test)) = self.fn_bodies.remove(&i) {
            (Kind::Fn(name, fn_line), test, attr_line.min(fn_line))
        } else if let Some((name, test)) = self.mod_bodies.remove(&i) {
            (Kind::Mod(name), test, attr_line)
        } else {
            (Kind::Other, self.pending_has(is_cfg_test), attr_line)
        };
        self.stack.push(Region { kind, test, start });
        self.pending.clear();
    }

    /// A `}` on `line`: closes a region, recording a fn and the lines of test code.
    fn close(&mut self, line: usize) -> Result<(), (usize, &'static str)> {
        let r = self.stack.pop().ok_or((line, "unmatched `}`"))?;
        let enclosing = self.in_test();
        if let Kind::Fn(name, start) = r.kind {
            let test = r.test || enclosing;
            self.fs.fns.push(FnItem {
                name,
                start,
                end: line,
                test,
            });
        }
        if r.test && !enclosing {
            self.fs.test_lines += line + 1 - r.start;
        }
        self.pending.clear();
        Ok(())
    }
}

/// Text of tokens (for messages).
pub(super) fn render(toks: &[Tok]) -> String {
    let mut s = String::new();
    for t in toks {
        match t {
            Tok::Ident(w) => {
                if s.ends_with(|c: char| is_ident_continue(c)) {
                    s.push(' ');
                }
                s.push_str(w);
            }
            Tok::PathSep => s.push_str("::"),
            Tok::Punct(',') => s.push_str(", "),
            Tok::Punct(c) => s.push(*c),
            Tok::Lifetime => s.push_str("'_"),
            Tok::Literal => s.push_str("\"…\""),
        }
    }
    s
}

/// `use` tree → (path, binding) pairs.
pub(super) fn flatten_use(toks: &[Tok]) -> Vec<(Vec<String>, String)> {
    fn tree(
        t: &[Tok],
        pos: &mut usize,
        prefix: &mut Vec<String>,
        out: &mut Vec<(Vec<String>, String)>,
    ) {
        let base = prefix.len();
        loop {
            match t.get(*pos) {
                Some(Tok::PathSep) => *pos += 1,
                Some(Tok::Ident(s)) if s == "pub" || s == "use" => *pos += 1,
                Some(Tok::Ident(s)) => {
                    prefix.push(s.clone());
                    *pos += 1;
                    if t.get(*pos) == Some(&Tok::PathSep) {
                        continue;
                    }
                    let mut binding = s.clone();
                    if let (Some(Tok::Ident(a)), Some(Tok::Ident(b))) =
                        (t.get(*pos), t.get(*pos + 1))
                        && a == "as"
                    {
                        binding = b.clone();
                        *pos += 2;
                    }
                    out.push((prefix.clone(), binding));
                    break;
                }
                Some(Tok::Punct('{')) => {
                    *pos += 1;
                    while let Some(t0) = t.get(*pos) {
                        match t0 {
                            Tok::Punct('}') => break,
                            Tok::Punct(',') => *pos += 1,
                            _ => {
                                let before = *pos;
                                tree(t, pos, prefix, out);
                                if *pos == before {
                                    *pos += 1;
                                }
                            }
                        }
                    }
                    *pos += 1;
                    break;
                }
                Some(Tok::Punct('*')) => {
                    *pos += 1;
                    out.push((prefix.clone(), "*".into()));
                    break;
                }
                _ => break,
            }
        }
        prefix.truncate(base);
    }
    let (mut out, mut pos) = (Vec::new(), 0);
    tree(toks, &mut pos, &mut Vec::new(), &mut out);
    out
}
