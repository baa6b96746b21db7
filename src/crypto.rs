//! The one rustls crypto provider every TLS connection uses, both ways: aws-lc-rs,
//! rustls's default, chosen explicitly so that no other crate's features can make
//! rustls's process-wide default ambiguous.

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;

/// The crypto provider (built once).
pub(crate) fn provider() -> &'static Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER.get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
}
