//! `docker`: Docker Engine operations on the guest's behalf, scoped by the
//! run's [`DockerPolicy`].
//!
//! The engine endpoint is the host's ([`DockerEngine::from_env`]: `DOCKER_HOST`
//! or `/var/run/docker.sock`), never the guest's. The client negotiates the
//! API version with the engine (Debian's dockerd 20.10 speaks 1.41).
//!
//! The engine acts with its own authority (root, its own network), so
//! every container and every build is treated as the attacker: what the
//! guest asks is checked, and what the engine would otherwise decide on
//! its own is fixed by the host.
//!
//! What a guest can do, and what it cannot:
//! * **build**: the context is a guest directory inside a granted directory,
//!   opened beneath the grant and sent as a tar stream in which symlinks
//!   stay links (nothing outside the directory is read); the tag must match
//!   the image patterns; build arguments must be granted by name; `RUN`
//!   steps get network `none` unless a granted network is asked for, and the
//!   container memory ceiling. The Dockerfile read from that tar stream, the
//!   bytes the engine gets, is parsed: its base images, `COPY --from` and
//!   `RUN --mount from` sources (and the `ONBUILD` triggers of its base
//!   images) must match the image patterns too and already be on the engine
//!   (nothing is pulled); remote `ADD` sources and `# syntax=` frontends are
//!   refused (see [`crate::policy::docker::dockerfile`]). The classic
//!   builder is asked for, the one that parser follows.
//! * **run**: the image must be a granted tag; the container gets the host's
//!   safety defaults, none of which the guest can change: never privileged,
//!   every capability dropped but [`CONTAINER_CAPABILITIES`],
//!   `no-new-privileges`, network `none` unless a granted network is asked
//!   for, memory (swap included) and process limits no higher than the
//!   grant's, no published ports, no devices. Bind mounts are granted
//!   directories themselves, never paths inside them, and not one that lies
//!   beneath a read-write grant (either could be swapped for a symlink while
//!   the engine resolves the path); read-only when the grant is. It is
//!   labelled with its owner and task.
//! * **stop / remove / inspect / logs / ps**: only containers carrying the
//!   owner's label (see [`DockerPolicy::owner`]).
//! * **tag / inspect-image**: both tags granted; an image's other tags are
//!   not shown.
//!
//! Every call, allowed or refused, is written to the audit log with its
//! parameters. Calls end when the run's time is up.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, HostConfig, Mount, MountType,
};
use bollard::query_parameters::{
    BuildImageOptionsBuilder, BuilderVersion, CreateContainerOptionsBuilder,
    ListContainersOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    StopContainerOptionsBuilder, TagImageOptionsBuilder,
};
use futures::StreamExt;
use tokio::sync::OnceCell;

use crate::events::{Event, EventSink};
use crate::policy::{Access, DockerPolicy, EffectivePolicy, Preopen, normalize_tag};

/// Label naming the owner of a container (see [`DockerPolicy::owner`]).
pub const OWNER_LABEL: &str = "skillbox.owner";
/// Label naming the task (or run) that started a container.
pub const TASK_LABEL: &str = "skillbox.task";
/// Largest build context sent to the engine.
pub const MAX_CONTEXT: u64 = 1 << 30;
/// The capabilities a container keeps; every other one is dropped. Docker's
/// default set minus `MKNOD` (device nodes on a bind mount, which the
/// guest could then open), `NET_RAW` (raw sockets: spoofing and sniffing,
/// on the host's interfaces with network `host`), `SETFCAP`, `SETPCAP`,
/// `SYS_CHROOT` and `AUDIT_WRITE`. What is left is what ordinary services
/// need to start as root and step down: own and chmod their files, switch
/// users, bind ports below 1024 and signal their own processes (in the
/// container's PID namespace only).
pub const CONTAINER_CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "NET_BIND_SERVICE",
    "SETGID",
    "SETUID",
];

/// Why a docker call did not succeed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DockerError {
    /// The policy refused it; the text names the rule.
    #[error("docker denied: {0}")]
    Denied(String),
    /// No such image or container.
    #[error("docker: not found: {0}")]
    NotFound(String),
    /// The engine refused or failed the operation.
    #[error("docker failed: {0}")]
    Failed(String),
    /// No engine is configured or reachable.
    #[error("docker unavailable: {0}")]
    Unavailable(String),
}

type Result<T> = std::result::Result<T, DockerError>;

fn denied(m: impl Into<String>) -> DockerError {
    DockerError::Denied(m.into())
}

impl From<bollard::errors::Error> for DockerError {
    fn from(e: bollard::errors::Error) -> Self {
        use bollard::errors::Error as B;
        match e {
            B::DockerResponseServerError {
                status_code: 404,
                message,
            } => DockerError::NotFound(message),
            B::DockerResponseServerError { message, .. } => DockerError::Failed(message),
            B::DockerStreamError { error } => DockerError::Failed(error),
            B::SocketNotFoundError(p) => {
                DockerError::Unavailable(format!("no Docker engine socket at {p}"))
            }
            B::HyperResponseError { .. } | B::IOError { .. } | B::RequestTimeoutError => {
                DockerError::Unavailable(format!("the Docker engine did not answer: {e}"))
            }
            other => DockerError::Failed(other.to_string()),
        }
    }
}

/// The host's Docker engine: an endpoint, connected on first use.
pub struct DockerEngine {
    endpoint: String,
    client: OnceCell<Docker>,
}

