//! The host: one engine, a linker with every capability wired in, prepared
//! components, and [`Host::run`], which runs one skill under one policy.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, Store, Trap, UpdateDeadline};
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::p2::pipe::MemoryInputPipe;
use wasmtime_wasi::{I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::bindings::SkillPre;
use crate::bindings::skillbox::skill as wit;
use crate::bindings::skillbox::skill::types::FailureKind as WitFailureKind;
use crate::caps;
use crate::caps::checkpoint::{CheckpointCtx, PersistCheckpoint};
use crate::caps::docker::DockerCtx;
use crate::caps::exec::ExecCtx;
use crate::caps::limits::{Limit, Limiter};
use crate::caps::net::NetCtx;
use crate::caps::output::CappedOutput;
use crate::caps::progress::{LogBudget, ProgressCtx};
use crate::caps::sandbox::{Sandbox, SandboxStatus};
use crate::engine::{CacheOutcome, EngineOptions, EpochTicker, build_engine, load_component};
use crate::error::Error;
use crate::events::EventSink;
use crate::policy::EffectivePolicy;
use crate::skill::SkillSource;

/// The data of one run's `Store`: WASI state plus one context per
/// skillbox capability. Each capability's host code sees only its own
/// context (see [`Host::new`] for the wiring).
pub struct RunState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: Limiter,
    events: Arc<dyn EventSink>,
    net: NetCtx,
    exec: ExecCtx,
    docker: DockerCtx,
    progress: ProgressCtx,
    checkpoint: CheckpointCtx,
}

impl WasiView for RunState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl crate::events::HasEvents for RunState {
    fn events(&self) -> &dyn EventSink {
        &*self.events
    }
}

impl caps::net::NetView for RunState {
    fn net(&self) -> &NetCtx {
        &self.net
    }
}

impl crate::bindings::skillbox::skill::types::Host for RunState {}

/// What kind of component a skill is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SkillKind {
    /// Exports `run` from the `skillbox:skill` world.
    Skill,
    /// A plain `wasi:cli/command`: exit code is the status, stdout the summary.
    Command,
}

enum Pre {
    Skill(SkillPre<RunState>),
    Command(CommandPre<RunState>),
}

/// A component compiled, linked and ready to instantiate many times.
pub struct Prepared {
    /// Skill or command.
    pub kind: SkillKind,
    /// Whether the compiled code came from the cache.
    pub cache: CacheOutcome,
    /// The component's sha256.
    pub digest: String,
    /// The skill's name.
    pub name: String,
    pre: Pre,
}

/// Why a run did not succeed in the skill's own terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureKind {
    /// The skill could not do its work.
    Failed,
    /// The sandbox refused something the skill needed.
    Denied,
    /// The input did not parse or did not make sense.
    InvalidInput,
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum Outcome {
    /// The skill returned a summary.
    Succeeded {
        /// Markdown for the parent session.
        text: String,
        /// Structured result.
        data: serde_json::Value,
    },
    /// The skill returned a failure (or a command exited non-zero).
    Failed {
        /// Failed, denied or invalid input.
        kind: FailureKind,
        /// The reason.
        message: String,
        /// Structured detail.
        data: Option<serde_json::Value>,
    },
    /// The run hit its wall-clock limit and was stopped.
    TimedOut {
        /// The limit, in milliseconds.
        limit_ms: u64,
    },
    /// A resource limit stopped the run.
    LimitExceeded {
        /// Which limit.
        limit: Limit,
        /// What happened.
        message: String,
    },
    /// The guest trapped (a panic, an invalid operation).
    Crashed {
        /// The trap, and the guest's last stderr line when there is one.
        message: String,
    },
    /// The run was stopped on request.
    Cancelled,
}

