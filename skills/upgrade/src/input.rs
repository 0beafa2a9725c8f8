//! The skill's input: its shape, its defaults, and the checks that turn a
//! bad value into a precise `invalid-input` error before anything is touched.

use std::collections::BTreeMap;
use std::path::{Component, Path};

use serde::Deserialize;
use skillbox_sdk::Error;

/// The tag kept for a rollback; a release may not be called that.
pub const PREVIOUS: &str = "previous";

/// What to upgrade and how (see the crate docs for an example).
#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// Container name of the deployment.
    pub app: String,
    /// Image repository: the new image is `image:version`, the rollback
    /// image `image:previous`.
    pub image: String,
    /// Tag of the new image.
    pub version: String,
    /// Guest path of the build context.
    pub context: String,
    /// Dockerfile relative to the context (default `Dockerfile`).
    #[serde(default)]
    pub dockerfile: Option<String>,
    /// Build arguments.
    #[serde(default)]
    pub build_args: BTreeMap<String, String>,
    /// Guest path of the app's state, backed up before anything changes.
    pub state_dir: String,
    /// Guest path (writable) where backups and diagnostics go.
    pub backup_dir: String,
    /// `http://` URL that answers 200 when the app is healthy.
    pub health_url: String,
    /// Health attempts before giving up.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Pause between health attempts.
    #[serde(default = "default_retry_interval_ms")]
    pub retry_interval_ms: u64,
    /// Timeout of one health attempt.
    #[serde(default = "default_health_timeout_ms")]
    pub health_timeout_ms: u64,
    /// How to run the app's container.
    #[serde(default)]
    pub container: ContainerSpec,
    /// Grace period of `docker stop` before SIGKILL.
    #[serde(default = "default_stop_timeout_secs")]
    pub stop_timeout_secs: u32,
    /// Container log lines kept for diagnostics.
    #[serde(default = "default_log_lines")]
    pub log_lines: u32,
}

/// How the app's container runs; the same for the new and the rollback one.
#[derive(Debug, Default, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ContainerSpec {
    /// Network to join (`none` when absent), e.g. `host`.
    #[serde(default)]
    pub network: Option<String>,
    /// Environment of the container.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Replaces the image's `CMD`.
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    /// Bind mounts of granted directories.
    #[serde(default)]
    pub mounts: Vec<MountSpec>,
    /// Memory limit in bytes (default: the grant's ceiling).
    #[serde(default)]
    pub memory: Option<u64>,
    /// Process limit (default: the grant's ceiling).
    #[serde(default)]
    pub pids: Option<u32>,
    /// Run an init process as PID 1, for an app that ignores SIGTERM as
    /// PID 1 (it then stops at once instead of after `stop_timeout_secs`).
    #[serde(default)]
    pub init: bool,
}

/// One bind mount.
#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct MountSpec {
    /// Guest path inside a granted directory.
    pub source: String,
    /// Absolute path in the container.
    pub target: String,
    #[serde(default)]
    pub read_only: bool,
}

fn default_retries() -> u32 {
    10
}

fn default_retry_interval_ms() -> u64 {
    1000
}

fn default_health_timeout_ms() -> u64 {
    2000
}

fn default_stop_timeout_secs() -> u32 {
    10
}

fn default_log_lines() -> u32 {
    50
}

/// Upper bounds that keep a typo from making a run last for days.
const MAX_RETRIES: u32 = 1000;
const MAX_RETRY_INTERVAL_MS: u64 = 10 * 60 * 1000;
const MAX_HEALTH_TIMEOUT_MS: u64 = 5 * 60 * 1000;
const MAX_STOP_TIMEOUT_SECS: u32 = 3600;
const MAX_LOG_LINES: u32 = 10_000;

impl Input {
    /// The new image's tag, `image:version`.
    pub fn new_tag(&self) -> String {
        format!("{}:{}", self.image, self.version)
    }

