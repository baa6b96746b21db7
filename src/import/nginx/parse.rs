//! nginx's configuration syntax: words (bare or quoted, with nginx's escapes),
//! `;`-terminated directives, `{}` blocks and `#` comments, every directive
//! with the file and line it starts on. `include` is expanded here, in place,
//! so the translator sees one tree.
//!
//! Relative `include` paths (and globs) are taken from the directory of the
//! main file, as nginx does when started with `-c FILE` (its "conf prefix"),
//! not from the directory of the file that holds the `include`: that is what
//! `nginx -t` reads, so both agree on which files a configuration is made of.
//! A glob that matches nothing is not an error (nginx's rule); a plain path that
//! does not exist is.

use std::path::{Path, PathBuf};

use crate::import::{ImportError, Origin};

/// How deep includes may nest before the configuration is taken to include
/// itself (nginx has no limit and recurses until it runs out of files).
const MAX_INCLUDE_DEPTH: usize = 16;

/// One directive: its name, its arguments (unquoted), where it starts, and its
/// block when it has one.
#[derive(Debug, Clone)]
pub(crate) struct Directive {
    pub name: String,
    pub args: Vec<String>,
    pub at: Origin,
    /// The line of the closing `}` (or of the `;`).
    pub end: usize,
    pub block: Option<Vec<Directive>>,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Semi,
    Open,
    Close,
}

fn syntax(file: &Path, line: usize, message: impl Into<String>) -> ImportError {
    ImportError::Syntax {
        at: Origin {
            file: file.to_owned(),
            line,
        },
        message: message.into(),
    }
}

/// Splits `text` into tokens with their lines.
fn lex(file: &Path, text: &str) -> Result<Vec<(Tok, usize)>, ImportError> {
    let b: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let mut line = 1;
    while i < b.len() {
        let c = b[i];
        match c {
            '\n' => {
                line += 1;
                i += 1;
            }
            c if c.is_whitespace() => i += 1,
            '#' => {
                while i < b.len() && b[i] != '\n' {
                    i += 1;
                }
            }
            ';' => {
                out.push((Tok::Semi, line));
                i += 1;
            }
            '{' => {
                out.push((Tok::Open, line));
                i += 1;
            }
            '}' => {
                out.push((Tok::Close, line));
                i += 1;
            }
            '"' | '\'' => {
                let start = line;
                let q = c;
                i += 1;
                let mut w = String::new();
                loop {
                    let Some(&c) = b.get(i) else {
                        return Err(syntax(
                            file,
                            start,
                            "unexpected end of file, unclosed quote",
                        ));
                    };
                    i += 1;
                    match c {
                        '\\' => match b.get(i) {
                            Some(&n) => {
                                i += 1;
                                match n {
                                    '"' | '\'' | '\\' => w.push(n),
                                    'n' => w.push('\n'),
                                    't' => w.push('\t'),
                                    'r' => w.push('\r'),
                                    n => {
                                        if n == '\n' {
                                            line += 1;
                                        }
                                        w.push('\\');
                                        w.push(n);
                                    }
                                }
                            }
                            None => {
                                return Err(syntax(
                                    file,
                                    start,
                                    "unexpected end of file, unclosed quote",
                                ))
                            }
                        },
                        c if c == q => break,
                        c => {
                            if c == '\n' {
                                line += 1;
                            }
                            w.push(c);
                        }
                    }
                }
                // nginx wants a separator right after a closing quote.
                if let Some(&n) = b.get(i) {
                    if !(n.is_whitespace() || n == ';' || n == '{' || n == '}') {
                        return Err(syntax(file, line, format!("unexpected \"{n}\"")));
                    }
                }
                out.push((Tok::Word(w), start));
            }
            _ => {
                let mut w = String::new();
                while let Some(&c) = b.get(i) {
                    if c.is_whitespace() || c == ';' || c == '}' {
                        break;
                    }
                    // `{` opens a block, except in `${var}`.
                    if c == '{' {
                        if w.ends_with('$') {
                            while let Some(&c) = b.get(i) {
                                w.push(c);
                                i += 1;
                                if c == '}' {
                                    break;
                                }
                            }
                            continue;
                        }
                        break;
                    }
                    if c == '\\' {
                        if let Some(&n) = b.get(i + 1) {
                            i += 2;
                            match n {
                                '"' | '\'' | '\\' => w.push(n),
                                'n' => w.push('\n'),
                                't' => w.push('\t'),
                                'r' => w.push('\r'),
                                n => {
                                    w.push('\\');
                                    w.push(n);
                                }
                            }
                            continue;
                        }
                    }
                    w.push(c);
                    i += 1;
                }
                out.push((Tok::Word(w), line));
            }
        }
    }
    Ok(out)
}

