//! Which Redis a store talks to: the URL forms the configuration accepts, checked
//! without any I/O, and a form of the address that is safe to log.

use ::redis::{Client, ConnectionAddr};

/// Why a store URL is refused (reported by the configuration check, at its key).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("{0:?} is not a Redis URL: use redis://host:port/db or redis+unix:///path/redis.sock")]
    Scheme(String),
    /// redis-rs is built without TLS: a `rediss://` store would fail at every
    /// connect, so it is refused where the configuration names it.
    #[error("rediss:// (TLS to Redis) is not supported: use a Unix socket or a private network")]
    Tls,
    #[error("invalid Redis URL: {0}")]
    Invalid(String),
}

/// A checked store URL.
#[derive(Debug, Clone)]
pub(crate) struct Location {
    /// The client: it holds the address and the handshake (password, database)
    /// and connects only when asked.
    pub(crate) client: Client,
    /// The address without credentials, for logs.
    pub(crate) shown: String,
}

/// Checks `url` and prepares a client for it, connecting to nothing. Accepted:
/// `redis://[user:password@]host:port[/db]`, and a Unix socket as
/// `redis+unix:///path/redis.sock[?db=N]` or `unix:///path/redis.sock[?db=N]`
/// (redis-rs reads all three itself).
pub(crate) fn parse(url: &str) -> Result<Location, UrlError> {
    let scheme = url.split_once("://").map_or("", |(s, _)| s);
    match scheme {
        "redis" | "redis+unix" | "unix" => {}
        "rediss" => return Err(UrlError::Tls),
        _ => return Err(UrlError::Scheme(url.to_owned())),
    }
    let client = Client::open(url).map_err(|e| UrlError::Invalid(e.to_string()))?;
    let info = client.get_connection_info();
    let db = info.redis_settings().db();
    let shown = match info.addr() {
        ConnectionAddr::Tcp(host, port) => format!("redis://{host}:{port}/{db}"),
        ConnectionAddr::Unix(path) if db == 0 => format!("redis+unix://{}", path.display()),
        ConnectionAddr::Unix(path) => format!("redis+unix://{}?db={db}", path.display()),
        // Only `rediss://` makes a TLS address, and it is refused above.
        _ => return Err(UrlError::Tls),
    };
    Ok(Location { client, shown })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configured_forms_are_accepted_and_shown_without_credentials() {
        for (url, shown) in [
            ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
            (
                "redis://redis.internal:6380/3",
                "redis://redis.internal:6380/3",
            ),
            ("redis://:secret@10.0.0.5:6379/1", "redis://10.0.0.5:6379/1"),
            (
                "redis+unix:///run/redis/redis.sock",
                "redis+unix:///run/redis/redis.sock",
            ),
            (
                "unix:///run/redis.sock?db=2",
                "redis+unix:///run/redis.sock?db=2",
            ),
        ] {
            let location = parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(location.shown, shown, "{url}");
        }
    }

    #[test]
    fn other_schemes_and_tls_are_refused() {
        assert_eq!(parse("rediss://h:6379/0").unwrap_err(), UrlError::Tls);
        for url in ["http://h:6379", "h:6379", "", "memcached://h:11211"] {
            assert!(
                matches!(parse(url), Err(UrlError::Scheme(_))),
                "{url} is refused as a scheme"
            );
        }
        assert!(matches!(
            parse("redis://h:6379/notadb"),
            Err(UrlError::Invalid(_))
        ));
    }
}
