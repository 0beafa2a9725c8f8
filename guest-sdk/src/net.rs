//! Network access for skills: plain `std::net` sockets, plus a minimal
//! HTTP/1.1 client for health checks.
//!
//! Everything goes through WASI sockets, which the host lets connect only to
//! the `host:port`s under `[net]` in `skill.toml` that the operator granted.
//! A refused connection is an [`Error`] of kind
//! [`Denied`](crate::ErrorKind::Denied).
//!
//! ```no_run
//! use std::time::Duration;
//!
//! # fn demo() -> skillbox_sdk::Result<()> {
//! let r = skillbox_sdk::net::http_get("http://127.0.0.1:8080/healthz", Duration::from_secs(5))?;
//! if r.status != 200 {
//!     skillbox_sdk::bail!("unhealthy: HTTP {}", r.status);
//! }
//! # Ok(())
//! # }
//! ```

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::Error;

/// Largest response body [`http_get`] keeps.
pub const MAX_BODY: usize = 1 << 20;

/// A response from [`http_get`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpResponse {
    /// Status code, e.g. 200.
    pub status: u16,
    /// Header names (lower-cased) and values, in order.
    pub headers: Vec<(String, String)>,
    /// Body, at most [`MAX_BODY`] bytes.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The body as text (lossy UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Splits `http://host[:port][/path]` into (host, port, path).
fn parse_url(url: &str) -> Result<(String, u16, String), Error> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        Error::invalid_input(format!(
            "{url:?}: only http:// URLs are supported (TLS is not available inside the sandbox client)"
        ))
    })?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/".to_string()),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => {
            let port = p
                .parse()
                .map_err(|_| Error::invalid_input(format!("{url:?}: bad port {p:?}")))?;
            (
                h.trim_start_matches('[').trim_end_matches(']').to_string(),
                port,
            )
        }
        _ => (authority.to_string(), 80),
    };
    if host.is_empty() {
        return Err(Error::invalid_input(format!("{url:?}: no host")));
    }
    Ok((host, port, path))
}

/// `GET url` over HTTP/1.1 and read the whole response (body capped at
/// [`MAX_BODY`]). `timeout` bounds each read and write where the platform
/// supports socket timeouts; the host's wall-clock limit bounds the rest.
pub fn http_get(url: &str, timeout: Duration) -> Result<HttpResponse, Error> {
    let (host, port, path) = parse_url(url)?;
    let stream = TcpStream::connect((host.as_str(), port))
        .map_err(|e| Error::from(e).context(format!("connecting to {host}:{port}")))?;
    // Not every WASI implementation supports socket timeouts; the host's
    // wall-clock limit still applies.
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    let host_header = if port == 80 {
        host.clone()
    } else {
        format!("{host}:{port}")
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host_header}\r\nConnection: close\r\nUser-Agent: skillbox-sdk\r\nAccept: */*\r\n\r\n"
    );
    (&stream)
        .write_all(request.as_bytes())
        .map_err(|e| Error::from(e).context(format!("sending to {host}:{port}")))?;
    read_response(BufReader::new(stream)).map_err(|e| e.context(format!("GET {url}")))
}

fn read_response(mut r: impl BufRead) -> Result<HttpResponse, Error> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::failed(format!("not an HTTP response: {:?}", line.trim_end())))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 || line.trim_end().is_empty() {
            break;
        }
        if let Some((n, v)) = line.trim_end().split_once(':') {
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| Error::failed("bad chunk size in HTTP response"))?;
            if size == 0 {
                break;
            }
            let mut chunk = vec![0; size];
            r.read_exact(&mut chunk)?;
            body.extend_from_slice(&chunk[..chunk.len().min(MAX_BODY.saturating_sub(body.len()))]);
            line.clear();
            r.read_line(&mut line)?;
        }
    } else {
        r.take(MAX_BODY as u64).read_to_end(&mut body)?;
    }
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("http://127.0.0.1:8080/healthz").unwrap(),
            ("127.0.0.1".into(), 8080, "/healthz".into())
        );
        assert_eq!(
            parse_url("http://localhost").unwrap(),
            ("localhost".into(), 80, "/".into())
        );
        assert_eq!(
            parse_url("http://[::1]:9/x").unwrap(),
            ("::1".into(), 9, "/x".into())
        );
        assert!(parse_url("https://example.org/").is_err());
        assert!(parse_url("http://:80/").is_err());
    }

    #[test]
    fn responses() {
        let plain = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nhealthy";
        let r = read_response(plain.as_bytes()).unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "healthy"));
        assert_eq!(r.header("content-type"), Some("text/plain"));
        let chunked = "HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n4\r\ndown\r\n0\r\n\r\n";
        let r = read_response(chunked.as_bytes()).unwrap();
        assert_eq!((r.status, r.text().as_str()), (503, "down"));
        assert!(read_response("garbage\r\n\r\n".as_bytes()).is_err());
    }
}
