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

mod build;
mod run;
mod wit;

use std::collections::HashMap;
use std::sync::Arc;

use bollard::Docker;
use bollard::models::ContainerInspectResponse;
use bollard::query_parameters::{
    ListContainersOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    StopContainerOptionsBuilder, TagImageOptionsBuilder,
};
use futures::StreamExt;
use tokio::sync::OnceCell;
use tracing::Instrument;

use crate::events::{Event, EventObserver};
use crate::policy::{DockerPolicy, EffectivePolicy, normalize_tag};

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

/// Refuses a value holding a secret reference that is not the whole value.
fn whole_reference(what: &str, name: &str, value: &str) -> Result<()> {
    if crate::secrets::referenced(value).is_none() && value.contains("${secret:") {
        return Err(denied(format!(
            "{what} {name:?}: a secret is passed as the whole value \"${{secret:NAME}}\""
        )));
    }
    Ok(())
}

/// What a secret's use is pinned to, for [`DockerCtx::substitute`]: the
/// digest of what asks (a Dockerfile's, an image's id) and those granted.
struct Pinned<'a> {
    /// `build argument` or `variable`.
    what: &'a str,
    /// `builds of the Dockerfile`, `containers of the image`.
    whose: &'a str,
    /// `this Dockerfile`, `this image`.
    this: &'a str,
    /// The flag that grants a use.
    flag: &'a str,
    /// The digest of what asks.
    digest: &'a str,
    /// The digests a secret's uses are pinned to.
    pins: &'a dyn Fn(&str) -> Vec<String>,
}

impl DockerError {
    /// The same error with what `hide` hides replaced.
    fn redacted(self, hide: &crate::secrets::Redactor) -> DockerError {
        match self {
            DockerError::Denied(m) => DockerError::Denied(hide.text(&m)),
            DockerError::NotFound(m) => DockerError::NotFound(hide.text(&m)),
            DockerError::Failed(m) => DockerError::Failed(hide.text(&m)),
            DockerError::Unavailable(m) => DockerError::Unavailable(hide.text(&m)),
        }
    }
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
            crate::caller::var("DOCKER_HOST")
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
    pub events: Arc<dyn EventObserver>,
    /// The run's ask rules, its approval gate and its deadline.
    pub asker: Arc<crate::caps::approval::Asker>,
    /// Task (or run) label for new containers.
    pub task: Option<String>,
    /// The values of the secrets granted to the run's builds and
    /// containers; what hides them in what goes back to the guest (errors,
    /// logs).
    pub secrets: crate::secrets::SecretValues,
}

impl DockerCtx {
    /// `vars` with each secret reference replaced by the secret's value,
    /// when the operator pinned the secret's use to `p.digest`.
    fn substitute(
        &self,
        vars: &[(String, String)],
        p: &Pinned<'_>,
    ) -> Result<Vec<(String, String)>> {
        let mut out = Vec::with_capacity(vars.len());
        for (k, v) in vars {
            let Some(name) = crate::secrets::referenced(v) else {
                out.push((k.clone(), v.clone()));
                continue;
            };
            let (what, whose, this, flag, digest) = (p.what, p.whose, p.this, p.flag, p.digest);
            let pinned = (p.pins)(name);
            let verdict = if name != k {
                Err(format!(
                    "{what} {k:?} refers to the secret {name:?}: a secret goes in the {what} of \
                     its own name ({name}=${{secret:{name}}})"
                ))
            } else if !pinned.iter().any(|d| d == digest) {
                Err(if pinned.is_empty() {
                    format!(
                        "no {whose} {digest} is granted the secret {name} (check {this}, then \
                         grant it with {flag} {name} {digest})"
                    )
                } else {
                    format!(
                        "the secret {name} is granted to {whose} {} only; {this} is {digest} \
                         (check it, then grant it with {flag} {name} {digest})",
                        pinned.join(", ")
                    )
                })
            } else {
                Ok(())
            };
            self.events.event(Event::Audit {
                capability: "secrets",
                detail: format!("{name} to {whose} {digest}"),
                allowed: verdict.is_ok(),
                reason: match &verdict {
                    Ok(()) => format!("granted with {flag} {name} {digest}"),
                    Err(e) => e.clone(),
                },
            });
            verdict.map_err(denied)?;
            let value = self.secrets.get(name).ok_or_else(|| {
                DockerError::Failed(format!("the secret {name} has no value in this run"))
            })?;
            out.push((k.clone(), value.to_string()));
        }
        Ok(out)
    }

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
        // The deadline as it stands while the call runs: a wait for
        // approval inside the call pushes it back.
        let span = crate::telemetry::capability_span("docker", &detail);
        let op = op.instrument(span.clone());
        let result = tokio::select! {
            r = op => r,
            () = self.asker.deadline().reached() => Err(DockerError::Failed(
                "the run's time limit ran out during the call".into(),
            )),
        };
        // An engine's error may quote a build argument's value.
        let result = result.map_err(|e| e.redacted(self.secrets.redactor()));
        let (allowed, reason) = match &result {
            Ok(v) => (true, ok(v)),
            Err(e @ DockerError::Denied(_)) => (false, e.to_string()),
            Err(e) => (true, e.to_string()),
        };
        crate::telemetry::decided(&span, allowed, &reason);
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

