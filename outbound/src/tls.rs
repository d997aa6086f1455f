//! Opportunistic STARTTLS for outbound connections: encryption without certificate
//! verification (why: see `smtp_wire::tls_client`), as Postfix's "may" level.

use tokio_rustls::TlsConnector;

/// The connector used for STARTTLS to every destination.
pub fn opportunistic_connector() -> Result<TlsConnector, rustls::Error> {
    Ok(TlsConnector::from(
        smtp_wire::tls_client::unverified_client_config()?,
    ))
}