impl DockerEngine {
    /// The endpoint in `DOCKER_HOST`, or the default socket.
    pub fn from_env() -> DockerEngine {
        DockerEngine::new(
            std::env::var("DOCKER_HOST")
                .ok()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "unix:///var/run/docker.sock".into()),
        )
    }

    /// A given endpoint: `unix:///path/docker.sock` or `tcp://host:port`.
    pub fn new(endpoint: impl Into<String>) -> DockerEngine {
        DockerEngine {
            endpoint: endpoint.into(),
            client: OnceCell::new(),
        }
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The connected client; the API version is negotiated once. A failed
    /// connection is retried by the next call.
    pub async fn client(&self) -> Result<&Docker> {
        self.client
            .get_or_try_init(|| async {
                // Requests are bounded by the run's deadline, not the
                // client's default of two minutes (builds take longer).
                const TIMEOUT_SECS: u64 = 24 * 3600;
                let e = &self.endpoint;
                let docker = if let Some(path) = e.strip_prefix("unix://") {
                    Docker::connect_with_unix(path, TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
                } else if e.starts_with("tcp://") || e.starts_with("http://") {
                    Docker::connect_with_http(e, TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
                } else {
                    return Err(DockerError::Unavailable(format!(
                        "Docker endpoint {e:?} is not unix://PATH or tcp://HOST:PORT"
                    )));
                }?;
                docker
                    .negotiate_version()
                    .await
                    .map_err(|err| DockerError::Unavailable(format!("Docker engine at {e}: {err}")))
            })
            .await
    }
}

/// A build, as the guest asked for it.
#[derive(Clone, Debug, Default)]
pub struct BuildRequest {
    /// Guest path of the context directory.
    pub context: String,
    /// Dockerfile path relative to the context.
    pub dockerfile: Option<String>,
    /// Tag of the new image.
    pub tag: String,
    /// Build arguments.
    pub args: Vec<(String, String)>,
    /// Network of `RUN` steps.
    pub network: Option<String>,
    /// Skip the layer cache.
    pub no_cache: bool,
}

/// The outcome of a build.
#[derive(Clone, Debug)]
pub struct Built {
    /// `sha256:…` id.
    pub image_id: String,
    /// Build output, capped.
    pub log: String,
}

/// A bind mount as the guest asked for it.
#[derive(Clone, Debug)]
pub struct MountRequest {
    /// Guest path inside a granted directory.
    pub source: String,
    /// Path inside the container.
    pub target: String,
    /// Read-only.
    pub read_only: bool,
}

/// A container to start, as the guest asked for it.
#[derive(Clone, Debug, Default)]
pub struct ContainerRequest {
    /// Image tag.
    pub image: String,
    /// Container name.
    pub name: Option<String>,
    /// Replaces the image's `CMD`.
    pub cmd: Option<Vec<String>>,
    /// Container environment.
    pub env: Vec<(String, String)>,
    /// Bind mounts.
    pub mounts: Vec<MountRequest>,
    /// Network.
    pub network: Option<String>,
    /// Memory limit in bytes.
    pub memory: Option<u64>,
    /// Process limit.
    pub pids: Option<u32>,
    /// Run an init process (the engine's `docker-init`) as PID 1, which
    /// forwards signals and reaps zombies.
    pub init: bool,
    /// Always refused.
    pub privileged: bool,
    /// Always refused when non-empty.
    pub cap_add: Vec<String>,
}

/// A container as the guest sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Container {
    /// Full id.
    pub id: String,
    /// Name without `/`.
    pub name: String,
    /// Tag it was started from.
    pub image: String,
    /// Image id.
    pub image_id: String,
    /// `running`, `exited`, …
    pub state: String,
    /// Exit code once exited.
    pub exit_code: Option<i64>,
    /// Start time.
    pub started_at: Option<String>,
    /// Task label.
    pub task: Option<String>,
}

/// An image as the guest sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    /// `sha256:…`
    pub id: String,
    /// Its granted tags.
    pub tags: Vec<String>,
    /// Creation time.
    pub created: String,
    /// Bytes.
    pub size: u64,
}

/// The `docker` capability's part of one run: everything a docker call
/// needs from its run.
pub struct DockerCtx {
    /// The engine.
    pub engine: Arc<DockerEngine>,
    /// The run's policy.
    pub policy: Arc<EffectivePolicy>,
    /// Audit and log events.
    pub events: Arc<dyn EventSink>,
    /// End of the run.
    pub deadline: Instant,
    /// Task (or run) label for new containers.
    pub task: Option<String>,
}

impl DockerCtx {
    fn docker(&self) -> Result<&DockerPolicy> {
        self.policy.docker.as_ref().ok_or_else(|| {
            denied(
                "no Docker access is granted to this skill (request it under [docker] in \
                 skill.toml; grant with --allow-docker 'IMAGE:*')",
            )
        })
    }

