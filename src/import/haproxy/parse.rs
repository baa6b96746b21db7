//! HAProxy's configuration syntax, as HAProxy 2.x reads it: one directive a line,
//! words split on blanks; `#` starts a comment outside quotes; a backslash escapes
//! the next character (`\ `, `\#`, `\\`, `\"`, `\'`) and writes `\t`, `\n`, `\r`
//! and `\xNN`; double quotes keep blanks and still take escapes, single quotes
//! keep everything as written. A line whose first word is a section keyword
//! (`global`, `defaults`, `frontend`, `backend`, `listen`, and the sections this
//! import does not translate: `userlist`, `peers`, `resolvers`…) opens a section;
//! every other line belongs to the section above it. What `haproxy -c` refuses
//! here is an `ImportError::Syntax` with its file and line: an unterminated
//! quote, a directive before any section, a proxy without a name.

use std::path::Path;

use crate::import::{ImportError, Origin};

/// One directive: its line and its words, unquoted and unescaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Line {
    pub line: usize,
    pub words: Vec<String>,
    /// Whether the line starts with a blank (directives are indented, section
    /// keywords are not: an unknown word at the start of a line is taken for a
    /// misspelt section keyword, as `haproxy -c` refuses it).
    pub indented: bool,
}

impl Line {
    pub(crate) fn word(&self, i: usize) -> &str {
        self.words.get(i).map_or("", String::as_str)
    }
}

/// The kinds of section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    Global,
    Defaults,
    Frontend,
    Backend,
    Listen,
    /// A section this import reads but does not translate (`userlist`, `peers`…).
    Other(String),
}

impl Kind {
    pub(crate) fn keyword(&self) -> &str {
        match self {
            Kind::Global => "global",
            Kind::Defaults => "defaults",
            Kind::Frontend => "frontend",
            Kind::Backend => "backend",
            Kind::Listen => "listen",
            Kind::Other(k) => k,
        }
    }

    /// Whether it takes traffic (`frontend`, `listen`).
    pub(crate) fn is_front(&self) -> bool {
        matches!(self, Kind::Frontend | Kind::Listen)
    }

    /// Whether it has servers (`backend`, `listen`).
    pub(crate) fn is_back(&self) -> bool {
        matches!(self, Kind::Backend | Kind::Listen)
    }
}

/// Sections HAProxy 2.x knows that this import does not translate.
const OTHER_SECTIONS: &[&str] = &[
    "userlist",
    "peers",
    "resolvers",
    "mailers",
    "program",
    "http-errors",
    "ring",
    "cache",
    "fcgi-app",
    "dynamic-update",
    "namespace_list",
    "log-forward",
    "crt-store",
    "traces",
];

/// One section, with its lines.
#[derive(Debug, Clone)]
pub(crate) struct Section {
    pub kind: Kind,
    pub name: Option<String>,
    /// The line of its keyword.
    pub line: usize,
    /// Its last directive's line (its keyword's when it has none).
    pub end: usize,
    /// The `defaults` section in force for it (index into the list): the last
    /// one before it, or the one it names with `from`.
    pub defaults: Option<usize>,
    pub lines: Vec<Line>,
}

