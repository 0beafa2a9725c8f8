//! The client configuration: defaults for the flags every client command
//! repeats, in `~/.config/skillbox/client.toml` (or the file
//! `SKILLBOX_CLIENT_CONFIG` names). A flag, or its environment variable,
//! wins over the file; unknown keys are errors.
//!
//! ```toml
//! data-dir = "/srv/skillbox"                 # --data-dir (every command)
//! addr = "127.0.0.1:8750"                    # --addr
//! token-file = "token"                       # --token, read from this file
//! config = "/etc/skillbox/config.toml"       # where `run NAME` and `spawn NAME`
//!                                            # find [skills.NAME]
//! ```
//!
//! Relative paths are taken from the file's directory.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::Deserialize;

/// The client configuration file's contents.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Profile {
    /// The data dir of the daemon these commands talk to.
    pub data_dir: Option<PathBuf>,
    /// Its loopback TCP address.
    pub addr: Option<String>,
    /// A file holding its bearer token.
    pub token_file: Option<PathBuf>,
    /// The host configuration whose `[skills.NAME]` a bare NAME means.
    pub config: Option<PathBuf>,
}

static PROFILE: OnceLock<Profile> = OnceLock::new();

/// Where the client configuration is read from.
pub fn path() -> Option<PathBuf> {
    match crate::caller::var_os("SKILLBOX_CLIENT_CONFIG") {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => crate::caller::config_dir().map(|d| d.join("skillbox/client.toml")),
    }
}

/// Reads the client configuration once (this process's, or that of the
/// [caller](crate::caller) the thread works for); a missing file is no
/// defaults. Later calls keep the first reading.
pub fn load() -> Result<(), String> {
    let profile = match path() {
        Some(p) if p.exists() => read(&p)?,
        _ => Profile::default(),
    };
    let _ = match crate::caller::current() {
        Some(c) => c.profile().set(profile),
        None => PROFILE.set(profile),
    };
    Ok(())
}

/// The client configuration read by [`load`].
pub fn get() -> Profile {
    match crate::caller::current() {
        Some(c) => c.profile().get_or_init(Profile::default).clone(),
        None => PROFILE.get_or_init(Profile::default).clone(),
    }
}

fn read(path: &Path) -> Result<Profile, String> {
    let shown = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| format!("{shown}: {e}"))?;
    let mut p: Profile =
        toml::from_str(&text).map_err(|e| format!("client configuration {shown}: {e}"))?;
    let base = path.parent().unwrap_or(Path::new("."));
    for field in [&mut p.data_dir, &mut p.token_file, &mut p.config] {
        if let Some(f) = field.as_mut()
            && f.is_relative()
        {
            *f = base.join(&*f);
        }
    }
    Ok(p)
}

/// The data directory of the daemon client commands talk to: `flag`
/// (`--data-dir`), else `SKILLBOX_DATA_DIR`, else the client
/// configuration's `data-dir`, else the user's data dir
/// (`~/.local/share/skillbox`).
pub fn data_dir(flag: Option<&Path>) -> PathBuf {
    let env = crate::caller::var_os("SKILLBOX_DATA_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    flag.map(Path::to_path_buf)
        .or(env)
        .or_else(|| get().data_dir.clone())
        .or_else(default_data_dir)
        .unwrap_or_else(|| PathBuf::from(".skillbox"))
}

/// The user's data dir for skillbox, e.g. `~/.local/share/skillbox`.
pub fn default_data_dir() -> Option<PathBuf> {
    crate::caller::data_dir().map(|d| d.join("skillbox"))
}

impl Profile {
    /// The token its `token-file` holds.
    pub fn token(&self) -> Option<String> {
        let file = self.token_file.as_ref()?;
        match std::fs::read_to_string(file) {
            Ok(t) => Some(t.trim().to_string()),
            Err(e) => {
                crate::caller::eprint(&format!("warning: token-file {}: {e}\n", file.display()));
                None
            }
        }
    }
}
