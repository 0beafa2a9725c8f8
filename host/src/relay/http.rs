//! A small HTTP/1.1 client for deliveries: one connection per attempt, a
//! time limit on the whole exchange, a capped answer.

use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

/// Most bytes of an answer read (the rest is ignored).
const MAX_ANSWER: usize = 64 * 1024;

/// Where to send: `http://host[:port][/path]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// `host:port`.
    pub authority: String,
    /// Path and query, from `/`.
    pub path: String,
}

impl Target {
    /// Parses and checks a URL.
    pub fn parse(url: &str) -> Result<Target, String> {
        let uri: hyper::Uri = url.parse().map_err(|e| format!("url {url:?}: {e}"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(format!(
                    "url {url:?}: https is not supported yet; send to a TLS-terminating proxy on loopback"
                ));
            }
            _ => return Err(format!("url {url:?}: expected http://host:port/path")),
        }
        let auth = uri
            .authority()
            .ok_or_else(|| format!("url {url:?}: no host"))?;
        if auth.as_str().contains('@') {
            return Err(format!(
                "url {url:?}: credentials in the url are not allowed"
            ));
        }
        let authority = format!("{}:{}", auth.host(), auth.port_u16().unwrap_or(80));
        let path = uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "/".into());
        Ok(Target { authority, path })
    }

    /// The same server at another path (joined to this one's).
    pub fn join(&self, sub: &str) -> Target {
        Target {
            authority: self.authority.clone(),
            path: format!(
                "{}/{}",
                self.path.trim_end_matches('/'),
                sub.trim_start_matches('/')
            ),
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
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
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
        assert!(Target::parse("https://h/").unwrap_err().contains("https"));
        assert!(Target::parse("/relative").is_err());
    }
}
