//! A client of the daemon's API, over its Unix socket or loopback TCP.
//! The CLI's `spawn` and `tasks` commands are built on it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;

use super::{DecideBody, PruneBody, Pruned, Redelivered, ScheduleBody, SpawnBody};
use crate::relay::{Delivery, Notification};
use crate::store::audit::{AuditFilter, AuditRecord, Verified};
use crate::store::schedule::Schedule;
use crate::store::{Approval, EventRecord, Task, TaskFilter};
use crate::tasks::schedules::ScheduleView;

/// Where the daemon listens.
#[derive(Clone, Debug)]
pub enum Endpoint {
    /// A Unix socket.
    Unix(PathBuf),
    /// TCP with a bearer token: loopback, or over TLS (`serve --listen …
    /// --tls-cert …`).
    Tcp {
        /// `HOST:PORT`.
        addr: String,
        /// The token.
        token: String,
        /// TLS, and whom it trusts.
        tls: Option<crate::tls::TlsClient>,
    },
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens there.
    #[error(
        "no skillbox daemon is listening at {0}; start one with `skillbox serve` \
         (same --data-dir), e.g. `skillbox serve &`"
    )]
    NoDaemon(String),
    /// The connection broke before the answer was whole: the daemon
    /// stopped or was killed while answering.
    #[error("the skillbox daemon at {at} went away ({detail})")]
    Gone {
        /// Where it listened.
        at: String,
        /// What the connection said.
        detail: String,
    },
    /// The daemon answered with an error (its message says what to fix;
    /// the status stays in the value, for the exit code).
    #[error("{message}")]
    Api {
        /// The HTTP status.
        status: u16,
        /// The error's code.
        code: String,
        /// The error's message.
        message: String,
    },
    /// An answer that is not what the API gives.
    #[error("talking to the daemon: {0}")]
    Transport(String),
}

impl ClientError {
    /// Whether the daemon is not there to answer (not running, or gone in
    /// the middle of an answer): a later call may reach it again.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, ClientError::NoDaemon(_) | ClientError::Gone { .. })
    }
}

impl Endpoint {
    /// The socket's path or the TCP address.
    pub fn address(&self) -> String {
        match self {
            Endpoint::Unix(p) => p.display().to_string(),
            Endpoint::Tcp { addr, .. } => addr.clone(),
        }
    }
}

/// A client of one daemon.
#[derive(Clone, Debug)]
pub struct Client {
    endpoint: Endpoint,
}

fn transport(e: impl std::fmt::Display) -> ClientError {
    ClientError::Transport(e.to_string())
}

fn gone(at: &str, e: impl std::fmt::Display) -> ClientError {
    ClientError::Gone {
        at: at.to_string(),
        detail: e.to_string(),
    }
}

/// An open response whose body is read as it arrives.
pub struct Streaming {
    body: hyper::body::Incoming,
    buf: Vec<u8>,
    at: String,
}

impl Streaming {
    /// The next server-sent event as `(id, event, data)`; `None` at the end.
    pub async fn next_event(&mut self) -> Result<Option<(String, String, String)>, ClientError> {
        loop {
            if let Some(end) = find_blank_line(&self.buf) {
                let block: Vec<u8> = self.buf.drain(..end).collect();
                let text = String::from_utf8_lossy(&block);
                let (mut id, mut event, mut data) = (String::new(), String::new(), Vec::new());
                for line in text.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push(v.strip_prefix(' ').unwrap_or(v).to_string());
                    }
                }
                if data.is_empty() && event.is_empty() {
                    continue; // keep-alive comment
                }
                return Ok(Some((id, event, data.join("\n"))));
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(d) = frame.into_data() {
                        self.buf.extend_from_slice(&d);
                    }
                }
                Some(Err(e)) => return Err(gone(&self.at, e)),
                None => return Ok(None),
            }
        }
    }
}

fn find_blank_line(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2)
}

