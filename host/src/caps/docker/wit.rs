//! The `skillbox:skill/docker` interface over [`DockerCtx`].

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
