//! `switchyard import nginx`: nginx's configuration (`parse`: the syntax and
//! `include`) translated into Switchyard's (`translate`), with a note for every
//! directive that is not carried over exactly.

mod known;
mod parse;
mod translate;
mod units;
mod values;

use std::path::Path;

use super::{ImportError, Imported};

/// Imports the nginx configuration at `path` (and the files it includes).
pub fn import(path: &Path) -> Result<Imported, ImportError> {
    let tree = parse::parse(path)?;
    translate::translate(path, &tree)
}
