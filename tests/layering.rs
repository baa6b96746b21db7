//! The layering rule: no import cycle between top-level modules. Each layer uses only
//! layers below it.
//!
//! A top-level module is a file `src/X.rs` or a directory `src/X/` (`lib.rs` and
//! `main.rs` are not modules). Module A uses module B when any file of A names B:
//! `use crate::B…`, `crate::B::…` anywhere in code, grouped and nested imports
//! (`use crate::{B, C::{x, y}}`), `super::` chains that climb out of A into B, and the
//! names `lib.rs` re-exports (`crate::Config` is `config`). `#[cfg(test)]` code counts
//! like any other code. Comments and string literals do not count. The scanner below
//! reads the source files itself and uses only std. It follows inline `mod x { … }`
//! blocks when it climbs `super::`; it refuses `#[path]` on modules and glob imports of
//! the crate root rather than guess what they bring in. Macros exported to the crate
//! root with `#[macro_export]` are not traced to the module that defines them.
//!
//! When there is a cycle, the test fails and lists every one: each group of modules that
//! reach each other, with the edges inside the group and the files (and first line) that
//! make each edge. With `--nocapture` it also prints the layers, lowest first, and each
//! module's dependencies:
//!
//! ```text
//! cargo test --test layering -- --nocapture
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The test cannot pass by finding nothing: the library has at least this many
/// top-level modules.
const MIN_MODULES: usize = 8;

#[test]
fn top_level_modules_do_not_import_each_other_in_a_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let scan = scan_crate(&src).unwrap_or_else(|problems| {
        panic!(
            "the layering scanner cannot read src/:\n  {}",
            problems.join("\n  ")
        )
    });
    assert!(
        scan.modules.len() >= MIN_MODULES,
        "found only {} top-level modules under {} ({:?}); expected at least {MIN_MODULES}",
        scan.modules.len(),
        src.display(),
        scan.modules
    );

    let components = strongly_connected(&scan.modules, &scan.graph);
    println!("{}", describe_layers(&scan, &components));

    let cycles: Vec<&BTreeSet<String>> = components.iter().filter(|c| c.len() > 1).collect();
    if !cycles.is_empty() {
        panic!("{}", describe_cycles(&scan, &cycles));
    }
}

// ---------------------------------------------------------------------------------
// Reading the crate

/// Module A -> module B -> file of A that names B -> first line where it does.
type Graph = BTreeMap<String, BTreeMap<String, BTreeMap<String, usize>>>;

struct CrateScan {
    modules: BTreeSet<String>,
    graph: Graph,
}

