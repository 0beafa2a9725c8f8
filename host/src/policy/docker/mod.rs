//! The `[docker]` table: which images a skill may build, tag and run, and
//! the limits and owner of the containers it starts.
//!
//! The skill requests, the operator grants, and a call must match both: an
//! image tag must match a pattern the skill requested *and* one the operator
//! granted (so a skill may request `"*"` — "the app's image, whichever it
//! is" — and the operator narrows it to `myapp:*`). Patterns are matched
//! part by part ([`image`]): a `*` never crosses the registry, repository
//! or tag separators. A build's Dockerfile is held to the same patterns:
//! every base image and `COPY --from` source must match both sides
//! ([`dockerfile`]). Building, build arguments and networks are granted by
//! name; container memory and process limits are the lower of both sides,
//! with host defaults.
//!
//! The owner label of a skill's containers is the only key to them, so it
//! is never the skill's own word (its manifest name): the operator assigns
//! it, or it is the component's pinned sha256, which another component
//! cannot have.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::limits::capped;
use super::{PolicyReport, ReportStatus};
use crate::units::ByteSize;

pub mod dockerfile;
pub mod image;

pub use dockerfile::ImageUse;
pub use image::normalize_tag;

/// Default memory ceiling of a container a skill starts.
pub const DEFAULT_CONTAINER_MEMORY: ByteSize = ByteSize(512 << 20);
/// Default process ceiling of a container a skill starts.
pub const DEFAULT_CONTAINER_PIDS: u32 = 256;

/// What a skill asks for under `[docker]` in `skill.toml`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DockerRequest {
    /// Image tag patterns (`myapp:*`, or `*` for whatever the operator grants).
    #[serde(default)]
    pub images: Vec<String>,
    /// Whether the skill builds images.
    #[serde(default)]
    pub build: bool,
    /// Names of build arguments it passes; `*` for whatever the operator
    /// grants.
    #[serde(default)]
    pub build_args: Vec<String>,
    /// Networks its containers (and build steps) join besides `none`;
    /// `*` for whatever the operator grants.
    #[serde(default)]
    pub networks: Vec<String>,
    /// Memory ceiling it wants for a container.
    #[serde(default)]
    pub memory: Option<ByteSize>,
    /// Process ceiling it wants for a container.
    #[serde(default)]
    pub pids: Option<u32>,
}

/// What the operator grants under `[docker]` (policy file) or with the
/// `--allow-docker*` flags.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DockerGrant {
    /// Image tag patterns the skill may build, tag and run.
    #[serde(default)]
    pub images: Vec<String>,
    /// Whether the skill may build images (contexts are granted directories).
    #[serde(default)]
    pub build: bool,
    /// Build argument names it may pass.
    #[serde(default)]
    pub build_args: Vec<String>,
    /// Networks besides `none` its containers may join, e.g. `host`.
    #[serde(default)]
    pub networks: Vec<String>,
    /// Memory ceiling of each container [default: 512MiB].
    #[serde(default)]
    pub memory: Option<ByteSize>,
    /// Process ceiling of each container [default: 256].
    #[serde(default)]
    pub pids: Option<u32>,
    /// The owner label of the containers it starts, and the only owner
    /// whose containers it may see, stop or remove [default: `sha256-` and
    /// the component's pinned digest; a skill that is not pinned has no
    /// default]. Tasks of the same component share an owner, so an upgrade
    /// task can replace the container an earlier one started; assign an
    /// owner to keep it across new versions of the skill.
    #[serde(default)]
    pub owner: Option<String>,
}

impl DockerGrant {
    /// Whether anything is granted at all.
    pub fn is_empty(&self) -> bool {
        // Every field: an owner or limits given alone (for the images an
        // ask rule grants) are still grants.
        let DockerGrant {
            images,
            build,
            build_args,
            networks,
            memory,
            pids,
            owner,
        } = self;
        images.is_empty()
            && !build
            && build_args.is_empty()
            && networks.is_empty()
            && memory.is_none()
            && pids.is_none()
            && owner.is_none()
    }

