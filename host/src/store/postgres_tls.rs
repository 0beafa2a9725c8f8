//! TLS to PostgreSQL, as libpq's `sslmode` and `sslrootcert` say, over
//! [`crate::tls`] (rustls).
//!
//! tokio-postgres knows `sslmode=disable|prefer|require` and no
//! `sslrootcert`, so the store takes both out of the URL itself:
//!
//! | `sslmode`          | TLS                        | the server's certificate          |
//! |--------------------|----------------------------|-----------------------------------|
//! | `disable`          | never                      | -                                 |
//! | `prefer` (default) | when the server offers it  | unchecked (its chain, with `sslrootcert`) |
//! | `require`          | always                     | unchecked (its chain, with `sslrootcert`) |
//! | `verify-ca`        | always                     | its chain to a trusted root       |
//! | `verify-full`      | always                     | its chain and the host's name     |
//!
//! Trusted roots: the system's, plus the PEM file `sslrootcert` names.

use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::Socket;
use tokio_postgres::config::SslMode;
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};

use crate::tls::{TlsClient, Verify};

/// What the URL asks of TLS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct TlsSettings {
    /// `sslmode`, as libpq spells it.
    pub mode: String,
    /// `sslrootcert`.
    pub root_cert: Option<PathBuf>,
}

impl Default for TlsSettings {
    fn default() -> Self {
        TlsSettings {
            mode: "prefer".into(),
            root_cert: None,
        }
    }
}

/// Takes `sslmode` and `sslrootcert` out of a store URL (either form:
/// `postgres://…?sslmode=…` or libpq's `key=value …`), giving the rest for
/// tokio-postgres.
pub(super) fn split(url: &str) -> Result<(String, TlsSettings), String> {
    let mut settings = TlsSettings::default();
    let mut take = |key: &str, value: String| -> Result<bool, String> {
        match key {
            "sslmode" => settings.mode = value,
            "sslrootcert" => settings.root_cert = Some(PathBuf::from(value)),
            "sslcert" | "sslkey" | "sslpassword" | "sslcrl" | "sslcrldir" => {
                return Err(format!(
                    "{key}: client certificates and revocation lists are not supported; \
                     authenticate with a password (or trust on a unix socket)"
                ));
            }
            _ => return Ok(false),
        }
        Ok(true)
    };
    let rest = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((base, query)) = url.split_once('?') else {
            return Ok((url.to_string(), settings));
        };
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_encoding::percent_decode_str(v)
                .decode_utf8()
                .map_err(|_| format!("{k}: not UTF-8 once decoded"))?
                .into_owned();
            if !take(k, value)? {
                kept.push(pair);
            }
        }
        if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        }
    } else {
        let mut kept = Vec::new();
        for (k, v) in key_values(url)? {
            if !take(&k, v.clone())? {
                kept.push(format!(
                    "{k}='{}'",
                    v.replace('\\', "\\\\").replace('\'', "\\'")
                ));
            }
        }
        kept.join(" ")
    };
    Ok((rest, settings))
}

/// libpq's `key = value` pairs; a value may be single-quoted, with `\'`
/// and `\\` escapes.
fn key_values(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(format!("{key:?} has no value (expected key=value)"));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\'') => break,
                    Some('\\') => value.push(chars.next().ok_or("unterminated quote")?),
                    Some(c) => value.push(c),
                    None => return Err(format!("{key}: unterminated quote")),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.push(chars.next().ok_or("a trailing backslash")?);
                } else {
                    value.push(c);
                }
            }
        }
        out.push((key, value));
    }
}

impl TlsSettings {
    /// tokio-postgres's mode and the connector for these settings.
    pub(super) fn connector(&self) -> Result<(SslMode, PgTls), String> {
        let root = self.root_cert.as_deref();
        let checked_if_rooted = if root.is_some() {
            Verify::Chain
        } else {
            Verify::Nothing
        };
        let (mode, verify) = match self.mode.as_str() {
            "disable" => return Ok((SslMode::Disable, PgTls(None))),
            "prefer" => (SslMode::Prefer, checked_if_rooted),
            "require" => (SslMode::Require, checked_if_rooted),
            "verify-ca" => (SslMode::Require, Verify::Chain),
            "verify-full" => (SslMode::Require, Verify::Full),
            other => {
                return Err(format!(
                    "sslmode={other}: use disable, prefer, require, verify-ca or verify-full"
                ));
            }
        };
        let client = TlsClient::with(root, "sslrootcert", verify)?;
        Ok((mode, PgTls(Some(client))))
    }
}

