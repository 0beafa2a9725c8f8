//! [`Host::run`]: one run of a prepared component under one policy, to its
//! outcome.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::{Store, Trap, UpdateDeadline};
use wasmtime_wasi::I32Exit;

use super::outcome::{CallResult, FailureKind, Outcome, RunReport, classify_trap, parse_data};
use super::state::{Built, RunState};
use super::{Host, Pre, Prepared, SkillKind};
use crate::bindings::skillbox::skill::types::{FailureKind as WitFailureKind, Summary};
use crate::caps::approval::{ApprovalGate, Deadline};
use crate::caps::checkpoint::PersistCheckpoint;
use crate::caps::limits::Limit;
use crate::error::Error;
use crate::events::{Event, EventObserver};
use crate::policy::{EffectivePolicy, ResolvedLimits};

/// One run's input, policy and observers.
pub struct RunRequest {
    /// JSON text; for a command, `{"args": [...], "stdin": "..."}` or `null`.
    pub input: String,
    /// What the run may touch.
    pub policy: EffectivePolicy,
    /// Receives progress, logs, output and audit events.
    pub events: Arc<dyn EventObserver>,
    /// Checkpoints to start from (a resumed task's saved ones).
    pub checkpoints: BTreeMap<String, Vec<u8>>,
    /// Where each saved checkpoint is persisted before `save` returns to the
    /// guest (a task store); `None` keeps them in memory only.
    pub persist_checkpoint: Option<PersistCheckpoint>,
    /// Set to `true` to stop the run (it ends as [`Outcome::Cancelled`]).
    pub cancel: Option<tokio::sync::watch::Receiver<bool>>,
    /// Where calls that match an ask rule wait for the operator's decision
    /// (a task store); `None` refuses them.
    pub approvals: Option<Arc<dyn ApprovalGate>>,
    /// A tag for the programs this run starts (`SKILLBOX_RUN`), to find
    /// them after a crash (see [`crate::caps::exec::kill_tagged`]).
    pub tag: Option<String>,
    /// The values of the secrets `policy` lets programs use
    /// ([`crate::secrets::SecretBook::resolve`]); each is redacted from
    /// everything the run gives back.
    pub secrets: crate::secrets::SecretValues,
    /// The Docker engine of this run's `docker` capability, instead of
    /// the host's ([`Host::with_docker`]). A client is bound to the async
    /// runtime it first connected on: a host shared by runs on runtimes
    /// of their own gives each its own.
    pub docker: Option<Arc<crate::caps::docker::DockerEngine>>,
}

impl Default for RunRequest {
    /// Input `{}`, nothing granted, default limits, events discarded.
    fn default() -> Self {
        RunRequest {
            input: "{}".into(),
            policy: EffectivePolicy::compute(None, &crate::policy::Grants::default()).0,
            events: Arc::new(crate::events::Discard),
            checkpoints: BTreeMap::new(),
            persist_checkpoint: None,
            cancel: None,
            approvals: None,
            tag: None,
            secrets: Default::default(),
            docker: None,
        }
    }
}

impl Host {
    /// Runs a prepared component once under `request.policy`.
    ///
    /// Returns `Err` only when the run could not start (bad input, a grant
    /// that cannot be applied); everything that happens once the guest runs,
    /// including traps, timeouts and limits, is an [`Outcome`].
    pub async fn run(
        &self,
        prepared: &Prepared,
        mut request: RunRequest,
    ) -> Result<RunReport, Error> {
        // The state takes the rest of the request; the call needs the input.
        let input = std::mem::take(&mut request.input);
        let parsed: serde_json::Value =
            serde_json::from_str(&input).map_err(|e| Error::Input(format!("not JSON: {e}")))?;
        let limits = request.policy.limits;
        if limits.fuel.is_some() && !self.options.fuel {
            return Err(Error::Grant(
                "a fuel limit needs a host built with fuel metering (EngineOptions::fuel)".into(),
            ));
        }
        let started = Instant::now();
        let _in_progress = crate::metrics::InProgress::start();
        let deadline = Arc::new(Deadline::new(started, limits.timeout));
        let mut cancel = request.cancel.take();
        if let Some(missing) = request
            .policy
            .secrets
            .names()
            .find(|n| request.secrets.get(n).is_none())
        {
            return Err(Error::Grant(format!(
                "the secret {missing} is granted but its value was not given to the run"
            )));
        }
        // Everything the run reports passes the redactor: a guest that got
        // hold of a value cannot hand it on through its events.
        let redactor = request.secrets.redactor().clone();
        request.events = redactor.observer(request.events.clone());
        let events = request.events.clone();
        let docker = request
            .docker
            .clone()
            .unwrap_or_else(|| self.docker.clone());
        let Built {
            state,
            stdout,
            stderr,
            sandbox,
        } = RunState::build(prepared, request, &parsed, deadline.clone(), docker)?;
        let mut store = self.store(state, &limits, deadline.clone())?;
        let call = call(prepared, &mut store, &input);
        // Cancellation drops the call (and with it every exec'd process
        // group) at once, wherever the guest is; so does the deadline.
        let result = tokio::select! {
            r = call => Some(Ok(r)),
            () = expired(&deadline) => Some(Err(())),
            () = cancelled(&mut cancel) => None,
        };
        let (out, out_trunc) = stdout.contents();
        let (err, err_trunc) = stderr.contents();
        let stdout = redactor.text(&String::from_utf8_lossy(&out));
        let stderr = redactor.text(&String::from_utf8_lossy(&err));
        let timed_out = Outcome::TimedOut {
            limit_ms: limits.timeout.as_millis() as u64,
        };
        let outcome = match result {
            None => Outcome::Cancelled,
            Some(Err(())) => timed_out,
            Some(Ok(Ok(r))) => returned(r, &limits, &stdout),
            Some(Ok(Err(e))) => {
                let limit = store.data().limiter.exceeded.clone();
                classify_trap(&e, limit, &stderr, timed_out)
            }
        }
        .redacted(&redactor);
        // A command's stdout is its summary only when it succeeds; else it
        // is what the program printed before it failed, kept as output.
        let succeeded = matches!(outcome, Outcome::Succeeded { .. });
        if prepared.kind == SkillKind::Command && !succeeded && !stdout.is_empty() {
            events.event(Event::Output {
                stream: "stdout",
                text: stdout.clone(),
            });
        }
        Ok(RunReport {
            skill: prepared.name.clone(),
            digest: prepared.digest.clone(),
            kind: prepared.kind,
            outcome,
            duration_ms: started.elapsed().as_millis() as u64,
            cache: prepared.cache,
            sandbox: sandbox.status(),
            stdout,
            stderr,
            output_truncated: out_trunc || err_trunc,
            checkpoints: std::mem::take(&mut store.data_mut().checkpoint.saved),
        })
    }

