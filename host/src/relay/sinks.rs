//! Where notifications go: a signed webhook, an OpenClaw gateway, or an
//! embedder's callback.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::Notification;
use super::config::OpenClawEndpoint;
use super::http::{Answer, Target, post};

/// An accepted delivery.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Delivered {
    /// The receiver's HTTP status, if it is an HTTP receiver.
    pub status: Option<u16>,
    /// What the receiver said worth keeping (e.g. OpenClaw's `runId`).
    pub detail: Option<String>,
}

/// A delivery that did not go through.
#[derive(Clone, Debug, PartialEq)]
pub struct DeliveryError {
    /// True when retrying cannot help (e.g. a wrong token).
    pub permanent: bool,
    /// The receiver's HTTP status, if it answered.
    pub status: Option<u16>,
    /// What went wrong, for `skillbox tasks show`.
    pub message: String,
    /// How long the receiver asked us to wait (`Retry-After`).
    pub retry_after: Option<Duration>,
}

impl DeliveryError {
    /// A failure worth retrying.
    pub fn transient(message: impl Into<String>) -> DeliveryError {
        DeliveryError {
            permanent: false,
            status: None,
            message: message.into(),
            retry_after: None,
        }
    }
}

/// A receiver of notifications.
pub trait Sink: Send + Sync {
    /// Delivers `n` once. At-least-once delivery is the relay's job: a sink
    /// makes one attempt and says how it went.
    fn deliver<'a>(
        &'a self,
        n: &'a Notification,
    ) -> BoxFuture<'a, Result<Delivered, DeliveryError>>;
}

/// The signature of `body` sent at `timestamp` (Unix seconds) with `key`:
/// `v1=` and the hex HMAC-SHA256 of `"{timestamp}.{body}"`.
pub fn sign(key: &[u8], timestamp: i64, body: &[u8]) -> String {
    format!(
        "v1={}",
        hex::encode(mac(key, timestamp, body).finalize().into_bytes())
    )
}

/// HMAC-SHA256 with `key` of `"{timestamp}.{body}"`.
fn mac(key: &[u8], timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// Checks a webhook's `Skillbox-Signature` for `body` and its
/// `Skillbox-Timestamp`, which must be within `tolerance` of `now` (Unix
/// seconds): what a receiver written in Rust does.
pub fn verify(
    key: &[u8],
    timestamp: &str,
    signature: &str,
    body: &[u8],
    now: i64,
    tolerance: Duration,
) -> Result<(), String> {
    let ts: i64 = timestamp
        .parse()
        .map_err(|_| format!("timestamp {timestamp:?} is not a number"))?;
    if (now - ts).unsigned_abs() > tolerance.as_secs() {
        return Err("timestamp too far from now (a replay?)".into());
    }
    let given = signature
        .strip_prefix("v1=")
        .and_then(|h| hex::decode(h).ok())
        .ok_or("signature is not v1=<hex>")?;
    mac(key, ts, body)
        .verify_slice(&given)
        .map_err(|_| "signature does not match the body".to_string())
}

/// Decides what an HTTP answer means: 2xx accepted; other 4xx than 408
/// and 429 refused for good; the rest (3xx, 408, 429, 5xx) retried.
fn classify(
    answer: Answer,
    explain: impl Fn(u16, &str) -> String,
) -> Result<Delivered, DeliveryError> {
    let text = String::from_utf8_lossy(&answer.body);
    let text = text.trim();
    let status = answer.status;
    if (200..300).contains(&status) {
        return Ok(Delivered {
            status: Some(status),
            detail: None,
        });
    }
    let permanent = (400..500).contains(&status) && status != 408 && status != 429;
    let mut shown: String = text.chars().take(300).collect();
    if shown.len() < text.len() {
        shown.push('…');
    }
    Err(DeliveryError {
        permanent,
        status: Some(status),
        message: explain(status, &shown),
        retry_after: answer.retry_after,
    })
}

fn unix_now() -> i64 {
    crate::store::now_ms() / 1000
}

/// `POST`s each notification as JSON, signed.
///
/// Headers: `Idempotency-Key` (the same on every attempt),
/// `Skillbox-Event` (e.g. `task.succeeded`), `Skillbox-Timestamp` (Unix
/// seconds) and `Skillbox-Signature: v1=<hex HMAC-SHA256(key,
/// "{timestamp}.{body}")>`.
pub struct WebhookSink {
    target: Target,
    key: String,
    timeout: Duration,
}

impl WebhookSink {
    /// A webhook to `target`, signing with `key`.
    pub(crate) fn new(target: Target, key: String, timeout: Duration) -> WebhookSink {
        WebhookSink {
            target,
            key,
            timeout,
        }
    }

    /// A webhook to `url` (`http://…`), signing with `key`.
    pub fn to(url: &str, key: impl Into<String>, timeout: Duration) -> Result<WebhookSink, String> {
        Ok(WebhookSink::new(Target::parse(url)?, key.into(), timeout))
    }
}

impl Sink for WebhookSink {
    fn deliver<'a>(
        &'a self,
        n: &'a Notification,
    ) -> BoxFuture<'a, Result<Delivered, DeliveryError>> {
        Box::pin(async move {
            let body =
                serde_json::to_vec(n).map_err(|e| DeliveryError::transient(e.to_string()))?;
            let ts = unix_now();
            let headers = [
                ("idempotency-key", n.idempotency_key.clone()),
                ("skillbox-event", n.event.clone()),
                ("skillbox-timestamp", ts.to_string()),
                ("skillbox-signature", sign(self.key.as_bytes(), ts, &body)),
            ];
            let answer = post(&self.target, &headers, body, self.timeout)
                .await
                .map_err(DeliveryError::transient)?;
            classify(answer, |status, text| {
                format!("the webhook answered HTTP {status}{}", tail(text))
            })
        })
    }
}