    /// Runs `op` (already checked) with the run's deadline, and audits the
    /// call `detail` whatever happens.
    async fn audited<T>(
        &self,
        detail: String,
        op: impl Future<Output = Result<T>>,
        ok: impl FnOnce(&T) -> String,
    ) -> Result<T> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        let result = match tokio::time::timeout(left, op).await {
            Ok(r) => r,
            Err(_) => Err(DockerError::Failed(
                "the run's time limit ran out during the call".into(),
            )),
        };
        let (allowed, reason) = match &result {
            Ok(v) => (true, ok(v)),
            Err(e @ DockerError::Denied(_)) => (false, e.to_string()),
            Err(e) => (true, e.to_string()),
        };
        self.events.event(Event::Audit {
            capability: "docker",
            detail,
            allowed,
            reason,
        });
        result
    }

    fn labels(&self, owner: &str) -> HashMap<String, String> {
        let mut l = HashMap::from([(OWNER_LABEL.to_string(), owner.to_string())]);
        if let Some(t) = self.task.as_deref() {
            l.insert(TASK_LABEL.to_string(), t.to_string());
        }
        l
    }

    /// Looks up a container and checks that it carries the owner's label.
    async fn own_container(&self, docker: &Docker, name: &str) -> Result<ContainerInspectResponse> {
        let owner = self.docker()?.owner().map_err(denied)?.to_string();
        let owner = &owner;
        if name.is_empty() || name.contains('/') {
            return Err(denied(format!("{name:?} is not a container name or id")));
        }
        let c = docker.inspect_container(name, None).await?;
        let label = c
            .config
            .as_ref()
            .and_then(|c| c.labels.as_ref())
            .and_then(|l| l.get(OWNER_LABEL));
        if label != Some(owner) {
            return Err(denied(format!(
                "container {name:?} was not started by skillbox for owner {owner:?} \
                 (its owner label is {}); a skill may only touch its own containers",
                label.map_or("missing".to_string(), |l| format!("{l:?}"))
            )));
        }
        Ok(c)
    }

    /// `build`.
    pub async fn build(&self, req: BuildRequest) -> Result<Built> {
        let detail = format!(
            "build context={} dockerfile={} tag={} args=[{}] network={}{}",
            req.context,
            req.dockerfile.as_deref().unwrap_or("Dockerfile"),
            req.tag,
            req.args
                .iter()
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>()
                .join(","),
            req.network.as_deref().unwrap_or("none"),
            if req.no_cache { " no-cache" } else { "" }
        );
        self.audited(detail, self.build_checked(req), |b| {
            format!("built {}", b.image_id)
        })
        .await
    }

    async fn build_checked(&self, req: BuildRequest) -> Result<Built> {
        let pol = self.docker()?;
        if !pol.build {
            return Err(denied(
                "building images is not granted to this skill (request `build = true` under \
                 [docker]; grant with --allow-docker-build)",
            ));
        }
        let tag = normalize_tag(&req.tag).map_err(denied)?;
        pol.check_image(&tag).map_err(denied)?;
        for (k, _) in &req.args {
            if !pol.build_args.contains(k) {
                return Err(denied(format!(
                    "build argument {k:?} is not granted (grant with --allow-docker-build-arg {k})"
                )));
            }
        }
        let network = req.network.clone().unwrap_or_else(|| "none".into());
        pol.check_network(&network).map_err(denied)?;
        // Checked for the error message; the walk below opens the directory
        // beneath its grant again, so a swap in between cannot widen it.
        let (dir, preopen) = super::fs::guest_to_host(&self.policy.preopens, &req.context)
            .map_err(|e| denied(format!("build context {e}")))?;
        if !dir.is_dir() {
            return Err(denied(format!(
                "build context {:?} is not a directory",
                req.context
            )));
        }
        let dockerfile = req
            .dockerfile
            .clone()
            .unwrap_or_else(|| "Dockerfile".into());
        let df = Path::new(&dockerfile);
        if df.is_absolute() || df.components().any(|c| !matches!(c, Component::Normal(_))) {
            return Err(denied(format!(
                "dockerfile {dockerfile:?} must be a path relative to the context, without '..'"
            )));
        }
        let root = preopen.host.clone();
        let rest = Path::new(&req.context)
            .strip_prefix(&preopen.guest)
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let context = tokio::task::spawn_blocking(move || tar_context(&root, &rest))
            .await
            .map_err(|e| DockerError::Failed(format!("packing the build context: {e}")))??;
        // The Dockerfile the engine will read: the bytes in the stream.
        let text = dockerfile_in(&context, df)?;
        let uses = pol.check_dockerfile(&text, &req.args).map_err(denied)?;

        let docker = self.engine.client().await?;
        // Every image it reads must be here already (the engine would pull
        // a missing one from a registry), and a base image's ONBUILD
        // triggers run in this build, so they are held to the grant too.
        for u in &uses {
            let tag = normalize_tag(&u.reference).map_err(denied)?;
            let image = docker
                .inspect_image(&tag)
                .await
                .map_err(|e| match e.into() {
                    DockerError::NotFound(_) => DockerError::NotFound(format!(
                        "Dockerfile line {}: {} {}: no image {tag} on the engine (nothing is \
                         pulled for a skill)",
                        u.line, u.how, u.reference
                    )),
                    other => other,
                })?;
            if u.is_base() {
                let triggers = image.config.and_then(|c| c.on_build).unwrap_or_default();
                pol.check_triggers(&tag, &triggers).map_err(denied)?;
            }
        }

        let mut labels = HashMap::new();
        if let Some(owner) = &pol.owner {
            labels.insert(OWNER_LABEL.to_string(), owner.clone());
        }
        let options = BuildImageOptionsBuilder::default()
            // The builder whose Dockerfile reading `check_dockerfile`
            // follows (BuildKit would also run `# syntax=` frontends).
            .version(BuilderVersion::BuilderV1)
            .dockerfile(&dockerfile)
            .t(&tag)
            .rm(true)
            .forcerm(true)
            .nocache(req.no_cache)
            .networkmode(&network)
            .memory(i32::try_from(pol.memory).unwrap_or(i32::MAX))
            .memswap(i32::try_from(pol.memory).unwrap_or(i32::MAX))
            .buildargs(&req.args.iter().cloned().collect())
            .labels(&labels)
            .build();
        let cap = self.policy.limits.output;
        let mut log = String::new();
        let mut image_id = None;
        let mut stream =
            docker.build_image(options, None, Some(bollard::body_full(context.into())));
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| match DockerError::from(e) {
                DockerError::Failed(m) => DockerError::Failed(format!(
                    "build of {tag} failed: {}{}",
                    m.trim(),
                    last_lines(&log, 5)
                )),
                other => other,
            })?;
            if let Some(s) = info.stream.as_deref().or(info.status.as_deref()) {
                push_capped(&mut log, s, cap);
            }
            if let Some(err) = info.error_detail.and_then(|d| d.message) {
                return Err(DockerError::Failed(format!(
                    "build of {tag} failed: {}{}",
                    err.trim(),
                    last_lines(&log, 5)
                )));
            }
            if let Some(id) = info.aux.and_then(|a| a.id) {
                image_id = Some(id);
            }
        }
        let image_id = match image_id {
            Some(id) => id,
            None => docker
                .inspect_image(&tag)
                .await?
                .id
                .ok_or_else(|| DockerError::Failed(format!("built {tag}, but it has no id")))?,
        };
        Ok(Built { image_id, log })
    }

    /// `run`.
    pub async fn run(&self, req: ContainerRequest) -> Result<Container> {
        let detail = format!(
            "run image={} name={} cmd={:?} env=[{}] mounts=[{}] network={} memory={} pids={}{}{}{}",
            req.image,
            req.name.as_deref().unwrap_or("-"),
            req.cmd,
            req.env
                .iter()
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>()
                .join(","),
            req.mounts
                .iter()
                .map(|m| format!(
                    "{}:{}{}",
                    m.source,
                    m.target,
                    if m.read_only { ":ro" } else { "" }
                ))
                .collect::<Vec<_>>()
                .join(","),
            req.network.as_deref().unwrap_or("none"),
            req.memory.map_or("default".into(), |m| m.to_string()),
            req.pids.map_or("default".into(), |p| p.to_string()),
            if req.init { " init" } else { "" },
            if req.privileged { " privileged" } else { "" },
            if req.cap_add.is_empty() {
                String::new()
            } else {
                format!(" cap-add={:?}", req.cap_add)
            }
        );
        self.audited(detail, self.run_checked(req), |c| {
            format!("started {} ({})", c.name, short(&c.id))
        })
        .await
    }

    async fn run_checked(&self, req: ContainerRequest) -> Result<Container> {
        let pol = self.docker()?;
        if req.privileged {
            return Err(denied(
                "privileged containers are never allowed: they can take over the host",
            ));
        }
        if !req.cap_add.is_empty() {
            return Err(denied(format!(
                "adding capabilities ({}) is never allowed",
                req.cap_add.join(", ")
            )));
        }
        let tag = normalize_tag(&req.image).map_err(denied)?;
        pol.check_image(&tag).map_err(denied)?;
        let owner = pol.owner().map_err(denied)?;
        if let Some(n) = &req.name {
            let ok = n.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
                && n.len() <= 128
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
            if !ok {
                return Err(denied(format!(
                    "container name {n:?} must match [a-zA-Z0-9][a-zA-Z0-9_.-]*"
                )));
            }
        }
        let network = req.network.clone().unwrap_or_else(|| "none".into());
        pol.check_network(&network).map_err(denied)?;
        let memory = req.memory.unwrap_or(pol.memory);
        if memory > pol.memory {
            return Err(denied(format!(
                "memory {memory} bytes is above this skill's container ceiling of {} bytes",
                pol.memory
            )));
        }
        if memory < 6 << 20 {
            return Err(denied(format!(
                "memory {memory} bytes is below the engine's minimum of 6MiB"
            )));
        }
        let pids = req.pids.unwrap_or(pol.pids);
        if pids > pol.pids || pids == 0 {
            return Err(denied(format!(
                "pids {pids} is outside this skill's container range 1..={}",
                pol.pids
            )));
        }
        let mut mounts = Vec::new();
        for m in &req.mounts {
            let (host, preopen) = mount_source(&self.policy.preopens, &m.source).map_err(denied)?;
            let t = Path::new(&m.target);
            if !t.is_absolute()
                || t == Path::new("/")
                || t.components().any(|c| matches!(c, Component::ParentDir))
            {
                return Err(denied(format!(
                    "bind mount target {:?} must be an absolute path other than /, without '..'",
                    m.target
                )));
            }
            mounts.push(Mount {
                target: Some(m.target.clone()),
                source: Some(host.to_string_lossy().into_owned()),
                typ: Some(MountType::BIND),
                read_only: Some(m.read_only || preopen.access == Access::Read),
                ..Mount::default()
            });
        }
        for (k, _) in &req.env {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                return Err(denied(format!("{k:?} is not an environment variable name")));
            }
        }
        let docker = self.engine.client().await?;
        // The image must exist here: nothing is pulled on the guest's behalf.
        docker
            .inspect_image(&tag)
            .await
            .map_err(|e| match e.into() {
                DockerError::NotFound(_) => {
                    DockerError::NotFound(format!("no image {tag} on the engine"))
                }
                other => other,
            })?;
        let host_config = HostConfig {
            network_mode: Some(network),
            mounts: Some(mounts),
            memory: Some(memory as i64),
            memory_swap: Some(memory as i64),
            pids_limit: Some(i64::from(pids)),
            privileged: Some(false),
            cap_drop: Some(vec!["ALL".into()]),
            cap_add: Some(
                CONTAINER_CAPABILITIES
                    .iter()
                    .map(|c| c.to_string())
                    .collect(),
            ),
            security_opt: Some(vec!["no-new-privileges".into()]),
            publish_all_ports: Some(false),
            init: Some(req.init),
            ..HostConfig::default()
        };
        let body = ContainerCreateBody {
            image: Some(tag.clone()),
            cmd: req.cmd.clone(),
            env: Some(req.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            labels: Some(self.labels(owner)),
            host_config: Some(host_config),
            ..ContainerCreateBody::default()
        };
        let mut options = CreateContainerOptionsBuilder::default();
        if let Some(n) = &req.name {
            options = options.name(n);
        }
        let created = docker.create_container(Some(options.build()), body).await?;
        if let Err(e) = docker.start_container(&created.id, None).await {
            let _ = docker
                .remove_container(
                    &created.id,
                    Some(RemoveContainerOptionsBuilder::default().force(true).build()),
                )
                .await;
            return Err(e.into());
        }
        Ok(container(
            docker.inspect_container(&created.id, None).await?,
        ))
    }

    /// `stop`.
    pub async fn stop(&self, name: &str, timeout_secs: Option<u32>) -> Result<()> {
        let detail = format!("stop {name} timeout={}", timeout_secs.unwrap_or(10));
        let op = async {
            self.docker()?;
            let docker = self.engine.client().await?;
            let c = self.own_container(docker, name).await?;
            let t = i32::try_from(timeout_secs.unwrap_or(10)).unwrap_or(i32::MAX);
            docker
                .stop_container(
                    c.id.as_deref().unwrap_or(name),
                    Some(StopContainerOptionsBuilder::default().t(t).build()),
                )
                .await
                .or_else(|e| match e {
                    // Already stopped.
                    bollard::errors::Error::DockerResponseServerError {
                        status_code: 304, ..
                    } => Ok(()),
                    e => Err(e),
                })?;
            Ok(())
        };
        self.audited(detail, op, |_| "stopped".into()).await
    }

    /// `remove`.
    pub async fn remove(&self, name: &str, force: bool) -> Result<()> {
        let detail = format!("remove {name}{}", if force { " force" } else { "" });
        let op = async {
            self.docker()?;
            let docker = self.engine.client().await?;
            let c = self.own_container(docker, name).await?;
            docker
                .remove_container(
                    c.id.as_deref().unwrap_or(name),
                    Some(
                        RemoveContainerOptionsBuilder::default()
                            .force(force)
                            .build(),
                    ),
                )
                .await?;
            Ok(())
        };
        self.audited(detail, op, |_| "removed".into()).await
    }

    /// `inspect`.
    pub async fn inspect(&self, name: &str) -> Result<Container> {
        let op = async {
            self.docker()?;
            let docker = self.engine.client().await?;
            Ok(container(self.own_container(docker, name).await?))
        };
        self.audited(format!("inspect {name}"), op, |c| c.state.clone())
            .await
    }

    /// `logs`.
    pub async fn logs(&self, name: &str, tail: Option<u32>) -> Result<String> {
        let tail = tail.unwrap_or(100);
        let op = async {
            self.docker()?;
            let docker = self.engine.client().await?;
            let c = self.own_container(docker, name).await?;
            let options = LogsOptionsBuilder::default()
                .stdout(true)
                .stderr(true)
                .tail(&tail.to_string())
                .build();
            let cap = self.policy.limits.output;
            let mut out = String::new();
            let mut s = docker.logs(c.id.as_deref().unwrap_or(name), Some(options));
            while let Some(chunk) = s.next().await {
                push_capped(
                    &mut out,
                    &String::from_utf8_lossy(&chunk?.into_bytes()),
                    cap,
                );
            }
            Ok(out)
        };
        self.audited(format!("logs {name} tail={tail}"), op, |l| {
            format!("{} bytes", l.len())
        })
        .await
    }

    /// `inspect-image`.
    pub async fn inspect_image(&self, tag: &str) -> Result<Image> {
        let op = async {
            let pol = self.docker()?;
            let tag = normalize_tag(tag).map_err(denied)?;
            pol.check_image(&tag).map_err(denied)?;
            let docker = self.engine.client().await?;
            self.image(docker, pol, &tag).await
        };
        self.audited(format!("inspect-image {tag}"), op, |i| short(&i.id).into())
            .await
    }

    async fn image(&self, docker: &Docker, pol: &DockerPolicy, tag: &str) -> Result<Image> {
        let i = docker
            .inspect_image(tag)
            .await
            .map_err(|e| match e.into() {
                DockerError::NotFound(_) => DockerError::NotFound(format!("no image {tag}")),
                other => other,
            })?;
        Ok(Image {
            id: i.id.unwrap_or_default(),
            tags: i
                .repo_tags
                .unwrap_or_default()
                .into_iter()
                .filter(|t| pol.check_image(t).is_ok())
                .collect(),
            created: i.created.unwrap_or_default(),
            size: i.size.unwrap_or(0).max(0) as u64,
        })
    }

    /// `tag`.
    pub async fn tag(&self, source: &str, target: &str) -> Result<Image> {
        let op = async {
            let pol = self.docker()?;
            let src = normalize_tag(source).map_err(denied)?;
            let dst = normalize_tag(target).map_err(denied)?;
            pol.check_image(&src).map_err(denied)?;
            pol.check_image(&dst).map_err(denied)?;
            let docker = self.engine.client().await?;
            let (repo, t) = dst.rsplit_once(':').expect("normalised tags have a ':'");
            docker
                .tag_image(
                    &src,
                    Some(TagImageOptionsBuilder::default().repo(repo).tag(t).build()),
                )
                .await
                .map_err(|e| match e.into() {
                    DockerError::NotFound(_) => DockerError::NotFound(format!("no image {src}")),
                    other => other,
                })?;
            self.image(docker, pol, &dst).await
        };
        self.audited(format!("tag {source} {target}"), op, |i| {
            format!("tagged {}", short(&i.id))
        })
        .await
    }

    /// `ps`.
    pub async fn ps(&self, all: bool) -> Result<Vec<Container>> {
        let op = async {
            let owner = self.docker()?.owner().map_err(denied)?;
            let docker = self.engine.client().await?;
            let filters =
                HashMap::from([("label".to_string(), vec![format!("{OWNER_LABEL}={owner}")])]);
            let list = docker
                .list_containers(Some(
                    ListContainersOptionsBuilder::default()
                        .all(all)
                        .filters(&filters)
                        .build(),
                ))
                .await?;
            let mut out = Vec::new();
            for c in list {
                let Some(id) = c.id else { continue };
                // Gone between the list and the inspect: skip it.
                match self.own_container(docker, &id).await {
                    Ok(c) => out.push(container(c)),
                    Err(DockerError::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(out)
        };
        self.audited(format!("ps all={all}"), op, |l| {
            format!("{} containers", l.len())
        })
        .await
    }
}

fn short(id: &str) -> &str {
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    &id[..id.len().min(12)]
}

fn push_capped(out: &mut String, s: &str, cap: usize) {
    if out.len() < cap {
        let mut end = s.len().min(cap - out.len());
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        out.push_str(&s[..end]);
    }
}

fn last_lines(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return String::new();
    }
    format!(
        " (last output: {})",
        lines[lines.len().saturating_sub(n)..].join(" | ")
    )
}

fn container(c: ContainerInspectResponse) -> Container {
    let state = c.state.unwrap_or_default();
    let status = state.status.map(|s| s.to_string()).unwrap_or_default();
    let config = c.config.unwrap_or_default();
    Container {
        id: c.id.unwrap_or_default(),
        name: c
            .name
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string(),
        image: config.image.unwrap_or_default(),
        image_id: c.image.unwrap_or_default(),
        exit_code: (status == "exited" || status == "dead")
            .then_some(state.exit_code)
            .flatten(),
        state: status,
        started_at: state.started_at.filter(|s| !s.starts_with("0001-01-01")),
        task: config.labels.and_then(|mut l| l.remove(TASK_LABEL)),
    }
}

/// Packs the context directory `rest` of the granted directory `grant`
/// into a tar archive. The context and the walk go through `cap-std`
/// handles opened beneath the grant, so nothing outside it can be read even
/// if the tree changes meanwhile (a directory swapped for a symlink is not
/// followed out); a symlink is sent as a link (never followed), sockets,
/// fifos and devices are not sent.
fn tar_context(grant: &Path, rest: &Path) -> Result<Vec<u8>> {
    use cap_std::fs::Dir;
    let dir = &grant.join(rest);
    let fail = |e: std::io::Error, p: &Path| {
        DockerError::Failed(format!("packing the build context at {}: {e}", p.display()))
    };
    let granted =
        Dir::open_ambient_dir(grant, cap_std::ambient_authority()).map_err(|e| fail(e, grant))?;
    let root = if rest.as_os_str().is_empty() {
        granted
    } else {
        granted.open_dir(rest).map_err(|e| fail(e, dir))?
    };
    let mut b = tar::Builder::new(Vec::new());
    let mut total = 0u64;
    let mut stack: Vec<(PathBuf, Dir)> = vec![(PathBuf::new(), root)];
    while let Some((rel, d)) = stack.pop() {
        let mut entries: Vec<_> = d
            .entries()
            .map_err(|e| fail(e, &dir.join(&rel)))?
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| fail(e, &dir.join(&rel)))?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let file_name = e.file_name();
            let name = rel.join(&file_name);
            let at = dir.join(&name);
            let ft = e.file_type().map_err(|err| fail(err, &at))?;
            let mut header = tar::Header::new_gnu();
            if ft.is_dir() {
                let sub = d.open_dir(&file_name).map_err(|err| fail(err, &at))?;
                let meta = sub.dir_metadata().map_err(|err| fail(err, &at))?;
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(meta_mode(&meta, 0o755));
                header.set_mtime(mtime(&meta));
                header.set_size(0);
                b.append_data(&mut header, &name, std::io::empty())
                    .map_err(|err| fail(err, &at))?;
                stack.push((name, sub));
            } else if ft.is_symlink() {
                let target = d
                    .read_link_contents(&file_name)
                    .map_err(|err| fail(err, &at))?;
                if let Ok(meta) = d.symlink_metadata(&file_name) {
                    header.set_mtime(mtime(&meta));
                }
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_mode(0o777);
                header.set_size(0);
                b.append_link(&mut header, &name, &target)
                    .map_err(|err| fail(err, &at))?;
            } else if ft.is_file() {
                let f = d.open(&file_name).map_err(|err| fail(err, &at))?;
                let meta = f.metadata().map_err(|err| fail(err, &at))?;
                total += meta.len();
                if total > MAX_CONTEXT {
                    return Err(denied(format!(
                        "the build context is larger than {} MiB",
                        MAX_CONTEXT >> 20
                    )));
                }
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(meta_mode(&meta, 0o644));
                header.set_mtime(mtime(&meta));
                header.set_size(meta.len());
                b.append_data(
                    &mut header,
                    &name,
                    std::io::Read::take(f.into_std(), meta.len()),
                )
                .map_err(|err| fail(err, &at))?;
            }
        }
    }
    b.into_inner()
        .map_err(|e| DockerError::Failed(format!("packing the build context: {e}")))
}

