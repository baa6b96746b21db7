//! nginx's units (times, sizes, rates) and variables, as Switchyard writes them.

/// nginx's time (`30`, `500ms`, `1m30s`, `2h`) in milliseconds.
pub(crate) fn time_ms(s: &str) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    if let Ok(n) = s.parse::<u64>() {
        return n.checked_mul(1000);
    }
    let mut total: u64 = 0;
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let n: u64 = s[start..i].parse().ok()?;
        let unit_start = i;
        while i < b.len() && !b[i].is_ascii_digit() {
            i += 1;
        }
        let ms = match &s[unit_start..i] {
            "ms" => 1,
            "s" | "" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            "M" => 30 * 86_400_000,
            "y" => 365 * 86_400_000,
            _ => return None,
        };
        total = total.checked_add(n.checked_mul(ms)?)?;
    }
    Some(total)
}

/// A duration as Switchyard writes it (`"250ms"`, `"30s"`, `"5m"`, `"2h"`).
pub(crate) fn duration(ms: u64) -> String {
    if !ms.is_multiple_of(1000) {
        format!("{ms}ms")
    } else if ms.is_multiple_of(3_600_000) && ms > 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) && ms > 0 {
        format!("{}m", ms / 60_000)
    } else {
        format!("{}s", ms / 1000)
    }
}

/// nginx's size (`512`, `16k`, `10m`, `1g`) in bytes.
pub(crate) fn size(s: &str) -> Option<u64> {
    let (n, mult) = match s.as_bytes().last()? {
        b'k' | b'K' => (&s[..s.len() - 1], 1024),
        b'm' | b'M' => (&s[..s.len() - 1], 1024 * 1024),
        b'g' | b'G' => (&s[..s.len() - 1], 1024 * 1024 * 1024),
        _ => (s, 1),
    };
    n.parse::<u64>().ok()?.checked_mul(mult)
}

/// A size as Switchyard writes it (`"10MiB"`, `"512"`).
pub(crate) fn size_text(n: u64) -> toml::Value {
    const K: u64 = 1024;
    if n == 0 {
        toml::Value::Integer(0)
    } else if n.is_multiple_of(K * K * K) {
        format!("{}GiB", n / (K * K * K)).into()
    } else if n.is_multiple_of(K * K) {
        format!("{}MiB", n / (K * K)).into()
    } else if n.is_multiple_of(K) {
        format!("{}KiB", n / K).into()
    } else {
        toml::Value::Integer(n as i64)
    }
}

/// One piece of an nginx value with variables.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Piece {
    Lit(String),
    Var(String),
}

/// Splits `$name` and `${name}` out of `s`.
pub(crate) fn pieces(s: &str) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut lit = String::new();
    let b: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < b.len() {
        if b[i] == '$' && i + 1 < b.len() {
            let (name, next) = if b[i + 1] == '{' {
                match b[i + 2..].iter().position(|&c| c == '}') {
                    Some(p) => (b[i + 2..i + 2 + p].iter().collect::<String>(), i + 3 + p),
                    None => (String::new(), i),
                }
            } else {
                let mut j = i + 1;
                while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == '_') {
                    j += 1;
                }
                (b[i + 1..j].iter().collect(), j)
            };
            if !name.is_empty() {
                if !lit.is_empty() {
                    out.push(Piece::Lit(std::mem::take(&mut lit)));
                }
                out.push(Piece::Var(name));
                i = next;
                continue;
            }
        }
        lit.push(b[i]);
        i += 1;
    }
    if !lit.is_empty() {
        out.push(Piece::Lit(lit));
    }
    out
}

/// nginx variables Switchyard's templates (`set_headers`, `redirect`) know by
/// the same name and meaning.
const SAME: &[&str] = &[
    "remote_addr",
    "host",
    "scheme",
    "request_uri",
    "uri",
    "args",
    "is_args",
    "request_id",
];

/// `s` as a Switchyard template, with `fixed` variables replaced by their value
/// (`$server_name`, `$proxy_host`); `Err(names)` lists the variables it cannot
/// carry.
pub(crate) fn template(s: &str, fixed: &[(&str, &str)]) -> Result<String, Vec<String>> {
    let mut out = String::new();
    let mut bad = Vec::new();
    for p in pieces(s) {
        match p {
            Piece::Lit(l) => out.push_str(&l.replace('$', "$$")),
            Piece::Var(v) => {
                let v = if v == "query_string" {
                    "args".to_owned()
                } else {
                    v
                };
                if SAME.contains(&v.as_str()) {
                    out.push_str("${");
                    out.push_str(&v);
                    out.push('}');
                } else if let Some((_, val)) = fixed.iter().find(|(n, _)| *n == v) {
                    out.push_str(&val.replace('$', "$$"));
                } else {
                    bad.push(format!("${v}"));
                }
            }
        }
    }
    if bad.is_empty() {
        // Written `$host` rather than `${host}` where nothing follows that
        // could be read as part of the name.
        Ok(tidy(&out))
    } else {
        Err(bad)
    }
}

/// `${name}` → `$name` where the next character cannot continue a name.
fn tidy(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(p) = rest.find("${") {
        out.push_str(&rest[..p]);
        let after = &rest[p + 2..];
        let Some(close) = after.find('}') else {
            out.push_str(&rest[p..]);
            return out;
        };
        let name = &after[..close];
        let next = after[close + 1..].chars().next();
        if next.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            out.push_str(&rest[p..p + 3 + close]);
        } else {
            out.push('$');
            out.push_str(name);
        }
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_sizes() {
        assert_eq!(time_ms("30"), Some(30_000));
        assert_eq!(time_ms("1m30s"), Some(90_000));
        assert_eq!(time_ms("500ms"), Some(500));
        assert_eq!(time_ms("x"), None);
        assert_eq!(duration(90_000), "90s");
        assert_eq!(duration(120_000), "2m");
        assert_eq!(duration(250), "250ms");
        assert_eq!(size("10m"), Some(10 << 20));
        assert_eq!(size_text(10 << 20), toml::Value::from("10MiB"));
        assert_eq!(size_text(1000), toml::Value::from(1000));
    }

    #[test]
    fn templates_keep_known_variables_and_name_the_others() {
        assert_eq!(
            template("https://$host$request_uri", &[]).unwrap(),
            "https://$host$request_uri"
        );
        assert_eq!(template("${host}x", &[]).unwrap(), "${host}x");
        assert_eq!(
            template(
                "https://$server_name$request_uri",
                &[("server_name", "a.example")]
            )
            .unwrap(),
            "https://a.example$request_uri"
        );
        assert_eq!(template("$http_x_y", &[]).unwrap_err(), vec!["$http_x_y"]);
    }
}
