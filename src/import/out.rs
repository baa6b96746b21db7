//! The TOML an import writes: blocks in order, each with the comment lines that
//! say where it came from, then its header (`[[listener]]`, `[upstream.NAME]`…)
//! and its keys. Values are written by the `toml` crate (`toml::Value`'s
//! `Display`), so strings are escaped as TOML wants; inline tables (a server) are
//! values too.

use std::fmt::Write as _;

/// A TOML document being written.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Doc {
    blocks: Vec<Block>,
}

/// One table (or the document's top, with no header).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Block {
    /// Comment lines, without `# `.
    pub comments: Vec<String>,
    /// `[[route]]`, `[upstream.bots]`, `[route.telegram]`; empty: top-level keys.
    pub header: String,
    /// Keys in order, each with an optional trailing comment.
    pub keys: Vec<(String, toml::Value, Option<String>)>,
}

impl Block {
    /// A block under `header` with the comment `comment` (its origin).
    pub fn new(header: impl Into<String>, comment: impl Into<String>) -> Block {
        Block {
            comments: vec![comment.into()],
            header: header.into(),
            keys: Vec::new(),
        }
    }

    /// Adds `key = value`.
    pub fn set(&mut self, key: &str, value: impl Into<toml::Value>) -> &mut Block {
        self.keys.push((key.to_owned(), value.into(), None));
        self
    }

    /// Adds `key = value  # comment`.
    pub fn set_commented(
        &mut self,
        key: &str,
        value: impl Into<toml::Value>,
        comment: impl Into<String>,
    ) -> &mut Block {
        self.keys
            .push((key.to_owned(), value.into(), Some(comment.into())));
        self
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&toml::Value> {
        self.keys
            .iter()
            .find(|(k, _, _)| k == key)
            .map(|(_, v, _)| v)
    }
}

impl Doc {
    pub fn push(&mut self, block: Block) {
        self.blocks.push(block);
    }

    pub fn blocks(&self) -> &[Block] {
        &self.blocks
    }

    pub fn blocks_mut(&mut self) -> &mut Vec<Block> {
        &mut self.blocks
    }

    /// The document as text. A key is written bare when it is a TOML bare key,
    /// quoted otherwise (header names such as `"X-Real-IP"`).
    pub fn render(&self, title: &str) -> String {
        let mut s = String::new();
        for line in title.lines() {
            let _ = writeln!(s, "# {line}");
        }
        for b in &self.blocks {
            s.push('\n');
            for c in &b.comments {
                for line in c.lines() {
                    let _ = writeln!(s, "# {line}");
                }
            }
            if !b.header.is_empty() {
                let _ = writeln!(s, "{}", b.header);
            }
            for (k, v, c) in &b.keys {
                let _ = write!(s, "{} = {}", key(k), inline(v));
                if let Some(c) = c {
                    let _ = write!(s, "  # {c}");
                }
                s.push('\n');
            }
        }
        s
    }
}

/// A key, quoted when it is not bare.
pub fn key(k: &str) -> String {
    let bare = !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare {
        k.to_owned()
    } else {
        toml::Value::String(k.to_owned()).to_string()
    }
}

/// A value on one line: tables inline (`{ addr = "…", weight = 2 }`), arrays of
/// them on one line too.
pub fn inline(v: &toml::Value) -> String {
    match v {
        toml::Value::Table(t) => {
            let parts: Vec<String> = t
                .iter()
                .map(|(k, v)| format!("{} = {}", key(k), inline(v)))
                .collect();
            if parts.is_empty() {
                "{}".to_owned()
            } else {
                format!("{{ {} }}", parts.join(", "))
            }
        }
        toml::Value::Array(a) => {
            let parts: Vec<String> = a.iter().map(inline).collect();
            format!("[{}]", parts.join(", "))
        }
        other => other.to_string(),
    }
}

/// A table value from pairs, in order (`toml::Table` keeps insertion order only
/// with the `preserve_order` feature, so keys come out sorted; that is fine for
/// inline tables).
pub fn table<'a>(pairs: impl IntoIterator<Item = (&'a str, toml::Value)>) -> toml::Value {
    toml::Value::Table(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_reads_back_as_toml() {
        let mut d = Doc::default();
        let mut b = Block::new("[[route]]", "from nginx.conf:12-20");
        b.set("path", "/api/")
            .set_commented("upstream", "api", "proxy_pass http://api;")
            .set(
                "set_headers",
                table([("X-Real-IP", toml::Value::from("$remote_addr"))]),
            );
        d.push(b);
        let mut u = Block::new("[upstream.api]", "from nginx.conf:1-5");
        u.set(
            "servers",
            toml::Value::Array(vec![table([
                ("addr", toml::Value::from("10.0.0.1:80")),
                ("weight", toml::Value::from(2)),
            ])]),
        );
        d.push(u);
        let text = d.render("imported from nginx.conf");
        let v: toml::Table = text.parse().unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(v["route"][0]["path"].as_str(), Some("/api/"));
        assert_eq!(
            v["route"][0]["set_headers"]["X-Real-IP"].as_str(),
            Some("$remote_addr")
        );
        assert_eq!(
            v["upstream"]["api"]["servers"][0]["weight"].as_integer(),
            Some(2)
        );
        assert!(
            text.contains("# from nginx.conf:12-20\n[[route]]\n"),
            "{text}"
        );
    }
}
