//! What a skill asks for, what the operator grants, and what one run gets.
//!
//! * [`Manifest`]: the skill's `skill.toml`, its *requests*.
//! * [`Grants`]: the operator's CLI flags and/or policy file.
//! * [`EffectivePolicy`]: the intersection, the only thing the capability
//!   modules consult. [`PolicyReport`] says, before the run, which requests
//!   were not granted and what to grant to allow them.
//!
//! Each capability has one module holding its request, grant, intersection
//! and checks: [`fs`], [`env`](mod@env), [`net`], [`exec`], [`docker`],
//! [`secrets`], [`limits`].
//! This module never touches the host; it only computes.

pub mod ask;
pub mod docker;
mod effective;
pub mod env;
pub mod exec;
pub mod fs;
mod grants;
pub mod limits;
mod manifest;
pub mod net;
pub mod pattern;
mod report;
pub mod secrets;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use ask::{AskGrants, AskPolicy, WriteAsk};
pub use docker::{
    DEFAULT_CONTAINER_MEMORY, DEFAULT_CONTAINER_PIDS, DockerGrant, DockerPolicy, DockerRequest,
    ImageUse, normalize_tag,
};
pub use effective::EffectivePolicy;
pub use env::EnvRequest;
pub use exec::{ExecPermit, ExecPolicy, ExecRequest, ExecRule};
pub use fs::{FsGrant, FsRequest, Preopen};
pub use grants::{GrantList, Grants};
pub use limits::{Limits, ResolvedLimits};
pub use manifest::{Manifest, ResumePolicy, SkillInfo};
pub use net::{NetRequest, NetRule};
pub use report::{PolicyReport, ReportItem, ReportStatus};
pub use secrets::{BuildSecret, ExecSecret, RunSecret, SecretPolicy, SecretRules};

/// Access to a directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Access {
    /// List and read files.
    Read,
    /// Read, create, write, rename and delete inside the directory.
    ReadWrite,
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Access::Read => "read",
            Access::ReadWrite => "read-write",
        })
    }
}
