//! The normal form of a request path, on which requests are routed and which the
//! origin gets (the path filter, `pipeline::filter::path`), and in which the
//! configuration must write route paths (`config::route`). A module of its own,
//! below both.
//!
//! Normalising, in this order:
//! 1. percent-encoded unreserved characters (RFC 3986 §2.3: ALPHA DIGIT `-` `.`
//!    `_` `~`) are decoded, as they mean the same (`%61` is `a`, `%2e` is `.`);
//!    every other escape is kept, with upper-case hex digits (§6.2.2.1);
//! 2. runs of `/` become one (nginx's `merge_slashes`);
//! 3. dot segments are removed (RFC 3986 §5.2.4), those written `%2e` included.
//!
//! Refused (the filter answers 400): a path that climbs above `/` (nginx does the
//! same), a `%` not followed by two hex digits, and a dot segment hidden where an
//! origin could still find one: `..%2Fadmin` or `a%2F..` (an origin that decodes
//! `%2F` before resolving dots would climb), and `..;x` or `.;x` (Tomcat and other
//! Java servers drop `;` parameters first).
//!
//! `%2F` stays encoded here: it is data inside a segment (`/files/a%2Fb`, GitLab's
//! `group%2Fproject`), and the origin gets it as sent. Routing reads it as a slash
//! (the path filter), as an origin that decodes it would.
//!
//! Most paths have nothing to normalise: one without `%`, `//` or `/.` is left as
//! it is, found in one pass over its bytes, without allocating.

use std::borrow::Cow;

/// Why a path is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// More `..` segments than there are segments before them.
    AboveRoot,
    /// A `%` without two hex digits after it.
    BadEscape,
    /// `.` or `..` behind `%2F` or before `;` in a segment.
    HiddenDotSegment,
}

impl PathError {
    pub fn reason(self) -> &'static str {
        match self {
            PathError::AboveRoot => "path climbs above the root",
            PathError::BadEscape => "invalid percent-encoding in the path",
            PathError::HiddenDotSegment => "dot segment behind %2F or ';' in the path",
        }
    }
}

/// The normal form of `path` (which starts with `/`): `Borrowed` when it already
/// is one, without allocating when it has no `%`, `//` or `/.`.
pub fn normalise(path: &str) -> Result<Cow<'_, str>, PathError> {
    if is_clean(path) {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode_unreserved(path)?;
    let out = resolve(&decoded)?;
    Ok(if out == path {
        Cow::Borrowed(path)
    } else {
        Cow::Owned(out)
    })
}

/// No `%`, no `//`, no `/.`: nothing to decode, merge or resolve.
fn is_clean(path: &str) -> bool {
    let b = path.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        match c {
            b'%' => return false,
            b'/' if matches!(b.get(i + 1), Some(b'/' | b'.')) => return false,
            _ => {}
        }
    }
    true
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')
}

/// Step 1: escapes of unreserved characters decoded, the others in upper case.
/// `/` never comes out of an escape, so segments stay where they were.
fn decode_unreserved(path: &str) -> Result<String, PathError> {
    let b = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut from = 0;
    while let Some(off) = b[from..].iter().position(|&c| c == b'%') {
        let at = from + off;
        out.push_str(&path[from..at]);
        let (Some(hi), Some(lo)) = (
            b.get(at + 1).copied().and_then(hex),
            b.get(at + 2).copied().and_then(hex),
        ) else {
            return Err(PathError::BadEscape);
        };
        let c = hi << 4 | lo;
        if is_unreserved(c) {
            out.push(char::from(c));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(hi)]));
            out.push(char::from(HEX[usize::from(lo)]));
        }
        from = at + 3;
    }
    out.push_str(&path[from..]);
    Ok(out)
}

