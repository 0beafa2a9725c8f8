//! The host's configuration file (`config.toml` in the data dir): the
//! relay's sinks (`[relay]`, see [`crate::relay::RelayConfig`]), the
//! installed skills (`[skills.NAME]`, see [`crate::catalog`]) and the task
//! store. Unknown keys are errors.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::relay::RelayConfig;

/// The whole configuration file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// Where task notifications go.
    #[serde(default)]
    pub relay: RelayConfig,
    /// Installed skills, offered to agents as MCP tools (see
    /// [`crate::catalog`]).
    #[serde(default)]
    pub skills: BTreeMap<String, crate::catalog::InstalledSkill>,
    /// The task store (see [`crate::store::open_store`]), e.g.
    /// `"postgres://skillbox@db:5432/skillbox"`; by default SQLite in the
    /// data dir.
    #[serde(default)]
    pub store: Option<String>,
    /// Secrets granted skills may use, by name, and where their values
    /// come from (see [`crate::secrets`]):
    ///
    /// ```toml
    /// [secrets.DEPLOY_TOKEN]
    /// env = "DEPLOY_TOKEN"           # or file = "/etc/…", or command = ["pass", "show", "deploy"]
    /// ```
    #[serde(default)]
    pub secrets: crate::secrets::SecretBook,
}

impl HostConfig {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<HostConfig, crate::Error> {
        let text = std::fs::read_to_string(path).map_err(|e| crate::Error::io(path, e))?;
        HostConfig::parse(&text)
            .map_err(|m| crate::Error::Config(format!("{}: {m}", path.display())))
    }

    /// Parses configuration text.
    pub fn parse(text: &str) -> Result<HostConfig, String> {
        let config: HostConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        config.relay.check()?;
        config.secrets.check()?;
        Ok(config)
    }
}
