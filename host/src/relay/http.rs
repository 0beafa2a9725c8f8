//! A small HTTP/1.1 client for deliveries: one connection per attempt
//! (over TLS for `https://`, see [`crate::tls`]), a time limit on the
//! whole exchange, a capped answer.

use std::path::Path;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

use crate::tls::TlsClient;

/// Most bytes of an answer read (the rest is ignored).
const MAX_ANSWER: usize = 64 * 1024;

/// Where to send: `http://host[:port][/path]` or `https://…`.
#[derive(Clone, Debug)]
pub struct Target {
    /// `host:port`.
    pub authority: String,
    /// The host alone (what a certificate must name).
    pub host: String,
    /// Path and query, from `/`.
    pub path: String,
    /// TLS, for an `https://` url.
    pub tls: Option<TlsClient>,
}

impl Target {
    /// Parses and checks a URL; `https://` trusts the system's roots.
    pub fn parse(url: &str) -> Result<Target, String> {
        Target::parse_with(url, None)
    }

    /// Parses and checks a URL; `https://` trusts the system's roots and
    /// the certificates of `ca_file`.
    pub fn parse_with(url: &str, ca_file: Option<&Path>) -> Result<Target, String> {
        let uri: hyper::Uri = url.parse().map_err(|e| format!("url {url:?}: {e}"))?;
        let (default_port, tls) = match uri.scheme_str() {
            Some("http") => {
                if let Some(f) = ca_file {
                    return Err(format!(
                        "url {url:?}: ca-file {} is for https:// urls",
                        f.display()
                    ));
                }
                (80, None)
            }
            Some("https") => (443, Some(TlsClient::new(ca_file)?)),
            _ => return Err(format!("url {url:?}: expected http(s)://host:port/path")),
        };
        let auth = uri
            .authority()
            .ok_or_else(|| format!("url {url:?}: no host"))?;
        if auth.as_str().contains('@') {
            return Err(format!(
                "url {url:?}: credentials in the url are not allowed"
            ));
        }
        let host = auth.host().to_string();
        let authority = format!("{host}:{}", auth.port_u16().unwrap_or(default_port));
        let path = uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "/".into());
        Ok(Target {
            authority,
            host,
            path,
            tls,
        })
    }

    /// The same server at another path (joined to this one's).
    pub fn join(&self, sub: &str) -> Target {
        Target {
            path: format!(
                "{}/{}",
                self.path.trim_end_matches('/'),
                sub.trim_start_matches('/')
            ),
            ..self.clone()
        }
    }
}

/// An answer.
#[derive(Debug)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// `Retry-After`, in seconds, if given as a number.
    pub retry_after: Option<Duration>,
    /// The start of the body.
    pub body: Bytes,
}

/// `POST`s `body` with `headers` to `target` within `timeout`.
pub async fn post(
    target: &Target,
    headers: &[(&str, String)],
    body: Vec<u8>,
    timeout: Duration,
) -> Result<Answer, String> {
    match tokio::time::timeout(timeout, exchange(target, headers, body)).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "no answer from {} within {}",
            target.authority,
            crate::units::HumanDuration(timeout)
        )),
    }
}

async fn exchange(
    target: &Target,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> Result<Answer, String> {
    let stream = tokio::net::TcpStream::connect(&target.authority)
        .await
        .map_err(|e| format!("connecting to {}: {e}", target.authority))?;
    let _ = stream.set_nodelay(true);
    match &target.tls {
        Some(tls) => {
            let stream = tls.connect(&target.host, stream).await?;
            send(target, TokioIo::new(stream), headers, body).await
        }
        None => send(target, TokioIo::new(stream), headers, body).await,
    }
}

/// One request over the connection `io`.
async fn send<I>(
    target: &Target,
    io: I,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> Result<Answer, String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("{}: {e}", target.authority))?;
    let conn = tokio::spawn(conn);
    let mut req = hyper::Request::post(&target.path)
        .header("host", &target.authority)
        .header("content-type", "application/json")
        .header(
            "user-agent",
            concat!("skillbox/", env!("CARGO_PKG_VERSION")),
        );
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let req = req
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("{}: {e}", target.authority))?;
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = match Limited::new(resp.into_body(), MAX_ANSWER).collect().await {
        Ok(b) => b.to_bytes(),
        // A long or broken answer still has its status.
        Err(_) => Bytes::new(),
    };
    conn.abort();
    Ok(Answer {
        status,
        retry_after,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let t = Target::parse("http://127.0.0.1:9000/hooks?x=1").unwrap();
        assert_eq!(
            (t.authority.as_str(), t.path.as_str()),
            ("127.0.0.1:9000", "/hooks?x=1")
        );
        let t = Target::parse("http://localhost").unwrap();
        assert_eq!(
            (t.authority.as_str(), t.path.as_str()),
            ("localhost:80", "/")
        );
        assert_eq!(t.join("hooks/agent").path, "/hooks/agent");
        assert_eq!(
            Target::parse("http://[::1]:8/base/")
                .unwrap()
                .join("/hooks/wake")
                .path,
            "/base/hooks/wake"
        );
        assert!(
            Target::parse("http://u:p@h/")
                .unwrap_err()
                .contains("credentials")
        );
        let t = Target::parse("https://example.org/x").unwrap();
        assert_eq!(t.authority, "example.org:443");
        assert!(t.tls.is_some());
        assert!(
            Target::parse_with("http://h/", Some(Path::new("/ca.pem")))
                .unwrap_err()
                .contains("is for https:// urls")
        );
        assert!(Target::parse("/relative").is_err());
    }
}
