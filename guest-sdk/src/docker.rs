//! Build, tag and run Docker images, within what the operator granted.
//!
//! The host talks to its own Docker engine on the skill's behalf. A skill
//! names images by tag (`myapp:v2`; a bare `myapp` means `myapp:latest`),
//! and each tag must match an image pattern under `[docker]` in
//! `skill.toml` that the operator also granted; so must every image a
//! build's Dockerfile reads (`FROM`, `COPY --from`), and those must already
//! be on the engine. A build context is a directory the skill was granted
//! (a guest path); a remote `ADD` source and a `# syntax=` line are
//! refused. A bind mount is a granted directory itself, not a path inside
//! one. Containers a skill starts carry its owner's label (assigned by the
//! operator, or the skill's pinned digest), and it can see, stop and remove
//! only those. Anything else fails with [`Error::Denied`] naming the rule.
//!
//! Containers get the host's safety defaults whatever the skill asks:
//! never privileged, a minimal capability set (no device nodes, no raw
//! sockets), `no-new-privileges`, network `none` unless a granted network
//! is named, memory and process limits no higher than the grant's.
//!
//! ```no_run
//! use skillbox_sdk::docker::{self, Build, Run};
//!
//! # fn main() -> skillbox_sdk::Result<()> {
//! let built = Build::new("/src", "myapp:v2").arg("APP_VERSION", "v2").run()?;
//! docker::tag("myapp:v1", "myapp:previous")?;
//! docker::stop("myapp", Some(10))?;
//! docker::remove("myapp", false)?;
//! let c = Run::new("myapp:v2")
//!     .name("myapp")
//!     .network("host")
//!     .env("PORT", "8080")
//!     .mount_read_only("/state", "/data")
//!     .start()?;
//! skillbox_sdk::info!("started {} from {}", c.name, built.image_id);
//! # Ok(())
//! # }
//! ```

use std::fmt;

use crate::__private::skillbox::skill::docker as wit;

/// Why a docker call failed.
///
/// Converts into [`crate::Error`] with `?`: `Denied` becomes
/// [`ErrorKind::Denied`](crate::ErrorKind::Denied), the rest
/// [`ErrorKind::Failed`](crate::ErrorKind::Failed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The policy refused the call; the text names the rule.
    Denied(String),
    /// No such image or container.
    NotFound(String),
    /// The engine refused or failed the operation; its own message.
    Failed(String),
    /// No Docker engine is configured or reachable from the host.
    Unavailable(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Denied(m) => write!(f, "docker denied: {m}"),
            Error::NotFound(m) => write!(f, "docker: not found: {m}"),
            Error::Failed(m) => write!(f, "docker failed: {m}"),
            Error::Unavailable(m) => write!(f, "docker unavailable: {m}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<wit::DockerError> for Error {
    fn from(e: wit::DockerError) -> Self {
        match e {
            wit::DockerError::Denied(m) => Error::Denied(m),
            wit::DockerError::NotFound(m) => Error::NotFound(m),
            wit::DockerError::Failed(m) => Error::Failed(m),
            wit::DockerError::Unavailable(m) => Error::Unavailable(m),
        }
    }
}

/// A container started by this skill (or an earlier task with the same
/// owner).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// Full id.
    pub id: String,
    /// Name, without the leading `/`.
    pub name: String,
    /// The tag it was started from.
    pub image: String,
    /// `sha256:…` id of its image.
    pub image_id: String,
    /// `created`, `running`, `exited`, …
    pub state: String,
    /// Exit code once it has exited.
    pub exit_code: Option<i64>,
    /// RFC 3339 start time, once started.
    pub started_at: Option<String>,
    /// The task that started it.
    pub task: Option<String>,
}

impl Container {
    /// Whether it is running.
    pub fn is_running(&self) -> bool {
        self.state == "running"
    }
}

