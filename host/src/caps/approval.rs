//! `approval`: calls that wait for the operator's decision.
//!
//! A call that matches one of the run's ask rules (see
//! [`crate::policy::ask`]) asks through the run's [`ApprovalGate`] (a task
//! store, for background tasks) and waits; the time it waits is added to
//! the run's [`Deadline`], so the wall-clock limit counts only the time the
//! skill works, while the gate's own approval timeout bounds the wait. A
//! run without a gate (a plain `skillbox run`) cannot wait for anyone: its
//! calls that ask are refused, saying how to run it as a task instead.
//!
//! Each request carries a key that names the call across attempts (the
//! call and how many times this run made it before), so that a resumed
//! task that reaches the same call finds the decision already given.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;

use crate::events::{Event, EventObserver};
use crate::policy::AskPolicy;
pub use crate::policy::ask::{ApprovalRequest, Decision};

/// Where a run's requests for approval go and their decisions come from.
pub trait ApprovalGate: Send + Sync {
    /// Records `request` under `key` (or finds the one recorded before)
    /// and waits until it is decided or `timeout` after it was first made;
    /// an error is a failure to ask, and the call is refused.
    fn ask(
        &self,
        key: String,
        request: ApprovalRequest,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Decision, String>>;
}

/// The end of a run, pushed back by the time the run waited for decisions.
#[derive(Debug)]
pub struct Deadline {
    start: Instant,
    limit: Duration,
    waited_ns: AtomicU64,
}

impl Deadline {
    /// A deadline `limit` after `start`.
    pub fn new(start: Instant, limit: Duration) -> Deadline {
        Deadline {
            start,
            limit,
            waited_ns: AtomicU64::new(0),
        }
    }

    /// When the run must end, as it stands now.
    pub fn get(&self) -> Instant {
        self.start + self.limit + self.waited()
    }

    /// How long the run waited for decisions so far.
    pub fn waited(&self) -> Duration {
        Duration::from_nanos(self.waited_ns.load(Ordering::Relaxed))
    }

    /// Resolves once the deadline, as it stands then, has passed.
    pub async fn reached(&self) {
        loop {
            let at = self.get();
            tokio::time::sleep_until(at.into()).await;
            if self.get() <= Instant::now() {
                return;
            }
        }
    }

    fn push_back(&self, by: Duration) {
        let ns = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.waited_ns.fetch_add(ns, Ordering::Relaxed);
    }
}

/// A store whose host functions may ask for approval; host code generic
/// over the store asks through this, never naming the runtime's store type.
pub(crate) trait AskView {
    /// The run's asking side.
    fn asker(&self) -> &Arc<Asker>;
}

/// How many requests a run keeps track of before it refuses more.
const MAX_DISTINCT_CALLS: usize = 4096;

/// The asking side of one run.
pub struct Asker {
    gate: Option<Arc<dyn ApprovalGate>>,
    /// The run's ask rules.
    pub rules: AskPolicy,
    deadline: Arc<Deadline>,
    events: Arc<dyn EventObserver>,
    /// How many times each call asked in this run.
    seen: Mutex<HashMap<String, u32>>,
    /// Rules approved for the rest of the run (write and net rules).
    approved: Mutex<HashSet<String>>,
    /// Calls the skill's own approved requests cover, each once.
    covered: Mutex<Vec<Cover>>,
}

/// A call an approved request of the skill covers.
struct Cover {
    /// [`Action::cover`]'s key of the call.
    key: String,
    /// Who approved the request.
    by: String,
}

/// The rule a skill's own requests are stored under (an approval "always
/// for this task" settles the skill's later requests).
pub const SKILL_RULE: &str = "the skill's own request";

/// Longest reason of a skill's own request, and longest action.
pub const MAX_REQUEST_TEXT: usize = 1024;

/// Most actions one request of a skill may list.
pub const MAX_REQUEST_ACTIONS: usize = 32;

/// Longest list of actions of one request, in words.
pub const MAX_REQUEST_DETAIL: usize = 8 * 1024;

/// A call a skill lists in its own request (the `approval` interface's
/// `action`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// `exec.run` of this program and arguments.
    Exec(Vec<String>),
    /// `docker.run` of this image tag.
    DockerRun(String),
    /// `docker.stop` of this container, as the skill names it.
    DockerStop(String),
    /// `docker.remove` of this container, as the skill names it.
    DockerRemove(String),
    /// Anything else, in words.
    Other(String),
}