    /// Adds `other`'s grants; its scalars win where set.
    pub fn merge(&mut self, other: DockerGrant) {
        self.images.extend(other.images);
        self.build |= other.build;
        self.build_args.extend(other.build_args);
        self.networks.extend(other.networks);
        self.memory = other.memory.or(self.memory);
        self.pids = other.pids.or(self.pids);
        self.owner = other.owner.or(self.owner.take());
    }

    /// Checks the syntax of every field.
    pub fn validate(&self) -> Result<(), String> {
        validate_common(&self.images, &self.build_args, &self.networks, self.pids)?;
        if let Some(o) = &self.owner {
            validate_owner(o)?;
        }
        Ok(())
    }
}

impl DockerRequest {
    /// Checks the syntax of every field.
    pub fn validate(&self) -> Result<(), String> {
        validate_common(&self.images, &self.build_args, &self.networks, self.pids)?;
        if self.images.is_empty() {
            return Err("images: name at least one image pattern, e.g. [\"myapp:*\"]".into());
        }
        Ok(())
    }
}

fn validate_common(
    images: &[String],
    args: &[String],
    networks: &[String],
    pids: Option<u32>,
) -> Result<(), String> {
    for p in images {
        validate_image_pattern(p)?;
    }
    for a in args.iter().filter(|a| *a != "*") {
        super::env::validate_env_name(a).map_err(|e| format!("build-args: {e}"))?;
    }
    for n in networks {
        if n.is_empty() || n == "none" || n.chars().any(|c| c.is_whitespace() || c == '/') {
            return Err(format!(
                "networks: {n:?} is not a network name (`none` is always allowed and need not be listed)"
            ));
        }
    }
    if pids == Some(0) {
        return Err("pids must be at least 1".into());
    }
    Ok(())
}

/// An image pattern is `*` or `[REGISTRY/]REPOSITORY:TAG` with globs
/// inside the parts (see [`image`]).
pub fn validate_image_pattern(p: &str) -> Result<(), String> {
    image::validate_pattern(p)
}

fn validate_owner(o: &str) -> Result<(), String> {
    if o.is_empty()
        || o.len() > 128
        || !o
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(format!(
            "owner {o:?} must be 1-128 letters, digits, '-', '_' or '.'"
        ));
    }
    Ok(())
}

/// The docker part of one run's effective policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerPolicy {
    /// The skill's image patterns (`None` for a bare component: the grants
    /// alone decide).
    pub images_requested: Option<Vec<String>>,
    /// The operator's image patterns.
    pub images_granted: Vec<String>,
    /// Whether `build` is allowed.
    pub build: bool,
    /// Build arguments that may be passed.
    pub build_args: Vec<String>,
    /// Networks besides `none`.
    pub networks: Vec<String>,
    /// Memory ceiling of a container, in bytes.
    pub memory: u64,
    /// Process ceiling of a container.
    pub pids: u32,
    /// Owner label of the run's containers; `None` when the operator
    /// assigned none and the skill is not pinned by digest (then it cannot
    /// start or touch containers).
    pub owner: Option<String>,
}

impl DockerPolicy {
    /// Whether `tag` (normalised) may be used; the error names the rules.
    pub fn check_image(&self, tag: &str) -> Result<(), String> {
        let granted = self
            .images_granted
            .iter()
            .any(|p| image::pattern_covers(p, tag));
        let requested = self
            .images_requested
            .as_ref()
            .is_none_or(|r| r.iter().any(|p| image::pattern_covers(p, tag)));
        match (requested, granted) {
            (true, true) => Ok(()),
            (false, _) => Err(format!(
                "image {tag:?} does not match the skill's [docker] images {:?}",
                self.images_requested.as_deref().unwrap_or_default()
            )),
            (true, false) => Err(format!(
                "image {tag:?} does not match a granted image pattern (granted: {}; grant with --allow-docker {})",
                list(&self.images_granted),
                suggest_pattern(tag)
            )),
        }
    }