/// Reads `text` (the file `path`) into sections.
pub(crate) fn parse(path: &Path, text: &str) -> Result<Vec<Section>, ImportError> {
    let mut sections: Vec<Section> = Vec::new();
    let mut last_defaults: Option<usize> = None;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let at = || Origin {
            file: path.to_owned(),
            line: n,
        };
        let words = split(raw).map_err(|message| ImportError::Syntax { at: at(), message })?;
        let Some(first) = words.first() else {
            continue;
        };
        let kind = match first.as_str() {
            "global" => Some(Kind::Global),
            "defaults" => Some(Kind::Defaults),
            "frontend" => Some(Kind::Frontend),
            "backend" => Some(Kind::Backend),
            "listen" => Some(Kind::Listen),
            k if OTHER_SECTIONS.contains(&k) => Some(Kind::Other(k.to_owned())),
            _ => None,
        };
        let Some(kind) = kind else {
            let Some(section) = sections.last_mut() else {
                return Err(ImportError::Syntax {
                    at: at(),
                    message: format!(
                        "unknown keyword '{first}' out of section (a directive must follow \
                         `global`, `defaults`, `frontend`, `backend` or `listen`)"
                    ),
                });
            };
            section.end = n;
            section.lines.push(Line {
                line: n,
                words,
                indented: raw.starts_with([' ', '\t']),
            });
            continue;
        };
        let name = words.get(1).cloned();
        if name.is_none() && matches!(kind, Kind::Frontend | Kind::Backend | Kind::Listen) {
            return Err(ImportError::Syntax {
                at: at(),
                message: format!("'{}' needs a name", kind.keyword()),
            });
        }
        // `frontend web from NAMED-DEFAULTS` (2.4+); `defaults NAME` names one.
        let mut defaults = last_defaults;
        if let (Some(from), Some(named)) = (words.get(2), words.get(3)) {
            if from == "from" {
                defaults = sections.iter().rposition(|s| {
                    s.kind == Kind::Defaults && s.name.as_deref() == Some(named.as_str())
                });
                if defaults.is_none() {
                    return Err(ImportError::Syntax {
                        at: at(),
                        message: format!("no defaults section named '{named}' before this"),
                    });
                }
            } else {
                return Err(ImportError::Syntax {
                    at: at(),
                    message: format!("unexpected '{from}' after the section's name"),
                });
            }
        } else if words.len() > 2 && kind != Kind::Global {
            return Err(ImportError::Syntax {
                at: at(),
                message: format!("unexpected '{}' after the section's name", words[2]),
            });
        }
        let is_defaults = kind == Kind::Defaults;
        sections.push(Section {
            kind,
            name,
            line: n,
            end: n,
            defaults: if is_defaults { None } else { defaults },
            lines: Vec::new(),
        });
        if is_defaults {
            last_defaults = Some(sections.len() - 1);
        }
    }
    Ok(sections)
}

/// Splits one line into words as HAProxy does; an unterminated quote is an error.
pub(crate) fn split(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    // Whether a word is being built (an empty quoted string `""` is a word).
    let mut in_word = false;
    let mut chars = line.chars().peekable();
    // None, Some('"') or Some('\'').
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some('\''), '\'') => quote = None,
            (Some('\''), c) => word.push(c),
            (Some('"'), '"') => quote = None,
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, '#') => break,
            (None, ' ' | '\t') => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (_, '\\') => {
                in_word = true;
                match chars.next() {
                    Some('t') => word.push('\t'),
                    Some('n') => word.push('\n'),
                    Some('r') => word.push('\r'),
                    Some('x') => {
                        let hex: String = chars.by_ref().take(2).collect();
                        match u8::from_str_radix(&hex, 16) {
                            Ok(b) if hex.len() == 2 => word.push(char::from(b)),
                            _ => return Err(format!("invalid escape '\\x{hex}'")),
                        }
                    }
                    Some(other) => word.push(other),
                    // A backslash ending the line is kept as written.
                    None => word.push('\\'),
                }
            }
            (_, c) => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if let Some(q) = quote {
        return Err(format!("unmatched quote ({q}) at the end of the line"));
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_quotes_escapes_and_comments() {
        assert_eq!(
            split(r#"  acl a hdr(host) -i "a b" 'c\ d' e\ f \# g # comment"#).unwrap(),
            [
                "acl",
                "a",
                "hdr(host)",
                "-i",
                "a b",
                r"c\ d",
                "e f",
                "#",
                "g"
            ]
        );
        assert_eq!(split(r#"x "" y\x41"#).unwrap(), ["x", "", "yA"]);
        assert_eq!(
            split(r#"option httpchk GET / "HTTP/1.1\r\nHost:\ a""#).unwrap()[4],
            "HTTP/1.1\r\nHost: a"
        );
        assert!(split(r#"x "unterminated"#).is_err());
        assert!(split("x 'unterminated").is_err());
        assert_eq!(split("   # only a comment").unwrap(), Vec::<String>::new());
    }

    #[test]
    fn sections_lines_and_defaults() {
        let text = "global\n  maxconn 10\ndefaults\n  timeout connect 5s\nfrontend web\n  bind :80\n\ndefaults named\nbackend b from named\n";
        let s = parse(Path::new("h.cfg"), text).unwrap();
        assert_eq!(s.len(), 5);
        assert_eq!(s[2].kind, Kind::Frontend);
        assert_eq!(s[2].defaults, Some(1));
        assert_eq!(s[2].lines[0].line, 6);
        assert_eq!(s[4].defaults, Some(3));
        let e = parse(Path::new("h.cfg"), "  bind :80\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("h.cfg:1: unknown keyword 'bind' out of section"),
            "{e}"
        );
        let e = parse(Path::new("h.cfg"), "global\nfrontend\n").unwrap_err();
        assert!(e.to_string().starts_with("h.cfg:2:"), "{e}");
    }
}