impl Client {
    /// A client of the daemon at `endpoint`.
    pub fn new(endpoint: Endpoint) -> Client {
        Client { endpoint }
    }

    /// Where the daemon is.
    pub fn address(&self) -> String {
        self.endpoint.address()
    }

    /// A client of the daemon whose socket is `socket`.
    pub fn unix(socket: &Path) -> Client {
        Client::new(Endpoint::Unix(socket.to_owned()))
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
        headers: &[(&str, String)],
    ) -> Result<hyper::Response<hyper::body::Incoming>, ClientError> {
        let (mut sender, host) = match &self.endpoint {
            Endpoint::Unix(p) => {
                let s = tokio::net::UnixStream::connect(p)
                    .await
                    .map_err(|_| ClientError::NoDaemon(p.display().to_string()))?;
                let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
                    .await
                    .map_err(|e| gone(&self.address(), e))?;
                tokio::spawn(conn);
                (sender, "localhost".to_string())
            }
            Endpoint::Tcp { addr, tls, .. } => {
                let s = tokio::net::TcpStream::connect(addr)
                    .await
                    .map_err(|_| ClientError::NoDaemon(addr.clone()))?;
                let sender = match tls {
                    None => {
                        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
                            .await
                            .map_err(|e| gone(addr, e))?;
                        tokio::spawn(conn);
                        sender
                    }
                    Some(tls) => {
                        let host = addr.rsplit_once(':').map_or(addr.as_str(), |(h, _)| h);
                        let s = tls.connect(host, s).await.map_err(ClientError::Transport)?;
                        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
                            .await
                            .map_err(|e| gone(addr, e))?;
                        tokio::spawn(conn);
                        sender
                    }
                };
                (sender, addr.clone())
            }
        };
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", host)
            .header("content-type", "application/json");
        if let Endpoint::Tcp { token, .. } = &self.endpoint {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let bytes = body.map(|b| b.to_string()).unwrap_or_default();
        let req = req.body(Full::new(Bytes::from(bytes))).map_err(transport)?;
        sender
            .send_request(req)
            .await
            .map_err(|e| gone(&self.address(), e))
    }

    /// A JSON request; the JSON answer, or the API's error.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, ClientError> {
        let resp = self.send(method, path, body, &[]).await?;
        json_answer(resp, &self.address()).await
    }

    /// A JSON request whose answer is a `T`.
    async fn typed<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<T, ClientError> {
        let v = self.call(method, path, body).await?;
        serde_json::from_value(v).map_err(|e| transport(format!("unexpected answer: {e}")))
    }

    /// Spawns a task (`POST /v1/tasks`).
    pub async fn spawn(&self, body: &SpawnBody) -> Result<Task, ClientError> {
        let body = serde_json::to_value(body).map_err(transport)?;
        self.typed(Method::POST, "/v1/tasks", Some(&body)).await
    }

    /// Adds a schedule (`POST /v1/schedules`).
    pub async fn add_schedule(&self, body: &ScheduleBody) -> Result<Schedule, ClientError> {
        let body = serde_json::to_value(body).map_err(transport)?;
        self.typed(Method::POST, "/v1/schedules", Some(&body)).await
    }

    /// Every schedule, by name.
    pub async fn schedules(&self) -> Result<Vec<Schedule>, ClientError> {
        self.typed(Method::GET, "/v1/schedules", None).await
    }

    /// One schedule with its latest slots.
    pub async fn schedule(&self, name: &str) -> Result<ScheduleView, ClientError> {
        self.typed(
            Method::GET,
            &format!("/v1/schedules/{}", urlencode(name)),
            None,
        )
        .await
    }

    /// Pauses (`pause`), resumes (`resume`) a schedule.
    pub async fn schedule_action(&self, name: &str, action: &str) -> Result<Schedule, ClientError> {
        let path = format!("/v1/schedules/{}/{action}", urlencode(name));
        self.typed(Method::POST, &path, None).await
    }