/// Everything about one finished run.
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    /// The skill's name.
    pub skill: String,
    /// The component's sha256.
    pub digest: String,
    /// Skill or command.
    pub kind: SkillKind,
    /// How it ended.
    #[serde(flatten)]
    pub outcome: Outcome,
    /// Wall-clock time of the run, in milliseconds.
    pub duration_ms: u64,
    /// Whether the compiled component came from the cache.
    pub cache: CacheOutcome,
    /// How the run's exec'd programs were confined; `None` when it
    /// started none.
    pub sandbox: Option<SandboxStatus>,
    /// The guest's stdout (capped; for a command this is also the summary).
    pub stdout: String,
    /// The guest's stderr (capped).
    pub stderr: String,
    /// Whether stdout or stderr hit the output cap.
    pub output_truncated: bool,
    /// Checkpoints as the run left them.
    #[serde(skip)]
    pub checkpoints: BTreeMap<String, Vec<u8>>,
}

/// One run's input, policy and observers.
pub struct RunRequest {
    /// JSON text; for a command, `{"args": [...], "stdin": "..."}` or `null`.
    pub input: String,
    /// What the run may touch.
    pub policy: EffectivePolicy,
    /// Receives progress, logs, output and audit events.
    pub events: Arc<dyn EventSink>,
    /// Checkpoints to start from (a resumed task's saved ones).
    pub checkpoints: BTreeMap<String, Vec<u8>>,
    /// Where each saved checkpoint is persisted before `save` returns to the
    /// guest (a task store); `None` keeps them in memory only.
    pub persist_checkpoint: Option<PersistCheckpoint>,
    /// Set to `true` to stop the run (it ends as [`Outcome::Cancelled`]).
    pub cancel: Option<tokio::sync::watch::Receiver<bool>>,
    /// A tag for the programs this run starts (`SKILLBOX_RUN`), to find
    /// them after a crash (see [`crate::caps::exec::kill_tagged`]).
    pub tag: Option<String>,
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
            tag: None,
        }
    }
}

/// The skillbox host: embed one per process and run many skills on it.
pub struct Host {
    engine: Engine,
    linker: Linker<RunState>,
    options: EngineOptions,
    prepared: Mutex<HashMap<String, Arc<Prepared>>>,
    docker: Arc<caps::docker::DockerEngine>,
    _ticker: EpochTicker,
}

impl Host {
    /// Builds the engine and wires every capability into the linker.
    pub fn new(options: EngineOptions) -> Result<Host, Error> {
        let engine = build_engine(&options)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(Error::engine)?;
        caps::fs::add_to_linker(&mut linker).map_err(Error::engine)?;
        caps::net::add_to_linker(&mut linker).map_err(Error::engine)?;
        wit::types::add_to_linker::<_, HasSelf<RunState>>(&mut linker, |s| s)
            .map_err(Error::engine)?;
        wit::exec::add_to_linker::<_, HasSelf<ExecCtx>>(&mut linker, |s| &mut s.exec)
            .map_err(Error::engine)?;
        wit::docker::add_to_linker::<_, HasSelf<DockerCtx>>(&mut linker, |s| &mut s.docker)
            .map_err(Error::engine)?;
        wit::progress::add_to_linker::<_, HasSelf<ProgressCtx>>(&mut linker, |s| &mut s.progress)
            .map_err(Error::engine)?;
        wit::checkpoint::add_to_linker::<_, HasSelf<CheckpointCtx>>(&mut linker, |s| {
            &mut s.checkpoint
        })
        .map_err(Error::engine)?;
        let ticker = EpochTicker::start(&engine);
        Ok(Host {
            engine,
            linker,
            options,
            prepared: Mutex::default(),
            docker: Arc::new(caps::docker::DockerEngine::from_env()),
            _ticker: ticker,
        })
    }

    /// Uses this Docker engine for the `docker` capability instead of the
    /// one in `DOCKER_HOST` (or the default socket).
    pub fn with_docker(mut self, engine: caps::docker::DockerEngine) -> Host {
        self.docker = Arc::new(engine);
        self
    }

