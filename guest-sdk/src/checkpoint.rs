//! Small named blobs that survive a restart of the task.
//!
//! A long-running skill can save where it got to, and on its next run (after
//! the task was interrupted and restarted) pick up from there. Keys are plain
//! strings; values are bytes, or JSON through [`save_json`] and [`load_json`].
//! The host keeps checkpoints per task and may cap their size.
//!
//! What happens to a task whose host died is the skill's `resume` key in
//! `skill.toml`: with `resume = "fail"` (the default) the task is failed
//! unless it saved a checkpoint to resume from; `resume = "restart"` says
//! running it again from the start is safe (idempotent steps), so it is
//! restarted even without one.
//!
//! ```no_run
//! use skillbox_sdk::checkpoint;
//!
//! # fn main() -> skillbox_sdk::Result<()> {
//! let mut done: Vec<String> = checkpoint::load_json("done")?.unwrap_or_default();
//! done.push("next-item".to_owned());
//! checkpoint::save_json("done", &done)?;
//! # Ok(())
//! # }
//! ```

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::__private::skillbox::skill::checkpoint as wit;
use crate::Error;

/// Saves `value` under `key`, replacing what was there.
///
/// Fails with [`ErrorKind::Failed`](crate::ErrorKind::Failed) when the host
/// refuses (for example over its size cap); the message keeps the host's
/// reason.
pub fn save(key: &str, value: &[u8]) -> Result<(), Error> {
    wit::save(key, value)
        .map_err(|reason| Error::failed(format!("checkpoint save of {key:?} failed: {reason}")))
}

/// Loads the value saved under `key`, if any.
pub fn load(key: &str) -> Option<Vec<u8>> {
    wit::load(key)
}

/// Saves `value` as JSON under `key`.
pub fn save_json(key: &str, value: &impl Serialize) -> Result<(), Error> {
    let bytes = serde_json::to_vec(value)
        .map_err(|e| Error::failed(format!("checkpoint {key:?} could not be serialized: {e}")))?;
    save(key, &bytes)
}

/// Loads the JSON value saved under `key`: `Ok(None)` when there is none, an
/// [`ErrorKind::Failed`](crate::ErrorKind::Failed) error when it does not
/// deserialize as `T`.
pub fn load_json<T: DeserializeOwned>(key: &str) -> Result<Option<T>, Error> {
    let Some(bytes) = load(key) else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        Error::failed(format!(
            "checkpoint {key:?} is not a valid {}: {e}",
            std::any::type_name::<T>()
        ))
    })
}
