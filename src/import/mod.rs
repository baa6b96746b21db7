//! `switchyard import nginx|haproxy|ingress`: a drop-in replacement starts from
//! the configuration the user already runs (issue 17). Each format reads its
//! files (one module each: `nginx`, `haproxy`, `ingress`), and writes a commented
//! TOML document (`out::Doc`; every block says which source lines it came from)
//! plus a `Note` for every directive it dropped or translated approximately. The
//! command prints the notes on stderr as `FILE:LINE: directive: what happened and
//! what to do` and exits 0 when nothing was noted, 3 when something was (the
//! TOML is still written), 1 when the input could not be read (a syntax error,
//! like `nginx -t`).

pub mod out;

use std::fmt;
use std::path::{Path, PathBuf};

pub use out::Doc;

/// Exit status when everything was translated exactly.
pub const EXIT_EXACT: u8 = 0;
/// Exit status when the input could not be read.
pub const EXIT_INVALID: u8 = 1;
/// Exit status when something was dropped or translated approximately.
pub const EXIT_NOTED: u8 = 3;

/// The formats `import` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Nginx,
    Haproxy,
    Ingress,
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "nginx" => Some(Format::Nginx),
            "haproxy" => Some(Format::Haproxy),
            "ingress" => Some(Format::Ingress),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Nginx => "nginx",
            Format::Haproxy => "haproxy",
            Format::Ingress => "ingress",
        }
    }
}

/// Where in the source something came from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Origin {
    pub file: PathBuf,
    pub line: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// How a directive was carried over, when not exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carried {
    /// Not at all.
    Dropped,
    /// Into something close but not the same.
    Approximate,
    /// Exactly, but worth saying (where it now lives, a default that changed).
    /// Does not make the exit status 3.
    Info,
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub at: Origin,
    /// The directive as the source names it (`proxy_cache`, `option httplog`,
    /// `nginx.ingress.kubernetes.io/rewrite-target`).
    pub directive: String,
    pub carried: Carried,
    /// What happened and what to do.
    pub message: String,
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.at, self.directive, self.message)
    }
}

/// An input that cannot be read at all.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{at}: {message}")]
    Syntax { at: Origin, message: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What an import gives: the TOML and the report.
#[derive(Debug, Default)]
pub struct Imported {
    pub doc: Doc,
    pub notes: Vec<Note>,
}

impl Imported {
    pub fn note(
        &mut self,
        at: &Origin,
        directive: impl Into<String>,
        carried: Carried,
        message: impl Into<String>,
    ) {
        self.notes.push(Note {
            at: at.clone(),
            directive: directive.into(),
            carried,
            message: message.into(),
        });
    }

    /// The exit status: 3 when anything was dropped or approximated.
    pub fn status(&self) -> u8 {
        if self.notes.iter().any(|n| n.carried != Carried::Info) {
            EXIT_NOTED
        } else {
            EXIT_EXACT
        }
    }
}

/// Imports `files` (the first is the main one) as `format`.
pub fn import(format: Format, files: &[PathBuf]) -> Result<Imported, ImportError> {
    match format {
        Format::Nginx => nginx::import(&files[0]),
        Format::Haproxy => haproxy::import(&files[0]),
        Format::Ingress => ingress::import(files),
    }
}

/// Reads `path` as text.
pub fn read(path: &Path) -> Result<String, ImportError> {
    std::fs::read_to_string(path).map_err(|source| ImportError::Io {
        path: path.to_owned(),
        source,
    })
}

pub mod haproxy;
pub mod ingress;
pub mod nginx;