    /// The owner whose containers this run may start and touch.
    pub fn owner(&self) -> Result<&str, String> {
        self.owner.as_deref().ok_or_else(|| NO_OWNER.to_string())
    }

    /// The images `dockerfile` (the exact bytes sent to the engine) makes
    /// the engine read, each checked like a `run` of it; refuses remote
    /// `ADD` sources and `# syntax=` frontends. The error names the line,
    /// the rule and the flag that would allow it.
    pub fn check_dockerfile(
        &self,
        dockerfile: &[u8],
        build_args: &[(String, String)],
    ) -> Result<Vec<ImageUse>, String> {
        let uses = dockerfile::images(dockerfile, build_args)?;
        for u in &uses {
            self.check_use(u)?;
        }
        Ok(uses)
    }

    /// Checks the `ONBUILD` triggers of the base image `base`: they run in
    /// the build that starts from it.
    pub fn check_triggers(&self, base: &str, triggers: &[String]) -> Result<(), String> {
        for t in triggers {
            for u in dockerfile::trigger_images(t).map_err(|e| format!("base image {base}: {e}"))? {
                self.check_use(&u)
                    .map_err(|e| format!("base image {base}'s {e}"))?;
            }
        }
        Ok(())
    }

    fn check_use(&self, u: &ImageUse) -> Result<(), String> {
        let at = if u.line == 0 {
            "ONBUILD trigger".to_string()
        } else {
            format!("Dockerfile line {}", u.line)
        };
        let tag = normalize_tag(&u.reference).map_err(|e| format!("{at}: {} {e}", u.how))?;
        self.check_image(&tag)
            .map_err(|e| format!("{at}: {} {}: {e}", u.how, u.reference))
    }

    /// Whether a container or build step may join `network`.
    pub fn check_network(&self, network: &str) -> Result<(), String> {
        if network == "none" || self.networks.iter().any(|n| n == network) {
            Ok(())
        } else {
            Err(format!(
                "network {network:?} is not granted (granted: none{}; grant with --allow-docker-network {network})",
                self.networks
                    .iter()
                    .map(|n| format!(", {n}"))
                    .collect::<String>()
            ))
        }
    }
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "nothing".into()
    } else {
        items.join(", ")
    }
}

fn suggest_pattern(tag: &str) -> String {
    match tag.rsplit_once(':') {
        Some((repo, t)) if !repo.is_empty() && !t.contains('/') => format!("'{repo}:*'"),
        _ => format!("'{tag}'"),
    }
}

const NO_OWNER: &str = "containers need an owner, and this skill has none: it is not pinned \
     by sha256 (run `skillbox build` to pin it), so nothing it cannot forge names it; \
     assign one with --docker-owner NAME";

impl fmt::Display for DockerPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "images {} build {} networks none{} owner {}",
            list(&self.images_granted),
            if self.build { "yes" } else { "no" },
            self.networks
                .iter()
                .map(|n| format!(",{n}"))
                .collect::<String>(),
            self.owner.as_deref().unwrap_or("none")
        )
    }
}

/// Intersects a skill's `[docker]` request with the operator's grant.
/// `digest` is the component's pinned sha256 (verified against the
/// component when the skill was opened), which names the default owner.
/// Returns `None` when the run gets no docker access at all.
pub(crate) fn compute(
    request: Option<Option<&DockerRequest>>,
    grant: &DockerGrant,
    digest: Option<&str>,
    report: &mut PolicyReport,
) -> Option<DockerPolicy> {
    let owner = grant.owner.clone().or_else(|| {
        digest
            .filter(|d| !d.is_empty())
            .map(|d| format!("sha256-{}", d.to_ascii_lowercase()))
    });
    let policy = intersect(request, grant, owner, report);
    if policy.as_ref().is_some_and(|p| p.owner.is_none()) {
        report.warnings.push(format!("docker: {NO_OWNER}"));
    }
    policy
}

