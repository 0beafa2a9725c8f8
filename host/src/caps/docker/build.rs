//! `docker build` for a guest: the context packed beneath its grant, the
//! Dockerfile the engine will read checked against the image patterns, and
//! the images it reads already on the engine.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use bollard::Docker;
use bollard::models::BuildInfo;
use bollard::query_parameters::{BuildImageOptionsBuilder, BuilderVersion};
use futures::StreamExt;

use super::{
    BuildRequest, Built, DockerCtx, DockerError, MAX_CONTEXT, OWNER_LABEL, Result, denied,
    last_lines, push_capped,
};
use crate::policy::{DockerPolicy, ImageUse, normalize_tag};

/// What the build request asks that the policy must allow: building, the
/// tag, the build arguments and the network; the tag and network to use.
fn checked_build(pol: &DockerPolicy, req: &BuildRequest) -> Result<(String, String)> {
    if !pol.build {
        return Err(denied(
            "building images is not granted to this skill (request `build = true` under \
             [docker]; grant with --allow-docker-build)",
        ));
    }
    let tag = normalize_tag(&req.tag).map_err(denied)?;
    pol.check_image(&tag).map_err(denied)?;
    for (k, v) in &req.args {
        // A reference is checked against the Dockerfile once it is read.
        if crate::secrets::referenced(v).is_some() {
            continue;
        }
        super::whole_reference("build argument", k, v)?;
        if !pol.build_args.contains(k) {
            return Err(denied(format!(
                "build argument {k:?} is not granted (grant with --allow-docker-build-arg {k})"
            )));
        }
    }
    let network = req.network.clone().unwrap_or_else(|| "none".into());
    pol.check_network(&network).map_err(denied)?;
    Ok((tag, network))
}

/// Every image the build reads must be here already (the engine would pull
/// a missing one from a registry), and a base image's ONBUILD triggers run
/// in this build, so they are held to the grant too.
async fn check_sources(docker: &Docker, pol: &DockerPolicy, uses: &[ImageUse]) -> Result<()> {
    for u in uses {
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
    Ok(())
}

/// Reads the engine's build stream to its end: the image id when it says
/// it, and the log (capped).
async fn follow_build(
    mut stream: impl futures::Stream<Item = std::result::Result<BuildInfo, bollard::errors::Error>>
    + Unpin,
    tag: &str,
    cap: usize,
) -> Result<(Option<String>, String)> {
    let mut log = String::new();
    let mut image_id = None;
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
    Ok((image_id, log))
}

impl DockerCtx {
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
        let (tag, network) = checked_build(pol, &req)?;
        // Checked for the error message; the walk below opens the directory
        // beneath its grant again, so a swap in between cannot widen it.
        let (root, rest) = self.context_dir(&req.context)?;
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
        let context = tokio::task::spawn_blocking(move || tar_context(&root, &rest))
            .await
            .map_err(|e| DockerError::Failed(format!("packing the build context: {e}")))??;
        // The Dockerfile the engine will read: the bytes in the stream.
        let text = dockerfile_in(&context, df)?;
        let args = self.with_secrets(&req.args, &text)?;
        // Checked with the values the engine gets (a FROM may use one).
        let uses = pol.check_dockerfile(&text, &args).map_err(denied)?;
        let docker = self.engine.client().await?;
        check_sources(docker, pol, &uses).await?;
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
            .buildargs(&args.iter().cloned().collect())
            .labels(&labels)
            .build();
        let stream = docker.build_image(options, None, Some(bollard::body_full(context.into())));
        // Read past the cap by the longest secret (see `Redactor::capped`).
        let cap = self.policy.limits.output;
        let (image_id, log) =
            follow_build(stream, &tag, cap + self.secrets.redactor().longest()).await?;
        let image_id = match image_id {
            Some(id) => id,
            None => docker
                .inspect_image(&tag)
                .await?
                .id
                .ok_or_else(|| DockerError::Failed(format!("built {tag}, but it has no id")))?,
        };
        Ok(Built {
            image_id,
            log: self.secrets.redactor().capped_text(&log, cap),
        })
    }

    /// The build arguments with each secret reference replaced by the
    /// secret's value, when the operator granted that secret to builds of
    /// this Dockerfile (`dockerfile`: the bytes the engine will read).
    fn with_secrets(
        &self,
        args: &[(String, String)],
        dockerfile: &[u8],
    ) -> Result<Vec<(String, String)>> {
        use sha2::Digest;
        let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(dockerfile)));
        let uses = &self.policy.secrets.docker_build;
        self.substitute(
            args,
            &super::Pinned {
                what: "build argument",
                whose: "builds of the Dockerfile",
                this: "this Dockerfile",
                flag: "--allow-docker-build-secret",
                digest: &digest,
                pins: &|name| {
                    uses.iter()
                        .filter(|u| u.secret == name)
                        .map(|u| u.dockerfile.clone())
                        .collect()
                },
            },
        )
    }

    /// The host directory of the guest's build context: its grant's root
    /// and the path beneath it.
    fn context_dir(&self, guest: &str) -> Result<(PathBuf, PathBuf)> {
        let (dir, preopen) = crate::caps::fs::guest_to_host(&self.policy.preopens, guest)
            .map_err(|e| denied(format!("build context {e}")))?;
        if !dir.is_dir() {
            return Err(denied(format!(
                "build context {guest:?} is not a directory"
            )));
        }
        let rest = Path::new(guest)
            .strip_prefix(&preopen.guest)
            .map(Path::to_path_buf)
            .unwrap_or_default();
        Ok((preopen.host.clone(), rest))
    }
}

/// Packs the context directory `rest` of the granted directory `grant`
/// into a tar archive. The context and the walk go through `cap-std`
/// handles opened beneath the grant, so nothing outside it can be read even
/// if the tree changes meanwhile (a directory swapped for a symlink is not
/// followed out); a symlink is sent as a link (never followed), sockets,
/// fifos and devices are not sent.
pub(super) fn tar_context(grant: &Path, rest: &Path) -> Result<Vec<u8>> {
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