    /// The Docker engine the `docker` capability talks to.
    pub fn docker(&self) -> &caps::docker::DockerEngine {
        &self.docker
    }

    /// The underlying wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Compiles (or loads from cache) and links a component. Prepared
    /// components are kept in memory by digest, so a second run of the same
    /// component only instantiates.
    pub fn prepare(&self, source: &SkillSource) -> Result<Arc<Prepared>, Error> {
        if let Some(p) = self.lock().get(&source.digest) {
            return Ok(p.clone());
        }
        let (component, cache) = load_component(
            &self.engine,
            self.options.cache_dir.as_deref(),
            &source.digest,
            &source.bytes,
            &source.component_path,
        )?;
        let component_err = |message: String| Error::Component {
            path: source.component_path.clone(),
            message,
        };
        let ty = component.component_type();
        let names: Vec<&str> = ty.exports(&self.engine).map(|(n, _)| n).collect();
        let instance_pre = self.linker.instantiate_pre(&component).map_err(|e| {
            component_err(format!(
                "it imports something skillbox does not provide: {e:#} \
                 (skillbox provides skillbox:skill@0.1.0 and wasi:cli/imports@0.2)"
            ))
        })?;
        let (kind, pre) = if names.contains(&"run") {
            let p = SkillPre::new(instance_pre).map_err(|e| {
                component_err(format!(
                    "its `run` export does not match skillbox:skill@0.1.0: {e:#}"
                ))
            })?;
            (SkillKind::Skill, Pre::Skill(p))
        } else if names.iter().any(|n| n.starts_with("wasi:cli/run@0.2")) {
            let p = CommandPre::new(instance_pre).map_err(|e| {
                component_err(format!("its wasi:cli/run export is unusable: {e:#}"))
            })?;
            (SkillKind::Command, Pre::Command(p))
        } else {
            return Err(component_err(format!(
                "it exports neither `run` (a skillbox skill) nor `wasi:cli/run` (a WASI command); exports: {names:?}"
            )));
        };
        let prepared = Arc::new(Prepared {
            kind,
            cache,
            digest: source.digest.clone(),
            name: source.name.clone(),
            pre,
        });
        self.lock().insert(source.digest.clone(), prepared.clone());
        Ok(prepared)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Prepared>>> {
        self.prepared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs a prepared component once under `request.policy`.
    ///
    /// Returns `Err` only when the run could not start (bad input, a grant
    /// that cannot be applied); everything that happens once the guest runs,
    /// including traps, timeouts and limits, is an [`Outcome`].
    pub async fn run(&self, prepared: &Prepared, request: RunRequest) -> Result<RunReport, Error> {
        let RunRequest {
            input,
            policy,
            events,
            checkpoints,
            persist_checkpoint,
            cancel,
            tag,
        } = request;
        let parsed: serde_json::Value =
            serde_json::from_str(&input).map_err(|e| Error::Input(format!("not JSON: {e}")))?;
        if policy.limits.fuel.is_some() && !self.options.fuel {
            return Err(Error::Grant(
                "a fuel limit needs a host built with fuel metering (EngineOptions::fuel)".into(),
            ));
        }
        let limits = policy.limits;
        let started = Instant::now();
        let deadline = started + limits.timeout;

        let mut wasi = WasiCtxBuilder::new();
        caps::fs::configure(&mut wasi, &policy)?;
        caps::env::configure(&mut wasi, &policy);
        let net = caps::net::configure(&mut wasi, &policy, events.clone())?;
        // A command's stdout is its summary, so it is not streamed.
        let stream_stdout = (prepared.kind == SkillKind::Skill).then(|| events.clone());
        let stdout = CappedOutput::new("stdout", limits.output, stream_stdout);
        let stderr = CappedOutput::new("stderr", limits.output, Some(events.clone()));
        wasi.stdout(stdout.clone()).stderr(stderr.clone());
        if prepared.kind == SkillKind::Command {
            let (args, stdin) = command_input(&parsed)?;
            let mut argv = vec![prepared.name.clone()];
            argv.extend(args);
            wasi.args(&argv);
            wasi.stdin(MemoryInputPipe::new(stdin));
        }
        let sandbox = Arc::new(if policy.exec.is_empty() {
            Sandbox::none()
        } else {
            Sandbox::for_policy(&policy)
        });
        let policy = Arc::new(policy);
        let state = RunState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            limiter: Limiter::new(limits.memory),
            events: events.clone(),
            net,
            exec: ExecCtx {
                policy: policy.clone(),
                sandbox: sandbox.clone(),
                events: events.clone(),
                deadline,
                tag: tag.clone(),
            },
            docker: DockerCtx {
                engine: self.docker.clone(),
                policy,
                events: events.clone(),
                deadline,
                task: tag,
            },
            progress: ProgressCtx {
                events,
                log: LogBudget::new(limits.output),
            },
            checkpoint: CheckpointCtx {
                saved: checkpoints,
                persist: persist_checkpoint,
            },
        };
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
            if Instant::now() >= deadline {
                Err(Trap::Interrupt.into())
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });

        let call = async {
            match &prepared.pre {
                Pre::Skill(pre) => {
                    let skill = pre.instantiate_async(&mut store).await?;
                    skill
                        .call_run(&mut store, &input)
                        .await
                        .map(CallResult::Skill)
                }
                Pre::Command(pre) => {
                    let cmd = pre.instantiate_async(&mut store).await?;
                    match cmd.wasi_cli_run().call_run(&mut store).await {
                        Ok(r) => Ok(CallResult::Exit(if r.is_ok() { 0 } else { 1 })),
                        Err(e) => match e.downcast_ref::<I32Exit>() {
                            Some(I32Exit(code)) => Ok(CallResult::Exit(*code)),
                            None => Err(e),
                        },
                    }
                }
            }
        };
        // The grace covers a guest blocked in a host call past the deadline:
        // the epoch check cannot stop it there, dropping the future does.
        let timed = tokio::time::timeout(limits.timeout + Duration::from_millis(50), call);
        // Cancellation drops the call (and with it every exec'd process
        // group) at once, wherever the guest is.
        let cancelled = async move {
            match cancel {
                Some(mut rx) => {
                    while !*rx.borrow_and_update() {
                        if rx.changed().await.is_err() {
                            std::future::pending::<()>().await;
                        }
                    }
                }
                None => std::future::pending::<()>().await,
            }
        };
        let result = tokio::select! {
            r = timed => Some(r),
            () = cancelled => None,
        };

        let (out, out_trunc) = stdout.contents();
        let (err, err_trunc) = stderr.contents();
        let stdout_text = String::from_utf8_lossy(&out).into_owned();
        let stderr_text = String::from_utf8_lossy(&err).into_owned();
        let timed_out = Outcome::TimedOut {
            limit_ms: limits.timeout.as_millis() as u64,
        };
        let outcome = match result {
            None => Outcome::Cancelled,
            Some(Err(_elapsed)) => timed_out,
            Some(Ok(Ok(CallResult::Skill(Ok(summary))))) => {
                let size = summary.text.len() + summary.data.len();
                if size > limits.output {
                    Outcome::LimitExceeded {
                        limit: Limit::Output,
                        message: format!(
                            "the summary is {size} bytes; the output cap is {} (raise it with --output)",
                            limits.output
                        ),
                    }
                } else {
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
            }
            Some(Ok(Ok(CallResult::Skill(Err(f))))) => Outcome::Failed {
                kind: match f.kind {
                    WitFailureKind::Failed => FailureKind::Failed,
                    WitFailureKind::Denied => FailureKind::Denied,
                    WitFailureKind::InvalidInput => FailureKind::InvalidInput,
                },
                message: crate::units::truncate_with_marker(
                    f.message,
                    limits.output,
                    "… [truncated]",
                ),
                data: f.data.as_deref().and_then(|d| parse_data(d).ok()),
            },
            Some(Ok(Ok(CallResult::Exit(0)))) => Outcome::Succeeded {
                text: stdout_text.clone(),
                data: serde_json::json!({ "exit_code": 0 }),
            },
            Some(Ok(Ok(CallResult::Exit(code)))) => Outcome::Failed {
                kind: FailureKind::Failed,
                message: format!("exited with status {code}"),
                data: Some(serde_json::json!({ "exit_code": code })),
            },
            Some(Ok(Err(e))) => classify_trap(
                &e,
                store.data().limiter.exceeded.clone(),
                &stderr_text,
                timed_out,
            ),
        };
        Ok(RunReport {
            skill: prepared.name.clone(),
            digest: prepared.digest.clone(),
            kind: prepared.kind,
            outcome,
            duration_ms: started.elapsed().as_millis() as u64,
            cache: prepared.cache,
            sandbox: sandbox.status(),
            stdout: stdout_text,
            stderr: stderr_text,
            output_truncated: out_trunc || err_trunc,
            checkpoints: std::mem::take(&mut store.data_mut().checkpoint.saved),
        })
    }
}

enum CallResult {
    Skill(
        Result<
            crate::bindings::skillbox::skill::types::Summary,
            crate::bindings::skillbox::skill::types::Failure,
        >,
    ),
    Exit(i32),
}

fn parse_data(text: &str) -> Result<serde_json::Value, String> {
    if text.is_empty() {
        return Ok(serde_json::Value::Null);
    }
    serde_json::from_str(text)
        .map_err(|e| format!("the skill returned summary data that is not JSON: {e}"))
}

fn command_input(v: &serde_json::Value) -> Result<(Vec<String>, Vec<u8>), Error> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct CommandInput {
        #[serde(default)]
        args: Vec<String>,
        #[serde(default)]
        stdin: String,
    }
    if v.is_null() {
        return Ok((Vec::new(), Vec::new()));
    }
    let c: CommandInput = serde_json::from_value(v.clone()).map_err(|e| {
        Error::Input(format!(
            "a WASI command takes {{\"args\": [..], \"stdin\": \"..\"}} or null: {e}"
        ))
    })?;
    Ok((c.args, c.stdin.into_bytes()))
}