/// Reads every `.rs` file under `src` and returns the top-level modules and the edges
/// between them, or the problems that make the scan untrustworthy.
fn scan_crate(src: &Path) -> Result<CrateScan, Vec<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files).map_err(|e| vec![format!("{}: {e}", src.display())])?;
    files.sort();

    let mut problems = Vec::new();
    let mut modules = BTreeSet::new();
    let mut sources = Vec::new();
    for file in files {
        let rel = file.strip_prefix(src).expect("file under src");
        let shown = format!(
            "src/{}",
            rel.components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/")
        );
        let text = match std::fs::read_to_string(&file) {
            Ok(text) => text,
            Err(e) => {
                problems.push(format!("{shown}: {e}"));
                continue;
            }
        };
        let path = module_path(rel);
        if let Some(top) = path.first() {
            modules.insert(top.clone());
        }
        if shown != "src/main.rs" {
            sources.push((shown, path, text));
        }
    }

    // What lib.rs re-exports: `pub use config::Config;` makes `crate::Config` a use of
    // `config`.
    let mut reexports = BTreeMap::new();
    for (shown, path, text) in &sources {
        if !path.is_empty() {
            continue;
        }
        match references(text, path) {
            Ok(refs) => {
                for r in refs {
                    match (r.path.first(), &r.binding) {
                        (Some(top), _) if r.glob => problems.push(format!(
                            "{shown}:{}: glob re-export of `{top}`: name the items, so the \
                             scanner can tell which module `crate::Name` belongs to",
                            r.line
                        )),
                        (Some(top), Some(name)) if modules.contains(top) && name != top => {
                            reexports.insert(name.clone(), top.clone());
                        }
                        _ => {}
                    }
                }
            }
            Err(e) => problems.push(format!("{shown}: {e}")),
        }
    }

    let mut graph = Graph::new();
    for (shown, path, text) in &sources {
        let Some(from) = path.first() else { continue };
        let refs = match references(text, path) {
            Ok(refs) => refs,
            Err(e) => {
                problems.push(format!("{shown}: {e}"));
                continue;
            }
        };
        for r in refs {
            match target(&modules, &reexports, from, &r) {
                Target::Module(to) => {
                    let line = graph
                        .entry(from.clone())
                        .or_default()
                        .entry(to)
                        .or_default()
                        .entry(shown.clone())
                        .or_insert(r.line);
                    *line = (*line).min(r.line);
                }
                Target::RootGlob => problems.push(format!(
                    "{shown}:{}: glob import of the crate root brings every module into \
                     scope; import the modules by name",
                    r.line
                )),
                Target::None => {}
            }
        }
    }

    if problems.is_empty() {
        Ok(CrateScan { modules, graph })
    } else {
        Err(problems)
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            rust_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

/// The module a file under `src/` defines, as a path from the crate root:
/// `lib.rs` -> [], `a.rs` and `a/mod.rs` -> [a], `a/x/y.rs` -> [a, x, y].
fn module_path(rel: &Path) -> Vec<String> {
    let mut path: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if let Some(last) = path.pop() {
        let stem = last.strip_suffix(".rs").unwrap_or(&last);
        let root_file = path.is_empty() && (stem == "lib" || stem == "main");
        if stem != "mod" && !root_file {
            path.push(stem.to_string());
        }
    }
    path
}

#[derive(Debug, PartialEq)]
enum Target {
    /// Another top-level module.
    Module(String),
    /// `use crate::*`, or `use super::*` that reaches the root.
    RootGlob,
    /// The module itself, or something that is not a module of this crate.
    None,
}

/// Which other top-level module, if any, a reference made from inside `from` names.
fn target(
    modules: &BTreeSet<String>,
    reexports: &BTreeMap<String, String>,
    from: &str,
    r: &Reference,
) -> Target {
    let Some(first) = r.path.first() else {
        return if r.glob {
            Target::RootGlob
        } else {
            Target::None
        };
    };
    let top = if modules.contains(first) {
        first
    } else if let Some(module) = reexports.get(first) {
        module
    } else {
        return Target::None;
    };
    if top == from {
        Target::None
    } else {
        Target::Module(top.clone())
    }
}

// ---------------------------------------------------------------------------------
// Lexing: identifiers, `::` and punctuation; comments skipped; literals opaque

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    PathSep,
    Punct(char),
    /// A string, byte string, raw string, character or number literal: never a path.
    Literal,
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    line: usize,
}

struct Lexer {
    chars: Vec<char>,
    pos: usize,
    line: usize,
}

impl Lexer {
    fn peek(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.pos + ahead).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek(0)?;
        self.pos += 1;
        if c == '\n' {
            self.line += 1;
        }
        Some(c)
    }

    fn ident(&mut self) -> String {
        let mut s = String::new();
        while let Some(c) = self.peek(0).filter(|&c| is_ident_continue(c)) {
            s.push(c);
            self.bump();
        }
        s
    }

    /// After the opening `"`: up to and including the closing one.
    fn quoted(&mut self) -> Result<(), String> {
        let start = self.line;
        loop {
            match self.bump() {
                Some('\\') => {
                    self.bump();
                }
                Some('"') => return Ok(()),
                Some(_) => {}
                None => return Err(format!("string literal from line {start} never closes")),
            }
        }
    }

    /// After `r`, `br` or `cr`, at the `#`s or `"`: a raw string up to its end.
    fn raw_quoted(&mut self, hashes: usize) -> Result<(), String> {
        let start = self.line;
        for _ in 0..=hashes {
            self.bump(); // the `#`s and the `"`
        }
        loop {
            match self.bump() {
                Some('"') if (0..hashes).all(|k| self.peek(k) == Some('#')) => {
                    for _ in 0..hashes {
                        self.bump();
                    }
                    return Ok(());
                }
                Some(_) => {}
                None => return Err(format!("raw string from line {start} never closes")),
            }
        }
    }

    /// At a `'`: a character literal (true), or a lifetime or label (false); consumed.
    fn quote(&mut self) -> Result<bool, String> {
        let start = self.line;
        self.bump();
        match (self.peek(0), self.peek(1)) {
            (Some('\\'), _) => {
                self.bump();
                self.bump();
                loop {
                    match self.bump() {
                        Some('\'') => return Ok(true),
                        Some(_) => {}
                        None => return Err(format!("char literal on line {start} never closes")),
                    }
                }
            }
            (Some(_), Some('\'')) => {
                self.bump();
                self.bump();
                Ok(true)
            }
            _ => {
                self.ident();
                Ok(false)
            }
        }
    }
}

