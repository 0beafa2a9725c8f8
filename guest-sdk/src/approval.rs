//! Ask the operator before a step, in the skill's own words.
//!
//! An operator can hold some calls for approval (`--ask-exec`,
//! `--ask-docker`, …): such a call waits until the operator decides. A step
//! of several such calls would then wait several times, each time showing
//! only the call. A [`Request`] instead asks once, with the skill's reason
//! and the list of calls it is about to make; once approved, each listed
//! call goes ahead without asking again (once). A request grants nothing:
//! the calls are still checked against the policy.
//!
//! Only a background task (`skillbox spawn`) can wait for a decision; in a
//! plain `skillbox run`, [`Request::ask`] fails with
//! [`Error::Unavailable`]. Ask only when it is needed:
//! [`Request::needed`] says whether any listed call would wait.
//!
//! ```no_run
//! use skillbox_sdk::approval::{Action, Request};
//!
//! # fn main() -> skillbox_sdk::Result<()> {
//! let swap = Request::new("replace myapp 1.4 by 1.5: about 5 s of downtime")
//!     .action(Action::DockerStop("myapp".into()))
//!     .action(Action::DockerRemove("myapp".into()))
//!     .action(Action::DockerRun("myapp:1.5".into()));
//! if swap.needed() {
//!     // Waits for the operator; a denial is an error of kind `Denied`.
//!     let note = swap.ask()?;
//!     skillbox_sdk::info!("approved{}", note.map(|n| format!(": {n}")).unwrap_or_default());
//! }
//! # Ok(())
//! # }
//! ```

use std::fmt;

use crate::__private::skillbox::skill::approval as wit;

/// A call the skill is about to make, as listed in a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// [`exec`](crate::exec) of this program and exactly these arguments
    /// (program first).
    Exec(Vec<String>),
    /// [`docker::Run`](crate::docker::Run) of this image tag.
    DockerRun(String),
    /// [`docker::stop`](crate::docker::stop) of this container, named
    /// exactly as the skill will name it in the call.
    DockerStop(String),
    /// [`docker::remove`](crate::docker::remove) of this container, named
    /// exactly as the skill will name it in the call.
    DockerRemove(String),
    /// Anything else, in words; it shows the operator what will happen but
    /// covers no call.
    Other(String),
}

impl Action {
    fn to_wit(&self) -> wit::Action {
        match self.clone() {
            Action::Exec(argv) => wit::Action::Exec(argv),
            Action::DockerRun(t) => wit::Action::DockerRun(t),
            Action::DockerStop(c) => wit::Action::DockerStop(c),
            Action::DockerRemove(c) => wit::Action::DockerRemove(c),
            Action::Other(w) => wit::Action::Other(w),
        }
    }
}

/// A request for the operator's approval: a reason and the calls it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a Request does nothing until `.ask()` is called"]
pub struct Request {
    reason: String,
    actions: Vec<Action>,
}

impl Request {
    /// A request with `reason`: one line the operator reads (at most
    /// 1 KiB; control characters become spaces).
    pub fn new(reason: impl Into<String>) -> Self {
        Request {
            reason: reason.into(),
            actions: Vec::new(),
        }
    }

    /// Lists one more call (at most 32).
    pub fn action(mut self, action: Action) -> Self {
        self.actions.push(action);
        self
    }

    /// Whether any listed call would wait for the operator's approval under
    /// the run's ask rules.
    pub fn needed(&self) -> bool {
        let actions: Vec<wit::Action> = self.actions.iter().map(Action::to_wit).collect();
        wit::needs_approval(&actions)
    }

    /// Asks the operator and waits for the decision: the operator's note
    /// once approved.
    pub fn ask(&self) -> Result<Option<String>, Error> {
        let req = wit::Request {
            reason: self.reason.clone(),
            actions: self.actions.iter().map(Action::to_wit).collect(),
        };
        wit::ask(&req).map_err(|e| match e {
            wit::ApprovalError::Denied(m) => Error::Denied(m),
            wit::ApprovalError::Unavailable(m) => Error::Unavailable(m),
            wit::ApprovalError::Invalid(m) => Error::Invalid(m),
        })
    }
}

/// Why a [`Request`] did not get a "go".
///
/// Converts into [`crate::Error`] with `?`: `Denied` becomes
/// [`ErrorKind::Denied`](crate::ErrorKind::Denied), the rest
/// [`ErrorKind::Failed`](crate::ErrorKind::Failed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The operator denied it, or no decision came in time; the text says
    /// who and why.
    Denied(String),
    /// The run cannot wait for a decision (a plain `skillbox run`).
    Unavailable(String),
    /// The request is malformed or too large.
    Invalid(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Denied(m) => write!(f, "approval denied: {m}"),
            Error::Unavailable(m) => write!(f, "approval unavailable: {m}"),
            Error::Invalid(m) => write!(f, "approval request invalid: {m}"),
        }
    }
}

impl std::error::Error for Error {}
