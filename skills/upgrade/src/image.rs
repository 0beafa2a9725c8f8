//! (c) Keep the running image as `image:previous`, then build `image:version`.

use skillbox_sdk::docker::{self, Build};
use skillbox_sdk::{Context, Error, debug, info};

use crate::input::Input;
use crate::steps::{BuildDone, DiagnosticsDone, OldContainer};

/// Lines of the build's output logged (at debug level).
const BUILD_LOG_LINES: usize = 20;

/// Tags the old image for a rollback and builds the new one.
pub fn build(input: &Input, diag: &DiagnosticsDone) -> Result<BuildDone, Error> {
    let previous_tag = match &diag.old_container {
        Some(old) => {
            let previous = input.previous_tag();
            keep_previous(old, &previous)?;
            Some(previous)
        }
        None => {
            info!(
                "no container {:?} runs yet: this is a first install, there is nothing to keep \
                 for a rollback",
                input.app
            );
            None
        }
    };

    let tag = input.new_tag();
    info!("building {tag} from {}", input.context);
    let mut build = Build::new(&input.context, &tag);
    if let Some(df) = &input.dockerfile {
        build = build.dockerfile(df);
    }
    for (k, v) in &input.build_args {
        build = build.arg(k, v);
    }
    let built = build.run().context(format!("building {tag}"))?;
    let lines: Vec<&str> = built.log.lines().filter(|l| !l.trim().is_empty()).collect();
    for line in &lines[lines.len().saturating_sub(BUILD_LOG_LINES)..] {
        debug!("build: {}", line.trim_end());
    }
    info!("built {tag}: {}", built.image_id);
    Ok(BuildDone {
        tag,
        new_image_id: built.image_id,
        old_image_id: diag.old_image_id.clone(),
        previous_tag,
    })
}

/// Makes `previous` name the image the old container runs.
///
/// Images are tagged by name only, so the old container's tag is used; it
/// must still name the image the container runs (someone may have rebuilt
/// it since). If `previous` already names that image (a restarted task, or
/// a container that was itself a rollback) nothing is done.
fn keep_previous(old: &OldContainer, previous: &str) -> Result<(), Error> {
    let id_of = |tag: &str| {
        docker::image(tag)
            .map(|i| i.map(|i| i.id))
            .context(format!("looking up the image {tag}"))
    };
    if id_of(previous)?.as_deref() == Some(old.image_id.as_str()) {
        info!(
            "{previous} already names the running image {}",
            old.image_id
        );
        return Ok(());
    }
    match id_of(&old.image)? {
        Some(id) if id == old.image_id => {
            docker::tag(&old.image, previous)
                .context(format!("tagging {} as {previous}", old.image))?;
            info!(
                "kept the running image {} ({}) as {previous} for a rollback",
                old.image, old.image_id
            );
            Ok(())
        }
        now => Err(Error::failed(format!(
            "cannot keep the running image for a rollback: the container runs {} but its tag {} \
             now names {}; tag the running image as {previous} by hand, then run the upgrade again",
            old.image_id,
            old.image,
            now.as_deref().unwrap_or("no image")
        ))),
    }
}