fn intersect(
    request: Option<Option<&DockerRequest>>,
    grant: &DockerGrant,
    owner: Option<String>,
    report: &mut PolicyReport,
) -> Option<DockerPolicy> {
    let memory_cap = grant.memory.unwrap_or(DEFAULT_CONTAINER_MEMORY);
    let pids_cap = grant.pids.unwrap_or(DEFAULT_CONTAINER_PIDS);
    let req = match request {
        // A bare component: the grant is the request.
        None => {
            if grant.is_empty() {
                return None;
            }
            for p in &grant.images {
                report.push("docker", format!("image {p}"), ReportStatus::Granted);
            }
            return Some(DockerPolicy {
                images_requested: None,
                images_granted: grant.images.clone(),
                build: grant.build,
                build_args: grant.build_args.clone(),
                networks: grant.networks.clone(),
                memory: memory_cap.bytes(),
                pids: pids_cap,
                owner,
            });
        }
        Some(None) => {
            for p in &grant.images {
                report.push("docker", format!("image {p}"), ReportStatus::Unrequested);
            }
            return None;
        }
        Some(Some(r)) => r,
    };
    let any_image = images(req, grant, report);
    let build = req.build && grant.build;
    if req.build {
        let status = if grant.build {
            ReportStatus::Granted
        } else {
            ReportStatus::NotGranted {
                hint: "--allow-docker-build".into(),
            }
        };
        report.push("docker", "build".into(), status);
    }
    let build_args = named(
        report,
        ("build-arg", "--allow-docker-build-arg"),
        &req.build_args,
        if build { &grant.build_args } else { &[] },
    );
    let networks = named(
        report,
        ("network", "--allow-docker-network"),
        &req.networks,
        &grant.networks,
    );
    let memory = capped(
        report,
        "docker",
        "container memory",
        "--docker-memory",
        req.memory,
        memory_cap,
    );
    let pids = capped(
        report,
        "docker",
        "container pids",
        "--docker-pids",
        req.pids,
        pids_cap,
    );
    if !any_image {
        return None;
    }
    Some(DockerPolicy {
        images_requested: Some(req.images.clone()),
        images_granted: grant.images.clone(),
        build,
        build_args,
        networks,
        memory: memory.bytes(),
        pids,
        owner,
    })
}

/// Reports each requested image pattern against the granted ones; whether
/// any is granted at all.
fn images(req: &DockerRequest, grant: &DockerGrant, report: &mut PolicyReport) -> bool {
    let mut any_image = false;
    for p in &req.images {
        let narrower: Vec<&String> = grant
            .images
            .iter()
            .filter(|g| image::pattern_covers(p, g))
            .collect();
        let status = if grant.images.iter().any(|g| g == p || g == "*") {
            any_image = true;
            ReportStatus::Granted
        } else if !narrower.is_empty() {
            any_image = true;
            ReportStatus::granted_only(&narrower)
        } else {
            ReportStatus::NotGranted {
                hint: if p == "*" {
                    "--allow-docker 'IMAGE:*'".into()
                } else {
                    format!("--allow-docker '{p}'")
                },
            }
        };
        report.push("docker", format!("image {p}"), status);
    }
    any_image
}

