//! TLS for connections the host makes (relay sinks, PostgreSQL): rustls on
//! the `ring` provider, trusting the system's root certificates plus, where
//! the operator gives one, a CA file of their own; and certificate errors in
//! words that say what failed and what to do.
//!
//! Relay sinks verify fully, always. PostgreSQL follows libpq's `sslmode`:
//! `verify-full` checks the chain and the name, `verify-ca` the chain only,
//! and `require` (without a root certificate) encrypts without checking who
//! answers ([`Verify`]).

use std::path::Path;
use std::sync::{Arc, LazyLock};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

/// The system's roots, read once (rustls-native-certs: the files and
/// directories OpenSSL would use, `SSL_CERT_FILE`/`SSL_CERT_DIR` first).
static SYSTEM_ROOTS: LazyLock<Vec<CertificateDer<'static>>> = LazyLock::new(|| {
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::warn!("reading the system's root certificates: {e}");
    }
    found.certs
});

/// How much of the server's certificate a connection checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verify {
    /// Its chain to a trusted root, its dates and its name.
    Full,
    /// Its chain and dates, not its name (PostgreSQL's `verify-ca`).
    Chain,
    /// Nothing: encryption against eavesdroppers only (PostgreSQL's
    /// `require` without a root certificate, as libpq does).
    Nothing,
}

/// Where a connection's trust comes from.
#[derive(Clone)]
pub struct TlsClient {
    config: Arc<ClientConfig>,
    /// The operator's CA file, for messages.
    ca_file: Option<String>,
    /// The option that names a CA file (`ca-file`, `sslrootcert`), for
    /// messages.
    ca_option: &'static str,
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
    /// if given, and verifies fully.
    pub fn new(ca_file: Option<&Path>) -> Result<TlsClient, String> {
        TlsClient::with(ca_file, "ca-file", Verify::Full)
    }

    /// Trusts the system's roots and the certificates of `ca_file`, given
    /// with the option `ca_option`, and checks what `verify` says.
    pub fn with(
        ca_file: Option<&Path>,
        ca_option: &'static str,
        verify: Verify,
    ) -> Result<TlsClient, String> {
        let mut roots = RootCertStore::empty();
        let (added, _) = roots.add_parsable_certificates(SYSTEM_ROOTS.iter().cloned());
        let mut own = 0;
        if let Some(path) = ca_file {
            let bad = |e: &dyn std::fmt::Display| format!("{ca_option} {}: {e}", path.display());
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| bad(&e))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad(&e))?;
            for c in certs {
                roots.add(c).map_err(|e| bad(&e))?;
                own += 1;
            }
            if own == 0 {
                return Err(bad(&"no PEM certificate in it"));
            }
        }
        if added + own == 0 && verify != Verify::Nothing {
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
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let config = match verify {
            Verify::Full => builder.with_root_certificates(roots),
            Verify::Chain | Verify::Nothing => {
                let chain = (verify == Verify::Chain)
                    .then(|| {
                        WebPkiServerVerifier::builder_with_provider(
                            Arc::new(roots),
                            provider.clone(),
                        )
                        .build()
                    })
                    .transpose()
                    .map_err(|e| e.to_string())?;
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(Relaxed { chain, provider }))
            }
        }
        .with_no_client_auth();
        Ok(TlsClient {
            config: Arc::new(config),
            ca_file: ca_file.map(|p| p.display().to_string()),
            ca_option,
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
        let option = self.ca_option;
        let trusted = match &self.ca_file {
            Some(f) => format!("the system's root certificates and the {option} {f}"),
            None => "the system's root certificates".into(),
        };
        let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
            return format!("TLS with {host}: {e}");
        };
        match tls {
            rustls::Error::InvalidCertificate(c) => match c {
                CertificateError::UnknownIssuer => format!(
                    "the certificate of {host} is not signed by a CA this host trusts ({trusted}); \
                     if the server uses a private CA, give its certificate with `{option}`"
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
                    "the certificate of {host} has expired (on {}); the server must renew it",
                    date(not_after.as_secs())
                ),
                CertificateError::Expired => {
                    format!("the certificate of {host} has expired; the server must renew it")
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

/// PostgreSQL's weaker modes. `verify-ca` (`chain`): the chain to a
/// trusted root and the dates, whatever name the certificate is for (the
/// WebPKI verifier checks the name last: a name error means all else
/// held). `require` without a root certificate (no `chain`): any
/// certificate, as libpq. Either way the handshake's signatures must hold
/// (the server has the key of the certificate it sent).
#[derive(Debug)]
struct Relaxed {
    chain: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Relaxed {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
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

/// The TLS side of a listener: its certificate chain and private key, PEM
/// files (the chain's first certificate is the server's own), HTTP/1.1.
pub fn server_config(
    cert_file: &Path,
    key_file: &Path,
) -> Result<Arc<rustls::ServerConfig>, String> {
    use rustls::pki_types::PrivateKeyDer;
    let chain = CertificateDer::pem_file_iter(cert_file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("--tls-cert {}: {e}", cert_file.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "--tls-cert {}: no PEM certificate in it",
            cert_file.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| format!("--tls-key {}: {e}", key_file.display()))?;
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| {
            format!(
                "--tls-cert {} and --tls-key {}: {e}",
                cert_file.display(),
                key_file.display()
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
