//! The distribution API, as little of it as pushing and pulling a skill
//! needs: blobs (monolithic upload), manifests and tags, over plain HTTP/1.1
//! to a loopback registry, without authentication.
//!
//! One connection per request (as in `relay::http`): a registry push is a
//! handful of requests, and nothing is kept open between them. Every
//! exchange has [`EXCHANGE_TIMEOUT`] and a capped body, and every byte
//! fetched by digest is checked against it before it is returned.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{HeaderMap, Method};
use hyper_util::rt::TokioIo;

use super::reference::{check_digest, check_repository, split_authority};
use crate::skill::sha256_hex;

/// The time limit of one request and its whole answer.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);

/// Most bytes read of an error answer (the rest is ignored).
const ERROR_BODY_MAX: u64 = 64 * 1024;

/// Most bytes of one page of a tag list.
const TAGS_MAX: u64 = 4 << 20;

/// Most pages of a tag list followed.
const TAGS_PAGES: usize = 100;

/// How long an excerpt of an unexpected answer is, in characters.
const EXCERPT: usize = 200;

/// What a manifest request accepts: the single-artifact manifest first;
/// the others so that a registry serves other kinds as stored (and the
/// caller can say what it got) instead of converting them.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

/// Why talking to a registry failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OciError {
    /// A reference, repository or digest that is not well formed.
    #[error("bad OCI reference {0}")]
    BadReference(String),
    /// A registry that is not on loopback; nothing was sent to it.
    #[error(
        "refusing the registry {0}: skillbox speaks plain HTTP to registries (no TLS), which is \
         safe only on loopback (127.0.0.0/8, [::1], localhost); use a registry on this machine, \
         or reach a remote one through a tunnel or TLS-terminating proxy listening on loopback"
    )]
    NotLoopback(String),
    /// No connection, or no complete answer in time.
    #[error("cannot reach the registry {registry}: {message}")]
    Unreachable {
        /// `HOST:PORT`.
        registry: String,
        /// What failed.
        message: String,
    },
    /// The registry refused a request.
    #[error("{url} answered {status}: {message}")]
    Status {
        /// The request's URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The registry's own messages, or the start of its answer.
        message: String,
    },
    /// A manifest, blob or repository that the registry does not have.
    #[error("{what} not found")]
    NotFound {
        /// What was asked for, and where.
        what: String,
    },
    /// An answer that is not what the distribution API answers.
    #[error("unexpected answer for {what}: {message}")]
    Garbage {
        /// The request or document.
        what: String,
        /// What is wrong with it.
        message: String,
    },
    /// Content whose sha256 is not the digest it was asked for by.
    #[error(
        "{what} has digest {actual}, but {expected} was expected: the registry served other \
         content than asked for (corrupt storage, or tampering); none of it was used"
    )]
    DigestMismatch {
        /// What was fetched or sent, and where.
        what: String,
        /// The digest asked for.
        expected: String,
        /// The digest of what arrived.
        actual: String,
    },
    /// A manifest or blob over its size limit; reading stopped there.
    #[error("{what} is larger than {limit} bytes; refusing to read it")]
    TooLarge {
        /// What was fetched, and where.
        what: String,
        /// The limit, in bytes.
        limit: u64,
    },
    /// An artifact that is not a skill as `skillbox push` stores it.
    #[error("{reference} is not a skillbox skill: {message}")]
    NotASkill {
        /// The reference pulled.
        reference: String,
        /// What is missing or different.
        message: String,
    },
    /// A signature that cannot be attached.
    #[error("bad signature ({reference}): {message}")]
    Signature {
        /// The reference pushed to, or the signing key.
        reference: String,
        /// What is wrong.
        message: String,
    },
}

/// A registry on loopback, spoken to over plain HTTP.
#[derive(Clone, Debug)]
pub struct Registry {
    /// The host as written (`127.0.0.1`, `[::1]`, `localhost`).
    host: String,
    /// `HOST:PORT`, for the `Host` header, URLs and messages.
    authority: String,
    /// Where to connect, in order.
    addrs: Vec<SocketAddr>,
}