    /// The run's store: its limits, fuel and deadline.
    fn store(
        &self,
        state: RunState,
        limits: &ResolvedLimits,
        deadline: Arc<Deadline>,
    ) -> Result<Store<RunState>, Error> {
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        if self.options.fuel {
            store
                .set_fuel(limits.fuel.unwrap_or(u64::MAX))
                .map_err(Error::engine)?;
        }
        // Check the wall clock at every epoch tick; yielding lets the outer
        // timeout fire even while the guest spins.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= deadline.get() {
                Err(Trap::Interrupt.into())
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        Ok(store)
    }
}

/// Instantiates the component and calls its entry point.
async fn call(
    prepared: &Prepared,
    store: &mut Store<RunState>,
    input: &str,
) -> wasmtime::Result<CallResult> {
    match &prepared.pre {
        Pre::Skill(pre) => {
            let skill = pre.instantiate_async(&mut *store).await?;
            skill
                .call_run(&mut *store, input)
                .await
                .map(CallResult::Skill)
        }
        Pre::Command(pre) => {
            let cmd = pre.instantiate_async(&mut *store).await?;
            match cmd.wasi_cli_run().call_run(&mut *store).await {
                Ok(r) => Ok(CallResult::Exit(if r.is_ok() { 0 } else { 1 })),
                Err(e) => match e.downcast_ref::<I32Exit>() {
                    Some(I32Exit(code)) => Ok(CallResult::Exit(*code)),
                    None => Err(e),
                },
            }
        }
    }
}

/// Resolves a little after the run's deadline, as it stands then (time
/// spent waiting for approvals pushes it back). The grace covers a guest
/// blocked in a host call past the deadline: the epoch check cannot stop
/// it there, dropping the call does.
async fn expired(deadline: &Deadline) {
    let grace = Duration::from_millis(50);
    loop {
        deadline.reached().await;
        tokio::time::sleep(grace).await;
        if deadline.get() + grace <= Instant::now() {
            return;
        }
    }
}

/// Resolves once `cancel` turns true; never without one.
async fn cancelled(cancel: &mut Option<tokio::sync::watch::Receiver<bool>>) {
    match cancel {
        Some(rx) => {
            while !*rx.borrow_and_update() {
                if rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        }
        None => std::future::pending::<()>().await,
    }
}

/// The outcome of an entry point that returned.
fn returned(r: CallResult, limits: &ResolvedLimits, stdout: &str) -> Outcome {
    match r {
        CallResult::Skill(Ok(summary)) => summarised(summary, limits),
        CallResult::Skill(Err(f)) => Outcome::Failed {
            kind: match f.kind {
                WitFailureKind::Failed => FailureKind::Failed,
                WitFailureKind::Denied => FailureKind::Denied,
                WitFailureKind::InvalidInput => FailureKind::InvalidInput,
            },
            message: crate::units::truncate_with_marker(f.message, limits.output, "… [truncated]"),
            data: f.data.as_deref().and_then(|d| parse_data(d).ok()),
        },
        CallResult::Exit(0) => Outcome::Succeeded {
            text: stdout.to_string(),
            data: serde_json::json!({ "exit_code": 0 }),
        },
        CallResult::Exit(code) => Outcome::Failed {
            kind: FailureKind::Failed,
            message: format!("exited with status {code}"),
            data: Some(serde_json::json!({ "exit_code": code })),
        },
    }
}

/// A skill's summary, held to the output cap.
fn summarised(summary: Summary, limits: &ResolvedLimits) -> Outcome {
    let size = summary.text.len() + summary.data.len();
    if size > limits.output {
        return Outcome::LimitExceeded {
            limit: Limit::Output,
            message: format!(
                "the summary is {size} bytes; the output cap is {} (raise it with --output)",
                limits.output
            ),
        };
    }
    match parse_data(&summary.data) {
        Ok(data) => Outcome::Succeeded {
            text: summary.text,
            data,
        },
        Err(message) => Outcome::Failed {
            kind: FailureKind::Failed,
            message,
            data: None,
        },
    }
}