/// The guest's explanation of a trap: a Rust panic's location and message,
/// or else its last meaningful stderr line.
fn last_words(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if let Some(i) = lines.iter().rposition(|l| l.contains("panicked at")) {
        return lines[i..]
            .iter()
            .take(2)
            .copied()
            .collect::<Vec<_>>()
            .join(" ");
    }
    lines
        .iter()
        .rev()
        .find(|l| !l.starts_with("note: run with `RUST_BACKTRACE"))
        .map(|l| l.to_string())
        .unwrap_or_default()
}

fn classify_trap(
    e: &wasmtime::Error,
    limit: Option<(Limit, String)>,
    stderr: &str,
    timed_out: Outcome,
) -> Outcome {
    if let Some((limit, message)) = limit {
        return Outcome::LimitExceeded { limit, message };
    }
    let last_line = last_words(stderr);
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => timed_out,
        Some(Trap::OutOfFuel) => Outcome::LimitExceeded {
            limit: Limit::Fuel,
            message: "fuel exhausted (raise it with --fuel)".into(),
        },
        Some(Trap::StackOverflow) => Outcome::LimitExceeded {
            limit: Limit::Stack,
            message: "stack overflow: the guest recursed too deeply; it was stopped cleanly".into(),
        },
        Some(trap) => Outcome::Crashed {
            message: if last_line.is_empty() {
                format!("the guest trapped: {trap}")
            } else {
                format!("the guest trapped: {trap}; its last words: {last_line}")
            },
        },
        None => Outcome::Crashed {
            message: format!("{e:#}"),
        },
    }
}
