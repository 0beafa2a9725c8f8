//! The data of one run's `Store`: WASI state plus one context per skillbox
//! capability, built from the run's policy.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryInputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::{Prepared, RunRequest, SkillKind};
use crate::caps;
use crate::caps::approval::{Asker, Deadline};
use crate::caps::checkpoint::CheckpointCtx;
use crate::caps::docker::{DockerCtx, DockerEngine};
use crate::caps::exec::ExecCtx;
use crate::caps::limits::Limiter;
use crate::caps::net::NetCtx;
use crate::caps::output::CappedOutput;
use crate::caps::progress::{LogBudget, ProgressCtx};
use crate::caps::readonly::GrantedDirs;
use crate::caps::sandbox::Sandbox;
use crate::error::Error;
use crate::events::EventObserver;

/// The data of one run's `Store`: WASI state plus one context per
/// skillbox capability. Each capability's host code sees only its own
/// context (see [`Host::new`](super::Host::new) for the wiring).
pub struct RunState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(super) limiter: Limiter,
    events: Arc<dyn EventObserver>,
    net: NetCtx,
    read_only: GrantedDirs,
    pub(super) exec: ExecCtx,
    pub(super) docker: DockerCtx,
    pub(super) progress: ProgressCtx,
    pub(super) checkpoint: CheckpointCtx,
    digest: caps::digest::DigestCtx,
    pub(super) asker: Arc<Asker>,
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
    fn events(&self) -> &dyn EventObserver {
        &*self.events
    }
}

impl caps::readonly::GrantedDirsView for RunState {
    fn granted_dirs(&self) -> &GrantedDirs {
        &self.read_only
    }
}

impl caps::approval::AskView for RunState {
    fn asker(&self) -> &Arc<Asker> {
        &self.asker
    }
}

impl caps::net::NetView for RunState {
    fn net(&self) -> &NetCtx {
        &self.net
    }
}

impl crate::bindings::skillbox::skill::types::Host for RunState {}

/// A run's state, with the pieces the runtime keeps reading while it runs.
pub(super) struct Built {
    pub(super) state: RunState,
    pub(super) stdout: CappedOutput,
    pub(super) stderr: CappedOutput,
    pub(super) sandbox: Arc<Sandbox>,
}

impl RunState {
    /// What the `digest` capability's host functions work on.
    pub(super) fn digests(&mut self) -> caps::digest::Digests<'_> {
        caps::digest::Digests {
            table: &mut self.table,
            ctx: &mut self.digest,
        }
    }

    /// The state of one run of `prepared`: each capability's context from
    /// the run's policy. `input` is the parsed input (a command's args and
    /// stdin).
    pub(super) fn build(
        prepared: &Prepared,
        request: RunRequest,
        input: &serde_json::Value,
        deadline: Arc<Deadline>,
        docker: Arc<DockerEngine>,
    ) -> Result<Built, Error> {
        let RunRequest {
            policy,
            events,
            checkpoints,
            persist_checkpoint,
            approvals,
            tag,
            secrets,
            ..
        } = request;
        let asker = Arc::new(Asker::new(
            approvals,
            policy.ask.clone(),
            deadline,
            events.clone(),
        ));
        let limits = policy.limits;
        let mut wasi = WasiCtxBuilder::new();
        caps::fs::configure(&mut wasi, &policy)?;
        caps::env::configure(&mut wasi, &policy, secrets.redactor());
        // What the run was handed at its start, for the audit trail (its
        // calls are audited as they come).
        caps::fs::audit(&policy, &*events);
        caps::env::audit(&policy, &*events);
        let net = caps::net::configure(&mut wasi, &policy, events.clone(), asker.clone())?;
        // A command's stdout is its summary, so it is not streamed.
        let stream_stdout = (prepared.kind == SkillKind::Skill).then(|| events.clone());
        let stdout = CappedOutput::new("stdout", limits.output, stream_stdout);
        let stderr = CappedOutput::new("stderr", limits.output, Some(events.clone()));
        wasi.stdout(stdout.clone()).stderr(stderr.clone());
        if prepared.kind == SkillKind::Command {
            let (args, stdin) = command_input(input)?;
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
        let read_only = GrantedDirs::new(&policy);
        let policy = Arc::new(policy);
        let state = RunState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            limiter: Limiter::new(limits.memory),
            events: events.clone(),
            net,
            read_only,
            exec: ExecCtx {
                policy: policy.clone(),
                sandbox: sandbox.clone(),
                events: events.clone(),
                asker: asker.clone(),
                tag: tag.clone(),
                secrets: secrets.clone(),
            },
            docker: DockerCtx {
                engine: docker,
                policy,
                events: events.clone(),
                asker: asker.clone(),
                task: tag,
                secrets,
            },
            asker,
            progress: ProgressCtx {
                events,
                log: LogBudget::new(limits.output),
            },
            checkpoint: CheckpointCtx {
                saved: checkpoints,
                persist: persist_checkpoint,
            },
            digest: caps::digest::DigestCtx::default(),
        };
        Ok(Built {
            state,
            stdout,
            stderr,
            sandbox,
        })
    }
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
