//! `checkpoint`: small named blobs a skill saves as it makes progress.
//!
//! The run starts with the checkpoints it is given (a resumed task passes
//! its saved ones). With a persistence sink (a task store), each `save` is
//! durable before it returns to the guest; without one (a plain `skillbox
//! run`) they live in memory and the final set is in the run's report.

use std::collections::BTreeMap;

use crate::bindings::skillbox::skill::checkpoint::Host;

/// Longest key.
pub const MAX_KEY: usize = 256;
/// Largest value.
pub const MAX_VALUE: usize = 1 << 20;
/// Most keys per run.
pub const MAX_KEYS: usize = 256;

/// Validates and stores one checkpoint.
pub fn save(
    map: &mut BTreeMap<String, Vec<u8>>,
    key: String,
    value: Vec<u8>,
) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_KEY {
        return Err(format!(
            "checkpoint key must be 1..={MAX_KEY} bytes, got {}",
            key.len()
        ));
    }
    if value.len() > MAX_VALUE {
        return Err(format!(
            "checkpoint {key:?} is {} bytes; the limit is {MAX_VALUE}",
            value.len()
        ));
    }
    if !map.contains_key(&key) && map.len() >= MAX_KEYS {
        return Err(format!("a run may keep at most {MAX_KEYS} checkpoints"));
    }
    map.insert(key, value);
    Ok(())
}

/// Persists one checkpoint as the guest saves it; an error is returned to
/// the guest's `save` call.
pub type PersistCheckpoint =
    std::sync::Arc<dyn Fn(&str, &[u8]) -> Result<(), String> + Send + Sync>;

/// The `checkpoint` capability's part of one run.
#[derive(Default)]
pub struct CheckpointCtx {
    /// The run's checkpoints, as the guest last saved them.
    pub saved: BTreeMap<String, Vec<u8>>,
    /// Where each one is made durable before `save` returns (a task
    /// store); `None` keeps them in memory only.
    pub persist: Option<PersistCheckpoint>,
}

impl Host for CheckpointCtx {
    async fn save(&mut self, key: String, value: Vec<u8>) -> Result<(), String> {
        // Validate first, persist second, remember last: a checkpoint the
        // guest was told is saved is durable.
        let mut next = self.saved.clone();
        save(&mut next, key.clone(), value.clone())?;
        if let Some(persist) = &self.persist {
            persist(&key, &value).map_err(|e| format!("checkpoint {key:?} was not saved: {e}"))?;
        }
        self.saved.insert(key, value);
        Ok(())
    }

    async fn load(&mut self, key: String) -> Option<Vec<u8>> {
        self.saved.get(&key).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_enforced() {
        let mut m = BTreeMap::new();
        assert!(save(&mut m, "a".into(), vec![1]).is_ok());
        assert!(save(&mut m, String::new(), vec![]).is_err());
        assert!(save(&mut m, "k".repeat(MAX_KEY + 1), vec![]).is_err());
        assert!(
            save(&mut m, "big".into(), vec![0; MAX_VALUE + 1])
                .unwrap_err()
                .contains("limit")
        );
        for i in 0..MAX_KEYS - 1 {
            save(&mut m, format!("k{i}"), vec![]).unwrap();
        }
        assert!(save(&mut m, "one-too-many".into(), vec![]).is_err());
        assert!(
            save(&mut m, "a".into(), vec![2]).is_ok(),
            "overwriting is always fine"
        );
    }
}
