//! Pushing a skill as it is on disk: its component, `skill.toml`, input
//! schema and, if it is signed, `skill.sig`.

use super::Reference;
use super::skill::push_skill;
use crate::error::Error;
use crate::skill::SkillSource;
use crate::trust::SkillSignature;

/// Pushes `source` to `to`; the artifact digest and whether a signature
/// went with it.
pub async fn push_source(to: &Reference, source: &SkillSource) -> Result<(String, bool), Error> {
    let Some(files) =
        crate::trust::skill_files(source).map_err(|e| Error::Registry(e.to_string()))?
    else {
        return Err(Error::Registry(format!(
            "{} is a bare component: only a skill with a skill.toml can be pushed",
            source.component_path.display()
        )));
    };
    let signature = SkillSignature::read(&files.dir).map_err(|e| Error::Registry(e.to_string()))?;
    let digest = push_skill(
        to,
        &source.bytes,
        &files.skill_toml,
        files.input_schema.as_deref(),
        signature.as_ref(),
    )
    .await?;
    Ok((digest, signature.is_some()))
}