/// The Dockerfile at `path` in the context archive: a regular file whose
/// parents are directories, so the engine reads these very bytes (it would
/// follow a symlink inside the context, and falls back to `dockerfile` when
/// `Dockerfile` is missing).
fn dockerfile_in(context: &[u8], path: &Path) -> Result<Vec<u8>> {
    let fail = |e: std::io::Error| DockerError::Failed(format!("reading the build context: {e}"));
    let mut kinds: HashMap<PathBuf, tar::EntryType> = HashMap::new();
    let mut text = None;
    let mut archive = tar::Archive::new(context);
    for e in archive.entries().map_err(fail)? {
        let mut e = e.map_err(fail)?;
        let p = e.path().map_err(fail)?.into_owned();
        let kind = e.header().entry_type();
        if p == path && kind == tar::EntryType::Regular {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut bytes).map_err(fail)?;
            text = Some(bytes);
        }
        kinds.insert(p, kind);
    }
    let shown = path.display();
    let parents_are_dirs = path
        .ancestors()
        .skip(1)
        .filter(|a| !a.as_os_str().is_empty())
        .all(|a| kinds.get(a) == Some(&tar::EntryType::Directory));
    match text {
        Some(t) if parents_are_dirs => Ok(t),
        _ if kinds.contains_key(path) || !parents_are_dirs => Err(denied(format!(
            "dockerfile {shown:?} must be a regular file in the context, not a symlink or \
             beneath one"
        ))),
        _ => Err(denied(format!(
            "the build context has no {shown:?} (name the Dockerfile with its exact path)"
        ))),
    }
}

