//! The `[relay]` table of the host's configuration file
//! ([`crate::config::HostConfig`]): sinks, defaults and retries.
//!
//! ```toml
//! [relay]
//! default = ["ops"]          # sinks of tasks that name none
//! deadline = "24h"           # give up on a notification after this long
//! retry-initial = "1s"       # first retry delay; doubles up to retry-max
//! retry-max = "5m"
//! timeout = "10s"            # one attempt
//!
//! [relay.sink.ops]
//! type = "webhook"
//! url = "https://hooks.example.com/skillbox"   # or http:// (loopback, a proxy)
//! ca-file = "/etc/skillbox/hooks-ca.pem"   # a private CA, besides the system's roots
//! secret-env = "SKILLBOX_WEBHOOK_SECRET"   # the HMAC key (or secret-file)
//!
//! [relay.sink.openclaw]
//! type = "openclaw"
//! url = "http://127.0.0.1:18789"           # the gateway
//! token-env = "OPENCLAW_HOOKS_TOKEN"       # its hooks.token (or token-file)
//! endpoint = "agent"                       # or "wake"
//!
//! [relay.sink.pager]
//! type = "webhook"
//! url = "https://pager.example.com/hook"
//! states = ["failed", "timed_out"]         # only these (all when unset)
//! skills = ["upgrade", "backup-*"]         # only tasks of these skills
//! ```
//!
//! Unknown keys are errors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::SinkFilter;
use super::sinks::{OpenClawSink, Sink, WebhookSink};
use crate::store::TaskState;
use crate::units::HumanDuration;

/// The `[relay]` table.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RelayConfig {
    /// Sinks of tasks that name none.
    #[serde(default)]
    pub default: Vec<String>,
    /// Give up on a notification not accepted this long after it was made.
    #[serde(default = "default_deadline")]
    pub deadline: HumanDuration,
    /// First retry delay.
    #[serde(default = "default_initial")]
    pub retry_initial: HumanDuration,
    /// Longest retry delay.
    #[serde(default = "default_max")]
    pub retry_max: HumanDuration,
    /// Limit of one attempt.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// The sinks, by name.
    #[serde(default)]
    pub sink: BTreeMap<String, SinkConfig>,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            default: Vec::new(),
            deadline: default_deadline(),
            retry_initial: default_initial(),
            retry_max: default_max(),
            timeout: default_timeout(),
            sink: BTreeMap::new(),
        }
    }
}

fn default_deadline() -> HumanDuration {
    HumanDuration(Duration::from_secs(24 * 3600))
}
fn default_initial() -> HumanDuration {
    HumanDuration(Duration::from_secs(1))
}
fn default_max() -> HumanDuration {
    HumanDuration(Duration::from_secs(300))
}
fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}

impl RelayConfig {
    pub(crate) fn check(&self) -> Result<(), String> {
        for d in &self.default {
            if !self.sink.contains_key(d) {
                return Err(format!(
                    "relay.default names {d:?}, which is not a [relay.sink.{d}]"
                ));
            }
        }
        for (name, sink) in &self.sink {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(format!(
                    "sink name {name:?}: use letters, digits, '-' and '_'"
                ));
            }
            sink.check()
                .map_err(|m| format!("[relay.sink.{name}]: {m}"))?;
        }
        if self.retry_initial.get().is_zero() || self.timeout.get().is_zero() {
            return Err("relay.retry-initial and relay.timeout must be more than zero".into());
        }
        if self.retry_max < self.retry_initial {
            return Err("relay.retry-max is shorter than relay.retry-initial".into());
        }
        Ok(())
    }
}

/// Which OpenClaw hooks endpoint a sink posts to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OpenClawEndpoint {
    /// `POST /hooks/agent`: an agent turn with the message, in the parent
    /// session when the task has one.
    #[default]
    Agent,
    /// `POST /hooks/wake`: a system event that wakes the main session.
    Wake,
}