/// An answer, its body read up to its cap.
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Vec<u8>,
    url: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Registry {
    /// The registry at `HOST[:PORT]`, which must be on loopback. Nothing
    /// is sent yet.
    pub fn new(registry: &str) -> Result<Registry, OciError> {
        let (host, port) = split_authority(registry)
            .map_err(|m| OciError::BadReference(format!("{registry:?}: {m}")))?;
        let ips: Vec<IpAddr> = if host.eq_ignore_ascii_case("localhost") {
            // Not resolved: a resolver could map it anywhere.
            vec![Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into()]
        } else if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            match inner.parse::<Ipv6Addr>() {
                Ok(ip) if ip.is_loopback() => vec![ip.into()],
                Ok(ip) => match ip.to_ipv4_mapped() {
                    Some(v4) if v4.is_loopback() => vec![v4.into()],
                    _ => return Err(OciError::NotLoopback(registry.into())),
                },
                Err(_) => return Err(OciError::NotLoopback(registry.into())),
            }
        } else {
            match host.parse::<Ipv4Addr>() {
                Ok(ip) if ip.is_loopback() => vec![ip.into()],
                _ => return Err(OciError::NotLoopback(registry.into())),
            }
        };
        Ok(Registry {
            host: host.to_string(),
            authority: format!("{host}:{port}"),
            addrs: ips
                .into_iter()
                .map(|ip| SocketAddr::new(ip, port))
                .collect(),
        })
    }

    /// `HOST:PORT`.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// Whether the repository `repo` has the blob `digest`.
    pub async fn blob_exists(&self, repo: &str, digest: &str) -> Result<bool, OciError> {
        check_names(repo, Some(digest))?;
        let path = format!("/v2/{repo}/blobs/{digest}");
        let a = self
            .send(Method::HEAD, &path, &[], Bytes::new(), 0, &path)
            .await?;
        match a.status {
            200 => Ok(true),
            404 => Ok(false),
            _ => Err(self.refused(&a)),
        }
    }

    /// Uploads `bytes` as a blob of `repo` (unless it is there already)
    /// and returns its digest.
    pub async fn push_blob(&self, repo: &str, bytes: &[u8]) -> Result<String, OciError> {
        let digest = format!("sha256:{}", sha256_hex(bytes));
        if self.blob_exists(repo, &digest).await? {
            return Ok(digest);
        }
        let start = format!("/v2/{repo}/blobs/uploads/");
        let a = self
            .send(
                Method::POST,
                &start,
                &[("content-length", "0")],
                Bytes::new(),
                ERROR_BODY_MAX,
                &start,
            )
            .await?;
        if a.status != 202 {
            return Err(self.refused(&a));
        }
        let location = a.header("location").ok_or_else(|| OciError::Garbage {
            what: format!("POST {}", a.url),
            message: "202 without a Location header to upload to".into(),
        })?;
        let mut path = self.same_origin(location, &a.url)?;
        path.push(if path.contains('?') { '&' } else { '?' });
        path.push_str("digest=");
        path.push_str(&digest);
        self.put(
            &path,
            "application/octet-stream",
            bytes,
            &digest,
            "blob upload to",
        )
        .await?;
        Ok(digest)
    }

    /// `PUT`s `bytes` to `path`, which must answer 201 with their
    /// `digest` (if it names one).
    async fn put(
        &self,
        path: &str,
        content_type: &str,
        bytes: &[u8],
        digest: &str,
        what: &str,
    ) -> Result<(), OciError> {
        let length = bytes.len().to_string();
        let a = self
            .send(
                Method::PUT,
                path,
                &[("content-type", content_type), ("content-length", &length)],
                Bytes::copy_from_slice(bytes),
                ERROR_BODY_MAX,
                path,
            )
            .await?;
        if a.status != 201 {
            return Err(self.refused(&a));
        }
        self.check_answered_digest(&a, digest, &format!("{what} {}", a.url))
    }

    /// Stores `bytes` (of `media_type`) as the manifest `reference` (a tag
    /// or its digest) of `repo`, and returns its digest.
    pub async fn push_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<String, OciError> {
        check_names(repo, None)?;
        check_manifest_ref(reference)?;
        let digest = format!("sha256:{}", sha256_hex(bytes));
        if reference.contains(':') && reference != digest {
            return Err(OciError::DigestMismatch {
                what: format!(
                    "the manifest to push as {}/{repo}@{reference}",
                    self.authority
                ),
                expected: reference.into(),
                actual: digest,
            });
        }
        let path = format!("/v2/{repo}/manifests/{reference}");
        self.put(&path, media_type, bytes, &digest, "manifest pushed to")
            .await?;
        Ok(digest)
    }

    /// The manifest `reference` (tag or digest) of `repo`: its bytes as
    /// served, its media type and its digest (computed from the bytes, and
    /// equal to `reference` when that is a digest).
    pub async fn manifest(
        &self,
        repo: &str,
        reference: &str,
        max: u64,
    ) -> Result<(Vec<u8>, String, String), OciError> {
        check_names(repo, None)?;
        check_manifest_ref(reference)?;
        let what = format!("manifest {reference} of {}/{repo}", self.authority);
        let path = format!("/v2/{repo}/manifests/{reference}");
        let a = self
            .send(
                Method::GET,
                &path,
                &[("accept", MANIFEST_ACCEPT)],
                Bytes::new(),
                max,
                &what,
            )
            .await?;
        match a.status {
            200 => {}
            404 => return Err(OciError::NotFound { what }),
            _ => return Err(self.refused(&a)),
        }
        let digest = format!("sha256:{}", sha256_hex(&a.body));
        if reference.contains(':') && reference != digest {
            return Err(OciError::DigestMismatch {
                what,
                expected: reference.into(),
                actual: digest,
            });
        }
        let media_type = match a.header("content-type") {
            Some(t) => t.split(';').next().unwrap_or("").trim().to_string(),
            None => String::new(),
        };
        let media_type = match media_type.as_str() {
            // A registry that does not say: the document's own field.
            "" | "application/json" | "application/octet-stream" => {
                serde_json::from_slice::<serde_json::Value>(&a.body)
                    .ok()
                    .and_then(|v| v["mediaType"].as_str().map(str::to_string))
                    .unwrap_or(media_type)
            }
            _ => media_type,
        };
        Ok((a.body, media_type, digest))
    }

    /// The blob `digest` of `repo`, checked against its digest, at most
    /// `max` bytes.
    pub async fn blob(&self, repo: &str, digest: &str, max: u64) -> Result<Vec<u8>, OciError> {
        check_names(repo, Some(digest))?;
        let what = format!("blob {digest} of {}/{repo}", self.authority);
        let path = format!("/v2/{repo}/blobs/{digest}");
        let mut a = self
            .send(Method::GET, &path, &[], Bytes::new(), max, &what)
            .await?;
        if matches!(a.status, 301 | 302 | 303 | 307 | 308) {
            // Storage behind a redirect: followed once, and only on this
            // same loopback host.
            let location = a.header("location").ok_or_else(|| OciError::Garbage {
                what: format!("GET {}", a.url),
                message: format!("a {} redirect without a Location header", a.status),
            })?;
            let (registry, path) = self.redirect(location, &a.url)?;
            a = registry
                .send(Method::GET, &path, &[], Bytes::new(), max, &what)
                .await?;
            if (300..400).contains(&a.status) {
                return Err(OciError::Garbage {
                    what: format!("GET {}", a.url),
                    message: "redirected a second time; skillbox follows one redirect".into(),
                });
            }
        }
        match a.status {
            200 => {}
            404 => return Err(OciError::NotFound { what }),
            _ => return Err(self.refused(&a)),
        }
        let actual = format!("sha256:{}", sha256_hex(&a.body));
        if actual != digest {
            return Err(OciError::DigestMismatch {
                what,
                expected: digest.into(),
                actual,
            });
        }
        Ok(a.body)
    }

    /// The tags of `repo`, in the registry's order.
    pub async fn tags(&self, repo: &str) -> Result<Vec<String>, OciError> {
        check_names(repo, None)?;
        #[derive(serde::Deserialize)]
        struct TagList {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let what = format!("the tag list of {}/{repo}", self.authority);
        let mut path = format!("/v2/{repo}/tags/list");
        let mut tags = Vec::new();
        for _ in 0..TAGS_PAGES {
            let a = self
                .send(Method::GET, &path, &[], Bytes::new(), TAGS_MAX, &what)
                .await?;
            match a.status {
                200 => {}
                404 => {
                    return Err(OciError::NotFound {
                        what: format!("repository {}/{repo}", self.authority),
                    });
                }
                _ => return Err(self.refused(&a)),
            }
            let page: TagList = serde_json::from_slice(&a.body).map_err(|e| OciError::Garbage {
                what: format!("GET {}", a.url),
                message: format!("not a tag list ({e}): {}", excerpt(&a.body)),
            })?;
            tags.extend(page.tags.unwrap_or_default());
            // `Link: </v2/…?n=…&last=…>; rel="next"` when there are more.
            let next = a
                .header("link")
                .filter(|l| l.contains("rel=\"next\""))
                .and_then(|l| Some(l.split_once('<')?.1.split_once('>')?.0.to_string()));
            match next {
                Some(next) => path = self.same_origin(&next, &a.url)?,
                None => return Ok(tags),
            }
        }
        Err(OciError::Garbage {
            what,
            message: format!("more than {TAGS_PAGES} pages"),
        })
    }

    /// The path of `location` (relative, or absolute on this registry).
    fn same_origin(&self, location: &str, url: &str) -> Result<String, OciError> {
        if location.starts_with('/') {
            return Ok(location.into());
        }
        let (authority, path) = split_url(location).ok_or_else(|| OciError::Garbage {
            what: url.into(),
            message: format!("the location {location:?} is neither a path nor an http:// URL"),
        })?;
        if !authority.eq_ignore_ascii_case(&self.authority) {
            return Err(OciError::Garbage {
                what: url.into(),
                message: format!(
                    "the registry sends on to {location}, another host than {}; refusing",
                    self.authority
                ),
            });
        }
        Ok(path.into())
    }

    /// Where a redirect of `url` to `location` goes: this registry, or
    /// the same loopback host on another port.
    fn redirect(&self, location: &str, url: &str) -> Result<(Registry, String), OciError> {
        if location.starts_with('/') {
            return Ok((self.clone(), location.into()));
        }
        let refuse = |why: String| OciError::Garbage {
            what: format!("GET {url}"),
            message: format!("redirected to {location:?}: {why}; refusing to follow"),
        };
        let (authority, path) =
            split_url(location).ok_or_else(|| refuse("not a path or an http:// URL".into()))?;
        let (host, _) = split_authority(authority).map_err(refuse)?;
        if !host.eq_ignore_ascii_case(&self.host) {
            return Err(refuse(format!("another host than {}", self.host)));
        }
        Ok((Registry::new(authority)?, path.into()))
    }

    /// A 2xx answer's `Docker-Content-Digest`, when given, must be what was
    /// sent.
    fn check_answered_digest(&self, a: &Answer, digest: &str, what: &str) -> Result<(), OciError> {
        match a.header("docker-content-digest") {
            Some(d) if d.trim() != digest => Err(OciError::DigestMismatch {
                what: what.into(),
                expected: digest.into(),
                actual: d.trim().into(),
            }),
            _ => Ok(()),
        }
    }

    /// The error for an answer with an unexpected status.
    fn refused(&self, a: &Answer) -> OciError {
        let said = registry_message(&a.body);
        let message = match a.status {
            401 => format!(
                "the registry asks for credentials ({said}); registries that need \
                 authentication are not supported yet"
            ),
            _ => said,
        };
        OciError::Status {
            url: a.url.clone(),
            status: a.status,
            message,
        }
    }

    /// One request on a new connection, with [`EXCHANGE_TIMEOUT`]. A 2xx
    /// body over `max` bytes is [`OciError::TooLarge`] (named `what`);
    /// other bodies are cut at [`ERROR_BODY_MAX`].
    async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
        max: u64,
        what: &str,
    ) -> Result<Answer, OciError> {
        let url = format!("http://{}{path}", self.authority);
        let exchange = self.exchange(method.clone(), path, headers, body, max, what, &url);
        match tokio::time::timeout(EXCHANGE_TIMEOUT, exchange).await {
            Ok(r) => r,
            Err(_) => Err(OciError::Unreachable {
                registry: self.authority.clone(),
                message: format!(
                    "{method} {url}: no complete answer within {}s (is it a registry?)",
                    EXCHANGE_TIMEOUT.as_secs()
                ),
            }),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn exchange(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
        max: u64,
        what: &str,
        url: &str,
    ) -> Result<Answer, OciError> {
        let stream = self.connect().await?;
        let _ = stream.set_nodelay(true);
        let broken = |e: hyper::Error| self.broken(e, &method, url);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(broken)?;
        // Ends with the connection, or is aborted below.
        let conn = tokio::spawn(conn);
        let result = async {
            let mut req = hyper::Request::builder()
                .method(method.clone())
                .uri(path)
                .header("host", &self.authority)
                .header(
                    "user-agent",
                    concat!("skillbox/", env!("CARGO_PKG_VERSION")),
                );
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            let req = req
                .body(Full::new(body))
                .map_err(|e| OciError::BadReference(format!("{url:?}: {e}")))?;
            let resp = sender.send_request(req).await.map_err(broken)?;
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let success = (200..300).contains(&status);
            let cap = if success { max } else { ERROR_BODY_MAX };
            let declared = headers
                .get("content-length")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            let too_large = || OciError::TooLarge {
                what: what.into(),
                limit: max,
            };
            if success && method != Method::HEAD && declared.is_some_and(|n| n > max) {
                return Err(too_large());
            }
            let mut out = Vec::with_capacity(declared.unwrap_or(0).min(cap).min(1 << 20) as usize);
            let mut incoming = resp.into_body();
            while let Some(frame) = incoming.frame().await {
                let Ok(data) = frame.map_err(broken)?.into_data() else {
                    continue;
                };
                let room = cap.saturating_sub(out.len() as u64);
                if data.len() as u64 > room {
                    if success {
                        return Err(too_large());
                    }
                    out.extend_from_slice(&data[..room as usize]);
                    break;
                }
                out.extend_from_slice(&data);
            }
            Ok(Answer {
                status,
                headers,
                body: out,
                url: url.to_string(),
            })
        }
        .await;
        conn.abort();
        result
    }

    async fn connect(&self) -> Result<tokio::net::TcpStream, OciError> {
        let mut errors = Vec::new();
        for addr in &self.addrs {
            match tokio::net::TcpStream::connect(addr).await {
                Ok(s) => return Ok(s),
                Err(e) => errors.push(format!("{addr}: {e}")),
            }
        }
        Err(OciError::Unreachable {
            registry: self.authority.clone(),
            message: format!(
                "connecting to {} (is the registry running, on that port?)",
                errors.join("; ")
            ),
        })
    }

    /// What a failed exchange comes to: an answer that is not HTTP, or a
    /// connection that broke off.
    fn broken(&self, e: hyper::Error, method: &Method, url: &str) -> OciError {
        if e.is_parse() || e.is_parse_status() || e.is_parse_too_large() {
            OciError::Garbage {
                what: format!("{method} {url}"),
                message: format!(
                    "the answer is not HTTP/1.1 ({e}); is {} an OCI registry?",
                    self.authority
                ),
            }
        } else {
            OciError::Unreachable {
                registry: self.authority.clone(),
                message: format!("{method} {url}: the connection broke off ({e})"),
            }
        }
    }
}

/// `http://AUTHORITY/PATH` → (`AUTHORITY`, `/PATH`).
fn split_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("http://")?;
    Some(match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    })
}

