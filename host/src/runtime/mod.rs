//! The runtime: one engine, a linker with every capability wired in,
//! prepared components, and [`Host::run`], which runs one skill under one
//! policy. It knows nothing of tasks, stores or relays.

mod approval;
pub mod engine;
mod outcome;
mod run;
mod state;

pub use outcome::{FailureKind, Outcome, RunReport};
pub use run::RunRequest;
pub use state::RunState;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use wasmtime::Engine;
use wasmtime::component::{HasSelf, Linker};
use wasmtime_wasi::p2::bindings::CommandPre;

use crate::bindings::SkillPre;
use crate::bindings::skillbox::skill as wit;
use crate::caps;
use crate::caps::checkpoint::CheckpointCtx;
use crate::caps::docker::DockerCtx;
use crate::caps::exec::ExecCtx;
use crate::caps::progress::ProgressCtx;
use crate::error::Error;
use crate::skill::SkillSource;
use engine::{CacheOutcome, EngineOptions, EpochTicker, build_engine, load_component};

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

/// The skillbox host: embed one per process and run many skills on it.
pub struct Host {
    engine: Engine,
    linker: Linker<RunState>,
    options: EngineOptions,
    prepared: Mutex<HashMap<String, Arc<Prepared>>>,
    docker: Arc<caps::docker::DockerEngine>,
    _ticker: EpochTicker,
}

/// An engine and its linker, by the options that shaped them (pooling,
/// instances, fuel).
type PrebuiltParts = ((bool, u32, bool), Engine, Linker<RunState>);

/// Engines and linkers built by [`Host::prebuild`].
static PREBUILT: Mutex<Vec<PrebuiltParts>> = Mutex::new(Vec::new());

fn prebuilt_key(o: &EngineOptions) -> (bool, u32, bool) {
    (o.pooling, o.max_instances, o.fuel)
}

fn take_prebuilt(o: &EngineOptions) -> Option<(Engine, Linker<RunState>)> {
    let mut all = PREBUILT.lock().unwrap_or_else(|p| p.into_inner());
    let at = all.iter().position(|(k, _, _)| *k == prebuilt_key(o))?;
    let (_, engine, linker) = all.swap_remove(at);
    Some((engine, linker))
}

impl Host {
    /// Builds the engine and wires every capability into the linker.
    pub fn new(options: EngineOptions) -> Result<Host, Error> {
        let (engine, linker) = match take_prebuilt(&options) {
            Some(parts) => parts,
            None => Host::parts(&options)?,
        };
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

    /// Builds an engine and its linker for `options` ahead of use: the
    /// next [`Host::new`] with the same pooling, instance count and fuel
    /// setting takes them instead of building its own. For a process
    /// that is forked before it knows what it will run.
    pub fn prebuild(options: &EngineOptions) -> Result<(), Error> {
        let parts = Host::parts(options)?;
        PREBUILT.lock().unwrap_or_else(|p| p.into_inner()).push((
            prebuilt_key(options),
            parts.0,
            parts.1,
        ));
        Ok(())
    }

    fn parts(options: &EngineOptions) -> Result<(Engine, Linker<RunState>), Error> {
        let engine = build_engine(options)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(Error::engine)?;
        caps::fs::add_to_linker(&mut linker).map_err(Error::engine)?;
        caps::readonly::add_to_linker(&mut linker).map_err(Error::engine)?;
        caps::net::add_to_linker(&mut linker).map_err(Error::engine)?;
        wit::types::add_to_linker::<_, HasSelf<RunState>>(&mut linker, |s| s)
            .map_err(Error::engine)?;
        wit::approval::add_to_linker::<_, HasSelf<RunState>>(&mut linker, |s| s)
            .map_err(Error::engine)?;
        wit::digest::add_to_linker::<_, caps::digest::HasDigests>(&mut linker, |s| s.digests())
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
        Ok((engine, linker))
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
            crate::metrics::metrics().component("memory");
            return Ok(p.clone());
        }
        let (component, cache) = load_component(
            &self.engine,
            self.options.cache_dir.as_deref(),
            &source.digest,
            &source.bytes,
            &source.component_path,
        )?;
        crate::metrics::metrics().component(match cache {
            CacheOutcome::Hit => "disk",
            CacheOutcome::Compiled => "compiled",
        });
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
}