/// tokio-postgres's side of [`TlsClient`].
#[derive(Clone, Debug)]
pub(super) struct PgTls(Option<TlsClient>);

impl MakeTlsConnect<Socket> for PgTls {
    type Stream = PgTlsStream;
    type TlsConnect = PgTlsConnect;
    type Error = std::convert::Infallible;

    fn make_tls_connect(&mut self, domain: &str) -> Result<PgTlsConnect, Self::Error> {
        Ok(PgTlsConnect {
            client: self.0.clone(),
            domain: domain.to_string(),
        })
    }
}

/// One connection's handshake.
pub(super) struct PgTlsConnect {
    client: Option<TlsClient>,
    domain: String,
}

impl TlsConnect<Socket> for PgTlsConnect {
    type Stream = PgTlsStream;
    type Error = String;
    type Future = BoxFuture<'static, Result<PgTlsStream, String>>;

    fn connect(self, stream: Socket) -> Self::Future {
        Box::pin(async move {
            let client = self
                .client
                .ok_or("TLS is off (sslmode=disable) but the connection asked for it")?;
            Ok(PgTlsStream(client.connect(&self.domain, stream).await?))
        })
    }
}

/// A TLS connection to the server.
pub(super) struct PgTlsStream(tokio_rustls::client::TlsStream<Socket>);

impl TlsStream for PgTlsStream {
    fn channel_binding(&self) -> ChannelBinding {
        // SCRAM's tls-server-end-point binding hashes the certificate with
        // its signature's hash; without it, SCRAM-SHA-256 (not -PLUS) runs,
        // as tokio-postgres's default `channel_binding=prefer` allows.
        ChannelBinding::none()
    }
}

impl AsyncRead for PgTlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for PgTlsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_tls_settings_out_of_both_url_forms() {
        let (rest, s) = split(
            "postgres://u:p@db.example:5432/app?sslmode=verify-full&application_name=x&sslrootcert=%2Fetc%2Fca.pem",
        )
        .unwrap();
        assert_eq!(
            rest,
            "postgres://u:p@db.example:5432/app?application_name=x"
        );
        assert_eq!(s.mode, "verify-full");
        assert_eq!(s.root_cert, Some(PathBuf::from("/etc/ca.pem")));
        let (rest, s) = split("postgres://u@h/app?sslmode=require").unwrap();
        assert_eq!(
            (rest.as_str(), s.mode.as_str()),
            ("postgres://u@h/app", "require")
        );
        let (rest, s) = split("postgres://u@h/app").unwrap();
        assert_eq!(rest, "postgres://u@h/app");
        assert_eq!(s, TlsSettings::default());

        let (rest, s) = split(
            "host=db port = 5432 sslmode=verify-ca sslrootcert='/my ca/it\\'s.pem' password='a b'",
        )
        .unwrap();
        assert_eq!(rest, "host='db' port='5432' password='a b'");
        assert_eq!(s.mode, "verify-ca");
        assert_eq!(s.root_cert, Some(PathBuf::from("/my ca/it's.pem")));
        // What is left parses as tokio-postgres reads it.
        let c: tokio_postgres::Config = rest.parse().unwrap();
        assert_eq!(c.get_password(), Some(&b"a b"[..]));

        for (bad, says) in [
            ("host=db sslcert=/c.pem", "client certificates"),
            ("postgres://h/db?sslkey=k", "client certificates"),
            ("host=db sslrootcert='open", "unterminated quote"),
            ("host", "has no value"),
        ] {
            let e = split(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        let e = TlsSettings {
            mode: "allow".into(),
            root_cert: None,
        }
        .connector()
        .unwrap_err();
        assert!(e.contains("use disable, prefer, require"), "{e}");
    }
}