impl Action {
    /// The key of the call this action covers (the same key the call's own
    /// hook builds), or `None` for words.
    pub fn cover(&self) -> Result<Option<String>, String> {
        Ok(match self {
            Action::Exec(argv) => match argv.split_first() {
                Some((program, args)) => Some(exec_cover(program, args)),
                None => return Err("an exec action names no program".into()),
            },
            Action::DockerRun(image) => Some(docker_cover(
                "run",
                &crate::policy::normalize_tag(image).map_err(|e| format!("docker-run: {e}"))?,
            )),
            Action::DockerStop(c) => Some(docker_cover("stop", c)),
            Action::DockerRemove(c) => Some(docker_cover("remove", c)),
            Action::Other(_) => None,
        })
    }

    /// The action in words, for the operator.
    pub fn describe(&self) -> String {
        match self {
            Action::Exec(argv) => format!("exec {}", shell_words::join(argv)),
            Action::DockerRun(image) => format!("docker run {image}"),
            Action::DockerStop(c) => format!("docker stop {c}"),
            Action::DockerRemove(c) => format!("docker remove {c}"),
            Action::Other(words) => words.clone(),
        }
    }

    fn texts(&self) -> Vec<&str> {
        match self {
            Action::Exec(argv) => argv.iter().map(String::as_str).collect(),
            Action::DockerRun(s)
            | Action::DockerStop(s)
            | Action::DockerRemove(s)
            | Action::Other(s) => vec![s.as_str()],
        }
    }
}

/// The cover key of an exec of `program` with `args`.
pub(crate) fn exec_cover(program: &str, args: &[String]) -> String {
    let argv: Vec<&str> = std::iter::once(program)
        .chain(args.iter().map(String::as_str))
        .collect();
    format!("exec {}", serde_json::Value::from(argv))
}

/// The cover key of docker `op` on `target` (a normalized tag for `run`,
/// the container as the skill names it for `stop` and `remove`).
pub(crate) fn docker_cover(op: &str, target: &str) -> String {
    format!("docker {op} {target}")
}

/// Why a skill's own request did not get a "go".
#[derive(Debug, PartialEq, Eq)]
pub enum RequestError {
    /// The operator denied it, or no decision came in time.
    Denied(String),
    /// The run cannot wait for a decision.
    Unavailable(String),
    /// The request is malformed or too large.
    Invalid(String),
}

/// `text` with its control characters escaped (`\n`, `\u{1b}`): a call
/// exactly as made, on one line.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// `text` on one line: control characters (a newline that would forge a
/// line of the operator's message) become spaces.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_string()
}

/// A call that matched an ask rule.
pub struct Asking {
    /// `exec`, `docker`, `write`, `net` or `skill`.
    pub capability: &'static str,
    /// The exact call.
    pub detail: String,
    /// The rule, in the operator's words.
    pub rule: String,
    /// The skill's explanation, for its own requests.
    pub reason: Option<String>,
    /// One approval covers the rest of the run (write and net rules).
    pub per_run: bool,
    /// The key under which a skill's approved request covers this call
    /// (as `Action::cover` builds it); `None` when none can.
    pub cover: Option<String>,
}

impl Asker {
    /// The asking side of a run with `rules`, asking through `gate`.
    pub fn new(
        gate: Option<Arc<dyn ApprovalGate>>,
        rules: AskPolicy,
        deadline: Arc<Deadline>,
        events: Arc<dyn EventObserver>,
    ) -> Asker {
        Asker {
            gate,
            rules,
            deadline,
            events,
            seen: Mutex::default(),
            approved: Mutex::default(),
            covered: Mutex::default(),
        }
    }

    /// The run's deadline.
    pub fn deadline(&self) -> &Arc<Deadline> {
        &self.deadline
    }