fn tail(text: &str) -> String {
    if text.is_empty() {
        String::new()
    } else {
        format!(": {text}")
    }
}

/// Posts to an OpenClaw gateway's hooks endpoint with its hooks token.
pub struct OpenClawSink {
    pub(super) base: Target,
    pub(super) token: String,
    pub(super) endpoint: OpenClawEndpoint,
    pub(super) agent_id: Option<String>,
    pub(super) wake_mode: String,
    pub(super) deliver: bool,
    pub(super) session_key: bool,
    pub(super) timeout: Duration,
}

impl OpenClawSink {
    /// The JSON body posted for `n`.
    fn body(&self, n: &Notification) -> serde_json::Value {
        match self.endpoint {
            OpenClawEndpoint::Agent => {
                let mut b = serde_json::json!({
                    "message": n.message,
                    "name": "skillbox",
                    "wakeMode": self.wake_mode,
                    "deliver": self.deliver,
                    "idempotencyKey": n.idempotency_key,
                });
                if let Some(a) = &self.agent_id {
                    b["agentId"] = a.clone().into();
                }
                if self.session_key
                    && let Some(s) = &n.parent_session
                {
                    // The turn runs in the parent's own session, after its
                    // conversation: the gateway's default is a fresh one.
                    b["sessionKey"] = s.clone().into();
                    b["sessionMode"] = "persistent".into();
                }
                // The reply goes back to the conversation's channel: the
                // gateway never infers a hook turn's recipient.
                if let Some(r) = &n.parent_route {
                    b["deliver"] = true.into();
                    b["channel"] = r.channel.clone().into();
                    b["to"] = r.to.clone().into();
                    if let Some(a) = &r.account_id {
                        b["accountId"] = a.clone().into();
                    }
                }
                b
            }
            OpenClawEndpoint::Wake => serde_json::json!({
                "text": n.message,
                "mode": self.wake_mode,
            }),
        }
    }
}

impl Sink for OpenClawSink {
    fn deliver<'a>(
        &'a self,
        n: &'a Notification,
    ) -> BoxFuture<'a, Result<Delivered, DeliveryError>> {
        Box::pin(async move {
            let path = match self.endpoint {
                OpenClawEndpoint::Agent => "hooks/agent",
                OpenClawEndpoint::Wake => "hooks/wake",
            };
            let target = self.base.join(path);
            let body = serde_json::to_vec(&self.body(n))
                .map_err(|e| DeliveryError::transient(e.to_string()))?;
            let headers = [
                ("authorization", format!("Bearer {}", self.token)),
                ("idempotency-key", n.idempotency_key.clone()),
            ];
            let answer = post(&target, &headers, body, self.timeout)
                .await
                .map_err(DeliveryError::transient)?;
            // What identifies the accepted run (agent) or event (wake).
            let said = serde_json::from_slice::<serde_json::Value>(&answer.body)
                .ok()
                .and_then(|v| {
                    v["runId"]
                        .as_str()
                        .map(|r| format!("runId={r}"))
                        .or_else(|| {
                            v["eventOutcome"]
                                .as_str()
                                .map(|o| format!("eventOutcome={o}"))
                        })
                });
            let mut done = classify(answer, |status, text| match status {
                401 | 403 => format!(
                    "the OpenClaw gateway refused the hooks token (HTTP {status}): the sink's token \
                     must equal the gateway's hooks.token{}",
                    tail(text)
                ),
                400 => format!(
                    "the OpenClaw gateway rejected the request (HTTP 400){}; check the sink's \
                     agent-id, that the gateway allows a request sessionKey \
                     (hooks.allowRequestSessionKey, and hooks.allowedSessionKeyPrefixes \
                     covering it) or set session-key = false, and that the task's parent \
                     route names a channel the gateway has",
                    tail(text)
                ),
                404 => format!(
                    "the OpenClaw gateway has no /{path} (HTTP 404): are hooks enabled \
                     (hooks.enabled) and is hooks.path the default?{}",
                    tail(text)
                ),
                _ => format!("the OpenClaw gateway answered HTTP {status}{}", tail(text)),
            })?;
            done.detail = said;
            Ok(done)
        })
    }
}