/// Names (build arguments, networks) requested by name or as `*`, against
/// the granted names; returns those granted, reported as `what` with the
/// `flag` that grants one.
fn named(
    report: &mut PolicyReport,
    (what, flag): (&str, &str),
    requested: &[String],
    granted: &[String],
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for n in requested {
        let got: Vec<&String> = granted.iter().filter(|g| n == "*" || *g == n).collect();
        let status = if got.is_empty() {
            ReportStatus::NotGranted {
                hint: format!("{flag} {}", if n == "*" { "NAME" } else { n }),
            }
        } else if n == "*" {
            ReportStatus::granted_only(&got)
        } else {
            ReportStatus::Granted
        };
        report.push("docker", format!("{what} {n}"), status);
        for g in got {
            if !out.contains(g) {
                out.push(g.clone());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_normalised_and_ids_refused() {
        assert_eq!(normalize_tag("myapp").unwrap(), "myapp:latest");
        assert_eq!(normalize_tag("myapp:v2").unwrap(), "myapp:v2");
        assert_eq!(
            normalize_tag("reg.local:5000/myapp").unwrap(),
            "reg.local:5000/myapp:latest"
        );
        for bad in [
            "",
            "sha256:0123456789abcdef",
            "0123456789abcdef",
            "myapp@sha256:00",
            "my app:1",
            "myapp:",
        ] {
            assert!(normalize_tag(bad).is_err(), "{bad:?}");
        }
    }

    fn policy(req: Option<&[&str]>, granted: &[&str]) -> DockerPolicy {
        DockerPolicy {
            images_requested: req.map(|r| r.iter().map(|s| s.to_string()).collect()),
            images_granted: granted.iter().map(|s| s.to_string()).collect(),
            build: true,
            build_args: vec![],
            networks: vec!["host".into()],
            memory: 1 << 20,
            pids: 10,
            owner: Some("t".into()),
        }
    }

    #[test]
    fn an_image_must_match_both_sides() {
        let p = policy(Some(&["*"]), &["myapp:*"]);
        assert!(p.check_image("myapp:v2").is_ok());
        let e = p.check_image("other:v2").unwrap_err();
        assert!(e.contains("--allow-docker 'other:*'"), "{e}");
        let p = policy(Some(&["myapp:v*"]), &["*"]);
        assert!(p.check_image("myapp:v2").is_ok());
        assert!(
            p.check_image("myapp:previous")
                .unwrap_err()
                .contains("skill's [docker] images")
        );
        assert!(policy(None, &["myapp:*"]).check_image("myapp:x").is_ok());
        assert!(policy(None, &[]).check_image("myapp:x").is_err());
        assert!(p.check_network("none").is_ok());
        assert!(p.check_network("host").is_ok());
        assert!(
            p.check_network("bridge")
                .unwrap_err()
                .contains("--allow-docker-network bridge")
        );
    }

    #[test]
    fn compute_intersects_and_reports() {
        let req = DockerRequest {
            images: vec!["*".into()],
            build: true,
            build_args: vec!["V".into(), "W".into()],
            networks: vec!["*".into()],
            memory: Some(ByteSize(1 << 30)),
            pids: Some(50),
        };
        let grant = DockerGrant {
            images: vec!["myapp:*".into()],
            build: true,
            build_args: vec!["V".into()],
            networks: vec!["host".into()],
            memory: Some(ByteSize(64 << 20)),
            ..DockerGrant::default()
        };
        let mut report = PolicyReport::default();
        let p = compute(Some(Some(&req)), &grant, Some("ABC123"), &mut report).unwrap();
        assert_eq!(
            p.owner.as_deref(),
            Some("sha256-abc123"),
            "the pinned digest"
        );
        assert!(report.warnings.is_empty(), "{report}");
        assert_eq!(p.build_args, vec!["V"]);
        assert_eq!(p.networks, vec!["host"]);
        assert_eq!(p.memory, 64 << 20);
        assert_eq!(p.pids, 50);
        let text = report.to_string();
        assert!(text.contains("granted myapp:* only"), "{text}");
        assert!(text.contains("--allow-docker-build-arg W"), "{text}");
        assert!(text.contains("capped at 64MiB"), "{text}");

        // Nothing granted: no docker at all, and the report says how.
        let mut report = PolicyReport::default();
        assert!(
            compute(
                Some(Some(&req)),
                &DockerGrant::default(),
                Some("d"),
                &mut report
            )
            .is_none()
        );
        assert!(report.to_string().contains("--allow-docker 'IMAGE:*'"));
        // Granted but not requested: not given.
        let mut report = PolicyReport::default();
        assert!(compute(Some(None), &grant, Some("d"), &mut report).is_none());
        assert!(report.to_string().contains("unused"));
        // Build requested, not granted.
        let mut report = PolicyReport::default();
        let g = DockerGrant {
            build: false,
            ..grant.clone()
        };
        let p = compute(Some(Some(&req)), &g, Some("d"), &mut report).unwrap();
        assert!(!p.build && p.build_args.is_empty());
        assert!(report.to_string().contains("--allow-docker-build"));
    }

    #[test]
    fn the_owner_is_assigned_or_the_pinned_digest_never_the_name() {
        let req = DockerRequest {
            images: vec!["*".into()],
            ..DockerRequest::default()
        };
        let mut grant = DockerGrant {
            images: vec!["myapp:*".into()],
            ..DockerGrant::default()
        };
        let mut report = PolicyReport::default();
        let p = compute(Some(Some(&req)), &grant, Some("d1"), &mut report).unwrap();
        assert_eq!(p.owner().unwrap(), "sha256-d1");
        // Unpinned, or a bare component: no owner, and the report says how.
        for request in [Some(Some(&req)), None] {
            let mut report = PolicyReport::default();
            let p = compute(request, &grant, None, &mut report).unwrap();
            let e = p.owner().unwrap_err();
            assert!(e.contains("--docker-owner NAME"), "{e}");
            assert!(
                report.to_string().contains("--docker-owner NAME"),
                "{report}"
            );
        }
        // The operator's owner wins.
        grant.owner = Some("app".into());
        let p = compute(Some(Some(&req)), &grant, Some("d1"), &mut report).unwrap();
        assert_eq!(p.owner().unwrap(), "app");
    }

    #[test]
    fn a_dockerfile_is_held_to_the_image_patterns() {
        let p = policy(Some(&["*"]), &["myapp:*"]);
        let ok = p
            .check_dockerfile(
                b"FROM myapp:base AS b\nFROM scratch\nCOPY --from=b /a /a\n",
                &[],
            )
            .unwrap();
        assert_eq!(ok.len(), 1);
        assert!(ok[0].is_base());
        for (df, needle) in [
            (
                &b"FROM foreign:v1\n"[..],
                "Dockerfile line 1: FROM foreign:v1: image \"foreign:v1\" does not match a granted image pattern (granted: myapp:*; grant with --allow-docker 'foreign:*')",
            ),
            (
                b"FROM scratch\nCOPY --from=foreign /s /s\n",
                "line 2: COPY --from foreign: image \"foreign:latest\"",
            ),
            (b"FROM myapp:5000/x:y\n", "myapp:5000/x:y"),
            (
                b"FROM scratch\nCOPY --from=sha256:0123456789abcdef /s /s\n",
                "not by id or digest",
            ),
        ] {
            let e = p.check_dockerfile(df, &[]).unwrap_err();
            assert!(e.contains(needle), "{e}");
        }
        let e = p
            .check_triggers("myapp:base", &["COPY --from=foreign /s /s".into()])
            .unwrap_err();
        assert!(
            e.contains("base image myapp:base") && e.contains("--allow-docker 'foreign:*'"),
            "{e}"
        );
        assert!(p.check_triggers("myapp:base", &["RUN true".into()]).is_ok());
    }

    #[test]
    fn patterns_and_owners_are_validated() {
        assert!(validate_image_pattern("myapp").is_err());
        assert!(validate_image_pattern("myapp:*").is_ok());
        assert!(validate_image_pattern("reg:5000/myapp").is_err());
        let g = DockerGrant {
            images: vec!["a:*".into()],
            owner: Some("bad owner".into()),
            ..DockerGrant::default()
        };
        assert!(g.validate().unwrap_err().contains("owner"));
        let r = DockerRequest::default();
        assert!(r.validate().unwrap_err().contains("at least one image"));
    }
}