fn check_names(repo: &str, digest: Option<&str>) -> Result<(), OciError> {
    check_repository(repo).map_err(|m| OciError::BadReference(format!("{repo:?}: {m}")))?;
    if let Some(d) = digest {
        check_digest(d).map_err(|m| OciError::BadReference(format!("{d:?}: {m}")))?;
    }
    Ok(())
}

/// A manifest reference: a digest, or a tag.
fn check_manifest_ref(reference: &str) -> Result<(), OciError> {
    if reference.contains(':') {
        check_digest(reference)
    } else {
        super::reference::check_tag(reference)
    }
    .map_err(|m| OciError::BadReference(format!("{reference:?}: {m}")))
}

/// The registry's error messages (`{"errors":[{"code","message","detail"}]}`),
/// else the start of the answer.
fn registry_message(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<ErrorEntry>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorEntry {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
        #[serde(default)]
        detail: serde_json::Value,
    }
    if let Ok(e) = serde_json::from_slice::<Errors>(body)
        && !e.errors.is_empty()
    {
        return e
            .errors
            .iter()
            .map(|e| {
                let mut s = match (e.message.is_empty(), e.code.is_empty()) {
                    (false, false) => format!("{} ({})", e.message, e.code),
                    (false, true) => e.message.clone(),
                    _ => e.code.clone(),
                };
                let detail = match &e.detail {
                    serde_json::Value::Null => String::new(),
                    serde_json::Value::String(d) => d.clone(),
                    d => d.to_string(),
                };
                if !detail.is_empty() {
                    s.push_str(": ");
                    s.push_str(&excerpt(detail.as_bytes()));
                }
                s
            })
            .collect::<Vec<_>>()
            .join("; ");
    }
    match excerpt(body) {
        e if e.is_empty() => "no message".into(),
        e => e,
    }
}