    /// Creates a schedule's task now.
    pub async fn run_schedule(&self, name: &str) -> Result<Task, ClientError> {
        let path = format!("/v1/schedules/{}/run", urlencode(name));
        self.typed(Method::POST, &path, None).await
    }

    /// Deletes a schedule.
    pub async fn remove_schedule(&self, name: &str) -> Result<(), ClientError> {
        let path = format!("/v1/schedules/{}", urlencode(name));
        self.call(Method::DELETE, &path, None).await.map(drop)
    }

    /// Audit records matching `filter`, in chain order.
    pub async fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, ClientError> {
        let pairs = [
            ("after", Some(filter.after.to_string())),
            ("task", filter.task.map(|t| t.to_string())),
            ("since_ms", filter.since_ms.map(|t| t.to_string())),
            ("limit", filter.limit.map(|l| l.to_string())),
        ];
        self.typed(Method::GET, &format!("/v1/audit{}", query(&pairs)), None)
            .await
    }

    /// Verifies the store's audit chain.
    pub async fn verify_audit(&self) -> Result<Verified, ClientError> {
        self.typed(Method::GET, "/v1/audit/verify", None).await
    }

    /// One task.
    pub async fn task(&self, id: &str) -> Result<Task, ClientError> {
        self.typed(Method::GET, &format!("/v1/tasks/{id}"), None)
            .await
    }

    /// Tasks matching `filter`, newest first.
    pub async fn list(&self, filter: &TaskFilter) -> Result<Vec<Task>, ClientError> {
        let pairs = [
            ("state", filter.state.map(|s| s.to_string())),
            ("label", filter.label.clone()),
            ("parent_session", filter.parent_session.clone()),
            ("id_prefix", filter.id_prefix.clone()),
            ("limit", filter.limit.map(|l| l.to_string())),
        ];
        self.typed(Method::GET, &format!("/v1/tasks{}", query(&pairs)), None)
            .await
    }

    /// Deletes an ended task (`DELETE /v1/tasks/{id}`).
    pub async fn remove(&self, id: &str) -> Result<(), ClientError> {
        self.call(Method::DELETE, &format!("/v1/tasks/{id}"), None)
            .await
            .map(drop)
    }

    /// Deletes the tasks that ended at least `older_than` ago
    /// (`POST /v1/tasks/prune`); how many.
    pub async fn prune(&self, older_than: Duration) -> Result<u64, ClientError> {
        let body = serde_json::to_value(PruneBody {
            older_than_ms: older_than.as_millis() as u64,
        })
        .map_err(transport)?;
        let pruned: Pruned = self
            .typed(Method::POST, "/v1/tasks/prune", Some(&body))
            .await?;
        Ok(pruned.pruned)
    }

    /// The full id of the task `id` names: itself, or the one task whose
    /// id starts with it.
    pub async fn resolve(&self, id: &str) -> Result<String, ClientError> {
        if id.parse::<crate::units::TaskId>().is_ok() {
            return Ok(id.to_string());
        }
        let filter = TaskFilter {
            id_prefix: Some(id.to_string()),
            limit: Some(2),
            ..TaskFilter::default()
        };
        let found = self.list(&filter).await?;
        match found.as_slice() {
            [one] => Ok(one.id.to_string()),
            [] => Err(ClientError::Api {
                status: 404,
                code: "not-found".into(),
                message: format!("no task {id} (nor one whose id starts with it)"),
            }),
            [a, b, ..] => Err(ClientError::Api {
                status: 400,
                code: "ambiguous".into(),
                message: format!(
                    "{id} starts more than one task id ({a}, {b}, …): give more of it",
                    a = a.id,
                    b = b.id
                ),
            }),
        }
    }

