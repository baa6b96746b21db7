//! `set_headers` values: literal text with nginx-style `$variables`, compiled once at
//! load so the request path only concatenates precomputed pieces.

use std::fmt::Write as _;

/// A variable a header template may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variable {
    /// The client's IP address.
    RemoteAddr,
    /// The chosen server's `ip:port`.
    UpstreamAddr,
    /// The request's host name, lower-cased, without port (nginx's `$host`).
    Host,
    /// `http` or `https`.
    Scheme,
    /// The request's id (kept from `X-Request-Id` or generated).
    RequestId,
    /// The request target: the path, normalised as it was routed, and the query as
    /// sent (nginx's `$request_uri` keeps the path as sent; here that path never
    /// leaves the proxy, see `crate::uri_path`).
    RequestUri,
    /// The path, normalised, without the query (nginx's `$uri`).
    Uri,
    /// The query, without `?` (nginx's `$args`); empty when there is none.
    Args,
    /// `?` when the request has a query, else empty (nginx's `$is_args`).
    IsArgs,
}

impl Variable {
    const ALL: &'static [(&'static str, Variable)] = &[
        ("remote_addr", Variable::RemoteAddr),
        ("upstream_addr", Variable::UpstreamAddr),
        ("host", Variable::Host),
        ("scheme", Variable::Scheme),
        ("request_id", Variable::RequestId),
        ("request_uri", Variable::RequestUri),
        ("uri", Variable::Uri),
        ("args", Variable::Args),
        ("is_args", Variable::IsArgs),
    ];

    /// The name as written after `$`.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, v)| *v == self)
            .map_or("", |(n, _)| n)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Literal(String),
    Var(Variable),
}

/// A compiled header value. An empty template removes the header, as an empty
/// `proxy_set_header` value does in nginx.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderTemplate {
    pub segments: Vec<Segment>,
}

impl HeaderTemplate {
    /// Parses `$name` and `${name}` references; `$$` is a literal dollar sign.
    pub fn parse(src: &str) -> Result<Self, String> {
        let mut segments = Vec::new();
        let mut lit = String::new();
        let mut rest = src;
        while let Some(pos) = rest.find('$') {
            lit.push_str(&rest[..pos]);
            rest = &rest[pos + 1..];
            if let Some(after) = rest.strip_prefix('$') {
                lit.push('$');
                rest = after;
                continue;
            }
            let (name, after) = if let Some(braced) = rest.strip_prefix('{') {
                let end = braced
                    .find('}')
                    .ok_or_else(|| format!("unclosed \"${{\" in {src:?}"))?;
                (&braced[..end], &braced[end + 1..])
            } else {
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                (&rest[..end], &rest[end..])
            };
            let var = Variable::ALL
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| *v)
                .ok_or_else(|| {
                    let mut known = String::new();
                    for (i, (n, _)) in Variable::ALL.iter().enumerate() {
                        let sep = if i == 0 { "" } else { ", " };
                        let _ = write!(known, "{sep}${n}");
                    }
                    format!("unknown variable \"${name}\" (known: {known})")
                })?;
            if !lit.is_empty() {
                segments.push(Segment::Literal(std::mem::take(&mut lit)));
            }
            segments.push(Segment::Var(var));
            rest = after;
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            segments.push(Segment::Literal(lit));
        }
        for s in &segments {
            if let Segment::Literal(l) = s {
                http::HeaderValue::from_str(l)
                    .map_err(|_| format!("{l:?} is not a valid header value"))?;
            }
        }
        Ok(HeaderTemplate { segments })
    }

    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// Whether the template uses `v`.
    pub fn uses(&self, v: Variable) -> bool {
        self.segments.contains(&Segment::Var(v))
    }

    /// The template as it would be written in the file (`$$` for a dollar sign,
    /// braces where a word follows a variable).
    pub fn source(&self) -> String {
        let mut s = String::new();
        for (i, seg) in self.segments.iter().enumerate() {
            match seg {
                Segment::Literal(l) => s.push_str(&l.replace('$', "$$")),
                Segment::Var(v) => {
                    let word_follows = matches!(
                        self.segments.get(i + 1),
                        Some(Segment::Literal(l))
                            if l.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
                    );
                    if word_follows {
                        let _ = write!(s, "${{{}}}", v.name());
                    } else {
                        let _ = write!(s, "${}", v.name());
                    }
                }
            }
        }
        s
    }

    /// Renders the template; `lookup` supplies each variable's value.
    pub fn render(&self, out: &mut String, mut lookup: impl FnMut(Variable, &mut String)) {
        for s in &self.segments {
            match s {
                Segment::Literal(l) => out.push_str(l),
                Segment::Var(v) => lookup(*v, out),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_variables_braces_and_dollar_escape() {
        let t = HeaderTemplate::parse("id-$upstream_addr/${host}x$$").unwrap();
        assert_eq!(
            t.segments,
            vec![
                Segment::Literal("id-".into()),
                Segment::Var(Variable::UpstreamAddr),
                Segment::Literal("/".into()),
                Segment::Var(Variable::Host),
                Segment::Literal("x$".into()),
            ]
        );
    }

    #[test]
    fn unknown_variable_is_named() {
        let e = HeaderTemplate::parse("$nope").unwrap_err();
        assert!(e.contains("\"$nope\""), "{e}");
        assert!(e.contains("$remote_addr"), "{e}");
    }

    #[test]
    fn empty_value_means_remove() {
        assert!(HeaderTemplate::parse("").unwrap().is_empty());
    }
}