/// One sink.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum SinkConfig {
    /// `POST` of the notification as JSON, signed with HMAC-SHA256.
    #[serde(rename_all = "kebab-case")]
    Webhook {
        /// `http://host:port/path` or `https://…`.
        url: String,
        /// A PEM file of CA certificates trusted for an `https://` url,
        /// besides the system's roots.
        ca_file: Option<PathBuf>,
        /// Environment variable holding the signing key
        /// (default `SKILLBOX_WEBHOOK_SECRET`).
        secret_env: Option<String>,
        /// File holding the signing key (instead of `secret-env`).
        secret_file: Option<PathBuf>,
        /// Only notifications of tasks entering these states reach this
        /// sink (e.g. `["failed", "timed_out"]`); all when empty.
        #[serde(default)]
        states: Vec<TaskState>,
        /// Only notifications of tasks of these skills (names, `*`
        /// wildcards) reach this sink; all when empty.
        #[serde(default)]
        skills: Vec<String>,
    },
    /// An OpenClaw gateway's hooks endpoint.
    #[serde(rename_all = "kebab-case")]
    Openclaw {
        /// The gateway, e.g. `http://127.0.0.1:18789` or `https://…`.
        url: String,
        /// A PEM file of CA certificates trusted for an `https://` url,
        /// besides the system's roots.
        ca_file: Option<PathBuf>,
        /// Environment variable holding the gateway's `hooks.token`
        /// (default `OPENCLAW_HOOKS_TOKEN`).
        token_env: Option<String>,
        /// File holding the token (instead of `token-env`).
        token_file: Option<PathBuf>,
        /// `agent` (default) or `wake`.
        #[serde(default)]
        endpoint: OpenClawEndpoint,
        /// The agent to run the turn (`agentId`); the gateway's default
        /// agent when unset.
        agent_id: Option<String>,
        /// `now` (default) or `next-heartbeat`.
        wake_mode: Option<String>,
        /// Whether the agent's reply is announced (`deliver`; default
        /// false) for a task without a parent route; a task's route
        /// (channel and recipient) always has the reply delivered there.
        #[serde(default)]
        deliver: bool,
        /// Only notifications of tasks entering these states reach this
        /// sink (e.g. `["failed", "timed_out"]`); all when empty.
        #[serde(default)]
        states: Vec<TaskState>,
        /// Only notifications of tasks of these skills (names, `*`
        /// wildcards) reach this sink; all when empty.
        #[serde(default)]
        skills: Vec<String>,
        /// Send the task's parent session as `sessionKey`, the turn then
        /// running in that session (`sessionMode: "persistent"`) (default
        /// true; the gateway must allow it with
        /// `hooks.allowRequestSessionKey` and `allowedSessionKeyPrefixes`).
        session_key: Option<bool>,
    },
}

impl SinkConfig {
    /// Which notifications the sink takes.
    pub fn filter(&self) -> SinkFilter {
        let (states, skills) = match self {
            SinkConfig::Webhook { states, skills, .. }
            | SinkConfig::Openclaw { states, skills, .. } => (states, skills),
        };
        SinkFilter {
            states: states.clone(),
            skills: skills.clone(),
        }
    }

    fn check(&self) -> Result<(), String> {
        self.filter().check()?;
        let (url, ca_file) = match self {
            SinkConfig::Webhook { url, ca_file, .. }
            | SinkConfig::Openclaw { url, ca_file, .. } => (url, ca_file),
        };
        super::http::Target::parse_with(url, ca_file.as_deref())?;
        if let SinkConfig::Openclaw {
            wake_mode: Some(m), ..
        } = self
            && m != "now"
            && m != "next-heartbeat"
        {
            return Err(format!(
                "wake-mode {m:?}: use \"now\" or \"next-heartbeat\""
            ));
        }
        Ok(())
    }

    /// The sink, and the secret it holds (for redaction).
    pub(super) fn build(
        &self,
        name: &str,
        timeout: Duration,
    ) -> Result<(Arc<dyn Sink>, String), crate::Error> {
        let err = |m: String| crate::Error::Config(format!("[relay.sink.{name}]: {m}"));
        match self {
            SinkConfig::Webhook {
                url,
                ca_file,
                secret_env,
                secret_file,
                ..
            } => {
                let secret = read_secret(
                    secret_env.as_deref(),
                    secret_file.as_deref(),
                    "SKILLBOX_WEBHOOK_SECRET",
                    "the webhook's signing key",
                )
                .map_err(err)?;
                let target =
                    super::http::Target::parse_with(url, ca_file.as_deref()).map_err(err)?;
                Ok((
                    Arc::new(WebhookSink::new(target, secret.clone(), timeout)),
                    secret,
                ))
            }
            SinkConfig::Openclaw {
                url,
                ca_file,
                token_env,
                token_file,
                endpoint,
                agent_id,
                wake_mode,
                deliver,
                session_key,
                ..
            } => {
                let token = read_secret(
                    token_env.as_deref(),
                    token_file.as_deref(),
                    "OPENCLAW_HOOKS_TOKEN",
                    "the gateway's hooks token",
                )
                .map_err(err)?;
                let base = super::http::Target::parse_with(url, ca_file.as_deref()).map_err(err)?;
                let sink = OpenClawSink {
                    base,
                    token: token.clone(),
                    endpoint: *endpoint,
                    agent_id: agent_id.clone(),
                    wake_mode: wake_mode.clone().unwrap_or_else(|| "now".into()),
                    deliver: *deliver,
                    session_key: session_key.unwrap_or(true),
                    timeout,
                };
                Ok((Arc::new(sink), token))
            }
        }
    }
}