fn is_ident_start(c: char) -> bool {
    c == '_' || c.is_alphabetic()
}

fn is_ident_continue(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

fn lex(src: &str) -> Result<Vec<Token>, String> {
    let mut lx = Lexer {
        chars: src.chars().collect(),
        pos: 0,
        line: 1,
    };
    let mut out = Vec::new();
    while let Some(c) = lx.peek(0) {
        let line = lx.line;
        let tok = match c {
            c if c.is_whitespace() => {
                lx.bump();
                continue;
            }
            '/' if lx.peek(1) == Some('/') => {
                while lx.peek(0).is_some_and(|c| c != '\n') {
                    lx.bump();
                }
                continue;
            }
            '/' if lx.peek(1) == Some('*') => {
                lx.bump();
                lx.bump();
                let mut depth = 1;
                while depth > 0 {
                    match (lx.bump(), lx.peek(0)) {
                        (Some('/'), Some('*')) => {
                            lx.bump();
                            depth += 1;
                        }
                        (Some('*'), Some('/')) => {
                            lx.bump();
                            depth -= 1;
                        }
                        (Some(_), _) => {}
                        (None, _) => {
                            return Err(format!("block comment from line {line} never closes"))
                        }
                    }
                }
                continue;
            }
            '"' => {
                lx.bump();
                lx.quoted()?;
                Tok::Literal
            }
            '\'' => {
                if !lx.quote()? {
                    continue; // a lifetime or a label
                }
                Tok::Literal
            }
            c if c.is_ascii_digit() => {
                lx.bump();
                while let Some(c) = lx.peek(0) {
                    let fraction = c == '.' && lx.peek(1).is_some_and(|d| d.is_ascii_digit());
                    if !(is_ident_continue(c) || fraction) {
                        break;
                    }
                    lx.bump();
                }
                Tok::Literal
            }
            c if is_ident_start(c) => {
                let word = lx.ident();
                let hashes = (0..).take_while(|&k| lx.peek(k) == Some('#')).count();
                match (word.as_str(), lx.peek(0), lx.peek(hashes)) {
                    ("r" | "br" | "cr", _, Some('"')) => {
                        lx.raw_quoted(hashes)?;
                        Tok::Literal
                    }
                    ("b" | "c", Some('"'), _) => {
                        lx.bump();
                        lx.quoted()?;
                        Tok::Literal
                    }
                    ("b", Some('\''), _) => {
                        lx.quote()?;
                        Tok::Literal
                    }
                    ("r", Some('#'), _) if lx.peek(1).is_some_and(is_ident_start) => {
                        lx.bump();
                        Tok::Ident(lx.ident()) // a raw identifier, `r#type`
                    }
                    _ => Tok::Ident(word),
                }
            }
            ':' if lx.peek(1) == Some(':') => {
                lx.bump();
                lx.bump();
                Tok::PathSep
            }
            c => {
                lx.bump();
                Tok::Punct(c)
            }
        };
        out.push(Token { tok, line });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------
// Paths: every `use` tree and every path that starts with `crate`, `super` or `self`,
// resolved to a path from the crate root

#[derive(Debug, Clone, PartialEq)]
struct Reference {
    /// From the crate root: `crate::a::b` is [a, b]; `super::x` in `a` is [x].
    path: Vec<String>,
    /// The name a `use` binds (the last segment, or the `as` name).
    binding: Option<String>,
    glob: bool,
    line: usize,
}

/// Every path in `src`, the text of the module at `module` (a path from the crate
/// root), resolved from the crate root. Inline `mod name { … }` blocks are followed, so
/// `super` inside `mod tests` is the file's module.
fn references(src: &str, module: &[String]) -> Result<Vec<Reference>, String> {
    let toks = lex(src)?;
    let ident = |i: usize| match toks.get(i).map(|t| &t.tok) {
        Some(Tok::Ident(s)) => Some(s.as_str()),
        _ => None,
    };
    let punct = |i: usize, c: char| toks.get(i).map(|t| &t.tok) == Some(&Tok::Punct(c));
    let path_sep = |i: usize| toks.get(i).map(|t| &t.tok) == Some(&Tok::PathSep);

    let mut out = Vec::new();
    let mut depth = 0usize;
    // Inline modules open here: (name, brace depth outside it).
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let here = || {
            let mut m = module.to_vec();
            m.extend(inline.iter().map(|(name, _)| name.clone()));
            m
        };
        if punct(i, '{') {
            depth += 1;
        } else if punct(i, '}') {
            depth = depth.saturating_sub(1);
            if inline.last().is_some_and(|&(_, d)| d == depth) {
                inline.pop();
            }
        } else if ident(i) == Some("mod") && punct(i + 2, '{') {
            if let Some(name) = ident(i + 1) {
                inline.push((name.to_string(), depth));
                i += 2; // the `{` is counted on the next turn
                continue;
            }
        } else if punct(i, '#') {
            let open = if punct(i + 1, '!') { i + 2 } else { i + 1 };
            if punct(open, '[') && ident(open + 1) == Some("path") {
                return Err(format!(
                    "line {}: #[path] moves a module to another file; the scanner \
                     does not follow it",
                    toks[i].line
                ));
            }
        } else if ident(i) == Some("use") {
            i = use_tree(&toks, i + 1, here(), &mut out);
            continue;
        } else if matches!(ident(i), Some("crate" | "super" | "self"))
            && path_sep(i + 1)
            && !(i > 0 && path_sep(i - 1))
        {
            i = use_tree(&toks, i, here(), &mut out);
            continue;
        }
        i += 1;
    }
    Ok(out)
}

/// Parses one path or `use` tree from `toks[i]`, `cur` being where it starts from, and
/// records each leaf. Returns the index just after it.
fn use_tree(toks: &[Token], mut i: usize, mut cur: Vec<String>, out: &mut Vec<Reference>) -> usize {
    let line = toks.get(i).map_or(0, |t| t.line);
    let leaf = |cur: Vec<String>, binding: Option<String>, glob: bool| Reference {
        binding: if glob {
            None
        } else {
            binding.or_else(|| cur.last().cloned())
        },
        path: cur,
        glob,
        line,
    };
    loop {
        match toks.get(i).map(|t| &t.tok) {
            Some(Tok::Ident(s)) if s == "crate" => cur.clear(),
            Some(Tok::Ident(s)) if s == "super" => {
                cur.pop();
            }
            Some(Tok::Ident(s)) if s == "self" => {}
            Some(Tok::Ident(s)) => cur.push(s.clone()),
            Some(Tok::Punct('*')) => {
                out.push(leaf(cur, None, true));
                return i + 1;
            }
            Some(Tok::Punct('{')) => {
                i += 1;
                let mut empty = true;
                loop {
                    match toks.get(i).map(|t| &t.tok) {
                        None => return i,
                        Some(Tok::Punct('}')) => {
                            // `use crate::b::{};` still names b.
                            if empty && !cur.is_empty() {
                                out.push(leaf(cur, None, false));
                            }
                            return i + 1;
                        }
                        Some(Tok::Punct(',')) => i += 1,
                        Some(_) => {
                            empty = false;
                            let next = use_tree(toks, i, cur.clone(), out);
                            // Never stall on something that is not a tree.
                            i = next.max(i + 1);
                        }
                    }
                }
            }
            // `::std`, `<T as crate::x::Y>::f` and the like: nothing more to read here.
            _ => {
                if !cur.is_empty() {
                    out.push(leaf(cur, None, false));
                }
                return i;
            }
        }
        i += 1;
        if toks.get(i).map(|t| &t.tok) == Some(&Tok::PathSep) {
            i += 1;
            continue;
        }
        let binding = match (toks.get(i).map(|t| &t.tok), toks.get(i + 1).map(|t| &t.tok)) {
            (Some(Tok::Ident(a)), Some(Tok::Ident(name))) if a == "as" => {
                i += 2;
                Some(name.clone())
            }
            _ => None,
        };
        out.push(leaf(cur, binding, false));
        return i;
    }
}

// ---------------------------------------------------------------------------------
// The graph: strongly connected components and layers

/// The strongly connected components, each a set of modules that reach one another. A
/// component with more than one module is an import cycle.
fn strongly_connected(modules: &BTreeSet<String>, graph: &Graph) -> Vec<BTreeSet<String>> {
    let reach: BTreeMap<&String, BTreeSet<&String>> =
        modules.iter().map(|m| (m, reachable(m, graph))).collect();
    let mut seen = BTreeSet::new();
    let mut components = Vec::new();
    for m in modules {
        if seen.contains(m) {
            continue;
        }
        let component: BTreeSet<String> = modules
            .iter()
            .filter(|&o| o == m || (reach[m].contains(o) && reach[o].contains(m)))
            .cloned()
            .collect();
        seen.extend(component.iter().cloned());
        components.push(component);
    }
    components
}

/// The modules `from` uses, directly or not.
fn reachable<'g>(from: &'g String, graph: &'g Graph) -> BTreeSet<&'g String> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![from];
    while let Some(m) = stack.pop() {
        for next in graph.get(m).into_iter().flat_map(|e| e.keys()) {
            if seen.insert(next) {
                stack.push(next);
            }
        }
    }
    seen
}

/// The layer of each component: 0 when it uses nothing outside itself, else one above
/// the highest layer it uses. Listing layers from 0 up is a topological order.
fn layers(components: &[BTreeSet<String>], graph: &Graph) -> Vec<usize> {
    let index: BTreeMap<&String, usize> = components
        .iter()
        .enumerate()
        .flat_map(|(k, c)| c.iter().map(move |m| (m, k)))
        .collect();
    let uses: Vec<BTreeSet<usize>> = components
        .iter()
        .enumerate()
        .map(|(k, c)| {
            c.iter()
                .filter_map(|m| graph.get(m))
                .flat_map(|e| e.keys())
                .map(|to| index[to])
                .filter(|&o| o != k)
                .collect()
        })
        .collect();
    fn layer(k: usize, uses: &[BTreeSet<usize>], memo: &mut [Option<usize>]) -> usize {
        if let Some(l) = memo[k] {
            return l;
        }
        let l = uses[k]
            .iter()
            .map(|&o| layer(o, uses, memo) + 1)
            .max()
            .unwrap_or(0);
        memo[k] = Some(l);
        l
    }
    let mut memo = vec![None; components.len()];
    (0..components.len())
        .map(|k| layer(k, &uses, &mut memo))
        .collect()
}

fn describe_layers(scan: &CrateScan, components: &[BTreeSet<String>]) -> String {
    let layer_of = layers(components, &scan.graph);
    let mut by_layer: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for (c, &l) in components.iter().zip(&layer_of) {
        let names: Vec<&str> = c.iter().map(String::as_str).collect();
        by_layer.entry(l).or_default().push(if c.len() > 1 {
            format!("{{{}}}", names.join(", "))
        } else {
            names.join(", ")
        });
    }
    let mut s = format!(
        "{} top-level modules. Layers, lowest first (each uses only layers below it; \
         {{…}} is a cycle):\n",
        scan.modules.len()
    );
    for (l, names) in &by_layer {
        let _ = writeln!(s, "  {l:>2}: {}", names.join(", "));
    }
    s.push_str("Dependencies:\n");
    for m in &scan.modules {
        let uses: Vec<&str> = scan
            .graph
            .get(m)
            .into_iter()
            .flat_map(|e| e.keys())
            .map(String::as_str)
            .collect();
        let uses = if uses.is_empty() {
            "(nothing)".to_string()
        } else {
            uses.join(", ")
        };
        let _ = writeln!(s, "  {m} -> {uses}");
    }
    s
}

fn describe_cycles(scan: &CrateScan, cycles: &[&BTreeSet<String>]) -> String {
    let mut s = format!(
        "{} import cycle(s) between top-level modules; each layer must use only layers \
         below it. Remove one edge of every cycle (all the files listed for an edge):\n",
        cycles.len()
    );
    for (k, cycle) in cycles.iter().enumerate() {
        let names: Vec<&str> = cycle.iter().map(String::as_str).collect();
        let _ = writeln!(s, "\ncycle {}: {{{}}}", k + 1, names.join(", "));
        for from in cycle.iter() {
            for (to, files) in scan.graph.get(from).into_iter().flatten() {
                if !cycle.contains(to) {
                    continue;
                }
                let files: Vec<String> = files
                    .iter()
                    .map(|(file, line)| format!("{file}:{line}"))
                    .collect();
                let _ = writeln!(s, "  {from} -> {to} ({})", files.join(", "));
            }
        }
        s.push_str("  shortest cycle through each of those edges:\n");
        for nodes in shortest_cycles(cycle, &scan.graph) {
            let _ = writeln!(s, "    {} -> {}", nodes.join(" -> "), nodes[0]);
        }
    }
    s
}

/// For each edge inside `component`, the shortest cycle that goes through it, as the
/// modules on it starting from the smallest name; each cycle once, shortest first.
fn shortest_cycles(component: &BTreeSet<String>, graph: &Graph) -> Vec<Vec<String>> {
    let inside = |m: &String| {
        graph
            .get(m)
            .into_iter()
            .flat_map(|e| e.keys())
            .filter(|to| component.contains(*to))
    };
    let mut found = BTreeSet::new();
    for from in component {
        for to in inside(from) {
            // Breadth first from `to` back to `from`, staying inside the component.
            let mut parent: BTreeMap<&String, &String> = BTreeMap::new();
            let mut queue = std::collections::VecDeque::from([to]);
            while let Some(m) = queue.pop_front() {
                if m == from {
                    break;
                }
                for next in inside(m) {
                    if next != to && !parent.contains_key(next) {
                        parent.insert(next, m);
                        queue.push_back(next);
                    }
                }
            }
            let mut nodes = vec![from.clone()];
            let mut m = from;
            while m != to {
                m = parent[m];
                nodes.push(m.clone());
            }
            nodes.reverse(); // to, …, from
            nodes.rotate_right(1); // from, to, …
            let start = (0..nodes.len()).min_by_key(|&k| &nodes[k]).unwrap_or(0);
            nodes.rotate_left(start);
            found.insert((nodes.len(), nodes));
        }
    }
    found.into_iter().map(|(_, nodes)| nodes).collect()
}

// ---------------------------------------------------------------------------------
// The scanner's own tests

mod scanner {
    use super::*;

    /// The top-level modules `src` (the file `rel` under `src/`) uses, in a crate with
    /// modules a, b, c, d and e whose lib.rs re-exports `Thing` from d.
    fn uses(rel: &str, src: &str) -> Vec<String> {
        let modules: BTreeSet<String> = ["a", "b", "c", "d", "e"].map(String::from).into();
        let reexports = BTreeMap::from([("Thing".to_string(), "d".to_string())]);
        let path = module_path(Path::new(rel));
        let from = path.first().expect("a file of a top-level module");
        let found: BTreeSet<String> = references(src, &path)
            .expect("lexes")
            .iter()
            .filter_map(|r| match target(&modules, &reexports, from, r) {
                Target::Module(m) => Some(m),
                _ => None,
            })
            .collect();
        found.into_iter().collect()
    }

    #[test]
    fn module_paths() {
        let p = |rel: &str| module_path(Path::new(rel));
        assert_eq!(p("lib.rs"), Vec::<String>::new());
        assert_eq!(p("main.rs"), Vec::<String>::new());
        assert_eq!(p("a.rs"), ["a"]);
        assert_eq!(p("a/mod.rs"), ["a"]);
        assert_eq!(p("a/x.rs"), ["a", "x"]);
        assert_eq!(p("a/x/mod.rs"), ["a", "x"]);
        assert_eq!(p("a/x/y.rs"), ["a", "x", "y"]);
    }

    #[test]
    fn plain_use_and_use_of_itself() {
        assert_eq!(uses("a.rs", "use crate::b::X;\nuse crate::a::Y;"), ["b"]);
        assert_eq!(uses("a/x.rs", "use crate::b;\nuse std::io;"), ["b"]);
        assert_eq!(uses("a.rs", "pub(crate) use crate::c::Z as W;"), ["c"]);
    }

    #[test]
    fn grouped_use() {
        assert_eq!(uses("a.rs", "use crate::{b, c::x, a::y};"), ["b", "c"]);
        assert_eq!(uses("a.rs", "use crate::{self as root, b as bee};"), ["b"]);
        assert_eq!(uses("a.rs", "use {crate::b::X, std::fmt};"), ["b"]);
    }

    #[test]
    fn nested_groups() {
        let src = "use crate::{\n    b::{x, y::{z, w}},\n    c,\n    d::{self, *},\n};";
        assert_eq!(uses("a.rs", src), ["b", "c", "d"]);
        assert_eq!(uses("a.rs", "use crate::{b::{x as y}, c::{}};"), ["b", "c"]);
    }

    #[test]
    fn super_climbing() {
        // In a::x::y, `super` is a::x, `super::super` is a and a third `super` the root.
        assert_eq!(
            uses("a/x/y.rs", "use super::super::b::Q;"),
            Vec::<String>::new()
        );
        assert_eq!(uses("a/x/y.rs", "use super::super::super::b::Q;"), ["b"]);
        // In a::x (a/x/mod.rs), `super::super` is the root already.
        assert_eq!(uses("a/x/mod.rs", "use super::super::b::Q;"), ["b"]);
        assert_eq!(uses("a/x.rs", "use super::{x, super::c};"), ["c"]);
        assert_eq!(uses("a/x.rs", "fn f() { super::super::e::go() }"), ["e"]);
        assert_eq!(uses("a.rs", "use super::b;"), ["b"]);
        // An inline module is one more level: `super` in `mod tests` is the file's.
        let src = "mod tests {\n    use super::*;\n    use super::b;\n    use super::super::c;\n}\nuse super::d;";
        assert_eq!(uses("a.rs", src), ["c", "d"]);
        let src = "mod tests {\n    use super::super::super::b;\n}";
        assert_eq!(uses("a/x.rs", src), ["b"]);
    }

    #[test]
    fn crate_paths_in_expressions_types_and_macros() {
        let src = "fn f(x: crate::b::T) -> Vec<crate::c::U> {\n    let y = crate::d::make(x);\n    <crate::e::V as Default>::default();\n    m!($crate::b::z);\n}";
        assert_eq!(uses("a.rs", src), ["b", "c", "d", "e"]);
        // `crate` as a visibility, and fields named like modules, are not paths.
        assert_eq!(
            uses("a.rs", "pub(crate) fn f(s: S) { s.b.c(); self.d; }"),
            Vec::<String>::new()
        );
    }

    #[test]
    fn test_code_counts() {
        let src = "#[cfg(test)]\nmod tests {\n    use crate::e::Harness;\n}";
        assert_eq!(uses("a.rs", src), ["e"]);
    }

    #[test]
    fn reexports_of_lib_rs() {
        assert_eq!(uses("a.rs", "use crate::Thing;"), ["d"]);
        assert_eq!(uses("a.rs", "fn f() -> crate::Thing { todo() }"), ["d"]);
        assert_eq!(uses("d/x.rs", "use crate::Thing;"), Vec::<String>::new());
        let lib = "pub mod d;\npub use d::{Thing, Other as Alias};\npub use e::*;";
        let refs = references(lib, &[]).expect("lexes");
        let bindings: Vec<(Vec<String>, Option<String>, bool)> = refs
            .into_iter()
            .map(|r| (r.path, r.binding, r.glob))
            .collect();
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            bindings,
            [
                (s(&["d", "Thing"]), Some("Thing".to_string()), false),
                (s(&["d", "Other"]), Some("Alias".to_string()), false),
                (s(&["e"]), None, true),
            ]
        );
    }

    #[test]
    fn comments_are_not_code() {
        let src = "// use crate::b;\n/// See [`crate::c::X`].\n//! Uses crate::d.\n/* use crate::e; /* nested crate::b */ crate::c */\nfn f() {}";
        assert_eq!(uses("a.rs", src), Vec::<String>::new());
        assert_eq!(
            uses("a.rs", "/** crate::b */ /*! crate::c */ use crate::d;"),
            ["d"]
        );
    }

    #[test]
    fn strings_and_chars_are_not_code() {
        let src = r###"
            const A: &str = "use crate::b; \" crate::c::x";
            const B: &str = r#"crate::c::y " still crate::d "#;
            const C: &[u8] = b"crate::e";
            const D: &[u8] = br##"crate::b "# crate::c"##;
            const E: char = '"';
            const F: char = '\'';
            const G: u8 = b'"';
            fn f<'a>(x: &'a str) -> &'a str { 'outer: loop { break 'outer x; } }
            use crate::e::Real;
        "###;
        assert_eq!(uses("a.rs", src), ["e"]);
    }

    #[test]
    fn raw_identifiers_and_numbers() {
        assert_eq!(
            uses("a.rs", "use crate::r#b::r#type;\nlet x = 1.5e3 + 0x1f;"),
            ["b"]
        );
        assert_eq!(
            uses("a.rs", "let t = (1, 2); let y = t.0.max(1); crate::c::f();"),
            ["c"]
        );
    }

    #[test]
    fn globs_of_the_root_are_reported() {
        let modules: BTreeSet<String> = ["a", "b"].map(String::from).into();
        let refs = references("use super::*;", &["a".to_string()]).expect("lexes");
        assert_eq!(
            target(&modules, &BTreeMap::new(), "a", &refs[0]),
            Target::RootGlob
        );
    }

    #[test]
    fn path_attribute_is_refused() {
        assert!(references("#[path = \"other.rs\"]\nmod x;", &["a".to_string()]).is_err());
    }

    #[test]
    fn unterminated_literals_are_errors() {
        assert!(lex("let s = \"open").is_err());
        assert!(lex("/* open").is_err());
        assert!(lex("let s = r#\"open\"").is_err());
    }

    #[test]
    fn cycles_and_layers() {
        let mut graph = Graph::new();
        for (from, to) in [("a", "b"), ("b", "c"), ("c", "a"), ("d", "a"), ("e", "d")] {
            graph_edge(&mut graph, from, to);
        }
        let modules: BTreeSet<String> = ["a", "b", "c", "d", "e", "f"].map(String::from).into();
        let components = strongly_connected(&modules, &graph);
        let abc: BTreeSet<String> = ["a", "b", "c"].map(String::from).into();
        assert!(components.contains(&abc));
        assert_eq!(components.len(), 4);
        let layer = layers(&components, &graph);
        let of = |m: &str| layer[components.iter().position(|c| c.contains(m)).unwrap()];
        assert_eq!((of("a"), of("f"), of("d"), of("e")), (0, 0, 1, 2));
        let mut scan = CrateScan { modules, graph };
        let text = describe_cycles(&scan, &[&abc]);
        assert!(text.contains("a -> b (src/a.rs:1)"), "{text}");
        assert!(text.contains("c -> a (src/c.rs:1)"), "{text}");
        assert!(!text.contains("d -> a"), "{text}");
        assert!(text.contains("    a -> b -> c -> a\n"), "{text}");
        // Two cycles share a -> b: each edge gets its shortest one, each listed once.
        graph_edge(&mut scan.graph, "b", "a");
        let cycles = shortest_cycles(&abc, &scan.graph);
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(cycles, [s(&["a", "b"]), s(&["a", "b", "c"])]);
    }

    fn graph_edge(graph: &mut Graph, from: &str, to: &str) {
        graph.entry(from.to_string()).or_default().insert(
            to.to_string(),
            BTreeMap::from([(format!("src/{from}.rs"), 1)]),
        );
    }

    #[test]
    fn scans_a_whole_tree() {
        let dir = std::env::temp_dir().join(format!("switchyard-layering-{}", std::process::id()));
        let files = [
            (
                "lib.rs",
                "pub mod a;\npub mod b;\npub mod c;\npub use b::Thing;",
            ),
            ("main.rs", "use demo::a::X;\nfn main() { demo::c::run() }"),
            ("a.rs", "use crate::Thing; // not crate::c"),
            ("b/mod.rs", "mod x;\npub struct Thing;"),
            (
                "b/x.rs",
                "use super::super::c;\n#[cfg(test)]\nmod tests { use crate::a; }",
            ),
            ("c.rs", "pub fn run() { let _ = \"crate::a\"; }"),
        ];
        for (rel, text) in files {
            let path = dir.join("src").join(rel);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(&path, text).expect("write");
        }
        let scan = scan_crate(&dir.join("src"));
        let _ = std::fs::remove_dir_all(&dir);
        let scan = scan.expect("scans");
        assert_eq!(scan.modules, ["a", "b", "c"].map(String::from).into());
        let mut edges = Vec::new();
        for (from, e) in &scan.graph {
            for (to, files) in e {
                for (file, line) in files {
                    edges.push(format!("{from} -> {to} ({file}:{line})"));
                }
            }
        }
        assert_eq!(
            edges,
            [
                "a -> b (src/a.rs:1)",
                "b -> a (src/b/x.rs:3)",
                "b -> c (src/b/x.rs:1)"
            ]
        );
    }
}