/// The start of `bytes` as one line of text.
pub(crate) fn excerpt(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out: String = text
        .chars()
        .take(EXCERPT)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().count() > EXCERPT {
        out.push('…');
    }
    out.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_registries_are_accepted() {
        for ok in [
            "127.0.0.1:5000",
            "127.1.2.3",
            "localhost:1",
            "LOCALHOST",
            "[::1]:5000",
        ] {
            Registry::new(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        assert_eq!(
            Registry::new("127.0.0.1").unwrap().authority(),
            "127.0.0.1:80"
        );
        for no in [
            "10.0.0.1:5000",
            "example.com",
            "[::2]:1",
            "0.0.0.0:1",
            "localhost.example.com",
        ] {
            let e = Registry::new(no).unwrap_err();
            assert!(matches!(e, OciError::NotLoopback(_)), "{no}: {e:?}");
            let m = e.to_string();
            assert!(
                m.contains(no) && m.contains("plain HTTP") && m.contains("loopback"),
                "{m}"
            );
        }
        assert!(matches!(
            Registry::new("a b"),
            Err(OciError::BadReference(_))
        ));
    }

    #[test]
    fn registry_messages_are_read_from_their_json() {
        let m = registry_message(
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"x"}}]}"#,
        );
        assert_eq!(m, r#"manifest unknown (MANIFEST_UNKNOWN): {"Tag":"x"}"#);
        assert_eq!(registry_message(b""), "no message");
        assert_eq!(registry_message(b"<html>\n oops"), "<html>  oops");
        assert!(registry_message(&[b'x'; 500]).ends_with('…'));
    }

    #[test]
    fn locations_stay_on_the_registry() {
        let r = Registry::new("127.0.0.1:5000").unwrap();
        assert_eq!(
            r.same_origin("/v2/x/blobs/uploads/1?a=b", "u").unwrap(),
            "/v2/x/blobs/uploads/1?a=b"
        );
        assert_eq!(
            r.same_origin("http://127.0.0.1:5000/v2/x/blobs/uploads/1", "u")
                .unwrap(),
            "/v2/x/blobs/uploads/1"
        );
        assert!(r.same_origin("http://10.0.0.1:5000/v2/x", "u").is_err());
        assert!(r.same_origin("https://127.0.0.1:5000/v2/x", "u").is_err());
        let (other, path) = r.redirect("http://127.0.0.1:6000/data?sig=1", "u").unwrap();
        assert_eq!(
            (other.authority(), path.as_str()),
            ("127.0.0.1:6000", "/data?sig=1")
        );
        let e = r
            .redirect("http://storage.example.com/data", "u")
            .unwrap_err()
            .to_string();
        assert!(e.contains("another host"), "{e}");
    }
}
