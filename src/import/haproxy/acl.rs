//! ACLs and conditions: what one `acl` line (or an anonymous `{ … }`) matches,
//! as a route can match it, and the intersection of two conditions.

use super::*;

/// A condition's term and an alternative of the next: their intersection, or
/// `None` when nothing satisfies both.
pub(super) fn and(c: &Conj, a: &Alt) -> Option<Conj> {
    let mut c = c.clone();
    match a {
        Alt::Const(true) => Some(c),
        Alt::Const(false) | Alt::Ssl | Alt::Src(_) => None,
        Alt::Host(hs) => {
            c.hosts = Some(match c.hosts.take() {
                None => hs.clone(),
                Some(old) => {
                    let mut v = Vec::new();
                    for x in &old {
                        for y in hs {
                            if let Some(z) = host_and(x, y) {
                                v.push(z);
                            }
                        }
                    }
                    v
                }
            });
            c.hosts.as_ref().is_some_and(|h| !h.is_empty()).then_some(c)
        }
        Alt::Path(ps) => {
            c.paths = Some(match c.paths.take() {
                None => ps.clone(),
                Some(old) => {
                    let mut v = Vec::new();
                    for x in &old {
                        for y in ps {
                            if let Some(z) = path_and(x, y) {
                                v.push(z);
                            }
                        }
                    }
                    v
                }
            });
            c.paths.as_ref().is_some_and(|p| !p.is_empty()).then_some(c)
        }
    }
}

fn host_and(a: &HostPat, b: &HostPat) -> Option<HostPat> {
    use HostPat::{Exact, Suffix};
    match (a, b) {
        (Exact(x), Exact(y)) => (x == y).then(|| a.clone()),
        (Exact(x), Suffix(s)) | (Suffix(s), Exact(x)) => {
            (x.len() > s.len() && x.ends_with(s.as_str())).then(|| Exact(x.clone()))
        }
        (Suffix(x), Suffix(y)) => {
            if x.ends_with(y.as_str()) {
                Some(a.clone())
            } else if y.ends_with(x.as_str()) {
                Some(b.clone())
            } else {
                None
            }
        }
    }
}

fn path_and(a: &PathPat, b: &PathPat) -> Option<PathPat> {
    use PathPat::{Exact, Prefix};
    match (a, b) {
        (Exact(x), Exact(y)) => (x == y).then(|| a.clone()),
        (Exact(x), Prefix(p)) | (Prefix(p), Exact(x)) => {
            x.starts_with(p.as_str()).then(|| Exact(x.clone()))
        }
        (Prefix(x), Prefix(y)) => {
            if x.starts_with(y.as_str()) {
                Some(a.clone())
            } else if y.starts_with(x.as_str()) {
                Some(b.clone())
            } else {
                None
            }
        }
    }
}

/// `CRITERION [FLAGS] PATTERNS` as one alternative, or why not.
pub(super) fn criterion(words: &[String]) -> Result<(Alt, Vec<(Carried, String)>), String> {
    let mut notes = Vec::new();
    let Some(crit) = words.first() else {
        return Err("no criterion".into());
    };
    let mut nocase = false;
    let mut method: Option<&str> = None;
    let mut i = 1;
    while i < words.len() && words[i].starts_with('-') {
        match words[i].as_str() {
            "-i" => nocase = true,
            "-m" => {
                method = words.get(i + 1).map(String::as_str);
                i += 1;
            }
            "--" => {
                i += 1;
                break;
            }
            "-f" => return Err("patterns from a file (-f) are not read".into()),
            other => return Err(format!("flag {other} is not translated")),
        }
        i += 1;
    }
    let patterns: Vec<String> = words[i..].to_vec();
    let crit_l = crit.to_ascii_lowercase();
    let kind = match (crit_l.as_str(), method) {
        ("ssl_fc", None) if patterns.is_empty() => return Ok((Alt::Ssl, notes)),
        ("src", None) if !patterns.is_empty() && !nocase => {
            return Ok((Alt::Src(patterns), notes));
        }
        ("path_beg", None) | ("path", Some("beg")) => "path_beg",
        ("path", None | Some("str")) => "path",
        ("hdr(host)" | "req.hdr(host)", None | Some("str")) => "host",
        ("hdr_end(host)", None) | ("hdr(host)" | "req.hdr(host)", Some("end")) => "host_end",
        ("hdr_dom(host)", None) | ("hdr(host)" | "req.hdr(host)", Some("dom")) => "host_dom",
        _ => {
            return Err(format!(
                "criterion `{crit}`{} has no route equivalent (routes match host exactly or by *. suffix, and path by prefix or exactly)",
                method.map(|m| format!(" -m {m}")).unwrap_or_default()
            ))
        }
    };
    if patterns.is_empty() {
        return Err("no pattern".into());
    }
    match kind {
        "path_beg" | "path" => {
            for p in &patterns {
                if !p.starts_with('/')
                    || p.contains("//")
                    || p.contains("/./")
                    || p.contains("/../")
                    || p.contains('%')
                {
                    return Err(format!("path `{p}` is not in the normal form routes match (starts with /, no //, dot segments or escapes)"));
                }
            }
            if nocase {
                notes.push((
                    Carried::Approximate,
                    "-i: paths are matched case-sensitively by Switchyard's router".to_owned(),
                ));
            }
            Ok((
                Alt::Path(
                    patterns
                        .into_iter()
                        .map(|p| {
                            if kind == "path" {
                                PathPat::Exact(p)
                            } else {
                                PathPat::Prefix(p)
                            }
                        })
                        .collect(),
                ),
                notes,
            ))
        }
        _ => {
            let mut hosts = Vec::new();
            for p in &patterns {
                if p.contains(':') {
                    return Err(format!(
                        "host `{p}` names a port; routes match the host without its port"
                    ));
                }
                let h = p.to_ascii_lowercase();
                if kind == "host" {
                    hosts.push(HostPat::Exact(h));
                } else if kind == "host_dom" {
                    notes.push((Carried::Approximate, format!("hdr_dom(host) {p}: translated as host {h} and *.{h}; HAProxy would also take names with it further left (such as {h}.example.net)")));
                    hosts.push(HostPat::Exact(h.clone()));
                    hosts.push(HostPat::Suffix(format!(".{h}")));
                } else if h.starts_with('.') && h.len() > 1 {
                    hosts.push(HostPat::Suffix(h));
                } else {
                    notes.push((Carried::Approximate, format!("hdr_end(host) {p}: translated as host {h} and *.{h}; HAProxy would also take names merely ending so (such as x{h})")));
                    hosts.push(HostPat::Exact(h.clone()));
                    hosts.push(HostPat::Suffix(format!(".{h}")));
                }
            }
            if !nocase {
                notes.push((Carried::Info, "without -i HAProxy compares the host's case; Switchyard matches host names in any case".to_owned()));
            }
            Ok((Alt::Host(hosts), notes))
        }
    }
}