/// The embedder's function a [`CallbackSink`] calls.
pub type Callback = dyn Fn(&Notification) -> Result<(), String> + Send + Sync;

/// Calls a closure with each notification.
pub struct CallbackSink {
    f: Arc<Callback>,
}

impl CallbackSink {
    /// A sink calling `f`.
    pub fn new(
        f: impl Fn(&Notification) -> Result<(), String> + Send + Sync + 'static,
    ) -> CallbackSink {
        CallbackSink { f: Arc::new(f) }
    }
}

impl Sink for CallbackSink {
    fn deliver<'a>(
        &'a self,
        n: &'a Notification,
    ) -> BoxFuture<'a, Result<Delivered, DeliveryError>> {
        let (f, n) = (self.f.clone(), n.clone());
        Box::pin(async move {
            match tokio::task::spawn_blocking(move || f(&n)).await {
                Ok(Ok(())) => Ok(Delivered::default()),
                Ok(Err(e)) => Err(DeliveryError::transient(e)),
                Err(e) => Err(DeliveryError::transient(format!(
                    "the callback panicked: {e}"
                ))),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_tampering_does_not() {
        let key = b"0123456789abcdef0123";
        let body = br#"{"task_id":"x"}"#;
        let sig = sign(key, 1_700_000_000, body);
        assert!(sig.starts_with("v1=") && sig.len() == 3 + 64);
        let tol = Duration::from_secs(300);
        verify(key, "1700000000", &sig, body, 1_700_000_100, tol).unwrap();
        assert!(
            verify(
                key,
                "1700000000",
                &sig,
                br#"{"task_id":"y"}"#,
                1_700_000_000,
                tol
            )
            .is_err()
        );
        assert!(
            verify(
                b"another key of length",
                "1700000000",
                &sig,
                body,
                1_700_000_000,
                tol
            )
            .is_err()
        );
        assert!(verify(key, "1700000001", &sig, body, 1_700_000_000, tol).is_err());
        let e = verify(key, "1700000000", &sig, body, 1_700_001_000, tol).unwrap_err();
        assert!(e.contains("replay"), "{e}");
        // RFC 4231 test case 2, through the same construction.
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn openclaw_turns_run_in_the_parent_session_and_answer_on_its_route() {
        let sink = |session_key| OpenClawSink {
            base: Target::parse("http://127.0.0.1:1").unwrap(),
            token: "t".into(),
            endpoint: OpenClawEndpoint::Agent,
            agent_id: Some("main".into()),
            wake_mode: "now".into(),
            deliver: false,
            session_key,
            timeout: Duration::from_secs(1),
        };
        let note = |parent: serde_json::Value, route: serde_json::Value| -> Notification {
            serde_json::from_value(serde_json::json!({
                "idempotency_key": "k", "event": "task.succeeded", "terminal": true,
                "task_id": "01ARZ3NDEKTSV4RRFFQ69G5FAV", "skill": "hello",
                "parent_session": parent, "parent_route": route, "state": "succeeded",
                "reason": "done", "message": "m", "logs": "l",
                "timings": { "created_ms": 0, "attempt": 1, "changed_ms": 0 },
            }))
            .unwrap()
        };
        let null = serde_json::Value::Null;
        let route = serde_json::json!({ "channel": "telegram", "to": "42", "account_id": "ops" });

        // No parent: a fresh session, nothing delivered.
        let b = sink(true).body(&note(null.clone(), null.clone()));
        assert!(
            b.get("sessionKey").is_none() && b.get("sessionMode").is_none(),
            "{b}"
        );
        assert_eq!((&b["deliver"], b.get("channel")), (&false.into(), None));

        // A parent session: the turn runs in it.
        let b = sink(true).body(&note("agent:main:main".into(), null.clone()));
        assert_eq!(b["sessionKey"], "agent:main:main");
        assert_eq!(b["sessionMode"], "persistent");
        assert_eq!(b["deliver"], false, "no route: the transcript only");

        // And a route: the reply is delivered there.
        let b = sink(true).body(&note("agent:main:main".into(), route.clone()));
        assert_eq!(
            (&b["deliver"], &b["channel"], &b["to"], &b["accountId"]),
            (
                &true.into(),
                &"telegram".into(),
                &"42".into(),
                &"ops".into()
            )
        );

        // session-key = false: never the parent's session.
        let b = sink(false).body(&note("agent:main:main".into(), null));
        assert!(
            b.get("sessionKey").is_none() && b.get("sessionMode").is_none(),
            "{b}"
        );
    }

    #[test]
    fn answers_are_classified() {
        let a = |status| Answer {
            status,
            retry_after: None,
            body: Default::default(),
        };
        let c = |s| classify(a(s), |s, _| s.to_string());
        assert!(c(200).is_ok() && c(204).is_ok());
        for s in [400, 401, 404, 410, 422] {
            assert!(c(s).unwrap_err().permanent, "{s}");
        }
        for s in [301, 408, 429, 500, 502, 503] {
            assert!(!c(s).unwrap_err().permanent, "{s}");
        }
    }
}