    /// The rollback tag, `image:previous`.
    pub fn previous_tag(&self) -> String {
        format!("{}:{PREVIOUS}", self.image)
    }

    /// Checks every value; the error names the field and what is wrong.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |msg: String| Err(Error::invalid_input(msg));
        if !is_container_name(&self.app) {
            return bad(format!(
                "`app` {:?} is not a container name: use 1-128 of [a-zA-Z0-9_.-], starting \
                 with a letter or digit",
                self.app
            ));
        }
        check_repository(&self.image)?;
        if !is_tag(&self.version) {
            return bad(format!(
                "`version` {:?} is not an image tag: use 1-128 of [A-Za-z0-9_.-], not starting \
                 with '.' or '-'",
                self.version
            ));
        }
        if self.version == PREVIOUS {
            return bad(format!(
                "`version` may not be {PREVIOUS:?}: that tag is kept for rollbacks"
            ));
        }
        for (field, path) in [
            ("context", &self.context),
            ("state_dir", &self.state_dir),
            ("backup_dir", &self.backup_dir),
        ] {
            check_guest_path(field, path)?;
        }
        let state = Path::new(&self.state_dir);
        let backup = Path::new(&self.backup_dir);
        if backup.starts_with(state) {
            return bad(format!(
                "`backup_dir` {:?} is inside `state_dir` {:?}: the backup would contain itself",
                self.backup_dir, self.state_dir
            ));
        }
        if let Some(df) = &self.dockerfile {
            let p = Path::new(df);
            if df.is_empty()
                || p.is_absolute()
                || p.components().any(|c| !matches!(c, Component::Normal(_)))
            {
                return bad(format!(
                    "`dockerfile` {df:?} must be a path relative to the context, without '..'"
                ));
            }
        }
        for name in self.build_args.keys() {
            if !is_env_name(name) {
                return bad(format!(
                    "`build_args`: {name:?} is not a variable name ([A-Za-z_][A-Za-z0-9_]*)"
                ));
            }
        }
        let Some(rest) = self.health_url.strip_prefix("http://") else {
            return bad(format!(
                "`health_url` {:?} must be an http:// URL (the sandbox has no TLS client)",
                self.health_url
            ));
        };
        let authority = rest.split('/').next().unwrap_or("");
        if authority.is_empty() || authority.contains(char::is_whitespace) {
            return bad(format!("`health_url` {:?} has no host", self.health_url));
        }
        in_range(
            "retries",
            u64::from(self.retries),
            1,
            u64::from(MAX_RETRIES),
        )?;
        in_range(
            "retry_interval_ms",
            self.retry_interval_ms,
            0,
            MAX_RETRY_INTERVAL_MS,
        )?;
        in_range(
            "health_timeout_ms",
            self.health_timeout_ms,
            1,
            MAX_HEALTH_TIMEOUT_MS,
        )?;
        in_range(
            "stop_timeout_secs",
            u64::from(self.stop_timeout_secs),
            0,
            u64::from(MAX_STOP_TIMEOUT_SECS),
        )?;
        in_range(
            "log_lines",
            u64::from(self.log_lines),
            0,
            u64::from(MAX_LOG_LINES),
        )?;
        self.container.validate()
    }
}

impl ContainerSpec {
    fn validate(&self) -> Result<(), Error> {
        let bad = |msg: String| Err(Error::invalid_input(msg));
        if let Some(n) = &self.network
            && (n.is_empty() || n.contains(char::is_whitespace) || n.contains('/'))
        {
            return bad(format!("`container.network` {n:?} is not a network name"));
        }
        for name in self.env.keys() {
            if name.is_empty() || name.contains('=') || name.contains('\0') {
                return bad(format!(
                    "`container.env`: {name:?} is not an environment variable name"
                ));
            }
        }
        if let Some(cmd) = &self.cmd
            && cmd.is_empty()
        {
            return bad(
                "`container.cmd` is empty: leave it out (or null) to keep the image's CMD".into(),
            );
        }
        for (i, m) in self.mounts.iter().enumerate() {
            check_guest_path(&format!("container.mounts[{i}].source"), &m.source)?;
            let t = Path::new(&m.target);
            if !t.is_absolute()
                || t == Path::new("/")
                || t.components().any(|c| matches!(c, Component::ParentDir))
            {
                return bad(format!(
                    "`container.mounts[{i}].target` {:?} must be an absolute path other than /, \
                     without '..'",
                    m.target
                ));
            }
        }
        if self.memory == Some(0) {
            return bad("`container.memory` must be a number of bytes above 0".into());
        }
        if self.pids == Some(0) {
            return bad("`container.pids` must be at least 1".into());
        }
        Ok(())
    }
}