    /// Asks for approval of `what` when a docker ask rule matches `image`.
    /// Asks for approval of `what` (covered by a skill's request under
    /// `cover`) when a docker ask rule matches `image`.
    async fn approve(&self, what: String, cover: String, image: &str) -> Result<()> {
        let Some(rule) = self.asker.rules.docker_rule(image) else {
            return Ok(());
        };
        let call = crate::caps::approval::Asking {
            capability: "docker",
            detail: what,
            rule,
            reason: None,
            per_run: false,
            cover: Some(cover),
        };
        self.asker.ask(call).await.map_err(denied)
    }

    /// Asks for approval of `what` on container `c` (`named` as the skill
    /// named it) when a docker ask rule matches the image it was started
    /// from.
    async fn approve_container(
        &self,
        what: &str,
        named: &str,
        c: &ContainerInspectResponse,
    ) -> Result<()> {
        let image = c.config.as_ref().and_then(|c| c.image.as_deref());
        match image {
            Some(image) if !self.asker.rules.docker.is_empty() => {
                let name = c.name.as_deref().unwrap_or("?").trim_start_matches('/');
                let cover = crate::caps::approval::docker_cover(what, named);
                self.approve(format!("{what} container {name} ({image})"), cover, image)
                    .await
            }
            _ => Ok(()),
        }
    }

    /// Whether docker `op` (`run` of an image tag; `stop` or `remove` of
    /// one of the skill's containers) would wait for the operator's
    /// approval. A call that would fail anyway (no such container, not
    /// the skill's, no docker grant) would not wait.
    pub(crate) async fn would_ask(&self, op: &str, target: &str) -> bool {
        if self.asker.rules.docker.is_empty() || self.docker().is_err() {
            return false;
        }
        if op == "run" {
            return crate::policy::normalize_tag(target)
                .is_ok_and(|tag| self.asker.rules.docker_rule(&tag).is_some());
        }
        let Ok(docker) = self.engine.client().await else {
            return false;
        };
        let Ok(c) = self.own_container(docker, target).await else {
            return false;
        };
        c.config
            .as_ref()
            .and_then(|c| c.image.as_deref())
            .is_some_and(|image| self.asker.rules.docker_rule(image).is_some())
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

    /// `stop`.
    pub async fn stop(&self, name: &str, timeout_secs: Option<u32>) -> Result<()> {
        let detail = format!("stop {name} timeout={}", timeout_secs.unwrap_or(10));
        let op = async {
            self.docker()?;
            let docker = self.engine.client().await?;
            let c = self.own_container(docker, name).await?;
            self.approve_container("stop", name, &c).await?;
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
            self.approve_container("remove", name, &c).await?;
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
            // Read past the cap by the longest secret (see
            // `Redactor::capped`).
            let cap = self.policy.limits.output;
            let read = cap + self.secrets.redactor().longest();
            let mut out = String::new();
            let mut s = docker.logs(c.id.as_deref().unwrap_or(name), Some(options));
            while let Some(chunk) = s.next().await {
                push_capped(
                    &mut out,
                    &String::from_utf8_lossy(&chunk?.into_bytes()),
                    read,
                );
            }
            Ok(self.secrets.redactor().capped_text(&out, cap))
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::build::tar_context;
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