/// Steps 2 and 3 on a decoded path: empty segments merged away, `.` dropped, `..`
/// taking the segment before it; a trailing slash (or dot segment) keeps the
/// result's trailing slash.
fn resolve(path: &str) -> Result<String, PathError> {
    let mut out = String::with_capacity(path.len());
    let mut segments = path[1..].split('/').peekable();
    let mut trailing = false;
    while let Some(seg) = segments.next() {
        let last = segments.peek().is_none();
        match seg {
            "" | "." => trailing = last,
            ".." => {
                let parent = out.rfind('/').ok_or(PathError::AboveRoot)?;
                out.truncate(parent);
                trailing = last;
            }
            _ => {
                if hides_dot_segment(seg) {
                    return Err(PathError::HiddenDotSegment);
                }
                out.push('/');
                out.push_str(seg);
                trailing = false;
            }
        }
    }
    if trailing || out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// A segment (other than `.` and `..` themselves) that another server could still
/// read as a dot segment: split at `%2F` (decoded to `/` by some origins), or with
/// `;` parameters (dropped by others).
fn hides_dot_segment(seg: &str) -> bool {
    seg.split("%2F").any(|part| {
        let name = part.split(';').next().unwrap_or(part);
        name == "." || name == ".."
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn norm(p: &str) -> Result<String, PathError> {
        normalise(p).map(Cow::into_owned)
    }

    #[test]
    fn clean_paths_are_borrowed_without_work() {
        for p in [
            "/",
            "/api/v2/users/42",
            "/a.b/c;d=e",
            "/x/",
            "/~bob/index.html",
        ] {
            assert!(is_clean(p), "{p}");
            assert!(matches!(normalise(p), Ok(Cow::Borrowed(b)) if std::ptr::eq(b, p)));
        }
        // Looked at, but already normal: still borrowed.
        for p in ["/.well-known/acme", "/a/.b", "/%2F", "/a%2Fb%20c"] {
            assert!(!is_clean(p), "{p}");
            assert!(matches!(normalise(p), Ok(Cow::Borrowed(_))), "{p}");
        }
    }

    #[test]
    fn dot_segments_slashes_and_unreserved_escapes() {
        let cases = [
            ("/public/../admin/x", "/admin/x"),
            ("/public/%2e%2e/admin/x", "/admin/x"),
            ("/public/%2E%2e/admin/x", "/admin/x"),
            ("/public/.%2e/admin/x", "/admin/x"),
            ("//admin/x", "/admin/x"),
            ("/./admin/x", "/admin/x"),
            ("/%2e/admin/x", "/admin/x"),
            ("/a//..//b", "/b"),
            ("/a/b/../../c", "/c"),
            ("/%61dmin/%7Ebob", "/admin/~bob"),
            ("/a/.", "/a/"),
            ("/a/..", "/"),
            ("/a/b/..", "/a/"),
            ("/a//", "/a/"),
            ("//", "/"),
            ("/.", "/"),
            ("/./", "/"),
            ("/a/./b/", "/a/b/"),
            ("/...", "/..."),
            ("/a/.b/..c", "/a/.b/..c"),
            ("/admin%2fx", "/admin%2Fx"),
            ("/a%2f%2F/b", "/a%2F%2F/b"),
            ("/%e2%82%ac", "/%E2%82%AC"),
            ("/a%20b", "/a%20b"),
            ("/%25%32%65", "/%252e"),
        ];
        for (from, to) in cases {
            assert_eq!(norm(from).as_deref(), Ok(to), "{from}");
        }
    }

    #[test]
    fn refusals() {
        for p in ["/..", "/../a", "/a/../..", "/%2e%2e/x", "/a/./../.."] {
            assert_eq!(norm(p), Err(PathError::AboveRoot), "{p}");
        }
        for p in ["/%", "/a%2", "/a%zz", "/%g1", "/a%2/b"] {
            assert_eq!(norm(p), Err(PathError::BadEscape), "{p}");
        }
        for p in [
            "/public/..%2fadmin",
            "/public/%2e%2e%2Fadmin",
            "/a%2F..",
            "/a%2F.%2Fb",
            "/public/..;/admin",
            "/.;x/a",
        ] {
            assert_eq!(norm(p), Err(PathError::HiddenDotSegment), "{p}");
        }
    }

    /// Pieces that make every interesting path: separators, dots plain and
    /// encoded, encoded slashes, parameters, unreserved and other escapes, broken
    /// escapes, names.
    fn piece() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "/", "/", "/", ".", "..", "%2e", "%2E", "%2f", "%2F", ";", "a", "b", "%41", "%7e",
            "%20", "%", "%z", "~", "-",
        ])
    }

    proptest! {
        #[test]
        fn normal_forms_are_fixed_points(pieces in prop::collection::vec(piece(), 0..14)) {
            let path = format!("/{}", pieces.concat());
            if let Ok(once) = normalise(&path) {
                let twice = normalise(&once).expect("a normal form is accepted");
                prop_assert!(matches!(twice, Cow::Borrowed(_)), "{path} → {once} → {twice}");
                prop_assert!(once.starts_with('/'), "{path} → {once}");
                for bad in ["/./", "/../", "//"] {
                    prop_assert!(!once.contains(bad), "{path} → {once}");
                }
                prop_assert!(!once.ends_with("/.") && !once.ends_with("/.."), "{path} → {once}");
            }
        }
    }
}
