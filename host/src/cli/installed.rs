//! A bare NAME where a skill's path goes: the operator's installed skill
//! `[skills.NAME]`, with the grants the configuration gives it.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use skillbox::config::HostConfig;
use skillbox::policy::Grants;

/// The skill a command runs and what it is granted.
pub struct Chosen {
    /// Its path.
    pub skill: PathBuf,
    /// The installed skill's grants with the command's flags added; just
    /// the flags for a path.
    pub grants: Grants,
    /// Whether the configuration lets it run partly granted.
    pub partial: bool,
}

/// The skill `arg` names: a path when one exists there, else an installed
/// skill of the host configuration `config` (default: the client
/// configuration's, else DATA-DIR/config.toml).
pub fn choose(
    arg: &Path,
    config: Option<&Path>,
    data_dir: &Path,
    flags: Grants,
) -> Result<Chosen, skillbox::Error> {
    let name = arg.to_str().filter(|n| is_name(n) && !arg.exists());
    let Some(name) = name else {
        return Ok(Chosen {
            skill: arg.to_owned(),
            grants: flags,
            partial: false,
        });
    };
    let path = config
        .map(Path::to_owned)
        .or_else(|| skillbox::profile::get().config.clone())
        .unwrap_or_else(|| data_dir.join("config.toml"));
    let not_found = |why: String| skillbox::Error::Io {
        path: arg.to_owned(),
        source: std::io::Error::new(ErrorKind::NotFound, why),
    };
    if !path.exists() {
        return Err(not_found(format!(
            "no such skill directory, and no configuration {} to install one named {name} \
             (pass --config FILE)",
            path.display()
        )));
    }
    let host = HostConfig::load(&path)?;
    let Some(installed) = host.skills.get(name) else {
        let names: Vec<&str> = host.skills.keys().map(String::as_str).collect();
        return Err(not_found(format!(
            "no such skill directory, nor [skills.{name}] in {} (installed: {})",
            path.display(),
            if names.is_empty() {
                "none".into()
            } else {
                names.join(", ")
            }
        )));
    };
    let base = path.parent().unwrap_or(Path::new("."));
    let (skill, mut grants) = installed
        .resolve(base)
        .map_err(|e| skillbox::Error::Config(format!("{} [skills.{name}]: {e}", path.display())))?;
    grants.merge(flags);
    Ok(Chosen {
        skill,
        grants,
        partial: installed.partial,
    })
}

/// A skill's name as `[skills.NAME]` spells it, not a path.
fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}