/// The host directory to mount for the guest path `source`: a granted
/// directory itself, never a path inside one, and not one beneath another
/// read-write grant. The engine resolves the path it is given again, later:
/// a path inside a grant, or a grant inside a writable one, could meanwhile
/// be swapped for a symlink (to `/`) by the guest or a container.
fn mount_source<'p>(
    preopens: &'p [Preopen],
    source: &str,
) -> std::result::Result<(PathBuf, &'p Preopen), String> {
    let wanted: Vec<Component<'_>> = Path::new(source).components().collect();
    let Some(preopen) = preopens
        .iter()
        .find(|p| Path::new(&p.guest).components().eq(wanted.iter().copied()))
    else {
        let flag = |p: &Preopen| match p.access {
            Access::Read => "--allow-read",
            Access::ReadWrite => "--allow-write",
        };
        let inside = preopens
            .iter()
            .filter(|p| Path::new(source).starts_with(&p.guest))
            .max_by_key(|p| p.guest.len());
        return Err(match inside {
            Some(p) => {
                let rest = Path::new(source)
                    .strip_prefix(&p.guest)
                    .unwrap_or(Path::new(""));
                format!(
                    "bind mount source {source:?} is inside the granted directory {:?}, not one \
                     itself: only granted directories are mounted (a path inside one could be \
                     swapped for a symlink while the engine resolves it); grant it as a directory \
                     of its own, e.g. {} {}:{source}",
                    p.guest,
                    flag(p),
                    p.host.join(rest).display()
                )
            }
            None => {
                let granted: Vec<&str> = preopens.iter().map(|p| p.guest.as_str()).collect();
                format!(
                    "bind mount source {source:?} is not a granted directory (granted: {granted:?})"
                )
            }
        });
    };
    let host = super::fs::canonical_dir(&preopen.host)
        .map_err(|e| format!("bind mount source {source:?}: {e}"))?;
    for other in preopens.iter().filter(|p| p.access == Access::ReadWrite) {
        let Ok(outer) = super::fs::canonical_dir(&other.host) else {
            continue;
        };
        if host != outer && host.starts_with(&outer) {
            return Err(format!(
                "bind mount source {source:?} ({}) lies beneath the read-write grant {:?} ({}), \
                 through which it could be swapped for a symlink while the engine resolves it; \
                 grant it from a directory outside every read-write grant",
                host.display(),
                other.guest,
                outer.display()
            ));
        }
    }
    Ok((host, preopen))
}