    /// Asks for `call` and waits for the decision: `Ok` once approved, else
    /// the refusal's message (naming who denied it and the rule).
    pub async fn ask(&self, call: Asking) -> Result<(), String> {
        self.ask_noted(call).await.map(drop)
    }

    /// Whether this run can wait for decisions at all.
    pub fn can_wait(&self) -> bool {
        self.gate.is_some()
    }

    /// The skill's own request: asks the operator with the skill's
    /// `reason` and `actions`, and once approved, lets each listed call
    /// that an ask rule would hold go ahead once without asking again.
    /// `Ok` carries the operator's note.
    pub async fn request(
        &self,
        reason: &str,
        actions: &[Action],
    ) -> Result<Option<String>, RequestError> {
        let reason = one_line(reason);
        if reason.is_empty() {
            return Err(RequestError::Invalid(
                "a request needs a reason the operator can read".into(),
            ));
        }
        if actions.len() > MAX_REQUEST_ACTIONS {
            return Err(RequestError::Invalid(format!(
                "a request lists {} actions; at most {MAX_REQUEST_ACTIONS}",
                actions.len()
            )));
        }
        let long = std::iter::once(reason.as_str())
            .chain(actions.iter().flat_map(Action::texts))
            .any(|t| t.len() > MAX_REQUEST_TEXT);
        if long {
            return Err(RequestError::Invalid(format!(
                "a request's reason and each of its actions must be at most {MAX_REQUEST_TEXT} bytes"
            )));
        }
        let covers = actions
            .iter()
            .map(Action::cover)
            .collect::<Result<Vec<_>, _>>()
            .map_err(RequestError::Invalid)?;
        let detail = if actions.is_empty() {
            "(no calls listed)".to_string()
        } else {
            one_line(
                &actions
                    .iter()
                    .map(Action::describe)
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        };
        if detail.len() > MAX_REQUEST_DETAIL {
            return Err(RequestError::Invalid(format!(
                "a request's actions come to {} bytes in words; at most {MAX_REQUEST_DETAIL}",
                detail.len()
            )));
        }
        if !self.can_wait() {
            return Err(RequestError::Unavailable(format!(
                "the skill asks the operator ({reason}), and a `skillbox run` cannot \
                 wait for a decision: run the skill as a background task (`skillbox \
                 spawn`) and approve it with `skillbox tasks approve`"
            )));
        }
        let call = Asking {
            capability: "skill",
            detail,
            rule: SKILL_RULE.into(),
            reason: Some(reason),
            per_run: false,
            cover: None,
        };
        let decision = self.ask_noted(call).await.map_err(RequestError::Denied)?;
        let mut covered = lock(&self.covered);
        for key in covers.into_iter().flatten() {
            covered.push(Cover {
                key,
                by: decision.by.clone(),
            });
        }
        Ok(decision.note)
    }

    async fn ask_noted(&self, call: Asking) -> Result<Decision, String> {
        if call.per_run && lock(&self.approved).contains(&call.rule) {
            return Ok(Decision {
                approved: true,
                always_for_task: false,
                by: "an earlier approval in this run".into(),
                note: None,
                at_ms: 0,
            });
        }
        if let Some(key) = &call.cover {
            let mut covered = lock(&self.covered);
            if let Some(i) = covered.iter().position(|c| &c.key == key) {
                let cover = covered.swap_remove(i);
                drop(covered);
                self.audit(
                    call.capability,
                    &call.detail,
                    true,
                    format!(
                        "covered by the skill's own request, approved by {} (rule {})",
                        cover.by, call.rule
                    ),
                );
                return Ok(Decision {
                    approved: true,
                    always_for_task: false,
                    by: cover.by,
                    note: None,
                    at_ms: 0,
                });
            }
        }
        let Some(gate) = self.gate.clone() else {
            return Err(format!(
                "{}: the operator asked to approve this call first ({}), and a \
                 `skillbox run` cannot wait for a decision: run the skill as a \
                 background task (`skillbox spawn`) and approve it with \
                 `skillbox tasks approve`",
                call.detail, call.rule
            ));
        };
        let key = {
            let mut seen = lock(&self.seen);
            let name = if call.per_run {
                call.rule.clone()
            } else {
                format!("{} {}", call.capability, call.detail)
            };
            if !seen.contains_key(&name) && seen.len() >= MAX_DISTINCT_CALLS {
                return Err(format!(
                    "{}: the run asked for approval of {MAX_DISTINCT_CALLS} different calls; no more",
                    call.detail
                ));
            }
            let n = seen.entry(name.clone()).or_default();
            *n += 1;
            format!("{name}#{n}")
        };
        let request = ApprovalRequest {
            capability: call.capability.to_string(),
            // The call comes from the guest (an exec argument, a path): its
            // control characters are shown escaped, so that it cannot forge
            // a line of the operator's message.
            detail: printable(&call.detail),
            rule: call.rule.clone(),
            reason: call.reason,
        };
        let asked = Instant::now();
        let decision = gate.ask(key, request, self.rules.timeout).await;
        self.deadline.push_back(asked.elapsed());
        let decision = match decision {
            Ok(d) => d,
            Err(e) => {
                let message = format!("{}: could not ask for approval: {e}", call.detail);
                self.audit(call.capability, &call.detail, false, message.clone());
                return Err(message);
            }
        };
        let note = decision
            .note
            .as_deref()
            .map(|n| format!(": {n}"))
            .unwrap_or_default();
        if decision.approved {
            self.audit(
                call.capability,
                &call.detail,
                true,
                format!("approved by {} (rule {})", decision.by, call.rule),
            );
            if call.per_run {
                lock(&self.approved).insert(call.rule);
            }
            Ok(decision)
        } else {
            let message = if call.capability == "skill" {
                format!(
                    "the skill's request ({}) was denied by {}{note}",
                    call.detail, decision.by
                )
            } else {
                format!(
                    "{}: denied by {}{note} (the operator asked to approve it first: {})",
                    call.detail, decision.by, call.rule
                )
            };
            self.audit(call.capability, &call.detail, false, message.clone());
            Err(message)
        }
    }

    fn audit(&self, capability: &'static str, detail: &str, allowed: bool, reason: String) {
        self.events.event(Event::Audit {
            capability,
            detail: format!("approval: {detail}"),
            allowed,
            reason,
        });
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Answer(bool, Mutex<Vec<String>>);

    impl ApprovalGate for Answer {
        fn ask(
            &self,
            key: String,
            _: ApprovalRequest,
            _: Duration,
        ) -> BoxFuture<'static, Result<Decision, String>> {
            self.1.lock().unwrap().push(key);
            let approved = self.0;
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok(Decision {
                    approved,
                    always_for_task: false,
                    by: "test".into(),
                    note: None,
                    at_ms: 0,
                })
            })
        }
    }

    fn call(per_run: bool) -> Asking {
        Asking {
            capability: "exec",
            detail: "systemctl restart app".into(),
            rule: "--ask-exec 'systemctl restart app'".into(),
            reason: None,
            per_run,
            cover: None,
        }
    }

    #[tokio::test]
    async fn keys_count_repeated_calls_and_the_wait_moves_the_deadline() {
        let deadline = Arc::new(Deadline::new(Instant::now(), Duration::from_secs(1)));
        let before = deadline.get();
        let gate = Arc::new(Answer(true, Mutex::default()));
        let asker = Asker::new(
            Some(gate.clone()),
            AskPolicy::default(),
            deadline.clone(),
            Arc::new(crate::events::Discard),
        );
        asker.ask(call(false)).await.unwrap();
        asker.ask(call(false)).await.unwrap();
        asker.ask(call(true)).await.unwrap();
        asker.ask(call(true)).await.unwrap();
        assert_eq!(
            *gate.1.lock().unwrap(),
            [
                "exec systemctl restart app#1",
                "exec systemctl restart app#2",
                "--ask-exec 'systemctl restart app'#1"
            ],
            "a per-run approval is asked once"
        );
        assert!(deadline.get() >= before + Duration::from_millis(60));
    }

    #[tokio::test]
    async fn a_skills_request_covers_each_listed_call_once_and_bad_requests_are_refused() {
        let deadline = Arc::new(Deadline::new(Instant::now(), Duration::from_secs(1)));
        let gate = Arc::new(Answer(true, Mutex::default()));
        let asker = Asker::new(
            Some(gate.clone()),
            AskPolicy::default(),
            deadline,
            Arc::new(crate::events::Discard),
        );
        let argv = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let restart = Action::Exec(argv(&["systemctl", "restart", "app"]));
        asker
            .request("restart the app\nnow", std::slice::from_ref(&restart))
            .await
            .unwrap();
        let mut covered = call(false);
        covered.cover = Some(exec_cover("systemctl", &argv(&["restart", "app"])));
        asker.ask(covered).await.unwrap();
        let mut again = call(false);
        again.cover = Some(exec_cover("systemctl", &argv(&["restart", "app"])));
        asker.ask(again).await.unwrap();
        let keys = gate.1.lock().unwrap().clone();
        assert_eq!(
            keys,
            [
                "skill exec systemctl restart app#1",
                "exec systemctl restart app#1"
            ],
            "the listed call went ahead once; the second asked"
        );

        let invalid = |e: RequestError| matches!(e, RequestError::Invalid(_));
        assert!(invalid(asker.request(" \n", &[]).await.unwrap_err()));
        let many = vec![restart.clone(); MAX_REQUEST_ACTIONS + 1];
        assert!(invalid(asker.request("x", &many).await.unwrap_err()));
        let long = Action::Other("x".repeat(MAX_REQUEST_TEXT + 1));
        assert!(invalid(asker.request("x", &[long]).await.unwrap_err()));
        let wide = Action::Exec(vec!["echo".into(); 4000]);
        assert!(invalid(asker.request("x", &[wide]).await.unwrap_err()));
        assert!(invalid(
            asker
                .request("x", &[Action::Exec(vec![])])
                .await
                .unwrap_err()
        ));
        assert_eq!(gate.1.lock().unwrap().len(), 2, "no bad request asked");
    }

    struct Record(Mutex<Vec<ApprovalRequest>>);

    impl ApprovalGate for Record {
        fn ask(
            &self,
            _: String,
            request: ApprovalRequest,
            _: Duration,
        ) -> BoxFuture<'static, Result<Decision, String>> {
            self.0.lock().unwrap().push(request);
            Box::pin(async {
                Ok(Decision {
                    approved: true,
                    always_for_task: false,
                    by: "test".into(),
                    note: None,
                    at_ms: 0,
                })
            })
        }
    }

    #[tokio::test]
    async fn a_call_cannot_forge_lines_of_the_request() {
        let gate = Arc::new(Record(Mutex::default()));
        let asker = Asker::new(
            Some(gate.clone()),
            AskPolicy::default(),
            Arc::new(Deadline::new(Instant::now(), Duration::from_secs(1))),
            Arc::new(crate::events::Discard),
        );
        let mut forged = call(false);
        forged.detail = "echo 'x\nanswer with: skillbox tasks approve OTHER 1\x1b[2K'".into();
        asker.ask(forged).await.unwrap();
        let detail = gate.0.lock().unwrap()[0].detail.clone();
        assert!(!detail.chars().any(char::is_control), "{detail:?}");
        assert!(detail.contains("x\\nanswer with"), "{detail}");
    }

    #[tokio::test]
    async fn denials_and_a_run_without_a_gate_are_refusals_naming_the_rule() {
        let deadline = Arc::new(Deadline::new(Instant::now(), Duration::from_secs(1)));
        let events = Arc::new(crate::events::Discard);
        let no = Asker::new(
            Some(Arc::new(Answer(false, Mutex::default()))),
            AskPolicy::default(),
            deadline.clone(),
            events.clone(),
        );
        let e = no.ask(call(false)).await.unwrap_err();
        assert!(
            e.contains("denied by test") && e.contains("--ask-exec"),
            "{e}"
        );
        let alone = Asker::new(None, AskPolicy::default(), deadline, events);
        let e = alone.ask(call(false)).await.unwrap_err();
        assert!(
            e.contains("skillbox spawn") && e.contains("--ask-exec"),
            "{e}"
        );
    }
}