fn in_range(field: &str, value: u64, min: u64, max: u64) -> Result<(), Error> {
    if value < min || value > max {
        return Err(Error::invalid_input(format!(
            "`{field}` is {value}; it must be in {min}..={max}"
        )));
    }
    Ok(())
}

/// Docker's container names: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`. Also safe in a
/// file name, which the backup's name relies on.
fn is_container_name(s: &str) -> bool {
    s.len() <= 128
        && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Docker's tags: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn is_tag(s: &str) -> bool {
    s.len() <= 128
        && s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn is_env_name(s: &str) -> bool {
    s.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A repository without a tag: `name`, `org/name` or `registry:port/org/name`,
/// path components in lower case.
fn check_repository(image: &str) -> Result<(), Error> {
    let bad = |why: &str| {
        Err(Error::invalid_input(format!(
            "`image` {image:?} {why} (e.g. \"myapp\" or \"registry.local:5000/team/myapp\")"
        )))
    };
    if image.is_empty() || image.len() > 255 {
        return bad("must be a repository name of 1-255 characters");
    }
    if image.contains('@') {
        return bad("must be a repository name, not a digest");
    }
    let mut parts: Vec<&str> = image.split('/').collect();
    let last = parts.pop().unwrap_or("");
    if last.contains(':') {
        return bad("must not carry a tag: the tag is `version`");
    }
    // The first of several parts may be a registry host with a port.
    let registry = (!parts.is_empty() && (parts[0].contains('.') || parts[0].contains(':')))
        .then(|| parts.remove(0));
    if let Some(r) = registry
        && !r
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'))
    {
        return bad("has an invalid registry host");
    }
    let component_ok = |p: &str| {
        !p.is_empty()
            && p.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
            })
            && p.chars()
                .next()
                .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    };
    if !parts.iter().chain([&last]).all(|p| component_ok(p)) {
        return bad("must use lower-case letters, digits and [._-] in each path component");
    }
    Ok(())
}

