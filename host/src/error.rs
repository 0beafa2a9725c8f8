//! Errors of the library. Each says what was refused or broken, which rule or
//! file applied, and, where it can, what to do about it.

use std::path::{Path, PathBuf};

/// Everything that can stop a skill before or outside its own code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `skill.toml` is malformed or invalid.
    #[error("invalid manifest {path}: {message}")]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A policy file is malformed or invalid.
    #[error("invalid policy {path}: {message}")]
    Policy {
        /// The policy file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A grant cannot be applied (e.g. its host directory does not exist).
    #[error("invalid grant: {0}")]
    Grant(String),
    /// The component's sha256 is not the one pinned in the manifest.
    #[error(
        "digest mismatch for {path}: the manifest pins sha256 {expected} but the file has {actual}; \
         refusing to run a component other than the one the manifest names \
         (rebuild with `skillbox build`, or check where this file came from)"
    )]
    DigestMismatch {
        /// The component file.
        path: PathBuf,
        /// Digest in `skill.toml`.
        expected: String,
        /// Digest of the file.
        actual: String,
    },
    /// The manifest does not pin a digest.
    #[error(
        "{path} pins no sha256; run `skillbox build` to fill it in, \
         or pass --allow-unpinned to run it anyway"
    )]
    Unpinned {
        /// The manifest file.
        path: PathBuf,
    },
    /// The file is not a WebAssembly component, or not one skillbox can run.
    #[error("invalid component {path}: {message}")]
    Component {
        /// The component file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Requested capabilities were not granted and the run was refused.
    #[error("the skill requests capabilities that were not granted:\n{0}")]
    NotGranted(String),
    /// The trust policy refused the skill (unsigned, signed by a key not
    /// trusted for it, or a signature that does not hold).
    #[error("{0}")]
    Untrusted(String),
    /// A registry refused, answered garbage, or served content other than
    /// asked for; or a pulled artifact is not a skill.
    #[error("{0}")]
    Registry(String),
    /// A registry could not be reached.
    #[error("{0}")]
    Unreachable(String),
    /// A skill reference that is not pulled on this machine.
    #[error("{0}")]
    NotPulled(String),
    /// A pull or reference the lockfile does not allow as it stands (a
    /// moved tag, more capabilities than the locked version, another tag).
    #[error("{0}")]
    Locked(String),
    /// The input is not valid JSON (or not the shape the component needs).
    #[error("invalid input: {0}")]
    Input(String),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The host's configuration file is invalid.
    #[error("invalid configuration {0}")]
    Config(String),
    /// The daemon's data dir cannot be used (another daemon holds it, or it
    /// cannot be made).
    #[error("{0}")]
    DataDir(String),
    /// An MCP transport failed.
    #[error("MCP: {0}")]
    Mcp(String),
    /// The task store failed or refused.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The WebAssembly engine failed in a way not covered above.
    #[error("engine: {0}")]
    Engine(String),
}

impl From<crate::trust::Refused> for Error {
    fn from(r: crate::trust::Refused) -> Error {
        Error::Untrusted(r.0)
    }
}

impl Error {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Error {
        Error::Io {
            path: path.to_owned(),
            source,
        }
    }

    pub(crate) fn engine(e: impl std::fmt::Display) -> Error {
        Error::Engine(format!("{e:#}"))
    }
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No such task.
    #[error("no task {0}")]
    NotFound(crate::units::TaskId),
    /// The caller's lease on the task is gone (it expired and another host
    /// took the task, or the task ended): it must stop writing.
    #[error("lease on task {0} was lost; another owner holds it or it ended")]
    LeaseLost(crate::units::TaskId),
    /// The request makes no sense for the task's state.
    #[error("{0}")]
    Conflict(String),
    /// No such thing other than a task (a schedule).
    #[error("{0}")]
    Missing(String),
    /// The database was written by a newer skillbox, or an applied migration
    /// was changed.
    #[error("task store schema: {0}")]
    Schema(String),
    /// The backend failed (disk full, read-only, corrupt, …).
    #[error("task store: {0}")]
    Backend(String),
}