/// A file's modification time in seconds. The engine's build cache keys
/// `COPY` on the files' headers too: with the same times as the `docker`
/// CLI sends, builds through skillbox and by hand share the cache.
fn mtime(meta: &cap_std::fs::Metadata) -> u64 {
    meta.modified()
        .ok()
        .and_then(|t| t.into_std().duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

/// The permission bits of a file (`fallback` when unknown).
fn meta_mode(meta: &cap_std::fs::Metadata, fallback: u32) -> u32 {
    use cap_std::fs::PermissionsExt;
    match meta.permissions().mode() & 0o7777 {
        0 => fallback,
        m => m,
    }
}

mod host_impl {
    use super::{DockerCtx, DockerError};
    use crate::bindings::skillbox::skill::docker::{
        BuildRequest, Built, Container, DockerError as WitError, Host, Image, RunRequest,
    };

    fn wit_err(e: DockerError) -> WitError {
        match e {
            DockerError::Denied(m) => WitError::Denied(m),
            DockerError::NotFound(m) => WitError::NotFound(m),
            DockerError::Failed(m) => WitError::Failed(m),
            DockerError::Unavailable(m) => WitError::Unavailable(m),
        }
    }

    fn wit_container(c: super::Container) -> Container {
        Container {
            id: c.id,
            name: c.name,
            image: c.image,
            image_id: c.image_id,
            state: c.state,
            exit_code: c.exit_code,
            started_at: c.started_at,
            task: c.task,
        }
    }

    fn wit_image(i: super::Image) -> Image {
        Image {
            id: i.id,
            tags: i.tags,
            created: i.created,
            size: i.size,
        }
    }

    impl Host for DockerCtx {
        async fn build(&mut self, req: BuildRequest) -> Result<Built, WitError> {
            let req = super::BuildRequest {
                context: req.context,
                dockerfile: req.dockerfile,
                tag: req.tag,
                args: req.args,
                network: req.network,
                no_cache: req.no_cache,
            };
            DockerCtx::build(self, req)
                .await
                .map_err(wit_err)
                .map(|b| Built {
                    image_id: b.image_id,
                    log: b.log,
                })
        }

        async fn run(&mut self, req: RunRequest) -> Result<Container, WitError> {
            let req = super::ContainerRequest {
                image: req.image,
                name: req.name,
                cmd: req.cmd,
                env: req.env,
                mounts: req
                    .mounts
                    .into_iter()
                    .map(|m| super::MountRequest {
                        source: m.source,
                        target: m.target,
                        read_only: m.read_only,
                    })
                    .collect(),
                network: req.network,
                memory: req.memory,
                pids: req.pids,
                init: req.init,
                privileged: req.privileged,
                cap_add: req.cap_add,
            };
            DockerCtx::run(self, req)
                .await
                .map_err(wit_err)
                .map(wit_container)
        }

        async fn stop(&mut self, name: String, timeout: Option<u32>) -> Result<(), WitError> {
            DockerCtx::stop(self, &name, timeout).await.map_err(wit_err)
        }

        async fn remove(&mut self, name: String, force: bool) -> Result<(), WitError> {
            DockerCtx::remove(self, &name, force).await.map_err(wit_err)
        }

        async fn inspect(&mut self, name: String) -> Result<Container, WitError> {
            DockerCtx::inspect(self, &name)
                .await
                .map_err(wit_err)
                .map(wit_container)
        }

        async fn logs(&mut self, name: String, tail: Option<u32>) -> Result<String, WitError> {
            DockerCtx::logs(self, &name, tail).await.map_err(wit_err)
        }

        async fn inspect_image(&mut self, tag: String) -> Result<Image, WitError> {
            DockerCtx::inspect_image(self, &tag)
                .await
                .map_err(wit_err)
                .map(wit_image)
        }

        async fn tag(&mut self, source: String, target: String) -> Result<Image, WitError> {
            DockerCtx::tag(self, &source, &target)
                .await
                .map_err(wit_err)
                .map(wit_image)
        }

        async fn ps(&mut self, all: bool) -> Result<Vec<Container>, WitError> {
            DockerCtx::ps(self, all)
                .await
                .map_err(wit_err)
                .map(|l| l.into_iter().map(wit_container).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_context_tar_keeps_symlinks_as_links() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("Dockerfile"), "FROM scratch\n").unwrap();
        std::fs::create_dir(d.path().join("www")).unwrap();
        std::fs::write(d.path().join("www/index.html"), "hi").unwrap();
        std::os::unix::fs::symlink("/etc/shadow", d.path().join("www/leak")).unwrap();
        let bytes = tar_context(d.path(), Path::new("")).unwrap();
        let mut a = tar::Archive::new(&bytes[..]);
        let mut seen = Vec::new();
        for e in a.entries().unwrap() {
            let e = e.unwrap();
            let path = e.path().unwrap().to_string_lossy().into_owned();
            if path == "www/leak" {
                assert!(e.header().entry_type().is_symlink());
                assert_eq!(e.size(), 0, "the link's target is not read");
            }
            seen.push(path);
        }
        seen.sort();
        assert_eq!(seen, ["Dockerfile", "www", "www/index.html", "www/leak"]);
    }

    #[test]
    fn engine_errors_are_classified() {
        let e: DockerError = bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            message: "No such container: x".into(),
        }
        .into();
        assert!(matches!(e, DockerError::NotFound(_)));
        let e: DockerError = bollard::errors::Error::SocketNotFoundError("/nope".into()).into();
        assert!(matches!(e, DockerError::Unavailable(_)));
    }
}