/// An absolute guest path without `..`, `.` or empty components.
fn check_guest_path(field: &str, path: &str) -> Result<(), Error> {
    let p = Path::new(path);
    let clean = p.is_absolute()
        && p.components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
        && !path.contains("//");
    if clean {
        Ok(())
    } else {
        Err(Error::invalid_input(format!(
            "`{field}` {path:?} must be an absolute guest path without '.' or '..' (one of the \
             directories granted to the skill, or inside one)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_schema_is_current() {
        skillbox_sdk::schema::check::<Input>(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/input.schema.json"
        ));
    }

    fn good() -> serde_json::Value {
        serde_json::json!({
            "app": "myapp",
            "image": "myapp",
            "version": "v2",
            "context": "/src",
            "dockerfile": null,
            "build_args": {"APP_VERSION": "v2"},
            "state_dir": "/state",
            "backup_dir": "/backup",
            "health_url": "http://127.0.0.1:18080/health",
            "retries": 10,
            "retry_interval_ms": 500,
            "health_timeout_ms": 2000,
            "container": {
                "network": "host", "env": {"PORT": "18080"}, "cmd": null,
                "mounts": [{"source": "/state", "target": "/www/state", "read_only": true}],
                "memory": 67108864, "pids": 64
            },
            "stop_timeout_secs": 10,
            "log_lines": 50
        })
    }

    fn parse(v: serde_json::Value) -> Result<Input, String> {
        let input: Input = serde_json::from_value(v).map_err(|e| e.to_string())?;
        input.validate().map_err(|e| e.to_string())?;
        Ok(input)
    }

    #[test]
    fn the_documented_example_is_valid() {
        let i = parse(good()).unwrap();
        assert_eq!(i.new_tag(), "myapp:v2");
        assert_eq!(i.previous_tag(), "myapp:previous");
        assert_eq!(i.container.mounts[0].target, "/www/state");
    }

    #[test]
    fn defaults_apply() {
        let mut v = good();
        for k in [
            "retries",
            "retry_interval_ms",
            "health_timeout_ms",
            "stop_timeout_secs",
            "log_lines",
            "container",
            "dockerfile",
            "build_args",
        ] {
            v.as_object_mut().unwrap().remove(k);
        }
        let i = parse(v).unwrap();
        assert_eq!(
            (i.retries, i.retry_interval_ms, i.health_timeout_ms),
            (10, 1000, 2000)
        );
        assert_eq!((i.stop_timeout_secs, i.log_lines), (10, 50));
        assert!(i.container.mounts.is_empty());
    }

    #[test]
    fn unknown_fields_are_refused() {
        let mut v = good();
        v["force"] = true.into();
        assert!(parse(v).unwrap_err().contains("unknown field `force`"));
        let mut v = good();
        v["container"]["privileged"] = true.into();
        assert!(parse(v).unwrap_err().contains("unknown field `privileged`"));
    }

    #[test]
    fn bad_values_are_named() {
        for (pointer, value, needle) in [
            ("/app", "my app", "`app`"),
            ("/app", "-x", "`app`"),
            ("/image", "MyApp", "lower-case"),
            ("/image", "myapp:v1", "the tag is `version`"),
            ("/image", "myapp@sha256:00", "digest"),
            ("/version", "previous", "kept for rollbacks"),
            ("/version", "v 2", "`version`"),
            ("/context", "src", "`context`"),
            ("/state_dir", "/state/../etc", "`state_dir`"),
            ("/backup_dir", "/state/backups", "inside `state_dir`"),
            ("/dockerfile", "../Dockerfile", "`dockerfile`"),
            ("/health_url", "https://x/health", "http://"),
            ("/container/network", "a b", "`container.network`"),
            ("/container/mounts/0/target", "relative", "mounts[0].target"),
        ] {
            let mut v = good();
            *v.pointer_mut(pointer).unwrap() = value.into();
            let e = parse(v).unwrap_err();
            assert!(e.contains(needle), "{pointer}={value}: {e}");
        }
        for (pointer, value, needle) in [
            ("/retries", 0, "`retries` is 0"),
            ("/health_timeout_ms", 0, "`health_timeout_ms`"),
            ("/container/pids", 0, "`container.pids`"),
        ] {
            let mut v = good();
            *v.pointer_mut(pointer).unwrap() = value.into();
            let e = parse(v).unwrap_err();
            assert!(e.contains(needle), "{pointer}={value}: {e}");
        }
        let mut v = good();
        v["build_args"] = serde_json::json!({"APP-VERSION": "1"});
        assert!(parse(v).unwrap_err().contains("`build_args`"));
        let mut v = good();
        v["container"]["cmd"] = serde_json::json!([]);
        assert!(parse(v).unwrap_err().contains("`container.cmd`"));
    }

    #[test]
    fn registries_are_repositories() {
        for ok in [
            "myapp",
            "team/my-app",
            "registry.local:5000/team/myapp",
            "a.b_c",
        ] {
            check_repository(ok).unwrap();
        }
        for bad in ["", "/x", "team//x", "Team/x", "x/"] {
            assert!(check_repository(bad).is_err(), "{bad}");
        }
    }
}