/// Reads `main` and every file it includes into one tree of directives.
pub(crate) fn parse(main: &Path) -> Result<Vec<Directive>, ImportError> {
    let prefix = main.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut p = Parser {
        prefix,
        eof_line: 1,
    };
    p.file(main, 0, None)
}

struct Parser {
    /// Where relative includes are taken from.
    prefix: PathBuf,
    /// The line an early end of the file being read is reported on.
    eof_line: usize,
}

impl Parser {
    fn file(
        &mut self,
        path: &Path,
        depth: usize,
        from: Option<&Origin>,
    ) -> Result<Vec<Directive>, ImportError> {
        if depth > MAX_INCLUDE_DEPTH {
            let at = from.cloned().unwrap_or(Origin {
                file: path.to_owned(),
                line: 0,
            });
            return Err(ImportError::Syntax {
                at,
                message: format!("includes nest deeper than {MAX_INCLUDE_DEPTH} levels (does a file include itself?)"),
            });
        }
        let text = super::super::read(path)?;
        let toks = lex(path, &text)?;
        // nginx reports an early end of file on the line after the last newline.
        self.eof_line = text.matches('\n').count() + 1;
        let mut pos = 0;
        let list = self.block(path, &toks, &mut pos, depth, None)?;
        if pos < toks.len() {
            let (_, line) = &toks[pos];
            return Err(syntax(path, *line, "unexpected \"}\""));
        }
        Ok(list)
    }

    /// Directives up to a `}` (left at `pos`) or the end of the tokens.
    fn block(
        &mut self,
        path: &Path,
        toks: &[(Tok, usize)],
        pos: &mut usize,
        depth: usize,
        opened: Option<usize>,
    ) -> Result<Vec<Directive>, ImportError> {
        let mut out = Vec::new();
        loop {
            let Some((tok, line)) = toks.get(*pos) else {
                if opened.is_some() {
                    return Err(syntax(
                        path,
                        self.eof_line,
                        "unexpected end of file, expecting \"}\"",
                    ));
                }
                return Ok(out);
            };
            let line = *line;
            match tok {
                Tok::Close => {
                    if opened.is_none() {
                        return Err(syntax(path, line, "unexpected \"}\""));
                    }
                    return Ok(out);
                }
                Tok::Semi => return Err(syntax(path, line, "unexpected \";\"")),
                Tok::Open => return Err(syntax(path, line, "unexpected \"{\"")),
                Tok::Word(name) => {
                    *pos += 1;
                    let mut args = Vec::new();
                    let at = Origin {
                        file: path.to_owned(),
                        line,
                    };
                    loop {
                        match toks.get(*pos) {
                            None => {
                                return Err(syntax(
                                    path,
                                    self.eof_line,
                                    "unexpected end of file, expecting \";\" or \"}\"",
                                ));
                            }
                            Some((Tok::Word(w), _)) => {
                                args.push(w.clone());
                                *pos += 1;
                            }
                            Some((Tok::Semi, l)) => {
                                *pos += 1;
                                if name == "include" {
                                    out.extend(self.include(&at, &args, depth)?);
                                } else {
                                    out.push(Directive {
                                        name: name.clone(),
                                        args,
                                        at,
                                        end: *l,
                                        block: None,
                                    });
                                }
                                break;
                            }
                            Some((Tok::Open, l)) => {
                                *pos += 1;
                                let inner = self.block(path, toks, pos, depth, Some(*l))?;
                                let end = toks.get(*pos).map_or(line, |t| t.1);
                                *pos += 1; // the `}`
                                out.push(Directive {
                                    name: name.clone(),
                                    args,
                                    at,
                                    end,
                                    block: Some(inner),
                                });
                                break;
                            }
                            Some((Tok::Close, l)) => {
                                return Err(syntax(path, *l, "unexpected \"}\""));
                            }
                        }
                    }
                }
            }
        }
    }

    fn include(
        &mut self,
        at: &Origin,
        args: &[String],
        depth: usize,
    ) -> Result<Vec<Directive>, ImportError> {
        let [pattern] = args else {
            return Err(ImportError::Syntax {
                at: at.clone(),
                message: "invalid number of arguments in \"include\" directive".into(),
            });
        };
        let full = if Path::new(pattern).is_absolute() {
            PathBuf::from(pattern)
        } else {
            self.prefix.join(pattern)
        };
        let files = if pattern.contains(['*', '?', '[']) {
            glob(&full)
        } else {
            if !full.exists() {
                return Err(ImportError::Syntax {
                    at: at.clone(),
                    message: format!(
                        "open() \"{}\" failed (No such file or directory)",
                        full.display()
                    ),
                });
            }
            vec![full]
        };
        let mut out = Vec::new();
        for f in files {
            out.extend(self.file(&f, depth + 1, Some(at))?);
        }
        Ok(out)
    }
}