impl From<wit::Container> for Container {
    fn from(c: wit::Container) -> Self {
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
}

/// An image, by tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// `sha256:…`
    pub id: String,
    /// Its tags that this skill may use.
    pub tags: Vec<String>,
    /// RFC 3339 creation time.
    pub created: String,
    /// Bytes.
    pub size: u64,
}

impl From<wit::Image> for Image {
    fn from(i: wit::Image) -> Self {
        Image {
            id: i.id,
            tags: i.tags,
            created: i.created,
            size: i.size,
        }
    }
}

/// The result of a build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    /// `sha256:…` id of the new image.
    pub image_id: String,
    /// The build's output (capped by the host).
    pub log: String,
}

/// An image build, built up like a `docker build` command line.
#[derive(Debug, Clone)]
#[must_use = "a Build does nothing until `.run()` is called"]
pub struct Build {
    req: wit::BuildRequest,
}

impl Build {
    /// Builds the directory `context` (a guest path inside a granted
    /// directory) and tags the image `tag`.
    pub fn new(context: impl Into<String>, tag: impl Into<String>) -> Self {
        Build {
            req: wit::BuildRequest {
                context: context.into(),
                dockerfile: None,
                tag: tag.into(),
                args: Vec::new(),
                network: None,
                no_cache: false,
            },
        }
    }

    /// Dockerfile path relative to the context (default `Dockerfile`).
    pub fn dockerfile(mut self, path: impl Into<String>) -> Self {
        self.req.dockerfile = Some(path.into());
        self
    }

    /// A build argument; its name must be granted.
    pub fn arg(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.req.args.push((name.into(), value.into()));
        self
    }

    /// The build argument `name` set to the host's secret `name`: the
    /// skill passes the reference `${secret:NAME}`, never the value, which
    /// the host puts in its place when the operator granted the secret to
    /// builds of this very Dockerfile (`--allow-docker-build-secret NAME
    /// sha256:…`). The build's log comes back with the value redacted.
    pub fn secret_arg(mut self, name: impl Into<String>) -> Self {
        let name = name.into();
        let reference = format!("${{secret:{name}}}");
        self.req.args.push((name, reference));
        self
    }

    /// Network of `RUN` steps (default `none`); must be granted.
    pub fn network(mut self, network: impl Into<String>) -> Self {
        self.req.network = Some(network.into());
        self
    }

    /// Builds without the engine's layer cache.
    pub fn no_cache(mut self) -> Self {
        self.req.no_cache = true;
        self
    }

    /// Runs the build to the end.
    pub fn run(&self) -> Result<Built, Error> {
        let b = wit::build(&self.req)?;
        Ok(Built {
            image_id: b.image_id,
            log: b.log,
        })
    }
}

/// A container to start, built up like a `docker run -d` command line.
#[derive(Debug, Clone)]
#[must_use = "a Run does nothing until `.start()` is called"]
pub struct Run {
    req: wit::RunRequest,
}

impl Run {
    /// A container from the image `tag`.
    pub fn new(tag: impl Into<String>) -> Self {
        Run {
            req: wit::RunRequest {
                image: tag.into(),
                name: None,
                cmd: None,
                env: Vec::new(),
                mounts: Vec::new(),
                network: None,
                memory: None,
                pids: None,
                init: false,
                privileged: false,
                cap_add: Vec::new(),
            },
        }
    }

