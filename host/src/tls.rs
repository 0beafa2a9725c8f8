//! TLS for connections the host makes (relay sinks): rustls on the `ring`
//! provider, trusting the system's root certificates plus, where the
//! operator gives one, a CA file of their own; and certificate errors in
//! words that say what failed and what to do.
//!
//! Nothing here accepts a certificate that does not verify: there is no
//! "insecure" switch.

use std::path::Path;
use std::sync::{Arc, LazyLock};

use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use rustls::{CertificateError, ClientConfig, RootCertStore};

/// The system's roots, read once (rustls-native-certs: the files and
/// directories OpenSSL would use, `SSL_CERT_FILE`/`SSL_CERT_DIR` first).
static SYSTEM_ROOTS: LazyLock<Vec<CertificateDer<'static>>> = LazyLock::new(|| {
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::warn!("reading the system's root certificates: {e}");
    }
    found.certs
});

/// Where a connection's trust comes from.
#[derive(Clone)]
pub struct TlsClient {
    config: Arc<ClientConfig>,
    /// The operator's CA file, for messages.
    ca_file: Option<String>,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient")
            .field("ca_file", &self.ca_file)
            .finish_non_exhaustive()
    }
}

impl TlsClient {
    /// Trusts the system's roots and the certificates of `ca_file` (PEM),
    /// if given.
    pub fn new(ca_file: Option<&Path>) -> Result<TlsClient, String> {
        let mut roots = RootCertStore::empty();
        let (added, _) = roots.add_parsable_certificates(SYSTEM_ROOTS.iter().cloned());
        let mut own = 0;
        if let Some(path) = ca_file {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("ca-file {}: {e}", path.display()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("ca-file {}: {e}", path.display()))?;
            for c in certs {
                roots
                    .add(c)
                    .map_err(|e| format!("ca-file {}: {e}", path.display()))?;
                own += 1;
            }
            if own == 0 {
                return Err(format!(
                    "ca-file {}: no PEM certificate in it",
                    path.display()
                ));
            }
        }
        if added + own == 0 {
            return Err(
                "no root certificate to trust: the system has none (install ca-certificates) \
                 and no ca-file was given"
                    .into(),
            );
        }
        // ring: it builds with the C compiler alone (aws-lc-rs, whose
        // provider also offers post-quantum key exchange, wants cmake).
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(TlsClient {
            config: Arc::new(config),
            ca_file: ca_file.map(|p| p.display().to_string()),
        })
    }

    /// Opens TLS over `stream` to `host` (a DNS name or an IP address).
    pub async fn connect<S>(
        &self,
        host: &str,
        stream: S,
    ) -> Result<tokio_rustls::client::TlsStream<S>, String>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let name = ServerName::try_from(host.trim_start_matches('[').trim_end_matches(']'))
            .map_err(|e| format!("{host}: not a name a certificate can be for: {e}"))?
            .to_owned();
        tokio_rustls::TlsConnector::from(self.config.clone())
            .connect(name, stream)
            .await
            .map_err(|e| self.explain(host, &e))
    }

    /// A failed handshake with `host`, in words.
    fn explain(&self, host: &str, e: &std::io::Error) -> String {
        let trusted = match &self.ca_file {
            Some(f) => format!("the system's root certificates and the ca-file {f}"),
            None => "the system's root certificates".into(),
        };
        let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
            return format!("TLS with {host}: {e}");
        };
        match tls {
            rustls::Error::InvalidCertificate(c) => match c {
                CertificateError::UnknownIssuer => format!(
                    "the certificate of {host} is not signed by a CA this host trusts ({trusted}); \
                     if the receiver uses a private CA, give its certificate with `ca-file`"
                ),
                CertificateError::NotValidForNameContext { presented, .. } => format!(
                    "the certificate of {host} is not valid for the name {host} (it is for {}); \
                     use a name the certificate was issued for in the url",
                    presented
                        .iter()
                        .map(|p| bare_name(p))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                CertificateError::NotValidForName => format!(
                    "the certificate of {host} is not valid for the name {host}; use a name the \
                     certificate was issued for in the url"
                ),
                CertificateError::ExpiredContext { not_after, .. } => format!(
                    "the certificate of {host} has expired (on {}); the receiver must renew it",
                    date(not_after.as_secs())
                ),
                CertificateError::Expired => {
                    format!("the certificate of {host} has expired; the receiver must renew it")
                }
                CertificateError::NotValidYetContext { not_before, .. } => format!(
                    "the certificate of {host} is not valid yet (from {}); check both clocks",
                    date(not_before.as_secs())
                ),
                CertificateError::NotValidYet => {
                    format!("the certificate of {host} is not valid yet; check both clocks")
                }
                other => format!("the certificate of {host} was refused: {other:?}"),
            },
            other => format!("TLS handshake with {host} failed: {other}"),
        }
    }
}

/// A certificate's date, for messages.
fn date(unix: u64) -> String {
    chrono::DateTime::from_timestamp(unix as i64, 0)
        .map(|d| d.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|| unix.to_string())
}

/// `DnsName("a.example")` (how rustls shows a certificate's names) as
/// `a.example`.
fn bare_name(shown: &str) -> &str {
    shown
        .split_once('(')
        .and_then(|(_, rest)| rest.strip_suffix(')'))
        .map(|inner| inner.trim_matches('"'))
        .unwrap_or(shown)
}