    /// Cancels a task.
    pub async fn cancel(&self, id: &str) -> Result<Task, ClientError> {
        self.typed(Method::POST, &format!("/v1/tasks/{id}/cancel"), None)
            .await
    }

    /// The task once it has ended, or as it is after `timeout`.
    pub async fn wait(&self, id: &str, timeout: Duration) -> Result<Task, ClientError> {
        let path = format!("/v1/tasks/{id}/wait?timeout_ms={}", timeout.as_millis());
        self.typed(Method::GET, &path, None).await
    }

    /// The task's requests for approval.
    pub async fn approvals(&self, id: &str) -> Result<Vec<Approval>, ClientError> {
        self.typed(Method::GET, &format!("/v1/tasks/{id}/approvals"), None)
            .await
    }

    /// Decides one of the task's requests for approval.
    pub async fn decide(&self, id: &str, body: &DecideBody) -> Result<Approval, ClientError> {
        let body = serde_json::to_value(body).map_err(|e| transport(e.to_string()))?;
        self.typed(
            Method::POST,
            &format!("/v1/tasks/{id}/approvals"),
            Some(&body),
        )
        .await
    }

    /// The task's notifications and their attempts.
    pub async fn deliveries(&self, id: &str) -> Result<Vec<Delivery>, ClientError> {
        self.typed(Method::GET, &format!("/v1/tasks/{id}/deliveries"), None)
            .await
    }

    /// Queues the task's failed notifications again.
    pub async fn redeliver(&self, id: &str) -> Result<Redelivered, ClientError> {
        self.typed(Method::POST, &format!("/v1/tasks/{id}/redeliver"), None)
            .await
    }

    /// The final notification of an ended task.
    pub async fn notification(&self, id: &str) -> Result<Notification, ClientError> {
        self.typed(Method::GET, &format!("/v1/tasks/{id}/notification"), None)
            .await
    }

    /// The task's stored events (one page), without following.
    pub async fn event_page(&self, id: &str) -> Result<Vec<EventRecord>, ClientError> {
        self.typed(
            Method::GET,
            &format!("/v1/tasks/{id}/events?follow=false"),
            None,
        )
        .await
    }

    /// Opens the event stream of task `id` after `after`.
    pub async fn events(&self, id: &str, after: u64) -> Result<Streaming, ClientError> {
        let resp = self
            .send(
                Method::GET,
                &format!("/v1/tasks/{id}/events"),
                None,
                &[("last-event-id", after.to_string())],
            )
            .await?;
        if !resp.status().is_success() {
            return Err(json_answer(resp, &self.address())
                .await
                .err()
                .unwrap_or_else(|| transport("unexpected answer")));
        }
        Ok(Streaming {
            body: resp.into_body(),
            buf: Vec::new(),
            at: self.address(),
        })
    }
}

/// Reads a whole JSON answer: the value on success, the API's error else
/// (an error answer that is not JSON still keeps its status).
async fn json_answer(
    resp: hyper::Response<hyper::body::Incoming>,
    at: &str,
) -> Result<serde_json::Value, ClientError> {
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| gone(at, e))?
        .to_bytes();
    let parsed = serde_json::from_slice::<serde_json::Value>(&bytes);
    if !status.is_success() {
        return Err(api_error(status, &parsed.unwrap_or_default()));
    }
    parsed.map_err(|e| transport(format!("the answer is not JSON: {e}")))
}

/// `?k=v&…` of the pairs that have a value, URL-encoded.
fn query(pairs: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", urlencode(v))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

/// Every byte but RFC 3986's unreserved characters.
const RESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn urlencode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, RESERVED).to_string()
}

fn api_error(status: StatusCode, v: &serde_json::Value) -> ClientError {
    ClientError::Api {
        status: status.as_u16(),
        code: v["error"]["code"].as_str().unwrap_or("unknown").to_string(),
        message: v["error"]["message"]
            .as_str()
            .unwrap_or("(no message)")
            .to_string(),
    }
}