fn read_secret(
    env: Option<&str>,
    file: Option<&Path>,
    default_env: &str,
    what: &str,
) -> Result<String, String> {
    let value = match (env, file) {
        (Some(_), Some(_)) => {
            return Err(format!(
                "give {what} in an environment variable or a file, not both"
            ));
        }
        (_, Some(f)) => std::fs::read_to_string(f)
            .map_err(|e| format!("{what}: {}: {e}", f.display()))?
            .trim_end_matches(['\n', '\r'])
            .to_string(),
        (e, None) => {
            let var = e.unwrap_or(default_env);
            std::env::var(var).map_err(|_| {
                format!("{what}: environment variable {var} is not set (or give a file)")
            })?
        }
    };
    if value.len() < 16 {
        return Err(format!("{what} is shorter than 16 bytes"));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HostConfig;

    #[test]
    fn parses_sinks_and_refuses_mistakes() {
        let c = HostConfig::parse(
            r#"
            [relay]
            default = ["ops"]
            retry-initial = "50ms"
            [relay.sink.ops]
            type = "webhook"
            url = "http://127.0.0.1:9/hook"
            [relay.sink.claw]
            type = "openclaw"
            url = "http://127.0.0.1:18789"
            endpoint = "wake"
            "#,
        )
        .unwrap();
        assert_eq!(c.relay.default, ["ops"]);
        assert_eq!(c.relay.retry_initial.get(), Duration::from_millis(50));
        assert!(matches!(
            c.relay.sink["claw"],
            SinkConfig::Openclaw {
                endpoint: OpenClawEndpoint::Wake,
                ..
            }
        ));
        for (bad, says) in [
            ("[relay]\nbogus = 1", "unknown field"),
            (
                "[relay.sink.a]\ntype = \"webhook\"\nurl = \"http://x/\"\nsecret = \"s\"",
                "unknown field",
            ),
            (
                "[relay.sink.a]\ntype = \"carrier-pigeon\"\nurl = \"http://x/\"",
                "unknown variant",
            ),
            ("[relay]\ndefault = [\"nope\"]", "not a [relay.sink.nope]"),
            (
                "[relay.sink.a]\ntype = \"webhook\"\nurl = \"ftp://x/\"",
                "http(s)://",
            ),
            (
                "[relay.sink.a]\ntype = \"webhook\"\nurl = \"https://x/\"\nca-file = \"/nonexistent/ca.pem\"",
                "ca-file /nonexistent/ca.pem",
            ),
            (
                "[relay.sink.a]\ntype = \"openclaw\"\nurl = \"http://x\"\nwake-mode = \"later\"",
                "wake-mode",
            ),
            (
                "[relay]\nretry-initial = \"10s\"\nretry-max = \"1s\"",
                "retry-max",
            ),
            ("[other]\nx = 1", "unknown field"),
        ] {
            let e = HostConfig::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }

    #[test]
    fn secrets_come_from_the_environment_or_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key");
        std::fs::write(&file, "0123456789abcdef-from-file\n").unwrap();
        assert_eq!(
            read_secret(None, Some(&file), "UNUSED", "key").unwrap(),
            "0123456789abcdef-from-file"
        );
        let e = read_secret(Some("SKILLBOX_TEST_SURELY_UNSET"), None, "X", "the key").unwrap_err();
        assert!(e.contains("SKILLBOX_TEST_SURELY_UNSET is not set"), "{e}");
        std::fs::write(&file, "short").unwrap();
        assert!(
            read_secret(None, Some(&file), "X", "key")
                .unwrap_err()
                .contains("16 bytes")
        );
    }
}