/// The files matching `pattern` (`*`, `?`, `[…]` in any component), sorted as
/// glob(3) sorts them; hidden files only when the pattern names the dot.
fn glob(pattern: &Path) -> Vec<PathBuf> {
    let mut found = vec![PathBuf::new()];
    for comp in pattern.components() {
        let s = comp.as_os_str().to_string_lossy().into_owned();
        let mut next = Vec::new();
        if !s.contains(['*', '?', '[']) {
            for f in &found {
                next.push(f.join(comp.as_os_str()));
            }
        } else {
            for f in &found {
                let dir = if f.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    f.as_path()
                };
                let Ok(rd) = std::fs::read_dir(dir) else {
                    continue;
                };
                let mut names: Vec<String> = rd
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| {
                        (!n.starts_with('.') || s.starts_with('.'))
                            && wild(s.as_bytes(), n.as_bytes())
                    })
                    .collect();
                names.sort();
                next.extend(names.into_iter().map(|n| f.join(n)));
            }
        }
        found = next;
    }
    found.retain(|f| f.is_file());
    found
}

/// Shell-style matching of one name.
fn wild(p: &[u8], s: &[u8]) -> bool {
    match p.first() {
        None => s.is_empty(),
        Some(b'*') => (0..=s.len()).any(|i| wild(&p[1..], &s[i..])),
        Some(b'?') => !s.is_empty() && wild(&p[1..], &s[1..]),
        Some(b'[') => {
            let Some(close) = p.iter().skip(2).position(|&c| c == b']').map(|i| i + 2) else {
                return s.first() == Some(&b'[') && wild(&p[1..], &s[1..]);
            };
            let Some(&c) = s.first() else { return false };
            let mut set = &p[1..close];
            let negate = matches!(set.first(), Some(b'!' | b'^'));
            if negate {
                set = &set[1..];
            }
            let mut hit = false;
            let mut i = 0;
            while i < set.len() {
                if i + 2 < set.len() && set[i + 1] == b'-' {
                    hit |= set[i] <= c && c <= set[i + 2];
                    i += 3;
                } else {
                    hit |= set[i] == c;
                    i += 1;
                }
            }
            hit != negate && wild(&p[close + 1..], &s[1..])
        }
        Some(&c) => s.first() == Some(&c) && wild(&p[1..], &s[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<Tok> {
        lex(Path::new("t.conf"), text)
            .unwrap()
            .into_iter()
            .map(|t| t.0)
            .collect()
    }

    #[test]
    fn quotes_escapes_and_variables_in_braces() {
        assert_eq!(
            words(r#"a "b c" 'd\'e' f\;g ${x}y;"#),
            vec![
                Tok::Word("a".into()),
                Tok::Word("b c".into()),
                Tok::Word("d'e".into()),
                // nginx keeps the backslash of an escape it does not know.
                Tok::Word("f\\;g".into()),
                Tok::Word("${x}y".into()),
                Tok::Semi
            ]
        );
    }

    #[test]
    fn globs_match_like_the_shell() {
        assert!(wild(b"*.conf", b"a.conf"));
        assert!(!wild(b"*.conf", b"a.conf.bak"));
        assert!(wild(b"[0-9]?-x", b"10-x"));
        assert!(!wild(b"[!0-9]*", b"1a"));
    }

    #[test]
    fn errors_name_the_line() {
        let dir = std::env::temp_dir().join(format!("sy-nginx-parse-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("x.conf");
        for (text, line, msg) in [
            (
                "http {\n  server {\n    listen 80\n  }\n}\n",
                4,
                "unexpected \"}\"",
            ),
            ("http {\n server {}\n", 3, "expecting \"}\""),
            ("a;\n}\n", 2, "unexpected \"}\""),
            ("a \"b;\n", 1, "unclosed quote"),
        ] {
            std::fs::write(&f, text).unwrap();
            match parse(&f) {
                Err(ImportError::Syntax { at, message }) => {
                    assert_eq!(at.line, line, "{text:?}: {message}");
                    assert!(message.contains(msg), "{text:?}: {message}");
                }
                other => panic!("{text:?}: {other:?}"),
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
