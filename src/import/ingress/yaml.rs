//! The manifests as YAML nodes that know their line (saphyr's marked nodes), and
//! the few accessors the translation needs. Documents are split on `---` by the
//! YAML loader; `kind: List` items are flattened by the caller.

use std::path::Path;

use saphyr::{LoadableYamlNode, MarkedYamlOwned, ScalarOwned, YamlDataOwned};

use super::super::{ImportError, Origin};

/// One node of a manifest.
pub(crate) type Node = MarkedYamlOwned;

/// Every document of `text` (read from `file`); empty documents are left out.
pub(crate) fn load(file: &Path, text: &str) -> Result<Vec<Node>, ImportError> {
    let docs = Node::load_from_str(text).map_err(|e| ImportError::Syntax {
        at: Origin {
            file: file.to_owned(),
            line: e.marker().line().max(1),
        },
        message: format!("invalid YAML: {}", e.info()),
    })?;
    Ok(docs
        .into_iter()
        .filter(|d| !matches!(d.data, YamlDataOwned::Value(ScalarOwned::Null)))
        .collect())
}

/// The first line of `n` (1-based).
pub(crate) fn line(n: &Node) -> usize {
    n.span.start.line().max(1)
}

/// The last line of `n`: a block node's span ends where the next token starts,
/// on a later line, so it ends on the line before (comments and blank lines
/// between are counted in); a flow or scalar node ends on its own line.
pub(crate) fn last_line(n: &Node) -> usize {
    let end = n.span.end.line();
    if end > line(n) {
        end - 1
    } else {
        line(n)
    }
}

/// `n[key]` of a mapping.
pub(crate) fn get<'a>(n: &'a Node, key: &str) -> Option<&'a Node> {
    n.data.as_mapping_get(key)
}

/// `n[a][b]…`.
pub(crate) fn path<'a>(n: &'a Node, keys: &[&str]) -> Option<&'a Node> {
    keys.iter().try_fold(n, |n, k| get(n, k))
}

/// A scalar as text (`"8000"`, `8000`, `true` alike); `None` for null,
/// sequences and mappings.
pub(crate) fn text(n: &Node) -> Option<String> {
    match &n.data {
        YamlDataOwned::Value(v) => match v {
            ScalarOwned::Null => None,
            ScalarOwned::Boolean(b) => Some(b.to_string()),
            ScalarOwned::Integer(i) => Some(i.to_string()),
            ScalarOwned::FloatingPoint(f) => Some(f.to_string()),
            ScalarOwned::String(s) => Some(s.clone()),
        },
        YamlDataOwned::Representation(s, _, _) => Some(s.clone()),
        YamlDataOwned::Tagged(_, inner) => text(inner),
        _ => None,
    }
}

/// `n[key]` as text.
pub(crate) fn str_at(n: &Node, key: &str) -> Option<String> {
    get(n, key).and_then(text)
}

/// The items of a sequence (none for anything else).
pub(crate) fn items(n: Option<&Node>) -> &[Node] {
    match n.map(|n| &n.data) {
        Some(YamlDataOwned::Sequence(s)) => s,
        _ => &[],
    }
}

/// The entries of a mapping with their keys as text, in the file's order.
pub(crate) fn entries(n: Option<&Node>) -> Vec<(String, &Node, &Node)> {
    match n.map(|n| &n.data) {
        Some(YamlDataOwned::Mapping(m)) => m
            .iter()
            .map(|(k, v)| (text(k).unwrap_or_default(), k, v))
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_one_based_and_errors_name_theirs() {
        let docs = load(
            Path::new("x.yaml"),
            "a: 1\n---\nkind: Ingress\nmetadata:\n  annotations:\n    k: \"v\"\n",
        )
        .unwrap();
        assert_eq!(docs.len(), 2);
        let ann = entries(path(&docs[1], &["metadata", "annotations"]));
        assert_eq!(ann[0].0, "k");
        assert_eq!(line(ann[0].1), 6);
        assert_eq!(text(ann[0].2).as_deref(), Some("v"));
        assert_eq!(line(&docs[1]), 3);
        let e = load(Path::new("x.yaml"), "a: 1\nb: [1, 2\nc: 3\n").unwrap_err();
        match e {
            ImportError::Syntax { at, .. } => assert!(at.line >= 2, "{at}"),
            other => panic!("{other}"),
        }
    }
}
