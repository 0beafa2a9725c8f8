//! The one wasmtime [`Engine`] of a host, and the on-disk cache of compiled
//! components.
//!
//! Compiling a component takes tens of milliseconds; loading its compiled
//! form takes tens of microseconds. Compiled components are cached on disk,
//! keyed by the component's sha256 and by a hash of everything in the
//! engine's configuration that affects compiled code (and the wasmtime
//! version), so an upgraded host or a different configuration never loads a
//! stale artifact. Files are written to a temporary name and renamed, so a
//! crash never leaves a half-written entry; an entry that fails to load is
//! recompiled and replaced.
//!
//! Loading a cached artifact runs native code from the cache directory:
//! keep it private to the user running skillbox (it is created `0700`, its
//! files `0600`, and tightened if found wider; see [`crate::private`]).

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::component::Component;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::error::Error;

/// How often the epoch advances; the granularity of wall-clock limits.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Engine settings of a [`Host`](crate::Host).
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// Where compiled components are cached; `None` disables the disk cache.
    pub cache_dir: Option<PathBuf>,
    /// Pre-allocate instance slots (fast instantiation, bounded count).
    pub pooling: bool,
    /// Most instances alive at once with pooling.
    pub max_instances: u32,
    /// Enable fuel metering (needed for fuel limits; costs a few percent).
    pub fuel: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            cache_dir: default_cache_dir(),
            pooling: true,
            max_instances: 100,
            fuel: false,
        }
    }
}

/// `$XDG_CACHE_HOME/skillbox/components` (or the platform's cache dir).
pub fn default_cache_dir() -> Option<PathBuf> {
    crate::caller::cache_dir().map(|d| d.join("skillbox").join("components"))
}

pub(crate) fn build_engine(opts: &EngineOptions) -> Result<Engine, Error> {
    let mut c = Config::new();
    c.wasm_component_model(true)
        .epoch_interruption(true)
        .consume_fuel(opts.fuel)
        // Component-model async is not used; leaving it on makes every host
        // call several times slower.
        .concurrency_support(false);
    if opts.pooling {
        let n = opts.max_instances.max(1);
        let mut p = PoolingAllocationConfig::default();
        p.total_component_instances(n)
            .total_stacks(n)
            .total_core_instances(n * 8)
            .total_memories(n * 2)
            .total_tables(n * 4)
            .max_memories_per_component(4)
            .max_tables_per_component(8)
            .max_core_instances_per_component(32)
            // Returning a slot's pages to the kernel costs a TLB shootdown
            // on every core; doing it for a batch of slots at once was a
            // visible share of short tasks' time. A queued slot is not
            // reused before it is reset.
            .decommit_batch_size((n as usize / 4).clamp(1, 64));
        c.allocation_strategy(InstanceAllocationStrategy::Pooling(p));
    }
    Engine::new(&c).map_err(Error::engine)
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until dropped.
pub(crate) struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    pub(crate) fn start(engine: &Engine) -> EpochTicker {
        let stop = Arc::new(AtomicBool::new(false));
        let (e, s) = (engine.clone(), stop.clone());
        std::thread::Builder::new()
            .name("skillbox-epoch".into())
            .spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    e.increment_epoch();
                }
            })
            .expect("spawning the epoch thread");
        EpochTicker { stop }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Where a component came from when it was loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CacheOutcome {
    /// Loaded from the disk cache.
    Hit,
    /// Compiled (and stored, when a cache is configured).
    Compiled,
}

fn engine_key(engine: &Engine) -> String {
    let mut h = std::hash::DefaultHasher::new();
    env!("CARGO_PKG_VERSION").hash(&mut h);
    engine.precompile_compatibility_hash().hash(&mut h);
    format!("{:016x}", h.finish())
}

/// Compiles `bytes` (whose sha256 is `digest`) or loads it from the cache.
pub(crate) fn load_component(
    engine: &Engine,
    cache_dir: Option<&Path>,
    digest: &str,
    bytes: &[u8],
    origin: &Path,
) -> Result<(Component, CacheOutcome), Error> {
    let compile = || {
        Component::new(engine, bytes).map_err(|e| Error::Component {
            path: origin.to_owned(),
            message: format!("{e:#}"),
        })
    };
    let Some(dir) = cache_dir else {
        return Ok((compile()?, CacheOutcome::Compiled));
    };
    let path = dir.join(format!("{digest}-{}.cwasm", engine_key(engine)));
    if path.is_file() {
        // SAFETY: the file was produced by `Component::serialize` of an
        // engine with the same compatibility hash, in a private directory
        // (see the module docs); wasmtime checks its header on load.
        if let Ok(c) = unsafe { Component::deserialize_file(engine, &path) } {
            return Ok((c, CacheOutcome::Hit));
        }
        tracing::warn!(path = %path.display(), "cached component failed to load; recompiling");
    }
    let component = compile()?;
    if let Err(e) = store(dir, &path, &component) {
        tracing::warn!(path = %path.display(), error = %e, "could not cache compiled component");
    }
    Ok((component, CacheOutcome::Compiled))
}

fn store(dir: &Path, path: &Path, component: &Component) -> Result<(), Box<dyn std::error::Error>> {
    crate::private::private_dir(dir)?;
    let bytes = component.serialize()?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    crate::private::write_private(&tmp, &bytes)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