    /// The container's name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.req.name = Some(name.into());
        self
    }

    /// Replaces the image's `CMD`.
    pub fn cmd<I>(mut self, cmd: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.req.cmd = Some(cmd.into_iter().map(Into::into).collect());
        self
    }

    /// An environment variable of the container.
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.req.env.push((name.into(), value.into()));
        self
    }

    /// The variable `name` set to the host's secret `name`: the skill
    /// passes the reference `${secret:NAME}`, never the value, which the
    /// host puts in its place when the operator granted the secret to
    /// containers of this image (`--allow-docker-run-secret NAME
    /// sha256:ID`); such a container runs its image's own command. Its
    /// logs come back with the value redacted.
    pub fn secret_env(mut self, name: impl Into<String>) -> Self {
        let name = name.into();
        let reference = format!("${{secret:{name}}}");
        self.req.env.push((name, reference));
        self
    }

    /// Binds the granted directory at guest path `source` (the directory
    /// itself, not a path inside it) to `target` in the container, writable
    /// if the grant is.
    pub fn mount(mut self, source: impl Into<String>, target: impl Into<String>) -> Self {
        self.req.mounts.push(wit::Mount {
            source: source.into(),
            target: target.into(),
            read_only: false,
        });
        self
    }

    /// Like [`mount`](Run::mount), read-only.
    pub fn mount_read_only(mut self, source: impl Into<String>, target: impl Into<String>) -> Self {
        self.req.mounts.push(wit::Mount {
            source: source.into(),
            target: target.into(),
            read_only: true,
        });
        self
    }

    /// The network to join (default `none`); must be granted, e.g. `host`.
    pub fn network(mut self, network: impl Into<String>) -> Self {
        self.req.network = Some(network.into());
        self
    }

    /// Memory limit in bytes (default: the grant's ceiling).
    pub fn memory(mut self, bytes: u64) -> Self {
        self.req.memory = Some(bytes);
        self
    }

    /// Process limit (default: the grant's ceiling).
    pub fn pids(mut self, pids: u32) -> Self {
        self.req.pids = Some(pids);
        self
    }

    /// Runs an init process as PID 1 (the engine's `docker-init`), which
    /// forwards signals and reaps zombies: an app that ignores SIGTERM as
    /// PID 1 then stops at once.
    pub fn init(mut self) -> Self {
        self.req.init = true;
        self
    }

    /// Asks for a privileged container. Always refused by the host; here so
    /// that a skill that needs one finds out with a clear error.
    pub fn privileged(mut self) -> Self {
        self.req.privileged = true;
        self
    }

    /// Asks for an added Linux capability. Always refused by the host.
    pub fn cap_add(mut self, cap: impl Into<String>) -> Self {
        self.req.cap_add.push(cap.into());
        self
    }

    /// Creates and starts the container, detached.
    pub fn start(&self) -> Result<Container, Error> {
        Ok(wit::run(&self.req)?.into())
    }
}

/// Stops a container: SIGTERM, then SIGKILL after `timeout_secs`
/// (default 10). Stopping a stopped container is not an error.
pub fn stop(container: &str, timeout_secs: Option<u32>) -> Result<(), Error> {
    Ok(wit::stop(container, timeout_secs)?)
}

/// Removes a container; `force` stops it first.
pub fn remove(container: &str, force: bool) -> Result<(), Error> {
    Ok(wit::remove(container, force)?)
}

/// The state of a container, or `Ok(None)` when there is none by that name.
pub fn inspect(container: &str) -> Result<Option<Container>, Error> {
    match wit::inspect(container) {
        Ok(c) => Ok(Some(c.into())),
        Err(wit::DockerError::NotFound(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The last `tail` lines (default 100) of a container's stdout and stderr.
pub fn logs(container: &str, tail: Option<u32>) -> Result<String, Error> {
    Ok(wit::logs(container, tail)?)
}

/// An image by tag, or `Ok(None)` when the engine has no such tag.
pub fn image(tag: &str) -> Result<Option<Image>, Error> {
    match wit::inspect_image(tag) {
        Ok(i) => Ok(Some(i.into())),
        Err(wit::DockerError::NotFound(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Gives the image tagged `source` the tag `target` as well (both granted).
pub fn tag(source: &str, target: &str) -> Result<Image, Error> {
    Ok(wit::tag(source, target)?.into())
}

/// This skill's containers; `all` includes stopped ones.
pub fn ps(all: bool) -> Result<Vec<Container>, Error> {
    Ok(wit::ps(all)?.into_iter().map(Into::into).collect())
}
