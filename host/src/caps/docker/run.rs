//! `docker run` for a guest: the container gets the host's safety defaults,
//! its mounts are granted directories themselves.

use std::path::{Component, Path, PathBuf};

use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType};
use bollard::query_parameters::{CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder};

use super::{
    CONTAINER_CAPABILITIES, Container, ContainerRequest, DockerCtx, DockerError, Result, container,
    denied, short,
};
use crate::policy::{Access, DockerPolicy, Preopen, normalize_tag};

/// What a container gets, once the request is held to the policy.
struct Checked<'p> {
    tag: String,
    owner: &'p str,
    network: String,
    memory: u64,
    pids: u32,
}

/// Holds the request to the policy: never privileged, no added
/// capabilities, a granted image, a valid name, a granted network, memory
/// and processes within the grant.
fn checked_container<'p>(pol: &'p DockerPolicy, req: &ContainerRequest) -> Result<Checked<'p>> {
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
    Ok(Checked {
        tag,
        owner,
        network,
        memory,
        pids,
    })
}

impl DockerCtx {
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
        let limits = checked_container(pol, &req)?;
        let mounts = self.mounts(&req)?;
        for (k, v) in &req.env {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                return Err(denied(format!("{k:?} is not an environment variable name")));
            }
            super::whole_reference("variable", k, v)?;
        }
        let docker = self.engine.client().await?;
        // The image must exist here: nothing is pulled on the guest's behalf.
        let image = docker
            .inspect_image(&limits.tag)
            .await
            .map_err(|e| match e.into() {
                DockerError::NotFound(_) => {
                    DockerError::NotFound(format!("no image {} on the engine", limits.tag))
                }
                other => other,
            })?;
        let env = self.env_with_secrets(&req, image.id.as_deref().unwrap_or_default())?;
        let start = format!("start a container of {}", limits.tag);
        let cover = crate::caps::approval::docker_cover("run", &limits.tag);
        self.approve(start, cover, &limits.tag).await?;
        let host_config = HostConfig {
            network_mode: Some(limits.network),
            mounts: Some(mounts),
            memory: Some(limits.memory as i64),
            memory_swap: Some(limits.memory as i64),
            pids_limit: Some(i64::from(limits.pids)),
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
            image: Some(limits.tag.clone()),
            cmd: req.cmd.clone(),
            env: Some(env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            labels: Some(self.labels(limits.owner)),
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

    /// The container's environment with each secret reference replaced by
    /// the secret's value: for an image the operator pinned by id
    /// (`image_id`), running its own command.
    fn env_with_secrets(
        &self,
        req: &ContainerRequest,
        image_id: &str,
    ) -> Result<Vec<(String, String)>> {
        let refers = req
            .env
            .iter()
            .find(|(_, v)| crate::secrets::referenced(v).is_some());
        if let (Some((k, _)), Some(cmd)) = (refers, &req.cmd) {
            return Err(denied(format!(
                "variable {k:?} holds a secret: a container given a secret runs its image's own \
                 command, not {cmd:?} (drop cmd)"
            )));
        }
        let uses = &self.policy.secrets.docker_run;
        self.substitute(
            &req.env,
            &super::Pinned {
                what: "variable",
                whose: "containers of the image",
                this: "this image",
                flag: "--allow-docker-run-secret",
                digest: image_id,
                pins: &|name| {
                    uses.iter()
                        .filter(|u| u.secret == name)
                        .map(|u| u.image.clone())
                        .collect()
                },
            },
        )
    }

    /// The bind mounts of the request: granted directories themselves,
    /// read-only when the grant is.
    fn mounts(&self, req: &ContainerRequest) -> Result<Vec<Mount>> {
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
        Ok(mounts)
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
    let host = crate::caps::fs::canonical_dir(&preopen.host)
        .map_err(|e| format!("bind mount source {source:?}: {e}"))?;
    for other in preopens.iter().filter(|p| p.access == Access::ReadWrite) {
        let Ok(outer) = crate::caps::fs::canonical_dir(&other.host) else {
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
